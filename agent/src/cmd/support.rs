//! What several subcommands share: sizes for humans, a progress line on a terminal, exit
//! statuses, and waiting for a child while forwarding signals to it.

use std::io::{self, IsTerminal};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use nix::sys::signal::{self, SigSet, Signal};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

/// `SUCCESS` if `ok`, else `FAILURE`.
pub fn status(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A child's end as an exit status: its own code, or 128+N if signal N killed it.
fn exit_code(status: WaitStatus) -> ExitCode {
    match status {
        WaitStatus::Exited(_, code) => ExitCode::from(code as u8),
        WaitStatus::Signaled(_, sig, _) => ExitCode::from(128 + sig as u8),
        _ => ExitCode::FAILURE,
    }
}

/// Wait for our child `pid`, forwarding SIGINT, SIGTERM and SIGHUP to it.
pub fn wait_forwarding(pid: Pid) -> Result<ExitCode> {
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

/// `512 B`, `1.5 KiB`, `3.2 GiB`.
pub fn human(bytes: u64) -> String {
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
#[derive(Debug)]
pub struct ProgressLine {
    enabled: bool,
    last: Instant,
    label: &'static str,
}

impl ProgressLine {
    /// A progress line saying `label`, silent with `quiet` or when stderr is no terminal.
    pub fn new(label: &'static str, quiet: bool) -> Self {
        ProgressLine {
            enabled: !quiet && io::stderr().is_terminal(),
            last: Instant::now(),
            label,
        }
    }

    /// `done` of `total` bytes; drawn only for 64 MiB or more.
    pub fn update(&mut self, done: u64, total: u64) {
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
