//! The reserved `/__stamp/` endpoints: health and Prometheus metrics are
//! answered here; everything else goes to the [`ControlPlane`]. Nothing
//! under the prefix ever reaches the origin.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use http::header;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;
use sha2::{Digest, Sha256};
use stamp_model::wire::{self, ErrorBody, ErrorCode, ErrorEnvelope};
use stamp_store::{now_ms, SharedStore};

use crate::control::{Body, ControlPlane};
use crate::metrics;
use crate::snapshot::SnapshotCell;

/// Writes a complete response with a body.
pub async fn respond(
    session: &mut Session,
    status: u16,
    content_type: &str,
    body: Bytes,
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(4))?;
    resp.insert_header(header::CONTENT_TYPE, content_type)?;
    resp.insert_header(header::CACHE_CONTROL, "no-store")?;
    write(session, resp, body).await
}

/// Writes a whole answer the proxy made: `resp` with `body`'s length, and
/// the body unless the request is a `HEAD`.
pub async fn write(session: &mut Session, mut resp: ResponseHeader, body: Bytes) -> Result<()> {
    resp.insert_header(header::CONTENT_LENGTH, body.len().to_string())?;
    let head = session.req_header().method == http::Method::HEAD;
    session.write_response_header(Box::new(resp), head).await?;
    if !head {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// Whether the request's `If-None-Match` names `etag` (weakly) or `*`: a
/// `304` answers it.
pub fn none_match(req: &pingora::http::RequestHeader, etag: &str) -> bool {
    req.headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t.trim_start_matches("W/") == etag
        })
}

fn error_json(code: ErrorCode, message: impl Into<String>) -> Bytes {
    let envelope = ErrorEnvelope {
        error: ErrorBody::new(code, message),
    };
    Bytes::from(serde_json::to_vec(&envelope).unwrap_or_default())
}

/// What the reserved endpoints need.
pub struct Internal {
    pub cell: Arc<SnapshotCell>,
    pub store: SharedStore,
    pub control: Arc<dyn ControlPlane>,
}

impl std::fmt::Debug for Internal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Internal")
    }
}

impl Internal {
    /// Answers a request under `/__stamp/`.
    /// `metrics_token`: `/__stamp/metrics` requires a bearer token with
    /// this sha256 (the request's configuration, which a reload may change).
    pub async fn serve(
        &self,
        session: &mut Session,
        metrics_token: Option<&[u8; 32]>,
    ) -> Result<()> {
        let path = session.req_header().uri.path().to_string();
        let json = "application/json";
        let own = path == wire::HEALTH_PATH || path == wire::METRICS_PATH;
        if !own {
            return self.delegate(session).await;
        }
        let method = session.req_header().method.clone();
        if method != http::Method::GET && method != http::Method::HEAD {
            let body = error_json(
                ErrorCode::MethodNotAllowed,
                "only GET and HEAD are supported here",
            );
            return respond(session, 405, json, body).await;
        }
        if path == wire::METRICS_PATH && !Self::may_scrape(session, metrics_token) {
            let body = error_json(
                ErrorCode::Unauthorized,
                "metrics need `Authorization: Bearer <token>` (metrics.token_sha256)",
            );
            return respond(session, 401, json, body).await;
        }
        if path == wire::HEALTH_PATH {
            let body = health(&self.cell, &self.store);
            respond(session, 200, json, body).await
        } else {
            // Current at the scrape, not at the last refresh.
            let fault = self.store.fault().is_some();
            stamp_store::metrics::STORE_FAULT.set(i64::from(fault));
            if fault {
                stamp_store::metrics::STORE_UP.set(0);
            }
            respond(
                session,
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                Bytes::from(metrics::render()),
            )
            .await
        }
    }

