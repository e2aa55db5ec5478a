//! The control API under `/__stamp/api/v1/`: JSON over HTTP on the proxy's
//! own listener, used by the `stamp` CLI and the QA panel. A router over
//! `http::Request<Bytes>`, callable without a socket.
//!
//! Every route is in [`routes::ROUTES`], which the router dispatches
//! through; the OpenAPI 3.1 description (`openapi.json` next to the crate's
//! manifest, served at `GET openapi.json`) describes each of them, and
//! `tests/tests/e2e/openapi.rs` keeps the two equal. In short:
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `tickets[?stage=qa,prod&q=&who=&updated_since=&limit=&cursor=]` | a page of tickets, most recently updated first (`next`: the following page's cursor) |
//! | GET | `tickets/{KEY}` | one ticket: stage, overrides per stage, links, history |
//! | GET | `tickets/{KEY}/setup`, `check?action=`, `diff?stage=&against=`, `importmap?stage=` | what a ticket needs, a move's verdict, what it changes, its import map |
//! | PUT | `tickets/{KEY}/modules/{path}` | upload a module to dev (body = module) |
//! | DELETE | `tickets/{KEY}/modules/{path}` | remove an override from dev |
//! | POST | `tickets/{KEY}/promote` `revert` `close` `reopen` | move the ticket (`expected_version`, `If-Match` or `from` required) |
//! | POST | `tickets/{KEY}/rollout` | a step of a rollout in progress |
//! | POST | `tickets/{KEY}/sign-off` `withdraw-sign-off` | sign off a ticket in qa, or take it back |
//! | POST | `tickets/{KEY}/revoke-links` | revoke every signed share link (preview protection) |
//! | POST | `modules/missing` | which of these hashes the store lacks |
//! | POST | `store/adopt` | admin: accept a store that lost its state as it is now |
//! | GET | `production/history?limit=N` | what production served, change by change |
//! | POST | `production/revert` | take production back to a commit of that log (`{"to": id}`) |
//! | GET | `events` | the panel's server-sent events (answered by the router) |
//! | GET | `openapi.json` | this API's OpenAPI 3.1 description |
//!
//! Every error is the model's envelope, `{"error": {"code", "message", …}}`,
//! with a fitting status; caller mistakes are not logged as errors and
//! internal details are not leaked.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Request};
mod changes;
mod diff;
mod input;
mod modules;
mod moves;
mod production;
pub mod routes;
mod setup;
mod tickets;

use input::*;
use routes::Op;

use serde::Serialize;
use serde_json::{json, Value};
use stamp_model::lifecycle::Transition;
use stamp_model::overlay;
use stamp_model::roles::{allowed, Action};
use stamp_model::ticket::{Hash, OverrideSet, Stage, TicketKey, View};
use stamp_model::wire::{
    self, header as h, DeleteResponse, ErrorCode, LastDto, MissingRequest, MissingResponse,
    ModuleDto, OverlayDto, TicketDto, TicketList, TransitionRequest, UploadResponse, MAX_PATH,
};
use stamp_store::{SharedStore, StoreError, TicketRecord};

use super::error::WebError;
use crate::config::ControlConfig;
use crate::effects::history_repo::HistoryRepo;
use crate::effects::Desk;
use crate::identity::Principal;
use crate::kinds::{Actor, Change, Links};
use crate::workflow::{self, Body, WorkflowError};

/// A JSON answer: status and body.
pub type ApiResult = Result<(u16, Value), WebError>;

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
    /// Every change is made, and published, through here.
    pub desk: Desk,
    /// The production history repository, when one is configured.
    pub history: Option<Arc<HistoryRepo>>,
    /// Reads production through the proxy (the diff's "before").
    pub http: reqwest::Client,
    /// `http://127.0.0.1:PORT` of this proxy (the sanity policy goes through it).
    pub proxy_base: String,
    /// The origin itself, for the setup check (production as it is).
    pub origin: crate::OriginAccess,
    /// Releases by steps.
    pub rollouts: crate::rollouts::Rollouts,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Api")
    }
}

