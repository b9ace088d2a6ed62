//! End-to-end continuation tests for the `lifeboat` checkpoint/restart engine: every test checks that a checkpointed and restarted workload prints exactly what an uninterrupted run prints.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;

// ---------------------------------------------------------------------------
// Scenarios shared by many tests.

/// Start `prog`, wait for `at` lines (and, if given, until it is blocked in one of `syscalls`), `checkpoint --kill`, check the original died, `restart` with the same PID and check before + after == reference and exit status 0.
fn kill_and_restart(test: &str, prog: Prog, at: usize, syscalls: &[i64]) {
    let ctx = TestCtx::new(test);
    let reference = reference_in_background(&prog);
    let image = ctx.path("context.img");

    let mut orig = ctx.spawn(&prog);
    let pid = orig.pid();
    orig.wait_lines(at);
    if !syscalls.is_empty() {
        wait_in_syscall(pid, syscalls, prog.name);
    }
    ctx.checkpoint(pid, &image, &["--kill"]);
    let (status, before) = orig.finish();
    assert_killed_by(
        status,
        SIGKILL,
        &format!("{} after `checkpoint --kill`", prog.name),
    );
    assert!(
        !pid_exists(pid),
        "pid {pid} still exists after the original was reaped"
    );

    let mut restarted = ctx.restart(&image, &[]);
    ctx.guard_pid(pid, prog.tags());
    expect_restored_pid(&mut restarted, pid);
    let after = restarted.finish_ok();
    let reference = join_reference(reference);
    assert_continuation(
        &reference,
        &[
            ("original before checkpoint", &before),
            ("restarted", &after),
        ],
        &format!(
            "{} checkpointed after {} lines, killed and restarted",
            prog.name,
            count_lines(&before)
        ),
    );
}

/// While `restarter` runs, the restored process must show up under the original PID.
fn expect_restored_pid(restarter: &mut Proc, pid: i32) {
    wait_until(
        &format!("pid {pid} is restored by {}", restarter.what),
        || {
            if is_alive(pid) {
                return true;
            }
            if let Some(status) = restarter.try_status() {
                panic!(
                    "{} exited with {} and pid {pid} was never seen alive (the restore should reuse the original PID)\n{}",
                    restarter.what,
                    status_text(status),
                    restarter.describe()
                );
            }
            false
        },
    );
}

/// Start `prog`, `checkpoint --run` after `at` lines, restart a copy with `--no-restore-pid` while the original still runs. The original's output must equal the reference; the copy's must be a suffix of it starting no earlier than what had been printed before the checkpoint.
fn run_and_copy(test: &str, prog: Prog, at: usize, syscalls: &[i64]) {
    let ctx = TestCtx::new(test);
    let reference = reference_in_background(&prog);
    let image = ctx.path("context.img");

    let mut orig = ctx.spawn(&prog);
    let pid = orig.pid();
    orig.wait_lines(at);
    if !syscalls.is_empty() {
        wait_in_syscall(pid, syscalls, prog.name);
    }
    let printed = orig.stdout().len();
    ctx.checkpoint(pid, &image, &["--run"]);
    assert!(
        is_alive(pid),
        "{} (pid {pid}) is gone after `checkpoint --run`, state {:?}",
        prog.name,
        proc_state(pid)
    );

    let mut copy = ctx.restart(&image, &["--no-restore-pid"]);
    let orig_out = orig.finish_ok();
    let copy_out = copy.finish_ok();
    let reference = join_reference(reference);
    assert_continuation(
        &reference,
        &[("original", &orig_out)],
        &format!("{} checkpointed with --run", prog.name),
    );
    assert_suffix(
        &reference,
        &copy_out,
        printed,
        None,
        &format!("copy of {} restored with --no-restore-pid", prog.name),
    );
}

