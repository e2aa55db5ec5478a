//! A deadline for the whole request header of every HTTP/1 request, like
//! nginx's `client_header_timeout`.
//!
//! Pingora bounds each read from a client (`read_timeout`, 60 s) but not the
//! header as a whole, so a client trickling one byte every few seconds keeps
//! a connection, and its buffers, for as long as it likes. [`HeaderDeadline`]
//! wraps each accepted connection's stream: from the first byte of a request
//! until the end of its header (the first empty line) the reads must finish
//! within the deadline, else the read fails and Pingora drops the
//! connection. Body reads keep Pingora's per-read timeout (set per request
//! from `timeouts.client_body`), as nginx's `client_body_timeout` does.
//!
//! The wrapper follows the requests by their own framing, as the bytes are
//! read: blank lines before a request line are skipped (the parser skips
//! them too), a header ends at its empty line, and its body is counted by
//! `Content-Length` or followed chunk by chunk, so the next request's header
//! is told apart from the rest of a body whatever the responses do (an
//! early `413`, `100 Continue`). After `101 Switching Protocols` the
//! connection is a tunnel that is never timed. HTTP/2 (ALPN `h2`) multiplexes
//! its own framing and is passed through untouched.

use std::time::Duration;
use tokio::time::Instant;

// The connection's side (Pingora's streams): with the `proxy` feature. The
// framing follower below is plain code, which the fuzz targets build alone.
#[cfg(feature = "proxy")]
use {
    async_trait::async_trait,
    pingora::apps::ServerApp,
    pingora::protocols::tls::TlsRef,
    pingora::protocols::Stream,
    pingora::protocols::{
        GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, UniqueID,
        UniqueIDType, ALPN,
    },
    pingora::server::ShutdownWatch,
    std::future::Future,
    std::io,
    std::pin::Pin,
    std::sync::Arc,
    std::task::{Context, Poll},
    tokio::io::{AsyncRead, AsyncWrite, ReadBuf},
    tokio::time::Sleep,
};

/// Wraps a service's app so that every HTTP/1 connection gets a header deadline.
#[cfg(feature = "proxy")]
pub struct HeaderDeadline<A> {
    pub inner: Arc<A>,
    pub timeout: Duration,
}

#[cfg(feature = "proxy")]
#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for HeaderDeadline<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let stream: Stream = if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            stream
        } else {
            Box::new(Deadlined::new(stream, self.timeout))
        };
        self.inner.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

/// Where the connection is in its current request, from the bytes read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Turn {
    /// Between requests (Pingora's keep-alive timeout applies); blank lines
    /// before a request line are skipped, as the parser skips them.
    Between,
    /// Inside a request header: `newlines` tracks the end-of-header search
    /// across reads (1 after `\n`, 2 after `\n\r`).
    Header { newlines: u8 },
    /// The header is in; the body is read by its framing.
    Body(Framing),
    /// After `101 Switching Protocols`: never timed again.
    Tunnel,
    /// A body framing Pingora refuses (it answers an error and closes the
    /// connection): nothing left to follow, never timed again.
    Broken,
}

/// How much request body is still to come.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked(Chunk),
}

/// `Transfer-Encoding: chunked`, byte by byte, as Pingora reads it (the
/// size line by `httparse::parse_chunk_size`'s rules, CRLF only): the
/// follower must end a body exactly where Pingora does, or it would time
/// the wrong bytes as the next header (found by the `framing` fuzz target).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Chunk {
    /// The size line: up to 16 hex digits, optional blanks, an extension
    /// (`;` then any bytes, a bare LF included) and CRLF.
    Size {
        size: u64,
        digits: u8,
        /// Blanks after the digits: no more digits may come.
        after: bool,
        ext: bool,
        cr: bool,
    },
    Data(u64),
    /// The CRLF after a chunk's data (`cr`: its CR was seen).
    DataEnd {
        cr: bool,
    },
    /// After the last chunk's size line: the body ends at the CRLF CRLF
    /// that ends the trailers (`matched` bytes of it seen; the size line's
    /// own CRLF counts as the first two).
    Trailer {
        matched: u8,
    },
}

/// What feeding a chunked body did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fed {
    More,
    Done,
    Broken,
}

/// What a request header says about its body.
fn framing(head: &[u8]) -> Option<Framing> {
    let mut length = None;
    let mut chunked = false;
    for line in head.split(|b| *b == b'\n').skip(1) {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii();
        let value = line[colon + 1..].trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            length = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<u64>().ok());
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = value
                .rsplit(|b| *b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        }
    }
    if chunked {
        Some(Framing::Chunked(Chunk::size_line()))
    } else {
        length.filter(|n| *n > 0).map(Framing::Length)
    }
}

