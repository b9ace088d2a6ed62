//! Rule evaluation as a pure function: state + readings at time t → events.
//!
//! [`Evaluator::step`] is deterministic and performs no I/O, reads no clock and never
//! sleeps: the caller passes the time. Readings may come in parts (one source per call);
//! a series keeps its last value between calls and stops counting once it has not been
//! seen for [`STALE_POLLS`] poll intervals of its source (its history is kept, so a
//! returning series does not look like a fresh increase).
//!
//! Per rule, the state machine is
//! `inactive → (pending →) firing → inactive`:
//! - the condition holds: with `for = 0` the rule fires at once, else it is pending and
//!   fires once the condition has held for `for` (a pending rule whose condition stops
//!   holding goes back to inactive silently, as in Prometheus);
//! - a firing rule clears when its condition no longer holds *and* `cooldown` has passed
//!   since it fired, so a flapping fault fires at most once per cooldown.
//!
//! Counters: the increase over a window is the sum of the rises between consecutive
//! samples inside the window. A drop is a reset (driver reload, counter cleared): the
//! new value becomes the baseline and the drop itself counts as no increase, so a reset
//! neither fires a rule nor hides the increases before and after it.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::Duration;

use lifeboat_sensors::{Reading, SeriesKey};
use serde::Serialize;

use crate::model::{Action, Check, Condition, Config, Measure, Poll, Rule, Severity};

/// A series stops counting after this many poll intervals without a reading.
pub const STALE_POLLS: u32 = 5;

/// What happened to a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// The condition holds, waiting for `for` to pass.
    Pending,
    /// The rule fired: run its actions.
    Firing,
    /// The rule stopped firing.
    Cleared,
}

impl EventKind {
    /// `pending`, `firing` or `cleared`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Pending => "pending",
            EventKind::Firing => "firing",
            EventKind::Cleared => "cleared",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One series that satisfied a check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Match {
    /// The series.
    pub series: SeriesKey,
    /// What was compared (`value`, `increase over 10m`, ...).
    pub measure: String,
    /// Its value.
    pub value: f64,
    /// The comparison (`>`, `>=`, `<`, `<=`).
    pub op: &'static str,
    /// The threshold.
    pub threshold: f64,
    /// The latest raw reading of the series.
    pub reading: f64,
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.series)?;
        if self.measure != "value" {
            write!(f, " {}", self.measure)?;
        }
        write!(
            f,
            " = {} ({} {})",
            fmt_num(self.value),
            self.op,
            fmt_num(self.threshold)
        )
    }
}

/// A number without noise: integers without `.0`, others with up to 3 decimals.
pub fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// A change of state of one rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Rule name.
    pub rule: String,
    /// Pending, firing or cleared.
    pub kind: EventKind,
    /// The rule's severity.
    pub severity: Severity,
    /// When (seconds since the epoch, as passed to [`Evaluator::step`]).
    pub t: f64,
    /// Since when the condition has held (for cleared events: when the rule fired).
    pub since: f64,
    /// The series that satisfied the condition (for cleared events: the last ones).
    pub matches: Vec<Match>,
    /// One line for logs and drain reasons.
    pub summary: String,
    /// What to do: the rule's actions for firing events, empty otherwise.
    pub actions: Vec<Action>,
}

