//! Checks of the shipped dashboards and Prometheus rules with promtool (issue 5).
//!
//! - both rule files pass `promtool check rules` (with its linter fatal) and
//!   `lifeboat.tests.yml` passes `promtool test rules`;
//! - every alert has a severity, a summary and a description, and is tested both
//!   firing and quiet; every recording rule has a value check;
//! - the Grafana dashboard parses, has the `datasource` and `instance` variables, and
//!   every panel has a title, a description, unique id and the `${datasource}` data
//!   source; every query filters on `$instance` and parses as PromQL;
//! - every PromQL expression here (dashboard, rules, tests) names only metrics the agent
//!   exports or recording rules from `lifeboat.rules.yml`.
//!
//! promtool comes from Debian's `prometheus` package; without it these tests fail.
//! `PROMTOOL=/path/to/promtool` picks another binary.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

/// Every metric name the agent exports (see `agent/src/daemon/metrics.rs` and the
/// sensors' reading names), plus Prometheus's own `up`.
const EXPORTED: &[&str] = &[
    // EDAC
    "lifeboat_edac_dimm_ce_count_total",
    "lifeboat_edac_dimm_ue_count_total",
    "lifeboat_edac_mc_ce_count_total",
    "lifeboat_edac_mc_ue_count_total",
    "lifeboat_edac_mc_ce_noinfo_count_total",
    "lifeboat_edac_mc_ue_noinfo_count_total",
    "lifeboat_edac_dimm_size_bytes",
    "lifeboat_edac_mc_size_bytes",
    // hwmon
    "lifeboat_hwmon_temp_celsius",
    "lifeboat_hwmon_temp_max_celsius",
    "lifeboat_hwmon_temp_crit_celsius",
    "lifeboat_hwmon_temp_emergency_celsius",
    "lifeboat_hwmon_temp_crit_alarm",
    "lifeboat_hwmon_temp_max_alarm",
    "lifeboat_hwmon_fan_rpm",
    "lifeboat_hwmon_fan_min_rpm",
    "lifeboat_hwmon_fan_alarm",
    "lifeboat_hwmon_in_volts",
    "lifeboat_hwmon_in_min_volts",
    "lifeboat_hwmon_in_max_volts",
    "lifeboat_hwmon_in_alarm",
    "lifeboat_hwmon_power_watts",
    // thermal zones
    "lifeboat_thermal_zone_temp_celsius",
    "lifeboat_thermal_zone_trip_celsius",
    // InfiniBand
    "lifeboat_infiniband_symbol_error_total",
    "lifeboat_infiniband_port_rcv_errors_total",
    "lifeboat_infiniband_link_error_recovery_total",
    "lifeboat_infiniband_link_downed_total",
    "lifeboat_infiniband_local_link_integrity_errors_total",
    "lifeboat_infiniband_excessive_buffer_overrun_errors_total",
    "lifeboat_infiniband_port_rcv_remote_physical_errors_total",
    "lifeboat_infiniband_port_xmit_discards_total",
    "lifeboat_infiniband_VL15_dropped_total",
    "lifeboat_infiniband_port_xmit_data_total",
    "lifeboat_infiniband_port_rcv_data_total",
    "lifeboat_infiniband_port_state",
    "lifeboat_infiniband_port_phys_state",
    "lifeboat_infiniband_port_rate_bytes_per_second",
    // Ethernet
    "lifeboat_netdev_rx_crc_errors_total",
    "lifeboat_netdev_rx_frame_errors_total",
    "lifeboat_netdev_rx_missed_errors_total",
    "lifeboat_netdev_tx_carrier_errors_total",
    "lifeboat_netdev_rx_errors_total",
    "lifeboat_netdev_tx_errors_total",
    // PCIe AER
    "lifeboat_pcie_aer_aer_correctable_total",
    "lifeboat_pcie_aer_aer_nonfatal_total",
    "lifeboat_pcie_aer_aer_fatal_total",
    "lifeboat_pcie_aer_aer_correctable_errors_total",
    "lifeboat_pcie_aer_aer_fatal_errors_total",
    "lifeboat_pcie_aer_aer_nonfatal_errors_total",
    // rasdaemon
    "lifeboat_rasdaemon_mc_events_total",
    "lifeboat_rasdaemon_aer_events_total",
    // host
    "lifeboat_host_load1",
    "lifeboat_host_memory_available_bytes",
    "lifeboat_host_memory_total_bytes",
    // the agent itself
    "lifeboat_build_info",
    "lifeboat_scrape_collector_success",
    "lifeboat_scrape_collector_duration_seconds",
    "lifeboat_scrape_collector_present",
    "lifeboat_scrape_collector_errors_total",
    "lifeboat_rule_firing",
    "lifeboat_rule_fired_total",
    "lifeboat_rules",
    "lifeboat_actions_total",
    "lifeboat_checkpoints_total",
    "lifeboat_checkpoint_duration_seconds_bucket",
    "lifeboat_checkpoint_duration_seconds_sum",
    "lifeboat_checkpoint_duration_seconds_count",
    "lifeboat_checkpoint_frozen_seconds_bucket",
    "lifeboat_checkpoint_frozen_seconds_sum",
    "lifeboat_checkpoint_frozen_seconds_count",
    "lifeboat_checkpoint_written_bytes_total",
    "lifeboat_store_used_bytes",
    "lifeboat_store_images",
    "lifeboat_config_reloads_total",
    "lifeboat_config_last_reload_success",
    // Prometheus
    "up",
];

