//! `lifeboat restart`: recreate the processes of a context file and, unless detached, wait
//! for every top-level one of them.

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use lifeboat_engine::{self as engine, After};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use super::support::{Progress, wait_forwarding};
use crate::cli::RestartArgs;

/// Run `lifeboat restart`.
pub fn run(a: &RestartArgs) -> Result<ExitCode> {
    let after = a.after();
    // A detached restart's stdout is often the job's too (a pipe): the PID line goes out
    // before the job runs, so that it is always the first line.
    fn print_pid(pid: Pid) {
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "{pid}");
        let _ = out.flush();
    }
    let opts = engine::RestartOptions {
        restore_pid: !a.no_restore_pid,
        after,
        before_release: (a.detach && after != After::Kill).then_some(print_pid as fn(Pid)),
    };
    let mut bar = Progress::new("restoring memory", a.quiet);
    let started = Instant::now();
    let restored = engine::restart(&a.file, &opts, &mut |p| bar.update(p.done, p.total));
    bar.finish();
    let restored = restored.with_context(|| format!("restart from {} failed", a.file.display()))?;
    for w in &restored.warnings {
        eprintln!("lifeboat: warning: {w}");
    }
    if !a.quiet {
        let how = if restored.pids.contains(&restored.pid) {
            format!("as PID {}", restored.pid)
        } else {
            format!(
                "with its {} original PIDs in a new PID namespace (its init is PID {}; host PIDs {})",
                restored.pids.len(),
                restored.pid,
                restored
                    .pids
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        };
        eprintln!(
            "lifeboat: restarted {} {how} in {:.3} s",
            a.file.display(),
            started.elapsed().as_secs_f64()
        );
    }
    if a.detach || after == After::Kill {
        if after == After::Kill {
            let _ = waitpid(restored.pid, None);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let code = wait_forwarding(restored.pid)?;
    // Other top-level processes of a process-group or session image are our children
    // too: wait for them as well, so the job is over when we return.
    if restored.pids.len() > 1 {
        loop {
            match waitpid(None::<Pid>, None) {
                Err(nix::errno::Errno::ECHILD) => break,
                Err(nix::errno::Errno::EINTR) | Ok(_) => continue,
                Err(e) => bail!("waiting for the restored processes: {e}"),
            }
        }
    }
    Ok(code)
}
