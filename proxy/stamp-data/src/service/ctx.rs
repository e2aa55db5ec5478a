//! Per-request state: what the selection decided ([`Selected`]), and what
//! the request is ([`Route`]), each variant carrying only its own state.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Instant;

use bytes::Bytes;
use prometheus::{Histogram, IntCounter};
use stamp_model::ticket::{Hash, Stage, TicketKey};
use stamp_model::ModuleRef;

use crate::badge::Stale;
use crate::decode::Decoder;
use crate::extmap::MapFetch;
use crate::metrics;
use crate::pagecache::{Entry, Fill, PageKey};
use crate::rewrite::PageRewriter;
use crate::select::View;
use crate::snapshot::Effective;

/// Which variant of a page a request gets.
#[derive(Debug, Clone)]
pub enum Variant {
    Ticket {
        key: TicketKey,
        view: View,
        stage: Stage,
        /// The ticket's own modules in this view (the overlay's not counted).
        own: Arc<stamp_model::ticket::OverrideSet>,
    },
    /// Production with released tickets' overrides.
    Overlay,
}

/// The overrides a request's pages get, and for whom.
#[derive(Debug, Clone)]
pub struct PagePlan {
    pub effective: Arc<Effective>,
    pub variant: Variant,
}

/// A link's selection that could not be served: the ticket, the view it
/// asked for, and why (for the notice on the production page).
pub type Notice = (TicketKey, View, Stale);

/// What the selection decided, whatever the request turns out to be.
#[derive(Debug, Default)]
pub struct Selected {
    pub plan: Option<PagePlan>,
    /// `Set-Cookie`s to send (select, or clear every copy).
    pub set_cookie: Vec<String>,
    /// Value of the `x-ticket-stamp` header.
    pub info: Option<String>,
    /// The selection named a ticket that cannot be served: the production
    /// page says so.
    pub notice: Option<Notice>,
    /// A navigation to a protected preview by someone not signed in: sent
    /// to sign in first (the `Location`).
    pub sign_in: Option<String>,
    /// A ticket link opened from another site: asked about first.
    pub confirm: Option<super::confirm::Confirm>,
    /// A ticket link a service worker answered waits to be asked about
    /// (`select::PENDING_COOKIE`): the app's worker is set aside meanwhile.
    pub pending: bool,
    /// A production visitor while tickets roll out: their side of each.
    pub rollout: Option<Sides>,
    /// The response changes what this browser is on (a ticket selected
    /// that it was not on, or the selection cleared): pages the browser
    /// fetched ahead for its tabs (speculation rules) are dropped with it
    /// (`select::SPECULATION_CLEARED`).
    pub switches: bool,
    /// The change puts a browser on a ticket: its cookie lands with this
    /// answer ([`crate::select::cookie_lands`]: a page opened, a request
    /// of the origin's own, one a ticket page's `Referer` selects). What the
    /// browser kept of production (pages a link would show without asking,
    /// files a worker would import) must not stand for the ticket's, so its
    /// HTTP cache for the origin is cleared ([`super::selection_headers`]).
    pub enters: bool,
    /// This request's URL names a ticket (`?dev=KEY`, `?qa=KEY`) or leaves
    /// one (`?stamp=off`): whatever it is answered, no cache keeps it (see
    /// `service::not_kept`).
    pub from_url: bool,
    /// The change comes from this request's own URL (a ticket link,
    /// `?stamp=off`), not from a cookie found stale: an app that follows
    /// links inside its page (Turbo, htmx) must load it as a page instead.
    pub linked: bool,
}

/// A production visitor's side of each ticket rolling out.
#[derive(Debug, Clone, Default)]
pub struct Sides {
    pub sides: Vec<(TicketKey, stamp_model::views::Side)>,
    /// This page view carries the probe (sampled for the rollouts' signal).
    pub sampled: bool,
}

impl Selected {
    /// Whether a ticket's view (not the released overlay) is selected.
    pub fn dev_or_qa(&self) -> bool {
        matches!(
            self.plan,
            Some(PagePlan {
                variant: Variant::Ticket { .. },
                ..
            })
        )
    }

