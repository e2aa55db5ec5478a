//! The QA control panel at `/__stamp/`: static assets compiled into the
//! binary (no CDN, works offline), sign-in with an API token into an
//! HttpOnly session cookie (writes need the matching CSRF token), and
//! server-sent events that tell open panels when anything changed.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;
use serde_json::json;

use crate::auth::{self, Principal, Sessions, SESSION_COOKIE};
use crate::config::Config;
use crate::internal::respond;
use crate::snapshot::SnapshotCell;

const INDEX: &str = include_str!("../panel/index.html");
const SCRIPT: &str = include_str!("../panel/panel.js");
const STYLE: &str = include_str!("../panel/panel.css");

/// The panel's own policy: nothing inline, nothing from elsewhere.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

async fn asset(session: &mut Session, content_type: &str, body: &'static str) -> Result<()> {
    let mut resp = ResponseHeader::build(200, Some(6))?;
    resp.insert_header(header::CONTENT_TYPE, content_type)?;
    resp.insert_header(header::CONTENT_LENGTH, body.len().to_string())?;
    resp.insert_header(header::CACHE_CONTROL, "no-cache")?;
    resp.insert_header(header::CONTENT_SECURITY_POLICY, CSP)?;
    resp.insert_header("x-content-type-options", "nosniff")?;
    resp.insert_header("referrer-policy", "no-referrer")?;
    let head = session.req_header().method == http::Method::HEAD;
    session.write_response_header(Box::new(resp), head).await?;
    if !head {
        session
            .write_response_body(Some(Bytes::from_static(body.as_bytes())), true)
            .await?;
    }
    Ok(())
}

/// Who the request is, by bearer token or panel session; for a write by
/// session, the CSRF header must match. `Err` is a status and a message.
pub fn principal(
    session: &Session,
    cfg: &Config,
    sessions: &Sessions,
) -> std::result::Result<Principal, (u16, String)> {
    let req = session.req_header();
    if let Some(authz) = req.headers.get(header::AUTHORIZATION) {
        return auth::authenticate(&cfg.tokens, Some(authz.as_bytes()))
            .map_err(|e| (401, e.to_string()));
    }
    let cookie = auth::session_cookie(
        req.headers
            .get_all(header::COOKIE)
            .iter()
            .map(|v| v.as_bytes()),
    );
    let Some(cookie) = cookie else {
        return auth::authenticate(&cfg.tokens, None).map_err(|e| (401, e.to_string()));
    };
    let p = sessions.verify(&cookie, &cfg.tokens).ok_or((
        401,
        "the panel session has expired: sign in again".to_string(),
    ))?;
    let safe = matches!(req.method, http::Method::GET | http::Method::HEAD);
    if !safe {
        let sent = req
            .headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok());
        if sent != Some(sessions.csrf(&cookie).as_str()) {
            return Err((403, "missing or wrong x-csrf-token".to_string()));
        }
    }
    Ok(p)
}

