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

// ---------------------------------------------------------------- Jira

/// Which Jira the fake is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JiraKind {
    /// Cloud: `/rest/api/3` (and 2), Basic `email:api_token`.
    Cloud,
    /// Data Center: `/rest/api/2` only, Bearer personal access token.
    DataCenter,
}

#[derive(Debug, Clone)]
struct Issue {
    status: String,
    /// (id, name, target status)
    transitions: Vec<(String, String, String)>,
    comments: Vec<Value>,
}

#[derive(Default)]
struct JiraData {
    issues: HashMap<String, Issue>,
    forbidden: HashSet<String>,
    /// Comment posts still to answer 503.
    comment_failures: usize,
}

/// A fake Jira site.
pub struct FakeJira {
    pub fake: Fake,
    pub kind: JiraKind,
    data: Arc<Mutex<JiraData>>,
}

impl std::fmt::Debug for FakeJira {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeJira")
            .field("url", &self.fake.url)
            .finish()
    }
}

impl FakeJira {
    /// Jira Cloud accepting `Basic base64(email:token)`.
    pub fn cloud(email: &str, token: &str) -> anyhow::Result<FakeJira> {
        let auth = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{email}:{token}"))
        );
        Self::start(JiraKind::Cloud, auth)
    }

    /// Jira Data Center accepting `Bearer <pat>`.
    pub fn datacenter(pat: &str) -> anyhow::Result<FakeJira> {
        Self::start(JiraKind::DataCenter, format!("Bearer {pat}"))
    }

    fn start(kind: JiraKind, auth: String) -> anyhow::Result<FakeJira> {
        let data = Arc::new(Mutex::new(JiraData::default()));
        let d = data.clone();
        let fake = Fake::start(Arc::new(move |r: &Recorded| jira(kind, &auth, &d, r)))?;
        Ok(FakeJira { fake, kind, data })
    }

    pub fn url(&self) -> &str {
        &self.fake.url
    }

    /// Creates (or replaces) an issue in `status` with the transitions
    /// available from it: `(id, name, target status)`.
    pub fn issue(&self, key: &str, status: &str, transitions: &[(&str, &str, &str)]) {
        if let Ok(mut d) = self.data.lock() {
            d.issues.insert(
                key.to_string(),
                Issue {
                    status: status.to_string(),
                    transitions: transitions
                        .iter()
                        .map(|(i, n, t)| (i.to_string(), n.to_string(), t.to_string()))
                        .collect(),
                    comments: Vec::new(),
                },
            );
        }
    }

    /// The next `n` comment posts answer 503 (after the transition worked).
    pub fn fail_comments(&self, n: usize) {
        if let Ok(mut d) = self.data.lock() {
            d.comment_failures = n;
        }
    }

    /// The account may not see this issue (403).
    pub fn forbid(&self, key: &str) {
        if let Ok(mut d) = self.data.lock() {
            d.forbidden.insert(key.to_string());
        }
    }

    pub fn status(&self, key: &str) -> Option<String> {
        self.data
            .lock()
            .ok()?
            .issues
            .get(key)
            .map(|i| i.status.clone())
    }

    /// Comment bodies, as posted (`{"body": …}`).
    pub fn comments(&self, key: &str) -> Vec<Value> {
        self.data
            .lock()
            .ok()
            .and_then(|d| d.issues.get(key).map(|i| i.comments.clone()))
            .unwrap_or_default()
    }
}

fn jira(kind: JiraKind, auth: &str, data: &Mutex<JiraData>, r: &Recorded) -> Response {
    let segs: Vec<&str> = r.path.trim_start_matches('/').split('/').collect();
    let (version, rest) = match segs.as_slice() {
        ["rest", "api", v, rest @ ..] => (*v, rest),
        _ => return (StatusCode::NOT_FOUND, "Not Found").into_response(),
    };
    let version_ok = match kind {
        JiraKind::Cloud => version == "3" || version == "2",
        JiraKind::DataCenter => version == "2",
    };
    if !version_ok {
        return (
            StatusCode::NOT_FOUND,
            [("content-type", "text/html")],
            "<html><body>Oops, you've found a dead link.</body></html>",
        )
            .into_response();
    }
    if r.header("authorization").as_deref() != Some(auth) {
        return jira_error(
            401,
            &["You are not authenticated. Authentication required to perform this operation."],
            json!({}),
        );
    }
    let Ok(mut d) = data.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let (key, tail) = match rest {
        ["issue", key, tail @ ..] => (key.to_string(), tail),
        _ => return jira_error(404, &["Not found"], json!({})),
    };
    if d.forbidden.contains(&key) {
        return jira_error(
            403,
            &["You do not have the permission to see the specified issue."],
            json!({}),
        );
    }
    let Some(issue) = d.issues.get_mut(&key) else {
        return jira_error(
            404,
            &["Issue does not exist or you do not have permission to see it."],
            json!({}),
        );
    };
    let is_json = r
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/json"));
    match (r.method.as_str(), tail) {
        ("GET", []) => json_response(
            200,
            json!({
                "id": "10001",
                "key": key,
                "self": format!("/rest/api/{version}/issue/10001"),
                "fields": {"status": {"name": issue.status, "id": "3",
                    "statusCategory": {"key": "indeterminate", "name": "In Progress"}}},
            }),
        ),
        ("GET", ["transitions"]) => json_response(
            200,
            json!({
                "expand": "transitions",
                "transitions": issue.transitions.iter().map(|(id, name, to)| json!({
                    "id": id, "name": name, "hasScreen": false, "isGlobal": false,
                    "isInitial": false, "isConditional": false,
                    "to": {"name": to, "id": "1", "statusCategory": {"key": "indeterminate"}},
                })).collect::<Vec<_>>(),
            }),
        ),
        ("POST", ["transitions"]) => {
            if !is_json {
                return StatusCode::UNSUPPORTED_MEDIA_TYPE.into_response();
            }
            let body = r.json();
            let Some(id) = body.pointer("/transition/id").and_then(Value::as_str) else {
                return jira_error(
                    400,
                    &[],
                    json!({"transition": "Transition id is required."}),
                );
            };
            match issue.transitions.iter().find(|(tid, _, _)| tid == id) {
                Some((_, _, to)) => {
                    issue.status = to.clone();
                    StatusCode::NO_CONTENT.into_response()
                }
                None => jira_error(
                    400,
                    &[&format!(
                        "Transition id '{id}' is not valid for this issue."
                    )],
                    json!({}),
                ),
            }
        }
        ("POST", ["comment"]) => {
            if !is_json {
                return StatusCode::UNSUPPORTED_MEDIA_TYPE.into_response();
            }
            if d.comment_failures > 0 {
                d.comment_failures -= 1;
                return jira_error(503, &["Service temporarily unavailable"], json!({}));
            }
            let Some(issue) = d.issues.get_mut(&key) else {
                return StatusCode::NOT_FOUND.into_response();
            };
            let body = r.json();
            let valid = if version == "3" {
                // Atlassian Document Format: a `doc`, version 1, with content.
                body["body"]["type"] == "doc"
                    && body["body"]["version"] == 1
                    && body["body"]["content"]
                        .as_array()
                        .is_some_and(|c| !c.is_empty() && c.iter().all(|n| n["type"].is_string()))
            } else {
                body["body"].as_str().is_some_and(|s| !s.trim().is_empty())
            };
            if !valid {
                return jira_error(400, &[], json!({"comment": "Comment body is not valid!"}));
            }
            issue.comments.push(body.clone());
            json_response(
                201,
                json!({"id": format!("{}", 10000 + issue.comments.len()), "body": body["body"]}),
            )
        }
        (_, []) | (_, ["transitions"]) | (_, ["comment"]) => {
            StatusCode::METHOD_NOT_ALLOWED.into_response()
        }
        _ => jira_error(404, &["Not found"], json!({})),
    }
}

