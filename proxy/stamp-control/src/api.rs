//! The control API under `/__stamp/api/v1/`: JSON over HTTP on the proxy's
//! own listener, used by the `stamp` CLI and the QA panel. A router over
//! `http::Request<Bytes>`, callable without a socket.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `tickets[?stage=qa,prod]` | list tickets |
//! | GET | `tickets/{KEY}` | one ticket: stage, overrides per stage, links, history |
//! | PUT | `tickets/{KEY}/modules/{path}` | upload a module to dev (body = module) |
//! | DELETE | `tickets/{KEY}/modules/{path}` | remove an override from dev |
//! | POST | `tickets/{KEY}/promote` `revert` `close` `reopen` | move the ticket (`expected_version`, `If-Match` or `from` required) |
//! | POST | `tickets/{KEY}/sign-off` | sign off a ticket in qa |
//! | POST | `tickets/{KEY}/revoke-links` | revoke every signed share link (preview protection) |
//! | GET | `tickets/{KEY}/importmap?stage=dev` | the effective overrides as an import map |
//! | GET | `tickets/{KEY}/check?action=promote` | the policies' verdict on a move, without making it |
//! | POST | `modules/missing` | which of these hashes the store lacks |
//! | POST | `store/adopt` | admin: accept a store that lost its state as it is now |
//! | GET | `production/history?limit=N` | what production served, change by change |
//! | POST | `production/revert` | take production back to a commit of that log (`{"to": id}`) |
//!
//! Every error is the model's envelope, `{"error": {"code", "message", …}}`,
//! with a fitting status; caller mistakes are not logged as errors and
//! internal details are not leaked.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Request};
use serde::Serialize;
use serde_json::{json, Value};
use stamp_model::lifecycle::{allowed_actions, Transition};
use stamp_model::overlay;
use stamp_model::roles::{allowed, Action};
use stamp_model::ticket::{Hash, OverrideSet, Stage, TicketKey, View};
use stamp_model::wire::{
    self, header as h, DeleteResponse, ErrorBody, ErrorCode, ErrorEnvelope, LastDto,
    MissingRequest, MissingResponse, ModuleDto, OverlayDto, TicketDto, TicketList,
    TransitionRequest, UploadResponse, MAX_PATH,
};
use stamp_store::{SharedStore, StoreError, TicketRecord};

use crate::auth::Principal;
use crate::changes::Fanout;
use crate::config::ControlConfig;
use crate::links::Links;
use crate::workflow::{self, Actor, Body, WorkflowError};

pub use wire::API_PREFIX as PREFIX;

/// An API failure: status and the error body.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub body: Box<ErrorBody>,
}

impl ApiError {
    pub fn new(status: u16, code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: Box::new(ErrorBody::new(code, message)),
        }
    }

    pub fn bad(field: &str, message: impl Into<String>) -> ApiError {
        let mut e = ApiError::new(400, ErrorCode::BadRequest, message);
        e.body.field = Some(field.to_string());
        e
    }

    /// A conflict that says where the ticket is now.
    fn moved(message: String, now: &TicketRecord) -> ApiError {
        let mut e = ApiError::new(409, ErrorCode::Conflict, message);
        e.body.version = Some(now.version);
        e.body.stage = Some(now.stage);
        e
    }

    /// The error as a JSON response in the model's envelope.
    pub fn response(&self) -> http::Response<crate::Body> {
        let envelope = ErrorEnvelope {
            error: (*self.body).clone(),
        };
        crate::panel::json_reply(self.status, to_value(&envelope), None)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Conflict { key, .. } => ApiError::new(
                409,
                ErrorCode::Conflict,
                format!("ticket {key} was changed by someone else; read it again and retry"),
            ),
            StoreError::Lost { .. } => {
                log::error!("API: refused a write: {e}");
                ApiError::new(503, ErrorCode::StoreLostState, e.to_string())
            }
            StoreError::Unavailable(_) => {
                log::warn!("API: {e}");
                ApiError::new(
                    503,
                    ErrorCode::StoreUnavailable,
                    "the ticket store is unavailable; try again shortly",
                )
            }
            other => {
                log::error!("API: {other}");
                ApiError::new(
                    500,
                    ErrorCode::Internal,
                    "internal error (see the proxy's log)",
                )
            }
        }
    }
}

impl From<WorkflowError> for ApiError {
    fn from(e: WorkflowError) -> ApiError {
        match e {
            WorkflowError::NotFound(k) => ApiError::new(
                404,
                ErrorCode::NotFound,
                format!("ticket {k} does not exist"),
            ),
            WorkflowError::IllegalTransition {
                ref key,
                action,
                stage,
            } => {
                let mut err = ApiError::new(409, ErrorCode::IllegalTransition, e.to_string());
                err.body.ticket = Some(key.clone());
                err.body.action = Some(action.to_string());
                err.body.stage = Some(stage);
                err.body.allowed = Some(allowed_actions(stage).to_vec());
                err
            }
            WorkflowError::NoSuchOverride(..) => {
                ApiError::new(404, ErrorCode::NotFound, e.to_string())
            }
            WorkflowError::TooManyModules { .. } => {
                ApiError::new(413, ErrorCode::TooManyModules, e.to_string())
            }
            WorkflowError::UnknownBody(_) => {
                ApiError::new(404, ErrorCode::UnknownBody, e.to_string())
            }
            WorkflowError::Store(s) => s.into(),
        }
    }
}

/// A JSON answer: status and body.
pub type ApiResult = Result<(u16, Value), ApiError>;

/// A commit id as people quote it.
fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

fn to_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// What the API needs.
pub struct Api {
    pub cfg: Arc<ControlConfig>,
    pub store: SharedStore,
    pub links: Links,
    /// Promotion policies, checked before a transition.
    pub policies: Arc<crate::policy::Engine>,
    /// Every change goes out through here.
    pub fanout: Arc<Fanout>,
    /// Reads production through the proxy (the diff's "before").
    pub http: reqwest::Client,
    /// `http://127.0.0.1:PORT` of this proxy (the sanity policy goes through it).
    pub proxy_base: String,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Api")
    }
}

