//! Settling released tickets: a released ticket's overrides shadow the origin
//! only until the origin itself serves that code, so a later deploy of the
//! origin is never hidden by a stale overlay.
//!
//! At release the settler records what the origin served at each overridden
//! URL (the baseline). A background check then fetches each URL again:
//! - the origin now serves the ticket's bytes → the override is retired
//!   ("settled");
//! - it still serves the baseline → the override stays live;
//! - it serves a third version → by default the origin wins and the override
//!   is retired ("origin-diverged"); with `settle.third_version = "ticket"`
//!   the override stays. Either way the event is recorded.
//!
//! Retiring is a commit like any other (versioned, atomic, in the history),
//! so every proxy of a fleet drops the override from its overlay at once.

use std::time::Duration;

use stamp_model::ticket::{Hash, ModuleRef, OverrideSet, Stage, TicketKey};
use stamp_store::{now_ms, Commit, HistoryEvent, OverlayOp, SharedStore, StoreError, TicketRecord};

use crate::kinds::{Actor, Change, ChangeKind, Unpublished};

/// The actor recorded on the settler's history events.
pub const ACTOR: &str = "settler";

/// Why a settle step failed (the next pass tries again).
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the origin: {0}")]
    Origin(String),
}

/// Who wins when the origin starts serving neither the baseline nor the
/// ticket's version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThirdVersion {
    Origin,
    Ticket,
}

/// Checks released tickets against the origin.
pub struct Settler {
    store: SharedStore,
    /// `scheme://host:port` of the origin.
    origin: String,
    /// Host header to send, when not the origin's own.
    host: Option<String>,
    client: reqwest::Client,
    third: ThirdVersion,
}

impl std::fmt::Debug for Settler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settler")
            .field("origin", &self.origin)
            .finish()
    }
}

/// What one pass did.
#[derive(Debug, Default)]
pub struct Pass {
    pub baselines: usize,
    pub settled: usize,
    pub diverged: usize,
    /// The changes committed, for the fan-out.
    pub changes: Vec<Unpublished>,
}

impl Settler {
    pub fn new(
        store: SharedStore,
        origin: String,
        host: Option<String>,
        verify_cert: bool,
        third: ThirdVersion,
    ) -> Settler {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .danger_accept_invalid_certs(!verify_cert)
            .no_proxy()
            .build()
            .unwrap_or_default();
        Settler {
            store,
            origin,
            host,
            client,
            third,
        }
    }

    /// The sha256 of what the origin serves at `path` now (`None` if it does
    /// not answer 200).
    async fn origin_hash(&self, path: &str) -> Result<Option<Hash>, SettleError> {
        // A module on another origin (a CDN) is checked there, as it is.
        let remote = stamp_model::assets::is_remote(path);
        let url = if remote {
            path.to_string()
        } else {
            format!("{}{path}", self.origin)
        };
        let mut req = self.client.get(url);
        if let (Some(h), false) = (&self.host, remote) {
            req = req.header(http::header::HOST, h.as_str());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| SettleError::Origin(format!("GET {path}: {e}")))?;
        if resp.status() != reqwest::StatusCode::OK {
            return Ok(None);
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| SettleError::Origin(format!("GET {path}: {e}")))?;
        Ok(Some(Hash::of(&body)))
    }

    async fn set(&self, id: Option<Hash>) -> Result<OverrideSet, StoreError> {
        match id {
            None => Ok(OverrideSet::new()),
            Some(id) => self
                .store
                .get_set(&id)
                .await?
                .ok_or_else(|| StoreError::Corrupt(format!("override set {id} is missing"))),
        }
    }

    /// Records the baseline of a released ticket that has none yet; the
    /// change, when one was committed.
    pub async fn record_baseline(
        &self,
        key: &TicketKey,
    ) -> Result<Option<Unpublished>, SettleError> {
        let Some(t) = self.store.get_ticket(key).await? else {
            return Ok(None);
        };
        if t.stage != Stage::Prod || t.baseline.is_some() {
            return Ok(None);
        }
        let prod = self.set(t.prod).await?;
        let mut baseline = OverrideSet::new();
        for (spec, m) in &prod {
            if let Some(hash) = self.origin_hash(&m.path).await? {
                baseline.insert(
                    spec.clone(),
                    ModuleRef {
                        path: m.path.clone(),
                        hash,
                        size: 0,
                    },
                );
            }
        }
        let id = self.store.put_set(&baseline).await?;
        let detail = format!(
            "origin baseline of {} of {} overridden URLs",
            baseline.len(),
            prod.len()
        );
        let next = TicketRecord {
            version: t.version + 1,
            baseline: Some(id),
            ..t.clone()
        };
        self.commit(&t, next, ChangeKind::Baseline, "baseline", detail)
            .await
    }

