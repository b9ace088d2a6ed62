//! Whole jobs: process trees, shell pipelines and process groups, shared memory and
//! shared files, the descriptors event loops are built of (epoll, timerfd, eventfd,
//! signalfd), file locks and timers, checkpointed and restarted with the real binary,
//! checked against uninterrupted runs byte for byte.
//!
//! Needs root (PIDs are restored with clone3 `set_tid`), gcc, python3, bash and gzip;
//! fails with the reason when one is missing, never skips.
#![allow(clippy::unwrap_used)] // test helpers: a failed setup step should stop the test loudly

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

const BIN: &str = env!("CARGO_BIN_EXE_lifeboat");
const TIMEOUT: Duration = Duration::from_secs(60);

fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("tree-tests")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Root, tools present, the test process a subreaper (restored trees started with
/// `--detach` are re-parented to it, so it can reap them), and shmtree built.
fn setup() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the tree tests must run as root (PIDs are restored with clone3 set_tid)"
        );
        for tool in ["gcc", "python3", "bash", "gzip"] {
            assert!(
                Command::new(tool)
                    .arg("--version")
                    .output()
                    .is_ok_and(|o| o.status.success()),
                "{tool} is needed by the tree tests"
            );
        }
        nix::sys::prctl::set_child_subreaper(true).unwrap();
        let dir = scratch("bin");
        for name in ["shmtree", "anonfds", "timers"] {
            let src =
                Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../tests/programs/{name}.c"));
            let st = Command::new("gcc")
                .args(["-O2", "-pthread", "-o"])
                .arg(dir.join(name))
                .arg(&src)
                .status()
                .unwrap();
            assert!(st.success(), "gcc failed on {}", src.display());
        }
        dir.join("shmtree")
    })
}

fn program(name: &str) -> PathBuf {
    setup().with_file_name(name)
}

fn lifeboat(args: &[&str]) -> std::process::Output {
    let out = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lifeboat {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Wait until `cond` holds, polling.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

/// Children of `pid`, from /proc.
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        if after.split(' ').nth(1) == Some(&pid.to_string()) {
            out.push(p);
        }
    }
    out
}

