//! Frozen processes and syscall injection.
//!
//! [`Frozen`] owns every thread of a process in a ptrace stop; registers are reachable only
//! through it, and dropping it resumes the process, so no error path leaves a tracee
//! stopped (Architecture Invariant). [`Injector`] runs one system call inside a stopped
//! thread: it points `rip` at a `syscall` instruction that already exists in the thread's
//! `[vdso]` and single-steps through the syscall-enter and syscall-exit stops.

use crate::model::{Regs, reg};
use crate::procfs::{self, MapEntry};
use libc::user_regs_struct;
use nix::errno::Errno;
use nix::sys::ptrace::{self, Event, Options};
use nix::sys::signal::{self, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::fs::File;
use std::os::unix::fs::FileExt;

/// Failures while tracing a process.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The process does not exist.
    #[error("no process with PID {pid}")]
    NoProcess {
        /// PID.
        pid: i32,
    },
    /// PTRACE_SEIZE was refused.
    #[error(
        "cannot attach to thread {tid} of PID {pid}: {source} (only the owner or root may checkpoint a process; is another tracer such as gdb or strace attached?)"
    )]
    Seize {
        /// Process.
        pid: i32,
        /// Thread.
        tid: i32,
        /// Cause.
        source: Errno,
    },
    /// A ptrace request on a stopped thread failed.
    #[error("{op} on thread {tid} failed: {source}")]
    Ptrace {
        /// What was asked.
        op: &'static str,
        /// Thread.
        tid: i32,
        /// Cause.
        source: Errno,
    },
    /// The thread exited or was killed while we held it.
    #[error("thread {tid} exited while being traced")]
    TraceeGone {
        /// Thread.
        tid: i32,
    },
    /// The thread stopped for a reason we did not ask for.
    #[error("thread {tid} stopped unexpectedly ({status}) during {op}")]
    UnexpectedStop {
        /// Thread.
        tid: i32,
        /// What we were doing.
        op: &'static str,
        /// The wait status.
        status: String,
    },
    /// No `syscall` instruction to inject through.
    #[error("PID {pid} has no [vdso] with a syscall instruction to inject system calls through")]
    NoSyscallInsn {
        /// Process.
        pid: i32,
    },
    /// Reading /proc failed.
    #[error(transparent)]
    Proc(#[from] procfs::ProcError),
}

/// Map `ESRCH` on a thread we hold to [`TraceError::TraceeGone`].
fn ptrace_err(op: &'static str, tid: Pid) -> impl Fn(Errno) -> TraceError {
    move |source| match source {
        Errno::ESRCH => TraceError::TraceeGone { tid: tid.as_raw() },
        source => TraceError::Ptrace {
            op,
            tid: tid.as_raw(),
            source,
        },
    }
}

/// Kernel register struct to our plain array, field by field in `user_regs_struct` order.
pub fn regs_from(r: &user_regs_struct) -> Regs {
    Regs([
        r.r15, r.r14, r.r13, r.r12, r.rbp, r.rbx, r.r11, r.r10, r.r9, r.r8, r.rax, r.rcx, r.rdx,
        r.rsi, r.rdi, r.orig_rax, r.rip, r.cs, r.eflags, r.rsp, r.ss, r.fs_base, r.gs_base, r.ds,
        r.es, r.fs, r.gs,
    ])
}

/// Our plain array back to the kernel register struct.
pub fn regs_to(r: &Regs) -> user_regs_struct {
    let a = &r.0;
    user_regs_struct {
        r15: a[reg::R15],
        r14: a[reg::R14],
        r13: a[reg::R13],
        r12: a[reg::R12],
        rbp: a[reg::RBP],
        rbx: a[reg::RBX],
        r11: a[reg::R11],
        r10: a[reg::R10],
        r9: a[reg::R9],
        r8: a[reg::R8],
        rax: a[reg::RAX],
        rcx: a[reg::RCX],
        rdx: a[reg::RDX],
        rsi: a[reg::RSI],
        rdi: a[reg::RDI],
        orig_rax: a[reg::ORIG_RAX],
        rip: a[reg::RIP],
        cs: a[reg::CS],
        eflags: a[reg::EFLAGS],
        rsp: a[reg::RSP],
        ss: a[reg::SS],
        fs_base: a[reg::FS_BASE],
        gs_base: a[reg::GS_BASE],
        ds: a[reg::DS],
        es: a[reg::ES],
        fs: a[reg::FS],
        gs: a[reg::GS],
    }
}

