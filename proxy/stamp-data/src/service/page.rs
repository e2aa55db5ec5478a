//! An HTML page that may be stamped: asked for whole and fresh, answered
//! from the stamped-page cache when the origin validates it, or rewritten
//! as it streams through lol_html with its headers made safe for a variant.

use super::Settings;
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use http::{header, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::compression::ResponseCompression;
use pingora::prelude::*;
use pingora::protocols::http::compression::ResponseCompressionCtx;
use pingora::proxy::Session;

use super::ctx::{ActiveRewrite, Ctx, Notice, PagePlan, Route, Variant};
use super::StampProxy;
use super::{add_vary_cookie, broken_encoding, clear_headers, is_html, page_url, whole_and_fresh};
use crate::badge;
use crate::csp;
use crate::decode::{Coding, Decoder};
use crate::metrics;
use crate::pagecache::PageKey;
use crate::probe;
use crate::rewrite::{MetaCsp, PageRewriter, ProbeSpec, RewriteSpec};
use crate::select::{names, View};

impl StampProxy {
    /// What the stamped page of this request depends on, besides the
    /// origin's bytes.
    pub(super) fn page_key(
        &self,
        session: &Session,
        plan: &PagePlan,
        secure: bool,
        s: &Settings,
    ) -> PageKey {
        let req = session.req_header();
        let host = req
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri.authority().map(|a| a.as_str()))
            .unwrap_or_default()
            .to_string();
        let uri = req
            .uri
            .path_and_query()
            .map_or_else(|| req.uri.path().to_string(), |pq| pq.as_str().to_string());
        let live = crate::live::asked(req.uri.query());
        let label = match &plan.variant {
            Variant::Ticket {
                key,
                view,
                stage,
                own,
            } => format!(
                "ticket {key} {} {stage} {} live={live}",
                view.as_str(),
                own.len()
            ),
            Variant::Overlay => "overlay".to_string(),
        };
        PageKey {
            host,
            uri,
            codings: codings_to_ask(req),
            variant: plan.effective.id,
            label: format!(
                "{label} secure={secure} badge={} settings={}",
                s.cfg.badge, s.generation
            ),
        }
    }

    /// The page must arrive whole and fresh (a 304 would revive a
    /// production copy in the browser; a 206 cannot be rewritten), except
    /// that a stored stamped page is revalidated by its own tag. It is asked
    /// in the codings the client accepts that the proxy reads: the origin
    /// chooses as it would for production, and the page goes out in its
    /// choice (see [`StampProxy::page_response`]).
    pub(super) fn page_upstream(&self, upstream: &mut RequestHeader, ctx: &Ctx) -> Result<()> {
        // Read once per page: the cache's key holds them when it is on.
        let kept = match &ctx.route {
            Route::Page(page) => page.key.as_ref().map(|(key, _)| key.codings.clone()),
            _ => None,
        };
        let accepted = kept.unwrap_or_else(|| codings_to_ask(upstream));
        whole_and_fresh(upstream)?;
        upstream.insert_header(header::ACCEPT_ENCODING, accepted)?;
        if let Route::Page(page) = &ctx.route {
            if let Some(entry) = &page.cached {
                // Ours, not the browser's: a 304 means the stored stamped
                // page is still the page. The tag only: an origin that
                // compares dates alone would answer 304 for another
                // visitor's page.
                let (etag, _) = entry.validators();
                upstream.insert_header(header::IF_NONE_MATCH, etag)?;
            }
        }
        Ok(())
    }

    /// A page's response header: a cache hit is answered whole here;
    /// anything else starts the rewrite (or says why not).
    pub(super) async fn page_response(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Route::Page(page) = &mut ctx.route else {
            return Ok(());
        };
        // Early hints (103) and the like: the page's own answer follows.
        // Their preloads are the page's, and point where its own do.
        if resp.status.is_informational() {
            if let Some(plan) = &ctx.sel.plan {
                if !plan.effective.overrides.is_empty() {
                    let page = page_url(session, ctx.settings.cfg.tls);
                    if let Err(e) = preloads_of_the_variant(resp, &page, &plan.effective) {
                        log::warn!(request_id:% = ctx.id; "early hints: {e}");
                    }
                }
            }
            return Ok(());
        }
        let hit = match page.cached.take() {
            Some(entry) if resp.status.as_u16() == 304 => Some(entry),
            Some(_) => {
                metrics::count(&metrics::PAGE_CACHE, "changed");
                None
            }
            None => None,
        };
        // The page goes out in the coding production would have: compressed
        // (again, after the rewrite) only when the origin compressed it. A
        // stored page, as the answer that filled it.
        let encoded = match &hit {
            Some(entry) => entry.encoded(),
            // A coding the proxy does not read is left as it came, and
            // the compression module leaves an encoded answer alone.
            None => !matches!(
                Coding::from_header(
                    resp.headers
                        .get(header::CONTENT_ENCODING)
                        .map(|v| v.as_bytes())
                ),
                Ok(None)
            ),
        };
        if !encoded {
            uncompressed(session);
        }
        if let Some(entry) = hit {
            // The origin's cookies for this visitor (a rolling session) go
            // out with the stored page.
            let origin_cookies: Vec<http::HeaderValue> = resp
                .headers
                .get_all(header::SET_COOKIE)
                .iter()
                .cloned()
                .collect();
            clear_headers(resp);
            for c in origin_cookies {
                resp.append_header(header::SET_COOKIE, c)?;
            }
            let body = entry.respond(resp, &csp::fresh_nonce())?;
            if session.req_header().version != http::Version::HTTP_2 {
                resp.set_version(http::Version::HTTP_11);
            }
            metrics::count(&metrics::PAGE_CACHE, "hit");
            super::selection_headers(resp, &ctx.sel)?;
            if let Some(info) = &ctx.sel.info {
                resp.insert_header(names::X_TICKET_STAMP.clone(), format!("{info}; cached"))?;
            }
            rollout_headers(resp, &ctx.sel);
            super::not_kept(resp, &ctx.sel, &ctx.route, session.req_header().uri.path());
            return write_hit(session, resp, body).await;
        }
        // Judged on the origin's own headers, before ours are added.
        let fill = page
            .key
            .take()
            .and_then(|(key, version)| self.pages.fill(key, version, session.req_header(), resp));
        super::selection_headers(resp, &ctx.sel)?;
        let plan = match ctx.sel.plan.clone() {
            Some(plan) => plan,
            None => {
                // A selection that did not resolve: production, with a
                // notice that says why.
                if let Some(info) = &ctx.sel.info {
                    resp.insert_header(names::X_TICKET_STAMP.clone(), info.as_str())?;
                }
                let sampled = sampled_sides(&ctx.sel);
                if ctx.sel.notice.is_none() && sampled.is_none() {
                    rollout_headers(resp, &ctx.sel);
                    return Ok(());
                }
                let plan = PagePlan {
                    effective: self.empty.clone(),
                    variant: Variant::Overlay,
                };
                if let Ok(Some(active)) = self.start_rewrite(
                    session,
                    resp,
                    &plan,
                    ctx.sel.notice.as_ref(),
                    sampled,
                    (&ctx.settings, &ctx.id),
                ) {
                    page.rewrite = Some(Mutex::new(active));
                }
                rollout_headers(resp, &ctx.sel);
                return Ok(());
            }
        };
        let sampled = sampled_sides(&ctx.sel);
        let started = self.start_rewrite(
            session,
            resp,
            &plan,
            ctx.sel.notice.as_ref(),
            sampled,
            (&ctx.settings, &ctx.id),
        );
        rollout_headers(resp, &ctx.sel);
        match started {
            Ok(Some(active)) => {
                if let Some(info) = &ctx.sel.info {
                    resp.insert_header(names::X_TICKET_STAMP.clone(), info.as_str())?;
                }
                page.fill = fill.map(|mut f| {
                    f.stamped(resp, &active.nonce, encoded);
                    f
                });
                page.rewrite = Some(Mutex::new(active));
            }
            Ok(None) => {}
            Err(reason) => {
                log::info!(
                    request_id:% = ctx.id;
                    "{} not rewritten: {reason}",
                    session.req_header().uri.path()
                );
                metrics::count(&metrics::REWRITES, "skipped");
                resp.insert_header(
                    names::X_TICKET_STAMP.clone(),
                    format!("unchanged; reason=\"{reason}\""),
                )?;
            }
        }
        Ok(())
    }

    /// Streams one chunk of a page through its rewrite.
    pub(super) fn page_body(
        &self,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Route::Page(page) = &mut ctx.route else {
            return Ok(());
        };
        let Some(active) = &page.rewrite else {
            return Ok(());
        };
        let mut active = active.lock().unwrap_or_else(PoisonError::into_inner);
        let active = &mut *active;
        // Most pages: fed as they came, and what the tokenizer forwards
        // whole goes out as the same bytes.
        let mut shared = Bytes::new();
        let mut out = Vec::new();
        if let Some(chunk) = body.take() {
            match &mut active.decoder {
                Some(d) => match d.write(&chunk) {
                    Ok(plain) => out = active.rewriter.write(&plain),
                    Err(e) => return Err(broken_encoding(&e)),
                },
                None => shared = active.rewriter.write_bytes(&chunk),
            }
        }
        if end_of_stream {
            if let Some(d) = &mut active.decoder {
                match d.finish() {
                    Ok(rest) => out.extend(active.rewriter.write(&rest)),
                    Err(e) => return Err(broken_encoding(&e)),
                }
            }
            out.extend(active.rewriter.finish());
        }
        let out = match (shared.is_empty(), out.is_empty()) {
            (_, true) => shared,
            (true, false) => Bytes::from(out),
            (false, false) => {
                let mut all = Vec::with_capacity(shared.len() + out.len());
                all.extend_from_slice(&shared);
                all.extend_from_slice(&out);
                Bytes::from(all)
            }
        };
        if let Some(fill) = &mut page.fill {
            if !fill.push(&out) {
                page.fill = None;
            }
        }
        if end_of_stream {
            let report = active.rewriter.report();
            metrics::count(&metrics::REWRITES, report.outcome());
            metrics::REWRITE_BYTES_IN.inc_by(report.bytes_in);
            metrics::REWRITE_BYTES_PARSED.inc_by(active.rewriter.bytes_parsed());
            if active.rewriter.head_remembered() {
                metrics::REWRITE_HEADS_REMEMBERED.inc();
            }
            metrics::REWRITE_BYTES_OUT.inc_by(report.bytes_out);
            if let Some(fill) = page.fill.take() {
                // A rewrite that ran out of memory left the rest as it came:
                // right, but not worth keeping.
                if !report.bailed_out {
                    self.pages.store(fill);
                }
            }
        }
        *body = Some(out);
        Ok(())
    }

    /// Headers and rewriter for a page that will be rewritten, or the reason
    /// it will not be.
    fn start_rewrite(
        &self,
        session: &Session,
        resp: &mut ResponseHeader,
        plan: &PagePlan,
        notice: Option<&Notice>,
        sampled: Option<&[(stamp_model::ticket::TicketKey, stamp_model::views::Side)]>,
        (s, id): (&Settings, &super::ctx::RequestId),
    ) -> Result<Option<ActiveRewrite>, String> {
        let Some(decoder) = rewritable(resp)? else {
            return Ok(None);
        };
        // A ticket page carries the probe, which measures what it ran and
        // shows it on the badge. Its script loads from the proxy where no
        // policy of the page's could refuse it; elsewhere it is inline,
        // with the hash or nonce the policies are given. (A production
        // page sampled during a rollout keeps it inline: production
        // visitors never wait for a request to the proxy, nor go through
        // the app's service worker for it.)
        let external = !resp.headers.contains_key(header::CONTENT_SECURITY_POLICY)
            && !resp
                .headers
                .contains_key(header::CONTENT_SECURITY_POLICY_REPORT_ONLY);
        let probe = match &plan.variant {
            Variant::Ticket {
                key,
                view,
                stage,
                own,
            } => Some(ProbeSpec {
                key: key.clone(),
                view: view.as_str(),
                stage: *stage,
                own: own.clone(),
                badge: s.cfg.badge,
                reports: vec![(key.clone(), stamp_model::views::Side::Ticket)],
                touch: Vec::new(),
                external,
            }),
            // A production page sampled during a rollout: no badge, a
            // report to each ticket rolling out, from this visitor's side.
            Variant::Overlay => sampled.and_then(|sides| {
                let (first, _) = sides.first()?;
                Some(ProbeSpec {
                    key: first.clone(),
                    view: "prod",
                    stage: stamp_model::ticket::Stage::Prod,
                    own: Default::default(),
                    badge: false,
                    reports: sides.to_vec(),
                    // What tells this page loaded each ticket's files.
                    touch: {
                        let snap = self.snapshot.load();
                        sides
                            .iter()
                            .map(|(k, _)| {
                                snap.rolling
                                    .iter()
                                    .find(|r| &r.key == k)
                                    .map(|r| r.touch.clone())
                                    .unwrap_or_default()
                            })
                            .collect()
                    },
                    external: false,
                })
            }),
        };
        // A page that only gets a notice has no map: its script policy is
        // left exactly as it is.
        let stamps = !plan.effective.overrides.is_empty();
        let scripts = match (probe.is_some(), stamps) {
            (true, true) => Some(format!(
                "{} {}",
                probe::script_hash(),
                plan.effective.fresh_hash()
            )),
            (true, false) => Some(probe::script_hash().to_string()),
            (false, true) => Some(plan.effective.fresh_hash().to_string()),
            (false, false) => None,
        };
        let fresh = csp::fresh_nonce();
        let all = |name: &header::HeaderName| -> Vec<String> {
            resp.headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok().map(str::to_string))
                .collect()
        };
        // The origin's own policies, before the proxy's nonces are added.
        let enforced = all(&header::CONTENT_SECURITY_POLICY);
        let policies = csp::page_policies(
            &enforced,
            &all(&header::CONTENT_SECURITY_POLICY_REPORT_ONLY),
            scripts.as_deref(),
            notice.is_some().then(badge::style_hash),
            &fresh,
        );
        if let Some(note) = &policies.note {
            log::info!(
                request_id:% = id;
                "{}: {note}",
                session.req_header().uri.path()
            );
        }
        replace_all(resp, &header::CONTENT_SECURITY_POLICY, &policies.enforce)?;
        replace_all(
            resp,
            &header::CONTENT_SECURITY_POLICY_REPORT_ONLY,
            &policies.report_only,
        )?;
        let (nonce, style_nonce) = (policies.script_nonce, policies.style_nonce);
        // A `<meta>` policy in the page can only be given nonces that are
        // ours: the fresh one, when the headers did not settle on the page's.
        let script_ours = nonce.as_deref().is_none_or(|n| n == fresh);
        let meta_csp = (scripts.is_some() && script_ours).then(|| MetaCsp {
            script_nonce: fresh.clone(),
            script_hash: scripts.clone().unwrap_or_default(),
            style: None,
        });
        variant_headers(session, resp, &plan.variant, notice.is_some());
        let page = page_url(session, s.cfg.tls);
        if stamps {
            // Cannot fail with what the rewrite writes; if it did, the
            // page still goes out stamped, its preloads as they came.
            if let Err(e) = preloads_of_the_variant(resp, &page, &plan.effective) {
                log::warn!(request_id:% = id; "{}: {e}", session.req_header().uri.path());
            }
        }

        let live = match &plan.variant {
            Variant::Ticket {
                key,
                view: View::Dev,
                ..
            } if crate::live::asked(session.req_header().uri.query()) => {
                Some(crate::live::url(key, &plan.effective.id))
            }
            _ => None,
        };
        // A sampled production page is counted as sent for each ticket
        // rolling out: one never heard from hung or crashed before its
        // report. Only a browser's load of a page counts (a GET navigation
        // of a document, with the fetch metadata every current browser
        // sends): a HEAD runs nothing, nor does what a crawler, a monitor
        // or curl asks for, and a page a script fetches (Turbo, htmx) may
        // not run its probe.
        // The page's token goes in a header the page reads (its own
        // navigation's server timing), not in its bytes, which a
        // remembered head shares with every view.
        if let (Variant::Overlay, Some(p)) = (&plan.variant, &probe) {
            let req = session.req_header();
            if req.method == http::Method::GET
                && crate::select::a_browser_loads_a_page(&req.headers)
            {
                if let Some(token) = self.reports.sent(&p.reports, self.client_ip(session, s)) {
                    let timing = format!(
                        "{};desc=\"{}\"",
                        stamp_model::views::PAGE_TOKEN_TIMING,
                        token.text()
                    );
                    if let Ok(v) = HeaderValue::from_str(&timing) {
                        let _ =
                            resp.append_header(header::HeaderName::from_static("server-timing"), v);
                    }
                }
            }
        }
        // Every nonce the rewrite writes is the made-up one, unless the
        // map carries the page's own.
        let made_up = nonce.as_deref().is_none_or(|n| n == fresh);
        let rewriter = PageRewriter::new(RewriteSpec {
            live,
            effective: plan.effective.clone(),
            page_url: page,
            fresh: made_up.then(|| fresh.clone()),
            nonce,
            max_map_bytes: s.cfg.rewrite.max_import_map_bytes,
            memory_limit_bytes: s.cfg.rewrite.memory_limit_bytes,
            probe,
            meta_csp,
            asset_origins: s.asset_origins.clone(),
            encoding: decoder.encoding,
            base_uri: csp::base_uri_sources(
                &enforced.iter().map(String::as_str).collect::<Vec<_>>(),
            ),
            notice: notice.map(|(key, view, why)| {
                badge::notice(
                    key,
                    *view,
                    why,
                    style_nonce.as_deref(),
                    session.req_header().uri.path(),
                )
            }),
        });
        Ok(Some(ActiveRewrite {
            decoder: decoder.decoder,
            rewriter,
            nonce: fresh,
        }))
    }
}

