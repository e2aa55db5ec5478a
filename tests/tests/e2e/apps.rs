//! The apps teams actually run, end to end: real front-end libraries and
//! bundlers from npm (SystemJS, es-module-shims, import-map-injector, Vite,
//! Rollup; installed by `tests/install-deps` into `tests/node/`), pages and
//! builds of our own served by a real origin and a second origin that plays
//! the CDN, the real `stamp` CLI uploading to a real `stamp-proxy`, and a
//! real headless Chromium.
//!
//! Every scenario checks the same three things:
//! - without a selection, production is served byte for byte;
//! - `?dev=KEY` shows the ticket's code;
//! - after `stamp KEY --promote`, `?qa=KEY` shows it too (and `?stamp=off`
//!   production again).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use stamp_tests::browser::Browser;
use stamp_tests::proxy::binary;
use stamp_tests::run_ok as run;
use stamp_tests::{client, Origin, Proxy, Route};

/// Generous: a watching bundler rebuilds on a machine busy with the rest of
/// the suite. Only a failure waits this long.
pub(crate) const PAGE_TIMEOUT: Duration = Duration::from_secs(40);
pub(crate) const CORS: &[(&str, &str)] = &[("access-control-allow-origin", "*")];

/// `tests/node/node_modules`, installed by `tests/install-deps` (never
/// skipped: a missing install fails the test and says how to fix it).
pub(crate) fn node_modules() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("node/node_modules");
    assert!(
        dir.join("vite/package.json").is_file(),
        "{} is missing: run tests/install-deps (it runs `npm ci` in tests/node)",
        dir.display()
    );
    dir
}

pub(crate) fn npm_file(rel: &str) -> Vec<u8> {
    let path = node_modules().join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub(crate) fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

pub(crate) fn git(dir: &Path, home: &Path, args: &[&str]) {
    run(Command::new("git")
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "dev")
        .env("GIT_AUTHOR_EMAIL", "dev@example.test")
        .env("GIT_COMMITTER_NAME", "dev")
        .env("GIT_COMMITTER_EMAIL", "dev@example.test"));
}

/// An origin, maybe a CDN, a proxy in front, a browser, and a home for the CLI.
pub(crate) struct App {
    pub(crate) origin: Origin,
    pub(crate) cdn: Origin,
    pub(crate) proxy: Proxy,
    pub(crate) home: tempfile::TempDir,
    _conf: tempfile::TempDir,
}

impl App {
    pub(crate) fn start(origin: Origin, cdn: Origin) -> App {
        let conf = tempfile::tempdir().unwrap();
        let file = conf.path().join("proxy.toml");
        std::fs::write(
            &file,
            format!(
                "origin = \"{}\"\nstore = \"{}\"\nasset_origins = [\"{}\"]\n",
                origin.url,
                conf.path().join("store").display(),
                cdn.url
            ),
        )
        .unwrap();
        let proxy = Proxy::start_with(None, &["--config", &file.to_string_lossy()], &[]).unwrap();
        App {
            origin,
            cdn,
            proxy,
            home: tempfile::tempdir().unwrap(),
            _conf: conf,
        }
    }

    /// `stamp --server <proxy> ARGS` in `dir`, with a clean environment.
    pub(crate) fn stamp(&self, dir: &Path, args: &[&str]) -> String {
        let mut cmd = Command::new(binary("stamp").unwrap());
        cmd.arg("--server")
            .arg(&self.proxy.url)
            .args(args)
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path().join(".config"))
            .env("GIT_CONFIG_NOSYSTEM", "1");
        run(&mut cmd)
    }

    /// Through the proxy without a selection, each path is exactly what the
    /// origin (or the CDN, for absolute URLs) serves.
    pub(crate) async fn production_is_untouched(&self, paths: &[&str]) {
        for path in paths {
            let (direct, proxied) = if path.starts_with("http") {
                // CDN files never pass the proxy in production: the page's
                // reference to them is what must be unchanged.
                continue;
            } else {
                (format!("{}{path}", self.origin.url), self.proxy.url(path))
            };
            let a = client().get(&direct).send().await.unwrap();
            let b = client().get(&proxied).send().await.unwrap();
            assert_eq!(a.status(), b.status(), "{path}");
            assert_eq!(
                a.headers().get("content-type"),
                b.headers().get("content-type"),
                "{path}"
            );
            let (a, b) = (a.bytes().await.unwrap(), b.bytes().await.unwrap());
            assert!(a == b, "{path}: the proxy changed production's bytes");
        }
    }

    /// The three checks of every scenario (see the module's doc); `upload`
    /// runs the CLI, `dir` is where `stamp KEY --promote` runs.
    pub(crate) async fn scenario(
        &self,
        browser: &Browser,
        s: Scenario<'_>,
        upload: impl FnOnce(),
        dir: &Path,
    ) {
        self.production_is_untouched(s.untouched).await;
        self.expect(browser, "/", s.check, s.production).await;
        upload();
        self.expect(browser, &format!("/?dev={}", s.key), s.check, s.ticket)
            .await;
        // Without a selection again, production is back, byte for byte.
        self.expect(browser, "/?stamp=off", s.check, s.production)
            .await;
        self.production_is_untouched(s.untouched).await;
        self.stamp(dir, &[s.key, "--promote"]);
        self.expect(browser, &format!("/?qa={}", s.key), s.check, s.ticket)
            .await;
        self.expect(browser, "/?stamp=off", s.check, s.production)
            .await;
    }

    /// Opens `path` and waits until `check` (a script returning a string)
    /// returns `want`.
    pub(crate) async fn expect(&self, browser: &Browser, path: &str, check: &str, want: &str) {
        let start = std::time::Instant::now();
        let mut last = String::new();
        let mut loaded: Option<std::time::Instant> = None;
        while start.elapsed() < PAGE_TIMEOUT {
            // Opened again now and then: a watching CLI may still be uploading.
            if loaded.is_none_or(|t| t.elapsed() > Duration::from_secs(3)) {
                browser.goto(&self.proxy.url(path)).await.unwrap();
                loaded = Some(std::time::Instant::now());
            }
            match browser.execute(check).await {
                Ok(v) => {
                    last = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                    if last == want {
                        return;
                    }
                }
                Err(e) => last = format!("(error: {e})"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let console: String = browser
            .console()
            .await
            .unwrap_or_default()
            .iter()
            .map(|e| format!("\n  {} {}", e.level, e.message))
            .collect();
        panic!(
            "{path}: wanted {want:?}, the page shows {last:?}\nconsole:{console}\nproxy log:\n{}",
            tail(&self.proxy.log_text())
        );
    }
}

/// What one scenario shows: the ticket, the paths production must serve
/// unchanged, a script that returns what the page shows, and what it shows
/// on production and on the ticket.
pub(crate) struct Scenario<'a> {
    pub(crate) key: &'a str,
    pub(crate) untouched: &'a [&'a str],
    pub(crate) check: &'a str,
    pub(crate) production: &'a str,
    pub(crate) ticket: &'a str,
}

/// A child process killed when the test ends, however it ends.
/// A child process stopped when dropped. Its output goes to a file, printed
/// if the test panics, so a failure says what the tool saw.
pub(crate) struct ChildGuard(Option<std::process::Child>, Option<PathBuf>);

impl ChildGuard {
    pub(crate) fn spawn(cmd: &mut Command, log: &Path) -> ChildGuard {
        let out = std::fs::File::create(log).unwrap();
        let child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        ChildGuard(Some(child), Some(log.to_path_buf()))
    }

