//! ptrace: freezing processes, and the handle through which stopped threads are touched.
//!
//! [`Stopped`] is a thread known to be in a ptrace stop of ours: its registers, XSAVE area,
//! signal mask, queued signals and rseq/robust-list registrations are reachable only
//! through it, so code cannot touch the registers of a running thread by mistake. A
//! `Stopped` comes from [`Frozen::freeze`] (checkpoint), [`seize_stopped`] (a restart stub)
//! or [`wait_new_thread`] (a thread a restart created by an injected clone3).
//! [`Frozen`] holds every thread of one process and resumes it when dropped, so no error
//! path leaves a tracee stopped (Architecture Invariant). [`Injector`] runs one system
//! call inside a stopped thread.

mod frozen;
mod inject;
mod lifeline;

pub use frozen::After;
pub(crate) use frozen::{Frozen, FrozenThread};
pub(crate) use inject::{Injector, Remote, find_lifeline, find_syscall_insn};
pub(crate) use lifeline::Lifeline;

use crate::model::{Regs, Rseq, SIGINFO_SIZE, reg};
use crate::procfs;
use crate::sys;
use libc::user_regs_struct;
use nix::errno::Errno;
use nix::sys::ptrace::{self, Options};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

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
    /// A stop we wait for did not come in time.
    #[error("thread {tid}: no {op} within {secs} s")]
    Timeout {
        /// Thread.
        tid: i32,
        /// The stop waited for.
        op: &'static str,
        /// The deadline, in seconds.
        secs: u64,
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
pub(crate) fn ptrace_err(op: &'static str, tid: Pid) -> impl Fn(Errno) -> TraceError {
    move |source| match source {
        Errno::ESRCH => TraceError::TraceeGone { tid: tid.as_raw() },
        source => TraceError::Ptrace {
            op,
            tid: tid.as_raw(),
            source,
        },
    }
}

/// A thread in a ptrace stop of ours. Not `Clone`: one handle per stopped thread, made
/// only by this module when the stop has been observed.
#[derive(Debug)]
pub(crate) struct Stopped {
    tid: Pid,
}

impl Stopped {
    /// Wrap a thread whose ptrace stop was just observed by this tracer.
    fn observed(tid: Pid) -> Stopped {
        Stopped { tid }
    }

    /// Thread ID.
    pub(crate) fn tid(&self) -> Pid {
        self.tid
    }

    /// General registers.
    pub(crate) fn regs(&self) -> Result<Regs, TraceError> {
        ptrace::getregs(self.tid)
            .map(|r| regs_from(&r))
            .map_err(ptrace_err("PTRACE_GETREGS", self.tid))
    }

    /// Set the general registers.
    pub(crate) fn set_regs(&self, regs: &Regs) -> Result<(), TraceError> {
        ptrace::setregs(self.tid, regs_to(regs)).map_err(ptrace_err("PTRACE_SETREGS", self.tid))
    }

    /// The XSAVE area (x87, SSE, AVX, AVX-512, PKRU ...).
    pub(crate) fn xstate(&self) -> Result<Vec<u8>, TraceError> {
        sys::ptrace::get_xstate(self.tid)
            .map_err(ptrace_err("PTRACE_GETREGSET(NT_X86_XSTATE)", self.tid))
    }

    /// Set the XSAVE area; the kernel validates its header.
    pub(crate) fn set_xstate(&self, xstate: &[u8]) -> Result<(), TraceError> {
        sys::ptrace::set_xstate(self.tid, xstate)
            .map_err(ptrace_err("PTRACE_SETREGSET(NT_X86_XSTATE)", self.tid))
    }

    /// Blocked signals (bit N-1 for signal N).
    pub(crate) fn sigmask(&self) -> Result<u64, TraceError> {
        sys::ptrace::get_sigmask(self.tid).map_err(ptrace_err("PTRACE_GETSIGMASK", self.tid))
    }

    /// Set the blocked signals.
    pub(crate) fn set_sigmask(&self, mask: u64) -> Result<(), TraceError> {
        sys::ptrace::set_sigmask(self.tid, mask).map_err(ptrace_err("PTRACE_SETSIGMASK", self.tid))
    }

    /// Queued signals, not dequeued: the thread's own, or the whole process's when `shared`.
    pub(crate) fn pending(&self, shared: bool) -> Result<Vec<[u8; SIGINFO_SIZE]>, TraceError> {
        sys::ptrace::peek_siginfo(self.tid, shared)
            .map_err(ptrace_err("PTRACE_PEEKSIGINFO", self.tid))
    }

    /// The rseq registration, if any.
    pub(crate) fn rseq(&self) -> Result<Option<Rseq>, TraceError> {
        let r = sys::ptrace::rseq_config(self.tid)
            .map_err(ptrace_err("PTRACE_GET_RSEQ_CONFIGURATION", self.tid))?;
        Ok(r.map(|r| Rseq {
            ptr: r.ptr,
            len: r.len,
            sig: r.sig,
        }))
    }

    /// Head and length of the robust futex list.
    pub(crate) fn robust_list(&self) -> Result<(u64, u64), TraceError> {
        sys::process::get_robust_list(self.tid).map_err(ptrace_err("get_robust_list", self.tid))
    }

    /// Let the thread go.
    pub(crate) fn detach(self) -> Result<(), TraceError> {
        ptrace::detach(self.tid, None).map_err(ptrace_err("PTRACE_DETACH", self.tid))
    }

    /// Let the thread go with signal `sig` delivered as it resumes.
    pub(crate) fn detach_with(self, sig: i32) -> Result<(), TraceError> {
        sys::ptrace::detach_with(self.tid, sig).map_err(ptrace_err("PTRACE_DETACH", self.tid))
    }

    /// Run the thread, whose `rip` is at a `syscall` instruction, until it is inside that
    /// call (its syscall-entry stop), so that it is released *in* the call: a signal that
    /// arrives afterwards interrupts the call as the kernel's restart rules say (EINTR,
    /// or a restart with SA_RESTART), where one handled just before it would have been
    /// followed by the call blocking again (a lost wakeup, in `pause()` for instance).
    pub(crate) fn step_into_syscall(&self) -> Result<Entry, TraceError> {
        ptrace::syscall(self.tid, None).map_err(ptrace_err("PTRACE_SYSCALL", self.tid))?;
        loop {
            let status = match sys::ptrace::wait_status(self.tid) {
                Ok(s) => s,
                Err(Errno::EINTR) => continue,
                Err(Errno::ECHILD) => return Ok(Entry::Gone),
                Err(source) => {
                    return Err(TraceError::Ptrace {
                        op: "waitpid",
                        tid: self.tid.as_raw(),
                        source,
                    });
                }
            };
            if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
                return Ok(Entry::Gone);
            }
            if !libc::WIFSTOPPED(status) {
                continue;
            }
            let sig = libc::WSTOPSIG(status);
            return Ok(if sig == libc::SIGTRAP | 0x80 {
                Entry::Entered
            } else if status >> 16 != 0 {
                // A ptrace event (a group stop, an interrupt): nothing to deliver.
                Entry::Stopped
            } else {
                Entry::Signal(sig)
            });
        }
    }
}

