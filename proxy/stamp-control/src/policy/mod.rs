//! Promotion policies: small `Policy` objects that decide a transition before
//! it is applied, chosen by `kind` from the `[[policies]]` list of the config
//! through a registry of factories (River's filter habit).
//!
//! Every applicable policy runs (concurrently), so a refusal lists every
//! failure at once. Each policy is scoped to the transitions it guards
//! (`on = ["qa->prod"]`); by default a policy guards promotions (dev→qa,
//! qa→prod), except where its built-in says otherwise (`sign-off` guards
//! qa→prod, `jira` the transitions its `statuses` lists).
//!
//! ```toml
//! [[policies]]
//! kind = "git"
//! remote = "/srv/git/shop.git"
//! [[policies]]
//! kind = "sign-off"
//! count = 2
//! ```
//!
//! Building a policy does no I/O (the git mirror is made on first use), so
//! config validation can build the engine to check a file.

use std::collections::HashMap;

use async_trait::async_trait;
use serde_json::{json, Value};

use crate::kinds::Actor;
#[allow(unused_imports)] // for the policies below: `super::…`
use crate::kit::{http_client, pick, promotions, truncate, Settings};
pub use crate::kit::{parse_scope, parse_transition, Entries, Secret, TRANSITIONS};
use stamp_model::lifecycle::Transition;
use stamp_model::roles::Role;
use stamp_model::ticket::{OverrideSet, Stage};
use stamp_store::{HistoryEvent, SharedStore, TicketRecord};

mod command;
mod conflict;
mod git;
mod github;
mod gitlab;
mod jira;
mod sanity;
mod signoff;

pub use signoff::has_standing;

/// Everything a policy may look at, read before the transition is applied.
pub struct TransitionCtx {
    /// The ticket as read (its `stage` is `from`).
    pub ticket: TicketRecord,
    pub from: Stage,
    pub to: Stage,
    pub action: Transition,
    /// Who asks, with the git commit and branch the CLI sent.
    pub actor: Actor,
    /// The ticket's history, oldest first.
    pub history: Vec<HistoryEvent>,
    /// The override set being moved: the `from` stage's overrides (dev's for
    /// dev→qa, the qa snapshot for qa→prod, the released set for a revert).
    pub overrides: OverrideSet,
    pub store: SharedStore,
    /// `http://127.0.0.1:PORT` of this proxy (the `sanity` policy goes
    /// through it).
    pub proxy_base: String,
    /// Token name → role, from `[[tokens]]` (the `sign-off` policy counts
    /// only sign-offs by tokens of the configured roles). With no tokens
    /// configured the API is open and its caller is `anonymous` (admin).
    pub roles: HashMap<String, Role>,
}

impl TransitionCtx {
    /// The branch and commit a transition is about: what `stamp` sent with it,
    /// else the newest the ticket's history recorded.
    pub fn source(&self) -> (Option<String>, Option<String>) {
        let newest = self
            .history
            .iter()
            .rev()
            // What carried the code: a sign-off or a note says nothing of the
            // pull request, whatever branch its author had checked out.
            .filter(|e| matches!(e.event.as_str(), "upload" | "delete" | "promote" | "reopen"))
            .find(|e| e.branch.is_some() || e.commit.is_some());
        let branch = self
            .actor
            .branch
            .clone()
            .or_else(|| newest.and_then(|e| e.branch.clone()));
        let commit = self
            .actor
            .commit
            .clone()
            .or_else(|| newest.and_then(|e| e.commit.clone()));
        (branch, commit)
    }
}

/// What one policy says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Allow,
    /// Allowed, with something worth saying.
    Warn(String),
    /// Refused, with the reason.
    Deny(String),
}

/// Decides transitions. `check` returns every finding (an empty list or only
/// `Allow`s means "allowed"); it never panics on what a peer sends.
#[async_trait]
pub trait Policy: Send + Sync {
    fn kind(&self) -> &'static str;
    async fn check(&self, ctx: &TransitionCtx) -> Vec<Outcome>;
}

/// A policy and the transitions it guards.
pub struct Scoped {
    pub policy: Box<dyn Policy>,
    /// `(from, to)` pairs; a transition not listed is not this policy's concern.
    pub on: Vec<(Stage, Stage)>,
}

/// Every policy, in config order.
#[derive(Default)]
pub struct Engine {
    policies: Vec<Scoped>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.policies.iter().map(|s| s.policy.kind()))
            .finish()
    }
}

/// The engine's answer: allowed when `denials` is empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// `(policy kind, reason)`, in config order.
    pub denials: Vec<(String, String)>,
    pub warnings: Vec<(String, String)>,
}

impl Verdict {
    pub fn allowed(&self) -> bool {
        self.denials.is_empty()
    }

