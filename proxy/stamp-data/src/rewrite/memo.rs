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
//! A head that changes on every view (a CSRF token in a `<meta>`) never
//! matches: it is read as before, and replaces the one kept for its spec.
//! A nonce the proxy made up for the response (`RewriteSpec::fresh`: the
//! page's policy header needs one for the proxy's elements, a meta policy
//! in the head is given one) is in the output: the head is kept with where
//! it sits, and a later view's own made-up nonce goes there
//! ([`Head::output_for`]), so no two responses share one. A head whose
//! elements carry the page's own nonce (fresh on each of the origin's
//! responses) is not kept at all (`PageRewriter::new`,
//! `PageRewriter::remember`). Only a first chunk
//! that holds the whole kept head can match, so a page that streams its
//! head is read as it comes. One table for the process, in [`SHARDS`]
//! locks chosen by the variant's content address and the page's URL: at
//! most [`PER_SHARD`] heads each (the least recently used goes), of at
//! most [`MAX_HEAD`] bytes, and [`MAX_ALL`] bytes together (what they
//! hold). A variant is named by its content address, so a head stays
//! good across snapshots that leave the variant as it was. Tested against
//! the whole-page rewriter byte for byte, pages sharing a head included
//! (`differential::remembered_heads_match_the_full_rewriter`, the fuzz
//! target `rewriter_early_exit`).

use std::hash::{Hash as _, Hasher as _};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use super::{RewriteSpec, State};
use crate::effective::Effective;

/// Locks the table is split over.
const SHARDS: usize = 16;
/// Heads kept per shard.
const PER_SHARD: usize = 32;
/// The longest head kept (input bytes).
pub(super) const MAX_HEAD: usize = 32 * 1024;
/// Bytes of heads kept together.
const MAX_ALL: usize = 32 << 20;
/// What an entry costs beyond its bytes (its state, handles).
const PER_ENTRY: usize = 1024;

/// Bytes kept by the heads now.
static HELD: AtomicUsize = AtomicUsize::new(0);

/// The heads, by shard.
static TABLE: LazyLock<[Mutex<Vec<Arc<Head>>>; SHARDS]> =
    LazyLock::new(|| std::array::from_fn(|_| Mutex::default()));

/// What a kept state's spec holds instead of its variant: the table must
/// not keep a variant (all its caches) alive.
static NO_VARIANT: LazyLock<Arc<Effective>> =
    LazyLock::new(|| Arc::new(Effective::new(Default::default())));

/// A page's bytes up to where early exit handed over, what went out for
/// them, and the page state there.
pub(super) struct Head {
    /// The variant's content address (its spec holds none).
    variant: stamp_model::ticket::Hash,
    pub(super) input: Vec<u8>,
    pub(super) output: Vec<u8>,
    /// Where the nonce made up for the view that kept it (its spec's
    /// `fresh`) sits in `output`: a later view's goes there instead.
    fresh_at: Vec<usize>,
    pub(super) state: State,
}

impl Head {
    pub(super) fn new(input: Vec<u8>, output: Vec<u8>, mut state: State) -> Head {
        let variant = state.spec.effective.id;
        state.spec.effective = NO_VARIANT.clone();
        let fresh_at = match state.spec.fresh.as_deref() {
            Some(n) if !n.is_empty() => memchr::memmem::find_iter(&output, n.as_bytes()).collect(),
            _ => Vec::new(),
        };
        let head = Head {
            variant,
            input,
            output,
            fresh_at,
            state,
        };
        // Counted from here; its drop gives it back, kept or not.
        HELD.fetch_add(head.cost(), Ordering::Relaxed);
        head
    }

    /// Whether this head read under `spec` gives what it gave (with
    /// `spec`'s made-up nonce where it had its own).
    fn reads_as(&self, spec: &RewriteSpec) -> bool {
        let swappable = self.fresh_at.is_empty()
            || matches!(
                (&self.state.spec.fresh, &spec.fresh),
                (Some(old), Some(new)) if old.len() == new.len()
            );
        self.variant == spec.effective.id
            && swappable
            && self.state.spec.same_reading(spec, self.state.meta_seen)
    }