impl Event {
    /// The environment an `exec` action runs with: `LIFEBOAT_RULE`, `LIFEBOAT_EVENT`
    /// (firing/cleared/pending), `LIFEBOAT_SEVERITY`, `LIFEBOAT_TIME` (RFC 3339),
    /// `LIFEBOAT_TIMESTAMP` (epoch seconds), `LIFEBOAT_SUMMARY`, `LIFEBOAT_MATCHES`
    /// (count), and for the first matching series `LIFEBOAT_SERIES`, `LIFEBOAT_SOURCE`,
    /// `LIFEBOAT_READING` (reading name), `LIFEBOAT_MEASURE`, `LIFEBOAT_VALUE`,
    /// `LIFEBOAT_THRESHOLD` and one `LIFEBOAT_LABEL_<KEY>` per label (key upper-cased,
    /// other characters than A-Z, 0-9 and `_` replaced by `_`).
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("LIFEBOAT_RULE".to_owned(), self.rule.clone()),
            ("LIFEBOAT_EVENT".to_owned(), self.kind.as_str().to_owned()),
            (
                "LIFEBOAT_SEVERITY".to_owned(),
                self.severity.as_str().to_owned(),
            ),
            ("LIFEBOAT_TIME".to_owned(), fmt_time(self.t)),
            ("LIFEBOAT_TIMESTAMP".to_owned(), format!("{:.3}", self.t)),
            ("LIFEBOAT_SUMMARY".to_owned(), self.summary.clone()),
            (
                "LIFEBOAT_MATCHES".to_owned(),
                self.matches.len().to_string(),
            ),
        ];
        if let Some(m) = self.matches.first() {
            env.push(("LIFEBOAT_SERIES".to_owned(), m.series.to_string()));
            env.push(("LIFEBOAT_SOURCE".to_owned(), m.series.source.to_string()));
            env.push(("LIFEBOAT_READING".to_owned(), m.series.name.clone()));
            env.push(("LIFEBOAT_MEASURE".to_owned(), m.measure.clone()));
            env.push(("LIFEBOAT_VALUE".to_owned(), fmt_num(m.value)));
            env.push(("LIFEBOAT_THRESHOLD".to_owned(), fmt_num(m.threshold)));
            for (k, v) in &m.series.labels {
                let key: String = k
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() {
                            c.to_ascii_uppercase()
                        } else {
                            '_'
                        }
                    })
                    .collect();
                env.push((format!("LIFEBOAT_LABEL_{key}"), v.clone()));
            }
        }
        env
    }
}

/// `t` (seconds since the epoch) as RFC 3339 UTC, to the second.
pub fn fmt_time(t: f64) -> String {
    if !(0.0..=253_402_300_799.0).contains(&t) {
        return format!("{t}");
    }
    let st = std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(t);
    humantime::format_rfc3339_seconds(st).to_string()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Inactive,
    Pending { since: f64 },
    Firing { since: f64, fired_at: f64 },
}

/// Where a rule stands, for status pages and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RulePhase {
    /// The condition does not hold.
    Inactive,
    /// The condition holds, `for` has not passed yet.
    Pending,
    /// The rule fired and has not cleared.
    Firing,
}

#[derive(Debug, Clone)]
struct Series {
    last_value: f64,
    last_t: f64,
    /// Rises (time of the later sample, amount), oldest first, inside the longest window.
    rises: VecDeque<(f64, f64)>,
    active: bool,
}

#[derive(Debug, Clone, Default)]
struct CheckState {
    series: BTreeMap<SeriesKey, Series>,
}

#[derive(Debug, Clone)]
struct RuleState {
    rule: Rule,
    checks: Vec<CheckState>,
    phase: Phase,
    last_matches: Vec<Match>,
}

/// Evaluates a set of rules over time. See the module documentation.
#[derive(Debug, Clone)]
pub struct Evaluator {
    poll: Poll,
    rules: Vec<RuleState>,
}

/// What a reload did to each rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Unchanged rules whose state (windows, pending, firing) was carried over.
    pub kept: Vec<String>,
    /// New or changed rules, starting from scratch.
    pub fresh: Vec<String>,
    /// Rules that are gone (a firing one is dropped without a cleared event).
    pub removed: Vec<String>,
}

impl Evaluator {
    /// An evaluator for `config`'s rules, all inactive.
    pub fn new(config: &Config) -> Evaluator {
        Evaluator {
            poll: config.poll.clone(),
            rules: config.rules.iter().map(RuleState::new).collect(),
        }
    }

