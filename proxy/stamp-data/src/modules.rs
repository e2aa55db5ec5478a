//! Serving ticket module bodies at their content-hashed URLs
//! (`/same/dir/file.js?__ts=<sha256>`), from a bounded in-memory cache in
//! front of the store. Bodies are immutable and validated by a strong
//! ETag; production's are cacheable forever, a ticket's other ones by no
//! cache (see [`ModuleServer::serve`]). A body is served only at a path an open
//! ticket uploaded it under, and never as a service-worker script.

use bytes::Bytes;
use http::header;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;
use quick_cache::sync::Cache;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::internal::respond;
use crate::metrics;
use crate::snapshot::SnapshotCell;
use stamp_model::ticket::Hash;
use stamp_store::SharedStore;

#[derive(Debug, Clone)]
struct BodyWeight;

impl quick_cache::Weighter<Hash, Bytes> for BodyWeight {
    fn weight(&self, _key: &Hash, body: &Bytes) -> u64 {
        // Count the key and bookkeeping too, so empty bodies still cost something.
        body.len() as u64 + 64
    }
}

/// The module server: a cache in front of the store.
pub struct ModuleServer {
    store: SharedStore,
    cell: Arc<SnapshotCell>,
    cache: Cache<Hash, Bytes, BodyWeight>,
}

impl std::fmt::Debug for ModuleServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleServer")
            .field("cached", &self.cache.len())
            .finish()
    }
}

/// `Content-Type` for a module path, by extension. Types that could run as a
/// document (HTML, SVG) are never served from here.
pub fn content_type(path: &str) -> &'static str {
    let ext = path
        .rsplit('/')
        .next()
        .and_then(|f| f.rsplit_once('.'))
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "js" | "mjs" | "cjs" | "jsx" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" | "importmap" => "application/json",
        "wasm" => "application/wasm",
        "txt" | "md" => "text/plain; charset=utf-8",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        "wav" => "audio/wav",
        "vtt" => "text/vtt; charset=utf-8",
        _ => "application/octet-stream",
    }
}

impl ModuleServer {
    pub fn new(store: SharedStore, cell: Arc<SnapshotCell>, cache_bytes: u64) -> ModuleServer {
        let estimated_items = (cache_bytes / 8192).clamp(16, 1 << 20) as usize;
        ModuleServer {
            store,
            cell,
            cache: Cache::with_weighter(estimated_items, cache_bytes.max(1), BodyWeight),
        }
    }

    /// A body by hash: from the cache, else from the store (and cached).
    pub async fn body(&self, hash: &Hash) -> std::result::Result<Option<Bytes>, String> {
        if let Some(b) = self.cell.load().pinned.get(hash) {
            metrics::count(&metrics::MODULE_CACHE, "hit");
            return Ok(Some(b.clone()));
        }
        if let Some(b) = self.cache.get(hash) {
            metrics::count(&metrics::MODULE_CACHE, "hit");
            return Ok(Some(b));
        }
        match self.store.get_module(hash).await {
            Ok(Some(body)) => {
                // Content addressing is what makes "immutable" true: check it
                // before the body is cached for a year by every browser.
                if Hash::of(&body) != *hash {
                    stamp_store::metrics::STORE_ERRORS.inc();
                    return Err(format!("stored body of {hash} does not match its hash"));
                }
                metrics::count(&metrics::MODULE_CACHE, "miss");
                self.cache.insert(*hash, body.clone());
                Ok(Some(body))
            }
            Ok(None) => {
                metrics::count(&metrics::MODULE_CACHE, "unknown");
                Ok(None)
            }
            Err(e) => {
                stamp_store::metrics::STORE_ERRORS.inc();
                Err(e.to_string())
            }
        }
    }