/// For workloads that own files: `checkpoint --stop`, snapshot the files, SIGCONT the original and let it finish, put the snapshot back, then restore a copy with `--no-restore-pid`. The copy must resume exactly where the original was stopped.
fn stop_and_copy(test: &str, prog: Prog, at: usize) {
    let ctx = TestCtx::new(test);
    let reference = reference_in_background(&prog);
    let image = ctx.path("context.img");
    let files = Prog::files_dir(&ctx.dir);
    let snapshot = ctx.path("files.snapshot");

    let mut orig = ctx.spawn(&prog);
    let pid = orig.pid();
    orig.wait_lines(at);
    ctx.checkpoint(pid, &image, &["--stop"]);
    wait_until(
        &format!(
            "{} (pid {pid}) is stopped after `checkpoint --stop`",
            prog.name
        ),
        || matches!(proc_state(pid), Some('T')),
    );
    // Let the pipe reader catch up; nothing more can come while it is stopped.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let printed = orig.stdout().len();
    copy_dir(&files, &snapshot);
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(
        orig.stdout().len(),
        printed,
        "{} printed more while it should have been stopped",
        prog.name
    );
    kill(Pid::from_raw(pid), Signal::SIGCONT).expect("SIGCONT");
    let orig_out = orig.finish_ok();

    copy_dir(&snapshot, &files);
    let mut copy = ctx.restart(&image, &["--no-restore-pid"]);
    let copy_out = copy.finish_ok();
    let reference = join_reference(reference);
    assert_continuation(
        &reference,
        &[("original", &orig_out)],
        &format!("{} checkpointed with --stop, then continued", prog.name),
    );
    assert_suffix(
        &reference,
        &copy_out,
        printed,
        Some(printed),
        &format!("copy of {} restored with --no-restore-pid", prog.name),
    );
}

/// Three checkpoint/restart cycles: `checkpoint --kill`, `restart --detach`, more progress, `checkpoint --kill` of the restored PID, ... and a final attached restart. The pieces together must equal the reference. `points` are the total line counts at which the three checkpoints are taken.
fn three_cycles(test: &str, prog: Prog, points: [usize; 3]) {
    let ctx = TestCtx::new(test);
    let reference = reference_in_background(&prog);
    let mut pieces: Vec<(String, Vec<u8>)> = Vec::new();

    let mut orig = ctx.spawn(&prog);
    let pid = orig.pid();
    orig.wait_lines(points[0]);
    let image = ctx.path("context.1");
    ctx.checkpoint(pid, &image, &["--kill"]);
    let (status, out) = orig.finish();
    assert_killed_by(
        status,
        SIGKILL,
        &format!("{} after `checkpoint --kill`", prog.name),
    );
    pieces.push(("original".into(), out));

    let mut image = image;
    for (cycle, &point) in points.iter().enumerate().skip(1) {
        let (restarter, restored) = ctx.restart_detached(&image, &[], prog.tags());
        assert_eq!(
            restored, pid,
            "`restart --detach` should restore the original PID"
        );
        let so_far: usize = pieces.iter().map(|(_, p)| count_lines(p)).sum();
        // +1: the restarter's first line is the PID.
        restarter.wait_lines(point.saturating_sub(so_far) + 1);
        image = ctx.path(&format!("context.{}", cycle + 1));
        ctx.checkpoint(restored, &image, &["--kill"]);
        wait_gone(
            restored,
            &format!("restored {} after `checkpoint --kill`", prog.name),
        );
        restarter.wait_eof();
        let out = restarter.stdout();
        let body = out[out.iter().position(|&c| c == b'\n').expect("pid line") + 1..].to_vec();
        pieces.push((format!("restore #{cycle} (detached)"), body));
    }

    let mut last = ctx.restart(&image, &[]);
    ctx.guard_pid(pid, prog.tags());
    pieces.push(("final restore".into(), last.finish_ok()));
    let reference = join_reference(reference);
    let parts: Vec<(&str, &[u8])> = pieces
        .iter()
        .map(|(n, p)| (n.as_str(), p.as_slice()))
        .collect();
    assert_continuation(
        &reference,
        &parts,
        &format!("{} after three checkpoint/restart cycles", prog.name),
    );
}

// ---------------------------------------------------------------------------
// checkpoint --kill, restart with the same PID.

#[test]
fn counter_kill_restart() {
    kill_and_restart("counter_kill_restart", counter(), 5, &[]);
}

#[test]
fn threads_kill_restart() {
    kill_and_restart("threads_kill_restart", threads(), 3, &[]);
}

#[test]
fn signals_kill_restart() {
    // Line 9 is step 8, cycle phase 2: eight signals are pending, blocked.
    kill_and_restart("signals_kill_restart", signals(), 9, &[]);
}

