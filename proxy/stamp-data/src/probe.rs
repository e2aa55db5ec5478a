//! The probe: a small script stamped pages carry, that measures in the
//! browser what the page actually ran and shows it on the badge (see
//! `probe.js`). The proxy only predicts from the HTML; the probe reports
//! the truth: which of the ticket's URLs loaded, which production file ran
//! where the ticket has one (in the page and in its workers), and errors.
//!
//! The script's text is constant, so one CSP hash covers it on every page
//! that carries it inline, and one URL names it for every page that loads
//! it (`/__stamp/probe/<digest>.js`, on ticket pages without a policy);
//! what it needs to know about the page comes in a JSON data block before
//! it (`<script type="application/json">`, which no policy governs). Ticket
//! bodies the proxy serves carry `Server-Timing: ticket-stamp;desc=<hash>`,
//! which Resource Timing shows the probe, and JavaScript bodies end with one
//! statement ([`marker`]) that tells the probe they ran to their end (from a
//! worker, over a `BroadcastChannel`). SystemJS's `System.register` bodies
//! run later than they load: the probe follows SystemJS's own `onload`
//! hook for those instead.

use std::sync::LazyLock;

use serde::Serialize;
use stamp_model::assets::EntryPattern;
use stamp_model::ticket::{ModuleRef, OverrideSet, Stage, TicketKey};
use stamp_model::views::Side;

/// The Server-Timing metric that names the ticket body a response carried.
pub const SERVER_TIMING: &str = "ticket-stamp";
/// The data block's element id.
pub const DATA_ID: &str = "ticket-stamp-data";
/// Where pages report (`POST`, no credentials).
pub const REPORT_PATH: &str = "/__stamp/report";
/// Where the badge's exit goes (`POST`, clears the selection).
pub const LEAVE_PATH: &str = "/__stamp/leave";

static SCRIPT: LazyLock<String> = LazyLock::new(|| {
    // Whole-line comments are for whoever reads probe.js, not for every page.
    include_str!("probe.js")
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
});

static SCRIPT_HASH: LazyLock<String> = LazyLock::new(|| crate::importmap::csp_hash_source(&SCRIPT));

/// Where the probe's text is served (`/__stamp/probe/<hash>.js`), named by
/// its content, so a browser keeps one copy for every page, a year long.
static SCRIPT_PATH: LazyLock<String> = LazyLock::new(|| {
    let hex = stamp_model::ticket::Hash::of(SCRIPT.as_bytes()).to_hex();
    format!("{SCRIPT_PREFIX}{}.js", &hex[..16])
});

/// The folder [`script_path`] is in.
pub const SCRIPT_PREFIX: &str = "/__stamp/probe/";

/// The probe's text, as pages carry it.
pub fn script() -> &'static str {
    &SCRIPT
}

/// Where a page loads [`script`] from, when it does not carry it inline.
pub fn script_path() -> &'static str {
    &SCRIPT_PATH
}

/// `'sha256-…'` of [`script`].
pub fn script_hash() -> &'static str {
    &SCRIPT_HASH
}

#[derive(Serialize)]
struct Module<'a> {
    /// Production's location: a path, or `origin + path` elsewhere.
    p: &'a str,
    /// The body's hash (hex): the `__ts` of its ticket URL, and its
    /// Server-Timing description.
    h: String,
    /// A bundler's hashed file on this origin (`/assets/lazy-BuR3Dq2X.js`):
    /// where its other versions live (`/assets/lazy-`, 8, `.js`). One of
    /// them loading on a ticket page is production's build of the file.
    #[serde(skip_serializing_if = "Option::is_none")]
    q: Option<(&'a str, usize, &'a str)>,
}

#[derive(Serialize)]
struct Data<'a> {
    ticket: &'a str,
    view: &'a str,
    stage: String,
    variant: String,
    side: &'a str,
    badge: bool,
    modules: Vec<Module<'a>>,
    /// For maps the page adds at runtime (which never pass the proxy):
    /// bare specifier → ticket URL, and production location → ticket URL,
    /// for every module of the page's variant (released tickets included).
    bare: std::collections::BTreeMap<&'a str, String>,
    at: std::collections::BTreeMap<&'a str, String>,
    /// One report per entry: the ticket, and the page's side of it.
    reports: Vec<ReportTo<'a>>,
}

