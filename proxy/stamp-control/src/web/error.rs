//! The one error path of the control plane's HTTP answers: every refusal or
//! failure of the API, the panel and the sign-in pages is a [`WebError`],
//! which makes the status, the body (the model's JSON envelope, or a small
//! HTML page for a person's browser) and the log line. Caller mistakes are
//! logged at `debug`, the store's and peers' faults at `warn`, our own at
//! `error`; internal details go to the log, never into the body.

use bytes::Bytes;
use http::{header, Response};
use serde_json::Value;
use stamp_model::lifecycle::allowed_actions;
use stamp_model::wire::{ErrorBody, ErrorCode, ErrorEnvelope};
use stamp_store::{StoreError, TicketRecord};

use crate::workflow::WorkflowError;
use crate::Body;

/// A refusal or failure, as answered.
#[derive(Debug)]
pub struct WebError {
    pub status: u16,
    pub body: Box<ErrorBody>,
    /// Answered as a page for a person (sign-in), not as JSON.
    page: Option<Page>,
    /// `Set-Cookie`s that go with it (a sign-in's login cookie cleared).
    cookies: Vec<String>,
    /// What the log says and the body does not.
    internal: Option<String>,
}

#[derive(Debug)]
struct Page {
    title: String,
    /// The provider a "Try again" link signs in with.
    retry: Option<String>,
}

impl WebError {
    pub fn new(status: u16, code: ErrorCode, message: impl Into<String>) -> WebError {
        WebError {
            status,
            body: Box::new(ErrorBody::new(code, message)),
            page: None,
            cookies: Vec::new(),
            internal: None,
        }
    }

    /// A request field that is wrong.
    pub fn bad(field: &str, message: impl Into<String>) -> WebError {
        let mut e = WebError::new(400, ErrorCode::BadRequest, message);
        e.body.field = Some(field.to_string());
        e
    }

    /// A conflict that says where the ticket is now.
    pub fn moved(message: String, now: &TicketRecord) -> WebError {
        let mut e = WebError::new(409, ErrorCode::Conflict, message);
        e.body.version = Some(now.version);
        e.body.stage = Some(now.stage);
        e
    }

    /// A sign-in that failed, with the code its status stands for.
    pub fn sign_in(status: u16, message: impl Into<String>) -> WebError {
        let code = match status {
            401 => ErrorCode::Unauthorized,
            403 => ErrorCode::Forbidden,
            404 => ErrorCode::NotFound,
            405 => ErrorCode::MethodNotAllowed,
            502 => ErrorCode::ProviderUnavailable,
            500..=599 => ErrorCode::Internal,
            _ => ErrorCode::BadRequest,
        };
        WebError::new(status, code, message)
    }

    /// A refusal to let a caller in (401 unauthorized, else forbidden).
    pub fn refused(status: u16, message: impl Into<String>) -> WebError {
        let code = if status == 401 {
            ErrorCode::Unauthorized
        } else {
            ErrorCode::Forbidden
        };
        WebError::new(status, code, message)
    }

    /// Answered as an HTML page titled `title` (for a person's browser).
    pub fn for_a_person(mut self, title: &str, retry: Option<&str>) -> WebError {
        self.page = Some(Page {
            title: title.to_string(),
            retry: retry.map(str::to_string),
        });
        self
    }

    pub fn with_cookie(mut self, cookie: String) -> WebError {
        self.cookies.push(cookie);
        self
    }

    /// Details for the log only.
    pub fn internal(mut self, detail: impl Into<String>) -> WebError {
        self.internal = Some(detail.into());
        self
    }

    pub fn message(&self) -> &str {
        &self.body.message
    }

