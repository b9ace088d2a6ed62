//! The process as a whole: ids, command, executable, working directory, umask,
//! personality, the mm layout (`PR_SET_MM_MAP`: brk, arguments, environment, auxv, exe),
//! provenance (META) and the zombies of a scope (ZOMBIES). Its parts that are kinds of
//! their own (credentials, limits, signals) are encoded by their files, inside PROCESS.

use crate::checkpoint::error::{CheckpointError, inject};
use crate::image::codec::{Ctx, ImageError, MAX_PROCESSES};
use crate::image::wire::{Dec, Enc};
use crate::model::*;
use crate::procfs::{self, ProcError};
use crate::ptrace::{Frozen, Remote};
use crate::restart::error::{self as restart, RestartError};
use crate::state::{creds, signals};
use crate::warning::{Warning, WarningKind};
use std::os::fd::RawFd;
use std::time::{SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------------------
// Checkpoint

/// Refuse a process that made itself non-dumpable, and read its program break (both by
/// injected calls: `prctl(PR_GET_DUMPABLE)`, `brk(0)`).
pub(crate) fn dump_injected(r: &mut Remote) -> Result<u64, CheckpointError> {
    let dumpable = inject(
        r,
        "prctl(PR_GET_DUMPABLE)",
        libc::SYS_prctl,
        &[libc::PR_GET_DUMPABLE as u64],
    )?;
    if dumpable == 0 {
        return Err(CheckpointError::NotDumpable {
            pid: r.pid().as_raw(),
        });
    }
    inject(r, "brk", libc::SYS_brk, &[0])
}

/// Process-wide state from `/proc` (dispositions, shared pending signals and the group
/// stop are filled in by the caller).
pub(crate) fn dump(pid: i32, brk: u64) -> Result<Process, ProcError> {
    let stat = procfs::stat(pid)?;
    let status = procfs::status(pid)?;
    Ok(Process {
        pid,
        ppid: stat.ppid,
        pgid: stat.pgrp,
        sid: stat.session,
        comm: stat.comm.clone(),
        cmdline: procfs::cmdline(pid)?,
        exe: procfs::link(pid, "exe")?,
        cwd: procfs::link(pid, "cwd")?,
        umask: status.umask,
        personality: procfs::personality(pid)?,
        creds: creds::dump(&status),
        rlimits: creds::dump_limits(pid)?,
        mm: MmLayout {
            start_code: stat.start_code,
            end_code: stat.end_code,
            start_data: stat.start_data,
            end_data: stat.end_data,
            start_brk: stat.start_brk,
            brk,
            start_stack: stat.start_stack,
            arg_start: stat.arg_start,
            arg_end: stat.arg_end,
            env_start: stat.env_start,
            env_end: stat.env_end,
            auxv: procfs::auxv(pid)?,
        },
        sigactions: Vec::new(),
        shared_pending: Vec::new(),
        stopped: false,
    })
}

/// Where and when the image is taken.
pub(crate) fn meta() -> Meta {
    Meta {
        engine_version: env!("CARGO_PKG_VERSION").to_owned(),
        kernel: nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default(),
        hostname: nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        created_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        frozen_us: 0,
    }
}

/// The zombies of a scope that are saved: those whose parent is frozen with it (restart
/// recreates them for the parent's wait()); the others are warned about.
pub(crate) fn zombies_in_scope(
    frozen: &[Frozen],
    stats: Vec<(i32, procfs::Stat)>,
    warnings: &mut Vec<Warning>,
) -> Vec<Zombie> {
    stats
        .into_iter()
        .filter_map(|(p, st)| {
            if frozen.iter().any(|f| f.pid().as_raw() == st.ppid) {
                Some(Zombie {
                    pid: p,
                    ppid: st.ppid,
                    pgid: st.pgrp,
                    sid: st.session,
                    status: st.exit_code,
                })
            } else {
                warnings.push(Warning::process(
                    p,
                    WarningKind::ZombieOutsideScope { comm: st.comm },
                ));
                None
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Restart

/// `PR_SET_MM_MAP`: brk, code/data/stack bounds, arguments, environment, auxv, and the
/// exe link (from `exe_fd`, a descriptor of the executable in the process, when root).
pub(crate) fn restore_mm(
    r: &mut Remote,
    m: &MmLayout,
    exe_fd: Option<RawFd>,
    warnings: &mut Vec<Warning>,
) -> Result<(), RestartError> {
    let scratch = r.scratch();
    let auxv_addr = scratch + 4096;
    // struct prctl_mm_map (include/uapi/linux/prctl.h).
    let mut map = Vec::with_capacity(104);
    for v in m.words().into_iter().chain([auxv_addr]) {
        map.extend_from_slice(&v.to_ne_bytes());
    }
    let auxv: Vec<u8> = m.auxv.iter().flat_map(|v| v.to_ne_bytes()).collect();
    map.extend_from_slice(&(auxv.len() as u32).to_ne_bytes());
    map.extend_from_slice(&exe_fd.map_or(u32::MAX, |fd| fd as u32).to_ne_bytes());
    restart::poke(r, scratch, &map)?;
    restart::poke(r, auxv_addr, &auxv)?;
    let set = r.call(
        libc::SYS_prctl,
        &[
            libc::PR_SET_MM as u64,
            libc::PR_SET_MM_MAP as u64,
            scratch,
            map.len() as u64,
            0,
        ],
    )?;
    if let Err(error) = set {
        warnings.push(Warning::process(
            r.pid().as_raw(),
            WarningKind::MmLayoutNotRestored { error },
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Section codecs: PROCESS, META, ZOMBIES

pub(crate) fn enc_process(p: &Process) -> Vec<u8> {
    let mut e = Enc::new();
    e.i32(p.pid);
    e.i32(p.ppid);
    e.i32(p.pgid);
    e.i32(p.sid);
    e.str(&p.comm);
    e.u64(p.cmdline.len() as u64);
    for a in &p.cmdline {
        e.str(a);
    }
    e.str(&p.exe);
    e.str(&p.cwd);
    e.u32(p.umask);
    e.u32(p.personality);
    creds::enc(&mut e, &p.creds);
    creds::enc_limits(&mut e, &p.rlimits);
    let m = &p.mm;
    for v in m.words() {
        e.u64(v);
    }
    e.u64(m.auxv.len() as u64);
    for v in &m.auxv {
        e.u64(*v);
    }
    signals::enc_actions(&mut e, &p.sigactions);
    signals::enc_siginfos(&mut e, &p.shared_pending);
    e.bool(p.stopped);
    e.into_vec()
}

pub(crate) fn dec_process(data: &[u8], cx: &Ctx<'_>) -> Result<Process, ImageError> {
    let w = cx.wire();
    let mut d = Dec::new(data);
    let mut p = Process {
        pid: d.i32().map_err(&w)?,
        ppid: d.i32().map_err(&w)?,
        pgid: d.i32().map_err(&w)?,
        sid: d.i32().map_err(&w)?,
        comm: d.str().map_err(&w)?.to_owned(),
        ..Process::default()
    };
    let n = d.count(1 << 20).map_err(&w)?;
    for _ in 0..n {
        p.cmdline.push(d.str().map_err(&w)?.to_owned());
    }
    p.exe = d.str().map_err(&w)?.to_owned();
    p.cwd = d.str().map_err(&w)?.to_owned();
    p.umask = d.u32().map_err(&w)?;
    p.personality = d.u32().map_err(&w)?;
    p.creds = creds::dec(&mut d, cx)?;
    p.rlimits = creds::dec_limits(&mut d, cx)?;
    let mut mm = [0u64; 11];
    for v in &mut mm {
        *v = d.u64().map_err(&w)?;
    }
    let n = d.count(1 << 12).map_err(&w)?;
    let mut auxv = Vec::with_capacity(n);
    for _ in 0..n {
        auxv.push(d.u64().map_err(&w)?);
    }
    p.mm = MmLayout::from_words(mm, auxv);
    p.sigactions = signals::dec_actions(&mut d, cx)?;
    p.shared_pending = signals::dec_siginfos(&mut d, cx)?;
    p.stopped = d.bool().map_err(&w)?;
    d.finish().map_err(&w)?;
    if p.pid <= 0 {
        return Err(cx.invalid(format!("PID {} is not valid", p.pid)));
    }
    if !p.cwd.starts_with('/') || p.cwd.contains('\0') {
        return Err(cx.invalid(format!(
            "working directory `{}` is not an absolute path",
            p.cwd
        )));
    }
    if p.umask > 0o777 {
        return Err(cx.invalid(format!("umask {:o} is not valid", p.umask)));
    }
    if p.mm.auxv.len() % 2 != 0 {
        return Err(cx.invalid("the auxiliary vector has an odd number of words"));
    }
    Ok(p)
}

pub(crate) fn enc_meta(m: &Meta) -> Vec<u8> {
    let mut e = Enc::new();
    e.str(&m.engine_version);
    e.str(&m.kernel);
    e.str(&m.hostname);
    e.u64(m.created_unix);
    e.u64(m.frozen_us);
    e.into_vec()
}

pub(crate) fn dec_meta(data: &[u8], cx: &Ctx<'_>) -> Result<Meta, ImageError> {
    let w = cx.wire();
    let mut d = Dec::new(data);
    let m = Meta {
        engine_version: d.str().map_err(&w)?.to_owned(),
        kernel: d.str().map_err(&w)?.to_owned(),
        hostname: d.str().map_err(&w)?.to_owned(),
        created_unix: d.u64().map_err(&w)?,
        frozen_us: d.u64().map_err(&w)?,
    };
    d.finish().map_err(&w)?;
    Ok(m)
}

/// The ZOMBIES record.
pub(crate) fn enc_zombies(zombies: &[Zombie]) -> Vec<u8> {
    let mut e = Enc::new();
    e.u64(zombies.len() as u64);
    for z in zombies {
        for v in [z.pid, z.ppid, z.pgid, z.sid, z.status] {
            e.i32(v);
        }
    }
    e.into_vec()
}

/// Decode the ZOMBIES record.
pub(crate) fn dec_zombies(data: &[u8], cx: &Ctx<'_>) -> Result<Vec<Zombie>, ImageError> {
    let w = cx.wire();
    let mut d = Dec::new(data);
    let n = d.count(MAX_PROCESSES as u64).map_err(&w)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut v = [0i32; 5];
        for x in &mut v {
            *x = d.i32().map_err(&w)?;
        }
        // The process and its parent are in the image, so both have PIDs. Group and
        // session may be 0: /proc reports 0 for a leader outside the checkpointer's PID
        // namespace (a CI runner or container).
        if v[0] <= 0 || v[1] <= 0 || v[2] < 0 || v[3] < 0 {
            return Err(cx.invalid(format!("zombie record {v:?} has a bad PID")));
        }
        out.push(Zombie {
            pid: v[0],
            ppid: v[1],
            pgid: v[2],
            sid: v[3],
            status: v[4],
        });
    }
    d.finish().map_err(&w)?;
    Ok(out)
}
