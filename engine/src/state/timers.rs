//! Timers: the three interval timers (setitimer/alarm) and POSIX timers (timer_create),
//! read by injected calls and recreated with their IDs. Timerfds are anonymous inodes.

use crate::checkpoint::error::{CheckpointError, inject, read_scratch, word};
use crate::image::codec::{Ctx, ImageError};
use crate::image::wire::{Dec, Enc};
use crate::model::*;
use crate::ptrace::Remote;
use crate::restart::error::{self as restart, RestartError};
use crate::state::OptionalSection;
use crate::warning::{Warning, WarningKind};

// ---------------------------------------------------------------------------------------
// Checkpoint

/// The interval timers, and the POSIX timers `/proc/PID/timers` listed, with their times
/// (injected `getitimer` and `timer_gettime`: only the process can ask).
pub(crate) fn dump(r: &mut Remote, listed: &[PosixTimer]) -> Result<Timers, CheckpointError> {
    let scratch = r.scratch();
    let mut timers = Timers::default();
    // struct itimerval {interval, value}, each {s, us}.
    for which in 0..3u64 {
        inject(r, "getitimer", libc::SYS_getitimer, &[which, scratch])?;
        let b = read_scratch(r, 32)?;
        timers.itimers[which as usize] = (
            (word(&b, 0) as i64, word(&b, 1) as i64),
            (word(&b, 2) as i64, word(&b, 3) as i64),
        );
    }
    // struct itimerspec {interval, value}, each {s, ns}.
    for t in listed {
        inject(
            r,
            "timer_gettime",
            libc::SYS_timer_gettime,
            &[t.id as u64, scratch],
        )?;
        let b = read_scratch(r, 32)?;
        timers.posix.push(PosixTimer {
            interval: (word(&b, 0) as i64, word(&b, 1) as i64),
            value: (word(&b, 2) as i64, word(&b, 3) as i64),
            ..*t
        });
    }
    Ok(timers)
}

// ---------------------------------------------------------------------------------------
// Restart

/// `prctl(PR_TIMER_CREATE_RESTORE_IDS)` and its arguments (include/uapi/linux/prctl.h).
const PR_TIMER_CREATE_RESTORE_IDS: u64 = 77;
const PR_TIMER_CREATE_RESTORE_IDS_ON: u64 = 1;
const PR_TIMER_CREATE_RESTORE_IDS_OFF: u64 = 0;

/// Re-arm interval timers and recreate POSIX timers with their IDs
/// (`PR_TIMER_CREATE_RESTORE_IDS`, Linux 6.17), signal, value and next expiry.
pub(crate) fn restore(
    r: &mut Remote,
    t: &Timers,
    warnings: &mut Vec<Warning>,
) -> Result<(), RestartError> {
    let pid = r.pid().as_raw();
    let scratch = r.scratch();
    for (which, &(interval, value)) in t.itimers.iter().enumerate() {
        // A periodic timer reads 0 left between an expiry and the delivery of its
        // signal (ITIMER_REAL is re-armed by dequeue_signal(), kernel/signal.c): its
        // tick is pending, restored with the other pending signals, and the timer
        // must run on, one interval from now.
        let value = if value == (0, 0) { interval } else { value };
        if value == (0, 0) {
            continue;
        }
        restart::poke(r, scratch, &timespecs([interval, value]))?;
        restart::inject(
            r,
            "setitimer",
            libc::SYS_setitimer,
            &[which as u64, scratch, 0],
        )?;
    }
    if t.posix.is_empty() {
        return Ok(());
    }
    if let Err(error) = r.call(
        libc::SYS_prctl,
        &[PR_TIMER_CREATE_RESTORE_IDS, PR_TIMER_CREATE_RESTORE_IDS_ON],
    )? {
        warnings.push(Warning::process(
            pid,
            WarningKind::PosixTimersUnsupported { error },
        ));
        return Ok(());
    }
    for pt in &t.posix {
        // struct sigevent: sigev_value (8), sigev_signo (4), sigev_notify (4), _tid (4).
        let mut ev = [0u8; 64];
        ev[..8].copy_from_slice(&pt.sival.to_ne_bytes());
        ev[8..12].copy_from_slice(&pt.signo.to_ne_bytes());
        ev[12..16].copy_from_slice(&pt.notify.to_ne_bytes());
        ev[16..20].copy_from_slice(&pt.tid.to_ne_bytes());
        restart::poke(r, scratch, &ev)?;
        restart::poke(r, scratch + 64, &pt.id.to_ne_bytes())?;
        let created = r.call(
            libc::SYS_timer_create,
            &[pt.clock as u64, scratch, scratch + 64],
        )?;
        if let Err(error) = created {
            warnings.push(Warning::process(
                pid,
                WarningKind::PosixTimerLost { id: pt.id, error },
            ));
            continue;
        }
        if pt.value == (0, 0) {
            continue;
        }
        restart::poke(r, scratch + 128, &timespecs([pt.interval, pt.value]))?;
        restart::inject(
            r,
            "timer_settime",
            libc::SYS_timer_settime,
            &[pt.id as u64, 0, scratch + 128, 0],
        )?;
    }
    restart::inject(
        r,
        "prctl(PR_TIMER_CREATE_RESTORE_IDS, off)",
        libc::SYS_prctl,
        &[PR_TIMER_CREATE_RESTORE_IDS, PR_TIMER_CREATE_RESTORE_IDS_OFF],
    )?;
    Ok(())
}

