//! stamp-control: the control plane of ticket-stamp. The control API
//! (`api`), its callers' identities (`auth`), the QA panel (`panel`), the
//! ticket lifecycle as store operations (`workflow`), promotion `policy`s
//! and `hooks`, one fan-out of every change (`changes`), share `links`, and
//! the background `jobs`: settling released tickets (`settle`), garbage
//! collection (`gc`) and the production history repository
//! (`history_repo`).
//!
//! [`Control::handle`] answers an `http::Request<Bytes>` without a socket;
//! the binary hands it what the data plane receives under `/__stamp/`. No
//! Pingora here.

pub mod api;
pub mod auth;
pub mod changes;
pub mod config;
pub mod diff;
pub mod gc;
pub mod history_repo;
pub mod hooks;
pub mod jobs;
pub mod links;
pub mod panel;
pub mod policy;
pub mod settle;
pub mod workflow;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use http::{header, Method, Request, Response};
use stamp_model::wire::{self, ErrorCode};
use stamp_store::SharedStore;
use tokio::sync::watch;

pub use changes::{Change, ChangeKind, Fanout};
pub use config::ControlConfig;

/// A response body: complete, or a stream of chunks (server-sent events).
pub enum Body {
    Full(Bytes),
    Stream(BoxStream<'static, Bytes>),
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Full(b) => f.debug_tuple("Full").field(&b.len()).finish(),
            Body::Stream(_) => f.write_str("Stream"),
        }
    }
}

impl Body {
    /// The bytes of a complete body (empty for a stream), for tests.
    pub fn full(&self) -> &[u8] {
        match self {
            Body::Full(b) => b,
            Body::Stream(_) => &[],
        }
    }
}

/// Why the control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("policies or hooks: {}", .0.join("; "))]
    Plugins(Vec<String>),
    #[error(transparent)]
    History(#[from] history_repo::HistoryError),
}

/// The origin as the settler fetches it.
#[derive(Debug, Clone)]
pub struct OriginAccess {
    /// `scheme://host:port`.
    pub url: String,
    /// Host header to send, when not the origin's own.
    pub host: Option<String>,
    pub verify_cert: bool,
}

/// The control plane, built from its configuration.
pub struct Control {
    cfg: Arc<ControlConfig>,
    store: SharedStore,
    api: api::Api,
    sessions: auth::Sessions,
    fanout: Arc<Fanout>,
    settler: Arc<settle::Settler>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("store", &self.store.describe())
            .finish()
    }
}

impl Control {
    /// Builds policies, hooks, the history repository and the settler.
    /// Does no network I/O.
    pub fn new(
        cfg: ControlConfig,
        store: SharedStore,
        origin: OriginAccess,
    ) -> Result<Control, ControlError> {
        let policies =
            Arc::new(policy::Engine::from_config(&cfg.policies.0).map_err(ControlError::Plugins)?);
        let hooks =
            Arc::new(hooks::Dispatcher::from_config(&cfg.hooks.0).map_err(ControlError::Plugins)?);
        let history = match &cfg.history_repo {
            Some(path) => Some(Arc::new(history_repo::HistoryRepo::open(path)?)),
            None => None,
        };
        let settler = Arc::new(settle::Settler::new(
            store.clone(),
            origin.url,
            origin.host,
            origin.verify_cert,
            cfg.settle_third_version,
        ));
        let signer = cfg.preview.as_ref().map(|p| p.signer());
        let links = links::Links::new(&cfg.link_base(), signer);
        let fanout = Arc::new(Fanout::new(
            store.clone(),
            hooks,
            history,
            Some(settler.clone()),
            links.clone(),
        ));
        let sessions = auth::Sessions::new(
            cfg.preview.as_ref().map(|p| p.secret.as_str()),
            Duration::from_secs(8 * 3600),
        );
        let cfg = Arc::new(cfg);
        let api = api::Api {
            cfg: cfg.clone(),
            store: store.clone(),
            links,
            policies,
            fanout: fanout.clone(),
            proxy_base: format!("http://127.0.0.1:{}", cfg.listen.port()),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .build()
                .unwrap_or_default(),
        };
        Ok(Control {
            cfg,
            store,
            api,
            sessions,
            fanout,
            settler,
        })
    }

    pub fn config(&self) -> &ControlConfig {
        &self.cfg
    }

    pub fn fanout(&self) -> &Arc<Fanout> {
        &self.fanout
    }

    /// Starts the hooks' delivery workers on `rt`.
    pub fn start_hooks(&self, rt: &tokio::runtime::Handle) {
        self.fanout.hooks().start_on(rt);
    }

    /// Waits until queued hook deliveries are done, at most `limit`.
    pub async fn drain_hooks(&self, limit: Duration) -> bool {
        self.fanout.hooks().idle(limit).await
    }

