//! A checkpointer that dies at any instant leaves its job running and unharmed.
//!
//! On a failing node, the OOM killer, a `systemctl stop` that times out or a crash can
//! kill lifeboat in the middle of a checkpoint, while the target is frozen or while a
//! system call is injected into one of its threads. These tests kill it there, on
//! purpose: at deterministic points (the engine's `fault-injection` kill points: right
//! after a seize, inside each injected call, between page batches) and at random
//! instants over hundreds of trials, for single- and multi-threaded targets, and kill
//! the agent in the middle of a checkpoint it was asked for. After every kill the target
//! must still run (not stopped, not dead, still making progress); at the end it must
//! handle SIGTERM with its own handler and report that every check it made passed.
//!
//! Needs root (ptrace); the deterministic tests need the `fault-injection` feature (CI
//! builds with `--all-features`) and fail with that reason without it.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ROOT: &str = "these tests ptrace processes of their own: run them as root";

/// Holds 200 MiB whose checksum it verifies when told to stop.
const PY_MEMORY: &str = r#"
import hashlib, os, signal, sys, time
data = bytearray(os.urandom(1 << 20)) * 200
digest = hashlib.sha256(data).hexdigest()
def bye(sig, frame):
    ok = hashlib.sha256(data).hexdigest() == digest
    print("ok" if ok else "corrupt memory", flush=True)
    sys.exit(0 if ok else 3)
signal.signal(signal.SIGTERM, bye)
i = 0
while True:
    i += 1
    print(i, flush=True)
    time.sleep(0.01)
"#;

/// Four threads that each check their own arithmetic on every round.
const PY_THREADS: &str = r#"
import signal, sys, threading, time
stop = False
bad = []
def work(k):
    n = 0
    while not stop:
        x = k
        for _ in range(1000):
            x = (x * 31 + 7) % 1000003
        y = k
        for _ in range(1000):
            y = (y * 31 + 7) % 1000003
        if x != y:
            bad.append(k)
        n += 1
threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
for t in threads:
    t.start()
def bye(sig, frame):
    global stop
    stop = True
signal.signal(signal.SIGTERM, bye)
i = 0
while not stop:
    i += 1
    print(i, flush=True)
    time.sleep(0.01)
for t in threads:
    t.join()
print("ok" if not bad else "corrupt " + repr(bad), flush=True)
sys.exit(0 if not bad else 3)
"#;

