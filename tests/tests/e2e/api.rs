//! The control API: its contract in-process (`InProcess`, the same config a
//! proxy reads), and through a real stamp-proxy where the data plane, the
//! log, Redis or a fleet take part: the lifecycle on both stores,
//! stage isolation, the overlay, concurrency, history, roles, auth modes,
//! input limits, Redis outages, and a fleet of two proxies on one Redis.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use stamp_tests::{
    client, get_text, import_map, module_url, Api, InProcess, Origin, Proxy, RedisServer, Route,
};

const PAGE: &str =
    "<html><head><script type=module src=/src/main.js></script></head><body>prod</body></html>";

pub(crate) const DEV: &str = "dev-secret";
pub(crate) const QA: &str = "qa-secret";
pub(crate) const ADMIN: &str = "admin-secret";

/// A config file with one token per role.
pub(crate) fn config(dir: &std::path::Path, origin: &str, store: &str, extra: &str) -> String {
    let h = stamp_control::hash_token;
    let text = format!(
        "origin = \"{origin}\"\nstore = \"{store}\"\n{extra}\n\
         [[tokens]]\nname = \"alice\"\nrole = \"dev\"\nsha256 = \"{}\"\n\
         [[tokens]]\nname = \"quinn\"\nrole = \"qa\"\nsha256 = \"{}\"\n\
         [[tokens]]\nname = \"root\"\nrole = \"admin\"\nsha256 = \"{}\"\n",
        h(DEV),
        h(QA),
        h(ADMIN)
    );
    let path = dir.join("proxy.toml");
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

struct Env {
    origin: Origin,
    proxy: Proxy,
    _dir: tempfile::TempDir,
}

fn start(store: Option<&str>, extra: &str) -> Env {
    let origin = Origin::start().unwrap();
    origin.route("/", Route::html(PAGE));
    let dir = tempfile::tempdir().unwrap();
    let store = store
        .map(str::to_string)
        .unwrap_or_else(|| dir.path().join("store").to_string_lossy().into_owned());
    let conf = config(dir.path(), &origin.url, &store, extra);
    let proxy = Proxy::start_with(None, &["--config", &conf], &[]).unwrap();
    Env {
        origin,
        proxy,
        _dir: dir,
    }
}

pub(crate) async fn call(
    api: &impl Api,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Vec<u8>>,
) -> (u16, Value) {
    api.call_h(method, path, token, body, &[]).await
}

pub(crate) async fn call_h(
    api: &impl Api,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Vec<u8>>,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    api.call_h(method, path, token, body, headers).await
}

/// The control plane alone, in-process, with the same tokens.
pub(crate) async fn in_process(extra: &str) -> InProcess {
    let dir = tempfile::tempdir().unwrap();
    let conf = config(dir.path(), "http://127.0.0.1:9", "unused", extra);
    let text = std::fs::read_to_string(conf).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("store ="))
        .map(|l| format!("{l}\n"))
        .collect();
    InProcess::start(&text).await.unwrap()
}

pub(crate) async fn upload(api: &impl Api, key: &str, path: &str, body: &str) -> (u16, Value) {
    call(
        api,
        "PUT",
        &format!("tickets/{key}/modules/{path}"),
        Some(DEV),
        Some(body.as_bytes().to_vec()),
    )
    .await
}

/// A move as a careful client makes it: stating the stage it read.
pub(crate) async fn act(api: &impl Api, key: &str, action: &str, token: &str) -> (u16, Value) {
    let (_, t) = call(api, "GET", &format!("tickets/{key}"), Some(token), None).await;
    let body = match t["stage"].as_str() {
        Some(stage) => json!({ "from": stage }).to_string().into_bytes(),
        None => Vec::new(),
    };
    call(
        api,
        "POST",
        &format!("tickets/{key}/{action}"),
        Some(token),
        Some(body),
    )
    .await
}

pub(crate) async fn lifecycle(proxy: &impl Api) {
    // First upload creates the ticket in dev.
    let (s, v) = upload(proxy, "tkt-1", "src/main.js", "v1").await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["stage"], "dev");
    assert_eq!(
        v["module"]["url"],
        module_url("/src/main.js", "v1").as_str()
    );
    let (s, _) = upload(proxy, "TKT-1", "src/main.js", "v1").await;
    assert_eq!(s, 200);

    // Illegal moves from dev, each naming the stage and the allowed actions.
    let (s, v) = act(proxy, "TKT-1", "revert", ADMIN).await;
    assert_eq!(s, 409);
    assert_eq!(v["error"]["code"], "illegal_transition");
    assert_eq!(v["error"]["stage"], "dev");
    assert_eq!(
        v["error"]["allowed"],
        json!(["upload", "delete", "promote", "close"])
    );

    // dev → qa → prod, with an upload in between that changes dev only.
    assert_eq!(act(proxy, "TKT-1", "promote", DEV).await.0, 200);
    upload(proxy, "TKT-1", "src/main.js", "v2").await;
    let (_, t) = call(proxy, "GET", "tickets/TKT-1", Some(DEV), None).await;
    assert_eq!(t["stage"], "qa");
    assert_eq!(
        t["modules"]["qa"][0]["url"],
        module_url("/src/main.js", "v1").as_str()
    );
    assert_eq!(
        t["modules"]["dev"][0]["url"],
        module_url("/src/main.js", "v2").as_str()
    );
    assert!(t["links"]["qa"].as_str().unwrap().ends_with("/?qa=TKT-1"));

    assert_eq!(act(proxy, "TKT-1", "sign-off", QA).await.0, 200);
    assert_eq!(act(proxy, "TKT-1", "promote", QA).await.0, 200);
    let (s, v) = act(proxy, "TKT-1", "close", ADMIN).await;
    assert_eq!((s, v["error"]["stage"].clone()), (409, json!("prod")));
    let (s, v) = act(proxy, "TKT-1", "promote", ADMIN).await;
    assert_eq!(
        (s, v["error"]["allowed"].clone()),
        (409, json!(["upload", "delete", "revert"]))
    );

    // prod → qa → dev → closed → re-initiated by an upload, history kept.
    assert_eq!(act(proxy, "TKT-1", "revert", ADMIN).await.0, 200);
    let (_, t) = call(proxy, "GET", "tickets/TKT-1", Some(DEV), None).await;
    assert!(
        t["modules"].get("prod").is_none() && t["live_in_production"] == false,
        "a ticket reverted out of prod lists no prod modules: {t}"
    );
    assert_eq!(act(proxy, "TKT-1", "revert", DEV).await.0, 200);
    assert_eq!(act(proxy, "TKT-1", "close", DEV).await.0, 200);
    let (s, v) = act(proxy, "TKT-1", "close", DEV).await;
    assert_eq!(
        (s, v["error"]["allowed"].clone()),
        (409, json!(["upload", "reopen"]))
    );
    let (s, v) = upload(proxy, "TKT-1", "src/main.js", "v3").await;
    assert_eq!((s, v["stage"].clone()), (200, json!("dev")));

    let (_, t) = call(proxy, "GET", "tickets/TKT-1", Some(QA), None).await;
    let events: Vec<(String, String)> = t["history"]
        .as_array()
        .unwrap()
        .iter()
        // The settler's own bookkeeping may land in between.
        .filter(|e| e["actor"] != "settler")
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_string(),
                e["actor"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(
        names,
        [
            "upload", "upload", "promote", "upload", "sign-off", "promote", "revert", "revert",
            "close", "reopen"
        ]
    );
    assert_eq!(events[4].1, "quinn");
    assert_eq!(events[6].1, "root");
}

#[tokio::test]
async fn lifecycle_on_redis() {
    let redis = RedisServer::start().unwrap();
    let env = start(Some(&redis.url), "");
    lifecycle(&env.proxy).await;
}

