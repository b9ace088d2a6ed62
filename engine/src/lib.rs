//! lifeboat-engine: checkpoint and restart unmodified Linux processes from userspace.
//!
//! A successor to Berkeley Lab Checkpoint/Restart without a kernel module: processes are
//! frozen and examined with ptrace and `/proc`, state only the process can report is read
//! by injected system calls, and restart rebuilds the process inside a stub created with
//! clone3 (`set_tid` restores the PID). See `ARCHITECTURE.md` for the map and the
//! invariants, and [`image`] for the context file format.
//!
//! Entry points: [`checkpoint`], [`restart`], [`inspect`], [`check`].
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod check;
pub mod dump;
pub mod image;
pub mod inspect;
pub mod model;
pub mod procfs;
pub mod restore;
pub mod sockets;
mod sys;
pub mod tracee;

pub use check::check;
pub use dump::{CheckpointError, CheckpointOptions, CheckpointReport, Scope, checkpoint};
pub use inspect::inspect;
pub use restore::{RestartError, RestartOptions, Restored, restart};
pub use tracee::After;
