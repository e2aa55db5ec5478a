//! The embedded persistent store (redb), for a single proxy instance.
//!
//! One file, `stamp.redb`, in the store directory. redb allows one writer
//! process per file, which is what a single instance needs; a second process
//! pointed at the same directory gets a clear [`StoreError::Open`] instead of
//! silently sharing it. All redb calls block, so each runs on the blocking pool.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::watch;

use super::{Commit, HistoryEvent, OverlayOp, Store, StoreError, StoreState, TicketRecord};
use crate::ticket::{set_id, Hash, OverrideSet, TicketKey};

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
/// [`META_VERSION`] → u64 big-endian, [`META_OVERLAY`] → JSON list of keys.
const META: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("meta");

const META_VERSION: &str = "version";
const META_OVERLAY: &str = "overlay";

/// Bounds redb's page cache: the request path works from an in-memory snapshot
/// and its own module cache, so the default (1 GiB) would mostly double-cache.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

pub struct EmbeddedStore {
    db: Arc<Database>,
    path: PathBuf,
    changes: watch::Sender<u64>,
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
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => open_err(
                    "the database is already open (another stamp-proxy process, or another \
                     store in this process, holds its lock)"
                        .to_string(),
                ),
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
            txn.commit()?;
            Ok(0)
        };
        init().map_err(|e| open_err(e.to_string()))?;
        let version = {
            let txn = db.begin_read().map_err(|e| open_err(e.to_string()))?;
            let meta = txn.open_table(META).map_err(|e| open_err(e.to_string()))?;
            read_version(&meta).map_err(|e| open_err(e.to_string()))?
        };

        let (changes, _) = watch::channel(version);
        Ok(EmbeddedStore {
            db: Arc::new(db),
            path,
            changes,
        })
    }

    /// Runs `f` against the database on the blocking pool.
    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
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
        other => StoreError::Unavailable(other.to_string()),
    }
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
            // A read first keeps re-uploads of known bodies off the single
            // writer (and its fsync).
            {
                let txn = db.begin_read().map_err(db_err)?;
                let modules = txn.open_table(MODULES).map_err(db_err)?;
                if modules
                    .get(hash.bytes().as_slice())
                    .map_err(db_err)?
                    .is_some()
                {
                    return Ok(hash);
                }
            }
            let txn = db.begin_write().map_err(db_err)?;
            {
                let mut modules = txn.open_table(MODULES).map_err(db_err)?;
                modules
                    .insert(hash.bytes().as_slice(), body.as_ref())
                    .map_err(db_err)?;
            }
            txn.commit().map_err(db_err)?;
            Ok(hash)
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

    async fn put_set(&self, set: &OverrideSet) -> Result<Hash, StoreError> {
        // set_id hashes exactly this serialisation, so the stored bytes are
        // the content the id addresses.
        let json = encode("override set", set)?;
        let id = Hash::of(&json);
        debug_assert_eq!(id, set_id(set));
        self.blocking(move |db| {
            {
                let txn = db.begin_read().map_err(db_err)?;
                let sets = txn.open_table(SETS).map_err(db_err)?;
                if sets.get(id.bytes().as_slice()).map_err(db_err)?.is_some() {
                    return Ok(id);
                }
            }
            let txn = db.begin_write().map_err(db_err)?;
            {
                let mut sets = txn.open_table(SETS).map_err(db_err)?;
                sets.insert(id.bytes().as_slice(), json.as_slice())
                    .map_err(db_err)?;
            }
            txn.commit().map_err(db_err)?;
            Ok(id)
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
        let version = self
            .blocking(move |db| {
                let record = encode("ticket", &commit.ticket)?;
                let event = commit
                    .event
                    .as_ref()
                    .map(|e| encode("history event", e))
                    .transpose()?;
                let key = commit.ticket.key.as_str();

                let txn = db.begin_write().map_err(db_err)?;
                let outcome = (|| {
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

                    let mut meta = txn.open_table(META).map_err(db_err)?;
                    if commit.overlay != OverlayOp::Keep {
                        let mut overlay = read_overlay(&meta)?;
                        overlay.retain(|k| k != &commit.ticket.key);
                        if commit.overlay == OverlayOp::Append {
                            overlay.push(commit.ticket.key.clone());
                        }
                        let json = encode("overlay", &overlay)?;
                        meta.insert(META_OVERLAY, json.as_slice()).map_err(db_err)?;
                    }
                    let version = read_version(&meta)? + 1;
                    meta.insert(META_VERSION, version.to_be_bytes().as_slice())
                        .map_err(db_err)?;

                    if let Some(event) = &event {
                        let mut history = txn.open_table(HISTORY).map_err(db_err)?;
                        let next = match history
                            .range((key, 0u64)..=(key, u64::MAX))
                            .map_err(db_err)?
                            .next_back()
                        {
                            Some(last) => last.map_err(db_err)?.0.value().1 + 1,
                            None => 0,
                        };
                        history
                            .insert((key, next), event.as_slice())
                            .map_err(db_err)?;
                    }
                    Ok(version)
                })();
                match outcome {
                    Ok(version) => {
                        txn.commit().map_err(db_err)?;
                        Ok(version)
                    }
                    Err(e) => {
                        // Abort explicitly so nothing of a refused commit can
                        // land, whatever redb does with a dropped transaction.
                        txn.abort().map_err(db_err)?;
                        Err(e)
                    }
                }
            })
            .await?;
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

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_open_of_the_same_directory_is_refused_with_the_path() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let _first = EmbeddedStore::open(dir.path())?;
        match EmbeddedStore::open(dir.path()) {
            Err(StoreError::Open { location, reason }) => {
                assert!(location.ends_with(FILE_NAME), "{location}");
                assert!(reason.contains("already open"), "{reason}");
            }
            other => panic!("second open: {other:?}"),
        }
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
