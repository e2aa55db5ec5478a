//! Retention and garbage collection of the store.
//!
//! One run ([`run_once`]) purges closed tickets untouched for longer than the
//! retention (their history stays, ending with a `purged` summary), then
//! sweeps the module bodies and override sets nothing refers to any more
//! ([`stamp_store::Store::sweep`]), then reports the store's size in
//! metrics. [`run_forever`] repeats it on a period.
//!
//! Safety against concurrent uploads: an upload stores its body and its new
//! override set before the commit that references them. Every store records
//! when each body and set was last stored (every put refreshes it), and a
//! sweep spares anything stored within [`Policy::grace`], which is far
//! longer than the gap between an upload's puts and its commit. A body that
//! a kept set references is kept too, whatever its age.
//!
//! In a Redis fleet every instance may run the collector: each purge and each
//! sweep is one atomic script, so concurrent runs do not interfere.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{register_int_counter, register_int_gauge, IntCounter, IntGauge};

use stamp_model::ticket::{Stage, TicketKey};
use stamp_store::{
    now_ms, HistoryEvent, SharedStore, StoreError, StoreUsage, SweepReport, TicketRecord,
};

use crate::kinds::{Actor, Change, ChangeKind, Unpublished};

/// Default [`Policy::grace`].
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10 * 60);
/// Default [`Policy::closed_retention`].
pub const DEFAULT_CLOSED_RETENTION: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// The actor recorded on `purged` history events.
pub const ACTOR: &str = "gc";

/// What the collector keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Bodies and sets stored (or re-stored) less than this long ago are
    /// never collected. Must be far longer than an upload takes from storing
    /// its body to committing the ticket, and than the clock skew between
    /// the instances of a fleet.
    pub grace: Duration,
    /// Closed tickets whose last change is older than this are purged.
    pub closed_retention: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            grace: DEFAULT_GRACE,
            closed_retention: DEFAULT_CLOSED_RETENTION,
        }
    }
}

/// What one run did, and the store's size after it.
#[derive(Debug, Default)]
pub struct GcReport {
    /// Closed tickets purged, in key order.
    pub purged: Vec<TicketKey>,
    /// One `Purged` change per purged ticket, for the fan-out.
    pub changes: Vec<Unpublished>,
    pub sweep: SweepReport,
    pub usage: StoreUsage,
}

impl GcReport {
    pub fn freed_anything(&self) -> bool {
        !self.purged.is_empty() || self.sweep.freed_anything()
    }
}

// Registration only fails on a duplicate name, which is a programming error
// caught by the first test that runs the collector (as in `metrics.rs`).
#[allow(clippy::expect_used)]
fn must<T>(r: prometheus::Result<T>) -> T {
    r.expect("metric registration")
}

pub static STORE_MODULES: LazyLock<IntGauge> = LazyLock::new(|| {
    must(register_int_gauge!(
        "stamp_store_modules",
        "Module bodies in the store, as of the last garbage collection"
    ))
});

pub static STORE_MODULE_BYTES: LazyLock<IntGauge> = LazyLock::new(|| {
    must(register_int_gauge!(
        "stamp_store_module_bytes",
        "Total size of the module bodies in the store, as of the last garbage collection"
    ))
});

pub static STORE_TICKETS: LazyLock<IntGauge> = LazyLock::new(|| {
    must(register_int_gauge!(
        "stamp_store_tickets",
        "Tickets in the store (closed ones included), as of the last garbage collection"
    ))
});

pub static FREED_BYTES: LazyLock<IntCounter> = LazyLock::new(|| {
    must(register_int_counter!(
        "stamp_gc_freed_bytes_total",
        "Module body bytes deleted by garbage collection"
    ))
});

