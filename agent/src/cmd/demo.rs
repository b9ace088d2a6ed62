//! `lifeboat demo`: the whole rescue on one machine, with real processes and the real
//! agent.
//!
//! 1. Build a simulated node: a sysfs tree with an EDAC memory controller and 4 DIMMs
//!    (following Documentation/ABI/testing/sysfs-devices-edac) in a temporary directory.
//! 2. Start a real workload: python3 computing and printing its progress, as a "batch
//!    job" (`SLURM_JOB_ID` set, which the shipped rules select).
//! 3. Start `lifeboat agent` on that tree with the shipped rules (config/lifeboat.toml,
//!    polling every second instead of every 10–30 s).
//! 4. Raise the correctable-error count of one DIMM, as a failing DIMM does, until a
//!    rule fires and the agent checkpoints the workload.
//! 5. Kill the workload as if the node died; restart it from the image with
//!    `lifeboat restart`; check that it continues from where it was and ends with the
//!    same result as an uninterrupted run.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The shipped configuration, whose rules the demo runs.
const SHIPPED_CONFIG: &str = include_str!("../../../config/lifeboat.toml");

/// Steps of the workload and the pause between them.
const STEPS: u32 = 60;

/// The workload: a deterministic computation with visible progress and state in memory.
/// `DEMO_FAST=1` skips the pauses (for the reference run).
const WORKLOAD: &str = r#"
import hashlib, os, sys, time
fast = os.environ.get("DEMO_FAST") == "1"
steps = int(sys.argv[1])
state = hashlib.sha256()
for step in range(1, steps + 1):
    for _ in range(3000):
        state.update(step.to_bytes(4, "little"))
    print(f"step {step:2}/{steps}  state {state.hexdigest()[:16]}", flush=True)
    if not fast:
        time.sleep(0.2)
print(f"finished: result {state.hexdigest()[:32]}", flush=True)
"#;

/// The DIMM whose errors rise.
const FAILING_DIMM: usize = 2;

fn say(msg: &str) {
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal() {
        out_line(&format!("\x1b[1mlifeboat demo:\x1b[0m {msg}"));
    } else {
        out_line(&format!("lifeboat demo: {msg}"));
    }
}

/// One line on stdout. A closed stdout (`lifeboat demo | head`) does not stop the demo:
/// the rest is not shown, and the demo still ends with the workload's result.
fn out_line(line: &str) {
    let _ = writeln!(std::io::stdout(), "{line}");
}

/// Lines from the workload, the agent and the restarter, printed as they come.
enum Line {
    Workload(String),
    Agent(String),
}

/// Run the demo.
pub fn run(dir: Option<PathBuf>) -> Result<ExitCode> {
    let dir = match dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("lifeboat-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let result = run_in(&dir);
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        say(&format!("files kept for inspection in {}", dir.display()));
    }
    result
}