/// Kernel-internal restart codes (`include/linux/errno.h`), seen in `rax` of a thread
/// stopped inside an interrupted system call.
const ERESTARTSYS: i64 = -512;
const ERESTARTNOINTR: i64 = -513;
const ERESTARTNOHAND: i64 = -514;
const ERESTART_RESTARTBLOCK: i64 = -516;
/// `__NR_restart_syscall` on x86-64.
const NR_RESTART_SYSCALL: u64 = 219;

/// Where a thread stopped inside an interrupted system call must resume so that the call
/// restarts as the kernel would restart it, as if no signal handler ran (none did).
///
/// `live` is true for the process we froze (its kernel `restart_block` still exists, so
/// `-ERESTART_RESTARTBLOCK` resumes through `restart_syscall`); in an image there is no
/// restart block, so the original call is issued again with its original arguments (a
/// relative sleep or timeout then starts over: never shorter than asked). `orig_rax` is set
/// to -1 so the kernel applies no restart logic of its own on top.
pub fn restart_regs(regs: &Regs, live: bool) -> Regs {
    let mut r = *regs;
    let nr = r.0[reg::ORIG_RAX] as i64;
    let ret = r.0[reg::RAX] as i64;
    if nr >= 0 {
        match ret {
            ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND => {
                r.0[reg::RAX] = nr as u64;
                r.0[reg::RIP] = r.0[reg::RIP].wrapping_sub(2);
            }
            ERESTART_RESTARTBLOCK => {
                r.0[reg::RAX] = if live || nr as u64 == NR_RESTART_SYSCALL {
                    NR_RESTART_SYSCALL
                } else {
                    nr as u64
                };
                if !live && nr as u64 == NR_RESTART_SYSCALL {
                    // Restarted once already: its arguments are gone, and a fresh
                    // process has no restart block; the call returns EINTR.
                    r.0[reg::RAX] = (-i64::from(libc::EINTR)) as u64;
                } else {
                    r.0[reg::RIP] = r.0[reg::RIP].wrapping_sub(2);
                }
            }
            _ => {}
        }
    }
    r.0[reg::ORIG_RAX] = u64::MAX;
    r
}

/// One thread held in a ptrace stop.
#[derive(Debug)]
pub struct StoppedThread {
    /// Thread ID.
    pub tid: Pid,
    /// Registers at the moment it stopped.
    pub regs: Regs,
}

/// What happens to a frozen process when it is released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Resume it (the checkpoint default, `--run`).
    Run,
    /// Leave it stopped with SIGSTOP.
    Stop,
    /// Resume it and send SIGTERM.
    Term,
    /// Kill it with SIGKILL before it runs again.
    Kill,
}

/// Every thread of a process in a ptrace stop. Dropping it resumes the process.
#[derive(Debug)]
pub struct Frozen {
    pid: Pid,
    threads: Vec<StoppedThread>,
    group_stopped: bool,
    released: bool,
}

