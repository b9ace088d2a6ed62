//! Process-level calls: the restart stub (clone3 with `set_tid`, then only
//! async-signal-safe calls on a plan made before the fork), robust futex lists, `kcmp`,
//! `prlimit` on another process, descriptor duplication, pidfds, file handles.
//!
//! nix covers the stub's session, group, descriptor, directory, mask, personality, limit
//! and signal-mask calls; raw calls remain for what it lacks (see `sys`'s header).

use super::{check, new_fd};
use libc::{c_int, c_long, pid_t};
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::personality::{self, Persona};
use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask, sigprocmask};
use nix::sys::stat::{Mode, umask};
use nix::unistd::{
    Gid, Pid, Uid, chdir, close, getpid, pause, setfsgid, setfsuid, setpgid, setsid,
};
// `sockopt_impl!` names its helper macro unqualified: both must be in scope.
use nix::{getsockopt_impl, setsockopt_impl, sockopt_impl};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

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
    /// The file-system identity to enter `cwd` with and the one to return to afterwards:
    /// when root restarts a user's image, the stub (still root) may enter only a
    /// directory the user could.
    pub cwd_as: Option<(FsIds, FsIds)>,
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

/// A file-system identity: the UID, GID and supplementary groups that the permission
/// checks of `open`, `chdir`, `stat` ... of one thread use (`setfsuid(2)`,
/// `setfsgid(2)`, and the raw `setgroups` system call, all three per thread).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsIds {
    /// File-system UID.
    pub uid: u32,
    /// File-system GID.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<libc::gid_t>,
}

/// Set this thread's supplementary groups with the raw system call, which changes the
/// calling thread only (glibc's `setgroups`, and nix's on it, change every thread of the
/// process). Allocation-free: usable in a stub.
pub fn set_thread_groups(groups: &[libc::gid_t]) -> Result<(), Errno> {
    // SAFETY: the kernel reads `groups.len()` gid_t values from `groups.as_ptr()`, a live
    // slice of exactly that many, and writes nothing.
    let ret = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    check(ret).map(drop)
}

/// Set this thread's file-system UID; `setfsuid` reports no error, so the call is made
/// twice: the second answers with the value now in force. Dropping the UID from 0 drops
/// the file capabilities (`CAP_DAC_OVERRIDE`, `CAP_DAC_READ_SEARCH`, `CAP_FOWNER` ...)
/// from the effective set; returning to 0 raises them again.
fn set_fsuid(uid: u32) -> Result<(), Errno> {
    setfsuid(Uid::from_raw(uid));
    if setfsuid(Uid::from_raw(uid)).as_raw() == uid {
        Ok(())
    } else {
        Err(Errno::EPERM)
    }
}

/// As [`set_fsuid`], for the file-system GID.
fn set_fsgid(gid: u32) -> Result<(), Errno> {
    setfsgid(Gid::from_raw(gid));
    if setfsgid(Gid::from_raw(gid)).as_raw() == gid {
        Ok(())
    } else {
        Err(Errno::EPERM)
    }
}

/// Take `ids` as this thread's file-system identity: groups and GID first (changing them
/// needs CAP_SETGID, which a file-system UID does not affect), the UID last.
/// Allocation-free: usable in a stub.
pub fn enter_fs_ids(ids: &FsIds) -> Result<(), Errno> {
    set_thread_groups(&ids.groups)?;
    set_fsgid(ids.gid)?;
    set_fsuid(ids.uid)
}

/// Return to the file-system identity `ids` (the thread's own, saved before
/// [`enter_fs_ids`]): the UID first, which gives back the file capabilities, then the GID
/// and groups. Allocation-free: usable in a stub.
pub fn leave_fs_ids(ids: &FsIds) -> Result<(), Errno> {
    set_fsuid(ids.uid)?;
    set_fsgid(ids.gid)?;
    set_thread_groups(&ids.groups)
}

