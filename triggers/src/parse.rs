//! Reading `lifeboat.toml`: TOML into raw serde structs (`deny_unknown_fields`), then
//! validation into the types of [`crate::model`], collecting every problem with its span.
//!
//! Each top-level table and each `[[rule]]` is deserialized on its own, so one bad rule
//! does not hide the errors of the next. The file is parsed once: the `[agent]` table is
//! handed, deserialized into the agent's own type, to [`Config::with_agent_table`]'s
//! caller (and skipped by [`Config::from_str`]).

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lifeboat_sensors::catalogue;
use lifeboat_sensors::{Kind, Source};
use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::diag::{Diagnostics, Sink, did_you_mean};
use crate::model::{
    Action, AfterAction, Check, Comparison, Condition, Config, DrainConfig, MAX_DURATION, Measure,
    Poll, Rule, Selector, Severity,
};
use crate::target::{JobSelector, Pattern, Target};

/// Top-level tables of `lifeboat.toml`.
const TOP_LEVEL: [&str; 4] = ["agent", "poll", "drain", "rule"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPoll {
    interval: Option<Spanned<String>>,
    edac: Option<Spanned<String>>,
    hwmon: Option<Spanned<String>>,
    thermal: Option<Spanned<String>>,
    infiniband: Option<Spanned<String>>,
    netdev: Option<Spanned<String>>,
    pcie_aer: Option<Spanned<String>>,
    rasdaemon: Option<Spanned<String>>,
    lm_sensors: Option<Spanned<String>>,
    host: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDrain {
    command: Spanned<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Spanned<String>,
    description: Option<String>,
    severity: Option<Severity>,
    #[serde(rename = "for")]
    for_duration: Option<Spanned<String>>,
    cooldown: Option<Spanned<String>>,
    when: Spanned<RawCondition>,
    action: Option<Spanned<Vec<Spanned<RawAction>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCondition {
    any: Option<Spanned<Vec<Spanned<RawCondition>>>>,
    all: Option<Spanned<Vec<Spanned<RawCondition>>>>,
    source: Option<Spanned<String>>,
    name: Option<Spanned<String>>,
    kind: Option<Spanned<Kind>>,
    labels: Option<BTreeMap<String, Spanned<String>>>,
    label_regex: Option<BTreeMap<String, Spanned<String>>>,
    increase: Option<Spanned<String>>,
    rate: Option<Spanned<String>>,
    above: Option<Spanned<f64>>,
    at_least: Option<Spanned<f64>>,
    below: Option<Spanned<f64>>,
    at_most: Option<Spanned<f64>>,
    clear: Option<Spanned<f64>>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum ActionType {
    Checkpoint,
    Drain,
    Exec,
    Log,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAction {
    #[serde(rename = "type")]
    kind: Spanned<ActionType>,
    target: Option<Spanned<RawTarget>>,
    after: Option<Spanned<AfterAction>>,
    command: Option<Spanned<Vec<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    pids: Option<Vec<i32>>,
    comm: Option<Spanned<String>>,
    comm_regex: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    cgroup: Option<Spanned<String>>,
    job_env: Option<Spanned<String>>,
    job_id: Option<Spanned<String>>,
}

/// Why [`Config::load`] failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read rules file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid configuration.
    #[error("{0}")]
    Invalid(Diagnostics),
}

impl Config {
    /// Reads and validates a configuration. `path` is only used in messages.
    ///
    /// On success, [`Config::warnings`] holds the warnings; on failure, every error and
    /// warning found is returned.
    /// The `[agent]` table is not looked into (see [`Config::with_agent_table`]).
    #[allow(clippy::should_implement_trait)]
    pub fn from_str(text: &str, path: impl AsRef<Path>) -> Result<Config, Diagnostics> {
        Config::with_agent_table::<IgnoredAny>(text, path).map(|(c, IgnoredAny)| c)
    }

    /// Reads and validates a whole `lifeboat.toml` in one parse: the rules, and the
    /// `[agent]` table deserialized into the agent's own settings type `A`
    /// (`A::default()` when the file has no such table). A shape error in `[agent]` (an
    /// unknown field, a wrong type) is a diagnostic like any other; what its values mean
    /// is for the agent to check.
    pub fn with_agent_table<A: DeserializeOwned + Default>(
        text: &str,
        path: impl AsRef<Path>,
    ) -> Result<(Config, A), Diagnostics> {
        let path = path.as_ref().to_string_lossy();
        let mut sink = Sink::new(&path, text);
        let read = read_config::<A>(&mut sink);
        let diags = sink.finish();
        match read {
            Some((mut c, agent)) if diags.is_ok() => {
                c.warnings = diags.warnings;
                Ok((c, agent))
            }
            _ => Err(diags),
        }
    }

    /// Reads the file at `path` and validates it.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, LoadError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_str(&text, path).map_err(LoadError::Invalid)
    }
}

/// Deserializes one spanned TOML value into `T`, reporting a shape error.
pub(crate) fn de<T: DeserializeOwned>(
    sink: &mut Sink<'_>,
    value: &Spanned<DeValue<'_>>,
) -> Option<T> {
    match T::deserialize(ValueDeserializer::from(value.clone())) {
        Ok(v) => Some(v),
        Err(e) => {
            sink.toml(&e);
            None
        }
    }
}

/// Parses the document; reports syntax errors and unknown top-level keys.
pub(crate) fn parse_document<'t>(sink: &mut Sink<'t>, allowed: &[&str]) -> Option<DeTable<'t>> {
    let (root, errors) = DeTable::parse_recoverable(sink.text);
    if !errors.is_empty() {
        for e in &errors {
            sink.toml(e);
        }
        return None;
    }
    let root = root.into_inner();
    for (key, _) in root.iter() {
        let k: &str = key.get_ref();
        if !allowed.contains(&k) {
            let list = allowed
                .iter()
                .map(|a| format!("`{a}`"))
                .collect::<Vec<_>>()
                .join(", ");
            let msg = format!("unknown top-level key `{k}`, expected one of {list}");
            match did_you_mean(k, allowed.iter().copied()) {
                Some(s) => sink.error_help(key.span(), msg, format!("did you mean `{s}`?")),
                None => sink.error(key.span(), msg),
            }
        }
    }
    Some(root)
}

fn read_config<A: DeserializeOwned + Default>(sink: &mut Sink<'_>) -> Option<(Config, A)> {
    let root = parse_document(sink, &TOP_LEVEL)?;
    let agent = match root.get("agent") {
        Some(v) => de::<A>(sink, v),
        None => Some(A::default()),
    };
    let poll = match root.get("poll") {
        Some(v) => de::<RawPoll>(sink, v).and_then(|raw| validate_poll(sink, raw)),
        None => Some(Poll::default()),
    };
    let drain = match root.get("drain") {
        Some(v) => de::<RawDrain>(sink, v).and_then(|raw| validate_drain(sink, raw)),
        None => Some(DrainConfig::default()),
    };
    let mut rules = Vec::new();
    let mut ok = true;
    if let Some(v) = root.get("rule") {
        match v.get_ref() {
            DeValue::Array(items) => {
                let poll_for_checks = poll.clone().unwrap_or_default();
                let mut names: HashMap<String, Range<usize>> = HashMap::new();
                for item in items.iter() {
                    let Some(raw) = de::<RawRule>(sink, item) else {
                        ok = false;
                        continue;
                    };
                    let name = raw.name.get_ref().clone();
                    let name_span = raw.name.span();
                    match validate_rule(sink, &poll_for_checks, raw) {
                        Some(rule) => {
                            if let Some(first) = names.get(&name) {
                                let line = sink.text[..first.start].matches('\n').count() + 1;
                                sink.error_help(
                                    name_span,
                                    format!("duplicate rule name `{name}`"),
                                    format!("the first rule with this name is on line {line}"),
                                );
                            } else {
                                names.insert(name, name_span);
                            }
                            rules.push(rule);
                        }
                        None => ok = false,
                    }
                }
            }
            _ => sink.error_help(
                v.span(),
                "`rule` must be an array of tables",
                "write each rule as a `[[rule]]` table",
            ),
        }
    }
    if rules.is_empty() && ok && !sink.has_errors() {
        sink.warn(0..0, "no rules: the agent will watch but never act");
    }
    let config = Config {
        poll: poll?,
        drain: drain?,
        rules,
        warnings: Vec::new(),
    };
    Some((config, agent?))
}

/// Parses a duration such as `30s`, `10m`, `24h`, `1h30m`, at most [`MAX_DURATION`].
pub(crate) fn duration(sink: &mut Sink<'_>, s: &Spanned<String>, what: &str) -> Option<Duration> {
    match humantime::parse_duration(s.get_ref().trim()) {
        Ok(d) if d > MAX_DURATION => {
            sink.error_help(
                s.span(),
                format!("{what} `{}` is longer than 10 years", s.get_ref()),
                format!(
                    "durations are at most 10 years ({}s); write a shorter one",
                    MAX_DURATION.as_secs()
                ),
            );
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            sink.error_help(
                s.span(),
                format!("invalid {what} `{}`: {e}", s.get_ref()),
                "write a duration such as \"30s\", \"10m\", \"24h\" or \"1h30m\"",
            );
            None
        }
    }
}

fn validate_poll(sink: &mut Sink<'_>, raw: RawPoll) -> Option<Poll> {
    let mut ok = true;
    let mut positive = |sink: &mut Sink<'_>, s: &Spanned<String>, what: &str| {
        let d = duration(sink, s, what);
        if d == Some(Duration::ZERO) {
            sink.error(s.span(), format!("{what} must be longer than zero"));
            ok = false;
            return None;
        }
        ok &= d.is_some();
        d
    };
    let interval = match &raw.interval {
        Some(s) => positive(sink, s, "poll interval"),
        None => Some(Poll::DEFAULT_INTERVAL),
    };
    let per_source = [
        (Source::Edac, &raw.edac),
        (Source::Hwmon, &raw.hwmon),
        (Source::Thermal, &raw.thermal),
        (Source::Infiniband, &raw.infiniband),
        (Source::Netdev, &raw.netdev),
        (Source::PcieAer, &raw.pcie_aer),
        (Source::Rasdaemon, &raw.rasdaemon),
        (Source::LmSensors, &raw.lm_sensors),
        (Source::Host, &raw.host),
    ];
    let mut overrides = BTreeMap::new();
    for (source, value) in per_source {
        if let Some(s) = value {
            if let Some(d) = positive(sink, s, &format!("poll interval of {source}")) {
                overrides.insert(source, d);
            }
        }
    }
    let interval = interval?;
    ok.then_some(Poll {
        interval,
        overrides,
    })
}