    /// Whether the request may read the metrics: always, unless a token is
    /// configured; then it must present it (compared by hash, in constant time).
    fn may_scrape(session: &Session, metrics_token: Option<&[u8; 32]>) -> bool {
        let Some(want) = metrics_token else {
            return true;
        };
        let presented = session
            .req_header()
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, secret)| secret.trim().to_string());
        let Some(secret) = presented else {
            return false;
        };
        let got: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        stamp_model::share::same(&got, want)
    }

    /// Reads the request (bounded by the control plane's limit), calls the
    /// control plane and writes what it answers.
    async fn delegate(&self, session: &mut Session) -> Result<()> {
        let parts = session.req_header().as_owned_parts();
        let limit = self.control.body_limit(&parts);
        let body = match read_body(session, limit).await {
            Ok(b) => b,
            Err((status, code, message)) => {
                return respond(
                    session,
                    status,
                    "application/json",
                    error_json(code, message),
                )
                .await
            }
        };
        let head = parts.method == http::Method::HEAD;
        let resp = self
            .control
            .call(http::Request::from_parts(parts, body))
            .await;
        let (parts, body) = resp.into_parts();
        let mut out = ResponseHeader::build(parts.status, Some(parts.headers.len() + 2))?;
        for (name, value) in &parts.headers {
            out.append_header(name.clone(), value.clone())?;
        }
        match body {
            Body::Full(bytes) => {
                out.insert_header(header::CONTENT_LENGTH, bytes.len().to_string())?;
                session.write_response_header(Box::new(out), head).await?;
                if !head {
                    session.write_response_body(Some(bytes), true).await?;
                }
            }
            Body::Stream(mut stream) => {
                session.write_response_header(Box::new(out), head).await?;
                if head {
                    return Ok(());
                }
                while let Some(chunk) = stream.next().await {
                    if session
                        .write_response_body(Some(chunk), false)
                        .await
                        .is_err()
                    {
                        // The client went away: that ends the stream.
                        return Ok(());
                    }
                }
                session.write_response_body(None, true).await?;
            }
        }
        Ok(())
    }
}

/// Reads a request body, refusing past `max` bytes without keeping anything.
pub(crate) async fn read_body(
    session: &mut Session,
    max: usize,
) -> std::result::Result<Bytes, (u16, ErrorCode, String)> {
    let too_large = || {
        (
            413,
            ErrorCode::TooLarge,
            format!("the request body is larger than {max} bytes"),
        )
    };
    if let Some(len) = session
        .req_header()
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > max as u64 {
            return Err(too_large());
        }
    }
    let mut buf = BytesMut::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > max {
                    return Err(too_large());
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => {
                return Err((
                    400,
                    ErrorCode::BadRequest,
                    format!("cannot read the request body: {e}"),
                ))
            }
        }
    }
    Ok(buf.freeze())
}

/// Health: the proxy is serving (always 200, production keeps flowing when
/// the store is down); `status` says `ok` or `degraded` and why.
fn health(cell: &SnapshotCell, store: &SharedStore) -> Bytes {
    let snap = cell.load();
    let now = now_ms();
    let store_ok = cell.store_ok();
    let lost = cell.lost();
    let fault = store.fault();
    let healthy = store_ok && lost.is_none() && fault.is_none();
    let body = serde_json::json!({
        "status": if healthy { "ok" } else { "degraded" },
        "version": env!("CARGO_PKG_VERSION"),
        "store": {
            "location": store.describe(),
            "reachable": store_ok,
            "last_ok_ms_ago": (cell.last_ok_ms() > 0).then(|| now.saturating_sub(cell.last_ok_ms())),
            "epoch": store.epoch(),
            "lost_state": lost,
            "fault": fault,
        },
        "snapshot": {
            "version": snap.version,
            "age_ms": (snap.built_ms > 0).then(|| now.saturating_sub(snap.built_ms)),
            "tickets": snap.tickets.len(),
            "released": snap.released.len(),
            "variants": {
                "built": snap.variants.len(),
                "capacity": snap.variants.capacity(),
            },
        },
    });
    Bytes::from(body.to_string())
}
