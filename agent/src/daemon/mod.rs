//! `lifeboat agent`: the node daemon. Polls the sensor sources, feeds the readings to the
//! rules, carries out the actions of rules that fire, serves `/metrics` and a small API,
//! and reloads its configuration on SIGHUP or when the file changes.
//!
//! Shape: one tokio task per sensor source (the read itself runs on the blocking pool,
//! since sysfs reads block), one "brain" task that owns the rule evaluator and receives
//! every scan over a channel (so evaluation is sequential and deterministic), actions
//! spawned as tasks, checkpoints on dedicated threads (see [`actions`]).

pub mod actions;
pub mod config;
pub mod http;
pub mod metrics;
pub mod procs;
pub mod store;

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use lifeboat_sensors::{Reading, Root, Scan, Sensor, Source, TracePoint};
use lifeboat_triggers::{Action, Config, Evaluator, Event, EventKind};
use serde::Serialize;
use tokio::sync::{Notify, mpsc, watch};

use self::actions::Checkpointer;
use self::config::{AgentConfig, Overrides};
use self::metrics::{Metrics, label};

/// Recent events kept for `/api/v1/status`.
const RECENT_EVENTS: usize = 100;

/// State shared by the tasks and the HTTP handlers.
#[derive(Debug)]
pub struct Shared {
    /// Every metric.
    pub metrics: Arc<Metrics>,
    /// Runs checkpoints.
    pub checkpointer: Arc<Checkpointer>,
    agent: RwLock<AgentConfig>,
    status: Mutex<Status>,
}

#[derive(Debug, Default, Serialize)]
struct Status {
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

impl Shared {
    /// The API token, if the API may checkpoint.
    pub fn token(&self) -> Option<String> {
        self.agent
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .token
            .clone()
    }

    fn status_doc(&self) -> serde_json::Value {
        let s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        serde_json::to_value(&*s).unwrap_or_default()
    }

    fn with_status(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// What `lifeboat agent` was asked to run with.
#[derive(Debug, Clone)]
pub struct Options {
    /// The configuration file.
    pub config: PathBuf,
    /// Where to append every reading as JSON Lines, if anywhere.
    pub record: Option<PathBuf>,
    /// Settings the command line gives instead of the file's.
    pub overrides: Overrides,
}

/// Run the agent until SIGINT or SIGTERM, then wait for running checkpoints.
pub async fn serve(args: &Options) -> Result<()> {
    let (agent_cfg, rules) = config::load(&args.config, &args.overrides)?;
    for w in &rules.warnings {
        tracing::warn!(config = %args.config.display(), "{w}");
    }
    let metrics = Arc::new(Metrics::new());
    let store = store::Store::open(
        &agent_cfg.store_dir,
        &agent_cfg.node,
        agent_cfg.store.clone(),
    )?;
    let checkpointer = Arc::new(Checkpointer::new(
        store,
        agent_cfg.max_concurrent_checkpoints,
        agent_cfg.compress,
        Arc::clone(&metrics),
    ));
    let root = Root::new(&agent_cfg.root);
    let listener = tokio::net::TcpListener::bind(agent_cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", agent_cfg.listen))?;
    let local = listener.local_addr().context("listener address")?;
    let shared = Arc::new(Shared {
        metrics: Arc::clone(&metrics),
        checkpointer,
        status: Mutex::new(Status {
            node: agent_cfg.node.clone(),
            config: args.config.clone(),
            started: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            ..Status::default()
        }),
        agent: RwLock::new(agent_cfg.clone()),
    });
    metrics.rules_loaded.set(rules.rules.len() as i64);
    metrics.reload_ok.set(1);
    tracing::info!(
        listen = %local,
        config = %args.config.display(),
        root = %agent_cfg.root.display(),
        node = %agent_cfg.node,
        store = %shared.checkpointer.store().dir().display(),
        rules = rules.rules.len(),
        "lifeboat agent started; metrics at http://{local}/metrics"
    );

    // The first read of every source, to say what this node has.
    let mut sensors = lifeboat_sensors::all_sensors();
    let first = {
        let root = root.clone();
        let mut moved = std::mem::take(&mut sensors);
        tokio::task::spawn_blocking(move || {
            let scans = lifeboat_sensors::read_all(&root, &mut moved);
            (moved, scans)
        })
        .await
        .context("the first sensor read panicked")?
    };
    sensors = first.0;
    report_sources(&first.1);

    let (config_tx, config_rx) = watch::channel(Arc::new(rules));
    let (scan_tx, scan_rx) = mpsc::channel::<Scan>(64);
    for scan in first.1 {
        let _ = scan_tx.send(scan).await;
    }

    // One polling task per source.
    let mut wakers: BTreeMap<Source, Arc<Notify>> = BTreeMap::new();
    for sensor in sensors {
        let source = sensor.source();
        let wake = Arc::new(Notify::new());
        wakers.insert(source, Arc::clone(&wake));
        tokio::spawn(poll_source(
            sensor,
            root.clone(),
            config_rx.clone(),
            scan_tx.clone(),
            wake,
        ));
    }
    let _watchers = watch_files(&root, &wakers)?;

    let (reload_tx, reload_rx) = mpsc::channel::<&'static str>(8);
    spawn_sighup(reload_tx.clone());
    let _config_watcher = watch_config(&args.config, reload_tx)?;

    let recorder = match &args.record {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("cannot open the trace file {}", p.display()))?,
        )),
        None => None,
    };
    let brain = Brain {
        shared: Arc::clone(&shared),
        evaluator: Evaluator::new(&config_rx.borrow()),
        config_tx,
        config_path: args.config.clone(),
        recorder,
        firing: BTreeMap::new(),
    };
    let brain_task = tokio::spawn(brain.run(scan_rx, reload_rx, args.overrides.clone()));

