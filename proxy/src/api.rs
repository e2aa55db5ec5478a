//! The control API under `/__stamp/api/v1/`: JSON over HTTP on the proxy's
//! own listener, used by the `stamp` CLI and the QA panel.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `tickets[?stage=qa,prod]` | list tickets |
//! | GET | `tickets/{KEY}` | one ticket: stage, overrides per stage, links, history |
//! | PUT | `tickets/{KEY}/modules/{path}` | upload a module to dev (body = module) |
//! | DELETE | `tickets/{KEY}/modules/{path}` | remove an override from dev |
//! | POST | `tickets/{KEY}/promote` `revert` `close` `sign-off` | move the ticket |
//! | POST | `tickets/{KEY}/revoke-links` | revoke every signed share link (preview protection) |
//! | GET | `tickets/{KEY}/importmap?stage=dev` | the effective overrides as an import map |
//! | POST | `modules/missing` | which of these hashes the store lacks |
//!
//! Every error is `{"error": {"code", "message", …}}` with a fitting status;
//! caller mistakes are not logged as errors and internal details are not
//! leaked.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::header;
use pingora::prelude::*;
use pingora::proxy::Session;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{self, Action, Principal};
use crate::config::Config;
use crate::internal::respond;
use crate::snapshot::SnapshotCell;
use crate::store::{HistoryEvent, SharedStore, StoreError, TicketRecord};
use crate::ticket::{Hash, OverrideSet, Stage, TicketKey};
use crate::workflow::{self, allowed_actions, Actor, Body, Transition, WorkflowError};

pub const PREFIX: &str = "/__stamp/api/v1/";

/// Longest module path or specifier accepted.
pub const MAX_PATH: usize = 1024;
/// Largest JSON request body.
const MAX_JSON: usize = 64 * 1024;

/// An API failure: status, machine code, message, and extra fields.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub extra: Value,
}

impl ApiError {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            extra: Value::Null,
        }
    }

    fn bad(field: &str, message: impl Into<String>) -> ApiError {
        let mut e = ApiError::new(400, "bad_request", message);
        e.extra = json!({ "field": field });
        e
    }

    fn body(&self) -> Bytes {
        let mut err = json!({ "code": self.code, "message": self.message });
        if let (Some(obj), Value::Object(extra)) = (err.as_object_mut(), &self.extra) {
            obj.extend(extra.clone());
        }
        Bytes::from(json!({ "error": err }).to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Conflict { key, .. } => ApiError::new(
                409,
                "conflict",
                format!("ticket {key} was changed by someone else; read it again and retry"),
            ),
            StoreError::Unavailable(_) => {
                log::warn!("API: {e}");
                ApiError::new(
                    503,
                    "store_unavailable",
                    "the ticket store is unavailable; try again shortly",
                )
            }
            other => {
                log::error!("API: {other}");
                ApiError::new(500, "internal", "internal error (see the proxy's log)")
            }
        }
    }
}

impl From<WorkflowError> for ApiError {
    fn from(e: WorkflowError) -> ApiError {
        match e {
            WorkflowError::NotFound(k) => {
                ApiError::new(404, "not_found", format!("ticket {k} does not exist"))
            }
            WorkflowError::IllegalTransition {
                ref key,
                action,
                stage,
            } => {
                let mut err = ApiError::new(409, "illegal_transition", e.to_string());
                err.extra = json!({ "ticket": key, "action": action, "stage": stage, "allowed": allowed_actions(stage) });
                err
            }
            WorkflowError::NoSuchOverride(..) => ApiError::new(404, "not_found", e.to_string()),
            WorkflowError::TooManyModules { .. } => {
                ApiError::new(413, "too_many_modules", e.to_string())
            }
            WorkflowError::UnknownBody(_) => ApiError::new(404, "unknown_body", e.to_string()),
            WorkflowError::Store(s) => s.into(),
        }
    }
}

type ApiResult = Result<(u16, Value), ApiError>;

