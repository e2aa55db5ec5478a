//! Production's worker script, as a browser on a ticket gets it: the
//! probe's worker reporter after its code (`probe::WORKER_REPORTER`), so
//! that what the worker loads itself reaches the page's badge.
//!
//! Only a script that comes whole and plain takes it: a `200` of
//! JavaScript with a body, in a coding and a charset the reporter's bytes
//! can follow (no `Content-Encoding`: the origin is asked for none; nor
//! UTF-16, by its charset or its byte order mark). `Accept-Encoding` goes,
//! and the conditional headers with it, so the whole script comes rather
//! than a `304` for a copy the browser kept without the reporter. Anything
//! else goes out as the origin sent it. The answer is the ticket browser's
//! own, as the ticket's files are: never stored, by a browser, a CDN or a
//! service worker's Cache API (`Vary: *`), and without validators.

use bytes::{Bytes, BytesMut};
use http::header;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;

use crate::decode::Coding;
use crate::probe::WORKER_REPORTER;
use crate::select::names::{CDN_CACHE_CONTROL, SURROGATE_CONTROL};

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

/// Whether the origin's answer may take the reporter; if so, its headers
/// say that nobody keeps it, and its length goes (the body decides, at its
/// first bytes: see [`body`]).
pub(super) fn response(resp: &mut ResponseHeader) -> Result<bool> {
    if resp.status.as_u16() != 200 || !is_plain_javascript(resp) || encoded(resp) {
        return Ok(false);
    }
    // No body at all: Pingora ends such an answer with its header, and no
    // body filter runs to add anything.
    let empty = resp
        .headers
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes().trim_ascii() == b"0");
    if empty {
        return Ok(false);
    }
    for h in [
        header::CONTENT_LENGTH,
        header::ETAG,
        header::LAST_MODIFIED,
        header::ACCEPT_RANGES,
        header::CONTENT_RANGE,
    ] {
        resp.remove_header(&h);
    }
    super::never_stored(resp);
    super::vary_on_everything(resp);
    resp.insert_header(CDN_CACHE_CONTROL.clone(), "no-store")?;
    resp.insert_header(SURROGATE_CONTROL.clone(), "no-store")?;
    Ok(true)
}

/// The body: the origin's, then the reporter at its end. `sent` counts
/// the bytes passed so far: a body that starts with a UTF-16 byte order
/// mark turns the reporter off (`on`).
pub(super) fn body(body: &mut Option<Bytes>, end_of_stream: bool, on: &mut bool, sent: &mut usize) {
    if let Some(b) = body.as_ref() {
        if *sent == 0 && b.len() >= 2 && (b.starts_with(b"\xFF\xFE") || b.starts_with(b"\xFE\xFF"))
        {
            *on = false;
            return;
        }
        *sent += b.len();
    }
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
/// `application/x-javascript`, `text/ecmascript`, …), in a charset that
/// ASCII bytes can follow (none said, UTF-8, a single-byte one: see
/// `page::declared_charset`).
fn is_plain_javascript(resp: &ResponseHeader) -> bool {
    let Some(value) = resp
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let essence = essence.to_ascii_lowercase();
    let (kind, sub) = essence.split_once('/').unwrap_or_default();
    let javascript = (kind == "text" || kind == "application")
        && (sub.ends_with("javascript") || sub.ends_with("ecmascript") || sub == "jscript");
    javascript && !matches!(super::page::declared_charset(resp), Some(Err(_)))
}

/// Any coding but `identity` on any of its lines (as `decode::Coding`
/// reads one).
fn encoded(resp: &ResponseHeader) -> bool {
    resp.headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .any(|v| !matches!(Coding::from_header(Some(v.as_bytes())), Ok(None)))
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
            (200, vec![js, ("content-length", "12")], true),
            // Nothing to follow: Pingora sends no body to add to.
            (200, vec![js, ("content-length", "0")], false),
            (
                200,
                vec![("content-type", "text/javascript;charset=UTF-16LE")],
                false,
            ),
            (
                200,
                vec![("content-type", "text/javascript; charset=\"utf-16\"")],
                false,
            ),
            (
                200,
                vec![("content-type", "text/javascript; charset=iso-2022-jp")],
                false,
            ),
            (
                200,
                vec![("content-type", "text/javascript; charset=latin1")],
                true,
            ),
            (
                200,
                vec![("content-type", "text/javascript; charset=no-such")],
                true,
            ),
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

    /// Kept by nobody: no browser or CDN (`no-store`), no service worker's
    /// Cache API (`Vary: *`), with no validator to revalidate it by; its
    /// length is the body's to tell.
    #[test]
    fn nobody_keeps_the_script_with_the_reporter() {
        let mut r = answer(
            200,
            &[
                ("content-type", "text/javascript"),
                ("content-length", "10"),
                ("etag", "\"production\""),
                ("last-modified", "Mon, 07 Dec 2026 10:00:00 GMT"),
                ("cache-control", "public, max-age=600"),
                ("vary", "Accept-Encoding"),
                ("cdn-cache-control", "max-age=86400"),
            ],
        );
        assert!(response(&mut r).unwrap());
        assert_eq!(r.headers["cache-control"], "private, no-store");
        assert_eq!(r.headers["vary"], "*");
        assert_eq!(r.headers["cdn-cache-control"], "no-store");
        assert_eq!(r.headers["surrogate-control"], "no-store");
        for gone in ["etag", "last-modified", "content-length"] {
            assert!(r.headers.get(gone).is_none(), "{gone}");
        }
    }

    #[test]
    fn the_reporter_ends_the_body_once() {
        let (mut on, mut sent) = (true, 0);
        let mut b = Some(Bytes::from_static(b"a();"));
        body(&mut b, false, &mut on, &mut sent);
        assert_eq!(b.as_deref(), Some(&b"a();"[..]));
        let mut b = Some(Bytes::from_static(b"b();"));
        body(&mut b, true, &mut on, &mut sent);
        assert_eq!(
            b.unwrap(),
            [&b"b();"[..], WORKER_REPORTER.as_bytes()].concat()
        );
        assert!(on);
        // The end may come on its own.
        let (mut on, mut sent) = (true, 3);
        let mut none = None;
        body(&mut none, true, &mut on, &mut sent);
        assert_eq!(none.unwrap(), WORKER_REPORTER.as_bytes());
    }

    /// A UTF-16 script (told by its byte order mark) would not parse with
    /// ASCII bytes after it: it goes out as it came.
    #[test]
    fn a_utf16_script_goes_out_as_it_came() {
        for bom in [&b"\xFF\xFEa\0"[..], b"\xFE\xFF\0a"] {
            let (mut on, mut sent) = (true, 0);
            let mut b = Some(Bytes::copy_from_slice(bom));
            body(&mut b, true, &mut on, &mut sent);
            assert!(!on);
            assert_eq!(b.as_deref(), Some(bom));
        }
        // The same bytes later in the body are only bytes.
        let (mut on, mut sent) = (true, 0);
        let mut b = Some(Bytes::from_static(b"x"));
        body(&mut b, false, &mut on, &mut sent);
        let mut b = Some(Bytes::from_static(b"\xFF\xFE"));
        body(&mut b, true, &mut on, &mut sent);
        assert!(on);
        assert!(b.unwrap().ends_with(WORKER_REPORTER.as_bytes()));
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