fn run_in(dir: &Path) -> Result<ExitCode> {
    let exe = std::env::current_exe().context("cannot find the lifeboat binary")?;
    let node = dir.join("node");
    let edac = build_node(&node)?;
    say(&format!(
        "simulated node in {}: EDAC memory controller mc0 with 4 DIMMs, no errors yet",
        node.display()
    ));

    let port = free_port()?;
    let store = dir.join("store");
    let config = dir.join("lifeboat.toml");
    write_config(&config, &node, &store, port)?;
    say(&format!(
        "agent configuration {}: the shipped rules, sensors polled every second",
        config.display()
    ));

    let (tx, rx) = mpsc::channel::<Line>();
    say(&format!(
        "starting the workload: python3, {STEPS} steps of hashing, as batch job demo-1"
    ));
    let mut workload = Command::new("python3")
        .arg("-c")
        .arg(WORKLOAD)
        .arg(STEPS.to_string())
        .env("SLURM_JOB_ID", "demo-1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start python3 (the demo needs it)")?;
    let pid = workload.id() as i32;
    forward(workload.stdout.take(), tx.clone(), Line::Workload);

    say("starting lifeboat agent");
    let mut agent = Command::new(&exe)
        .arg("agent")
        .arg("--config")
        .arg(&config)
        .arg("--log-json")
        .env("LIFEBOAT_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start lifeboat agent")?;
    forward(agent.stderr.take(), tx.clone(), Line::Agent);
    drop(tx);

    let outcome = drive(&rx, &edac, &store, pid, &mut workload);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let (image, last_before) = match outcome {
        Ok(v) => v,
        Err(e) => {
            let _ = workload.kill();
            let _ = workload.wait();
            let _ = agent.wait();
            return Err(e);
        }
    };
    let _ = agent.wait();
    // Whatever the agent said while stopping.
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
        print_line(&line);
    }

    say(&format!(
        "restarting the workload from its image: lifeboat restart {}",
        image.display()
    ));
    let mut restarter = Command::new(&exe)
        .arg("restart")
        .arg(&image)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run lifeboat restart")?;
    let out = restarter.stdout.take().context("restart stdout")?;
    let mut after = Vec::new();
    for line in BufReader::new(out).lines() {
        let line = line.context("reading the restored workload")?;
        out_line(&format!("  workload (restored): {line}"));
        after.push(line);
    }
    let status = restarter.wait().context("waiting for lifeboat restart")?;
    if !status.success() {
        bail!("the restored workload ended with {status}");
    }

    // Continuation: the first step after the restart follows the last one seen before
    // the checkpoint (or repeats steps printed while the image was written: those were
    // lost with the node).
    let first_after = after.first().and_then(|l| step_of(l));
    let expected = reference()?;
    let got = after.last().cloned().unwrap_or_default();
    say(&format!(
        "before the failure the workload reached step {last_before}; after the restart it went on at step {}",
        first_after.map_or("?".into(), |s| s.to_string())
    ));
    say(&format!("an uninterrupted run ends with   {expected}"));
    say(&format!("the restored run ended with      {got}"));
    if got != expected {
        bail!("the restored workload's result differs from an uninterrupted run");
    }
    if first_after.is_none_or(|s| s > last_before + 1 || s <= 1) {
        bail!("the restored workload did not continue from its checkpoint");
    }
    say("same result: the work done before the checkpoint was not lost.");
    Ok(ExitCode::SUCCESS)
}

/// Raise errors until the agent has written an image; then kill the workload.
/// Returns the image and the last step the workload printed.
fn drive(
    rx: &mpsc::Receiver<Line>,
    edac: &Path,
    store: &Path,
    pid: i32,
    workload: &mut Child,
) -> Result<(PathBuf, u32)> {
    let mut last_step = 0;
    let mut errors = 0u64;
    let mut next_raise = Instant::now() + Duration::from_secs(2);
    let deadline = Instant::now() + Duration::from_secs(90);
    let index = store.join("demo-node").join("index.jsonl");
    loop {
        if Instant::now() > deadline {
            bail!("no checkpoint within 90 s; see the agent's messages above");
        }
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => {
                if let Line::Workload(l) = &line {
                    if l.starts_with("finished") {
                        bail!("the workload finished before any rule fired");
                    }
                    last_step = step_of(l).unwrap_or(last_step);
                }
                print_line(&line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("the workload and agent both ended"),
        }
        if let Some(image) = image_of(&index, pid) {
            say(&format!(
                "the node \"dies\": killing the workload (PID {pid}) at step {last_step}"
            ));
            workload.kill().context("cannot kill the workload")?;
            workload.wait().context("cannot reap the workload")?;
            // Lines already in the pipe when it died.
            while let Ok(line) = rx.recv_timeout(Duration::from_millis(50)) {
                if let Line::Workload(l) = &line {
                    last_step = step_of(l).unwrap_or(last_step);
                }
                print_line(&line);
            }
            return Ok((image, last_step));
        }
        if Instant::now() >= next_raise && last_step >= 3 {
            errors += 3;
            set_dimm_errors(edac, errors)?;
            say(&format!(
                "fault precursor: DIMM {FAILING_DIMM} now has {errors} corrected ECC errors"
            ));
            next_raise = Instant::now() + Duration::from_millis(500);
        }
    }
}

fn print_line(line: &Line) {
    match line {
        Line::Workload(l) => out_line(&format!("  workload: {l}")),
        Line::Agent(l) => {
            if let Some(text) = agent_line(l) {
                out_line(&format!("  agent: {text}"));
            }
        }
    }
    let _ = std::io::stdout().flush();
}

/// One JSON log line of the agent as `message key=value ...`, only the fields that
/// tell the story.
fn agent_line(line: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = v.get("fields")?.as_object()?;
    let mut out = fields.get("message")?.as_str()?.to_owned();
    for key in [
        "found",
        "rule",
        "severity",
        "summary",
        "pid",
        "path",
        "bytes",
        "seconds",
        "frozen_seconds",
        "action",
        "command",
        "error",
    ] {
        if let Some(val) = fields.get(key) {
            let val = match val {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            out.push_str(&format!(" {key}={val}"));
        }
    }
    Some(out)
}

fn forward<R: std::io::Read + Send + 'static>(
    from: Option<R>,
    tx: mpsc::Sender<Line>,
    wrap: fn(String) -> Line,
) {
    let Some(from) = from else { return };
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { return };
            if tx.send(wrap(line)).is_err() {
                return;
            }
        }
    });
}

