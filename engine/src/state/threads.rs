//! Threads: registers (and how an interrupted system call resumes), the XSAVE area,
//! signal mask, rseq and robust-list registrations, `clear_child_tid`, the alternate
//! signal stack and the thread's name; creating the threads of a restored process.

use crate::checkpoint::error::{CheckpointError, inject, read_scratch, word};
use crate::image::codec::{Ctx, ImageError};
use crate::image::wire::{Dec, Enc};
use crate::model::*;
use crate::ptrace::{self, FrozenThread, Injector, Remote, Stopped};
use crate::restart::error::{self as restart, RestartError};
use crate::state::{OptionalSection, signals};
use nix::errno::Errno;
use nix::unistd::Pid;
use std::fs;

// ---------------------------------------------------------------------------------------
// Checkpoint

/// What the injected calls of the checkpoint read of one thread, with its mask.
#[derive(Debug)]
pub(crate) struct Injected {
    /// Blocked signals before the injection blocked them all.
    pub sigmask: u64,
    /// `set_tid_address` value.
    pub clear_child_tid: u64,
    /// Alternate signal stack.
    pub altstack: AltStack,
}

/// `clear_child_tid` and the alternate signal stack, by injected calls (only the thread
/// itself can report them).
pub(crate) fn dump_injected(r: &mut Remote) -> Result<(u64, AltStack), CheckpointError> {
    let scratch = r.scratch();
    inject(
        r,
        "prctl(PR_GET_TID_ADDRESS)",
        libc::SYS_prctl,
        &[libc::PR_GET_TID_ADDRESS as u64, scratch],
    )?;
    let ctid = word(&read_scratch(r, 8)?, 0);
    inject(r, "sigaltstack", libc::SYS_sigaltstack, &[0, scratch])?;
    let b = read_scratch(r, 24)?;
    let alt = AltStack {
        sp: word(&b, 0),
        flags: word(&b, 1) as u32 as i32,
        size: word(&b, 2),
    };
    Ok((ctid, alt))
}

/// One thread's record: what ptrace and `/proc` report, plus what was injected.
pub(crate) fn dump(
    pid: i32,
    ft: &FrozenThread,
    injected: Injected,
) -> Result<Thread, CheckpointError> {
    let t = &ft.thread;
    let tid = t.tid();
    let comm = fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
        .map(|s| s.trim_end().to_owned())
        .unwrap_or_default();
    Ok(Thread {
        tid: tid.as_raw(),
        comm,
        regs: restart_regs(&ft.regs, false),
        xstate: t.xstate()?,
        sigmask: injected.sigmask,
        pending: t.pending(false)?.into_iter().map(SigInfo).collect(),
        rseq: t.rseq()?,
        robust_list: t.robust_list()?,
        clear_child_tid: injected.clear_child_tid,
        altstack: injected.altstack,
    })
}

/// Kernel-internal restart codes (`include/linux/errno.h`), seen in `rax` of a thread
/// stopped inside an interrupted system call.
const ERESTARTSYS: i64 = -512;
const ERESTARTNOINTR: i64 = -513;
const ERESTARTNOHAND: i64 = -514;
const ERESTART_RESTARTBLOCK: i64 = -516;
/// `__NR_restart_syscall` on x86-64.
const NR_RESTART_SYSCALL: u64 = libc::SYS_restart_syscall as u64;

/// Where a thread stopped inside an interrupted system call must resume so that the call
/// restarts as the kernel would restart it, as if no signal handler ran (none did).
///
/// `live` is true for the process we froze (its kernel `restart_block` still exists, so
/// `-ERESTART_RESTARTBLOCK` resumes through `restart_syscall`); in an image there is no
/// restart block, so the original call is issued again with its original arguments (a
/// relative sleep or timeout then starts over: never shorter than asked). `orig_rax` is set
/// to -1 so the kernel applies no restart logic of its own on top.
pub(crate) fn restart_regs(regs: &Regs, live: bool) -> Regs {
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

// ---------------------------------------------------------------------------------------
// Restart

/// Per-thread state of the leader, then every other thread created (clone3, with its TID
/// when PIDs are restored) and set up. Returns the new threads, in image order after the
/// leader.
pub(crate) fn create(
    r: &mut Remote,
    img: &Image,
    restore_pid: bool,
) -> Result<Vec<Stopped>, RestartError> {
    thread_state(r, &img.threads[0])?;
    let mut created = Vec::with_capacity(img.threads.len().saturating_sub(1));
    for t in &img.threads[1..] {
        let flags = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM) as u64;
        let scratch = r.scratch();
        let tid_addr = scratch + 512;
        // struct clone_args: flags first, set_tid and set_tid_size at words 8 and 9.
        let mut args = [0u64; 11];
        args[0] = flags;
        if restore_pid {
            args[8] = tid_addr;
            args[9] = 1;
        }
        let bytes: Vec<u8> = args.iter().flat_map(|v| v.to_ne_bytes()).collect();
        restart::poke(r, scratch, &bytes)?;
        restart::poke(r, tid_addr, &t.tid.to_ne_bytes())?;
        r.injector().clones.clear();
        let new = match r.call(libc::SYS_clone3, &[scratch, bytes.len() as u64])? {
            // The TID as the tracer sees it (clone3 answers in the process's own PID
            // namespace, which may be a new one).
            Ok(tid) => r
                .injector()
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
                    pid: img.process.pid,
                    call: format!("clone3 of thread {}", t.tid),
                    source,
                });
            }
        };
        let thread = ptrace::wait_new_thread(new)?;
        let ip = r.injector().ip();
        let leader = r.swap_injector(Injector::new(&thread, ip)?);
        let done = thread_state(r, t);
        r.swap_injector(leader);
        done?;
        created.push(thread);
    }
    Ok(created)
}