// ---------------------------------------------------------------- Slack

/// The incoming webhook path the fake serves.
pub const SLACK_HOOK_PATH: &str = "/services/T0000/B0000/XXXXXXXXXXXXXXXXXXXXXXXX";

#[derive(Default)]
struct SlackData {
    messages: Vec<Value>,
    archived: bool,
}

/// A fake Slack: incoming webhooks at [`SLACK_HOOK_PATH`] and the Web API's
/// `POST /api/chat.postMessage` for `bot_token` and `channels`.
pub struct FakeSlack {
    pub fake: Fake,
    data: Arc<Mutex<SlackData>>,
}

impl std::fmt::Debug for FakeSlack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeSlack")
            .field("url", &self.fake.url)
            .finish()
    }
}

impl FakeSlack {
    pub fn start(bot_token: &str, channels: &[&str]) -> anyhow::Result<FakeSlack> {
        let data = Arc::new(Mutex::new(SlackData::default()));
        let d = data.clone();
        let token = format!("Bearer {bot_token}");
        let channels: Vec<String> = channels.iter().map(|c| c.to_string()).collect();
        let fake = Fake::start(Arc::new(move |r: &Recorded| {
            slack(&token, &channels, &d, r)
        }))?;
        Ok(FakeSlack { fake, data })
    }

    /// The incoming webhook URL.
    pub fn webhook_url(&self) -> String {
        format!("{}{SLACK_HOOK_PATH}", self.fake.url)
    }

    /// The Web API base (`api_url`).
    pub fn api_url(&self) -> String {
        format!("{}/api", self.fake.url)
    }

    /// Messages accepted (webhook payloads and postMessage bodies).
    pub fn messages(&self) -> Vec<Value> {
        self.data
            .lock()
            .map(|d| d.messages.clone())
            .unwrap_or_default()
    }

    /// The webhook's channel was archived (410 `channel_is_archived`).
    pub fn archive(&self) {
        if let Ok(mut d) = self.data.lock() {
            d.archived = true;
        }
    }
}

fn slack_text(status: u16, text: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        [("content-type", "text/html")],
        text.to_string(),
    )
        .into_response()
}

/// `text` or `blocks` present, blocks a list of typed objects.
fn slack_payload_problem(v: &Value) -> Option<&'static str> {
    let has_text = v["text"].as_str().is_some_and(|t| !t.is_empty());
    match &v["blocks"] {
        Value::Null if !has_text => Some("no_text"),
        Value::Null => None,
        Value::Array(b) if b.iter().all(|x| x["type"].is_string()) => {
            if b.is_empty() && !has_text {
                Some("no_text")
            } else {
                None
            }
        }
        _ => Some("invalid_blocks"),
    }
}

fn slack(token: &str, channels: &[String], data: &Mutex<SlackData>, r: &Recorded) -> Response {
    let Ok(mut d) = data.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    if r.path.starts_with("/services/") {
        if r.path != SLACK_HOOK_PATH {
            return slack_text(404, "no_service");
        }
        if r.method != "POST" {
            return slack_text(405, "invalid_method");
        }
        if d.archived {
            return slack_text(410, "channel_is_archived");
        }
        let Ok(v) = serde_json::from_slice::<Value>(&r.body) else {
            return slack_text(400, "invalid_payload");
        };
        if let Some(p) = slack_payload_problem(&v) {
            return slack_text(400, p);
        }
        d.messages.push(v);
        return slack_text(200, "ok");
    }
    if r.path == "/api/chat.postMessage" {
        if r.method != "POST" {
            return json_response(200, json!({"ok": false, "error": "invalid_request"}));
        }
        let fail = |e: &str| json_response(200, json!({"ok": false, "error": e}));
        match r.header("authorization") {
            None => return fail("not_authed"),
            Some(a) if a != token => return fail("invalid_auth"),
            _ => {}
        }
        if !r
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/json"))
        {
            return fail("invalid_form_data");
        }
        let Ok(v) = serde_json::from_slice::<Value>(&r.body) else {
            return fail("invalid_json");
        };
        let Some(channel) = v["channel"].as_str() else {
            return fail("channel_not_found");
        };
        if !channels.iter().any(|c| c == channel) {
            return fail("channel_not_found");
        }
        if let Some(p) = slack_payload_problem(&v) {
            return fail(p);
        }
        d.messages.push(v.clone());
        return json_response(
            200,
            json!({"ok": true, "channel": channel, "ts": "1503435956.000247",
                   "message": {"text": v["text"], "type": "message", "subtype": "bot_message"}}),
        );
    }
    json_response(404, json!({"ok": false, "error": "unknown_method"}))
}