#[test]
fn sleeper_kill_restart() {
    kill_and_restart(
        "sleeper_kill_restart",
        sleeper(),
        2,
        &[SYS_NANOSLEEP, SYS_CLOCK_NANOSLEEP],
    );
}

#[test]
fn mmapfile_kill_restart() {
    kill_and_restart("mmapfile_kill_restart", mmapfile(), 11, &[]);
}

#[test]
fn selfpipe_kill_restart() {
    kill_and_restart("selfpipe_kill_restart", selfpipe(), 13, &[]);
}

#[test]
fn fpu_kill_restart() {
    // Blocked in the raw nanosleep inside the asm block, registers loaded.
    kill_and_restart("fpu_kill_restart", fpu(), 7, &[SYS_NANOSLEEP]);
}

#[test]
fn compute_py_kill_restart() {
    kill_and_restart("compute_py_kill_restart", compute_py(), 8, &[]);
}

#[test]
fn compute_sh_kill_restart() {
    // Inside `read -t`, i.e. pselect6 with its temporary signal mask.
    kill_and_restart("compute_sh_kill_restart", compute_sh(), 10, &[SYS_PSELECT6]);
}

// ---------------------------------------------------------------------------
// checkpoint --run, restore a copy with --no-restore-pid.

#[test]
fn counter_run_copy() {
    run_and_copy("counter_run_copy", counter(), 12, &[]);
}

#[test]
fn threads_run_copy() {
    run_and_copy("threads_run_copy", threads(), 6, &[]);
}

#[test]
fn signals_run_copy() {
    // Line 16 is step 15, cycle phase 3.
    run_and_copy("signals_run_copy", signals(), 16, &[]);
}

#[test]
fn sleeper_run_copy() {
    run_and_copy(
        "sleeper_run_copy",
        sleeper(),
        3,
        &[SYS_NANOSLEEP, SYS_CLOCK_NANOSLEEP],
    );
}

#[test]
fn fpu_run_copy() {
    run_and_copy("fpu_run_copy", fpu(), 10, &[SYS_NANOSLEEP]);
}

#[test]
fn compute_py_run_copy() {
    run_and_copy(
        "compute_py_run_copy",
        compute_py(),
        5,
        &[SYS_CLOCK_NANOSLEEP],
    );
}

#[test]
fn compute_sh_run_copy() {
    run_and_copy("compute_sh_run_copy", compute_sh(), 14, &[]);
}

#[test]
fn mmapfile_stop_copy() {
    stop_and_copy("mmapfile_stop_copy", mmapfile(), 7);
}

#[test]
fn selfpipe_stop_copy() {
    stop_and_copy("selfpipe_stop_copy", selfpipe(), 17);
}

// ---------------------------------------------------------------------------
// The reader: checkpoint while blocked in read(0) with a partial line buffered.

/// Lines sent before the checkpoint; then `PARTIAL` without its newline.
const READER_BEFORE: usize = 4;
const PARTIAL: &str = "golf ho";

/// Starts the reader, feeds the first lines and a partial one, and waits until it has consumed all of it and sits in read(0). Returns the process and its stdout at that point.
fn reader_until_blocked(ctx: &TestCtx) -> (Proc, Vec<u8>) {
    assert!(READER_LINES[READER_BEFORE].starts_with(PARTIAL));
    let mut p = ctx.spawn(&reader());
    let pid = p.pid();
    p.wait_lines(1); // "ready"
    let base = rchar(pid);
    let mut sent = 0;
    for line in &READER_LINES[..READER_BEFORE] {
        p.write_line(line);
        sent += line.len() + 1;
    }
    p.write_raw(PARTIAL.as_bytes());
    sent += PARTIAL.len();
    p.wait_lines(1 + READER_BEFORE);
    wait_until(
        &format!("reader (pid {pid}) has read all {sent} bytes sent"),
        || rchar(pid) >= base + sent as u64,
    );
    wait_in_syscall(pid, &[SYS_READ], "reader");
    let out = p.stdout();
    (p, out)
}

