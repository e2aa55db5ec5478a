//! Request classification: which ticket (if any) a request selects, from the
//! query (`?dev=KEY`, `?qa=KEY`, `?stamp=off`) or else the ticket cookie, and
//! whether it asks for a ticket module body (`?__ts=<hash>`).
//!
//! Pure functions over the request line and cookies, so every hostile input
//! can be tested without a socket. Rules, deterministic:
//! - `stamp=off` beats everything and clears the cookie;
//! - otherwise the last `dev=`/`qa=` parameter of the query wins;
//! - a query selection beats the cookie;
//! - a malformed selection never fails the request: production is served and
//!   the reason travels in the `x-ticket-stamp` response header.

pub use stamp_model::ticket::View;
use stamp_model::ticket::{Hash, KeyError, TicketKey, MODULE_PARAM};

/// Request header names read on every request, made once: a name given as
/// `&str` is parsed (checked, matched against the standard names) on every
/// lookup.
pub mod names {
    use http::HeaderName;

    pub static SEC_FETCH_DEST: HeaderName = HeaderName::from_static("sec-fetch-dest");
    pub static SEC_FETCH_MODE: HeaderName = HeaderName::from_static("sec-fetch-mode");
    pub static SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");
    pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
    pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
    pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    pub static SERVICE_WORKER: HeaderName = HeaderName::from_static("service-worker");
    pub static CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");
    pub static SURROGATE_CONTROL: HeaderName = HeaderName::from_static("surrogate-control");
    pub static CLEAR_SITE_DATA: HeaderName = HeaderName::from_static("clear-site-data");
    pub static SEC_PURPOSE: HeaderName = HeaderName::from_static("sec-purpose");
    pub static PURPOSE: HeaderName = HeaderName::from_static("purpose");
    pub static X_MOZ: HeaderName = HeaderName::from_static("x-moz");
    pub static X_PURPOSE: HeaderName = HeaderName::from_static("x-purpose");
    /// Turbo 8's hover prefetch and `data-turbo-preload`.
    pub static X_SEC_PURPOSE: HeaderName = HeaderName::from_static("x-sec-purpose");
    /// htmx's preload extension.
    pub static HX_PRELOADED: HeaderName = HeaderName::from_static("hx-preloaded");
    /// Next.js's router prefetching a route.
    pub static NEXT_ROUTER_PREFETCH: HeaderName = HeaderName::from_static("next-router-prefetch");
    pub static HX_REQUEST: HeaderName = HeaderName::from_static("hx-request");
    pub static X_TURBO_REQUEST_ID: HeaderName = HeaderName::from_static("x-turbo-request-id");
    pub static TURBO_FRAME: HeaderName = HeaderName::from_static("turbo-frame");
    pub static HX_HISTORY_RESTORE_REQUEST: HeaderName =
        HeaderName::from_static("hx-history-restore-request");
    pub static X_PJAX: HeaderName = HeaderName::from_static("x-pjax");
    pub static X_REQUESTED_WITH: HeaderName = HeaderName::from_static("x-requested-with");
    pub static HX_BOOSTED: HeaderName = HeaderName::from_static("hx-boosted");
    /// What the document a page would be shown in runs (`<key> <view>
    /// <set id>`), as its probe tells Turbo and htmx to say; production's
    /// documents say nothing.
    pub static X_TICKET_STAMP_DOCUMENT: HeaderName =
        HeaderName::from_static("x-ticket-stamp-document");
    pub static HX_REDIRECT: HeaderName = HeaderName::from_static("hx-redirect");
    pub static NO_VARY_SEARCH: HeaderName = HeaderName::from_static("no-vary-search");
    /// What the proxy did with a response (`x-ticket-stamp`).
    pub static X_TICKET_STAMP: HeaderName =
        HeaderName::from_static(stamp_model::wire::header::INFO);
}

/// Where a selection came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Query,
    Cookie,
    /// The query of the page a same-origin request came from, when the
    /// browser has no selection: a page a service worker answered from its
    /// cache (the `?dev=` navigation never reached the proxy).
    Referer,
}

/// Set by the badge's exit: a page of the ticket still open elsewhere must
/// not select it again through its requests' `Referer`.
pub const LEFT_COOKIE: &str = "ticket_stamp_left";

/// A ticket named by the `Referer` of a page the proxy never answered (a
/// service worker did, from its cache), which nobody was asked about: the
/// link may have come from another site. It selects nothing; it sets the
/// app's service worker aside so that the page's next load reaches the
/// proxy, and that navigation asks first (`view.KEY`).
pub const PENDING_COOKIE: &str = "ticket_stamp_pending";

/// What a request selects before the ticket is looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Nothing selected: production (plus the released overlay).
    None,
    /// `?stamp=off`: production, and the cookie is cleared.
    Off,
    Ticket {
        key: TicketKey,
        view: View,
        source: Source,
        /// A share token (`?st=` or carried in the cookie), for protected previews.
        token: Option<String>,
    },
    /// A selection that could not be parsed; production is served.
    Invalid { reason: String, source: Source },
}

/// The classification of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub selection: Selection,
    /// `?__ts=` was present: `Some(Ok(hash))` or `Some(Err(()))` when malformed.
    pub module: Option<Result<Hash, ()>>,
    /// es-module-shims' hot reload asks again for a module it had with
    /// `?v=N` appended to the whole URL (`?__ts=<hash>?v=2`): then `N`.
    pub hot: Option<u32>,
    /// The request carried the ticket cookie (so clearing it is meaningful).
    pub has_cookie: bool,
}

/// `<hash>?v=<N>` → (`<hash>`, `Some(N)`): es-module-shims appends its
/// reload count to a URL as `?v=N`, even to one that has a query. Only
/// decimal digits count; anything else stays part of the value (and is a
/// malformed hash).
fn split_hot_version(value: &str) -> (&str, Option<u32>) {
    if let Some((hash, n)) = value.rsplit_once("?v=") {
        if !n.is_empty() && n.len() <= 9 && n.bytes().all(|b| b.is_ascii_digit()) {
            return (hash, n.parse().ok());
        }
    }
    (value, None)
}

/// Longest cookie value considered (anything longer is hostile).
const MAX_COOKIE_VALUE: usize = 128;

/// Classifies a request from its query string and its `Cookie` header values.
pub fn classify<'a>(
    query: Option<&str>,
    cookie_headers: impl IntoIterator<Item = &'a [u8]>,
    cookie_name: &str,
) -> Classified {
    let mut from_query: Option<Selection> = None;
    let mut off = false;
    let mut module = None;
    let mut hot = None;
    let mut share_token: Option<String> = None;
    if let Some(q) = query {
        for (name, value) in url::form_urlencoded::parse(q.as_bytes()) {
            match name.as_ref() {
                "dev" => from_query = Some(parse_selection(View::Dev, &value, Source::Query)),
                "qa" => from_query = Some(parse_selection(View::Qa, &value, Source::Query)),
                "stamp" => {
                    if value.eq_ignore_ascii_case("off") {
                        off = true;
                    } else if from_query.is_none() {
                        from_query = Some(Selection::Invalid {
                            reason: "the only value of ?stamp= is off".into(),
                            source: Source::Query,
                        });
                    }
                }
                MODULE_PARAM if module.is_none() => {
                    let (hash, version) = split_hot_version(&value);
                    module = Some(Hash::parse(hash).ok_or(()));
                    hot = version;
                }
                "st" => share_token = Some(value.into_owned()),
                _ => {}
            }
        }
    }
    let (cookie, copies) = find_cookie(cookie_headers, cookie_name);
    let has_cookie = copies > 0;
    let selection = if off {
        Selection::Off
    } else if let Some(sel) = from_query {
        match sel {
            Selection::Ticket {
                key, view, source, ..
            } => Selection::Ticket {
                key,
                view,
                source,
                token: share_token.filter(|t| stamp_model::share::looks_like_token(t)),
            },
            other => other,
        }
    } else if copies > 1 && cookie.is_none() {
        // Two different values: one may have been tossed in by a sibling
        // subdomain or set for a deeper path. Neither is trusted.
        Selection::Invalid {
            reason: "several different ticket cookies were sent (cleared)".into(),
            source: Source::Cookie,
        }
    } else if let Some(value) = cookie {
        parse_cookie_value(value)
    } else {
        Selection::None
    };
    Classified {
        selection,
        module,
        hot,
        has_cookie,
    }
}

