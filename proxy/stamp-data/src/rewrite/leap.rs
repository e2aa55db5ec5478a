//! Leaping: after `<body>`, bytes in which nothing can change are forwarded
//! without being read.
//!
//! After `<body>`, only three elements can change a page's bytes: a
//! `<script>` (an entry point, a map), a `<link>` (an entry point, a
//! stylesheet) and a `<meta>` (a policy, a charset); a `<base>` changes
//! what a later one's URL resolves to. Call `<` followed by the first
//! letters of one of their names, in any case, a *start*: `<scr`, `<lin`
//! (not `<li>`), `<met`, `<bas`. A run of bytes without a start holds nothing
//! that changes, whatever state the reading is in where it begins (a tag, a
//! comment, a `<style>`, an SVG): the tokenizer forwards it, or lol_html
//! reads it (after a doctype, an SVG, a `<template>`, an odd tag name) and
//! gives it back unchanged. The other handlers change no byte there: by
//! the time the tokenizer reads, the probe is in and the badge's outcome is
//! settled (`may_hand_over`), so `<head>` and `</body>` add nothing, and
//! `<template>`, `<base>` and another `<body>` only change what a later
//! script or link gets, which is a start. Its bytes go out as they came.
//!
//! What the run does to the reading's state (an element opened, a comment
//! begun) matters only if something follows that must be read. So a run is
//! forwarded at once and kept (the chunks are shared, not copied) instead
//! of being read. When a later chunk holds a start, the kept bytes are read
//! first, from the state the reading was left in, and what that reading
//! sends of them is dropped (it is exactly what went out), then the chunk
//! as usual. The bytes after a page's last start are never read.
//!
//! Most starts change nothing either: a page's analytics, its bundle, its
//! fonts' preloads, none of them a file the ticket replaces. A start is
//! *quiet* when, read as a start tag, the handlers would change no byte of
//! it and nothing they keep about the page (`PageRewriter::quiet`): then
//! it goes with the run, unread, whatever it really is (a tag, or text in
//! a comment, a value, a script). Each start is judged on its own, so one
//! misread as a tag hides none after it. A start that is not quiet makes
//! the kept bytes be read, the quiet ones among them.
//!
//! The search for starts is SIMD (Teddy) either way, with two pattern
//! sets that find the same starts (see [`find`]): a page of list items
//! would make every `<li` a near miss for the quicker one.
//!
//! A chunk's last bytes that may begin a start (`<`, `<s`, `<li`, …) wait
//! for the next chunk, unforwarded. A page keeps at most [`MAX_PAGE`]
//! bytes in [`MAX_CHUNKS`] chunks, and all pages together [`MAX_ALL`]
//! (each chunk counted with a fixed [`PER_CHUNK`] cost); past that, the
//! kept bytes are read at once, as they were before leaping, and so is the
//! rest of a page that reached its own bounds. A kept chunk
//! refers into the buffer it came in, which stays allocated while it is
//! kept.
//!
//! One thing differs from reading every byte: lol_html's memory budget is
//! only spent on what it reads. A page whose unread end, or a part the
//! tokenizer read instead (elements it opened and closed, a template's or
//! SVG element's attributes), would have made it give up is not reported
//! as given up. Its bytes are the same when nothing after that point
//! needed a change; when something did (a script), early exit stamps it as
//! a whole-page read with memory enough would, where the read that gave
//! up left it as it came.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::LazyLock;

use aho_corasick::packed;
use bytes::Bytes;

/// The first letters of every name a start begins (lower case).
const NAMES: [&[u8]; 4] = [
    b"scr", // script
    b"lin", // link, not li
    b"met", // meta
    b"bas", // base: what a later start's URL resolves against
];

/// The longest start, `<` and three letters.
pub(super) const LONGEST: usize = 4;

/// Most bytes one page keeps unread.
pub(super) const MAX_PAGE: usize = 1 << 20;
/// What a kept chunk costs beyond its bytes (its handle, an allocation),
/// counted against the bounds: a page sent a byte at a time keeps few.
const PER_CHUNK: usize = 64;
/// Most chunks one page keeps.
const MAX_CHUNKS: usize = 1024;
/// Most bytes all pages keep unread together.
pub(super) const MAX_ALL: usize = 64 << 20;

/// Bytes kept unread by every page now.
static KEPT: AtomicUsize = AtomicUsize::new(0);

