//! Fault injection over the store and the origin, as real faults happen: a
//! Redis that answers slowly, cuts its answers off with a reset, hangs, says
//! `READONLY` or `LOADING`, or is out of memory (a real `maxmemory`); an
//! origin that resets mid-header or mid-body. Each ends in a clear error,
//! production keeps flowing, the proxy recovers by itself, and no write a
//! client saw acknowledged is lost. (A disk that fills under the embedded
//! store: `operations::a_full_disk_is_reported_and_recovered_from_without_a_restart`.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use stamp_tests::faulty::{Fault, Relay};
use stamp_tests::{client, free_port, get_text, module_url, Origin, Proxy, RedisServer, Route};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PAGE: &str = "<!doctype html><html><head><script type=\"importmap\">{\"imports\":{\"app\":\"/src/main.js\"}}</script><script type=module src=/src/main.js></script></head><body>prod</body></html>";

/// An upload of `/src/main.js` to `key`: the status and the body.
async fn put(proxy: &Proxy, key: &str, body: &str) -> (u16, String) {
    match client()
        .put(proxy.url(&format!(
            "/__stamp/api/v1/tickets/{key}/modules/src/main.js"
        )))
        .body(body.to_string())
        .timeout(Duration::from_secs(30))
        .send()
        .await
    {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
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

/// Production answers, unchanged and promptly, whatever the store does.
async fn production_flows(proxy: &Proxy) {
    let started = Instant::now();
    assert_eq!(get_text(&proxy.url("/")).await, PAGE);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "production waited on the store: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_faulty_redis_fails_writes_clearly_and_loses_no_acknowledged_write() {
    let redis = RedisServer::start().unwrap();
    let relay = Relay::start(redis.port).unwrap();
    let origin = Origin::start().unwrap();
    origin.route("/", Route::html(PAGE));
    let proxy = Proxy::start(&origin.url, &["--store", &relay.redis_url]).unwrap();
    let mut acked: Vec<(String, String)> = Vec::new();
    let mut n = 0;
    let mut upload = |proxy_status: u16, key: &str, body: String| {
        if proxy_status == 201 {
            acked.push((key.to_string(), body));
        }
    };

    let (status, text) = put(&proxy, "FLT-1", "export const v = 1;\n").await;
    assert_eq!(status, 201, "{text}");
    upload(status, "FLT-1", "export const v = 1;\n".into());

    // Each fault in turn: the write is refused with the API's 503, the log
    // says why, production flows meanwhile, and once the fault is gone the
    // same write succeeds.
    let faults = [
        (
            Fault::Delay(Duration::from_secs(7)),
            "did not answer within",
        ),
        (Fault::Blackhole, "did not answer within"),
        (Fault::CutReply(3), "redis"),
        (
            Fault::RedisError("READONLY You can't write against a read only replica.".into()),
            "READONLY: this Redis is a replica",
        ),
        (
            Fault::RedisError("LOADING Redis is loading the dataset in memory".into()),
            "LOADING: Redis is still loading its data",
        ),
    ];
    for (fault, logged) in faults {
        n += 1;
        let key = format!("FLT-{}", n + 1);
        let body = format!("export const v = {};\n", n + 1);
        relay.set(fault.clone());
        let refused = tokio::spawn({
            let url = proxy.url(&format!(
                "/__stamp/api/v1/tickets/{key}/modules/src/main.js"
            ));
            let body = body.clone();
            async move {
                let r = client()
                    .put(url)
                    .body(body)
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), r.text().await.unwrap_or_default())
            }
        });
        production_flows(&proxy).await;
        let (status, text) = refused.await.unwrap();
        assert_eq!(status, 503, "{fault:?}: {text}");
        assert!(text.contains("store_unavailable"), "{fault:?}: {text}");
        assert!(
            proxy.log_text().contains(logged),
            "{fault:?}: the log does not say {logged:?}:\n{}",
            proxy.log_text()
        );
        relay.set(Fault::None);
        // The client's retry succeeds (uploads are idempotent: whatever
        // landed before the cut is the same content).
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            let (status, text) = put(&proxy, &key, &body).await;
            if status == 201 || Instant::now() > deadline {
                assert_eq!(status, 201, "{fault:?}: retry: {text}");
                break status;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        upload(status, &key, body);
    }

    // A real out-of-memory Redis: maxmemory below what it holds, nothing it
    // may evict. The upload is refused, the health says why, and the
    // proxy recovers by itself once memory is raised.
    let used: u64 = redis
        .cli(&["MEMORY", "STATS"])
        .unwrap()
        .lines()
        .skip_while(|l| l.trim() != "peak.allocated")
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(2_000_000);
    redis
        .cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"])
        .unwrap();
    redis
        .cli(&["CONFIG", "SET", "maxmemory", &(used / 2).to_string()])
        .unwrap();
    let big = format!("export const big = '{}';\n", "x".repeat(512 * 1024));
    let (status, text) = put(&proxy, "FLT-99", &big).await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("store_unavailable"), "{text}");
    let h = health(&proxy).await;
    assert_eq!(h["status"], "degraded", "{h}");
    assert!(
        h["store"]["fault"]
            .as_str()
            .is_some_and(|f| f.contains("OOM: Redis is out of memory")),
        "{h}"
    );
    production_flows(&proxy).await;
    redis.cli(&["CONFIG", "SET", "maxmemory", "0"]).unwrap();
    let (status, text) = put(&proxy, "FLT-99", &big).await;
    assert_eq!(status, 201, "{text}");
    upload(status, "FLT-99", big);
    let h = health(&proxy).await;
    assert!(h["store"]["fault"].is_null(), "{h}");

    // Every acknowledged write is there, and served.
    for (key, body) in &acked {
        let want = module_url("/src/main.js", body);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let html = get_text(&proxy.url(&format!("/?dev={key}"))).await;
            if html.contains(&want) {
                break;
            }
            assert!(Instant::now() < deadline, "{key} is not served:\n{html}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(acked.len(), 7);
    production_flows(&proxy).await;
}

/// A raw origin that resets connections where told: mid-header, or
/// mid-body of a page with a strong validator (which the stamped-page
/// cache would keep).
struct CuttingOrigin {
    url: String,
    cut: Arc<AtomicBool>,
}

fn page_body() -> String {
    format!("{PAGE}{}", "<p>filler</p>".repeat(400))
}

fn cutting_origin() -> CuttingOrigin {
    let port = free_port().unwrap();
    let cut = Arc::new(AtomicBool::new(true));
    let c = cut.clone();
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((mut s, _)) = listener.accept().await {
                let cut = c.load(Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&got).to_string();
                    let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                    let body = page_body();
                    let full = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\netag: \"v1\"\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let keep = match (cut, path.split('?').next().unwrap_or("")) {
                        (true, "/cut-head") => 40,
                        (true, "/cut-body") => full.len() - body.len() + 300,
                        _ => full.len(),
                    };
                    let _ = s.write_all(&full.as_bytes()[..keep]).await;
                    let _ = s.flush().await;
                    if keep < full.len() {
                        // Reset rather than close (a zero linger never blocks).
                        #[allow(deprecated)]
                        let _ = s.set_linger(Some(Duration::ZERO));
                    }
                });
            }
        });
    });
    CuttingOrigin {
        url: format!("http://127.0.0.1:{port}"),
        cut,
    }
}