    /// One line for logs and the `message` of the 422 answer.
    pub fn message(&self) -> String {
        let n = self.denials.len();
        let list: Vec<String> = self
            .denials
            .iter()
            .map(|(k, r)| format!("{k}: {r}"))
            .collect();
        format!(
            "refused by {n} polic{}: {}",
            if n == 1 { "y" } else { "ies" },
            list.join("; ")
        )
    }

    /// `{"denials": [{"policy", "reason"}], "warnings": [...]}` (the extra
    /// fields of the 422 `policy_denied` error, and of a successful answer's
    /// `warnings`).
    pub fn details(&self) -> Value {
        let list = |v: &[(String, String)]| -> Vec<Value> {
            v.iter()
                .map(|(p, r)| json!({ "policy": p, "reason": r }))
                .collect()
        };
        json!({ "denials": list(&self.denials), "warnings": list(&self.warnings) })
    }
}

impl Engine {
    /// Builds the policies of `[[policies]]`. Every problem is reported, as
    /// `policies[i].key: reason`.
    pub fn from_config(entries: &[toml::Table]) -> Result<Engine, Vec<String>> {
        let mut problems = Vec::new();
        let mut policies = Vec::new();
        for (i, table) in entries.iter().enumerate() {
            let prefix = format!("policies[{i}]");
            let kinds: Vec<&str> = registry().iter().map(|f| f.kind).collect();
            let Some(factory) = pick(table, &prefix, &kinds, &mut problems)
                .and_then(|k| registry().iter().find(|f| f.kind == k))
            else {
                continue;
            };
            let mut s = Settings::new(table, &prefix);
            s.known_keys(factory.kind, &[&["kind", "on"], factory.keys].concat());
            let on = match table.get("on") {
                None => None,
                Some(v) => match parse_scope(v) {
                    Ok(on) => Some(on),
                    Err(e) => {
                        s.problem("on", e);
                        None
                    }
                },
            };
            let built = (factory.build)(&mut s);
            problems.append(&mut s.problems);
            if let Some(built) = built {
                policies.push(Scoped {
                    policy: built.policy,
                    on: on.unwrap_or(built.default_on),
                });
            }
        }
        if problems.is_empty() {
            Ok(Engine { policies })
        } else {
            Err(problems)
        }
    }

    /// An engine with the given policies (for custom, in-process policies).
    pub fn new(policies: Vec<Scoped>) -> Engine {
        Engine { policies }
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// Whether any policy guards `from → to` (so a caller can skip reading
    /// the history and overrides when none does).
    pub fn guards(&self, from: Stage, to: Stage) -> bool {
        self.policies.iter().any(|s| s.on.contains(&(from, to)))
    }

    /// The kinds of the policies that guard `from → to`, in config order.
    pub fn applicable(&self, from: Stage, to: Stage) -> Vec<&'static str> {
        self.policies
            .iter()
            .filter(|s| s.on.contains(&(from, to)))
            .map(|s| s.policy.kind())
            .collect()
    }

    /// Runs every policy that guards `ctx.from → ctx.to`, concurrently, and
    /// collects every denial and warning in config order.
    pub async fn check(&self, ctx: &TransitionCtx) -> Verdict {
        let applicable = self
            .policies
            .iter()
            .filter(|s| s.on.contains(&(ctx.from, ctx.to)));
        let results = futures::future::join_all(
            applicable.map(|s| async move { (s.policy.kind(), s.policy.check(ctx).await) }),
        )
        .await;
        let mut verdict = Verdict::default();
        for (kind, outcomes) in results {
            for o in outcomes {
                match o {
                    Outcome::Allow => {}
                    Outcome::Warn(r) => verdict.warnings.push((kind.to_string(), r)),
                    Outcome::Deny(r) => verdict.denials.push((kind.to_string(), r)),
                }
            }
        }
        verdict
    }
}

/// A built policy with the transitions it guards unless `on` says otherwise.
pub struct Built {
    pub policy: Box<dyn Policy>,
    pub default_on: Vec<(Stage, Stage)>,
}

/// Makes a policy of one kind from its settings (reporting problems into them).
pub struct Factory {
    pub kind: &'static str,
    /// The settings it reads, besides `kind` and `on`.
    pub keys: &'static [&'static str],
    pub build: fn(&mut Settings<'_>) -> Option<Built>,
}

