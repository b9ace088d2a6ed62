//! The validated configuration: poll intervals, drain command and rules, as types that
//! cannot hold an invalid value (built only by [`crate::Config::from_str`]).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use lifeboat_sensors::{Kind, Reading, Source};
use serde::{Deserialize, Serialize};

use crate::diag::Diagnostic;
use crate::target::{Pattern, Target};

/// A whole `lifeboat.toml`, minus the `[agent]` table (handed to the agent as it is
/// parsed, by [`Config::with_agent_table`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// How often each source is read (`[poll]`).
    pub poll: Poll,
    /// How to drain this node (`[drain]`).
    pub drain: DrainConfig,
    /// The rules (`[[rule]]`), in file order; names are unique.
    pub rules: Vec<Rule>,
    /// Warnings found while reading the file (it was accepted).
    pub warnings: Vec<Diagnostic>,
}

/// The longest duration a file may give (ten 365-day years): anything longer cannot be
/// meant, and every duration up to it can be added to a time, multiplied by
/// [`crate::eval::STALE_POLLS`] and turned into seconds without overflow. Validation
/// rejects longer ones with their position.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Poll intervals: a global one and per-source overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poll {
    /// Interval of every source without an override.
    pub interval: Duration,
    /// Per-source intervals.
    pub overrides: BTreeMap<Source, Duration>,
}

impl Poll {
    /// Default poll interval when `[poll] interval` is absent.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

    /// How often `source` is read.
    pub fn interval_for(&self, source: Source) -> Duration {
        self.overrides
            .get(&source)
            .copied()
            .unwrap_or(self.interval)
    }
}

impl Default for Poll {
    fn default() -> Poll {
        Poll {
            interval: Poll::DEFAULT_INTERVAL,
            overrides: BTreeMap::new(),
        }
    }
}

/// How the agent drains this node through the batch scheduler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainConfig {
    /// Program and arguments; `{node}` and `{reason}` are replaced in each argument.
    pub command: Vec<String>,
}

impl DrainConfig {
    /// Placeholders a drain command may use.
    pub const PLACEHOLDERS: [&'static str; 2] = ["node", "reason"];

    /// The command to run for `node` with `reason`, placeholders replaced.
    pub fn command_for(&self, node: &str, reason: &str) -> Vec<String> {
        self.command
            .iter()
            .map(|a| a.replace("{node}", node).replace("{reason}", reason))
            .collect()
    }
}

impl Default for DrainConfig {
    /// Slurm: `scontrol update nodename={node} state=drain reason={reason}`.
    fn default() -> DrainConfig {
        DrainConfig {
            command: [
                "scontrol",
                "update",
                "nodename={node}",
                "state=drain",
                "reason={reason}",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

/// How urgent a rule is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// A fault is building up.
    Warning,
    /// A failure is imminent or happening.
    Critical,
}

impl Severity {
    /// `info`, `warning` or `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rule: when its condition holds (for `for_duration`), it fires and its actions run.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Unique name (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// Free text for operators.
    pub description: Option<String>,
    /// Urgency.
    pub severity: Severity,
    /// What must hold.
    pub when: Condition,
    /// How long the condition must hold before the rule fires (zero: at once).
    pub for_duration: Duration,
    /// Minimum time a firing rule stays firing: at most one firing per cooldown, however
    /// often the condition flaps.
    pub cooldown: Duration,
    /// What to do when it fires, in order.
    pub actions: Vec<Action>,
}

/// A condition tree: checks on readings combined with any/all.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// One check on the selected readings.
    Check(Check),
    /// At least one child holds.
    Any(Vec<Condition>),
    /// Every child holds.
    All(Vec<Condition>),
}

impl Condition {
    /// The checks of this tree, depth first, in file order.
    pub fn checks(&self) -> Vec<&Check> {
        let mut out = Vec::new();
        fn walk<'a>(c: &'a Condition, out: &mut Vec<&'a Check>) {
            match c {
                Condition::Check(check) => out.push(check),
                Condition::Any(cs) | Condition::All(cs) => cs.iter().for_each(|c| walk(c, out)),
            }
        }
        walk(self, &mut out);
        out
    }
}

/// A check: some readings, a quantity computed from each series, and a comparison.
/// It holds when at least one selected series satisfies it.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// Which readings.
    pub selector: Selector,
    /// What is compared: the value, or a counter's increase or rate over a window.
    pub measure: Measure,
    /// The comparison that makes a series active.
    pub op: Comparison,
    /// Hysteresis: an active series stays active until the measure crosses back past
    /// this level (below it for `above`/`at_least`, above it for `below`/`at_most`).
    pub clear: Option<f64>,
}

/// Which readings a check looks at.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    /// Source.
    pub source: Source,
    /// Reading name (glob).
    pub name: Pattern,
    /// Only counters or only gauges.
    pub kind: Option<Kind>,
    /// Every label matcher must match (a missing label matches nothing).
    pub labels: Vec<(String, Pattern)>,
}

impl Selector {
    /// True if `r` is selected.
    pub fn matches(&self, r: &Reading) -> bool {
        r.source == self.source
            && self.name.is_match(&r.name)
            && self.kind.is_none_or(|k| k == r.kind)
            && self
                .labels
                .iter()
                .all(|(k, p)| r.labels.get(k).is_some_and(|v| p.is_match(v)))
    }
}