#[tokio::test]
async fn pages_follow_the_api() {
    let env = start(None, "");
    let p = &env.proxy;
    for (key, body) in [("REL-1", "one"), ("REL-2", "two")] {
        upload(p, key, "src/main.js", body).await;
        act(p, key, "promote", DEV).await;
        act(p, key, "promote", QA).await;
    }
    let page = |q: &'static str| {
        let url = p.url(q);
        async move { get_text(&url).await }
    };
    let wait_for = |q: &'static str, want: Option<String>| async move {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let html = page(q).await;
            let got = import_map(&html)
                .ok()
                .map(|m| m["imports"]["/src/main.js"].as_str().unwrap().to_string());
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{q}: wanted {want:?}, page is {html}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    wait_for("/", Some(module_url("/src/main.js", "two"))).await;
    act(p, "REL-2", "revert", ADMIN).await;
    wait_for("/", Some(module_url("/src/main.js", "one"))).await;
    act(p, "REL-1", "revert", ADMIN).await;
    wait_for("/", None).await;
    assert_eq!(page("/").await, PAGE);

    let (_, list) = call(p, "GET", "tickets?stage=qa", Some(DEV), None).await;
    let rel1 = list["tickets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["key"] == "REL-1")
        .unwrap();
    assert_eq!(
        (rel1["last"]["event"].clone(), rel1["last"]["actor"].clone()),
        (json!("revert"), json!("root"))
    );
    let (s, m) = call(
        p,
        "GET",
        "tickets/REL-2/importmap?stage=qa",
        Some(DEV),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        m["imports"]["/src/main.js"],
        module_url("/src/main.js", "two").as_str()
    );
}

/// A write's answer means this proxy serves it: the page asked for right
/// after an upload or a move shows it, with no waiting, on both stores.
#[tokio::test]
async fn a_page_right_after_a_write_shows_it() {
    let redis = RedisServer::start().unwrap();
    for store in [None, Some(redis.url.as_str())] {
        let env = start(store, "");
        let p = &env.proxy;
        for i in 0..15 {
            let key = format!("RYW-{i}");
            let body = format!("export const n = {i};\n");
            let (s, _) = upload(p, &key, "src/main.js", &body).await;
            assert_eq!(s, 201);
            let html = get_text(&p.url(&format!("/?dev={key}"))).await;
            assert!(
                html.contains(&module_url("/src/main.js", &body)),
                "{store:?}: the page right after {key}'s upload: {html}"
            );
            if i % 5 == 0 {
                act(p, &key, "promote", DEV).await;
                let html = get_text(&p.url(&format!("/?qa={key}"))).await;
                assert!(
                    html.contains(&module_url("/src/main.js", &body)),
                    "{store:?}: the qa page right after {key}'s promotion: {html}"
                );
            }
        }
    }
}

