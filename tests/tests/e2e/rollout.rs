//! Releasing by steps, end to end: real proxies (one, or two on one Redis),
//! a real origin, Chromium visitors whose probes report what their pages
//! ran, the rollout job deciding from those reports, and the CLI.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use stamp_model::rollout::{in_slice, visitor_id_from, VISITOR_COOKIE};
use stamp_model::TicketKey;
use stamp_tests::browser::Browser;
use stamp_tests::{client, Origin, Proxy, RedisServer, Route};

const PAGE: &str = "<!doctype html><html><head><meta charset=utf-8><title>shop</title>\
    <script type=importmap>{\"imports\":{\"@app/greet\":\"/src/greet.js\"}}</script>\
    <script type=module>import { greet } from '@app/greet'; document.getElementById('out').textContent = greet();</script>\
    </head><body><p id=out>loading</p></body></html>";

fn origin() -> Origin {
    let o = Origin::start().unwrap();
    o.route("/", Route::html(PAGE));
    o.route(
        "/src/greet.js",
        Route::bytes(
            "text/javascript",
            b"export const greet = () => 'production';\n".to_vec(),
        ),
    );
    o
}

/// The rollout job's revert in a ticket's history: checked to be the
/// job's, and its detail (the verdict, with both sides' numbers).
fn reverted_by_the_job(t: &Value) -> String {
    let revert = t["history"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|e| e["event"] == "revert")
        .cloned()
        .unwrap_or_else(|| panic!("no revert in {t}"));
    assert_eq!(revert["actor"], "rollout", "{revert}");
    revert["detail"].as_str().unwrap().to_string()
}

/// An origin with the shop's page at `/` (its module imports the ticket's
/// file) and a page at `/home` that loads none.
fn origin_with_home() -> Origin {
    let o = origin();
    o.route(
        "/home",
        Route::html(
            "<!doctype html><html><head><meta charset=utf-8><title>shop</title></head>\
             <body><p id=out>home</p></body></html>",
        ),
    );
    o
}

/// A proxy whose production pages all report, and whose rollouts are
/// judged on few views, checked often.
fn proxy(origin: &Origin, store: &str, rollout: &str) -> (Proxy, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy.toml");
    std::fs::write(
        &file,
        format!(
            "origin = \"{}\"\nstore = \"{store}\"\n\
             [reports]\nsample = 1.0\nper_second = 10000\nper_client_per_minute = 100000\n\
             [rollout]\ncheck_every = \"200ms\"\n{rollout}\n",
            origin.url
        ),
    )
    .unwrap();
    let p = Proxy::start_with(None, &["--config", &file.to_string_lossy()], &[]).unwrap();
    (p, dir)
}

