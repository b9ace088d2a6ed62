//! `lifeboat agent`: the node daemon. Polls the sensor sources, feeds the readings to the
//! rules, carries out the actions of rules that fire, serves `/metrics` and a small API,
//! and reloads its configuration on SIGHUP or when the file changes.
//!
//! Shape: one tokio task per sensor source (the read itself runs on the blocking pool,
//! since sysfs reads block), one "brain" task that owns the rule evaluator and receives
//! every scan over a channel (so evaluation is sequential and deterministic), actions
//! spawned as tasks, checkpoints on dedicated threads (see [`actions`]).
//!
//! - [`serve`]: start-up, the polling tasks, the HTTP server, shutdown.
//! - [`server`]: the HTTP server's connections: descriptor budget, timeouts, cap.
//! - [`brain`]: the evaluator's task: scans, events, action dispatch, reloads.
//! - [`status`]: the status document of `/api/v1/status`.
//! - [`watch`]: SIGHUP, the configuration file and rasdaemon's files.
//! - [`supervise`]: tasks that panic are reported and restarted.
//! - [`config`], [`actions`], [`procs`], [`store`], [`metrics`], [`http`].

pub mod actions;
pub mod brain;
pub mod config;
pub mod http;
pub mod metrics;
pub mod procs;
pub mod serve;
pub mod server;
pub mod status;
pub mod store;
pub mod supervise;
pub mod watch;

use std::path::Path;
use std::sync::{Arc, RwLock};

pub use self::serve::{Options, serve};

use self::actions::Checkpointer;
use self::config::AgentConfig;
use self::metrics::Metrics;
use self::status::Status;
use self::supervise::Tasks;

/// State shared by the tasks and the HTTP handlers.
#[derive(Debug)]
pub struct Shared {
    /// Every metric.
    pub metrics: Arc<Metrics>,
    /// Runs checkpoints.
    pub checkpointer: Arc<Checkpointer>,
    /// What `/api/v1/status` shows.
    pub status: Status,
    /// The supervised tasks (brain, pollers): whether each runs, its restarts.
    pub tasks: Arc<Tasks>,
    /// The `[agent]` settings in force (a reload replaces them).
    agent: RwLock<AgentConfig>,
}

impl Shared {
    /// The state of an agent that serves HTTP as `lifeboat agent` does but never
    /// checkpoints (its [`Checkpointer`] is a [dry run](Checkpointer::dry_run)), with its
    /// store under `store_dir` and the API enabled by `token`. For harnesses of the
    /// request path: the `http` fuzz target builds its router with it.
    pub fn dry(store_dir: &Path, token: Option<String>) -> anyhow::Result<Arc<Shared>> {
        let raw = config::Raw::default();
        let mut agent = AgentConfig::validate(raw, Path::new("dry-run.toml"))?;
        agent.node = "dry-run".into();
        agent.token = token;
        agent.store_dir = store_dir.to_owned();
        let metrics = Arc::new(Metrics::new());
        let store = store::Store::open(&agent.store_dir, &agent.node, agent.store.clone())?;
        let checkpointer = Checkpointer::new(store, 1, false, Arc::clone(&metrics)).dry_run();
        Ok(Arc::new(Shared {
            metrics: Arc::clone(&metrics),
            checkpointer: Arc::new(checkpointer),
            status: Status::new(&agent.node, "dry-run.toml".into()),
            tasks: Arc::new(Tasks::new(metrics)),
            agent: RwLock::new(agent),
        }))
    }

    /// The API token, if the API may checkpoint.
    pub fn token(&self) -> Option<String> {
        self.agent().token.clone()
    }

    /// This node's name.
    pub fn node(&self) -> String {
        self.agent().node.clone()
    }

    /// Put reloaded settings in force; returns the ones they replace.
    pub fn replace_agent(&self, new: AgentConfig) -> AgentConfig {
        let mut agent = self.agent.write().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *agent, new)
    }

    fn agent(&self) -> std::sync::RwLockReadGuard<'_, AgentConfig> {
        self.agent.read().unwrap_or_else(|e| e.into_inner())
    }
}
