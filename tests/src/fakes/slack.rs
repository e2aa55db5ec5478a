//! A fake Slack: incoming webhooks and the Web API's `chat.postMessage`.

#[allow(unused_imports)]
use super::*;

/// The incoming webhook path the fake serves.
pub const SLACK_HOOK_PATH: &str = "/services/T0000/B0000/XXXXXXXXXXXXXXXXXXXXXXXX";

#[derive(Default)]
pub(super) struct SlackData {
    messages: Vec<Value>,
    archived: bool,
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
    json_response(404, json!({"ok": false, "error": "unknown_method"}))
}
