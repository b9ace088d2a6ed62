//! Credentials (UIDs, GIDs, supplementary groups) and resource limits, and who may
//! restore them: restart runs with the caller's credentials and restores the image's
//! only when the caller is root and the image file belongs to root or to the UID it
//! claims.

use crate::image::codec::{Ctx, ImageError};
use crate::image::wire::{Dec, Enc};
use crate::model::*;
use crate::procfs::{self, ProcError};
use crate::ptrace::{Injector, Remote, Stopped};
use crate::restart::error::{self as restart, RestartError};
use crate::sys;
use crate::warning::{Warning, WarningKind};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

// ---------------------------------------------------------------------------------------
// Checkpoint

/// The credentials `/proc/PID/status` reports.
pub(crate) fn dump(status: &procfs::Status) -> Creds {
    Creds {
        uid: status.uid,
        gid: status.gid,
        groups: status.groups.clone(),
    }
}

/// Every resource limit, `RLIMIT_*` numbers in `/proc/PID/limits` order.
pub(crate) fn dump_limits(pid: i32) -> Result<Vec<Rlimit>, ProcError> {
    Ok(procfs::limits(pid)?
        .into_iter()
        .zip(0u32..)
        .map(|((soft, hard), resource)| Rlimit {
            resource,
            soft,
            hard,
        })
        .collect())
}

// ---------------------------------------------------------------------------------------
// Restart

/// For each process of the image, whether its credentials are restored: only when the
/// caller is root, and then only from an image file owned by root or by the UID the
/// image claims (else the restart is refused).
pub(crate) fn restorable(path: &Path, imgs: &[&Image]) -> Result<Vec<bool>, RestartError> {
    if sys::process::geteuid() != 0 {
        return Ok(vec![false; imgs.len()]);
    }
    let owner = fs::metadata(path)
        .map_err(|e| RestartError::ReadPages {
            path: path.to_owned(),
            source: e,
        })?
        .uid();
    let mut out = Vec::with_capacity(imgs.len());
    for img in imgs {
        let claimed = img.process.creds.uid[0];
        if owner != 0 && owner != claimed {
            return Err(RestartError::Credentials {
                path: path.to_owned(),
                owner,
                claimed,
            });
        }
        out.push(
            claimed != 0 || img.process.creds.gid != [0; 4] || !img.process.creds.groups.is_empty(),
        );
    }
    Ok(out)
}

/// Set the resource limits, while the stub still has the caller's credentials (prlimit
/// of another user's process needs CAP_SYS_RESOURCE, as does raising a hard limit).
pub(crate) fn restore_limits(
    pid: nix::unistd::Pid,
    limits: &[Rlimit],
    warnings: &mut Vec<Warning>,
) {
    for rl in limits {
        if let Err(error) = sys::process::set_rlimit(pid, rl.resource, rl.soft, rl.hard) {
            warnings.push(Warning::process(
                pid.as_raw(),
                WarningKind::RlimitNotRestored {
                    resource: rl.resource,
                    error,
                },
            ));
        }
    }
}

/// Drop to the image's credentials in every thread (credentials are per thread).
pub(crate) fn restore(r: &mut Remote, threads: &[&Stopped], c: &Creds) -> Result<(), RestartError> {
    let pid = r.pid().as_raw();
    let scratch = r.scratch();
    let groups: Vec<u8> = c.groups.iter().flat_map(|g| g.to_ne_bytes()).collect();
    restart::poke(r, scratch, &groups)?;
    let ip = r.injector().ip();
    for thread in threads {
        let mut inj = Injector::new(thread, ip)?;
        let mut call = |what: &str, nr: libc::c_long, args: &[u64]| -> Result<u64, RestartError> {
            inj.call(nr, args)?.map_err(|source| RestartError::Inject {
                pid,
                call: what.to_owned(),
                source,
            })
        };
        call(
            "setgroups",
            libc::SYS_setgroups,
            &[c.groups.len() as u64, scratch],
        )?;
        let [rg, eg, sg, _] = c.gid.map(u64::from);
        call("setresgid", libc::SYS_setresgid, &[rg, eg, sg])?;
        let [ru, eu, su, _] = c.uid.map(u64::from);
        call("setresuid", libc::SYS_setresuid, &[ru, eu, su])?;
    }
    // Changing credentials clears the dumpable flag; the process was dumpable.
    restart::inject(
        r,
        "prctl(PR_SET_DUMPABLE)",
        libc::SYS_prctl,
        &[libc::PR_SET_DUMPABLE as u64, 1],
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Codec (inside PROCESS)

/// Credentials, as part of the PROCESS record.
pub(crate) fn enc(e: &mut Enc, c: &Creds) {
    for v in c.uid.iter().chain(&c.gid) {
        e.u32(*v);
    }
    e.u64(c.groups.len() as u64);
    for g in &c.groups {
        e.u32(*g);
    }
}

/// Credentials of the PROCESS record.
pub(crate) fn dec(d: &mut Dec<'_>, cx: &Ctx<'_>) -> Result<Creds, ImageError> {
    let w = cx.wire();
    let mut c = Creds::default();
    for i in 0..4 {
        c.uid[i] = d.u32().map_err(&w)?;
    }
    for i in 0..4 {
        c.gid[i] = d.u32().map_err(&w)?;
    }
    let n = d.count(1 << 16).map_err(&w)?;
    for _ in 0..n {
        c.groups.push(d.u32().map_err(&w)?);
    }
    Ok(c)
}

/// Resource limits, as part of the PROCESS record.
pub(crate) fn enc_limits(e: &mut Enc, limits: &[Rlimit]) {
    e.u64(limits.len() as u64);
    for r in limits {
        e.u32(r.resource);
        e.u64(r.soft);
        e.u64(r.hard);
    }
}

/// Resource limits of the PROCESS record.
pub(crate) fn dec_limits(d: &mut Dec<'_>, cx: &Ctx<'_>) -> Result<Vec<Rlimit>, ImageError> {
    let w = cx.wire();
    let n = d.count(64).map_err(&w)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(Rlimit {
            resource: d.u32().map_err(&w)?,
            soft: d.u64().map_err(&w)?,
            hard: d.u64().map_err(&w)?,
        });
    }
    Ok(out)
}
