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
use nix::sys::signal::Signal;
use std::path::Path;
use std::process::Command;
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

/// A job under test, its output read as it comes: it prints a counter line every 10 ms
/// and, on SIGTERM, `ok` if every check it made passed. Killed when dropped.
struct Job(Proc);

impl Job {
    fn spawn(what: &str, cmd: Command) -> Job {
        let job = Job(Proc::spawn_no_input(cmd, what));
        job.wait_progress(TIMEOUT, "start");
        job
    }

    fn python(what: &str, dir: &Path, script: &str) -> Job {
        let path = dir.join(format!("{what}.py"));
        std::fs::write(&path, script).unwrap();
        let mut c = Command::new("python3");
        c.arg(path);
        Job::spawn(what, c)
    }

    fn steady(threads: u32, mib: u32) -> Job {
        let mut c = Command::new(program("steady"));
        c.args([threads.to_string(), mib.to_string()]);
        Job::spawn(&format!("steady {threads} threads {mib} MiB"), c)
    }

    fn pid(&self) -> i32 {
        self.0.pid()
    }

    fn what(&self) -> &str {
        &self.0.what
    }

    /// The last complete counter line printed so far (0 before the first).
    fn counter(&self) -> u64 {
        let out = self.0.stdout();
        let complete = out.iter().rposition(|&c| c == b'\n').map_or(0, |i| i + 1);
        String::from_utf8_lossy(&out[..complete])
            .lines()
            .last()
            .and_then(|l| l.parse().ok())
            .unwrap_or(0)
    }

    /// Waits up to `within` for the counter to go up by two.
    fn wait_progress(&self, within: Duration, after: &str) {
        let start = self.counter();
        wait_until_within(
            &format!(
                "{} (PID {}) makes progress after {after}",
                self.what(),
                self.pid()
            ),
            within,
            || self.counter() >= start + 2,
            || format!("state {:?}; {}", proc_state(self.pid()), self.0.describe()),
        );
    }

    /// After the checkpointer died: the job is neither dead nor stopped, and goes on.
    fn assert_running(&mut self, after: &str) {
        if let Some(status) = self.0.try_status() {
            panic!(
                "{} (PID {}) died after {after}: {status}\n{}",
                self.what(),
                self.pid(),
                self.0.describe()
            );
        }
        // The kernel detaches the dead tracer's threads at once; give it a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(proc_state(self.pid()), Some('t' | 'T')) && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        assert!(
            !matches!(proc_state(self.pid()), Some('t' | 'T' | 'Z' | 'X') | None),
            "{} (PID {}) is left {:?} after {after}",
            self.what(),
            self.pid(),
            proc_state(self.pid())
        );
        self.wait_progress(Duration::from_secs(10), after);
    }

    /// SIGTERM: the job's handler stops it and it reports its own checks.
    fn finish(mut self) {
        signal(self.pid(), Signal::SIGTERM);
        let (status, out) = self.0.finish();
        let text = String::from_utf8_lossy(&out);
        let last = text.lines().last();
        assert!(
            status.success() && last.is_some_and(|l| l.starts_with("ok")),
            "{} ended with {status}, last line {last:?}\n{}",
            self.what(),
            self.0.describe()
        );
    }
}

/// `lifeboat checkpoint` of `pid` into `dir`, dying where `die_at` says.
fn checkpoint(dir: &Path, pid: i32, die_at: Option<&str>) -> Background {
    let mut c = Command::new(lifeboat_bin());
    c.args(["checkpoint", "-q", "-f"])
        .arg(dir.join("ctx"))
        .arg(pid.to_string());
    if let Some(at) = die_at {
        c.env("LIFEBOAT_DIE_AT", at);
    }
    Background::quiet(c, &format!("the checkpoint of PID {pid}"))
}

fn require_fault_injection() {
    if !cfg!(feature = "fault-injection") {
        panic!(
            "this test needs the engine's kill points: build with --features fault-injection (CI uses --all-features)"
        );
    }
}

/// Kill the checkpointer at each deterministic point and check the job after each.
fn kill_points(job: &mut Job, dir: &Path, points: &[&str]) {
    for at in points {
        let status = checkpoint(dir, job.pid(), Some(at)).wait();
        assert_killed_by(
            status,
            Signal::SIGKILL as i32,
            &format!(
                "{}: the checkpoint told to die at {at} (if it ended otherwise, the point was not reached)",
                job.what()
            ),
        );
        job.assert_running(&format!("a checkpointer killed at {at}"));
    }
}

#[test]
fn every_kill_point_leaves_the_job_running() {
    require_root(ROOT);
    require_fault_injection();
    let dir = scratch("points");
    // One thread: 71 injected calls (scratch mmap, dumpable, brk, 62 sigactions, three
    // itimers, clear_child_tid, sigaltstack, munmap); 200 MiB is 25 page batches.
    let mut py = Job::python("python-200MiB", &dir, PY_MEMORY);
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
    let mut c = Job::steady(8, 16);
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
    let mut threads = Job::python("python-threads", &dir, PY_THREADS);
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
        Job::python("python-200MiB", &dir, PY_MEMORY),
        Job::python("python-threads", &dir, PY_THREADS),
        Job::steady(8, 32),
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
            let status = ckpt.kill();
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
    let mut job = Job::steady(8, 16);
    for at in ["inject:1", "inject:40", "inject:75", "pages:1"] {
        let mut cmd = Command::new(lifeboat_bin());
        cmd.args(["agent", "--config"])
            .arg(&config)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env("LIFEBOAT_DIE_AT", at);
        let mut agent = Background::quiet(cmd, &format!("the agent told to die at {at}"));
        wait_until_within(
            "the agent answers /health",
            Duration::from_secs(30),
            || http::request(port, "GET", "/health", &[], "").is_some(),
            String::new,
        );
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
        assert_killed_by(
            agent.wait(),
            Signal::SIGKILL as i32,
            &format!("the agent told to die at {at} in the checkpoint it was asked for"),
        );
        job.assert_running(&format!("the agent killed at {at}"));
    }
    job.finish();
    let _ = std::fs::remove_dir_all(&dir);
}
