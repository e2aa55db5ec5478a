//! The streaming page rewriter: lol_html handlers that merge the overrides
//! into the page's inline import map (or insert one before the first module
//! script), and point module entry points the map cannot reach
//! (`<script type=module src>`, `<link rel=modulepreload href>`) at the
//! ticket's versions.
//!
//! Only the import map's own text is buffered (bounded); everything else flows
//! through chunk by chunk. If lol_html runs out of its memory budget (a giant
//! tag), it bails out gracefully: the bytes it holds are flushed unchanged and
//! the rest of the page passes through untouched.
//!
//! Early exit: a stamp changes a few hundred bytes, nearly always before
//! `<body>`. Once lol_html has read the `<body>` start tag and nothing it
//! holds can still change (no map open, no `<template>`, the probe in, the
//! badge's outcome settled), it is ended there and `skim`, a tokenizer
//! with lol_html's own states, forwards the rest untouched, handing each
//! later script, link or meta policy (and its text) to a fresh lol_html with
//! the same handlers and page state. Every hand-over happens right after a
//! tag lol_html itself reports ending at that byte, so the fresh rewriter
//! starts where the whole-page one would be: in the data state, in the HTML
//! namespace (no `<svg>` or `<math>` read before), with no end tag handler
//! that can still act. Anything else (SVG, templates, doctypes, a
//! `<plaintext>`) is read by lol_html to the end of the page. And bytes in
//! which nothing could be handed over are not even tokenized: see `leap`.
//! Tested against the whole-page rewriter, byte for byte, on arbitrary
//! pages and chunk splits (`early_exit_matches_the_full_rewriter`, the fuzz
//! target `rewriter_early_exit`).

#[cfg(test)]
mod differential;
mod leap;

/// Where the first start (see `leap`) in `hay` is: the search that decides
/// which bytes after `<body>` are forwarded unread.
#[cfg(feature = "testing")]
pub fn find_start(hay: &[u8]) -> Option<usize> {
    leap::find(hay)
}
mod memo;
mod skim;

use std::borrow::Cow;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};

use lol_html::html_content::{ContentType, EndTag, TextChunk};
use lol_html::send::Element;
use lol_html::send::{HtmlRewriter, Settings};
use lol_html::{
    bail_out, AsciiCompatibleEncoding, ElementContentHandlers, MemorySettings, OutputSink, Selector,
};
use url::Url;

use crate::effective::Effective;

/// The `type`s of inline import maps the proxy merges into.
pub const MAP_TYPES: [&str; 4] = [
    "importmap",
    "importmap-shim",
    "systemjs-importmap",
    "injector-importmap",
];

/// The `type`s of import maps that may be external (`src`): those of
/// SystemJS, es-module-shims and import-map-injector. Browsers' native maps
/// cannot be.
pub const EXTERNAL_MAP_TYPES: [&str; 3] =
    ["importmap-shim", "systemjs-importmap", "injector-importmap"];

/// Selectors are parsed once per process, not once per page: on a small page
/// parsing them cost as much as parsing the page. Every page variant shares
/// them (the handlers, which hold the page's state, are per page).
fn selector(text: &str) -> Selector {
    text.parse()
        .unwrap_or_else(|e| panic!("built-in selector {text:?} does not parse: {e}"))
}

/// Every `<script>` and every `<link>` go to one handler each, which tells
/// maps, external maps, entry points, preloads and stylesheets apart by their
/// attributes: each selector lol_html matches costs on every element of the
/// page, so seven narrow selectors cost more than two wide ones.
const HTML_NS: &str = "http://www.w3.org/1999/xhtml";
static SCRIPT_SELECTOR: LazyLock<Selector> = LazyLock::new(|| selector("script"));
/// Scripts whose text may be a map the proxy merges: only their text goes
/// to a handler. lol_html decodes and encodes again the text of every
/// element a text handler is on, which would change a byte the page's
/// charset has no character for in any other script.
static MAP_SCRIPT_SELECTOR: LazyLock<Selector> = LazyLock::new(|| {
    let list: Vec<String> = MAP_TYPES
        .iter()
        .map(|t| format!("script[type=\"{t}\" i]"))
        .collect();
    selector(&list.join(", "))
});
static LINK_SELECTOR: LazyLock<Selector> = LazyLock::new(|| selector("link"));
static BODY_SELECTOR: LazyLock<Selector> = LazyLock::new(|| selector("body"));
static TEMPLATE_SELECTOR: LazyLock<Selector> = LazyLock::new(|| selector("template"));
static META_SELECTOR: LazyLock<Selector> = LazyLock::new(|| selector("meta"));
static HEAD_SELECTOR: LazyLock<Selector> = LazyLock::new(|| selector("head"));
static HEAD_FIRST_SELECTOR: LazyLock<Selector> = LazyLock::new(|| selector("head > *:first-child"));
static BASE_SELECTOR: LazyLock<Selector> = LazyLock::new(|| selector("base"));

/// What the rewriter needs to know before the first byte.
#[derive(Debug, Clone)]
pub struct RewriteSpec {
    pub effective: Arc<Effective>,
    /// The page's URL, to resolve relative specifiers and `src`s.
    pub page_url: Arc<Url>,
    /// The nonce for the map element (from the CSP plan).
    pub nonce: Option<String>,
    /// The nonce made up for this response (`csp::fresh_nonce`), when it is
    /// the only one the rewrite writes: `nonce` is it or none, and so is a
    /// meta policy's. A remembered head's output, which carries the nonce
    /// of the view that kept it, takes this one instead (see `memo`).
    /// `None` when the map carries the page's own nonce: such a head is
    /// never kept.
    pub fresh: Option<String>,
    pub max_map_bytes: usize,
    pub memory_limit_bytes: usize,
    /// A ticket page's probe (what the page ran, measured in the browser,
    /// and the badge that shows it), inserted at the start of `<head>`.
    pub probe: Option<ProbeSpec>,
    /// Live reload: the `/__stamp/live?…` URL a dev page listens to, when
    /// the page was opened with `stamp_live=1`.
    pub live: Option<String>,
    /// What a `<meta http-equiv="Content-Security-Policy">` policy of the
    /// page is given so that the proxy's elements pass it too; `None` when
    /// the elements' nonces are the page's own (adding those to a policy that
    /// lacks them would let the page's scripts through).
    pub meta_csp: Option<MetaCsp>,
    /// Other origins whose external import maps may be fetched and merged.
    pub asset_origins: Arc<[String]>,
    /// The source lists of the page's enforced `base-uri` directives, one
    /// per policy that has one (none: no policy restricts `<base href>`).
    pub base_uri: Vec<Vec<String>>,
    /// The charset the page's `Content-Type` names. `None`: it names none
    /// the browser knows, and the page's `<meta charset>` decides, else
    /// windows-1252, which maps every byte to a character and back, so a
    /// page in another charset goes through byte for byte (lol_html writes
    /// the text it read in the charset it read it in).
    pub encoding: Option<&'static encoding_rs::Encoding>,
    /// A production page for a link that selects nothing any more: only this
    /// notice (ready markup) is added at the end of `<body>`; nothing else
    /// of the page is looked at or changed.
    pub notice: Option<String>,
}

/// What a ticket page's probe is told (see `probe`).
#[derive(Debug, Clone)]
pub struct ProbeSpec {
    /// The ticket the page shows (a production page's: the first ticket
    /// rolling out).
    pub key: stamp_model::ticket::TicketKey,
    /// `dev`, `qa`, or `prod` for a production page.
    pub view: &'static str,
    pub stage: stamp_model::ticket::Stage,
    /// The ticket's own modules in this view.
    pub own: Arc<stamp_model::ticket::OverrideSet>,
    /// Whether it shows the badge.
    pub badge: bool,
    /// Whom the page reports to, and on which side: a ticket page to its
    /// ticket; a sampled production page to each ticket rolling out.
    pub reports: Vec<(stamp_model::ticket::TicketKey, stamp_model::views::Side)>,
    /// For a sampled page, what tells it loaded each of those tickets'
    /// files (one per report; none on a ticket page).
    pub touch: Vec<Arc<stamp_model::rollout::Touch>>,
    /// Whether the page may load the probe's script from the proxy rather
    /// than carry it: its response has no Content-Security-Policy of
    /// either kind. (A `<base>` or a meta policy before the probe keeps it
    /// inline as well.)
    pub external: bool,
}

/// The proxy's elements as a meta policy must allow them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaCsp {
    /// The map element's nonce (fresh, only it carries it).
    pub script_nonce: String,
    /// The hash source of the variant's map as inserted into a page
    /// without one (a map with a page's entry added differs, and is
    /// allowed by the nonce).
    pub script_hash: String,
    /// The notice's style nonce and hash, when there is a notice.
    pub style: Option<(String, String)>,
}

/// What happened to a page, for logs and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub maps_merged: u32,
    /// External maps pointed at their merged variant.
    pub external_maps: u32,
    pub map_inserted: bool,
    pub entries_rewritten: u32,
    /// Why an existing map was left unchanged (invalid JSON, too large,
    /// a `<base href>` on another origin).
    pub map_left: Option<String>,
    /// The page's `<base href>` stopped stamping (on another origin, or one
    /// the proxy cannot be sure of): nothing after it was stamped (see
    /// `State::base_stops_stamping`).
    pub base_elsewhere: bool,
    pub bailed_out: bool,
    /// The page starts with a UTF-16 byte order mark, which the browser
    /// follows whatever the headers say: lol_html cannot read it, so it
    /// went out unchanged.
    pub utf16: bool,
    /// lol_html failed on the page (an internal error, not its memory
    /// budget): what it had not emitted of that chunk is lost, as before
    /// early exit. Seen on malformed SVG and MathML, and on a self-closing
    /// `<title/x=y>` followed by text that looks like a tag
    /// (`<title/.=><script </script>`, found by fuzzing).
    pub failed: bool,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl Report {
    /// Why the page got none of the ticket's code, if it got none: the
    /// map left unchanged, or nothing on the page the overrides reach.
    pub fn nothing_applied(&self) -> Option<String> {
        let applied = self.maps_merged > 0
            || self.external_maps > 0
            || self.map_inserted
            || self.entries_rewritten > 0;
        if applied {
            return None;
        }
        if self.utf16 {
            return Some("the page is UTF-16, which the rewriter cannot read".to_string());
        }
        Some(self.map_left.clone().unwrap_or_else(|| {
            "this page has no import map, module script or file the ticket replaces".to_string()
        }))
    }

    /// A short outcome label for metrics.
    pub fn outcome(&self) -> &'static str {
        if self.bailed_out {
            "bailed-out"
        } else if self.utf16 {
            "unreadable"
        } else if self.base_elsewhere {
            "base-elsewhere"
        } else if let Some(reason) = &self.map_left {
            if reason.contains("larger") {
                "map-too-large"
            } else {
                "map-invalid"
            }
        } else if self.maps_merged > 0 || self.external_maps > 0 {
            "merged"
        } else if self.map_inserted {
            "inserted"
        } else if self.entries_rewritten > 0 {
            "entries-only"
        } else {
            "untouched"
        }
    }
}

#[derive(Debug, Clone)]
struct State {
    spec: RewriteSpec,
    /// The charset lol_html is told: the declared one, or UTF-8 after a
    /// UTF-8 byte order mark (which the browser follows before any header).
    encoding: Option<&'static encoding_rs::Encoding>,
    /// An inline map has been seen (so none must be inserted).
    map_seen: bool,
    /// A module script or modulepreload has been seen.
    module_seen: bool,
    inserted: bool,
    badge_done: bool,
    /// The probe has been inserted.
    probe_done: bool,
    /// Text of the map being read (its pieces are removed from the output and
    /// re-emitted, merged, at its end tag).
    buf: String,
    in_map: bool,
    /// Elements of a map's type lol_html holds open (their end tag handler
    /// has not run). lol_html decodes and encodes again every text inside
    /// one, as its text handler is on them; an element a quirk left open
    /// (`<script type=importmap a=>`) covers the rest of the page, so
    /// lol_html, not the tokenizer, must read it.
    map_elements_open: usize,
    /// How ticket URLs are written into the map being read.
    map_urls: crate::importmap::Urls,
    /// The map outgrew the bound: its text was put back and flows unchanged.
    overflowed: bool,
    /// A `<meta>` policy was seen and given the proxy's nonces.
    meta_seen: bool,
    /// Inside this many `<template>`s: inert markup, never stamped.
    template_depth: u32,
    /// The map types (lowercase) of which a map already carries the
    /// proxy's own keys (see `importmap::MergeAs`): each loader reads its
    /// own type, and its later maps only get their entries rewritten.
    keys_placed: Vec<String>,
    /// The type of the inline map being read.
    map_type: String,
    /// Maps started so far: which one an end tag handler belongs to.
    maps_started: u64,
    /// The ticket's modules that production loads from another origin
    /// than the one they were uploaded for: location → production's URL.
    elsewhere: std::collections::BTreeMap<String, String>,
    /// A `<body>` start tag has been read: maps after it no longer add to
    /// `elsewhere`, so the badge's outcome is settled by then (and early
    /// exit cannot change it).
    body_seen: bool,
    /// Where (in the current lol_html's input) the last start tag of a
    /// `<body>`, `<link>` or meta policy, or a script's end tag in an
    /// island, ended: early exit cuts only right there.
    tag_end: Option<usize>,
    /// lol_html reads single constructs after `<body>`: record where a
    /// script's end tag ends.
    island: bool,
    /// The URL the page's relative URLs resolve against, once its first
    /// `<base href>` was read (HTML's frozen base URL); before, the page's
    /// own URL.
    base: Option<Url>,
    /// The first `<base>` with an `href` was read: later ones change nothing.
    base_frozen: bool,
    /// Why nothing after the page's `<base href>` can be stamped: it is on
    /// another origin, or the proxy cannot tell what it resolves to.
    base_stop: Option<String>,
    report: Report,
}

impl State {
    /// A page's state before its first byte.
    fn new(spec: RewriteSpec) -> State {
        State {
            encoding: spec.encoding,
            spec,
            map_seen: false,
            module_seen: false,
            inserted: false,
            badge_done: false,
            probe_done: false,
            buf: String::new(),
            in_map: false,
            map_elements_open: 0,
            map_urls: crate::importmap::Urls::Paths,
            overflowed: false,
            meta_seen: false,
            template_depth: 0,
            keys_placed: Vec::new(),
            map_type: String::new(),
            maps_started: 0,
            elsewhere: Default::default(),
            body_seen: false,
            tag_end: None,
            island: false,
            base: None,
            base_frozen: false,
            base_stop: None,
            report: Report::default(),
        }
    }

    /// What a relative URL read here resolves against, as the browser
    /// resolves it: the `<base href>` read so far, else the page's URL.
    /// Only a base on the page's origin is ever used to stamp (see
    /// [`State::base_stops_stamping`]), so an absolute path still names a file
    /// the proxy serves.
    fn base(&self) -> &Url {
        self.base.as_ref().unwrap_or(&self.spec.page_url)
    }

    /// Whether the page's `<base href>` stops stamping from here: on
    /// another origin, its relative URLs and the absolute paths the
    /// ticket's URLs are written as resolve there, not on this proxy; or
    /// the proxy cannot tell what it resolves to. Nothing after it is then
    /// stamped, and the report says why (the badge shows it), rather than
    /// pointing the page at files that may not be the ones it loads.
    fn base_stops_stamping(&mut self) -> bool {
        let Some(reason) = &self.base_stop else {
            return false;
        };
        if !self.report.base_elsewhere {
            let reason = format!("{reason}, so nothing after it was stamped");
            log::warn!("{}: {reason}", self.spec.page_url);
            self.report.base_elsewhere = true;
            self.report.map_left = Some(reason);
        }
        true
    }

