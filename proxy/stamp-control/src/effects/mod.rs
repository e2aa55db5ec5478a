//! Effects of a change: the one fan-out that delivers every change to its
//! consumers (hooks, the production history repository, the settler's
//! baseline), the history repository itself, the background jobs, and the
//! [`Desk`], through which whoever changes a ticket (the API, tools, the
//! demo) makes the change and publishes it in one call.
//!
//! The workflow's operations return an `Unpublished` change that only
//! [`Fanout::publish`] opens, so no consumer is reached by one path and
//! skipped by another.

mod desk;
pub(crate) mod history_repo;
pub(crate) mod jobs;

use std::sync::Arc;

use stamp_model::ticket::{Stage, View};
use stamp_store::SharedStore;

use crate::hooks::Dispatcher;
use crate::kinds::{Change, ChangeKind, Event, Links, Unpublished};
use crate::workflow::settle::Settler;
use history_repo::HistoryRepo;

pub use desk::{Desk, DEFAULT_SKEW};

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
    pub(crate) fn publish(self: &Arc<Self>, change: Unpublished) -> Change {
        let change = change.open();
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
                detail: match change.kind {
                    ChangeKind::RolloutStep | ChangeKind::Promoted | ChangeKind::Reverted => {
                        change.detail.clone()
                    }
                    _ => None,
                },
                version: t.version,
                rollout: t.rollout.clone(),
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
                        Ok(Some(c)) => {
                            me.publish(c);
                        }
                        Ok(None) => {}
                        Err(e) => log::warn!("{key}: cannot record the origin baseline yet: {e}"),
                    }
                });
            }
        }
        change
    }
}
