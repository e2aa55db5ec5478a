//! Local stand-ins for the services hooks and policies talk to, each an axum
//! app on a free loopback port (own thread and runtime, stopped on drop):
//! Jira Cloud (REST v3, Basic email:API-token, ADF comments) and Jira Data
//! Center (REST v2, Bearer PAT, plain comments), Slack (incoming webhooks
//! and `chat.postMessage`), and a signed-webhook receiver.
//!
//! They check what the public APIs document — paths, methods, auth headers,
//! JSON shapes — and answer with the services' own error shapes. Every fake
//! records its requests, can be slowed down (`set_delay`), taken down
//! (`set_down`: 503) or made to fail its next requests with any status and
//! `Retry-After` (`fail_next`).

mod github;
mod gitlab;
mod idp;
mod jira;
mod oauth;
mod slack;
mod webhook;

pub use github::*;
pub use gitlab::*;
pub use idp::*;
pub use jira::*;
pub use oauth::*;
pub use slack::*;
pub use webhook::*;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// One request a fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

/// A canned failure for the next request.
#[derive(Debug, Clone)]
struct Failure {
    status: u16,
    body: String,
    retry_after: Option<u64>,
}

#[derive(Default)]
struct Common {
    requests: Mutex<Vec<Recorded>>,
    delay: Mutex<Duration>,
    down: Mutex<bool>,
    failures: Mutex<VecDeque<Failure>>,
}

/// What every fake shares: the server, its log and its failure modes.
pub struct Fake {
    pub port: u16,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    common: Arc<Common>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl std::fmt::Debug for Fake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fake").field("url", &self.url).finish()
    }
}

type Handler = Arc<dyn Fn(&Recorded) -> Response + Send + Sync>;

impl Fake {
    fn start(handler: Handler) -> anyhow::Result<Fake> {
        let common = Arc::new(Common::default());
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = Router::new()
            .fallback(any(handle))
            .with_state((common.clone(), handler));
        std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await;
            });
        });
        Ok(Fake {
            port,
            url: format!("http://127.0.0.1:{port}"),
            common,
            _shutdown: tx,
        })
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.common
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Requests to a path.
    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// Delays every answer (a slow service).
    pub fn set_delay(&self, d: Duration) {
        if let Ok(mut x) = self.common.delay.lock() {
            *x = d;
        }
    }

    /// Answers every request 503 (an outage).
    pub fn set_down(&self, down: bool) {
        if let Ok(mut x) = self.common.down.lock() {
            *x = down;
        }
    }

    /// The next `n` requests get `status` with `body` (and `Retry-After`).
    pub fn fail_next(&self, n: usize, status: u16, body: &str, retry_after: Option<u64>) {
        if let Ok(mut f) = self.common.failures.lock() {
            for _ in 0..n {
                f.push_back(Failure {
                    status,
                    body: body.to_string(),
                    retry_after,
                });
            }
        }
    }
}

async fn handle(State((common, handler)): State<(Arc<Common>, Handler)>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 16 << 20)
        .await
        .unwrap_or_default();
    let rec = Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        headers: parts.headers,
        body,
    };
    if let Ok(mut r) = common.requests.lock() {
        r.push(rec.clone());
    }
    let delay = common.delay.lock().map(|d| *d).unwrap_or_default();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if common.down.lock().map(|d| *d).unwrap_or(false) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [("content-type", "text/html")],
            "<html><body><h1>503 Service Unavailable</h1></body></html>",
        )
            .into_response();
    }
    let failure = common.failures.lock().ok().and_then(|mut f| f.pop_front());
    if let Some(f) = failure {
        let ctype = if f.body.trim_start().starts_with('{') {
            "application/json"
        } else {
            "text/plain"
        };
        let mut resp = (
            StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            [("content-type", ctype)],
            f.body,
        )
            .into_response();
        if let Some(s) = f.retry_after {
            if let Ok(v) = s.to_string().parse() {
                resp.headers_mut().insert("retry-after", v);
            }
        }
        return resp;
    }
    handler(&rec)
}

fn json_response(status: u16, v: Value) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [("content-type", "application/json;charset=UTF-8")],
        v.to_string(),
    )
        .into_response()
}

fn jira_error(status: u16, messages: &[&str], errors: Value) -> Response {
    json_response(
        status,
        json!({ "errorMessages": messages, "errors": errors }),
    )
}
