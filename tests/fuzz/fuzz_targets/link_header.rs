//! An origin's `Link` header on a stamped page: it never panics; what it
//! changes is a preload's target, to the ticket's URL of a file the ticket
//! replaces; and a header rewritten once changes no further when
//! rewritten again.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use stamp_data::testing::{link_header, Effective};
#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    let effective = Arc::new(Effective::new(common::overrides(&[
        "/src/app.js",
        "/src/lib/greet.js",
        "/assets/site.css",
        "https://cdn.example/lib/x.js",
    ])));
    let page = url::Url::parse("https://shop.example/app/page").unwrap();
    let Some(out) = link_header(value, &page, &effective) else {
        return;
    };
    assert!(out.contains("?__ts="), "{value:?} → {out:?}");
    // What a header value may hold, it still holds.
    if !value.contains(['\r', '\n', '\0']) {
        assert!(!out.contains(['\r', '\n', '\0']), "{value:?} → {out:?}");
    }
    // Again: the same (the ticket's URL at its own path), or nothing to
    // change (a remote file's URL under the proxy's mirror).
    if let Some(again) = link_header(&out, &page, &effective) {
        assert_eq!(again, out, "{value:?}");
    }
});
