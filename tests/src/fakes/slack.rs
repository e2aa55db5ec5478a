//! A fake Slack: incoming webhooks, the Web API's `chat.postMessage` and
//! `users.info`, the `response_url`s of button clicks, and the signing of
//! interactivity requests as Slack does it.

#[allow(unused_imports)]
use super::*;

/// The incoming webhook path the fake serves.
pub const SLACK_HOOK_PATH: &str = "/services/T0000/B0000/XXXXXXXXXXXXXXXXXXXXXXXX";

#[derive(Default)]
pub(super) struct SlackData {
    messages: Vec<Value>,
    archived: bool,
    /// User id → (email, confirmed).
    users: HashMap<String, (String, bool)>,
    /// What was posted to `response_url`s.
    replies: Vec<Value>,
}

/// A fake Slack: incoming webhooks at [`SLACK_HOOK_PATH`] and the Web API's
/// `POST /api/chat.postMessage` for `bot_token` and `channels`.
pub struct FakeSlack {
    pub fake: Fake,
    data: Arc<Mutex<SlackData>>,
}

impl std::fmt::Debug for FakeSlack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeSlack")
            .field("url", &self.fake.url)
            .finish()
    }
}

impl FakeSlack {
    pub fn start(bot_token: &str, channels: &[&str]) -> anyhow::Result<FakeSlack> {
        let data = Arc::new(Mutex::new(SlackData::default()));
        let d = data.clone();
        let token = format!("Bearer {bot_token}");
        let channels: Vec<String> = channels.iter().map(|c| c.to_string()).collect();
        let fake = Fake::start(Arc::new(move |r: &Recorded| {
            slack(&token, &channels, &d, r)
        }))?;
        Ok(FakeSlack { fake, data })
    }

    /// The incoming webhook URL.
    pub fn webhook_url(&self) -> String {
        format!("{}{SLACK_HOOK_PATH}", self.fake.url)
    }

    /// The Web API base (`api_url`).
    pub fn api_url(&self) -> String {
        format!("{}/api", self.fake.url)
    }

    /// Messages accepted (webhook payloads and postMessage bodies).
    pub fn messages(&self) -> Vec<Value> {
        self.data
            .lock()
            .map(|d| d.messages.clone())
            .unwrap_or_default()
    }

    /// A workspace member, for `users.info`.
    pub fn add_user(&self, id: &str, email: &str, confirmed: bool) {
        if let Ok(mut d) = self.data.lock() {
            d.users
                .insert(id.to_string(), (email.to_string(), confirmed));
        }
    }

    /// Where a click's `response_url` points (this fake records replies).
    pub fn response_url(&self, n: u32) -> String {
        format!("{}/actions/T0000/{n}/xyz", self.fake.url)
    }

    /// What was posted to response URLs.
    pub fn replies(&self) -> Vec<Value> {
        self.data
            .lock()
            .map(|d| d.replies.clone())
            .unwrap_or_default()
    }

    /// The webhook's channel was archived (410 `channel_is_archived`).
    pub fn archive(&self) {
        if let Ok(mut d) = self.data.lock() {
            d.archived = true;
        }
    }
}

pub(super) fn slack_text(status: u16, text: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        [("content-type", "text/html")],
        text.to_string(),
    )
        .into_response()
}

/// `text` or `blocks` present, blocks a list of typed objects.
pub(super) fn slack_payload_problem(v: &Value) -> Option<&'static str> {
    let has_text = v["text"].as_str().is_some_and(|t| !t.is_empty());
    match &v["blocks"] {
        Value::Null if !has_text => Some("no_text"),
        Value::Null => None,
        Value::Array(b) if b.iter().all(|x| x["type"].is_string()) => {
            if b.is_empty() && !has_text {
                Some("no_text")
            } else {
                None
            }
        }
        _ => Some("invalid_blocks"),
    }
}

