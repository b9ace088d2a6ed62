//! The agent's status as `GET /api/v1/status` serves it: the node, the configuration
//! file, when the agent started, each source's last read, the rules and whether they
//! fire, the last reload error, and the most recent events. The brain and the pollers'
//! scans update it; the HTTP handler only reads a snapshot.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use lifeboat_sensors::Scan;
use lifeboat_triggers::{Event, EventKind};
use serde::Serialize;

/// Recent events kept for `/api/v1/status`.
const RECENT_EVENTS: usize = 100;

/// The status document, behind a lock (never held across an `.await`).
#[derive(Debug)]
pub struct Status {
    doc: Mutex<Doc>,
}

/// `/api/v1/status` as served.
#[derive(Debug, Default, Serialize)]
struct Doc {
    node: String,
    config: PathBuf,
    started: String,
    sources: BTreeMap<&'static str, SourceStatus>,
    rules: Vec<RuleStatus>,
    last_reload_error: Option<String>,
    recent_events: VecDeque<EventDoc>,
}

#[derive(Debug, Default, Serialize)]
struct SourceStatus {
    present: bool,
    readings: usize,
    errors: Vec<String>,
    interval_seconds: f64,
}

#[derive(Debug, Serialize)]
struct RuleStatus {
    name: String,
    firing: bool,
}

#[derive(Debug, Clone, Serialize)]
struct EventDoc {
    time: String,
    rule: String,
    kind: String,
    severity: String,
    summary: String,
}

impl Status {
    /// The status of an agent on `node` started now with the configuration `config`.
    pub fn new(node: &str, config: PathBuf) -> Status {
        Status {
            doc: Mutex::new(Doc {
                node: node.to_owned(),
                config,
                started: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
                ..Doc::default()
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Doc> {
        self.doc.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The document as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(&*self.lock()).unwrap_or_default()
    }

    /// A source was read; it is polled every `interval`.
    pub fn source_read(&self, scan: &Scan, interval: Duration) {
        self.lock().sources.insert(
            scan.source.as_str(),
            SourceStatus {
                present: scan.present,
                readings: scan.readings.len(),
                errors: scan.errors.iter().map(ToString::to_string).collect(),
                interval_seconds: interval.as_secs_f64(),
            },
        );
    }

    /// A rule fired or cleared (pending events are not kept).
    pub fn event(&self, event: &Event) {
        if matches!(event.kind, EventKind::Pending) {
            return;
        }
        let doc = EventDoc {
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            rule: event.rule.clone(),
            kind: format!("{:?}", event.kind).to_lowercase(),
            severity: event.severity.to_string(),
            summary: event.summary.clone(),
        };
        let mut st = self.lock();
        st.recent_events.push_back(doc);
        while st.recent_events.len() > RECENT_EVENTS {
            st.recent_events.pop_front();
        }
    }

    /// The rules loaded now, in file order, each with whether it fires.
    pub fn rules(&self, rules: impl IntoIterator<Item = (String, bool)>) {
        self.lock().rules = rules
            .into_iter()
            .map(|(name, firing)| RuleStatus { name, firing })
            .collect();
    }

    /// The last reload failed with `error`, or (`None`) succeeded.
    pub fn reload_error(&self, error: Option<String>) {
        self.lock().last_reload_error = error;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifeboat_triggers::Severity;

    fn event(rule: &str, kind: EventKind) -> Event {
        Event {
            rule: rule.into(),
            kind,
            severity: Severity::Critical,
            t: 0.0,
            since: 0.0,
            matches: Vec::new(),
            summary: format!("{rule} summary"),
            actions: Vec::new(),
        }
    }

    #[test]
    fn keeps_the_recent_firing_and_cleared_events() {
        let status = Status::new("n1", PathBuf::from("/etc/lifeboat.toml"));
        status.event(&event("quiet", EventKind::Pending));
        for i in 0..=RECENT_EVENTS {
            status.event(&event(&format!("r{i}"), EventKind::Firing));
        }
        status.event(&event("last", EventKind::Cleared));
        status.rules([("a".to_owned(), true), ("b".to_owned(), false)]);
        status.reload_error(Some("bad".into()));
        let doc = status.to_json();
        let events = doc["recent_events"].as_array().unwrap();
        assert_eq!(events.len(), RECENT_EVENTS);
        assert_eq!(events[0]["rule"], "r2");
        assert_eq!(events[RECENT_EVENTS - 1]["rule"], "last");
        assert_eq!(events[RECENT_EVENTS - 1]["kind"], "cleared");
        assert_eq!(events[RECENT_EVENTS - 1]["severity"], "critical");
        assert_eq!(events[RECENT_EVENTS - 1]["summary"], "last summary");
        assert_eq!(doc["node"], "n1");
        assert_eq!(doc["config"], "/etc/lifeboat.toml");
        assert_eq!(doc["rules"][0]["name"], "a");
        assert_eq!(doc["rules"][0]["firing"], true);
        assert_eq!(doc["last_reload_error"], "bad");
        status.reload_error(None);
        assert!(status.to_json()["last_reload_error"].is_null());
    }
}
