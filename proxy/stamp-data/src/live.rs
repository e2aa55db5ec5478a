//! Live reload of `?dev=` pages (opt-in: `stamp --update --live` prints the
//! link with `stamp_live=1`). The page gets one small inline script (with
//! the map's nonce, so it passes the page's CSP like the map does) that
//! listens to `/__stamp/live?ticket=KEY&v=<variant>`; that stream sends one
//! `data: reload` as soon as the ticket's dev variant is no longer `v`.
//! Never on production or `?qa=` pages. The stream watches the in-memory
//! snapshot only: no store round trip, whatever the number of open pages.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

use crate::internal::respond;
use crate::snapshot::SnapshotCell;
use stamp_model::ticket::{Hash, TicketKey};
use stamp_model::wire;

/// How often the snapshot is looked at.
const EVERY: Duration = Duration::from_millis(100);
/// A comment line now and then, so idle connections are not cut.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// A stream ends after this; `EventSource` reconnects by itself.
const MAX_LIFE: Duration = Duration::from_secs(600);
/// Most streams open at once: the endpoint needs no credentials, so it
/// must not let anyone hold an unbounded number of tasks.
pub const MAX_STREAMS: usize = 1024;

static OPEN: AtomicUsize = AtomicUsize::new(0);

/// One open stream, counted while it lives.
struct Slot;

impl Slot {
    fn take() -> Option<Slot> {
        let taken = OPEN
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < MAX_STREAMS).then_some(n + 1)
            })
            .is_ok();
        // Lazily: a Slot made and dropped here would give back a count never taken.
        taken.then(|| Slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Whether the page's query asks for live reload (`stamp_live=1`).
pub fn asked(query: Option<&str>) -> bool {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .any(|(k, v)| k == wire::LIVE_PARAM && (v == "1" || v == "on" || v == "true"))
}

/// The stream a dev page of `key` showing variant `id` listens to.
pub fn url(key: &TicketKey, id: &Hash) -> String {
    format!("{}?ticket={key}&v={id}", wire::LIVE_PATH)
}

/// The variant a dev page of `key` would get now; `None` once the ticket
/// is gone or closed.
fn current(cell: &SnapshotCell, key: &TicketKey) -> Option<Hash> {
    let snap = cell.load();
    let t = snap.tickets.get(key)?;
    (t.stage != stamp_model::Stage::Closed).then(|| t.dev.id)
}

/// Answers `/__stamp/live`.
pub async fn serve(session: &mut Session, cell: &Arc<SnapshotCell>) -> Result<()> {
    let text = "text/plain; charset=utf-8";
    let mut key = None;
    let mut seen = None;
    for (k, v) in
        url::form_urlencoded::parse(session.req_header().uri.query().unwrap_or("").as_bytes())
    {
        match &*k {
            "ticket" => key = TicketKey::parse(&v).ok(),
            "v" => seen = Hash::parse(&v),
            _ => {}
        }
    }
    let (Some(key), Some(seen)) = (key, seen) else {
        return respond(
            session,
            400,
            text,
            Bytes::from_static(b"ticket-stamp: live needs ?ticket=KEY&v=<sha256>\n"),
        )
        .await;
    };
    let Some(_slot) = Slot::take() else {
        return respond(
            session,
            503,
            text,
            Bytes::from_static(b"ticket-stamp: too many live-reload streams are open\n"),
        )
        .await;
    };
    let mut resp = ResponseHeader::build(200, Some(4))?;
    resp.insert_header(header::CONTENT_TYPE, "text/event-stream")?;
    resp.insert_header(header::CACHE_CONTROL, "no-store")?;
    resp.insert_header("x-accel-buffering", "no")?;
    session.write_response_header(Box::new(resp), false).await?;
    // Tell the browser how soon to come back after MAX_LIFE or a cut.
    session
        .write_response_body(Some(Bytes::from_static(b"retry: 1000\n\n")), false)
        .await?;
    let start = Instant::now();
    let mut last_beat = Instant::now();
    loop {
        if current(cell, &key) != Some(seen) {
            session
                .write_response_body(Some(Bytes::from_static(b"data: reload\n\n")), true)
                .await?;
            return Ok(());
        }
        if start.elapsed() >= MAX_LIFE {
            session.write_response_body(None, true).await?;
            return Ok(());
        }
        if last_beat.elapsed() >= HEARTBEAT {
            // A write to a browser that left fails: the stream ends with it.
            session
                .write_response_body(Some(Bytes::from_static(b": ping\n\n")), false)
                .await?;
            last_beat = Instant::now();
        }
        tokio::time::sleep(EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_bounded() {
        let held: Vec<Slot> = std::iter::from_fn(Slot::take)
            .take(MAX_STREAMS + 5)
            .collect();
        assert_eq!(held.len(), MAX_STREAMS);
        assert!(Slot::take().is_none());
        drop(held);
        assert!(Slot::take().is_some(), "freed when streams end");
    }

    #[test]
    fn only_an_explicit_parameter_asks() {
        assert!(asked(Some("dev=TKT-1&stamp_live=1")));
        assert!(asked(Some("stamp_live=on")));
        assert!(!asked(Some("dev=TKT-1")));
        assert!(!asked(Some("stamp_live=0")));
        assert!(!asked(Some("live=1")));
        assert!(!asked(None));
    }
}
