//! `lifeboat demo`: the whole rescue on one machine, with real processes.
//!
//! A python3 workload computes and prints its progress; lifeboat checkpoints it, kills it
//! as the failing node would, restarts it from the image and shows that it continues from
//! where it was and ends with the same result as an uninterrupted run. (The agent issue
//! puts a simulated fault precursor and a firing rule in front of the checkpoint.)

use anyhow::{Context, Result, bail};
use lifeboat_engine::{self as engine, After};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// The workload: a deterministic computation with visible progress and state in memory.
const WORKLOAD: &str = r#"
import hashlib, sys, time
state = hashlib.sha256()
history = []
for step in range(1, 41):
    for _ in range(2000):
        state.update(step.to_bytes(4, "little"))
    history.append(state.hexdigest()[:12])
    print(f"  workload: step {step:2}/40  state {history[-1]}", flush=True)
    time.sleep(0.1)
print(f"  workload: finished, result {state.hexdigest()[:24]}", flush=True)
"#;

fn say(msg: &str) {
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal() {
        println!("\x1b[1mlifeboat demo:\x1b[0m {msg}");
    } else {
        println!("lifeboat demo: {msg}");
    }
}

/// The result an uninterrupted run prints, computed by running the workload to the end.
fn reference(python: &str) -> Result<String> {
    let out = Command::new(python)
        .arg("-c")
        .arg(WORKLOAD)
        .output()
        .context("running the workload for reference")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .last()
        .map(str::to_owned)
        .context("the workload printed nothing")
}

/// Run the demo.
pub fn run(dir: Option<std::path::PathBuf>) -> Result<ExitCode> {
    let python = "python3";
    let dir = match dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("lifeboat-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let image = dir.join("workload.ctx");
    say("starting a real workload (python3, 40 steps of hashing, ~5 s)");
    let mut child = Command::new(python)
        .arg("-c")
        .arg(WORKLOAD)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting python3")?;
    let pid = child.id() as i32;
    let stdout = child.stdout.take().context("workload stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    while seen.len() < 12 {
        let line = lines.next().context("the workload ended early")??;
        println!("{line}");
        seen.push(line);
    }
    say(&format!(
        "simulated fault precursor: correctable ECC errors rising on DIMM_A1; saving PID {pid} before the node fails"
    ));
    let started = Instant::now();
    let mut last = 0;
    let report = engine::checkpoint(
        pid,
        &image,
        &engine::CheckpointOptions {
            after: After::Kill,
            compress: false,
        },
        &mut |p| {
            let pct = p.done * 100 / p.total.max(1);
            if pct >= last + 25 {
                last = pct;
                println!("  checkpoint: {pct:3}% of {} KiB of memory", p.total / 1024);
            }
        },
    )
    .with_context(|| format!("checkpoint of PID {pid}"))?;
    say(&format!(
        "checkpoint written to {} ({} KiB, {} thread(s)) in {:.3} s; the process was frozen {:.3} s",
        image.display(),
        report.bytes / 1024,
        report.threads,
        started.elapsed().as_secs_f64(),
        report.frozen.as_secs_f64()
    ));
    // Output the workload printed before it was frozen is still in the pipe.
    for line in lines.by_ref() {
        let line = line?;
        println!("{line}");
        seen.push(line);
    }
    match waitpid(Pid::from_raw(pid), None)? {
        WaitStatus::Signaled(_, sig, _) => say(&format!(
            "the node \"died\": the workload was killed ({sig}) at step {}",
            seen.len()
        )),
        other => bail!("the workload was not killed as expected: {other:?}"),
    }
    say("restarting the workload from its image (same PID, same memory, same open files)");
    std::io::stdout().flush()?;
    let restored = engine::restart(&image, &engine::RestartOptions::default(), &mut |_| {})
        .with_context(|| format!("restart from {}", image.display()))?;
    for w in &restored.warnings {
        say(&format!("note: {w}"));
    }
    say(&format!(
        "restored as PID {}; it continues where it was:",
        restored.pid
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        match waitpid(restored.pid, None)? {
            s @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => break s,
            _ if Instant::now() > deadline => bail!("the restored workload did not finish"),
            _ => continue,
        }
    };
    if !matches!(status, WaitStatus::Exited(_, 0)) {
        bail!("the restored workload ended with {status:?}");
    }
    let expected = reference(python)?;
    say(&format!(
        "an uninterrupted run ends with: {}",
        expected.trim()
    ));
    say("the restored run printed the same final line above: no work was lost.");
    let _ = std::fs::remove_file(&image);
    let _ = std::fs::remove_dir(&dir);
    Ok(ExitCode::SUCCESS)
}
