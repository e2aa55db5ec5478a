//! Test harness: real `stamp-proxy` processes, a real origin, a real Redis and
//! a real headless Chromium, each on a free loopback port and stopped on drop.

pub mod browser;
pub mod control;
pub mod fakes;
pub mod faulty;
pub mod oidc;
pub mod origin;
pub mod prometheus;
pub mod proxy;
pub mod redis_server;

pub use control::{Api, InProcess};
pub use origin::{Encoding, Origin, Route};
pub use proxy::{status_kib, stop_child, Proxy};
pub use redis_server::RedisServer;

/// Runs a command to success and returns its standard output; otherwise
/// the test fails with the command and both of its outputs.
pub fn run_ok(cmd: &mut std::process::Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// xorshift64*: a small, fixed, dependency-free stream, so a generated
/// case replays from its seed.
pub struct Xorshift(pub u64);

impl Xorshift {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
    pub fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }
}

/// A port that was free a moment ago (bind to port 0, read it, release it).
pub fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A port that refuses every connection for as long as the returned socket
/// lives: bound (so no other server can take it) but never listening.
/// A port released after a bind may be taken by the next server a parallel
/// test starts, which would then answer where a refusal was expected.
pub fn refused_port() -> std::io::Result<(tokio::net::TcpSocket, u16)> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind("127.0.0.1:0".parse().expect("a socket address"))?;
    let port = socket.local_addr()?.port();
    Ok((socket, port))
}

/// An HTTP client that never decompresses, follows no redirects and keeps no
/// cookies unless told, so tests see exactly what the proxy sent.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap_or_default()
}

/// The body of a GET through [`client`]; panics (failing the test) with the
/// URL when the request or the body fails.
pub async fn get_text(url: &str) -> String {
    text_of(url, client().get(url)).await
}

/// The body of `req`, a GET of `url`; panics (failing the test) with the
/// URL when the request or the body fails.
async fn text_of(url: &str, req: reqwest::RequestBuilder) -> String {
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    resp.text()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: reading the body: {e}"))
}

/// The body of a page as a browser that holds `cookie` opens it (a
/// navigation); panics (failing the test) with the URL on failure.
pub async fn page_text(url: &str, cookie: &str) -> String {
    let req = client()
        .get(url)
        .header("sec-fetch-mode", "navigate")
        .header("sec-fetch-dest", "document")
        .header("accept", "text/html")
        .header("cookie", cookie);
    text_of(url, req).await
}

use stamp_control::{Actor, Desk};
use stamp_model::lifecycle::Transition;
use stamp_model::ticket::TicketKey;
/// The JSON answer to a request; panics (failing the test) when the request
/// fails or the body is not JSON.
pub async fn json_of(req: reqwest::RequestBuilder) -> serde_json::Value {
    let resp = req.send().await.unwrap_or_else(|e| panic!("request: {e}"));
    let url = resp.url().to_string();
    resp.json()
        .await
        .unwrap_or_else(|e| panic!("{url}: not JSON: {e}"))
}

use stamp_store::SharedStore;

/// Opens a store (a directory or a redis:// URL) the way the proxy does.
pub async fn open_store(location: &str) -> anyhow::Result<SharedStore> {
    Ok(stamp_store::open(location, "ticket-stamp").await?)
}

/// Uploads `(path, body)` modules to a ticket's dev stage (specifier = path).
pub async fn upload(
    store: &SharedStore,
    key: &str,
    modules: &[(&str, &str)],
) -> anyhow::Result<()> {
    let key = TicketKey::parse(key)?;
    for (path, body) in modules {
        Desk::detached(store.clone())
            .upload(
                &key,
                path,
                path,
                bytes::Bytes::from(body.to_string()),
                &Actor::named("test"),
            )
            .await?;
    }
    Ok(())
}

/// Uploads a module under a bare specifier.
pub async fn upload_bare(
    store: &SharedStore,
    key: &str,
    specifier: &str,
    path: &str,
    body: &str,
) -> anyhow::Result<()> {
    let key = TicketKey::parse(key)?;
    Desk::detached(store.clone())
        .upload(
            &key,
            specifier,
            path,
            bytes::Bytes::from(body.to_string()),
            &Actor::named("test"),
        )
        .await?;
    Ok(())
}

/// Applies a transition to a ticket.
pub async fn transition(store: &SharedStore, key: &str, what: Transition) -> anyhow::Result<()> {
    let key = TicketKey::parse(key)?;
    Desk::detached(store.clone())
        .transition(&key, what, None, &Actor::named("test"))
        .await?;
    Ok(())
}

/// Releases a ticket in qa to `percent` of production's visitors (a
/// rollout with its last step, 100, taken by hand).
pub async fn release_by_steps(store: &SharedStore, key: &str, percent: u8) -> anyhow::Result<()> {
    let key = TicketKey::parse(key)?;
    let rollout = stamp_model::rollout::Rollout {
        percent,
        steps: vec![100],
        every_ms: 0,
        step_at_ms: stamp_model::now_ms(),
        paused: false,
    };
    Desk::detached(store.clone())
        .transition_with(
            &key,
            Transition::Promote,
            None,
            &Actor::named("test"),
            Some(rollout),
            None,
        )
        .await?;
    Ok(())
}

