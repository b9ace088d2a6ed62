//! Which processes a checkpoint saves, and freezing them: the scope's members (root first,
//! parents before children), the checks ptrace and core dumps make, and a freeze that
//! re-scans until no new member appears.

use super::CheckpointError;
use crate::procfs::{self, ProcError};
use crate::ptrace::{Frozen, TraceError};
use crate::sys;
use nix::unistd::Pid;
use std::time::{Duration, Instant};

/// Which processes a checkpoint saves (BLCR's scopes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// The one process (`--pid`).
    #[default]
    Pid,
    /// The process and all its descendants (`--tree`).
    Tree,
    /// Every process of the process group whose ID is given (`--pgid`).
    Pgid,
    /// Every process of the session whose ID is given (`--sid`).
    Sid,
}

/// The processes of a scope: `(pid, ppid, pgid, sid, state)` of everything on the node,
/// filtered. The root comes first, then parents before their children.
fn scope_members(
    pid: i32,
    scope: Scope,
) -> Result<(i32, Vec<(i32, procfs::Stat)>), CheckpointError> {
    if scope == Scope::Pid {
        let st = procfs::stat(pid).map_err(gone_is_no_process(pid))?;
        return Ok((pid, vec![(pid, st)]));
    }
    let all: Vec<(i32, procfs::Stat)> = procfs::pids()
        .into_iter()
        .filter_map(|p| procfs::stat(p).ok().map(|s| (p, s)))
        .collect();
    members_of(&all, pid, scope)
}

/// The members of the scope `(pid, scope)` among `all` processes (no I/O): the root, then
/// breadth-first its descendants in the scope, then other top-level members.
fn members_of(
    all: &[(i32, procfs::Stat)],
    pid: i32,
    scope: Scope,
) -> Result<(i32, Vec<(i32, procfs::Stat)>), CheckpointError> {
    let root = match scope {
        Scope::Tree | Scope::Pid => pid,
        // The group or session leader is the root when it still lives; else the member
        // whose parent is outside the scope, lowest PID first.
        Scope::Pgid | Scope::Sid => {
            let member = |s: &procfs::Stat| {
                if scope == Scope::Pgid {
                    s.pgrp == pid
                } else {
                    s.session == pid
                }
            };
            let members: Vec<i32> = all
                .iter()
                .filter(|(_, s)| member(s))
                .map(|(p, _)| *p)
                .collect();
            if members.is_empty() {
                return Err(CheckpointError::Scope {
                    what: format!(
                        "no process has {} {pid}",
                        if scope == Scope::Pgid {
                            "process group"
                        } else {
                            "session"
                        }
                    ),
                });
            }
            if members.contains(&pid) {
                pid
            } else {
                members[0]
            }
        }
    };
    let in_scope = |p: i32, s: &procfs::Stat| match scope {
        Scope::Pid => p == root,
        Scope::Tree => false, // by descent, below
        Scope::Pgid => s.pgrp == pid,
        Scope::Sid => s.session == pid,
    };
    // Breadth-first from the root: parents before children.
    let mut out: Vec<(i32, procfs::Stat)> = Vec::new();
    let Some(root_stat) = all.iter().find(|(p, _)| *p == root).map(|(_, s)| s.clone()) else {
        return Err(CheckpointError::NoProcess { pid: root });
    };
    out.push((root, root_stat));
    let mut i = 0;
    while i < out.len() {
        let parent = out[i].0;
        for (p, s) in all {
            if s.ppid == parent
                && !out.iter().any(|(q, _)| q == p)
                && (scope == Scope::Tree || in_scope(*p, s))
            {
                out.push((*p, s.clone()));
            }
        }
        i += 1;
    }
    // Members of a group or session whose parents are outside it: top-level processes.
    if matches!(scope, Scope::Pgid | Scope::Sid) {
        for (p, s) in all {
            if in_scope(*p, s) && !out.iter().any(|(q, _)| q == p) {
                out.push((*p, s.clone()));
                let mut j = out.len() - 1;
                while j < out.len() {
                    let parent = out[j].0;
                    for (c, cs) in all {
                        if cs.ppid == parent && in_scope(*c, cs) && !out.iter().any(|(q, _)| q == c)
                        {
                            out.push((*c, cs.clone()));
                        }
                    }
                    j += 1;
                }
            }
        }
    }
    Ok((root, out))
}

/// Frozen processes and the zombies of the scope.
pub(crate) type FrozenScope = (Vec<Frozen>, Vec<(i32, procfs::Stat)>);

