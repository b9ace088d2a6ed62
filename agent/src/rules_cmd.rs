//! `lifeboat rules check|test`: validate rule files and backtest them on recorded traces.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

/// Subcommands of `rules`.
#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Validate a rules file; exit 0 if it is good, else print each error with its line.
    Check {
        /// Rules file (TOML).
        file: PathBuf,
    },
    /// Replay a recorded trace through the rules and print when each would fire and clear.
    Test {
        /// Rules file (TOML).
        #[arg(long, value_name = "FILE")]
        rules: PathBuf,
        /// Trace of readings (JSON Lines, as `lifeboat agent --record` writes).
        #[arg(long, value_name = "TRACE")]
        trace: PathBuf,
    },
}

/// Run `lifeboat rules ...`.
pub fn run(cmd: RulesCommand) -> Result<ExitCode> {
    anyhow::bail!("lifeboat rules is being built (issue 4): {cmd:?}")
}