/// Teddy over every case of every start: 32 patterns of 4 bytes. Its
/// cost does not depend on what the page holds (about 14 GB/s here).
static EXACT: LazyLock<Option<packed::Searcher>> = LazyLock::new(|| teddy(NAMES.iter().copied()));

/// Teddy over every case of `<sc`, `<lin`, `<me` and `<ba`: a superset of
/// the starts, each match checked. Its fingerprints are three bytes, a
/// third quicker than [`EXACT`]'s four on most pages (about 20 GB/s),
/// but every `<li` is a near miss for `<lin` that costs it about 20 ns:
/// on a body of list items it runs at a third of [`EXACT`]'s speed.
static QUICK: LazyLock<Option<packed::Searcher>> = LazyLock::new(|| {
    teddy(NAMES.iter().map(|name| match *name {
        b"lin" => *name,
        _ => &name[..2],
    }))
});

/// Teddy over every case of `<` and each of `names`. `None` where the
/// CPU has no SIMD Teddy runs on.
fn teddy<'a>(names: impl Iterator<Item = &'a [u8]>) -> Option<packed::Searcher> {
    let mut config = packed::Config::new().builder();
    for name in names {
        for case in 0..1u32 << name.len() {
            let mut pattern = vec![b'<'];
            for (k, b) in name.iter().enumerate() {
                pattern.push(if case & 1 << k != 0 {
                    b.to_ascii_uppercase()
                } else {
                    *b
                });
            }
            config.add(pattern);
        }
    }
    config.build()
}

/// How far one choice of search reaches: a page's lists come and go.
const WINDOW: usize = 32 << 10;
/// The bytes at a window's beginning that tell whether it is a list's.
const SAMPLE: usize = 1 << 10;

static LIST_ITEM: LazyLock<memchr::memmem::Finder<'static>> =
    LazyLock::new(|| memchr::memmem::Finder::new(b"<li"));

/// Where the first start in `hay` is.
///
/// Window by window: one whose first KiB holds two list items or more
/// (about where [`QUICK`]'s near misses cost what [`EXACT`]'s longer
/// fingerprints do) is searched by [`EXACT`], any other by [`QUICK`].
/// Either finds every start, so the choice changes the speed only.
/// Windows overlap by a start's length less one: a start that begins in
/// one ends in it.
pub(super) fn find(hay: &[u8]) -> Option<usize> {
    let (Some(quick), Some(exact)) = (&*QUICK, &*EXACT) else {
        return find_slow(hay);
    };
    let mut at = 0;
    while at < hay.len() {
        let window = &hay[at..hay.len().min(at + WINDOW + LONGEST - 1)];
        let sample = &window[..window.len().min(SAMPLE)];
        let found = if LIST_ITEM.find_iter(sample).nth(1).is_some() {
            exact.find(window).map(|m| m.start())
        } else {
            let mut from = 0;
            loop {
                let Some(m) = quick.find(&window[from..]) else {
                    break None;
                };
                let lt = from + m.start();
                if edge(&window[lt..]) == Edge::Start {
                    break Some(lt);
                }
                from = lt + 1;
            }
        };
        match found {
            // A start found past the window (in the overlap) is one the
            // next window finds first.
            Some(lt) if lt < WINDOW => return Some(at + lt),
            _ => at += WINDOW,
        }
    }
    None
}

/// [`find`] a `<` at a time.
fn find_slow(hay: &[u8]) -> Option<usize> {
    memchr::memchr_iter(b'<', hay).find(|&lt| edge(&hay[lt..]) == Edge::Start)
}

/// How many of `hay`'s last bytes may begin a start that the next bytes
/// complete (0 to 3). Call only where `hay` holds no whole start.
pub(super) fn open_end(hay: &[u8]) -> usize {
    (1..=hay.len().min(3))
        .rev()
        .find(|&k| edge(&hay[hay.len() - k..]) == Edge::Open)
        .unwrap_or(0)
}

/// What bytes that begin with `<` begin.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Edge {
    /// A start.
    Start,
    /// Too few bytes to tell.
    Open,
    /// Not a start.
    Not,
}

pub(super) fn edge(bytes: &[u8]) -> Edge {
    let Some((b'<', letters)) = bytes.split_first() else {
        return Edge::Not;
    };
    let mut open = false;
    for name in NAMES {
        let n = letters.len().min(name.len());
        if letters[..n].eq_ignore_ascii_case(&name[..n]) {
            if n == name.len() {
                return Edge::Start;
            }
            open = true;
        }
    }
    if open {
        Edge::Open
    } else {
        Edge::Not
    }
}

