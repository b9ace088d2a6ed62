//! How a checkpoint fails (the process keeps running after any failure), and the
//! injection helpers whose failures are checkpoint errors.

use crate::image::codec::ImageError;
use crate::procfs::ProcError;
use crate::ptrace::{Remote, TraceError};
use nix::errno::Errno;
use std::io;
use std::path::PathBuf;

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
