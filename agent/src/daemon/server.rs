//! The HTTP server's connections, made to hold up under abuse (issue 11: 1100 idle
//! connections filled the agent's 1024 descriptors, `accept` failed with EMFILE, sensor
//! reads and checkpoints with it).
//!
//! - Descriptors: at start the agent raises its RLIMIT_NOFILE soft limit to the hard one
//!   ([`raise_nofile`]) and keeps [`RESERVED_FDS`] of it for itself (sensors, the store,
//!   checkpoints, watchers); the HTTP server holds at most the rest, and never more than
//!   [`MAX_CONNECTIONS`] ([`connection_cap`]).
//! - Time: a connection ready for a request (just accepted, or its last answer written)
//!   must deliver the request's headers within [`HEADER_TIMEOUT`] (hyper's
//!   `header_read_timeout`), so one that sends nothing, or its headers slowly, is closed
//!   then; one without a request in progress for [`IDLE_TIMEOUT`] is closed too (an
//!   answer that the client does not read).
//! - When the cap is reached, every new connection is still accepted (the listen backlog
//!   never fills, `/health` and Prometheus get in): the connection idle the longest is
//!   closed to make room for it. Only when every held connection has a request in progress
//!   is the new one closed at once.
//! - Shutdown: the listener closes, connections finish their request in progress within
//!   [`CLOSE_GRACE`] and are then dropped.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::metrics::{Metrics, label};

/// A request's headers must arrive within this of the connection being ready for it.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection without a request in progress is closed after this.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// At shutdown, requests in progress get this long to finish.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// The most connections the server holds, whatever the descriptor limit: Prometheus and
/// a few operators need a handful.
pub const MAX_CONNECTIONS: usize = 1024;
/// The fewest, on a node whose descriptor limit is tiny.
pub const MIN_CONNECTIONS: usize = 16;
/// Descriptors kept for everything but HTTP: sensor reads, the store and its index,
/// checkpoints (`/proc` files, the image, pipes of the engine), file watchers, the
/// runtime's own, drain and exec commands.
pub const RESERVED_FDS: u64 = 256;

/// The descriptor limit in force, and the connections it leaves the HTTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdBudget {
    /// The soft RLIMIT_NOFILE in force.
    pub soft: u64,
    /// The soft limit at start, when it was raised.
    pub raised_from: Option<u64>,
    /// Connections the HTTP server may hold.
    pub max_connections: usize,
}

/// Raise the soft RLIMIT_NOFILE to the hard limit (bounded by the kernel's
/// `fs.nr_open`, as setrlimit requires); if that fails, go on with the soft one.
pub fn raise_nofile() -> FdBudget {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return FdBudget {
            soft: 1024,
            raised_from: None,
            max_connections: connection_cap(1024),
        };
    };
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .unwrap_or(hard);
    let want = hard.min(nr_open);
    let (soft, raised_from) = if want > soft {
        match setrlimit(Resource::RLIMIT_NOFILE, want, hard) {
            Ok(()) => (want, Some(soft)),
            Err(e) => {
                tracing::warn!(soft, hard, error = %e, "cannot raise the file descriptor limit");
                (soft, None)
            }
        }
    } else {
        (soft, None)
    };
    FdBudget {
        soft,
        raised_from,
        max_connections: connection_cap(soft),
    }
}

/// Connections the HTTP server may hold under a soft descriptor limit of `soft`.
pub fn connection_cap(soft: u64) -> usize {
    let left = usize::try_from(soft.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX);
    left.clamp(MIN_CONNECTIONS, MAX_CONNECTIONS)
}

/// The open connections, for the cap and for eviction.
#[derive(Debug)]
pub struct Connections {
    cap: usize,
    table: Mutex<Table>,
    metrics: Arc<Metrics>,
}

#[derive(Debug, Default)]
struct Table {
    next_id: u64,
    open: HashMap<u64, Arc<ConnState>>,
}

