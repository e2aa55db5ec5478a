//! Composed maps, generated: many pages, each with one to three import maps
//! placed inline, external (on the app's origin or a CDN) or added at
//! runtime, for every loader (native, es-module-shims 1 and 2 in shim mode,
//! es-module-shims 2 in polyfill mode, SystemJS, import-map-injector), the
//! real library from npm in Chromium.
//!
//! The oracle is production itself, not a model of the loaders' rules:
//! each page is first loaded without a ticket and records which file every
//! specifier ran; the ticket link must then run the same files, with the
//! ticket's version exactly where the ticket changed the file production
//! ran. And the probe must tell the truth: the files it says ran are the
//! ticket's files that did, and the production files it says ran instead
//! are the changed files whose production body did.
//!
//! The cases are drawn from a seeded generator (`MATRIX_SEED` to draw
//! others, `MATRIX_CASES` per loader); a failure prints the case.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use stamp_tests::browser::Browser;
use stamp_tests::{client, Origin, Route};

use crate::apps::{npm_file, App, CORS};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loader {
    Native,
    Esms1Shim,
    Esms2Shim,
    Esms2Polyfill,
    SystemJs,
    Injector,
}

impl Loader {
    const ALL: [Loader; 6] = [
        Loader::Native,
        Loader::Esms1Shim,
        Loader::Esms2Shim,
        Loader::Esms2Polyfill,
        Loader::SystemJs,
        Loader::Injector,
    ];

    fn map_type(self) -> &'static str {
        match self {
            Loader::Native | Loader::Esms2Polyfill => "importmap",
            Loader::Esms1Shim | Loader::Esms2Shim => "importmap-shim",
            Loader::SystemJs => "systemjs-importmap",
            Loader::Injector => "injector-importmap",
        }
    }

    /// Where its maps may be: native maps cannot be external.
    fn placements(self) -> &'static [Placement] {
        match self {
            Loader::Native | Loader::Esms2Polyfill => &[Placement::Inline, Placement::Dynamic],
            _ => &[
                Placement::Inline,
                Placement::External,
                Placement::Cdn,
                Placement::Dynamic,
            ],
        }
    }

    fn system(self) -> bool {
        self == Loader::SystemJs
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    Inline,
    /// `src=` on the app's origin.
    External,
    /// `src=` on the CDN.
    Cdn,
    /// Added by a script at runtime, before the first import.
    Dynamic,
}

/// The files a case has: name → (on the CDN, path below the case's folder).
const FILES: [(&str, bool, &str); 7] = [
    ("a1", false, "a1.js"),
    ("a2", false, "a2.js"),
    ("b", false, "b.js"),
    ("x", false, "lib/x.js"),
    ("dep", false, "dep.js"),
    ("w", true, "w.js"),
    ("wh", true, "wh.js"),
];

/// What the page imports, in order.
const SPECIFIERS: [&str; 4] = ["a", "b", "lib/x.js", "w"];

use stamp_tests::Xorshift as Draw;

#[derive(Debug)]
struct Case {
    n: usize,
    loader: Loader,
    /// Each map: where it is, and its entries (`a`, `b`, `lib/`, `w`, the
    /// CDN's scope) by the name of the file they point at.
    maps: Vec<(Placement, BTreeMap<&'static str, &'static str>, bool)>,
    /// The files the ticket changes.
    changed: BTreeSet<&'static str>,
}

impl Case {
    fn draw(n: usize, loader: Loader, r: &mut Draw, placement: Option<Placement>) -> Case {
        let count = 1 + r.below(3);
        let places = loader.placements();
        let mut maps: Vec<(Placement, BTreeMap<&'static str, &'static str>, bool)> = (0..count)
            .map(|i| {
                let p = match (i, placement) {
                    (0, Some(p)) => p,
                    _ => places[r.below(places.len())],
                };
                (p, BTreeMap::new(), false)
            })
            .collect();
        // `a` in one map or more, to one of two files: a redefinition.
        let mut any = false;
        for m in maps.iter_mut() {
            if r.coin() {
                m.1.insert("a", if r.coin() { "a1" } else { "a2" });
                any = true;
            }
        }
        if !any {
            maps[0].1.insert("a", "a1");
        }
        let one = r.below(count);
        maps[one].1.insert("b", "b");
        let one = r.below(count);
        maps[one].1.insert("lib/", "x");
        let one = r.below(count);
        maps[one].1.insert("w", "w");
        let one = r.below(count);
        maps[one].2 = true;
        let names = ["a1", "a2", "b", "x", "dep", "w"];
        let mut changed = BTreeSet::new();
        while changed.is_empty() {
            for name in names {
                if r.below(3) == 0 {
                    changed.insert(name);
                }
            }
        }
        Case {
            n,
            loader,
            maps,
            changed,
        }
    }

