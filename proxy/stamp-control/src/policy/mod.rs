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

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use crate::workflow::Actor;
use stamp_model::lifecycle::Transition;
use stamp_model::roles::Role;
use stamp_model::ticket::{OverrideSet, Stage};
use stamp_store::{HistoryEvent, SharedStore, TicketRecord};

pub mod command;
pub mod conflict;
pub mod git;
pub mod github;
pub mod jira;
pub mod sanity;
pub mod signoff;

/// The TOML crate the `from_config` functions take tables of (for callers
/// that do not depend on it themselves).
pub use toml;

/// `[[policies]]` or `[[hooks]]` as written, to keep in `Config` (which is
/// `Eq` and `Debug`): `#[serde(default)] policies: policy::Entries`. Its
/// `Debug` redacts secrets (`token`, `secret`, `webhook_url`).
#[derive(Clone, Default, PartialEq, serde::Deserialize)]
#[serde(transparent)]
pub struct Entries(pub Vec<toml::Table>);

// TOML floats are compared like any other value; NaN never appears in a
// policy setting.
impl Eq for Entries {}

impl std::fmt::Debug for Entries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted: Vec<toml::Table> = self
            .0
            .iter()
            .map(|t| {
                t.iter()
                    .map(|(k, v)| {
                        let secret = matches!(k.as_str(), "token" | "secret" | "webhook_url");
                        let v = if secret {
                            toml::Value::String("<redacted>".into())
                        } else {
                            v.clone()
                        };
                        (k.clone(), v)
                    })
                    .collect()
            })
            .collect();
        f.debug_tuple("Entries").field(&redacted).finish()
    }
}

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
    ];
    REGISTRY
}

/// The `kind` of an entry, or a problem naming the valid kinds.
pub(crate) fn pick<'t>(
    table: &'t toml::Table,
    prefix: &str,
    kinds: &[&str],
    problems: &mut Vec<String>,
) -> Option<&'t str> {
    let valid = kinds.join(", ");
    match table.get("kind") {
        None => {
            problems.push(format!("{prefix}.kind: missing; valid kinds: {valid}"));
            None
        }
        Some(toml::Value::String(k)) if kinds.contains(&k.as_str()) => Some(k.as_str()),
        Some(toml::Value::String(k)) => {
            problems.push(format!(
                "{prefix}.kind: unknown kind `{k}`; valid kinds: {valid}"
            ));
            None
        }
        Some(_) => {
            problems.push(format!(
                "{prefix}.kind: must be a string; valid kinds: {valid}"
            ));
            None
        }
    }
}

/// dev→qa and qa→prod.
pub fn promotions() -> Vec<(Stage, Stage)> {
    vec![(Stage::Dev, Stage::Qa), (Stage::Qa, Stage::Prod)]
}

/// Every transition the workflow knows.
pub const TRANSITIONS: &[(Stage, Stage)] = &[
    (Stage::Dev, Stage::Qa),
    (Stage::Qa, Stage::Prod),
    (Stage::Prod, Stage::Qa),
    (Stage::Qa, Stage::Dev),
    (Stage::Dev, Stage::Closed),
    (Stage::Qa, Stage::Closed),
];

