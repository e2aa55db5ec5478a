//! Ticket state and module bodies: one `Store` trait, an embedded persistent
//! implementation (redb) and a Redis implementation for a fleet.
//!
//! Everything the request path needs is read through [`Store::state`] into an
//! in-memory snapshot (the data plane's `snapshot`); the request path never waits on the
//! store to decide or rewrite a page. Writers use [`Store::commit`], which
//! applies a ticket change, an overlay change and a history event atomically,
//! guarded by the ticket's expected version (optimistic concurrency).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::watch;

pub use stamp_model::now_ms;
pub use stamp_model::record::{HistoryEvent, TicketRecord};
use stamp_model::ticket::{Hash, OverrideSet, TicketKey};
pub use stamp_model::views::{PagesSeen, ViewCount, ViewRecord};

pub mod embedded;
pub mod metrics;
pub mod redis;

/// Store failures. `Conflict` is a caller-visible outcome (someone else moved
/// the ticket first); the others are infrastructure problems.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("ticket {key} changed concurrently (expected version {expected:?}, found {found:?})")]
    Conflict {
        key: TicketKey,
        expected: Option<u64>,
        found: Option<u64>,
    },
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
    #[error("cannot open store {location}: {reason}")]
    Open { location: String, reason: String },
    /// The embedded store's file is held by another process (the one an
    /// upgrade takes over from holds it until it has drained).
    #[error(
        "cannot open store {location}: another stamp-proxy process (or another store in this \
         process) holds its lock"
    )]
    Locked { location: String },
    /// The store no longer holds the state this process knew (its epoch
    /// marker is gone or another one replaced it): a Redis restarted without
    /// persistence, flushed, or pointed elsewhere. Writes are refused and the
    /// proxy keeps serving its last good snapshot until the data comes back or
    /// an operator adopts the store as it is now ([`Store::adopt`]).
    #[error(
        "the store lost its state: it no longer holds epoch {known} (found {}); restore its \
         data, or adopt it as it is now (POST /__stamp/api/v1/store/adopt, as an admin)",
        found.as_deref().unwrap_or("none")
    )]
    Lost {
        known: String,
        found: Option<String>,
    },
}

/// How a commit changes the production overlay (the ordered list of released
/// tickets). Applied inside the same transaction as the ticket change, so two
/// concurrent releases never lose one another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverlayOp {
    Keep,
    /// Append the ticket (removing an earlier occurrence first).
    Append,
    /// Remove the ticket if present.
    Remove,
}

/// One atomic change of one ticket.
#[derive(Debug, Clone)]
pub struct Commit {
    /// The new record. Its `version` must be `expected_version + 1` (or 1 for a
    /// new ticket); the store checks and refuses otherwise.
    pub ticket: TicketRecord,
    /// The version the writer read; `None` means "the ticket must not exist yet".
    pub expected_version: Option<u64>,
    pub overlay: OverlayOp,
    pub event: Option<HistoryEvent>,
}

/// What the store holds, for metrics ([`Store::usage`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreUsage {
    /// Module bodies stored.
    pub modules: u64,
    /// Their total size.
    pub module_bytes: u64,
    /// Override sets stored.
    pub sets: u64,
    /// Ticket records, closed ones included.
    pub tickets: u64,
    pub closed_tickets: u64,
}

/// What one [`Store::sweep`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub modules_deleted: u64,
    pub module_bytes_freed: u64,
    pub sets_deleted: u64,
}

impl SweepReport {
    /// Whether the sweep deleted anything.
    pub fn freed_anything(&self) -> bool {
        self.modules_deleted > 0 || self.sets_deleted > 0
    }
}

/// Everything the request path needs, read at one consistent point.
#[derive(Debug, Clone, Default)]
pub struct StoreState {
    /// Global change counter: bumped by every commit.
    pub version: u64,
    pub tickets: Vec<TicketRecord>,
    /// Released tickets in promotion order (later wins on the same module).
    pub overlay: Vec<TicketKey>,
}

