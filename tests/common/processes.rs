//! Processes the tests start: [`Proc`] (all three standard streams piped and read in the
//! background), [`Background`] (streams as the test sets them: /dev/null or a file),
//! waiting for them, reaping them, signalling and killing them by PID, and polling for
//! conditions.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::procfs::{pid_exists, proc_state};

/// How long any single wait may take before the test fails. Generous: a healthy run
/// needs a few seconds, but the machine may be small and shared.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// How long a command run to its end may take: a whole restarted job, the demo.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// How often the waits poll.
pub const POLL: Duration = Duration::from_millis(5);

// ---------------------------------------------------------------------------
// Polling.

/// Polls `cond` every few milliseconds until it holds; fails with `what` after [`TIMEOUT`].
pub fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    wait_until_within(what, TIMEOUT, cond, String::new);
}

/// [`wait_until`] with its own time limit, and a failure message that goes on with
/// `details()` (what the test knows of the state it waited on: a process's threads, its
/// output), computed only on failure.
pub fn wait_until_within(
    what: &str,
    limit: Duration,
    mut cond: impl FnMut() -> bool,
    details: impl FnOnce() -> String,
) {
    let deadline = Instant::now() + limit;
    while !cond() {
        if Instant::now() >= deadline {
            let details = details();
            let sep = if details.is_empty() { "" } else { "\n" };
            panic!("timed out after {limit:?} waiting until {what}{sep}{details}");
        }
        thread::sleep(POLL);
    }
}

/// Sends `sig` to `pid`, failing the test if it cannot (no such process).
pub fn signal(pid: i32, sig: Signal) {
    kill(Pid::from_raw(pid), sig).unwrap_or_else(|e| panic!("cannot send {sig} to PID {pid}: {e}"));
}

/// "exit code N" or "signal N".
pub fn status_text(s: ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => format!("{s}"),
    }
}

/// Number of complete lines (newlines) in `b`.
pub fn count_lines(b: &[u8]) -> usize {
    b.iter().filter(|&&c| c == b'\n').count()
}

/// Number of lines of the text file at `path` (0 while it does not exist).
pub fn file_lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

// ---------------------------------------------------------------------------
// PIDs that are not a `Proc` or `Background` of ours: restored and adopted processes.

/// Waits until no process `pid` exists any more, reaping it if it is our (adopted) zombie. Not for PIDs owned by a [`Proc`].
pub fn wait_gone(pid: i32, what: &str) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
        if !pid_exists(pid) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} (pid {pid}) still exists after {TIMEOUT:?}, state {:?}",
            proc_state(pid)
        );
        thread::sleep(POLL);
    }
}

/// [`wait_gone`] for each of `pids` (`what` they are): the processes a checkpoint saved
/// and killed, whose PIDs must be free before the restart takes them again.
pub fn reap_gone(pids: &[i32], what: &str) {
    for &pid in pids {
        wait_gone(pid, what);
    }
}

