//! The stub tree of a restart, decided before anything is forked (no I/O here): which
//! stub creates which, in which order, with which session and group, descriptors and
//! working directory. Each stub then only carries out its [`StubPlan`].

use super::RestartError;
use crate::model::*;
use crate::sys::process::{FsIds, StubPlan, StubSession};
use crate::warning::{Warning, WarningKind};
use nix::errno::Errno;
use std::ffi::CString;
use std::os::fd::RawFd;

/// One process to create: a live one (index into the images) or a zombie.
struct Member {
    pid: i32,
    ppid: i32,
    pgid: i32,
    sid: i32,
    cwd: String,
    umask: u32,
    personality: u32,
    /// Exit status, for a zombie.
    zombie: Option<i32>,
}

/// The stub plans of every process, nested as the processes were: each process's
/// children under it, group leaders before the members of their groups. The result has
/// one plan per top-level process (the root first, then processes whose parent is not in
/// the image, as in a process group or session scope), each created by the restarter.
/// Zombies are planned under their parents; their stubs exit with the saved status.
#[allow(clippy::too_many_arguments)]
pub(crate) fn stub_plans(
    imgs: &[&Image],
    zombies: &[Zombie],
    restore_pid: bool,
    moves: &[Vec<(RawFd, RawFd, bool)>],
    keep: &[Vec<RawFd>],
    first_free: RawFd,
    report_fd: RawFd,
    warnings: &mut Vec<Warning>,
) -> Result<Vec<StubPlan>, RestartError> {
    let root_cwd = imgs[0].process.cwd.clone();
    let members: Vec<Member> = imgs
        .iter()
        .map(|img| Member {
            pid: img.process.pid,
            ppid: img.process.ppid,
            pgid: img.process.pgid,
            sid: img.process.sid,
            cwd: img.process.cwd.clone(),
            umask: img.process.umask,
            personality: img.process.personality,
            zombie: None,
        })
        .chain(zombies.iter().map(|z| Member {
            pid: z.pid,
            ppid: z.ppid,
            pgid: z.pgid,
            sid: z.sid,
            cwd: root_cwd.clone(),
            umask: 0o022,
            personality: 0,
            zombie: Some(z.status),
        }))
        .collect();
    let planner = Planner {
        members: &members,
        restore_pid,
        moves,
        keep,
        first_free,
        report_fd,
    };
    let mut made = vec![false; members.len()];
    let mut tops: Vec<usize> = (0..imgs.len())
        .filter(|&i| i == 0 || planner.index_of(members[i].ppid).is_none())
        .collect();
    tops.sort_by_key(|&i| {
        let p = &members[i];
        (i != 0, p.pgid != p.pid && p.sid != p.pid, p.pid)
    });
    let mut plans = Vec::with_capacity(tops.len());
    for i in tops {
        plans.push(planner.plan(i, warnings, &mut made)?);
    }
    if let Some(i) = made.iter().position(|m| !m) {
        return Err(RestartError::Tree {
            what: format!(
                "process {} cannot be placed under its parent {}",
                members[i].pid, members[i].ppid
            ),
        });
    }
    Ok(plans)
}

/// What every plan of a restart shares.
struct Planner<'a> {
    members: &'a [Member],
    restore_pid: bool,
    moves: &'a [Vec<(RawFd, RawFd, bool)>],
    keep: &'a [Vec<RawFd>],
    first_free: RawFd,
    report_fd: RawFd,
}

