//! A real headless Chromium driven by a real `chromedriver` on a free port,
//! through a `fantoccini` WebDriver session: one fresh profile per browser,
//! the session closed and chromedriver killed on drop.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::free_port;

/// The Chromium binary (Debian package `chromium`).
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// The WebDriver server (Debian package `chromium-driver`).
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How every Chromium of the tests runs: headless, as root in a container
/// (no sandbox, no GPU, no `/dev/shm`), and quiet (no QUIC, first-run
/// page, background requests, updates or sync).
const HEADLESS: [&str; 9] = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];
const INSTALL_HINT: &str = "apt-get install -y chromium chromium-driver";
/// How long chromedriver may take to answer `/status` with `ready: true`.
const DRIVER_READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Polling interval for every wait in this module.
const POLL_EVERY: Duration = Duration::from_millis(50);
/// A free port can be taken between the probe and chromedriver binding it.
const PORT_ATTEMPTS: usize = 3;

/// One entry of the browser's console log (`goog:loggingPrefs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleEntry {
    /// `SEVERE`, `WARNING`, `INFO`, `DEBUG`.
    pub level: String,
    pub message: String,
}

/// One `performance.getEntriesByType('resource')` entry, split into parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// The full URL.
    pub url: String,
    /// The URL path, e.g. `/src/lib/greet.js`.
    pub path: String,
    /// The query including its `?`, or empty.
    pub search: String,
    /// `script`, `link`, `other`, …
    pub initiator: String,
}

/// A running chromedriver with one open session on a headless Chromium.
pub struct Browser {
    client: Option<Client>,
    driver: Option<Child>,
    /// `http://127.0.0.1:PORT` of chromedriver.
    pub driver_url: String,
    driver_port: u16,
    session_id: String,
    /// chromedriver's own log.
    pub driver_log: PathBuf,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser")
            .field("driver_url", &self.driver_url)
            .field("session_id", &self.session_id)
            .finish()
    }
}

impl Browser {
    /// Starts chromedriver, waits until it is ready and opens a session on a
    /// headless Chromium with a fresh profile. Fails (never skips) when
    /// Chromium or chromedriver is not installed.
    pub async fn start() -> anyhow::Result<Browser> {
        for (binary, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            if !Path::new(binary).exists() {
                bail!(
                    "{binary} not found (Debian package `{package}`); these tests need a real \
                     browser: run `{INSTALL_HINT}`"
                );
            }
        }
        let dir = tempfile::tempdir().context("creating a directory for the browser")?;
        let profile = dir.path().join("profile");
        std::fs::create_dir_all(&profile)?;
        let driver_log = dir.path().join("chromedriver.log");

        let mut last_error = None;
        let mut started = None;
        for _ in 0..PORT_ATTEMPTS {
            match spawn_driver(&driver_log).await {
                Ok(s) => {
                    started = Some(s);
                    break;
                }
                Err(e) => last_error = Some(e),
            }
        }
        let Some((driver, driver_port)) = started else {
            return Err(
                last_error.unwrap_or_else(|| anyhow::anyhow!("could not start chromedriver"))
            );
        };
        let driver_url = format!("http://127.0.0.1:{driver_port}");
        let mut browser = Browser {
            client: None,
            driver: Some(driver),
            driver_url,
            driver_port,
            session_id: String::new(),
            driver_log,
            _dir: dir,
        };

        let profile = profile.to_str().context("profile path is not UTF-8")?;
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": HEADLESS
                    .iter()
                    .map(|a| a.to_string())
                    .chain([
                        format!("--user-data-dir={profile}"),
                        "--window-size=1024,768".to_string(),
                    ])
                    .collect::<Vec<_>>(),
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let Value::Object(caps) = caps else {
            bail!("capabilities are not a JSON object");
        };
        // rustls panics when the build enables more than one crypto provider
        // (ring and aws-lc-rs) and none is installed process-wide: turn that
        // into an error that says so.
        // Both ring and aws-lc-rs are linked into the tests: pick one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = std::panic::catch_unwind(ClientBuilder::rustls)
            .map_err(|panic| {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                anyhow::anyhow!(
                    "fantoccini's rustls client could not be built: {}; the build enables both \
                     of rustls' ring and aws-lc-rs providers, so one must be installed \
                     process-wide first, e.g. \
                     `rustls::crypto::ring::default_provider().install_default()` (needs a \
                     direct `rustls` dependency)",
                    why.trim().lines().next().unwrap_or_default()
                )
            })?
            .context("building the WebDriver HTTP client")?;
        let client = builder
            .capabilities(caps)
            .connect(&browser.driver_url)
            .await
            .with_context(|| {
                format!(
                    "opening a Chromium session through chromedriver (is `{INSTALL_HINT}` done?); \
                     chromedriver log:\n{}",
                    browser.driver_log_text()
                )
            })?;
        browser.session_id = client
            .session_id()
            .await?
            .context("chromedriver returned no session id")?;
        browser.client = Some(client);
        Ok(browser)
    }