impl Frozen {
    /// Seize and interrupt every thread of `pid`, re-reading `/proc/PID/task` until no new
    /// thread appears (a stopped thread cannot create one).
    pub fn freeze(pid: Pid) -> Result<Frozen, TraceError> {
        let mut frozen = Frozen {
            pid,
            threads: Vec::new(),
            group_stopped: false,
            released: false,
        };
        loop {
            let tids = procfs::numbered(pid.as_raw(), "task").map_err(|e| {
                if e.is_gone() {
                    TraceError::NoProcess { pid: pid.as_raw() }
                } else {
                    e.into()
                }
            })?;
            let new: Vec<Pid> = tids
                .into_iter()
                .map(Pid::from_raw)
                .filter(|t| !frozen.threads.iter().any(|s| s.tid == *t))
                .collect();
            if new.is_empty() {
                break;
            }
            let mut seized = Vec::new();
            for tid in new {
                match ptrace::seize(tid, Options::PTRACE_O_TRACESYSGOOD) {
                    Ok(()) => seized.push(tid),
                    Err(Errno::ESRCH) => continue,
                    Err(source) => {
                        return Err(TraceError::Seize {
                            pid: pid.as_raw(),
                            tid: tid.as_raw(),
                            source,
                        });
                    }
                }
                match ptrace::interrupt(tid) {
                    Ok(()) | Err(Errno::ESRCH) => {}
                    Err(source) => {
                        return Err(TraceError::Ptrace {
                            op: "PTRACE_INTERRUPT",
                            tid: tid.as_raw(),
                            source,
                        });
                    }
                }
            }
            for tid in seized {
                match wait_interrupt(tid)? {
                    Some(group_stop) => {
                        frozen.group_stopped |= group_stop;
                        let regs =
                            ptrace::getregs(tid).map_err(ptrace_err("PTRACE_GETREGS", tid))?;
                        frozen.threads.push(StoppedThread {
                            tid,
                            regs: regs_from(&regs),
                        });
                    }
                    None => continue,
                }
            }
        }
        if frozen.threads.is_empty() {
            return Err(TraceError::NoProcess { pid: pid.as_raw() });
        }
        // Leader first, then by TID, so images list threads in a stable order.
        frozen.threads.sort_by_key(|t| (t.tid != pid, t.tid));
        Ok(frozen)
    }

    /// The process ID.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// The stopped threads, leader first.
    pub fn threads(&self) -> &[StoppedThread] {
        &self.threads
    }

    /// Whether the process was in a group stop (stopped by SIGSTOP/SIGTSTP) when frozen.
    pub fn group_stopped(&self) -> bool {
        self.group_stopped
    }

    /// Release the process and apply `after`.
    pub fn release(mut self, after: After) -> Result<(), TraceError> {
        self.released = true;
        let pid = self.pid;
        let send = |sig| {
            signal::kill(pid, sig).map_err(|source| TraceError::Ptrace {
                op: "kill",
                tid: pid.as_raw(),
                source,
            })
        };
        match after {
            After::Kill => {
                send(Signal::SIGKILL)?;
                wait_dead(pid);
                return Ok(());
            }
            After::Stop => send(Signal::SIGSTOP)?,
            After::Run if self.group_stopped => send(Signal::SIGSTOP)?,
            After::Run | After::Term => {}
        }
        self.detach_all();
        if after == After::Term {
            send(Signal::SIGTERM)?;
        }
        Ok(())
    }

    fn detach_all(&mut self) {
        for t in &self.threads {
            // A thread that vanished needs no detaching; nothing else can fail here.
            let _ = ptrace::detach(t.tid, None);
        }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if !self.released {
            if self.group_stopped {
                let _ = signal::kill(self.pid, Signal::SIGSTOP);
            }
            self.detach_all();
        }
    }
}

/// Wait (up to 5 s) until a killed process has exited, so that its caller can restart it
/// at once; its parent still has to reap it before the PID is free again.
fn wait_dead(pid: Pid) {
    for _ in 0..500 {
        match procfs::stat(pid.as_raw()) {
            Ok(st) if st.state != 'Z' && st.state != 'X' => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            _ => return,
        }
    }
}

