//! Signals: dispositions (sigactions) and the signals queued for the whole process or one
//! thread. Blocked masks are per thread (`threads.rs`); signalfds are anonymous inodes.

use crate::checkpoint::error::{CheckpointError, inject, read_scratch, word};
use crate::image::codec::{Ctx, ImageError};
use crate::image::wire::{Dec, Enc};
use crate::model::*;
use crate::ptrace::{Remote, Stopped};
use crate::restart::error::{self as restart, RestartError};

// ---------------------------------------------------------------------------------------
// Checkpoint

/// Every disposition but SIGKILL's and SIGSTOP's, by injected `rt_sigaction` (the kernel
/// reports them to the process only).
pub(crate) fn dump_actions(r: &mut Remote) -> Result<Vec<SigAction>, CheckpointError> {
    let scratch = r.scratch();
    let mut out = Vec::with_capacity(NSIG as usize);
    for sig in catchable() {
        inject(
            r,
            "rt_sigaction",
            libc::SYS_rt_sigaction,
            &[u64::from(sig), 0, scratch, 8],
        )?;
        // struct kernel_sigaction: handler, flags, restorer, mask.
        let b = read_scratch(r, 32)?;
        out.push(SigAction {
            sig,
            handler: word(&b, 0),
            flags: word(&b, 1),
            restorer: word(&b, 2),
            mask: word(&b, 3),
        });
    }
    Ok(out)
}

/// Signals pending for the whole process (read through its leader).
pub(crate) fn dump_shared_pending(leader: &Stopped) -> Result<Vec<SigInfo>, CheckpointError> {
    Ok(leader.pending(true)?.into_iter().map(SigInfo).collect())
}

/// Signals 1..=64 but SIGKILL and SIGSTOP, whose dispositions cannot change.
fn catchable() -> impl Iterator<Item = u32> {
    (1..=NSIG).filter(|&s| s != libc::SIGKILL as u32 && s != libc::SIGSTOP as u32)
}

// ---------------------------------------------------------------------------------------
// Restart

/// Set every disposition (those the image does not list go back to SIG_DFL).
pub(crate) fn restore_actions(r: &mut Remote, actions: &[SigAction]) -> Result<(), RestartError> {
    let scratch = r.scratch();
    for sig in catchable() {
        let a = actions
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
        restart::poke(r, scratch, &bytes)?;
        restart::inject(
            r,
            &format!("rt_sigaction({sig})"),
            libc::SYS_rt_sigaction,
            &[u64::from(sig), scratch, 0, 8],
        )?;
    }
    Ok(())
}

/// Queue the pending signals again, the process's and each thread's (from the leader, so
/// the kernel accepts any `si_code`).
pub(crate) fn restore_pending(
    r: &mut Remote,
    img: &Image,
    tids: &[nix::unistd::Pid],
) -> Result<(), RestartError> {
    let pid = r.pid().as_raw() as u64;
    let scratch = r.scratch();
    for s in &img.process.shared_pending {
        restart::poke(r, scratch, &s.0)?;
        restart::inject(
            r,
            "rt_sigqueueinfo",
            libc::SYS_rt_sigqueueinfo,
            &[pid, s.signo() as u64, scratch],
        )?;
    }
    for (t, tid) in img.threads.iter().zip(tids) {
        for s in &t.pending {
            restart::poke(r, scratch, &s.0)?;
            restart::inject(
                r,
                "rt_tgsigqueueinfo",
                libc::SYS_rt_tgsigqueueinfo,
                &[pid, tid.as_raw() as u64, s.signo() as u64, scratch],
            )?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Codec (inside PROCESS and THREAD)

/// Dispositions, as part of the PROCESS record.
pub(crate) fn enc_actions(e: &mut Enc, actions: &[SigAction]) {
    e.u64(actions.len() as u64);
    for a in actions {
        e.u32(a.sig);
        e.u64(a.handler);
        e.u64(a.flags);
        e.u64(a.restorer);
        e.u64(a.mask);
    }
}

/// Dispositions of the PROCESS record; SIGKILL and SIGSTOP are refused.
pub(crate) fn dec_actions(d: &mut Dec<'_>, cx: &Ctx<'_>) -> Result<Vec<SigAction>, ImageError> {
    let w = cx.wire();
    let n = d.count(u64::from(NSIG)).map_err(&w)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let a = SigAction {
            sig: d.u32().map_err(&w)?,
            handler: d.u64().map_err(&w)?,
            flags: d.u64().map_err(&w)?,
            restorer: d.u64().map_err(&w)?,
            mask: d.u64().map_err(&w)?,
        };
        if !(1..=NSIG).contains(&a.sig)
            || a.sig == libc::SIGKILL as u32
            || a.sig == libc::SIGSTOP as u32
        {
            return Err(cx.invalid(format!("sigaction for signal {} cannot be restored", a.sig)));
        }
        out.push(a);
    }
    Ok(out)
}

pub(crate) fn enc_siginfos(e: &mut Enc, list: &[SigInfo]) {
    e.u64(list.len() as u64);
    for s in list {
        e.bytes(&s.0);
    }
}

pub(crate) fn dec_siginfos(d: &mut Dec<'_>, cx: &Ctx<'_>) -> Result<Vec<SigInfo>, ImageError> {
    let n = d.count(1 << 16).map_err(cx.wire())?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let raw: [u8; SIGINFO_SIZE] = d
            .bytes()
            .map_err(cx.wire())?
            .try_into()
            .map_err(|_| cx.invalid("a siginfo is not 128 bytes"))?;
        let info = SigInfo(raw);
        if !(1..=NSIG as i32).contains(&info.signo()) {
            return Err(cx.invalid(format!(
                "pending signal number {} is out of range",
                info.signo()
            )));
        }
        out.push(info);
    }
    Ok(out)
}
