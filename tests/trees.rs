//! Whole jobs: process trees, shell pipelines and process groups, shared memory and
//! shared files, the descriptors event loops are built of (epoll, timerfd, eventfd,
//! signalfd), file locks and timers, checkpointed and restarted with the real binary,
//! checked against uninterrupted runs byte for byte.
//!
//! Needs root (PIDs are restored with clone3 `set_tid`), gcc, python3, bash, gzip and
//! unshare; fails with the reason when one is missing, never skips.
#![allow(clippy::unwrap_used)] // test helpers: a failed setup step should stop the test loudly

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::wait::WaitStatus;

/// What identifies a restored process in `/proc` (for [`TestCtx::restart_detached`]'s
/// guard, which kills it if the test ends early).
fn tags(names: &[&str]) -> Vec<String> {
    names.iter().map(|t| (*t).to_owned()).collect()
}

/// Run `prog args` (in the test's directory) twice: to the end, for the reference
/// output; and with its stdout in a file, saved by `checkpoint --kill` with `scope` once
/// the file has more than `at` lines, then restarted by `lifeboat restart` (which waits
/// for it). Returns the reference, the interrupted run's output, and what `checkpoint`
/// printed.
fn reference_and_restarted(
    ctx: &TestCtx,
    prog: &Path,
    args: &[&OsStr],
    scope: &[&str],
    at: usize,
) -> (String, String, String) {
    let command = || {
        let mut cmd = Command::new(prog);
        cmd.args(args).current_dir(&ctx.dir);
        cmd
    };
    let reference = run_to_end(command(), "the uninterrupted reference run");
    reference.assert_success("the uninterrupted reference run");
    let out = ctx.path("out.txt");
    let mut job = Background::to_file(command(), &out, "the job");
    wait_until("progress", || file_lines(&out) > at);
    let image = ctx.path("job.ctx");
    let mut flags = vec!["--kill"];
    flags.extend_from_slice(scope);
    let said = ctx.checkpoint(job.pid(), &image, &flags);
    job.wait();
    reap_gone(&saved_pids(&said.stdout), "a process the checkpoint killed");
    ctx.lifeboat_ok(&["restart", path_str(&image)]);
    (reference.stdout, read_text(&out), said.stdout)
}

/// [`reference_and_restarted`] for a Python script: `script` is written to `job.py` in
/// the test's directory and run by python3 with `args` after it.
fn python_reference_and_restarted(
    ctx: &TestCtx,
    script: &str,
    args: &[&OsStr],
    scope: &[&str],
    at: usize,
) -> (String, String, String) {
    fs::write(ctx.path("job.py"), script).unwrap();
    let argv: Vec<&OsStr> = std::iter::once("job.py".as_ref())
        .chain(args.iter().copied())
        .collect();
    reference_and_restarted(ctx, Path::new("python3"), &argv, scope, at)
}

/// Start `lifeboat run -- bash -c SCRIPT` in the test's directory; returns the runner
/// and bash's PID.
fn run_job(ctx: &TestCtx, script: &str) -> (Background, i32) {
    let mut cmd = Command::new(lifeboat_bin());
    cmd.args(["run", "--", "bash", "-c", script])
        .current_dir(&ctx.dir);
    let runner = Background::quiet(cmd, "`lifeboat run -- bash`");
    let mut job = 0;
    wait_until("the job to start", || {
        job = children_of(runner.pid()).first().copied().unwrap_or(0);
        job != 0
    });
    (runner, job)
}

/// A python3 `-c SCRIPT ARGS` command.
fn python(script: &str, args: &[&OsStr]) -> Command {
    let mut cmd = Command::new("python3");
    cmd.args(["-c", script]).args(args);
    cmd
}

fn require_gzip() {
    require_tool(
        "gzip",
        "the pipeline tests compress with gzip (Debian package gzip)",
    );
}

const PRODUCER: &str = r#"
import sys, time, hashlib
h = hashlib.sha256()
for i in range(1, 601):
    h.update(i.to_bytes(4, "little"))
    print(f"{i:5} {h.hexdigest()}", flush=True)
    time.sleep(0.005)
"#;

