//! End to end in a real headless Chromium: the bundled demo shop served by a
//! real origin, a real `stamp-proxy` in front of it, and a browser that opens
//! a ticket and must run the ticket's module while every untouched module
//! still comes once, unmodified, from production.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use sha2::Digest;
use stamp_control::{Actor, Desk};
use stamp_model::ticket::TicketKey;
use stamp_store::{self as store, SharedStore};
use stamp_tests::browser::{Browser, ConsoleEntry, Resource};
use stamp_tests::{Origin, Proxy, RedisServer, Route};

const PREFIX: &str = "ticket-stamp";
/// How long a page may take to show what a test waits for.
const PAGE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a store change may take to reach the browser.
const LIVE_TIMEOUT: Duration = Duration::from_secs(5);

const PRODUCTION_GREETING: &str = "Hello, shopper! Everything under $5.00 today.";
const DEMO_GREETING: &str = "Welcome back, shopper! DEMO-1 deal: everything under $3.00.";
const DEMO_ABOUT_GREETING: &str = "Welcome back, visitor! DEMO-1 deal: everything under $3.00.";
const GREET: &str = "/src/lib/greet.js";
const FORMAT: &str = "/src/lib/format.js";

fn demo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../proxy/stamp-proxy/demo")
}

fn demo_file(relative: &str) -> String {
    let path = demo_dir().join(relative);
    std::fs::read_to_string(&path)
        .with_context(|| format!("reading {}", path.display()))
        .unwrap()
}

fn artifacts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts")
}

/// An origin serving the demo shop from `proxy/demo/` on disk.
fn demo_origin() -> Origin {
    let origin = Origin::start().unwrap();
    origin.route("/", Route::html(&demo_file("index.html")));
    origin.route("/about", Route::html(&demo_file("about.html")));
    for path in ["/src/main.js", "/src/about.js", GREET, FORMAT] {
        origin.route(
            path,
            Route::bytes("text/javascript", demo_file(&path[1..]).into_bytes()),
        );
    }
    origin.route(
        "/src/style.css",
        Route::bytes("text/css", demo_file("src/style.css").into_bytes()),
    );
    origin
}

/// Uploads `body` as the ticket's version of `/src/lib/greet.js`.
async fn upload_greet(store: &SharedStore, ticket: &str, body: &str) {
    let key = TicketKey::parse(ticket).unwrap();
    Desk::detached(store.clone())
        .upload(
            &key,
            GREET,
            GREET,
            Bytes::from(body.to_string()),
            &Actor::named("test"),
        )
        .await
        .unwrap();
}

/// A fresh embedded store directory holding DEMO-1; the handle is dropped
/// (releasing the file lock) before the proxy opens it.
async fn seeded_demo_store() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let location = dir.path().join("store").to_str().unwrap().to_string();
    {
        let store = store::open(&location, PREFIX).await.unwrap();
        upload_greet(&store, "DEMO-1", &demo_file("ticket/greet.js")).await;
    }
    (dir, location)
}

fn sha256_hex(body: &str) -> String {
    hex::encode(sha2::Sha256::digest(body.as_bytes()))
}

fn at_path<'a>(resources: &'a [Resource], path: &str) -> Vec<&'a Resource> {
    resources.iter().filter(|r| r.path == path).collect()
}

/// `'sha256-…'`'s base64 part for the page's inline import map.
fn inline_map_hash(page: &str) -> String {
    use base64::Engine;
    let tag = "<script type=\"importmap\">";
    let open = page.find(tag).unwrap() + tag.len();
    let close = open + page[open..].find("</script>").unwrap();
    base64::engine::general_purpose::STANDARD
        .encode(sha2::Sha256::digest(&page.as_bytes()[open..close]))
}

/// A proxy in front of `origin` whose store holds DEMO-1's greet.js.
async fn demo_ticket_proxy(origin: &Origin) -> (Proxy, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = stamp_tests::open_store(&dir.path().to_string_lossy())
        .await
        .unwrap();
    upload_greet(&store, "DEMO-1", &demo_file("ticket/greet.js")).await;
    drop(store);
    let proxy = Proxy::start(&origin.url, &["--store", &dir.path().to_string_lossy()]).unwrap();
    (proxy, dir)
}

/// Prints the browser console and fails on any error other than the missing
/// favicon (the demo origin has none).
async fn check_console(browser: &Browser, stage: &str) {
    let entries = browser.console().await.unwrap();
    for e in &entries {
        eprintln!("[console {stage}] {} {}", e.level, e.message);
    }
    let errors: Vec<&ConsoleEntry> = entries
        .iter()
        .filter(|e| e.level == "SEVERE" && !e.message.contains("favicon.ico"))
        .collect();
    assert!(
        errors.is_empty(),
        "browser console errors ({stage}): {errors:#?}"
    );
}