fn parse_selection(view: View, value: &str, source: Source) -> Selection {
    match TicketKey::parse(value) {
        Ok(key) => Selection::Ticket {
            key,
            view,
            source,
            token: None,
        },
        Err(e) => Selection::Invalid {
            reason: key_reason(view, e, source),
            source,
        },
    }
}

fn key_reason(view: View, e: KeyError, source: Source) -> String {
    // Never echo the raw input: it goes into a response header.
    let place = match source {
        Source::Query | Source::Referer => format!("?{}=", view.as_str()),
        Source::Cookie => "the ticket cookie".to_string(),
    };
    format!("{place}: {e}")
}

/// The cookie's value for a selection: `dev.TKT-1`, or `dev.TKT-1.<token>`
/// on a protected preview.
#[cfg(feature = "testing")]
pub fn cookie_value(key: &TicketKey, view: View, token: Option<&str>) -> String {
    let mut out = String::new();
    write_cookie_value(&mut out, key, view, token);
    out
}

/// [`cookie_value`], written at the end of `out`.
fn write_cookie_value(out: &mut String, key: &TicketKey, view: View, token: Option<&str>) {
    use std::fmt::Write as _;
    let _ = write!(out, "{}.{key}", view.as_str());
    if let Some(t) = token {
        let _ = write!(out, ".{t}");
    }
}

fn parse_cookie_value(value: &[u8]) -> Selection {
    let invalid = |reason: &str| Selection::Invalid {
        reason: reason.to_string(),
        source: Source::Cookie,
    };
    if value.len() > MAX_COOKIE_VALUE {
        return invalid("the ticket cookie is too long");
    }
    let Ok(text) = std::str::from_utf8(value) else {
        return invalid("the ticket cookie is not text");
    };
    let text = text.trim_matches('"');
    let Some((view, rest)) = text.split_once('.') else {
        return invalid("the ticket cookie is malformed");
    };
    let view = match view {
        "dev" => View::Dev,
        "qa" => View::Qa,
        _ => return invalid("the ticket cookie names no stage"),
    };
    let (key, token) = match rest.split_once('.') {
        Some((key, token)) if stamp_model::share::looks_like_token(token) => (key, Some(token)),
        Some(_) => return invalid("the ticket cookie is malformed"),
        None => (rest, None),
    };
    match parse_selection(view, key, Source::Cookie) {
        Selection::Ticket {
            key, view, source, ..
        } => Selection::Ticket {
            key,
            view,
            source,
            token: token.map(str::to_string),
        },
        other => other,
    }
}

/// The cookie called `name` across all `Cookie` headers (HTTP/2 clients
/// may send one header per cookie), and how many copies were sent. Copies
/// with one value count as that value; copies with different values give
/// `None` (the caller refuses them), whatever their order.
fn find_cookie<'a>(
    headers: impl IntoIterator<Item = &'a [u8]>,
    name: &str,
) -> (Option<&'a [u8]>, usize) {
    let mut found: Option<&'a [u8]> = None;
    let mut copies = 0;
    let mut conflict = false;
    for header in headers {
        for pair in header.split(|&b| b == b';') {
            let pair = trim_ascii(pair);
            let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                continue;
            };
            if trim_ascii(&pair[..eq]) == name.as_bytes() {
                let value = trim_ascii(&pair[eq + 1..]);
                copies += 1;
                match found {
                    Some(v) if v != value => conflict = true,
                    _ => found = Some(value),
                }
            }
        }
    }
    (found.filter(|_| !conflict), copies)
}

/// The ticket cookie's name as sent: over TLS `__Host-<name>`, which a
/// sibling subdomain cannot set (the browser requires Secure, Path=/ and no
/// Domain), so a plain `<name>` cookie tossed in from elsewhere is ignored.
pub fn cookie_name(base: &str, secure: bool) -> String {
    if secure {
        format!("__Host-{base}")
    } else {
        base.to_string()
    }
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end]
}

/// `Set-Cookie` that selects a ticket.
pub fn set_cookie(
    name: &str,
    key: &TicketKey,
    view: View,
    token: Option<&str>,
    max_age_secs: u64,
    secure: bool,
) -> String {
    use std::fmt::Write as _;
    // Written into room for it: `format!` guesses too small and grows.
    let mut out = String::with_capacity(160);
    let _ = write!(out, "{name}=");
    write_cookie_value(&mut out, key, view, token);
    let _ = write!(
        out,
        "; Path=/; Max-Age={max_age_secs}; HttpOnly; SameSite=Lax{}",
        if secure { "; Secure" } else { "" }
    );
    out
}

/// `Set-Cookie` that clears the selection.
pub fn clear_cookie(name: &str, secure: bool) -> String {
    format!(
        "{name}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax{}",
        if secure { "; Secure" } else { "" }
    )
}

/// How a marker cookie names `key`'s `view`: `view.KEY`.
pub fn mark(key: &TicketKey, view: View) -> String {
    format!("{}.{}", view.as_str(), key.as_str())
}

/// How long a pending mark lasts, seconds.
pub const PENDING_MAX_AGE: u64 = 600;

/// The pending cookie for `key`'s `view` (see [`PENDING_COOKIE`]): for as
/// long as the page's service worker takes to be set aside and reload it.
pub fn pending_cookie(key: &TicketKey, view: View, secure: bool) -> String {
    format!(
        "{PENDING_COOKIE}={}; Path=/; Max-Age={PENDING_MAX_AGE}; HttpOnly; SameSite=Lax{}",
        mark(key, view),
        if secure { "; Secure" } else { "" }
    )
}

/// The cookie that says this browser left a ticket (the badge's exit,
/// `?stamp=off`, a link framed by another site): for as long as a
/// selection would have lasted, a page of that ticket still open in another
/// tab does not name it again through the `Referer` of its requests. Its
/// value is the ticket left (`view.KEY`), so another ticket's link still
/// works; `1` (no ticket known) stands for any. A link opened on purpose
/// clears it.
pub fn left_cookie(left: Option<&str>, secure: bool, max_age: u64) -> String {
    let value = left
        .filter(|v| {
            v.len() <= 80
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        })
        .unwrap_or("1");
    format!(
        "{LEFT_COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{}",
        if secure { "; Secure" } else { "" }
    )
}

/// The ticket (`view.KEY`) a selection cookie's value names, whatever
/// share token follows it.
pub fn cookie_ticket(value: &str) -> Option<String> {
    let mut parts = value.splitn(3, '.');
    let view = parts.next().filter(|v| *v == "dev" || *v == "qa")?;
    let key = TicketKey::parse(parts.next()?).ok()?;
    Some(format!("{view}.{}", key.as_str()))
}

