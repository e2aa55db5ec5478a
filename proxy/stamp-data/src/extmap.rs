//! External import maps (`<script type="systemjs-importmap" src=…>`, and the
//! same for es-module-shims and import-map-injector).
//!
//! The rewriter points a stamped page's map `src` at
//! `/__stamp/map?v=<variant>&src=<map>[&integrity=…]`. The proxy answers that
//! URL by fetching the map where production serves it (through the origin,
//! or from an allowed other origin), merging the variant's overrides into
//! it, and serving the result `no-store`. Production's map URL and bytes
//! are never touched, and no variant is ever stored under production's URL.

use std::sync::Arc;

use base64::Engine;
use sha2::{Digest, Sha256, Sha384, Sha512};
use url::Url;

use crate::effective::Effective;
use crate::importmap;

/// One external map request, from its query to its merged body.
#[derive(Debug)]
pub struct MapFetch {
    /// Where production serves the map.
    pub url: Url,
    /// The map is on another origin (fetched there, without the client's
    /// cookies or credentials).
    pub remote: bool,
    pub effective: Arc<Effective>,
    /// The page's `integrity` for production's map.
    pub integrity: Option<String>,
    /// How ticket URLs are written into it (absolute for es-module-shims),
    /// and whether it is the page's first map.
    pub form: importmap::MergeAs,
    /// The body so far; merged at its end.
    pub buf: Vec<u8>,
    /// Why the upstream's answer is no map to merge (its status, encoding
    /// or type): the client gets a 502 with this reason, never its bytes.
    pub failure: Option<String>,
    /// The page named the variant this browser gets (`v=`): the answer is
    /// then a function of its URL and production's map, and may be kept
    /// as production's map is kept.
    pub keepable: bool,
    /// The client's `If-None-Match`, when it names one of our tags for
    /// this variant: the origin's validator inside it.
    pub revalidate: Option<Validator>,
    /// The origin said its map has not changed: no body follows.
    pub not_modified: bool,
}

/// What the origin identified its map by: its strong `ETag`, else its
/// `Last-Modified`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Validator {
    ETag(String),
    LastModified(String),
}

impl Validator {
    /// The origin's validator of an answer, if it gave a usable one (a weak
    /// ETag proves nothing about the bytes we merge).
    pub fn of(headers: &http::HeaderMap) -> Option<Validator> {
        let text = |name: http::header::HeaderName| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.len() <= 256)
                .map(str::to_string)
        };
        match text(http::header::ETAG) {
            Some(tag) if tag.starts_with('"') && tag.ends_with('"') && tag.len() >= 2 => {
                Some(Validator::ETag(tag))
            }
            _ => text(http::header::LAST_MODIFIED).map(Validator::LastModified),
        }
    }

    /// Our tag for the merge of `variant` (and the map's form and
    /// integrity) into the map this validator names: strong, since the
    /// merge is a function of exactly these.
    pub fn tag(&self, variant: &str, form: importmap::MergeAs, integrity: Option<&str>) -> String {
        use base64::Engine as _;
        use sha2::Digest as _;
        let (kind, value) = match self {
            Validator::ETag(t) => ('e', t.as_str()),
            Validator::LastModified(d) => ('m', d.as_str()),
        };
        let mut h = sha2::Sha256::new();
        h.update(format!("{form:?}\0{}", integrity.unwrap_or("")).as_bytes());
        let salt = hex::encode(&h.finalize()[..6]);
        let v = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value);
        format!("\"tsm.{variant}.{salt}.{kind}{v}\"")
    }

    /// The origin's validator inside one of our tags, when the tag is for
    /// this variant, form and integrity.
    pub fn from_tag(
        tag: &str,
        variant: &str,
        form: importmap::MergeAs,
        integrity: Option<&str>,
    ) -> Option<Validator> {
        use base64::Engine as _;
        let inner = tag.trim().strip_prefix("\"tsm.")?.strip_suffix('"')?;
        let mut parts = inner.splitn(3, '.');
        let (v, _salt, rest) = (parts.next()?, parts.next()?, parts.next()?);
        if v != variant || rest.is_empty() {
            return None;
        }
        let (kind, encoded) = rest.split_at(1);
        let value = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(encoded)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())?;
        let validator = match kind {
            "e" => Validator::ETag(value),
            "m" => Validator::LastModified(value),
            _ => return None,
        };
        // Checked whole: the salt must be ours for this form and integrity.
        (validator.tag(variant, form, integrity) == tag.trim()).then_some(validator)
    }
}

