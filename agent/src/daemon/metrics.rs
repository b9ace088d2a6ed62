//! Prometheus metrics: every sensor reading as `lifeboat_<source>_<name>`, plus the
//! agent's own health (scrapes, rules, actions, checkpoints, store), encoded as
//! OpenMetrics text by prometheus-client.
//!
//! Readings are exported by a [`Collector`] over the latest scan of each source, so a
//! series that disappears from the hardware disappears from `/metrics` too (no stale
//! values), and nothing is allocated per reading between scrapes.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

use lifeboat_sensors::{Kind, Reading, Source};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// Label set of the agent's own families.
pub type Labels = Vec<(&'static str, String)>;

/// A float gauge.
pub type FGauge = Gauge<f64, AtomicU64>;

/// Every metric the agent exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Latest readings per source.
    pub readings: Arc<ReadingsCollector>,
    /// `lifeboat_scrape_collector_success{collector}`: 1 if the last read had no errors.
    pub scrape_success: Family<Labels, Gauge>,
    /// `lifeboat_scrape_collector_duration_seconds{collector}`.
    pub scrape_duration: Family<Labels, FGauge>,
    /// `lifeboat_scrape_collector_present{collector}`: 1 if the node has the source.
    pub source_present: Family<Labels, Gauge>,
    /// `lifeboat_scrape_collector_errors_total{collector}`: files that failed to read.
    pub scrape_errors: Family<Labels, Counter>,
    /// `lifeboat_rule_firing{rule,severity}`.
    pub rule_firing: Family<Labels, Gauge>,
    /// `lifeboat_rule_fired_total{rule,severity}`.
    pub rule_fired: Family<Labels, Counter>,
    /// `lifeboat_rules`: rules loaded.
    pub rules_loaded: Gauge,
    /// `lifeboat_actions_total{action,result}`.
    pub actions: Family<Labels, Counter>,
    /// `lifeboat_checkpoints_total{result}`.
    pub checkpoints: Family<Labels, Counter>,
    /// `lifeboat_checkpoint_duration_seconds`.
    pub checkpoint_duration: Histogram,
    /// `lifeboat_checkpoint_frozen_seconds`: how long processes were stopped.
    pub checkpoint_frozen: Histogram,
    /// `lifeboat_checkpoint_written_bytes_total`.
    pub checkpoint_bytes: Counter,
    /// `lifeboat_store_used_bytes`.
    pub store_bytes: Gauge,
    /// `lifeboat_store_images`.
    pub store_images: Gauge,
    /// `lifeboat_config_reloads_total{result}`.
    pub reloads: Family<Labels, Counter>,
    /// `lifeboat_config_last_reload_success`.
    pub reload_ok: Gauge,
    /// `lifeboat_task_up{task}`: 1 while a supervised task runs, 0 while it is down.
    pub task_up: Family<Labels, Gauge>,
    /// `lifeboat_task_restarts_total{task}`: times a supervised task panicked.
    pub task_restarts: Family<Labels, Counter>,
    /// `lifeboat_http_connections`: connections the HTTP server holds open.
    pub http_connections: Gauge,
    /// `lifeboat_http_connections_closed_total{reason}`: connections the server closed
    /// itself: `header_timeout` (no complete request headers in time), `idle` (no request
    /// in progress for too long), `evicted` (the oldest idle one, to make room), `full`
    /// (refused: every connection was busy).
    pub http_closed: Family<Labels, Counter>,
    /// `lifeboat_http_accept_errors_total`: failed `accept` calls (EMFILE and the like).
    pub http_accept_errors: Counter,
}