/// `producer | gzip -n > out.gz`, uninterrupted: the reference bytes.
fn pipeline_reference(dir: &Path) -> Vec<u8> {
    fs::write(dir.join("producer.py"), PRODUCER).unwrap();
    let mut cmd = Command::new("bash");
    cmd.args(["-c", "python3 producer.py | gzip -n > ref.gz"])
        .current_dir(dir);
    run_to_end(cmd, "the uninterrupted pipeline").assert_success("the uninterrupted pipeline");
    fs::read(dir.join("ref.gz")).unwrap()
}

/// The pipeline is saved mid-stream with everything in flight (python's output in the
/// pipe, gzip's dictionary in memory, the half-written file), killed, restarted, and the
/// compressed file is byte-identical to an uninterrupted run's.
#[test]
fn pipeline_into_gzip_kill_restart() {
    let ctx = TestCtx::new("pipeline");
    require_gzip();
    let reference = pipeline_reference(&ctx.dir);
    let (mut runner, bash) = run_job(&ctx, "python3 producer.py | gzip -n > out.gz");
    // Mid-stream: wait until the producer is well under way.
    std::thread::sleep(Duration::from_millis(900));
    let image = ctx.path("job.ctx");
    let out = ctx.checkpoint(bash, &image, &["--kill"]);
    assert!(
        out.stdout.contains("3 processes"),
        "bash, python3 and gzip: {}",
        out.stdout
    );
    runner.wait();
    reap_gone(&saved_pids(&out.stdout), "a member of the pipeline");
    let partial = fs::read(ctx.path("out.gz")).unwrap();
    assert!(
        partial.len() < reference.len(),
        "checkpointed before the end"
    );

    ctx.lifeboat_ok(&["restart", path_str(&image)]);
    let got = fs::read(ctx.path("out.gz")).unwrap();
    assert_eq!(got.len(), reference.len(), "same compressed length");
    assert!(
        got == reference,
        "out.gz is byte-identical to the reference"
    );
}

/// A process group (a pipeline with job control on) saved with --pgid: its members'
/// parent, the shell, is outside the scope; they come back as children of the restarter.
#[test]
fn pipeline_process_group_scope() {
    let ctx = TestCtx::new("pgid");
    require_gzip();
    let reference = pipeline_reference(&ctx.dir);
    let (mut runner, bash) = run_job(
        &ctx,
        "set -m; python3 producer.py | gzip -n > out.gz; wait; sleep 0.1",
    );
    let mut members = Vec::new();
    wait_until("the pipeline", || {
        members = children_of(bash);
        members.len() == 2
    });
    std::thread::sleep(Duration::from_millis(700));
    let pgid = pgid_of(members[0]).expect("the pipeline's first member still runs");
    let image = ctx.path("group.ctx");
    let out = ctx.checkpoint(pgid, &image, &["--pgid", "--kill"]);
    assert!(out.stdout.contains("2 processes"), "{}", out.stdout);
    runner.wait();
    reap_gone(&saved_pids(&out.stdout), "a member of the process group");
    ctx.lifeboat_ok(&["restart", path_str(&image)]);
    let got = fs::read(ctx.path("out.gz")).unwrap();
    assert!(
        got == reference,
        "out.gz is byte-identical to the reference"
    );
}

fn shmtree(rounds: u32) -> Command {
    let mut cmd = Command::new(program("shmtree"));
    cmd.arg(rounds.to_string());
    cmd
}

fn shmtree_reference(dir: &Path, rounds: u32) -> String {
    let mut cmd = shmtree(rounds);
    cmd.current_dir(dir);
    let out = run_to_end(cmd, "the uninterrupted shmtree");
    out.assert_success("the uninterrupted shmtree");
    out.stdout
}

fn start_shmtree(ctx: &TestCtx, rounds: u32) -> (Background, PathBuf) {
    let path = ctx.path("out.txt");
    let child = Background::to_file(shmtree(rounds), &path, "shmtree");
    (child, path)
}

