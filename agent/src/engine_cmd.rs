//! The engine subcommands: run, checkpoint, restart, inspect, check.

use crate::cli::{CheckpointArgs, Command, RestartArgs};
use anyhow::{Context, Result, bail};
use lifeboat_engine::{self as engine, After};
use nix::sys::signal::{self, SigSet, Signal};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// Run one subcommand.
pub fn dispatch(cmd: Command) -> Result<ExitCode> {
    match cmd {
        Command::Run { cmd } => run(&cmd),
        Command::Checkpoint(args) => checkpoint(&args),
        Command::Restart(args) => restart(&args),
        Command::Inspect { json, file } => inspect(&file, json),
        Command::Check { json } => check(json),
        Command::Demo { dir } => crate::demo::run(dir),
        Command::Agent(args) => crate::daemon::run(&args),
        Command::Sensors(args) => crate::sensors_cmd::run(&args),
        Command::Rules(cmd) => crate::rules_cmd::run(cmd),
    }
}

fn exit_code(status: WaitStatus) -> ExitCode {
    match status {
        WaitStatus::Exited(_, code) => ExitCode::from(code as u8),
        WaitStatus::Signaled(_, sig, _) => ExitCode::from(128 + sig as u8),
        _ => ExitCode::FAILURE,
    }
}

