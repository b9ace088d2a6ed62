//! Which processes a checkpoint action saves: a selector matched against process facts.
//!
//! The agent reads `/proc` into [`ProcessInfo`]; [`Target::matches`] decides without any
//! I/O. Criteria combine with AND; a target always has at least one. Of the processes
//! that match, [`Target::topmost`] picks those whose parent does not (each is saved with
//! its descendants), and [`Target::job_of`] names the batch job each is filed under.

use std::collections::HashSet;
use std::fmt;

use globset::GlobMatcher;
use regex::Regex;
use serde::{Serialize, Serializer};

/// Facts about one process, as the agent reads them from `/proc/PID`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Process ID.
    pub pid: i32,
    /// Parent process ID.
    pub ppid: i32,
    /// Kernel command name (`/proc/PID/comm`, at most 15 bytes).
    pub comm: String,
    /// Arguments (`/proc/PID/cmdline`).
    pub cmdline: Vec<String>,
    /// Real user ID.
    pub uid: u32,
    /// User name of `uid`, when it resolves.
    pub user: Option<String>,
    /// cgroup v2 path (`/proc/PID/cgroup`, the `0::` line), e.g.
    /// `/system.slice/slurmstepd.scope/job_42/step_0/user/task_0`.
    pub cgroup: String,
    /// Environment (`/proc/PID/environ`).
    pub environ: Vec<(String, String)>,
}

/// Environment variables that name a batch job (Slurm, PBS, LSF, Flux, Grid Engine, and
/// lifeboat's own), in the order they are tried.
pub const JOB_VARS: [&str; 6] = [
    "SLURM_JOB_ID",
    "PBS_JOBID",
    "LSB_JOBID",
    "FLUX_JOB_ID",
    "JOB_ID",
    "LIFEBOAT_JOB",
];

impl ProcessInfo {
    /// The value of environment variable `name` (its first occurrence).
    pub fn env(&self, name: &str) -> Option<&str> {
        self.environ
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The batch job this process belongs to: the first of [`JOB_VARS`] it has.
    pub fn job(&self) -> Option<&str> {
        JOB_VARS.iter().find_map(|var| self.env(var))
    }
}

/// A text pattern: a glob (`python*`, `{mpirun,srun}`) or a regular expression.
#[derive(Debug, Clone)]
pub enum Pattern {
    /// Shell-style glob over the whole text (`*` also matches `/`).
    Glob {
        /// The pattern as written.
        pattern: String,
        /// Compiled form.
        matcher: GlobMatcher,
    },
    /// Regular expression, unanchored unless it anchors itself.
    Regex(Regex),
}

impl Pattern {
    /// Compiles a glob.
    pub fn glob(pattern: &str) -> Result<Pattern, globset::Error> {
        let matcher = globset::GlobBuilder::new(pattern)
            .literal_separator(false)
            .backslash_escape(true)
            .build()?
            .compile_matcher();
        Ok(Pattern::Glob {
            pattern: pattern.to_owned(),
            matcher,
        })
    }

    /// Compiles a regular expression.
    pub fn regex(pattern: &str) -> Result<Pattern, regex::Error> {
        Regex::new(pattern).map(Pattern::Regex)
    }

    /// True if `text` matches.
    pub fn is_match(&self, text: &str) -> bool {
        match self {
            Pattern::Glob { matcher, .. } => matcher.is_match(text),
            Pattern::Regex(re) => re.is_match(text),
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        match self {
            Pattern::Glob { pattern, .. } => pattern,
            Pattern::Regex(re) => re.as_str(),
        }
    }

    fn is_regex(&self) -> bool {
        matches!(self, Pattern::Regex(_))
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.is_regex() == other.is_regex() && self.as_str() == other.as_str()
    }
}

impl fmt::Display for Pattern {
    /// `"glob"` or `/regex/`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Glob { pattern, .. } => write!(f, "{pattern:?}"),
            Pattern::Regex(re) => write!(f, "/{}/", re.as_str()),
        }
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(1))?;
        let key = if self.is_regex() { "regex" } else { "glob" };
        m.serialize_entry(key, self.as_str())?;
        m.end()
    }
}

/// A scheduler job criterion: the process has environment variable `env`, optionally
/// with value `id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobSelector {
    /// Variable name, e.g. `SLURM_JOB_ID`.
    pub env: String,
    /// Required value, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// A selector over processes. Every present criterion must hold; at least one is present
/// (validation guarantees it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Target {
    /// Any of these PIDs (empty: no PID criterion).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pids: Vec<i32>,
    /// Command name: matched against `comm` and against the basename of `argv[0]`
    /// (comm is cut to 15 bytes by the kernel).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<Pattern>,
    /// User name, or numeric UID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Glob over the cgroup path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<Pattern>,
    /// Scheduler job, from the process environment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<JobSelector>,
}

