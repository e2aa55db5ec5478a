//! What a selected ticket's page looks like through a real stamp-proxy in
//! front of a real origin: map merge and insertion, entry rewrites, CSP,
//! escaping, compressed origins, cache headers, conditional requests, HEAD,
//! and module serving.

use stamp_tests::{
    client, get_text, import_map, module_url, probe_data, seed_dir, without_probe, Encoding,
    Origin, Proxy, Route,
};

const GREET: &str = "export const greet = (n) => `ticket hello ${n}`;\n";

/// An origin, a proxy over an embedded store seeded with TKT-1 overriding
/// `/src/lib/greet.js`.
async fn setup() -> (Origin, Proxy, tempfile::TempDir) {
    let origin = Origin::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    seed_dir(dir.path(), "TKT-1", &[("/src/lib/greet.js", GREET)])
        .await
        .unwrap();
    let proxy = Proxy::start(&origin.url, &["--store", &dir.path().to_string_lossy()]).unwrap();
    (origin, proxy, dir)
}

/// `url`'s enforced Content-Security-Policy header and its page.
async fn policy_and_page(url: &str) -> (String, String) {
    let resp = client().get(url).send().await.unwrap();
    let policy = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    (policy, resp.text().await.unwrap())
}

fn ticket_url() -> String {
    module_url("/src/lib/greet.js", GREET)
}

#[tokio::test]
async fn merges_into_the_existing_map_with_scopes_and_integrity() {
    let (origin, proxy, _d) = setup().await;
    let page = r#"<!doctype html><html><head>
<script type="importmap">{
  "imports": {"lib/greet": "/src/lib/greet.js", "lib/": "/src/lib/", "app": "/src/main.js"},
  "scopes": {"/src/legacy/": {"/src/lib/greet.js": "/old/greet.js"}, "/src/vendor/": {"/src/": "/cdn/src/"}},
  "integrity": {"/src/lib/greet.js": "sha384-production", "/src/main.js": "sha384-main"}
}</script>
<script type="module" src="/src/main.js"></script></head><body>shop</body></html>"#;
    origin.route("/", Route::html(page));
    let resp = client().get(proxy.url("/?dev=tkt-1")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    let html = resp.text().await.unwrap();
    let map = import_map(&html).unwrap();
    let t = ticket_url();
    assert_eq!(map["imports"]["/src/lib/greet.js"], t.as_str());
    assert_eq!(
        map["imports"]["lib/greet"],
        t.as_str(),
        "bare alias follows the override"
    );
    assert_eq!(
        map["imports"]["lib/greet.js"],
        t.as_str(),
        "prefix alias gets a specific entry"
    );
    assert_eq!(
        map["imports"]["app"], "/src/main.js",
        "untouched entries stay"
    );
    assert_eq!(
        map["scopes"]["/src/legacy/"]["/src/lib/greet.js"],
        t.as_str(),
        "shadowing scope patched"
    );
    assert_eq!(
        map["scopes"]["/src/vendor/"]["/src/lib/greet.js"],
        t.as_str(),
        "prefix scope patched"
    );
    assert!(
        map["integrity"].get("/src/lib/greet.js").is_none(),
        "stale integrity dropped"
    );
    assert_eq!(map["integrity"]["/src/main.js"], "sha384-main");
    assert!(
        map["integrity"].get(t.as_str()).is_none(),
        "no integrity for the ticket's URL: its body ends with the probe's marker"
    );
    assert_eq!(
        html.matches("type=\"importmap\"").count(),
        1,
        "merged, never a second map"
    );
    assert!(
        html.contains("<head><script type=\"application/json\" id=\"ticket-stamp-data\">"),
        "the probe comes first in <head>, before any of the page's scripts: {html}"
    );
    assert!(
        without_probe(&html).ends_with("<body>shop</body></html>"),
        "nothing else is added to the body: {html}"
    );

    assert_eq!(h["cache-control"], "private, no-store");
    assert_eq!(
        h.get_all("vary").iter().collect::<Vec<_>>(),
        ["*"],
        "no cache (the HTTP cache, a service worker's) keeps a ticket page"
    );
    // The origin's length never: the stamped page's own, when it came whole
    // with its header (see `service/length.rs`), else chunked.
    match h.get("content-length") {
        Some(n) => assert_eq!(n.to_str().unwrap(), html.len().to_string()),
        None => assert_eq!(h["transfer-encoding"], "chunked"),
    }
    assert!(h.get("etag").is_none() && h.get("last-modified").is_none());
    let info = h["x-ticket-stamp"].to_str().unwrap();
    assert!(
        info.contains("ticket=TKT-1") && info.contains("view=dev"),
        "{info}"
    );
    let cookie = h["set-cookie"].to_str().unwrap();
    assert!(cookie.starts_with("ticket_stamp=dev.TKT-1;"), "{cookie}");
    for attr in ["Path=/", "HttpOnly", "SameSite=Lax", "Max-Age="] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "no Secure over plain http");
}

#[tokio::test]
async fn inserts_a_map_and_rewrites_entry_points() {
    let (origin, proxy, _d) = setup().await;
    origin.route(
        "/nomap",
        Route::html(
            "<html><head><title>x</title><link rel=\"modulepreload\" href=\"/src/lib/greet.js\" integrity=\"sha384-old\">\
             <script type=\"module\" src=\"./src/lib/greet.js\"></script></head><body></body></html>",
        ),
    );
    let html = get_text(&proxy.url("/nomap?dev=TKT-1")).await;
    let map = import_map(&html).unwrap();
    assert_eq!(map["imports"]["/src/lib/greet.js"], ticket_url().as_str());
    let map_at = html.find("importmap").unwrap();
    assert!(
        map_at < html.find("modulepreload").unwrap(),
        "map first: {html}"
    );
    assert!(
        html.contains(&format!("href=\"{}\"", ticket_url())),
        "{html}"
    );
    assert!(
        html.contains(&format!("src=\"{}\"", ticket_url())),
        "{html}"
    );
    assert!(
        !html.contains("sha384-old"),
        "integrity of a rewritten entry is updated"
    );

    // No <head> at all.
    origin.route(
        "/bare",
        Route::html("<script type=module src=/src/main.js></script><p>x</p>"),
    );
    let html = get_text(&proxy.url("/bare?dev=TKT-1")).await;
    assert!(
        html.starts_with("<script type=\"application/json\" id=\"ticket-stamp-data\">"),
        "{html}"
    );
    assert!(
        without_probe(&html).starts_with("<script type=\"importmap\">"),
        "{html}"
    );
}