/// A page the rewriter can read, with the decoder its encoding needs.
struct Readable {
    decoder: Option<Decoder>,
    /// The charset the headers name, if any.
    encoding: Option<&'static encoding_rs::Encoding>,
}

/// Whether the response is a page to rewrite: `Ok(None)` when it is no page
/// (another status or type), `Err` with the reason when it is one that
/// cannot be rewritten.
fn rewritable(resp: &ResponseHeader) -> Result<Option<Readable>, String> {
    let status = resp.status.as_u16();
    if status < 200 || status == 204 || status == 206 || status == 304 {
        return Ok(None);
    }
    if !is_html(resp) {
        // A page the browser shows as a document, which the proxy does not
        // read: said, so that no one wonders why the ticket is not there.
        let ct = resp
            .headers
            .get(header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        return match ct {
            Some(ct) if ct.to_ascii_lowercase().contains("xhtml") => Err(format!(
                "the page is {}, XML the rewriter does not read",
                ct.split(';').next().unwrap_or_default().trim()
            )),
            None if status == 200 => {
                Err("the page has no Content-Type (the browser guesses; the proxy does not)".into())
            }
            _ => Ok(None),
        };
    }
    let no_transform = resp.headers.get_all(header::CACHE_CONTROL).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|d| d.trim().eq_ignore_ascii_case("no-transform"))
        })
    });
    if no_transform {
        return Err("the origin sent Cache-Control: no-transform".into());
    }
    let encoding = match declared_charset(resp) {
        Some(Ok(encoding)) => Some(encoding),
        // lol_html reads ASCII-compatible charsets only: say so rather
        // than claim a page was stamped that never could be.
        Some(Err(name)) => {
            return Err(format!(
                "the page is {name}, which the rewriter cannot read"
            ))
        }
        None => None,
    };
    let coding = Coding::from_header(
        resp.headers
            .get(header::CONTENT_ENCODING)
            .map(|v| v.as_bytes()),
    )?;
    Ok(Some(Readable {
        decoder: coding.map(Decoder::new).transpose()?,
        encoding,
    }))
}