#[tokio::test]
async fn an_origin_that_resets_mid_header_or_mid_body_is_a_clear_error_and_never_cached() {
    let origin = cutting_origin();
    let dir = tempfile::tempdir().unwrap();
    stamp_tests::seed_dir(dir.path(), "TKT-1", &[("/src/main.js", "export {}")])
        .await
        .unwrap();
    let proxy = Proxy::start(&origin.url, &["--store", &dir.path().to_string_lossy()]).unwrap();

    // Mid-header: a 502 that says what failed, not where the origin is.
    let r = client().get(proxy.url("/cut-head")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let text = r.text().await.unwrap();
    assert!(!text.contains(&origin.url), "{text}");
    assert!(text.contains("origin"), "{text}");

    // Mid-body, production and stamped: the response breaks off (the client
    // can tell it is incomplete), and nothing incomplete is kept.
    for path in ["/cut-body", "/cut-body?dev=TKT-1"] {
        let r = client().get(proxy.url(path)).send().await.unwrap();
        let body = r.bytes().await;
        match body {
            Err(_) => {}
            Ok(b) => assert!(
                b.len() < page_body().len(),
                "{path}: a cut page came out whole ({} bytes)",
                b.len()
            ),
        }
    }
    origin.cut.store(false, Ordering::SeqCst);
    let whole = get_text(&proxy.url("/cut-body?dev=TKT-1")).await;
    assert!(
        whole.ends_with("<p>filler</p>"),
        "{}",
        &whole[whole.len().saturating_sub(200)..]
    );
    assert!(
        whole.contains(&module_url("/src/main.js", "export {}")),
        "stamped: {whole:.300}"
    );
    assert_eq!(get_text(&proxy.url("/cut-body")).await, page_body());
    // And the proxy is none the worse.
    assert_eq!(health(&proxy).await["status"], "ok");
}
