//! The stamped-page cache: a released ticket must not cost production the
//! parse of every page.
//!
//! A stamped page is kept per page URL and variant, with the origin's strong
//! `ETag`. Every request is still sent to the origin, with that validator
//! (`If-None-Match` only: an origin comparing dates alone could answer 304
//! for another visitor's page); when
//! the origin answers `304 Not Modified`, the stamped bytes it validated are
//! sent without parsing anything. Any other answer is stamped as usual and
//! replaces the entry. So the origin decides, on every request and with the
//! client's own cookies and headers, whether what we hold is still the page:
//! nothing is served longer than the origin says, and nothing is guessed.
//!
//! What is never stored: answers to requests with `Authorization`, answers
//! other than `200`, with `Cache-Control: no-store` or `private`, with a
//! `Set-Cookie`, with a `Vary` on anything but `Accept-Encoding` (an entry
//! is kept per set of codings asked of the origin), and answers without a strong `ETag`
//! (a date cannot tell two users' pages apart, a weak tag does not promise
//! the same bytes), and answers whose policy carries the origin's own nonce
//! (it would be frozen into the stored bytes). Pages are kept up to a byte budget
//! (`rewrite.page_cache_bytes`), least recently used out first, and all of
//! them are dropped when the snapshot changes (a new upload, a move).
//!
//! Per-response values stay per response: the CSP nonce the rewrite made up
//! for the page is found in the stored bytes and headers and replaced with a
//! fresh one on every hit, so no two responses share a nonce we chose.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderName};
use pingora::http::{RequestHeader, ResponseHeader};
use quick_cache::sync::Cache;

use crate::metrics;
use stamp_model::ticket::Hash;

/// What a stamped page depends on besides the origin's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PageKey {
    pub host: String,
    /// Path and query, as the origin is asked for them.
    pub uri: String,
    /// The variant's override set.
    pub variant: Hash,
    /// Everything else the rewrite takes from the request: the ticket, view,
    /// stage and module count the badge shows, live reload, the scheme.
    pub label: String,
    /// The codings the origin is asked for: its answer, compressed or not,
    /// is kept for requests that ask the same (the page then goes out in
    /// the coding the origin chose for them).
    pub codings: String,
}

/// One stored page.
#[derive(Debug)]
pub struct Entry {
    version: u64,
    etag: String,
    last_modified: Option<String>,
    /// The stamped response's headers, without framing, cookies and our
    /// `x-ticket-stamp` (those are per request).
    headers: Vec<(HeaderName, String)>,
    body: Bytes,
    /// The nonce the rewrite made up for this page, and where it sits in
    /// `body`: replaced on every hit.
    nonce: Option<String>,
    nonce_at: Vec<usize>,
    /// The origin had compressed the page.
    encoded: bool,
}

impl Entry {
    pub fn validators(&self) -> (&str, Option<&str>) {
        (&self.etag, self.last_modified.as_deref())
    }

    /// Whether the origin had compressed the page this entry was filled
    /// from (it goes out compressed again, to a client that accepts it).
    pub fn encoded(&self) -> bool {
        self.encoded
    }

    /// The response for a hit: headers into `resp` (status 200), the body
    /// returned; both carry `nonce` where the stored page had its own.
    pub fn respond(&self, resp: &mut ResponseHeader, nonce: &str) -> pingora::Result<Bytes> {
        resp.set_status(200)?;
        for (name, value) in &self.headers {
            match &self.nonce {
                Some(old) if value.contains(old.as_str()) => {
                    resp.append_header(name.clone(), value.replace(old.as_str(), nonce))?
                }
                _ => resp.append_header(name.clone(), value.as_str())?,
            };
        }
        let body = match &self.nonce {
            Some(old) if !self.nonce_at.is_empty() => {
                let mut out =
                    Vec::with_capacity(self.body.len() + self.nonce_at.len() * nonce.len());
                let mut from = 0;
                for &at in &self.nonce_at {
                    out.extend_from_slice(&self.body[from..at]);
                    out.extend_from_slice(nonce.as_bytes());
                    from = at + old.len();
                }
                out.extend_from_slice(&self.body[from..]);
                Bytes::from(out)
            }
            _ => self.body.clone(),
        };
        resp.insert_header(header::CONTENT_LENGTH, body.len().to_string())?;
        Ok(body)
    }
}

#[derive(Debug, Clone)]
struct Weight;