/// The charset the `Content-Type` names, as the browser reads it (WHATWG
/// labels, any case, quoted or not): `Err` with its name when lol_html
/// cannot read it (UTF-16, ISO-2022-JP, the replacement charset); `None`
/// when it names none the browser knows, which then looks at the page.
pub(super) fn declared_charset(
    resp: &ResponseHeader,
) -> Option<Result<&'static encoding_rs::Encoding, &'static str>> {
    let ct = resp.headers.get(header::CONTENT_TYPE)?.as_bytes();
    let label = ct.split(|&b| b == b';').skip(1).find_map(|param| {
        let param = param.trim_ascii();
        let (name, value) = param.split_at(param.iter().position(|&b| b == b'=')?);
        name.trim_ascii().eq_ignore_ascii_case(b"charset").then(|| {
            let value = value[1..].trim_ascii();
            value
                .strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(value)
        })
    })?;
    let encoding = encoding_rs::Encoding::for_label(label)?;
    Some(if encoding.is_ascii_compatible() {
        Ok(encoding)
    } else {
        Err(encoding.name())
    })
}

/// Sends `values` as every `name` header instead of what is there, when
/// there is something to send.
fn replace_all(
    resp: &mut ResponseHeader,
    name: &header::HeaderName,
    values: &Option<Vec<String>>,
) -> Result<(), String> {
    let Some(values) = values else {
        return Ok(());
    };
    resp.remove_header(name);
    for v in values {
        resp.append_header(name.clone(), v.as_str())
            .map_err(|e| format!("cannot write the {name} header: {e}"))?;
    }
    Ok(())
}

