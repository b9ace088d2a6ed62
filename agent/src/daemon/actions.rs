//! Carrying out what a firing rule asks: checkpoint processes (on dedicated threads, a
//! bounded number at once, never the same process twice at a time), drain the node,
//! run a command, log. Every outcome is logged with structured fields and counted;
//! a failed action never stops the agent.
//!
//! Checkpoints the API asks for run beside the rules', never in their way: they have a
//! permit of their own ([`API_CHECKPOINTS`]) and never wait for one, so a rule's
//! checkpoint never queues behind a request. Processes that must never be checkpointed
//! (PID 1, the agent, the agent's ancestors: [`procs::refusal`]) are refused before the
//! engine is called or the store touched.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow};
use lifeboat_engine::{After, CheckpointOptions};
use lifeboat_triggers::{AfterAction, ProcessInfo};
use serde::Serialize;
use tokio::sync::{Semaphore, TryAcquireError, oneshot};

use super::metrics::{Metrics, label};
use super::procs;
use super::store::{Entry, Store};

/// What a checkpoint action's `after` (the rule's words) asks of the engine.
pub fn after_of(a: AfterAction) -> After {
    match a {
        AfterAction::Continue => After::Run,
        AfterAction::Stop => After::Stop,
        AfterAction::Kill => After::Kill,
    }
}

/// How long a drain or exec command may run before it is killed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the agent waits at shutdown for running checkpoints
/// ([`Checkpointer::drain_running`]). The systemd unit's `TimeoutStopSec` must be longer
/// (with the HTTP server's close, `serve::STOP_WAIT`; a unit test reads the unit).
pub const DRAIN_WAIT: Duration = Duration::from_secs(120);

/// Checkpoints the API may run at once, beside the rules' `max_concurrent_checkpoints`.
pub const API_CHECKPOINTS: usize = 1;

/// Who asked for a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requester {
    /// A firing rule, by name: waits for one of the rules' permits.
    Rule(String),
    /// `POST /api/v1/checkpoint`: takes the API's permit or is skipped, never waits.
    Api,
}

impl Requester {
    /// The reason recorded in the store's index: the rule's name, or `api`.
    pub fn reason(&self) -> &str {
        match self {
            Requester::Rule(name) => name,
            Requester::Api => "api",
        }
    }
}

/// Runs checkpoints for the agent.
#[derive(Debug)]
pub struct Checkpointer {
    /// The rules' checkpoints.
    permits: Semaphore,
    /// The API's checkpoints, apart so that a request never delays a rule.
    api_permits: Semaphore,
    running: Mutex<HashSet<i32>>,
    store: Store,
    metrics: Arc<Metrics>,
    compress: bool,
    /// Every request stops where the engine would be called ([`Checkpointer::dry_run`]).
    dry_run: bool,
}