    /// The map element's nonce: the header plan's, else ours once a
    /// `<meta>` policy asked for one.
    fn map_nonce(&self) -> Option<String> {
        self.spec.nonce.clone().or_else(|| {
            self.spec
                .meta_csp
                .as_ref()
                .filter(|_| self.meta_seen)
                .map(|m| m.script_nonce.clone())
        })
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A handler never panics while holding the lock; if one did, the state is
    // still the best information there is.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Collects the rewriter's output until the body filter takes it.
#[derive(Debug, Clone, Default)]
struct Sink(Arc<Mutex<Out>>);

/// What is ready to send.
#[derive(Debug, Default)]
struct Out {
    bytes: Vec<u8>,
    /// How many of the next bytes written already went out (kept bytes
    /// read late: see `leap`): dropped.
    sent: usize,
}

impl Out {
    fn push(&mut self, bytes: &[u8]) {
        let drop = self.sent.min(bytes.len());
        self.sent -= drop;
        self.bytes.extend_from_slice(&bytes[drop..]);
    }
}

impl Sink {
    fn lock(&self) -> MutexGuard<'_, Out> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// lol_html gave up holding bytes that already went out: no later byte
    /// stands for them.
    fn lost(&self) {
        self.lock().sent = 0;
    }
}

impl OutputSink for Sink {
    fn handle_chunk(&mut self, chunk: &[u8]) {
        self.lock().push(chunk);
    }
}

/// One page's rewriter. `Send` (kept in the request context behind a Mutex).
pub struct PageRewriter {
    /// The page's first bytes while they may still begin a byte order mark
    /// (`None` once the charset is settled).
    lead: Option<Vec<u8>>,
    /// The lol_html reading the page now: none while the tokenizer
    /// forwards, or after lol_html gave up.
    rewriter: Option<HtmlRewriter<'static, Sink>>,
    /// lol_html is not built yet: it is when first fed (see [`Unbuilt`]).
    unbuilt: Option<Unbuilt>,
    /// The page's first bytes and what went out for them, while they may
    /// become a head to remember (see `memo`).
    recording: Option<Recording>,
    /// A remembered head's bytes, counted in `fed` but not read (until
    /// lol_html is built after it).
    unread_head: usize,
    /// The page began with a remembered head.
    remembered: bool,
    /// Bytes given to the current lol_html.
    fed: usize,
    phase: Phase,
    out: Sink,
    state: Arc<Mutex<State>>,
    /// The chunk [`PageRewriter::write_bytes`] is reading: forwarded whole,
    /// it goes out as it came, without a copy.
    whole: Option<bytes::Bytes>,
    /// The tokenizer forwarded all of `whole`, and nothing else came out.
    whole_out: bool,
    /// Bytes after `<body>` forwarded unread (see `leap`).
    kept: leap::Kept,
    /// The kept bytes are being read.
    reading_kept: bool,
    /// Bytes forwarded unread and never read after (see `leap`).
    leapt: u64,
}

/// Why lol_html is not built yet.
enum Unbuilt {
    /// Nothing was read yet.
    Fresh,
    /// The page began with this remembered head: lol_html is given it
    /// first (its output dropped, the page state kept as it is).
    After(Arc<memo::Head>),
}

/// A page's first bytes (as they came: shared, not copied), and what
/// went out for them (see `memo`).
#[derive(Default)]
struct Recording {
    input: Vec<bytes::Bytes>,
    len: usize,
    output: Vec<u8>,
}

/// Who reads the page at this point (see the module's doc on early exit).
#[derive(Debug)]
enum Phase {
    /// lol_html, from the first byte, until just after `<body …>`.
    Head(Watch),
    /// lol_html to the end of the page (or, after it gave up, nobody).
    Full,
    /// The tokenizer forwards; `held` starts a construct it has not seen
    /// whole yet (not forwarded).
    Skim { skim: skim::Skim, held: Vec<u8> },
    /// lol_html reads a script after `<body>`, to its end tag; `tail`:
    /// what may begin that end tag (given to lol_html, kept to look at).
    Script { tail: Vec<u8>, skim: skim::Skim },
}

/// What the first lol_html's input has shown so far.
#[derive(Debug, Default)]
struct Watch {
    /// The last bytes given to it, to see a `<body` across chunks.
    tail: Vec<u8>,
    /// `<svg` or `<math` came (maybe only as text): the namespace is not
    /// known, so lol_html reads on.
    foreign: bool,
    /// After a `<body`: how many more `>` may end its start tag.
    armed: u32,
}

impl std::fmt::Debug for PageRewriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageRewriter")
            .field("active", &self.reading())
            .field("phase", &self.phase)
            .finish()
    }
}

/// The handlers that stamp a page (map, entries, meta policy), registered
/// unless the page only gets a notice.
fn stamping_handlers(
    mut settings: Settings<'static, 'static>,
    state: &Arc<Mutex<State>>,
) -> Settings<'static, 'static> {
    // The probe goes first in `<head>`, before any of the page's scripts, so
    // it sees every load and error. On a page whose headers name no charset,
    // the browser looks for a `<meta charset>` in its first 1024 bytes
    // (Firefox reloads a page whose declaration comes later): the probe goes
    // after a `<meta charset>` that is the head's first element, else before
    // that element.
    let (probe, undeclared) = {
        let st = lock(state);
        (st.spec.probe.is_some(), st.spec.encoding.is_none())
    };
    if probe && !undeclared {
        let s = state.clone();
        settings = settings.append_element_content_handler((
            Cow::Borrowed(&*HEAD_SELECTOR),
            ElementContentHandlers::default().element(move |el: &mut Element<'_, '_>| {
                if let Some(html) = take_probe(&s) {
                    el.prepend(&html, ContentType::Html);
                }
                Ok(())
            }),
        ));
    } else if probe {
        let s = state.clone();
        settings = settings.append_element_content_handler((
            Cow::Borrowed(&*HEAD_SELECTOR),
            ElementContentHandlers::default().element(move |el: &mut Element<'_, '_>| {
                // A head with no element in it: the probe goes at its end.
                if let Some(handlers) = el.end_tag_handlers() {
                    let s = s.clone();
                    handlers.push(Box::new(move |end: &mut EndTag<'_>| {
                        if let Some(html) = take_probe(&s) {
                            end.before(&html, ContentType::Html);
                        }
                        Ok(())
                    }));
                }
                Ok(())
            }),
        ));
        let s = state.clone();
        settings = settings.append_element_content_handler((
            Cow::Borrowed(&*HEAD_FIRST_SELECTOR),
            ElementContentHandlers::default().element(move |el: &mut Element<'_, '_>| {
                let declares = el.tag_name().eq_ignore_ascii_case("meta")
                    && (el.has_attribute("charset")
                        || el
                            .get_attribute("http-equiv")
                            .is_some_and(|h| h.trim().eq_ignore_ascii_case("content-type")));
                if declares
                    && el
                        .get_attribute("http-equiv")
                        .is_some_and(|h| h.trim().eq_ignore_ascii_case("content-security-policy"))
                {
                    // `<meta charset http-equiv=Content-Security-Policy>`:
                    // a policy the probe goes after (its handler runs
                    // later, and gives it the same nonce).
                    lock(&s).meta_seen = true;
                }
                if let Some(html) = take_probe(&s) {
                    if declares {
                        el.after(&html, ContentType::Html);
                    } else {
                        el.before(&html, ContentType::Html);
                    }
                }
                Ok(())
            }),
        ));
    }
    // First, so that every other handler knows whether its element is
    // inert template content (a script there never runs).
    let s = state.clone();
    settings = settings.append_element_content_handler((
        Cow::Borrowed(&*TEMPLATE_SELECTOR),
        ElementContentHandlers::default()
            .element(move |el: &mut Element<'_, '_>| on_template(&s, el)),
    ));
    let s = state.clone();
    settings = settings.append_element_content_handler((
        Cow::Borrowed(&*BASE_SELECTOR),
        ElementContentHandlers::default().element(move |el: &mut Element<'_, '_>| on_base(&s, el)),
    ));
    let s = state.clone();
    settings = settings.append_element_content_handler((
        Cow::Borrowed(&*SCRIPT_SELECTOR),
        ElementContentHandlers::default()
            .element(move |el: &mut Element<'_, '_>| on_script(&s, el)),
    ));
    let t = state.clone();
    let s = state.clone();
    settings = settings.append_element_content_handler((
        Cow::Borrowed(&*MAP_SCRIPT_SELECTOR),
        ElementContentHandlers::default()
            .element(move |el: &mut Element<'_, '_>| {
                // Counted while lol_html holds it open (see
                // `map_elements_open`).
                if let Some(handlers) = el.end_tag_handlers() {
                    lock(&s).map_elements_open += 1;
                    let s = s.clone();
                    handlers.push(Box::new(move |_end: &mut EndTag<'_>| {
                        let mut st = lock(&s);
                        st.map_elements_open = st.map_elements_open.saturating_sub(1);
                        Ok(())
                    }));
                }
                Ok(())
            })
            .text(move |chunk: &mut TextChunk<'_>| on_map_text(&t, chunk)),
    ));
    let s = state.clone();
    settings = settings.append_element_content_handler((
        Cow::Borrowed(&*LINK_SELECTOR),
        ElementContentHandlers::default().element(move |el: &mut Element<'_, '_>| on_link(&s, el)),
    ));
    if state_has_meta(state) {
        let s = state.clone();
        settings = settings.append_element_content_handler((
            Cow::Borrowed(&*META_SELECTOR),
            ElementContentHandlers::default()
                .element(move |el: &mut Element<'_, '_>| on_meta_csp(&s, el)),
        ));
    }
    settings
}

/// The lol_html reading a page, or one construct of it after `<body>`: the
/// same handlers over the same page state every time.
fn lol_html(state: &Arc<Mutex<State>>, out: &Sink) -> HtmlRewriter<'static, Sink> {
    let (limit, declared) = {
        let st = lock(state);
        (st.spec.memory_limit_bytes, st.encoding)
    };
    let memory = MemorySettings::new()
        .with_max_allowed_memory_usage(limit)
        .with_graceful_bail_out_on_memory_limit_exceeded(true);
    // lol_html decodes the page's text and writes it out again in the same
    // charset: in the wrong one, every byte that is not text in it becomes
    // U+FFFD (a Shift_JIS title, a windows-1252 script). Undeclared, a
    // `<meta charset>` switches it, as in the browser.
    let encoding = declared
        .and_then(AsciiCompatibleEncoding::new)
        .or_else(|| AsciiCompatibleEncoding::new(encoding_rs::WINDOWS_1252))
        .unwrap_or_else(AsciiCompatibleEncoding::utf_8);
    let mut settings = Settings::new_send()
        .with_strict(false)
        .with_memory_settings(memory)
        .with_encoding(encoding)
        .with_adjust_charset_on_meta_tag(declared.is_none());
    let notice_only = {
        let st = lock(state);
        st.spec.notice.is_some() && st.spec.effective.overrides.is_empty()
    };
    if !notice_only {
        settings = stamping_handlers(settings, state);
    } else {
        // Does nothing, and keeps lol_html (3.0.3) whole: with no handler on
        // `script`, `<script a=><svg></svg>` makes it fail with an internal
        // error ("Tag should be a start tag at this point"), and the rest of
        // that chunk of the page would be lost.
        settings = settings.append_element_content_handler((
            Cow::Borrowed(&*SCRIPT_SELECTOR),
            ElementContentHandlers::default().element(|_el: &mut Element<'_, '_>| Ok(())),
        ));
    }
    let s = state.clone();
    settings = settings.append_element_content_handler((
        Cow::Borrowed(&*BODY_SELECTOR),
        ElementContentHandlers::default().element(move |el: &mut Element<'_, '_>| on_body(&s, el)),
    ));
    let s = state.clone();
    settings = settings.append_document_content_handler(
        lol_html::send::DocumentContentHandlers::default().end(
            move |end: &mut lol_html::html_content::DocumentEnd<'_>| {
                end.append(&document_end(&s), ContentType::Html);
                Ok(())
            },
        ),
    );
    let s = state.clone();
    settings = settings.append_bail_out_handler(bail_out!(move |err, bail| {
        let mut st = lock(&s);
        log::warn!("page rewrite bailed out, rest of the page unchanged: {err}");
        st.report.bailed_out = true;
        if st.in_map && !st.overflowed {
            // Put back the map text removed so far; the raw flush follows it.
            let text = std::mem::take(&mut st.buf);
            bail.append(&text, ContentType::Html);
        }
    }));
    HtmlRewriter::new(settings, out.clone())
}

/// What goes at the very end of a page.
fn document_end(state: &Arc<Mutex<State>>) -> String {
    let mut html = String::new();
    // A page without `<head>`, script, link or `<body>`.
    if let Some(probe) = take_probe(state) {
        html.push_str(&probe);
    }
    // A page without `</body>`: the end goes at its very end.
    if let Some(badge) = take_badge(state) {
        html.push_str(&badge);
    }
    html
}

/// Whether the current lol_html may be ended here, where a tag it read
/// ends, and the rest given to the tokenizer: no map open, no template,
/// the probe in, and nothing that an end tag handler (a `</body>`'s, that
/// this lol_html takes with it) could still add.
fn may_hand_over(st: &State) -> bool {
    let badge_settled = st.spec.live.is_none()
        && st.spec.notice.is_none()
        && (st.spec.probe.is_none()
            || (st.probe_done
                && st.body_seen
                && st.elsewhere.is_empty()
                && st.report.nothing_applied().is_none()));
    !st.report.bailed_out
        && st.template_depth == 0
        && !st.in_map
        && st.map_elements_open == 0
        && badge_settled
}

/// Whether `bytes` may still grow into a byte order mark (UTF-8's three
/// bytes, UTF-16's two): nothing, or a proper start of one.
fn may_begin_a_bom(bytes: &[u8]) -> bool {
    matches!(bytes, [] | [0xEF] | [0xEF, 0xBB] | [0xFE] | [0xFF])
}

/// Longest construct the tokenizer holds back (a start tag it has not
/// seen the end of); longer, lol_html reads the rest of the page.
const MAX_HELD: usize = 64 * 1024;

impl PageRewriter {
    /// A page's rewriter, with early exit (see the module's doc), that
    /// remembers heads (see `memo`).
    pub fn new(spec: RewriteSpec) -> PageRewriter {
        // The page's own nonce, fresh on every response of its origin, is
        // in the head's output: no later view could match it. One the
        // proxy made up is swapped for the next view's (see `memo`).
        let once = spec.nonce.is_some() && spec.nonce != spec.fresh;
        let mut r = PageRewriter::with_early_exit(spec, true);
        r.recording = (!once).then(Recording::default);
        r
    }

    /// `early_exit: false`: lol_html reads every byte (the reference the
    /// early exit is tested against). Remembers no head.
    pub fn with_early_exit(spec: RewriteSpec, early_exit: bool) -> PageRewriter {
        PageRewriter {
            lead: Some(Vec::new()),
            rewriter: None,
            unbuilt: Some(Unbuilt::Fresh),
            recording: None,
            unread_head: 0,
            remembered: false,
            fed: 0,
            whole: None,
            whole_out: false,
            kept: leap::Kept::default(),
            reading_kept: false,
            leapt: 0,
            phase: if early_exit {
                Phase::Head(Watch::default())
            } else {
                Phase::Full
            },
            out: Sink::default(),
            state: Arc::new(Mutex::new(State::new(spec))),
        }
    }

    /// Whether lol_html reads (or will, once built), rather than having
    /// given up.
    fn reading(&self) -> bool {
        self.rewriter.is_some() || self.unbuilt.is_some()
    }