    async fn commit(
        &self,
        t: &TicketRecord,
        next: TicketRecord,
        kind: ChangeKind,
        event: &str,
        detail: String,
    ) -> Result<Option<Unpublished>, SettleError> {
        let event = HistoryEvent {
            at_ms: now_ms(),
            event: event.to_string(),
            from: Some(t.stage),
            to: Some(t.stage),
            actor: ACTOR.into(),
            commit: None,
            branch: None,
            role: None,
            source: None,
            detail: Some(detail.clone()),
        };
        match self
            .store
            .commit(Commit {
                ticket: next.clone(),
                expected_version: Some(t.version),
                overlay: OverlayOp::Keep,
                event: Some(event),
            })
            .await
        {
            Ok(_) => Ok(Some(Unpublished::new(Change::new(
                kind,
                next,
                Some(t.stage),
                &Actor::named(ACTOR),
                Some(detail),
            )))),
            // Someone moved the ticket meanwhile: the next pass looks again.
            Err(StoreError::Conflict { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// One pass over every released ticket.
    pub async fn check_all(&self) -> Result<Pass, SettleError> {
        let state = self.store.state().await?;
        let mut pass = Pass::default();
        for key in &state.overlay {
            let Some(t) = state.tickets.iter().find(|t| &t.key == key) else {
                continue;
            };
            if t.stage != Stage::Prod {
                continue;
            }
            if t.baseline.is_none() {
                if let Some(c) = self.record_baseline(key).await? {
                    pass.baselines += 1;
                    pass.changes.push(c);
                }
                continue;
            }
            if let Some((settled, diverged, change)) = self.check(t).await? {
                pass.settled += settled;
                pass.diverged += diverged;
                pass.changes.push(change);
            }
        }
        Ok(pass)
    }

    /// Checks one released ticket; the counts and the change when one was
    /// committed.
    async fn check(
        &self,
        t: &TicketRecord,
    ) -> Result<Option<(usize, usize, Unpublished)>, SettleError> {
        let prod = self.set(t.prod).await?;
        let baseline = self.set(t.baseline).await?;
        let mut retired = self.set(t.retired).await?;
        let mut settled = Vec::new();
        let mut diverged = Vec::new();
        for (spec, m) in &prod {
            if retired.contains_key(spec) {
                continue;
            }
            let Some(now) = self.origin_hash(&m.path).await? else {
                continue;
            };
            if now == m.hash {
                settled.push(spec.clone());
                retired.insert(
                    spec.clone(),
                    ModuleRef {
                        path: m.path.clone(),
                        hash: now,
                        size: 0,
                    },
                );
            } else if baseline.get(spec).is_some_and(|b| b.hash != now) {
                diverged.push(spec.clone());
                if self.third == ThirdVersion::Origin {
                    retired.insert(
                        spec.clone(),
                        ModuleRef {
                            path: m.path.clone(),
                            hash: now,
                            size: 0,
                        },
                    );
                }
            }
        }
        if settled.is_empty() && (diverged.is_empty() || self.already_noted(t, &diverged).await) {
            return Ok(None);
        }
        let id = self.store.put_set(&retired).await?;
        let next = TicketRecord {
            version: t.version + 1,
            retired: Some(id),
            ..t.clone()
        };
        let (kind, event, detail) = if diverged.is_empty() {
            (
                ChangeKind::Settled,
                "settled",
                format!("the origin now serves the ticket's {}", settled.join(", ")),
            )
        } else {
            let who = match self.third {
                ThirdVersion::Origin => "the origin wins",
                ThirdVersion::Ticket => "the ticket's version stays",
            };
            let mut d = format!(
                "the origin serves a third version of {}: {who}",
                diverged.join(", ")
            );
            if !settled.is_empty() {
                d.push_str(&format!("; settled {}", settled.join(", ")));
            }
            (ChangeKind::OriginDiverged, "origin-diverged", d)
        };
        if event == "origin-diverged" {
            log::warn!("{}: {detail}", t.key);
        } else {
            log::info!("{}: {detail}", t.key);
        }
        Ok(self
            .commit(t, next, kind, event, detail)
            .await?
            .map(|c| (settled.len(), diverged.len(), c)))
    }

    /// With `third_version = "ticket"` a divergence is recorded once, not on
    /// every pass.
    async fn already_noted(&self, t: &TicketRecord, diverged: &[String]) -> bool {
        if self.third == ThirdVersion::Origin {
            return false;
        }
        let Ok(history) = self.store.history(&t.key).await else {
            return false;
        };
        history
            .iter()
            .rev()
            .take_while(|e| e.event != "promote")
            .any(|e| {
                e.event == "origin-diverged"
                    && diverged
                        .iter()
                        .all(|s| e.detail.as_deref().is_some_and(|d| d.contains(s.as_str())))
            })
    }
}
