//! Restart: rebuild a process from a context file.
//!
//! 1. Decode and validate the image; decide credentials (restored only when the caller is
//!    root and the image file is owned by root or by the UID it claims).
//! 2. Open every file as the caller (permission checks apply), check identities, recreate
//!    pipes with their bytes; descriptors the stub needs are placed above every target.
//! 3. clone3 a stub (with `set_tid` for the original PID), which moves descriptors into
//!    place, enters cwd, sets umask/personality/session and stops under ptrace.
//! 4. By injected system calls through the stub's `[vdso]`: unregister the stub's rseq,
//!    unmap all its memory, move `[vvar]`/`[vvar_vclock]`/`[vdso]` to their recorded
//!    addresses, map every region, write the pages with process_vm_writev, set protections
//!    and advice, restore the mm layout (PR_SET_MM_MAP), sigactions, threads (clone3 with
//!    `set_tid`), per-thread state, pending signals and credentials.
//! 5. Set every thread's registers, XSAVE area and mask, and detach.
//!
//! Until step 5 completes, a guard kills the stub on any error: a failed restart leaves no
//! half-built process behind (Architecture Invariant).

use crate::image::{self, ImageError};
use crate::model::*;
use crate::procfs::{self, ProcError};
use crate::sys::{self, process::StubSession};
use crate::tracee::{self, After, Injector, TraceError, regs_to};
use nix::errno::Errno;
use nix::fcntl::{self, FcntlArg, OFlag};
use nix::sys::ptrace::{self, Options};
use nix::sys::signal::{self, Signal};
use nix::sys::stat::Mode;
use nix::sys::uio::{RemoteIoVec, process_vm_writev};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::ffi::CString;
use std::fs;
use std::io::{self, IoSlice, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Failures of a restart. No process is left behind after any of them.
#[derive(Debug, thiserror::Error)]
pub enum RestartError {
    /// The image is unusable.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The original PID is taken.
    #[error("PID {pid} is in use{holder}; restart with --no-restore-pid to get a new PID")]
    PidInUse {
        /// PID.
        pid: i32,
        /// Who holds it, as ` (by \`comm\`)`.
        holder: String,
    },
    /// clone3 with set_tid was refused.
    #[error(
        "cannot create PID {pid}: {source} (restoring a PID needs CAP_CHECKPOINT_RESTORE; use --no-restore-pid)"
    )]
    SetTid {
        /// PID.
        pid: i32,
        /// Cause.
        source: Errno,
    },
    /// Creating the stub failed.
    #[error("cannot create the restart process: {source}")]
    Spawn {
        /// Cause.
        source: Errno,
    },
    /// The processes of the image do not form a tree that can be restored.
    #[error("cannot restore the process tree: {what}")]
    Tree {
        /// What is wrong.
        what: String,
    },
    /// The stub failed while setting itself up.
    #[error("the restart process failed to {step}: {source}")]
    Stub {
        /// What it was doing.
        step: &'static str,
        /// Cause.
        source: Errno,
    },
    /// A file the process had open cannot be opened.
    #[error("descriptor {fd}: cannot open {path}: {source}")]
    OpenFile {
        /// Descriptor in the process.
        fd: i32,
        /// Path.
        path: String,
        /// Cause.
        source: io::Error,
    },
    /// A mapped file cannot be used.
    #[error("mapping at {start:#x}: {path}: {what}")]
    MappedFile {
        /// Address.
        start: u64,
        /// Path.
        path: String,
        /// What is wrong.
        what: String,
    },
    /// The image's credentials may not be restored by this caller.
    #[error(
        "{path} is owned by UID {owner} but claims UID {claimed}; refusing to restore those credentials"
    )]
    Credentials {
        /// Image.
        path: PathBuf,
        /// File owner.
        owner: u32,
        /// UID in the image.
        claimed: u32,
    },
    /// The kernel's special mappings differ from the image's.
    #[error(
        "this kernel's {what} differs from the image's ({detail}); restart on the kernel that took the checkpoint"
    )]
    Vdso {
        /// Which mapping.
        what: &'static str,
        /// Sizes or presence.
        detail: String,
    },
    /// No free address range for temporary mappings.
    #[error("no free address range of {size} bytes for the restorer's scratch memory")]
    NoGap {
        /// Size wanted.
        size: u64,
    },
    /// An injected system call failed.
    #[error("injected {call} failed: {source}")]
    Inject {
        /// The call.
        call: String,
        /// errno.
        source: Errno,
    },
    /// Writing restored memory failed.
    #[error("cannot write restored memory at {addr:#x}: {source}")]
    WriteMemory {
        /// Address.
        addr: u64,
        /// Cause.
        source: Errno,
    },
    /// Reading page data failed (including a checksum mismatch).
    #[error("{path}: cannot read page data: {source}")]
    ReadPages {
        /// Image.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// A local system call failed.
    #[error("{op}: {source}")]
    Sys {
        /// What failed.
        op: String,
        /// Cause.
        source: Errno,
    },
    /// ptrace failed.
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// /proc could not be read.
    #[error(transparent)]
    Proc(#[from] ProcError),
}

/// How to restart.
#[derive(Debug, Clone)]
pub struct RestartOptions {
    /// Recreate the original PID and TIDs (clone3 `set_tid`).
    pub restore_pid: bool,
    /// What the restored process does: run, stay stopped, or be killed.
    pub after: After,
}

impl Default for RestartOptions {
    fn default() -> Self {
        RestartOptions {
            restore_pid: true,
            after: After::Run,
        }
    }
}

/// Progress of page writing.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Bytes restored.
    pub done: u64,
    /// Bytes to restore.
    pub total: u64,
}

/// A restarted process.
#[derive(Debug)]
pub struct Restored {
    /// Its PID (a child of the caller); the root of the tree for an image of several.
    pub pid: Pid,
    /// Every restored process, the root first.
    pub pids: Vec<Pid>,
    /// Things that were restored differently than they were (a reattached stream, a
    /// changed file); each names the descriptor or path.
    pub warnings: Vec<String>,
}

fn sys_err(op: impl Into<String>) -> impl FnOnce(Errno) -> RestartError {
    let op = op.into();
    move |source| RestartError::Sys { op, source }
}

/// x86-64 system call numbers used by the restorer.
mod nr {
    pub const MMAP: i64 = 9;
    pub const MPROTECT: i64 = 10;
    pub const MUNMAP: i64 = 11;
    pub const RT_SIGACTION: i64 = 13;
    pub const MREMAP: i64 = 25;
    pub const MADVISE: i64 = 28;
    pub const CLOSE: i64 = 3;
    pub const LSEEK: i64 = 8;
    pub const SETRESUID: i64 = 117;
    pub const SETRESGID: i64 = 119;
    pub const SETGROUPS: i64 = 116;
    pub const RT_SIGQUEUEINFO: i64 = 129;
    pub const SIGALTSTACK: i64 = 131;
    pub const PRCTL: i64 = 157;
    pub const SET_TID_ADDRESS: i64 = 218;
    pub const OPENAT: i64 = 257;
    pub const SET_ROBUST_LIST: i64 = 273;
    pub const DUP3: i64 = 292;
    pub const RT_TGSIGQUEUEINFO: i64 = 297;
    pub const RSEQ: i64 = 334;
    pub const EPOLL_CTL: i64 = 233;
    pub const FCNTL: i64 = 72;
    pub const SETITIMER: i64 = 38;
    pub const TIMER_CREATE: i64 = 222;
    pub const TIMER_SETTIME: i64 = 223;
    pub const FLOCK: i64 = 73;
    pub const CLONE3: i64 = 435;
}

/// Scratch memory in the stub for syscall arguments.
const SCRATCH: u64 = 64 * 1024;
/// Top of the 47-bit user address space.
const USER_TOP_47: u64 = 0x7fff_ffff_f000;

/// Kills every stub created so far unless disarmed: a failed restart leaves nothing.
struct StubGuard {
    pids: Vec<Pid>,
    armed: bool,
}

impl Drop for StubGuard {
    fn drop(&mut self) {
        if self.armed {
            for &pid in &self.pids {
                let _ = signal::kill(pid, Signal::SIGKILL);
            }
            for &pid in &self.pids {
                let _ = waitpid(pid, Some(WaitPidFlag::__WALL));
            }
        }
    }
}

/// A descriptor prepared for the stub.
struct Prepared {
    fd: OwnedFd,
    target: RawFd,
    cloexec: bool,
}

/// A file to open inside the stub by injection (paths under `/proc/PID` of the process).
struct LateOpen {
    target: RawFd,
    path: String,
    flags: u32,
    pos: i64,
    cloexec: bool,
}

/// Flags worth passing to open(2) again: access mode and status flags, never creation.
fn reopen_flags(flags: u32) -> OFlag {
    let keep = libc::O_ACCMODE
        | libc::O_APPEND
        | libc::O_NONBLOCK
        | libc::O_DIRECT
        | libc::O_SYNC
        | libc::O_DSYNC
        | libc::O_NOATIME
        | libc::O_LARGEFILE
        | libc::O_DIRECTORY
        | libc::O_NOFOLLOW;
    OFlag::from_bits_truncate((flags as i32) & keep) | OFlag::O_CLOEXEC
}

fn is_tty_path(path: &str) -> bool {
    path.starts_with("/dev/pts/") || path.starts_with("/dev/tty") || path == "/dev/console"
}

