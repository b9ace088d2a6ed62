//! One module per subcommand, each with a `run` that `main` dispatches to; what several
//! share (exit statuses, progress, waiting for a child) is in [`support`].

pub mod agent;
pub mod check;
pub mod checkpoint;
pub mod completions;
pub mod demo;
pub mod inspect;
pub mod manpages;
pub mod restart;
pub mod rules;
pub mod run;
pub mod sensors;
pub mod support;
