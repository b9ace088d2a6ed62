//! Shared helpers for lifeboat's end-to-end continuation tests: building the C test programs, running workloads and the CLI, watching processes through /proc and comparing outputs byte for byte.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

/// How long any single wait may take before the test fails. Generous: a healthy run needs a few seconds.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Syscall numbers (x86-64) seen as the first field of `/proc/PID/syscall`.
pub const SYS_READ: i64 = 0;
pub const SYS_NANOSLEEP: i64 = 35;
pub const SYS_CLOCK_NANOSLEEP: i64 = 230;
pub const SYS_PSELECT6: i64 = 270;

/// The C programs under `tests/programs/`.
const PROGRAMS: &[&str] = &[
    "counter", "threads", "signals", "sleeper", "reader", "mmapfile", "selfpipe", "fpu",
];

const POLL: Duration = Duration::from_millis(5);

/// Path of the `lifeboat` binary under test.
pub fn lifeboat_bin() -> &'static str {
    env!("CARGO_BIN_EXE_lifeboat")
}

fn tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests")
}

fn tmp_root() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

/// A path as `&str`; every path used here is created by the tests and is ASCII.
pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

// ---------------------------------------------------------------------------
// One-time setup: preconditions, subreaper, program build.

/// Checks the preconditions and builds the C programs once per test run; returns the directory with the binaries. Panics with the reason when a precondition is missing: these tests never skip.
pub fn setup() -> &'static Path {
    static ENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match ENV.get_or_init(prepare) {
        Ok(dir) => dir,
        Err(why) => panic!("engine test precondition failed: {why}"),
    }
}

fn prepare() -> Result<PathBuf, String> {
    let status = fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .ok_or("no Uid line in /proc/self/status")?;
    if euid != "0" {
        return Err(format!(
            "the engine tests must run as root (they ptrace processes and restore PIDs); effective uid is {euid}"
        ));
    }
    for tool in ["gcc", "python3", "bash"] {
        match Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
        {
            Ok(s) if s.success() => {}
            Ok(s) => {
                return Err(format!(
                    "`{tool} --version` failed with {s}; {tool} is needed to build or run the test workloads"
                ));
            }
            Err(e) => {
                return Err(format!(
                    "`{tool}` could not be run ({e}); it is needed to build or run the test workloads"
                ));
            }
        }
    }
    // Processes restored with --detach are orphans; be their reaper so their
    // PIDs are freed as soon as they die instead of whenever init gets to it.
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| format!("PR_SET_CHILD_SUBREAPER failed: {e}"))?;
    build_programs()
}

fn mtime(p: &Path) -> Option<SystemTime> {
    fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn build_programs() -> Result<PathBuf, String> {
    let src_dir = tests_dir().join("programs");
    let bin_dir = tmp_root().join("programs");
    fs::create_dir_all(&bin_dir)
        .map_err(|e| format!("cannot create {}: {e}", bin_dir.display()))?;
    let header = mtime(&src_dir.join("testutil.h"));
    let mut jobs = Vec::new();
    for name in PROGRAMS {
        let src = src_dir.join(format!("{name}.c"));
        let bin = bin_dir.join(name);
        let newest = mtime(&src)
            .max(header)
            .ok_or_else(|| format!("missing source {}", src.display()))?;
        if mtime(&bin).is_some_and(|t| t >= newest) {
            continue;
        }
        let tmp = bin_dir.join(format!("{name}.tmp.{}", std::process::id()));
        let child = Command::new("gcc")
            .args(["-O2", "-g", "-pthread", "-Wall", "-Wextra", "-I"])
            .arg(&src_dir)
            .arg("-o")
            .arg(&tmp)
            .arg(&src)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run gcc: {e}"))?;
        jobs.push((name, child, tmp, bin));
    }
    let mut errors = String::new();
    for (name, child, tmp, bin) in jobs {
        let out = child
            .wait_with_output()
            .map_err(|e| format!("waiting for gcc: {e}"))?;
        if !out.status.success() {
            let _ = writeln!(
                errors,
                "gcc failed for {name}.c ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            continue;
        }
        // Compile to a private name, then rename: concurrent test processes never see half a binary.
        fs::rename(&tmp, &bin)
            .map_err(|e| format!("cannot move {} into place: {e}", bin.display()))?;
    }
    if errors.is_empty() {
        Ok(bin_dir)
    } else {
        Err(errors)
    }
}

// ---------------------------------------------------------------------------
// Workload descriptions.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    C,
    Python,
    Bash,
}

/// Extra files a workload needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Files {
    /// Nothing.
    None,
    /// `files/shared.dat` and `files/private.dat`, prepared with known contents and passed as the first two arguments (mmapfile).
    MmapPair,
    /// An empty `files/` directory passed as the first argument (selfpipe).
    Dir,
}

