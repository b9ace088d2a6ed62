//! Helpers shared by every integration test of `tests/`, one module per purpose:
//!
//! - `programs`: preconditions (root, tools), the C programs built once per run, the
//!   scripts, the workloads (`Prog`) and their uninterrupted reference runs;
//! - `processes`: children with piped output (`Proc`) or quiet/file output
//!   (`Background`), waiting, reaping, signalling and killing by PID, polling;
//! - `contexts`: the workspace and fixtures, scratch directories, commands run to the
//!   end within a time limit (`CliResult`), the `lifeboat` binary, commands run as
//!   another user (`as_user`), one checkpoint/restart test (`TestCtx`);
//! - `procfs`: probes of `/proc`, and thread dumps for failure messages;
//! - `assert`: reference-versus-restarted output comparisons, exit statuses;
//! - `golden`: the one golden-file mechanism (bless with `UPDATE_EXPECT=1`);
//! - `images`: checkpoint images forged on purpose (`forge`);
//! - `http`: the HTTP client of the agent tests (and, by path, the agent benchmark);
//! - `agent`: a running agent on a fixture root, its configuration, its workload.
//!
//! Every test binary compiles this module and uses a part of it: the rest is neither dead
//! code nor an unused import.
#![allow(dead_code, unused_imports)]

pub mod agent;
pub mod assert;
pub mod contexts;
pub mod golden;
pub mod http;
pub mod images;
pub mod processes;
pub mod procfs;
pub mod programs;

pub use assert::*;
pub use contexts::*;
pub use golden::*;
pub use images::*;
pub use processes::*;
pub use procfs::*;
pub use programs::*;
