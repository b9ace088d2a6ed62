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
//! 5. Release: a process that runs on is let go before the fsync; one that stops,
//!    terminates or dies waits until the image is durable under its name.
//!
//! Every `?` after the freeze drops the [`Frozen`] guards, which resume the processes: a
//! failed checkpoint never loses them.

pub(crate) mod collect;
pub(crate) mod scope;

pub use scope::Scope;

use crate::Progress;
use crate::image::{self, ImageError};
use crate::procfs::ProcError;
use crate::ptrace::{After, Frozen, Remote, TraceError};
use crate::state;
use crate::warning::Warning;
use nix::errno::Errno;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Failures of a checkpoint. The process keeps running after any of them.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// No such process.
    #[error("no process with PID {pid}")]
    NoProcess {
        /// PID.
        pid: i32,
    },
    /// The caller may not checkpoint this process.
    #[error("PID {pid} belongs to UID {owner}; only its owner or root may checkpoint it")]
    NotPermitted {
        /// PID.
        pid: i32,
        /// Owner.
        owner: u32,
    },
    /// Set-id processes are refused, as core dumps refuse them.
    #[error(
        "PID {pid} runs with changed privileges (set-user-ID or set-group-ID: {detail}); it is refused, as a core dump would be"
    )]
    SetId {
        /// PID.
        pid: i32,
        /// Which IDs differ.
        detail: String,
    },
    /// The process made itself non-dumpable.
    #[error(
        "PID {pid} is not dumpable (it called prctl(PR_SET_DUMPABLE, 0) or changed credentials); it is refused, as a core dump would be"
    )]
    NotDumpable {
        /// PID.
        pid: i32,
    },
    /// Kernel threads have no user state.
    #[error("PID {pid} is a kernel thread")]
    KernelThread {
        /// PID.
        pid: i32,
    },
    /// The scope names no process, or one that cannot be saved with the others.
    #[error("{what}")]
    Scope {
        /// What is wrong.
        what: String,
    },
    /// A process cannot checkpoint itself.
    #[error("PID {pid} is lifeboat itself")]
    SelfCheckpoint {
        /// PID.
        pid: i32,
    },
    /// A descriptor of a kind this engine cannot restore yet.
    #[error("PID {pid}: descriptor {fd} is {what}, which this version cannot checkpoint")]
    UnsupportedFd {
        /// PID.
        pid: i32,
        /// Descriptor.
        fd: i32,
        /// What it refers to.
        what: String,
    },
    /// A memory region this engine cannot restore yet.
    #[error(
        "PID {pid}: region {start:#x}-{end:#x} ({what}) cannot be checkpointed by this version"
    )]
    UnsupportedRegion {
        /// PID.
        pid: i32,
        /// Start.
        start: u64,
        /// End.
        end: u64,
        /// What it is.
        what: String,
    },
    /// An injected system call failed.
    #[error("PID {pid}: injected {call} failed: {source}")]
    Inject {
        /// PID.
        pid: i32,
        /// Which call.
        call: &'static str,
        /// errno.
        source: Errno,
    },
    /// Reading the process's memory failed.
    #[error("PID {pid}: cannot read memory at {addr:#x}: {source}")]
    ReadMemory {
        /// PID.
        pid: i32,
        /// Address.
        addr: u64,
        /// Cause.
        source: io::Error,
    },
    /// A file the process has open could not be examined.
    #[error("PID {pid}: cannot examine descriptor {fd}: {source}")]
    Fd {
        /// PID.
        pid: i32,
        /// Descriptor.
        fd: i32,
        /// Cause.
        source: io::Error,
    },
    /// Writing the page data failed.
    #[error("{path}: cannot write page data: {source}")]
    WritePages {
        /// Image.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// ptrace failed.
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// /proc could not be read.
    #[error(transparent)]
    Proc(#[from] ProcError),
    /// The image could not be written.
    #[error(transparent)]
    Image(#[from] ImageError),
}

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
    /// Time the processes were frozen.
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
    for f in &frozen {
        images.push(collect::collect(f)?);
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
        pages += state::pages::write(&mut writer, image, path, progress)?;
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
    let (bytes, frozen_for) = if opts.after == After::Run {
        let frozen_for = frozen_at.elapsed();
        release_all(frozen)?;
        (writer.finish()?, frozen_for)
    } else {
        let bytes = writer.finish()?;
        let frozen_for = frozen_at.elapsed();
        release_all(frozen)?;
        (bytes, frozen_for)
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

/// Run an injected system call for a checkpoint; its failure names the call and the PID.
pub(crate) fn inject(
    r: &mut Remote,
    call: &'static str,
    nr: libc::c_long,
    args: &[u64],
) -> Result<u64, CheckpointError> {
    let pid = r.pid().as_raw();
    r.call(nr, args)?
        .map_err(|source| CheckpointError::Inject { pid, call, source })
}

/// Read back `len` bytes an injected call wrote to the scratch page.
pub(crate) fn read_scratch(r: &Remote, len: usize) -> Result<Vec<u8>, CheckpointError> {
    let addr = r.scratch();
    r.read(addr, len)
        .map_err(|source| CheckpointError::ReadMemory {
            pid: r.pid().as_raw(),
            addr,
            source,
        })
}

/// Word `i` of a buffer read back from the target (0 past its end).
pub(crate) fn word(b: &[u8], i: usize) -> u64 {
    b.get(i * 8..i * 8 + 8)
        .and_then(|w| w.try_into().ok())
        .map_or(0, u64::from_ne_bytes)
}
