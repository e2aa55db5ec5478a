//! The `ProxyHttp` implementation. Each phase is a short dispatch over what
//! the request is ([`ctx::Route`]); the work is in the route's own module
//! (`page`, `map`, `file`) and below them in the crate (`select`, `rewrite`,
//! `csp`, `modules`, `internal`, `pagecache`).
//!
//! ```text
//! early_request_filter     plan::route: the selection, then the route
//! request_filter           answered here: internal, module, mirror, live, map query
//! upstream_peer            the origin (or the map's other origin)
//! upstream_request_filter  a page or map asked for whole and fresh
//! response_filter          map: checked; file: 404 replaced; page: hit or rewrite starts
//! response_body_filter     map: merged; file: its body; page: streamed through lol_html
//! fail_to_proxy            one plain-text error, no internal address
//! logging                  requests and latency by kind
//! ```

mod confirm;
mod ctx;
mod file;
mod length;
mod map;
mod page;
mod plan;
mod probe;
mod settings;
mod worker;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http::header;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::compression::ResponseCompression;
use pingora::prelude::*;
use pingora::protocols::http::compression::Algorithm;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;

use stamp_model::share::Gate;
use stamp_model::wire;
use stamp_store::SharedStore;

use crate::config::DataConfig;
use crate::control::ControlPlane;
use crate::internal::{self, Internal};
use crate::metrics;
use crate::modules::ModuleServer;
use crate::pagecache::PageCache;
use crate::reports::Reports;
use crate::select::{self, names};
use crate::snapshot::{Effective, SnapshotCell};
pub use ctx::Ctx;
use settings::Settings;
pub use settings::{Outcome as ReloadOutcome, Reload};

const BROKEN_ENCODING: &str = "broken origin encoding";
const BAD_MAP: &str = "external import map not merged";

/// The proxy service: configuration, the snapshot, the module server, and
/// the control plane behind `/__stamp/`.
pub struct StampProxy {
    /// The configuration and what is derived from it; each request takes
    /// the current one (`Ctx::settings`), a reload swaps it.
    settings: Arc<arc_swap::ArcSwap<Settings>>,
    snapshot: Arc<SnapshotCell>,
    modules: ModuleServer,
    internal: Internal,
    /// Share-link and preview-pass checker, when previews are protected.
    preview: Option<Gate>,
    /// Requests in flight (for a graceful stop that waits for them).
    in_flight: Arc<AtomicUsize>,
    /// Stamped pages the origin can revalidate.
    pages: PageCache,
    /// No overrides: the plan of a production page that only gets a notice.
    empty: Arc<Effective>,
    /// Page reports, on their way to the store.
    reports: Arc<Reports>,
}

impl StampProxy {
    pub fn new(
        cfg: Arc<DataConfig>,
        snapshot: Arc<SnapshotCell>,
        store: SharedStore,
        control: Arc<dyn ControlPlane>,
        preview: Option<Gate>,
    ) -> StampProxy {
        let modules = ModuleServer::new(store.clone(), snapshot.clone(), cfg.module_cache_bytes);
        let internal = Internal {
            cell: snapshot.clone(),
            store,
            control,
        };
        let reports = Arc::new(Reports::new(cfg.report_limits));
        StampProxy {
            pages: PageCache::new(cfg.rewrite.page_cache_bytes),
            empty: Arc::new(Effective::new(Default::default())),
            settings: Arc::new(arc_swap::ArcSwap::from_pointee(Settings::new(cfg, 0))),
            snapshot,
            modules,
            internal,
            preview,
            in_flight: Arc::new(AtomicUsize::new(0)),
            reports,
        }
    }

    /// The page reports' intake (its flusher runs as a background service).
    pub fn reports(&self) -> Arc<Reports> {
        self.reports.clone()
    }

    /// Swaps the configuration while serving (a reload).
    pub fn reload(&self) -> Reload {
        Reload {
            current: self.settings.clone(),
        }
    }

    /// Requests in flight, for a graceful stop that waits for them.
    pub fn in_flight(&self) -> Arc<AtomicUsize> {
        self.in_flight.clone()
    }

    /// Sends a protected preview's visitor to sign in first.
    async fn sign_in_first(&self, session: &mut Session, ctx: &Ctx, location: &str) -> Result<()> {
        let mut resp = ResponseHeader::build(302, Some(5))?;
        resp.insert_header(header::LOCATION, location)?;
        resp.insert_header(header::CACHE_CONTROL, "private, no-store")?;
        resp.insert_header(header::CONTENT_LENGTH, "0")?;
        resp.insert_header(
            names::X_TICKET_STAMP.clone(),
            "production; reason=\"sign in to open previews\"",
        )?;
        selection_headers(&mut resp, &ctx.sel)?;
        session.write_response_header(Box::new(resp), true).await
    }

    /// The answer to a request fetched ahead that would change what the
    /// browser is on: `503`, which a browser does not keep (see
    /// [`select::is_speculative`]).
    async fn not_ahead(&self, session: &mut Session) -> Result<()> {
        const WHY: &str =
            "not fetched ahead: opening this would change the ticket this browser is on\n";
        let resp = refusal("not fetched ahead")?;
        internal::write(session, resp, Bytes::from_static(WHY.as_bytes())).await
    }

