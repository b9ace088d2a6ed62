//! The brain: the one task that owns the rule evaluator. Every scan and every reload
//! request arrives over a channel and is handled in order, so evaluation is sequential
//! and deterministic. A scan updates the metrics and the status, is appended to the
//! trace (`--record`), and steps the evaluator; the actions of a rule that starts firing
//! are dispatched as tasks. A reload reads the whole file again and keeps the old rules
//! if it is bad.
//!
//! The brain runs under [`super::supervise`]. Its inputs, outputs and the rules in force
//! live in [`BrainIo`], which outlives one run; a brain restarted after a panic rebuilds
//! its evaluator from the rules in force. What is lost: each series' history (an
//! `increase` or `rate` window starts again from the next reading), pending `for` timers,
//! and which rules fire and since when (cooldowns included). Rules that were firing are
//! shown as not firing; one whose condition still holds fires again, and its actions run
//! again.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use lifeboat_sensors::{Reading, Scan, TracePoint};
use lifeboat_triggers::{Action, Config, Evaluator, Event, EventKind};
use tokio::sync::{mpsc, watch};

use super::Shared;
use super::actions;
use super::config::{self, Overrides};
use super::metrics::{Metrics, label};
use super::procs;
use super::supervise;

/// What outlives one run of the brain: its channels, the rules in force, the trace file
/// and the rules firing now.
#[derive(Debug)]
pub struct BrainIo {
    shared: Arc<Shared>,
    /// The rules in force, published to the pollers (for their intervals).
    config_tx: watch::Sender<Arc<Config>>,
    config_path: PathBuf,
    overrides: Overrides,
    scans: tokio::sync::Mutex<mpsc::Receiver<Scan>>,
    reloads: tokio::sync::Mutex<mpsc::Receiver<&'static str>>,
    recorder: Mutex<Option<Recorder>>,
    /// Rules firing now, with their severity (for `lifeboat_rule_firing`).
    firing: Mutex<BTreeMap<String, String>>,
}

impl BrainIo {
    /// The brain's inputs and outputs: it evaluates the rules `config_tx` holds, reloads
    /// them from `config_path` (with `overrides`), reads `scans` and `reloads`, and
    /// appends every reading to `recorder` if there is one.
    pub fn new(
        shared: Arc<Shared>,
        config_tx: watch::Sender<Arc<Config>>,
        config_path: PathBuf,
        overrides: Overrides,
        channels: (mpsc::Receiver<Scan>, mpsc::Receiver<&'static str>),
        recorder: Option<Recorder>,
    ) -> BrainIo {
        BrainIo {
            shared,
            config_tx,
            config_path,
            overrides,
            scans: tokio::sync::Mutex::new(channels.0),
            reloads: tokio::sync::Mutex::new(channels.1),
            recorder: Mutex::new(recorder),
            firing: Mutex::new(BTreeMap::new()),
        }
    }
}

/// Owns the rule evaluator: every scan and reload passes through here, in order.
#[derive(Debug)]
pub struct Brain {
    io: Arc<BrainIo>,
    shared: Arc<Shared>,
    evaluator: Evaluator,
}

/// Where `--record` appends the readings.
pub type Recorder = std::io::BufWriter<std::fs::File>;

/// A std lock of the brain's, never held across an `.await`.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Brain {
    /// A brain over `io`, its evaluator new, built from the rules in force. Rules that a
    /// previous brain (one that panicked) had firing are firing no more.
    pub fn new(io: Arc<BrainIo>) -> Brain {
        let evaluator = Evaluator::new(&io.config_tx.borrow());
        let shared = Arc::clone(&io.shared);
        let lost = std::mem::take(&mut *lock(&io.firing));
        if !lost.is_empty() {
            tracing::warn!(
                rules = %lost.keys().cloned().collect::<Vec<_>>().join(", "),
                "the rule evaluator was rebuilt: these rules were firing and start over"
            );
        }
        for (name, severity) in lost {
            shared
                .metrics
                .rule_firing
                .get_or_create(&vec![("rule", name), ("severity", severity)])
                .set(0);
        }
        Brain {
            io,
            shared,
            evaluator,
        }
    }

