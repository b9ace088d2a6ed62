//! `lifeboat checkpoint`: save a process, a tree, a process group or a session to a
//! context file; a job started by `lifeboat run` is saved as a tree by default.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use lifeboat_engine::{self as engine, After};

use super::support::{ProgressLine, human};
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
    let mut bar = ProgressLine::new("saving memory", a.quiet);
    let report = engine::checkpoint(a.pid, &path, &opts, &mut |p| bar.update(p.done, p.total))
        .with_context(|| format!("checkpoint of PID {} failed", a.pid))?;
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
        println!(
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
        );
    }
    Ok(ExitCode::SUCCESS)
}