// ---------------------------------------------------------------- webhooks

/// A receiver of signed webhooks: accepts `POST` with a JSON body whose
/// `x-stamp-signature` is `sha256=<hex HMAC-SHA256(secret, body)>`; answers
/// 401 to a bad or missing signature.
pub struct FakeReceiver {
    pub fake: Fake,
    deliveries: Arc<Mutex<Vec<Value>>>,
}

impl std::fmt::Debug for FakeReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeReceiver")
            .field("url", &self.fake.url)
            .finish()
    }
}

impl FakeReceiver {
    pub fn start(secret: &str) -> anyhow::Result<FakeReceiver> {
        let deliveries = Arc::new(Mutex::new(Vec::new()));
        let d = deliveries.clone();
        let secret = secret.as_bytes().to_vec();
        let fake = Fake::start(Arc::new(move |r: &Recorded| {
            if r.method != "POST" {
                return StatusCode::METHOD_NOT_ALLOWED.into_response();
            }
            if !r
                .header("content-type")
                .is_some_and(|c| c.starts_with("application/json"))
            {
                return StatusCode::UNSUPPORTED_MEDIA_TYPE.into_response();
            }
            let expected = format!("sha256={}", hex::encode(hmac_sha256(&secret, &r.body)));
            if r.header("x-stamp-signature").as_deref() != Some(expected.as_str()) {
                return (StatusCode::UNAUTHORIZED, "bad signature").into_response();
            }
            let Ok(v) = serde_json::from_slice::<Value>(&r.body) else {
                return (StatusCode::BAD_REQUEST, "not JSON").into_response();
            };
            if let Ok(mut l) = d.lock() {
                l.push(v);
            }
            StatusCode::NO_CONTENT.into_response()
        }))?;
        Ok(FakeReceiver { fake, deliveries })
    }

    /// `http://127.0.0.1:PORT/hook`
    pub fn url(&self) -> String {
        format!("{}/hook", self.fake.url)
    }

    /// Verified deliveries, in arrival order.
    pub fn deliveries(&self) -> Vec<Value> {
        self.deliveries
            .lock()
            .map(|d| d.clone())
            .unwrap_or_default()
    }
}

/// HMAC-SHA256 (RFC 2104), written out so the receiver checks the proxy's
/// signature independently of the proxy's HMAC code.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

// ---------------------------------------------------------------- GitHub

#[derive(Debug, Clone)]
struct Deployment {
    id: u64,
    git_ref: String,
    environment: String,
    statuses: Vec<String>,
}

#[derive(Default)]
struct GitHubData {
    repo: String,
    token: String,
    /// Installation tokens issued to the app.
    issued: HashSet<String>,
    /// (app id, installation id, public key PEM)
    app: Option<(u64, u64, String)>,
    /// Branches and commits that exist.
    refs: HashSet<String>,
    /// (number, head branch, head sha)
    pulls: Vec<(u64, String, String)>,
    /// issue number → (id, body)
    comments: HashMap<u64, Vec<(u64, String)>>,
    /// pull number → (reviewer, state)
    reviews: HashMap<u64, Vec<(String, String)>>,
    /// sha → (name, status, conclusion)
    check_runs: HashMap<String, Vec<(String, String, Option<String>)>>,
    /// sha → (context, state, description)
    statuses: HashMap<String, Vec<(String, String, String)>>,
    deployments: Vec<Deployment>,
    next_id: u64,
    rate_limited: bool,
}

/// A fake GitHub REST API (api.github.com paths, `Bearer` tokens or a
/// GitHub App's RS256 JWT for installation tokens, `Link` pagination,
/// GitHub's error shapes: 401 Bad credentials, 403 rate limit with
/// `x-ratelimit-*`, 404 Not Found, 422 Validation Failed).
pub struct FakeGitHub {
    pub fake: Fake,
    data: Arc<Mutex<GitHubData>>,
}

impl std::fmt::Debug for FakeGitHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeGitHub")
            .field("url", &self.fake.url)
            .finish()
    }
}

fn gh_error(status: u16, message: &str) -> Response {
    json_response(
        status,
        json!({ "message": message, "documentation_url": "https://docs.github.com/rest" }),
    )
}

fn gh_invalid(resource: &str, message: &str) -> Response {
    json_response(
        422,
        json!({
            "message": "Validation Failed",
            "errors": [{ "resource": resource, "code": "custom", "message": message }],
            "documentation_url": "https://docs.github.com/rest",
        }),
    )
}

