//! Changes as values, and the one fan-out that delivers them.
//!
//! Whoever changes a ticket — the API, the settler, the collector — gets a
//! [`Change`] back from the workflow and hands it to [`Fanout::publish`].
//! The fan-out tells the hooks, commits the production history repository
//! when what production serves changed, and asks the settler for a baseline
//! after a release. No consumer is reached by one path and skipped by another.

use std::sync::Arc;

use stamp_model::ticket::{Stage, View};
use stamp_model::wire::EventKind;
use stamp_store::{now_ms, SharedStore, TicketRecord};

use crate::history_repo::HistoryRepo;
use crate::hooks::{Dispatcher, Event};
use crate::links::Links;
use crate::settle::Settler;
use crate::workflow::Actor;

/// What happened to a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Uploaded,
    Deleted,
    /// A closed ticket re-opened in dev (by an upload, or `reopen`).
    Reopened,
    Promoted,
    Reverted,
    Closed,
    SignedOff,
    /// A sign-off taken back by who gave it.
    SignOffWithdrawn,
    LinksRevoked,
    /// The settler recorded what the origin served at release.
    Baseline,
    /// The origin now serves the ticket's code: overrides retired.
    Settled,
    /// The origin serves a third version of an overridden URL.
    OriginDiverged,
    /// The collector purged a closed ticket past retention.
    Purged,
}

impl ChangeKind {
    /// The event hooks are told of, if any.
    pub fn hook_event(self) -> Option<EventKind> {
        match self {
            ChangeKind::Uploaded => Some(EventKind::Uploaded),
            ChangeKind::Reopened => Some(EventKind::Reopened),
            ChangeKind::Promoted => Some(EventKind::Promoted),
            ChangeKind::Reverted => Some(EventKind::Reverted),
            ChangeKind::Closed => Some(EventKind::Closed),
            ChangeKind::SignedOff => Some(EventKind::SignedOff),
            ChangeKind::OriginDiverged => Some(EventKind::OriginDiverged),
            ChangeKind::Deleted
            | ChangeKind::SignOffWithdrawn
            | ChangeKind::LinksRevoked
            | ChangeKind::Baseline
            | ChangeKind::Settled
            | ChangeKind::Purged => None,
        }
    }
}

/// One change of one ticket, as committed.
#[derive(Debug, Clone)]
pub struct Change {
    pub kind: ChangeKind,
    /// The ticket's record after the change.
    pub ticket: TicketRecord,
    /// The stage it was in before (`None` for a new ticket).
    pub from: Option<Stage>,
    /// Who made it: a person, a token, or a job (`settler`, `gc`).
    pub actor: String,
    /// What it was about (a specifier, a comment, the settler's finding).
    pub detail: Option<String>,
    /// The git branch and commit the change was made from, as `stamp` sent them.
    pub branch: Option<String>,
    pub commit: Option<String>,
    pub at_ms: u64,
}

impl Change {
    pub fn new(
        kind: ChangeKind,
        ticket: TicketRecord,
        from: Option<Stage>,
        actor: &Actor,
        detail: Option<String>,
    ) -> Change {
        Change {
            kind,
            ticket,
            from,
            actor: actor.name.clone(),
            detail,
            branch: actor.branch.clone(),
            commit: actor.commit.clone(),
            at_ms: now_ms(),
        }
    }

    /// Whether what production serves may have changed: a release, a revert
    /// out of prod, or overrides retired by the settler.
    pub fn production_changed(&self) -> bool {
        match self.kind {
            ChangeKind::Promoted => self.ticket.stage == Stage::Prod,
            ChangeKind::Reverted => self.from == Some(Stage::Prod),
            ChangeKind::Settled | ChangeKind::OriginDiverged => true,
            _ => false,
        }
    }

    /// A line for the history repository's commit message.
    fn summary(&self) -> String {
        let key = &self.ticket.key;
        match self.kind {
            ChangeKind::Promoted => format!("{key} released to prod"),
            ChangeKind::Reverted => format!(
                "{key} reverted from {} to {}",
                self.from.unwrap_or(Stage::Prod),
                self.ticket.stage
            ),
            ChangeKind::Settled => format!("{key} settled"),
            ChangeKind::OriginDiverged => format!("{key}: the origin diverged"),
            _ => format!("{key} changed"),
        }
    }
}

/// Delivers every change to every consumer.
pub struct Fanout {
    store: SharedStore,
    hooks: Arc<Dispatcher>,
    history: Option<Arc<HistoryRepo>>,
    settler: Option<Arc<Settler>>,
    links: Links,
}

impl std::fmt::Debug for Fanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fanout")
            .field("hooks", &self.hooks)
            .field("history", &self.history.is_some())
            .finish()
    }
}

impl Fanout {
    pub fn new(
        store: SharedStore,
        hooks: Arc<Dispatcher>,
        history: Option<Arc<HistoryRepo>>,
        settler: Option<Arc<Settler>>,
        links: Links,
    ) -> Fanout {
        Fanout {
            store,
            hooks,
            history,
            settler,
            links,
        }
    }

    /// The production history repository, when one is configured.
    pub fn history(&self) -> Option<&Arc<HistoryRepo>> {
        self.history.as_ref()
    }

    pub fn hooks(&self) -> &Arc<Dispatcher> {
        &self.hooks
    }

    /// Tells every consumer; never blocks and never fails (each consumer
    /// runs off the caller's path and logs its own failures). Must be
    /// called on a Tokio runtime.
    pub fn publish(self: &Arc<Self>, change: Change) {
        if let Some(kind) = change.kind.hook_event() {
            let t = &change.ticket;
            let view = View::for_stage(t.stage);
            let share_link = (t.stage != Stage::Closed && (view == View::Dev || t.qa.is_some()))
                .then(|| self.links.share(&t.key, view, t.share_gen));
            self.hooks.emit(Event {
                kind,
                ticket: t.key.clone(),
                from: change.from,
                to: Some(t.stage),
                actor: change.actor.clone(),
                share_link,
                branch: change.branch.clone(),
                commit: change.commit.clone(),
                at_ms: change.at_ms,
            });
        }
        if change.production_changed() {
            if let Some(repo) = self.history.clone() {
                let store = self.store.clone();
                let what = change.summary();
                let actor = change.actor.clone();
                let key = change.ticket.key.clone();
                tokio::spawn(async move {
                    if let Err(e) = repo.record(&store, &what, &actor, Some(&key)).await {
                        log::error!("history repository: {e}");
                    }
                });
            }
        }
        if change.kind == ChangeKind::Promoted && change.ticket.stage == Stage::Prod {
            if let Some(settler) = self.settler.clone() {
                let me = self.clone();
                let key = change.ticket.key.clone();
                tokio::spawn(async move {
                    match settler.record_baseline(&key).await {
                        Ok(Some(c)) => me.publish(c),
                        Ok(None) => {}
                        Err(e) => log::warn!("{key}: cannot record the origin baseline yet: {e}"),
                    }
                });
            }
        }
    }
}
