//! The `ProxyHttp` implementation. Phase methods stay thin: classification is
//! in `select`, the page rewrite in `rewrite`, CSP in `csp`, module bodies in
//! `modules`, the reserved `/__stamp/` endpoints in `internal`.
//!
//! Per request: `early_request_filter` decides which overrides apply (one
//! atomic snapshot load, no store round trip); `request_filter` answers
//! `/__stamp/…` and ticket module bodies itself; `upstream_request_filter`
//! keeps a page that will be rewritten from arriving compressed, partial or as
//! a 304; `response_filter` decides from the headers whether to rewrite and
//! fixes the headers; `response_body_filter` streams the body through lol_html.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use http::header;
use pingora::http::ResponseHeader;
use pingora::modules::http::compression::ResponseCompression;
use pingora::prelude::*;
use pingora::protocols::http::compression::{Algorithm, ResponseCompressionCtx};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use prometheus::{Histogram, IntCounter};

use stamp_model::share::Gate;
use stamp_model::wire;

use crate::config::DataConfig;
use crate::control::ControlPlane;
use crate::csp;
use crate::decode::{Coding, Decoder};
use crate::extmap::{self, MapFetch};
use crate::internal::{self, Internal};
use crate::metrics;
use crate::modules::ModuleServer;
use crate::pagecache::{Entry, Fill, PageCache, PageKey};
use crate::rewrite::{MetaCsp, PageRewriter, RewriteSpec};
use crate::select::{self, Selection, Source, View};
use crate::snapshot::{Effective, Resolved, SnapshotCell};
use stamp_model::assets;
use stamp_model::ticket::{Hash, Stage, TicketKey};
use stamp_model::ModuleRef;
use stamp_store::SharedStore;

const CSP_REPORT_ONLY: &str = "content-security-policy-report-only";

/// The response header that says what the proxy did, or why it did not.
pub const INFO_HEADER: &str = wire::header::INFO;

/// What kind of request this was (a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Passthrough,
    Ticket,
    Overlay,
    Module,
    /// A ticket file asked for by its plain path (see [`ModuleServer::serve_plain`]).
    File,
    /// Under a mirror path: a ticket file, else a redirect to the other origin.
    Mirror,
    /// An external import map, merged.
    Map,
    /// A dev page's live-reload stream.
    Live,
    Internal,
}

impl Kind {
    const ALL: [Kind; 9] = [
        Kind::Passthrough,
        Kind::Ticket,
        Kind::Overlay,
        Kind::Module,
        Kind::File,
        Kind::Mirror,
        Kind::Map,
        Kind::Live,
        Kind::Internal,
    ];

    /// The request counter and latency histogram of this kind, looked up
    /// once per process (a labelled lookup hashes and locks every time).
    fn metrics(self) -> &'static (IntCounter, Histogram) {
        static BY_KIND: LazyLock<Vec<(IntCounter, Histogram)>> = LazyLock::new(|| {
            Kind::ALL
                .iter()
                .map(|k| {
                    (
                        metrics::REQUESTS.with_label_values(&[k.label()]),
                        metrics::LATENCY.with_label_values(&[k.label()]),
                    )
                })
                .collect()
        });
        &BY_KIND[self.index()]
    }

    /// Where this kind is in [`Kind::ALL`] (a match, so a new kind cannot
    /// be forgotten).
    fn index(self) -> usize {
        match self {
            Kind::Passthrough => 0,
            Kind::Ticket => 1,
            Kind::Overlay => 2,
            Kind::Module => 3,
            Kind::File => 4,
            Kind::Mirror => 5,
            Kind::Map => 6,
            Kind::Live => 7,
            Kind::Internal => 8,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::Passthrough => "passthrough",
            Kind::Ticket => "ticket",
            Kind::Overlay => "overlay",
            Kind::Module => "module",
            Kind::File => "file",
            Kind::Mirror => "mirror",
            Kind::Map => "map",
            Kind::Live => "live",
            Kind::Internal => "internal",
        }
    }
}

/// Which variant of a page a request gets.
#[derive(Debug, Clone)]
pub enum Variant {
    Ticket {
        key: TicketKey,
        view: View,
        stage: Stage,
        /// The ticket's own modules in this view (the overlay's not counted).
        own: usize,
    },
    /// Production with released tickets' overrides.
    Overlay,
}

#[derive(Debug, Clone)]
pub struct PagePlan {
    pub effective: Arc<Effective>,
    pub variant: Variant,
}

struct ActiveRewrite {
    decoder: Option<Decoder>,
    rewriter: PageRewriter,
    /// The nonce made up for this page (used or not).
    nonce: String,
}

/// Counts a request as in flight for as long as its context lives.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(counter: &Arc<AtomicUsize>) -> InFlight {
        counter.fetch_add(1, Ordering::SeqCst);
        InFlight(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A link's selection that could not be served: the ticket, the view it
/// asked for, and why (for the notice on the production page).
type Notice = (TicketKey, View, crate::badge::Stale);

/// Per-request state.
pub struct Ctx {
    /// Counts the request as in flight; `None` for an endless stream.
    in_flight: Option<InFlight>,
    started: Instant,
    kind: Kind,
    plan: Option<PagePlan>,
    /// `Set-Cookie`s to send (select, or clear every copy).
    set_cookie: Vec<String>,
    /// Value of the `x-ticket-stamp` header.
    info: Option<String>,
    /// The request may be for an HTML page that will be rewritten.
    html_candidate: bool,
    secure: bool,
    rewrite: Option<Mutex<ActiveRewrite>>,
    /// The ticket file a `File` or `Mirror` request gets.
    file: Option<ModuleRef>,
    /// A hot-reload request's module: the live dev view's body at the path.
    hot: Option<ModuleRef>,
    /// `?__ts=`: the body's hash, or `Err` when the digest is malformed.
    module: Option<Result<Hash, ()>>,
    /// The ticket file's body, replacing the origin's 404 for a `File`.
    file_body: Option<Bytes>,
    /// The external map being fetched and merged.
    map: Option<Mutex<MapFetch>>,
    /// The page's key in the stamped-page cache, with the snapshot version.
    page_key: Option<(PageKey, u64)>,
    /// The stored page, revalidated with the origin.
    cached: Option<Arc<Entry>>,
    /// The stored page's bytes, sent for the origin's 304 (by
    /// `response_filter` itself).
    hit_body: Option<Bytes>,
    /// The page being stamped, kept once complete.
    fill: Option<Fill>,
    /// The selection named a ticket that cannot be served: the production
    /// page says so.
    notice: Option<Notice>,
    /// A navigation to a protected preview by someone not signed in: sent
    /// to sign in first (the `Location`).
    sign_in: Option<String>,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("kind", &self.kind)
            .field("plan", &self.plan.as_ref().map(|p| &p.variant))
            .finish()
    }
}