impl Chunk {
    fn size_line() -> Chunk {
        Chunk::Size {
            size: 0,
            digits: 0,
            after: false,
            ext: false,
            cr: false,
        }
    }

    /// Feeds `bytes`; how many it took, and whether the body ended (or can
    /// no longer be read as Pingora reads it).
    fn feed(&mut self, bytes: &[u8]) -> (usize, Fed) {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            match self {
                Chunk::Data(left) => {
                    let take = (*left).min((bytes.len() - i) as u64) as usize;
                    *left -= take as u64;
                    i += take;
                    if *left == 0 {
                        *self = Chunk::DataEnd { cr: false };
                    }
                    continue;
                }
                Chunk::Size {
                    size,
                    digits,
                    after,
                    ext,
                    cr,
                } => {
                    if *cr {
                        if b != b'\n' {
                            return (i + 1, Fed::Broken);
                        }
                        *self = if *size == 0 {
                            Chunk::Trailer { matched: 2 }
                        } else {
                            Chunk::Data(*size)
                        };
                    } else if b == b'\r' {
                        *cr = true;
                    } else if *ext {
                        // Any byte, a bare LF too, until CRLF.
                    } else if b == b';' {
                        *ext = true;
                    } else if b == b' ' || b == b'\t' {
                        *after = true;
                    } else if let Some(d) = (b as char).to_digit(16).filter(|_| !*after) {
                        if *digits >= 16 {
                            return (i + 1, Fed::Broken);
                        }
                        *digits += 1;
                        *size = (*size << 4) | u64::from(d);
                    } else {
                        return (i + 1, Fed::Broken);
                    }
                }
                Chunk::DataEnd { cr } => match (*cr, b) {
                    (false, b'\r') => *cr = true,
                    (true, b'\n') => *self = Chunk::size_line(),
                    _ => return (i + 1, Fed::Broken),
                },
                Chunk::Trailer { matched } => {
                    // Progress through CR LF CR LF.
                    let want = if *matched % 2 == 0 { b'\r' } else { b'\n' };
                    if b == want {
                        *matched += 1;
                        if *matched == 4 {
                            return (i + 1, Fed::Done);
                        }
                    } else {
                        *matched = u8::from(b == b'\r');
                    }
                }
            }
            i += 1;
        }
        (i, Fed::More)
    }
}

/// A connection's stream with a deadline on each request header.
#[cfg(feature = "proxy")]
pub struct Deadlined {
    inner: Stream,
    tracker: Tracker,
    /// Armed only when a header read has to wait: most headers arrive in one
    /// read and never touch the timer wheel.
    timer: Option<Pin<Box<Sleep>>>,
}

#[cfg(feature = "proxy")]
impl std::fmt::Debug for Deadlined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deadlined")
            .field("turn", &self.tracker.turn)
            .field("timeout", &self.tracker.timeout)
            .finish_non_exhaustive()
    }
}

/// The request framing of one connection, from the bytes it reads and writes.
#[derive(Debug)]
struct Tracker {
    timeout: Duration,
    turn: Turn,
    /// The header read so far, when it spans reads (for its framing).
    head: Vec<u8>,
    /// When the current header must be in by.
    deadline: Option<Instant>,
    /// A request's header is in and its response's status line is not out
    /// yet: the next write starts with it.
    awaiting_status: bool,
    /// Request headers and whole requests seen (for the differential fuzz
    /// target against httparse).
    headers_seen: usize,
    requests_seen: usize,
}

/// The longest header kept for reading its framing; Pingora refuses longer.
const MAX_HEAD: usize = 128 * 1024;

#[cfg(feature = "proxy")]
impl Deadlined {
    pub fn new(inner: Stream, timeout: Duration) -> Deadlined {
        Deadlined {
            inner,
            tracker: Tracker::new(timeout),
            timer: None,
        }
    }

    fn timed_out(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the request header did not arrive within {:?} (timeouts.client_header)",
                self.tracker.timeout
            ),
        )
    }
}

impl Tracker {
    fn new(timeout: Duration) -> Tracker {
        Tracker {
            timeout,
            turn: Turn::Between,
            head: Vec::new(),
            deadline: None,
            awaiting_status: false,
            headers_seen: 0,
            requests_seen: 0,
        }
    }