/// Wait for the stop caused by PTRACE_INTERRUPT. Signals that arrive first are delivered
/// (the interrupt stays pending). Returns `Some(group_stop)` or `None` if the thread died.
fn wait_interrupt(tid: Pid) -> Result<Option<bool>, TraceError> {
    loop {
        match waitpid(tid, Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::PtraceEvent(_, sig, ev)) if ev == Event::PTRACE_EVENT_STOP as i32 => {
                return Ok(Some(sig != Signal::SIGTRAP));
            }
            Ok(WaitStatus::Stopped(_, sig)) => {
                ptrace::cont(tid, sig).map_err(ptrace_err("PTRACE_CONT", tid))?;
            }
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(Errno::ECHILD) => {
                return Ok(None);
            }
            Ok(status) => {
                return Err(TraceError::UnexpectedStop {
                    tid: tid.as_raw(),
                    op: "freeze",
                    status: format!("{status:?}"),
                });
            }
            Err(Errno::EINTR) => continue,
            Err(source) => {
                return Err(TraceError::Ptrace {
                    op: "waitpid",
                    tid: tid.as_raw(),
                    source,
                });
            }
        }
    }
}

/// Find a `syscall` instruction (0f 05) in the `[vdso]` of `pid`.
pub fn find_syscall_insn(pid: Pid, maps: &[MapEntry]) -> Result<u64, TraceError> {
    let none = || TraceError::NoSyscallInsn { pid: pid.as_raw() };
    let vdso = maps
        .iter()
        .find(|m| m.name.as_deref() == Some("[vdso]"))
        .ok_or_else(none)?;
    let mem = File::open(procfs::path(pid.as_raw(), "mem")).map_err(|source| {
        procfs::ProcError::Read {
            path: procfs::path(pid.as_raw(), "mem"),
            source,
        }
    })?;
    let mut buf = vec![0u8; (vdso.end - vdso.start) as usize];
    mem.read_exact_at(&mut buf, vdso.start)
        .map_err(|source| procfs::ProcError::Read {
            path: procfs::path(pid.as_raw(), "mem"),
            source,
        })?;
    let at = buf
        .windows(2)
        .position(|w| w == [0x0f, 0x05])
        .ok_or_else(none)?;
    Ok(vdso.start + at as u64)
}

/// Runs system calls inside one stopped thread.
#[derive(Debug)]
pub struct Injector {
    tid: Pid,
    ip: u64,
    base: user_regs_struct,
    /// Threads created by injected clone calls, in creation order.
    pub clones: Vec<Pid>,
}

impl Injector {
    /// Prepare to inject into `tid`, whose `syscall` instruction is at `ip`. The thread's
    /// current registers supply valid segment selectors; callers restore its real
    /// registers afterwards.
    pub fn new(tid: Pid, ip: u64) -> Result<Injector, TraceError> {
        let base = ptrace::getregs(tid).map_err(ptrace_err("PTRACE_GETREGS", tid))?;
        Ok(Injector {
            tid,
            ip,
            base,
            clones: Vec::new(),
        })
    }

    /// The thread injected into.
    pub fn tid(&self) -> Pid {
        self.tid
    }

    /// Address of the `syscall` instruction used.
    pub fn ip(&self) -> u64 {
        self.ip
    }

    /// Move the `syscall` instruction used (after the vdso moved).
    pub fn set_ip(&mut self, ip: u64) {
        self.ip = ip;
    }

    /// Run system call `nr` with up to six arguments; returns the raw result (a negative
    /// errno on failure).
    pub fn raw(&mut self, nr: i64, args: &[u64]) -> Result<i64, TraceError> {
        let mut r = self.base;
        r.rip = self.ip;
        r.rax = nr as u64;
        r.orig_rax = u64::MAX;
        r.rsp = 0;
        let a = |i: usize| args.get(i).copied().unwrap_or(0);
        (r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9) = (a(0), a(1), a(2), a(3), a(4), a(5));
        let tid = self.tid;
        ptrace::setregs(tid, r).map_err(ptrace_err("PTRACE_SETREGS", tid))?;
        ptrace::syscall(tid, None).map_err(ptrace_err("PTRACE_SYSCALL", tid))?;
        self.wait_syscall("syscall entry")?;
        ptrace::syscall(tid, None).map_err(ptrace_err("PTRACE_SYSCALL", tid))?;
        self.wait_syscall("syscall exit")?;
        let out = ptrace::getregs(tid).map_err(ptrace_err("PTRACE_GETREGS", tid))?;
        Ok(out.rax as i64)
    }