fn query_param(query: &str, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// One page of `items` with GitHub's `Link` header (`per_page`, `page`).
fn gh_page(r: &Recorded, items: Vec<Value>, wrap: Option<&str>) -> Response {
    let per_page = query_param(&r.query, "per_page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let page = query_param(&r.query, "page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let total = items.len();
    let pages = total.div_ceil(per_page).max(1);
    let slice: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    let body = match wrap {
        Some(field) => json!({ "total_count": total, field: slice }),
        None => Value::Array(slice),
    };
    let mut resp = json_response(200, body);
    if pages > 1 {
        let host = r.header("host").unwrap_or_default();
        let others: String = url::form_urlencoded::parse(r.query.as_bytes())
            .filter(|(k, _)| k != "page")
            .fold(
                url::form_urlencoded::Serializer::new(String::new()),
                |mut s, (k, v)| {
                    s.append_pair(&k, &v);
                    s
                },
            )
            .finish();
        let link = |p: usize, rel: &str| {
            format!("<http://{host}{}?{others}&page={p}>; rel=\"{rel}\"", r.path)
        };
        let mut links = Vec::new();
        if page < pages {
            links.push(link(page + 1, "next"));
            links.push(link(pages, "last"));
        }
        if page > 1 {
            links.push(link(page - 1, "prev"));
            links.push(link(1, "first"));
        }
        if let Ok(v) = links.join(", ").parse() {
            resp.headers_mut().insert("link", v);
        }
    }
    resp
}

impl FakeGitHub {
    /// `owner/name`, accepting `Bearer <token>`.
    pub fn start(repo: &str, token: &str) -> anyhow::Result<FakeGitHub> {
        let data = Arc::new(Mutex::new(GitHubData {
            repo: repo.to_string(),
            token: token.to_string(),
            next_id: 1000,
            ..GitHubData::default()
        }));
        let d = data.clone();
        let fake = Fake::start(Arc::new(move |r: &Recorded| github(&d, r)))?;
        Ok(FakeGitHub { fake, data })
    }

    pub fn url(&self) -> &str {
        &self.fake.url
    }

    fn with<T>(&self, f: impl FnOnce(&mut GitHubData) -> T) -> Option<T> {
        self.data.lock().ok().map(|mut d| f(&mut d))
    }

    /// A GitHub App that may buy installation tokens with a JWT signed by
    /// the private key of `public_pem`.
    pub fn app(&self, app_id: u64, installation_id: u64, public_pem: &str) {
        self.with(|d| d.app = Some((app_id, installation_id, public_pem.to_string())));
    }

    /// An open pull request of `branch` at `sha`; returns its number.
    pub fn pull(&self, branch: &str, sha: &str) -> u64 {
        self.with(|d| {
            d.next_id += 1;
            let n = d.pulls.len() as u64 + 1;
            d.pulls.push((n, branch.to_string(), sha.to_string()));
            d.refs.insert(branch.to_string());
            d.refs.insert(sha.to_string());
            n
        })
        .unwrap_or(0)
    }

    /// Someone else's comments on an issue (to page through).
    pub fn foreign_comments(&self, number: u64, n: usize) {
        self.with(|d| {
            for i in 0..n {
                d.next_id += 1;
                let id = d.next_id;
                d.comments
                    .entry(number)
                    .or_default()
                    .push((id, format!("looks good {i}")));
            }
        });
    }

    pub fn review(&self, number: u64, user: &str, state: &str) {
        self.with(|d| {
            d.reviews
                .entry(number)
                .or_default()
                .push((user.to_string(), state.to_string()))
        });
    }

    pub fn check_run(&self, sha: &str, name: &str, status: &str, conclusion: Option<&str>) {
        self.with(|d| {
            let runs = d.check_runs.entry(sha.to_string()).or_default();
            runs.retain(|(n, ..)| n != name);
            runs.push((
                name.to_string(),
                status.to_string(),
                conclusion.map(str::to_string),
            ));
        });
    }

    /// Every API call answers 403 with a spent rate limit.
    pub fn set_rate_limited(&self, on: bool) {
        self.with(|d| d.rate_limited = on);
    }

    /// The bodies of the comments on an issue, oldest first.
    pub fn comments(&self, number: u64) -> Vec<String> {
        self.with(|d| {
            d.comments
                .get(&number)
                .map(|c| c.iter().map(|(_, b)| b.clone()).collect())
                .unwrap_or_default()
        })
        .unwrap_or_default()
    }

    /// (environment, ref, statuses) of every deployment, oldest first.
    pub fn deployments(&self) -> Vec<(String, String, Vec<String>)> {
        self.with(|d| {
            d.deployments
                .iter()
                .map(|x| (x.environment.clone(), x.git_ref.clone(), x.statuses.clone()))
                .collect()
        })
        .unwrap_or_default()
    }

    /// (context, state, description) of the commit statuses on `sha`.
    pub fn statuses(&self, sha: &str) -> Vec<(String, String, String)> {
        self.with(|d| d.statuses.get(sha).cloned().unwrap_or_default())
            .unwrap_or_default()
    }
}

fn github(data: &Arc<Mutex<GitHubData>>, r: &Recorded) -> Response {
    let Ok(mut d) = data.lock() else {
        return gh_error(500, "fake state poisoned");
    };
    if r.header("user-agent").is_none_or(|u| u.is_empty()) {
        return gh_error(403, "Request forbidden by administrative rules. Please make sure your request has a User-Agent header");
    }
    if r.header("x-github-api-version")
        .is_some_and(|v| v != "2022-11-28")
    {
        return gh_error(400, "Unsupported 'X-GitHub-Api-Version'");
    }
    let bearer = r
        .header("authorization")
        .and_then(|a| a.strip_prefix("Bearer ").map(str::to_string))
        .unwrap_or_default();
    let segments: Vec<&str> = r.path.trim_start_matches('/').split('/').collect();

    // A GitHub App buys an installation token with its JWT.
    if let ["app", "installations", id, "access_tokens"] = segments.as_slice() {
        let Some((app_id, installation, public)) = d.app.clone() else {
            return gh_error(404, "Not Found");
        };
        if r.method != "POST" {
            return gh_error(404, "Not Found");
        }
        let Ok(key) = jsonwebtoken::DecodingKey::from_rsa_pem(public.as_bytes()) else {
            return gh_error(500, "fake: bad public key");
        };
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_required_spec_claims(&["exp", "iat", "iss"]);
        validation.set_issuer(&[app_id.to_string()]);
        let Ok(claims) = jsonwebtoken::decode::<Value>(&bearer, &key, &validation) else {
            return gh_error(401, "A JSON web token could not be decoded");
        };
        let (iat, exp) = (claims.claims["iat"].as_u64(), claims.claims["exp"].as_u64());
        if !matches!((iat, exp), (Some(i), Some(e)) if e > i && e - i <= 600) {
            return gh_error(
                401,
                "'Expiration time' claim ('exp') is too far in the future",
            );
        }
        if *id != installation.to_string() {
            return gh_error(404, "Not Found");
        }
        d.next_id += 1;
        let token = format!("ghs_fake{}", d.next_id);
        d.issued.insert(token.clone());
        return json_response(
            201,
            json!({ "token": token, "expires_at": "2099-01-01T00:00:00Z", "permissions": {"pull_requests": "write"} }),
        );
    }

    if bearer.is_empty() || (bearer != d.token && !d.issued.contains(&bearer)) {
        return gh_error(401, "Bad credentials");
    }
    if d.rate_limited {
        let mut resp = gh_error(403, "API rate limit exceeded for installation ID 1.");
        let reset = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |t| t.as_secs())
            + 3600;
        for (k, v) in [
            ("x-ratelimit-limit", "5000".to_string()),
            ("x-ratelimit-remaining", "0".to_string()),
            ("x-ratelimit-reset", reset.to_string()),
        ] {
            if let Ok(v) = v.parse() {
                resp.headers_mut().insert(k, v);
            }
        }
        return resp;
    }
    let repo: Vec<&str> = d.repo.split('/').collect();
    let rest = match segments.as_slice() {
        ["repos", owner, name, rest @ ..] if [*owner, *name] == repo[..] => rest.to_vec(),
        _ => return gh_error(404, "Not Found"),
    };
    let body = r.json();
    let method = r.method.as_str();
    let number = |s: &str| s.parse::<u64>().ok();
    match (method, rest.as_slice()) {
        ("GET", ["pulls"]) => {
            let head = query_param(&r.query, "head");
            let owner = repo[0];
            let items = d
                .pulls
                .iter()
                .filter(|(_, branch, _)| head.as_deref().is_none_or(|h| h == format!("{owner}:{branch}")))
                .map(|(n, branch, sha)| json!({ "number": n, "state": "open", "head": { "ref": branch, "sha": sha } }))
                .collect();
            gh_page(r, items, None)
        }
        ("GET", ["issues", n, "comments"]) => {
            let Some(n) = number(n).filter(|n| d.pulls.iter().any(|p| p.0 == *n)) else {
                return gh_error(404, "Not Found");
            };
            let items = d
                .comments
                .get(&n)
                .map(|c| c.iter().map(|(id, b)| json!({ "id": id, "body": b, "user": { "login": "someone" } })).collect())
                .unwrap_or_default();
            gh_page(r, items, None)
        }
        ("POST", ["issues", n, "comments"]) => {
            let Some(n) = number(n).filter(|n| d.pulls.iter().any(|p| p.0 == *n)) else {
                return gh_error(404, "Not Found");
            };
            let Some(text) = body["body"].as_str() else {
                return gh_invalid("IssueComment", "body is missing");
            };
            d.next_id += 1;
            let id = d.next_id;
            d.comments
                .entry(n)
                .or_default()
                .push((id, text.to_string()));
            json_response(201, json!({ "id": id, "body": text }))
        }
        ("PATCH", ["issues", "comments", id]) => {
            let Some(text) = body["body"].as_str() else {
                return gh_invalid("IssueComment", "body is missing");
            };
            let Some(id) = number(id) else {
                return gh_error(404, "Not Found");
            };
            for list in d.comments.values_mut() {
                if let Some(c) = list.iter_mut().find(|c| c.0 == id) {
                    c.1 = text.to_string();
                    return json_response(200, json!({ "id": id, "body": text }));
                }
            }
            gh_error(404, "Not Found")
        }
        ("GET", ["pulls", n, "reviews"]) => {
            let Some(n) = number(n).filter(|n| d.pulls.iter().any(|p| p.0 == *n)) else {
                return gh_error(404, "Not Found");
            };
            let items = d
                .reviews
                .get(&n)
                .map(|list| list.iter().enumerate().map(|(i, (u, s))| json!({ "id": i + 1, "user": { "login": u }, "state": s })).collect())
                .unwrap_or_default();
            gh_page(r, items, None)
        }
        ("GET", ["commits", sha, "check-runs"]) => {
            let items = d
                .check_runs
                .get(*sha)
                .map(|runs| {
                    runs.iter()
                        .map(|(n, s, c)| json!({ "name": n, "status": s, "conclusion": c }))
                        .collect()
                })
                .unwrap_or_default();
            gh_page(r, items, Some("check_runs"))
        }
        ("GET", ["commits", sha, "status"]) => {
            let list: Vec<Value> = d
                .statuses
                .get(*sha)
                .map(|s| s.iter().map(|(c, st, desc)| json!({ "context": c, "state": st, "description": desc })).collect())
                .unwrap_or_default();
            let state = if list.iter().all(|s| s["state"] == "success") {
                "success"
            } else {
                "pending"
            };
            json_response(200, json!({ "state": state, "statuses": list }))
        }
        ("POST", ["statuses", sha]) => {
            if !d.refs.contains(*sha) {
                return gh_invalid("Status", &format!("No commit found for SHA: {sha}"));
            }
            let state = body["state"].as_str().unwrap_or("");
            if !["error", "failure", "pending", "success"].contains(&state) {
                return gh_invalid("Status", "state is not included in the list");
            }
            let context = body["context"].as_str().unwrap_or("default").to_string();
            let desc = body["description"].as_str().unwrap_or("").to_string();
            if desc.chars().count() > 140 {
                return gh_invalid(
                    "Status",
                    "description is too long (maximum is 140 characters)",
                );
            }
            d.statuses
                .entry(sha.to_string())
                .or_default()
                .push((context, state.to_string(), desc));
            json_response(201, json!({ "state": state }))
        }
        ("POST", ["deployments"]) => {
            let git_ref = body["ref"].as_str().unwrap_or("").to_string();
            if !d.refs.contains(&git_ref) {
                return gh_invalid("Deployment", &format!("No ref found for: {git_ref}"));
            }
            let Some(env) = body["environment"].as_str() else {
                return gh_invalid("Deployment", "environment is missing");
            };
            d.next_id += 1;
            let id = d.next_id;
            d.deployments.push(Deployment {
                id,
                git_ref,
                environment: env.to_string(),
                statuses: Vec::new(),
            });
            json_response(201, json!({ "id": id, "environment": env }))
        }
        ("GET", ["deployments"]) => {
            let env = query_param(&r.query, "environment");
            let items = d
                .deployments
                .iter()
                .rev()
                .filter(|x| env.as_deref().is_none_or(|e| e == x.environment))
                .map(|x| json!({ "id": x.id, "environment": x.environment, "ref": x.git_ref }))
                .collect();
            gh_page(r, items, None)
        }
        ("POST", ["deployments", id, "statuses"]) => {
            let state = body["state"].as_str().unwrap_or("").to_string();
            if ![
                "error",
                "failure",
                "inactive",
                "in_progress",
                "queued",
                "pending",
                "success",
            ]
            .contains(&state.as_str())
            {
                return gh_invalid("DeploymentStatus", "state is not included in the list");
            }
            let Some(x) = number(id).and_then(|id| d.deployments.iter_mut().find(|x| x.id == id))
            else {
                return gh_error(404, "Not Found");
            };
            x.statuses.push(state.clone());
            json_response(201, json!({ "state": state }))
        }
        _ => gh_error(404, "Not Found"),
    }
}

// ---------------------------------------------------------------- OpenID provider

/// An RSA key pair made by `openssl` for a test: the private key's PEM and
/// the modulus, as hex.
pub fn rsa_key(dir: &std::path::Path, name: &str) -> anyhow::Result<(String, String)> {
    let key = dir.join(format!("{name}.pem"));
    let ok = std::process::Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&key)
        .arg("2048")
        .stderr(std::process::Stdio::null())
        .status()?;
    if !ok.success() {
        let ok = std::process::Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&key)
            .arg("2048")
            .status()?;
        anyhow::ensure!(ok.success(), "openssl genrsa failed");
    }
    let out = std::process::Command::new("openssl")
        .args(["rsa", "-noout", "-modulus", "-in"])
        .arg(&key)
        .output()?;
    anyhow::ensure!(out.status.success(), "openssl rsa -modulus failed");
    let modulus = String::from_utf8(out.stdout)?
        .trim()
        .trim_start_matches("Modulus=")
        .to_string();
    Ok((std::fs::read_to_string(&key)?, modulus))
}