/// A parent and three children sharing an anonymous mapping with a process-shared
/// mutex in it, checkpointed three times (each restart's result checkpointed again):
/// after each restart they still share the memory and the lock, the parent still reaps
/// its children with their exit statuses, and the output equals an uninterrupted run.
#[test]
fn shared_memory_tree_three_cycles() {
    let ctx = TestCtx::new("shmtree");
    let rounds = 120;
    let reference = shmtree_reference(&ctx.dir, rounds);
    let (mut child, out) = start_shmtree(&ctx, rounds);
    let root = child.pid();
    let image = ctx.path("tree.ctx");
    for (cycle, at) in [15usize, 45, 80].into_iter().enumerate() {
        wait_until("progress", || file_lines(&out) > at);
        let said = ctx.checkpoint(root, &image, &["--tree", "--kill"]);
        assert!(
            said.stdout.contains("4 processes"),
            "cycle {cycle}: {}",
            said.stdout
        );
        if cycle == 0 {
            child.wait();
        } else {
            reap(root);
        }
        reap_gone(&saved_pids(&said.stdout), "a process of the tree");
        let (_, restored) = ctx.restart_detached(&image, &["-q"], tags(&["shmtree"]));
        assert_eq!(restored, root, "the root keeps its PID");
        // The three children are the root's again, with their PIDs.
        let deadline = Instant::now() + TIMEOUT;
        while children_of(root).len() != 3 {
            assert!(
                Instant::now() < deadline,
                "cycle {cycle}: the restored root has children {:?}; root status {:?}; output ends {:?}",
                children_of(root),
                fs::read_to_string(format!("/proc/{root}/stat")),
                fs::read_to_string(&out)
                    .unwrap_or_default()
                    .lines()
                    .rev()
                    .take(3)
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    match reap(root) {
        WaitStatus::Exited(_, 0) => {}
        other => panic!("the restored tree ended with {other:?}"),
    }
    let got = read_text(&out);
    assert_eq!(got, reference);
}

/// A tree restarted with --no-restore-pid while the original still runs (so its PIDs
/// are taken) gets its original PIDs inside a new PID namespace: the copy continues
/// exactly as the original does, and the original is untouched.
#[test]
fn tree_copy_in_new_pid_namespace_beside_original() {
    let ctx = TestCtx::new("pidns");
    let rounds = 100;
    let reference = shmtree_reference(&ctx.dir, rounds);
    // The original writes into a pipe to us: the copy's stdout (a pipe leading outside
    // the image) becomes the restarter's.
    let mut original = Proc::spawn_no_input(shmtree(rounds), "the original shmtree");
    std::thread::sleep(Duration::from_millis(800));
    let image = ctx.path("tree.ctx");
    let said = ctx.checkpoint(original.pid(), &image, &["--tree"]);
    assert!(said.stdout.contains("4 processes"));
    let mut copy = ctx.restart(&image, &["--no-restore-pid"]);
    let (status, copy_out) = copy.finish();
    let err = copy.stderr_text();
    assert!(status.success(), "restart failed: {err}");
    assert!(err.contains("new PID namespace"), "{err}");
    let copy_out = String::from_utf8(copy_out).unwrap();
    // The copy printed the rest of the run from the checkpoint on.
    let first = copy_out.lines().next().expect("the copy printed something");
    let at = reference
        .find(first)
        .expect("the copy's first line is in the reference");
    assert_eq!(copy_out, reference[at..], "the copy continues exactly");
    let (status, original_out) = original.finish();
    assert!(status.success());
    assert_eq!(
        String::from_utf8(original_out).unwrap(),
        reference,
        "the original ran undisturbed"
    );
}

/// An event loop over epoll (edge-triggered timerfd, signalfd), an eventfd in semaphore
/// mode and a pending signal, saved at three points and each time killed and restarted:
/// the output equals an uninterrupted run's (a timer not re-armed would hang the loop).
#[test]
fn event_loop_descriptors_kill_restart() {
    let ctx = TestCtx::new("anonfds");
    let steps = 150;
    let anonfds = || {
        let mut cmd = Command::new(program("anonfds"));
        cmd.arg(steps.to_string());
        cmd
    };
    let reference = run_to_end(anonfds(), "the uninterrupted anonfds");
    assert!(reference.status.success());
    let path = ctx.path("out.txt");
    // The first process is our child; later ones are adopted (we are a subreaper).
    let mut first = Some(Background::to_file(anonfds(), &path, "anonfds"));
    let pid = first.as_ref().map_or(0, Background::pid);
    let image = ctx.path("loop.ctx");
    for at in [20usize, 60, 110] {
        wait_until("progress", || file_lines(&path) > at);
        let said = ctx.checkpoint(pid, &image, &["--kill"]);
        match first.take() {
            Some(mut child) => {
                child.wait();
            }
            None => {
                reap(pid);
            }
        }
        reap_gone(&saved_pids(&said.stdout), "the event loop");
        let text = ctx.inspect(&image);
        for kind in ["timerfd", "eventfd", "signalfd", "epoll"] {
            assert!(text.contains(kind), "inspect lists the {kind}: {text}");
        }
        ctx.restart_detached(&image, &["-q"], tags(&["anonfds"]));
    }
    match reap(pid) {
        WaitStatus::Exited(_, 0) => {}
        other => panic!("the restored loop ended with {other:?}"),
    }
    assert_eq!(read_text(&path), reference.stdout);
}

/// A shell and its background subshell write to one inherited stdout (one open file
/// description, one offset). After the restart they still share it: every line of both
/// is in the file, none overwritten.
#[test]
fn shared_stdout_offset_survives() {
    let ctx = TestCtx::new("sharedfd");
    let script = "( for i in $(seq 1 150); do echo \"child line $i\"; sleep 0.01; done ) &\n\
                  for i in $(seq 1 150); do echo \"parent line $i\"; sleep 0.01; done\nwait\n";
    let out = ctx.path("out.txt");
    let mut cmd = Command::new("bash");
    cmd.args(["-c", script]);
    let mut job = Background::to_file(cmd, &out, "the two writers");
    wait_until("progress", || file_lines(&out) > 40);
    let image = ctx.path("sh.ctx");
    let said = ctx.checkpoint(job.pid(), &image, &["--tree", "--kill"]);
    assert!(said.stdout.contains("processes"));
    job.wait();
    reap_gone(&saved_pids(&said.stdout), "a writer");
    ctx.lifeboat_ok(&["restart", path_str(&image)]);
    let text = read_text(&out);
    let mut got: Vec<&str> = text.lines().collect();
    got.sort_unstable();
    let mut want: Vec<String> = (1..=150)
        .flat_map(|i| [format!("child line {i}"), format!("parent line {i}")])
        .collect();
    want.sort_unstable();
    assert_eq!(got, want, "every line of both writers, none clobbered");
}

/// A job that forks all the time (a shell loop running `/bin/true`): children that exit
/// between the scan of the tree and their freeze are left out, or saved as zombies, and
/// the checkpoint goes on. 30 checkpoints with `--run` all succeed, and the job restarted
/// from a final `--kill` counts on without losing or repeating a line.
#[test]
fn constantly_forking_job_is_checkpointed_every_time() {
    let ctx = TestCtx::new("forky");
    let out = ctx.path("out.txt");
    let mut cmd = Command::new("bash");
    cmd.args([
        "-c",
        "n=0; while :; do /bin/true; n=$((n+1)); echo $n; done",
    ])
    .process_group(0);
    let mut job = Background::to_file(cmd, &out, "the forking loop");
    let pid = job.pid();
    // The loop never ends by itself: kill its group (restored with it) however the test
    // ends, or it would hold the harness's stderr open.
    ctx.guard_group(pid);
    wait_until("progress", || file_lines(&out) > 20);
    let image = ctx.path("forky.ctx");
    for _ in 0..30 {
        ctx.checkpoint(pid, &image, &["--tree", "--run", "-q"]);
    }
    let said = ctx.checkpoint(pid, &image, &["--tree", "--kill"]);
    job.wait();
    reap_gone(&saved_pids(&said.stdout), "a process of the loop");
    let at_kill = file_lines(&out);
    ctx.restart_detached(&image, &["-q"], tags(&["bash"]));
    wait_until("the restored loop to count on", || {
        file_lines(&out) > at_kill + 200
    });
    kill_all(&[pid]);
    let text = read_text(&out);
    for (i, line) in text.lines().enumerate() {
        assert_eq!(line, (i + 1).to_string(), "line {} of the count", i + 1);
    }
}

const LOCKER: &str = r#"
import fcntl, struct, sys, time
d = sys.argv[1]
a = open(f"{d}/a", "r+"); b = open(f"{d}/b", "r+"); c = open(f"{d}/c", "r+")
fcntl.flock(a, fcntl.LOCK_EX)
fcntl.lockf(b, fcntl.LOCK_EX, 10, 5)          # bytes 5..14
F_OFD_SETLK = 37
fcntl.fcntl(c, F_OFD_SETLK, struct.pack("hhqqi4x", fcntl.F_RDLCK, 0, 0, 0, 0))
print("locked", flush=True)
while True:
    time.sleep(0.05)
"#;

/// What another process can take: `a` (flock), `b` bytes 5..14 and 20 (POSIX), `c` for
/// writing (OFD). One word per lock: `free` or `held`.
const PROBE: &str = r#"
import fcntl, struct, sys
d = sys.argv[1]
def attempt(f):
    try:
        f(); return "free"
    except BlockingIOError:
        return "held"
a = open(f"{d}/a", "r+"); b = open(f"{d}/b", "r+"); c = open(f"{d}/c", "r+")
out = [attempt(lambda: fcntl.flock(a, fcntl.LOCK_EX | fcntl.LOCK_NB)),
       attempt(lambda: fcntl.lockf(b, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 7)),
       attempt(lambda: fcntl.lockf(b, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 20)),
       attempt(lambda: fcntl.fcntl(c, 37, struct.pack("hhqqi4x", fcntl.F_WRLCK, 0, 0, 0, 0)))]
print(" ".join(out))
"#;

fn probe(dir: &Path) -> String {
    let out = run_to_end(python(PROBE, &[dir.as_os_str()]), "the lock probe");
    out.assert_success("the lock probe");
    out.stdout.trim().to_owned()
}

/// flock, POSIX record and OFD locks are held again after a restart (and only the ranges
/// that were locked).
#[test]
fn file_locks_are_taken_back() {
    let ctx = TestCtx::new("locks");
    for f in ["a", "b", "c"] {
        fs::write(ctx.path(f), "0123456789012345678901234567890\n").unwrap();
    }
    let out = ctx.path("out.txt");
    let mut locker =
        Background::to_file(python(LOCKER, &[ctx.dir.as_os_str()]), &out, "the locker");
    let pid = locker.pid();
    wait_until("the locks", || file_lines(&out) >= 1);
    assert_eq!(
        probe(&ctx.dir),
        "held held free held",
        "the original holds its locks"
    );
    let image = ctx.path("locks.ctx");
    let said = ctx.checkpoint(pid, &image, &["--kill"]);
    locker.wait();
    reap_gone(&saved_pids(&said.stdout), "the locker");
    assert_eq!(
        probe(&ctx.dir),
        "free free free free",
        "killed: the locks went with it"
    );
    ctx.restart_detached(&image, &["-q"], tags(&["python3"]));
    let got = probe(&ctx.dir);
    kill_all(&[pid]);
    assert_eq!(
        got, "held held free held",
        "the restored process holds them again"
    );
}

/// An interval timer and a POSIX timer (with its ID and sigev_value) keep firing after a
/// restart; the output equals an uninterrupted run's.
#[test]
fn timers_keep_firing() {
    let ctx = TestCtx::new("timers");
    let (reference, got, _) =
        reference_and_restarted(&ctx, &program("timers"), &["150".as_ref()], &[], 40);
    assert_eq!(got, reference);
}

const PENDING_TICK: &str = r#"
import signal, sys, time
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
signal.setitimer(signal.ITIMER_REAL, 0.05, 0.05)
print("armed", flush=True)
# SIGALRM is blocked: after 50 ms a tick is pending, and the kernel re-arms the timer
# only when that tick is delivered. Meanwhile getitimer() reads a zero value.
for i in range(10):
    time.sleep(0.05)
    print("waiting", i, flush=True)
for n in range(10):
    if signal.sigtimedwait({signal.SIGALRM}, 2.0) is None:
        print("the interval timer stopped after", n, "ticks", flush=True)
        sys.exit(1)
print("ten more ticks", flush=True)
"#;

/// An interval timer saved while its tick is pending (blocked, not yet delivered, so
/// not yet re-armed, and getitimer() reads 0 left) keeps firing after the restart.
#[test]
fn interval_timer_with_a_pending_tick_keeps_firing() {
    let ctx = TestCtx::new("pending-tick");
    let (reference, got, _) = python_reference_and_restarted(&ctx, PENDING_TICK, &[], &[], 4);
    assert_eq!(got, reference);
}

const ZOMBIE_PARENT: &str = r#"
import os, signal, time
a = os.fork()
if a == 0:
    os._exit(7)
b = os.fork()
if b == 0:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(10)
for i in range(1, 41):
    print(f"tick {i}", flush=True)
    time.sleep(0.05)
for p in (a, b):
    pid, st = os.waitpid(p, 0)
    how = f"exit {os.WEXITSTATUS(st)}" if os.WIFEXITED(st) else f"signal {os.WTERMSIG(st)}"
    print(f"child {'ab'[(a, b).index(pid)]} {how}", flush=True)
"#;

/// The output `out` of [`ZOMBIE_PARENT`] restarted and run to its end: every tick, then
/// both children reaped with their statuses.
fn assert_zombie_parent_finished(out: &Path) {
    let text = read_text(out);
    assert!(text.contains("tick 40\n"), "{text}");
    assert!(
        text.ends_with("child a exit 7\nchild b signal 15\n"),
        "the restored parent reaped both zombies with their statuses: {text}"
    );
}

/// Children that exited but were not reaped yet come back as zombies with their exit
/// statuses (one exited with 7, one was killed by SIGTERM): the restored parent's
/// waitpid() finds them.
#[test]
fn zombies_are_restored_for_their_parent() {
    let ctx = TestCtx::new("zombies");
    let out = ctx.path("out.txt");
    let mut parent = Background::to_file(python(ZOMBIE_PARENT, &[]), &out, "the zombie parent");
    let pid = parent.pid();
    wait_until("the children to be zombies", || {
        file_lines(&out) > 5 && children_of(pid).len() == 2
    });
    let zombies = children_of(pid);
    let image = ctx.path("z.ctx");
    let said = ctx.checkpoint(pid, &image, &["--tree", "--kill"]);
    parent.wait();
    reap_gone(&saved_pids(&said.stdout), "the zombie parent");
    // The zombies are handed to us (the subreaper) when their parent dies: reap them
    // too, their PIDs must be free.
    reap_gone(&zombies, "a zombie handed to the test");
    ctx.lifeboat_ok(&["restart", path_str(&image)]);
    assert_zombie_parent_finished(&out);
}

/// Runs in a new PID namespace, as its init: starts the zombie parent, checkpoints it
/// with `--tree --kill`, reaps everything, restarts it and prints the image's summary.
/// argv: lifeboat, the zombie parent's script, the output file, the image.
const IN_NAMESPACE: &str = r#"
import os, subprocess, sys, time
bin, script, out, image = sys.argv[1:]
parent = subprocess.Popen(["python3", "-c", script], stdin=subprocess.DEVNULL, stdout=open(out, "w"))
def zombies():
    try:
        kids = open(f"/proc/{parent.pid}/task/{parent.pid}/children").read().split()
    except OSError:
        return 0
    return sum(open(f"/proc/{k}/stat").read().rsplit(")", 1)[1].split()[0] == "Z" for k in kids)
deadline = time.time() + 30
while not (zombies() == 2 and len(open(out).read().splitlines()) > 5):
    assert time.time() < deadline, "the children never became zombies"
    time.sleep(0.01)
subprocess.run([bin, "checkpoint", "--tree", "--kill", "-q", "-f", image, str(parent.pid)], check=True)
# The parent, then its zombies (handed to us, the namespace's init): every PID free.
while True:
    try:
        os.waitpid(-1, 0)
    except ChildProcessError:
        break
subprocess.run([bin, "restart", "-q", image], stdin=subprocess.DEVNULL, check=True)
print(subprocess.run([bin, "inspect", "--json", image], check=True, capture_output=True, text=True).stdout)
"#;

/// A job whose process group and session leaders are outside the checkpointer's PID
/// namespace, as under a container or a CI runner: /proc reports its group and session
/// as 0. It is saved and restored all the same, zombies included.
#[test]
fn job_with_group_and_session_outside_the_namespace() {
    let ctx = TestCtx::new("outside-ns");
    require_tool(
        "unshare",
        "the test runs a job in a new PID namespace (Debian package util-linux)",
    );
    let out = ctx.path("out.txt");
    let image = ctx.path("z.ctx");
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--pid",
        "--fork",
        "--mount-proc",
        "python3",
        "-c",
        IN_NAMESPACE,
        lifeboat_bin(),
    ])
    .args([ZOMBIE_PARENT.as_ref(), out.as_os_str(), image.as_os_str()]);
    let run = run_to_end(cmd, "the run in a new PID namespace");
    run.assert_success("the run in a new PID namespace");
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        (&summary["pgid"], &summary["sid"]),
        (&serde_json::json!(0), &serde_json::json!(0)),
        "the job's leaders were outside the namespace: {summary}"
    );
    assert_zombie_parent_finished(&out);
}