    /// Whether an open ticket (or the overlay) has body `hash` at `path`;
    /// `None` when that cannot be known (the store is unreachable). A miss
    /// right after an upload may only mean that the snapshot has not caught
    /// up yet: then wait for it, briefly, while the store is ahead.
    async fn serves(&self, path: &str, hash: &Hash) -> Option<bool> {
        if self.cell.load().serves(path, hash) {
            return Some(true);
        }
        let Ok(Ok(version)) =
            tokio::time::timeout(Duration::from_millis(200), self.store.version()).await
        else {
            return None;
        };
        let deadline = Instant::now() + Duration::from_millis(500);
        loop {
            let snap = self.cell.load();
            if snap.serves(path, hash) {
                return Some(true);
            }
            if snap.version >= version || Instant::now() >= deadline {
                return Some(false);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Answers a `?__ts=` request, with the digest the request named
    /// (`Err` when it is not one).
    pub async fn serve(
        &self,
        session: &mut Session,
        module: Option<std::result::Result<Hash, ()>>,
    ) -> Result<()> {
        let req = session.req_header();
        let text = "text/plain; charset=utf-8";
        if req.method != http::Method::GET && req.method != http::Method::HEAD {
            return respond(
                session,
                405,
                text,
                Bytes::from_static(b"ticket-stamp: modules are read-only\n"),
            )
            .await;
        }
        let Some(Ok(hash)) = module else {
            return respond(
                session,
                400,
                text,
                Bytes::from_static(b"ticket-stamp: __ts must be a sha256 hex digest\n"),
            )
            .await;
        };
        let path = req.uri.path().to_string();
        if is_service_worker(session) {
            return refuse_service_worker(session).await;
        }
        let refusal: Option<(u16, &'static [u8])> = match self.serves(&path, &hash).await {
            Some(true) => None,
            Some(false) => Some((
                404,
                b"ticket-stamp: no open ticket has this module at this path\n",
            )),
            None => Some((503, b"ticket-stamp: the module store is unavailable\n")),
        };
        if let Some((status, message)) = refusal {
            return respond(session, status, text, Bytes::from_static(message)).await;
        }
        // A released ticket's files are production's, kept by every cache
        // for as long as their content-addressed URL lives. A ticket's
        // other files (its dev and qa views', a rollout side's, which the
        // rollout may yet revert) are kept by none, and no service worker
        // may store them (`Vary: *`, which the Cache API refuses): an app's
        // worker that looks its cache up ignoring the query (`ignoreSearch`,
        // a key made of the path) would give production's pages the
        // ticket's file once its visitor left the ticket or it was reverted.
        let how = if self.cell.load().released(&path, &hash) {
            Plain {
                cache_control: "public, max-age=31536000, immutable",
                vary: None,
                worker_reporter: false,
            }
        } else {
            Plain {
                cache_control: "private, no-store",
                vary: Some("*"),
                worker_reporter: false,
            }
        };
        self.send(session, hash, &path, how).await
    }

    /// Answers a request for a ticket file by its plain path (no `?__ts=`),
    /// for a browser whose variant has that file: a bundle's chunks and
    /// stylesheets are loaded by URLs no import map reaches. The answer
    /// depends on the selection, so it is revalidated every time and never
    /// stored by a shared cache: once the browser leaves the ticket, the
    /// next load of that URL is production's again.
    pub async fn serve_plain(
        &self,
        session: &mut Session,
        module: &stamp_model::ModuleRef,
        how: Plain,
    ) -> Result<()> {
        let req = session.req_header();
        if req.method != http::Method::GET && req.method != http::Method::HEAD {
            return respond(
                session,
                405,
                "text/plain; charset=utf-8",
                Bytes::from_static(b"ticket-stamp: modules are read-only\n"),
            )
            .await;
        }
        if is_service_worker(session) {
            return refuse_service_worker(session).await;
        }
        let path = req.uri.path().to_string();
        self.send(session, module.hash, &path, how).await
    }

    /// Sends body `hash` (or a 304 when the client has it).
    async fn send(&self, session: &mut Session, hash: Hash, path: &str, how: Plain) -> Result<()> {
        let text = "text/plain; charset=utf-8";
        let req = session.req_header();
        // A worker's script carries the reporter: another body, another tag.
        let reporter = how.worker_reporter && is_javascript(path);
        let etag = if reporter {
            format!("\"{hash}-worker\"")
        } else {
            format!("\"{hash}\"")
        };
        let not_modified = crate::internal::none_match(req, &etag);
        let head_only = req.method == http::Method::HEAD;
        // One byte range (a media element seeking, Safari asking before it
        // plays), unless `If-Range` names another version.
        let range = req
            .headers
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .filter(|_| !head_only)
            .filter(|_| {
                req.headers
                    .get(header::IF_RANGE)
                    .is_none_or(|v| v.as_bytes() == etag.as_bytes())
            })
            .map(str::to_string);
        let mut resp = ResponseHeader::build(if not_modified { 304 } else { 200 }, Some(8))?;
        resp.insert_header(header::ETAG, etag.as_str())?;
        resp.insert_header(header::CACHE_CONTROL, how.cache_control)?;
        if how.cache_control.contains("no-store") {
            // A CDN in front told to keep `/assets/*` whatever the origin
            // says would keep ticket bytes under production's URL: the
            // headers such caches read first say no too.
            use crate::select::names::{CDN_CACHE_CONTROL, SURROGATE_CONTROL};
            resp.insert_header(CDN_CACHE_CONTROL.clone(), "no-store")?;
            resp.insert_header(SURROGATE_CONTROL.clone(), "no-store")?;
        }
        resp.insert_header(stamp_model::wire::header::INFO, "module")?;
        // The probe in the page reads it (Resource Timing): this load was
        // the ticket's body, whatever its URL.
        resp.insert_header(
            "server-timing",
            format!("{};desc=\"{}\"", crate::probe::SERVER_TIMING, hash.to_hex()),
        )?;
        if let Some(vary) = how.vary {
            resp.insert_header(header::VARY, vary)?;
        }
        if not_modified {
            // Known to the client: no need to touch the store at all.
            session.write_response_header(Box::new(resp), true).await?;
            return Ok(());
        }
        let body = match self.body(&hash).await {
            Ok(Some(b)) => b,
            Ok(None) => {
                return respond(
                    session,
                    404,
                    text,
                    Bytes::from_static(b"ticket-stamp: unknown module\n"),
                )
                .await;
            }
            Err(e) => {
                log::warn!("module {hash}: {e}");
                return respond(
                    session,
                    503,
                    text,
                    Bytes::from_static(b"ticket-stamp: the module store is unavailable\n"),
                )
                .await;
            }
        };
        let mut served = Served::new(path, &hash, body);
        if reporter {
            served.add_worker_reporter();
        }
        resp.insert_header(header::CONTENT_TYPE, content_type(path))?;
        resp.insert_header("x-content-type-options", "nosniff")?;
        resp.insert_header(header::ACCEPT_RANGES, "bytes")?;
        let total = served.len() as u64;
        match range.as_deref().and_then(|r| byte_range(r, total)) {
            Some(Ok((first, last))) => {
                let part = served.joined().slice(first as usize..=last as usize);
                resp.set_status(206)?;
                resp.insert_header(
                    header::CONTENT_RANGE,
                    format!("bytes {first}-{last}/{total}"),
                )?;
                resp.insert_header(header::CONTENT_LENGTH, part.len().to_string())?;
                metrics::MODULE_BYTES.inc_by(part.len() as u64);
                session.write_response_header(Box::new(resp), false).await?;
                session.write_response_body(Some(part), true).await?;
                return Ok(());
            }
            Some(Err(())) => {
                resp.set_status(416)?;
                resp.insert_header(header::CONTENT_RANGE, format!("bytes */{total}"))?;
                resp.insert_header(header::CONTENT_LENGTH, "0")?;
                session.write_response_header(Box::new(resp), true).await?;
                return Ok(());
            }
            None => {}
        }
        resp.insert_header(header::CONTENT_LENGTH, served.len().to_string())?;
        metrics::MODULE_BYTES.inc_by(served.len() as u64);
        session
            .write_response_header(Box::new(resp), head_only)
            .await?;
        if !head_only {
            match served.tail {
                // The stored body as it is, then the marker: no copy of the body.
                Some(tail) => {
                    session
                        .write_response_body(Some(served.head), false)
                        .await?;
                    session.write_response_body(Some(tail), true).await?;
                }
                None => session.write_response_body(Some(served.head), true).await?,
            }
        }
        Ok(())
    }
}

/// The one byte range a `Range` header asks of a body of `len` bytes:
/// `Some(Ok((first, last)))` (inclusive), `Some(Err(()))` when it cannot be
/// satisfied (answered 416), `None` when the header is to be ignored and
/// the whole body sent (another unit, several ranges, anything malformed),
/// as RFC 9110 allows.
fn byte_range(header: &str, len: u64) -> Option<std::result::Result<(u64, u64), ()>> {
    let (unit, spec) = header.trim().split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return None;
    }
    let (a, b) = spec.trim().split_once('-')?;
    let number = |t: &str| -> Option<u64> {
        if t.is_empty() || !t.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    if a.is_empty() {
        // The last `n` bytes.
        let n = number(b)?;
        if n == 0 || len == 0 {
            return Some(Err(()));
        }
        return Some(Ok((len.saturating_sub(n), len - 1)));
    }
    let first = number(a)?;
    let last = if b.is_empty() { None } else { Some(number(b)?) };
    if last.is_some_and(|l| l < first) {
        return None;
    }
    if first >= len {
        return Some(Err(()));
    }
    Some(Ok((first, last.map_or(len - 1, |l| l.min(len - 1)))))
}

/// How a ticket body is answered at a plain path.
#[derive(Debug, Clone, Copy)]
pub struct Plain {
    pub cache_control: &'static str,
    /// `Vary`: `*` for a ticket's own variant (no cache, a service worker's
    /// included, may keep it under production's URL), `Cookie` for the
    /// released overlay.
    pub vary: Option<&'static str>,
    /// A worker's script for a browser on a ticket: the probe's worker
    /// reporter goes after its code (`probe::WORKER_REPORTER`).
    pub worker_reporter: bool,
}

/// Whether a path is served as JavaScript (what import maps reach).
pub fn is_javascript(path: &str) -> bool {
    content_type(path).starts_with("text/javascript")
}

/// A ticket body as served: the stored bytes, and for JavaScript the
/// probe's marker after the code (before a trailing `sourceMappingURL`
/// comment, so no line of the code moves).
#[derive(Debug, Clone)]
pub(crate) struct Served {
    pub head: Bytes,
    pub tail: Option<Bytes>,
}

impl Served {
    pub fn new(path: &str, hash: &Hash, body: Bytes) -> Served {
        if !is_javascript(path) || is_system_register(&body) {
            return Served {
                head: body,
                tail: None,
            };
        }
        let marker = crate::probe::marker(hash);
        let cut = trailing_comment(&body).unwrap_or(body.len());
        let mut tail = Vec::with_capacity(marker.len() + body.len() - cut);
        tail.extend_from_slice(marker.as_bytes());
        tail.extend_from_slice(&body[cut..]);
        Served {
            head: body.slice(..cut),
            tail: Some(Bytes::from(tail)),
        }
    }

    /// The probe's worker reporter after the code (and its marker), before
    /// a trailing `sourceMappingURL` comment: a worker's script.
    pub fn add_worker_reporter(&mut self) {
        // The tail is the marker, then the comment's line (if any); without
        // a tail, the comment ends the head.
        let (marker, comment) = match self.tail.take() {
            Some(t) => {
                let at = trailing_comment(&t).unwrap_or(t.len());
                (t.slice(..at), t.slice(at..))
            }
            None => {
                let at = trailing_comment(&self.head).unwrap_or(self.head.len());
                let comment = self.head.slice(at..);
                self.head.truncate(at);
                (Bytes::new(), comment)
            }
        };
        let reporter = crate::probe::WORKER_REPORTER.as_bytes();
        let mut tail = Vec::with_capacity(marker.len() + reporter.len() + comment.len());
        tail.extend_from_slice(&marker);
        tail.extend_from_slice(reporter);
        tail.extend_from_slice(&comment);
        self.tail = Some(Bytes::from(tail));
    }

    pub fn len(&self) -> usize {
        self.head.len() + self.tail.as_ref().map_or(0, Bytes::len)
    }

    /// Both parts in one buffer.
    pub fn joined(&self) -> Bytes {
        match &self.tail {
            None => self.head.clone(),
            Some(t) => {
                let mut all = Vec::with_capacity(self.len());
                all.extend_from_slice(&self.head);
                all.extend_from_slice(t);
                Bytes::from(all)
            }
        }
    }
}

/// A SystemJS module (`System.register(…)`): its code runs when SystemJS
/// executes it, not when it loads, so a marker after it would speak too
/// early (the probe follows SystemJS's `onload` hook instead).
fn is_system_register(body: &[u8]) -> bool {
    let head = &body[..body.len().min(512)];
    head.windows(16).any(|w| w == b"System.register(")
}

/// Where a trailing `//# sourceMappingURL=` (or `sourceURL`) comment line
/// starts, if the body ends with one.
fn trailing_comment(body: &[u8]) -> Option<usize> {
    let from = body.len().saturating_sub(1024);
    let tail = &body[from..];
    let at = memchr::memmem::rfind(tail, b"\n//# source")
        .or_else(|| memchr::memmem::rfind(tail, b"\n//@ source"))?;
    let line_end = tail[at + 1..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(tail.len(), |i| at + 1 + i);
    // Only a comment that closes the body (trailing whitespace aside).
    tail[line_end..]
        .iter()
        .all(u8::is_ascii_whitespace)
        .then_some(from + at + 1)
}

/// A `Service-Worker: script` request: the browser is registering a worker.
pub fn is_service_worker(session: &Session) -> bool {
    session
        .req_header()
        .headers
        .get(&crate::select::names::SERVICE_WORKER)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"script"))
}

/// Ticket code must never outlive its ticket: a service worker would keep
/// controlling production pages after `?stamp=off`.
async fn refuse_service_worker(session: &mut Session) -> Result<()> {
    respond(
        session,
        403,
        "text/plain; charset=utf-8",
        Bytes::from_static(b"ticket-stamp: ticket code cannot be registered as a service worker\n"),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::{byte_range, content_type, Served};

    /// A worker's script: its code, its marker, the reporter, then the
    /// source map's comment, which stays last; no line of the code moves.
    #[test]
    fn a_workers_script_carries_the_reporter_before_its_source_map_comment() {
        let hash = stamp_model::ticket::Hash::of(b"w");
        let marker = crate::probe::marker(&hash);
        let reporter = crate::probe::WORKER_REPORTER;
        let comment = "\n//# sourceMappingURL=w.js.map\n";
        for (path, body, want) in [
            (
                "/w.js",
                format!("a();{comment}"),
                format!("a();\n{marker}{reporter}{}", &comment[1..]),
            ),
            (
                "/w.js",
                "a();".to_string(),
                format!("a();{marker}{reporter}"),
            ),
            // No marker on a System.register body: the reporter alone.
            (
                "/w.js",
                format!("System.register([], function () {{}});{comment}"),
                format!(
                    "System.register([], function () {{}});\n{reporter}{}",
                    &comment[1..]
                ),
            ),
        ] {
            let mut served = Served::new(path, &hash, bytes::Bytes::from(body.clone()));
            served.add_worker_reporter();
            assert_eq!(served.len(), want.len(), "{body}");
            assert_eq!(served.joined(), want.as_bytes(), "{body}");
        }
    }

    #[test]
    fn a_range_is_one_byte_range_or_the_whole_body() {
        let ok = |h: &str, len: u64| byte_range(h, len);
        assert_eq!(ok("bytes=0-3", 10), Some(Ok((0, 3))));
        assert_eq!(ok("bytes=4-", 10), Some(Ok((4, 9))));
        assert_eq!(ok("bytes=-3", 10), Some(Ok((7, 9))));
        assert_eq!(ok("bytes=-30", 10), Some(Ok((0, 9))));
        assert_eq!(
            ok("bytes=5-99", 10),
            Some(Ok((5, 9))),
            "clipped to the body"
        );
        assert_eq!(ok(" Bytes = 0-0 ", 10), Some(Ok((0, 0))));
        // Nothing there: 416.
        assert_eq!(ok("bytes=10-", 10), Some(Err(())));
        assert_eq!(ok("bytes=-0", 10), Some(Err(())));
        assert_eq!(ok("bytes=0-", 0), Some(Err(())));
        // Ignored (the whole body goes out): other units, several ranges,
        // backwards, signs, overflow, garbage.
        for h in [
            "items=0-3",
            "bytes=0-1,4-5",
            "bytes=5-2",
            "bytes=+1-2",
            "bytes=-",
            "bytes=1-2-3",
            "bytes=99999999999999999999-",
            "bytes=0x10-",
            "bytes",
            "",
        ] {
            assert_eq!(ok(h, 10), None, "{h:?}");
        }
    }

    #[test]
    fn types_by_extension() {
        assert_eq!(content_type("/src/a.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("/src/a.MJS"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("/src/a.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("/src/a.wasm"), "application/wasm");
        assert_eq!(content_type("/src/a.js.map"), "application/json");
        // Never a document type, whatever the path says.
        assert_eq!(content_type("/evil.html"), "application/octet-stream");
        assert_eq!(content_type("/evil.svg"), "application/octet-stream");
        assert_eq!(content_type("/dir.js/noext"), "application/octet-stream");
    }
}
