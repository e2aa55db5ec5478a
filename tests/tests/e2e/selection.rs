//! Selecting a ticket in the browser: query, cookie, stickiness, exit, stage
//! views, the production overlay, and every malformed or stale selection
//! (which must serve production with a reason, never an error page).

use stamp_model::lifecycle::Transition;
use stamp_tests::{
    client, get_text, import_map, module_url, open_store, transition, upload, wait_snapshot,
    Origin, Proxy, RedisServer, Route,
};

const PAGE: &str = "<!doctype html><html><head><script type=\"importmap\">{\"imports\":{\"lib/greet\":\"/src/lib/greet.js\"}}</script><script type=module src=/src/main.js></script></head><body>prod</body></html>";
const V1: &str = "export const v = 1;\n";
const V2: &str = "export const v = 2;\n";
/// What a response that changes the browser's selection clears.
const SPECULATION_CLEARED: &str = "\"prefetchCache\", \"prerenderCache\"";

struct Fleet {
    origin: Origin,
    redis: RedisServer,
    proxy: Proxy,
}

/// A proxy over a real Redis, so the test can change tickets while it runs.
fn fleet() -> Fleet {
    let origin = Origin::start().unwrap();
    origin.route("/", Route::html(PAGE));
    origin.route("/about", Route::html(PAGE));
    let redis = RedisServer::start().unwrap();
    let proxy = Proxy::start(&origin.url, &["--store", &redis.url]).unwrap();
    Fleet {
        origin,
        redis,
        proxy,
    }
}

/// A fleet whose store holds each of `keys` with `V1` as greet.js, once
/// the proxy's snapshot has them.
async fn fleet_with(keys: &[&str]) -> (Fleet, stamp_store::SharedStore) {
    let f = fleet();
    let store = open_store(&f.redis.url).await.unwrap();
    for key in keys {
        upload(&store, key, &[("/src/lib/greet.js", V1)])
            .await
            .unwrap();
    }
    wait_snapshot(&f.proxy, version(&f).await).await.unwrap();
    (f, store)
}

async fn page(
    proxy: &Proxy,
    path: &str,
    cookie: Option<&str>,
) -> (reqwest::header::HeaderMap, String) {
    let mut req = client().get(proxy.url(path));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200, "{path} must never be an error page");
    let h = resp.headers().clone();
    (h, resp.text().await.unwrap())
}