/// The built-in policies.
pub fn registry() -> &'static [Factory] {
    static REGISTRY: &[Factory] = &[
        Factory {
            kind: "git",
            keys: git::KEYS,
            build: git::build,
        },
        Factory {
            kind: "sign-off",
            keys: signoff::KEYS,
            build: signoff::build,
        },
        Factory {
            kind: "sanity",
            keys: sanity::KEYS,
            build: sanity::build,
        },
        Factory {
            kind: "conflict",
            keys: conflict::KEYS,
            build: conflict::build,
        },
        Factory {
            kind: "command",
            keys: command::KEYS,
            build: command::build,
        },
        Factory {
            kind: "jira",
            keys: jira::KEYS,
            build: jira::build,
        },
        Factory {
            kind: "github",
            keys: github::KEYS,
            build: github::build,
        },
        Factory {
            kind: "gitlab",
            keys: gitlab::KEYS,
            build: gitlab::build,
        },
    ];
    REGISTRY
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tables(text: &str) -> Vec<toml::Table> {
        #[derive(serde::Deserialize)]
        struct F {
            policies: Vec<toml::Table>,
        }
        toml::from_str::<F>(text).unwrap().policies
    }

    #[test]
    fn unknown_kinds_and_keys_name_the_valid_ones() {
        let errs = Engine::from_config(&tables(
            r#"
            [[policies]]
            kind = "gitt"
            [[policies]]
            kind = "sign-off"
            cuont = 2
            [[policies]]
            remote = "x"
            [[policies]]
            kind = "conflict"
            on = ["qa->dev", "dev->prod"]
            "#,
        ))
        .unwrap_err();
        assert_eq!(errs.len(), 4, "{errs:#?}");
        assert!(errs[0].starts_with("policies[0].kind: unknown kind `gitt`; valid kinds: git, sign-off, sanity, conflict, command, jira"), "{}", errs[0]);
        assert!(
            errs[1].starts_with(
                "policies[1].cuont: unknown key for kind `sign-off`; valid keys: kind, on, count"
            ),
            "{}",
            errs[1]
        );
        assert!(
            errs[2].starts_with("policies[2].kind: missing"),
            "{}",
            errs[2]
        );
        assert!(
            errs[3]
                .starts_with("policies[3].on: `dev->prod` is not a transition the workflow makes"),
            "{}",
            errs[3]
        );
    }

    #[test]
    fn scopes_parse_actions_and_transitions() {
        let v: toml::Value = toml::Value::Array(vec!["promote".into(), "qa->dev".into()]);
        assert_eq!(
            parse_scope(&v).unwrap(),
            vec![
                (Stage::Dev, Stage::Qa),
                (Stage::Qa, Stage::Prod),
                (Stage::Qa, Stage::Dev)
            ]
        );
        assert_eq!(
            parse_scope(&"qa→prod".into()).unwrap(),
            vec![(Stage::Qa, Stage::Prod)]
        );
        assert!(parse_scope(&toml::Value::Integer(1)).is_err());
    }

    #[test]
    fn default_scopes_follow_the_built_in() {
        let e = Engine::from_config(&tables(
            r#"
            [[policies]]
            kind = "sign-off"
            [[policies]]
            kind = "conflict"
            [[policies]]
            kind = "conflict"
            on = "revert"
            "#,
        ))
        .unwrap();
        assert_eq!(e.policies[0].on, vec![(Stage::Qa, Stage::Prod)]);
        assert_eq!(e.policies[1].on, promotions());
        assert!(e.guards(Stage::Prod, Stage::Qa));
        assert!(!e.guards(Stage::Dev, Stage::Closed));
    }

    #[test]
    fn entries_deserialize_and_hide_secrets() {
        #[derive(serde::Deserialize)]
        struct F {
            #[serde(default)]
            hooks: Entries,
        }
        let f: F = toml::from_str("[[hooks]]\nkind = \"slack\"\nwebhook_url = \"https://hooks.slack.com/services/T/B/SECRET\"\n").unwrap();
        assert_eq!(f.hooks.0.len(), 1);
        let shown = format!("{:?}", f.hooks);
        assert!(
            !shown.contains("SECRET") && shown.contains("slack"),
            "{shown}"
        );
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Engine>();
        send_sync::<TransitionCtx>();
    }

    #[test]
    fn the_annotated_example_is_valid() {
        #[derive(serde::Deserialize)]
        struct F {
            policies: Entries,
        }
        let f: F = toml::from_str(include_str!("../../../../conf/policies.toml")).unwrap();
        let e = Engine::from_config(&f.policies.0).unwrap();
        assert_eq!(e.policies.len(), 8);
        let kinds: Vec<&str> = e.policies.iter().map(|s| s.policy.kind()).collect();
        let all: Vec<&str> = registry().iter().map(|f| f.kind).collect();
        assert_eq!(kinds, all, "every built-in policy is in the example");
        assert_eq!(
            e.policies[5].on,
            vec![(Stage::Dev, Stage::Qa), (Stage::Qa, Stage::Prod)]
        );
        assert_eq!(e.policies[6].on, vec![(Stage::Qa, Stage::Prod)]);
    }

    #[test]
    fn verdict_details_are_the_422_shape() {
        let v = Verdict {
            denials: vec![("git".into(), "behind main".into())],
            warnings: vec![("conflict".into(), "TKT-2 too".into())],
        };
        assert!(!v.allowed());
        assert_eq!(
            v.details(),
            json!({"denials": [{"policy": "git", "reason": "behind main"}],
                   "warnings": [{"policy": "conflict", "reason": "TKT-2 too"}]})
        );
        assert_eq!(v.message(), "refused by 1 policy: git: behind main");
    }
}
