//! stamp-model: the pure types and rules shared by every part of
//! ticket-stamp and by the `stamp` CLI — ticket keys, stages and views, the
//! lifecycle, roles, the production overlay rule, share-link signing, and
//! the control API's wire contract. No I/O, no async runtime.

pub mod assets;
pub mod lifecycle;
pub mod listing;
pub mod overlay;
pub mod problems;
pub mod record;
pub mod roles;
pub mod rollout;
pub mod share;
pub mod ticket;
pub mod views;
pub mod wire;

pub use lifecycle::{allowed_actions, TicketAction, Transition};
pub use record::{HistoryEvent, TicketRecord};
pub use roles::{Action, Role};
pub use ticket::{Hash, KeyError, ModuleRef, OverrideSet, Stage, TicketKey, View};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
