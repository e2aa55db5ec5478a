//! The page rewriter over arbitrary HTML, fed in arbitrary pieces: it never
//! panics, and it gives the same bytes however the page is split (the
//! network splits pages anywhere).
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use stamp_data::testing::{Effective, PageRewriter, RewriteSpec};
#[path = "common.rs"]
mod common;

fn spec() -> RewriteSpec {
    let set = common::overrides(&["/src/app.js", "/src/lib/greet.js", "/assets/site.css"]);
    RewriteSpec {
        effective: Arc::new(Effective::new(set)),
        page_url: url::Url::parse("https://shop.example/").unwrap().into(),
        nonce: Some("fuzz-nonce".into()),
        fresh: None,
        max_map_bytes: 1 << 16,
        memory_limit_bytes: 1 << 20,
        probe: None,
        live: None,
        meta_csp: None,
        asset_origins: Arc::from(vec!["https://cdn.example".to_string()]),
        base_uri: Vec::new(),
        encoding: None,
        notice: None,
    }
}

fn run(pieces: &[&[u8]]) -> Vec<u8> {
    let mut r = PageRewriter::new(spec());
    let mut out = Vec::new();
    for p in pieces {
        out.extend(r.write(p));
    }
    out.extend(r.finish());
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, html)) = data.split_first() else {
        return;
    };
    let whole = run(&[html]);
    let step = usize::from(n).max(1);
    let pieces: Vec<&[u8]> = html.chunks(step).collect();
    assert_eq!(run(&pieces), whole, "split every {step} bytes");
});
