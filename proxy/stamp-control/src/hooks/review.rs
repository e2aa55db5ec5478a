//! What the hooks that speak to a code review (a GitHub pull request, a
//! GitLab merge request) share: the note they keep in place, the branch and
//! commit last seen per ticket, and the steps of an event already done, so
//! a retried event does not repeat them.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Mutex;

use super::{describe, Event, EventKind, HookError};
use stamp_model::ticket::{Stage, TicketKey};

/// The hidden marker that finds our note again.
pub fn marker(ticket: &TicketKey) -> String {
    format!("<!-- ticket-stamp:{ticket} -->")
}

/// The note on the pull or merge request: the marker, the stage, the share
/// link and the last change, in Markdown both forges render.
pub fn note_body(e: &Event) -> String {
    let stage = e.to.map_or("unknown", |s| s.as_str());
    let mut body = format!(
        "{}\n### ticket-stamp · `{}` is in **{stage}**\n\n",
        marker(&e.ticket),
        e.ticket
    );
    match (&e.share_link, e.to) {
        (_, Some(Stage::Prod)) => {
            body.push_str("Released: every visitor of production gets it.\n\n")
        }
        (_, Some(Stage::Closed)) => body.push_str("Closed: no link serves it any more.\n\n"),
        (Some(link), _) => body.push_str(&format!("Preview: {link}\n\n")),
        (None, _) => {}
    }
    body.push_str(&format!("_Last change: {}._\n", describe(e)));
    body
}

/// Where a ticket stands after an event, for a commit status: each forge
/// names the states its own way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// A promotion passed every policy.
    Passed,
    /// A rollout is stepping.
    Stepping,
    /// In dev, or back after a revert: not promoted yet.
    Waiting,
    Closed,
}

/// The standing an event leaves and its words.
pub fn standing(e: &Event) -> (Standing, String) {
    let to = e.to.map_or("?", |s| s.as_str());
    match e.kind {
        EventKind::Promoted if e.to == Some(Stage::Prod) => (
            Standing::Passed,
            format!(
                "{} released to production by {}: every policy passed",
                e.ticket, e.actor
            ),
        ),
        EventKind::Promoted => (
            Standing::Passed,
            format!(
                "{} promoted to {to} by {}: every policy passed",
                e.ticket, e.actor
            ),
        ),
        EventKind::RolloutStep => (Standing::Stepping, describe(e)),
        EventKind::Reverted => (
            Standing::Waiting,
            format!("{} reverted to {to} by {}", e.ticket, e.actor),
        ),
        EventKind::Closed => (
            Standing::Closed,
            format!("{} closed by {}", e.ticket, e.actor),
        ),
        _ => (
            Standing::Waiting,
            format!("{} in {to}: not promoted yet", e.ticket),
        ),
    }
}

/// A ticket's branch and commit, as last seen.
pub type Source = (Option<String>, Option<String>);

/// The branch and commit last seen per ticket, for events without them (a
/// panel click sends none).
#[derive(Default)]
pub struct Sources(Mutex<HashMap<TicketKey, Source>>);

impl Sources {
    /// Records what `e` carries and answers what is known now.
    pub fn see(&self, e: &Event) -> Result<Source, HookError> {
        let mut seen = self
            .0
            .lock()
            .map_err(|_| HookError::Permanent("state lock poisoned".into()))?;
        let entry = seen.entry(e.ticket.clone()).or_default();
        if e.branch.is_some() {
            entry.0 = e.branch.clone();
        }
        if e.commit.is_some() {
            entry.1 = e.commit.clone();
        }
        Ok(entry.clone())
    }
}

/// The steps already done per event.
#[derive(Default)]
pub struct Steps(Mutex<HashSet<(String, u64, &'static str)>>);

impl Steps {
    /// Runs `step` once per event, however often the event is retried;
    /// `to_hook` says which failures are worth a retry.
    pub async fn once<F, Fut, E>(
        &self,
        e: &Event,
        name: &'static str,
        to_hook: fn(E) -> HookError,
        step: F,
    ) -> Result<(), HookError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(), E>>,
    {
        let id = (e.ticket.to_string(), e.at_ms, name);
        if self.0.lock().map(|d| d.contains(&id)).unwrap_or(false) {
            return Ok(());
        }
        step().await.map_err(to_hook)?;
        if let Ok(mut d) = self.0.lock() {
            if d.len() > 10_000 {
                d.clear();
            }
            d.insert(id);
        }
        Ok(())
    }

    /// The event was delivered: forget its steps.
    pub fn forget(&self, e: &Event) {
        if let Ok(mut d) = self.0.lock() {
            let ticket = e.ticket.to_string();
            d.retain(|(t, at, _)| !(t == &ticket && *at == e.at_ms));
        }
    }
}
