//! `lifeboat check`: whether this kernel offers what the engine needs. Each feature the
//! engine probes is required (without it nothing is checkpointed or restarted) or
//! optional (lifeboat works, with the cost [`Need::cost`] says); the exit status is 0
//! when every required feature is there, and each missing feature says what it costs
//! and how to get it.

use std::io::{self, Write};
use std::process::ExitCode;

use anyhow::Result;
use lifeboat_engine::{self as engine, Feature};
use serde::Serialize;

use super::support::status;

/// What lifeboat needs a feature for, and what to do without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    /// Without it, checkpoints or restarts fail.
    pub required: bool,
    /// What is lost without it.
    pub cost: &'static str,
    /// How to get it.
    pub how: &'static str,
}

/// The engine's features by the name `engine::check` gives them. A feature this table
/// does not know (a newer engine's) counts as required: a gap is never hidden.
const NEEDS: &[(&str, Need)] = &[
    (
        "x86-64 Linux kernel",
        Need {
            required: true,
            cost: "the engine saves x86-64 registers only: nothing can be checkpointed",
            how: "run lifeboat on an x86-64 Linux node",
        },
    ),
    (
        "ptrace permitted (Yama)",
        Need {
            required: true,
            cost: "no process can be frozen: nothing can be checkpointed",
            how: "sysctl kernel.yama.ptrace_scope=1 (a scope of 3 needs a reboot to lower)",
        },
    ),
    (
        "CONFIG_CHECKPOINT_RESTORE",
        Need {
            required: true,
            cost: "mapped files and PIDs cannot be examined or restored",
            how: "a kernel built with CONFIG_CHECKPOINT_RESTORE=y (every major distribution's)",
        },
    ),
    (
        "clone3 set_tid (restore PIDs)",
        Need {
            required: false,
            cost: "restarts keep no PIDs: use `restart --no-restore-pid` (a job then gets its PIDs in a new PID namespace)",
            how: "run as root, or give lifeboat CAP_CHECKPOINT_RESTORE (Linux 5.9+)",
        },
    ),
    (
        "PR_SET_MM_MAP exe link",
        Need {
            required: false,
            cost: "/proc/PID/exe of a restarted process names lifeboat instead of the program",
            how: "run as root, or give lifeboat CAP_CHECKPOINT_RESTORE (Linux 5.9+)",
        },
    ),
    (
        "raise hard resource limits",
        Need {
            required: false,
            cost: "resource limits above lifeboat's own hard limits are not restored (each one is reported)",
            how: "run as root, or give lifeboat CAP_SYS_RESOURCE",
        },
    ),
    (
        "[vdso] with a syscall instruction",
        Need {
            required: true,
            cost: "no system call can be injected: nothing can be checkpointed or restarted",
            how: "a kernel with the vDSO enabled (vdso=1 on the kernel command line, the default)",
        },
    ),
    (
        "[vvar] and [vvar_vclock]",
        Need {
            required: true,
            cost: "a restarted process's clock pages cannot be placed where it had them",
            how: "a kernel with the vDSO enabled (vdso=1 on the kernel command line, the default)",
        },
    ),
    (
        "memfd_create",
        Need {
            required: false,
            cost: "processes holding deleted files (open or mapped) cannot be restarted",
            how: "Linux 3.17+ with memfd_create allowed (a seccomp policy may forbid it)",
        },
    ),
    (
        "kcmp",
        Need {
            required: false,
            cost: "descriptors that share one open file are restored as separate files (their offset is no longer shared)",
            how: "a kernel built with CONFIG_KCMP=y (implied by CONFIG_CHECKPOINT_RESTORE)",
        },
    ),
    (
        "ptrace a test process",
        Need {
            required: true,
            cost: "the probes of ptrace could not run",
            how: "make `sleep` runnable (coreutils) and let lifeboat start processes",
        },
    ),
    (
        "PTRACE_SEIZE + PTRACE_INTERRUPT",
        Need {
            required: true,
            cost: "no process can be frozen: nothing can be checkpointed",
            how: "run as root or as the processes' owner, with ptrace allowed (Yama, seccomp, LSM)",
        },
    ),
    (
        "PTRACE_GETREGSET NT_X86_XSTATE",
        Need {
            required: true,
            cost: "floating-point and vector registers cannot be saved",
            how: "Linux 3.4+ on x86-64",
        },
    ),
    (
        "PTRACE_GET_RSEQ_CONFIGURATION",
        Need {
            required: true,
            cost: "threads' restartable sequences cannot be saved, so checkpoints fail",
            how: "Linux 5.13+",
        },
    ),
    (
        "PTRACE_PEEKSIGINFO",
        Need {
            required: true,
            cost: "pending signals cannot be saved, so checkpoints fail",
            how: "Linux 3.10+",
        },
    ),
    (
        "PTRACE_GETSIGMASK",
        Need {
            required: true,
            cost: "blocked signals cannot be saved, so checkpoints fail",
            how: "Linux 3.11+",
        },
    ),
    (
        "/proc/PID/pagemap",
        Need {
            required: true,
            cost: "which pages a process uses cannot be read, so checkpoints fail",
            how: "a kernel with CONFIG_PROC_PAGE_MONITOR=y, /proc mounted, run as root or the owner",
        },
    ),
    (
        "process_vm_readv",
        Need {
            required: false,
            cost: "memory is read through /proc/PID/mem instead: checkpoints are slower",
            how: "a kernel with CONFIG_CROSS_MEMORY_ATTACH=y, not forbidden by seccomp",
        },
    ),
];

