//! `sign-off`: a release needs N sign-offs by QA, none of them by someone who
//! uploaded to the ticket, all given after the ticket's last change.
//!
//! Derived from the history alone: a sign-off counts when it is a `sign-off`
//! event after the last upload, delete or re-open and after the last
//! promotion into qa (what QA signed is that snapshot), by a token whose
//! role is one of `roles` (default `qa`) and who never uploaded to the
//! ticket. Each token counts once. A `withdraw-sign-off` event takes that
//! token's sign-off back (a later sign-off gives it again).

use std::collections::BTreeSet;

use async_trait::async_trait;

use super::{Built, Outcome, Policy, Settings, TransitionCtx};
use stamp_model::roles::Role;
use stamp_model::ticket::Stage;

pub const KEYS: &[&str] = &["count", "roles"];

/// Events that change what a sign-off vouched for.
const CHANGES: &[&str] = &["upload", "delete", "reopen"];

/// The event that takes a sign-off back.
pub use crate::workflow::WITHDRAW_SIGN_OFF as WITHDRAW;

/// Where the sign-offs that still count begin: after the last change of
/// what QA signed (an upload, a delete, a re-open, a promotion into qa).
pub fn since_last_change(history: &[stamp_model::record::HistoryEvent]) -> usize {
    history
        .iter()
        .rposition(|e| {
            CHANGES.contains(&e.event.as_str()) || (e.event == "promote" && e.to == Some(Stage::Qa))
        })
        .map(|i| i + 1)
        .unwrap_or(0)
}

/// Whether `name` has a sign-off standing (given since the last change and
/// not withdrawn since).
pub fn has_standing(history: &[stamp_model::record::HistoryEvent], name: &str) -> bool {
    let mut standing = false;
    for e in history[since_last_change(history)..]
        .iter()
        .filter(|e| e.actor == name)
    {
        if e.event == "sign-off" {
            standing = true;
        } else if e.event == WITHDRAW {
            standing = false;
        }
    }
    standing
}

pub struct SignOff {
    count: usize,
    roles: Vec<Role>,
}

pub fn build(s: &mut Settings<'_>) -> Option<Built> {
    let count = s.integer("count", 1, 1, 100) as usize;
    let mut roles = Vec::new();
    for r in s.strings("roles").unwrap_or_else(|| vec!["qa".into()]) {
        match r.as_str() {
            "dev" => roles.push(Role::Dev),
            "qa" => roles.push(Role::Qa),
            "admin" => roles.push(Role::Admin),
            other => s.problem(
                "roles",
                format!("`{other}` is not a role (dev, qa or admin)"),
            ),
        }
    }
    if roles.is_empty() {
        s.problem("roles", "must name at least one role");
    }
    Some(Built {
        policy: Box::new(SignOff { count, roles }),
        default_on: vec![(Stage::Qa, Stage::Prod)],
    })
}

#[async_trait]
impl Policy for SignOff {
    fn kind(&self) -> &'static str {
        "sign-off"
    }

    async fn check(&self, ctx: &TransitionCtx) -> Vec<Outcome> {
        let uploaders: BTreeSet<&str> = ctx
            .history
            .iter()
            .filter(|e| CHANGES.contains(&e.event.as_str()))
            .map(|e| e.actor.as_str())
            .collect();
        let since = since_last_change(&ctx.history);
        let mut valid: BTreeSet<&str> = BTreeSet::new();
        let mut ignored: BTreeSet<String> = BTreeSet::new();
        for e in ctx.history[since..]
            .iter()
            .filter(|e| e.event == "sign-off" || e.event == WITHDRAW)
        {
            let name = e.actor.as_str();
            if e.event == WITHDRAW {
                valid.remove(name);
                ignored.retain(|i| !i.starts_with(&format!("{name} (")));
                continue;
            }
            // A token's role as configured now (removing the token voids its
            // sign-offs); a signed-in person's role as they signed off.
            let role = ctx.roles.get(name).copied().or(e.role);
            if uploaders.contains(name) {
                ignored.insert(format!("{name} (uploaded to the ticket)"));
            } else if !role.is_some_and(|r| self.roles.contains(&r)) {
                let what = role.map(Role::as_str).unwrap_or("no longer a token");
                ignored.insert(format!("{name} ({what}, not {})", self.role_list()));
            } else {
                valid.insert(name);
            }
        }
        let stale = ctx.history[..since]
            .iter()
            .filter(|e| e.event == "sign-off")
            .count();
        if valid.len() >= self.count {
            return vec![Outcome::Allow];
        }
        let mut reason = format!(
            "needs {} sign-off{} by {} other than the uploaders; has {}",
            self.count,
            if self.count == 1 { "" } else { "s" },
            self.role_list(),
            valid.len()
        );
        if !valid.is_empty() {
            reason.push_str(&format!(
                " ({})",
                valid.iter().copied().collect::<Vec<_>>().join(", ")
            ));
        }
        if !ignored.is_empty() {
            reason.push_str(&format!(
                "; not counted: {}",
                ignored.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
        if stale > 0 {
            reason.push_str(&format!(
                "; {stale} earlier sign-off{} invalidated by a later upload or promotion",
                if stale == 1 { " was" } else { "s were" }
            ));
        }
        vec![Outcome::Deny(reason)]
    }
}

impl SignOff {
    fn role_list(&self) -> String {
        let names: Vec<&str> = self.roles.iter().map(|r| r.as_str()).collect();
        format!("{} tokens", names.join("/"))
    }
}