    /// A link that changes the ticket, followed by a library inside the
    /// page it is on ([`select::in_page_visit`]), or fetched ahead by one:
    /// answered so that the library loads it as a page, which selects and
    /// starts with the ticket's map. Turbo gets a page that says
    /// `turbo-visit-control: reload` (a Drive visit then reloads, a frame
    /// makes it a whole-page visit that reloads, a prefetch kept for the
    /// click does the same); htmx gets `HX-Redirect`, which it follows
    /// before anything else; pjax and Swup a `503` in plain text, which
    /// they load as a page (pjax on any failure, Swup when no container of
    /// theirs is in it). None carries a cookie, and nothing keeps it.
    async fn as_a_page(&self, session: &mut Session, who: select::InPage) -> Result<()> {
        match who {
            select::InPage::Turbo => {
                const PAGE: &str = "<!doctype html><html><head><meta name=\"turbo-visit-control\" content=\"reload\"><title>ticket-stamp</title></head><body></body></html>\n";
                let resp = own_answer(200, "text/html; charset=utf-8", "opens as a page")?;
                internal::write(session, resp, Bytes::from_static(PAGE.as_bytes())).await
            }
            who => {
                const WHY: &str =
                    "opens as a page: this link changes the ticket this browser is on\n";
                let mut resp = refusal("opens as a page")?;
                if who == select::InPage::Htmx {
                    let req = session.req_header();
                    let to =
                        same_origin_target(req.uri.path_and_query().map_or("/", |pq| pq.as_str()));
                    resp.insert_header(names::HX_REDIRECT.clone(), to)?;
                }
                internal::write(session, resp, Bytes::from_static(WHY.as_bytes())).await
            }
        }
    }

    /// What a request that is no page gets from the selection: its cookie,
    /// and when nothing is stamped, the reason.
    fn passthrough_response(
        &self,
        req: &RequestHeader,
        resp: &mut ResponseHeader,
        ctx: &Ctx,
    ) -> Result<()> {
        if ctx.sel.dev_or_qa() {
            scripts_keep_their_referrer(req, resp);
        }
        selection_headers(resp, &ctx.sel)?;
        page::rollout_headers(resp, &ctx.sel);
        if ctx.sel.plan.is_none() {
            // A selection that did not resolve: say why on production.
            if let Some(info) = &ctx.sel.info {
                resp.insert_header(names::X_TICKET_STAMP.clone(), info.as_str())?;
            }
            if ctx.settings.cfg.rewrite.production_vary_cookie && is_html(resp) {
                add_vary_cookie(resp);
            }
        }
        Ok(())
    }
}

/// A script, as a browser on a ticket gets it from production: a worker's
/// script's `Referrer-Policy` is the worker's own, and a module's governs
/// its own imports. A worker's `importScripts` and `import()`, and a
/// module's imports no map reaches, are told from a page's own script
/// requests by naming a script as their referrer (a `.js` referrer: see
/// `plan::from_a_worker`). `origin` and `strict-origin` (a hardened
/// origin's choice) send only the origin, even to the same origin: such
/// imports would be taken for the page's and stay production's. On a
/// ticket they become `origin-when-cross-origin` and
/// `strict-origin-when-cross-origin` (the browsers' default): the same to
/// other origins, the full URL to their own. (`no-referrer` is told by the
/// missing `Referer` itself.)
fn scripts_keep_their_referrer(req: &RequestHeader, resp: &mut ResponseHeader) {
    let script = [&b"script"[..], b"worker", b"sharedworker"]
        .iter()
        .any(|dest| select::value_is(&req.headers, &names::SEC_FETCH_DEST, dest));
    if !script {
        return;
    }
    if let Some(instead) = origin_only_to_its_origin(&resp.headers) {
        let _ = resp.insert_header(
            header::REFERRER_POLICY,
            http::HeaderValue::from_static(instead),
        );
    }
}

/// If a response's `Referrer-Policy` (its last token a browser knows, over
/// every field) sends only the origin to the same origin, the policy that
/// sends the same to other origins and the full URL to its own.
fn origin_only_to_its_origin(headers: &http::HeaderMap) -> Option<&'static str> {
    const KNOWN: [&str; 8] = [
        "no-referrer",
        "no-referrer-when-downgrade",
        "same-origin",
        "origin",
        "strict-origin",
        "origin-when-cross-origin",
        "strict-origin-when-cross-origin",
        "unsafe-url",
    ];
    let policy = headers
        .get_all(header::REFERRER_POLICY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .rfind(|t| KNOWN.iter().any(|k| k.eq_ignore_ascii_case(t)))?;
    if policy.eq_ignore_ascii_case("origin") {
        Some("origin-when-cross-origin")
    } else if policy.eq_ignore_ascii_case("strict-origin") {
        Some("strict-origin-when-cross-origin")
    } else {
        None
    }
}

/// A refused answer that changes nothing: `503`, never stored, plain text,
/// and the reason in `x-ticket-stamp`.
fn refusal(reason: &str) -> Result<ResponseHeader> {
    own_answer(503, "text/plain; charset=utf-8", reason)
}