pub(super) fn slack(
    token: &str,
    channels: &[String],
    data: &Mutex<SlackData>,
    r: &Recorded,
) -> Response {
    let Ok(mut d) = data.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    if r.path.starts_with("/services/") {
        if r.path != SLACK_HOOK_PATH {
            return slack_text(404, "no_service");
        }
        if r.method != "POST" {
            return slack_text(405, "invalid_method");
        }
        if d.archived {
            return slack_text(410, "channel_is_archived");
        }
        let Ok(v) = serde_json::from_slice::<Value>(&r.body) else {
            return slack_text(400, "invalid_payload");
        };
        if let Some(p) = slack_payload_problem(&v) {
            return slack_text(400, p);
        }
        d.messages.push(v);
        return slack_text(200, "ok");
    }
    if r.path == "/api/chat.postMessage" {
        if r.method != "POST" {
            return json_response(200, json!({"ok": false, "error": "invalid_request"}));
        }
        let fail = |e: &str| json_response(200, json!({"ok": false, "error": e}));
        match r.header("authorization") {
            None => return fail("not_authed"),
            Some(a) if a != token => return fail("invalid_auth"),
            _ => {}
        }
        if !r
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/json"))
        {
            return fail("invalid_form_data");
        }
        let Ok(v) = serde_json::from_slice::<Value>(&r.body) else {
            return fail("invalid_json");
        };
        let Some(channel) = v["channel"].as_str() else {
            return fail("channel_not_found");
        };
        if !channels.iter().any(|c| c == channel) {
            return fail("channel_not_found");
        }
        if let Some(p) = slack_payload_problem(&v) {
            return fail(p);
        }
        d.messages.push(v.clone());
        return json_response(
            200,
            json!({"ok": true, "channel": channel, "ts": "1503435956.000247",
                   "message": {"text": v["text"], "type": "message", "subtype": "bot_message"}}),
        );
    }
    if r.path == "/api/users.info" {
        let fail = |e: &str| json_response(200, json!({"ok": false, "error": e}));
        match r.header("authorization") {
            None => return fail("not_authed"),
            Some(a) if a != token => return fail("invalid_auth"),
            _ => {}
        }
        let user = url::form_urlencoded::parse(r.query.as_bytes())
            .find(|(k, _)| k == "user")
            .map(|(_, v)| v.into_owned());
        let Some((id, (email, confirmed))) =
            user.and_then(|u| d.users.get(&u).map(|x| (u, x.clone())))
        else {
            return fail("user_not_found");
        };
        return json_response(
            200,
            json!({"ok": true, "user": {"id": id, "name": email.split('@').next(), "is_bot": false,
                   "is_email_confirmed": confirmed, "profile": {"email": email, "real_name": email}}}),
        );
    }
    if r.path.starts_with("/actions/") && r.method == "POST" {
        let Ok(v) = serde_json::from_slice::<Value>(&r.body) else {
            return slack_text(400, "invalid_payload");
        };
        d.replies.push(v);
        return slack_text(200, "ok");
    }
    json_response(404, json!({"ok": false, "error": "unknown_method"}))
}

/// An interactivity request as Slack sends it for a button click: the
/// form body (`payload=`), and its `X-Slack-Request-Timestamp` and
/// `X-Slack-Signature` (HMAC-SHA256 of `v0:ts:body` with the app's signing
/// secret).
pub fn slack_click(
    signing_secret: &str,
    ts: u64,
    user: &str,
    button: &Value,
    response_url: &str,
) -> (String, Vec<(String, String)>) {
    use hmac::Mac;
    let payload = json!({
        "type": "block_actions",
        "user": {"id": user, "username": user, "team_id": "T0000"},
        "api_app_id": "A0000",
        "team": {"id": "T0000", "domain": "shop"},
        "container": {"type": "message", "message_ts": "1503435956.000247"},
        "trigger_id": "123.456.abc",
        "response_url": response_url,
        "actions": [{"type": "button", "block_id": "ticket-stamp", "action_id": button["action_id"],
                     "value": button["value"], "text": button["text"], "action_ts": "1503435957.111"}],
    });
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &payload.to_string())
        .finish();
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(signing_secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key"));
    mac.update(format!("v0:{ts}:{body}").as_bytes());
    let sig = format!("v0={}", hex::encode(mac.finalize().into_bytes()));
    (
        body,
        vec![
            ("x-slack-request-timestamp".into(), ts.to_string()),
            ("x-slack-signature".into(), sig),
            (
                "content-type".into(),
                "application/x-www-form-urlencoded".into(),
            ),
        ],
    )
}