impl fmt::Display for Selector {
    /// `edac:dimm_ce_count{dimm_label="CPU0_*"}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.source, self.name.as_str())?;
        if !self.labels.is_empty() {
            let parts: Vec<String> = self
                .labels
                .iter()
                .map(|(k, p)| match p {
                    Pattern::Glob { pattern, .. } => format!("{k}={pattern:?}"),
                    Pattern::Regex(re) => format!("{k}=~{:?}", re.as_str()),
                })
                .collect();
            write!(f, "{{{}}}", parts.join(","))?;
        }
        Ok(())
    }
}

/// The quantity a check compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// The latest value.
    Value,
    /// How much a counter grew over the window (resets do not count as growth).
    Increase(Duration),
    /// Increase over the window divided by the window, per second.
    Rate(Duration),
}

impl fmt::Display for Measure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Measure::Value => f.write_str("value"),
            Measure::Increase(w) => write!(f, "increase over {}", humantime::format_duration(*w)),
            Measure::Rate(w) => write!(f, "rate/s over {}", humantime::format_duration(*w)),
        }
    }
}

/// A comparison against a threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Comparison {
    /// value > threshold
    Above(f64),
    /// value >= threshold
    AtLeast(f64),
    /// value < threshold
    Below(f64),
    /// value <= threshold
    AtMost(f64),
}

impl Comparison {
    /// True if `v` satisfies the comparison.
    pub fn holds(self, v: f64) -> bool {
        match self {
            Comparison::Above(t) => v > t,
            Comparison::AtLeast(t) => v >= t,
            Comparison::Below(t) => v < t,
            Comparison::AtMost(t) => v <= t,
        }
    }

    /// True for `above` and `at_least`.
    pub fn is_upward(self) -> bool {
        matches!(self, Comparison::Above(_) | Comparison::AtLeast(_))
    }

    /// The threshold.
    pub fn threshold(self) -> f64 {
        match self {
            Comparison::Above(t)
            | Comparison::AtLeast(t)
            | Comparison::Below(t)
            | Comparison::AtMost(t) => t,
        }
    }

    /// `>`, `>=`, `<` or `<=`.
    pub fn symbol(self) -> &'static str {
        match self {
            Comparison::Above(_) => ">",
            Comparison::AtLeast(_) => ">=",
            Comparison::Below(_) => "<",
            Comparison::AtMost(_) => "<=",
        }
    }
}

impl fmt::Display for Check {
    /// `edac:dimm_ce_count increase over 10m > 20 (clear <= 5)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.selector)?;
        if self.measure != Measure::Value {
            write!(f, " {}", self.measure)?;
        }
        write!(f, " {} {}", self.op.symbol(), self.op.threshold())?;
        if let Some(c) = self.clear {
            let sym = if self.op.is_upward() { "<=" } else { ">=" };
            write!(f, " (clears at {sym} {c})")?;
        }
        Ok(())
    }
}

/// What happens to checkpointed processes afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AfterAction {
    /// Let them run on (default).
    Continue,
    /// Leave them stopped (SIGSTOP).
    Stop,
    /// Kill them (SIGKILL) once the image is safe.
    Kill,
}

impl AfterAction {
    /// `continue`, `stop` or `kill`.
    pub fn as_str(self) -> &'static str {
        match self {
            AfterAction::Continue => "continue",
            AfterAction::Stop => "stop",
            AfterAction::Kill => "kill",
        }
    }
}

/// Something the agent does when a rule fires.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Action {
    /// Checkpoint every process the target selects, then continue, stop or kill them.
    Checkpoint {
        /// Which processes.
        target: Box<Target>,
        /// What happens to them afterwards.
        after: AfterAction,
    },
    /// Drain the node with the `[drain]` command.
    Drain,
    /// Run a command with the event in its environment ([`crate::Event::env`]).
    Exec {
        /// Program and arguments (no shell).
        command: Vec<String>,
    },
    /// Only log the event.
    Log,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Checkpoint { target, after } => {
                write!(f, "checkpoint {target}, then {}", after.as_str())
            }
            Action::Drain => f.write_str("drain the node"),
            Action::Exec { command } => write!(f, "exec {}", command.join(" ")),
            Action::Log => f.write_str("log"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_overrides_fall_back_to_the_global_interval() {
        let mut poll = Poll::default();
        poll.overrides.insert(Source::Edac, Duration::from_secs(30));
        assert_eq!(poll.interval_for(Source::Edac), Duration::from_secs(30));
        assert_eq!(poll.interval_for(Source::Hwmon), Poll::DEFAULT_INTERVAL);
    }

    #[test]
    fn drain_command_fills_placeholders_in_every_argument() {
        let cmd = DrainConfig::default().command_for("node17", "lifeboat: memory-uncorrected");
        assert_eq!(
            cmd,
            [
                "scontrol",
                "update",
                "nodename=node17",
                "state=drain",
                "reason=lifeboat: memory-uncorrected"
            ]
        );
    }

    #[test]
    fn comparisons() {
        for (op, v, holds) in [
            (Comparison::Above(5.0), 5.0, false),
            (Comparison::AtLeast(5.0), 5.0, true),
            (Comparison::Below(5.0), 5.0, false),
            (Comparison::AtMost(5.0), 5.0, true),
            (Comparison::Above(5.0), 5.5, true),
            (Comparison::Below(5.0), 4.5, true),
        ] {
            assert_eq!(op.holds(v), holds, "{} {v}", op.symbol());
        }
    }
}