/// State only a thread can set for itself: robust list, `clear_child_tid`, rseq,
/// alternate signal stack, name.
fn thread_state(r: &mut Remote, t: &Thread) -> Result<(), RestartError> {
    restart::inject(
        r,
        "set_robust_list",
        libc::SYS_set_robust_list,
        &[t.robust_list.0, t.robust_list.1.max(24)],
    )?;
    restart::inject(
        r,
        "set_tid_address",
        libc::SYS_set_tid_address,
        &[t.clear_child_tid],
    )?;
    if let Some(rs) = t.rseq {
        restart::inject(
            r,
            "rseq",
            libc::SYS_rseq,
            &[rs.ptr, u64::from(rs.len), 0, u64::from(rs.sig)],
        )?;
    }
    let scratch = r.scratch();
    // Always set, also to "none": the leader is a fork of the restarter and inherits its
    // alternate stack (Rust's runtime installs one), which points into memory the restore
    // unmapped; a handler with SA_ONSTACK (every CPython handler, Go's) would then have
    // its frame built there and the process would die at its first signal.
    let alt = &t.altstack;
    let disabled = alt.flags & libc::SS_DISABLE != 0;
    let flags = if disabled {
        libc::SS_DISABLE
    } else {
        alt.flags & (1 << 31) /* SS_AUTODISARM */
    };
    let (sp, size) = if disabled { (0, 0) } else { (alt.sp, alt.size) };
    let mut b = Vec::with_capacity(24);
    b.extend_from_slice(&sp.to_ne_bytes());
    b.extend_from_slice(&(flags as u32 as u64).to_ne_bytes());
    b.extend_from_slice(&size.to_ne_bytes());
    restart::poke(r, scratch, &b)?;
    restart::inject(r, "sigaltstack", libc::SYS_sigaltstack, &[scratch, 0])?;
    let mut name = t.comm.as_bytes().to_vec();
    name.truncate(15);
    name.push(0);
    restart::poke(r, scratch, &name)?;
    restart::inject(
        r,
        "prctl(PR_SET_NAME)",
        libc::SYS_prctl,
        &[libc::PR_SET_NAME as u64, scratch],
    )?;
    Ok(())
}

/// The last step of a process's rebuild: every thread's XSAVE area, registers and mask.
pub(crate) fn set_registers(img: &Image, threads: &[&Stopped]) -> Result<(), RestartError> {
    for (t, thread) in img.threads.iter().zip(threads) {
        thread.set_xstate(&t.xstate)?;
        thread.set_regs(&t.regs)?;
        thread.set_sigmask(t.sigmask)?;
    }
    Ok(())
}

/// Let a rebuilt thread run. One that resumes at a `syscall` instruction (a call the
/// checkpoint interrupted, issued again) is first stepped into the call with every signal
/// blocked and gets its own mask only there: a signal sent to the job during the restart
/// (kept pending: stubs are born with signals blocked) or right after then interrupts the
/// call as the kernel's rules say, where one handled before the call was entered would
/// be followed by the call blocking again.
pub(crate) fn release(thread: Stopped, t: &Thread, pid: Pid) -> Result<(), RestartError> {
    let at_syscall = std::fs::File::open(format!("/proc/{pid}/mem"))
        .and_then(|mem| {
            let mut insn = [0u8; 2];
            std::os::unix::fs::FileExt::read_exact_at(&mem, &mut insn, t.regs.rip())?;
            Ok(insn == [0x0f, 0x05])
        })
        .unwrap_or(false);
    if at_syscall {
        thread.set_sigmask(u64::MAX)?;
        match thread.step_into_syscall()? {
            ptrace::Entry::Gone => return Ok(()),
            ptrace::Entry::Signal(sig) => {
                thread.set_sigmask(t.sigmask)?;
                return Ok(thread.detach_with(sig)?);
            }
            ptrace::Entry::Entered | ptrace::Entry::Stopped => thread.set_sigmask(t.sigmask)?,
        }
    }
    Ok(thread.detach()?)
}