/// What a [`FakeIdp`] gets wrong in the ID token it issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdTokenFault {
    /// A valid token.
    None,
    /// Expired five minutes ago.
    Expired,
    /// Expired 20 s ago: within the clock skew allowed.
    ExpiredWithinSkew,
    /// Issued ten minutes in the future (the provider's clock is ahead).
    IssuedInTheFuture,
    WrongAudience,
    WrongIssuer,
    /// Signed by another key under the provider's key id.
    ForeignKey,
    /// `alg: none`, no signature.
    Unsigned,
    WrongNonce,
    /// The token response has no `id_token`.
    Missing,
    /// No `email_verified` claim (as some providers do).
    EmailUnverified,
    /// Issued an hour ago (still unexpired).
    IssuedLongAgo,
}

struct IdpData {
    fault: IdTokenFault,
    key_pem: String,
    foreign_pem: String,
    nonce: Option<String>,
    challenge: Option<String>,
    /// Whether the last code exchange carried the right PKCE verifier.
    pkce: Option<bool>,
    groups: Vec<String>,
    email: String,
}

/// A hostile (or correct) OpenID provider speaking the real protocol's
/// paths and shapes: discovery, JWKS, `/auth` (answers at once with a code,
/// as if the person had signed in) and `/token` (checks the PKCE verifier,
/// then issues an ID token with the configured fault).
pub struct FakeIdp {
    pub fake: Fake,
    data: Arc<Mutex<IdpData>>,
}

