//! The embedded persistent store (redb), for a single proxy instance.
//!
//! One file, `stamp.redb`, in the store directory. redb allows one writer
//! process per file, which is what a single instance needs; a second process
//! pointed at the same directory gets a clear [`StoreError::Open`] instead of
//! silently sharing it. All redb calls block, so each runs on the blocking pool.
//!
//! A failed disk write (a full disk, say) leaves redb refusing everything
//! until the file is reopened. The store reopens it by itself on the next
//! operation (at most every [`REOPEN_EVERY`]), so once space is back it
//! recovers without a restart; until a write succeeds again,
//! [`Store::fault`] reports the failure.

use std::cell::Cell;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};
use tokio::sync::watch;

use crate::{
    now_ms, Changes, Commit, Epoch, HistoryEvent, OverlayOp, Store, StoreError, StoreState,
    StoreUsage, SweepReport, TicketRecord, ViewCount, ViewRecord,
};
use stamp_model::ticket::{set_id, Hash, OverrideSet, Stage, TicketKey};
use stamp_model::views::{PagesSeen, COUNTS_KEPT_MS, RECENT_VIEWS};

/// The file inside the store directory.
pub const FILE_NAME: &str = "stamp.redb";

/// sha256 → module body.
const MODULES: TableDefinition<'static, &[u8], &[u8]> = TableDefinition::new("modules");
/// set id (sha256) → canonical JSON of the override set.
const SETS: TableDefinition<'static, &[u8], &[u8]> = TableDefinition::new("sets");
/// ticket key → JSON [`TicketRecord`].
const TICKETS: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("tickets");
/// (ticket key, sequence) → JSON [`HistoryEvent`]. Keyed rather than one list
/// per ticket so an append does not rewrite the whole history.
const HISTORY: TableDefinition<'static, (&str, u64), &[u8]> = TableDefinition::new("history");
/// [`META_VERSION`] → u64 big-endian, [`META_OVERLAY`] → JSON list of keys,
/// [`META_TRACKED`] → present once every body and set has its bookkeeping.
const META: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("meta");
/// sha256 → (last stored, ms since the epoch; body size in bytes). One row per
/// [`MODULES`] row, written and deleted in the same transactions.
const MODULE_META: TableDefinition<'static, &[u8], (u64, u64)> =
    TableDefinition::new("module_meta");
/// set id → last stored, ms since the epoch. One row per [`SETS`] row.
const SET_META: TableDefinition<'static, &[u8], u64> = TableDefinition::new("set_meta");

/// (ticket, sequence) → a page view (JSON), the last few per ticket.
const VIEWS: TableDefinition<'static, (&str, u64), &[u8]> = TableDefinition::new("views");
/// Revoked credentials: id → until (ms).
const REVOKED: TableDefinition<'static, &str, u64> = TableDefinition::new("revoked");
/// (ticket, minute) → that minute's counts per side (JSON).
const VIEW_COUNTS: TableDefinition<'static, (&str, u64), &[u8]> =
    TableDefinition::new("view_counts");
const META_VERSION: &str = "version";
const META_VIEW_SEQ: &str = "view-seq";
const META_OVERLAY: &str = "overlay";
const META_TRACKED: &str = "gc-tracked";
const META_EPOCH: &str = "epoch";

/// The least time between two attempts to reopen the file after a disk fault.
pub const REOPEN_EVERY: Duration = Duration::from_millis(200);

/// Bounds redb's page cache: the request path works from an in-memory snapshot
/// and its own module cache, so the default (1 GiB) would mostly double-cache.
/// 16 MiB measured no slower than 64 MiB at 10,000 open tickets, with 71 MiB
/// less RSS (`stamp-load scale`, see proxy/README.md).
const CACHE_BYTES: usize = 16 * 1024 * 1024;

pub struct EmbeddedStore {
    db: Arc<Handle>,
    path: PathBuf,
    changes: watch::Sender<u64>,
    epoch: String,
    /// The keys of the last commits ([`Store::changes_since`]). In memory:
    /// this process is the store's only writer, and a reader behind its
    /// start reads the whole state.
    changelog: Arc<Mutex<Changelog>>,
}

/// Which ticket each recent version changed.
#[derive(Debug, Default)]
struct Changelog {
    /// Version → the ticket its commit changed; the last [`CHANGELOG`].
    keys: std::collections::BTreeMap<u64, TicketKey>,
    /// Versions up to here are not all in `keys` (before this process
    /// opened the store, or trimmed).
    floor: u64,
    /// The file's reopen count the entries were recorded under: after a
    /// reopen, versions may have been given again.
    generation: u64,
}

impl Changelog {
    /// Forgets what was recorded under another opening of the file.
    fn follow(&mut self, generation: u64, version: u64) {
        if generation != self.generation {
            self.keys.clear();
            self.floor = version;
            self.generation = generation;
        }
    }

    fn record(&mut self, version: u64, key: TicketKey) {
        self.keys.insert(version, key);
        while self.keys.len() > crate::CHANGELOG {
            if let Some((v, _)) = self.keys.pop_first() {
                self.floor = self.floor.max(v);
            }
        }
    }

    /// The tickets changed after `since` up to `version`, when every one
    /// of those versions is known.
    fn since(&self, since: u64, version: u64) -> Option<Vec<TicketKey>> {
        if since < self.floor || since > version {
            return None;
        }
        if since == version {
            return Some(Vec::new());
        }
        let span = self.keys.range(since + 1..=version);
        if span.clone().count() as u64 != version - since {
            // A commit in between has not recorded its key yet.
            return None;
        }
        let mut keys: Vec<TicketKey> = span.map(|(_, k)| k.clone()).collect();
        keys.sort();
        keys.dedup();
        Some(keys)
    }
}