/// The head of an answer the proxy makes in place of the page, which
/// changes nothing: never stored, production's `reason` in
/// `x-ticket-stamp`.
fn own_answer(status: u16, content_type: &'static str, reason: &str) -> Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(status, Some(4))?;
    resp.insert_header(header::CACHE_CONTROL, "no-store")?;
    resp.insert_header(header::CONTENT_TYPE, content_type)?;
    resp.insert_header(
        names::X_TICKET_STAMP.clone(),
        format!("production; reason=\"{reason}\""),
    )?;
    Ok(resp)
}

/// A request's target as a path a page can go to without leaving its
/// origin: leading slashes and backslashes become one slash, since a
/// browser reads `//host` and `/\host` as another origin; a byte that is
/// not visible ASCII is percent-encoded (a header carries no more, and
/// `XMLHttpRequest` reads others as Latin-1).
fn same_origin_target(target: &str) -> String {
    let mut out = String::with_capacity(target.len() + 1);
    out.push('/');
    for b in target.trim_start_matches(['/', '\\']).bytes() {
        if b.is_ascii_graphic() {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Makes an origin's `No-Vary-Search` (its field lines read as one, as
/// browsers read them) count the proxy's parameters, or drops it
/// ([`select::no_vary_search_keeping_ours`]); a response without one costs
/// a lookup.
fn no_vary_search_keeping_ours(resp: &mut ResponseHeader) {
    let mut lines = resp.headers.get_all(&names::NO_VARY_SEARCH).iter();
    let Some(first) = lines.next() else {
        return;
    };
    let mut value = first.as_bytes().to_vec();
    for line in lines {
        value.extend_from_slice(b", ");
        value.extend_from_slice(line.as_bytes());
    }
    match select::no_vary_search_keeping_ours(&value) {
        select::NoVarySearch::AsIs => {}
        select::NoVarySearch::Changed(kept) => {
            resp.remove_header(&names::NO_VARY_SEARCH);
            if let Ok(kept) = http::HeaderValue::from_str(&kept) {
                let _ = resp.insert_header(names::NO_VARY_SEARCH.clone(), kept);
            }
        }
        select::NoVarySearch::Dropped => {
            resp.remove_header(&names::NO_VARY_SEARCH);
        }
    }
}

/// The selection's cookies; and when they change what the browser is on,
/// the pages it fetched ahead are dropped with them
/// ([`select::SPECULATION_CLEARED`], added to any the origin sent). A
/// page that puts the browser on a ticket drops the origin's HTTP cache
/// too ([`select::CACHE_AND_SPECULATION_CLEARED`], see
/// [`ctx::Selected::enters`]).
pub(super) fn selection_headers(resp: &mut ResponseHeader, sel: &ctx::Selected) -> Result<()> {
    for cookie in &sel.set_cookie {
        resp.append_header(header::SET_COOKIE, cookie.as_str())?;
    }
    // Not on a `304`: a cache merges its headers into the stored copy.
    if sel.switches && resp.status.as_u16() != 304 {
        let what = if sel.enters {
            select::CACHE_AND_SPECULATION_CLEARED
        } else {
            select::SPECULATION_CLEARED
        };
        resp.append_header(
            names::CLEAR_SITE_DATA.clone(),
            http::HeaderValue::from_static(what),
        )?;
    }
    Ok(())
}

/// What no cache keeps, a browser's or one in front of the proxy:
/// `private, no-store`, without the origin's `Expires` or the headers a
/// CDN reads before `Cache-Control` (`CDN-Cache-Control`,
/// `Surrogate-Control`), which would let it keep a page meant for one
/// browser. (Never on a `304`: its headers would be merged into a kept
/// copy; callers check.)
pub(super) fn never_stored(resp: &mut ResponseHeader) {
    let _ = resp.insert_header(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("private, no-store"),
    );
    for h in [
        &header::EXPIRES,
        &names::CDN_CACHE_CONTROL,
        &names::SURROGATE_CONTROL,
    ] {
        resp.remove_header(h);
    }
}

/// Answers no cache may keep ([`never_stored`]):
/// - one that sets a cookie of ours (a selection, its clearing, a visitor
///   id) belongs to this one request: a browser's cache would answer the
///   next `?stamp=off` without the cookie that clears the ticket, and the
///   visitor would stay on it; a shared cache would hand one visitor's
///   cookie to everyone;
/// - an HTML answer a browser on a ticket gets as production sent it (a
///   script's `fetch` of a page, a page that could not be stamped): kept,
///   it would answer a later link to that page on the ticket, production's
///   with no badge;
/// - any answer to a URL that names a ticket (`?dev=KEY`, `?qa=KEY`) or
///   leaves one (`?stamp=off`) and was not stamped (the ticket not open
///   yet, a page that could not be rewritten): kept, it would answer the
///   same link once the ticket can be shown;
/// - production's file at a path the ticket has a file at, or production's
///   other version of one of the ticket's hashed files, as a browser on the
///   ticket gets it (a page's `<link rel=preload>` or `prefetch`, an inline
///   script's `import()`, a loader's `fetch`): kept, it would answer the
///   requests that get the ticket's file there (a worker's `importScripts`,
///   a module's `import()`) from the cache, without asking, and production's
///   code would run where the ticket's should. (The ticket's own file sent
///   in place of the origin's 404 says `no-store` to CDNs itself.)
///
/// (A `304` is left as it is: what it says of caching would be merged into
/// the browser's stored copy of production's file. Production's copy of a
/// ticket's file is never revalidated on a ticket: `upstream_request_filter`
/// drops the conditional headers, so the whole answer comes.)
pub(super) fn not_kept(
    resp: &mut ResponseHeader,
    sel: &ctx::Selected,
    route: &ctx::Route,
    path: &str,
) {
    if resp.status.as_u16() == 304 {
        return;
    }
    if !sel.set_cookie.is_empty()
        || sel.from_url
        || (sel.dev_or_qa() && (is_html(resp) || productions_of_a_ticket_file(sel, route, path)))
    {
        never_stored(resp);
    }
}

/// Whether a browser on a ticket gets production's copy of one of the
/// ticket's files here: at a path the ticket has a file at (not the
/// ticket's own, sent in place of the origin's 404), or production's other
/// version of one of its hashed files.
fn productions_of_a_ticket_file(sel: &ctx::Selected, route: &ctx::Route, path: &str) -> bool {
    let Some(plan) = sel.plan.as_ref().filter(|_| sel.dev_or_qa()) else {
        return false;
    };
    match route {
        ctx::Route::File(state) => state.body.is_none(),
        ctx::Route::Passthrough => plan.effective.sibling_at(path).is_some(),
        _ => false,
    }
}

#[async_trait]
impl ProxyHttp for StampProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::new(&self.in_flight, self.settings.load_full())
    }

    fn init_downstream_modules(&self, modules: &mut pingora::modules::http::HttpModules) {
        // Pingora's default: compression, off unless a request turns it on.
        modules
            .add_module(pingora::modules::http::compression::ResponseCompressionBuilder::enable(0));
        modules.add_module(Box::new(length::WholeLengthBuilder));
    }

    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        // Each read of the body (the header's deadline is `client_io`'s).
        session
            .downstream_session
            .set_read_timeout(Some(ctx.settings.cfg.timeouts.client_body));
        // A trusted proxy in front may have named the request already.
        if let Some(id) = session
            .req_header()
            .headers
            .get(&names::X_REQUEST_ID)
            .and_then(|v| ctx::RequestId::given(v.as_bytes()))
        {
            let trusted = session
                .client_addr()
                .and_then(|a| a.as_inet())
                .is_some_and(|a| ctx.settings.cfg.forwarded.trusts(a.ip()));
            if trusted {
                ctx.id = id;
            }
        }
        self.route(session, ctx);
        let level = ctx.settings.cfg.rewrite.compression_level;
        // (A worker's script on a ticket comes plain from the origin: it is
        // compressed here, as pages are.)
        if level > 0
            && (ctx.worker_reporter
                || matches!(
                    ctx.route,
                    ctx::Route::Page(_) | ctx::Route::Module { .. } | ctx::Route::Probe
                ))
        {
            // Must be decided here: later phases are too late for the module.
            if let Some(c) = session
                .downstream_modules_ctx
                .get_mut::<ResponseCompression>()
            {
                c.adjust_level(level);
                // Pingora 0.9's brotli encoder flushes but never writes the
                // stream's last block (`brotli -t`: corrupt input): never
                // choose it; gzip and zstd streams are finished properly.
                c.adjust_algorithm_level(Algorithm::Brotli, 0);
            }
        }
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        use ctx::Route;
        // Fetched ahead, an answer that changes what the browser is on
        // would change it for a page nobody opened (its `Set-Cookie` lands
        // at once): refused, so the browser asks again if it is opened.
        // (Read only when the answer would change something: most requests
        // change nothing.)
        let leave = matches!(ctx.route, Route::Leave);
        if ctx.sel.switches || ctx.sel.confirm.is_some() || ctx.sel.sign_in.is_some() || leave {
            let req = session.req_header();
            let in_page = select::in_page_visit(&req.method, &req.headers);
            if select::is_speculative(&req.headers) {
                // Turbo keeps its prefetch for the click: that answer must
                // make the click a page load.
                match in_page {
                    Some(who @ select::InPage::Turbo) => self.as_a_page(session, who).await?,
                    _ => self.not_ahead(session).await?,
                }
                return Ok(true);
            }
            // Followed inside the page it is on, the link's page would keep
            // that page's modules: it must load as a page.
            if let Some(who) = in_page.filter(|_| ctx.sel.linked || leave) {
                self.as_a_page(session, who).await?;
                return Ok(true);
            }
        }
        // A page Turbo or htmx fetches to show in the document already open
        // keeps that document's modules: when the document runs other
        // modules than the page is made for, the page loads as a page. (Not
        // a Turbo frame's: Turbo would load the frame's own URL as the page.)
        if matches!(ctx.route, Route::Page(_) | Route::Passthrough) {
            let req = session.req_header();
            let runs = || {
                ctx.sel.plan.as_ref().and_then(|p| match &p.variant {
                    ctx::Variant::Ticket { key, view, .. } => Some((key, *view, &p.effective.id)),
                    ctx::Variant::Overlay => None,
                })
            };
            if let Some(who) = select::in_page_visit(&req.method, &req.headers)
                .filter(|w| matches!(w, select::InPage::Turbo | select::InPage::Htmx))
                .filter(|_| !req.headers.contains_key(&names::TURBO_FRAME))
                .filter(|_| select::shown_in_another_document(&req.headers, runs()))
            {
                self.as_a_page(session, who).await?;
                return Ok(true);
            }
        }
        if let Some(location) = ctx.sel.sign_in.take() {
            self.sign_in_first(session, ctx, &location).await?;
            return Ok(true);
        }
        if let Some(c) = ctx.sel.confirm.take() {
            confirm::respond(session, &c, &ctx.sel.set_cookie).await?;
            return Ok(true);
        }
        match &ctx.route {
            Route::Internal => {
                if session.req_header().uri.path() == wire::EVENTS_PATH {
                    // The panel's event stream never ends by itself: a
                    // graceful stop must not wait for it.
                    ctx.in_flight = None;
                }
                self.internal
                    .serve(session, ctx.settings.cfg.metrics_token.as_ref())
                    .await?;
            }
            Route::Module { hash, hot } => match hot {
                Some(module) => {
                    let how = crate::modules::Plain {
                        cache_control: "no-store",
                        vary: Some("Cookie"),
                        worker_reporter: false,
                    };
                    self.modules.serve_plain(session, module, how).await?
                }
                None => self.modules.serve(session, Some(*hash)).await?,
            },
            Route::Mirror(_) | Route::Unmapped(_) => self.serve_mirror(session, ctx).await?,
            Route::Report => self.take_report(session, &ctx.settings).await?,
            Route::Probe => crate::probe::serve(session).await?,
            Route::Leave => self.leave(session, ctx).await?,
            Route::SetAside => self.set_aside_worker(session, &ctx.sel).await?,
            Route::Map(_) => return self.start_map(session, ctx).await,
            Route::Live => {
                // Endless by design: a graceful stop must not wait for it.
                ctx.in_flight = None;
                let selected = ctx.sel.dev_ticket().cloned();
                let client = self.client_ip(session, &ctx.settings);
                crate::live::serve(session, &self.snapshot, selected.as_ref(), client).await?;
            }
            Route::Passthrough | Route::File(_) | Route::Page(_) => return Ok(false),
        }
        Ok(true)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        match &ctx.route {
            ctx::Route::Map(Some(map)) => self.map_peer(map, &ctx.settings).await,
            _ => Ok(Box::new(ctx.settings.peer.clone())),
        }
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let ctx::Route::Map(Some(map)) = &ctx.route {
            return self.map_upstream(map, upstream, &ctx.settings);
        }
        if ctx.settings.cfg.forwarded.enabled {
            self.forwarded_for(session, upstream, &ctx.settings)?;
        }
        if let Some(host) = &ctx.settings.cfg.origin.host_header {
            upstream.insert_header(header::HOST, host.as_str())?;
        }
        // Our cookies are ours: the origin never sees a selection (nor the
        // share token it may carry), a preview pass or a visitor id.
        if upstream.headers.contains_key(header::COOKIE) {
            strip_cookies(
                upstream,
                &[
                    &ctx.settings.cookie_names.0,
                    &ctx.settings.cookie_names.1,
                    stamp_model::share::PASS_COOKIE,
                    select::LEFT_COOKIE,
                    select::PENDING_COOKIE,
                    stamp_model::rollout::VISITOR_COOKIE,
                ],
            )?;
        }
        // Nor what a ticket page's probe says about its document.
        upstream.remove_header(&names::X_TICKET_STAMP_DOCUMENT);
        if let ctx::Route::Page(_) = &ctx.route {
            self.page_upstream(upstream, ctx)?;
        }
        if ctx.worker_reporter {
            worker::upstream(upstream);
        }
        // A copy of production's the browser kept where no clear reached
        // (a plain-http origin) is not revalidated on a ticket: the whole
        // answer comes, never kept (see `not_kept`), and replaces it.
        if productions_of_a_ticket_file(&ctx.sel, &ctx.route, session.req_header().uri.path()) {
            upstream.remove_header(&header::IF_NONE_MATCH);
            upstream.remove_header(&header::IF_MODIFIED_SINCE);
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // First, so that a stored page keeps it as sent.
        no_vary_search_keeping_ours(resp);
        match &ctx.route {
            ctx::Route::Map(Some(map)) => self.map_response(session, map, resp, &ctx.id)?,
            ctx::Route::Page(_) => self.page_response(session, resp, ctx).await?,
            _ => {
                if !self.file_instead_of_404(session, resp, ctx).await? {
                    self.passthrough_response(session.req_header(), resp, ctx)?;
                    if ctx.worker_reporter {
                        ctx.worker_reporter = worker::response(resp)?;
                    }
                }
            }
        }
        not_kept(resp, &ctx.sel, &ctx.route, session.req_header().uri.path());
        Ok(())
    }

    fn response_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<std::time::Duration>> {
        if file::file_body(ctx, body, end_of_stream) {
            return Ok(None);
        }
        if ctx.worker_reporter {
            worker::body(
                body,
                end_of_stream,
                &mut ctx.worker_reporter,
                &mut ctx.body_out,
            );
            return Ok(None);
        }
        match &ctx.route {
            ctx::Route::Map(Some(map)) => {
                self.map_body(session, map, body, end_of_stream, &ctx.settings, &ctx.id)?
            }
            ctx::Route::Page(page) if page.rewrite.is_some() => {
                self.page_body(body, end_of_stream, ctx)?
            }
            _ => return Ok(None),
        }
        // A body made here: its length, once whole (see `length`).
        ctx.body_out += body.as_ref().map_or(0, Bytes::len);
        if end_of_stream {
            length::body_ended(session, ctx.body_out);
        }
        Ok(None)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy
    where
        Ctx: Send + Sync,
    {
        let code = status_for(e);
        if code > 0 {
            metrics::ORIGIN_ERRORS
                .with_label_values(&[&code.to_string()])
                .inc();
        }
        if code > 0 && session.response_written().is_none() {
            // The client is told which upstream failed, never its address:
            // the origin's URL is the operator's (it is in the log).
            let (upstream, logged) = match map::remote_origin(ctx) {
                Some(asset) => (format!("the map's origin {asset}"), asset),
                None => (
                    "the origin".to_string(),
                    ctx.settings.cfg.origin.url.clone(),
                ),
            };
            if code >= 502 {
                log::warn!(
                    request_id:% = ctx.id;
                    "{} {}: {logged}: {e}",
                    code,
                    session.req_header().uri.path()
                );
            }
            let what = match code {
                502 if e.etype() == &ErrorType::Custom(BAD_MAP) => format!(
                    "the import map could not be merged: {}",
                    map::failure(ctx).unwrap_or_default()
                ),
                502 if e.etype() == &ErrorType::Custom(BROKEN_ENCODING) => format!(
                    "{upstream} sent a body that does not decode as its Content-Encoding says"
                ),
                504 => format!("{upstream} did not answer in time"),
                502 => format!("{upstream} could not be reached ({})", e.etype().as_str()),
                _ => "the request could not be proxied".to_string(),
            };
            let body = Bytes::from(format!("ticket-stamp: {what}\n"));
            if let Err(err) =
                internal::respond(session, code, "text/plain; charset=utf-8", body).await
            {
                log::debug!("cannot send the error response: {err}");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx)
    where
        Ctx: Send + Sync,
    {
        let kind = ctx.kind();
        let (requests, latency) = kind.metrics();
        requests.inc();
        let elapsed = ctx.started.elapsed();
        latency.observe(elapsed.as_secs_f64());
        if ctx.settings.cfg.access_log {
            access_log(session, e, ctx, kind, elapsed);
        }
    }
}

/// One line per request (`log.access`), on the `access` target: who asked
/// what, what it was, what it got and how long it took. The query is left
/// out: it may carry a share link's token.
fn access_log(
    session: &Session,
    e: Option<&Error>,
    ctx: &Ctx,
    kind: ctx::Kind,
    elapsed: std::time::Duration,
) {
    let req = session.req_header();
    let status = session.response_written().map_or(0, |r| r.status.as_u16());
    let client = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let ticket = match ctx.sel.plan.as_ref().map(|p| &p.variant) {
        Some(ctx::Variant::Ticket { key, view, .. }) => format!("{key} {}", view.as_str()),
        Some(ctx::Variant::Overlay) => "production overlay".to_string(),
        None => String::new(),
    };
    let error = e.map(|e| e.etype().as_str()).unwrap_or_default();
    log::info!(
        target: "access",
        request_id:% = ctx.id,
        client = client.as_str(),
        method = req.method.as_str(),
        path = req.uri.path(),
        status = status,
        bytes = session.body_bytes_sent(),
        ms = elapsed.as_secs_f64() * 1000.0,
        kind = kind.label(),
        ticket = ticket.as_str(),
        error = error;
        "{} {} {status}",
        req.method,
        req.uri.path()
    );
}

/// The status a failure is answered with (0: the client is gone).
fn status_for(e: &Error) -> u16 {
    match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        ErrorType::Custom(BAD_MAP) => 502,
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
            if e.esource() == &ErrorSource::Upstream =>
        {
            504
        }
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}

impl StampProxy {
    /// The client's address, for per-client limits: the peer, or behind
    /// trusted proxies what the nearest untrusted hop was.
    fn client_ip(&self, session: &Session, s: &Settings) -> Option<std::net::IpAddr> {
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        s.cfg.forwarded.client(peer, &session.req_header().headers)
    }

    /// `X-Forwarded-For` and `X-Forwarded-Proto` for the origin: the client's
    /// address appended to what a trusted proxy in front said, or alone when
    /// the peer is not trusted (its own header is dropped: a client cannot
    /// make the origin believe an address of its choosing).
    fn forwarded_for(
        &self,
        session: &Session,
        upstream: &mut RequestHeader,
        s: &Settings,
    ) -> Result<()> {
        let tls = s.cfg.tls;
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let trusted = peer.is_some_and(|ip| s.cfg.forwarded.trusts(ip));
        // The chain the origin gets: a trusted peer's, then the peer.
        let mut chain = String::new();
        if trusted {
            let prior = upstream
                .headers
                .get_all(&names::X_FORWARDED_FOR)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .filter(|v| !v.is_empty());
            for hop in prior {
                if !chain.is_empty() {
                    chain.push_str(", ");
                }
                chain.push_str(hop);
            }
        }
        upstream.remove_header(&names::X_FORWARDED_FOR);
        if let Some(ip) = peer {
            use std::fmt::Write as _;
            if !chain.is_empty() {
                chain.push_str(", ");
            }
            let _ = write!(chain, "{ip}");
        }
        if !chain.is_empty() {
            upstream.insert_header(names::X_FORWARDED_FOR.clone(), chain)?;
        }
        let proto = match (trusted, upstream.headers.get(&names::X_FORWARDED_PROTO)) {
            (true, Some(p)) if matches!(p.as_bytes(), b"http" | b"https") => None,
            _ => Some(if tls { "https" } else { "http" }),
        };
        if let Some(p) = proto {
            upstream.remove_header(&names::X_FORWARDED_PROTO);
            upstream.insert_header(
                names::X_FORWARDED_PROTO.clone(),
                http::HeaderValue::from_static(p),
            )?;
        }
        Ok(())
    }
}

/// Removes cookies from the upstream request's `Cookie` headers.
fn strip_cookies(upstream: &mut RequestHeader, names: &[&str]) -> Result<()> {
    let rebuilt = select::without_cookies(
        upstream
            .headers
            .get_all(header::COOKIE)
            .iter()
            .map(|v| v.as_bytes()),
        names,
    );
    if let Some(rest) = rebuilt {
        upstream.remove_header(&header::COOKIE);
        if !rest.is_empty() {
            let value = http::HeaderValue::from_bytes(&rest)
                .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "cookie", e))?;
            upstream.insert_header(header::COOKIE, value)?;
        }
    }
    Ok(())
}

/// Asks the upstream for the whole, current, uncompressed body: what is
/// rewritten or merged must arrive complete (a 304 would revive a cached
/// production copy in the browser; a 206 or a compressed body cannot be
/// rewritten as it streams).
fn whole_and_fresh(upstream: &mut RequestHeader) -> Result<()> {
    upstream.insert_header(
        header::ACCEPT_ENCODING,
        http::HeaderValue::from_static("identity"),
    )?;
    for h in [
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_RANGE,
        header::RANGE,
    ] {
        upstream.remove_header(&h);
    }
    Ok(())
}

/// Removes every header of an upstream answer that is replaced whole.
fn clear_headers(resp: &mut ResponseHeader) {
    let names: Vec<http::HeaderName> = resp.headers.keys().cloned().collect();
    for name in names {
        resp.remove_header(&name);
    }
}

/// Appends `Cookie` to `Vary` unless it is already there (or `*`).
/// `Vary: *` alone: no cache keeps the answer under its URL (the HTTP
/// cache never matches it, a service worker's Cache API refuses it).
pub(super) fn vary_on_everything(resp: &mut ResponseHeader) {
    resp.remove_header(&header::VARY);
    let _ = resp.insert_header(header::VARY, http::HeaderValue::from_static("*"));
}

fn add_vary_cookie(resp: &mut ResponseHeader) {
    let present = resp.headers.get_all(header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("cookie") || t.trim() == "*")
        })
    });
    if !present {
        let _ = resp.append_header(header::VARY, http::HeaderValue::from_static("Cookie"));
    }
}

