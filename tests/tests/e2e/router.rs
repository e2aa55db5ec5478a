//! The control API called as a router, without a socket: a `Control` over a
//! real embedded store, answering `http::Request<Bytes>`. Also the fan-out
//! (hooks hear of the settler's `origin-diverged`) and the history
//! repository's agreement with what production serves.

use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use stamp_control::config::{Context, ControlConfig, ControlFile};
use stamp_control::{Control, OriginAccess};
use stamp_model::problems::Problems;
use stamp_store::SharedStore;
use stamp_tests::{Origin, Route};

struct Env {
    control: Control,
    store: SharedStore,
    _dir: tempfile::TempDir,
}

/// A control plane with `toml` as its config file (open mode, loopback).
async fn control(toml_text: &str, origin: &str) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = stamp_tests::open_store(&dir.path().join("store").to_string_lossy())
        .await
        .unwrap();
    #[derive(serde::Deserialize, Default)]
    struct F {
        history_repo: Option<std::path::PathBuf>,
        #[serde(default)]
        hooks: stamp_control::Entries,
        #[serde(default)]
        settle: stamp_control::config::FileSettle,
    }
    let f: F = toml::from_str(toml_text).unwrap();
    let mut p = Problems::new("test");
    let cfg = ControlConfig::build(
        ControlFile {
            history_repo: f.history_repo,
            hooks: f.hooks,
            settle: f.settle,
            ..ControlFile::default()
        },
        Context {
            env_is_set: stamp_control::env_is_set,
            listen: "127.0.0.1:9".parse().unwrap(),
            tls: false,
            demo: false,
            signal: false,
        },
        &mut p,
    );
    assert!(p.is_empty(), "{:?}", p.into_list());
    let control = Control::new(
        cfg,
        store.clone(),
        OriginAccess {
            url: origin.to_string(),
            host: None,
            verify_cert: true,
        },
    )
    .unwrap();
    Env {
        control,
        store,
        _dir: dir,
    }
}

async fn call(c: &Control, method: &str, path: &str, body: &str) -> (u16, Value) {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1:9")
        .header("content-type", "application/json")
        .body(Bytes::from(body.to_string()))
        .unwrap();
    let resp = c.handle(req).await;
    let status = resp.status().as_u16();
    let v = serde_json::from_slice(resp.body().full()).unwrap_or(Value::Null);
    (status, v)
}

#[tokio::test]
async fn the_router_answers_without_a_socket() {
    let env = control("", "http://127.0.0.1:9").await;
    let c = &env.control;
    let (s, v) = call(
        c,
        "PUT",
        "/__stamp/api/v1/tickets/tkt-1/modules/src/a.js",
        "export default 1;",
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["stage"], "dev");
    assert_eq!(v["module"]["path"], "/src/a.js");
    let (s, v) = call(c, "GET", "/__stamp/api/v1/tickets/TKT-1", "").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["modules"]["dev"][0]["specifier"], "/src/a.js");
    assert_eq!(
        v["links"]["dev"], "http://127.0.0.1:9/?dev=TKT-1",
        "links come from the listener, not Host"
    );
    let (s, v) = call(
        c,
        "POST",
        "/__stamp/api/v1/tickets/TKT-1/promote",
        r#"{"expected_version": 1}"#,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["stage"], "qa");
    let (s, v) = call(
        c,
        "POST",
        "/__stamp/api/v1/tickets/TKT-1/promote",
        r#"{"expected_version": "two"}"#,
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["code"], "bad_request");
    assert_eq!(v["error"]["field"], "expected_version", "{v}");
    let (s, v) = call(
        c,
        "POST",
        "/__stamp/api/v1/tickets/TKT-1/promote",
        r#"{"expected_version": 1}"#,
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{v}"
    );
    assert_eq!(v["error"]["stage"], "qa");
    let (s, v) = call(c, "GET", "/__stamp/api/v1/nothing", "").await;
    assert_eq!((s, v["error"]["code"].as_str()), (404, Some("not_found")));
    let (s, v) = call(c, "GET", "/__stamp/nothing", "").await;
    assert_eq!((s, v["error"]["code"].as_str()), (404, Some("not_found")));
}