/// A deterministic workload: a C program or a script with fixed arguments.
#[derive(Clone, Debug)]
pub struct Prog {
    /// Program or script name, e.g. `counter` or `compute.py`.
    pub name: &'static str,
    kind: Kind,
    args: Vec<String>,
    /// Extra files the workload uses (under `WORKDIR/files`).
    pub files: Files,
    /// Complete stdin of the reference run (reader: every line and `quit`).
    pub input: Vec<String>,
}

fn c_prog(name: &'static str, args: &[&str]) -> Prog {
    Prog {
        name,
        kind: Kind::C,
        args: args.iter().map(|s| s.to_string()).collect(),
        files: Files::None,
        input: Vec::new(),
    }
}

/// Single-threaded running hash, ~2.1 s.
pub fn counter() -> Prog {
    c_prog("counter", &["70", "30"])
}

/// Four workers on a condition-variable queue with barriers, ~1.9 s.
pub fn threads() -> Prog {
    c_prog("threads", &["26", "16", "5", "50"])
}

/// Pending, blocked, queued and thread-directed signals, ~1.8 s.
pub fn signals() -> Prog {
    c_prog("signals", &["36", "50"])
}

/// Long nanosleep/clock_nanosleep calls, ~2 s.
pub fn sleeper() -> Prog {
    c_prog("sleeper", &["8", "250"])
}

/// The lines the reader tests feed to `reader`, in order (without `quit`).
pub const READER_LINES: &[&str] = &[
    "alpha",
    "bravo charlie",
    "",
    "delta-echo 1234567890",
    "golf hotel",
    "india juliett kilo",
    "  lima  ",
    "mike november oscar papa",
    "quebec",
    "romeo sierra tango",
];

/// Echoes reversed stdin lines; its reference input is [`READER_LINES`] and `quit`.
pub fn reader() -> Prog {
    let mut p = c_prog("reader", &[]);
    p.input = READER_LINES
        .iter()
        .map(|s| s.to_string())
        .chain(["quit".to_string()])
        .collect();
    p
}

/// Shared/private file mappings, protections, MADV_DONTNEED, ~1.8 s.
pub fn mmapfile() -> Prog {
    let mut p = c_prog("mmapfile", &["40", "45"]);
    p.files = Files::MmapPair;
    p
}

/// Unread pipe contents and file offsets, ~1.8 s.
pub fn selfpipe() -> Prog {
    let mut p = c_prog("selfpipe", &["40", "45"]);
    p.files = Files::Dir;
    p
}

/// x87/SSE/AVX/AVX-512 registers across raw nanosleep syscalls, ~1.8 s.
pub fn fpu() -> Prog {
    c_prog("fpu", &["30", "60"])
}

/// Pure-Python hash with a worker thread, ~1.7 s.
pub fn compute_py() -> Prog {
    Prog {
        name: "compute.py",
        kind: Kind::Python,
        args: vec!["40".into(), "40".into()],
        files: Files::None,
        input: Vec::new(),
    }
}

/// Bash builtins only, paced by `read -t` on stdin, ~1.7 s.
pub fn compute_sh() -> Prog {
    Prog {
        name: "compute.sh",
        kind: Kind::Bash,
        args: vec!["40".into(), "0.04".into()],
        files: Files::None,
        input: Vec::new(),
    }
}

impl Prog {
    /// A key naming the workload and its arguments (reference cache, directory names).
    pub fn key(&self) -> String {
        let mut k = self.name.replace('.', "_");
        for a in &self.args {
            k.push('_');
            k.push_str(&a.replace('.', "p"));
        }
        k
    }

    /// Strings that identify a process of this workload in `/proc/PID/cmdline` or `exe`.
    pub fn tags(&self) -> Vec<String> {
        let mut t = vec![self.name.to_string(), "lifeboat".to_string()];
        match self.kind {
            Kind::C => {}
            Kind::Python => t.push("python".into()),
            Kind::Bash => t.push("bash".into()),
        }
        t
    }

