//! Hostile cases against the real binary: ticket code cannot become a
//! service worker nor be served at another path, writes from another site
//! are refused in every mode, a hostile Host never reaches a link, policy
//! programs get a clean environment, missing secrets fail start-up, and the
//! smaller holes (double-encoded paths, the reserved prefix, metrics token).

use std::time::Duration;

use serde_json::Value;
use stamp_tests::browser::Browser;
use stamp_tests::{client, module_url, Origin, Proxy, Route};

const PAGE: &str = "<!doctype html><html><head><title>shop</title></head><body>\
    <p id=out>production</p><script type=module src=/src/app.js></script></body></html>";
const PROD_APP: &str = "document.getElementById('out').textContent = 'production app';";

fn origin() -> Origin {
    let o = Origin::start().unwrap();
    o.route("/", Route::html(PAGE));
    o.route(
        "/src/app.js",
        Route::bytes("text/javascript", PROD_APP.as_bytes().to_vec()),
    );
    o.route("/__stampede.html", Route::html("<p>not ours</p>"));
    o
}

async fn put(p: &Proxy, path: &str, body: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = client()
        .put(p.url(&format!("/__stamp/api/v1/tickets/SEC-1/modules/{path}")))
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The ticket's app tries to register itself, and a copy of itself at the
/// site root, as service workers; both must fail, in a real Chromium.
#[tokio::test]
async fn ticket_code_cannot_become_a_service_worker_or_move_paths() {
    let origin = origin();
    let proxy = Proxy::start(&origin.url, &[]).unwrap();
    let app = "const out = document.getElementById('out');\n\
        out.textContent = 'ticket app';\n\
        const root = new URL('/sw.js' + new URL(import.meta.url).search, location.href).href;\n\
        const tries = [\n\
          navigator.serviceWorker.register(import.meta.url, { scope: '/src/' }),\n\
          navigator.serviceWorker.register(root, { scope: '/' }),\n\
        ];\n\
        Promise.allSettled(tries).then(async (r) => {\n\
          const regs = await navigator.serviceWorker.getRegistrations();\n\
          out.dataset.sw = r.map((x) => x.status).join(',') + ';registrations=' + regs.length;\n\
          out.textContent = 'ticket app; sw ' + out.dataset.sw;\n\
        });\n";
    let (s, v) = put(&proxy, "src/app.js", app, &[]).await;
    assert_eq!(s, 201, "{v}");

    // Over HTTP: the body answers only at its own path, and never to a
    // service-worker script fetch.
    let url = module_url("/src/app.js", app);
    let ok = client().get(proxy.url(&url)).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let moved = url.replacen("/src/app.js", "/anything.js", 1);
    let resp = client().get(proxy.url(&moved)).send().await.unwrap();
    assert_eq!(
        resp.status(),
        404,
        "a body is served only at its upload path"
    );
    let resp = client()
        .get(proxy.url(&url))
        .header("service-worker", "script")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);

    let browser = Browser::start().await.unwrap();
    browser.goto(&proxy.url("/?dev=SEC-1")).await.unwrap();
    let text = browser
        .wait_for_text("#out", "sw ", Duration::from_secs(15))
        .await
        .unwrap();
    assert_eq!(text, "ticket app; sw rejected,rejected;registrations=0");
    // Production afterwards is production, with no worker in control.
    browser.goto(&proxy.url("/?stamp=off")).await.unwrap();
    browser
        .wait_for_text("#out", "production app", Duration::from_secs(10))
        .await
        .unwrap();
    let controlled = browser
        .execute("return navigator.serviceWorker.controller === null;")
        .await
        .unwrap();
    assert_eq!(controlled, Value::Bool(true));
    browser.close().await.unwrap();
}