/// PromQL words that are not metric names: aggregations, functions, set operators,
/// modifiers and constants.
const PROMQL_WORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "abs",
    "absent",
    "absent_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "delta",
    "deriv",
    "exp",
    "floor",
    "histogram_quantile",
    "holt_winters",
    "hour",
    "idelta",
    "increase",
    "irate",
    "label_join",
    "label_replace",
    "ln",
    "log2",
    "log10",
    "minute",
    "month",
    "predict_linear",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sort",
    "sort_desc",
    "sqrt",
    "time",
    "timestamp",
    "vector",
    "year",
    "avg_over_time",
    "min_over_time",
    "max_over_time",
    "sum_over_time",
    "count_over_time",
    "quantile_over_time",
    "stddev_over_time",
    "stdvar_over_time",
    "last_over_time",
    "present_over_time",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "atan2",
    "inf",
    "nan",
];

/// Keywords followed by a parenthesised list of label names.
const GROUPING: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

fn dashboards_dir() -> PathBuf {
    workspace().join("dashboards")
}

fn prometheus_dir() -> PathBuf {
    dashboards_dir().join("prometheus")
}

/// Run promtool in `dir`; panic with its output unless it exits 0.
fn promtool(dir: &Path, args: &[&str]) -> String {
    let mut cmd = Command::new(common::promtool());
    cmd.args(args).current_dir(dir);
    let out = run_to_end(cmd, &format!("promtool {}", args.join(" ")));
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        out.status.success(),
        "promtool {} (in {}) failed with {}:\n{text}",
        args.join(" "),
        dir.display(),
        out.status
    );
    text
}