fn validate_drain(sink: &mut Sink<'_>, raw: RawDrain) -> Option<DrainConfig> {
    let argv = raw.command.get_ref();
    if argv.is_empty() || argv[0].get_ref().trim().is_empty() {
        sink.error_help(
            raw.command.span(),
            "the drain command is empty",
            "give a program and its arguments, e.g. [\"scontrol\", \"update\", \"nodename={node}\", \"state=drain\", \"reason={reason}\"]",
        );
        return None;
    }
    let mut ok = true;
    for arg in argv {
        for name in placeholders(arg.get_ref()) {
            if !DrainConfig::PLACEHOLDERS.contains(&name) {
                sink.error_help(
                    arg.span(),
                    format!("unknown placeholder `{{{name}}}` in the drain command"),
                    "the drain command may use {node} and {reason}",
                );
                ok = false;
            }
        }
    }
    ok.then(|| DrainConfig {
        command: argv.iter().map(|a| a.get_ref().clone()).collect(),
    })
}

/// The `{name}` placeholders in `s`.
fn placeholders(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) => {
                out.push(&after[..close]);
                rest = &after[close + 1..];
            }
            None => break,
        }
    }
    out
}

fn valid_rule_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn validate_rule(sink: &mut Sink<'_>, poll: &Poll, raw: RawRule) -> Option<Rule> {
    let errors_before = sink.diags.errors.len();
    let name = raw.name.get_ref().clone();
    if !valid_rule_name(&name) {
        sink.error_help(
            raw.name.span(),
            format!("invalid rule name {name:?}"),
            "use letters, digits, `-`, `_` and `.` only (the name goes into logs, metrics labels and environment variables)",
        );
    }
    let for_duration = match &raw.for_duration {
        Some(s) => duration(sink, s, "`for` duration"),
        None => Some(Duration::ZERO),
    };
    let cooldown = match &raw.cooldown {
        Some(s) => duration(sink, s, "cooldown"),
        None => Some(Duration::ZERO),
    };
    let when = validate_condition(sink, poll, &raw.when);
    if let (Some(f), Some(when), Some(s)) = (for_duration, &when, &raw.for_duration) {
        let slowest = when
            .checks()
            .iter()
            .map(|c| poll.interval_for(c.selector.source))
            .max()
            .unwrap_or_default();
        if !f.is_zero() && f < slowest {
            sink.warn_help(
                s.span(),
                format!(
                    "`for` of {} is shorter than the poll interval ({}): it will act like `for = \"{}\"`",
                    humantime::format_duration(f),
                    humantime::format_duration(slowest),
                    humantime::format_duration(slowest),
                ),
                "a condition is only seen once per poll; use a `for` of at least one poll interval",
            );
        }
    }
    let actions = validate_actions(sink, &raw);
    if sink.diags.errors.len() > errors_before {
        return None;
    }
    Some(Rule {
        name,
        description: raw.description,
        severity: raw.severity.unwrap_or(Severity::Warning),
        when: when?,
        for_duration: for_duration?,
        cooldown: cooldown?,
        actions: actions?,
    })
}

