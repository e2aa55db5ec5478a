//! Module uploads and deletes, and which bodies the store lacks; module
//! paths from URLs, normalised and refused when they escape.

use super::*;

impl Api {
    pub(super) async fn upload(
        &self,
        principal: &Principal,
        key: &TicketKey,
        raw_path: &str,
        req: &Request<Bytes>,
    ) -> ApiResult {
        require(principal, Action::Upload)?;
        let path = normalize_module_path(raw_path, &self.cfg.api.extensions)?;
        let headers = req.headers();
        let path = location(headers, path, &self.cfg.api.asset_origins)?;
        let specifier = specifier(headers, &path)?;
        let known = match headers.get(h::HASH) {
            Some(v) => Some(
                v.to_str()
                    .ok()
                    .and_then(Hash::parse)
                    .ok_or_else(|| WebError::bad(h::HASH, "must be a sha256 hex digest"))?,
            ),
            None => None,
        };
        let mut actor = actor_from(principal, headers);
        actor.source = match headers.get(h::SOURCE) {
            None => None,
            Some(v) => {
                let source = v
                    .to_str()
                    .ok()
                    .filter(|s| stamp_model::wire::is_repo_path(s))
                    .ok_or_else(|| {
                        WebError::bad(
                            h::SOURCE,
                            "must be a file's path from the repository's root (src/a.js): \
                             relative, '/'-separated, no '.' or '..' parts",
                        )
                    })?;
                if actor.commit.is_none() {
                    return Err(WebError::bad(
                        h::SOURCE,
                        "names a file of a commit: send x-stamp-commit with it",
                    ));
                }
                Some(source.to_string())
            }
        };
        let body = req.body().clone();
        if body.len() as u64 > self.cfg.api.max_module_bytes {
            return Err(WebError::new(
                413,
                ErrorCode::TooLarge,
                format!(
                    "the module is larger than {} bytes",
                    self.cfg.api.max_module_bytes
                ),
            ));
        }
        let body = match known {
            Some(hash) if body.is_empty() => Body::Known(hash),
            Some(hash) => {
                if Hash::of(&body) != hash {
                    return Err(WebError::bad(h::HASH, "does not match the body's sha256"));
                }
                Body::Bytes(body)
            }
            None => Body::Bytes(body),
        };
        let existed = self.store.get_ticket(key).await?.is_some();
        let change = self
            .desk
            .upload_limited(
                key,
                &specifier,
                &path,
                body,
                self.cfg.api.max_modules_per_ticket,
                &actor,
            )
            .await?;
        let record = change.ticket.clone();
        let set = workflow::overrides(&self.store, &record, Stage::Dev)
            .await?
            .unwrap_or_default();
        let answer = UploadResponse {
            ticket: key.clone(),
            stage: record.stage,
            version: record.version,
            module: set.get(&specifier).map(|m| ModuleDto::new(&specifier, m)),
            modules: set.len(),
        };
        Ok((if existed { 200 } else { 201 }, to_value(&answer)))
    }

    pub(super) async fn delete(
        &self,
        principal: &Principal,
        key: &TicketKey,
        raw_path: &str,
        req: &Request<Bytes>,
    ) -> ApiResult {
        require(principal, Action::Delete)?;
        let path = normalize_module_path(raw_path, &self.cfg.api.extensions)?;
        let path = location(req.headers(), path, &self.cfg.api.asset_origins)?;
        let specifier = specifier(req.headers(), &path)?;
        let actor = actor_from(principal, req.headers());
        let change = self.desk.delete(key, &specifier, &actor).await?;
        let answer = DeleteResponse {
            ticket: key.clone(),
            stage: change.ticket.stage,
            version: change.ticket.version,
            deleted: specifier,
        };
        Ok((200, to_value(&answer)))
    }

    pub(super) async fn missing(&self, body: &[u8]) -> ApiResult {
        let req: MissingRequest = parse_json(body)?;
        if req.hashes.len() > wire::MAX_MISSING {
            return Err(WebError::bad(
                "hashes",
                format!("at most {} per request", wire::MAX_MISSING),
            ));
        }
        let mut hashes = Vec::with_capacity(req.hashes.len());
        for (i, h) in req.hashes.iter().enumerate() {
            hashes.push(Hash::parse(h).ok_or_else(|| {
                WebError::bad(&format!("hashes[{i}]"), "not a sha256 hex digest")
            })?);
        }
        let missing = self.store.missing_modules(&hashes).await?;
        Ok((200, to_value(&MissingResponse { missing })))
    }
}