#[derive(Serialize)]
struct ReportTo<'a> {
    ticket: &'a str,
    side: &'a str,
    /// What tells the page loaded the ticket's files (a sampled page).
    #[serde(skip_serializing_if = "Option::is_none")]
    touch: Option<&'a stamp_model::rollout::Touch>,
}

/// What one page's probe is told.
#[derive(Debug, Clone)]
pub struct Page<'a> {
    pub key: &'a TicketKey,
    /// `dev`, `qa`, or `prod` (a production page in a rollout).
    pub view: &'a str,
    pub stage: Stage,
    /// The ticket's own modules in this view (not the released overlay's).
    pub own: &'a OverrideSet,
    /// Whom the page reports to, and on which side.
    pub reports: &'a [(TicketKey, Side)],
    /// For a sampled page, what tells it loaded each of those tickets'
    /// files (by position; none on a ticket page).
    pub touch: &'a [std::sync::Arc<stamp_model::rollout::Touch>],
    /// Every module of the page's variant: the ticket's and the released
    /// overlay's (what maps added at runtime get).
    pub all: &'a OverrideSet,
    /// The page variant's set id.
    pub variant: &'a stamp_model::ticket::Hash,
    pub badge: bool,
}

/// How a page carries the probe's script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carried<'a> {
    /// Its text in the page (with the nonce the page's policy needs): a
    /// page whose policies the proxy extends with the script's hash.
    Inline(Option<&'a str>),
    /// `<script src=`[`script_path`]`>`: about 13 KB less in every page,
    /// the script kept by the browser once for all of them. Only on a
    /// ticket page where nothing can stand between the page and its own
    /// origin's script: no policy header, and no `<base href>` or meta
    /// policy before it.
    External,
}

/// The data block and the probe, ready to insert.
pub fn elements(page: &Page<'_>, carried: Carried<'_>) -> String {
    // A hashed file's name around its hash: where production's other
    // builds of it live, which the probe names when one of them loads
    // (`assets::versions_of_one_file`).
    let patterns: Vec<Option<EntryPattern>> = page
        .own
        .values()
        .map(|m| EntryPattern::hashed_at(&m.path))
        .collect();
    let modules: Vec<Module<'_>> = page
        .own
        .values()
        .zip(&patterns)
        .map(|(m, q): (&ModuleRef, _)| Module {
            p: &m.path,
            h: m.hash.to_hex(),
            q: q.as_ref().map(EntryPattern::parts),
        })
        .collect();
    let mut bare = std::collections::BTreeMap::new();
    let mut at = std::collections::BTreeMap::new();
    for (spec, m) in page.all.iter() {
        if stamp_model::assets::is_entry_pattern(spec) {
            continue;
        }
        if spec != &m.path && !spec.starts_with('/') && !stamp_model::assets::is_remote(spec) {
            bare.insert(spec.as_str(), m.url());
        }
        at.insert(m.path.as_str(), m.url());
    }
    let data = Data {
        ticket: page.key.as_str(),
        view: page.view,
        stage: page.stage.to_string(),
        variant: page.variant.to_hex(),
        side: "ticket",
        badge: page.badge,
        modules,
        bare,
        at,
        reports: page
            .reports
            .iter()
            .enumerate()
            .map(|(i, (k, side))| ReportTo {
                ticket: k.as_str(),
                side: side.as_str(),
                touch: page.touch.get(i).map(|t| &**t),
            })
            .collect(),
    };
    let json = serde_json::to_string(&data).unwrap_or_else(|_| "{}".into());
    let data = format!(
        "<script type=\"application/json\" id=\"{DATA_ID}\">{}</script>",
        crate::importmap::escape_for_script(&json)
    );
    match carried {
        // Classic and without `async` or `defer`: it runs where it stands,
        // before any of the page's scripts, as the inline one does.
        Carried::External => format!("{data}<script src=\"{}\"></script>", script_path()),
        Carried::Inline(nonce) => {
            let nonce = nonce
                .filter(|n| crate::csp::is_nonce_safe(n))
                .map(|n| format!(" nonce=\"{n}\""))
                .unwrap_or_default();
            format!("{data}<script{nonce}>{}</script>", script())
        }
    }
}

