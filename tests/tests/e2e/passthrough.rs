//! Everything without a selection (and with an empty production overlay) is
//! what the origin sent: status, headers and bytes, streaming — HTML, binary,
//! chunked, compressed, uploads and WebSockets; origin failures are short,
//! clear 502/504s.

use futures::{SinkExt, StreamExt};
use stamp_tests::{client, free_port, Encoding, Origin, Proxy, Route};

/// Headers the origin set that must arrive unchanged.
fn assert_same_headers(origin_headers: &[(String, String)], got: &reqwest::header::HeaderMap) {
    for (k, v) in origin_headers {
        assert_eq!(
            got.get(k.as_str()).map(|h| h.to_str().unwrap()),
            Some(v.as_str()),
            "header {k}"
        );
    }
}

#[tokio::test]
async fn production_is_byte_identical() {
    let origin = Origin::start().unwrap();
    let proxy = Proxy::start(&origin.url, &[]).unwrap();
    let page = "<!doctype html><html><head><script type=\"importmap\">{\"imports\":{\"a\":\"/a.js\"}}</script><script type=module src=/a.js></script></head><body>\u{2028}&amp;</body></html>";
    let binary: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let cases = vec![
        (
            "/page",
            Route::html(page)
                .header("etag", "\"abc\"")
                .header("last-modified", "Wed, 21 Oct 2026 07:28:00 GMT")
                .header("cache-control", "public, max-age=60")
                .header("content-security-policy", "script-src 'self'"),
        ),
        (
            "/bin",
            Route::bytes("application/octet-stream", binary.clone()),
        ),
        ("/chunked", Route::html(&page.repeat(500)).chunked(777)),
        (
            "/gz",
            Route::html(page)
                .encoded(Encoding::Gzip)
                .header("vary", "accept-encoding"),
        ),
        ("/missing", Route::html("<p>gone</p>").status(404)),
    ];
    for (path, route) in cases {
        origin.route(path, route.clone());
        let resp = client()
            .get(proxy.url(path))
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), route.status, "{path}");
        assert_same_headers(&route.headers, resp.headers());
        assert!(
            resp.headers().get("x-ticket-stamp").is_none(),
            "{path}: nothing added"
        );
        assert!(resp.headers().get("set-cookie").is_none(), "{path}");
        if route.encoding == Encoding::Gzip {
            assert_eq!(resp.headers()["content-encoding"], "gzip", "{path}");
        }
        let body = resp.bytes().await.unwrap();
        assert_eq!(
            body.as_ref(),
            route.encoding.encode(&route.body).as_slice(),
            "{path}: bytes"
        );
        // The origin got the client's request, Accept-Encoding included.
        assert_eq!(
            origin.last_headers(path).unwrap()["accept-encoding"],
            "gzip"
        );
    }
}

#[tokio::test]
async fn host_is_forwarded_by_default_and_overridable() {
    let origin = Origin::start().unwrap();
    origin.route("/h", Route::html("ok"));
    let proxy = Proxy::start(&origin.url, &[]).unwrap();
    client().get(proxy.url("/h")).send().await.unwrap();
    assert_eq!(
        origin.last_headers("/h").unwrap()["host"],
        format!("127.0.0.1:{}", proxy.port)
    );

    let proxy = Proxy::start(&origin.url, &["--origin-host", "app.internal"]).unwrap();
    client().get(proxy.url("/h")).send().await.unwrap();
    assert_eq!(origin.last_headers("/h").unwrap()["host"], "app.internal");
}

#[tokio::test]
async fn websockets_are_proxied() {
    let origin = Origin::start().unwrap();
    let proxy = Proxy::start(&origin.url, &[]).unwrap();
    let url = format!("ws://127.0.0.1:{}/__origin/ws", proxy.port);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    // A failure says what the proxy logged: two CI runs saw a reset here
    // that no local run reproduced.
    let failed =
        |e: &dyn std::fmt::Debug| -> ! { panic!("{e:?}\nproxy log:\n{}", proxy.log_text()) };
    ws.send(tokio_tungstenite::tungstenite::Message::text("hi"))
        .await
        .unwrap_or_else(|e| failed(&e));
    let reply = ws.next().await.unwrap().unwrap_or_else(|e| failed(&e));
    assert_eq!(reply.into_text().unwrap().as_str(), "echo: hi");
    let bin = vec![7u8; 100_000];
    ws.send(tokio_tungstenite::tungstenite::Message::binary(bin.clone()))
        .await
        .unwrap_or_else(|e| failed(&e));
    let reply = ws.next().await.unwrap().unwrap_or_else(|e| failed(&e));
    assert_eq!(reply.into_data().as_ref(), bin.as_slice());

    // With a ticket selected too. One CI run saw this connection reset right
    // after a good handshake (not reproduced in 30 local runs, under load or
    // not); it is retried once, loudly, so a real regression still fails.
    let url = format!("ws://127.0.0.1:{}/__origin/ws?dev=TKT-1", proxy.port);
    let mut attempt = 0;
    let text = loop {
        attempt += 1;
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        ws.send(tokio_tungstenite::tungstenite::Message::text("again"))
            .await
            .unwrap();
        match ws.next().await {
            Some(Ok(m)) => break m.into_text().unwrap().to_string(),
            other if attempt < 2 => {
                eprintln!(
                    "websocket attempt {attempt} failed: {other:?}\nproxy log:\n{}",
                    proxy.log_text()
                );
            }
            other => panic!("{other:?}\nproxy log:\n{}", proxy.log_text()),
        }
    };
    assert_eq!(text, "echo: again");
}