const POOL: &str = r#"
import multiprocessing as mp, time
def work(x):
    time.sleep(0.01)
    return x * x
def tasks(n):
    for i in range(n):
        time.sleep(0.01)
        yield i
if __name__ == "__main__":
    with mp.Pool(3) as pool:
        for i, r in enumerate(pool.imap(work, tasks(300))):
            print(i, r, flush=True)
"#;

/// A Python multiprocessing pool (a parent with three threads, three workers, pipes
/// between them and POSIX semaphores in deleted /dev/shm files) saved mid-run, killed and
/// restarted: it finishes with exactly the output of an uninterrupted run.
#[test]
fn python_multiprocessing_pool_kill_restart() {
    let ctx = TestCtx::new("pool");
    let (reference, got, said) = python_reference_and_restarted(&ctx, POOL, &[], &["--tree"], 60);
    assert!(said.contains("4 processes"), "{said}");
    assert_eq!(got, reference);
}

const SOCKETPAIRS: &str = r#"
import os, socket, time
a, b = socket.socketpair()
d1, d2 = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
pid = os.fork()
if pid == 0:
    a.close(); d1.close()
    f = b.makefile("rwb", buffering=0)
    for line in f:
        time.sleep(0.02)
        b.sendall(line.upper())
        d2.send(b"ack " + line.strip())
    os._exit(0)
