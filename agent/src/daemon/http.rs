//! The agent's HTTP face: `/metrics` for Prometheus, and a small API beside it.
//!
//! - `GET /metrics`: the classic text format, or OpenMetrics when the scraper asks for it
//!   (`Accept: application/openmetrics-text`, as Prometheus does).
//! - `GET /health`: `ok` while the agent runs; 503 naming the task and its panic while a
//!   supervised task (the brain, a poller) is down.
//! - `GET /api/v1/status`: sources found, rules loaded, recent events (JSON).
//! - `GET /api/v1/checkpoints`: the images in this node's store (JSON).
//! - `POST /api/v1/checkpoint` with `{"pid": N, "after": "run"|"stop"|"kill"}` and
//!   `Authorization: Bearer TOKEN` (the token from the config file): checkpoint a
//!   process with its descendants now; answers when the image is written (200), or
//!   403 for a process the agent never checkpoints (PID 1, itself, its ancestors), 409
//!   when that process, or another API request, is being checkpointed. Disabled (403)
//!   without a token.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{FromRequest, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use lifeboat_engine::After;
use serde::Deserialize;

use super::Shared;
use super::actions::Requester;

/// The router over the agent's shared state.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/api/v1/status", get(status))
        .route("/api/v1/checkpoints", get(checkpoints))
        .route("/api/v1/checkpoint", post(checkpoint))
        .with_state(shared)
}

/// OpenMetrics for scrapers that ask for it (Prometheus does), the classic text format
/// for everyone else.
async fn metrics(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let body = s.metrics.encode();
    let wants_openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    if wants_openmetrics {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            super::metrics::to_classic_text(&body),
        )
            .into_response()
    }
}

/// `ok` while every supervised task runs; 503 with the reasons while one is down.
async fn health(State(s): State<Arc<Shared>>) -> Response {
    let down = s.tasks.down();
    if down.is_empty() {
        "ok\n".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy: {}\n", down.join("; ")),
        )
            .into_response()
    }
}

async fn status(State(s): State<Arc<Shared>>) -> Response {
    let mut doc = s.status.to_json();
    doc["tasks"] = s.tasks.to_json();
    Json(doc).into_response()
}

async fn checkpoints(State(s): State<Arc<Shared>>) -> Response {
    match s.checkpointer.store().entries() {
        Ok(entries) => Json(entries).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}\n")).into_response(),
    }
}

/// Body of `POST /api/v1/checkpoint`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    pid: i32,
    #[serde(default = "after_default", deserialize_with = "AfterDef::deserialize")]
    after: After,
}

/// `after` as the API spells it: the engine's [`After`] (which has no serde derives in
/// its core), in lowercase, without `term`.
#[derive(Deserialize)]
#[serde(remote = "After", rename_all = "lowercase")]
enum AfterDef {
    Run,
    Stop,
    #[serde(skip)]
    Term,
    Kill,
}

fn after_default() -> After {
    After::Run
}

/// How long the body of an authorized checkpoint request may take to arrive.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// `POST /api/v1/checkpoint`. The token is checked before the body is read (an
/// unauthorized client cannot hold the connection busy by sending it slowly), the body
/// must arrive within [`BODY_TIMEOUT`], and the checkpoint runs as a task of its own: a
/// client that goes away does not cancel it halfway.
async fn checkpoint(State(s): State<Arc<Shared>>, request: axum::extract::Request) -> Response {
    let headers = request.headers();
    let Some(token) = s.token() else {
        return (
            StatusCode::FORBIDDEN,
            "checkpoint requests are disabled: set token or token_file in [agent]\n",
        )
            .into_response();
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "missing or wrong bearer token\n",
        )
            .into_response();
    }
    let body = tokio::time::timeout(BODY_TIMEOUT, Json::<Request>::from_request(request, &s));
    let Json(req) = match body.await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
        Err(_) => {
            return (
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {}s\n",
                    BODY_TIMEOUT.as_secs()
                ),
            )
                .into_response();
        }
    };
    let Some(proc) = super::procs::read(req.pid) else {
        return (
            StatusCode::NOT_FOUND,
            format!("no process {} that can be checkpointed\n", req.pid),
        )
            .into_response();
    };
    let job = proc.job().map(str::to_owned);
    tracing::info!(pid = req.pid, "checkpoint requested through the API");
    let cp = Arc::clone(&s.checkpointer);
    let run =
        tokio::spawn(async move { cp.checkpoint(proc, job, req.after, Requester::Api).await });
    let outcome = match run.await {
        Ok(o) => o,
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the checkpoint task failed: {e}\n"),
            )
                .into_response();
        }
    };
    let code = match outcome.result {
        "ok" => StatusCode::OK,
        "skipped" => StatusCode::CONFLICT,
        "refused" => StatusCode::FORBIDDEN,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (code, Json(outcome)).into_response()
}

/// Compare secrets without leaking where they differ through timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::{After, Request, constant_time_eq};

    #[test]
    fn request_bodies() {
        let after = |body: &str| serde_json::from_str::<Request>(body).map(|r| r.after);
        assert_eq!(after(r#"{"pid": 1}"#).unwrap(), After::Run);
        assert_eq!(after(r#"{"pid": 1, "after": "run"}"#).unwrap(), After::Run);
        assert_eq!(
            after(r#"{"pid": 1, "after": "stop"}"#).unwrap(),
            After::Stop
        );
        assert_eq!(
            after(r#"{"pid": 1, "after": "kill"}"#).unwrap(),
            After::Kill
        );
        let err = after(r#"{"pid": 1, "after": "term"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("unknown variant `term`, expected one of `run`, `stop`, `kill`"),
            "{err}"
        );
        assert!(after(r#"{"pid": 1, "after": "Run"}"#).is_err());
        assert!(after(r#"{"pid": 1, "then": "run"}"#).is_err());
    }

    #[test]
    fn token_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
