//! The programs the tests run: the preconditions of the engine and tree tests (root, the
//! tools), the C programs of `tests/programs/` built once per test run, the scripts of
//! `tests/scripts/`, the workloads made of them with their uninterrupted reference runs,
//! and external tools (promtool) that must be present.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::SystemTime;

use super::contexts::{fresh_dir, path_str, tmp_root, workspace};
use super::processes::Proc;

// ---------------------------------------------------------------------------
// Preconditions: these tests never skip, they fail and say what is missing.

/// Fails the test with `why` unless it runs as root (effective UID 0).
pub fn require_root(why: &str) {
    let euid = nix::unistd::geteuid();
    assert!(euid.is_root(), "{why}; effective uid is {euid}");
}

/// Fails the test unless `tool --version` runs and succeeds; `why` says what needs it
/// and how to get it.
pub fn require_tool(tool: &str, why: &str) {
    if let Err(problem) = check_tool(tool) {
        panic!("{problem}: {why}");
    }
}

/// Whether `tool --version` runs and succeeds, and if not, what happened.
fn check_tool(tool: &str) -> Result<(), String> {
    match Command::new(tool)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("`{tool} --version` failed with {s}")),
        Err(e) => Err(format!("`{tool}` could not be run ({e})")),
    }
}

/// The promtool binary (`PROMTOOL`, else `promtool` on the PATH), checked to run.
pub fn promtool() -> OsString {
    let program = std::env::var_os("PROMTOOL").unwrap_or_else(|| "promtool".into());
    require_tool(
        &program.to_string_lossy(),
        "install Debian's `prometheus` package (apt-get install prometheus), which ships \
         promtool, or point PROMTOOL at a promtool binary",
    );
    program
}

// ---------------------------------------------------------------------------
// One-time setup of the engine and tree tests: preconditions, subreaper, C programs.

/// The C programs under `tests/programs/` (each `NAME.c`, sharing `testutil.h`).
const PROGRAMS: &[&str] = &[
    "counter", "threads", "signals", "sleeper", "reader", "mmapfile", "selfpipe", "fpu", "shmtree",
    "anonfds", "timers", "steady", "handlers",
];

/// Checks the preconditions of the tests that checkpoint and restart (root, gcc, python3,
/// bash), makes the test process a child subreaper and builds the C programs, once per
/// test run; returns the directory with the binaries. Fails with the reason when a
/// precondition is missing: these tests never skip.
pub fn setup() -> &'static Path {
    static ENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match ENV.get_or_init(prepare) {
        Ok(dir) => dir,
        Err(why) => panic!("test precondition failed: {why}"),
    }
}

fn prepare() -> Result<PathBuf, String> {
    let euid = nix::unistd::geteuid();
    if !euid.is_root() {
        return Err(format!(
            "these tests must run as root (they ptrace processes and restore PIDs with clone3 set_tid); effective uid is {euid}"
        ));
    }
    for tool in ["gcc", "python3", "bash"] {
        check_tool(tool).map_err(|problem| {
            format!("{problem}; {tool} is needed to build or run the test workloads")
        })?;
    }
    // Processes restored with --detach are orphans, and the members of a killed tree
    // are re-parented: be their reaper, so that their PIDs are freed as soon as they
    // die instead of whenever init gets to it.
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
            .arg("-lm")
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

/// The workspace's `tests/` directory.
pub fn tests_dir() -> PathBuf {
    workspace().join("tests")
}

/// The built C program `name` of `tests/programs/` (after [`setup`]).
pub fn program(name: &str) -> PathBuf {
    assert!(
        PROGRAMS.contains(&name),
        "{name} is not one of the C programs built for the tests ({PROGRAMS:?})"
    );
    setup().join(name)
}

/// The script `name` of `tests/scripts/`.
pub fn script(name: &str) -> PathBuf {
    tests_dir().join("scripts").join(name)
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
        let mut argv = match self.kind {
            Kind::C => vec![path_str(&program(self.name)).to_string()],
            Kind::Python | Kind::Bash => {
                let interp = if self.kind == Kind::Python {
                    "python3"
                } else {
                    "bash"
                };
                vec![interp.to_string(), path_str(&script(self.name)).to_string()]
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

// ---------------------------------------------------------------------------
// Reference outputs: what an uninterrupted run prints.

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
    let out = p.finish_ok();
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
