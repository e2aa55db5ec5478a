//! The probe's two endpoints: page reports in, and the badge's exit.

use super::Settings;
use bytes::Bytes;
use http::header;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;
use stamp_model::views::MAX_REPORT_BYTES;

use super::ctx::Ctx;
use super::StampProxy;
use crate::select::names;
use crate::{internal, select};

const TEXT: &str = "text/plain; charset=utf-8";

impl StampProxy {
    /// `POST /__stamp/report`: 204 once queued, else why not.
    pub(super) async fn take_report(&self, session: &mut Session, s: &Settings) -> Result<()> {
        if session.req_header().method != http::Method::POST {
            let body = Bytes::from_static(b"ticket-stamp: reports are POSTed\n");
            return internal::respond(session, 405, TEXT, body).await;
        }
        let body = match internal::read_body(session, MAX_REPORT_BYTES).await {
            Ok(b) => b,
            Err((status, _, message)) => {
                let body = Bytes::from(format!("ticket-stamp: {message}\n"));
                return internal::respond(session, status, TEXT, body).await;
            }
        };
        let client = self.client_ip(session, s);
        let snapshot = self.snapshot.load();
        match self.reports.take(&body, client, &snapshot) {
            Ok(()) => {
                let mut resp = ResponseHeader::build(204, Some(2))?;
                resp.insert_header(header::CACHE_CONTROL, "no-store")?;
                session.write_response_header(Box::new(resp), true).await
            }
            Err(refusal) => {
                let body = Bytes::from(refusal.message());
                internal::respond(session, refusal.status(), TEXT, body).await
            }
        }
    }

    /// `/__stamp/leave`: clears every copy of the selection's cookie. A
    /// `POST` (the badge's exit, which no service worker answers from a
    /// cache) gets 204; a `GET` goes on to `?to=` (a path on this origin).
    pub(super) async fn leave(&self, session: &mut Session, ctx: &Ctx) -> Result<()> {
        let req = session.req_header();
        let host = req.headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let cookies =
            select::clear_cookies(&ctx.settings.cfg.selection.cookie_name, ctx.secure, host);
        let post = req.method == http::Method::POST;
        let to = url::form_urlencoded::parse(req.uri.query().unwrap_or("").as_bytes())
            .find(|(k, _)| k == "to")
            .map(|(_, v)| v.into_owned())
            .filter(|t| t.starts_with('/') && !t.starts_with("//") && !t.contains('\\'))
            .unwrap_or_else(|| "/".to_string());
        let mut resp = ResponseHeader::build(if post { 204 } else { 303 }, Some(4))?;
        if !post {
            resp.insert_header(header::LOCATION, to)?;
            resp.insert_header(header::CONTENT_LENGTH, "0")?;
        }
        resp.insert_header(header::CACHE_CONTROL, "private, no-store")?;
        resp.insert_header(
            names::X_TICKET_STAMP.clone(),
            "production; reason=\"selection cleared\"",
        )?;
        for c in &cookies {
            resp.append_header(header::SET_COOKIE, c.as_str())?;
        }
        // Nor does a link waiting to be asked about.
        resp.append_header(
            header::SET_COOKIE,
            select::clear_cookie(select::PENDING_COOKIE, ctx.secure),
        )?;
        // A page of the ticket still open elsewhere must not select it again
        // through its requests' Referer (see `select::from_referer`).
        let on = select::ticket_on(
            req.headers
                .get_all(header::COOKIE)
                .iter()
                .map(|v| v.as_bytes()),
            ctx.settings.cookie_name(ctx.secure),
        );
        resp.append_header(
            header::SET_COOKIE,
            select::left_cookie(
                on.as_deref(),
                ctx.secure,
                ctx.settings.cfg.selection.cookie_max_age.as_secs(),
            ),
        )?;
        // The badge's exit then goes to the page's URL without the ticket:
        // a copy of it the ticket's page fetched ahead must not answer.
        resp.insert_header(
            names::CLEAR_SITE_DATA.clone(),
            http::HeaderValue::from_static(select::SPECULATION_CLEARED),
        )?;
        session.write_response_header(Box::new(resp), true).await
    }

    /// The app's service worker, asked for by a browser on a ticket: a
    /// worker of ours that caches nothing and answers nothing (every request
    /// goes to the network, through the proxy), takes over at once and
    /// reloads the windows the app's worker had answered from the network. So a service worker can
    /// neither hide a ticket's pages behind production's cache nor keep
    /// ticket bytes. Once the browser leaves the ticket, its next update
    /// check gets production's worker back, as it was.
    pub(super) async fn set_aside_worker(
        &self,
        session: &mut Session,
        sel: &super::ctx::Selected,
    ) -> Result<()> {
        let mut resp = ResponseHeader::build(200, Some(5))?;
        // A link waiting to be asked about may be marked by this very
        // request (the worker's update check, the page's first): the mark
        // must reach the browser, or the reload would not ask. A ticket
        // its `Referer` selects is a change of what the browser is on.
        super::selection_headers(&mut resp, sel)?;
        resp.insert_header(header::CONTENT_TYPE, "text/javascript; charset=utf-8")?;
        resp.insert_header(header::CACHE_CONTROL, "no-store")?;
        resp.insert_header(header::VARY, "*")?;
        resp.insert_header(
            names::X_TICKET_STAMP.clone(),
            "service worker set aside while this browser is on a ticket",
        )?;
        internal::write(session, resp, Bytes::from_static(SET_ASIDE.as_bytes())).await
    }
}

/// The pass-through service worker (see [`StampProxy::set_aside_worker`]).
const SET_ASIDE: &str = "// ticket-stamp: this browser is on a ticket, so the app's service worker is set aside\n\
// (no cache, no fetch handler: everything goes to the network). Leaving the ticket brings it back.\n\
self.addEventListener('install',()=>self.skipWaiting());\n\
// A fetch handler that answers nothing: the network answers. (With none at all, browsers\n\
// pass navigations by the worker, and check it for updates less often.)\n\
self.addEventListener('fetch',e=>{void e});\n\
// The windows the app's worker answered reload from the network once this one is active\n\
// (navigating them while it activates would wait on itself).\n\
self.addEventListener('activate',e=>e.waitUntil(self.clients.matchAll({type:'window'})\n\
.then(before=>self.clients.claim().then(()=>{setTimeout(()=>before.forEach(c=>c.navigate(c.url).catch(()=>0)),50)}))));\n";