    /// Handle scans and reload requests, in order, until both channels close.
    pub async fn run(mut self) {
        let io = Arc::clone(&self.io);
        let mut scans = io.scans.lock().await;
        let mut reloads = io.reloads.lock().await;
        self.publish_rules();
        loop {
            tokio::select! {
                Some(scan) = scans.recv() => self.on_scan(scan),
                Some(why) = reloads.recv() => {
                    // Editors write a file in several steps: wait for the last one.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    while reloads.try_recv().is_ok() {}
                    self.reload(why);
                }
                else => return,
            }
        }
    }

    fn on_scan(&mut self, scan: Scan) {
        supervise::fault_point("brain");
        let m = &self.shared.metrics;
        let src = label("collector", scan.source.as_str());
        m.source_present
            .get_or_create(&src)
            .set(i64::from(scan.present));
        m.scrape_success
            .get_or_create(&src)
            .set(i64::from(scan.errors.is_empty()));
        m.scrape_duration
            .get_or_create(&src)
            .set(scan.elapsed.as_secs_f64());
        if !scan.errors.is_empty() {
            m.scrape_errors
                .get_or_create(&src)
                .inc_by(scan.errors.len() as u64);
        }
        let interval = self.io.config_tx.borrow().poll.interval_for(scan.source);
        self.shared.status.source_read(&scan, interval);
        let t = now();
        {
            let mut recorder = lock(&self.io.recorder);
            if let Some(rec) = &mut *recorder {
                if let Err(e) = record(rec, t, &scan.readings) {
                    tracing::error!(error = %e, "cannot write the trace; recording stops");
                    *recorder = None;
                }
            }
        }
        m.readings.set(scan.source, scan.readings);
        let readings: Vec<Reading> = m.readings.all();
        let events = self.evaluator.step(t, &readings);
        for event in events {
            self.on_event(event);
        }
    }

    fn on_event(&mut self, event: Event) {
        let m = &self.shared.metrics;
        let severity = event.severity.to_string();
        let labels = vec![("rule", event.rule.clone()), ("severity", severity.clone())];
        match event.kind {
            EventKind::Firing => {
                tracing::warn!(rule = %event.rule, severity = %severity, summary = %event.summary, "rule firing");
                m.rule_firing.get_or_create(&labels).set(1);
                m.rule_fired.get_or_create(&labels).inc();
                lock(&self.io.firing).insert(event.rule.clone(), severity.clone());
                for action in &event.actions {
                    self.dispatch(action.clone(), &event);
                }
            }
            EventKind::Cleared => {
                tracing::info!(rule = %event.rule, summary = %event.summary, "rule cleared");
                m.rule_firing.get_or_create(&labels).set(0);
                lock(&self.io.firing).remove(&event.rule);
            }
            EventKind::Pending => {
                tracing::debug!(rule = %event.rule, summary = %event.summary, "rule pending");
            }
        }
        self.shared.status.event(&event);
        self.publish_rules();
    }

    fn publish_rules(&self) {
        let config = self.io.config_tx.borrow();
        let firing = lock(&self.io.firing);
        let rules = config
            .rules
            .iter()
            .map(|r| (r.name.clone(), firing.contains_key(&r.name)));
        self.shared.status.rules(rules);
    }