/// The ticket (`view.KEY`) the selection cookie `name` among `cookies`
/// puts this browser on: what leaving it marks.
pub fn ticket_on<'a>(cookies: impl Iterator<Item = &'a [u8]>, name: &str) -> Option<String> {
    named_cookie(cookies, name).and_then(cookie_ticket)
}

/// Whether a marker cookie (`view.KEY`, see [`left_cookie`] and
/// [`PENDING_COOKIE`]) names `key`'s `view`; `1` names any.
pub fn marks(value: &str, key: &TicketKey, view: View, any: bool) -> bool {
    (any && value == "1")
        || value
            .strip_prefix(view.as_str())
            .and_then(|rest| rest.strip_prefix('.'))
            .is_some_and(|k| k.eq_ignore_ascii_case(key.as_str()))
}

/// `Clear-Site-Data` for a response that changes what the browser is on.
/// A page of one side that the browser fetched ahead (speculation rules'
/// prefetch and prerender, kept for the tab that asked) is otherwise shown
/// on the next click after the change, without asking: Chromium keeps using
/// a prefetched page after the cookie it was fetched with is cleared. These
/// two kinds touch nothing else (no HTTP cache, cookie or storage of the
/// app's), and browsers that do not know them ignore the header.
pub const SPECULATION_CLEARED: &str = "\"prefetchCache\", \"prerenderCache\"";

/// The same, and the browser's HTTP cache for the origin, for the page
/// that puts a browser on a ticket: a page of production the browser kept
/// (`max-age`, or a `Last-Modified` left to its heuristic) would answer a
/// link on the ticket without asking, and show production with no badge;
/// a file it kept would answer a worker's import at a path where the
/// ticket has its own. Chromium also drops the origin's pages kept for
/// Back and Forward.
pub const CACHE_AND_SPECULATION_CLEARED: &str = "\"cache\", \"prefetchCache\", \"prerenderCache\"";

/// The query parameters the proxy reads: the selection ([`classify`]), a
/// ticket module's address (`__ts`) and live reload (`stamp_live`).
pub const PARAMS: [&str; 6] = [
    "dev",
    "qa",
    "stamp",
    "st",
    MODULE_PARAM,
    stamp_model::wire::LIVE_PARAM,
];

/// What becomes of an origin's `No-Vary-Search`.
#[derive(Debug, PartialEq, Eq)]
pub enum NoVarySearch {
    /// It ignores none of [`PARAMS`]: sent as it came.
    AsIs,
    /// Sent as this instead.
    Changed(String),
    /// Not sent: with no header every parameter counts.
    Dropped,
}

/// An origin's `No-Vary-Search` with [`PARAMS`] made to count. The header
/// tells browsers which query parameters do not change a response, so that
/// a copy kept for one URL answers another (Chromium's HTTP cache and
/// speculation rules' prefetches both honour it): an origin whose pages say
/// `params` (none matters) would let a browser answer `/?dev=TKT-1` with the
/// production `/` it kept, and a module's `?__ts=` with production's file,
/// and the request would never reach the proxy. So ours are added to
/// `except` when `params` ignores every parameter, and taken out of a
/// `params` list (names compared as browsers compare them, `+` and
/// percent escapes decoded). Any value read otherwise by some browser (it
/// does not parse, `params` or `except` not of the field's shape, a name
/// that is not a string) is dropped: with no header, every parameter
/// counts, whatever the reader.
pub fn no_vary_search_keeping_ours(value: &[u8]) -> NoVarySearch {
    use sfv::{BareItem, InnerList, Item, ListEntry, Parser, SerializeValue};
    let Ok(mut dict) = Parser::parse_dictionary(value) else {
        return NoVarySearch::Dropped;
    };
    let name = |i: &Item| match &i.bare_item {
        BareItem::String(s) => Some(
            url::form_urlencoded::parse(s.as_bytes())
                .next()
                .map(|(k, _)| k.into_owned())
                .unwrap_or_default(),
        ),
        _ => None,
    };
    let strings = |l: &InnerList| l.items.iter().all(|i| name(i).is_some());
    let ours = |i: &Item| name(i).is_some_and(|n| PARAMS.contains(&n.as_str()));
    let changed = match dict.get_mut("params") {
        None
        | Some(ListEntry::Item(Item {
            bare_item: BareItem::Boolean(false),
            ..
        })) => return NoVarySearch::AsIs,
        Some(ListEntry::Item(Item {
            bare_item: BareItem::Boolean(true),
            ..
        })) => {
            let except = dict
                .entry("except".to_string())
                .or_insert_with(|| ListEntry::InnerList(InnerList::new(Vec::new())));
            let ListEntry::InnerList(list) = except else {
                return NoVarySearch::Dropped;
            };
            if !strings(list) {
                return NoVarySearch::Dropped;
            }
            let mut changed = false;
            for p in PARAMS {
                if !list.items.iter().any(|i| name(i).as_deref() == Some(p)) {
                    list.items.push(Item::new(BareItem::String(p.to_string())));
                    changed = true;
                }
            }
            changed
        }
        Some(ListEntry::InnerList(list)) => {
            if !strings(list) {
                return NoVarySearch::Dropped;
            }
            let before = list.items.len();
            list.items.retain(|i| !ours(i));
            list.items.len() != before
        }
        Some(_) => return NoVarySearch::Dropped,
    };
    if !changed {
        return NoVarySearch::AsIs;
    }
    match dict.serialize_value() {
        Ok(v) => NoVarySearch::Changed(v),
        Err(_) => NoVarySearch::Dropped,
    }
}

/// Whether a request asks ahead of need, for a page that may never be
/// shown. The browser's own: a prefetch or prerender (`Sec-Purpose:
/// prefetch`, `prefetch;prerender`; the older `Purpose: prefetch`,
/// Firefox's `X-Moz: prefetch`, Safari's `X-Purpose: preview`). And the
/// libraries that fetch a link the mouse rests on: Turbo 8
/// (`X-Sec-Purpose: prefetch`, also `data-turbo-preload`), htmx's preload
/// extension (`HX-Preloaded: true`), Next.js's router
/// (`Next-Router-Prefetch: 1`). A browser drops such an answer unless it is
/// a `2xx`, and asks again for real; htmx's extension only warms the HTTP
/// cache. Turbo keeps its prefetch for the click, so it is answered as a
/// link followed in place ([`in_page_visit`]).
pub fn is_speculative(headers: &http::HeaderMap) -> bool {
    let says = |name: &http::HeaderName, words: &[&[u8]]| {
        headers.get_all(name).iter().any(|v| {
            v.as_bytes()
                .split(|b| *b == b';' || *b == b',')
                .any(|item| {
                    let item = item.trim_ascii();
                    words.iter().any(|w| item.eq_ignore_ascii_case(w))
                })
        })
    };
    says(&names::SEC_PURPOSE, &[b"prefetch"])
        || says(&names::PURPOSE, &[b"prefetch", b"preview"])
        || says(&names::X_PURPOSE, &[b"prefetch", b"preview"])
        || says(&names::X_MOZ, &[b"prefetch"])
        || says(&names::X_SEC_PURPOSE, &[b"prefetch"])
        || says(&names::HX_PRELOADED, &[b"true"])
        || says(&names::NEXT_ROUTER_PREFETCH, &[b"1"])
}