    fn dir(&self) -> String {
        format!("/m{}/", self.n)
    }

    fn key(&self) -> String {
        format!("MX-{}", self.n)
    }
}

/// A module's body: its default export names the file and the side.
fn body(name: &str, side: &str, system: bool) -> String {
    match (name, system) {
        ("w", false) => format!(
            "import h from './wh.js';\nimport dep from 'dep';\nexport default 'w:{side}+' + h + '+' + dep;\n"
        ),
        ("w", true) => format!(
            "System.register(['./wh.js','dep'],function(e){{var h,d;return{{setters:[function(m){{h=m.default}},function(m){{d=m.default}}],execute:function(){{e('default','w:{side}+'+h+'+'+d)}}}}}});\n"
        ),
        (_, false) => format!("export default '{name}:{side}';\n"),
        (_, true) => format!(
            "System.register([],function(e){{return{{execute:function(){{e('default','{name}:{side}')}}}}}});\n"
        ),
    }
}

/// The map's JSON. `base` is how it names the app's files: a path, or the
/// proxy's absolute URL in a map on the CDN.
fn map_json(
    case: &Case,
    entries: &BTreeMap<&str, &str>,
    scope: bool,
    base: &str,
    cdn: &str,
) -> String {
    let dir = case.dir();
    let mut imports = serde_json::Map::new();
    for (k, file) in entries {
        let target = match *file {
            "x" => format!("{base}{dir}lib/"),
            "w" => format!("{cdn}{dir}w.js"),
            f => format!("{base}{dir}{f}.js"),
        };
        imports.insert(k.to_string(), Value::String(target));
    }
    let mut map = json!({ "imports": imports });
    if scope {
        map["scopes"] = json!({ format!("{cdn}/"): { "dep": format!("{base}{dir}dep.js") } });
    }
    map.to_string()
}

fn page(case: &Case, proxy: &str, cdn: &str) -> (String, Vec<(String, String, bool)>) {
    let loader = case.loader;
    let ty = loader.map_type();
    let mut head = String::new();
    let mut external = Vec::new();
    match loader {
        Loader::Esms1Shim => head.push_str("<script async src=\"/lib/esms1.js\"></script>"),
        Loader::Esms2Shim | Loader::Esms2Polyfill => {
            head.push_str("<script async src=\"/lib/esms2.js\"></script>")
        }
        _ => {}
    }
    for (i, (place, entries, scope)) in case.maps.iter().enumerate() {
        match place {
            Placement::Inline => {
                let _ = write!(
                    head,
                    "<script type=\"{ty}\">{}</script>",
                    map_json(case, entries, *scope, "", cdn)
                );
            }
            Placement::Dynamic => {
                let text =
                    serde_json::to_string(&map_json(case, entries, *scope, "", cdn)).unwrap();
                let _ = write!(
                    head,
                    "<script>(() => {{ const s = document.createElement('script'); s.type = '{ty}'; \
                     s.textContent = {text}; document.head.appendChild(s); }})();</script>"
                );
            }
            Placement::External => {
                let path = format!("{}map{i}.json", case.dir());
                let _ = write!(head, "<script type=\"{ty}\" src=\"{path}\"></script>");
                external.push((path, map_json(case, entries, *scope, "", cdn), false));
            }
            Placement::Cdn => {
                let path = format!("{}map{i}.json", case.dir());
                let _ = write!(head, "<script type=\"{ty}\" src=\"{cdn}{path}\"></script>");
                external.push((path, map_json(case, entries, *scope, proxy, cdn), true));
            }
        }
    }
    let specs = serde_json::to_string(&SPECIFIERS).unwrap();
    let run = |import: &str| {
        format!(
            "const r = {{}}; for (const s of {specs}) {{ try {{ r[s] = (await {import}(s)).default; }} \
             catch (e) {{ r[s] = 'error'; console.log('matrix', s, String(e)); }} }} window.__matrix = r;"
        )
    };
    let entry = match loader {
        Loader::Native | Loader::Esms2Polyfill => {
            format!("<script type=\"module\">{}</script>", run("import"))
        }
        Loader::Esms1Shim | Loader::Esms2Shim => {
            format!(
                "<script type=\"module-shim\">{}</script>",
                run("importShim")
            )
        }
        Loader::SystemJs => format!(
            "<script src=\"/lib/system.js\"></script><script>(async () => {{ {} }})();</script>",
            run("System.import")
        ),
        Loader::Injector => format!(
            "<script src=\"/lib/injector.js\"></script>\
             <script>window.importMapInjector.initPromise.then(async () => {{ {} }});</script>",
            run("import")
        ),
    };
    (
        format!(
            "<!doctype html><html><head>{head}{entry}</head><body><p>case {}</p></body></html>",
            case.n
        ),
        external,
    )
}

