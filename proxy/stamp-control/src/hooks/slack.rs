//! `slack`: a message per event naming the ticket, the stage, the actor and
//! the share link, as `text` (the notification fallback) plus `blocks`.
//!
//! Either an incoming webhook (`webhook_url`; Slack answers `ok` or an error
//! word such as `invalid_payload`, `no_service`, `channel_is_archived`) or
//! `chat.postMessage` with a bot token (`token`/`token_env` and `channel`;
//! Slack answers HTTP 200 with `{"ok": false, "error": "…"}` on failure, 429
//! with `Retry-After` when rate limited). Errors that retrying cannot fix
//! (bad token, unknown channel, bad payload) are not retried.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::{describe, transport, Event, EventKind, Hook, HookError};
use crate::kit::{http_client, Secret, Settings};
use stamp_model::ticket::Stage;

pub const KEYS: &[&str] = &["webhook_url", "token", "token_env", "channel", "api_url"];

/// chat.postMessage errors worth retrying (the rest are permanent).
const TRANSIENT: &[&str] = &[
    "ratelimited",
    "rate_limited",
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
];

enum Target {
    Webhook(String),
    Api {
        base: String,
        token: Secret,
        channel: String,
    },
}

pub struct Slack {
    target: Target,
    client: reqwest::Client,
}

pub fn build(s: &mut Settings<'_>, timeout: Duration) -> Option<Box<dyn Hook>> {
    let target = match (s.has("webhook_url"), s.has("token") || s.has("token_env")) {
        (true, false) => {
            for k in ["channel", "api_url"] {
                if s.has(k) {
                    s.problem(
                        k,
                        "applies to chat.postMessage (with `token`), not to `webhook_url`",
                    );
                }
            }
            Target::Webhook(s.required_string("webhook_url", "the incoming webhook URL")?)
        }
        (false, true) => {
            let token = s.secret("token", true, "a bot token, xoxb-…");
            let channel = s.required_string("channel", "a channel id or name for chat.postMessage");
            let base = s
                .string("api_url")
                .unwrap_or_else(|| "https://slack.com/api".into())
                .trim_end_matches('/')
                .to_string();
            Target::Api {
                base,
                token: token?,
                channel: channel?,
            }
        }
        (true, true) => {
            s.problem("webhook_url", "give `webhook_url` or `token`, not both");
            return None;
        }
        (false, false) => {
            s.problem(
                "webhook_url",
                "is required (an incoming webhook URL); or give `token` and `channel` for chat.postMessage",
            );
            return None;
        }
    };
    Some(Box::new(Slack {
        target,
        client: http_client(timeout),
    }))
}

/// `text` and `blocks` for an event.
pub fn message(e: &Event) -> Value {
    let stage = e.to.or(e.from).map(|s| s.as_str()).unwrap_or("-");
    let text = match &e.share_link {
        Some(l) => format!("{}: {l}", describe(e)),
        None => describe(e),
    };
    let mut fields = vec![
        json!({"type": "mrkdwn", "text": format!("*Ticket*\n{}", e.ticket)}),
        json!({"type": "mrkdwn", "text": format!("*Stage*\n{stage}")}),
        json!({"type": "mrkdwn", "text": format!("*By*\n{}", e.actor)}),
    ];
    if let Some(l) = &e.share_link {
        fields.push(
            json!({"type": "mrkdwn", "text": format!("*Share link*\n<{l}|open {}>", e.ticket)}),
        );
    }
    let mut blocks = vec![
        json!({"type": "section", "text": {"type": "mrkdwn", "text": describe(e)}}),
        json!({"type": "section", "fields": fields}),
    ];
    let buttons = buttons(e);
    if !buttons.is_empty() {
        blocks.push(json!({"type": "actions", "block_id": "ticket-stamp", "elements": buttons}));
    }
    json!({ "text": text, "blocks": blocks })
}