/// Two `(seconds, sub-seconds)` pairs as the kernel's `itimerval`/`itimerspec` layout.
fn timespecs(pairs: [(i64, i64); 2]) -> [u8; 32] {
    let mut b = [0u8; 32];
    for (i, v) in [pairs[0].0, pairs[0].1, pairs[1].0, pairs[1].1]
        .iter()
        .enumerate()
    {
        b[i * 8..i * 8 + 8].copy_from_slice(&v.to_ne_bytes());
    }
    b
}

// ---------------------------------------------------------------------------------------
// Section codec: TIMERS (optional)

/// The TIMERS section.
pub(crate) const TIMERS: OptionalSection = OptionalSection {
    kind: 0x8000_000C,
    name: "TIMERS",
    encode: enc_timers,
    decode: |data, image, _, cx| {
        image.timers = dec_timers(data, cx)?;
        Ok(())
    },
};

fn enc_timers(image: &Image) -> Option<Vec<u8>> {
    if image.timers.is_empty() {
        return None;
    }
    let mut e = Enc::new();
    for (interval, value) in &image.timers.itimers {
        for v in [interval.0, interval.1, value.0, value.1] {
            e.i64(v);
        }
    }
    e.u64(image.timers.posix.len() as u64);
    for t in &image.timers.posix {
        for v in [t.id, t.clock, t.notify, t.signo, t.tid] {
            e.i32(v);
        }
        e.u64(t.sival);
        for v in [t.value.0, t.value.1, t.interval.0, t.interval.1] {
            e.i64(v);
        }
    }
    Some(e.into_vec())
}

fn dec_timers(data: &[u8], cx: &Ctx<'_>) -> Result<Timers, ImageError> {
    let w = cx.wire();
    let mut d = Dec::new(data);
    let mut timers = Timers::default();
    let time = |t: (i64, i64), unit: i64| -> Result<(i64, i64), ImageError> {
        if t.0 < 0 || !(0..unit).contains(&t.1) {
            return Err(cx.invalid(format!("timer time {t:?} is invalid")));
        }
        Ok(t)
    };
    for slot in &mut timers.itimers {
        let mut v = [0i64; 4];
        for x in &mut v {
            *x = d.i64().map_err(&w)?;
        }
        *slot = (
            time((v[0], v[1]), 1_000_000)?,
            time((v[2], v[3]), 1_000_000)?,
        );
    }
    let n = d.count(1 << 16).map_err(&w)?;
    for _ in 0..n {
        let mut h = [0i32; 5];
        for x in &mut h {
            *x = d.i32().map_err(&w)?;
        }
        let sival = d.u64().map_err(&w)?;
        let mut v = [0i64; 4];
        for x in &mut v {
            *x = d.i64().map_err(&w)?;
        }
        let t = PosixTimer {
            id: h[0],
            clock: h[1],
            notify: h[2],
            signo: h[3],
            tid: h[4],
            sival,
            value: time((v[0], v[1]), 1_000_000_000)?,
            interval: time((v[2], v[3]), 1_000_000_000)?,
        };
        if t.id < 0 || ![0, 1, 4].contains(&t.notify) || !(0..=64).contains(&t.signo) {
            return Err(cx.invalid(format!("POSIX timer {t:?} is invalid")));
        }
        timers.posix.push(t);
    }
    d.finish().map_err(&w)?;
    Ok(timers)
}
