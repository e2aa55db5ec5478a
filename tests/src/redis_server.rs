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
    /// Extra arguments (`--replicaof`), kept for restarts.
    extra: Vec<String>,
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
        Self::start_with(&[])
    }

    /// Starts a replica of `primary`.
    pub fn start_replica_of(primary: &RedisServer) -> anyhow::Result<RedisServer> {
        Self::start_with(&["--replicaof", "127.0.0.1", &primary.port.to_string()])
    }

    /// Starts with extra redis-server arguments.
    pub fn start_with(extra: &[&str]) -> anyhow::Result<RedisServer> {
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            let mut server = RedisServer {
                port,
                url: format!("redis://127.0.0.1:{port}/"),
                child: None,
                dir: tempfile::tempdir().context("creating a directory for redis-server")?,
                extra: extra.iter().map(|a| a.to_string()).collect(),
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

    /// Kills the server at once (SIGKILL: no shutdown, no final save), as a
    /// crashed host would.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.stop()
    }

    /// `redis-cli` against this server; its output.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        cli(self.port, args)
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
            // The failover tests stall a primary with DEBUG SLEEP.
            .args(["--enable-debug-command", "local"])
            // As the operations guide recommends for Sentinel: a replica
            // that must resync after a failover starts at once, rather than
            // after Redis' default 5 s wait for others to join.
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .args(&self.extra)
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

/// `redis-cli -p PORT ARGS…` on loopback; its stdout.
pub fn cli(port: u16, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .context("running redis-cli (apt-get install -y redis-tools)")?;
    if !out.status.success() {
        bail!(
            "redis-cli {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The service name the sentinels monitor.
pub const SERVICE: &str = "mymaster";

/// A real `redis-sentinel` (Debian's package) on a free port, killed on drop.
pub struct Sentinel {
    pub port: u16,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Sentinel {
    /// Monitors `primary` as [`SERVICE`] with a quorum of 2, and declares it
    /// down after `down_after`.
    pub fn start(primary: &RedisServer, down_after: Duration) -> anyhow::Result<Sentinel> {
        let dir = tempfile::tempdir().context("creating a directory for redis-sentinel")?;
        let port = free_port()?;
        let conf = dir.path().join("sentinel.conf");
        let log = dir.path().join("sentinel.log");
        // Sentinel rewrites its configuration file: it must be its own.
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndaemonize no\nlogfile {log}\ndir {dir}\n\
                 sentinel monitor {SERVICE} 127.0.0.1 {primary} 2\n\
                 sentinel down-after-milliseconds {SERVICE} {down}\n\
                 sentinel failover-timeout {SERVICE} 10000\n\
                 sentinel parallel-syncs {SERVICE} 2\n",
                log = log.display(),
                dir = dir.path().display(),
                primary = primary.port,
                down = down_after.as_millis(),
            ),
        )?;
        let mut child = Command::new("redis-sentinel")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    anyhow!(
                        "`redis-sentinel` is not installed; the failover tests need it: run \
                         `apt-get install -y redis-sentinel` (tests/install-deps does)"
                    )
                } else {
                    anyhow!("cannot run redis-sentinel: {e}")
                }
            })?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + READY_TIMEOUT;
        while !ping(addr) {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "redis-sentinel exited with {status}: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                bail!("redis-sentinel on port {port} did not answer PING");
            }
            std::thread::sleep(POLL_EVERY);
        }
        Ok(Sentinel {
            port,
            child: Some(child),
            _dir: dir,
        })
    }

    /// The port of the primary this sentinel names now.
    pub fn primary_port(&self) -> anyhow::Result<u16> {
        let out = cli(self.port, &["SENTINEL", "get-master-addr-by-name", SERVICE])?;
        out.lines()
            .nth(1)
            .and_then(|p| p.trim().parse().ok())
            .with_context(|| format!("no primary in {out:?}"))
    }

    /// One field of `SENTINEL master`.
    fn master_field(&self, field: &str) -> anyhow::Result<String> {
        let out = cli(self.port, &["SENTINEL", "master", SERVICE])?;
        let mut lines = out.lines();
        while let Some(l) = lines.next() {
            if l.trim() == field {
                return Ok(lines.next().unwrap_or("").trim().to_string());
            }
        }
        bail!("no {field} in {out:?}")
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A primary, two replicas and three sentinels on loopback: the smallest
/// deployment that survives losing its primary and still has a replica to
/// acknowledge writes afterwards.
pub struct SentinelCluster {
    /// Index 0 starts as the primary, 1 and 2 as its replicas.
    pub servers: Vec<RedisServer>,
    pub sentinels: Vec<Sentinel>,
    /// `redis+sentinel://127.0.0.1:S1,127.0.0.1:S2,127.0.0.1:S3/mymaster`.
    pub url: String,
}

impl SentinelCluster {
    pub fn start(down_after: Duration) -> anyhow::Result<SentinelCluster> {
        let primary = RedisServer::start()?;
        let replicas = [
            RedisServer::start_replica_of(&primary)?,
            RedisServer::start_replica_of(&primary)?,
        ];
        let deadline = Instant::now() + READY_TIMEOUT;
        for replica in &replicas {
            while !replica
                .cli(&["INFO", "replication"])?
                .contains("master_link_status:up")
            {
                if Instant::now() >= deadline {
                    bail!("a replica never synced with the primary");
                }
                std::thread::sleep(POLL_EVERY);
            }
        }
        let sentinels = (0..3)
            .map(|_| Sentinel::start(&primary, down_after))
            .collect::<anyhow::Result<Vec<_>>>()?;
        // Ready once every sentinel knows the replica and the other two
        // (they find each other through the primary every 2 s).
        let deadline = Instant::now() + Duration::from_secs(30);
        for s in &sentinels {
            loop {
                let others = s.master_field("num-other-sentinels").unwrap_or_default();
                let replicas = s.master_field("num-slaves").unwrap_or_default();
                if others == "2" && replicas == "2" {
                    break;
                }
                if Instant::now() >= deadline {
                    bail!(
                        "sentinel {} never saw the whole deployment (others {others:?}, \
                         replicas {replicas:?})",
                        s.port
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let hosts: Vec<String> = sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        Ok(SentinelCluster {
            url: format!("redis+sentinel://{}/{SERVICE}", hosts.join(",")),
            servers: [primary].into_iter().chain(replicas).collect(),
            sentinels,
        })
    }

    /// The index in [`SentinelCluster::servers`] of the server every
    /// sentinel names as primary, once they agree.
    pub fn agreed_primary(&self) -> Option<usize> {
        let ports: Vec<u16> = self
            .sentinels
            .iter()
            .filter_map(|s| s.primary_port().ok())
            .collect();
        if ports.len() != self.sentinels.len() || ports.iter().any(|p| *p != ports[0]) {
            return None;
        }
        self.servers.iter().position(|s| s.port == ports[0])
    }
}