/// Metric names an expression selects. Strings, label matchers, ranges, numbers,
/// durations, Grafana `$variables` and the label lists of `by (...)`, `on (...)` and
/// friends are skipped; every other identifier that is not a PromQL word is a metric.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => i = skip_string(&chars, i),
            '{' => i = skip_to_close(&chars, i, '{', '}'),
            '[' => i = skip_to_close(&chars, i, '[', ']'),
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '$' => {
                i += 1;
                if chars.get(i) == Some(&'{') {
                    i = skip_to_close(&chars, i, '{', '}');
                } else {
                    while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                        i += 1;
                    }
                }
            }
            c if c.is_ascii_digit()
                || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                while i < chars.len() {
                    let d = chars[i];
                    let exponent_sign = (d == '+' || d == '-') && matches!(chars[i - 1], 'e' | 'E');
                    if d.is_ascii_alphanumeric() || d == '.' || d == '_' || exponent_sign {
                        i += 1;
                    } else {
                        break;
                    }
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                if GROUPING.contains(&word.as_str()) {
                    let mut j = i;
                    while j < chars.len() && chars[j].is_whitespace() {
                        j += 1;
                    }
                    if chars.get(j) == Some(&'(') {
                        i = skip_to_close(&chars, j, '(', ')');
                    }
                } else if !PROMQL_WORDS.contains(&word.as_str()) {
                    names.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// Index just past the string literal that starts at `start`.
fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() {
        if chars[i] == '\\' && quote != '`' {
            i += 2;
        } else if chars[i] == quote {
            return i + 1;
        } else {
            i += 1;
        }
    }
    i
}

/// Index just past the bracket that closes the one at `start`, skipping strings.
fn skip_to_close(chars: &[char], start: usize, open: char, close: char) -> usize {
    let mut depth = 0usize;
    let mut i = start;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            i = skip_string(chars, i);
            continue;
        }
        if c == open {
            depth += 1;
        } else if c == close {
            depth -= 1;
            if depth == 0 {
                return i + 1;
            }
        }
        i += 1;
    }
    i
}

/// The `expr:` values of a rules or tests file, inline or as `|` / `>` blocks.
/// (The files are plain enough for a line reader; promtool checks the YAML itself.)
fn yaml_exprs(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut exprs = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        let mut key_indent = line.len() - trimmed.len();
        let item = match trimmed.strip_prefix("- ") {
            Some(rest) => {
                key_indent += 2;
                rest
            }
            None => trimmed,
        };
        i += 1;
        let Some(value) = item.strip_prefix("expr:") else {
            continue;
        };
        let value = value.trim();
        if value.starts_with('|') || value.starts_with('>') {
            let mut body = String::new();
            while i < lines.len() {
                let l = lines[i];
                if !l.trim().is_empty() && l.len() - l.trim_start().len() <= key_indent {
                    break;
                }
                body.push_str(l.trim());
                body.push('\n');
                i += 1;
            }
            exprs.push(body);
        } else {
            exprs.push(unquote(value));
        }
    }
    exprs
}

fn unquote(value: &str) -> String {
    if let Some(inner) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        inner.replace("''", "'")
    } else if let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        inner.replace("\\\"", "\"").replace("\\\\", "\\")
    } else {
        value.to_owned()
    }
}

/// Values of `key:` lines (`- key: value` included), in order.
fn yaml_values<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    text.lines()
        .filter_map(|line| {
            let t = line.trim_start();
            let t = t.strip_prefix("- ").unwrap_or(t);
            t.strip_prefix(key)?.strip_prefix(':').map(str::trim)
        })
        .collect()
}

fn recording_rules() -> BTreeSet<String> {
    let text = read_text(&prometheus_dir().join("lifeboat.rules.yml"));
    yaml_values(&text, "record")
        .into_iter()
        .map(str::to_owned)
        .collect()
}

/// Names an expression may use: exported metrics and recording rules.
fn known_names() -> BTreeSet<String> {
    let mut known: BTreeSet<String> = EXPORTED.iter().map(|s| (*s).to_owned()).collect();
    known.extend(recording_rules());
    known
}

/// Problems with the metric names of `exprs`, each labelled with `what`.
fn unknown_names<'a>(exprs: impl IntoIterator<Item = (String, &'a str)>) -> Vec<String> {
    let known = known_names();
    let mut problems = Vec::new();
    for (what, expr) in exprs {
        let names = metric_names(expr);
        if names.is_empty() {
            problems.push(format!("{what}: no metric in `{expr}`"));
        }
        for name in names.difference(&known) {
            problems.push(format!(
                "{what}: `{name}` is neither an exported metric nor a recording rule, in `{expr}`"
            ));
        }
    }
    problems
}