/// The proxy service: configuration, the snapshot, the module server, and
/// the control plane behind `/__stamp/`.
pub struct StampProxy {
    pub cfg: Arc<DataConfig>,
    pub snapshot: Arc<SnapshotCell>,
    pub store: SharedStore,
    pub modules: ModuleServer,
    pub internal: Internal,
    /// Share-link and preview-pass checker, when previews are protected.
    pub preview: Option<Gate>,
    /// Requests in flight (for a graceful stop that waits for them).
    pub in_flight: Arc<AtomicUsize>,
    /// The ticket cookie's name over plain HTTP and over TLS (`__Host-…`).
    cookie_names: (String, String),
    peer: HttpPeer,
    asset_origins: Arc<[String]>,
    /// Stamped pages the origin can revalidate.
    pages: PageCache,
    /// No overrides: the plan of a production page that only gets a notice.
    empty: Arc<Effective>,
}

impl StampProxy {
    pub fn new(
        cfg: Arc<DataConfig>,
        snapshot: Arc<SnapshotCell>,
        store: SharedStore,
        control: Arc<dyn ControlPlane>,
        preview: Option<Gate>,
    ) -> StampProxy {
        let o = &cfg.origin;
        let mut peer = HttpPeer::new(o.addr, o.tls, o.sni.clone());
        peer.options.connection_timeout = Some(cfg.timeouts.connect);
        peer.options.read_timeout = Some(cfg.timeouts.read);
        peer.options.write_timeout = Some(cfg.timeouts.write);
        peer.options.idle_timeout = Some(cfg.timeouts.idle);
        peer.options.verify_cert = o.verify_cert;
        peer.options.verify_hostname = o.verify_cert;
        let modules = ModuleServer::new(store.clone(), snapshot.clone(), cfg.module_cache_bytes);
        let internal = Internal {
            cell: snapshot.clone(),
            metrics_token: cfg.metrics_token,
            store: store.clone(),
            control,
        };
        let cookie_names = (
            select::cookie_name(&cfg.selection.cookie_name, false),
            select::cookie_name(&cfg.selection.cookie_name, true),
        );
        let asset_origins: Arc<[String]> = Arc::from(cfg.asset_origins.clone());
        StampProxy {
            pages: PageCache::new(cfg.rewrite.page_cache_bytes),
            empty: Arc::new(Effective::new(Default::default())),
            asset_origins,
            cfg,
            snapshot,
            store,
            modules,
            internal,
            preview,
            in_flight: Arc::new(AtomicUsize::new(0)),
            cookie_names,
            peer,
        }
    }

    /// Decides the page plan, the cookie and the info header for a request.
    fn plan(&self, session: &Session, ctx: &mut Ctx) -> Option<select::Classified> {
        let req = session.req_header();
        let cookies = req.headers.get_all(header::COOKIE);
        // Precomputed: no allocation per request for the name.
        let name = if ctx.secure {
            &self.cookie_names.1
        } else {
            &self.cookie_names.0
        };
        let classified =
            select::classify(req.uri.query(), cookies.iter().map(|v| v.as_bytes()), name);
        if classified.module.is_some() && classified.hot.is_none() {
            return Some(classified);
        }
        let snap = self.snapshot.load();
        let overlay = || {
            snap.overlay.clone().map(|effective| PagePlan {
                effective,
                variant: Variant::Overlay,
            })
        };
        let host = req.headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let base = &self.cfg.selection.cookie_name;
        let production = |ctx: &mut Ctx, reason: String, clear_cookie: bool| {
            ctx.info = Some(format!("production; reason=\"{reason}\""));
            if clear_cookie {
                ctx.set_cookie = select::clear_cookies(base, ctx.secure, host);
            }
            ctx.plan = overlay();
        };
        match &classified.selection {
            Selection::None => ctx.plan = overlay(),
            Selection::Off => production(ctx, "selection cleared".into(), true),
            Selection::Invalid { reason, source } => {
                let clear = classified.has_cookie || *source == Source::Cookie;
                production(ctx, reason.clone(), clear);
            }
            Selection::Ticket {
                key,
                view,
                source,
                token,
            } => match snap.resolve(key, *view) {
                Resolved::Stamp { effective, stage } => {
                    if let Some(gate) = &self.preview {
                        let generation = snap.tickets.get(key).map_or(0, |t| t.share_gen);
                        let pass = select::named_cookie(
                            req.headers
                                .get_all(header::COOKIE)
                                .iter()
                                .map(|v| v.as_bytes()),
                            stamp_model::share::PASS_COOKIE,
                        );
                        if let Err(refusal) =
                            gate.admit(token.as_deref(), pass, key, *view, generation)
                        {
                            if gate.sign_in_helps(refusal) && select::is_navigation(&req.headers) {
                                let next = req
                                    .uri
                                    .path_and_query()
                                    .map_or("/", |pq| pq.as_str())
                                    .to_string();
                                ctx.sign_in = Some(gate.login_url(&next));
                            }
                            ctx.notice = self.cfg.badge.then(|| {
                                let why =
                                    crate::badge::Stale::Refused(refusal.reason().to_string());
                                (key.clone(), *view, why)
                            });
                            // Going to sign in keeps the selection for the way back.
                            let clear = (classified.has_cookie || *source == Source::Cookie)
                                && ctx.sign_in.is_none();
                            production(ctx, refusal.reason().to_string(), clear);
                            return Some(classified);
                        }
                    }
                    if *source == Source::Query {
                        ctx.set_cookie = vec![select::set_cookie(
                            name,
                            key,
                            *view,
                            token.as_deref().filter(|_| self.preview.is_some()),
                            self.cfg.selection.cookie_max_age.as_secs(),
                            ctx.secure,
                        )];
                    }
                    ctx.info = Some(format!(
                        "stamping; ticket={key}; view={}; stage={stage}; overrides={}",
                        view.as_str(),
                        effective.len()
                    ));
                    ctx.plan = Some(PagePlan {
                        effective: effective.clone(),
                        variant: Variant::Ticket {
                            key: key.clone(),
                            view: *view,
                            stage,
                            own: snap.tickets.get(key).map_or(0, |t| match view {
                                View::Dev => t.dev_count,
                                View::Qa => t.qa_count.unwrap_or(0),
                            }),
                        },
                    });
                }
                Resolved::Production(reason) => {
                    ctx.notice = self.cfg.badge.then(|| {
                        let why = match snap.tickets.get(key).map(|t| t.stage) {
                            None => crate::badge::Stale::Unknown,
                            Some(Stage::Closed) => crate::badge::Stale::Closed,
                            Some(stage) => crate::badge::Stale::NotInQa(stage),
                        };
                        (key.clone(), *view, why)
                    });
                    let clear = classified.has_cookie || *source == Source::Cookie;
                    production(ctx, reason, clear);
                }
            },
        }
        if let Some(PagePlan {
            variant: Variant::Overlay,
            effective,
        }) = &ctx.plan
        {
            if ctx.info.is_none() {
                ctx.info = Some(format!(
                    "overlay; released={}; overrides={}",
                    snap.released.len(),
                    effective.len()
                ));
            }
        }
        Some(classified)
    }