impl Target {
    /// True if the process meets every criterion of this target.
    pub fn matches(&self, p: &ProcessInfo) -> bool {
        if !self.pids.is_empty() && !self.pids.contains(&p.pid) {
            return false;
        }
        if let Some(comm) = &self.comm {
            let argv0 = p.cmdline.first().map(|a| a.rsplit('/').next().unwrap_or(a));
            if !comm.is_match(&p.comm) && !argv0.is_some_and(|a| comm.is_match(a)) {
                return false;
            }
        }
        if let Some(user) = &self.user {
            let by_uid = user.parse::<u32>().is_ok_and(|uid| uid == p.uid);
            if !by_uid && p.user.as_deref() != Some(user.as_str()) {
                return false;
            }
        }
        if self.cgroup.as_ref().is_some_and(|c| !c.is_match(&p.cgroup)) {
            return false;
        }
        if let Some(job) = &self.job {
            let found = p
                .environ
                .iter()
                .any(|(k, v)| *k == job.env && job.id.as_ref().is_none_or(|id| id == v));
            if !found {
                return false;
            }
        }
        true
    }

    /// The processes a checkpoint of this target saves, in the order of `procs`: those
    /// that match and whose parent does not. A match whose parent matches too is saved
    /// with its parent's tree, so no process is saved twice.
    pub fn topmost<'p>(&self, procs: &'p [ProcessInfo]) -> Vec<&'p ProcessInfo> {
        let matching: Vec<&ProcessInfo> = procs.iter().filter(|p| self.matches(p)).collect();
        let pids: HashSet<i32> = matching.iter().map(|p| p.pid).collect();
        matching
            .into_iter()
            .filter(|p| !pids.contains(&p.ppid))
            .collect()
    }

    /// The batch job a process this target chose is filed under: the value of the job
    /// variable the target selects on, if the process has it, else [`ProcessInfo::job`].
    pub fn job_of<'p>(&self, p: &'p ProcessInfo) -> Option<&'p str> {
        self.job
            .as_ref()
            .and_then(|j| p.env(&j.env))
            .or_else(|| p.job())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pids.is_empty()
            && self.comm.is_none()
            && self.user.is_none()
            && self.cgroup.is_none()
            && self.job.is_none()
    }
}