fn dashboard() -> Value {
    let path = dashboards_dir().join("grafana/lifeboat-fleet.json");
    serde_json::from_str(&read_text(&path))
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Every panel, rows' nested panels included.
fn panels(dash: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            if let Some(nested) = p.get("panels") {
                walk(nested, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], &mut out);
    out
}

/// (panel title, refId, expr) of every query of the dashboard.
fn dashboard_queries(dash: &Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for p in panels(dash) {
        let title = p["title"].as_str().unwrap_or("<untitled>");
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                title.to_owned(),
                t["refId"].as_str().unwrap_or("?").to_owned(),
                t["expr"].as_str().unwrap_or("").to_owned(),
            ));
        }
    }
    out
}

fn is_templated_datasource(ds: &Value) -> bool {
    ds.as_str() == Some("${datasource}") || ds["uid"].as_str() == Some("${datasource}")
}

fn assert_no_problems(what: &str, problems: &[String]) {
    assert!(problems.is_empty(), "{what}:\n  {}", problems.join("\n  "));
}

#[test]
fn metric_name_scanner_skips_labels_strings_and_keywords() {
    let expr = r#"sum by (instance, le) (rate(foo_bucket{a="b}c", instance=~"$instance"}[$__rate_interval] offset 1h))
        > on (instance) group_left (version) bar:baz:max * 1e-3
        or label_replace(vector(0), "dst", "$1", "src", "(.*)") unless ${x} # qux"#;
    let got: Vec<String> = metric_names(expr).into_iter().collect();
    assert_eq!(got, ["bar:baz:max", "foo_bucket"]);
}

#[test]
fn promtool_check_rules_accepts_both_rule_files() {
    let out = promtool(
        &prometheus_dir(),
        &[
            "check",
            "rules",
            "--lint=all",
            "--lint-fatal",
            "lifeboat.rules.yml",
            "lifeboat.alerts.yml",
        ],
    );
    assert!(out.contains("SUCCESS"), "promtool said:\n{out}");
}

#[test]
fn promtool_unit_tests_pass() {
    let out = promtool(&prometheus_dir(), &["test", "rules", "lifeboat.tests.yml"]);
    assert!(out.contains("SUCCESS"), "promtool said:\n{out}");
}