    /// Feeds bytes just read through the request framing.
    fn saw_read(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match &mut self.turn {
                Turn::Tunnel | Turn::Broken => return,
                Turn::Between => {
                    let Some(start) = bytes.iter().position(|b| !matches!(b, b'\r' | b'\n')) else {
                        return;
                    };
                    bytes = &bytes[start..];
                    self.deadline = Some(Instant::now() + self.timeout);
                    self.head.clear();
                    self.turn = Turn::Header { newlines: 0 };
                }
                Turn::Header { newlines } => {
                    let mut n = *newlines;
                    let mut end = None;
                    for (i, &b) in bytes.iter().enumerate() {
                        n = match (n, b) {
                            // `\n\n` (bare LF, which httparse accepts) or `\n\r\n`.
                            (1 | 2, b'\n') => {
                                end = Some(i + 1);
                                break;
                            }
                            (_, b'\n') => 1,
                            (1, b'\r') => 2,
                            _ => 0,
                        };
                    }
                    let Some(end) = end else {
                        *newlines = n;
                        if self.head.len() < MAX_HEAD {
                            self.head.extend_from_slice(bytes);
                        }
                        return;
                    };
                    let body = if self.head.is_empty() {
                        framing(&bytes[..end])
                    } else {
                        self.head.extend_from_slice(&bytes[..end]);
                        framing(&self.head)
                    };
                    self.head.clear();
                    self.deadline = None;
                    self.awaiting_status = true;
                    self.headers_seen += 1;
                    if body.is_none() {
                        self.requests_seen += 1;
                    }
                    self.turn = body.map_or(Turn::Between, Turn::Body);
                    bytes = &bytes[end..];
                }
                Turn::Body(Framing::Length(left)) => {
                    let take = (*left).min(bytes.len() as u64);
                    *left -= take;
                    if *left == 0 {
                        self.turn = Turn::Between;
                        self.requests_seen += 1;
                    }
                    bytes = &bytes[take as usize..];
                }
                Turn::Body(Framing::Chunked(chunk)) => {
                    let (took, fed) = chunk.feed(bytes);
                    match fed {
                        Fed::More => {}
                        Fed::Done => {
                            self.turn = Turn::Between;
                            self.requests_seen += 1;
                        }
                        Fed::Broken => {
                            self.turn = Turn::Broken;
                            self.deadline = None;
                        }
                    }
                    bytes = &bytes[took..];
                }
            }
        }
    }

    /// Only a status line matters, and only `101 Switching Protocols`: what
    /// follows it is not HTTP. (A response body that starts like a status
    /// line is not one: only the first write after a header counts.)
    fn saw_write(&mut self, bytes: &[u8]) {
        if !self.awaiting_status || bytes.is_empty() {
            return;
        }
        let status = bytes
            .strip_prefix(b"HTTP/1.1 ")
            .or_else(|| bytes.strip_prefix(b"HTTP/1.0 "));
        match status {
            Some(s) if s.starts_with(b"101") => {
                self.turn = Turn::Tunnel;
                self.deadline = None;
                self.awaiting_status = false;
            }
            // `100 Continue` and other interim responses: the final one follows.
            Some(s) if s.first() == Some(&b'1') => {}
            _ => self.awaiting_status = false,
        }
    }
}

