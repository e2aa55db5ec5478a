//! Setups nobody on this project wrote, built with the real libraries from
//! npm and checked in Chromium for what the browser actually ran: the probe
//! on the page measures it, the badge shows it, and the report reaches the
//! proxy. Each scenario checks production byte for byte, the ticket through
//! `?dev=`, and that the badge never claims code that did not run.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use stamp_tests::browser::Browser;
use stamp_tests::run_ok as run;
use stamp_tests::{client, Origin, Route};

use crate::apps::{
    commit, node_modules, npm_file, on_a_branch, project, rollup_build, write, App, Scenario, CORS,
};

/// What the badge says, once the probe drew it.
pub(crate) async fn badge(browser: &Browser) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = browser
            .execute(
                "const b = document.querySelector('ticket-stamp-badge'); \
                 return b && b.shadowRoot ? b.shadowRoot.querySelector('aside').textContent : null;",
            )
            .await
            .unwrap_or(Value::Null);
        if let Some(t) = v.as_str() {
            return t.to_string();
        }
        assert!(Instant::now() < deadline, "no badge on the page");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The badge's class: `warn` in its warning colour, `idle` in grey.
async fn badge_class(browser: &Browser) -> Value {
    browser
        .execute("return document.querySelector('ticket-stamp-badge').shadowRoot.querySelector('aside').className")
        .await
        .unwrap()
}

/// Waits until the badge says `want` (the probe updates it as loads come in).
pub(crate) async fn badge_says(browser: &Browser, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = badge(browser).await;
        if text.contains(want) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "the badge says {text:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What this ticket browser gets for `path` as a `dest` request: the
/// ticket's file, for it alone (never stored, told apart); its text.
async fn the_browsers_own(app: &App, browser: &Browser, path: &str, dest: &str) -> String {
    let cookie = browser.cookie("ticket_stamp").await.unwrap().unwrap();
    let r = client()
        .get(app.proxy.url(path))
        .header("cookie", format!("ticket_stamp={cookie}"))
        .header("sec-fetch-dest", dest)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["cache-control"], "private, no-store", "{path}");
    assert_eq!(r.headers()["vary"], "*", "{path}");
    String::from_utf8_lossy(&r.bytes().await.unwrap()).into_owned()
}

/// The last views the proxy has of `key`, once at least `n` arrived.
pub(crate) async fn views(app: &App, key: &str, n: usize) -> Vec<Value> {
    stamp_tests::ticket_views(&app.proxy, key, n).await
}

fn serve_npm(origin: &Origin, path: &str, rel: &str) {
    let mut r = Route::bytes("text/javascript", npm_file(rel));
    for (k, v) in CORS {
        r = r.header(k, v);
    }
    origin.route(path, r);
}

fn serve(origin: &Origin, path: &str, ty: &str, body: &str) {
    let mut r = Route::bytes(ty, body.as_bytes().to_vec());
    for (k, v) in CORS {
        r = r.header(k, v);
    }
    origin.route(path, r);
}

/// A microfrontend built by Rollup in SystemJS's `system` format, as
/// create-single-spa's webpack config would for `libraryTarget: system`.
fn rollup_system(dir: &Path, entry: &str, source: &str, external: &[&str]) -> String {
    write(dir, entry, source);
    write(
        dir,
        "rollup.config.mjs",
        &format!(
            "export default {{ input: '{entry}', external: {external:?}, \
             output: {{ file: process.env.OUT + '/{entry}', format: 'system' }} }};\n"
        ),
    );
    rollup_build(dir, "out");
    std::fs::read_to_string(dir.join("out").join(entry)).unwrap()
}

const NAVBAR: &str = "export function bootstrap() { return Promise.resolve(); }\n\
export function mount() { document.getElementById('navbar').textContent = 'WORD'; return Promise.resolve(); }\n\
export function unmount() { return Promise.resolve(); }\n";

/// The single-spa root config as create-single-spa generates it: the
/// `importmap-type` meta, an inline `systemjs-importmap` for shared
/// dependencies (single-spa from the CDN), then an external one for the
/// organisation's microfrontends (on the CDN), import-map-overrides and
/// SystemJS 6 before them, and microfrontends built by Rollup in `system`
/// format. The ticket changes `@org/navbar` on the CDN: SystemJS composes
/// the second map through the first, which carries the proxy's catch-all
/// for the CDN's mirror paths, and the ticket's URL must survive it.
#[tokio::test]
async fn single_spa_root_config_with_two_composed_maps() {
    let cdn = Origin::start().unwrap();
    let origin = Origin::start().unwrap();
    let build = tempfile::tempdir().unwrap();
    let root_config = rollup_system(
        &build.path().join("root"),
        "root-config.js",
        "import { registerApplication, start } from 'single-spa';\n\
         registerApplication({ name: '@org/navbar', app: () => System.import('@org/navbar'), activeWhen: () => true });\n\
         start();\n",
        &["single-spa"],
    );
    let navbar = rollup_system(
        &build.path().join("navbar"),
        "navbar.js",
        &NAVBAR.replace("WORD", "navbar from production"),
        &[],
    );
    assert!(navbar.starts_with("System.register("), "{navbar}");
    serve_npm(
        &cdn,
        "/single-spa.min.js",
        "single-spa/lib/es2015/system/single-spa.min.js",
    );
    serve(&cdn, "/org/root-config.js", "text/javascript", &root_config);
    serve(&cdn, "/org/navbar.js", "text/javascript", &navbar);
    serve(
        &cdn,
        "/importmap.json",
        "application/json",
        &format!(
            r#"{{"imports":{{"@org/root-config":"{cdn}/org/root-config.js","@org/navbar":"{cdn}/org/navbar.js"}}}}"#,
            cdn = cdn.url
        ),
    );
    for (path, rel) in [
        (
            "/lib/import-map-overrides.js",
            "import-map-overrides/dist/import-map-overrides.js",
        ),
        ("/lib/system.min.js", "systemjs/dist/system.min.js"),
        ("/lib/amd.min.js", "systemjs/dist/extras/amd.min.js"),
    ] {
        serve_npm(&origin, path, rel);
    }
    origin.route(
        "/",
        Route::html(&format!(
            "<!DOCTYPE html><html><head><meta charset=\"utf-8\">\
             <title>Root Config</title>\
             <meta name=\"importmap-type\" content=\"systemjs-importmap\" />\
             <script type=\"systemjs-importmap\">{{\"imports\":{{\"single-spa\":\"{cdn}/single-spa.min.js\"}}}}</script>\
             <script type=\"systemjs-importmap\" src=\"{cdn}/importmap.json\"></script>\
             <script src=\"/lib/import-map-overrides.js\"></script>\
             <script src=\"/lib/system.min.js\"></script>\
             <script src=\"/lib/amd.min.js\"></script>\
             </head><body><nav id=\"navbar\">loading</nav>\
             <script>System.import('@org/root-config');</script>\
             <import-map-overrides-full show-when-local-storage=\"devtools\" dev-libs></import-map-overrides-full>\
             </body></html>",
            cdn = cdn.url
        )),
    );
    let app = App::start(origin, cdn);
    let ticket_src = tempfile::tempdir().unwrap();
    let ticket_navbar = rollup_system(
        ticket_src.path(),
        "navbar.js",
        &NAVBAR.replace("WORD", "navbar from the ticket"),
        &[],
    );
    let work = project(
        &format!("{}/org", app.cdn.url),
        "dist",
        &[("navbar.js", &ticket_navbar)],
    );
    let browser = Browser::start().await.unwrap();
    app.scenario(
        &browser,
        Scenario {
            key: "SPA-1",
            untouched: &["/"],
            check: "return document.getElementById('navbar')?.textContent ?? ''",
            production: "navbar from production",
            ticket: "navbar from the ticket",
        },
        || {
            app.stamp(work.path(), &["SPA-1", "--update", "--once"]);
        },
        work.path(),
    )
    .await;
    // Measured in the browser: the ticket's module ran, nothing of
    // production's navbar did.
    app.expect(
        &browser,
        "/?dev=SPA-1",
        "return document.getElementById('navbar')?.textContent ?? ''",
        "navbar from the ticket",
    )
    .await;
    let text = crate::setups::badge_says(&browser, "1 of 1 module ran").await;
    assert!(text.contains("SPA-1"), "{text}");
    let v = views(&app, "SPA-1", 1).await;
    assert!(
        v.iter()
            .any(|v| v["ran"] == 1 && v["production"].as_array().unwrap().is_empty()),
        "{v:?}"
    );
    browser.close().await.unwrap();
}

const WIDGET: &str = "import { h, render } from 'preact';\n\
import htm from 'htm';\n\
const html = htm.bind(h);\n\
render(html`<p id=\"out\">WORD</p>`, document.getElementById('root'));\n";

/// A map written by @jspm/generator (the real one, against a CDN that
/// serves npm packages in jspm.io's layout): dependencies in a scope for
/// the CDN's origin, and integrity for every file. The ticket changes the
/// app's own module on that CDN, which imports `htm` bare: production
/// resolves it through the scope; the ticket's copy, served from its mirror
/// path, only through the scope the proxy copied there.
#[tokio::test]
async fn a_jspm_generator_map_with_scoped_cdn_dependencies() {
    let cdn = Origin::start().unwrap();
    let origin = Origin::start().unwrap();
    let version = |name: &str| -> String {
        let pkg: Value = serde_json::from_slice(
            &std::fs::read(node_modules().join(name).join("package.json")).unwrap(),
        )
        .unwrap();
        pkg["version"].as_str().unwrap().to_string()
    };
    for name in ["preact", "htm"] {
        cdn.serve_dir(
            &format!("/npm:{name}@{}", version(name)),
            &node_modules().join(name),
            CORS,
        );
    }
    serve(
        &cdn,
        "/app/widget.js",
        "text/javascript",
        &WIDGET.replace("WORD", "widget from production"),
    );
    let generated = run(Command::new("node")
        .arg(node_modules().join("../jspm-map.mjs"))
        .arg(format!("{}/", origin.url))
        .arg(&cdn.url)
        .args(["preact", "htm/preact"]));
    let mut map: Value = serde_json::from_str(&generated).unwrap();
    // What @jspm/generator writes: dependencies scoped by the CDN's origin,
    // integrity for the files it resolved.
    let scope = format!("{}/", cdn.url);
    assert!(map["scopes"][&scope]["htm"].is_string(), "{map:#}");
    assert!(map["imports"].get("htm").is_none(), "{map:#}");
    assert!(
        map["integrity"].as_object().is_some_and(|i| !i.is_empty()),
        "{map:#}"
    );
    map["imports"]["@app/widget"] = Value::String(format!("{}/app/widget.js", cdn.url));
    origin.route(
        "/",
        Route::html(&format!(
            "<!doctype html><html><head><script type=\"importmap\">{map}</script></head>\
             <body><div id=\"root\"></div><script type=\"module\">import '@app/widget';</script></body></html>"
        )),
    );
    let app = App::start(origin, cdn);
    // The first try of everyone with a CDN module: upload it like any file,
    // on the app's origin. It cannot apply (production loads the CDN's
    // copy), and both the CLI and the page say what to set instead.
    let first_try = project(
        "/app",
        "app",
        &[(
            "widget.js",
            &WIDGET.replace("WORD", "widget from the ticket"),
        )],
    );
    let out = app.stamp(
        first_try.path(),
        &["JSPM-0", "--update", "--once", "--json"],
    );
    let warning = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| {
            v["event"] == "note"
                && v["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("warning:"))
        })
        .unwrap_or_else(|| panic!("no setup warning in {out}"));
    let warning = warning["message"].as_str().unwrap();
    for part in [
        format!("{}/app/widget.js", app.cdn.url),
        format!("url_path = \"{}/app\"", app.cdn.url),
    ] {
        assert!(warning.contains(&part), "{warning} lacks {part}");
    }
    // The CDN is in asset_origins here: the warning does not ask for it.
    assert!(!warning.contains("asset_origins"), "{warning}");
    let browser = Browser::start().await.unwrap();
    app.expect(
        &browser,
        "/?dev=JSPM-0",
        "return document.getElementById('out')?.textContent ?? ''",
        "widget from production",
    )
    .await;
    let said = badge_says(&browser, "did not apply").await;
    assert!(said.contains("url_path"), "{said}");
    browser.close().await.unwrap();
    let work = project(
        &format!("{}/app", app.cdn.url),
        "app",
        &[(
            "widget.js",
            &WIDGET.replace("WORD", "widget from the ticket"),
        )],
    );
    let browser = Browser::start().await.unwrap();
    app.scenario(
        &browser,
        Scenario {
            key: "JSPM-1",
            untouched: &["/"],
            check: "return document.getElementById('out')?.textContent ?? ''",
            production: "widget from production",
            ticket: "widget from the ticket",
        },
        || {
            app.stamp(work.path(), &["JSPM-1", "--update", "--once"]);
        },
        work.path(),
    )
    .await;
    app.expect(
        &browser,
        "/?dev=JSPM-1",
        "return document.getElementById('out')?.textContent ?? ''",
        "widget from the ticket",
    )
    .await;
    badge_says(&browser, "1 of 1 module ran").await;
    let console = browser.console().await.unwrap();
    assert!(
        !console
            .iter()
            .any(|e| e.message.contains("Failed to resolve")),
        "{console:?}"
    );
    browser.close().await.unwrap();
}

/// A ticket module that a `<link rel=modulepreload>` fetched and the page's
/// module then imported, which throws as it runs, loaded but did not run:
/// the badge says so and counts the error (a preload by itself is not
/// counted, so this was feared lost when preloads stopped counting).
#[tokio::test]
async fn a_preloaded_ticket_module_that_throws_is_said_not_to_have_run() {
    let origin = Origin::start().unwrap();
    origin.route(
        "/",
        Route::html(
            "<!doctype html><html><head><script type=\"importmap\">{\"imports\":{\"@app/boom\":\"/src/boom.js\",\"@app/ok\":\"/src/ok.js\"}}</script>\
             <link rel=modulepreload href=/src/boom.js><link rel=modulepreload href=/src/ok.js></head>\
             <body><p id=\"out\">start</p>\
             <script type=\"module\">import '@app/ok'; document.getElementById('out').textContent = 'ok ran';</script>\
             <script type=\"module\">import '@app/boom';</script>\
             </body></html>",
        ),
    );
    for name in ["boom", "ok"] {
        origin.route(
            &format!("/src/{name}.js"),
            Route::bytes(
                "text/javascript",
                format!("export const {name} = 'production';\n").into_bytes(),
            ),
        );
    }
    let app = App::start(origin, Origin::start().unwrap());
    let work = project(
        "/src",
        "src",
        &[
            (
                "boom.js",
                "throw new Error('the ticket broke');\nexport const boom = 1;\n",
            ),
            ("ok.js", "export const ok = 'ticket';\n"),
        ],
    );
    app.stamp(work.path(), &["BOOM-1", "--update", "--once"]);
    let browser = Browser::start().await.unwrap();
    app.expect(
        &browser,
        "/?dev=BOOM-1",
        "return document.getElementById('out').textContent",
        "ok ran",
    )
    .await;
    let text = badge_says(&browser, "loaded but did not run").await;
    assert!(
        text.contains("1 of 2 ran; /src/boom.js loaded but did not run"),
        "{text}"
    );
    assert!(text.contains("error"), "its error is counted: {text}");
    browser.close().await.unwrap();
}