/// What the API needs from the proxy.
pub struct Api {
    pub cfg: Arc<Config>,
    pub store: SharedStore,
    pub snapshot: Arc<SnapshotCell>,
    /// Records production overlay changes in git, when configured.
    pub history: Option<Arc<crate::history_repo::HistoryRepo>>,
    /// Mints signed share links, when previews are protected.
    pub preview: Option<crate::preview::Signer>,
    /// Records the origin's baseline when a ticket is released.
    pub settler: Option<Arc<crate::settle::Settler>>,
    /// Promotion policies, checked before a transition.
    pub policies: Arc<crate::policy::Engine>,
    /// Hooks, told of every change after it happened.
    pub hooks: Arc<crate::hooks::Dispatcher>,
    /// `http://127.0.0.1:PORT` of this proxy (the sanity policy goes through it).
    pub proxy_base: String,
    /// Panel sessions (an alternative to bearer tokens, with CSRF checks).
    pub sessions: crate::auth::Sessions,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Api")
    }
}

impl Api {
    /// Answers one API request.
    pub async fn serve(&self, session: &mut Session) -> Result<()> {
        let (status, body) = match self.handle(session).await {
            Ok((status, value)) => (status, Bytes::from(value.to_string())),
            Err(e) => (e.status, e.body()),
        };
        respond(session, status, "application/json", body).await
    }

    async fn handle(&self, session: &mut Session) -> ApiResult {
        let req = session.req_header();
        let method = req.method.clone();
        let path = req.uri.path().to_string();
        let query = req.uri.query().unwrap_or("").to_string();
        let principal = crate::panel::principal(session, &self.cfg, &self.sessions).map_err(
            |(status, message)| {
                ApiError::new(
                    status,
                    if status == 401 {
                        "unauthorized"
                    } else {
                        "forbidden"
                    },
                    message,
                )
            },
        )?;

        let rest = path.strip_prefix(PREFIX).unwrap_or("");
        let segments: Vec<&str> = rest.split('/').collect();
        match (method.as_str(), segments.as_slice()) {
            ("GET" | "HEAD", ["tickets"] | ["tickets", ""]) => {
                self.list(&principal, &query, session).await
            }
            ("GET" | "HEAD", ["tickets", key]) => {
                let key = parse_key(key)?;
                require(&principal, Action::Read)?;
                let t = self.ticket(&key).await?;
                Ok((200, self.ticket_json(&t, session, true).await?))
            }
            ("PUT", ["tickets", key, "modules", ..]) => {
                let key = parse_key(key)?;
                let raw = path_after(&path, &segments[..3]);
                self.upload(&principal, &key, &raw, session).await
            }
            ("DELETE", ["tickets", key, "modules", ..]) => {
                let key = parse_key(key)?;
                let raw = path_after(&path, &segments[..3]);
                self.delete(&principal, &key, &raw, session).await
            }
            ("POST", ["tickets", key, action]) => {
                let key = parse_key(key)?;
                let what = match *action {
                    "promote" => Some(Transition::Promote),
                    "revert" => Some(Transition::Revert),
                    "close" => Some(Transition::Close),
                    "sign-off" => None,
                    "revoke-links" => {
                        require(&principal, Action::Read)?;
                        let t = self.ticket(&key).await?;
                        let actor = actor_from(&principal, &session.req_header().headers);
                        let record = workflow::revoke_links(&self.store, &t, &actor).await?;
                        return Ok((200, self.ticket_summary(&record, session)));
                    }
                    other => {
                        return Err(ApiError::new(
                            404,
                            "not_found",
                            format!(
                            "no action `{other}` (promote, revert, close, sign-off, revoke-links)"
                        ),
                        ))
                    }
                };
                self.transition(&principal, &key, what, session).await
            }
            ("GET" | "HEAD", ["tickets", key, "importmap"]) => {
                let key = parse_key(key)?;
                require(&principal, Action::Read)?;
                self.importmap(&key, &query).await
            }
            ("POST", ["modules", "missing"]) => {
                require(&principal, Action::Read)?;
                self.missing(session).await
            }
            (_, ["tickets", ..] | ["modules", ..]) => Err(ApiError::new(
                405,
                "method_not_allowed",
                format!("{method} is not supported on {path}"),
            )),
            _ => Err(ApiError::new(
                404,
                "not_found",
                format!("no API endpoint {path}"),
            )),
        }
    }