/// Sends the rest of the reader's input: the end of the partial line, the remaining lines and `quit`.
fn reader_feed_rest(p: &mut Proc) {
    p.write_line(&READER_LINES[READER_BEFORE][PARTIAL.len()..]);
    for line in &READER_LINES[READER_BEFORE + 1..] {
        p.write_line(line);
    }
    p.write_line("quit");
}

#[test]
fn reader_kill_restart_in_read() {
    let ctx = TestCtx::new("reader_kill_restart_in_read");
    let prog = reader();
    let reference = reference_in_background(&prog);
    let image = ctx.path("context.img");
    let (mut orig, before) = reader_until_blocked(&ctx);
    let pid = orig.pid();
    ctx.checkpoint(pid, &image, &["--kill"]);
    let (status, tail) = orig.finish();
    assert_killed_by(status, SIGKILL, "reader after `checkpoint --kill`");
    assert_eq!(
        tail, before,
        "reader printed something after it was checkpointed while blocked in read"
    );

    let mut restarted = ctx.restart(&image, &[]);
    ctx.guard_pid(pid, prog.tags());
    expect_restored_pid(&mut restarted, pid);
    reader_feed_rest(&mut restarted);
    let after = restarted.finish_ok();
    let reference = join_reference(reference);
    assert_continuation(
        &reference,
        &[
            ("original before checkpoint", &before),
            ("restarted, fed through the restarter's stdin", &after),
        ],
        "reader checkpointed in read(0) with a partial line buffered",
    );
}

#[test]
fn reader_run_copy_in_read() {
    let ctx = TestCtx::new("reader_run_copy_in_read");
    let prog = reader();
    let reference = reference_in_background(&prog);
    let image = ctx.path("context.img");
    let (mut orig, before) = reader_until_blocked(&ctx);
    ctx.checkpoint(orig.pid(), &image, &["--run"]);
    let mut copy = ctx.restart(&image, &["--no-restore-pid"]);
    reader_feed_rest(&mut orig);
    reader_feed_rest(&mut copy);
    let orig_out = orig.finish_ok();
    let copy_out = copy.finish_ok();
    let reference = join_reference(reference);
    assert_continuation(
        &reference,
        &[("original", &orig_out)],
        "reader checkpointed with --run in read(0)",
    );
    assert_suffix(
        &reference,
        &copy_out,
        before.len(),
        Some(before.len()),
        "copy of the reader restored with --no-restore-pid",
    );
}

// ---------------------------------------------------------------------------
// Repeated cycles.

#[test]
fn counter_three_cycles() {
    three_cycles("counter_three_cycles", counter(), [6, 20, 36]);
}

#[test]
fn threads_three_cycles() {
    three_cycles("threads_three_cycles", threads(), [3, 9, 16]);
}

// ---------------------------------------------------------------------------
// Checkpoint modes.

#[test]
fn checkpoint_run_leaves_process_running() {
    let ctx = TestCtx::new("checkpoint_run_leaves_process_running");
    let prog = threads();
    let reference = reference_in_background(&prog);
    let mut orig = ctx.spawn(&prog);
    let pid = orig.pid();
    orig.wait_lines(4);

    // Default mode (no flag) is --run; default file is context.PID in the cwd.
    let r = ctx.lifeboat(&["checkpoint", &pid.to_string()]);
    assert!(
        r.status.success(),
        "`lifeboat checkpoint {pid}` failed with {}:\n{}",
        status_text(r.status),
        r.text()
    );
    let default_image = ctx.path(&format!("context.{pid}"));
    assert!(
        default_image.is_file(),
        "`lifeboat checkpoint {pid}` wrote no {}",
        default_image.display()
    );
    assert!(
        !r.stdout.trim().is_empty(),
        "`lifeboat checkpoint` printed no summary"
    );
    for round in [1, 2] {
        if round == 2 {
            ctx.checkpoint(pid, &ctx.path("second.img"), &["--run"]);
        }
        let state = proc_state(pid);
        assert!(
            matches!(state, Some('R' | 'S' | 'D')),
            "after checkpoint #{round} the process should be running, state {state:?}"
        );
        assert_eq!(
            thread_count(pid),
            5,
            "threads should still have 5 threads after checkpoint #{round}"
        );
        let seen = orig.lines();
        orig.wait_lines(seen + 3);
    }
    assert!(
        fs::metadata(ctx.path("second.img"))
            .expect("second image")
            .len()
            > 0
    );
    let out = orig.finish_ok();
    assert_continuation(
        &join_reference(reference),
        &[("original", &out)],
        "threads after two `checkpoint --run`",
    );
}

