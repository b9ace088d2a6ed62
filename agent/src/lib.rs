//! `lifeboat`: the command line of the node agent and its checkpoint/restart engine.
//! [`main`] parses the command line (`cli`) and dispatches to the subcommand's module
//! under `cmd`; the daemon behind `lifeboat agent` is [`daemon`].
//!
//! A library as well as the binary (`src/main.rs` only calls [`main`]) so that harnesses
//! outside the crate reach the daemon's HTTP layer: the `http` fuzz target of
//! `tests/fuzz` serves its inputs through [`daemon::server::serve_stream`].
#![forbid(unsafe_code)]

mod cli;
mod cmd;
pub mod daemon;
/// The workspace's golden files, for the unit tests of what the commands print.
#[cfg(test)]
#[path = "../../tests/common/golden.rs"]
mod golden;
mod preflight;
mod table;

use clap::Parser;
use std::process::ExitCode;

use cli::Command;

/// The `lifeboat` command: parse the command line, run the subcommand, print its error
/// (with its causes, each once, and a hint when there is one).
pub fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        Command::Run { cmd: argv } => cmd::run::run(&argv),
        Command::Checkpoint(args) => cmd::checkpoint::run(&args),
        Command::Restart(args) => cmd::restart::run(&args),
        Command::Inspect(args) => cmd::inspect::run(&args),
        Command::Check { json } => cmd::check::run(json),
        Command::Demo { dir } => cmd::demo::run(dir),
        Command::Agent(args) => cmd::agent::run(&args),
        Command::Sensors(args) => cmd::sensors::run(&args),
        Command::Rules(sub) => cmd::rules::run(sub),
        Command::Completions { shell } => cmd::completions::run(shell),
        Command::Manpages { dir } => cmd::manpages::run(&dir),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            // A closed stdout (`lifeboat inspect --json | head`) is not an error.
            if cmd::support::is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            let hint = err
                .downcast_ref::<cmd::support::Hint>()
                .map(|h| h.0.clone());
            // Library errors name their cause in their own message; print each cause once.
            let mut msg = String::new();
            for cause in err.chain().map(ToString::to_string) {
                if Some(&cause) == hint.as_ref() {
                    continue;
                }
                if !msg.contains(&cause) {
                    if !msg.is_empty() {
                        msg.push_str(": ");
                    }
                    msg.push_str(&cause);
                }
            }
            eprintln!("lifeboat: error: {msg}");
            if let Some(hint) = hint {
                eprintln!("lifeboat: hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}
