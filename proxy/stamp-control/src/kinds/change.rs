//! Changes as values. Every workflow operation returns its change as an
//! [`Unpublished`] value, which only the one fan-out
//! (`effects::Fanout::publish`) can open: a change made is a change
//! published, or the compiler says so (`#[must_use]`, denied in this crate)
//! and the tests do (an unpublished change dropped in a debug build panics).

use stamp_model::ticket::Stage;
use stamp_model::wire::EventKind;
use stamp_store::{now_ms, TicketRecord};

use super::Actor;

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
    /// A rollout in progress took a step (a share, a pause, a resume).
    RolloutStep,
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
            ChangeKind::RolloutStep => Some(EventKind::RolloutStep),
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
            ChangeKind::Settled | ChangeKind::OriginDiverged | ChangeKind::RolloutStep => true,
            _ => false,
        }
    }

    /// A line for the history repository's commit message.
    pub(crate) fn summary(&self) -> String {
        let key = &self.ticket.key;
        match self.kind {
            ChangeKind::Promoted => match &self.ticket.rollout {
                Some(r) => format!("{key} released to {}% of prod", r.percent),
                None => format!("{key} released to prod"),
            },
            ChangeKind::Reverted => format!(
                "{key} reverted from {} to {}",
                self.from.unwrap_or(Stage::Prod),
                self.ticket.stage
            ),
            ChangeKind::Settled => format!("{key} settled"),
            ChangeKind::OriginDiverged => format!("{key}: the origin diverged"),
            ChangeKind::RolloutStep => format!(
                "{key} rollout: {}",
                self.detail.as_deref().unwrap_or("a step")
            ),
            _ => format!("{key} changed"),
        }
    }
}

/// A change committed to the store and not yet handed to the fan-out.
/// Only `effects::Fanout::publish` takes it apart.
#[must_use = "a change must reach its consumers: hand it to Fanout::publish (or publish it through a Desk)"]
#[derive(Debug)]
pub(crate) struct Unpublished(Option<Change>);

impl Unpublished {
    pub(crate) fn new(change: Change) -> Unpublished {
        Unpublished(Some(change))
    }

    /// The change, for whoever publishes it (the fan-out).
    pub(crate) fn open(mut self) -> Change {
        // `Some` until opened, and opening consumes the value.
        self.0.take().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for Unpublished {
    fn drop(&mut self) {
        if let Some(c) = &self.0 {
            if !std::thread::panicking() {
                debug_assert!(
                    false,
                    "{:?} of {} was dropped without being published",
                    c.kind, c.ticket.key
                );
                log::error!(
                    "{:?} of {} was never published: hooks and history missed it",
                    c.kind,
                    c.ticket.key
                );
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use stamp_model::ticket::{Hash, TicketKey};

    fn change() -> Change {
        let ticket = TicketRecord::new(TicketKey::parse("TKT-1").unwrap(), Hash::of(b"set"), 0);
        Change::new(ChangeKind::Uploaded, ticket, None, &Actor::named("t"), None)
    }

    #[test]
    fn a_published_change_is_opened_once() {
        let c = Unpublished::new(change()).open();
        assert_eq!(c.kind, ChangeKind::Uploaded);
    }

    #[test]
    #[should_panic(expected = "was dropped without being published")]
    fn an_unpublished_change_cannot_be_dropped_quietly() {
        drop(Unpublished::new(change()));
    }
}