impl quick_cache::Weighter<PageKey, Arc<Entry>> for Weight {
    fn weight(&self, key: &PageKey, e: &Arc<Entry>) -> u64 {
        let headers: usize = e
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len())
            .sum();
        (e.body.len()
            + headers
            + key.host.len()
            + key.uri.len()
            + key.label.len()
            + key.codings.len()
            + 256) as u64
    }
}

/// A page being stamped that may be stored once it is complete.
#[derive(Debug)]
pub struct Fill {
    key: PageKey,
    version: u64,
    etag: String,
    last_modified: Option<String>,
    headers: Vec<(HeaderName, String)>,
    nonce: String,
    chunks: Vec<Bytes>,
    len: usize,
    max: usize,
    encoded: bool,
}

impl Fill {
    /// The stamped response's headers as they are sent, and the nonce the
    /// rewrite made up for the page; `encoded`: the origin had compressed
    /// the page (a hit is then compressed again, as this answer was).
    pub fn stamped(&mut self, resp: &ResponseHeader, nonce: &str, encoded: bool) {
        self.encoded = encoded;
        self.headers = resp
            .headers
            .iter()
            .filter(|(name, _)| {
                !matches!(
                    name.as_str(),
                    // An instruction for the one response it came on (the
                    // selection's, or the origin's), never replayed.
                    "set-cookie"
                        | "clear-site-data"
                        | "content-length"
                        | "transfer-encoding"
                        | "connection"
                        | "date"
                        | stamp_model::wire::header::INFO
                )
            })
            .filter_map(|(n, v)| v.to_str().ok().map(|v| (n.clone(), v.to_string())))
            .collect();
        self.nonce = nonce.to_string();
    }

    /// Adds stamped output; `false` (give up) past the largest page kept.
    pub fn push(&mut self, chunk: &Bytes) -> bool {
        self.len += chunk.len();
        if self.len > self.max {
            metrics::count(&metrics::PAGE_CACHE, "too-large");
            return false;
        }
        if !chunk.is_empty() {
            self.chunks.push(chunk.clone());
        }
        true
    }
}

/// The cache.
pub struct PageCache {
    cache: Option<Cache<PageKey, Arc<Entry>, Weight>>,
    /// The snapshot version the entries belong to.
    version: AtomicU64,
    max_entry: usize,
}

impl std::fmt::Debug for PageCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageCache")
            .field("pages", &self.cache.as_ref().map_or(0, |c| c.len()))
            .finish()
    }
}

impl PageCache {
    /// A cache of `budget` bytes; 0 turns it off.
    pub fn new(budget: u64) -> PageCache {
        let cache = (budget > 0).then(|| {
            // Pages are tens to hundreds of KB: a generous estimate of the
            // count only sizes the hash table.
            let items = (budget / (16 * 1024)).clamp(16, 1 << 20) as usize;
            // Few shards: quick_cache never stores an item heavier than
            // about its shard's share of the budget (budget / shards).
            let options = quick_cache::OptionsBuilder::new()
                .estimated_items_capacity(items)
                .weight_capacity(budget)
                .shards(4)
                .build();
            match options {
                Ok(o) => Cache::with_options(o, Weight, Default::default(), Default::default()),
                Err(_) => Cache::with_weighter(items, budget, Weight),
            }
        });
        PageCache {
            cache,
            version: AtomicU64::new(0),
            // One page may take an eighth of the budget at most (half a shard).
            max_entry: usize::try_from(budget / 8).unwrap_or(usize::MAX),
        }
    }

    pub fn enabled(&self) -> bool {
        self.cache.is_some()
    }

    /// Follows the snapshot: a new version drops every page.
    fn follow(&self, version: u64) {
        let Some(cache) = &self.cache else { return };
        let old = self.version.swap(version, Ordering::AcqRel);
        if old != version {
            cache.clear();
            metrics::PAGE_CACHE_BYTES.set(0);
        }
    }

    /// The stored page for `key` at snapshot `version`, if any.
    pub fn get(&self, key: &PageKey, version: u64) -> Option<Arc<Entry>> {
        let cache = self.cache.as_ref()?;
        self.follow(version);
        let hit = cache.get(key).filter(|e| e.version == version);
        if hit.is_none() {
            metrics::count(&metrics::PAGE_CACHE, "miss");
        }
        hit
    }

