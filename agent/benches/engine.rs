//! Engine benchmark: checkpoint and restart of processes with 1 MiB to 1 GiB of touched
//! memory; prints checkpoint time, frozen time, restart time and image size.
//!
//! Run with `cargo bench -p lifeboat --bench engine` (root: the restart restores the
//! PID). `LIFEBOAT_BENCH_QUICK=1` limits the sizes to 1 and 64 MiB with one round, which
//! is what CI runs to prove the bench still works. Every restarted process checks its
//! whole buffer afterwards, so a figure is only printed for a restart that was correct.
//!
//! Reference (issue 2): CRIU 4.2 on this kind of machine dumps 64 MiB / 256 MiB / 1 GiB
//! in about 0.07 / 0.15 / 2.8 s and restores them in 0.08 / 0.19 / 1.4 s.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lifeboat_engine::{After, CheckpointOptions, RestartOptions, checkpoint, restart};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

/// One measured checkpoint/restart round.
#[derive(Debug, Clone, Copy)]
struct Round {
    checkpoint: Duration,
    frozen: Duration,
    restart: Duration,
    image_bytes: u64,
}

fn main() {
    let quick = std::env::var_os("LIFEBOAT_BENCH_QUICK").is_some();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("engine-bench");
    fs::create_dir_all(&dir).expect("create the bench directory");
    let memhog = build_memhog(&dir);

    let (sizes, rounds): (&[u64], usize) = if quick {
        (&[1, 64], 1)
    } else {
        (&[1, 64, 256, 1024], 3)
    };
    println!(
        "engine benchmark: median of {rounds} round(s); image in {}",
        dir.display()
    );
    println!(
        "{:>8} {:>9} {:>12} {:>10} {:>10} {:>12}",
        "memory", "zstd", "checkpoint", "frozen", "restart", "image"
    );
    for &mib in sizes {
        for compress in [false, true] {
            // Compression of 1 GiB of incompressible data only shows zstd's speed; one
            // compressed row per size up to 256 MiB says as much.
            if compress && mib > 256 {
                continue;
            }
            let mut all: Vec<Round> = (0..rounds)
                .map(|_| one_round(&memhog, &dir, mib, compress))
                .collect();
            let med = |f: fn(&Round) -> Duration, all: &mut Vec<Round>| {
                all.sort_by_key(f);
                f(&all[all.len() / 2])
            };
            let c = med(|r| r.checkpoint, &mut all);
            let fz = med(|r| r.frozen, &mut all);
            let r = med(|r| r.restart, &mut all);
            println!(
                "{:>5} MiB {:>9} {:>10.3} s {:>8.3} s {:>8.3} s {:>8.1} MiB",
                mib,
                if compress { "yes" } else { "no" },
                c.as_secs_f64(),
                fz.as_secs_f64(),
                r.as_secs_f64(),
                all[0].image_bytes as f64 / (1024.0 * 1024.0),
            );
        }
    }
    println!(
        "CRIU 4.2 reference: dump 0.07 / 0.15 / 2.8 s, restore 0.08 / 0.19 / 1.4 s (64 MiB / 256 MiB / 1 GiB)"
    );
}

/// Compile the workload next to the images.
fn build_memhog(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/memhog.c");
    let out = dir.join("memhog");
    let status = Command::new("gcc")
        .args(["-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("run gcc (the benchmark needs it to build its workload)");
    assert!(status.success(), "gcc failed to build {}", src.display());
    out
}

/// Start a memhog of `mib` MiB, checkpoint it with `--kill`, restart it with its PID,
/// check its memory, and return the figures.
fn one_round(memhog: &Path, dir: &Path, mib: u64, compress: bool) -> Round {
    let verdict = dir.join(format!("verdict-{mib}"));
    let image = dir.join(format!("context-{mib}"));
    let _ = fs::remove_file(&verdict);
    let mut child = Command::new(memhog)
        .arg(mib.to_string())
        .arg(&verdict)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start memhog");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout"))
        .read_line(&mut line)
        .expect("read memhog's ready line");
    assert_eq!(line.trim(), "ready", "memhog did not start");
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits i32"));

    let opts = CheckpointOptions {
        after: After::Kill,
        compress,
        ..CheckpointOptions::default()
    };
    let report = checkpoint(pid.as_raw(), &image, &opts, &mut |_| {})
        .unwrap_or_else(|e| panic!("checkpoint of {mib} MiB memhog failed: {e}"));
    child.wait().expect("reap the checkpointed memhog");

    let start = Instant::now();
    let restored = restart(
        &image,
        &RestartOptions {
            restore_pid: true,
            after: After::Run,
        },
        &mut |_| {},
    )
    .unwrap_or_else(|e| panic!("restart of {mib} MiB memhog failed: {e}"));
    let restart_time = start.elapsed();

    kill(restored.pid, Signal::SIGUSR1).expect("ask the restored memhog to check its memory");
    let deadline = Instant::now() + Duration::from_secs(60);
    let verdict_text = loop {
        if let Ok(text) = fs::read_to_string(&verdict) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "restored memhog ({mib} MiB) gave no verdict"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    kill(restored.pid, Signal::SIGKILL).expect("kill the restored memhog");
    waitpid(restored.pid, None).expect("reap the restored memhog");
    assert_eq!(
        verdict_text.trim(),
        "ok",
        "restored memhog ({mib} MiB) found its memory changed"
    );
    let _ = fs::remove_file(&image);

    Round {
        checkpoint: report.elapsed,
        frozen: report.frozen,
        restart: restart_time,
        image_bytes: report.bytes,
    }
}