    /// The lol_html reading the page, built now if it was not yet.
    fn lol_html(&mut self) -> Option<&mut HtmlRewriter<'static, Sink>> {
        match self.unbuilt.take() {
            None => {}
            Some(Unbuilt::Fresh) => self.rewriter = Some(lol_html(&self.state, &self.out)),
            Some(Unbuilt::After(head)) => self.build_after(&head),
        }
        self.rewriter.as_mut()
    }

    /// Builds lol_html where a remembered head left it: it reads the head
    /// from the page's first state, its output dropped (it went out), and
    /// the page state is then put back as it is now.
    fn build_after(&mut self, head: &memo::Head) {
        let now = {
            let mut st = lock(&self.state);
            let first = State::new(st.spec.clone());
            std::mem::replace(&mut *st, first)
        };
        let mut r = lol_html(&self.state, &self.out);
        let sent = std::mem::take(&mut *self.out.lock());
        let read = r.write(&head.input);
        *self.out.lock() = sent;
        *lock(&self.state) = now;
        self.unread_head = 0;
        match read {
            Ok(()) => self.rewriter = Some(r),
            // It read these bytes before without fault; if it cannot now,
            // the rest passes through, as after any failure.
            Err(e) => {
                log::warn!(
                    "page rewrite failed on a remembered head, rest of the page unchanged: {e}"
                );
                lock(&self.state).report.failed = true;
                self.phase = Phase::Full;
            }
        }
    }

    /// The page begins with a head remembered for its variant: what went
    /// out for it goes out, the page state is the one it left, and the
    /// tokenizer reads on from its end.
    fn resume_after(&mut self, head: Arc<memo::Head>) {
        {
            let mut st = lock(&self.state);
            let mut kept = head.state.clone();
            // The kept state's spec reads the same, but holds no variant:
            // the page keeps its own.
            std::mem::swap(&mut kept.spec, &mut st.spec);
            kept.report.bytes_in = st.report.bytes_in;
            kept.report.bytes_out = 0;
            *st = kept;
        }
        let fresh = lock(&self.state).spec.fresh.clone();
        self.out.lock().push(&head.output_for(fresh.as_deref()));
        self.lead = None;
        self.fed = head.input.len();
        self.unread_head = head.input.len();
        self.remembered = true;
        self.unbuilt = Some(Unbuilt::After(head));
        self.hand_over(None);
    }

    /// The head just read, kept for later views of the page (see `memo`).
    fn remember(&mut self) {
        let Some(mut rec) = self.recording.take() else {
            return;
        };
        let state = lock(&self.state).clone();
        // A meta policy's nonces are in the output: kept when they are the
        // response's made-up one, which a later view swaps for its own.
        let fresh = state.spec.fresh.as_ref();
        let once = state.meta_seen
            && state.spec.meta_csp.as_ref().is_some_and(|m| {
                Some(&m.script_nonce) != fresh
                    || m.style.as_ref().is_some_and(|(n, _)| Some(n) != fresh)
            });
        if rec.len < self.fed || once || state.report.failed {
            return;
        }
        let mut input = Vec::with_capacity(self.fed);
        for piece in &rec.input {
            let n = piece.len().min(self.fed - input.len());
            input.extend_from_slice(&piece[..n]);
        }
        if encoding_rs::Encoding::for_bom(&input).is_some() {
            return;
        }
        // The made-up nonce is found in the output by its text: a head that
        // holds that text itself (by chance: 144 random bits) is not kept.
        let made_up = state.spec.fresh.as_deref().filter(|n| !n.is_empty());
        if made_up.is_some_and(|n| memchr::memmem::find(&input, n.as_bytes()).is_some()) {
            return;
        }
        rec.output.extend_from_slice(&self.out.lock().bytes);
        rec.output.shrink_to_fit();
        memo::keep(memo::Head::new(input, rec.output, state));
    }

    /// Feeds one chunk; returns what is ready to send.
    pub fn write(&mut self, chunk: &[u8]) -> Vec<u8> {
        lock(&self.state).report.bytes_in += chunk.len() as u64;
        if let Some(rec) = self.recording.as_mut() {
            if rec.len == 0 && !chunk.is_empty() {
                // The page's first bytes: a head remembered for them?
                let found = memo::find(&lock(&self.state).spec, chunk);
                if let Some(head) = found {
                    self.recording = None;
                    let n = head.input.len();
                    // What goes out for this chunk: the head's output, then
                    // mostly the rest as it came. One allocation.
                    self.out
                        .lock()
                        .bytes
                        .reserve(head.output.len() + chunk.len() - n);
                    self.resume_after(head);
                    return self.write_read(&chunk[n..]);
                }
            }
            if rec.len >= memo::MAX_HEAD {
                self.recording = None;
            } else {
                let shared = self
                    .whole
                    .as_ref()
                    .filter(|w| w.as_ptr() == chunk.as_ptr() && w.len() == chunk.len());
                rec.input.push(match shared {
                    Some(w) => w.clone(),
                    None => bytes::Bytes::copy_from_slice(chunk),
                });
                rec.len += chunk.len();
            }
        }
        // The first bytes wait until they are known not to begin a byte
        // order mark, or to be one, however the page is split.
        let Some(held) = self.lead.as_mut() else {
            return self.write_read(chunk);
        };
        held.extend_from_slice(chunk);
        if may_begin_a_bom(held) {
            return Vec::new();
        }
        let lead = self.lead.take().unwrap_or_default();
        self.byte_order_mark(&lead);
        self.write_read(&lead)
    }

    /// [`PageRewriter::write`] for a shared chunk: after `<body>`, a chunk
    /// the tokenizer forwards whole (most of a long page) goes out as the
    /// same bytes, without a copy.
    pub fn write_bytes(&mut self, chunk: &bytes::Bytes) -> bytes::Bytes {
        self.whole = Some(chunk.clone());
        let out = self.write(chunk);
        self.whole = None;
        if std::mem::take(&mut self.whole_out) {
            debug_assert!(out.is_empty());
            self.count_out(chunk.len());
            return chunk.clone();
        }
        bytes::Bytes::from(out)
    }

    /// [`PageRewriter::write`] once the page's charset is settled.
    fn write_read(&mut self, chunk: &[u8]) -> Vec<u8> {
        if !self.kept.idle() {
            if self.leap_on(chunk) {
                return self.take();
            }
            // A start: what was forwarded unread is read first.
            self.read_kept();
        }
        self.read(chunk);
        self.take()
    }

    /// Forwards `chunk` unread, after bytes forwarded unread, if it holds no
    /// start (see `leap`): whether it did.
    fn leap_on(&mut self, chunk: &[u8]) -> bool {
        if !self.kept.edge.is_empty() {
            let mut look = self.kept.edge.clone();
            let need = leap::LONGEST.saturating_sub(look.len());
            look.extend_from_slice(&chunk[..chunk.len().min(need)]);
            match leap::edge(&look) {
                leap::Edge::Start => return false,
                leap::Edge::Open => {
                    // Fewer bytes came than it takes to tell.
                    self.kept.edge = look;
                    return true;
                }
                leap::Edge::Not => {
                    if !self.kept.room(self.kept.edge.len()) {
                        return false;
                    }
                    let edge = std::mem::take(&mut self.kept.edge);
                    self.pass(&edge, edge.len());
                }
            }
        }
        self.keep_run(chunk)
    }

    /// Forwards `rest` unread and keeps it if it holds no start, all but
    /// its last bytes that may begin one (they wait, unforwarded): whether
    /// it did.
    fn keep_run(&mut self, rest: &[u8]) -> bool {
        // A start whose tag would change nothing, wherever it stands, is
        // forwarded with the run: each start found is judged on its own,
        // so one read wrongly as a tag hides none that follows it.
        let mut from = 0;
        while let Some(at) = leap::find(&rest[from..]) {
            let lt = from + at;
            if !self.quiet(rest, lt) {
                return false;
            }
            from = lt + 1;
        }
        let n = rest.len() - leap::open_end(rest);
        if n > 0 {
            if !self.kept.room(n) {
                return false;
            }
            self.pass(rest, n);
        }
        self.kept.edge.extend_from_slice(&rest[n..]);
        true
    }

    /// Whether the start at `rest[lt]` (see `leap`) is quiet: read as a
    /// start tag in the data state, the handlers would change no byte of
    /// it and nothing they keep about the page that a later element or
    /// the report depends on. Then it needs no reading, whether it is a
    /// tag or text (in a comment, a value, a script's text): a real one
    /// changes nothing, and what it does to the reading's state matters
    /// only to a later start that is not quiet, which makes every kept
    /// byte be read from where the reading stopped, this one included.
    ///
    /// What the page state says is as of that stop; what it has not read
    /// can only add to it (a map seen, a module seen), so each test below
    /// holds for what it would say there too. Three things it cannot know
    /// are never relied on: whether a `<template>` or SVG holds the start
    /// (either makes the handlers do less), and the base URL, which a
    /// `<base>` it has not read could change: a `<base>` is a start (see
    /// `leap`), and whether the ticket replaces a file is asked of the
    /// file's name alone, which no base changes.
    fn quiet(&self, rest: &[u8], lt: usize) -> bool {
        let skim::Tag::Start {
            name,
            end,
            name_end,
            quirk: false,
            ..
        } = skim::tag(rest, lt)
        else {
            // Not a whole tag in this chunk, or one lol_html reads on from
            // oddly: read.
            return false;
        };
        let st = lock(&self.state);
        // Handlers that store what they see, or that could stop stamping.
        if st.in_map || st.base_stop.is_some() {
            return false;
        }
        let a = skim::Attrs::of(rest, name_end, end);
        match name {
            skim::Name::Script => quiet_script(&st, &a),
            skim::Name::Link => quiet_link(&st, &a),
            // A meta policy gets nonces (`on_meta_csp` compares the value
            // as it is, in any case); with no charset in the headers,
            // lol_html follows a `<meta charset>` wherever it is.
            skim::Name::Meta => {
                st.encoding.is_some()
                    && (st.spec.meta_csp.is_none()
                        || a.http_equiv.is_none_or(|h| {
                            h.is_ascii() && !h.eq_ignore_ascii_case(b"content-security-policy")
                        }))
            }
            // `<base>`: the first one sets what later URLs resolve against.
            // (`<plaintext>` is `Hard` too, but never a start.)
            skim::Name::Hard => st.base_frozen,
            // `<bar>`, `<basefont>`, `<menu>`, `<scope>`: no handler acts
            // on them.
            _ => true,
        }
    }

    /// Forwards `rest[..n]` unread and keeps it: shared with the chunk it
    /// is part of when that came as `Bytes` (then, the whole chunk with
    /// nothing before it goes out without a copy), else copied.
    fn pass(&mut self, rest: &[u8], n: usize) {
        let within = self.whole.as_ref().filter(|w| {
            let (w0, r0) = (w.as_ptr() as usize, rest.as_ptr() as usize);
            r0 >= w0 && r0 + rest.len() <= w0 + w.len()
        });
        self.leapt += n as u64;
        let kept = match within {
            Some(w) => w.slice_ref(&rest[..n]),
            None => bytes::Bytes::copy_from_slice(&rest[..n]),
        };
        let whole = within.is_some_and(|w| w.len() == n);
        let mut out = self.out.lock();
        if whole && out.bytes.is_empty() && out.sent == 0 {
            self.whole_out = true;
        } else {
            out.push(&rest[..n]);
        }
        drop(out);
        self.kept.keep(kept);
    }

    /// Reads what was forwarded unread, from where the reading stopped
    /// (what that sends of it is dropped: it went out as it came), then the
    /// bytes that waited, unforwarded (not as a new run to leap: they begin
    /// the start, or the tag the tokenizer holds until the next chunk).
    fn read_kept(&mut self) {
        let (chunks, len) = self.kept.take();
        self.leapt -= len as u64;
        let edge = std::mem::take(&mut self.kept.edge);
        self.out.lock().sent += len;
        self.reading_kept = true;
        for chunk in &chunks {
            self.read(chunk);
        }
        self.read(&edge);
        self.reading_kept = false;
        if !self.reading() {
            // lol_html failed on the way: every kept byte after that came
            // out as it was (and was dropped); what it held is lost.
            self.out.lost();
        }
    }

    /// Reads bytes as early exit does: lol_html, or the tokenizer.
    fn read(&mut self, chunk: &[u8]) {
        // A construct the tokenizer held back is read again with what follows.
        let joined;
        let mut rest = match &mut self.phase {
            Phase::Skim { held, .. } if !held.is_empty() => {
                let mut all = std::mem::take(held);
                all.extend_from_slice(chunk);
                joined = all;
                &joined[..]
            }
            _ => chunk,
        };
        while !rest.is_empty() {
            rest = match self.phase {
                Phase::Full => {
                    self.feed(rest);
                    &[]
                }
                Phase::Head(_) => self.head(rest),
                Phase::Skim { .. } => self.skim(rest),
                Phase::Script { .. } => self.script(rest),
            };
        }
    }

    /// A byte order mark decides the page's charset before any header or
    /// `<meta>` does. UTF-8: lol_html starts over in it (nothing was read
    /// yet). UTF-16: it cannot read the page, which goes out unchanged.
    fn byte_order_mark(&mut self, chunk: &[u8]) {
        let Some((encoding, _)) = encoding_rs::Encoding::for_bom(chunk) else {
            return;
        };
        if encoding == encoding_rs::UTF_8 {
            let declared = {
                let mut st = lock(&self.state);
                st.encoding.replace(encoding)
            };
            if declared != Some(encoding) {
                // Nothing was read yet: built in UTF-8 when first fed.
                self.rewriter = None;
                self.unbuilt = Some(Unbuilt::Fresh);
            }
        } else {
            log::info!("a UTF-16 page (byte order mark) goes out unchanged");
            lock(&self.state).report.utf16 = true;
            self.rewriter = None;
            self.unbuilt = None;
            self.phase = Phase::Full;
        }
    }

    /// Gives bytes to the current lol_html (or, after it gave up, to the
    /// output unchanged).
    fn feed(&mut self, bytes: &[u8]) {
        let out = self.out.clone();
        let Some(r) = self.lol_html() else {
            out.lock().push(bytes);
            return;
        };
        // Room for what comes out (about what goes in, plus what the
        // handlers add), so the sink does not grow by doubling.
        out.lock().bytes.reserve(bytes.len() + 1024);
        let read = r.write(bytes);
        self.fed += bytes.len();
        if let Err(e) = read {
            // Graceful bail-out already flushed what it held, unchanged;
            // the rewriter is poisoned, so the rest bypasses it.
            if !matches!(e, lol_html::errors::RewritingError::MemoryLimitExceeded(_)) {
                log::warn!("page rewrite failed, rest of the page unchanged: {e}");
                lock(&self.state).report.failed = true;
            }
            self.rewriter = None;
            self.phase = Phase::Full;
            // Kept bytes lol_html held are lost with it, not sent again:
            // the next bytes are new. (While kept bytes are read, the rest
            // of them still comes, and `read_kept` settles it at the end.)
            if !self.reading_kept {
                self.out.lost();
            }
        }
    }

    /// Bytes the tokenizer forwards unchanged.
    fn forward(&self, bytes: &[u8]) {
        self.out.lock().push(bytes);
    }

    /// The first lol_html, watching for the end of a `<body …>` start tag.
    fn head<'a>(&mut self, rest: &'a [u8]) -> &'a [u8] {
        let Phase::Head(watch) = &mut self.phase else {
            return rest;
        };
        if watch.armed == 0 {
            let body = look_for_body(watch, rest);
            return match body {
                Some(at) => {
                    watch.armed = 16;
                    self.feed(&rest[..at]);
                    &rest[at..]
                }
                None => {
                    self.feed(rest);
                    &[]
                }
            };
        }
        // Feed up to each `>` in turn, until the `<body>` handler has run.
        let Some(gt) = memchr::memchr(b'>', rest) else {
            look_for_body(watch, rest);
            self.feed(rest);
            return &[];
        };
        look_for_body(watch, &rest[..=gt]);
        watch.armed -= 1;
        let foreign = watch.foreign;
        lock(&self.state).tag_end = None;
        self.feed(&rest[..=gt]);
        let (read_body, here, may) = {
            let st = lock(&self.state);
            (
                st.body_seen,
                st.tag_end == Some(self.fed),
                may_hand_over(&st),
            )
        };
        if read_body {
            if here && may && !foreign && self.reading() {
                self.remember();
                self.hand_over(None);
            } else if let Phase::Head(_) = self.phase {
                self.phase = Phase::Full;
            }
        }
        &rest[gt + 1..]
    }

    /// Stops feeding lol_html right after the tag it just read (it is not
    /// ended: it reads every later construct the tokenizer finds, and the
    /// rest of the page if need be); the tokenizer reads on.
    fn hand_over(&mut self, skim: Option<skim::Skim>) {
        // `<meta>` is lol_html's to read when a handler acts on it (a meta
        // policy), and when the headers name no charset: lol_html then
        // switches to the charset a `<meta charset>` names, wherever it is.
        let meta = {
            let mut st = lock(&self.state);
            st.island = true;
            st.spec.meta_csp.is_some() || st.encoding.is_none()
        };
        let mut skim = skim.unwrap_or_else(|| skim::Skim::new(meta));
        skim.replayed();
        self.phase = Phase::Skim {
            skim,
            held: Vec::new(),
        };
    }

    /// Gives lol_html what its stack of open elements went through while
    /// the tokenizer read (its output discarded: those bytes went out).
    fn replay(&mut self, skim: &mut skim::Skim) {
        if !skim.replay.is_empty() {
            let kept = std::mem::take(&mut *self.out.lock());
            let tags = std::mem::take(&mut skim.replay);
            self.feed(&tags);
            *self.out.lock() = kept;
        }
        skim.replayed();
    }

    /// The tokenizer's turn: forward up to the next construct for lol_html.
    fn skim<'a>(&mut self, rest: &'a [u8]) -> &'a [u8] {
        // Nothing ahead the tokenizer could hand over: forwarded unread.
        if !self.reading_kept && self.kept.may_start() && self.keep_run(rest) {
            return &[];
        }
        let Phase::Skim { skim, held } = &mut self.phase else {
            return rest;
        };
        let found = skim.scan(rest);
        if let skim::Found::Held(at) = found {
            if rest.len() - at <= MAX_HELD {
                held.extend_from_slice(&rest[at..]);
                self.forward(&rest[..at]);
                return &[];
            }
        }
        if found == skim::Found::Nothing {
            // The whole chunk, as it came, with nothing before it: no copy.
            let whole = self
                .whole
                .as_ref()
                .is_some_and(|w| w.as_ptr() == rest.as_ptr() && w.len() == rest.len());
            let alone = whole && {
                let out = self.out.lock();
                out.bytes.is_empty() && out.sent == 0
            };
            if alone {
                self.whole_out = true;
            } else {
                self.forward(rest);
            }
            return &[];
        }
        let mut skim = skim.clone();
        match found {
            skim::Found::Nothing => {
                self.forward(rest);
                &[]
            }
            skim::Found::Held(at) | skim::Found::Rest(at) => {
                self.forward(&rest[..at]);
                self.replay(&mut skim);
                self.phase = Phase::Full;
                &rest[at..]
            }
            skim::Found::Tag { lt, end, name } => {
                self.forward(&rest[..lt]);
                self.replay(&mut skim);
                lock(&self.state).tag_end = None;
                self.feed(&rest[lt..end]);
                if !self.reading() {
                    // Gave up: `feed` made the rest pass through.
                } else if name == skim::Name::Script {
                    self.phase = Phase::Script {
                        tail: Vec::new(),
                        skim,
                    };
                } else {
                    self.after_tag(skim);
                }
                &rest[end..]
            }
        }
    }

    /// After a tag lol_html read: the tokenizer reads on if lol_html says
    /// that tag ended right here and nothing is left open; else lol_html does.
    fn after_tag(&mut self, skim: skim::Skim) {
        let ok = {
            let st = lock(&self.state);
            st.tag_end == Some(self.fed) && may_hand_over(&st)
        };
        if ok && self.reading() {
            self.hand_over(Some(skim));
        } else {
            self.phase = Phase::Full;
        }
    }

    /// A script after `<body>`: lol_html reads it to its end tag.
    fn script<'a>(&mut self, rest: &'a [u8]) -> &'a [u8] {
        let Phase::Script { tail, skim } = &mut self.phase else {
            return rest;
        };
        let seen = tail.len();
        let mut look = std::mem::take(tail);
        look.extend_from_slice(rest);
        match skim::raw_end(&look, 0, b"script", true) {
            skim::RawEnd::At(end) => {
                let skim = skim.clone();
                let n = end - seen;
                lock(&self.state).tag_end = None;
                self.feed(&rest[..n]);
                self.after_tag(skim);
                &rest[n..]
            }
            skim::RawEnd::More(lt) if look.len() - lt <= MAX_HELD => {
                *tail = look[lt..].to_vec();
                self.feed(rest);
                &[]
            }
            skim::RawEnd::Text => {
                self.feed(rest);
                &[]
            }
            skim::RawEnd::More(_) | skim::RawEnd::Escaped => {
                self.phase = Phase::Full;
                rest
            }
        }
    }

    /// Whether the page began with a head remembered for its variant (see
    /// `memo`).
    pub fn head_remembered(&self) -> bool {
        self.remembered
    }

    /// Bytes lol_html parsed (the tags replayed to it included): the rest
    /// of the page went out unread.
    /// Bytes forwarded unread and never read, by lol_html or the
    /// tokenizer (see `leap`).
    pub fn bytes_leapt(&self) -> u64 {
        self.leapt
    }

    pub fn bytes_parsed(&self) -> u64 {
        (self.fed - self.unread_head) as u64
    }

    /// Ends the page; returns the last bytes.
    pub fn finish(&mut self) -> Vec<u8> {
        // A page of no more than the start of a byte order mark.
        let mut out = Vec::new();
        if let Some(lead) = self.lead.take() {
            self.byte_order_mark(&lead);
            out = self.write_read(&lead);
        }
        out.extend(self.finish_read());
        out
    }

    fn finish_read(&mut self) -> Vec<u8> {
        // Bytes forwarded unread stay unread: no start follows them, so
        // nothing after them could depend on how they read (see `leap`).
        // The last bytes, the beginning of a tag that never ends, go out as
        // they came, as lol_html sends them.
        let _ = self.kept.take();
        let edge = std::mem::take(&mut self.kept.edge);
        self.forward(&edge);
        if let Phase::Skim { held, skim } = &mut self.phase {
            // An unfinished construct at the end: lol_html emits it as it
            // came. Then lol_html ends the page as it would have.
            let held = std::mem::take(held);
            let mut skim = skim.clone();
            self.forward(&held);
            self.replay(&mut skim);
            self.phase = Phase::Full;
        }
        if let Some(Unbuilt::After(_)) = self.unbuilt {
            // Nothing after the remembered head was read: lol_html, cut
            // right after a tag, holds nothing, and would add only what
            // its document end handler adds.
            self.unbuilt = None;
            let end = document_end(&self.state);
            self.out.lock().push(end.as_bytes());
        }
        let _ = self.lol_html();
        if let Some(r) = self.rewriter.take() {
            if let Err(e) = r.end() {
                log::warn!("page rewrite failed at the end of the page: {e}");
                lock(&self.state).report.bailed_out = true;
            }
        }
        let mut out = self.take();
        // A map whose end tag never came (truncated page): give its text back.
        let mut st = lock(&self.state);
        if st.in_map && !st.buf.is_empty() {
            let text = std::mem::take(&mut st.buf);
            st.report.bytes_out += text.len() as u64;
            out.extend_from_slice(text.as_bytes());
        }
        // Gave up before the probe was in: nothing would say that nothing
        // of the ticket applied, so the end of the page does.
        if st.report.bailed_out && !st.probe_done {
            if let Some(p) = st
                .spec
                .probe
                .as_ref()
                .filter(|p| p.badge && p.view != "prod")
            {
                let notice = crate::badge::not_stamped(&p.key, p.view);
                st.report.bytes_out += notice.len() as u64;
                out.extend_from_slice(notice.as_bytes());
            }
        }
        out
    }

    pub fn report(&self) -> Report {
        lock(&self.state).report.clone()
    }

    fn take(&mut self) -> Vec<u8> {
        let out = std::mem::take(&mut self.out.lock().bytes);
        self.count_out(out.len());
        if let Some(rec) = self.recording.as_mut() {
            // Only while lol_html reads the head, from the first byte.
            if matches!(self.phase, Phase::Head(_)) {
                rec.output.extend_from_slice(&out);
            } else {
                self.recording = None;
            }
        }
        out
    }

    fn count_out(&self, n: usize) {
        lock(&self.state).report.bytes_out += n as u64;
    }
}