/// Kills each of `pids` (SIGKILL) and waits until they are gone, reaping them.
pub fn kill_all(pids: &[i32]) {
    for &pid in pids {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    for &pid in pids {
        wait_gone(pid, "a process killed at the end of the test");
    }
}

/// Kills process group `pgid` (SIGKILL), ignoring a group that is gone.
pub fn kill_group(pgid: i32) {
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
}

/// Waits for `pid` (a child or, as subreaper, an adopted descendant) to end and reaps it.
pub fn reap(pid: i32) -> WaitStatus {
    loop {
        match waitpid(Pid::from_raw(pid), None) {
            Ok(s @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => return s,
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => panic!("waitpid {pid}: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Children of the test.

/// A spawned child and its exit status once reaped; killed (SIGKILL) and reaped on drop
/// if still running. The core of [`Background`] and [`Proc`].
#[derive(Debug)]
struct Spawned {
    what: String,
    child: Child,
    status: Option<ExitStatus>,
}

impl Spawned {
    fn spawn(mut cmd: Command, what: &str) -> Spawned {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what} ({cmd:?}): {e}"));
        Spawned {
            what: what.to_string(),
            child,
            status: None,
        }
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits in i32")
    }

    /// Exit status if the child has exited (reaping it), else None.
    fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .unwrap_or_else(|e| panic!("waiting for {}: {e}", self.what));
        }
        self.status
    }

    /// Waits up to `limit` for the child to exit; None if it still runs then.
    fn wait_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.try_status() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(POLL);
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if self.status.is_none() && self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A spawned child whose standard streams are /dev/null or a file (nothing for the test
/// to drain, nothing a restored process would hold open). Killed (SIGKILL) and reaped
/// on drop if still running.
#[derive(Debug)]
pub struct Background(Spawned);

impl Background {
    /// Spawns `cmd` with stdin, stdout and stderr on /dev/null.
    pub fn quiet(mut cmd: Command, what: &str) -> Background {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Background(Spawned::spawn(cmd, what))
    }

    /// Spawns `cmd` with stdin on /dev/null and stdout into a new file `out`; stderr is
    /// the test's.
    pub fn to_file(mut cmd: Command, out: &Path, what: &str) -> Background {
        let file =
            File::create(out).unwrap_or_else(|e| panic!("cannot create {}: {e}", out.display()));
        cmd.stdin(Stdio::null()).stdout(file);
        Background(Spawned::spawn(cmd, what))
    }

    pub fn pid(&self) -> i32 {
        self.0.pid()
    }

    /// Whether the child still runs (has not exited).
    pub fn alive(&mut self) -> bool {
        self.0.try_status().is_none()
    }

    /// Exit status if the child has exited (reaping it), else None.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.0.try_status()
    }

    /// Kills the child (SIGKILL) unless it has exited already, and returns its status once
    /// reaped: how it ended, by itself or by this kill.
    pub fn kill(&mut self) -> ExitStatus {
        if let Some(status) = self.0.try_status() {
            return status;
        }
        let _ = self.0.child.kill();
        let status = self
            .0
            .child
            .wait()
            .unwrap_or_else(|e| panic!("waiting for {}: {e}", self.0.what));
        self.0.status = Some(status);
        status
    }

    /// Waits for the child to exit (failing after [`TIMEOUT`]) and returns its status.
    pub fn wait(&mut self) -> ExitStatus {
        self.0.wait_within(TIMEOUT).unwrap_or_else(|| {
            panic!(
                "{} (pid {}) did not exit within {TIMEOUT:?}",
                self.0.what,
                self.0.pid()
            )
        })
    }
}

// ---------------------------------------------------------------------------
// A child with captured output.

#[derive(Default)]
struct Stream {
    state: Mutex<StreamState>,
    cv: Condvar,
}

#[derive(Default)]
struct StreamState {
    data: Vec<u8>,
    eof: bool,
}

impl Stream {
    fn pump(self: &Arc<Self>, mut from: impl Read + Send + 'static) {
        let me = Arc::clone(self);
        thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                let n = match from.read(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => 0,
                };
                let mut st = me.state.lock().expect("stream poisoned");
                if n == 0 {
                    st.eof = true;
                } else {
                    st.data.extend_from_slice(&buf[..n]);
                }
                me.cv.notify_all();
                if n == 0 {
                    return;
                }
            }
        });
    }

    fn snapshot(&self) -> (Vec<u8>, bool) {
        let st = self.state.lock().expect("stream poisoned");
        (st.data.clone(), st.eof)
    }

    /// Waits until `done(data, eof)` holds or the deadline passes; returns whether it held.
    fn wait_until(&self, deadline: Instant, done: impl Fn(&[u8], bool) -> bool) -> bool {
        let mut st = self.state.lock().expect("stream poisoned");
        loop {
            if done(&st.data, st.eof) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self
                .cv
                .wait_timeout(st, deadline - now)
                .expect("stream poisoned")
                .0;
        }
    }
}

/// A spawned child with piped stdin/stdout/stderr, read in the background. Killed (SIGKILL) and reaped on drop if still running.
pub struct Proc {
    /// What this is, for messages.
    pub what: String,
    child: Spawned,
    stdin: Option<ChildStdin>,
    out: Arc<Stream>,
    err: Arc<Stream>,
}

impl std::fmt::Debug for Proc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Proc({}, pid {})", self.what, self.pid())
    }
}

impl Proc {
    /// Spawns `cmd` with all three standard streams piped.
    pub fn spawn(cmd: Command, what: &str) -> Proc {
        Proc::spawn_with_stdin(cmd, Stdio::piped(), what)
    }

    /// Spawns `cmd` with stdin on /dev/null and stdout and stderr piped.
    pub fn spawn_no_input(cmd: Command, what: &str) -> Proc {
        Proc::spawn_with_stdin(cmd, Stdio::null(), what)
    }

    fn spawn_with_stdin(mut cmd: Command, stdin: Stdio, what: &str) -> Proc {
        cmd.stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = Spawned::spawn(cmd, what);
        let out = Arc::new(Stream::default());
        let err = Arc::new(Stream::default());
        out.pump(child.child.stdout.take().expect("piped stdout"));
        err.pump(child.child.stderr.take().expect("piped stderr"));
        let stdin = child.child.stdin.take();
        Proc {
            what: what.to_string(),
            child,
            stdin,
            out,
            err,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.pid()
    }

    /// Everything read from stdout so far.
    pub fn stdout(&self) -> Vec<u8> {
        self.out.snapshot().0
    }

    /// Everything read from stderr so far.
    pub fn stderr(&self) -> Vec<u8> {
        self.err.snapshot().0
    }

    /// Everything read from stderr so far, as text.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr()).into_owned()
    }

