//! Where production serves a module, and how a ticket's version of it is
//! found and served.
//!
//! - A module's production *location* is a path on the app's own origin
//!   (`/src/lib/greet.js`) or an absolute URL on another origin
//!   (`https://cdn.example/lib/greet.js`).
//! - A ticket's version of a module on another origin is served by the proxy
//!   under a *mirror path* that keeps that origin's directory structure
//!   (`/__stamp/o/https/cdn.example/lib/greet.js`), so the module's relative
//!   imports and `new URL(…, import.meta.url)` fetches land under the same
//!   mirror, where the proxy sends them on to the other origin.
//! - An *entry pattern* (`/assets/index-[hash:8].js`) names a bundler's entry
//!   chunk or stylesheet by what stays the same from build to build, so a
//!   ticket's build can replace production's whatever the two hashes are.

/// Ticket versions of modules on other origins are served under this prefix.
pub const MIRROR_PREFIX: &str = "/__stamp/o/";
/// External import maps of stamped pages are served merged from this path.
pub const MAP_PATH: &str = "/__stamp/map";

/// Whether a location is an absolute `http(s)` URL (a module on another
/// origin) rather than a path on the app's origin.
pub fn is_remote(location: &str) -> bool {
    location.starts_with("https://") || location.starts_with("http://")
}

/// `https://cdn.example:8443` of `https://cdn.example:8443/lib/x.js`.
pub fn origin_of(location: &str) -> Option<&str> {
    let (scheme, rest) = location.split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let end = rest.find('/').unwrap_or(rest.len());
    (end > 0).then(|| &location[..scheme.len() + 3 + end])
}

