//! Start-up and shutdown of the daemon: raise the descriptor limit, load the
//! configuration, open the store, bind the listener, read every source once to say what
//! the node has, spawn one polling task per source (reads on the blocking pool, since
//! sysfs reads block), the watchers and the brain, each supervised, then serve HTTP
//! until SIGTERM or SIGINT and wait for running checkpoints (at most [`STOP_WAIT`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use lifeboat_sensors::{Root, Scan, Sensor, Source};
use lifeboat_triggers::Config;
use tokio::sync::{Notify, mpsc};

use super::actions::{Checkpointer, DRAIN_WAIT};
use super::brain::{Brain, BrainIo};
use super::config::{self, Overrides};
use super::metrics::Metrics;
use super::status::Status;
use super::supervise::{self, Tasks};
use super::{Shared, http, server, store, watch};

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

/// The longest the agent takes to stop after SIGTERM: the HTTP server's close, then the
/// wait for running checkpoints. The systemd unit's `TimeoutStopSec` is longer (a unit
/// test reads `config/lifeboat.service`), so systemd never SIGKILLs a draining agent.
pub const STOP_WAIT: Duration = server::CLOSE_GRACE.saturating_add(DRAIN_WAIT);

/// Run the agent until SIGINT or SIGTERM, then wait for running checkpoints.
pub async fn serve(opts: &Options) -> Result<()> {
    let fds = server::raise_nofile();
    let (agent_cfg, rules) = config::load(&opts.config, &opts.overrides)?;
    for w in &rules.warnings {
        tracing::warn!(config = %opts.config.display(), "{w}");
    }
    let metrics = Arc::new(Metrics::new());
    let store = store::Store::open(
        &agent_cfg.store_dir,
        &agent_cfg.node,
        agent_cfg.store.clone(),
    )?;
    let (swept, swept_bytes) = store.sweep();
    if swept > 0 {
        tracing::info!(
            files = swept,
            bytes = swept_bytes,
            store = %store.dir().display(),
            "removed the partial files of checkpoints that were killed"
        );
    }
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
        status: Status::new(&agent_cfg.node, opts.config.clone()),
        tasks: Arc::new(Tasks::new(Arc::clone(&metrics))),
        agent: RwLock::new(agent_cfg.clone()),
    });
    metrics.rules_loaded.set(rules.rules.len() as i64);
    metrics.reload_ok.set(1);
    tracing::info!(
        listen = %local,
        config = %opts.config.display(),
        root = %agent_cfg.root.display(),
        node = %agent_cfg.node,
        store = %shared.checkpointer.store().dir().display(),
        rules = rules.rules.len(),
        fd_limit = fds.soft,
        fd_limit_raised_from = fds.raised_from,
        max_connections = fds.max_connections,
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

    let (config_tx, config_rx) = tokio::sync::watch::channel(Arc::new(rules));
    let (scan_tx, scan_rx) = mpsc::channel::<Scan>(64);
    for scan in first.1 {
        let _ = scan_tx.send(scan).await;
    }

    // One polling task per source, each supervised: a panic restarts it with its sensor.
    let mut wakers: BTreeMap<Source, Arc<Notify>> = BTreeMap::new();
    let mut pollers = Vec::new();
    for sensor in sensors {
        let source = sensor.source();
        let wake = Arc::new(Notify::new());
        wakers.insert(source, Arc::clone(&wake));
        let sensor = Arc::new(Mutex::new(sensor));
        let (root, config_rx, scan_tx) = (root.clone(), config_rx.clone(), scan_tx.clone());
        pollers.push(supervise::spawn(
            Arc::clone(&shared.tasks),
            format!("poll-{source}"),
            move || {
                poll_source(
                    Arc::clone(&sensor),
                    source,
                    root.clone(),
                    config_rx.clone(),
                    scan_tx.clone(),
                    Arc::clone(&wake),
                )
            },
        ));
    }
    drop(scan_tx);
    let _watchers = watch::watch_files(&root, &wakers)?;

    let (reload_tx, reload_rx) = mpsc::channel::<&'static str>(8);
    watch::spawn_sighup(reload_tx.clone());
    let _config_watcher = watch::watch_config(&opts.config, reload_tx)?;

    let recorder = match &opts.record {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("cannot open the trace file {}", p.display()))?,
        )),
        None => None,
    };
    let brain_io = Arc::new(BrainIo::new(
        Arc::clone(&shared),
        config_tx,
        opts.config.clone(),
        opts.overrides.clone(),
        (scan_rx, reload_rx),
        recorder,
    ));
    let brain_task = supervise::spawn(Arc::clone(&shared.tasks), "brain".into(), move || {
        Brain::new(Arc::clone(&brain_io)).run()
    });

    let app = http::router(Arc::clone(&shared));
    let conns = server::Connections::new(fds.max_connections, Arc::clone(&metrics));
    server::run(listener, app, conns, shutdown_signal()).await;
    tracing::info!(
        drain_wait_seconds = DRAIN_WAIT.as_secs(),
        stop_wait_seconds = STOP_WAIT.as_secs(),
        "shutting down; waiting for running checkpoints"
    );
    brain_task.abort();
    for p in pollers {
        p.abort();
    }
    shared.checkpointer.drain_running().await;
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

/// Poll one source at its configured interval, or at once when woken. A read that
/// panics panics this task, which its supervisor restarts.
async fn poll_source(
    sensor: Arc<Mutex<Box<dyn Sensor>>>,
    source: Source,
    root: Root,
    config: tokio::sync::watch::Receiver<Arc<Config>>,
    scans: mpsc::Sender<Scan>,
    wake: Arc<Notify>,
) {
    let task = format!("poll-{source}");
    loop {
        let interval = config.borrow().poll.interval_for(source);
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = wake.notified() => {
                // Let a burst of file events settle before reading.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        supervise::fault_point(&task);
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
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // The runtime is shutting down.
            Err(_) => return,
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 11: the unit's stop timeout (systemd's default, 90 s) was shorter than the
    /// agent's wait for running checkpoints (120 s): systemd SIGKILLed it halfway.
    #[test]
    fn the_unit_waits_longer_than_the_agent_stops() {
        let unit = include_str!("../../../config/lifeboat.service");
        let timeouts: Vec<&str> = unit
            .lines()
            .filter_map(|l| l.trim().strip_prefix("TimeoutStopSec="))
            .collect();
        assert_eq!(timeouts.len(), 1, "one TimeoutStopSec in the unit");
        let value = timeouts[0].trim();
        // systemd reads a bare number as seconds.
        let timeout = value
            .parse::<u64>()
            .map(Duration::from_secs)
            .or_else(|_| humantime::parse_duration(value))
            .unwrap();
        assert!(
            timeout >= STOP_WAIT + Duration::from_secs(10),
            "TimeoutStopSec={value} leaves no margin over the agent's {STOP_WAIT:?}"
        );
    }
}