/// Registers the collector's metrics (idempotent), so a scrape lists them
/// from the first run on.
pub fn register_metrics() {
    LazyLock::force(&STORE_MODULES);
    LazyLock::force(&STORE_MODULE_BYTES);
    LazyLock::force(&STORE_TICKETS);
    LazyLock::force(&FREED_BYTES);
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// One collection: purge expired closed tickets, sweep, update the metrics.
pub async fn run_once(store: &SharedStore, policy: &Policy) -> Result<GcReport, StoreError> {
    register_metrics();
    let now = now_ms();
    let expired_before = now.saturating_sub(millis(policy.closed_retention));

    let state = store.state().await?;
    let mut purged = Vec::new();
    let mut changes = Vec::new();
    for t in state
        .tickets
        .iter()
        .filter(|t| t.stage == Stage::Closed && t.updated_ms < expired_before)
    {
        let summary = summary(store, t, policy).await?;
        let detail = summary.detail.clone();
        // Refused (false) when the ticket moved since `state()`: re-opened,
        // or already purged by another instance. Either way, not ours.
        if store.purge_ticket(&t.key, t.version, summary).await? {
            purged.push(t.key.clone());
            changes.push(Unpublished::new(Change::new(
                ChangeKind::Purged,
                t.clone(),
                Some(Stage::Closed),
                &Actor::named(ACTOR),
                detail,
            )));
        }
    }

    let sweep = store
        .sweep(now.saturating_sub(millis(policy.grace)))
        .await?;
    FREED_BYTES.inc_by(sweep.module_bytes_freed);

    let usage = store.usage().await?;
    STORE_MODULES.set(gauge(usage.modules));
    STORE_MODULE_BYTES.set(gauge(usage.module_bytes));
    STORE_TICKETS.set(gauge(usage.tickets));
    Ok(GcReport {
        purged,
        changes,
        sweep,
        usage,
    })
}

/// The `purged` event appended to a purged ticket's history.
async fn summary(
    store: &SharedStore,
    t: &TicketRecord,
    policy: &Policy,
) -> Result<HistoryEvent, StoreError> {
    let events = plural(store.history(&t.key).await?.len(), "history event");
    let modules = match store.get_set(&t.dev).await? {
        Some(set) => plural(set.len(), "module"),
        None => "an unknown number of modules".to_string(),
    };
    Ok(HistoryEvent {
        at_ms: now_ms(),
        event: "purged".to_string(),
        from: Some(Stage::Closed),
        to: None,
        actor: ACTOR.to_string(),
        commit: None,
        branch: None,
        role: None,
        source: None,
        detail: Some(format!(
            "closed for longer than {}: purged with {events} and {modules}",
            humantime::format_duration(policy.closed_retention)
        )),
    })
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::workflow::{self, Actor};
    use stamp_model::ticket::Hash;
    use stamp_store::{embedded::EmbeddedStore, Commit, OverlayOp};

    const DAY_MS: u64 = 24 * 60 * 60 * 1000;

    fn io(e: std::io::Error) -> StoreError {
        StoreError::Unavailable(e.to_string())
    }

    /// Uploads one module, then commits the ticket into `stage` with its
    /// last change `age_ms` ago.
    async fn ticket(
        store: &SharedStore,
        key: &str,
        body: &'static str,
        stage: Stage,
        age_ms: u64,
    ) -> Result<TicketKey, Box<dyn std::error::Error>> {
        let key = TicketKey::parse(key)?;
        let actor = Actor::named("ci");
        let t = workflow::upload(
            store,
            &key,
            "/src/a.js",
            "/src/a.js",
            Bytes::from_static(body.as_bytes()),
            &actor,
        )
        .await?
        .open()
        .ticket;
        store
            .commit(Commit {
                ticket: TicketRecord {
                    stage,
                    version: t.version + 1,
                    updated_ms: now_ms() - age_ms,
                    ..t.clone()
                },
                expected_version: Some(t.version),
                overlay: OverlayOp::Keep,
                event: None,
            })
            .await?;
        Ok(key)
    }

    // The only test that runs the collector successfully, so the process-wide
    // gauges it checks are its own.
    #[tokio::test]
    async fn run_once_purges_expired_closed_tickets_then_sweeps(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir().map_err(io)?;
        let store: SharedStore = Arc::new(EmbeddedStore::open(dir.path())?);
        let expired = ticket(
            &store,
            "GC-1",
            "export const a = 1;\n",
            Stage::Closed,
            2 * DAY_MS,
        )
        .await?;
        let recent = ticket(
            &store,
            "GC-2",
            "export const b = 22;\n",
            Stage::Closed,
            60_000,
        )
        .await?;
        let open = ticket(
            &store,
            "GC-3",
            "export const c = 333;\n",
            Stage::Dev,
            2 * DAY_MS,
        )
        .await?;
        let expired_body = Hash::of(b"export const a = 1;\n");
        let history_before = store.history(&expired).await?;
        let version_before = store.version().await?;
        // Grace zero: everything stored before now is fair game.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let policy = Policy {
            grace: Duration::ZERO,
            closed_retention: Duration::from_secs(24 * 60 * 60),
        };

        let mut report = run_once(&store, &policy).await?;
        assert_eq!(report.purged, vec![expired.clone()]);
        // One purge, one change for the fan-out (opened here, as it would).
        let changes: Vec<_> = report.changes.drain(..).map(|c| c.open()).collect();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].kind, ChangeKind::Purged);
        assert_eq!(changes[0].ticket.key, expired);
        assert_eq!(report.sweep.modules_deleted, 1, "{report:?}");
        assert_eq!(report.sweep.module_bytes_freed, 20, "{report:?}");
        assert_eq!(report.sweep.sets_deleted, 1, "{report:?}");
        assert_eq!(
            report.usage,
            StoreUsage {
                modules: 2,
                module_bytes: 21 + 22,
                sets: 2,
                tickets: 2,
                closed_tickets: 1,
            }
        );
        assert_eq!(store.version().await?, version_before + 1);
        assert_eq!(store.get_ticket(&expired).await?, None);
        assert_eq!(store.get_module(&expired_body).await?, None);
        assert!(store.get_ticket(&recent).await?.is_some());
        assert!(store.get_ticket(&open).await?.is_some());

        let history = store.history(&expired).await?;
        assert_eq!(history.len(), history_before.len() + 1);
        assert_eq!(history[..history_before.len()], history_before[..]);
        let last = history.last().ok_or("no history")?;
        assert_eq!(
            (last.event.as_str(), last.actor.as_str()),
            ("purged", ACTOR)
        );
        let detail = last.detail.clone().unwrap_or_default();
        assert!(
            detail.contains("with 1 history event and 1 module"),
            "{detail}"
        );
        assert!(detail.contains("1day"), "{detail}");

        assert_eq!(STORE_MODULES.get(), 2);
        assert_eq!(STORE_MODULE_BYTES.get(), 43);
        assert_eq!(STORE_TICKETS.get(), 2);
        assert!(FREED_BYTES.get() >= 20);
        let scraped = {
            use prometheus::Encoder;
            let mut out = Vec::new();
            prometheus::TextEncoder::new().encode(&prometheus::gather(), &mut out)?;
            String::from_utf8(out)?
        };
        for name in [
            "stamp_store_modules",
            "stamp_store_module_bytes",
            "stamp_store_tickets",
            "stamp_gc_freed_bytes_total",
        ] {
            assert!(scraped.contains(name), "{name} missing from the scrape");
        }

        // A second run finds nothing more to do.
        let again = run_once(&store, &policy).await?;
        assert!(!again.freed_anything(), "{again:?}");
        Ok(())
    }
}
