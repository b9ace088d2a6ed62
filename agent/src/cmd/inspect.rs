//! `lifeboat inspect`: describe a context file (command, PID, threads, memory, files,
//! signals, checksums) as text or JSON.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use lifeboat_engine as engine;

use super::support::{human, status};

/// Run `lifeboat inspect [--json] FILE`; fails if a checksum does not match.
pub fn run(file: &Path, json: bool) -> Result<ExitCode> {
    let s = engine::inspect(file).with_context(|| format!("cannot inspect {}", file.display()))?;
    let mut out = io::stdout().lock();
    // A damaged image fails either way (the JSON says which sections).
    if json {
        serde_json::to_writer_pretty(&mut out, &s)?;
        writeln!(out)?;
        return Ok(status(s.checksums_ok));
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
    Ok(status(s.checksums_ok))
}
