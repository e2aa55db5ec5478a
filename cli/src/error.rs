//! How a failure is told to the user: `stamp: error: …`, the details one per
//! line, a hint, and the exit code (1 refused, 2 usage, 3 connection or auth).

use std::process::ExitCode;

use serde_json::Value;

use crate::client::ApiError;

/// The exit codes, as documented in `--help` and the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 1: refused by a policy or the ticket's state, or any other failure.
    Refused = 1,
    /// 2: bad flags, ticket key or configuration.
    Usage = 2,
    /// 3: the server cannot be reached, is down, or refuses the credentials.
    Connection = 3,
}

impl Kind {
    pub fn exit_code(self) -> ExitCode {
        ExitCode::from(self as u8)
    }
}

/// A failure worth explaining.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub kind: Kind,
    pub message: String,
    pub details: Vec<String>,
    pub hint: Option<String>,
}

impl Failure {
    pub fn new(kind: Kind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
            details: vec![],
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Failure {
        self.hint = Some(hint.into());
        self
    }

    pub fn details(mut self, details: Vec<String>) -> Failure {
        self.details = details;
        self
    }

    /// Explains an API failure; `key` is the ticket concerned, if any.
    pub fn from_api(e: &ApiError, key: Option<&str>, has_token: bool) -> Failure {
        let key = key.unwrap_or("the ticket");
        match e {
            ApiError::Unreachable { server, source } => Failure::new(Kind::Connection, format!("cannot reach the server at {server}"))
                .details(vec![format!("cause: {}", root_causes(source))])
                .hint("is stamp-proxy running there? Set the server with --server URL, STAMP_SERVER or `server` in stamp.toml"),
            ApiError::Protocol { .. } => Failure::new(Kind::Connection, e.to_string())
                .hint("check --server / STAMP_SERVER: it must be the stamp-proxy's address"),
            ApiError::Status { status, code, message, error } => {
                let f = |kind| Failure::new(kind, message.clone());
                match (*status, code.as_str()) {
                    (401, _) => {
                        let hint = if has_token {
                            "the token is unknown or revoked: check --token / STAMP_TOKEN"
                        } else {
                            "this server needs a token: set STAMP_TOKEN (or pass --token)"
                        };
                        Failure::new(Kind::Connection, format!("the server did not accept the credentials: {message}")).hint(hint)
                    }
                    (403, _) => Failure::new(Kind::Connection, format!("not allowed: {message}"))
                        .hint("ask for a token whose role may do this (dev uploads and promotes to qa; qa promotes to prod; admin reverts prod)"),
                    (409, "illegal_transition") => {
                        let stage = error["stage"].as_str().unwrap_or("?");
                        let allowed = strings(&error["allowed"]);
                        let mut details = vec![format!("allowed in {stage}: {}", allowed.join(", "))];
                        if let Some(next) = next_step(stage) {
                            details.push(next);
                        }
                        // The server's message ends with the allowed actions: they get a line of their own.
                        let head = message.split("; allowed:").next().unwrap_or(message);
                        Failure::new(Kind::Refused, head)
                            .details(details)
                            .hint(format!("`stamp {key}` shows where the ticket stands and its history"))
                    }
                    (409, _) => f(Kind::Refused).hint("someone changed the ticket meanwhile: look at it again (`stamp KEY`) and retry".replace("KEY", key)),
                    (422, _) => {
                        let reasons = policy_reasons(error);
                        // "refused by 2 policies: a: …; b: …": the reasons get a line each.
                        let head = if reasons.is_empty() {
                            message.as_str()
                        } else {
                            message.split(": ").next().unwrap_or(message)
                        };
                        Failure::new(Kind::Refused, format!("{key}: {head}"))
                            .details(reasons)
                            .hint("fix what the policies name, then try again")
                    }
                    (404, "not_found") => f(Kind::Refused).hint("check the key; `stamp --list --all` lists every ticket (a ticket is created by its first --update)"),
                    (413, _) | (415, _) => f(Kind::Refused),
                    (503, _) | (502, _) | (504, _) => f(Kind::Connection).hint("the server's store is unavailable; try again shortly"),
                    _ => Failure::new(Kind::Refused, format!("the server refused: {message} ({status} {code})")),
                }
            }
        }
    }

    /// Prints `stamp: error: …` to stderr.
    pub fn print(&self, causes: &[String]) {
        eprintln!("stamp: error: {}", self.message);
        for d in &self.details {
            eprintln!("  {d}");
        }
        for c in causes {
            eprintln!("  cause: {c}");
        }
        if let Some(h) = &self.hint {
            eprintln!("  hint: {h}");
        }
    }
}

fn next_step(stage: &str) -> Option<String> {
    match stage {
        "dev" => Some("dev tickets can be promoted to qa (--promote) or closed (--close)".into()),
        "qa" => Some("qa tickets can be promoted to prod, reverted to dev or closed".into()),
        "prod" => {
            Some("a released ticket can only be reverted (--revert takes it back to qa)".into())
        }
        "closed" => Some("a closed ticket is re-opened by an upload (--update)".into()),
        _ => None,
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A policy refusal's reasons (`denials`), one per line, then its warnings.
fn policy_reasons(error: &Value) -> Vec<String> {
    let mut out: Vec<String> = items(&error["denials"])
        .into_iter()
        .map(|l| format!("- {l}"))
        .collect();
    out.extend(
        items(&error["warnings"])
            .into_iter()
            .map(|l| format!("  (warning) {l}")),
    );
    out
}

/// `[{"policy": "git", "reason": "…"}, …]` as `git: …` lines.
pub fn items(list: &Value) -> Vec<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|item| match item {
            Value::String(s) => s.clone(),
            Value::Object(o) => {
                let name = o.get("policy").and_then(Value::as_str);
                let why = o
                    .get("reason")
                    .or_else(|| o.get("message"))
                    .and_then(Value::as_str);
                match (name, why) {
                    (Some(n), Some(w)) => format!("{n}: {w}"),
                    (None, Some(w)) => w.to_string(),
                    _ => item.to_string(),
                }
            }
            other => other.to_string(),
        })
        .collect()
}

/// What lies under an error (its sources, outermost first, without
/// repeats), or the error itself when it has no source.
pub fn root_causes(e: &dyn std::error::Error) -> String {
    let Some(first) = e.source() else {
        return e.to_string();
    };
    let mut parts: Vec<String> = vec![first.to_string()];
    let mut cur = first.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn policy_reasons_are_listed_one_per_line() {
        let e = json!({"code": "policy_denied", "message": "refused by 2 policies: git: commit abc is not pushed; sign-off: needs 1 sign-off",
            "denials": [
                {"policy": "git", "reason": "commit abc is not pushed"},
                {"policy": "sign-off", "reason": "needs 1 sign-off"}
            ],
            "warnings": [{"policy": "conflict", "reason": "TKT-2 also overrides /src/a.js"}]
        });
        assert_eq!(
            policy_reasons(&e),
            [
                "- git: commit abc is not pushed",
                "- sign-off: needs 1 sign-off",
                "  (warning) conflict: TKT-2 also overrides /src/a.js"
            ]
        );
        let err = ApiError::Status {
            status: 422,
            code: "policy_denied".into(),
            message: e["message"].as_str().unwrap_or_default().into(),
            error: e.clone(),
        };
        let f = Failure::from_api(&err, Some("TKT-1"), false);
        assert_eq!(f.message, "TKT-1: refused by 2 policies");
        assert_eq!(f.details.len(), 3);
    }

    #[test]
    fn exit_codes_by_status() {
        let status = |s: u16, code: &str| ApiError::Status {
            status: s,
            code: code.into(),
            message: "m".into(),
            error: json!({"code": code, "stage": "prod", "allowed": ["upload", "delete", "revert"]}),
        };
        assert_eq!(
            Failure::from_api(&status(401, "unauthorized"), None, true).kind,
            Kind::Connection
        );
        assert_eq!(
            Failure::from_api(&status(403, "forbidden"), None, true).kind,
            Kind::Connection
        );
        assert_eq!(
            Failure::from_api(&status(503, "store_unavailable"), None, true).kind,
            Kind::Connection
        );
        assert_eq!(
            Failure::from_api(&status(422, "policy"), None, true).kind,
            Kind::Refused
        );
        let f = Failure::from_api(&status(409, "illegal_transition"), Some("TKT-1"), false);
        assert_eq!(f.kind, Kind::Refused);
        assert_eq!(f.details[0], "allowed in prod: upload, delete, revert");
    }
}
