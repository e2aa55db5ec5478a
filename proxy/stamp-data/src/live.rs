//! Live reload of `?dev=` pages (opt-in: `stamp --update --live` prints the
//! link with `stamp_live=1`). The page gets one small inline script (with
//! the map's nonce, so it passes the page's CSP like the map does) that
//! listens to `/__stamp/live?ticket=KEY&v=<variant>`; that stream sends one
//! `data: reload` as soon as the ticket's dev variant is no longer `v`.
//! Never on production or `?qa=` pages. The stream watches the in-memory
//! snapshot only: no store round trip, whatever the number of open pages.
//!
//! When the only change is the body of JavaScript modules the page maps
//! (a save), the stream sends a swap instead,
//! `data: {"v":"<new variant>","swap":[["<specifier>","<url the page has>"],…]}`,
//! and goes on. A page running es-module-shims with `hotReload` then calls
//! `importShim.hotReload(url)` for each; es-module-shims asks for the module
//! again as `url?v=N`, and the proxy answers that with the body the
//! browser's dev view has at that path now (`select::classify`'s `hot`).
//! Any other page reloads.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

use crate::internal::respond;
use crate::modules::content_type;
use crate::snapshot::{Effective, SnapshotCell};
use stamp_model::ticket::{Hash, ModuleRef, TicketKey};
use stamp_model::wire;

/// How often the snapshot is looked at.
const EVERY: Duration = Duration::from_millis(100);
/// A comment line now and then, so idle connections are not cut, and so a
/// stream whose browser left ends (its write fails) within this time.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// A stream ends after this; `EventSource` reconnects by itself.
const MAX_LIFE: Duration = Duration::from_secs(600);
/// Most streams open at once: the endpoint needs no credentials, so it
/// must not let anyone hold an unbounded number of tasks.
pub const MAX_STREAMS: usize = 1024;
/// Most streams one client address may hold (a developer's open tabs), so
/// one client cannot take every slot.
pub const MAX_PER_CLIENT: usize = 16;

static OPEN: AtomicUsize = AtomicUsize::new(0);
static BY_CLIENT: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>> =
    std::sync::LazyLock::new(Default::default);

/// One open stream, counted while it lives (in all, and for its client).
struct Slot(Option<IpAddr>);

impl Slot {
    fn take(client: Option<IpAddr>) -> Option<Slot> {
        let mut by = BY_CLIENT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(ip) = client {
            if by.get(&ip).copied().unwrap_or(0) >= MAX_PER_CLIENT {
                return None;
            }
        }
        let taken = OPEN
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < MAX_STREAMS).then_some(n + 1)
            })
            .is_ok();
        if !taken {
            return None;
        }
        if let Some(ip) = client {
            *by.entry(ip).or_default() += 1;
        }
        // Made only once counted: a Slot dropped gives back what it took.
        Some(Slot(client))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::SeqCst);
        if let Some(ip) = self.0 {
            let mut by = BY_CLIENT
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(n) = by.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    by.remove(&ip);
                }
            }
        }
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
fn current(cell: &SnapshotCell, key: &TicketKey) -> Option<Arc<Effective>> {
    cell.load().variant(key, stamp_model::ticket::View::Dev)
}

/// What a page showing `base` can do to show `now` without a reload: the
/// modules whose bodies changed, each as (specifier, the URL `base` maps it
/// to). `None` when only a reload shows `now`: a module came or went, moved,
/// is no JavaScript (a stylesheet is linked by the page, not imported), or
/// replaces a bundle's entry by pattern (the page's `<script src>` names it).
pub fn swaps(base: &Effective, now: &Effective) -> Option<Vec<(String, String)>> {
    if base.overrides.len() != now.overrides.len() || base.remote_origins != now.remote_origins {
        return None;
    }
    let in_patterns = |e: &Effective, m: &ModuleRef| e.patterns.iter().any(|(_, p)| p == m);
    let mut out = Vec::new();
    for ((spec, old), (spec_now, new)) in base.overrides.iter().zip(&now.overrides) {
        if spec != spec_now || old.path != new.path {
            return None;
        }
        if old.hash == new.hash {
            continue;
        }
        let js = content_type(&old.path).starts_with("text/javascript");
        if !js || in_patterns(base, old) || in_patterns(now, new) {
            return None;
        }
        out.push((spec.clone(), old.url()));
    }
    (!out.is_empty()).then_some(out)
}

