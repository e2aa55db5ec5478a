//! The overrides of one page variant (a ticket's view over the production
//! overlay, or the overlay alone), with what the rewriter needs ready-made:
//! what the request path hands every page rewrite. Pure data: the store,
//! the snapshot and Pingora are above it.

use std::collections::HashMap;

use crate::importmap;
use stamp_model::assets::{self, EntryPattern};
use stamp_model::ticket::{Hash, ModuleRef, OverrideSet};

/// The overrides that apply to one page variant, with what the rewriter needs
/// ready-made so that no page pays for it.
#[derive(Debug)]
pub struct Effective {
    /// Specifier → module: the production overlay with the selected view on top.
    pub overrides: OverrideSet,
    /// The set's content address: names this variant in external map URLs.
    pub id: Hash,
    /// Production location (path, or URL on another origin) → module, for
    /// `<script src>`, modulepreload and stylesheet rewrites.
    pub by_path: HashMap<String, ModuleRef>,
    /// Mirror path → module, for the overrides on other origins: where a
    /// request of this variant that names the path without a `?__ts=`
    /// still gets the ticket's body (a local override is served at its own
    /// path, found in `by_path`). See [`Effective::served_at`].
    by_mirror_path: HashMap<String, ModuleRef>,
    /// Entry patterns (`/assets/index-[hash:8].js`) and the modules that
    /// replace whatever production file matches them.
    pub patterns: Vec<(EntryPattern, ModuleRef)>,
    /// Other origins this variant overrides modules on.
    pub remote_origins: Vec<String>,
    /// The import map inserted into a page without one (escaped for
    /// `<script>`) and its CSP hash source, `'sha256-…'`: made when a page
    /// first needs them, not for every open ticket.
    fresh: std::sync::OnceLock<(String, String)>,
    /// Pages' maps merged with these overrides.
    pub merges: importmap::MergeCache,
    /// The names of the files it replaces: made when a page first asks.
    names: std::sync::OnceLock<FileNames>,
}

/// The last path segments of what an [`Effective`] replaces (lower case),
/// for [`Effective::may_replace`].
#[derive(Debug, Default)]
struct FileNames {
    exact: std::collections::HashSet<String>,
    /// A pattern's name: before the placeholder, its length, after it.
    patterns: Vec<(String, usize, String)>,
    /// A location whose last segment is empty (it ends in `/`): any value
    /// may resolve to it.
    any: bool,
    /// Each hashed file on this origin with the pattern of its other
    /// versions (see [`Effective::sibling_at`]).
    siblings: Vec<(EntryPattern, ModuleRef)>,
}

impl FileNames {
    fn of(eff: &Effective) -> FileNames {
        let mut names = FileNames::default();
        for location in eff.by_path.keys() {
            let name = location.rsplit('/').next().unwrap_or_default();
            names.any |= name.is_empty();
            names.exact.insert(name.to_ascii_lowercase());
        }
        for m in eff.by_path.values() {
            // Every file that may be a bundler's build counts as one of
            // that name, whether or not its hash is one the proxy pairs.
            if let Some(p) = EntryPattern::hashed(&m.path) {
                names.siblings.push((p, m.clone()));
            }
        }
        for (pattern, _) in &eff.patterns {
            let (before, len, after) = pattern.file_name();
            names
                .patterns
                .push((before.to_ascii_lowercase(), len, after.to_ascii_lowercase()));
        }
        names
    }
}

impl Effective {
    pub fn new(overrides: OverrideSet) -> Effective {
        let by_path = overrides
            .values()
            .map(|m| (m.path.clone(), m.clone()))
            .collect();
        let by_mirror_path = overrides
            .values()
            .filter(|m| assets::is_remote(&m.path))
            .map(|m| (assets::serve_path(&m.path), m.clone()))
            .collect();
        let patterns = overrides
            .iter()
            .filter_map(|(spec, m)| EntryPattern::parse(spec).map(|p| (p, m.clone())))
            .collect();
        let mut remote_origins: Vec<String> = overrides
            .values()
            .filter_map(|m| assets::origin_of(&m.path).map(str::to_string))
            .collect();
        remote_origins.sort();
        remote_origins.dedup();
        Effective {
            id: stamp_model::ticket::set_id(&overrides),
            overrides,
            by_path,
            by_mirror_path,
            patterns,
            remote_origins,
            fresh: std::sync::OnceLock::new(),
            merges: importmap::MergeCache::default(),
            names: std::sync::OnceLock::new(),
        }
    }

