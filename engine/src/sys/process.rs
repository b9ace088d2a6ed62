//! Process-level calls nix lacks: the restart stub (clone3 with `set_tid`), robust futex
//! lists, `kcmp`, `prlimit` on another process.

use super::check;
use libc::{c_int, c_long, pid_t};
use nix::errno::Errno;
use nix::unistd::Pid;
use std::os::fd::RawFd;

/// `KCMP_FILE` from `include/uapi/linux/kcmp.h`.
const KCMP_FILE: c_int = 0;

/// How a restart stub joins a session and process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StubSession {
    /// `setsid()`: the process was a session leader (a daemon, a shell).
    Leader,
    /// `setpgid(0, 0)`: the process led its own process group.
    GroupLeader,
    /// `setpgid(0, pgid)`: the process was in the group of an earlier-created process.
    Join(pid_t),
    /// Stay in the parent's session and group.
    Inherit,
}

/// Everything one stub does between clone3 and waiting for the restorer, decided in
/// advance so that the child runs only async-signal-safe system calls and allocates
/// nothing. A plan holds the plans of the process's children: a stub creates them (with
/// their PIDs) before it arranges its own descriptors, so they inherit every descriptor
/// the restorer prepared and keep the ones they need.
#[derive(Debug)]
pub struct StubPlan {
    /// PID to request with clone3 `set_tid`, or `None` for any free PID.
    pub set_tid: Option<pid_t>,
    /// `(source, target, cloexec)`: every source is at least `first_free` and no target is.
    pub moves: Vec<(RawFd, RawFd, bool)>,
    /// Descriptors (all at least `first_free`) the stub keeps open for the restorer.
    pub keep: Vec<RawFd>,
    /// Lowest descriptor number used by `moves` sources and `keep` (the same for a whole
    /// tree).
    pub first_free: RawFd,
    /// Working directory to enter.
    pub cwd: std::ffi::CString,
    /// File mode creation mask.
    pub umask: u32,
    /// `personality(2)` value to set.
    pub personality: u32,
    /// Session and process group to join.
    pub session: StubSession,
    /// Write end of the report pipe (shared by a whole tree): each stub writes
    /// `(pid, step, errno)` as three native-endian `u32`s, step 0 meaning "ready".
    pub report_fd: RawFd,
    /// The process's children, group leaders before the members of their groups.
    pub children: Vec<StubPlan>,
    /// This stub stands for a zombie: once set up, it reports ready and exits with this
    /// wait status (or dies of its signal), for its parent to reap.
    pub exit_status: Option<i32>,
    /// This stub is the init of a new PID namespace (created with `CLONE_NEWPID`) that
    /// holds the restored processes with their original PIDs: it creates `children`,
    /// closes every descriptor, reaps, and exits with the status of its first child.
    pub namespace_init: bool,
}

/// Steps a stub may report on `StubPlan::report_fd`.
pub mod stub_step {
    /// Set up and waiting for the restorer.
    pub const READY: u32 = 0;
    /// Moving a descriptor into place.
    pub const DUP: u32 = 1;
    /// Entering the working directory.
    pub const CHDIR: u32 = 2;
    /// Setting the personality.
    pub const PERSONALITY: u32 = 3;
    /// Becoming a session or group leader.
    pub const SESSION: u32 = 4;
    /// Creating a child (clone3 with `set_tid`); the report carries the child's PID.
    pub const CHILD: u32 = 5;
}

/// One report of a stub: `(pid, step, errno)`.
pub type StubReport = (pid_t, u32, i32);

/// Decode the 12-byte reports read from the report pipe.
pub fn parse_reports(bytes: &[u8]) -> Vec<StubReport> {
    bytes
        .chunks_exact(12)
        .map(|c| {
            let w = |i: usize| [c[i], c[i + 1], c[i + 2], c[i + 3]];
            (
                pid_t::from_ne_bytes(w(0)),
                u32::from_ne_bytes(w(4)),
                i32::from_ne_bytes(w(8)),
            )
        })
        .collect()
}