/// The open database, and what the store knows of disk faults.
struct Handle {
    path: PathBuf,
    /// `None` while a reopen after a fault has not succeeded yet.
    db: RwLock<Option<Arc<Database>>>,
    /// The last disk fault, until a write succeeds again.
    fault: Mutex<Option<String>>,
    /// Whether redb may refuse everything until reopened, and when a reopen
    /// was last tried.
    needs_reopen: Mutex<Option<Instant>>,
    /// Times the file was reopened ([`Store::resyncs`]): what it holds may
    /// not be what this process last wrote (a restored file).
    reopened: std::sync::atomic::AtomicU64,
}

thread_local! {
    /// Set by [`db_err`] when redb reports a disk error, read and reset by
    /// [`Handle::run`] on the same blocking thread.
    static DISK_FAILED: Cell<bool> = const { Cell::new(false) };
    /// Set by [`write`] when a write transaction committed.
    static WROTE: Cell<bool> = const { Cell::new(false) };
}

fn open_database(path: &Path) -> Result<Database, redb::DatabaseError> {
    Database::builder().set_cache_size(CACHE_BYTES).create(path)
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Handle {
    /// Runs `f` against the database (on the calling, blocking thread),
    /// reopening it first when a disk fault left it refusing everything.
    fn run<T>(&self, f: impl FnOnce(&Database) -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.reopen_if_needed();
        let Some(db) = read(&self.db).clone() else {
            return Err(StoreError::Unavailable(format!(
                "the store file {} is being reopened after a disk fault: {}",
                self.path.display(),
                self.fault().unwrap_or_default()
            )));
        };
        DISK_FAILED.with(|c| c.set(false));
        WROTE.with(|c| c.set(false));
        let result = f(&db);
        drop(db);
        if DISK_FAILED.with(|c| c.replace(false)) {
            let reason = match &result {
                Err(e) => e.to_string(),
                Ok(_) => "a disk error".to_string(),
            };
            if self.fault().is_none() {
                log::error!("store {}: disk write failed: {reason}", self.path.display());
            }
            *lock(&self.fault) = Some(reason);
            lock(&self.needs_reopen).get_or_insert_with(|| {
                Instant::now()
                    .checked_sub(REOPEN_EVERY)
                    .unwrap_or_else(Instant::now)
            });
        } else if WROTE.with(|c| c.replace(false)) && lock(&self.fault).take().is_some() {
            log::warn!("store {}: writes work again", self.path.display());
        }
        result
    }

    fn fault(&self) -> Option<String> {
        lock(&self.fault).clone()
    }

    /// Closes and reopens the file after a disk fault, at most every
    /// [`REOPEN_EVERY`]. Operations running meanwhile hold the old handle
    /// and fail; while one still holds the file's lock the open fails and is
    /// tried again on a later operation.
    fn reopen_if_needed(&self) {
        {
            let mut due = lock(&self.needs_reopen);
            match *due {
                Some(last) if last.elapsed() >= REOPEN_EVERY => *due = Some(Instant::now()),
                _ => return,
            }
        }
        let mut slot = self.db.write().unwrap_or_else(|p| p.into_inner());
        let old = slot.take();
        drop(old);
        // `open`, never `create`: a file that vanished is not recreated empty.
        match Database::builder()
            .set_cache_size(CACHE_BYTES)
            .open(&self.path)
        {
            Ok(db) => {
                log::warn!("store {}: reopened after a disk fault", self.path.display());
                *slot = Some(Arc::new(db));
                *lock(&self.needs_reopen) = None;
                self.reopened
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            Err(e) => {
                log::debug!("store {}: cannot reopen yet: {e}", self.path.display());
            }
        }
    }
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens (creating if needed) `dir/stamp.redb`. Blocking; meant for startup.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(FILE_NAME);
        let open_err = |reason: String| StoreError::Open {
            location: path.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(dir)
            .map_err(|e| open_err(format!("cannot create directory {}: {e}", dir.display())))?;
        let db = open_database(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked {
                location: path.display().to_string(),
            },
            other => open_err(other.to_string()),
        })?;

        // Creating every table up front lets readers open them without
        // special-casing a fresh file.
        let init = || -> Result<u64, redb::Error> {
            let txn = db.begin_write()?;
            txn.open_table(MODULES)?;
            txn.open_table(SETS)?;
            txn.open_table(TICKETS)?;
            txn.open_table(HISTORY)?;
            txn.open_table(META)?;
            txn.open_table(MODULE_META)?;
            txn.open_table(SET_META)?;
            txn.commit()?;
            Ok(0)
        };
        init().map_err(|e| open_err(e.to_string()))?;
        let epoch = ensure_epoch(&db).map_err(|e| open_err(e.to_string()))?;
        track_untracked(&db).map_err(|e| open_err(e.to_string()))?;
        let version = {
            let txn = db.begin_read().map_err(|e| open_err(e.to_string()))?;
            let meta = txn.open_table(META).map_err(|e| open_err(e.to_string()))?;
            read_version(&meta).map_err(|e| open_err(e.to_string()))?
        };

        let (changes, _) = watch::channel(version);
        Ok(EmbeddedStore {
            db: Arc::new(Handle {
                path: path.clone(),
                db: RwLock::new(Some(Arc::new(db))),
                fault: Mutex::new(None),
                needs_reopen: Mutex::new(None),
                reopened: Default::default(),
            }),
            path,
            changes,
            epoch,
            changelog: Arc::new(Mutex::new(Changelog {
                keys: Default::default(),
                floor: version,
                generation: 0,
            })),
        })
    }

    /// Runs `f` against the database on the blocking pool.
    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let handle = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || handle.run(f))
            .await
            .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
    }

    /// The changelog, to record a commit `version` made.
    fn changelog(&self, version: u64) -> std::sync::MutexGuard<'_, Changelog> {
        let mut log = self
            .changelog
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        log.follow(self.resyncs(), version);
        log
    }

    /// Publishes `version` unless a later one was already published: two
    /// commits' notifications can race after their transactions are serialised.
    fn notify(&self, version: u64) {
        self.changes.send_if_modified(|current| {
            if version > *current {
                *current = version;
                true
            } else {
                false
            }
        });
    }
}

