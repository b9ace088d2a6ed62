//! The one validation of a configuration file, and what this node can do with it.
//!
//! [`validate`] checks the whole file as the agent reads it: the rules and `[poll]`/
//! `[drain]` (lifeboat-triggers), the shape of `[agent]` (the same parse: a misspelt key
//! is an error with its line), and what the `[agent]` values mean
//! ([`AgentConfig::validate`], located at the key it names). `lifeboat rules check`,
//! `lifeboat agent --check` and the agent's start all run it, so a file one accepts the
//! others accept. `--strict` makes warnings fail ([`Checked::passes`]).
//!
//! [`NodeSummary`] sets the rules against one read of every source: which sources are
//! present, why the others are absent, and which rules can never fire here and why. The
//! agent logs it at start; `agent --check` prints it.

use std::fmt::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use lifeboat_sensors::{Root, Scan, Source};
use lifeboat_triggers::{Condition, Config, Diagnostic, Diagnostics, Level};

use crate::cmd::sensors::absent_reason;
use crate::cmd::support::Hinted;
use crate::daemon::config::{AgentConfig, Overrides, Raw};

/// A configuration file, validated.
#[derive(Debug)]
pub struct Checked {
    /// The file.
    pub path: PathBuf,
    /// Every error and warning, of the rules and of `[agent]`.
    pub diags: Diagnostics,
    /// The settings (with the command line's overrides) and the rules, when the file has
    /// no error.
    pub config: Option<(AgentConfig, Config)>,
}

impl Checked {
    /// Whether the file is good: no error, and with `strict` no warning either.
    pub fn passes(&self, strict: bool) -> bool {
        self.diags.errors.is_empty() && (!strict || self.diags.warnings.is_empty())
    }
}

/// Reads and validates the configuration file at `path`. Fails only when the file
/// cannot be read; everything wrong inside it is in [`Checked::diags`].
pub fn validate(path: &Path, overrides: &Overrides) -> Result<Checked> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            let missing = e.kind() == std::io::ErrorKind::NotFound;
            let err =
                Err(e).with_context(|| format!("cannot read the configuration {}", path.display()));
            return if missing {
                err.hint(missing_config_hint(path))
            } else {
                err
            };
        }
    };
    Ok(validate_text(&text, path, overrides))
}

/// What to do when the configuration file is not there.
fn missing_config_hint(path: &Path) -> String {
    let default = crate::cli::DEFAULT_CONFIG;
    if path == Path::new(default) {
        format!(
            "{default} is where the Debian package installs the configuration; without the \
             package, give `--config FILE` (a checkout has config/lifeboat.toml) or install \
             it: install -D -m 0644 config/lifeboat.toml {default}"
        )
    } else {
        format!(
            "give `--config` an existing file (without --config: {default}); \
             config/lifeboat.toml in a checkout is the shipped one, with every setting \
             commented"
        )
    }
}

/// Validates `text`, the content of the configuration file at `path`.
pub fn validate_text(text: &str, path: &Path, overrides: &Overrides) -> Checked {
    let shown = path.display().to_string();
    let (diags, config) = match Config::with_agent_table::<Raw>(text, path) {
        Err(diags) => (diags, None),
        Ok((rules, raw)) => {
            let warnings = rules.warnings.clone();
            match AgentConfig::validate(raw, path) {
                Ok(mut agent) => {
                    if let Some(root) = &overrides.root {
                        agent.root.clone_from(root);
                    }
                    if let Some(listen) = overrides.listen {
                        agent.listen = listen;
                    }
                    let diags = Diagnostics {
                        errors: Vec::new(),
                        warnings,
                    };
                    (diags, Some((agent, rules)))
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    let msg = msg
                        .strip_prefix(&format!("{shown}: "))
                        .unwrap_or(&msg)
                        .to_owned();
                    let span = agent_key_span(text, &msg);
                    let error = Diagnostic::new(Level::Error, &shown, text, span, msg, None);
                    let diags = Diagnostics {
                        errors: vec![error],
                        warnings,
                    };
                    (diags, None)
                }
            }
        }
    };
    Checked {
        path: path.to_owned(),
        diags,
        config,
    }
}

