//! Credentials (UIDs, GIDs, supplementary groups) and resource limits, and who may
//! restore them.
//!
//! Who may restart what:
//! - A user (not root) restarts any image it can read, always as itself: the image's
//!   credentials are never restored, files are opened by the kernel's rules for that user.
//! - Root restarting an image file owned by root restores whatever the image says (root's
//!   own image, root's decision).
//! - Root restarting an image file owned by a user U restores it only as U could have run
//!   it: all four UIDs (real, effective, saved, file-system) must be U, and every GID (the
//!   four) and supplementary group must be one of U's groups at restart time
//!   (`getgrouplist` of U's name and primary group); anything else is refused naming the
//!   field and its value. The owner is taken from `fstat` of the descriptor the image is
//!   read from (`Reader::owner`), so a path swapped for another file meanwhile changes
//!   nothing. Everything the restarter opens for such an image (files, mapped files,
//!   FIFOs, directories, inotify watches, the executable) is opened with U's file-system
//!   identity ([`ActingAs`]), and each stub enters its working directory with it, so a
//!   user's image never reaches what U could not.
//!
//! Opening as U: the restarter's thread switches its file-system UID and GID
//! (`setfsuid`, `setfsgid`) and its supplementary groups (the raw `setgroups` system
//! call) around the opening step; all three are per thread, and a file-system UID other
//! than 0 takes the file capabilities (`CAP_DAC_OVERRIDE`, `CAP_DAC_READ_SEARCH`,
//! `CAP_FOWNER`, ...) out of the effective set, so the kernel checks every open, lookup
//! and `chdir` exactly as for U. This was chosen over a helper process that drops its
//! privileges and passes descriptors back with `SCM_RIGHTS` because the opening step
//! creates pipes, socket pairs, memfds and anonymous inodes together with the files, all
//! of which would have to travel; the switch is undone on every path by [`ActingAs`]'s
//! `Drop`, on the thread that made it (the type is not `Send`). A stub is a fork of the
//! restarter running as root: it takes U's identity for its `chdir` only
//! (`StubPlan::cwd_as`).

use crate::image::codec::{Ctx, ImageError};
use crate::image::wire::{Dec, Enc};
use crate::model::*;
use crate::procfs::{self, ProcError};
use crate::ptrace::{Injector, Remote, Stopped};
use crate::restart::error::{self as restart, RestartError};
use crate::sys::{self, process::FsIds};
use crate::warning::{Warning, WarningKind};
use nix::unistd::{Gid, Uid, User};
use std::ffi::CString;
use std::marker::PhantomData;
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

/// What a restart does with the image's credentials.
#[derive(Debug)]
pub(crate) struct Decision {
    /// For each process of the image, whether its credentials are restored.
    pub restore: Vec<bool>,
    /// The file-system identity to open files with, when root restarts a user's image.
    pub act_as: Option<FsIds>,
}

/// Decide, for the image file `path` owned by `owner` (from `fstat` of the descriptor it
/// is read from), whose credentials the processes get and as whom files are opened; see
/// the module header. A user's image that claims IDs its owner does not have is refused.
pub(crate) fn decide(owner: u32, path: &Path, imgs: &[&Image]) -> Result<Decision, RestartError> {
    if sys::process::geteuid() != 0 {
        return Ok(Decision {
            restore: vec![false; imgs.len()],
            act_as: None,
        });
    }
    if owner == 0 {
        let restore = imgs
            .iter()
            .map(|img| {
                let c = &img.process.creds;
                c.uid != [0; 4] || c.gid != [0; 4] || !c.groups.is_empty()
            })
            .collect();
        return Ok(Decision {
            restore,
            act_as: None,
        });
    }
    let ids = owner_ids(owner, path)?;
    for img in imgs {
        if let Some((field, value)) = foreign_id(&ids, &img.process.creds) {
            return Err(RestartError::Credentials {
                path: path.to_owned(),
                pid: img.process.pid,
                owner,
                field,
                value,
            });
        }
    }
    Ok(Decision {
        restore: vec![true; imgs.len()],
        act_as: Some(ids),
    })
}