/// A library that follows a link by fetching its page and showing it in
/// the document already open, whose modules and import map stay (a module
/// already loaded is never resolved again, whatever map the new page
/// brings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InPage {
    /// Turbo 8: Drive visits, frames, its prefetches (`X-Turbo-Request-Id`
    /// on every fetch it makes).
    Turbo,
    /// htmx's boosted links (`HX-Request` and `HX-Boosted: true`).
    Htmx,
    /// jquery-pjax (`X-PJAX: true`) and Swup (`X-Requested-With: swup`),
    /// which load a link as a page when its answer fails (pjax) or holds
    /// none of their containers (Swup).
    Other,
}

/// Whether a `GET` or `HEAD` is a library's fetch of a page to show in
/// place of the one open ([`InPage`]), by the library's own headers: other
/// fetches of HTML (a fragment, a service worker's copy of a navigation)
/// are not told apart from pages and are left alone. Never a navigation.
pub fn in_page_visit(method: &http::Method, headers: &http::HeaderMap) -> Option<InPage> {
    if method != http::Method::GET && method != http::Method::HEAD {
        return None;
    }
    if value_is(headers, &names::SEC_FETCH_MODE, b"navigate") {
        return None;
    }
    if headers.contains_key(&names::X_TURBO_REQUEST_ID) {
        Some(InPage::Turbo)
    } else if value_is(headers, &names::HX_REQUEST, b"true")
        && value_is(headers, &names::HX_BOOSTED, b"true")
    {
        Some(InPage::Htmx)
    } else if value_is(headers, &names::X_PJAX, b"true")
        || value_is(headers, &names::X_REQUESTED_WITH, b"swup")
    {
        Some(InPage::Other)
    } else {
        None
    }
}

/// Whether a page fetched to be shown in place would be shown in a document
/// that runs other modules than the page is made for: `runs` is what this
/// request's page is (a ticket, its view and its variant's set id, or
/// `None` for production), and the document's probe says what it runs (in
/// [`names::X_TICKET_STAMP_DOCUMENT`]: `<ticket> <view> <set id>`; a
/// production page has no probe and says nothing). That document keeps its
/// modules whatever the page brings: the ticket's after the visitor left it
/// in another tab or its cookie went stale, production's after another tab
/// opened a ticket, the ticket's last ones after an upload or a release.
pub fn shown_in_another_document(
    headers: &http::HeaderMap,
    runs: Option<(&TicketKey, View, &Hash)>,
) -> bool {
    let said = headers
        .get(&names::X_TICKET_STAMP_DOCUMENT)
        .map(|v| v.as_bytes().trim_ascii());
    match (said, runs) {
        (None, None) => false,
        (Some(said), Some((key, view, id))) => {
            let mut parts = said.split(|&b| b == b' ');
            let same = parts.next() == Some(key.as_str().as_bytes())
                && parts.next() == Some(view.as_str().as_bytes())
                && parts.next() == Some(id.to_hex().as_bytes())
                && parts.next().is_none();
            !same
        }
        _ => true,
    }
}

/// Whether a ticket the URL names (`?dev=`, `?qa=`, `?stamp=off`) may
/// change what this browser is on: a navigation (a page opened, which asks
/// first when it comes from another site, or a frame, which another site's
/// page gets production in: see `service::plan`), a fetch of the origin's
/// own scripts (`Sec-Fetch-Dest: empty` from the same origin: an app's
/// `fetch`, Turbo or htmx showing a link in place), or a request that does
/// not say what it is (a client without fetch metadata). Never what an
/// element loads (an image, a stylesheet, a script, a font, media), nor a
/// fetch from another origin of the site: any page of the site (a sibling
/// subdomain's, a comment's Markdown on the app itself) could embed
/// `<img src="https://app.example/x.png?dev=KEY">`, and the answer's
/// `SameSite=Lax` cookie lands on a same-site request with nobody asked.
pub fn url_may_select(headers: &http::HeaderMap) -> bool {
    let Some(mode) = headers.get(&names::SEC_FETCH_MODE) else {
        return true;
    };
    // (Browsers send the three together; a client that sends the mode
    // alone is taken at its word for the rest. A service worker that
    // rebuilds a navigation's request, `new Request(event.request, …)`,
    // sends it as `same-origin` with its destination kept: a page still.)
    mode.as_bytes()
        .trim_ascii()
        .eq_ignore_ascii_case(b"navigate")
        || value_is(headers, &names::SEC_FETCH_DEST, b"document")
        || (headers
            .get(&names::SEC_FETCH_DEST)
            .is_none_or(|d| d.as_bytes().trim_ascii().eq_ignore_ascii_case(b"empty"))
            && headers.get(&names::SEC_FETCH_SITE).is_none_or(|s| {
                s.as_bytes()
                    .trim_ascii()
                    .eq_ignore_ascii_case(b"same-origin")
            }))
}

/// Whether a `SameSite=Lax` cookie set on the answer to this request lands:
/// a page opened (a top-level navigation, from any site), or a request of
/// the origin's own or its site's (`Sec-Fetch-Site`). Another site's
/// subresource or frame never sets it; a request that does not say where
/// it comes from counts only as a page.
pub fn cookie_lands(headers: &http::HeaderMap) -> bool {
    is_navigation(headers)
        || value_is(headers, &names::SEC_FETCH_SITE, b"same-origin")
        || value_is(headers, &names::SEC_FETCH_SITE, b"same-site")
}

/// Whether the (first) `name` header is `word`, in any case.
pub(crate) fn value_is(headers: &http::HeaderMap, name: &http::HeaderName, word: &[u8]) -> bool {
    headers
        .get(name)
        .is_some_and(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(word))
}

/// Every `Set-Cookie` that clears a copy of the ticket cookie this host can
/// reach: ours (host-only, `Path=/`), the plain-named one over TLS, and
/// copies set for a parent domain (`Domain=example.com` seen from
/// `app.example.com`) — so the exit link leaves no selection behind.
pub fn clear_cookies(base: &str, secure: bool, host: Option<&str>) -> Vec<String> {
    let mut out = vec![clear_cookie(&cookie_name(base, secure), secure)];
    if secure {
        out.push(clear_cookie(base, true));
    }
    let host = host
        .map(|h| {
            h.rsplit_once(':').map_or(h, |(name, port)| {
                if port.bytes().all(|b| b.is_ascii_digit()) {
                    name
                } else {
                    h
                }
            })
        })
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
                && h.bytes().any(|b| b.is_ascii_alphabetic())
        });
    if let Some(host) = host {
        let labels: Vec<&str> = host.split('.').collect();
        // Parents with at least two labels (never a bare TLD).
        for i in 1..labels.len().saturating_sub(1) {
            let domain = labels[i..].join(".");
            out.push(format!(
                "{base}=; Domain={domain}; Path=/; Max-Age=0; HttpOnly; SameSite=Lax{}",
                if secure { "; Secure" } else { "" }
            ));
        }
    }
    out
}

/// Whether a request may be for an HTML page (so it is worth rewriting, and its
/// conditional/range headers must not reach the origin). Assets with a known
/// non-HTML extension are not; everything else (no extension, .html, a
/// navigation) may be.
pub fn may_be_html(path: &str, accept: Option<&[u8]>, fetch_dest: Option<&[u8]>) -> bool {
    if fetch_dest.is_some_and(|d| d == b"document" || d == b"iframe" || d == b"frame") {
        return true;
    }
    if accept.is_some_and(|a| a.windows(9).any(|w| w.eq_ignore_ascii_case(b"text/html"))) {
        return true;
    }
    let last = path.rsplit('/').next().unwrap_or("");
    match last.rsplit_once('.') {
        None => true,
        Some((_, ext)) => {
            let ext = ext.to_ascii_lowercase();
            !matches!(
                ext.as_str(),
                "js" | "mjs"
                    | "cjs"
                    | "css"
                    | "json"
                    | "map"
                    | "wasm"
                    | "png"
                    | "jpg"
                    | "jpeg"
                    | "gif"
                    | "webp"
                    | "avif"
                    | "svg"
                    | "ico"
                    | "woff"
                    | "woff2"
                    | "ttf"
                    | "otf"
                    | "mp4"
                    | "webm"
                    | "mp3"
                    | "ogg"
                    | "wav"
                    | "pdf"
                    | "zip"
                    | "gz"
                    | "txt"
                    | "xml"
                    | "csv"
            )
        }
    }
}