#[tokio::test]
async fn merges_importmap_shim_maps() {
    let (origin, proxy, _d) = setup().await;
    origin.route(
        "/shim",
        Route::html("<script type=\"importmap-shim\">{\"imports\":{\"g\":\"/src/lib/greet.js\"}}</script><script type=module-shim src=/src/main.js></script>"),
    );
    let html = get_text(&proxy.url("/shim?dev=TKT-1")).await;
    assert!(html.contains("type=\"importmap-shim\""));
    let map = import_map(&html).unwrap();
    let absolute = format!("{}{}", proxy.url(""), ticket_url());
    assert_eq!(
        map["imports"]["g"],
        absolute.as_str(),
        "es-module-shims maps get absolute ticket URLs"
    );
}

#[tokio::test]
async fn csp_nonce_is_reused_and_hash_policies_get_our_sources() {
    let (origin, proxy, _d) = setup().await;
    origin.route(
        "/nonce",
        Route::html("<head><script type=module src=/src/main.js nonce=r4nd0m></script></head>")
            .header(
                "content-security-policy",
                "script-src 'nonce-r4nd0m' 'strict-dynamic'; object-src 'none'",
            ),
    );
    let resp = client()
        .get(proxy.url("/nonce?dev=TKT-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["content-security-policy"],
        "script-src 'nonce-r4nd0m' 'strict-dynamic'; object-src 'none'",
        "a nonce policy is left exactly as it was"
    );
    let html = resp.text().await.unwrap();
    assert!(
        html.contains("<script type=\"importmap\" nonce=\"r4nd0m\">"),
        "{html}"
    );

    origin.route(
        "/hash",
        Route::html("<head><script type=module src=/src/main.js></script></head>").header(
            "content-security-policy",
            "default-src 'self'; script-src 'self' 'sha256-abc='",
        ),
    );
    let (csp, html) = policy_and_page(&proxy.url("/hash?dev=TKT-1")).await;
    let html = without_probe(&html);
    let map_start = html.find("\">").unwrap() + 2;
    let map_text = &html[map_start..html.find("</script>").unwrap()];
    let hash = stamp_data::testing::csp_hash_source(map_text);
    assert!(
        csp.contains(&hash),
        "the inserted map's hash is allowed: {csp}"
    );
    assert!(
        csp.starts_with("default-src 'self'; script-src 'self' 'sha256-abc=' "),
        "nothing removed, and default-src untouched (no style is added): {csp}"
    );
    assert!(
        csp.contains(stamp_data::testing::probe_hash()),
        "the probe's hash is allowed too: {csp}"
    );
    let nonce = csp
        .split("'nonce-")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap();
    assert!(html.contains(&format!("nonce=\"{nonce}\"")), "{html}");

    origin.route(
        "/inline",
        Route::html("<head><script type=module src=/src/main.js></script></head>").header(
            "content-security-policy",
            "script-src 'self' 'unsafe-inline'",
        ),
    );
    let resp = client()
        .get(proxy.url("/inline?dev=TKT-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["content-security-policy"],
        "script-src 'self' 'unsafe-inline'"
    );
}

#[tokio::test]
async fn hostile_specifiers_cannot_break_out_of_the_script() {
    let origin = Origin::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = stamp_tests::open_store(&dir.path().to_string_lossy())
        .await
        .unwrap();
    stamp_tests::upload_bare(
        &store,
        "TKT-2",
        "</script><script>alert(1)</script>",
        "/src/x.js",
        "x",
    )
    .await
    .unwrap();
    stamp_tests::upload_bare(&store, "TKT-2", "a\u{2028}b&amp;<!--", "/src/y.js", "y")
        .await
        .unwrap();
    drop(store);
    let proxy = Proxy::start(&origin.url, &["--store", &dir.path().to_string_lossy()]).unwrap();
    origin.route(
        "/",
        Route::html("<head><script type=module src=/m.js></script></head><body></body>"),
    );
    let html = get_text(&proxy.url("/?dev=TKT-2")).await;
    assert!(!html.contains("<script>alert"), "{html}");
    assert!(
        !html.contains('\u{2028}') && !html.contains("<!--"),
        "{html}"
    );
    let html = without_probe(&html);
    assert_eq!(html.matches("</script>").count(), 2, "{html}");
    let map = import_map(&html).unwrap();
    assert!(
        map["imports"]
            .get("</script><script>alert(1)</script>")
            .is_some(),
        "round-trips as JSON"
    );
    assert!(map["imports"].get("a\u{2028}b&amp;<!--").is_some());
}

#[tokio::test]
async fn compressed_origin_pages_are_rewritten_and_recompressed() {
    let (origin, proxy, _d) = setup().await;
    let page = format!(
        "<html><head><script type=importmap>{{\"imports\":{{\"g\":\"/src/lib/greet.js\"}}}}</script></head><body>{}</body></html>",
        "<p>padding</p>".repeat(2000)
    );
    for (path, enc) in [
        ("/gz", Encoding::Gzip),
        ("/br", Encoding::Brotli),
        ("/zstd", Encoding::Zstd),
        ("/deflate", Encoding::Deflate),
    ] {
        // This origin compresses whatever the client asked for.
        origin.route(path, Route::html(&page).encoded(enc).chunked(1500));
        let resp = client()
            .get(proxy.url(&format!("{path}?dev=TKT-1")))
            .send()
            .await
            .unwrap();
        assert!(resp.headers().get("content-encoding").is_none(), "{path}");
        let html = resp.text().await.unwrap();
        assert_eq!(
            import_map(&html).unwrap()["imports"]["g"],
            ticket_url().as_str(),
            "{path}"
        );
        assert!(html.ends_with("</body></html>"), "{path}: whole page");
        let sent = origin.last_headers(path).unwrap();
        assert_eq!(
            sent["accept-encoding"], "identity",
            "{path}: a client that accepts no coding: identity asked of the origin"
        );
    }
    // A client that accepts gzip gets the rewritten page compressed, as
    // the origin compressed it; the origin is asked with what the client
    // accepts and the proxy reads.
    let resp = client()
        .get(proxy.url("/br?dev=TKT-1"))
        .header("accept-encoding", "gzip, dcb")
        .send()
        .await
        .unwrap();
    assert_eq!(
        origin.last_headers("/br").unwrap()["accept-encoding"],
        "gzip"
    );
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    let body = resp.bytes().await.unwrap();
    let plain = stamp_tests::gunzip(&body);
    assert_eq!(
        import_map(&plain).unwrap()["imports"]["g"],
        ticket_url().as_str()
    );
}

/// A page goes out in the coding production would have given it: the
/// origin is asked with the client's `Accept-Encoding` (the codings the
/// proxy reads), and the proxy compresses a rewritten page again only when
/// the origin had compressed it. An origin that sends its pages as they are
/// gets them out as they are, ticket pages and production's overlay alike,
/// and an answer the proxy did not rewrite is never compressed by it.
#[tokio::test]
async fn pages_go_out_in_the_coding_production_would_have() {
    const OTHER: &str = "export const other = 1;\n";
    let origin = Origin::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    seed_dir(dir.path(), "TKT-1", &[("/src/lib/greet.js", GREET)])
        .await
        .unwrap();
    seed_dir(dir.path(), "REL-1", &[("/src/lib/other.js", OTHER)])
        .await
        .unwrap();
    let store = stamp_tests::open_store(&dir.path().to_string_lossy())
        .await
        .unwrap();
    for _ in 0..2 {
        stamp_tests::transition(&store, "REL-1", stamp_model::lifecycle::Transition::Promote)
            .await
            .unwrap();
    }
    drop(store);
    let proxy = Proxy::start(&origin.url, &["--store", &dir.path().to_string_lossy()]).unwrap();
    let page = format!(
        "<html><head><script type=importmap>{{\"imports\":{{\"g\":\"/src/lib/greet.js\",\"o\":\"/src/lib/other.js\"}}}}</script></head><body>{}</body></html>",
        "<p>padding</p>".repeat(500)
    );
    origin.route("/plain", Route::html(&page));
    origin.route("/gz", Route::html(&page).encoded(Encoding::Gzip));
    origin.route(
        "/notes",
        Route::bytes("text/plain", "plain words ".repeat(500).into_bytes()),
    );
    // Chrome's, with a shared dictionary.
    let chrome = "gzip, deflate, br, zstd, dcb, dcz";
    let released = module_url("/src/lib/other.js", OTHER);
    for (path, origin_path) in [
        ("/plain?dev=TKT-1", "/plain"),
        ("/plain", "/plain"),
        ("/gz?dev=TKT-1", "/gz"),
        ("/gz", "/gz"),
    ] {
        let resp = client()
            .get(proxy.url(path))
            .header("accept", "text/html")
            .header("accept-encoding", chrome)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(
            origin.last_headers(origin_path).unwrap()["accept-encoding"],
            "gzip, deflate, br, zstd",
            "{path}: the client's codings the proxy reads"
        );
        let h = resp.headers().clone();
        let vary_ae = h.get_all("vary").iter().any(|v| {
            v.to_str()
                .unwrap()
                .to_ascii_lowercase()
                .contains("accept-encoding")
        });
        let body = resp.bytes().await.unwrap();
        let html = if origin_path == "/gz" {
            assert_eq!(h["content-encoding"], "gzip", "{path}: compressed again");
            // A ticket's page varies on everything (`*`).
            assert!(vary_ae || h["vary"] == "*", "{path}: {h:?}");
            stamp_tests::gunzip(&body)
        } else {
            assert!(
                h.get("content-encoding").is_none(),
                "{path}: the origin sent it uncompressed, so does the proxy"
            );
            assert!(!vary_ae, "{path}: {h:?}");
            String::from_utf8(body.to_vec()).unwrap()
        };
        let map = import_map(&html).unwrap();
        assert_eq!(
            map["imports"]["o"],
            released.as_str(),
            "{path}: the overlay"
        );
        if path.contains("dev=") {
            assert_eq!(map["imports"]["g"], ticket_url().as_str(), "{path}");
        }
        assert!(html.ends_with("</body></html>"), "{path}: whole page");
    }
    // Not a page the proxy rewrites: as the origin sent it.
    let resp = client()
        .get(proxy.url("/notes?dev=TKT-1"))
        .header("accept", "text/html")
        .header("accept-encoding", chrome)
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("content-encoding").is_none());
    assert_eq!(resp.text().await.unwrap(), "plain words ".repeat(500));
}

/// An origin of raw bytes (the test origin sends no informational
/// answers): each of its next four connections gets `answer` once its
/// request's head has come. Its URL.
fn raw_origin(answer: Vec<u8>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming().take(4) {
            let Ok(mut conn) = conn else { return };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if std::io::Read::read(&mut conn, &mut byte).unwrap_or(0) == 0 {
                    break;
                }
                head.push(byte[0]);
            }
            let _ = std::io::Write::write_all(&mut conn, &answer);
        }
    });
    url
}

