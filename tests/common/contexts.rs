//! Where and how the tests run things: the workspace and its fixtures, a fresh scratch
//! directory per test, commands run to the end within a time limit ([`CliResult`]), the
//! `lifeboat` binary, commands run as another user ([`as_user`]), and [`TestCtx`], one
//! checkpoint/restart test's directory, image paths, CLI calls and cleanup.

use std::fs;
use std::io::ErrorKind;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

use super::processes::{POLL, Proc, RUN_TIMEOUT, kill_group, status_text};
use super::procfs::{is_alive, looks_like, pid_exists};
use super::programs::{Prog, setup};

// ---------------------------------------------------------------------------
// Paths.

/// The workspace root (every member's manifest directory is one level below it).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate lives in a workspace directory")
        .to_path_buf()
}

/// The fixture node root `tests/fixtures/sensors/CASE`.
pub fn sensor_fixture(case: &str) -> PathBuf {
    workspace().join("tests/fixtures/sensors").join(case)
}

/// Path of the `lifeboat` binary under test.
pub fn lifeboat_bin() -> &'static str {
    env!("CARGO_BIN_EXE_lifeboat")
}

/// Cargo's scratch directory for this package's integration tests.
pub fn tmp_root() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

/// A path as `&str`; every path used here is created by the tests and is ASCII.
pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// Reads a text file, failing the test with the path when it cannot.
pub fn read_text(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------
// Scratch directories.

/// Removes `dir` if it exists and creates it empty.
pub fn fresh_dir(dir: &Path) {
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => panic!("cannot remove {}: {e}", dir.display()),
    }
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
}

/// A fresh directory for the test `name` of this test binary:
/// `CARGO_TARGET_TMPDIR/BINARY-tests/NAME-PID`.
pub fn scratch(name: &str) -> PathBuf {
    let dir = tmp_root()
        .join(format!("{}-tests", env!("CARGO_CRATE_NAME")))
        .join(format!("{name}-{}", std::process::id()));
    fresh_dir(&dir);
    dir
}

/// [`scratch`], writable by every user: for tests whose processes run as other users
/// ([`as_user`]) and write there.
pub fn shared_scratch(name: &str) -> PathBuf {
    let dir = scratch(name);
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777))
        .unwrap_or_else(|e| panic!("cannot make {} writable by all: {e}", dir.display()));
    dir
}

/// Copies the regular files of `from` into a fresh `to` (not recursive).
pub fn copy_dir(from: &Path, to: &Path) {
    fresh_dir(to);
    for entry in
        fs::read_dir(from).unwrap_or_else(|e| panic!("cannot list {}: {e}", from.display()))
    {
        let entry = entry.expect("directory entry");
        fs::copy(entry.path(), to.join(entry.file_name()))
            .unwrap_or_else(|e| panic!("cannot copy {}: {e}", entry.path().display()));
    }
}

/// Copies the tree `from` to the new path `to` as `cp -a` does: recursively, with its
/// symlinks (a fixture node root the test then changes).
pub fn copy_tree(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap_or_else(|e| panic!("cannot run cp: {e}"));
    assert!(
        status.success(),
        "cp -a {} {} failed with {status}",
        from.display(),
        to.display()
    );
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port on 127.0.0.1")
        .port()
}

// ---------------------------------------------------------------------------
// Commands run to the end.

