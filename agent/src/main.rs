//! `lifeboat`: the command line of the node agent and its checkpoint/restart engine.
#![forbid(unsafe_code)]

mod cli;
mod daemon;
mod demo;
mod engine_cmd;
mod rules_cmd;
mod sensors_cmd;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match engine_cmd::dispatch(cli.command) {
        Ok(code) => code,
        Err(err) => {
            // A closed stdout (`lifeboat inspect | head`) is not an error.
            if err.chain().any(|e| {
                e.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            // Library errors name their cause in their own message; print each cause once.
            let mut msg = String::new();
            for cause in err.chain().map(ToString::to_string) {
                if !msg.contains(&cause) {
                    if !msg.is_empty() {
                        msg.push_str(": ");
                    }
                    msg.push_str(&cause);
                }
            }
            eprintln!("lifeboat: error: {msg}");
            ExitCode::FAILURE
        }
    }
}