impl fmt::Display for Target {
    /// "processes with SLURM_JOB_ID set and comm "python*"".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.pids.is_empty() {
            let pids: Vec<String> = self.pids.iter().map(ToString::to_string).collect();
            parts.push(format!("pid {}", pids.join("|")));
        }
        if let Some(job) = &self.job {
            match &job.id {
                Some(id) => parts.push(format!("{}={id}", job.env)),
                None => parts.push(format!("{} set", job.env)),
            }
        }
        if let Some(c) = &self.comm {
            parts.push(format!("comm {c}"));
        }
        if let Some(u) = &self.user {
            parts.push(format!("user {u}"));
        }
        if let Some(c) = &self.cgroup {
            parts.push(format!("cgroup {c}"));
        }
        write!(f, "processes with {}", parts.join(" and "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc_info() -> ProcessInfo {
        ProcessInfo {
            pid: 4242,
            ppid: 4000,
            comm: "python3".into(),
            cmdline: vec!["/usr/bin/python3".into(), "train.py".into()],
            uid: 1000,
            user: Some("alice".into()),
            cgroup: "/system.slice/slurmstepd.scope/job_77/step_0/user/task_0".into(),
            environ: vec![
                ("SLURM_JOB_ID".into(), "77".into()),
                ("HOME".into(), "/h".into()),
            ],
        }
    }

    fn target() -> Target {
        Target {
            pids: vec![],
            comm: None,
            user: None,
            cgroup: None,
            job: None,
        }
    }

    fn check(t: Target, expected: bool) {
        assert_eq!(t.matches(&proc_info()), expected, "{t}");
    }

    #[test]
    fn each_criterion_alone() {
        check(
            Target {
                pids: vec![1, 4242],
                ..target()
            },
            true,
        );
        check(
            Target {
                pids: vec![1],
                ..target()
            },
            false,
        );
        let glob = |p: &str| Pattern::glob(p).unwrap();
        check(
            Target {
                comm: Some(glob("py*")),
                ..target()
            },
            true,
        );
        check(
            Target {
                comm: Some(glob("mpirun")),
                ..target()
            },
            false,
        );
        let re = Pattern::regex("^python[0-9]$").unwrap();
        check(
            Target {
                comm: Some(re),
                ..target()
            },
            true,
        );
        check(
            Target {
                user: Some("alice".into()),
                ..target()
            },
            true,
        );
        check(
            Target {
                user: Some("1000".into()),
                ..target()
            },
            true,
        );
        check(
            Target {
                user: Some("bob".into()),
                ..target()
            },
            false,
        );
        check(
            Target {
                cgroup: Some(glob("*/job_77/*")),
                ..target()
            },
            true,
        );
        check(
            Target {
                cgroup: Some(glob("*/job_78/*")),
                ..target()
            },
            false,
        );
        let job = |id: Option<&str>| JobSelector {
            env: "SLURM_JOB_ID".into(),
            id: id.map(Into::into),
        };
        check(
            Target {
                job: Some(job(None)),
                ..target()
            },
            true,
        );
        check(
            Target {
                job: Some(job(Some("77"))),
                ..target()
            },
            true,
        );
        check(
            Target {
                job: Some(job(Some("78"))),
                ..target()
            },
            false,
        );
    }

    #[test]
    fn comm_also_matches_argv0_basename() {
        let mut p = proc_info();
        p.comm = "a_very_long_pro".into();
        p.cmdline = vec!["/opt/bin/a_very_long_program_name".into()];
        let t = Target {
            comm: Some(Pattern::glob("a_very_long_program_*").unwrap()),
            ..target()
        };
        assert!(t.matches(&p));
    }

    /// A process of `tree` (pid, ppid, comm, environment).
    fn process(pid: i32, ppid: i32, comm: &str, env: &[(&str, &str)]) -> ProcessInfo {
        ProcessInfo {
            pid,
            ppid,
            comm: comm.into(),
            cmdline: vec![comm.into()],
            environ: env
                .iter()
                .map(|&(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            ..ProcessInfo::default()
        }
    }

    /// Two Slurm jobs, a PBS job and a shell, as the agent reads them (sorted by PID):
    /// job 77 is `slurmstepd(10) → bash(11) → python3(12) → python3(13)`, where the
    /// step daemon has no job variable; job 78 is `python3(20)` under `env -i(19)`, which
    /// has none either, under `bash(18)`; PBS job 5 is `mpirun(30) → a.out(31)`.
    fn tree() -> Vec<ProcessInfo> {
        let slurm77 = [("SLURM_JOB_ID", "77")];
        let slurm78 = [("SLURM_JOB_ID", "78")];
        vec![
            process(1, 0, "systemd", &[]),
            process(10, 1, "slurmstepd", &[]),
            process(11, 10, "bash", &slurm77),
            process(12, 11, "python3", &slurm77),
            process(13, 12, "python3", &slurm77),
            process(18, 1, "bash", &slurm78),
            process(19, 18, "env", &[]),
            process(20, 19, "python3", &slurm78),
            process(30, 1, "mpirun", &[("PBS_JOBID", "5.server")]),
            process(
                31,
                30,
                "a.out",
                &[("PBS_JOBID", "5.server"), ("LIFEBOAT_JOB", "x")],
            ),
            process(40, 1, "bash", &[("HOME", "/root")]),
        ]
    }

    fn check_topmost(t: Target, expected: &[i32]) {
        let procs = tree();
        let chosen: Vec<i32> = t.topmost(&procs).iter().map(|p| p.pid).collect();
        assert_eq!(chosen, expected, "{t}");
    }

    #[test]
    fn topmost_matches_only() {
        let job = |env: &str, id: Option<&str>| {
            Some(JobSelector {
                env: env.into(),
                id: id.map(Into::into),
            })
        };
        // Each job once, by its topmost matching process; 20's parent does not match.
        check_topmost(
            Target {
                job: job("SLURM_JOB_ID", None),
                ..target()
            },
            &[11, 18, 20],
        );
        check_topmost(
            Target {
                job: job("SLURM_JOB_ID", Some("77")),
                ..target()
            },
            &[11],
        );
        // The python3 processes: 12 (its parent is bash) and 20, not 13 under 12.
        check_topmost(
            Target {
                comm: Some(Pattern::glob("python*").unwrap()),
                ..target()
            },
            &[12, 20],
        );
        check_topmost(
            Target {
                pids: vec![13, 31],
                ..target()
            },
            &[13, 31],
        );
        check_topmost(
            Target {
                job: job("PBS_JOBID", None),
                ..target()
            },
            &[30],
        );
        check_topmost(
            Target {
                comm: Some(Pattern::glob("no-such-program").unwrap()),
                ..target()
            },
            &[],
        );
    }

    #[test]
    fn jobs_are_named_by_the_selected_variable_then_the_usual_ones() {
        let procs = tree();
        let find = |pid: i32| procs.iter().find(|p| p.pid == pid).unwrap();
        let by = |env: Option<&str>| Target {
            job: env.map(|e| JobSelector {
                env: e.into(),
                id: None,
            }),
            pids: vec![1],
            ..target()
        };
        for (target, pid, expected) in [
            (by(None), 12, Some("77")),
            (by(None), 31, Some("5.server")),
            (by(Some("LIFEBOAT_JOB")), 31, Some("x")),
            (by(Some("LIFEBOAT_JOB")), 30, Some("5.server")),
            (by(Some("SLURM_JOB_ID")), 30, Some("5.server")),
            (by(None), 40, None),
            (by(None), 10, None),
        ] {
            assert_eq!(target.job_of(find(pid)), expected, "{target}, PID {pid}");
        }
        assert_eq!(find(31).job(), Some("5.server"));
        assert_eq!(find(31).env("LIFEBOAT_JOB"), Some("x"));
        assert_eq!(find(40).env("SLURM_JOB_ID"), None);
    }

    #[test]
    fn criteria_combine_with_and() {
        let t = Target {
            user: Some("alice".into()),
            pids: vec![1],
            ..target()
        };
        check(t, false);
        let t = Target {
            user: Some("alice".into()),
            pids: vec![4242],
            ..target()
        };
        check(t, true);
    }
}
