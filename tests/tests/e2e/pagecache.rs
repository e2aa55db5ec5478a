//! The stamped-page cache through a real stamp-proxy: a page the origin
//! revalidates is stamped once, and never served stale or to another
//! variant: the origin changes the page, the snapshot changes, two tickets,
//! two encodings, per-response nonces, and answers that must not be kept.

use stamp_tests::{client, get_text, import_map, module_url, Encoding, Origin, Proxy, Route};

const A: &str = "export const who = 'ticket A';\n";
const B: &str = "export const who = 'ticket B';\n";

fn page(word: &str) -> String {
    format!(
        "<!doctype html><html><head>\
         <script type=\"importmap\">{{\"imports\":{{\"who\":\"/src/who.js\"}}}}</script>\
         </head><body><p>{word}</p><script type=module>import {{ who }} from 'who';</script>\
         </body></html>"
    )
}

async fn upload(proxy: &Proxy, key: &str, body: &str) {
    let r = client()
        .put(proxy.url(&format!("/__stamp/api/v1/tickets/{key}/modules/src/who.js")))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    // In the proxy's snapshot once its module URL is served.
    let url = proxy.url(&module_url("/src/who.js", body));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while client().get(&url).send().await.unwrap().status() != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "{key} never reached the snapshot"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// One page load: (status, x-ticket-stamp, body).
async fn load(
    proxy: &Proxy,
    path: &str,
    accept_encoding: Option<&str>,
) -> (u16, String, Vec<u8>, reqwest::header::HeaderMap) {
    let mut req = client().get(proxy.url(path));
    if let Some(ae) = accept_encoding {
        req = req.header("accept-encoding", ae);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let info = headers
        .get("x-ticket-stamp")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, info, r.bytes().await.unwrap().to_vec(), headers)
}

fn text(body: &[u8]) -> String {
    String::from_utf8(body.to_vec()).unwrap()
}

/// `stamp_page_cache_total{outcome="…"}` now.
async fn counted(proxy: &Proxy, outcome: &str) -> u64 {
    let metrics = get_text(&proxy.url("/__stamp/metrics")).await;
    let line = format!("stamp_page_cache_total{{outcome=\"{outcome}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// The `Accept-Encoding` the origin last got for `path`.
fn headers_of(origin: &Origin, path: &str) -> String {
    origin.last_headers(path).unwrap()["accept-encoding"]
        .to_str()
        .unwrap()
        .to_string()
}

fn origin_with(path: &str, word: &str, etag: &str) -> Route {
    let _ = path;
    Route::html(&page(word)).header("etag", etag).conditional()
}

#[tokio::test]
async fn a_revalidated_page_is_stamped_once_and_never_served_stale() {
    let origin = Origin::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(&origin.url, &["--store", &dir.path().to_string_lossy()]).unwrap();
    origin.route("/", origin_with("/", "first", "\"p1\""));
    upload(&proxy, "PC-1", A).await;
    let a_url = module_url("/src/who.js", A);

    // Stamped, stored, then served from the cache on the origin's 304.
    let (s, info, first, _) = load(&proxy, "/?dev=PC-1", None).await;
    assert_eq!(s, 200);
    assert!(!info.ends_with("; cached"), "{info}");
    assert_eq!(
        import_map(&text(&first)).unwrap()["imports"]["who"],
        a_url.as_str()
    );
    assert!(origin
        .last_headers("/")
        .unwrap()
        .get("if-none-match")
        .is_none());
    let hits = counted(&proxy, "hit").await;
    let (s, info, second, headers) = load(&proxy, "/?dev=PC-1", None).await;
    assert_eq!(s, 200);
    assert!(
        info.starts_with("stamping; ticket=PC-1") && info.ends_with("; cached"),
        "{info}\n{}",
        get_text(&proxy.url("/__stamp/metrics")).await
    );
    assert_eq!(
        origin.last_headers("/").unwrap()["if-none-match"],
        "\"p1\"",
        "every hit was revalidated with the origin"
    );
    assert_eq!(second, first, "the same stamped bytes");
    assert_eq!(headers["cache-control"], "private, no-store");
    assert!(
        headers.get("etag").is_none(),
        "the browser never revalidates a stamped page"
    );
    assert!(
        headers.get("set-cookie").is_some(),
        "the selection cookie is per request, on hits too"
    );
    assert_eq!(counted(&proxy, "hit").await, hits + 1);
    assert_eq!(
        headers["clear-site-data"], "\"prefetchCache\", \"prerenderCache\"",
        "a link that selects the ticket drops what was fetched ahead, on hits too"
    );
    // A browser on the ticket already: the stored page carries no
    // instruction of the request that filled it.
    let on = client()
        .get(proxy.url("/?dev=PC-1"))
        .header("cookie", "ticket_stamp=dev.PC-1")
        .send()
        .await
        .unwrap();
    assert!(on.headers()["x-ticket-stamp"]
        .to_str()
        .unwrap()
        .ends_with("; cached"));
    assert!(on.headers().get("clear-site-data").is_none());

    // The origin changes the page: its 200 replaces the entry at once.
    origin.route("/", origin_with("/", "second", "\"p2\""));
    let (_, info, changed, _) = load(&proxy, "/?dev=PC-1", None).await;
    assert!(!info.ends_with("; cached"), "{info}");
    assert!(text(&changed).contains("<p>second</p>"));
    let (_, info, again, _) = load(&proxy, "/?dev=PC-1", None).await;
    assert!(info.ends_with("; cached"), "{info}");
    assert_eq!(again, changed);

    // The snapshot changes (a new upload): the next page has the new module.
    upload(&proxy, "PC-1", B).await;
    let b_url = module_url("/src/who.js", B);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut latest;
    loop {
        latest = load(&proxy, "/?dev=PC-1", None).await;
        if text(&latest.2).contains(&b_url) || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(text(&latest.2).contains(&b_url), "{}", text(&latest.2));
    assert!(!text(&latest.2).contains(&a_url));

    // Two tickets on one page URL: each gets its own, hit or not.
    upload(&proxy, "PC-2", A).await;
    for _ in 0..3 {
        for (key, url, other) in [("PC-1", &b_url, &a_url), ("PC-2", &a_url, &b_url)] {
            let (_, info, body, _) = load(&proxy, &format!("/?dev={key}"), None).await;
            let body = text(&body);
            assert!(info.contains(&format!("ticket={key}")), "{info}");
            assert!(
                body.contains(url.as_str()) && !body.contains(other.as_str()),
                "{key}: {body}"
            );
            assert!(body.contains(key), "{key}'s badge");
        }
    }
    // Production never gets a stamped page from the cache.
    let (_, info, body, _) = load(&proxy, "/", None).await;
    assert!(!info.contains("cached"), "{info}");
    assert_eq!(text(&body), page("second"));
    assert!(counted(&proxy, "store").await >= 4);
}

#[tokio::test]
async fn encodings_nonces_and_private_answers() {
    let origin = Origin::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(&origin.url, &["--store", &dir.path().to_string_lossy()]).unwrap();
    upload(&proxy, "PC-3", A).await;
    let a_url = module_url("/src/who.js", A);

    // An origin that compresses: the cache holds the stamped page, one per
    // set of codings the origin is asked for (a client's that the proxy
    // reads), and each client gets it as the origin answered it: an
    // identity client plain, a gzip client compressed again.
    origin.route(
        "/gz",
        Route::html(&page("zipped"))
            .encoded(Encoding::Gzip)
            .header("etag", "\"g1\"")
            .conditional(),
    );
    for round in 0..2 {
        let (_, info, plain, _) = load(&proxy, "/gz?dev=PC-3", Some("identity")).await;
        assert_eq!(round == 1, info.ends_with("; cached"), "{info}");
        assert!(text(&plain).contains(&a_url) && text(&plain).contains("zipped"));
        assert!(headers_of(&origin, "/gz").contains("identity"));
        let (_, info, zipped, headers) = load(&proxy, "/gz?dev=PC-3", Some("gzip")).await;
        assert_eq!(
            round == 1,
            info.ends_with("; cached"),
            "{info}: not the identity client's entry"
        );
        assert_eq!(headers_of(&origin, "/gz"), "gzip");
        assert_eq!(headers["content-encoding"], "gzip");
        assert_eq!(
            stamp_tests::gunzip(&zipped),
            text(&plain),
            "the same page in both encodings"
        );
    }

    // A strict policy without a nonce: the rewrite makes one up, and every
    // response, hits included, has its own, in the header and the page.
    origin.route(
        "/csp",
        Route::html(&page("strict"))
            .header("content-security-policy", "script-src 'self'")
            .header("etag", "\"c1\"")
            .conditional(),
    );
    let mut nonces = Vec::new();
    for _ in 0..3 {
        let (_, info, body, headers) = load(&proxy, "/csp?dev=PC-3", None).await;
        let csp = headers["content-security-policy"]
            .to_str()
            .unwrap()
            .to_string();
        let nonce = csp
            .split("'nonce-")
            .nth(1)
            .and_then(|r| r.split('\'').next())
            .unwrap_or_else(|| panic!("{csp}"))
            .to_string();
        assert!(
            text(&body).contains(&format!("nonce=\"{nonce}\"")),
            "{info}: the page carries the header's nonce"
        );
        nonces.push((nonce, info.ends_with("; cached")));
    }
    assert_eq!(
        nonces.iter().filter(|(_, hit)| *hit).count(),
        2,
        "{nonces:?}"
    );
    let mut distinct: Vec<&String> = nonces.iter().map(|(n, _)| n).collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "no nonce is ever reused: {nonces:?}");

    // Answers that must not be kept: the origin is never asked to
    // revalidate them and no response is a hit.
    let cases = [
        (
            "/no-store",
            vec![("etag", "\"n1\""), ("cache-control", "no-store")],
        ),
        (
            "/private",
            vec![("etag", "\"n2\""), ("cache-control", "private, max-age=60")],
        ),
        (
            "/cookie",
            vec![("etag", "\"n3\""), ("set-cookie", "session=alice")],
        ),
        ("/weak", vec![("etag", "W/\"n4\"")]),
        (
            "/dated",
            vec![("last-modified", "Tue, 01 Dec 2026 10:00:00 GMT")],
        ),
        ("/vary", vec![("etag", "\"n5\""), ("vary", "Cookie")]),
    ];
    for (path, headers) in cases {
        let mut route = Route::html(&page(path)).conditional();
        for (k, v) in headers {
            route = route.header(k, v);
        }
        origin.route(path, route);
        for _ in 0..2 {
            let (s, info, body, _) = load(&proxy, &format!("{path}?dev=PC-3"), None).await;
            assert_eq!(s, 200, "{path}");
            assert!(!info.contains("cached"), "{path}: {info}");
            assert!(text(&body).contains(&a_url), "{path}");
            let sent = origin.last_headers(path).unwrap();
            assert!(sent.get("if-none-match").is_none(), "{path}");
        }
    }
    // A request with credentials is not answered from the cache either.
    let r = client()
        .get(proxy.url("/gz?dev=PC-3"))
        .header("authorization", "Bearer x")
        .send()
        .await
        .unwrap();
    let info = r.headers()["x-ticket-stamp"].to_str().unwrap().to_string();
    assert!(
        info.ends_with("; cached"),
        "a stored page still needs only the origin's word: {info}"
    );
    assert!(counted(&proxy, "uncacheable-directive").await >= 4);
    assert!(counted(&proxy, "uncacheable-cookie").await >= 2);
    assert!(counted(&proxy, "uncacheable-validator").await >= 4);
    let metrics = get_text(&proxy.url("/__stamp/metrics")).await;
    let bytes: i64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("stamp_page_cache_bytes "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(bytes > 0, "{metrics}");
    // Hits in the client's encoding leave the proxy's tasks whole.
    let log = proxy.log_text();
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test]
async fn the_cache_can_be_turned_off() {
    let origin = Origin::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("proxy.toml");
    std::fs::write(
        &conf,
        format!(
            "origin = \"{}\"\nstore = \"{}\"\n[rewrite]\npage_cache_bytes = 0\n",
            origin.url,
            dir.path().join("store").display()
        ),
    )
    .unwrap();
    let proxy = Proxy::start_with(None, &["--config", &conf.to_string_lossy()], &[]).unwrap();
    origin.route("/", origin_with("/", "off", "\"o1\""));
    upload(&proxy, "PC-4", A).await;
    for _ in 0..2 {
        let (_, info, _, _) = load(&proxy, "/?dev=PC-4", None).await;
        assert!(!info.contains("cached"), "{info}");
        assert!(origin
            .last_headers("/")
            .unwrap()
            .get("if-none-match")
            .is_none());
    }
    // A budget too small to hold a page is refused at start, with the key.
    std::fs::write(
        &conf,
        format!(
            "origin = \"{}\"\nstore = \"{}\"\n[rewrite]\npage_cache_bytes = 1000\n",
            origin.url,
            dir.path().join("store2").display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(stamp_tests::proxy::binary("stamp-proxy").unwrap())
        .args(["--config", &conf.to_string_lossy(), "--check"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rewrite.page_cache_bytes"), "{err}");
}
