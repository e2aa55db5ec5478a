//! Merging a ticket's overrides into a page's import map.
//!
//! Import maps do not chain: a specifier is mapped once and the result is
//! fetched as is. So pointing `/src/lib/greet.js` at the ticket's URL is not
//! enough when the page's map already sends some other specifier (an alias, a
//! prefix, a scope) straight to `/src/lib/greet.js`; every such route has to be
//! pointed at the ticket's URL too, or it would keep loading production.

use std::collections::HashMap;
use std::hash::{Hash as _, Hasher};
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use url::Url;

use stamp_model::assets;
use stamp_model::ticket::{ModuleRef, OverrideSet};

/// Why a page's import map could not be merged.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("import map is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("import map is not a JSON object")]
    NotAnObject,
    #[error("import map has the wrong shape: {0}")]
    BadShape(&'static str),
    #[error("import map is longer than {limit} bytes")]
    TooLarge { limit: usize },
}

/// How the ticket's URLs are written into a map: as paths on the page's
/// origin, or as absolute URLs. es-module-shims 1 refuses a later map that
/// redefines a key with any other value than the one it holds, compared as
/// written, so in its maps (`importmap-shim`) every ticket URL is absolute:
/// the same string in every map, whatever base each map has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Urls {
    #[default]
    Paths,
    Absolute,
}

impl Urls {
    /// The `Urls` for a map element's `type`.
    pub fn for_type(ty: &str) -> Urls {
        if ty.eq_ignore_ascii_case("importmap-shim") {
            Urls::Absolute
        } else {
            Urls::Paths
        }
    }

    fn write(self, url: String, page: &Url) -> String {
        match self {
            Urls::Paths => url,
            Urls::Absolute => page.join(&url).map_or(url, String::from),
        }
    }
}

/// How one map of a page is merged: how ticket URLs are written, and
/// whether it is the page's first map. The proxy's own keys (the ticket's
/// specifiers, the mirror routes) go in the first map only; later maps get
/// their own entries rewritten. Every loader that composes several maps
/// keeps a key from the first map (native maps and es-module-shims 2: the
/// first definition wins; SystemJS and import-map-injector: a later map
/// only wins for a key it defines itself, which is rewritten too), and
/// es-module-shims 1 rejects a whole later map that defines a key again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MergeAs {
    pub urls: Urls,
    pub first: bool,
}

impl From<Urls> for MergeAs {
    fn from(urls: Urls) -> MergeAs {
        MergeAs { urls, first: true }
    }
}

/// Merges `overrides` into the page's import map text and returns the new
/// map's text, already escaped for a `<script>` element.
#[cfg(any(test, feature = "testing"))]
pub fn merge(
    original: &str,
    overrides: &OverrideSet,
    page_url: &Url,
    max_len: usize,
) -> Result<String, MergeError> {
    merge_as(original, overrides, page_url, max_len, Urls::Paths)
}

/// [`merge`], with the ticket's URLs written as `urls` says.
pub fn merge_as(
    original: &str,
    overrides: &OverrideSet,
    page_url: &Url,
    max_len: usize,
    form: impl Into<MergeAs>,
) -> Result<String, MergeError> {
    let mut root = parse(original, max_len)?;
    merge_root(&mut root, overrides, page_url, form.into());
    let text = serde_json::to_string(&Value::Object(root))
        .map_err(|e| MergeError::InvalidJson(e.to_string()))?;
    Ok(escape_for_script(&text))
}

/// Merges `overrides` into an external map (`<script … src>`), fetched from
/// `map_url`, for a page on `page_url`'s origin. The merged map is served
/// from the proxy, not from `map_url`, so every relative address, key and
/// scope in it is first made absolute against `map_url` (what the browser
/// would have resolved it to): a path on the page's origin, a full URL on
/// any other.
pub fn merge_external(
    original: &str,
    overrides: &OverrideSet,
    map_url: &Url,
    page_url: &Url,
    max_len: usize,
    form: impl Into<MergeAs>,
) -> Result<String, MergeError> {
    let mut root = parse(original, max_len)?;
    // Only what import maps mean is served again: whatever else the
    // fetched JSON held is not relayed under the app's origin.
    root.retain(|k, _| matches!(k.as_str(), "imports" | "scopes" | "integrity"));
    absolutize(&mut root, map_url, page_url);
    merge_root(&mut root, overrides, page_url, form.into());
    serde_json::to_string(&Value::Object(root)).map_err(|e| MergeError::InvalidJson(e.to_string()))
}

fn parse(original: &str, max_len: usize) -> Result<Map<String, Value>, MergeError> {
    // Checked before parsing so a hostile page cannot make us parse megabytes.
    if original.len() > max_len {
        return Err(MergeError::TooLarge { limit: max_len });
    }
    let root = if original.trim().is_empty() {
        Map::new()
    } else {
        match serde_json::from_str::<Value>(original) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return Err(MergeError::NotAnObject),
            Err(e) => return Err(MergeError::InvalidJson(e.to_string())),
        }
    };
    validate(&root)?;
    Ok(root)
}

fn merge_root(
    root: &mut Map<String, Value>,
    overrides: &OverrideSet,
    page_url: &Url,
    form: MergeAs,
) {
    let resolver = Resolver { page: page_url };
    let targets = Targets::new(overrides, &resolver, form.urls);
    let mut paths = Paths::new(&resolver);
    apply_all(root, &targets, &mut paths, form);
}

/// Rewrites every URL-like key and address of a validated map as absolute
/// (see [`merge_external`]); bare specifiers stay as they are.
fn absolutize(root: &mut Map<String, Value>, base: &Url, page: &Url) {
    let fix = |s: &str| -> Option<String> {
        let url_like = s.starts_with('/') || s.starts_with("./") || s.starts_with("../");
        let url = if url_like {
            base.join(s).ok()?
        } else {
            Url::parse(s).ok()?
        };
        if !matches!(url.scheme(), "http" | "https") {
            return None;
        }
        Some(if url.origin() == page.origin() {
            match url.query() {
                Some(q) => format!("{}?{q}", url.path()),
                None => url.path().to_owned(),
            }
        } else {
            url.to_string()
        })
    };
    let fix_map = |map: &mut Map<String, Value>, addresses: bool| {
        let old = std::mem::take(map);
        for (key, value) in old {
            let key = fix(&key).unwrap_or(key);
            let value = match value {
                Value::String(a) if addresses => Value::String(fix(&a).unwrap_or(a)),
                other => other,
            };
            map.insert(key, value);
        }
    };
    if let Some(Value::Object(imports)) = root.get_mut("imports") {
        fix_map(imports, true);
    }
    if let Some(Value::Object(scopes)) = root.get_mut("scopes") {
        fix_map(scopes, false);
        for scope in scopes.values_mut() {
            if let Value::Object(scope) = scope {
                fix_map(scope, true);
            }
        }
    }
    if let Some(Value::Object(integrity)) = root.get_mut("integrity") {
        fix_map(integrity, false);
    }
}

/// Merged maps of one page variant (one [`crate::effective::Effective`]), so
/// that the pages sharing a map (an app shell, a site-wide layout) pay for the
/// merge once per snapshot instead of once per request. It dies with the
/// snapshot, so a change to the ticket can never serve a stale merge.
///
/// Bounded: maps over [`MergeCache::MAX_MAP`] bytes are merged every time, and
/// the cache starts over when it holds [`MergeCache::MAX_ENTRIES`] maps.
#[derive(Default)]
pub struct MergeCache {
    entries: Remembered<MergeAs, Arc<str>>,
    elsewhere: Remembered<(), Elsewhere>,
}

/// The overrides' modules a page's map loads from another origin: (their
/// specifier, path, production's URL).
pub type Elsewhere = Arc<Vec<(String, String, String)>>;

/// Answers about one map read against one URL (and `X`, how it is read),
/// keyed by all three and compared in full on a hit, so a hash collision
/// costs the work again, never a wrong answer. Starts over when it holds
/// [`MergeCache::MAX_ENTRIES`].
struct Remembered<X, V>(Mutex<HashMap<u64, Entry<X, V>>>);

struct Entry<X, V> {
    url: String,
    map: String,
    how: X,
    answer: V,
}

impl<X, V> Default for Remembered<X, V> {
    fn default() -> Self {
        Remembered(Mutex::default())
    }
}