impl Api {
    /// Answers one API request of an authenticated caller, on the route
    /// the router matched ([`routes::route`]).
    pub async fn handle(
        &self,
        matched: routes::Matched<'_>,
        req: &Request<Bytes>,
        principal: &Principal,
    ) -> ApiResult {
        let query = req.uri().query().unwrap_or("");
        let key = || parse_key(matched.key.unwrap_or_default());
        let raw_path = || matched.path.unwrap_or_default().to_string();
        match matched.route.op {
            Op::ListTickets => self.list(principal, query).await,
            Op::GetTicket => {
                let key = key()?;
                require(principal, Action::Read)?;
                let t = self.ticket(&key).await?;
                let live = self.live().await?;
                Ok((
                    200,
                    to_value(&self.ticket_dto(&t, true, &live, principal).await?),
                ))
            }
            Op::Setup => self.setup(principal, &key()?).await,
            Op::Upload => self.upload(principal, &key()?, &raw_path(), req).await,
            Op::DeleteModule => self.delete(principal, &key()?, &raw_path(), req).await,
            Op::SignOff => self.sign_off(principal, &key()?, req, false).await,
            Op::WithdrawSignOff => self.sign_off(principal, &key()?, req, true).await,
            Op::RevokeLinks => {
                let key = key()?;
                require(principal, Action::Read)?;
                let t = self.ticket(&key).await?;
                let actor = actor_from(principal, req.headers());
                let change = self.desk.revoke_links(&t, &actor).await?;
                let summary = self.summary(&change.ticket, principal);
                Ok((200, to_value(&summary)))
            }
            Op::Rollout => self.rollout_step(principal, &key()?, req).await,
            Op::Move(tr) => self.transition(principal, &key()?, tr, req).await,
            Op::Check => {
                let key = key()?;
                require(principal, Action::Read)?;
                self.dry_run(principal, &key, query, req).await
            }
            Op::Diff => {
                let key = key()?;
                require(principal, Action::Read)?;
                self.diff(&key, query).await
            }
            Op::ImportMap => {
                let key = key()?;
                require(principal, Action::Read)?;
                self.importmap(&key, query).await
            }
            Op::ProductionHistory => {
                require(principal, Action::Read)?;
                self.production_history(query).await
            }
            Op::ProductionRevert => self.production_revert(principal, req).await,
            Op::Missing => {
                require(principal, Action::Read)?;
                self.missing(req.body()).await
            }
            Op::Adopt => {
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
            Op::Description => {
                require(principal, Action::Read)?;
                Ok((200, routes::description().clone()))
            }
            // A stream, not a JSON answer: the router answers it before
            // calling here.
            Op::Events => Err(WebError::new(
                500,
                ErrorCode::Internal,
                "the event stream is answered by the router",
            )),
        }
    }

    pub(super) async fn ticket(&self, key: &TicketKey) -> Result<TicketRecord, WebError> {
        if let Some(t) = self.store.get_ticket(key).await? {
            return Ok(t);
        }
        // A closed ticket past retention is gone, but its history is kept:
        // say so, rather than "does not exist".
        let history = self.store.history(key).await?;
        if let Some(purged) = history.iter().rev().find(|e| e.event == "purged") {
            let mut e = WebError::new(
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
        Err(WebError::new(
            404,
            ErrorCode::NotFound,
            format!("ticket {key} does not exist"),
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::modules::normalize_module_path;
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
        // Not UTF-8: schemathesis sent `\xff` as JSON, and the field
        // finder sliced a lossy copy at serde's byte offset and panicked.
        for body in [
            &b"\xff"[..],
            b"\xff\xff\xff:",
            b"{\"\xe9\":\xff}",
            b"{\"commit\": \"\xff\"}",
        ] {
            let e = parse_json::<TransitionRequest>(body).unwrap_err();
            assert_eq!(e.status, 400, "{body:?}");
        }
        let e = parse_json::<TransitionRequest>(
            b"{\"\xc3\xa9t\xc3\xa9\": 1, \"expected_version\": \"\xff\"}",
        )
        .unwrap_err();
        assert_eq!(e.status, 400);
    }
}