/// The page's absolute URL as the browser sees it, for resolving relative
/// URLs in the page. Falls back to a neutral host when Host is unusable.
fn page_url(session: &Session, tls: bool) -> Arc<url::Url> {
    let req = session.req_header();
    let forwarded_https = req
        .headers
        .get(&names::X_FORWARDED_PROTO)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let scheme = if tls || forwarded_https {
        "https"
    } else {
        "http"
    };
    let host = req
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
        .unwrap_or("localhost");
    page_url_of(scheme, host, req.uri.path())
}

/// `scheme://host/path` parsed (a host that does not parse: `localhost`).
fn page_url_of(scheme: &str, host: &str, path: &str) -> Arc<url::Url> {
    // Parsing a host costs about a microsecond (IDNA), a page URL asked for
    // again is a compare away: the same text parses the same.
    thread_local! {
        static SEEN: std::cell::RefCell<std::collections::VecDeque<(String, Arc<url::Url>)>> =
            const { std::cell::RefCell::new(std::collections::VecDeque::new()) };
    }
    const SEEN_MAX: usize = 64;
    let is_text = |t: &str| {
        let (t, s) = (t.as_bytes(), scheme.len());
        t.len() == s + 3 + host.len() + path.len()
            && t.starts_with(scheme.as_bytes())
            && t[s..].starts_with(b"://")
            && t[s + 3..].starts_with(host.as_bytes())
            && t.ends_with(path.as_bytes())
    };
    if let Some(url) = SEEN.with_borrow(|seen| {
        seen.iter()
            .find(|(t, _)| is_text(t))
            .map(|(_, url)| url.clone())
    }) {
        return url;
    }
    let text = format!("{scheme}://{host}{path}");
    let url = Arc::new(
        url::Url::parse(&text)
            .or_else(|_| url::Url::parse(&format!("{scheme}://localhost{path}")))
            .unwrap_or_else(|_| {
                #[allow(clippy::unwrap_used)] // a constant URL
                url::Url::parse("http://localhost/").unwrap()
            }),
    );
    if text.len() <= 512 {
        SEEN.with_borrow_mut(|seen| {
            if seen.len() >= SEEN_MAX {
                seen.pop_back();
            }
            seen.push_front((text, url.clone()));
        });
    }
    url
}

