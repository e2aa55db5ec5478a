//! A real `stamp-proxy` process on a free port: started with flags, ready
//! when `/__stamp/health` answers, stopped (SIGTERM, then SIGKILL) on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::free_port;

/// The package that builds each workspace binary.
fn package_of(name: &str) -> Option<&'static str> {
    match name {
        "stamp-proxy" => Some("stamp-proxy"),
        "stamp" => Some("stamp-cli"),
        "stamp-load" => Some("stamp-benches"),
        _ => None,
    }
}

/// Builds the workspace's binaries once per test process, with the profile
/// the tests were built with, so a plain `cargo test` on a fresh clone runs
/// the current code (cargo's lock is free while tests run).
fn build_binaries(target_dir: &std::path::Path) -> anyhow::Result<()> {
    static BUILT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.args([
                "build",
                "--quiet",
                "-p",
                "stamp-proxy",
                "-p",
                "stamp-cli",
                "-p",
                "stamp-benches",
                "--bins",
            ]);
            if target_dir.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
            // What cargo set for this test process (the package's name,
            // manifest, …) would look like a changed environment to the
            // build scripts of shared dependencies, and rebuild them for
            // the next `cargo test`.
            for (k, _) in std::env::vars_os() {
                let k = k.to_string_lossy();
                let ours = (k.starts_with("CARGO_")
                    && !k.starts_with("CARGO_HOME")
                    && !k.starts_with("CARGO_TARGET_DIR")
                    && !k.starts_with("CARGO_BUILD_")
                    && !k.starts_with("CARGO_NET_")
                    && !k.starts_with("CARGO_REGISTR")
                    && !k.starts_with("CARGO_PROFILE_")
                    && !k.starts_with("CARGO_TERM_"))
                    || k == "OUT_DIR"
                    || k.starts_with("RUST_TEST_");
                if ours {
                    cmd.env_remove(&*k);
                }
            }
            match cmd.status() {
                Ok(s) if s.success() => Ok(()),
                Ok(s) => Err(format!("cargo build of the binaries failed ({s})")),
                Err(e) => Err(format!("cannot run cargo to build the binaries: {e}")),
            }
        })
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

/// Where cargo puts the workspace binaries: next to the running executable
/// (a harness binary) or next to its `deps/` directory (a test, which
/// builds them first).
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let here = exe.parent().context("executable has no directory")?;
    if here.file_name().is_some_and(|n| n == "deps") && package_of(name).is_some() {
        let target_dir = here.parent().context("deps/ has no parent")?;
        build_binaries(target_dir)?;
        return Ok(target_dir.join(name));
    }
    for dir in [Some(here), here.parent()].into_iter().flatten() {
        let path = dir.join(name);
        if path.exists() {
            return Ok(path);
        }
    }
    bail!(
        "{name} not found next to {}: build it first with `cargo build --workspace --bins`",
        exe.display()
    )
}

pub struct Proxy {
    pub port: u16,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    child: Option<Child>,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").field("url", &self.url).finish()
    }
}

impl Proxy {
    /// Starts `stamp-proxy --origin ORIGIN --listen 127.0.0.1:FREE` plus `args`.
    pub fn start(origin: &str, args: &[&str]) -> anyhow::Result<Proxy> {
        Self::start_with(Some(origin), args, &[])
    }

    /// Starts with an explicit environment and optional origin flag.
    pub fn start_with(
        origin: Option<&str>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Proxy> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let log = dir.path().join("proxy.log");
        let mut cmd = Command::new(binary("stamp-proxy")?);
        if let Some(o) = origin {
            cmd.args(["--origin", o]);
        }
        if !args.contains(&"--listen") {
            cmd.args(["--listen", &format!("127.0.0.1:{port}")]);
        }
        if !args.iter().any(|a| *a == "--store" || *a == "--config") {
            cmd.args(["--store", &dir.path().join("store").to_string_lossy()]);
        }
        cmd.args(args)
            .env("RUST_LOG", "info,stamp_proxy=debug")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("stdout.log"))?)
            .stderr(std::fs::File::create(&log)?);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().context("spawning stamp-proxy")?;
        let listen_port = args
            .iter()
            .position(|a| *a == "--listen")
            .and_then(|i| args.get(i + 1))
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or(port);
        let mut proxy = Proxy {
            port: listen_port,
            url: format!("http://127.0.0.1:{listen_port}"),
            child: Some(child),
            log,
            _dir: dir,
        };
        proxy.wait_ready(Duration::from_secs(20))?;
        Ok(proxy)
    }

    /// Polls `/__stamp/health` until it answers.
    fn wait_ready(&mut self, limit: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("stamp-proxy exited early ({status}):\n{}", self.log_text());
                }
            }
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::{Read, Write};
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                let _ = s.write_all(
                    b"GET /__stamp/health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
                );
                let mut buf = String::new();
                let _ = s.read_to_string(&mut buf);
                if buf.starts_with("HTTP/1.1 200") {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        bail!(
            "stamp-proxy not ready after {limit:?}:\n{}",
            self.log_text()
        )
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Peak resident memory (VmHWM) of the process, in KiB.
    pub fn peak_rss_kib(&self) -> anyhow::Result<u64> {
        let pid = self.pid().context("not running")?;
        status_kib(pid, "VmHWM").context("no VmHWM in /proc status")
    }

    /// Current resident memory (VmRSS), in KiB.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        let pid = self.pid().context("not running")?;
        status_kib(pid, "VmRSS").context("no VmRSS in /proc status")
    }

    /// Sends a signal and waits for the process to exit; returns its status.
    pub fn signal_and_wait(
        &mut self,
        signal: &str,
        limit: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("not running")?;
        Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()?;
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                bail!("stamp-proxy did not exit within {limit:?} of SIG{signal}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_child(child, Duration::from_secs(3));
        }
    }
}

/// A `/proc/PID/status` figure in KiB (`VmRSS`, `VmHWM`).
pub fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// SIGTERM, then SIGKILL if the process is still there after `grace`.
pub fn stop_child(mut child: Child, grace: Duration) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let start = Instant::now();
    while start.elapsed() < grace {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}