/// Notes `<svg`/`<math` in `bytes` before the first `<body` (the namespace
/// lol_html is in when it reads that tag is then unknown) and returns where
/// that `<body` starts (0 when it began in the bytes before). What follows
/// it is not lol_html's to read once it hands over: the tokenizer reads
/// foreign content itself, so an inline `<svg>` icon in the body does not
/// keep lol_html reading the page.
fn look_for_body(watch: &mut Watch, bytes: &[u8]) -> Option<usize> {
    let starts =
        |b: &[u8], word: &[u8]| b.len() >= word.len() && b[..word.len()].eq_ignore_ascii_case(word);
    let mut body = None;
    // Across the chunk boundary.
    let mut joined = std::mem::take(&mut watch.tail);
    let before = joined.len();
    joined.extend_from_slice(&bytes[..bytes.len().min(8)]);
    for lt in memchr::memchr_iter(b'<', &joined[..before]) {
        let after = &joined[lt + 1..];
        if starts(after, b"body") {
            body = Some(0);
            break;
        }
        watch.foreign |= starts(after, b"svg") || starts(after, b"math");
    }
    if body.is_none() {
        for lt in memchr::memchr_iter(b'<', bytes) {
            let after = &bytes[lt + 1..];
            if starts(after, b"body") {
                body = Some(lt);
                break;
            }
            watch.foreign |= starts(after, b"svg") || starts(after, b"math");
        }
    }
    joined.extend_from_slice(&bytes[bytes.len().min(8)..]);
    let keep = joined.len().min(4);
    watch.tail = joined[joined.len() - keep..].to_vec();
    body
}

/// Rewrites a whole document at once (tests, benchmarks, tools).
#[cfg(any(test, feature = "testing"))]
pub fn rewrite_str(spec: RewriteSpec, html: &str) -> (String, Report) {
    let mut r = PageRewriter::new(spec);
    let mut out = r.write(html.as_bytes());
    out.extend(r.finish());
    (String::from_utf8_lossy(&out).into_owned(), r.report())
}

type HandlerResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn on_template(state: &Arc<Mutex<State>>, el: &mut Element<'_, '_>) -> HandlerResult {
    // Only HTML's `<template>` holds inert content. One in SVG or MathML is
    // an ordinary element, and may be self-closed (`<svg><template/>`):
    // counted, with no end tag to count it down, it would stop everything
    // after it from being stamped.
    if el.namespace_uri() != HTML_NS {
        return Ok(());
    }
    let Some(handlers) = el.end_tag_handlers() else {
        return Ok(());
    };
    let s = state.clone();
    handlers.push(Box::new(move |_end: &mut EndTag<'_>| {
        let mut st = lock(&s);
        st.template_depth = st.template_depth.saturating_sub(1);
        Ok(())
    }));
    lock(state).template_depth += 1;
    Ok(())
}

fn on_map_start(state: &Arc<Mutex<State>>, el: &mut Element<'_, '_>, ty: &str) -> HandlerResult {
    let mut st = lock(state);
    // Nothing to stamp (a production page that only carries the probe):
    // its maps stay exactly as they are.
    if st.template_depth > 0 || st.spec.effective.overrides.is_empty() {
        return Ok(());
    }
    if st.base_stops_stamping() {
        st.map_seen = true;
        return Ok(());
    }
    // Its text is taken out of the page only if its end tag will put it
    // back merged: an element without one (self-closed in SVG or MathML)
    // has no text, and one whose end never comes must not swallow the page.
    let Some(handlers) = el.end_tag_handlers() else {
        return Ok(());
    };
    let s = state.clone();
    st.maps_started += 1;
    let id = st.maps_started;
    handlers.push(Box::new(move |end: &mut EndTag<'_>| {
        on_map_end(&s, end, id)
    }));
    st.map_seen = true;
    st.in_map = true;
    st.map_urls = crate::importmap::Urls::for_type(ty);
    st.map_type = ty.trim().to_ascii_lowercase();
    st.overflowed = false;
    st.buf.clear();
    // A map merged after the first module script is ignored by browsers anyway;
    // merging it is still harmless and keeps the page consistent.
    // The plan's nonce is the policy's own when it has one, so an origin
    // nonce that the policy accepts is left as it is.
    if let Some(nonce) = st.map_nonce() {
        if el.get_attribute("nonce").as_deref() != Some(nonce.as_str()) {
            el.set_attribute("nonce", &nonce)?;
        }
    }
    // Hash-allowed maps change their hash when merged; a fresh nonce from the
    // CSP plan covers that, and an `integrity` on the map itself is moot.
    Ok(())
}

fn on_map_text(state: &Arc<Mutex<State>>, chunk: &mut TextChunk<'_>) -> HandlerResult {
    let mut st = lock(state);
    if !st.in_map || st.overflowed {
        return Ok(());
    }
    let text = chunk.as_str();
    if st.buf.len() + text.len() > st.spec.max_map_bytes {
        // Too large to merge: put back what was removed and let the rest flow.
        st.overflowed = true;
        let held = std::mem::take(&mut st.buf);
        chunk.before(&held, ContentType::Html);
        return Ok(());
    }
    st.buf.push_str(text);
    chunk.remove();
    Ok(())
}

/// The end of map `id`. A map whose end tag did not come where it should
/// (a `<script … a=>` lol_html reads on after as markup) gave its text back
/// when the next script began (`on_script`); when lol_html closes it at
/// last (at an ancestor's end tag, `</html>`), it adds nothing.
fn on_map_end(state: &Arc<Mutex<State>>, end: &mut EndTag<'_>, id: u64) -> HandlerResult {
    let mut st = lock(state);
    if !st.in_map || st.maps_started != id {
        return Ok(());
    }
    st.in_map = false;
    if st.overflowed {
        st.overflowed = false;
        let reason = format!(
            "the import map is larger than {} bytes",
            st.spec.max_map_bytes
        );
        log::warn!("{} left unchanged: {reason}", st.spec.page_url);
        end.after(&note(&reason), ContentType::Html);
        st.report.map_left = Some(reason);
        return Ok(());
    }
    let original = std::mem::take(&mut st.buf);
    note_elsewhere(&mut st, &original);
    let spec = &st.spec;
    let form = crate::importmap::MergeAs {
        urls: st.map_urls,
        first: !st.keys_placed.contains(&st.map_type),
    };
    match spec.effective.merges.merge(
        &original,
        &spec.effective.overrides,
        st.base(),
        spec.max_map_bytes,
        form,
    ) {
        Ok(merged) => {
            end.before(&merged, ContentType::Html);
            st.report.maps_merged += 1;
            let ty = st.map_type.clone();
            st.keys_placed.push(ty);
        }
        Err(e) => {
            let reason = format!("import map left unchanged: {e}");
            log::warn!("{}: {reason}", spec.page_url);
            end.before(&original, ContentType::Html);
            end.after(&note(&reason), ContentType::Html);
            st.report.map_left = Some(reason);
        }
    }
    Ok(())
}

/// Notes the ticket's modules this map loads from another origin than the
/// one they were uploaded for (see `assets::served_elsewhere`), for the
/// probe's badge to say why they did not apply.
fn note_elsewhere(st: &mut State, map_text: &str) {
    // Maps after `<body>` are not looked at: by then the badge's outcome
    // is settled (see `may_hand_over`).
    if st.body_seen {
        return;
    }
    let Some(probe) = &st.spec.probe else {
        return;
    };
    if probe
        .own
        .values()
        .all(|m| stamp_model::assets::is_remote(&m.path))
    {
        return;
    }
    // Found for every module of the variant once per map, then taken for
    // the ticket's own: a module the variant has under another path is
    // looked for on its own.
    let all = st
        .spec
        .effective
        .merges
        .elsewhere(map_text, &st.spec.effective.overrides, st.base());
    let mut found = Vec::new();
    let mut unread = None;
    for (spec, m) in probe.own.iter() {
        let known = st
            .spec
            .effective
            .overrides
            .get(spec)
            .is_some_and(|v| v.path == m.path);
        let url = if known {
            all.iter()
                .find(|(s, p, _)| s == spec.as_str() && *p == m.path)
                .map(|(_, _, url)| url.clone())
        } else {
            let map = unread
                .get_or_insert_with(|| serde_json::from_str::<serde_json::Value>(map_text).ok());
            map.as_ref().and_then(|map| {
                stamp_model::assets::served_elsewhere(map, st.base(), &m.path, spec)
            })
        };
        if let Some(url) = url {
            found.push((m.path.clone(), url));
        }
    }
    st.elsewhere.extend(found);
}

/// An HTML comment that says why the page was not stamped as asked (the
/// response headers are gone by the time the map is read).
fn note(reason: &str) -> String {
    let safe: String = reason
        .chars()
        .map(|c| {
            if c == '-' || c == '<' || c == '>' {
                ' '
            } else {
                c
            }
        })
        .collect();
    format!("<!-- ticket-stamp: {safe} -->")
}

/// A `<script>`: an inline import map of a type we merge into, an external
/// map of a loader that takes one, or else an entry point: module scripts
/// (and where a missing map goes), and classic scripts with a `src`, the
/// entry points of bundles (webpack's runtime and chunks). Data blocks are
/// someone else's.
fn on_script(state: &Arc<Mutex<State>>, el: &mut Element<'_, '_>) -> HandlerResult {
    {
        let mut st = lock(state);
        if st.island {
            // Early exit hands over right after this script's end tag.
            let s = state.clone();
            if let Some(handlers) = el.end_tag_handlers() {
                handlers.push(Box::new(move |end: &mut EndTag<'_>| {
                    lock(&s).tag_end = Some(end.source_location().bytes().end);
                    Ok(())
                }));
            }
        }
        if st.in_map {
            // The map before this script never ended (its end tag handler
            // did not run): its text goes back unchanged, here, rather than
            // this script's text being taken for the map's.
            st.in_map = false;
            st.overflowed = false;
            let held = std::mem::take(&mut st.buf);
            el.before(&held, ContentType::Html);
        }
        if st.template_depth > 0 {
            return Ok(());
        }
    }
    // A page without `<head>`: the probe goes before its first script.
    if let Some(probe) = take_probe(state) {
        el.before(&probe, ContentType::Html);
    }
    // An SVG or MathML `<script>` is not an HTML script: never a map or an
    // entry point the browser loads as one.
    if el.namespace_uri() != HTML_NS {
        return Ok(());
    }
    let ty = el.get_attribute("type").unwrap_or_default();
    // A map's type is matched exactly, ignoring case only (as browsers and
    // the loaders do); a script's MIME type is trimmed.
    let has_src = el.has_attribute("src");
    if !has_src && MAP_TYPES.iter().any(|t| ty.eq_ignore_ascii_case(t)) {
        return on_map_start(state, el, &ty);
    }
    if has_src
        && EXTERNAL_MAP_TYPES
            .iter()
            .any(|t| ty.eq_ignore_ascii_case(t))
    {
        return on_external_map(state, el);
    }
    let ty = ty.trim();
    if ty.eq_ignore_ascii_case("module") {
        return on_module_entry(state, el, "src");
    }
    if is_classic(ty) {
        return on_entry(state, el, "src");
    }
    Ok(())
}