#[tokio::test]
async fn writes_from_another_site_are_refused_even_in_open_mode() {
    let env = control("", "http://127.0.0.1:9").await;
    let c = &env.control;
    call(
        c,
        "PUT",
        "/__stamp/api/v1/tickets/TKT-2/modules/src/a.js",
        "1",
    )
    .await;
    let forged = |origin: Option<&str>, site: Option<&str>, ct: &str| {
        let mut b = http::Request::builder()
            .method("POST")
            .uri("/__stamp/api/v1/tickets/TKT-2/promote")
            .header("host", "127.0.0.1:9")
            .header("content-type", ct);
        if let Some(o) = origin {
            b = b.header("origin", o);
        }
        if let Some(s) = site {
            b = b.header("sec-fetch-site", s);
        }
        b.body(Bytes::from_static(b"{\"expected_version\": 1}"))
            .unwrap()
    };
    for req in [
        forged(Some("https://evil.example"), None, "application/json"),
        forged(Some("null"), None, "application/json"),
        forged(None, Some("cross-site"), "application/json"),
    ] {
        let resp = c.handle(req).await;
        assert_eq!(resp.status(), 403);
    }
    let resp = c.handle(forged(None, None, "text/plain")).await;
    assert_eq!(resp.status(), 415, "a JSON write must say application/json");
    let resp = c
        .handle(forged(
            Some("http://127.0.0.1:9"),
            Some("same-origin"),
            "application/json",
        ))
        .await;
    assert_eq!(
        resp.status(),
        200,
        "{:?}",
        String::from_utf8_lossy(resp.body().full())
    );
}

/// A release, then the origin serves a third version: the settler retires
/// the override, the hooks hear `origin-diverged`, and the history
/// repository's file shows the overlay production now serves (empty).
#[tokio::test]
async fn the_settlers_changes_reach_hooks_and_history() {
    let origin = Origin::start().unwrap();
    let js = Route::js;
    origin.route("/src/a.js", js("export default 'origin v1';"));
    let sink = stamp_tests::fakes::FakeReceiver::start("hook-secret").unwrap();
    let repo = tempfile::tempdir().unwrap();
    let toml_text = format!(
        "history_repo = \"{}\"\n[settle]\ninterval = \"50ms\"\n\
         [[hooks]]\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"hook-secret\"\nbackoff = \"10ms\"\n",
        repo.path().display(),
        sink.url()
    );
    let env = control(&toml_text, &origin.url).await;
    let c = &env.control;
    let (s, _) = call(
        c,
        "PUT",
        "/__stamp/api/v1/tickets/TKT-3/modules/src/a.js",
        "export default 'ticket';",
    )
    .await;
    assert_eq!(s, 201);
    for v in [1, 2] {
        let (s, body) = call(
            c,
            "POST",
            "/__stamp/api/v1/tickets/TKT-3/promote",
            &format!("{{\"expected_version\": {v}}}"),
        )
        .await;
        assert_eq!(s, 200, "{body}");
    }
    let file = repo.path().join("production-importmap.json");
    let served = || std::fs::read_to_string(&file).unwrap_or_default();
    wait_until(|| served().contains("/src/a.js")).await;
    // The baseline is recorded at release; wait for it, then deploy a third version.
    wait_until_async(|| async {
        env.store
            .get_ticket(&stamp_model::TicketKey::parse("TKT-3").unwrap())
            .await
            .unwrap()
            .is_some_and(|t| t.baseline.is_some())
    })
    .await;
    origin.route("/src/a.js", js("export default 'origin v2';"));
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let jobs = c.run_jobs(shutdown);
    let watch = async {
        wait_until(|| {
            sink.deliveries()
                .iter()
                .any(|e| e["event"] == "origin-diverged")
        })
        .await;
        wait_until(|| !served().contains("/src/a.js")).await;
        // The file is written before it is committed: wait for the commit.
        wait_until(|| git_log(repo.path()).contains("the origin diverged")).await;
    };
    tokio::select! {
        _ = jobs => panic!("jobs ended before shutdown"),
        _ = watch => {}
    }
    let _ = stop.send(true);
    let doc: Value = serde_json::from_str(&served()).unwrap();
    assert_eq!(
        doc["imports"],
        serde_json::json!({}),
        "retired overrides are not in the log: {doc}"
    );
    assert_eq!(doc["released"], serde_json::json!(["TKT-3"]));
    let log = git_log(repo.path());
    assert!(log.contains("TKT-3 released to prod"), "{log}");
    assert!(
        log.contains("TKT-3: the origin diverged by settler"),
        "{log}"
    );
}