    /// The module that replaces production's file at `location`: an exact
    /// override, else the entry pattern it matches.
    pub fn replacement(&self, location: &str) -> Option<&ModuleRef> {
        self.by_path.get(location).or_else(|| {
            self.patterns
                .iter()
                .find(|(p, _)| p.matches(location))
                .map(|(_, m)| m)
        })
    }

    /// Whether a `src` or `href` with this text (character references
    /// read) may name a file [`Effective::replacement`] replaces, wherever
    /// it is resolved: `false` only when it certainly does not. Asked of
    /// the file name alone, which resolving never changes when it is
    /// made of characters a URL path keeps as they are (no `:`, which
    /// may end a scheme: `https:app.js` is `app.js` on an https page) and
    /// is not a dot segment. Names compare in any case, and a name a pattern's
    /// placeholder could fill matches whatever fills it.
    pub fn may_replace(&self, value: &str) -> bool {
        let names = self.names.get_or_init(|| FileNames::of(self));
        if names.any {
            return true;
        }
        // The URL parser drops tabs and newlines anywhere, and controls and
        // spaces at either end.
        let value: String = value
            .chars()
            .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
            .collect();
        let value = value.trim_matches(|c: char| c <= ' ');
        let path = value.split(['?', '#']).next().unwrap_or_default();
        let name = path.rsplit(['/', '\\']).next().unwrap_or_default();
        let kept = |c: char| c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=@".contains(c);
        if name.is_empty() || name.bytes().all(|b| b == b'.') || !name.chars().all(kept) {
            return true;
        }
        let name = name.to_ascii_lowercase();
        names.exact.contains(&name)
            || names.patterns.iter().any(|(before, len, after)| {
                name.len() == before.len() + len + after.len()
                    && name.starts_with(before.as_str())
                    && name.ends_with(after.as_str())
            })
    }

    /// The module this variant serves at a proxy path named without a
    /// `?__ts=` (chunks and stylesheets a bundle loads by plain URL).
    pub fn served_at(&self, path: &str) -> Option<&ModuleRef> {
        if path.starts_with(assets::MIRROR_PREFIX) {
            self.by_mirror_path.get(path)
        } else {
            self.by_path.get(path)
        }
    }

    /// The module a ticket page gets at `path`, production's build of one of
    /// the ticket's hashed files under another hash (`/assets/lazy-Cx.js`
    /// for the ticket's `/assets/lazy-Bx.js`): the only file of the
    /// variant in that folder with that name around a hash of that length,
    /// when both hashes [`assets::looks_generated`]. `None` when two share
    /// it (Vite names many chunks `index`), whatever their hashes, or when
    /// the ticket has a file at `path` itself.
    pub fn sibling_at(&self, path: &str) -> Option<&ModuleRef> {
        if !path.starts_with('/') || self.by_path.contains_key(path) {
            return None;
        }
        let names = self.names.get_or_init(|| FileNames::of(self));
        let mut found = names
            .siblings
            .iter()
            .filter(|(p, _)| p.hash_in(path).is_some_and(assets::may_be_generated));
        let (pattern, first) = found.next()?;
        let both = pattern.hash_in(path).is_some_and(assets::looks_generated)
            && pattern
                .hash_in(&first.path)
                .is_some_and(assets::looks_generated);
        (both && found.next().is_none()).then_some(first)
    }

    /// The import map inserted into a page without one.
    pub fn fresh_map(&self) -> &str {
        &self.fresh().0
    }