/// Whether a script's trimmed `type` makes it a classic script the
/// browser runs (one whose `src` may be an entry point the ticket
/// replaces).
fn is_classic(ty: &str) -> bool {
    ty.is_empty()
        || [
            "text/javascript",
            "application/javascript",
            "text/ecmascript",
        ]
        .iter()
        .any(|t| ty.eq_ignore_ascii_case(t))
}

/// [`PageRewriter::quiet`] for a `<script>`, after [`on_script`]: neither
/// a map, nor the module before which a map goes in, nor an entry point
/// the ticket may replace.
fn quiet_script(st: &State, a: &skim::Attrs<'_>) -> bool {
    // lol_html decodes the value from the page's charset and the handler
    // trims it: a byte beyond ASCII (an ideographic space) could make it
    // `module`.
    let Some(ty) = ascii(a.ty.unwrap_or_default()) else {
        return false;
    };
    // Any map type, with a `src` or without: lol_html's text handler on a
    // map's type (`MAP_SCRIPT_SELECTOR`) writes the element's text again
    // from what it decoded, and a byte the charset has no character for
    // comes out changed even where no handler acts.
    if MAP_TYPES.iter().any(|t| ty.eq_ignore_ascii_case(t)) {
        return false;
    }
    let ty = ty.trim();
    if ty.eq_ignore_ascii_case("module") {
        return !may_insert_map(st) && !may_replace(st, a.src);
    }
    !is_classic(ty) || !may_replace(st, a.src)
}

/// [`PageRewriter::quiet`] for a `<link>`, after [`on_link`].
fn quiet_link(st: &State, a: &skim::Attrs<'_>) -> bool {
    let (Some(rel), Some(_)) = (a.rel, a.href) else {
        return true;
    };
    let Some(rel) = ascii(rel) else {
        // A token is matched by its ASCII letters: other bytes cannot
        // make one, but keep to what is certain.
        return false;
    };
    let has = |token: &str| {
        rel.split(|c: char| c.is_ascii_whitespace())
            .any(|t| t.eq_ignore_ascii_case(token))
    };
    if has("modulepreload") {
        return !may_insert_map(st) && !may_replace(st, a.href);
    }
    // A preload's `as` is not among what the skim keeps: read it whenever
    // its file may be the ticket's.
    !(has("stylesheet") || has("preload")) || !may_replace(st, a.href)
}

/// Whether a module script or preload read now could be the one before
/// which the map goes in (see [`on_module_entry`]).
fn may_insert_map(st: &State) -> bool {
    !(st.map_seen || st.inserted || st.module_seen || st.spec.effective.overrides.is_empty())
}

/// Whether the ticket may replace the file a `src` or `href` names (see
/// [`on_entry`]): asked of its name, which no base URL changes.
fn may_replace(st: &State, value: Option<&[u8]>) -> bool {
    let Some(value) = value else {
        return false;
    };
    let Some(value) = ascii(value) else {
        return true;
    };
    let value = decode_entities(value);
    !value.is_ascii() || st.spec.effective.may_replace(&value)
}

/// `bytes` as text when all of them are ASCII (read alike in every charset
/// lol_html reads).
fn ascii(bytes: &[u8]) -> Option<&str> {
    bytes
        .is_ascii()
        .then(|| std::str::from_utf8(bytes).ok())
        .flatten()
}

/// A `<link href>`: a module preload is an entry point (and where a missing
/// map goes), a stylesheet may be a file the ticket replaces.
fn on_link(state: &Arc<Mutex<State>>, el: &mut Element<'_, '_>) -> HandlerResult {
    lock(state).tag_end = Some(el.source_location().bytes().end);
    if lock(state).template_depth == 0 {
        if let Some(probe) = take_probe(state) {
            el.before(&probe, ContentType::Html);
        }
    }
    let Some(rel) = el.get_attribute("rel").filter(|_| el.has_attribute("href")) else {
        return Ok(());
    };
    // `rel` is a set of space-separated, case-insensitive tokens.
    let has = |token: &str| {
        rel.split(|c: char| c.is_ascii_whitespace())
            .any(|t| t.eq_ignore_ascii_case(token))
    };
    if has("modulepreload") {
        if lock(state).template_depth > 0 {
            return Ok(());
        }
        return on_module_entry(state, el, "href");
    }
    // A preload of a script or stylesheet is for the element that uses it
    // later, which gets the ticket's URL: so does the preload (production's
    // copy fetched beside it would be wasted, and the probe would see it).
    let preloads = has("preload")
        && el.get_attribute("as").is_some_and(|d| {
            let d = d.trim();
            d.eq_ignore_ascii_case("script") || d.eq_ignore_ascii_case("style")
        });
    if has("stylesheet") || preloads {
        return on_entry(state, el, "href");
    }
    Ok(())
}

/// An external map: pointed at its merged variant, served by the proxy
/// (`/__stamp/map?v=<variant>&src=<map>`), so the page keeps one map and
/// production's map URL is never given other bytes.
fn on_external_map(state: &Arc<Mutex<State>>, el: &mut Element<'_, '_>) -> HandlerResult {
    let mut st = lock(state);
    if st.template_depth > 0 || st.spec.effective.overrides.is_empty() {
        return Ok(());
    }
    st.map_seen = true;
    if st.base_stops_stamping() {
        return Ok(());
    }
    let Some(src) = el.get_attribute("src").map(|s| decode_entities(&s)) else {
        return Ok(());
    };
    // The base, when there is one, is where the page is served from (see
    // `on_base`): what is on its origin is the proxy's.
    let page = st.base();
    let Some(url) = page
        .join(src.trim())
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
    else {
        return Ok(());
    };
    let same_origin = url.origin() == page.origin();
    let origin = url.origin().ascii_serialization();
    if !same_origin && !st.spec.asset_origins.contains(&origin) {
        let reason = format!(
            "the external import map on {origin} was left unchanged: that origin is not in the proxy's asset_origins"
        );
        log::warn!("{}: {reason}", st.spec.page_url);
        el.after(&note(&reason), ContentType::Html);
        st.report.map_left = Some(reason);
        return Ok(());
    }
    let target = if same_origin {
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        }
    } else {
        url.to_string()
    };
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("v", &st.spec.effective.id.to_hex());
    query.append_pair("src", &target);
    let ty = el.get_attribute("type").unwrap_or_default();
    if crate::importmap::Urls::for_type(&ty) == crate::importmap::Urls::Absolute {
        query.append_pair("urls", "absolute");
    }
    let placed = ty.trim().to_ascii_lowercase();
    if st.keys_placed.contains(&placed) {
        query.append_pair("add", "0");
    } else {
        st.keys_placed.push(placed);
    }
    if let Some(integrity) = el.get_attribute("integrity").map(|s| decode_entities(&s)) {
        // The merged bytes cannot match production's digest; the proxy checks
        // production's bytes against it before it merges them instead.
        query.append_pair("integrity", &integrity);
        el.remove_attribute("integrity");
    }
    el.set_attribute(
        "src",
        &format!("{}?{}", stamp_model::assets::MAP_PATH, query.finish()),
    )?;
    st.report.external_maps += 1;
    Ok(())
}

fn on_module_entry(
    state: &Arc<Mutex<State>>,
    el: &mut Element<'_, '_>,
    attr: &str,
) -> HandlerResult {
    let mut st = lock(state);
    if !st.map_seen
        && !st.inserted
        && !st.module_seen
        && !st.spec.effective.overrides.is_empty()
        && !st.base_stops_stamping()
    {
        // The first module script / modulepreload with no map before it: the
        // page has no map that could still take effect, so insert ours here.
        // When the ticket replaces this very file by an entry pattern, the
        // map also sends production's URL of it to the ticket's: a server-
        // rendered page preloads its entry and then imports it by that URL
        // from an inline script (Remix, SvelteKit), which no `src` names.
        let extra = el
            .get_attribute(attr)
            .map(|v| decode_entities(&v))
            .and_then(|v| entry_key(&st, &v))
            .into_iter()
            .collect::<Vec<_>>();
        let html = map_element_with(&st.spec, st.map_nonce(), &extra);
        el.before(&html, ContentType::Html);
        st.inserted = true;
        st.report.map_inserted = true;
    }
    st.module_seen = true;
    drop(st);
    on_entry(state, el, attr)
}

/// Points an element that loads a production file (`src`/`href`) at the
/// ticket's version when the ticket replaces that file: an exact override,
/// or an entry pattern that the file's hashed name matches.
fn on_entry(state: &Arc<Mutex<State>>, el: &mut Element<'_, '_>, attr: &str) -> HandlerResult {
    let mut st = lock(state);
    if st.template_depth > 0 {
        return Ok(());
    }
    let Some(value) = el.get_attribute(attr).map(|s| decode_entities(&s)) else {
        return Ok(());
    };
    if st.base_stops_stamping() {
        return Ok(());
    }
    let Some(location) = location(st.base(), &value) else {
        return Ok(());
    };
    let Some(module) = st.spec.effective.replacement(&location) else {
        return Ok(());
    };
    let module = module.clone();
    el.set_attribute(attr, &module.url())?;
    // Production's digest would refuse the ticket's body; the proxy checks
    // the body against the hash its URL names, and the served bytes carry
    // the probe's marker.
    el.remove_attribute("integrity");
    st.report.entries_rewritten += 1;
    Ok(())
}

/// `<base href>`: the first one with an `href` sets what every relative
/// URL after it resolves against (HTML's frozen base URL), for the browser
/// and so for the maps, scripts and links read after it here. Parsed as
/// HTML parses it, against the page's URL; one that does not parse, or a
/// `data:` or `javascript:` URL, leaves the page's own URL (and still
/// counts as the first). One in a `<template>` or in SVG is not the
/// page's.
fn on_base(state: &Arc<Mutex<State>>, el: &mut Element<'_, '_>) -> HandlerResult {
    let mut st = lock(state);
    if st.base_frozen || st.template_depth > 0 || el.namespace_uri() != HTML_NS {
        return Ok(());
    }
    let Some((href, read)) = el.get_attribute("href").map(|h| decode_entities_read(&h)) else {
        return Ok(());
    };
    st.base_frozen = true;
    if !read {
        st.base_stop =
            Some("the page's <base href> has character references the proxy does not read".into());
        return Ok(());
    }
    let Ok(url) = st.spec.page_url.join(&href) else {
        return Ok(());
    };
    if matches!(url.scheme(), "data" | "javascript") {
        return Ok(());
    }
    let page = &st.spec.page_url;
    let stop = match crate::csp::base_allowed(&st.spec.base_uri, &url, page) {
        // The page's policy blocks it: the browser keeps the page's URL.
        Some(false) => return Ok(()),
        None => Some(format!(
            "the page's Content-Security-Policy base-uri may or may not allow its <base href> ({})",
            url.origin().ascii_serialization()
        )),
        Some(true) if !url.username().is_empty() || url.password().is_some() => {
            Some("the page's <base href> carries a user name or password".to_string())
        }
        Some(true) if !crate::importmap::same_site(&url, page) => Some(format!(
            "the page's <base href> is on {}: its relative URLs resolve there, not on this proxy",
            url.origin().ascii_serialization()
        )),
        Some(true) => None,
    };
    st.base_stop = stop;
    st.base = Some(url);
    Ok(())
}

fn state_has_meta(state: &Arc<Mutex<State>>) -> bool {
    lock(state).spec.meta_csp.is_some()
}

/// A `<meta>` policy gets the proxy's nonce and hashes where it needs them;
/// nothing is removed.
fn on_meta_csp(state: &Arc<Mutex<State>>, el: &mut Element<'_, '_>) -> HandlerResult {
    lock(state).tag_end = Some(el.source_location().bytes().end);
    let policy = el
        .get_attribute("http-equiv")
        .is_some_and(|h| h.eq_ignore_ascii_case("content-security-policy"));
    let Some(content) = el.get_attribute("content").filter(|_| policy) else {
        return Ok(());
    };
    let mut st = lock(state);
    st.meta_seen = true;
    let Some(meta) = &st.spec.meta_csp else {
        return Ok(());
    };
    let script = crate::csp::extend_with(
        crate::csp::Element::Script,
        &[content.as_str()],
        &meta.script_hash,
        &meta.script_nonce,
    );
    let mut policy = script
        .policies
        .into_iter()
        .next()
        .unwrap_or(content.clone());
    if let Some((nonce, hash)) = &meta.style {
        let style =
            crate::csp::extend_with(crate::csp::Element::Style, &[policy.as_str()], hash, nonce);
        policy = style.policies.into_iter().next().unwrap_or(policy);
    }
    if policy != content {
        el.set_attribute("content", &policy)?;
    }
    Ok(())
}

fn on_body(state: &Arc<Mutex<State>>, el: &mut Element<'_, '_>) -> HandlerResult {
    if let Some(probe) = take_probe(state) {
        el.prepend(&probe, ContentType::Html);
    }
    {
        let mut st = lock(state);
        st.body_seen = true;
        st.tag_end = Some(el.source_location().bytes().end);
    }
    {
        let st = lock(state);
        if st.spec.probe.is_none() && st.spec.live.is_none() && st.spec.notice.is_none() {
            return Ok(());
        }
    }
    let s = state.clone();
    if let Some(handlers) = el.end_tag_handlers() {
        handlers.push(Box::new(move |end: &mut EndTag<'_>| {
            if let Some(badge) = take_badge(&s) {
                end.before(&badge, ContentType::Html);
            }
            Ok(())
        }));
    }
    Ok(())
}

/// What goes at the end of the page, once: the notice, the probe's outcome
/// block, the live-reload script.
fn take_badge(state: &Arc<Mutex<State>>) -> Option<String> {
    let mut st = lock(state);
    if st.badge_done {
        return None;
    }
    st.badge_done = true;
    if let Some(notice) = &st.spec.notice {
        return Some(notice.clone());
    }
    let live = st.spec.live.as_ref().map(|url| {
        // The map's nonce: the one every policy of the page lets through.
        let nonce = st
            .map_nonce()
            .filter(|n| crate::csp::is_nonce_safe(n))
            .map(|n| format!(" nonce=\"{n}\""))
            .unwrap_or_default();
        let url = serde_json::to_string(url).unwrap_or_default();
        // A swap event goes to es-module-shims' hot reload when the page
        // has it (each module by the URL the page first knew it by: that is
        // the one es-module-shims keys it by); anything else reloads. After
        // a swap the stream is reopened from the new variant, which the
        // probe then says the document runs.
        format!(
            "<script{nonce}>(()=>{{const u=new URL({url},location.href),f={{}};\
             const o=()=>{{const s=new EventSource(u);\
             s.onmessage=e=>{{let d=null;try{{d=JSON.parse(e.data)}}catch(_){{}}\
             const h=self.importShim&&importShim.hotReload;\
             if(!d||!d.swap||!h){{s.close();location.reload();return}}\
             u.searchParams.set(\"v\",d.v);const t=self.__ticketStamp;if(t&&t.data)t.data.variant=d.v;\
             for(const[k,w]of d.swap)h(f[k]||(f[k]=w))}};\
             s.onerror=()=>{{if(s.readyState!==2){{s.close();setTimeout(o,1000)}}}}}};\
             o()}})()</script>"
        )
    });
    // Why nothing of the ticket applied, as the rewriter saw it: for the
    // probe's badge, which measures the rest in the browser.
    let outcome = st.spec.probe.as_ref().and_then(|_| {
        let nothing = st.report.nothing_applied();
        (nothing.is_some() || !st.elsewhere.is_empty())
            .then(|| crate::probe::outcome(nothing.as_deref(), &st.elsewhere))
    });
    match (outcome, live) {
        (Some(o), Some(l)) => Some(o + &l),
        (o, l) => o.or(l),
    }
}