/// A new descriptor for one of our own standard streams (0, 1, 2).
fn dup_own(fd: RawFd) -> Result<OwnedFd, RestartError> {
    let dup = match fd {
        0 => io::stdin().as_fd().try_clone_to_owned(),
        1 => io::stdout().as_fd().try_clone_to_owned(),
        _ => io::stderr().as_fd().try_clone_to_owned(),
    };
    dup.map_err(|e| RestartError::Sys {
        op: format!("dup of our descriptor {fd}"),
        source: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
    })
}

/// A process killed by `checkpoint --kill` lingers as a zombie until its parent reaps
/// it; an init that reaps lazily can hold the PID for a moment. Wait up to two seconds
/// for such a zombie to go before trying to take its PID.
fn wait_for_zombie_reaped(pid: i32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while procfs::stat(pid).is_ok_and(|s| s.state == 'Z') && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Restart the processes saved in `path`: one process, or a whole tree (a process with
/// its descendants, a process group, a session), with their PIDs, parent links, groups
/// and sessions, and the pipes and shared memory between them. The root of the image
/// becomes a child of the caller.
pub fn restart(
    path: &Path,
    opts: &RestartOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Restored, RestartError> {
    let reader = image::Reader::open(path)?;
    reader.verify_pages()?;
    let imgs: Vec<&Image> = reader.images().collect();
    let mut warnings = Vec::new();
    let caller = sys::process::geteuid();
    let restore_creds: Vec<bool> = if caller == 0 {
        let owner = fs::metadata(path)
            .map_err(|e| RestartError::ReadPages {
                path: path.to_owned(),
                source: e,
            })?
            .uid();
        let mut out = Vec::new();
        for img in &imgs {
            let claimed = img.process.creds.uid[0];
            if owner != 0 && owner != claimed {
                return Err(RestartError::Credentials {
                    path: path.to_owned(),
                    owner,
                    claimed,
                });
            }
            out.push(
                claimed != 0
                    || img.process.creds.gid != [0; 4]
                    || !img.process.creds.groups.is_empty(),
            );
        }
        out
    } else {
        vec![false; imgs.len()]
    };
    // Processes remember each other's PIDs (a shell's job table, a parent's child list):
    // a job restarted without its PIDs on the host gets them back inside a new PID
    // namespace, beside whatever holds them outside.
    let in_namespace = imgs.len() > 1 && !opts.restore_pid;
    let set_pids = opts.restore_pid || in_namespace;

    // Pipes and shared memory that several processes of the image hold: one each.
    let pipes = shared_pipes(&imgs)?;
    let socks = socket_pairs(&imgs)?;
    let shm = shared_memory(&imgs)?;

    // Files, opened as the caller.
    let mut per_proc = Vec::with_capacity(imgs.len());
    let mut opened_by: Vec<(i32, Vec<Option<OwnedFd>>)> = Vec::with_capacity(imgs.len());
    for img in &imgs {
        let (prepared, opened) = prepare_files(img, &pipes, &socks, &opened_by, &mut warnings)?;
        per_proc.push(prepared);
        opened_by.push((img.process.pid, opened));
    }
    drop(opened_by);
    drop(socks);
    drop(pipes);
    let first_free = imgs
        .iter()
        .flat_map(|img| img.fds.iter().map(|f| f.fd))
        .max()
        .unwrap_or(2)
        .max(2)
        + 1;
    let lift = |fd: &OwnedFd| {
        sys::process::dup_above(fd.as_fd(), first_free).map_err(sys_err("F_DUPFD_CLOEXEC"))
    };
    let mut holders: Vec<OwnedFd> = Vec::new();
    let mut moves_of = Vec::with_capacity(imgs.len());
    let mut late_of = Vec::with_capacity(imgs.len());
    let mut epolls_of = Vec::with_capacity(imgs.len());
    for (prepared, late, epolls) in per_proc {
        epolls_of.push(epolls);
        let mut moves = Vec::new();
        for p in &prepared {
            let high = lift(&p.fd)?;
            moves.push((high.as_raw_fd(), p.target, p.cloexec));
            holders.push(high);
        }
        moves_of.push(moves);
        late_of.push(late);
    }
    // Files for mappings, one descriptor per distinct (path, writable).
    let mut map_fds: Vec<(String, bool, OwnedFd)> = Vec::new();
    for img in &imgs {
        open_mapped_files(img, &mut map_fds, &lift, &mut warnings)?;
    }
    let shm_fds: Vec<(u64, OwnedFd)> = shm
        .into_iter()
        .map(|(ino, fd)| Ok((ino, lift(&fd)?)))
        .collect::<Result<_, RestartError>>()?;
    let exe_fds: Vec<Option<OwnedFd>> = imgs
        .iter()
        .map(|img| {
            if caller == 0 {
                fcntl::open(
                    img.process.exe.as_str(),
                    OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .ok()
                .map(|fd| lift(&fd))
                .transpose()
            } else {
                Ok(None)
            }
        })
        .collect::<Result<_, _>>()?;
    let (report_r, report_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).map_err(sys_err("pipe2"))?;
    let report_w = lift(&report_w)?;

    // What each process keeps for the restorer: its mapped files, shared memory and exe.
    let keep_of: Vec<Vec<RawFd>> = imgs
        .iter()
        .zip(&exe_fds)
        .map(|(img, exe)| {
            let mut keep: Vec<RawFd> = img
                .regions
                .iter()
                .filter_map(|r| match &r.kind {
                    RegionKind::File { path, .. } => {
                        let w = r.shared && r.prot & libc::PROT_WRITE as u32 != 0;
                        map_fds
                            .iter()
                            .find(|(p, wr, _)| p == path && *wr == w)
                            .map(|(_, _, fd)| fd.as_raw_fd())
                    }
                    _ => None,
                })
                .chain(img.shared_anon.iter().filter_map(|id| {
                    shm_fds
                        .iter()
                        .find(|(ino, _)| *ino == id.ino)
                        .map(|(_, fd)| fd.as_raw_fd())
                }))
                .chain(exe.as_ref().map(|f| f.as_raw_fd()))
                .collect();
            keep.sort_unstable();
            keep.dedup();
            keep
        })
        .collect();

    let mut plans = stub_plans(
        &imgs,
        reader.zombies(),
        set_pids,
        &moves_of,
        &keep_of,
        first_free,
        report_w.as_raw_fd(),
        &mut warnings,
    )?;
    if opts.restore_pid {
        for img in &imgs {
            wait_for_zombie_reaped(img.process.pid);
        }
    }
    if in_namespace {
        let cwd = CString::new("/").map_err(|_| RestartError::Sys {
            op: "cwd".into(),
            source: Errno::EINVAL,
        })?;
        plans = vec![sys::process::StubPlan {
            namespace_init: true,
            exit_status: None,
            set_tid: None,
            moves: Vec::new(),
            keep: Vec::new(),
            first_free,
            cwd,
            umask: 0o022,
            personality: 0,
            session: StubSession::Inherit,
            report_fd: plans[0].report_fd,
            children: plans,
        }];
    }
    let mut guard = StubGuard {
        pids: Vec::new(),
        armed: true,
    };
    for top in &plans {
        let pid = match sys::process::spawn_stub(top) {
            Ok(pid) => pid,
            Err(e) => {
                let want = top.set_tid.unwrap_or(imgs[0].process.pid);
                return Err(spawn_error(e, want, opts.restore_pid));
            }
        };
        guard.pids.push(pid);
        // As a shell does: set the group from the parent too, so that the next member
        // joining it never races the leader's own setpgid.
        match top.session {
            StubSession::GroupLeader => {
                let _ = nix::unistd::setpgid(pid, pid);
            }
            StubSession::Join(g) => {
                let _ = nix::unistd::setpgid(pid, Pid::from_raw(g));
            }
            _ => {}
        }
    }
    let root = guard.pids[0];
    drop(holders);
    drop(report_w);
    let pids = wait_ready(
        root,
        &report_r,
        &imgs,
        reader.zombies().len(),
        set_pids,
        in_namespace,
        &mut guard,
    )?;

    // Seize every stub while it waits in pause().
    for &pid in &pids {
        ptrace::seize(
            pid,
            Options::PTRACE_O_TRACESYSGOOD
                | Options::PTRACE_O_TRACECLONE
                | Options::PTRACE_O_EXITKILL,
        )
        .map_err(sys_err(format!("PTRACE_SEIZE of stub {pid}")))?;
        ptrace::interrupt(pid).map_err(sys_err(format!("PTRACE_INTERRUPT of stub {pid}")))?;
        match waitpid(pid, Some(WaitPidFlag::__WALL)).map_err(sys_err("waitpid"))? {
            WaitStatus::PtraceEvent(..) | WaitStatus::Stopped(..) => {}
            _ => {
                return Err(RestartError::Stub {
                    step: "wait for the restorer",
                    source: Errno::ESRCH,
                });
            }
        }
        sys::ptrace::set_sigmask(pid, u64::MAX).map_err(sys_err("PTRACE_SETSIGMASK"))?;
    }

    // Rebuild every process; none runs until all are rebuilt.
    let map_fd_of = |path: &str, writable: bool| {
        map_fds
            .iter()
            .find(|(p, w, _)| p == path && *w == writable)
            .map(|(_, _, fd)| fd.as_raw_fd())
    };
    let shm_fd_of = |ino: u64| {
        shm_fds
            .iter()
            .find(|(i, _)| *i == ino)
            .map(|(_, fd)| fd.as_raw_fd())
    };
    let mut all_tids = Vec::with_capacity(imgs.len());
    for (i, img) in imgs.iter().enumerate() {
        let pid = pids[i];
        let mut r = Restorer {
            pid,
            img,
            inj: Injector::new(pid, 0)?,
            scratch: 0,
            restore_pid: set_pids,
        };
        r.address_space(&map_fd_of, &shm_fd_of, &reader, i, path, progress)?;
        // The report pipe's write end has the same number in every stub.
        let mut to_close: Vec<RawFd> = keep_of[i].clone();
        to_close.push(plans[0].report_fd);
        let exe = exe_fds[i].as_ref().map(|f| f.as_raw_fd());
        for &fd in to_close.iter().filter(|&&fd| Some(fd) != exe) {
            r.call("close", nr::CLOSE, &[fd as u64])?;
        }
        r.late_opens(&late_of[i])?;
        r.epoll_watches(&epolls_of[i], &mut warnings)?;
        r.locks(&mut warnings)?;
        r.mm(exe, &mut warnings)?;
        if let Some(fd) = exe {
            r.call("close", nr::CLOSE, &[fd as u64])?;
        }
        r.sigactions()?;
        let tids = r.threads()?;
        guard.pids.extend(tids.iter().skip(1).copied());
        r.pending(&tids)?;
        r.timers(&mut warnings)?;
        // Limits while the stub still has the caller's credentials (prlimit of another
        // user's process needs CAP_SYS_RESOURCE, as does raising a hard limit).
        for rl in &img.process.rlimits {
            if let Err(e) = sys::process::set_rlimit(pid, rl.resource, rl.soft, rl.hard) {
                warnings.push(format!(
                    "PID {pid}: resource limit {} not restored: {e}",
                    rl.resource
                ));
            }
        }
        if restore_creds[i] {
            r.creds(&tids)?;
        }
        r.call("munmap", nr::MUNMAP, &[r.scratch, SCRATCH])?;
        for (t, &tid) in img.threads.iter().zip(&tids) {
            sys::ptrace::set_xstate(tid, &t.xstate).map_err(sys_err(format!(
                "PTRACE_SETREGSET(NT_X86_XSTATE) on thread {tid}"
            )))?;
            ptrace::setregs(tid, regs_to(&t.regs))
                .map_err(sys_err(format!("PTRACE_SETREGS on thread {tid}")))?;
            sys::ptrace::set_sigmask(tid, t.sigmask)
                .map_err(sys_err(format!("PTRACE_SETSIGMASK on thread {tid}")))?;
        }
        all_tids.push(tids);
    }

    if opts.after == After::Kill {
        drop(guard);
        return Ok(Restored {
            pid: root,
            pids,
            warnings,
        });
    }
    // Children first, so no parent runs before its children exist as they were.
    for (i, img) in imgs.iter().enumerate().rev() {
        if opts.after == After::Stop || img.process.stopped {
            signal::kill(pids[i], Signal::SIGSTOP).map_err(sys_err("kill"))?;
        }
        for &tid in &all_tids[i] {
            ptrace::detach(tid, None).map_err(sys_err(format!("PTRACE_DETACH on thread {tid}")))?;
        }
    }
    guard.armed = false;
    Ok(Restored {
        pid: root,
        pids,
        warnings,
    })
}

/// The error for a root stub that could not be created.
fn spawn_error(e: Errno, pid: i32, restore_pid: bool) -> RestartError {
    match e {
        Errno::EEXIST => pid_in_use(pid),
        source @ (Errno::EPERM | Errno::EINVAL) if restore_pid => {
            RestartError::SetTid { pid, source }
        }
        source => RestartError::Spawn { source },
    }
}

fn pid_in_use(pid: i32) -> RestartError {
    let holder = procfs::stat(pid)
        .map(|s| match s.state {
            'Z' => format!(
                " (by a zombie `{}` that its parent, PID {}, has not reaped yet)",
                s.comm, s.ppid
            ),
            _ => format!(" (by `{}`)", s.comm),
        })
        .unwrap_or_default();
    RestartError::PidInUse { pid, holder }
}

/// Wait until every stub reported ready; returns their PIDs in image order.
fn wait_ready(
    root: Pid,
    report: &OwnedFd,
    imgs: &[&Image],
    zombies: usize,
    restore_pid: bool,
    in_namespace: bool,
    guard: &mut StubGuard,
) -> Result<Vec<Pid>, RestartError> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use sys::process::stub_step as s;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut ready: Vec<i32> = Vec::new();
    let mut buf = Vec::new();
    while ready.len() < imgs.len() + zombies {
        if std::time::Instant::now() > deadline {
            return Err(RestartError::Stub {
                step: "report ready in time",
                source: Errno::ETIMEDOUT,
            });
        }
        let mut fds = [PollFd::new(report.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, PollTimeout::from(100u16));
        let mut chunk = [0u8; 4096];
        match nix::unistd::read(report, &mut chunk) {
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            Err(e) => return Err(sys_err("reading the stubs' reports")(e)),
        }
        let whole = buf.len() / 12 * 12;
        let reports = sys::process::parse_reports(&buf[..whole]);
        buf.drain(..whole);
        for (pid, step, errno) in reports {
            let source = Errno::from_raw(errno);
            let step = match step {
                s::READY => {
                    ready.push(pid);
                    // Inside a namespace the PID is the inner one; killing the init
                    // (already guarded) kills them all.
                    if !in_namespace {
                        guard.pids.push(Pid::from_raw(pid));
                    }
                    continue;
                }
                s::CHILD if source == Errno::EEXIST => return Err(pid_in_use(pid)),
                s::CHILD if restore_pid && matches!(source, Errno::EPERM | Errno::EINVAL) => {
                    return Err(RestartError::SetTid { pid, source });
                }
                s::CHILD => "create a child process",
                s::DUP => "set up its descriptors",
                s::CHDIR => "enter its working directory",
                s::PERSONALITY => "set its personality",
                s::SESSION => "join its session and process group",
                _ => "start",
            };
            return Err(RestartError::Stub { step, source });
        }
        // A root that died without a report (killed from outside) ends the wait.
        if let Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) =
            waitpid(root, Some(WaitPidFlag::WNOHANG))
        {
            guard.armed = false;
            return Err(RestartError::Stub {
                step: "start",
                source: Errno::ECHILD,
            });
        }
    }
    // With restored PIDs each process has its image's PID; otherwise there is one.
    if in_namespace {
        outer_pids(root, imgs)
    } else if restore_pid {
        Ok(imgs.iter().map(|i| Pid::from_raw(i.process.pid)).collect())
    } else {
        Ok(vec![root])
    }
}

/// The host PIDs of the processes of `imgs`, restored with their PIDs inside the PID
/// namespace whose init is `init`: each descendant's `NSpid` line ends with its PID in
/// the namespace.
fn outer_pids(init: Pid, imgs: &[&Image]) -> Result<Vec<Pid>, RestartError> {
    let mut inner_to_outer: Vec<(i32, i32)> = Vec::new();
    let mut frontier = vec![init.as_raw()];
    let all: Vec<(i32, i32)> = procfs::pids()
        .into_iter()
        .filter_map(|p| procfs::stat(p).ok().map(|s| (p, s.ppid)))
        .collect();
    while let Some(parent) = frontier.pop() {
        for &(p, ppid) in &all {
            if ppid != parent {
                continue;
            }
            frontier.push(p);
            let status = fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
            if let Some(inner) = status
                .lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .and_then(|l| l.split_whitespace().last())
                .and_then(|v| v.parse().ok())
            {
                inner_to_outer.push((inner, p));
            }
        }
    }
    imgs.iter()
        .map(|img| {
            inner_to_outer
                .iter()
                .find(|(inner, _)| *inner == img.process.pid)
                .map(|(_, outer)| Pid::from_raw(*outer))
                .ok_or_else(|| RestartError::Tree {
                    what: format!(
                        "process {} did not appear in the new PID namespace",
                        img.process.pid
                    ),
                })
        })
        .collect()
}

/// One process to create: a live one (index into the images) or a zombie.
struct Member {
    pid: i32,
    ppid: i32,
    pgid: i32,
    sid: i32,
    cwd: String,
    umask: u32,
    personality: u32,
    /// Exit status, for a zombie.
    zombie: Option<i32>,
}

/// The stub plans of every process, nested as the processes were: each process's
/// children under it, group leaders before the members of their groups. The result has
/// one plan per top-level process (the root first, then processes whose parent is not in
/// the image, as in a process group or session scope), each created by the restarter.
/// Zombies are planned under their parents; their stubs exit with the saved status.
#[allow(clippy::too_many_arguments)]
fn stub_plans(
    imgs: &[&Image],
    zombies: &[Zombie],
    restore_pid: bool,
    moves: &[Vec<(RawFd, RawFd, bool)>],
    keep: &[Vec<RawFd>],
    first_free: RawFd,
    report_fd: RawFd,
    warnings: &mut Vec<String>,
) -> Result<Vec<sys::process::StubPlan>, RestartError> {
    let root_cwd = imgs[0].process.cwd.clone();
    let members: Vec<Member> = imgs
        .iter()
        .map(|img| Member {
            pid: img.process.pid,
            ppid: img.process.ppid,
            pgid: img.process.pgid,
            sid: img.process.sid,
            cwd: img.process.cwd.clone(),
            umask: img.process.umask,
            personality: img.process.personality,
            zombie: None,
        })
        .chain(zombies.iter().map(|z| Member {
            pid: z.pid,
            ppid: z.ppid,
            pgid: z.pgid,
            sid: z.sid,
            cwd: root_cwd.clone(),
            umask: 0o022,
            personality: 0,
            zombie: Some(z.status),
        }))
        .collect();
    let planner = Planner {
        members: &members,
        restore_pid,
        moves,
        keep,
        first_free,
        report_fd,
    };
    let mut made = vec![false; members.len()];
    let mut tops: Vec<usize> = (0..imgs.len())
        .filter(|&i| i == 0 || planner.index_of(members[i].ppid).is_none())
        .collect();
    tops.sort_by_key(|&i| {
        let p = &members[i];
        (i != 0, p.pgid != p.pid && p.sid != p.pid, p.pid)
    });
    let mut plans = Vec::with_capacity(tops.len());
    for i in tops {
        plans.push(planner.plan(i, warnings, &mut made)?);
    }
    if let Some(i) = made.iter().position(|m| !m) {
        return Err(RestartError::Tree {
            what: format!(
                "process {} cannot be placed under its parent {}",
                members[i].pid, members[i].ppid
            ),
        });
    }
    Ok(plans)
}

/// What every plan of a restart shares.
struct Planner<'a> {
    members: &'a [Member],
    restore_pid: bool,
    moves: &'a [Vec<(RawFd, RawFd, bool)>],
    keep: &'a [Vec<RawFd>],
    first_free: RawFd,
    report_fd: RawFd,
}

impl Planner<'_> {
    fn index_of(&self, pid: i32) -> Option<usize> {
        self.members.iter().position(|m| m.pid == pid)
    }

    fn plan(
        &self,
        i: usize,
        warnings: &mut Vec<String>,
        made: &mut [bool],
    ) -> Result<sys::process::StubPlan, RestartError> {
        made[i] = true;
        let p = &self.members[i];
        let parent = (i != 0)
            .then(|| self.index_of(p.ppid))
            .flatten()
            .map(|j| &self.members[j]);
        let session = if p.sid == p.pid {
            StubSession::Leader
        } else if p.pgid == p.pid {
            StubSession::GroupLeader
        } else if parent.is_none() && i != 0 && self.index_of(p.pgid).is_some() {
            // A top-level member of a group whose leader was created before it.
            StubSession::Join(p.pgid)
        } else if let Some(par) = parent {
            if p.pgid == par.pgid {
                StubSession::Inherit
            } else if self.index_of(p.pgid).is_some() {
                StubSession::Join(p.pgid)
            } else {
                warnings.push(format!(
                    "PID {}: its process group {} is not in the image; it joins its parent's",
                    p.pid, p.pgid
                ));
                StubSession::Inherit
            }
        } else {
            StubSession::Inherit
        };
        // Children: processes whose parent is this one, group leaders first so that the
        // members of their groups can join them.
        let mut kids: Vec<usize> = (0..self.members.len())
            .filter(|&j| j != 0 && self.members[j].ppid == p.pid && !made[j])
            .collect();
        kids.sort_by_key(|&j| {
            let c = &self.members[j];
            (c.pgid != c.pid && c.sid != c.pid, c.pid)
        });
        let mut children = Vec::with_capacity(kids.len());
        for j in kids {
            children.push(self.plan(j, warnings, made)?);
        }
        let cwd = CString::new(p.cwd.clone()).map_err(|_| RestartError::Sys {
            op: "cwd contains NUL".into(),
            source: Errno::EINVAL,
        })?;
        Ok(sys::process::StubPlan {
            namespace_init: false,
            exit_status: p.zombie,
            set_tid: self.restore_pid.then_some(p.pid),
            moves: self.moves.get(i).cloned().unwrap_or_default(),
            keep: self.keep.get(i).cloned().unwrap_or_default(),
            first_free: self.first_free,
            cwd,
            umask: p.umask,
            personality: p.personality,
            session,
            report_fd: self.report_fd,
            children,
        })
    }
}

/// A pipe for every pipe inode whose both ends are held inside the image (by one process
/// or several), filled with its buffered bytes. Keyed by inode.
fn shared_pipes(imgs: &[&Image]) -> Result<Vec<(u64, OwnedFd, OwnedFd)>, RestartError> {
    let mut out: Vec<(u64, OwnedFd, OwnedFd)> = Vec::new();
    let ends = imgs
        .iter()
        .flat_map(|img| img.files.iter())
        .filter_map(|f| match &f.kind {
            FileKind::Pipe {
                ino,
                read_end,
                data,
                capacity,
            } => Some((*ino, *read_end, data, *capacity)),
            _ => None,
        });
    let all: Vec<_> = ends.collect();
    for &(ino, read_end, data, capacity) in &all {
        if !read_end || out.iter().any(|(i, _, _)| *i == ino) {
            continue;
        }
        if !all.iter().any(|&(i, r, _, _)| i == ino && !r) {
            continue;
        }
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys_err("pipe2"))?;
        if capacity as usize > 65536 {
            let _ = fcntl::fcntl(w.as_fd(), FcntlArg::F_SETPIPE_SZ(capacity as _));
        }
        write_all(&w, data).map_err(sys_err("refilling a pipe"))?;
        out.push((ino, r, w));
    }
    Ok(out)
}

