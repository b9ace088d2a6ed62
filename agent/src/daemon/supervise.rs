//! Tasks that must never die silently. The brain and every poller run under
//! [`spawn`]: a task that panics is logged (with its name and the panic's message),
//! counted (`lifeboat_task_restarts_total{task}`), shown as down (`lifeboat_task_up{task}`
//! is 0, `/health` answers 503 with the reason, `/api/v1/status` lists it) and started
//! again after a pause that doubles while it keeps panicking (1 s up to 60 s; back to 1 s
//! once a run lasted a minute).
//!
//! What a restart keeps is the task's to say: a poller keeps its sensor, the brain its
//! channels, its trace file and the rules in force, and rebuilds its evaluator from them
//! (see [`super::brain`]).
//!
//! With the `fault-injection` feature (tests only), `LIFEBOAT_PANIC=TASK:FILE` makes the
//! task named TASK panic at its next unit of work while FILE exists (it removes FILE
//! first, so one file is one panic): [`fault_point`].

use std::any::Any;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::metrics::{Metrics, label};

/// The pause before the first restart of a task that panicked.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest pause between restarts of a task that keeps panicking.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A run this long resets the pause to [`FIRST_BACKOFF`].
const STABLE_RUN: Duration = Duration::from_secs(60);

/// The supervised tasks' health, shared with the HTTP handlers.
#[derive(Debug)]
pub struct Tasks {
    state: Mutex<BTreeMap<String, TaskState>>,
    metrics: Arc<Metrics>,
}

/// One task, as `/api/v1/status` shows it.
#[derive(Debug, Default, Clone, Serialize)]
struct TaskState {
    up: bool,
    restarts: u64,
    /// The message of its last panic.
    last_panic: Option<String>,
    /// Why it is down, while it is.
    #[serde(skip)]
    down: Option<String>,
}

impl Tasks {
    /// No task yet.
    pub fn new(metrics: Arc<Metrics>) -> Tasks {
        Tasks {
            state: Mutex::new(BTreeMap::new()),
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, TaskState>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Why each task that is down is down; empty when all run.
    pub fn down(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter_map(|(name, t)| Some(format!("{name}: {}", t.down.as_ref()?)))
            .collect()
    }

    /// Every task: up, restarts, last panic.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(&*self.lock()).unwrap_or_default()
    }

    fn started(&self, task: &str) {
        let labels = label("task", task);
        self.metrics.task_up.get_or_create(&labels).set(1);
        // The series exists, at 0, from the first start.
        let _ = self.metrics.task_restarts.get_or_create(&labels);
        let mut state = self.lock();
        let t = state.entry(task.to_owned()).or_default();
        t.up = true;
        t.down = None;
    }

    fn panicked(&self, task: &str, message: &str, restart_in: Duration) {
        tracing::error!(
            task,
            panic = message,
            restart_in_seconds = restart_in.as_secs_f64(),
            "task panicked; restarting it"
        );
        let labels = label("task", task);
        self.metrics.task_up.get_or_create(&labels).set(0);
        self.metrics.task_restarts.get_or_create(&labels).inc();
        let mut state = self.lock();
        let t = state.entry(task.to_owned()).or_default();
        t.up = false;
        t.restarts += 1;
        t.last_panic = Some(message.to_owned());
        t.down = Some(format!(
            "panicked ({message}); restarting in {}",
            humantime::format_duration(restart_in)
        ));
    }
}

/// Run the task that `make` builds, under supervision: each time it panics, report it
/// and, after a pause, run a new one that `make` builds. Ends when a run ends without
/// panicking (its inputs closed); aborting the returned handle aborts the running task.
pub fn spawn<F, Fut>(tasks: Arc<Tasks>, name: String, mut make: F) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut backoff = FIRST_BACKOFF;
        loop {
            tasks.started(&name);
            let started = Instant::now();
            let run = AbortOnDrop(tokio::spawn(make()));
            let ended = run.wait().await;
            let panic = match ended {
                Ok(()) => return,
                Err(e) if e.is_panic() => e.into_panic(),
                // Aborted from outside: the agent is stopping.
                Err(_) => return,
            };
            if started.elapsed() >= STABLE_RUN {
                backoff = FIRST_BACKOFF;
            }
            tasks.panicked(&name, &panic_message(&*panic), backoff);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    })
}

/// A task aborted when its handle is dropped (the supervisor itself was aborted).
struct AbortOnDrop(JoinHandle<()>);

impl AbortOnDrop {
    async fn wait(mut self) -> Result<(), tokio::task::JoinError> {
        (&mut self.0).await
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The text a panic was raised with (`panic!("...")` gives a `&str` or a `String`).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// Test-only fault (`fault-injection` feature): panic if `LIFEBOAT_PANIC` is `task:FILE`
/// and FILE exists, removing it first. Nothing in a normal build.
#[cfg(feature = "fault-injection")]
pub fn fault_point(task: &str) {
    let Ok(spec) = std::env::var("LIFEBOAT_PANIC") else {
        return;
    };
    let Some((which, file)) = spec.split_once(':') else {
        return;
    };
    if which == task && std::fs::remove_file(file).is_ok() {
        panic!("fault injection: {file} asked the {task} task to panic");
    }
}

/// Nothing, in a normal build.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn fault_point(_task: &str) {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn a_panicking_task_is_reported_and_restarted() {
        let metrics = Arc::new(Metrics::new());
        let tasks = Arc::new(Tasks::new(Arc::clone(&metrics)));
        let runs = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&runs);
        let handle = spawn(Arc::clone(&tasks), "worker".into(), move || {
            let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if n <= 2 {
                    panic!("run {n} fails");
                }
            }
        });
        // Paused time: sleeps end as soon as every task waits.
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(
            tasks.down(),
            vec!["worker: panicked (run 1 fails); restarting in 1s".to_owned()]
        );
        let text = metrics.encode();
        assert!(
            text.contains("lifeboat_task_restarts_total{task=\"worker\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("lifeboat_task_up{task=\"worker\"} 0"),
            "{text}"
        );
        // The second run panics too: the pause doubles.
        tokio::time::sleep(FIRST_BACKOFF).await;
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert_eq!(
            tasks.down(),
            vec!["worker: panicked (run 2 fails); restarting in 2s".to_owned()]
        );
        // The third ends by itself: the supervisor ends, the task is up.
        handle.await.unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert!(tasks.down().is_empty());
        let doc = tasks.to_json();
        assert_eq!(doc["worker"]["restarts"], 2);
        assert_eq!(doc["worker"]["up"], true);
        assert_eq!(doc["worker"]["last_panic"], "run 2 fails");
    }

    #[tokio::test]
    async fn aborting_the_supervisor_aborts_the_task() {
        let tasks = Arc::new(Tasks::new(Arc::new(Metrics::new())));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut tx = Some(tx);
        let handle = spawn(tasks, "forever".into(), move || {
            // Holds the sender until it is dropped, i.e. aborted.
            let tx = tx.take();
            async move {
                let _tx = tx;
                std::future::pending::<()>().await;
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        handle.abort();
        assert!(rx.await.is_err(), "the task's future was dropped");
    }

    #[test]
    fn panic_messages() {
        assert_eq!(panic_message(&"static"), "static");
        assert_eq!(panic_message(&String::from("owned")), "owned");
        assert_eq!(panic_message(&42u8), "a panic without a message");
    }
}