    async fn ticket(&self, key: &TicketKey) -> Result<TicketRecord, ApiError> {
        self.store
            .get_ticket(key)
            .await?
            .ok_or_else(|| ApiError::new(404, "not_found", format!("ticket {key} does not exist")))
    }

    async fn list(&self, principal: &Principal, query: &str, session: &Session) -> ApiResult {
        require(principal, Action::Read)?;
        let mut stages: Option<Vec<Stage>> = None;
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            if k == "stage" {
                let mut list = Vec::new();
                for s in v.split(',').filter(|s| !s.is_empty()) {
                    list.push(s.parse::<Stage>().map_err(|e| ApiError::bad("stage", e))?);
                }
                stages = Some(list);
            }
        }
        let state = self.store.state().await?;
        let mut out = Vec::new();
        for t in state.tickets {
            if stages.as_ref().is_some_and(|s| !s.contains(&t.stage)) {
                continue;
            }
            let mut v = self.ticket_json(&t, session, false).await?;
            // Who touched it last, for lists.
            if let Some(e) = self.store.history(&t.key).await?.pop() {
                v["last"] = json!({ "event": e.event, "actor": e.actor, "at_ms": e.at_ms });
            }
            out.push(v);
        }
        Ok((200, json!({ "tickets": out })))
    }

    /// Stage, version and links, without loading any override set.
    fn ticket_summary(&self, t: &TicketRecord, session: &Session) -> Value {
        let base = self.public_base(session);
        let mut links = serde_json::Map::new();
        let link = |view: crate::select::View| {
            let mut l = format!("{base}/?{}={}", view.as_str(), t.key);
            if let Some(signer) = &self.preview {
                l.push_str("&st=");
                l.push_str(&signer.mint(&t.key, view, t.share_gen));
            }
            l
        };
        if t.stage != Stage::Closed {
            links.insert("dev".into(), json!(link(crate::select::View::Dev)));
            if t.qa.is_some() {
                links.insert("qa".into(), json!(link(crate::select::View::Qa)));
            }
        }
        json!({
            "key": t.key,
            "stage": t.stage,
            "version": t.version,
            "updated_ms": t.updated_ms,
            "links": links,
            "allowed_actions": allowed_actions(t.stage),
        })
    }

    /// A ticket as JSON; with `full`, its history too.
    async fn ticket_json(
        &self,
        t: &TicketRecord,
        session: &Session,
        full: bool,
    ) -> Result<Value, ApiError> {
        let mut modules = serde_json::Map::new();
        for stage in [Stage::Dev, Stage::Qa, Stage::Prod] {
            if let Some(set) = workflow::overrides(&self.store, t, stage).await? {
                modules.insert(stage.as_str().into(), overrides_json(&set));
            }
        }
        let mut v = self.ticket_summary(t, session);
        v["created_ms"] = json!(t.created_ms);
        let prod_count = modules
            .get("prod")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        v["modules"] = Value::Object(modules);
        v["live_in_production"] = json!(self.snapshot.load().released.contains(&t.key));
        if t.stage == Stage::Prod {
            let total = prod_count;
            let retired = match t.retired {
                Some(id) => self.store.get_set(&id).await?.map_or(0, |s| s.len()),
                None => 0,
            };
            v["overlay"] = json!({ "live": total.saturating_sub(retired), "retired": retired, "baseline_recorded": t.baseline.is_some() });
        }
        if full {
            let history: Vec<HistoryEvent> = self.store.history(&t.key).await?;
            v["history"] = json!(history);
        }
        Ok(v)
    }

    fn public_base(&self, session: &Session) -> String {
        if let Some(u) = &self.cfg.public_url {
            return u.clone();
        }
        let req = session.req_header();
        let host = req
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| h.bytes().all(|b| b.is_ascii_graphic()))
            .unwrap_or("localhost");
        let https = self.cfg.tls.is_some()
            || req
                .headers
                .get("x-forwarded-proto")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
        format!("{}://{host}", if https { "https" } else { "http" })
    }

    async fn upload(
        &self,
        principal: &Principal,
        key: &TicketKey,
        raw_path: &str,
        session: &mut Session,
    ) -> ApiResult {
        require(principal, Action::Upload)?;
        let path = normalize_module_path(raw_path, &self.cfg.api.extensions)?;
        let req = session.req_header();
        let specifier = match req.headers.get("x-stamp-specifier") {
            Some(v) => {
                let s = v
                    .to_str()
                    .map_err(|_| ApiError::bad("x-stamp-specifier", "must be visible ASCII"))?;
                validate_specifier(s, &path)?
            }
            None => path.clone(),
        };
        let known = match req.headers.get("x-stamp-hash") {
            Some(v) => Some(
                v.to_str()
                    .ok()
                    .and_then(Hash::parse)
                    .ok_or_else(|| ApiError::bad("x-stamp-hash", "must be a sha256 hex digest"))?,
            ),
            None => None,
        };
        let actor = actor_from(principal, &req.headers);
        let max = self.cfg.api.max_module_bytes;
        let body = read_body(session, max as usize, "module").await?;
        let body = match known {
            Some(h) if body.is_empty() => Body::Known(h),
            Some(h) => {
                if Hash::of(&body) != h {
                    return Err(ApiError::bad(
                        "x-stamp-hash",
                        "does not match the body's sha256",
                    ));
                }
                Body::Bytes(body)
            }
            None => Body::Bytes(body),
        };
        let existed = self.store.get_ticket(key).await?.is_some();
        let record = workflow::upload_limited(
            &self.store,
            key,
            &specifier,
            &path,
            body,
            self.cfg.api.max_modules_per_ticket,
            &actor,
        )
        .await?;
        self.emit(
            "uploaded",
            &record,
            Some(record.stage),
            &actor.name,
            session,
        );
        let set = workflow::overrides(&self.store, &record, Stage::Dev)
            .await?
            .unwrap_or_default();
        let m = set.get(&specifier).cloned();
        Ok((
            if existed { 200 } else { 201 },
            json!({
                "ticket": key,
                "stage": record.stage,
                "version": record.version,
                "module": m.map(|m| json!({"specifier": specifier, "path": m.path, "url": m.url(), "hash": m.hash, "size": m.size})),
                "modules": set.len(),
            }),
        ))
    }

    async fn delete(
        &self,
        principal: &Principal,
        key: &TicketKey,
        raw_path: &str,
        session: &Session,
    ) -> ApiResult {
        require(principal, Action::Delete)?;
        let path = normalize_module_path(raw_path, &self.cfg.api.extensions)?;
        let req = session.req_header();
        let specifier = match req.headers.get("x-stamp-specifier") {
            Some(v) => validate_specifier(
                v.to_str()
                    .map_err(|_| ApiError::bad("x-stamp-specifier", "must be visible ASCII"))?,
                &path,
            )?,
            None => path,
        };
        let actor = actor_from(principal, &req.headers);
        let record = workflow::delete(&self.store, key, &specifier, &actor).await?;
        Ok((
            200,
            json!({ "ticket": key, "stage": record.stage, "version": record.version, "deleted": specifier }),
        ))
    }

    async fn transition(
        &self,
        principal: &Principal,
        key: &TicketKey,
        what: Option<Transition>,
        session: &mut Session,
    ) -> ApiResult {
        let req = TransitionRequest::read(session).await?;
        let t = self.ticket(key).await?;
        let expected = req.expected_version.or(if_match(session)?);
        if let Some(v) = expected {
            if v != t.version {
                let mut e = ApiError::new(
                    409,
                    "conflict",
                    format!("ticket {key} is at version {}, not {v}", t.version),
                );
                e.extra = json!({ "version": t.version, "stage": t.stage });
                return Err(e);
            }
        }
        let actor = Actor {
            name: principal.name.clone(),
            commit: req.commit.clone(),
            branch: req.branch.clone(),
        };
        let mut warnings = Value::Null;
        let mut sign_off = false;
        let record = match what {
            Some(tr) => {
                if tr.target(t.stage).is_none() {
                    return Err(WorkflowError::IllegalTransition {
                        key: key.clone(),
                        action: tr.as_str(),
                        stage: t.stage,
                    }
                    .into());
                }
                require(principal, Action::Move(tr, t.stage))?;
                let to = tr.target(t.stage).unwrap_or(t.stage);
                let mut checked = false;
                if self.policies.guards(t.stage, to) {
                    let ctx = crate::policy::TransitionCtx {
                        ticket: t.clone(),
                        from: t.stage,
                        to,
                        action: tr,
                        actor: actor.clone(),
                        history: self.store.history(key).await?,
                        overrides: workflow::overrides(&self.store, &t, t.stage)
                            .await?
                            .unwrap_or_default(),
                        store: self.store.clone(),
                        proxy_base: self.proxy_base.clone(),
                        roles: self.roles(),
                    };
                    let verdict = self.policies.check(&ctx).await;
                    if !verdict.allowed() {
                        let mut e = ApiError::new(422, "policy_denied", verdict.message());
                        e.extra = verdict.details();
                        return Err(e);
                    }
                    checked = true;
                    warnings = verdict.details()["warnings"].clone();
                }
                // A checked transition applies only to the version the policies
                // saw: an upload in between would make their verdict stale.
                let record = self
                    .transition_retrying(key, tr, &t, expected.is_some() || checked, &actor)
                    .await?;
                self.emit(
                    match tr {
                        Transition::Promote => "promoted",
                        Transition::Revert => "reverted",
                        Transition::Close => "closed",
                    },
                    &record,
                    Some(t.stage),
                    &actor.name,
                    session,
                );
                if t.stage == Stage::Prod || record.stage == Stage::Prod {
                    self.record_overlay_change(key, t.stage, record.stage, &actor.name);
                }
                if record.stage == Stage::Prod {
                    if let Some(settler) = self.settler.clone() {
                        let key = key.clone();
                        tokio::spawn(async move {
                            if let Err(e) = settler.record_baseline(&key).await {
                                log::warn!("{key}: cannot record the origin baseline yet: {e}");
                            }
                        });
                    }
                }
                record
            }
            None => {
                require(principal, Action::SignOff)?;
                sign_off = true;
                if t.stage != Stage::Qa {
                    return Err(WorkflowError::IllegalTransition {
                        key: key.clone(),
                        action: "sign off",
                        stage: t.stage,
                    }
                    .into());
                }
                workflow::sign_off(&self.store, &t, req.comment.clone(), &actor).await?
            }
        };
        if sign_off {
            self.emit("signed-off", &record, Some(t.stage), &actor.name, session);
        }
        // A summary, not the module lists: a transition is a pointer move and
        // its answer should not cost more than the move itself.
        let mut summary = self.ticket_summary(&record, session);
        if warnings.as_array().is_some_and(|w| !w.is_empty()) {
            summary["warnings"] = warnings;
        }
        Ok((200, summary))
    }

    /// Token name → role, for policies that count sign-offs by role.
    fn roles(&self) -> std::collections::HashMap<String, crate::config::Role> {
        if self.cfg.tokens.is_empty() {
            return [("anonymous".to_string(), crate::config::Role::Admin)].into();
        }
        self.cfg
            .tokens
            .iter()
            .map(|t| (t.name.clone(), t.role))
            .collect()
    }

    /// Tells the hooks (queued; never blocks, never fails the request).
    fn emit(
        &self,
        kind: &str,
        record: &TicketRecord,
        from: Option<Stage>,
        actor: &str,
        session: &Session,
    ) {
        let summary = self.ticket_summary(record, session);
        let view = if record.stage == Stage::Qa || record.stage == Stage::Prod {
            "qa"
        } else {
            "dev"
        };
        let share_link = summary["links"][view].as_str().map(str::to_string);
        self.hooks.emit(crate::hooks::Event {
            kind: kind.to_string(),
            ticket: record.key.clone(),
            from,
            to: Some(record.stage),
            actor: actor.to_string(),
            share_link,
            at_ms: crate::store::now_ms(),
        });
    }

    /// Applies a transition to the ticket as read. Without an explicit expected
    /// version, a concurrent change that left the stage as it was (an upload,
    /// a sign-off, the settler's bookkeeping) is not the caller's concern: the
    /// transition is retried on the new version. A change of stage is: then
    /// it is a conflict, so a double click never promotes twice.
    async fn transition_retrying(
        &self,
        key: &TicketKey,
        tr: Transition,
        read: &TicketRecord,
        explicit: bool,
        actor: &Actor,
    ) -> Result<TicketRecord, ApiError> {
        let mut version = read.version;
        for _ in 0..8 {
            match workflow::transition(&self.store, key, tr, Some(version), actor).await {
                Err(WorkflowError::Store(StoreError::Conflict { .. })) if !explicit => {
                    let now = self.ticket(key).await?;
                    if now.stage != read.stage {
                        let mut e = ApiError::new(
                            409,
                            "conflict",
                            format!("ticket {key} moved to {} meanwhile", now.stage),
                        );
                        e.extra = json!({ "version": now.version, "stage": now.stage });
                        return Err(e);
                    }
                    version = now.version;
                }
                other => return other.map_err(ApiError::from),
            }
        }
        Err(ApiError::new(
            409,
            "conflict",
            format!("ticket {key} keeps changing; try again"),
        ))
    }

    /// Commits the new production overlay to the history repository, off the
    /// request path: the transition has happened whatever git says.
    fn record_overlay_change(&self, key: &TicketKey, from: Stage, to: Stage, actor: &str) {
        let Some(repo) = self.history.clone() else {
            return;
        };
        let store = self.store.clone();
        let what = if to == Stage::Prod {
            format!("{key} released to prod")
        } else {
            format!("{key} reverted from {from} to {to}")
        };
        let actor = actor.to_string();
        tokio::spawn(async move {
            if let Err(e) = repo.record(&store, &what, &actor).await {
                log::error!("history repository: {e}");
            }
        });
    }

    async fn importmap(&self, key: &TicketKey, query: &str) -> ApiResult {
        let mut stage = Stage::Dev;
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            if k == "stage" {
                stage = match v.parse::<Stage>() {
                    Ok(s @ (Stage::Dev | Stage::Qa | Stage::Prod)) => s,
                    _ => return Err(ApiError::bad("stage", "must be dev, qa or prod")),
                };
            }
        }
        let t = self.ticket(key).await?;
        let own = workflow::overrides(&self.store, &t, stage)
            .await?
            .ok_or_else(|| {
                ApiError::new(
                    404,
                    "not_found",
                    format!("ticket {key} has no {stage} stage"),
                )
            })?;
        // The production overlay underneath, as the proxy serves it.
        let snap = self.snapshot.load();
        let mut all: OverrideSet = snap
            .overlay
            .as_ref()
            .map(|o| o.overrides.clone())
            .unwrap_or_default();
        all.extend(own);
        let imports: serde_json::Map<String, Value> = all
            .iter()
            .map(|(k, m)| (k.clone(), json!(m.url())))
            .collect();
        Ok((200, json!({ "imports": imports })))
    }

    async fn missing(&self, session: &mut Session) -> ApiResult {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Req {
            hashes: Vec<String>,
        }
        let body = read_body(session, MAX_JSON, "JSON").await?;
        let req: Req = parse_json(&body)?;
        if req.hashes.len() > 10_000 {
            return Err(ApiError::bad("hashes", "at most 10000 per request"));
        }
        let mut hashes = Vec::with_capacity(req.hashes.len());
        for (i, h) in req.hashes.iter().enumerate() {
            hashes.push(Hash::parse(h).ok_or_else(|| {
                ApiError::bad(&format!("hashes[{i}]"), "not a sha256 hex digest")
            })?);
        }
        let missing = self.store.missing_modules(&hashes).await?;
        Ok((200, json!({ "missing": missing })))
    }
}