/// What changed since a version the reader holds ([`Store::changes_since`]):
/// the current record of every ticket committed or purged since, read
/// together with the overlay and the version they make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes {
    pub version: u64,
    /// Tickets changed since, as they are now.
    pub tickets: Vec<TicketRecord>,
    /// Tickets deleted since ([`Store::purge_ticket`]).
    pub removed: Vec<TicketKey>,
    /// The overlay now, in promotion order.
    pub overlay: Vec<TicketKey>,
}

/// Commits a store remembers the keys of for [`Store::changes_since`]; a
/// reader further behind reads the whole state.
pub const CHANGELOG: usize = 4096;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Human-readable location, without credentials (for logs and /health).
    fn describe(&self) -> String;

    /// Stores a module body under its sha256; idempotent. Every call, also
    /// for a body already stored, records "stored now" for it in the same
    /// atomic step, so a [`Store::sweep`] spares it for its grace window: an
    /// upload stores its body before the commit that references it.
    async fn put_module(&self, body: Bytes) -> Result<Hash, StoreError>;
    async fn get_module(&self, hash: &Hash) -> Result<Option<Bytes>, StoreError>;
    /// The subset of `hashes` the store does not hold.
    async fn missing_modules(&self, hashes: &[Hash]) -> Result<Vec<Hash>, StoreError>;
    /// Records "stored now" for a body the store already holds, like a
    /// [`Store::put_module`] without the bytes, and returns its size; `None`
    /// (and nothing recorded) when it is not stored. For a writer about to
    /// reference a body it did not send itself.
    async fn claim_module(&self, hash: &Hash) -> Result<Option<u64>, StoreError>;

    /// Stores an override set under [`stamp_model::ticket::set_id`]; idempotent.
    /// Records "stored now" for it like [`Store::put_module`] does.
    async fn put_set(&self, set: &OverrideSet) -> Result<Hash, StoreError>;
    async fn get_set(&self, id: &Hash) -> Result<Option<OverrideSet>, StoreError>;

    async fn get_ticket(&self, key: &TicketKey) -> Result<Option<TicketRecord>, StoreError>;
    async fn history(&self, key: &TicketKey) -> Result<Vec<HistoryEvent>, StoreError>;

    /// Applies a commit atomically; returns the new global version.
    async fn commit(&self, commit: Commit) -> Result<u64, StoreError>;

    /// A consistent read of all tickets, the overlay and the global version.
    async fn state(&self) -> Result<StoreState, StoreError>;
    /// The global version alone (cheap; used as a periodic backstop).
    async fn version(&self) -> Result<u64, StoreError>;

    /// What changed since `since`, read consistently, when the store can
    /// tell: every commit since is in its changelog (the last
    /// [`CHANGELOG`]) and nothing else moved the version. `None` means
    /// "read the whole [`Store::state`]": so does a store that cannot tell.
    /// The cost follows the tickets changed, not the tickets held, so a
    /// change is served as fast with 10,000 open tickets as with 100.
    async fn changes_since(&self, since: u64) -> Result<Option<Changes>, StoreError> {
        let _ = since;
        Ok(None)
    }

    /// Counts of what the store holds (a full scan: for periodic metrics).
    async fn usage(&self) -> Result<StoreUsage, StoreError>;

    /// Garbage collection, in one atomic step. A ticket references every
    /// sha256 anywhere in its record — `dev`, `qa`, `prod` and any other
    /// set id field, read generically so new fields are covered; closed
    /// tickets included; released tickets are tickets, so the overlay is
    /// covered. A set survives when a ticket references it or it was last
    /// stored at or after `keep_after_ms`; a body survives when a surviving
    /// set or a ticket references it, or it was last stored at or after
    /// `keep_after_ms`. Everything else is deleted. Passing "now minus a
    /// grace window" longer than any upload's store-then-commit gap makes
    /// the sweep safe against concurrent uploads.
    async fn sweep(&self, keep_after_ms: u64) -> Result<SweepReport, StoreError>;

    /// Atomically deletes a ticket's record if it is closed and still at
    /// `expected_version`, keeping its history and appending `summary` to it;
    /// bumps the global version and notifies like [`Store::commit`], so
    /// snapshots drop the ticket. `Ok(false)`, changing nothing, when the
    /// ticket is absent, not closed or at another version (re-opened or
    /// changed concurrently).
    async fn purge_ticket(
        &self,
        key: &TicketKey,
        expected_version: u64,
        summary: HistoryEvent,
    ) -> Result<bool, StoreError>;

    /// Notified with the global version after every commit made through any
    /// instance sharing this store, and after a lost connection is regained
    /// (with the current version, so the receiver resyncs).
    fn subscribe(&self) -> watch::Receiver<u64>;

    /// How many times this instance lost sight of the store's changes and
    /// picked them up again (a reconnect, a failover). A reader that saw
    /// this move re-reads the whole state rather than asking
    /// [`Store::changes_since`]: a primary that took over may lack a write
    /// it had seen, and have reused its version for another.
    fn resyncs(&self) -> u64 {
        0
    }

    /// The store's epoch as this instance knows it: a random id written once
    /// into an empty store, so that a store that lost its data is told apart
    /// from one that holds no tickets. `None` before the first contact.
    fn epoch(&self) -> Option<String>;

    /// Accepts the store as it is now after [`StoreError::Lost`]: gives it an
    /// epoch if it has none, records that it supersedes the one this
    /// instance knew (so every other instance sharing the store adopts it
    /// too, on its next read) and returns the adopted epoch.
    async fn adopt(&self) -> Result<String, StoreError>;

    /// Keeps page views as browsers reported them: each ticket's last
    /// [`stamp_model::views::RECENT_VIEWS`], and counts per ticket, side
    /// and minute for [`stamp_model::views::COUNTS_KEPT_MS`]. Views are not
    /// part of the versioned state: no version bump, no notification.
    async fn record_views(&self, views: &[ViewRecord]) -> Result<(), StoreError>;

    /// Adds what proxies saw of rollout pages (sampled pages sent, first
    /// reports heard) to the same per-minute counts ([`ViewCount::sent`],
    /// [`ViewCount::heard`]), kept as long. Not versioned state either.
    async fn record_seen(&self, seen: &[PagesSeen]) -> Result<(), StoreError>;

    /// A ticket's last views, newest first.
    async fn recent_views(&self, key: &TicketKey) -> Result<Vec<ViewRecord>, StoreError>;

    /// Revokes a signed credential (a panel session, by its signature)
    /// until `until_ms`, its own expiry: every proxy sharing the store
    /// refuses it from its next refresh. Not versioned state.
    async fn revoke(&self, id: &str, until_ms: u64) -> Result<(), StoreError>;

    /// The credentials revoked and not expired yet.
    async fn revoked(&self, now_ms: u64) -> Result<Vec<String>, StoreError>;

    /// A ticket's counts per side and minute, from `since_ms` on, oldest first.
    async fn view_counts(
        &self,
        key: &TicketKey,
        since_ms: u64,
    ) -> Result<Vec<ViewCount>, StoreError>;

    /// A fault the store knows of although reads may still work, for example
    /// the last write failed on a full disk and none succeeded since. `None`
    /// when healthy.
    fn fault(&self) -> Option<String> {
        None
    }
}

/// The epoch marker's value: its id, and the ids it replaced by operator
/// action ([`Store::adopt`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Epoch {
    pub id: String,
    #[serde(default)]
    pub supersedes: Vec<String>,
}

impl Epoch {
    /// A fresh random epoch.
    pub fn fresh() -> Epoch {
        Epoch {
            id: format!("{:032x}", rand::random::<u128>()),
            supersedes: Vec::new(),
        }
    }

    /// Whether an instance that knew `known` may carry on with this epoch.
    pub fn continues(&self, known: &str) -> bool {
        self.id == known || self.supersedes.iter().any(|s| s == known)
    }
}

pub type SharedStore = Arc<dyn Store>;

/// Opens a store from a `--store` value: a `redis://` / `rediss://` URL, a
/// `redis+sentinel://` URL, or a directory for the embedded store (created
/// if missing).
pub async fn open(location: &str, redis_prefix: &str) -> Result<SharedStore, StoreError> {
    if redis::is_redis_url(location) {
        Ok(Arc::new(
            redis::RedisStore::open(location, redis_prefix).await?,
        ))
    } else {
        Ok(Arc::new(embedded::EmbeddedStore::open(
            std::path::Path::new(location),
        )?))
    }
}
