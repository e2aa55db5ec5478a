//! Production's worker script, as a browser on a ticket gets it: the
//! probe's worker reporter after its code (`probe::WORKER_REPORTER`), so
//! that what the worker loads itself reaches the page's badge.
//!
//! Only a script that comes whole and plain takes it: a `200` of
//! JavaScript without a `Content-Encoding` (the origin is asked for no
//! other: `Accept-Encoding` goes, and the conditional headers with it, so
//! the whole script comes rather than a `304` for a copy the browser kept
//! without the reporter). Anything else goes out as the origin sent it.
//! The answer is the ticket browser's own: never stored, no validators.

use bytes::{Bytes, BytesMut};
use http::header;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;

use crate::probe::WORKER_REPORTER;

/// The request to the origin: a whole, plain answer.
pub(super) fn upstream(upstream: &mut RequestHeader) {
    for h in [
        header::ACCEPT_ENCODING,
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_RANGE,
        header::RANGE,
    ] {
        upstream.remove_header(&h);
    }
}

/// Whether the origin's answer takes the reporter; if so, its headers say
/// the longer body and that nobody keeps it.
pub(super) fn response(resp: &mut ResponseHeader) -> Result<bool> {
    if resp.status.as_u16() != 200 || !is_javascript(resp) || encoded(resp) {
        return Ok(false);
    }
    let length = resp.headers.get(header::CONTENT_LENGTH).map(|v| {
        std::str::from_utf8(v.as_bytes())
            .ok()?
            .trim()
            .parse::<u64>()
            .ok()
    });
    match length {
        Some(Some(n)) => {
            let n = n.saturating_add(WORKER_REPORTER.len() as u64);
            resp.insert_header(header::CONTENT_LENGTH, n.to_string())?;
        }
        // A length nobody can read: the body goes out chunked.
        Some(None) => {
            resp.remove_header(&header::CONTENT_LENGTH);
        }
        None => {}
    }
    for h in [
        header::ETAG,
        header::LAST_MODIFIED,
        header::ACCEPT_RANGES,
        header::CONTENT_RANGE,
    ] {
        resp.remove_header(&h);
    }
    super::never_stored(resp);
    Ok(true)
}

/// The body: the origin's, then the reporter at its end.
pub(super) fn body(body: &mut Option<Bytes>, end_of_stream: bool) {
    if !end_of_stream {
        return;
    }
    *body = Some(match body.take().filter(|b| !b.is_empty()) {
        None => Bytes::from_static(WORKER_REPORTER.as_bytes()),
        Some(last) => {
            let mut all = BytesMut::with_capacity(last.len() + WORKER_REPORTER.len());
            all.extend_from_slice(&last);
            all.extend_from_slice(WORKER_REPORTER.as_bytes());
            all.freeze()
        }
    });
}

/// A JavaScript MIME type, as browsers list them (`text/javascript`,
/// `application/x-javascript`, `text/ecmascript`, …).
fn is_javascript(resp: &ResponseHeader) -> bool {
    resp.headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let essence = v.split(';').next().unwrap_or_default().trim();
            let essence = essence.to_ascii_lowercase();
            let (kind, sub) = essence.split_once('/').unwrap_or_default();
            (kind == "text" || kind == "application")
                && (sub.ends_with("javascript") || sub.ends_with("ecmascript") || sub == "jscript")
        })
}

/// Any coding but `identity`.
fn encoded(resp: &ResponseHeader) -> bool {
    resp.headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .any(|v| {
            v.to_str().map_or(true, |v| {
                v.split(',')
                    .map(str::trim)
                    .any(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity"))
            })
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn answer(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn only_a_whole_plain_script_takes_the_reporter() {
        let js = ("content-type", "text/javascript; charset=utf-8");
        for (status, headers, takes) in [
            (200, vec![js], true),
            (
                200,
                vec![("content-type", "Application/X-JavaScript")],
                true,
            ),
            (200, vec![("content-type", "text/ecmascript")], true),
            (200, vec![js, ("content-encoding", "identity")], true),
            (200, vec![js, ("content-encoding", "gzip")], false),
            (200, vec![js, ("content-encoding", "identity, br")], false),
            (200, vec![js, ("content-encoding", "")], true),
            (200, vec![("content-type", "text/html")], false),
            (200, vec![("content-type", "application/json")], false),
            (200, vec![("content-type", "javascript")], false),
            (200, vec![], false),
            (206, vec![js], false),
            (304, vec![js], false),
            (404, vec![js], false),
        ] {
            let mut r = answer(status, &headers);
            assert_eq!(response(&mut r).unwrap(), takes, "{status} {headers:?}");
        }
    }

    #[test]
    fn the_length_says_the_longer_body_and_nobody_keeps_it() {
        let mut r = answer(
            200,
            &[
                ("content-type", "text/javascript"),
                ("content-length", "10"),
                ("etag", "\"production\""),
                ("last-modified", "Mon, 07 Dec 2026 10:00:00 GMT"),
                ("cache-control", "public, max-age=600"),
            ],
        );
        assert!(response(&mut r).unwrap());
        let len = (10 + WORKER_REPORTER.len()).to_string();
        assert_eq!(r.headers["content-length"], len.as_str());
        assert_eq!(r.headers["cache-control"], "private, no-store");
        assert!(r.headers.get("etag").is_none());
        assert!(r.headers.get("last-modified").is_none());
        // A length nobody can read: chunked instead, never a wrong one.
        for bad in ["ten", "-1", "1, 2", "99999999999999999999999"] {
            let mut r = answer(
                200,
                &[("content-type", "text/javascript"), ("content-length", bad)],
            );
            assert!(response(&mut r).unwrap());
            assert!(r.headers.get("content-length").is_none(), "{bad}");
        }
    }

    #[test]
    fn the_reporter_ends_the_body_once() {
        let mut b = Some(Bytes::from_static(b"a();"));
        body(&mut b, false);
        assert_eq!(b.as_deref(), Some(&b"a();"[..]));
        body(&mut b, true);
        assert_eq!(
            b.unwrap(),
            [&b"a();"[..], WORKER_REPORTER.as_bytes()].concat()
        );
        let mut none = None;
        body(&mut none, true);
        assert_eq!(none.unwrap(), WORKER_REPORTER.as_bytes());
    }

    #[test]
    fn the_origin_is_asked_for_the_whole_plain_script() {
        let mut req = RequestHeader::build("GET", b"/w.js", None).unwrap();
        for (k, v) in [
            ("accept-encoding", "gzip, br"),
            ("if-none-match", "\"x\""),
            ("if-modified-since", "Mon, 07 Dec 2026 10:00:00 GMT"),
            ("range", "bytes=0-1"),
            ("if-range", "\"x\""),
            ("accept", "*/*"),
        ] {
            req.append_header(k, v).unwrap();
        }
        upstream(&mut req);
        assert_eq!(req.headers.len(), 1);
        assert_eq!(req.headers["accept"], "*/*");
    }
}