b.close(); d2.close()
r = a.makefile("rb", buffering=0)
for i in range(1, 151):
    a.sendall(f"line {i}\n".encode())
    reply = r.readline().decode().strip()
    print(i, reply, d1.recv(100).decode(), flush=True)
a.shutdown(socket.SHUT_WR)
os.waitpid(pid, 0)
print("done", flush=True)
"#;

/// A parent and a child talking over a stream socketpair and a datagram socketpair,
/// saved with messages in flight: after the restart the conversation goes on exactly.
#[test]
fn unix_socketpairs_between_processes() {
    let ctx = TestCtx::new("socketpair");
    let (reference, got, said) =
        python_reference_and_restarted(&ctx, SOCKETPAIRS, &[], &["--tree"], 30);
    assert!(said.contains("2 processes"), "{said}");
    assert!(ctx.inspect(&ctx.path("job.ctx")).contains("paired with"));
    assert_eq!(got, reference);
}

const SERVER: &str = r#"
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(8)
print("listening", flush=True)
served = 0
while True:
    c, _ = s.accept()
    served += 1
    c.sendall(f"hello {served}\n".encode())
    c.close()
"#;

fn ask(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut s, &mut answer).unwrap();
    answer.trim().to_owned()
}

/// A server's listening socket is bound and listening again after the restart, and the
/// server remembers how many clients it served.
#[test]
fn listening_tcp_socket_accepts_after_restart() {
    let ctx = TestCtx::new("server");
    let port = free_port();
    let out = ctx.path("out.txt");
    let mut server = Background::to_file(
        python(SERVER, &[port.to_string().as_ref()]),
        &out,
        "the server",
    );
    let pid = server.pid();
    wait_until("the server", || file_lines(&out) >= 1);
    assert_eq!(ask(port), "hello 1");
    assert_eq!(ask(port), "hello 2");
    let image = ctx.path("server.ctx");
    let said = ctx.checkpoint(pid, &image, &["--kill"]);
    server.wait();
    reap_gone(&saved_pids(&said.stdout), "the server");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nobody listens while the server is down"
    );
    ctx.restart_detached(&image, &["-q"], tags(&["python3"]));
    let third = ask(port);
    kill_all(&[pid]);
    assert_eq!(third, "hello 3");
}