    /// Starts keeping the page being stamped, when the origin's answer (its
    /// headers before the rewrite touched them) may be stored; `None`, with
    /// the reason counted, when it may not.
    pub fn fill(
        &self,
        key: PageKey,
        version: u64,
        req: &RequestHeader,
        origin: &ResponseHeader,
    ) -> Option<Fill> {
        self.cache.as_ref()?;
        match storable(req, origin) {
            Ok((etag, last_modified)) => Some(Fill {
                key,
                version,
                etag,
                last_modified,
                headers: Vec::new(),
                nonce: String::new(),
                chunks: Vec::new(),
                len: 0,
                max: self.max_entry,
                encoded: false,
            }),
            Err(reason) => {
                metrics::count(&metrics::PAGE_CACHE, reason);
                None
            }
        }
    }

    /// Stores a complete page.
    pub fn store(&self, mut fill: Fill) {
        let Some(cache) = &self.cache else { return };
        if self.version.load(Ordering::Acquire) != fill.version {
            return; // the snapshot moved on while this page was stamped
        }
        let body = match fill.chunks.len() {
            1 => fill.chunks.pop().unwrap_or_default(),
            _ => {
                let mut all = Vec::with_capacity(fill.len);
                for c in &fill.chunks {
                    all.extend_from_slice(c);
                }
                Bytes::from(all)
            }
        };
        let nonce_at: Vec<usize> = if fill.nonce.is_empty() {
            Vec::new()
        } else {
            memchr::memmem::find_iter(&body, fill.nonce.as_bytes()).collect()
        };
        let entry = Entry {
            version: fill.version,
            etag: fill.etag,
            last_modified: fill.last_modified,
            headers: fill.headers,
            body,
            nonce: (!fill.nonce.is_empty()).then_some(fill.nonce),
            nonce_at,
            encoded: fill.encoded,
        };
        cache.insert(fill.key, Arc::new(entry));
        metrics::count(&metrics::PAGE_CACHE, "store");
        metrics::PAGE_CACHE_BYTES.set(i64::try_from(cache.weight()).unwrap_or(i64::MAX));
    }
}

/// A header's comma-separated items, trimmed (compare them ignoring case).
fn directives(h: &http::HeaderMap, name: HeaderName) -> impl Iterator<Item = &str> + '_ {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// Whether the origin's answer may be stored, with its validators; else
/// the reason, as a metric label.
pub fn storable(
    req: &RequestHeader,
    resp: &ResponseHeader,
) -> Result<(String, Option<String>), &'static str> {
    if req.method != http::Method::GET || req.headers.contains_key(header::AUTHORIZATION) {
        return Err("uncacheable-request");
    }
    if resp.status.as_u16() != 200 {
        return Err("uncacheable-status");
    }
    let h = &resp.headers;
    if directives(h, header::CACHE_CONTROL).any(|d| {
        let name = d.split('=').next().unwrap_or("").trim();
        name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("private")
    }) || directives(h, header::PRAGMA).any(|d| d.eq_ignore_ascii_case("no-cache"))
    {
        return Err("uncacheable-directive");
    }
    if h.contains_key(header::SET_COOKIE) {
        return Err("uncacheable-cookie");
    }
    // The origin's own nonce would be frozen into the stored bytes (an edge
    // that injects a fresh one per response often keeps the ETag): only the
    // nonces this proxy makes up are replaced on a hit.
    let nonced = |name: &str| {
        h.get_all(name).iter().any(|v| {
            v.as_bytes()
                .windows(7)
                .any(|w| w.eq_ignore_ascii_case(b"'nonce-"))
        })
    };
    if nonced("content-security-policy") || nonced("content-security-policy-report-only") {
        return Err("uncacheable-nonce");
    }
    if directives(h, header::VARY)
        .any(|d| !d.is_empty() && !d.eq_ignore_ascii_case("accept-encoding"))
    {
        return Err("uncacheable-vary");
    }
    if h.contains_key(header::CONTENT_RANGE) {
        return Err("uncacheable-status");
    }
    let etag = h
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| is_strong_etag(t))
        .ok_or("uncacheable-validator")?;
    let last_modified = h
        .get(header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Ok((etag.to_string(), last_modified))
}