/// Wait for our child `pid`, forwarding SIGINT, SIGTERM and SIGHUP to it.
fn wait_forwarding(pid: Pid) -> Result<ExitCode> {
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    set.thread_block().context("blocking signals to forward")?;
    std::thread::spawn(move || {
        while let Ok(sig) = set.wait() {
            let _ = signal::kill(pid, sig);
        }
    });
    loop {
        match waitpid(pid, None) {
            Ok(status @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
                return Ok(exit_code(status));
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => bail!("waiting for PID {pid}: {e}"),
        }
    }
}

fn run(cmd: &[String]) -> Result<ExitCode> {
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
fn started_by_run(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
        env.split(|&b| b == 0)
            .any(|kv| kv == format!("{RUN_MARK}=1").as_bytes())
    })
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Progress on stderr when it is a terminal: a line redrawn at most every 100 ms.
struct ProgressLine {
    enabled: bool,
    last: Instant,
    label: &'static str,
}

impl ProgressLine {
    fn new(label: &'static str, quiet: bool) -> Self {
        ProgressLine {
            enabled: !quiet && io::stderr().is_terminal(),
            last: Instant::now(),
            label,
        }
    }
    fn update(&mut self, done: u64, total: u64) {
        if !self.enabled
            || total < (64 << 20)
            || (self.last.elapsed().as_millis() < 100 && done < total)
        {
            return;
        }
        self.last = Instant::now();
        eprint!(
            "\r{}: {:>3}% ({} of {})",
            self.label,
            done * 100 / total.max(1),
            human(done),
            human(total)
        );
        if done >= total {
            eprintln!();
        }
    }
}

fn checkpoint(a: &CheckpointArgs) -> Result<ExitCode> {
    let after = if a.stop {
        After::Stop
    } else if a.term {
        After::Term
    } else if a.kill {
        After::Kill
    } else {
        After::Run
    };
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
    } else if !a.scope_pid && started_by_run(a.pid) {
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

fn restart(a: &RestartArgs) -> Result<ExitCode> {
    let after = if a.stop {
        After::Stop
    } else if a.kill {
        After::Kill
    } else {
        After::Run
    };
    let opts = engine::RestartOptions {
        restore_pid: !a.no_restore_pid,
        after,
    };
    let mut bar = ProgressLine::new("restoring memory", a.quiet);
    let started = Instant::now();
    let restored = engine::restart(&a.file, &opts, &mut |p| bar.update(p.done, p.total))
        .with_context(|| format!("restart from {} failed", a.file.display()))?;
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
        if after != After::Kill {
            let mut out = io::stdout().lock();
            writeln!(out, "{}", restored.pid)?;
            out.flush()?;
        } else {
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

fn inspect(file: &std::path::Path, json: bool) -> Result<ExitCode> {
    let s = engine::inspect(file).with_context(|| format!("cannot inspect {}", file.display()))?;
    let mut out = io::stdout().lock();
    // A damaged image fails either way (the JSON says which sections).
    let status = if s.checksums_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    };
    if json {
        serde_json::to_writer_pretty(&mut out, &s)?;
        writeln!(out)?;
        return Ok(status);
    }
    writeln!(
        out,
        "{}: lifeboat {} image of PID {} ({})",
        s.path, s.engine_version, s.pid, s.command
    )?;
    writeln!(out, "  command   {}", s.cmdline.join(" "))?;
    writeln!(out, "  exe       {}", s.exe)?;
    writeln!(out, "  cwd       {}", s.cwd)?;
    writeln!(
        out,
        "  ids       pid {} ppid {} pgid {} sid {} uid {} gid {}",
        s.pid, s.ppid, s.pgid, s.sid, s.uid, s.gid
    )?;
    writeln!(
        out,
        "  taken     on {} (kernel {}), frozen {:.3} s",
        s.hostname,
        s.kernel,
        s.frozen_us as f64 / 1e6
    )?;
    writeln!(out, "threads ({}):", s.threads.len())?;
    for t in &s.threads {
        writeln!(
            out,
            "  {:>7} {:<16} rip {} mask {} pending {:?}",
            t.tid, t.comm, t.rip, t.sigmask, t.pending
        )?;
    }
    let total: u64 = s.regions.iter().map(|r| r.bytes).sum();
    writeln!(
        out,
        "memory ({} regions, {} mapped, {} saved):",
        s.regions.len(),
        human(total),
        human(s.memory_saved_bytes)
    )?;
    for r in &s.regions {
        writeln!(
            out,
            "  {:>14}-{:<14} {} {:>10} saved {:>10}  {}",
            r.start,
            r.end,
            r.perms,
            human(r.bytes),
            human(r.saved_bytes),
            r.kind
        )?;
    }
    writeln!(out, "descriptors ({}):", s.fds.len())?;
    for f in &s.fds {
        let saved = if f.saved_bytes > 0 {
            format!(" ({} saved)", human(f.saved_bytes as u64))
        } else {
            String::new()
        };
        writeln!(
            out,
            "  {:>4} {:<9} {} flags {} pos {}{}{saved}",
            f.fd,
            f.kind,
            f.target,
            f.flags,
            f.pos,
            if f.cloexec { " cloexec" } else { "" }
        )?;
    }
    writeln!(out, "signal handlers ({}):", s.signal_handlers.len())?;
    for h in &s.signal_handlers {
        writeln!(out, "  {:>3} {} flags {}", h.sig, h.action, h.flags)?;
    }
    if !s.pending_signals.is_empty() {
        writeln!(out, "pending signals (process): {:?}", s.pending_signals)?;
    }
    writeln!(
        out,
        "sections ({}), checksums {}:",
        s.sections.len(),
        if s.checksums_ok { "ok" } else { "FAILED" }
    )?;
    for sec in &s.sections {
        writeln!(
            out,
            "  {:<8} {:>10}  {}",
            sec.kind,
            human(sec.bytes),
            sec.checksum
        )?;
    }
    Ok(status)
}

fn check(json: bool) -> Result<ExitCode> {
    let features = engine::check();
    let ok = features.iter().all(|f| f.ok);
    let mut out = io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &features)?;
        writeln!(out)?;
    } else {
        for f in &features {
            writeln!(
                out,
                "{:<7} {:<38} {}",
                if f.ok { "ok" } else { "MISSING" },
                f.name,
                f.detail
            )?;
        }
        writeln!(
            out,
            "{}",
            if ok {
                "Looks good."
            } else {
                "Some features are missing: see above."
            }
        )?;
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