#[test]
fn every_alert_has_severity_and_annotations_and_is_tested_firing_and_quiet() {
    let alerts = read_text(&prometheus_dir().join("lifeboat.alerts.yml"));
    let mut blocks: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in alerts.lines() {
        let t = line.trim_start();
        if let Some(name) = t.strip_prefix("- alert:") {
            let name = name.trim().to_owned();
            assert!(!blocks.contains_key(&name), "alert {name} is defined twice");
            blocks.insert(name.clone(), Vec::new());
            current = Some(name);
        } else if t.starts_with("- record:") || t.starts_with("- name:") {
            current = None;
        } else if let Some(name) = &current {
            blocks
                .get_mut(name)
                .expect("block inserted with its name")
                .push(t);
        }
    }
    assert!(
        blocks.len() >= 8,
        "only {} alerts in lifeboat.alerts.yml",
        blocks.len()
    );

    let tests = read_text(&prometheus_dir().join("lifeboat.tests.yml"));
    let rule_files = yaml_values(&tests, "rule_files");
    assert!(
        tests.contains("- lifeboat.rules.yml") && tests.contains("- lifeboat.alerts.yml"),
        "lifeboat.tests.yml must load both rule files (rule_files: {rule_files:?})"
    );
    let (mut firing, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    let mut alertname = None;
    for line in tests.lines() {
        let t = line.trim_start();
        if let Some(name) = t.strip_prefix("alertname:") {
            alertname = Some(name.trim().to_owned());
        } else if let Some(rest) = t.strip_prefix("exp_alerts:") {
            let name = alertname.clone().expect("exp_alerts after an alertname");
            if rest.trim() == "[]" {
                quiet.insert(name);
            } else {
                firing.insert(name);
            }
        }
    }

    let mut problems = Vec::new();
    for (name, body) in &blocks {
        let severity = body
            .iter()
            .find_map(|l| l.strip_prefix("severity:"))
            .map(str::trim);
        if severity.is_none_or(|s| s.is_empty() || s == "\"\"") {
            problems.push(format!("{name}: no severity label"));
        }
        for key in ["summary:", "description:"] {
            if !body.iter().any(|l| l.starts_with(key)) {
                problems.push(format!("{name}: no {key} annotation"));
            }
        }
        if !firing.contains(name) {
            problems.push(format!("{name}: no test in which it fires"));
        }
        if !quiet.contains(name) {
            problems.push(format!("{name}: no test in which it stays quiet"));
        }
    }
    for name in firing.union(&quiet) {
        if !blocks.contains_key(name) {
            problems.push(format!(
                "lifeboat.tests.yml tests {name}, which lifeboat.alerts.yml does not define"
            ));
        }
    }
    assert_no_problems("alerting rules", &problems);
}

#[test]
fn every_recording_rule_is_tested() {
    let records = recording_rules();
    assert!(
        !records.is_empty(),
        "no recording rules in lifeboat.rules.yml"
    );
    let tests = read_text(&prometheus_dir().join("lifeboat.tests.yml"));
    let tested: BTreeSet<String> = yaml_exprs(&tests)
        .iter()
        .flat_map(|e| metric_names(e))
        .collect();
    let untested: Vec<String> = records
        .iter()
        .filter(|r| !tested.contains(*r))
        .map(|r| format!("{r}: no promql_expr_test reads it"))
        .collect();
    assert_no_problems("recording rules", &untested);
}

#[test]
fn rules_and_tests_reference_only_exported_metrics() {
    let mut exprs = Vec::new();
    for file in [
        "lifeboat.rules.yml",
        "lifeboat.alerts.yml",
        "lifeboat.tests.yml",
    ] {
        let text = read_text(&prometheus_dir().join(file));
        for (n, e) in yaml_exprs(&text).into_iter().enumerate() {
            exprs.push((format!("{file} expr #{}", n + 1), e));
        }
        // Input series of the unit tests must be real metrics too, or an alert would
        // stay quiet for the wrong reason.
        for s in yaml_values(&text, "series") {
            let s = unquote(s);
            let name = s.split('{').next().unwrap_or("").trim().to_owned();
            exprs.push((format!("{file} input series"), name));
        }
    }
    assert!(exprs.len() > 20, "found only {} expressions", exprs.len());
    let problems = unknown_names(exprs.iter().map(|(w, e)| (w.clone(), e.as_str())));
    assert_no_problems("metric names in the Prometheus files", &problems);
}

#[test]
fn grafana_dashboard_is_well_formed() {
    let dash = dashboard();
    let mut problems = Vec::new();
    let schema = dash["schemaVersion"].as_u64().unwrap_or(0);
    if schema < 36 {
        problems.push(format!(
            "schemaVersion {schema}: want 36 or later (Grafana 9+)"
        ));
    }
    if dash["uid"].as_str().is_none_or(str::is_empty)
        || dash["title"].as_str().is_none_or(str::is_empty)
    {
        problems.push("the dashboard needs a uid and a title".to_owned());
    }

    let vars = dash["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let var = |name: &str| vars.iter().find(|v| v["name"] == name).cloned();
    match var("datasource") {
        Some(v) if v["type"] == "datasource" && v["query"] == "prometheus" => {}
        other => problems.push(format!(
            "want a `datasource` variable of type datasource, query prometheus; got {other:?}"
        )),
    }
    match var("instance") {
        Some(v) => {
            if v["multi"] != true || v["includeAll"] != true {
                problems.push("the `instance` variable must be multi-value with All".to_owned());
            }
            if !is_templated_datasource(&v["datasource"]) {
                problems.push("the `instance` variable must query ${datasource}".to_owned());
            }
            let def = v["definition"].as_str().unwrap_or("");
            if !def.contains("up{job=\"lifeboat\"}") {
                problems.push(format!(
                    "the `instance` variable should list up{{job=\"lifeboat\"}}, not `{def}`"
                ));
            }
        }
        None => problems.push("no `instance` variable".to_owned()),
    }

    let mut ids = BTreeSet::new();
    for p in panels(&dash) {
        let title = p["title"].as_str().unwrap_or("");
        let id = p["id"].as_u64();
        let name = format!("panel {id:?} `{title}`");
        if title.trim().is_empty() {
            problems.push(format!("{name}: no title"));
        }
        match id {
            Some(id) if !ids.insert(id) => problems.push(format!("{name}: id {id} used twice")),
            Some(_) => {}
            None => problems.push(format!("{name}: no numeric id")),
        }
        let grid = &p["gridPos"];
        let (x, w) = (
            grid["x"].as_u64().unwrap_or(99),
            grid["w"].as_u64().unwrap_or(99),
        );
        if x + w > 24 {
            problems.push(format!("{name}: gridPos x {x} + w {w} is wider than 24"));
        }
        if p["type"] == "row" {
            if p.get("targets").is_some() {
                problems.push(format!("{name}: a row with queries"));
            }
            continue;
        }
        if !is_templated_datasource(&p["datasource"]) {
            problems.push(format!(
                "{name}: datasource is {}, want ${{datasource}}",
                p["datasource"]
            ));
        }
        if p["description"].as_str().is_none_or(|d| d.len() < 40) {
            problems.push(format!(
                "{name}: needs a description telling the operator what to do"
            ));
        }
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("{name}: no queries"));
        }
        for t in &targets {
            let r = t["refId"].as_str().unwrap_or("?");
            if !is_templated_datasource(&t["datasource"]) {
                problems.push(format!(
                    "{name} query {r}: datasource is {}, want ${{datasource}}",
                    t["datasource"]
                ));
            }
            let expr = t["expr"].as_str().unwrap_or("");
            if expr.trim().is_empty() {
                problems.push(format!("{name} query {r}: empty expr"));
            } else if !expr.contains("instance=~\"$instance\"") {
                problems.push(format!(
                    "{name} query {r}: does not filter on instance=~\"$instance\""
                ));
            }
        }
    }
    if ids.len() < 20 {
        problems.push(format!("only {} panels", ids.len()));
    }
    assert_no_problems("lifeboat-fleet.json", &problems);
}