fn greet_target(html: &str) -> String {
    import_map(html).unwrap()["imports"]["lib/greet"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn version(f: &Fleet) -> u64 {
    open_store(&f.redis.url)
        .await
        .unwrap()
        .version()
        .await
        .unwrap()
}

#[tokio::test]
async fn cookie_keeps_the_ticket_and_stamp_off_clears_it() {
    let (f, _) = fleet_with(&["TKT-1", "TKT-2"]).await;

    let (h, html) = page(&f.proxy, "/?dev=TKT-1", None).await;
    assert_eq!(greet_target(&html), module_url("/src/lib/greet.js", V1));
    let cookie = h["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(cookie, "ticket_stamp=dev.TKT-1");
    // What the browser is on changed: the pages it fetched ahead for its
    // tabs (on production, or on another ticket) go.
    assert_eq!(h["clear-site-data"], SPECULATION_CLEARED);

    // Navigation: no query, the cookie keeps the ticket; no new cookie is set.
    let (h, html) = page(&f.proxy, "/about", Some(&cookie)).await;
    assert_eq!(greet_target(&html), module_url("/src/lib/greet.js", V1));
    assert!(h.get("set-cookie").is_none());
    assert!(h.get("clear-site-data").is_none());
    assert_eq!(f.origin.hits("/about"), 1);
    // The link again, on the ticket already: what was fetched ahead stays.
    let (h, _) = page(&f.proxy, "/about?dev=TKT-1", Some(&cookie)).await;
    assert!(h.get("clear-site-data").is_none());
    // Another ticket's link: a change.
    let (h, html) = page(&f.proxy, "/about?dev=TKT-2", Some(&cookie)).await;
    assert_eq!(greet_target(&html), module_url("/src/lib/greet.js", V1));
    assert_eq!(h["clear-site-data"], SPECULATION_CLEARED);

    // Exit.
    let (h, html) = page(&f.proxy, "/?stamp=off", Some(&cookie)).await;
    assert_eq!(h["clear-site-data"], SPECULATION_CLEARED);
    assert_eq!(html, PAGE, "production, byte for byte");
    let clear = h["set-cookie"].to_str().unwrap();
    assert!(
        clear.starts_with("ticket_stamp=;") && clear.contains("Max-Age=0"),
        "{clear}"
    );
    assert!(h["x-ticket-stamp"]
        .to_str()
        .unwrap()
        .starts_with("production"));
    assert_eq!(h["cache-control"], "private, no-store", "never kept");
    // `?stamp=off` leaves as the badge's exit does: for as long as a
    // selection lasts, a ticket page still open in another tab does not
    // select the ticket again through its requests' Referer.
    let left = h
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|c| c.starts_with("ticket_stamp_left=dev.TKT-1;"))
        .expect("the exit's marker")
        .to_string();
    assert!(left.contains("Max-Age=43200"), "{left}");
    let from_ticket_tab = |cookie: Option<&'static str>| {
        let mut req = client()
            .get(f.proxy.url("/api/cart"))
            .header("referer", f.proxy.url("/?dev=TKT-1"))
            .header("sec-fetch-site", "same-origin")
            .header("sec-fetch-mode", "cors");
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        req.send()
    };
    // A page whose link the proxy never answered (a service worker did):
    // its request names the ticket, which waits for the page's next load
    // to ask about it; nothing is selected.
    let waiting = from_ticket_tab(None).await.unwrap();
    let cookies: Vec<_> = waiting.headers().get_all("set-cookie").iter().collect();
    assert!(
        cookies.len() == 1
            && cookies[0]
                .to_str()
                .unwrap()
                .starts_with("ticket_stamp_pending=dev.TKT-1;"),
        "{cookies:?}"
    );
    assert_eq!(waiting.headers()["cache-control"], "private, no-store");
    assert!(
        waiting.headers().get("clear-site-data").is_none(),
        "nothing changed"
    );
    // That load asks, even from this site, and clears what waited.
    let asked = client()
        .get(f.proxy.url("/?dev=TKT-1"))
        .header("cookie", "ticket_stamp_pending=dev.TKT-1")
        .header("sec-fetch-site", "same-origin")
        .header("sec-fetch-mode", "navigate")
        .header("sec-fetch-dest", "document")
        .send()
        .await
        .unwrap();
    assert!(asked.headers()["x-ticket-stamp"]
        .to_str()
        .unwrap()
        .contains("awaits confirmation"));
    assert!(asked.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .starts_with("ticket_stamp_pending=; Path=/; Max-Age=0"));
    // After leaving, the other tab names nothing at all; a link to another
    // ticket still does (what was left is TKT-1, not every ticket).
    let after_leaving = from_ticket_tab(Some("ticket_stamp_left=dev.TKT-1"))
        .await
        .unwrap();
    assert!(after_leaving.headers().get("set-cookie").is_none());
    let legacy = from_ticket_tab(Some("ticket_stamp_left=1")).await.unwrap();
    assert!(legacy.headers().get("set-cookie").is_none());
    let other = client()
        .get(f.proxy.url("/api/cart"))
        .header("referer", f.proxy.url("/?dev=TKT-2"))
        .header("sec-fetch-site", "same-origin")
        .header("sec-fetch-mode", "cors")
        .header("cookie", "ticket_stamp_left=dev.TKT-1")
        .send()
        .await
        .unwrap();
    assert!(
        other.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .starts_with("ticket_stamp_pending=dev.TKT-2;"),
        "another ticket's link is still asked about"
    );
}

/// What a browser keeps of production must never stand for a ticket's
/// page. The answer that puts a browser on a ticket (a page opened, or a
/// request of the origin's own whose cookie lands) clears its HTTP cache
/// for the origin, whatever the origin says of caching; another site's
/// request, whose cookie does not land, clears nothing. Answers to a URL that
/// names a selection and was not stamped, and production's HTML a browser
/// on a ticket gets as it came, are kept by no cache, a CDN's included
/// (`CDN-Cache-Control`, `Surrogate-Control`); nor are ticket pages.
#[tokio::test]
async fn what_a_ticket_link_clears_and_what_no_cache_keeps() {
    let (f, store) = fleet_with(&["TKT-1", "TKT-2"]).await;
    let kept = Route::html(PAGE)
        .header("cache-control", "public, max-age=600")
        .header("cdn-cache-control", "max-age=3600")
        .header("surrogate-control", "max-age=3600")
        .header("expires", "Thu, 01 Jan 2037 00:00:00 GMT");
    f.origin.route("/", kept.clone());
    f.origin.route("/about", kept);
    const NAVIGATE: [(&str, &str); 3] = [
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-dest", "document"),
        ("accept", "text/html"),
    ];
    const FETCH: [(&str, &str); 4] = [
        ("sec-fetch-mode", "cors"),
        ("sec-fetch-dest", "empty"),
        ("sec-fetch-site", "same-origin"),
        ("accept", "*/*"),
    ];
    const ELSEWHERE: [(&str, &str); 4] = [
        ("sec-fetch-mode", "no-cors"),
        ("sec-fetch-dest", "image"),
        ("sec-fetch-site", "cross-site"),
        ("accept", "image/*"),
    ];
    let get = |path: &str, headers: &[(&str, &str)], cookie: Option<&str>| {
        let mut req = client().get(f.proxy.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        async move {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.headers().clone()
        }
    };
    let never_kept = |h: &reqwest::header::HeaderMap, what: &str| {
        assert_eq!(h["cache-control"], "private, no-store", "{what}");
        for name in ["expires", "cdn-cache-control", "surrogate-control"] {
            assert!(h.get(name).is_none(), "{what}: {name} {:?}", h.get(name));
        }
    };
    let cleared = |h: &reqwest::header::HeaderMap| {
        h.get("clear-site-data")
            .map(|v| v.to_str().unwrap().to_string())
    };
    const ALL: &str = "\"cache\", \"prefetchCache\", \"prerenderCache\"";

    // Production: the origin's caching, untouched.
    let h = get("/about", &NAVIGATE, None).await;
    assert_eq!(h["cache-control"], "public, max-age=600");
    assert_eq!(h["cdn-cache-control"], "max-age=3600");
    assert!(cleared(&h).is_none());

    // The link, opened: the ticket's page clears what the browser kept.
    let h = get("/?dev=TKT-1", &NAVIGATE, None).await;
    assert_eq!(cleared(&h).as_deref(), Some(ALL));
    never_kept(&h, "the ticket's page");
    let cookie = "ticket_stamp=dev.TKT-1";
    // On the ticket: its pages clear nothing more, and are never kept.
    let h = get("/about", &NAVIGATE, Some(cookie)).await;
    assert!(cleared(&h).is_none());
    never_kept(&h, "a page on the ticket");
    // A script's fetch of production's page on the ticket: never kept.
    let h = get("/about", &FETCH, Some(cookie)).await;
    assert!(h
        .get("x-ticket-stamp")
        .is_none_or(|v| !v.to_str().unwrap().starts_with("stamping")));
    never_kept(&h, "production's page fetched on the ticket");
    // Another ticket's link, opened: a change, the cache cleared again.
    let h = get("/about?dev=TKT-2", &NAVIGATE, Some(cookie)).await;
    assert_eq!(cleared(&h).as_deref(), Some(ALL));
    // A script of the origin's own that selects (no page opened): its
    // cookie lands, so it puts the browser on the ticket as a link does.
    let h = get("/about?dev=TKT-1", &FETCH, Some("ticket_stamp=dev.TKT-2")).await;
    assert_eq!(cleared(&h).as_deref(), Some(ALL));
    // Another site's image of a ticket link selects nothing (see
    // `only_a_page_opened_selects_by_its_url`): nothing is cleared.
    let h = get("/about?dev=TKT-2", &ELSEWHERE, None).await;
    assert!(cleared(&h).is_none());
    assert!(h.get("set-cookie").is_none());
    // Leaving: production's pages are production's; what was fetched
    // ahead on the ticket goes.
    let h = get("/?stamp=off", &NAVIGATE, Some(cookie)).await;
    assert_eq!(cleared(&h).as_deref(), Some(SPECULATION_CLEARED));
    never_kept(&h, "the exit");

    // A link to a ticket that cannot be shown (not open yet), by a browser
    // that left (no cookie to clear): production's page, never kept, or it
    // would answer the same link once the ticket is open.
    let left = "ticket_stamp_left=dev.TKT-1";
    let h = get("/?dev=TKT-404", &NAVIGATE, Some(left)).await;
    assert!(h["x-ticket-stamp"]
        .to_str()
        .unwrap()
        .starts_with("production"));
    never_kept(&h, "a link to a ticket not open");
    // The same URL fetched by a script (no page, no notice): never kept.
    let h = get("/?dev=TKT-404", &FETCH, Some(left)).await;
    never_kept(&h, "a fetch of a link to a ticket not open");
    // An app's own parameter of the same name that names no ticket
    // (`?dev=1`) never becomes one: production's caching, as it came.
    let h = get("/about?dev=1", &FETCH, None).await;
    assert_eq!(h["cache-control"], "public, max-age=600");
    assert_eq!(h["cdn-cache-control"], "max-age=3600");

    // Production's file at a path the ticket has a file at, kept a year.
    f.origin.route(
        "/src/lib/greet.js",
        Route::js("export const v = 'production';\n")
            .header("cache-control", "public, max-age=31536000, immutable")
            .header("cdn-cache-control", "max-age=31536000")
            .header("etag", "\"prod-1\"")
            .conditional(),
    );
    let script = |referer: &str| {
        let page = f.proxy.url(referer);
        let req = client()
            .get(f.proxy.url("/src/lib/greet.js"))
            .header("sec-fetch-dest", "script")
            .header("sec-fetch-site", "same-origin")
            .header("sec-fetch-mode", "cors")
            .header("referer", page)
            .header("cookie", cookie);
        async move {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 200);
            (resp.headers().clone(), resp.text().await.unwrap())
        }
    };
    // A production visitor's: the origin's caching, untouched.
    let resp = client()
        .get(f.proxy.url("/src/lib/greet.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    // A page's request on the ticket (a `<link rel=preload>`, an inline
    // script's `import()`) gets production's, never kept: kept, it would
    // answer a worker's `importScripts` of the same URL, which gets the
    // ticket's, from the cache.
    let (h, body) = script("/about").await;
    assert!(body.contains("production"), "{body}");
    never_kept(&h, "production's file at a ticket's path, on the ticket");
    // A copy the browser kept where no clear reached is not revalidated on
    // the ticket: the whole answer comes, never kept, and replaces it. A
    // production visitor's revalidation is the origin's.
    let revalidate = |cookie: Option<&str>| {
        let mut req = client()
            .get(f.proxy.url("/src/lib/greet.js"))
            .header("sec-fetch-dest", "script")
            .header("sec-fetch-site", "same-origin")
            .header("referer", f.proxy.url("/about"))
            .header("if-none-match", "\"prod-1\"");
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        async move { req.send().await.unwrap() }
    };
    let resp = revalidate(Some(cookie)).await;
    assert_eq!(resp.status(), 200);
    never_kept(
        resp.headers(),
        "production's file revalidated on the ticket",
    );
    assert_eq!(revalidate(None).await.status(), 304);
    let (h, body) = script("/src/worker.js").await;
    assert!(
        body.starts_with(V1),
        "a worker's import gets the ticket's: {body}"
    );
    assert_eq!(h["cache-control"], "private, no-store");

    // Production's other version of one of the ticket's hashed files,
    // prefetched (no script request: production's answer), is never kept
    // either; the ticket's own file in place of the origin's 404 tells
    // CDNs `no-store` itself.
    upload(
        &store,
        "TKT-1",
        &[
            (
                "/assets/lazy-Ab12Cd34.js",
                "export const lazy = 'ticket';\n",
            ),
            ("/src/lib/only.js", "export const only = 1;\n"),
        ],
    )
    .await
    .unwrap();
    wait_snapshot(&f.proxy, version(&f).await).await.unwrap();
    f.origin.route(
        "/assets/lazy-Zz98Yy76.js",
        Route::js("export const lazy = 'production';\n")
            .header("cache-control", "public, max-age=31536000, immutable"),
    );
    let prefetch = |path: &str, cookie: Option<&str>| {
        let mut req = client()
            .get(f.proxy.url(path))
            .header("sec-fetch-dest", "empty")
            .header("sec-fetch-site", "same-origin")
            .header("sec-fetch-mode", "no-cors")
            .header("referer", f.proxy.url("/about"));
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        async move {
            let resp = req.send().await.unwrap();
            (resp.headers().clone(), resp.text().await.unwrap())
        }
    };
    let (h, body) = prefetch("/assets/lazy-Zz98Yy76.js", Some(cookie)).await;
    assert!(body.contains("production"), "{body}");
    never_kept(&h, "production's version of a ticket's hashed file");
    let (h, _) = prefetch("/assets/lazy-Zz98Yy76.js", None).await;
    assert_eq!(
        h["cache-control"], "public, max-age=31536000, immutable",
        "a production visitor's"
    );
    let resp = client()
        .get(f.proxy.url("/src/lib/only.js"))
        .header("sec-fetch-dest", "script")
        .header("sec-fetch-site", "same-origin")
        .header("referer", f.proxy.url("/about"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    let h = resp.headers().clone();
    let body = resp.text().await.unwrap();
    assert!(body.starts_with("export const only"), "{body}");
    assert_eq!(h["cache-control"], "private, no-store");
    assert_eq!(h["cdn-cache-control"], "no-store");
    assert_eq!(h["surrogate-control"], "no-store");
}

/// A page the browser fetches ahead (speculation rules, `<link
/// rel=prefetch>`) may never be opened: one whose answer would change what
/// the browser is on is refused (`503`, which browsers drop and ask again
/// for when it is opened), so a link hovered or prerendered selects nothing.
/// Ahead of need, pages that change nothing are answered as ever.
#[tokio::test]
async fn a_page_fetched_ahead_never_changes_the_selection() {
    let (f, _) = fleet_with(&["TKT-1"]).await;
    let ahead =
        |path: &str, purpose: (&'static str, &'static str), cookie: Option<&'static str>| {
            let mut req = client()
                .get(f.proxy.url(path))
                .header(purpose.0, purpose.1)
                .header("sec-fetch-mode", "navigate")
                .header("sec-fetch-dest", "document");
            if let Some(c) = cookie {
                req = req.header("cookie", c);
            }
            req.send()
        };
    let purposes = [
        ("sec-purpose", "prefetch"),
        ("sec-purpose", "prefetch;prerender"),
        ("purpose", "prefetch"),
        ("x-moz", "prefetch"),
        ("x-purpose", "preview"),
        // Turbo 8, htmx's preload extension, Next.js's router.
        ("x-sec-purpose", "prefetch"),
        ("hx-preloaded", "true"),
        ("next-router-prefetch", "1"),
    ];
    let on = Some("ticket_stamp=dev.TKT-1");
    for purpose in purposes {
        for (path, cookie) in [
            ("/?dev=TKT-1", None),
            ("/?stamp=off", on),
            ("/__stamp/leave?to=/", on),
            ("/", Some("ticket_stamp=dev.NOPE-9")),
        ] {
            let r = ahead(path, purpose, cookie).await.unwrap();
            assert_eq!(r.status(), 503, "{path} {purpose:?}");
            assert!(r.headers().get("set-cookie").is_none(), "{path}");
            assert!(r.headers().get("clear-site-data").is_none(), "{path}");
            assert_eq!(r.headers()["cache-control"], "no-store");
        }
        // Nothing changes: answered as ever.
        for (path, cookie) in [("/", None), ("/about", on), ("/?dev=TKT-1", on)] {
            let r = ahead(path, purpose, cookie).await.unwrap();
            assert_eq!(r.status(), 200, "{path} {purpose:?}");
            // At most the same selection, its time renewed.
            for c in r.headers().get_all("set-cookie") {
                assert!(
                    c.to_str().unwrap().starts_with("ticket_stamp=dev.TKT-1;"),
                    "{c:?}"
                );
            }
            assert!(r.headers().get("clear-site-data").is_none(), "{path}");
        }
    }
    // Opened for real, the link selects as ever.
    let (h, html) = page(&f.proxy, "/?dev=TKT-1", None).await;
    assert_eq!(greet_target(&html), module_url("/src/lib/greet.js", V1));
    assert!(h["set-cookie"]
        .to_str()
        .unwrap()
        .starts_with("ticket_stamp=dev.TKT-1"));
    // A header that names another purpose is no prefetch.
    let r = ahead("/?dev=TKT-1", ("sec-purpose", "prefetchy"), None)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// A link that changes the ticket, followed by a library inside the page
/// it is on (Turbo's Drive visits, frames and prefetches; htmx's boosted
/// links; jquery-pjax; Swup), is answered so that the library loads it as
/// a page, without a cookie and never kept: Turbo gets a page that says
/// `turbo-visit-control: reload`, htmx `HX-Redirect` (never off the
/// origin), pjax and Swup a `503` in plain text. A link that changes nothing, a form sent in place, data, a
/// fetch without a library's mark and a cookie found stale are answered as
/// ever.
#[tokio::test]
async fn a_link_that_changes_the_ticket_followed_in_place_loads_as_a_page() {
    let (f, _) = fleet_with(&["TKT-1"]).await;
    const TURBO: &str = "text/vnd.turbo-stream.html, text/html, application/xhtml+xml";
    let fetch = |method: reqwest::Method,
                 path: &str,
                 extra: &[(&'static str, &'static str)],
                 cookie: Option<&str>| {
        let mut req = client()
            .request(method, f.proxy.url(path))
            .header("sec-fetch-mode", "cors")
            .header("sec-fetch-dest", "empty");
        for (name, value) in extra {
            req = req.header(*name, *value);
        }
        if let Some(c) = cookie {
            req = req.header("cookie", c.to_string());
        }
        req.send()
    };
    let get = reqwest::Method::GET;
    let turbo = [
        ("accept", TURBO),
        ("x-turbo-request-id", "7f0c2a1e-5b7d-4c1a-9d3e-2a9b8c7d6e5f"),
    ];
    let frame = [
        ("accept", TURBO),
        ("x-turbo-request-id", "7f0c2a1e-5b7d-4c1a-9d3e-2a9b8c7d6e60"),
        ("turbo-frame", "cart"),
    ];
    let prefetch = [
        ("accept", TURBO),
        ("x-turbo-request-id", "7f0c2a1e-5b7d-4c1a-9d3e-2a9b8c7d6e61"),
        ("x-sec-purpose", "prefetch"),
    ];
    let htmx = [
        ("accept", "*/*"),
        ("hx-request", "true"),
        ("hx-boosted", "true"),
    ];
    let pjax = [
        ("accept", "text/html, */*; q=0.01"),
        ("x-pjax", "true"),
        ("x-pjax-container", "#main"),
    ];
    let swup = [
        ("accept", "text/html, application/xhtml+xml"),
        ("x-requested-with", "swup"),
    ];
    let on = Some("ticket_stamp=dev.TKT-1");
    for (path, cookie) in [
        ("/about?dev=TKT-1", None),
        ("/about?dev=TKT-1", Some("ticket_stamp=dev.OTHER-2")),
        ("/about?stamp=off", on),
        ("/about?dev=NOPE-9", on),
        ("/__stamp/leave?to=/", on),
    ] {
        for (who, extra) in [
            ("turbo", &turbo[..]),
            ("a turbo frame", &frame[..]),
            ("turbo's prefetch", &prefetch[..]),
            ("htmx", &htmx[..]),
            ("pjax", &pjax[..]),
            ("swup", &swup[..]),
        ] {
            let r = fetch(get.clone(), path, extra, cookie).await.unwrap();
            assert!(r.headers().get("set-cookie").is_none(), "{who} {path}");
            assert_eq!(r.headers()["cache-control"], "no-store", "{who} {path}");
            assert!(r.headers().get("clear-site-data").is_none(), "{who} {path}");
            if who == "htmx" {
                assert_eq!(r.status(), 503, "{who} {path}");
                assert_eq!(r.headers()["hx-redirect"], path);
            } else if who == "pjax" || who == "swup" {
                assert_eq!(r.status(), 503, "{who} {path}");
                assert!(r.headers().get("hx-redirect").is_none());
                assert!(r.headers()["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("text/plain"));
            } else {
                assert_eq!(r.status(), 200, "{who} {path}");
                assert!(r.headers().get("hx-redirect").is_none());
                let html = r.text().await.unwrap();
                assert!(
                    html.contains(r#"<meta name="turbo-visit-control" content="reload">"#),
                    "{who} {path}: {html}"
                );
            }
        }
    }
    // Never a redirect off the origin.
    let r = fetch(get.clone(), "//evil.example/x?dev=TKT-1", &htmx, None)
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["hx-redirect"], "/evil.example/x?dev=TKT-1");
    // On that ticket already, in a document of that ticket (its probe says
    // so, with the set of modules it runs, from its data block): its page,
    // in place.
    let page = stamp_tests::page_text(&f.proxy.url("/about"), "ticket_stamp=dev.TKT-1").await;
    let data = stamp_tests::probe_data(&page).unwrap();
    let runs: &'static str = format!("TKT-1 dev {}", data["variant"].as_str().unwrap()).leak();
    let in_the_ticket = [turbo.to_vec(), vec![("x-ticket-stamp-document", runs)]].concat();
    let r = fetch(get.clone(), "/about?dev=TKT-1", &in_the_ticket, on)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert_eq!(greet_target(&html), module_url("/src/lib/greet.js", V1));
    // In a document of production (no probe: another tab opened the
    // ticket), or of another ticket or view: it loads as a page.
    let before: &'static str = format!("{}0", &runs[..runs.len() - 1]).leak();
    assert_ne!(before, runs);
    for (who, says) in [
        ("production", None),
        ("qa", Some("TKT-1 qa")),
        ("another", Some("TKT-2 dev")),
        ("without its modules", Some("TKT-1 dev")),
        ("of other modules (an upload ago)", Some(before)),
    ] {
        let mut extra = turbo.to_vec();
        extra.extend(says.map(|s| ("x-ticket-stamp-document", s)));
        let r = fetch(get.clone(), "/about", &extra, on).await.unwrap();
        assert!(r.headers().get("set-cookie").is_none(), "{who}");
        let html = r.text().await.unwrap();
        assert!(html.contains("turbo-visit-control"), "{who}: {html}");
        let mut extra = htmx.to_vec();
        extra.extend(says.map(|s| ("x-ticket-stamp-document", s)));
        let r = fetch(get.clone(), "/about", &extra, on).await.unwrap();
        assert_eq!(r.status(), 503, "{who}");
        assert_eq!(r.headers()["hx-redirect"], "/about", "{who}");
    }
    // A Turbo frame's page is shown in its frame whatever its document runs
    // (loaded as a page, Turbo would put the tab on the frame's URL).
    let r = fetch(get.clone(), "/about", &frame, on).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(!r.text().await.unwrap().contains("turbo-visit-control"));
    // `?stamp=off` with nothing to leave changes nothing: production, in place.
    let r = fetch(get.clone(), "/about?stamp=off", &turbo, None)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(greet_target(&r.text().await.unwrap()), "/src/lib/greet.js");
    // A form sent in place, and data, with a ticket link: as ever.
    for (method, extra) in [
        (reqwest::Method::POST, &turbo[..]),
        (reqwest::Method::POST, &htmx[..]),
        (get.clone(), &[("accept", "application/json")][..]),
        (get.clone(), &[("accept", TURBO)][..]),
        (get.clone(), &[("hx-request", "true")][..]),
    ] {
        let r = fetch(method.clone(), "/about?dev=TKT-1", extra, None)
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{method} {extra:?}");
        assert!(
            r.headers()["set-cookie"]
                .to_str()
                .unwrap()
                .starts_with("ticket_stamp=dev.TKT-1"),
            "{method} {extra:?}"
        );
    }
    // A stale cookie is cleared on a page shown in place in a document of
    // production: no link asked. In the stale ticket's own document, the
    // page loads as a page.
    let stale_document = [
        turbo.to_vec(),
        vec![("x-ticket-stamp-document", "NOPE-9 dev")],
    ]
    .concat();
    let r = fetch(
        get.clone(),
        "/about",
        &stale_document,
        Some("ticket_stamp=dev.NOPE-9"),
    )
    .await
    .unwrap();
    assert!(r.text().await.unwrap().contains("turbo-visit-control"));
    let r = fetch(
        get.clone(),
        "/about",
        &turbo,
        Some("ticket_stamp=dev.NOPE-9"),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .starts_with("ticket_stamp=;"));
    // A page navigation is no fetch: the link selects.
    let r = client()
        .get(f.proxy.url("/about?dev=TKT-1"))
        .header("sec-fetch-mode", "navigate")
        .header("sec-fetch-dest", "document")
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("set-cookie").is_some());
}

/// An origin's `No-Vary-Search` that lets browsers answer any query of a
/// page with the copy they kept (`params`), or names one of ours, is
/// amended so that the proxy's parameters always count: a ticket link,
/// `?stamp=off` or a ticket module's `?__ts=` is never answered from
/// production's copy. Its field lines are read as one, as browsers read
/// them; one that ignores nothing of ours is left as it came, one some
/// browser would read otherwise is not sent.
#[tokio::test]
async fn no_vary_search_never_ignores_the_proxys_parameters() {
    let (f, _) = fleet_with(&["TKT-1"]).await;
    let ours = r#"key-order, params, except=("dev" "qa" "stamp" "st" "__ts" "stamp_live")"#;
    for (lines, want) in [
        (&["key-order", "params"][..], Some(ours)),
        (
            &[r#"params=("utm_source" "st")"#],
            Some(r#"params=("utm_source")"#),
        ),
        (
            &[r#"params=("utm_source")"#],
            Some(r#"params=("utm_source")"#),
        ),
        // Read otherwise by some browser: not sent, so every parameter counts.
        (&["params, except=(dev)"], None),
    ] {
        let mut route = Route::html(PAGE).header("cache-control", "max-age=600");
        for line in lines {
            route = route.header("no-vary-search", line);
        }
        f.origin.route("/nvs", route);
        for (path, cookie) in [
            ("/nvs", None),
            ("/nvs?dev=TKT-1", None),
            ("/nvs", Some("ticket_stamp=dev.TKT-1")),
        ] {
            let (h, _) = page(&f.proxy, path, cookie).await;
            let got: Vec<_> = h.get_all("no-vary-search").iter().collect();
            assert_eq!(got, Vec::from_iter(want), "{lines:?} on {path}");
        }
    }
}

/// `rewrite.production_vary_cookie`: production HTML carries `Vary:
/// Cookie` (for a CDN in front), to a browser's page view and to a fetch
/// alike; with a released ticket it always does; a ticket's page stays
/// `Vary: *`.
#[tokio::test]
async fn production_vary_cookie_reaches_every_production_page() {
    let origin = Origin::start().unwrap();
    origin.route("/", Route::html(PAGE).header("cache-control", "max-age=60"));
    let redis = RedisServer::start().unwrap();
    let conf = tempfile::tempdir().unwrap();
    let file = conf.path().join("proxy.toml");
    std::fs::write(&file, "[rewrite]\nproduction_vary_cookie = true\n").unwrap();
    let proxy = Proxy::start(
        &origin.url,
        &["--store", &redis.url, "--config", &file.to_string_lossy()],
    )
    .unwrap();
    let store = open_store(&redis.url).await.unwrap();
    upload(&store, "TKT-1", &[("/src/lib/greet.js", V1)])
        .await
        .unwrap();
    wait_snapshot(&proxy, store.version().await.unwrap())
        .await
        .unwrap();
    let vary = |path: &'static str, dest: &'static str, accept: &'static str| {
        let req = client()
            .get(proxy.url(path))
            .header("accept", accept)
            .header("sec-fetch-dest", dest);
        async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.headers()
                .get_all("vary")
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let page_view = ("document", "text/html");
    let a_fetch = ("empty", "*/*");
    for (what, (dest, accept)) in [("a page view", page_view), ("a fetch", a_fetch)] {
        let v = vary("/", dest, accept).await;
        assert!(v.contains("Cookie"), "production, {what}: {v:?}");
    }
    assert_eq!(vary("/?dev=TKT-1", page_view.0, page_view.1).await, "*");
    // A released ticket: production's page is the overlay.
    upload(&store, "TKT-2", &[("/src/lib/greet.js", V2)])
        .await
        .unwrap();
    transition(&store, "TKT-2", Transition::Promote)
        .await
        .unwrap();
    transition(&store, "TKT-2", Transition::Promote)
        .await
        .unwrap();
    wait_snapshot(&proxy, store.version().await.unwrap())
        .await
        .unwrap();
    let overlay = client()
        .get(proxy.url("/"))
        .header("accept", "text/html")
        .header("sec-fetch-dest", "document")
        .send()
        .await
        .unwrap();
    let v: Vec<_> = overlay.headers().get_all("vary").iter().collect();
    assert!(
        v.iter().any(|v| v.to_str().unwrap().contains("Cookie")),
        "{v:?}"
    );
    assert_eq!(
        greet_target(&overlay.text().await.unwrap()),
        module_url("/src/lib/greet.js", V2)
    );
}

#[tokio::test]
async fn the_query_wins_deterministically() {
    let f = fleet();
    let store = open_store(&f.redis.url).await.unwrap();
    upload(&store, "AAA-1", &[("/src/lib/greet.js", V1)])
        .await
        .unwrap();
    upload(&store, "BBB-2", &[("/src/lib/greet.js", V2)])
        .await
        .unwrap();
    transition(&store, "BBB-2", Transition::Promote)
        .await
        .unwrap();
    wait_snapshot(&f.proxy, version(&f).await).await.unwrap();

    // Query beats cookie.
    let (h, html) = page(&f.proxy, "/?qa=bbb-2", Some("ticket_stamp=dev.AAA-1")).await;
    assert_eq!(greet_target(&html), module_url("/src/lib/greet.js", V2));
    assert!(h["set-cookie"]
        .to_str()
        .unwrap()
        .starts_with("ticket_stamp=qa.BBB-2;"));
    // Both in one URL: the last one wins, whatever the order.
    let (_, html) = page(&f.proxy, "/?qa=BBB-2&dev=AAA-1", None).await;
    assert_eq!(greet_target(&html), module_url("/src/lib/greet.js", V1));
    let (_, html) = page(&f.proxy, "/?dev=AAA-1&qa=BBB-2", None).await;
    assert_eq!(greet_target(&html), module_url("/src/lib/greet.js", V2));
}

/// A URL that names a ticket selects it as a page opened (or framed, by
/// the rules of links) or as the origin's own scripts fetch it, never as
/// an element loads it: an image, a stylesheet, a script, a font whose URL
/// says `?dev=KEY` changes nothing, nor does one that says `?stamp=off`,
/// nor a fetch from another origin of the site. Any page of the site could
/// embed one (a sibling subdomain, a comment's Markdown on the app
/// itself), and the answer's cookie would land on a same-site request
/// without the question a link from another site gets.
#[tokio::test]
async fn only_a_page_opened_selects_by_its_url() {
    let (f, _store) = fleet_with(&["AAA-1", "BBB-2"]).await;
    f.origin.route(
        "/logo.png",
        Route::bytes("image/png", b"\x89PNG\r\n\x1a\n".to_vec()),
    );
    let get = |path: &str, cookie: Option<&str>, fetch: &[(&str, &str)]| {
        let mut req = client().get(f.proxy.url(path));
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        for (k, v) in fetch {
            req = req.header(*k, *v);
        }
        req.send()
    };
    let embedded: [&[(&str, &str)]; 8] = [
        &[("sec-fetch-mode", "no-cors"), ("sec-fetch-dest", "image")],
        &[("sec-fetch-mode", "no-cors"), ("sec-fetch-dest", "style")],
        &[("sec-fetch-mode", "cors"), ("sec-fetch-dest", "script")],
        &[("sec-fetch-mode", "cors"), ("sec-fetch-dest", "font")],
        &[("sec-fetch-mode", "no-cors"), ("sec-fetch-dest", "video")],
        &[
            ("sec-fetch-mode", "websocket"),
            ("sec-fetch-dest", "websocket"),
        ],
        // Another origin's fetch, even a `no-cors` one it cannot read.
        &[("sec-fetch-mode", "no-cors"), ("sec-fetch-dest", "empty")],
        &[("sec-fetch-mode", "cors"), ("sec-fetch-dest", "empty")],
    ];
    for fetch in embedded {
        let sites: &[&str] = if fetch.contains(&("sec-fetch-dest", "empty")) {
            &["same-site", "cross-site"]
        } else {
            &["same-origin", "same-site"]
        };
        for site in sites {
            let fetch = [fetch, &[("sec-fetch-site", *site)]].concat();
            for path in ["/logo.png?dev=AAA-1", "/?dev=AAA-1", "/?qa=AAA-1&st=x"] {
                let r = get(path, None, &fetch).await.unwrap();
                assert!(
                    r.headers().get("set-cookie").is_none(),
                    "{path} {fetch:?} selected: {:?}",
                    r.headers().get("set-cookie")
                );
                let text = r.text().await.unwrap();
                assert!(!text.contains("__ts="), "{path} {fetch:?} was stamped");
            }
            // The browser's own selection stands: neither another ticket
            // nor `?stamp=off` in an embedded URL changes it.
            for path in ["/?dev=BBB-2", "/?stamp=off"] {
                let r = get(path, Some("ticket_stamp=dev.AAA-1"), &fetch)
                    .await
                    .unwrap();
                assert!(
                    r.headers().get("set-cookie").is_none(),
                    "{path} {fetch:?} changed the selection"
                );
                assert!(
                    r.headers().get("clear-site-data").is_none(),
                    "{path} {fetch:?}"
                );
            }
        }
    }
    // A page opened selects (from another site, by a question), as does
    // the origin's own script's fetch and a request that does not say
    // what it is.
    let opened = [
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-dest", "document"),
        ("sec-fetch-site", "same-origin"),
    ];
    let own_fetch = [
        ("sec-fetch-mode", "cors"),
        ("sec-fetch-dest", "empty"),
        ("sec-fetch-site", "same-origin"),
    ];
    for fetch in [&opened[..], &own_fetch[..], &[]] {
        let r = get("/?dev=AAA-1", None, fetch).await.unwrap();
        let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
        assert!(
            set.starts_with("ticket_stamp=dev.AAA-1;"),
            "{fetch:?}: {set}"
        );
        let r = get("/?stamp=off", Some("ticket_stamp=dev.AAA-1"), fetch)
            .await
            .unwrap();
        assert!(r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .starts_with("ticket_stamp=;"));
    }
}

#[tokio::test]
async fn qa_is_a_snapshot_and_dev_keeps_moving() {
    let f = fleet();
    let store = open_store(&f.redis.url).await.unwrap();
    upload(&store, "TKT-5", &[("/src/lib/greet.js", V1)])
        .await
        .unwrap();
    transition(&store, "TKT-5", Transition::Promote)
        .await
        .unwrap();
    upload(&store, "TKT-5", &[("/src/lib/greet.js", V2)])
        .await
        .unwrap();
    wait_snapshot(&f.proxy, version(&f).await).await.unwrap();

    let (h, html) = page(&f.proxy, "/?qa=TKT-5", None).await;
    assert_eq!(greet_target(&html), module_url("/src/lib/greet.js", V1));
    assert!(h["x-ticket-stamp"].to_str().unwrap().contains("stage=qa"));
    let (_, html) = page(&f.proxy, "/?dev=TKT-5", None).await;
    assert_eq!(greet_target(&html), module_url("/src/lib/greet.js", V2));
}

#[tokio::test]
async fn released_tickets_form_the_production_overlay_in_order() {
    let f = fleet();
    // Production as a CDN is told to keep it: no CDN keeps the overlay,
    // or it would outlive a revert.
    f.origin.route(
        "/",
        Route::html(PAGE)
            .header("cdn-cache-control", "max-age=3600")
            .header("surrogate-control", "max-age=3600"),
    );
    let store = open_store(&f.redis.url).await.unwrap();
    let (_, html) = page(&f.proxy, "/", None).await;
    assert_eq!(html, PAGE, "no overlay: production untouched");

    for (key, body) in [("REL-1", V1), ("REL-2", V2)] {
        upload(&store, key, &[("/src/lib/greet.js", body)])
            .await
            .unwrap();
        transition(&store, key, Transition::Promote).await.unwrap();
        transition(&store, key, Transition::Promote).await.unwrap();
    }
    wait_snapshot(&f.proxy, version(&f).await).await.unwrap();
    let (h, html) = page(&f.proxy, "/", None).await;
    assert_eq!(
        greet_target(&html),
        module_url("/src/lib/greet.js", V2),
        "later release wins"
    );
    assert_eq!(
        h["cache-control"], "no-cache",
        "a revert must be seen at once"
    );
    assert!(h.get("cdn-cache-control").is_none(), "{h:?}");
    assert!(h.get("surrogate-control").is_none(), "{h:?}");
    assert!(h["x-ticket-stamp"].to_str().unwrap().starts_with("overlay"));

    transition(&store, "REL-2", Transition::Revert)
        .await
        .unwrap();
    wait_snapshot(&f.proxy, version(&f).await).await.unwrap();
    let (_, html) = page(&f.proxy, "/", None).await;
    assert_eq!(
        greet_target(&html),
        module_url("/src/lib/greet.js", V1),
        "overlay recomputed"
    );

    transition(&store, "REL-1", Transition::Revert)
        .await
        .unwrap();
    wait_snapshot(&f.proxy, version(&f).await).await.unwrap();
    let (_, html) = page(&f.proxy, "/", None).await;
    assert_eq!(html, PAGE, "all reverted: production untouched again");
}

#[tokio::test]
async fn unknown_closed_and_unpromoted_selections_serve_production_with_a_reason() {
    let f = fleet();
    let store = open_store(&f.redis.url).await.unwrap();
    upload(&store, "DEV-1", &[("/src/lib/greet.js", V1)])
        .await
        .unwrap();
    upload(&store, "GONE-1", &[("/src/lib/greet.js", V1)])
        .await
        .unwrap();
    transition(&store, "GONE-1", Transition::Close)
        .await
        .unwrap();
    wait_snapshot(&f.proxy, version(&f).await).await.unwrap();

    for (path, cookie, reason, says) in [
        (
            "/?dev=NOPE-9",
            None,
            "unknown ticket NOPE-9",
            "no open ticket NOPE-9: <strong>this is production",
        ),
        (
            "/?dev=GONE-1",
            None,
            "ticket GONE-1 is closed",
            "GONE-1 is closed: <strong>this is production",
        ),
        (
            "/?qa=DEV-1",
            None,
            "has not been promoted to qa",
            "DEV-1 is in dev now: <strong>this is production</strong></span><a href=\"/?dev=DEV-1\">Open ?dev=DEV-1</a>",
        ),
        (
            "/",
            Some("ticket_stamp=dev.GONE-1"),
            "ticket GONE-1 is closed",
            "GONE-1 is closed",
        ),
    ] {
        let (h, html) = page(&f.proxy, path, cookie).await;
        // Production, byte for byte, and a notice saying so.
        let (production, notice) = stamp_tests::split_notice(&html);
        assert_eq!(production, PAGE, "{path}: production body");
        let notice = notice.unwrap_or_else(|| panic!("{path}: no notice: {html}"));
        assert!(notice.contains(says), "{path}: {notice}");
        assert_eq!(h["cache-control"], "private, no-store", "{path}");
        let info = h["x-ticket-stamp"].to_str().unwrap();
        assert!(
            info.starts_with("production") && info.contains(reason),
            "{path}: {info}"
        );
    }
    // A stale cookie is cleared so the next page is plain production.
    let (h, _) = page(&f.proxy, "/", Some("ticket_stamp=dev.GONE-1")).await;
    assert!(h["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
}

#[tokio::test]
async fn malformed_keys_and_hostile_cookies_never_break_the_page() {
    let f = fleet();
    let long_cookie = format!("ticket_stamp=dev.{}", "A".repeat(4000));
    let cases: Vec<(String, Option<String>)> = vec![
        ("/?dev=".into(), None),
        ("/?dev=TKT".into(), None),
        ("/?dev=%3Cscript%3E-1".into(), None),
        ("/?qa=TKT-1%0d%0aSet-Cookie:%20x=1".into(), None),
        ("/?dev=%FF%FE".into(), None),
        ("/?stamp=maybe".into(), None),
        ("/".into(), Some("ticket_stamp=prod.TKT-1".into())),
        ("/".into(), Some("ticket_stamp=dev.<img>-1".into())),
        ("/".into(), Some("ticket_stamp=\"dev.\"".into())),
        ("/".into(), Some(long_cookie)),
    ];
    for (path, cookie) in cases {
        let (h, html) = page(&f.proxy, &path, cookie.as_deref()).await;
        assert_eq!(html, PAGE, "{path} {cookie:?}");
        let info = h["x-ticket-stamp"].to_str().unwrap();
        assert!(info.starts_with("production; reason="), "{info}");
        assert!(
            !info.contains('<') && !info.contains('\r'),
            "no echo of hostile input: {info}"
        );
        assert!(h
            .get_all("set-cookie")
            .iter()
            .all(|c| !c.to_str().unwrap().contains("x=1")));
    }
}

#[tokio::test]
async fn a_change_is_served_without_a_restart() {
    let f = fleet();
    let store = open_store(&f.redis.url).await.unwrap();
    let (_, html) = page(&f.proxy, "/?dev=LIVE-1", None).await;
    assert_eq!(stamp_tests::split_notice(&html).0, PAGE);
    upload(&store, "LIVE-1", &[("/src/lib/greet.js", V1)])
        .await
        .unwrap();
    wait_snapshot(&f.proxy, version(&f).await).await.unwrap();
    let (_, html) = page(&f.proxy, "/?dev=LIVE-1", None).await;
    assert_eq!(greet_target(&html), module_url("/src/lib/greet.js", V1));
    upload(&store, "LIVE-1", &[("/src/lib/greet.js", V2)])
        .await
        .unwrap();
    wait_snapshot(&f.proxy, version(&f).await).await.unwrap();
    let (_, html) = page(&f.proxy, "/?dev=LIVE-1", None).await;
    assert_eq!(greet_target(&html), module_url("/src/lib/greet.js", V2));
}

#[tokio::test]
async fn redis_down_keeps_production_and_the_last_snapshot_flowing() {
    let mut f = fleet();
    let store = open_store(&f.redis.url).await.unwrap();
    upload(&store, "TKT-1", &[("/src/lib/greet.js", V1)])
        .await
        .unwrap();
    wait_snapshot(&f.proxy, version(&f).await).await.unwrap();
    // Warm the module cache, then take Redis away.
    let url = f.proxy.url(&module_url("/src/lib/greet.js", V1));
    assert_eq!(client().get(&url).send().await.unwrap().status(), 200);
    f.redis.stop().unwrap();

    let (_, html) = page(&f.proxy, "/", None).await;
    assert_eq!(html, PAGE);
    let (_, html) = page(&f.proxy, "/?dev=TKT-1", None).await;
    assert_eq!(
        greet_target(&html),
        module_url("/src/lib/greet.js", V1),
        "last snapshot"
    );
    assert_eq!(
        stamp_tests::without_marker(&get_text(&url).await),
        V1,
        "cached body"
    );
    let unknown = f.proxy.url(&module_url("/src/x.js", "never"));
    assert_eq!(client().get(unknown).send().await.unwrap().status(), 503);
    // Health says degraded (but the proxy still answers 200: it is serving).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let v: serde_json::Value = client()
            .get(f.proxy.url("/__stamp/health"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["status"] == "degraded" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "health never noticed: {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // Redis returns empty (no persistence), and a writer that never saw the
    // old data fills it anew: the proxy does not take that for the truth,
    // it keeps its last snapshot and says why.
    f.redis.restart().unwrap();
    let store = open_store(&f.redis.url).await.unwrap();
    upload(&store, "NEW-1", &[("/src/lib/greet.js", V2)])
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let v: serde_json::Value = client()
            .get(f.proxy.url("/__stamp/health"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["store"]["lost_state"].is_string() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never noticed: {v}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (_, html) = page(&f.proxy, "/?dev=TKT-1", None).await;
    assert_eq!(greet_target(&html), module_url("/src/lib/greet.js", V1));
    let (_, html) = page(&f.proxy, "/?dev=NEW-1", None).await;
    assert_eq!(stamp_tests::split_notice(&html).0, PAGE);

    // Adopted (open mode: the loopback caller is an admin): it resyncs.
    let resp = client()
        .post(f.proxy.url("/__stamp/api/v1/store/adopt"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    loop {
        let (_, html) = page(&f.proxy, "/?dev=NEW-1", None).await;
        if stamp_tests::split_notice(&html).1.is_none() {
            assert_eq!(greet_target(&html), module_url("/src/lib/greet.js", V2));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never resynced:\n{}",
            f.proxy.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Cookie tossing: a second `ticket_stamp` with another value (set by a
/// sibling subdomain, or for a deeper path) never picks the ticket, however
/// the copies are ordered; the exit clears every copy this host can reach,
/// parent domains included.
#[tokio::test]
async fn tossed_cookies_never_select_and_the_exit_clears_every_copy() {
    let f = fleet();
    let store = open_store(&f.redis.url).await.unwrap();
    upload(&store, "TKT-1", &[("/src/lib/greet.js", V1)])
        .await
        .unwrap();
    upload(
        &store,
        "EVIL-1",
        &[("/src/lib/greet.js", "export const greet = () => 'evil';")],
    )
    .await
    .unwrap();
    wait_snapshot(&f.proxy, version(&f).await).await.unwrap();
    for cookies in [
        "ticket_stamp=dev.TKT-1; ticket_stamp=dev.EVIL-1",
        "ticket_stamp=dev.EVIL-1; ticket_stamp=dev.TKT-1",
    ] {
        let (h, html) = page(&f.proxy, "/", Some(cookies)).await;
        assert_eq!(html, PAGE, "production for {cookies}");
        let info = h["x-ticket-stamp"].to_str().unwrap();
        assert!(info.contains("several different ticket cookies"), "{info}");
        assert!(h["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    }
    // The same value twice is one selection.
    let (_, html) = page(
        &f.proxy,
        "/",
        Some("ticket_stamp=dev.TKT-1; ticket_stamp=dev.TKT-1"),
    )
    .await;
    assert_eq!(greet_target(&html), module_url("/src/lib/greet.js", V1));

    // The exit, on a host with parent domains.
    let resp = client()
        .get(f.proxy.url("/?stamp=off"))
        .header("host", "app.shop.example.com")
        .header("cookie", "ticket_stamp=dev.TKT-1")
        .send()
        .await
        .unwrap();
    let clears: Vec<String> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert!(
        clears
            .iter()
            .all(|c| c.contains("Max-Age=0") || c.starts_with("ticket_stamp_left=dev.TKT-1;")),
        "{clears:?}"
    );
    for needle in [
        "ticket_stamp=; Path=/",
        "Domain=shop.example.com;",
        "Domain=example.com;",
    ] {
        assert!(
            clears.iter().any(|c| c.contains(needle)),
            "{needle} missing: {clears:?}"
        );
    }
}

/// The proxy's cookies are its own: a selection (with the share token it
/// may carry), a visitor id, the exit's marker or a link waiting to be
/// asked about never reach the origin;
/// the app's cookies do, in order.
#[tokio::test]
async fn the_origin_never_sees_our_cookies() {
    let (f, _) = fleet_with(&["CK-1"]).await;
    for (cookie, kept) in [
        (
            "session=abc; ticket_stamp=dev.CK-1; theme=dark",
            Some("session=abc; theme=dark"),
        ),
        ("ticket_stamp=dev.CK-1.1999999999.0.c2lnbmF0dXJl", None),
        ("__Host-ticket_stamp=qa.CK-1; a=1", Some("a=1")),
        (
            "ticket_stamp_visitor=0123456789abcdef0123456789abcdef; ticket_stamp_left=1; ticket_stamp_pending=dev.CK-1; b=2",
            Some("b=2"),
        ),
        ("a=1; b=2", Some("a=1; b=2")),
    ] {
        let (_, _) = page(&f.proxy, "/about", Some(cookie)).await;
        let seen = f.origin.last_headers("/about").unwrap();
        let got = seen.get("cookie").map(|v| v.to_str().unwrap().to_string());
        assert_eq!(got.as_deref(), kept, "sent {cookie}");
    }
}