impl Planner<'_> {
    fn index_of(&self, pid: i32) -> Option<usize> {
        self.members.iter().position(|m| m.pid == pid)
    }

    fn plan(
        &self,
        i: usize,
        warnings: &mut Vec<Warning>,
        made: &mut [bool],
    ) -> Result<StubPlan, RestartError> {
        made[i] = true;
        let p = &self.members[i];
        let parent = (i != 0)
            .then(|| self.index_of(p.ppid))
            .flatten()
            .map(|j| &self.members[j]);
        let session = if p.sid == p.pid {
            StubSession::Leader
        } else if p.pgid == p.pid {
            StubSession::GroupLeader
        } else if parent.is_none() && i != 0 && self.index_of(p.pgid).is_some() {
            // A top-level member of a group whose leader was created before it.
            StubSession::Join(p.pgid)
        } else if let Some(par) = parent {
            if p.pgid == par.pgid {
                StubSession::Inherit
            } else if self.index_of(p.pgid).is_some() {
                StubSession::Join(p.pgid)
            } else {
                warnings.push(Warning::process(
                    p.pid,
                    WarningKind::ProcessGroupMissing { pgid: p.pgid },
                ));
                StubSession::Inherit
            }
        } else {
            StubSession::Inherit
        };
        // Children: processes whose parent is this one, group leaders first so that the
        // members of their groups can join them.
        let mut kids: Vec<usize> = (0..self.members.len())
            .filter(|&j| j != 0 && self.members[j].ppid == p.pid && !made[j])
            .collect();
        kids.sort_by_key(|&j| {
            let c = &self.members[j];
            (c.pgid != c.pid && c.sid != c.pid, c.pid)
        });
        let mut children = Vec::with_capacity(kids.len());
        for j in kids {
            children.push(self.plan(j, warnings, made)?);
        }
        let cwd = CString::new(p.cwd.clone()).map_err(|_| RestartError::Sys {
            op: "cwd contains NUL".into(),
            source: Errno::EINVAL,
        })?;
        Ok(StubPlan {
            namespace_init: false,
            exit_status: p.zombie,
            set_tid: self.restore_pid.then_some(p.pid),
            moves: self.moves.get(i).cloned().unwrap_or_default(),
            keep: self.keep.get(i).cloned().unwrap_or_default(),
            first_free: self.first_free,
            cwd,
            cwd_as: None,
            umask: p.umask,
            personality: p.personality,
            session,
            report_fd: self.report_fd,
            children,
        })
    }
}

/// Every stub of `plans` enters its working directory as `user` (the owner of a user's
/// image that root restarts), then returns to `back`.
pub(crate) fn enter_cwd_as(plans: &mut [StubPlan], user: &FsIds, back: &FsIds) {
    for p in plans {
        p.cwd_as = Some((user.clone(), back.clone()));
        enter_cwd_as(&mut p.children, user, back);
    }
}