/// Optional JSON body of promote / revert / close / sign-off.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransitionRequest {
    expected_version: Option<u64>,
    commit: Option<String>,
    branch: Option<String>,
    comment: Option<String>,
}

impl TransitionRequest {
    async fn read(session: &mut Session) -> Result<TransitionRequest, ApiError> {
        let body = read_body(session, MAX_JSON, "JSON").await?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(TransitionRequest::default());
        }
        let req: TransitionRequest = parse_json(&body)?;
        for (field, value) in [
            ("commit", &req.commit),
            ("branch", &req.branch),
            ("comment", &req.comment),
        ] {
            if value
                .as_ref()
                .is_some_and(|v| v.len() > 1024 || v.chars().any(char::is_control))
            {
                return Err(ApiError::bad(
                    field,
                    "must be at most 1024 printable characters",
                ));
            }
        }
        if req
            .commit
            .as_ref()
            .is_some_and(|c| c.len() < 4 || !c.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(ApiError::bad("commit", "must be a hex commit id"));
        }
        Ok(req)
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        // serde names the field at fault ("unknown field `x`", "invalid type … for `y`").
        let msg = e.to_string();
        let field = msg
            .split('`')
            .nth(1)
            .filter(|_| msg.contains("field"))
            .unwrap_or("body")
            .to_string();
        ApiError::bad(&field, format!("malformed JSON: {msg}"))
    })
}

