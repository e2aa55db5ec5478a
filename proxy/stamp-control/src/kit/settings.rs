//! Reading a `[[policies]]` or `[[hooks]]` entry: its `kind`, its keys with
//! problems named by path, secrets, and the transitions it guards.

use std::collections::BTreeMap;
use std::time::Duration;

use stamp_model::ticket::Stage;

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

/// The `kind` of an entry, or a problem naming the valid kinds.
pub fn pick<'t>(
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