/// Both ends of every AF_UNIX socket pair of the image, created with socketpair(2) and
/// refilled: what waited on one end is sent again from the other. Keyed by inode.
fn socket_pairs(imgs: &[&Image]) -> Result<Vec<(u64, OwnedFd)>, RestartError> {
    use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, send, socketpair};
    let ends: Vec<(u64, u64, i32, &Vec<Vec<u8>>)> = imgs
        .iter()
        .flat_map(|img| img.files.iter())
        .filter_map(|f| match &f.kind {
            FileKind::UnixPair {
                ino,
                peer,
                sock_type,
                queued,
            } => Some((*ino, *peer, *sock_type, queued)),
            _ => None,
        })
        .collect();
    let mut out: Vec<(u64, OwnedFd)> = Vec::new();
    for &(ino, peer, ty, queued) in &ends {
        if out.iter().any(|(i, _)| *i == ino) {
            continue;
        }
        let Some(&(_, _, _, peer_queued)) = ends.iter().find(|e| e.0 == peer) else {
            continue; // refused at checkpoint; prepare_files reports it
        };
        let ty = match ty {
            libc::SOCK_DGRAM => SockType::Datagram,
            libc::SOCK_SEQPACKET => SockType::SeqPacket,
            _ => SockType::Stream,
        };
        let (a, b) = socketpair(AddressFamily::Unix, ty, None, SockFlag::SOCK_CLOEXEC)
            .map_err(sys_err("socketpair"))?;
        for (to_queue, via) in [(queued, &b), (peer_queued, &a)] {
            for chunk in to_queue {
                let mut rest = &chunk[..];
                loop {
                    let n = send(via.as_raw_fd(), rest, MsgFlags::MSG_DONTWAIT)
                        .map_err(sys_err("refilling a socket"))?;
                    rest = &rest[n..];
                    if rest.is_empty() || ty != SockType::Stream {
                        break;
                    }
                }
            }
        }
        out.push((ino, a));
        out.push((peer, b));
    }
    Ok(out)
}

