//! `lifeboat rules check|test`: validate rule files and backtest them on recorded traces.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use lifeboat_sensors::TracePoint;
use lifeboat_triggers::backtest::{Expectations, replay};
use lifeboat_triggers::eval::fmt_num;
use lifeboat_triggers::{Action, Config, Diagnostic, Diagnostics, Event, EventKind, fmt_time};

use super::support::{Hinted, status};
use crate::cli::RulesCommand;
use crate::daemon::config::Overrides;
use crate::preflight::{Checked, validate_text};

/// Run `lifeboat rules ...`.
pub fn run(cmd: RulesCommand) -> Result<ExitCode> {
    match cmd {
        RulesCommand::Check { json, strict, file } => check(&file, json, strict),
        RulesCommand::Test {
            rules,
            trace,
            expect,
            json,
        } => test(&rules, &trace, expect.as_deref(), json),
    }
}

fn read(path: &Path, what: &str) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {what} {}", path.display()))
}

fn diag_json(d: &Diagnostic) -> serde_json::Value {
    serde_json::json!({
        "file": d.path,
        "line": d.line,
        "col": d.col,
        "message": d.message,
        "help": d.help,
    })
}

fn check(file: &Path, json: bool, strict: bool) -> Result<ExitCode> {
    let text = read(file, "rules file")?;
    let checked = validate_text(&text, file, &Overrides::default());
    let mut out = std::io::stdout().lock();
    let ok = checked.passes(strict);
    if json {
        let rules: Vec<&str> = match &checked.config {
            Some((_, c)) => c.rules.iter().map(|r| r.name.as_str()).collect(),
            None => Vec::new(),
        };
        let v = serde_json::json!({
            "file": file.display().to_string(),
            "ok": ok,
            "strict": strict,
            "errors": checked.diags.errors.iter().map(diag_json).collect::<Vec<_>>(),
            "warnings": checked.diags.warnings.iter().map(diag_json).collect::<Vec<_>>(),
            "rules": rules,
        });
        writeln!(out, "{v}")?;
        return Ok(status(ok));
    }
    report(&mut out, &checked, strict)?;
    Ok(status(ok))
}

/// The verdict on a checked file: its diagnostics on stderr, then `FILE: OK: ...` and
/// its rules on `out`, or `FILE: FAILED: ...` on stderr. `agent --check` prints the
/// same.
pub fn report(out: &mut impl std::io::Write, checked: &Checked, strict: bool) -> Result<()> {
    let diags = &checked.diags;
    let file = checked.path.display();
    if !diags.errors.is_empty() || !diags.warnings.is_empty() {
        eprintln!("{diags}\n");
    }
    match &checked.config {
        Some((_, config)) if checked.passes(strict) => {
            writeln!(
                out,
                "{file}: OK: {} rules ({})",
                config.rules.len(),
                diags.summary()
            )?;
            for rule in &config.rules {
                writeln!(
                    out,
                    "  {} ({}): {}",
                    rule.name,
                    rule.severity,
                    describe(&rule.when)
                )?;
            }
        }
        Some(_) => eprintln!(
            "{file}: FAILED: {} (--strict: warnings are errors)",
            diags.summary()
        ),
        None => eprintln!("{file}: FAILED: {}", diags.summary()),
    }
    Ok(())
}

fn describe(c: &lifeboat_triggers::Condition) -> String {
    use lifeboat_triggers::Condition;
    match c {
        Condition::Check(check) => check.to_string(),
        Condition::Any(cs) => format!(
            "any of [{}]",
            cs.iter().map(describe).collect::<Vec<_>>().join("; ")
        ),
        Condition::All(cs) => format!(
            "all of [{}]",
            cs.iter().map(describe).collect::<Vec<_>>().join("; ")
        ),
    }
}

fn read_trace(path: &Path) -> Result<Vec<TracePoint>> {
    let text = read(path, "trace")?;
    let mut points = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let p: TracePoint = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: invalid trace line", path.display(), i + 1))?;
        points.push(p);
    }
    Ok(points)
}

/// The rules of the file, validated whole (`[agent]` too) as `rules check` does.
fn load_config(rules: &Path) -> Result<std::result::Result<Config, Diagnostics>> {
    let text = read(rules, "rules file")?;
    let checked = validate_text(&text, rules, &Overrides::default());
    Ok(match checked.config {
        Some((_, config)) => Ok(config),
        None => Err(checked.diags),
    })
}

fn fmt_offset(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    let (h, m, s) = (s / 3600, (s / 60) % 60, s % 60);
    let mut out = String::from("+");
    if h > 0 {
        let _ = write!(out, "{h}h");
    }
    if h > 0 || m > 0 {
        let _ = write!(out, "{m:02}m");
    }
    let _ = write!(out, "{s:02}s");
    out
}

