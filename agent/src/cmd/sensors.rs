//! `lifeboat sensors`: print every reading the sensor readers find, and the absent sources.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;

use anyhow::{Context, Result};
use lifeboat_sensors::{Reading, Root, Scan, all_sensors, read_all};

use crate::cli::SensorsArgs;

/// Run `lifeboat sensors`: read every source once and print what was found. Files that
/// could not be read are listed under their source; they do not change the exit status.
pub fn run(args: &SensorsArgs) -> Result<ExitCode> {
    let root = args.root.clone().map_or_else(Root::host, Root::new);
    if args.root.is_some() && !root.path().is_dir() {
        anyhow::bail!("--root {}: not a directory", root.path().display());
    }
    let scans = read_all(&root, &mut all_sensors());
    let out = if args.json {
        let mut s = serde_json::to_string_pretty(&json(&root, &scans))?;
        s.push('\n');
        s
    } else {
        text(&scans)
    };
    std::io::stdout()
        .lock()
        .write_all(out.as_bytes())
        .context("writing to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// `k="v" k2="v2"`
fn labels(r: &Reading) -> String {
    let mut s = String::new();
    for (k, v) in &r.labels {
        if !s.is_empty() {
            s.push(' ');
        }
        let _ = write!(s, "{k}={v:?}");
    }
    s
}

/// Sources in order, like `sensors`: a heading per source, one line per reading (name,
/// value, labels), then that source's errors; absent sources say so in one line.
fn text(scans: &[Scan]) -> String {
    let mut out = String::new();
    for scan in scans {
        if !scan.present {
            let _ = writeln!(out, "{}: absent", scan.source);
            continue;
        }
        let _ = write!(out, "{}: {} readings", scan.source, scan.readings.len());
        match scan.errors.len() {
            0 => out.push('\n'),
            1 => out.push_str(", 1 error\n"),
            n => {
                let _ = writeln!(out, ", {n} errors");
            }
        }
        let name_w = scan
            .readings
            .iter()
            .map(|r| r.name.len())
            .max()
            .unwrap_or(0);
        let values: Vec<String> = scan.readings.iter().map(|r| r.value.to_string()).collect();
        let value_w = values.iter().map(String::len).max().unwrap_or(0);
        for (r, v) in scan.readings.iter().zip(&values) {
            let line = format!("  {:<name_w$}  {v:>value_w$}  {}", r.name, labels(r));
            let _ = writeln!(out, "{}", line.trim_end());
        }
        for e in &scan.errors {
            let _ = writeln!(out, "  error: {e}");
        }
        out.push('\n');
    }
    out
}

fn json(root: &Root, scans: &[Scan]) -> serde_json::Value {
    let sources: Vec<serde_json::Value> = scans
        .iter()
        .map(|s| {
            serde_json::json!({
                "source": s.source,
                "present": s.present,
                "readings": s.readings,
                "errors": s.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({ "root": root.path(), "sources": sources })
}