/// One connection's state, shared by its task, its requests and the table.
#[derive(Debug)]
struct ConnState {
    /// Requests in progress (at most one with HTTP/1).
    busy: AtomicUsize,
    /// When the last request ended, or the connection was accepted.
    last_active: Mutex<Instant>,
    /// Wakes the connection's task to close it.
    evict: Notify,
}

impl ConnState {
    fn last_active(&self) -> MutexGuard<'_, Instant> {
        self.last_active.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When the connection becomes idle-expired, if it is idle now.
    fn idle_deadline(&self) -> Option<Instant> {
        (self.busy.load(Ordering::SeqCst) == 0).then(|| *self.last_active() + IDLE_TIMEOUT)
    }
}

/// A connection's place in the table, given up when dropped.
#[derive(Debug)]
struct Slot {
    id: u64,
    state: Arc<ConnState>,
    conns: Arc<Connections>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut table = self.conns.lock();
        table.open.remove(&self.id);
        self.conns
            .metrics
            .http_connections
            .set(table.open.len() as i64);
    }
}

/// A request in progress on a connection; its end makes the connection idle.
struct Busy(Arc<ConnState>);

impl Busy {
    fn new(state: &Arc<ConnState>) -> Busy {
        state.busy.fetch_add(1, Ordering::SeqCst);
        Busy(Arc::clone(state))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        *self.0.last_active() = Instant::now();
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Connections {
    /// A table of at most `cap` connections.
    pub fn new(cap: usize, metrics: Arc<Metrics>) -> Arc<Connections> {
        Arc::new(Connections {
            cap: cap.max(1),
            table: Mutex::new(Table::default()),
            metrics,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for a new connection: free, or made by evicting the connection idle the
    /// longest; `None` when every held connection has a request in progress.
    fn admit(self: &Arc<Self>) -> Option<Slot> {
        let mut table = self.lock();
        if table.open.len() >= self.cap {
            let oldest = table
                .open
                .iter()
                .filter(|(_, c)| c.busy.load(Ordering::SeqCst) == 0)
                .min_by_key(|(_, c)| *c.last_active())
                .map(|(&id, _)| id)?;
            if let Some(victim) = table.open.remove(&oldest) {
                // A stored permit: the task closes it even if it is not waiting yet.
                victim.evict.notify_one();
                self.metrics
                    .http_closed
                    .get_or_create(&label("reason", "evicted"))
                    .inc();
            }
        }
        let id = table.next_id;
        table.next_id += 1;
        let state = Arc::new(ConnState {
            busy: AtomicUsize::new(0),
            last_active: Mutex::new(Instant::now()),
            evict: Notify::new(),
        });
        table.open.insert(id, Arc::clone(&state));
        self.metrics.http_connections.set(table.open.len() as i64);
        Some(Slot {
            id,
            state,
            conns: Arc::clone(self),
        })
    }
}

/// Serve `app` on `listener` until `shutdown` resolves, then close (see the module
/// header).
pub async fn run(
    listener: TcpListener,
    app: Router,
    conns: Arc<Connections>,
    shutdown: impl Future<Output = ()>,
) {
    let (closing_tx, closing) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let metrics = Arc::clone(&conns.metrics);
    let mut last_accept_warning: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => match conns.admit() {
                    Some(slot) => {
                        let _ = stream.set_nodelay(true);
                        tasks.spawn(serve_connection(stream, app.clone(), slot, closing.clone()));
                    }
                    None => {
                        // Every connection is busy: this one is closed at once.
                        drop(stream);
                        metrics.http_closed.get_or_create(&label("reason", "full")).inc();
                    }
                },
                Err(e) => {
                    metrics.http_accept_errors.inc();
                    if last_accept_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                        tracing::warn!(error = %e, "the HTTP server cannot accept a connection");
                        last_accept_warning = Some(Instant::now());
                    }
                    // EMFILE and the like last until a descriptor is freed: do not spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    let _ = closing_tx.send(true);
    let finished = tokio::time::timeout(CLOSE_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        tracing::info!(
            connections = tasks.len(),
            "closing HTTP connections whose requests did not finish"
        );
    }
    tasks.shutdown().await;
}

/// Serve one connection that is already open, over any byte stream, exactly as [`run`]
/// serves each accepted TCP connection (a slot in `conns`, the header and idle timeouts),
/// until it ends. For harnesses that feed the request path without a socket: the `http`
/// fuzz target of `tests/fuzz` serves each input through an in-memory pipe.
pub async fn serve_stream<S>(stream: S, app: Router, conns: &Arc<Connections>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(slot) = conns.admit() else {
        return;
    };
    // The server never closes here: the sender lives until the connection ends.
    let (_closing_tx, closing) = watch::channel(false);
    serve_connection(stream, app, slot, closing).await;
}

/// One connection: HTTP/1 with the header timeout, closed when idle too long, when
/// evicted, or (gracefully) when the server closes.
async fn serve_connection<S>(stream: S, app: Router, slot: Slot, mut closing: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let tower = TowerToHyperService::new(app);
    let state = Arc::clone(&slot.state);
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let busy = Busy::new(&state);
        let answer = tower.call(req);
        async move {
            let r = answer.await;
            drop(busy);
            r
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // A client that shuts down its sending half after its request (`nc -N`, a
    // harness) still gets its answer; the timeouts bound how long that may take.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .half_close(true);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut graceful = false;
    loop {
        // While a request is in progress, look again one idle period later.
        let deadline = slot
            .state
            .idle_deadline()
            .unwrap_or_else(|| Instant::now() + IDLE_TIMEOUT);
        tokio::select! {
            r = conn.as_mut() => {
                match r {
                    Err(e) if e.is_timeout() => {
                        slot.conns.metrics.http_closed.get_or_create(&label("reason", "header_timeout")).inc();
                    }
                    Err(e) => tracing::debug!(error = %e, "HTTP connection ended with an error"),
                    Ok(()) => {}
                }
                return;
            }
            () = slot.state.evict.notified() => return,
            () = tokio::time::sleep_until(deadline), if !graceful => {
                if slot.state.idle_deadline().is_some_and(|d| d <= Instant::now()) {
                    slot.conns.metrics.http_closed.get_or_create(&label("reason", "idle")).inc();
                    return;
                }
            }
            _ = closing.changed(), if !graceful => {
                conn.as_mut().graceful_shutdown();
                graceful = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_the_agent_its_descriptors() {
        assert_eq!(connection_cap(1024), 768);
        assert_eq!(connection_cap(1_048_576), MAX_CONNECTIONS);
        assert_eq!(connection_cap(100), MIN_CONNECTIONS);
        assert_eq!(connection_cap(0), MIN_CONNECTIONS);
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let budget = raise_nofile();
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(budget.soft, soft);
        let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(soft, hard.min(nr_open));
        assert_eq!(budget.max_connections, connection_cap(soft));
    }

    #[tokio::test]
    async fn a_full_table_evicts_the_connection_idle_the_longest() {
        let conns = Connections::new(2, Arc::new(Metrics::new()));
        let a = conns.admit().unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let b = conns.admit().unwrap();
        // `b` is busy; `a`, idle the longest, makes room.
        let busy_b = Busy::new(&b.state);
        let c = conns.admit().unwrap();
        tokio::time::timeout(Duration::from_secs(1), a.state.evict.notified())
            .await
            .expect("the oldest idle connection is told to close");
        drop(a);
        assert_eq!(conns.lock().open.len(), 2);
        // `c` busy too: nothing idle to evict, the next is refused.
        let busy_c = Busy::new(&c.state);
        assert!(conns.admit().is_none());
        drop(busy_c);
        assert!(
            c.state.idle_deadline().is_some(),
            "a request's end makes it idle"
        );
        let d = conns.admit().unwrap();
        assert!(b.state.idle_deadline().is_none());
        drop((busy_b, b, c, d));
        assert!(conns.lock().open.is_empty());
        let text = conns.metrics.encode();
        assert!(
            text.contains("lifeboat_http_connections_closed_total{reason=\"evicted\"} 2"),
            "{text}"
        );
        assert!(text.contains("lifeboat_http_connections 0"), "{text}");
    }
}