    /// Runs the settler and the collector until `shutdown` turns true.
    pub async fn run_jobs(&self, shutdown: watch::Receiver<bool>) {
        let settle = jobs::settle_loop(
            self.settler.clone(),
            self.fanout.clone(),
            self.cfg.settle_interval,
            shutdown.clone(),
        );
        match &self.cfg.gc {
            Some(gc) => {
                let policy = gc::Policy {
                    grace: gc.grace,
                    closed_retention: gc.closed_retention,
                };
                let collect = jobs::gc_loop(
                    self.store.clone(),
                    self.fanout.clone(),
                    policy,
                    gc.every,
                    shutdown,
                );
                tokio::join!(settle, collect);
            }
            None => settle.await,
        }
    }

    /// The largest request body a request may send.
    pub fn body_limit(&self, head: &http::request::Parts) -> usize {
        let path = head.uri.path();
        if head.method == Method::PUT && path.starts_with(wire::API_PREFIX) {
            usize::try_from(self.cfg.api.max_module_bytes).unwrap_or(usize::MAX)
        } else if path == "/__stamp/session" {
            panel::MAX_SIGN_IN
        } else {
            wire::MAX_JSON
        }
    }

    /// Answers one request under `/__stamp/` (besides health and metrics).
    pub async fn handle(&self, req: Request<Bytes>) -> Response<Body> {
        let path = req.uri().path().to_string();
        if let Some(asset) = panel::asset(&path) {
            return asset;
        }
        if let Some(why) = foreign_write(&req, &self.cfg.link_base()) {
            return error(403, ErrorCode::Forbidden, why);
        }
        if path == "/__stamp/session" {
            if req.method() == Method::POST {
                if let Some(refusal) = not_json(&req) {
                    return refusal;
                }
            }
            return panel::session_endpoint(&req, &self.cfg.tokens, &self.sessions, self.cfg.tls);
        }
        let principal = || {
            panel::principal(
                req.method(),
                req.headers(),
                &self.cfg.tokens,
                &self.sessions,
            )
        };
        let refused = |(status, message): panel::Refused| {
            let code = if status == 401 {
                ErrorCode::Unauthorized
            } else {
                ErrorCode::Forbidden
            };
            error(status, code, message)
        };
        if path == wire::EVENTS_PATH {
            return match principal() {
                Ok(_) => panel::events(&self.store),
                Err(r) => refused(r),
            };
        }
        if path.starts_with(wire::API_PREFIX) {
            let p = match principal() {
                Ok(p) => p,
                Err(r) => return refused(r),
            };
            if req.method() == Method::POST {
                if let Some(refusal) = not_json(&req) {
                    return refusal;
                }
            }
            return match self.api.handle(&req, &p).await {
                Ok((status, value)) => panel::json_reply(status, value, None),
                Err(e) => e.response(),
            };
        }
        error(
            404,
            ErrorCode::NotFound,
            "no such endpoint under /__stamp/ (see /__stamp/health, /__stamp/metrics)",
        )
    }
}

/// An error response in the model's envelope.
pub fn error(status: u16, code: ErrorCode, message: impl Into<String>) -> Response<Body> {
    api::ApiError::new(status, code, message).response()
}

/// A write that another site made a browser send (CSRF), in any auth mode:
/// `Sec-Fetch-Site: cross-site`, or an `Origin` that is neither this
/// proxy's public base nor the request's own host.
fn foreign_write(req: &Request<Bytes>, link_base: &str) -> Option<String> {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return None;
    }
    let hs = req.headers();
    let fetch_site = hs.get("sec-fetch-site").map(|v| v.as_bytes());
    if fetch_site.is_some_and(|v| v.eq_ignore_ascii_case(b"cross-site")) {
        return Some("writes from another site are refused (Sec-Fetch-Site: cross-site)".into());
    }
    let origin = hs.get(header::ORIGIN)?;
    let origin = origin.to_str().unwrap_or("null");
    let host = hs.get(header::HOST).and_then(|h| h.to_str().ok());
    let same = origin == link_base
        || host.is_some_and(|h| {
            origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                == Some(h)
        });
    (!same).then(|| format!("writes from another site are refused (Origin: {origin})"))
}

/// A POST with a body that is not `application/json` (a form or `text/plain`
/// POST is what a cross-site page can send without a preflight).
fn not_json(req: &Request<Bytes>) -> Option<Response<Body>> {
    if req.body().iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    (!json).then(|| {
        error(
            415,
            ErrorCode::UnsupportedMediaType,
            "send the body as Content-Type: application/json",
        )
    })
}

/// Registers the control plane's metrics, so a scrape lists them from the start.
pub fn register_metrics() {
    gc::register_metrics();
}
