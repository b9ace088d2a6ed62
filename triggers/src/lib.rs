//! lifeboat-triggers: the rules that decide when a node is at risk.
//!
//! Operators write rules in `lifeboat.toml` (see `config/lifeboat.toml` for a commented
//! example). This crate reads that file into validated types ([`Config`]), reporting
//! every problem with its file, line and column ([`Diagnostics`]), and evaluates the
//! rules as a pure function of their state and the readings ([`Evaluator::step`]): no
//! I/O, no clock, no sleeping. [`backtest`] replays recorded traces.
//!
//! # The file
//!
//! ```toml
//! [agent]            # the agent's own settings (see Config::with_agent_table)
//!
//! [poll]
//! interval = "10s"   # every source...
//! edac = "30s"       # ...unless overridden (edac, hwmon, thermal, infiniband, netdev,
//!                    #    pcie_aer, rasdaemon, lm_sensors, host)
//!
//! [drain]            # default: Slurm
//! command = ["scontrol", "update", "nodename={node}", "state=drain", "reason={reason}"]
//!
//! [[rule]]
//! name = "memory-ce-burst"        # unique; letters, digits, - _ .
//! description = "free text"
//! severity = "warning"            # info | warning (default) | critical
//! for = "0s"                      # condition must hold this long before firing
//! cooldown = "1h"                 # a fired rule stays firing at least this long
//! when = { source = "edac", name = "dimm_ce_count", increase = "10m", above = 20 }
//!
//! [[rule.action]]
//! type = "checkpoint"             # checkpoint | drain | exec | log
//! target = { job_env = "SLURM_JOB_ID" }
//! after = "continue"              # continue (default) | stop | kill
//! ```
//!
//! # Conditions
//!
//! A condition is a check or a combination: `{ any = [ ... ] }`, `{ all = [ ... ] }`,
//! nested freely. A check has
//! - a selector: `source`, `name` (exact or glob), optional `kind` (`counter`/`gauge`),
//!   `labels = { key = "glob" }` and `label_regex = { key = "regex" }`;
//! - a measure: the latest value (default), `increase = "WINDOW"` (how much a counter
//!   rose within the window; resets are not rises) or `rate = "WINDOW"` (the increase
//!   divided by the window, per second);
//! - one comparison: `above`, `at_least`, `below` or `at_most`;
//! - optional hysteresis `clear = LEVEL`: an active series stays active until the
//!   measure is back at or past that level.
//!
//! A check holds when at least one selected series satisfies it; events list the
//! series that do.
//!
//! # Checks on meaning
//!
//! Beyond TOML shape (unknown fields, wrong types), validation rejects: unknown sources,
//! a reading name that belongs to another source, a `kind` that contradicts a known
//! reading, `increase`/`rate` on a gauge, a window shorter than the source's poll
//! interval, hysteresis on the wrong side, duplicate rule names, rules without
//! actions, checkpoint targets without criteria, bad globs and regexes, unknown drain
//! placeholders. It warns about reading names and labels unknown for a source (the
//! sensors' own catalogue, `lifeboat_sensors::catalogue`), raw counter values compared
//! without `increase`, and `for` shorter than a poll interval.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backtest;
pub mod diag;
pub mod eval;
pub mod model;
mod parse;
pub mod target;

pub use diag::{Diagnostic, Diagnostics, Level};
pub use eval::{Evaluator, Event, EventKind, Match, ReloadReport, RulePhase, fmt_time};
pub use model::{
    Action, AfterAction, Check, Comparison, Condition, Config, DrainConfig, MAX_DURATION, Measure,
    Poll, Rule, Selector, Severity,
};
pub use parse::LoadError;
pub use target::{JOB_VARS, JobSelector, Pattern, ProcessInfo, Target};