/// The init of a new PID namespace that holds `children` (the image's top-level stubs)
/// with their original PIDs: it creates them, reaps, and exits with the root's status.
pub(crate) fn namespace_init(
    children: Vec<StubPlan>,
    first_free: RawFd,
) -> Result<StubPlan, RestartError> {
    let report_fd = children.first().map_or(-1, |c| c.report_fd);
    Ok(StubPlan {
        namespace_init: true,
        exit_status: None,
        set_tid: None,
        moves: Vec::new(),
        keep: Vec::new(),
        first_free,
        cwd: c"/".to_owned(),
        cwd_as: None,
        umask: 0o022,
        personality: 0,
        session: StubSession::Inherit,
        report_fd,
        children,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(pid: i32, ppid: i32, pgid: i32, sid: i32) -> Image {
        Image {
            meta: Meta::default(),
            process: Process {
                pid,
                ppid,
                pgid,
                sid,
                cwd: "/".into(),
                ..Process::default()
            },
            threads: Vec::new(),
            ..Image::default()
        }
    }

    /// `(pid, set_tid, session, exit_status)` of a plan and its descendants, depth first.
    fn flatten(p: &StubPlan, out: &mut Vec<(i32, Option<i32>, StubSession, Option<i32>)>) {
        out.push((p.set_tid.unwrap_or(0), p.set_tid, p.session, p.exit_status));
        for c in &p.children {
            flatten(c, out);
        }
    }

    fn plan(imgs: &[Image], zombies: &[Zombie]) -> (Vec<StubPlan>, Vec<Warning>) {
        let refs: Vec<&Image> = imgs.iter().collect();
        let mut warnings = Vec::new();
        let plans = stub_plans(&refs, zombies, true, &[], &[], 10, 9, &mut warnings).unwrap();
        (plans, warnings)
    }

    #[test]
    fn a_shell_pipeline_nests_leaders_before_members() {
        // A session leader (100) whose pipeline 101 | 102 is process group 101; 102 has
        // a child 103 in the same group, and a zombie child 104.
        let imgs = [
            image(100, 1, 100, 100),
            image(102, 100, 101, 100),
            image(101, 100, 101, 100),
            image(103, 102, 101, 100),
        ];
        let zombie = Zombie {
            pid: 104,
            ppid: 102,
            pgid: 101,
            sid: 100,
            status: 0,
        };
        let (plans, warnings) = plan(&imgs, &[zombie]);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(plans.len(), 1);
        let mut got = Vec::new();
        flatten(&plans[0], &mut got);
        let order: Vec<i32> = got.iter().map(|g| g.0).collect();
        // The group leader 101 is created before 102, which joins its group.
        assert_eq!(order, [100, 101, 102, 103, 104]);
        assert_eq!(got[0].2, StubSession::Leader);
        assert_eq!(got[1].2, StubSession::GroupLeader);
        assert_eq!(got[2].2, StubSession::Join(101));
        assert_eq!(got[3].2, StubSession::Inherit);
        assert_eq!(got[4].3, Some(0), "the zombie stub exits with its status");
    }

    #[test]
    fn members_whose_parent_is_outside_are_top_level() {
        // A process group scope: 201 leads it, 202 is a member whose parent is outside.
        let imgs = [image(201, 1, 201, 1), image(202, 50, 201, 1)];
        let (plans, _) = plan(&imgs, &[]);
        let tops: Vec<(Option<i32>, StubSession)> =
            plans.iter().map(|p| (p.set_tid, p.session)).collect();
        assert_eq!(
            tops,
            [
                (Some(201), StubSession::GroupLeader),
                (Some(202), StubSession::Join(201))
            ]
        );
    }

    #[test]
    fn a_missing_group_is_a_warning_and_the_parents_group() {
        let imgs = [image(300, 1, 300, 300), image(301, 300, 999, 300)];
        let (plans, warnings) = plan(&imgs, &[]);
        assert_eq!(plans[0].children[0].session, StubSession::Inherit);
        assert_eq!(
            warnings,
            [Warning::process(
                301,
                WarningKind::ProcessGroupMissing { pgid: 999 }
            )]
        );
    }

    #[test]
    fn every_stub_enters_its_directory_as_the_owner() {
        let imgs = [
            image(500, 1, 500, 500),
            image(501, 500, 500, 500),
            image(502, 501, 500, 500),
        ];
        let (mut plans, _) = plan(&imgs, &[]);
        let user = FsIds {
            uid: 1001,
            gid: 1001,
            groups: vec![1001],
        };
        let root = FsIds {
            uid: 0,
            gid: 0,
            groups: vec![0],
        };
        enter_cwd_as(&mut plans, &user, &root);
        fn all(p: &StubPlan, out: &mut Vec<Option<(FsIds, FsIds)>>) {
            out.push(p.cwd_as.clone());
            for c in &p.children {
                all(c, out);
            }
        }
        let mut got = Vec::new();
        all(&plans[0], &mut got);
        assert_eq!(got, vec![Some((user, root)); 3]);
    }

    #[test]
    fn an_orphan_that_cannot_be_placed_is_refused() {
        // The zombie's parent is not in the image.
        let imgs = [image(400, 1, 400, 400)];
        let zombie = Zombie {
            pid: 401,
            ppid: 402,
            pgid: 400,
            sid: 400,
            status: 0,
        };
        let refs: Vec<&Image> = imgs.iter().collect();
        let err = stub_plans(&refs, &[zombie], true, &[], &[], 10, 9, &mut Vec::new());
        assert!(matches!(err, Err(RestartError::Tree { .. })), "{err:?}");
    }
}