/// Early hints (103) before a compressed page: the page's own answer
/// decides its coding, and is compressed again (an origin of raw bytes:
/// the test origin sends no informational answers).
#[tokio::test]
async fn early_hints_leave_the_page_its_own_coding() {
    let page = "<html><head><script type=importmap>{\"imports\":{\"g\":\"/src/lib/greet.js\"}}</script></head><body><p>hinted</p></body></html>";
    let gz = Encoding::Gzip.encode(page.as_bytes());
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-encoding: gzip\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        gz.len()
    );
    let hints = b"HTTP/1.1 103 Early Hints\r\nlink: </app.css>; rel=preload\r\n\r\n";
    let url = raw_origin([&hints[..], head.as_bytes(), &gz].concat());
    let dir = tempfile::tempdir().unwrap();
    seed_dir(dir.path(), "TKT-1", &[("/src/lib/greet.js", GREET)])
        .await
        .unwrap();
    let proxy = Proxy::start(&url, &["--store", &dir.path().to_string_lossy()]).unwrap();
    let resp = client()
        .get(proxy.url("/?dev=TKT-1"))
        .header("accept", "text/html")
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    let body = resp.bytes().await.unwrap();
    let plain = stamp_tests::gunzip(&body);
    assert_eq!(
        import_map(&plain).unwrap()["imports"]["g"],
        ticket_url().as_str()
    );
    assert!(plain.contains("hinted"));
}

