//! The one door for changing a ticket: each method runs one workflow
//! operation and publishes its change before returning it.

use std::sync::Arc;

use bytes::Bytes;
use stamp_model::lifecycle::Transition;
use stamp_model::ticket::TicketKey;
use stamp_store::{SharedStore, TicketRecord};

use super::Fanout;
use crate::hooks::Dispatcher;
use crate::kinds::{Actor, Change, Links};
use crate::workflow::{self, Body, WorkflowError};

/// Skew protection by default: a week.
pub const DEFAULT_SKEW: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// Makes workflow changes and publishes them, in one call.
#[derive(Clone)]
pub struct Desk {
    store: SharedStore,
    fanout: Arc<Fanout>,
    /// Skew protection: how long what production stops serving stays
    /// servable.
    skew: std::time::Duration,
}

impl std::fmt::Debug for Desk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Desk")
            .field("store", &self.store.describe())
            .field("fanout", &self.fanout)
            .finish()
    }
}

impl Desk {
    pub(crate) fn new(store: SharedStore, fanout: Arc<Fanout>) -> Desk {
        Desk {
            store,
            fanout,
            skew: DEFAULT_SKEW,
        }
    }

    /// The same desk with another skew protection window.
    pub fn with_skew(mut self, skew: std::time::Duration) -> Desk {
        self.skew = skew;
        self
    }

    /// A desk whose changes reach nobody: no hooks, no history repository,
    /// no settler. For tools that seed a store (the demo, tests); the
    /// changes still go through the same door.
    pub fn detached(store: SharedStore) -> Desk {
        let fanout = Fanout::new(
            store.clone(),
            Arc::new(Dispatcher::default()),
            None,
            None,
            Links::new("http://127.0.0.1", None),
        );
        Desk::new(store, Arc::new(fanout))
    }

    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    /// Uploads one module to the ticket's dev stage (see [`workflow::upload`]).
    pub async fn upload(
        &self,
        key: &TicketKey,
        specifier: &str,
        path: &str,
        body: Bytes,
        actor: &Actor,
    ) -> Result<Change, WorkflowError> {
        self.upload_limited(key, specifier, path, Body::Bytes(body), usize::MAX, actor)
            .await
    }

    /// [`Desk::upload`] of bytes or of a body the store has, with a
    /// module-count limit.
    pub async fn upload_limited(
        &self,
        key: &TicketKey,
        specifier: &str,
        path: &str,
        body: Body,
        max_modules: usize,
        actor: &Actor,
    ) -> Result<Change, WorkflowError> {
        let c =
            workflow::upload_limited(&self.store, key, specifier, path, body, max_modules, actor)
                .await?;
        Ok(self.fanout.publish(c))
    }

    pub async fn delete(
        &self,
        key: &TicketKey,
        specifier: &str,
        actor: &Actor,
    ) -> Result<Change, WorkflowError> {
        let c = workflow::delete(&self.store, key, specifier, actor).await?;
        Ok(self.fanout.publish(c))
    }

    /// Moves the ticket as read at `expected_version` (now, when `None`).
    pub async fn transition(
        &self,
        key: &TicketKey,
        what: Transition,
        expected_version: Option<u64>,
        actor: &Actor,
    ) -> Result<Change, WorkflowError> {
        self.transition_with(key, what, expected_version, actor, None, None)
            .await
    }

    /// [`Desk::transition`], releasing by steps when `rollout` is given,
    /// with `detail` (why) in the history.
    pub async fn transition_with(
        &self,
        key: &TicketKey,
        what: Transition,
        expected_version: Option<u64>,
        actor: &Actor,
        rollout: Option<stamp_model::rollout::Rollout>,
        detail: Option<String>,
    ) -> Result<Change, WorkflowError> {
        let options = workflow::MoveOptions {
            rollout,
            skew_ms: u64::try_from(self.skew.as_millis()).unwrap_or(u64::MAX),
            detail,
        };
        let c =
            workflow::transition(&self.store, key, what, expected_version, actor, &options).await?;
        Ok(self.fanout.publish(c))
    }

    /// Takes a step of a rollout in progress.
    pub async fn step(
        &self,
        key: &TicketKey,
        step: workflow::Step,
        expected_version: Option<u64>,
        actor: &Actor,
        why: Option<String>,
    ) -> Result<Change, WorkflowError> {
        let c = workflow::step(&self.store, key, step, expected_version, actor, why).await?;
        Ok(self.fanout.publish(c))
    }

    pub async fn sign_off(
        &self,
        t: &TicketRecord,
        comment: Option<String>,
        actor: &Actor,
    ) -> Result<Change, WorkflowError> {
        let c = workflow::sign_off(&self.store, t, comment, actor).await?;
        Ok(self.fanout.publish(c))
    }

    pub async fn withdraw_sign_off(
        &self,
        t: &TicketRecord,
        comment: Option<String>,
        actor: &Actor,
    ) -> Result<Change, WorkflowError> {
        let c = workflow::withdraw_sign_off(&self.store, t, comment, actor).await?;
        Ok(self.fanout.publish(c))
    }

    pub async fn revoke_links(
        &self,
        t: &TicketRecord,
        actor: &Actor,
    ) -> Result<Change, WorkflowError> {
        let c = workflow::revoke_links(&self.store, t, actor).await?;
        Ok(self.fanout.publish(c))
    }
}