fn validate_condition(
    sink: &mut Sink<'_>,
    poll: &Poll,
    raw: &Spanned<RawCondition>,
) -> Option<Condition> {
    let c = raw.get_ref();
    let leaf_fields = [
        c.source.is_some(),
        c.name.is_some(),
        c.kind.is_some(),
        c.labels.is_some(),
        c.label_regex.is_some(),
        c.increase.is_some(),
        c.rate.is_some(),
        c.above.is_some(),
        c.at_least.is_some(),
        c.below.is_some(),
        c.at_most.is_some(),
        c.clear.is_some(),
    ];
    let is_leaf = leaf_fields.iter().any(|&b| b);
    let forms = usize::from(c.any.is_some()) + usize::from(c.all.is_some()) + usize::from(is_leaf);
    if forms != 1 {
        let msg = if forms == 0 {
            "empty condition"
        } else {
            "a condition is either `any = [...]`, `all = [...]` or one check (`source`, `name`, ...), not several"
        };
        sink.error_help(
            raw.span(),
            msg,
            "e.g. `when = { source = \"edac\", name = \"dimm_ue_count\", increase = \"5m\", above = 0 }`",
        );
        return None;
    }
    for (list, is_any) in [(&c.any, true), (&c.all, false)] {
        let Some(list) = list else { continue };
        if list.get_ref().is_empty() {
            let which = if is_any { "any" } else { "all" };
            sink.error(
                list.span(),
                format!("`{which}` needs at least one condition"),
            );
            return None;
        }
        let children: Vec<Option<Condition>> = list
            .get_ref()
            .iter()
            .map(|child| validate_condition(sink, poll, child))
            .collect();
        let children: Option<Vec<Condition>> = children.into_iter().collect();
        let children = children?;
        return Some(if is_any {
            Condition::Any(children)
        } else {
            Condition::All(children)
        });
    }
    validate_check(sink, poll, raw.span(), c).map(Condition::Check)
}