impl Metrics {
    /// A registry with every family registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let readings = Arc::new(ReadingsCollector::default());
        registry.register_collector(Box::new(Arc::clone(&readings)));
        registry.register(
            "lifeboat_build",
            "lifeboat version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        let m = Metrics {
            readings,
            scrape_success: Family::default(),
            scrape_duration: Family::default(),
            source_present: Family::default(),
            scrape_errors: Family::default(),
            rule_firing: Family::default(),
            rule_fired: Family::default(),
            rules_loaded: Gauge::default(),
            actions: Family::default(),
            checkpoints: Family::default(),
            checkpoint_duration: Histogram::new(exponential_buckets(0.005, 2.0, 16)),
            checkpoint_frozen: Histogram::new(exponential_buckets(0.005, 2.0, 16)),
            checkpoint_bytes: Counter::default(),
            store_bytes: Gauge::default(),
            store_images: Gauge::default(),
            reloads: Family::default(),
            reload_ok: Gauge::default(),
            task_up: Family::default(),
            task_restarts: Family::default(),
            http_connections: Gauge::default(),
            http_closed: Family::default(),
            http_accept_errors: Counter::default(),
            registry,
        };
        m.register_own()
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(64 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The classic Prometheus text format (0.0.4) of an OpenMetrics exposition, for clients
/// that do not ask for OpenMetrics (promtool, curl, older scrapers). The two differ only
/// in a few places (OpenMetrics 1.0 spec, "Overall structure"; Prometheus "Exposition
/// formats"): a counter's family is named with its `_total` suffix, `info` becomes a
/// gauge named `_info`, and there are no `# UNIT` or `# EOF` lines.
pub fn to_classic_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            // Emitted with the TYPE line, once the family's classic name is known.
            help = Some(rest);
            continue;
        }
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "gauge" | "histogram" | "summary" => (name.to_owned(), kind),
                _ => (name.to_owned(), "untyped"),
            };
            if let Some(h) = help.take() {
                let text = h.split_once(' ').map_or("", |(_, t)| t);
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Register the agent's own families. Metric handles share their values through
    /// `Arc`s, so the clones in the registry and the fields of `self` are the same metric.
    fn register_own(mut self) -> Metrics {
        // Series that alerts take `increase()` of exist from the start at 0, so the
        // first failure is an increase and not a new series.
        for result in ["ok", "failed", "skipped", "refused"] {
            let _ = self.checkpoints.get_or_create(&label("result", result));
        }
        for result in ["success", "failure"] {
            let _ = self.reloads.get_or_create(&label("result", result));
        }
        for reason in ["header_timeout", "idle", "evicted", "full"] {
            let _ = self.http_closed.get_or_create(&label("reason", reason));
        }
        let m = &mut self;
        let r = &mut m.registry;
        r.register(
            "lifeboat_scrape_collector_success",
            "Whether the last read of a sensor source had no errors",
            m.scrape_success.clone(),
        );
        r.register(
            "lifeboat_scrape_collector_duration_seconds",
            "Duration of the last read of a sensor source",
            m.scrape_duration.clone(),
        );
        r.register(
            "lifeboat_scrape_collector_present",
            "Whether this node has the sensor source at all",
            m.source_present.clone(),
        );
        r.register(
            "lifeboat_scrape_collector_errors",
            "Files of a sensor source that could not be read or parsed",
            m.scrape_errors.clone(),
        );
        r.register(
            "lifeboat_rule_firing",
            "Whether a rule is firing now",
            m.rule_firing.clone(),
        );
        r.register(
            "lifeboat_rule_fired",
            "Times a rule started firing",
            m.rule_fired.clone(),
        );
        r.register("lifeboat_rules", "Rules loaded", m.rules_loaded.clone());
        r.register(
            "lifeboat_actions",
            "Actions run, by action and result",
            m.actions.clone(),
        );
        r.register(
            "lifeboat_checkpoints",
            "Checkpoints taken, by result",
            m.checkpoints.clone(),
        );
        r.register(
            "lifeboat_checkpoint_duration_seconds",
            "Wall time of a checkpoint",
            m.checkpoint_duration.clone(),
        );
        r.register(
            "lifeboat_checkpoint_frozen_seconds",
            "Time a process was stopped for its checkpoint",
            m.checkpoint_frozen.clone(),
        );
        r.register(
            "lifeboat_checkpoint_written_bytes",
            "Bytes of checkpoint images written",
            m.checkpoint_bytes.clone(),
        );
        r.register(
            "lifeboat_store_used_bytes",
            "Bytes of this node's images in the checkpoint store",
            m.store_bytes.clone(),
        );
        r.register(
            "lifeboat_store_images",
            "Images of this node in the checkpoint store",
            m.store_images.clone(),
        );
        r.register(
            "lifeboat_config_reloads",
            "Configuration reloads, by result",
            m.reloads.clone(),
        );
        r.register(
            "lifeboat_config_last_reload_success",
            "Whether the last configuration reload succeeded",
            m.reload_ok.clone(),
        );
        r.register(
            "lifeboat_task_up",
            "Whether a task of the agent (brain, pollers) runs; 0 while it restarts after a panic",
            m.task_up.clone(),
        );
        r.register(
            "lifeboat_task_restarts",
            "Times a task of the agent panicked and was restarted",
            m.task_restarts.clone(),
        );
        r.register(
            "lifeboat_http_connections",
            "Connections the HTTP server holds open",
            m.http_connections.clone(),
        );
        r.register(
            "lifeboat_http_connections_closed",
            "Connections the HTTP server closed itself, by reason (header_timeout, idle, evicted, full)",
            m.http_closed.clone(),
        );
        r.register(
            "lifeboat_http_accept_errors",
            "Failed accepts of the HTTP server (e.g. out of file descriptors)",
            m.http_accept_errors.clone(),
        );
        self
    }
}

