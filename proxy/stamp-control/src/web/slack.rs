//! `POST /__stamp/slack/actions`: the buttons of the Slack messages hooks
//! post (release a candidate by steps; a rollout's next step, pause,
//! resume, revert), clicked in Slack.
//!
//! Slack signs each request: `X-Slack-Signature: v0=<hex HMAC-SHA256 of
//! "v0:<timestamp>:<body>" with the app's signing secret>` and
//! `X-Slack-Request-Timestamp`, which must be within five minutes of now
//! (Slack's documented window against replays). The clicking person is
//! found by their Slack user's email, only when Slack says it is confirmed
//! (`users.info`), and gets a role by `[slack.roles]` rules; then the click
//! goes through the same role checks and policies as the panel. What
//! happened is told to the person through the click's `response_url`, only
//! when it is Slack's (`response_url_prefix`).

use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{Request, Response};
use serde_json::{json, Value};
use sha2::Sha256;
use stamp_model::ticket::TicketKey;

use super::{error, Router};
use crate::config::SlackActions;
use crate::identity::{Principal, Role, Rule, Via};
use crate::Body;
use stamp_model::wire::ErrorCode;

/// Slack's replay window.
pub const WINDOW_SECS: u64 = 300;
pub const PATH: &str = "/__stamp/slack/actions";

/// Whether `signature` is Slack's for `body` at `timestamp` (seconds), now
/// being `now` (seconds).
pub fn verify(
    secret: &[u8],
    timestamp: &str,
    body: &[u8],
    signature: &str,
    now: u64,
) -> Result<(), String> {
    let ts: u64 = timestamp
        .parse()
        .map_err(|_| "X-Slack-Request-Timestamp is not a number".to_string())?;
    if now.abs_diff(ts) > WINDOW_SECS {
        return Err(format!(
            "the request is {}s from now, outside Slack's {WINDOW_SECS}s window (a replay?)",
            now.abs_diff(ts)
        ));
    }
    let given = signature
        .strip_prefix("v0=")
        .and_then(|h| hex::decode(h).ok())
        .ok_or("X-Slack-Signature is not v0=<hex>")?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|e| e.to_string())?;
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    mac.verify_slice(&given)
        .map_err(|_| "X-Slack-Signature does not match the body".to_string())
}

/// The role of a verified email by the rules.
pub fn role_of(roles: &[(Role, Vec<Rule>)], email: &str) -> Option<Role> {
    roles.iter().find_map(|(role, rules)| {
        rules
            .iter()
            .any(|r| match r {
                Rule::Email(e) => e == email,
                Rule::Domain(d) => email.rsplit_once('@').is_some_and(|(_, dom)| dom == d),
                _ => false,
            })
            .then_some(*role)
    })
}

/// One click, as read from Slack's `payload`.
#[derive(Debug, PartialEq, Eq)]
pub struct Click {
    pub user: String,
    pub ticket: TicketKey,
    pub action: String,
    /// The stage the message showed.
    pub stage: String,
    /// The rollout step it showed (its start, ms); 0 for none.
    pub step: u64,
    pub response_url: Option<String>,
}