/// One page's kept bytes.
#[derive(Debug, Default)]
pub(super) struct Kept {
    chunks: Vec<Bytes>,
    len: usize,
    /// `len` and each chunk's [`PER_CHUNK`]: what counts against the bounds.
    cost: usize,
    /// The page kept all it may: no more leaping.
    spent: bool,
    /// The last bytes that came, which may begin a start: not forwarded.
    pub edge: Vec<u8>,
}

impl Kept {
    /// Nothing kept, nothing waiting.
    pub fn idle(&self) -> bool {
        self.chunks.is_empty() && self.edge.is_empty()
    }

    /// Whether a new run may be kept: nothing kept now, and the page has
    /// not reached its bounds.
    pub fn may_start(&self) -> bool {
        self.idle() && !self.spent
    }

    /// Whether a chunk of `n` more bytes may be kept (then it counts as
    /// kept).
    pub fn room(&mut self, n: usize) -> bool {
        let cost = n + PER_CHUNK;
        if self.chunks.len() >= MAX_CHUNKS || self.len + n > MAX_PAGE {
            // A page this long is read from here on: searching what will
            // be read anyway only adds to the cost.
            self.spent = true;
            return false;
        }
        let all = KEPT.fetch_add(cost, Ordering::Relaxed);
        if all + cost > MAX_ALL {
            KEPT.fetch_sub(cost, Ordering::Relaxed);
            return false;
        }
        self.len += n;
        self.cost += cost;
        true
    }

    /// Keeps a chunk [`Kept::room`] made room for.
    pub fn keep(&mut self, bytes: Bytes) {
        self.chunks.push(bytes);
    }

    /// Everything kept, to be read now, and how many bytes that is.
    pub fn take(&mut self) -> (Vec<Bytes>, usize) {
        KEPT.fetch_sub(std::mem::take(&mut self.cost), Ordering::Relaxed);
        (
            std::mem::take(&mut self.chunks),
            std::mem::take(&mut self.len),
        )
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        KEPT.fetch_sub(self.cost, Ordering::Relaxed);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_start_in_any_case_and_nothing_else() {
        assert!(QUICK.is_some() && EXACT.is_some(), "Teddy runs on this CPU");
        for name in ["script", "link", "meta", "base"] {
            for variant in [
                name.to_string(),
                name.to_ascii_uppercase(),
                name[..1].to_ascii_uppercase() + &name[1..],
                name[..1].to_string() + &name[1..2].to_ascii_uppercase() + &name[2..],
            ] {
                let hay = format!("<div a=b>x</div><{variant} y>");
                assert_eq!(find(hay.as_bytes()), Some(16), "{hay}");
                assert_eq!(find_slow(hay.as_bytes()), Some(16), "{hay}");
            }
        }
        let none = "<div><span>a</span><p>b<li>c<br><section><strong><main><table><title>\
                    <style><noscript><iframe><!-- x --></p></script></svg>< script><LI><Map><b>\
                    <svg><math><template><body><plaintext><Lix><mark><bdi><b><br><bOdy>";
        assert_eq!(find(none.as_bytes()), None);
        assert_eq!(find_slow(none.as_bytes()), None);
        // Every byte after `<` and before the pair: no false negatives on
        // long inputs either side of Teddy's block size.
        let mut long = "<a href=x>y</a>".repeat(500).into_bytes();
        assert_eq!(find(&long), None);
        long.extend_from_slice(b"<Sc");
        assert_eq!(find(&long), None, "three letters only begin a start");
        long.extend_from_slice(b"<ScR");
        assert_eq!(find(&long), Some(long.len() - 4));
    }

    /// Teddy against the byte-by-byte search, on pages full of
    /// near misses, with a start (in random case) at every position.
    #[test]
    fn the_fast_search_agrees_with_the_slow_one() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(30);
        let near = [
            "<", "<s", "<S", "<l", "<li", "<LI", "<m", "<ma", "<MA", "<b", "<t", "<p", "<d", "<de",
            "<}", "<", "a", " ", "<sc", "<SC", "<me", "<bA", "<sCr", "<MeT", "<li>", "<st", "<Sp",
            "<mE", "<tE", "<bO", "<bA", "<pL", "<sV", "<sC", "\u{0}", "\u{ff}", "<", "<<", "<lIn",
            "<mAt",
        ];
        for round in 0..3000 {
            let mut hay = Vec::new();
            for _ in 0..rng.random_range(0..80) {
                let piece = near[rng.random_range(0..near.len())];
                hay.extend_from_slice(piece.as_bytes());
                if rng.random_bool(0.3) {
                    hay.extend_from_slice(b"<div class=x>");
                }
            }
            assert_eq!(
                find(&hay),
                find_slow(&hay),
                "round {round}: {:?}",
                String::from_utf8_lossy(&hay)
            );
        }
        // A start at every offset of a 100-byte run without one.
        let filler = "<li><main><p>x<b>".repeat(10);
        for name in ["<script", "<LINK", "<mEta", "<SCRIPT", "<Link", "<META"] {
            for at in 0..100 {
                let hay = format!("{}{name}{}", &filler[..at], &filler[at..]);
                assert_eq!(find(hay.as_bytes()), Some(at), "{name} at {at}");
            }
        }
    }