/// A TCP socket listening on `addr` again; the second value says why it could not be
/// bound or listen, if so (the socket is then returned unbound).
fn sys_socket_listen(
    addr: std::net::SocketAddr,
    backlog: u32,
) -> Result<(OwnedFd, Option<Errno>), RestartError> {
    use nix::sys::socket::{Backlog, SockaddrStorage, bind, listen, setsockopt, sockopt};
    let fd = tcp_socket(addr.is_ipv6())?;
    let _ = setsockopt(&fd, sockopt::ReuseAddr, &true);
    let sa = SockaddrStorage::from(addr);
    if let Err(e) = bind(fd.as_raw_fd(), &sa) {
        return Ok((fd, Some(e)));
    }
    let backlog =
        Backlog::new(i32::try_from(backlog.max(1)).unwrap_or(128)).unwrap_or(Backlog::MAXCONN);
    Ok(match listen(&fd, backlog) {
        Ok(()) => (fd, None),
        Err(e) => (fd, Some(e)),
    })
}

fn tcp_socket(v6: bool) -> Result<OwnedFd, RestartError> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    let family = if v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).map_err(sys_err("socket"))
}

/// A memfd for every shared anonymous object that several processes of the image map,
/// sized to hold every mapping of it. Keyed by the original shmem inode.
fn shared_memory(imgs: &[&Image]) -> Result<Vec<(u64, OwnedFd)>, RestartError> {
    // (ino, processes mapping it, bytes needed)
    let mut users: Vec<(u64, Vec<usize>, u64)> = Vec::new();
    for (i, img) in imgs.iter().enumerate() {
        for id in &img.shared_anon {
            let Some(r) = img.regions.iter().find(|r| r.start == id.start) else {
                continue;
            };
            let end = r.offset.saturating_add(r.len());
            match users.iter_mut().find(|u| u.0 == id.ino) {
                Some(u) => {
                    u.2 = u.2.max(end);
                    if !u.1.contains(&i) {
                        u.1.push(i);
                    }
                }
                None => users.push((id.ino, vec![i], end)),
            }
        }
    }
    let mut out = Vec::new();
    for (ino, procs, size) in users {
        if procs.len() < 2 {
            continue;
        }
        let fd = nix::sys::memfd::memfd_create(
            c"lifeboat-shared",
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
        )
        .map_err(sys_err("memfd_create"))?;
        nix::unistd::ftruncate(&fd, size as i64).map_err(sys_err("ftruncate of shared memory"))?;
        out.push((ino, fd));
    }
    Ok(out)
}