/// Normalises an origin as a user writes it (`HTTPS://CDN.example:443/`)
/// to its serialised form (`https://cdn.example`), the way the URL parser
/// (and so every comparison with a parsed URL's origin) spells it.
pub fn normalize_origin(input: &str) -> Result<String, String> {
    let text = input.trim();
    let url = url::Url::parse(text)
        .map_err(|e| format!("`{input}` is not an origin like https://cdn.example: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("`{input}`: only http:// and https:// origins"));
    }
    let bare = text.trim_end_matches('/');
    let after_scheme = bare.split_once("://").map_or("", |(_, r)| r);
    if !url.username().is_empty()
        || url.password().is_some()
        || url.query().is_some()
        || url.fragment().is_some()
        || url.path() != "/"
        || after_scheme.contains(['/', '?', '#'])
        || url
            .host_str()
            .is_none_or(|h| h.is_empty() || h.ends_with('.'))
        || url.port() == Some(0)
        || !after_scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
    {
        return Err(format!(
            "`{input}` must be scheme://host[:port] (ASCII, punycode for other names) with no path, user or query"
        ));
    }
    Ok(url.origin().ascii_serialization())
}

/// The proxy path a location's ticket version is served at: the path
/// itself on the app's origin, the mirror path for another origin.
pub fn serve_path(location: &str) -> String {
    match location.split_once("://") {
        Some((scheme, rest)) if is_remote(location) => format!("{MIRROR_PREFIX}{scheme}/{rest}"),
        _ => location.to_string(),
    }
}

/// The location a mirror path stands for
/// (`/__stamp/o/https/cdn.example/lib/x.js` → `https://cdn.example/lib/x.js`).
pub fn unmirror(path: &str) -> Option<String> {
    let rest = path.strip_prefix(MIRROR_PREFIX)?;
    let (scheme, rest) = rest.split_once('/')?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let (host, tail) = rest.split_once('/').unwrap_or((rest, ""));
    if host.is_empty() || host.contains(['@', '\\', '?', '#']) {
        return None;
    }
    Some(format!("{scheme}://{host}/{tail}"))
}

/// Characters a bundler's content hash is made of (hex, base36, base64url).
fn is_hash_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// A content hash, not a word: hash characters with a digit or a capital
/// among them (`BuR3Dq2X`, `3f2a1b9c`; never `polyfill` or `vendor-1`…
/// unless it is made of hash characters with a digit, which the length
/// then has to match too).
fn looks_like_hash(token: &str) -> bool {
    token.chars().all(is_hash_char)
        && token
            .chars()
            .any(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
}

/// Whether a hash-shaped token is a bundler's rather than a word someone
/// wrote (`ArrowLeft`, `2-overview`, `LineChart`): a digit, a letter, and
/// no run of five lower-case letters. Some bundler hashes fail it (one in
/// four of Rollup's eight characters has no digit): see
/// [`versions_of_one_file`] for how two builds of one file are paired.
pub fn looks_generated(token: &str) -> bool {
    token.len() >= 8
        && token.chars().all(is_hash_char)
        && token.bytes().any(|b| b.is_ascii_digit())
        && token.bytes().any(|b| b.is_ascii_alphabetic())
        && longest_lower_case_run(token) < 5
}

/// The most lower-case letters in a row in `token`: words have runs.
fn longest_lower_case_run(token: &str) -> usize {
    token
        .split(|c: char| !c.is_ascii_lowercase())
        .map(str::len)
        .max()
        .unwrap_or(0)
}

/// A bundler's hash with no digit in it (one Rollup hash in four), told
/// from a name someone wrote (`ArrowDown`, `AreaChart`) by what words
/// rarely have: at least three capitals and no run of four lower-case
/// letters (`BuRqDqXz`, `KQWZJHAB`).
fn looks_generated_without_digit(token: &str) -> bool {
    token.len() >= 8
        && token.chars().all(is_hash_char)
        && !token.bytes().any(|b| b.is_ascii_digit())
        && token.bytes().filter(u8::is_ascii_uppercase).count() >= 3
        && longest_lower_case_run(token) < 4
}

/// Whether a token may be a bundler's hash: [`looks_generated`], or one
/// without a digit (one Rollup hash in four) that has at least three
/// capitals and no run of four lower-case letters.
pub fn may_be_generated(token: &str) -> bool {
    looks_generated(token) || looks_generated_without_digit(token)
}

/// Whether two tokens that fill the same name's hash may be two builds of
/// one file, as the probe judges production's file it sees loaded beside
/// the ticket's (it then says "production's … ran instead"): both may be a
/// bundler's hash and one [`looks_generated`] for sure. Of two random
/// 8-character Rollup hashes, 82 pairs in 100 are told so, and two names
/// someone wrote (`icon-ArrowDown.js`, `icon-ArrowLeft.js`) never are.
/// Looser than the proxy's own pairing (both [`looks_generated`], 54 in
/// 100), which serves the ticket's build in place of production's and so
/// must never pair two different files (`messages.de-CH-1901.js` and
/// `messages.zh-Hant-TW.js` pair here); a warning too many is the safe
/// side. `probe.js` holds the same rule (`pair`), checked against this one.
pub fn versions_of_one_file(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a != b
        && may_be_generated(a)
        && may_be_generated(b)
        && (looks_generated(a) || looks_generated(b))
}

/// A location with one `[hash:N]` placeholder standing for a content hash
/// of exactly N characters: `/assets/index-[hash:8].js`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryPattern {
    prefix: String,
    len: usize,
    suffix: String,
}

impl EntryPattern {
    pub const MIN_HASH: usize = 6;
    pub const MAX_HASH: usize = 64;

    /// Parses a pattern; `None` for anything that is not exactly one
    /// placeholder in the file name of an absolute path or URL.
    pub fn parse(spec: &str) -> Option<EntryPattern> {
        if !spec.starts_with('/') && !is_remote(spec) {
            return None;
        }
        let start = spec.find("[hash:")?;
        let close = start + spec[start..].find(']')?;
        let len: usize = spec[start + 6..close].parse().ok()?;
        let prefix = &spec[..start];
        let suffix = &spec[close + 1..];
        if !(Self::MIN_HASH..=Self::MAX_HASH).contains(&len)
            || suffix.contains(['/', '[', ']', '?', '#'])
            || prefix.contains(['[', ']', '?', '#'])
            || !suffix.starts_with('.')
        {
            return None;
        }
        Some(EntryPattern {
            prefix: prefix.to_string(),
            len,
            suffix: suffix.to_string(),
        })
    }

    /// The pattern of what may be a bundler's file on an app's own origin:
    /// its name around a hash that [`may_be_generated`] (its other builds
    /// are the same pattern with another hash: the proxy serves one in
    /// place of another only when both hashes [`looks_generated`], the probe
    /// names one by [`versions_of_one_file`]).
    pub fn hashed(path: &str) -> Option<EntryPattern> {
        if !path.starts_with('/') {
            return None;
        }
        EntryPattern::hashed_at(path)
    }

    /// [`EntryPattern::hashed`] for a file on the app's origin or another
    /// (`https://cdn.example/_astro/Counter-BuR3Dq2X.js`, uploaded with its
    /// `url_path` there): the probe names production's other builds of it
    /// wherever they load from. (The proxy pairs only its own origin's:
    /// another origin's never reach it.)
    pub fn hashed_at(location: &str) -> Option<EntryPattern> {
        let pattern = (location.starts_with('/') || is_remote(location))
            .then(|| EntryPattern::for_file(location, None))
            .flatten()
            .and_then(|p| EntryPattern::parse(&p))?;
        pattern
            .hash_in(location)
            .is_some_and(may_be_generated)
            .then_some(pattern)
    }

    /// What fills the placeholder in `location`, if it is this pattern.
    pub fn hash_in<'a>(&self, location: &'a str) -> Option<&'a str> {
        self.matches(location)
            .then(|| &location[self.prefix.len()..location.len() - self.suffix.len()])
    }

    /// Its parts: the location before the placeholder, the placeholder's
    /// length, and what follows it.
    pub fn parts(&self) -> (&str, usize, &str) {
        (&self.prefix, self.len, &self.suffix)
    }

    /// The file name's parts: before the placeholder (after the last `/`),
    /// the placeholder's length, and after it (never a `/`).
    pub fn file_name(&self) -> (&str, usize, &str) {
        let before = self.prefix.rsplit('/').next().unwrap_or_default();
        (before, self.len, &self.suffix)
    }

    /// Whether `location` is this pattern with some hash in the placeholder.
    pub fn matches(&self, location: &str) -> bool {
        let Some(middle) = location
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_suffix(self.suffix.as_str()))
        else {
            return false;
        };
        middle.len() == self.len && looks_like_hash(middle)
    }

    /// The pattern of a bundler's hashed file (`/assets/index-BuR3Dq2X.js`
    /// → `/assets/index-[hash:8].js`), or `None` when its name shows no
    /// content hash. `name` is the chunk's name when a manifest gives it
    /// (`index`), which settles where the hash starts.
    pub fn for_file(location: &str, name: Option<&str>) -> Option<String> {
        let slash = location.rfind('/')?;
        let (dir, file) = location.split_at(slash + 1);
        let token_at = |i: usize| -> Option<(usize, usize)> {
            // The hash runs from after the separator at `i` to the next dot.
            let start = i + 1;
            let end = start + file.get(start..)?.find('.')?;
            let token = &file[start..end];
            let plausible =
                token.len() >= 8 && token.len() <= Self::MAX_HASH && looks_like_hash(token);
            plausible.then_some((start, end))
        };
        let separators = file
            .char_indices()
            .filter(|&(_, c)| c == '-' || c == '.')
            .map(|(i, _)| i);
        let found = match name {
            Some(n)
                if file.starts_with(n)
                    && file[n.len()..].starts_with(['-', '.'])
                    && !n.is_empty() =>
            {
                token_at(n.len())
            }
            _ => {
                let all: Vec<(usize, usize)> = separators.filter_map(token_at).collect();
                // Vite and Rollup hash in 8 characters; prefer that length.
                all.iter()
                    .rev()
                    .find(|(s, e)| e - s == 8)
                    .or(all.last())
                    .copied()
            }
        }?;
        let (start, end) = found;
        Some(format!(
            "{dir}{}[hash:{}]{}",
            &file[..start],
            end - start,
            &file[end..]
        ))
    }
}