/// clone3 without `CLONE_VM` (a fork), with `set_tid` when given (the PID in the
/// caller's innermost PID namespace), in a new PID namespace when asked. Returns 0 in the
/// child.
fn fork_with_pid(set_tid: Option<pid_t>, new_pid_ns: bool) -> Result<pid_t, Errno> {
    let tid: [pid_t; 1] = [set_tid.unwrap_or(0)];
    let args = libc::clone_args {
        flags: if new_pid_ns {
            libc::CLONE_NEWPID as u64
        } else {
            0
        },
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: if set_tid.is_some() {
            tid.as_ptr() as u64
        } else {
            0
        },
        set_tid_size: u64::from(set_tid.is_some()),
        cgroup: 0,
    };
    // SAFETY: `args` is a valid, fully initialised clone_args alive across the call and
    // `tid` (which it points to) outlives it. Without CLONE_VM this is a fork: the child
    // gets a copy of our memory and, in every caller, runs only `stub_main`, which makes
    // async-signal-safe system calls on data prepared before the call and never returns.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const libc::clone_args,
            size_of::<libc::clone_args>(),
        )
    };
    Ok(check(ret)? as pid_t)
}

/// Create the stub tree described by `plan` and return the root's PID.
///
/// Every stub applies its plan, reports `READY` on the report pipe and then waits in
/// `pause()` until the restorer seizes it with ptrace. Failures are reported on the same
/// pipe; the failing stub exits with 127.
pub fn spawn_stub(plan: &StubPlan) -> Result<Pid, Errno> {
    match fork_with_pid(plan.set_tid, plan.namespace_init)? {
        0 => stub_main(plan),
        child => Ok(Pid::from_raw(child)),
    }
}

/// Report `(pid, step, errno)` on the report pipe.
fn report(fd: RawFd, pid: pid_t, step: u32, errno: i32) {
    let mut msg = [0u8; 12];
    msg[..4].copy_from_slice(&pid.to_ne_bytes());
    msg[4..8].copy_from_slice(&step.to_ne_bytes());
    msg[8..].copy_from_slice(&errno.to_ne_bytes());
    // SAFETY: `msg` is 12 readable bytes (one atomic pipe write); a failed write only
    // loses the report, and the restorer then times out.
    unsafe { libc::write(fd, msg.as_ptr().cast(), msg.len()) };
}

/// Body of the init of a restart's PID namespace, once its children exist: keep nothing
/// open, reap every process that ends, and leave with the status of the first child (the
/// root of the image), as 128+N if it was killed by signal N.
fn namespace_init(plan: &StubPlan) -> ! {
    // SAFETY: close_range only closes this process's descriptors (all of them).
    unsafe { libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) };
    let root = plan.children.first().and_then(|c| c.set_tid).unwrap_or(0);
    let mut code = 0;
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid writes one int to `status`, which is ours and alive.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid < 0 {
            if Errno::last() == Errno::EINTR {
                continue;
            }
            // ECHILD: everyone is gone.
            // SAFETY: see `stub_main`'s `fail`.
            unsafe { libc::_exit(code) }
        }
        if pid == root {
            code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            };
        }
    }
}

/// End as a zombie with `status`: report ready first (the restorer counts it), then exit
/// as the process did, without a core dump.
fn become_zombie(plan: &StubPlan, me: pid_t, status: i32) -> ! {
    report(plan.report_fd, me, stub_step::READY, 0);
    // SAFETY: close_range only closes this process's descriptors (all of them).
    unsafe { libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) };
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        let none = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `none` is a valid rlimit alive across the call: no core file.
        unsafe { libc::setrlimit(libc::RLIMIT_CORE, &none) };
        // SAFETY: resetting one signal to its default action in this process.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
        let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the set; sigprocmask then unblocks everything.
        unsafe {
            libc::sigemptyset(set.as_mut_ptr());
        }
        // SAFETY: `set` was initialised just above and lives across the call.
        unsafe { libc::sigprocmask(libc::SIG_SETMASK, set.as_ptr(), std::ptr::null_mut()) };
        // SAFETY: sending a signal to ourselves.
        unsafe { libc::kill(me, sig) };
    }
    // SAFETY: see `stub_main`'s `fail`.
    unsafe { libc::_exit(libc::WEXITSTATUS(status)) }
}

