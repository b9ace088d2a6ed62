//! `lifeboat checkpoint`: save a process, a tree, a process group or a session to a
//! context file; a job started by `lifeboat run` is saved as a tree by default.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use lifeboat_engine::{self as engine, After};

use super::support::{Hinted, Progress, human};
use crate::cli::CheckpointArgs;

/// Run `lifeboat checkpoint`.
pub fn run(a: &CheckpointArgs) -> Result<ExitCode> {
    let after = a.after();
    let path = a
        .file
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("context.{}", a.pid)));
    let scope = if a.tree {
        engine::Scope::Tree
    } else if a.pgid {
        engine::Scope::Pgid
    } else if a.sid {
        engine::Scope::Sid
    } else if !a.scope_pid && super::run::started_by_run(a.pid) {
        engine::Scope::Tree
    } else {
        engine::Scope::Pid
    };
    let opts = engine::CheckpointOptions {
        after,
        compress: a.compress,
        scope,
    };
    let mut bar = Progress::new("saving memory", a.quiet);
    let report = engine::checkpoint(a.pid, &path, &opts, &mut |p| bar.update(p.done, p.total));
    bar.finish();
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            let denied = denied(&e);
            let err = Err(anyhow::Error::from(e))
                .with_context(|| format!("checkpoint of PID {} failed", a.pid));
            return if denied {
                err.hint(denied_hint(a.pid))
            } else {
                err
            };
        }
    };
    for w in &report.warnings {
        eprintln!("lifeboat: warning: {w}");
    }
    if !a.quiet {
        let then = match after {
            After::Run => "left running",
            After::Stop => "left stopped",
            After::Term => "sent SIGTERM",
            After::Kill => "killed",
        };
        let list = |pids: &[i32]| {
            pids.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut what = match report.pids.as_slice() {
            [one] => format!("PID {one}"),
            many => format!("{} processes ({})", many.len(), list(many)),
        };
        match report.zombies.as_slice() {
            [] => {}
            [one] => what += &format!(" and a zombie ({one})"),
            many => what += &format!(" and {} zombies ({})", many.len(), list(many)),
        }
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "checkpointed {what} to {}: {}, {} thread{}, {} of memory, in {:.3} s (frozen {:.3} s); {} {then}",
            report.path.display(),
            human(report.bytes),
            report.threads,
            if report.threads == 1 { "" } else { "s" },
            human(report.pages * 4096),
            report.elapsed.as_secs_f64(),
            report.frozen.as_secs_f64(),
            if report.pids.len() == 1 {
                "process"
            } else {
                "processes"
            },
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether access to the process was refused: by lifeboat (another user's process) or
/// by the kernel (EACCES or EPERM anywhere in the error: its `/proc` files, ptrace).
fn denied(e: &engine::CheckpointError) -> bool {
    if matches!(e, engine::CheckpointError::NotPermitted { .. }) {
        return true;
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        let errno = c
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
            .or_else(|| c.downcast_ref::<nix::errno::Errno>().map(|e| *e as i32));
        if matches!(errno, Some(libc::EACCES | libc::EPERM)) {
            return true;
        }
        cause = c.source();
    }
    false
}

/// What to do when the kernel refuses access to `pid`.
fn denied_hint(pid: i32) -> String {
    let init = if pid == 1 {
        "PID 1 is the init of this PID namespace (a container runtime or the init \
         system, often shielded from tracing): lifeboat saves jobs, not the init; give \
         the job's PID (`lifeboat run` prints it). "
    } else {
        ""
    };
    let how = if nix::unistd::geteuid().is_root() {
        "Root is refused too when the process is in another user namespace or when Yama, \
         seccomp or a security module forbids tracing it; `lifeboat check` says whether \
         ptrace works here."
    } else {
        "Only its owner or root may checkpoint a process: for another user's, run \
         `sudo lifeboat checkpoint`; `lifeboat check` says whether ptrace works here."
    };
    format!("access to PID {pid} needs the right to trace it. {init}{how}")
}

#[cfg(test)]
mod tests {
    use super::denied_hint;

    #[test]
    fn pid_1_is_named_as_the_init() {
        let h = denied_hint(1);
        assert!(h.contains("PID 1 is the init of this PID namespace"), "{h}");
        assert!(h.contains("`lifeboat check`"), "{h}");
        assert!(!denied_hint(4242).contains("init"));
    }
}
