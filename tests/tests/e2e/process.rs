//! Operating the process as a Pingora proxy is operated: a new binary takes
//! the listening sockets over under load without failing a request, the
//! daemon's pid file follows the handover (systemd's `ExecReload` lines as
//! the packaged unit writes them), SIGHUP reloads what can change while
//! serving and names what cannot, and log lines can be JSON with request
//! ids.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stamp_tests::proxy::{binary, stop_child};
use stamp_tests::{client, free_port, Origin, Route};

/// A stamp-proxy started by hand (these tests start two on one port).
struct Started {
    child: Option<Child>,
    log: PathBuf,
}

impl Started {
    fn spawn(args: &[&str], log: &Path) -> Started {
        let child = Command::new(binary("stamp-proxy").unwrap())
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        Started {
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        signal(sig, self.pid());
    }

    /// Waits for the process to exit; its status.
    fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let child = self.child.as_mut().unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                start.elapsed() < limit,
                "still running after {limit:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for a line of the log to contain `what`.
    fn wait_log(&self, what: &str, limit: Duration) -> String {
        let start = Instant::now();
        loop {
            let text = self.log_text();
            if text.contains(what) {
                return text;
            }
            assert!(
                start.elapsed() < limit,
                "no `{what}` in the log after {limit:?}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_child(child, Duration::from_secs(3));
        }
    }
}

fn signal(sig: &str, pid: u32) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

async fn wait_health(url: &str, limit: Duration) {
    let start = Instant::now();
    loop {
        if let Ok(r) = client().get(format!("{url}/__stamp/health")).send().await {
            if r.status() == 200 {
                return;
            }
        }
        assert!(start.elapsed() < limit, "{url} not healthy after {limit:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Requests from `clients` keep-alive clients until stopped: how many
/// succeeded, and every failure (as a browser would: an idempotent GET on a
/// reused connection the server closed meanwhile is sent again once, on a
/// new connection, RFC 9112 §9.3.1; a refused or failed request, or a
/// retry that fails, is a failure).
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(base: &str, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let tasks = (0..clients)
            .map(|i| {
                let (stop, ok) = (stop.clone(), ok.clone());
                let path = if i % 2 == 0 { "/" } else { "/?dev=UPG-1" };
                let url = format!("{base}{path}");
                tokio::spawn(async move {
                    let http = client();
                    let mut failures = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let mut outcome = http.get(&url).send().await;
                        if let Err(e) = &outcome {
                            if e.is_request() && !e.is_connect() {
                                // As a browser does: once, on a new connection.
                                outcome = client().get(&url).send().await;
                            }
                        }
                        match outcome {
                            Ok(r) if r.status() == 200 => match r.text().await {
                                Ok(t) if t.contains("upgrade me") => {
                                    ok.fetch_add(1, Ordering::Relaxed);
                                }
                                Ok(t) => failures.push(format!("unexpected body: {t:.80}")),
                                Err(e) => failures.push(format!("body: {e:?}")),
                            },
                            Ok(r) => failures.push(format!("status {}", r.status())),
                            Err(e) => failures.push(format!("{e:?}")),
                        }
                    }
                    failures
                })
            })
            .collect();
        Load { stop, ok, tasks }
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut failures = Vec::new();
        for t in self.tasks {
            failures.extend(t.await.unwrap());
        }
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

fn upgrade_origin() -> Origin {
    let origin = Origin::start().unwrap();
    origin.route(
        "/",
        Route::html(
            "<!doctype html><html><head><script type=\"importmap\">{\"imports\":{\"app\":\"/app.js\"}}</script></head><body>upgrade me</body></html>",
        ),
    );
    origin
}

/// SIGQUIT to the running proxy, a new process started with `--upgrade`:
/// 8 keep-alive clients see not one failed request, before, during and
/// after; the old process exits, the new one serves the same store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_under_load_fails_no_request() {
    let origin = upgrade_origin();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let port = free_port().unwrap();
    let listen = format!("127.0.0.1:{port}");
    let socket = dir.path().join("upgrade.sock");
    let base = format!("http://{listen}");
    let common = [
        "--origin",
        &origin.url,
        "--listen",
        &listen,
        "--store",
        store.to_str().unwrap(),
    ];
    let config = dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            "[process]\nupgrade_socket = {:?}\n[shutdown]\ngrace_period = \"0s\"\ntimeout = \"10s\"\n",
            socket.to_str().unwrap()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let mut old = Started::spawn(
        &[&common[..], &["--config", config]].concat(),
        &dir.path().join("old.log"),
    );
    wait_health(&base, Duration::from_secs(20)).await;
    // A ticket through the API, so the stamped page reads the store.
    let put = client()
        .put(format!(
            "{base}/__stamp/api/v1/tickets/UPG-1/modules/src/app.js"
        ))
        .header("content-type", "text/javascript")
        .body("export default 'upgraded';")
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());

    let load = Load::start(&base, 8);
    while load.ok() < 200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut new = Started::spawn(
        &[&common[..], &["--config", config, "--upgrade"]].concat(),
        &dir.path().join("new.log"),
    );
    new.wait_log("taking the listening sockets over", Duration::from_secs(20));
    let before = load.ok();
    old.signal("QUIT");
    let status = tokio::task::spawn_blocking(move || {
        let s = old.wait(Duration::from_secs(40));
        (s, old)
    })
    .await
    .unwrap();
    assert!(status.0.success(), "old process: {}", status.1.log_text());
    let at_exit = load.ok();
    // The new process serves alone now.
    let start = Instant::now();
    while load.ok() < at_exit + 500 {
        assert!(start.elapsed() < Duration::from_secs(20), "no progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (ok, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} of {} requests failed across the upgrade: {:?}\nold:\n{}\nnew:\n{}",
        failures.len(),
        ok + failures.len() as u64,
        &failures[..failures.len().min(5)],
        status.1.log_text(),
        new.log_text()
    );
    assert!(at_exit > before, "requests were served during the handover");
    println!(
        "{ok} requests by 8 clients, none failed; {} during the handover",
        at_exit - before
    );
    let log = new.log_text();
    assert!(log.contains("listening on"), "{log}");
    // The ticket written through the old process is the new one's too.
    let page = client()
        .get(format!("{base}/?dev=UPG-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        page.headers()
            .get("x-ticket-stamp")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or_default().to_string()),
        Some("stamping".to_string()),
        "{log}"
    );
    new.signal("TERM");
    assert!(new.wait(Duration::from_secs(20)).success());
}

/// Kills what a pid file names when the test ends, however it ends.
struct PidFileGuard(PathBuf);

impl PidFileGuard {
    fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(&self.0).ok()?.trim().parse().ok()
    }
}

impl Drop for PidFileGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// `--daemon` returns once serving with the pid file written; the unit's
/// `ExecReload` (`--upgrade --daemon`: the successor sends SIGQUIT to the
/// process the pid file names once it listens for the sockets) leaves the
/// pid file naming the new process; SIGTERM removes it. A daemon that
/// cannot start says so in its exit status.
#[tokio::test]
async fn the_daemon_hands_over_and_its_pid_file_follows() {
    let origin = upgrade_origin();
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("stamp-proxy.pid");
    let guard = PidFileGuard(pid_file.clone());
    let port = free_port().unwrap();
    let listen = format!("127.0.0.1:{port}");
    let base = format!("http://{listen}");
    let store = dir.path().join("store");
    let config = dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            "origin = {:?}\nlisten = {listen:?}\nstore = {:?}\n[process]\npid_file = {:?}\nupgrade_socket = {:?}\n[shutdown]\ntimeout = \"5s\"\n",
            origin.url,
            store.to_str().unwrap(),
            pid_file.to_str().unwrap(),
            dir.path().join("up.sock").to_str().unwrap()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_string();
    let daemon = |extra: &[&str]| {
        let mut args = vec!["--config", &config, "--daemon"];
        args.extend_from_slice(extra);
        Command::new(binary("stamp-proxy").unwrap())
            .args(&args)
            .env("RUST_LOG", "info")
            .stderr(std::fs::File::create(dir.path().join("daemon.log")).unwrap())
            .output()
            .unwrap()
    };

    let out = daemon(&[]);
    assert!(out.status.success(), "{out:?}");
    let first = guard.pid().expect("a pid file once started");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&first.to_string()),
        "{out:?}"
    );
    wait_health(&base, Duration::from_secs(20)).await;

    // Another one on the same store cannot start: the parent says so.
    let port2 = free_port().unwrap();
    let out = Command::new(binary("stamp-proxy").unwrap())
        .args([
            "--config",
            &config,
            "--daemon",
            "--listen",
            &format!("127.0.0.1:{port2}"),
            "--pid-file",
            dir.path().join("other.pid").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stopped during start-up"),
        "{out:?}"
    );
    assert!(
        guard.pid() == Some(first),
        "the running one's pid file is kept"
    );

    // systemd's ExecReload, as the packaged unit writes it: the successor
    // signals the process the pid file names once it listens.
    let out = daemon(&["--upgrade"]);
    assert!(
        out.status.success(),
        "{out:?}\n{}",
        std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default()
    );
    let second = guard.pid().unwrap();
    assert_ne!(first, second, "the pid file names the new process");
    let start = Instant::now();
    while alive(first) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "old still running"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(guard.pid(), Some(second), "the old one left it alone");
    wait_health(&base, Duration::from_secs(5)).await;
    assert!(stamp_tests::get_text(&base).await.contains("upgrade me"));

    signal("TERM", second);
    let start = Instant::now();
    while alive(second) {
        assert!(start.elapsed() < Duration::from_secs(20), "still running");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!pid_file.exists(), "removed at exit");
}

fn write_config(path: &Path, origin: &str, token_sha: &str, store: &Path, extra: &str) {
    std::fs::write(
        path,
        format!(
            "origin = {origin:?}\nstore = {:?}\n{extra}\n[[tokens]]\nname = \"ops\"\nrole = \"admin\"\nsha256 = {token_sha:?}\n",
            store.to_str().unwrap()
        ),
    )
    .unwrap();
}

async fn api_status(base: &str, token: &str) -> u16 {
    client()
        .get(format!("{base}/__stamp/api/v1/tickets"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// SIGHUP: a token rotation and a new origin apply at once; the store and
/// threads wait for a restart and the log says so; a broken file changes
/// nothing and says why.
#[tokio::test]
async fn sighup_applies_what_it_can_and_names_what_needs_a_restart() {
    let first = Origin::start().unwrap();
    first.route("/", Route::html("<html><body>first origin</body></html>"));
    let second = Origin::start().unwrap();
    second.route("/", Route::html("<html><body>second origin</body></html>"));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    let store = dir.path().join("store");
    let h = stamp_control::hash_token;
    write_config(&config, &first.url, &h("old-secret"), &store, "");
    let port = free_port().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let proxy = Started::spawn(
        &[
            "--config",
            config.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ],
        &dir.path().join("proxy.log"),
    );
    wait_health(&base, Duration::from_secs(20)).await;
    assert_eq!(api_status(&base, "old-secret").await, 200);
    assert!(stamp_tests::get_text(&base).await.contains("first origin"));

    write_config(
        &config,
        &second.url,
        &h("new-secret"),
        &dir.path().join("elsewhere"),
        "threads = 1\n[badge]\nenabled = false\n",
    );
    proxy.signal("HUP");
    let log = proxy.wait_log("configuration reloaded", Duration::from_secs(10));
    let line = log
        .lines()
        .find(|l| l.contains("configuration reloaded"))
        .unwrap();
    for key in ["origin", "badge", "tokens"] {
        assert!(
            line.split("applied:")
                .nth(1)
                .unwrap()
                .split("needs a restart")
                .next()
                .unwrap()
                .contains(key),
            "{key} applied: {line}"
        );
    }
    let restart = line.split("needs a restart:").nth(1).unwrap();
    assert!(
        restart.contains("store") && restart.contains("threads"),
        "{line}"
    );
    assert!(restart.contains("--upgrade"), "says how: {line}");
    assert_eq!(api_status(&base, "old-secret").await, 401, "rotated out");
    assert_eq!(api_status(&base, "new-secret").await, 200, "rotated in");
    assert!(stamp_tests::get_text(&base).await.contains("second origin"));
    assert!(
        !dir.path().join("elsewhere").exists(),
        "the store is not switched while serving"
    );

    // A broken file: nothing changes, and the log says what is wrong.
    std::fs::write(&config, "origin = \"ftp://nope\"\n[rewrite]\nmax_map = 3\n").unwrap();
    proxy.signal("HUP");
    let log = proxy.wait_log("not reloaded", Duration::from_secs(10));
    assert!(log.contains("max_map"), "{log}");
    assert_eq!(api_status(&base, "new-secret").await, 200);
    assert!(stamp_tests::get_text(&base).await.contains("second origin"));
}

/// `--log-format json` with `[log] access = true`: every line is one JSON
/// object; each request has an access line with its id (a trusted proxy's
/// `X-Request-Id`, else one of ours), and never the query (a share link's
/// token lives there). An untrusted client's id is not taken.
#[tokio::test]
async fn json_logs_with_request_ids() {
    let origin = upgrade_origin();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            "origin = {:?}\nstore = {:?}\n[log]\naccess = true\n[forwarded]\ntrusted = [\"127.0.0.1\"]\n",
            origin.url,
            dir.path().join("store").to_str().unwrap()
        ),
    )
    .unwrap();
    let port = free_port().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let json_proxy = |log: &str| {
        Started::spawn(
            &[
                "--config",
                config.to_str().unwrap(),
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--log-format",
                "json",
            ],
            &dir.path().join(log),
        )
    };
    let proxy = json_proxy("proxy.log");
    wait_health(&base, Duration::from_secs(20)).await;
    let r = client()
        .get(format!("{base}/?share=SECRET-TOKEN"))
        .header("x-request-id", "trace-4bf92f3577b34da6")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A stamped page under a CSP (the rewriter's notes are logged).
    origin.route(
        "/csp",
        Route::html("<html><head><script type=\"importmap\">{\"imports\":{}}</script></head><body>csp</body></html>")
            .header("content-security-policy", "script-src 'self'"),
    );
    let put = client()
        .put(format!(
            "{base}/__stamp/api/v1/tickets/JSON-1/modules/src/app.js"
        ))
        .body("export default 1;")
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    let r = client()
        .get(format!("{base}/csp?dev=JSON-1&share=SECRET-TOKEN"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    client()
        .get(format!("{base}/nothing-here"))
        .send()
        .await
        .unwrap();
    proxy.wait_log("/nothing-here", Duration::from_secs(10));
    // A request's access line is written once its response is done, which
    // under load may be after the next request's: each is waited for.
    let log = proxy.wait_log("\"path\":\"/csp\"", Duration::from_secs(10));
    assert!(
        log.lines()
            .any(|l| l.contains("\"path\":\"/csp\"") && l.contains("JSON-1 dev")),
        "the stamped page's access line names its ticket:\n{log}"
    );
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let access: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["target"] == "access").collect();
    let given = access
        .iter()
        .find(|l| l["path"] == "/")
        .unwrap_or_else(|| panic!("{log}"));
    assert_eq!(given["request_id"], "trace-4bf92f3577b34da6");
    assert_eq!(given["status"], 200);
    assert_eq!(given["method"], "GET");
    assert!(
        given["ms"].is_number() && given["bytes"].is_number(),
        "{given}"
    );
    let ours = access
        .iter()
        .find(|l| l["path"] == "/nothing-here")
        .unwrap();
    let id = ours["request_id"].as_str().unwrap();
    assert!(
        id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{ours}"
    );
    assert!(!log.contains("SECRET-TOKEN"), "the query is never logged");
    assert!(lines
        .iter()
        .any(|l| l["level"] == "INFO" && l["target"] != "access"));
    drop(proxy);

    // Without [forwarded] trusted, a client's id is not believed.
    std::fs::write(
        &config,
        format!(
            "origin = {:?}\nstore = {:?}\n[log]\naccess = true\n",
            origin.url,
            dir.path().join("store").to_str().unwrap()
        ),
    )
    .unwrap();
    let proxy = json_proxy("untrusted.log");
    wait_health(&base, Duration::from_secs(20)).await;
    client()
        .get(format!("{base}/forged"))
        .header("x-request-id", "forged-id")
        .send()
        .await
        .unwrap();
    let log = proxy.wait_log("/forged", Duration::from_secs(10));
    assert!(!log.contains("forged-id"), "{log}");
}