    /// Directory holding the workload's files inside `workdir`.
    pub fn files_dir(workdir: &Path) -> PathBuf {
        workdir.join("files")
    }

    /// Prepares the workload's files in `workdir` (fresh) and returns its full command line.
    pub fn argv(&self, workdir: &Path) -> Vec<String> {
        let bins = setup();
        let mut argv = match self.kind {
            Kind::C => vec![path_str(&bins.join(self.name)).to_string()],
            Kind::Python | Kind::Bash => {
                let interp = if self.kind == Kind::Python {
                    "python3"
                } else {
                    "bash"
                };
                let script = tests_dir().join("scripts").join(self.name);
                vec![interp.to_string(), path_str(&script).to_string()]
            }
        };
        let files = Self::files_dir(workdir);
        match self.files {
            Files::None => {}
            Files::MmapPair => {
                fresh_dir(&files);
                let shared = files.join("shared.dat");
                let private = files.join("private.dat");
                let s: Vec<u8> = (0..16 * 4096usize).map(|i| (i * 131 + 7) as u8).collect();
                let p: Vec<u8> = (0..8 * 4096usize).map(|i| (i * 17 + 3) as u8).collect();
                fs::write(&shared, s).expect("write shared.dat");
                fs::write(&private, p).expect("write private.dat");
                argv.push(path_str(&shared).to_string());
                argv.push(path_str(&private).to_string());
            }
            Files::Dir => {
                fresh_dir(&files);
                argv.push(path_str(&files).to_string());
            }
        }
        argv.extend(self.args.iter().cloned());
        argv
    }

    /// A command running the workload in `workdir`, with fresh files.
    pub fn command(&self, workdir: &Path) -> Command {
        let argv = self.argv(workdir);
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]).current_dir(workdir);
        cmd
    }
}

fn fresh_dir(dir: &Path) {
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => panic!("cannot remove {}: {e}", dir.display()),
    }
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
}

/// Copies the regular files of `from` into a fresh `to`.
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

// ---------------------------------------------------------------------------
// Reference outputs.

/// The complete stdout of one uninterrupted run of `prog` (computed once per test run and cached). Panics if that run fails.
pub fn reference(prog: &Prog) -> Arc<Vec<u8>> {
    type Cell = Arc<OnceLock<Arc<Vec<u8>>>>;
    static CACHE: OnceLock<Mutex<HashMap<String, Cell>>> = OnceLock::new();
    let cell = {
        let mut map = CACHE
            .get_or_init(Default::default)
            .lock()
            .expect("reference cache poisoned");
        map.entry(prog.key()).or_default().clone()
    };
    cell.get_or_init(|| Arc::new(run_reference(prog))).clone()
}

/// Starts computing the reference in the background, so it overlaps with the test's own run.
pub fn reference_in_background(prog: &Prog) -> JoinHandle<Arc<Vec<u8>>> {
    let prog = prog.clone();
    thread::spawn(move || reference(&prog))
}

/// Waits for a reference started with [`reference_in_background`].
pub fn join_reference(h: JoinHandle<Arc<Vec<u8>>>) -> Arc<Vec<u8>> {
    h.join()
        .expect("the uninterrupted reference run failed (see its panic message above)")
}

fn run_reference(prog: &Prog) -> Vec<u8> {
    let dir = tmp_root()
        .join("reference")
        .join(format!("{}-{}", prog.key(), std::process::id()));
    fresh_dir(&dir);
    let mut p = Proc::spawn(
        prog.command(&dir),
        &format!("reference run of {}", prog.name),
    );
    for line in &prog.input {
        p.write_line(line);
    }
    let (status, out) = p.finish();
    assert!(
        status.success(),
        "{} exited with {}\n{}",
        p.what,
        status_text(status),
        p.describe()
    );
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.lines().last().is_some_and(|l| l.starts_with("done")),
        "reference run of {} did not end with a `done` line:\n{}",
        prog.name,
        p.describe()
    );
    let _ = fs::remove_dir_all(&dir);
    out
}