/// `If-Match: "3"` (a ticket's version as its ETag).
fn if_match(session: &Session) -> Result<Option<u64>, ApiError> {
    match session.req_header().headers.get(header::IF_MATCH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .map(|s| s.trim().trim_start_matches("W/").trim_matches('"'))
            .and_then(|s| s.parse().ok())
            .map(Some)
            .ok_or_else(|| ApiError::bad("if-match", "must be a ticket version, e.g. \"3\"")),
    }
}

fn require(principal: &Principal, action: Action) -> Result<(), ApiError> {
    if auth::allowed(principal.role, action) {
        Ok(())
    } else {
        Err(ApiError::new(
            403,
            "forbidden",
            format!(
                "token `{}` ({} role) may not {}",
                principal.name,
                principal.role.as_str(),
                describe(action)
            ),
        ))
    }
}

fn describe(action: Action) -> String {
    match action {
        Action::Read => "read tickets".into(),
        Action::Upload => "upload modules".into(),
        Action::Delete => "delete modules".into(),
        Action::SignOff => "sign off".into(),
        Action::Move(t, from) => format!("{} a ticket in {from}", t.as_str()),
    }
}

fn parse_key(raw: &str) -> Result<TicketKey, ApiError> {
    TicketKey::parse(raw).map_err(|e| ApiError::bad("ticket", e.to_string()))
}

