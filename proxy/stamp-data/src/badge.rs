//! The notice on a production page reached by a link that selects nothing
//! any more (the ticket is closed, unknown, not in qa, or the link does not
//! hold): what happened, that this is production, and where the ticket is.
//! Declarative shadow DOM isolates it from the app's CSS, `position: fixed`
//! keeps it from shifting the layout, and it needs no script. Its one inline
//! `<style>` passes the page's CSP like the import map does (nonce or hash).
//! (A ticket page's badge is the probe's: `probe.js`.)

use std::sync::LazyLock;

use stamp_model::ticket::View;
use stamp_model::ticket::{Stage, TicketKey};

/// The notice's stylesheet (constant, so its CSP hash is too).
pub const STYLE: &str = ":host{all:initial;position:fixed;right:12px;bottom:12px;z-index:2147483647}\
aside{display:flex;gap:.6em;align-items:center;font:13px/1.3 system-ui,sans-serif;color:#fff;\
background:#5b2a86;border-radius:999px;padding:6px 12px;box-shadow:0 2px 8px rgba(0,0,0,.3)}\
strong{font-weight:700}a{color:#fff;text-decoration:underline}a:focus-visible{outline:2px solid #fff;outline-offset:2px}\
aside.none{background:#9a3412}aside.stale{background:#374151}";

static STYLE_HASH: LazyLock<String> = LazyLock::new(|| crate::importmap::csp_hash_source(STYLE));

/// `'sha256-…'` of [`STYLE`].
pub fn style_hash() -> &'static str {
    &STYLE_HASH
}

/// Why a link's selection was not served, for the notice on the production
/// page it got instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stale {
    /// No such ticket (any more).
    Unknown,
    Closed,
    /// A `?qa=` link to a ticket that is not in qa (any more): where it is.
    NotInQa(Stage),
    /// A protected preview's share link that does not hold (why).
    Refused(String),
}

/// The notice a production page gets when its link selected a ticket that
/// cannot be served: what happened, that this is production, and where the
/// ticket is now. Same shadow DOM and stylesheet as the badge. `path`: the
/// page's own, which the link to the ticket's view keeps (a relative
/// `?dev=` would resolve against the page's `<base href>`).
pub fn notice(key: &TicketKey, view: View, why: &Stale, nonce: Option<&str>, path: &str) -> String {
    let nonce_attr = nonce_attr(nonce);
    // One leading slash: `//host/…` would name another host.
    let path = escape(&format!("/{}", path.trim_start_matches('/')));
    let view = view.as_str();
    let (what, open) = match why {
        Stale::Unknown => (format!("no open ticket {key}"), None),
        Stale::Closed => (format!("{key} is closed"), None),
        Stale::NotInQa(stage) => (
            format!("{key} is in {stage} now"),
            Some(format!("<a href=\"{path}?dev={key}\">Open ?dev={key}</a>")),
        ),
        Stale::Refused(reason) => (
            format!("this {key} link does not hold: {}", escape(reason)),
            None,
        ),
    };
    // The key is validated ([A-Z0-9_-]), the reason is escaped, the rest are fixed words.
    format!(
        "<ticket-stamp-badge><template shadowrootmode=\"open\"><style{nonce_attr}>{STYLE}</style>\
         <aside class=\"stale\" role=\"status\" aria-label=\"ticket-stamp: this is production\">\
         <span>{what}: <strong>this is production</strong></span>{open}\
         <a href=\"/__stamp/#/tickets/{key}\">Ticket</a></aside></template></ticket-stamp-badge>\
         <!-- ticket-stamp: the {view} link selected nothing -->",
        open = open.unwrap_or_default(),
    )
}

/// What a ticket page says when the rewriter gave up before the probe was
/// in (lol_html's memory budget, `rewrite.memory_limit_bytes`: a huge
/// attribute, deeply nested markup): the rest of the page went out
/// unchanged, so nothing of the ticket applied, and the page says so.
pub fn not_stamped(key: &TicketKey, view: &str) -> String {
    format!(
        "<ticket-stamp-badge><template shadowrootmode=\"open\"><style>{STYLE}</style>\
         <aside class=\"none\" role=\"status\" aria-label=\"ticket-stamp: nothing applied\">\
         <span>{key} &middot; {view} view: <strong>nothing applied</strong>: the page was too large or too \
         deeply nested to stamp (rewrite.memory_limit_bytes)</span>\
         <a href=\"/__stamp/#/tickets/{key}\">Ticket</a></aside></template></ticket-stamp-badge>\
         <!-- ticket-stamp: {key} did not apply: the rewriter gave up (rewrite.memory_limit_bytes) -->"
    )
}

/// ` nonce="…"` for the style element, when the nonce is safe to write.
fn nonce_attr(nonce: Option<&str>) -> String {
    nonce
        .filter(|n| {
            n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+/=_-".contains(&b))
        })
        .map(|n| format!(" nonce=\"{n}\""))
        .unwrap_or_default()
}

/// Text for HTML content or a quoted attribute value.
pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_link_notice_says_where_the_ticket_is_and_escapes_reasons() {
        let key = TicketKey::parse("TKT-10").unwrap();
        let n = notice(
            &key,
            View::Qa,
            &Stale::NotInQa(Stage::Dev),
            Some("n0nce"),
            "/app/settings",
        );
        assert!(
            n.contains("TKT-10 is in dev now: <strong>this is production</strong>"),
            "{n}"
        );
        assert!(n.contains("<a href=\"/app/settings?dev=TKT-10\">Open ?dev=TKT-10</a>"));
        assert!(n.contains("<style nonce=\"n0nce\">"));
        assert!(n.contains("the qa link selected nothing"));
        // The page's path, never another host's.
        let other = notice(
            &key,
            View::Qa,
            &Stale::NotInQa(Stage::Dev),
            None,
            "//evil.test/\"x",
        );
        assert!(
            other.contains("<a href=\"/evil.test/&quot;x?dev=TKT-10\">"),
            "{other}"
        );
        let hostile = Stale::Refused("<script>alert(1)</script> & \"x\"".into());
        let n = notice(&key, View::Dev, &hostile, Some("bad\" onload=\"x"), "/");
        assert!(
            !n.contains("<script>") && n.contains("&lt;script&gt;"),
            "{n}"
        );
        assert!(n.contains("&amp; &quot;x&quot;"));
        assert!(n.contains("<style>"), "an unsafe nonce is dropped: {n}");
        assert!(notice(&key, View::Dev, &Stale::Closed, None, "/").contains("TKT-10 is closed"));
        assert!(
            notice(&key, View::Dev, &Stale::Unknown, None, "/").contains("no open ticket TKT-10")
        );
    }
}
