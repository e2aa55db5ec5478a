//! Differential: the header-deadline framing follower (`client_io`) against
//! `httparse`, on arbitrary byte streams split at arbitrary points. After
//! every read they must agree on how many request headers and whole
//! requests have ended, as far as the stream holds requests httparse
//! accepts (past the first it refuses, Pingora closes the connection).
#![no_main]

use libfuzzer_sys::fuzz_target;

/// Where each request header and each whole request ends, by httparse, in
/// the stream's valid prefix.
fn reference(data: &[u8]) -> (Vec<usize>, Vec<usize>) {
    let (mut heads, mut ends) = (Vec::new(), Vec::new());
    let mut at = 0;
    loop {
        // Blank lines before a request line are skipped (RFC 9112 §2.2).
        while at < data.len() && matches!(data[at], b'\r' | b'\n') {
            at += 1;
        }
        if at >= data.len() {
            break;
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        let Ok(httparse::Status::Complete(len)) = req.parse(&data[at..]) else {
            break;
        };
        // What the body is, as a strict server reads it; an ambiguous
        // header (what Pingora refuses) ends the comparison.
        let mut length: Option<u64> = None;
        let mut chunked = false;
        let mut ambiguous = false;
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                let v = std::str::from_utf8(h.value).ok().map(str::trim);
                match v.and_then(|v| v.parse::<u64>().ok()) {
                    Some(n) if v.is_some_and(|v| v.bytes().all(|b| b.is_ascii_digit())) => {
                        ambiguous |= length.is_some_and(|l| l != n);
                        length = Some(n);
                    }
                    _ => ambiguous = true,
                }
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                let v = std::str::from_utf8(h.value).unwrap_or("").trim();
                chunked = v
                    .rsplit(',')
                    .next()
                    .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
                ambiguous |= !chunked;
            }
        }
        if ambiguous || (chunked && length.is_some()) {
            break;
        }
        at += len;
        heads.push(at);
        if chunked {
            // Chunks, then trailer lines up to an empty one.
            loop {
                let Ok(httparse::Status::Complete((n, size))) =
                    httparse::parse_chunk_size(&data[at..])
                else {
                    return (heads, ends);
                };
                at += n;
                if size == 0 {
                    break;
                }
                let Some(after) = usize::try_from(size).ok().and_then(|s| at.checked_add(s)) else {
                    return (heads, ends);
                };
                if after > data.len() {
                    return (heads, ends);
                }
                at = after;
                // The CRLF after the data (Pingora checks it).
                match &data[at..] {
                    [b'\r', b'\n', ..] => at += 2,
                    _ => return (heads, ends),
                }
            }
            // The body ends at the CRLF CRLF that ends the trailers (the
            // last size line's CRLF is the first half), as Pingora reads it.
            match data[at - 2..].windows(4).position(|w| w == b"\r\n\r\n") {
                Some(p) => at = at - 2 + p + 4,
                None => return (heads, ends),
            }
        } else if let Some(n) = length {
            let Some(after) = usize::try_from(n).ok().and_then(|n| at.checked_add(n)) else {
                break;
            };
            if after > data.len() {
                break;
            }
            at = after;
        }
        ends.push(at);
    }
    (heads, ends)
}

fuzz_target!(|input: &[u8]| {
    // The first bytes choose the split points; the rest is the stream.
    let Some((&n, rest)) = input.split_first() else {
        return;
    };
    let cuts = usize::from(n % 8).min(rest.len());
    let (sizes, data) = rest.split_at(cuts);
    let mut reads: Vec<&[u8]> = Vec::new();
    let mut left = data;
    for s in sizes {
        let take = (usize::from(*s) % 97).min(left.len());
        let (a, b) = left.split_at(take);
        reads.push(a);
        left = b;
    }
    reads.push(left);
    let (heads, ends) = reference(data);
    // Only as far as the valid prefix: after it the connection is closed.
    let valid_to = ends
        .last()
        .copied()
        .unwrap_or(0)
        .max(heads.last().copied().unwrap_or(0));
    let seen = stamp_data::testing::follow_reads(&reads);
    let mut offset = 0;
    for (read, (h, e)) in reads.iter().zip(seen) {
        offset += read.len();
        if offset > valid_to {
            break;
        }
        let want_h = heads.iter().filter(|&&p| p <= offset).count();
        let want_e = ends.iter().filter(|&&p| p <= offset).count();
        assert_eq!(
            (h, e),
            (want_h, want_e),
            "after {offset} bytes (httparse: headers end at {heads:?}, requests at {ends:?}) of {:?}",
            String::from_utf8_lossy(data)
        );
    }
});
