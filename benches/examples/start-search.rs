//! The body's search for starts alone (`leap::find`: where a `<script`,
//! `<link`, `<meta` or `<base` may begin), against Teddy with each of its
//! two pattern sets on its own, on the bench pages' bodies (300 KB).
//!
//!     cargo run --release -p stamp-benches --example start-search

use std::hint::black_box;
use std::time::Instant;

use aho_corasick::packed;

/// Teddy over every case of `<` and each of `names`.
fn teddy(names: &[&[u8]]) -> packed::Searcher {
    let mut config = packed::Config::new().builder();
    for name in names {
        for case in 0..1u32 << name.len() {
            let mut pattern = vec![b'<'];
            for (k, b) in name.iter().enumerate() {
                let upper = case & 1 << k != 0;
                pattern.push(if upper { b.to_ascii_uppercase() } else { *b });
            }
            config.add(pattern);
        }
    }
    config.build().expect("Teddy runs on this CPU")
}

/// Every start in `hay`, by `find`; how many.
fn starts(hay: &[u8], find: &dyn Fn(&[u8]) -> Option<usize>) -> usize {
    let (mut n, mut at) = (0, 0);
    while let Some(lt) = find(&hay[at..]) {
        n += 1;
        at += lt + 1;
    }
    n
}

/// The best of 200 rounds, in µs.
fn best(hay: &[u8], find: &dyn Fn(&[u8]) -> Option<usize>) -> (f64, usize) {
    let mut best = f64::MAX;
    let mut n = 0;
    for _ in 0..200 {
        let t = Instant::now();
        n = starts(black_box(hay), find);
        best = best.min(t.elapsed().as_secs_f64());
    }
    (best * 1e6, n)
}

fn main() {
    // Checked by hand: a match of the three-byte set is a start only if
    // its fourth letter is right (`<sc` of `<scr`, …).
    let three = teddy(&[b"sc", b"lin", b"me", b"ba"]);
    let four = teddy(&[b"scr", b"lin", b"met", b"bas"]);
    let size = 300 << 10;
    let nav: String = (0..40)
        .map(|i| format!("<li class=\"nav\"><a href=\"/c/{i}\">Category {i}</a></li>"))
        .collect();
    let pages = [
        ("cards (`page`)", stamp_benches::page(size, 40)),
        ("a real body's end", stamp_benches::page_real_body(size, 40)),
        ("a listing", stamp_benches::page_listing(size, 40)),
        (
            "cards between a 40-item menu and footer",
            stamp_benches::page(size, 40)
                .replacen("<main>", &format!("<nav><ul>{nav}</ul></nav><main>"), 1)
                .replace(
                    "</main>",
                    &format!("</main><footer><ul>{nav}</ul></footer>"),
                ),
        ),
    ];
    println!("| page | three-byte | four-byte | window by window |");
    println!("|---|---:|---:|---:|");
    for (name, html) in &pages {
        let body = &html.as_bytes()[html.find("<body>").expect("a body")..];
        let (t3, n3) = best(body, &|hay| {
            let mut from = 0;
            while let Some(m) = three.find(&hay[from..]) {
                let lt = from + m.start();
                if hay.len() - lt >= 4 && four.find(&hay[lt..lt + 4]).is_some() {
                    return Some(lt);
                }
                from = lt + 1;
            }
            None
        });
        let (t4, n4) = best(body, &|hay| four.find(hay).map(|m| m.start()));
        let (tw, nw) = best(body, &stamp_data::testing::find_start);
        assert!(n3 == n4 && n4 == nw, "{name}: {n3}, {n4}, {nw} starts");
        println!("| {name} | {t3:.1} µs | {t4:.1} µs | {tw:.1} µs |");
    }
}
