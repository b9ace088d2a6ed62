//! What several subcommands share: sizes for humans, progress on a terminal, exit
//! statuses, hints attached to errors, closed pipes, and waiting for a child while
//! forwarding signals to it.

use std::io::{self, IsTerminal};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use nix::sys::signal::{self, SigSet, Signal};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

/// What to do about an error, printed after it as `lifeboat: hint: ...`. Attached with
/// [`Hinted::hint`]; `main` finds it in the chain and prints it once, on its own line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint(pub String);

impl std::fmt::Display for Hint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Attaching a [`Hint`] to an error.
pub trait Hinted<T> {
    /// The same result, its error carrying `hint`.
    fn hint(self, hint: impl Into<String>) -> Result<T>;
}

impl<T> Hinted<T> for Result<T> {
    fn hint(self, hint: impl Into<String>) -> Result<T> {
        self.map_err(|e| e.context(Hint(hint.into())))
    }
}

/// Whether an error comes from writing to a closed pipe (`lifeboat inspect --json |
/// head`): the reader has what it wanted, which is a success. Looks through the chain
/// and into serde_json's errors, which hide the I/O error they wrap.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
            || e.downcast_ref::<serde_json::Error>()
                .is_some_and(|j| j.io_error_kind() == Some(io::ErrorKind::BrokenPipe))
    })
}

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

/// Below this many bytes a checkpoint or restart is quick: no progress is drawn.
const PROGRESS_FROM: u64 = 64 << 20;

/// Progress of a long checkpoint or restart on stderr, when stderr is a terminal and
/// `-q` was not given: bytes done and in all, the rate and the time left (indicatif,
/// redrawn at most 20 times a second). Nothing at all otherwise.
#[derive(Debug)]
pub struct Progress {
    enabled: bool,
    label: &'static str,
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    /// A progress display saying `label`, silent with `quiet` or when stderr is no
    /// terminal.
    pub fn new(label: &'static str, quiet: bool) -> Self {
        Progress {
            enabled: !quiet && io::stderr().is_terminal(),
            label,
            bar: None,
        }
    }

    /// `done` of `total` bytes; drawn only for [`PROGRESS_FROM`] bytes or more.
    pub fn update(&mut self, done: u64, total: u64) {
        if !self.enabled || total < PROGRESS_FROM {
            return;
        }
        let bar = self.bar.get_or_insert_with(|| {
            let bar = indicatif::ProgressBar::with_draw_target(
                Some(total),
                indicatif::ProgressDrawTarget::stderr(),
            );
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg}: {binary_bytes}/{binary_total_bytes}, {binary_bytes_per_sec}, ETA {eta} [{wide_bar}]",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_message(self.label);
            bar
        });
        bar.set_length(total);
        bar.set_position(done);
    }

    /// Take the display off the terminal (the result is printed next).
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