/// An inotify instance watching two directories, with a gap in its watch descriptors
/// (a watch removed in between): after the restart both watches report again, under
/// their original descriptors. Events queued at the checkpoint are not kept; the program
/// makes its events again until it sees them.
const INOTIFY: &str = r#"
import os, ctypes, struct, time, sys, select
libc = ctypes.CDLL(None, use_errno=True)
d = sys.argv[1]
fd = libc.inotify_init1(os.O_NONBLOCK)
w1 = libc.inotify_add_watch(fd, d.encode(), 0x100 | 0x200)   # IN_CREATE | IN_DELETE
junk = libc.inotify_add_watch(fd, b"/tmp", 0x4)
libc.inotify_rm_watch(fd, junk)
w2 = libc.inotify_add_watch(fd, (d + "/sub").encode(), 0x100)
print("watches", w1, w2, flush=True)
time.sleep(0.1)
try:
    os.read(fd, 65536)      # the IN_IGNORED of the removed watch
except BlockingIOError:
    pass
def events(timeout):
    if not select.select([fd], [], [], timeout)[0]:
        return []
    buf = os.read(fd, 65536)
    out, off = [], 0
    while off < len(buf):
        wd, mask, cookie, ln = struct.unpack_from("iIII", buf, off)
        out.append((wd, mask, buf[off + 16:off + 16 + ln].rstrip(b"\0").decode()))
        off += 16 + ln
    return out