/// Early hints are the page's own preloads, sent ahead: on a ticket page,
/// a preload of the ticket's file there points at the ticket's URL, as
/// the page's `Link` header and elements do; production visitors get them
/// as they came. (Read off the wire: HTTP clients hide informational
/// answers.)
#[tokio::test]
async fn early_hints_preload_the_tickets_files() {
    let page = "<html><head><script type=module src=/src/lib/greet.js></script></head><body><p>hinted</p></body></html>";
    let hints = "HTTP/1.1 103 Early Hints\r\nlink: </src/lib/greet.js>; rel=modulepreload, </app.css>; rel=preload; as=style\r\n\r\n";
    let whole = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
        page.len()
    );
    let url = raw_origin(format!("{hints}{whole}").into_bytes());
    let dir = tempfile::tempdir().unwrap();
    seed_dir(dir.path(), "TKT-1", &[("/src/lib/greet.js", GREET)])
        .await
        .unwrap();
    let proxy = Proxy::start(&url, &["--store", &dir.path().to_string_lossy()]).unwrap();
    let raw = |path: &str| {
        let addr = proxy.url("").trim_start_matches("http://").to_string();
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nhost: shop.example\r\naccept: text/html\r\nconnection: close\r\n\r\n"
        );
        std::io::Write::write_all(&mut conn, request.as_bytes()).unwrap();
        let mut out = Vec::new();
        let _ = std::io::Read::read_to_end(&mut conn, &mut out);
        String::from_utf8_lossy(&out).into_owned()
    };
    let ticket = raw("/?dev=TKT-1");
    let hints = ticket
        .split("\r\n\r\n")
        .next()
        .filter(|h| h.starts_with("HTTP/1.1 103"))
        .unwrap_or_else(|| panic!("the early hints went out: {ticket}"));
    assert!(
        hints.to_ascii_lowercase().contains(&format!(
            "link: <{}>; rel=modulepreload, </app.css>; rel=preload; as=style",
            ticket_url()
        )),
        "{hints}"
    );
    assert!(ticket.contains("hinted"), "{ticket}");
    let production = raw("/").to_ascii_lowercase();
    assert!(production.starts_with("http/1.1 103"), "{production}");
    assert!(
        production.contains("link: </src/lib/greet.js>; rel=modulepreload"),
        "{production}"
    );
}

