//! Backtesting: replay a recorded trace through the rules, and check the events against
//! an expectations file (like `promtool test rules`).
//!
//! Expectations are TOML:
//!
//! ```toml
//! # Rules that must never fire on this trace.
//! quiet = ["cpu-overheat"]
//!
//! # Every firing and cleared event of the rules named below, in order, exactly.
//! # (Pending events are checked too for a rule that lists any.)
//! [[event]]
//! rule = "memory-ue"
//! kind = "firing"                 # pending | firing | cleared
//! at = "2025-11-25T12:00:00Z"     # RFC 3339, UTC
//! ```

use std::collections::BTreeSet;
use std::fmt;

use lifeboat_sensors::{Reading, TracePoint};
use serde::Deserialize;
use toml::Spanned;

use crate::diag::{Diagnostics, Sink, did_you_mean};
use crate::eval::{Evaluator, Event, EventKind, fmt_time};
use crate::model::Config;
use crate::parse::{de, parse_document};

/// Replays `points` (sorted by time; equal times form one step) through a fresh
/// evaluator of `config` and returns every event in order.
pub fn replay(config: &Config, points: &[TracePoint]) -> Vec<Event> {
    let mut sorted: Vec<&TracePoint> = points.iter().filter(|p| p.t.is_finite()).collect();
    sorted.sort_by(|a, b| a.t.total_cmp(&b.t));
    let mut ev = Evaluator::new(config);
    let mut events = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let t = sorted[i].t;
        let mut batch: Vec<Reading> = Vec::new();
        while i < sorted.len() && sorted[i].t == t {
            batch.push(sorted[i].reading.clone());
            i += 1;
        }
        events.extend(ev.step(t, &batch));
    }
    events
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    quiet: Option<Vec<Spanned<String>>>,
    event: Option<Vec<RawExpectedEvent>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpectedEvent {
    rule: Spanned<String>,
    kind: EventKind,
    at: Spanned<String>,
}

impl<'de> Deserialize<'de> for EventKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<EventKind, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "pending" => Ok(EventKind::Pending),
            "firing" => Ok(EventKind::Firing),
            "cleared" => Ok(EventKind::Cleared),
            other => Err(serde::de::Error::unknown_variant(
                other,
                &["pending", "firing", "cleared"],
            )),
        }
    }
}

/// One expected event.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    /// Rule name.
    pub rule: String,
    /// Kind.
    pub kind: EventKind,
    /// Time, seconds since the epoch.
    pub t: f64,
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}", self.kind, fmt_time(self.t))
    }
}

/// What a trace is expected to make the rules do.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Expectations {
    /// Rules that must not fire.
    pub quiet: Vec<String>,
    /// Expected events, in file order.
    pub events: Vec<Expected>,
}

/// A difference between expected and actual events of one rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    /// Rule name.
    pub rule: String,
    /// What was expected.
    pub expected: Vec<Expected>,
    /// What happened.
    pub got: Vec<Expected>,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |v: &[Expected]| {
            if v.is_empty() {
                "(nothing)".to_owned()
            } else {
                v.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        write!(
            f,
            "rule {}:\n  expected: {}\n  got:      {}",
            self.rule,
            list(&self.expected),
            list(&self.got)
        )
    }
}

impl Expectations {
    /// Reads an expectations file; rule names are checked against `config`.
    #[allow(clippy::should_implement_trait)]
    pub fn from_str(
        text: &str,
        path: impl AsRef<std::path::Path>,
        config: &Config,
    ) -> Result<Expectations, Diagnostics> {
        let path = path.as_ref().to_string_lossy();
        let mut sink = Sink::new(&path, text);
        let out = read_expectations(&mut sink, config);
        let diags = sink.finish();
        match out {
            Some(e) if diags.is_ok() => Ok(e),
            _ => Err(diags),
        }
    }

    /// Compares with the events of a replay; empty when everything matches.
    pub fn check(&self, events: &[Event]) -> Vec<Mismatch> {
        let mut out = Vec::new();
        let mut rules: Vec<&str> = Vec::new();
        for e in &self.events {
            if !rules.contains(&e.rule.as_str()) {
                rules.push(&e.rule);
            }
        }
        for rule in rules {
            let expected: Vec<Expected> = self
                .events
                .iter()
                .filter(|e| e.rule == rule)
                .cloned()
                .collect();
            let with_pending = expected.iter().any(|e| e.kind == EventKind::Pending);
            let got: Vec<Expected> = events
                .iter()
                .filter(|e| e.rule == rule && (with_pending || e.kind != EventKind::Pending))
                .map(|e| Expected {
                    rule: e.rule.clone(),
                    kind: e.kind,
                    t: e.t,
                })
                .collect();
            if got != expected {
                out.push(Mismatch {
                    rule: rule.to_owned(),
                    expected,
                    got,
                });
            }
        }
        for rule in &self.quiet {
            let got: Vec<Expected> = events
                .iter()
                .filter(|e| e.rule == *rule && e.kind == EventKind::Firing)
                .map(|e| Expected {
                    rule: e.rule.clone(),
                    kind: e.kind,
                    t: e.t,
                })
                .collect();
            if !got.is_empty() {
                out.push(Mismatch {
                    rule: rule.clone(),
                    expected: Vec::new(),
                    got,
                });
            }
        }
        out
    }
}

fn read_expectations(sink: &mut Sink<'_>, config: &Config) -> Option<Expectations> {
    let root = parse_document(sink, &["quiet", "event"])?;
    let value = toml::de::DeValue::Table(root);
    let raw: RawExpect = de(sink, &Spanned::new(0..sink.text.len(), value))?;
    let names: BTreeSet<&str> = config.rules.iter().map(|r| r.name.as_str()).collect();
    let check_name = |sink: &mut Sink<'_>, n: &Spanned<String>| {
        if !names.contains(n.get_ref().as_str()) {
            let msg = format!("no rule named `{}` in the rules file", n.get_ref());
            match did_you_mean(n.get_ref(), names.iter().copied()) {
                Some(s) => sink.error_help(n.span(), msg, format!("did you mean `{s}`?")),
                None => sink.error(n.span(), msg),
            }
        }
    };
    let mut out = Expectations::default();
    for q in raw.quiet.unwrap_or_default() {
        check_name(sink, &q);
        out.quiet.push(q.into_inner());
    }
    for e in raw.event.unwrap_or_default() {
        check_name(sink, &e.rule);
        let t = match humantime::parse_rfc3339_weak(e.at.get_ref()) {
            Ok(st) => match st.duration_since(std::time::UNIX_EPOCH) {
                Ok(d) => d.as_secs_f64(),
                Err(_) => {
                    sink.error(e.at.span(), "time before 1970");
                    continue;
                }
            },
            Err(err) => {
                sink.error_help(
                    e.at.span(),
                    format!("invalid time `{}`: {err}", e.at.get_ref()),
                    "write RFC 3339 UTC, e.g. \"2025-11-25T12:00:00Z\"",
                );
                continue;
            }
        };
        out.events.push(Expected {
            rule: e.rule.into_inner(),
            kind: e.kind,
            t,
        });
    }
    Some(out)
}