impl<X: std::hash::Hash + Eq + Copy, V: Clone> Remembered<X, V> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry<X, V>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The answer for (`url`, `map`, `how`), from `work` the first time.
    /// `work` runs outside the lock: concurrent misses may both run it, and
    /// get the same answer. Errors are not remembered.
    fn get<E>(
        &self,
        url: &Url,
        map: &str,
        how: X,
        work: impl FnOnce() -> Result<V, E>,
    ) -> Result<V, E> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        url.as_str().hash(&mut h);
        map.hash(&mut h);
        how.hash(&mut h);
        let key = h.finish();
        if let Some(hit) = self.lock().get(&key) {
            if hit.map == map && hit.url == url.as_str() && hit.how == how {
                return Ok(hit.answer.clone());
            }
        }
        let answer = work()?;
        let mut entries = self.lock();
        if entries.len() >= MergeCache::MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(
            key,
            Entry {
                url: url.as_str().to_owned(),
                map: map.to_owned(),
                how,
                answer: answer.clone(),
            },
        );
        Ok(answer)
    }
}

impl std::fmt::Debug for MergeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.entries.lock().len();
        f.debug_struct("MergeCache").field("entries", &n).finish()
    }
}

impl MergeCache {
    pub const MAX_ENTRIES: usize = 32;
    pub const MAX_MAP: usize = 16 * 1024;

    /// [`merge`], remembered. The key is the whole map text and the whole
    /// page URL (the base that relative addresses resolve against), compared
    /// in full on a hit, so a hash collision costs a merge, never a wrong map.
    pub fn merge(
        &self,
        original: &str,
        overrides: &OverrideSet,
        page_url: &Url,
        max_len: usize,
        form: impl Into<MergeAs>,
    ) -> Result<Arc<str>, MergeError> {
        let form = form.into();
        let merge = || merge_as(original, overrides, page_url, max_len, form).map(Arc::from);
        if original.len() > Self::MAX_MAP.min(max_len) {
            return merge();
        }
        self.entries.get(page_url, original, form, merge)
    }

    /// For every module of `overrides`, where the map `original`, read
    /// against `base`, loads it from another origin
    /// ([`assets::served_elsewhere`]), remembered like [`MergeCache::merge`]
    /// (the map text and base compared in full on a hit). A map that is no
    /// JSON object names none.
    pub fn elsewhere(&self, original: &str, overrides: &OverrideSet, base: &Url) -> Elsewhere {
        let find = || -> Elsewhere {
            let Ok(map) = serde_json::from_str::<Value>(original) else {
                return Elsewhere::default();
            };
            let addresses = assets::MapAddresses::read(&map, base);
            Arc::new(
                overrides
                    .iter()
                    .filter_map(|(spec, m)| {
                        let url = addresses.served_elsewhere(&m.path, spec)?;
                        Some((spec.to_string(), m.path.clone(), url))
                    })
                    .collect(),
            )
        };
        if original.len() > Self::MAX_MAP {
            return find();
        }
        match self.elsewhere.get(base, original, (), || {
            Ok::<_, std::convert::Infallible>(find())
        }) {
            Ok(found) => found,
            Err(never) => match never {},
        }
    }
}

/// Import map entries for the modules on other origins, in this order:
/// each ticket URL mapped to itself; each one's mirror path to the ticket's
/// version (a relative import of it from another ticket module lands
/// there); and last, every other mirror path back to the other origin
/// itself, so an untouched sibling is production's very module instance,
/// not a second copy under another URL.
///
/// SystemJS and es-module-shims resolve each later map's addresses, and the
/// later keys of the same map, through what they composed so far: the
/// catch-all would send a ticket URL written after it back to production.
/// An exact key wins over a prefix in both, so the self entries keep every
/// ticket URL where it is, in whichever map it is written.
fn mirror_entries<'a>(
    locations: impl Iterator<Item = (&'a str, &'a str)>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut mirrors = Vec::new();
    let mut origins = std::collections::BTreeSet::new();
    for (location, url) in locations {
        if let Some(origin) = assets::origin_of(location) {
            out.push((url.to_owned(), url.to_owned()));
            mirrors.push((assets::serve_path(location), url.to_owned()));
            origins.insert(origin);
        }
    }
    out.extend(mirrors);
    for origin in origins {
        let root = format!("{origin}/");
        out.push((assets::serve_path(&root), root));
    }
    out
}

/// The map inserted into a page that has none: `{"imports": {spec: url, …}}`, escaped.
pub fn fresh(overrides: &OverrideSet) -> String {
    fresh_with(overrides, &[])
}

/// [`fresh`], with `extra` keys (production's URL of a file the ticket
/// replaces by an entry pattern → the ticket's URL), for a page that
/// imports that file by its URL. Production's own files beside it (its
/// lazy chunks import the entry by URL, for the bundler's helpers) keep
/// production's: a scope of that folder maps the URL to itself, so a
/// production chunk the page still loads never gets the ticket's entry,
/// whose exports differ.
pub fn fresh_with(overrides: &OverrideSet, extra: &[(String, String)]) -> String {
    let mut imports: Map<String, Value> = overrides
        .iter()
        .filter(|(spec, _)| !assets::is_entry_pattern(spec))
        .map(|(spec, module)| (spec.clone(), Value::String(module.url())))
        .collect();
    let urls: Vec<(String, String)> = overrides
        .values()
        .map(|m| (m.path.clone(), m.url()))
        .collect();
    for (key, url) in mirror_entries(urls.iter().map(|(p, u)| (p.as_str(), u.as_str()))) {
        imports.entry(key).or_insert(Value::String(url));
    }
    let mut scopes: Map<String, Value> = Map::new();
    for (key, url) in extra {
        if imports.contains_key(key) {
            continue;
        }
        imports.insert(key.clone(), Value::String(url.clone()));
        if let Some(slash) = key.split(['?', '#']).next().and_then(|p| p.rfind('/')) {
            let folder = &key[..=slash];
            if let Value::Object(scope) = scopes
                .entry(folder.to_owned())
                .or_insert_with(|| Value::Object(Map::new()))
            {
                scope.insert(key.clone(), Value::String(key.clone()));
            }
        }
    }
    let mut root = Map::new();
    root.insert("imports".to_owned(), Value::Object(imports));
    if !scopes.is_empty() {
        root.insert("scopes".to_owned(), Value::Object(scopes));
    }
    escape_for_script(&Value::Object(root).to_string())
}

