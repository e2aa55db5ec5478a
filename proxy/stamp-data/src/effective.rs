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

    /// The module this variant serves at a proxy path named without a
    /// `?__ts=` (chunks and stylesheets a bundle loads by plain URL).
    pub fn served_at(&self, path: &str) -> Option<&ModuleRef> {
        if path.starts_with(assets::MIRROR_PREFIX) {
            self.by_mirror_path.get(path)
        } else {
            self.by_path.get(path)
        }
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