#[tokio::test]
async fn ticket_module_runs_and_untouched_sibling_loads_once_from_production() {
    let origin = demo_origin();
    let (_store_dir, location) = seeded_demo_store().await;
    let proxy = Proxy::start(&origin.url, &["--store", &location]).unwrap();
    let browser = Browser::start().await.unwrap();

    // The ticket page runs the ticket's greet.js.
    browser.goto(&proxy.url("/?dev=DEMO-1")).await.unwrap();
    let greeting = browser
        .wait_for_text("#greeting", "DEMO-1 deal", PAGE_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(greeting, DEMO_GREETING);
    let build = browser
        .wait_for_text("#build", "greet.js from", PAGE_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(build, "greet.js from ticket DEMO-1");
    // format.js is used by main.js (relative import) and by the ticket's greet.js.
    assert_eq!(
        browser.text("#total").await.unwrap(),
        "Basket total: $42.00"
    );
    browser
        .screenshot(&artifacts_dir().join("ticket-page.png"))
        .await
        .unwrap();

    // The import map the browser holds points greet at the ticket's URL.
    let map = browser
        .execute("return document.querySelector('script[type=importmap]').textContent;")
        .await
        .unwrap();
    let map: serde_json::Value = serde_json::from_str(map.as_str().unwrap()).unwrap();
    let ticket_url = format!("{GREET}?__ts={}", sha256_hex(&demo_file("ticket/greet.js")));
    assert_eq!(
        map["imports"]["lib/greet"],
        ticket_url.as_str(),
        "import map: {map}"
    );
    assert_eq!(map["imports"]["lib/format"], FORMAT, "import map: {map}");

    // What the browser fetched: the untouched sibling once, at its production
    // URL; greet.js only at the ticket URL.
    let resources = browser.resources().await.unwrap();
    eprintln!("resources on the ticket page:");
    for r in &resources {
        eprintln!("  {} ({})", r.url, r.initiator);
    }
    let format = at_path(&resources, FORMAT);
    assert_eq!(
        format.len(),
        1,
        "format.js fetched {} times: {resources:#?}",
        format.len()
    );
    assert_eq!(
        format[0].search, "",
        "format.js fetched with a query: {}",
        format[0].url
    );
    let greet = at_path(&resources, GREET);
    assert_eq!(
        greet.len(),
        1,
        "greet.js fetched {} times: {resources:#?}",
        greet.len()
    );
    assert_eq!(
        format!("{}{}", greet[0].path, greet[0].search),
        ticket_url,
        "greet.js fetched from {}",
        greet[0].url
    );
    // The proxy served the ticket's greet.js itself and passed format.js through.
    assert_eq!(origin.hits(FORMAT), 1, "origin hits for {FORMAT}");
    assert_eq!(origin.hits(GREET), 0, "origin hits for {GREET}");
    assert_eq!(origin.hits("/"), 1, "origin hits for /");
    assert_eq!(
        browser.cookie("ticket_stamp").await.unwrap().as_deref(),
        Some("dev.DEMO-1")
    );
    check_console(&browser, "ticket page").await;

    // Navigation without the query stays on the ticket (the cookie).
    browser.click("#about-link").await.unwrap();
    let about = browser
        .wait_for_text("#greeting", "visitor", PAGE_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(about, DEMO_ABOUT_GREETING);
    let url = browser.current_url().await.unwrap();
    assert!(url.ends_with("/about"), "clicked to {url}");
    let about_greet = at_path(&browser.resources().await.unwrap(), GREET)
        .iter()
        .map(|r| format!("{}{}", r.path, r.search))
        .collect::<Vec<_>>();
    assert_eq!(
        about_greet,
        std::slice::from_ref(&ticket_url),
        "greet.js on the about page"
    );
    assert_eq!(
        origin.hits(GREET),
        0,
        "origin hits for {GREET} after /about"
    );
    check_console(&browser, "about page").await;

    // `?stamp=off` is production again, and stays so.
    browser.goto(&proxy.url("/?stamp=off")).await.unwrap();
    let off = browser
        .wait_for_text("#greeting", "Hello", PAGE_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(off, PRODUCTION_GREETING);
    assert_eq!(browser.cookie("ticket_stamp").await.unwrap(), None);
    browser.goto(&proxy.url("/about")).await.unwrap();
    let about_off = browser
        .wait_for_text("#greeting", "visitor", PAGE_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(about_off, "Hello, visitor! Everything under $5.00 today.");
    check_console(&browser, "stamp=off").await;

    browser.close().await.unwrap();
}

#[tokio::test]
async fn production_is_untouched_without_a_selection() {
    let origin = demo_origin();
    // A ticket exists, but nothing selects it.
    let (_store_dir, location) = seeded_demo_store().await;
    let proxy = Proxy::start(&origin.url, &["--store", &location]).unwrap();
    let browser = Browser::start().await.unwrap();

    browser.goto(&proxy.url("/")).await.unwrap();
    let greeting = browser
        .wait_for_text("#greeting", "Hello", PAGE_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(greeting, PRODUCTION_GREETING);
    let build = browser
        .wait_for_text("#build", "greet.js from", PAGE_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(build, "greet.js from production");

    let map = browser
        .execute("return document.querySelector('script[type=importmap]').textContent;")
        .await
        .unwrap();
    let map: serde_json::Value = serde_json::from_str(map.as_str().unwrap()).unwrap();
    assert_eq!(map["imports"]["lib/greet"], GREET, "import map: {map}");

    let resources = browser.resources().await.unwrap();
    let greet = at_path(&resources, GREET);
    assert_eq!(
        greet.len(),
        1,
        "greet.js fetched {} times: {resources:#?}",
        greet.len()
    );
    assert_eq!(
        greet[0].search, "",
        "greet.js fetched from {}",
        greet[0].url
    );
    assert!(
        !resources.iter().any(|r| r.search.contains("__ts")),
        "a ticket module was fetched: {resources:#?}"
    );
    assert_eq!(origin.hits(GREET), 1, "origin hits for {GREET}");
    assert_eq!(origin.hits(FORMAT), 1, "origin hits for {FORMAT}");
    assert_eq!(browser.cookie("ticket_stamp").await.unwrap(), None);
    check_console(&browser, "production").await;

    browser.close().await.unwrap();
}

#[tokio::test]
async fn live_change_reaches_the_browser() {
    let redis = RedisServer::start().unwrap();
    let origin = demo_origin();
    let proxy = Proxy::start(&origin.url, &["--store", &redis.url]).unwrap();
    let store = store::open(&redis.url, PREFIX).await.unwrap();
    let browser = Browser::start().await.unwrap();

    // TKT-7 does not exist yet: production.
    browser.goto(&proxy.url("/?dev=TKT-7")).await.unwrap();
    let greeting = browser
        .wait_for_text("#greeting", "Hello", PAGE_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(greeting, PRODUCTION_GREETING);

    // Upload it while the proxy runs.
    let body = "import { money } from './format.js';\n\
                export const source = 'ticket TKT-7';\n\
                export function greet(name) { return `TKT-7 is live for ${name}: ${money(1)}`; }\n";
    upload_greet(&store, "TKT-7", body).await;
    let uploaded = Instant::now();

    // Reload until the ticket shows.
    let mut reloads = 0;
    let seen = loop {
        browser.refresh().await.unwrap();
        reloads += 1;
        // Wait until the page's modules have run (production or ticket).
        let text = browser
            .wait_for_text("#build", "greet.js from", PAGE_TIMEOUT)
            .await
            .unwrap();
        if text == "greet.js from ticket TKT-7" {
            break browser.text("#greeting").await.unwrap();
        }
        assert_eq!(text, "greet.js from production");
        assert!(
            uploaded.elapsed() < LIVE_TIMEOUT,
            "TKT-7 not in the browser {LIVE_TIMEOUT:?} after the upload ({reloads} reloads)\nproxy log:\n{}",
            proxy.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "TKT-7 reached the browser {:?} after the upload ({reloads} reloads)",
        uploaded.elapsed()
    );
    assert_eq!(seen, "TKT-7 is live for shopper: $1.00");
    // The page that first showed it may have been stamped a moment before
    // the change reached the snapshot, its module then answered at the
    // plain path to the selected browser; a page stamped after it carries
    // the ticket's URL.
    browser.refresh().await.unwrap();
    let text = browser
        .wait_for_text("#build", "greet.js from", PAGE_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(text, "greet.js from ticket TKT-7");
    let ticket_url = format!("{GREET}?__ts={}", sha256_hex(body));
    let greet: Vec<String> = at_path(&browser.resources().await.unwrap(), GREET)
        .iter()
        .map(|r| format!("{}{}", r.path, r.search))
        .collect();
    assert_eq!(greet, [ticket_url], "greet.js on the live ticket page");
    check_console(&browser, "live").await;

    browser.close().await.unwrap();
}

/// A page under a strict nonce-based CSP still runs the ticket's module, and
/// the badge shows what ran, measured in the browser (its probe passing the
/// policy, its style the CSSOM's); the exit leaves, and production stays.
#[tokio::test]
async fn strict_csp_page_runs_the_ticket_and_shows_the_badge() {
    let origin = demo_origin();
    let strict = demo_file("index.html")
        .replace(
            "<script type=\"importmap\">",
            "<script type=\"importmap\" nonce=\"n0nc3\">",
        )
        .replace(
            "<script type=\"module\" src=\"/src/main.js\">",
            "<script type=\"module\" src=\"/src/main.js\" nonce=\"n0nc3\">",
        );
    origin.route(
        "/",
        Route::html(&strict).header(
            "content-security-policy",
            "default-src 'self'; script-src 'nonce-n0nc3' 'strict-dynamic'; style-src 'self'; object-src 'none'",
        ),
    );
    let (proxy, _dir) = demo_ticket_proxy(&origin).await;
    let browser = Browser::start().await.unwrap();
    browser.goto(&proxy.url("/?dev=DEMO-1")).await.unwrap();
    browser
        .wait_for_text("#greeting", DEMO_GREETING, Duration::from_secs(10))
        .await
        .unwrap();
    let badge = browser
        .execute(
            "const b = document.querySelector('ticket-stamp-badge'); \
             if (!b || !b.shadowRoot) return null; \
             const a = b.shadowRoot.querySelector('aside'); \
             const s = getComputedStyle(b); \
             return { text: a.textContent, position: s.position, parent: b.parentNode.nodeName, \
                      exit: !!b.shadowRoot.querySelector('button.exit') };",
        )
        .await
        .unwrap();
    assert!(
        badge["text"].as_str().unwrap().contains("DEMO-1")
            && badge["text"]
                .as_str()
                .unwrap()
                .contains("1 of 1 module ran"),
        "{badge}"
    );
    assert_eq!(
        badge["parent"], "HTML",
        "outside <body>, out of body swaps' reach"
    );
    assert_eq!(
        badge["position"], "fixed",
        "styled (the CSP let the badge's style in): {badge}"
    );
    assert_eq!(badge["exit"], true);
    std::fs::create_dir_all(artifacts_dir()).unwrap();
    browser
        .screenshot(&artifacts_dir().join("badge-strict-csp.png"))
        .await
        .unwrap();
    let violations = browser.csp_violations().await.unwrap();
    assert!(violations.is_empty(), "CSP violations: {violations:?}");
    // The exit goes back to production, and the page stays there.
    browser.leave_by_the_badge().await.unwrap();
    browser
        .wait_for_text("#greeting", PRODUCTION_GREETING, Duration::from_secs(10))
        .await
        .unwrap();
    browser.refresh().await.unwrap();
    browser
        .wait_for_text("#greeting", PRODUCTION_GREETING, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(browser.cookie("ticket_stamp").await.unwrap(), None);
    browser.close().await.unwrap();
}

/// A `?qa=` link to a ticket that went back to dev: the page is production,
/// and says so, with the way to the ticket's dev view; under a strict CSP.
#[tokio::test]
async fn a_stale_link_shows_production_with_a_notice() {
    let origin = demo_origin();
    origin.route(
        "/",
        Route::html(&demo_file("index.html")).header(
            "content-security-policy",
            "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self'; object-src 'none'",
        ),
    );
    let (proxy, _dir) = demo_ticket_proxy(&origin).await;
    // No qa view: DEMO-1 was never promoted (or was reverted to dev).
    let browser = Browser::start().await.unwrap();
    browser.goto(&proxy.url("/?qa=DEMO-1")).await.unwrap();
    browser
        .wait_for_text("#greeting", PRODUCTION_GREETING, Duration::from_secs(10))
        .await
        .unwrap();
    let notice = browser
        .execute(
            "const b = document.querySelector('ticket-stamp-badge'); \
             if (!b || !b.shadowRoot) return null; \
             const a = b.shadowRoot.querySelector('aside'); \
             return { text: a.textContent, position: getComputedStyle(b).position, \
                      open: b.shadowRoot.querySelector('a').getAttribute('href') };",
        )
        .await
        .unwrap();
    assert_eq!(
        notice["text"], "DEMO-1 is in dev now: this is productionOpen ?dev=DEMO-1Ticket",
        "{notice}"
    );
    assert_eq!(
        notice["position"], "fixed",
        "styled under the CSP: {notice}"
    );
    assert_eq!(notice["open"], "/?dev=DEMO-1", "the page's own path");
    std::fs::create_dir_all(artifacts_dir()).unwrap();
    browser
        .screenshot(&artifacts_dir().join("stale-link-notice.png"))
        .await
        .unwrap();
    let violations = browser.csp_violations().await.unwrap();
    assert!(violations.is_empty(), "CSP violations: {violations:?}");
    // Its link opens the ticket where it is.
    browser
        .execute("document.querySelector('ticket-stamp-badge').shadowRoot.querySelector('a').click(); return true;")
        .await
        .unwrap();
    browser
        .wait_for_text("#greeting", DEMO_GREETING, Duration::from_secs(10))
        .await
        .unwrap();
    browser.close().await.unwrap();
}

/// A proxy with a dev, a qa and an admin token and the given extra config.
fn panel_proxy(origin: &Origin, dir: &std::path::Path, extra: &str) -> Proxy {
    let h = stamp_control::hash_token;
    let conf = dir.join("panel.toml");
    std::fs::write(
        &conf,
        format!(
            "origin = \"{}\"\nstore = \"{}\"\n{extra}\n\
             [[tokens]]\nname = \"alice\"\nrole = \"dev\"\nsha256 = \"{}\"\n\
             [[tokens]]\nname = \"quinn\"\nrole = \"qa\"\nsha256 = \"{}\"\n",
            origin.url,
            dir.join("store").display(),
            h("dev-secret"),
            h("qa-secret")
        ),
    )
    .unwrap();
    Proxy::start_with(None, &["--config", &conf.to_string_lossy()], &[]).unwrap()
}

async fn api_as(proxy: &Proxy, token: &str, method: &str, path: &str, body: &str) -> u16 {
    stamp_tests::client()
        .request(
            method.parse().unwrap(),
            proxy.url(&format!("/__stamp/api/v1/{path}")),
        )
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn sign_in(browser: &Browser, proxy: &Proxy, token: &str) {
    browser.goto(&proxy.url("/__stamp/")).await.unwrap();
    let c = browser.client().unwrap();
    c.wait()
        .for_element(fantoccini::Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(token)
        .await
        .unwrap();
    browser.click("#sign-in button").await.unwrap();
}

#[tokio::test]
async fn panel_sign_in_promote_by_click_and_live_updates() {
    let origin = demo_origin();
    let dir = tempfile::tempdir().unwrap();
    let proxy = panel_proxy(&origin, dir.path(), "");
    assert_eq!(
        api_as(
            &proxy,
            "dev-secret",
            "PUT",
            "tickets/QA-7/modules/src/lib/greet.js",
            "export const greet = () => 'qa';"
        )
        .await,
        201
    );
    assert_eq!(
        api_as(
            &proxy,
            "dev-secret",
            "POST",
            "tickets/QA-7/promote",
            r#"{"from": "dev"}"#
        )
        .await,
        200
    );

    let browser = Browser::start().await.unwrap();
    sign_in(&browser, &proxy, "qa-secret").await;
    browser
        .wait_for_text("#who", "quinn (qa)", Duration::from_secs(10))
        .await
        .unwrap();
    browser
        .wait_for_text("#stage-qa", "qa (1)", Duration::from_secs(10))
        .await
        .unwrap();
    std::fs::create_dir_all(artifacts_dir()).unwrap();
    browser
        .screenshot(&artifacts_dir().join("panel-tickets.png"))
        .await
        .unwrap();

    // A change made through the API appears without a reload.
    assert_eq!(
        api_as(
            &proxy,
            "dev-secret",
            "PUT",
            "tickets/NEW-9/modules/src/a.js",
            "a"
        )
        .await,
        201
    );
    browser
        .wait_for_text("#stage-dev", "dev (1)", Duration::from_secs(10))
        .await
        .unwrap();

    // Promote by clicking: qa may promote qa→prod; the button is there.
    browser.click("a[href='#/tickets/QA-7']").await.unwrap();
    browser
        .wait_for_text("#ticket-stage", "qa", Duration::from_secs(10))
        .await
        .unwrap();
    let page = browser.text("#view").await.unwrap();
    assert!(
        page.contains("qa overrides (1)") && page.contains("/src/lib/greet.js?__ts="),
        "{page}"
    );
    assert!(!page.contains("[object"), "{page}");
    browser
        .screenshot(&artifacts_dir().join("panel-ticket.png"))
        .await
        .unwrap();
    let buttons = browser
        .execute(
            "return [...document.querySelectorAll('.actions button')].map(b => b.textContent);",
        )
        .await
        .unwrap();
    assert_eq!(
        buttons,
        serde_json::json!(["Release to production", "Sign off"]),
        "only what a qa token may do, named by where it goes"
    );
    assert_eq!(
        browser.text("#checklist").await.unwrap(),
        "No policy guards this move."
    );
    // A release is never one click: it asks, says what every visitor will
    // get, and waits for the ticket key.
    browser.click("#do-promote").await.unwrap();
    let ask = browser.text("#confirm-what").await.unwrap();
    assert!(
        ask.contains(
            "Release QA-7 to production? Every visitor will get its 1 module: /src/lib/greet.js"
        ),
        "{ask}"
    );
    let disabled = "return document.querySelector('#confirm-go').disabled";
    assert_eq!(browser.execute(disabled).await.unwrap(), true);
    let c = browser.client().unwrap();
    c.find(fantoccini::Locator::Css("#confirm-key"))
        .await
        .unwrap()
        .send_keys("QA-8")
        .await
        .unwrap();
    assert_eq!(
        browser.execute(disabled).await.unwrap(),
        true,
        "another key"
    );
    browser.click("#confirm-go").await.unwrap_or_default();
    assert_eq!(
        browser.text("#ticket-stage").await.unwrap(),
        "qa",
        "nothing moved"
    );
    browser
        .screenshot(&artifacts_dir().join("panel-confirm.png"))
        .await
        .unwrap();
    browser.click("#confirm-cancel").await.unwrap();
    assert_eq!(
        browser
            .execute("return document.querySelector('#confirm') === null")
            .await
            .unwrap(),
        true
    );
    browser.click("#do-promote").await.unwrap();
    c.find(fantoccini::Locator::Css("#confirm-key"))
        .await
        .unwrap()
        .send_keys("qa-7")
        .await
        .unwrap();
    browser.click("#confirm-go").await.unwrap();
    browser
        .wait_for_text("#ticket-stage", "prod", Duration::from_secs(10))
        .await
        .unwrap();
    browser
        .wait_for_text(
            "#outcome",
            "Released QA-7 to production: every visitor now gets its 1 module (/src/lib/greet.js).",
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    browser.close().await.unwrap();
}

#[tokio::test]
async fn panel_shows_a_policy_refusal_inline() {
    let origin = demo_origin();
    let dir = tempfile::tempdir().unwrap();
    let proxy = panel_proxy(
        &origin,
        dir.path(),
        "[[policies]]\nkind = \"command\"\nprogram = \"sh\"\nargs = [\"-c\", \"echo release freeze until Monday; exit 1\"]\non = \"qa->prod\"",
    );
    assert_eq!(
        api_as(
            &proxy,
            "dev-secret",
            "PUT",
            "tickets/FRZ-1/modules/src/a.js",
            "a"
        )
        .await,
        201
    );
    assert_eq!(
        api_as(
            &proxy,
            "dev-secret",
            "POST",
            "tickets/FRZ-1/promote",
            r#"{"from": "dev"}"#
        )
        .await,
        200
    );
    let browser = Browser::start().await.unwrap();
    sign_in(&browser, &proxy, "qa-secret").await;
    browser
        .wait_for_text("#who", "quinn", Duration::from_secs(10))
        .await
        .unwrap();
    browser
        .goto(&proxy.url("/__stamp/#/tickets/FRZ-1"))
        .await
        .unwrap();
    browser
        .wait_for_text("#ticket-stage", "qa", Duration::from_secs(10))
        .await
        .unwrap();
    // The checklist says it before anyone clicks.
    let checklist = browser
        .wait_for_text("#checklist", "release freeze", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        checklist.contains("✗ command: release freeze until Monday"),
        "{checklist}"
    );
    assert_eq!(
        browser.text("#checklist-verdict").await.unwrap(),
        "Release to production would be refused now."
    );
    browser.click("#do-promote").await.unwrap();
    browser
        .client()
        .unwrap()
        .find(fantoccini::Locator::Css("#confirm-key"))
        .await
        .unwrap()
        .send_keys("FRZ-1")
        .await
        .unwrap();
    browser.click("#confirm-go").await.unwrap();
    let text = browser
        .wait_for_text(
            "#outcome",
            "release freeze until Monday",
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert!(
        text.contains("Refused by policy") && text.contains("command"),
        "{text}"
    );
    assert_eq!(
        browser.text("#ticket-stage").await.unwrap(),
        "qa",
        "nothing moved"
    );
    browser.close().await.unwrap();
}

/// The review desk: QA reads the checklist, sees it turn green when another
/// QA signs off, and releases with the keyboard alone; the same page at
/// phone width.
#[tokio::test]
async fn panel_checklist_turns_green_on_a_sign_off_and_releases_by_keyboard() {
    let origin = demo_origin();
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "history_repo = \"{}\"\n\
         [[policies]]\nkind = \"sign-off\"\n\
         [[tokens]]\nname = \"rita\"\nrole = \"qa\"\nsha256 = \"{}\"\n",
        dir.path().join("history").display(),
        stamp_control::hash_token("qa2-secret")
    );
    let proxy = panel_proxy(&origin, dir.path(), &extra);
    let put = api_as(
        &proxy,
        "dev-secret",
        "PUT",
        "tickets/REV-1/modules/src/lib/greet.js",
        "export const greet = () => 'review';",
    );
    assert_eq!(put.await, 201);
    let promote = api_as(
        &proxy,
        "dev-secret",
        "POST",
        "tickets/REV-1/promote",
        r#"{"from": "dev"}"#,
    );
    assert_eq!(promote.await, 200);

    let browser = Browser::start().await.unwrap();
    sign_in(&browser, &proxy, "qa-secret").await;
    browser
        .wait_for_text("#who", "quinn", Duration::from_secs(10))
        .await
        .unwrap();
    browser
        .goto(&proxy.url("/__stamp/#/tickets/REV-1"))
        .await
        .unwrap();
    let red = browser
        .wait_for_text("#checklist", "sign-off", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        red.contains("✗ sign-off: needs 1 sign-off by qa tokens other than the uploaders; has 0"),
        "{red}"
    );
    assert_eq!(browser.text("#sign-off-count").await.unwrap(), "0 standing");
    browser
        .screenshot(&artifacts_dir().join("panel-checklist.png"))
        .await
        .unwrap();

    // What the ticket changes, against production as visitors get it.
    browser
        .wait_for_text(
            "#diff-summary",
            "1 of 1 module differ",
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    browser
        .click("details[data-specifier='/src/lib/greet.js'] summary")
        .await
        .unwrap();
    let diff = browser
        .wait_for_text(
            "details[data-specifier='/src/lib/greet.js'] pre.diff",
            "+++ REV-1 qa",
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert!(diff.contains("--- production"), "{diff}");
    assert!(
        diff.contains("+export const greet = () => 'review';"),
        "{diff}"
    );
    browser
        .screenshot(&artifacts_dir().join("panel-diff.png"))
        .await
        .unwrap();

    // Another QA signs off (through the API): the open page follows.
    let signed = api_as(
        &proxy,
        "qa2-secret",
        "POST",
        "tickets/REV-1/sign-off",
        r#"{"comment": "checked the cart"}"#,
    );
    assert_eq!(signed.await, 200);
    let green = browser
        .wait_for_text("#checklist", "✓ sign-off", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(green.contains("✓ sign-off: passes"), "{green}");
    assert_eq!(
        browser.text("#checklist-verdict").await.unwrap(),
        "Release to production would be allowed now."
    );
    let list = browser.text("#sign-off-list").await.unwrap();
    assert!(
        list.contains("rita signed off") && list.contains("“checked the cart”"),
        "{list}"
    );
    browser
        .screenshot(&artifacts_dir().join("panel-signed-off.png"))
        .await
        .unwrap();

    // Keyboard only: Tab to the release button, Enter, type the key, Enter.
    let c = browser.client().unwrap();
    let active = "return document.activeElement && document.activeElement.id";
    let mut reached = false;
    for _ in 0..40 {
        c.active_element()
            .await
            .unwrap()
            .send_keys(&fantoccini::key::Key::Tab.to_string())
            .await
            .unwrap();
        if browser.execute(active).await.unwrap() == "do-promote" {
            reached = true;
            break;
        }
    }
    assert!(reached, "the release button is reachable by Tab");
    c.active_element()
        .await
        .unwrap()
        .send_keys(&fantoccini::key::Key::Enter.to_string())
        .await
        .unwrap();
    assert_eq!(
        browser.execute(active).await.unwrap(),
        "confirm-key",
        "the confirmation takes the focus"
    );
    c.active_element()
        .await
        .unwrap()
        .send_keys(&format!("REV-1{}", fantoccini::key::Key::Enter))
        .await
        .unwrap();
    browser
        .wait_for_text("#ticket-stage", "prod", Duration::from_secs(10))
        .await
        .unwrap();
    browser
        .wait_for_text(
            "#outcome",
            "Released REV-1 to production",
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let t: serde_json::Value = stamp_tests::client()
        .get(proxy.url("/__stamp/api/v1/tickets/REV-1"))
        .bearer_auth("qa-secret")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let release = t["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "promote" && e["to"] == "prod")
        .unwrap_or_else(|| panic!("{t}"));
    assert_eq!(release["actor"], "quinn", "recorded under who clicked");

    // The release log says what was live when.
    browser
        .goto(&proxy.url("/__stamp/#/production"))
        .await
        .unwrap();
    let log = browser
        .wait_for_text("#release-log", "REV-1", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(log.contains("live now") && log.contains("quinn"), "{log}");
    assert_eq!(
        browser
            .text("#release-log tbody tr td:nth-child(3)")
            .await
            .unwrap(),
        "REV-1",
        "the released ticket, linked"
    );
    browser
        .screenshot(&artifacts_dir().join("panel-release-log.png"))
        .await
        .unwrap();

    // Phone width: the same flow on a second ticket, nothing cut off sideways.
    c.set_window_size(390, 844).await.unwrap();
    let put = api_as(
        &proxy,
        "dev-secret",
        "PUT",
        "tickets/REV-2/modules/src/lib/greet.js",
        "export const greet = () => 'phone';",
    );
    assert_eq!(put.await, 201);
    let promote = api_as(
        &proxy,
        "dev-secret",
        "POST",
        "tickets/REV-2/promote",
        r#"{"from": "dev"}"#,
    );
    assert_eq!(promote.await, 200);
    browser
        .goto(&proxy.url("/__stamp/#/tickets/REV-2"))
        .await
        .unwrap();
    browser
        .wait_for_text("#checklist", "✗ sign-off", Duration::from_secs(10))
        .await
        .unwrap();
    let fits = "return document.documentElement.scrollWidth <= window.innerWidth + 1";
    assert_eq!(
        browser.execute(fits).await.unwrap(),
        true,
        "no sideways scrolling at phone width"
    );
    browser
        .wait_for_text(
            "#diff-summary",
            "1 of 1 module differs",
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    browser
        .click("details[data-specifier='/src/lib/greet.js'] summary")
        .await
        .unwrap();
    browser
        .wait_for_text(
            "details[data-specifier='/src/lib/greet.js'] pre.diff",
            "+export const greet = () => 'phone';",
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(
        browser.execute(fits).await.unwrap(),
        true,
        "the diff scrolls inside itself"
    );
    let signed = api_as(&proxy, "qa2-secret", "POST", "tickets/REV-2/sign-off", "{}");
    assert_eq!(signed.await, 200);
    browser
        .wait_for_text("#checklist", "✓ sign-off", Duration::from_secs(10))
        .await
        .unwrap();
    browser.click("#do-promote").await.unwrap();
    c.find(fantoccini::Locator::Css("#confirm-key"))
        .await
        .unwrap()
        .send_keys("REV-2")
        .await
        .unwrap();
    browser.click("#confirm-go").await.unwrap();
    browser
        .wait_for_text(
            "#outcome",
            "Released REV-2 to production",
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    // The outcome is said as soon as the API answers; the ticket's view is
    // drawn again after it.
    let stage = browser
        .wait_for_text("#ticket-stage", "prod", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(stage, "prod");
    assert_eq!(browser.execute(fits).await.unwrap(), true);
    browser
        .screenshot(&artifacts_dir().join("panel-phone.png"))
        .await
        .unwrap();
    browser.close().await.unwrap();
}

fn greet_body(tag: &str) -> String {
    format!(
        "import {{ money }} from './format.js';\n\
         export const source = 'ticket {tag}';\n\
         export function greet(name) {{ return `{tag} for ${{name}}: ${{money(1)}}`; }}\n"
    )
}

/// Reloads `url` until `#build` reads `want` (bounded), returns the time it took.
async fn reload_until(browser: &Browser, url: &str, want: &str) -> Duration {
    let start = Instant::now();
    loop {
        browser.goto(url).await.unwrap();
        let text = browser
            .wait_for_text("#build", "greet.js from", PAGE_TIMEOUT)
            .await
            .unwrap();
        if text == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < LIVE_TIMEOUT,
            "{url}: still `{text}`, wanted `{want}`"
        );
    }
}

#[tokio::test]
async fn qa_shows_the_promoted_snapshot_while_dev_moves_on() {
    let redis = RedisServer::start().unwrap();
    let origin = demo_origin();
    let proxy = Proxy::start(&origin.url, &["--store", &redis.url]).unwrap();
    let store = store::open(&redis.url, PREFIX).await.unwrap();
    upload_greet(&store, "SNAP-1", &greet_body("SNAP-1 v1")).await;
    let key = TicketKey::parse("SNAP-1").unwrap();
    Desk::detached(store.clone())
        .transition(
            &key,
            stamp_model::lifecycle::Transition::Promote,
            None,
            &Actor::named("test"),
        )
        .await
        .unwrap();
    upload_greet(&store, "SNAP-1", &greet_body("SNAP-1 v2")).await;

    let browser = Browser::start().await.unwrap();
    reload_until(
        &browser,
        &proxy.url("/?qa=SNAP-1"),
        "greet.js from ticket SNAP-1 v1",
    )
    .await;
    reload_until(
        &browser,
        &proxy.url("/?dev=SNAP-1"),
        "greet.js from ticket SNAP-1 v2",
    )
    .await;
    // The cookie now says dev; the qa link still shows the snapshot.
    reload_until(
        &browser,
        &proxy.url("/?qa=SNAP-1"),
        "greet.js from ticket SNAP-1 v1",
    )
    .await;
    browser.close().await.unwrap();
}

#[tokio::test]
async fn release_reaches_the_plain_url_and_revert_takes_it_back() {
    let redis = RedisServer::start().unwrap();
    let origin = demo_origin();
    let proxy = Proxy::start(&origin.url, &["--store", &redis.url]).unwrap();
    let store = store::open(&redis.url, PREFIX).await.unwrap();
    upload_greet(&store, "REL-9", &greet_body("REL-9")).await;
    let key = TicketKey::parse("REL-9").unwrap();
    let actor = Actor::named("test");
    let browser = Browser::start().await.unwrap();
    reload_until(&browser, &proxy.url("/"), "greet.js from production").await;
    for _ in 0..2 {
        Desk::detached(store.clone())
            .transition(
                &key,
                stamp_model::lifecycle::Transition::Promote,
                None,
                &actor,
            )
            .await
            .unwrap();
    }
    reload_until(&browser, &proxy.url("/"), "greet.js from ticket REL-9").await;
    Desk::detached(store.clone())
        .transition(
            &key,
            stamp_model::lifecycle::Transition::Revert,
            None,
            &actor,
        )
        .await
        .unwrap();
    let took = reload_until(&browser, &proxy.url("/"), "greet.js from production").await;
    assert!(
        took < Duration::from_secs(1),
        "revert took {took:?} to reach the browser"
    );
    browser.close().await.unwrap();
}

/// The quickstart as a new user meets it: the demo runs in open mode (no
/// tokens, loopback), so its panel signs in by itself as the local user and
/// says that the control API is open, instead of asking for a token that
/// does not exist.
#[tokio::test]
async fn the_demo_panel_signs_in_by_itself_in_open_mode() {
    let proxy = Proxy::start_with(None, &["--demo"], &[]).unwrap();
    let browser = Browser::start().await.unwrap();
    browser.goto(&proxy.url("/__stamp/")).await.unwrap();
    browser
        .wait_for_text(
            "#open-note",
            "The control API is open",
            Duration::from_secs(15),
        )
        .await
        .unwrap();
    browser
        .wait_for_text("#view", "DEMO-1", Duration::from_secs(15))
        .await
        .unwrap();
    let who = browser.text("#who").await.unwrap();
    assert_eq!(who, "anonymous (admin)");
    let sign_in_hidden = browser
        .execute("return document.getElementById('sign-in').hidden;")
        .await
        .unwrap();
    assert_eq!(sign_in_hidden, serde_json::Value::Bool(true));
    browser
        .screenshot(&artifacts_dir().join("panel-open-mode.png"))
        .await
        .unwrap();
    browser.close().await.unwrap();
}

/// Two enforced policies: the first allows the page's nonce, the second only
/// the hash of production's own import map. Production blocks a nonced
/// inline script through the second policy; the ticket page must block it
/// too (the origin's nonce is never copied into the hash-only policy), while
/// the merged map and the ticket's module run under both.
#[tokio::test]
async fn a_second_hash_only_policy_is_never_weakened() {
    let origin = demo_origin();
    let page = demo_file("index.html");
    let map_hash = inline_map_hash(&page);
    let page = page
        .replace(
            "<script type=\"importmap\">",
            "<script type=\"importmap\" nonce=\"n0nc3\">",
        )
        .replace(
            "<script type=\"module\" src=\"/src/main.js\">",
            "<script nonce=\"n0nc3\">document.documentElement.dataset.inline = 'ran';</script>\
             <script type=\"module\" src=\"/src/main.js\" nonce=\"n0nc3\">",
        );
    origin.route(
        "/",
        Route::html(&page)
            .header(
                "content-security-policy",
                "script-src 'nonce-n0nc3' 'strict-dynamic'; object-src 'none'",
            )
            .header(
                "content-security-policy",
                &format!("script-src 'self' 'sha256-{map_hash}'"),
            ),
    );
    let (proxy, _dir) = demo_ticket_proxy(&origin).await;
    let browser = Browser::start().await.unwrap();
    let inline_ran = "return document.documentElement.dataset.inline || null;";

    browser.goto(&proxy.url("/")).await.unwrap();
    browser
        .wait_for_text("#greeting", "Hello, shopper!", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        browser.execute(inline_ran).await.unwrap(),
        serde_json::Value::Null,
        "production blocks the nonced inline script (second policy)"
    );

    // The ticket ran, and the nonced inline script did not.
    let ticket_ran_alone = |why: &'static str| {
        let browser = &browser;
        async move {
            browser
                .wait_for_text("#greeting", DEMO_GREETING, Duration::from_secs(10))
                .await
                .unwrap();
            assert_eq!(
                browser.execute(inline_ran).await.unwrap(),
                serde_json::Value::Null,
                "{why}"
            );
        }
    };
    browser.goto(&proxy.url("/?dev=DEMO-1")).await.unwrap();
    ticket_ran_alone("the ticket page blocks it too: no policy was weakened").await;
    // Viewed again, the page's head is the one remembered (`memo`), with
    // this response's made-up nonce in it: the same in Chromium.
    browser.refresh().await.unwrap();
    ticket_ran_alone("a remembered head weakens nothing either").await;
    browser.close().await.unwrap();
}

/// A policy in `<meta http-equiv="Content-Security-Policy">` (no header):
/// production's map passes it by hash; the merged map of the ticket page
/// passes it too, because the policy is given the map's fresh nonce.
#[tokio::test]
async fn a_meta_policy_lets_the_merged_map_run() {
    let origin = demo_origin();
    let page = demo_file("index.html");
    let map_hash = inline_map_hash(&page);
    let meta = format!(
        "<meta http-equiv=\"Content-Security-Policy\" content=\"script-src 'self' 'sha256-{map_hash}'\">"
    );
    let page = page.replacen("<head>", &format!("<head>{meta}"), 1);
    assert!(page.contains(&meta));
    origin.route("/", Route::html(&page));
    let (proxy, _dir) = demo_ticket_proxy(&origin).await;
    let browser = Browser::start().await.unwrap();
    browser.goto(&proxy.url("/")).await.unwrap();
    browser
        .wait_for_text("#greeting", "Hello, shopper!", Duration::from_secs(10))
        .await
        .unwrap();
    browser.goto(&proxy.url("/?dev=DEMO-1")).await.unwrap();
    browser
        .wait_for_text("#greeting", DEMO_GREETING, Duration::from_secs(10))
        .await
        .unwrap();
    let html = stamp_tests::get_text(&proxy.url("/?dev=DEMO-1")).await;
    assert!(
        html.contains("'nonce-"),
        "the meta policy was given a nonce: {html}"
    );
    assert!(
        html.contains(&format!("'sha256-{map_hash}'")),
        "nothing removed"
    );
    // Viewed again, the head (meta policy and all) is the one remembered,
    // with this response's nonce: the map still runs, nothing is refused.
    browser.refresh().await.unwrap();
    browser
        .wait_for_text("#greeting", DEMO_GREETING, Duration::from_secs(10))
        .await
        .unwrap();
    let refused = browser.csp_violations().await.unwrap();
    assert!(refused.is_empty(), "CSP violations: {refused:?}");
    browser.close().await.unwrap();
}

/// Where the page has no policy header, the probe's script comes from the
/// proxy: it runs before the page's scripts (the badge tells what ran),
/// the browser keeps it for the next page, and a meta policy later in the
/// page, which would refuse it, was not there when it was asked for.
#[tokio::test]
async fn the_probes_script_is_kept_once_and_runs_before_the_page() {
    let origin = demo_origin();
    let page = demo_file("index.html");
    let map_hash = inline_map_hash(&page);
    let (proxy, _dir) = demo_ticket_proxy(&origin).await;
    // The app's scripts and its map, nothing else of the origin's.
    let meta = format!(
        "<meta http-equiv=\"Content-Security-Policy\" content=\"script-src {} 'sha256-{map_hash}'\">",
        proxy.url("/src/")
    );
    // A classic script of the page's, first after the policy: it runs
    // before anything after it, and says whether the probe ran before it.
    let before = "<script src=\"/src/before.js\"></script>";
    let page = page.replacen(
        "<meta charset=\"utf-8\">",
        &format!("<meta charset=\"utf-8\">{meta}{before}"),
        1,
    );
    origin.route(
        "/src/before.js",
        Route::js("document.documentElement.dataset.before = String(!!window.__ticketStamp);\n"),
    );
    assert!(page.contains(&meta));
    origin.route("/", Route::html(&page));
    let html = stamp_tests::get_text(&proxy.url("/?dev=DEMO-1")).await;
    let probe = html.find("<script src=\"/__stamp/probe/").expect(&html);
    let policy = html
        .find("http-equiv=\"Content-Security-Policy\"")
        .expect(&html);
    assert!(probe < policy, "{html}");

    let browser = Browser::start().await.unwrap();
    browser.goto(&proxy.url("/?dev=DEMO-1")).await.unwrap();
    browser
        .wait_for_text("#greeting", DEMO_GREETING, PAGE_TIMEOUT)
        .await
        .unwrap();
    crate::setups::badge_says(&browser, "1 of 1 module ran").await;
    let before = browser
        .execute("return document.documentElement.dataset.before")
        .await
        .unwrap();
    assert_eq!(
        before, "true",
        "the probe ran before the page's first script"
    );
    let refused = browser.csp_violations().await.unwrap();
    assert!(refused.is_empty(), "CSP violations: {refused:?}");
    let probe_loads = "return performance.getEntriesByType('resource') \
         .filter(e => new URL(e.name).pathname.startsWith('/__stamp/probe/')) \
         .map(e => [e.initiatorType, e.transferSize]);";
    let first = browser.execute(probe_loads).await.unwrap();
    let first = first.as_array().expect("a list");
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0][0], "script", "{first:?}");
    assert!(
        first[0][1].as_u64().unwrap() > 0,
        "from the network: {first:?}"
    );

    // The next page of the ticket takes it from the browser's cache.
    browser.click("#about-link").await.unwrap();
    browser
        .wait_for_text("#greeting", DEMO_ABOUT_GREETING, PAGE_TIMEOUT)
        .await
        .unwrap();
    crate::setups::badge_says(&browser, "1 of 1 module ran").await;
    let again = browser.execute(probe_loads).await.unwrap();
    let again = again.as_array().expect("a list");
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0][1], 0, "kept by the browser: {again:?}");
    check_console(&browser, "the probe loaded").await;
    browser.close().await.unwrap();
}

/// An origin that lets browsers keep its pages (`max-age`): a response
/// that sets or clears the selection is never kept, so a second
/// `?stamp=off` reaches the proxy and clears the ticket again, instead of
/// coming from the browser's cache without its `Set-Cookie`.
#[tokio::test]
async fn leaving_a_ticket_works_on_pages_browsers_may_cache() {
    let origin = demo_origin();
    origin.route(
        "/",
        Route::html(&demo_file("index.html")).header("cache-control", "public, max-age=600"),
    );
    let (proxy, _dir) = demo_ticket_proxy(&origin).await;
    let browser = Browser::start().await.unwrap();
    let greeting = |path: &'static str| {
        let browser = &browser;
        let url = proxy.url(path);
        async move {
            browser.goto(&url).await.unwrap();
            browser
                .wait_for_text("#greeting", "shopper", PAGE_TIMEOUT)
                .await
                .unwrap()
        }
    };
    assert_eq!(greeting("/?stamp=off").await, PRODUCTION_GREETING);
    assert_eq!(greeting("/?dev=DEMO-1").await, DEMO_GREETING);
    assert_eq!(greeting("/?stamp=off").await, PRODUCTION_GREETING);
    assert_eq!(browser.cookie("ticket_stamp").await.unwrap(), None);
    assert_eq!(greeting("/").await, PRODUCTION_GREETING);
    // What said so: nothing that sets a cookie may be stored.
    let resp = stamp_tests::client()
        .get(proxy.url("/?stamp=off"))
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("set-cookie").is_some());
    assert_eq!(resp.headers()["cache-control"], "private, no-store");
    browser.close().await.unwrap();
}

/// Another site links to `?dev=DEMO-1`: the visitor lands on the proxy's
/// question, not on the ticket's code. "Continue" (a same-origin click)
/// opens the ticket; "Stay on production" stays; the question is not
/// asked again once they chose the ticket; and the page cannot be framed.
/// Another site that frames the link gets production in the frame, and
/// selects nothing.
#[tokio::test]
async fn a_ticket_link_from_another_site_asks_first() {
    let origin = demo_origin();
    let (_store_dir, location) = seeded_demo_store().await;
    let proxy = Proxy::start(&origin.url, &["--store", &location]).unwrap();
    // The other site: another port is another origin (same-site, which
    // counts as another site here; a true cross-site link is checked below).
    let ticket_link = proxy.url("/?dev=DEMO-1");
    let elsewhere = Origin::start().unwrap();
    elsewhere.route(
        "/",
        Route::html(&format!(
            "<!doctype html><a id=go href=\"{ticket_link}\">see this</a>"
        )),
    );
    elsewhere.route(
        "/framed",
        Route::html(&format!(
            "<!doctype html><iframe id=f src=\"{ticket_link}\"></iframe>"
        )),
    );
    let browser = Browser::start().await.unwrap();
    browser
        .goto(&format!("{}/framed", elsewhere.url))
        .await
        .unwrap();
    browser.client().unwrap().enter_frame(0).await.unwrap();
    let framed = browser
        .wait_for_text("#greeting", "Hello", PAGE_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(framed, PRODUCTION_GREETING, "a frame never runs the ticket");
    browser
        .client()
        .unwrap()
        .enter_parent_frame()
        .await
        .unwrap();
    assert_eq!(browser.cookie("ticket_stamp").await.unwrap(), None);
    let from_elsewhere = || async {
        browser.goto(&elsewhere.url).await.unwrap();
        browser.click("#go").await.unwrap();
        browser
            .wait_for_text("h1", "Open ticket", PAGE_TIMEOUT)
            .await
            .unwrap()
    };
    let asked = from_elsewhere().await;
    let host = proxy.url.trim_start_matches("http://").to_string();
    assert_eq!(asked, format!("Open ticket DEMO-1 on {host}?"));
    assert_eq!(browser.cookie("ticket_stamp").await.unwrap(), None);
    // Stay: production, and nothing selected.
    browser.click("a.stay").await.unwrap();
    let greeting = browser
        .wait_for_text("#greeting", "Hello", PAGE_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(greeting, PRODUCTION_GREETING);
    assert_eq!(browser.cookie("ticket_stamp").await.unwrap(), None);
    // Continue: the ticket, with its badge.
    from_elsewhere().await;
    browser.click("a.go").await.unwrap();
    let build = browser
        .wait_for_text("#build", "greet.js from", PAGE_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(build, "greet.js from ticket DEMO-1");
    assert!(browser.cookie("ticket_stamp").await.unwrap().is_some());
    // Chosen once: the same link from elsewhere goes straight through.
    browser.goto(&elsewhere.url).await.unwrap();
    browser.click("#go").await.unwrap();
    let build = browser
        .wait_for_text("#build", "greet.js from", PAGE_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(build, "greet.js from ticket DEMO-1");

    // The question itself: no cookie, not framable, no script.
    let resp = stamp_tests::client()
        .get(&ticket_link)
        .header("sec-fetch-site", "cross-site")
        .header("sec-fetch-mode", "navigate")
        .header("sec-fetch-dest", "document")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("set-cookie").is_none());
    let csp = resp.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    assert_eq!(resp.headers()["cache-control"], "private, no-store");
    let body = resp.text().await.unwrap();
    assert!(!body.contains("<script"), "{body}");
    // A share token means nothing without a preview gate to check it: a
    // made-up one neither skips the question nor the frame rule.
    for dest in ["document", "iframe"] {
        let resp = stamp_tests::client()
            .get(format!("{ticket_link}&st=0"))
            .header("sec-fetch-site", "cross-site")
            .header("sec-fetch-mode", "navigate")
            .header("sec-fetch-dest", dest)
            .send()
            .await
            .unwrap();
        let info = resp.headers()["x-ticket-stamp"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(info.starts_with("production"), "{dest}: {info}");
        let body = resp.text().await.unwrap();
        assert!(!body.contains("ticket-stamp-data"), "{dest}: {body}");
    }
    // Framed from a truly cross-site page: production, and it says why.
    let resp = stamp_tests::client()
        .get(&ticket_link)
        .header("sec-fetch-site", "cross-site")
        .header("sec-fetch-mode", "navigate")
        .header("sec-fetch-dest", "iframe")
        .send()
        .await
        .unwrap();
    let cookies: Vec<_> = resp.headers().get_all("set-cookie").iter().collect();
    assert!(
        cookies.len() == 1
            && cookies[0]
                .to_str()
                .unwrap()
                .starts_with("ticket_stamp_left=dev.DEMO-1;"),
        "nothing selected, and the page's requests select nothing either: {cookies:?}"
    );
    assert_eq!(
        resp.headers()["x-ticket-stamp"],
        "production; reason=\"a page on another site framed the ticket link\""
    );
    let body = resp.text().await.unwrap();
    assert!(!body.contains("ticket-stamp-data"), "no probe: {body}");
    browser.close().await.unwrap();
}

/// The panel reads a page per stage: 60 dev tickets show as 50 and a "Show
/// more" that brings the rest; the key filter asks the API, not the page.
#[tokio::test]
async fn the_panel_pages_and_filters_the_list() {
    let origin = demo_origin();
    let dir = tempfile::tempdir().unwrap();
    let proxy = panel_proxy(&origin, dir.path(), "");
    for i in 0..60 {
        let key = if i < 3 {
            format!("SHOE-{i}")
        } else {
            format!("PAGE-{i}")
        };
        let path = format!("tickets/{key}/modules/src/a.js");
        assert_eq!(api_as(&proxy, "dev-secret", "PUT", &path, "a").await, 201);
    }
    let browser = Browser::start().await.unwrap();
    sign_in(&browser, &proxy, "qa-secret").await;
    browser
        .wait_for_text("#stage-dev", "dev (60)", Duration::from_secs(10))
        .await
        .unwrap();
    let rows = "return document.querySelectorAll('section[data-stage=dev] tbody tr').length";
    assert_eq!(browser.execute(rows).await.unwrap(), 50);
    browser.click("button.more[data-stage=dev]").await.unwrap();
    let start = std::time::Instant::now();
    while browser.execute(rows).await.unwrap() != 60 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the rest never came"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hidden = "return document.querySelector('button.more[data-stage=dev]').hidden";
    assert_eq!(browser.execute(hidden).await.unwrap(), true);

    let c = browser.client().unwrap();
    c.find(fantoccini::Locator::Css("#ticket-search"))
        .await
        .unwrap()
        .send_keys("shoe")
        .await
        .unwrap();
    browser.click("#ticket-filter button").await.unwrap();
    browser
        .wait_for_text("#stage-dev", "dev (3)", Duration::from_secs(10))
        .await
        .unwrap();
    let keys = browser
        .execute("return [...document.querySelectorAll('section[data-stage=dev] tbody tr')].map(r => r.dataset.ticket).sort().join(',')")
        .await
        .unwrap();
    assert_eq!(keys, "SHOE-0,SHOE-1,SHOE-2");
    browser.close().await.unwrap();
}

/// A demo page (`file`) with speculation rules that fetch `url` ahead
/// (`kind`: `prefetch` or `prerender`), as many apps now ship them.
fn fetches_ahead(file: &str, kind: &str, url: &str) -> Route {
    let rules = format!(
        "<script type=\"speculationrules\">{{\"{kind}\":[{{\"source\":\"list\",\"urls\":[\"{url}\"]}}]}}</script></body>"
    );
    Route::html(&demo_file(file).replace("</body>", &rules))
}

/// Opens `url`, a ticket page that fetches `ahead` ahead, until it greets
/// with `greeting` and Chromium has fetched `ahead` ahead (`Sec-Purpose`,
/// which says `prefetch` for a prerender too); answers how often the origin
/// has been asked for `ahead` by then.
async fn fetching_ahead(
    browser: &Browser,
    origin: &Origin,
    url: &str,
    greeting: &str,
    ahead: &str,
) -> u64 {
    let since = origin.hits(ahead);
    browser.goto(url).await.unwrap();
    browser
        .wait_for_text("#greeting", greeting, PAGE_TIMEOUT)
        .await
        .unwrap();
    let start = Instant::now();
    loop {
        let purpose = origin
            .last_headers(ahead)
            .filter(|_| origin.hits(ahead) > since)
            .and_then(|h| h.get("sec-purpose").cloned());
        if let Some(purpose) = purpose {
            assert!(
                purpose.to_str().unwrap().contains("prefetch"),
                "{purpose:?}"
            );
            return origin.hits(ahead);
        }
        assert!(
            start.elapsed() < PAGE_TIMEOUT,
            "Chromium fetched nothing ahead"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How the current page was delivered (`navigational-prefetch` for a page
/// fetched ahead, prerendered ones included; empty for a fresh load).
async fn delivery(browser: &Browser) -> String {
    browser
        .execute("return performance.getEntriesByType('navigation')[0].deliveryType;")
        .await
        .unwrap()
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A ticket's page whose speculation rules fetch pages ahead, with the
/// ticket's cookie. Chromium keeps using such a page after that cookie is
/// cleared (measured: the exit's `location.replace('/')` showed the
/// prefetched ticket page, and activated the prerendered one). So leaving
/// (the badge's exit, `?stamp=off` in another tab) and switching clear them
/// (`Clear-Site-Data`), and the next page is production's, fetched anew.
#[tokio::test]
async fn leaving_a_ticket_drops_the_pages_it_fetched_ahead() {
    let origin = demo_origin();
    let (proxy, _dir) = demo_ticket_proxy(&origin).await;
    let browser = Browser::start().await.unwrap();
    for kind in ["prefetch", "prerender"] {
        origin.route("/", fetches_ahead("index.html", kind, "/"));
        let asked = fetching_ahead(
            &browser,
            &origin,
            &proxy.url("/?dev=DEMO-1"),
            DEMO_GREETING,
            "/",
        )
        .await;
        browser.leave_by_the_badge().await.unwrap();
        browser
            .wait_for_text("#greeting", PRODUCTION_GREETING, PAGE_TIMEOUT)
            .await
            .with_context(|| format!("after the exit, with a {kind} of the ticket's /"))
            .unwrap();
        assert_eq!(
            delivery(&browser).await,
            "",
            "{kind}: production, fetched anew"
        );
        assert!(
            origin.hits("/") > asked,
            "{kind}: the origin was asked again"
        );
        assert_eq!(browser.cookie("ticket_stamp").await.unwrap(), None);
    }

    // Leaving in another tab (`?stamp=off`) drops what this one fetched
    // ahead: its next click shows production, as the badge would say.
    origin.route("/about", fetches_ahead("about.html", "prefetch", "/"));
    let url = proxy.url("/about?dev=DEMO-1");
    let asked = fetching_ahead(&browser, &origin, &url, DEMO_ABOUT_GREETING, "/").await;
    let client = browser.client().unwrap();
    let ticket_tab = client.window().await.unwrap();
    let other = client.new_window(true).await.unwrap();
    client.switch_to_window(other.handle).await.unwrap();
    browser.goto(&proxy.url("/about?stamp=off")).await.unwrap();
    client.close_window().await.unwrap();
    client.switch_to_window(ticket_tab).await.unwrap();
    browser
        .execute("location.href = '/'; return true;")
        .await
        .unwrap();
    browser
        .wait_for_text("#greeting", PRODUCTION_GREETING, PAGE_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(delivery(&browser).await, "");
    assert!(origin.hits("/") > asked);
    browser.close().await.unwrap();
}

/// Production's pages that browsers keep (GitHub Pages' `max-age=600`, a
/// static server's `Last-Modified` left to the browser's heuristic) answer
/// a link from the browser's own cache, without asking. Measured before
/// this rule: a visitor who had seen production's /about opened a ticket
/// link, clicked to /about and was shown production's, with no badge. So
/// the ticket's first page clears the browser's cache for the origin, and
/// a page of production that a browser on a ticket gets unstamped (a
/// script's `fetch`) is not stored.
#[tokio::test]
async fn pages_the_browser_kept_of_production_never_show_on_a_ticket() {
    const PRODUCTION_ABOUT: &str = "Hello, visitor! Everything under $5.00 today.";
    const BADGED: &str = "return !!document.querySelector('ticket-stamp-badge');";
    let kept = [
        ("cache-control", "max-age=600"),
        ("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT"),
    ];
    for (name, value) in kept {
        let origin = demo_origin();
        origin.route(
            "/about",
            Route::html(&demo_file("about.html")).header(name, value),
        );
        let (proxy, _dir) = demo_ticket_proxy(&origin).await;
        let browser = Browser::start().await.unwrap();
        // Opens `path` (a URL, or a link the page follows) and waits for
        // the page to greet with `greeting`.
        let shows = |path: String, greeting: &'static str| {
            let browser = &browser;
            async move {
                if path.starts_with('/') {
                    let go = format!("location.href = '{path}'; return true;");
                    browser.execute(&go).await.unwrap();
                } else {
                    browser.goto(&path).await.unwrap();
                }
                browser
                    .wait_for_text("#greeting", greeting, PAGE_TIMEOUT)
                    .await
                    .with_context(|| format!("{name}: {path}"))
                    .unwrap();
            }
        };
        // Production, seen once: the browser keeps /about and shows it
        // again without asking (what makes this test mean anything).
        shows(proxy.url("/about"), PRODUCTION_ABOUT).await;
        shows(proxy.url("/"), PRODUCTION_GREETING).await;
        shows("/about".into(), PRODUCTION_ABOUT).await;
        assert_eq!(origin.hits("/about"), 1, "{name}: kept by the browser");

        // The ticket's link, then its link to /about: the ticket's page.
        shows(proxy.url("/?dev=DEMO-1"), DEMO_GREETING).await;
        shows("/about".into(), DEMO_ABOUT_GREETING).await;
        assert_eq!(origin.hits("/about"), 2, "{name}: asked for again");
        assert_eq!(browser.execute(BADGED).await.unwrap(), true, "{name}");

        // On the ticket, a script fetches production's /about: the page
        // it gets is not kept, so the next link to /about is the ticket's.
        shows("/".into(), DEMO_GREETING).await;
        let cache_control = browser
            .execute(
                "return fetch('/about').then(r => r.text().then(() => r.headers.get('cache-control')));",
            )
            .await
            .unwrap();
        assert_eq!(cache_control.as_str(), Some("private, no-store"), "{name}");
        assert_eq!(origin.hits("/about"), 3);
        shows("/about".into(), DEMO_ABOUT_GREETING).await;
        assert_eq!(origin.hits("/about"), 4, "{name}: asked for again");
        assert_eq!(browser.execute(BADGED).await.unwrap(), true, "{name}");
        browser.close().await.unwrap();
    }
}

/// A ticket page that prerenders another (speculation rules): the
/// prerendered page loads and runs the ticket's code before anyone sees it,
/// and may never be shown. It is counted as a view once shown, not before:
/// what the ticket's views (and a rollout's verdict) say was seen, was.
#[tokio::test]
async fn a_prerendered_page_is_a_view_once_it_is_shown() {
    let origin = demo_origin();
    origin.route("/", fetches_ahead("index.html", "prerender", "/about"));
    let (proxy, _dir) = demo_ticket_proxy(&origin).await;
    let browser = Browser::start().await.unwrap();
    let url = proxy.url("/?dev=DEMO-1");
    fetching_ahead(&browser, &origin, &url, DEMO_GREETING, "/about").await;
    let views = stamp_tests::ticket_views(&proxy, "DEMO-1", 1).await;
    // Long past the probe's report (3 s after a page's load): the
    // prerendered page, loaded meanwhile, has said nothing.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let views = stamp_tests::ticket_views(&proxy, "DEMO-1", views.len()).await;
    let pages: Vec<&str> = views.iter().filter_map(|v| v["page"].as_str()).collect();
    assert_eq!(pages, ["/"], "{views:?}");
    // Shown: now it is a view.
    browser
        .execute("setTimeout(() => { location.href = '/about'; }, 0); return true;")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Activating a prerendered page puts it in the tab's place: the driver
    // knows it as a new window, the only one.
    let client = browser.client().unwrap();
    let windows = client.windows().await.unwrap();
    assert_eq!(windows.len(), 1, "{windows:?}");
    client.switch_to_window(windows[0].clone()).await.unwrap();
    browser
        .wait_for_text("#greeting", DEMO_ABOUT_GREETING, PAGE_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(
        delivery(&browser).await,
        "navigational-prefetch",
        "activated"
    );
    let views = stamp_tests::ticket_views(&proxy, "DEMO-1", 2).await;
    let pages: Vec<&str> = views.iter().filter_map(|v| v["page"].as_str()).collect();
    assert!(pages.contains(&"/about"), "{views:?}");
    browser.close().await.unwrap();
}

/// A production page whose speculation rules fetch a ticket link ahead
/// (with `/about`, to know when Chromium did): the link selects nothing
/// until it is opened, and opened, it shows the ticket.
#[tokio::test]
async fn a_ticket_link_fetched_ahead_selects_nothing_until_opened() {
    let origin = demo_origin();
    let rules = "<script type=\"speculationrules\">{\"prefetch\":[{\"source\":\"list\",\"urls\":[\"/?dev=DEMO-1\",\"/about\"]}]}</script></body>";
    origin.route(
        "/",
        Route::html(&demo_file("index.html").replace("</body>", rules)),
    );
    let (proxy, _dir) = demo_ticket_proxy(&origin).await;
    let browser = Browser::start().await.unwrap();
    let url = proxy.url("/");
    fetching_ahead(&browser, &origin, &url, PRODUCTION_GREETING, "/about").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        browser.cookie("ticket_stamp").await.unwrap(),
        None,
        "a link nobody opened selected its ticket"
    );
    browser.refresh().await.unwrap();
    browser
        .wait_for_text("#greeting", PRODUCTION_GREETING, PAGE_TIMEOUT)
        .await
        .unwrap();
    browser
        .execute("location.href = '/?dev=DEMO-1'; return true;")
        .await
        .unwrap();
    browser
        .wait_for_text("#greeting", DEMO_GREETING, PAGE_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(delivery(&browser).await, "", "asked for anew when opened");
    browser.close().await.unwrap();
}

/// An origin that lets browsers keep its page and says no query parameter
/// changes it (`No-Vary-Search: params`): Chromium then answers any query
/// of `/` from the copy it kept (measured: `/page?dev=X` showed the kept
/// `/page`). The ticket link, `?stamp=off` and the ticket's module
/// (`greet.js?__ts=…`, production's greet.js kept) still reach the proxy:
/// the proxy's parameters are kept out of what the header ignores.
#[tokio::test]
async fn a_ticket_link_is_never_answered_from_a_kept_production_page() {
    let origin = demo_origin();
    origin.route(
        "/",
        Route::html(&demo_file("index.html"))
            .header("cache-control", "public, max-age=600")
            .header("no-vary-search", "params"),
    );
    // Its modules too: the ticket's greet.js is production's path with
    // `?__ts=`, which must not be answered with production's kept file.
    origin.route(
        GREET,
        Route::bytes("text/javascript", demo_file(&GREET[1..]).into_bytes())
            .header("cache-control", "public, max-age=600")
            .header("no-vary-search", "params"),
    );
    let (proxy, _dir) = demo_ticket_proxy(&origin).await;
    let browser = Browser::start().await.unwrap();
    let go = |path: &'static str, greeting: &'static str| {
        let browser = &browser;
        async move {
            browser
                .execute_with(
                    "location.href = arguments[0]; return true;",
                    vec![path.into()],
                )
                .await
                .unwrap();
            browser
                .wait_for_text("#greeting", greeting, PAGE_TIMEOUT)
                .await
                .with_context(|| format!("opening {path}"))
                .unwrap();
        }
    };
    browser.goto(&proxy.url("/")).await.unwrap();
    browser
        .wait_for_text("#greeting", PRODUCTION_GREETING, PAGE_TIMEOUT)
        .await
        .unwrap();
    // Kept: the same URL again comes from the browser's cache.
    let asked = origin.hits("/");
    go("/about", "visitor").await;
    go("/", PRODUCTION_GREETING).await;
    assert_eq!(
        origin.hits("/"),
        asked,
        "the browser keeps production's page"
    );
    go("/?utm_source=mail", PRODUCTION_GREETING).await;
    assert_eq!(origin.hits("/"), asked, "and answers other queries with it");
    go("/?dev=DEMO-1", DEMO_GREETING).await;
    assert_eq!(
        browser.cookie("ticket_stamp").await.unwrap().as_deref(),
        Some("dev.DEMO-1")
    );
    go("/?stamp=off", PRODUCTION_GREETING).await;
    assert_eq!(browser.cookie("ticket_stamp").await.unwrap(), None);
    browser.close().await.unwrap();
}