async fn api(proxy: &Proxy, method: &str, path: &str, body: Value) -> (u16, Value) {
    let url = proxy.url(&format!("/__stamp/api/v1/{path}"));
    let req = match method {
        "GET" => client().get(url),
        "PUT" => client().put(url),
        _ => client().post(url),
    };
    let req = if method == "PUT" {
        req.body(body.as_str().unwrap_or_default().to_string())
    } else if body.is_null() {
        req
    } else {
        req.json(&body)
    };
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Uploads `greet` to `key` and takes it to qa.
async fn ticket_in_qa(proxy: &Proxy, key: &str, greet: &str) {
    file_in_qa(proxy, key, "src/greet.js", greet).await;
}

/// Uploads `body` at `path` to `key` and takes it to qa.
async fn file_in_qa(proxy: &Proxy, key: &str, path: &str, body: &str) {
    let (s, b) = api(
        proxy,
        "PUT",
        &format!("tickets/{key}/modules/{path}"),
        Value::String(body.into()),
    )
    .await;
    assert!(s == 200 || s == 201, "{s} {b}");
    let (s, b) = api(
        proxy,
        "POST",
        &format!("tickets/{key}/promote"),
        json!({"from": "dev"}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
}

async fn release_by_steps(proxy: &Proxy, key: &str, steps: &[u8], every: &str) -> Value {
    let (s, b) = api(
        proxy,
        "POST",
        &format!("tickets/{key}/promote"),
        json!({"from": "qa", "rollout": {"steps": steps, "every": every}}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    b
}

async fn ticket(proxy: &Proxy, key: &str) -> Value {
    api(proxy, "GET", &format!("tickets/{key}"), Value::Null)
        .await
        .1
}

/// One page view as a new visitor: the page's text, whether it loaded any
/// ticket URL (`?__ts=`) or carries one in its markup, and whether it
/// carries the probe.
async fn visit(browser: &Browser, url: &str) -> (String, bool, bool) {
    // On the site (no page view) to forget its cookies: a new visitor.
    let site = url.split('/').take(3).collect::<Vec<_>>().join("/");
    browser
        .goto(&format!("{site}/__stamp/health"))
        .await
        .unwrap();
    browser.clear_cookies().await.unwrap();
    browser.goto(url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = browser
            .execute(
                "const out = document.getElementById('out')?.textContent; \
                 const ts = performance.getEntriesByType('resource').some(e => e.name.includes('__ts=')) \
                   || document.documentElement.outerHTML.includes('__ts='); \
                 return [out, ts, !!window.__ticketStamp];",
            )
            .await
            .unwrap();
        let out = v[0].as_str().unwrap_or_default().to_string();
        // A page whose module threw still says `loading`: give it a moment.
        if out != "loading" || Instant::now() > deadline - Duration::from_secs(8) {
            return (out, v[1].as_bool().unwrap(), v[2].as_bool().unwrap());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(Instant::now() < deadline);
    }
}

/// A ticket whose module throws for its side is reverted by the rollout
/// job within its window, from what real browsers reported; production's
/// side never gets a byte of it, and a tab opened before the revert still
/// loads the ticket's module by its URL (skew protection).
#[tokio::test]
async fn a_ticket_that_throws_for_its_side_reverts_by_itself() {
    let origin = origin();
    let store = tempfile::tempdir().unwrap();
    let (proxy, _conf) = proxy(
        &origin,
        &store.path().display().to_string(),
        "min_views = 6\nmin_increase = 0.05\n",
    );
    ticket_in_qa(
        &proxy,
        "RB-1",
        "throw new Error('ticket broke');\nexport const greet = () => 'ticket';\n",
    )
    .await;
    let released = release_by_steps(&proxy, "RB-1", &[50], "0").await;
    assert_eq!(released["stage"], "prod");
    let t = ticket(&proxy, "RB-1").await;
    assert_eq!(t["rollout"]["percent"], 50, "{t}");
    let module_url = t["modules"]["prod"][0]["url"].as_str().unwrap().to_string();
    let browser = Browser::start().await.unwrap();
    let (mut ticket_side, mut production_side) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(120);
    let reverted = loop {
        let (out, on_ticket, probe) = visit(&browser, &proxy.url("/")).await;
        let t = ticket(&proxy, "RB-1").await;
        if t["stage"] == "qa" {
            break t;
        }
        assert!(
            probe,
            "while rolling out, a sampled production page carries the probe"
        );
        if on_ticket {
            ticket_side += 1;
            assert_eq!(out, "loading", "the ticket's module threw");
        } else {
            production_side += 1;
            assert_eq!(out, "production", "production's side runs production");
        }
        assert!(
            Instant::now() < deadline,
            "not reverted after {ticket_side} ticket and {production_side} production views: {t}"
        );
    };
    assert!(
        ticket_side >= 6 && production_side >= 6,
        "{ticket_side} {production_side}"
    );
    let detail = reverted_by_the_job(&reverted);
    assert!(
        detail.contains("regressed") && detail.contains("views erred"),
        "{detail}"
    );
    assert!(reverted.get("rollout").is_none(), "{reverted}");
    // Everyone is on production now.
    for _ in 0..4 {
        let (out, on_ticket, probe) = visit(&browser, &proxy.url("/")).await;
        assert!(
            !on_ticket && !probe,
            "no ticket and no probe once no ticket rolls out"
        );
        assert_eq!(out, "production");
    }
    // A tab opened before the revert still gets the module it names.
    let resp = client().get(proxy.url(&module_url)).send().await.unwrap();
    assert_eq!(resp.status(), 200, "skew protection keeps {module_url}");
    browser.close().await.unwrap();
}

/// A ticket whose pages hang (an endless loop in its module) shows no
/// error at all: a hung page never reports, so the error test alone would
/// wait for views forever while the ticket's side stays broken. Its side is
/// sent pages and never heard from, and the rollout job reverts it for that
/// silence. Visitors are real Chromium processes, each a new visitor, who
/// close a page that has not finished within a few seconds.
#[tokio::test]
async fn a_ticket_whose_pages_hang_reverts_by_its_silence() {
    let origin = origin();
    let store = tempfile::tempdir().unwrap();
    let (proxy, _conf) = proxy(
        &origin,
        &store.path().display().to_string(),
        // Each minute's pages are judged as soon as it ends.
        "min_views = 4\nmin_increase = 0.05\nheard_within = \"1ms\"\n",
    );
    ticket_in_qa(
        &proxy,
        "RB-9",
        "for (;;) {}\nexport const greet = () => 'ticket';\n",
    )
    .await;
    // Steps by hand: only the job's revert can end this rollout.
    release_by_steps(&proxy, "RB-9", &[50], "0").await;
    let (mut hung, mut production_side) = (0, 0);
    let mut last = Value::Null;
    // Pages are judged by the minute they were sent in, once it ends.
    let deadline = Instant::now() + Duration::from_secs(200);
    let reverted = loop {
        let url = proxy.url("/");
        let dom = tokio::task::spawn_blocking(move || {
            stamp_tests::browser::visit_and_give_up(&url, 5000, Duration::from_secs(4))
        })
        .await
        .unwrap()
        .unwrap();
        match dom {
            Some(dom) => {
                assert!(
                    dom.contains("<p id=\"out\">production</p>"),
                    "a page that finished is production's side, and ran production: {dom}"
                );
                production_side += 1;
            }
            None => hung += 1,
        }
        let t = ticket(&proxy, "RB-9").await;
        if t["stage"] == "qa" {
            break t;
        }
        let r = &t["rollout"];
        assert_eq!(r["ticket"]["heard"], 0, "a hung page says nothing: {r}");
        assert_eq!(r["ticket"]["erring_views"], 0, "nor any error: {r}");
        last = r.clone();
        assert!(
            Instant::now() < deadline,
            "not reverted after {hung} hung and {production_side} production visits: {t}"
        );
    };
    assert!(
        hung >= 4 && production_side >= 4,
        "{hung} {production_side} {last}"
    );
    let detail = reverted_by_the_job(&reverted);
    assert!(
        detail.contains("silent: the ticket's side was heard from on 0 of")
            && detail.contains("hang or crash"),
        "{detail}"
    );
    // Everyone is on production again, and the pages finish.
    for _ in 0..2 {
        let url = proxy.url("/");
        let dom = tokio::task::spawn_blocking(move || {
            stamp_tests::browser::visit_and_give_up(&url, 5000, Duration::from_secs(8))
        })
        .await
        .unwrap()
        .unwrap()
        .expect("production's page finishes");
        assert!(dom.contains("<p id=\"out\">production</p>"), "{dom}");
    }
}

/// A rollout's page put in the background reports at once: a phone's
/// browser may discard a background tab without a `pagehide`, and a page
/// never heard from counts as one that hung. Measured in Chromium: the
/// page's report (and the proxy's `heard`) comes as the visitor switches
/// to another tab, before the report the page would send 3 s after load.
#[tokio::test]
async fn a_rollout_page_put_in_the_background_reports_at_once() {
    let origin = origin();
    let store = tempfile::tempdir().unwrap();
    let (proxy, _conf) = proxy(&origin, &store.path().display().to_string(), "");
    ticket_in_qa(&proxy, "RB-8", "export const greet = () => 'ticket';\n").await;
    release_by_steps(&proxy, "RB-8", &[50], "0").await;
    let heard = || async {
        let text = client()
            .get(proxy.url("/__stamp/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| {
                l.starts_with("stamp_rollout_pages_total{")
                    && l.contains("outcome=\"heard\"")
                    && l.contains("ticket=\"RB-8\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum::<u64>()
    };
    let browser = Browser::start().await.unwrap();
    for round in 0..2u64 {
        browser.goto(&proxy.url("/")).await.unwrap();
        let loaded = Instant::now();
        let c = browser.client().unwrap();
        let tab = c.new_window(true).await.unwrap();
        c.switch_to_window(tab.handle).await.unwrap();
        let mut got = heard().await;
        while got <= round && loaded.elapsed() < Duration::from_millis(2500) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            got = heard().await;
        }
        assert_eq!(
            got,
            round + 1,
            "heard {got} page(s) {:?} after load, the page in the background",
            loaded.elapsed()
        );
        c.close_window().await.unwrap();
        let first = c.windows().await.unwrap().remove(0);
        c.switch_to_window(first).await.unwrap();
    }
    browser.close().await.unwrap();
}

/// A ticket that breaks the one route that loads its file (a checkout)
/// moves the error rate of all production's views by less than the rule's
/// least increase; among the views that load its file, it breaks every
/// one. The rollout reverts it from those, as real Chromium visitors of
/// both routes reported them (production's side says it loaded
/// production's copy of the file, the ticket's side its own).
#[tokio::test]
async fn a_ticket_that_breaks_one_route_reverts_where_its_file_loads() {
    let origin = origin_with_home();
    let store = tempfile::tempdir().unwrap();
    // Each side's visitors open the home page and the checkout in turn:
    // over all views the ticket's side errs on at most half of its views,
    // under the 75 points this rule asks for; where the file loads, on all.
    let (proxy, _conf) = proxy(
        &origin,
        &store.path().display().to_string(),
        "min_views = 4\nmin_increase = 0.75\n",
    );
    ticket_in_qa(
        &proxy,
        "RB-7",
        "throw new Error('checkout broke');\nexport const greet = () => 'ticket';\n",
    )
    .await;
    release_by_steps(&proxy, "RB-7", &[50], "0").await;
    let mut next_on = new_visitors("RB-7", 11);
    let browser = Browser::start().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut visits = 0;
    let reverted = loop {
        let ticket_side = visits % 2 == 0;
        let path = if (visits / 2) % 2 == 0 { "/home" } else { "/" };
        let (out, on_ticket) = visit_as(&browser, &proxy.url(path), next_on(ticket_side)).await;
        visits += 1;
        // (Reverted while the page loaded, it is production's.)
        let t = ticket(&proxy, "RB-7").await;
        if t["stage"] == "qa" {
            break t;
        }
        assert_eq!(on_ticket, ticket_side, "{path}");
        let want = match (path, ticket_side) {
            ("/home", _) => "home",
            (_, true) => "loading",
            (_, false) => "production",
        };
        assert_eq!(out, want, "{path} on the ticket's side: {ticket_side}");
        assert!(
            Instant::now() < deadline,
            "not reverted after {visits} visits: {}",
            t["rollout"]
        );
    };
    let detail = reverted_by_the_job(&reverted);
    assert!(
        detail.contains("regressed where its files load: ticket")
            && detail.contains("production 0 of"),
        "{detail}"
    );
    browser.close().await.unwrap();
}

/// A ticket that breaks the app's module worker (it imports a file the
/// ticket never uploaded): a worker that fails to load is told only by a
/// plain `error` event on its `Worker` object, which never reaches the
/// window as what a worker throws does, and the page logs nothing. Sampled
/// pages count it, so the rollout reverts the ticket from what real
/// Chromium visitors of both sides reported.
#[tokio::test]
async fn a_ticket_that_breaks_the_apps_worker_reverts_by_itself() {
    let origin = Origin::start().unwrap();
    origin.route(
        "/",
        Route::html(
            "<!doctype html><html><head><meta charset=utf-8><title>shop</title>\
             <script type=module>const w = new Worker('/src/work.js', {type: 'module'});\
             w.onmessage = e => { document.getElementById('out').textContent = e.data };\
             w.postMessage('price');</script>\
             </head><body><p id=out>loading</p></body></html>",
        ),
    );
    origin.route(
        "/src/work.js",
        Route::bytes(
            "text/javascript",
            b"self.onmessage = () => self.postMessage('production');\n".to_vec(),
        ),
    );
    a_broken_file_reverts(
        &origin,
        "RB-8",
        "src/work.js",
        "import { price } from './pricing.js';\nself.onmessage = () => self.postMessage(price());\n",
        ("loading", "production"),
    )
    .await;
}

/// Rolls `key`'s `body` at `path` out to half of `origin`'s visitors, and
/// visits both sides (whose pages show `shows`) until the job reverts it
/// for its side's errors.
async fn a_broken_file_reverts(
    origin: &Origin,
    key: &str,
    path: &str,
    body: &str,
    shows: (&str, &str),
) {
    let store = tempfile::tempdir().unwrap();
    let (proxy, _conf) = proxy(
        origin,
        &store.path().display().to_string(),
        "min_views = 4\nmin_increase = 0.5\n",
    );
    file_in_qa(&proxy, key, path, body).await;
    release_by_steps(&proxy, key, &[50], "0").await;
    let detail = reverted_from_both_sides(&proxy, key, shows).await;
    assert!(
        detail.contains("regressed") && detail.contains("production 0 of"),
        "{detail}"
    );
}

/// New visitors whose side of `key` at 50% is known: the next id the
/// slice puts on the ticket's side, or on production's (`seed` picks
/// another series).
fn new_visitors(key: &str, seed: u128) -> impl FnMut(bool) -> String {
    let key = TicketKey::parse(key).unwrap();
    let mut ids = (0..u128::MAX).map(move |i| visitor_id_from(i * 104_729 + seed));
    move |ticket_side: bool| {
        ids.by_ref()
            .find(|id| in_slice(&key, id, 50) == ticket_side)
            .unwrap()
    }
}

/// Visits `/` as new visitors of each side in turn (`key` rolling out at
/// 50%), each page showing `shows` (the ticket's side's, production's),
/// until the rollout job reverts the ticket: its revert's detail.
async fn reverted_from_both_sides(proxy: &Proxy, key: &str, shows: (&str, &str)) -> String {
    let mut next_on = new_visitors(key, 13);
    let browser = Browser::start().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut visits = 0;
    let reverted = loop {
        let ticket_side = visits % 2 == 0;
        let (out, on_ticket) = visit_as(&browser, &proxy.url("/"), next_on(ticket_side)).await;
        visits += 1;
        // (Reverted while the page loaded, it is production's.)
        let t = ticket(proxy, key).await;
        if t["stage"] == "qa" {
            break t;
        }
        assert_eq!(on_ticket, ticket_side);
        let want = if ticket_side { shows.0 } else { shows.1 };
        assert_eq!(out, want, "on the ticket's side: {ticket_side}");
        assert!(
            Instant::now() < deadline,
            "not reverted after {visits} visits: {}",
            t["rollout"]
        );
    };
    browser.close().await.unwrap();
    reverted_by_the_job(&reverted)
}

/// A ticket whose module imports a file it never uploaded, on a page that
/// catches the failed import and shows a fallback (as apps do for a lazy
/// route, or reload): no element fires an `error`, nothing is logged, and
/// only the page's timeline says the module failed to load (a 404). Each
/// such page is an erring view, so the rollout reverts the ticket.
#[tokio::test]
async fn a_ticket_whose_lazy_module_fails_to_load_reverts_by_itself() {
    let origin = Origin::start().unwrap();
    origin.route(
        "/",
        Route::html(
            "<!doctype html><html><head><meta charset=utf-8><title>shop</title>\
             <script type=importmap>{\"imports\":{\"@app/widget\":\"/src/widget.js\"}}</script>\
             <script type=module>import('@app/widget')\
             .then(m => { document.getElementById('out').textContent = m.widget; })\
             .catch(() => { document.getElementById('out').textContent = 'fallback'; });</script>\
             </head><body><p id=out>loading</p></body></html>",
        ),
    );
    origin.route(
        "/src/widget.js",
        Route::js("export const widget = 'production';\n"),
    );
    a_broken_file_reverts(
        &origin,
        "RB-9",
        "src/widget.js",
        "import { fmt } from './fmt.js';\nexport const widget = fmt('ticket');\n",
        ("fallback", "production"),
    )
    .await;
}

/// One page view as the visitor `id` (a new one: no other cookie): the
/// page's text once its module ran or threw, and whether it is the
/// ticket's side (its map names the ticket's URL).
async fn visit_as(browser: &Browser, url: &str, id: String) -> (String, bool) {
    let site = url.split('/').take(3).collect::<Vec<_>>().join("/");
    browser
        .goto(&format!("{site}/__stamp/health"))
        .await
        .unwrap();
    browser.clear_cookies().await.unwrap();
    browser
        .execute_with(
            "document.cookie = arguments[0] + '=' + arguments[1] + '; path=/'",
            vec![json!(VISITOR_COOKIE), json!(id)],
        )
        .await
        .unwrap();
    browser.goto(url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let v = browser
            .execute(
                "const out = document.getElementById('out')?.textContent; \
                 return [out, document.documentElement.outerHTML.includes('__ts=')];",
            )
            .await
            .unwrap();
        let out = v[0].as_str().unwrap_or_default().to_string();
        // A page whose module threw still says `loading`: give it a moment.
        if out != "loading" || Instant::now() > deadline {
            return (out, v[1].as_bool().unwrap());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A view that loads a ticket's file after its first report (a route the
/// visitor opens later) is counted among the views where the ticket's
/// files load, by an update when the page is left, errors or not.
#[tokio::test]
async fn a_file_a_route_loads_later_counts_its_view_where_the_files_load() {
    let origin = origin_with_home();
    let store = tempfile::tempdir().unwrap();
    let (proxy, _conf) = proxy(&origin, &store.path().display().to_string(), "");
    ticket_in_qa(&proxy, "RB-6", "export const greet = () => 'ticket';\n").await;
    release_by_steps(&proxy, "RB-6", &[50], "0").await;
    let counts = || async {
        let t = ticket(&proxy, "RB-6").await;
        let r = &t["rollout"];
        let sum = |k: &str| {
            r["ticket"][k].as_u64().unwrap_or(0) + r["production"][k].as_u64().unwrap_or(0)
        };
        (sum("views"), sum("touched"), sum("touched_erring"))
    };
    let browser = Browser::start().await.unwrap();
    browser.goto(&proxy.url("/home")).await.unwrap();
    // The first report goes 3 s after load: the page has loaded no file
    // of the ticket's yet.
    let deadline = Instant::now() + Duration::from_secs(10);
    while counts().await.0 == 0 {
        assert!(Instant::now() < deadline, "no first report");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(counts().await, (1, 0, 0));
    // A route loads it now (production's copy, or the ticket's, by side).
    browser
        .execute("return import('/src/greet.js').then(m => m.greet())")
        .await
        .unwrap();
    browser.goto(&proxy.url("/__stamp/health")).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while counts().await.1 == 0 {
        assert!(
            Instant::now() < deadline,
            "the view that loaded the file later is not counted: {:?}",
            counts().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(counts().await, (1, 1, 0), "one view, now touched, no error");
    browser.close().await.unwrap();
}

/// A healthy ticket takes its scheduled steps by itself and reaches every
/// visitor; each step is in its history, by the rollout job.
#[tokio::test]
async fn a_healthy_ticket_reaches_every_visitor_by_its_steps() {
    let origin = origin();
    let store = tempfile::tempdir().unwrap();
    let (proxy, _conf) = proxy(
        &origin,
        &store.path().display().to_string(),
        "min_views = 3\n",
    );
    ticket_in_qa(&proxy, "RH-1", "export const greet = () => 'ticket';\n").await;
    release_by_steps(&proxy, "RH-1", &[30, 60, 100], "1s").await;
    let browser = Browser::start().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let done = loop {
        let (out, on_ticket, _) = visit(&browser, &proxy.url("/")).await;
        assert_eq!(out, if on_ticket { "ticket" } else { "production" });
        let t = ticket(&proxy, "RH-1").await;
        if t["stage"] == "prod" && t.get("rollout").is_none() {
            break t;
        }
        assert_eq!(t["stage"], "prod", "{t}");
        assert!(Instant::now() < deadline, "still rolling out: {t}");
    };
    let steps: Vec<&str> = done["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "rollout" && e["actor"] == "rollout")
        .map(|e| e["detail"].as_str().unwrap())
        .collect();
    assert_eq!(steps.len(), 2, "{steps:?}");
    assert!(
        steps[0].starts_with("30% → 60%") && steps[0].contains("healthy"),
        "{steps:?}"
    );
    assert!(steps[1].starts_with("60% → 100%"), "{steps:?}");
    // Every visitor now.
    for _ in 0..3 {
        let (out, on_ticket, _) = visit(&browser, &proxy.url("/")).await;
        assert!(on_ticket);
        assert_eq!(out, "ticket");
    }
    browser.close().await.unwrap();
}

/// Sides are sticky: across reloads, and across two proxies on one Redis
/// (a visitor's id decides, not a proxy's memory); a larger share keeps
/// whoever was in; outside the slice, no page ever names a ticket URL.
#[tokio::test]
async fn visitors_keep_their_side_across_reloads_and_proxies() {
    let redis = RedisServer::start().unwrap();
    let origin = origin();
    // Pages fetched here without a browser are never heard from, on
    // either side: judged for silence only after an hour.
    let (a, _ca) = proxy(&origin, &redis.url, "heard_within = \"1h\"\n");
    let (b, _cb) = proxy(&origin, &redis.url, "heard_within = \"1h\"\n");
    ticket_in_qa(&a, "ST-1", "export const greet = () => 'ticket';\n").await;
    release_by_steps(&a, "ST-1", &[40], "0").await;
    let key = TicketKey::parse("ST-1").unwrap();
    // Without a browser: the side a visitor id gives, on both proxies,
    // for many ids (the page names the ticket's URL exactly in the slice).
    let page = |p: &Proxy, id: String| {
        let url = p.url("/");
        async move {
            let resp = client()
                .get(url)
                .header("cookie", format!("{VISITOR_COOKIE}={id}"))
                .header("sec-fetch-mode", "navigate")
                .header("sec-fetch-dest", "document")
                .send()
                .await
                .unwrap();
            // While a ticket rolls out, no shared cache keeps a page: the
            // same URL is another page on the other side.
            let header = |name: &str| {
                resp.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_ascii_lowercase()
            };
            let vary = header("vary");
            let private = header("cache-control").starts_with("private")
                && (vary.contains("cookie") || vary == "*");
            // While it rolls out, a browser's load of a sampled page is
            // sent with its token.
            let timing = header("server-timing");
            assert_eq!(
                timing.starts_with("ticket-stamp-page;desc=\""),
                private,
                "server-timing: {timing}"
            );
            let text = resp.text().await.unwrap();
            assert!(
                private || !text.contains("__ts="),
                "a ticket page without private headers"
            );
            // A page of the ticket's side is kept by no service worker
            // either (`Vary: *`): after a revert, an app's worker would
            // show it again. Production's side is production's page.
            if private {
                assert_eq!(vary == "*", text.contains("__ts="), "vary: {vary}");
            }
            (text.contains("__ts="), private)
        }
    };
    // Both proxies read the release from Redis.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !page(&b, visitor_id_from(1)).await.1 {
        assert!(Instant::now() < deadline, "proxy b never saw the rollout");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A form another site POSTs (an OAuth `form_post` callback) comes
    // without the visitor's `SameSite=Lax` cookie: no new id replaces
    // theirs. A page opened without one gets one.
    let minted = |method: reqwest::Method| {
        let url = b.url("/");
        async move {
            let resp = client()
                .request(method, url)
                .header("sec-fetch-mode", "navigate")
                .header("sec-fetch-dest", "document")
                .header("sec-fetch-site", "cross-site")
                .send()
                .await
                .unwrap();
            resp.headers()
                .get_all("set-cookie")
                .iter()
                .any(|c| c.to_str().unwrap().starts_with(VISITOR_COOKIE))
        }
    };
    assert!(!minted(reqwest::Method::POST).await);
    assert!(minted(reqwest::Method::GET).await);
    // A page fetched by no browser (no fetch metadata: curl, a crawler, a
    // monitor) or ahead of a click (a prerender) is not counted as sent,
    // and gets no token: it may never run, or never be shown.
    for extra in [
        vec![],
        vec![
            ("sec-fetch-mode", "navigate"),
            ("sec-fetch-dest", "document"),
            ("sec-purpose", "prefetch;prerender"),
        ],
        vec![("sec-fetch-mode", "navigate"), ("sec-fetch-dest", "iframe")],
    ] {
        let mut req = client()
            .get(a.url("/"))
            .header("cookie", format!("{VISITOR_COOKIE}={}", visitor_id_from(5)));
        for (k, v) in &extra {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        assert!(
            !resp
                .headers()
                .get_all("server-timing")
                .iter()
                .any(|v| v.to_str().unwrap().contains("ticket-stamp-page")),
            "{extra:?}"
        );
    }
    let ids: Vec<String> = (0..60u128).map(|i| visitor_id_from(i * 7919 + 3)).collect();
    let mut in_slice_40 = Vec::new();
    for id in &ids {
        let want = in_slice(&key, id, 40);
        assert_eq!(page(&a, id.clone()).await, (want, true), "{id} on a");
        assert_eq!(page(&b, id.clone()).await, (want, true), "{id} on b");
        if want {
            in_slice_40.push(id.clone());
        }
    }
    assert!(!in_slice_40.is_empty() && in_slice_40.len() < ids.len());
    // A larger share keeps everyone who was in.
    let (s, body) = api(&b, "POST", "tickets/ST-1/rollout", json!({"to": 70})).await;
    assert_eq!(s, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut all = true;
        for id in &ids {
            let (on, _) = page(&a, id.clone()).await;
            assert!(on || !in_slice_40.contains(id), "{id} left the slice");
            all &= on == in_slice(&key, id, 70);
        }
        if all {
            break;
        }
        assert!(Instant::now() < deadline, "proxy a never saw 70%");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // In Chromium: the proxy mints the id on the first page, the side holds
    // across reloads and across the two proxies (one cookie per host).
    let browser = Browser::start().await.unwrap();
    let mut sides = std::collections::BTreeSet::new();
    for _ in 0..8 {
        let (_, first, _) = visit(&browser, &a.url("/")).await;
        let id = browser.cookie(VISITOR_COOKIE).await.unwrap().unwrap();
        assert_eq!(first, in_slice(&key, &id, 70));
        for p in [&a, &b, &a] {
            browser.goto(&p.url("/")).await.unwrap();
            let on = browser
                .execute("return performance.getEntriesByType('resource').some(e => e.name.includes('__ts='))")
                .await
                .unwrap();
            assert_eq!(on, first, "the side changed for {id}");
            assert_eq!(browser.cookie(VISITOR_COOKIE).await.unwrap().unwrap(), id);
        }
        sides.insert(first);
    }
    browser.close().await.unwrap();
    // Aborting: every visitor on production at once.
    let (s, body) = api(&a, "POST", "tickets/ST-1/revert", json!({"from": "prod"})).await;
    assert_eq!(s, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(10);
    for id in &in_slice_40 {
        while page(&b, id.clone()).await.0 {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The Prometheus gate, against a real Prometheus scraping the proxy: a
/// query the team writes (here: any erring view on the ticket's side) that
/// goes over its `max` reverts the ticket, with the value in the history.
#[tokio::test]
async fn a_prometheus_query_over_its_max_reverts_the_ticket() {
    let origin = origin();
    let store = tempfile::tempdir().unwrap();
    let prom_port = stamp_tests::free_port().unwrap();
    let prom_url = format!("http://127.0.0.1:{prom_port}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy.toml");
    std::fs::write(
        &file,
        format!(
            "origin = \"{}\"\nstore = \"{}\"\n\
             [reports]\nsample = 1.0\nper_second = 10000\nper_client_per_minute = 100000\n\
             [rollout]\ncheck_every = \"200ms\"\nmin_views = 100000\n\
             [rollout.prometheus]\nurl = \"{}\"\n\
             query = 'sum(stamp_rollout_erring_views_total{{ticket=\"$ticket\",side=\"ticket\"}}) or vector(0)'\n\
             max = 0\n",
            origin.url,
            store.path().display(),
            prom_url
        ),
    )
    .unwrap();
    let proxy = Proxy::start_with(None, &["--config", &file.to_string_lossy()], &[]).unwrap();
    let prom = stamp_tests::prometheus::Prometheus::start(
        prom_port,
        &[format!("127.0.0.1:{}", proxy.port)],
        "/__stamp/metrics",
    )
    .unwrap();
    ticket_in_qa(&proxy, "PG-1", "export const greet = () => 'ticket';\n").await;
    release_by_steps(&proxy, "PG-1", &[20, 100], "1h").await;
    let report = |errors: u32| {
        json!({"v": 1, "ticket": "PG-1", "view": "prod", "side": "ticket", "page": "/",
               "error_count": errors, "errors": if errors > 0 {
                   json!([{"kind": "error", "message": "TypeError: boom", "source": "/src/greet.js", "line": 1, "stack": ""}])
               } else { json!([]) }})
    };
    // Clean views: the gate's value stays at 0, nothing happens.
    for _ in 0..3 {
        let r = client()
            .post(proxy.url("/__stamp/report"))
            .body(report(0).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(ticket(&proxy, "PG-1").await["stage"], "prod");
    // One erring view on the ticket's side: Prometheus scrapes it, the
    // query goes over 0, the job reverts.
    let r = client()
        .post(proxy.url("/__stamp/report"))
        .body(report(1).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let deadline = Instant::now() + Duration::from_secs(30);
    let t = loop {
        let t = ticket(&proxy, "PG-1").await;
        if t["stage"] == "qa" {
            break t;
        }
        if Instant::now() > deadline {
            let q = client()
                .get(format!("{}/api/v1/query", prom.url))
                .query(&[("query", "up")])
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let log = std::fs::read_to_string(&proxy.log).unwrap_or_default();
            let m = client()
                .get(proxy.url("/__stamp/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let m: Vec<&str> = m.lines().filter(|l| l.contains("rollout")).collect();
            let targets = client()
                .get(format!("{}/api/v1/targets", prom.url))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            panic!("not reverted\nprometheus: {q}\n{targets}\nmetrics: {m:?}\nproxy log: {log}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let detail = reverted_by_the_job(&t);
    assert!(detail.contains("prometheus over, at 1"), "{detail}");
    // The series of a ticket no longer rolling out are gone.
    let metrics = client()
        .get(proxy.url("/__stamp/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!metrics.contains("ticket=\"PG-1\""), "{metrics}");
}

/// `stamp` releases by steps: `--promote --rollout`, `--rollout N`,
/// `--pause`, `--resume`, and `--revert` aborts; malformed and untimely
/// asks get a clear error and change nothing.
#[tokio::test]
async fn the_cli_releases_by_steps_pauses_resumes_and_aborts() {
    let origin = origin();
    let store = tempfile::tempdir().unwrap();
    let (proxy, _conf) = proxy(&origin, &store.path().display().to_string(), "");
    let work = crate::apps::project(
        "/src",
        "src",
        &[("greet.js", "export const greet = () => 'ticket';\n")],
    );
    let home = tempfile::tempdir().unwrap();
    let stamp = |args: &[&str]| -> (i32, String, String) {
        let out = std::process::Command::new(stamp_tests::proxy::binary("stamp").unwrap())
            .arg("--server")
            .arg(&proxy.url)
            .args(args)
            .current_dir(work.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .env("XDG_CONFIG_HOME", home.path().join(".config"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let ok = |args: &[&str]| {
        let (code, out, err) = stamp(args);
        assert_eq!(code, 0, "stamp {args:?}: {out}{err}");
        out
    };
    ok(&["RC-1", "--update", "--once"]);
    ok(&["RC-1", "--promote"]);
    // Usage errors: exit 2, nothing moved.
    for bad in [
        &["RC-1", "--promote", "--rollout", "0"][..],
        &["RC-1", "--promote", "--rollout", "50,10"],
        &["RC-1", "--promote", "--rollout", "5", "--every", "soon"],
        &["RC-1", "--rollout"],
        &["RC-1", "--close", "--rollout", "5"],
    ] {
        let (code, out, err) = stamp(bad);
        assert_eq!(code, 2, "stamp {bad:?}: {out}{err}");
    }
    // Not rolling out yet: refused, with the reason.
    let (code, _, err) = stamp(&["RC-1", "--pause"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not rolling out"), "{err}");
    assert_eq!(ticket(&proxy, "RC-1").await["stage"], "qa");
    let out = ok(&[
        "RC-1",
        "--promote",
        "--rollout",
        "10,50,100",
        "--every",
        "0",
    ]);
    assert!(
        out.contains("qa -> prod") && out.contains("10% of production"),
        "{out}"
    );
    let out = ok(&["RC-1", "--rollout", "next"]);
    assert!(out.contains("50% of production"), "{out}");
    let out = ok(&["RC-1", "--pause"]);
    assert!(out.contains("paused"), "{out}");
    let (code, _, err) = stamp(&["RC-1", "--pause"]);
    assert_eq!(code, 1, "{err}");
    ok(&["RC-1", "--resume"]);
    let out = ok(&["RC-1"]);
    assert!(out.contains("rolling out: 50% of visitors"), "{out}");
    let json: Value = serde_json::from_str(&ok(&["RC-1", "--rollout", "70", "--json"])).unwrap();
    assert_eq!(json["rollout"]["percent"], 70, "{json}");
    let out = ok(&["RC-1", "--revert"]);
    assert!(out.contains("prod -> qa"), "{out}");
    let t = ticket(&proxy, "RC-1").await;
    assert!(t.get("rollout").is_none(), "{t}");
    let events: Vec<String> = t["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "rollout")
        .map(|e| e["detail"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        events,
        ["10% → 50%", "paused at 50%", "resumed at 50%", "50% → 70%"],
        "{t}"
    );
}

/// The panel releases by steps (the typed confirmation, with the shares and
/// the time between them), shows the rollout live with both sides'
/// numbers, and pauses, resumes, steps and aborts it.
#[tokio::test]
async fn the_panel_releases_by_steps_and_steers_the_rollout() {
    let origin = origin();
    let store = tempfile::tempdir().unwrap();
    let (proxy, _conf) = proxy(
        &origin,
        &store.path().display().to_string(),
        "min_views = 2\n",
    );
    ticket_in_qa(&proxy, "PN-1", "export const greet = () => 'ticket';\n").await;
    let browser = Browser::start().await.unwrap();
    browser
        .goto(&proxy.url("/__stamp/#/tickets/PN-1"))
        .await
        .unwrap();
    browser
        .wait_for_text(
            "#do-promote",
            "Release to production",
            Duration::from_secs(15),
        )
        .await
        .unwrap();
    browser.click("#do-promote").await.unwrap();
    let fill = |id: &'static str, text: &'static str| {
        browser.execute_with(
            "const e = document.getElementById(arguments[0]); e.value = arguments[1]; \
             e.dispatchEvent(new Event('input')); return true;",
            vec![json!(id), json!(text)],
        )
    };
    fill("confirm-steps", "20,60,100").await.unwrap();
    fill("confirm-every", "0").await.unwrap();
    fill("confirm-key", "PN-1").await.unwrap();
    browser.click("#confirm-go").await.unwrap();
    browser
        .wait_for_text(
            "#rollout-share",
            "20% of production's visitors",
            Duration::from_secs(15),
        )
        .await
        .unwrap();
    // Views of both sides come in; the panel shows them without a reload.
    for side in ["ticket", "production", "ticket", "production"] {
        let r = client()
            .post(proxy.url("/__stamp/report"))
            .body(
                json!({"v": 1, "ticket": "PN-1", "view": "prod", "side": side, "page": "/"})
                    .to_string(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    browser
        .wait_for_text("#rollout-verdict", "healthy", Duration::from_secs(20))
        .await
        .unwrap();
    let sides = browser.text("#rollout-sides").await.unwrap();
    assert!(
        sides.contains("ticket") && sides.contains("production"),
        "{sides}"
    );
    browser.click("#rollout-pause").await.unwrap();
    browser
        .wait_for_text("#rollout-share", "paused", Duration::from_secs(15))
        .await
        .unwrap();
    browser.click("#rollout-resume").await.unwrap();
    browser
        .wait_for_text("#rollout-next", "Next step: 60%", Duration::from_secs(15))
        .await
        .unwrap();
    browser.click("#rollout-next").await.unwrap();
    browser
        .wait_for_text(
            "#rollout-share",
            "60% of production's visitors",
            Duration::from_secs(15),
        )
        .await
        .unwrap();
    browser
        .screenshot(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/test-artifacts/panel-rollout.png"),
        )
        .await
        .unwrap();
    browser.click("#rollout-abort").await.unwrap();
    fill("confirm-key", "PN-1").await.unwrap();
    browser.click("#confirm-go").await.unwrap();
    browser
        .wait_for_text("#ticket-stage", "qa", Duration::from_secs(15))
        .await
        .unwrap();
    let t = ticket(&proxy, "PN-1").await;
    let details: Vec<&str> = t["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "rollout")
        .map(|e| e["detail"].as_str().unwrap())
        .collect();
    assert_eq!(
        details,
        ["paused at 20%", "resumed at 20%", "20% → 60%"],
        "{t}"
    );
    browser.close().await.unwrap();
}

/// Acting from Slack, against a local Slack that speaks the Web API and
/// signs interactivity requests as Slack does: the messages of a release
/// candidate and of a rollout carry buttons; a click goes through the
/// person's role (found by their confirmed email) and the policies; a
/// forged, replayed, stale or unentitled click does nothing and says why.
#[tokio::test]
async fn slack_buttons_release_step_and_revert_with_the_same_roles() {
    use stamp_tests::fakes::FakeSlack;
    let secret = "8f742231b10e8888abcd99yyyzzz85a5";
    let slack = FakeSlack::start("xoxb-test", &["#releases"]).unwrap();
    slack.add_user("U0OPS", "ops@shop.test", true);
    slack.add_user("U0QA", "ann@shop.test", true);
    slack.add_user("U0EVE", "eve@shop.test", false);
    slack.add_user("U0DEV", "dev@other.test", true);
    let origin = origin();
    let store = tempfile::tempdir().unwrap();
    let (proxy, _conf) = slack_proxy(&origin, store.path(), &slack, secret, "");
    ticket_in_qa(&proxy, "SL-1", "export const greet = () => 'ticket';\n").await;
    let buttons = |want: usize| slack_buttons(&slack, want);
    let button = slack_button;
    let now = || stamp_model::now_ms() / 1000;
    let mut n = 0;
    let mut click = |user: &'static str, b: Value, ts: u64, sign_with: &'static str| {
        n += 1;
        slack_action(&proxy, &slack, n, user, b, ts, sign_with)
    };
    // Promoted to qa (message 2, after the upload's... none: dev events are
    // not in the default set): a release candidate with its button.
    let candidate = buttons(1).await;
    let release = button(&candidate, "release");
    // Forged and replayed clicks: refused before anything is read.
    let (s, _) = click("U0OPS", release.clone(), now(), "not-the-secret").await;
    assert_eq!(s, 401);
    let (s, b) = click("U0OPS", release.clone(), now() - 600, secret).await;
    assert_eq!(s, 401, "{b}");
    // Signed, but the person may not, or is not who Slack confirmed.
    let (s, b) = click("U0DEV", release.clone(), now(), secret).await;
    assert_eq!(s, 200);
    assert!(
        b["text"].as_str().unwrap().starts_with("Nothing done"),
        "{b}"
    );
    let (_, b) = click("U0EVE", release.clone(), now(), secret).await;
    assert!(b["text"].as_str().unwrap().contains("not confirmed"), "{b}");
    let (_, b) = click("U0NOBODY", release.clone(), now(), secret).await;
    assert!(
        b["text"].as_str().unwrap().contains("user_not_found"),
        "{b}"
    );
    assert_eq!(ticket(&proxy, "SL-1").await["stage"], "qa");
    // QA releases: by the configured steps.
    let (_, b) = click("U0QA", release.clone(), now(), secret).await;
    assert!(
        b["text"]
            .as_str()
            .unwrap()
            .contains("released to 10% of production by ann@shop.test"),
        "{b}"
    );
    let t = ticket(&proxy, "SL-1").await;
    assert_eq!(t["rollout"]["percent"], 10, "{t}");
    // The same button again: the ticket moved on since that message.
    let (_, b) = click("U0QA", release, now(), secret).await;
    assert!(
        b["text"]
            .as_str()
            .unwrap()
            .contains("changed since this message"),
        "{b}"
    );
    // The release's message: next step, pause, revert.
    let rolling = buttons(2).await;
    let (_, b) = click("U0QA", button(&rolling, "next"), now(), secret).await;
    assert!(b["text"].as_str().unwrap().contains("10% → 50%"), "{b}");
    let stepped = buttons(3).await;
    // Only an admin reverts production.
    let (_, b) = click("U0QA", button(&stepped, "revert"), now(), secret).await;
    assert!(
        b["text"].as_str().unwrap().starts_with("Nothing done"),
        "{b}"
    );
    let (_, b) = click("U0OPS", button(&stepped, "revert"), now(), secret).await;
    assert!(
        b["text"]
            .as_str()
            .unwrap()
            .contains("reverted to qa by ops@shop.test"),
        "{b}"
    );
    let t = ticket(&proxy, "SL-1").await;
    assert_eq!(t["stage"], "qa");
    let moves: Vec<(&str, &str)> = t["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] != "settler")
        .map(|e| (e["event"].as_str().unwrap(), e["actor"].as_str().unwrap()))
        .collect();
    assert!(
        moves.ends_with(&[
            ("promote", "ann@shop.test"),
            ("rollout", "ann@shop.test"),
            ("revert", "ops@shop.test")
        ]),
        "{moves:?}"
    );
    // Every answer also went to the click's response_url, ephemeral.
    let replies = slack.replies();
    assert!(replies.len() >= 7, "{replies:?}");
    assert!(replies.iter().all(|r| r["response_type"] == "ephemeral"));
}

/// A proxy that steps rollouts only when told, posts to the local Slack's
/// `#releases` and takes its button clicks, signed with `secret`, from
/// people by their email (`ops@shop.test` admin, `shop.test` qa,
/// `other.test` dev); `extra` is more of its configuration.
fn slack_proxy(
    origin: &Origin,
    store: &std::path::Path,
    slack: &stamp_tests::fakes::FakeSlack,
    secret: &str,
    extra: &str,
) -> (Proxy, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy.toml");
    std::fs::write(
        &file,
        format!(
            "origin = \"{}\"\nstore = \"{}\"\n\
             [rollout]\nsteps = \"10,50,100\"\nevery = \"1h\"\ncheck_every = \"1h\"\n\
             [slack]\nsigning_secret_env = \"SLACK_SIGNING_SECRET\"\ntoken_env = \"SLACK_BOT_TOKEN\"\n\
             api_url = \"{}\"\nresponse_url_prefix = \"{}/actions/\"\n\
             roles = {{ admin = [\"email:ops@shop.test\"], qa = [\"domain:shop.test\"], dev = [\"domain:other.test\"] }}\n\
             [[hooks]]\nkind = \"slack\"\ntoken_env = \"SLACK_BOT_TOKEN\"\nchannel = \"#releases\"\napi_url = \"{}\"\n{extra}",
            origin.url,
            store.display(),
            slack.api_url(),
            slack.fake.url,
            slack.api_url()
        ),
    )
    .unwrap();
    let proxy = Proxy::start_with(
        None,
        &["--config", &file.to_string_lossy()],
        &[
            ("SLACK_SIGNING_SECRET", secret),
            ("SLACK_BOT_TOKEN", "xoxb-test"),
        ],
    )
    .unwrap();
    (proxy, dir)
}

/// A click acts on the ticket as the message showed it (its stage and
/// rollout step), not on the version the click first read: a write
/// meanwhile that leaves both as they were (here, share links revoked while
/// the move's policy runs; in life, the settler's bookkeeping of a fresh
/// release) does not turn a step or a revert into "changed by someone
/// else". The policies are judged again on the version the move is made on.
#[tokio::test]
async fn a_slack_step_is_made_on_a_ticket_written_meanwhile() {
    use stamp_tests::fakes::FakeSlack;
    let secret = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";
    let slack = FakeSlack::start("xoxb-test", &["#releases"]).unwrap();
    slack.add_user("U0OPS", "ops@shop.test", true);
    let origin = origin();
    let store = tempfile::tempdir().unwrap();
    let policy = SlowPolicy::new();
    let (proxy, _conf) = slack_proxy(&origin, store.path(), &slack, secret, &policy.toml());
    ticket_in_qa(&proxy, "SW-1", "export const greet = () => 'ticket';\n").await;
    let now = || stamp_model::now_ms() / 1000;
    let release = slack_button(&slack_buttons(&slack, 1).await, "release");
    let (_, b) = slack_action(&proxy, &slack, 1, "U0OPS", release, now(), secret).await;
    assert!(
        b["text"].as_str().unwrap().contains("released to 10%"),
        "{b}"
    );
    // Each click, with the ticket written while its policy runs: the
    // policy runs again (on the new version), and the click does its work.
    let written_meanwhile = |n: u32, b: Value| {
        let before = policy.runs();
        let click = tokio::spawn(slack_action(&proxy, &slack, n, "U0OPS", b, now(), secret));
        let proxy = &proxy;
        let policy = &policy;
        async move {
            policy.write_during_run(proxy, "SW-1", before).await;
            let (s, b) = click.await.unwrap();
            assert_eq!(s, 200);
            assert_eq!(policy.runs(), before + 2, "judged again on the new version");
            b["text"].as_str().unwrap().to_string()
        }
    };
    let next = slack_button(&slack_buttons(&slack, 2).await, "next");
    let said = written_meanwhile(2, next).await;
    assert!(said.contains("10% → 50%"), "{said}");
    let t = ticket(&proxy, "SW-1").await;
    assert_eq!(t["rollout"]["percent"], 50, "{t}");
    let revert = slack_button(&slack_buttons(&slack, 3).await, "revert");
    let said = written_meanwhile(3, revert).await;
    assert!(said.contains("reverted to qa by ops@shop.test"), "{said}");
    assert_eq!(ticket(&proxy, "SW-1").await["stage"], "qa");
}

/// A move stated from a stage (the CLI's, the panel's release and revert)
/// is judged again on a ticket written while its policy ran, and made: the
/// writer here revokes share links; in life it is the settler's bookkeeping,
/// a sign-off or a hook. A move stated from a version is made on that
/// version or not at all.
#[tokio::test]
async fn a_move_from_a_stage_is_judged_again_on_a_ticket_written_meanwhile() {
    let origin = origin();
    let store = tempfile::tempdir().unwrap();
    let policy = SlowPolicy::new();
    let (proxy, _conf) = proxy(&origin, &store.path().to_string_lossy(), &policy.toml());
    ticket_in_qa(&proxy, "MV-1", "export const greet = () => 'ticket';\n").await;
    // The move, with the ticket written once its policy runs; what it
    // answered, and how many times the policy ran for it.
    let written_meanwhile = |path: &'static str, body: Value| {
        let before = policy.runs();
        let url = proxy.url(&format!("/__stamp/api/v1/tickets/MV-1/{path}"));
        let mv = tokio::spawn(async move {
            let resp = client().post(url).json(&body).send().await.unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        });
        let proxy = &proxy;
        let policy = &policy;
        async move {
            policy.write_during_run(proxy, "MV-1", before).await;
            let (s, b) = mv.await.unwrap();
            (s, b, policy.runs() - before)
        }
    };
    let (s, b, ran) = written_meanwhile("promote", json!({"from": "qa"})).await;
    assert_eq!((s, ran), (200, 2), "released, judged again: {b}");
    assert_eq!(b["stage"], "prod");
    let (s, b, ran) = written_meanwhile("revert", json!({"from": "prod"})).await;
    assert_eq!((s, ran), (200, 2), "reverted, judged again: {b}");
    assert_eq!(b["stage"], "qa");
    // The version the caller read is gone: nothing is done.
    let version = ticket(&proxy, "MV-1").await["version"].clone();
    let (s, b, ran) = written_meanwhile("promote", json!({"expected_version": version})).await;
    assert_eq!((s, ran), (409, 1), "{b}");
    assert_eq!(ticket(&proxy, "MV-1").await["stage"], "qa");
}

/// A command policy on releases and reverts that notes each run, then
/// takes its time: the window in which a test writes the ticket.
struct SlowPolicy {
    dir: tempfile::TempDir,
}

impl SlowPolicy {
    fn new() -> SlowPolicy {
        SlowPolicy {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The policy, for the proxy's configuration.
    fn toml(&self) -> String {
        format!(
            "[[policies]]\nkind = \"command\"\non = [\"qa->prod\", \"prod->qa\"]\nprogram = \"sh\"\n\
             args = [\"-c\", \"echo run >> '{}'; sleep 2\"]\ntimeout = \"20s\"\n",
            self.dir.path().join("runs").display()
        )
    }

    /// How many times it has run.
    fn runs(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("runs"))
            .unwrap_or_default()
            .lines()
            .count()
    }

    /// Once it runs again (after `before` runs), writes `key` without
    /// moving it: revokes its share links, which changes its version.
    async fn write_during_run(&self, proxy: &Proxy, key: &str, before: usize) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.runs() == before {
            assert!(Instant::now() < deadline, "the move's policy never ran");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let version = ticket(proxy, key).await["version"].clone();
        let (s, b) = api(
            proxy,
            "POST",
            &format!("tickets/{key}/revoke-links"),
            Value::Null,
        )
        .await;
        assert_eq!(s, 200, "{b}");
        assert_ne!(ticket(proxy, key).await["version"], version);
    }
}

/// The buttons of the `want`th message the local Slack got, waiting for it.
async fn slack_buttons(slack: &stamp_tests::fakes::FakeSlack, want: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let messages = slack.messages();
        if messages.len() >= want {
            return messages[want - 1]["blocks"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|b| b["type"] == "actions")
                .flat_map(|b| b["elements"].as_array().unwrap().clone())
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "{} messages: {messages:?}",
            messages.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The button for `id` (`stamp-{id}`) among `bs`.
fn slack_button(bs: &[Value], id: &str) -> Value {
    bs.iter()
        .find(|b| b["action_id"] == format!("stamp-{id}"))
        .unwrap_or_else(|| panic!("no {id} button in {bs:?}"))
        .clone()
}

/// `user`'s click on `b`, signed as Slack signs it at `ts` with
/// `sign_with`, its answer going to the `n`th response URL: the status and
/// the answer.
fn slack_action(
    proxy: &Proxy,
    slack: &stamp_tests::fakes::FakeSlack,
    n: u32,
    user: &str,
    b: Value,
    ts: u64,
    sign_with: &str,
) -> impl std::future::Future<Output = (u16, Value)> + 'static {
    let reply_to = slack.response_url(n);
    let (body, headers) = stamp_tests::fakes::slack_click(sign_with, ts, user, &b, &reply_to);
    let url = proxy.url("/__stamp/slack/actions");
    async move {
        let mut req = client().post(url).body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json::<Value>().await.unwrap_or(Value::Null))
    }
}

/// Malformed and untimely rollout requests get a clear error and change
/// nothing; a fleet never rolls out more tickets at once than allowed.
#[tokio::test]
async fn bad_rollout_requests_are_refused_and_change_nothing() {
    let origin = origin();
    let store = tempfile::tempdir().unwrap();
    let (proxy, _conf) = proxy(
        &origin,
        &store.path().display().to_string(),
        "max_concurrent = 1\n",
    );
    ticket_in_qa(&proxy, "BR-1", "export const greet = () => 'one';\n").await;
    ticket_in_qa(&proxy, "BR-2", "export const greet = () => 'two';\n").await;
    // A step of a ticket that is not rolling out.
    let (s, b) = api(&proxy, "POST", "tickets/BR-1/rollout", json!({"to": 50})).await;
    assert_eq!(s, 409, "{b}");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not rolling out"),
        "{b}"
    );
    for (body, field) in [
        (
            json!({"from": "qa", "rollout": {"steps": [50, 10]}}),
            "rollout.steps",
        ),
        (
            json!({"from": "qa", "rollout": {"steps": [0]}}),
            "rollout.steps",
        ),
        (
            json!({"from": "qa", "rollout": {"steps": [5], "every": "soon"}}),
            "rollout.every",
        ),
        (
            json!({"from": "qa", "rollout": {"steps": [5], "extra": 1}}),
            "",
        ),
    ] {
        let (s, b) = api(&proxy, "POST", "tickets/BR-1/promote", body.clone()).await;
        assert_eq!(s, 400, "{body}: {b}");
        assert!(
            b["error"]["field"]
                .as_str()
                .unwrap_or_default()
                .contains(field)
                && !b["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .is_empty(),
            "{body}: {b}"
        );
    }
    assert_eq!(ticket(&proxy, "BR-1").await["stage"], "qa");
    release_by_steps(&proxy, "BR-1", &[10, 100], "0").await;
    // A second rollout at once: over max_concurrent.
    let (s, b) = api(
        &proxy,
        "POST",
        "tickets/BR-2/promote",
        json!({"from": "qa", "rollout": {"steps": [10]}}),
    )
    .await;
    assert_eq!(s, 409, "{b}");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_concurrent"),
        "{b}"
    );
    assert_eq!(ticket(&proxy, "BR-2").await["stage"], "qa");
    for body in [
        json!({}),
        json!({"to": 0}),
        json!({"to": 101}),
        json!({"to": 10}),
        json!({"action": "jump"}),
        json!({"to": 50, "action": "next"}),
        json!({"to": 50, "comment": "x\u{7}y"}),
        json!({"to": "fifty"}),
    ] {
        let (s, b) = api(&proxy, "POST", "tickets/BR-1/rollout", body.clone()).await;
        assert!(s == 400 || s == 409, "{body}: {s} {b}");
        assert!(
            b["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{b}"
        );
    }
    let (s, b) = api(
        &proxy,
        "POST",
        "tickets/BR-1/rollout",
        json!({"to": 50, "expected_version": 1}),
    )
    .await;
    assert_eq!(s, 409, "a stale version: {b}");
    let t = ticket(&proxy, "BR-1").await;
    assert_eq!(t["rollout"]["percent"], 10, "nothing changed: {t}");
}