fn actor_from(principal: &Principal, headers: &http::HeaderMap) -> Actor {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 256)
            .map(str::to_string)
    };
    Actor {
        name: principal.name.clone(),
        commit: text("x-stamp-commit").filter(|c| c.bytes().all(|b| b.is_ascii_hexdigit())),
        branch: text("x-stamp-branch"),
    }
}

/// The raw (still percent-encoded) path after `tickets/{KEY}/modules`.
fn path_after(full: &str, leading: &[&str]) -> String {
    let skip = PREFIX.len() + leading.iter().map(|s| s.len() + 1).sum::<usize>();
    full.get(skip..).unwrap_or("").to_string()
}

/// Reads a request body, refusing (413) past `max` bytes without storing anything.
async fn read_body(session: &mut Session, max: usize, what: &str) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            413,
            "too_large",
            format!("the {what} is larger than {max} bytes"),
        )
    };
    if let Some(len) = session
        .req_header()
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > max as u64 {
            return Err(too_large());
        }
    }
    let mut buf = BytesMut::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > max {
                    return Err(too_large());
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => {
                return Err(ApiError::new(
                    400,
                    "bad_request",
                    format!("cannot read the request body: {e}"),
                ))
            }
        }
    }
    Ok(buf.freeze())
}

/// Normalises a module path from the URL: percent-decoded, absolute, no
/// `.`/`..`/empty segments, no backslash, NUL or control characters, bounded,
/// and with an allowed extension.
pub fn normalize_module_path(raw: &str, extensions: &[String]) -> Result<String, ApiError> {
    let bad = |m: &str| ApiError::bad("path", m.to_string());
    if raw.is_empty() {
        return Err(bad("the module path is empty"));
    }
    let decoded = percent_decode(raw)
        .ok_or_else(|| bad("the module path is not valid percent-encoded UTF-8"))?;
    if decoded.len() > MAX_PATH {
        return Err(bad("the module path is too long"));
    }
    if decoded.starts_with('/') {
        return Err(bad(
            "the module path must be relative to the site root (no leading `/` after modules/)",
        ));
    }
    if decoded.chars().any(|c| c == '\\' || c.is_control()) {
        return Err(bad(
            "the module path has a backslash or a control character",
        ));
    }
    if decoded.contains('?') || decoded.contains('#') {
        return Err(bad("the module path has a query or fragment"));
    }
    for seg in decoded.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return Err(bad("the module path has an empty, `.` or `..` segment"));
        }
    }
    let ext = decoded
        .rsplit('/')
        .next()
        .and_then(|f| f.rsplit_once('.'))
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    if !extensions.contains(&ext) {
        let mut e = ApiError::new(
            415,
            "unsupported_type",
            format!(
                "`.{ext}` modules are not accepted (allowed: {})",
                extensions.join(", ")
            ),
        );
        e.extra = json!({ "field": "path" });
        return Err(e);
    }
    Ok(format!("/{decoded}"))
}