/// The badge never claims code that did not run: a ticket module whose
/// import cannot resolve loaded but never ran, and a production file loaded
/// by a URL no map reaches (a cache-busting query) ran where the ticket has
/// one. Both are said, in the badge's warning colour, and reported.
#[tokio::test]
async fn the_badge_never_claims_code_that_did_not_run() {
    let origin = Origin::start().unwrap();
    let cdn = Origin::start().unwrap();
    origin.route(
        "/",
        Route::html(
            "<!doctype html><html><head><script type=\"importmap\">{\"imports\":{\"@app/x\":\"/src/x.js\"}}</script></head>\
             <body><p id=\"out\">start</p>\
             <script type=\"module\">import '@app/x'; document.getElementById('out').textContent = 'x ran';</script>\
             <script type=\"module\">import('/src/y.js?v=' + 3).then(m => document.body.dataset.y = m.y);</script>\
             </body></html>",
        ),
    );
    origin.route(
        "/src/x.js",
        Route::bytes(
            "text/javascript",
            b"export const x = 'production x';\n".to_vec(),
        ),
    );
    origin.route(
        "/src/y.js",
        Route::bytes(
            "text/javascript",
            b"export const y = 'production y';\n".to_vec(),
        ),
    );
    let app = App::start(origin, cdn);
    let work = project(
        "/src",
        "src",
        &[
            (
                "x.js",
                "import { missing } from 'not-in-any-map';\nexport const x = missing;\n",
            ),
            ("y.js", "export const y = 'ticket y';\n"),
        ],
    );
    app.stamp(work.path(), &["TRUE-1", "--update", "--once"]);
    let browser = Browser::start().await.unwrap();
    browser.goto(&app.proxy.url("/?dev=TRUE-1")).await.unwrap();
    let text = badge_says(&browser, "loaded but did not run").await;
    assert!(
        text.contains(
            "0 of 2 ran: production's /src/y.js ran instead; /src/x.js loaded but did not run"
        ),
        "{text}"
    );
    assert!(
        text.contains("error"),
        "the resolution error is counted: {text}"
    );
    assert_eq!(badge_class(&browser).await, "warn");
    let v = views(&app, "TRUE-1", 1).await;
    assert_eq!(v[0]["ran"], 0, "{v:?}");
    assert_eq!(v[0]["production"][0], "/src/y.js");
    assert_eq!(v[0]["not_run"][0], "/src/x.js");
    assert!(v[0]["error_count"].as_u64().unwrap() >= 1);
    assert!(
        v[0]["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("not-in-any-map"),
        "{v:?}"
    );
    browser.close().await.unwrap();
}

/// Production's copy of a file whose ticket copy ran too: an inline
/// script's `import()` of production's URL (a cache-busting query no map
/// reaches) beside the map's entry for the same file. Both run, so the
/// page is not the ticket alone: the badge names production's as also
/// loaded, in its warning colour, and the report carries it apart from
/// what ran instead, also once a prefetch has loaded production's copy
/// again. (Until this rule the ticket's copy running made the probe forget
/// production's, and the badge said "1 of 1 modules ran".)
#[tokio::test]
async fn production_code_beside_the_tickets_is_named() {
    let origin = Origin::start().unwrap();
    origin.route(
        "/",
        Route::html(
            "<!doctype html><html><head><script type=\"importmap\">{\"imports\":{\"@app/y\":\"/src/y.js\"}}</script></head>\
             <body><p id=\"out\">start</p>\
             <script type=\"module\">import { y } from '@app/y'; document.body.dataset.mapped = y;</script>\
             <script type=\"module\">const m = await import('/src/y.js?v=' + 3); document.body.dataset.busted = m.y;\
             const l = document.createElement('link'); l.rel = 'prefetch'; l.href = '/src/y.js';\
             l.onload = () => document.body.dataset.prefetched = 'yes'; document.head.append(l);</script>\
             </body></html>",
        ),
    );
    origin.route("/src/y.js", Route::js("export const y = 'production y';\n"));
    let app = App::start(origin, Origin::start().unwrap());
    let work = project("/src", "src", &[("y.js", "export const y = 'ticket y';\n")]);
    app.stamp(work.path(), &["BESIDE-1", "--update", "--once"]);
    let browser = Browser::start().await.unwrap();
    browser
        .goto(&app.proxy.url("/?dev=BESIDE-1"))
        .await
        .unwrap();
    // Then a prefetch loads production's copy again (a link, which runs
    // nothing): what ran stays said.
    let deadline = Instant::now() + Duration::from_secs(15);
    while browser
        .execute("return document.body.dataset.prefetched || ''")
        .await
        .unwrap()
        != "yes"
    {
        assert!(Instant::now() < deadline, "the prefetch never loaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let text = badge(&browser).await;
    assert!(
        text.contains("1 of 1 ran; production's /src/y.js also loaded"),
        "{text}"
    );
    let both = browser
        .execute("return document.body.dataset.mapped + ' | ' + document.body.dataset.busted")
        .await
        .unwrap();
    assert_eq!(both, "ticket y | production y");
    assert_eq!(badge_class(&browser).await, "warn");
    let v = views(&app, "BESIDE-1", 1).await;
    assert_eq!(v[0]["ran"], 1, "{v:?}");
    assert!(v[0]["production"].as_array().unwrap().is_empty(), "{v:?}");
    assert_eq!(v[0]["production_also"][0], "/src/y.js", "{v:?}");
    browser.close().await.unwrap();
}

/// A frame with no probe of its own (an `<iframe srcdoc>`, as editors,
/// previews and widget sandboxes make) has no map: its import of the same
/// file runs production's, which only its own timeline shows. The page's
/// probe reads that timeline too, so the badge names production's copy.
#[tokio::test]
async fn production_code_in_a_frame_of_the_page_is_named() {
    let origin = Origin::start().unwrap();
    origin.route(
        "/",
        Route::html(
            "<!doctype html><html><head><script type=\"importmap\">{\"imports\":{\"@app/w\":\"/src/w.js\"}}</script></head>\
             <body><script type=\"module\">import { w } from '@app/w'; document.body.dataset.page = w;\
             const f = document.createElement('iframe');\
             f.srcdoc = '<link rel=stylesheet href=/src/s.css><script type=module>import { w } from \"/src/w.js\"; parent.document.body.dataset.frame = w;<' + '/script>';\
             document.body.append(f);</script></body></html>",
        ),
    );
    origin.route("/src/w.js", Route::js("export const w = 'production w';\n"));
    origin.route(
        "/src/s.css",
        Route::bytes("text/css", b"p { color: red }\n".to_vec()),
    );
    let app = App::start(origin, Origin::start().unwrap());
    let work = project(
        "/src",
        "src",
        &[
            ("w.js", "export const w = 'ticket w';\n"),
            ("s.css", "p { color: green }\n"),
        ],
    );
    app.stamp(work.path(), &["FRAME-1", "--update", "--once"]);
    let browser = Browser::start().await.unwrap();
    app.expect(
        &browser,
        "/?dev=FRAME-1",
        "return document.body.dataset.page + ' | ' + document.body.dataset.frame",
        "ticket w | production w",
    )
    .await;
    let text = badge_says(&browser, "also loaded").await;
    assert!(
        text.contains("production's /src/w.js also loaded"),
        "{text}"
    );
    // The frame's stylesheet, at its own path, is the ticket's (the proxy
    // answers a ticket browser's request for it so): it counts as applied
    // because an element of the frame uses it.
    let text = badge_says(&browser, "2 of 2 ran").await;
    assert!(
        text.contains("2 of 2 ran; production's /src/w.js also loaded"),
        "{text}"
    );
    browser.close().await.unwrap();
}

/// A frame of the page's origin that comes through the proxy (an embedded
/// widget's page) has its own probe and badge, which say what it ran. The
/// page's probe read that frame's timeline while it was still blank, and
/// went on reading it once the widget's page replaced it (Chromium keeps
/// the blank document's window): the page's badge said the ticket's file,
/// which the frame ran, "loaded but did not run".
#[tokio::test]
async fn a_frame_with_its_own_probe_says_what_it_ran_and_the_page_does_not() {
    let origin = Origin::start().unwrap();
    origin.route(
        "/",
        Route::html(
            "<!doctype html><html><head><title>shop</title></head>\
             <body><p id=out>shop</p><iframe id=f src=/embed></iframe></body></html>",
        ),
    );
    origin.route(
        "/embed",
        Route::html(
            "<!doctype html><html><head><script type=importmap>{\"imports\":{\"@app/widget\":\"/src/widget.js\"}}</script>\
             <script type=module>import { widget } from '@app/widget'; document.getElementById('out').textContent = widget;</script>\
             </head><body><p id=out>-</p></body></html>",
        ),
    );
    origin.route(
        "/src/widget.js",
        Route::js("export const widget = 'production widget';\n"),
    );
    let app = App::start(origin, Origin::start().unwrap());
    let work = project(
        "/src",
        "src",
        &[("widget.js", "export const widget = 'ticket widget';\n")],
    );
    app.stamp(work.path(), &["FRAME-2", "--update", "--once"]);
    let browser = Browser::start().await.unwrap();
    app.expect(
        &browser,
        "/?dev=FRAME-2",
        "return document.getElementById('f').contentDocument.getElementById('out').textContent",
        "ticket widget",
    )
    .await;
    let frame = browser
        .execute(
            "const b = document.getElementById('f').contentDocument.querySelector('ticket-stamp-badge'); \
             return b && b.shadowRoot ? b.shadowRoot.querySelector('aside').textContent : null;",
        )
        .await
        .unwrap();
    assert!(
        frame
            .as_str()
            .unwrap_or_default()
            .contains("1 of 1 module ran"),
        "the frame's badge: {frame}"
    );
    // Settled: the page's badge never says the frame's file did not run.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let page = badge(&browser).await;
    assert!(!page.contains("did not run"), "{page}");
    assert!(!page.contains("instead"), "{page}");
    browser.close().await.unwrap();
}

/// What the response's `Link` header preloads is fetched before the page's
/// probe runs and runs nothing by itself: a stale preload of a chunk that
/// is gone (a 404) is no error of the page, whereas a module the page
/// imports that fails to load is one, even when the page catches it. A
/// module script whose own file came but whose import is missing is one
/// failed load, the missing module's (the element's `error` and the
/// import's 404 are not two).
#[tokio::test]
async fn a_stale_preload_is_no_error_and_a_failed_import_is_one() {
    let origin = Origin::start().unwrap();
    origin.route(
        "/",
        Route::html(
            "<!doctype html><html><head><title>shop</title>\
             <script type=importmap>{\"imports\":{\"@app/w\":\"/src/w.js\"}}</script>\
             <script type=module>import { w } from '@app/w'; document.getElementById('out').textContent = w;\
             import('/src/gone.js').catch(() => {});</script>\
             <script type=module src=/src/root.js></script>\
             </head><body><p id=out>-</p></body></html>",
        )
        .header("link", "</assets/chunk-old.js>; rel=modulepreload"),
    );
    origin.route("/src/w.js", Route::js("export const w = 'production w';\n"));
    origin.route("/src/root.js", Route::js("import './nothere.js';\n"));
    let app = App::start(origin, Origin::start().unwrap());
    let work = project("/src", "src", &[("w.js", "export const w = 'ticket w';\n")]);
    app.stamp(work.path(), &["PRE-1", "--update", "--once"]);
    let browser = Browser::start().await.unwrap();
    app.expect(&browser, "/?dev=PRE-1", SHOW, "ticket w").await;
    let text = badge_says(&browser, "2 errors").await;
    assert!(text.contains("1 of 1 module ran"), "{text}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let errors = browser
        .execute("return JSON.stringify(window.__ticketStamp.errors)")
        .await
        .unwrap();
    let errors = errors.as_str().unwrap_or_default();
    assert!(
        errors.contains("/src/gone.js") && errors.contains("/src/nothere.js"),
        "{errors}"
    );
    assert!(
        !errors.contains("chunk-old") && !errors.contains("root.js"),
        "{errors}"
    );
    assert_eq!(badge(&browser).await.matches("2 errors").count(), 1);
    browser.close().await.unwrap();
}

/// An app deployed under `/app/` (Angular's `--base-href`, any client
/// router's deep links): the page at a deep link carries
/// `<base href="/app/">`, and its map entry and entry script are relative,
/// so the browser resolves them against the base, not against the page's
/// URL. The ticket's `/app/lib/greet.js` is what runs, and the badge says
/// so. A base on another origin takes the page's paths there: nothing is
/// stamped, production runs, and the badge says why.
#[tokio::test]
async fn a_base_href_decides_what_the_ticket_replaces() {
    let origin = Origin::start().unwrap();
    let cdn = Origin::start().unwrap();
    let page = |base: &str| {
        format!(
            "<!doctype html><html><head><base href=\"{base}\">\
             <script type=\"importmap\">{{\"imports\":{{\"greet\":\"./lib/greet.js\"}}}}</script>\
             <script type=\"module\" src=\"main.js\"></script></head>\
             <body><p id=\"out\">start</p></body></html>"
        )
    };
    origin.route("/app/settings/profile", Route::html(&page("/app/")));
    let cdn_base = format!("{}/app/", cdn.url);
    origin.route("/app/settings/cdn", Route::html(&page(&cdn_base)));
    let main = "import { greet } from 'greet';\n\
                document.getElementById('out').textContent = greet();\n";
    let production = "export const greet = () => 'production greeting';\n";
    for site in [&origin, &cdn] {
        serve(site, "/app/main.js", "text/javascript", main);
        serve(site, "/app/lib/greet.js", "text/javascript", production);
    }
    let app = App::start(origin, cdn);
    let work = project(
        "/app/lib",
        "lib",
        &[(
            "greet.js",
            "export const greet = () => 'ticket greeting';\n",
        )],
    );
    app.stamp(work.path(), &["BASE-1", "--update", "--once"]);
    let browser = Browser::start().await.unwrap();
    const OUT: &str = "return document.getElementById('out').textContent";
    let profile = "/app/settings/profile";
    app.expect(&browser, profile, OUT, "production greeting")
        .await;
    app.expect(
        &browser,
        &format!("{profile}?dev=BASE-1"),
        OUT,
        "ticket greeting",
    )
    .await;
    let text = badge_says(&browser, "1 of 1 module ran").await;
    assert!(text.contains("BASE-1"), "{text}");

    // The CDN's files ran.
    app.expect(
        &browser,
        "/app/settings/cdn?dev=BASE-1",
        OUT,
        "production greeting",
    )
    .await;
    let text = badge_says(&browser, "<base href> is on").await;
    assert!(text.contains(&app.cdn.url), "{text}");
    // The probe reports to the proxy, not to where the base points.
    browser.goto("about:blank").await.unwrap();
    let v = views(&app, "BASE-1", 2).await;
    assert!(
        v.iter().any(|v| v["ran"] == 0) && v.iter().any(|v| v["ran"] == 1),
        "{v:?}"
    );
    browser.close().await.unwrap();
}

// ------------------------------------------------------- service workers

/// A PWA as vite-plugin-pwa builds it by default (Workbox's generateSW:
/// every file precached, navigations answered from the precache, skipWaiting
/// and clientsClaim), whose app greets through `./lib/greet.js` and asks its
/// API for something, as apps do.
fn pwa(greeting: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "index.html",
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>PWA</title>\
         <script type=\"importmap\">{\"imports\":{\"@app/greet\":\"/lib/greet.js\"}}</script></head>\
         <body><p id=\"out\">loading</p><p id=\"api\"></p>\
         <script type=\"module\" src=\"/app.js\"></script></body></html>",
    );
    write(
        dir.path(),
        "app.js",
        "import { greet } from '@app/greet';\n\
         document.getElementById('out').textContent = greet();\n\
         fetch('/api/hello').then(r => r.text()).then(t => document.getElementById('api').textContent = t);\n\
         if ('serviceWorker' in navigator) navigator.serviceWorker.register('/sw.js');\n",
    );
    write(
        dir.path(),
        "lib/greet.js",
        &format!("export const greet = () => '{greeting}';\n"),
    );
    run(Command::new("node")
        .arg(node_modules().join("../workbox-sw.mjs"))
        .arg(dir.path()));
    dir
}

const SHOW: &str = "return document.getElementById('out')?.textContent ?? ''";

/// What the precache holds for the app's page and its greeting.
async fn precached(browser: &Browser) -> String {
    browser
        .execute(
            "return (async () => { let out = ''; \
             for (const name of await caches.keys()) { const c = await caches.open(name); \
               for (const req of await c.keys()) { \
                 if (/index.html|greet.js/.test(req.url)) out += (await (await c.match(req)).text()); } } \
             return out; })()",
        )
        .await
        .unwrap()
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn controlled(browser: &Browser) -> bool {
    browser
        .execute("return !!navigator.serviceWorker.controller")
        .await
        .unwrap()
        .as_bool()
        .unwrap_or(false)
}

async fn wait_controlled(browser: &Browser) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !controlled(browser).await {
        assert!(
            Instant::now() < deadline,
            "the app's service worker never took control"
        );
        browser.refresh().await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A visitor who opens a ticket installs no Workbox: the app's service
/// worker is set aside while the browser is on the ticket (and Workbox's
/// precache could only ever have fetched production's bytes). Leaving by
/// the badge's exit, the visitor is on production at once, stays there on
/// every reload, and the app's own service worker comes back, precaching
/// production.
#[tokio::test]
async fn a_pwa_keeps_nobody_on_a_ticket_after_they_leave_it() {
    let origin = Origin::start().unwrap();
    let app_dir = pwa("hello from production");
    origin.serve_dir("", app_dir.path(), &[]);
    origin.route("/api/hello", Route::bytes("text/plain", b"api ok".to_vec()));
    let app = App::start(origin, Origin::start().unwrap());
    let work = project(
        "/lib",
        "lib",
        &[(
            "greet.js",
            "export const greet = () => 'hello from the ticket';\n",
        )],
    );
    app.stamp(work.path(), &["PWA-1", "--update", "--once"]);

    let browser = Browser::start().await.unwrap();
    app.expect(&browser, "/?dev=PWA-1", SHOW, "hello from the ticket")
        .await;
    badge_says(&browser, "1 of 1 module ran").await;
    // The app registered its worker: it got ours, which caches nothing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !precached(&browser).await.contains("ticket"),
        "no ticket byte in any cache"
    );
    // A navigation inside the app is still the ticket's.
    app.expect(
        &browser,
        "/index.html?dev=PWA-1",
        SHOW,
        "hello from the ticket",
    )
    .await;

    // Leaving: production at once, and after every reload.
    browser.leave_by_the_badge().await.unwrap();
    browser
        .wait_for_text("#out", "hello from production", Duration::from_secs(15))
        .await
        .unwrap();
    assert_eq!(browser.cookie("ticket_stamp").await.unwrap(), None);
    // The app's own worker comes back (its next update check is
    // production's) and precaches production.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !precached(&browser).await.contains("hello from production") {
        if Instant::now() > deadline {
            let state = browser
                .execute("return (async () => ({ controller: navigator.serviceWorker.controller && navigator.serviceWorker.controller.scriptURL, caches: await caches.keys(), cookie: document.cookie, out: document.getElementById('out').textContent }))()")
                .await
                .unwrap();
            panic!(
                "the app's own worker never came back: {state}; the origin served sw.js {} times",
                app.origin.hits("/sw.js")
            );
        }
        browser.refresh().await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for _ in 0..3 {
        browser.refresh().await.unwrap();
        browser
            .wait_for_text("#out", "hello from production", Duration::from_secs(15))
            .await
            .unwrap();
    }
    let cached = precached(&browser).await;
    assert!(
        cached.contains("hello from production") && !cached.contains("ticket"),
        "{cached}"
    );
    browser.close().await.unwrap();
}

/// An app's own service worker that keeps what it fetched under `/src/`
/// and looks it up ignoring the query (a common offline recipe; Workbox's
/// `CacheFirst` takes the same `matchOptions`) stored the ticket's file
/// from the first ticket page it still controlled, under its `?__ts=`
/// URL, and then answered production's own `/src/lib/greet.js` with it:
/// the visitor, back on production, ran the ticket's code on every page.
/// A ticket's file that is not production's is now one no cache keeps
/// (`Vary: *`, which the Cache API refuses).
#[tokio::test]
async fn an_apps_own_cache_keeps_no_ticket_file_after_its_visitor_leaves() {
    let origin = Origin::start().unwrap();
    origin.route(
        "/",
        Route::html(
            "<!doctype html><html><head><title>app</title></head><body><p id=out>-</p>\
             <script type=module src=/src/main.js></script>\
             <script>addEventListener('load', () => navigator.serviceWorker.register('/sw.js'));</script>\
             </body></html>",
        ),
    );
    serve(
        &origin,
        "/src/main.js",
        "text/javascript",
        "import { greet } from './lib/greet.js';\ndocument.getElementById('out').textContent = greet();\n",
    );
    serve(
        &origin,
        "/src/lib/greet.js",
        "text/javascript",
        "export const greet = () => 'production greet';\n",
    );
    serve(
        &origin,
        "/sw.js",
        "text/javascript",
        "self.addEventListener('install', () => self.skipWaiting());\n\
         self.addEventListener('activate', e => e.waitUntil(self.clients.claim()));\n\
         self.addEventListener('fetch', e => {\n\
           const url = new URL(e.request.url);\n\
           if (url.origin !== location.origin || !url.pathname.startsWith('/src/')) return;\n\
           e.respondWith(caches.open('runtime').then(c => c.match(e.request, {ignoreSearch: true})\n\
             .then(hit => hit || fetch(e.request).then(res => {\n\
               if (res.ok) c.put(e.request, res.clone()).catch(() => {});\n\
               return res;\n\
             }))));\n\
         });\n",
    );
    let store = tempfile::tempdir().unwrap();
    stamp_tests::seed_dir(
        store.path(),
        "SW-1",
        &[(
            "/src/lib/greet.js",
            "export const greet = () => 'ticket greet';\n",
        )],
    )
    .await
    .unwrap();
    let proxy =
        stamp_tests::Proxy::start(&origin.url, &["--store", &store.path().to_string_lossy()])
            .unwrap();
    async fn cached(browser: &Browser) -> String {
        browser
            .execute("return (async () => { const c = await caches.open('runtime'); return (await c.keys()).map(r => r.url).join(' '); })()")
            .await
            .unwrap()
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
    let browser = Browser::start().await.unwrap();
    browser.goto(&proxy.url("/")).await.unwrap();
    browser
        .wait_for_text("#out", "production greet", Duration::from_secs(15))
        .await
        .unwrap();
    wait_controlled(&browser).await;
    // The first ticket page is still the app's worker's to answer.
    browser.goto(&proxy.url("/?dev=SW-1")).await.unwrap();
    browser
        .wait_for_text("#out", "ticket greet", Duration::from_secs(30))
        .await
        .unwrap();
    badge_says(&browser, "1 of 1 module ran").await;
    let kept = cached(&browser).await;
    assert!(
        !kept.contains("__ts="),
        "the app's cache kept the ticket's file: {kept}"
    );
    browser.goto(&proxy.url("/?stamp=off")).await.unwrap();
    for _ in 0..3 {
        browser.goto(&proxy.url("/")).await.unwrap();
        browser
            .wait_for_text("#out", "production greet", Duration::from_secs(15))
            .await
            .unwrap();
    }
    let kept = cached(&browser).await;
    assert!(!kept.contains("__ts="), "{kept}");
    browser.close().await.unwrap();
}

/// On a browser that production's service worker already controls, the
/// `?dev=` navigation never reaches the proxy (Workbox answers it from its
/// precache), so nobody knows where the link came from. The first request
/// the page sends the network names the link in its Referer: the proxy
/// selects nothing yet, the app's next update check sets its worker aside,
/// the page reloads, and that load asks "Open ticket?" as a link from
/// another site does. No ticket code runs before the answer.
#[tokio::test]
async fn a_ticket_link_works_in_a_browser_a_pwa_already_controls() {
    let origin = Origin::start().unwrap();
    let app_dir = pwa("hello from production");
    origin.serve_dir("", app_dir.path(), &[]);
    origin.route("/api/hello", Route::bytes("text/plain", b"api ok".to_vec()));
    let app = App::start(origin, Origin::start().unwrap());
    let work = project(
        "/lib",
        "lib",
        &[(
            "greet.js",
            "export const greet = () => 'hello from the ticket';\n",
        )],
    );
    app.stamp(work.path(), &["PWA-2", "--update", "--once"]);

    let browser = Browser::start().await.unwrap();
    browser.goto(&app.proxy.url("/")).await.unwrap();
    browser
        .wait_for_text("#out", "hello from production", Duration::from_secs(15))
        .await
        .unwrap();
    wait_controlled(&browser).await;
    assert!(precached(&browser).await.contains("hello from production"));

    browser.goto(&app.proxy.url("/?dev=PWA-2")).await.unwrap();
    let asked = browser
        .wait_for_text("h1", "Open ticket", Duration::from_secs(30))
        .await
        .unwrap();
    assert!(asked.starts_with("Open ticket PWA-2"), "{asked}");
    assert_eq!(browser.cookie("ticket_stamp").await.unwrap(), None);
    assert_eq!(browser.cookie("ticket_stamp_pending").await.unwrap(), None);
    browser.click("a.go").await.unwrap();
    browser
        .wait_for_text("#out", "hello from the ticket", Duration::from_secs(30))
        .await
        .unwrap();
    badge_says(&browser, "1 of 1 module ran").await;
    assert!(
        !precached(&browser).await.contains("ticket"),
        "no ticket byte in any cache"
    );
    browser.close().await.unwrap();
}

/// Production's page `/`, an `#out` paragraph and the module
/// `/src/main.js` (`main`) that fills it.
fn page_running_main(origin: &Origin, main: &str) {
    origin.route(
        "/",
        Route::html(
            "<!doctype html><html><head><title>shop</title></head><body><p id=out>-</p>\
             <script type=module src=/src/main.js></script></body></html>",
        ),
    );
    serve(origin, "/src/main.js", "text/javascript", main);
}

/// An error a framework catches and only logs is an error the page met:
/// Vue 3's production build logs a component's render error with
/// `console.error` and goes on (as Angular's error handler and a React
/// error boundary do), so no `error` event fires. The ticket's broken
/// widget was said to have run with no error; a rollout judged by such
/// pages would never see it fail. A message logged without an `Error` is
/// no error. The app's own `fetch` wrapper (an auth interceptor that
/// throws without its token) silenced the report too: the probe sends it
/// with the browser's own.
#[tokio::test]
async fn an_error_a_framework_catches_and_logs_is_counted() {
    let origin = Origin::start().unwrap();
    serve_npm(&origin, "/lib/vue.js", "vue/dist/vue.esm-browser.prod.js");
    origin.route(
        "/",
        Route::html(
            "<!doctype html><html><head><title>shop</title>\
             <script type=importmap>{\"imports\":{\"vue\":\"/lib/vue.js\",\"@app/widget\":\"/src/widget.js\"}}</script>\
             <script>window.fetch = () => { throw new TypeError('no auth token'); };</script>\
             </head><body><div id=app></div><p id=out>-</p>\
             <script type=module>import '@app/widget';</script></body></html>",
        ),
    );
    let widget = |render: &str| {
        format!(
            "import {{ createApp, h }} from 'vue';\n\
             console.error('widget: starting (a message, not an error)');\n\
             createApp({{ render() {{ {render} }} }}).mount('#app');\n\
             document.getElementById('out').textContent = 'mounted';\n"
        )
    };
    serve(
        &origin,
        "/src/widget.js",
        "text/javascript",
        &widget("return h('p', 'production widget');"),
    );
    let app = App::start(origin, Origin::start().unwrap());
    let work = project(
        "/src",
        "src",
        &[(
            "widget.js",
            &widget("throw new Error('the ticket broke the widget');"),
        )],
    );
    app.stamp(work.path(), &["VUE-1", "--update", "--once"]);
    let browser = Browser::start().await.unwrap();
    app.expect(
        &browser,
        "/?stamp=off",
        "return document.getElementById('app').textContent",
        "production widget",
    )
    .await;
    // The ticket's widget threw inside Vue, which logged it and went on.
    app.expect(
        &browser,
        "/?dev=VUE-1",
        "return document.getElementById('out').textContent + ' ' + document.getElementById('app').textContent",
        "mounted ",
    )
    .await;
    let text = badge_says(&browser, "1 error").await;
    assert!(text.contains("1 of 1 module ran"), "{text}");
    assert!(!text.contains("2 errors"), "{text}");
    let views = views(&app, "VUE-1", 1).await;
    let errors = &views[0]["errors"];
    assert_eq!(views[0]["error_count"], 1, "{views:?}");
    assert_eq!(errors[0]["kind"], "console", "{errors}");
    assert_eq!(errors[0]["message"], "the ticket broke the widget");
    browser.close().await.unwrap();
}

/// Import maps do not reach what a page reads with `fetch()`: a module
/// reads `new URL('./strings.json', import.meta.url)`, at production's
/// path. A ticket page gets the ticket's strings there (never stored), and
/// the badge counts them. Production said `max-age=600`, so a browser that
/// saw production keeps its copy: the ticket link clears it, and the
/// ticket's strings show. Where the browser still holds production's copy
/// on the ticket (no clear reached it: plain `http` on another host; here
/// the ticket's cookie set by a script after leaving), the fetch never
/// reaches the proxy: the page shows production's strings, and the badge
/// says exactly that.
#[tokio::test]
async fn files_a_page_fetches_are_the_tickets_or_the_badge_says_not() {
    let origin = Origin::start().unwrap();
    page_running_main(
        &origin,
        "const r = await fetch(new URL('./strings.json', import.meta.url));\n\
         document.getElementById('out').textContent = (await r.json()).hello;\n",
    );
    origin.route(
        "/src/strings.json",
        Route::bytes(
            "application/json",
            br#"{"hello":"production strings"}"#.to_vec(),
        )
        .header("cache-control", "max-age=600"),
    );
    let app = App::start(origin, Origin::start().unwrap());
    let work = project(
        "/src",
        "src",
        &[("strings.json", r#"{"hello":"ticket strings"}"#)],
    );
    app.stamp(work.path(), &["STR-1", "--update", "--once"]);
    let out = "return document.getElementById('out').textContent";
    let browser = Browser::start().await.unwrap();
    app.expect(&browser, "/?dev=STR-1", out, "ticket strings")
        .await;
    badge_says(&browser, "1 of 1 module ran").await;
    // Leaving: production's strings, from the network (the ticket's were
    // never stored); the browser keeps them, as production allows.
    browser.leave_by_the_badge().await.unwrap();
    browser
        .wait_for_text("#out", "production strings", Duration::from_secs(15))
        .await
        .unwrap();
    // Back by the link: what the browser kept was cleared with it.
    app.expect(&browser, "/?dev=STR-1", out, "ticket strings")
        .await;
    badge_says(&browser, "1 of 1 module ran").await;
    // Production again (its strings kept), then on the ticket by its
    // cookie alone, as a browser the clear never reached: the browser
    // answers the fetch from its cache.
    browser.leave_by_the_badge().await.unwrap();
    browser
        .wait_for_text("#out", "production strings", Duration::from_secs(15))
        .await
        .unwrap();
    browser
        .execute("document.cookie = 'ticket_stamp=dev.STR-1; path=/'; return true;")
        .await
        .unwrap();
    app.expect(&browser, "/", out, "production strings").await;
    badge_says(
        &browser,
        "0 of 1 ran: production's /src/strings.json ran instead",
    )
    .await;
    // Production never gets the ticket's file.
    let r = client()
        .get(app.proxy.url("/src/strings.json"))
        .header("sec-fetch-dest", "empty")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), r#"{"hello":"production strings"}"#);
    browser.close().await.unwrap();
}

/// A Rails app on importmap-rails with Propshaft: `config/importmap.rb`
/// pins each file of `app/javascript` under a specifier, and production's
/// map points it at a digested URL (`hello_controller-708796bd.js`), which no
/// ticket file's path matches. `stamp` reads the pins, so the ticket's
/// controller replaces production's by its specifier, and a controller the
/// ticket adds is pinned as Rails would pin it: Stimulus' eager loader
/// (which reads the page's map) registers both. The page, the digests and
/// the loader are what `javascript_importmap_tags` and stimulus-rails
/// produce; Stimulus is the real one from npm.
#[tokio::test]
async fn a_rails_importmap_app_runs_the_tickets_controllers() {
    let origin = Origin::start().unwrap();
    let page = r#"<!DOCTYPE html>
<html><head><title>Shop</title>
<meta name="viewport" content="width=device-width,initial-scale=1">
<script type="importmap" data-turbo-track="reload">{
  "imports": {
    "application": "/assets/application-37f365cb.js",
    "@hotwired/stimulus": "/assets/stimulus.min-4b1e420e.js",
    "@hotwired/stimulus-loading": "/assets/stimulus-loading-1fc53fe7.js",
    "controllers/application": "/assets/controllers/application-3affb389.js",
    "controllers/hello_controller": "/assets/controllers/hello_controller-708796bd.js",
    "controllers": "/assets/controllers/index-ee64e1f1.js"
  }
}</script>
<link rel="modulepreload" href="/assets/application-37f365cb.js">
<link rel="modulepreload" href="/assets/stimulus.min-4b1e420e.js">
<link rel="modulepreload" href="/assets/stimulus-loading-1fc53fe7.js">
<script type="module">import "application"</script>
</head>
<body><p id="hello" data-controller="hello">-</p><p id="goodbye" data-controller="goodbye">-</p></body></html>
"#;
    origin.route("/", Route::html(page));
    serve_npm(
        &origin,
        "/assets/stimulus.min-4b1e420e.js",
        "@hotwired/stimulus/dist/stimulus.js",
    );
    // stimulus-rails' loader, as the gem ships it (the part this app uses).
    let loading = r#"export function eagerLoadControllersFrom(under, application) {
  const paths = Object.keys(JSON.parse(document.querySelector("script[type=importmap]").text).imports)
    .filter(path => path.match(new RegExp(`^${under}/.*_controller$`)))
  paths.forEach(path => {
    const name = path.replace(new RegExp(`^${under}/`), "").replace("_controller", "").replace(/\//g, "--").replace(/_/g, "-")
    import(path).then(module => application.register(name, module.default))
      .catch(error => console.error(`Failed to register controller: ${name} (${path})`, error))
  })
}
"#;
    let app_js = "import \"controllers\"\n";
    let index_js = "import { application } from \"controllers/application\"\n\
        import { eagerLoadControllersFrom } from \"@hotwired/stimulus-loading\"\n\
        eagerLoadControllersFrom(\"controllers\", application)\n";
    let application_js = "import { Application } from \"@hotwired/stimulus\"\n\
        const application = Application.start()\nexport { application }\n";
    let controller = |says: &str| {
        format!(
            "import {{ Controller }} from \"@hotwired/stimulus\"\n\
             export default class extends Controller {{ connect() {{ this.element.textContent = \"{says}\" }} }}\n"
        )
    };
    for (path, body) in [
        ("/assets/stimulus-loading-1fc53fe7.js", loading.to_string()),
        ("/assets/application-37f365cb.js", app_js.to_string()),
        (
            "/assets/controllers/index-ee64e1f1.js",
            index_js.to_string(),
        ),
        (
            "/assets/controllers/application-3affb389.js",
            application_js.to_string(),
        ),
        (
            "/assets/controllers/hello_controller-708796bd.js",
            controller("production hello"),
        ),
    ] {
        serve(&origin, path, "text/javascript", &body);
    }
    let app = App::start(origin, Origin::start().unwrap());
    // The Rails app's repository: production on main, the ticket's branch
    // changes one controller and adds another.
    let work = tempfile::tempdir().unwrap();
    on_a_branch(work.path(), |d| {
        write(
            d,
            "stamp.toml",
            "folder = \"app/javascript\"\nurl_path = \"/assets\"\n",
        );
        write(
            d,
            "config/importmap.rb",
            "# Pin npm packages by running ./bin/importmap\n\n\
             pin \"application\"\n\
             pin \"@hotwired/stimulus\", to: \"stimulus.min.js\"\n\
             pin \"@hotwired/stimulus-loading\", to: \"stimulus-loading.js\"\n\
             pin_all_from \"app/javascript/controllers\", under: \"controllers\"\n",
        );
        write(d, "app/javascript/application.js", app_js);
        write(d, "app/javascript/controllers/index.js", index_js);
        write(
            d,
            "app/javascript/controllers/application.js",
            application_js,
        );
        write(
            d,
            "app/javascript/controllers/hello_controller.js",
            &controller("production hello"),
        );
    });
    write(
        work.path(),
        "app/javascript/controllers/hello_controller.js",
        &controller("ticket hello"),
    );
    write(
        work.path(),
        "app/javascript/controllers/goodbye_controller.js",
        &controller("ticket goodbye"),
    );
    commit(work.path(), "the ticket");
    app.stamp(work.path(), &["RAILS-1", "--update", "--once"]);
    let out = "return document.getElementById('hello').textContent + ' / ' + document.getElementById('goodbye').textContent";
    let browser = Browser::start().await.unwrap();
    app.expect(&browser, "/", out, "production hello / -").await;
    app.production_is_untouched(&["/"]).await;
    app.expect(
        &browser,
        "/?dev=RAILS-1",
        out,
        "ticket hello / ticket goodbye",
    )
    .await;
    badge_says(&browser, "2 of 2 modules ran").await;
    app.expect(&browser, "/?stamp=off", out, "production hello / -")
        .await;
    app.stamp(work.path(), &["RAILS-1", "--promote"]);
    app.expect(
        &browser,
        "/?qa=RAILS-1",
        out,
        "ticket hello / ticket goodbye",
    )
    .await;
    app.production_is_untouched(&["/"]).await;
    browser.close().await.unwrap();
}

/// Production's own cache-busting queries (`?v=`, `?ver=`: Rails'
/// `asset_path`, WordPress, Shopify themes) on the map's addresses and the
/// page's entry points, stylesheets and preloads: a ticket file at the same
/// path replaces them, whoever imports it (a module file, whose requests a
/// `.js` referrer names, or an inline module, where only the map can).
#[tokio::test]
async fn cache_busted_urls_in_the_page_are_the_tickets() {
    let origin = Origin::start().unwrap();
    origin.route(
        "/",
        Route::html(
            "<!doctype html><html><head>\
             <link rel=stylesheet href=\"/css/app.css?v=2\">\
             <script type=importmap>{\"imports\":{\"@app/greet\":\"/src/greet.js?v=3\"}}</script>\
             <link rel=modulepreload href=\"/src/main.js?ver=6.4\">\
             <script type=module src=\"/src/main.js?ver=6.4\"></script></head>\
             <body><p id=out>-</p></body></html>",
        ),
    );
    origin.route(
        "/src/main.js",
        Route::bytes(
            "text/javascript",
            b"import { greet } from '@app/greet';\n\
              document.getElementById('out').textContent = 'production main, ' + greet() + ', ' + getComputedStyle(document.body).color;\n"
                .to_vec(),
        ),
    );
    origin.route(
        "/src/greet.js",
        Route::bytes(
            "text/javascript",
            b"export const greet = () => 'production greeting';\n".to_vec(),
        ),
    );
    origin.route(
        "/css/app.css",
        Route::bytes("text/css", b"body { color: rgb(1, 2, 3); }\n".to_vec()),
    );
    origin.route(
        "/inline",
        Route::html(
            "<!doctype html><html><head>\
             <script type=importmap>{\"imports\":{\"@app/greet\":\"/src/greet.js?v=3\"}}</script>\
             <script type=module>import { greet } from '@app/greet';\
             document.getElementById('out').textContent = 'inline, ' + greet();</script></head>\
             <body><p id=out>-</p></body></html>",
        ),
    );
    origin.route(
        "/runtime",
        Route::html(
            "<!doctype html><html><head><script>\
             const map = document.createElement('script'); map.type = 'importmap';\
             map.textContent = JSON.stringify({imports: {'@app/greet': '/src/greet.js?v=3'}});\
             document.head.appendChild(map);\
             import('@app/greet').then(m => document.getElementById('out').textContent = 'runtime, ' + m.greet());\
             </script></head><body><p id=out>-</p></body></html>",
        ),
    );
    let app = App::start(origin, Origin::start().unwrap());
    let work = project(
        "/",
        ".",
        &[
            (
                "src/main.js",
                "import { greet } from '@app/greet';\n\
                 document.getElementById('out').textContent = 'ticket main, ' + greet() + ', ' + getComputedStyle(document.body).color;\n",
            ),
            ("src/greet.js", "export const greet = () => 'ticket greeting';\n"),
            ("css/app.css", "body { color: rgb(4, 5, 6); }\n"),
        ],
    );
    app.stamp(work.path(), &["BUST-1", "--update", "--once"]);
    let out = "return document.getElementById('out').textContent";
    let browser = Browser::start().await.unwrap();
    app.expect(
        &browser,
        "/",
        out,
        "production main, production greeting, rgb(1, 2, 3)",
    )
    .await;
    app.expect(
        &browser,
        "/?dev=BUST-1",
        out,
        "ticket main, ticket greeting, rgb(4, 5, 6)",
    )
    .await;
    badge_says(&browser, "3 of 3").await;
    // Imported from an inline module, whose requests name no script: only
    // the map's address can make it the ticket's.
    app.expect(
        &browser,
        "/inline?dev=BUST-1",
        out,
        "inline, ticket greeting",
    )
    .await;
    badge_says(&browser, "1 of 1").await;
    // A map the page writes in at run time, the same.
    app.expect(
        &browser,
        "/runtime?dev=BUST-1",
        out,
        "runtime, ticket greeting",
    )
    .await;
    badge_says(&browser, "1 of 1").await;
    app.production_is_untouched(&["/", "/inline", "/runtime"])
        .await;
    browser.close().await.unwrap();
}

/// Entry scripts by URL under each loader: es-module-shims' `<script
/// type="module-shim" src>` (shim mode) and SystemJS's `<script
/// type="systemjs-module" src>`, whose file the ticket changed. A loader
/// loads such a URL as it is written, as the browser does a module
/// script's. (The SystemJS module reads its `import.meta`, which SystemJS
/// gives only a declare function of two arguments: the probe's wrapper of
/// it must keep them.)
#[tokio::test]
async fn entry_scripts_each_loader_loads_by_url_are_the_tickets() {
    let origin = Origin::start().unwrap();
    serve_npm(
        &origin,
        "/lib/es-module-shims.js",
        "es-module-shims-2/dist/es-module-shims.js",
    );
    serve_npm(&origin, "/lib/system.js", "systemjs/dist/system.js");
    serve_npm(&origin, "/lib/s.js", "systemjs/dist/s.js");
    origin.route(
        "/shims",
        Route::html(
            "<!doctype html><html><head>\
             <script async src=/lib/es-module-shims.js></script>\
             <script type=importmap-shim>{\"imports\":{\"@app/greet\":\"/src/greet.js\"}}</script>\
             <script type=module-shim src=/src/main.js></script></head>\
             <body><p id=out>-</p></body></html>",
        ),
    );
    origin.route(
        "/system",
        Route::html(
            "<!doctype html><html><head>\
             <script src=/lib/system.js></script>\
             <script type=systemjs-importmap>{\"imports\":{\"@app/greet\":\"/sys/greet.js\"}}</script>\
             <script type=systemjs-module src=/sys/main.js></script></head>\
             <body><p id=out>-</p></body></html>",
        ),
    );
    // SystemJS's minimal build, which calls no onload hook: the badge
    // counted the ticket's module as "loaded but did not run".
    origin.route(
        "/system-minimal",
        Route::html(
            "<!doctype html><html><head>\
             <script src=/lib/s.js></script>\
             <script type=systemjs-importmap>{\"imports\":{\"@app/greet\":\"/sys/greet.js\"}}</script>\
             <script type=systemjs-module src=/sys/main.js></script></head>\
             <body><p id=out>-</p></body></html>",
        ),
    );
    let main = |who: &str| {
        format!(
            "import {{ greet }} from '@app/greet';\n\
             document.getElementById('out').textContent = '{who} main, ' + greet();\n"
        )
    };
    let system_main = |who: &str| {
        format!(
            "System.register(['@app/greet'], function (e, c) {{ var greet; return {{ setters: [function (m) {{ greet = m.greet; }}], \
             execute: function () {{ if (!c.meta.url) throw new Error('no import.meta'); \
             document.getElementById('out').textContent = '{who} main, ' + greet(); }} }}; }});\n"
        )
    };
    serve(
        &origin,
        "/src/main.js",
        "text/javascript",
        &main("production"),
    );
    serve(
        &origin,
        "/src/greet.js",
        "text/javascript",
        "export const greet = () => 'production greeting';\n",
    );
    serve(
        &origin,
        "/sys/main.js",
        "text/javascript",
        &system_main("production"),
    );
    serve(
        &origin,
        "/sys/greet.js",
        "text/javascript",
        "System.register([], function (e) { return { execute: function () { e('greet', function () { return 'production greeting'; }); } }; });\n",
    );
    let app = App::start(origin, Origin::start().unwrap());
    let work = project(
        "/",
        ".",
        &[
            ("src/main.js", &main("ticket")),
            ("sys/main.js", &system_main("ticket")),
        ],
    );
    app.stamp(work.path(), &["ENTRY-1", "--update", "--once"]);
    let out = "return document.getElementById('out').textContent";
    let browser = Browser::start().await.unwrap();
    for page in ["/shims", "/system", "/system-minimal"] {
        app.expect(
            &browser,
            &format!("{page}?stamp=off"),
            out,
            "production main, production greeting",
        )
        .await;
        app.expect(
            &browser,
            &format!("{page}?dev=ENTRY-1"),
            out,
            "ticket main, production greeting",
        )
        .await;
        badge_says(&browser, "1 of 1").await;
        // Still so once the page settled (when "did not run" is said).
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let text = badge(&browser).await;
        assert!(text.contains("1 of 1 module ran"), "{page}: {text}");
    }
    browser.close().await.unwrap();
}

/// JSON and CSS module scripts (`import … with { type: 'json' }`, `type:
/// 'css'`) of production's module, where the ticket changed only those
/// files: the page runs the ticket's, and the badge counts them.
#[tokio::test]
async fn json_and_css_modules_a_module_imports_are_the_tickets() {
    let origin = Origin::start().unwrap();
    page_running_main(
        &origin,
        "import strings from './strings.json' with { type: 'json' };\n\
         import sheet from './theme.css' with { type: 'css' };\n\
         document.adoptedStyleSheets = [sheet];\n\
         document.getElementById('out').textContent = strings.hello + ' ' + getComputedStyle(document.body).color;\n",
    );
    origin.route(
        "/src/strings.json",
        Route::bytes(
            "application/json",
            br#"{"hello":"production strings"}"#.to_vec(),
        ),
    );
    origin.route(
        "/src/theme.css",
        Route::bytes("text/css", b"body { color: rgb(1, 2, 3); }\n".to_vec()),
    );
    let app = App::start(origin, Origin::start().unwrap());
    let work = project(
        "/src",
        "src",
        &[
            ("strings.json", r#"{"hello":"ticket strings"}"#),
            ("theme.css", "body { color: rgb(4, 5, 6); }\n"),
        ],
    );
    app.stamp(work.path(), &["JSM-1", "--update", "--once"]);
    let out = "return document.getElementById('out').textContent";
    let browser = Browser::start().await.unwrap();
    app.expect(&browser, "/", out, "production strings rgb(1, 2, 3)")
        .await;
    app.expect(&browser, "/?dev=JSM-1", out, "ticket strings rgb(4, 5, 6)")
        .await;
    badge_says(&browser, "2 of 2").await;
    browser.close().await.unwrap();
}

/// Files a stylesheet or the page's markup loads by URL (an `@import`, a
/// `url()` background, an `<img>`, a stylesheet a script adds) pass no map
/// and no rewrite: on the ticket the proxy answers each with the ticket's
/// file at its own path (never cached), and the badge counts them. Without
/// the selection, production's files.
#[tokio::test]
async fn files_loaded_by_stylesheets_and_markup_are_the_tickets() {
    // One pixel, its colour the first entry of the colour table.
    let gif = |rgb: [u8; 3]| -> Vec<u8> {
        let mut g = b"GIF89a\x01\x00\x01\x00\x80\x00\x00".to_vec();
        g.extend_from_slice(&rgb);
        g.extend_from_slice(&[0, 0, 0]);
        g.extend_from_slice(
            b"\x21\xf9\x04\x00\x00\x00\x00\x00\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02\x44\x01\x00\x3b",
        );
        g
    };
    let origin = Origin::start().unwrap();
    origin.route(
        "/",
        Route::html(
            "<!doctype html><html><head><title>styles</title>\
             <link rel=stylesheet href=/src/main.css></head><body>\
             <p id=themed>text</p><div id=bg></div><img id=logo src=/src/logo.gif>\
             <p id=late>text</p>\
             <script type=module src=/src/main.js></script></body></html>",
        ),
    );
    origin.route(
        "/src/main.css",
        Route::bytes(
            "text/css",
            b"@import url(./theme.css);\n#bg { width: 5px; height: 5px; background: url(./bg.gif); }\n"
                .to_vec(),
        ),
    );
    origin.route(
        "/src/theme.css",
        Route::bytes("text/css", b"#themed { color: rgb(1, 2, 3); }\n".to_vec()),
    );
    origin.route(
        "/src/late.css",
        Route::bytes("text/css", b"#late { color: rgb(1, 2, 3); }\n".to_vec()),
    );
    origin.route("/src/logo.gif", Route::bytes("image/gif", gif([10, 0, 0])));
    origin.route("/src/bg.gif", Route::bytes("image/gif", gif([10, 0, 0])));
    origin.route(
        "/src/main.js",
        Route::bytes(
            "text/javascript",
            b"const l = document.createElement('link');\n\
              l.rel = 'stylesheet'; l.href = '/src/late.css';\n\
              document.head.append(l);\n"
                .to_vec(),
        ),
    );
    let app = App::start(origin, Origin::start().unwrap());
    let work = project(
        "/src",
        "src",
        &[
            ("theme.css", "#themed { color: rgb(9, 8, 7); }\n"),
            ("late.css", "#late { color: rgb(9, 8, 7); }\n"),
        ],
    );
    for (name, red) in [("logo.gif", 200), ("bg.gif", 150)] {
        std::fs::write(work.path().join("src").join(name), gif([red, 0, 0])).unwrap();
    }
    // The colours of the two stylesheets' rules, and the logo's red.
    let what = "const img = document.getElementById('logo');\n\
        if (!img.complete || !img.naturalWidth) return 'loading';\n\
        const cv = document.createElement('canvas'); cv.width = cv.height = 1;\n\
        const x = cv.getContext('2d'); x.drawImage(img, 0, 0);\n\
        const c = (id) => getComputedStyle(document.getElementById(id)).color;\n\
        return [c('themed'), c('late'), x.getImageData(0, 0, 1, 1).data[0]].join(' | ');";
    let browser = Browser::start().await.unwrap();
    app.expect(&browser, "/", what, "rgb(1, 2, 3) | rgb(1, 2, 3) | 10")
        .await;
    app.stamp(work.path(), &["CSS-1", "--update", "--once"]);
    // A fresh browser: one keeps images for the page's life.
    browser.close().await.unwrap();
    let browser = Browser::start().await.unwrap();
    app.expect(
        &browser,
        "/?dev=CSS-1",
        what,
        "rgb(9, 8, 7) | rgb(9, 8, 7) | 200",
    )
    .await;
    badge_says(&browser, "4 of 4 modules ran").await;
    // Each was the ticket's, never to be stored, for this browser only.
    let theme = the_browsers_own(&app, &browser, "/src/theme.css", "style").await;
    assert!(
        theme.starts_with("#themed { color: rgb(9, 8, 7); }"),
        "{theme}"
    );
    for path in ["/src/bg.gif", "/src/logo.gif"] {
        the_browsers_own(&app, &browser, path, "image").await;
    }
    // What a media element asks for: one range of the ticket's file, the
    // whole file when `If-Range` names another version, 416 past its end.
    let cookie = browser.cookie("ticket_stamp").await.unwrap().unwrap();
    let len = gif([200, 0, 0]).len();
    let ranged = |range: &'static str, if_range: Option<&'static str>| {
        let mut r = client()
            .get(app.proxy.url("/src/logo.gif"))
            .header("cookie", format!("ticket_stamp={cookie}"))
            .header("sec-fetch-dest", "image")
            .header("range", range);
        if let Some(v) = if_range {
            r = r.header("if-range", v);
        }
        r.send()
    };
    let r = ranged("bytes=0-5", None).await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes 0-5/{len}").as_str()
    );
    assert_eq!(r.headers()["cache-control"], "private, no-store");
    assert_eq!(&r.bytes().await.unwrap()[..], b"GIF89a");
    let r = ranged("bytes=-2", None).await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(&r.bytes().await.unwrap()[..], &gif([200, 0, 0])[len - 2..]);
    let r = ranged("bytes=9999-", None).await.unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes */{len}").as_str()
    );
    let r = ranged("bytes=0-5", Some("\"another\"")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), len);
    app.production_is_untouched(&["/src/theme.css", "/src/bg.gif", "/src/logo.gif"])
        .await;
    app.expect(
        &browser,
        "/?stamp=off",
        what,
        "rgb(1, 2, 3) | rgb(1, 2, 3) | 10",
    )
    .await;
    browser.close().await.unwrap();
}

/// Two files of the ticket with the same bytes (two empty stylesheets)
/// share a hash: the ticket's copy of one running must not vouch for the
/// other, whose production copy the browser kept and ran.
#[tokio::test]
async fn identical_files_are_told_apart_on_the_badge() {
    let origin = Origin::start().unwrap();
    origin.route(
        "/",
        Route::html(
            "<!doctype html><html><head><title>twins</title>\
             <link rel=stylesheet href=/src/a.css><link rel=stylesheet href=/src/main.css>\
             </head><body><p id=b>text</p></body></html>",
        ),
    );
    origin.route(
        "/src/a.css",
        Route::bytes("text/css", b"#a { color: red; }\n".to_vec()),
    );
    origin.route(
        "/src/main.css",
        Route::bytes("text/css", b"@import url(./b.css);\n".to_vec()),
    );
    origin.route(
        "/src/b.css",
        Route::bytes("text/css", b"#b { color: rgb(1, 2, 3); }\n".to_vec())
            .header("cache-control", "max-age=600"),
    );
    let app = App::start(origin, Origin::start().unwrap());
    let work = project("/src", "src", &[("a.css", "\n"), ("b.css", "\n")]);
    app.stamp(work.path(), &["TWIN-1", "--update", "--once"]);
    let color = "return getComputedStyle(document.getElementById('b')).color";
    let browser = Browser::start().await.unwrap();
    // Production first: the browser keeps its b.css, as production allows.
    app.expect(&browser, "/", color, "rgb(1, 2, 3)").await;
    app.expect(&browser, "/?dev=TWIN-1", color, "rgb(1, 2, 3)")
        .await;
    badge_says(&browser, "1 of 2 ran: production's /src/b.css ran instead").await;
    browser.close().await.unwrap();
}

/// Scripts and preloads an app inserts at runtime (a loader's
/// `appendChild(script)`, Vite's preload helper adding
/// `<link rel=modulepreload>`) never pass the proxy's rewrite: the probe
/// points each at the ticket's URL as it is inserted, as the rewrite does
/// for the page's own (a cache-busting query names the same file), so a
/// module inserted by URL and imported through the map is one instance,
/// the ticket's.
#[tokio::test]
async fn scripts_an_app_inserts_at_runtime_are_the_tickets() {
    let origin = Origin::start().unwrap();
    let js = Route::js;
    origin.route(
        "/",
        Route::html(
            "<!doctype html><html><head><title>inserted</title></head><body>\
             <p id=w>-</p><p id=m>-</p>\
             <script type=module src=/src/main.js></script></body></html>",
        ),
    );
    origin.route(
        "/src/main.js",
        js("const p = document.createElement('link');\n\
            p.rel = 'modulepreload'; p.href = '/src/mod.js';\n\
            document.head.appendChild(p);\n\
            const s = document.createElement('script');\n\
            s.src = '/src/widget.js?v=7';\n\
            document.head.appendChild(s);\n\
            const m = document.createElement('script');\n\
            m.type = 'module'; m.src = '/src/mod.js';\n\
            document.body.append(m);\n\
            await import('/src/mod.js');\n"),
    );
    origin.route(
        "/src/widget.js",
        js("document.getElementById('w').textContent = 'production widget';\n"),
    );
    origin.route(
        "/src/mod.js",
        js("import { word } from './word.js';\n\
            window.__runs = (window.__runs || 0) + 1;\n\
            document.getElementById('m').textContent = 'production module: ' + word;\n"),
    );
    origin.route(
        "/src/word.js",
        js("export const word = 'production word';\n"),
    );
    let app = App::start(origin, Origin::start().unwrap());
    let work = project(
        "/src",
        "src",
        &[
            (
                "widget.js",
                "document.getElementById('w').textContent = 'ticket widget';\n",
            ),
            (
                "mod.js",
                "import { word } from './word.js';\n\
                 window.__runs = (window.__runs || 0) + 1;\n\
                 document.getElementById('m').textContent = 'ticket module: ' + word;\n",
            ),
            ("word.js", "export const word = 'ticket word';\n"),
        ],
    );
    let what = "if (!window.__runs) return 'loading';\n\
        return [document.getElementById('w').textContent, document.getElementById('m').textContent, 'runs ' + window.__runs].join(' | ');";
    let browser = Browser::start().await.unwrap();
    app.expect(
        &browser,
        "/",
        what,
        "production widget | production module: production word | runs 1",
    )
    .await;
    app.stamp(work.path(), &["INS-1", "--update", "--once"]);
    app.expect(
        &browser,
        "/?dev=INS-1",
        what,
        "ticket widget | ticket module: ticket word | runs 1",
    )
    .await;
    badge_says(&browser, "3 of 3 modules ran").await;
    // Nothing of production's copies was fetched.
    let fetched = browser
        .execute(
            "return performance.getEntriesByType('resource').map((e) => new URL(e.name))\n\
             .filter((u) => u.pathname.startsWith('/src/') && !u.searchParams.has('__ts'))\n\
             .map((u) => u.pathname).join(' ');",
        )
        .await
        .unwrap();
    assert_eq!(fetched, "/src/main.js", "{fetched}");
    app.expect(
        &browser,
        "/?stamp=off",
        what,
        "production widget | production module: production word | runs 1",
    )
    .await;
    browser.close().await.unwrap();
}

// --------------------------------------------------------------- workers

/// What the worker tests' origins serve under `/src/`: the module a module
/// worker imports, and a classic worker with the file it imports.
fn worker_sources(origin: &Origin) {
    worker_sources_as(origin, |r| r);
}

/// [`worker_sources`], each answer made by `answer` from the plain one.
fn worker_sources_as(origin: &Origin, answer: impl Fn(Route) -> Route) {
    let js = |text: &str| answer(Route::js(text));
    origin.route(
        "/src/calc.js",
        js("export const calc = () => 'production calc';\n"),
    );
    origin.route(
        "/src/classic-worker.js",
        js("importScripts('./util.js');\npostMessage('classic worker: ' + util());\n"),
    );
    origin.route(
        "/src/util.js",
        js("function util() { return 'production util'; }\n"),
    );
}

/// The ticket's versions of [`worker_sources`]' two modules.
const WORKER_TICKET: [(&str, &str); 2] = [
    ("calc.js", "export const calc = () => 'ticket calc';\n"),
    ("util.js", "function util() { return 'ticket util'; }\n"),
];

/// Import maps do not reach workers: a module worker, a classic worker
/// (`importScripts`) and a module shared worker each import a file the
/// ticket changed, by its production URL. The ticket's browser gets the
/// ticket's files there (never cached), each tells the page it ran, and the
/// badge counts them as having run in a worker. Production stays production.
#[tokio::test]
async fn workers_run_the_tickets_code_and_say_so() {
    let origin = Origin::start().unwrap();
    let js = Route::js;
    origin.route(
        "/",
        Route::html(
            "<!doctype html><html><head><title>workers</title></head><body>\
             <p id=\"mw\">-</p><p id=\"cw\">-</p><p id=\"sw\">-</p>\
             <script type=\"module\" src=\"/src/main.js\"></script></body></html>",
        ),
    );
    origin.route(
        "/src/main.js",
        js("const w = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });\n\
            w.onmessage = (e) => { document.getElementById('mw').textContent = e.data; };\n\
            const c = new Worker(new URL('./classic-worker.js', import.meta.url));\n\
            c.onmessage = (e) => { document.getElementById('cw').textContent = e.data; };\n\
            const s = new SharedWorker(new URL('./shared.js', import.meta.url), { type: 'module' });\n\
            s.port.onmessage = (e) => { document.getElementById('sw').textContent = e.data; };\n\
            s.port.start();\n"),
    );
    origin.route(
        "/src/worker.js",
        js("import { calc } from './calc.js';\npostMessage('module worker: ' + calc());\n"),
    );
    worker_sources(&origin);
    origin.route(
        "/src/shared.js",
        js("import { word } from './shared-dep.js';\nonconnect = (e) => e.ports[0].postMessage('shared worker: ' + word);\n"),
    );
    origin.route(
        "/src/shared-dep.js",
        js("export const word = 'production word';\n"),
    );
    let app = App::start(origin, Origin::start().unwrap());
    let work = project(
        "/src",
        "src",
        &[
            WORKER_TICKET[0],
            WORKER_TICKET[1],
            ("shared-dep.js", "export const word = 'ticket word';\n"),
        ],
    );
    let browser = Browser::start().await.unwrap();
    let ids = ["mw", "cw", "sw"];
    let shown = |word: &str, util: &str, shared: &str| {
        format!("module worker: {word} calc | classic worker: {util} util | shared worker: {shared} word")
    };
    let production = shown("production", "production", "production");
    workers_show(&app, &browser, &ids, &production, || {
        app.stamp(work.path(), &["WRK-1", "--update", "--once"]);
    })
    .await;
    app.expect(
        &browser,
        "/?dev=WRK-1",
        &shown_by(&ids),
        &shown("ticket", "ticket", "ticket"),
    )
    .await;
    let text = badge_says(&browser, "3 of 3 modules ran").await;
    assert!(text.contains("(3 in a worker)"), "{text}");
    // What the workers got is no one else's: never cached, told apart;
    // with the reporter that says what a worker loads itself.
    let calc = the_browsers_own(&app, &browser, "/src/calc.js", "worker").await;
    assert!(calc.starts_with("export const calc = () => 'ticket calc';"));
    assert!(calc.contains("__ticketStampWatch"), "{calc}");
    // Without the selection, and for the page itself, production's files.
    app.production_is_untouched(&["/src/calc.js", "/src/util.js", "/src/shared-dep.js"])
        .await;
    app.expect(&browser, "/?stamp=off", &shown_by(&ids), &production)
        .await;
    browser.close().await.unwrap();
}

/// A script that returns what the elements `ids` show, joined by ` | `.
fn shown_by(ids: &[&str]) -> String {
    format!("return {ids:?}.map((id) => document.getElementById(id).textContent).join(' | ')")
}

/// The page `/` shows `production` in the elements `ids`, then `stamp`
/// makes the ticket.
async fn workers_show(
    app: &App,
    browser: &Browser,
    ids: &[&str],
    production: &str,
    stamp: impl FnOnce(),
) {
    app.expect(browser, "/", &shown_by(ids), production).await;
    stamp();
}

/// The same workers under `Referrer-Policy: no-referrer`, which helmet (the
/// usual Express hardening) sends on every response: a worker's
/// `importScripts` and `import()` then name no referrer, so nothing tells
/// them from the page's own scripts. On a ticket page both get the
/// ticket's file; production stays production.
#[tokio::test]
async fn workers_under_a_no_referrer_policy_run_the_tickets_code() {
    workers_under_a_referrer_policy_run_the_tickets_code("no-referrer", "WRK-3").await;
}

/// The same under `strict-origin` and `origin`, a hardened origin's other
/// choices: they send only the origin, even to the origin itself, so a
/// worker's imports would name no script. On a ticket a production
/// script's policy sends its full URL to its own origin (measured before:
/// both workers ran production's code, and the badge said none of the
/// ticket's modules was used).
#[tokio::test]
async fn workers_under_an_origin_only_policy_run_the_tickets_code() {
    workers_under_a_referrer_policy_run_the_tickets_code("strict-origin", "WRK-4").await;
    workers_under_a_referrer_policy_run_the_tickets_code("origin", "WRK-5").await;
}

async fn workers_under_a_referrer_policy_run_the_tickets_code(policy: &str, key: &str) {
    let origin = Origin::start().unwrap();
    let none = |r: Route| r.header("referrer-policy", policy);
    let js = |t: &str| none(Route::js(t));
    origin.route(
        "/",
        none(Route::html(
            "<!doctype html><html><head><title>workers</title></head><body>\
             <p id=\"mw\">-</p><p id=\"cw\">-</p>\
             <script type=\"module\" src=\"/src/main.js\"></script></body></html>",
        )),
    );
    origin.route(
        "/src/main.js",
        js(
            "const w = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });\n\
            w.onmessage = (e) => { document.getElementById('mw').textContent = e.data; };\n\
            const c = new Worker(new URL('./classic-worker.js', import.meta.url));\n\
            c.onmessage = (e) => { document.getElementById('cw').textContent = e.data; };\n",
        ),
    );
    // The module worker reaches the ticket's file through a production
    // module of its own, whose policy governs that module's imports.
    origin.route(
        "/src/worker.js",
        js("const { calc } = await import('./lazy.js');\npostMessage('module worker: ' + calc());\n"),
    );
    origin.route("/src/lazy.js", js("export { calc } from './calc.js';\n"));
    worker_sources_as(&origin, none);
    let app = App::start(origin, Origin::start().unwrap());
    let work = project("/src", "src", &WORKER_TICKET);
    let browser = Browser::start().await.unwrap();
    let ids = ["mw", "cw"];
    let production = "module worker: production calc | classic worker: production util";
    workers_show(&app, &browser, &ids, production, || {
        app.stamp(work.path(), &[key, "--update", "--once"]);
    })
    .await;
    let ticket = "module worker: ticket calc | classic worker: ticket util";
    app.expect(&browser, &format!("/?dev={key}"), &shown_by(&ids), ticket)
        .await;
    let text = badge_says(&browser, "2 of 2 modules ran").await;
    assert!(text.contains("(2 in a worker)"), "{text}");
    app.production_is_untouched(&["/src/calc.js", "/src/util.js"])
        .await;
    app.expect(&browser, "/?stamp=off", &shown_by(&ids), production)
        .await;
    browser.close().await.unwrap();
}

/// A ticket page's own request for a file the ticket replaces stays
/// production's (here a `<link rel=preload as=script>` in its HTML, as a
/// framework adds one, which the proxy leaves as it is). On a ticket it is
/// never kept: kept (production lets browsers keep the file a year), it
/// would answer the worker's `importScripts` of the same URL, which gets
/// the ticket's, from the browser's cache, and production's code would run
/// in the worker.
#[tokio::test]
async fn production_a_ticket_page_preloads_never_answers_its_workers() {
    let origin = Origin::start().unwrap();
    origin.route(
        "/",
        Route::html(
            "<!doctype html><html><head><title>preload</title>\
             <link rel=\"preload\" as=\"script\" href=\"/src/util.js\"></head>\
             <body><p id=\"cw\">-</p>\
             <script type=\"module\">\
             const l = document.querySelector('link[rel=preload]');\
             if (!performance.getEntriesByName(l.href).length) {\
               await new Promise((done) => l.addEventListener('load', done));\
             }\
             const c = new Worker('/src/classic-worker.js');\
             c.onmessage = (e) => { document.getElementById('cw').textContent = e.data; };\
             </script></body></html>",
        ),
    );
    worker_sources_as(&origin, |r| {
        r.header("cache-control", "public, max-age=31536000, immutable")
    });
    let app = App::start(origin, Origin::start().unwrap());
    let work = project("/src", "src", &WORKER_TICKET);
    app.stamp(work.path(), &["WRK-9", "--update", "--once"]);
    let browser = Browser::start().await.unwrap();
    app.expect(
        &browser,
        "/?dev=WRK-9",
        &shown_by(&["cw"]),
        "classic worker: ticket util",
    )
    .await;
    // The preload loaded production's copy, which ran nothing by itself.
    badge_says(&browser, "1 of 1 module ran (1 in a worker)").await;
    browser.close().await.unwrap();
}

/// A worker tells the page it ran a module over a `BroadcastChannel`,
/// which every tab of the origin hears. Two tabs on one ticket: the one
/// whose page starts no worker must not count what the other's workers ran
/// (its badge, and its report, would say the ticket's code ran there),
/// whether the worker carries the page's mark (a URL without a fragment) or
/// is known by its URL (the app gave it a fragment).
#[tokio::test]
async fn a_workers_report_reaches_only_the_page_that_started_it() {
    let origin = Origin::start().unwrap();
    let js = Route::js;
    origin.route(
        "/",
        Route::html(
            "<!doctype html><html><head><title>workers</title></head><body>\
             <p id=\"mw\">-</p><p id=\"cw\">-</p>\
             <script type=\"module\" src=\"/src/main.js\"></script></body></html>",
        ),
    );
    origin.route(
        "/quiet",
        Route::html(
            "<!doctype html><html><head><title>quiet</title></head><body><p>no worker here</p></body></html>",
        ),
    );
    origin.route(
        "/src/main.js",
        js("const w = new Worker(new URL('./worker.js#w', import.meta.url), { type: 'module', name: 'calc' });\n\
            w.onmessage = (e) => { document.getElementById('mw').textContent = e.data; };\n\
            const c = new Worker('/src/classic-worker.js');\n\
            c.onmessage = (e) => { document.getElementById('cw').textContent = e.data; };\n"),
    );
    origin.route(
        "/src/worker.js",
        js("import { calc } from './calc.js';\npostMessage('module worker: ' + calc() + ' ' + self.name + ' ' + self.location.hash.slice(0, 16));\n"),
    );
    worker_sources(&origin);
    let app = App::start(origin, Origin::start().unwrap());
    let work = project("/src", "src", &WORKER_TICKET);
    app.stamp(work.path(), &["WRK-2", "--update", "--once"]);
    let browser = Browser::start().await.unwrap();
    browser
        .goto(&app.proxy.url("/quiet?dev=WRK-2"))
        .await
        .unwrap();
    let idle = badge_says(&browser, "nothing applied").await;
    let client = browser.client().unwrap();
    let quiet = client.window().await.unwrap();
    let tab = client.new_window(true).await.unwrap();
    client.switch_to_window(tab.handle).await.unwrap();
    let all = "return ['mw','cw'].map((id) => document.getElementById(id).textContent).join(' | ')";
    // A worker keeps the name and the fragment the app gave it: that one is
    // told apart by its URL, the classic one by the page's mark.
    app.expect(
        &browser,
        "/?dev=WRK-2",
        all,
        "module worker: ticket calc calc #w | classic worker: ticket util",
    )
    .await;
    badge_says(&browser, "2 of 2 modules ran (2 in a worker)").await;
    client.switch_to_window(quiet).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let text = badge(&browser).await;
    assert_eq!(text, idle, "the quiet tab counted the other tab's workers");
    browser.close().await.unwrap();
}

/// What a worker loads itself (`importScripts`, `import()`) is in its own
/// Resource Timing, which the page never sees: a module worker, a classic
/// worker and a shared worker that load production's copy of the ticket's
/// CDN modules by their full URL (no map reaches a worker, and the CDN's
/// copy never passes the proxy) run production's code, and the badge says
/// so, by the reporter the proxy puts after a worker's script on a ticket.
/// (A dedicated worker's static import is in the page's own timeline: it
/// was named before.) Production's worker scripts stay byte for byte.
#[tokio::test]
async fn what_a_worker_loads_itself_from_production_is_named() {
    let cdn = Origin::start().unwrap();
    let origin = Origin::start().unwrap();
    let js = Route::js;
    let lib = format!("{}/lib", cdn.url);
    for (name, text) in [
        ("fmt.js", "export const fmt = () => 'production fmt';\n"),
        ("static.js", "export const s = 'production static';\n"),
        ("word.js", "export const word = 'production word';\n"),
        ("legacy.js", "self.legacy = () => 'production legacy';\n"),
    ] {
        serve(&cdn, &format!("/lib/{name}"), "text/javascript", text);
    }
    origin.route(
        "/",
        Route::html(&format!(
            "<!doctype html><html><head><title>workers</title>\
             <script type=\"importmap\">{{\"imports\":{{\"@lib/fmt\":\"{lib}/fmt.js\"}}}}</script></head><body>\
             <p id=\"mw\">-</p><p id=\"cw\">-</p><p id=\"sw\">-</p>\
             <script type=\"module\" src=\"/src/main.js\"></script></body></html>"
        )),
    );
    origin.route(
        "/src/main.js",
        js(
            "const w = new Worker('/src/worker.js', { type: 'module' });\n\
            w.onmessage = (e) => { document.getElementById('mw').textContent = e.data; };\n\
            const c = new Worker('/src/classic.js');\n\
            c.onmessage = (e) => { document.getElementById('cw').textContent = e.data; };\n\
            const s = new SharedWorker('/src/shared.js', { type: 'module' });\n\
            s.port.onmessage = (e) => { document.getElementById('sw').textContent = e.data; };\n\
            s.port.start();\n",
        ),
    );
    origin.route(
        "/src/worker.js",
        js(&format!(
            "import {{ s }} from '{lib}/static.js';\n\
             const {{ fmt }} = await import('{lib}/fmt.js');\n\
             postMessage('module worker: ' + fmt() + ', ' + s);\n\
             //# sourceMappingURL=worker.js.map\n"
        )),
    );
    origin.route(
        "/src/classic.js",
        js(&format!(
            "importScripts('{lib}/legacy.js');\npostMessage('classic worker: ' + legacy());"
        )),
    );
    origin.route(
        "/src/shared.js",
        js(&format!(
            "const got = import('{lib}/word.js');\n\
             onconnect = async (e) => e.ports[0].postMessage('shared worker: ' + (await got).word);\n"
        )),
    );
    let app = App::start(origin, cdn);
    let work = project(
        &lib,
        "lib",
        &[
            ("fmt.js", "export const fmt = () => 'ticket fmt';\n"),
            ("static.js", "export const s = 'ticket static';\n"),
            ("word.js", "export const word = 'ticket word';\n"),
            ("legacy.js", "self.legacy = () => 'ticket legacy';\n"),
        ],
    );
    app.stamp(work.path(), &["WRK-9", "--update", "--once"]);
    let browser = Browser::start().await.unwrap();
    // What the workers ran: production's, each loaded from the CDN.
    app.expect(
        &browser,
        "/?dev=WRK-9",
        &shown_by(&["mw", "cw", "sw"]),
        "module worker: production fmt, production static | classic worker: production legacy | shared worker: production word",
    )
    .await;
    let text = badge_says(&browser, "word.js").await;
    for name in ["fmt.js", "static.js", "word.js", "legacy.js"] {
        assert!(text.contains(&format!("{lib}/{name}")), "{name}: {text}");
    }
    assert!(text.contains("0 of 4 ran: production's "), "{text}");
    assert!(text.contains("ran instead"), "{text}");
    assert_eq!(badge_class(&browser).await, "warn");
    // The worker's script as the ticket's browser got it: the origin's,
    // then the reporter; never kept. Production's, byte for byte.
    let cookie = browser.cookie("ticket_stamp").await.unwrap().unwrap();
    let direct = client()
        .get(format!("{}/src/worker.js", app.origin.url))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    for (cookie, dest) in [
        (None, "worker"),
        (Some(&cookie), "script"),
        (Some(&cookie), "serviceworker"),
    ] {
        let mut req = client()
            .get(app.proxy.url("/src/worker.js"))
            .header("sec-fetch-dest", dest);
        if let Some(c) = cookie {
            req = req.header("cookie", format!("ticket_stamp={c}"));
        }
        let got = req.send().await.unwrap().bytes().await.unwrap();
        assert!(
            got == direct,
            "{dest}, cookie {cookie:?}: not production's bytes"
        );
    }
    let r = client()
        .get(app.proxy.url("/src/worker.js"))
        .header("sec-fetch-dest", "worker")
        .header("cookie", format!("ticket_stamp={cookie}"))
        .send()
        .await
        .unwrap();
    // Kept by no cache, a service worker's Cache API included.
    assert_eq!(r.headers()["cache-control"], "private, no-store");
    assert_eq!(r.headers()["vary"], "*");
    assert!(r.headers().get("etag").is_none());
    let got = r.bytes().await.unwrap();
    assert!(got.starts_with(&direct), "the origin's script comes first");
    assert!(
        String::from_utf8_lossy(&got[direct.len()..]).contains("__ticketStampWatch"),
        "no reporter after the script"
    );
    browser.close().await.unwrap();
}

/// Import maps do not reach worklets either, and a worklet cannot tell the
/// page what ran: an AudioWorklet whose processor imports a file the ticket
/// changed gets the ticket's file on the ticket (never cached), production's
/// elsewhere, and the badge says what it cannot see rather than "none used".
#[tokio::test]
async fn worklets_run_the_tickets_code() {
    let origin = Origin::start().unwrap();
    let js = Route::js;
    origin.route(
        "/",
        Route::html(
            "<!doctype html><html><head><title>worklet</title></head><body>\
             <p id=\"out\">-</p>\
             <script type=\"module\" src=\"/src/main.js\"></script></body></html>",
        ),
    );
    origin.route(
        "/src/main.js",
        js("const ctx = new OfflineAudioContext(1, 128, 8000);\n\
            await ctx.audioWorklet.addModule(new URL('./processor.js', import.meta.url));\n\
            const node = new AudioWorkletNode(ctx, 'tone');\n\
            node.port.onmessage = (e) => { document.getElementById('out').textContent = e.data; };\n"),
    );
    origin.route(
        "/src/processor.js",
        js("import { tone } from './tone.js';\n\
            registerProcessor('tone', class extends AudioWorkletProcessor {\n\
              constructor() { super(); this.port.postMessage('worklet: ' + tone); }\n\
              process() { return false; }\n\
            });\n"),
    );
    origin.route(
        "/src/tone.js",
        js("export const tone = 'production tone';\n"),
    );
    let app = App::start(origin, Origin::start().unwrap());
    let work = project(
        "/src",
        "src",
        &[("tone.js", "export const tone = 'ticket tone';\n")],
    );
    let browser = Browser::start().await.unwrap();
    let out = "return document.getElementById('out').textContent";
    app.expect(&browser, "/", out, "worklet: production tone")
        .await;
    app.stamp(work.path(), &["WKL-1", "--update", "--once"]);
    app.expect(&browser, "/?dev=WKL-1", out, "worklet: ticket tone")
        .await;
    // The badge cannot see into the worklet, and says so.
    let text = badge_says(
        &browser,
        "not seen: what worklet /src/processor.js ran (worklets cannot report)",
    )
    .await;
    assert!(text.contains("none of its 1 module seen running"), "{text}");
    // Once the page settled (when loaded modules that said nothing are
    // called "did not run"), still nothing claimed: the worklet may run it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let text = badge(&browser).await;
    assert!(
        text.contains("not seen: what worklet /src/processor.js ran")
            && !text.contains("did not run"),
        "{text}"
    );
    // The panel's record says the same.
    let v = views(&app, "WKL-1", 1).await;
    assert_eq!(v[0]["worklets"][0], "/src/processor.js", "{v:?}");
    assert!(v[0]["not_run"].as_array().unwrap().is_empty(), "{v:?}");
    // What the worklet got is no one else's: never cached, told apart.
    for dest in ["audioworklet", "paintworklet"] {
        assert!(the_browsers_own(&app, &browser, "/src/tone.js", dest)
            .await
            .starts_with("export const tone = 'ticket tone';"));
    }
    app.production_is_untouched(&["/src/tone.js"]).await;
    app.expect(&browser, "/?stamp=off", out, "worklet: production tone")
        .await;
    browser.close().await.unwrap();
}

// ----------------------------------------------------------------- badge

/// The badge survives what apps do to their body: a page minified the way
/// html-webpack-plugin writes it (`<p id=lazy>loading</body>`, no `</p>`)
/// whose app sets `textContent` on that paragraph, and Turbo 8 visits, which
/// swap the body for one parsed by DOMParser (where declarative shadow DOM
/// stays an inert template). It lives outside `<body>`, drawn by the probe.
#[tokio::test]
async fn the_badge_survives_unclosed_elements_and_turbo_visits() {
    let origin = Origin::start().unwrap();
    serve_npm(
        &origin,
        "/lib/turbo.js",
        "@hotwired/turbo/dist/turbo.es2017-esm.js",
    );
    origin.route(
        "/",
        Route::html(
            "<!doctype html><html><head><meta charset=utf-8><title>shop</title>\
             <script type=importmap>{\"imports\":{\"@hotwired/turbo\":\"/lib/turbo.js\",\"@app/greet\":\"/src/greet.js\"}}</script>\
             <script type=module>import '@hotwired/turbo';</script>\
             <script type=module>import { greet } from '@app/greet'; document.getElementById('lazy').textContent = greet();</script>\
             </head><body><a id=next href=/page2>next</a><p id=lazy>loading</body></html>",
        ),
    );
    origin.route(
        "/page2",
        Route::html(
            "<!doctype html><html><head><meta charset=utf-8><title>page 2</title>\
             <script type=importmap>{\"imports\":{\"@hotwired/turbo\":\"/lib/turbo.js\",\"@app/greet\":\"/src/greet.js\"}}</script>\
             <script type=module>import '@hotwired/turbo';</script>\
             </head><body><p id=two>page two</p>\
             <script type=module>import { greet } from '@app/greet'; document.getElementById('two').textContent = 'two: ' + greet();</script>\
             </body></html>",
        ),
    );
    let (app, _work) = greeting_app(origin, "TUR-1");
    let browser = Browser::start().await.unwrap();
    app.expect(
        &browser,
        "/?dev=TUR-1",
        "return document.getElementById('lazy')?.textContent ?? ''",
        "ticket greeting",
    )
    .await;
    let text = badge_says(&browser, "1 of 1 module ran").await;
    assert!(text.contains("TUR-1"), "{text}");
    // A Turbo visit: the body is swapped, the badge stays, and says the same.
    browser
        .execute("window.__sameDocument = 1; return true")
        .await
        .unwrap();
    browser.click("#next").await.unwrap();
    browser
        .wait_for_text("#two", "two: ticket greeting", Duration::from_secs(15))
        .await
        .unwrap();
    let same = browser
        .execute("return window.__sameDocument === 1 && location.pathname === '/page2'")
        .await
        .unwrap();
    assert_eq!(same, true, "a Turbo visit, not a page load");
    let text = badge_says(&browser, "1 of 1 module ran").await;
    assert!(text.contains("TUR-1"), "{text}");
    browser.close().await.unwrap();
}

/// Turbo's answers to its own fetches so far (their status codes).
async fn turbo_answers(browser: &Browser) -> Vec<Value> {
    let v = browser
        .execute("return window.__answers ?? []")
        .await
        .unwrap();
    v.as_array().cloned().unwrap_or_default()
}

/// Clicks `link` on a page marked as this document, and waits until `#out`
/// shows `shows` in a new document (a page load, not a swap in place) at a
/// URL ending in `at`.
async fn clicked_loads_as_a_page(browser: &Browser, link: &str, shows: &str, at: &str) {
    browser
        .execute("window.__sameDocument = 1; return true")
        .await
        .unwrap();
    browser.click(link).await.unwrap();
    browser
        .wait_for_text("#out", shows, Duration::from_secs(15))
        .await
        .unwrap();
    let same = browser
        .execute("return window.__sameDocument === 1")
        .await
        .unwrap();
    assert_eq!(same, false, "{link}: a page load, not a swap in place");
    let url = browser.current_url().await.unwrap();
    assert!(url.ends_with(at), "{link}: at {url}");
}

/// A ticket link on a page of a Turbo 8 app. Turbo fetches a link the mouse
/// rests on (`X-Sec-Purpose: prefetch`), and a click shows that answer, or
/// one it fetches then, in the page it is on, whose modules and map stay:
/// measured before this, the hover put the browser on the ticket, and the
/// click showed production's code with the badge saying so. Now the hover
/// selects nothing, and a link that changes the ticket (to it, away with
/// `?stamp=off`, or in a frame) is answered so that Turbo loads it as a
/// page: the ticket's code runs, and leaving leaves.
#[tokio::test]
async fn a_ticket_link_in_a_turbo_app_loads_as_a_page_once_clicked() {
    let origin = Origin::start().unwrap();
    serve_npm(
        &origin,
        "/lib/turbo.js",
        "@hotwired/turbo/dist/turbo.es2017-esm.js",
    );
    let head = "<!doctype html><html><head><meta charset=utf-8><title>shop</title>\
         <script type=importmap>{\"imports\":{\"@hotwired/turbo\":\"/lib/turbo.js\",\"@app/greet\":\"/src/greet.js\"}}</script>\
         <script type=module>import '@hotwired/turbo'; window.__answers = []; \
         document.addEventListener('turbo:before-fetch-response', e => window.__answers.push(e.detail.fetchResponse.statusCode));</script>\
         <script type=module>import { greet } from '@app/greet'; document.getElementById('out').textContent = greet();</script></head>";
    let body = "<body><a id=go href=\"/next?dev=TUR-2\">the ticket</a> \
         <a id=off href=\"/next?stamp=off\">production</a><p id=out>loading</p>\
         <turbo-frame id=cart><a id=framed href=\"/next?dev=TUR-2\">in a frame</a></turbo-frame>\
         <a id=preloaded data-turbo-preload href=\"/next?dev=TUR-2&amp;from=preload\">preloaded</a></body></html>";
    origin.route("/", Route::html(&format!("{head}{body}")));
    origin.route("/next", Route::html(&format!("{head}{body}")));
    let (app, _work) = greeting_app(origin, "TUR-2");
    let browser = Browser::start().await.unwrap();
    let out = "return document.getElementById('out')?.textContent ?? ''";
    let same = "return window.__sameDocument === 1";
    app.expect(&browser, "/", out, "production greeting").await;

    // The mouse rests on the link: Turbo fetches it, and nothing changes.
    browser
        .execute("window.__sameDocument = 1; return true")
        .await
        .unwrap();
    browser.hover("#go").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while turbo_answers(&browser).await.is_empty() {
        assert!(Instant::now() < deadline, "Turbo fetched nothing ahead");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(turbo_answers(&browser).await, [Value::from(200)]);
    assert_eq!(browser.cookie("ticket_stamp").await.unwrap(), None);
    assert_eq!(browser.execute(out).await.unwrap(), "production greeting");

    // Clicked: loaded as a page, on the ticket, its code run.
    clicked_loads_as_a_page(&browser, "#go", "ticket greeting", "/next?dev=TUR-2").await;
    let text = badge_says(&browser, "1 of 1 module ran").await;
    assert!(text.contains("TUR-2"), "{text}");

    // Leaving by a link Turbo follows leaves: production's code runs.
    clicked_loads_as_a_page(&browser, "#off", "production greeting", "/next?stamp=off").await;
    assert_eq!(browser.cookie("ticket_stamp").await.unwrap(), None);

    // Followed without a hover (a keyboard's Enter, a script's click),
    // Turbo's own visit gets the same answer.
    browser
        .execute("window.__sameDocument = 1; document.getElementById('go').click(); return true")
        .await
        .unwrap();
    browser
        .wait_for_text("#out", "ticket greeting", Duration::from_secs(15))
        .await
        .unwrap();
    assert_eq!(browser.execute(same).await.unwrap(), false, "a page load");
    badge_says(&browser, "1 of 1 module ran").await;
    assert!(browser.cookie("ticket_stamp").await.unwrap().is_some());

    // A ticket link in a Turbo frame: a whole page, on the ticket.
    app.expect(&browser, "/?stamp=off", out, "production greeting")
        .await;
    clicked_loads_as_a_page(&browser, "#framed", "ticket greeting", "/next?dev=TUR-2").await;
    badge_says(&browser, "1 of 1 module ran").await;

    // `data-turbo-preload`: fetched when the page loads, kept as a snapshot
    // Turbo shows on the click; the click loads the link as a page.
    app.expect(&browser, "/?stamp=off", out, "production greeting")
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while turbo_answers(&browser).await.is_empty() {
        assert!(Instant::now() < deadline, "Turbo preloaded nothing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(turbo_answers(&browser).await, [Value::from(200)]);
    assert_eq!(browser.cookie("ticket_stamp").await.unwrap(), None);
    clicked_loads_as_a_page(
        &browser,
        "#preloaded",
        "ticket greeting",
        "/next?dev=TUR-2&from=preload",
    )
    .await;
    badge_says(&browser, "1 of 1 module ran").await;
    browser.close().await.unwrap();
}

/// The same for htmx: a boosted ticket link, preloaded by htmx's preload
/// extension when the mouse rests on it (`HX-Preloaded: true`), selects
/// nothing until clicked; clicked, htmx is told to load it as a page
/// (`HX-Redirect`), and the ticket's code runs.
#[tokio::test]
async fn a_boosted_ticket_link_in_an_htmx_app_loads_as_a_page_once_clicked() {
    let origin = Origin::start().unwrap();
    serve_npm(&origin, "/lib/htmx.js", "htmx.org/dist/htmx.min.js");
    serve_npm(&origin, "/lib/preload.js", "htmx-ext-preload/preload.js");
    let page = "<!doctype html><html><head><meta charset=utf-8><title>shop</title>\
         <script src=/lib/htmx.js></script><script src=/lib/preload.js></script>\
         <script type=importmap>{\"imports\":{\"@app/greet\":\"/src/greet.js\"}}</script>\
         <script type=module>import { greet } from '@app/greet'; \
         document.getElementById('out').textContent = greet();</script></head>\
         <body hx-boost=true hx-ext=preload><a id=go href=\"/next?dev=HX-2\" preload=mouseover>the ticket</a>\
         <p id=out>loading</p></body></html>";
    origin.route("/", Route::html(page));
    origin.route("/next", Route::html(page));
    let (app, _work) = greeting_app(origin, "HX-2");
    let browser = Browser::start().await.unwrap();
    let out = "return document.getElementById('out')?.textContent ?? ''";
    app.expect(&browser, "/", out, "production greeting").await;
    browser
        .execute("window.__sameDocument = 1; return true")
        .await
        .unwrap();
    browser.hover("#go").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while browser
        .execute("return document.getElementById('go').preloadState")
        .await
        .unwrap()
        != "DONE"
    {
        assert!(Instant::now() < deadline, "htmx preloaded nothing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(browser.cookie("ticket_stamp").await.unwrap(), None);
    clicked_loads_as_a_page(&browser, "#go", "ticket greeting", "/next?dev=HX-2").await;
    let text = badge_says(&browser, "1 of 1 module ran").await;
    assert!(text.contains("HX-2"), "{text}");
    browser.close().await.unwrap();
}

/// A comment on the app (user content, or a page of a sibling subdomain)
/// that embeds the app's URLs with a ticket in them, an image, a
/// stylesheet, a video's poster, never puts its reader on that ticket:
/// only a page opened (or the app's own fetch) does. Before, the image
/// alone selected the ticket for every later page (Chromium keeps the
/// cookie of a same-origin image's answer), with no question and no
/// click.
#[tokio::test]
async fn a_ticket_url_embedded_in_a_page_selects_nothing() {
    let origin = Origin::start().unwrap();
    origin.route(
        "/",
        Route::html(
            "<!doctype html><html><head><title>app</title></head><body>\
             <p id=\"out\">-</p><script type=\"module\" src=\"/src/main.js\"></script></body></html>",
        ),
    );
    origin.route(
        "/src/main.js",
        Route::js("document.getElementById('out').textContent = 'production main';\n"),
    );
    origin.route(
        "/logo.png",
        Route::bytes("image/png", b"\x89PNG\r\n\x1a\n".to_vec()),
    );
    origin.route("/s.css", Route::bytes("text/css", b"p{}".to_vec()));
    origin.route(
        "/comment",
        Route::html(
            "<!doctype html><html><head><title>comment</title>\
             <link rel=stylesheet href=\"/s.css?dev=EMB-1\"></head><body>\
             <p>Looks good: <img id=i src=\"/logo.png?dev=EMB-1\"></p>\
             <video poster=\"/logo.png?qa=EMB-1\"></video>\
             </body></html>",
        ),
    );
    let app = App::start(origin, Origin::start().unwrap());
    let work = project(
        "/src",
        "src",
        &[(
            "main.js",
            "document.getElementById('out').textContent = 'ticket main';\n",
        )],
    );
    app.stamp(work.path(), &["EMB-1", "--update", "--once"]);
    let browser = Browser::start().await.unwrap();
    browser.goto(&app.proxy.url("/comment")).await.unwrap();
    // Everything the comment embeds loaded (Chromium stores a cookie such
    // answers set), and nothing selected the ticket.
    let deadline = Instant::now() + Duration::from_secs(10);
    let loaded = "return document.getElementById('i').complete && \
                  performance.getEntriesByType('resource').length >= 3";
    while browser.execute(loaded).await.unwrap() != true {
        assert!(Instant::now() < deadline, "the comment never loaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(browser.cookie("ticket_stamp").await.unwrap(), None);
    app.expect(
        &browser,
        "/",
        "return document.getElementById('out').textContent",
        "production main",
    )
    .await;
    // A link to the ticket, followed, selects it.
    app.expect(
        &browser,
        "/?dev=EMB-1",
        "return document.getElementById('out').textContent",
        "ticket main",
    )
    .await;
    assert!(browser.cookie("ticket_stamp").await.unwrap().is_some());
    browser.close().await.unwrap();
}

/// A page Turbo or htmx shows in place keeps the document's modules, so it
/// is shown in place only in a document of the same ticket. The ticket
/// page's probe tells each fetch which ticket its document runs; a page of
/// production (the visitor left the ticket in another tab, or its cookie
/// went stale as the ticket moved on) or of a ticket another tab opened
/// loads as a page. Before this, after the ticket went back to dev, a link
/// showed production's page, with its notice saying "this is production",
/// in a document that went on running the ticket's qa code.
#[tokio::test]
async fn a_page_shown_in_place_is_of_the_documents_ticket_or_loads_as_a_page() {
    let origin = Origin::start().unwrap();
    serve_npm(
        &origin,
        "/lib/turbo.js",
        "@hotwired/turbo/dist/turbo.es2017-esm.js",
    );
    serve_npm(&origin, "/lib/htmx.js", "htmx.org/dist/htmx.min.js");
    for (lib, libraries, body) in [
        (
            "turbo",
            "<script type=module>import '@hotwired/turbo';</script>",
            "<body>",
        ),
        (
            "htmx",
            "<script src=/lib/htmx.js></script>",
            "<body hx-boost=true>",
        ),
    ] {
        let page = format!(
            "<!doctype html><html><head><meta charset=utf-8><title>shop</title>\
             <script type=importmap>{{\"imports\":{{\"@hotwired/turbo\":\"/lib/turbo.js\",\"@app/greet\":\"/src/greet.js\"}}}}</script>\
             {libraries}<script type=module>import {{ greet }} from '@app/greet'; \
             document.getElementById('out').textContent = greet();</script></head>\
             {body}<a id=within href=\"/{lib}/next\">next</a> <a id=back href=\"/{lib}\">back</a>\
             <p id=out>loading</p></body></html>"
        );
        origin.route(&format!("/{lib}"), Route::html(&page));
        origin.route(&format!("/{lib}/next"), Route::html(&page));
    }
    let (app, work) = greeting_app(origin, "DOC-1");
    app.stamp(work.path(), &["DOC-1", "--promote"]);
    let out = "return document.getElementById('out')?.textContent ?? ''";
    let mut on_the_ticket = Vec::new();
    for lib in ["turbo", "htmx"] {
        let browser = Browser::start().await.unwrap();
        app.expect(
            &browser,
            &format!("/{lib}?qa=DOC-1"),
            out,
            "ticket greeting",
        )
        .await;
        badge_says(&browser, "1 of 1 module ran").await;

        // Within the ticket: shown in place, as the app wants.
        browser
            .execute("window.__sameDocument = 1; return true")
            .await
            .unwrap();
        browser.click("#within").await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        while !browser
            .current_url()
            .await
            .unwrap()
            .ends_with(&format!("/{lib}/next"))
        {
            assert!(
                Instant::now() < deadline,
                "{lib}: the link was not followed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            browser
                .execute("return window.__sameDocument === 1")
                .await
                .unwrap(),
            true,
            "{lib}: within the ticket, shown in place"
        );
        let seen = app.origin.last_headers(&format!("/{lib}/next")).unwrap();
        assert!(
            !seen.contains_key("x-ticket-stamp-document"),
            "{lib}: the origin never sees it"
        );

        // Left in another tab: the next link loads production as a page.
        browser.clear_cookies().await.unwrap();
        clicked_loads_as_a_page(&browser, "#back", "production greeting", &format!("/{lib}")).await;

        // Another tab opened the ticket: production's document loads it.
        let client = browser.client().unwrap();
        let here = client.window().await.unwrap();
        let tab = client.new_window(true).await.unwrap();
        client.switch_to_window(tab.handle).await.unwrap();
        app.expect(
            &browser,
            &format!("/{lib}?qa=DOC-1"),
            out,
            "ticket greeting",
        )
        .await;
        client.close_window().await.unwrap();
        client.switch_to_window(here).await.unwrap();
        clicked_loads_as_a_page(
            &browser,
            "#within",
            "ticket greeting",
            &format!("/{lib}/next"),
        )
        .await;
        badge_says(&browser, "1 of 1 module ran").await;
        on_the_ticket.push((lib, browser));
    }

    // The ticket goes back to dev: the qa cookie is stale, and the next
    // link loads production (and its notice) as a page.
    app.stamp(work.path(), &["DOC-1", "--revert"]);
    for (lib, browser) in on_the_ticket {
        clicked_loads_as_a_page(&browser, "#back", "production greeting", &format!("/{lib}")).await;
        browser.close().await.unwrap();
    }
}

/// The same for jquery-pjax and Swup: a ticket link either library follows
/// in place (`X-PJAX`, `X-Requested-With: swup`) gets a `503` in plain text,
/// which pjax loads as a page on failure and Swup when none of its
/// containers is in the answer: the ticket's code runs.
#[tokio::test]
async fn a_ticket_link_pjax_or_swup_follows_loads_as_a_page() {
    let origin = Origin::start().unwrap();
    serve_npm(&origin, "/lib/jquery.js", "jquery/dist/jquery.min.js");
    serve_npm(&origin, "/lib/pjax.js", "jquery-pjax/jquery.pjax.js");
    serve_npm(&origin, "/lib/swup.js", "swup/dist/Swup.umd.js");
    let head = "<!doctype html><html><head><meta charset=utf-8><title>shop</title>\
         <script type=importmap>{\"imports\":{\"@app/greet\":\"/src/greet.js\"}}</script>\
         <script type=module>import { greet } from '@app/greet'; document.getElementById('out').textContent = greet();</script>";
    for (page, libraries, container, start) in [
        (
            "pjax",
            "<script src=/lib/jquery.js></script><script src=/lib/pjax.js></script>",
            "div id=pjax-container",
            "$(document).pjax('a', '#pjax-container'); \
             $(document).on('pjax:send', () => sessionStorage.setItem('followed', 'pjax'))",
        ),
        (
            "swup",
            "<script src=/lib/swup.js></script>",
            "main id=swup",
            "new Swup().hooks.on('visit:start', () => sessionStorage.setItem('followed', 'swup'))",
        ),
    ] {
        let tag = container.split(' ').next().unwrap();
        let html = format!(
            "{head}{libraries}</head><body><{container}><a id=go href=\"/{page}/next?dev=INPL-1\">the ticket</a>\
             <p id=out>loading</p></{tag}><script>{start}</script></body></html>"
        );
        origin.route(&format!("/{page}"), Route::html(&html));
        origin.route(&format!("/{page}/next"), Route::html(&html));
    }
    let (app, _work) = greeting_app(origin, "INPL-1");
    let browser = Browser::start().await.unwrap();
    let out = "return document.getElementById('out')?.textContent ?? ''";
    for page in ["/pjax", "/swup"] {
        app.expect(
            &browser,
            &format!("{page}?stamp=off"),
            out,
            "production greeting",
        )
        .await;
        clicked_loads_as_a_page(
            &browser,
            "#go",
            "ticket greeting",
            &format!("{page}/next?dev=INPL-1"),
        )
        .await;
        let text = badge_says(&browser, "1 of 1 module ran").await;
        assert!(text.contains("INPL-1"), "{page}: {text}");
        // The library followed the link first (and was answered so).
        let followed = browser
            .execute("return sessionStorage.getItem('followed')")
            .await
            .unwrap();
        assert_eq!(followed, page.trim_start_matches('/'), "{page}");
    }
    browser.close().await.unwrap();
}

/// The badge survives htmx's boosted navigation (the body's content
/// swapped) and a client router that replaces the whole `<body>` after
/// `history.pushState`. A fragment htmx swaps into part of the page is
/// production's, byte for byte: no probe of its own appended to it.
#[tokio::test]
async fn the_badge_survives_htmx_swaps_and_a_client_router() {
    let origin = Origin::start().unwrap();
    serve_npm(&origin, "/lib/htmx.js", "htmx.org/dist/htmx.min.js");
    let head = "<!doctype html><html><head><meta charset=utf-8><title>shop</title>\
         <script src=/lib/htmx.js></script>\
         <script type=importmap>{\"imports\":{\"@app/greet\":\"/src/greet.js\"}}</script>\
         <script type=module>import { greet } from '@app/greet'; window.greet = greet; \
         document.getElementById('out').textContent = greet();</script></head>";
    origin.route(
        "/",
        Route::html(&format!(
            "{head}<body hx-boost=true><a id=next href=/page2>next</a><p id=out>loading</p></body></html>"
        )),
    );
    origin.route(
        "/page2",
        Route::html(&format!(
            "{head}<body hx-boost=true><p id=two>page two</p>\
             <button id=frag hx-get=/fragment hx-target=#slot hx-swap=innerHTML>more</button><div id=slot></div>\
             <button id=route \
             onclick=\"history.pushState({{}}, '', '/routed'); const b = document.createElement('body'); \
             b.innerHTML = '<p id=three>' + window.greet() + '</p>'; document.body.replaceWith(b);\">go</button></body></html>"
        )),
    );
    origin.route("/fragment", Route::html("<b id=piece>fragment</b>"));
    let (app, _work) = greeting_app(origin, "HX-1");
    let browser = Browser::start().await.unwrap();
    app.expect(
        &browser,
        "/?dev=HX-1",
        "return document.getElementById('out')?.textContent ?? ''",
        "ticket greeting",
    )
    .await;
    badge_says(&browser, "1 of 1 module ran").await;
    browser
        .execute("window.__sameDocument = 1; return true")
        .await
        .unwrap();
    // htmx: a boosted link swaps the body's content.
    browser.click("#next").await.unwrap();
    browser
        .wait_for_text("#two", "page two", Duration::from_secs(15))
        .await
        .unwrap();
    let text = badge_says(&browser, "1 of 1 module ran").await;
    assert!(text.contains("HX-1"), "{text}");
    // htmx: a fragment swapped into part of the page.
    browser.click("#frag").await.unwrap();
    browser
        .wait_for_text("#piece", "fragment", Duration::from_secs(15))
        .await
        .unwrap();
    // (htmx marks what it adds with a class for a moment: read the rest.)
    let slot = browser
        .execute(
            "const s = document.getElementById('slot'); \
             return s.children.length + '|' + s.querySelectorAll('script').length + '|' + s.textContent",
        )
        .await
        .unwrap();
    assert_eq!(slot, "1|0|fragment", "production's fragment, nothing added");
    let cookie = browser.cookie("ticket_stamp").await.unwrap().unwrap();
    let fragment = client()
        .get(app.proxy.url("/fragment"))
        .header("cookie", format!("ticket_stamp={cookie}"))
        .header("hx-request", "true")
        .header("sec-fetch-mode", "cors")
        .header("sec-fetch-dest", "empty")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(fragment, "<b id=piece>fragment</b>", "byte for byte");
    let text = badge_says(&browser, "1 of 1 module ran").await;
    assert!(text.contains("HX-1"), "{text}");
    // A client router: a new <body> altogether.
    browser.click("#route").await.unwrap();
    browser
        .wait_for_text("#three", "ticket greeting", Duration::from_secs(15))
        .await
        .unwrap();
    let same = browser
        .execute("return window.__sameDocument === 1 && location.pathname === '/routed'")
        .await
        .unwrap();
    assert_eq!(same, true, "htmx and the router kept the document");
    let text = badge_says(&browser, "1 of 1 module ran").await;
    assert!(text.contains("HX-1"), "{text}");
    browser.close().await.unwrap();
}

/// A fragment htmx swaps in with a module script, a modulepreload and a
/// stylesheet of its own: the proxy leaves the fragment as it is (it is
/// not a page); htmx inserts its nodes (and the script anew, to run it),
/// and the probe points each at the ticket's file as it is inserted. The
/// ticket's widget runs, once, production's is never fetched, its
/// stylesheet applies, and the badge counts them.
#[tokio::test]
async fn entries_in_a_fragment_htmx_swaps_in_are_the_tickets() {
    let origin = Origin::start().unwrap();
    serve_npm(&origin, "/lib/htmx.js", "htmx.org/dist/htmx.min.js");
    origin.route(
        "/",
        Route::html(
            "<!doctype html><html><head><meta charset=utf-8><title>shop</title>\
             <script src=/lib/htmx.js></script>\
             <script type=importmap>{\"imports\":{\"@app/greet\":\"/src/greet.js\"}}</script>\
             <script type=module>import { greet } from '@app/greet'; \
             document.getElementById('out').textContent = greet();</script></head>\
             <body><p id=out>loading</p>\
             <button id=more hx-get=/fragment hx-target=#slot hx-swap=innerHTML>more</button>\
             <div id=slot></div></body></html>",
        ),
    );
    origin.route(
        "/fragment",
        Route::html(
            "<p id=w>-</p><link rel=modulepreload href=/src/widget.js>\
             <link rel=stylesheet href=/src/widget.css>\
             <script type=module src=/src/widget.js></script>",
        ),
    );
    origin.route(
        "/src/widget.js",
        Route::bytes(
            "text/javascript",
            b"window.__widgets = (window.__widgets || 0) + 1;\n\
              document.getElementById('w').textContent = 'production widget';\n"
                .to_vec(),
        ),
    );
    origin.route(
        "/src/widget.css",
        Route::bytes("text/css", b"#w { color: rgb(1, 2, 3); }\n".to_vec()),
    );
    let (app, _work) = greeting_app_with(
        origin,
        "HXW-1",
        &[
            ("widget.css", "#w { color: rgb(4, 5, 6); }\n"),
            (
                "widget.js",
                "window.__widgets = (window.__widgets || 0) + 1;\n\
                 document.getElementById('w').textContent = 'ticket widget';\n",
            ),
        ],
    );
    let browser = Browser::start().await.unwrap();
    app.expect(
        &browser,
        "/?dev=HXW-1",
        "return document.getElementById('out')?.textContent ?? ''",
        "ticket greeting",
    )
    .await;
    browser.click("#more").await.unwrap();
    browser
        .wait_for_text("#w", "ticket widget", Duration::from_secs(15))
        .await
        .unwrap();
    let seen = browser
        .execute(
            "return window.__widgets + '|' + performance.getEntriesByType('resource')\
             .map((e) => new URL(e.name).pathname + new URL(e.name).search)\
             .filter((u) => u.startsWith('/src/widget.js')).map((u) => u.includes('__ts=') ? 'ticket' : 'production').join(',');",
        )
        .await
        .unwrap();
    let seen = seen.as_str().unwrap_or_default().to_string();
    assert!(seen.starts_with("1|"), "the widget ran once: {seen}");
    assert!(
        seen.contains("ticket"),
        "the ticket's widget was fetched: {seen}"
    );
    assert!(
        !seen.contains("production"),
        "production's widget was fetched: {seen}"
    );
    let color = browser
        .execute("return getComputedStyle(document.getElementById('w')).color")
        .await
        .unwrap();
    assert_eq!(color, "rgb(4, 5, 6)", "the ticket's stylesheet");
    badge_says(&browser, "3 of 3 modules ran").await;
    browser.close().await.unwrap();
}

/// A page in a legacy charset keeps every byte of its own on the ticket:
/// Shift_JIS named by the `Content-Type` or only by a `<meta charset>`,
/// whose `表` ends in the byte of `\`. Read as UTF-8, the title and the
/// text came out as U+FFFD, and a script's string literal lost its quote
/// to a stray backslash.
#[tokio::test]
async fn a_page_in_shift_jis_keeps_its_own_text() {
    // 表示 in Shift_JIS.
    const WORD: &[u8] = b"\x95\x5c\x8e\xa6";
    let page = |meta: &str| -> Vec<u8> {
        [
            b"<!doctype html><html><head>".as_slice(),
            meta.as_bytes(),
            b"<title>",
            WORD,
            b"</title><script type=importmap>{\"imports\":{\"@app/greet\":\"/src/greet.js\"}}</script>\
              <script>window.word = \"",
            WORD,
            b"\";</script><script type=module>import { greet } from '@app/greet'; \
              document.getElementById('out').textContent = greet() + ' ' + window.word;</script>\
              </head><body><p id=out>loading</p><p id=text>",
            WORD,
            b"</p></body></html>",
        ]
        .concat()
    };
    let origin = Origin::start().unwrap();
    origin.route("/", Route::bytes("text/html; charset=Shift_JIS", page("")));
    origin.route(
        "/meta",
        Route::bytes("text/html", page("<meta charset=\"shift_jis\">")),
    );
    let (app, _work) = greeting_app(origin, "SJIS-1");
    let browser = Browser::start().await.unwrap();
    for path in ["/?dev=SJIS-1", "/meta?dev=SJIS-1"] {
        app.expect(
            &browser,
            path,
            "return document.getElementById('out')?.textContent ?? ''",
            "ticket greeting 表示",
        )
        .await;
        badge_says(&browser, "1 of 1 module ran").await;
        let text = browser
            .execute("return document.title + '|' + document.getElementById('text').textContent")
            .await
            .unwrap();
        assert_eq!(text, "表示|表示", "{path}");
    }
    browser.close().await.unwrap();
}

/// `origin` with production's `/src/greet.js`, behind a proxy, and ticket
/// `key` stamped from a work tree whose greet.js is the ticket's.
fn greeting_app(origin: Origin, key: &str) -> (App, tempfile::TempDir) {
    greeting_app_with(origin, key, &[])
}

/// [`greeting_app`], the ticket's work tree holding `more` files as well.
fn greeting_app_with(origin: Origin, key: &str, more: &[(&str, &str)]) -> (App, tempfile::TempDir) {
    origin.route(
        "/src/greet.js",
        Route::bytes(
            "text/javascript",
            b"export const greet = () => 'production greeting';\n".to_vec(),
        ),
    );
    let app = App::start(origin, Origin::start().unwrap());
    let mut files = vec![(
        "greet.js",
        "export const greet = () => 'ticket greeting';\n",
    )];
    files.extend_from_slice(more);
    let work = project("/src", "src", &files);
    app.stamp(work.path(), &[key, "--update", "--once"]);
    (app, work)
}

/// Preloads name files as the elements that use them later do: in the
/// page's `Link` header (a module preload, a script or style preload) and
/// in its `<head>` (`<link rel=preload as=script|style>`). Each of the
/// ticket's files is preloaded at the ticket's URL, so production's copy
/// is never fetched beside it. Before this rule, Chromium reported the
/// header's module preload of production's file as loaded by a script, and
/// the badge said production's copy also loaded; and a script only
/// preloaded (which runs nothing) was said to have run instead of the
/// ticket's.
#[tokio::test]
async fn preloads_fetch_the_tickets_files_and_run_nothing_by_themselves() {
    let origin = Origin::start().unwrap();
    origin.route(
        "/",
        Route::html(
            "<!doctype html><html><head><script type=\"importmap\">{\"imports\":{\"@app/y\":\"/src/y.js\"}}</script>\
             <link rel=preload as=script href=/src/w.js integrity=sha384-production>\
             <link rel=preload as=style href=/src/s.css><link rel=stylesheet href=/src/s.css>\
             <link rel=prefetch href=/src/q.js></head>\
             <body><p id=\"out\">start</p><script src=/src/w.js></script>\
             <script type=\"module\">import { y } from '@app/y'; document.body.dataset.mapped = y + ' ' + window.w;</script>\
             </body></html>",
        )
        .header(
            "link",
            "</src/y.js>; rel=modulepreload, </src/z.js>; rel=preload; as=script; integrity=\"sha384-x\"",
        )
        .header("link", "</src/s.css>; rel=preload; as=style"),
    );
    for (path, body) in [
        ("/src/y.js", "export const y = 'production y';\n"),
        ("/src/z.js", "window.z = 'production z';\n"),
        ("/src/w.js", "window.w = 'production w';\n"),
        ("/src/q.js", "window.q = 'production q';\n"),
    ] {
        origin.route(path, Route::js(body));
    }
    origin.route(
        "/src/s.css",
        Route::bytes("text/css", b"p { color: red }\n".to_vec()),
    );
    let app = App::start(origin, Origin::start().unwrap());
    let work = project(
        "/src",
        "src",
        &[
            ("y.js", "export const y = 'ticket y';\n"),
            ("z.js", "window.z = 'ticket z';\n"),
            ("w.js", "window.w = 'ticket w';\n"),
            ("q.js", "window.q = 'ticket q';\n"),
            ("s.css", "p { color: green }\n"),
        ],
    );
    app.stamp(work.path(), &["PRELOAD-1", "--update", "--once"]);

    let resp = stamp_tests::client()
        .get(app.proxy.url("/?dev=PRELOAD-1"))
        .send()
        .await
        .unwrap();
    let links: Vec<String> = resp
        .headers()
        .get_all("link")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(links.len(), 2, "{links:?}");
    assert!(links[0].starts_with("</src/y.js?__ts="), "{links:?}");
    assert!(links[0].contains(", </src/z.js?__ts="), "{links:?}");
    assert!(!links[0].contains("integrity"), "{links:?}");
    assert!(links[1].starts_with("</src/s.css?__ts="), "{links:?}");
    let html = resp.text().await.unwrap();
    assert!(
        html.contains("<link rel=preload as=script href=\"/src/w.js?__ts="),
        "{html}"
    );
    assert!(!html.contains("sha384-production"), "{html}");
    assert!(
        html.contains("<link rel=prefetch href=/src/q.js>"),
        "a prefetch is for later: {html}"
    );

    let browser = Browser::start().await.unwrap();
    browser
        .goto(&app.proxy.url("/?dev=PRELOAD-1"))
        .await
        .unwrap();
    let text = badge_says(&browser, "ran").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while browser
        .execute("return document.body.dataset.mapped || ''")
        .await
        .unwrap()
        != "ticket y ticket w"
    {
        assert!(
            Instant::now() < deadline,
            "the page never ran the ticket's y and w"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Once the page settled (2 s after load), what loaded and never ran
    // is said: a preload alone is not such a file.
    settled(&browser).await;
    let text = format!("{text} / {}", badge(&browser).await);
    // y, w and the stylesheet ran; z and q were only preloaded.
    assert!(
        text.ends_with("3 of 3 modules ranTicketExit to production"),
        "{text}"
    );
    assert!(!text.contains("instead"), "{text}");
    assert!(!text.contains("also loaded"), "{text}");
    // Production's copies of the files the page uses were never fetched:
    // only the prefetch of one it does not use went to production.
    let fetched = browser
        .execute(
            "return performance.getEntriesByType('resource').map(e => new URL(e.name)) \
             .filter(u => u.pathname.startsWith('/src/') && !u.search.includes('__ts=')) \
             .map(u => u.pathname).sort().join(' ')",
        )
        .await
        .unwrap();
    assert_eq!(fetched, "/src/q.js", "{text}");
    let v = views(&app, "PRELOAD-1", 1).await;
    assert!(v[0]["production"].as_array().unwrap().is_empty(), "{v:?}");
    assert!(
        v[0]["not_run"].as_array().is_none_or(|a| a.is_empty()),
        "{v:?}"
    );
    assert!(
        v[0]["production_also"]
            .as_array()
            .is_none_or(|a| a.is_empty()),
        "{v:?}"
    );
    browser.close().await.unwrap();
}

/// Waits until the probe has settled (2 s after load): from then on the
/// badge says what loaded and never ran.
async fn settled(browser: &Browser) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while browser
        .execute("return !!(window.__ticketStamp && window.__ticketStamp.settled)")
        .await
        .unwrap()
        != true
    {
        assert!(Instant::now() < deadline, "the probe never settled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The badge is redrawn within 50 ms of a change.
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// A production script that a preload fetched and a script element then
/// ran at the same URL has one Resource Timing entry, the preload's: the
/// probe still names it, because an element of the page uses that URL.
/// (Here both come from `document.write`, which the proxy never sees.)
#[tokio::test]
async fn a_preloaded_production_script_that_ran_is_named() {
    let origin = Origin::start().unwrap();
    origin.route(
        "/",
        Route::html(
            "<!doctype html><html><head><title>t</title></head><body><p>x</p>\
             <script>document.write('<link rel=preload as=script href=/src/v.js><script src=/src/v.js><\\/script>')</script>\
             </body></html>",
        ),
    );
    origin.route(
        "/src/v.js",
        Route::js("document.body.dataset.v = 'production v';\n"),
    );
    let app = App::start(origin, Origin::start().unwrap());
    let work = project(
        "/src",
        "src",
        &[("v.js", "document.body.dataset.v = 'ticket v';\n")],
    );
    app.stamp(work.path(), &["WRITTEN-1", "--update", "--once"]);
    let browser = Browser::start().await.unwrap();
    browser
        .goto(&app.proxy.url("/?dev=WRITTEN-1"))
        .await
        .unwrap();
    settled(&browser).await;
    let ran = browser
        .execute("return document.body.dataset.v")
        .await
        .unwrap();
    assert_eq!(ran, "production v");
    let text = badge(&browser).await;
    assert!(
        text.contains("production's /src/v.js ran instead"),
        "{text}"
    );
    assert_eq!(badge_class(&browser).await, "warn");
    browser.close().await.unwrap();
}