impl std::fmt::Debug for FakeIdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeIdp")
            .field("url", &self.fake.url)
            .finish()
    }
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl FakeIdp {
    /// `key` signs tokens (published in the JWKS); `foreign` signs the
    /// [`IdTokenFault::ForeignKey`] ones.
    pub fn start(key: &(String, String), foreign: &(String, String)) -> anyhow::Result<FakeIdp> {
        let data = Arc::new(Mutex::new(IdpData {
            fault: IdTokenFault::None,
            key_pem: key.0.clone(),
            foreign_pem: foreign.0.clone(),
            nonce: None,
            challenge: None,
            pkce: None,
            groups: vec!["qa".into()],
            email: "quinn@example.com".into(),
        }));
        let n = b64url(&hex::decode(&key.1)?);
        let d = data.clone();
        let base: Arc<Mutex<String>> = Arc::new(Mutex::new(String::new()));
        let b = base.clone();
        let fake = Fake::start(Arc::new(move |r: &Recorded| {
            let issuer = b.lock().map(|s| s.clone()).unwrap_or_default();
            match r.path.as_str() {
                "/.well-known/openid-configuration" => json_response(
                    200,
                    json!({
                        "issuer": issuer,
                        "authorization_endpoint": format!("{issuer}/auth"),
                        "token_endpoint": format!("{issuer}/token"),
                        "jwks_uri": format!("{issuer}/jwks"),
                        "device_authorization_endpoint": format!("{issuer}/device/auth"),
                        "response_types_supported": ["code"],
                        "subject_types_supported": ["public"],
                        "id_token_signing_alg_values_supported": ["RS256"],
                        "code_challenge_methods_supported": ["S256"],
                    }),
                ),
                "/jwks" => json_response(
                    200,
                    json!({ "keys": [{ "kty": "RSA", "use": "sig", "alg": "RS256", "kid": "k1", "n": n, "e": "AQAB" }] }),
                ),
                "/auth" => {
                    let q = &r.query;
                    if let Ok(mut d) = d.lock() {
                        d.nonce = query_param(q, "nonce");
                        d.challenge = query_param(q, "code_challenge").filter(|_| {
                            query_param(q, "code_challenge_method").as_deref() == Some("S256")
                        });
                    }
                    let to = format!(
                        "{}?code=the-code&state={}",
                        query_param(q, "redirect_uri").unwrap_or_default(),
                        query_param(q, "state").unwrap_or_default()
                    );
                    (StatusCode::FOUND, [("location", to)]).into_response()
                }
                "/token" => {
                    let form = String::from_utf8_lossy(&r.body).to_string();
                    let Ok(mut d) = d.lock() else {
                        return gh_error(500, "poisoned");
                    };
                    let verifier = query_param(&form, "code_verifier").unwrap_or_default();
                    let ok = d.challenge.as_deref()
                        == Some(b64url(&Sha256::digest(verifier.as_bytes())).as_str());
                    d.pkce = Some(ok);
                    if !ok {
                        return json_response(
                            400,
                            json!({ "error": "invalid_grant", "error_description": "PKCE verification failed" }),
                        );
                    }
                    let nonce = d.nonce.clone();
                    let mut body = json!({ "access_token": "at-1", "token_type": "Bearer", "expires_in": 3600 });
                    if d.fault != IdTokenFault::Missing {
                        body["id_token"] =
                            Value::String(d.token(&issuer, "stamp-panel", nonce.as_deref()));
                    }
                    json_response(200, body)
                }
                _ => gh_error(404, "Not Found"),
            }
        }))?;
        if let Ok(mut b) = base.lock() {
            *b = fake.url.clone();
        }
        Ok(FakeIdp { fake, data })
    }

    pub fn url(&self) -> &str {
        &self.fake.url
    }

    pub fn set_fault(&self, fault: IdTokenFault) {
        if let Ok(mut d) = self.data.lock() {
            d.fault = fault;
        }
    }

    /// The person the next tokens name.
    pub fn set_person(&self, email: &str, groups: &[&str]) {
        if let Ok(mut d) = self.data.lock() {
            d.email = email.to_string();
            d.groups = groups.iter().map(|g| g.to_string()).collect();
        }
    }

    /// Whether the last code exchange sent the verifier of the challenge.
    pub fn pkce_verified(&self) -> Option<bool> {
        self.data.lock().ok().and_then(|d| d.pkce)
    }

    /// An ID token for `audience` (no nonce), with the current fault: what
    /// a CLI's device flow would have got.
    pub fn mint(&self, audience: &str) -> String {
        let issuer = self.fake.url.clone();
        self.data
            .lock()
            .map(|d| d.token(&issuer, audience, None))
            .unwrap_or_default()
    }
}