/// What lifeboat needs `name` for.
pub fn need_of(name: &str) -> Need {
    NEEDS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(UNKNOWN, |(_, need)| *need)
}

/// A feature of a newer engine than this table knows.
const UNKNOWN: Need = Need {
    required: true,
    cost: "(not known to this version of `lifeboat check`)",
    how: "see the detail",
};

/// One line of the JSON output: the engine's probe and what it means.
#[derive(Debug, Serialize)]
struct Row<'a> {
    name: &'a str,
    ok: bool,
    detail: &'a str,
    required: bool,
    /// Present when the feature is missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    cost: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    how: Option<&'a str>,
}

/// Run `lifeboat check [--json]`; fails if a required feature is missing.
pub fn run(json: bool) -> Result<ExitCode> {
    let features = engine::check();
    let (text, ok) = render(&features, json)?;
    io::stdout().lock().write_all(text.as_bytes())?;
    Ok(status(ok))
}

/// The report of `features` (text or JSON) and whether every required one is there.
pub fn render(features: &[Feature], json: bool) -> Result<(String, bool)> {
    let rows: Vec<Row<'_>> = features
        .iter()
        .map(|f| {
            let need = need_of(f.name);
            Row {
                name: f.name,
                ok: f.ok,
                detail: &f.detail,
                required: need.required,
                cost: (!f.ok).then_some(need.cost),
                how: (!f.ok).then_some(need.how),
            }
        })
        .collect();
    let ok = rows.iter().all(|r| r.ok || !r.required);
    if json {
        let mut s = serde_json::to_string_pretty(&rows)?;
        s.push('\n');
        return Ok((s, ok));
    }
    let mut out = String::new();
    use std::fmt::Write as _;
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(0);
    for r in &rows {
        let mark = match (r.ok, r.required) {
            (true, _) => "ok",
            (false, true) => "MISSING",
            (false, false) => "missing",
        };
        let kind = if r.required { "required" } else { "optional" };
        writeln!(out, "{mark:<7} {kind:<8} {:<width$}  {}", r.name, r.detail)?;
        if let (Some(cost), Some(how)) = (r.cost, r.how) {
            writeln!(out, "{:18}costs: {cost}", "")?;
            writeln!(out, "{:18}fix:   {how}", "")?;
        }
    }
    let missing = |required: bool| {
        rows.iter()
            .filter(|r| !r.ok && r.required == required)
            .count()
    };
    let (req, opt) = (missing(true), missing(false));
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    match (req, opt) {
        (0, 0) => writeln!(out, "Looks good: every feature is there.")?,
        (0, n) => writeln!(
            out,
            "Looks good: every required feature is there; {n} optional feature{} missing (see above for what {} costs).",
            plural(n),
            if n == 1 { "it" } else { "each" }
        )?,
        (r, o) => writeln!(
            out,
            "{r} required feature{} missing{}: lifeboat cannot work here until {} fixed (see above).",
            plural(r),
            if o > 0 {
                format!(" (and {o} optional)")
            } else {
                String::new()
            },
            if r == 1 { "it is" } else { "they are" }
        )?,
    }
    Ok((out, ok))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feature(name: &'static str, ok: bool) -> Feature {
        Feature {
            name,
            ok,
            detail: format!("detail of {name}"),
        }
    }

    /// The friction point of issue 10: a missing optional feature alone does not fail.
    #[test]
    fn an_optional_gap_alone_succeeds_and_says_what_it_costs() {
        let fs = [
            feature("x86-64 Linux kernel", true),
            feature("raise hard resource limits", false),
        ];
        let (text, ok) = render(&fs, false).unwrap();
        assert!(ok, "{text}");
        assert!(
            text.contains("missing optional raise hard resource limits"),
            "{text}"
        );
        assert!(text.contains("costs: resource limits above"), "{text}");
        assert!(
            text.contains("fix:   run as root, or give lifeboat CAP_SYS_RESOURCE"),
            "{text}"
        );
        assert!(text.contains("1 optional feature missing"), "{text}");
        let (json, ok) = render(&fs, true).unwrap();
        assert!(ok);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v[0]["required"], true);
        assert!(v[0].get("cost").is_none(), "{v}");
        assert_eq!(v[1]["required"], false);
        assert_eq!(v[1]["ok"], false);
        assert!(v[1]["cost"].as_str().unwrap().contains("not restored"));
        assert!(v[1]["how"].as_str().unwrap().contains("CAP_SYS_RESOURCE"));
    }

    #[test]
    fn a_required_gap_fails() {
        let fs = [
            feature("PTRACE_SEIZE + PTRACE_INTERRUPT", false),
            feature("kcmp", false),
        ];
        let (text, ok) = render(&fs, false).unwrap();
        assert!(!ok);
        assert!(text.contains("MISSING required PTRACE_SEIZE"), "{text}");
        assert!(
            text.contains("1 required feature missing (and 1 optional)"),
            "{text}"
        );
        // A feature of a newer engine is never taken for optional.
        let (_, ok) = render(&[feature("a feature from the future", false)], false).unwrap();
        assert!(!ok);
    }

    /// Every feature the engine probes is classified here.
    #[test]
    fn every_probed_feature_is_classified() {
        for f in engine::check() {
            assert!(
                NEEDS.iter().any(|(n, _)| *n == f.name),
                "`lifeboat check` does not know whether {:?} is required",
                f.name
            );
        }
    }
}