#[test]
fn checkpoint_stop_then_continue() {
    let ctx = TestCtx::new("checkpoint_stop_then_continue");
    let prog = counter();
    let reference = reference_in_background(&prog);
    let mut orig = ctx.spawn(&prog);
    let pid = orig.pid();
    orig.wait_lines(8);
    ctx.checkpoint(pid, &ctx.path("context.img"), &["--stop"]);
    wait_until(
        &format!("counter (pid {pid}) is stopped after `checkpoint --stop`"),
        || proc_state(pid) == Some('T'),
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    let frozen = orig.lines();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        orig.lines(),
        frozen,
        "counter kept printing after `checkpoint --stop`"
    );
    assert_eq!(
        proc_state(pid),
        Some('T'),
        "counter should still be stopped"
    );
    kill(Pid::from_raw(pid), Signal::SIGCONT).expect("SIGCONT");
    let out = orig.finish_ok();
    assert_continuation(
        &join_reference(reference),
        &[("original", &out)],
        "counter stopped by checkpoint, then continued",
    );
}

#[test]
fn checkpoint_term_then_restart() {
    let ctx = TestCtx::new("checkpoint_term_then_restart");
    let prog = threads();
    let reference = reference_in_background(&prog);
    let image = ctx.path("context.img");
    let mut orig = ctx.spawn(&prog);
    let pid = orig.pid();
    orig.wait_lines(10);
    ctx.checkpoint(pid, &image, &["--term"]);
    let (status, before) = orig.finish();
    assert_killed_by(status, SIGTERM, "threads after `checkpoint --term`");
    let mut restarted = ctx.restart(&image, &[]);
    ctx.guard_pid(pid, prog.tags());
    let after = restarted.finish_ok();
    assert_continuation(
        &join_reference(reference),
        &[
            ("original before checkpoint", &before),
            ("restarted", &after),
        ],
        "threads checkpointed with --term and restarted",
    );
}

// ---------------------------------------------------------------------------
// lifeboat run.

#[test]
fn run_job_child_checkpoint_restart() {
    let ctx = TestCtx::new("run_job_child_checkpoint_restart");
    let prog = counter();
    let reference = reference_in_background(&prog);
    let image = ctx.path("context.img");
    let argv = prog.argv(&ctx.dir);
    let mut cmd = std::process::Command::new(lifeboat_bin());
    cmd.arg("run").arg("--").args(&argv).current_dir(&ctx.dir);
    let mut job = Proc::spawn(cmd, "`lifeboat run -- counter`");
    let run_pid = job.pid();
    wait_until(
        &format!("`lifeboat run` (pid {run_pid}) has a child"),
        || !children_of(run_pid).is_empty(),
    );
    let kids = children_of(run_pid);
    assert_eq!(
        kids.len(),
        1,
        "`lifeboat run` should have exactly one child, has {kids:?}"
    );
    let child = kids[0];
    ctx.guard_pid(child, prog.tags());
    job.wait_lines(6);
    ctx.checkpoint(child, &image, &["--kill"]);
    let (status, before) = job.finish();
    assert!(
        !status.success(),
        "`lifeboat run` should report its child's death by SIGKILL, it exited with {}",
        status_text(status)
    );
    wait_gone(child, "counter run by `lifeboat run`");

    let mut restarted = ctx.restart(&image, &[]);
    expect_restored_pid(&mut restarted, child);
    let after = restarted.finish_ok();
    assert_continuation(
        &join_reference(reference),
        &[("under `lifeboat run`", &before), ("restarted", &after)],
        "counter started by `lifeboat run`, checkpointed and restarted",
    );
}

// ---------------------------------------------------------------------------
// Failure paths.

