//! A ticket link opened from another site: before a visitor runs a
//! ticket's unreleased code on this origin (with this origin's cookies),
//! the proxy asks them, on a page of its own, whether they meant to. A
//! cross-site page can link to `?dev=KEY` but cannot click "Continue" for
//! the visitor: that click is a same-origin navigation, which selects the
//! ticket as any link on the app would. Signed share links, made to be
//! pasted into chat and trackers, go straight through.

use bytes::Bytes;
use http::header;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;
use stamp_model::ticket::{Stage, TicketKey, View};

use crate::badge::escape;
use crate::select::names;

/// What the confirmation page asks about.
#[derive(Debug, Clone)]
pub struct Confirm {
    pub key: TicketKey,
    pub view: View,
    pub stage: Stage,
}

/// The request's path and query without the selection's parameters (`dev`,
/// `qa`, `st`): production's page.
pub fn stay_url(path: &str, query: Option<&str>) -> String {
    let kept: Vec<(String, String)> = url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .filter(|(k, _)| !matches!(k.as_ref(), "dev" | "qa" | "st"))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if kept.is_empty() {
        return path.to_string();
    }
    let q = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(kept)
        .finish();
    format!("{path}?{q}")
}

/// The page: what the link would run, and the two ways on.
pub fn page(c: &Confirm, host: &str, go: &str, stay: &str) -> String {
    let (key, view) = (escape(c.key.as_str()), c.view.as_str());
    let host = escape(host);
    let what = match c.stage {
        Stage::Prod => "released code".to_string(),
        stage => format!("code in {stage}, not released"),
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<meta name=\"robots\" content=\"noindex\"><title>Open {key} on {host}?</title>\
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:10vh auto;padding:0 1rem;color:#1f2937}}\
h1{{font-size:1.4rem}}.b{{display:inline-block;margin:.4rem .6rem .4rem 0;padding:.6rem 1rem;border-radius:6px;text-decoration:none}}\
.go{{background:#5b2a86;color:#fff}}.stay{{border:1px solid #9ca3af;color:#1f2937}}\
a:focus-visible{{outline:3px solid #f59e0b;outline-offset:2px}}</style></head><body><main>\
<h1>Open ticket {key} on {host}?</h1>\
<p>A link from another site (or one whose origin this browser did not say) asks to show this app with ticket <strong>{key}</strong> \
({view} view): {what}, running on {host} with your session here.</p>\
<p>Continue only if you expected to review {key}.</p>\
<p><a class=\"b go\" href=\"{go}\">Continue to {key}</a>\
<a class=\"b stay\" href=\"{stay}\">Stay on production</a></p>\
</main></body></html>",
        go = escape(go),
        stay = escape(stay),
    )
}

/// Answers the confirmation page; nothing is selected, nothing forwarded.
pub async fn respond(session: &mut Session, c: &Confirm, cookies: &[String]) -> Result<()> {
    let req = session.req_header();
    let host = req
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("this site")
        .to_string();
    let go = req
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_string();
    let stay = stay_url(req.uri.path(), req.uri.query());
    let body = Bytes::from(page(c, &host, &go, &stay));
    let mut resp = ResponseHeader::build(200, Some(8))?;
    resp.insert_header(header::CONTENT_TYPE, "text/html; charset=utf-8")?;
    resp.insert_header(header::CONTENT_LENGTH, body.len().to_string())?;
    resp.insert_header(header::CACHE_CONTROL, "private, no-store")?;
    // Not to be framed (a click cannot be stolen), no script at all.
    resp.insert_header(
        "content-security-policy",
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; form-action 'none'; base-uri 'none'",
    )?;
    resp.insert_header("x-frame-options", "DENY")?;
    // Its links must not carry `?dev=` on in a Referer ("Stay" would select
    // the ticket through it).
    resp.insert_header("referrer-policy", "no-referrer")?;
    // Only ever one that clears: a link that waited for this question.
    for cookie in cookies {
        resp.append_header(header::SET_COOKIE, cookie.as_str())?;
    }
    resp.insert_header(
        names::X_TICKET_STAMP.clone(),
        format!(
            "production; reason=\"a link from another site: {} awaits confirmation\"",
            c.key
        ),
    )?;
    let head = session.req_header().method == http::Method::HEAD;
    session.write_response_header(Box::new(resp), head).await?;
    if !head {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn stay_drops_only_the_selection() {
        assert_eq!(stay_url("/", Some("dev=TKT-1")), "/");
        assert_eq!(
            stay_url("/a", Some("x=1&qa=TKT-1&st=abc&y=2")),
            "/a?x=1&y=2"
        );
        assert_eq!(stay_url("/a", None), "/a");
    }

    #[test]
    fn the_page_escapes_what_it_shows() {
        let c = Confirm {
            key: TicketKey::parse("TKT-1").unwrap(),
            view: View::Dev,
            stage: Stage::Dev,
        };
        let html = page(&c, "evil\"<x>.example", "/?dev=TKT-1&a=\"><script>", "/");
        assert!(
            !html.contains("<script>") && !html.contains("<x>"),
            "{html}"
        );
        assert!(html.contains("href=\"/?dev=TKT-1&amp;a=&quot;&gt;&lt;script&gt;\""));
        assert!(html.contains("code in dev, not released"));
    }
}