    /// Headers and rewriter for a page that will be rewritten, or the reason
    /// it will not be.
    fn start_rewrite(
        &self,
        session: &Session,
        resp: &mut ResponseHeader,
        plan: &PagePlan,
        notice: Option<&Notice>,
    ) -> Result<Option<ActiveRewrite>, String> {
        let status = resp.status.as_u16();
        if status < 200 || status == 204 || status == 206 || status == 304 {
            return Ok(None);
        }
        if !is_html(resp) {
            return Ok(None);
        }
        let no_transform = resp.headers.get_all(header::CACHE_CONTROL).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',')
                    .any(|d| d.trim().eq_ignore_ascii_case("no-transform"))
            })
        });
        if no_transform {
            return Err("the origin sent Cache-Control: no-transform".into());
        }
        let utf16 = resp
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                ct.to_ascii_lowercase()
                    .replace(' ', "")
                    .contains("charset=utf-16")
            });
        if utf16 {
            // lol_html reads ASCII-compatible encodings only: say so rather
            // than claim a page was stamped that never could be.
            return Err("the page is UTF-16, which the rewriter cannot read".into());
        }
        let coding = Coding::from_header(
            resp.headers
                .get(header::CONTENT_ENCODING)
                .map(|v| v.as_bytes()),
        )?;
        let decoder = coding.map(Decoder::new).transpose()?;

        // CSP: the map gets the policy's nonce, or the policy gets our hash and
        // a fresh nonce; nothing is ever removed.
        let policies: Vec<String> = resp
            .headers
            .get_all(header::CONTENT_SECURITY_POLICY)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        // CSP: the map (and the badge's style) get the policy's nonce, or the
        // policy gets their hashes and a fresh nonce; nothing is ever removed.
        let fresh = csp::fresh_nonce();
        let mut nonce = None;
        let mut style_nonce = None;
        let badge = match &plan.variant {
            Variant::Ticket {
                key,
                view,
                stage,
                own,
            } if self.cfg.badge => Some((key, *view, *stage, *own)),
            _ => None,
        };
        // A page that only gets a notice has no map: its script policy is
        // left exactly as it is.
        let stamps = !plan.effective.overrides.is_empty();
        let styled = badge.is_some() || notice.is_some();
        if !policies.is_empty() {
            let mut current = policies.clone();
            let mut changed = false;
            if stamps {
                let refs: Vec<&str> = current.iter().map(String::as_str).collect();
                let script = csp::plan(&refs, &plan.effective.fresh_hash, &fresh);
                if let Some(note) = &script.note {
                    log::info!("{}: {note}", session.req_header().uri);
                }
                if script.changed {
                    current = script.policies.clone();
                    changed = true;
                }
                nonce = script.nonce;
            }
            if styled {
                let refs: Vec<&str> = current.iter().map(String::as_str).collect();
                let style = csp::plan_for(
                    csp::Element::Style,
                    &refs,
                    crate::badge::style_hash(),
                    &fresh,
                );
                if style.changed {
                    current = style.policies.clone();
                    changed = true;
                }
                style_nonce = style.nonce;
            }
            if changed {
                resp.remove_header(&header::CONTENT_SECURITY_POLICY);
                for p in &current {
                    resp.append_header(header::CONTENT_SECURITY_POLICY, p.as_str())
                        .map_err(|e| format!("cannot write the CSP header: {e}"))?;
                }
            }
        }
        // Report-only policies get the same elements, so a ticket view sends
        // no reports that production does not.
        let report_only: Vec<String> = resp
            .headers
            .get_all(CSP_REPORT_ONLY)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        if !report_only.is_empty() {
            let mut current = report_only.clone();
            let mut changed = false;
            if stamps {
                let script_nonce = nonce.clone().unwrap_or_else(|| fresh.clone());
                let refs: Vec<&str> = report_only.iter().map(String::as_str).collect();
                let script = csp::extend_with(
                    csp::Element::Script,
                    &refs,
                    &plan.effective.fresh_hash,
                    &script_nonce,
                );
                current = script.policies;
                changed = script.changed;
                if script.nonce.is_some() {
                    nonce = Some(script_nonce);
                }
            }
            if styled {
                let style_n = style_nonce.clone().unwrap_or_else(|| fresh.clone());
                let refs: Vec<&str> = current.iter().map(String::as_str).collect();
                let style = csp::extend_with(
                    csp::Element::Style,
                    &refs,
                    crate::badge::style_hash(),
                    &style_n,
                );
                if style.nonce.is_some() {
                    style_nonce = Some(style_n);
                }
                changed |= style.changed;
                current = style.policies;
            }
            if changed {
                resp.remove_header(CSP_REPORT_ONLY);
                for p in &current {
                    resp.append_header(CSP_REPORT_ONLY, p.as_str())
                        .map_err(|e| format!("cannot write the CSP report-only header: {e}"))?;
                }
            }
        }
        // A `<meta>` policy in the page can only be given nonces that are
        // ours: the fresh one, when the headers did not settle on the page's.
        let script_ours = nonce.as_deref().is_none_or(|n| n == fresh);
        let style_ours = style_nonce.as_deref().is_none_or(|n| n == fresh);
        let meta_csp =
            (stamps && script_ours && (badge.is_none() || style_ours)).then(|| MetaCsp {
                script_nonce: fresh.clone(),
                script_hash: plan.effective.fresh_hash.clone(),
                style: badge
                    .is_some()
                    .then(|| (fresh.clone(), crate::badge::style_hash().to_string())),
            });
        let badge = badge.map(|(key, view, stage, own)| crate::badge::Badge {
            key: key.clone(),
            view,
            stage,
            own,
            nonce: style_nonce.clone(),
        });

        for h in [
            header::CONTENT_LENGTH,
            header::CONTENT_ENCODING,
            header::ETAG,
            header::LAST_MODIFIED,
            header::ACCEPT_RANGES,
        ] {
            resp.remove_header(&h);
        }
        if session.req_header().version != http::Version::HTTP_2 {
            let _ = resp.insert_header(header::TRANSFER_ENCODING, "chunked");
            resp.set_version(http::Version::HTTP_11);
        }
        let cache_control = match plan.variant {
            Variant::Ticket { .. } => "private, no-store",
            // This visitor's stale link: nobody else's page.
            Variant::Overlay if notice.is_some() => "private, no-store",
            // Production with released tickets: caches must come back, so a
            // revert is seen at once.
            Variant::Overlay => "no-cache",
        };
        let _ = resp.insert_header(header::CACHE_CONTROL, cache_control);
        add_vary_cookie(resp);

        let page_url = page_url(session, self.cfg.tls);
        let live = match &plan.variant {
            Variant::Ticket {
                key,
                view: View::Dev,
                ..
            } if crate::live::asked(session.req_header().uri.query()) => {
                Some(crate::live::url(key, &plan.effective.id))
            }
            _ => None,
        };
        let rewriter = PageRewriter::new(RewriteSpec {
            live,
            effective: plan.effective.clone(),
            page_url,
            nonce,
            max_map_bytes: self.cfg.rewrite.max_import_map_bytes,
            memory_limit_bytes: self.cfg.rewrite.memory_limit_bytes,
            badge,
            meta_csp,
            asset_origins: self.asset_origins.clone(),
            notice: notice.map(|(key, view, why)| {
                crate::badge::notice(key, *view, why, style_nonce.as_deref())
            }),
        });
        Ok(Some(ActiveRewrite {
            decoder,
            rewriter,
            nonce: fresh,
        }))
    }
}

