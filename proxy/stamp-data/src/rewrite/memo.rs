//! Heads remembered: a page whose bytes up to its `<body …>` are the bytes
//! of a page already stamped for the same variant is not read again up to
//! there.
//!
//! What early exit sends for a page's bytes up to where it hands over
//! (just after the `<body>` start tag, see the parent module) is a
//! function of those bytes and of the [`RewriteSpec`] alone: the handlers
//! read nothing else (no clock, no randomness; the merge caches give the
//! answer a merge would). So is the page state the handlers leave there.
//! Most app servers send the same head on every view of a page, yet no
//! strong validator, so the page cache cannot serve it: here the first
//! view's head is kept (its input bytes, what went out for them, the page
//! state), and a later view of that variant whose first chunk begins with
//! exactly those bytes gets that output and state, and goes on from there
//! as the first view did: the tokenizer forwards, and lol_html is built
//! only if something after `<body>` must be read (it is then given the
//! kept bytes first, its output dropped, so it stands where it would).
//!
//! A head that changes on every view (a CSRF token in a `<meta>`, a
//! per-response nonce) never matches: it is read as before, and replaces
//! the one kept for its spec. Only a first chunk that holds the whole kept
//! head can match, so a page that streams its head is read as it comes.
//! Kept per variant (`Effective::heads`, gone with it), at most
//! [`MAX_ENTRIES`] heads of at most [`MAX_HEAD`] bytes each, and
//! [`MAX_ALL`] bytes for all variants together. Tested against the
//! whole-page rewriter byte for byte, pages sharing a head included
//! (`differential::remembered_heads_match_the_full_rewriter`, the fuzz
//! target `rewriter_early_exit`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use super::{RewriteSpec, State};
use crate::effective::Effective;

/// What a kept state's spec holds instead of its variant (which keeps the
/// head: holding it back would be a cycle, never freed).
static NO_VARIANT: LazyLock<Arc<Effective>> =
    LazyLock::new(|| Arc::new(Effective::new(Default::default())));

pub(super) fn no_variant() -> Arc<Effective> {
    NO_VARIANT.clone()
}

/// Heads kept per variant.
const MAX_ENTRIES: usize = 16;
/// The longest head kept (input bytes).
pub(super) const MAX_HEAD: usize = 32 * 1024;
/// Bytes of heads kept by every variant together.
const MAX_ALL: usize = 32 << 20;
/// What an entry costs beyond its bytes (its state, handles).
const PER_ENTRY: usize = 1024;

/// Bytes kept by every variant's heads now.
static HELD: AtomicUsize = AtomicUsize::new(0);

/// One variant's remembered heads.
#[derive(Default)]
pub struct HeadMemo(Mutex<Vec<Arc<Head>>>);

impl std::fmt::Debug for HeadMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadMemo")
            .field("heads", &self.lock().len())
            .finish()
    }
}

/// A page's bytes up to where early exit handed over, what went out for
/// them, and the page state there.
pub(super) struct Head {
    pub(super) input: Vec<u8>,
    pub(super) output: Vec<u8>,
    pub(super) state: State,
}

impl Head {
    /// Whether this head read under `spec` gives what it gave.
    fn reads_as(&self, spec: &RewriteSpec) -> bool {
        self.state.spec.same_reading(spec, self.state.meta_seen)
    }

    fn cost(&self) -> usize {
        self.input.len() + self.output.len() + PER_ENTRY
    }
}

impl Drop for Head {
    fn drop(&mut self) {
        HELD.fetch_sub(self.cost(), Ordering::Relaxed);
    }
}