/// Parses `"qa->prod"` (or `qa→prod`) into a transition the workflow knows.
pub fn parse_transition(text: &str) -> Result<(Stage, Stage), String> {
    let valid = || {
        TRANSITIONS
            .iter()
            .map(|(f, t)| format!("{f}->{t}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (f, t) = text
        .split_once("->")
        .or_else(|| text.split_once('→'))
        .ok_or_else(|| format!("`{text}` is not a transition; valid: {}", valid()))?;
    let pair = (
        f.trim().parse::<Stage>().map_err(|e| e.to_string())?,
        t.trim().parse::<Stage>().map_err(|e| e.to_string())?,
    );
    if TRANSITIONS.contains(&pair) {
        Ok(pair)
    } else {
        Err(format!(
            "`{text}` is not a transition the workflow makes; valid: {}",
            valid()
        ))
    }
}

/// `on`: a transition (`"qa->prod"`), an action (`"promote"`, `"revert"`,
/// `"close"`, `"all"`), or a list of them.
pub fn parse_scope(value: &toml::Value) -> Result<Vec<(Stage, Stage)>, String> {
    let items: Vec<&toml::Value> = match value {
        toml::Value::Array(a) => a.iter().collect(),
        v => vec![v],
    };
    let mut out = Vec::new();
    for item in items {
        let Some(text) = item.as_str() else {
            return Err("must be a string or a list of strings like \"qa->prod\"".into());
        };
        let add: Vec<(Stage, Stage)> = match text {
            "promote" => promotions(),
            "revert" => vec![(Stage::Prod, Stage::Qa), (Stage::Qa, Stage::Dev)],
            "close" => vec![(Stage::Dev, Stage::Closed), (Stage::Qa, Stage::Closed)],
            "all" => TRANSITIONS.to_vec(),
            t => vec![parse_transition(t)
                .map_err(|e| format!("{e}; or one of promote, revert, close, all"))?],
        };
        for p in add {
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    if out.is_empty() {
        return Err("lists no transition".into());
    }
    Ok(out)
}

/// A secret given in the file (`token = "…"`) or, better, named by an
/// environment variable (`token_env = "JIRA_TOKEN"`) read when it is used.
#[derive(Clone)]
pub enum Secret {
    Value(String),
    Env(String),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Value(_) => f.write_str("Secret(<redacted>)"),
            Secret::Env(n) => write!(f, "Secret(env {n})"),
        }
    }
}

impl Secret {
    pub fn resolve(&self) -> Result<String, String> {
        match self {
            Secret::Value(v) => Ok(v.clone()),
            Secret::Env(name) => match std::env::var(name) {
                Ok(v) if !v.is_empty() => Ok(v),
                _ => Err(format!("environment variable {name} is not set")),
            },
        }
    }
}

/// Per-transition settings: `(from, to)` and its strings.
pub type TransitionList = ((Stage, Stage), Vec<String>);

/// Reads one entry's settings, collecting `prefix.key: reason` problems.
pub struct Settings<'a> {
    table: &'a toml::Table,
    prefix: String,
    pub problems: Vec<String>,
}

impl<'a> Settings<'a> {
    pub fn new(table: &'a toml::Table, prefix: &str) -> Settings<'a> {
        Settings {
            table,
            prefix: prefix.to_string(),
            problems: Vec::new(),
        }
    }

    pub fn problem(&mut self, key: &str, reason: impl std::fmt::Display) {
        self.problems
            .push(format!("{}.{key}: {reason}", self.prefix));
    }

    /// Reports every key not in `valid`, naming the valid ones.
    pub fn known_keys(&mut self, kind: &str, valid: &[&str]) {
        let mut unknown: Vec<String> = self
            .table
            .keys()
            .filter(|k| !valid.contains(&k.as_str()))
            .cloned()
            .collect();
        unknown.sort();
        for k in unknown {
            self.problem(
                &k,
                format!(
                    "unknown key for kind `{kind}`; valid keys: {}",
                    valid.join(", ")
                ),
            );
        }
    }

    pub fn has(&self, key: &str) -> bool {
        self.table.contains_key(key)
    }

    pub fn string(&mut self, key: &str) -> Option<String> {
        match self.table.get(key)? {
            toml::Value::String(s) => Some(s.clone()),
            _ => {
                self.problem(key, "must be a string");
                None
            }
        }
    }

    pub fn required_string(&mut self, key: &str, what: &str) -> Option<String> {
        if !self.has(key) {
            self.problem(key, format!("is required ({what})"));
            return None;
        }
        let s = self.string(key)?;
        if s.trim().is_empty() {
            self.problem(key, format!("must not be empty ({what})"));
            return None;
        }
        Some(s)
    }

    pub fn bool(&mut self, key: &str, default: bool) -> bool {
        match self.table.get(key) {
            None => default,
            Some(toml::Value::Boolean(b)) => *b,
            Some(_) => {
                self.problem(key, "must be true or false");
                default
            }
        }
    }

    pub fn integer(&mut self, key: &str, default: u64, min: u64, max: u64) -> u64 {
        match self.table.get(key) {
            None => default,
            Some(toml::Value::Integer(i)) if *i >= min as i64 && *i <= max as i64 => *i as u64,
            Some(_) => {
                self.problem(key, format!("must be a whole number from {min} to {max}"));
                default
            }
        }
    }

    pub fn duration(&mut self, key: &str, default: Duration) -> Duration {
        match self.table.get(key) {
            None => default,
            Some(toml::Value::String(text)) => match humantime::parse_duration(text) {
                Ok(d) if !d.is_zero() => d,
                Ok(_) => {
                    self.problem(key, "must be longer than zero");
                    default
                }
                Err(e) => {
                    self.problem(
                        key,
                        format!("`{text}` is not a duration ({e}); write e.g. 500ms, 10s"),
                    );
                    default
                }
            },
            Some(_) => {
                self.problem(key, "must be a duration string such as \"10s\"");
                default
            }
        }
    }

    /// A string that must be one of `choices`.
    pub fn choice(
        &mut self,
        key: &str,
        choices: &[&'static str],
        default: &'static str,
    ) -> &'static str {
        match self.string(key) {
            None => default,
            Some(s) => match choices.iter().find(|c| **c == s) {
                Some(c) => c,
                None => {
                    self.problem(key, format!("`{s}` is not one of {}", choices.join(", ")));
                    default
                }
            },
        }
    }

    pub fn strings(&mut self, key: &str) -> Option<Vec<String>> {
        match self.table.get(key)? {
            toml::Value::Array(a) => {
                let out: Option<Vec<String>> =
                    a.iter().map(|v| v.as_str().map(str::to_string)).collect();
                if out.is_none() {
                    self.problem(key, "must be a list of strings");
                }
                out
            }
            _ => {
                self.problem(key, "must be a list of strings");
                None
            }
        }
    }

    /// A table of string → string.
    pub fn string_map(&mut self, key: &str) -> Option<BTreeMap<String, String>> {
        match self.table.get(key)? {
            toml::Value::Table(t) => {
                let mut out = BTreeMap::new();
                for (k, v) in t {
                    match v.as_str() {
                        Some(s) => {
                            out.insert(k.clone(), s.to_string());
                        }
                        None => self.problem(&format!("{key}.{k}"), "must be a string"),
                    }
                }
                Some(out)
            }
            _ => {
                self.problem(key, "must be a table of strings");
                None
            }
        }
    }

    /// A table keyed by transition (`"qa->prod"`) of lists of strings.
    pub fn transition_lists(&mut self, key: &str) -> Option<Vec<TransitionList>> {
        let toml::Value::Table(t) = self.table.get(key)? else {
            self.problem(
                key,
                "must be a table like { \"qa->prod\" = [\"Approved\"] }",
            );
            return None;
        };
        let mut out = Vec::new();
        for (k, v) in t {
            let at = format!("{key}.\"{k}\"");
            let pair = match parse_transition(k) {
                Ok(p) => p,
                Err(e) => {
                    self.problem(&at, e);
                    continue;
                }
            };
            let list: Option<Vec<String>> = match v {
                toml::Value::Array(a) => a.iter().map(|v| v.as_str().map(str::to_string)).collect(),
                toml::Value::String(s) => Some(vec![s.clone()]),
                _ => None,
            };
            match list {
                Some(l) => out.push((pair, l)),
                None => self.problem(&at, "must be a string or a list of strings"),
            }
        }
        Some(out)
    }

    /// `key` or `key_env`: exactly one of them, when `required`.
    pub fn secret(&mut self, key: &str, required: bool, what: &str) -> Option<Secret> {
        let env_key = format!("{key}_env");
        match (self.has(key), self.has(&env_key)) {
            (true, true) => {
                self.problem(key, format!("give `{key}` or `{env_key}`, not both"));
                None
            }
            (true, false) => self.required_string(key, what).map(Secret::Value),
            (false, true) => self.required_string(&env_key, what).map(Secret::Env),
            (false, false) => {
                if required {
                    self.problem(
                        key,
                        format!("is required ({what}); or name an environment variable with `{env_key}`"),
                    );
                }
                None
            }
        }
    }
}

/// Every `*_env` setting of `entries` (`token_env`, `secret_env`, …) that
/// names an environment variable `is_set` says is unset or empty, as
/// `prefix[i].key: …` problems: a secret that is missing at start-up would
/// otherwise only show when the first event or transition needs it.
pub fn missing_secrets(
    entries: &[toml::Table],
    prefix: &str,
    is_set: &dyn Fn(&str) -> bool,
) -> Vec<String> {
    let mut out = Vec::new();
    for (i, table) in entries.iter().enumerate() {
        for (key, value) in table {
            if let (true, toml::Value::String(name)) = (key.ends_with("_env"), value) {
                if !is_set(name) {
                    out.push(format!(
                        "{prefix}[{i}].{key}: the environment variable `{name}` is not set \
                         (the {} entry reads its secret from it)",
                        table
                            .get("kind")
                            .and_then(toml::Value::as_str)
                            .unwrap_or("?")
                    ));
                }
            }
        }
    }
    out
}

/// Whether an environment variable is set to something.
pub fn env_is_set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}

/// An HTTP client for policies and hooks: bounded, no system proxy.
pub(crate) fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .no_proxy()
        .user_agent(concat!("ticket-stamp/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

/// At most `max` bytes of `text`, cut at a character boundary.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
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
        send_sync::<crate::hooks::Dispatcher>();
        send_sync::<TransitionCtx>();
    }

    #[test]
    fn the_annotated_example_is_valid() {
        #[derive(serde::Deserialize)]
        struct F {
            policies: Entries,
            hooks: Entries,
        }
        let f: F = toml::from_str(include_str!("../../../../conf/policies.toml")).unwrap();
        let e = Engine::from_config(&f.policies.0).unwrap();
        assert_eq!(e.policies.len(), 7);
        let kinds: Vec<&str> = e.policies.iter().map(|s| s.policy.kind()).collect();
        let all: Vec<&str> = registry().iter().map(|f| f.kind).collect();
        assert_eq!(kinds, all, "every built-in policy is in the example");
        assert_eq!(
            e.policies[5].on,
            vec![(Stage::Dev, Stage::Qa), (Stage::Qa, Stage::Prod)]
        );
        assert_eq!(e.policies[6].on, vec![(Stage::Qa, Stage::Prod)]);
        let d = crate::hooks::Dispatcher::from_config(&f.hooks.0).unwrap();
        assert!(!d.is_empty());
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