/// The probe and its data, once per page.
fn take_probe(state: &Arc<Mutex<State>>) -> Option<String> {
    let mut st = lock(state);
    if st.probe_done || st.template_depth > 0 {
        return None;
    }
    st.spec.probe.as_ref()?;
    st.probe_done = true;
    let nonce = st.map_nonce();
    let probe = st.spec.probe.as_ref()?;
    let page = crate::probe::Page {
        key: &probe.key,
        view: probe.view,
        stage: probe.stage,
        own: &probe.own,
        reports: &probe.reports,
        touch: &probe.touch,
        all: &st.spec.effective.overrides,
        variant: &st.spec.effective.id,
        badge: probe.badge,
    };
    // Nothing in the page before the probe may decide where its URL
    // leads or whether it may load: a `<base>` or a meta policy.
    let carried = if probe.external && !st.base_frozen && !st.meta_seen {
        crate::probe::Carried::External
    } else {
        crate::probe::Carried::Inline(nonce.as_deref())
    };
    Some(crate::probe::elements(&page, carried))
}

/// `<script type="importmap" nonce=…>{json}</script>`.
/// With `extra` keys ([`crate::importmap::fresh_with`]) the map differs
/// from the variant's own, whose hash the page's policies got; it carries
/// the nonce they got with it.
fn map_element_with(
    spec: &RewriteSpec,
    nonce: Option<String>,
    extra: &[(String, String)],
) -> String {
    let owned;
    let map = if extra.is_empty() {
        spec.effective.fresh_map()
    } else {
        owned = crate::importmap::fresh_with(&spec.effective.overrides, extra);
        owned.as_str()
    };
    match nonce.as_deref().filter(|n| crate::csp::is_nonce_safe(n)) {
        Some(n) => format!("<script type=\"importmap\" nonce=\"{n}\">{map}</script>"),
        None => format!("<script type=\"importmap\">{map}</script>"),
    }
}

/// The map key and ticket URL for a file a page names by `value` that the
/// ticket replaces by an entry pattern only (a file it replaces at that
/// very path is served there already): the URL as the page resolves it, a
/// path with its query and fragment on the page's origin, in full on
/// another. None for a URL ending in `/`, which a map reads as a prefix.
fn entry_key(st: &State, value: &str) -> Option<(String, String)> {
    if st.spec.effective.patterns.is_empty() {
        return None;
    }
    let location = location(st.base(), value)?;
    if st.spec.effective.by_path.contains_key(&location) {
        return None;
    }
    let module = st.spec.effective.replacement(&location)?;
    let url = st.base().join(value.trim()).ok()?;
    let key = if crate::importmap::same_origin(&url, &st.spec.page_url) {
        url[url::Position::BeforePath..].to_owned()
    } else {
        url.to_string()
    };
    (!key.ends_with('/')).then(|| (key, module.url()))
}

/// An attribute value as the browser reads it: lol_html hands it over as
/// written, character references included (`?a=1&amp;b=2`).
fn decode_entities(value: &str) -> String {
    decode_entities_read(value).0
}

/// [`decode_entities`], and whether every character reference in it was
/// one it reads (the five named ones and numeric ones ending in `;`): a
/// browser reads 2,000 more names, and numeric ones without the `;`.
fn decode_entities_read(value: &str) -> (String, bool) {
    if !value.contains('&') {
        return (value.to_string(), true);
    }
    let mut read = true;
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let named = [
            ("&amp;", '&'),
            ("&quot;", '"'),
            ("&apos;", '\''),
            ("&lt;", '<'),
            ("&gt;", '>'),
        ];
        if let Some((name, c)) = named.iter().find(|(n, _)| rest.starts_with(n)) {
            out.push(*c);
            rest = &rest[name.len()..];
            continue;
        }
        let numeric = rest
            .strip_prefix("&#")
            .and_then(|r| r.find(';').map(|end| (&r[..end], end)))
            .and_then(|(digits, end)| {
                let code = match digits.strip_prefix(['x', 'X']) {
                    Some(hex) => u32::from_str_radix(hex, 16).ok(),
                    None => digits.parse().ok(),
                }?;
                char::from_u32(code).map(|c| (c, end + 3))
            });
        match numeric {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
                if rest.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '#') {
                    read = false;
                }
            }
        }
    }
    out.push_str(rest);
    (out, read)
}

