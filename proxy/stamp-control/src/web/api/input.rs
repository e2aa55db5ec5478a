//! Reading a request: JSON bodies (naming the field at fault), ticket
//! keys, the caller's permission, and who acts.

use super::*;

/// Parses a JSON body, naming the field at fault.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, WebError> {
    serde_json::from_slice(body).map_err(|e| {
        let msg = e.to_string();
        WebError::bad(&json_field(&msg, body), format!("malformed JSON: {msg}"))
    })
}

/// The field a serde_json error is about: the one it names in backticks
/// ("unknown field `x`", "missing field `y`"), or, for a type error, the
/// key just before the error's column ("invalid type: string, expected
/// u64" says no name).
pub(super) fn json_field(msg: &str, body: &[u8]) -> String {
    if msg.contains("field") {
        if let Some(name) = msg.split('`').nth(1) {
            return name.to_string();
        }
    }
    // "… at line L column C": find the last `"key":` before that point.
    let column = msg
        .rsplit("column ")
        .next()
        .and_then(|c| c.trim().parse::<usize>().ok());
    let line = msg
        .split(" at line ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|l| l.parse::<usize>().ok());
    if let (Some(line), Some(column)) = (line, column) {
        // In bytes, as serde_json counts them: the body need not be UTF-8
        // (a lossy copy would move every offset after a bad byte).
        let offset: usize = body
            .split(|b| *b == b'\n')
            .take(line.saturating_sub(1))
            .map(|l| l.len() + 1)
            .sum::<usize>()
            + column;
        let before = &body[..offset.min(body.len())];
        if let Some(colon) = before.iter().rposition(|b| *b == b':') {
            let key = before[..colon].trim_ascii_end();
            if let Some(stripped) = key.strip_suffix(b"\"") {
                if let Some(start) = stripped.iter().rposition(|b| *b == b'"') {
                    return String::from_utf8_lossy(&stripped[start + 1..]).into_owned();
                }
            }
        }
    }
    "body".to_string()
}

pub(super) fn require(principal: &Principal, action: Action) -> Result<(), WebError> {
    if allowed(principal.role, action) {
        Ok(())
    } else {
        Err(WebError::new(
            403,
            ErrorCode::Forbidden,
            format!(
                "token `{}` ({} role) may not {}",
                principal.name,
                principal.role.as_str(),
                action.describe()
            ),
        ))
    }
}

pub(super) fn parse_key(raw: &str) -> Result<TicketKey, WebError> {
    TicketKey::parse(raw).map_err(|e| WebError::bad("ticket", e.to_string()))
}

/// The role recorded with a signed-in person's actions (sign-off policies
/// read it there); a token's role is the configuration's, now.
pub(super) fn signed_in_role(p: &Principal) -> Option<stamp_model::roles::Role> {
    matches!(p.via, crate::identity::Via::SignIn(_)).then_some(p.role)
}

pub(super) fn actor_from(principal: &Principal, headers: &http::HeaderMap) -> Actor {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 256)
            .map(str::to_string)
    };
    Actor {
        name: principal.name.clone(),
        commit: text(h::COMMIT).filter(|c| c.bytes().all(|b| b.is_ascii_hexdigit())),
        branch: text(h::BRANCH),
        role: signed_in_role(principal),
        source: None,
    }
}