/// Reap `pid` (a child or, as subreaper, an adopted descendant).
fn reap(pid: i32) -> WaitStatus {
    loop {
        match waitpid(Pid::from_raw(pid), None) {
            Ok(s @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => return s,
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => panic!("waitpid {pid}: {e}"),
        }
    }
}

/// The PIDs a checkpoint reported, zombies included (`checkpointed PID a to ...`,
/// `checkpointed N processes (a b c) and a zombie (d) to ...`): all of them are taken
/// again by the restart.
fn saved_pids(out: &std::process::Output) -> Vec<i32> {
    let text = String::from_utf8_lossy(&out.stdout);
    let head = text.split(" to ").next().unwrap_or_default();
    let single = head
        .strip_prefix("checkpointed PID ")
        .and_then(|rest| rest.split(' ').next());
    let lists = head
        .split('(')
        .skip(1)
        .filter_map(|group| group.split(')').next());
    single
        .into_iter()
        .chain(lists)
        .flat_map(|list| list.split(' '))
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Wait until the processes are gone, reaping those that are (or become, as the test
/// process is a subreaper) our children: their PIDs must be free for the restart.
fn reap_gone(pids: &[i32]) {
    for &pid in pids {
        wait_until(&format!("PID {pid} to be gone"), || {
            let _ = waitpid(
                Pid::from_raw(pid),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            );
            !Path::new(&format!("/proc/{pid}")).exists()
        });
    }
}

/// Kill the processes (and reap them).
fn kill_all(pids: &[i32]) {
    for &pid in pids {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
    reap_gone(pids);
}

/// `lifeboat restart --detach -q IMAGE`; returns the PID it printed. The restored
/// processes' stderr is the restarter's: a file (`errors`), so that nothing waits for the
/// tree to close a pipe.
fn restart_detached(image: &Path, errors: &Path) -> String {
    let restarter = Command::new(BIN)
        .args(["restart", "--detach", "-q"])
        .arg(image)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(errors).unwrap())
        .spawn()
        .unwrap();
    let out = restarter.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "restart failed: {}",
        std::fs::read_to_string(errors).unwrap_or_default()
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Run `prog args` (in `dir`) twice: to the end, for the reference output; and with its
/// stdout in a file, saved by `checkpoint --kill` with `scope` once the file has more
/// than `at` lines, then restarted by `lifeboat restart` (which waits for it). Returns
/// the reference, the interrupted run's output, and what `checkpoint` printed.
fn reference_and_restarted(
    dir: &Path,
    prog: &Path,
    args: &[&std::ffi::OsStr],
    scope: &[&str],
    at: usize,
) -> (String, String, String) {
    let reference = Command::new(prog)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        reference.status.success(),
        "reference run: {}",
        String::from_utf8_lossy(&reference.stderr)
    );
    let out = dir.join("out.txt");
    let job = Command::new(prog)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .spawn()
        .unwrap();
    let pid = job.id() as i32;
    let mut job = Some(job);
    wait_until("progress", || lines(&out) > at);
    let image = dir.join("job.ctx");
    let mut cmd = vec!["checkpoint", "--kill", "-f", image.to_str().unwrap()];
    cmd.extend_from_slice(scope);
    let pid_s = pid.to_string();
    cmd.push(&pid_s);
    let said = lifeboat(&cmd);
    if let Some(mut j) = job.take() {
        j.wait().unwrap();
    }
    reap_gone(&saved_pids(&said));
    lifeboat(&["restart", image.to_str().unwrap()]);
    (
        String::from_utf8(reference.stdout).unwrap(),
        std::fs::read_to_string(&out).unwrap(),
        String::from_utf8_lossy(&said.stdout).into_owned(),
    )
}

/// [`reference_and_restarted`] for a Python script: `script` is written to `job.py` in
/// `dir` and run by python3 with `args` after it.
fn python_reference_and_restarted(
    dir: &Path,
    script: &str,
    args: &[&std::ffi::OsStr],
    scope: &[&str],
    at: usize,
) -> (String, String, String) {
    std::fs::write(dir.join("job.py"), script).unwrap();
    let argv: Vec<&std::ffi::OsStr> = std::iter::once("job.py".as_ref())
        .chain(args.iter().copied())
        .collect();
    reference_and_restarted(dir, Path::new("python3"), &argv, scope, at)
}

/// Start `lifeboat run -- bash -c SCRIPT` in `dir`; returns the runner and bash's PID.
fn run_job(dir: &Path, script: &str) -> (Child, u32) {
    let runner = Command::new(BIN)
        .args(["run", "--", "bash", "-c", script])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rid = runner.id();
    let mut job = 0;
    wait_until("the job to start", || {
        job = children(rid).first().copied().unwrap_or(0);
        job != 0
    });
    (runner, job)
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
    std::fs::write(dir.join("producer.py"), PRODUCER).unwrap();
    let st = Command::new("bash")
        .args(["-c", "python3 producer.py | gzip -n > ref.gz"])
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::read(dir.join("ref.gz")).unwrap()
}

/// The pipeline is saved mid-stream with everything in flight (python's output in the
/// pipe, gzip's dictionary in memory, the half-written file), killed, restarted, and the
/// compressed file is byte-identical to an uninterrupted run's.
#[test]
fn pipeline_into_gzip_kill_restart() {
    setup();
    let dir = scratch("pipeline");
    let reference = pipeline_reference(&dir);
    let (mut runner, bash) = run_job(&dir, "python3 producer.py | gzip -n > out.gz");
    // Mid-stream: wait until the producer is well under way.
    std::thread::sleep(Duration::from_millis(900));
    let image = dir.join("job.ctx");
    let out = lifeboat(&[
        "checkpoint",
        "--kill",
        "-f",
        image.to_str().unwrap(),
        &bash.to_string(),
    ]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("3 processes"),
        "bash, python3 and gzip: {said}"
    );
    runner.wait().unwrap();
    reap_gone(&saved_pids(&out));
    let partial = std::fs::read(dir.join("out.gz")).unwrap();
    assert!(
        partial.len() < reference.len(),
        "checkpointed before the end"
    );

    let restarted = lifeboat(&["restart", image.to_str().unwrap()]);
    let _ = restarted;
    let got = std::fs::read(dir.join("out.gz")).unwrap();
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
    setup();
    let dir = scratch("pgid");
    let reference = pipeline_reference(&dir);
    let (mut runner, bash) = run_job(
        &dir,
        "set -m; python3 producer.py | gzip -n > out.gz; wait; sleep 0.1",
    );
    let mut members = Vec::new();
    wait_until("the pipeline", || {
        members = children(bash);
        members.len() == 2
    });
    std::thread::sleep(Duration::from_millis(700));
    let pgid = std::fs::read_to_string(format!("/proc/{}/stat", members[0])).unwrap();
    let pgid = pgid[pgid.rfind(')').unwrap() + 2..]
        .split(' ')
        .nth(2)
        .unwrap()
        .to_owned();
    let image = dir.join("group.ctx");
    let out = lifeboat(&[
        "checkpoint",
        "--pgid",
        "--kill",
        "-f",
        image.to_str().unwrap(),
        &pgid,
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2 processes"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    runner.wait().unwrap();
    reap_gone(&saved_pids(&out));
    lifeboat(&["restart", image.to_str().unwrap()]);
    let got = std::fs::read(dir.join("out.gz")).unwrap();
    assert!(
        got == reference,
        "out.gz is byte-identical to the reference"
    );
}

fn shmtree_reference(dir: &Path, rounds: u32) -> String {
    let out = Command::new(setup())
        .arg(rounds.to_string())
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// Start `prog arg` with stdout into `path`; the caller waits for it (or reaps it).
fn spawn_to_file(prog: &Path, arg: &str, path: &Path) -> Child {
    Command::new(prog)
        .arg(arg)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(path).unwrap())
        .spawn()
        .unwrap()
}

fn start_shmtree(dir: &Path, rounds: u32) -> (Child, PathBuf) {
    let path = dir.join("out.txt");
    let child = spawn_to_file(setup(), &rounds.to_string(), &path);
    (child, path)
}

/// A parent and three children sharing an anonymous mapping with a process-shared
/// mutex in it, checkpointed three times (each restart's result checkpointed again):
/// after each restart they still share the memory and the lock, the parent still reaps
/// its children with their exit statuses, and the output equals an uninterrupted run.
#[test]
fn shared_memory_tree_three_cycles() {
    setup();
    let dir = scratch("shmtree");
    let rounds = 120;
    let reference = shmtree_reference(&dir, rounds);
    let (mut child, out) = start_shmtree(&dir, rounds);
    let root = child.id() as i32;
    let image = dir.join("tree.ctx");
    let image_s = image.to_str().unwrap().to_owned();
    for (cycle, at) in [15usize, 45, 80].into_iter().enumerate() {
        wait_until("progress", || lines(&out) > at);
        let said = lifeboat(&[
            "checkpoint",
            "--tree",
            "--kill",
            "-f",
            &image_s,
            &root.to_string(),
        ]);
        assert!(
            String::from_utf8_lossy(&said.stdout).contains("4 processes"),
            "cycle {cycle}: {}",
            String::from_utf8_lossy(&said.stdout)
        );
        if cycle == 0 {
            child.wait().unwrap();
        } else {
            reap(root);
        }
        reap_gone(&saved_pids(&said));
        let printed = restart_detached(&image, &dir.join(format!("restart-{cycle}.err")));
        assert_eq!(printed, root.to_string(), "the root keeps its PID");
        // The three children are the root's again, with their PIDs.
        let deadline = Instant::now() + TIMEOUT;
        while children(root as u32).len() != 3 {
            assert!(
                Instant::now() < deadline,
                "cycle {cycle}: the restored root has children {:?}; root status {:?}; output ends {:?}",
                children(root as u32),
                std::fs::read_to_string(format!("/proc/{root}/stat")),
                std::fs::read_to_string(&out)
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
    let got = std::fs::read_to_string(&out).unwrap();
    assert_eq!(got, reference);
}

/// A tree restarted with --no-restore-pid while the original still runs (so its PIDs
/// are taken) gets its original PIDs inside a new PID namespace: the copy continues
/// exactly as the original does, and the original is untouched.
#[test]
fn tree_copy_in_new_pid_namespace_beside_original() {
    setup();
    let dir = scratch("pidns");
    let rounds = 100;
    let reference = shmtree_reference(&dir, rounds);
    // The original writes into a pipe to us: the copy's stdout (a pipe leading outside
    // the image) becomes the restarter's.
    let mut original = Command::new(setup())
        .arg(rounds.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut orig_out = original.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut orig_out, &mut s).unwrap();
        tx.send(s).unwrap();
    });
    std::thread::sleep(Duration::from_millis(800));
    let image = dir.join("tree.ctx");
    let said = lifeboat(&[
        "checkpoint",
        "--tree",
        "-f",
        image.to_str().unwrap(),
        &original.id().to_string(),
    ]);
    assert!(String::from_utf8_lossy(&said.stdout).contains("4 processes"));
    let copy = Command::new(BIN)
        .args(["restart", "--no-restore-pid"])
        .arg(&image)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&copy.stderr);
    assert!(copy.status.success(), "restart failed: {err}");
    assert!(err.contains("new PID namespace"), "{err}");
    let copy_out = String::from_utf8(copy.stdout).unwrap();
    // The copy printed the rest of the run from the checkpoint on.
    let first = copy_out.lines().next().expect("the copy printed something");
    let at = reference
        .find(first)
        .expect("the copy's first line is in the reference");
    assert_eq!(copy_out, reference[at..], "the copy continues exactly");
    assert!(original.wait().unwrap().success());
    assert_eq!(
        rx.recv().unwrap(),
        reference,
        "the original ran undisturbed"
    );
}

/// An event loop over epoll (edge-triggered timerfd, signalfd), an eventfd in semaphore
/// mode and a pending signal, saved at three points and each time killed and restarted:
/// the output equals an uninterrupted run's (a timer not re-armed would hang the loop).
#[test]
fn event_loop_descriptors_kill_restart() {
    let dir = scratch("anonfds");
    let steps = 150;
    let reference = Command::new(program("anonfds"))
        .arg(steps.to_string())
        .output()
        .unwrap();
    assert!(reference.status.success());
    let path = dir.join("out.txt");
    // The first process is our child; later ones are adopted (we are a subreaper).
    let mut first = Some(spawn_to_file(
        &program("anonfds"),
        &steps.to_string(),
        &path,
    ));
    let pid = first.as_ref().map_or(0, |c| c.id() as i32);
    let image = dir.join("loop.ctx");
    let image_s = image.to_str().unwrap().to_owned();
    for (cycle, at) in [20usize, 60, 110].into_iter().enumerate() {
        wait_until("progress", || lines(&path) > at);
        let said = lifeboat(&["checkpoint", "--kill", "-f", &image_s, &pid.to_string()]);
        match first.take() {
            Some(mut child) => {
                child.wait().unwrap();
            }
            None => {
                reap(pid);
            }
        }
        reap_gone(&saved_pids(&said));
        let inspect = lifeboat(&["inspect", &image_s]);
        let text = String::from_utf8_lossy(&inspect.stdout);
        for kind in ["timerfd", "eventfd", "signalfd", "epoll"] {
            assert!(text.contains(kind), "inspect lists the {kind}: {text}");
        }
        restart_detached(&image, &dir.join(format!("restart-{cycle}.err")));
    }
    match reap(pid) {
        WaitStatus::Exited(_, 0) => {}
        other => panic!("the restored loop ended with {other:?}"),
    }
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        String::from_utf8(reference.stdout).unwrap()
    );
}

/// A shell and its background subshell write to one inherited stdout (one open file
/// description, one offset). After the restart they still share it: every line of both
/// is in the file, none overwritten.
#[test]
fn shared_stdout_offset_survives() {
    setup();
    let dir = scratch("sharedfd");
    let script = "( for i in $(seq 1 150); do echo \"child line $i\"; sleep 0.01; done ) &\n\
                  for i in $(seq 1 150); do echo \"parent line $i\"; sleep 0.01; done\nwait\n";
    let out = dir.join("out.txt");
    let job = Command::new("bash")
        .args(["-c", script])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .spawn()
        .unwrap();
    let pid = job.id() as i32;
    let mut job = Some(job);
    wait_until("progress", || lines(&out) > 40);
    let image = dir.join("sh.ctx");
    let said = lifeboat(&[
        "checkpoint",
        "--tree",
        "--kill",
        "-f",
        image.to_str().unwrap(),
        &pid.to_string(),
    ]);
    assert!(String::from_utf8_lossy(&said.stdout).contains("processes"));
    if let Some(mut j) = job.take() {
        j.wait().unwrap();
    }
    reap_gone(&saved_pids(&said));
    lifeboat(&["restart", image.to_str().unwrap()]);
    let text = std::fs::read_to_string(&out).unwrap();
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
    setup();
    let dir = scratch("forky");
    let out = dir.join("out.txt");
    let job = Command::new("bash")
        .args([
            "-c",
            "n=0; while :; do /bin/true; n=$((n+1)); echo $n; done",
        ])
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .spawn()
        .unwrap();
    let pid = job.id() as i32;
    // The loop never ends by itself: kill its group (restored with it) however the test
    // ends, or it would hold the harness's stderr open.
    struct KillGroup(i32);
    impl Drop for KillGroup {
        fn drop(&mut self) {
            let _ =
                nix::sys::signal::killpg(Pid::from_raw(self.0), nix::sys::signal::Signal::SIGKILL);
        }
    }
    let _group = KillGroup(pid);
    let mut job = Some(job);
    wait_until("progress", || lines(&out) > 20);
    let image = dir.join("forky.ctx");
    let image_s = image.to_str().unwrap();
    let pid_s = pid.to_string();
    for _ in 0..30 {
        lifeboat(&["checkpoint", "--tree", "--run", "-q", "-f", image_s, &pid_s]);
    }
    let said = lifeboat(&["checkpoint", "--tree", "--kill", "-f", image_s, &pid_s]);
    if let Some(mut j) = job.take() {
        j.wait().unwrap();
    }
    reap_gone(&saved_pids(&said));
    let at_kill = lines(&out);
    restart_detached(&image, &dir.join("restart.err"));
    wait_until("the restored loop to count on", || {
        lines(&out) > at_kill + 200
    });
    kill_all(&[pid]);
    let text = std::fs::read_to_string(&out).unwrap();
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
    let out = Command::new("python3")
        .args(["-c", PROBE])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// flock, POSIX record and OFD locks are held again after a restart (and only the ranges
/// that were locked).
#[test]
fn file_locks_are_taken_back() {
    setup();
    let dir = scratch("locks");
    for f in ["a", "b", "c"] {
        std::fs::write(dir.join(f), "0123456789012345678901234567890\n").unwrap();
    }
    let out = dir.join("out.txt");
    let locker = Command::new("python3")
        .args(["-c", LOCKER])
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .spawn()
        .unwrap();
    let pid = locker.id() as i32;
    let mut locker = Some(locker);
    wait_until("the locks", || lines(&out) >= 1);
    assert_eq!(
        probe(&dir),
        "held held free held",
        "the original holds its locks"
    );
    let image = dir.join("locks.ctx");
    let said = lifeboat(&[
        "checkpoint",
        "--kill",
        "-f",
        image.to_str().unwrap(),
        &pid.to_string(),
    ]);
    if let Some(mut l) = locker.take() {
        l.wait().unwrap();
    }
    reap_gone(&saved_pids(&said));
    assert_eq!(
        probe(&dir),
        "free free free free",
        "killed: the locks went with it"
    );
    restart_detached(&image, &dir.join("restart.err"));
    let got = probe(&dir);
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
    let dir = scratch("timers");
    let (reference, got, _) =
        reference_and_restarted(&dir, &program("timers"), &["150".as_ref()], &[], 40);
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
    setup();
    let dir = scratch("pending-tick");
    let (reference, got, _) = python_reference_and_restarted(&dir, PENDING_TICK, &[], &[], 4);
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

/// Children that exited but were not reaped yet come back as zombies with their exit
/// statuses (one exited with 7, one was killed by SIGTERM): the restored parent's
/// waitpid() finds them.
#[test]
fn zombies_are_restored_for_their_parent() {
    setup();
    let dir = scratch("zombies");
    let out = dir.join("out.txt");
    let parent = Command::new("python3")
        .args(["-c", ZOMBIE_PARENT])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .spawn()
        .unwrap();
    let pid = parent.id() as i32;
    let mut parent = Some(parent);
    wait_until("the children to be zombies", || {
        lines(&out) > 5 && children(pid as u32).len() == 2
    });
    let zombies: Vec<i32> = children(pid as u32).into_iter().map(|p| p as i32).collect();
    let image = dir.join("z.ctx");
    let said = lifeboat(&[
        "checkpoint",
        "--tree",
        "--kill",
        "-f",
        image.to_str().unwrap(),
        &pid.to_string(),
    ]);
    if let Some(mut p) = parent.take() {
        p.wait().unwrap();
    }
    reap_gone(&saved_pids(&said));
    // The zombies are handed to us (the subreaper) when their parent dies: reap them
    // too, their PIDs must be free.
    reap_gone(&zombies);
    lifeboat(&["restart", image.to_str().unwrap()]);
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("tick 40\n"), "{text}");
    assert!(
        text.ends_with("child a exit 7\nchild b signal 15\n"),
        "the parent reaped both with their statuses: {text}"
    );
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
    setup();
    let dir = scratch("outside-ns");
    let out = dir.join("out.txt");
    let image = dir.join("z.ctx");
    let run = Command::new("unshare")
        .args([
            "--pid",
            "--fork",
            "--mount-proc",
            "python3",
            "-c",
            IN_NAMESPACE,
            BIN,
        ])
        .args([ZOMBIE_PARENT.as_ref(), out.as_os_str(), image.as_os_str()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "the run in a new PID namespace failed: {}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(
        (&summary["pgid"], &summary["sid"]),
        (&serde_json::json!(0), &serde_json::json!(0)),
        "the job's leaders were outside the namespace: {summary}"
    );
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("tick 40\n"), "{text}");
    assert!(
        text.ends_with("child a exit 7\nchild b signal 15\n"),
        "the restored parent reaped both zombies with their statuses: {text}"
    );
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
    setup();
    let dir = scratch("pool");
    let (reference, got, said) = python_reference_and_restarted(&dir, POOL, &[], &["--tree"], 60);
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
    setup();
    let dir = scratch("socketpair");
    let (reference, got, said) =
        python_reference_and_restarted(&dir, SOCKETPAIRS, &[], &["--tree"], 30);
    assert!(said.contains("2 processes"), "{said}");
    let inspect = lifeboat(&["inspect", dir.join("job.ctx").to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&inspect.stdout).contains("paired with"));
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
    setup();
    let dir = scratch("server");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = dir.join("out.txt");
    let server = Command::new("python3")
        .args(["-c", SERVER, &port.to_string()])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .spawn()
        .unwrap();
    let pid = server.id() as i32;
    let mut server = Some(server);
    wait_until("the server", || lines(&out) >= 1);
    assert_eq!(ask(port), "hello 1");
    assert_eq!(ask(port), "hello 2");
    let image = dir.join("server.ctx");
    let said = lifeboat(&[
        "checkpoint",
        "--kill",
        "-f",
        image.to_str().unwrap(),
        &pid.to_string(),
    ]);
    if let Some(mut s) = server.take() {
        s.wait().unwrap();
    }
    reap_gone(&saved_pids(&said));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nobody listens while the server is down"
    );
    restart_detached(&image, &dir.join("restart.err"));
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
    setup();
    let dir = scratch("inotify");
    let watched = dir.join("w");
    std::fs::create_dir_all(watched.join("sub")).unwrap();
    let (reference, got, _) =
        python_reference_and_restarted(&dir, INOTIFY, &[watched.as_os_str()], &[], 15);
    let inspect = lifeboat(&["inspect", dir.join("job.ctx").to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&inspect.stdout).contains("inotify"));
    assert_eq!(got, reference);
}