fn git_log(path: &std::path::Path) -> String {
    let repo = git2::Repository::open(path).unwrap();
    let mut walk = repo.revwalk().unwrap();
    walk.push_head().unwrap();
    walk.map(|id| {
        repo.find_commit(id.unwrap())
            .unwrap()
            .message()
            .unwrap_or("")
            .to_string()
    })
    .collect::<Vec<_>>()
    .join("\n---\n")
}

async fn wait_until(mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_until_async<F: std::future::Future<Output = bool>>(mut f: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A closed ticket past retention says so, with its kept history, instead
/// of "does not exist"; an upload's history entry is no stage move.
#[tokio::test]
async fn a_purged_ticket_says_so_and_uploads_are_no_stage_moves() {
    let env = control("", "http://127.0.0.1:9").await;
    let c = &env.control;
    let put = http::Request::builder()
        .method("PUT")
        .uri("/__stamp/api/v1/tickets/OLD-1/modules/src/a.js")
        .header("host", "127.0.0.1:9")
        .body(Bytes::from_static(b"export default 1;"))
        .unwrap();
    assert_eq!(c.handle(put).await.status(), 201);
    let (s, _) = call(
        c,
        "POST",
        "/__stamp/api/v1/tickets/OLD-1/promote",
        r#"{"from":"dev"}"#,
    )
    .await;
    assert_eq!(s, 200);
    let put = http::Request::builder()
        .method("PUT")
        .uri("/__stamp/api/v1/tickets/OLD-1/modules/src/b.js")
        .header("host", "127.0.0.1:9")
        .body(Bytes::from_static(b"export default 2;"))
        .unwrap();
    assert_eq!(c.handle(put).await.status(), 200);
    let (_, t) = call(c, "GET", "/__stamp/api/v1/tickets/OLD-1", "").await;
    let uploads: Vec<&Value> = t["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "upload")
        .collect();
    assert_eq!(uploads.len(), 2, "{t}");
    for u in uploads {
        assert_eq!(
            (u["from"].clone(), u["to"].clone()),
            (Value::Null, Value::from("dev")),
            "{u}"
        );
    }
    let (s, _) = call(
        c,
        "POST",
        "/__stamp/api/v1/tickets/OLD-1/close",
        r#"{"from":"qa"}"#,
    )
    .await;
    assert_eq!(s, 200);
    // The collector's purge, as it does it past closed_retention.
    let key = stamp_model::TicketKey::parse("OLD-1").unwrap();
    let record = env.store.get_ticket(&key).await.unwrap().unwrap();
    let summary = stamp_model::HistoryEvent {
        at_ms: stamp_model::now_ms(),
        event: "purged".into(),
        from: None,
        to: None,
        actor: "gc".into(),
        commit: None,
        branch: None,
        role: None,
        source: None,
        detail: Some("closed for longer than 30days: purged with 5 history events".into()),
    };
    assert!(env
        .store
        .purge_ticket(&key, record.version, summary)
        .await
        .unwrap());
    let (s, v) = call(c, "GET", "/__stamp/api/v1/tickets/OLD-1", "").await;
    assert_eq!(s, 410, "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("closed and purged by gc") && message.contains("30days"),
        "{message}"
    );
    assert!(
        v["error"]["history"]
            .as_array()
            .is_some_and(|h| h.len() >= 5),
        "{v}"
    );
    let (s, _) = call(c, "GET", "/__stamp/api/v1/tickets/NEVER-1", "").await;
    assert_eq!(s, 404);
}