impl IdpData {
    fn token(&self, issuer: &str, audience: &str, nonce: Option<&str>) -> String {
        let now = now_secs();
        let (iat, exp) = match self.fault {
            IdTokenFault::Expired => (now - 900, now - 300),
            IdTokenFault::ExpiredWithinSkew => (now - 600, now - 20),
            IdTokenFault::IssuedInTheFuture => (now + 600, now + 1200),
            IdTokenFault::IssuedLongAgo => (now - 3600, now + 300),
            _ => (now, now + 300),
        };
        let mut claims = json!({
            "iss": if self.fault == IdTokenFault::WrongIssuer { "https://evil.example".to_string() } else { issuer.to_string() },
            "sub": "u-1",
            "aud": if self.fault == IdTokenFault::WrongAudience { "someone-else" } else { audience },
            "iat": iat,
            "exp": exp,
            "email": self.email,
            "email_verified": true,
            "groups": self.groups,
        });
        if self.fault == IdTokenFault::EmailUnverified {
            if let Some(o) = claims.as_object_mut() {
                o.remove("email_verified");
            }
        }
        match (self.fault, nonce) {
            (IdTokenFault::WrongNonce, _) => claims["nonce"] = json!("not-the-nonce"),
            (_, Some(n)) => claims["nonce"] = json!(n),
            _ => {}
        }
        if self.fault == IdTokenFault::Unsigned {
            let header = b64url(br#"{"alg":"none","typ":"JWT"}"#);
            let payload = b64url(claims.to_string().as_bytes());
            return format!("{header}.{payload}.");
        }
        let pem = if self.fault == IdTokenFault::ForeignKey {
            &self.foreign_pem
        } else {
            &self.key_pem
        };
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some("k1".into());
        let Ok(key) = jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()) else {
            return String::new();
        };
        jsonwebtoken::encode(&header, &claims, &key).unwrap_or_default()
    }
}

// ---------------------------------------------------------------- GitHub / Atlassian sign-in

#[derive(Default)]
struct OAuthData {
    challenge: Option<String>,
    pkce: Option<bool>,
    device_approved: bool,
    /// Tokens issued to the app, and tokens issued to some other app.
    ours: HashSet<String>,
    foreign: HashSet<String>,
    next: u64,
}

/// GitHub's OAuth app endpoints (`/login/oauth/authorize`,
/// `/login/oauth/access_token` with its `200 OK` error answers,
/// `/login/device/code`), the REST API that says who a token is (`/user`,
/// `/user/emails`, `/user/orgs`, `/user/teams`,
/// `POST /applications/{client_id}/token`), and Atlassian's (`/authorize`,
/// `/oauth/token`, `/me`), for one person: octocat, verified primary email
/// octocat@github.com, in org `acme` and team `acme/qa`.
pub struct FakeOAuth {
    pub fake: Fake,
    data: Arc<Mutex<OAuthData>>,
}

impl std::fmt::Debug for FakeOAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeOAuth")
            .field("url", &self.fake.url)
            .finish()
    }
}