#[test]
fn checkpoint_nonexistent_pid_fails() {
    let ctx = TestCtx::new("checkpoint_nonexistent_pid_fails");
    let pid = unused_pid();
    let image = ctx.path("context.img");
    let r = ctx.lifeboat(&["checkpoint", "-f", path_str(&image), &pid.to_string()]);
    assert!(
        !r.status.success(),
        "checkpoint of nonexistent pid {pid} succeeded:\n{}",
        r.text()
    );
    assert!(
        r.stderr.contains(&pid.to_string()),
        "the error for nonexistent pid {pid} should name it; stderr:\n{}",
        r.stderr
    );
    assert!(
        !image.exists(),
        "a failed checkpoint left an image behind at {}",
        image.display()
    );
}

/// `restart IMAGE` must fail with a corruption message, and no process may appear under `pid` at any moment while it runs (the damage has to be found before anything is recreated).
fn assert_restart_rejects(ctx: &TestCtx, image: &Path, pid: i32, what: &str) {
    let watch = PidWatch::start(pid);
    let r = ctx.lifeboat(&["restart", path_str(image)]);
    let sightings = watch.stop();
    assert!(
        !r.status.success(),
        "restart of an image {what} succeeded:\n{}",
        r.text()
    );
    let lower = r.text().to_lowercase();
    assert!(
        ["corrupt", "checksum", "truncat"]
            .iter()
            .any(|w| lower.contains(w)),
        "restart of an image {what} should report corruption (a message mentioning corruption/checksum); it said:\n{}",
        r.text()
    );
    assert!(
        !pid_exists(pid),
        "restart of an image {what} failed but left a process with pid {pid} (state {:?})",
        proc_state(pid)
    );
    assert!(
        sightings == 0,
        "restart of an image {what} failed as it should, but only after recreating the process: pid {pid} existed during the attempt ({sightings} polls saw it). Damage must be detected before any process is created. It said:\n{}",
        r.text()
    );
}

#[test]
fn restart_rejects_corrupt_images() {
    let ctx = TestCtx::new("restart_rejects_corrupt_images");
    let prog = counter();
    let reference = reference_in_background(&prog);
    let image = ctx.path("context.img");
    let mut orig = ctx.spawn(&prog);
    let pid = orig.pid();
    orig.wait_lines(4);
    ctx.checkpoint(pid, &image, &["--kill"]);
    let (status, before) = orig.finish();
    assert_killed_by(status, SIGKILL, "counter after `checkpoint --kill`");
    ctx.guard_pid(pid, prog.tags());

    let good = fs::read(&image).expect("read image");
    assert!(good.len() > 64, "the image is only {} bytes", good.len());
    let bad = ctx.path("bad.img");
    let mid = good.len() / 2;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated to half its size", good[..mid].to_vec()),
        ("missing its last byte", good[..good.len() - 1].to_vec()),
        ("with a flipped byte in the middle", flip(&good, mid)),
        (
            "with a flipped byte near the end",
            flip(&good, good.len() - 9),
        ),
    ];
    for (what, bytes) in cases {
        fs::write(&bad, bytes).expect("write corrupt image");
        assert_restart_rejects(&ctx, &bad, pid, what);
    }

    // The intact image still restores, so the failures above were about the damage.
    let mut restarted = ctx.restart(&image, &[]);
    let after = restarted.finish_ok();
    assert_continuation(
        &join_reference(reference),
        &[
            ("original before checkpoint", &before),
            ("restarted from the intact image", &after),
        ],
        "counter restarted after the corrupt images were refused",
    );
}

fn flip(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut v = bytes.to_vec();
    v[at] ^= 0x5a;
    v
}

#[test]
fn restart_refuses_pid_in_use() {
    let ctx = TestCtx::new("restart_refuses_pid_in_use");
    let prog = counter();
    let reference = reference_in_background(&prog);
    let image = ctx.path("context.img");
    let mut orig = ctx.spawn(&prog);
    let pid = orig.pid();
    orig.wait_lines(5);
    ctx.checkpoint(pid, &image, &["--run"]);
    let r = ctx.lifeboat(&["restart", path_str(&image)]);
    assert!(
        !r.status.success(),
        "restart succeeded although pid {pid} is still in use:\n{}",
        r.text()
    );
    assert!(
        r.text().contains("--no-restore-pid"),
        "the error for a PID in use should point at --no-restore-pid; it said:\n{}",
        r.text()
    );
    assert!(
        is_alive(pid),
        "the original (pid {pid}) should be untouched, state {:?}",
        proc_state(pid)
    );
    let out = orig.finish_ok();
    assert_continuation(
        &join_reference(reference),
        &[("original", &out)],
        "counter while a restart of its image was refused",
    );
}