impl Api {
    /// Answers one API request of an authenticated caller.
    pub async fn handle(&self, req: &Request<Bytes>, principal: &Principal) -> ApiResult {
        let method = req.method().as_str();
        let path = req.uri().path();
        let query = req.uri().query().unwrap_or("");
        let rest = path.strip_prefix(PREFIX).unwrap_or("");
        let segments: Vec<&str> = rest.split('/').collect();
        match (method, segments.as_slice()) {
            ("GET" | "HEAD", ["tickets"] | ["tickets", ""]) => self.list(principal, query).await,
            ("GET" | "HEAD", ["tickets", key]) => {
                let key = parse_key(key)?;
                require(principal, Action::Read)?;
                let t = self.ticket(&key).await?;
                let live = self.live().await?;
                Ok((
                    200,
                    to_value(&self.ticket_dto(&t, true, &live, principal).await?),
                ))
            }
            ("PUT", ["tickets", key, "modules", ..]) => {
                let key = parse_key(key)?;
                let raw = path_after(path, &segments[..3]);
                self.upload(principal, &key, &raw, req).await
            }
            ("DELETE", ["tickets", key, "modules", ..]) => {
                let key = parse_key(key)?;
                let raw = path_after(path, &segments[..3]);
                self.delete(principal, &key, &raw, req).await
            }
            ("POST", ["tickets", key, action]) => {
                let key = parse_key(key)?;
                match *action {
                    "sign-off" => self.sign_off(principal, &key, req, false).await,
                    "withdraw-sign-off" => self.sign_off(principal, &key, req, true).await,
                    "revoke-links" => {
                        require(principal, Action::Read)?;
                        let t = self.ticket(&key).await?;
                        let actor = actor_from(principal, req.headers());
                        let change = workflow::revoke_links(&self.store, &t, &actor).await?;
                        let summary = self.summary(&change.ticket, principal);
                        self.fanout.publish(change);
                        Ok((200, to_value(&summary)))
                    }
                    other => match Transition::parse(other) {
                        Some(tr) => self.transition(principal, &key, tr, req).await,
                        None => Err(ApiError::new(
                            404,
                            ErrorCode::NotFound,
                            format!(
                                "no action `{other}` (promote, revert, close, reopen, sign-off, withdraw-sign-off, revoke-links)"
                            ),
                        )),
                    },
                }
            }
            ("GET" | "HEAD", ["tickets", key, "check"]) => {
                let key = parse_key(key)?;
                require(principal, Action::Read)?;
                self.dry_run(principal, &key, query, req).await
            }
            ("GET" | "HEAD", ["tickets", key, "diff"]) => {
                let key = parse_key(key)?;
                require(principal, Action::Read)?;
                self.diff(&key, query).await
            }
            ("GET" | "HEAD", ["tickets", key, "importmap"]) => {
                let key = parse_key(key)?;
                require(principal, Action::Read)?;
                self.importmap(&key, query).await
            }
            ("GET" | "HEAD", ["production", "history"]) => {
                require(principal, Action::Read)?;
                self.production_history(query).await
            }
            ("POST", ["production", "revert"]) => self.production_revert(principal, req).await,
            ("POST", ["modules", "missing"]) => {
                require(principal, Action::Read)?;
                self.missing(req.body()).await
            }
            ("POST", ["store", "adopt"]) => {
                require(principal, Action::Operate)?;
                let before = self.store.epoch();
                let epoch = self.store.adopt().await?;
                log::warn!(
                    "API: {} adopted the store as it is now (epoch {epoch}, was {})",
                    principal.name,
                    before.as_deref().unwrap_or("none")
                );
                Ok((200, json!({ "epoch": epoch, "superseded": before })))
            }
            (_, ["tickets", ..] | ["modules", ..]) => Err(ApiError::new(
                405,
                ErrorCode::MethodNotAllowed,
                format!("{method} is not supported on {path}"),
            )),
            _ => Err(ApiError::new(
                404,
                ErrorCode::NotFound,
                format!("no API endpoint {path}"),
            )),
        }
    }

    async fn ticket(&self, key: &TicketKey) -> Result<TicketRecord, ApiError> {
        if let Some(t) = self.store.get_ticket(key).await? {
            return Ok(t);
        }
        // A closed ticket past retention is gone, but its history is kept:
        // say so, rather than "does not exist".
        let history = self.store.history(key).await?;
        if let Some(purged) = history.iter().rev().find(|e| e.event == "purged") {
            let mut e = ApiError::new(
                410,
                ErrorCode::NotFound,
                format!(
                    "ticket {key} was closed and purged by {} at {} ms since the epoch: {}",
                    purged.actor,
                    purged.at_ms,
                    purged
                        .detail
                        .as_deref()
                        .unwrap_or("past the closed-ticket retention")
                ),
            );
            e.body.ticket = Some(key.clone());
            e.body.extra.insert(
                "history".to_string(),
                serde_json::to_value(&history).unwrap_or_default(),
            );
            return Err(e);
        }
        Err(ApiError::new(
            404,
            ErrorCode::NotFound,
            format!("ticket {key} does not exist"),
        ))
    }