/// A page the origin sends at once goes out with the stamped page's own
/// `Content-Length`, not chunked (`service/length.rs`); compressed again
/// (the origin compressed it) for a client that asks, the compressed length. Every answer on one kept-alive
/// connection: a length off by a byte would break the next answer there.
#[tokio::test]
async fn a_page_that_came_whole_goes_out_with_its_own_length() {
    let (origin, proxy, _d) = setup().await;
    let page = format!(
        "<html><head><script type=importmap>{{\"imports\":{{\"g\":\"/src/lib/greet.js\"}}}}</script></head><body>{}</body></html>",
        "<p>padding &amp; more</p>".repeat(200)
    );
    origin.route("/whole", Route::html(&page));
    origin.route("/whole-gz", Route::html(&page).encoded(Encoding::Gzip));
    let one = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .timeout(std::time::Duration::from_secs(10))
        .no_proxy()
        .build()
        .unwrap();
    let mut said = 0;
    for i in 0..20 {
        // Every other answer asked by a client that accepts gzip: of the
        // origin that sends the page as it is (out as it came, uncompressed),
        // and of one that compresses it (compressed again).
        let gzip = i % 2 == 1;
        let path = if i % 4 == 3 { "/whole-gz" } else { "/whole" };
        let mut req = one.get(proxy.url(&format!("{path}?dev=TKT-1")));
        if gzip {
            req = req.header("accept-encoding", "gzip");
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let h = resp.headers().clone();
        let body = resp.bytes().await.unwrap();
        match h.get("content-length") {
            Some(n) => {
                said += 1;
                assert_eq!(n.to_str().unwrap(), body.len().to_string(), "{i}");
                assert!(h.get("transfer-encoding").is_none(), "{i}");
            }
            None => assert_eq!(h["transfer-encoding"], "chunked", "{i}"),
        }
        let html = if gzip && i % 4 == 3 {
            assert_eq!(h["content-encoding"], "gzip", "{i}");
            stamp_tests::gunzip(&body)
        } else {
            assert!(h.get("content-encoding").is_none(), "{i}");
            String::from_utf8(body.to_vec()).unwrap()
        };
        assert_eq!(
            import_map(&html).unwrap()["imports"]["g"],
            ticket_url().as_str(),
            "{i}"
        );
        assert!(html.ends_with("</body></html>"), "{i}: whole page");
    }
    assert!(
        said > 0,
        "a page sent at once went out chunked every time: its length is never known at the header"
    );
}

/// Pages served with a remembered head so far (the proxy's metric).
async fn heads_remembered(proxy: &Proxy) -> u64 {
    let metrics = get_text(&proxy.url("/__stamp/metrics")).await;
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("stamp_rewrite_heads_remembered_total ")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no heads metric:\n{metrics}"))
}

/// A head seen before is not read again (`rewrite/memo.rs`): the second
/// and later views of a page whose head is the same give the same page, and
/// the metric counts them; another body after the same head is its own.
#[tokio::test]
async fn a_head_seen_before_is_not_read_again() {
    let (origin, proxy, _d) = setup().await;
    let head = "<!doctype html><html><head><script type=importmap>{\"imports\":{\"g\":\"/src/lib/greet.js\"}}</script></head><body>";
    origin.route(
        "/a",
        Route::html(&format!("{head}<p>first</p></body></html>")),
    );
    let first = get_text(&proxy.url("/a?dev=TKT-1")).await;
    assert_eq!(
        import_map(&first).unwrap()["imports"]["g"],
        ticket_url().as_str()
    );
    for _ in 0..3 {
        assert_eq!(get_text(&proxy.url("/a?dev=TKT-1")).await, first);
    }
    origin.route(
        "/a",
        Route::html(&format!(
            "{head}<p>second</p><script type=module src=/src/lib/greet.js></script></body></html>"
        )),
    );
    let second = get_text(&proxy.url("/a?dev=TKT-1")).await;
    assert_eq!(
        without_probe(&second),
        without_probe(&first).replace(
            "<p>first</p>",
            &format!(
                "<p>second</p><script type=module src=\"{}\"></script>",
                ticket_url()
            )
        ),
        "the kept head, then this page's own body, read"
    );
    let remembered = heads_remembered(&proxy).await;
    assert!(
        remembered >= 3,
        "{remembered} of 5 views began with a kept head"
    );
}

/// A page whose policy header needs a nonce for the proxy's elements gets
/// one made up for each response: its head is remembered all the same, and
/// each view's header and markup carry that view's nonce, never another's.
#[tokio::test]
async fn a_head_under_a_strict_policy_is_remembered_with_each_views_nonce() {
    let (origin, proxy, _d) = setup().await;
    let head = "<!doctype html><html><head><script type=importmap>{\"imports\":{\"g\":\"/src/lib/greet.js\"}}</script></head><body>";
    origin.route(
        "/strict",
        Route::html(&format!("{head}<p>page</p></body></html>"))
            .header("content-security-policy", "script-src 'self'"),
    );
    let before = heads_remembered(&proxy).await;
    let mut nonces = Vec::new();
    let mut pages = Vec::new();
    for _ in 0..4 {
        let (policy, html) = policy_and_page(&proxy.url("/strict?dev=TKT-1")).await;
        let nonce = policy
            .split("'nonce-")
            .nth(1)
            .and_then(|r| r.split('\'').next())
            .unwrap_or_else(|| panic!("no nonce in {policy}"))
            .to_string();
        assert_eq!(
            html.matches(&format!("nonce=\"{nonce}\"")).count(),
            2,
            "the probe and the map carry this response's nonce {nonce}: {html}"
        );
        for old in &nonces {
            assert!(!html.contains(old), "another view's nonce {old}: {html}");
            assert_ne!(old, &nonce);
        }
        assert_eq!(
            import_map(&html).unwrap()["imports"]["g"],
            ticket_url().as_str()
        );
        pages.push(html.replace(&nonce, "NONCE"));
        nonces.push(nonce);
    }
    assert!(pages.windows(2).all(|w| w[0] == w[1]), "{pages:?}");
    let now = heads_remembered(&proxy).await;
    assert!(
        now >= before + 3,
        "{} of 4 views began with a kept head",
        now - before
    );
}

#[tokio::test]
async fn no_transform_is_honoured() {
    let (origin, proxy, _d) = setup().await;
    let page = "<script type=module src=/src/lib/greet.js></script>";
    origin.route(
        "/nt",
        Route::html(page).header("cache-control", "no-transform"),
    );
    let resp = client()
        .get(proxy.url("/nt?dev=TKT-1"))
        .send()
        .await
        .unwrap();
    let info = resp.headers()["x-ticket-stamp"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        info.starts_with("unchanged") && info.contains("no-transform"),
        "{info}"
    );
    assert_eq!(resp.text().await.unwrap(), page);
}

#[tokio::test]
async fn conditional_and_range_requests_never_revive_production() {
    let (origin, proxy, _d) = setup().await;
    origin.route(
        "/c",
        Route::html("<script type=module src=/src/lib/greet.js></script>")
            .header("etag", "\"v1\"")
            .header("last-modified", "Wed, 21 Oct 2026 07:28:00 GMT")
            .conditional(),
    );
    // Production: conditional requests pass through (a 304 is fine).
    let resp = client()
        .get(proxy.url("/c"))
        .header("if-none-match", "\"v1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 304);
    // Ticket: the browser's production copy must not be revalidated into use.
    let resp = client()
        .get(proxy.url("/c?dev=TKT-1"))
        .header("if-none-match", "\"v1\"")
        .header("if-modified-since", "Wed, 21 Oct 2026 07:28:00 GMT")
        .header("range", "bytes=0-10")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("etag").is_none());
    assert!(resp.text().await.unwrap().contains(&ticket_url()));
    let sent = origin.last_headers("/c").unwrap();
    for h in ["if-none-match", "if-modified-since", "range"] {
        assert!(sent.get(h).is_none(), "{h} reached the origin");
    }
}

#[tokio::test]
async fn head_204_and_non_html_are_correct() {
    let (origin, proxy, _d) = setup().await;
    origin.route(
        "/",
        Route::html("<script type=module src=/src/lib/greet.js></script>"),
    );
    let resp = client()
        .head(proxy.url("/?dev=TKT-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers().get("content-length").is_none(),
        "no stale length on HEAD"
    );
    assert_eq!(resp.headers()["cache-control"], "private, no-store");
    assert!(resp.bytes().await.unwrap().is_empty());

    origin.route("/empty", Route::html("").status(204));
    let resp = client()
        .get(proxy.url("/empty?dev=TKT-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);

    let js = "export const x = 1; // <script type=module src=/src/lib/greet.js>";
    origin.route(
        "/src/main.js",
        Route::bytes("text/javascript", js.as_bytes().to_vec()),
    );
    let resp = client()
        .get(proxy.url("/src/main.js?dev=TKT-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), js, "only HTML is rewritten");
}

/// A ticket's file by its content-addressed URL: kept by no cache while
/// only a ticket's or a rollout side's (`Vary: *`: an app's service
/// worker that looks its cache up ignoring the query would give it to
/// production's pages), kept for good once released, and by none again
/// once reverted.
#[tokio::test]
async fn ticket_modules_are_served_by_content_hash_and_kept_once_released() {
    let (_origin, proxy, _d) = setup().await;
    let url = proxy.url(&ticket_url());
    let resp = client().get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert_eq!(h["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(h["cache-control"], "private, no-store");
    assert_eq!(h["vary"], "*");
    assert_eq!(h["cdn-cache-control"], "no-store");
    assert_eq!(h["x-content-type-options"], "nosniff");
    let etag = h["etag"].to_str().unwrap().to_string();
    assert_eq!(
        etag,
        format!("\"{}\"", stamp_model::ticket::Hash::of(GREET.as_bytes()))
    );
    let served = resp.text().await.unwrap();
    assert_eq!(stamp_tests::without_marker(&served), GREET);

    let resp = client()
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 304);
    let resp = client().head(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    // The length of what GET serves: the body and its marker.
    assert_eq!(resp.headers()["content-length"], served.len().to_string());

    let unknown = module_url("/src/lib/greet.js", "never uploaded");
    assert_eq!(
        client()
            .get(proxy.url(&unknown))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let resp = client()
        .get(proxy.url("/src/a.js?__ts=nothex"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    // Same body at another path (a document type, even): not served at all,
    // a body answers only at the path it was uploaded under.
    let html_path = proxy.url(&module_url("/evil.html", GREET));
    let resp = client().get(html_path).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_ne!(resp.headers()["content-type"], "text/html");
    let resp = client().post(&url).body("x").send().await.unwrap();
    assert_eq!(resp.status(), 405);
    // Released: production's, kept for good.
    let move_to = |from: &'static str, action: &'static str| {
        let proxy = &proxy;
        async move {
            let resp = client()
                .post(proxy.url(&format!("/__stamp/api/v1/tickets/TKT-1/{action}")))
                .json(&serde_json::json!({ "from": from }))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "{action} from {from}");
        }
    };
    move_to("dev", "promote").await;
    let kept = |want: &'static str| {
        let url = url.clone();
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            loop {
                let resp = client().get(&url).send().await.unwrap();
                assert_eq!(resp.status(), 200);
                let cc = resp.headers()["cache-control"]
                    .to_str()
                    .unwrap()
                    .to_string();
                if cc == want {
                    return resp.headers().clone();
                }
                assert!(std::time::Instant::now() < deadline, "{cc}, not {want}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    // Rolling out: only a side gets it, and the rollout may revert it.
    let resp = client()
        .post(proxy.url("/__stamp/api/v1/tickets/TKT-1/promote"))
        .json(&serde_json::json!({"from": "qa", "rollout": {"steps": [50], "every": "1h"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let h = kept("private, no-store").await;
    assert_eq!(h["vary"], "*");
    move_to("prod", "revert").await;
    move_to("qa", "promote").await;
    let h = kept("public, max-age=31536000, immutable").await;
    assert!(h.get("vary").is_none_or(|v| v != "*"), "{h:?}");
    // Reverted: a ticket's again (a tab opened before still gets it).
    move_to("prod", "revert").await;
    let h = kept("private, no-store").await;
    assert_eq!(h["vary"], "*");
}

/// A ticket page carries the probe, first in `<head>` (what the page runs
/// is measured in the browser, and the badge shows that); it passes the
/// page's CSP by nonce or hash without weakening it; production never does.
#[tokio::test]
async fn ticket_pages_carry_the_probe_and_production_never_does() {
    let (origin, proxy, _d) = setup().await;
    origin.route(
        "/",
        Route::html("<html><head><script type=module src=/src/lib/greet.js></script></head><body><p>app</p></body></html>")
            .header("content-security-policy", "default-src 'self'; script-src 'self' 'nonce-sc4pt'"),
    );
    let (csp, html) = policy_and_page(&proxy.url("/?dev=TKT-1")).await;
    assert!(
        html.starts_with("<html><head><script type=\"application/json\" id=\"ticket-stamp-data\">"),
        "{html}"
    );
    let data = probe_data(&html).unwrap();
    assert_eq!(data["ticket"], "TKT-1");
    assert_eq!(data["view"], "dev");
    assert_eq!(data["badge"], true);
    assert_eq!(data["modules"][0]["p"], "/src/lib/greet.js");
    assert!(
        html.contains("<script nonce=\"sc4pt\">(()=>{"),
        "the policy's own nonce is reused for the probe: {html}"
    );
    assert_eq!(
        csp, "default-src 'self'; script-src 'self' 'nonce-sc4pt'",
        "untouched"
    );

    // A UTF-16 page cannot be read: the header says so, nothing claims "stamped".
    origin.route(
        "/utf16",
        Route::bytes(
            "text/html; charset=UTF-16",
            "<html></html>"
                .encode_utf16()
                .flat_map(u16::to_le_bytes)
                .collect(),
        ),
    );
    let r = client()
        .get(proxy.url("/utf16?dev=TKT-1"))
        .send()
        .await
        .unwrap();
    let info = r.headers()["x-ticket-stamp"].to_str().unwrap().to_string();
    assert!(
        info.starts_with("unchanged; reason=\"the page is UTF-16"),
        "{info}"
    );
    // Nor a quoted charset of the same, nor XHTML (XML): each says so.
    for (path, content_type, why) in [
        (
            "/utf16q",
            "text/html; charset=\"utf-16\"",
            "the page is UTF-16LE",
        ),
        (
            "/iso2022",
            "text/html;charset=ISO-2022-JP",
            "the page is ISO-2022-JP",
        ),
        (
            "/xhtml",
            "application/xhtml+xml; charset=utf-8",
            "the page is application/xhtml+xml",
        ),
    ] {
        origin.route(path, Route::bytes(content_type, b"<html></html>".to_vec()));
        let r = client()
            .get(proxy.url(&format!("{path}?dev=TKT-1")))
            .send()
            .await
            .unwrap();
        let info = r.headers()["x-ticket-stamp"].to_str().unwrap().to_string();
        assert!(
            info.starts_with(&format!("unchanged; reason=\"{why}")),
            "{path}: {info}"
        );
        assert_eq!(r.text().await.unwrap(), "<html></html>", "{path}");
    }

    // A page where nothing applies tells the probe why, for the badge.
    for (page, why) in [
        (
            "<html><head><script type=importmap>{ not json</script><script type=module src=/src/main.js></script></head><body>x</body></html>",
            "import map left unchanged",
        ),
        (
            "<html><body><template><script type=module src=/src/lib/greet.js></script></template>x</body></html>",
            "this page has no import map",
        ),
        ("<html><body>no modules at all", "this page has no import map"),
    ] {
        origin.route("/inert", Route::html(page));
        let html = get_text(&proxy.url("/inert?dev=TKT-1")).await;
        assert!(
            html.contains("<script type=\"application/json\" id=\"ticket-stamp-outcome\">{\"nothing\":")
                && html.contains(why),
            "{html}"
        );
        assert!(!html.contains("<template><script type=\"importmap\""), "nothing inserted into inert markup: {html}");
        assert!(!html.contains("<template><script type=\"application/json\""), "{html}");
    }

    // A hash-only policy gets the probe's hash (and the map's), nothing removed.
    origin.route(
        "/strict",
        Route::html("<body><script type=module src=/src/lib/greet.js></script></body>")
            .header("content-security-policy", "script-src 'self'"),
    );
    let resp = client()
        .get(proxy.url("/strict?dev=TKT-1"))
        .send()
        .await
        .unwrap();
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.starts_with("script-src 'self' ") && csp.contains(stamp_data::testing::probe_hash()),
        "{csp}"
    );

    let plain = get_text(&proxy.url("/")).await;
    assert!(!plain.contains("ticket-stamp"), "{plain}");
}

#[tokio::test]
async fn the_badge_can_be_turned_off() {
    let origin = Origin::start().unwrap();
    origin.route(
        "/",
        Route::html("<body><script type=module src=/src/lib/greet.js></script></body>"),
    );
    let dir = tempfile::tempdir().unwrap();
    seed_dir(
        &dir.path().join("s"),
        "TKT-1",
        &[("/src/lib/greet.js", GREET)],
    )
    .await
    .unwrap();
    let conf = dir.path().join("p.toml");
    std::fs::write(
        &conf,
        format!(
            "origin = \"{}\"\nstore = \"{}\"\n[badge]\nenabled = false\n",
            origin.url,
            dir.path().join("s").display()
        ),
    )
    .unwrap();
    let proxy = Proxy::start_with(None, &["--config", &conf.to_string_lossy()], &[]).unwrap();
    let html = get_text(&proxy.url("/?dev=TKT-1")).await;
    assert!(html.contains(&ticket_url()));
    assert_eq!(
        probe_data(&html).unwrap()["badge"],
        false,
        "the probe still measures and reports; it shows no badge"
    );
}

/// What the proxy compresses itself is a complete stream (never Pingora's
/// unfinished brotli), and an origin body that does not decode as its
/// Content-Encoding says aborts the response instead of passing for an
/// empty stamped page.
#[tokio::test]
async fn own_compression_is_complete_and_broken_origin_encodings_fail_loudly() {
    let (origin, proxy, _d) = setup().await;
    let page = format!(
        "<html><head><script type=module src=/src/lib/greet.js></script></head><body>{}</body></html>",
        "<p>padding</p>".repeat(2000)
    );
    // The origin compresses: the rewritten page is compressed again.
    origin.route("/page", Route::html(&page).encoded(Encoding::Gzip));
    for ae in ["br", "br, gzip", "gzip, br", "zstd", "gzip"] {
        let resp = client()
            .get(proxy.url("/page?dev=TKT-1"))
            .header("accept-encoding", ae)
            .send()
            .await
            .unwrap();
        let ce = resp
            .headers()
            .get("content-encoding")
            .map(|v| v.to_str().unwrap().to_string());
        let body = resp.bytes().await.unwrap().to_vec();
        let mut plain = Vec::new();
        match ce.as_deref() {
            None => plain = body,
            Some("gzip") => {
                std::io::Read::read_to_end(
                    &mut flate2::read::GzDecoder::new(&body[..]),
                    &mut plain,
                )
                .unwrap();
            }
            Some("zstd") => plain = zstd::decode_all(&body[..]).unwrap(),
            Some("br") => {
                std::io::Read::read_to_end(
                    &mut brotli::Decompressor::new(&body[..], 4096),
                    &mut plain,
                )
                .expect("a complete brotli stream");
            }
            Some(other) => panic!("unexpected content-encoding {other}"),
        }
        let html = String::from_utf8(plain).unwrap();
        assert!(html.ends_with("</body></html>"), "{ae}: whole page");
        assert!(html.contains(&ticket_url()), "{ae}: stamped");
    }
    // The origin claims gzip and sends something else.
    origin.route(
        "/broken",
        Route::bytes("text/html", b"this is not gzip at all, just bytes".to_vec())
            .header("content-encoding", "gzip"),
    );
    let resp = client()
        .get(proxy.url("/broken?dev=TKT-1"))
        .header("accept-encoding", "identity")
        .send()
        .await
        .unwrap();
    let outcome = if resp.status() == 502 {
        let text = resp.text().await.unwrap();
        assert!(
            text.contains("does not decode as its Content-Encoding"),
            "{text}"
        );
        Ok(())
    } else {
        match resp.bytes().await {
            Err(_) => Ok(()),
            Ok(b) => Err(format!(
                "a complete {} byte body: {:?}",
                b.len(),
                String::from_utf8_lossy(&b)
            )),
        }
    };
    assert!(
        outcome.is_ok(),
        "a broken origin encoding must fail loudly, got {outcome:?}"
    );
}

/// The probe looks for what the ticket itself changes in this view, not the
/// released tickets' overlay that every page carries.
#[tokio::test]
async fn the_badge_counts_the_tickets_own_modules() {
    let (origin, proxy, _d) = setup().await;
    origin.route(
        "/",
        Route::html("<html><head><script type=module src=/src/lib/greet.js></script></head><body><p>app</p></body></html>"),
    );
    let api = |path: &str| proxy.url(&format!("/__stamp/api/v1/{path}"));
    for m in ["src/x.js", "src/y.js"] {
        let r = client()
            .put(api(&format!("tickets/REL-9/modules/{m}")))
            .body("export default 1;")
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    for from in ["dev", "qa"] {
        let r = client()
            .post(api("tickets/REL-9/promote"))
            .header("content-type", "application/json")
            .body(format!("{{\"from\": \"{from}\"}}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let resp = client().get(proxy.url("/?dev=TKT-1")).send().await.unwrap();
        let info = resp.headers()["x-ticket-stamp"]
            .to_str()
            .unwrap()
            .to_string();
        let html = resp.text().await.unwrap();
        if info.contains("overrides=3") {
            let modules = probe_data(&html).unwrap()["modules"].clone();
            assert_eq!(modules.as_array().unwrap().len(), 1, "{modules}");
            assert_eq!(modules[0]["p"], "/src/lib/greet.js");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "overlay never applied: {info}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A page whose response has no policy loads the probe's script from the
/// proxy, by a name that changes with it: kept a year, compressed when the
/// browser accepts it, revalidated by its ETag. Pages with a policy carry
/// it inline, with the hash the policy is given. Anything else under the
/// probe's folder is a `404` nobody keeps, and only `GET` and `HEAD` are
/// answered.
#[tokio::test]
async fn the_probes_script_is_served_by_a_name_that_changes_with_it() {
    let (origin, proxy, _d) = setup().await;
    let page = "<!doctype html><html><head><script type=module src=/src/lib/greet.js></script></head><body>shop</body></html>";
    origin.route("/", Route::html(page));
    let html = get_text(&proxy.url("/?dev=TKT-1")).await;
    let start = html
        .find("<script src=\"/__stamp/probe/")
        .unwrap_or_else(|| panic!("the probe's script is loaded: {html}"));
    let path = html[start + "<script src=\"".len()..]
        .split('"')
        .next()
        .unwrap()
        .to_string();
    assert!(
        html[start..].starts_with(&format!("<script src=\"{path}\"></script>")),
        "classic, neither async nor deferred: it runs before the page's scripts: {html}"
    );
    let data = html.find("id=\"ticket-stamp-data\"").unwrap();
    assert!(data < start, "its data comes first: {html}");
    assert!(html.len() < 2_000, "the page carries no probe text: {html}");

    let resp = client().get(proxy.url(&path)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert_eq!(h["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(h["cache-control"], "public, max-age=31536000, immutable");
    assert_eq!(h["x-content-type-options"], "nosniff");
    let etag = h["etag"].to_str().unwrap().to_string();
    let body = resp.text().await.unwrap();
    assert!(body.contains("ticket-stamp-data"), "the probe: {body:.200}");
    assert_eq!(h["content-length"], body.len().to_string().as_str());
    assert_eq!(h["vary"], "Accept-Encoding");
    // Named by its text: another probe, another name.
    {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(body.as_bytes());
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(path, format!("/__stamp/probe/{hex}.js"));
    }

    // The same text a page with a policy carries inline, under the hash its
    // policy is given.
    origin.route(
        "/strict",
        Route::html(page).header("content-security-policy", "script-src 'self'"),
    );
    let (policy, strict) = policy_and_page(&proxy.url("/strict?dev=TKT-1")).await;
    assert!(!strict.contains("/__stamp/probe/"), "{strict}");
    assert!(
        strict.contains(&format!(">{body}</script>")),
        "inline: {strict:.300}"
    );
    use sha2::Digest;
    let hash = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        sha2::Sha256::digest(body.as_bytes()),
    );
    assert!(policy.contains(&format!("'sha256-{hash}'")), "{policy}");
    // A report-only policy keeps it inline too: it would report the load.
    origin.route(
        "/watched",
        Route::html(page).header("content-security-policy-report-only", "script-src 'none'"),
    );
    let watched = get_text(&proxy.url("/watched?dev=TKT-1")).await;
    assert!(!watched.contains("/__stamp/probe/"), "{watched}");

    // Revalidated by its ETag; HEAD has the headers and no body.
    let resp = client()
        .get(proxy.url(&path))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 304);
    assert_eq!(resp.headers()["etag"], etag.as_str());
    assert!(resp.bytes().await.unwrap().is_empty());
    let resp = client().head(proxy.url(&path)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-length"],
        body.len().to_string().as_str()
    );
    assert!(resp.bytes().await.unwrap().is_empty());

    // Compressed for a browser that accepts it.
    let resp = client()
        .get(proxy.url(&path))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    let zipped = resp.bytes().await.unwrap();
    assert!(zipped.len() * 2 < body.len(), "{} bytes", zipped.len());
    let mut plain = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&zipped[..]), &mut plain)
        .unwrap();
    assert_eq!(plain, body);

    // Another name (a page of another version of the proxy, a guess, a
    // hostile path) is never answered with this one, nor kept.
    let other = format!("{}0.js", &path[..path.len() - 4]);
    for wrong in [
        other.as_str(),
        "/__stamp/probe/",
        "/__stamp/probe/0000000000000000.js",
        "/__stamp/probe/%00.js",
        "/__stamp/probe/a/b.js",
    ] {
        let resp = client().get(proxy.url(wrong)).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{wrong}");
        assert_eq!(resp.headers()["cache-control"], "no-store", "{wrong}");
        let text = resp.text().await.unwrap();
        assert!(!text.contains("ticket-stamp-data"), "{wrong}: {text}");
    }
    let resp = client()
        .post(proxy.url(&path))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "GET, HEAD");
    // Nothing under the folder reaches the origin.
    assert_eq!(origin.hits(&path), 0);
    assert_eq!(origin.hits("/__stamp/probe/0000000000000000.js"), 0);
}
