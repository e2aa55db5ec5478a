//! A real Prometheus server (Debian package `prometheus`) on a free
//! loopback port, scraping the given targets every second; killed on drop.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

const BINARY: &str = "/usr/bin/prometheus";

pub struct Prometheus {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus on `port` scraping `metrics_path` on each
    /// `host:port` target every second, and waits until it is ready.
    pub fn start(port: u16, targets: &[String], metrics_path: &str) -> anyhow::Result<Prometheus> {
        if !std::path::Path::new(BINARY).exists() {
            bail!("{BINARY} is missing: apt-get install -y prometheus (tests/install-deps does)");
        }
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("prometheus.yml");
        let list = targets
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", ");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: stamp\n    metrics_path: {metrics_path}\n    \
                 static_configs:\n      - targets: [{list}]\n"
            ),
        )?;
        let log = std::fs::File::create(dir.path().join("prometheus.log"))?;
        let child = Command::new(BINARY)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting prometheus")?;
        let p = Prometheus {
            url: format!("http://127.0.0.1:{port}"),
            child: Some(child),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if ready(port) {
                return Ok(p);
            }
            if Instant::now() > deadline {
                bail!("prometheus did not become ready on {}", p.url);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `GET /-/ready` answers 200.
fn ready(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /-/ready HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.ends_with(b"200")
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            crate::stop_child(child, Duration::from_secs(5));
        }
    }
}