fn cookie(value: &str, max_age: u64, secure: bool) -> String {
    format!(
        "{SESSION_COOKIE}={value}; Path=/__stamp/; Max-Age={max_age}; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

async fn json_reply(
    session: &mut Session,
    status: u16,
    value: serde_json::Value,
    set_cookie: Option<String>,
) -> Result<()> {
    let body = Bytes::from(value.to_string());
    let mut resp = ResponseHeader::build(status, Some(5))?;
    resp.insert_header(header::CONTENT_TYPE, "application/json")?;
    resp.insert_header(header::CONTENT_LENGTH, body.len().to_string())?;
    resp.insert_header(header::CACHE_CONTROL, "no-store")?;
    if let Some(c) = set_cookie {
        resp.insert_header(header::SET_COOKIE, c)?;
    }
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}

fn error(message: &str) -> serde_json::Value {
    json!({ "error": { "message": message } })
}

/// `/__stamp/session`: GET (who am I), POST `{token}` (sign in), DELETE (sign out).
async fn session_endpoint(session: &mut Session, cfg: &Config, sessions: &Sessions) -> Result<()> {
    let secure = cfg.tls.is_some();
    match session.req_header().method.as_str() {
        "GET" | "HEAD" => {
            let cookie = auth::session_cookie(
                session
                    .req_header()
                    .headers
                    .get_all(header::COOKIE)
                    .iter()
                    .map(|v| v.as_bytes()),
            );
            match cookie
                .as_deref()
                .and_then(|c| sessions.verify(c, &cfg.tokens).map(|p| (c, p)))
            {
                Some((c, p)) => {
                    let csrf = sessions.csrf(c);
                    json_reply(
                        session,
                        200,
                        json!({ "name": p.name, "role": p.role.as_str(), "csrf": csrf }),
                        None,
                    )
                    .await
                }
                None => json_reply(session, 401, error("not signed in"), None).await,
            }
        }
        "POST" => {
            let mut body = Vec::new();
            while let Some(chunk) = session.read_request_body().await? {
                if body.len() + chunk.len() > 8192 {
                    return json_reply(session, 413, error("too large"), None).await;
                }
                body.extend_from_slice(&chunk);
            }
            #[derive(serde::Deserialize)]
            struct SignIn {
                token: String,
            }
            let Ok(req) = serde_json::from_slice::<SignIn>(&body) else {
                return json_reply(session, 400, error("send {\"token\": \"…\"}"), None).await;
            };
            let header = format!("Bearer {}", req.token);
            let p = if cfg.tokens.is_empty() {
                auth::authenticate(&cfg.tokens, None)
            } else {
                auth::authenticate(&cfg.tokens, Some(header.as_bytes()))
            };
            match p {
                Ok(p) => {
                    let value = sessions.mint(&p);
                    let csrf = sessions.csrf(&value);
                    let set = cookie(&value, 8 * 3600, secure);
                    json_reply(
                        session,
                        200,
                        json!({ "name": p.name, "role": p.role.as_str(), "csrf": csrf }),
                        Some(set),
                    )
                    .await
                }
                Err(_) => json_reply(session, 401, error("unknown token"), None).await,
            }
        }
        "DELETE" => json_reply(session, 200, json!({}), Some(cookie("", 0, secure))).await,
        _ => json_reply(session, 405, error("GET, POST or DELETE"), None).await,
    }
}

/// `GET /__stamp/api/v1/events`: a `text/event-stream` of the store version,
/// sent when it changes (and a comment every 15 s to keep proxies from
/// closing an idle stream). Ends when the client goes away.
async fn events(session: &mut Session, cell: &Arc<SnapshotCell>) -> Result<()> {
    let mut resp = ResponseHeader::build(200, Some(4))?;
    resp.insert_header(header::CONTENT_TYPE, "text/event-stream")?;
    resp.insert_header(header::CACHE_CONTROL, "no-store")?;
    resp.insert_header("x-accel-buffering", "no")?;
    session.write_response_header(Box::new(resp), false).await?;
    let mut last = u64::MAX;
    let mut quiet = Duration::ZERO;
    let step = Duration::from_millis(100);
    loop {
        let v = cell.load().version;
        let chunk = if v != last {
            last = v;
            quiet = Duration::ZERO;
            Some(format!("data: {{\"version\":{v}}}\n\n"))
        } else if quiet >= Duration::from_secs(15) {
            quiet = Duration::ZERO;
            Some(": keep-alive\n\n".to_string())
        } else {
            None
        };
        if let Some(c) = chunk {
            if session
                .write_response_body(Some(Bytes::from(c)), false)
                .await
                .is_err()
            {
                return Ok(());
            }
        }
        tokio::time::sleep(step).await;
        quiet += step;
    }
}

/// Serves `/__stamp/`, its assets, `/__stamp/session` and the event stream;
/// `Ok(false)` when the path is not the panel's.
pub async fn serve(
    session: &mut Session,
    cfg: &Config,
    sessions: &Sessions,
    cell: &Arc<SnapshotCell>,
) -> Result<bool> {
    let path = session.req_header().uri.path().to_string();
    match path.as_str() {
        "/__stamp" | "/__stamp/" => asset(session, "text/html; charset=utf-8", INDEX).await?,
        "/__stamp/panel.js" => asset(session, "text/javascript; charset=utf-8", SCRIPT).await?,
        "/__stamp/panel.css" => asset(session, "text/css; charset=utf-8", STYLE).await?,
        "/__stamp/session" => session_endpoint(session, cfg, sessions).await?,
        "/__stamp/api/v1/events" => match principal(session, cfg, sessions) {
            Ok(_) => events(session, cell).await?,
            Err((status, message)) => {
                respond(
                    session,
                    status,
                    "application/json",
                    Bytes::from(error(&message).to_string()),
                )
                .await?
            }
        },
        _ => return Ok(false),
    }
    Ok(true)
}