/// redb's error types all convert into `redb::Error`; this maps them onto the
/// store's vocabulary in one place.
fn db_err(e: impl Into<redb::Error>) -> StoreError {
    match e.into() {
        redb::Error::Corrupted(msg) => StoreError::Corrupt(msg),
        other => {
            if matches!(other, redb::Error::Io(_) | redb::Error::PreviousIo) {
                DISK_FAILED.with(|c| c.set(true));
            }
            StoreError::Unavailable(other.to_string())
        }
    }
}

/// The file's epoch marker, written at its first open.
fn ensure_epoch(db: &Database) -> Result<String, StoreError> {
    {
        let txn = db.begin_read().map_err(db_err)?;
        let meta = txn.open_table(META).map_err(db_err)?;
        if let Some(raw) = meta.get(META_EPOCH).map_err(db_err)? {
            return Ok(decode::<Epoch>("epoch marker", raw.value())?.id);
        }
    }
    let epoch = Epoch::fresh();
    let json = encode("epoch", &epoch)?;
    write(db, |txn| {
        let mut meta = txn.open_table(META).map_err(db_err)?;
        meta.insert(META_EPOCH, json.as_slice()).map_err(db_err)?;
        Ok(())
    })?;
    Ok(epoch.id)
}

pub(super) fn decode<T: serde::de::DeserializeOwned>(
    what: &str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

pub(super) fn encode<T: serde::Serialize>(what: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    // Serialising our own plain structs cannot fail in practice; report rather
    // than panic if it ever does.
    serde_json::to_vec(value).map_err(|e| StoreError::Corrupt(format!("cannot encode {what}: {e}")))
}

fn read_version(meta: &impl ReadableTable<&'static str, &'static [u8]>) -> Result<u64, StoreError> {
    match meta.get(META_VERSION).map_err(db_err)? {
        None => Ok(0),
        Some(guard) => {
            let raw: [u8; 8] = guard.value().try_into().map_err(|_| {
                StoreError::Corrupt(format!(
                    "global version is {} bytes, expected 8",
                    guard.value().len()
                ))
            })?;
            Ok(u64::from_be_bytes(raw))
        }
    }
}

fn read_overlay(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Vec<TicketKey>, StoreError> {
    match meta.get(META_OVERLAY).map_err(db_err)? {
        None => Ok(Vec::new()),
        Some(guard) => decode("overlay", guard.value()),
    }
}

/// Gives every body and set stored by a version without garbage collection
/// its bookkeeping row, marked stored now (so the first sweep after an
/// upgrade spares them for a grace window). Runs once per file.
fn track_untracked(db: &Database) -> Result<(), StoreError> {
    {
        let txn = db.begin_read().map_err(db_err)?;
        let meta = txn.open_table(META).map_err(db_err)?;
        if meta.get(META_TRACKED).map_err(db_err)?.is_some() {
            return Ok(());
        }
    }
    let now = now_ms();
    let txn = db.begin_write().map_err(db_err)?;
    {
        let modules = txn.open_table(MODULES).map_err(db_err)?;
        let mut module_meta = txn.open_table(MODULE_META).map_err(db_err)?;
        for entry in modules.iter().map_err(db_err)? {
            let (hash, body) = entry.map_err(db_err)?;
            if module_meta.get(hash.value()).map_err(db_err)?.is_none() {
                let size = body.value().len() as u64;
                module_meta
                    .insert(hash.value(), (now, size))
                    .map_err(db_err)?;
            }
        }
        let sets = txn.open_table(SETS).map_err(db_err)?;
        let mut set_meta = txn.open_table(SET_META).map_err(db_err)?;
        for entry in sets.iter().map_err(db_err)? {
            let (id, _) = entry.map_err(db_err)?;
            if set_meta.get(id.value()).map_err(db_err)?.is_none() {
                set_meta.insert(id.value(), now).map_err(db_err)?;
            }
        }
        let mut meta = txn.open_table(META).map_err(db_err)?;
        meta.insert(META_TRACKED, [1u8].as_slice())
            .map_err(db_err)?;
    }
    txn.commit().map_err(db_err)
}

/// Bumps the global version inside `txn`; returns the new one.
fn bump_version(txn: &WriteTransaction) -> Result<u64, StoreError> {
    let mut meta = txn.open_table(META).map_err(db_err)?;
    let version = read_version(&meta)? + 1;
    meta.insert(META_VERSION, version.to_be_bytes().as_slice())
        .map_err(db_err)?;
    Ok(version)
}

/// Appends one encoded event to `key`'s history inside `txn`.
fn append_history(txn: &WriteTransaction, key: &str, event: &[u8]) -> Result<(), StoreError> {
    let mut history = txn.open_table(HISTORY).map_err(db_err)?;
    let next = match history
        .range((key, 0u64)..=(key, u64::MAX))
        .map_err(db_err)?
        .next_back()
    {
        Some(last) => last.map_err(db_err)?.0.value().1 + 1,
        None => 0,
    };
    history.insert((key, next), event).map_err(db_err)?;
    Ok(())
}

/// Runs `work` in a write transaction: commits on `Ok`, aborts explicitly on
/// `Err` so nothing of a refused change can land, whatever redb does with a
/// dropped transaction.
fn write<T>(
    db: &Database,
    work: impl FnOnce(&WriteTransaction) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let txn = db.begin_write().map_err(db_err)?;
    match work(&txn) {
        Ok(value) => {
            txn.commit().map_err(db_err)?;
            WROTE.with(|c| c.set(true));
            Ok(value)
        }
        Err(e) => {
            txn.abort().map_err(db_err)?;
            Err(e)
        }
    }
}

/// "Stored at `now`" for one body or set: the later of the recorded time and
/// `now`, so a clock stepping back never shortens a grace window.
fn later(recorded: Option<u64>, now: u64) -> u64 {
    recorded.map_or(now, |t| t.max(now))
}

/// A module body read back must still hash to its key; anything else means
/// the file was damaged and serving it would break the page integrity check.
pub(super) fn checked_module(hash: &Hash, body: &[u8]) -> Result<Bytes, StoreError> {
    if Hash::of(body) != *hash {
        return Err(StoreError::Corrupt(format!(
            "module {hash} does not match its content hash"
        )));
    }
    Ok(Bytes::copy_from_slice(body))
}

pub(super) fn checked_set(id: &Hash, json: &[u8]) -> Result<OverrideSet, StoreError> {
    let set: OverrideSet = decode(&format!("override set {id}"), json)?;
    if set_id(&set) != *id {
        return Err(StoreError::Corrupt(format!(
            "override set {id} does not match its content hash"
        )));
    }
    Ok(set)
}

#[async_trait]
impl Store for EmbeddedStore {
    fn describe(&self) -> String {
        format!("embedded {}", self.path.display())
    }

    async fn put_module(&self, body: Bytes) -> Result<Hash, StoreError> {
        let hash = Hash::of(&body);
        self.blocking(move |db| {
            // Always a write, even for a known body: the refreshed time is
            // what keeps a sweep from deleting it before the upload commits.
            write(db, |txn| {
                let key = hash.bytes().as_slice();
                let mut modules = txn.open_table(MODULES).map_err(db_err)?;
                if modules.get(key).map_err(db_err)?.is_none() {
                    modules.insert(key, body.as_ref()).map_err(db_err)?;
                }
                let mut meta = txn.open_table(MODULE_META).map_err(db_err)?;
                let recorded = meta.get(key).map_err(db_err)?.map(|g| g.value().0);
                meta.insert(key, (later(recorded, now_ms()), body.len() as u64))
                    .map_err(db_err)?;
                Ok(hash)
            })
        })
        .await
    }

    async fn get_module(&self, hash: &Hash) -> Result<Option<Bytes>, StoreError> {
        let hash = *hash;
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(db_err)?;
            let modules = txn.open_table(MODULES).map_err(db_err)?;
            let found = modules.get(hash.bytes().as_slice()).map_err(db_err)?;
            found.map(|g| checked_module(&hash, g.value())).transpose()
        })
        .await
    }

    async fn missing_modules(&self, hashes: &[Hash]) -> Result<Vec<Hash>, StoreError> {
        let hashes = hashes.to_vec();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(db_err)?;
            let modules = txn.open_table(MODULES).map_err(db_err)?;
            let mut missing: Vec<Hash> = Vec::new();
            for hash in hashes {
                if missing.contains(&hash) {
                    continue;
                }
                if modules
                    .get(hash.bytes().as_slice())
                    .map_err(db_err)?
                    .is_none()
                {
                    missing.push(hash);
                }
            }
            Ok(missing)
        })
        .await
    }

    async fn claim_module(&self, hash: &Hash) -> Result<Option<u64>, StoreError> {
        let hash = *hash;
        self.blocking(move |db| {
            write(db, |txn| {
                let key = hash.bytes().as_slice();
                let mut meta = txn.open_table(MODULE_META).map_err(db_err)?;
                let recorded = meta.get(key).map_err(db_err)?.map(|g| g.value());
                let Some((at, size)) = recorded else {
                    return Ok(None);
                };
                meta.insert(key, (later(Some(at), now_ms()), size))
                    .map_err(db_err)?;
                Ok(Some(size))
            })
        })
        .await
    }

    async fn put_set(&self, set: &OverrideSet) -> Result<Hash, StoreError> {
        // set_id hashes exactly this serialisation, so the stored bytes are
        // the content the id addresses.
        let json = encode("override set", set)?;
        let id = Hash::of(&json);
        debug_assert_eq!(id, set_id(set));
        self.blocking(move |db| {
            write(db, |txn| {
                let key = id.bytes().as_slice();
                let mut sets = txn.open_table(SETS).map_err(db_err)?;
                if sets.get(key).map_err(db_err)?.is_none() {
                    sets.insert(key, json.as_slice()).map_err(db_err)?;
                }
                let mut meta = txn.open_table(SET_META).map_err(db_err)?;
                let recorded = meta.get(key).map_err(db_err)?.map(|g| g.value());
                meta.insert(key, later(recorded, now_ms()))
                    .map_err(db_err)?;
                Ok(id)
            })
        })
        .await
    }

    async fn get_set(&self, id: &Hash) -> Result<Option<OverrideSet>, StoreError> {
        let id = *id;
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(db_err)?;
            let sets = txn.open_table(SETS).map_err(db_err)?;
            let found = sets.get(id.bytes().as_slice()).map_err(db_err)?;
            found.map(|g| checked_set(&id, g.value())).transpose()
        })
        .await
    }

    async fn get_ticket(&self, key: &TicketKey) -> Result<Option<TicketRecord>, StoreError> {
        let key = key.clone();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(db_err)?;
            let tickets = txn.open_table(TICKETS).map_err(db_err)?;
            let found = tickets.get(key.as_str()).map_err(db_err)?;
            found
                .map(|g| decode(&format!("ticket {key}"), g.value()))
                .transpose()
        })
        .await
    }

    async fn history(&self, key: &TicketKey) -> Result<Vec<HistoryEvent>, StoreError> {
        let key = key.clone();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(db_err)?;
            let history = txn.open_table(HISTORY).map_err(db_err)?;
            let mut events = Vec::new();
            for entry in history
                .range((key.as_str(), 0u64)..=(key.as_str(), u64::MAX))
                .map_err(db_err)?
            {
                let (_, value) = entry.map_err(db_err)?;
                events.push(decode(&format!("history of {key}"), value.value())?);
            }
            Ok(events)
        })
        .await
    }

    async fn commit(&self, commit: Commit) -> Result<u64, StoreError> {
        let changed = commit.ticket.key.clone();
        let version = self
            .blocking(move |db| {
                let record = encode("ticket", &commit.ticket)?;
                let event = commit
                    .event
                    .as_ref()
                    .map(|e| encode("history event", e))
                    .transpose()?;
                let key = commit.ticket.key.as_str();

                write(db, |txn| {
                    let mut tickets = txn.open_table(TICKETS).map_err(db_err)?;
                    let found = match tickets.get(key).map_err(db_err)? {
                        Some(g) => Some(
                            decode::<TicketRecord>(&format!("ticket {key}"), g.value())?.version,
                        ),
                        None => None,
                    };
                    let wanted = commit.expected_version.unwrap_or(0) + 1;
                    if found != commit.expected_version || commit.ticket.version != wanted {
                        return Err(StoreError::Conflict {
                            key: commit.ticket.key.clone(),
                            expected: commit.expected_version,
                            found,
                        });
                    }
                    tickets.insert(key, record.as_slice()).map_err(db_err)?;

                    if commit.overlay != OverlayOp::Keep {
                        let mut meta = txn.open_table(META).map_err(db_err)?;
                        let mut overlay = read_overlay(&meta)?;
                        overlay.retain(|k| k != &commit.ticket.key);
                        if commit.overlay == OverlayOp::Append {
                            overlay.push(commit.ticket.key.clone());
                        }
                        let json = encode("overlay", &overlay)?;
                        meta.insert(META_OVERLAY, json.as_slice()).map_err(db_err)?;
                    }
                    let version = bump_version(txn)?;
                    if let Some(event) = &event {
                        append_history(txn, key, event)?;
                    }
                    Ok(version)
                })
            })
            .await?;
        self.changelog(version).record(version, changed);
        self.notify(version);
        Ok(version)
    }

    async fn state(&self) -> Result<StoreState, StoreError> {
        self.blocking(|db| {
            let txn = db.begin_read().map_err(db_err)?;
            let meta = txn.open_table(META).map_err(db_err)?;
            let tickets_table = txn.open_table(TICKETS).map_err(db_err)?;
            let mut tickets = Vec::new();
            for entry in tickets_table.iter().map_err(db_err)? {
                let (key, value) = entry.map_err(db_err)?;
                tickets.push(decode(&format!("ticket {}", key.value()), value.value())?);
            }
            Ok(StoreState {
                version: read_version(&meta)?,
                tickets,
                overlay: read_overlay(&meta)?,
            })
        })
        .await
    }

    async fn version(&self) -> Result<u64, StoreError> {
        self.blocking(|db| {
            let txn = db.begin_read().map_err(db_err)?;
            let meta = txn.open_table(META).map_err(db_err)?;
            read_version(&meta)
        })
        .await
    }

    async fn changes_since(&self, since: u64) -> Result<Option<Changes>, StoreError> {
        let changelog = Arc::clone(&self.changelog);
        let generation = self.resyncs();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(db_err)?;
            let meta = txn.open_table(META).map_err(db_err)?;
            let version = read_version(&meta)?;
            let keys = {
                let mut log = changelog
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                log.follow(generation, version);
                log.since(since, version)
            };
            let Some(keys) = keys else {
                return Ok(None);
            };
            let table = txn.open_table(TICKETS).map_err(db_err)?;
            let mut changes = Changes {
                version,
                tickets: Vec::with_capacity(keys.len()),
                removed: Vec::new(),
                overlay: read_overlay(&meta)?,
            };
            for key in keys {
                match table.get(key.as_str()).map_err(db_err)? {
                    Some(g) => changes
                        .tickets
                        .push(decode(&format!("ticket {key}"), g.value())?),
                    None => changes.removed.push(key),
                }
            }
            Ok(Some(changes))
        })
        .await
    }

    async fn usage(&self) -> Result<StoreUsage, StoreError> {
        self.blocking(|db| {
            let txn = db.begin_read().map_err(db_err)?;
            let mut usage = StoreUsage::default();
            let module_meta = txn.open_table(MODULE_META).map_err(db_err)?;
            for entry in module_meta.iter().map_err(db_err)? {
                let (_, value) = entry.map_err(db_err)?;
                usage.modules += 1;
                usage.module_bytes += value.value().1;
            }
            usage.sets = txn
                .open_table(SET_META)
                .map_err(db_err)?
                .len()
                .map_err(db_err)?;
            let tickets = txn.open_table(TICKETS).map_err(db_err)?;
            for entry in tickets.iter().map_err(db_err)? {
                let (key, value) = entry.map_err(db_err)?;
                let t: TicketRecord = decode(&format!("ticket {}", key.value()), value.value())?;
                usage.tickets += 1;
                usage.closed_tickets += u64::from(t.stage == Stage::Closed);
            }
            Ok(usage)
        })
        .await
    }

    async fn sweep(&self, keep_after_ms: u64) -> Result<SweepReport, StoreError> {
        // One write transaction: no upload or commit can interleave.
        self.blocking(move |db| write(db, |txn| sweep_in(txn, keep_after_ms)))
            .await
    }

    async fn purge_ticket(
        &self,
        key: &TicketKey,
        expected_version: u64,
        summary: HistoryEvent,
    ) -> Result<bool, StoreError> {
        let key = key.clone();
        let changed = key.clone();
        let event = encode("history event", &summary)?;
        let purged = self
            .blocking(move |db| {
                write(db, |txn| {
                    let k = key.as_str();
                    let mut tickets = txn.open_table(TICKETS).map_err(db_err)?;
                    let current: Option<TicketRecord> = tickets
                        .get(k)
                        .map_err(db_err)?
                        .map(|g| decode(&format!("ticket {k}"), g.value()))
                        .transpose()?;
                    match current {
                        Some(t) if t.stage == Stage::Closed && t.version == expected_version => {}
                        _ => return Ok(None),
                    }
                    tickets.remove(k).map_err(db_err)?;
                    // The workflow never closes a released ticket; should one
                    // be listed anyway, it must not outlive its record there.
                    let mut meta = txn.open_table(META).map_err(db_err)?;
                    let mut overlay = read_overlay(&meta)?;
                    if overlay.contains(&key) {
                        overlay.retain(|o| o != &key);
                        let json = encode("overlay", &overlay)?;
                        meta.insert(META_OVERLAY, json.as_slice()).map_err(db_err)?;
                    }
                    drop(meta);
                    let version = bump_version(txn)?;
                    append_history(txn, k, &event)?;
                    Ok(Some(version))
                })
            })
            .await?;
        match purged {
            Some(version) => {
                self.changelog(version).record(version, changed);
                self.notify(version);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn resyncs(&self) -> u64 {
        self.db.reopened.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn epoch(&self) -> Option<String> {
        Some(self.epoch.clone())
    }

    /// The file is held open, so it cannot lose its state under this
    /// process: there is nothing to adopt.
    async fn record_views(&self, views: &[ViewRecord]) -> Result<(), StoreError> {
        if views.is_empty() {
            return Ok(());
        }
        let views = views.to_vec();
        self.blocking(move |db| {
            write(db, |txn| {
                let mut meta = txn.open_table(META).map_err(db_err)?;
                let mut seq = match meta.get(META_VIEW_SEQ).map_err(db_err)? {
                    Some(g) => decode::<u64>("view sequence", g.value())?,
                    None => 0,
                };
                let mut table = txn.open_table(VIEWS).map_err(db_err)?;
                let mut counts = txn.open_table(VIEW_COUNTS).map_err(db_err)?;
                for v in &views {
                    seq += 1;
                    let key = v.ticket.as_str();
                    let json = encode("page view", v)?;
                    table.insert((key, seq), json.as_slice()).map_err(db_err)?;
                    // The oldest beyond the last few go.
                    let kept: Vec<u64> = table
                        .range((key, 0)..=(key, u64::MAX))
                        .map_err(db_err)?
                        .map(|e| e.map(|(k, _)| k.value().1).map_err(db_err))
                        .collect::<Result<_, _>>()?;
                    for old in kept.iter().take(kept.len().saturating_sub(RECENT_VIEWS)) {
                        table.remove((key, *old)).map_err(db_err)?;
                    }
                    add_to_minute(&mut counts, key, ViewCount::of(v))?;
                }
                let json = encode("view sequence", &seq)?;
                meta.insert(META_VIEW_SEQ, json.as_slice())
                    .map_err(db_err)?;
                Ok(())
            })
        })
        .await
    }

    async fn record_seen(&self, seen: &[PagesSeen]) -> Result<(), StoreError> {
        if seen.is_empty() {
            return Ok(());
        }
        let seen = seen.to_vec();
        self.blocking(move |db| {
            write(db, |txn| {
                let mut counts = txn.open_table(VIEW_COUNTS).map_err(db_err)?;
                for p in &seen {
                    let add = ViewCount {
                        minute_ms: p.minute_ms - p.minute_ms % 60_000,
                        side: p.side,
                        sent: p.sent,
                        heard: p.heard,
                        ..ViewCount::default()
                    };
                    add_to_minute(&mut counts, p.ticket.as_str(), add)?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn revoke(&self, id: &str, until_ms: u64) -> Result<(), StoreError> {
        let id = id.to_string();
        self.blocking(move |db| {
            write(db, |txn| {
                let mut table = txn.open_table(REVOKED).map_err(db_err)?;
                // The expired ones go as new ones come.
                let now = now_ms();
                let expired: Vec<String> = table
                    .iter()
                    .map_err(db_err)?
                    .filter_map(|e| e.ok())
                    .filter(|(_, until)| until.value() <= now)
                    .map(|(k, _)| k.value().to_string())
                    .collect();
                for k in expired {
                    table.remove(k.as_str()).map_err(db_err)?;
                }
                table.insert(id.as_str(), until_ms).map_err(db_err)?;
                Ok(())
            })
        })
        .await
    }

    async fn revoked(&self, now_ms: u64) -> Result<Vec<String>, StoreError> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(db_err)?;
            let table = match txn.open_table(REVOKED) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(db_err(e)),
            };
            let mut out = Vec::new();
            for entry in table.iter().map_err(db_err)? {
                let (k, until) = entry.map_err(db_err)?;
                if until.value() > now_ms {
                    out.push(k.value().to_string());
                }
            }
            Ok(out)
        })
        .await
    }

    async fn recent_views(&self, key: &TicketKey) -> Result<Vec<ViewRecord>, StoreError> {
        let key = key.clone();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(db_err)?;
            let table = match txn.open_table(VIEWS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(db_err(e)),
            };
            let k = key.as_str();
            let mut out = Vec::new();
            for entry in table.range((k, 0)..=(k, u64::MAX)).map_err(db_err)? {
                let (_, value) = entry.map_err(db_err)?;
                out.push(decode(&format!("page view of {k}"), value.value())?);
            }
            out.reverse();
            Ok(out)
        })
        .await
    }

    async fn view_counts(
        &self,
        key: &TicketKey,
        since_ms: u64,
    ) -> Result<Vec<ViewCount>, StoreError> {
        let key = key.clone();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(db_err)?;
            let table = match txn.open_table(VIEW_COUNTS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(db_err(e)),
            };
            let k = key.as_str();
            let from = since_ms - since_ms % 60_000;
            let mut out = Vec::new();
            for entry in table.range((k, from)..=(k, u64::MAX)).map_err(db_err)? {
                let (_, value) = entry.map_err(db_err)?;
                let per_side: Vec<ViewCount> =
                    decode(&format!("view counts of {k}"), value.value())?;
                out.extend(per_side);
            }
            Ok(out)
        })
        .await
    }

    async fn adopt(&self) -> Result<String, StoreError> {
        Ok(self.epoch.clone())
    }

    fn fault(&self) -> Option<String> {
        self.db.fault()
    }
}

/// Adds to a ticket's counts of one side in one minute, and lets the
/// ticket's counts older than [`COUNTS_KEPT_MS`] go.
fn add_to_minute(
    counts: &mut redb::Table<'_, (&str, u64), &[u8]>,
    key: &str,
    add: ViewCount,
) -> Result<(), StoreError> {
    let minute = add.minute_ms;
    let mut per_side: Vec<ViewCount> = match counts.get((key, minute)).map_err(db_err)? {
        Some(g) => decode("view counts", g.value())?,
        None => Vec::new(),
    };
    match per_side.iter_mut().find(|c| c.side == add.side) {
        Some(c) => c.add(&add),
        None => per_side.push(add),
    }
    let json = encode("view counts", &per_side)?;
    counts
        .insert((key, minute), json.as_slice())
        .map_err(db_err)?;
    let cutoff = now_ms().saturating_sub(COUNTS_KEPT_MS);
    let stale: Vec<u64> = counts
        .range((key, 0)..(key, cutoff))
        .map_err(db_err)?
        .map(|e| e.map(|(k, _)| k.value().1).map_err(db_err))
        .collect::<Result<_, _>>()?;
    for m in stale {
        counts.remove((key, m)).map_err(db_err)?;
    }
    Ok(())
}

/// A 32-byte table key (a body or set hash).
fn hash_key(raw: &[u8], what: &str) -> Result<[u8; 32], StoreError> {
    raw.try_into()
        .map_err(|_| StoreError::Corrupt(format!("{what} key is {} bytes, expected 32", raw.len())))
}

/// Every sha256 as the store writes it (64 lower-case hex digits) anywhere
/// in `value`: see [`Store::sweep`]. The Redis sweep script matches the same.
fn collect_hashes(value: &serde_json::Value, into: &mut HashSet<[u8; 32]>) {
    match value {
        serde_json::Value::String(s) => {
            let lower_hex = s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            if let Some(h) = Hash::parse(s).filter(|_| lower_hex) {
                into.insert(*h.bytes());
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_hashes(v, into)),
        serde_json::Value::Object(fields) => fields.values().for_each(|v| collect_hashes(v, into)),
        _ => {}
    }
}

/// [`Store::sweep`] inside one write transaction.
fn sweep_in(txn: &WriteTransaction, keep_after: u64) -> Result<SweepReport, StoreError> {
    // What the tickets reference, read generically so that a set-id field
    // added to `TicketRecord` later is covered without touching this.
    let mut live: HashSet<[u8; 32]> = HashSet::new();
    {
        let tickets = txn.open_table(TICKETS).map_err(db_err)?;
        for entry in tickets.iter().map_err(db_err)? {
            let (key, value) = entry.map_err(db_err)?;
            let record: serde_json::Value =
                decode(&format!("ticket {}", key.value()), value.value())?;
            collect_hashes(&record, &mut live);
        }
    }

    let mut report = SweepReport::default();
    let mut sets = txn.open_table(SETS).map_err(db_err)?;
    let mut set_meta = txn.open_table(SET_META).map_err(db_err)?;
    // Sets that stay: the live ones and the recently stored ones (an upload
    // between its put_set and its commit).
    let mut kept = live.clone();
    let mut doomed = Vec::new();
    for entry in set_meta.iter().map_err(db_err)? {
        let (id, at) = entry.map_err(db_err)?;
        let id = hash_key(id.value(), "override set")?;
        if live.contains(&id) {
            continue;
        }
        if at.value() >= keep_after {
            kept.insert(id);
        } else {
            doomed.push(id);
        }
    }
    // Every body a kept set references stays, whatever its age (and a hash
    // a ticket holds directly, too).
    let mut wanted = live.clone();
    for id in &kept {
        if let Some(json) = sets.get(id.as_slice()).map_err(db_err)? {
            let set: serde_json::Value =
                decode(&format!("override set {}", hex::encode(id)), json.value())?;
            collect_hashes(&set, &mut wanted);
        }
    }
    for id in doomed {
        if sets.remove(id.as_slice()).map_err(db_err)?.is_some() {
            report.sets_deleted += 1;
        }
        set_meta.remove(id.as_slice()).map_err(db_err)?;
    }

    let mut modules = txn.open_table(MODULES).map_err(db_err)?;
    let mut module_meta = txn.open_table(MODULE_META).map_err(db_err)?;
    let mut doomed = Vec::new();
    for entry in module_meta.iter().map_err(db_err)? {
        let (hash, value) = entry.map_err(db_err)?;
        let hash = hash_key(hash.value(), "module")?;
        let (at, size) = value.value();
        if at < keep_after && !wanted.contains(&hash) {
            doomed.push((hash, size));
        }
    }
    for (hash, size) in doomed {
        if modules.remove(hash.as_slice()).map_err(db_err)?.is_some() {
            report.modules_deleted += 1;
            report.module_bytes_freed += size;
        }
        module_meta.remove(hash.as_slice()).map_err(db_err)?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_changelog_answers_only_what_it_covers() {
        let k =
            |n: u64| TicketKey::parse(&format!("CL-{}", n % 7)).unwrap_or_else(|e| panic!("{e}"));
        let mut log = Changelog {
            keys: Default::default(),
            floor: 10,
            generation: 0,
        };
        // Before the store was opened: unknown.
        assert_eq!(log.since(9, 10), None);
        assert_eq!(log.since(10, 10), Some(vec![]));
        log.record(11, k(1));
        log.record(13, k(3));
        // 12 committed but not recorded yet: not covered.
        assert_eq!(log.since(10, 13), None);
        log.record(12, k(1));
        assert_eq!(log.since(10, 13), Some(vec![k(1), k(3)]));
        assert_eq!(log.since(12, 13), Some(vec![k(3)]));
        // Ahead of the store (it was replaced): unknown.
        assert_eq!(log.since(14, 13), None);
        assert_eq!(log.since(u64::MAX, 13), None);
        // Trimmed to the last CHANGELOG versions.
        for v in 14..14 + crate::CHANGELOG as u64 {
            log.record(v, k(v));
        }
        let top = 13 + crate::CHANGELOG as u64;
        assert_eq!(log.keys.len(), crate::CHANGELOG);
        assert_eq!(log.since(12, top), None);
        assert!(log.since(13, top).is_some());
        assert_eq!(log.since(top - 1, top), Some(vec![k(top)]));
        // The file was reopened (a restored file may give versions again):
        // nothing recorded before is believed.
        log.follow(1, 20);
        assert_eq!(log.since(top - 1, top), None);
        assert_eq!(log.since(19, 20), None);
        log.record(21, k(21));
        assert_eq!(log.since(20, 21), Some(vec![k(21)]));
    }

    #[test]
    fn a_second_open_of_the_same_directory_is_refused_with_the_path() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let _first = EmbeddedStore::open(dir.path())?;
        match EmbeddedStore::open(dir.path()) {
            Err(e @ StoreError::Locked { .. }) => {
                let message = e.to_string();
                assert!(message.contains(FILE_NAME), "{message}");
                assert!(message.contains("holds its lock"), "{message}");
            }
            other => panic!("second open: {other:?}"),
        }
        Ok(())
    }

    #[tokio::test]
    async fn bodies_and_sets_from_before_gc_are_tracked_at_open() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let body = b"export const old = 1;\n";
        let set = OverrideSet::new();
        let json = encode("override set", &set)?;
        // A file as the version without garbage collection wrote it.
        {
            let db = Database::create(dir.path().join(FILE_NAME)).map_err(db_err)?;
            let txn = db.begin_write().map_err(db_err)?;
            {
                let mut modules = txn.open_table(MODULES).map_err(db_err)?;
                modules
                    .insert(Hash::of(body).bytes().as_slice(), body.as_slice())
                    .map_err(db_err)?;
                let mut sets = txn.open_table(SETS).map_err(db_err)?;
                sets.insert(set_id(&set).bytes().as_slice(), json.as_slice())
                    .map_err(db_err)?;
            }
            txn.commit().map_err(db_err)?;
        }
        let before_open = now_ms();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let store = EmbeddedStore::open(dir.path())?;
        let usage = store.usage().await?;
        assert_eq!((usage.modules, usage.module_bytes, usage.sets), (1, 22, 1));
        // Marked stored at open: spared by a sweep within the grace window…
        assert_eq!(store.sweep(before_open).await?, SweepReport::default());
        // …and collected once it is over (nothing references them).
        std::thread::sleep(std::time::Duration::from_millis(5));
        let report = store.sweep(now_ms()).await?;
        assert_eq!(
            (
                report.modules_deleted,
                report.module_bytes_freed,
                report.sets_deleted
            ),
            (1, 22, 1)
        );
        assert_eq!(store.usage().await?, StoreUsage::default());
        Ok(())
    }

    #[test]
    fn an_unusable_directory_is_an_open_error() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").map_err(|e| StoreError::Unavailable(e.to_string()))?;
        assert!(matches!(
            EmbeddedStore::open(&file),
            Err(StoreError::Open { .. })
        ));
        Ok(())
    }
}