/// A cookie's value among `Cookie` headers (the first, at most 256 bytes).
pub fn named_cookie<'a>(
    headers: impl IntoIterator<Item = &'a [u8]>,
    name: &str,
) -> Option<&'a str> {
    stamp_model::share::cookie(headers, name, 256)
}

/// The `Cookie` header without any of `names`, when it had one (`None`:
/// unchanged). Works on bytes: a header that is not text must not carry a
/// cookie through.
pub fn without_cookies<'a>(
    headers: impl IntoIterator<Item = &'a [u8]>,
    names: &[&str],
) -> Option<Vec<u8>> {
    let mut found = false;
    let mut kept: Vec<&[u8]> = Vec::new();
    for h in headers {
        for pair in h.split(|&b| b == b';') {
            let pair = pair.trim_ascii();
            let cookie_name = pair
                .split(|&b| b == b'=')
                .next()
                .unwrap_or_default()
                .trim_ascii();
            if names.iter().any(|n| cookie_name == n.as_bytes()) {
                found = true;
            } else if !pair.is_empty() {
                kept.push(pair);
            }
        }
    }
    found.then(|| kept.join(&b"; "[..]))
}

/// Whether the answer to this request is shown as a page, so that it may be
/// stamped: a navigation (`Sec-Fetch-Mode: navigate`, also when a service
/// worker passes one on, whose `Sec-Fetch-Dest` is then `empty`), a page
/// Turbo or htmx fetches to swap in as the whole page (marked by their own
/// headers: Turbo's visits and frames, htmx's boosted links and history
/// restores), or a request without fetch metadata (an old browser, a
/// script). Any other `fetch()` of HTML gets production's bytes: a service
/// worker's precache (what can land in a cache under a production URL must
/// be production), and a fragment htmx swaps into part of a page, which
/// the probe would only clutter (the page it lands in has one).
pub fn shows_a_page(headers: &http::HeaderMap) -> bool {
    let says = |name: &http::HeaderName| value_is(headers, name, b"true");
    match headers.get(&names::SEC_FETCH_MODE) {
        None => true,
        Some(mode) if mode.as_bytes().eq_ignore_ascii_case(b"navigate") => true,
        Some(_) => {
            headers.contains_key(&names::X_TURBO_REQUEST_ID)
                || headers.contains_key(&names::TURBO_FRAME)
                || (says(&names::HX_REQUEST)
                    && (says(&names::HX_BOOSTED) || says(&names::HX_HISTORY_RESTORE_REQUEST)))
        }
    }
}

/// A selection from the `Referer` of a same-origin request (see
/// [`Source::Referer`]): `?dev=` or `?qa=` (and a share token) of the page
/// the request came from, on this very host.
pub fn from_referer(headers: &http::HeaderMap) -> Option<(Selection, Option<String>)> {
    let site = headers.get(&names::SEC_FETCH_SITE)?;
    if !site.as_bytes().eq_ignore_ascii_case(b"same-origin") {
        return None;
    }
    let referer = headers.get(http::header::REFERER)?.to_str().ok()?;
    if !referer.contains("dev=") && !referer.contains("qa=") {
        return None;
    }
    let url = url::Url::parse(referer).ok()?;
    let host = headers.get(http::header::HOST)?.to_str().ok()?;
    let authority = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str()?),
        None => url.host_str()?.to_string(),
    };
    if !authority.eq_ignore_ascii_case(host) {
        return None;
    }
    let mut selection = None;
    let mut token = None;
    for (name, value) in url.query_pairs() {
        match name.as_ref() {
            "dev" => selection = Some(parse_selection(View::Dev, &value, Source::Referer)),
            "qa" => selection = Some(parse_selection(View::Qa, &value, Source::Referer)),
            "st" => token = Some(value.into_owned()),
            "stamp" => return None,
            _ => {}
        }
    }
    match selection? {
        s @ Selection::Ticket { .. } => {
            Some((s, token.filter(|t| stamp_model::share::looks_like_token(t))))
        }
        // A malformed key in a page's address says nothing to this request.
        _ => None,
    }
}

/// Whether a navigation came from another site: `Sec-Fetch-Site` other
/// than `same-origin` or `none` (typed, bookmarked), or without fetch
/// metadata a `Referer` whose host is not this one.
pub fn from_another_site(headers: &http::HeaderMap, host: Option<&str>) -> bool {
    if let Some(site) = headers.get(&names::SEC_FETCH_SITE) {
        let site = site.as_bytes();
        return !(site.eq_ignore_ascii_case(b"same-origin") || site.eq_ignore_ascii_case(b"none"));
    }
    let Some(referer) = headers
        .get(http::header::REFERER)
        .and_then(|r| r.to_str().ok())
    else {
        return false;
    };
    let referer_host = url::Url::parse(referer).ok().and_then(|u| {
        let h = u.host_str()?.to_string();
        Some(match u.port() {
            Some(p) => format!("{h}:{p}"),
            None => h,
        })
    });
    referer_host.is_none_or(|r| host.is_none_or(|h| !r.eq_ignore_ascii_case(h)))
}

/// Whether the selection cookie already selects `key`'s `view` (the visitor
/// chose it before: a link to it changes nothing).
pub fn cookie_selects<'a>(
    cookies: impl IntoIterator<Item = &'a [u8]>,
    name: &str,
    key: &TicketKey,
    view: View,
) -> bool {
    named_cookie(cookies, name).is_some_and(|v| {
        let want = mark(key, view);
        v == want
            || v.strip_prefix(want.as_str())
                .is_some_and(|rest| rest.starts_with('.'))
    })
}

/// Whether a request navigates a frame (an `<iframe>`, `<frame>`,
/// `<object>` or `<embed>`): the page is shown inside another one.
pub fn is_frame_navigation(headers: &http::HeaderMap) -> bool {
    headers
        .get(&names::SEC_FETCH_MODE)
        .is_some_and(|m| m.as_bytes().eq_ignore_ascii_case(b"navigate"))
        && headers.get(&names::SEC_FETCH_DEST).is_some_and(|d| {
            let d = d.as_bytes();
            [
                &b"iframe"[..],
                b"frame",
                b"object",
                b"embed",
                b"fencedframe",
            ]
            .iter()
            .any(|f| d.eq_ignore_ascii_case(f))
        })
}

/// A browser loading a page to show it now: a navigation of a document,
/// said with fetch metadata (which every current browser sends, and
/// crawlers, monitors and HTTP libraries do not), and not a prefetch or
/// prerender that may never be shown.
pub fn a_browser_loads_a_page(headers: &http::HeaderMap) -> bool {
    let is = |name: &http::HeaderName, value: &[u8]| {
        headers
            .get(name)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(value))
    };
    is(&names::SEC_FETCH_MODE, b"navigate")
        && is(&names::SEC_FETCH_DEST, b"document")
        && !is_speculative(headers)
}

