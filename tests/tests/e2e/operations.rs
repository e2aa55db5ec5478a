//! What ops meet: configuration errors, TLS on the listener, an https origin,
//! graceful shutdown, health and metrics, persistence across restarts, and
//! flat memory on a 50 MB stamped page.

use std::process::Command;
use std::time::Duration;

use stamp_tests::proxy::binary;
use stamp_tests::{client, get_text, import_map, module_url, seed_dir, Origin, Proxy, Route};

fn run_proxy(args: &[&str]) -> std::process::Output {
    Command::new(binary("stamp-proxy").unwrap())
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

#[test]
fn invalid_configuration_is_refused_with_file_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy.toml");
    std::fs::write(
        &file,
        "origin = \"http://127.0.0.1:1\"\n[rewrite]\nmax_map = 3\n",
    )
    .unwrap();
    let out = run_proxy(&["--config", &file.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&*file.to_string_lossy()) && err.contains("line 3"),
        "{err}"
    );
    assert!(
        err.contains("unknown field `max_map`") && err.contains("max_import_map_bytes"),
        "{err}"
    );

    std::fs::write(
        &file,
        "origin = \"ftp://x\"\nlisten = \"nowhere\"\n[timeouts]\nread = \"soon\"\n",
    )
    .unwrap();
    let err = String::from_utf8_lossy(&run_proxy(&["--config", &file.to_string_lossy()]).stderr)
        .to_string();
    for key in ["`origin`", "`listen`", "`timeouts.read`"] {
        assert!(err.contains(key), "{key} missing: {err}");
    }

    let out = run_proxy(&["--origin", "http://127.0.0.1:1", "--store", "ftp://nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`--store`"));

    let out = run_proxy(&["--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));

    // The annotated example validates, and --check does not start a server.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../conf/stamp-proxy.toml");
    let out = run_proxy(&["--config", example, "--check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_busy_port_or_locked_store_is_a_clear_start_error() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = run_proxy(&[
        "--origin",
        "http://127.0.0.1:1",
        "--listen",
        &addr,
        "--store",
        &dir.path().to_string_lossy(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("cannot listen on {addr}")));

    let origin = Origin::start().unwrap();
    let store = dir.path().join("store");
    let _first = Proxy::start(&origin.url, &["--store", &store.to_string_lossy()]).unwrap();
    let out = run_proxy(&[
        "--origin",
        &origin.url,
        "--listen",
        "127.0.0.1:0",
        "--store",
        &store.to_string_lossy(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stamp.redb"), "names the store file: {err}");
}

/// A self-signed certificate for 127.0.0.1 (openssl CLI).
fn certificate(dir: &std::path::Path) -> (String, String) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl is needed for the TLS tests: apt-get install -y openssl");
    assert!(status.success());
    (
        cert.to_string_lossy().into_owned(),
        key.to_string_lossy().into_owned(),
    )
}

#[tokio::test]
async fn tls_listener_and_https_origin() {
    let origin = Origin::start().unwrap();
    origin.route(
        "/",
        Route::html("<script type=module src=/src/a.js></script>"),
    );
    let dir = tempfile::tempdir().unwrap();
    seed_dir(&dir.path().join("s1"), "TKT-1", &[("/src/a.js", "a")])
        .await
        .unwrap();
    let (cert, key) = certificate(dir.path());
    // Readiness is probed over plain HTTP by the harness, so this one is
    // started by hand and probed over TLS.
    let port = stamp_tests::free_port().unwrap();
    let mut tls_proxy = Command::new(binary("stamp-proxy").unwrap())
        .args([
            "--origin",
            &origin.url,
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["--tls-cert", &cert, "--tls-key", &key])
        .args(["--store", &dir.path().join("s1").to_string_lossy()])
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let https = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .no_proxy()
        .build()
        .unwrap();
    let url = format!("https://127.0.0.1:{port}/?dev=TKT-1");
    let mut resp = None;
    for _ in 0..200 {
        if let Ok(r) = https.get(&url).send().await {
            resp = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let resp = resp.expect("TLS proxy never answered");
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.ends_with("; Secure"), "Secure over TLS: {cookie}");
    assert!(
        cookie.starts_with("__Host-ticket_stamp=dev.TKT-1;"),
        "a __Host- cookie over TLS, which no sibling subdomain can set: {cookie}"
    );
    let html = resp.text().await.unwrap();
    assert_eq!(
        import_map(&html).unwrap()["imports"]["/src/a.js"],
        module_url("/src/a.js", "a").as_str()
    );

    // A second proxy whose origin is the first one, over https.
    let conf = dir.path().join("chain.toml");
    std::fs::write(
        &conf,
        format!(
            "origin = \"https://127.0.0.1:{port}\"\nstore = \"{}\"\n[origin_tls]\nverify = false\n",
            dir.path().join("s2").display()
        ),
    )
    .unwrap();
    let chained = Proxy::start_with(None, &["--config", &conf.to_string_lossy()], &[]).unwrap();
    let html = get_text(&chained.url("/?dev=TKT-1")).await;
    assert!(
        html.contains(&module_url("/src/a.js", "a")),
        "fetched through the https origin: {html}"
    );
    let _ = tls_proxy.kill();
    let _ = tls_proxy.wait();
}

#[tokio::test]
async fn sigterm_lets_requests_in_flight_finish() {
    let origin = Origin::start().unwrap();
    let mut proxy = Proxy::start(&origin.url, &[]).unwrap();
    let url = proxy.url("/__origin/slow?ms=700");
    let inflight = tokio::spawn(async move { client().get(url).send().await.unwrap() });
    // Let the request reach the origin before the signal.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while origin.hits("/__origin/slow") == 0 {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = tokio::task::spawn_blocking(move || {
        let s = proxy.signal_and_wait("TERM", Duration::from_secs(15));
        (s, proxy)
    })
    .await
    .unwrap();
    let resp = inflight.await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "finally\n");
    assert!(status.0.unwrap().success(), "clean exit on SIGTERM");
}

/// A rolling restart: the request in flight takes longer than the old 1 s
/// cut-off and still finishes; new connections are refused once the signal
/// is in; the process exits as soon as the request is done, long before
/// `shutdown.timeout`.
#[tokio::test]
async fn sigterm_waits_for_slow_requests_then_exits_promptly() {
    let origin = Origin::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("p.toml");
    std::fs::write(
        &conf,
        format!(
            "origin = \"{}\"\nstore = \"{}\"\n[shutdown]\ntimeout = \"30s\"\n",
            origin.url,
            dir.path().join("store").display()
        ),
    )
    .unwrap();
    let mut proxy = Proxy::start_with(None, &["--config", &conf.to_string_lossy()], &[]).unwrap();
    let base = proxy.url.clone();
    let url = proxy.url("/__origin/slow?ms=2500");
    let inflight = tokio::spawn(async move { client().get(url).send().await.unwrap() });
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while origin.hits("/__origin/slow") == 0 {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // An open panel's event stream (it never ends by itself) must not hold
    // the stop up.
    let events = client()
        .get(proxy.url("/__stamp/api/v1/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let _stream = tokio::spawn(async move {
        let mut events = events;
        while let Ok(Some(_)) = events.chunk().await {}
    });
    let pid = proxy.pid().unwrap();
    let started = std::time::Instant::now();
    let stop = tokio::task::spawn_blocking(move || {
        let s = proxy.signal_and_wait("TERM", Duration::from_secs(20));
        (s, proxy)
    });
    // Once the signal is in, new connections are refused.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
        .get(format!("{base}/__stamp/health"))
        .send()
        .await;
    assert!(
        fresh.is_err(),
        "a new connection was accepted while stopping (pid {pid})"
    );
    let resp = inflight.await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "finally\n");
    let (status, _proxy) = stop.await.unwrap();
    assert!(status.unwrap().success(), "clean exit");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "exited {took:?} after SIGTERM: it should not sit out the 30 s timeout"
    );
}

#[tokio::test]
async fn sigint_is_graceful_too() {
    let origin = Origin::start().unwrap();
    let mut proxy = Proxy::start(&origin.url, &[]).unwrap();
    let status =
        tokio::task::spawn_blocking(move || proxy.signal_and_wait("INT", Duration::from_secs(15)))
            .await
            .unwrap()
            .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn health_and_metrics() {
    let origin = Origin::start().unwrap();
    origin.route(
        "/",
        Route::html("<script type=module src=/src/a.js></script>"),
    );
    let dir = tempfile::tempdir().unwrap();
    seed_dir(dir.path(), "TKT-1", &[("/src/a.js", "a")])
        .await
        .unwrap();
    let proxy = Proxy::start(&origin.url, &["--store", &dir.path().to_string_lossy()]).unwrap();
    get_text(&proxy.url("/?dev=TKT-1")).await;
    get_text(&proxy.url("/")).await;
    get_text(&proxy.url(&module_url("/src/a.js", "a"))).await;

    let health: serde_json::Value = client()
        .get(proxy.url("/__stamp/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["store"]["reachable"], true);
    assert_eq!(health["snapshot"]["tickets"], 1);
    assert!(health["snapshot"]["age_ms"].as_u64().is_some());

    let needles = [
        "stamp_requests_total{kind=\"ticket\"} 1",
        "stamp_requests_total{kind=\"passthrough\"} 1",
        "stamp_requests_total{kind=\"module\"} 1",
        "stamp_rewrites_total{outcome=\"inserted\"} 1",
        "stamp_module_cache_total{result=\"miss\"} 1",
        "stamp_store_up 1",
        "stamp_request_duration_seconds_bucket",
    ];
    // A request is counted once it is done (Pingora's logging phase, after
    // its last byte went out): the client may ask for the metrics first.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let text = loop {
        let resp = client()
            .get(proxy.url("/__stamp/metrics"))
            .send()
            .await
            .unwrap();
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        let text = resp.text().await.unwrap();
        if needles.iter().all(|n| text.contains(n)) || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for needle in needles {
        assert!(text.contains(needle), "{needle} missing:\n{text}");
    }
    // What lol_html parsed of the rewritten bytes (early exit forwards the
    // rest of a page unread): some, and no more than came in.
    let counter = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
    };
    let parsed = counter("stamp_rewrite_bytes_parsed_total ");
    let read = counter("stamp_rewrite_bytes_in_total ");
    assert!(parsed > 0 && parsed <= read, "{parsed} of {read}");
    // The reserved prefix never reaches the origin.
    assert_eq!(
        client()
            .get(proxy.url("/__stamp/nothing"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(origin.hits("/__stamp/nothing"), 0);
}

#[tokio::test]
async fn the_embedded_store_survives_a_restart() {
    let origin = Origin::start().unwrap();
    origin.route(
        "/",
        Route::html("<script type=module src=/src/a.js></script>"),
    );
    let dir = tempfile::tempdir().unwrap();
    seed_dir(dir.path(), "TKT-1", &[("/src/a.js", "persisted")])
        .await
        .unwrap();
    let store = dir.path().to_string_lossy().into_owned();
    for _ in 0..2 {
        let proxy = Proxy::start(&origin.url, &["--store", &store]).unwrap();
        let html = get_text(&proxy.url("/?dev=TKT-1")).await;
        assert!(html.contains(&module_url("/src/a.js", "persisted")));
        let body = client()
            .get(proxy.url(&module_url("/src/a.js", "persisted")))
            .send()
            .await
            .unwrap();
        assert_eq!(
            stamp_tests::without_marker(&body.text().await.unwrap()),
            "persisted"
        );
    }
}

#[tokio::test]
async fn a_50_mb_stamped_page_streams_in_flat_memory() {
    let origin = Origin::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    seed_dir(dir.path(), "TKT-1", &[("/src/lib/greet.js", "g")])
        .await
        .unwrap();
    let proxy = Proxy::start(&origin.url, &["--store", &dir.path().to_string_lossy()]).unwrap();
    // Warm up with a small page so allocator pools exist before measuring.
    let small = client()
        .get(proxy.url("/__origin/big?mb=1&dev=TKT-1"))
        .send()
        .await
        .unwrap();
    small.bytes().await.unwrap();
    let before = proxy.peak_rss_kib().unwrap();

    let mut resp = client()
        .get(proxy.url("/__origin/big?mb=50&dev=TKT-1"))
        .send()
        .await
        .unwrap();
    assert!(resp.headers()["x-ticket-stamp"]
        .to_str()
        .unwrap()
        .starts_with("stamping; ticket="));
    let mut total = 0usize;
    let mut head = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        if head.len() < 4096 {
            head.extend_from_slice(&chunk[..chunk.len().min(4096)]);
        }
        total += chunk.len();
    }
    assert!(total > 50 * 1024 * 1024 - 65536, "whole page: {total}");
    let head = String::from_utf8_lossy(&head);
    assert!(
        head.contains(&module_url("/src/lib/greet.js", "g")),
        "stamped: {head}"
    );
    let after = proxy.peak_rss_kib().unwrap();
    let growth_mib = after.saturating_sub(before) / 1024;
    assert!(
        growth_mib < 16,
        "peak RSS grew {growth_mib} MiB over a 50 MiB page ({before} KiB → {after} KiB): not streaming"
    );
}

/// A small tmpfs, unmounted when dropped: a disk that really fills up.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "this test fills a real disk: it mounts a small tmpfs, which needs root \
             (as tests/run has in CI): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { dir }
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Fills the disk up to the last byte with a filler file.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let filler = self.path().join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        let mut size = chunk.len();
        while size > 0 {
            match f.write(&chunk[..size]) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => size /= 2,
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
        let _ = f.sync_all();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// A full disk under the embedded store: uploads fail with 503 and nothing
/// is lost, production keeps flowing, health and metrics say what is wrong,
/// and once space is back the store recovers by itself, without a restart.
#[tokio::test]
async fn a_full_disk_is_reported_and_recovered_from_without_a_restart() {
    let origin = Origin::start().unwrap();
    let page = "<script type=module src=/src/a.js></script>";
    origin.route("/", Route::html(page));
    let disk = SmallDisk::mount("8m");
    let store = disk.path().join("store");
    let proxy = Proxy::start(&origin.url, &["--store", &store.to_string_lossy()]).unwrap();
    let put = |key: &'static str, body: Vec<u8>| {
        let url = proxy.url(&format!("/__stamp/api/v1/tickets/{key}/modules/src/a.js"));
        async move {
            let resp = client().put(url).body(body).send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap())
        }
    };
    assert_eq!(put("DISK-1", b"kept".to_vec()).await.0, 201);

    let filler = disk.fill();
    // Bodies the file has no room for: redb must grow it, and cannot.
    let big = |n: u8| vec![b'a' + n; 3 * 1024 * 1024];
    let mut refused = None;
    for n in 0..4 {
        let (status, text) = put("DISK-2", big(n)).await;
        if status != 201 {
            refused = Some((status, text));
            break;
        }
    }
    let (status, text) = refused.expect("a full disk never refused an upload");
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("store_unavailable"), "{text}");

    let health = || async {
        let v: serde_json::Value = client()
            .get(proxy.url("/__stamp/health"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v
    };
    let h = health().await;
    assert_eq!(h["status"], "degraded", "{h}");
    assert!(h["store"]["fault"].is_string(), "{h}");
    let metrics = get_text(&proxy.url("/__stamp/metrics")).await;
    assert!(
        metrics.lines().any(|l| l == "stamp_store_fault 1"),
        "{metrics}"
    );
    // Production, and what was stored before, still flow.
    assert_eq!(get_text(&proxy.url("/")).await, page);
    let html = get_text(&proxy.url("/?dev=DISK-1")).await;
    assert!(html.contains(&module_url("/src/a.js", "kept")), "{html}");

    // Space comes back: the next uploads work, with no restart.
    std::fs::remove_file(filler).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, text) = put("DISK-2", b"after".to_vec()).await;
        if status == 201 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never recovered: {status} {text}\n{}",
            proxy.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let h = health().await;
    assert_eq!(h["status"], "ok", "{h}");
    assert!(h["store"]["fault"].is_null(), "{h}");
    let html = get_text(&proxy.url("/?dev=DISK-1")).await;
    assert!(html.contains(&module_url("/src/a.js", "kept")), "{html}");
    let html = get_text(&proxy.url("/?dev=DISK-2")).await;
    assert!(html.contains(&module_url("/src/a.js", "after")), "{html}");
    drop(proxy);
}