/// The last line of a regex or glob error, without its `error: ` prefix.
fn regex_error_line(e: &str) -> String {
    let last = e.lines().last().unwrap_or_default().trim();
    last.strip_prefix("error: ").unwrap_or(last).to_owned()
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
    }
}

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '[', '{'])
}

/// Validates one check. Against the sensors' catalogue, for forward compatibility with
/// newer sensor readers: an unknown source is an error (the set is closed,
/// [`Source::ALL`]); a name that belongs to *another* source is an error (it can never
/// match); a name unknown to every source is a warning for closed sources (likely a
/// typo, but a newer reader may add names) and accepted silently for open ones; an
/// unknown label key is a warning.
fn validate_check(
    sink: &mut Sink<'_>,
    poll: &Poll,
    span: Range<usize>,
    c: &RawCondition,
) -> Option<Check> {
    let mut ok = true;
    // Source.
    let Some(source_s) = &c.source else {
        sink.error_help(
            span,
            "missing field `source` in this check",
            "name the sensor source: edac, hwmon, thermal, infiniband, netdev, pcie_aer, rasdaemon, lm_sensors or host",
        );
        return None;
    };
    let Some(source) = Source::from_name(source_s.get_ref()) else {
        let list = Source::ALL
            .iter()
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let msg = format!(
            "unknown source `{}`, expected one of {list}",
            source_s.get_ref()
        );
        match did_you_mean(source_s.get_ref(), Source::ALL.iter().map(|s| s.as_str())) {
            Some(s) => sink.error_help(source_s.span(), msg, format!("did you mean `{s}`?")),
            None => sink.error(source_s.span(), msg),
        }
        return None;
    };
    let info = catalogue::info(source);
    // Name.
    let Some(name_s) = &c.name else {
        sink.error_help(
            span,
            "missing field `name` in this check",
            format!(
                "name the reading, e.g. `name = \"{}\"` (a glob is allowed)",
                info.names.first().map_or("...", |(n, _)| n)
            ),
        );
        return None;
    };
    let name_str = name_s.get_ref().as_str();
    let name = match Pattern::glob(name_str) {
        Ok(p) => p,
        Err(e) => {
            sink.error(name_s.span(), format!("invalid name pattern: {e}"));
            return None;
        }
    };
    let known_names: Vec<&str> = info.names.iter().map(|(n, _)| *n).collect();
    let mut known_kind = None;
    if is_glob(name_str) {
        let matches: Vec<&&str> = known_names.iter().filter(|n| name.is_match(n)).collect();
        if matches.is_empty() && !info.open {
            sink.warn_help(
                name_s.span(),
                format!("the pattern `{name_str}` matches no known {source} reading"),
                format!("known {source} readings: {}", known_names.join(", ")),
            );
        }
        let kinds: Vec<Kind> = matches.iter().filter_map(|n| info.kind_of(n)).collect();
        if !kinds.is_empty() && kinds.iter().all(|&k| k == kinds[0]) {
            known_kind = Some(kinds[0]);
        }
    } else if let Some(k) = info.kind_of(name_str) {
        known_kind = Some(k);
    } else if !info.accepts(name_str) {
        let elsewhere = catalogue::sources_of(name_str, source);
        if !elsewhere.is_empty() {
            let list: Vec<&str> = elsewhere.iter().map(|s| s.as_str()).collect();
            sink.error_help(
                name_s.span(),
                format!(
                    "source `{source}` never produces `{name_str}`: this check can never match"
                ),
                format!("`{name_str}` comes from source {}", list.join(", ")),
            );
            ok = false;
        } else {
            let help = match did_you_mean(name_str, known_names.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("known {source} readings: {}", known_names.join(", ")),
            };
            sink.warn_help(
                name_s.span(),
                format!(
                    "`{name_str}` is not a reading {source} is known to produce; accepted for newer sensor readers, but check the spelling"
                ),
                help,
            );
        }
    }
    // Kind.
    let kind = c.kind.as_ref().map(|k| *k.get_ref());
    if let (Some(k), Some(kk), Some(ks)) = (kind, known_kind, &c.kind) {
        if k != kk {
            sink.error(
                ks.span(),
                format!(
                    "`{name_str}` is a {} reading, never a {}: this check can never match",
                    kind_name(kk),
                    kind_name(k)
                ),
            );
            ok = false;
        }
    }
    // Labels.
    let mut labels = Vec::new();
    let label_maps = [(&c.labels, false), (&c.label_regex, true)];
    for (map, regex) in label_maps {
        let Some(map) = map else { continue };
        for (key, value) in map {
            let pattern = if regex {
                Pattern::regex(value.get_ref()).map_err(|e| e.to_string())
            } else {
                Pattern::glob(value.get_ref()).map_err(|e| e.to_string())
            };
            match pattern {
                Ok(p) => labels.push((key.clone(), p)),
                Err(e) => {
                    let what = if regex { "regular expression" } else { "glob" };
                    let e = regex_error_line(&e);
                    sink.error(
                        value.span(),
                        format!("invalid {what} for label `{key}`: {e}"),
                    );
                    ok = false;
                }
            }
            if !info.open_labels() && !info.labels.contains(&key.as_str()) {
                let known = if info.labels.is_empty() {
                    format!("{source} readings carry no labels")
                } else {
                    format!("{source} readings carry: {}", info.labels.join(", "))
                };
                sink.warn_help(
                    value.span(),
                    format!("label `{key}` is not known for source `{source}`: this matcher may never match"),
                    known,
                );
            }
        }
    }
    // Measure.
    let measure = match (&c.increase, &c.rate) {
        (Some(_), Some(r)) => {
            sink.error(r.span(), "a check takes `increase` or `rate`, not both");
            return None;
        }
        (Some(w), None) => duration(sink, w, "increase window").map(|d| (Measure::Increase(d), w)),
        (None, Some(w)) => duration(sink, w, "rate window").map(|d| (Measure::Rate(d), w)),
        (None, None) => None,
    };
    let measure = match (measure, &c.increase, &c.rate) {
        (Some((m, w)), _, _) => {
            let (Measure::Increase(d) | Measure::Rate(d)) = m else {
                unreachable!("windowed measures only")
            };
            let interval = poll.interval_for(source);
            if d < interval {
                sink.error_help(
                    w.span(),
                    format!(
                        "window of {} is shorter than the poll interval of {source} ({}): it can never see an increase",
                        humantime::format_duration(d),
                        humantime::format_duration(interval)
                    ),
                    "make the window at least two poll intervals long, or poll this source more often in [poll]",
                );
                ok = false;
            }
            if known_kind == Some(Kind::Gauge) || kind == Some(Kind::Gauge) {
                sink.error_help(
                    w.span(),
                    format!("`increase` and `rate` need a counter, but `{name_str}` is a gauge"),
                    "compare the value itself with `above`/`below`",
                );
                ok = false;
            }
            m
        }
        (None, None, None) => {
            if known_kind == Some(Kind::Counter) {
                sink.warn_help(
                    name_s.span(),
                    format!(
                        "`{name_str}` is a counter compared by its raw value: it counts since boot or driver load"
                    ),
                    "to act on new errors, add `increase = \"10m\"` (or another window)",
                );
            }
            Measure::Value
        }
        (None, _, _) => return None,
    };
    // Comparison.
    let ops = [
        (&c.above, Comparison::Above as fn(f64) -> Comparison),
        (&c.at_least, Comparison::AtLeast),
        (&c.below, Comparison::Below),
        (&c.at_most, Comparison::AtMost),
    ];
    let given: Vec<_> = ops
        .iter()
        .filter_map(|(v, f)| v.as_ref().map(|v| (v, f)))
        .collect();
    let op = match given.as_slice() {
        [] => {
            sink.error_help(
                span,
                "this check has no comparison",
                "add one of `above`, `at_least`, `below`, `at_most` (e.g. `above = 0`)",
            );
            return None;
        }
        [(v, f)] => {
            if !v.get_ref().is_finite() {
                sink.error(v.span(), "the threshold must be a finite number");
                return None;
            }
            f(*v.get_ref())
        }
        [_, (v, _), ..] => {
            sink.error_help(
                v.span(),
                "a check takes one comparison",
                "use `any`/`all` to combine several",
            );
            return None;
        }
    };
    let clear = match &c.clear {
        Some(cl) => {
            let v = *cl.get_ref();
            let t = op.threshold();
            let wrong_side = if op.is_upward() { v > t } else { v < t };
            if !v.is_finite() || wrong_side {
                let side = if op.is_upward() {
                    "at or below"
                } else {
                    "at or above"
                };
                sink.error_help(
                    cl.span(),
                    format!("`clear = {v}` is on the wrong side of the threshold {t}"),
                    format!("hysteresis clears once the value is back {side} `clear`; it must be {side} {t}"),
                );
                ok = false;
            }
            Some(v)
        }
        None => None,
    };
    ok.then(|| Check {
        selector: Selector {
            source,
            name,
            kind,
            labels,
        },
        measure,
        op,
        clear,
    })
}

