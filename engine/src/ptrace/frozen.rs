//! [`Frozen`]: every thread of one process in a ptrace stop, resumed when dropped.

use super::{Stopped, TraceError, ptrace_err};
use crate::model::Regs;
use crate::procfs;
use nix::errno::Errno;
use nix::sys::ptrace::{self, Event, Options};
use nix::sys::signal::{self, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// One frozen thread and its registers at the moment it stopped.
#[derive(Debug)]
pub(crate) struct FrozenThread {
    /// The stopped thread.
    pub thread: Stopped,
    /// Its registers when it stopped.
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
pub(crate) struct Frozen {
    pid: Pid,
    threads: Vec<FrozenThread>,
    group_stopped: bool,
    released: bool,
}

impl Frozen {
    /// Seize and interrupt every thread of `pid`, re-reading `/proc/PID/task` until no new
    /// thread appears (a stopped thread cannot create one).
    pub(crate) fn freeze(pid: Pid) -> Result<Frozen, TraceError> {
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
                .filter(|t| !frozen.threads.iter().any(|s| s.thread.tid() == *t))
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
                        let thread = Stopped::observed(tid);
                        let regs = thread.regs()?;
                        frozen.threads.push(FrozenThread { thread, regs });
                    }
                    None => continue,
                }
            }
        }
        if frozen.threads.is_empty() {
            return Err(TraceError::NoProcess { pid: pid.as_raw() });
        }
        // Leader first, then by TID, so images list threads in a stable order.
        frozen
            .threads
            .sort_by_key(|t| (t.thread.tid() != pid, t.thread.tid()));
        Ok(frozen)
    }

    /// The process ID.
    pub(crate) fn pid(&self) -> Pid {
        self.pid
    }

    /// The stopped threads, leader first.
    pub(crate) fn threads(&self) -> &[FrozenThread] {
        &self.threads
    }

    /// Whether the process was in a group stop (stopped by SIGSTOP/SIGTSTP) when frozen.
    pub(crate) fn group_stopped(&self) -> bool {
        self.group_stopped
    }

    /// Release the process and apply `after`.
    pub(crate) fn release(mut self, after: After) -> Result<(), TraceError> {
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
        if after == After::Stop || self.group_stopped {
            self.detach_all();
        } else {
            self.release_running();
        }
        if after == After::Term {
            send(Signal::SIGTERM)?;
        }
        Ok(())
    }

    /// Let every thread run on. A thread frozen inside a system call the kernel restarts
    /// is released inside it again ([`Stopped::step_into_syscall`]); if a signal came
    /// meanwhile, it gets its frozen registers back and the signal with them, so that the
    /// kernel's own restart rules apply (EINTR for `pause()`, a restart with SA_RESTART).
    fn release_running(&mut self) {
        for t in std::mem::take(&mut self.threads) {
            if !super::in_restartable_syscall(&t.regs) {
                let _ = t.thread.detach();
                continue;
            }
            match t.thread.step_into_syscall() {
                Ok(super::Entry::Signal(sig)) => {
                    let _ = t.thread.set_regs(&t.regs);
                    let _ = t.thread.detach_with(sig);
                }
                Ok(super::Entry::Gone) => {}
                _ => {
                    let _ = t.thread.detach();
                }
            }
        }
    }

    fn detach_all(&mut self) {
        for t in &self.threads {
            // A thread that vanished needs no detaching; nothing else can fail here.
            let _ = ptrace::detach(t.thread.tid(), None);
        }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if !self.released {
            if self.group_stopped {
                let _ = signal::kill(self.pid, Signal::SIGSTOP);
                self.detach_all();
            } else {
                self.release_running();
            }
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