/// Open the files mapped by `img` (as the caller), checking that they are the files that
/// were mapped; adds to `map_fds` one descriptor per distinct `(path, writable)`.
fn open_mapped_files(
    img: &Image,
    map_fds: &mut Vec<(String, bool, OwnedFd)>,
    lift: &dyn Fn(&OwnedFd) -> Result<OwnedFd, RestartError>,
    warnings: &mut Vec<String>,
) -> Result<(), RestartError> {
    for r in &img.regions {
        let RegionKind::File {
            path: fpath,
            identity,
        } = &r.kind
        else {
            continue;
        };
        let writable = r.shared && r.prot & libc::PROT_WRITE as u32 != 0;
        if map_fds.iter().any(|(p, w, _)| p == fpath && *w == writable) {
            continue;
        }
        let flags = if writable {
            OFlag::O_RDWR
        } else {
            OFlag::O_RDONLY
        };
        let fd =
            fcntl::open(fpath.as_str(), flags | OFlag::O_CLOEXEC, Mode::empty()).map_err(|e| {
                RestartError::MappedFile {
                    start: r.start,
                    path: fpath.clone(),
                    what: format!("cannot open: {e}"),
                }
            })?;
        let md = fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(|e| {
            RestartError::MappedFile {
                start: r.start,
                path: fpath.clone(),
                what: e.to_string(),
            }
        })?;
        let now = crate::dump::identity(&md);
        if (now.dev, now.ino) != (identity.dev, identity.ino)
            || now.size != identity.size
            || now.mtime_ns != identity.mtime_ns
        {
            let what = "has changed since the checkpoint (inode, size or modification time differ)"
                .to_owned();
            if r.prot & libc::PROT_EXEC as u32 != 0 {
                return Err(RestartError::MappedFile {
                    start: r.start,
                    path: fpath.clone(),
                    what,
                });
            }
            warnings.push(format!("mapped file {fpath} {what}"));
        }
        map_fds.push((fpath.clone(), writable, lift(&fd)?));
    }
    Ok(())
}

/// Open every file description of the image as the caller.
/// Descriptors for the stub, files opened late by injection, and epoll interest lists to
/// rebuild by injection `(epoll descriptor, watches)`.
type PreparedFiles = (Vec<Prepared>, Vec<LateOpen>, Vec<(RawFd, Vec<EpollWatch>)>);