/// `"…"` with no `W/` and only the characters an entity tag may hold.
fn is_strong_etag(t: &str) -> bool {
    t.len() >= 2
        && t.len() <= 256
        && t.starts_with('"')
        && t.ends_with('"')
        && t[1..t.len() - 1]
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn req() -> RequestHeader {
        RequestHeader::build("GET", b"/", None).unwrap()
    }

    fn resp(headers: &[(&'static str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(200, None).unwrap();
        r.insert_header("content-type", "text/html").unwrap();
        for (k, v) in headers {
            r.append_header(*k, *v).unwrap();
        }
        r
    }

    #[test]
    fn only_answers_with_a_strong_tag_and_no_private_parts_are_stored() {
        let ok = resp(&[("etag", "\"v1\""), ("cache-control", "no-cache")]);
        assert_eq!(storable(&req(), &ok), Ok(("\"v1\"".into(), None)));
        let dated = resp(&[
            ("etag", "\"v1\""),
            ("last-modified", "Tue, 01 Dec 2026 10:00:00 GMT"),
        ]);
        assert_eq!(
            storable(&req(), &dated).unwrap().1.as_deref(),
            Some("Tue, 01 Dec 2026 10:00:00 GMT")
        );
        let cases: &[(&[(&'static str, &str)], &str)] = &[
            (&[], "uncacheable-validator"),
            (&[("etag", "W/\"v1\"")], "uncacheable-validator"),
            (&[("etag", "v1")], "uncacheable-validator"),
            (&[("etag", "\"a\"b\"")], "uncacheable-validator"),
            (
                &[("last-modified", "Tue, 01 Dec 2026 10:00:00 GMT")],
                "uncacheable-validator",
            ),
            (
                &[("etag", "\"v1\""), ("cache-control", "no-store")],
                "uncacheable-directive",
            ),
            (
                &[("etag", "\"v1\""), ("cache-control", "max-age=0, Private")],
                "uncacheable-directive",
            ),
            (
                &[("etag", "\"v1\""), ("cache-control", "private=\"x\"")],
                "uncacheable-directive",
            ),
            (
                &[("etag", "\"v1\""), ("pragma", "no-cache")],
                "uncacheable-directive",
            ),
            (
                &[("etag", "\"v1\""), ("pragma", "No-Cache")],
                "uncacheable-directive",
            ),
            (
                &[
                    ("etag", "\"v1\""),
                    ("content-security-policy", "script-src 'NONCE-abc'"),
                ],
                "uncacheable-nonce",
            ),
            (
                &[
                    ("etag", "\"v1\""),
                    (
                        "content-security-policy-report-only",
                        "script-src 'nonce-abc'",
                    ),
                ],
                "uncacheable-nonce",
            ),
            (
                &[("etag", "\"v1\""), ("set-cookie", "s=1")],
                "uncacheable-cookie",
            ),
            (
                &[("etag", "\"v1\""), ("vary", "Accept-Encoding, Cookie")],
                "uncacheable-vary",
            ),
            (&[("etag", "\"v1\""), ("vary", "*")], "uncacheable-vary"),
        ];
        for (headers, reason) in cases {
            assert_eq!(
                storable(&req(), &resp(headers)),
                Err(*reason),
                "{headers:?}"
            );
        }
        for vary in ["accept-encoding", " Accept-Encoding ,"] {
            let fine_vary = resp(&[("etag", "\"v1\""), ("vary", vary)]);
            assert!(storable(&req(), &fine_vary).is_ok(), "{vary}");
        }
        let mut authorized = req();
        authorized
            .insert_header("authorization", "Bearer x")
            .unwrap();
        assert_eq!(storable(&authorized, &ok), Err("uncacheable-request"));
        let head = RequestHeader::build("HEAD", b"/", None).unwrap();
        assert_eq!(storable(&head, &ok), Err("uncacheable-request"));
        let mut not_found = ok.clone();
        not_found.set_status(404).unwrap();
        assert_eq!(storable(&req(), &not_found), Err("uncacheable-status"));
    }

    fn key(uri: &str, variant: &[u8]) -> PageKey {
        PageKey {
            host: "shop.test".into(),
            uri: uri.into(),
            variant: Hash::of(variant),
            label: "dev TKT-1".into(),
            codings: "identity".into(),
        }
    }

    fn stored(cache: &PageCache, k: PageKey, version: u64, body: &str, nonce: &str) {
        let origin = resp(&[("etag", "\"v1\"")]);
        // As the proxy does: a lookup first, then the fill.
        let _ = cache.get(&k, version);
        let mut fill = cache.fill(k, version, &req(), &origin).unwrap();
        assert!(fill.push(&Bytes::from(body.to_string())));
        let mut stamped = resp(&[(
            "content-security-policy",
            &format!("script-src 'nonce-{nonce}'"),
        )]);
        stamped
            .insert_header("set-cookie", "ticket_stamp=dev.TKT-1")
            .unwrap();
        fill.stamped(&stamped, nonce, false);
        cache.store(fill);
    }

    #[test]
    fn a_hit_goes_out_in_the_coding_of_the_answer_that_filled_it() {
        let cache = PageCache::new(1 << 20);
        for (uri, encoded) in [("/plain", false), ("/gzipped", true)] {
            let k = key(uri, b"a");
            let _ = cache.get(&k, 1);
            let mut fill = cache
                .fill(k.clone(), 1, &req(), &resp(&[("etag", "\"v1\"")]))
                .unwrap();
            assert!(fill.push(&Bytes::from_static(b"<p>page</p>")));
            fill.stamped(&resp(&[]), "n", encoded);
            cache.store(fill);
            assert_eq!(cache.get(&k, 1).unwrap().encoded(), encoded, "{uri}");
        }
    }

    #[test]
    fn a_hit_gets_its_own_nonce_and_no_cookie() {
        let cache = PageCache::new(1 << 20);
        let k = key("/", b"a");
        assert!(cache.get(&k, 1).is_none());
        stored(
            &cache,
            k.clone(),
            1,
            "<script nonce=\"N0nce\">x</script><style nonce=\"N0nce\">",
            "N0nce",
        );
        let e = cache.get(&k, 1).unwrap();
        assert_eq!(e.validators(), ("\"v1\"", None));
        let mut out = ResponseHeader::build(304, None).unwrap();
        let body = e.respond(&mut out, "fresh1").unwrap();
        assert_eq!(
            &body[..],
            b"<script nonce=\"fresh1\">x</script><style nonce=\"fresh1\">"
        );
        assert_eq!(out.status.as_u16(), 200);
        assert_eq!(
            out.headers["content-security-policy"],
            "script-src 'nonce-fresh1'"
        );
        assert!(out.headers.get("set-cookie").is_none());
        assert_eq!(out.headers["content-length"], body.len().to_string());
    }

    #[test]
    fn variants_urls_and_snapshots_never_mix() {
        let cache = PageCache::new(1 << 20);
        stored(&cache, key("/", b"a"), 1, "A", "n1");
        assert!(cache.get(&key("/", b"b"), 1).is_none(), "another variant");
        assert!(cache.get(&key("/?x=1", b"a"), 1).is_none(), "another URL");
        let mut other = key("/", b"a");
        other.label = "qa TKT-1".into();
        assert!(cache.get(&other, 1).is_none(), "another view");
        let mut other = key("/", b"a");
        other.codings = "gzip, deflate, br, zstd".into();
        assert!(
            cache.get(&other, 1).is_none(),
            "other codings asked of the origin"
        );
        assert!(cache.get(&key("/", b"a"), 1).is_some());
        assert!(
            cache.get(&key("/", b"a"), 2).is_none(),
            "a new snapshot drops it"
        );
        assert!(cache.get(&key("/", b"a"), 1).is_none(), "and it is gone");
        // A page stamped under the old snapshot is not stored under the new.
        let origin = resp(&[("etag", "\"v1\"")]);
        let late = cache.fill(key("/", b"a"), 1, &req(), &origin).unwrap();
        let _ = cache.get(&key("/z", b"a"), 3);
        cache.store(late);
        assert!(cache.get(&key("/", b"a"), 3).is_none());
    }

    #[test]
    fn the_budget_bounds_what_is_kept() {
        let cache = PageCache::new(64 * 1024);
        let big = "x".repeat(17 * 1024);
        let origin = resp(&[("etag", "\"v1\"")]);
        let mut fill = cache.fill(key("/big", b"a"), 1, &req(), &origin).unwrap();
        assert!(
            !fill.push(&Bytes::from(big)),
            "more than a quarter of the budget"
        );
        for i in 0..20 {
            stored(
                &cache,
                key(&format!("/{i}"), b"a"),
                1,
                &"y".repeat(8 * 1024),
                "n",
            );
        }
        let kept = cache.cache.as_ref().unwrap();
        assert!(kept.weight() <= 64 * 1024, "{}", kept.weight());
        assert!(kept.len() < 20);
        assert!(PageCache::new(0).get(&key("/", b"a"), 1).is_none());
        assert!(!PageCache::new(0).enabled());
    }
}