fn step_of(line: &str) -> Option<u32> {
    line.strip_prefix("step ")?
        .split('/')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// The image the agent stored for `pid`, once its index lists one.
fn image_of(index: &Path, pid: i32) -> Option<PathBuf> {
    let text = std::fs::read_to_string(index).ok()?;
    text.lines().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        (v.get("pid")?.as_i64()? == i64::from(pid))
            .then(|| v.get("path")?.as_str().map(PathBuf::from))
            .flatten()
    })
}

/// Write the simulated node's EDAC tree; returns the controller directory.
fn build_node(root: &Path) -> Result<PathBuf> {
    let mc = root.join("sys/devices/system/edac/mc/mc0");
    let files: Vec<(PathBuf, String)> = [
        ("mc_name", "Skylake Socket#0 IMC#0".to_owned()),
        ("size_mb", "131072".to_owned()),
        ("ce_count", "0".to_owned()),
        ("ce_noinfo_count", "0".to_owned()),
        ("ue_count", "0".to_owned()),
        ("ue_noinfo_count", "0".to_owned()),
    ]
    .into_iter()
    .map(|(f, v)| (mc.join(f), v))
    .chain((0..4).flat_map(|d| {
        let dimm = mc.join(format!("dimm{d}"));
        [
            ("dimm_label", format!("CPU_SrcID#0_MC#0_Chan#{d}_DIMM#0")),
            ("dimm_location", format!("channel {d} slot 0 ")),
            ("size", "32768".to_owned()),
            ("dimm_mem_type", "Registered-DDR4".to_owned()),
            ("dimm_edac_mode", "SECDED".to_owned()),
            ("dimm_ce_count", "0".to_owned()),
            ("dimm_ue_count", "0".to_owned()),
        ]
        .map(|(f, v)| (dimm.join(f), v))
    }))
    .collect();
    for (path, value) in files {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, format!("{value}\n"))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(mc)
}

/// Set the failing DIMM's count (and the controller's total, as the kernel does).
fn set_dimm_errors(mc: &Path, n: u64) -> Result<()> {
    for path in [
        mc.join(format!("dimm{FAILING_DIMM}/dimm_ce_count")),
        mc.join("ce_count"),
    ] {
        // Write and rename, so the agent never reads a half-written number.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, format!("{n}\n"))
            .and_then(|()| std::fs::rename(&tmp, &path))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// The shipped configuration with the demo's `[agent]` and `[poll]` tables and a drain
/// command that only says what it would do.
fn write_config(path: &Path, root: &Path, store: &Path, port: u16) -> Result<()> {
    let mut doc: toml::Table =
        toml::from_str(SHIPPED_CONFIG).context("the shipped configuration does not parse")?;
    let agent: toml::Table = toml::from_str(&format!(
        "listen = \"127.0.0.1:{port}\"\nroot = {root:?}\nnode = \"demo-node\"\n[store]\ndir = {store:?}\nmin_free_gib = 0.05\n",
        root = root.display().to_string(),
        store = store.display().to_string(),
    ))
    .context("demo agent table")?;
    doc.insert("agent".into(), toml::Value::Table(agent));
    let poll: toml::Table = toml::from_str("interval = \"1s\"").context("demo poll table")?;
    doc.insert("poll".into(), toml::Value::Table(poll));
    let drain: toml::Table = toml::from_str(
        "command = [\"echo\", \"demo: would run scontrol update nodename={node} state=drain\"]",
    )
    .context("demo drain table")?;
    doc.insert("drain".into(), toml::Value::Table(drain));
    let text = toml::to_string(&doc).context("encoding the demo configuration")?;
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// A loopback port nobody listens on now.
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(l.local_addr().context("local address")?.port())
}

/// The result line an uninterrupted run prints.
fn reference() -> Result<String> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(WORKLOAD)
        .arg(STEPS.to_string())
        .env("DEMO_FAST", "1")
        .output()
        .context("running the workload for reference")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .map(str::to_owned)
        .context("the reference run printed nothing")
}
