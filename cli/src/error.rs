//! How a failure is told to the user: `stamp: error: …`, the details one per
//! line, a hint, and the exit code (1 refused, 2 usage, 3 connection or auth).

use std::process::ExitCode;

use serde_json::Value;

use stamp_model::lifecycle::Transition;
use stamp_model::wire::ErrorCode;
use stamp_model::Stage;

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
            ApiError::Status { status, error } => {
                let message = &error.message;
                let f = |kind| Failure::new(kind, message.clone());
                match (*status, error.code) {
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
                    (409, ErrorCode::IllegalTransition) => {
                        let allowed: Vec<&str> = error.allowed.iter().flatten().map(|a| a.as_str()).collect();
                        let mut details = Vec::new();
                        if let Some(stage) = error.stage {
                            details.push(format!("allowed in {stage}: {}", allowed.join(", ")));
                            details.push(next_step(stage));
                        }
                        // The allowed actions get a line of their own, so the head says only what was refused.
                        let head = match (&error.action, &error.ticket, error.stage) {
                            (Some(action), Some(ticket), Some(stage)) => {
                                format!("cannot {action} ticket {ticket}: it is in {stage}")
                            }
                            _ => message.clone(),
                        };
                        Failure::new(Kind::Refused, head)
                            .details(details)
                            .hint(format!("`stamp {key}` shows where the ticket stands and its history"))
                    }
                    (409, _) => f(Kind::Refused).hint("someone changed the ticket meanwhile: look at it again (`stamp KEY`) and retry".replace("KEY", key)),
                    (422, _) => {
                        let reasons = policy_reasons(&Value::Object(error.extra.clone()));
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
                    (404, ErrorCode::NotFound) => f(Kind::Refused).hint("check the key; `stamp --list --all` lists every ticket (a ticket is created by its first --update)"),
                    (413, _) | (415, _) => f(Kind::Refused),
                    (503, _) | (502, _) | (504, _) => f(Kind::Connection).hint("the server's store is unavailable; try again shortly"),
                    (_, code) => Failure::new(Kind::Refused, format!("the server refused: {message} ({status} {code})")),
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

/// What the lifecycle lets a ticket in `stage` do next, with the flags.
fn next_step(stage: Stage) -> String {
    let moves: Vec<String> = Transition::ALL
        .into_iter()
        .filter_map(|t| {
            // `stamp TKT --update` is how the CLI re-opens a closed ticket.
            let flag = match t {
                Transition::Reopen => "update",
                other => other.as_str(),
            };
            t.target(stage).map(|to| format!("--{flag} (to {to})"))
        })
        .collect();
    if moves.is_empty() {
        format!("a {stage} ticket is re-opened in dev by an upload (--update)")
    } else {
        format!("a {stage} ticket can move with {}", moves.join(", "))
    }
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
#[allow(clippy::unwrap_used)]
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
        let mut body = json!({"code": "policy_denied"});
        if let (Some(b), Some(extra)) = (body.as_object_mut(), e.as_object()) {
            b.extend(extra.clone());
        }
        let err = ApiError::Status {
            status: 422,
            error: Box::new(serde_json::from_value(body).unwrap()),
        };
        let f = Failure::from_api(&err, Some("TKT-1"), false);
        assert_eq!(f.message, "TKT-1: refused by 2 policies");
        assert_eq!(f.details.len(), 3);
    }

    #[test]
    fn exit_codes_by_status() {
        let status = |s: u16, code: &str| ApiError::Status {
            status: s,
            error: Box::new(
                serde_json::from_value(json!({
                    "code": code, "message": "m", "ticket": "TKT-1", "action": "promote",
                    "stage": "prod", "allowed": ["upload", "delete", "revert"]
                }))
                .unwrap(),
            ),
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
        assert_eq!(f.message, "cannot promote ticket TKT-1: it is in prod");
        assert_eq!(f.details[0], "allowed in prod: upload, delete, revert");
        assert_eq!(f.details[1], "a prod ticket can move with --revert (to qa)");
    }
}