impl FakeOAuth {
    /// An app with `client_id` and `secret`.
    pub fn start(client_id: &str, secret: &str) -> anyhow::Result<FakeOAuth> {
        let data = Arc::new(Mutex::new(OAuthData::default()));
        let d = data.clone();
        let (client_id, secret) = (client_id.to_string(), secret.to_string());
        let base: Arc<Mutex<String>> = Arc::new(Mutex::new(String::new()));
        let b = base.clone();
        let fake = Fake::start(Arc::new(move |r: &Recorded| {
            let url = b.lock().map(|s| s.clone()).unwrap_or_default();
            let form = String::from_utf8_lossy(&r.body).to_string();
            let bearer = r
                .header("authorization")
                .and_then(|a| a.strip_prefix("Bearer ").map(str::to_string))
                .unwrap_or_default();
            let Ok(mut d) = d.lock() else {
                return gh_error(500, "poisoned");
            };
            let known = d.ours.contains(&bearer) || d.foreign.contains(&bearer);
            let issue = |d: &mut OAuthData| {
                d.next += 1;
                let t = format!("gho_{:036}", d.next);
                d.ours.insert(t.clone());
                t
            };
            match (r.method.as_str(), r.path.as_str()) {
                ("GET", "/login/oauth/authorize" | "/authorize") => {
                    if query_param(&r.query, "client_id").as_deref() != Some(client_id.as_str()) {
                        return gh_error(404, "Not Found");
                    }
                    d.challenge = query_param(&r.query, "code_challenge").filter(|_| {
                        query_param(&r.query, "code_challenge_method").as_deref() == Some("S256")
                    });
                    let to = format!(
                        "{}?code=code-1&state={}",
                        query_param(&r.query, "redirect_uri").unwrap_or_default(),
                        query_param(&r.query, "state").unwrap_or_default()
                    );
                    (StatusCode::FOUND, [("location", to)]).into_response()
                }
                ("POST", "/login/device/code") => {
                    if query_param(&form, "client_id").as_deref() != Some(client_id.as_str()) {
                        return json_response(
                            200,
                            json!({ "error": "incorrect_client_credentials" }),
                        );
                    }
                    json_response(
                        200,
                        json!({
                            "device_code": "dc-1",
                            "user_code": "WDJB-MJHT",
                            "verification_uri": format!("{url}/login/device"),
                            "expires_in": 900,
                            "interval": 1,
                        }),
                    )
                }
                ("POST", "/login/oauth/access_token" | "/oauth/token") => {
                    let github = r.path.starts_with("/login");
                    let refuse = |error: &str, description: &str| {
                        // GitHub: 200 OK with an error; Atlassian: RFC 6749's 400/401.
                        json_response(
                            if github { 200 } else { 400 },
                            json!({ "error": error, "error_description": description }),
                        )
                    };
                    if query_param(&form, "grant_type").as_deref()
                        == Some("urn:ietf:params:oauth:grant-type:device_code")
                    {
                        if query_param(&form, "device_code").as_deref() != Some("dc-1") {
                            return refuse(
                                "incorrect_device_code",
                                "The device_code provided is not valid.",
                            );
                        }
                        if !d.device_approved {
                            return refuse(
                                "authorization_pending",
                                "The authorization request is still pending.",
                            );
                        }
                        let t = issue(&mut d);
                        return json_response(
                            200,
                            json!({ "access_token": t, "token_type": "bearer", "scope": "read:user,user:email,read:org" }),
                        );
                    }
                    if query_param(&form, "client_id").as_deref() != Some(client_id.as_str())
                        || query_param(&form, "client_secret").as_deref() != Some(secret.as_str())
                    {
                        return refuse(
                            "incorrect_client_credentials",
                            "The client_id and/or client_secret passed are incorrect.",
                        );
                    }
                    if query_param(&form, "code").as_deref() != Some("code-1") {
                        return refuse(
                            "bad_verification_code",
                            "The code passed is incorrect or expired.",
                        );
                    }
                    let verifier = query_param(&form, "code_verifier").unwrap_or_default();
                    let ok = d.challenge.as_deref()
                        == Some(b64url(&Sha256::digest(verifier.as_bytes())).as_str());
                    d.pkce = Some(ok);
                    if !ok {
                        return refuse("invalid_grant", "PKCE verification failed");
                    }
                    let t = issue(&mut d);
                    json_response(
                        200,
                        json!({ "access_token": t, "token_type": "bearer", "scope": "read:user" }),
                    )
                }
                ("GET", "/user") if known => json_response(
                    200,
                    json!({ "login": "octocat", "id": 583231, "type": "User" }),
                ),
                ("GET", "/user/emails") if known => json_response(
                    200,
                    json!([
                        { "email": "octo@old.example", "primary": false, "verified": true, "visibility": null },
                        { "email": "octocat@github.com", "primary": true, "verified": true, "visibility": "public" },
                    ]),
                ),
                ("GET", "/user/orgs") if known => {
                    json_response(200, json!([{ "login": "acme", "id": 1 }]))
                }
                ("GET", "/user/teams") if known => json_response(
                    200,
                    json!([{ "slug": "qa", "name": "QA", "organization": { "login": "acme" } }]),
                ),
                ("GET", "/me") if known => json_response(
                    200,
                    json!({ "account_id": "5b10a2844c20165700ede21g", "email": "ana@acme.example", "name": "Ana", "email_verified": true }),
                ),
                ("GET", "/user" | "/user/emails" | "/user/orgs" | "/user/teams" | "/me") => {
                    gh_error(401, "Bad credentials")
                }
                ("POST", p) if p == format!("/applications/{client_id}/token") => {
                    let expected = format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD
                            .encode(format!("{client_id}:{secret}"))
                    );
                    if r.header("authorization").as_deref() != Some(expected.as_str()) {
                        return gh_error(401, "Bad credentials");
                    }
                    let t = r.json()["access_token"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    if d.ours.contains(&t) {
                        json_response(
                            200,
                            json!({ "id": 1, "token": t, "app": { "client_id": client_id }, "user": { "login": "octocat" } }),
                        )
                    } else {
                        gh_error(404, "Not Found")
                    }
                }
                _ => gh_error(404, "Not Found"),
            }
        }))?;
        if let Ok(mut b) = base.lock() {
            *b = fake.url.clone();
        }
        Ok(FakeOAuth { fake, data })
    }

    pub fn url(&self) -> &str {
        &self.fake.url
    }

    /// The person approves the device code in their browser.
    pub fn approve_device(&self) {
        if let Ok(mut d) = self.data.lock() {
            d.device_approved = true;
        }
    }

    /// A token GitHub issued to some other OAuth app for the same person.
    pub fn foreign_token(&self) -> String {
        let t = "gho_from_another_app".to_string();
        if let Ok(mut d) = self.data.lock() {
            d.foreign.insert(t.clone());
        }
        t
    }

    /// Whether the last code exchange carried the right PKCE verifier.
    pub fn pkce_verified(&self) -> Option<bool> {
        self.data.lock().ok().and_then(|d| d.pkce)
    }
}
