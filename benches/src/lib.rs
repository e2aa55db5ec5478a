//! Shared fixtures for the benchmarks and the load harness: realistic pages
//! with an import map and module scripts, and override sets of a given size.

use std::sync::Arc;

use stamp_proxy::snapshot::Effective;
use stamp_proxy::ticket::{Hash, ModuleRef, OverrideSet};

/// An HTML page of about `bytes` bytes: a head with an import map of
/// `map_entries` entries and a few module scripts, then a body of product
/// cards (text, attributes, links, inline styles), like a shop listing.
pub fn page(bytes: usize, map_entries: usize) -> String {
    let mut imports = String::new();
    for i in 0..map_entries {
        if i > 0 {
            imports.push(',');
        }
        imports.push_str(&format!("\"lib/m{i}\":\"/src/lib/m{i}.js\""));
    }
    let mut html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Shop</title>\
         <link rel=\"stylesheet\" href=\"/src/style.css\">\
         <script type=\"importmap\">{{\"imports\":{{{imports}}}}}</script>\
         <link rel=\"modulepreload\" href=\"/src/lib/m1.js\">\
         <script type=\"module\" src=\"/src/main.js\"></script></head><body><main>"
    );
    let mut i = 0;
    while html.len() < bytes {
        html.push_str(&format!(
            "<article class=\"card\" data-id=\"{i}\"><h2><a href=\"/p/{i}\">Product {i}</a></h2>\
             <p style=\"color:#333\">A fine thing, number {i}, &amp; more.</p>\
             <button type=\"button\" data-sku=\"SKU-{i}\">Add to basket</button></article>\n"
        ));
        i += 1;
    }
    html.push_str("</main></body></html>");
    html
}

/// `n` overrides of `/src/lib/m{i}.js` (the first `n` map entries of [`page`]).
pub fn overrides(n: usize) -> Arc<Effective> {
    let mut set = OverrideSet::new();
    for i in 0..n {
        let path = format!("/src/lib/m{i}.js");
        set.insert(
            path.clone(),
            ModuleRef {
                hash: Hash::of(path.as_bytes()),
                path,
                size: 100,
            },
        );
    }
    Arc::new(Effective::new(set))
}