#[test]
fn grafana_queries_reference_only_exported_metrics() {
    let queries = dashboard_queries(&dashboard());
    let problems = unknown_names(
        queries
            .iter()
            .map(|(title, r, e)| (format!("`{title}` query {r}"), e.as_str())),
    );
    assert_no_problems("metric names in lifeboat-fleet.json", &problems);
}

/// Each query, with Grafana's variables replaced by typical values, becomes a recording
/// rule of a scratch file that `promtool check rules` parses.
#[test]
fn grafana_queries_parse_as_promql() {
    let queries = dashboard_queries(&dashboard());
    let mut yaml = String::from("groups:\n  - name: lifeboat-fleet-dashboard\n    rules:\n");
    for (n, (title, r, expr)) in queries.iter().enumerate() {
        let concrete = expr
            .replace("$__rate_interval", "5m")
            .replace("$__interval", "1m")
            .replace("$__range", "1d")
            .replace("$instance", ".+");
        assert!(
            !concrete.contains('$'),
            "`{title}` query {r} uses an unknown Grafana variable: {expr}"
        );
        let quoted = serde_json::to_string(&concrete).expect("a string serializes");
        yaml.push_str(&format!(
            "      # {title} / {r}\n      - record: dashboard:query_{n}\n        expr: {quoted}\n"
        ));
    }
    let dir = scratch("grafana-queries");
    let file = dir.join("dashboard-queries.yml");
    std::fs::write(&file, &yaml).expect("write the scratch rules file");
    let out = promtool(
        &dir,
        &["check", "rules", "--lint=none", "dashboard-queries.yml"],
    );
    assert!(
        out.contains(&format!("{} rules found", queries.len())),
        "promtool said:\n{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
