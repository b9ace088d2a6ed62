//! Running system calls inside a stopped thread, and the scratch memory they use.
//!
//! [`Injector`] points `rip` at a `syscall` instruction that already exists in the
//! thread's `[vdso]` and steps through the syscall-enter and syscall-exit stops.
//! [`Remote`] pairs an injector with a scratch area mapped in the target for arguments
//! and results, read through `/proc/PID/mem` and written with `process_vm_writev`.

use super::lifeline::{self, Lifeline};
use super::{Stopped, TraceError, ptrace_err};
use crate::model::Regs;
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

/// The bytes of mapping `m` of `pid`.
fn read_mapping(pid: Pid, m: &MapEntry) -> Result<Vec<u8>, procfs::ProcError> {
    let path = procfs::path(pid.as_raw(), "mem");
    let read = |source| procfs::ProcError::Read {
        path: path.clone(),
        source,
    };
    let mem = File::open(&path).map_err(read)?;
    let mut buf = vec![0u8; (m.end - m.start) as usize];
    mem.read_exact_at(&mut buf, m.start).map_err(read)?;
    Ok(buf)
}

/// Find a `syscall` instruction (0f 05) in the `[vdso]` of `pid`.
pub(crate) fn find_syscall_insn(pid: Pid, maps: &[MapEntry]) -> Result<u64, TraceError> {
    let none = || TraceError::NoSyscallInsn { pid: pid.as_raw() };
    let vdso = maps
        .iter()
        .find(|m| m.name.as_deref() == Some("[vdso]"))
        .ok_or_else(none)?;
    let buf = read_mapping(pid, vdso)?;
    let at = buf
        .windows(2)
        .position(|w| w == [0x0f, 0x05])
        .ok_or_else(none)?;
    Ok(vdso.start + at as u64)
}

/// The way home of `pid`'s threads if the checkpointer dies during an injection (see
/// [`lifeline`](super::lifeline)), or why there is none: a `[vdso]` `syscall` followed
/// by `ret`, and `rt_sigreturn` code in the process's own executable mappings (its libc
/// first).
pub(crate) fn find_lifeline(pid: Pid, maps: &[MapEntry]) -> Result<Lifeline, String> {
    let vdso = maps
        .iter()
        .find(|m| m.name.as_deref() == Some("[vdso]"))
        .ok_or("it has no [vdso]")?;
    let code = read_mapping(pid, vdso).map_err(|e| e.to_string())?;
    let syscall =
        lifeline::syscall_then_ret(&code).ok_or("its [vdso] has no `syscall` followed by `ret`")?;
    let mut exec: Vec<&MapEntry> = maps
        .iter()
        .filter(|m| m.prot & libc::PROT_EXEC as u32 != 0 && m.name.as_deref() != Some("[vdso]"))
        .filter(|m| m.name.as_deref().is_some_and(|n| !n.starts_with('[')))
        .collect();
    // libc first: every glibc and musl process has __restore_rt there.
    exec.sort_by_key(|m| !m.name.as_deref().is_some_and(|n| n.contains("libc")));
    for m in exec {
        let Ok(code) = read_mapping(pid, m) else {
            continue;
        };
        if let Some(at) = lifeline::find_sigreturn(&code) {
            return Ok(Lifeline {
                syscall: vdso.start + syscall as u64,
                sigreturn: m.start + at as u64,
            });
        }
    }
    Err("its code has no `rt_sigreturn` sequence".into())
}

/// Runs system calls inside one stopped thread.
#[derive(Debug)]
pub(crate) struct Injector {
    tid: Pid,
    ip: u64,
    /// Stack pointer of the injected state: 0, or the thread's way-home frame.
    sp: u64,
    /// Where the frame was written, and the bytes it covered.
    armed: Option<(u64, Vec<u8>)>,
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
            sp: 0,
            armed: None,
            base,
            clones: Vec::new(),
        })
    }

    /// Give the thread a way home before anything is injected: if the tracer dies during
    /// any later call, the thread finishes that call and resumes with `regs` (its
    /// restart-adjusted registers), `mask` and `xstate`. Returns why it could not (the
    /// stack below the thread's red zone cannot be written, or its XSAVE area is not in
    /// the expected form); the injection then goes on unprotected.
    pub(crate) fn arm(
        &mut self,
        pid: Pid,
        line: &Lifeline,
        regs: &Regs,
        mask: u64,
        xstate: &[u8],
    ) -> Result<(), String> {
        let frame = lifeline::frame(regs, mask, xstate, line.sigreturn)
            .ok_or("its XSAVE area does not say its size")?;
        let path = procfs::path(pid.as_raw(), "mem");
        let mem = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let mut saved = vec![0u8; frame.bytes.len()];
        mem.read_exact_at(&mut saved, frame.at)
            .map_err(|e| format!("its stack at {:#x} cannot be read: {e}", frame.at))?;
        mem.write_all_at(&frame.bytes, frame.at)
            .map_err(|e| format!("its stack at {:#x} cannot be written: {e}", frame.at))?;
        self.armed = Some((frame.at, saved));
        self.sp = frame.sp;
        self.ip = line.syscall;
        Ok(())
    }

    /// Put back the stack bytes under the frame, once the thread has its own registers
    /// again (best effort: they lie below its stack pointer, where nothing lives).
    pub(crate) fn disarm(&mut self, pid: Pid) {
        if let Some((at, saved)) = self.armed.take() {
            let path = procfs::path(pid.as_raw(), "mem");
            if let Ok(mem) = std::fs::OpenOptions::new().write(true).open(path) {
                let _ = mem.write_all_at(&saved, at);
            }
        }
        self.sp = 0;
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
        r.rsp = self.sp;
        let a = |i: usize| args.get(i).copied().unwrap_or(0);
        (r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9) = (a(0), a(1), a(2), a(3), a(4), a(5));
        let tid = self.tid;
        ptrace::setregs(tid, r).map_err(ptrace_err("PTRACE_SETREGS", tid))?;
        ptrace::syscall(tid, None).map_err(ptrace_err("PTRACE_SYSCALL", tid))?;
        self.wait_syscall("syscall entry")?;
        crate::fault::point("inject");
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
        // A thread of a process stopped by job control (SIGSTOP, SIGTSTP) reports the
        // group stop once more when first resumed (PTRACE_EVENT_STOP): it is resumed
        // again, a bounded number of times, and then runs the injected call.
        let mut group_stops = 0;
        loop {
            match waitpid(tid, Some(WaitPidFlag::__WALL)) {
                Ok(WaitStatus::PtraceSyscall(_)) => return Ok(()),
                Ok(WaitStatus::PtraceEvent(_, _, ev))
                    if ev == Event::PTRACE_EVENT_STOP as i32 && group_stops < 4 =>
                {
                    group_stops += 1;
                    ptrace::syscall(tid, None).map_err(ptrace_err("PTRACE_SYSCALL", tid))?;
                }
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
