//! A real redis-server on a free port, killed on drop.
//!
//! No persistence (`--save "" --appendonly no`): a restart comes back empty,
//! which is what the outage tests want — they check reconnection, not data.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

const BINARY: &str = "redis-server";
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const POLL_EVERY: Duration = Duration::from_millis(10);
/// A free port can be taken by someone else between our probe and redis
/// binding it; a few fresh ports make that race harmless.
const PORT_ATTEMPTS: usize = 5;

pub struct RedisServer {
    pub port: u16,
    /// `redis://127.0.0.1:<port>/`.
    pub url: String,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisServer")
            .field("port", &self.port)
            .field("running", &self.child.is_some())
            .finish()
    }
}

impl RedisServer {
    /// Starts redis-server on a free loopback port and waits until it answers PING.
    pub fn start() -> anyhow::Result<RedisServer> {
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            let mut server = RedisServer {
                port,
                url: format!("redis://127.0.0.1:{port}/"),
                child: None,
                dir: tempfile::tempdir().context("creating a directory for redis-server")?,
            };
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("could not start {BINARY}")))
    }

    /// Kills the server; the port stays reserved for [`RedisServer::restart`].
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().context("killing redis-server")?;
            child.wait().context("reaping redis-server")?;
        }
        Ok(())
    }

    /// Stops the server if it runs, then starts a fresh (empty) one on the same port.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        // The old listening socket may linger for a moment after the kill.
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match self.spawn() {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(POLL_EVERY),
            }
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = self.log_path();
        let mut child = Command::new(BINARY)
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    anyhow!(
                        "`{BINARY}` is not installed (not found on PATH); these tests need a \
                         real Redis: run `apt-get install -y redis-server`"
                    )
                } else {
                    anyhow!("cannot run `{BINARY}`: {e}")
                }
            })?;

        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().context("polling redis-server")? {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                bail!(
                    "{BINARY} on port {} exited with {status} before answering PING; log:\n{log}",
                    self.port
                );
            }
            if ping(addr) {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                bail!(
                    "{BINARY} on port {} did not answer PING within {READY_TIMEOUT:?}; log:\n{log}",
                    self.port
                );
            }
            std::thread::sleep(POLL_EVERY);
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("probing for a free port")?;
    Ok(listener.local_addr()?.port())
}

/// A raw RESP PING, so the harness does not depend on a Redis client.
fn ping(addr: SocketAddr) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
        stream.set_read_timeout(Some(Duration::from_millis(500)))?;
        stream.write_all(b"PING\r\n")?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply)?;
        Ok(&reply == b"+PONG\r\n")
    };
    attempt().unwrap_or(false)
}
