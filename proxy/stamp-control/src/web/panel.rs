//! The QA control panel at `/__stamp/`: static assets compiled into the
//! binary (no CDN, works offline), sign-in with an API token into an
//! HttpOnly session cookie (writes need the matching CSRF token), and
//! server-sent events that tell open panels when anything changed.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{header, HeaderMap, Method, Request, Response};
use serde_json::json;
use stamp_model::wire::header as h;
use stamp_store::SharedStore;

use super::auth::{self, Sessions, SESSION_COOKIE};
use super::error::WebError;
use crate::identity::{self, Principal, Token};
use crate::Body;

const INDEX: &str = include_str!("../../panel/index.html");
const SCRIPT: &str = include_str!("../../panel/panel.js");
const STYLE: &str = include_str!("../../panel/panel.css");

/// The panel's own policy: nothing inline, nothing from elsewhere.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Largest sign-in body.
pub const MAX_SIGN_IN: usize = 8192;

/// A panel asset, by path; `None` for other paths.
pub fn asset(path: &str) -> Option<Response<Body>> {
    let (content_type, body) = match path {
        "/__stamp" | "/__stamp/" => ("text/html; charset=utf-8", INDEX),
        "/__stamp/panel.js" => ("text/javascript; charset=utf-8", SCRIPT),
        "/__stamp/panel.css" => ("text/css; charset=utf-8", STYLE),
        _ => return None,
    };
    let mut resp = Response::new(Body::Full(Bytes::from_static(body.as_bytes())));
    let hs = resp.headers_mut();
    hs.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    hs.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    hs.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(CSP),
    );
    hs.insert(
        "x-content-type-options",
        header::HeaderValue::from_static("nosniff"),
    );
    hs.insert(
        "referrer-policy",
        header::HeaderValue::from_static("no-referrer"),
    );
    Some(resp)
}

/// Who the request is, by bearer token or panel session; for a write by
/// session, the CSRF header must match.
pub fn principal(
    method: &Method,
    headers: &HeaderMap,
    tokens: &[Token],
    sessions: &Sessions,
    providers: &[&str],
) -> Result<Principal, WebError> {
    let open = tokens.is_empty() && providers.is_empty();
    if let Some(authz) = headers.get(header::AUTHORIZATION) {
        // A proxy token from `stamp login` (signed by us, short-lived).
        let signed_in = authz
            .to_str()
            .ok()
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .filter(|t| t.starts_with(auth::BEARER_PREFIX));
        if let Some(t) = signed_in {
            return sessions.verify_bearer(t, tokens, providers).ok_or_else(|| {
                WebError::refused(
                401,
                "the signed-in token has expired or its provider was removed: run `stamp login`"
                    .to_string(),
            )
            });
        }
        return identity::authenticate(tokens, open, Some(authz.as_bytes()))
            .map_err(|e| WebError::refused(401, e.to_string()));
    }
    let cookie = auth::session_cookie(headers.get_all(header::COOKIE).iter().map(|v| v.as_bytes()));
    let Some(cookie) = cookie else {
        return identity::authenticate(tokens, open, None)
            .map_err(|e| WebError::refused(401, e.to_string()));
    };
    let p = sessions
        .verify(&cookie, tokens, providers)
        .ok_or_else(|| WebError::refused(401, "the panel session has expired: sign in again"))?;
    if !matches!(*method, Method::GET | Method::HEAD) {
        let sent = headers.get(h::CSRF).and_then(|v| v.to_str().ok());
        if sent != Some(sessions.csrf(&cookie).as_str()) {
            return Err(WebError::refused(
                403,
                format!("missing or wrong {}", h::CSRF),
            ));
        }
    }
    Ok(p)
}