/// The location a `src`/`href` refers to: its path on the page's own
/// origin, `origin + path` on another (query and fragment ignored: a
/// cache-busting `?v=3` still names the module).
pub fn location(page: &Url, value: &str) -> Option<String> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    // `/src/app.js?v=3`: the path is what the URL parser would return, so
    // skip it (every entry point of most pages).
    let path = value.split(['?', '#']).next().unwrap_or(value);
    if crate::importmap::is_plain_absolute_path(path) {
        return Some(path.to_owned());
    }
    let url = page.join(value).ok()?;
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    Some(crate::importmap::location_of(&url, page))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use stamp_model::ticket::{Hash, ModuleRef, OverrideSet};

    pub(crate) fn eff(paths: &[&str]) -> Arc<Effective> {
        let mut set = OverrideSet::new();
        for p in paths {
            set.insert(
                p.to_string(),
                ModuleRef {
                    path: p.to_string(),
                    hash: Hash::of(p.as_bytes()),
                    size: 1,
                },
            );
        }
        Arc::new(Effective::new(set))
    }

    pub(super) fn spec(paths: &[&str]) -> RewriteSpec {
        RewriteSpec {
            effective: eff(paths),
            page_url: Url::parse("http://app.test/shop/").unwrap().into(),
            nonce: None,
            fresh: None,
            max_map_bytes: 4096,
            memory_limit_bytes: 1 << 20,
            probe: None,
            live: None,
            meta_csp: None,
            asset_origins: Arc::from(Vec::<String>::new()),
            base_uri: Vec::new(),
            encoding: Some(encoding_rs::UTF_8),
            notice: None,
        }
    }

    fn url_of(p: &str) -> String {
        stamp_model::ticket::module_url(p, &Hash::of(p.as_bytes()))
    }

    /// Writes `html` in pieces of `step` bytes.
    fn rewrite_bytes(spec: RewriteSpec, html: &[u8], step: usize) -> (Vec<u8>, Report) {
        let mut r = PageRewriter::new(spec);
        let mut out = Vec::new();
        for piece in html.chunks(step) {
            out.extend(r.write(piece));
        }
        out.extend(r.finish());
        (out, r.report())
    }

    fn count(hay: &[u8], needle: &[u8]) -> usize {
        hay.windows(needle.len()).filter(|w| *w == needle).count()
    }

    /// A page in any charset lol_html can read keeps every byte the ticket
    /// does not change: its title, its scripts, its text, in the head and
    /// after `<body>`. lol_html writes out the text it decoded; decoded in
    /// the wrong charset, `表` in Shift_JIS (`95 5C`, a `\` for its second
    /// byte) became U+FFFD and a stray backslash in a string literal.
    #[test]
    fn a_page_in_any_ascii_compatible_charset_keeps_its_bytes() {
        use encoding_rs::{EUC_JP, GBK, SHIFT_JIS, UTF_8, WINDOWS_1251, WINDOWS_1252};
        let sjis: &[u8] = b"\x95\x5c\x8e\xa6";
        let eucjp: &[u8] = b"\xc9\xbd\xbc\xa8";
        let gbk: &[u8] = b"\xb1\xed\xca\xbe";
        let cyrillic: &[u8] = b"\xcf\xf0\xe8\xe2\xe5\xf2";
        let latin: &[u8] = b"caf\xe9 \x80\x81\x8d\x9d";
        let utf8 = "表示 café".as_bytes();
        let page = |meta: &[u8], text: &[u8]| -> Vec<u8> {
            [
                b"<html><head>".as_slice(),
                meta,
                b"<title>",
                text,
                b"</title><script>var s=\"",
                text,
                b"\";</script><script type=\"importmap\">{\"imports\":{\"lib/greet\":\"/src/lib/greet.js\"}}</script>\
                  <script type=module src=\"/src/main.js\"></script></head><body><p>",
                text,
                b"</p><script>var t=\"",
                text,
                b"\"</script></body></html>",
            ]
            .concat()
        };
        type Case<'a> = (Option<&'static encoding_rs::Encoding>, &'a [u8], &'a [u8]);
        let cases: [Case<'_>; 10] = [
            (Some(SHIFT_JIS), b"", sjis),
            (None, b"<meta charset=\"Shift_JIS\">", sjis),
            (
                None,
                b"<meta http-equiv=Content-Type content=\"text/html; charset=shift_jis\">",
                sjis,
            ),
            (Some(EUC_JP), b"", eucjp),
            (Some(GBK), b"", gbk),
            (Some(WINDOWS_1251), b"", cyrillic),
            (Some(WINDOWS_1252), b"", latin),
            // Undeclared: windows-1252, which maps every byte and back.
            (None, b"", latin),
            (None, b"", sjis),
            (Some(UTF_8), b"", utf8),
        ];
        for (encoding, meta, text) in cases {
            let html = page(meta, text);
            for step in [html.len(), 7, 1] {
                let mut spec = spec(&["/src/lib/greet.js"]);
                spec.encoding = encoding;
                let (out, report) = rewrite_bytes(spec, &html, step);
                let name = encoding.map_or("undeclared", |e| e.name());
                assert_eq!(count(&out, text), 4, "{name}, step {step}: {out:?}");
                assert!(
                    count(&out, url_of("/src/lib/greet.js").as_bytes()) > 0
                        && report.maps_merged == 1,
                    "{name}, step {step}: {report:?} {}",
                    String::from_utf8_lossy(&out)
                );
            }
        }
    }

    /// `<script type=importmap a=>`: lol_html reads what follows as
    /// markup, so the next script starts inside it and the first map's end
    /// tag never comes. Its text goes back where the next script begins;
    /// when lol_html closes it at `</html>`, nothing more is added (a
    /// merged empty map was, there; found by the fuzzer).
    #[test]
    fn a_map_a_quirk_leaves_open_adds_nothing_when_it_closes() {
        let html = "<html><head><script type=importmap a=><script type=importmap>{}</script>\
                    </head><body><p>x</p></body></html>";
        for early in [false, true] {
            let mut r = PageRewriter::with_early_exit(spec(&["/src/lib/greet.js"]), early);
            let mut out = r.write(html.as_bytes());
            out.extend(r.finish());
            let out = String::from_utf8(out).unwrap();
            assert!(out.ends_with("</body></html>"), "early exit {early}: {out}");
            assert_eq!(out.matches("\"imports\"").count(), 1, "{out}");
        }
    }

    /// Bytes the page's own charset has no character for (a Latin-1 é on a
    /// page said to be UTF-8, a cut Shift_JIS pair) stay as they are in
    /// every script but a map: lol_html once decoded and re-encoded every
    /// script's text (U+FFFD, `&#65533;` in Shift_JIS), found by a review.
    #[test]
    fn a_script_keeps_bytes_its_charset_has_no_character_for() {
        use encoding_rs::{SHIFT_JIS, UTF_8};
        for (encoding, text) in [
            (UTF_8, b"caf\xe9 \xff\xfe".as_slice()),
            (SHIFT_JIS, b"\x81\x20\x95".as_slice()),
        ] {
            let html = [
                b"<html><head><script>var s=\"".as_slice(),
                text,
                b"\";</script><script type=\"importmap\">{\"imports\":{\"lib/greet\":\"/src/lib/greet.js\"}}</script>\
                  <script type=module src=\"/src/main.js\"></script></head><body><script>var t=\"",
                text,
                b"\"</script></body></html>",
            ]
            .concat();
            for step in [html.len(), 7, 1] {
                let mut spec = spec(&["/src/lib/greet.js"]);
                spec.encoding = Some(encoding);
                let (out, report) = rewrite_bytes(spec, &html, step);
                assert_eq!(
                    count(&out, text),
                    2,
                    "{}, step {step}: {out:?}",
                    encoding.name()
                );
                assert_eq!(report.maps_merged, 1);
            }
        }
    }

    /// A dev page of TKT-1 over `/src/a.js`, with the probe.
    fn dev_page_with_probe(
        encoding: Option<&'static encoding_rs::Encoding>,
        external: bool,
    ) -> RewriteSpec {
        let mut t = spec(&["/src/a.js"]);
        t.encoding = encoding;
        t.probe = Some(ProbeSpec {
            key: stamp_model::ticket::TicketKey::parse("TKT-1").unwrap(),
            view: "dev",
            stage: stamp_model::ticket::Stage::Dev,
            own: Default::default(),
            badge: true,
            reports: Vec::new(),
            touch: Vec::new(),
            external,
        });
        t
    }

    /// Without a policy the page loads the probe's script from the proxy,
    /// unless a `<base>` (which would send its URL elsewhere) or a meta
    /// policy (which could refuse it) comes before it.
    #[test]
    fn the_probe_is_loaded_unless_something_before_it_decides_where_or_whether() {
        let with_probe = |external, encoding| {
            let mut t = dev_page_with_probe(encoding, external);
            // As the proxy gives every page without a policy header.
            t.meta_csp = Some(MetaCsp {
                script_nonce: "m3ta".into(),
                script_hash: crate::probe::script_hash().into(),
                style: None,
            });
            t
        };
        let loaded = format!("<script src=\"{}\"></script>", crate::probe::script_path());
        let inline = format!(">{}</script>", crate::probe::script());
        for (page, external, loads) in [
            ("<html><head><title>t</title></head><body>x</body></html>", true, true),
            ("<html><head><title>t</title></head><body>x</body></html>", false, false),
            // The probe goes first in `<head>`: a later base or policy was
            // not there when its script was asked for.
            (
                "<html><head><base href=/app/><meta http-equiv=Content-Security-Policy content=\"script-src 'none'\"></head><body>x</body></html>",
                true,
                true,
            ),
            // No `<head>`: the probe waits for `<body>`, after them.
            ("<base href=https://cdn.example/><body>x</body>", true, false),
            (
                "<meta http-equiv=Content-Security-Policy content=\"script-src 'nonce-x'\"><body>x</body>",
                true,
                false,
            ),
            ("<title>t</title><body>x</body>", true, true),
            // A base without `href`, or in a template, decides nothing.
            ("<base target=_top><body>x</body>", true, true),
            ("<template><base href=https://cdn.example/></template><body>x</body>", true, true),
        ] {
            let (out, _) = rewrite_str(with_probe(external, Some(encoding_rs::UTF_8)), page);
            assert_eq!(out.contains(&loaded), loads, "{page}: {out}");
            assert_eq!(out.contains(&inline), !loads, "{page}: {out}");
        }
        // No charset in the headers: the probe goes after a leading
        // `<meta charset>`, which may carry a policy as well.
        for (page, loads) in [
            ("<html><head><meta charset=utf-8><title>t</title></head>", true),
            (
                "<html><head><meta charset=utf-8 http-equiv=Content-Security-Policy content=\"script-src 'nonce-r'\"><title>t</title></head>",
                false,
            ),
        ] {
            let (out, _) = rewrite_str(with_probe(true, None), page);
            assert_eq!(out.contains(&loaded), loads, "{page}: {out}");
            assert_eq!(out.contains(&inline), !loads, "{page}: {out}");
        }
    }

    /// On a page whose headers name no charset, the probe goes after a
    /// `<meta charset>` that leads the head (the browser's prescan reads
    /// only the first 1024 bytes), else first in the head as always.
    #[test]
    fn the_probe_leaves_a_leading_meta_charset_first() {
        let with_probe = |encoding| dev_page_with_probe(encoding, false);
        let data = "<script type=\"application/json\" id=\"ticket-stamp-data\">";
        for (page, encoding, before) in [
            (
                "<html><head><meta charset=\"utf-8\"><title>t</title><script type=module src=/src/a.js></script></head></html>",
                None,
                "<html><head><meta charset=\"utf-8\">",
            ),
            (
                "<html><head><META HTTP-EQUIV=Content-Type content=\"text/html; charset=utf-8\"><script type=module src=/src/a.js></script></head></html>",
                None,
                "<html><head><META HTTP-EQUIV=Content-Type content=\"text/html; charset=utf-8\">",
            ),
            (
                "<html><head><title>t</title><meta charset=utf-8></head><body></body></html>",
                None,
                "<html><head>",
            ),
            (
                "<html><head><script type=module src=/src/a.js></script></head></html>",
                None,
                "<html><head>",
            ),
            ("<html><head></head><body>x</body></html>", None, "<html><head>"),
            (
                "<html><head><meta charset=\"utf-8\"><title>t</title></head></html>",
                Some(encoding_rs::UTF_8),
                "<html><head>",
            ),
        ] {
            let (out, _) = rewrite_str(with_probe(encoding), page);
            assert!(out.starts_with(&format!("{before}{data}")), "{page}: {out}");
            assert_eq!(out.matches(data).count(), 1, "{out}");
        }
    }

    /// A byte order mark decides before the headers: UTF-8 after one is
    /// read as UTF-8 whatever `Content-Type` says; a UTF-16 page, which
    /// lol_html cannot read, goes out exactly as it came, and says so.
    #[test]
    fn a_byte_order_mark_decides_the_charset() {
        let text = "表示 café".as_bytes();
        let html = [
            b"\xef\xbb\xbf<head><title>".as_slice(),
            text,
            b"</title><script type=module src=\"/src/a.js\"></script></head><body>",
            text,
            b"</body>",
        ]
        .concat();
        // However the page is split: the mark is read whole.
        for step in [html.len(), 1, 2] {
            let mut declared = spec(&["/src/a.js"]);
            declared.encoding = Some(encoding_rs::SHIFT_JIS);
            let (out, report) = rewrite_bytes(declared, &html, step);
            assert_eq!(count(&out, text), 2, "{}", String::from_utf8_lossy(&out));
            assert_eq!(report.entries_rewritten, 1, "step {step}: {report:?}");
        }

        let utf16: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain(
                "<head><script type=module src=/src/a.js></script>"
                    .encode_utf16()
                    .flat_map(u16::to_le_bytes),
            )
            .collect();
        for step in [1, 2, 5] {
            let (out, report) = rewrite_bytes(spec(&["/src/a.js"]), &utf16, step);
            assert_eq!(out, utf16, "step {step}");
            assert!(report.utf16);
            assert_eq!(report.outcome(), "unreadable");
            assert!(report
                .nothing_applied()
                .is_some_and(|why| why.contains("UTF-16")));
        }
        // A page that is only the start of a mark, or nothing at all.
        for page in [&b"\xef\xbb"[..], b"\xef", b"\xff", b""] {
            let (out, _) = rewrite_bytes(spec(&["/src/a.js"]), page, 1);
            assert!(out.starts_with(page), "{page:?}: {out:?}");
        }
    }

    /// What the proxy writes into a page is ASCII: it reads the same in
    /// every charset the page may be in, and its script hash holds.
    #[test]
    fn what_the_proxy_adds_to_a_page_is_ascii() {
        assert!(crate::probe::script().is_ascii());
        let key = stamp_model::ticket::TicketKey::parse("TKT-1").unwrap();
        assert!(crate::badge::not_stamped(&key, "dev").is_ascii());
        let mut with_notice = spec(&[]);
        with_notice.notice = Some(crate::badge::notice(
            &key,
            stamp_model::ticket::View::Dev,
            &crate::badge::Stale::Closed,
            None,
            "/shop",
        ));
        let (out, _) = rewrite_str(with_notice, "<body>x</body>");
        assert!(out.is_ascii(), "{out}");
    }

    #[test]
    fn inserts_a_map_before_the_first_module_script() {
        let html = "<html><head><title>t</title><script type=module src=\"/src/main.js\"></script></head></html>";
        let (out, report) = rewrite_str(spec(&["/src/lib/greet.js"]), html);
        let map_at = out.find("<script type=\"importmap\">").unwrap();
        assert!(map_at < out.find("/src/main.js").unwrap(), "{out}");
        assert!(report.map_inserted);
        assert!(out.contains(&url_of("/src/lib/greet.js")));
    }

    #[test]
    fn inserts_without_a_head() {
        let html = "<script type=module>import '/src/a.js'</script>";
        let (out, _) = rewrite_str(spec(&["/src/a.js"]), html);
        assert!(out.starts_with("<script type=\"importmap\">"), "{out}");
    }

    #[test]
    fn a_notice_goes_with_the_overlay_and_alone_it_touches_nothing_else() {
        let html = "<head><script type=\"importmap\">{\"imports\": {\"lib/greet\": \"/src/lib/greet.js\"}}</script></head><body>shop</body>";
        // Released tickets (an overlay) and a stale link: both.
        let mut with_overlay = spec(&["/src/lib/greet.js"]);
        with_overlay.notice = Some("<p id=notice></p>".into());
        let (out, _) = rewrite_str(with_overlay, html);
        assert!(
            out.contains(&url_of("/src/lib/greet.js")),
            "the overlay stays: {out}"
        );
        assert!(out.contains("shop<p id=notice></p></body>"), "{out}");
        // Nothing released: the page is left alone but for the notice.
        let mut alone = spec(&[]);
        alone.notice = Some("<p id=notice></p>".into());
        let (out, _) = rewrite_str(alone, html);
        assert_eq!(
            out,
            html.replace("shop</body>", "shop<p id=notice></p></body>")
        );
    }

    #[test]
    fn merges_a_map_split_across_chunks() {
        let html = "<head><script type=\"importmap\">{\"imports\": {\"lib/greet\": \"/src/lib/greet.js\"}}</script><script type=module src=/src/main.js></script>";
        let mut r = PageRewriter::new(spec(&["/src/lib/greet.js"]));
        let mut out = Vec::new();
        for piece in html.as_bytes().chunks(7) {
            out.extend(r.write(piece));
        }
        out.extend(r.finish());
        let out = String::from_utf8(out).unwrap();
        assert_eq!(out.matches("importmap").count(), 1, "{out}");
        assert!(
            out.contains(&format!(
                "\"lib/greet\":\"{}\"",
                url_of("/src/lib/greet.js")
            )),
            "{out}"
        );
        assert_eq!(r.report().maps_merged, 1);
    }

    #[test]
    fn rewrites_entry_points_the_map_cannot_reach() {
        let html = "<head><link rel=\"preload modulepreload\" href=\"../src/a.js\" integrity=\"sha384-x\"><script type=module src=\"/src/a.js?v=2\"></script><script type=module src=\"https://cdn.test/src/a.js\"></script>";
        let (out, report) = rewrite_str(spec(&["/src/a.js"]), html);
        assert!(
            out.contains(&format!("href=\"{}\">", url_of("/src/a.js"))),
            "production's integrity goes with production's URL: {out}"
        );
        assert!(
            out.contains(&format!("src=\"{}\"", url_of("/src/a.js"))),
            "{out}"
        );
        assert!(
            out.contains("https://cdn.test/src/a.js"),
            "cross-origin left alone: {out}"
        );
        assert_eq!(report.entries_rewritten, 2);
    }

    fn spec_of(entries: &[(&str, &str)]) -> RewriteSpec {
        let mut set = OverrideSet::new();
        for (spec, path) in entries {
            set.insert(
                spec.to_string(),
                ModuleRef {
                    path: path.to_string(),
                    hash: Hash::of(path.as_bytes()),
                    size: 1,
                },
            );
        }
        RewriteSpec {
            effective: Arc::new(Effective::new(set)),
            ..spec(&[])
        }
    }

    #[test]
    fn an_entry_a_page_preloads_and_imports_by_url_is_mapped_to_the_tickets() {
        let s = || {
            spec_of(&[
                ("/assets/index-[hash:8].js", "/assets/index-Zz99Yy88.js"),
                ("/src/exact.js", "/src/exact.js"),
            ])
        };
        let ticket = url_of("/assets/index-Zz99Yy88.js");
        let map_of = |out: &str| -> serde_json::Value {
            let open = "<script type=\"importmap\">";
            let start = out.find(open).unwrap() + open.len();
            let end = start + out[start..].find("</script>").unwrap();
            serde_json::from_str(&out[start..end]).unwrap()
        };
        // Preloaded, then imported by its URL from an inline script, as
        // written (a query kept, a relative URL as the page resolves it).
        for (href, key) in [
            ("/assets/index-Ab12Cd34.js", "/assets/index-Ab12Cd34.js"),
            // The page is /shop/.
            ("../assets/index-Ab12Cd34.js", "/assets/index-Ab12Cd34.js"),
            (
                "/assets/index-Ab12Cd34.js?v=2",
                "/assets/index-Ab12Cd34.js?v=2",
            ),
            (
                "/assets/index-Ab12Cd34.js#top",
                "/assets/index-Ab12Cd34.js#top",
            ),
        ] {
            let html = format!(
                "<head><link rel=modulepreload href=\"{href}\">\
                 <script type=module>import \"{href}\";</script></head><body></body>"
            );
            let (out, _) = rewrite_str(s(), &html);
            let map = map_of(&out);
            assert_eq!(map["imports"][key], ticket.as_str(), "{href}: {out}");
            // Production's chunks beside it keep production's entry.
            assert_eq!(map["scopes"]["/assets/"][key], key, "{href}: {out}");
            assert!(out.contains(&format!("href=\"{ticket}\"")), "{out}");
        }
        // A URL a map would read as a prefix gets no key.
        let html = "<head><link rel=modulepreload href=\"/assets/index-Ab12Cd34.js?r=/\"></head>";
        let (out, _) = rewrite_str(s(), html);
        assert!(map_of(&out).get("scopes").is_none(), "{out}");
        // The same from the early-exit rewriter, in pieces.
        let html = "<head><link rel=modulepreload href=\"/assets/index-Ab12Cd34.js\"></head><body><p>x</p></body>";
        let (whole, _) = rewrite_str(s(), html);
        for step in [1, 7, 64] {
            let (out, _) = rewrite_bytes(s(), html.as_bytes(), step);
            assert_eq!(String::from_utf8(out).unwrap(), whole, "pieces of {step}");
        }
        // An exact override, or a file no pattern matches, adds nothing.
        for href in ["/src/exact.js", "/assets/vendor-Ab12Cd34.js"] {
            let html = format!("<head><link rel=modulepreload href=\"{href}\"></head>");
            let (out, _) = rewrite_str(s(), &html);
            assert_eq!(
                map_of(&out)["imports"].as_object().unwrap().len(),
                map_of(&rewrite_str(s(), "<head><script type=module></script></head>").0)
                    ["imports"]
                    .as_object()
                    .unwrap()
                    .len(),
                "{href}: {out}"
            );
        }
    }

    #[test]
    fn a_bundles_entries_and_stylesheets_are_paired_by_pattern() {
        let s = spec_of(&[
            ("/assets/index-[hash:8].js", "/assets/index-Zz99Yy88.js"),
            ("/assets/index-[hash:8].css", "/assets/index-Qq11Ww22.css"),
            ("/static/main.[hash:8].js", "/static/main.1234abcd.js"),
        ]);
        let html =
            "<head><script type=module crossorigin src=\"/assets/index-Ab12Cd34.js\"></script>\
            <link rel=stylesheet crossorigin href=\"/assets/index-Ef56Gh78.css\">\
            <link rel=stylesheet href=\"/assets/vendor-Ef56Gh78.css\">\
            <script defer src=\"/static/main.9f8e7d6c.js\"></script>\
            <script type=text/template src=\"/static/main.9f8e7d6c.js\"></script></head>";
        let (out, report) = rewrite_str(s, html);
        assert!(
            out.contains(&format!("src=\"{}\"", url_of("/assets/index-Zz99Yy88.js"))),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "href=\"{}\"",
                url_of("/assets/index-Qq11Ww22.css")
            )),
            "{out}"
        );
        assert!(
            out.contains("/assets/vendor-Ef56Gh78.css"),
            "an untouched sheet: {out}"
        );
        assert!(
            out.contains(&format!(
                "defer src=\"{}\"",
                url_of("/static/main.1234abcd.js")
            )),
            "{out}"
        );
        assert!(
            out.contains("type=text/template src=\"/static/main.9f8e7d6c.js\""),
            "{out}"
        );
        assert_eq!(report.entries_rewritten, 3);
    }

    #[test]
    fn an_external_map_points_at_its_merged_variant() {
        let mut s = spec_of(&[("@app/greet", "/apps/greet.js")]);
        s.asset_origins = Arc::from(vec!["https://cdn.test".to_string()]);
        let id = s.effective.id.to_hex();
        let html = "<script type=systemjs-importmap src=\"/importmap.json\"></script>\
            <script type=importmap-shim src=\"https://cdn.test/m.json\" integrity=\"sha384-abc\"></script>\
            <script type=injector-importmap src=\"https://evil.test/m.json\"></script>\
            <script type=module src=/main.js></script>";
        let (out, report) = rewrite_str(s, html);
        assert!(
            out.contains(&format!(
                "src=\"/__stamp/map?v={id}&src=%2Fimportmap.json\""
            )),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "src=\"/__stamp/map?v={id}&src=https%3A%2F%2Fcdn.test%2Fm.json&urls=absolute&integrity=sha384-abc\""
            )),
            "{out}"
        );
        assert!(!out.contains("integrity=\"sha384-abc\""), "{out}");
        assert!(
            out.contains("src=\"https://evil.test/m.json\""),
            "unlisted origin left: {out}"
        );
        assert!(
            !report.map_inserted,
            "the page has maps: never a second one"
        );
        assert_eq!(report.external_maps, 2);
    }

    #[test]
    fn a_later_map_of_the_same_type_gets_no_keys_of_the_proxys() {
        let s = spec_of(&[("@app/greet", "/apps/greet.js")]);
        let id = s.effective.id.to_hex();
        let html = "<script type=systemjs-importmap>{\"imports\":{\"x\":\"/x.js\"}}</script>\
            <script type=systemjs-importmap src=\"/org.json\"></script>\
            <script type=systemjs-importmap>{\"imports\":{\"y\":\"/y.js\"}}</script>";
        let (out, _) = rewrite_str(s, html);
        assert!(
            out.contains(&format!(
                "src=\"/__stamp/map?v={id}&src=%2Forg.json&add=0\""
            )),
            "{out}"
        );
        // In the first map only.
        assert_eq!(out.matches("@app/greet").count(), 1, "{out}");
        assert!(out.find("@app/greet") < out.find("org.json"), "{out}");
    }

    #[test]
    fn a_cdn_script_overridden_by_the_ticket_is_served_from_its_mirror() {
        let s = spec_of(&[("https://cdn.test/lib/app.js", "https://cdn.test/lib/app.js")]);
        let html = "<script type=module src=\"https://cdn.test/lib/app.js\"></script>";
        let (out, _) = rewrite_str(s, html);
        assert!(
            out.contains(&format!(
                "src=\"{}\"",
                url_of("https://cdn.test/lib/app.js")
            )),
            "{out}"
        );
        assert!(
            out.contains("/__stamp/o/https/cdn.test/lib/app.js?__ts="),
            "{out}"
        );
    }

    #[test]
    fn an_invalid_map_is_left_exactly_as_it_was() {
        let html =
            "<script type=importmap>{ not json </script><script type=module src=/x.js></script>";
        let (out, report) = rewrite_str(spec(&["/src/a.js"]), html);
        assert!(
            out.starts_with("<script type=importmap>{ not json </script><!-- ticket-stamp:"),
            "{out}"
        );
        assert!(report.map_left.is_some());
        assert!(!report.map_inserted, "never a second map");
    }

    #[test]
    fn an_oversized_map_flows_through_unchanged() {
        let big = format!("{{\"imports\":{{\"a\":\"{}\"}}}}", "x".repeat(10_000));
        let html = format!("<script type=importmap>{big}</script>");
        let mut r = PageRewriter::new(spec(&["/src/a.js"]));
        let mut out = Vec::new();
        for piece in html.as_bytes().chunks(1000) {
            out.extend(r.write(piece));
        }
        out.extend(r.finish());
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains(&big), "map text intact");
        assert_eq!(r.report().outcome(), "map-too-large");
    }

    #[test]
    fn an_unterminated_map_gives_its_text_back() {
        let html = "<script type=importmap>{\"imports\":{}}";
        let (out, _) = rewrite_str(spec(&["/src/a.js"]), html);
        assert_eq!(out, html);
    }

    #[test]
    fn the_nonce_goes_on_the_map() {
        let mut s = spec(&["/src/a.js"]);
        s.nonce = Some("abc123".into());
        let (out, _) = rewrite_str(s.clone(), "<script type=module src=/src/a.js></script>");
        assert!(
            out.contains("<script type=\"importmap\" nonce=\"abc123\">"),
            "{out}"
        );
        let (out, _) = rewrite_str(s.clone(), "<script type=importmap nonce=abc123>{}</script>");
        assert!(
            out.contains("nonce=abc123>"),
            "the policy's nonce is kept as written: {out}"
        );
        let (out, _) = rewrite_str(s, "<script type=importmap nonce=stale>{}</script>");
        assert!(
            out.contains("nonce=\"abc123\""),
            "a nonce the policy does not accept is replaced: {out}"
        );
    }

    #[test]
    fn memory_exhaustion_passes_the_rest_through() {
        let mut s = spec(&["/src/a.js"]);
        s.memory_limit_bytes = 64 * 1024;
        // A tag the rewriter must buffer whole (it has a handler) and cannot.
        let huge = format!("<body data-x=\"{}\">", "y".repeat(200_000));
        let html =
            format!("<p>before</p>{huge}<p>after</p><script type=module src=/src/a.js></script>");
        let mut r = PageRewriter::new(s);
        let mut out = Vec::new();
        for piece in html.as_bytes().chunks(4096) {
            out.extend(r.write(piece));
        }
        out.extend(r.finish());
        let out = String::from_utf8(out).unwrap();
        let first_diff = out.bytes().zip(html.bytes()).position(|(a, b)| a != b);
        assert!(
            out == html,
            "output differs: len {} vs {}, first difference at {first_diff:?}",
            out.len(),
            html.len()
        );
        assert!(r.report().bailed_out);
    }

    /// Given up before the probe was in: the page says nothing applied (a
    /// production page, or one without a badge, stays as it was).
    #[test]
    fn a_page_the_rewriter_gave_up_on_says_nothing_applied() {
        let key = stamp_model::ticket::TicketKey::parse("TKT-9").unwrap();
        let with_probe = |view: &'static str, badge: bool| {
            let mut s = spec(&["/src/a.js"]);
            s.memory_limit_bytes = 64 * 1024;
            s.probe = Some(ProbeSpec {
                key: key.clone(),
                view,
                stage: stamp_model::ticket::Stage::Dev,
                own: Arc::new(s.effective.overrides.clone()),
                badge,
                reports: Vec::new(),
                touch: Vec::new(),
                external: false,
            });
            s
        };
        let huge = format!("<html><head data-x=\"{}\">", "y".repeat(200_000));
        let html = format!(
            "{huge}<script type=module src=/src/a.js></script></head><body>x</body></html>"
        );
        let run = |s: RewriteSpec| {
            let mut r = PageRewriter::new(s);
            let mut out = Vec::new();
            for piece in html.as_bytes().chunks(4096) {
                out.extend(r.write(piece));
            }
            out.extend(r.finish());
            (String::from_utf8(out).unwrap(), r.report())
        };
        let (out, report) = run(with_probe("dev", true));
        assert!(report.bailed_out);
        let (page, notice) = out.split_at(html.len());
        assert_eq!(page, html, "the page itself is unchanged");
        assert!(
            notice.contains("TKT-9")
                && notice.contains("nothing applied")
                && notice.contains("memory_limit_bytes"),
            "{notice}"
        );
        assert_eq!(run(with_probe("dev", false)).0, html, "no badge, no notice");
        assert_eq!(
            run(with_probe("prod", true)).0,
            html,
            "production says nothing"
        );
    }

    #[test]
    fn scripts_and_links_are_told_apart_by_their_attributes() {
        let html =
            "<head><script type=\"IMPORTMAP\">{\"imports\":{\"lib/a\":\"/src/a.js\"}}</script>\
            <script type=\" Module \" src=\"/src/a.js\"></script>\
            <script type=\"application/ld+json\">{\"src\":\"/src/a.js\"}</script>\
            <link rel=\"PRELOAD   ModulePreload\" href=\"/src/a.js\">\
            <link rel=\"icon\" href=\"/src/a.js\">\
            <link rel=\"alternate stylesheet\" href=\"/src/a.css\"></head>";
        let (out, report) = rewrite_str(spec(&["/src/a.js", "/src/a.css"]), html);
        assert_eq!(report.maps_merged, 1, "{out}");
        assert!(
            out.contains(&format!("\"lib/a\":\"{}\"", url_of("/src/a.js"))),
            "{out}"
        );
        // The module script, the preload and the stylesheet; not the data
        // block, not the icon.
        assert_eq!(report.entries_rewritten, 3, "{out}");
        assert!(out.contains("{\"src\":\"/src/a.js\"}"), "{out}");
        assert!(
            out.contains("<link rel=\"icon\" href=\"/src/a.js\">"),
            "{out}"
        );
        assert!(out.contains(&url_of("/src/a.css")), "{out}");
    }

    #[test]
    fn a_preload_in_a_template_neither_takes_the_map_nor_is_rewritten() {
        let html = "<body><template><link rel=modulepreload href=/src/a.js></template>\
            <script type=module src=/src/main.js></script></body>";
        let (out, report) = rewrite_str(spec(&["/src/a.js"]), html);
        assert!(
            out.contains("<template><link rel=modulepreload href=/src/a.js></template>"),
            "inert markup untouched: {out}"
        );
        let map_at = out.find("<script type=\"importmap\">").unwrap();
        assert!(map_at > out.find("</template>").unwrap(), "{out}");
        assert!(map_at < out.find("/src/main.js").unwrap(), "{out}");
        assert!(report.map_inserted);
    }

    #[test]
    fn a_map_in_svg_takes_no_text_from_the_scripts_after_it() {
        let s = spec(&["/src/a.js"]);
        for html in [
            "<svg><script type=\"importmap\"/></svg><script>boot()</script>",
            "<svg><script type=importmap>{}</svg><script>boot()</script>",
            "<math><script type=importmap>{\"imports\":{}}</script></math><script>boot()</script>",
        ] {
            let (out, report) = rewrite_str(s.clone(), html);
            assert_eq!(out, html, "left exactly as it was");
            assert_eq!(report.maps_merged, 0, "{out}");
        }
    }

    /// A page of an app deployed under `/app/`, at one of its deep links,
    /// with the `<base href>` such apps carry (Angular's, a router's).
    fn at_a_deep_link(paths: &[&str]) -> RewriteSpec {
        let mut s = spec(paths);
        s.page_url = Url::parse("http://app.test/app/settings/profile")
            .unwrap()
            .into();
        s
    }

    #[test]
    fn a_base_href_is_what_the_map_and_the_entries_resolve_against() {
        let html = "<head><base href=\"/app/\"><script type=\"importmap\">{\"imports\": {\"greet\": \"./lib/greet.js\"}}</script><script type=module src=\"main.js\"></script></head><body>x</body>";
        // What the browser loads: /app/lib/greet.js and /app/main.js.
        let (out, report) = rewrite_str(at_a_deep_link(&["/app/lib/greet.js"]), html);
        assert!(
            out.contains(&format!("\"greet\":\"{}\"", url_of("/app/lib/greet.js"))),
            "{out}"
        );
        assert_eq!(report.maps_merged, 1);
        let (out, report) = rewrite_str(at_a_deep_link(&["/app/main.js"]), html);
        assert!(
            out.contains(&format!("src=\"{}\"", url_of("/app/main.js"))),
            "{out}"
        );
        assert_eq!(report.entries_rewritten, 1);
        // What the page's own URL would resolve them to is not loaded:
        // the ticket's file there replaces nothing.
        for other in ["/app/settings/lib/greet.js", "/app/settings/main.js"] {
            let (out, report) = rewrite_str(at_a_deep_link(&[other]), html);
            assert!(out.contains("\"greet\":\"./lib/greet.js\""), "{out}");
            assert!(out.contains("src=\"main.js\""), "{out}");
            assert_eq!(report.entries_rewritten, 0, "{other}: {out}");
        }
    }

    #[test]
    fn only_the_first_base_href_of_the_page_counts_and_only_from_where_it_is() {
        let t = at_a_deep_link(&["/app/settings/a.js", "/app/b.js", "/app/c.js"]);
        // The map and the first script come before the base: the page's
        // URL. After it, the first base's; a second base changes nothing,
        // nor does one in a template, nor one without an href.
        let html = "<head><script type=module src=\"a.js\"></script>\
                    <template><base href=\"/elsewhere/\"></template><base target=_top>\
                    <base href=\"/app/\"><base href=\"/other/\">\
                    <script type=module src=\"b.js\"></script></head><body><script type=module src=\"c.js\"></script></body>";
        let (out, report) = rewrite_str(t, html);
        for p in ["/app/settings/a.js", "/app/b.js", "/app/c.js"] {
            assert!(
                out.contains(&format!("src=\"{}\"", url_of(p))),
                "{p}: {out}"
            );
        }
        assert_eq!(report.entries_rewritten, 3, "{out}");
        // A base that does not parse, or a data: one, leaves the page's URL.
        for base in ["http://[::1", "data:text/html,x"] {
            let html = format!("<head><base href=\"{base}\"><base href=\"/app/\"><script type=module src=\"a.js\"></script></head>");
            let (out, _) = rewrite_str(at_a_deep_link(&["/app/settings/a.js"]), &html);
            assert!(
                out.contains(&format!("src=\"{}\"", url_of("/app/settings/a.js"))),
                "{base}: {out}"
            );
        }
    }

    #[test]
    fn a_base_href_on_another_origin_stamps_nothing_and_says_why() {
        let html = "<head><base href=\"https://cdn.test/assets/\"><script type=\"importmap\">{\"imports\": {\"greet\": \"/app/lib/greet.js\"}}</script><script type=module src=\"/app/main.js\"></script></head><body>x</body>";
        let (out, report) =
            rewrite_str(at_a_deep_link(&["/app/lib/greet.js", "/app/main.js"]), html);
        assert_eq!(
            out, html,
            "the page's paths are the CDN's: left as they are"
        );
        assert!(report.base_elsewhere);
        assert_eq!(report.outcome(), "base-elsewhere");
        let why = report.nothing_applied().unwrap();
        assert!(why.contains("<base href> is on https://cdn.test"), "{why}");
        // No map either where the page has none to merge into.
        let html = "<head><base href=\"https://cdn.test/\"></head><body><script type=module src=\"/app/main.js\"></script></body>";
        let (out, report) = rewrite_str(at_a_deep_link(&["/app/lib/greet.js"]), html);
        assert_eq!(out, html);
        assert!(!report.map_inserted);
        // Before the base, the page is the proxy's: that much is stamped.
        let html = "<head><script type=module src=\"/app/main.js\"></script><base href=\"https://cdn.test/\"><script type=module src=\"/app/other.js\"></script></head>";
        let (out, report) = rewrite_str(at_a_deep_link(&["/app/main.js", "/app/other.js"]), html);
        assert!(out.contains(&url_of("/app/main.js")), "{out}");
        assert!(out.contains("src=\"/app/other.js\""), "{out}");
        assert_eq!(report.entries_rewritten, 1);
    }

    #[test]
    fn a_base_href_the_proxy_cannot_read_for_sure_stops_stamping() {
        let page = |base: &str| {
            format!("<head><base href=\"{base}\"><script type=module src=\"/app/main.js\"></script></head>")
        };
        let t = || at_a_deep_link(&["/app/main.js"]);
        for (base, why) in [
            // A browser reads both as //cdn.test/: another origin.
            ("&#47;&#47;cdn.test/", "is on http://cdn.test"),
            ("https&colon;//cdn.test/", "character references"),
            ("&#47&#47cdn.test/", "character references"),
            ("http://user:pw@app.test/app/", "user name or password"),
        ] {
            let html = page(base);
            let (out, report) = rewrite_str(t(), &html);
            assert_eq!(out, html, "{base}");
            let said = report.nothing_applied().unwrap_or_default();
            assert!(said.contains(why), "{base}: {said}");
        }
        // The same host over https, for a page the proxy takes for http (a
        // TLS terminator that sent no X-Forwarded-Proto): the proxy's.
        let (out, report) = rewrite_str(t(), &page("https://app.test/app/"));
        assert!(out.contains(&url_of("/app/main.js")), "{out}");
        assert!(!report.base_elsewhere);
    }

    #[test]
    fn a_base_href_the_pages_policy_blocks_is_not_the_base() {
        let html =
            "<head><base href=\"/app/\"><script type=module src=\"main.js\"></script></head>";
        let with = |policy: &[&str], paths: &[&str]| {
            let mut t = at_a_deep_link(paths);
            t.base_uri = crate::csp::base_uri_sources(policy);
            rewrite_str(t, html)
        };
        // Blocked: the browser resolves against the page's URL.
        for policy in [
            &["base-uri 'none'"][..],
            &["script-src 'self'; base-uri https:"],
        ] {
            let (out, _) = with(policy, &["/app/settings/main.js"]);
            assert!(
                out.contains(&url_of("/app/settings/main.js")),
                "{policy:?}: {out}"
            );
        }
        // Allowed: the base's.
        for policy in [&["base-uri 'self'"][..], &["default-src 'none'"], &[]] {
            let (out, _) = with(policy, &["/app/main.js"]);
            assert!(out.contains(&url_of("/app/main.js")), "{policy:?}: {out}");
        }
        // A list the proxy does not judge: it says so rather than guess.
        let (out, report) = with(&["base-uri https://app.test/app/"], &["/app/main.js"]);
        assert_eq!(out, html);
        assert!(
            report
                .nothing_applied()
                .unwrap_or_default()
                .contains("base-uri may or may not allow"),
            "{report:?}"
        );
    }

    #[test]
    fn a_notice_page_that_trips_lol_html_loses_nothing() {
        let html = "<head></head><body><script a=><svg></svg><p>after</p></body>";
        let mut alone = spec(&[]);
        alone.notice = Some("<p id=notice></p>".into());
        let (out, report) = rewrite_str(alone, html);
        assert!(!report.failed, "{report:?}");
        assert!(out.contains("<p id=notice></p>"), "{out}");
        assert_eq!(
            out.replace("<p id=notice></p>", ""),
            html,
            "every byte kept"
        );
    }

    #[test]
    fn a_template_in_svg_holds_nothing_inert() {
        let t = || spec(&["/src/a.js"]);
        for svg in ["<svg><template/></svg>", "<svg><template></template></svg>"] {
            let html = format!("{svg}<script type=module src=\"/src/a.js\"></script>");
            let (out, report) = rewrite_str(t(), &html);
            assert!(out.contains(&url_of("/src/a.js")), "{svg}: {out}");
            assert_eq!(report.entries_rewritten, 1, "{svg}");
        }
        // HTML's own stays inert, to its end tag.
        let html = "<template><script type=module src=\"/src/a.js\"></script></template>";
        let (out, _) = rewrite_str(t(), html);
        assert!(out.starts_with(html), "{out}");
    }

    /// Soundness: whatever a value resolves to against any base, if the
    /// ticket replaces that file, `may_replace` says it may. Values are
    /// drawn from the ways a URL names a file that only resolving tells
    /// apart (dot segments, percent-encoding, backslashes, controls,
    /// spaces, other origins, empty paths).
    #[test]
    fn may_replace_never_misses_a_file_the_ticket_replaces() {
        use rand::{Rng, SeedableRng};
        let eff = crate::effective::tests::variant(&[
            "/src/app.js",
            "/src/lib/greet.js",
            "https://cdn.example/x/lib.js",
            "/assets/index-[hash:8].js",
        ]);
        let pieces = [
            "/",
            "src",
            "app.js",
            "greet.js",
            "lib.js",
            "lib",
            "..",
            ".",
            "%2e",
            "%2E",
            "%61pp.js",
            "\\",
            "\t",
            "\n",
            " ",
            "\u{1}",
            "?",
            "#",
            "v=1",
            "//",
            "cdn.example",
            "https:",
            "x",
            "assets",
            "index-",
            "Ab12Cd34",
            "AB12CD34",
            ".js",
            "APP.JS",
            ";",
            "&",
            "@",
            ":",
            "~",
            "index-Ab12Cd34.js",
        ];
        let bases = [
            "https://shop.example/",
            "https://shop.example/src/",
            "https://shop.example/src/lib/x.html",
            "https://shop.example/assets/",
            "https://cdn.example/x/",
            "https://shop.example/app.js",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(32);
        let mut replaced = 0;
        for round in 0..200_000 {
            let mut value = String::new();
            for _ in 0..rng.random_range(0..7) {
                value.push_str(pieces[rng.random_range(0..pieces.len())]);
            }
            let base = url::Url::parse(bases[rng.random_range(0..bases.len())]).unwrap();
            let hit = location(&base, &value).is_some_and(|l| eff.replacement(&l).is_some());
            if hit {
                replaced += 1;
                assert!(
                    eff.may_replace(&value),
                    "round {round}: {value:?} against {base} is replaced"
                );
            }
        }
        assert!(replaced > 300, "{replaced} values named a replaced file");
        // And it does tell the usual others apart.
        for other in [
            "/assets/analytics.js",
            "https://cdn.example/gtag.js",
            "vendor.js",
            "/src/app.json",
        ] {
            assert!(!eff.may_replace(other), "{other}");
        }
        for maybe in [
            "app.js",
            "/SRC/App.js?v=1",
            "%61pp.js",
            "/src/",
            "../x/..",
            "",
            "?v=1",
            "index-Qq11Ww22.js",
        ] {
            assert!(eff.may_replace(maybe), "{maybe:?}");
        }
    }
}
