//! `conflict`: refuses (or warns about) a transition when another ticket in
//! qa or prod overrides one of the same modules: the same specifier, or a
//! different specifier for the same production path.
//!
//! A released ticket's settled (retired) overrides no longer count.

use std::collections::BTreeSet;

use async_trait::async_trait;

use super::{promotions, Built, Outcome, Policy, Settings, TransitionCtx};
use crate::workflow;
use stamp_model::ticket::{OverrideSet, Stage};

pub const KEYS: &[&str] = &["mode", "stages"];

pub struct Conflict {
    deny: bool,
    stages: Vec<Stage>,
}

pub fn build(s: &mut Settings<'_>) -> Option<Built> {
    let deny = s.choice("mode", &["deny", "warn"], "deny") == "deny";
    let mut stages = Vec::new();
    for st in s
        .strings("stages")
        .unwrap_or_else(|| vec!["qa".into(), "prod".into()])
    {
        match st.as_str() {
            "qa" => stages.push(Stage::Qa),
            "prod" => stages.push(Stage::Prod),
            other => s.problem("stages", format!("`{other}` is not one of qa, prod")),
        }
    }
    Some(Built {
        policy: Box::new(Conflict { deny, stages }),
        default_on: promotions(),
    })
}

#[async_trait]
impl Policy for Conflict {
    fn kind(&self) -> &'static str {
        "conflict"
    }

    async fn check(&self, ctx: &TransitionCtx) -> Vec<Outcome> {
        let state = match ctx.store.state().await {
            Ok(s) => s,
            Err(e) => return vec![Outcome::Deny(format!("cannot read the other tickets: {e}"))],
        };
        let mine_paths: BTreeSet<&str> = ctx.overrides.values().map(|m| m.path.as_str()).collect();
        let mut out = Vec::new();
        for other in &state.tickets {
            if other.key == ctx.ticket.key || !self.stages.contains(&other.stage) {
                continue;
            }
            let set = match workflow::overrides(&ctx.store, other, other.stage).await {
                Ok(Some(set)) => set,
                Ok(None) => continue,
                Err(e) => {
                    out.push(Outcome::Deny(format!(
                        "cannot read {}'s overrides: {e}",
                        other.key
                    )));
                    continue;
                }
            };
            let retired: OverrideSet = match other.retired {
                Some(id) if other.stage == Stage::Prod => ctx
                    .store
                    .get_set(&id)
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or_default(),
                _ => OverrideSet::new(),
            };
            let shared: Vec<&str> = set
                .iter()
                .filter(|(spec, _)| !retired.contains_key(*spec))
                .filter(|(spec, m)| {
                    ctx.overrides.contains_key(*spec) || mine_paths.contains(m.path.as_str())
                })
                .map(|(spec, _)| spec.as_str())
                .collect();
            if shared.is_empty() {
                continue;
            }
            let reason = format!(
                "{} (in {}) also overrides {}",
                other.key,
                other.stage,
                shared.join(", ")
            );
            out.push(if self.deny {
                Outcome::Deny(reason)
            } else {
                Outcome::Warn(reason)
            });
        }
        out
    }
}