impl StampProxy {
    /// What the stamped page of this request depends on, besides the
    /// origin's bytes.
    fn page_key(&self, session: &Session, plan: &PagePlan, secure: bool) -> PageKey {
        let req = session.req_header();
        let host = req
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri.authority().map(|a| a.as_str()))
            .unwrap_or_default()
            .to_string();
        let uri = req
            .uri
            .path_and_query()
            .map_or_else(|| req.uri.path().to_string(), |pq| pq.as_str().to_string());
        let live = crate::live::asked(req.uri.query());
        let label = match &plan.variant {
            Variant::Ticket {
                key,
                view,
                stage,
                own,
            } => format!("ticket {key} {} {stage} {own} live={live}", view.as_str()),
            Variant::Overlay => "overlay".to_string(),
        };
        PageKey {
            host,
            uri,
            variant: plan.effective.id,
            label: format!("{label} secure={secure} badge={}", self.cfg.badge),
        }
    }
}

/// Asks the upstream for the whole, current, uncompressed body: what is
/// rewritten or merged must arrive complete (a 304 would revive a cached
/// production copy in the browser; a 206 or a compressed body cannot be
/// rewritten as it streams).
fn whole_and_fresh(upstream: &mut RequestHeader) -> Result<()> {
    upstream.insert_header(header::ACCEPT_ENCODING, "identity")?;
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
fn add_vary_cookie(resp: &mut ResponseHeader) {
    let present = resp.headers.get_all(header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("cookie") || t.trim() == "*")
        })
    });
    if !present {
        let _ = resp.append_header(header::VARY, "Cookie");
    }
}

/// The page's absolute URL as the browser sees it, for resolving relative
/// URLs in the page. Falls back to a neutral host when Host is unusable.
fn page_url(session: &Session, tls: bool) -> url::Url {
    let req = session.req_header();
    let forwarded_https = req
        .headers
        .get("x-forwarded-proto")
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
    let path = req.uri.path();
    url::Url::parse(&format!("{scheme}://{host}{path}"))
        .or_else(|_| url::Url::parse(&format!("{scheme}://localhost{path}")))
        .unwrap_or_else(|_| {
            #[allow(clippy::unwrap_used)] // a constant URL
            url::Url::parse("http://localhost/").unwrap()
        })
}