/// Body of a stub. Never returns: it waits for the restorer or exits with 127.
fn stub_main(plan: &StubPlan) -> ! {
    // SAFETY: getpid is a plain system call (glibc no longer caches it).
    let me = unsafe { libc::getpid() };
    let fail = |step: u32, pid: pid_t| -> ! {
        report(plan.report_fd, pid, step, Errno::last_raw());
        // SAFETY: _exit is async-signal-safe and ends this forked child without running
        // the parent's atexit handlers or destructors.
        unsafe { libc::_exit(127) }
    };
    // Session and group first: children inherit them.
    let ret = match plan.session {
        // SAFETY: setsid affects only this process, which leads no group yet.
        StubSession::Leader => unsafe { libc::setsid() },
        // SAFETY: setpgid on ourselves only changes our own process group.
        StubSession::GroupLeader => unsafe { libc::setpgid(0, 0) },
        // SAFETY: as above; the group's leader was created before us, in our session.
        StubSession::Join(pgid) => unsafe { libc::setpgid(0, pgid) },
        StubSession::Inherit => 0,
    };
    if ret < 0 {
        fail(stub_step::SESSION, me);
    }
    for child in &plan.children {
        match fork_with_pid(child.set_tid, false) {
            Ok(0) => stub_main(child),
            Ok(pid) => {
                // Set the child's group from here too, as shells do, so that a later
                // sibling joining that group never races the child's own setpgid.
                let pgid = match child.session {
                    StubSession::GroupLeader => Some(pid),
                    StubSession::Join(g) => Some(g),
                    _ => None,
                };
                if let Some(g) = pgid {
                    // SAFETY: setpgid on our own child; failure (it did it already) is fine.
                    unsafe { libc::setpgid(pid, g) };
                }
            }
            Err(_) => fail(stub_step::CHILD, child.set_tid.unwrap_or(0)),
        }
    }
    if plan.namespace_init {
        namespace_init(plan);
    }
    if let Some(status) = plan.exit_status {
        become_zombie(plan, me, status);
    }
    for &(src, dst, cloexec) in &plan.moves {
        // SAFETY: dup2 only manipulates this process's descriptor table.
        if unsafe { libc::dup2(src, dst) } < 0 {
            fail(stub_step::DUP, me);
        }
        // SAFETY: fcntl(F_SETFD) only changes the descriptor flag of `dst`, ours now.
        if cloexec && unsafe { libc::fcntl(dst, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
            fail(stub_step::DUP, me);
        }
    }
    // Close everything that is neither a target nor kept: below `first_free` the
    // restorer's own descriptors, above it the move sources and other processes' files.
    let is_target = |fd: RawFd| plan.moves.iter().any(|&(_, dst, _)| dst == fd);
    let keeps = |fd: RawFd| plan.keep.contains(&fd) || fd == plan.report_fd;
    let top = plan
        .keep
        .iter()
        .chain(plan.moves.iter().map(|(src, _, _)| src))
        .copied()
        .chain([plan.report_fd, plan.first_free])
        .max()
        .unwrap_or(plan.first_free);
    for fd in 0..=top {
        if !is_target(fd) && !keeps(fd) {
            // SAFETY: closing a descriptor of this process; EBADF for unused numbers is fine.
            unsafe { libc::close(fd) };
        }
    }
    // SAFETY: close_range only closes this process's descriptors above every one we keep.
    unsafe { libc::syscall(libc::SYS_close_range, (top + 1) as u32, u32::MAX, 0u32) };
    // SAFETY: `cwd` is a valid NUL-terminated string owned by our copy of `plan`.
    if unsafe { libc::chdir(plan.cwd.as_ptr()) } < 0 {
        fail(stub_step::CHDIR, me);
    }
    // SAFETY: umask only changes this process's creation mask.
    unsafe { libc::umask(plan.umask as libc::mode_t) };
    // SAFETY: personality only changes this process's execution domain flags.
    if unsafe { libc::personality(plan.personality as libc::c_ulong) } < 0 {
        fail(stub_step::PERSONALITY, me);
    }
    report(plan.report_fd, me, stub_step::READY, 0);
    loop {
        // SAFETY: pause only waits for a signal; the restorer seizes us while we wait.
        unsafe { libc::pause() };
    }
}

/// Head and length of a thread's robust futex list (`get_robust_list(2)`).
pub fn get_robust_list(tid: Pid) -> Result<(u64, u64), Errno> {
    let mut head: u64 = 0;
    let mut len: libc::size_t = 0;
    // SAFETY: both out-pointers are valid, writable and sized as the kernel expects
    // (a user pointer and a size_t), alive across the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            tid.as_raw(),
            &mut head as *mut u64,
            &mut len as *mut libc::size_t,
        )
    };
    check(ret)?;
    Ok((head, len as u64))
}