    fn dispatch(&self, action: Action, event: &Event) {
        let shared = Arc::clone(&self.shared);
        let rule = event.rule.clone();
        let env = event.env();
        let drain = self.io.config_tx.borrow().drain.clone();
        let node = shared.node();
        let summary = event.summary.clone();
        tokio::spawn(async move {
            let m = &shared.metrics;
            match action {
                Action::Checkpoint { target, after } => {
                    let after = actions::after_of(after);
                    let procs = tokio::task::spawn_blocking(procs::scan)
                        .await
                        .unwrap_or_default();
                    // Each checkpoint saves a process with its descendants.
                    let chosen = target.topmost(&procs);
                    if chosen.is_empty() {
                        tracing::warn!(rule = %rule, target = %target, "checkpoint action: no process matches the target");
                        m.actions
                            .get_or_create(&vec![
                                ("action", "checkpoint".into()),
                                ("result", "no_target".into()),
                            ])
                            .inc();
                        return;
                    }
                    let mut tasks = Vec::new();
                    for p in chosen {
                        let cp = Arc::clone(&shared.checkpointer);
                        let job = target.job_of(p).map(str::to_owned);
                        let (p, rule) = (p.clone(), rule.clone());
                        tasks.push(tokio::spawn(async move {
                            cp.checkpoint(p, job, after, actions::Requester::Rule(rule))
                                .await
                        }));
                    }
                    for t in tasks {
                        let result = match t.await {
                            Ok(o) => o.result,
                            Err(_) => "failed",
                        };
                        m.actions
                            .get_or_create(&vec![
                                ("action", "checkpoint".into()),
                                ("result", result.into()),
                            ])
                            .inc();
                    }
                }
                Action::Drain => {
                    let argv = drain.command_for(&node, &summary);
                    let result = actions::run_command(&argv, &env).await;
                    log_command("drain", &rule, &argv, &result);
                    count(m, "drain", &result);
                }
                Action::Exec { command } => {
                    let result = actions::run_command(&command, &env).await;
                    log_command("exec", &rule, &command, &result);
                    count(m, "exec", &result);
                }
                Action::Log => {
                    tracing::warn!(rule = %rule, summary = %summary, "log action");
                    count(m, "log", &Ok(()));
                }
            }
        });
    }

    fn reload(&mut self, why: &str) {
        let m = Arc::clone(&self.shared.metrics);
        let io = Arc::clone(&self.io);
        match config::load(&io.config_path, &io.overrides) {
            Ok((agent, rules)) => {
                let (listen, root, store_dir) =
                    (agent.listen, agent.root.clone(), agent.store_dir.clone());
                let old = self.shared.replace_agent(agent);
                if old.listen != listen || old.root != root || old.store_dir != store_dir {
                    tracing::warn!(
                        "listen, root and store changes take effect when the agent restarts"
                    );
                }
                self.evaluator.reload(&rules);
                m.rules_loaded.set(rules.rules.len() as i64);
                // A firing rule that the new file removed is firing no more.
                let mut firing = lock(&io.firing);
                let gone: Vec<(String, String)> = firing
                    .iter()
                    .filter(|(name, _)| !rules.rules.iter().any(|r| &&r.name == name))
                    .map(|(n, s)| (n.clone(), s.clone()))
                    .collect();
                for (name, severity) in gone {
                    m.rule_firing
                        .get_or_create(&vec![("rule", name.clone()), ("severity", severity)])
                        .set(0);
                    firing.remove(&name);
                }
                drop(firing);
                for w in &rules.warnings {
                    tracing::warn!(config = %io.config_path.display(), "{w}");
                }
                tracing::info!(
                    trigger = why,
                    rules = rules.rules.len(),
                    "configuration reloaded"
                );
                let _ = io.config_tx.send(Arc::new(rules));
                m.reloads.get_or_create(&label("result", "success")).inc();
                m.reload_ok.set(1);
                self.shared.status.reload_error(None);
                self.publish_rules();
            }
            Err(e) => {
                let msg = format!("{e:#}");
                tracing::error!(trigger = why, config = %io.config_path.display(), errors = %msg, "configuration rejected; the previous rules keep running");
                m.reloads.get_or_create(&label("result", "failure")).inc();
                m.reload_ok.set(0);
                self.shared.status.reload_error(Some(msg));
            }
        }
    }
}

fn log_command(what: &str, rule: &str, argv: &[String], r: &Result<()>) {
    match r {
        Ok(()) => tracing::info!(action = what, rule, command = %argv.join(" "), "action done"),
        Err(e) => {
            tracing::error!(action = what, rule, command = %argv.join(" "), error = %format!("{e:#}"), "action failed");
        }
    }
}

fn count(m: &Metrics, action: &'static str, r: &Result<()>) {
    let result = if r.is_ok() { "ok" } else { "failed" };
    m.actions
        .get_or_create(&vec![("action", action.into()), ("result", result.into())])
        .inc();
}

fn record(w: &mut impl Write, t: f64, readings: &[Reading]) -> std::io::Result<()> {
    for r in readings {
        let p = TracePoint {
            t,
            reading: r.clone(),
        };
        serde_json::to_writer(&mut *w, &p)?;
        w.write_all(b"\n")?;
    }
    w.flush()
}

/// Seconds since the epoch, the time base of rules and traces.
fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
