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

use crate::apps::{node_modules, npm_file, project, rollup_build, write, App, Scenario, CORS};

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

/// The last views the proxy has of `key`, once at least `n` arrived.
pub(crate) async fn views(app: &App, key: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let t: Value = client()
            .get(app.proxy.url(&format!("/__stamp/api/v1/tickets/{key}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let views = t["views"].as_array().cloned().unwrap_or_default();
        if views.len() >= n {
            return views;
        }
        assert!(Instant::now() < deadline, "no report of {key} arrived: {t}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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
    let class = browser
        .execute("return document.querySelector('ticket-stamp-badge').shadowRoot.querySelector('aside').className")
        .await
        .unwrap();
    assert_eq!(class, "warn");
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