// ---------------------------------------------------------------------------
// Child processes with captured output.

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
    child: Child,
    stdin: Option<ChildStdin>,
    out: Arc<Stream>,
    err: Arc<Stream>,
    status: Option<ExitStatus>,
}

impl std::fmt::Debug for Proc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Proc({}, pid {})", self.what, self.pid())
    }
}

impl Proc {
    /// Spawns `cmd` with all three standard streams piped.
    pub fn spawn(mut cmd: Command, what: &str) -> Proc {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what} ({cmd:?}): {e}"));
        let out = Arc::new(Stream::default());
        let err = Arc::new(Stream::default());
        out.pump(child.stdout.take().expect("piped stdout"));
        err.pump(child.stderr.take().expect("piped stderr"));
        let stdin = child.stdin.take();
        Proc {
            what: what.to_string(),
            child,
            stdin,
            out,
            err,
            status: None,
        }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits in i32")
    }

    /// Everything read from stdout so far.
    pub fn stdout(&self) -> Vec<u8> {
        self.out.snapshot().0
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.err.snapshot().0).into_owned()
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
        let ok = self.out.wait_until(Instant::now() + TIMEOUT, |d, eof| {
            eof || count_lines(d) >= n
        });
        let have = self.lines();
        assert!(
            ok && have >= n,
            "waited for {n} lines from {} but {}\n{}",
            self.what,
            if ok {
                "its stdout was closed first".to_string()
            } else {
                format!("got only {have} in {TIMEOUT:?}")
            },
            self.describe()
        );
    }

    /// Writes `line` and a newline to the child's stdin.
    pub fn write_line(&mut self, line: &str) {
        self.write_raw(format!("{line}\n").as_bytes());
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
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .unwrap_or_else(|e| panic!("waiting for {}: {e}", self.what));
        }
        self.status
    }

    /// Waits for the child to exit (failing after [`TIMEOUT`]) and returns its status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(s) = self.try_status() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {TIMEOUT:?}\n{}",
                self.what,
                self.describe()
            );
            thread::sleep(POLL);
        }
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
        let status = self.wait_exit();
        self.wait_eof();
        (status, self.stdout())
    }

    /// Like [`Proc::finish`], asserting exit status 0.
    pub fn finish_ok(&mut self) -> Vec<u8> {
        let (status, out) = self.finish();
        assert!(
            status.success(),
            "{} exited with {}\n{}",
            self.what,
            status_text(status),
            self.describe()
        );
        out
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.try_status_quiet().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Proc {
    fn try_status_quiet(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }
}

/// "exit code N" or "signal N".
pub fn status_text(s: ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => format!("{s}"),
    }
}

pub fn count_lines(b: &[u8]) -> usize {
    b.iter().filter(|&&c| c == b'\n').count()
}

// ---------------------------------------------------------------------------
// Per-test context: temp dir, CLI calls, cleanup.

/// Result of one finished CLI call.
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
}

/// One test's context: a unique temp dir under `CARGO_TARGET_TMPDIR` (removed when the test passes, kept when it fails) and the PIDs to kill if the test fails halfway.
#[derive(Debug)]
pub struct TestCtx {
    pub dir: PathBuf,
    guarded: Mutex<Vec<(i32, Vec<String>)>>,
}

