//! Who acts on a ticket, as its history records them.

use stamp_model::ticket::Stage;
use stamp_store::{now_ms, HistoryEvent};

/// Who did it and from which commit (recorded in the history).
#[derive(Debug, Clone, Default)]
pub struct Actor {
    pub name: String,
    pub commit: Option<String>,
    pub branch: Option<String>,
    /// The role they acted in.
    pub role: Option<stamp_model::roles::Role>,
    /// An upload's file in `commit` (see [`stamp_model::HistoryEvent::source`]).
    pub source: Option<String>,
}

impl Actor {
    pub fn named(name: &str) -> Actor {
        Actor {
            name: name.to_string(),
            ..Actor::default()
        }
    }

    pub(crate) fn event(
        &self,
        event: &str,
        from: Option<Stage>,
        to: Option<Stage>,
        detail: Option<String>,
    ) -> HistoryEvent {
        HistoryEvent {
            at_ms: now_ms(),
            event: event.to_string(),
            from,
            to,
            actor: self.name.clone(),
            commit: self.commit.clone(),
            branch: self.branch.clone(),
            detail,
            role: self.role,
            source: self.source.clone(),
        }
    }
}
