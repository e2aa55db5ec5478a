//! `/__stamp/map`: an external import map, fetched where production serves
//! it (the origin, or an allowed other origin), merged with the variant's
//! overrides. Nothing of the upstream's answer but its JSON type, its
//! lifetime and (inside our own tag) its validator is relayed, and a map
//! that cannot be merged is a 502, never production's bytes unchecked.
//!
//! A released ticket must cost production nothing: when the page named the
//! variant this browser gets, the merge is a function of the URL and the
//! origin's map, so the browser keeps it as long as the origin lets it keep
//! the map itself (`private`), and revalidates it with our tag, which
//! carries the origin's validator: the origin is asked conditionally and
//! its 304 becomes ours, with nothing fetched or merged.

use super::Settings;
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use http::header;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::Session;
use pingora::upstreams::peer::HttpPeer;

use super::ctx::{Ctx, Route};
use super::{clear_headers, page_url, whole_and_fresh, StampProxy, BAD_MAP};
use crate::extmap::{self, MapFetch};
use crate::internal;
use crate::metrics;
use crate::select::names;

const TEXT: &str = "text/plain; charset=utf-8";

impl StampProxy {
    /// Reads a map request; `Ok(false)` lets it be proxied to where the map
    /// lives, `Ok(true)` when it was answered here.
    pub(super) async fn start_map(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let req = session.req_header();
        if req.method != http::Method::GET || session.is_upgrade_req() {
            internal::respond(
                session,
                405,
                TEXT,
                Bytes::from_static(b"ticket-stamp: merged import maps are fetched with GET\n"),
            )
            .await?;
            return Ok(true);
        }
        let page = page_url(session, ctx.settings.cfg.tls);
        let parsed = extmap::parse_query(req.uri.query()).and_then(|q| {
            extmap::target(&q.src, &page, &ctx.settings.asset_origins).map(|t| (q, t))
        });
        let (query, (url, remote)) = match parsed {
            Ok(v) => v,
            Err(reason) => {
                let body = Bytes::from(format!("ticket-stamp: {reason}\n"));
                internal::respond(session, 400, TEXT, body).await?;
                return Ok(true);
            }
        };
        // What this browser may see, decided as for its pages: its own
        // selection (cookie, query or Referer, through the preview gate and
        // a revoked link's generation), else production as it gets it (the
        // overlay, its side of each rollout). The `v=` the page named is not
        // a key to anything: a variant is merged only for whom it is theirs.
        let effective = ctx.sel.plan.as_ref().map(|p| p.effective.clone());
        let Some(effective) = effective else {
            // Nothing to merge any more: production's own map.
            let mut resp = ResponseHeader::build(302, Some(4))?;
            // Relative on this origin: never a host the request named.
            let location = match (remote, url.query()) {
                (true, _) => url.to_string(),
                (false, Some(q)) => format!("{}?{q}", url.path()),
                (false, None) => url.path().to_string(),
            };
            resp.insert_header(header::LOCATION, location)?;
            resp.insert_header(header::CACHE_CONTROL, "no-store")?;
            resp.insert_header(header::CONTENT_LENGTH, "0")?;
            resp.insert_header(
                names::X_TICKET_STAMP.clone(),
                "production; reason=\"the variant of this map is gone\"",
            )?;
            session.write_response_header(Box::new(resp), true).await?;
            return Ok(true);
        };
        let keepable = effective.id.to_hex() == query.variant;
        let revalidate = keepable
            .then(|| {
                req.headers
                    .get_all(header::IF_NONE_MATCH)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(','))
                    .find_map(|tag| {
                        extmap::Validator::from_tag(
                            tag,
                            &query.variant,
                            query.form,
                            query.integrity.as_deref(),
                        )
                    })
            })
            .flatten();
        ctx.route = Route::Map(Some(Mutex::new(MapFetch {
            url,
            remote,
            effective,
            integrity: query.integrity,
            form: query.form,
            buf: Vec::new(),
            failure: None,
            keepable,
            revalidate,
            not_modified: false,
        })));
        Ok(false)
    }

    /// Where the map lives: the origin, or another origin's peer.
    pub(super) async fn map_peer(
        &self,
        map: &Mutex<MapFetch>,
        s: &Settings,
    ) -> Result<Box<HttpPeer>> {
        let remote = {
            let m = map.lock().unwrap_or_else(PoisonError::into_inner);
            m.remote.then(|| m.url.clone())
        };
        match remote {
            Some(url) => self.remote_peer(&url, s).await,
            None => Ok(Box::new(s.peer.clone())),
        }
    }

    /// The upstream request for the map: its path, and for another origin a
    /// plain GET with none of the client's credentials.
    pub(super) fn map_upstream(
        &self,
        map: &Mutex<MapFetch>,
        upstream: &mut RequestHeader,
        s: &Settings,
    ) -> Result<()> {
        let map = map.lock().unwrap_or_else(PoisonError::into_inner);
        let target = match map.url.query() {
            Some(q) => format!("{}?{q}", map.url.path()),
            None => map.url.path().to_string(),
        };
        let uri: http::Uri = target
            .parse()
            .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "map URL", e))?;
        upstream.set_uri(uri);
        if map.remote {
            let host = map.url.host_str().unwrap_or_default().to_string();
            let authority = match map.url.port() {
                Some(p) => format!("{host}:{p}"),
                None => host,
            };
            // Another site gets a plain GET: none of the client's
            // credentials, identity or forwarding headers.
            let names: Vec<http::HeaderName> = upstream
                .headers
                .keys()
                .filter(|n| !matches!(n.as_str(), "accept" | "accept-language" | "user-agent"))
                .cloned()
                .collect();
            for name in names {
                upstream.remove_header(&name);
            }
            upstream.insert_header(header::HOST, authority)?;
        } else if let Some(host) = &s.cfg.origin.host_header {
            upstream.insert_header(header::HOST, host.as_str())?;
        }
        whole_and_fresh(upstream)?;
        // The browser holds our merge of the map this validator names: the
        // origin is asked whether it still serves that map.
        match &map.revalidate {
            Some(extmap::Validator::ETag(tag)) => {
                upstream.insert_header(header::IF_NONE_MATCH, tag.as_str())?;
            }
            Some(extmap::Validator::LastModified(date)) => {
                upstream.insert_header(header::IF_MODIFIED_SINCE, date.as_str())?;
            }
            None => {}
        }
        Ok(())
    }

    /// Checks the upstream's answer is a JSON map to merge, and replaces
    /// its headers with ours.
    pub(super) fn map_response(
        &self,
        session: &Session,
        map: &Mutex<MapFetch>,
        resp: &mut ResponseHeader,
        id: &super::ctx::RequestId,
    ) -> Result<()> {
        let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
        let status = resp.status.as_u16();
        let identity = resp
            .headers
            .get(header::CONTENT_ENCODING)
            .is_none_or(|v| v.as_bytes().eq_ignore_ascii_case(b"identity"));
        let ty = resp
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let media = ty
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let json = media == "application/json"
            || media == "text/json"
            || (media.starts_with("application/") && media.ends_with("+json"));
        let variant = map.effective.id.to_hex();
        let (form, integrity) = (map.form, map.integrity.clone());
        let keep = map
            .keepable
            .then(|| extmap::freshness(&resp.headers))
            .flatten();
        if status == 304 {
            if let Some(validator) = map.revalidate.clone() {
                // Unchanged at the origin: the browser's merge still holds.
                map.not_modified = true;
                clear_headers(resp);
                resp.insert_header(
                    header::ETAG,
                    validator.tag(&variant, form, integrity.as_deref()),
                )?;
                resp.insert_header(
                    header::CACHE_CONTROL,
                    keep.as_deref().unwrap_or("private, no-cache"),
                )?;
                resp.insert_header(names::X_TICKET_STAMP.clone(), "map; not modified")?;
                metrics::count(&metrics::REWRITES, "external-map-unchanged");
                return Ok(());
            }
        }
        let tag = keep
            .as_ref()
            .and(extmap::Validator::of(&resp.headers))
            .map(|v| v.tag(&variant, form, integrity.as_deref()));
        map.failure = if status != 200 {
            Some(format!("{} answered {status} for the import map", map.url))
        } else if !identity {
            Some(format!("{} sent the import map encoded", map.url))
        } else if !json {
            Some(format!(
                "{} is not a JSON import map (Content-Type {ty:?})",
                map.url
            ))
        } else {
            None
        };
        // Nothing of the upstream's answer but its JSON type is relayed:
        // no cookies, no validators, no caching, no sniffing.
        clear_headers(resp);
        match &map.failure {
            None => resp.insert_header(header::CONTENT_TYPE, ty)?,
            Some(reason) => {
                log::warn!(request_id:% = id; "external import map not merged: {reason}");
                resp.set_status(502)?;
                resp.insert_header(header::CONTENT_TYPE, TEXT)?;
            }
        }
        if session.req_header().version != http::Version::HTTP_2 {
            resp.insert_header(header::TRANSFER_ENCODING, "chunked")?;
            resp.set_version(http::Version::HTTP_11);
        }
        match (&map.failure, keep) {
            (None, Some(keep)) => {
                resp.insert_header(header::CACHE_CONTROL, keep)?;
                if let Some(tag) = tag {
                    resp.insert_header(header::ETAG, tag)?;
                }
            }
            _ => resp.insert_header(header::CACHE_CONTROL, "private, no-store")?,
        }
        resp.insert_header("x-content-type-options", "nosniff")?;
        resp.insert_header(header::CONTENT_SECURITY_POLICY, "sandbox")?;
        resp.insert_header(
            names::X_TICKET_STAMP.clone(),
            if map.failure.is_some() {
                "map; failed"
            } else {
                "map; merged"
            },
        )?;
        Ok(())
    }

    /// Buffers the map (bounded) and answers the merge at its end.
    pub(super) fn map_body(
        &self,
        session: &Session,
        map: &Mutex<MapFetch>,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        s: &Settings,
        id: &super::ctx::RequestId,
    ) -> Result<()> {
        let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
        if map.not_modified {
            *body = None;
            return Ok(());
        }
        if let Some(reason) = &map.failure {
            *body = end_of_stream.then(|| Bytes::from(format!("ticket-stamp: {reason}\n")));
            return Ok(());
        }
        let max = s.cfg.rewrite.max_import_map_bytes;
        if let Some(chunk) = body.take() {
            if map.buf.len() + chunk.len() > max {
                // Fail closed: production's bytes are never relayed
                // unchecked (the page's integrity went into our URL).
                let reason = format!("the import map at {} is larger than {max} bytes", map.url);
                log::warn!(request_id:% = id; "{reason}");
                map.failure = Some(reason.clone());
                return Err(Error::explain(ErrorType::Custom(BAD_MAP), reason));
            }
            map.buf.extend_from_slice(&chunk);
        }
        if end_of_stream {
            let page = page_url(session, s.cfg.tls);
            match map.finish(&page, max) {
                Ok(out) => {
                    metrics::count(&metrics::REWRITES, "external-map");
                    *body = Some(Bytes::from(out));
                }
                Err(reason) => {
                    log::warn!(request_id:% = id; "external import map not merged: {reason}");
                    metrics::count(&metrics::REWRITES, "map-invalid");
                    map.failure = Some(reason.clone());
                    return Err(Error::explain(ErrorType::Custom(BAD_MAP), reason));
                }
            }
        }
        Ok(())
    }

    /// A peer for a map on another origin (resolved without blocking).
    async fn remote_peer(&self, url: &url::Url, s: &Settings) -> Result<Box<HttpPeer>> {
        let host = url.host_str().unwrap_or_default().to_string();
        let tls = url.scheme() == "https";
        let port = url
            .port_or_known_default()
            .unwrap_or(if tls { 443 } else { 80 });
        let bare = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let addr = tokio::net::lookup_host((bare.as_str(), port))
            .await
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| {
                Error::explain(
                    ErrorType::ConnectNoRoute,
                    format!("cannot resolve {host} for its import map"),
                )
            })?;
        let mut peer = HttpPeer::new(addr, tls, bare);
        peer.options.connection_timeout = Some(s.cfg.timeouts.connect);
        peer.options.read_timeout = Some(s.cfg.timeouts.read);
        peer.options.write_timeout = Some(s.cfg.timeouts.write);
        Ok(Box::new(peer))
    }
}

/// The other origin a map is fetched from, when it is not the origin.
pub(super) fn remote_origin(ctx: &Ctx) -> Option<String> {
    match &ctx.route {
        Route::Map(Some(m)) => {
            let m = m.lock().unwrap_or_else(PoisonError::into_inner);
            m.remote.then(|| m.url.origin().ascii_serialization())
        }
        _ => None,
    }
}

/// Why a map failed, for the error page.
pub(super) fn failure(ctx: &Ctx) -> Option<String> {
    match &ctx.route {
        Route::Map(Some(m)) => m
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .failure
            .clone(),
        _ => None,
    }
}