/// A job under test: its stdout lines are collected as they come.
struct Target {
    what: String,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Target {
    fn spawn(what: &str, mut cmd: Command) -> Target {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(l);
            }
        });
        let t = Target {
            what: what.to_owned(),
            child,
            lines,
        };
        t.wait_progress(Duration::from_secs(60), "start");
        t
    }

    fn python(what: &str, dir: &Path, script: &str) -> Target {
        let path = dir.join(format!("{what}.py"));
        std::fs::write(&path, script).unwrap();
        let mut c = Command::new("python3");
        c.arg(path);
        Target::spawn(what, c)
    }

    fn steady(threads: u32, mib: u32) -> Target {
        let mut c = Command::new(program("steady"));
        c.args([threads.to_string(), mib.to_string()]);
        Target::spawn(&format!("steady {threads} threads {mib} MiB"), c)
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn counter(&self) -> u64 {
        let lines = self.lines.lock().unwrap();
        lines.last().and_then(|l| l.parse().ok()).unwrap_or(0)
    }

    fn wait_progress(&self, within: Duration, after: &str) {
        let start = self.counter();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.counter() >= start + 2 {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!(
            "{} (PID {}) made no progress after {after}: state {:?}, last lines {:?}",
            self.what,
            self.pid(),
            proc_state(self.pid()),
            self.lines
                .lock()
                .unwrap()
                .iter()
                .rev()
                .take(3)
                .collect::<Vec<_>>()
        );
    }

    /// After the checkpointer died: the job is neither dead nor stopped, and goes on.
    fn assert_running(&mut self, after: &str) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} (PID {}) died after {after}: {status}",
                self.what,
                self.pid()
            );
        }
        // The kernel detaches the dead tracer's threads at once; give it a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(proc_state(self.pid()), Some('t' | 'T')) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            !matches!(proc_state(self.pid()), Some('t' | 'T' | 'Z' | 'X') | None),
            "{} (PID {}) is left {:?} after {after}",
            self.what,
            self.pid(),
            proc_state(self.pid())
        );
        self.wait_progress(Duration::from_secs(10), after);
    }

    /// SIGTERM: the job's handler stops it and it reports its own checks.
    fn finish(mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = self.child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let last = self.lines.lock().unwrap().last().cloned();
        assert!(
            status.success() && last.as_deref().is_some_and(|l| l.starts_with("ok")),
            "{} ended with {status}, last line {last:?}",
            self.what
        );
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `lifeboat checkpoint` of `pid` into `dir`, dying where `die_at` says.
fn checkpoint(dir: &Path, pid: i32, die_at: Option<&str>) -> Child {
    let mut c = Command::new(lifeboat_bin());
    c.args(["checkpoint", "-q", "-f"])
        .arg(dir.join("ctx"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(at) = die_at {
        c.env("LIFEBOAT_DIE_AT", at);
    }
    c.spawn().unwrap()
}

fn require_fault_injection() {
    if !cfg!(feature = "fault-injection") {
        panic!(
            "this test needs the engine's kill points: build with --features fault-injection (CI uses --all-features)"
        );
    }
}

/// Kill the checkpointer at each deterministic point and check the job after each.
fn kill_points(target: &mut Target, dir: &Path, points: &[&str]) {
    for at in points {
        let status: ExitStatus = checkpoint(dir, target.pid(), Some(at)).wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(9),
            "{}: the checkpoint was to die at {at} but ended with {status} (point not reached)",
            target.what
        );
        target.assert_running(&format!("a checkpointer killed at {at}"));
    }
}

#[test]
fn every_kill_point_leaves_the_job_running() {
    require_root(ROOT);
    require_fault_injection();
    let dir = scratch("points");
    // One thread: 71 injected calls (scratch mmap, dumpable, brk, 62 sigactions, three
    // itimers, clear_child_tid, sigaltstack, munmap); 200 MiB is 25 page batches.
    let mut py = Target::python("python-200MiB", &dir, PY_MEMORY);
    kill_points(
        &mut py,
        &dir,
        &[
            "seize:1",
            "inject:1",
            "inject:2",
            "inject:3",
            "inject:4",
            "inject:30",
            "inject:66",
            "inject:68",
            "inject:69",
            "inject:70",
            "inject:71",
            "pages:1",
            "pages:12",
        ],
    );
    py.finish();
    // Nine threads: the leader's 69 calls, two per other thread, the munmap last (87).
    let mut c = Target::steady(8, 16);
    kill_points(
        &mut c,
        &dir,
        &[
            "seize:1",
            "inject:1",
            "inject:67",
            "inject:70",
            "inject:71",
            "inject:74",
            "inject:80",
            "inject:85",
            "inject:86",
            "inject:87",
            "pages:1",
            "pages:2",
        ],
    );
    c.finish();
    let mut threads = Target::python("python-threads", &dir, PY_THREADS);
    kill_points(
        &mut threads,
        &dir,
        &[
            "seize:1",
            "inject:1",
            "inject:69",
            "inject:72",
            "inject:75",
            "pages:1",
        ],
    );
    threads.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn random_kills_over_hundreds_of_trials_leave_every_job_running() {
    require_root(ROOT);
    let dir = scratch("random");
    let mut targets = vec![
        Target::python("python-200MiB", &dir, PY_MEMORY),
        Target::python("python-threads", &dir, PY_THREADS),
        Target::steady(8, 32),
    ];
    // A fixed xorshift sequence: the same instants on every run.
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut trials = 0;
    let mut finished = 0;
    for round in 0..70 {
        for t in &mut targets {
            let mut ckpt = checkpoint(&dir, t.pid(), None);
            // 5 to 40 ms: the freeze and the injection window, on this kind of machine.
            std::thread::sleep(Duration::from_micros(5_000 + next() % 35_000));
            let _ = ckpt.kill();
            let status = ckpt.wait().unwrap();
            if status.success() {
                finished += 1;
            }
            trials += 1;
            t.assert_running(&format!("trial {trials} (round {round}): {status}"));
        }
    }
    eprintln!("{trials} trials, {finished} checkpoints finished before their kill");
    assert!(trials >= 200);
    assert!(
        finished < trials / 2,
        "most kills must land inside the checkpoint ({finished} of {trials} finished first)"
    );
    for t in targets {
        t.finish();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn killing_the_agent_mid_checkpoint_leaves_the_job_running() {
    require_root(ROOT);
    require_fault_injection();
    let dir = scratch("agent");
    let token = "0123456789abcdef0123456789abcdef";
    std::fs::write(dir.join("token"), format!("{token}\n")).unwrap();
    let port = free_port();
    let config = dir.join("lifeboat.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nroot = {root:?}\nnode = \"test-node\"\ntoken_file = \"token\"\n[agent.store]\ndir = {store:?}\nmin_free_gib = 0.01\n",
            root = sensor_fixture("empty").display().to_string(),
            store = dir.join("store").display().to_string(),
        ),
    )
    .unwrap();
    let mut job = Target::steady(8, 16);
    for at in ["inject:1", "inject:40", "inject:75", "pages:1"] {
        let mut agent = Command::new(lifeboat_bin())
            .args(["agent", "--config"])
            .arg(&config)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env("LIFEBOAT_DIE_AT", at)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while http::request(port, "GET", "/health", &[], "").is_none() {
            assert!(Instant::now() < deadline, "the agent did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        let body = format!("{{\"pid\": {}}}", job.pid());
        let auth = format!("Bearer {token}");
        let _ = http::request(
            port,
            "POST",
            "/api/v1/checkpoint",
            &[
                ("Authorization", auth.as_str()),
                ("Content-Type", "application/json"),
            ],
            &body,
        );
        let status = agent.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(9),
            "the agent was to die at {at} in the checkpoint it was asked for, but ended with {status}"
        );
        job.assert_running(&format!("the agent killed at {at}"));
    }
    job.finish();
    let _ = std::fs::remove_dir_all(&dir);
}
