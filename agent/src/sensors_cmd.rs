//! `lifeboat sensors`: print every reading the sensor readers find, and the absent sources.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

/// Options of `sensors`.
#[derive(Debug, Args)]
pub struct SensorsArgs {
    /// Read sysfs, procfs and /var under this directory instead of `/` (fixture trees).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Run `lifeboat sensors`.
pub fn run(args: &SensorsArgs) -> Result<ExitCode> {
    anyhow::bail!(
        "lifeboat sensors is being built (issue 3); root {}",
        args.root.display()
    )
}