fn action_text(a: &Action, config: &Config) -> String {
    match a {
        Action::Drain => format!("drain the node: {}", config.drain.command.join(" ")),
        other => other.to_string(),
    }
}

fn test(rules: &Path, trace: &Path, expect: Option<&Path>, json: bool) -> Result<ExitCode> {
    let config = match load_config(rules)? {
        Ok(c) => c,
        Err(diags) => {
            eprintln!("{diags}\n");
            eprintln!("{}: FAILED: {}", rules.display(), diags.summary());
            return Ok(ExitCode::FAILURE);
        }
    };
    for w in &config.warnings {
        eprintln!("{w}\n");
    }
    let expectations = match expect {
        Some(path) => {
            let text = read(path, "expectations file")?;
            match Expectations::from_str(&text, path, &config) {
                Ok(e) => Some(e),
                Err(diags) => {
                    eprintln!("{diags}\n");
                    eprintln!("{}: FAILED: {}", path.display(), diags.summary());
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        None => None,
    };
    let points = read_trace(trace)?;
    if points.is_empty() {
        return Err(anyhow::anyhow!(
            "trace {} holds no readings: there is nothing to replay",
            trace.display()
        ))
        .hint(
            "a trace is JSON Lines of readings: record one on a node with \
             `lifeboat agent --record FILE`, or replay one of tests/fixtures/traces/",
        );
    }
    let events = replay(&config, &points);
    let mut out = std::io::stdout().lock();
    if json {
        for e in &events {
            writeln!(out, "{}", serde_json::to_string(e)?)?;
        }
    } else {
        print_timeline(&mut out, &config, rules, trace, &points, &events)?;
    }
    let Some(expectations) = expectations else {
        return Ok(ExitCode::SUCCESS);
    };
    let mismatches = expectations.check(&events);
    if mismatches.is_empty() {
        if !json {
            writeln!(
                out,
                "\nexpectations met: {} events, {} quiet rules",
                expectations.events.len(),
                expectations.quiet.len()
            )?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    out.flush()?;
    eprintln!("\nFAILED: the replay differs from the expectations:");
    for m in &mismatches {
        eprintln!("{m}");
    }
    Ok(ExitCode::FAILURE)
}

fn print_timeline(
    out: &mut impl std::io::Write,
    config: &Config,
    rules: &Path,
    trace: &Path,
    points: &[TracePoint],
    events: &[Event],
) -> Result<()> {
    let start = points.iter().map(|p| p.t).fold(f64::INFINITY, f64::min);
    let end = points.iter().map(|p| p.t).fold(f64::NEG_INFINITY, f64::max);
    writeln!(
        out,
        "trace {}: {} readings from {} to {} ({})",
        trace.display(),
        points.len(),
        fmt_time(start),
        fmt_time(end),
        fmt_offset(end - start)
    )?;
    writeln!(
        out,
        "rules {}: {} rules\n",
        rules.display(),
        config.rules.len()
    )?;
    for e in events {
        let label = match e.kind {
            EventKind::Pending => "PENDING",
            EventKind::Firing => "FIRING ",
            EventKind::Cleared => "CLEARED",
        };
        writeln!(
            out,
            "{}  {:>10}  {label}  {} ({})",
            fmt_time(e.t),
            fmt_offset(e.t - start),
            e.rule,
            e.severity
        )?;
        if e.kind != EventKind::Cleared {
            for m in e.matches.iter().take(3) {
                writeln!(out, "      {m}")?;
            }
            if e.matches.len() > 3 {
                writeln!(out, "      ... and {} more series", e.matches.len() - 3)?;
            }
        } else {
            writeln!(
                out,
                "      fired at {} ({})",
                fmt_time(e.since),
                fmt_offset(e.since - start)
            )?;
        }
        for a in &e.actions {
            writeln!(out, "      would {}", action_text(a, config))?;
        }
    }
    if events.is_empty() {
        writeln!(out, "no rule fired")?;
    }
    writeln!(out, "\nsummary:")?;
    let width = config.rules.iter().map(|r| r.name.len()).max().unwrap_or(0);
    for rule in &config.rules {
        let fired: Vec<&Event> = events
            .iter()
            .filter(|e| e.rule == rule.name && e.kind == EventKind::Firing)
            .collect();
        match fired.first() {
            None => writeln!(out, "  {:width$}  quiet", rule.name)?,
            Some(first) => {
                let peak = fired
                    .iter()
                    .flat_map(|e| e.matches.iter().map(|m| m.value))
                    .fold(f64::NEG_INFINITY, f64::max);
                writeln!(
                    out,
                    "  {:width$}  fired {}x, first at {} ({}), peak {}",
                    rule.name,
                    fired.len(),
                    fmt_time(first.t),
                    fmt_offset(first.t - start),
                    fmt_num(peak)
                )?;
            }
        }
    }
    Ok(())
}