/// This thread's file-system identity as it is outside [`enter_fs_ids`]: the effective
/// UID and GID and the supplementary groups.
pub fn own_fs_ids() -> Result<FsIds, Errno> {
    Ok(FsIds {
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
        groups: nix::unistd::getgroups()?
            .into_iter()
            .map(Gid::as_raw)
            .collect(),
    })
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
///
/// Stubs are born with every signal blocked (the restarter blocks them around the fork,
/// so there is no instant where one could act): a signal sent to the job while it is
/// being rebuilt stays pending, and is delivered to the restored handlers once the
/// process runs, instead of killing a stub or being lost in a ptrace stop.
pub fn spawn_stub(plan: &StubPlan) -> Result<Pid, Errno> {
    let mut old = SigSet::empty();
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&SigSet::all()), Some(&mut old))?;
    let forked = fork_with_pid(plan.set_tid, plan.namespace_init);
    if forked == Ok(0) {
        stub_main(plan)
    }
    pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None)?;
    forked.map(Pid::from_raw)
}

/// End this forked process now: `_exit(2)` (nix has no wrapper) runs none of the atexit
/// handlers, destructors or stdio flushes that belong to the parent's copy of our memory.
fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe, reads no memory of ours and never returns; the
    // stub needs none of the clean-up it skips.
    unsafe { libc::_exit(code) }
}

/// Close every descriptor of this process numbered `first` or above (`close_range(2)`,
/// which nix lacks). A stub never returns, so no `OwnedFd` in its copy of the parent's
/// memory is ever dropped and closes a number twice.
fn close_from(first: u32) {
    // SAFETY: close_range takes plain integers and reads no memory of ours; it only closes
    // descriptors of this process, and the stub uses none at or above `first` afterwards.
    unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0u32) };
}