    /// Replaces the rules with `config`'s, keeping the state of every rule whose
    /// definition did not change (same name, same everything).
    pub fn reload(&mut self, config: &Config) -> ReloadReport {
        let mut report = ReloadReport::default();
        let mut old: BTreeMap<String, RuleState> = std::mem::take(&mut self.rules)
            .into_iter()
            .map(|r| (r.rule.name.clone(), r))
            .collect();
        for rule in &config.rules {
            match old.remove(&rule.name) {
                Some(state) if state.rule == *rule => {
                    report.kept.push(rule.name.clone());
                    self.rules.push(state);
                }
                _ => {
                    report.fresh.push(rule.name.clone());
                    self.rules.push(RuleState::new(rule));
                }
            }
        }
        report.removed = old.into_keys().collect();
        self.poll = config.poll.clone();
        report
    }

    /// Each rule's name and phase, in rule order.
    pub fn phases(&self) -> Vec<(&str, RulePhase)> {
        self.rules
            .iter()
            .map(|r| {
                let p = match r.phase {
                    Phase::Inactive => RulePhase::Inactive,
                    Phase::Pending { .. } => RulePhase::Pending,
                    Phase::Firing { .. } => RulePhase::Firing,
                };
                (r.rule.name.as_str(), p)
            })
            .collect()
    }

    /// Feeds the readings taken at time `t` (seconds since the epoch) and returns the
    /// events they cause, in rule order. Pure: the result depends only on the previous
    /// calls and this one. Readings with a non-finite value, or older than the last one
    /// of their series, are ignored.
    pub fn step(&mut self, t: f64, readings: &[Reading]) -> Vec<Event> {
        let poll = &self.poll;
        self.rules
            .iter_mut()
            .filter_map(|r| r.step(poll, t, readings))
            .collect()
    }
}

impl RuleState {
    fn new(rule: &Rule) -> RuleState {
        RuleState {
            rule: rule.clone(),
            checks: vec![CheckState::default(); rule.when.checks().len()],
            phase: Phase::Inactive,
            last_matches: Vec::new(),
        }
    }

    fn step(&mut self, poll: &Poll, t: f64, readings: &[Reading]) -> Option<Event> {
        let checks = self.rule.when.checks();
        let mut results = Vec::with_capacity(checks.len());
        for (check, state) in checks.iter().zip(&mut self.checks) {
            for r in readings {
                if r.value.is_finite() && check.selector.matches(r) {
                    state.observe(r, t, check.measure != Measure::Value);
                }
            }
            // Validation bounds every duration (`MAX_DURATION`), but a `Poll` built in code
            // is not validated: saturate rather than panic inside the agent's brain.
            let stale = poll
                .interval_for(check.selector.source)
                .checked_mul(STALE_POLLS)
                .unwrap_or(Duration::MAX)
                .as_secs_f64();
            results.push(state.evaluate(check, t, stale));
        }
        let mut results = results.into_iter();
        let (holds, matches) = combine(&self.rule.when, &mut results);
        if holds {
            self.last_matches.clone_from(&matches);
        }
        let rule = &self.rule;
        let (next, kind, since) = match self.phase {
            Phase::Inactive if holds => {
                if rule.for_duration.is_zero() {
                    (
                        Phase::Firing {
                            since: t,
                            fired_at: t,
                        },
                        Some(EventKind::Firing),
                        t,
                    )
                } else {
                    (Phase::Pending { since: t }, Some(EventKind::Pending), t)
                }
            }
            Phase::Inactive => (Phase::Inactive, None, t),
            Phase::Pending { .. } if !holds => (Phase::Inactive, None, t),
            Phase::Pending { since } => {
                if t - since >= rule.for_duration.as_secs_f64() {
                    (
                        Phase::Firing { since, fired_at: t },
                        Some(EventKind::Firing),
                        since,
                    )
                } else {
                    (self.phase, None, since)
                }
            }
            Phase::Firing { fired_at, .. }
                if !holds && t - fired_at >= rule.cooldown.as_secs_f64() =>
            {
                (Phase::Inactive, Some(EventKind::Cleared), fired_at)
            }
            Phase::Firing { since, .. } => (self.phase, None, since),
        };
        self.phase = next;
        let kind = kind?;
        let matches = if holds {
            matches
        } else {
            self.last_matches.clone()
        };
        let summary = summary(rule, kind, &matches);
        let actions = if kind == EventKind::Firing {
            rule.actions.clone()
        } else {
            Vec::new()
        };
        Some(Event {
            rule: rule.name.clone(),
            kind,
            severity: rule.severity,
            t,
            since,
            matches,
            summary,
            actions,
        })
    }
}