// ---------------------------------------------------------------------------
// inspect.

#[test]
fn inspect_human_and_json() {
    let ctx = TestCtx::new("inspect_human_and_json");
    let prog = threads();
    let image = ctx.path("context.img");
    let mut orig = ctx.spawn(&prog);
    let pid = orig.pid();
    orig.wait_lines(3);
    let nthreads = thread_count(pid);
    assert_eq!(nthreads, 5, "threads should run 5 threads mid-way");
    ctx.checkpoint(pid, &image, &["--kill"]);
    let (status, _) = orig.finish();
    assert_killed_by(status, SIGKILL, "threads after `checkpoint --kill`");

    let human = ctx.lifeboat(&["inspect", path_str(&image)]);
    assert!(
        human.status.success(),
        "`lifeboat inspect` failed with {}:\n{}",
        status_text(human.status),
        human.text()
    );
    assert!(
        human.stdout.contains(&pid.to_string()),
        "`lifeboat inspect` should show the pid {pid}:\n{}",
        human.stdout
    );

    let json = ctx.lifeboat(&["inspect", "--json", path_str(&image)]);
    assert!(
        json.status.success(),
        "`lifeboat inspect --json` failed with {}:\n{}",
        status_text(json.status),
        json.text()
    );
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap_or_else(|e| {
        panic!(
            "`lifeboat inspect --json` printed invalid JSON ({e}):\n{}",
            json.stdout
        )
    });
    assert_eq!(
        v["pid"].as_i64(),
        Some(i64::from(pid)),
        "JSON field `pid` should be {pid}:\n{v:#}"
    );
    let command = match &v["command"] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        other => {
            panic!("JSON field `command` should be a string or an array of strings, got {other}")
        }
    };
    assert!(
        command.contains("threads"),
        "JSON field `command` should name the program `threads`, got {command:?}"
    );
    let threads = v["threads"]
        .as_array()
        .unwrap_or_else(|| panic!("JSON field `threads` should be an array:\n{v:#}"));
    assert_eq!(
        threads.len(),
        nthreads,
        "JSON `threads` should list {nthreads} threads"
    );
}

/// A checkpoint that reports success writes an image restart accepts: a process holding a
/// deleted file too large for an image is refused at checkpoint, before `--kill` could
/// kill it, and goes on running.
#[test]
fn a_deleted_file_too_large_for_an_image_is_refused_and_the_process_lives() {
    let ctx = TestCtx::new("deleted-too-large");
    let script = r#"
import os, sys, time
path = sys.argv[1]
with open(path, "wb") as f:
    f.truncate(600 << 20)
held = open(path, "rb")
os.unlink(path)
print("ready", flush=True)
time.sleep(60)
"#;
    let out = ctx.path("out.txt");
    let mut cmd = std::process::Command::new("python3");
    cmd.args(["-c", script]).arg(ctx.path("big"));
    let mut job = Background::to_file(cmd, &out, "the holder of a deleted file");
    wait_until("the file to be deleted", || file_lines(&out) >= 1);
    let image = ctx.path("job.ctx");
    let pid = job.pid().to_string();
    let r = ctx.lifeboat(&["checkpoint", "--kill", "-f", path_str(&image), &pid]);
    assert!(
        !r.status.success(),
        "the checkpoint succeeded: {}",
        r.text()
    );
    assert!(
        r.stderr.contains("deleted file of 629145600 bytes"),
        "the refusal names the file and its size: {}",
        r.stderr
    );
    assert!(!image.exists(), "no image under the final name");
    assert!(
        job.alive(),
        "a refused --kill checkpoint killed the process"
    );
}