    /// The WebDriver client, for anything the helpers do not cover.
    pub fn client(&self) -> anyhow::Result<&Client> {
        self.client
            .as_ref()
            .context("the browser session is closed")
    }

    /// Navigates and waits for the page load.
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.client()?
            .goto(url)
            .await
            .with_context(|| format!("navigating to {url}"))
    }

    /// Reloads the current page.
    pub async fn refresh(&self) -> anyhow::Result<()> {
        Ok(self.client()?.refresh().await?)
    }

    /// The current URL.
    pub async fn current_url(&self) -> anyhow::Result<String> {
        Ok(self.client()?.current_url().await?.to_string())
    }

    /// The text of the first element matching a CSS selector. A page that
    /// re-renders itself (the panel on a live update) can replace the
    /// element between finding it and reading it: then it is found again.
    pub async fn text(&self, selector: &str) -> anyhow::Result<String> {
        let mut attempts = 0;
        loop {
            let element = self.client()?.find(Locator::Css(selector)).await?;
            match element.text().await {
                Ok(text) => return Ok(text),
                Err(e) if attempts < 5 && e.to_string().contains("stale element") => {
                    attempts += 1;
                    tokio::time::sleep(POLL_EVERY).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Clicks the first element matching a CSS selector.
    pub async fn click(&self, selector: &str) -> anyhow::Result<()> {
        let mut attempts = 0;
        loop {
            let element = self
                .client()?
                .find(Locator::Css(selector))
                .await
                .with_context(|| format!("finding {selector} to click it"))?;
            match element.click().await {
                Ok(()) => return Ok(()),
                // Re-rendered between finding and clicking: find it again.
                Err(e) if attempts < 5 && e.to_string().contains("stale element") => {
                    attempts += 1;
                    tokio::time::sleep(POLL_EVERY).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Moves the mouse onto the first element matching a CSS selector, as a
    /// person does before clicking it (what hover prefetchers listen for).
    pub async fn hover(&self, selector: &str) -> anyhow::Result<()> {
        use fantoccini::actions::{InputSource, MouseActions, PointerAction};
        let client = self.client()?;
        let element = client
            .find(Locator::Css(selector))
            .await
            .with_context(|| format!("finding {selector} to hover over it"))?;
        let moves = MouseActions::new("mouse".to_string()).then(PointerAction::MoveToElement {
            element,
            duration: None,
            x: 0.0,
            y: 0.0,
        });
        Ok(client.perform_actions(moves).await?)
    }

    /// Polls (every 50 ms) until the element's text contains `contains`;
    /// returns the text. On timeout the error carries what was seen last.
    pub async fn wait_for_text(
        &self,
        selector: &str,
        contains: &str,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let start = Instant::now();
        let mut last;
        loop {
            match self.text(selector).await {
                Ok(text) if text.contains(contains) => return Ok(text),
                Ok(text) => last = format!("{text:?}"),
                Err(e) => last = format!("(error: {e})"),
            }
            if start.elapsed() >= timeout {
                let url = self.current_url().await.unwrap_or_default();
                let console: String = self
                    .console()
                    .await
                    .unwrap_or_default()
                    .iter()
                    .map(|e| format!("\n  {} {}", e.level, e.message))
                    .collect();
                bail!(
                    "{selector} did not contain {contains:?} within {timeout:?} at {url}; last seen: \
                     {last}; browser console:{console}"
                );
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// Runs `script` with `args` (its `arguments`) and returns its value.
    pub async fn execute_with(&self, script: &str, args: Vec<Value>) -> anyhow::Result<Value> {
        Ok(self.client()?.execute(script, args).await?)
    }

    /// Runs a script (a function body: use `return`) and returns its result.
    pub async fn execute(&self, script: &str) -> anyhow::Result<Value> {
        Ok(self.client()?.execute(script, vec![]).await?)
    }

    /// The current document's resource timing entries.
    pub async fn resources(&self) -> anyhow::Result<Vec<Resource>> {
        let value = self
            .execute(
                "return performance.getEntriesByType('resource').map(e => { \
                   const u = new URL(e.name); \
                   return [e.name, u.pathname, u.search, e.initiatorType]; });",
            )
            .await?;
        let rows = value
            .as_array()
            .context("resource entries are not an array")?;
        rows.iter()
            .map(|row| {
                let part = |i: usize| {
                    row.get(i)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string()
                };
                Ok(Resource {
                    url: part(0),
                    path: part(1),
                    search: part(2),
                    initiator: part(3),
                })
            })
            .collect()
    }

    /// Forgets every cookie of the current page's site (a new visitor).
    pub async fn clear_cookies(&self) -> anyhow::Result<()> {
        self.client()?.delete_all_cookies().await?;
        Ok(())
    }

    /// Clicks the badge's exit, as a visitor leaving the ticket does.
    pub async fn leave_by_the_badge(&self) -> anyhow::Result<()> {
        self.execute(
            "document.querySelector('ticket-stamp-badge').shadowRoot.querySelector('button.exit').click(); return true;",
        )
        .await?;
        Ok(())
    }

    /// The value of a cookie the browser holds for the current page's site
    /// (HttpOnly cookies included), or `None`.
    pub async fn cookie(&self, name: &str) -> anyhow::Result<Option<String>> {
        let cookies = self.client()?.get_all_cookies().await?;
        Ok(cookies
            .iter()
            .find(|c| c.name() == name)
            .map(|c| c.value().to_string()))
    }

    /// Saves a PNG screenshot of the viewport, creating parent directories.
    pub async fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        let png = self.client()?.screenshot().await?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// The browser console entries since the last call (chromedriver's
    /// `/se/log` endpoint; the log is drained by reading it).
    pub async fn console(&self) -> anyhow::Result<Vec<ConsoleEntry>> {
        let url = format!("{}/session/{}/se/log", self.driver_url, self.session_id);
        let response = crate::client()
            .post(&url)
            .header("content-type", "application/json")
            .body(json!({ "type": "browser" }).to_string())
            .send()
            .await
            .context("reading the browser log")?;
        let status = response.status();
        let body: Value = serde_json::from_slice(&response.bytes().await?)?;
        if !status.is_success() {
            bail!("chromedriver refused the log request ({status}): {body}");
        }
        let entries = body
            .get("value")
            .and_then(Value::as_array)
            .context("log response has no `value` array")?;
        Ok(entries
            .iter()
            .map(|e| ConsoleEntry {
                level: e
                    .get("level")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                message: e
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            })
            .collect())
    }

    /// What the console said about Content-Security-Policy so far (a
    /// refused script, style or connection).
    pub async fn csp_violations(&self) -> anyhow::Result<Vec<ConsoleEntry>> {
        Ok(self
            .console()
            .await?
            .into_iter()
            .filter(|e| e.message.contains("Content Security Policy"))
            .collect())
    }

    /// chromedriver's log so far.
    pub fn driver_log_text(&self) -> String {
        std::fs::read_to_string(&self.driver_log).unwrap_or_default()
    }

    /// Closes the session (Chromium quits) and stops chromedriver.
    ///
    /// A session that will not close is teardown, not a finding: a loaded
    /// machine can make chromedriver's `DELETE /session` fail while Chromium
    /// takes its time to quit, after every assertion of the test has passed.
    /// The driver's process group is killed either way, so nothing is left
    /// behind; the failure and the end of chromedriver's log are printed for
    /// whoever reads the test's output.
    pub async fn close(mut self) -> anyhow::Result<()> {
        if let Some(client) = self.client.take() {
            if let Err(e) = client.close().await {
                let log = self.driver_log_text();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                eprintln!(
                    "warning: closing the WebDriver session failed ({e}); \
                     chromedriver's process group is killed instead. Its log ends:"
                );
                for line in tail.iter().rev() {
                    eprintln!("  {line}");
                }
            }
        }
        self.session_id.clear();
        self.stop_driver();
        Ok(())
    }

    fn stop_driver(&mut self) {
        let Some(mut child) = self.driver.take() else {
            return;
        };
        // chromedriver runs in its own process group (see `spawn_driver`), so
        // any Chromium process it left behind goes with it. The group is
        // signalled before the child is reaped, so its id cannot have been
        // reused by then.
        let pgid = format!("-{}", child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &pgid])
            .stderr(Stdio::null())
            .status();
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A test that failed before `close()`: end the session with a plain
        // blocking DELETE (no async runtime is guaranteed here), so Chromium
        // quits cleanly, then stop chromedriver.
        if self.client.take().is_some() && !self.session_id.is_empty() {
            let _ = delete_session(self.driver_port, &self.session_id);
        }
        self.stop_driver();
    }
}

/// Spawns chromedriver on a free port and waits until `/status` says ready.
/// One visit by a visitor who gives up on a page that hangs: a fresh
/// headless Chromium process (its own profile: a new visitor, without
/// cookies) loads `url`, lets the page's timers run for `virtual_ms` of
/// virtual time and prints the page's DOM. `Ok(None)` when it has not
/// finished within `give_up`: the page hung, and the visitor closed it.
/// The process group goes then, renderer included, as a hung tab's
/// renderer is killed when it is closed: nothing the page meant to send
/// on its way out (`pagehide`) is sent.
pub fn visit_and_give_up(
    url: &str,
    virtual_ms: u64,
    give_up: Duration,
) -> anyhow::Result<Option<String>> {
    use std::os::unix::process::CommandExt;
    if !Path::new(CHROMIUM).exists() {
        bail!("{CHROMIUM} not found; these tests need a real browser: run `{INSTALL_HINT}`");
    }
    let dir = tempfile::tempdir().context("creating a profile directory")?;
    let out = dir.path().join("dom.html");
    let mut child = Command::new(CHROMIUM)
        .args(HEADLESS)
        .arg(format!(
            "--user-data-dir={}",
            dir.path().join("profile").display()
        ))
        .arg(format!("--virtual-time-budget={virtual_ms}"))
        .arg("--dump-dom")
        .arg(url)
        .stdout(std::fs::File::create(&out)?)
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {CHROMIUM}"))?;
    let deadline = Instant::now() + give_up;
    loop {
        if let Some(status) = child.try_wait()? {
            let dom = std::fs::read_to_string(&out)?;
            if !status.success() && dom.is_empty() {
                bail!("{CHROMIUM} exited with {status} and printed nothing");
            }
            return Ok(Some(dom));
        }
        if Instant::now() >= deadline {
            // Signalled before the child is reaped: its group id is still
            // its own.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .stderr(Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(POLL_EVERY);
    }
}

async fn spawn_driver(log: &Path) -> anyhow::Result<(Child, u16)> {
    use std::os::unix::process::CommandExt;

    let port = free_port()?;
    let mut child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .arg(format!("--log-path={}", log.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .with_context(|| format!("running {CHROMEDRIVER} (install it: `{INSTALL_HINT}`)"))?;
    let status_url = format!("http://127.0.0.1:{port}/status");
    let http = crate::client();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            bail!("chromedriver on port {port} exited early ({status}); log:\n{log}");
        }
        if let Ok(response) = http
            .get(&status_url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
        {
            if let Ok(body) = response.bytes().await {
                let ready = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| v.pointer("/value/ready").and_then(Value::as_bool));
                if ready == Some(true) {
                    return Ok((child, port));
                }
            }
        }
        if start.elapsed() >= DRIVER_READY_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(log).unwrap_or_default();
            bail!("chromedriver on port {port} not ready within {DRIVER_READY_TIMEOUT:?}; log:\n{log}");
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// `DELETE /session/{id}` over a raw blocking socket.
fn delete_session(port: u16, session_id: &str) -> std::io::Result<()> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "DELETE /session/{session_id} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )?;
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    Ok(())
}