/// Answers `GET /__stamp/probe/…`: the probe's script at [`script_path`],
/// kept by browsers and caches for a year (its name changes with it);
/// any other name is a `404` nobody keeps (a page another version of the
/// proxy stamped, during a rolling deploy, loads no probe rather than
/// another one).
#[cfg(feature = "proxy")]
pub async fn serve(session: &mut pingora::proxy::Session) -> pingora::Result<()> {
    use bytes::Bytes;
    use http::header;
    let req = session.req_header();
    let text = "text/plain; charset=utf-8";
    if req.method != http::Method::GET && req.method != http::Method::HEAD {
        let mut resp = pingora::http::ResponseHeader::build(405, Some(4))?;
        resp.insert_header(header::CONTENT_TYPE, text)?;
        resp.insert_header(header::CACHE_CONTROL, "no-store")?;
        resp.insert_header(header::ALLOW, "GET, HEAD")?;
        let body = Bytes::from_static(b"ticket-stamp: the probe is read-only\n");
        return crate::internal::write(session, resp, body).await;
    }
    if req.uri.path() != script_path() {
        return crate::internal::respond(
            session,
            404,
            text,
            Bytes::from_static(
                b"ticket-stamp: no such probe (this proxy serves another version)\n",
            ),
        )
        .await;
    }
    let etag = format!("\"{}\"", &script_path()[SCRIPT_PREFIX.len()..]);
    let fresh = crate::internal::none_match(req, &etag);
    let mut resp = pingora::http::ResponseHeader::build(if fresh { 304 } else { 200 }, Some(6))?;
    resp.insert_header(header::CACHE_CONTROL, "public, max-age=31536000, immutable")?;
    resp.insert_header(header::ETAG, &etag)?;
    resp.insert_header(header::VARY, "Accept-Encoding")?;
    if fresh {
        let head = true;
        return session.write_response_header(Box::new(resp), head).await;
    }
    resp.insert_header(header::CONTENT_TYPE, "text/javascript; charset=utf-8")?;
    resp.insert_header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")?;
    crate::internal::write(session, resp, Bytes::from_static(script().as_bytes())).await
}

/// The block that tells the probe what the rewriter saw once the page was
/// read: why nothing of the ticket applied, and which of its modules
/// production loads from another origin than the one they were uploaded
/// for (location → production's URL).
pub fn outcome(
    nothing: Option<&str>,
    elsewhere: &std::collections::BTreeMap<String, String>,
) -> String {
    let json = serde_json::json!({ "nothing": nothing, "elsewhere": elsewhere }).to_string();
    format!(
        "<script type=\"application/json\" id=\"ticket-stamp-outcome\">{}</script>",
        crate::importmap::escape_for_script(&json)
    )
}

/// What goes after a worker's script as a browser on a ticket gets it
/// (`Sec-Fetch-Dest: worker` or `sharedworker`; production's script or the
/// ticket's): what the worker itself loads (`importScripts`, `import()`,
/// `fetch`) is in the worker's Resource Timing, which the page never sees,
/// so the worker says it over the channel its [`marker`]s use, and the
/// probe reads each entry as one of the page's own: production's copy of a
/// ticket's file that a worker loaded by a URL the proxy never saw (a
/// CDN's) is named. (A dedicated worker's script and its static imports are
/// in the page's own timeline already; a shared worker's are in none.)
///
/// One statement, valid after any script (classic or module, strict or
/// not), declaring nothing at the top level; once per worker, however many
/// of its scripts carry it. It sends only what could be a ticket's file (a
/// path whose last part has an extension, or an answer with a
/// `Server-Timing`), in messages of at most 200, and at most 5,000 a
/// worker: an app's API calls (`/api/orders/7`) never use the budget up.
pub const WORKER_REPORTER: &str = "\n;try{(()=>{const g=self;if(g.__ticketStampWatch||typeof PerformanceObserver!==\"function\"||typeof BroadcastChannel!==\"function\")return;g.__ticketStampWatch=1;const m=/[#&]ticket-stamp=(\\w+)$/.exec(g.location.hash),c=new BroadcastChannel(\"ticket-stamp\"+(m?\":\"+m[1]:\"\"));let n=0;new PerformanceObserver(l=>{let r=[];const send=()=>{if(r.length)c.postMessage({res:r,from:g.location.href});r=[]};for(const e of l.getEntries()){if(!/\\.[^/.]+$/.test(e.name.split(/[?#]/)[0])&&!(e.serverTiming||[]).length)continue;if(n>=5000)break;n++;const t=(e.serverTiming||[]).find(x=>x.name===\"ticket-stamp\");r.push({name:e.name,initiatorType:e.initiatorType,responseStatus:e.responseStatus||0,ts:t?t.description:\"\"});if(r.length>=200)send()}send()}).observe({type:\"resource\",buffered:!0})})()}catch(_){}\n";