/// Where in `text` the `[agent]` key that `message` is about is: the longest key of
/// `[agent]` or `[agent.store]` the message names, else the `[agent]` header, else the
/// start of the file.
fn agent_key_span(text: &str, message: &str) -> Range<usize> {
    let Ok(doc) = toml::de::DeTable::parse(text) else {
        return 0..0;
    };
    let doc = doc.into_inner();
    let Some((agent_key, agent)) = doc.iter().find(|(k, _)| k.get_ref() == "agent") else {
        return 0..0;
    };
    let toml::de::DeValue::Table(table) = agent.get_ref() else {
        return agent_key.span();
    };
    let mut keys: Vec<(String, Range<usize>)> = Vec::new();
    for (k, v) in table.iter() {
        keys.push((k.get_ref().to_string(), k.span()));
        if let (true, toml::de::DeValue::Table(store)) = (k.get_ref() == "store", v.get_ref()) {
            keys.extend(
                store
                    .iter()
                    .map(|(k, _)| (k.get_ref().to_string(), k.span())),
            );
        }
    }
    // "the API token file X" is about token_file.
    let message = message.replace("token file", "token_file");
    let names = |key: &str| {
        message
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .any(|w| w == key)
    };
    keys.iter()
        .filter(|(k, _)| names(k))
        .max_by_key(|(k, _)| k.len())
        .map_or_else(|| agent_key.span(), |(_, span)| span.clone())
}

/// What the rules can do on this node, from one read of every source.
#[derive(Debug)]
pub struct NodeSummary {
    /// Each source: present with its number of readings, or absent and why.
    pub sources: Vec<(Source, Result<usize, String>)>,
    /// Each rule: whether it can fire here.
    pub rules: Vec<(String, Verdict)>,
}

/// Whether a rule can fire on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Its sources are present and some reading matches each check it needs.
    CanFire,
    /// Its sources are present but no reading matches yet (a label or name that this
    /// node's hardware does not have, or has not reported).
    NoSeries(Vec<String>),
    /// A source it needs is absent: it can never fire until the source appears.
    Never(Vec<Source>),
}

impl NodeSummary {
    /// Sets `rules` against `scans`, read under `root`.
    pub fn new(rules: &Config, scans: &[Scan], root: &Root, built: bool) -> NodeSummary {
        let sources = scans
            .iter()
            .map(|s| {
                let state = if s.present {
                    Ok(s.readings.len())
                } else {
                    Err(absent_reason(s.source, root, built))
                };
                (s.source, state)
            })
            .collect();
        let rules = rules
            .rules
            .iter()
            .map(|r| (r.name.clone(), verdict(&r.when, scans)))
            .collect();
        NodeSummary { sources, rules }
    }

    /// Why `source` is absent, if it is.
    fn absent(&self, source: Source) -> Option<&str> {
        self.sources
            .iter()
            .find(|(s, _)| *s == source)
            .and_then(|(_, state)| state.as_ref().err())
            .map(String::as_str)
    }

    /// Why the rule with this verdict cannot fire, if it cannot.
    pub fn why(&self, v: &Verdict) -> Option<String> {
        match v {
            Verdict::CanFire => None,
            Verdict::NoSeries(sel) => Some(format!("no reading here matches {}", sel.join(", "))),
            Verdict::Never(missing) => Some(
                missing
                    .iter()
                    .map(|s| format!("{s} is absent ({})", self.absent(*s).unwrap_or("?")))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        }
    }

    /// How many rules can fire here.
    pub fn firing_possible(&self) -> usize {
        self.rules
            .iter()
            .filter(|(_, v)| *v == Verdict::CanFire)
            .count()
    }

    /// The summary as text: the sources, then the rules.
    pub fn text(&self, root: &Root) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "sources on this node (root {}):",
            root.path().display()
        );
        let w = self
            .sources
            .iter()
            .map(|(s, _)| s.as_str().len())
            .max()
            .unwrap_or(0);
        for (s, state) in &self.sources {
            let _ = match state {
                Ok(n) => writeln!(out, "  present  {:w$}  {n} readings", s.as_str()),
                Err(why) => writeln!(out, "  absent   {:w$}  {why}", s.as_str()),
            };
        }
        let _ = writeln!(
            out,
            "rules: {} of {} can fire on this node",
            self.firing_possible(),
            self.rules.len()
        );
        let w = self.rules.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        for (name, v) in &self.rules {
            let _ = match (v, self.why(v)) {
                // The sources' lines above say why each is absent.
                (Verdict::Never(missing), Some(_)) => {
                    let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
                    let (list, verb) = match names.as_slice() {
                        [one] => ((*one).to_owned(), "is"),
                        [init @ .., last] => (format!("{} and {last}", init.join(", ")), "are"),
                        [] => (String::new(), "is"),
                    };
                    writeln!(
                        out,
                        "  {name:w$}  can never fire here: {list} {verb} absent"
                    )
                }
                (_, Some(why)) => writeln!(out, "  {name:w$}  cannot fire now: {why}"),
                (_, None) => writeln!(out, "  {name:w$}  can fire"),
            };
        }
        out
    }

    /// The summary as log lines: one for the sources, one per rule that cannot fire,
    /// one with the count.
    pub fn log(&self) {
        let present: Vec<String> = self
            .sources
            .iter()
            .filter_map(|(s, st)| st.as_ref().ok().map(|n| format!("{s} ({n} readings)")))
            .collect();
        let absent: Vec<&str> = self
            .sources
            .iter()
            .filter(|(_, st)| st.is_err())
            .map(|(s, _)| s.as_str())
            .collect();
        tracing::info!(
            present = %present.join(", "),
            absent = %absent.join(", "),
            "start-up summary: sources"
        );
        for (name, v) in &self.rules {
            match (v, self.why(v)) {
                (Verdict::Never(_), Some(why)) => {
                    tracing::warn!(rule = %name, why = %why, "rule can never fire on this node");
                }
                (_, Some(why)) => {
                    tracing::info!(rule = %name, why = %why, "rule cannot fire now");
                }
                _ => {}
            }
        }
        let (can, all) = (self.firing_possible(), self.rules.len());
        if can < all {
            tracing::warn!(
                can_fire = can,
                rules = all,
                "start-up summary: {can} of {all} rules can fire on this node"
            );
        } else {
            tracing::info!(
                can_fire = can,
                rules = all,
                "start-up summary: every rule can fire on this node"
            );
        }
    }
}

