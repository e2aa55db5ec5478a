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

use crate::importmap;
use crate::snapshot::Effective;

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
