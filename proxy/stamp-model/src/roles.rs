//! Roles and the role matrix: what a `dev`, `qa` or `admin` caller may do.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::lifecycle::{allowed_actions, TicketAction, Transition};
use crate::ticket::Stage;

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Dev,
    Qa,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Dev => "dev",
            Role::Qa => "qa",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not `dev`, `qa` or `admin`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a role (dev, qa or admin)")]
pub struct RoleError(pub String);

impl FromStr for Role {
    type Err = RoleError;
    fn from_str(s: &str) -> Result<Role, RoleError> {
        match s {
            "dev" => Ok(Role::Dev),
            "qa" => Ok(Role::Qa),
            "admin" => Ok(Role::Admin),
            other => Err(RoleError(other.to_string())),
        }
    }
}

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Read,
    Upload,
    Delete,
    SignOff,
    Move(Transition, Stage),
    /// Operate the proxy itself (adopt a store that lost its state).
    Operate,
}

impl Action {
    /// For messages: "upload modules", "promote a ticket in qa".
    pub fn describe(self) -> String {
        match self {
            Action::Read => "read tickets".into(),
            Action::Upload => "upload modules".into(),
            Action::Delete => "delete modules".into(),
            Action::SignOff => "sign off".into(),
            Action::Move(t, from) => format!("{} a ticket in {from}", t.as_str()),
            Action::Operate => "operate the proxy".into(),
        }
    }
}

/// The role model: `dev` uploads, deletes, promotes dev→qa, reverts qa→dev
/// and closes; `qa` signs off and promotes qa→prod; `admin` does everything,
/// including reverting prod. Everyone authenticated may read.
pub fn allowed(role: Role, action: Action) -> bool {
    if role == Role::Admin {
        return true;
    }
    match action {
        Action::Read => true,
        Action::Upload | Action::Delete => role == Role::Dev,
        Action::SignOff => role == Role::Qa,
        Action::Move(Transition::Promote, Stage::Dev) => role == Role::Dev,
        Action::Move(Transition::Promote, Stage::Qa) => role == Role::Qa,
        Action::Move(Transition::Revert, Stage::Qa) => role == Role::Dev,
        Action::Move(Transition::Close | Transition::Reopen, _) => role == Role::Dev,
        Action::Move(..) | Action::Operate => false,
    }
}

/// What `role` may do to a ticket in `stage`: the lifecycle's actions that
/// the role matrix grants, plus sign-off in qa.
pub fn actions_for(role: Role, stage: Stage) -> Vec<TicketAction> {
    let mut out: Vec<TicketAction> = allowed_actions(stage)
        .iter()
        .copied()
        .filter(|a| {
            let action = match a {
                TicketAction::Upload => Action::Upload,
                TicketAction::Delete => Action::Delete,
                TicketAction::Promote => Action::Move(Transition::Promote, stage),
                TicketAction::Revert => Action::Move(Transition::Revert, stage),
                TicketAction::Close => Action::Move(Transition::Close, stage),
                TicketAction::Reopen => Action::Move(Transition::Reopen, stage),
                TicketAction::SignOff => Action::SignOff,
            };
            allowed(role, action)
        })
        .collect();
    if stage == Stage::Qa && allowed(role, Action::SignOff) {
        out.push(TicketAction::SignOff);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_matrix() {
        use Transition::*;
        assert!(allowed(Role::Dev, Action::Move(Promote, Stage::Dev)));
        assert!(!allowed(Role::Dev, Action::Move(Promote, Stage::Qa)));
        assert!(allowed(Role::Qa, Action::Move(Promote, Stage::Qa)));
        assert!(!allowed(Role::Qa, Action::Upload));
        assert!(!allowed(Role::Dev, Action::Move(Revert, Stage::Prod)));
        assert!(!allowed(Role::Qa, Action::Move(Revert, Stage::Prod)));
        assert!(allowed(Role::Admin, Action::Move(Revert, Stage::Prod)));
        assert!(allowed(Role::Dev, Action::Move(Revert, Stage::Qa)));
        assert!(allowed(Role::Qa, Action::SignOff));
        assert!(!allowed(Role::Dev, Action::SignOff));
        assert!(allowed(Role::Qa, Action::Read));
    }

    #[test]
    fn actions_for_a_role_are_what_it_may_do() {
        use TicketAction::*;
        assert_eq!(actions_for(Role::Qa, Stage::Qa), vec![Promote, SignOff]);
        assert_eq!(
            actions_for(Role::Dev, Stage::Qa),
            vec![Upload, Delete, Revert, Close]
        );
        assert_eq!(actions_for(Role::Qa, Stage::Prod), vec![]);
        assert_eq!(actions_for(Role::Dev, Stage::Closed), vec![Upload, Reopen]);
        assert_eq!(actions_for(Role::Qa, Stage::Closed), vec![]);
        assert_eq!(
            actions_for(Role::Admin, Stage::Prod),
            vec![Upload, Delete, Revert]
        );
        assert_eq!("qa".parse::<Role>(), Ok(Role::Qa));
        assert!("boss".parse::<Role>().is_err());
    }
}
