//! A ticket's stored record and its history events: what the store keeps,
//! what the API shows, and what the overlay rule reads.

use serde::{Deserialize, Serialize};

use crate::ticket::{Hash, Stage, TicketKey};

/// A ticket's record. Stage override sets are referenced by content address
/// ([`crate::ticket::set_id`]), so promotion is a pointer copy whatever the
/// number of modules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketRecord {
    pub key: TicketKey,
    pub stage: Stage,
    /// Bumped by every commit of this ticket; the optimistic-concurrency token.
    pub version: u64,
    /// The current (mutable) dev overrides.
    pub dev: Hash,
    /// Snapshot taken at dev→qa.
    pub qa: Option<Hash>,
    /// Snapshot taken at qa→prod.
    pub prod: Option<Hash>,
    /// Milliseconds since the Unix epoch.
    pub created_ms: u64,
    pub updated_ms: u64,
    /// Generation of the ticket's share links: bumping it revokes every
    /// signed link minted before (preview protection).
    #[serde(default)]
    pub share_gen: u64,
    /// For a released ticket: what the origin served at each overridden URL
    /// at release (a set whose hashes are the origin's bodies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Hash>,
    /// Overrides retired from the production overlay because the origin now
    /// serves the ticket's code (settled) or a third version (origin wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired: Option<Hash>,
    /// For a released ticket still rolling out: the share of production's
    /// visitors it reaches, and the steps ahead. `None` once every visitor
    /// gets it (and for every other stage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::rollout::Rollout>,
    /// Sets production served until recently (a release reverted, a
    /// rollout aborted), kept servable until `until_ms` so that a tab
    /// opened before the change never 404s on a lazy import (skew
    /// protection). A set id named here is also kept by garbage collection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent: Vec<RecentSet>,
}

/// A set production served until recently, and until when its modules stay
/// servable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentSet {
    pub set: Hash,
    pub until_ms: u64,
}

impl TicketRecord {
    /// A ticket as its first commit creates it: in dev, at version 1, with
    /// `dev` its override set and nothing else yet.
    pub fn new(key: TicketKey, dev: Hash, now_ms: u64) -> TicketRecord {
        TicketRecord {
            key,
            stage: Stage::Dev,
            version: 1,
            dev,
            qa: None,
            prod: None,
            created_ms: now_ms,
            updated_ms: now_ms,
            share_gen: 0,
            baseline: None,
            retired: None,
            rollout: None,
            recent: Vec::new(),
        }
    }

    /// The override set id of one stage (`Prod` gives the released snapshot).
    pub fn set_of(&self, stage: Stage) -> Option<Hash> {
        match stage {
            Stage::Dev => Some(self.dev),
            Stage::Qa => self.qa,
            Stage::Prod => self.prod,
            Stage::Closed => None,
        }
    }
}

/// One entry of a ticket's append-only history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEvent {
    pub at_ms: u64,
    /// `upload`, `delete`, `promote`, `revert`, `close`, `reopen`, `sign-off`, …
    pub event: String,
    pub from: Option<Stage>,
    pub to: Option<Stage>,
    /// Who did it: a token name, a signed-in person, or a job (`settler`, `gc`).
    pub actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The actor's role when they acted (a signed-in person's role is not
    /// in the configuration, so sign-off policies read it from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<crate::roles::Role>,
    /// An upload's file in `commit`, when the CLI found the body to be
    /// exactly that file (the `git` policy checks it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}