    fn stop(&mut self) {
        if let Some(child) = self.0.take() {
            stamp_tests::stop_child(child, Duration::from_secs(3));
        }
        if let Some(log) = self.1.take().filter(|_| std::thread::panicking()) {
            eprintln!(
                "--- {} ---\n{}",
                log.display(),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
    }
}

/// Lists a folder if the test panics: each file's time, size and whether
/// it has the saved text.
struct DumpOnPanic(PathBuf);

impl Drop for DumpOnPanic {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        eprintln!("--- {} ---", self.0.display());
        for entry in std::fs::read_dir(&self.0).into_iter().flatten().flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let modified = entry.metadata().and_then(|m| m.modified()).ok();
            eprintln!(
                "{} {modified:?} {} bytes, says \"saved\": {}",
                entry.file_name().to_string_lossy(),
                text.len(),
                text.contains("saved")
            );
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(crate) fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

pub(crate) const SHOW_OUT: &str = "return document.getElementById('out')?.textContent ?? ''";

/// A git repository with a stamp.toml on `main`, and the ticket's `files`
/// below `folder` committed on a branch, as a developer would have it.
pub(crate) fn project(url_path: &str, folder: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "stamp.toml",
        &format!("folder = \"{folder}\"\nurl_path = \"{url_path}\"\n"),
    );
    on_a_branch(dir.path(), |_| {});
    for (rel, text) in files {
        write(&dir.path().join(folder), rel, text);
    }
    commit(dir.path(), "the ticket");
    dir
}

/// `git init` with what `dir` holds (after `main_files`) committed on
/// `main`, then a ticket branch checked out.
pub(crate) fn on_a_branch(dir: &Path, main_files: impl FnOnce(&Path)) {
    main_files(dir);
    let home = dir.join(".git-home");
    std::fs::create_dir_all(&home).unwrap();
    write(dir, ".git/info/exclude", ".git-home/\n");
    git(dir, &home, &["init", "-q", "-b", "main"]);
    write(dir, ".git/info/exclude", ".git-home/\n");
    commit(dir, "production");
    git(dir, &home, &["checkout", "-q", "-b", "ticket"]);
}

pub(crate) fn commit(dir: &Path, message: &str) {
    let home = dir.join(".git-home");
    git(dir, &home, &["add", "-A"]);
    git(
        dir,
        &home,
        &["commit", "-q", "--allow-empty", "-m", message],
    );
}

// ------------------------------------------------------------- SystemJS

const SYSTEM_GREET: &str = "System.register([], function (e) { return { execute: function () { e('greet', function () { return 'GREETING'; }); } }; });";

/// A SystemJS shop whose page loads `@app/main` through the external map
/// at `/importmap.json` (routed by each test); `cache` is the
/// Cache-Control of its scripts.
fn systemjs_shop(origin: &Origin, cache: Option<&str>) {
    origin.route(
        "/",
        Route::html(
            "<!doctype html><html><head>\
             <script src=\"/lib/system.min.js\"></script>\
             <script type=\"systemjs-importmap\" src=\"/importmap.json\"></script>\
             </head><body><p id=out>loading</p>\
             <script>System.import('@app/main')</script></body></html>",
        ),
    );
    let cached = |r: Route| match cache {
        Some(c) => r.header("cache-control", c),
        None => r,
    };
    origin.route(
        "/lib/system.min.js",
        cached(Route::bytes(
            "text/javascript",
            npm_file("systemjs/dist/system.min.js"),
        )),
    );
    origin.route(
        "/apps/main.js",
        cached(Route::bytes(
            "text/javascript",
            b"System.register(['@app/greet'], function () { var g; return { setters: [function (m) { g = m; }], execute: function () { document.getElementById('out').textContent = g.greet(); } }; });".to_vec(),
        )),
    );
}

#[tokio::test]
async fn systemjs_with_an_external_map_on_the_same_origin() {
    let origin = Origin::start().unwrap();
    systemjs_shop(&origin, None);
    // A relative address: relative to the map's own URL, as SystemJS reads it.
    origin.route(
        "/importmap.json",
        Route::bytes(
            "application/json",
            br#"{"imports":{"@app/main":"/apps/main.js","@app/greet":"./apps/greet.js"}}"#.to_vec(),
        ),
    );
    origin.route(
        "/apps/greet.js",
        Route::bytes(
            "text/javascript",
            SYSTEM_GREET
                .replace("GREETING", "systemjs production")
                .into_bytes(),
        ),
    );
    let app = App::start(origin, Origin::start().unwrap());
    let work = project(
        "/apps",
        "apps",
        &[(
            "greet.js",
            &SYSTEM_GREET.replace("GREETING", "systemjs ticket"),
        )],
    );
    let browser = Browser::start().await.unwrap();
    app.scenario(
        &browser,
        Scenario {
            key: "SJS-1",
            untouched: &["/", "/importmap.json", "/apps/greet.js", "/apps/main.js"],
            check: SHOW_OUT,
            production: "systemjs production",
            ticket: "systemjs ticket",
        },
        || {
            app.stamp(work.path(), &["SJS-1", "--update", "--once"]);
        },
        work.path(),
    )
    .await;
    browser.close().await.unwrap();
}

// ------------------------------------------------------ es-module-shims

#[tokio::test]
async fn es_module_shims_with_an_external_map_and_modules_on_a_cdn() {
    let cdn = Origin::start().unwrap();
    let origin = Origin::start().unwrap();
    origin.route(
        "/",
        Route::html(&format!(
            "<!doctype html><html><head>\
             <script async src=\"/lib/es-module-shims.js\"></script>\
             <script type=\"importmap-shim\" src=\"{cdn}/maps/importmap.json\"></script>\
             </head><body><p id=out>loading</p>\
             <script type=\"module-shim\">import {{ greet }} from '@app/greet'; \
             greet().then(t => document.getElementById('out').textContent = t);</script>\
             </body></html>",
            cdn = cdn.url
        )),
    );
    origin.route(
        "/lib/es-module-shims.js",
        Route::bytes(
            "text/javascript",
            npm_file("es-module-shims/dist/es-module-shims.js"),
        ),
    );
    let serve = |path: &str, ty: &str, body: &str| {
        let mut r = Route::bytes(ty, body.as_bytes().to_vec());
        for (k, v) in CORS {
            r = r.header(k, v);
        }
        cdn.route(path, r);
    };
    serve(
        "/maps/importmap.json",
        "application/json",
        r#"{"imports":{"@app/greet":"../lib/greet.js"}}"#,
    );
    serve(
        "/lib/greet.js",
        "text/javascript",
        "import { who } from './who.js';\nexport async function greet() { return 'shims production ' + who; }\n",
    );
    serve(
        "/lib/who.js",
        "text/javascript",
        "export const who = 'from the cdn';\n",
    );
    serve(
        "/lib/data.json",
        "application/json",
        "{\"word\":\"data from the cdn\"}",
    );
    let app = App::start(origin, cdn);
    // The ticket changes the CDN's greet.js; its sibling who.js and its
    // data.json stay production's, on the CDN.
    let work = project(
        &format!("{}/lib", app.cdn.url),
        "lib",
        &[(
            "greet.js",
            "import { who } from './who.js';\n\
             export async function greet() {\n\
               const data = await (await fetch(new URL('./data.json', import.meta.url))).json();\n\
               return 'shims ticket ' + who + ' + ' + data.word;\n\
             }\n",
        )],
    );
    let browser = Browser::start().await.unwrap();
    app.scenario(
        &browser,
        Scenario {
            key: "ESM-1",
            untouched: &["/"],
            check: SHOW_OUT,
            production: "shims production from the cdn",
            ticket: "shims ticket from the cdn + data from the cdn",
        },
        || {
            app.stamp(work.path(), &["ESM-1", "--update", "--once"]);
        },
        work.path(),
    )
    .await;
    assert!(app.cdn.hits("/lib/who.js") > 0 && app.cdn.hits("/lib/data.json") > 0);
    browser.close().await.unwrap();
}

// -------------------------------------------------- import-map-injector

#[tokio::test]
async fn import_map_injector_with_an_external_map() {
    let origin = Origin::start().unwrap();
    origin.route(
        "/",
        Route::html(
            "<!doctype html><html><head>\
             <script type=\"injector-importmap\" src=\"/importmap.json\"></script>\
             <script src=\"/lib/import-map-injector.js\"></script>\
             </head><body><p id=out>loading</p>\
             <script>window.importMapInjector.initPromise.then(() => import('@app/main'));</script>\
             </body></html>",
        ),
    );
    origin.route(
        "/lib/import-map-injector.js",
        Route::bytes(
            "text/javascript",
            npm_file("@single-spa/import-map-injector/lib/import-map-injector.js"),
        ),
    );
    origin.route(
        "/importmap.json",
        Route::bytes(
            "application/importmap+json",
            br#"{"imports":{"@app/main":"/apps/main.js","@app/":"/apps/"}}"#.to_vec(),
        ),
    );
    origin.route(
        "/apps/main.js",
        Route::bytes(
            "text/javascript",
            b"import { greet } from '@app/greet.js'; document.getElementById('out').textContent = greet();".to_vec(),
        ),
    );
    origin.route(
        "/apps/greet.js",
        Route::bytes(
            "text/javascript",
            b"export const greet = () => 'injector production';".to_vec(),
        ),
    );
    let app = App::start(origin, Origin::start().unwrap());
    let work = project(
        "/apps",
        "apps",
        &[("greet.js", "export const greet = () => 'injector ticket';")],
    );
    let browser = Browser::start().await.unwrap();
    app.scenario(
        &browser,
        Scenario {
            key: "IMI-1",
            untouched: &["/", "/importmap.json", "/apps/greet.js"],
            check: SHOW_OUT,
            production: "injector production",
            ticket: "injector ticket",
        },
        || {
            app.stamp(work.path(), &["IMI-1", "--update", "--once"]);
        },
        work.path(),
    )
    .await;
    browser.close().await.unwrap();
}

// ------------------------------------- native map, modules on a CDN

/// A file on the CDN, readable from the app's origin.
fn cdn_file(cdn: &Origin, path: &str, ty: &str, body: &str) {
    let mut r = Route::bytes(ty, body.as_bytes().to_vec());
    for (k, v) in CORS {
        r = r.header(k, v);
    }
    cdn.route(path, r);
}

/// Production's widget on the CDN: `index.js` renders `text.js`'s text and
/// imports `shared.js`, which counts its instances in `sharedLoads`.
fn cdn_widget(cdn: &Origin) {
    cdn_file(
        cdn,
        "/widget/index.js",
        "text/javascript",
        "import { text } from './text.js';\nimport './shared.js';\nexport async function render() { return 'widget production: ' + text; }\n",
    );
    cdn_file(
        cdn,
        "/widget/text.js",
        "text/javascript",
        "export const text = 'old text';\n",
    );
    cdn_file(
        cdn,
        "/widget/shared.js",
        "text/javascript",
        "window.sharedLoads = (window.sharedLoads || 0) + 1;\n",
    );
}

#[tokio::test]
async fn a_native_map_pointing_at_a_cdn_with_relative_siblings() {
    let cdn = Origin::start().unwrap();
    let origin = Origin::start().unwrap();
    origin.route(
        "/",
        Route::html(&format!(
            "<!doctype html><html><head>\
             <script type=\"importmap\">{{\"imports\":{{\"@cdn/widget\":\"{cdn}/widget/index.js\"}}}}</script>\
             </head><body><p id=out>loading</p>\
             <script type=\"module\">import {{ render }} from '@cdn/widget'; \
             import '{cdn}/widget/shared.js'; \
             render().then(t => document.getElementById('out').textContent = t + ' / shared x' + window.sharedLoads);</script>\
             </body></html>",
            cdn = cdn.url
        )),
    );
    cdn_widget(&cdn);
    cdn_file(
        &cdn,
        "/widget/strings.json",
        "application/json",
        "{\"hello\":\"hi from the cdn\"}",
    );
    let app = App::start(origin, cdn);
    // The ticket changes index.js and its sibling text.js; shared.js and
    // strings.json stay production's.
    let work = project(
        &format!("{}/widget", app.cdn.url),
        "widget",
        &[
            (
                "index.js",
                "import { text } from './text.js';\nimport './shared.js';\n\
                 export async function render() {\n\
                   const s = await (await fetch(new URL('./strings.json', import.meta.url))).json();\n\
                   return 'widget ticket: ' + text + ', ' + s.hello;\n\
                 }\n",
            ),
            ("text.js", "export const text = 'new text';\n"),
        ],
    );
    let browser = Browser::start().await.unwrap();
    app.scenario(
        &browser,
        Scenario {
            key: "CDN-1",
            untouched: &["/"],
            check: SHOW_OUT,
            production: "widget production: old text / shared x1",
            ticket: "widget ticket: new text, hi from the cdn / shared x1",
        },
        || {
            app.stamp(work.path(), &["CDN-1", "--update", "--once"]);
        },
        work.path(),
    )
    .await;
    browser.close().await.unwrap();
}

/// The same widget, with the page's only map added at run time by a
/// classic script (native maps have no `src`: an app fetches its map and
/// writes it in), so no module element in the HTML and no map of the
/// proxy's. The map the page adds gets the keys the proxy writes into a
/// page's first map: without them the ticket's `index.js` imported its
/// untouched sibling `./shared.js` by its mirror path, which the browser
/// took for another module than production's `shared.js` on the CDN, ran
/// a second time, and the badge said nothing of it.
#[tokio::test]
async fn a_native_map_added_at_runtime_pointing_at_a_cdn_with_relative_siblings() {
    let cdn = Origin::start().unwrap();
    let origin = Origin::start().unwrap();
    origin.route(
        "/",
        Route::html(&format!(
            "<!doctype html><html><head><script>\
             const map = document.createElement('script'); map.type = 'importmap';\
             map.textContent = JSON.stringify({{imports: {{'@cdn/widget': '{cdn}/widget/index.js'}}}});\
             document.head.appendChild(map);\
             </script></head><body><p id=out>loading</p><script>\
             Promise.all([import('@cdn/widget'), import('{cdn}/widget/shared.js')])\
             .then(([w]) => w.render()).then(t => document.getElementById('out').textContent = t + ' / shared x' + window.sharedLoads);\
             </script></body></html>",
            cdn = cdn.url
        )),
    );
    cdn_widget(&cdn);
    let app = App::start(origin, cdn);
    let work = project(
        &format!("{}/widget", app.cdn.url),
        "widget",
        &[
            (
                "index.js",
                "import { text } from './text.js';\nimport './shared.js';\n\
                 export async function render() { return 'widget ticket: ' + text; }\n",
            ),
            ("text.js", "export const text = 'new text';\n"),
        ],
    );
    let browser = Browser::start().await.unwrap();
    app.scenario(
        &browser,
        Scenario {
            key: "CDN-3",
            untouched: &["/"],
            check: SHOW_OUT,
            production: "widget production: old text / shared x1",
            ticket: "widget ticket: new text / shared x1",
        },
        || {
            app.stamp(work.path(), &["CDN-3", "--update", "--once"]);
        },
        work.path(),
    )
    .await;
    // A ticket that changes only the sibling production's CDN module
    // imports by a relative URL: the key of its production URL takes it.
    let sibling = project(
        &format!("{}/widget", app.cdn.url),
        "widget",
        &[("text.js", "export const text = 'sibling text';\n")],
    );
    app.stamp(sibling.path(), &["CDN-4", "--update", "--once"]);
    app.expect(
        &browser,
        "/?dev=CDN-4",
        SHOW_OUT,
        "widget production: sibling text / shared x1",
    )
    .await;
    crate::setups::badge_says(&browser, "1 of 1 module ran").await;
    browser.close().await.unwrap();
}

// ------------------------------------------------------------ stylesheets

#[tokio::test]
async fn an_overridden_stylesheet_keeps_its_untouched_imports_and_images() {
    let origin = Origin::start().unwrap();
    origin.route(
        "/",
        Route::html(
            "<!doctype html><html><head><link rel=stylesheet href=\"/css/app.css\"></head>\
             <body><p id=out class=box>styled</p></body></html>",
        ),
    );
    origin.route(
        "/css/app.css",
        Route::bytes(
            "text/css",
            b"@import url(./theme.css);\n.box { color: rgb(1, 2, 3); background-image: url(./dot.png); }\n"
                .to_vec(),
        ),
    );
    origin.route(
        "/css/theme.css",
        Route::bytes("text/css", b".box { border: 7px solid black; }\n".to_vec()),
    );
    // A 1x1 PNG.
    let png = base64_decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==");
    origin.route("/css/dot.png", Route::bytes("image/png", png));
    let app = App::start(origin, Origin::start().unwrap());
    let work = project(
        "/css",
        "css",
        &[(
            "app.css",
            "@import url(./theme.css);\n.box { color: rgb(4, 5, 6); background-image: url(./dot.png); }\n",
        )],
    );
    let check = "const s = getComputedStyle(document.getElementById('out')); \
                 const img = performance.getEntriesByType('resource').some(r => new URL(r.name).pathname === '/css/dot.png'); \
                 return s.color + ' ' + s.borderTopWidth + ' ' + (img ? 'dot' : 'no-dot');";
    let browser = Browser::start().await.unwrap();
    app.scenario(
        &browser,
        Scenario {
            key: "CSS-1",
            untouched: &["/", "/css/app.css", "/css/theme.css", "/css/dot.png"],
            check,
            production: "rgb(1, 2, 3) 7px dot",
            ticket: "rgb(4, 5, 6) 7px dot",
        },
        || {
            app.stamp(work.path(), &["CSS-1", "--update", "--once"]);
        },
        work.path(),
    )
    .await;
    browser.close().await.unwrap();
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

// ------------------------------------------------------------------ Vite

const VITE_CHECK: &str = "const out = document.getElementById('out'), lazy = document.getElementById('lazy'); \
    return out.textContent + ' ' + getComputedStyle(out).color + ' | ' + lazy.textContent + ' ' + getComputedStyle(lazy).color;";

/// A Vite build whose page a server renders the way SSR frameworks do
/// (Remix and React Router, SvelteKit): the entry preloaded, then loaded by
/// an inline script's `import` of its hashed URL, which no `src` names.
#[tokio::test]
async fn a_vite_build_an_ssr_page_imports_inline() {
    let repo = tempfile::tempdir().unwrap();
    let dir = repo.path();
    let manifest = vite_production(dir);
    let entry = manifest["index.html"]["file"].as_str().unwrap().to_string();
    let css = manifest["index.html"]["css"][0]
        .as_str()
        .unwrap()
        .to_string();
    let origin = Origin::start().unwrap();
    origin.serve_dir("", &dir.join("prod"), &[]);
    for (path, how) in [
        (
            "/",
            format!("<script type=module>import \"/{entry}\";</script>"),
        ),
        (
            "/classic",
            format!("<script>import(\"./{entry}\");</script>"),
        ),
    ] {
        origin.route(
            path,
            Route::html(&format!(
                "<!doctype html><html><head><title>shop</title>\
                 <link rel=modulepreload href=\"/{entry}\"><link rel=stylesheet href=\"/{css}\">{how}</head>\
                 <body><p id=out>loading</p><p id=lazy>loading</p></body></html>"
            )),
        );
    }
    let app = App::start(origin, Origin::start().unwrap());
    vite_sources(dir, "ticket", "rgb(4, 5, 6)", "rgb(10, 11, 12)", false);
    commit(dir, "the ticket");
    vite_build(dir, "dist");
    app.stamp(dir, &["SSR-1", "--update", "--once"]);
    let browser = Browser::start().await.unwrap();
    for page in ["/", "/classic"] {
        app.expect(
            &browser,
            &format!("{page}?stamp=off"),
            VITE_CHECK,
            "vite production rgb(1, 2, 3) | lazy production rgb(7, 8, 9)",
        )
        .await;
        app.expect(
            &browser,
            &format!("{page}?dev=SSR-1"),
            VITE_CHECK,
            "vite ticket rgb(4, 5, 6) | lazy ticket rgb(10, 11, 12)",
        )
        .await;
    }
    browser.close().await.unwrap();
}

/// An island a server-rendered page names by URL in an attribute and
/// imports at run time, as Astro's `<astro-island component-url>` does: no
/// `src` or map names production's build of it. A ticket page's request
/// for it gets the ticket's build (its only file of that name and hash
/// length). A browser that kept production's (hashed files are served
/// `immutable`) runs that one, and the badge says so rather than count the
/// ticket's stylesheet as all that ran.
#[tokio::test]
async fn an_island_named_by_url_in_an_attribute_is_the_tickets_or_told() {
    island_of_two_builds(None).await;
}

/// The same when one of the two builds' hashes has no digit, as one Rollup
/// hash in four has (`lazy-BuRqDqXz.js`), production's or the ticket's. The
/// proxy pairs two builds only when both hashes have one (a word can look
/// like a hash without: `STATUS_ERR`, `zh-Hant-TW`), so production's island
/// runs; before the probe named it, the badge said "1 of 1 module ran".
/// (Vite's own hashes decide the names above; here the built files are
/// renamed, which nothing but the page's attribute names.)
#[tokio::test]
async fn an_island_whose_hash_has_no_digit_is_told() {
    island_of_two_builds(Some(("BuRqDqXz", "Kq7Wz2Ab"))).await;
    island_of_two_builds(Some(("Bx12Cd34", "KqWzJhAb"))).await;
}

/// An island whose build lives on a CDN (Vite's `base`, Astro's
/// `build.assetsPrefix`), the ticket's build uploaded with its `url_path`
/// there: the page names production's hashed URL on the CDN, which never
/// passes the proxy, so production's island runs. The badge names it; it
/// said nothing was used (or, beside another file, that all had run).
#[tokio::test]
async fn an_island_of_a_cdn_build_is_told() {
    let cdn = Origin::start().unwrap();
    let origin = Origin::start().unwrap();
    let mut island = Route::js("export const lazy = () => 'lazy production';\n");
    for (k, v) in CORS {
        island = island.header(k, v);
    }
    cdn.route("/_astro/Counter-BuR3Dq2X.js", island);
    let counter = format!("{}/_astro/Counter-BuR3Dq2X.js", cdn.url);
    origin.route(
        "/island",
        Route::html(&format!(
            "<!doctype html><html><head><title>shop</title></head>\
             <body><p id=lazy>loading</p>\
             <x-island component-url=\"{counter}\"></x-island>\
             <script>customElements.define('x-island', class extends HTMLElement {{\
               connectedCallback() {{ import(this.getAttribute('component-url')).then((m) => {{\
                 document.getElementById('lazy').textContent = m.lazy(); }}); }} }});</script>\
             </body></html>"
        )),
    );
    let app = App::start(origin, cdn);
    let work = project(
        &format!("{}/_astro", app.cdn.url),
        "_astro",
        &[(
            "Counter-Tk4Rq9Zw.js",
            "export const lazy = () => 'lazy ticket';\n",
        )],
    );
    app.stamp(work.path(), &["CDN-1", "--update", "--once"]);
    let browser = Browser::start().await.unwrap();
    app.expect(
        &browser,
        "/island?dev=CDN-1",
        "return document.getElementById('lazy').textContent",
        "lazy production",
    )
    .await;
    let said = crate::setups::badge_says(&browser, "instead").await;
    assert!(
        said.contains(&format!("production's {counter} ran instead")),
        "{said}"
    );
    browser.close().await.unwrap();
}

/// [`an_island_named_by_url_in_an_attribute_is_the_tickets_or_told`], with
/// production's and the ticket's island renamed to these hashes (the
/// ticket's island is then production's, and told).
async fn island_of_two_builds(hashes: Option<(&str, &str)>) {
    let repo = tempfile::tempdir().unwrap();
    let dir = repo.path();
    let manifest = vite_production(dir);
    let built = manifest["src/lazy.js"]["file"]
        .as_str()
        .unwrap()
        .to_string();
    let css = manifest["index.html"]["css"][0]
        .as_str()
        .unwrap()
        .to_string();
    // `assets/lazy-<hash>.js` under another hash of the same length.
    let rename = |out: &str, hash: &str| -> String {
        let (stem, _) = built.rsplit_once('-').unwrap();
        let to = format!("{stem}-{hash}.js");
        let from = dir.join(out).join(manifest_name(dir, out));
        std::fs::rename(from, dir.join(out).join(&to)).unwrap();
        to
    };
    let lazy = match hashes {
        Some((prod, _)) => rename("prod", prod),
        None => built.clone(),
    };
    let origin = Origin::start().unwrap();
    origin.serve_dir(
        "",
        &dir.join("prod"),
        &[("cache-control", "public, max-age=31536000, immutable")],
    );
    origin.route(
        "/island",
        Route::html(&format!(
            "<!doctype html><html><head><title>shop</title>\
             <link rel=stylesheet href=\"/{css}\"></head>\
             <body><p id=out>static</p><p id=lazy>loading</p>\
             <x-island component-url=\"/{lazy}\"></x-island>\
             <script>customElements.define('x-island', class extends HTMLElement {{\
               connectedCallback() {{ import(this.getAttribute('component-url')).then((m) => {{\
                 document.getElementById('lazy').textContent = m.lazy(); }}); }} }});</script>\
             </body></html>"
        )),
    );
    let app = App::start(origin, Origin::start().unwrap());
    vite_sources(dir, "ticket", "rgb(4, 5, 6)", "rgb(10, 11, 12)", false);
    commit(dir, "the ticket");
    vite_build(dir, "dist");
    if let Some((_, ticket)) = hashes {
        rename("dist", ticket);
    }
    app.stamp(dir, &["ISL-1", "--update", "--once"]);
    let lazy_text = "return document.getElementById('lazy').textContent";
    let fresh = Browser::start().await.unwrap();
    if hashes.is_none() {
        app.expect(&fresh, "/island?dev=ISL-1", lazy_text, "lazy ticket")
            .await;
        let said = crate::setups::badge_says(&fresh, "modules ran").await;
        assert!(!said.contains("instead"), "{said}");
    } else {
        app.expect(&fresh, "/island?dev=ISL-1", lazy_text, "lazy production")
            .await;
        let said = crate::setups::badge_says(&fresh, "instead").await;
        assert!(
            said.contains(&format!("production's /{lazy} ran instead")),
            "{said}"
        );
    }
    fresh.close().await.unwrap();
    // Production first: the browser keeps production's island a year.
    let kept = Browser::start().await.unwrap();
    app.expect(&kept, "/island", lazy_text, "lazy production")
        .await;
    app.expect(&kept, "/island?dev=ISL-1", lazy_text, "lazy production")
        .await;
    let said = crate::setups::badge_says(&kept, "instead").await;
    assert!(
        said.contains(&format!("production's /{lazy} ran instead")),
        "{said}"
    );
    kept.close().await.unwrap();
}

/// The probe names production's build of a ticket's hashed file by the
/// proxy's own rule: the same answer, in node, for hashes of every shape
/// (a bundler's with and without digits, capitals only, words, hex).
#[test]
fn the_probe_pairs_hashes_by_the_models_rule() {
    let probe = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../proxy/stamp-data/src/probe.js"),
    )
    .unwrap();
    let from = probe.find("const gen=").unwrap();
    let to = from + probe[from..].find("(gen(a)||gen(b));").unwrap() + 17;
    let rule = &probe[from..to];
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let mut tokens: Vec<String> = [
        "ArrowLeft",
        "ArrowDown",
        "AreaChart",
        "LineChar",
        "Overview",
        "Fallback",
        "KQWZJHAB",
        "BuRqDqXz",
        "Bx12Cd34",
        "abcdefgh",
        "12345678",
        "2-overview",
        "v2-checkout",
    ]
    .iter()
    .map(|t| t.to_string())
    .collect();
    for _ in 0..600 {
        // Drawn from all of the alphabet, or from a part of it: capitals
        // and digits (esbuild's), letters only, lower case and digits.
        let part: &[u8] = [
            ALPHABET,
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567",
            &ALPHABET[..52],
            &ALPHABET[26..62],
        ][next(4)];
        tokens.push((0..8).map(|_| part[next(part.len())] as char).collect());
    }
    let pairs: Vec<(String, String)> = (0..3000)
        .map(|_| {
            (
                tokens[next(tokens.len())].clone(),
                tokens[next(tokens.len())].clone(),
            )
        })
        .collect();
    let script = format!(
        "{rule}\nconst p=JSON.parse(require('fs').readFileSync(0,'utf8'));\
         process.stdout.write(JSON.stringify(p.map(([a,b])=>pair(a,b))));"
    );
    let mut child = Command::new("node")
        .args(["-e", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&pairs).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said: Vec<bool> = serde_json::from_slice(&out.stdout).unwrap();
    let mut paired = 0;
    for ((a, b), js) in pairs.iter().zip(&said) {
        let rust = stamp_model::assets::versions_of_one_file(a, b);
        assert_eq!(rust, *js, "{a} {b}");
        paired += usize::from(rust);
    }
    // Both answers occur, so the comparison compares something.
    assert!(paired > 100 && paired < pairs.len() - 100, "{paired}");
}

/// The name of the lazy chunk in the build in `dir/out`, from its manifest.
fn manifest_name(dir: &Path, out: &str) -> String {
    let text = std::fs::read_to_string(dir.join(out).join(".vite/manifest.json")).unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&text).unwrap();
    manifest["src/lazy.js"]["file"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Production's Vite app on a branch of a repository in `dir`, built into
/// `prod/` (the ticket builds into `dist/`): its manifest.
fn vite_production(dir: &Path) -> serde_json::Value {
    on_a_branch(dir, |dir| {
        vite_sources(dir, "production", "rgb(1, 2, 3)", "rgb(7, 8, 9)", false);
        write(dir, ".gitignore", "dist/\nprod/\n");
        write(dir, "stamp.toml", "folder = \"dist\"\nurl_path = \"/\"\n");
    });
    vite_build(dir, "prod");
    let manifest = std::fs::read_to_string(dir.join("prod/.vite/manifest.json")).unwrap();
    serde_json::from_str(&manifest).unwrap()
}

fn vite_build(dir: &Path, out: &str) {
    let vite = node_modules().join("vite/bin/vite.js");
    run(Command::new("node")
        .arg(vite)
        .args([
            "build",
            "--logLevel",
            "warn",
            "--outDir",
            out,
            "--emptyOutDir",
        ])
        .current_dir(dir));
}

/// The Vite app's sources. `shared`: `lazy.js` imports a module that a
/// second lazy chunk imports too, so Rollup makes it a chunk of its own and
/// Vite's preload helper adds a `<link rel=modulepreload>` for it at
/// runtime (a JS dependency of a dynamic import, not only its CSS).
fn vite_sources(dir: &Path, word: &str, color: &str, lazy_color: &str, shared: bool) {
    write(
        dir,
        "vite.config.mjs",
        "export default { build: { manifest: true, assetsInlineLimit: 0 } };\n",
    );
    write(
        dir,
        "index.html",
        "<!doctype html><html><head><title>shop</title>\
         <script type=\"module\" src=\"/src/main.js\"></script></head>\
         <body><p id=out>loading</p><p id=lazy>loading</p></body></html>\n",
    );
    let other = if shared {
        "if (location.hash === '#other') import('./other.js');\n"
    } else {
        ""
    };
    write(
        dir,
        "src/main.js",
        &format!(
            "import {{ greet }} from './greet.js';\nimport './style.css';\n\
             document.getElementById('out').textContent = greet();\n\
             import('./lazy.js').then((m) => {{ document.getElementById('lazy').textContent = m.lazy(); }});\n{other}"
        ),
    );
    write(
        dir,
        "src/greet.js",
        &format!("export const greet = () => 'vite {word}';\n"),
    );
    write(
        dir,
        "src/style.css",
        &format!("#out {{ color: {color}; }}\n"),
    );
    if shared {
        write(
            dir,
            "src/lazy.js",
            "import './lazy.css';\nimport { mark } from './shared.js';\nexport const lazy = () => 'lazy ' + mark;\n",
        );
        write(
            dir,
            "src/shared.js",
            &format!("export const mark = '{word}';\n"),
        );
        write(
            dir,
            "src/other.js",
            "import { mark } from './shared.js';\nexport const other = () => mark;\n",
        );
    } else {
        write(
            dir,
            "src/lazy.js",
            &format!("import './lazy.css';\nexport const lazy = () => 'lazy {word}';\n"),
        );
    }
    write(
        dir,
        "src/lazy.css",
        &format!("#lazy {{ color: {lazy_color}; }}\n"),
    );
}

#[tokio::test]
async fn a_vite_build_in_a_git_ignored_dist() {
    let repo = tempfile::tempdir().unwrap();
    let dir = repo.path();
    on_a_branch(dir, |dir| {
        vite_sources(dir, "production", "rgb(1, 2, 3)", "rgb(7, 8, 9)", true);
        write(dir, ".gitignore", "dist/\nprod/\n");
        write(dir, "stamp.toml", "folder = \"dist\"\nurl_path = \"/\"\n");
    });
    vite_build(dir, "prod");
    let origin = Origin::start().unwrap();
    origin.serve_dir("", &dir.join("prod"), &[]);
    let app = App::start(origin, Origin::start().unwrap());

    // The ticket: a branch that changes text and both stylesheets, built into
    // the git-ignored dist/ as `vite build` does.
    vite_sources(dir, "ticket", "rgb(4, 5, 6)", "rgb(10, 11, 12)", true);
    commit(dir, "the ticket");
    vite_build(dir, "dist");
    let manifest = std::fs::read_to_string(dir.join("prod/.vite/manifest.json")).unwrap();
    let prod_entry = serde_json::from_str::<serde_json::Value>(&manifest).unwrap()["index.html"]
        ["file"]
        .as_str()
        .unwrap()
        .to_string();
    let browser = Browser::start().await.unwrap();
    app.scenario(
        &browser,
        Scenario {
            key: "VITE-1",
            untouched: &["/", &format!("/{prod_entry}")],
            check: VITE_CHECK,
            production: "vite production rgb(1, 2, 3) | lazy production rgb(7, 8, 9)",
            ticket: "vite ticket rgb(4, 5, 6) | lazy ticket rgb(10, 11, 12)",
        },
        || {
            // No --build, no --all: a Vite manifest says what dist/ is.
            let out = app.stamp(dir, &["VITE-1", "--update", "--once"]);
            assert!(out.contains("VITE-1"), "{out}");
        },
        dir,
    )
    .await;

    // The shared chunk: built as one, preloaded by Vite's helper for the
    // dynamic import, and in the ticket's browser the ticket's alone. The
    // badge counts what ran and says nothing of production's.
    let shared = |out: &str| {
        let manifest = std::fs::read_to_string(dir.join(out).join(".vite/manifest.json")).unwrap();
        let manifest: serde_json::Value = serde_json::from_str(&manifest).unwrap();
        let imports = manifest["src/lazy.js"]["imports"].as_array().cloned();
        let chunk = imports.and_then(|i| i.first()?.as_str().map(str::to_string));
        let chunk = chunk.unwrap_or_else(|| panic!("{out}: lazy.js imports no chunk: {manifest}"));
        manifest[&chunk]["file"].as_str().unwrap().to_string()
    };
    let (prod_shared, ticket_shared) = (shared("prod"), shared("dist"));
    assert_ne!(prod_shared, ticket_shared);
    let lazy_bytes = std::fs::read_dir(dir.join("dist/assets"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("lazy-")
                && p.extension().is_some_and(|x| x == "js")
        })
        .map(|p| std::fs::read_to_string(p).unwrap());
    let main_bytes = std::fs::read_dir(dir.join("dist/assets"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .collect::<String>();
    assert!(
        main_bytes.contains("modulepreload") && lazy_bytes.is_some(),
        "the build has Vite's preload helper and a lazy chunk"
    );
    app.expect(
        &browser,
        "/?qa=VITE-1",
        VITE_CHECK,
        "vite ticket rgb(4, 5, 6) | lazy ticket rgb(10, 11, 12)",
    )
    .await;
    let fetched = browser
        .execute("return performance.getEntriesByType('resource').map((e) => e.name).join(' ');")
        .await
        .unwrap();
    let fetched = fetched.as_str().unwrap_or_default().to_string();
    assert!(fetched.contains(&ticket_shared), "{fetched}");
    assert!(!fetched.contains(&prod_shared), "{fetched}");
    let said = crate::setups::badge_says(&browser, "modules ran").await;
    assert!(!said.contains("instead"), "{said}");
    browser.close().await.unwrap();
}

#[tokio::test]
async fn vite_build_watch_and_stamp_update_run_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    vite_sources(dir, "production", "rgb(1, 2, 3)", "rgb(7, 8, 9)", true);
    write(
        dir,
        "stamp.toml",
        "folder = \"dist\"\nurl_path = \"/\"\nbuild = true\n",
    );
    vite_build(dir, "prod");
    let origin = Origin::start().unwrap();
    origin.serve_dir("", &dir.join("prod"), &[]);
    let app = App::start(origin, Origin::start().unwrap());
    vite_build(dir, "dist");

    let vite = node_modules().join("vite/bin/vite.js");
    // What vite says it finished, and the page it last wrote. (Not the
    // page's time: it changes as vite empties dist/ and writes it anew,
    // long before a build is over; waiting on it let saves land before
    // Rollup watched, and a build never came.)
    let builds = |dir: &Path| {
        std::fs::read_to_string(dir.join("vite.log"))
            .unwrap_or_default()
            .matches("built in")
            .count()
    };
    let page = |dir: &Path| std::fs::read_to_string(dir.join("dist/index.html")).ok();
    let wait_until = |what: &dyn Fn() -> bool, limit: Duration| {
        let start = std::time::Instant::now();
        while !what() && start.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(100));
        }
        what()
    };
    let mut watch_build = ChildGuard::spawn(
        Command::new("node")
            .arg(vite)
            .args(["build", "--watch", "--logLevel", "info", "--outDir", "dist"])
            .current_dir(dir),
        &dir.join("vite.log"),
    );
    let _dist = DumpOnPanic(dir.join("dist/assets"));
    let mut watch_stamp = ChildGuard::spawn(
        Command::new(binary("stamp").unwrap())
            .args([
                "--server",
                &app.proxy.url,
                "WATCH-1",
                "--update",
                "--verbose",
            ])
            .current_dir(dir)
            .env("HOME", app.home.path())
            .env("XDG_CONFIG_HOME", app.home.path().join(".config")),
        &dir.join("stamp.log"),
    );
    let browser = Browser::start().await.unwrap();
    app.expect(
        &browser,
        "/?dev=WATCH-1",
        VITE_CHECK,
        "vite production rgb(1, 2, 3) | lazy production rgb(7, 8, 9)",
    )
    .await;
    // vite watches once its first build in watch mode is over.
    assert!(
        wait_until(&|| builds(dir) >= 1, PAGE_TIMEOUT),
        "vite build --watch never built"
    );
    // Save a source file: vite rebuilds dist/, stamp uploads what changed.
    // Rollup's file watchers get ready a moment after its first build: a
    // save in that moment goes unseen, so it is saved again until vite
    // builds a page that differs, as anyone would.
    let first = page(dir);
    let mut rebuilt = false;
    for save in 0..10 {
        let done = builds(dir);
        write(
            dir,
            "src/greet.js",
            &format!("export const greet = () => 'vite saved';\n// save {save}\n"),
        );
        rebuilt = wait_until(
            &|| builds(dir) > done && page(dir).is_some() && page(dir) != first,
            Duration::from_secs(3),
        );
        if rebuilt {
            break;
        }
    }
    assert!(rebuilt, "vite build --watch never rebuilt on a save");
    app.expect(
        &browser,
        "/?dev=WATCH-1",
        VITE_CHECK,
        "vite saved rgb(1, 2, 3) | lazy production rgb(7, 8, 9)",
    )
    .await;
    app.expect(
        &browser,
        "/?stamp=off",
        VITE_CHECK,
        "vite production rgb(1, 2, 3) | lazy production rgb(7, 8, 9)",
    )
    .await;
    // vite empties dist/ before each build: stamp waits for the build to
    // end instead of taking every module away meanwhile. The entry keeps
    // its pattern and the chunks their names, so nothing is ever removed.
    let log = std::fs::read_to_string(dir.join("stamp.log")).unwrap();
    let removed: Vec<&str> = log.lines().filter(|l| l.contains("  remove  ")).collect();
    assert!(removed.is_empty(), "a rebuild removed modules:\n{log}");
    watch_stamp.stop();
    watch_build.stop();
    browser.close().await.unwrap();
}

// ---------------------------------------------------------------- Rollup

fn rollup_sources(dir: &Path, word: &str) {
    let html_plugin = node_modules().join("@rollup/plugin-html/dist/es/index.js");
    write(
        dir,
        "rollup.config.mjs",
        &format!(
            "import html from '{}';\n\
             export default {{\n\
               input: 'src/main.js',\n\
               output: {{ dir: process.env.OUT, format: 'es', entryFileNames: '[name]-[hash].js', chunkFileNames: '[name]-[hash].js' }},\n\
               plugins: [html({{ template: ({{ files }}) => '<!doctype html><html><head>' +\n\
                 files.js.filter((f) => f.isEntry).map((f) => `<script type=\"module\" src=\"/${{f.fileName}}\"></script>`).join('') +\n\
                 '</head><body><p id=out>loading</p></body></html>' }})],\n\
             }};\n",
            html_plugin.display()
        ),
    );
    write(
        dir,
        "src/main.js",
        "import('./words.js').then((m) => { document.getElementById('out').textContent = m.words(); });\n",
    );
    write(
        dir,
        "src/words.js",
        &format!("export const words = () => 'rollup {word}';\n"),
    );
}

pub(crate) fn rollup_build(dir: &Path, out: &str) {
    let rollup = node_modules().join("rollup/dist/bin/rollup");
    run(Command::new("node")
        .arg(rollup)
        .args(["-c", "rollup.config.mjs", "--silent"])
        .env("OUT", out)
        .current_dir(dir));
}

#[tokio::test]
async fn a_rollup_build_with_code_splitting() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    on_a_branch(dir, |dir| {
        rollup_sources(dir, "production");
        write(dir, ".gitignore", "build/\nprod/\n");
        write(dir, "stamp.toml", "folder = \"build\"\nurl_path = \"/\"\n");
    });
    rollup_build(dir, "prod");
    let origin = Origin::start().unwrap();
    origin.serve_dir("", &dir.join("prod"), &[]);
    let app = App::start(origin, Origin::start().unwrap());
    rollup_sources(dir, "ticket");
    commit(dir, "the ticket");
    rollup_build(dir, "build");
    let browser = Browser::start().await.unwrap();
    app.scenario(
        &browser,
        Scenario {
            key: "ROLL-1",
            untouched: &["/"],
            check: SHOW_OUT,
            production: "rollup production",
            ticket: "rollup ticket",
        },
        || {
            // No manifest: --build pairs the entry from the built index.html.
            app.stamp(dir, &["ROLL-1", "--update", "--once", "--build"]);
        },
        dir,
    )
    .await;
    browser.close().await.unwrap();
}

// --------------------------------------------------------------- webpack

fn webpack_sources(dir: &Path, word: &str, color: &str) {
    let nm = node_modules();
    let module = |name: &str| nm.join(name).display().to_string();
    write(
        dir,
        "webpack.config.cjs",
        &format!(
            "const HtmlWebpackPlugin = require('{html}');\n\
             const MiniCssExtractPlugin = require('{css}');\n\
             module.exports = {{\n\
               mode: 'production',\n\
               context: __dirname,\n\
               entry: './src/index.js',\n\
               output: {{ path: require('path').resolve(__dirname, process.env.OUT), publicPath: '/', \
                 filename: '[name].[contenthash:8].js', chunkFilename: '[name].[contenthash:8].js', clean: true }},\n\
               resolveLoader: {{ modules: ['{nm}'] }},\n\
               module: {{ rules: [{{ test: /\\.css$/, use: [MiniCssExtractPlugin.loader, '{css_loader}'] }}] }},\n\
               plugins: [new MiniCssExtractPlugin({{ filename: '[name].[contenthash:8].css' }}),\n\
                 new HtmlWebpackPlugin({{ templateContent: '<!doctype html><html><head><title>shop</title></head>\
<body><h1>shop</h1><p id=out>loading</p></body></html>', \
                   minify: {{ collapseWhitespace: true, removeOptionalTags: true, removeAttributeQuotes: true }} }})],\n\
             }};\n",
            html = module("html-webpack-plugin"),
            css = module("mini-css-extract-plugin"),
            css_loader = module("css-loader"),
            nm = nm.display(),
        ),
    );
    write(
        dir,
        "src/index.js",
        "import './app.css';\n\
         import(/* webpackChunkName: \"lazy\" */ './lazy.js').then((m) => { document.getElementById('out').textContent = m.words(); });\n",
    );
    write(
        dir,
        "src/lazy.js",
        &format!("export const words = () => 'webpack {word}';\n"),
    );
    write(dir, "src/app.css", &format!("h1 {{ color: {color}; }}\n"));
}

fn webpack_build(dir: &Path, out: &str) {
    let webpack = node_modules().join("webpack");
    run(Command::new("node")
        .arg("-e")
        .arg(format!(
            "require('{}')(require('./webpack.config.cjs'), (err, stats) => {{ \
               if (err || stats.hasErrors()) {{ console.error(err || stats.toString()); process.exit(1); }} }});",
            webpack.display()
        ))
        .env("OUT", out)
        .current_dir(dir));
}

/// webpack 5 as most apps have it: html-webpack-plugin's minified page
/// (its `<p>` left unclosed before `</body>`, the app's script writes into
/// it), mini-css-extract-plugin's stylesheet and a lazy chunk, hashed names
/// throughout. The badge stays out of the unclosed `<p>`.
#[tokio::test]
async fn a_webpack_build_with_extracted_css_and_a_lazy_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    on_a_branch(dir, |dir| {
        webpack_sources(dir, "production", "rgb(1, 2, 3)");
        write(dir, ".gitignore", "build/\nprod/\n");
        write(dir, "stamp.toml", "folder = \"build\"\nurl_path = \"/\"\n");
    });
    webpack_build(dir, "prod");
    let page = std::fs::read_to_string(dir.join("prod/index.html")).unwrap();
    // Minified as html-minifier-terser does with `removeOptionalTags`:
    // the `<p>` the app writes into is never closed.
    assert!(
        page.contains("<p id=out>loading") && !page.contains("</p>"),
        "{page}"
    );
    let origin = Origin::start().unwrap();
    origin.serve_dir("", &dir.join("prod"), &[]);
    let app = App::start(origin, Origin::start().unwrap());
    webpack_sources(dir, "ticket", "rgb(4, 5, 6)");
    commit(dir, "the ticket");
    webpack_build(dir, "build");
    let browser = Browser::start().await.unwrap();
    app.scenario(
        &browser,
        Scenario {
            key: "WP-1",
            untouched: &["/"],
            check: SHOW_OUT,
            production: "webpack production",
            ticket: "webpack ticket",
        },
        || {
            app.stamp(dir, &["WP-1", "--update", "--once"]);
        },
        dir,
    )
    .await;
    app.expect(
        &browser,
        "/?dev=WP-1",
        "return getComputedStyle(document.querySelector('h1')).color",
        "rgb(4, 5, 6)",
    )
    .await;
    // The entry, its stylesheet and the lazy chunk: all the ticket's.
    let said = crate::setups::badge_says(&browser, "3 of 3 modules ran").await;
    assert!(said.contains("WP-1"), "{said}");
    let inside = browser
        .execute(
            "return !!document.querySelector('#out ticket-stamp-badge, body ticket-stamp-badge')",
        )
        .await
        .unwrap();
    assert_eq!(inside, false, "the badge is outside <body>");
    browser.close().await.unwrap();
}

// --------------------------------------------------------- hostile input

#[tokio::test]
async fn the_map_and_mirror_endpoints_refuse_what_they_must() {
    let origin = Origin::start().unwrap();
    let evil = Origin::start().unwrap();
    evil.route("/m.json", Route::bytes("application/json", b"{}".to_vec()));
    let app = App::start(origin, Origin::start().unwrap());
    let c = client();
    let status = |path: String| {
        let c = c.clone();
        let url = app.proxy.url(&path);
        async move { c.get(url).send().await.unwrap().status().as_u16() }
    };
    // Not an address of the request's choosing: no fetch of another site.
    let enc = |s: &str| s.replace(':', "%3A").replace('/', "%2F");
    assert_eq!(
        status(format!(
            "/__stamp/map?v=00&src={}",
            enc(&format!("{}/m.json", evil.url))
        ))
        .await,
        400
    );
    assert_eq!(
        status(format!(
            "/__stamp/map?v=00&src={}",
            enc("//evil.example/m.json")
        ))
        .await,
        400
    );
    assert_eq!(status("/__stamp/map?src=%2Fm.json".into()).await, 400);
    assert_eq!(evil.hits("/m.json"), 0);
    // No open redirect: only origins a ticket overrides or that are configured.
    assert_eq!(
        status(format!(
            "/__stamp/o/http/{}/x.js",
            evil.url.trim_start_matches("http://")
        ))
        .await,
        404
    );
    assert_eq!(status("/__stamp/o/javascript/alert(1)".into()).await, 404);
    let configured = client()
        .get(app.proxy.url(&format!(
            "/__stamp/o/http/{}/lib/x.js?v=1",
            app.cdn.url.trim_start_matches("http://")
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(configured.status(), 302);
    assert_eq!(
        configured.headers()["location"],
        format!("{}/lib/x.js?v=1", app.cdn.url).as_str()
    );
    // A module on an origin that is not configured is refused at upload.
    let resp = client()
        .put(app.proxy.url("/__stamp/api/v1/tickets/EVIL-1/modules/x.js"))
        .header("x-stamp-origin", evil.url.as_str())
        .body("export {}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("asset_origins"),
        "{body}"
    );
    for bad in [
        "javascript:alert(1)",
        "https://user@cdn.example",
        "https://cdn.example/path",
        "\u{7f}",
    ] {
        let resp = client()
            .put(app.proxy.url("/__stamp/api/v1/tickets/EVIL-1/modules/x.js"))
            .header("x-stamp-origin", bad)
            .body("export {}")
            .send()
            .await;
        if let Ok(resp) = resp {
            assert_eq!(resp.status(), 400, "{bad}");
        }
    }
    // The reserved namespace is the proxy's: no upload can claim a mirror path.
    let resp = client()
        .put(
            app.proxy
                .url("/__stamp/api/v1/tickets/EVIL-1/modules/__stamp/o/https/x.test/a.js"),
        )
        .body("export {}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    // A ticket with a file production has and one it lacks.
    app.origin.route(
        "/assets/app-1a2B3c4D.js",
        Route::bytes("text/javascript", b"production app".to_vec()),
    );
    for (path, body) in [
        ("assets/app-1a2B3c4D.js", "ticket app"),
        ("assets/new-9z8Y7x6W.js", "ticket new"),
    ] {
        let resp = client()
            .put(
                app.proxy
                    .url(&format!("/__stamp/api/v1/tickets/HOST-1/modules/{path}")),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{resp:?}");
    }
    let cookie = ("cookie", "ticket_stamp=dev.HOST-1");
    let get = |path: &str, with_cookie: bool| {
        let mut r = client().get(app.proxy.url(path));
        if with_cookie {
            r = r.header(cookie.0, cookie.1);
        }
        r.send()
    };
    // Production's own file is never answered with ticket bytes at its URL.
    let r = get("/assets/app-1a2B3c4D.js", true).await.unwrap();
    assert_eq!(r.text().await.unwrap(), "production app");
    // A file only the ticket's build has: the ticket's, for the ticket only.
    let r = get("/assets/new-9z8Y7x6W.js", true).await.unwrap();
    assert_eq!(r.status(), 200);
    // No cache at all keeps it under that URL: neither the HTTP cache nor
    // a service worker's (`Vary: *` is refused by the Cache API).
    assert_eq!(r.headers()["cache-control"], "private, no-store");
    assert_eq!(r.headers()["vary"], "*");
    assert!(r.headers()["server-timing"]
        .to_str()
        .unwrap()
        .starts_with("ticket-stamp;desc="));
    assert_eq!(
        stamp_tests::without_marker(&r.text().await.unwrap()),
        "ticket new"
    );
    assert_eq!(
        get("/assets/new-9z8Y7x6W.js", false)
            .await
            .unwrap()
            .status(),
        404
    );

    // The map endpoint merges import maps, and relays nothing else.
    app.origin.route(
        "/secret.svg",
        Route::bytes("image/svg+xml", b"<svg onload=alert(1)>".to_vec())
            .header("set-cookie", "x=1"),
    );
    app.origin.route(
        "/data.json",
        Route::bytes(
            "application/json",
            br#"{"imports":{},"token":"s3cret"}"#.to_vec(),
        ),
    );
    let r = get("/__stamp/map?dev=HOST-1&v=00&src=%2Fsecret.svg", false)
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert!(r.headers().get("set-cookie").is_none());
    assert!(!r.text().await.unwrap().contains("<svg"));
    let r = get("/__stamp/map?dev=HOST-1&v=00&src=%2Fdata.json", false)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert!(
        !r.text().await.unwrap().contains("s3cret"),
        "only what import maps mean is relayed"
    );
    let r = get(
        "/__stamp/map?dev=HOST-1&v=00&src=%2Fdata.json&integrity=sha384-bm9wZQ%3D%3D",
        false,
    )
    .await
    .unwrap();
    // Refused before a byte of it is sent (or, were the headers out, the
    // response would be cut off).
    let status = r.status();
    let text = r.text().await;
    assert!(
        status == 502 && text.as_ref().is_ok_and(|t| t.contains("integrity")) || text.is_err(),
        "a map failing its integrity is refused: {status} {text:?}"
    );
    let head = client()
        .head(
            app.proxy
                .url("/__stamp/map?dev=HOST-1&v=00&src=%2Fdata.json"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 405);

    // An entry pattern must match the module's own path.
    let resp = client()
        .put(
            app.proxy
                .url("/__stamp/api/v1/tickets/EVIL-1/modules/assets/index-Ab12Cd34.js"),
        )
        .header("x-stamp-specifier", "/admin/[hash:8].js")
        .body("export {}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

// ------------------------------------------------------------ live reload

#[tokio::test]
async fn a_live_dev_page_reloads_itself_after_an_upload() {
    let origin = Origin::start().unwrap();
    // A strict policy: the live script must pass it on its own terms.
    origin.route(
        "/",
        Route::html(
            "<!doctype html><html><head>\
             <script type=\"importmap\" nonce=\"p4ge\">{\"imports\":{\"@app/greet\":\"/apps/greet.js\"}}</script>\
             </head><body><p id=out>loading</p>\
             <script type=\"module\" nonce=\"p4ge\">import { greet } from '@app/greet'; document.getElementById('out').textContent = greet();</script>\
             </body></html>",
        )
        .header("content-security-policy", "default-src 'self'; script-src 'self' 'nonce-p4ge'"),
    );
    origin.route(
        "/apps/greet.js",
        Route::bytes(
            "text/javascript",
            b"export const greet = () => 'live production';".to_vec(),
        ),
    );
    let app = App::start(origin, Origin::start().unwrap());
    let work = project(
        "/apps",
        "apps",
        &[("greet.js", "export const greet = () => 'first save';")],
    );
    let out = app.stamp(work.path(), &["LIVE-1", "--update", "--once", "--live"]);
    assert!(
        out.contains("?dev=LIVE-1&stamp_live=1"),
        "the link turns it on: {out}"
    );
    let browser = Browser::start().await.unwrap();
    app.expect(
        &browser,
        "/?dev=LIVE-1&stamp_live=1",
        SHOW_OUT,
        "first save",
    )
    .await;
    // Save again; the open page must show it without the test navigating.
    write(
        &work.path().join("apps"),
        "greet.js",
        "export const greet = () => 'second save';",
    );
    commit(work.path(), "second save");
    app.stamp(work.path(), &["LIVE-1", "--update", "--once"]);
    let start = std::time::Instant::now();
    let mut last = String::new();
    while start.elapsed() < PAGE_TIMEOUT && last != "second save" {
        last = browser
            .execute(SHOW_OUT)
            .await
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last, "second save", "the page reloaded by itself");
    let console = browser.console().await.unwrap();
    assert!(
        !console
            .iter()
            .any(|e| e.message.contains("Content Security Policy")),
        "CSP-safe: {console:?}"
    );
    browser.close().await.unwrap();
    // Never on production, on ?qa= or without the parameter.
    let page = |q: &'static str| {
        let url = app.proxy.url(q);
        async move {
            client()
                .get(url)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    assert!(page("/?dev=LIVE-1&stamp_live=1")
        .await
        .contains("/__stamp/live?ticket=LIVE-1"));
    assert!(!page("/?dev=LIVE-1").await.contains("/__stamp/live"));
    assert!(!page("/?stamp_live=1").await.contains("/__stamp/live"));
    app.stamp(work.path(), &["LIVE-1", "--promote"]);
    assert!(!page("/?qa=LIVE-1&stamp_live=1")
        .await
        .contains("/__stamp/live"));
    // The stream refuses what it cannot watch.
    let r = client()
        .get(app.proxy.url("/__stamp/live?ticket=nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Only a browser that selected the ticket's dev view may follow it: the
    // stream says which variant comes next.
    let r = client()
        .get(
            app.proxy
                .url(&format!("/__stamp/live?ticket=LIVE-1&v={}", "0".repeat(64))),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

/// es-module-shims 2 with `hotReload`: a save swaps the module in the open
/// page (no navigation: the page's own state survives), and a save that
/// cannot be swapped (a new module) still reloads it.
#[tokio::test]
async fn a_live_dev_page_with_es_module_shims_hot_reload_swaps_the_saved_module() {
    let origin = Origin::start().unwrap();
    origin.route(
        "/",
        Route::html(
            "<!doctype html><html><head>\
             <script>window.esmsInitOptions = { shimMode: true, hotReload: true };</script>\
             <script src=\"/lib/es-module-shims.js\"></script>\
             <script type=\"importmap-shim\">{\"imports\":{\"@app/greet\":\"/hot/greet.js\"}}</script>\
             </head><body><p id=out>loading</p>\
             <script>window.pageId = Math.random();</script>\
             <script type=\"module-shim\">import { greet } from '@app/greet'; \
             document.getElementById('out').textContent = greet();</script>\
             </body></html>",
        ),
    );
    origin.route(
        "/lib/es-module-shims.js",
        Route::bytes(
            "text/javascript",
            npm_file("es-module-shims-2/dist/es-module-shims.js"),
        ),
    );
    origin.route(
        "/hot/greet.js",
        Route::bytes(
            "text/javascript",
            b"import { who } from './who.js'; export const greet = () => 'production ' + who;"
                .to_vec(),
        ),
    );
    origin.route(
        "/hot/who.js",
        Route::bytes("text/javascript", b"export const who = 'sibling';".to_vec()),
    );
    let app = App::start(origin, Origin::start().unwrap());
    let greet = |word: &str| {
        format!("import {{ who }} from './who.js'; export const greet = () => '{word} ' + who;")
    };
    let work = project("/hot", "hot", &[("greet.js", &greet("first"))]);
    app.stamp(work.path(), &["HOT-1", "--update", "--once", "--live"]);
    let browser = Browser::start().await.unwrap();
    let page = "/?dev=HOT-1&stamp_live=1";
    app.expect(&browser, page, SHOW_OUT, "first sibling").await;
    let page_id = browser.execute("return window.pageId").await.unwrap();
    let first_url = format!(
        "/hot/greet.js?__ts={}",
        stamp_model::ticket::Hash::of(greet("first").as_bytes())
    );
    let wait_for = |want: &'static str| {
        let browser = &browser;
        async move {
            let start = std::time::Instant::now();
            let mut last = String::new();
            while start.elapsed() < PAGE_TIMEOUT && last != want {
                last = browser
                    .execute(SHOW_OUT)
                    .await
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert_eq!(last, want);
        }
    };
    let variant = "return window.__ticketStamp.data.variant";
    let mut runs = browser.execute(variant).await.unwrap();
    // Two saves in a row: each is swapped into the same page, which then
    // says it runs the new set of modules (a page Turbo or htmx shows in it
    // stays in place).
    for word in ["second", "third"] {
        write(&work.path().join("hot"), "greet.js", &greet(word));
        commit(work.path(), word);
        app.stamp(work.path(), &["HOT-1", "--update", "--once"]);
        wait_for(if word == "second" {
            "second sibling"
        } else {
            "third sibling"
        })
        .await;
        assert_eq!(
            browser.execute("return window.pageId").await.unwrap(),
            page_id,
            "swapped in place after the {word} save, not reloaded"
        );
        let now = browser.execute(variant).await.unwrap();
        assert_ne!(now, runs, "after the {word} save");
        let cookie = browser.cookie("ticket_stamp").await.unwrap().unwrap();
        let served =
            stamp_tests::page_text(&app.proxy.url(page), &format!("ticket_stamp={cookie}")).await;
        assert_eq!(
            stamp_tests::probe_data(&served).unwrap()["variant"],
            now,
            "the set of modules a page of it is served with now"
        );
        runs = now;
    }
    // es-module-shims asked for the module again by the URL the page first
    // had, with its reload count; untouched siblings stayed production's.
    let resources = browser.resources().await.unwrap();
    assert!(
        resources
            .iter()
            .any(|r| r.url.ends_with(&format!("{first_url}?v=2"))),
        "{resources:?}"
    );
    // That URL is the browser's dev view, never cached; without the
    // selection it names what it always named.
    let cookie = browser.cookie("ticket_stamp").await.unwrap().unwrap();
    let hot = client()
        .get(app.proxy.url(&format!("{first_url}?v=2")))
        .header("cookie", format!("ticket_stamp={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(hot.status(), 200);
    assert_eq!(hot.headers()["cache-control"], "no-store");
    assert_eq!(hot.headers()["vary"], "Cookie");
    assert_eq!(
        stamp_tests::without_marker(&hot.text().await.unwrap()),
        greet("third")
    );
    let anonymous = client()
        .get(app.proxy.url(&format!("{first_url}?v=2")))
        .send()
        .await
        .unwrap();
    assert_ne!(anonymous.status(), 200, "the old hash is no open ticket's");
    // A new module cannot be swapped in: the page reloads instead.
    write(
        &work.path().join("hot"),
        "who.js",
        "export const who = 'ticket sibling';",
    );
    commit(work.path(), "who");
    app.stamp(work.path(), &["HOT-1", "--update", "--once"]);
    wait_for("third ticket sibling").await;
    assert_ne!(
        browser.execute("return window.pageId").await.unwrap(),
        page_id,
        "reloaded"
    );
    browser.close().await.unwrap();
}

/// A released ticket on a SystemJS app with an external map costs the
/// origin nothing more than production did: Chromium keeps the merged map
/// as long as the origin lets it keep its own (`max-age=60`), and a
/// revalidation with our tag reaches the origin as a conditional request
/// whose 304 becomes ours.
#[tokio::test]
async fn a_released_ticket_costs_an_external_map_app_nothing() {
    let origin = Origin::start().unwrap();
    systemjs_shop(&origin, Some("public, max-age=600"));
    origin.route(
        "/importmap.json",
        Route::bytes(
            "application/json",
            br#"{"imports":{"@app/main":"/apps/main.js","@app/greet":"/apps/greet.js"}}"#.to_vec(),
        )
        .header("cache-control", "public, max-age=60")
        .header("etag", "\"map-v1\"")
        .conditional(),
    );
    origin.route(
        "/apps/greet.js",
        Route::bytes(
            "text/javascript",
            SYSTEM_GREET.replace("GREETING", "production").into_bytes(),
        )
        .header("cache-control", "public, max-age=600"),
    );
    let proxy = Proxy::start(&origin.url, &[]).unwrap();
    let browser = Browser::start().await.unwrap();
    let views = |n: usize| {
        let (browser, url) = (&browser, proxy.url("/"));
        async move {
            for _ in 0..n {
                browser.goto(&url).await.unwrap();
                browser
                    .wait_for_text("#out", "", Duration::from_secs(10))
                    .await
                    .unwrap();
                let start = std::time::Instant::now();
                while browser.text("#out").await.unwrap() == "loading" {
                    assert!(start.elapsed() < Duration::from_secs(10));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            browser.text("#out").await.unwrap()
        }
    };
    assert_eq!(views(10).await, "production");
    let before = origin.hits("/importmap.json");
    assert_eq!(before, 1, "the browser kept production's map");

    // Released: every visitor gets the ticket's greet.js.
    let api = |m: &str, path: &str, body: &str| {
        client()
            .request(
                m.parse().unwrap(),
                proxy.url(&format!("/__stamp/api/v1/{path}")),
            )
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let put = api(
        "PUT",
        "tickets/MAP-1/modules/apps/greet.js",
        &SYSTEM_GREET.replace("GREETING", "released"),
    )
    .await
    .unwrap();
    assert!(put.status().is_success());
    for from in ["dev", "qa"] {
        let r = api(
            "POST",
            "tickets/MAP-1/promote",
            &format!("{{\"from\":\"{from}\"}}"),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    assert_eq!(views(10).await, "released");
    let after = origin.hits("/importmap.json") - before;
    assert_eq!(
        after, 1,
        "10 production views after the release fetched production's map {after} times"
    );

    // Revalidation: our tag carries the origin's, and its 304 is ours.
    let page = stamp_tests::get_text(&proxy.url("/")).await;
    let src = page
        .split("src=\"/__stamp/map?")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .replace("&amp;", "&");
    let url = proxy.url(&format!("/__stamp/map?{src}"));
    let first = client().get(&url).send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["cache-control"], "private, max-age=60");
    let tag = first.headers()["etag"].to_str().unwrap().to_string();
    let merged = first.text().await.unwrap();
    assert!(
        merged.contains("\"@app/greet\":\"/apps/greet.js?__ts="),
        "the ticket's greet.js is in: {merged}"
    );
    let again = client()
        .get(&url)
        .header("if-none-match", &tag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()["etag"].to_str().unwrap(), tag);
    assert_eq!(
        origin
            .last_headers("/importmap.json")
            .unwrap()
            .get("if-none-match")
            .map(|v| v.to_str().unwrap().to_string()),
        Some("\"map-v1\"".to_string()),
        "the origin was asked conditionally"
    );
    // A tag of ours for another variant, or forged, is a plain fetch.
    for forged in ["\"tsm.00.00.eIm1hcC12MSI\"", "\"map-v1\"", "*"] {
        let r = client()
            .get(&url)
            .header("if-none-match", forged)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{forged}");
    }
    browser.close().await.unwrap();
}