/// Escapes JSON text for inclusion in a `<script>` element: `<` `>` `&`
/// become `\u003c` `\u003e` `\u0026`, and every character beyond ASCII
/// its `\u` escape (U+2028 and U+2029 among them), so the text is ASCII.
///
/// Script element contents are raw text, so HTML entities would reach the JSON
/// parser verbatim; JSON escapes are the only form that both the HTML
/// tokenizer ignores and the JSON parser decodes. Those characters can only
/// occur inside JSON strings, where a `\u` escape is always valid.
pub fn escape_for_script(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            // Every other character beyond ASCII too: the page may be in any
            // charset, and `\u` reads the same in all of them (JSON text
            // only has such characters in strings).
            c if !c.is_ascii() => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// The sha256 CSP source of a script's text: `'sha256-<base64>'`.
pub fn csp_hash_source(script_text: &str) -> String {
    let digest = Sha256::digest(script_text.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// Rejects maps a browser would reject (or partly ignore), so that we never
/// hand the page a map whose meaning we did not understand.
fn validate(root: &Map<String, Value>) -> Result<(), MergeError> {
    if let Some(imports) = root.get("imports") {
        check_string_map(
            imports,
            "imports must be an object",
            "imports values must be strings",
        )?;
    }
    if let Some(scopes) = root.get("scopes") {
        let Value::Object(scopes) = scopes else {
            return Err(MergeError::BadShape("scopes must be an object"));
        };
        for scope in scopes.values() {
            check_string_map(
                scope,
                "each scope must be an object",
                "scope values must be strings",
            )?;
        }
    }
    if let Some(integrity) = root.get("integrity") {
        check_string_map(
            integrity,
            "integrity must be an object",
            "integrity values must be strings",
        )?;
    }
    Ok(())
}

fn check_string_map(
    value: &Value,
    not_object: &'static str,
    not_string: &'static str,
) -> Result<(), MergeError> {
    let Value::Object(map) = value else {
        return Err(MergeError::BadShape(not_object));
    };
    if map.values().all(Value::is_string) {
        Ok(())
    } else {
        Err(MergeError::BadShape(not_string))
    }
}

/// Resolves URL-like specifiers and addresses the way the browser does for an
/// inline map, whose base URL is the page's URL.
struct Resolver<'a> {
    page: &'a Url,
}

impl Resolver<'_> {
    /// `None` for bare specifiers: the browser never parses those as URLs.
    fn resolve(&self, s: &str) -> Option<Url> {
        if s.starts_with('/') || s.starts_with("./") || s.starts_with("../") {
            return self.page.join(s).ok();
        }
        Url::parse(s)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
    }

    /// The location `s` names (see [`location_of`]) when it is an http(s)
    /// resource without a query: a query makes it a different URL, so a
    /// different module.
    fn location(&self, s: &str) -> Option<String> {
        if is_plain_absolute_path(s) {
            // What the URL parser would return, without running it: the
            // common case (`/src/lib/x.js`) in every entry of every merge.
            return Some(s.to_owned());
        }
        let url = self.resolve(s)?;
        if url.query().is_some() {
            return None;
        }
        Some(location_of(&url, self.page))
    }

    /// The location an import map's address names, its query dropped: an
    /// address that busts a cache (`/src/greet.js?v=3`) names production's
    /// file, as a `src` that does is taken to (`rewrite::location`). Only
    /// what the URL resolves to with a query: its key is still a
    /// specifier the query makes another URL.
    fn address_location(&self, s: &str) -> Option<String> {
        let mut url = self.resolve(s)?;
        url.query()?;
        url.set_query(None);
        url.set_fragment(None);
        Some(location_of(&url, self.page))
    }
}

/// A module's location as overrides name it: the path on the page's own
/// origin, `origin + path` on any other.
pub fn location_of(url: &Url, page: &Url) -> String {
    if same_origin(url, page) {
        url.path().to_owned()
    } else {
        format!("{}{}", url.origin().ascii_serialization(), url.path())
    }
}

/// Whether two URLs share an origin, as `Url::origin` says: for two http(s)
/// URLs (every caller's case) compared field by field, without the copies of
/// both hosts `Url::origin` makes; any other scheme (`blob:`, `ws:`, opaque
/// ones) is left to `Url::origin`.
pub fn same_origin(a: &Url, b: &Url) -> bool {
    let web = |u: &Url| matches!(u.scheme(), "http" | "https");
    if !web(a) || !web(b) {
        return a.origin() == b.origin();
    }
    a.scheme() == b.scheme()
        && a.host() == b.host()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// Whether `url` is where the page on `page` is served from, as far as
/// the proxy can tell: the same origin, or the same host and default port
/// with http and https swapped (a page the proxy takes for `http://` when a
/// TLS terminator in front of it sent no `X-Forwarded-Proto`).
pub fn same_site(url: &Url, page: &Url) -> bool {
    same_origin(url, page)
        || (matches!(
            (url.scheme(), page.scheme()),
            ("http", "https") | ("https", "http")
        ) && url.host() == page.host()
            && url.port().is_none()
            && page.port().is_none())
}

/// `/a/b.js` with nothing the URL parser would change or cut off: no dot
/// segments, no percent-encoding to normalise, no query, fragment or `//`.
pub fn is_plain_absolute_path(s: &str) -> bool {
    let b = s.as_bytes();
    b.first() == Some(&b'/')
        && b.get(1) != Some(&b'/')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'/' | b'-' | b'_' | b'.' | b'~'))
        && !s.contains("//")
        && s.split('/').all(|seg| seg != "." && seg != "..")
}

/// One override, with its production path normalised the way resolved URLs
/// are (percent-encoding, dot segments) so the two compare as equals.
struct Target<'a> {
    spec: &'a str,
    /// The key written for it: the specifier, or for a path specifier in a
    /// map of absolute URLs, the absolute URL (the same string in every map).
    key: String,
    is_path_spec: bool,
    path: String,
    url: String,
}

impl<'a> Target<'a> {
    fn new(spec: &'a str, module: &ModuleRef, resolver: &Resolver<'_>, urls: Urls) -> Self {
        let path = resolver
            .page
            .join(&module.path)
            .map(|u| location_of(&u, resolver.page))
            .unwrap_or_else(|_| module.path.clone());
        let key = if spec.starts_with('/') {
            urls.write(spec.to_owned(), resolver.page)
        } else {
            spec.to_owned()
        };
        Target {
            spec,
            key,
            is_path_spec: spec.starts_with('/'),
            path,
            url: urls.write(module.url(), resolver.page),
        }
    }

    #[cfg(test)]
    fn is_referred_to_by(&self, s: &str, resolver: &Resolver<'_>) -> bool {
        resolver.location(s).as_deref() == Some(self.path.as_str())
    }

    #[cfg(test)]
    fn is_addressed_by(&self, s: &str, resolver: &Resolver<'_>) -> bool {
        self.is_referred_to_by(s, resolver)
            || resolver.address_location(s).as_deref() == Some(self.path.as_str())
    }

    /// When `s` resolves to a same-origin directory containing the module,
    /// the rest of the module's path below it (never empty).
    #[cfg(test)]
    fn rest_below<'t>(&'t self, s: &str, resolver: &Resolver<'_>) -> Option<&'t str> {
        let prefix = resolver.location(s)?;
        if !prefix.ends_with('/') {
            return None;
        }
        self.path
            .strip_prefix(prefix.as_str())
            .filter(|rest| !rest.is_empty())
    }
}

/// Every override's [`Target`], indexed by production path and by specifier.
struct Targets<'a> {
    list: Vec<Target<'a>>,
    /// Path → the target that wins for it (the last, in specifier order, as
    /// when overrides were applied one by one).
    by_path: HashMap<String, usize>,
    by_spec: HashMap<&'a str, usize>,
}

impl<'a> Targets<'a> {
    fn new(overrides: &'a OverrideSet, resolver: &Resolver<'_>, urls: Urls) -> Targets<'a> {
        // Entry patterns pair page elements, they are no import specifiers.
        let list: Vec<Target<'a>> = overrides
            .iter()
            .filter(|(spec, _)| !assets::is_entry_pattern(spec))
            .map(|(spec, module)| Target::new(spec, module, resolver, urls))
            .collect();
        let by_path = list
            .iter()
            .enumerate()
            .map(|(i, t)| (t.path.clone(), i))
            .collect();
        let by_spec = list.iter().enumerate().map(|(i, t)| (t.spec, i)).collect();
        Targets {
            list,
            by_path,
            by_spec,
        }
    }

    /// The target whose production module `s` names, if any.
    fn referred_to_by(&self, s: &str, paths: &mut Paths<'_>) -> Option<&Target<'a>> {
        let path = paths.location(s)?;
        self.by_path.get(path).map(|&i| &self.list[i])
    }

    /// The target whose production module the map address `s` names, a
    /// cache-busting query or not (see [`Resolver::address_location`]).
    fn addressed_by(&self, s: &str, paths: &mut Paths<'_>) -> Option<&Target<'a>> {
        if let Some(t) = self.referred_to_by(s, paths) {
            return Some(t);
        }
        if !s.contains('?') {
            return None;
        }
        let path = paths.resolver.address_location(s)?;
        self.by_path.get(&path).map(|&i| &self.list[i])
    }
}

/// [`Resolver::location`], remembered for one merge: the same keys
/// and addresses are looked at once per map section instead of once per
/// override, which made a 1,000-module ticket on a 1,000-entry map take half
/// a second.
struct Paths<'r> {
    resolver: &'r Resolver<'r>,
    memo: HashMap<String, Option<String>>,
}

impl<'r> Paths<'r> {
    fn new(resolver: &'r Resolver<'r>) -> Paths<'r> {
        Paths {
            resolver,
            memo: HashMap::new(),
        }
    }

    fn location(&mut self, s: &str) -> Option<&str> {
        if !self.memo.contains_key(s) {
            let path = self.resolver.location(s);
            self.memo.insert(s.to_owned(), path);
        }
        self.memo.get(s).and_then(|p| p.as_deref())
    }
}

/// Applies every override at once, in time linear in the map plus the
/// overrides (prefix entries aside: each is checked against every override).
/// Equivalent to applying them one by one in specifier order (tested against
/// that), except that an override's own specifier always keeps its own URL.
fn apply_all(
    root: &mut Map<String, Value>,
    targets: &Targets<'_>,
    paths: &mut Paths<'_>,
    form: MergeAs,
) {
    let imports = root
        .entry("imports")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(imports) = imports {
        for t in &targets.list {
            if form.first {
                if t.key != t.spec {
                    imports.remove(t.spec);
                }
                imports.insert(t.key.clone(), Value::String(t.url.clone()));
            } else {
                for k in [t.spec, t.key.as_str()] {
                    if let Some(v) = imports.get_mut(k) {
                        *v = Value::String(t.url.clone());
                    }
                }
            }
        }
        // Another spelling of the same URL would otherwise still win for
        // whichever spelling the browser keeps after normalising keys.
        for (key, value) in imports.iter_mut() {
            if targets.by_spec.contains_key(key.as_str()) {
                continue;
            }
            if let Some(t) = targets.referred_to_by(key, paths) {
                *value = Value::String(t.url.clone());
            }
        }
        redirect_routes(imports, targets, paths);
        if form.first {
            let remote = targets
                .list
                .iter()
                .map(|t| (t.path.as_str(), t.url.as_str()));
            for (key, url) in mirror_entries(remote) {
                let key = form.urls.write(key, paths.resolver.page);
                if !imports.contains_key(&key) {
                    imports.insert(key, Value::String(url));
                }
            }
        }
    }

    if let Some(Value::Object(scopes)) = root.get_mut("scopes") {
        for scope in scopes.values_mut() {
            if let Value::Object(scope) = scope {
                redirect_routes(scope, targets, paths);
                unshadow(scope, targets, paths);
            }
        }
        mirror_scopes(scopes, targets, paths);
    }

    if let Some(Value::Object(integrity)) = root.get_mut("integrity") {
        // Production's digest would make the browser refuse the ticket's
        // body. None is given for the ticket's URL: the proxy serves it only
        // when it matches the hash the URL names, and a JavaScript body ends
        // with the probe's marker (so its bytes are not the stored body's).
        integrity.retain(|key, _| targets.addressed_by(key, paths).is_none());
    }
}