/// Seeds an embedded store directory (before the proxy that will own it starts).
pub async fn seed_dir(
    dir: &std::path::Path,
    key: &str,
    modules: &[(&str, &str)],
) -> anyhow::Result<()> {
    let store = open_store(&dir.to_string_lossy()).await?;
    upload(&store, key, modules).await
}

/// The URL the proxy serves a body at for a production path.
/// A production page served for a link that selects nothing any more, with
/// the notice taken out again, and the notice's text: the rest must be
/// production's bytes exactly.
pub fn split_notice(html: &str) -> (String, Option<String>) {
    let Some(start) = html.find("<ticket-stamp-badge>") else {
        return (html.to_string(), None);
    };
    let end_tag = "</ticket-stamp-badge>";
    let Some(end) = html[start..]
        .find(end_tag)
        .map(|i| start + i + end_tag.len())
    else {
        return (html.to_string(), None);
    };
    let mut rest = &html[end..];
    if rest.starts_with("<!-- ticket-stamp:") {
        if let Some(close) = rest.find("-->") {
            rest = &rest[close + 3..];
        }
    }
    let notice = &html[start..end];
    let text = notice
        .find("<aside class=\"stale\"")
        .map(|i| notice[i..].to_string());
    (format!("{}{rest}", &html[..start]), text)
}

pub fn module_url(path: &str, body: &str) -> String {
    stamp_model::ticket::module_url(path, &stamp_model::ticket::Hash::of(body.as_bytes()))
}

/// A gzip body as text (a test's page, compressed by the proxy).
pub fn gunzip(body: &[u8]) -> String {
    let mut plain = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(body), &mut plain)
        .expect("a complete gzip stream of UTF-8");
    plain
}

/// A stamped page without the probe the proxy adds to ticket pages (its
/// data block, its script, and the outcome block at the end): the rest is
/// what the rewriter did to the page.
pub fn without_probe(html: &str) -> String {
    let mut out = html.to_string();
    for id in ["ticket-stamp-data", "ticket-stamp-outcome"] {
        let open = format!("<script type=\"application/json\" id=\"{id}\">");
        if let Some(start) = out.find(&open) {
            if let Some(end) = out[start..].find("</script>") {
                let mut end = start + end + "</script>".len();
                if id == "ticket-stamp-data" {
                    // The probe's own script follows its data.
                    if let Some(rest) = out[end..].strip_prefix("<script") {
                        if let Some(close) = rest.find("</script>") {
                            end += "<script".len() + close + "</script>".len();
                        }
                    }
                }
                out.replace_range(start..end, "");
            }
        }
    }
    out
}

/// The probe's data block of a ticket page, parsed.
pub fn probe_data(html: &str) -> anyhow::Result<serde_json::Value> {
    let open = "<script type=\"application/json\" id=\"ticket-stamp-data\">";
    let start = html
        .find(open)
        .ok_or_else(|| anyhow::anyhow!("no probe in:\n{html}"))?
        + open.len();
    let end = start
        + html[start..]
            .find("</script>")
            .ok_or_else(|| anyhow::anyhow!("unterminated probe data"))?;
    Ok(serde_json::from_str(&html[start..end])?)
}

/// The JSON of the first `<script type="importmap…">` in a page.
pub fn import_map(html: &str) -> anyhow::Result<serde_json::Value> {
    let start = html
        .find("type=\"importmap")
        .or_else(|| html.find("type=importmap"))
        .ok_or_else(|| anyhow::anyhow!("no import map in:\n{html}"))?;
    let open_end = html[start..]
        .find('>')
        .map(|i| start + i + 1)
        .ok_or_else(|| anyhow::anyhow!("unterminated tag"))?;
    let close = html[open_end..]
        .find("</script>")
        .map(|i| open_end + i)
        .ok_or_else(|| anyhow::anyhow!("no </script>"))?;
    Ok(serde_json::from_str(&html[open_end..close])?)
}

/// The last page views the proxy has of `key` (its API's `views`), once at
/// least `n` arrived; fails after 20 s.
pub async fn ticket_views(proxy: &Proxy, key: &str, n: usize) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let t = json_of(client().get(proxy.url(&format!("/__stamp/api/v1/tickets/{key}")))).await;
        let views = t["views"].as_array().cloned().unwrap_or_default();
        if views.len() >= n {
            return views;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {n} views of {key} arrived: {t}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Polls the proxy's health until its snapshot reaches `version` (changes
/// made through a shared Redis arrive asynchronously).
pub async fn wait_snapshot(proxy: &Proxy, at_least: u64) -> anyhow::Result<()> {
    let c = client();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let v: serde_json::Value = c
            .get(proxy.url("/__stamp/health"))
            .send()
            .await?
            .json()
            .await?;
        if v["snapshot"]["version"].as_u64().unwrap_or(0) >= at_least {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!("snapshot stuck at {v}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A ticket JavaScript body as the proxy serves it, without the probe's
/// marker it ends with (`stamp_data::probe::marker`); the test fails when
/// the marker is missing.
pub fn without_marker(served: &str) -> &str {
    const START: &str = "\n;try{(self.__ticketStampRan||";
    let at = served
        .rfind(START)
        .unwrap_or_else(|| panic!("no probe marker at the end of {served:?}"));
    assert!(served[at..].ends_with("}catch(_){}\n"), "{served:?}");
    &served[..at]
}
