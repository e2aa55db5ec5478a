//! What hooks are told of a change.

use serde::Serialize;
use stamp_model::ticket::{Stage, TicketKey};

pub use stamp_model::wire::EventKind;

/// Something that happened to a ticket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    #[serde(rename = "event")]
    pub kind: EventKind,
    pub ticket: TicketKey,
    pub from: Option<Stage>,
    pub to: Option<Stage>,
    /// Token name of whoever did it (`settler` for origin-diverged).
    pub actor: String,
    pub share_link: Option<String>,
    /// The git branch and commit the change was made from, when `stamp`
    /// sent them (a panel click sends none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// What the change said of itself (a rollout's step and its numbers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The ticket's version after the change.
    #[serde(default)]
    pub version: u64,
    /// The rollout after the change, for a ticket rolling out (a button
    /// names its step, so a stale button acts on nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<stamp_model::rollout::Rollout>,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
}