/// A ticket module on another origin is served from its mirror path, and a
/// scope applies to the modules whose URL it prefixes: the scopes that
/// cover the module's production URL (a CDN's origin, a package's folder,
/// as @jspm/generator writes them) do not cover its mirror path. Each such
/// scope gets a copy under the mirror path's prefix, so the ticket's
/// module resolves its bare imports as production's does.
fn mirror_scopes(scopes: &mut Map<String, Value>, targets: &Targets<'_>, paths: &mut Paths<'_>) {
    let mut copies = Vec::new();
    for (key, scope) in scopes.iter() {
        let Some(prefix) = paths.location(key) else {
            continue;
        };
        if !assets::is_remote(prefix) {
            continue;
        }
        let covers = targets.list.iter().any(|t| {
            assets::is_remote(&t.path)
                && (t.path == prefix || (prefix.ends_with('/') && t.path.starts_with(prefix)))
        });
        if covers {
            copies.push((assets::serve_path(prefix), scope.clone()));
        }
    }
    for (key, scope) in copies {
        scopes.entry(key).or_insert(scope);
    }
}

/// Points every entry whose result is a production module at the ticket's
/// URL. A prefix entry cannot be edited without moving its siblings too, so it
/// gets a more specific entry for each overridden module below it, which
/// browsers prefer.
fn redirect_routes(map: &mut Map<String, Value>, targets: &Targets<'_>, paths: &mut Paths<'_>) {
    let mut specific = Vec::new();
    for (key, value) in map.iter_mut() {
        let Value::String(address) = value else {
            continue;
        };
        if let Some(t) = targets.addressed_by(address, paths) {
            *value = Value::String(t.url.clone());
        } else if key.ends_with('/') && address.ends_with('/') {
            let Some(prefix) = paths.location(address) else {
                continue;
            };
            if !prefix.ends_with('/') {
                continue;
            }
            for t in &targets.list {
                if let Some(rest) = t.path.strip_prefix(prefix).filter(|r| !r.is_empty()) {
                    specific.push((format!("{key}{rest}"), t.url.clone()));
                }
            }
        }
    }
    for (key, url) in specific {
        // An override's own specifier keeps its own URL.
        if !targets.by_spec.contains_key(key.as_str()) {
            map.insert(key, Value::String(url));
        }
    }
}