    /// Both searches, on bodies of list items and without, with a start
    /// at and around every window's edge.
    #[test]
    fn lists_change_the_search_not_what_it_finds() {
        let listing = "<li class=\"item\"><a href=\"/p\">Item</a></li>\n".repeat(WINDOW / 20);
        let cards =
            "<article><h2><a href=\"/p\">A</a></h2><p>b</p></article>\n".repeat(WINDOW / 20);
        for filler in [
            &listing,
            &cards,
            &(cards.clone() + &listing),
            &(listing.clone() + &cards),
        ] {
            let filler = filler.as_bytes();
            assert_eq!(find(filler), None);
            for edge in [WINDOW, 2 * WINDOW] {
                for at in edge - 5..edge + 5 {
                    for name in [&b"<ScRipt"[..], b"<link", b"<META", b"<base"] {
                        let mut hay = filler[..at].to_vec();
                        hay.extend_from_slice(name);
                        hay.extend_from_slice(&filler[at..]);
                        assert_eq!(find(&hay), Some(at), "at {at}");
                        assert_eq!(find_slow(&hay), Some(at), "at {at}");
                        // Three letters of one, then a whole one later.
                        hay[at + 3] = b'x';
                        assert_eq!(find(&hay), find_slow(&hay), "at {at}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_chunk_end_that_may_begin_a_start_waits() {
        let ends: [(&[u8], usize); 15] = [
            (b"abc<", 1),
            (b"abc<S", 2),
            (b"abc<M", 2),
            (b"abc<p", 0),
            (b"abc<d", 0),
            (b"abc<sd", 0),
            (b"abc<Li", 3),
            (b"abc<lix", 0),
            (b"<<m", 2),
            (b"", 0),
            (b"<svg", 0),
            (b"abc<B", 2),
            (b"abc<bo", 0),
            (b"abc<mE", 3),
            (b"abc<SCx", 0),
        ];
        for (hay, n) in ends {
            assert_eq!(open_end(hay), n, "{:?}", String::from_utf8_lossy(hay));
        }
        let edges: [(&[u8], Edge); 17] = [
            (b"<", Edge::Open),
            (b"<M", Edge::Open),
            (b"<ME", Edge::Open),
            (b"<MEt", Edge::Start),
            (b"<scx", Edge::Not),
            (b"<menu", Edge::Not),
            (b"<Mx", Edge::Not),
            (b"<x", Edge::Not),
            (b"<t", Edge::Not),
            (b"<LI", Edge::Open),
            (b"<LI>", Edge::Not),
            (b"<lInK", Edge::Start),
            (b"<mAp", Edge::Not),
            (b"<svg", Edge::Not),
            (b"x<sc", Edge::Not),
            (b"<bAse", Edge::Start),
            (b"<br", Edge::Not),
        ];
        for (bytes, want) in edges {
            assert_eq!(edge(bytes), want, "{:?}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn kept_bytes_are_bounded_per_page() {
        let mut k = Kept::default();
        assert!(k.room(MAX_PAGE - 1));
        assert!(!k.room(2));
        let (_, len) = k.take();
        assert_eq!(len, MAX_PAGE - 1);
        assert!(!k.may_start(), "the rest of a page this long is read");
        // A page sent a byte at a time: a bounded number of chunks.
        let mut k = Kept::default();
        let mut n = 0;
        while k.room(1) {
            k.keep(Bytes::from_static(b"x"));
            n += 1;
        }
        assert_eq!(n, MAX_CHUNKS);
    }
}