/// The sides a sampled production page reports from.
fn sampled_sides(
    sel: &super::ctx::Selected,
) -> Option<&[(stamp_model::ticket::TicketKey, stamp_model::views::Side)]> {
    sel.rollout
        .as_ref()
        .filter(|r| r.sampled && !r.sides.is_empty())
        .map(|r| r.sides.as_slice())
}

/// While tickets roll out, the same production URL is a different page for
/// each side: no shared cache may keep it, and a browser must ask again. A
/// page on a ticket's side is kept by no service worker either (`Vary: *`,
/// which the Cache API refuses): kept, an app's worker (Workbox's
/// stale-while-revalidate for pages, a cache-first offline page) would show
/// it again after the ticket was reverted.
pub(super) fn rollout_headers(resp: &mut ResponseHeader, sel: &super::ctx::Selected) {
    if sel.rollout.is_none() || !is_html(resp) || sel.dev_or_qa() {
        return;
    }
    let keep_no_store = resp
        .headers
        .get(header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("no-store"));
    let value = if keep_no_store {
        "private, no-store"
    } else {
        "private, no-cache"
    };
    let _ = resp.insert_header(header::CACHE_CONTROL, value);
    let on_a_tickets_side = sel.rollout.as_ref().is_some_and(|r| {
        r.sides
            .iter()
            .any(|(_, side)| *side == stamp_model::views::Side::Ticket)
    });
    if on_a_tickets_side {
        super::vary_on_everything(resp);
    } else {
        add_vary_cookie(resp);
    }
}