/// Answers `/__stamp/live`.
/// `selected` is the ticket whose dev view the caller's own selection has:
/// the stream tells which variant comes next, so it follows only that one.
pub async fn serve(
    session: &mut Session,
    cell: &Arc<SnapshotCell>,
    selected: Option<&TicketKey>,
    client: Option<IpAddr>,
) -> Result<()> {
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
    if selected != Some(&key) {
        return respond(
            session,
            403,
            text,
            Bytes::from_static(
                b"ticket-stamp: live reload follows only the dev view this browser has selected\n",
            ),
        )
        .await;
    }
    let Some(_slot) = Slot::take(client) else {
        return respond(
            session,
            503,
            text,
            Bytes::from_static(
                b"ticket-stamp: too many live-reload streams are open (from this address, or in all)\n",
            ),
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
    let reload = Bytes::from_static(b"data: reload\n\n");
    let Some(mut base) = current(cell, &key).filter(|e| e.id == seen) else {
        session.write_response_body(Some(reload), true).await?;
        return Ok(());
    };
    loop {
        let now = current(cell, &key);
        match now {
            Some(now) if now.id == base.id => {}
            Some(now) => {
                let Some(list) = swaps(&base, &now) else {
                    session.write_response_body(Some(reload), true).await?;
                    return Ok(());
                };
                let event = serde_json::json!({ "v": now.id.to_string(), "swap": list });
                session
                    .write_response_body(Some(Bytes::from(format!("data: {event}\n\n"))), false)
                    .await?;
                base = now;
            }
            None => {
                session.write_response_body(Some(reload), true).await?;
                return Ok(());
            }
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
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_bounded_in_all_and_per_client() {
        let one: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let mine: Vec<Slot> = std::iter::from_fn(|| Slot::take(Some(one)))
            .take(MAX_PER_CLIENT + 5)
            .collect();
        assert_eq!(
            mine.len(),
            MAX_PER_CLIENT,
            "one address holds at most its share"
        );
        assert!(Slot::take(Some(other)).is_some(), "others still get in");
        let rest: Vec<Slot> = std::iter::from_fn(|| Slot::take(None))
            .take(MAX_STREAMS + 5)
            .collect();
        assert_eq!(mine.len() + rest.len(), MAX_STREAMS);
        assert!(Slot::take(None).is_none());
        drop(rest);
        drop(mine);
        assert!(Slot::take(Some(one)).is_some(), "freed when streams end");
        assert!(BY_CLIENT.lock().unwrap().is_empty(), "nothing left counted");
    }

    fn variant(modules: &[(&str, &str, &[u8])]) -> Effective {
        Effective::new(
            modules
                .iter()
                .map(|(spec, path, body)| {
                    let m = ModuleRef {
                        path: path.to_string(),
                        hash: Hash::of(body),
                        size: body.len() as u64,
                    };
                    (spec.to_string(), m)
                })
                .collect(),
        )
    }

    #[test]
    fn only_changed_javascript_bodies_are_swapped() {
        let base = variant(&[
            ("/src/a.js", "/src/a.js", b"a1"),
            ("@shop/b", "/src/b.mjs", b"b1"),
        ]);
        let saved = variant(&[
            ("/src/a.js", "/src/a.js", b"a2"),
            ("@shop/b", "/src/b.mjs", b"b1"),
        ]);
        let old_a = base.overrides["/src/a.js"].url();
        assert_eq!(
            swaps(&base, &saved),
            Some(vec![("/src/a.js".to_string(), old_a)])
        );
        assert_eq!(swaps(&base, &base), None, "nothing changed");
        let added = variant(&[
            ("/src/a.js", "/src/a.js", b"a1"),
            ("@shop/b", "/src/b.mjs", b"b1"),
            ("/src/c.js", "/src/c.js", b"c"),
        ]);
        assert_eq!(swaps(&base, &added), None, "a module came");
        assert_eq!(swaps(&added, &base), None, "a module went");
        let moved = variant(&[
            ("/src/a.js", "/src/a.js", b"a1"),
            ("@shop/b", "/src/b2.mjs", b"b1"),
        ]);
        assert_eq!(swaps(&base, &moved), None, "a specifier maps elsewhere");
        let css = |body: &[u8]| variant(&[("/src/site.css", "/src/site.css", body)]);
        assert_eq!(swaps(&css(b"x"), &css(b"y")), None, "stylesheets reload");
        let entry =
            |body: &[u8]| variant(&[("/assets/index-[hash:8].js", "/assets/index-abc.js", body)]);
        assert_eq!(swaps(&entry(b"x"), &entry(b"y")), None, "entries reload");
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