/// How long the browser may keep a merged map: as long as the origin lets
/// it keep the map itself (`max-age`, at most a day), and revalidated as
/// the origin asks; `None` when the origin forbids keeping it.
pub fn freshness(headers: &http::HeaderMap) -> Option<String> {
    let cc = headers
        .get_all(http::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|d| d.trim().to_ascii_lowercase())
        .collect::<Vec<_>>();
    if cc.iter().any(|d| d == "no-store") {
        return None;
    }
    let max_age = cc.iter().find_map(|d| {
        d.strip_prefix("max-age=")?
            .trim_matches('"')
            .parse::<u64>()
            .ok()
    });
    let must = cc.iter().any(|d| d == "no-cache" || d == "must-revalidate");
    Some(match max_age {
        Some(n) if !cc.iter().any(|d| d == "no-cache") => {
            let n = n.min(86_400);
            if must {
                format!("private, max-age={n}, must-revalidate")
            } else {
                format!("private, max-age={n}")
            }
        }
        // No lifetime given: the browser asks every time, with our tag.
        _ => "private, no-cache".to_string(),
    })
}

/// The query of a map URL, read and checked.
#[derive(Debug, PartialEq, Eq)]
pub struct MapQuery {
    pub variant: String,
    pub src: String,
    pub integrity: Option<String>,
    pub form: importmap::MergeAs,
}

/// Why a map URL was refused (400).
pub fn parse_query(query: Option<&str>) -> Result<MapQuery, String> {
    let mut variant = None;
    let mut src = None;
    let mut integrity = None;
    let mut urls = None;
    let mut add = None;
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let slot = match &*k {
            "v" => &mut variant,
            "src" => &mut src,
            "integrity" => &mut integrity,
            "urls" => &mut urls,
            "add" => &mut add,
            _ => continue,
        };
        if slot.is_some() {
            return Err(format!("`{k}` is given twice"));
        }
        if v.len() > stamp_model::wire::MAX_PATH * 2 || v.chars().any(char::is_control) {
            return Err(format!("`{k}` is too long or has control characters"));
        }
        *slot = Some(v.into_owned());
    }
    let urls = match urls.as_deref() {
        None | Some("paths") => importmap::Urls::Paths,
        Some("absolute") => importmap::Urls::Absolute,
        Some(other) => return Err(format!("`urls` is `{other}`; valid: paths, absolute")),
    };
    // `add=0`: another map of the page carries the proxy's own keys.
    let first = match add.as_deref() {
        None | Some("1") => true,
        Some("0") => false,
        Some(other) => return Err(format!("`add` is `{other}`; valid: 0, 1")),
    };
    Ok(MapQuery {
        variant: variant.ok_or("`v` (the variant) is missing")?,
        src: src.ok_or("`src` (the map's URL) is missing")?,
        integrity,
        form: importmap::MergeAs { urls, first },
    })
}