    /// The ticket a dev-view selection names (live reload follows it).
    pub fn dev_ticket(&self) -> Option<&TicketKey> {
        match &self.plan {
            Some(PagePlan {
                variant:
                    Variant::Ticket {
                        key,
                        view: View::Dev,
                        ..
                    },
                ..
            }) => Some(key),
            _ => None,
        }
    }
}

/// What a request is.
pub enum Route {
    /// Forwarded unchanged (a selection may still add its cookie and the
    /// info header).
    Passthrough,
    /// `/__stamp/…`: health, metrics, or the control plane.
    Internal,
    /// A dev page's live-reload stream.
    Live,
    /// `POST /__stamp/report`: what a page ran, from its probe.
    Report,
    /// `/__stamp/probe/…`: the probe's script, for pages that load it.
    Probe,
    /// `/__stamp/leave`: the badge's exit (the selection's cookies cleared).
    Leave,
    /// The app's service worker script, asked for by a browser on a
    /// ticket: answered with a pass-through worker of ours (see `probe`).
    SetAside,
    /// `?__ts=`: a ticket module body by its hash (`Err` when malformed),
    /// or, for a hot reload, the live dev view's body at the path.
    Module {
        hash: Result<Hash, ()>,
        hot: Option<ModuleRef>,
    },
    /// A ticket file the variant has at this very path: answered in place
    /// of the origin's 404 (a chunk or stylesheet the ticket's build made).
    File(Box<FileState>),
    /// Under a mirror path: a ticket file, else a redirect to the other
    /// origin.
    Mirror(Option<ModuleRef>),
    /// A file of the variant's, asked for at its very path where no import
    /// map reaches: a worker's script or one of its imports, or a file a
    /// ticket page reads with `fetch()` or XHR (a JSON file, a `.wasm`). The
    /// ticket's file is answered at production's URL, never to be stored
    /// (`private, no-store, Vary: *`), with the probe's marker.
    Unmapped(ModuleRef),
    /// An external import map, fetched where production serves it and merged.
    Map(Option<Mutex<MapFetch>>),
    /// An HTML page that may be stamped (or get a notice).
    Page(Box<PageState>),
}

pub struct FileState {
    pub file: ModuleRef,
    /// The ticket's body, once the origin answered 404.
    pub body: Option<Bytes>,
}

/// A page's state, from the cache lookup to the end of its rewrite.
#[derive(Default)]
pub struct PageState {
    /// Its key in the stamped-page cache, with the snapshot version.
    pub key: Option<(PageKey, u64)>,
    /// The stored page, revalidated with the origin.
    pub cached: Option<Arc<Entry>>,
    /// The page being stamped, kept once complete.
    pub fill: Option<Fill>,
    pub rewrite: Option<Mutex<ActiveRewrite>>,
}

pub struct ActiveRewrite {
    pub decoder: Option<Decoder>,
    pub rewriter: PageRewriter,
    /// The nonce made up for this page (used or not).
    pub nonce: String,
}

/// Per-request state.
pub struct Ctx {
    /// Counts the request as in flight; `None` for an endless stream.
    pub in_flight: Option<InFlight>,
    pub started: Instant,
    pub secure: bool,
    pub sel: Selected,
    pub route: Route,
    /// The configuration this request is served with, start to end.
    pub settings: Arc<super::Settings>,
    /// Names the request in log lines: the id a trusted proxy in front
    /// gave it (`X-Request-Id`), else one of our own.
    pub id: RequestId,
    /// Bytes of a body made here (a rewritten page, a merged map) sent so
    /// far; of a worker's script that takes the reporter, the origin's
    /// bytes passed so far.
    pub body_out: usize,
    /// A worker's script, as a browser on a ticket gets it: the probe's
    /// worker reporter goes after it (`probe::WORKER_REPORTER`). Set by the
    /// plan; production's script keeps it only if it comes whole and plain
    /// (a `200` of JavaScript, not encoded).
    pub worker_reporter: bool,
}

/// A request's id in log lines.
#[derive(Debug, Clone)]
pub enum RequestId {
    Ours(u64),
    Given(Box<str>),
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestId::Ours(n) => write!(f, "{n:016x}"),
            RequestId::Given(s) => f.write_str(s),
        }
    }
}