// ---------------------------------------------------------------------------------------
// Section codecs: THREAD, THREAD_COUNT (optional)

/// The THREAD_COUNT section: how many threads the process had, so that a THREAD section
/// added to an image (a thread the process never had) is refused when it is read. Images
/// written before it have no count and are read as before.
pub(crate) const THREAD_COUNT: OptionalSection = OptionalSection {
    kind: 0x8000_000E,
    name: "THREAD_COUNT",
    encode: |image| Some((image.threads.len() as u32).to_le_bytes().to_vec()),
    decode: |data, image, _, cx| {
        let bytes: [u8; 4] = data
            .try_into()
            .map_err(|_| cx.invalid(format!("{} bytes, not 4", data.len())))?;
        let had = u32::from_le_bytes(bytes) as usize;
        if image.threads.len() != had {
            return Err(cx.invalid(format!(
                "{} THREAD sections, but process {} had {had} threads",
                image.threads.len(),
                image.process.pid
            )));
        }
        Ok(())
    },
};

pub(crate) fn enc_thread(t: &Thread) -> Vec<u8> {
    let mut e = Enc::new();
    e.i32(t.tid);
    e.str(&t.comm);
    for v in t.regs.0 {
        e.u64(v);
    }
    e.bytes(&t.xstate);
    e.u64(t.sigmask);
    signals::enc_siginfos(&mut e, &t.pending);
    e.bool(t.rseq.is_some());
    if let Some(r) = t.rseq {
        e.u64(r.ptr);
        e.u32(r.len);
        e.u32(r.sig);
    }
    e.u64(t.robust_list.0);
    e.u64(t.robust_list.1);
    e.u64(t.clear_child_tid);
    e.u64(t.altstack.sp);
    e.i32(t.altstack.flags);
    e.u64(t.altstack.size);
    e.into_vec()
}

pub(crate) fn dec_thread(data: &[u8], cx: &Ctx<'_>) -> Result<Thread, ImageError> {
    let w = cx.wire();
    let mut d = Dec::new(data);
    let mut t = Thread {
        tid: d.i32().map_err(&w)?,
        comm: d.str().map_err(&w)?.to_owned(),
        ..Thread::default()
    };
    for v in &mut t.regs.0 {
        *v = d.u64().map_err(&w)?;
    }
    t.xstate = d.bytes().map_err(&w)?.to_vec();
    t.sigmask = d.u64().map_err(&w)?;
    t.pending = signals::dec_siginfos(&mut d, cx)?;
    if d.bool().map_err(&w)? {
        t.rseq = Some(Rseq {
            ptr: d.u64().map_err(&w)?,
            len: d.u32().map_err(&w)?,
            sig: d.u32().map_err(&w)?,
        });
    }
    t.robust_list = (d.u64().map_err(&w)?, d.u64().map_err(&w)?);
    t.clear_child_tid = d.u64().map_err(&w)?;
    t.altstack = AltStack {
        sp: d.u64().map_err(&w)?,
        flags: d.i32().map_err(&w)?,
        size: d.u64().map_err(&w)?,
    };
    d.finish().map_err(&w)?;
    if t.tid <= 0 {
        return Err(cx.invalid(format!("TID {} is not valid", t.tid)));
    }
    if t.xstate.len() > crate::sys::ptrace::XSTATE_MAX || t.xstate.len() < 576 {
        return Err(cx.invalid(format!(
            "thread {}: XSAVE area of {} bytes is not valid",
            t.tid,
            t.xstate.len()
        )));
    }
    Ok(t)
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
    fn thread_sections_must_match_the_count() {
        let mut img = Image {
            meta: Meta::default(),
            process: Process::default(),
            threads: vec![Thread::default(), Thread::default()],
            ..Image::default()
        };
        let path = std::path::Path::new("img");
        let cx = Ctx {
            path,
            section: "THREAD_COUNT",
        };
        let count = (THREAD_COUNT.encode)(&img).unwrap();
        assert_eq!(count, 2u32.to_le_bytes());
        (THREAD_COUNT.decode)(&count, &mut img, &[], &cx).unwrap();
        let err = (THREAD_COUNT.decode)(&1u32.to_le_bytes(), &mut img, &[], &cx)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("2 THREAD sections, but process 0 had 1 threads"),
            "{err}"
        );
        assert!((THREAD_COUNT.decode)(&[1, 0], &mut img, &[], &cx).is_err());
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
