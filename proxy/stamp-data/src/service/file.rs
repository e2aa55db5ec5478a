//! Ticket files at plain paths: a file production lacks (a chunk or a
//! stylesheet the ticket's build made) answered in place of the origin's
//! 404, mirror paths (a ticket file, else a redirect to the other origin's
//! own file), and the files no import map reaches (a worker's imports, a
//! ticket page's `fetch()` of its data). Ticket bytes under a production
//! URL are only ever `private, no-store, Vary: *`: no cache keeps them.

use super::Settings;
use bytes::Bytes;
use http::header;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;
use stamp_model::assets;

use super::ctx::{Ctx, Route};
use super::{clear_headers, StampProxy};
use crate::select::names;
use crate::{internal, metrics, modules};

impl StampProxy {
    /// The origin answered 404 for a path the ticket has a file at: the
    /// ticket's file goes out instead. `false` when it stays the origin's.
    pub(super) async fn file_instead_of_404(
        &self,
        session: &Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<bool> {
        let plain = ctx.plain();
        let Route::File(state) = &mut ctx.route else {
            return Ok(false);
        };
        if resp.status.as_u16() != 404 || modules::is_service_worker(session) {
            return Ok(false);
        }
        let file = &state.file;
        let Ok(Some(stored)) = self.modules.body(&file.hash).await else {
            return Ok(false);
        };
        let body = modules::Served::new(&file.path, &file.hash, stored).joined();
        clear_headers(resp);
        resp.set_status(200)?;
        resp.insert_header(header::CONTENT_TYPE, modules::content_type(&file.path))?;
        resp.insert_header(header::CONTENT_LENGTH, body.len().to_string())?;
        resp.insert_header(header::ETAG, format!("\"{}\"", file.hash))?;
        resp.insert_header(header::CACHE_CONTROL, plain.cache_control)?;
        if plain.cache_control.contains("no-store") {
            resp.insert_header(names::CDN_CACHE_CONTROL.clone(), "no-store")?;
            resp.insert_header(names::SURROGATE_CONTROL.clone(), "no-store")?;
        }
        if let Some(vary) = plain.vary {
            resp.insert_header(header::VARY, vary)?;
        }
        resp.insert_header(
            "server-timing",
            format!(
                "{};desc=\"{}\"",
                crate::probe::SERVER_TIMING,
                file.hash.to_hex()
            ),
        )?;
        resp.insert_header("x-content-type-options", "nosniff")?;
        resp.insert_header(names::X_TICKET_STAMP.clone(), "file")?;
        metrics::MODULE_BYTES.inc_by(body.len() as u64);
        state.body = Some(body);
        Ok(true)
    }

    /// A mirror path: the ticket's file there, or the other origin's own.
    pub(super) async fn serve_mirror(&self, session: &mut Session, ctx: &Ctx) -> Result<()> {
        match &ctx.route {
            Route::Mirror(Some(file)) => self.modules.serve_plain(session, file, ctx.plain()).await,
            Route::Unmapped(file) => self.modules.serve_plain(session, file, ctx.plain()).await,
            _ => self.redirect_mirror(session, &ctx.settings).await,
        }
    }

    /// A mirror path that is no ticket file: sends the browser to the other
    /// origin's own file, if that origin is one the proxy knows (an override
    /// is on it, or it is configured); anything else is 404, so the mirror is
    /// no open redirect.
    async fn redirect_mirror(&self, session: &mut Session, s: &Settings) -> Result<()> {
        let req = session.req_header();
        let text = "text/plain; charset=utf-8";
        let Some(url) = assets::unmirror(req.uri.path()) else {
            return internal::respond(
                session,
                404,
                text,
                Bytes::from_static(b"ticket-stamp: not a mirror path\n"),
            )
            .await;
        };
        let origin = assets::origin_of(&url).unwrap_or_default();
        let known = self.snapshot.load().overrides_on(origin)
            || s.asset_origins.iter().any(|o| o == origin);
        if !known {
            return internal::respond(
                session,
                404,
                text,
                Bytes::from_static(b"ticket-stamp: no ticket overrides modules on that origin\n"),
            )
            .await;
        }
        let location = match req.uri.query() {
            Some(q) => format!("{url}?{q}"),
            None => url,
        };
        let mut resp = ResponseHeader::build(302, Some(4))?;
        resp.insert_header(header::LOCATION, location)?;
        resp.insert_header(header::CACHE_CONTROL, "no-cache")?;
        resp.insert_header(header::CONTENT_LENGTH, "0")?;
        resp.insert_header(names::X_TICKET_STAMP.clone(), "mirror; redirect")?;
        session.write_response_header(Box::new(resp), true).await?;
        Ok(())
    }
}

/// The body of a file answered in place of a 404: the origin's page is
/// dropped, the ticket's file goes out.
pub(super) fn file_body(ctx: &Ctx, body: &mut Option<Bytes>, end_of_stream: bool) -> bool {
    match &ctx.route {
        Route::File(state) if state.body.is_some() => {
            *body = end_of_stream.then(|| state.body.clone()).flatten();
            true
        }
        _ => false,
    }
}
