//! Shared fixtures for the benchmarks and the load harness: realistic pages
//! with an import map and module scripts, and override sets of a given size.

use std::sync::Arc;

use stamp_data::testing::Effective;
use stamp_data::testing::{PageRewriter, RewriteSpec};
use stamp_model::ticket::{Hash, ModuleRef, OverrideSet};

pub mod nginx;
pub mod paced;
pub mod wrk;

/// The chunk size pages are fed in (a typical socket read).
pub const CHUNK: usize = 16 * 1024;

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

/// [`page`] with a script at the end of its body (analytics, a bundle
/// loaded last): a start after `<body>`, quiet (the ticket does not
/// replace it), so the rewriter leaps over it as over the rest.
pub fn page_late_script(bytes: usize, map_entries: usize) -> String {
    page(bytes, map_entries).replace(
        "</main></body>",
        "</main><script src=\"/assets/analytics.js\" defer></script></body>",
    )
}

/// [`page`] whose body begins with inline SVG icons (a header's cart and
/// menu), as most sites' do: in the chunk that holds `<body>`.
pub fn page_svg_icons(bytes: usize, map_entries: usize) -> String {
    page(bytes, map_entries).replacen(
        "<body><main>",
        "<body><header><svg class=\"icon\" viewBox=\"0 0 24 24\" aria-hidden=\"true\">\
         <path d=\"M7 18a2 2 0 1 0 0 4 2 2 0 0 0 0-4zM1 2h3l3.6 7.6L6.2 12A2 2 0 0 0 8 15h12v-2H8.4l1.1-2h7.5\"/></svg>\
         <svg class=\"icon\" viewBox=\"0 0 24 24\"><use href=\"#menu\"></use></svg></header><main>",
        1,
    )
}

/// [`page_svg_icons`] with a script at the end of its body: the body is
/// read up to the script, SVG and all.
pub fn page_svg_icons_late_script(bytes: usize, map_entries: usize) -> String {
    page_svg_icons(bytes, map_entries).replace(
        "</main></body>",
        "</main><script src=\"/assets/analytics.js\" defer></script></body>",
    )
}

/// [`page_svg_icons`] with the end of body most sites have: analytics and a
/// tag manager's inline snippet, a font preloaded, a classic bundle, a
/// module chunk, data for the page's script, none of them a file the
/// ticket replaces.
pub fn page_real_body(bytes: usize, map_entries: usize) -> String {
    page_svg_icons(bytes, map_entries).replace(
        "</main></body>",
        "</main><footer><a href=\"/help\">Help</a></footer>\
         <link rel=\"preload\" as=\"font\" href=\"/fonts/inter.woff2\" crossorigin>\
         <script>window.dataLayer=window.dataLayer||[];function gtag(){dataLayer.push(arguments)}</script>\
         <script async src=\"https://www.googletagmanager.com/gtag/js?id=G-XXXX\"></script>\
         <script src=\"/assets/vendor.js\" defer></script>\
         <script type=\"module\" src=\"/assets/chunk-reviews.js\"></script>\
         <script type=\"application/json\" id=\"page-data\">{\"sku\":\"SKU-1\",\"price\":\"9.99\"}</script>\
         <meta name=\"generator\" content=\"shop\"></body>",
    )
}