    /// What went out for it, with `fresh` (the nonce made up for this
    /// response) where the view that kept it had its own.
    pub(super) fn output_for(&self, fresh: Option<&str>) -> std::borrow::Cow<'_, [u8]> {
        // Only a nonce of the kept one's length fits (`reads_as` matches no
        // other); anything else leaves the output as it was kept.
        let fits = |f: &&str| Some(f.len()) == self.state.spec.fresh.as_ref().map(String::len);
        let Some(fresh) = fresh.filter(|f| !self.fresh_at.is_empty() && fits(f)) else {
            return std::borrow::Cow::Borrowed(&self.output);
        };
        let mut out = self.output.clone();
        for &at in &self.fresh_at {
            out[at..at + fresh.len()].copy_from_slice(fresh.as_bytes());
        }
        std::borrow::Cow::Owned(out)
    }

    /// What it holds: its buffers, and the state's own (the spec's
    /// notice and live URL, the map text buffer, the report's reason).
    fn cost(&self) -> usize {
        let st = &self.state;
        let text = |s: &Option<String>| s.as_ref().map_or(0, String::capacity);
        self.input.capacity()
            + self.output.capacity()
            + st.buf.capacity()
            + self.fresh_at.capacity() * std::mem::size_of::<usize>()
            + text(&st.spec.notice)
            + text(&st.spec.live)
            + text(&st.report.map_left)
            + PER_ENTRY
    }
}

impl Drop for Head {
    fn drop(&mut self) {
        HELD.fetch_sub(self.cost(), Ordering::Relaxed);
    }
}

/// The shard of pages of `variant` at `page`.
fn shard(
    variant: &stamp_model::ticket::Hash,
    page: &url::Url,
) -> std::sync::MutexGuard<'static, Vec<Arc<Head>>> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    variant.hash(&mut h);
    page.as_str().hash(&mut h);
    TABLE[h.finish() as usize % SHARDS]
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// The head kept for `spec` that `chunk` begins with (now the shard's
/// last to go).
pub(super) fn find(spec: &RewriteSpec, chunk: &[u8]) -> Option<Arc<Head>> {
    let mut heads = shard(&spec.effective.id, &spec.page_url);
    let at = heads
        .iter()
        .position(|h| chunk.starts_with(&h.input) && h.reads_as(spec))?;
    let head = heads.remove(at);
    heads.push(head.clone());
    Some(head)
}