/// Where to fetch `src` from: a path on the page's origin, or a URL on one
/// of `allowed` other origins. Anything else is refused, so the proxy can
/// never be made to fetch an address of an attacker's choosing.
pub fn target(src: &str, page: &Url, allowed: &[String]) -> Result<(Url, bool), String> {
    let reserved = |u: &Url| u.path() == "/__stamp" || u.path().starts_with("/__stamp/");
    if src.starts_with('/') && !src.starts_with("//") && !src.contains('\\') {
        let url = page
            .join(src)
            .map_err(|e| format!("`src` is not a valid path: {e}"))?;
        if reserved(&url) {
            return Err("`src` may not name /__stamp/: nothing there reaches the origin".into());
        }
        return Ok((url, false));
    }
    let url = Url::parse(src).map_err(|e| format!("`src` is not a valid URL: {e}"))?;
    let origin = url.origin().ascii_serialization();
    if !matches!(url.scheme(), "http" | "https")
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err("`src` must be an http(s) URL without credentials".into());
    }
    if url.origin() == page.origin() {
        if reserved(&url) {
            return Err("`src` may not name /__stamp/: nothing there reaches the origin".into());
        }
        return Ok((url, false));
    }
    if !allowed.contains(&origin) {
        return Err(format!(
            "{origin} is not one of the proxy's asset_origins, so its maps are not fetched"
        ));
    }
    Ok((url, true))
}

/// Whether `body` satisfies an `integrity` attribute: any one of its
/// sha256/384/512 digests matches (unknown algorithms are ignored, as
/// browsers do; no known digest at all means no check).
pub fn integrity_ok(integrity: &str, body: &[u8]) -> bool {
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    let mut known = false;
    for token in integrity.split_ascii_whitespace() {
        let token = token.split('?').next().unwrap_or(token);
        let Some((alg, digest)) = token.split_once('-') else {
            continue;
        };
        let ours = match alg {
            "sha256" => b64(&Sha256::digest(body)),
            "sha384" => b64(&Sha384::digest(body)),
            "sha512" => b64(&Sha512::digest(body)),
            _ => continue,
        };
        known = true;
        if ours == digest {
            return true;
        }
    }
    !known
}