fn summary(rule: &Rule, kind: EventKind, matches: &[Match]) -> String {
    let mut s = format!("{} {} ({})", rule.name, kind, rule.severity);
    if let Some(m) = matches.first() {
        s.push_str(&format!(": {m}"));
        if matches.len() > 1 {
            s.push_str(&format!(" and {} more", matches.len() - 1));
        }
    }
    s
}

/// Walks the condition tree, consuming one check result per leaf (depth first).
fn combine(c: &Condition, results: &mut impl Iterator<Item = Vec<Match>>) -> (bool, Vec<Match>) {
    match c {
        Condition::Check(_) => {
            let m = results.next().unwrap_or_default();
            (!m.is_empty(), m)
        }
        Condition::Any(children) => {
            let mut any = false;
            let mut all_matches = Vec::new();
            for child in children {
                let (h, m) = combine(child, results);
                if h {
                    any = true;
                    all_matches.extend(m);
                }
            }
            (any, all_matches)
        }
        Condition::All(children) => {
            let mut all = true;
            let mut all_matches = Vec::new();
            for child in children {
                let (h, m) = combine(child, results);
                all &= h;
                all_matches.extend(m);
            }
            if all {
                (true, all_matches)
            } else {
                (false, Vec::new())
            }
        }
    }
}

impl CheckState {
    fn observe(&mut self, r: &Reading, t: f64, windowed: bool) {
        let key = r.series_key();
        match self.series.get_mut(&key) {
            Some(s) => {
                if t <= s.last_t {
                    return;
                }
                // A drop is a reset: the new value is the new baseline, no rise.
                let rise = r.value - s.last_value;
                if windowed && rise > 0.0 {
                    s.rises.push_back((t, rise));
                }
                s.last_value = r.value;
                s.last_t = t;
            }
            None => {
                // The first sample is a baseline: what a counter held before we looked
                // is not an increase.
                self.series.insert(
                    key,
                    Series {
                        last_value: r.value,
                        last_t: t,
                        rises: VecDeque::new(),
                        active: false,
                    },
                );
            }
        }
    }

    /// Updates each series' active flag at time `t`; returns the active ones.
    fn evaluate(&mut self, check: &Check, t: f64, stale_after: f64) -> Vec<Match> {
        let mut out = Vec::new();
        for (key, s) in &mut self.series {
            let measured = match check.measure {
                Measure::Value => s.last_value,
                Measure::Increase(w) | Measure::Rate(w) => {
                    let w = w.as_secs_f64();
                    while s.rises.front().is_some_and(|&(rt, _)| rt <= t - w) {
                        s.rises.pop_front();
                    }
                    let sum: f64 = s.rises.iter().map(|&(_, r)| r).sum();
                    if matches!(check.measure, Measure::Rate(_)) && w > 0.0 {
                        sum / w
                    } else {
                        sum
                    }
                }
            };
            if t - s.last_t > stale_after {
                s.active = false;
                continue;
            }
            s.active = match (s.active, check.clear) {
                (true, Some(clear)) => {
                    if check.op.is_upward() {
                        measured > clear
                    } else {
                        measured < clear
                    }
                }
                _ => check.op.holds(measured),
            };
            if s.active {
                out.push(Match {
                    series: key.clone(),
                    measure: check.measure.to_string(),
                    value: measured,
                    op: check.op.symbol(),
                    threshold: check.op.threshold(),
                    reading: s.last_value,
                });
            }
        }
        out
    }
}
