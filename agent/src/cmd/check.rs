//! `lifeboat check`: whether this kernel offers everything the engine needs.

use std::io::{self, Write};
use std::process::ExitCode;

use anyhow::Result;
use lifeboat_engine as engine;

use super::support::status;

/// Run `lifeboat check [--json]`; fails if a feature is missing.
pub fn run(json: bool) -> Result<ExitCode> {
    let features = engine::check();
    let ok = features.iter().all(|f| f.ok);
    let mut out = io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &features)?;
        writeln!(out)?;
    } else {
        for f in &features {
            writeln!(
                out,
                "{:<7} {:<38} {}",
                if f.ok { "ok" } else { "MISSING" },
                f.name,
                f.detail
            )?;
        }
        writeln!(
            out,
            "{}",
            if ok {
                "Looks good."
            } else {
                "Some features are missing: see above."
            }
        )?;
    }
    Ok(status(ok))
}