/// `inspect` shows a summary by default: regions grouped by kind (every one with
/// `--regions`), handlers by signal name, open flags by name. A closed pipe
/// (`inspect --json | head`) is a quiet success.
#[test]
fn inspect_summarizes_by_default_and_a_closed_pipe_is_success() {
    let ctx = TestCtx::new("inspect_summary");
    let prog = signals();
    let image = ctx.path("context.img");
    let mut orig = ctx.spawn(&prog);
    let pid = orig.pid();
    orig.wait_lines(3);
    ctx.checkpoint(pid, &image, &["--kill"]);
    let (status, _) = orig.finish();
    assert_killed_by(status, SIGKILL, "signals after `checkpoint --kill`");

    let json = ctx
        .lifeboat_ok(&["inspect", "--json", path_str(&image)])
        .stdout;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let regions = v["regions"].as_array().unwrap().len();
    let summary = ctx.inspect(&image);
    let region_lines = |text: &str| text.lines().filter(|l| l.contains(" saved ")).count();
    assert_eq!(
        region_lines(&summary),
        0,
        "regions listed by default:\n{summary}"
    );
    assert!(
        summary.contains(&format!("memory ({regions} regions"))
            && summary.contains("(every region: --regions)"),
        "{summary}"
    );
    let listed = ctx
        .lifeboat_ok(&["inspect", "--regions", path_str(&image)])
        .stdout;
    assert_eq!(region_lines(&listed), regions, "{listed}");
    let handlers: Vec<&str> = summary
        .lines()
        .skip_while(|l| !l.starts_with("signal handlers ("))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .collect();
    assert!(!handlers.is_empty(), "{summary}");
    for h in &handlers {
        assert!(
            h.trim_start().starts_with("SIG"),
            "a handler by number: {h}"
        );
    }
    assert!(summary.contains("(O_"), "open flags by name: {summary}");
    assert!(!summary.contains(" flags 0"), "octal flags: {summary}");

    // The reader is gone before anything is written: EPIPE on the first write.
    let mut cmd = std::process::Command::new(lifeboat_bin());
    cmd.args(["inspect", "--json", path_str(&image)])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "inspect --json into a closed pipe: {} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

/// Progress of a long checkpoint and restart on a terminal (bytes, rate, time left),
/// nothing with `-q` or when stderr is not a terminal. The terminal is `script`'s pty.
#[test]
fn progress_on_a_terminal_only() {
    let ctx = TestCtx::new("progress");
    require_tool(
        "script",
        "the progress test runs lifeboat on a pseudo-terminal with `script` (Debian package bsdutils)",
    );
    let ready = ctx.path("ready");
    let mut cmd = std::process::Command::new("python3");
    cmd.args([
        "-c",
        "import os, sys, time\ndata = bytearray(os.urandom(96 << 20))\nopen(sys.argv[1], 'w').close()\ntime.sleep(120)",
        path_str(&ready),
    ]);
    let mut job = Background::quiet(cmd, "a 96 MiB python3");
    wait_until("the workload's memory", || ready.exists());
    let pid = job.pid();
    let on_tty = |args: &str| {
        let mut c = std::process::Command::new("script");
        c.args(["-qec", &format!("{} {args}", lifeboat_bin()), "/dev/null"]);
        run_to_end(c, &format!("`lifeboat {args}` on a terminal"))
    };
    let image = ctx.path("job.ctx");
    let quiet = on_tty(&format!("checkpoint -q -f {} {pid}", path_str(&image)));
    assert!(quiet.status.success(), "{}", quiet.text());
    assert!(
        !quiet.stdout.contains("saving memory"),
        "-q drew progress: {}",
        quiet.stdout
    );
    let piped = ctx.lifeboat_ok(&["checkpoint", "-f", path_str(&image), &pid.to_string()]);
    assert!(
        !piped.stderr.contains("saving memory"),
        "progress off a terminal: {}",
        piped.stderr
    );
    let shown = on_tty(&format!("checkpoint --kill -f {} {pid}", path_str(&image)));
    assert!(shown.status.success(), "{}", shown.text());
    job.wait();
    for part in ["saving memory: ", " MiB/", "/s, ETA "] {
        assert!(
            shown.stdout.contains(part),
            "no {part:?} in {:?}",
            shown.stdout
        );
    }
    let restored = on_tty(&format!("restart --kill {}", path_str(&image)));
    assert!(restored.status.success(), "{}", restored.text());
    assert!(
        restored.stdout.contains("restoring memory: "),
        "{:?}",
        restored.stdout
    );
}