/// Where production loads a module from another origin that a ticket has
/// on the app's own origin: the classic first try of a CDN module uploaded
/// without `url_path` at the CDN (and without the CDN in `asset_origins`).
/// Its `?dev=` page would load it from the proxy, where its relative
/// imports 404. `map` is an import map (as JSON) read with `base` as its
/// base URL; `location` the ticket's location (a path), `specifier` its
/// specifier. The answer is production's URL: the map's entry for the
/// specifier, or any address with the module's very path, on another
/// origin than `base`'s.
pub fn served_elsewhere(
    map: &serde_json::Value,
    base: &url::Url,
    location: &str,
    specifier: &str,
) -> Option<String> {
    MapAddresses::read(map, base).served_elsewhere(location, specifier)
}

/// An import map's entries with each address resolved once, for asking
/// [`served_elsewhere`] of many modules: a page is stamped with every
/// module of its ticket, and resolving every address again for each one
/// cost a tenth of a stamped page's CPU.
pub struct MapAddresses<'a> {
    /// In the map's order (`imports`, then each scope): the specifier, and
    /// the address as a URL when it is a string on another web origin.
    entries: Vec<(&'a str, Option<url::Url>)>,
}

impl<'a> MapAddresses<'a> {
    pub fn read(map: &'a serde_json::Value, base: &url::Url) -> MapAddresses<'a> {
        let elsewhere = |address: &str| -> Option<url::Url> {
            if !may_leave_origin(address) {
                return None;
            }
            let url = base.join(address).ok()?;
            let web = matches!(url.scheme(), "http" | "https");
            (web && url.origin() != base.origin()).then_some(url)
        };
        let top = map.get("imports").and_then(|i| i.as_object()).into_iter();
        let scoped = map
            .get("scopes")
            .and_then(|s| s.as_object())
            .into_iter()
            .flat_map(|s| s.values().filter_map(|v| v.as_object()));
        let entries = top
            .chain(scoped)
            .flat_map(|m| m.iter())
            .map(|(k, v)| (k.as_str(), v.as_str().and_then(elsewhere)))
            .collect();
        MapAddresses { entries }
    }

    /// See [`served_elsewhere`].
    pub fn served_elsewhere(&self, location: &str, specifier: &str) -> Option<String> {
        if is_remote(location) || !location.starts_with('/') {
            return None;
        }
        let strip = |u: &url::Url| {
            let mut u = u.clone();
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        };
        // The specifier's own entry (its first) says where production loads it.
        if specifier != location {
            if let Some(url) = self
                .entries
                .iter()
                .find(|(k, _)| *k == specifier)
                .and_then(|(_, u)| u.as_ref())
            {
                return Some(strip(url));
            }
        }
        self.entries
            .iter()
            .filter_map(|(_, u)| u.as_ref())
            .find(|u| u.path() == location)
            .map(strip)
    }
}

/// Whether an address, read against a base URL, may name another origin:
/// only one with a scheme (a `:`) or one that starts with two slashes
/// (`//cdn`, `\\cdn`, `/\cdn`) can. The URL parser first drops leading
/// spaces and controls and every tab and newline, so they are skipped here
/// too (`/\t/cdn` is `//cdn`). Every other address is a path, query or
/// fragment on the base's origin, and is not resolved at all: a page's map
/// has hundreds of them.
fn may_leave_origin(address: &str) -> bool {
    if address.contains(':') {
        return true;
    }
    let mut significant = address
        .trim_start_matches(|c: char| c <= ' ')
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'));
    let slash = |c: Option<char>| matches!(c, Some('/' | '\\'));
    slash(significant.next()) && slash(significant.next())
}

/// Whether a specifier is an entry pattern.
pub fn is_entry_pattern(spec: &str) -> bool {
    EntryPattern::parse(spec).is_some()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn generated_hashes_are_told_from_words() {
        for h in [
            "BuR3Dq2X",
            "DZ1a2b3C",
            "3f2a1b9c4d5e6f7a8b9c",
            "C-Ybf3tE",
            "D_Ezsw8s",
        ] {
            assert!(super::looks_generated(h), "{h}");
        }
        for w in [
            "ArrowLeft",
            "LineChart",
            "2-overview",
            "Overview",
            "abcdefgh",
            "12345678",
            "Ab1",
            "v2-checkout",
            "Ab1/cd23",
        ] {
            assert!(!super::looks_generated(w), "{w}");
        }
    }

    /// Two builds of one file pair when both hashes may be a bundler's and
    /// one has a digit; names someone wrote never do.
    #[test]
    fn versions_of_one_file_are_told_from_names_someone_wrote() {
        for (a, b) in [
            ("BuR3Dq2X", "Qq99Ww88"),
            ("BuRqDqXz", "Qq99Ww88"),
            ("Qq99Ww88", "KQWZJHAB"),
            ("C-Ybf3tE", "D_EzswQs"),
        ] {
            assert!(super::versions_of_one_file(a, b), "{a} {b}");
            assert!(super::versions_of_one_file(b, a), "{b} {a}");
        }
        for (a, b) in [
            // Neither has a digit.
            ("BuRqDqXz", "CxYwQpLm"),
            ("ArrowLeft", "ArrowDown"),
            // A word beside a hash: too few capitals, a run of lower case.
            ("AreaChart", "Ab1Cd2Ef3"),
            ("Overview", "Bx12Cd34"),
            ("Fallback", "Bx12Cd34"),
            ("LineChar", "Bx12Cd34"),
            // Another length, the same token.
            ("Bx12Cd34", "Bx12Cd345"),
            ("Bx12Cd34", "Bx12Cd34"),
        ] {
            assert!(!super::versions_of_one_file(a, b), "{a} {b}");
            assert!(!super::versions_of_one_file(b, a), "{b} {a}");
        }
    }

    use super::*;

    #[test]
    fn mirror_paths_round_trip() {
        let url = "https://cdn.example:8443/lib/x.js";
        let path = serve_path(url);
        assert_eq!(path, "/__stamp/o/https/cdn.example:8443/lib/x.js");
        assert_eq!(unmirror(&path).as_deref(), Some(url));
        assert_eq!(serve_path("/src/a.js"), "/src/a.js");
        assert_eq!(
            unmirror("/__stamp/o/http/127.0.0.1:9/").as_deref(),
            Some("http://127.0.0.1:9/")
        );
        for bad in [
            "/__stamp/o/ftp/x/y",
            "/__stamp/o/https//y",
            "/__stamp/o/https/user@evil/y",
            "/__stamp/o/https",
            "/src/a.js",
        ] {
            assert_eq!(unmirror(bad), None, "{bad}");
        }
        assert_eq!(origin_of(url), Some("https://cdn.example:8443"));
        assert_eq!(
            origin_of("https://cdn.example"),
            Some("https://cdn.example")
        );
        assert_eq!(origin_of("/x"), None);
    }

    #[test]
    fn origins_are_normalised_and_checked() {
        assert_eq!(
            normalize_origin("HTTPS://CDN.example:443/").unwrap(),
            "https://cdn.example"
        );
        assert_eq!(
            normalize_origin("http://127.0.0.1:8081").unwrap(),
            "http://127.0.0.1:8081"
        );
        assert_eq!(
            normalize_origin("https://[0::1]:8443").unwrap(),
            "https://[::1]:8443"
        );
        for bad in [
            "cdn.example",
            "ftp://cdn.example",
            "https://",
            "https://cdn.example/lib",
            "https://user@cdn.example",
            "https://cdn.example:0",
            "https://cdn.example:99999",
            "https://cdn.example:x",
            "https://cdn example",
            "https://a\"b",
            "https://cdn.example.",
        ] {
            assert!(normalize_origin(bad).is_err(), "{bad}");
        }
    }

    /// A hashed file on another origin has a pattern for the probe, never
    /// for the proxy's own pairing.
    #[test]
    fn a_cdn_files_hash_is_found_for_the_probe_only() {
        let cdn = "https://cdn.example/_astro/Counter-BuR3Dq2X.js";
        let p = EntryPattern::hashed_at(cdn).unwrap();
        assert_eq!(p.parts(), ("https://cdn.example/_astro/Counter-", 8, ".js"));
        assert!(EntryPattern::hashed(cdn).is_none());
        assert_eq!(
            EntryPattern::hashed_at("/_astro/Counter-BuR3Dq2X.js").map(|p| p.len),
            EntryPattern::hashed("/_astro/Counter-BuR3Dq2X.js").map(|p| p.len)
        );
        for no in [
            "ftp://cdn.example/_astro/Counter-BuR3Dq2X.js",
            "cdn.example/_astro/Counter-BuR3Dq2X.js",
            "https://cdn.example/_astro/Counter.js",
            "https://cdn.example/_astro/icon-ArrowDown.js",
        ] {
            assert!(EntryPattern::hashed_at(no).is_none(), "{no}");
        }
    }

    #[test]
    fn entry_patterns_pair_hashed_names() {
        let p = EntryPattern::for_file("/assets/index-BuR3Dq2X.js", None).unwrap();
        assert_eq!(p, "/assets/index-[hash:8].js");
        let pat = EntryPattern::parse(&p).unwrap();
        assert!(pat.matches("/assets/index-C-9x_aQ1.js"));
        assert!(!pat.matches("/assets/index-C-9x_aQ1.css"));
        assert!(!pat.matches("/assets/index-legacy-C9xaQ1zz.js"));
        assert!(
            !pat.matches("/assets/index-polyfill.js"),
            "a word, not a hash"
        );
        assert!(!pat.matches("/other/index-C9xaQ1zz.js"));
        assert_eq!(
            EntryPattern::for_file("/assets/my-page-BuR3Dq2X.js", None).as_deref(),
            Some("/assets/my-page-[hash:8].js")
        );
        assert_eq!(
            EntryPattern::for_file("/assets/index-B-x3_Qa9.js", None).as_deref(),
            Some("/assets/index-[hash:8].js")
        );
        assert_eq!(
            EntryPattern::for_file("/static/js/main.3f2a1b9c4d5e6f7a8b9c.js", None).as_deref(),
            Some("/static/js/main.[hash:20].js")
        );
        assert_eq!(
            EntryPattern::for_file("/static/js/453.3f2a1b9c.chunk.js", None).as_deref(),
            Some("/static/js/453.[hash:8].chunk.js")
        );
        assert_eq!(
            EntryPattern::for_file("/assets/my-page-BuR3Dq2X.js", Some("my-page")).as_deref(),
            Some("/assets/my-page-[hash:8].js")
        );
        assert_eq!(
            EntryPattern::for_file("https://cdn.example/a/app-1a2b3c4d.js", None).as_deref(),
            Some("https://cdn.example/a/app-[hash:8].js")
        );
        for plain in ["/src/main.js", "/src/my-component.js", "/a/vendor-react.js"] {
            assert_eq!(EntryPattern::for_file(plain, None), None, "{plain}");
        }
        for bad in [
            "/a/[hash:8]/x.js",
            "/a/x-[hash:2].js",
            "/a/x-[hash:8]",
            "a/x-[hash:8].js",
            "/a/x-[hash:8]-[hash:8].js",
            "/a/x-[hash:999].js",
        ] {
            assert!(EntryPattern::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_cdn_module_uploaded_on_the_apps_origin_is_found_where_production_loads_it() {
        let base = url::Url::parse("https://shop.test/index.html").unwrap();
        let map = serde_json::json!({
            "imports": { "@org/navbar": "https://cdn.test/org/navbar.js", "a": "/a.js" },
            "scopes": { "https://cdn.test/": { "x": "https://cdn.test/lib/x.js" } }
        });
        assert_eq!(
            served_elsewhere(&map, &base, "/navbar.js", "@org/navbar").as_deref(),
            Some("https://cdn.test/org/navbar.js")
        );
        assert_eq!(
            served_elsewhere(&map, &base, "/lib/x.js", "/lib/x.js").as_deref(),
            Some("https://cdn.test/lib/x.js"),
            "the same path on another origin"
        );
        assert_eq!(
            served_elsewhere(&map, &base, "/a.js", "a"),
            None,
            "on the app's origin"
        );
        assert_eq!(
            served_elsewhere(&map, &base, "https://cdn.test/org/navbar.js", "@org/navbar"),
            None,
            "uploaded where production loads it"
        );
        assert_eq!(
            served_elsewhere(&serde_json::json!([1]), &base, "/a.js", "a"),
            None
        );
        // Addresses skipped unresolved are those that cannot leave the
        // page's origin; the URL parser agrees on every one.
        for address in [
            "/a.js",
            "./a.js",
            "../a.js",
            "a.js",
            "?q",
            "#f",
            "",
            " /a.js",
            "%2F%2Fcdn.test/a.js",
            "//cdn.test/a.js",
            "\\\\cdn.test/a.js",
            "/\\cdn.test/a.js",
            " \t//cdn.test/a.js",
            "/\t/cdn.test/a.js",
            "/\n\\cdn.test/a.js",
            "https://cdn.test/a.js",
            "http:a.js",
            "https:a.js",
            "data:text/javascript,1",
            "\u{0}//cdn.test/a.js",
            "\u{1f}\\/cdn.test/x",
        ] {
            let leaves = base
                .join(address)
                .is_ok_and(|u| u.origin() != base.origin());
            assert!(!leaves || may_leave_origin(address), "{address:?}");
        }
        // And every address of up to five characters from those that
        // matter to the parser's first steps.
        let alphabet = ['/', '\\', ':', '\t', '\n', ' ', '\u{0}', 'a', '.', '?'];
        let mut checked = 0;
        for len in 1..=5u32 {
            for n in 0..alphabet.len().pow(len) {
                let address: String = (0..len)
                    .map(|i| alphabet[n / alphabet.len().pow(i) % alphabet.len()])
                    .collect();
                let leaves = base
                    .join(&address)
                    .is_ok_and(|u| u.origin() != base.origin());
                assert!(!leaves || may_leave_origin(&address), "{address:?}");
                checked += 1;
            }
        }
        assert_eq!(checked, 111_110);
        // The specifier's first entry decides; one on the app's origin
        // leaves only the search by path.
        let map = serde_json::json!({
            "imports": { "x": "/x.js" },
            "scopes": { "/": { "x": "https://cdn.test/x.js" } }
        });
        let read = MapAddresses::read(&map, &base);
        assert_eq!(read.served_elsewhere("/y.js", "x"), None);
        assert_eq!(
            read.served_elsewhere("/x.js", "x").as_deref(),
            Some("https://cdn.test/x.js")
        );
    }
}
