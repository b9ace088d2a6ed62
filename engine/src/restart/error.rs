//! How a restart fails (no process is left behind after any failure), and the helpers
//! whose failures are restart errors: injected calls, writes into a stub, the
//! restarter's own system calls.

use crate::image::codec::ImageError;
use crate::procfs::ProcError;
use crate::ptrace::{Remote, TraceError};
use nix::errno::Errno;
use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

/// Failures of a restart. No process is left behind after any of them.
#[derive(Debug, thiserror::Error)]
pub enum RestartError {
    /// The image is unusable.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The original PID is taken.
    #[error("PID {pid} is in use{holder}; restart with --no-restore-pid to get a new PID")]
    PidInUse {
        /// PID.
        pid: i32,
        /// Who holds it, as ` (by \`comm\`)`.
        holder: String,
    },
    /// clone3 with set_tid was refused.
    #[error(
        "cannot create PID {pid}: {source} (restoring a PID needs CAP_CHECKPOINT_RESTORE; use --no-restore-pid)"
    )]
    SetTid {
        /// PID.
        pid: i32,
        /// Cause.
        source: Errno,
    },
    /// Creating the stub failed.
    #[error("cannot create the restart process: {source}")]
    Spawn {
        /// Cause.
        source: Errno,
    },
    /// The processes of the image do not form a tree that can be restored.
    #[error("cannot restore the process tree: {what}")]
    Tree {
        /// What is wrong.
        what: String,
    },
    /// The stub failed while setting itself up.
    #[error("the restart process failed to {step}: {source}")]
    Stub {
        /// What it was doing.
        step: &'static str,
        /// Cause.
        source: Errno,
    },
    /// The working directory cannot be entered (as the image's owner, when root restarts
    /// a user's image).
    #[error("PID {pid}: cannot enter its working directory {path}: {source}")]
    Cwd {
        /// Process (its PID in the image).
        pid: i32,
        /// The directory.
        path: String,
        /// Cause.
        source: Errno,
    },
    /// A file the process had open cannot be opened.
    #[error("PID {pid}: descriptor {fd}: cannot open {path}: {source}")]
    OpenFile {
        /// Process (its PID in the image).
        pid: i32,
        /// Descriptor in the process.
        fd: i32,
        /// Path.
        path: String,
        /// Cause.
        source: io::Error,
    },
    /// A mapped file cannot be used.
    #[error("PID {pid}: mapping at {start:#x}: {path}: {what}")]
    MappedFile {
        /// Process (its PID in the image).
        pid: i32,
        /// Address.
        start: u64,
        /// Path.
        path: String,
        /// What is wrong.
        what: String,
    },
    /// A user's image claims an ID its owner does not have (root restarts a user's image
    /// only with that user's IDs).
    #[error(
        "{path} is owned by UID {owner} but claims {field} {value} for PID {pid}; refusing to restore those credentials (every UID of a user's image must be its owner's, every GID and group one of the owner's groups)",
        path = .path.display()
    )]
    Credentials {
        /// Image.
        path: PathBuf,
        /// Process (its PID in the image).
        pid: i32,
        /// File owner.
        owner: u32,
        /// Which ID: `UID`, `effective UID`, ..., `GID`, ..., `supplementary group`.
        field: &'static str,
        /// Its value in the image.
        value: u32,
    },
    /// The groups of a user's image's owner cannot be found, so its IDs cannot be checked.
    #[error(
        "{path} is owned by UID {owner}, whose groups cannot be found ({what}); refusing to restore a user's image as root without checking its IDs",
        path = .path.display()
    )]
    OwnerGroups {
        /// Image.
        path: PathBuf,
        /// File owner.
        owner: u32,
        /// What failed.
        what: String,
    },
    /// A path of the image names a file of another type than it had (a FIFO where a
    /// regular file was): opening it could block or reach something else.
    #[error("PID {pid}: {what}: {path} is {found}, not {wanted} as in the image")]
    FileType {
        /// Process (its PID in the image).
        pid: i32,
        /// Which use of it: `descriptor N`, `the executable`, `mapping at 0x...`.
        what: String,
        /// Path.
        path: String,
        /// What it is now.
        found: &'static str,
        /// What the image recorded.
        wanted: &'static str,
    },
    /// The bytes saved in a pipe or FIFO do not fit in the one recreated here.
    #[error(
        "PID {pid}: descriptor {fd}: the {len} bytes saved in the pipe do not fit: it holds {size} bytes here{why}"
    )]
    PipeTooSmall {
        /// Process (its PID in the image).
        pid: i32,
        /// Descriptor.
        fd: i32,
        /// Bytes saved.
        len: usize,
        /// The pipe's capacity here.
        size: usize,
        /// Why it could not be made larger, as `; raising it to N bytes failed: E`.
        why: String,
    },
    /// Something the restart waits for did not happen in time.
    #[error("timed out after {secs} s waiting for {what}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// The deadline, in seconds.
        secs: u64,
    },
    /// The kernel's special mappings differ from the image's.
    #[error(
        "this kernel's {what} differs from the image's ({detail}); restart on the kernel that took the checkpoint"
    )]
    Vdso {
        /// Which mapping.
        what: &'static str,
        /// Sizes or presence.
        detail: String,
    },
    /// No free address range for temporary mappings.
    #[error("no free address range of {size} bytes for the restorer's scratch memory")]
    NoGap {
        /// Size wanted.
        size: u64,
    },
    /// An injected system call failed.
    #[error("PID {pid}: injected {call} failed: {source}")]
    Inject {
        /// Process (its PID in the image).
        pid: i32,
        /// The call.
        call: String,
        /// errno.
        source: Errno,
    },
    /// Writing restored memory failed.
    #[error("PID {pid}: cannot write restored memory at {addr:#x}: {source}")]
    WriteMemory {
        /// Process (as the restarter sees it).
        pid: i32,
        /// Address.
        addr: u64,
        /// Cause.
        source: Errno,
    },
    /// Reading page data failed (including a checksum mismatch).
    #[error("{path}: cannot read page data: {source}")]
    ReadPages {
        /// Image.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// Recreating one descriptor's object failed (a pipe, an eventfd, a socket...).
    #[error("PID {pid}: descriptor {fd}: {op}: {source}")]
    Descriptor {
        /// Process (its PID in the image).
        pid: i32,
        /// Descriptor.
        fd: i32,
        /// What was being done.
        op: &'static str,
        /// Cause.
        source: Errno,
    },
    /// Duplicating a descriptor of the restarter failed.
    #[error("cannot duplicate {what}: {source}")]
    Dup {
        /// Which descriptor.
        what: &'static str,
        /// Cause.
        source: io::Error,
    },
    /// A system call of the restarter itself failed.
    #[error("{op}: {source}")]
    Sys {
        /// What failed.
        op: String,
        /// Cause.
        source: Errno,
    },
    /// ptrace failed.
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// /proc could not be read.
    #[error(transparent)]
    Proc(#[from] ProcError),
}

/// An error of one of the restarter's own system calls.
pub(crate) fn sys_err(op: impl Into<String>) -> impl FnOnce(Errno) -> RestartError {
    let op = op.into();
    move |source| RestartError::Sys { op, source }
}

/// A duplicate of one of the restarter's descriptors.
pub(crate) fn dup(fd: &OwnedFd, what: &'static str) -> Result<OwnedFd, RestartError> {
    fd.try_clone()
        .map_err(|source| RestartError::Dup { what, source })
}

/// Run an injected system call in a stub; its failure names the call and the process.
pub(crate) fn inject(
    r: &mut Remote,
    what: &str,
    nr: libc::c_long,
    args: &[u64],
) -> Result<u64, RestartError> {
    let pid = r.pid().as_raw();
    r.call(nr, args)?.map_err(|source| RestartError::Inject {
        pid,
        call: what.to_owned(),
        source,
    })
}

/// Write `data` at `addr` in a stub.
pub(crate) fn poke(r: &Remote, addr: u64, data: &[u8]) -> Result<(), RestartError> {
    r.write(addr, data)
        .map_err(|source| RestartError::WriteMemory {
            pid: r.pid().as_raw(),
            addr,
            source,
        })
}