fn prepare_files(
    img: &Image,
    pipes: &[(u64, OwnedFd, OwnedFd)],
    socks: &[(u64, OwnedFd)],
    earlier: &[(i32, Vec<Option<OwnedFd>>)],
    warnings: &mut Vec<String>,
) -> Result<(PreparedFiles, Vec<Option<OwnedFd>>), RestartError> {
    let mut epolls = Vec::new();
    let mut opened: Vec<Option<OwnedFd>> = (0..img.files.len()).map(|_| None).collect();
    // Descriptions shared with an earlier process (inherited across fork) are the same
    // description again, not a second open.
    for sf in &img.shared_files {
        let theirs = earlier
            .iter()
            .find(|(pid, _)| *pid == sf.with_pid)
            .and_then(|(_, files)| files.get(sf.with_file as usize))
            .and_then(Option::as_ref);
        if let Some(fd) = theirs {
            opened[sf.file as usize] = Some(fd.try_clone().map_err(|e| RestartError::Sys {
                op: "dup of a shared file".into(),
                source: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
            })?);
        }
    }
    let mut late = Vec::new();
    let fds_of = |file: usize| {
        img.fds
            .iter()
            .filter(move |f| f.file as usize == file)
            .map(|f| f.fd)
    };
    let std_only = |file: usize| fds_of(file).all(|fd| (0..=2).contains(&fd));
    let proc_prefix = format!("/proc/{}/", img.process.pid);
    for (i, f) in img.files.iter().enumerate() {
        if opened[i].is_some() {
            continue;
        }
        let first_fd = fds_of(i).next().unwrap_or(-1);
        let open_err = |path: &str| {
            let path = path.to_owned();
            move |e: Errno| RestartError::OpenFile {
                fd: first_fd,
                path,
                source: e.into(),
            }
        };
        let fd = match &f.kind {
            FileKind::Regular { path, .. } if path.starts_with(&proc_prefix) => {
                for fd in fds_of(i) {
                    let cloexec = img.fds.iter().any(|x| x.fd == fd && x.cloexec);
                    late.push(LateOpen {
                        target: fd,
                        path: path.clone(),
                        flags: f.flags,
                        pos: f.pos,
                        cloexec,
                    });
                }
                continue;
            }
            FileKind::Regular {
                path,
                identity,
                content: Some(content),
            } => {
                let fd = nix::sys::memfd::memfd_create(
                    c"lifeboat-deleted",
                    nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
                )
                .map_err(open_err(path))?;
                write_all(&fd, content).map_err(open_err(path))?;
                let _ = identity;
                warnings.push(format!("descriptor {first_fd}: {path} was deleted; restored from the image as an anonymous file"));
                fd
            }
            FileKind::Regular {
                path,
                identity,
                content: None,
            } => {
                let fd = fcntl::open(path.as_str(), reopen_flags(f.flags), Mode::empty())
                    .map_err(open_err(path))?;
                let md =
                    fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(|e| {
                        RestartError::OpenFile {
                            fd: first_fd,
                            path: path.clone(),
                            source: e,
                        }
                    })?;
                let now = crate::dump::identity(&md);
                if (now.dev, now.ino) != (identity.dev, identity.ino) {
                    warnings.push(format!("descriptor {first_fd}: {path} was replaced by another file since the checkpoint"));
                } else if now.size != identity.size || now.mtime_ns != identity.mtime_ns {
                    warnings.push(format!("descriptor {first_fd}: {path} changed since the checkpoint (size {} -> {})", identity.size, now.size));
                }
                fd
            }
            FileKind::Directory { path } => fcntl::open(
                path.as_str(),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(open_err(path))?,
            FileKind::Device { path, .. } if is_tty_path(path) && std_only(i) => dup_own(first_fd)?,
            FileKind::Device { path, .. } => {
                match fcntl::open(path.as_str(), reopen_flags(f.flags), Mode::empty()) {
                    Ok(fd) => fd,
                    Err(e) if is_tty_path(path) => {
                        warnings.push(format!(
                            "descriptor {first_fd}: terminal {path} is gone ({e}); using /dev/null"
                        ));
                        fcntl::open("/dev/null", reopen_flags(f.flags), Mode::empty())
                            .map_err(open_err("/dev/null"))?
                    }
                    Err(e) => return Err(open_err(path)(e)),
                }
            }
            FileKind::Pipe { ino, read_end, .. } => {
                match pipes.iter().find(|(i, _, _)| i == ino) {
                    // Both ends are in the image: one pipe for every holder.
                    Some((_, r, w)) => {
                        let end = if *read_end { r } else { w };
                        end.try_clone().map_err(|e| RestartError::Sys {
                            op: "dup of a pipe end".into(),
                            source: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
                        })?
                    }
                    // A std stream into a pipe that was outside: the restarter's own.
                    None if std_only(i) => dup_own(first_fd)?,
                    None => {
                        let (r, w) =
                            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys_err("pipe2"))?;
                        if let FileKind::Pipe { data, .. } = &f.kind {
                            if *read_end {
                                write_all(&w, data).map_err(sys_err("refilling a pipe"))?;
                            }
                        }
                        warnings.push(format!("PID {}: descriptor {first_fd}: the other end of its pipe was outside the image; it is now closed", img.process.pid));
                        if *read_end { r } else { w }
                    }
                }
            }
            FileKind::EventFd { count, semaphore } => {
                sys::anonfd::eventfd(*count, *semaphore).map_err(sys_err("eventfd"))?
            }
            FileKind::TimerFd {
                clock,
                ticks,
                value,
                interval,
            } => sys::anonfd::timerfd(*clock, *value, *interval, *ticks)
                .map_err(sys_err(format!("timerfd for descriptor {first_fd}")))?,
            FileKind::SignalFd { mask } => {
                sys::anonfd::signalfd(*mask).map_err(sys_err("signalfd"))?
            }
            FileKind::UnixPair { ino, .. } => socks
                .iter()
                .find(|(i, _)| i == ino)
                .ok_or(RestartError::Tree {
                    what: format!("unix socket {ino} has no peer in the image"),
                })?
                .1
                .try_clone()
                .map_err(|e| RestartError::Sys {
                    op: "dup of a socket".into(),
                    source: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
                })?,
            FileKind::TcpListen { addr, backlog } => {
                let (fd, problem) = sys_socket_listen(*addr, *backlog)?;
                if let Some(p) = problem {
                    warnings.push(format!(
                        "PID {}: descriptor {first_fd}: cannot listen on {addr} again ({p}); it is an unbound socket now",
                        img.process.pid
                    ));
                }
                fd
            }
            FileKind::Inotify { watches } => {
                let (fd, lost) = sys::anonfd::inotify(watches)
                    .map_err(sys_err(format!("inotify for descriptor {first_fd}")))?;
                for path in lost {
                    warnings.push(format!(
                        "PID {}: descriptor {first_fd}: inotify watch of {path} not restored (gone or not allowed)",
                        img.process.pid
                    ));
                }
                fd
            }
            FileKind::TcpClosed { v6 } => {
                warnings.push(format!(
                    "PID {}: descriptor {first_fd}: a TCP connection cannot be restored; it is an unconnected socket now",
                    img.process.pid
                ));
                tcp_socket(*v6)?
            }
            FileKind::Epoll { watches } => {
                epolls.push((first_fd, watches.clone()));
                sys::anonfd::epoll().map_err(sys_err("epoll_create1"))?
            }
            FileKind::Fifo { path, data } => {
                let helper = fcntl::open(
                    path.as_str(),
                    OFlag::O_RDWR | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(open_err(path))?;
                let fd = fcntl::open(
                    format!("/proc/self/fd/{}", helper.as_raw_fd()).as_str(),
                    reopen_flags(f.flags) | OFlag::O_NONBLOCK,
                    Mode::empty(),
                )
                .map_err(open_err(path))?;
                let queued = sys::process::fionread(helper.as_fd()).unwrap_or(0);
                if queued == 0 && !data.is_empty() {
                    write_all(&helper, data).map_err(sys_err("refilling a FIFO"))?;
                }
                fd
            }
        };
        opened[i] = Some(fd);
    }
    // Status flags (O_NONBLOCK, O_APPEND) and offsets on the descriptions we created.
    let mut out = Vec::new();
    for (i, f) in img.files.iter().enumerate() {
        let Some(fd) = &opened[i] else { continue };
        let status =
            OFlag::from_bits_truncate(f.flags as i32) & (OFlag::O_NONBLOCK | OFlag::O_APPEND);
        if !matches!(&f.kind, FileKind::Device { path, .. } if is_tty_path(path))
            && !matches!(f.kind, FileKind::Pipe { .. } if std_only(i))
        {
            let _ = fcntl::fcntl(fd.as_fd(), FcntlArg::F_SETFL(status));
        }
        if matches!(f.kind, FileKind::Regular { .. }) {
            nix::unistd::lseek(fd, f.pos, nix::unistd::Whence::SeekSet).map_err(|e| {
                RestartError::OpenFile {
                    fd: fds_of(i).next().unwrap_or(-1),
                    path: format!("{:?}", f.kind),
                    source: e.into(),
                }
            })?;
        }
        for fd_entry in img.fds.iter().filter(|x| x.file as usize == i) {
            let dup = fd.try_clone().map_err(|e| RestartError::Sys {
                op: "dup".into(),
                source: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
            })?;
            out.push(Prepared {
                fd: dup,
                target: fd_entry.fd,
                cloexec: fd_entry.cloexec,
            });
        }
    }
    Ok(((out, late, epolls), opened))
}

fn write_all(fd: &OwnedFd, mut data: &[u8]) -> Result<(), Errno> {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

struct Restorer<'a> {
    pid: Pid,
    img: &'a Image,
    inj: Injector,
    scratch: u64,
    restore_pid: bool,
}

impl Restorer<'_> {
    fn call(&mut self, what: &str, nr: i64, args: &[u64]) -> Result<u64, RestartError> {
        self.inj
            .call(nr, args)?
            .map_err(|source| RestartError::Inject {
                call: what.to_owned(),
                source,
            })
    }

    fn poke(&self, addr: u64, data: &[u8]) -> Result<(), RestartError> {
        let remote = [RemoteIoVec {
            base: addr as usize,
            len: data.len(),
        }];
        let n = process_vm_writev(self.pid, &[IoSlice::new(data)], &remote)
            .map_err(|source| RestartError::WriteMemory { addr, source })?;
        if n != data.len() {
            return Err(RestartError::WriteMemory {
                addr,
                source: Errno::EFAULT,
            });
        }
        Ok(())
    }

    /// Replace the stub's address space with the image's.
    fn address_space(
        &mut self,
        map_fd: &dyn Fn(&str, bool) -> Option<RawFd>,
        shm_fd: &dyn Fn(u64) -> Option<RawFd>,
        reader: &image::Reader,
        index: usize,
        path: &Path,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(), RestartError> {
        let img = self.img;
        let stub_maps = procfs::maps(self.pid.as_raw())?;
        let ip = tracee::find_syscall_insn(self.pid, &stub_maps)?;
        self.inj.set_ip(ip);
        if let Some(rseq) =
            sys::ptrace::rseq_config(self.pid).map_err(sys_err("PTRACE_GET_RSEQ_CONFIGURATION"))?
        {
            self.call(
                "rseq(unregister)",
                nr::RSEQ,
                &[rseq.ptr, u64::from(rseq.len), 1, u64::from(rseq.sig)],
            )?;
        }
        // The kernel's special mappings: same kinds and sizes in the stub and the image.
        let specials = [
            ("[vvar]", RegionKind::Vvar),
            ("[vvar_vclock]", RegionKind::VvarVclock),
            ("[vdso]", RegionKind::Vdso),
        ];
        let mut moves = Vec::new();
        for (name, kind) in &specials {
            let now = stub_maps.iter().find(|m| m.name.as_deref() == Some(*name));
            let then = img.regions.iter().find(|r| r.kind == *kind);
            match (now, then) {
                (Some(n), Some(t)) if n.end - n.start == t.len() => {
                    moves.push((n.start, t.start, t.len(), *kind == RegionKind::Vdso))
                }
                (None, None) => {}
                (n, t) => {
                    return Err(RestartError::Vdso {
                        what: name,
                        detail: format!(
                            "here {:?} bytes, in the image {:?}",
                            n.map(|m| m.end - m.start),
                            t.map(Region::len)
                        ),
                    });
                }
            }
        }
        // Unmap everything of the stub but the special mappings.
        let mut keep: Vec<(u64, u64)> = stub_maps
            .iter()
            .filter(|m| {
                m.name
                    .as_deref()
                    .is_some_and(|n| specials.iter().any(|s| s.0 == n) || n == "[vsyscall]")
            })
            .map(|m| (m.start, m.end))
            .collect();
        keep.sort_unstable();
        let mut cursor = 0u64;
        for &(s, e) in keep.iter().filter(|(s, _)| *s < USER_TOP_47) {
            if s > cursor {
                self.call("munmap", nr::MUNMAP, &[cursor, s - cursor])?;
            }
            cursor = e;
        }
        if cursor < USER_TOP_47 {
            self.call("munmap", nr::MUNMAP, &[cursor, USER_TOP_47 - cursor])?;
        }
        // Move the special mappings through a temporary area that overlaps neither layout.
        let total: u64 = moves.iter().map(|m| m.2).sum();
        let mut busy: Vec<(u64, u64)> = img.regions.iter().map(|r| (r.start, r.end)).collect();
        busy.extend(keep.iter().copied());
        let tmp = find_gap(&busy, total).ok_or(RestartError::NoGap { size: total })?;
        let mut at = tmp;
        let mut staged = Vec::new();
        for &(from, to, len, is_vdso) in &moves {
            self.call(
                "mremap",
                nr::MREMAP,
                &[
                    from,
                    len,
                    len,
                    (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64,
                    at,
                ],
            )?;
            if is_vdso {
                self.inj.set_ip(ip - from + at);
            }
            staged.push((at, to, len, is_vdso));
            at += len;
        }
        for &(from, to, len, is_vdso) in &staged {
            self.call(
                "mremap",
                nr::MREMAP,
                &[
                    from,
                    len,
                    len,
                    (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64,
                    to,
                ],
            )?;
            if is_vdso {
                self.inj
                    .set_ip(ip - moves.iter().find(|m| m.3).map_or(0, |m| m.0) + to);
            }
        }
        busy.retain(|b| !keep.contains(b));
        self.scratch = find_gap(&busy, SCRATCH).ok_or(RestartError::NoGap { size: SCRATCH })?;
        let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as u64;
        self.call(
            "mmap(scratch)",
            nr::MMAP,
            &[self.scratch, SCRATCH, prot, flags, u64::MAX, 0],
        )?;

        // Map every region, writable while its pages are written.
        let has_pages = |r: &Region| {
            img.pagemap
                .iter()
                .any(|p| p.addr < r.end && p.addr + p.pages * PAGE_SIZE > r.start)
        };
        for r in img.regions.iter().filter(|r| !r.is_special()) {
            let filled = has_pages(r);
            let prot = if filled {
                r.prot | (libc::PROT_READ | libc::PROT_WRITE) as u32
            } else {
                r.prot
            };
            let mut flags = libc::MAP_FIXED
                | if r.shared {
                    libc::MAP_SHARED
                } else {
                    libc::MAP_PRIVATE
                };
            if r.growsdown {
                flags |= libc::MAP_GROWSDOWN;
            }
            // Shared anonymous memory that other processes of the image map too comes
            // from one memfd, so they share it again.
            let shared_obj = (r.kind == RegionKind::SharedAnon)
                .then(|| img.shared_anon.iter().find(|id| id.start == r.start))
                .flatten()
                .and_then(|id| shm_fd(id.ino));
            let fd = match &r.kind {
                RegionKind::File { path, .. } => {
                    map_fd(path, r.shared && r.prot & libc::PROT_WRITE as u32 != 0)
                        .map_or(u64::MAX, |fd| fd as u64)
                }
                RegionKind::SharedAnon if shared_obj.is_some() => {
                    shared_obj.map_or(u64::MAX, |fd| fd as u64)
                }
                _ => {
                    flags |= libc::MAP_ANONYMOUS;
                    u64::MAX
                }
            };
            let got = self.call(
                &format!("mmap of {:#x}-{:#x}", r.start, r.end),
                nr::MMAP,
                &[
                    r.start,
                    r.len(),
                    u64::from(prot),
                    flags as u64,
                    fd,
                    r.offset,
                ],
            )?;
            if got != r.start {
                return Err(RestartError::Inject {
                    call: format!("mmap of {:#x}", r.start),
                    source: Errno::EFAULT,
                });
            }
        }
        // Page contents.
        let total = img.pagemap.iter().map(|p| p.pages * PAGE_SIZE).sum();
        if let Some(mut pages) = reader.pages_of(index)? {
            let mut buf = vec![0u8; 8 << 20];
            let mut done = 0;
            for run in &img.pagemap {
                let mut addr = run.addr;
                let mut left = run.pages * PAGE_SIZE;
                while left > 0 {
                    let n = left.min(buf.len() as u64) as usize;
                    pages
                        .read_exact(&mut buf[..n])
                        .map_err(|source| RestartError::ReadPages {
                            path: path.to_owned(),
                            source,
                        })?;
                    self.poke(addr, &buf[..n])?;
                    addr += n as u64;
                    left -= n as u64;
                    done += n as u64;
                    progress(Progress { done, total });
                }
            }
            // Reaching the end verifies the checksum of the whole page stream.
            let mut rest = Vec::new();
            pages
                .read_to_end(&mut rest)
                .map_err(|source| RestartError::ReadPages {
                    path: path.to_owned(),
                    source,
                })?;
        }
        for r in img.regions.iter().filter(|r| !r.is_special()) {
            if has_pages(r) && r.prot != r.prot | (libc::PROT_READ | libc::PROT_WRITE) as u32 {
                self.call(
                    "mprotect",
                    nr::MPROTECT,
                    &[r.start, r.len(), u64::from(r.prot)],
                )?;
            }
            for (bit, advice) in [
                (advice::DONTDUMP, libc::MADV_DONTDUMP),
                (advice::DONTFORK, libc::MADV_DONTFORK),
                (advice::WIPEONFORK, libc::MADV_WIPEONFORK),
                (advice::HUGEPAGE, libc::MADV_HUGEPAGE),
                (advice::NOHUGEPAGE, libc::MADV_NOHUGEPAGE),
                (advice::MERGEABLE, libc::MADV_MERGEABLE),
            ] {
                if r.advice & bit != 0 {
                    // Advice is a hint; a kernel without THP or KSM refusing it is harmless.
                    let _ = self
                        .inj
                        .call(nr::MADVISE, &[r.start, r.len(), advice as u64])?;
                }
            }
        }
        Ok(())
    }

    /// Rebuild epoll interest lists: `epoll_ctl(EPOLL_CTL_ADD)` inside the process, once
    /// every descriptor is in place (epoll keys its entries by descriptor number).
    fn epoll_watches(
        &mut self,
        epolls: &[(RawFd, Vec<EpollWatch>)],
        warnings: &mut Vec<String>,
    ) -> Result<(), RestartError> {
        for (epfd, watches) in epolls {
            for w in watches {
                // struct epoll_event is packed on x86-64: u32 events, u64 data.
                let mut ev = [0u8; 12];
                ev[..4].copy_from_slice(&w.events.to_ne_bytes());
                ev[4..].copy_from_slice(&w.data.to_ne_bytes());
                self.poke(self.scratch, &ev)?;
                let r = self.inj.call(
                    nr::EPOLL_CTL,
                    &[
                        *epfd as u64,
                        libc::EPOLL_CTL_ADD as u64,
                        w.fd as u64,
                        self.scratch,
                    ],
                )?;
                if let Err(e) = r {
                    warnings.push(format!(
                        "PID {}: epoll descriptor {epfd}: watch of descriptor {} not restored: {e}",
                        self.pid, w.fd
                    ));
                }
            }
        }
        Ok(())
    }

    /// Re-arm interval timers and recreate POSIX timers with their IDs
    /// (`PR_TIMER_CREATE_RESTORE_IDS`, Linux 6.17), signal, value and next expiry.
    fn timers(&mut self, warnings: &mut Vec<String>) -> Result<(), RestartError> {
        let t = &self.img.timers;
        for (which, &(interval, value)) in t.itimers.iter().enumerate() {
            // A periodic timer reads 0 left between an expiry and the delivery of its
            // signal (ITIMER_REAL is re-armed by dequeue_signal(), kernel/signal.c): its
            // tick is pending, restored with the other pending signals, and the timer
            // must run on, one interval from now.
            let value = if value == (0, 0) { interval } else { value };
            if value == (0, 0) {
                continue;
            }
            let mut b = [0u8; 32];
            for (i, v) in [interval.0, interval.1, value.0, value.1]
                .iter()
                .enumerate()
            {
                b[i * 8..i * 8 + 8].copy_from_slice(&v.to_ne_bytes());
            }
            self.poke(self.scratch, &b)?;
            self.call("setitimer", nr::SETITIMER, &[which as u64, self.scratch, 0])?;
        }
        if t.posix.is_empty() {
            return Ok(());
        }
        // PR_TIMER_CREATE_RESTORE_IDS = 77, _ON = 1, _OFF = 0 (include/uapi/linux/prctl.h).
        if let Err(e) = self.inj.call(nr::PRCTL, &[77, 1])? {
            warnings.push(format!(
                "PID {}: POSIX timers not restored: this kernel cannot recreate timer IDs ({e})",
                self.pid
            ));
            return Ok(());
        }
        for pt in &t.posix {
            // struct sigevent: sigev_value (8), sigev_signo (4), sigev_notify (4), _tid (4).
            let mut ev = [0u8; 64];
            ev[..8].copy_from_slice(&pt.sival.to_ne_bytes());
            ev[8..12].copy_from_slice(&pt.signo.to_ne_bytes());
            ev[12..16].copy_from_slice(&pt.notify.to_ne_bytes());
            ev[16..20].copy_from_slice(&pt.tid.to_ne_bytes());
            self.poke(self.scratch, &ev)?;
            self.poke(self.scratch + 64, &pt.id.to_ne_bytes())?;
            let created = self.inj.call(
                nr::TIMER_CREATE,
                &[pt.clock as u64, self.scratch, self.scratch + 64],
            )?;
            if let Err(e) = created {
                warnings.push(format!(
                    "PID {}: POSIX timer {} not restored: {e}",
                    self.pid, pt.id
                ));
                continue;
            }
            if pt.value == (0, 0) {
                continue;
            }
            let mut spec = [0u8; 32];
            for (i, v) in [pt.interval.0, pt.interval.1, pt.value.0, pt.value.1]
                .iter()
                .enumerate()
            {
                spec[i * 8..i * 8 + 8].copy_from_slice(&v.to_ne_bytes());
            }
            self.poke(self.scratch + 128, &spec)?;
            self.call(
                "timer_settime",
                nr::TIMER_SETTIME,
                &[pt.id as u64, 0, self.scratch + 128, 0],
            )?;
        }
        self.call(
            "prctl(PR_TIMER_CREATE_RESTORE_IDS, off)",
            nr::PRCTL,
            &[77, 0],
        )?;
        Ok(())
    }

    /// Take the locks back, inside the process (a POSIX lock belongs to the process that
    /// sets it). A lock someone else took meanwhile is a warning, not a failure.
    fn locks(&mut self, warnings: &mut Vec<String>) -> Result<(), RestartError> {
        for l in &self.img.locks {
            let r = match l.kind {
                LockKind::Flock => {
                    let op = if l.write {
                        libc::LOCK_EX
                    } else {
                        libc::LOCK_SH
                    } | libc::LOCK_NB;
                    self.inj.call(nr::FLOCK, &[l.fd as u64, op as u64])?
                }
                LockKind::Posix | LockKind::Ofd => {
                    // struct flock (x86-64): short type, short whence, 4 bytes padding,
                    // off_t start, off_t len, pid_t pid, 4 bytes padding.
                    let mut fl = [0u8; 32];
                    let ty: i16 = if l.write {
                        libc::F_WRLCK
                    } else {
                        libc::F_RDLCK
                    } as i16;
                    fl[..2].copy_from_slice(&ty.to_ne_bytes());
                    fl[8..16].copy_from_slice(&(l.start as i64).to_ne_bytes());
                    let len = l.end.map_or(0, |e| (e - l.start + 1) as i64);
                    fl[16..24].copy_from_slice(&len.to_ne_bytes());
                    self.poke(self.scratch, &fl)?;
                    let cmd = if l.kind == LockKind::Posix {
                        libc::F_SETLK
                    } else {
                        libc::F_OFD_SETLK
                    };
                    self.inj
                        .call(nr::FCNTL, &[l.fd as u64, cmd as u64, self.scratch])?
                }
            };
            if let Err(e) = r {
                warnings.push(format!(
                    "PID {}: descriptor {}: {:?} lock not taken back: {e}",
                    self.pid, l.fd, l.kind
                ));
            }
        }
        Ok(())
    }

    fn late_opens(&mut self, late: &[LateOpen]) -> Result<(), RestartError> {
        let old = format!("/proc/{}/", self.img.process.pid);
        let new = format!("/proc/{}/", self.pid);
        for l in late {
            let path =
                CString::new(l.path.replacen(&old, &new, 1)).map_err(|_| RestartError::Sys {
                    op: "path with NUL".into(),
                    source: Errno::EINVAL,
                })?;
            self.poke(self.scratch, path.as_bytes_with_nul())?;
            let flags = reopen_flags(l.flags).bits() as u64;
            let fd = self.call(
                &format!("open of {}", l.path),
                nr::OPENAT,
                &[libc::AT_FDCWD as i64 as u64, self.scratch, flags, 0],
            )?;
            if fd != l.target as u64 {
                self.call(
                    "dup3",
                    nr::DUP3,
                    &[
                        fd,
                        l.target as u64,
                        if l.cloexec { libc::O_CLOEXEC as u64 } else { 0 },
                    ],
                )?;
                self.call("close", nr::CLOSE, &[fd])?;
            }
            self.call("lseek", nr::LSEEK, &[l.target as u64, l.pos as u64, 0])?;
        }
        Ok(())
    }

    /// `PR_SET_MM_MAP`: brk, code/data/stack bounds, arguments, environment, auxv, exe.
    fn mm(
        &mut self,
        exe_fd: Option<RawFd>,
        warnings: &mut Vec<String>,
    ) -> Result<(), RestartError> {
        let m = &self.img.process.mm;
        let auxv_addr = self.scratch + 4096;
        let mut map = Vec::with_capacity(104);
        for v in [
            m.start_code,
            m.end_code,
            m.start_data,
            m.end_data,
            m.start_brk,
            m.brk,
            m.start_stack,
            m.arg_start,
            m.arg_end,
            m.env_start,
            m.env_end,
            auxv_addr,
        ] {
            map.extend_from_slice(&v.to_ne_bytes());
        }
        let auxv: Vec<u8> = m.auxv.iter().flat_map(|v| v.to_ne_bytes()).collect();
        map.extend_from_slice(&(auxv.len() as u32).to_ne_bytes());
        map.extend_from_slice(&exe_fd.map_or(u32::MAX, |fd| fd as u32).to_ne_bytes());
        self.poke(self.scratch, &map)?;
        self.poke(auxv_addr, &auxv)?;
        let r = self.inj.call(
            nr::PRCTL,
            &[
                libc::PR_SET_MM as u64,
                libc::PR_SET_MM_MAP as u64,
                self.scratch,
                map.len() as u64,
                0,
            ],
        )?;
        if let Err(e) = r {
            warnings.push(format!(
                "memory layout (brk, arguments, exe link) not restored: PR_SET_MM_MAP: {e}"
            ));
        }
        Ok(())
    }

    fn sigactions(&mut self) -> Result<(), RestartError> {
        for sig in 1..=NSIG {
            if sig == libc::SIGKILL as u32 || sig == libc::SIGSTOP as u32 {
                continue;
            }
            let a = self
                .img
                .process
                .sigactions
                .iter()
                .find(|a| a.sig == sig)
                .copied()
                .unwrap_or(SigAction {
                    sig,
                    handler: 0,
                    flags: 0,
                    restorer: 0,
                    mask: 0,
                });
            let bytes: Vec<u8> = [a.handler, a.flags, a.restorer, a.mask]
                .iter()
                .flat_map(|v| v.to_ne_bytes())
                .collect();
            self.poke(self.scratch, &bytes)?;
            self.call(
                &format!("rt_sigaction({sig})"),
                nr::RT_SIGACTION,
                &[u64::from(sig), self.scratch, 0, 8],
            )?;
        }
        Ok(())
    }

    /// Per-thread state of the leader, then every other thread created and set up.
    fn threads(&mut self) -> Result<Vec<Pid>, RestartError> {
        let img = self.img;
        self.thread_state(&img.threads[0])?;
        let mut tids = vec![self.pid];
        for t in &img.threads[1..] {
            let flags = (libc::CLONE_VM
                | libc::CLONE_FS
                | libc::CLONE_FILES
                | libc::CLONE_SIGHAND
                | libc::CLONE_THREAD
                | libc::CLONE_SYSVSEM) as u64;
            let tid_addr = self.scratch + 512;
            let mut args = [0u64; 11];
            args[0] = flags;
            if self.restore_pid {
                args[8] = tid_addr;
                args[9] = 1;
            }
            let bytes: Vec<u8> = args.iter().flat_map(|v| v.to_ne_bytes()).collect();
            self.poke(self.scratch, &bytes)?;
            self.poke(tid_addr, &t.tid.to_ne_bytes())?;
            self.inj.clones.clear();
            let new = match self
                .inj
                .call(nr::CLONE3, &[self.scratch, bytes.len() as u64])?
            {
                // The TID as the tracer sees it (clone3 answers in the process's own PID
                // namespace, which may be a new one).
                Ok(tid) => self
                    .inj
                    .clones
                    .last()
                    .copied()
                    .unwrap_or(Pid::from_raw(tid as i32)),
                Err(Errno::EEXIST) => {
                    return Err(RestartError::PidInUse {
                        pid: t.tid,
                        holder: " (as a thread ID)".into(),
                    });
                }
                Err(source) => {
                    return Err(RestartError::Inject {
                        call: format!("clone3 of thread {}", t.tid),
                        source,
                    });
                }
            };
            tracee::wait_new_thread(new)?;
            let ip = self.inj_ip();
            let leader = std::mem::replace(&mut self.inj, Injector::new(new, ip)?);
            let r = self.thread_state(t);
            self.inj = leader;
            r?;
            tids.push(new);
        }
        Ok(tids)
    }

    fn inj_ip(&self) -> u64 {
        self.inj.ip()
    }

    /// State only a thread can set for itself.
    fn thread_state(&mut self, t: &Thread) -> Result<(), RestartError> {
        self.call(
            "set_robust_list",
            nr::SET_ROBUST_LIST,
            &[t.robust_list.0, t.robust_list.1.max(24)],
        )?;
        self.call("set_tid_address", nr::SET_TID_ADDRESS, &[t.clear_child_tid])?;
        if let Some(r) = t.rseq {
            self.call(
                "rseq",
                nr::RSEQ,
                &[r.ptr, u64::from(r.len), 0, u64::from(r.sig)],
            )?;
        }
        let alt = &t.altstack;
        if alt.flags & libc::SS_DISABLE == 0 || alt.sp != 0 {
            let flags = if alt.flags & libc::SS_DISABLE != 0 {
                libc::SS_DISABLE
            } else {
                alt.flags & (1 << 31) /* SS_AUTODISARM */
            };
            let mut b = Vec::with_capacity(24);
            b.extend_from_slice(&alt.sp.to_ne_bytes());
            b.extend_from_slice(&(flags as u32 as u64).to_ne_bytes());
            b.extend_from_slice(&alt.size.to_ne_bytes());
            self.poke(self.scratch, &b)?;
            self.call("sigaltstack", nr::SIGALTSTACK, &[self.scratch, 0])?;
        }
        let mut name = t.comm.as_bytes().to_vec();
        name.truncate(15);
        name.push(0);
        self.poke(self.scratch, &name)?;
        self.call(
            "prctl(PR_SET_NAME)",
            nr::PRCTL,
            &[libc::PR_SET_NAME as u64, self.scratch],
        )?;
        Ok(())
    }

    /// Queue the pending signals again (from the leader, so the kernel accepts any si_code).
    fn pending(&mut self, tids: &[Pid]) -> Result<(), RestartError> {
        let pid = self.pid.as_raw() as u64;
        for s in &self.img.process.shared_pending {
            self.poke(self.scratch, &s.0)?;
            self.call(
                "rt_sigqueueinfo",
                nr::RT_SIGQUEUEINFO,
                &[pid, s.signo() as u64, self.scratch],
            )?;
        }
        for (t, tid) in self.img.threads.iter().zip(tids) {
            for s in &t.pending {
                self.poke(self.scratch, &s.0)?;
                self.call(
                    "rt_tgsigqueueinfo",
                    nr::RT_TGSIGQUEUEINFO,
                    &[pid, tid.as_raw() as u64, s.signo() as u64, self.scratch],
                )?;
            }
        }
        Ok(())
    }

    /// Drop to the image's credentials in every thread (only when the caller is root).
    fn creds(&mut self, tids: &[Pid]) -> Result<(), RestartError> {
        let c = &self.img.process.creds;
        let groups: Vec<u8> = c.groups.iter().flat_map(|g| g.to_ne_bytes()).collect();
        self.poke(self.scratch, &groups)?;
        let ip = self.inj.ip();
        for &tid in tids {
            let mut inj = Injector::new(tid, ip)?;
            let mut call = |what: &str, nr: i64, args: &[u64]| -> Result<u64, RestartError> {
                inj.call(nr, args)?.map_err(|source| RestartError::Inject {
                    call: what.to_owned(),
                    source,
                })
            };
            call(
                "setgroups",
                nr::SETGROUPS,
                &[c.groups.len() as u64, self.scratch],
            )?;
            call(
                "setresgid",
                nr::SETRESGID,
                &[
                    u64::from(c.gid[0]),
                    u64::from(c.gid[1]),
                    u64::from(c.gid[2]),
                ],
            )?;
            call(
                "setresuid",
                nr::SETRESUID,
                &[
                    u64::from(c.uid[0]),
                    u64::from(c.uid[1]),
                    u64::from(c.uid[2]),
                ],
            )?;
        }
        // Changing credentials clears the dumpable flag; the process was dumpable.
        self.call(
            "prctl(PR_SET_DUMPABLE)",
            nr::PRCTL,
            &[libc::PR_SET_DUMPABLE as u64, 1],
        )?;
        Ok(())
    }
}

/// Lowest page-aligned gap of `size` bytes above 64 KiB and below the 47-bit top that
/// overlaps none of `busy`.
fn find_gap(busy: &[(u64, u64)], size: u64) -> Option<u64> {
    let mut spans: Vec<(u64, u64)> = busy.to_vec();
    spans.sort_unstable();
    // Prefer high addresses below the usual mmap base, away from the heap.
    let mut candidate = 0x2000_0000_0000u64;
    for &(s, e) in &spans {
        if e <= candidate {
            continue;
        }
        if s >= candidate + size {
            break;
        }
        candidate = e.max(candidate);
    }
    (candidate + size <= USER_TOP_47).then_some(candidate)
}