/// Reads a `block_actions` payload (form field `payload`).
pub fn read_click(body: &[u8]) -> Result<Click, String> {
    let payload = url::form_urlencoded::parse(body)
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| v.into_owned())
        .ok_or("no `payload` in the form")?;
    let p: Value =
        serde_json::from_str(&payload).map_err(|e| format!("`payload` is not JSON: {e}"))?;
    if p["type"] != "block_actions" {
        return Err(format!(
            "`{}` is not a button click (block_actions)",
            p["type"]
        ));
    }
    let user = p["user"]["id"]
        .as_str()
        .filter(|u| !u.is_empty() && u.len() <= 32 && u.bytes().all(|b| b.is_ascii_alphanumeric()))
        .ok_or("no Slack user id")?
        .to_string();
    let action = p["actions"]
        .as_array()
        .and_then(|a| a.first())
        .ok_or("no action")?;
    let value: Value = action["value"]
        .as_str()
        .and_then(|v| serde_json::from_str(v).ok())
        .ok_or("the button's value is not ours")?;
    let ticket = value["t"]
        .as_str()
        .and_then(|t| TicketKey::parse(t).ok())
        .ok_or("the button names no ticket")?;
    let what = value["a"].as_str().ok_or("the button names no action")?;
    if action["action_id"].as_str() != Some(&format!("stamp-{what}")) {
        return Err("the button's action and value disagree".into());
    }
    Ok(Click {
        user,
        ticket,
        action: what.to_string(),
        stage: value["s"]
            .as_str()
            .ok_or("the button names no stage")?
            .to_string(),
        step: value["k"].as_u64().unwrap_or(0),
        response_url: p["response_url"].as_str().map(str::to_string),
    })
}