/// Result of one finished command.
#[derive(Debug)]
pub struct CliResult {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CliResult {
    /// stdout and stderr together, for searching messages.
    pub fn text(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    /// Fails the test with both outputs unless the command succeeded.
    pub fn assert_success(&self, what: &str) {
        assert!(
            self.status.success(),
            "{what} failed with {}\nstdout:\n{}\nstderr:\n{}",
            status_text(self.status),
            self.stdout,
            self.stderr
        );
    }
}

/// Runs `cmd` to its end (failing after [`RUN_TIMEOUT`]), with stdin on /dev/null and
/// its outputs captured, which must be UTF-8; `what` names it in messages.
pub fn run_to_end(cmd: Command, what: &str) -> CliResult {
    run_within(cmd, what, RUN_TIMEOUT)
}

/// [`run_to_end`], failing after `limit`: the command is killed first, so a hang is
/// reported, not waited out.
pub fn run_within(cmd: Command, what: &str, limit: Duration) -> CliResult {
    let mut p = Proc::spawn_no_input(cmd, what);
    let (status, out) = p.finish_within(limit);
    let utf8 = |bytes: Vec<u8>, stream: &str| {
        String::from_utf8(bytes)
            .unwrap_or_else(|e| panic!("{what} printed invalid UTF-8 on {stream}: {e}"))
    };
    CliResult {
        status,
        stdout: utf8(out, "stdout"),
        stderr: utf8(p.stderr(), "stderr"),
    }
}

/// Runs `lifeboat ARGS` in `dir` to its end.
pub fn lifeboat_in(dir: &Path, args: &[&str]) -> CliResult {
    lifeboat_within(dir, args, RUN_TIMEOUT)
}

/// [`lifeboat_in`], failing after `limit` ([`run_within`]).
pub fn lifeboat_within(dir: &Path, args: &[&str], limit: Duration) -> CliResult {
    let mut cmd = Command::new(lifeboat_bin());
    cmd.args(args).current_dir(dir);
    run_within(cmd, &format!("`lifeboat {}`", args.join(" ")), limit)
}

/// setpriv (util-linux), through which [`as_user`] runs commands as another user.
pub const SETPRIV: &str = "/usr/bin/setpriv";

/// A command prefix that runs what follows (its program and arguments, added by the
/// caller) as `uid`, with GID `uid` and no supplementary groups. Needs root.
pub fn as_user(uid: u32) -> Command {
    let mut c = Command::new(SETPRIV);
    c.args([
        "--reuid",
        &uid.to_string(),
        "--regid",
        &uid.to_string(),
        "--clear-groups",
        "--",
    ]);
    c
}

/// The PIDs a checkpoint reported, zombies included (`checkpointed PID a to ...`,
/// `checkpointed N processes (a b c) and a zombie (d) to ...`): all of them are taken
/// again by the restart.
pub fn saved_pids(summary: &str) -> Vec<i32> {
    let head = summary.split(" to ").next().unwrap_or_default();
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

// ---------------------------------------------------------------------------
// One checkpoint/restart test.

/// One test's context: a unique temp dir under `CARGO_TARGET_TMPDIR` (removed when the
/// test passes, kept when it fails), the PIDs to kill if the test fails halfway, and
/// the `lifeboat` calls, run in that directory.
#[derive(Debug)]
pub struct TestCtx {
    pub dir: PathBuf,
    guarded: Mutex<Vec<(i32, Vec<String>)>>,
    groups: Mutex<Vec<i32>>,
}

impl TestCtx {
    /// Checks the preconditions and builds the programs ([`setup`]), then makes the
    /// test's fresh directory.
    pub fn new(name: &str) -> TestCtx {
        setup();
        TestCtx {
            dir: scratch(name),
            guarded: Mutex::new(Vec::new()),
            groups: Mutex::new(Vec::new()),
        }
    }

    /// A path inside the test's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Starts `prog` in the test's directory (fresh files).
    pub fn spawn(&self, prog: &Prog) -> Proc {
        Proc::spawn(prog.command(&self.dir), prog.name)
    }

    /// Kill `pid` at the end of the test if it is still alive and looks like ours (its cmdline or exe mentions one of `tags`).
    pub fn guard_pid(&self, pid: i32, tags: Vec<String>) {
        self.guarded
            .lock()
            .expect("guard poisoned")
            .push((pid, tags));
    }

    /// Kill process group `pgid` at the end of the test, however it ends (a job that
    /// never ends by itself, restored with its group).
    pub fn guard_group(&self, pgid: i32) {
        self.groups.lock().expect("guard poisoned").push(pgid);
    }

    /// Runs `lifeboat ARGS` in the test's directory to completion.
    pub fn lifeboat(&self, args: &[&str]) -> CliResult {
        lifeboat_in(&self.dir, args)
    }

    /// [`TestCtx::lifeboat`], failing the test with its output unless it succeeds.
    pub fn lifeboat_ok(&self, args: &[&str]) -> CliResult {
        let r = self.lifeboat(args);
        r.assert_success(&format!("`lifeboat {}`", args.join(" ")));
        r
    }

    /// `lifeboat checkpoint FLAGS -f IMAGE PID`, failing the test with its output unless it succeeds and writes the image. No flags: the defaults.
    pub fn checkpoint(&self, pid: i32, image: &Path, flags: &[&str]) -> CliResult {
        let pid_s = pid.to_string();
        let mut args = vec!["checkpoint"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["-f", path_str(image), &pid_s]);
        let r = self.lifeboat_ok(&args);
        assert!(
            image.is_file(),
            "`lifeboat {}` succeeded but wrote no {}",
            args.join(" "),
            image.display()
        );
        r
    }

    /// `lifeboat inspect IMAGE`'s human-readable summary.
    pub fn inspect(&self, image: &Path) -> String {
        self.lifeboat_ok(&["inspect", path_str(image)]).stdout
    }

    /// Starts `lifeboat restart OPTS IMAGE` (the restored process's stdio is this Proc's).
    pub fn restart(&self, image: &Path, opts: &[&str]) -> Proc {
        let mut cmd = Command::new(lifeboat_bin());
        cmd.arg("restart")
            .args(opts)
            .arg(image)
            .current_dir(&self.dir);
        Proc::spawn(
            cmd,
            &format!(
                "`lifeboat restart {}{}`",
                opts.iter().map(|o| format!("{o} ")).collect::<String>(),
                image.display()
            ),
        )
    }

    /// `lifeboat restart --detach OPTS IMAGE`: returns the restarter (whose stdout goes on receiving the restored process's output after the PID line) and the restored PID, which is guarded.
    pub fn restart_detached(&self, image: &Path, opts: &[&str], tags: Vec<String>) -> (Proc, i32) {
        let mut all = vec!["--detach"];
        all.extend_from_slice(opts);
        let mut p = self.restart(image, &all);
        p.wait_lines(1);
        let out = p.stdout();
        let first = String::from_utf8_lossy(
            &out[..out.iter().position(|&c| c == b'\n').expect("one line")],
        )
        .into_owned();
        let pid: i32 = first.trim().parse().unwrap_or_else(|_| {
            panic!(
                "first stdout line of {} should be the restored PID alone, got {first:?}\n{}",
                p.what,
                p.describe()
            )
        });
        self.guard_pid(pid, tags);
        p.wait_exit_ok();
        (p, pid)
    }
}

impl Drop for TestCtx {
    fn drop(&mut self) {
        let groups = std::mem::take(&mut *self.groups.lock().unwrap_or_else(|e| e.into_inner()));
        for pgid in groups {
            kill_group(pgid);
        }
        let guarded = std::mem::take(&mut *self.guarded.lock().unwrap_or_else(|e| e.into_inner()));
        for (pid, tags) in guarded {
            if is_alive(pid) && looks_like(pid, &tags) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                let deadline = Instant::now() + Duration::from_secs(5);
                while pid_exists(pid) && Instant::now() < deadline {
                    let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
                    thread::sleep(POLL);
                }
            }
        }
        if !thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