/// Whether descriptor `fd1` of `pid1` and `fd2` of `pid2` are the same open file
/// description (`kcmp(2)` with `KCMP_FILE`).
pub fn same_file(pid1: Pid, fd1: RawFd, pid2: Pid, fd2: RawFd) -> Result<bool, Errno> {
    // SAFETY: kcmp takes plain integers and reads no memory of ours.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid1.as_raw(),
            pid2.as_raw(),
            KCMP_FILE,
            fd1 as c_long,
            fd2 as c_long,
        )
    };
    Ok(check(ret)? == 0)
}

/// Set a resource limit of another process.
pub fn set_rlimit(pid: Pid, resource: u32, soft: u64, hard: u64) -> Result<(), Errno> {
    let new = libc::rlimit64 {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `new` is a readable rlimit64 alive across the call; the old limit is not wanted.
    let ret = unsafe { libc::prlimit64(pid.as_raw(), resource as _, &new, std::ptr::null_mut()) };
    check(c_long::from(ret)).map(drop)
}

/// The caller's effective UID.
pub fn geteuid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Duplicate `fd` to the lowest free number at least `min`, close-on-exec.
pub fn dup_above(
    fd: std::os::fd::BorrowedFd<'_>,
    min: RawFd,
) -> Result<std::os::fd::OwnedFd, Errno> {
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor we borrow; it reads no memory of ours.
    let raw = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, min) };
    check(c_long::from(raw))?;
    // SAFETY: `raw` is a descriptor the kernel just created for us and nobody else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) })
}

/// Bytes waiting to be read in a pipe or FIFO (`FIONREAD`).
pub fn fionread(fd: std::os::fd::BorrowedFd<'_>) -> Result<usize, Errno> {
    use std::os::fd::AsRawFd;
    let mut n: c_int = 0;
    // SAFETY: FIONREAD writes one int to `n`, which is writable and alive across the call.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n as *mut c_int) };
    check(c_long::from(ret))?;
    Ok(n.max(0) as usize)
}

/// A duplicate of descriptor `fd` of process `pid` (`pidfd_open` + `pidfd_getfd`, Linux
/// 5.6): the same open file, so a socket's queue can be peeked from here.
pub fn pidfd_getfd(pid: i32, fd: RawFd) -> Result<std::os::fd::OwnedFd, Errno> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: pidfd_open takes plain integers.
    let pidfd = check(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // SAFETY: the kernel just created `pidfd` for us and nobody else owns it.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
    // SAFETY: pidfd_getfd takes plain integers and returns a new descriptor.
    let dup = check(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) })?;
    // SAFETY: a new descriptor the kernel just created for us.
    Ok(unsafe { OwnedFd::from_raw_fd(dup as RawFd) })
}

/// `setsockopt(SO_PEEK_OFF)`: with an offset, MSG_PEEK reads advance through the queue;
/// -1 switches it off (nix has no wrapper).
pub fn set_peek_offset(fd: std::os::fd::BorrowedFd<'_>, offset: i32) -> Result<(), Errno> {
    use std::os::fd::AsRawFd;
    // SAFETY: `offset` is a readable int alive across the call, its size given exactly.
    let ret = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEEK_OFF,
            (&offset as *const i32).cast(),
            size_of::<i32>() as libc::socklen_t,
        )
    };
    check(c_long::from(ret)).map(drop)
}

/// The path of the file behind an exported file handle (`open_by_handle_at(2)` with
/// `O_PATH`, on the mount opened from `mount_point`, which open_by_handle_at wants as a
/// real open descriptor, not an O_PATH one; needs CAP_DAC_READ_SEARCH).
pub fn path_of_handle(
    mount_point: &std::path::Path,
    handle_type: i32,
    handle: &[u8],
) -> Result<String, Errno> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let mount = nix::fcntl::open(
        mount_point,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    // struct file_handle: u32 handle_bytes, i32 handle_type, then the bytes.
    let mut fh = Vec::with_capacity(8 + handle.len());
    fh.extend_from_slice(&(handle.len() as u32).to_ne_bytes());
    fh.extend_from_slice(&handle_type.to_ne_bytes());
    fh.extend_from_slice(handle);
    // SAFETY: `fh` is a complete struct file_handle (its size in its first field) alive
    // across the call; the kernel only reads it.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount.as_raw_fd(),
            fh.as_ptr(),
            libc::O_PATH | libc::O_CLOEXEC,
        )
    };
    let fd = check(fd)?;
    // SAFETY: a descriptor the kernel just created for us.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as std::os::fd::RawFd) };
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    Ok(link.to_string_lossy().into_owned())
}