for i in range(1, 81):
    want = {(w1, 0x100, f"f{i}"), (w1, 0x200, f"f{i}"), (w2, 0x100, f"g{i}")}
    while want:
        # (Re)make the events; events queued when a checkpoint came are gone.
        open(f"{d}/f{i}", "w").close(); os.unlink(f"{d}/f{i}")
        if os.path.exists(f"{d}/sub/g{i}"):
            os.unlink(f"{d}/sub/g{i}")
        open(f"{d}/sub/g{i}", "w").close()
        deadline = time.time() + 0.5
        while want and time.time() < deadline:
            for e in events(0.1):
                want.discard(e)
    print(f"iteration {i}: watch {w1} saw f{i} come and go, watch {w2} saw g{i}", flush=True)
    time.sleep(0.03)
"#;

#[test]
fn inotify_watches_are_added_again() {
    let ctx = TestCtx::new("inotify");
    let watched = ctx.path("w");
    fs::create_dir_all(watched.join("sub")).unwrap();
    let (reference, got, _) =
        python_reference_and_restarted(&ctx, INOTIFY, &[watched.as_os_str()], &[], 15);
    assert!(ctx.inspect(&ctx.path("job.ctx")).contains("inotify"));
    assert_eq!(got, reference);
}

/// A parent whose child stopped itself with SIGSTOP: the tree is saved (the stopped
/// child's group stop no longer fails the injection), the child comes back stopped, and
/// the parent's SIGCONT resumes it; the output is the uninterrupted run's.
const STOPPED_CHILD: &str = r#"
import os, signal, sys, time
print("start", flush=True)
pid = os.fork()
if pid == 0:
    os.kill(os.getpid(), signal.SIGSTOP)
    print("child resumed", flush=True)
    os._exit(0)
while open("/proc/%d/stat" % pid).read().split(") ")[1][0] != "T":
    time.sleep(0.01)
print("child stopped", flush=True)
time.sleep(1.5)
os.kill(pid, signal.SIGCONT)
os.waitpid(pid, 0)
print("parent done", flush=True)
"#;

#[test]
fn a_child_stopped_by_job_control_is_saved_and_stays_stopped() {
    let ctx = TestCtx::new("stopped-child");
    let (reference, restarted, said) =
        python_reference_and_restarted(&ctx, STOPPED_CHILD, &[], &["--tree"], 1);
    assert!(said.contains("2 processes"), "{said}");
    assert_eq!(restarted, reference);
}
