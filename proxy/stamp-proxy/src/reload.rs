//! Reloading the configuration file while serving (SIGHUP).
//!
//! The file is read and validated as at start-up. An invalid file changes
//! nothing: every problem is logged and the running configuration stays.
//! A valid one is compared with the running configuration, key by key:
//!
//! - applied at once, to every request that starts from then on: the data
//!   plane's keys (origin, timeouts, selection, rewrite, badge, metrics
//!   token, asset origins, report sampling, forwarded, the access log) and a
//!   rotation of `[[tokens]]`;
//! - kept at their running value until a restart, and named in the log:
//!   the listener, TLS, the store, threads, shutdown and sync timings, the
//!   process and log format, the caches' sizes, and the control plane's
//!   other sections (policies, hooks, sign-in, preview, …), whose state
//!   (jobs, sessions, queues) is built once. `stamp-proxy --upgrade`
//!   applies them without refusing a connection.

use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use stamp_control::Control;
use stamp_data::{Reload, ReloadOutcome};

use crate::config::{Config, ConfigError, Flags};

/// Applies the configuration file again.
pub struct Reloader {
    pub flags: Flags,
    pub running: Mutex<Config>,
    pub data: Reload,
    pub control: Arc<Control>,
}

impl Reloader {
    /// Reads, validates and applies the file; on a problem, nothing changes.
    pub fn reload(&self) -> Result<ReloadOutcome, ConfigError> {
        let mut new = Config::load(&self.flags)?;
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if self.flags.demo {
            // The demo's origin is the bundled shop, not a configured one.
            new.data.origin = running.data.origin.clone();
        }
        let mut out = ReloadOutcome::default();
        let fixed = [
            ("listen", running.listen != new.listen),
            ("store", running.store != new.store),
            ("redis_prefix", running.redis_prefix != new.redis_prefix),
            ("threads", running.threads != new.threads),
            ("tls", running.tls != new.tls),
            (
                "shutdown",
                running.grace_period != new.grace_period
                    || running.shutdown_timeout != new.shutdown_timeout,
            ),
            (
                "sync.poll_interval",
                running.poll_interval != new.poll_interval,
            ),
            (
                "process",
                running.process.daemon != new.process.daemon
                    || running.process.pid_file != new.process.pid_file
                    || running.process.upgrade_socket != new.process.upgrade_socket,
            ),
            ("log.format", running.log_format != new.log_format),
        ];
        out.needs_restart.extend(
            fixed
                .into_iter()
                .filter(|(_, changed)| *changed)
                .map(|(key, _)| key),
        );
        out.merge(self.data.apply(new.data));
        let (applied, restart) = self.control.reload(&new.control);
        out.applied.extend(applied);
        out.needs_restart.extend(restart);
        running.data = (*self.data.current()).clone();
        Ok(out)
    }

    /// [`Reloader::reload`], said in the log.
    pub fn reload_and_log(&self) {
        let source = self.flags.config.as_ref().map_or_else(
            || "the command line".to_string(),
            |p| p.display().to_string(),
        );
        match self.reload() {
            Err(e) => log::error!(
                target: "reload",
                outcome = "refused";
                "configuration not reloaded, nothing changed: {e}"
            ),
            Ok(out) => {
                let applied = list(&out.applied);
                let restart = list(&out.needs_restart);
                log::info!(
                    target: "reload",
                    outcome = "reloaded",
                    applied = applied.as_str(),
                    needs_restart = restart.as_str();
                    "configuration reloaded from {source}: applied: {}; needs a restart: {}{}",
                    if applied.is_empty() { "nothing" } else { &applied },
                    if restart.is_empty() { "nothing" } else { &restart },
                    if restart.is_empty() {
                        ""
                    } else {
                        " (stamp-proxy --upgrade applies them without refusing a connection)"
                    }
                );
            }
        }
    }
}

fn list(keys: &[&str]) -> String {
    keys.join(", ")
}

/// Reloads on every SIGHUP until the server stops.
pub struct OnHangup {
    pub reloader: Arc<Reloader>,
    /// Installed at start-up, before anything else.
    pub hangups: Mutex<Option<tokio::signal::unix::Signal>>,
}

#[async_trait]
impl BackgroundService for OnHangup {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let taken = self
            .hangups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(mut hup) = taken else { return };
        loop {
            tokio::select! {
                got = hup.recv() => {
                    if got.is_none() {
                        return;
                    }
                    let reloader = self.reloader.clone();
                    // Reading and validating the file may block (TLS files,
                    // resolving the origin): off the runtime's workers.
                    let _ = tokio::task::spawn_blocking(move || reloader.reload_and_log()).await;
                }
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        return;
                    }
                }
            }
        }
    }
}