impl Router {
    /// Answers Slack's interactivity request.
    pub(crate) async fn slack_actions(&self, req: &Request<Bytes>) -> Response<Body> {
        let Some(cfg) = &self.cfg.slack else {
            return error(
                404,
                ErrorCode::NotFound,
                "acting from Slack is not configured ([slack])",
            );
        };
        let (Ok(secret), Ok(token)) = (
            std::env::var(&cfg.signing_secret_env),
            std::env::var(&cfg.token_env),
        ) else {
            return error(
                503,
                ErrorCode::Internal,
                format!("{} or {} is not set", cfg.signing_secret_env, cfg.token_env),
            );
        };
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
        };
        if let Err(why) = verify(
            secret.as_bytes(),
            header("x-slack-request-timestamp"),
            req.body(),
            header("x-slack-signature"),
            stamp_store::now_ms() / 1000,
        ) {
            log::warn!("a Slack action was refused: {why}");
            return error(401, ErrorCode::Unauthorized, why);
        }
        let click = match read_click(req.body()) {
            Ok(c) => c,
            Err(why) => return error(400, ErrorCode::BadRequest, why),
        };
        let said = match self.person(cfg, &token, &click.user).await {
            Ok(principal) => match self
                .api
                .act_from_chat(
                    &principal,
                    &click.ticket,
                    &click.action,
                    &click.stage,
                    click.step,
                )
                .await
            {
                Ok(done) => done,
                Err(e) => format!("Nothing done: {}", e.body.message),
            },
            Err(why) => format!("Nothing done: {why}"),
        };
        if let Some(url) = click
            .response_url
            .as_deref()
            .filter(|u| u.starts_with(&cfg.response_url_prefix))
        {
            let reply =
                json!({"response_type": "ephemeral", "replace_original": false, "text": said});
            if let Err(e) = self.api.http.post(url).json(&reply).send().await {
                log::warn!(
                    "cannot answer the Slack action at its response_url: {}",
                    crate::kit::transport_error(&e)
                );
            }
        }
        error::json(200, json!({ "text": said }))
    }

    /// The person who clicked: their confirmed email from `users.info`,
    /// and their role by the rules.
    async fn person(
        &self,
        cfg: &SlackActions,
        token: &str,
        user: &str,
    ) -> Result<Principal, String> {
        let resp = self
            .api
            .http
            .get(format!("{}/users.info", cfg.api_url))
            .query(&[("user", user)])
            .bearer_auth(token)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| {
                format!(
                    "Slack's users.info could not be reached: {}",
                    crate::kit::transport_error(&e)
                )
            })?;
        let v: Value = resp
            .json()
            .await
            .map_err(|e| format!("Slack's users.info answered no JSON: {e}"))?;
        if v["ok"] != true {
            return Err(format!(
                "Slack's users.info said {}",
                v["error"].as_str().unwrap_or("no")
            ));
        }
        let email = v["user"]["profile"]["email"]
            .as_str()
            .map(str::to_ascii_lowercase)
            .ok_or("your Slack profile shows no email (the app needs users:read.email)")?;
        if v["user"]["is_email_confirmed"] != true {
            return Err(format!("{email} is not confirmed in Slack"));
        }
        let role = role_of(&cfg.roles, &email)
            .ok_or_else(|| format!("{email} has no role on this proxy ([slack.roles])"))?;
        Ok(Principal {
            name: email,
            role,
            via: Via::SignIn("slack".into()),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sign(secret: &str, ts: &str, body: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("v0:{ts}:{body}").as_bytes());
        format!("v0={}", hex::encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn signatures_are_slacks_and_recent() {
        let body = "payload=%7B%7D";
        let good = sign("s3cret", "1700000000", body);
        assert!(verify(
            b"s3cret",
            "1700000000",
            body.as_bytes(),
            &good,
            1_700_000_100
        )
        .is_ok());
        // Another secret, another body, a replay, junk.
        assert!(verify(
            b"other",
            "1700000000",
            body.as_bytes(),
            &good,
            1_700_000_100
        )
        .is_err());
        assert!(verify(b"s3cret", "1700000000", b"payload=x", &good, 1_700_000_100).is_err());
        assert!(verify(
            b"s3cret",
            "1700000000",
            body.as_bytes(),
            &good,
            1_700_000_301
        )
        .is_err());
        assert!(verify(b"s3cret", "soon", body.as_bytes(), &good, 1_700_000_000).is_err());
        assert!(verify(
            b"s3cret",
            "1700000000",
            body.as_bytes(),
            "v1=00",
            1_700_000_000
        )
        .is_err());
        assert!(verify(
            b"s3cret",
            "1700000000",
            body.as_bytes(),
            "v0=zz",
            1_700_000_000
        )
        .is_err());
    }

    #[test]
    fn clicks_are_read_strictly() {
        let form = |p: Value| {
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("payload", &p.to_string())
                .finish()
        };
        let click = json!({
            "type": "block_actions", "user": {"id": "U123"}, "response_url": "https://hooks.slack.com/x",
            "actions": [{"action_id": "stamp-next", "value": json!({"t": "TKT-1", "a": "next", "s": "prod", "k": 7}).to_string()}],
        });
        let c = read_click(form(click.clone()).as_bytes()).unwrap();
        assert_eq!(c.ticket.as_str(), "TKT-1");
        assert_eq!(
            (c.action.as_str(), c.stage.as_str(), c.step),
            ("next", "prod", 7)
        );
        for bad in [
            json!({"type": "view_submission"}),
            json!({"type": "block_actions", "user": {"id": "U1; x"}, "actions": click["actions"]}),
            json!({"type": "block_actions", "user": {"id": "U1"}, "actions": [{"action_id": "stamp-revert", "value": json!({"t": "TKT-1", "a": "next", "s": "prod"}).to_string()}]}),
            json!({"type": "block_actions", "user": {"id": "U1"}, "actions": [{"action_id": "stamp-next", "value": json!({"t": "../x", "a": "next", "s": "prod"}).to_string()}]}),
            json!({"type": "block_actions", "user": {"id": "U1"}, "actions": [{"action_id": "stamp-next", "value": "not json"}]}),
        ] {
            assert!(read_click(form(bad.clone()).as_bytes()).is_err(), "{bad}");
        }
        assert!(read_click(b"nothing=here").is_err());
    }

    #[test]
    fn roles_come_from_confirmed_emails_only_by_email_and_domain() {
        let roles = vec![
            (Role::Admin, vec![Rule::Email("ops@shop.test".into())]),
            (Role::Qa, vec![Rule::Domain("shop.test".into())]),
            (Role::Dev, vec![]),
        ];
        assert_eq!(role_of(&roles, "ops@shop.test"), Some(Role::Admin));
        assert_eq!(role_of(&roles, "ann@shop.test"), Some(Role::Qa));
        assert_eq!(role_of(&roles, "eve@shop.test.evil"), None);
        assert_eq!(role_of(&roles, "eve@evil.test"), None);
    }
}