/// Label set with one label.
pub fn label(key: &'static str, value: impl Into<String>) -> Labels {
    vec![(key, value.into())]
}

/// The latest readings of every source, exported at each scrape.
#[derive(Debug, Default)]
pub struct ReadingsCollector {
    latest: RwLock<BTreeMap<Source, Vec<Reading>>>,
}

impl ReadingsCollector {
    /// Replace one source's readings.
    pub fn set(&self, source: Source, readings: Vec<Reading>) {
        let mut map = self.latest.write().unwrap_or_else(|e| e.into_inner());
        map.insert(source, readings);
    }

    /// Every current reading.
    pub fn all(&self) -> Vec<Reading> {
        let map = self.latest.read().unwrap_or_else(|e| e.into_inner());
        map.values().flatten().cloned().collect()
    }
}

impl Collector for ReadingsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let map = self.latest.read().unwrap_or_else(|e| e.into_inner());
        // Group into families: one descriptor per metric name, each label set once.
        let mut families: BTreeMap<String, (Kind, Source, &str, Vec<&Reading>)> = BTreeMap::new();
        for (source, readings) in map.iter() {
            for r in readings {
                let name = metric_name(*source, &r.name);
                families
                    .entry(name)
                    .or_insert_with(|| (r.kind, *source, r.name.as_str(), Vec::new()))
                    .3
                    .push(r);
            }
        }
        for (name, (kind, source, reading, rs)) in &families {
            let help = format!("{source} reading `{reading}`");
            let metric_type = match kind {
                Kind::Counter => ConstCounter::new(0.0f64).metric_type(),
                Kind::Gauge => ConstGauge::new(0.0f64).metric_type(),
            };
            let mut family = encoder.encode_descriptor(name, &help, None, metric_type)?;
            let mut seen = std::collections::BTreeSet::new();
            for r in rs {
                // A reading of the other kind under the same name cannot share the
                // family; a duplicate label set would make the exposition invalid.
                if r.kind != *kind || !seen.insert(&r.labels) {
                    continue;
                }
                let labels: Vec<(String, &str)> = r
                    .labels
                    .iter()
                    .map(|(k, v)| (sanitize_name(k), v.as_str()))
                    .collect();
                let value = if r.value.is_finite() { r.value } else { 0.0 };
                let m = family.encode_family(&labels)?;
                match kind {
                    Kind::Counter => ConstCounter::new(value.max(0.0)).encode(m)?,
                    Kind::Gauge => ConstGauge::new(value).encode(m)?,
                }
            }
        }
        Ok(())
    }
}

/// `lifeboat_<source>_<name>` with only the characters Prometheus allows.
pub fn metric_name(source: Source, name: &str) -> String {
    format!("lifeboat_{}_{}", source.as_str(), sanitize_name(name))
}

fn sanitize_name(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_become_families() {
        let m = Metrics::new();
        m.readings.set(
            Source::Edac,
            vec![
                Reading::counter(Source::Edac, "dimm_ce_count", 3.0)
                    .label("controller", "0")
                    .label("dimm_label", "CPU0_DIMM_A1"),
                Reading::counter(Source::Edac, "dimm_ce_count", 0.0)
                    .label("controller", "0")
                    .label("dimm_label", "CPU0_DIMM_B1"),
            ],
        );
        m.readings.set(
            Source::Hwmon,
            vec![Reading::gauge(Source::Hwmon, "temp_celsius", 41.5).label("chip", "coretemp")],
        );
        let text = m.encode();
        assert!(
            text.contains("# TYPE lifeboat_edac_dimm_ce_count counter"),
            "{text}"
        );
        assert!(
            text.contains(
                "lifeboat_edac_dimm_ce_count_total{controller=\"0\",dimm_label=\"CPU0_DIMM_A1\"} 3.0"
            ),
            "{text}"
        );
        assert!(
            text.contains("lifeboat_hwmon_temp_celsius{chip=\"coretemp\"} 41.5"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
        let classic = to_classic_text(&text);
        assert!(
            classic.contains("# TYPE lifeboat_edac_dimm_ce_count_total counter\n"),
            "{classic}"
        );
        assert!(
            classic.contains("# TYPE lifeboat_build_info gauge\n"),
            "{classic}"
        );
        assert!(!classic.contains("# EOF"));
    }

    #[test]
    fn names_are_sanitized() {
        assert_eq!(
            metric_name(Source::Infiniband, "hw_rx-icrc.errors"),
            "lifeboat_infiniband_hw_rx_icrc_errors"
        );
        assert_eq!(sanitize_name("1x"), "_1x");
    }
}
