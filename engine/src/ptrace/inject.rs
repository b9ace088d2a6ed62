//! Running system calls inside a stopped thread, and the scratch memory they use.
//!
//! [`Injector`] points `rip` at a `syscall` instruction that already exists in the
//! thread's `[vdso]` and steps through the syscall-enter and syscall-exit stops.
//! [`Remote`] pairs an injector with a scratch area mapped in the target for arguments
//! and results, read through `/proc/PID/mem` and written with `process_vm_writev`.

use super::{Stopped, TraceError, ptrace_err};
use crate::procfs::{self, MapEntry};
use libc::user_regs_struct;
use nix::errno::Errno;
use nix::sys::ptrace::{self, Event};
use nix::sys::uio::{RemoteIoVec, process_vm_writev};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::fs::File;
use std::io::IoSlice;
use std::os::unix::fs::FileExt;

/// Find a `syscall` instruction (0f 05) in the `[vdso]` of `pid`.
pub(crate) fn find_syscall_insn(pid: Pid, maps: &[MapEntry]) -> Result<u64, TraceError> {
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
pub(crate) struct Injector {
    tid: Pid,
    ip: u64,
    base: user_regs_struct,
    /// Threads created by injected clone calls, in creation order.
    pub(crate) clones: Vec<Pid>,
}

impl Injector {
    /// Prepare to inject into `thread`, whose `syscall` instruction is at `ip`. The thread's
    /// current registers supply valid segment selectors; callers restore its real
    /// registers afterwards.
    pub(crate) fn new(thread: &Stopped, ip: u64) -> Result<Injector, TraceError> {
        let tid = thread.tid();
        let base = ptrace::getregs(tid).map_err(ptrace_err("PTRACE_GETREGS", tid))?;
        Ok(Injector {
            tid,
            ip,
            base,
            clones: Vec::new(),
        })
    }

    /// Address of the `syscall` instruction used.
    pub(crate) fn ip(&self) -> u64 {
        self.ip
    }

    /// Move the `syscall` instruction used (after the vdso moved).
    pub(crate) fn set_ip(&mut self, ip: u64) {
        self.ip = ip;
    }

    /// Run system call `nr` with up to six arguments; returns the raw result (a negative
    /// errno on failure).
    pub(crate) fn raw(&mut self, nr: i64, args: &[u64]) -> Result<i64, TraceError> {
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
    pub(crate) fn call(&mut self, nr: i64, args: &[u64]) -> Result<Result<u64, Errno>, TraceError> {
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

/// An [`Injector`] with scratch memory inside the target: arguments are written there
/// with `process_vm_writev`, results read back through `/proc/PID/mem` (which also reads
/// memory the process cannot).
#[derive(Debug)]
pub(crate) struct Remote {
    pid: Pid,
    inj: Injector,
    scratch: u64,
}

impl Remote {
    /// Inject into `inj`'s thread of process `pid`; the scratch area is set later.
    pub(crate) fn new(pid: Pid, inj: Injector) -> Remote {
        Remote {
            pid,
            inj,
            scratch: 0,
        }
    }

    /// The process.
    pub(crate) fn pid(&self) -> Pid {
        self.pid
    }

    /// Address of the scratch area (0 before one is mapped).
    pub(crate) fn scratch(&self) -> u64 {
        self.scratch
    }

    /// Use `addr` as the scratch area.
    pub(crate) fn set_scratch(&mut self, addr: u64) {
        self.scratch = addr;
    }

    /// The injector (to move its `syscall` instruction or read its clone events).
    pub(crate) fn injector(&mut self) -> &mut Injector {
        &mut self.inj
    }

    /// Put another injector in place (another thread of the process); returns the old one.
    pub(crate) fn swap_injector(&mut self, inj: Injector) -> Injector {
        std::mem::replace(&mut self.inj, inj)
    }

    /// Run system call `nr`; the outer error is ptrace's, the inner the call's own errno.
    pub(crate) fn call(
        &mut self,
        nr: libc::c_long,
        args: &[u64],
    ) -> Result<Result<u64, Errno>, TraceError> {
        self.inj.call(nr, args)
    }

    /// Write `data` at `addr` in the target.
    pub(crate) fn write(&self, addr: u64, data: &[u8]) -> Result<(), Errno> {
        let remote = [RemoteIoVec {
            base: addr as usize,
            len: data.len(),
        }];
        let n = process_vm_writev(self.pid, &[IoSlice::new(data)], &remote)?;
        if n != data.len() {
            return Err(Errno::EFAULT);
        }
        Ok(())
    }

    /// Read `len` bytes at `addr` in the target.
    pub(crate) fn read(&self, addr: u64, len: usize) -> std::io::Result<Vec<u8>> {
        let mem = File::open(procfs::path(self.pid.as_raw(), "mem"))?;
        let mut buf = vec![0u8; len];
        mem.read_exact_at(&mut buf, addr)?;
        Ok(buf)
    }
}