/// Keeps `head`, in place of the one kept for its spec (its nonces aside:
/// a page whose head changes replaces its own).
pub(super) fn keep(head: Head) {
    if head.input.len() > MAX_HEAD {
        return;
    }
    let mut heads = shard(&head.variant, &head.state.spec.page_url);
    heads.retain(|h| {
        h.variant != head.variant || !h.state.spec.same_reading(&head.state.spec, false)
    });
    if heads.len() >= PER_SHARD {
        heads.remove(0);
    }
    // `HELD` counts this head already (and no longer the one it replaced).
    if HELD.load(Ordering::Relaxed) <= MAX_ALL {
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
            // Made up per response: it stands in for the nonces below.
            fresh: _,
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
                    touch,
                    external,
                } = a;
                *key == b.key
                    && *view == b.view
                    && *stage == b.stage
                    && (Arc::ptr_eq(own, &b.own) || **own == *b.own)
                    && *badge == b.badge
                    && *reports == b.reports
                    && touch.len() == b.touch.len()
                    && touch
                        .iter()
                        .zip(&b.touch)
                        .all(|(x, y)| Arc::ptr_eq(x, y) || x == y)
                    && *external == b.external
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
                // Each view's own made-up nonce, with no style nonce; else
                // the same policy, neither made up (a nonce written as it
                // is must not meet a head whose nonce is swapped).
                let made_up = |m: &super::MetaCsp, spec: &RewriteSpec| {
                    m.style.is_none() && spec.fresh.as_ref() == Some(&m.script_nonce)
                };
                let (ours, theirs) = (made_up(a, self), made_up(b, other));
                *script_hash == b.script_hash
                    && hash(style) == hash(&b.style)
                    && (!meta_read || (ours && theirs) || (!ours && !theirs && a == b))
            }
            _ => false,
        };
        // The map's nonce: each view's own made-up one, or the same one,
        // made up in neither.
        let made_up = |s: &RewriteSpec| s.nonce.is_some() && s.nonce == s.fresh;
        let (ours, theirs) = (made_up(self), made_up(other));
        *page_url == other.page_url
            && ((ours && theirs) || (!ours && !theirs && *nonce == other.nonce))
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

    /// A spec for a page of this test's own (the table is the process's).
    fn spec(effective: &Arc<Effective>, test: &str) -> RewriteSpec {
        let mut spec = crate::rewrite::tests::spec(&[]);
        spec.effective = effective.clone();
        spec.page_url = url::Url::parse(&format!("https://shop.example/{test}"))
            .expect("a URL")
            .into();
        spec
    }

    fn view(spec: RewriteSpec, page: &str) -> (Vec<u8>, bool) {
        let mut r = PageRewriter::new(spec);
        let mut out = r.write(page.as_bytes());
        out.extend(r.finish());
        (out, r.head_remembered())
    }

    const HEAD: &str = "<html><head><script type=importmap>{\"imports\":{\"g\":\"/src/g.js\"}}</script></head><body>";

    fn variant() -> Arc<Effective> {
        crate::rewrite::tests::eff(&["/src/g.js"])
    }

    #[test]
    fn the_second_view_of_a_head_is_not_read_and_is_the_same() {
        const T: &str = "second-view";
        let effective = variant();
        let first = view(spec(&effective, T), &format!("{HEAD}<p>one</p>"));
        let second = view(spec(&effective, T), &format!("{HEAD}<p>two</p>"));
        assert!(!first.1 && second.1, "{first:?} {second:?}");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        assert_eq!(
            text(&second.0),
            text(&first.0).replace("one", "two"),
            "the same head out, then the page's own body"
        );
        // Another page URL, another reading: not the kept head.
        let mut other = spec(&effective, T);
        other.page_url = url::Url::parse("https://shop.example/deep/")
            .expect("a URL")
            .into();
        assert!(!view(other, &format!("{HEAD}<p>x</p>")).1);
        // A head that differs by a byte is read.
        assert!(!view(spec(&effective, T), &HEAD.replace("g.js", "h.js")).1);
    }

    #[test]
    fn a_variant_with_kept_heads_is_freed() {
        const T: &str = "freed";
        let effective = variant();
        view(spec(&effective, T), &format!("{HEAD}<p>one</p>"));
        assert!(view(spec(&effective, T), &format!("{HEAD}<p>one</p>")).1);
        let gone = Arc::downgrade(&effective);
        drop(effective);
        assert!(gone.upgrade().is_none(), "a kept head holds its variant");
    }

    #[test]
    fn a_head_with_the_pages_own_nonce_is_not_kept() {
        const T: &str = "own-nonce";
        let effective = variant();
        // A nonce from the page's policy header: the same twice, still not
        // kept (it is fresh on every real response of the origin).
        let mut a = spec(&effective, T);
        a.nonce = Some("n0nce".into());
        view(a.clone(), &format!("{HEAD}<p>a</p>"));
        assert!(!view(a.clone(), &format!("{HEAD}<p>a</p>")).1);
        // The same, with a made-up nonce for a meta policy beside it.
        a.fresh = Some("m4deup".into());
        view(a.clone(), &format!("{HEAD}<p>a</p>"));
        assert!(!view(a, &format!("{HEAD}<p>a</p>")).1);
    }

    /// A nonce the proxy made up (a policy header that needs one, a meta
    /// policy in the head) is in a kept head's output: a later view gets
    /// the head with its own nonce there, never the keeper's.
    #[test]
    fn a_kept_head_takes_each_views_made_up_nonce() {
        const T: &str = "made-up-nonce";
        let effective = variant();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let made_up = |n: &str| {
            let mut s = spec(&effective, T);
            s.nonce = Some(n.into());
            s.fresh = Some(n.into());
            s
        };
        let first = view(made_up("AAAA+/AAAA"), &format!("{HEAD}<p>1</p>"));
        let second = view(made_up("BBBB+/BBBB"), &format!("{HEAD}<p>2</p>"));
        assert!(!first.1 && second.1, "{first:?} {second:?}");
        assert!(
            text(&first.0).contains("nonce=\"AAAA+/AAAA\""),
            "{}",
            text(&first.0)
        );
        assert_eq!(
            text(&second.0),
            text(&first.0)
                .replace("AAAA+/AAAA", "BBBB+/BBBB")
                .replace("<p>1</p>", "<p>2</p>"),
        );
        // Asked directly, a kept head swaps only a nonce that fits.
        let kept =
            find(&made_up("AAAA+/AAAA"), format!("{HEAD}<p>5</p>").as_bytes()).expect("kept");
        assert_eq!(
            kept.output_for(Some("toolong-toolong-toolong")),
            kept.output_for(None)
        );
        // A head that holds the made-up nonce's text itself is not kept
        // (its text there is the page's, not a nonce to swap).
        let own_text = HEAD.replace("<body>", "<body data-x=\"DDDD+/DDDD\">");
        view(made_up("DDDD+/DDDD"), &own_text);
        let again = view(made_up("EEEE+/EEEE"), &own_text);
        assert!(!again.1, "{}", text(&again.0));
        assert!(text(&again.0).contains("data-x=\"DDDD+/DDDD\""));
        // A made-up nonce of another length cannot take the kept one's place.
        assert!(!view(made_up("CC"), &format!("{HEAD}<p>3</p>")).1);
        // A meta policy in the head, given the made-up nonce.
        let meta = "<html><head><meta http-equiv=\"Content-Security-Policy\" content=\"script-src 'self'\"><script type=module src=/src/g.js></script></head><body>";
        let with_meta = |n: &str| {
            let mut m = spec(&effective, T);
            m.fresh = Some(n.into());
            m.meta_csp = Some(crate::rewrite::MetaCsp {
                script_nonce: n.into(),
                script_hash: "'sha256-x'".into(),
                style: None,
            });
            m
        };
        let first = view(with_meta("m3ta1"), &format!("{meta}<p>m</p>"));
        let second = view(with_meta("m3ta2"), &format!("{meta}<p>m</p>"));
        assert!(second.1, "kept: {}", text(&second.0));
        assert!(
            text(&first.0).contains("'nonce-m3ta1'"),
            "{}",
            text(&first.0)
        );
        assert_eq!(text(&second.0), text(&first.0).replace("m3ta1", "m3ta2"));
        // A meta nonce that is the kept head's, but written as it is (not
        // made up for this view): it does not meet the head whose nonce is
        // swapped.
        let mut as_is = with_meta("m3ta1");
        as_is.fresh = Some("m3taX".into());
        let odd = view(as_is, &format!("{meta}<p>m</p>"));
        assert!(!odd.1, "{}", text(&odd.0));
        assert!(text(&odd.0).contains("'nonce-m3ta1'"));
        // A meta policy's nonce that is not the made-up one: not kept.
        let mut other = with_meta("m3ta3");
        other.fresh = Some("elsewh".into());
        view(other.clone(), &format!("{meta}<p>o</p>"));
        assert!(!view(other, &format!("{meta}<p>o</p>")).1);
        // Without a meta policy in the head, its nonce writes nothing there.
        let mut m = spec(&effective, T);
        m.meta_csp = with_meta("x").meta_csp;
        view(m.clone(), &format!("{HEAD}<p>m</p>"));
        if let Some(csp) = m.meta_csp.as_mut() {
            csp.script_nonce = "other".into();
        }
        assert!(view(m, &format!("{HEAD}<p>m</p>")).1);
    }

    #[test]
    fn a_kept_head_counts_what_it_holds() {
        const T: &str = "cost";
        let effective = variant();
        // A first chunk much longer than the head.
        let page = format!("{HEAD}{}", "<p>padding</p>".repeat(2000));
        view(spec(&effective, T), &page);
        let head = find(&spec(&effective, T), page.as_bytes()).expect("kept");
        assert_eq!(head.input, HEAD.as_bytes());
        assert!(
            head.input.capacity() + head.output.capacity() + PER_ENTRY <= head.cost(),
            "{} + {} held, {} counted",
            head.input.capacity(),
            head.output.capacity(),
            head.cost()
        );
        assert!(head.cost() < 4 * 1024 + PER_ENTRY, "{}", head.cost());
    }
}
