//! `lifeboat manpages DIR` (hidden): a man page per command, generated from the clap
//! definitions of [`crate::cli`] (so `man lifeboat-checkpoint` is its `--help`), for the
//! package to install.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::cli::Cli;

/// Write `lifeboat.1` and one page per visible subcommand into `dir`; print their names.
pub fn run(dir: &Path) -> Result<ExitCode> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("cannot write the man pages into {}", dir.display()))?;
    let mut pages: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("lifeboat") && n.ends_with(".1"))
        .collect();
    pages.sort();
    let mut out = std::io::stdout().lock();
    for p in pages {
        writeln!(out, "{}", dir.join(p).display())?;
    }
    Ok(ExitCode::SUCCESS)
}