#[tokio::test]
async fn writes_from_another_site_and_hostile_hosts_get_nothing() {
    let origin = origin();
    let proxy = Proxy::start(&origin.url, &[]).unwrap();
    let (s, _) = put(&proxy, "src/app.js", "1", &[]).await;
    assert_eq!(s, 201);
    let promote = proxy.url("/__stamp/api/v1/tickets/SEC-1/promote");
    // A cross-site form post (text/plain, foreign Origin) in open mode.
    for (origin_header, site, ct) in [
        (Some("https://evil.example"), None, "application/json"),
        (None, Some("cross-site"), "application/json"),
        (
            Some("https://evil.example"),
            Some("cross-site"),
            "text/plain",
        ),
    ] {
        let mut req = client()
            .post(&promote)
            .header("content-type", ct)
            .body("{}");
        if let Some(o) = origin_header {
            req = req.header("origin", o);
        }
        if let Some(s) = site {
            req = req.header("sec-fetch-site", s);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 403, "{origin_header:?} {site:?}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "forbidden");
    }
    let resp = client()
        .post(&promote)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415, "JSON writes must say so");
    // Open mode answers no foreign Host at all (DNS rebinding).
    let foreign = client()
        .get(proxy.url("/__stamp/api/v1/tickets/SEC-1"))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
    // Another loopback name is answered, and still makes no link.
    let port = proxy.url.rsplit(':').next().unwrap();
    let t = stamp_tests::json_of(
        client()
            .get(proxy.url("/__stamp/api/v1/tickets/SEC-1"))
            .header("host", format!("localhost:{port}")),
    )
    .await;
    assert_eq!(t["stage"], "dev", "nothing was promoted");
    assert_eq!(
        t["links"]["dev"],
        format!("{}/?dev=SEC-1", proxy.url),
        "links come from the listener, never from Host"
    );
    // A write from the proxy's own origin goes through.
    let resp = client()
        .post(&promote)
        .header("origin", proxy.url.as_str())
        .header("content-type", "application/json")
        .body("{\"expected_version\": 1}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn small_holes_are_closed() {
    let origin = origin();
    let secret = "scrape-secret";
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("p.toml");
    std::fs::write(
        &conf,
        format!(
            "origin = \"{}\"\nstore = \"{}\"\n[metrics]\ntoken_sha256 = \"{}\"\n",
            origin.url,
            dir.path().join("store").display(),
            stamp_control::hash_token(secret)
        ),
    )
    .unwrap();
    let proxy = Proxy::start_with(None, &["--config", &conf.to_string_lossy()], &[]).unwrap();
    // Double-encoded traversal in an upload path.
    let (s, v) = put(&proxy, "src/%252e%252e/x.js", "1", &[]).await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (400, Some("path")),
        "{v}"
    );
    // The reserved prefix is /__stamp/ exactly.
    let body = stamp_tests::get_text(&proxy.url("/__stampede.html")).await;
    assert_eq!(body, "<p>not ours</p>");
    // Metrics with a token configured.
    let scrape = |token: Option<&'static str>| {
        let mut req = client().get(proxy.url("/__stamp/metrics"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move { req.send().await.unwrap() }
    };
    assert_eq!(scrape(None).await.status(), 401);
    assert_eq!(scrape(Some("wrong")).await.status(), 401);
    let m = scrape(Some(secret)).await;
    assert_eq!(m.status(), 200);
    assert!(m.text().await.unwrap().contains("stamp_requests_total"));
    let h = client()
        .get(proxy.url("/__stamp/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(h.status(), 200, "health stays open");
}

/// The command policy's program sees PATH, STAMP_* and what the entry
/// lists, never the proxy's secrets; a secret variable that is not set
/// fails --check and start-up, naming the entry.
#[tokio::test]
async fn policy_programs_get_a_clean_environment_and_secrets_are_checked() {
    let origin = origin();
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("env.txt");
    let conf = dir.path().join("p.toml");
    std::fs::write(
        &conf,
        format!(
            "origin = \"{}\"\nstore = \"{}\"\n\
             [[policies]]\nkind = \"command\"\nprogram = \"sh\"\n\
             args = [\"-c\", \"env > {}\"]\nenv = {{ EXTRA = \"yes\" }}\npass_env = [\"STAMP_TEST_PASSED\"]\n\
             [[hooks]]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\nsecret_env = \"STAMP_WEBHOOK_SECRET\"\n",
            origin.url,
            dir.path().join("store").display(),
            seen.display()
        ),
    )
    .unwrap();
    let conf = conf.to_string_lossy().to_string();

    // Without the webhook's secret: --check names the entry and fails.
    let bin = stamp_tests::proxy::binary("stamp-proxy").unwrap();
    let out = std::process::Command::new(&bin)
        .args(["--check", "--config", &conf])
        .env_remove("STAMP_WEBHOOK_SECRET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("hooks[0].secret_env") && err.contains("STAMP_WEBHOOK_SECRET"),
        "{err}"
    );

    let proxy = Proxy::start_with(
        None,
        &["--config", &conf],
        &[
            ("STAMP_WEBHOOK_SECRET", "hook-secret-value"),
            ("STAMP_TEST_PASSED", "passed-value"),
            ("STAMP_TEST_NOT_PASSED", "leaked-value"),
        ],
    )
    .unwrap();
    let (s, _) = put(&proxy, "src/app.js", "1", &[]).await;
    assert_eq!(s, 201);
    let resp = client()
        .post(proxy.url("/__stamp/api/v1/tickets/SEC-1/promote"))
        .header("content-type", "application/json")
        .body("{\"expected_version\": 1}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let env = std::fs::read_to_string(&seen).unwrap();
    for present in [
        "PATH=",
        "STAMP_TICKET=SEC-1",
        "STAMP_TO=qa",
        "EXTRA=yes",
        "STAMP_TEST_PASSED=passed-value",
    ] {
        assert!(env.contains(present), "{present} missing from:\n{env}");
    }
    for absent in ["hook-secret-value", "leaked-value", "RUST_LOG"] {
        assert!(
            !env.contains(absent),
            "{absent} reached the program:\n{env}"
        );
    }
}

/// Writes `bytes` one at a time, `gap` apart, watching for the proxy to
/// close the connection; `true` when it did before the last byte.
async fn trickle(s: &mut tokio::net::TcpStream, bytes: &[u8], gap: Duration) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = [0u8; 4096];
    for b in bytes {
        if s.write_all(&[*b]).await.is_err() {
            return true;
        }
        match tokio::time::timeout(gap, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(n)) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                // Cut off with a response, or answered: either way it spoke.
                return !text.starts_with("HTTP/1.1 200");
            }
            Err(_) => {}
        }
    }
    false
}

/// Reads until `needle` has arrived (or the connection ends).
async fn read_until(s: &mut tokio::net::TcpStream, needle: &str) -> String {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    while !String::from_utf8_lossy(&got).contains(needle) {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Slowloris: a request header trickled in (on a fresh connection or a
/// kept-alive one) is cut off at `timeouts.client_header`, and never reaches
/// the origin; a body stalled for longer than `timeouts.client_body` is cut
/// off too. A header sent in pieces within the deadline, and a body that
/// takes longer than the header deadline but keeps coming, are served.
#[tokio::test]
async fn slow_clients_are_cut_off_by_header_and_body_timeouts() {
    use tokio::io::AsyncWriteExt;
    let origin = origin();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("p.toml");
    std::fs::write(
        &conf,
        format!(
            "origin = \"{}\"\nstore = \"{}\"\n[timeouts]\nclient_header = \"2s\"\nclient_body = \"1s\"\n",
            origin.url,
            dir.path().join("store").display(),
        ),
    )
    .unwrap();
    let proxy = Proxy::start_with(None, &["--config", &conf.to_string_lossy()], &[]).unwrap();
    let addr = format!("127.0.0.1:{}", proxy.port);
    let connect = || async { tokio::net::TcpStream::connect(&addr).await.unwrap() };
    let slow_header = format!("X-Slow: {}\r\n\r\n", "a".repeat(80));

    // A fresh connection trickling its header over 20 s.
    let mut s = connect().await;
    s.write_all(b"GET /slow-1 HTTP/1.1\r\nHost: shop\r\n")
        .await
        .unwrap();
    assert!(
        trickle(&mut s, slow_header.as_bytes(), Duration::from_millis(250)).await,
        "a header trickled over 20 s was never cut off"
    );
    assert_eq!(origin.hits("/slow-1"), 0);

    // Blank lines first (the parser skips them) do not stop the clock.
    let mut s = connect().await;
    s.write_all(b"\r\n\r\n").await.unwrap();
    assert!(
        trickle(
            &mut s,
            format!("GET /slow-3 HTTP/1.1\r\n{slow_header}").as_bytes(),
            Duration::from_millis(250)
        )
        .await,
        "a header behind blank lines was never cut off"
    );
    assert_eq!(origin.hits("/slow-3"), 0);

    // A kept-alive connection: the first request is served, the second
    // one's trickled header is cut off.
    let mut s = connect().await;
    s.write_all(b"GET /src/app.js HTTP/1.1\r\nHost: shop\r\n\r\n")
        .await
        .unwrap();
    let first = read_until(&mut s, "production app';").await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    s.write_all(b"GET /slow-2 HTTP/1.1\r\nHost: shop\r\n")
        .await
        .unwrap();
    assert!(
        trickle(&mut s, slow_header.as_bytes(), Duration::from_millis(250)).await,
        "a kept-alive connection's trickled header was never cut off"
    );
    assert_eq!(origin.hits("/slow-2"), 0);

    // A header in three pieces, well within the deadline: served.
    let mut s = connect().await;
    for piece in [
        "GET /src/app.js HTT",
        "P/1.1\r\nHost: sh",
        "op\r\nConnection: close\r\n\r\n",
    ] {
        s.write_all(piece.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let answer = read_until(&mut s, "production app';").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // A body that keeps coming (each piece within client_body) for longer
    // than client_header: served, with and without `Expect: 100-continue`.
    for expect in ["", "Expect: 100-continue\r\n"] {
        let mut s = connect().await;
        let body = "0123456789".repeat(6);
        s.write_all(
            format!(
                "POST / HTTP/1.1\r\nHost: shop\r\nContent-Type: text/plain\r\n{expect}\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        for piece in body.as_bytes().chunks(10) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if let Err(e) = s.write_all(piece).await {
                let answer = read_until(&mut s, "</html>").await;
                panic!("{e}: {answer}\n{}", proxy.log_text());
            }
        }
        let answer = read_until(&mut s, "</html>").await;
        assert!(
            answer.contains("HTTP/1.1 200"),
            "a slow but steady body ({expect:?}) was cut off: {answer}"
        );
    }

    // A body that stalls: cut off.
    let mut s = connect().await;
    s.write_all(b"POST /stall HTTP/1.1\r\nHost: shop\r\nContent-Length: 1000\r\n\r\n0123456789")
        .await
        .unwrap();
    let answer = read_until(&mut s, "\r\n\r\n").await;
    assert!(
        !answer.starts_with("HTTP/1.1 200"),
        "a stalled body was answered 200: {answer}"
    );
}

/// A Slack (or any) webhook URL is a secret: a failed delivery's log line
/// says why (a timeout, a refused connection) and never the URL's path.
#[tokio::test]
async fn failed_hook_deliveries_log_the_cause_never_the_secret_url() {
    let origin = origin();
    // One peer that accepts and never answers, one port nobody listens on.
    let hang = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hang_port = hang.local_addr().unwrap().port();
    let (_refusing, closed_port) = stamp_tests::refused_port().unwrap();
    let held = std::thread::spawn(move || {
        let conns: Vec<_> = hang.incoming().take(1).collect();
        std::thread::sleep(Duration::from_secs(8));
        drop(conns);
    });
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("proxy.toml");
    std::fs::write(
        &conf,
        format!(
            "origin = \"{}\"\nstore = \"{}\"\n\
             [[hooks]]\nkind = \"slack\"\nwebhook_url = \"http://127.0.0.1:{hang_port}/services/T0/B0/HANGSECRET\"\n\
             timeout = \"1s\"\nmax_attempts = 1\n\
             [[hooks]]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{closed_port}/hook/REFUSEDSECRET\"\n\
             secret = \"s3cret\"\nmax_attempts = 1\n",
            origin.url,
            dir.path().join("store").display()
        ),
    )
    .unwrap();
    let p = Proxy::start_with(None, &["--config", &conf.to_string_lossy()], &[]).unwrap();
    let (s, _) = put(&p, "src/app.js", "export default 1;\n", &[]).await;
    assert_eq!(s, 201);
    // Slack hears of moves.
    let moved = client()
        .post(p.url("/__stamp/api/v1/tickets/SEC-1/promote"))
        .json(&serde_json::json!({"from": "dev"}))
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let log = loop {
        let log = p.log_text();
        let failed = |kind: &str| {
            log.lines()
                .any(|l| l.contains(&format!("hook {kind}:")) && l.contains("not delivered"))
        };
        if failed("slack") && failed("webhook") {
            break log;
        }
        assert!(std::time::Instant::now() < deadline, "{log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        !log.contains("HANGSECRET") && !log.contains("REFUSEDSECRET"),
        "{log}"
    );
    let line = |kind: &str| {
        log.lines()
            .find(|l| l.contains(&format!("hook {kind}:")) && l.contains("not delivered"))
            .unwrap_or_default()
            .to_string()
    };
    // Whichever clock fires first (the client's or the dispatcher's), the
    // line says it was a timeout.
    let slack = line("slack");
    assert!(
        slack.contains("timed out") || slack.contains("no answer within 1s"),
        "{log}"
    );
    assert!(line("webhook").contains("could not connect"), "{log}");
    held.join().unwrap();
}

/// The merged-map endpoint answers a ticket's map only to whom the ticket's
/// page would be answered (a protected preview needs its link, a revoked
/// link stops it), never fetches under `/__stamp/`, and an error names
/// which upstream failed but never the origin's address.
#[tokio::test]
async fn the_map_endpoint_keeps_previews_protected_and_upstreams_private() {
    let origin = Origin::start().unwrap();
    origin.route(
        "/",
        Route::html(
            "<!doctype html><html><head><script type=\"systemjs-importmap\" src=\"/map.json\"></script>\
             </head><body>shop</body></html>",
        ),
    );
    origin.route(
        "/map.json",
        Route::bytes(
            "application/importmap+json",
            br#"{"imports":{"app":"/src/app.js"}}"#.to_vec(),
        ),
    );
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("proxy.toml");
    std::fs::write(
        &conf,
        format!(
            "origin = \"{}\"\nstore = \"{}\"\nasset_origins = [\"http://{dead}\"]\n\
             [preview]\nprotect = true\nsecret = \"0123456789abcdef0123456789abcdef-map\"\n",
            origin.url,
            dir.path().join("store").display()
        ),
    )
    .unwrap();
    let p = Proxy::start_with(None, &["--config", &conf.to_string_lossy()], &[]).unwrap();
    let (s, _) = put(&p, "src/app.js", "export default 'ticket';\n", &[]).await;
    assert_eq!(s, 201);
    let t = stamp_tests::json_of(client().get(p.url("/__stamp/api/v1/tickets/SEC-1"))).await;
    let link = t["links"]["dev"].as_str().unwrap().to_string();
    let link = &link[link.find("/?").unwrap()..];
    let page = client().get(p.url(link)).send().await.unwrap();
    let cookie = page
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|c| c.to_str().unwrap().split(';').next().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("; ");
    let html = page.text().await.unwrap();
    let start = html.find("src=\"/__stamp/map?").expect("a merged map URL") + 5;
    let map_url = html[start..html[start..].find('"').unwrap() + start].replace("&amp;", "&");
    let map = |cookie: Option<String>| {
        let url = p.url(&map_url);
        async move {
            let mut r = client().get(url);
            if let Some(c) = cookie {
                r = r.header("cookie", c);
            }
            r.send().await.unwrap().text().await.unwrap()
        }
    };
    // With the link's cookie: the ticket's map. Without: production's.
    let theirs = map(Some(cookie.clone())).await;
    assert!(
        theirs.contains("__ts="),
        "the ticket's map with {cookie}: {theirs}\n{html}"
    );
    // Without: sent to production's own map.
    let anyone = client().get(p.url(&map_url)).send().await.unwrap();
    assert_eq!(anyone.status(), 302, "no cookie, no token");
    assert_eq!(anyone.headers()["location"], "/map.json");
    // Revoked links open nothing, the map included.
    let revoked = client()
        .post(p.url("/__stamp/api/v1/tickets/SEC-1/revoke-links"))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let after = map(Some(cookie)).await;
    assert!(!after.contains("__ts="), "after revoke-links: {after}");
    // Nothing under /__stamp/ is fetched from the origin.
    for src in [
        "%2F__stamp%2Fapi%2Fv1%2Ftickets",
        "%2Fa%2F..%2F__stamp%2Fhealth",
    ] {
        let r = client()
            .get(p.url(&format!("/__stamp/map?v=00&src={src}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{src}");
    }
    assert_eq!(
        origin.hits("/__stamp/api/v1/tickets") + origin.hits("/__stamp/health"),
        0
    );
    // An asset origin that is down is named; the origin's address never is.
    let (s, _) = put(&p, "src/b.js", "export default 'b';\n", &[]).await;
    assert_eq!(s, 200);
    let enc = format!("http://{dead}/m.json")
        .replace(':', "%3A")
        .replace('/', "%2F");
    let t = stamp_tests::json_of(client().get(p.url("/__stamp/api/v1/tickets/SEC-1"))).await;
    let link = t["links"]["dev"].as_str().unwrap().to_string();
    let token = &link[link.find("&st=").unwrap()..];
    let r = client()
        .get(p.url(&format!("/__stamp/map?dev=SEC-1{token}&v=00&src={enc}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let said = r.text().await.unwrap();
    assert!(said.contains(&format!("http://{dead}")), "{said}");
    assert!(!said.contains(&origin.url), "{said}");
    let down = Proxy::start(&format!("http://{dead}"), &[]).unwrap();
    let r = client().get(down.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let said = r.text().await.unwrap();
    assert!(
        said.contains("the origin could not be reached") && !said.contains(&dead.to_string()),
        "{said}"
    );
    assert!(
        down.log_text().contains(&dead.to_string()),
        "operators see it in the log"
    );
}
