//! The reserved `/__stamp/` endpoints served by the proxy itself: health and
//! Prometheus metrics. Nothing under the prefix ever reaches the origin.

use std::sync::Arc;

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

use crate::metrics;
use crate::snapshot::SnapshotCell;
use crate::store::{now_ms, SharedStore};

/// The reserved prefix (without its trailing slash, so `/__stamp` matches too).
pub const PREFIX_NO_SLASH: &str = "/__stamp";

/// Writes a complete response with a body.
pub async fn respond(
    session: &mut Session,
    status: u16,
    content_type: &str,
    body: Bytes,
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(4))?;
    resp.insert_header(http::header::CONTENT_TYPE, content_type)?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    let head = session.req_header().method == http::Method::HEAD;
    session.write_response_header(Box::new(resp), head).await?;
    if !head {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// Answers a request under `/__stamp/`.
pub async fn serve(
    session: &mut Session,
    cell: &Arc<SnapshotCell>,
    store: &SharedStore,
    api: &crate::api::Api,
) -> Result<()> {
    let path = session.req_header().uri.path().to_string();
    if crate::panel::serve(session, &api.cfg, &api.sessions, cell).await? {
        return Ok(());
    }
    if path.starts_with(crate::api::PREFIX) {
        return api.serve(session).await;
    }
    let method = session.req_header().method.clone();
    let json = "application/json";
    if method != http::Method::GET && method != http::Method::HEAD {
        let body = error_json("only GET and HEAD are supported here");
        return respond(session, 405, json, body).await;
    }
    match path.as_str() {
        "/__stamp/health" => {
            let body = health(cell, store);
            respond(session, 200, json, body).await
        }
        "/__stamp/metrics" => {
            respond(
                session,
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                Bytes::from(metrics::render()),
            )
            .await
        }
        _ => {
            let body = error_json(
                "no such endpoint under /__stamp/ (see /__stamp/health, /__stamp/metrics)",
            );
            respond(session, 404, json, body).await
        }
    }
}

fn error_json(message: &str) -> Bytes {
    Bytes::from(serde_json::json!({ "error": message }).to_string())
}

/// Health: the proxy is serving (always 200, production keeps flowing when
/// the store is down); `status` says `ok` or `degraded` and why.
fn health(cell: &SnapshotCell, store: &SharedStore) -> Bytes {
    let snap = cell.load();
    let now = now_ms();
    let store_ok = cell.store_ok();
    let body = serde_json::json!({
        "status": if store_ok { "ok" } else { "degraded" },
        "version": env!("CARGO_PKG_VERSION"),
        "store": {
            "location": store.describe(),
            "reachable": store_ok,
            "last_ok_ms_ago": (cell.last_ok_ms() > 0).then(|| now.saturating_sub(cell.last_ok_ms())),
        },
        "snapshot": {
            "version": snap.version,
            "age_ms": (snap.built_ms > 0).then(|| now.saturating_sub(snap.built_ms)),
            "tickets": snap.tickets.len(),
            "released": snap.released.len(),
        },
    });
    Bytes::from(body.to_string())
}