/// What a checkpoint request came to.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The process.
    pub pid: i32,
    /// `ok`, `failed`, `skipped` or `refused` (a process never checkpointed).
    pub result: &'static str,
    /// The image, when written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Image bytes.
    pub bytes: u64,
    /// Wall time.
    pub seconds: f64,
    /// Why it failed or was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Checkpointer {
    /// A checkpointer writing into `store`.
    pub fn new(store: Store, max_concurrent: usize, compress: bool, metrics: Arc<Metrics>) -> Self {
        let c = Checkpointer {
            permits: Semaphore::new(max_concurrent.max(1)),
            api_permits: Semaphore::new(API_CHECKPOINTS),
            running: Mutex::new(HashSet::new()),
            store,
            metrics,
            compress,
            dry_run: false,
        };
        c.update_store_metrics();
        c
    }

    /// This checkpointer, made to stop every request where it would freeze the process:
    /// refusals, the one-at-a-time rule and the permits apply as always, then the
    /// outcome is `skipped` ("dry run") and neither the process nor the store is
    /// touched. For harnesses of the request path (the `http` fuzz target), where any
    /// PID can come in.
    pub fn dry_run(mut self) -> Self {
        self.dry_run = true;
        self
    }

    /// The store images go to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Checkpoint one process, then apply `after`, for `requester`.
    pub async fn checkpoint(
        self: &Arc<Self>,
        proc: ProcessInfo,
        job: Option<String>,
        after: After,
        requester: Requester,
    ) -> Outcome {
        let pid = proc.pid;
        let reason = requester.reason().to_owned();
        let me = std::process::id() as i32;
        if let Some(why) = procs::refusal(pid, me, &procs::ancestors_of_self()) {
            tracing::warn!(pid, comm = %proc.comm, reason = %reason, refused = %why, "checkpoint refused; nothing was frozen");
            return self.count(Outcome::refused(pid, why));
        }
        let Some(_running) = Running::enter(self, pid) else {
            tracing::info!(pid, reason = %reason, "checkpoint already running for this process; not starting another");
            return self.count(Outcome::skipped(
                pid,
                "a checkpoint of this process is already running",
            ));
        };
        let permit = match requester {
            Requester::Rule(_) => self.permits.acquire().await.map_err(|_| "the agent is shutting down"),
            Requester::Api => self.api_permits.try_acquire().map_err(|e| match e {
                TryAcquireError::NoPermits => "another checkpoint requested through the API is running; try again when it is done",
                TryAcquireError::Closed => "the agent is shutting down",
            }),
        };
        let outcome = match permit {
            Ok(_permit) if self.dry_run => {
                Outcome::skipped(pid, "dry run: the process was not frozen")
            }
            Ok(_permit) => match self.run_one(&proc, job, after, &reason).await {
                Ok(o) => o,
                Err(e) => {
                    tracing::error!(pid, comm = %proc.comm, reason = %reason, error = %format!("{e:#}"), "checkpoint failed; the process keeps running");
                    Outcome {
                        pid,
                        result: "failed",
                        path: None,
                        bytes: 0,
                        seconds: 0.0,
                        error: Some(format!("{e:#}")),
                    }
                }
            },
            Err(why) => Outcome::skipped(pid, why),
        };
        self.count(outcome)
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashSet<i32>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count(&self, o: Outcome) -> Outcome {
        self.metrics
            .checkpoints
            .get_or_create(&label("result", o.result))
            .inc();
        o
    }

    async fn run_one(
        &self,
        proc: &ProcessInfo,
        job: Option<String>,
        after: After,
        reason: &str,
    ) -> Result<Outcome> {
        let now = SystemTime::now();
        let path = self.store.prepare(
            proc.pid,
            &proc.comm,
            job.as_deref(),
            now,
            procs::tree_rss_bytes(proc.pid),
            proc.uid,
        )?;
        let outcome = self.write_image(proc, job, after, reason, now, &path).await;
        if outcome.is_err() {
            self.store.abandon(&path);
        }
        outcome
    }

    /// The checkpoint itself, into `path` in the store, and its index entry.
    async fn write_image(
        &self,
        proc: &ProcessInfo,
        job: Option<String>,
        after: After,
        reason: &str,
        now: SystemTime,
        path: &std::path::Path,
    ) -> Result<Outcome> {
        let pid = proc.pid;
        tracing::info!(pid, comm = %proc.comm, job = job.as_deref().unwrap_or(""), reason, path = %path.display(), "checkpoint started");
        let opts = CheckpointOptions {
            after,
            compress: self.compress,
            scope: lifeboat_engine::Scope::Tree,
        };
        // ptrace belongs to the thread that attached: the whole checkpoint runs on one
        // dedicated thread, never on the async runtime.
        let (tx, rx) = oneshot::channel();
        let thread_path = path.to_owned();
        std::thread::Builder::new()
            .name(format!("checkpoint-{pid}"))
            .spawn(move || {
                let started = Instant::now();
                let r = lifeboat_engine::checkpoint(pid, &thread_path, &opts, &mut |_| {});
                let _ = tx.send((r, started.elapsed()));
            })
            .context("cannot start a checkpoint thread")?;
        let (result, elapsed) = rx
            .await
            .map_err(|_| anyhow!("the checkpoint thread died"))?;
        let report =
            result.with_context(|| format!("checkpoint of PID {pid} (`{}`)", proc.comm))?;
        self.metrics
            .checkpoint_duration
            .observe(elapsed.as_secs_f64());
        self.metrics
            .checkpoint_frozen
            .observe(report.frozen.as_secs_f64());
        self.metrics.checkpoint_bytes.inc_by(report.bytes);
        // The image is written (and the process may be gone): a failure to give it to
        // its user leaves it root's, mode 0600, which only root can restart. Said, not
        // fatal.
        if let Err(e) = self.store.hand_over(&report.path, proc.uid) {
            tracing::warn!(pid, path = %report.path.display(), error = %format!("{e:#}"), "the image stays root's");
        }
        let entry = Entry {
            time: humantime::format_rfc3339_millis(now).to_string(),
            pid,
            comm: proc.comm.clone(),
            job,
            reason: reason.to_owned(),
            path: report.path.clone(),
            bytes: report.bytes,
            seconds: elapsed.as_secs_f64(),
        };
        let removed = self.store.commit(entry)?;
        for old in &removed {
            tracing::info!(path = %old.display(), "old image removed by retention");
        }
        self.update_store_metrics();
        tracing::info!(
            pid,
            comm = %proc.comm,
            reason,
            path = %report.path.display(),
            bytes = report.bytes,
            seconds = elapsed.as_secs_f64(),
            frozen_seconds = report.frozen.as_secs_f64(),
            after = ?after,
            "checkpoint written"
        );
        Ok(Outcome {
            pid,
            result: "ok",
            path: Some(report.path),
            bytes: report.bytes,
            seconds: elapsed.as_secs_f64(),
            error: None,
        })
    }

    fn update_store_metrics(&self) {
        if let Ok((bytes, n)) = self.store.usage() {
            self.metrics
                .store_bytes
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
            self.metrics
                .store_images
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Wait until running checkpoints are done (at shutdown), at most [`DRAIN_WAIT`].
    pub async fn drain_running(&self) {
        let deadline = Instant::now() + DRAIN_WAIT;
        while !self.lock_running().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A PID in [`Checkpointer`]'s running set, removed when this is dropped: also when the
/// future that holds it is dropped before it ends.
struct Running<'a> {
    checkpointer: &'a Checkpointer,
    pid: i32,
}

impl<'a> Running<'a> {
    /// `None` if a checkpoint of `pid` is running already.
    fn enter(checkpointer: &'a Checkpointer, pid: i32) -> Option<Running<'a>> {
        // The lock is released before a `Running` exists: one made and dropped under it
        // (`then_some` builds its value even for `false`) would deadlock in `drop`, and
        // remove the PID of the checkpoint that is running.
        let entered = checkpointer.lock_running().insert(pid);
        entered.then(|| Running { checkpointer, pid })
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.checkpointer.lock_running().remove(&self.pid);
    }
}

impl Outcome {
    fn refused(pid: i32, why: String) -> Outcome {
        Outcome {
            pid,
            result: "refused",
            path: None,
            bytes: 0,
            seconds: 0.0,
            error: Some(why),
        }
    }

    fn skipped(pid: i32, why: &str) -> Outcome {
        Outcome {
            pid,
            result: "skipped",
            path: None,
            bytes: 0,
            seconds: 0.0,
            error: Some(why.to_owned()),
        }
    }
}

/// Run a drain or exec command with a timeout; `Err` carries its stderr.
pub async fn run_command(argv: &[String], env: &[(String, String)]) -> Result<()> {
    let (prog, args) = argv.split_first().context("the command is empty")?;
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(COMMAND_TIMEOUT, cmd.output())
        .await
        .map_err(|_| {
            anyhow!(
                "`{}` did not finish within {COMMAND_TIMEOUT:?}",
                argv.join(" ")
            )
        })?
        .with_context(|| format!("cannot run `{prog}`"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(anyhow!(
            "`{}` failed ({}): {}",
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A second checkpoint of a PID while one runs is refused and leaves the first one's
    /// mark in place; the mark goes when the first ends. (Building the guard eagerly once
    /// deadlocked the agent when a PID was asked for twice.)
    #[test]
    fn one_checkpoint_per_pid_at_a_time() {
        let dir = std::env::temp_dir().join(format!("lifeboat-running-{}", std::process::id()));
        let limits = super::super::store::Limits {
            keep: 1,
            max_total_bytes: 0,
            min_free_bytes: 0,
        };
        let store = Store::open(&dir, "n", limits).unwrap();
        let cp = Checkpointer::new(store, 1, false, Arc::new(Metrics::new()));
        let first = Running::enter(&cp, 42).expect("the first checkpoint of 42 runs");
        assert!(Running::enter(&cp, 42).is_none());
        assert!(
            cp.lock_running().contains(&42),
            "the first one's mark stays"
        );
        let other = Running::enter(&cp, 43).expect("another PID runs beside it");
        drop(first);
        assert!(!cp.lock_running().contains(&42));
        assert!(Running::enter(&cp, 42).is_some());
        drop(other);
        assert!(cp.lock_running().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
