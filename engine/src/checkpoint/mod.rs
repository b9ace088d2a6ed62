//! Checkpoint: freeze a scope of processes, collect their state and write a context file.
//!
//! The order of the steps, and nothing else (each kind of state reads itself in its file
//! under `state/`):
//! 1. [`scope`]: permission checks before anything is touched, then every process of the
//!    scope frozen (re-scanned until no new member appears); zombies noted.
//! 2. [`collect`] for each process: state only the process can report, by injected system
//!    calls into a scratch page that is unmapped again; then threads, process-wide state,
//!    memory regions and descriptors from `/proc` and ptrace.
//! 3. Across processes: open file descriptions shared by several, unix socket pairs whole.
//! 4. The image: META, ZOMBIES, then per process its sections and its pages
//!    (`state::pages`), streamed.
//! 5. The frozen time (FROZEN) as the last section; release: a process that runs on is
//!    let go before the fsync; one that stops, terminates or dies waits until the image is
//!    durable under its name.
//!
//! Every `?` after the freeze drops the [`Frozen`] guards, which resume the processes: a
//! failed checkpoint never loses them.

pub(crate) mod collect;
pub(crate) mod error;
pub(crate) mod scope;

pub use error::CheckpointError;
pub(crate) use error::inject;

pub use scope::Scope;

use crate::Progress;
use crate::image::{self, ImageError};
use crate::ptrace::{After, Frozen};
use crate::state;
use crate::warning::Warning;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How to checkpoint.
#[derive(Debug, Clone)]
pub struct CheckpointOptions {
    /// What happens to the processes afterwards.
    pub after: After,
    /// Compress page data and file contents with zstd.
    pub compress: bool,
    /// Which processes.
    pub scope: Scope,
}

impl Default for CheckpointOptions {
    fn default() -> Self {
        CheckpointOptions {
            after: After::Run,
            compress: false,
            scope: Scope::Pid,
        }
    }
}

/// What a checkpoint produced.
#[derive(Debug, Clone)]
pub struct CheckpointReport {
    /// The context file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Processes saved (the root first).
    pub pids: Vec<i32>,
    /// Zombies saved for their parents' wait(): their PIDs too are taken again on restart.
    pub zombies: Vec<i32>,
    /// Threads saved, over all processes.
    pub threads: usize,
    /// Pages saved (zero pages elided).
    pub pages: u64,
    /// Wall time of the whole checkpoint.
    pub elapsed: Duration,
    /// Time the processes were frozen: from the freeze until the image's last byte was
    /// written, when a process that runs on is released (one that stops, terminates or
    /// dies waits for the fsync too). The image records the same value (`inspect`).
    pub frozen: Duration,
    /// Things saved differently than asked (a zombie left out).
    pub warnings: Vec<Warning>,
}

/// Checkpoint `pid` (with the processes its scope adds) into the context file `path`.
///
/// Every process of the scope is frozen before any is examined, so the image is one
/// consistent moment of the whole job; on any error every process is resumed.
pub fn checkpoint(
    pid: i32,
    path: &Path,
    opts: &CheckpointOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<CheckpointReport, CheckpointError> {
    let started = Instant::now();
    let mut warnings = Vec::new();
    let (frozen, zombie_stats) = scope::freeze_scope(pid, opts.scope)?;
    let zombies = state::process::zombies_in_scope(&frozen, zombie_stats, &mut warnings);
    let frozen_at = Instant::now();
    let mut images = Vec::with_capacity(frozen.len());
    // TCP connections in repair mode until the processes' fate is decided (dropped on
    // an error: they leave repair mode before the processes are resumed).
    let mut held = state::sockets::Held::default();
    for f in &frozen {
        images.push(collect::collect(f, &mut warnings, &mut held)?);
    }
    state::files::find_shared_files(&mut images);
    state::sockets::check_pairs_whole(&images)?;

    let mut writer = image::Writer::create(path, opts.compress)?;
    let mut meta = images[0].meta.clone();
    meta.frozen_us = frozen_at.elapsed().as_micros() as u64;
    writer.meta(&meta)?;
    writer.zombies(&zombies)?;
    let mut pages = 0;
    for image in &images {
        writer.process(image)?;
        let mut stream = writer.pages()?;
        let (runs, n) = state::pages::save(
            image.process.pid,
            &image.regions,
            &mut stream,
            path,
            progress,
        )?;
        stream.finish().map_err(ImageError::from)?;
        writer.pagemap(&runs)?;
        pages += n;
    }
    // Every byte of the image is written (not yet fsynced). A process that runs on can
    // be let go now: if the fsync fails, it is still running, as on any error. One that
    // stops, terminates or dies waits until the image is durable under its name.
    let release_all = |frozen: Vec<Frozen>| -> Result<(), CheckpointError> {
        // Children first: a parent resumed first could see a child still frozen.
        let mut first_err = None;
        for f in frozen.into_iter().rev() {
            if let Err(e) = f.release(opts.after) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), |e| Err(e.into()))
    };
    let pids = images.iter().map(|i| i.process.pid).collect();
    let threads = images.iter().map(|i| i.threads.len()).sum();
    // The frozen time, from the freeze to the last byte, is recorded (FROZEN) and
    // reported alike: it is when a process that runs on is released.
    let frozen_for = frozen_at.elapsed();
    writer.frozen(frozen_for)?;
    let bytes = if opts.after == After::Run {
        held.resume();
        release_all(frozen)?;
        writer.finish()?
    } else {
        let bytes = writer.finish()?;
        if opts.after == After::Stop {
            held.resume();
        }
        release_all(frozen)?;
        // Killed or terminated: their connections close still in repair mode, without
        // a FIN or RST to the peer, which a restart finds as it was.
        held.discard();
        bytes
    };
    Ok(CheckpointReport {
        path: path.to_owned(),
        bytes,
        pids,
        zombies: zombies.iter().map(|z| z.pid).collect(),
        threads,
        pages,
        elapsed: started.elapsed(),
        frozen: frozen_for,
        warnings,
    })
}