    /// Like [`Injector::raw`], mapping a negative result to an `Errno`.
    pub fn call(&mut self, nr: i64, args: &[u64]) -> Result<Result<u64, Errno>, TraceError> {
        let ret = self.raw(nr, args)?;
        Ok(if (-4095..0).contains(&ret) {
            Err(Errno::from_raw(-ret as i32))
        } else {
            Ok(ret as u64)
        })
    }

    fn wait_syscall(&mut self, op: &'static str) -> Result<(), TraceError> {
        let tid = self.tid;
        loop {
            match waitpid(tid, Some(WaitPidFlag::__WALL)) {
                Ok(WaitStatus::PtraceSyscall(_)) => return Ok(()),
                Ok(WaitStatus::PtraceEvent(_, _, ev)) if ev == Event::PTRACE_EVENT_CLONE as i32 => {
                    let child =
                        ptrace::getevent(tid).map_err(ptrace_err("PTRACE_GETEVENTMSG", tid))?;
                    self.clones.push(Pid::from_raw(child as i32));
                    ptrace::syscall(tid, None).map_err(ptrace_err("PTRACE_SYSCALL", tid))?;
                }
                Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => {
                    return Err(TraceError::TraceeGone { tid: tid.as_raw() });
                }
                Ok(status) => {
                    return Err(TraceError::UnexpectedStop {
                        tid: tid.as_raw(),
                        op,
                        status: format!("{status:?}"),
                    });
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::ECHILD) => return Err(TraceError::TraceeGone { tid: tid.as_raw() }),
                Err(source) => {
                    return Err(TraceError::Ptrace {
                        op: "waitpid",
                        tid: tid.as_raw(),
                        source,
                    });
                }
            }
        }
    }
}

/// Wait for a thread created by an injected clone to report its first stop.
pub fn wait_new_thread(tid: Pid) -> Result<(), TraceError> {
    loop {
        match waitpid(tid, Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::Stopped(_, _) | WaitStatus::PtraceEvent(..)) => return Ok(()),
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => {
                return Err(TraceError::TraceeGone { tid: tid.as_raw() });
            }
            Ok(status) => {
                return Err(TraceError::UnexpectedStop {
                    tid: tid.as_raw(),
                    op: "thread start",
                    status: format!("{status:?}"),
                });
            }
            Err(Errno::EINTR) => continue,
            Err(source) => {
                return Err(TraceError::Ptrace {
                    op: "waitpid",
                    tid: tid.as_raw(),
                    source,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regs(rax: i64, orig: i64, rip: u64) -> Regs {
        let mut r = Regs::default();
        r.0[reg::RAX] = rax as u64;
        r.0[reg::ORIG_RAX] = orig as u64;
        r.0[reg::RIP] = rip;
        r
    }

    #[test]
    fn restart_rules() {
        let check = |input: Regs, live: bool, rax: i64, rip: u64| {
            let out = restart_regs(&input, live);
            assert_eq!(
                (out.0[reg::RAX] as i64, out.rip(), out.0[reg::ORIG_RAX]),
                (rax, rip, u64::MAX),
                "{input:?} live={live}"
            );
        };
        check(regs(ERESTARTSYS, 0, 100), false, 0, 98); // read restarts
        check(regs(ERESTARTNOHAND, 7, 100), true, 7, 98); // poll restarts
        check(regs(ERESTART_RESTARTBLOCK, 35, 100), true, 219, 98); // live: restart_syscall
        check(regs(ERESTART_RESTARTBLOCK, 35, 100), false, 35, 98); // image: nanosleep again
        check(regs(ERESTART_RESTARTBLOCK, 219, 100), false, -4, 100); // nothing to restart
        check(regs(-4, 0, 100), false, -4, 100); // a real EINTR stays
        check(regs(ERESTARTSYS, -1, 100), false, ERESTARTSYS, 100); // not in a syscall
    }
}
