//! The background loops as Pingora background services: each sees the
//! server's shutdown and stops with it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use stamp_control::Control;
use stamp_data::{run_refresher, Reports, SnapshotCell};
use stamp_store::SharedStore;

/// Waits until `shutdown` turns true (or its sender is gone).
async fn stopped(mut shutdown: ShutdownWatch) {
    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

/// Keeps the data plane's snapshot in step with the store.
pub struct Refresher {
    pub store: SharedStore,
    pub cell: Arc<SnapshotCell>,
    pub poll: Duration,
}

#[async_trait]
impl BackgroundService for Refresher {
    async fn start(&self, shutdown: ShutdownWatch) {
        tokio::select! {
            _ = run_refresher(self.store.clone(), self.cell.clone(), self.poll) => {}
            _ = stopped(shutdown) => log::debug!("snapshot refresher stopped"),
        }
    }
}

/// Writes the page reports stamped pages send to the store, in batches.
pub struct ReportFlusher {
    pub reports: Arc<Reports>,
    pub store: SharedStore,
}

#[async_trait]
impl BackgroundService for ReportFlusher {
    async fn start(&self, shutdown: ShutdownWatch) {
        tokio::select! {
            _ = self.reports.flush_forever(self.store.clone(), Duration::from_secs(1)) => {}
            _ = self.reports.flush_seen_forever(self.store.clone(), Duration::from_secs(1)) => {}
            _ = stopped(shutdown) => log::debug!("report flusher stopped"),
        }
    }
}

/// Ends the process once a graceful stop has let the requests in flight
/// finish: Pingora stops accepting at the signal, then would sleep its whole
/// grace period (`shutdown.timeout`) before cutting what is left; this exits
/// as soon as nothing is in flight (after `shutdown.grace_period` at the
/// least), with queued hook deliveries given their chance.
pub struct Drain {
    pub in_flight: Arc<AtomicUsize>,
    pub control: Arc<Control>,
    pub at_least: Duration,
    pub at_most: Duration,
    /// Removed at exit, unless a successor wrote its own pid there.
    pub pid_file: Option<std::path::PathBuf>,
}

#[async_trait]
impl BackgroundService for Drain {
    async fn start(&self, shutdown: ShutdownWatch) {
        stopped(shutdown).await;
        let began = Instant::now();
        log::info!(
            "stopping: {} request(s) in flight, waiting up to {}",
            self.in_flight.load(Ordering::SeqCst),
            humantime::format_duration(self.at_most)
        );
        loop {
            let left = self.in_flight.load(Ordering::SeqCst);
            let waited = began.elapsed();
            if left == 0 && waited >= self.at_least {
                break;
            }
            if waited >= self.at_most {
                log::warn!("stopping with {left} request(s) still in flight");
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let rest = self.at_most.saturating_sub(began.elapsed());
        self.control
            .drain_hooks(rest.min(Duration::from_secs(5)))
            .await;
        crate::process::stopped(self.pid_file.as_deref());
        log::info!("stamp-proxy stopped");
        std::process::exit(0);
    }
}

/// The control plane's jobs: settling and garbage collection.
pub struct Jobs {
    pub control: Arc<Control>,
}

#[async_trait]
impl BackgroundService for Jobs {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.control.run_jobs(shutdown).await;
        log::debug!("control jobs stopped");
    }
}

/// Says the process serves once its listener accepts connections: writes
/// the pid file and tells a waiting `--daemon` parent. A process that
/// cannot say so stops, so the parent reports the failure.
pub struct Started {
    pub listen: std::net::SocketAddr,
    pub pid_file: Option<std::path::PathBuf>,
}

#[async_trait]
impl BackgroundService for Started {
    async fn start(&self, _shutdown: ShutdownWatch) {
        let began = Instant::now();
        let target = match self.listen.ip() {
            ip if ip.is_unspecified() => {
                let local: std::net::IpAddr = if ip.is_ipv4() {
                    std::net::Ipv4Addr::LOCALHOST.into()
                } else {
                    std::net::Ipv6Addr::LOCALHOST.into()
                };
                std::net::SocketAddr::new(local, self.listen.port())
            }
            _ => self.listen,
        };
        while tokio::net::TcpStream::connect(target).await.is_err() {
            if began.elapsed() > Duration::from_secs(30) {
                log::error!(
                    "the listener on {} never accepted a connection",
                    self.listen
                );
                std::process::exit(1);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if let Err(e) = crate::process::started(self.pid_file.as_deref()) {
            log::error!("cannot say it started: {e}");
            std::process::exit(1);
        }
    }
}