    /// The response, logged by what kind of failure it is.
    pub fn response(self) -> Response<Body> {
        let detail = self.internal.as_deref().unwrap_or(&self.body.message);
        match self.status {
            500..=502 | 504..=599 => log::error!("{} {:?}: {detail}", self.status, self.body.code),
            503 => log::warn!("{} {:?}: {detail}", self.status, self.body.code),
            _ => log::debug!("{} {:?}: {detail}", self.status, self.body.code),
        }
        let mut resp = match &self.page {
            None => {
                let envelope = ErrorEnvelope {
                    error: (*self.body).clone(),
                };
                json(
                    self.status,
                    serde_json::to_value(&envelope).unwrap_or(Value::Null),
                )
            }
            Some(p) => page(
                self.status,
                &p.title,
                &self.body.message,
                p.retry.as_deref(),
            ),
        };
        for c in &self.cookies {
            if let Ok(v) = header::HeaderValue::from_str(c) {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
        }
        resp
    }
}

impl From<StoreError> for WebError {
    fn from(e: StoreError) -> WebError {
        match e {
            StoreError::Conflict { key, .. } => WebError::new(
                409,
                ErrorCode::Conflict,
                format!("ticket {key} was changed by someone else; read it again and retry"),
            ),
            StoreError::Lost { .. } => WebError::new(503, ErrorCode::StoreLostState, e.to_string()),
            StoreError::Unavailable(_) => WebError::new(
                503,
                ErrorCode::StoreUnavailable,
                "the ticket store is unavailable; try again shortly",
            )
            .internal(e.to_string()),
            other => WebError::new(
                500,
                ErrorCode::Internal,
                "internal error (see the proxy's log)",
            )
            .internal(other.to_string()),
        }
    }
}

impl From<WorkflowError> for WebError {
    fn from(e: WorkflowError) -> WebError {
        match e {
            WorkflowError::NotFound(k) => WebError::new(
                404,
                ErrorCode::NotFound,
                format!("ticket {k} does not exist"),
            ),
            WorkflowError::IllegalTransition {
                ref key,
                action,
                stage,
            } => {
                let mut err = WebError::new(409, ErrorCode::IllegalTransition, e.to_string());
                err.body.ticket = Some(key.clone());
                err.body.action = Some(action.to_string());
                err.body.stage = Some(stage);
                err.body.allowed = Some(allowed_actions(stage).to_vec());
                err
            }
            WorkflowError::NoSuchOverride(..) => {
                WebError::new(404, ErrorCode::NotFound, e.to_string())
            }
            WorkflowError::TooManyModules { .. } => {
                WebError::new(413, ErrorCode::TooManyModules, e.to_string())
            }
            WorkflowError::UnknownBody(_) => {
                WebError::new(404, ErrorCode::UnknownBody, e.to_string())
            }
            WorkflowError::NotRollingOut(_, stage) => {
                let mut err = WebError::new(409, ErrorCode::IllegalTransition, e.to_string());
                err.body.stage = Some(stage);
                err
            }
            WorkflowError::Rollout(_) => WebError::new(409, ErrorCode::Conflict, e.to_string()),
            WorkflowError::Store(s) => s.into(),
        }
    }
}

/// A JSON response that no cache keeps.
pub fn json(status: u16, value: Value) -> Response<Body> {
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
    resp
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A small HTML page (a sign-in failure is read by a person in a browser).
fn page(status: u16, title: &str, message: &str, retry: Option<&str>) -> Response<Body> {
    let retry = retry
        .map(|r| format!("<p><a href=\"/__stamp/login/{}\">Try again</a> · <a href=\"/__stamp/\">Panel</a></p>", escape(r)))
        .unwrap_or_else(|| "<p><a href=\"/__stamp/\">Panel</a></p>".into());
    let html = format!(
        "<!doctype html><meta charset=utf-8><meta name=viewport content=\"width=device-width\">\
         <title>{t} · ticket-stamp</title><h1>{t}</h1><p id=message>{m}</p>{retry}",
        t = escape(title),
        m = escape(message)
    );
    let mut resp = Response::new(Body::Full(Bytes::from(html)));
    *resp.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_REQUEST);
    let hs = resp.headers_mut();
    hs.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    hs.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    hs.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    );
    resp
}