impl TestCtx {
    pub fn new(name: &str) -> TestCtx {
        setup();
        let dir = tmp_root()
            .join("engine-tests")
            .join(format!("{name}-{}", std::process::id()));
        fresh_dir(&dir);
        TestCtx {
            dir,
            guarded: Mutex::new(Vec::new()),
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

    /// Runs `lifeboat ARGS` in the test's directory to completion.
    pub fn lifeboat(&self, args: &[&str]) -> CliResult {
        let mut cmd = Command::new(lifeboat_bin());
        cmd.args(args).current_dir(&self.dir);
        let mut p = Proc::spawn(cmd, &format!("`lifeboat {}`", args.join(" ")));
        let (status, out) = p.finish();
        CliResult {
            status,
            stdout: String::from_utf8_lossy(&out).into_owned(),
            stderr: p.stderr_text(),
        }
    }

    /// `lifeboat checkpoint -f IMAGE MODE PID`, failing the test with its output unless it succeeds. `mode` may be empty for the default.
    pub fn checkpoint(&self, pid: i32, image: &Path, mode: &str) -> CliResult {
        let mut args = vec!["checkpoint", "-f", path_str(image)];
        if !mode.is_empty() {
            args.push(mode);
        }
        let pid_s = pid.to_string();
        args.push(&pid_s);
        let r = self.lifeboat(&args);
        assert!(
            r.status.success(),
            "`lifeboat {}` failed with {}\nstdout:\n{}\nstderr:\n{}",
            args.join(" "),
            status_text(r.status),
            r.stdout,
            r.stderr
        );
        assert!(
            image.is_file(),
            "`lifeboat {}` succeeded but wrote no {}",
            args.join(" "),
            image.display()
        );
        r
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
        let status = p.wait_exit();
        assert!(
            status.success(),
            "{} exited with {}\n{}",
            p.what,
            status_text(status),
            p.describe()
        );
        (p, pid)
    }
}

impl Drop for TestCtx {
    fn drop(&mut self) {
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

fn looks_like(pid: i32, tags: &[String]) -> bool {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let exe = fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    tags.iter()
        .any(|t| cmdline.contains(t.as_str()) || exe.contains(t.as_str()))
}

// ---------------------------------------------------------------------------
// /proc helpers.

/// The state letter from `/proc/PID/stat` (R, S, D, T, t, Z, ...), None if there is no such process.
pub fn proc_state(pid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

pub fn pid_exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Exists and is not a zombie.
pub fn is_alive(pid: i32) -> bool {
    matches!(proc_state(pid), Some(c) if c != 'Z' && c != 'X')
}

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

/// Polls in the background whether a PID exists, to catch processes that live only for a moment.
#[derive(Debug)]
pub struct PidWatch {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<usize>,
}

impl PidWatch {
    /// Starts polling `/proc/PID` about every 100 µs.
    pub fn start(pid: i32) -> PidWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = thread::spawn(move || {
            let mut seen = 0;
            while !flag.load(Ordering::Relaxed) {
                if pid_exists(pid) {
                    seen += 1;
                }
                thread::sleep(Duration::from_micros(100));
            }
            seen
        });
        PidWatch { stop, handle }
    }

    /// Stops polling; returns how many polls saw the PID.
    pub fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("pid watcher panicked")
    }
}

/// Waits until the main thread of `pid` is blocked in one of `syscalls` (first field of `/proc/PID/syscall`).
pub fn wait_in_syscall(pid: i32, syscalls: &[i64], what: &str) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let last =
            fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_else(|e| format!("<{e}>"));
        if let Some(nr) = last
            .split_whitespace()
            .next()
            .and_then(|f| f.parse::<i64>().ok())
        {
            if syscalls.contains(&nr) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{what} (pid {pid}) was never seen blocked in syscall {syscalls:?} within {TIMEOUT:?}; /proc/{pid}/syscall last said {:?}",
            last.trim()
        );
        thread::sleep(Duration::from_millis(2));
    }
}

/// The children of `pid`'s main thread.
pub fn children_of(pid: i32) -> Vec<i32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// Number of threads of `pid`.
pub fn thread_count(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Bytes `pid` has read so far (`rchar` in `/proc/PID/io`).
pub fn rchar(pid: i32) -> u64 {
    let io = fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/io: {e}"));
    io.lines()
        .find_map(|l| l.strip_prefix("rchar:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rchar in /proc/{pid}/io"))
}

/// Polls `cond` every few milliseconds until it holds; fails with `what` after [`TIMEOUT`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {TIMEOUT:?} waiting until {what}"
        );
        thread::sleep(POLL);
    }
}

/// A PID that no process or thread uses right now.
pub fn unused_pid() -> i32 {
    let max: i32 = fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(32768);
    (300..max)
        .rev()
        .find(|&p| !pid_exists(p))
        .expect("some PID is free")
}

// ---------------------------------------------------------------------------
// Output comparison.

fn line_at(b: &[u8], idx: usize) -> String {
    b.split(|&c| c == b'\n')
        .nth(idx)
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .unwrap_or_else(|| "<end of output>".into())
}

/// Index of the first line where `a` and `b` differ, if they do.
fn first_diff_line(a: &[u8], b: &[u8]) -> Option<usize> {
    if a == b {
        return None;
    }
    let common = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    Some(count_lines(&a[..common]))
}