/// The origin's body does not decode as its `Content-Encoding` says. The
/// headers are gone already, so the response is aborted (the client sees a
/// broken transfer, never a complete-looking empty or truncated page).
fn broken_encoding(e: &dyn std::fmt::Display) -> Box<Error> {
    log::warn!("aborting a page whose origin encoding is broken: {e}");
    metrics::count(&metrics::REWRITES, "broken-encoding");
    Error::create(
        ErrorType::Custom(BROKEN_ENCODING),
        ErrorSource::Upstream,
        Some(format!("the origin's body does not decode as its Content-Encoding says: {e}").into()),
        None,
    )
}

/// Whether the response's media type is exactly `text/html` (parameters
/// such as `charset` aside).
fn is_html(resp: &ResponseHeader) -> bool {
    resp.headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/html"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{origin_only_to_its_origin, page_url_of, same_origin_target};

    /// The last policy a browser knows wins, over every field; unknown
    /// tokens (a newer policy) are skipped, as browsers skip them.
    #[test]
    fn a_policy_that_hides_the_path_from_its_own_origin_is_told() {
        let instead = |fields: &[&str]| {
            let mut h = http::HeaderMap::new();
            for f in fields {
                h.append(http::header::REFERRER_POLICY, f.parse().unwrap());
            }
            origin_only_to_its_origin(&h)
        };
        let strict = Some("strict-origin-when-cross-origin");
        assert_eq!(instead(&["strict-origin"]), strict);
        assert_eq!(instead(&["ORIGIN"]), Some("origin-when-cross-origin"));
        assert_eq!(instead(&["no-referrer, strict-origin"]), strict);
        assert_eq!(
            instead(&["unsafe-url", "origin"]),
            Some("origin-when-cross-origin")
        );
        assert_eq!(instead(&["strict-origin, some-future-policy"]), strict);
        for kept in [
            &[][..],
            &["strict-origin, same-origin"],
            &["origin", "strict-origin-when-cross-origin"],
            &["no-referrer"],
            &["origin-when-cross-origin"],
            &["strict-origin-x"],
            &[""],
        ] {
            assert_eq!(instead(kept), None, "{kept:?}");
        }
    }

    #[test]
    fn a_target_to_go_to_never_leaves_the_origin() {
        for (target, want) in [
            ("/next?dev=TKT-1", "/next?dev=TKT-1"),
            ("//evil.example/x?dev=TKT-1", "/evil.example/x?dev=TKT-1"),
            ("/\\evil.example/?dev=TKT-1", "/evil.example/?dev=TKT-1"),
            ("\\/evil.example", "/evil.example"),
            ("", "/"),
            ("?dev=TKT-1", "/?dev=TKT-1"),
            ("/caf\u{e9}?dev=TKT-1", "/caf%C3%A9?dev=TKT-1"),
            ("/a b", "/a%20b"),
        ] {
            let got = same_origin_target(target);
            assert_eq!(got, want, "{target}");
            let base = url::Url::parse("https://shop.example/a/b").unwrap();
            assert_eq!(
                base.join(&got).unwrap().host_str(),
                Some("shop.example"),
                "{target}"
            );
        }
    }

    #[test]
    fn a_page_url_asked_for_again_is_the_same_and_hosts_never_mix() {
        let cases = [
            (
                "https",
                "Shop.Example:443",
                "/a/../b",
                "https://shop.example/b",
            ),
            ("http", "other.example", "/b", "http://other.example/b"),
            // A host that does not parse: the page is localhost's, every time.
            ("http", "bad host", "/b", "http://localhost/b"),
            // The same text split elsewhere between host and path (a Host
            // header may hold a slash) is the same URL: it parses the same.
            ("http", "a.example/b", "/c", "http://a.example/b/c"),
            ("http", "a.example", "/b/c", "http://a.example/b/c"),
            ("https", "a.example", "/b", "https://a.example/b"),
        ];
        for _ in 0..3 {
            for (scheme, host, path, url) in cases {
                assert_eq!(page_url_of(scheme, host, path).as_str(), url);
            }
        }
        // More pages than are remembered: each is still its own.
        for i in 0..200 {
            let url = page_url_of("http", &format!("h{i}.example"), "/p");
            assert_eq!(url.host_str(), Some(format!("h{i}.example").as_str()));
        }
    }
}