/// Whether a request is a browser's top-level navigation (a page to show,
/// not a script, image or fetch): `Sec-Fetch-Mode: navigate`, or without
/// fetch metadata an `Accept` that asks for HTML.
pub fn is_navigation(headers: &http::HeaderMap) -> bool {
    if let Some(mode) = headers.get(&names::SEC_FETCH_MODE) {
        return mode.as_bytes().eq_ignore_ascii_case(b"navigate")
            && headers
                .get(&names::SEC_FETCH_DEST)
                .is_none_or(|d| d.as_bytes().eq_ignore_ascii_case(b"document"));
    }
    headers
        .get(http::header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_a_browsers_load_of_a_page_is_one() {
        let h = headers;
        assert!(a_browser_loads_a_page(&h(&[
            ("sec-fetch-mode", "navigate"),
            ("sec-fetch-dest", "document")
        ])));
        assert!(a_browser_loads_a_page(&h(&[
            ("sec-fetch-mode", "NAVIGATE"),
            ("sec-fetch-dest", "Document")
        ])));
        for not in [
            // curl, a crawler, a monitor: no fetch metadata.
            h(&[("accept", "text/html")]),
            // A frame, a script's fetch (Turbo, htmx), half the metadata.
            h(&[("sec-fetch-mode", "navigate"), ("sec-fetch-dest", "iframe")]),
            h(&[("sec-fetch-mode", "cors"), ("sec-fetch-dest", "empty")]),
            h(&[("sec-fetch-mode", "navigate")]),
            h(&[("sec-fetch-dest", "document")]),
            // A prerender or prefetch (speculation rules), maybe never shown.
            h(&[
                ("sec-fetch-mode", "navigate"),
                ("sec-fetch-dest", "document"),
                ("sec-purpose", "prefetch;prerender"),
            ]),
            h(&[
                ("sec-fetch-mode", "navigate"),
                ("sec-fetch-dest", "document"),
                ("sec-purpose", "prefetch"),
            ]),
        ] {
            assert!(!a_browser_loads_a_page(&not), "{not:?}");
        }
    }

    #[test]
    fn only_navigations_and_the_origins_own_fetches_select_by_url() {
        let h = headers;
        let m = "sec-fetch-mode";
        let d = "sec-fetch-dest";
        let s = "sec-fetch-site";
        for (pairs, selects) in [
            (vec![], true),
            (
                vec![(m, "navigate"), (d, "document"), (s, "cross-site")],
                true,
            ),
            (vec![(m, "Navigate"), (d, "iframe"), (s, "same-site")], true),
            (vec![(m, "cors"), (d, "empty"), (s, "same-origin")], true),
            (vec![(m, "cors")], true),
            (vec![(m, "cors"), (d, "empty"), (s, "same-site")], false),
            (vec![(m, "no-cors"), (d, "empty"), (s, "cross-site")], false),
            (
                vec![(m, "no-cors"), (d, "image"), (s, "same-origin")],
                false,
            ),
            (
                vec![(m, "no-cors"), (d, "style"), (s, "same-origin")],
                false,
            ),
            (vec![(m, "cors"), (d, "script"), (s, "same-origin")], false),
            (
                vec![(m, "websocket"), (d, "websocket"), (s, "same-origin")],
                false,
            ),
            (
                vec![(m, "nonsense"), (d, "empty"), (s, "same-origin")],
                true,
            ),
            (
                vec![(m, "nonsense"), (d, "nonsense"), (s, "same-origin")],
                false,
            ),
            // A service worker's rebuilt navigation.
            (
                vec![(m, "same-origin"), (d, "document"), (s, "same-origin")],
                true,
            ),
        ] {
            assert_eq!(url_may_select(&h(&pairs)), selects, "{pairs:?}");
        }
    }

    fn c(query: Option<&str>, cookies: &[&str]) -> Classified {
        classify(query, cookies.iter().map(|s| s.as_bytes()), "ticket_stamp")
    }

    fn ticket(key: &str, view: View, source: Source) -> Selection {
        Selection::Ticket {
            key: TicketKey::parse(key).unwrap(),
            view,
            source,
            token: None,
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, http::HeaderValue::from_static(value));
        }
        h
    }

    #[test]
    fn requests_ahead_of_need_are_told_by_browsers_and_libraries() {
        for pair in [
            ("sec-purpose", "prefetch"),
            ("sec-purpose", "prefetch;prerender"),
            ("Sec-Purpose", "PREFETCH"),
            ("purpose", "prefetch"),
            ("purpose", "preview"),
            ("x-purpose", "preview"),
            ("x-moz", "prefetch"),
            ("x-sec-purpose", "prefetch"),
            ("hx-preloaded", "true"),
            ("next-router-prefetch", "1"),
        ] {
            assert!(is_speculative(&headers(&[pair])), "{pair:?}");
        }
        for pair in [
            ("sec-purpose", "prefetchy"),
            ("sec-purpose", ""),
            ("x-moz", "preview"),
            ("hx-preloaded", "false"),
            ("hx-request", "true"),
            ("next-router-prefetch", "0"),
            ("x-sec-purpose", "pre fetch"),
            ("accept", "text/html"),
        ] {
            assert!(!is_speculative(&headers(&[pair])), "{pair:?}");
        }
        assert!(!is_speculative(&http::HeaderMap::new()));
    }

    #[test]
    fn a_page_an_app_shows_in_place_is_told_by_the_librarys_headers() {
        use http::Method;
        const TURBO: &str = "text/vnd.turbo-stream.html, text/html, application/xhtml+xml";
        let fetch = [("sec-fetch-mode", "cors"), ("sec-fetch-dest", "empty")];
        let with = |method: Method, more: &[(&'static str, &'static str)]| {
            let mut all = fetch.to_vec();
            all.extend_from_slice(more);
            in_page_visit(&method, &headers(&all))
        };
        let turbo = [("accept", TURBO), ("x-turbo-request-id", "0c9b")];
        let boosted = [("hx-request", "true"), ("hx-boosted", "true")];
        assert_eq!(with(Method::GET, &turbo), Some(InPage::Turbo));
        assert_eq!(with(Method::HEAD, &turbo), Some(InPage::Turbo));
        assert_eq!(
            with(
                Method::GET,
                &[("x-turbo-request-id", "1"), ("turbo-frame", "f")]
            ),
            Some(InPage::Turbo)
        );
        assert_eq!(with(Method::GET, &boosted), Some(InPage::Htmx));
        assert_eq!(
            with(
                Method::GET,
                &[("x-pjax", "true"), ("x-pjax-container", "#main")]
            ),
            Some(InPage::Other)
        );
        assert_eq!(
            with(Method::GET, &[("x-requested-with", "swup")]),
            Some(InPage::Other)
        );
        assert_eq!(
            with(Method::GET, &[("x-requested-with", "XMLHttpRequest")]),
            None
        );
        assert_eq!(with(Method::GET, &[("x-pjax", "false")]), None);
        assert_eq!(
            with(
                Method::GET,
                &[("hx-request", "TRUE"), ("hx-boosted", " true")]
            ),
            Some(InPage::Htmx)
        );
        // A form sent in place, a fragment, a page fetched without a
        // library's mark (a service worker's copy), data, a navigation.
        assert_eq!(with(Method::POST, &turbo), None);
        assert_eq!(with(Method::POST, &boosted), None);
        assert_eq!(with(Method::GET, &[("hx-request", "true")]), None);
        assert_eq!(with(Method::GET, &[("hx-boosted", "true")]), None);
        assert_eq!(with(Method::GET, &[("accept", TURBO)]), None);
        assert_eq!(with(Method::GET, &[("accept", "application/json")]), None);
        assert_eq!(
            in_page_visit(
                &Method::GET,
                &headers(&[("sec-fetch-mode", "navigate"), ("x-turbo-request-id", "1")])
            ),
            None
        );
    }

    /// A page shown in place is of the document's ticket and view exactly,
    /// or production's where the document says nothing; anything else a
    /// document says (its text as a page could forge it) only makes the
    /// page load as a page.
    #[test]
    fn a_page_shown_in_place_must_be_of_the_documents_ticket() {
        let key = TicketKey::parse("DOC-1").unwrap();
        let id = Hash::of(b"the variant");
        let dev = Some((&key, View::Dev, &id));
        let runs = format!("DOC-1 dev {}", id.to_hex());
        let says = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(
                &names::X_TICKET_STAMP_DOCUMENT,
                http::HeaderValue::from_bytes(v.as_bytes()).unwrap(),
            );
            h
        };
        assert!(!shown_in_another_document(&headers(&[]), None));
        assert!(!shown_in_another_document(&says(&runs), dev));
        assert!(!shown_in_another_document(&says(&format!(" {runs} ")), dev));
        assert!(shown_in_another_document(&headers(&[]), dev));
        assert!(shown_in_another_document(&says(&runs), None));
        let other = Hash::of(b"an upload later").to_hex();
        for said in [
            format!("DOC-1 dev {other}"),
            format!("DOC-1 qa {}", id.to_hex()),
            format!("DOC-12 dev {}", id.to_hex()),
            format!("doc-1 dev {}", id.to_hex()),
            format!("DOC-1  dev {}", id.to_hex()),
            format!("{runs} {runs}"),
            runs[..runs.len() - 1].to_string(),
            "DOC-1 dev".to_string(),
            "DOC-1".to_string(),
            String::new(),
        ] {
            assert!(shown_in_another_document(&says(&said), dev), "{said:?}");
        }
        let mut bytes = http::HeaderMap::new();
        bytes.insert(
            &names::X_TICKET_STAMP_DOCUMENT,
            http::HeaderValue::from_bytes(b"DOC-1 d\xffv").unwrap(),
        );
        assert!(shown_in_another_document(&bytes, dev));
    }

    #[test]
    fn preview_passes_are_read_and_kept_from_the_origin() {
        let h = [b"a=1; stamp_viewer=p1.9.qa.ab; b=2".as_slice()];
        assert_eq!(named_cookie(h, "stamp_viewer"), Some("p1.9.qa.ab"));
        assert_eq!(named_cookie(h, "stamp"), None, "a prefix is not the name");
        assert_eq!(
            without_cookies(h, &["stamp_viewer"]).as_deref(),
            Some(&b"a=1; b=2"[..])
        );
        assert_eq!(
            without_cookies([b"stamp_viewer=x".as_slice()], &["stamp_viewer"]).as_deref(),
            Some(&b""[..])
        );
        assert_eq!(
            without_cookies([b"a=1".as_slice()], &["stamp_viewer"]),
            None
        );
        assert_eq!(
            without_cookies([b"a=\xff; stamp_viewer=x".as_slice()], &["stamp_viewer"]).as_deref(),
            Some(&b"a=\xff"[..]),
            "not text, still taken out"
        );
        let mut nav = http::HeaderMap::new();
        nav.insert("sec-fetch-mode", "navigate".parse().unwrap());
        nav.insert("sec-fetch-dest", "document".parse().unwrap());
        assert!(is_navigation(&nav));
        nav.insert("sec-fetch-dest", "iframe".parse().unwrap());
        assert!(!is_navigation(&nav));
        let mut script = http::HeaderMap::new();
        script.insert("sec-fetch-mode", "cors".parse().unwrap());
        script.insert(http::header::ACCEPT, "text/html".parse().unwrap());
        assert!(!is_navigation(&script));
        let mut old = http::HeaderMap::new();
        old.insert(http::header::ACCEPT, "text/html,*/*".parse().unwrap());
        assert!(is_navigation(&old));
    }

    #[test]
    fn share_tokens_travel_in_the_query_and_the_cookie() {
        let t = "1999999999.0.0123456789abcdef0123456789abcdef";
        match c(Some(&format!("qa=TKT-1&st={t}")), &[]).selection {
            Selection::Ticket { token, .. } => assert_eq!(token.as_deref(), Some(t)),
            other => panic!("{other:?}"),
        }
        match c(None, &[&format!("ticket_stamp=qa.TKT-1.{t}")]).selection {
            Selection::Ticket { token, key, .. } => {
                assert_eq!(token.as_deref(), Some(t));
                assert_eq!(key.as_str(), "TKT-1");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            c(None, &["ticket_stamp=qa.TKT-1.<x>"]).selection,
            Selection::Invalid { .. }
        ));
        match c(Some("dev=TKT-1&st=%3Cscript%3E"), &[]).selection {
            Selection::Ticket { token, .. } => assert_eq!(token, None, "junk tokens are dropped"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn query_selects_and_normalises() {
        assert_eq!(
            c(Some("dev=tkt-1"), &[]).selection,
            ticket("TKT-1", View::Dev, Source::Query)
        );
        assert_eq!(
            c(Some("a=1&qa=TKT-2"), &[]).selection,
            ticket("TKT-2", View::Qa, Source::Query)
        );
        assert_eq!(
            c(Some("dev=%54KT-3"), &[]).selection,
            ticket("TKT-3", View::Dev, Source::Query)
        );
        assert_eq!(c(None, &[]).selection, Selection::None);
        assert_eq!(c(Some("x=1"), &[]).selection, Selection::None);
    }

    #[test]
    fn last_query_parameter_wins_and_beats_the_cookie() {
        assert_eq!(
            c(Some("dev=A1-1&qa=B2-2"), &[]).selection,
            ticket("B2-2", View::Qa, Source::Query)
        );
        assert_eq!(
            c(Some("qa=B2-2&dev=A1-1"), &[]).selection,
            ticket("A1-1", View::Dev, Source::Query)
        );
        assert_eq!(
            c(Some("dev=A1-1"), &["ticket_stamp=qa.B2-2"]).selection,
            ticket("A1-1", View::Dev, Source::Query)
        );
    }

    #[test]
    fn stamp_off_beats_everything() {
        let r = c(Some("dev=A1-1&stamp=off"), &["ticket_stamp=dev.A1-1"]);
        assert_eq!(r.selection, Selection::Off);
        assert!(r.has_cookie);
        assert_eq!(c(Some("stamp=OFF&qa=A1-1"), &[]).selection, Selection::Off);
    }

    #[test]
    fn cookie_selects_when_the_query_does_not() {
        assert_eq!(
            c(Some("page=2"), &["a=b; ticket_stamp=qa.TKT-9; c=d"]).selection,
            ticket("TKT-9", View::Qa, Source::Cookie)
        );
        // HTTP/2 may split cookies into several headers.
        assert_eq!(
            c(None, &["a=b", "ticket_stamp=dev.TKT-9"]).selection,
            ticket("TKT-9", View::Dev, Source::Cookie)
        );
    }

    #[test]
    fn malformed_selections_are_reasons_not_errors() {
        for q in [
            "dev=",
            "dev=TKT",
            "dev=%3Cscript%3E-1",
            "qa=TKT-1%0d%0aX:1",
            "dev=TKT-1-",
            "stamp=on",
        ] {
            match c(Some(q), &[]).selection {
                Selection::Invalid { reason, source } => {
                    assert_eq!(source, Source::Query);
                    assert!(!reason.contains('<') && !reason.contains('\r'), "{reason}");
                }
                other => panic!("{q}: {other:?}"),
            }
        }
    }

    #[test]
    fn hostile_cookies_are_refused_with_a_safe_reason() {
        let long = format!("ticket_stamp=dev.{}", "A".repeat(500));
        for cookie in [
            "ticket_stamp=",
            "ticket_stamp=prod.TKT-1",
            "ticket_stamp=dev",
            "ticket_stamp=dev.<x>-1",
            "ticket_stamp=dev.TKT-1\u{7f}",
            long.as_str(),
        ] {
            match c(None, &[cookie]).selection {
                Selection::Invalid { source, reason } => {
                    assert_eq!(source, Source::Cookie);
                    assert!(reason.is_ascii() && !reason.contains('<'));
                }
                other => panic!("{cookie}: {other:?}"),
            }
        }
        let bytes: &[u8] = b"ticket_stamp=dev.\xff\xfe-1";
        assert!(matches!(
            classify(None, [bytes], "ticket_stamp").selection,
            Selection::Invalid { .. }
        ));
    }

    #[test]
    fn module_requests_are_recognised() {
        let h = Hash::of(b"x");
        let r = c(Some(&format!("__ts={h}")), &[]);
        assert_eq!(r.module, Some(Ok(h)));
        assert_eq!(c(Some("__ts=zz"), &[]).module, Some(Err(())));
        assert_eq!(c(Some("ts=1"), &[]).module, None);
        assert_eq!(r.hot, None);
        let hot = c(Some(&format!("__ts={h}?v=3")), &[]);
        assert_eq!((hot.module, hot.hot), (Some(Ok(h)), Some(3)));
        for bad in ["?v=", "?v=x", "?v=-1", "?v=1234567890", "?v=1?v=2x"] {
            let r = c(Some(&format!("__ts={h}{bad}")), &[]);
            assert_eq!((r.module, r.hot), (Some(Err(())), None), "{bad}");
        }
    }

    #[test]
    fn cookies_have_the_safe_attributes() {
        let k = TicketKey::parse("TKT-1").unwrap();
        let s = set_cookie("ticket_stamp", &k, View::Qa, None, 60, true);
        assert_eq!(
            s,
            "ticket_stamp=qa.TKT-1; Path=/; Max-Age=60; HttpOnly; SameSite=Lax; Secure"
        );
        assert!(clear_cookie("ticket_stamp", false).contains("Max-Age=0"));
        assert_eq!(cookie_name("ticket_stamp", true), "__Host-ticket_stamp");
        assert_eq!(cookie_name("ticket_stamp", false), "ticket_stamp");
        let all = clear_cookies("ticket_stamp", true, Some("app.shop.example.com:443"));
        assert!(all[0].starts_with("__Host-ticket_stamp=;"), "{all:?}");
        assert!(
            all.iter().any(|c| c.starts_with("ticket_stamp=; Path=/")),
            "{all:?}"
        );
        assert!(
            all.iter().any(|c| c.contains("Domain=shop.example.com;")),
            "{all:?}"
        );
        assert!(
            all.iter().any(|c| c.contains("Domain=example.com;")),
            "{all:?}"
        );
        assert!(!all.iter().any(|c| c.contains("Domain=com;")), "{all:?}");
        assert_eq!(clear_cookies("t", false, Some("127.0.0.1:8080")).len(), 1);
        assert_eq!(clear_cookies("t", false, Some("evil\r\nx: y")).len(), 1);
    }

    #[test]
    fn html_candidates() {
        assert!(may_be_html("/", None, None));
        assert!(may_be_html("/cart/checkout", None, None));
        assert!(may_be_html("/index.html", None, None));
        assert!(!may_be_html("/src/app.js", None, None));
        assert!(!may_be_html("/img/logo.PNG", Some(b"image/*"), None));
        assert!(may_be_html("/report.pdf", Some(b"text/html,*/*"), None));
        assert!(may_be_html("/x.js", None, Some(b"document")));
    }

    /// A fetch of HTML is stamped only when the library shows it as the
    /// page: Turbo's visits and frames, htmx's boosted links and history
    /// restores; never a fragment htmx swaps into part of a page.
    #[test]
    fn only_a_fetch_that_becomes_the_page_shows_a_page() {
        let fetch = |extra: &[(&'static str, &'static str)]| {
            let mut h = http::HeaderMap::new();
            h.insert("sec-fetch-mode", "cors".parse().unwrap());
            h.insert("sec-fetch-dest", "empty".parse().unwrap());
            for (k, v) in extra {
                h.insert(*k, v.parse().unwrap());
            }
            shows_a_page(&h)
        };
        assert!(!fetch(&[]));
        assert!(fetch(&[("x-turbo-request-id", "1")]));
        assert!(fetch(&[("turbo-frame", "cart")]));
        assert!(fetch(&[("hx-request", "true"), ("hx-boosted", "true")]));
        assert!(fetch(&[
            ("hx-request", "true"),
            ("hx-history-restore-request", "TRUE")
        ]));
        assert!(!fetch(&[("hx-request", "true")]));
        assert!(!fetch(&[("hx-request", "true"), ("hx-target", "slot")]));
        assert!(!fetch(&[("hx-request", "true"), ("hx-boosted", "false")]));
        assert!(!fetch(&[("hx-boosted", "true")]));
    }

    #[test]
    fn the_proxys_parameters_always_change_the_page() {
        use NoVarySearch::{AsIs, Changed, Dropped};
        let all = r#""dev" "qa" "stamp" "st" "__ts" "stamp_live""#;
        for (value, want) in [
            ("params".to_string(), Changed(format!("params, except=({all})"))),
            (
                r#"params, except=("id")"#.into(),
                Changed(format!(r#"params, except=("id" {all})"#)),
            ),
            (
                r#"key-order, params, except=("dev")"#.into(),
                Changed(format!(r#"key-order, params, except=({all})"#)),
            ),
            (format!("params, except=({all})"), AsIs),
            // Browsers compare names decoded: "%64ev" is dev.
            (
                r#"params, except=("%64ev" "qa" "stamp" "st" "__ts" "stamp+live")"#.into(),
                Changed(
                    r#"params, except=("%64ev" "qa" "stamp" "st" "__ts" "stamp+live" "stamp_live")"#
                        .into(),
                ),
            ),
            (
                r#"params=("utm_source" "dev" "%73t" "__ts")"#.into(),
                Changed(r#"params=("utm_source")"#.into()),
            ),
            (r#"params=("utm_source" "DEV")"#.into(), AsIs),
            ("key-order".into(), AsIs),
            ("params=?0".into(), AsIs),
            ("".into(), AsIs),
            // Read otherwise by some browser: dropped, so all counts.
            ("params, except=(id)".into(), Dropped),
            ("params, except=\"dev\"".into(), Dropped),
            ("params=(utm dev)".into(), Dropped),
            ("params=(".into(), Dropped),
            ("params=\"dev\"".into(), Dropped),
            ("params=1".into(), Dropped),
            ("params=?1;x=\u{e9}".into(), Dropped),
        ] {
            let got = no_vary_search_keeping_ours(value.as_bytes());
            assert_eq!(got, want, "{value}");
            // What it makes needs nothing more.
            if let Changed(v) = got {
                assert_eq!(no_vary_search_keeping_ours(v.as_bytes()), AsIs, "{v}");
            }
        }
    }
}