#[cfg(feature = "proxy")]
impl AsyncRead for Deadlined {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(deadline) = this.tracker.deadline {
            if Instant::now() >= deadline {
                return Poll::Ready(Err(this.timed_out()));
            }
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let deadline = this.tracker.deadline;
                this.tracker.saw_read(&buf.filled()[before..]);
                if this.tracker.deadline != deadline {
                    this.timer = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let Some(deadline) = this.tracker.deadline else {
                    return Poll::Pending;
                };
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(this.timed_out())),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

#[cfg(feature = "proxy")]
impl AsyncWrite for Deadlined {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &result {
            this.tracker.saw_write(&buf[..*n]);
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &result {
            if *n > 0 {
                let first = bufs.iter().find(|b| !b.is_empty()).map(|b| &b[..]);
                this.tracker.saw_write(first.unwrap_or(&[]));
            }
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(feature = "proxy")]
#[async_trait]
impl Shutdown for Deadlined {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
    }
}

#[cfg(feature = "proxy")]
impl UniqueID for Deadlined {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

#[cfg(feature = "proxy")]
impl Ssl for Deadlined {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

#[cfg(feature = "proxy")]
impl GetTimingDigest for Deadlined {
    fn get_timing_digest(&self) -> Vec<Option<pingora::protocols::TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

#[cfg(feature = "proxy")]
impl GetProxyDigest for Deadlined {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: pingora::protocols::raw_connect::ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

#[cfg(feature = "proxy")]
impl GetSocketDigest for Deadlined {
    fn get_socket_digest(&self) -> Option<Arc<pingora::protocols::SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: pingora::protocols::SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[cfg(feature = "proxy")]
#[async_trait]
impl Peek for Deadlined {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

/// Follows the request framing of one connection's reads, split as given:
/// after each read, how many request headers and whole requests (header
/// and body) have ended. For the differential fuzz target, which checks
/// this against `httparse` on the same bytes.
#[cfg(feature = "testing")]
pub fn follow_reads(reads: &[&[u8]]) -> Vec<(usize, usize)> {
    let mut t = Tracker::new(Duration::from_secs(60));
    reads
        .iter()
        .map(|r| {
            t.saw_read(r);
            (t.headers_seen, t.requests_seen)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker() -> Tracker {
        Tracker::new(Duration::from_secs(60))
    }

    fn timed(t: &Tracker) -> bool {
        t.deadline.is_some()
    }

    #[tokio::test]
    async fn blank_lines_before_a_request_do_not_end_its_header() {
        let mut t = tracker();
        t.saw_read(b"\r\n\r\n\n");
        assert!(!timed(&t), "blank lines alone start nothing");
        t.saw_read(b"G");
        assert!(timed(&t), "the request line starts the deadline");
        t.saw_read(b"ET / HTTP/1.1\r\nHost: x\r\n");
        assert!(timed(&t));
        t.saw_read(b"\r\n");
        assert!(!timed(&t));
        assert_eq!(t.turn, Turn::Between);
    }

    #[tokio::test]
    async fn bodies_are_counted_so_the_next_header_is_timed_whatever_the_response() {
        let mut t = tracker();
        t.saw_read(b"POST /a HTTP/1.1\r\nContent-Length: 14\r\n\r\nhello");
        assert_eq!(t.turn, Turn::Body(Framing::Length(9)));
        // An early response (a 413, a 405) before the body is read.
        t.saw_write(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n");
        // The rest of the body, with blank lines in it, is still body.
        t.saw_read(b"\n\n\r\n\r\n ");
        assert!(!timed(&t));
        assert!(matches!(t.turn, Turn::Body(_)));
        t.saw_read(b"!!GET /b HTTP/1.1\r\n");
        assert!(timed(&t), "the next request's header is timed");
    }

    #[tokio::test]
    async fn chunked_bodies_are_followed_chunk_by_chunk() {
        let mut t = tracker();
        t.saw_read(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        t.saw_read(b"5;ext=1\r\n\n\n\n\n\n\r\n");
        t.saw_read(b"a\r\n0123456789\r\n");
        assert!(matches!(t.turn, Turn::Body(_)));
        t.saw_read(b"0\r\nTrailer: x\r\n\r\nGET");
        assert!(
            timed(&t),
            "after the last chunk and its trailers, a new request"
        );
    }

    /// As Pingora reads it (httparse's size line, CRLF only): a bare LF in
    /// an extension does not end the size line, and a body Pingora refuses
    /// stops the following (Pingora closes the connection).
    #[tokio::test]
    async fn chunk_lines_end_where_pingora_ends_them() {
        let mut t = tracker();
        t.saw_read(b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        t.saw_read(b"0;e\n\nGET /x HTTP/1.1");
        assert!(!timed(&t), "still the last chunk's size line, not a header");
        t.saw_read(b"\r\n");
        assert!(
            matches!(t.turn, Turn::Body(_)),
            "the trailers' end is still to come"
        );
        t.saw_read(b"\r\nGET");
        assert!(timed(&t));
        for broken in [
            &b"5\nhello"[..],
            b"zz\r\n",
            b"3\r\nabcXY",
            b"11111111111111111\r\n",
        ] {
            let mut t = tracker();
            t.saw_read(b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
            t.saw_read(broken);
            assert_eq!(
                t.turn,
                Turn::Broken,
                "{:?}",
                String::from_utf8_lossy(broken)
            );
            t.saw_read(b"GET / HTTP/1.1\r\n");
            assert!(!timed(&t));
        }
    }

    #[tokio::test]
    async fn only_a_101_status_line_makes_a_tunnel() {
        let mut t = tracker();
        t.saw_read(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n");
        t.saw_write(b"HTTP/1.1 100 Continue\r\n\r\n");
        t.saw_write(b"HTTP/1.1 101 Switching Protocols\r\n\r\n");
        assert_eq!(t.turn, Turn::Tunnel);
        t.saw_read(b"\x81\x05hello");
        assert!(!timed(&t));

        // A response body that looks like a status line is not one.
        let mut t = tracker();
        t.saw_read(b"GET /x.js HTTP/1.1\r\n\r\n");
        t.saw_write(b"HTTP/1.1 200 OK\r\ncontent-length: 30\r\n\r\n");
        t.saw_write(b"HTTP/1.1 101 Switching Protocols");
        assert_eq!(t.turn, Turn::Between);
        t.saw_read(b"G");
        assert!(timed(&t));
    }

    #[test]
    fn framing_reads_length_and_chunked() {
        assert_eq!(
            framing(b"POST / HTTP/1.1\r\ncontent-length:  42 \r\n\r\n"),
            Some(Framing::Length(42))
        );
        assert_eq!(framing(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), None);
        assert_eq!(
            framing(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
            None
        );
        assert!(matches!(
            framing(b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Some(Framing::Chunked(_))
        ));
    }
}
