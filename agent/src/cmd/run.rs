//! `lifeboat run`: start a program as a checkpointable job (marked in its environment, with
//! lifeboat as its child subreaper) and wait for it, forwarding signals.

use std::process::ExitCode;

use anyhow::{Context, Result};
use nix::unistd::Pid;

use super::support::wait_forwarding;

/// Run `lifeboat run -- CMD...`: start the job and wait for it.
pub fn run(cmd: &[String]) -> Result<ExitCode> {
    let (prog, args) = cmd.split_first().context("no command given")?;
    // Orphaned descendants of the job are re-parented to us, keeping the job one tree.
    let _ = nix::sys::prctl::set_child_subreaper(true);
    let child = std::process::Command::new(prog)
        .args(args)
        .env(RUN_MARK, "1")
        .spawn()
        .with_context(|| format!("cannot start `{prog}`"))?;
    let pid = Pid::from_raw(child.id() as i32);
    eprintln!(
        "lifeboat: job {pid} started: {} (save it with `lifeboat checkpoint {pid}`)",
        cmd.join(" ")
    );
    wait_forwarding(pid)
}

/// Set in the environment of jobs started by `lifeboat run`: their checkpoints save the
/// whole tree by default.
const RUN_MARK: &str = "LIFEBOAT_RUN";

/// Whether `pid` was started by `lifeboat run` (its initial environment has the mark).
pub fn started_by_run(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
        env.split(|&b| b == 0)
            .any(|kv| kv == format!("{RUN_MARK}=1").as_bytes())
    })
}
