//! The floors stamp-proxy is measured against, built on the same Pingora and
//! lol_html, so a ratio to them is what our own code costs:
//!
//! - `proxy`: a bare Pingora proxy, `upstream_peer` only;
//! - `rewrite`: the same, with lol_html and one no-op `script` handler run
//!   over every HTML body (the least any import-map stamper must do);
//! - `rechunk`: the same as `proxy`, but every HTML body goes through the
//!   body filter as a new buffer with its length unknown (chunked), as any
//!   filter that may change a page's length must send it: no parsing at
//!   all, so it is the floor of every stamped response on Pingora;
//! - `responder`: a bare Pingora service answering a module body from
//!   memory (what serving a ticket's module must at least cost).
//!
//! ```text
//! stamp-floor proxy --listen 127.0.0.1:9001 --origin 127.0.0.1:3000
//! stamp-floor rewrite --listen 127.0.0.1:9002 --origin 127.0.0.1:3000
//! stamp-floor rechunk --listen 127.0.0.1:9004 --origin 127.0.0.1:3000
//! stamp-floor responder --listen 127.0.0.1:9003 --body-bytes 30720
//! ```

use std::borrow::Cow;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use lol_html::send::{HtmlRewriter, Settings};
use lol_html::{ElementContentHandlers, OutputSink, Selector};
use pingora::http::ResponseHeader;
use pingora::prelude::{HttpPeer, ProxyHttp, Result, Session};
use pingora::server::configuration::ServerConf;
use pingora::server::Server;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    Proxy,
    Rewrite,
    Rechunk,
    Responder,
}

#[derive(Debug, Parser)]
#[command(about = "Bare-Pingora floors for stamp-load compare")]
struct Args {
    #[arg(value_enum)]
    mode: Mode,
    #[arg(long)]
    listen: String,
    /// host:port of the origin (proxy, rewrite)
    #[arg(long, default_value = "127.0.0.1:1")]
    origin: String,
    /// Size of the body the responder answers
    #[arg(long, default_value_t = 30 << 10)]
    body_bytes: usize,
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

struct Floor {
    mode: Mode,
    origin: String,
    body: Bytes,
}

#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl OutputSink for Sink {
    fn handle_chunk(&mut self, chunk: &[u8]) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(chunk);
    }
}

/// In a `Mutex` only because Pingora wants the context `Sync`; it is never contended.
#[derive(Default)]
struct Ctx {
    rewriter: Mutex<Option<(HtmlRewriter<'static, Sink>, Sink)>>,
    /// `rechunk`: this response's body is copied through the filter.
    rechunk: bool,
}

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    async fn request_filter(&self, session: &mut Session, _ctx: &mut Ctx) -> Result<bool> {
        if !matches!(self.mode, Mode::Responder) {
            return Ok(false);
        }
        let mut resp = ResponseHeader::build(200, Some(3))?;
        resp.insert_header("content-type", "text/javascript; charset=utf-8")?;
        resp.insert_header("content-length", self.body.len().to_string())?;
        session.write_response_header(Box::new(resp), false).await?;
        session
            .write_response_body(Some(self.body.clone()), true)
            .await?;
        Ok(true)
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.origin.as_str(),
            false,
            String::new(),
        )))
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let html = upstream
            .headers
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
        if matches!(self.mode, Mode::Rechunk) && html {
            upstream.remove_header("content-length");
            upstream.insert_header("transfer-encoding", "chunked")?;
            ctx.rechunk = true;
        }
        if matches!(self.mode, Mode::Rewrite) && html {
            upstream.remove_header("content-length");
            upstream.insert_header("transfer-encoding", "chunked")?;
            let selector: Selector = "script"
                .parse()
                .map_err(|_| pingora::Error::new(pingora::ErrorType::InternalError))?;
            let settings = Settings::new_send().append_element_content_handler((
                Cow::Owned(selector),
                ElementContentHandlers::default()
                    .element(|_el: &mut lol_html::send::Element<'_, '_>| Ok(())),
            ));
            let sink = Sink::default();
            *ctx.rewriter
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner) =
                Some((HtmlRewriter::new(settings, sink.clone()), sink));
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<std::time::Duration>> {
        if ctx.rechunk {
            // What a filter that changed nothing would still do: read the
            // chunk and hand on its bytes in a buffer of its own.
            if let Some(chunk) = body.take() {
                *body = Some(Bytes::copy_from_slice(&chunk));
            }
            return Ok(None);
        }
        let slot = ctx
            .rewriter
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        let Some((rewriter, sink)) = slot.as_mut() else {
            return Ok(None);
        };
        if let Some(chunk) = body.as_ref() {
            let _ = rewriter.write(chunk);
        }
        let sink = sink.clone();
        if end_of_stream {
            if let Some((r, _)) = slot.take() {
                let _ = r.end();
            }
        }
        let out = std::mem::take(&mut *sink.0.lock().unwrap_or_else(PoisonError::into_inner));
        *body = Some(Bytes::from(out));
        Ok(None)
    }
}

fn main() {
    let args = Args::parse();
    let conf = ServerConf {
        threads: args.threads,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let floor = Floor {
        mode: args.mode,
        origin: args.origin.clone(),
        body: Bytes::from(vec![b'x'; args.body_bytes]),
    };
    let mut service =
        pingora::proxy::http_proxy_service_with_name(&server.configuration, floor, "floor");
    service.add_tcp(&args.listen);
    server.add_service(service);
    server.run_forever();
}
