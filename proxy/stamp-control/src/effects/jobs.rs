//! The control plane's background loops: settling released tickets and
//! garbage collection. Each runs until its shutdown watch turns true (the
//! binary runs them as Pingora background services), and hands every change
//! it commits to the fan-out.

use std::sync::Arc;
use std::time::Duration;

use stamp_store::SharedStore;
use tokio::sync::watch;

use super::Fanout;
use crate::workflow::gc;
use crate::workflow::settle::Settler;

/// Waits for `tick`, or returns `false` when shutdown began first.
async fn next(tick: &mut tokio::time::Interval, shutdown: &mut watch::Receiver<bool>) -> bool {
    if *shutdown.borrow() {
        return false;
    }
    tokio::select! {
        _ = tick.tick() => true,
        _ = shutdown.changed() => false,
    }
}

fn interval(every: Duration) -> tokio::time::Interval {
    // A zero period would make `interval` panic.
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

/// Checks released tickets against the origin every `every`.
pub async fn settle_loop(
    settler: Arc<Settler>,
    fanout: Arc<Fanout>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = interval(every);
    while next(&mut tick, &mut shutdown).await {
        match settler.check_all().await {
            Ok(pass) => pass.changes.into_iter().for_each(|c| {
                fanout.publish(c);
            }),
            Err(e) => log::debug!("settle pass failed: {e}"),
        }
    }
}

/// Runs [`gc::run_once`] every `every` (the first run right away). Logs a
/// line for each run that freed something; failures are logged and retried
/// at the next period.
pub async fn gc_loop(
    store: SharedStore,
    fanout: Arc<Fanout>,
    policy: gc::Policy,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    log::info!(
        "garbage collection every {}: grace {}, closed tickets kept {}",
        humantime::format_duration(every),
        humantime::format_duration(policy.grace),
        humantime::format_duration(policy.closed_retention)
    );
    let mut tick = interval(every);
    while next(&mut tick, &mut shutdown).await {
        match gc::run_once(&store, &policy).await {
            Ok(report) if report.freed_anything() => {
                let purged: Vec<&str> = report.purged.iter().map(|k| k.as_str()).collect();
                log::info!(
                    "gc: purged {} closed tickets [{}]; deleted {} modules ({} bytes) and {} \
                     sets; the store holds {} modules ({} bytes), {} sets, {} tickets",
                    purged.len(),
                    purged.join(", "),
                    report.sweep.modules_deleted,
                    report.sweep.module_bytes_freed,
                    report.sweep.sets_deleted,
                    report.usage.modules,
                    report.usage.module_bytes,
                    report.usage.sets,
                    report.usage.tickets
                );
                report.changes.into_iter().for_each(|c| {
                    fanout.publish(c);
                });
            }
            Ok(report) => log::debug!("gc: nothing to free; {:?}", report.usage),
            Err(e) => {
                stamp_store::metrics::STORE_ERRORS.inc();
                log::warn!(
                    "gc failed (retrying in {}): {e}",
                    humantime::format_duration(every)
                );
            }
        }
    }
}

/// How often a proxy reads the sessions signed out anywhere in the fleet.
pub const REVOCATIONS_EVERY: Duration = Duration::from_secs(2);

/// Adds the sessions revoked anywhere in the fleet to `revoked`, every
/// [`REVOCATIONS_EVERY`], until shutdown. Nothing is taken out: an expired
/// session is refused anyway, and the set grows by one per sign-out.
pub async fn revocation_loop(
    store: SharedStore,
    revoked: std::sync::Arc<std::sync::RwLock<std::collections::HashSet<String>>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(REVOCATIONS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        match store.revoked(stamp_store::now_ms()).await {
            Ok(ids) => {
                let mut set = revoked
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                // Never forget one this process holds: a revocation the
                // store did not take stays refused here.
                set.extend(ids);
            }
            Err(e) => log::debug!("cannot read revoked sessions: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use stamp_store::{SharedStore, StoreError};

    use super::*;

    #[tokio::test]
    async fn failures_are_errors_and_run_forever_keeps_going() {
        // Nothing listens on port 1: every operation fails as unavailable.
        let store: SharedStore = match stamp_store::open("redis://127.0.0.1:1/", "gc").await {
            Ok(s) => s,
            Err(e) => panic!("open: {e}"),
        };
        assert!(matches!(
            gc::run_once(&store, &gc::Policy::default()).await,
            Err(StoreError::Unavailable(_))
        ));
        // Never returns, never panics, until shutdown.
        let fanout = std::sync::Arc::new(super::Fanout::new(
            store.clone(),
            std::sync::Arc::new(crate::hooks::Dispatcher::default()),
            None,
            None,
            crate::kinds::Links::new("http://127.0.0.1:1", None),
        ));
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let mut forever = Box::pin(gc_loop(
            store,
            fanout,
            gc::Policy::default(),
            Duration::ZERO,
            shutdown,
        ));
        assert!(
            tokio::time::timeout(Duration::from_millis(300), &mut forever)
                .await
                .is_err()
        );
        assert!(stop.send(true).is_ok());
        assert!(
            tokio::time::timeout(Duration::from_secs(5), forever)
                .await
                .is_ok(),
            "the loop stops on shutdown"
        );
    }
}
