//! Process-level calls nix lacks: the restart stub (clone3 with `set_tid`), robust futex
//! lists, `kcmp`, `prlimit` on another process.

use super::check;
use libc::{c_int, c_long, pid_t};
use nix::errno::Errno;
use nix::unistd::Pid;
use std::ffi::CStr;
use std::os::fd::RawFd;

/// `KCMP_FILE` from `include/uapi/linux/kcmp.h`.
const KCMP_FILE: c_int = 0;

/// How the restart stub joins a session and process group before it stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StubSession {
    /// `setsid()`: the process was a session leader (a daemon).
    Leader,
    /// `setpgid(0, 0)`: the process led its own process group.
    GroupLeader,
    /// Stay in the restarter's session and group.
    Inherit,
}

/// Everything the stub does between clone3 and stopping itself, decided in advance so that
/// the child runs only async-signal-safe system calls and allocates nothing.
#[derive(Debug)]
pub struct StubPlan<'a> {
    /// PID to request with clone3 `set_tid`, or `None` for any free PID.
    pub set_tid: Option<pid_t>,
    /// `(source, target, cloexec)`: every source is at least `first_free` and no target is.
    pub moves: &'a [(RawFd, RawFd, bool)],
    /// Descriptors (all at least `first_free`) the stub keeps open for the restorer.
    pub keep: &'a [RawFd],
    /// Lowest descriptor number used by `moves` sources and `keep`.
    pub first_free: RawFd,
    /// Working directory to enter.
    pub cwd: &'a CStr,
    /// File mode creation mask.
    pub umask: u32,
    /// `personality(2)` value to set.
    pub personality: u32,
    /// Session and process group to join.
    pub session: StubSession,
    /// Write end of a pipe on which the stub reports `(step, errno)` when a step fails.
    pub error_fd: RawFd,
}

/// Steps the stub may report failing on `StubPlan::error_fd`.
pub mod stub_step {
    /// Moving a descriptor into place.
    pub const DUP: u32 = 1;
    /// Entering the working directory.
    pub const CHDIR: u32 = 2;
    /// Setting the personality.
    pub const PERSONALITY: u32 = 3;
    /// Becoming a session or group leader.
    pub const SESSION: u32 = 4;
    /// `PTRACE_TRACEME`.
    pub const TRACEME: u32 = 5;
}

/// Create the stub process with clone3 (with `set_tid` when asked) and return its PID.
///
/// The child applies `plan`, calls `PTRACE_TRACEME` and stops itself with SIGSTOP; the
/// caller then waits for that stop and rebuilds the process by ptrace.
pub fn spawn_stub(plan: &StubPlan<'_>) -> Result<Pid, Errno> {
    let set_tid: [pid_t; 1] = [plan.set_tid.unwrap_or(0)];
    let args = libc::clone_args {
        flags: 0,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: if plan.set_tid.is_some() {
            set_tid.as_ptr() as u64
        } else {
            0
        },
        set_tid_size: u64::from(plan.set_tid.is_some()),
        cgroup: 0,
    };
    // SAFETY: `args` is a valid, fully initialised clone_args alive across the call and
    // `set_tid` (which it points to) outlives it. Without CLONE_VM this is a fork: the child
    // gets a copy of our memory and runs only `stub_main`, which makes async-signal-safe
    // system calls on data prepared before the call and never returns.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const libc::clone_args,
            size_of::<libc::clone_args>(),
        )
    };
    match check(ret)? {
        0 => stub_main(plan),
        child => Ok(Pid::from_raw(child as pid_t)),
    }
}

/// Body of the stub child. Never returns: it stops under ptrace or exits with 127.
fn stub_main(plan: &StubPlan<'_>) -> ! {
    let fail = |step: u32| -> ! {
        let errno = Errno::last_raw() as u32;
        let mut msg = [0u8; 8];
        msg[..4].copy_from_slice(&step.to_ne_bytes());
        msg[4..].copy_from_slice(&errno.to_ne_bytes());
        // SAFETY: `msg` is 8 readable bytes; a failed write only loses the diagnosis.
        unsafe { libc::write(plan.error_fd, msg.as_ptr().cast(), msg.len()) };
        // SAFETY: _exit is async-signal-safe and ends this forked child without running
        // the parent's atexit handlers or destructors.
        unsafe { libc::_exit(127) }
    };
    for &(src, dst, cloexec) in plan.moves {
        // SAFETY: dup2 only manipulates this child's descriptor table.
        if unsafe { libc::dup2(src, dst) } < 0 {
            fail(stub_step::DUP);
        }
        // SAFETY: fcntl(F_SETFD) only changes the descriptor flag of `dst`, ours now.
        if cloexec && unsafe { libc::fcntl(dst, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
            fail(stub_step::DUP);
        }
    }
    // Close everything that is neither a target nor kept: below `first_free` the restarter's
    // own descriptors, above it the move sources.
    let is_target = |fd: RawFd| plan.moves.iter().any(|&(_, dst, _)| dst == fd);
    let max_keep = plan
        .keep
        .iter()
        .copied()
        .max()
        .unwrap_or(plan.first_free)
        .max(plan.error_fd);
    let max_src = plan.moves.iter().map(|&(src, _, _)| src).max().unwrap_or(0);
    let top = max_keep.max(max_src);
    for fd in 0..=top {
        if !is_target(fd) && !plan.keep.contains(&fd) && fd != plan.error_fd {
            // SAFETY: closing a descriptor of this child; EBADF for unused numbers is fine.
            unsafe { libc::close(fd) };
        }
    }
    // SAFETY: close_range only closes this child's descriptors above every one we keep.
    unsafe { libc::syscall(libc::SYS_close_range, (top + 1) as u32, u32::MAX, 0u32) };
    // SAFETY: `cwd` is a valid NUL-terminated string owned by the parent's copy of `plan`.
    if unsafe { libc::chdir(plan.cwd.as_ptr()) } < 0 {
        fail(stub_step::CHDIR);
    }
    // SAFETY: umask only changes this child's creation mask.
    unsafe { libc::umask(plan.umask as libc::mode_t) };
    // SAFETY: personality only changes this child's execution domain flags.
    if unsafe { libc::personality(plan.personality as libc::c_ulong) } < 0 {
        fail(stub_step::PERSONALITY);
    }
    match plan.session {
        StubSession::Leader => {
            // SAFETY: setsid affects only this child, which is not a group leader yet.
            if unsafe { libc::setsid() } < 0 {
                fail(stub_step::SESSION);
            }
        }
        StubSession::GroupLeader => {
            // SAFETY: setpgid(0, 0) makes this child the leader of a new group.
            if unsafe { libc::setpgid(0, 0) } < 0 {
                fail(stub_step::SESSION);
            }
        }
        StubSession::Inherit => {}
    }
    // SAFETY: PTRACE_TRACEME takes no pointers; our parent becomes the tracer.
    if unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0usize, 0usize) } < 0 {
        fail(stub_step::TRACEME);
    }
    // SAFETY: getpid is a plain system call (glibc no longer caches it).
    let me = unsafe { libc::getpid() };
    // SAFETY: stopping ourselves; the tracer takes over from this signal-delivery-stop.
    unsafe { libc::kill(me, libc::SIGSTOP) };
    // Only reached if the tracer let us run on: nothing sensible to do.
    // SAFETY: see `fail`.
    unsafe { libc::_exit(127) }
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
