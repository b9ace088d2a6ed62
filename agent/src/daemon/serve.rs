//! Start-up and shutdown of the daemon: load the configuration, open the store, bind the
//! listener, read every source once to say what the node has, spawn one polling task
//! per source (reads on the blocking pool, since sysfs reads block), the watchers and
//! the brain, then serve HTTP until SIGTERM or SIGINT and wait for running checkpoints.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use lifeboat_sensors::{Root, Scan, Sensor, Source};
use lifeboat_triggers::Config;
use tokio::sync::{Notify, mpsc};

use super::actions::Checkpointer;
use super::brain::Brain;
use super::config::{self, Overrides};
use super::metrics::Metrics;
use super::status::Status;
use super::{Shared, http, store, watch};

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
pub async fn serve(opts: &Options) -> Result<()> {
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
    let brain = Brain::new(
        Arc::clone(&shared),
        config_tx,
        opts.config.clone(),
        opts.overrides.clone(),
        recorder,
    );
    let brain_task = tokio::spawn(brain.run(scan_rx, reload_rx));

    let app = http::router(Arc::clone(&shared));
    let server = axum::serve(listener, app).with_graceful_shutdown(shutdown_signal());
    server.await.context("the HTTP server failed")?;
    tracing::info!("shutting down; waiting for running checkpoints");
    brain_task.abort();
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

/// Poll one source at its configured interval, or at once when woken.
async fn poll_source(
    sensor: Box<dyn Sensor>,
    root: Root,
    config: tokio::sync::watch::Receiver<Arc<Config>>,
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