fn validate_actions(sink: &mut Sink<'_>, raw: &RawRule) -> Option<Vec<Action>> {
    let Some(list) = &raw.action else {
        sink.error_help(
            raw.name.span(),
            format!("rule `{}` has no action", raw.name.get_ref()),
            "add at least one `[[rule.action]]` with `type = \"log\"`, \"checkpoint\", \"drain\" or \"exec\"",
        );
        return None;
    };
    if list.get_ref().is_empty() {
        sink.error(list.span(), "a rule needs at least one action");
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    for a in list.get_ref() {
        match validate_action(sink, a) {
            Some(action) => out.push(action),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn validate_action(sink: &mut Sink<'_>, raw: &Spanned<RawAction>) -> Option<Action> {
    let a = raw.get_ref();
    let kind = *a.kind.get_ref();
    let name = match kind {
        ActionType::Checkpoint => "checkpoint",
        ActionType::Drain => "drain",
        ActionType::Exec => "exec",
        ActionType::Log => "log",
    };
    let mut ok = true;
    let mut unused = |sink: &mut Sink<'_>, field: &str, span: Option<Range<usize>>| {
        if let Some(span) = span {
            sink.error(
                span,
                format!("`{field}` does not apply to a `{name}` action"),
            );
            ok = false;
        }
    };
    if kind != ActionType::Checkpoint {
        unused(sink, "target", a.target.as_ref().map(Spanned::span));
        unused(sink, "after", a.after.as_ref().map(Spanned::span));
    }
    if kind != ActionType::Exec {
        unused(sink, "command", a.command.as_ref().map(Spanned::span));
    }
    let action = match kind {
        ActionType::Checkpoint => {
            let Some(target) = &a.target else {
                sink.error_help(
                    raw.span(),
                    "a `checkpoint` action needs a `target`",
                    "e.g. `target = { job_env = \"SLURM_JOB_ID\" }` saves every process of the node's Slurm jobs",
                );
                return None;
            };
            let target = validate_target(sink, target)?;
            let after = a
                .after
                .as_ref()
                .map_or(AfterAction::Continue, |s| *s.get_ref());
            Action::Checkpoint {
                target: Box::new(target),
                after,
            }
        }
        ActionType::Drain => Action::Drain,
        ActionType::Exec => {
            let command = a
                .command
                .as_ref()
                .map(|c| c.get_ref().clone())
                .unwrap_or_default();
            if command.first().is_none_or(|p| p.trim().is_empty()) {
                let span = a.command.as_ref().map_or(raw.span(), Spanned::span);
                sink.error_help(
                    span,
                    "an `exec` action needs a non-empty `command`",
                    "e.g. `command = [\"/usr/local/bin/page-oncall\"]`; the event is in its environment (LIFEBOAT_RULE, ...)",
                );
                return None;
            }
            Action::Exec { command }
        }
        ActionType::Log => Action::Log,
    };
    ok.then_some(action)
}

fn validate_target(sink: &mut Sink<'_>, raw: &Spanned<RawTarget>) -> Option<Target> {
    let t = raw.get_ref();
    let mut ok = true;
    let comm = match (&t.comm, &t.comm_regex) {
        (Some(_), Some(r)) => {
            sink.error(r.span(), "give `comm` (a glob) or `comm_regex`, not both");
            ok = false;
            None
        }
        (Some(g), None) => match Pattern::glob(g.get_ref()) {
            Ok(p) => Some(p),
            Err(e) => {
                sink.error(g.span(), format!("invalid glob for `comm`: {e}"));
                ok = false;
                None
            }
        },
        (None, Some(r)) => match Pattern::regex(r.get_ref()) {
            Ok(p) => Some(p),
            Err(e) => {
                let e = regex_error_line(&e.to_string());
                sink.error(
                    r.span(),
                    format!("invalid regular expression for `comm_regex`: {e}"),
                );
                ok = false;
                None
            }
        },
        (None, None) => None,
    };
    let cgroup = match &t.cgroup {
        Some(g) => match Pattern::glob(g.get_ref()) {
            Ok(p) => Some(p),
            Err(e) => {
                sink.error(g.span(), format!("invalid glob for `cgroup`: {e}"));
                ok = false;
                None
            }
        },
        None => None,
    };
    let job = match (&t.job_env, &t.job_id) {
        (Some(env), id) => {
            let e = env.get_ref();
            if e.is_empty() || e.contains('=') {
                sink.error(
                    env.span(),
                    format!("invalid environment variable name {e:?}"),
                );
                ok = false;
            }
            Some(JobSelector {
                env: e.clone(),
                id: id.as_ref().map(|i| i.get_ref().clone()),
            })
        }
        (None, Some(id)) => Some(JobSelector {
            env: "SLURM_JOB_ID".to_owned(),
            id: Some(id.get_ref().clone()),
        }),
        (None, None) => None,
    };
    let pids = t.pids.clone().unwrap_or_default();
    if t.pids.as_ref().is_some_and(Vec::is_empty) {
        sink.error(raw.span(), "`pids = []` selects no process");
        ok = false;
    }
    if pids.iter().any(|&p| p <= 0) {
        sink.error(raw.span(), "PIDs are positive numbers");
        ok = false;
    }
    let target = Target {
        pids,
        comm,
        user: t.user.as_ref().map(|u| u.get_ref().clone()),
        cgroup,
        job,
    };
    if ok && target.is_empty() {
        sink.error_help(
            raw.span(),
            "a checkpoint target needs at least one criterion",
            "use `pids`, `comm`, `comm_regex`, `user`, `cgroup`, `job_env` or `job_id`; to save every process of the Slurm jobs on this node: `target = { job_env = \"SLURM_JOB_ID\" }`",
        );
        ok = false;
    }
    ok.then_some(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_found() {
        assert_eq!(placeholders("nodename={node}"), vec!["node"]);
        assert_eq!(placeholders("{a}x{b}"), vec!["a", "b"]);
        assert!(placeholders("no {brace").is_empty());
    }

    #[test]
    fn the_agent_table_is_handed_over_from_the_same_parse() {
        #[derive(Debug, Default, PartialEq, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Agent {
            listen: Option<String>,
        }
        let rule = "[[rule]]\nname = \"r\"\nwhen = { source = \"host\", name = \"load1\", above = 9 }\n[[rule.action]]\ntype = \"log\"\n";
        let read = |text: &str| Config::with_agent_table::<Agent>(text, "f.toml");
        let (config, agent) = read(&format!("[agent]\nlisten = \"x:1\"\n{rule}")).unwrap();
        assert_eq!(config.rules.len(), 1);
        assert_eq!(agent.listen.as_deref(), Some("x:1"));
        assert_eq!(read(rule).unwrap().1, Agent::default());
        // A typo in [agent] is a diagnostic of the file, beside those of the rules.
        let bad = format!("[agent]\nlsiten = 1\n{rule}[poll]\ninterval = \"0s\"\n");
        let d = read(&bad).unwrap_err();
        let lines: Vec<(usize, usize)> = d.errors.iter().map(|e| (e.line, e.col)).collect();
        assert_eq!(lines, vec![(2, 1), (9, 12)], "{d}");
        assert!(
            d.errors[0].message.starts_with("unknown field `lsiten`"),
            "{d}"
        );
        assert_eq!(d.errors[0].help.as_deref(), Some("did you mean `listen`?"));
        // `from_str` does not look into [agent].
        assert!(Config::from_str(&format!("[agent]\nlsiten = 1\n{rule}"), "f.toml").is_ok());
    }

    #[test]
    fn rule_names() {
        for (name, ok) in [
            ("memory-ue", true),
            ("a.b_c", true),
            ("", false),
            ("a b", false),
        ] {
            assert_eq!(valid_rule_name(name), ok, "{name:?}");
        }
    }
}