    let app = http::router(Arc::clone(&shared));
    let server = axum::serve(listener, app).with_graceful_shutdown(shutdown_signal());
    server.await.context("the HTTP server failed")?;
    tracing::info!("shutting down; waiting for running checkpoints");
    brain_task.abort();
    shared
        .checkpointer
        .drain_running(Duration::from_secs(120))
        .await;
    Ok(())
}

fn report_sources(scans: &[Scan]) {
    let found: Vec<String> = scans
        .iter()
        .filter(|s| s.present)
        .map(|s| format!("{} ({} readings)", s.source, s.readings.len()))
        .collect();
    let absent: Vec<&str> = scans
        .iter()
        .filter(|s| !s.present)
        .map(|s| s.source.as_str())
        .collect();
    if found.is_empty() {
        tracing::warn!(
            absent = %absent.join(", "),
            "no fault-precursor source found on this node: rules will not fire until one appears (metrics and the API still work)"
        );
    } else {
        tracing::info!(found = %found.join(", "), absent = %absent.join(", "), "sensor sources");
    }
    for s in scans {
        for e in &s.errors {
            tracing::warn!(source = %s.source, error = %e, "sensor read error");
        }
    }
}

/// Poll one source at its configured interval, or at once when woken.
async fn poll_source(
    sensor: Box<dyn Sensor>,
    root: Root,
    config: watch::Receiver<Arc<Config>>,
    scans: mpsc::Sender<Scan>,
    wake: Arc<Notify>,
) {
    let source = sensor.source();
    let sensor = Arc::new(Mutex::new(sensor));
    loop {
        let interval = config.borrow().poll.interval_for(source);
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = wake.notified() => {
                // Let a burst of file events settle before reading.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let s = Arc::clone(&sensor);
        let r = root.clone();
        let scan = tokio::task::spawn_blocking(move || {
            s.lock().unwrap_or_else(|e| e.into_inner()).read(&r)
        })
        .await;
        match scan {
            Ok(scan) => {
                if scans.send(scan).await.is_err() {
                    return;
                }
            }
            Err(e) => tracing::error!(source = %source, error = %e, "sensor reader panicked"),
        }
    }
}

/// Owns the rule evaluator: every scan and reload passes through here, in order.
struct Brain {
    shared: Arc<Shared>,
    evaluator: Evaluator,
    config_tx: watch::Sender<Arc<Config>>,
    config_path: PathBuf,
    recorder: Option<std::io::BufWriter<std::fs::File>>,
    /// Rules firing now, with their severity (for `lifeboat_rule_firing`).
    firing: BTreeMap<String, String>,
}

impl Brain {
    async fn run(
        mut self,
        mut scans: mpsc::Receiver<Scan>,
        mut reloads: mpsc::Receiver<&'static str>,
        overrides: Overrides,
    ) {
        self.publish_rules();
        loop {
            tokio::select! {
                Some(scan) = scans.recv() => self.on_scan(scan),
                Some(why) = reloads.recv() => {
                    // Editors write a file in several steps: wait for the last one.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    while reloads.try_recv().is_ok() {}
                    self.reload(why, &overrides);
                }
                else => return,
            }
        }
    }

    fn on_scan(&mut self, scan: Scan) {
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
        let interval = self
            .config_tx
            .borrow()
            .poll
            .interval_for(scan.source)
            .as_secs_f64();
        self.shared.with_status(|st| {
            st.sources.insert(
                scan.source.as_str(),
                SourceStatus {
                    present: scan.present,
                    readings: scan.readings.len(),
                    errors: scan.errors.iter().map(ToString::to_string).collect(),
                    interval_seconds: interval,
                },
            );
        });
        let t = now();
        if let Some(rec) = &mut self.recorder {
            if let Err(e) = record(rec, t, &scan.readings) {
                tracing::error!(error = %e, "cannot write the trace; recording stops");
                self.recorder = None;
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
                self.firing.insert(event.rule.clone(), severity.clone());
                for action in &event.actions {
                    self.dispatch(action.clone(), &event);
                }
            }
            EventKind::Cleared => {
                tracing::info!(rule = %event.rule, summary = %event.summary, "rule cleared");
                m.rule_firing.get_or_create(&labels).set(0);
                self.firing.remove(&event.rule);
            }
            EventKind::Pending => {
                tracing::debug!(rule = %event.rule, summary = %event.summary, "rule pending");
            }
        }
        let doc = EventDoc {
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            rule: event.rule.clone(),
            kind: format!("{:?}", event.kind).to_lowercase(),
            severity,
            summary: event.summary.clone(),
        };
        if !matches!(event.kind, EventKind::Pending) {
            self.shared.with_status(|st| {
                st.recent_events.push_back(doc);
                while st.recent_events.len() > RECENT_EVENTS {
                    st.recent_events.pop_front();
                }
            });
        }
        self.publish_rules();
    }

    fn publish_rules(&self) {
        let rules: Vec<RuleStatus> = self
            .config_tx
            .borrow()
            .rules
            .iter()
            .map(|r| RuleStatus {
                name: r.name.clone(),
                firing: self.firing.contains_key(&r.name),
            })
            .collect();
        self.shared.with_status(|st| st.rules = rules);
    }

    fn dispatch(&self, action: Action, event: &Event) {
        let shared = Arc::clone(&self.shared);
        let rule = event.rule.clone();
        let env = event.env();
        let drain = self.config_tx.borrow().drain.clone();
        let node = shared
            .agent
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .node
            .clone();
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
                            cp.checkpoint(p, job, after, rule).await
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

    fn reload(&mut self, why: &str, overrides: &Overrides) {
        let m = Arc::clone(&self.shared.metrics);
        match config::load(&self.config_path, overrides) {
            Ok((agent, rules)) => {
                let old = self
                    .shared
                    .agent
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                if old.listen != agent.listen
                    || old.root != agent.root
                    || old.store_dir != agent.store_dir
                {
                    tracing::warn!(
                        "listen, root and store changes take effect when the agent restarts"
                    );
                }
                *self.shared.agent.write().unwrap_or_else(|e| e.into_inner()) = agent;
                self.evaluator.reload(&rules);
                m.rules_loaded.set(rules.rules.len() as i64);
                // A firing rule that the new file removed is firing no more.
                let gone: Vec<(String, String)> = self
                    .firing
                    .iter()
                    .filter(|(name, _)| !rules.rules.iter().any(|r| &&r.name == name))
                    .map(|(n, s)| (n.clone(), s.clone()))
                    .collect();
                for (name, severity) in gone {
                    m.rule_firing
                        .get_or_create(&vec![("rule", name.clone()), ("severity", severity)])
                        .set(0);
                    self.firing.remove(&name);
                }
                for w in &rules.warnings {
                    tracing::warn!(config = %self.config_path.display(), "{w}");
                }
                tracing::info!(
                    trigger = why,
                    rules = rules.rules.len(),
                    "configuration reloaded"
                );
                let _ = self.config_tx.send(Arc::new(rules));
                m.reloads.get_or_create(&label("result", "success")).inc();
                m.reload_ok.set(1);
                self.shared.with_status(|st| st.last_reload_error = None);
                self.publish_rules();
            }
            Err(e) => {
                let msg = format!("{e:#}");
                tracing::error!(trigger = why, config = %self.config_path.display(), errors = %msg, "configuration rejected; the previous rules keep running");
                m.reloads.get_or_create(&label("result", "failure")).inc();
                m.reload_ok.set(0);
                self.shared
                    .with_status(|st| st.last_reload_error = Some(msg));
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

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the agent runs until killed.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

fn spawn_sighup(tx: mpsc::Sender<&'static str>) {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    if tx.send("SIGHUP").await.is_err() {
                        return;
                    }
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot handle SIGHUP; reload by editing the file"),
    }
}

/// Watch the configuration file's directory (editors replace files by rename).
fn watch_config(
    path: &Path,
    tx: mpsc::Sender<&'static str>,
) -> Result<Option<notify::RecommendedWatcher>> {
    use notify::Watcher;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_owned();
    let name = path.file_name().map(ToOwned::to_owned);
    let mut w = match notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            let ours = ev
                .paths
                .iter()
                .any(|p| p.file_name().map(ToOwned::to_owned) == name);
            if ours && !matches!(ev.kind, notify::EventKind::Access(_)) {
                let _ = tx.try_send("file change");
            }
        }
    }) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the configuration file; reload with SIGHUP");
            return Ok(None);
        }
    };
    if let Err(e) = w.watch(&dir, notify::RecursiveMode::NonRecursive) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the configuration directory; reload with SIGHUP");
        return Ok(None);
    }
    Ok(Some(w))
}

