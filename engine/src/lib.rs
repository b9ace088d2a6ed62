//! lifeboat-engine: checkpoint and restart unmodified Linux processes from userspace.
//!
//! A successor to Berkeley Lab Checkpoint/Restart without a kernel module: processes are
//! frozen and examined with ptrace and `/proc`, state only the process can report is read
//! by injected system calls, and restart rebuilds the process inside a stub created with
//! clone3 (`set_tid` restores the PID). See `ARCHITECTURE.md` for the map and the
//! invariants, and [`image`] for the context file format and how it evolves.
//!
//! Entry points: [`checkpoint`], [`restart`], [`inspect`], [`check`]. The public modules
//! are [`model`] (the image as plain data), [`image`] (reading and writing context files,
//! for tests, fuzzing and tools) and [`procfs`] (the defensive `/proc` parsers, which the
//! agent uses to pick targets); everything else is private to the engine.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod check;
mod checkpoint;
mod fault;
pub mod image;
mod inspect;
pub mod model;
pub mod procfs;
mod ptrace;
mod restart;
mod state;
mod sys;
mod warning;

pub use check::{Feature, check};
pub use checkpoint::{CheckpointError, CheckpointOptions, CheckpointReport, Scope, checkpoint};
pub use inspect::{
    FdSummary, HandlerSummary, RegionSummary, SectionSummary, Summary, ThreadSummary, inspect,
};
pub use ptrace::{After, TraceError};
pub use restart::{RestartError, RestartOptions, Restored, restart};
pub use warning::{Warning, WarningKind};

/// Progress of a long checkpoint (memory examined) or restart (memory restored), for a
/// progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes done so far.
    pub done: u64,
    /// Bytes in all.
    pub total: u64,
}