/// The page's `Link` preloads of files the variant replaces, pointed at
/// the variant's (see [`crate::linkheader`]). A value that is not plain
/// text goes out as it came.
fn preloads_of_the_variant(
    resp: &mut ResponseHeader,
    page: &url::Url,
    effective: &crate::effective::Effective,
) -> Result<(), String> {
    let values: Vec<http::HeaderValue> =
        resp.headers.get_all(header::LINK).iter().cloned().collect();
    let rewritten: Vec<Option<String>> = values
        .iter()
        .map(|v| {
            let text = v.to_str().ok()?;
            crate::linkheader::rewrite(text, page, effective)
        })
        .collect();
    if rewritten.iter().all(Option::is_none) {
        return Ok(());
    }
    // Every value made first: a value that cannot be written leaves the
    // header as it came.
    let mut all = Vec::with_capacity(values.len());
    for (value, new) in values.into_iter().zip(rewritten) {
        all.push(match new {
            Some(text) => http::HeaderValue::from_str(&text)
                .map_err(|e| format!("cannot write the Link header: {e}"))?,
            None => value,
        });
    }
    resp.remove_header(&header::LINK);
    for value in all {
        resp.append_header(header::LINK, value)
            .map_err(|e| format!("cannot write the Link header: {e}"))?;
    }
    Ok(())
}