#[tokio::test]
async fn large_uploads_stream_through() {
    let origin = Origin::start().unwrap();
    let proxy = Proxy::start(&origin.url, &[]).unwrap();
    let body: Vec<u8> = (0..30 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let expected = format!(
        "{} {}",
        body.len(),
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body))
    );
    let stream = futures::stream::iter(
        body.chunks(256 * 1024)
            .map(|c| Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    let resp = client()
        .post(proxy.url("/__origin/upload"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), expected);
}

#[tokio::test]
async fn origin_down_is_502_and_slow_is_504() {
    let dead = format!("http://127.0.0.1:{}", free_port().unwrap());
    let proxy = Proxy::start(&dead, &["--connect-timeout", "500ms"]).unwrap();
    let resp = client().get(proxy.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    let text = resp.text().await.unwrap();
    // The client learns what failed, not the origin's address; the log has it.
    assert!(
        text.contains("the origin could not be reached") && !text.contains(&dead),
        "{text}"
    );
    assert!(proxy.log_text().contains(&dead), "{}", proxy.log_text());
    // The proxy's own endpoints still answer.
    assert_eq!(
        client()
            .get(proxy.url("/__stamp/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let origin = Origin::start().unwrap();
    let proxy = Proxy::start(&origin.url, &["--read-timeout", "300ms"]).unwrap();
    let resp = client()
        .get(proxy.url("/__origin/slow?ms=3000"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 504);
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("did not answer in time"));
    let resp = client()
        .get(proxy.url("/__origin/slow?ms=10"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "fast enough is fine");
}

#[tokio::test]
async fn stamped_pages_stream_as_they_arrive() {
    let origin = Origin::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    stamp_tests::seed_dir(dir.path(), "TKT-1", &[("/src/main.js", "export {}")])
        .await
        .unwrap();
    let proxy = Proxy::start(&origin.url, &["--store", &dir.path().to_string_lossy()]).unwrap();
    // The origin sends the head at once and the rest two seconds later.
    let mut resp = client()
        .get(proxy.url("/__origin/trickle?dev=TKT-1"))
        .send()
        .await
        .unwrap();
    let start = std::time::Instant::now();
    let mut first = String::new();
    while !first.contains("first") {
        let chunk = resp.chunk().await.unwrap().expect("body ended early");
        first.push_str(&String::from_utf8_lossy(&chunk));
    }
    let first_at = start.elapsed();
    assert!(
        first.contains("importmap"),
        "stamped head arrives first: {first}"
    );
    assert!(!first.contains("second"));
    let mut rest = String::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        rest.push_str(&String::from_utf8_lossy(&chunk));
    }
    let end_at = start.elapsed();
    assert!(rest.contains("second"));
    // The origin holds the tail back for 2 s: the head must not have waited for it.
    assert!(
        end_at > first_at + std::time::Duration::from_millis(1000),
        "{first_at:?} vs {end_at:?}"
    );
}

/// The origin learns the client's address: `X-Forwarded-For` and
/// `X-Forwarded-Proto` are set, a client's own claim is dropped, and a
/// trusted proxy's chain is extended. `forwarded.enabled = false` leaves
/// the headers alone.
#[tokio::test]
async fn the_origin_learns_the_client_address_and_no_client_can_forge_it() {
    let origin = Origin::start().unwrap();
    origin.route("/", Route::html("<p>hi</p>"));
    let run = |extra: &str| {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("proxy.toml");
        std::fs::write(
            &conf,
            format!(
                "origin = \"{}\"\nstore = \"{}\"\n{extra}\n",
                origin.url,
                dir.path().join("store").display()
            ),
        )
        .unwrap();
        let p = Proxy::start_with(None, &["--config", &conf.to_string_lossy()], &[]).unwrap();
        (p, dir)
    };
    let seen = |p: &Proxy, xff: Option<&'static str>| {
        let url = p.url("/");
        let origin = &origin;
        async move {
            let mut r = client().get(url);
            if let Some(x) = xff {
                r = r
                    .header("x-forwarded-for", x)
                    .header("x-forwarded-proto", "https");
            }
            assert_eq!(r.send().await.unwrap().status(), 200);
            let h = origin.last_headers("/").unwrap();
            let get = |n: &str| h.get(n).map(|v| v.to_str().unwrap().to_string());
            (get("x-forwarded-for"), get("x-forwarded-proto"))
        }
    };
    let (plain, _d1) = run("");
    assert_eq!(
        seen(&plain, None).await,
        (Some("127.0.0.1".into()), Some("http".into()))
    );
    assert_eq!(
        seen(&plain, Some("6.6.6.6")).await,
        (Some("127.0.0.1".into()), Some("http".into())),
        "an untrusted client's claim is dropped"
    );
    let (behind, _d2) = run("[forwarded]\ntrusted = [\"127.0.0.0/8\"]");
    assert_eq!(
        seen(&behind, Some("203.0.113.5, 198.51.100.2")).await,
        (
            Some("203.0.113.5, 198.51.100.2, 127.0.0.1".into()),
            Some("https".into())
        ),
        "a trusted proxy's chain is extended"
    );
    let (off, _d3) = run("[forwarded]\nenabled = false");
    assert_eq!(seen(&off, None).await, (None, None));
    let out = std::process::Command::new(stamp_tests::proxy::binary("stamp-proxy").unwrap())
        .args(["--origin", &origin.url, "--check", "--config"])
        .arg({
            let d = tempfile::tempdir().unwrap().keep();
            let f = d.join("bad.toml");
            std::fs::write(&f, "[forwarded]\ntrusted = [\"10.0.0.0/40\"]\n").unwrap();
            f
        })
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("forwarded.trusted") && err.contains("10.0.0.0/40"),
        "{err}"
    );
}