/// Whether `c` can hold given what `scans` read.
fn verdict(c: &Condition, scans: &[Scan]) -> Verdict {
    fn merge<T: PartialEq>(into: &mut Vec<T>, from: Vec<T>) {
        for x in from {
            if !into.contains(&x) {
                into.push(x);
            }
        }
    }
    match c {
        Condition::Check(check) => {
            let sel = &check.selector;
            let scan = scans.iter().find(|s| s.source == sel.source);
            match scan {
                Some(s) if s.present => {
                    if s.readings.iter().any(|r| sel.matches(r)) {
                        Verdict::CanFire
                    } else {
                        Verdict::NoSeries(vec![sel.to_string()])
                    }
                }
                _ => Verdict::Never(vec![sel.source]),
            }
        }
        Condition::Any(cs) => {
            let vs: Vec<Verdict> = cs.iter().map(|c| verdict(c, scans)).collect();
            if vs.contains(&Verdict::CanFire) {
                return Verdict::CanFire;
            }
            let (mut sel, mut missing) = (Vec::new(), Vec::new());
            for v in vs {
                match v {
                    Verdict::NoSeries(s) => merge(&mut sel, s),
                    Verdict::Never(m) => merge(&mut missing, m),
                    Verdict::CanFire => {}
                }
            }
            if sel.is_empty() {
                Verdict::Never(missing)
            } else {
                Verdict::NoSeries(sel)
            }
        }
        Condition::All(cs) => {
            let (mut sel, mut missing) = (Vec::new(), Vec::new());
            for v in cs.iter().map(|c| verdict(c, scans)) {
                match v {
                    Verdict::NoSeries(s) => merge(&mut sel, s),
                    Verdict::Never(m) => merge(&mut missing, m),
                    Verdict::CanFire => {}
                }
            }
            if !missing.is_empty() {
                Verdict::Never(missing)
            } else if !sel.is_empty() {
                Verdict::NoSeries(sel)
            } else {
                Verdict::CanFire
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifeboat_sensors::Reading;

    fn check(text: &str) -> Checked {
        validate_text(text, Path::new("f.toml"), &Overrides::default())
    }

    const RULE: &str = "[[rule]]\nname = \"hot\"\nwhen = { source = \"hwmon\", name = \"temp_celsius\", above = 90 }\n[[rule.action]]\ntype = \"log\"\n";

    #[test]
    fn a_missing_configuration_says_where_one_comes_from() {
        let h = missing_config_hint(Path::new(crate::cli::DEFAULT_CONFIG));
        assert!(h.contains("Debian package installs"), "{h}");
        assert!(h.contains("--config FILE"), "{h}");
        let h = missing_config_hint(Path::new("/elsewhere.toml"));
        assert!(h.contains("give `--config` an existing file"), "{h}");
    }

    /// The friction point of issue 10: `[agent] lisen` was OK for `rules check`.
    #[test]
    fn a_misspelt_agent_key_is_an_error_with_its_line() {
        let c = check(&format!("[agent]\nlisen = \"127.0.0.1:1\"\n{RULE}"));
        assert!(!c.passes(false));
        let e = &c.diags.errors[0];
        assert_eq!((e.line, e.col), (2, 1), "{e}");
        assert!(e.message.contains("unknown field `lisen`"), "{e}");
        assert_eq!(e.help.as_deref(), Some("did you mean `listen`?"));
    }

    #[test]
    fn what_agent_values_mean_is_checked_at_their_key() {
        let c = check(&format!("[agent]\nnode = \"n\"\ntoken = \"short\"\n{RULE}"));
        let e = &c.diags.errors[0];
        assert_eq!((e.line, e.col), (3, 1), "{e}");
        assert!(e.message.starts_with("the API token is shorter"), "{e}");
        let c = check(&format!(
            "[agent]\nnode = \"n\"\n[agent.store]\nkeep = 2\nmin_free_gib = -1\n{RULE}"
        ));
        let e = &c.diags.errors[0];
        assert_eq!(e.line, 5, "{e}");
        assert!(
            e.to_string()
                .starts_with("f.toml:5:1: error: [agent.store] min_free_gib"),
            "{e}"
        );
    }

    #[test]
    fn strict_fails_on_warnings() {
        let warn = RULE.replace("temp_celsius", "temp_celcius");
        let c = check(&warn);
        assert!(c.passes(false), "{}", c.diags);
        assert!(!c.diags.warnings.is_empty());
        assert!(!c.passes(true));
        assert!(check(RULE).passes(true));
    }

    #[test]
    fn rules_whose_sources_are_absent_can_never_fire() {
        let text = "[[rule]]\nname = \"ce\"\nwhen = { any = [ { source = \"edac\", name = \"dimm_ce_count\", increase = \"1h\", above = 5 }, { source = \"rasdaemon\", name = \"mc_errors\", increase = \"1h\", above = 5 } ] }\n[[rule.action]]\ntype = \"log\"\n\n[[rule]]\nname = \"hot\"\nwhen = { all = [ { source = \"hwmon\", name = \"temp_celsius\", above = 90 }, { source = \"thermal\", name = \"zone_temp_celsius\", above = 90 } ] }\n[[rule.action]]\ntype = \"log\"\n\n[[rule]]\nname = \"fan\"\nwhen = { source = \"hwmon\", name = \"fan_rpm\", below = 100 }\n[[rule.action]]\ntype = \"log\"\n\n[[rule]]\nname = \"load\"\nwhen = { source = \"host\", name = \"load1\", above = 100 }\n[[rule.action]]\ntype = \"log\"\n";
        let (_, rules) = check(text).config.expect("valid");
        let scans = vec![
            Scan::of(Source::Edac, Vec::new()),
            Scan::of(
                Source::Hwmon,
                vec![Reading::gauge(Source::Hwmon, "temp_celsius", 50.0)],
            ),
            Scan::of(Source::Thermal, Vec::new()),
            Scan::of(Source::Rasdaemon, Vec::new()),
            Scan::of(
                Source::Host,
                vec![Reading::gauge(Source::Host, "load1", 1.0)],
            ),
        ];
        let root = Root::new("/fx");
        let s = NodeSummary::new(&rules, &scans, &root, false);
        assert_eq!(
            s.rules,
            [
                (
                    "ce".into(),
                    Verdict::Never(vec![Source::Edac, Source::Rasdaemon])
                ),
                ("hot".into(), Verdict::Never(vec![Source::Thermal])),
                (
                    "fan".into(),
                    Verdict::NoSeries(vec!["hwmon:fan_rpm".into()])
                ),
                ("load".into(), Verdict::CanFire),
            ]
        );
        let text = s.text(&root);
        assert!(
            text.contains("rules: 1 of 4 can fire on this node"),
            "{text}"
        );
        assert!(
            text.contains("hot   can never fire here: thermal is absent\n"),
            "{text}"
        );
        assert!(
            text.contains("ce    can never fire here: edac and rasdaemon are absent\n"),
            "{text}"
        );
        assert!(
            text.contains("  absent   thermal    no /fx/sys/class/thermal\n"),
            "{text}"
        );
        assert_eq!(
            s.why(&s.rules[1].1).as_deref(),
            Some("thermal is absent (no /fx/sys/class/thermal)")
        );
        assert!(
            text.contains("  absent   rasdaemon  no /fx/var/lib/rasdaemon"),
            "{text}"
        );
        assert!(text.contains("  present  host       1 readings"), "{text}");
    }
}