/// The statement a ticket's JavaScript body ends with (see
/// `stamp_model::views::ran_marker`).
pub fn marker(hash: &stamp_model::ticket::Hash) -> String {
    stamp_model::views::ran_marker(hash)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_is_constant_and_its_data_cannot_end_the_script() {
        assert!(!script().contains("\n//"));
        assert_eq!(script_hash(), crate::importmap::csp_hash_source(script()));
        let key = TicketKey::parse("TKT-1").unwrap();
        let mut own = OverrideSet::new();
        own.insert(
            "/src/a.js".into(),
            ModuleRef {
                path: "/src/</script><script>alert(1)</script>.js".into(),
                hash: stamp_model::ticket::Hash::of(b"a"),
                size: 1,
            },
        );
        let variant = stamp_model::ticket::Hash::of(b"v");
        let page = Page {
            key: &key,
            view: "dev",
            stage: Stage::Dev,
            own: &own,
            reports: &[(key.clone(), Side::Ticket)],
            touch: &[],
            all: &own,
            variant: &variant,
            badge: true,
        };
        let html = elements(&page, Carried::Inline(Some("abc")));
        assert_eq!(html.matches("</script>").count(), 2, "{html}");
        assert!(html.contains("<script nonce=\"abc\">"));
        assert!(html.contains("\\u003c/script\\u003e"));
        // A nonce that could end the attribute is never written.
        let html = elements(&page, Carried::Inline(Some("a\"><script>")));
        assert!(
            html.ends_with(&format!("<script>{}</script>", script())),
            "{html}"
        );

        let html = elements(&page, Carried::External);
        assert!(
            html.ends_with(&format!(
                "</script><script src=\"{}\"></script>",
                script_path()
            )),
            "{html}"
        );
        assert!(!html.contains(script()));
        assert!(html.contains("\\u003c/script\\u003e"));
    }

    /// The addresses the probe sends to are in its text, the proxy's own:
    /// none comes from the data block a page could make up.
    #[test]
    fn the_probe_sends_only_to_the_proxys_own_paths() {
        for path in [REPORT_PATH, LEAVE_PATH, "/__stamp/#/tickets/"] {
            assert!(
                script().contains(&format!("location.origin+\"{path}\"")),
                "{path}"
            );
        }
        // (`D.reports` names whom to report for, not where.)
        assert!(script()
            .match_indices("D.report")
            .all(|(i, _)| script()[i + "D.report".len()..].starts_with('s')));
        assert!(!script().contains("D.leave"));
        assert!(!script().contains("D.panel"));
    }

    #[test]
    fn the_probe_is_served_at_a_path_named_by_its_content() {
        let path = script_path();
        let hex = path
            .strip_prefix(SCRIPT_PREFIX)
            .and_then(|p| p.strip_suffix(".js"))
            .unwrap();
        assert_eq!(hex.len(), 16);
        assert!(hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert!(stamp_model::wire::is_reserved(path));
        // The name is the script's own digest: another text, another name.
        let want = stamp_model::ticket::Hash::of(script().as_bytes()).to_hex();
        assert_eq!(hex, &want[..16]);
    }
}