/// A scope is consulted before `imports`, so a scope entry that matches an
/// override's specifier would hide the override for every module in it.
fn unshadow(scope: &mut Map<String, Value>, targets: &Targets<'_>, paths: &mut Paths<'_>) {
    let mut exact = vec![false; targets.list.len()];
    // (key, its same-origin path if it has one, whether it is URL-like)
    let mut prefixes: Vec<(String, Option<String>, bool)> = Vec::new();
    for (key, value) in scope.iter_mut() {
        let hit = targets.by_spec.get(key.as_str()).copied().or_else(|| {
            let path = paths.location(key)?;
            targets.by_path.get(path).copied()
        });
        if let Some(i) = hit {
            *value = Value::String(targets.list[i].url.clone());
            exact[i] = true;
        } else if key.ends_with('/') {
            let path = paths.location(key).map(str::to_owned);
            let url_like = paths.resolver.resolve(key).is_some();
            prefixes.push((key.clone(), path, url_like));
        }
    }
    for (i, t) in targets.list.iter().enumerate() {
        if exact[i] {
            continue;
        }
        let covered = prefixes.iter().any(|(key, path, url_like)| {
            if t.is_path_spec {
                path.as_deref().is_some_and(|p| {
                    p.ends_with('/') && t.path.strip_prefix(p).is_some_and(|r| !r.is_empty())
                })
            } else {
                !url_like && t.spec.starts_with(key.as_str())
            }
        });
        if covered {
            scope.insert(t.key.clone(), Value::String(t.url.clone()));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use stamp_model::ticket::Hash;

    const MAX: usize = 64 * 1024;

    fn page() -> Url {
        Url::parse("https://shop.example/checkout/index.html").unwrap()
    }

    fn module(path: &str) -> ModuleRef {
        ModuleRef {
            path: path.into(),
            hash: Hash::of(path.as_bytes()),
            size: 1,
        }
    }

    fn set(entries: &[(&str, &str)]) -> OverrideSet {
        entries
            .iter()
            .map(|(spec, path)| (spec.to_string(), module(path)))
            .collect()
    }

    fn greet() -> OverrideSet {
        set(&[("/src/lib/greet.js", "/src/lib/greet.js")])
    }

    fn greet_url() -> String {
        module("/src/lib/greet.js").url()
    }

    fn merged(original: &str, overrides: &OverrideSet) -> Value {
        let text = merge(original, overrides, &page(), MAX).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// What SystemJS and es-module-shims do to a map's addresses: each is
    /// resolved through the entries composed before it (earlier maps, and
    /// earlier keys of the same map), exact key first, else the longest
    /// prefix; a scope's addresses through the same map's imports too.
    fn composed_through(entries: &[(String, String)], address: &str) -> String {
        let mut best: Option<&(String, String)> = None;
        for e in entries {
            if e.0 == address {
                return e.1.clone();
            }
            if e.0.ends_with('/')
                && address.starts_with(e.0.as_str())
                && best.is_none_or(|b| e.0.len() > b.0.len())
            {
                best = Some(e);
            }
        }
        match best {
            Some((k, v)) => format!("{v}{}", &address[k.len()..]),
            None => address.to_string(),
        }
    }

    #[test]
    fn ticket_urls_on_another_origin_survive_loaders_that_compose_maps() {
        // single-spa's root config: a first map the proxy merges into, a
        // second (its organisation's map) with the ticket's module.
        let overrides = set(&[("@org/navbar", "https://cdn.test/org/navbar.js")]);
        let u = overrides["@org/navbar"].url();
        let first = merged(
            r#"{"imports":{"single-spa":"https://cdn.test/single-spa.js"}}"#,
            &overrides,
        );
        let second = merged(
            r#"{"imports":{"@org/navbar":"https://cdn.test/org/navbar.js"}}"#,
            &overrides,
        );
        let mut composed: Vec<(String, String)> = Vec::new();
        for map in [&first, &second] {
            for (k, v) in map["imports"].as_object().unwrap() {
                let target = composed_through(&composed, v.as_str().unwrap());
                composed.push((k.clone(), target));
            }
        }
        let navbar = composed
            .iter()
            .rev()
            .find(|(k, _)| k == "@org/navbar")
            .unwrap();
        assert_eq!(navbar.1, u, "{composed:?}");
        // The catch-all is the first map's last key, after the ticket's URL
        // mapped to itself.
        let keys: Vec<&String> = first["imports"].as_object().unwrap().keys().collect();
        assert_eq!(keys.last().unwrap().as_str(), "/__stamp/o/https/cdn.test/");
        assert_eq!(first["imports"][&u], u.as_str());
    }

    #[test]
    fn scopes_that_cover_a_cdn_module_are_copied_to_its_mirror_path() {
        // As @jspm/generator writes a map: dependencies in a scope for the CDN.
        let overrides = set(&[(
            "htm/preact",
            "https://ga.jspm.test/npm:htm@3.1.1/preact/index.module.js",
        )]);
        let out = merged(
            r#"{"imports":{"htm/preact":"https://ga.jspm.test/npm:htm@3.1.1/preact/index.module.js"},
                "scopes":{"https://ga.jspm.test/":{"htm":"https://ga.jspm.test/npm:htm@3.1.1/dist/htm.module.js"},
                          "https://other.test/":{"x":"https://other.test/x.js"}}}"#,
            &overrides,
        );
        let scopes = out["scopes"].as_object().unwrap();
        assert_eq!(
            scopes["/__stamp/o/https/ga.jspm.test/"]["htm"],
            "https://ga.jspm.test/npm:htm@3.1.1/dist/htm.module.js"
        );
        assert!(
            !scopes.contains_key("/__stamp/o/https/other.test/"),
            "{out}"
        );
        // A scope kept per package covers only that package's modules.
        let out = merged(
            r#"{"scopes":{"https://ga.jspm.test/npm:htm@3.1.1/":{"htm":"./dist/htm.module.js"},
                          "https://ga.jspm.test/npm:preact@10.0.0/":{"preact":"./p.js"}}}"#,
            &overrides,
        );
        let scopes = out["scopes"].as_object().unwrap();
        assert!(scopes.contains_key("/__stamp/o/https/ga.jspm.test/npm:htm@3.1.1/"));
        assert!(!scopes.contains_key("/__stamp/o/https/ga.jspm.test/npm:preact@10.0.0/"));
    }

    #[test]
    fn es_module_shims_maps_get_absolute_ticket_urls() {
        let overrides = set(&[("@app/greet", "/apps/greet.js")]);
        let text = merge_as(
            r#"{"imports":{"@app/greet":"/apps/greet.js"}}"#,
            &overrides,
            &page(),
            MAX,
            Urls::Absolute,
        )
        .unwrap();
        let out: Value = serde_json::from_str(&text).unwrap();
        let u = format!("https://shop.example{}", overrides["@app/greet"].url());
        assert_eq!(out["imports"]["@app/greet"], u.as_str());
        // The same string in every map, whatever its base: es-module-shims 1
        // accepts a redefinition only when it is identical.
        let ext = merge_external(
            r#"{"imports":{"@app/greet":"../apps/greet.js"}}"#,
            &overrides,
            &Url::parse("https://shop.example/maps/m.json").unwrap(),
            &page(),
            MAX,
            Urls::Absolute,
        )
        .unwrap();
        let ext: Value = serde_json::from_str(&ext).unwrap();
        assert_eq!(ext["imports"]["@app/greet"], u.as_str());
    }

    #[test]
    fn only_the_first_map_of_a_type_gets_the_proxys_own_keys() {
        let overrides = set(&[
            ("@app/greet", "/apps/greet.js"),
            ("https://cdn.test/w.js", "https://cdn.test/w.js"),
        ]);
        let later = MergeAs {
            urls: Urls::Paths,
            first: false,
        };
        // A later map: its own entries are rewritten, nothing is added.
        let text = merge_as(
            r#"{"imports":{"@app/greet":"/old/greet.js","w":"https://cdn.test/w.js","x":"/x.js"}}"#,
            &overrides,
            &page(),
            MAX,
            later,
        )
        .unwrap();
        let out: Value = serde_json::from_str(&text).unwrap();
        let keys: Vec<&String> = out["imports"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["@app/greet", "w", "x"], "{out}");
        assert_eq!(out["imports"]["@app/greet"], overrides["@app/greet"].url());
        assert_eq!(
            out["imports"]["w"],
            overrides["https://cdn.test/w.js"].url()
        );
        // The first: the ticket's specifiers and the mirror routes too.
        let text = merge_as(
            r#"{"imports":{"x":"/x.js"}}"#,
            &overrides,
            &page(),
            MAX,
            Urls::Paths,
        )
        .unwrap();
        let out: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(out["imports"]["@app/greet"], overrides["@app/greet"].url());
        assert_eq!(
            out["imports"]["/__stamp/o/https/cdn.test/"],
            "https://cdn.test/"
        );
    }

    #[test]
    fn es_module_shims_maps_get_absolute_keys_the_same_in_every_map() {
        // es-module-shims 1 compares a key's earlier value with the later
        // map's text for the key as resolved: only an absolute key with an
        // absolute value compares equal, so a path key would reject the map.
        let overrides = set(&[("/apps/greet.js", "/apps/greet.js")]);
        let u = format!("https://shop.example{}", overrides["/apps/greet.js"].url());
        for first in [true, false] {
            let text = merge_as(
                r#"{"imports":{"/apps/greet.js":"/apps/greet.js"}}"#,
                &overrides,
                &page(),
                MAX,
                MergeAs {
                    urls: Urls::Absolute,
                    first,
                },
            )
            .unwrap();
            let out: Value = serde_json::from_str(&text).unwrap();
            let imports = out["imports"].as_object().unwrap();
            if first {
                assert_eq!(imports.len(), 1, "{out}");
                assert_eq!(imports["https://shop.example/apps/greet.js"], u.as_str());
            } else {
                assert_eq!(imports["/apps/greet.js"], u.as_str(), "{out}");
            }
        }
    }

    #[test]
    fn replaces_an_existing_import_in_place() {
        let out = merged(
            r#"{"imports":{"a":"/a.js","/src/lib/greet.js":"/src/lib/greet.js","z":"/z.js"}}"#,
            &greet(),
        );
        let keys: Vec<&String> = out["imports"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["a", "/src/lib/greet.js", "z"]);
        assert_eq!(out["imports"]["/src/lib/greet.js"], greet_url());
        assert_eq!(out["imports"]["a"], "/a.js");
    }

    #[test]
    fn appends_to_imports_and_creates_them_when_missing() {
        let out = merged(r#"{"imports":{"a":"/a.js"}}"#, &greet());
        let keys: Vec<&String> = out["imports"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["a", "/src/lib/greet.js"]);

        let out = merged(r#"{"scopes":{},"x-vendor":[1,2]}"#, &greet());
        assert_eq!(out["imports"]["/src/lib/greet.js"], greet_url());
        assert_eq!(out["x-vendor"], serde_json::json!([1, 2]));
    }

    #[test]
    fn bare_alias_pointing_at_the_module_is_patched() {
        let out = merged(
            r#"{"imports":{"lib/greet":"/src/lib/greet.js","other":"/src/lib/other.js"}}"#,
            &greet(),
        );
        assert_eq!(out["imports"]["lib/greet"], greet_url());
        assert_eq!(out["imports"]["other"], "/src/lib/other.js");
    }

    #[test]
    fn bare_specifier_override_patches_its_key_and_aliases() {
        let overrides = set(&[("@shop/cart", "/assets/cart-1a2b.js")]);
        let url = module("/assets/cart-1a2b.js").url();
        let out = merged(
            r#"{"imports":{"@shop/cart":"/assets/cart-1a2b.js","cart":"./../assets/cart-1a2b.js"}}"#,
            &overrides,
        );
        assert_eq!(out["imports"]["@shop/cart"], url);
        assert_eq!(out["imports"]["cart"], url);
    }

    #[test]
    fn prefix_alias_gets_a_specific_entry() {
        let out = merged(
            r#"{"imports":{"lib/":"/src/lib/","/src/":"/src/"},"scopes":{"/admin/":{"v/":"https://shop.example/src/"}}}"#,
            &greet(),
        );
        let imports = out["imports"].as_object().unwrap();
        assert_eq!(imports["lib/"], "/src/lib/");
        assert_eq!(imports["lib/greet.js"], greet_url());
        assert_eq!(imports["/src/"], "/src/");
        // `/src/` + `lib/greet.js` is the override's own key, already set.
        assert_eq!(imports["/src/lib/greet.js"], greet_url());
        assert_eq!(imports.len(), 4);
        assert_eq!(out["scopes"]["/admin/"]["v/lib/greet.js"], greet_url());
    }

    #[test]
    fn prefix_alias_with_existing_specific_key_is_set_not_duplicated() {
        let out = merged(
            r#"{"imports":{"lib/greet.js":"/old.js","lib/":"/src/lib/"}}"#,
            &greet(),
        );
        let keys: Vec<&String> = out["imports"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["lib/greet.js", "lib/", "/src/lib/greet.js"]);
        assert_eq!(out["imports"]["lib/greet.js"], greet_url());
    }

    #[test]
    fn scope_exact_key_and_prefix_shadow_are_patched() {
        let out = merged(
            r#"{"imports":{},"scopes":{
                "/a/":{"/src/lib/greet.js":"/src/lib/greet-old.js"},
                "/b/":{"/src/lib/":"/legacy/lib/"},
                "/c/":{"/other/":"/x/"},
                "/d/":{"./../src/lib/greet.js":"/v1.js","/src/":"/v2/"}
            }}"#,
            &greet(),
        );
        let scopes = &out["scopes"];
        assert_eq!(scopes["/a/"]["/src/lib/greet.js"], greet_url());
        assert_eq!(scopes["/b/"]["/src/lib/"], "/legacy/lib/");
        assert_eq!(scopes["/b/"]["/src/lib/greet.js"], greet_url());
        assert_eq!(scopes["/c/"].as_object().unwrap().len(), 1);
        // The differently written exact key already wins over the prefix.
        assert_eq!(scopes["/d/"]["./../src/lib/greet.js"], greet_url());
        assert_eq!(scopes["/d/"].as_object().unwrap().len(), 2);
    }

    #[test]
    fn scope_shadowing_a_bare_specifier_is_patched() {
        let overrides = set(&[("@shop/cart", "/assets/cart-1a2b.js")]);
        let url = module("/assets/cart-1a2b.js").url();
        let out = merged(
            r#"{"scopes":{
                "/a/":{"@shop/cart":"/assets/cart-old.js"},
                "/b/":{"@shop/":"/legacy/shop/"},
                "/c/":{"@other/":"/legacy/other/","/assets/":"/old-assets/"}
            }}"#,
            &overrides,
        );
        let scopes = &out["scopes"];
        assert_eq!(scopes["/a/"]["@shop/cart"], url);
        assert_eq!(scopes["/b/"]["@shop/cart"], url);
        assert_eq!(scopes["/b/"]["@shop/"], "/legacy/shop/");
        assert_eq!(scopes["/c/"].as_object().unwrap().len(), 2);
    }

    #[test]
    fn integrity_entry_is_replaced() {
        let out = merged(
            r#"{"imports":{},"integrity":{"/src/lib/greet.js":"sha384-old","./../src/lib/greet.js":"sha384-old2","/src/x.js":"sha384-x"}}"#,
            &greet(),
        );
        let integrity = out["integrity"].as_object().unwrap();
        let keys: Vec<&String> = integrity.keys().collect();
        assert_eq!(
            keys,
            ["/src/x.js"],
            "production's digests of the module go, none is added"
        );

        let out = merged(r#"{"imports":{}}"#, &greet());
        assert!(out.get("integrity").is_none());
    }

    #[test]
    fn relative_and_absolute_same_origin_keys_are_recognised() {
        let out = merged(
            r#"{"imports":{
                "../src/lib/greet.js":"/a.js",
                "https://shop.example/src/lib/greet.js":"/b.js",
                "https://SHOP.example:443/src/lib/greet.js":"/c.js",
                "x":"https://shop.example/src/lib/greet.js",
                "y":"/src/lib/greet.js?v=2"
            }}"#,
            &greet(),
        );
        let imports = &out["imports"];
        assert_eq!(imports["../src/lib/greet.js"], greet_url());
        assert_eq!(
            imports["https://shop.example/src/lib/greet.js"],
            greet_url()
        );
        assert_eq!(
            imports["https://SHOP.example:443/src/lib/greet.js"],
            greet_url()
        );
        assert_eq!(imports["x"], greet_url());
        // An address that busts a cache names production's file all the
        // same, as a `src` does: the ticket's.
        assert_eq!(imports["y"], greet_url());
        // A key with a query is another URL, hence another module.
        let out = merged(
            r#"{"imports":{"/src/lib/greet.js?v=2":"/vendor/greet.js","z":"/src/lib/greet.js?v=2#x"}}"#,
            &greet(),
        );
        assert_eq!(out["imports"]["/src/lib/greet.js?v=2"], "/vendor/greet.js");
        assert_eq!(out["imports"]["z"], greet_url());
        // In a scope as well.
        let out = merged(
            r#"{"imports":{},"scopes":{"/src/":{"g":"/src/lib/greet.js?v=9"}}}"#,
            &greet(),
        );
        assert_eq!(out["scopes"]["/src/"]["g"], greet_url());
        // Production's digest of that URL would refuse the ticket's body.
        let out = merged(
            r#"{"imports":{},"integrity":{"/src/lib/greet.js?v=2":"sha384-p","/src/x.js?v=1":"sha384-x"}}"#,
            &greet(),
        );
        let keys: Vec<&String> = out["integrity"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["/src/x.js?v=1"]);
    }

    #[test]
    fn cross_origin_urls_are_not_the_same_path() {
        let original = r#"{"imports":{
            "https://cdn.example/src/lib/greet.js":"/a.js",
            "x":"https://cdn.example/src/lib/greet.js",
            "y":"//cdn.example/src/lib/greet.js",
            "z":"http://shop.example/src/lib/greet.js",
            "p/":"https://cdn.example/src/lib/"
        },"scopes":{"/s/":{"https://cdn.example/src/lib/":"/q/"}}}"#;
        let out = merged(original, &greet());
        let imports = out["imports"].as_object().unwrap();
        assert_eq!(imports["https://cdn.example/src/lib/greet.js"], "/a.js");
        assert_eq!(imports["x"], "https://cdn.example/src/lib/greet.js");
        assert_eq!(imports["y"], "//cdn.example/src/lib/greet.js");
        assert_eq!(imports["z"], "http://shop.example/src/lib/greet.js");
        assert!(!imports.contains_key("p/greet.js"));
        assert_eq!(out["scopes"]["/s/"].as_object().unwrap().len(), 1);
    }

    #[test]
    fn a_module_on_another_origin_is_overridden_with_its_mirror() {
        let cdn = "https://cdn.example/lib/greet.js";
        let overrides = set(&[("@shop/greet", cdn)]);
        let url = module(cdn).url();
        assert_eq!(
            url.split('?').next(),
            Some("/__stamp/o/https/cdn.example/lib/greet.js")
        );
        let out = merged(
            r#"{"imports":{"@shop/greet":"https://cdn.example/lib/greet.js","alias":"https://cdn.example/lib/greet.js","cdn/":"https://cdn.example/lib/"}}"#,
            &overrides,
        );
        let imports = out["imports"].as_object().unwrap();
        assert_eq!(imports["@shop/greet"], url);
        assert_eq!(imports["alias"], url);
        assert_eq!(imports["cdn/greet.js"], url);
        // A relative import of it from another ticket module, and of any
        // untouched sibling (production's own instance, on its own origin).
        assert_eq!(imports["/__stamp/o/https/cdn.example/lib/greet.js"], url);
        assert_eq!(
            imports["/__stamp/o/https/cdn.example/"],
            "https://cdn.example/"
        );
        let fresh: Value = serde_json::from_str(&fresh(&overrides)).unwrap();
        assert_eq!(
            fresh["imports"]["/__stamp/o/https/cdn.example/"],
            "https://cdn.example/"
        );
        assert_eq!(fresh["imports"]["@shop/greet"], url);
    }

    #[test]
    fn entry_patterns_are_no_map_entries() {
        let overrides = set(&[("/assets/index-[hash:8].js", "/assets/index-Ab12Cd34.js")]);
        let out = merged(r#"{"imports":{}}"#, &overrides);
        assert_eq!(out["imports"].as_object().unwrap().len(), 0, "{out}");
        let fresh: Value = serde_json::from_str(&fresh(&overrides)).unwrap();
        assert_eq!(fresh["imports"].as_object().unwrap().len(), 0);
    }

    #[test]
    fn an_external_map_is_made_absolute_against_its_own_url() {
        let page = Url::parse("https://shop.example/checkout/").unwrap();
        let map_url = Url::parse("https://cdn.example/maps/app.json").unwrap();
        let original = r#"{"imports":{
            "@shop/greet":"../lib/greet.js",
            "./local":"./x.js",
            "same":"https://shop.example/src/a.js?v=1",
            "bare":"not-a-url"
        },"scopes":{"../lib/":{"dep":"./dep.js"}},"integrity":{"../lib/x.js":"sha384-x"}}"#;
        let overrides = set(&[("@shop/greet", "https://cdn.example/lib/greet.js")]);
        let text = merge_external(original, &overrides, &map_url, &page, MAX, Urls::Paths).unwrap();
        let out: Value = serde_json::from_str(&text).unwrap();
        let url = module("https://cdn.example/lib/greet.js").url();
        assert_eq!(out["imports"]["@shop/greet"], url);
        assert_eq!(
            out["imports"]["https://cdn.example/maps/local"],
            "https://cdn.example/maps/x.js"
        );
        assert_eq!(out["imports"]["same"], "/src/a.js?v=1");
        assert_eq!(out["imports"]["bare"], "not-a-url");
        assert_eq!(
            out["scopes"]["https://cdn.example/lib/"]["dep"],
            "https://cdn.example/maps/dep.js"
        );
        assert_eq!(out["integrity"]["https://cdn.example/lib/x.js"], "sha384-x");
        assert!(merge_external("[1]", &overrides, &map_url, &page, MAX, Urls::Paths).is_err());
        assert!(merge_external("{", &overrides, &map_url, &page, MAX, Urls::Paths).is_err());
    }

    #[test]
    fn hostile_specifiers_are_escaped_and_round_trip() {
        let hostile = [
            "</script><script>alert(1)</script>",
            "line\u{2028}sep\u{2029}",
            "&amp;<!--",
        ];
        let overrides: OverrideSet = hostile
            .iter()
            .map(|s| (s.to_string(), module("/src/lib/greet.js")))
            .collect();
        let original = r#"{"imports":{"k>":"/v&.js"},"note":"</SCRIPT>"}"#;
        for text in [
            merge(original, &overrides, &page(), MAX).unwrap(),
            fresh(&overrides),
        ] {
            assert!(
                !text.contains(['<', '>', '&', '\u{2028}', '\u{2029}']),
                "{text}"
            );
            let back: Value = serde_json::from_str(&text).unwrap();
            for s in hostile {
                assert_eq!(back["imports"][s], greet_url());
            }
        }
        let back: Value =
            serde_json::from_str(&merge(original, &overrides, &page(), MAX).unwrap()).unwrap();
        assert_eq!(back["imports"]["k>"], "/v&.js");
        assert_eq!(back["note"], "</SCRIPT>");
    }

    #[test]
    fn escape_for_script_uses_json_escapes() {
        assert_eq!(
            escape_for_script("\"<a&b>\u{2028}\u{2029}\""),
            r#""\u003ca\u0026b\u003e\u2028\u2029""#
        );
        // Beyond the BMP: a surrogate pair, as JSON writes it.
        let escaped = escape_for_script("{\"表\":\"/é/😀.js\"}");
        assert!(escaped.is_ascii(), "{escaped}");
        assert_eq!(escaped, r#"{"\u8868":"/\u00e9/\ud83d\ude00.js"}"#);
        let back: serde_json::Value = serde_json::from_str(&escaped).unwrap();
        assert_eq!(back["表"], "/é/😀.js");
    }

    #[test]
    fn fresh_lists_every_override() {
        let overrides = set(&[
            ("/src/lib/greet.js", "/src/lib/greet.js"),
            ("@shop/cart", "/assets/cart.js"),
        ]);
        let back: Value = serde_json::from_str(&fresh(&overrides)).unwrap();
        assert_eq!(back.as_object().unwrap().len(), 1);
        assert_eq!(back["imports"]["/src/lib/greet.js"], greet_url());
        assert_eq!(
            back["imports"]["@shop/cart"],
            module("/assets/cart.js").url()
        );
    }

    #[test]
    fn csp_hash_source_is_quoted_sha256() {
        // sha256("") is well known.
        assert_eq!(
            csp_hash_source(""),
            "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='"
        );
    }

    #[test]
    fn bad_input_gives_the_right_error() {
        let err = |s: &str| merge(s, &greet(), &page(), MAX).unwrap_err();
        assert!(matches!(err("{"), MergeError::InvalidJson(_)));
        assert!(matches!(err("[]"), MergeError::NotAnObject));
        assert!(matches!(err("\"x\""), MergeError::NotAnObject));
        assert!(matches!(
            err(r#"{"imports":[]}"#),
            MergeError::BadShape("imports must be an object")
        ));
        assert!(matches!(
            err(r#"{"imports":{"a":1}}"#),
            MergeError::BadShape(_)
        ));
        assert!(matches!(err(r#"{"scopes":[]}"#), MergeError::BadShape(_)));
        assert!(matches!(
            err(r#"{"scopes":{"/a/":"x"}}"#),
            MergeError::BadShape(_)
        ));
        assert!(matches!(
            err(r#"{"scopes":{"/a/":{"b":null}}}"#),
            MergeError::BadShape(_)
        ));
        assert!(matches!(
            err(r#"{"integrity":{"a":false}}"#),
            MergeError::BadShape(_)
        ));
        let big = format!(r#"{{"imports":{{"a":"{}"}}}}"#, "x".repeat(100));
        assert!(matches!(
            merge(&big, &greet(), &page(), 50),
            Err(MergeError::TooLarge { limit: 50 })
        ));
    }

    #[test]
    fn whitespace_only_original_is_an_empty_map() {
        for original in ["", "  \n\t ", "\n {\"imports\":{}} \n"] {
            let out = merged(original, &greet());
            assert_eq!(out["imports"]["/src/lib/greet.js"], greet_url());
        }
    }

    #[test]
    fn the_plain_path_shortcut_agrees_with_the_url_parser() {
        let r = Resolver { page: &page() };
        for s in [
            "/src/lib/greet.js",
            "/src/",
            "/a.b/c~d-e_f.js",
            "/src/./x.js",
            "/src/../x.js",
            "/src/%41.js",
            "/src/a b.js",
            "//cdn.example/x.js",
            "/src/x.js?v=1",
            "/src/x.js#f",
            "/src/..",
            "/src\\x.js",
            "/ünï.js",
        ] {
            let parsed = r
                .resolve(s)
                .and_then(|u| u.query().is_none().then(|| location_of(&u, &page())));
            assert_eq!(r.location(s), parsed, "{s}");
        }
    }

    #[test]
    fn a_cached_merge_is_the_merge_and_is_keyed_by_page_and_map() {
        let cache = MergeCache::default();
        let map = r#"{"imports":{"greet":"./lib/greet.js"}}"#;
        let overrides = set(&[("/checkout/lib/greet.js", "/checkout/lib/greet.js")]);
        let first = cache
            .merge(map, &overrides, &page(), MAX, Urls::Paths)
            .unwrap();
        assert_eq!(&*first, merge(map, &overrides, &page(), MAX).unwrap());
        let again = cache
            .merge(map, &overrides, &page(), MAX, Urls::Paths)
            .unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "the second merge is served from the cache"
        );
        // Another directory resolves `./lib/greet.js` elsewhere: not a hit.
        let other = Url::parse("https://shop.example/account/").unwrap();
        let elsewhere = cache
            .merge(map, &overrides, &other, MAX, Urls::Paths)
            .unwrap();
        assert_eq!(&*elsewhere, merge(map, &overrides, &other, MAX).unwrap());
        assert_ne!(&*elsewhere, &*first);
        // Errors are not remembered as successes.
        assert!(cache
            .merge("[1]", &overrides, &page(), MAX, Urls::Paths)
            .is_err());
        assert!(cache
            .merge("[1]", &overrides, &page(), MAX, Urls::Paths)
            .is_err());
    }

    #[test]
    fn where_a_map_loads_the_modules_from_another_origin_is_remembered_by_map_and_base() {
        let cache = MergeCache::default();
        let map = r#"{"imports":{"@org/nav":"https://cdn.test/org/nav.js","a":"./a.js"}}"#;
        let overrides = set(&[("@org/nav", "/nav.js"), ("a", "/checkout/a.js")]);
        let found = cache.elsewhere(map, &overrides, &page());
        assert_eq!(
            *found,
            [(
                "@org/nav".to_string(),
                "/nav.js".to_string(),
                "https://cdn.test/org/nav.js".to_string()
            )]
        );
        assert!(Arc::ptr_eq(
            &found,
            &cache.elsewhere(map, &overrides, &page())
        ));
        // A base on the CDN: the module is on the page's origin there.
        let cdn = Url::parse("https://cdn.test/").unwrap();
        assert!(cache.elsewhere(map, &overrides, &cdn).is_empty());
        assert!(cache.elsewhere("[1]", &overrides, &page()).is_empty());
        assert!(cache.elsewhere("{", &overrides, &page()).is_empty());
        for i in 0..(MergeCache::MAX_ENTRIES * 3) {
            cache.elsewhere(
                &format!(r#"{{"imports":{{"x{i}":"/x.js"}}}}"#),
                &overrides,
                &page(),
            );
            assert!(cache.elsewhere.lock().len() <= MergeCache::MAX_ENTRIES);
        }
    }

    #[test]
    fn the_cache_stays_bounded() {
        let cache = MergeCache::default();
        let overrides = greet();
        for i in 0..(MergeCache::MAX_ENTRIES * 3) {
            let map = format!(r#"{{"imports":{{"x{i}":"/x.js"}}}}"#);
            cache
                .merge(&map, &overrides, &page(), MAX, Urls::Paths)
                .unwrap();
            assert!(cache.entries.lock().len() <= MergeCache::MAX_ENTRIES);
        }
        let huge = format!(
            r#"{{"imports":{{"x":"/{}.js"}}}}"#,
            "a".repeat(MergeCache::MAX_MAP)
        );
        cache
            .merge(&huge, &overrides, &page(), 1 << 20, Urls::Paths)
            .unwrap();
        assert!(cache
            .entries
            .lock()
            .values()
            .all(|c| c.map.len() <= MergeCache::MAX_MAP));
    }

    #[test]
    fn the_batch_merge_equals_applying_overrides_one_by_one() {
        // Deterministic pseudo-random maps and override sets over a small
        // vocabulary, so that aliases, prefixes, scopes and integrity collide.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let keys = [
            "lib/a",
            "lib/",
            "/src/lib/a.js",
            "./lib/b.js",
            "/src/lib/",
            "app",
            "lib/b",
            "/src/x.js",
        ];
        let addresses = [
            "/src/lib/a.js",
            "/src/lib/",
            "./lib/b.js",
            "/src/lib/b.js",
            "/src/x.js",
            "https://cdn.example/a.js",
            "/src/",
        ];
        let specs = [
            "/src/lib/a.js",
            "lib/a",
            "/src/lib/b.js",
            "app",
            "/src/x.js",
        ];
        let paths = [
            "/src/lib/a.js",
            "/src/lib/b.js",
            "/src/x.js",
            "/src/lib/c.js",
        ];
        let page = Url::parse("https://shop.example/src/index.html").unwrap();
        let section = |next: &mut dyn FnMut(usize) -> usize| {
            let mut m = Map::new();
            for _ in 0..next(5) {
                m.insert(
                    keys[next(keys.len())].into(),
                    Value::String(addresses[next(addresses.len())].into()),
                );
            }
            m
        };
        let mut compared = 0;
        for case in 0..400 {
            let mut root = Map::new();
            root.insert("imports".into(), Value::Object(section(&mut next)));
            if next(2) == 0 {
                let mut scopes = Map::new();
                scopes.insert("/src/lib/".into(), Value::Object(section(&mut next)));
                root.insert("scopes".into(), Value::Object(scopes));
            }
            if next(2) == 0 {
                let mut integrity = Map::new();
                integrity.insert(
                    addresses[next(addresses.len())].into(),
                    Value::String("sha384-x".into()),
                );
                root.insert("integrity".into(), Value::Object(integrity));
            }
            // Distinct production paths (two specifiers for one module path
            // have no single right answer).
            let mut overrides = OverrideSet::new();
            let mut used = std::collections::HashSet::new();
            for _ in 0..1 + next(3) {
                let path = paths[next(paths.len())];
                if used.insert(path) {
                    overrides.insert(specs[next(specs.len())].into(), module(path));
                }
            }
            let original = Value::Object(root).to_string();
            let want = sequential::merge(&original, &overrides, &page);
            // The one intended difference: an override's own specifier keeps
            // its own URL even when a prefix entry would generate that key.
            let clash = want
                .get("imports")
                .and_then(Value::as_object)
                .is_some_and(|imports| {
                    overrides.iter().any(|(spec, m)| {
                        imports.get(spec).and_then(Value::as_str) != Some(m.url().as_str())
                    })
                });
            if clash {
                continue;
            }
            compared += 1;
            let got: Map<String, Value> =
                serde_json::from_str(&merge(&original, &overrides, &page, MAX).unwrap()).unwrap();
            assert_eq!(
                Value::Object(got),
                Value::Object(want),
                "case {case}: {original} with {overrides:?}"
            );
        }
        assert!(compared > 300, "only {compared} of 400 cases were compared");
    }

    #[test]
    fn a_thousand_overrides_on_a_thousand_entries_merge_quickly_enough_to_finish() {
        // Not a timing assertion: the quadratic version took half a second
        // here in release; this checks the result, the bench checks the time.
        let imports: Map<String, Value> = (0..1000)
            .map(|i| {
                (
                    format!("lib/m{i}"),
                    Value::String(format!("/src/lib/m{i}.js")),
                )
            })
            .collect();
        let original = serde_json::json!({ "imports": imports }).to_string();
        let overrides: OverrideSet = (0..1000)
            .map(|i| {
                (
                    format!("/src/lib/m{i}.js"),
                    module(&format!("/src/lib/m{i}.js")),
                )
            })
            .collect();
        let merged: Value =
            serde_json::from_str(&merge(&original, &overrides, &page(), 1 << 24).unwrap()).unwrap();
        for i in [0, 500, 999] {
            let url = module(&format!("/src/lib/m{i}.js")).url();
            assert_eq!(merged["imports"][format!("lib/m{i}")], url.as_str());
            assert_eq!(merged["imports"][format!("/src/lib/m{i}.js")], url.as_str());
        }
    }

    /// The original one-override-at-a-time merge, kept as the oracle that the
    /// batch merge is checked against.
    mod sequential {
        use super::super::*;

        pub fn merge(
            original: &str,
            overrides: &OverrideSet,
            page_url: &Url,
        ) -> Map<String, Value> {
            let mut root: Map<String, Value> = serde_json::from_str(original).unwrap();
            let resolver = Resolver { page: page_url };
            for (spec, module) in overrides {
                let target = Target::new(spec, module, &resolver, Urls::Paths);
                apply(&mut root, &target, &resolver);
            }
            root
        }

        pub fn apply(root: &mut Map<String, Value>, target: &Target<'_>, resolver: &Resolver<'_>) {
            let imports = root
                .entry("imports")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(imports) = imports {
                imports.insert(target.spec.to_owned(), Value::String(target.url.clone()));
                // Another spelling of the same URL would otherwise still win for
                // whichever spelling the browser keeps after normalising keys.
                for (key, value) in imports.iter_mut() {
                    if key != target.spec && target.is_referred_to_by(key, resolver) {
                        *value = Value::String(target.url.clone());
                    }
                }
                redirect_routes(imports, target, resolver);
            }

            if let Some(Value::Object(scopes)) = root.get_mut("scopes") {
                for scope in scopes.values_mut() {
                    if let Value::Object(scope) = scope {
                        redirect_routes(scope, target, resolver);
                        unshadow(scope, target, resolver);
                    }
                }
            }

            if let Some(Value::Object(integrity)) = root.get_mut("integrity") {
                // Production's digest would make the browser refuse the ticket's body.
                integrity.retain(|key, _| !target.is_addressed_by(key, resolver));
            }
        }

        /// Points every entry whose result is the production module at the ticket's
        /// URL. A prefix entry cannot be edited without moving its siblings too, so it
        /// gets a more specific entry for just this module, which browsers prefer.
        fn redirect_routes(
            map: &mut Map<String, Value>,
            target: &Target<'_>,
            resolver: &Resolver<'_>,
        ) {
            let mut specific = Vec::new();
            for (key, value) in map.iter_mut() {
                let Value::String(address) = value else {
                    continue;
                };
                if target.is_addressed_by(address, resolver) {
                    *value = Value::String(target.url.clone());
                } else if key.ends_with('/') && address.ends_with('/') {
                    if let Some(rest) = target.rest_below(address, resolver) {
                        specific.push(format!("{key}{rest}"));
                    }
                }
            }
            for key in specific {
                map.insert(key, Value::String(target.url.clone()));
            }
        }

        /// A scope is consulted before `imports`, so a scope entry that matches the
        /// override's specifier would hide the override for every module in it.
        fn unshadow(scope: &mut Map<String, Value>, target: &Target<'_>, resolver: &Resolver<'_>) {
            let mut has_exact = false;
            let mut covered_by_prefix = false;
            for (key, value) in scope.iter_mut() {
                if key == target.spec || target.is_referred_to_by(key, resolver) {
                    *value = Value::String(target.url.clone());
                    has_exact = true;
                } else if key.ends_with('/') {
                    let covers = if target.is_path_spec {
                        target.rest_below(key, resolver).is_some()
                    } else {
                        resolver.resolve(key).is_none() && target.spec.starts_with(key.as_str())
                    };
                    covered_by_prefix |= covers;
                }
            }
            if covered_by_prefix && !has_exact {
                scope.insert(target.spec.to_owned(), Value::String(target.url.clone()));
            }
        }
    }

    #[test]
    fn same_origin_agrees_with_url_origin() {
        let urls = [
            "http://shop.test/a.js",
            "http://SHOP.test:80/b.js",
            "https://shop.test/a.js",
            "https://shop.test:443/a.js",
            "http://shop.test:8080/a.js",
            "http://cdn.test/a.js",
            "http://127.0.0.1/a.js",
            "http://[::1]/a.js",
            "file:///a.js",
            "data:text/javascript,1",
            "blob:http://shop.test/0b5e",
            "ws://shop.test/a",
            "ftp://shop.test/a.js",
        ];
        for a in urls {
            for b in urls {
                let (ua, ub) = (Url::parse(a).unwrap(), Url::parse(b).unwrap());
                assert_eq!(
                    same_origin(&ua, &ub),
                    ua.origin() == ub.origin(),
                    "{a} vs {b}"
                );
            }
        }
    }
}