impl HeadMemo {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Head>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The head kept for `spec` (of this memo's variant) that `chunk`
    /// begins with.
    pub(super) fn find(&self, spec: &RewriteSpec, chunk: &[u8]) -> Option<Arc<Head>> {
        self.lock()
            .iter()
            .find(|h| chunk.starts_with(&h.input) && h.reads_as(spec))
            .cloned()
    }

    /// Keeps `head`, in place of the one kept for its spec.
    pub(super) fn keep(&self, head: Head) {
        // Counted now; the head's drop gives it back, kept or not.
        let cost = head.cost();
        let all = HELD.fetch_add(cost, Ordering::Relaxed) + cost;
        if head.input.len() > MAX_HEAD || all > MAX_ALL {
            return;
        }
        let mut heads = self.lock();
        heads.retain(|h| !h.reads_as(&head.state.spec));
        if heads.len() >= MAX_ENTRIES {
            heads.remove(0);
        }
        heads.push(Arc::new(head));
    }
}

impl RewriteSpec {
    /// Whether a page read under `other` gives the same bytes and state as
    /// under this spec, both of one variant (whose memo compares them):
    /// every other field compared (a field added to the spec must be added
    /// here, or this does not compile). The nonces made up for a `<meta>`
    /// policy (fresh on every response) count only if `meta_read`: until
    /// the page has a meta policy, nothing is written with them.
    pub(super) fn same_reading(&self, other: &RewriteSpec, meta_read: bool) -> bool {
        let RewriteSpec {
            effective: _,
            page_url,
            nonce,
            max_map_bytes,
            memory_limit_bytes,
            probe,
            live,
            meta_csp,
            asset_origins,
            base_uri,
            encoding,
            notice,
        } = self;
        let same_probe = match (probe, &other.probe) {
            (None, None) => true,
            (Some(a), Some(b)) => {
                let super::ProbeSpec {
                    key,
                    view,
                    stage,
                    own,
                    badge,
                    reports,
                } = a;
                *key == b.key
                    && *view == b.view
                    && *stage == b.stage
                    && (Arc::ptr_eq(own, &b.own) || **own == *b.own)
                    && *badge == b.badge
                    && *reports == b.reports
            }
            _ => false,
        };
        let same_meta = match (meta_csp, &other.meta_csp) {
            (None, None) => true,
            (Some(a), Some(b)) => {
                let super::MetaCsp {
                    script_nonce: _,
                    script_hash,
                    style,
                } = a;
                let hash = |s: &Option<(String, String)>| s.as_ref().map(|(_, h)| h.clone());
                *script_hash == b.script_hash
                    && hash(style) == hash(&b.style)
                    && (!meta_read || a == b)
            }
            _ => false,
        };
        *page_url == other.page_url
            && *nonce == other.nonce
            && *max_map_bytes == other.max_map_bytes
            && *memory_limit_bytes == other.memory_limit_bytes
            && same_probe
            && *live == other.live
            && same_meta
            && **asset_origins == *other.asset_origins
            && *base_uri == other.base_uri
            && *encoding == other.encoding
            && *notice == other.notice
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::PageRewriter;

    fn spec(effective: &Arc<Effective>) -> RewriteSpec {
        RewriteSpec {
            effective: effective.clone(),
            page_url: url::Url::parse("https://shop.example/").expect("a URL"),
            nonce: None,
            max_map_bytes: 1 << 16,
            memory_limit_bytes: 1 << 22,
            probe: None,
            live: None,
            meta_csp: None,
            asset_origins: Arc::from(Vec::<String>::new()),
            base_uri: Vec::new(),
            encoding: Some(encoding_rs::UTF_8),
            notice: None,
        }
    }

    fn view(spec: RewriteSpec, page: &str) -> (Vec<u8>, bool) {
        let mut r = PageRewriter::new(spec);
        let mut out = r.write(page.as_bytes());
        out.extend(r.finish());
        (out, r.head_remembered())
    }

    const HEAD: &str = "<html><head><script type=importmap>{\"imports\":{\"g\":\"/src/g.js\"}}</script></head><body>";

    fn variant() -> Arc<Effective> {
        let mut set = stamp_model::ticket::OverrideSet::new();
        set.insert(
            "/src/g.js".into(),
            stamp_model::ticket::ModuleRef {
                path: "/src/g.js".into(),
                hash: stamp_model::ticket::Hash::of(b"g"),
                size: 1,
            },
        );
        Arc::new(Effective::new(set))
    }

    #[test]
    fn the_second_view_of_a_head_is_not_read_and_is_the_same() {
        let effective = variant();
        let first = view(spec(&effective), &format!("{HEAD}<p>one</p>"));
        let second = view(spec(&effective), &format!("{HEAD}<p>two</p>"));
        assert!(!first.1 && second.1, "{first:?} {second:?}");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        assert_eq!(
            text(&second.0),
            text(&first.0).replace("one", "two"),
            "the same head out, then the page's own body"
        );
        // Another page URL, another reading: not the kept head.
        let mut other = spec(&effective);
        other.page_url = url::Url::parse("https://shop.example/deep/").expect("a URL");
        assert!(!view(other, &format!("{HEAD}<p>x</p>")).1);
        // A head that differs by a byte is read.
        assert!(!view(spec(&effective), &HEAD.replace("g.js", "h.js")).1);
    }

    #[test]
    fn a_variant_with_kept_heads_is_freed() {
        let effective = variant();
        view(spec(&effective), &format!("{HEAD}<p>one</p>"));
        assert!(view(spec(&effective), &format!("{HEAD}<p>one</p>")).1);
        let gone = Arc::downgrade(&effective);
        drop(effective);
        assert!(gone.upgrade().is_none(), "a kept head holds its variant");
    }
}