fn validate_specifier(s: &str, path: &str) -> Result<String, ApiError> {
    let s = s.trim();
    if s.is_empty() || s.len() > MAX_PATH || s.chars().any(char::is_control) {
        return Err(ApiError::bad(
            "x-stamp-specifier",
            "must be 1-1024 printable characters",
        ));
    }
    let url_like = s.starts_with('/') || s.starts_with("./") || s.starts_with("../");
    if url_like && s != path {
        return Err(ApiError::bad(
            "x-stamp-specifier",
            "a URL-like specifier must equal the module's path; use a bare specifier",
        ));
    }
    Ok(s.to_string())
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let v = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            out.push(v);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn overrides_json(set: &OverrideSet) -> Value {
    Value::Array(
        set.iter()
            .map(|(spec, m)| json!({ "specifier": spec, "path": m.path, "url": m.url(), "hash": m.hash, "size": m.size }))
            .collect(),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn exts() -> Vec<String> {
        crate::config::DEFAULT_EXTENSIONS
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn module_paths_are_normalised_and_refused_when_they_escape() {
        assert_eq!(
            normalize_module_path("src/lib/greet.js", &exts()).unwrap(),
            "/src/lib/greet.js"
        );
        assert_eq!(
            normalize_module_path("src/a%20b.js", &exts()).unwrap(),
            "/src/a b.js"
        );
        for bad in [
            "",
            "../etc/passwd.js",
            "src/../../x.js",
            "src/./x.js",
            "src//x.js",
            "%2Fetc%2Fx.js",
            "src\\x.js",
            "src/%00.js",
            "src/%5C.js",
            "src/%2e%2e/x.js",
            "src/x.js%3Fa",
            "src/%ff.js",
            "src/%zz.js",
        ] {
            assert!(
                normalize_module_path(bad, &exts()).is_err(),
                "{bad:?} accepted"
            );
        }
        let long = format!("{}.js", "a/".repeat(600));
        assert!(normalize_module_path(&long, &exts()).is_err());
        let e = normalize_module_path("src/x.html", &exts()).unwrap_err();
        assert_eq!(e.status, 415);
    }

    #[test]
    fn specifiers() {
        assert_eq!(
            validate_specifier("@shop/cart", "/dist/cart.js").unwrap(),
            "@shop/cart"
        );
        assert!(validate_specifier("/other.js", "/dist/cart.js").is_err());
        assert!(validate_specifier("", "/a.js").is_err());
        assert!(validate_specifier("a\u{1}b", "/a.js").is_err());
    }

    #[test]
    fn json_errors_name_the_field() {
        let e = parse_json::<TransitionRequest>(br#"{"expected_version": "three"}"#).unwrap_err();
        assert_eq!(e.extra["field"], "body");
        assert!(
            e.message.contains("expected_version") || e.message.contains("invalid type"),
            "{}",
            e.message
        );
        let e = parse_json::<TransitionRequest>(br#"{"surprise": 1}"#).unwrap_err();
        assert_eq!(e.extra["field"], "surprise");
    }
}