/// The panel's session cookie header.
pub fn cookie(value: &str, max_age: u64, secure: bool) -> String {
    format!(
        "{SESSION_COOKIE}={value}; Path=/__stamp/; Max-Age={max_age}; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

/// A JSON response that no cache keeps.
pub fn json_reply(
    status: u16,
    value: serde_json::Value,
    set_cookie: Option<String>,
) -> Response<Body> {
    let mut resp = Response::new(Body::Full(Bytes::from(value.to_string())));
    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    let hs = resp.headers_mut();
    hs.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    hs.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    if let Some(c) = set_cookie.and_then(|c| header::HeaderValue::from_str(&c).ok()) {
        hs.insert(header::SET_COOKIE, c);
    }
    resp
}

fn error(message: &str) -> serde_json::Value {
    json!({ "error": { "message": message } })
}

/// `/__stamp/session`: GET (who am I), POST `{token}` (sign in), DELETE (sign out).
pub fn session_endpoint(
    req: &Request<Bytes>,
    tokens: &[Token],
    sessions: &Sessions,
    secure: bool,
    sign_in: &super::signin::SignIn,
    pass: &dyn Fn(&Principal) -> Option<String>,
) -> Response<Body> {
    let providers = sign_in.session_keys();
    match *req.method() {
        Method::GET | Method::HEAD => {
            let presented = auth::session_cookie(
                req.headers()
                    .get_all(header::COOKIE)
                    .iter()
                    .map(|v| v.as_bytes()),
            );
            let open = tokens.is_empty() && providers.is_empty();
            match presented
                .as_deref()
                .and_then(|c| sessions.verify(c, tokens, &providers).map(|p| (c, p)))
            {
                Some((c, p)) => json_reply(
                    200,
                    json!({
                        "name": p.name,
                        "role": p.role.as_str(),
                        "csrf": sessions.csrf(c),
                        "open": open,
                        "provider": match &p.via {
                            identity::Via::SignIn(key) => Some(crate::identity::provider_of(key)),
                            identity::Via::Token => None,
                        },
                    }),
                    None,
                ),
                // Open mode (loopback, no tokens): there is nothing to sign in
                // with, so the panel is signed in as the local user at once.
                None if open => match identity::authenticate(tokens, true, None) {
                    Ok(p) => {
                        let value = sessions.mint(&p);
                        let csrf = sessions.csrf(&value);
                        json_reply(
                            200,
                            json!({ "name": p.name, "role": p.role.as_str(), "csrf": csrf, "open": true }),
                            Some(cookie(&value, 8 * 3600, secure)),
                        )
                    }
                    Err(e) => json_reply(401, error(&e.to_string()), None),
                },
                None => json_reply(
                    401,
                    json!({ "error": { "message": "not signed in" }, "providers": sign_in.buttons() }),
                    None,
                ),
            }
        }
        Method::POST => {
            #[derive(serde::Deserialize)]
            struct SignIn {
                token: String,
            }
            let Ok(sign_in) = serde_json::from_slice::<SignIn>(req.body()) else {
                return json_reply(400, error("send {\"token\": \"…\"}"), None);
            };
            let bearer = format!("Bearer {}", sign_in.token);
            let p = identity::authenticate(
                tokens,
                tokens.is_empty() && providers.is_empty(),
                Some(bearer.as_bytes()),
            );
            match p {
                Ok(p) => {
                    let value = sessions.mint(&p);
                    let csrf = sessions.csrf(&value);
                    let mut resp = json_reply(
                        200,
                        json!({ "name": p.name, "role": p.role.as_str(), "csrf": csrf }),
                        Some(cookie(&value, 8 * 3600, secure)),
                    );
                    // Previews that accept signed-in people open for this browser too.
                    if let Some(v) = pass(&p).and_then(|c| header::HeaderValue::from_str(&c).ok()) {
                        resp.headers_mut().append(header::SET_COOKIE, v);
                    }
                    resp
                }
                Err(_) => json_reply(401, error("unknown token"), None),
            }
        }
        Method::DELETE => json_reply(200, json!({}), Some(cookie("", 0, secure))),
        _ => json_reply(405, error("GET, POST or DELETE"), None),
    }
}

/// Event streams open at once, in all and per signed-in person or token:
/// each holds a task and a subscription, so none may be unbounded.
pub const MAX_EVENT_STREAMS: usize = 256;
pub const MAX_EVENT_STREAMS_EACH: usize = 8;

static EVENT_STREAMS: std::sync::LazyLock<
    std::sync::Mutex<(usize, std::collections::HashMap<String, usize>)>,
> = std::sync::LazyLock::new(Default::default);

/// One open event stream, counted while it lives.
struct StreamSlot(String);

impl StreamSlot {
    fn take(who: &str) -> Option<StreamSlot> {
        let mut open = EVENT_STREAMS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mine = open.1.get(who).copied().unwrap_or(0);
        if open.0 >= MAX_EVENT_STREAMS || mine >= MAX_EVENT_STREAMS_EACH {
            return None;
        }
        open.0 += 1;
        *open.1.entry(who.to_string()).or_default() += 1;
        Some(StreamSlot(who.to_string()))
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = EVENT_STREAMS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.0) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.0);
            }
        }
    }
}

/// `GET /__stamp/api/v1/events`: a `text/event-stream` of the store version,
/// sent when it changes (and a comment every 5 s to keep proxies from
/// closing an idle stream). Ends when the client goes away. At most
/// [`MAX_EVENT_STREAMS`] at once, [`MAX_EVENT_STREAMS_EACH`] per caller:
/// past that, `503` with `Retry-After` (the panel's `EventSource` retries).
pub fn events(store: &SharedStore, who: &str) -> Response<Body> {
    let Some(slot) = StreamSlot::take(who) else {
        let mut resp = WebError::new(
            503,
            stamp_model::wire::ErrorCode::Busy,
            format!(
                "too many event streams are open ({MAX_EVENT_STREAMS} in all, {MAX_EVENT_STREAMS_EACH} per caller); close a panel tab"
            ),
        )
        .response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("10"));
        return resp;
    };
    let changes = store.subscribe();
    let first = *changes.borrow();
    let head = futures::stream::once(async move { format!("data: {{\"version\":{first}}}\n\n") });
    let rest = futures::stream::unfold(changes, |mut changes| async move {
        // A comment every 5 s: proxies keep the stream, and a stream whose
        // client left ends (its write fails) and gives its slot back.
        match tokio::time::timeout(Duration::from_secs(5), changes.changed()).await {
            Ok(Ok(())) => {
                let v = *changes.borrow_and_update();
                Some((format!("data: {{\"version\":{v}}}\n\n"), changes))
            }
            // The store's notifier is gone: end the stream, the panel reconnects.
            Ok(Err(_)) => None,
            Err(_) => Some((": keep-alive\n\n".to_string(), changes)),
        }
    });
    // The slot goes with the stream: dropped when the client goes away.
    let stream = head
        .chain(rest)
        .map(move |s| {
            let _held = &slot;
            Bytes::from(s)
        })
        .boxed();
    let mut resp = Response::new(Body::Stream(stream));
    let hs = resp.headers_mut();
    hs.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    hs.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    hs.insert("x-accel-buffering", header::HeaderValue::from_static("no"));
    resp
}