    /// Its CSP hash source.
    pub fn fresh_hash(&self) -> &str {
        &self.fresh().1
    }

    fn fresh(&self) -> &(String, String) {
        self.fresh.get_or_init(|| {
            let map = importmap::fresh(&self.overrides);
            let hash = importmap::csp_hash_source(&map);
            (map, hash)
        })
    }

    pub fn len(&self) -> usize {
        self.overrides.len()
    }

    pub fn is_empty(&self) -> bool {
        self.overrides.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use stamp_model::ticket::ModuleRef;

    /// The variant of `paths`; an entry pattern's module sits at its
    /// pattern with a hash filled in.
    pub(crate) fn variant(paths: &[&str]) -> Effective {
        let mut set = OverrideSet::new();
        for p in paths {
            set.insert(
                p.to_string(),
                ModuleRef {
                    path: p.replace("[hash:8]", "Zz99Yy88"),
                    hash: Hash::of(p.as_bytes()),
                    size: 1,
                },
            );
        }
        Effective::new(set)
    }

    /// Production's build of a ticket's hashed file: the ticket's file of
    /// that folder, name and hash length, when it has only one.
    #[test]
    fn a_hashed_files_other_versions_are_its_siblings() {
        let eff = variant(&[
            "/assets/lazy-Bx12Cd34.js",
            "/assets/index-Ab12Cd34.js",
            "/assets/index-Ef56Gh78.js",
            "/assets/Counter.DZ1a2b3C.js",
            // A Rollup hash without a digit.
            "/assets/chunk-KqWzJhAb.js",
            // Two builds named `part`, one of them without a digit.
            "/assets/part-Ab12Cd34.js",
            "/assets/part-KqWzJhAb.js",
            "/assets/page-BuRqDqXz.js",
            "/charts/chart-Ab1Cd2Ef3.js",
            "/src/app.js",
            "https://cdn.example/x/lib-Ab12Cd34.js",
            // Names someone wrote, not a bundler's hashes.
            "/icons/icon-ArrowLeft.js",
            "/charts/chart-LineChart.js",
            "/pages/section-2-overview.js",
        ]);
        let at = |p: &str| eff.sibling_at(p).map(|m| m.path.clone());
        assert_eq!(
            at("/assets/lazy-Qq99Ww88.js").as_deref(),
            Some("/assets/lazy-Bx12Cd34.js")
        );
        assert_eq!(
            at("/assets/Counter.Zz11Yy22.js").as_deref(),
            Some("/assets/Counter.DZ1a2b3C.js")
        );
        for none in [
            // A hash without a digit, on either side: words look like that
            // too (`STATUS_ERR`, `zh-Hant-TW`), and a wrong pair would serve
            // another file's code.
            "/assets/lazy-BuRqDqXz.js",
            "/assets/chunk-Ab12Cd34.js",
            "/assets/page-CxYwQpLm.js",
            "/assets/chunk-XyZwQpLm.js",
            // Two of the ticket's files share the name, whatever their
            // hashes.
            "/assets/part-Qq99Ww88.js",
            // The ticket's own file.
            "/assets/lazy-Bx12Cd34.js",
            // Two of the ticket's files share the name.
            "/assets/index-Qq99Ww88.js",
            // Not a hash, another length, folder or suffix.
            "/assets/lazy-abcdefgh.js",
            "/assets/lazy-Qq99Ww8.js",
            "/other/lazy-Qq99Ww88.js",
            "/assets/lazy-Qq99Ww88.css",
            "/assets/lazy-Qq/9Ww88.js",
            "/src/app.js",
            "/x/lib-Qq99Ww88.js",
            "lazy-Qq99Ww88.js",
            // A hand-written name is no version of another.
            "/icons/icon-ArrowDown.js",
            "/charts/chart-AreaChart.js",
            "/pages/section-3-checkout.js",
            // Nor is a name whose "hash" is a word.
            "/assets/lazy-Overview.js",
        ] {
            assert_eq!(at(none), None, "{none}");
        }
    }
}