/// Freeze every process of the scope, re-reading it until no new process appears (a
/// process forked between the scan and the freeze of its parent is caught by the next
/// scan). Zombies are returned apart: they have no state but an exit status.
pub(crate) fn freeze_scope(pid: i32, scope: Scope) -> Result<FrozenScope, CheckpointError> {
    let me = std::process::id() as i32;
    let mut frozen: Vec<Frozen> = Vec::new();
    let mut zombies: Vec<(i32, procfs::Stat)> = Vec::new();
    // The PIDs of the last scan, parents before children: a scan that found nothing new
    // is the final order.
    let order: Vec<i32> = loop {
        let (root, members) = scope_members(pid, scope)?;
        let order = members.iter().map(|(p, _)| *p).collect();
        let mut added = false;
        for (p, st) in members {
            if frozen.iter().any(|f| f.pid().as_raw() == p) || zombies.iter().any(|(z, _)| *z == p)
            {
                continue;
            }
            if p == me && scope != Scope::Pid {
                return Err(CheckpointError::Scope {
                    what: format!(
                        "the scope includes lifeboat itself (PID {me}); checkpoint from outside the job"
                    ),
                });
            }
            if st.is_zombie() {
                if p == root {
                    return Err(CheckpointError::NoProcess { pid: p });
                }
                zombies.push((p, st));
                continue;
            }
            let outcome = preflight(p).and_then(|()| {
                Frozen::freeze(Pid::from_raw(p)).map_err(|e| match e {
                    TraceError::NoProcess { pid } => CheckpointError::NoProcess { pid },
                    e => e.into(),
                })
            });
            match outcome {
                Ok(f) => {
                    crate::fault::point("seize");
                    frozen.push(f);
                    added = true;
                }
                // A member that exited since the scan (a shell's short-lived `sleep`) is
                // gone, or a zombie that its frozen parent may still wait for: scan again
                // to record it as one. Its failed preflight or seize (EPERM on a zombie,
                // ESRCH from a dying process's files) says nothing about the job.
                Err(_) if p != root && exited(p) => added = true,
                Err(e) => return Err(e),
            }
        }
        if !added {
            break order;
        }
    };
    frozen.sort_by_key(|f| {
        order
            .iter()
            .position(|p| *p == f.pid().as_raw())
            .unwrap_or(usize::MAX)
    });
    if frozen.is_empty() {
        return Err(CheckpointError::NoProcess { pid });
    }
    Ok((frozen, zombies))
}

/// Whether `pid` exited since the scan: gone, a zombie, or exiting, in which case it is
/// given up to a second to become a zombie, so that the next scan records it as one.
fn exited(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match procfs::stat(pid) {
            Err(e) => return e.is_gone(),
            Ok(st) if st.is_zombie() => return true,
            Ok(st) if !st.exiting() || Instant::now() >= deadline => return false,
            Ok(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

/// A `/proc` read of `pid` that failed because the process is gone is `NoProcess`.
pub(crate) fn gone_is_no_process(pid: i32) -> impl Fn(ProcError) -> CheckpointError {
    move |e| {
        if e.is_gone() {
            CheckpointError::NoProcess { pid }
        } else {
            e.into()
        }
    }
}

/// Refuse what ptrace and core dumps refuse, before touching the process.
fn preflight(pid: i32) -> Result<(), CheckpointError> {
    if pid == std::process::id() as i32 {
        return Err(CheckpointError::SelfCheckpoint { pid });
    }
    let status = procfs::status(pid).map_err(gone_is_no_process(pid))?;
    if status.kthread {
        return Err(CheckpointError::KernelThread { pid });
    }
    let caller = sys::process::geteuid();
    if caller != 0 && status.uid.iter().any(|&u| u != caller) {
        return Err(CheckpointError::NotPermitted {
            pid,
            owner: status.uid[0],
        });
    }
    let (u, g) = (status.uid, status.gid);
    if u[..3].iter().any(|&x| x != u[0]) || g[..3].iter().any(|&x| x != g[0]) {
        return Err(CheckpointError::SetId {
            pid,
            detail: format!("uids {u:?}, gids {g:?}"),
        });
    }
    let auxv = procfs::auxv(pid).map_err(gone_is_no_process(pid))?;
    const AT_SECURE: u64 = 23;
    if auxv
        .chunks_exact(2)
        .any(|kv| kv[0] == AT_SECURE && kv[1] != 0)
    {
        return Err(CheckpointError::SetId {
            pid,
            detail: "AT_SECURE is set".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(ppid: i32, pgrp: i32, session: i32) -> procfs::Stat {
        procfs::Stat {
            ppid,
            pgrp,
            session,
            ..procfs::Stat::default()
        }
    }

    /// A shell (10, session leader) running a pipeline (20 | 21, group 20) with a child
    /// of its own (22 under 21), and an unrelated process 30.
    fn node() -> Vec<(i32, procfs::Stat)> {
        vec![
            (1, stat(0, 1, 1)),
            (10, stat(1, 10, 10)),
            (20, stat(10, 20, 10)),
            (21, stat(10, 20, 10)),
            (22, stat(21, 20, 10)),
            (30, stat(1, 30, 30)),
        ]
    }

    fn check(pid: i32, scope: Scope, root: i32, members: &[i32]) {
        let (r, m) = members_of(&node(), pid, scope).unwrap();
        let m: Vec<i32> = m.iter().map(|(p, _)| *p).collect();
        assert_eq!((r, m.as_slice()), (root, members), "{scope:?} of {pid}");
    }

    #[test]
    fn scopes_list_parents_before_children() {
        check(10, Scope::Tree, 10, &[10, 20, 21, 22]);
        check(21, Scope::Tree, 21, &[21, 22]);
        check(20, Scope::Pgid, 20, &[20, 21, 22]);
        check(10, Scope::Sid, 10, &[10, 20, 21, 22]);
        check(30, Scope::Pid, 30, &[30]);
    }

    #[test]
    fn a_group_without_its_leader_is_rooted_at_its_first_member() {
        let mut all = node();
        all.retain(|(p, _)| *p != 20);
        let (root, m) = members_of(&all, 20, Scope::Pgid).unwrap();
        assert_eq!(root, 21);
        assert_eq!(m.iter().map(|(p, _)| *p).collect::<Vec<_>>(), [21, 22]);
        assert!(members_of(&all, 99, Scope::Pgid).is_err());
    }
}