/// [`page`] whose body is a listing, as menus, search results and feeds
/// are: list items (`<li>`, whose first letters are `<link>`'s), spans,
/// bold text and line breaks, and no start after `<body>`.
pub fn page_listing(bytes: usize, map_entries: usize) -> String {
    let head = page(0, map_entries);
    let mut html = head.replace("</main></body></html>", "<ul class=\"results\">\n");
    let mut i = 0;
    while html.len() < bytes {
        html.push_str(&format!(
            "<li class=\"item\"><a href=\"/p/{i}\"><span class=\"name\">Item {i}</span></a> \
             <b>9.99</b><br><small>In stock</small></li>\n"
        ));
        i += 1;
    }
    html.push_str("</ul></main></body></html>");
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

/// An ES module of about `bytes` bytes: exports, functions, a template
/// string, like a bundler-free app's component.
pub fn module(bytes: usize) -> String {
    let mut js = String::from("import { html } from './lib/m0.js';\n");
    let mut i = 0;
    while js.len() < bytes {
        js.push_str(&format!(
            "export function card{i}(item) {{\n  const price = (item.cents / 100).toFixed(2);\n  \
             return html`<article data-id=\"${{item.id}}\"><h2>${{item.name}}</h2><p>${{price}}</p></article>`;\n}}\n"
        ));
        i += 1;
    }
    js
}

/// The rewrite spec the benchmarks use: `n` overrides, no nonce, no badge,
/// and (as on a page whose headers carry no CSP) ready for a `<meta>` policy.
pub fn spec(n: usize) -> RewriteSpec {
    let effective = overrides(n);
    let meta_csp = Some(stamp_data::testing::MetaCsp {
        script_nonce: "bench-nonce".into(),
        script_hash: effective.fresh_hash().to_string(),
        style: None,
    });
    RewriteSpec {
        effective,
        page_url: url::Url::parse("https://shop.example/")
            .unwrap_or_else(|_| unreachable!())
            .into(),
        nonce: None,
        fresh: None,
        max_map_bytes: 1 << 20,
        memory_limit_bytes: 8 << 20,
        probe: None,
        live: None,
        meta_csp,
        asset_origins: std::sync::Arc::from(Vec::<String>::new()),
        base_uri: Vec::new(),
        // As an app server names it (`text/html; charset=utf-8`).
        encoding: Some(encoding_rs::UTF_8),
        notice: None,
    }
}

/// lol_html parsing `html` with no handlers at all: the floor any
/// lol_html-based rewriter is measured against. Returns the bytes out.
pub fn noop_parse(html: &[u8]) -> usize {
    let mut out = 0usize;
    let mut r = lol_html::HtmlRewriter::new(lol_html::Settings::new(), |c: &[u8]| out += c.len());
    for chunk in html.chunks(CHUNK) {
        let _ = r.write(chunk);
    }
    let _ = r.end();
    out
}

/// lol_html with a single element handler that does nothing: what any
/// lol_html rewriter pays once it needs to see one kind of tag, because
/// lol_html then tracks every element on its selector-matching stack.
pub fn one_handler_parse(html: &[u8]) -> usize {
    let mut out = 0usize;
    let settings = lol_html::Settings::new()
        .append_element_content_handler(lol_html::element!("script", |_el| Ok(())));
    let mut r = lol_html::HtmlRewriter::new(settings, |c: &[u8]| out += c.len());
    for chunk in html.chunks(CHUNK) {
        let _ = r.write(chunk);
    }
    let _ = r.end();
    out
}

/// The proxy's page rewriter over `html`, fed as the proxy feeds it: in
/// [`CHUNK`]s of shared bytes, as Pingora hands over what it read.
pub fn rewrite(html: &bytes::Bytes, s: &RewriteSpec) -> usize {
    rewrite_with(html, s, true)
}

/// The same without early exit: lol_html reads every byte (as before issue 30).
pub fn rewrite_full(html: &bytes::Bytes, s: &RewriteSpec) -> usize {
    rewrite_with(html, s, false)
}

fn rewrite_with(html: &bytes::Bytes, s: &RewriteSpec, early_exit: bool) -> usize {
    let mut r = PageRewriter::with_early_exit(s.clone(), early_exit);
    let mut out = 0;
    let mut at = 0;
    while at < html.len() {
        let end = html.len().min(at + CHUNK);
        out += r.write_bytes(&html.slice(at..end)).len();
        at = end;
    }
    out + r.finish().len()
}

/// A Debian tool the harness runs: `$ENV_VAR`, or `name` on the PATH or in
/// `/usr/sbin` (where nginx lives, often off a user's PATH).
pub fn tool(name: &str, env_var: &str) -> anyhow::Result<std::path::PathBuf> {
    if let Some(p) = std::env::var_os(env_var) {
        return Ok(p.into());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([std::path::PathBuf::from("/usr/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{name} not found: install it with `tests/install-deps bench` (Debian package {name})"
            )
        })
}

/// The `p` quantile (0..=1) of sorted durations (nearest rank).
pub fn percentile(sorted: &[std::time::Duration], p: f64) -> std::time::Duration {
    if sorted.is_empty() {
        return std::time::Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The sum of a figure over processes (nginx's master and workers).
pub fn sum_kib(pids: &[u32], key: &str) -> u64 {
    pids.iter()
        .filter_map(|p| stamp_tests::status_kib(*p, key))
        .sum()
}

/// Direct children of `pid`, from `/proc/*/stat`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|s| {
                    // The name is in parentheses and may hold spaces: the
                    // parent is the second field after the last ')'.
                    let rest = &s[s.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}