fn route(origin: &Origin, path: &str, ty: &str, body: &str) {
    let mut r = Route::bytes(ty, body.as_bytes().to_vec());
    for (k, v) in CORS {
        r = r.header(k, v);
    }
    origin.route(path, r);
}

/// Loads `url` and returns what each specifier ran, and what the probe
/// says (the ticket's files that ran, production's that ran instead).
async fn visit(browser: &Browser, url: &str) -> (BTreeMap<String, String>, Option<Value>) {
    browser.goto(url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let results = loop {
        let v = browser
            .execute("return window.__matrix ? JSON.stringify(window.__matrix) : null")
            .await
            .unwrap_or(Value::Null);
        if let Some(s) = v.as_str() {
            break serde_json::from_str::<BTreeMap<String, String>>(s).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "{url} never finished: {:?}",
            browser.console().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Resource Timing reaches the probe asynchronously; its state settles.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let probe = probe_state(browser).await;
    (results, probe)
}

/// What the probe says now: the ticket's files that ran, and production's
/// that ran in their place.
async fn probe_state(browser: &Browser) -> Option<Value> {
    let probe = browser
        .execute(
            "const S = window.__ticketStamp; if (!S) return null; \
             const p = h => S.data.modules.find(m => m.h === h).p; \
             return { ran: [...S.ran].map(p), production: [...S.prod.values()].map(m => m.p) };",
        )
        .await
        .unwrap();
    (!probe.is_null()).then_some(probe)
}

/// The files the probe's state lists under `k` (`ran`, `production`).
fn said_of(probe: &Option<Value>, k: &str) -> BTreeSet<String> {
    probe
        .as_ref()
        .and_then(|p| p[k].as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The page's import maps as the browser holds them, for a failure's story.
async fn maps_in(browser: &Browser) -> String {
    browser
        .execute(
            "return [...document.querySelectorAll('script[type]')]\
             .filter(s => /importmap/.test(s.type))\
             .map(s => s.type + (s.src ? ' src=' + s.src : '') + ' ' + s.textContent).join('\\n    ');",
        )
        .await
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

/// The files whose body ran, by the strings they returned.
fn ran_files(results: &BTreeMap<String, String>) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for v in results.values() {
        for part in v.split('+') {
            if let Some((name, side)) = part.split_once(':') {
                out.insert((name.to_string(), side.to_string()));
            }
        }
    }
    out
}

fn location(case: &Case, name: &str, cdn: &str) -> String {
    let (_, on_cdn, rel) = FILES.iter().find(|f| f.0 == name).unwrap();
    if *on_cdn {
        format!("{cdn}{}{rel}", case.dir())
    } else {
        format!("{}{rel}", case.dir())
    }
}

#[tokio::test]
async fn composed_maps_in_every_loader_run_what_the_ticket_changed() {
    let seed: u64 = std::env::var("MATRIX_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_7157_a3b1);
    let per_loader: usize = std::env::var("MATRIX_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let origin = Origin::start().unwrap();
    let cdn = Origin::start().unwrap();
    for (path, rel) in [
        ("/lib/esms1.js", "es-module-shims/dist/es-module-shims.js"),
        ("/lib/esms2.js", "es-module-shims-2/dist/es-module-shims.js"),
        ("/lib/system.js", "systemjs/dist/system.js"),
        (
            "/lib/injector.js",
            "@single-spa/import-map-injector/lib/import-map-injector.js",
        ),
    ] {
        origin.route(path, Route::bytes("text/javascript", npm_file(rel)));
    }
    let app = App::start(origin, cdn);
    let (proxy, cdn) = (app.proxy.url.clone(), app.cdn.url.clone());
    let mut r = Draw(seed | 1);
    let mut cases = Vec::new();
    for loader in Loader::ALL {
        for i in 0..per_loader {
            // Every placement first leads one case of each loader.
            let places = loader.placements();
            let first = places.get(i).copied();
            cases.push(Case::draw(cases.len(), loader, &mut r, first));
        }
    }
    // MATRIX_ONLY=28,29 runs those cases alone (to look at one closely).
    if let Ok(only) = std::env::var("MATRIX_ONLY") {
        let only: BTreeSet<usize> = only
            .split(',')
            .filter_map(|n| n.trim().parse().ok())
            .collect();
        cases.retain(|c| only.contains(&c.n));
    }
    for case in &cases {
        let system = case.loader.system();
        let (html, external) = page(case, &proxy, &cdn);
        app.origin.route(&case.dir(), Route::html(&html));
        for (path, json, on_cdn) in external {
            let host = if on_cdn { &app.cdn } else { &app.origin };
            route(host, &path, "application/importmap+json", &json);
        }
        for (name, on_cdn, rel) in FILES {
            let host = if on_cdn { &app.cdn } else { &app.origin };
            route(
                host,
                &format!("{}{rel}", case.dir()),
                "text/javascript",
                &body(name, "prod", system),
            );
        }
    }
    let browser = Browser::start().await.unwrap();
    let mut failures = Vec::new();
    // Production first, every page: what each specifier runs there.
    let mut baselines = Vec::new();
    for case in &cases {
        let (results, probe) = visit(&browser, &format!("{proxy}{}", case.dir())).await;
        assert!(probe.is_none(), "case {case:?}: production carries a probe");
        baselines.push(results);
    }
    // The matrix is no matrix of failures: production runs almost all.
    let total = baselines.iter().map(BTreeMap::len).sum::<usize>();
    let failed = baselines
        .iter()
        .flat_map(BTreeMap::values)
        .filter(|v| *v == "error")
        .count();
    assert!(
        failed * 5 < total,
        "production fails {failed} of {total} imports: {baselines:?}"
    );
    for (case, baseline) in cases.iter().zip(&baselines) {
        let system = case.loader.system();
        for name in &case.changed {
            let (_, on_cdn, rel) = FILES.iter().find(|f| f.0 == *name).unwrap();
            let mut req = client()
                .put(format!(
                    "{proxy}/__stamp/api/v1/tickets/{}/modules/m{}/{rel}",
                    case.key(),
                    case.n
                ))
                .body(body(name, "ticket", system));
            if *on_cdn {
                req = req.header("x-stamp-origin", cdn.as_str());
            }
            let resp = req.send().await.unwrap();
            assert!(
                resp.status().is_success(),
                "{case:?}: upload {name}: {}",
                resp.status()
            );
        }
        let (results, probe) = visit(
            &browser,
            &format!("{proxy}{}?dev={}", case.dir(), case.key()),
        )
        .await;
        // The ticket applies: production's files, the changed ones swapped.
        let expected: BTreeMap<String, String> = baseline
            .iter()
            .map(|(spec, v)| {
                let swapped = v
                    .split('+')
                    .map(|part| match part.split_once(':') {
                        Some((name, "prod")) if case.changed.contains(name) => {
                            format!("{name}:ticket")
                        }
                        _ => part.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join("+");
                (spec.clone(), swapped)
            })
            .collect();
        // A specifier production fails to load (es-module-shims 1 rejects a
        // whole later map that defines a key again) is no setup anyone
        // ships: what the ticket's page runs for it is not compared.
        let results_cmp: BTreeMap<String, String> = results
            .iter()
            .filter(|(k, _)| expected.get(*k).is_some_and(|v| v != "error"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let expected: BTreeMap<String, String> =
            expected.into_iter().filter(|(_, v)| v != "error").collect();
        let mut problems = Vec::new();
        if results_cmp != expected {
            problems.push(format!("ran {results:?}, production ran {baseline:?}, so the ticket should run {expected:?}"));
        }
        // The probe tells the truth about what ran, whatever ran.
        let ran = ran_files(&results);
        let truth_ran: BTreeSet<String> = case
            .changed
            .iter()
            .filter(|n| ran.contains(&(n.to_string(), "ticket".into())))
            .map(|n| location(case, n, &cdn))
            .collect();
        let truth_prod: BTreeSet<String> = case
            .changed
            .iter()
            .filter(|n| ran.contains(&(n.to_string(), "prod".into())))
            .map(|n| location(case, n, &cdn))
            .collect();
        // The probe hears of files from Resource Timing and other
        // documents (workers, SystemJS's hook) a moment later: what it says
        // must come to the truth, and a lagging page gets a few seconds.
        let mut probe = probe;
        let deadline = Instant::now() + Duration::from_secs(5);
        let settled = |p: &Option<Value>| {
            said_of(p, "ran") == truth_ran && said_of(p, "production") == truth_prod
        };
        while probe.is_some() && !settled(&probe) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            probe = probe_state(&browser).await;
        }
        let said = |k: &str| said_of(&probe, k);
        if probe.is_none() {
            problems.push("no probe on the ticket's page".into());
        } else {
            if said("ran") != truth_ran {
                problems.push(format!(
                    "the probe says {:?} ran; {truth_ran:?} did",
                    said("ran")
                ));
            }
            if said("production") != truth_prod {
                problems.push(format!(
                    "the probe says production's {:?} ran instead; {truth_prod:?} did",
                    said("production")
                ));
            }
        }
        if !problems.is_empty() {
            failures.push(format!(
                "case {} ({:?}): {}\n  {case:?}\n  maps: {}",
                case.n,
                case.loader,
                problems.join("; "),
                maps_in(&browser).await
            ));
        }
    }
    browser.close().await.unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} cases (seed {seed}):\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
