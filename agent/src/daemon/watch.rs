//! Watchers that wake the daemon: SIGHUP and changes of the configuration file ask the
//! brain for a reload; changes of rasdaemon's database or log wake its poller at once.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use lifeboat_sensors::{Root, Source};
use tokio::sync::{Notify, mpsc};

/// Ask for a reload (`"SIGHUP"`) on every SIGHUP.
pub fn spawn_sighup(tx: mpsc::Sender<&'static str>) {
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

/// Ask for a reload (`"file change"`) when the configuration file changes; the directory
/// is watched, since editors replace files by rename. `None` (logged) if it cannot be.
pub fn watch_config(
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
/// so new records count at once instead of at the next poll. The watchers work while
/// they are kept.
pub fn watch_files(
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
        // Whether the source has any of its files yet: the directories are watched
        // either way (rasdaemon may start later), but only then is it worth saying.
        let present: Vec<String> = paths
            .iter()
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .collect();
        for p in paths {
            // Watch the directory: the file may not exist yet or be replaced.
            let dir = p.parent().map(Path::to_owned).unwrap_or(p);
            if dir.is_dir() && w.watch(&dir, notify::RecursiveMode::NonRecursive).is_ok() {
                watching += 1;
            }
        }
        if watching > 0 {
            if present.is_empty() {
                tracing::debug!(source = %source, "no event file yet; watching their directories in case it starts");
            } else {
                tracing::info!(source = %source, files = %present.join(", "), "watching event files for immediate reads");
            }
            out.push(w);
        }
    }
    Ok(out)
}
