//! Which processes a checkpoint action saves: a selector matched against process facts.
//!
//! The agent reads `/proc` into [`ProcessInfo`]; [`Target::matches`] decides without any
//! I/O. Criteria combine with AND; a target always has at least one.

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