/// The file-system identity of user `owner` as a login would give it: the UID, its
/// primary group, and every group `getgrouplist` finds for its name.
fn owner_ids(owner: u32, path: &Path) -> Result<FsIds, RestartError> {
    let unknown = |what: String| RestartError::OwnerGroups {
        path: path.to_owned(),
        owner,
        what,
    };
    let user = User::from_uid(Uid::from_raw(owner))
        .map_err(|e| unknown(format!("looking the user up failed: {e}")))?
        .ok_or_else(|| unknown("no user has that UID".into()))?;
    let name = CString::new(user.name.as_bytes())
        .map_err(|_| unknown("its user name contains a NUL byte".into()))?;
    let groups = nix::unistd::getgrouplist(&name, user.gid)
        .map_err(|e| unknown(format!("getgrouplist failed: {e}")))?;
    Ok(FsIds {
        uid: owner,
        gid: user.gid.as_raw(),
        groups: groups.into_iter().map(Gid::as_raw).collect(),
    })
}

/// The first ID of `c` that the user `ids` does not have, named: `None` when every UID
/// is the user's and every GID and group one of the user's groups.
fn foreign_id(ids: &FsIds, c: &Creds) -> Option<(&'static str, u32)> {
    const UIDS: [&str; 4] = ["UID", "effective UID", "saved UID", "filesystem UID"];
    const GIDS: [&str; 4] = ["GID", "effective GID", "saved GID", "filesystem GID"];
    let member = |g: u32| g == ids.gid || ids.groups.contains(&g);
    UIDS.iter()
        .zip(c.uid)
        .find(|&(_, u)| u != ids.uid)
        .or_else(|| GIDS.iter().zip(c.gid).find(|&(_, g)| !member(g)))
        .map(|(field, v)| (*field, v))
        .or_else(|| {
            c.groups
                .iter()
                .find(|&&g| !member(g))
                .map(|&g| ("supplementary group", g))
        })
}

/// The restarter's thread acting with a user's file-system identity (see the module
/// header) until dropped; dropping it returns to the thread's own identity, on every
/// path. Not `Send`: the identity belongs to the thread that took it.
#[derive(Debug)]
pub(crate) struct ActingAs {
    back: FsIds,
    _this_thread: PhantomData<*const ()>,
}

impl ActingAs {
    /// Take `user`'s file-system identity on this thread.
    pub(crate) fn new(user: &FsIds) -> Result<ActingAs, RestartError> {
        let back = sys::process::own_fs_ids().map_err(restart::sys_err("getgroups"))?;
        let acting = ActingAs {
            back,
            _this_thread: PhantomData,
        };
        // On failure `acting` is dropped and whatever was switched is switched back.
        sys::process::enter_fs_ids(user).map_err(restart::sys_err(format!(
            "taking UID {}'s file permissions (setgroups, setfsgid, setfsuid)",
            user.uid
        )))?;
        Ok(acting)
    }

    /// The identity this thread returns to.
    pub(crate) fn back(&self) -> &FsIds {
        &self.back
    }
}

impl Drop for ActingAs {
    fn drop(&mut self) {
        // Failing to return leaves the thread with the user's permissions: less than it
        // had, never more; the next privileged step then fails with its own error.
        let _ = sys::process::leave_fs_ids(&self.back);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_users_image_keeps_only_that_users_ids() {
        // A user 1001 whose primary group is 1001 and who is also in group 27.
        let user = FsIds {
            uid: 1001,
            gid: 1001,
            groups: vec![1001, 27],
        };
        let check = |uid: [u32; 4], gid: [u32; 4], groups: &[u32], expected| {
            let c = Creds {
                uid,
                gid,
                groups: groups.to_vec(),
            };
            assert_eq!(foreign_id(&user, &c), expected, "{c:?}");
        };
        let u = 1001;
        check([u; 4], [u; 4], &[], None);
        check([u; 4], [27, u, 27, u], &[27, u], None);
        check([0, u, u, u], [u; 4], &[], Some(("UID", 0)));
        check([u, 0, 0, 0], [u; 4], &[], Some(("effective UID", 0)));
        check([u, u, 0, u], [u; 4], &[], Some(("saved UID", 0)));
        check([u, u, u, 0], [u; 4], &[], Some(("filesystem UID", 0)));
        check([u, u, u, 1002], [u; 4], &[], Some(("filesystem UID", 1002)));
        check([u; 4], [0, u, u, u], &[], Some(("GID", 0)));
        check([u; 4], [u, 0, u, u], &[], Some(("effective GID", 0)));
        check([u; 4], [u, u, 42, u], &[], Some(("saved GID", 42)));
        check([u; 4], [u, u, u, 0], &[], Some(("filesystem GID", 0)));
        check([u; 4], [u; 4], &[u, 0], Some(("supplementary group", 0)));
        check([u; 4], [u; 4], &[42], Some(("supplementary group", 42)));
        // The UIDs are checked first, then the GIDs, then the groups.
        check([u, 0, u, u], [0; 4], &[0], Some(("effective UID", 0)));
    }
}
