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
//! The wrapper follows the HTTP/1 turn-taking by watching the bytes: a
//! request's header starts with the first byte read after the previous
//! response began, and ends at its empty line; an interim `1xx` response
//! (`100 Continue`) does not end the request, and after `101 Switching
//! Protocols` the connection is a tunnel that is never timed. HTTP/2 (ALPN
//! `h2`) multiplexes its own framing and is passed through untouched.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::tls::TlsRef;
use pingora::protocols::Stream;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, UniqueID, UniqueIDType,
    ALPN,
};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Wraps a service's app so that every HTTP/1 connection gets a header deadline.
pub struct HeaderDeadline<A> {
    pub inner: Arc<A>,
    pub timeout: Duration,
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    /// Waiting for a request (Pingora's keep-alive timeout applies).
    Idle,
    /// Inside a request header; `newlines` tracks the end-of-header search
    /// across reads (1 after `\n`, 2 after `\n\r`).
    Header { newlines: u8 },
    /// The header is in; what is read now is the body.
    Body,
    /// The response has begun; the next byte read starts a new request.
    Responding,
    /// After `101 Switching Protocols`: never timed again.
    Tunnel,
}

/// A connection's stream with a deadline on each request header.
pub struct Deadlined {
    inner: Stream,
    timeout: Duration,
    turn: Turn,
    deadline: Option<Instant>,
    /// Armed only when a header read has to wait: most headers arrive in one
    /// read and never touch the timer wheel.
    timer: Option<Pin<Box<Sleep>>>,
}

impl std::fmt::Debug for Deadlined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deadlined")
            .field("turn", &self.turn)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Deadlined {
    pub fn new(inner: Stream, timeout: Duration) -> Deadlined {
        Deadlined {
            inner,
            timeout,
            turn: Turn::Idle,
            deadline: None,
            timer: None,
        }
    }

    /// Feeds bytes just read through the turn-taking.
    fn saw_read(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut newlines = match self.turn {
            Turn::Idle | Turn::Responding => {
                self.deadline = Some(Instant::now() + self.timeout);
                self.timer = None;
                0
            }
            Turn::Header { newlines } => newlines,
            Turn::Body | Turn::Tunnel => return,
        };
        for &b in bytes {
            newlines = match (newlines, b) {
                // `\n\n` (bare LF, which httparse accepts) or `\n\r\n`.
                (1, b'\n') | (2, b'\n') => {
                    self.turn = Turn::Body;
                    self.deadline = None;
                    self.timer = None;
                    return;
                }
                (_, b'\n') => 1,
                (1, b'\r') => 2,
                _ => 0,
            };
        }
        self.turn = Turn::Header { newlines };
    }

    fn saw_write(&mut self, bytes: &[u8]) {
        if bytes.is_empty() || matches!(self.turn, Turn::Tunnel | Turn::Responding) {
            return;
        }
        // A response's first write starts with its status line.
        let status = bytes
            .strip_prefix(b"HTTP/1.1 ")
            .or_else(|| bytes.strip_prefix(b"HTTP/1.0 "));
        self.turn = match status {
            Some(s) if s.starts_with(b"101") => Turn::Tunnel,
            // An interim response: the request (its body) goes on.
            Some(s) if s.first() == Some(&b'1') => self.turn,
            _ => Turn::Responding,
        };
        if self.turn != Turn::Body && !matches!(self.turn, Turn::Header { .. }) {
            self.deadline = None;
            self.timer = None;
        }
    }

    fn timed_out(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the request header did not arrive within {:?} (timeouts.client_header)",
                self.timeout
            ),
        )
    }
}

impl AsyncRead for Deadlined {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(deadline) = this.deadline {
            if Instant::now() >= deadline {
                return Poll::Ready(Err(this.timed_out()));
            }
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.saw_read(&buf.filled()[before..]);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let Some(deadline) = this.deadline else {
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

impl AsyncWrite for Deadlined {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &result {
            this.saw_write(&buf[..*n]);
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
                this.saw_write(first.unwrap_or(&[]));
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

#[async_trait]
impl Shutdown for Deadlined {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
    }
}

impl UniqueID for Deadlined {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

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

impl GetProxyDigest for Deadlined {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: pingora::protocols::raw_connect::ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for Deadlined {
    fn get_socket_digest(&self) -> Option<Arc<pingora::protocols::SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: pingora::protocols::SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[async_trait]
impl Peek for Deadlined {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}