/// Where production serves the module: `path` on the app's origin, or on
/// the other origin named by `x-stamp-origin`, which must be one of the
/// configured `asset_origins` (a ticket must not pose as any site it likes).
pub(super) fn location(
    headers: &http::HeaderMap,
    path: String,
    allowed: &[String],
) -> Result<String, WebError> {
    let Some(v) = headers.get(h::ORIGIN) else {
        return Ok(path);
    };
    let text = v
        .to_str()
        .map_err(|_| WebError::bad(h::ORIGIN, "must be visible ASCII"))?;
    let origin =
        stamp_model::assets::normalize_origin(text).map_err(|e| WebError::bad(h::ORIGIN, e))?;
    if !allowed.contains(&origin) {
        let mut e = WebError::new(
            403,
            ErrorCode::Forbidden,
            format!(
                "{origin} is not one of this proxy's asset_origins ({}); add it to the proxy's configuration to override modules there",
                if allowed.is_empty() {
                    "none configured".to_string()
                } else {
                    allowed.join(", ")
                }
            ),
        );
        e.body.field = Some(h::ORIGIN.to_string());
        return Err(e);
    }
    Ok(format!("{origin}{path}"))
}

/// The upload's specifier: the `x-stamp-specifier` header, or the path.
pub(super) fn specifier(headers: &http::HeaderMap, path: &str) -> Result<String, WebError> {
    match headers.get(h::SPECIFIER) {
        Some(v) => {
            let s = v
                .to_str()
                .map_err(|_| WebError::bad(h::SPECIFIER, "must be visible ASCII"))?;
            wire::validate_specifier(s, path)
                .map_err(|e| WebError::bad(h::SPECIFIER, e.to_string()))
        }
        None => Ok(path.to_string()),
    }
}

/// Normalises a module path from the URL: percent-decoded, absolute, no
/// `.`/`..`/empty segments, no backslash, NUL or control characters, bounded,
/// and with an allowed extension.
pub fn normalize_module_path(raw: &str, extensions: &[String]) -> Result<String, WebError> {
    let bad = |m: &str| WebError::bad("path", m.to_string());
    if raw.is_empty() {
        return Err(bad("the module path is empty"));
    }
    let decoded = percent_decode(raw)
        .ok_or_else(|| bad("the module path is not valid percent-encoded UTF-8"))?;
    if decoded.len() > MAX_PATH {
        return Err(bad("the module path is too long"));
    }
    if decoded.starts_with('/') {
        return Err(bad(
            "the module path must be relative to the site root (no leading `/` after modules/)",
        ));
    }
    if decoded.chars().any(|c| c == '\\' || c.is_control()) {
        return Err(bad(
            "the module path has a backslash or a control character",
        ));
    }
    if let Some(c) = decoded.chars().find(|c| wire::is_deceptive(*c)) {
        return Err(bad(&format!(
            "the module path has U+{:04X}, an invisible or text-direction character that would make it read as another path",
            u32::from(c)
        )));
    }
    if decoded.contains('%') {
        // `%252e%252e` decodes to `%2e%2e`: whoever decodes it once more
        // (a CDN, a static server) would see `..`.
        return Err(bad(
            "the module path has a `%` after decoding (encoded twice?)",
        ));
    }
    if decoded.contains('?') || decoded.contains('#') {
        return Err(bad("the module path has a query or fragment"));
    }
    if wire::is_reserved(&format!("/{decoded}")) {
        return Err(bad(
            "the module path is under /__stamp/, which the proxy answers itself",
        ));
    }
    for seg in decoded.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return Err(bad("the module path has an empty, `.` or `..` segment"));
        }
    }
    let ext = decoded
        .rsplit('/')
        .next()
        .and_then(|f| f.rsplit_once('.'))
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    if !extensions.contains(&ext) {
        let mut e = WebError::new(
            415,
            ErrorCode::UnsupportedType,
            format!(
                "`.{ext}` modules are not accepted (allowed: {})",
                extensions.join(", ")
            ),
        );
        e.body.field = Some("path".to_string());
        return Err(e);
    }
    Ok(format!("/{decoded}"))
}

pub(super) fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let v = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            out.push(v);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}