    /// Number of complete lines read from stdout so far.
    pub fn lines(&self) -> usize {
        count_lines(&self.stdout())
    }

    /// A description with the tail of stdout and all of stderr, for failure messages.
    pub fn describe(&self) -> String {
        let out = self.stdout();
        let text = String::from_utf8_lossy(&out);
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(15)..];
        format!(
            "{} (pid {}): {} lines on stdout, last ones:\n    {}\n  stderr:\n    {}",
            self.what,
            self.pid(),
            lines.len(),
            tail.join("\n    "),
            self.stderr_text().trim_end().replace('\n', "\n    ")
        )
    }

    /// Waits until stdout holds at least `n` complete lines; fails clearly if the process ends first or the timeout passes.
    pub fn wait_lines(&self, n: usize) {
        self.wait_output(false, &format!("{n} lines"), |d| count_lines(d) >= n);
    }

    /// Waits until stderr holds `needle`; fails clearly if stderr is closed first or the
    /// timeout passes.
    pub fn wait_stderr(&self, needle: &str) {
        self.wait_output(true, &format!("{needle:?} on stderr"), |d| {
            String::from_utf8_lossy(d).contains(needle)
        });
    }

    /// Waits until `done` holds for what stdout (or stderr) has received; fails naming
    /// what was `wanted` if the stream is closed first or after [`TIMEOUT`].
    fn wait_output(&self, stderr: bool, wanted: &str, done: impl Fn(&[u8]) -> bool) {
        let (stream, name) = if stderr {
            (&self.err, "stderr")
        } else {
            (&self.out, "stdout")
        };
        let ok = stream.wait_until(Instant::now() + TIMEOUT, |d, eof| eof || done(d));
        assert!(
            ok && done(&stream.snapshot().0),
            "waited for {wanted} from {} but {}\n{}",
            self.what,
            if ok {
                format!("its {name} was closed first")
            } else {
                format!("they did not come in {TIMEOUT:?}")
            },
            self.describe()
        );
    }

    /// Writes `line` and a newline to the child's stdin.
    pub fn write_line(&mut self, line: &str) {
        self.write_raw(format!("{line}\n").as_bytes());
    }

    /// Closes the child's stdin: it reads end of file.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Writes raw bytes to the child's stdin.
    pub fn write_raw(&mut self, bytes: &[u8]) {
        let what = self.what.clone();
        let stdin = self
            .stdin
            .as_mut()
            .unwrap_or_else(|| panic!("stdin of {what} is closed"));
        stdin
            .write_all(bytes)
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("writing to {what}: {e}"));
    }

    /// Exit status if the child has exited (reaping it), else None.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.try_status()
    }

    /// Waits for the child to exit (failing after [`TIMEOUT`]) and returns its status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        self.wait_exit_within(TIMEOUT)
    }

    /// Waits for the child to exit (failing after `limit`) and returns its status.
    pub fn wait_exit_within(&mut self, limit: Duration) -> ExitStatus {
        match self.child.wait_within(limit) {
            Some(status) => status,
            None => panic!(
                "{} did not exit within {limit:?}\n{}",
                self.what,
                self.describe()
            ),
        }
    }

    /// [`Proc::wait_exit`], asserting exit status 0.
    pub fn wait_exit_ok(&mut self) {
        let status = self.wait_exit();
        self.assert_success(status);
    }

    /// Waits until stdout and stderr are closed by every process holding them.
    pub fn wait_eof(&self) {
        let deadline = Instant::now() + TIMEOUT;
        let ok = self.out.wait_until(deadline, |_, eof| eof)
            && self.err.wait_until(deadline, |_, eof| eof);
        assert!(
            ok,
            "the output pipes of {} stayed open {TIMEOUT:?} after it exited: some other process still holds them\n{}",
            self.what,
            self.describe()
        );
    }

    /// Waits for exit and end of output; returns the status and the complete stdout.
    pub fn finish(&mut self) -> (ExitStatus, Vec<u8>) {
        self.finish_within(TIMEOUT)
    }

    /// [`Proc::finish`], the exit awaited for up to `limit`.
    pub fn finish_within(&mut self, limit: Duration) -> (ExitStatus, Vec<u8>) {
        let status = self.wait_exit_within(limit);
        self.wait_eof();
        (status, self.stdout())
    }

    /// Like [`Proc::finish`], asserting exit status 0.
    pub fn finish_ok(&mut self) -> Vec<u8> {
        let (status, out) = self.finish();
        self.assert_success(status);
        out
    }

    fn assert_success(&self, status: ExitStatus) {
        assert!(
            status.success(),
            "{} exited with {}\n{}",
            self.what,
            status_text(status),
            self.describe()
        );
    }
}