/// Run `f` on descriptor `fd` of this process, borrowed for the call only: the stub holds
/// descriptors as numbers from its plan. Callers pass only open descriptors: the report
/// pipe (never closed before a stub's last report) or a move target just created by dup2.
fn with_fd<T>(fd: RawFd, f: impl FnOnce(BorrowedFd<'_>) -> T) -> T {
    // SAFETY: the borrow cannot outlive `f`; `fd` is open and not -1 (the callers above), and
    // nothing closes it while `f` runs (a stub is one thread running only this code).
    f(unsafe { BorrowedFd::borrow_raw(fd) })
}

/// Report `(pid, step, errno)` on the report pipe.
fn report(fd: RawFd, pid: pid_t, step: u32, errno: i32) {
    let mut msg = [0u8; 12];
    msg[..4].copy_from_slice(&pid.to_ne_bytes());
    msg[4..8].copy_from_slice(&step.to_ne_bytes());
    msg[8..].copy_from_slice(&errno.to_ne_bytes());
    // 12 bytes are one atomic pipe write; a failed write only loses the report, and the
    // restorer then times out.
    let _ = with_fd(fd, |fd| nix::unistd::write(fd, &msg));
}

/// Body of the init of a restart's PID namespace, once its children exist: keep nothing
/// open, reap every process that ends, and leave with the status of the first child (the
/// root of the image), as 128+N if it was killed by signal N.
fn namespace_init(plan: &StubPlan) -> ! {
    close_from(0);
    let root = plan.children.first().and_then(|c| c.set_tid).unwrap_or(0);
    let mut code = 0;
    loop {
        let mut status: c_int = 0;
        // SAFETY: waitpid writes one int to `status`, which is ours and alive across the
        // call. (nix's waitpid cannot report a death by a real-time signal: its WaitStatus
        // holds a `Signal`.)
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid < 0 {
            if Errno::last() == Errno::EINTR {
                continue;
            }
            // ECHILD: everyone is gone.
            exit_now(code);
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
    close_from(0);
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        // No core file.
        let _ = setrlimit(Resource::RLIMIT_CORE, 0, 0);
        // SAFETY: resetting one signal of this process to its default action installs no
        // handler. (nix's `signal` is unsafe as well and takes a `Signal`, which cannot name
        // a real-time signal.)
        unsafe { libc::signal(sig, libc::SIG_DFL) };
        let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
        // SAFETY: kill takes plain integers; this sends `sig` to ourselves. (nix's `kill`
        // takes a `Signal`, which cannot name a real-time signal.)
        unsafe { libc::kill(me, sig) };
    }
    exit_now(libc::WEXITSTATUS(status))
}

/// Body of a stub. Never returns: it waits for the restorer or exits with 127.
///
/// Only async-signal-safe calls, and no allocation: every nix call here takes integers,
/// a `BorrowedFd`, a `&[u8]` or a `&CStr` (whose `NixPath::with_nix_path` hands the string
/// over as it is), and returns `Result<_, Errno>`.
fn stub_main(plan: &StubPlan) -> ! {
    let me = getpid().as_raw();
    let fail = |step: u32, pid: pid_t| -> ! {
        report(plan.report_fd, pid, step, Errno::last_raw());
        exit_now(127)
    };
    // Session and group first: children inherit them.
    let us = Pid::from_raw(0);
    let session = match plan.session {
        StubSession::Leader => setsid().map(drop),
        StubSession::GroupLeader => setpgid(us, us),
        // The group's leader was created before us, in our session.
        StubSession::Join(pgid) => setpgid(us, Pid::from_raw(pgid)),
        StubSession::Inherit => Ok(()),
    };
    if session.is_err() {
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
                    // Failure (the child did it already) is fine.
                    let _ = setpgid(Pid::from_raw(pid), Pid::from_raw(g));
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
        // SAFETY: dup2 takes plain integers and only changes this process's descriptor
        // table; `dst` is no descriptor the stub still uses (every target is below
        // `first_free`; every source, kept descriptor and the report pipe is at or above
        // it). nix's dup2 wants `dst` as an open `OwnedFd`, and its dup2_raw does not check
        // for failure.
        if unsafe { libc::dup2(src, dst) } < 0 {
            fail(stub_step::DUP, me);
        }
        if cloexec && with_fd(dst, |d| fcntl(d, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))).is_err() {
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
            // EBADF for unused numbers is fine.
            let _ = close(fd);
        }
    }
    // Above every descriptor we keep.
    close_from((top + 1) as u32);
    let entered = match &plan.cwd_as {
        // As the image's owner: a directory that user may not enter is refused (EACCES).
        Some((user, back)) => {
            let done = enter_fs_ids(user).and_then(|()| chdir(plan.cwd.as_c_str()));
            // Back to root's identity for the rest of the rebuild; if that fails the stub
            // cannot be rebuilt and reports the step.
            done.and_then(|()| leave_fs_ids(back))
        }
        None => chdir(plan.cwd.as_c_str()),
    };
    if let Err(e) = entered {
        report(plan.report_fd, me, stub_step::CHDIR, e as i32);
        exit_now(127);
    }
    umask(Mode::from_bits_retain(plan.umask));
    if personality::set(Persona::from_bits_retain(plan.personality as c_int)).is_err() {
        fail(stub_step::PERSONALITY, me);
    }
    report(plan.report_fd, me, stub_step::READY, 0);
    loop {
        // The restorer seizes us while we wait.
        pause();
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
pub fn dup_above(fd: BorrowedFd<'_>, min: RawFd) -> Result<OwnedFd, Errno> {
    new_fd(c_long::from(fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(min))?))
}

/// Bytes waiting to be read in a pipe or FIFO (`FIONREAD`; nix has no wrapper).
pub fn fionread(fd: BorrowedFd<'_>) -> Result<usize, Errno> {
    let mut n: c_int = 0;
    // SAFETY: FIONREAD writes one int to `n`, which is writable and alive across the call;
    // `fd` is borrowed, so open.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n as *mut c_int) };
    check(c_long::from(ret))?;
    Ok(n.max(0) as usize)
}

/// A duplicate of descriptor `fd` of process `pid` (`pidfd_open` + `pidfd_getfd`, Linux
/// 5.6; nix has neither): the same open file, so a socket's queue can be peeked from here.
pub fn pidfd_getfd(pid: i32, fd: RawFd) -> Result<OwnedFd, Errno> {
    // SAFETY: pidfd_open takes plain integers and reads no memory of ours.
    let pidfd = new_fd(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // SAFETY: pidfd_getfd takes plain integers (a pidfd we own, so open) and reads no memory
    // of ours.
    new_fd(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) })
}

// `SO_PEEK_OFF`, an int socket option nix does not define, declared with nix's own
// generator, which makes `setsockopt` of it safe.
sockopt_impl!(
    /// `SO_PEEK_OFF`: where the next `MSG_PEEK` read of the queue starts.
    PeekOffset,
    SetOnly,
    libc::SOL_SOCKET,
    libc::SO_PEEK_OFF,
    i32
);

sockopt_impl!(
    /// `SO_PROTOCOL`: the socket's protocol (`IPPROTO_UDP`...).
    Protocol,
    GetOnly,
    libc::SOL_SOCKET,
    libc::SO_PROTOCOL,
    i32
);

/// A new close-on-exec socket of `family` (`AF_INET`...), `ty` (`SOCK_DGRAM`...) and
/// protocol number `protocol`: nix's `socket` names protocols by an enum that has no
/// UDP-Lite and no ICMP (ping sockets).
pub fn socket_with_protocol(family: c_int, ty: c_int, protocol: c_int) -> Result<OwnedFd, Errno> {
    // SAFETY: socket(2) takes plain integers and reads no memory of ours; `new_fd` takes
    // the descriptor it returns.
    new_fd(c_long::from(unsafe {
        libc::socket(family, ty | libc::SOCK_CLOEXEC, protocol)
    }))
}

/// `getsockopt(SO_PROTOCOL)`, which nix does not define.
pub fn socket_protocol(fd: BorrowedFd<'_>) -> Result<i32, Errno> {
    nix::sys::socket::getsockopt(&fd, Protocol)
}

/// `setsockopt(SO_PEEK_OFF)`: with an offset, MSG_PEEK reads advance through the queue;
/// -1 switches it off.
pub fn set_peek_offset(fd: BorrowedFd<'_>, offset: i32) -> Result<(), Errno> {
    nix::sys::socket::setsockopt(&fd, PeekOffset, &offset)
}

/// The path of the file behind an exported file handle (`open_by_handle_at(2)` with
/// `O_PATH`, on the mount opened from `mount_point`, which open_by_handle_at wants as a
/// real open descriptor, not an O_PATH one; needs CAP_DAC_READ_SEARCH).
pub fn path_of_handle(
    mount_point: &std::path::Path,
    handle_type: i32,
    handle: &[u8],
) -> Result<String, Errno> {
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
    // across the call, and the kernel only reads it; `mount` is ours, so open. (nix has no
    // open_by_handle_at.)
    let fd = new_fd(unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount.as_raw_fd(),
            fh.as_ptr(),
            libc::O_PATH | libc::O_CLOEXEC,
        )
    })?;
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    Ok(link.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn descriptor_calls_on_our_own_files() {
        let (r, w) = nix::unistd::pipe().unwrap();
        nix::unistd::write(&w, b"hello").unwrap();
        assert_eq!(fionread(r.as_fd()), Ok(5));

        let high = dup_above(r.as_fd(), 100).unwrap();
        assert!(high.as_raw_fd() >= 100, "{}", high.as_raw_fd());
        let flags = fcntl(&high, FcntlArg::F_GETFD).unwrap();
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        let me = Pid::this();
        assert_eq!(same_file(me, r.as_raw_fd(), me, high.as_raw_fd()), Ok(true));
        assert_eq!(same_file(me, r.as_raw_fd(), me, w.as_raw_fd()), Ok(false));

        let copy = pidfd_getfd(me.as_raw(), w.as_raw_fd()).unwrap();
        assert_eq!(same_file(me, w.as_raw_fd(), me, copy.as_raw_fd()), Ok(true));
        assert_eq!(pidfd_getfd(me.as_raw(), -1).err(), Some(Errno::EBADF));
    }

    #[test]
    fn peek_offset_is_a_socket_option() {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        let (a, _b) = socketpair(
            AddressFamily::Unix,
            SockType::Datagram,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        assert_eq!(set_peek_offset(a.as_fd(), 0), Ok(()));
        assert_eq!(set_peek_offset(a.as_fd(), -1), Ok(()));
        let (r, _w) = nix::unistd::pipe().unwrap();
        assert_eq!(set_peek_offset(r.as_fd(), 0), Err(Errno::ENOTSOCK));
    }
}