/// The buttons of a message, acted on through `POST /__stamp/slack/actions`
/// (with the person's role and the policies, as in the panel): a release
/// candidate (a ticket promoted to qa, or signed off there) can be released
/// by steps; a rollout can take its next step, pause or resume, or revert.
/// Each button names the stage and the rollout step it was shown for: a
/// stale one acts on nothing (the settler's bookkeeping between does not
/// make it stale; a step, a release or a revert does).
pub fn buttons(e: &Event) -> Vec<Value> {
    let button = |action: &str, text: &str, style: Option<&str>| {
        let mut b = json!({
            "type": "button",
            "action_id": format!("stamp-{action}"),
            "text": {"type": "plain_text", "text": text},
            // What the message showed: the stage, and the rollout's step.
            "value": json!({
                "t": e.ticket, "a": action,
                "s": e.to.map(|s| s.as_str()).unwrap_or_default(),
                "k": e.rollout.as_ref().map_or(0, |r| r.step_at_ms),
            }).to_string(),
        });
        if let Some(s) = style {
            b["style"] = json!(s);
        }
        b
    };
    let rolling = matches!(e.kind, EventKind::RolloutStep)
        || (e.kind == EventKind::Promoted
            && e.to == Some(Stage::Prod)
            && e.detail
                .as_deref()
                .is_some_and(|d| d.starts_with("rollout")));
    let done = e.detail.as_deref().is_some_and(|d| d.contains("→ 100%"));
    if rolling && !done {
        let paused = e.detail.as_deref().is_some_and(|d| d.starts_with("paused"));
        return vec![
            button("next", "Next step", Some("primary")),
            if paused {
                button("resume", "Resume", None)
            } else {
                button("pause", "Pause", None)
            },
            button("revert", "Revert", Some("danger")),
        ];
    }
    if matches!(e.kind, EventKind::Promoted | EventKind::SignedOff) && e.to == Some(Stage::Qa) {
        return vec![button("release", "Release by steps", Some("primary"))];
    }
    Vec::new()
}

#[async_trait]
impl Hook for Slack {
    fn kind(&self) -> &'static str {
        "slack"
    }

    async fn deliver(&self, e: &Event) -> Result<(), HookError> {
        let mut body = message(e);
        match &self.target {
            Target::Webhook(url) => {
                let resp = self
                    .client
                    .post(url)
                    .json(&body)
                    .send()
                    .await
                    .map_err(|err| transport("Slack webhook", err))?;
                let status = resp.status().as_u16();
                let text = resp.text().await.unwrap_or_default();
                match status {
                    200..=299 => Ok(()),
                    429 | 500..=599 => Err(HookError::Retry(format!(
                        "Slack webhook answered {status} {}",
                        text.trim()
                    ))),
                    _ => Err(HookError::Permanent(format!(
                        "Slack webhook answered {status} {}",
                        text.trim()
                    ))),
                }
            }
            Target::Api {
                base,
                token,
                channel,
            } => {
                let token = token.resolve().map_err(HookError::Permanent)?;
                body["channel"] = json!(channel);
                let resp = self
                    .client
                    .post(format!("{base}/chat.postMessage"))
                    .bearer_auth(token)
                    .header("content-type", "application/json; charset=utf-8")
                    .body(body.to_string())
                    .send()
                    .await
                    .map_err(|err| transport("Slack chat.postMessage", err))?;
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(|v| format!(" (retry after {v}s)"))
                    .unwrap_or_default();
                let v: Value = resp.json().await.unwrap_or(Value::Null);
                if v["ok"] == json!(true) {
                    return Ok(());
                }
                let err = v["error"]
                    .as_str()
                    .unwrap_or("no `ok` in the answer")
                    .to_string();
                let msg = format!("Slack chat.postMessage answered {status}: {err}{retry_after}");
                if status == 429 || status >= 500 || TRANSIENT.contains(&err.as_str()) {
                    Err(HookError::Retry(msg))
                } else {
                    Err(HookError::Permanent(msg))
                }
            }
        }
    }
}
