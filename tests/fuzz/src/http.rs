//! Target `http`: the agent's HTTP request path, as `lifeboat agent` serves it.
//!
//! The input is the byte stream a client sends on one connection: one request, several
//! pipelined, or garbage. It goes through an in-memory pipe into
//! [`lifeboat::daemon::server::serve_stream`], the code that serves each accepted TCP
//! connection (hyper's HTTP/1 parser with the agent's header and idle timeouts, the
//! connection table), and the agent's router behind it: `/metrics` in both formats,
//! `/health`, `/api/v1/status`, `/api/v1/checkpoints`, and `POST /api/v1/checkpoint`
//! with its token check, body timeout and JSON body. The agent's state is
//! [`Shared::dry`]: a checkpoint request that gets through everything stops where a
//! process would be frozen, so any PID the fuzzer writes is safe. The answers are read
//! concurrently (a client that only writes would deadlock a server answering pipelined
//! requests) and must begin as an HTTP/1.1 (or 1.0, to a 1.0 request) status line.

use std::sync::{Arc, OnceLock};

use axum::Router;
use lifeboat::daemon::Shared;
use lifeboat::daemon::server::Connections;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest input the target looks at.
pub const MAX_INPUT: usize = 64 << 10;

/// The API token the harness's agent accepts (the dictionary and the seeds carry it, so
/// mutations reach the body's JSON).
pub const TOKEN: &str = "fuzz-token-0123456789abcdef";

/// The agent the inputs talk to, built once per process.
struct Harness {
    runtime: tokio::runtime::Runtime,
    app: Router,
    conns: Arc<Connections>,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        // One fixed store directory for every fuzzing process: a dry run never writes
        // into it, so nothing piles up over millions of executions.
        let store = std::env::temp_dir().join("lifeboat-fuzz-http");
        let shared = Shared::dry(&store, Some(TOKEN.to_owned()))
            .unwrap_or_else(|e| panic!("the harness's agent state: {e:#}"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("a tokio runtime: {e}"));
        Harness {
            runtime,
            conns: Connections::new(4, Arc::clone(&shared.metrics)),
            app: lifeboat::daemon::http::router(shared),
        }
    })
}

/// Runs one input.
pub fn run(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let answer = exchange(data, 16);
    let status_line = |v: &[u8]| answer.starts_with(v) || v.starts_with(&answer);
    assert!(
        status_line(b"HTTP/1.1 ") || status_line(b"HTTP/1.0 "),
        "the agent answered with something that is not HTTP/1: {:?}",
        String::from_utf8_lossy(&answer)
    );
}

/// Sends `data` on one connection to the harness's agent, then closes the sending half;
/// returns the first `keep` bytes of everything the agent answered before it closed.
pub fn exchange(data: &[u8], keep: usize) -> Vec<u8> {
    let h = harness();
    h.runtime.block_on(async {
        let (client, server) = tokio::io::duplex(16 << 10);
        let (mut rx, mut tx) = tokio::io::split(client);
        let serve = lifeboat::daemon::server::serve_stream(server, h.app.clone(), &h.conns);
        let send = async {
            // The server may close first (a request it cannot parse): a broken pipe here
            // is an answer, not a failure.
            let _ = tx.write_all(data).await;
            let _ = tx.shutdown().await;
        };
        let receive = async {
            let mut head = Vec::new();
            let mut buf = [0u8; 8192];
            while let Ok(n) = rx.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let room = keep.saturating_sub(head.len());
                head.extend_from_slice(&buf[..n.min(room)]);
            }
            head
        };
        let ((), (), head) = tokio::join!(serve, send, receive);
        head
    })
}