impl MapFetch {
    /// The merged map. `Err` when production's map fails its integrity or
    /// is no import map: the response is then aborted (fail closed: the
    /// upstream's bytes are never relayed as they are, and a browser would
    /// have refused them too).
    pub fn finish(&mut self, page: &Url, max: usize) -> Result<Vec<u8>, String> {
        let body = std::mem::take(&mut self.buf);
        if let Some(i) = &self.integrity {
            if !integrity_ok(i, &body) {
                return Err(format!(
                    "the import map at {} does not match the page's integrity",
                    self.url
                ));
            }
        }
        let text = std::str::from_utf8(&body)
            .map_err(|_| format!("the import map at {} is not UTF-8", self.url))?;
        importmap::merge_external(
            text,
            &self.effective.overrides,
            &self.url,
            page,
            max,
            self.form,
        )
        .map(String::into_bytes)
        .map_err(|e| format!("the import map at {}: {e}", self.url))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn our_tag_carries_the_origin_validator_for_one_variant_only() {
        let form = importmap::MergeAs::from(importmap::Urls::Paths);
        for v in [
            Validator::ETag("\"abc.def\"".into()),
            Validator::LastModified("Sat, 05 Dec 2026 10:00:00 GMT".into()),
        ] {
            let tag = v.tag("v1", form, Some("sha384-x"));
            assert!(tag.starts_with("\"tsm.v1.") && tag.ends_with('"'), "{tag}");
            assert_eq!(
                Validator::from_tag(&tag, "v1", form, Some("sha384-x")),
                Some(v.clone())
            );
            // Another variant, integrity or form: not ours to answer 304 for.
            assert_eq!(
                Validator::from_tag(&tag, "v2", form, Some("sha384-x")),
                None
            );
            assert_eq!(Validator::from_tag(&tag, "v1", form, None), None);
            let other = importmap::MergeAs {
                first: false,
                ..form
            };
            assert_eq!(
                Validator::from_tag(&tag, "v1", other, Some("sha384-x")),
                None
            );
        }
        for forged in [
            "",
            "*",
            "\"abc\"",
            "W/\"tsm.v1.x.eYQ\"",
            "\"tsm.v1.000000000000.eIiI\"",
            "\"tsm.v1..\"",
            "\"tsm.v1.a.z!!\"",
        ] {
            assert_eq!(
                Validator::from_tag(forged, "v1", form, None),
                None,
                "{forged}"
            );
        }
    }

    #[test]
    fn the_origin_validator_and_lifetime_are_read_strictly() {
        assert_eq!(
            Validator::of(&headers(&[("etag", "\"x\"")])),
            Some(Validator::ETag("\"x\"".into()))
        );
        // A weak tag proves nothing about the bytes: Last-Modified, or none.
        assert_eq!(Validator::of(&headers(&[("etag", "W/\"x\"")])), None);
        assert_eq!(
            Validator::of(&headers(&[("etag", "W/\"x\""), ("last-modified", "d")])),
            Some(Validator::LastModified("d".into()))
        );
        let f = |cc: &str| freshness(&headers(&[("cache-control", cc)]));
        assert_eq!(
            f("public, max-age=60").as_deref(),
            Some("private, max-age=60")
        );
        assert_eq!(
            f("max-age=999999999").as_deref(),
            Some("private, max-age=86400")
        );
        assert_eq!(
            f("max-age=5, must-revalidate").as_deref(),
            Some("private, max-age=5, must-revalidate")
        );
        assert_eq!(
            f("no-cache, max-age=60").as_deref(),
            Some("private, no-cache")
        );
        assert_eq!(f("private, no-store").as_deref(), None);
        assert_eq!(f("max-age=banana").as_deref(), Some("private, no-cache"));
        assert_eq!(
            freshness(&http::HeaderMap::new()).as_deref(),
            Some("private, no-cache")
        );
    }

    fn page() -> Url {
        Url::parse("https://shop.example/app/").unwrap()
    }

    #[test]
    fn only_the_pages_origin_and_allowed_origins_are_fetched() {
        let allowed = vec!["https://cdn.example".to_string()];
        let (u, remote) = target("/importmap.json?v=3", &page(), &allowed).unwrap();
        assert_eq!(u.as_str(), "https://shop.example/importmap.json?v=3");
        assert!(!remote);
        let (u, remote) = target("https://cdn.example/m.json", &page(), &allowed).unwrap();
        assert_eq!(u.as_str(), "https://cdn.example/m.json");
        assert!(remote);
        for bad in [
            "//evil.example/m.json",
            "/\\evil.example/m.json",
            "https://evil.example/m.json",
            "http://169.254.169.254/latest/meta-data",
            "https://user:pw@cdn.example/m.json",
            "file:///etc/passwd",
            "m.json",
        ] {
            assert!(target(bad, &page(), &allowed).is_err(), "{bad}");
        }
    }

    #[test]
    fn queries_are_checked() {
        let q = parse_query(Some("v=ab&src=%2Fm.json&integrity=sha256-x")).unwrap();
        assert_eq!(q.src, "/m.json");
        assert_eq!(q.integrity.as_deref(), Some("sha256-x"));
        assert!(parse_query(Some("src=/m.json")).is_err());
        assert!(parse_query(Some("v=a")).is_err());
        assert!(parse_query(Some("v=a&v=b&src=/m")).is_err());
        assert!(parse_query(Some("v=a&src=/m")).unwrap().form.first);
        assert!(!parse_query(Some("v=a&src=/m&add=0")).unwrap().form.first);
        assert!(parse_query(Some("v=a&src=/m&add=no")).is_err());
        assert!(parse_query(Some("v=a&src=/m&add=0&add=0")).is_err());
        assert!(parse_query(Some("v=a&src=%0a")).is_err());
        assert!(parse_query(None).is_err());
    }

    #[test]
    fn integrity_is_checked_like_a_browser_does() {
        let body = b"{\"imports\":{}}";
        let good = format!(
            "sha384-{}",
            base64::engine::general_purpose::STANDARD.encode(Sha384::digest(body))
        );
        assert!(integrity_ok(&good, body));
        assert!(integrity_ok(&format!("sha256-nope {good}"), body));
        assert!(!integrity_ok("sha256-nope", body));
        assert!(integrity_ok("md5-whatever", body));
    }
}