/// Where [`Stopped::step_into_syscall`] left the thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    /// Inside the call, at its syscall-entry stop.
    Entered,
    /// In a signal-delivery stop before the call: the signal was pending.
    Signal(i32),
    /// In another ptrace stop.
    Stopped,
    /// Gone.
    Gone,
}

/// Whether `regs` are those of a thread stopped inside a system call that the kernel
/// will restart (`-ERESTARTSYS`, `-ERESTARTNOINTR`, `-ERESTARTNOHAND`,
/// `-ERESTART_RESTARTBLOCK` in `rax`, the call in `orig_rax`).
pub(crate) fn in_restartable_syscall(regs: &Regs) -> bool {
    (regs.0[reg::ORIG_RAX] as i64) >= 0 && (-516..=-512).contains(&(regs.0[reg::RAX] as i64))
}

/// How long a restart waits for a stub or a new thread to stop: they stop at once.
const STOP_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Wait until `tid` reports something (a stop, or its end), for at most [`STOP_DEADLINE`];
/// `op` names the stop in the error.
fn wait_reported(tid: Pid, op: &'static str) -> Result<WaitStatus, TraceError> {
    let deadline = std::time::Instant::now() + STOP_DEADLINE;
    loop {
        match waitpid(tid, Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => {}
            Ok(status) => return Ok(status),
            Err(Errno::ECHILD) => return Err(TraceError::TraceeGone { tid: tid.as_raw() }),
            Err(source) => {
                return Err(TraceError::Ptrace {
                    op: "waitpid",
                    tid: tid.as_raw(),
                    source,
                });
            }
        }
        if std::time::Instant::now() > deadline {
            return Err(TraceError::Timeout {
                tid: tid.as_raw(),
                op,
                secs: STOP_DEADLINE.as_secs(),
            });
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

/// Seize a process (a restart stub waiting in `pause()`), interrupt it and wait for the
/// stop; it is traced with clone events, and killed if the tracer dies.
pub(crate) fn seize_stopped(pid: Pid) -> Result<Stopped, TraceError> {
    ptrace::seize(
        pid,
        Options::PTRACE_O_TRACESYSGOOD | Options::PTRACE_O_TRACECLONE | Options::PTRACE_O_EXITKILL,
    )
    .map_err(ptrace_err("PTRACE_SEIZE", pid))?;
    ptrace::interrupt(pid).map_err(ptrace_err("PTRACE_INTERRUPT", pid))?;
    match wait_reported(pid, "stop after PTRACE_INTERRUPT")? {
        WaitStatus::PtraceEvent(..) | WaitStatus::Stopped(..) => Ok(Stopped::observed(pid)),
        _ => Err(TraceError::TraceeGone { tid: pid.as_raw() }),
    }
}

/// Wait for a thread created by an injected clone to report its first stop.
pub(crate) fn wait_new_thread(tid: Pid) -> Result<Stopped, TraceError> {
    match wait_reported(tid, "first stop of the new thread")? {
        WaitStatus::Stopped(_, _) | WaitStatus::PtraceEvent(..) => Ok(Stopped::observed(tid)),
        WaitStatus::Exited(..) | WaitStatus::Signaled(..) => {
            Err(TraceError::TraceeGone { tid: tid.as_raw() })
        }
        status => Err(TraceError::UnexpectedStop {
            tid: tid.as_raw(),
            op: "thread start",
            status: format!("{status:?}"),
        }),
    }
}

/// Kernel register struct to our plain array, field by field in `user_regs_struct` order.
fn regs_from(r: &user_regs_struct) -> Regs {
    Regs([
        r.r15, r.r14, r.r13, r.r12, r.rbp, r.rbx, r.r11, r.r10, r.r9, r.r8, r.rax, r.rcx, r.rdx,
        r.rsi, r.rdi, r.orig_rax, r.rip, r.cs, r.eflags, r.rsp, r.ss, r.fs_base, r.gs_base, r.ds,
        r.es, r.fs, r.gs,
    ])
}

/// Our plain array back to the kernel register struct.
fn regs_to(r: &Regs) -> user_regs_struct {
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