/// The panel's event streams are bounded per caller and in all: one token
/// cannot hold them all, and a closed stream gives its place back.
#[tokio::test]
async fn event_streams_are_bounded_per_caller() {
    let env = start(None, "");
    let p = &env.proxy;
    let open = |token: &'static str| {
        let url = p.url("/__stamp/api/v1/events");
        async move { client().get(url).bearer_auth(token).send().await.unwrap() }
    };
    let mut mine = Vec::new();
    for _ in 0..8 {
        let r = open(DEV).await;
        assert_eq!(r.status(), 200);
        mine.push(r);
    }
    let refused = open(DEV).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "10");
    let v: Value = refused.json().await.unwrap();
    assert_eq!(v["error"]["code"], "busy", "{v}");
    assert_eq!(
        open(QA).await.status(),
        200,
        "another caller still gets one"
    );
    drop(mine.pop());
    // Noticed at the stream's next keep-alive write (every 5 s).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = open(DEV).await;
        if r.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a closed stream never gave its place back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn concurrent_promotes_exactly_one_wins() {
    let redis = RedisServer::start().unwrap();
    let env = start(Some(&redis.url), "");
    upload(&env.proxy, "RACE-1", "src/main.js", "x").await;
    let (_, t) = call(&env.proxy, "GET", "tickets/RACE-1", Some(DEV), None).await;
    let version = t["version"].to_string();
    let tries: Vec<_> = (0..6)
        .map(|_| {
            let url = env.proxy.url("/__stamp/api/v1/tickets/RACE-1/promote");
            let version = version.clone();
            tokio::spawn(async move {
                client()
                    .post(url)
                    .bearer_auth(DEV)
                    .header("if-match", format!("\"{version}\""))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tries {
        statuses.push(t.await.unwrap());
    }
    statuses.sort();
    assert_eq!(statuses, [200, 409, 409, 409, 409, 409]);
    let (_, t) = call(&env.proxy, "GET", "tickets/RACE-1", Some(DEV), None).await;
    assert_eq!(t["stage"], "qa", "promoted exactly once");
}

#[tokio::test]
async fn roles_and_authentication() {
    let env = start(None, "");
    let p = &env.proxy;
    // No token, a bad one, a malformed header.
    assert_eq!(call(p, "GET", "tickets", None, None).await.0, 401);
    assert_eq!(call(p, "GET", "tickets", Some("wrong"), None).await.0, 401);
    assert_eq!(
        call_h(
            p,
            "GET",
            "tickets",
            None,
            None,
            &[("authorization", "Basic eDp5")]
        )
        .await
        .0,
        401
    );

    // Upload/delete: dev and admin.
    let put = |token: &'static str| async move {
        call(
            p,
            "PUT",
            "tickets/ROLE-1/modules/src/a.js",
            Some(token),
            Some(b"a".to_vec()),
        )
        .await
        .0
    };
    assert_eq!(put(QA).await, 403);
    assert!([200, 201].contains(&put(DEV).await));
    assert!([200, 201].contains(&put(ADMIN).await));

    // dev→qa: dev, admin — not qa.
    assert_eq!(act(p, "ROLE-1", "promote", QA).await.0, 403);
    assert_eq!(
        act(p, "ROLE-1", "sign-off", QA).await.0,
        409,
        "sign-off needs the qa stage"
    );
    assert_eq!(act(p, "ROLE-1", "promote", DEV).await.0, 200);
    // In qa: sign-off by qa only; qa→prod by qa (or admin), not dev.
    assert_eq!(act(p, "ROLE-1", "sign-off", DEV).await.0, 403);
    assert_eq!(act(p, "ROLE-1", "sign-off", QA).await.0, 200);
    let (s, v) = act(p, "ROLE-1", "promote", DEV).await;
    assert_eq!(s, 403);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("alice"),
        "{v}"
    );
    assert_eq!(act(p, "ROLE-1", "promote", QA).await.0, 200);
    // Reverting prod: admin only.
    assert_eq!(act(p, "ROLE-1", "revert", DEV).await.0, 403);
    assert_eq!(act(p, "ROLE-1", "revert", QA).await.0, 403);
    assert_eq!(act(p, "ROLE-1", "revert", ADMIN).await.0, 200);
    // qa→dev: dev; close: dev.
    assert_eq!(act(p, "ROLE-1", "revert", QA).await.0, 403);
    assert_eq!(act(p, "ROLE-1", "revert", DEV).await.0, 200);
    assert_eq!(act(p, "ROLE-1", "close", QA).await.0, 403);
    assert_eq!(act(p, "ROLE-1", "close", DEV).await.0, 200);
    // Everyone reads.
    for t in [DEV, QA, ADMIN] {
        assert_eq!(call(p, "GET", "tickets/ROLE-1", Some(t), None).await.0, 200);
    }
    // Tokens never reach the log.
    let log = p.log_text();
    for secret in [DEV, QA, ADMIN, "wrong"] {
        assert!(!log.contains(secret), "token {secret} logged");
    }
}

#[tokio::test]
async fn open_on_loopback_refused_elsewhere() {
    let origin = Origin::start().unwrap();
    let proxy = Proxy::start(&origin.url, &[]).unwrap();
    let (s, _) = call(
        &proxy,
        "PUT",
        "tickets/OPEN-1/modules/src/a.js",
        None,
        Some(b"a".to_vec()),
    )
    .await;
    assert_eq!(s, 201, "no tokens on loopback: open");
    assert!(proxy.log_text().contains("control API") && proxy.log_text().contains("open"));

    let out = std::process::Command::new(stamp_tests::proxy::binary("stamp-proxy").unwrap())
        .args(["--origin", &origin.url, "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`tokens`") && err.contains("0.0.0.0"), "{err}");
}

/// DNS rebinding: a page whose domain re-resolves to 127.0.0.1 reaches an
/// open proxy under its own name, with an `Origin` equal to its `Host`. It
/// may neither write, nor read, nor open the panel; production still flows
/// under any name, and loopback names keep the open API.
#[tokio::test]
async fn a_rebound_domain_cannot_use_the_open_api() {
    let origin = Origin::start().unwrap();
    origin.route("/", Route::html(PAGE));
    let proxy = Proxy::start(&origin.url, &[]).unwrap();
    let port = proxy.url.rsplit(':').next().unwrap().to_string();
    let host = format!("rebind.example:{port}");
    let site = format!("http://{host}");
    let c = client();
    let put = c
        .put(proxy.url("/__stamp/api/v1/tickets/REB-1/modules/src/lib/greet.js"))
        .header("host", &host)
        .header("origin", &site)
        .body("export const evil = 1;\n")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 403);
    let said = put.text().await.unwrap();
    assert!(
        said.contains("loopback") && said.contains("rebind.example"),
        "{said}"
    );
    for path in ["/__stamp/api/v1/tickets", "/__stamp/", "/__stamp/session"] {
        let r = c
            .get(proxy.url(path))
            .header("host", &host)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path}");
    }
    let (s, list) = call(&proxy, "GET", "tickets", None, None).await;
    assert_eq!(s, 200);
    assert_eq!(list["tickets"], json!([]), "nothing was stored");
    // Production answers under any name.
    let page = c
        .get(proxy.url("/"))
        .header("host", &host)
        .send()
        .await
        .unwrap();
    assert_eq!(page.text().await.unwrap(), PAGE);
    // Loopback names keep the open API.
    for name in ["localhost", "127.0.0.1", "app.localhost"] {
        let r = c
            .get(proxy.url("/__stamp/api/v1/tickets"))
            .header("host", format!("{name}:{port}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{name}");
    }
}

#[tokio::test]
async fn input_limits_refuse_and_store_nothing() {
    let env = start(
        None,
        "[api]\nmax_module_bytes = 1024\nmax_modules_per_ticket = 2\n",
    );
    let p = &env.proxy;
    // HTTP clients normalise `..` away, so these go over a raw socket.
    for path in [
        "src/../../secret.js",
        "src/%2E%2E/x.js",
        "src/./x.js",
        "%2E%2E/x.js",
    ] {
        let status = raw_put(
            p.port,
            &format!("/__stamp/api/v1/tickets/LIM-1/modules/{path}"),
        );
        assert!(status.starts_with("HTTP/1.1 400"), "{path}: {status}");
    }
    let bad_paths = [
        "..%2Fsecret.js",
        "src//x.js",
        "src/a%5Cb.js",
        "src/a%00.js",
        "%2Fetc%2Fx.js",
        // U+202E shows `src/cart%E2%80%AEsj.gnp` as a .png; U+200B is invisible.
        "src/cart%E2%80%AEsj.gnp.js",
        "src/a%E2%80%8Bb.js",
        "src/%EF%BB%BFa.js",
    ];
    for path in bad_paths {
        let (s, v) = call(
            p,
            "PUT",
            &format!("tickets/LIM-1/modules/{path}"),
            Some(DEV),
            Some(b"x".to_vec()),
        )
        .await;
        assert_eq!(s, 400, "{path}: {v}");
        assert_eq!(v["error"]["field"], "path");
    }
    let long = format!("tickets/LIM-1/modules/{}.js", "a/".repeat(600));
    assert_eq!(
        call(p, "PUT", &long, Some(DEV), Some(b"x".to_vec()))
            .await
            .0,
        400
    );
    let (s, v) = call(
        p,
        "PUT",
        "tickets/LIM-1/modules/src/page.html",
        Some(DEV),
        Some(b"x".to_vec()),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (415, json!("unsupported_type"))
    );
    let (s, v) = call(
        p,
        "PUT",
        "tickets/not-a-key/modules/src/a.js",
        Some(DEV),
        Some(b"x".to_vec()),
    )
    .await;
    assert_eq!((s, v["error"]["field"].clone()), (400, json!("ticket")));
    // Too large: by Content-Length, and streamed without one.
    let (s, _) = call(
        p,
        "PUT",
        "tickets/LIM-1/modules/src/a.js",
        Some(DEV),
        Some(vec![b'x'; 2048]),
    )
    .await;
    assert_eq!(s, 413);
    let stream = futures::stream::iter(
        (0..4).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'y'; 600]))),
    );
    let resp = client()
        .put(p.url("/__stamp/api/v1/tickets/LIM-1/modules/src/a.js"))
        .bearer_auth(DEV)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    // Nothing was stored by any refusal.
    assert_eq!(
        call(p, "GET", "tickets/LIM-1", Some(DEV), None).await.0,
        404
    );

    // Module count limit.
    assert_eq!(upload(p, "LIM-1", "src/a.js", "a").await.0, 201);
    assert_eq!(upload(p, "LIM-1", "src/b.js", "b").await.0, 200);
    let (s, v) = upload(p, "LIM-1", "src/c.js", "c").await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (413, json!("too_many_modules"))
    );
    assert_eq!(
        upload(p, "LIM-1", "src/a.js", "a2").await.0,
        200,
        "replacing one is fine"
    );
    let (_, t) = call(p, "GET", "tickets/LIM-1", Some(DEV), None).await;
    assert_eq!(t["modules"]["dev"].as_array().unwrap().len(), 2);
    let (_, missing) = call(
        p,
        "POST",
        "modules/missing",
        Some(DEV),
        Some(json!({"hashes": [stamp_model::ticket::Hash::of(b"c").to_hex(), stamp_model::ticket::Hash::of(b"a").to_hex()]}).to_string().into_bytes()),
    )
    .await;
    assert_eq!(
        missing["missing"],
        json!([stamp_model::ticket::Hash::of(b"c").to_hex()]),
        "refused body not stored"
    );

    // Malformed JSON names the field.
    let (s, v) = call(
        p,
        "POST",
        "tickets/LIM-1/promote",
        Some(DEV),
        Some(b"{\"expected_version\": \"x\"}".to_vec()),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = call(
        p,
        "POST",
        "tickets/LIM-1/promote",
        Some(DEV),
        Some(b"{\"colour\": 1}".to_vec()),
    )
    .await;
    assert_eq!((s, v["error"]["field"].clone()), (400, json!("colour")));
    let (s, v) = call(
        p,
        "POST",
        "modules/missing",
        Some(DEV),
        Some(b"{\"hashes\": [\"zz\"]}".to_vec()),
    )
    .await;
    assert_eq!((s, v["error"]["field"].clone()), (400, json!("hashes[0]")));
    let (s, _) = call(
        p,
        "POST",
        "tickets/LIM-1/promote",
        Some(DEV),
        Some(b"not json".to_vec()),
    )
    .await;
    assert_eq!(s, 400);
    let (s, _) = call(p, "POST", "tickets/LIM-1/explode", Some(DEV), None).await;
    assert_eq!(s, 404);
    let (s, _) = call(p, "PATCH", "tickets/LIM-1", Some(DEV), None).await;
    assert_eq!(s, 405);
    let (s, v) = call(p, "GET", "tickets?stage=staging", Some(DEV), None).await;
    assert_eq!((s, v["error"]["field"].clone()), (400, json!("stage")));
}