impl RequestId {
    /// What a trusted proxy's `X-Request-Id` may be: 1 to 128 of
    /// `[A-Za-z0-9._:-]` (a UUID, a trace id); anything else is replaced.
    pub fn given(value: &[u8]) -> Option<RequestId> {
        let ok = !value.is_empty()
            && value.len() <= 128
            && value
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(b));
        ok.then(|| RequestId::Given(String::from_utf8_lossy(value).into()))
    }
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("kind", &self.kind())
            .field("plan", &self.sel.plan.as_ref().map(|p| &p.variant))
            .finish()
    }
}

impl Ctx {
    pub fn new(in_flight: &Arc<AtomicUsize>, settings: Arc<super::Settings>) -> Ctx {
        Ctx {
            in_flight: Some(InFlight::new(in_flight)),
            started: Instant::now(),
            secure: settings.cfg.tls,
            settings,
            id: RequestId::Ours(rand::random()),
            body_out: 0,
            worker_reporter: false,
            sel: Selected::default(),
            route: Route::Passthrough,
        }
    }

    /// The request's metrics label.
    pub fn kind(&self) -> Kind {
        match &self.route {
            Route::Passthrough | Route::Page(_) => match self.sel.plan.as_ref().map(|p| &p.variant)
            {
                Some(Variant::Ticket { .. }) => Kind::Ticket,
                Some(Variant::Overlay) => Kind::Overlay,
                None => Kind::Passthrough,
            },
            Route::Internal | Route::Report | Route::Probe | Route::Leave | Route::SetAside => {
                Kind::Internal
            }
            Route::Live => Kind::Live,
            Route::Module { .. } => Kind::Module,
            Route::File(_) => Kind::File,
            Route::Mirror(_) | Route::Unmapped(_) => Kind::Mirror,
            Route::Map(_) => Kind::Map,
        }
    }

    /// The page's state, when the request is a page.
    pub fn page(&mut self) -> Option<&mut PageState> {
        match &mut self.route {
            Route::Page(p) => Some(p),
            _ => None,
        }
    }

    /// How a ticket file is answered at its plain path: it depends on the
    /// selection. A ticket's own is stored by no cache at all (the HTTP
    /// cache, a service worker's Cache Storage) under production's URL; the
    /// released overlay is production for everyone, revalidated each time.
    pub fn plain(&self) -> crate::modules::Plain {
        match self.sel.plan.as_ref().map(|p| &p.variant) {
            // Production pages carry no probe to tell.
            Some(Variant::Overlay) => crate::modules::Plain {
                cache_control: "no-cache",
                vary: Some("Cookie"),
                worker_reporter: false,
            },
            _ => crate::modules::Plain {
                cache_control: "private, no-store",
                vary: Some("*"),
                worker_reporter: self.worker_reporter,
            },
        }
    }
}

/// Counts a request as in flight for as long as its context lives.
pub struct InFlight(Arc<AtomicUsize>);

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

/// What kind of request this was (a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Passthrough,
    Ticket,
    Overlay,
    Module,
    /// A ticket file asked for by its plain path.
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
    pub fn metrics(self) -> &'static (IntCounter, Histogram) {
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

    pub fn label(self) -> &'static str {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{Kind, RequestId};

    #[test]
    fn a_given_request_id_is_taken_only_when_plain_and_short() {
        for ok in ["4bf92f3577b34da6", "trace-1.2:3_4", "a"] {
            let id = RequestId::given(ok.as_bytes()).unwrap();
            assert_eq!(id.to_string(), ok);
        }
        let long = "x".repeat(129);
        for hostile in [
            "",
            "a b",
            "id\nlevel=ERROR forged",
            "id\"}{\"level\":\"ERROR",
            "<script>",
            "\u{202e}abc",
            "id\r",
            long.as_str(),
        ] {
            assert!(
                RequestId::given(hostile.as_bytes()).is_none(),
                "{hostile:?}"
            );
        }
        assert!(RequestId::given(&[0xff, 0x41]).is_none());
        assert_eq!(RequestId::Ours(0xab).to_string(), "00000000000000ab");
    }

    #[test]
    fn every_kind_has_its_own_metrics_slot() {
        for (i, k) in Kind::ALL.iter().enumerate() {
            assert_eq!(k.index(), i, "{k:?}");
        }
    }
}
