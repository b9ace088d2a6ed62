//! Engine benchmark: checkpoint and restart of processes with 1 MiB to 1 GiB of touched
//! memory; prints checkpoint time, frozen time, restart time and image size. A second
//! table sets a tree of 16 processes against one process of the same total memory (64
//! and 256 MiB), both saved with `Scope::Tree` (issue 6).
//!
//! Run with `cargo bench -p lifeboat --bench engine` (root: the restart restores the
//! PIDs). `LIFEBOAT_BENCH_QUICK=1` limits the sizes to 1 and 64 MiB (trees: 64 MiB) with
//! one round, which is what CI runs to prove the bench still works. Every restarted
//! process checks its whole buffer afterwards, so a figure is only printed for a restart
//! that was correct. Only measured figures are printed: figures of other tools are
//! not this machine's and do not belong beside them.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lifeboat_engine::{After, CheckpointOptions, RestartOptions, Scope, checkpoint, restart};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

/// One measured checkpoint/restart round.
#[derive(Debug, Clone, Copy)]
struct Round {
    checkpoint: Duration,
    frozen: Duration,
    restart: Duration,
    image_bytes: u64,
}

/// Processes of the tree in the second table.
const TREE_PROCS: u32 = 16;

/// The median of the rounds, field by field.
fn median(mut all: Vec<Round>) -> Round {
    let mut med = |f: fn(&Round) -> Duration| {
        all.sort_by_key(f);
        f(&all[all.len() / 2])
    };
    let checkpoint = med(|r| r.checkpoint);
    let frozen = med(|r| r.frozen);
    let restart = med(|r| r.restart);
    Round {
        checkpoint,
        frozen,
        restart,
        image_bytes: all[0].image_bytes,
    }
}

fn main() {
    let quick = std::env::var_os("LIFEBOAT_BENCH_QUICK").is_some();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("engine-bench");
    fs::create_dir_all(&dir).expect("create the bench directory");
    let memhog = build_memhog(&dir);
    // The children of a tree killed by its checkpoint are re-parented to us, so we can
    // reap them and free their PIDs for the restart.
    nix::sys::prctl::set_child_subreaper(true).expect("become a child subreaper");

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
            let m = median(
                (0..rounds)
                    .map(|_| one_round(&memhog, &dir, mib, compress))
                    .collect(),
            );
            println!(
                "{:>5} MiB {:>9} {:>10.3} s {:>8.3} s {:>8.3} s {:>8.1} MiB",
                mib,
                if compress { "yes" } else { "no" },
                m.checkpoint.as_secs_f64(),
                m.frozen.as_secs_f64(),
                m.restart.as_secs_f64(),
                m.image_bytes as f64 / (1024.0 * 1024.0),
            );
        }
    }

    let totals: &[u64] = if quick { &[64] } else { &[64, 256] };
    println!();
    println!(
        "process trees (--tree, no zstd): {TREE_PROCS} processes of total/{TREE_PROCS} MiB each \
         against one process of the same total; median of {rounds} round(s)"
    );
    println!(
        "{:>8} {:>9} {:>12} {:>10} {:>10} {:>12}",
        "memory", "processes", "checkpoint", "frozen", "restart", "image"
    );
    for &mib in totals {
        for procs in [1, TREE_PROCS] {
            let m = median(
                (0..rounds)
                    .map(|_| tree_round(&memhog, &dir, mib, procs))
                    .collect(),
            );
            println!(
                "{:>5} MiB {:>9} {:>10.3} s {:>8.3} s {:>8.3} s {:>8.1} MiB",
                mib,
                procs,
                m.checkpoint.as_secs_f64(),
                m.frozen.as_secs_f64(),
                m.restart.as_secs_f64(),
                m.image_bytes as f64 / (1024.0 * 1024.0),
            );
        }
    }
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
            ..RestartOptions::default()
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

/// Start a memhog tree of `procs` processes and `mib` MiB in all, checkpoint it with
/// `Scope::Tree` and `After::Kill`, restart it with its PIDs, check every process's
/// memory, and return the figures.
fn tree_round(memhog: &Path, dir: &Path, mib: u64, procs: u32) -> Round {
    let what = format!("{procs}-process memhog of {mib} MiB");
    let verdict = dir.join(format!("tree-verdict-{mib}-{procs}"));
    let verdicts: Vec<PathBuf> = (0..procs)
        .map(|k| PathBuf::from(format!("{}.{k}", verdict.display())))
        .collect();
    let image = dir.join(format!("tree-context-{mib}-{procs}"));
    for v in &verdicts {
        let _ = fs::remove_file(v);
    }
    let mut child = Command::new(memhog)
        .arg(mib.to_string())
        .arg(&verdict)
        .arg(procs.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start memhog");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout"))
        .read_line(&mut line)
        .expect("read memhog's ready line");
    assert_eq!(line.trim(), "ready", "{what} did not start");
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits i32"));

    let opts = CheckpointOptions {
        after: After::Kill,
        compress: false,
        scope: Scope::Tree,
    };
    let report = checkpoint(pid.as_raw(), &image, &opts, &mut |_| {})
        .unwrap_or_else(|e| panic!("checkpoint of {what} failed: {e}"));
    assert_eq!(
        report.pids.len(),
        procs as usize,
        "checkpoint of {what} saved {:?}",
        report.pids
    );
    child.wait().expect("reap the checkpointed memhog");
    // The killed children were re-parented to us: reap them so their PIDs are free.
    let saved: Vec<Pid> = report.pids.iter().map(|&p| Pid::from_raw(p)).collect();
    reap_gone(&saved);

    let start = Instant::now();
    let restored = restart(
        &image,
        &RestartOptions {
            restore_pid: true,
            after: After::Run,
            ..RestartOptions::default()
        },
        &mut |_| {},
    )
    .unwrap_or_else(|e| panic!("restart of {what} failed: {e}"));
    let restart_time = start.elapsed();
    assert_eq!(
        restored.pids.len(),
        procs as usize,
        "restart of {what} restored {:?}",
        restored.pids
    );

    for &p in &restored.pids {
        kill(p, Signal::SIGUSR1).expect("ask a restored memhog to check its memory");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let texts: Vec<String> = verdicts
        .iter()
        .map(|v| {
            loop {
                if let Ok(text) = fs::read_to_string(v) {
                    break text;
                }
                assert!(
                    Instant::now() < deadline,
                    "restored {what} gave no verdict in {}",
                    v.display()
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        })
        .collect();
    // Children first, so that none outlives the root unkilled; then reap them all (the
    // root is our child, its children come to us as it dies).
    for &p in restored.pids.iter().skip(1).chain([&restored.pid]) {
        kill(p, Signal::SIGKILL).expect("kill a restored memhog");
    }
    waitpid(restored.pid, None).expect("reap the restored memhog");
    reap_gone(&restored.pids);
    for (v, text) in verdicts.iter().zip(&texts) {
        assert_eq!(
            text.trim(),
            "ok",
            "restored {what} found its memory changed ({})",
            v.display()
        );
    }
    let _ = fs::remove_file(&image);

    Round {
        checkpoint: report.elapsed,
        frozen: report.frozen,
        restart: restart_time,
        image_bytes: report.bytes,
    }
}

/// Wait until every one of `pids` is gone from /proc, reaping those that are (or, as we
/// are a subreaper, become) our children.
fn reap_gone(pids: &[Pid]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for &pid in pids {
        while Path::new(&format!("/proc/{pid}")).exists() {
            let _ = waitpid(pid, Some(WaitPidFlag::WNOHANG));
            assert!(Instant::now() < deadline, "PID {pid} did not go away");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}
