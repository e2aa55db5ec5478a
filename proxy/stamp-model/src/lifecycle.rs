//! The ticket lifecycle as pure rules: which stage moves exist, where each
//! leads, and what may be done to a ticket in each stage.
//!
//! ```text
//! (new) --upload--> dev --promote--> qa --promote--> prod
//!                    ^  <--revert---    <--revert---
//!  dev|qa --close--> closed --upload (re-initiate)--> dev
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ticket::Stage;

/// The stage moves: promote, revert, close, and reopen (closed → dev).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transition {
    Promote,
    Revert,
    Close,
    Reopen,
}

impl Transition {
    pub const ALL: [Transition; 4] = [
        Transition::Promote,
        Transition::Revert,
        Transition::Close,
        Transition::Reopen,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Transition::Promote => "promote",
            Transition::Revert => "revert",
            Transition::Close => "close",
            Transition::Reopen => "reopen",
        }
    }

    /// The transition an API path segment names (`promote`, `revert`, `close`).
    pub fn parse(s: &str) -> Option<Transition> {
        Transition::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The stage a transition leads to from `from`, if legal.
    pub fn target(self, from: Stage) -> Option<Stage> {
        match (self, from) {
            (Transition::Promote, Stage::Dev) => Some(Stage::Qa),
            (Transition::Promote, Stage::Qa) => Some(Stage::Prod),
            (Transition::Revert, Stage::Prod) => Some(Stage::Qa),
            (Transition::Revert, Stage::Qa) => Some(Stage::Dev),
            (Transition::Close, Stage::Dev | Stage::Qa) => Some(Stage::Closed),
            (Transition::Reopen, Stage::Closed) => Some(Stage::Dev),
            _ => None,
        }
    }

    /// Whether this move changes what production serves (a release, or a
    /// revert out of prod).
    pub fn changes_production(self, from: Stage) -> bool {
        self.target(from)
            .is_some_and(|to| from == Stage::Prod || to == Stage::Prod)
    }
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that can be done to a ticket, as listed in `allowed_actions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TicketAction {
    Upload,
    Delete,
    Promote,
    Revert,
    Close,
    Reopen,
    SignOff,
}

impl TicketAction {
    pub fn as_str(self) -> &'static str {
        match self {
            TicketAction::Upload => "upload",
            TicketAction::Delete => "delete",
            TicketAction::Promote => "promote",
            TicketAction::Revert => "revert",
            TicketAction::Close => "close",
            TicketAction::Reopen => "reopen",
            TicketAction::SignOff => "sign-off",
        }
    }
}

impl fmt::Display for TicketAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Transition> for TicketAction {
    fn from(t: Transition) -> TicketAction {
        match t {
            Transition::Promote => TicketAction::Promote,
            Transition::Revert => TicketAction::Revert,
            Transition::Close => TicketAction::Close,
            Transition::Reopen => TicketAction::Reopen,
        }
    }
}

/// What the lifecycle allows on a ticket in `stage`, whoever asks. (Upload
/// to a closed ticket re-opens it, as `reopen` does.)
pub fn allowed_actions(stage: Stage) -> &'static [TicketAction] {
    use TicketAction::*;
    match stage {
        Stage::Dev => &[Upload, Delete, Promote, Close],
        Stage::Qa => &[Upload, Delete, Promote, Revert, Close],
        Stage::Prod => &[Upload, Delete, Revert],
        Stage::Closed => &[Upload, Reopen],
    }
}

/// The names of [`allowed_actions`], comma-separated, for messages.
pub fn allowed_list(stage: Stage) -> String {
    allowed_actions(stage)
        .iter()
        .map(|a| a.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_allowed_transition_has_a_target_and_no_other_does() {
        for stage in [Stage::Dev, Stage::Qa, Stage::Prod, Stage::Closed] {
            for t in Transition::ALL {
                let listed = allowed_actions(stage).contains(&t.into());
                assert_eq!(listed, t.target(stage).is_some(), "{t} from {stage}");
            }
        }
        assert!(Transition::Promote.changes_production(Stage::Qa));
        assert!(Transition::Revert.changes_production(Stage::Prod));
        assert!(!Transition::Promote.changes_production(Stage::Dev));
        assert!(!Transition::Close.changes_production(Stage::Prod));
        assert_eq!(Transition::parse("revert"), Some(Transition::Revert));
        assert_eq!(Transition::parse("Revert"), None);
        assert_eq!(Transition::Reopen.target(Stage::Closed), Some(Stage::Dev));
        assert_eq!(Transition::Reopen.target(Stage::Dev), None);
    }
}