    /// What production served, change by change: the history repository's log.
    async fn production_history(&self, query: &str) -> ApiResult {
        let mut limit = 50usize;
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            if k == "limit" {
                limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| ApiError::bad("limit", "must be 1-1000"))?;
            }
        }
        let Some(repo) = self.fanout.history() else {
            return Err(ApiError::new(
                404,
                ErrorCode::NotFound,
                "no production history is kept: set `history_repo` in the proxy's configuration",
            ));
        };
        let commits = repo.log(limit).await.map_err(|e| {
            ApiError::new(
                500,
                ErrorCode::Internal,
                format!("reading the history: {e}"),
            )
        })?;
        Ok((
            200,
            to_value(&stamp_model::wire::ProductionHistory { commits }),
        ))
    }

    /// Takes production back to what a commit of the history log served, by
    /// reverting (prod → qa) every ticket released since, newest first. Each
    /// revert is checked by the policies and the role matrix like any
    /// revert, all of them before the first is applied. Refused, changing
    /// nothing, when reverting cannot reach that state (a ticket released
    /// then is not released now, or was released again since with other
    /// code).
    async fn production_revert(&self, principal: &Principal, req: &Request<Bytes>) -> ApiResult {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Body {
            to: String,
        }
        let body: Body = serde_json::from_slice(req.body()).map_err(|e| {
            ApiError::bad("to", format!("expected {{\"to\": \"<commit id>\"}}: {e}"))
        })?;
        // Only who may revert production may take it back (checked again
        // per ticket below, with the policies).
        require(principal, Action::Move(Transition::Revert, Stage::Prod))?;
        let to = body.to.trim();
        if to.len() < 7 || to.len() > 40 || !to.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ApiError::bad(
                "to",
                "must be a commit id of the production history (7 to 40 hex digits)",
            ));
        }
        let Some(repo) = self.fanout.history() else {
            return Err(ApiError::new(
                404,
                ErrorCode::NotFound,
                "no production history is kept: set `history_repo` in the proxy's configuration",
            ));
        };
        let target = repo
            .served_at(to)
            .await
            .map_err(|e| {
                ApiError::new(
                    500,
                    ErrorCode::Internal,
                    format!("reading the history: {e}"),
                )
            })?
            .ok_or_else(|| {
                ApiError::new(
                    404,
                    ErrorCode::NotFound,
                    format!(
                        "no commit {to} in the production history (`stamp --list -p --history`)"
                    ),
                )
            })?;

        let state = self.store.state().await?;
        let mut sets = std::collections::HashMap::new();
        for id in overlay::needed_sets(&state.overlay, &state.tickets) {
            if let Some(set) = self.store.get_set(&id).await? {
                sets.insert(id, set);
            }
        }
        let now = overlay::production(&state.overlay, &state.tickets, |id| sets.get(id))
            .map_err(|e| StoreError::Corrupt(format!("override set {} is missing", e.0)))?;
        if let Some(gone) = target.released.iter().find(|k| !now.released.contains(k)) {
            return Err(ApiError::new(
                409,
                ErrorCode::Conflict,
                format!(
                    "{gone} was released at {} and is not now: reverting cannot bring it back; \
                     promote it again",
                    short(&target.id)
                ),
            ));
        }
        let undo: Vec<TicketKey> = now
            .released
            .iter()
            .rev()
            .filter(|k| !target.released.contains(k))
            .cloned()
            .collect();
        // What production would serve afterwards, before anything moves.
        let remaining: Vec<TicketKey> = state
            .overlay
            .iter()
            .filter(|k| !undo.contains(k))
            .cloned()
            .collect();
        let after = overlay::production(&remaining, &state.tickets, |id| sets.get(id))
            .map_err(|e| StoreError::Corrupt(format!("override set {} is missing", e.0)))?;
        let after_imports: BTreeMap<String, String> = after
            .overrides
            .iter()
            .map(|(spec, m)| (spec.clone(), m.url()))
            .collect();
        if after_imports != target.imports {
            let differ: Vec<&String> = after_imports
                .keys()
                .chain(target.imports.keys())
                .filter(|k| after_imports.get(*k) != target.imports.get(*k))
                .collect();
            return Err(ApiError::new(
                409,
                ErrorCode::Conflict,
                format!(
                    "reverting cannot reach what {} served: {} would differ (a ticket released \
                     then was released again since, with other code, or settled); revert or \
                     promote those tickets one by one",
                    short(&target.id),
                    differ
                        .iter()
                        .take(5)
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }

        // Every check first; nothing moves unless every revert may. Each
        // revert applies only to the version the dry run saw: a change in
        // between is a conflict, not a surprise.
        let actor = actor_from(principal, req.headers());
        let mut records = Vec::new();
        for key in &undo {
            let t = state
                .tickets
                .iter()
                .find(|t| &t.key == key)
                .cloned()
                .ok_or_else(|| {
                    StoreError::Corrupt(format!("released ticket {key} has no record"))
                })?;
            require(principal, Action::Move(Transition::Revert, t.stage))?;
            self.check_policies(&t, Transition::Revert, &actor)
                .await
                .map_err(|mut e| {
                    e.body.message = format!("reverting {}: {}", t.key, e.body.message);
                    e
                })?;
            records.push(t);
        }
        let mut reverted = Vec::new();
        for t in records {
            let change = workflow::transition(
                &self.store,
                &t.key,
                Transition::Revert,
                Some(t.version),
                &actor,
            )
            .await
            .map_err(|e| {
                let mut err = ApiError::from(e);
                if !reverted.is_empty() {
                    err.body.message = format!(
                        "{} (already reverted: {})",
                        err.body.message,
                        reverted
                            .iter()
                            .map(|k: &TicketKey| k.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
                err
            })?;
            reverted.push(t.key.clone());
            self.fanout.publish(change);
        }
        log::info!(
            "API: {} took production back to {} (reverted {})",
            actor.name,
            target.id,
            reverted.len()
        );
        Ok((
            200,
            json!({
                "to": target.id,
                "reverted": reverted,
                "released": target.released,
                "overrides": target.imports.len(),
            }),
        ))
    }

    /// What a stage of the ticket changes: against production as a visitor
    /// gets it now (`against=production`, the default), or against another
    /// stage of the ticket (`against=qa` from dev: what QA has not seen).
    async fn diff(&self, key: &TicketKey, query: &str) -> ApiResult {
        // A diff reads every module of a stage and runs on the blocking
        // pool: a few at a time, whoever asks.
        static DIFFS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
        let _permit = DIFFS
            .acquire()
            .await
            .map_err(|_| ApiError::new(503, ErrorCode::Internal, "shutting down"))?;
        let mut stage = None;
        let mut against = None;
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            match &*k {
                "stage" => {
                    stage = Some(match &*v {
                        "dev" => Stage::Dev,
                        "qa" => Stage::Qa,
                        "prod" => Stage::Prod,
                        _ => return Err(ApiError::bad("stage", "must be dev, qa or prod")),
                    })
                }
                "against" => {
                    against = Some(match &*v {
                        "production" => None,
                        "dev" => Some(Stage::Dev),
                        "qa" => Some(Stage::Qa),
                        "prod" => Some(Stage::Prod),
                        _ => {
                            return Err(ApiError::bad(
                                "against",
                                "must be production, dev, qa or prod",
                            ))
                        }
                    })
                }
                _ => {}
            }
        }
        let t = self.ticket(key).await?;
        let stage = stage.unwrap_or(match t.stage {
            Stage::Closed => Stage::Dev,
            s => s,
        });
        let against = against.flatten();
        if against == Some(stage) {
            return Err(ApiError::bad(
                "against",
                "must be another stage than `stage`",
            ));
        }
        let Some(set) = workflow::overrides(&self.store, &t, stage).await? else {
            return Err(ApiError::new(
                404,
                ErrorCode::NotFound,
                format!("{key} has nothing in {stage}"),
            ));
        };
        let other =
            match against {
                Some(s) => Some(workflow::overrides(&self.store, &t, s).await?.ok_or_else(
                    || {
                        ApiError::new(
                            404,
                            ErrorCode::NotFound,
                            format!("{key} has nothing in {s}"),
                        )
                    },
                )?),
                None => None,
            };
        let before_label = match against {
            Some(s) => format!("{key} {s}"),
            None => "production".to_string(),
        };
        let after_label = format!("{key} {stage}");
        let mut modules = Vec::new();
        for (spec, m) in &set {
            let after = self.store.get_module(&m.hash).await?.ok_or_else(|| {
                ApiError::from(StoreError::Corrupt(format!("module {} is missing", m.hash)))
            })?;
            let before = match &other {
                Some(o) => match o.get(spec) {
                    Some(prev) => Ok(self.store.get_module(&prev.hash).await?),
                    None => Ok(None),
                },
                None => self.production_body(&m.path).await,
            };
            modules.push(match before {
                Ok(b) => {
                    // CPU-bound (up to the diff's deadline): off the I/O threads.
                    let (spec, path) = (spec.clone(), m.path.clone());
                    let labels = (before_label.clone(), after_label.clone());
                    tokio::task::spawn_blocking(move || {
                        crate::diff::compare(
                            &spec,
                            &path,
                            b.as_deref(),
                            &after,
                            (&labels.0, &labels.1),
                        )
                    })
                    .await
                    .map_err(|e| ApiError::new(500, ErrorCode::Internal, format!("diff: {e}")))?
                }
                Err(why) => {
                    let mut d = crate::diff::compare(spec, &m.path, None, &after, ("", ""));
                    d.status = "unreachable";
                    d.diff = None;
                    d.added_lines = 0;
                    d.note = Some(why);
                    d
                }
            });
        }
        if let Some(o) = &other {
            for (spec, m) in o.iter().filter(|(s, _)| !set.contains_key(*s)) {
                modules.push(crate::diff::ModuleDiff {
                    specifier: spec.clone(),
                    path: m.path.clone(),
                    status: "removed",
                    before: Some(crate::diff::Side {
                        size: m.size,
                        hash: m.hash.to_string(),
                    }),
                    after: None,
                    kind: if crate::diff::is_text(&m.path) {
                        "text"
                    } else {
                        "binary"
                    },
                    added_lines: 0,
                    removed_lines: 0,
                    diff: None,
                    note: None,
                });
            }
        }
        let history = self.store.history(key).await?;
        let source = history
            .iter()
            .rev()
            .find(|e| e.event == "upload" && (e.commit.is_some() || e.branch.is_some()));
        Ok((
            200,
            json!({
                "ticket": key,
                "stage": stage,
                "against": against.map_or("production".to_string(), |s| s.to_string()),
                "commit": source.and_then(|e| e.commit.clone()),
                "branch": source.and_then(|e| e.branch.clone()),
                "modules": modules,
            }),
        ))
    }

    /// What production serves at a module's location now, as a visitor gets
    /// it (through this proxy, without a selection): `Ok(None)` when it has
    /// nothing there.
    async fn production_body(&self, location: &str) -> Result<Option<Bytes>, String> {
        let url = format!(
            "{}{}",
            self.proxy_base,
            stamp_model::assets::serve_path(location)
        );
        let get = |url: String| {
            self.http
                .get(url)
                .header("accept-encoding", "identity")
                .send()
        };
        let mut resp = get(url)
            .await
            .map_err(|e| format!("production could not be read: {e}"))?;
        // The client follows no redirect: the one it takes is the proxy's
        // mirror sending a module on another origin to that very location
        // (checked against asset_origins when it was uploaded).
        if resp.status().is_redirection() {
            let to = resp
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            if stamp_model::assets::is_remote(location) && to.as_deref() == Some(location) {
                resp = get(location.to_string())
                    .await
                    .map_err(|e| format!("production could not be read: {e}"))?;
            }
        }
        match resp.status().as_u16() {
            200 => {}
            404 | 410 => return Ok(None),
            s => return Err(format!("production answered {s}")),
        }
        // Read with a cap, chunked answers included.
        let cap = crate::diff::MAX_DIFF_BYTES * 4;
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("production could not be read: {e}"))?
        {
            if body.len() + chunk.len() > cap {
                return Err(format!("production's file is larger than {cap} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Some(Bytes::from(body)))
    }

    /// The verdict a move would get now, without making it: whether the
    /// caller's role may make it, and each guarding policy's finding (a
    /// checklist for the panel and `stamp --check`).
    async fn dry_run(
        &self,
        principal: &Principal,
        key: &TicketKey,
        query: &str,
        req: &Request<Bytes>,
    ) -> ApiResult {
        let mut action = Transition::Promote;
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            if k == "action" {
                action = Transition::parse(&v).ok_or_else(|| {
                    ApiError::bad("action", "must be promote, revert, close or reopen")
                })?;
            }
        }
        let t = self.ticket(key).await?;
        let Some(to) = action.target(t.stage) else {
            return Err(WorkflowError::IllegalTransition {
                key: key.clone(),
                action: action.as_str(),
                stage: t.stage,
            }
            .into());
        };
        let actor = actor_from(principal, req.headers());
        let may = allowed(principal.role, Action::Move(action, t.stage));
        let kinds = self.policies.applicable(t.stage, to);
        let verdict = if kinds.is_empty() {
            crate::policy::Verdict::default()
        } else {
            let ctx = crate::policy::TransitionCtx {
                ticket: t.clone(),
                from: t.stage,
                to,
                action,
                actor,
                history: self.store.history(key).await?,
                overrides: workflow::overrides(&self.store, &t, t.stage)
                    .await?
                    .unwrap_or_default(),
                store: self.store.clone(),
                proxy_base: self.proxy_base.clone(),
                roles: self.roles(),
            };
            self.policies.check(&ctx).await
        };
        let mut checks: Vec<Value> = Vec::new();
        for kind in &kinds {
            let denials: Vec<&str> = verdict
                .denials
                .iter()
                .filter(|(k, _)| k == kind)
                .map(|(_, r)| r.as_str())
                .collect();
            let warnings: Vec<&str> = verdict
                .warnings
                .iter()
                .filter(|(k, _)| k == kind)
                .map(|(_, r)| r.as_str())
                .collect();
            checks.push(json!({
                "policy": kind,
                "ok": denials.is_empty(),
                "reasons": denials,
                "warnings": warnings,
            }));
        }
        Ok((
            200,
            json!({
                "ticket": key,
                "action": action.as_str(),
                "from": t.stage,
                "to": to,
                "version": t.version,
                "role_allows": may,
                "allowed": may && verdict.allowed(),
                "checks": checks,
            }),
        ))
    }

    /// Runs the policies that guard `tr` from the ticket's stage; their
    /// warnings, or the refusal.
    async fn check_policies(
        &self,
        t: &TicketRecord,
        tr: Transition,
        actor: &Actor,
    ) -> Result<Option<Vec<Value>>, ApiError> {
        let Some(to) = tr.target(t.stage) else {
            return Err(WorkflowError::IllegalTransition {
                key: t.key.clone(),
                action: tr.as_str(),
                stage: t.stage,
            }
            .into());
        };
        if !self.policies.guards(t.stage, to) {
            return Ok(None);
        }
        let ctx = crate::policy::TransitionCtx {
            ticket: t.clone(),
            from: t.stage,
            to,
            action: tr,
            actor: actor.clone(),
            history: self.store.history(&t.key).await?,
            overrides: workflow::overrides(&self.store, t, t.stage)
                .await?
                .unwrap_or_default(),
            store: self.store.clone(),
            proxy_base: self.proxy_base.clone(),
            roles: self.roles(),
        };
        let verdict = self.policies.check(&ctx).await;
        if !verdict.allowed() {
            let mut e = ApiError::new(422, ErrorCode::PolicyDenied, verdict.message());
            if let Value::Object(extra) = verdict.details() {
                e.body.extra = extra;
            }
            return Err(e);
        }
        Ok(Some(
            verdict.details()["warnings"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        ))
    }

    async fn list(&self, principal: &Principal, query: &str) -> ApiResult {
        require(principal, Action::Read)?;
        let mut stages: Option<Vec<Stage>> = None;
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            if k == "stage" {
                let mut list = Vec::new();
                for s in v.split(',').filter(|s| !s.is_empty()) {
                    list.push(
                        s.parse::<Stage>()
                            .map_err(|e| ApiError::bad("stage", e.to_string()))?,
                    );
                }
                stages = Some(list);
            }
        }
        let state = self.store.state().await?;
        let live = live_keys(&state.overlay, &state.tickets);
        let mut out = Vec::new();
        for t in &state.tickets {
            if stages.as_ref().is_some_and(|s| !s.contains(&t.stage)) {
                continue;
            }
            let mut dto = self.ticket_dto(t, false, &live, principal).await?;
            // Who touched it last, for lists: a person's change, not the
            // settler's bookkeeping of a release.
            dto.last = self
                .store
                .history(&t.key)
                .await?
                .into_iter()
                .rev()
                .find(|e| e.event != "baseline")
                .map(|e| LastDto {
                    event: e.event,
                    actor: e.actor,
                    at_ms: e.at_ms,
                });
            out.push(dto);
        }
        Ok((200, to_value(&TicketList { tickets: out })))
    }

    /// Stage, version and links, without loading any override set.
    /// A ticket's summary as `principal` sees it: `allowed_actions` are the
    /// moves its role may make from the ticket's stage, not every move the
    /// lifecycle has.
    fn summary(&self, t: &TicketRecord, principal: &Principal) -> TicketDto {
        let mut links = BTreeMap::new();
        if t.stage != Stage::Closed {
            links.insert(
                "dev".to_string(),
                self.links.share(&t.key, View::Dev, t.share_gen),
            );
            if t.qa.is_some() {
                links.insert(
                    "qa".to_string(),
                    self.links.share(&t.key, View::Qa, t.share_gen),
                );
            }
        }
        TicketDto {
            key: t.key.clone(),
            stage: t.stage,
            version: t.version,
            updated_ms: t.updated_ms,
            links,
            allowed_actions: stamp_model::roles::actions_for(principal.role, t.stage),
            created_ms: None,
            modules: BTreeMap::new(),
            live_in_production: None,
            overlay: None,
            history: None,
            last: None,
            warnings: Vec::new(),
        }
    }

    /// The tickets production serves now (the overlay rule's released set).
    async fn live(&self) -> Result<std::collections::HashSet<TicketKey>, ApiError> {
        let state = self.store.state().await?;
        Ok(live_keys(&state.overlay, &state.tickets))
    }

    /// A ticket with its overrides; with `full`, its history too. `live`:
    /// the tickets production serves now.
    async fn ticket_dto(
        &self,
        t: &TicketRecord,
        full: bool,
        live: &std::collections::HashSet<TicketKey>,
        principal: &Principal,
    ) -> Result<TicketDto, ApiError> {
        let mut dto = self.summary(t, principal);
        for stage in [Stage::Dev, Stage::Qa, Stage::Prod] {
            if let Some(set) = workflow::overrides(&self.store, t, stage).await? {
                dto.modules.insert(stage, ModuleDto::list(&set));
            }
        }
        dto.created_ms = Some(t.created_ms);
        dto.live_in_production = Some(live.contains(&t.key));
        if t.stage == Stage::Prod {
            let total = dto.modules.get(&Stage::Prod).map_or(0, Vec::len);
            let retired = match t.retired {
                Some(id) => self.store.get_set(&id).await?.map_or(0, |s| s.len()),
                None => 0,
            };
            dto.overlay = Some(OverlayDto {
                live: total.saturating_sub(retired) as u64,
                retired: retired as u64,
                baseline_recorded: t.baseline.is_some(),
            });
        }
        if full {
            dto.history = Some(self.store.history(&t.key).await?);
        }
        Ok(dto)
    }

    async fn upload(
        &self,
        principal: &Principal,
        key: &TicketKey,
        raw_path: &str,
        req: &Request<Bytes>,
    ) -> ApiResult {
        require(principal, Action::Upload)?;
        let path = normalize_module_path(raw_path, &self.cfg.api.extensions)?;
        let headers = req.headers();
        let path = location(headers, path, &self.cfg.api.asset_origins)?;
        let specifier = specifier(headers, &path)?;
        let known = match headers.get(h::HASH) {
            Some(v) => Some(
                v.to_str()
                    .ok()
                    .and_then(Hash::parse)
                    .ok_or_else(|| ApiError::bad(h::HASH, "must be a sha256 hex digest"))?,
            ),
            None => None,
        };
        let actor = actor_from(principal, headers);
        let body = req.body().clone();
        if body.len() as u64 > self.cfg.api.max_module_bytes {
            return Err(ApiError::new(
                413,
                ErrorCode::TooLarge,
                format!(
                    "the module is larger than {} bytes",
                    self.cfg.api.max_module_bytes
                ),
            ));
        }
        let body = match known {
            Some(hash) if body.is_empty() => Body::Known(hash),
            Some(hash) => {
                if Hash::of(&body) != hash {
                    return Err(ApiError::bad(h::HASH, "does not match the body's sha256"));
                }
                Body::Bytes(body)
            }
            None => Body::Bytes(body),
        };
        let existed = self.store.get_ticket(key).await?.is_some();
        let change = workflow::upload_limited(
            &self.store,
            key,
            &specifier,
            &path,
            body,
            self.cfg.api.max_modules_per_ticket,
            &actor,
        )
        .await?;
        let record = change.ticket.clone();
        self.fanout.publish(change);
        let set = workflow::overrides(&self.store, &record, Stage::Dev)
            .await?
            .unwrap_or_default();
        let answer = UploadResponse {
            ticket: key.clone(),
            stage: record.stage,
            version: record.version,
            module: set.get(&specifier).map(|m| ModuleDto::new(&specifier, m)),
            modules: set.len(),
        };
        Ok((if existed { 200 } else { 201 }, to_value(&answer)))
    }

    async fn delete(
        &self,
        principal: &Principal,
        key: &TicketKey,
        raw_path: &str,
        req: &Request<Bytes>,
    ) -> ApiResult {
        require(principal, Action::Delete)?;
        let path = normalize_module_path(raw_path, &self.cfg.api.extensions)?;
        let path = location(req.headers(), path, &self.cfg.api.asset_origins)?;
        let specifier = specifier(req.headers(), &path)?;
        let actor = actor_from(principal, req.headers());
        let change = workflow::delete(&self.store, key, &specifier, &actor).await?;
        let answer = DeleteResponse {
            ticket: key.clone(),
            stage: change.ticket.stage,
            version: change.ticket.version,
            deleted: specifier,
        };
        self.fanout.publish(change);
        Ok((200, to_value(&answer)))
    }

    /// Reads a transition's body and its precondition (`expected_version`,
    /// `If-Match` or `from`), checked against the ticket as it is now. With
    /// `required`, a request that states none is refused (428): two clicks,
    /// or two people, must never move a ticket twice.
    async fn precondition(
        &self,
        key: &TicketKey,
        req: &Request<Bytes>,
        required: bool,
    ) -> Result<(TransitionRequest, TicketRecord, Option<u64>), ApiError> {
        let body = read_transition(req.body())?;
        let t = self.ticket(key).await?;
        let expected = body.expected_version.or(if_match(req.headers())?);
        if let Some(v) = expected {
            if v != t.version {
                return Err(ApiError::moved(
                    format!("ticket {key} is at version {}, not {v}", t.version),
                    &t,
                ));
            }
        }
        if let Some(from) = body.from {
            if from != t.stage {
                return Err(ApiError::moved(
                    format!("ticket {key} is in {}, not {from}", t.stage),
                    &t,
                ));
            }
        }
        if required && expected.is_none() && body.from.is_none() {
            let mut e = ApiError::new(
                428,
                ErrorCode::PreconditionRequired,
                format!(
                    "say what this move starts from: send {{\"expected_version\": {}}} (or \
                     If-Match: \"{}\"), or {{\"from\": \"{}\"}}",
                    t.version, t.version, t.stage
                ),
            );
            e.body.version = Some(t.version);
            e.body.stage = Some(t.stage);
            return Err(e);
        }
        Ok((body, t, expected))
    }

    async fn sign_off(
        &self,
        principal: &Principal,
        key: &TicketKey,
        req: &Request<Bytes>,
        withdraw: bool,
    ) -> ApiResult {
        let (body, t, _) = self.precondition(key, req, false).await?;
        require(principal, Action::SignOff)?;
        if t.stage != Stage::Qa {
            return Err(WorkflowError::IllegalTransition {
                key: key.clone(),
                action: if withdraw {
                    "withdraw a sign-off of"
                } else {
                    "sign off"
                },
                stage: t.stage,
            }
            .into());
        }
        let actor = Actor {
            name: principal.name.clone(),
            commit: body.commit.clone(),
            branch: body.branch.clone(),
            role: signed_in_role(principal),
        };
        let change = if withdraw {
            let history = self.store.history(key).await?;
            if !crate::policy::signoff::has_standing(&history, &principal.name) {
                return Err(ApiError::new(
                    409,
                    ErrorCode::Conflict,
                    format!(
                        "{} has no sign-off of {key} standing to withdraw (none since its last upload or promotion)",
                        principal.name
                    ),
                ));
            }
            workflow::withdraw_sign_off(&self.store, &t, body.comment.clone(), &actor).await?
        } else {
            workflow::sign_off(&self.store, &t, body.comment.clone(), &actor).await?
        };
        let summary = self.summary(&change.ticket, principal);
        self.fanout.publish(change);
        Ok((200, to_value(&summary)))
    }

    async fn transition(
        &self,
        principal: &Principal,
        key: &TicketKey,
        tr: Transition,
        req: &Request<Bytes>,
    ) -> ApiResult {
        let (body, t, expected) = self.precondition(key, req, true).await?;
        let actor = Actor {
            name: principal.name.clone(),
            commit: body.commit.clone(),
            branch: body.branch.clone(),
            role: signed_in_role(principal),
        };
        if tr.target(t.stage).is_none() {
            return Err(WorkflowError::IllegalTransition {
                key: key.clone(),
                action: tr.as_str(),
                stage: t.stage,
            }
            .into());
        }
        require(principal, Action::Move(tr, t.stage))?;
        let verdict = self.check_policies(&t, tr, &actor).await?;
        let checked = verdict.is_some();
        let warnings = verdict.unwrap_or_default();
        // A checked transition applies only to the version the policies
        // saw: an upload in between would make their verdict stale.
        let change = self
            .transition_retrying(key, tr, &t, expected.is_some() || checked, &actor)
            .await?;
        // A summary, not the module lists: a transition is a pointer move and
        // its answer should not cost more than the move itself.
        let mut summary = self.summary(&change.ticket, principal);
        summary.warnings = warnings;
        self.fanout.publish(change);
        Ok((200, to_value(&summary)))
    }

    /// Token name → role, for policies that count sign-offs by role.
    fn roles(&self) -> std::collections::HashMap<String, stamp_model::roles::Role> {
        if self.cfg.open() {
            return [("anonymous".to_string(), stamp_model::roles::Role::Admin)].into();
        }
        self.cfg
            .tokens
            .iter()
            .map(|t| (t.name.clone(), t.role))
            .collect()
    }

    /// Applies a transition to the ticket as read. Without an explicit expected
    /// version (a `from` stage only), a concurrent change that left the stage
    /// as it was (an upload, a sign-off, the settler's bookkeeping) is not the
    /// caller's concern: the transition is retried on the new version. A
    /// change of stage is: then it is a conflict, so a double click never
    /// promotes twice.
    async fn transition_retrying(
        &self,
        key: &TicketKey,
        tr: Transition,
        read: &TicketRecord,
        explicit: bool,
        actor: &Actor,
    ) -> Result<workflow::Change, ApiError> {
        let mut version = read.version;
        for _ in 0..8 {
            match workflow::transition(&self.store, key, tr, Some(version), actor).await {
                Err(WorkflowError::Store(StoreError::Conflict { .. })) if !explicit => {
                    let now = self.ticket(key).await?;
                    if now.stage != read.stage {
                        return Err(ApiError::moved(
                            format!("ticket {key} moved to {} meanwhile", now.stage),
                            &now,
                        ));
                    }
                    version = now.version;
                }
                other => return other.map_err(ApiError::from),
            }
        }
        Err(ApiError::new(
            409,
            ErrorCode::Conflict,
            format!("ticket {key} keeps changing; try again"),
        ))
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
                    ErrorCode::NotFound,
                    format!("ticket {key} has no {stage} stage"),
                )
            })?;
        // The production overlay underneath, by the rule the proxy serves.
        let state = self.store.state().await?;
        let mut sets = std::collections::HashMap::new();
        for id in overlay::needed_sets(&state.overlay, &state.tickets) {
            if let Some(set) = self.store.get_set(&id).await? {
                sets.insert(id, set);
            }
        }
        let mut all: OverrideSet =
            overlay::production(&state.overlay, &state.tickets, |id| sets.get(id))
                .map_err(|e| ApiError::from(StoreError::Corrupt(e.to_string())))?
                .overrides;
        all.extend(own);
        let imports: serde_json::Map<String, Value> = all
            .iter()
            .map(|(k, m)| (k.clone(), json!(m.url())))
            .collect();
        Ok((200, json!({ "imports": imports })))
    }

    async fn missing(&self, body: &[u8]) -> ApiResult {
        let req: MissingRequest = parse_json(body)?;
        if req.hashes.len() > wire::MAX_MISSING {
            return Err(ApiError::bad(
                "hashes",
                format!("at most {} per request", wire::MAX_MISSING),
            ));
        }
        let mut hashes = Vec::with_capacity(req.hashes.len());
        for (i, h) in req.hashes.iter().enumerate() {
            hashes.push(Hash::parse(h).ok_or_else(|| {
                ApiError::bad(&format!("hashes[{i}]"), "not a sha256 hex digest")
            })?);
        }
        let missing = self.store.missing_modules(&hashes).await?;
        Ok((200, to_value(&MissingResponse { missing })))
    }
}

fn live_keys(
    order: &[TicketKey],
    tickets: &[TicketRecord],
) -> std::collections::HashSet<TicketKey> {
    overlay::released(order, tickets)
        .into_iter()
        .map(|t| t.key.clone())
        .collect()
}

/// Parses and checks the optional body of a transition.
fn read_transition(body: &[u8]) -> Result<TransitionRequest, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(TransitionRequest::default());
    }
    let req: TransitionRequest = parse_json(body)?;
    for (field, value) in [
        ("commit", &req.commit),
        ("branch", &req.branch),
        ("comment", &req.comment),
    ] {
        if value
            .as_ref()
            .is_some_and(|v| v.len() > wire::MAX_TEXT || v.chars().any(char::is_control))
        {
            return Err(ApiError::bad(
                field,
                format!("must be at most {} printable characters", wire::MAX_TEXT),
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

/// Parses a JSON body, naming the field at fault.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        let msg = e.to_string();
        ApiError::bad(&json_field(&msg, body), format!("malformed JSON: {msg}"))
    })
}

/// The field a serde_json error is about: the one it names in backticks
/// ("unknown field `x`", "missing field `y`"), or, for a type error, the
/// key just before the error's column ("invalid type: string, expected
/// u64" says no name).
fn json_field(msg: &str, body: &[u8]) -> String {
    if msg.contains("field") {
        if let Some(name) = msg.split('`').nth(1) {
            return name.to_string();
        }
    }
    // "… at line L column C": find the last `"key":` before that point.
    let column = msg
        .rsplit("column ")
        .next()
        .and_then(|c| c.trim().parse::<usize>().ok());
    let line = msg
        .split(" at line ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|l| l.parse::<usize>().ok());
    if let (Some(line), Some(column)) = (line, column) {
        let text = String::from_utf8_lossy(body);
        let offset: usize = text
            .split('\n')
            .take(line.saturating_sub(1))
            .map(|l| l.len() + 1)
            .sum::<usize>()
            + column;
        let before = &text[..offset.min(text.len())];
        if let Some(colon) = before.rfind(':') {
            let key = before[..colon].trim_end();
            if let Some(stripped) = key.strip_suffix('"') {
                if let Some(start) = stripped.rfind('"') {
                    return stripped[start + 1..].to_string();
                }
            }
        }
    }
    "body".to_string()
}

/// `If-Match: "3"` (a ticket's version as its ETag).
fn if_match(headers: &http::HeaderMap) -> Result<Option<u64>, ApiError> {
    match headers.get(header::IF_MATCH) {
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
    if allowed(principal.role, action) {
        Ok(())
    } else {
        Err(ApiError::new(
            403,
            ErrorCode::Forbidden,
            format!(
                "token `{}` ({} role) may not {}",
                principal.name,
                principal.role.as_str(),
                action.describe()
            ),
        ))
    }
}

fn parse_key(raw: &str) -> Result<TicketKey, ApiError> {
    TicketKey::parse(raw).map_err(|e| ApiError::bad("ticket", e.to_string()))
}

/// Where production serves the module: `path` on the app's origin, or on
/// the other origin named by `x-stamp-origin`, which must be one of the
/// configured `asset_origins` (a ticket must not pose as any site it likes).
fn location(
    headers: &http::HeaderMap,
    path: String,
    allowed: &[String],
) -> Result<String, ApiError> {
    let Some(v) = headers.get(h::ORIGIN) else {
        return Ok(path);
    };
    let text = v
        .to_str()
        .map_err(|_| ApiError::bad(h::ORIGIN, "must be visible ASCII"))?;
    let origin =
        stamp_model::assets::normalize_origin(text).map_err(|e| ApiError::bad(h::ORIGIN, e))?;
    if !allowed.contains(&origin) {
        let mut e = ApiError::new(
            403,
            ErrorCode::Forbidden,
            format!(
                "{origin} is not one of this proxy's asset_origins ({}); add it to the proxy's configuration to override modules there",
                if allowed.is_empty() {
                    "none configured".to_string()
                } else {
                    allowed.join(", ")
                }
            ),
        );
        e.body.field = Some(h::ORIGIN.to_string());
        return Err(e);
    }
    Ok(format!("{origin}{path}"))
}

/// The upload's specifier: the `x-stamp-specifier` header, or the path.
fn specifier(headers: &http::HeaderMap, path: &str) -> Result<String, ApiError> {
    match headers.get(h::SPECIFIER) {
        Some(v) => {
            let s = v
                .to_str()
                .map_err(|_| ApiError::bad(h::SPECIFIER, "must be visible ASCII"))?;
            wire::validate_specifier(s, path)
                .map_err(|e| ApiError::bad(h::SPECIFIER, e.to_string()))
        }
        None => Ok(path.to_string()),
    }
}

/// The role recorded with a signed-in person's actions (sign-off policies
/// read it there); a token's role is the configuration's, now.
fn signed_in_role(p: &Principal) -> Option<stamp_model::roles::Role> {
    matches!(p.via, crate::auth::Via::SignIn(_)).then_some(p.role)
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
        commit: text(h::COMMIT).filter(|c| c.bytes().all(|b| b.is_ascii_hexdigit())),
        branch: text(h::BRANCH),
        role: signed_in_role(principal),
    }
}

/// The raw (still percent-encoded) path after `tickets/{KEY}/modules`.
fn path_after(full: &str, leading: &[&str]) -> String {
    let skip = PREFIX.len() + leading.iter().map(|s| s.len() + 1).sum::<usize>();
    full.get(skip..).unwrap_or("").to_string()
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
    if decoded.contains('%') {
        // `%252e%252e` decodes to `%2e%2e`: whoever decodes it once more
        // (a CDN, a static server) would see `..`.
        return Err(bad(
            "the module path has a `%` after decoding (encoded twice?)",
        ));
    }
    if decoded.contains('?') || decoded.contains('#') {
        return Err(bad("the module path has a query or fragment"));
    }
    if wire::is_reserved(&format!("/{decoded}")) {
        return Err(bad(
            "the module path is under /__stamp/, which the proxy answers itself",
        ));
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
            ErrorCode::UnsupportedType,
            format!(
                "`.{ext}` modules are not accepted (allowed: {})",
                extensions.join(", ")
            ),
        );
        e.body.field = Some("path".to_string());
        return Err(e);
    }
    Ok(format!("/{decoded}"))
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
            "src/%252e%252e/x.js",
            "%252e%252e/etc.js",
            "src/100%25.js",
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
    fn json_errors_name_the_field() {
        let e = parse_json::<TransitionRequest>(br#"{"expected_version": "three"}"#).unwrap_err();
        assert_eq!(e.body.field.as_deref(), Some("expected_version"), "{e:?}");
        let e = parse_json::<TransitionRequest>(
            b"{\n  \"commit\": \"abcd\",\n  \"expected_version\": true\n}",
        )
        .unwrap_err();
        assert_eq!(e.body.field.as_deref(), Some("expected_version"), "{e:?}");
        let e = parse_json::<TransitionRequest>(br#"{"surprise": 1}"#).unwrap_err();
        assert_eq!(e.body.field.as_deref(), Some("surprise"));
        let e = parse_json::<TransitionRequest>(b"[1, 2").unwrap_err();
        assert_eq!(e.body.field.as_deref(), Some("body"));
    }
}