#[async_trait]
impl ProxyHttp for StampProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            in_flight: Some(InFlight::new(&self.in_flight)),
            started: Instant::now(),
            kind: Kind::Passthrough,
            plan: None,
            set_cookie: Vec::new(),
            info: None,
            html_candidate: false,
            secure: self.cfg.tls,
            rewrite: None,
            file: None,
            hot: None,
            module: None,
            file_body: None,
            map: None,
            page_key: None,
            cached: None,
            hit_body: None,
            fill: None,
            notice: None,
            sign_in: None,
        }
    }

    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        // Each read of the body (the header's deadline is `client_io`'s).
        session
            .downstream_session
            .set_read_timeout(Some(self.cfg.timeouts.client_body));
        let req = session.req_header();
        let path = req.uri.path();
        let mirror = path.starts_with(assets::MIRROR_PREFIX);
        let map = path == assets::MAP_PATH;
        if path == wire::LIVE_PATH {
            // Who may follow a ticket's saves: a browser whose selection
            // (cookie, share token included) is that ticket's dev view.
            ctx.kind = Kind::Live;
            let _ = self.plan(session, ctx);
            return Ok(());
        }
        if wire::is_reserved(path) && !mirror && !map {
            ctx.kind = Kind::Internal;
            return Ok(());
        }
        if req
            .headers
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
        {
            ctx.secure = true;
        }
        let classified = self.plan(session, ctx);
        ctx.module = classified.as_ref().and_then(|c| c.module);
        let is_module = ctx.module.is_some();
        let req = session.req_header();
        let get_or_head = req.method == http::Method::GET || req.method == http::Method::HEAD;
        if is_module && classified.is_some_and(|c| c.hot.is_some()) {
            // A hot reload from a live dev page: the module this browser's
            // dev view has at the path now, whatever hash the URL still
            // names (the page's map is fixed once loaded).
            ctx.hot = ctx
                .plan
                .as_ref()
                .filter(|p| {
                    matches!(
                        p.variant,
                        Variant::Ticket {
                            view: View::Dev,
                            ..
                        }
                    )
                })
                .and_then(|p| p.effective.by_serve_path.get(req.uri.path()).cloned());
        }
        // A ticket file the variant has at this very path.
        ctx.file = ctx
            .plan
            .as_ref()
            .filter(|_| !is_module && get_or_head)
            .and_then(|p| p.effective.by_serve_path.get(req.uri.path()).cloned());
        if map {
            ctx.kind = Kind::Map;
        } else if is_module {
            ctx.kind = Kind::Module;
        } else if mirror {
            ctx.kind = Kind::Mirror;
        } else if ctx.file.is_some() {
            ctx.kind = Kind::File;
        } else if ctx.plan.is_some() || ctx.notice.is_some() {
            if let Some(plan) = &ctx.plan {
                ctx.kind = match plan.variant {
                    Variant::Ticket { .. } => Kind::Ticket,
                    Variant::Overlay => Kind::Overlay,
                };
            }
            ctx.html_candidate = get_or_head
                && !session.is_upgrade_req()
                && select::may_be_html(
                    req.uri.path(),
                    req.headers.get(header::ACCEPT).map(|v| v.as_bytes()),
                    req.headers.get("sec-fetch-dest").map(|v| v.as_bytes()),
                );
        }
        // A page with a stale link's notice is this visitor's alone: never stored.
        if ctx.html_candidate
            && ctx.notice.is_none()
            && self.pages.enabled()
            && req.method == http::Method::GET
        {
            if let Some(plan) = &ctx.plan {
                let version = self.snapshot.load().version;
                let key = self.page_key(session, plan, ctx.secure);
                ctx.cached = self.pages.get(&key, version);
                ctx.page_key = Some((key, version));
            }
        }
        let level = self.cfg.rewrite.compression_level;
        if level > 0 && (ctx.html_candidate || is_module) {
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
        if let Some(location) = ctx.sign_in.take() {
            let mut resp = ResponseHeader::build(302, Some(5))?;
            resp.insert_header(header::LOCATION, location)?;
            resp.insert_header(header::CACHE_CONTROL, "private, no-store")?;
            resp.insert_header(header::CONTENT_LENGTH, "0")?;
            resp.insert_header(
                INFO_HEADER,
                "production; reason=\"sign in to open previews\"",
            )?;
            for c in &ctx.set_cookie {
                resp.append_header(header::SET_COOKIE, c.as_str())?;
            }
            session.write_response_header(Box::new(resp), true).await?;
            return Ok(true);
        }
        match ctx.kind {
            Kind::Internal => {
                if session.req_header().uri.path() == wire::EVENTS_PATH {
                    // The panel's event stream never ends by itself: a
                    // graceful stop must not wait for it.
                    ctx.in_flight = None;
                }
                self.internal.serve(session).await?;
                Ok(true)
            }
            Kind::Module => {
                match &ctx.hot {
                    Some(module) => {
                        self.modules
                            .serve_plain(session, module, "no-store")
                            .await?
                    }
                    None => self.modules.serve(session, ctx.module).await?,
                }
                Ok(true)
            }
            Kind::Mirror if ctx.file.is_some() => {
                if let Some(file) = &ctx.file {
                    self.modules
                        .serve_plain(session, file, file_cache_control(ctx))
                        .await?;
                }
                Ok(true)
            }
            Kind::Mirror => {
                self.redirect_mirror(session).await?;
                Ok(true)
            }
            Kind::Map => self.start_map(session, ctx).await,
            Kind::Live => {
                // Endless by design: a graceful stop must not wait for it.
                ctx.in_flight = None;
                let selected = match &ctx.plan {
                    Some(PagePlan {
                        variant:
                            Variant::Ticket {
                                key,
                                view: View::Dev,
                                ..
                            },
                        ..
                    }) => Some(key.clone()),
                    _ => None,
                };
                crate::live::serve(session, &self.snapshot, selected.as_ref()).await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let remote = ctx.map.as_ref().and_then(|m| {
            let m = m.lock().unwrap_or_else(PoisonError::into_inner);
            m.remote.then(|| m.url.clone())
        });
        match remote {
            Some(url) => self.remote_peer(&url).await,
            None => Ok(Box::new(self.peer.clone())),
        }
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(map) = &ctx.map {
            let map = map.lock().unwrap_or_else(PoisonError::into_inner);
            let target = match map.url.query() {
                Some(q) => format!("{}?{q}", map.url.path()),
                None => map.url.path().to_string(),
            };
            let uri: http::Uri = target
                .parse()
                .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "map URL", e))?;
            upstream.set_uri(uri);
            if map.remote {
                // Another site: it gets none of the client's credentials.
                let host = map.url.host_str().unwrap_or_default().to_string();
                let authority = match map.url.port() {
                    Some(p) => format!("{host}:{p}"),
                    None => host,
                };
                // Another site gets a plain GET: none of the client's
                // credentials, identity or forwarding headers.
                let names: Vec<http::HeaderName> = upstream
                    .headers
                    .keys()
                    .filter(|n| !matches!(n.as_str(), "accept" | "accept-language" | "user-agent"))
                    .cloned()
                    .collect();
                for name in names {
                    upstream.remove_header(&name);
                }
                upstream.insert_header(header::HOST, authority)?;
            } else if let Some(host) = &self.cfg.origin.host_header {
                upstream.insert_header(header::HOST, host.as_str())?;
            }
            whole_and_fresh(upstream)?;
            return Ok(());
        }
        if let Some(host) = &self.cfg.origin.host_header {
            upstream.insert_header(header::HOST, host.as_str())?;
        }
        // The preview pass is ours: the origin never sees it.
        if self.preview.is_some() {
            let rebuilt = select::without_cookie(
                upstream
                    .headers
                    .get_all(header::COOKIE)
                    .iter()
                    .map(|v| v.as_bytes()),
                stamp_model::share::PASS_COOKIE,
            );
            if let Some(rest) = rebuilt {
                upstream.remove_header(&header::COOKIE);
                if !rest.is_empty() {
                    let value = http::HeaderValue::from_bytes(&rest)
                        .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "cookie", e))?;
                    upstream.insert_header(header::COOKIE, value)?;
                }
            }
        }
        if ctx.html_candidate {
            // The page will be rewritten: it must arrive whole, fresh and
            // uncompressed (a 304 would revive a production copy in the
            // browser; a 206 cannot be rewritten).
            whole_and_fresh(upstream)?;
            if let Some(entry) = &ctx.cached {
                // Ours, not the browser's: a 304 means the stored stamped
                // page is still the page.
                // The tag only: an origin that compares dates alone would
                // answer 304 for another visitor's page.
                let (etag, _) = entry.validators();
                upstream.insert_header(header::IF_NONE_MATCH, etag)?;
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(map) = &ctx.map {
            let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
            let status = resp.status.as_u16();
            let identity = resp
                .headers
                .get(header::CONTENT_ENCODING)
                .is_none_or(|v| v.as_bytes().eq_ignore_ascii_case(b"identity"));
            let ty = resp
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let media = ty
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            let json = media == "application/json"
                || media == "text/json"
                || (media.starts_with("application/") && media.ends_with("+json"));
            map.failure = if status != 200 {
                Some(format!("{} answered {status} for the import map", map.url))
            } else if !identity {
                Some(format!("{} sent the import map encoded", map.url))
            } else if !json {
                Some(format!(
                    "{} is not a JSON import map (Content-Type {ty:?})",
                    map.url
                ))
            } else {
                None
            };
            // Nothing of the upstream's answer but its JSON type is relayed:
            // no cookies, no validators, no caching, no sniffing.
            clear_headers(resp);
            match &map.failure {
                None => resp.insert_header(header::CONTENT_TYPE, ty)?,
                Some(reason) => {
                    log::warn!("external import map not merged: {reason}");
                    resp.set_status(502)?;
                    resp.insert_header(header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
                }
            }
            if session.req_header().version != http::Version::HTTP_2 {
                resp.insert_header(header::TRANSFER_ENCODING, "chunked")?;
                resp.set_version(http::Version::HTTP_11);
            }
            resp.insert_header(header::CACHE_CONTROL, "private, no-store")?;
            resp.insert_header("x-content-type-options", "nosniff")?;
            resp.insert_header(header::CONTENT_SECURITY_POLICY, "sandbox")?;
            resp.insert_header(
                INFO_HEADER,
                if map.failure.is_some() {
                    "map; failed"
                } else {
                    "map; merged"
                },
            )?;
            return Ok(());
        }
        if ctx.kind == Kind::File
            && resp.status.as_u16() == 404
            && !crate::modules::is_service_worker(session)
        {
            // Production lacks the file: it is the ticket's (a chunk or a
            // stylesheet its build made). Production's own files are never
            // answered with ticket bytes under their URLs.
            if let Some(file) = ctx.file.clone() {
                if let Ok(Some(body)) = self.modules.body(&file.hash).await {
                    clear_headers(resp);
                    resp.set_status(200)?;
                    resp.insert_header(
                        header::CONTENT_TYPE,
                        crate::modules::content_type(&file.path),
                    )?;
                    resp.insert_header(header::CONTENT_LENGTH, body.len().to_string())?;
                    resp.insert_header(header::ETAG, format!("\"{}\"", file.hash))?;
                    resp.insert_header(header::CACHE_CONTROL, file_cache_control(ctx))?;
                    resp.insert_header(header::VARY, "Cookie")?;
                    resp.insert_header("x-content-type-options", "nosniff")?;
                    resp.insert_header(INFO_HEADER, "file")?;
                    metrics::MODULE_BYTES.inc_by(body.len() as u64);
                    ctx.file_body = Some(body);
                    return Ok(());
                }
            }
        }
        let hit = match ctx.cached.take() {
            Some(entry) if resp.status.as_u16() == 304 && ctx.html_candidate => {
                // The origin's cookies for this visitor (a rolling session)
                // go out with the stored page.
                let origin_cookies: Vec<http::HeaderValue> = resp
                    .headers
                    .get_all(header::SET_COOKIE)
                    .iter()
                    .cloned()
                    .collect();
                clear_headers(resp);
                for c in origin_cookies {
                    resp.append_header(header::SET_COOKIE, c)?;
                }
                ctx.hit_body = Some(entry.respond(resp, &csp::fresh_nonce())?);
                if session.req_header().version != http::Version::HTTP_2 {
                    resp.set_version(http::Version::HTTP_11);
                }
                metrics::PAGE_CACHE.with_label_values(&["hit"]).inc();
                true
            }
            Some(_) => {
                metrics::PAGE_CACHE.with_label_values(&["changed"]).inc();
                false
            }
            None => false,
        };
        // Judged on the origin's own headers, before ours are added.
        let fill = match ctx.page_key.take() {
            Some((key, version)) if !hit => {
                self.pages.fill(key, version, session.req_header(), resp)
            }
            _ => None,
        };
        for cookie in &ctx.set_cookie {
            resp.append_header(header::SET_COOKIE, cookie.as_str())?;
        }
        if hit {
            if let Some(info) = &ctx.info {
                resp.insert_header(INFO_HEADER, format!("{info}; cached"))?;
            }
            // The origin's 304 ends the response at its header, so Pingora
            // would send no body after it: the stored page is written here,
            // through the downstream modules (compression), and the header
            // Pingora writes next is dropped as already sent.
            let body = ctx.hit_body.take().unwrap_or_default();
            session
                .write_response_header(Box::new(resp.clone()), false)
                .await?;
            session.write_response_body(Some(body), true).await?;
            // The compression module has finished this response; Pingora's
            // own (dropped) header must not reach it again, which would
            // start a second body phase (a panic in pingora-core).
            if let Some(c) = session
                .downstream_modules_ctx
                .get_mut::<ResponseCompression>()
            {
                **c = ResponseCompressionCtx::new(0, false, false);
            }
            return Ok(());
        }
        let Some(plan) = ctx.plan.clone() else {
            // A selection that did not resolve: say why on production.
            if let Some(info) = &ctx.info {
                resp.insert_header(INFO_HEADER, info.as_str())?;
            }
            if ctx.html_candidate && ctx.notice.is_some() {
                let plan = PagePlan {
                    effective: self.empty.clone(),
                    variant: Variant::Overlay,
                };
                if let Ok(Some(active)) =
                    self.start_rewrite(session, resp, &plan, ctx.notice.as_ref())
                {
                    ctx.rewrite = Some(Mutex::new(active));
                }
                return Ok(());
            }
            if self.cfg.rewrite.production_vary_cookie && is_html(resp) {
                add_vary_cookie(resp);
            }
            return Ok(());
        };
        if !ctx.html_candidate {
            return Ok(());
        }
        match self.start_rewrite(session, resp, &plan, ctx.notice.as_ref()) {
            Ok(Some(active)) => {
                if let Some(info) = &ctx.info {
                    resp.insert_header(INFO_HEADER, info.as_str())?;
                }
                ctx.fill = fill.map(|mut f| {
                    f.stamped(resp, &active.nonce);
                    f
                });
                ctx.rewrite = Some(Mutex::new(active));
            }
            Ok(None) => {}
            Err(reason) => {
                log::info!("{} not rewritten: {reason}", session.req_header().uri);
                metrics::REWRITES.with_label_values(&["skipped"]).inc();
                resp.insert_header(INFO_HEADER, format!("unchanged; reason=\"{reason}\""))?;
            }
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<std::time::Duration>> {
        if let Some(body_of_file) = &ctx.file_body {
            // The origin's 404 page is dropped; the ticket's file goes out.
            *body = end_of_stream.then(|| body_of_file.clone());
            return Ok(None);
        }
        if let Some(map) = &ctx.map {
            let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(reason) = &map.failure {
                *body = end_of_stream.then(|| Bytes::from(format!("ticket-stamp: {reason}\n")));
                return Ok(None);
            }
            let max = self.cfg.rewrite.max_import_map_bytes;
            if let Some(chunk) = body.take() {
                if map.buf.len() + chunk.len() > max {
                    // Fail closed: production's bytes are never relayed
                    // unchecked (the page's integrity went into our URL).
                    let reason =
                        format!("the import map at {} is larger than {max} bytes", map.url);
                    log::warn!("{reason}");
                    map.failure = Some(reason.clone());
                    return Err(Error::explain(ErrorType::Custom(BAD_MAP), reason));
                }
                map.buf.extend_from_slice(&chunk);
            }
            if end_of_stream {
                let page = page_url(session, self.cfg.tls);
                match map.finish(&page, max) {
                    Ok(out) => {
                        metrics::REWRITES.with_label_values(&["external-map"]).inc();
                        *body = Some(Bytes::from(out));
                    }
                    Err(reason) => {
                        log::warn!("external import map not merged: {reason}");
                        metrics::REWRITES.with_label_values(&["map-invalid"]).inc();
                        map.failure = Some(reason.clone());
                        return Err(Error::explain(ErrorType::Custom(BAD_MAP), reason));
                    }
                }
            }
            return Ok(None);
        }
        let Some(active) = &ctx.rewrite else {
            return Ok(None);
        };
        let mut active = active.lock().unwrap_or_else(PoisonError::into_inner);
        let active = &mut *active;
        let mut out = Vec::new();
        if let Some(chunk) = body.take() {
            out = match &mut active.decoder {
                Some(d) => match d.write(&chunk) {
                    Ok(plain) => active.rewriter.write(&plain),
                    Err(e) => return Err(broken_encoding(&e)),
                },
                // Most pages: fed as they came, without a copy.
                None => active.rewriter.write(&chunk),
            };
        }
        if end_of_stream {
            if let Some(d) = &mut active.decoder {
                match d.finish() {
                    Ok(rest) => out.extend(active.rewriter.write(&rest)),
                    Err(e) => return Err(broken_encoding(&e)),
                }
            }
            out.extend(active.rewriter.finish());
        }
        let out = Bytes::from(out);
        if let Some(fill) = &mut ctx.fill {
            if !fill.push(&out) {
                ctx.fill = None;
            }
        }
        if end_of_stream {
            let report = active.rewriter.report();
            metrics::REWRITES
                .with_label_values(&[report.outcome()])
                .inc();
            metrics::REWRITE_BYTES_IN.inc_by(report.bytes_in);
            metrics::REWRITE_BYTES_OUT.inc_by(report.bytes_out);
            if let Some(fill) = ctx.fill.take() {
                // A rewrite that ran out of memory left the rest as it came:
                // right, but not worth keeping.
                if !report.bailed_out {
                    self.pages.store(fill);
                }
            }
        }
        *body = Some(out);
        Ok(None)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy
    where
        Ctx: Send + Sync,
    {
        let code = match e.etype() {
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
        };
        if code > 0 {
            metrics::ORIGIN_ERRORS
                .with_label_values(&[&code.to_string()])
                .inc();
        }
        if code > 0 && session.response_written().is_none() {
            let what = match code {
                502 if e.etype() == &ErrorType::Custom(BAD_MAP) => format!(
                    "the import map could not be merged: {}",
                    ctx.map
                        .as_ref()
                        .and_then(|m| m
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .failure
                            .clone())
                        .unwrap_or_default()
                ),
                502 if e.etype() == &ErrorType::Custom(BROKEN_ENCODING) => format!(
                    "the origin {} sent a body that does not decode as its Content-Encoding says",
                    self.cfg.origin.url
                ),
                504 => format!("the origin {} did not answer in time", self.cfg.origin.url),
                502 => format!(
                    "the origin {} could not be reached ({})",
                    self.cfg.origin.url,
                    e.etype().as_str()
                ),
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

    async fn logging(&self, _session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx)
    where
        Ctx: Send + Sync,
    {
        let (requests, latency) = ctx.kind.metrics();
        requests.inc();
        latency.observe(ctx.started.elapsed().as_secs_f64());
    }
}

const BROKEN_ENCODING: &str = "broken origin encoding";
const BAD_MAP: &str = "external import map not merged";

/// Caching of a ticket file at its plain path: it depends on the selection.
fn file_cache_control(ctx: &Ctx) -> &'static str {
    match ctx.plan.as_ref().map(|p| &p.variant) {
        Some(Variant::Overlay) => "no-cache",
        _ => "private, no-cache",
    }
}

impl StampProxy {
    /// A mirror path that is no ticket file: sends the browser to the other
    /// origin's own file, if that origin is one the proxy knows (an override
    /// is on it, or it is configured); anything else is 404, so the mirror is
    /// no open redirect.
    async fn redirect_mirror(&self, session: &mut Session) -> Result<()> {
        let req = session.req_header();
        let text = "text/plain; charset=utf-8";
        let Some(url) = assets::unmirror(req.uri.path()) else {
            return internal::respond(
                session,
                404,
                text,
                Bytes::from_static(b"ticket-stamp: not a mirror path\n"),
            )
            .await;
        };
        let origin = assets::origin_of(&url).unwrap_or_default();
        let known = self.snapshot.load().overrides_on(origin)
            || self.asset_origins.iter().any(|o| o == origin);
        if !known {
            return internal::respond(
                session,
                404,
                text,
                Bytes::from_static(b"ticket-stamp: no ticket overrides modules on that origin\n"),
            )
            .await;
        }
        let location = match req.uri.query() {
            Some(q) => format!("{url}?{q}"),
            None => url,
        };
        let mut resp = ResponseHeader::build(302, Some(4))?;
        resp.insert_header(header::LOCATION, location)?;
        resp.insert_header(header::CACHE_CONTROL, "no-cache")?;
        resp.insert_header(header::CONTENT_LENGTH, "0")?;
        resp.insert_header(INFO_HEADER, "mirror; redirect")?;
        session.write_response_header(Box::new(resp), true).await?;
        Ok(())
    }

    /// Reads an external map request; `Ok(false)` lets it be proxied to where
    /// the map lives, `Ok(true)` when it was answered here.
    async fn start_map(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let req = session.req_header();
        let text = "text/plain; charset=utf-8";
        if req.method != http::Method::GET || session.is_upgrade_req() {
            internal::respond(
                session,
                405,
                text,
                Bytes::from_static(b"ticket-stamp: merged import maps are fetched with GET\n"),
            )
            .await?;
            return Ok(true);
        }
        let page = page_url(session, self.cfg.tls);
        let parsed = extmap::parse_query(req.uri.query())
            .and_then(|q| extmap::target(&q.src, &page, &self.asset_origins).map(|t| (q, t)));
        let (query, (url, remote)) = match parsed {
            Ok(v) => v,
            Err(reason) => {
                internal::respond(
                    session,
                    400,
                    text,
                    Bytes::from(format!("ticket-stamp: {reason}\n")),
                )
                .await?;
                return Ok(true);
            }
        };
        let snap = self.snapshot.load();
        let effective = stamp_model::Hash::parse(&query.variant)
            .and_then(|id| snap.effective(&id).cloned())
            // The variant changed since the page was served: the browser's
            // selection now, if it has one.
            .or_else(|| ctx.plan.as_ref().map(|p| p.effective.clone()));
        let Some(effective) = effective else {
            // Nothing to merge any more: production's own map.
            let mut resp = ResponseHeader::build(302, Some(4))?;
            // Relative on this origin: never a host the request named.
            let location = match (remote, url.query()) {
                (true, _) => url.to_string(),
                (false, Some(q)) => format!("{}?{q}", url.path()),
                (false, None) => url.path().to_string(),
            };
            resp.insert_header(header::LOCATION, location)?;
            resp.insert_header(header::CACHE_CONTROL, "no-store")?;
            resp.insert_header(header::CONTENT_LENGTH, "0")?;
            resp.insert_header(
                INFO_HEADER,
                "production; reason=\"the variant of this map is gone\"",
            )?;
            session.write_response_header(Box::new(resp), true).await?;
            return Ok(true);
        };
        ctx.map = Some(Mutex::new(MapFetch {
            url,
            remote,
            effective,
            integrity: query.integrity,
            buf: Vec::new(),
            failure: None,
        }));
        Ok(false)
    }

    /// A peer for a map on another origin (resolved without blocking).
    async fn remote_peer(&self, url: &url::Url) -> Result<Box<HttpPeer>> {
        let host = url.host_str().unwrap_or_default().to_string();
        let tls = url.scheme() == "https";
        let port = url
            .port_or_known_default()
            .unwrap_or(if tls { 443 } else { 80 });
        let bare = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let addr = tokio::net::lookup_host((bare.as_str(), port))
            .await
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| {
                Error::explain(
                    ErrorType::ConnectNoRoute,
                    format!("cannot resolve {host} for its import map"),
                )
            })?;
        let mut peer = HttpPeer::new(addr, tls, bare);
        peer.options.connection_timeout = Some(self.cfg.timeouts.connect);
        peer.options.read_timeout = Some(self.cfg.timeouts.read);
        peer.options.write_timeout = Some(self.cfg.timeouts.write);
        Ok(Box::new(peer))
    }
}

/// The origin's body does not decode as its `Content-Encoding` says. The
/// headers are gone already, so the response is aborted (the client sees a
/// broken transfer, never a complete-looking empty or truncated page).
fn broken_encoding(e: &dyn std::fmt::Display) -> Box<Error> {
    log::warn!("aborting a page whose origin encoding is broken: {e}");
    metrics::REWRITES
        .with_label_values(&["broken-encoding"])
        .inc();
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
mod tests {
    use super::Kind;

    #[test]
    fn every_kind_has_its_own_metrics_slot() {
        for (i, k) in Kind::ALL.iter().enumerate() {
            assert_eq!(k.index(), i, "{k:?}");
        }
    }
}