/// A variant's headers: its length and validators are not production's, and
/// no cache may keep it for anyone else.
fn variant_headers(session: &Session, resp: &mut ResponseHeader, variant: &Variant, notice: bool) {
    for h in [
        header::CONTENT_LENGTH,
        header::CONTENT_ENCODING,
        header::ETAG,
        header::LAST_MODIFIED,
        header::ACCEPT_RANGES,
    ] {
        resp.remove_header(&h);
    }
    if session.req_header().version != http::Version::HTTP_2 {
        let _ = resp.insert_header(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        resp.set_version(http::Version::HTTP_11);
    }
    match variant {
        // One visitor's page: a ticket's, or production with this
        // visitor's stale link's notice. No cache keeps it, nor a CDN that
        // reads its own header before `Cache-Control`.
        Variant::Ticket { .. } => super::never_stored(resp),
        Variant::Overlay if notice => super::never_stored(resp),
        // Production with released tickets: caches must come back, so a
        // revert is seen at once; a CDN's own headers would keep it longer.
        Variant::Overlay => {
            let _ = resp.insert_header(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            resp.remove_header(&names::CDN_CACHE_CONTROL);
            resp.remove_header(&names::SURROGATE_CONTROL);
        }
    }
    match variant {
        // No cache keeps a ticket's page under production's URL: `Vary: *`
        // is never a match for the HTTP cache, and the Cache API (every
        // service worker's caches) refuses to store it.
        Variant::Ticket { .. } => super::vary_on_everything(resp),
        Variant::Overlay => add_vary_cookie(resp),
    }
}

/// The `Accept-Encoding` to ask the origin for this request's page: every
/// line of the client's, as one list, through [`crate::decode::accept_encoding`].
fn codings_to_ask(req: &RequestHeader) -> String {
    let mut lines = req.headers.get_all(header::ACCEPT_ENCODING).iter();
    let Some(first) = lines.next() else {
        return crate::decode::accept_encoding(None);
    };
    let mut all = first.as_bytes().to_vec();
    for line in lines {
        all.extend_from_slice(b", ");
        all.extend_from_slice(line.as_bytes());
    }
    crate::decode::accept_encoding(Some(&all))
}

/// This response goes out as the proxy has it: the compression module,
/// turned on for the route at the request (it must see the request's
/// `Accept-Encoding`), leaves it alone.
fn uncompressed(session: &mut Session) {
    if let Some(c) = session
        .downstream_modules_ctx
        .get_mut::<ResponseCompression>()
    {
        if c.is_header_phase() {
            c.adjust_level(0);
        }
    }
}

/// Writes a stored page for the origin's 304. The 304 ends the response at
/// its header, so Pingora would send no body after it: the page is written
/// here, through the downstream modules (compression), and the header
/// Pingora writes next is dropped as already sent.
async fn write_hit(session: &mut Session, resp: &ResponseHeader, body: Bytes) -> Result<()> {
    session
        .write_response_header(Box::new(resp.clone()), false)
        .await?;
    session.write_response_body(Some(body), true).await?;
    // The compression module has finished this response; Pingora's own
    // (dropped) header must not reach it again, which would start a second
    // body phase (a panic in pingora-core).
    if let Some(c) = session
        .downstream_modules_ctx
        .get_mut::<ResponseCompression>()
    {
        **c = ResponseCompressionCtx::new(0, false, false);
    }
    Ok(())
}