/// Asserts that `parts`, concatenated, equal the reference output, naming the first differing line and which part it came from.
pub fn assert_continuation(reference: &[u8], parts: &[(&str, &[u8])], what: &str) {
    let actual: Vec<u8> = parts.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    let Some(line) = first_diff_line(reference, &actual) else {
        return;
    };
    let mut msg = format!(
        "{what}: output differs from the uninterrupted run at line {} (1-based)\n  expected: {:?}\n  actual:   {:?}\n  reference has {} lines ({} bytes), actual {} lines ({} bytes)\n  actual output is made of:",
        line + 1,
        line_at(reference, line),
        line_at(&actual, line),
        count_lines(reference),
        reference.len(),
        count_lines(&actual),
        actual.len()
    );
    let mut start = 0;
    for (name, p) in parts {
        let n = count_lines(p);
        let _ = write!(
            msg,
            "\n    {name}: lines {}..{} ({} bytes{})",
            start + 1,
            start + n,
            p.len(),
            if p.ends_with(b"\n") || p.is_empty() {
                ""
            } else {
                ", ends mid-line"
            }
        );
        start += n;
    }
    let text = String::from_utf8_lossy(&actual);
    let lines: Vec<&str> = text.lines().collect();
    let lo = line.saturating_sub(3);
    let hi = (line + 4).min(lines.len());
    let _ = write!(
        msg,
        "\n  actual lines {}..{}:\n    {}",
        lo + 1,
        hi,
        lines[lo.min(hi)..hi].join("\n    ")
    );
    panic!("{msg}");
}

/// Asserts that `copy` is exactly a suffix of the reference that starts at a line boundary no earlier than byte `min_start` (and, if given, exactly at `exact_start`), and ends with the reference's `done` line.
pub fn assert_suffix(
    reference: &[u8],
    copy: &[u8],
    min_start: usize,
    exact_start: Option<usize>,
    what: &str,
) {
    assert!(
        !copy.is_empty(),
        "{what}: the restored copy printed nothing"
    );
    if !reference.ends_with(copy) {
        // Align on the copy's first line to point at the first difference.
        let first = copy.split(|&c| c == b'\n').next().unwrap_or_default();
        let at = reference
            .split(|&c| c == b'\n')
            .position(|l| l == first)
            .map(|i| {
                reference
                    .split_inclusive(|&c| c == b'\n')
                    .take(i)
                    .map(<[u8]>::len)
                    .sum::<usize>()
            });
        match at {
            None => panic!(
                "{what}: the copy's first line {:?} appears nowhere in the reference output",
                String::from_utf8_lossy(first)
            ),
            Some(off) => {
                let sub = &reference[off..];
                let l = first_diff_line(sub, copy).unwrap_or(0);
                panic!(
                    "{what}: the copy's output is not a suffix of the reference. Aligned on its first line (reference line {}), they differ at the copy's line {}:\n  expected: {:?}\n  actual:   {:?}\n  the copy printed {} lines, the reference has {} from there",
                    count_lines(&reference[..off]) + 1,
                    l + 1,
                    line_at(sub, l),
                    line_at(copy, l),
                    count_lines(copy),
                    count_lines(sub)
                );
            }
        }
    }
    let start = reference.len() - copy.len();
    assert!(
        start == 0 || reference[start - 1] == b'\n',
        "{what}: the copy's output starts in the middle of reference line {}",
        count_lines(&reference[..start]) + 1
    );
    assert!(
        start >= min_start,
        "{what}: the copy resumed at reference line {}, before line {} which had already been printed when the checkpoint was taken",
        count_lines(&reference[..start]) + 1,
        count_lines(&reference[..min_start]) + 1
    );
    if let Some(exact) = exact_start {
        assert!(
            start == exact,
            "{what}: the copy resumed at reference line {}, but the process was stopped for the checkpoint right after line {}",
            count_lines(&reference[..start]) + 1,
            count_lines(&reference[..exact])
        );
    }
    let last = String::from_utf8_lossy(copy)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    assert!(
        last.starts_with("done"),
        "{what}: the copy's last line is {last:?}, not the `done` line"
    );
}

/// Asserts that `status` is death by `signal`.
pub fn assert_killed_by(status: ExitStatus, signal: i32, what: &str) {
    assert_eq!(
        status.signal(),
        Some(signal),
        "{what} should have been killed by signal {signal}, it ended with {}",
        status_text(status)
    );
}
