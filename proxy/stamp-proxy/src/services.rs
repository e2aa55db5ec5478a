//! The background loops as Pingora background services: each sees the
//! server's shutdown and stops with it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use stamp_control::Control;
use stamp_data::{run_refresher, SnapshotCell};
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