/// Wake a source's poller when its event files change (rasdaemon's database and log),
/// so new records count at once instead of at the next poll.
fn watch_files(
    root: &Root,
    wakers: &BTreeMap<Source, Arc<Notify>>,
) -> Result<Vec<notify::RecommendedWatcher>> {
    use notify::Watcher;
    let mut out = Vec::new();
    use lifeboat_sensors::rasdaemon::RasdaemonSensor;
    let event_files = [(
        Source::Rasdaemon,
        vec![
            RasdaemonSensor::db_path(root),
            RasdaemonSensor::new().log_path(root),
        ],
    )];
    for (source, paths) in event_files {
        let Some(wake) = wakers.get(&source).cloned() else {
            continue;
        };
        let mut w = match notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if res.is_ok_and(|ev| !matches!(ev.kind, notify::EventKind::Access(_))) {
                wake.notify_one();
            }
        }) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(source = %source, error = %e, "cannot watch event files; polling only");
                continue;
            }
        };
        let mut watching = 0;
        for p in paths {
            // Watch the directory: the file may not exist yet or be replaced.
            let dir = p.parent().map(Path::to_owned).unwrap_or(p);
            if dir.is_dir() && w.watch(&dir, notify::RecursiveMode::NonRecursive).is_ok() {
                watching += 1;
            }
        }
        if watching > 0 {
            tracing::info!(source = %source, "watching event files for immediate reads");
            out.push(w);
        }
    }
    Ok(out)
}