/// A PUT sent byte for byte as written; returns the status line.
fn raw_put(port: u16, target: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let req = format!(
        "PUT {target} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {DEV}\r\ncontent-length: 1\r\nconnection: close\r\n\r\nx"
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines().next().unwrap_or("").to_string()
}

#[tokio::test]
async fn redis_down_answers_503_and_production_flows() {
    let mut redis = RedisServer::start().unwrap();
    let env = start(Some(&redis.url), "");
    upload(&env.proxy, "DOWN-1", "src/main.js", "x").await;
    redis.stop().unwrap();
    let (s, v) = upload(&env.proxy, "DOWN-1", "src/main.js", "y").await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (503, json!("store_unavailable"))
    );
    let html = get_text(&env.proxy.url("/")).await;
    assert_eq!(html, PAGE);
    assert_eq!(env.origin.hits("/"), 1);
    // Redis comes back empty (no persistence): the proxy tells that apart
    // from "no tickets", refuses writes and says how to go on.
    redis.restart().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let refused = loop {
        let (s, v) = upload(&env.proxy, "DOWN-2", "src/main.js", "z").await;
        if v["error"]["code"] != json!("store_unavailable") {
            break (s, v);
        }
        assert!(Instant::now() < deadline, "API never reached redis ({s})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(refused.0, 503, "{}", refused.1);
    assert_eq!(refused.1["error"]["code"], json!("store_lost_state"));
    // Refused uploads left nothing in the emptied store.
    for i in 0..5 {
        let (s, _) = upload(
            &env.proxy,
            "DOWN-3",
            &format!("src/m{i}.js"),
            &format!("m{i}"),
        )
        .await;
        assert_eq!(s, 503);
    }
    let keys = redis.cli(&["KEYS", "*"]).unwrap();
    assert!(
        !keys.contains(":mod:") && !keys.contains(":set:"),
        "refused uploads wrote {keys}"
    );
    // The advice works as written: the path it names adopts the store.
    let message = refused.1["error"]["message"].as_str().unwrap();
    let path = message
        .split_whitespace()
        .find(|w| w.starts_with("/__stamp/"))
        .unwrap_or_else(|| panic!("no path in {message}"))
        .trim_end_matches([',', ')']);
    let advised = client()
        .post(env.proxy.url(path))
        .bearer_auth(ADMIN)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(advised.status(), 200, "{message}");
    let (s, v) = upload(&env.proxy, "DOWN-2", "src/main.js", "z").await;
    assert_eq!(s, 201, "{v}");
}

/// An operator accepts a store that lost its state as it is now; only an
/// admin may.
async fn adopt(proxy: &Proxy) {
    let (s, v) = call(
        proxy,
        "POST",
        "store/adopt",
        Some(DEV),
        Some(b"{}".to_vec()),
    )
    .await;
    assert_eq!((s, v["error"]["code"].clone()), (403, json!("forbidden")));
    let (s, v) = call(
        proxy,
        "POST",
        "store/adopt",
        Some(ADMIN),
        Some(b"{}".to_vec()),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert!(v["epoch"].as_str().is_some_and(|e| e.len() == 32), "{v}");
}

async fn health(proxy: &Proxy) -> Value {
    client()
        .get(proxy.url("/__stamp/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A Redis that lost its data (restarted without persistence, flushed) is
/// not taken for "no tickets": every proxy keeps serving its last good
/// snapshot, released tickets included (their bodies held in memory), says
/// so in health and metrics, and refuses writes until an operator adopts
/// the store, on any one proxy of the fleet.
#[tokio::test]
async fn an_emptied_redis_keeps_released_tickets_until_an_operator_adopts_it() {
    let mut redis = RedisServer::start().unwrap();
    let a = start(Some(&redis.url), "");
    let b = start(Some(&redis.url), "");
    upload(&a.proxy, "KEEP-1", "src/main.js", "released").await;
    assert_eq!(act(&a.proxy, "KEEP-1", "promote", DEV).await.0, 200);
    assert_eq!(act(&a.proxy, "KEEP-1", "promote", QA).await.0, 200);
    let released = module_url("/src/main.js", "released");
    for env in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !get_text(&env.proxy.url("/")).await.contains(&released) {
            assert!(Instant::now() < deadline, "the release never showed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    redis.stop().unwrap();
    redis.restart().unwrap();
    for env in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(20);
        let h = loop {
            let h = health(&env.proxy).await;
            if !h["store"]["lost_state"].is_null() {
                break h;
            }
            assert!(Instant::now() < deadline, "health never noticed: {h}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(h["status"], "degraded", "{h}");
        assert_eq!(h["store"]["reachable"], true, "{h}");
        assert_eq!(h["snapshot"]["released"], 1, "{h}");
        // Production still has the release, and its body.
        assert!(get_text(&env.proxy.url("/")).await.contains(&released));
        assert_eq!(
            stamp_tests::without_marker(&get_text(&env.proxy.url(&released)).await),
            "released"
        );
        let metrics = get_text(&env.proxy.url("/__stamp/metrics")).await;
        assert!(
            metrics.lines().any(|l| l == "stamp_store_state_lost 1"),
            "{metrics}"
        );
    }
    let (s, v) = upload(&b.proxy, "KEEP-2", "src/main.js", "x").await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (503, json!("store_lost_state"))
    );

    // Adopted on A: B follows by itself, and production is what the store
    // holds now (nothing released).
    adopt(&a.proxy).await;
    for env in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let h = health(&env.proxy).await;
            if h["status"] == "ok" {
                assert_eq!(h["snapshot"]["released"], 0, "{h}");
                break;
            }
            assert!(Instant::now() < deadline, "never adopted: {h}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(get_text(&env.proxy.url("/")).await, PAGE);
    }
    let (s, v) = upload(&b.proxy, "KEEP-2", "src/main.js", "x").await;
    assert_eq!(s, 201, "{v}");
}

/// The `name=value` of each cookie a response sets.
fn set_cookies(resp: &reqwest::Response) -> Vec<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .map(|c| c.to_str().unwrap().split(';').next().unwrap().to_string())
        .collect()
}

/// Signing out ends the session everywhere, not only in this browser: a
/// copy of the cookie is refused at once by the proxy signed out on, and
/// within seconds by every other proxy of the fleet.
#[tokio::test]
async fn sign_out_ends_the_session_on_every_proxy() {
    let redis = RedisServer::start().unwrap();
    let shared = "[preview]\nprotect = true\naccess = \"either\"\n\
                  secret = \"0123456789abcdef0123456789abcdef-fleet\"\n";
    let a = start(Some(&redis.url), shared);
    let b = start(Some(&redis.url), shared);
    let signed_in = client()
        .post(a.proxy.url("/__stamp/session"))
        .json(&json!({ "token": QA }))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 200);
    let cookies = set_cookies(&signed_in);
    let cookie = cookies
        .iter()
        .find(|c| c.starts_with("stamp_session="))
        .unwrap()
        .clone();
    // The preview pass set with the session opens previews on the fleet.
    let pass = cookies
        .iter()
        .find(|c| c.starts_with("stamp_viewer="))
        .unwrap()
        .clone();
    upload(&a.proxy, "OUT-1", "src/main.js", "signed-in only").await;
    let stamped = module_url("/src/main.js", "signed-in only");
    let preview = |p: &Proxy, pass: String| {
        let url = p.url("/?dev=OUT-1");
        async move {
            client()
                .get(url)
                .header("cookie", pass)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !preview(&b.proxy, pass.clone()).await.contains(&stamped) {
        assert!(
            Instant::now() < deadline,
            "the pass never opened B's preview"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let read = |p: &Proxy, cookie: String| {
        let url = p.url("/__stamp/api/v1/tickets");
        async move {
            client()
                .get(url)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(read(&a.proxy, cookie.clone()).await, 200);
    assert_eq!(
        read(&b.proxy, cookie.clone()).await,
        200,
        "the fleet shares sessions"
    );
    let out = client()
        .delete(a.proxy.url("/__stamp/session"))
        .header("cookie", format!("{cookie}; {pass}"))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 200);
    // The copy kept from before the sign-out.
    assert_eq!(
        read(&a.proxy, cookie.clone()).await,
        401,
        "at once where signed out"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while read(&b.proxy, cookie.clone()).await != 401 {
        assert!(
            Instant::now() < deadline,
            "B still takes a signed-out session"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The pass copied before the sign-out opens nothing any more, anywhere.
    for p in [&a.proxy, &b.proxy] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while preview(p, pass.clone()).await.contains(&stamped) {
            assert!(
                Instant::now() < deadline,
                "a signed-out pass still opens a preview"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Signing in again gives a new session that works.
    let again = client()
        .post(b.proxy.url("/__stamp/session"))
        .json(&json!({ "token": QA }))
        .send()
        .await
        .unwrap();
    let fresh = set_cookies(&again)
        .into_iter()
        .find(|c| c.starts_with("stamp_session="))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(read(&a.proxy, fresh).await, 200);
}

#[tokio::test]
async fn two_proxies_on_one_redis_converge() {
    let mut redis = RedisServer::start().unwrap();
    let a = start(Some(&redis.url), "");
    let b = start(Some(&redis.url), "");
    let visible_on_b = |body: String| {
        let url = b.proxy.url("/?dev=FLEET-1");
        async move {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let html = get_text(&url).await;
                if html.contains(&module_url("/src/main.js", &body)) {
                    return;
                }
                assert!(Instant::now() < deadline, "B never served {body}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    for i in 0..20 {
        let body = format!("v{i}");
        upload(&a.proxy, "FLEET-1", "src/main.js", &body).await;
        visible_on_b(body).await;
    }
    // Both lose Redis and get it back empty: once adopted on A, B follows
    // by itself.
    redis.stop().unwrap();
    redis.restart().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (s, v) = upload(&a.proxy, "FLEET-1", "src/main.js", "after").await;
        if v["error"]["code"] == json!("store_lost_state") {
            break;
        }
        assert!(Instant::now() < deadline, "{s} {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    adopt(&a.proxy).await;
    let (s, v) = upload(&a.proxy, "FLEET-1", "src/main.js", "after").await;
    assert_eq!(s, 201, "{v}");
    visible_on_b("after".into()).await;
}

#[tokio::test]
async fn production_overlay_changes_are_committed_to_the_history_repository() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("history");
    let env = start(None, &format!("history_repo = \"{}\"", repo.display()));
    let p = &env.proxy;
    for key in ["REL-1", "REL-2"] {
        upload(p, key, "src/main.js", key).await;
        act(p, key, "promote", DEV).await;
        let (s, _) = act(p, key, "promote", QA).await;
        assert_eq!(s, 200);
    }
    assert_eq!(act(p, "REL-2", "revert", ADMIN).await.0, 200);
    let log = || {
        let out = std::process::Command::new("git")
            .args(["-C", &repo.to_string_lossy(), "log", "--format=%s"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while log().lines().count() < 3 {
        assert!(Instant::now() < deadline, "history: {}", log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        log().lines().collect::<Vec<_>>(),
        [
            "REL-2 reverted from prod to qa by root",
            "REL-2 released to prod by quinn",
            "REL-1 released to prod by quinn"
        ]
    );
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(repo.join("production-importmap.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        file["imports"]["/src/main.js"],
        module_url("/src/main.js", "REL-1").as_str()
    );
    assert_eq!(file["released"], json!(["REL-1"]));
    // And `git log -p` shows what production served before.
    let out = std::process::Command::new("git")
        .args([
            "-C",
            &repo.to_string_lossy(),
            "show",
            "HEAD~1:production-importmap.json",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(&module_url("/src/main.js", "REL-2")));
}

#[tokio::test]
async fn protected_previews_need_a_valid_signed_link() {
    let secret = "0123456789abcdef0123456789abcdef-test";
    let env = start(
        None,
        &format!("[preview]\nprotect = true\nsecret = \"{secret}\"\nlink_ttl = \"1h\""),
    );
    let p = &env.proxy;
    upload(p, "SEC-1", "src/main.js", "secret change").await;
    let stamped = module_url("/src/main.js", "secret change");
    let get = |path: String, cookie: Option<String>| async move {
        let mut req = client().get(p.url(&path));
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        let resp = req.send().await.unwrap();
        let h = resp.headers().clone();
        (h, resp.text().await.unwrap())
    };

    // No token: production, with the reason (once the proxy's snapshot has
    // the upload: it follows the store asynchronously).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (h, html) = loop {
        let (h, html) = get("/?dev=SEC-1".into(), None).await;
        let info = h["x-ticket-stamp"].to_str().unwrap().to_string();
        if !info.contains("unknown ticket") || std::time::Instant::now() > deadline {
            break (h, html);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (production, notice) = stamp_tests::split_notice(&html);
    assert_eq!(production, PAGE);
    assert!(
        notice.is_some_and(|n| n.contains("this SEC-1 link does not hold")),
        "{html}"
    );
    assert!(h["x-ticket-stamp"]
        .to_str()
        .unwrap()
        .contains("signed share link"));

    // The API's link works, and the cookie carries the token for navigation.
    let (_, t) = call(p, "GET", "tickets/SEC-1", Some(DEV), None).await;
    let link = t["links"]["dev"].as_str().unwrap().to_string();
    let path_and_query = &link[link.find("/?").unwrap()..];
    let (h, html) = get(path_and_query.to_string(), None).await;
    assert!(html.contains(&stamped), "valid link stamps: {html}");
    // A signed link is made to be pasted elsewhere: from another site too.
    let across = client()
        .get(p.url(path_and_query))
        .header("sec-fetch-site", "cross-site")
        .header("sec-fetch-mode", "navigate")
        .header("sec-fetch-dest", "document")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        across.contains(&stamped),
        "a signed link from another site: {across}"
    );
    let cookie = h["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let (_, html) = get("/".into(), Some(cookie.clone())).await;
    assert!(
        html.contains(&stamped),
        "navigation keeps the protected selection"
    );

    // Expired, tampered and forged tokens.
    let signer = stamp_model::share::Signer::new(secret.as_bytes(), Duration::from_secs(3600));
    let key = stamp_model::ticket::TicketKey::parse("SEC-1").unwrap();
    let expired = signer.mint_at(&key, stamp_model::ticket::View::Dev, 0, 1);
    let (h, html) = get(format!("/?dev=SEC-1&st={expired}"), None).await;
    assert_eq!(stamp_tests::split_notice(&html).0, PAGE);
    assert!(h["x-ticket-stamp"].to_str().unwrap().contains("expired"));
    let token = path_and_query.split("st=").nth(1).unwrap().to_string();
    let mut tampered = token.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'a' { 'b' } else { 'a' });
    let (h, html) = get(format!("/?dev=SEC-1&st={tampered}"), None).await;
    assert_eq!(stamp_tests::split_notice(&html).0, PAGE);
    assert!(h["x-ticket-stamp"].to_str().unwrap().contains("not valid"));
    let forged = stamp_model::share::Signer::new(
        b"some other secret of enough length!!",
        Duration::from_secs(60),
    )
    .mint(&key, stamp_model::ticket::View::Dev, 0);
    assert_eq!(
        stamp_tests::split_notice(&get(format!("/?dev=SEC-1&st={forged}"), None).await.1).0,
        PAGE
    );
    // A dev token does not open qa.
    act(p, "SEC-1", "promote", DEV).await;
    assert_eq!(
        stamp_tests::split_notice(&get(format!("/?qa=SEC-1&st={token}"), None).await.1).0,
        PAGE
    );

    // Revoking: the old link and the cookie stop working; new links work.
    let (s, _) = act(p, "SEC-1", "revoke-links", QA).await;
    assert_eq!(s, 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (h, html) = get("/".into(), Some(cookie.clone())).await;
        if stamp_tests::split_notice(&html).0 == PAGE {
            assert!(h["x-ticket-stamp"].to_str().unwrap().contains("revoked"));
            assert!(
                h["set-cookie"].to_str().unwrap().contains("Max-Age=0"),
                "revoked cookie cleared"
            );
            break;
        }
        assert!(Instant::now() < deadline, "revocation never took effect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, old_link) = get(path_and_query.to_string(), None).await;
    let (production, notice) = stamp_tests::split_notice(&old_link);
    assert_eq!(production, PAGE);
    assert!(notice.is_some_and(|n| n.contains("revoked")), "{old_link}");
    let (_, t) = call(p, "GET", "tickets/SEC-1", Some(DEV), None).await;
    let fresh = t["links"]["qa"].as_str().unwrap().to_string();
    let (_, html) = get(fresh[fresh.find("/?").unwrap()..].to_string(), None).await;
    assert!(
        html.contains(&module_url("/src/main.js", "secret change")),
        "a new link works: {html}"
    );
}

/// Waits until `/` (no selection) maps `/src/main.js` to `want` (None: no map).
async fn wait_overlay(proxy: &Proxy, want: Option<String>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let html = get_text(&proxy.url("/")).await;
        let got = import_map(&html)
            .ok()
            .map(|m| m["imports"]["/src/main.js"].as_str().unwrap().to_string());
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "wanted {want:?}, page is {html}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn history_events(proxy: &Proxy, key: &str) -> Vec<String> {
    let (_, t) = call(proxy, "GET", &format!("tickets/{key}"), Some(DEV), None).await;
    t["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect()
}

async fn release(proxy: &Proxy, key: &str, body: &str) {
    upload(proxy, key, "src/main.js", body).await;
    act(proxy, key, "promote", DEV).await;
    assert_eq!(act(proxy, key, "promote", QA).await.0, 200);
    // Wait for the origin baseline to be recorded.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !history_events(proxy, key)
        .await
        .contains(&"baseline".to_string())
    {
        assert!(Instant::now() < deadline, "no baseline recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn released_overrides_settle_when_the_origin_catches_up() {
    let env = start(None, "[settle]\ninterval = \"200ms\"");
    env.origin.route(
        "/src/main.js",
        Route::bytes("text/javascript", b"old".to_vec()),
    );
    release(&env.proxy, "SET-1", "new").await;
    wait_overlay(&env.proxy, Some(module_url("/src/main.js", "new"))).await;
    let (_, t) = call(&env.proxy, "GET", "tickets/SET-1", Some(DEV), None).await;
    assert_eq!(t["overlay"]["live"], 1);

    // The origin deploys the ticket's code: the override retires and
    // production is the origin's own again, byte for byte.
    env.origin.route(
        "/src/main.js",
        Route::bytes("text/javascript", b"new".to_vec()),
    );
    wait_overlay(&env.proxy, None).await;
    let html = get_text(&env.proxy.url("/")).await;
    assert_eq!(html, PAGE);
    assert!(history_events(&env.proxy, "SET-1")
        .await
        .contains(&"settled".to_string()));
    let (_, t) = call(&env.proxy, "GET", "tickets/SET-1", Some(DEV), None).await;
    assert_eq!(
        (
            t["overlay"]["live"].clone(),
            t["overlay"]["retired"].clone()
        ),
        (json!(0), json!(1))
    );
}

#[tokio::test]
async fn a_third_origin_version_wins_by_default_and_is_recorded() {
    let env = start(None, "[settle]\ninterval = \"200ms\"");
    env.origin.route(
        "/src/main.js",
        Route::bytes("text/javascript", b"old".to_vec()),
    );
    release(&env.proxy, "SET-2", "ticket").await;
    wait_overlay(&env.proxy, Some(module_url("/src/main.js", "ticket"))).await;
    env.origin.route(
        "/src/main.js",
        Route::bytes("text/javascript", b"hotfix".to_vec()),
    );
    wait_overlay(&env.proxy, None).await;
    assert!(history_events(&env.proxy, "SET-2")
        .await
        .contains(&"origin-diverged".to_string()));
}

#[tokio::test]
async fn a_third_origin_version_can_leave_the_ticket_in_place() {
    let env = start(
        None,
        "[settle]\ninterval = \"200ms\"\nthird_version = \"ticket\"",
    );
    env.origin.route(
        "/src/main.js",
        Route::bytes("text/javascript", b"old".to_vec()),
    );
    release(&env.proxy, "SET-3", "ticket").await;
    env.origin.route(
        "/src/main.js",
        Route::bytes("text/javascript", b"hotfix".to_vec()),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !history_events(&env.proxy, "SET-3")
        .await
        .contains(&"origin-diverged".to_string())
    {
        assert!(Instant::now() < deadline, "divergence never recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_overlay(&env.proxy, Some(module_url("/src/main.js", "ticket"))).await;
    // Recorded once, not on every pass.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let n = history_events(&env.proxy, "SET-3")
        .await
        .iter()
        .filter(|e| *e == "origin-diverged")
        .count();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn policies_refuse_with_every_reason_and_hooks_hear_every_change() {
    let receiver = stamp_tests::fakes::FakeReceiver::start("hook-secret").unwrap();
    let extra = format!(
        "[[policies]]\nkind = \"command\"\nprogram = \"sh\"\nargs = [\"-c\", \"echo \\\"tests are red for $STAMP_TICKET\\\"; exit 1\"]\non = \"dev->qa\"\n\
         [[policies]]\nkind = \"sign-off\"\ncount = 1\n\
         [[hooks]]\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"hook-secret\"\n",
        receiver.url()
    );
    let env = start(None, &extra);
    let p = &env.proxy;
    upload(p, "POL-1", "src/main.js", "x").await;
    let (s, v) = act(p, "POL-1", "promote", DEV).await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["error"]["code"], "policy_denied");
    let denials = v["error"]["denials"].as_array().unwrap();
    assert_eq!(denials.len(), 1, "{v}");
    assert_eq!(denials[0]["policy"], "command");
    assert!(
        denials[0]["reason"]
            .as_str()
            .unwrap()
            .contains("tests are red for POL-1"),
        "{v}"
    );
    let (_, t) = call(p, "GET", "tickets/POL-1", Some(DEV), None).await;
    assert_eq!(t["stage"], "dev", "a refusal changes nothing");

    // A second proxy with only the sign-off policy (qa->prod by default).
    let env2 = start(None, &format!("[[policies]]\nkind = \"sign-off\"\ncount = 1\n[[hooks]]\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"hook-secret\"\n", receiver.url()));
    let p2 = &env2.proxy;
    upload(p2, "POL-2", "src/main.js", "y").await;
    assert_eq!(act(p2, "POL-2", "promote", DEV).await.0, 200);
    let (s, v) = act(p2, "POL-2", "promote", QA).await;
    assert_eq!(
        (s, v["error"]["denials"][0]["policy"].clone()),
        (422, json!("sign-off")),
        "{v}"
    );
    assert_eq!(act(p2, "POL-2", "sign-off", QA).await.0, 200);
    assert_eq!(act(p2, "POL-2", "promote", QA).await.0, 200);

    // The webhook heard every change, signed (the receiver checks the HMAC).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let kinds: Vec<String> = receiver
            .deliveries()
            .iter()
            .filter(|d| d["ticket"] == "POL-2")
            .map(|d| d["event"].as_str().unwrap_or("").to_string())
            .collect();
        if kinds == ["uploaded", "promoted", "signed-off", "promoted"] {
            break;
        }
        assert!(Instant::now() < deadline, "deliveries: {kinds:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let last = receiver
        .deliveries()
        .into_iter()
        .rfind(|d| d["ticket"] == "POL-2")
        .unwrap();
    assert_eq!(
        (
            last["from"].clone(),
            last["to"].clone(),
            last["actor"].clone()
        ),
        (json!("qa"), json!("prod"), json!("quinn"))
    );
}

/// What the production page's import map maps, as the proxy serves it now.
async fn served_imports(proxy: &Proxy) -> Value {
    let html = get_text(&proxy.url("/")).await;
    match stamp_tests::import_map(&html) {
        Ok(map) => map["imports"].clone(),
        Err(_) => json!({}),
    }
}

async fn history_commits(proxy: &Proxy) -> Vec<Value> {
    let (s, v) = call(
        proxy,
        "GET",
        "production/history?limit=100",
        Some(DEV),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    v["commits"].as_array().cloned().unwrap_or_default()
}

/// Production as a git log: one commit per change of what production
/// serves (and none for changes that leave it alone), each carrying the
/// ticket and actor; replaying the log gives, commit by commit, exactly what
/// the proxy served at that moment. And production goes back to an earlier
/// commit with one call, checked like any revert.
#[tokio::test]
async fn the_production_log_replays_what_was_served_and_can_be_reverted_to() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("history");
    let env = start(None, &format!("history_repo = \"{}\"", repo.display()));
    let p = &env.proxy;
    // What the page maps before anything is released.
    let base = served_imports(p).await;
    let mut served: Vec<Value> = Vec::new();
    let (repo_ref, base_ref) = (&repo, &base);
    // Waits for the commit a production change makes, and for the proxy to
    // serve the change; records what it serves.
    let step = |commits: usize| async move {
        let deadline = Instant::now() + Duration::from_secs(10);
        while history_commits(p).await.len() < commits {
            assert!(Instant::now() < deadline, "no commit {commits}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let head: Value = serde_json::from_str(
            &std::fs::read_to_string(repo_ref.join("production-importmap.json")).unwrap(),
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = served_imports(p).await;
            let mut want = base_ref.clone();
            for (k, v) in head["imports"].as_object().unwrap() {
                want[k] = v.clone();
            }
            if now == want {
                return now;
            }
            assert!(Instant::now() < deadline, "served {now}, log says {want}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let release = |key: &'static str| async move {
        assert_eq!(act(p, key, "promote", DEV).await.0, 200);
        assert_eq!(act(p, key, "promote", QA).await.0, 200);
    };

    upload(p, "LOG-1", "src/main.js", "one").await;
    release("LOG-1").await;
    served.push(step(1).await);
    upload(p, "LOG-2", "src/main.js", "two").await;
    upload(p, "LOG-2", "src/other.js", "other").await;
    release("LOG-2").await;
    served.push(step(2).await);
    // Changes that leave production alone make no commit.
    upload(p, "LOG-3", "src/main.js", "three").await;
    assert_eq!(act(p, "LOG-3", "promote", DEV).await.0, 200);
    assert_eq!(act(p, "LOG-2", "revert", ADMIN).await.0, 200);
    served.push(step(3).await);
    release_again(p, "LOG-2").await;
    served.push(step(4).await);
    assert_eq!(history_commits(p).await.len(), 4, "one commit per change");

    // Hostile and impossible reverts change nothing.
    let revert = |token: &'static str, body: Value| async move {
        call(
            p,
            "POST",
            "production/revert",
            Some(token),
            Some(body.to_string().into_bytes()),
        )
        .await
    };
    let log = history_commits(p).await; // newest first
    let first = log[3]["id"].as_str().unwrap().to_string();
    for (body, field) in [
        (json!({}), "to"),
        (json!({"to": "xyz"}), "to"),
        (json!({"to": "12345"}), "to"),
        (json!({"to": "abc; rm -rf /"}), "to"),
        (json!({"to": first, "extra": 1}), "to"),
    ] {
        let (s, v) = revert(ADMIN, body.clone()).await;
        assert_eq!(
            (s, v["error"]["field"].as_str()),
            (400, Some(field)),
            "{body}: {v}"
        );
    }
    let (s, v) = revert(ADMIN, json!({"to": "0000000"})).await;
    assert_eq!(s, 404, "{v}");
    let (s, v) = revert(QA, json!({"to": first})).await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (403, json!("forbidden")),
        "{v}"
    );
    assert_eq!(history_commits(p).await.len(), 4);

    // Back to the first commit: LOG-2 is reverted, by one call.
    let (s, v) = revert(ADMIN, json!({"to": &first[..10]})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["reverted"], json!(["LOG-2"]));
    assert_eq!(v["to"], json!(first));
    served.push(step(5).await);
    assert_eq!(
        served[4], served[0],
        "production is what the first commit served"
    );
    // The second commit cannot be reached by reverting: LOG-2 is not released.
    let second = log[2]["id"].as_str().unwrap();
    let (s, v) = revert(ADMIN, json!({"to": second})).await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (409, json!("conflict")),
        "{v}"
    );
    assert!(
        v["error"]["message"].as_str().unwrap().contains("LOG-2"),
        "{v}"
    );

    // The replay: every commit, oldest first, against what was served.
    let log = history_commits(p).await;
    assert_eq!(log.len(), served.len());
    let git = git2::Repository::open(&repo).unwrap();
    for (commit, was) in log.iter().rev().zip(&served) {
        let id = git2::Oid::from_str(commit["id"].as_str().unwrap()).unwrap();
        let c = git.find_commit(id).unwrap();
        let blob = c
            .tree()
            .unwrap()
            .get_path(std::path::Path::new("production-importmap.json"))
            .unwrap()
            .to_object(&git)
            .unwrap()
            .peel_to_blob()
            .unwrap();
        let file: Value = serde_json::from_slice(blob.content()).unwrap();
        let mut replayed = base.clone();
        for (k, v) in file["imports"].as_object().unwrap() {
            replayed[k] = v.clone();
        }
        assert_eq!(&replayed, was, "commit {}", c.id());
        let message = c.message().unwrap_or("");
        assert!(message.contains("Ticket: LOG-"), "{message}");
        assert!(message.contains(" by "), "{message}");
    }
}

/// qa -> prod again after a revert to qa.
async fn release_again(p: &Proxy, key: &str) {
    assert_eq!(act(p, key, "promote", QA).await.0, 200);
}

/// The reviewer's diff: each module of a stage against production as a
/// visitor gets it (through the proxy), or dev against qa.
#[tokio::test]
async fn a_ticket_diffs_against_production_and_dev_against_qa() {
    let env = start(None, "");
    let js = |word: &str| {
        format!("export const a = 1;\nexport const word = '{word}';\nexport const c = 3;\n")
    };
    env.origin.route(
        "/src/app.js",
        Route::bytes("text/javascript", js("production").into_bytes()),
    );
    env.origin.route(
        "/src/cfg.json",
        Route::bytes(
            "application/json",
            br#"{"flags":{"cart":false},"n":1}"#.to_vec(),
        ),
    );
    env.origin.route(
        "/src/logo.png",
        Route::bytes("image/png", vec![0x89, b'P', b'N', b'G', 1]),
    );
    assert_eq!(
        upload(&env.proxy, "DIF-1", "src/app.js", &js("ticket"))
            .await
            .0,
        201
    );
    upload(
        &env.proxy,
        "DIF-1",
        "src/cfg.json",
        r#"{"flags":{"cart":true},"n":1}"#,
    )
    .await;
    upload(&env.proxy, "DIF-1", "src/logo.png", "\u{89}PNG2").await;
    upload(
        &env.proxy,
        "DIF-1",
        "src/new.js",
        "export const fresh = true;\n",
    )
    .await;
    let proxy = &env.proxy;
    let diff = |query: &str| {
        let path = format!("tickets/DIF-1/diff{query}");
        async move { call(proxy, "GET", &path, Some(QA), None).await }
    };
    let (s, d) = diff("").await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(
        (d["stage"].as_str(), d["against"].as_str()),
        (Some("dev"), Some("production"))
    );
    let by = |d: &Value, spec: &str| -> Value {
        d["modules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["specifier"] == spec)
            .cloned()
            .unwrap_or_else(|| panic!("{spec}: {d}"))
    };
    let app = by(&d, "/src/app.js");
    assert_eq!(
        (app["status"].as_str(), app["kind"].as_str()),
        (Some("changed"), Some("text"))
    );
    let text = app["diff"].as_str().unwrap();
    assert!(
        text.starts_with("--- production\n+++ DIF-1 dev\n"),
        "{text}"
    );
    assert!(
        text.contains("-export const word = 'production';\n+export const word = 'ticket';\n"),
        "{text}"
    );
    assert_eq!(
        (app["added_lines"].as_u64(), app["removed_lines"].as_u64()),
        (Some(1), Some(1))
    );
    let cfg = by(&d, "/src/cfg.json");
    assert_eq!(cfg["kind"], "json");
    assert!(
        cfg["diff"]
            .as_str()
            .unwrap()
            .contains("-    \"cart\": false\n+    \"cart\": true\n"),
        "{cfg}"
    );
    let logo = by(&d, "/src/logo.png");
    assert_eq!(
        (logo["kind"].as_str(), logo["before"]["size"].as_u64()),
        (Some("binary"), Some(5))
    );
    assert!(logo["diff"].is_null());
    let fresh = by(&d, "/src/new.js");
    assert_eq!(
        fresh["status"], "added",
        "production has no /src/new.js: {fresh}"
    );

    // Promoted, then dev moves on: dev against qa is what QA has not seen.
    assert_eq!(act(&env.proxy, "DIF-1", "promote", DEV).await.0, 200);
    upload(&env.proxy, "DIF-1", "src/app.js", &js("after review")).await;
    call(
        &env.proxy,
        "DELETE",
        "tickets/DIF-1/modules/src/new.js",
        Some(DEV),
        None,
    )
    .await;
    let (s, d) = diff("?stage=dev&against=qa").await;
    assert_eq!(s, 200, "{d}");
    let app = by(&d, "/src/app.js");
    assert!(app["diff"]
        .as_str()
        .unwrap()
        .starts_with("--- DIF-1 qa\n+++ DIF-1 dev\n"));
    assert!(app["diff"]
        .as_str()
        .unwrap()
        .contains("+export const word = 'after review';"));
    assert_eq!(by(&d, "/src/cfg.json")["status"], "unchanged");
    assert_eq!(by(&d, "/src/new.js")["status"], "removed");
    // qa against production still shows what QA reviews.
    let (_, d) = diff("?stage=qa").await;
    assert!(by(&d, "/src/app.js")["diff"]
        .as_str()
        .unwrap()
        .contains("+export const word = 'ticket';"));

    // Bad input: a clear 400 or 404, never a diff.
    for (q, status, field) in [
        ("?stage=staging", 400, Some("stage")),
        ("?against=everything", 400, Some("against")),
        ("?stage=dev&against=dev", 400, Some("against")),
        ("?stage=prod", 404, None),
    ] {
        let (s, e) = diff(q).await;
        assert_eq!(s, status, "{q}: {e}");
        if let Some(f) = field {
            assert_eq!(e["error"]["field"], f, "{q}: {e}");
        }
    }
    let (s, _) = call(&env.proxy, "GET", "tickets/NOPE-1/diff", Some(QA), None).await;
    assert_eq!(s, 404);
    let (s, _) = call(&env.proxy, "GET", "tickets/DIF-1/diff", None, None).await;
    assert_eq!(s, 401, "reading a diff needs a token like any read");
}

/// `GET tickets` a page at a time: 130 tickets walked by cursor, none
/// repeated or skipped; the filters; a page's size bounded; hostile
/// parameters refused by name.
#[tokio::test]
async fn the_list_pages_by_cursor_and_filters() {
    let p = in_process("").await;
    for i in 0..130 {
        let key = if i % 10 == 0 {
            format!("CART-{i}")
        } else {
            format!("LIST-{i}")
        };
        assert_eq!(upload(&p, &key, "src/a.js", "a").await.0, 201);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let path = match &cursor {
            Some(c) => format!("tickets?limit=40&cursor={c}"),
            None => "tickets?limit=40".to_string(),
        };
        let (s, page) = call(&p, "GET", &path, Some(DEV), None).await;
        assert_eq!(s, 200, "{page}");
        assert_eq!(page["total"], 130);
        let keys: Vec<String> = page["tickets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["key"].as_str().unwrap().to_string())
            .collect();
        assert!(keys.len() <= 40);
        seen.extend(keys);
        match page["next"].as_str() {
            Some(n) => cursor = Some(n.to_string()),
            None => break,
        }
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((seen.len(), unique.len()), (130, 130), "every ticket once");
    // Most recently updated first: the last upload leads.
    assert_eq!(seen[0], "LIST-129");

    let (_, page) = call(&p, "GET", "tickets?q=cart&limit=500", Some(DEV), None).await;
    assert_eq!(page["total"], 13);
    assert!(page.get("next").is_none(), "{page}");
    let (_, page) = call(&p, "GET", "tickets?stage=qa", Some(DEV), None).await;
    assert_eq!(page["total"], 0);
    let (_, page) = call(&p, "GET", "tickets?who=alice&limit=5", Some(DEV), None).await;
    assert_eq!(page["tickets"].as_array().unwrap().len(), 5, "{page}");
    assert!(page.get("total").is_none(), "unknown with who");
    let (_, page) = call(&p, "GET", "tickets?who=nobody", Some(DEV), None).await;
    assert_eq!(page["tickets"], json!([]));
    let (_, page) = call(
        &p,
        "GET",
        "tickets?updated_since=4102444800000",
        Some(DEV),
        None,
    )
    .await;
    assert_eq!(page["total"], 0);
    let (_, page) = call(&p, "GET", "tickets", Some(DEV), None).await;
    assert_eq!(
        page["tickets"].as_array().unwrap().len(),
        100,
        "the default page"
    );

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=100000", "limit"),
        ("cursor=not-ours", "cursor"),
        ("stage=staging", "stage"),
        ("q=a%0Ab", "q"),
        ("limit=1&limit=2", "limit"),
        ("updated_since=last-week", "updated_since"),
    ] {
        let (s, v) = call(&p, "GET", &format!("tickets?{query}"), Some(DEV), None).await;
        assert_eq!(s, 400, "{query}: {v}");
        assert_eq!(v["error"]["field"], field, "{query}: {v}");
    }
}
