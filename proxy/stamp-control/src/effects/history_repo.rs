//! The production history repository: every change of the production overlay
//! is committed (git2) as an import-map JSON file, with a message naming the
//! ticket and the actor, so ops can `git log -p` what production served and
//! when. Optional (`history_repo` in the config).

use std::path::{Path, PathBuf};

use stamp_model::ticket::Hash;
use stamp_store::{SharedStore, StoreError};

/// Why the history repository could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history repository {path}: {reason}")]
    Repo { path: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("override set {0} is referenced but missing")]
    MissingSet(Hash),
}

fn repo_err(path: &Path, reason: impl std::fmt::Display) -> HistoryError {
    HistoryError::Repo {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// The file the overlay is written to, at the repository root.
pub const FILE: &str = "production-importmap.json";

/// A git repository the proxy owns (created if missing).
#[derive(Debug)]
pub struct HistoryRepo {
    path: PathBuf,
    /// One writer at a time, so commits land in the order the overlay changed.
    lock: tokio::sync::Mutex<()>,
}

impl HistoryRepo {
    /// Opens the repository at `path`, creating it (and the directory) if missing.
    pub fn open(path: &Path) -> Result<HistoryRepo, HistoryError> {
        std::fs::create_dir_all(path).map_err(|e| repo_err(path, format!("cannot create: {e}")))?;
        if git2::Repository::open(path).is_err() {
            git2::Repository::init(path)
                .map_err(|e| repo_err(path, format!("cannot create a git repository: {e}")))?;
        }
        Ok(HistoryRepo {
            path: path.to_path_buf(),
            lock: tokio::sync::Mutex::new(()),
        })
    }

    /// Writes the current production overlay and commits it if it changed.
    /// `what` is the change ("TKT-1 released to prod"), `actor` who made it.
    pub async fn record(
        &self,
        store: &SharedStore,
        what: &str,
        actor: &str,
        ticket: Option<&stamp_model::TicketKey>,
    ) -> Result<(), HistoryError> {
        let _guard = self.lock.lock().await;
        // Read the state under the lock: the file always shows the overlay as
        // it stands when this commit is made.
        let state = store.state().await?;
        // The same rule the proxy's snapshot applies, so the file equals what
        // production serves (retired overrides left out).
        let mut sets = std::collections::HashMap::new();
        for id in stamp_model::overlay::needed_sets(&state.overlay, &state.tickets) {
            let set = store
                .get_set(&id)
                .await?
                .ok_or(HistoryError::MissingSet(id))?;
            sets.insert(id, set);
        }
        let production =
            stamp_model::overlay::production(&state.overlay, &state.tickets, |id| sets.get(id))
                .map_err(|e| HistoryError::MissingSet(e.0))?;
        let overlay = production.overrides;
        let released: Vec<String> = production.released.iter().map(|k| k.to_string()).collect();
        let urls =
            |set: &stamp_model::ticket::OverrideSet| -> serde_json::Map<String, serde_json::Value> {
                set.iter()
                    .map(|(spec, m)| (spec.clone(), serde_json::json!(m.url())))
                    .collect()
            };
        let imports = urls(&overlay);
        // What every visitor gets, and per ticket rolling out, the share of
        // visitors that also get its modules: each step is a commit.
        let mut doc = serde_json::json!({ "imports": imports, "released": released });
        if !production.rolling.is_empty() {
            let rolling: serde_json::Map<String, serde_json::Value> = production
                .rolling
                .iter()
                .map(|r| {
                    (
                        r.key.to_string(),
                        serde_json::json!({
                            "percent": r.rollout.percent,
                            "paused": r.rollout.paused,
                            "imports": urls(&r.overrides),
                        }),
                    )
                })
                .collect();
            doc["rolling"] = serde_json::Value::Object(rolling);
        }
        let text = serde_json::to_string_pretty(&doc).map_err(|e| repo_err(&self.path, e))? + "\n";
        // The ticket's code: the commit and branch its newest promotion
        // (else upload) was made from, as `stamp` sent them.
        let mut source = String::new();
        if let Some(key) = ticket {
            let history = store.history(key).await?;
            let made = history
                .iter()
                .rev()
                .filter(|e| e.event == "promote" || e.event == "upload")
                .find(|e| e.commit.is_some());
            if let Some(e) = made {
                source = format!(
                    "Ticket: {key}\nCommit: {}\nBranch: {}\n",
                    e.commit.as_deref().unwrap_or("-"),
                    e.branch.as_deref().unwrap_or("-")
                );
            } else {
                source = format!("Ticket: {key}\n");
            }
        }
        let message = format!(
            "{what} by {actor}\n\n{source}Released tickets, in promotion order: {}\n",
            if released.is_empty() {
                "none".to_string()
            } else {
                released.join(", ")
            }
        );
        let path = self.path.clone();
        let at = path.clone();
        tokio::task::spawn_blocking(move || commit_file(&path, &text, &message))
            .await
            .map_err(|e| repo_err(&at, e))?
    }
}

impl HistoryRepo {
    /// The newest `limit` commits, newest first, each with what production
    /// served after it (read from the committed file itself).
    pub async fn log(
        &self,
        limit: usize,
    ) -> Result<Vec<stamp_model::wire::ProductionCommit>, HistoryError> {
        let path = self.path.clone();
        let at = path.clone();
        tokio::task::spawn_blocking(move || read_log(&path, limit))
            .await
            .map_err(|e| repo_err(&at, e))?
    }
}

/// What production served after one commit of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// The full commit id.
    pub id: String,
    /// Released tickets, in promotion order.
    pub released: Vec<stamp_model::TicketKey>,
    /// Specifier → module URL.
    pub imports: std::collections::BTreeMap<String, String>,
}

impl HistoryRepo {
    /// What production served after the commit `id` names: a full id or a
    /// unique prefix of at least 7 hex digits. `Ok(None)` when no commit
    /// matches; an error when the prefix is ambiguous.
    pub async fn served_at(&self, id: &str) -> Result<Option<Served>, HistoryError> {
        let path = self.path.clone();
        let at = path.clone();
        let id = id.to_string();
        tokio::task::spawn_blocking(move || served_at(&path, &id))
            .await
            .map_err(|e| repo_err(&at, e))?
    }
}

fn served_at(repo_path: &Path, prefix: &str) -> Result<Option<Served>, HistoryError> {
    let e = |e: git2::Error| repo_err(repo_path, e);
    let repo = git2::Repository::open(repo_path).map_err(e)?;
    let Ok(object) = repo.revparse_single(prefix) else {
        return Ok(None);
    };
    let Ok(commit) = object.peel_to_commit() else {
        return Ok(None);
    };
    // Only commits of this log (a prefix may name some other object).
    let mut walk = repo.revwalk().map_err(e)?;
    walk.push_head().map_err(e)?;
    if !walk.filter_map(Result::ok).any(|id| id == commit.id()) {
        return Ok(None);
    }
    let doc: serde_json::Value = commit
        .tree()
        .ok()
        .and_then(|t| t.get_path(Path::new(FILE)).ok())
        .and_then(|entry| repo.find_blob(entry.id()).ok())
        .and_then(|blob| serde_json::from_slice(blob.content()).ok())
        .ok_or_else(|| {
            repo_err(
                repo_path,
                format!("commit {} has no readable {FILE}", commit.id()),
            )
        })?;
    let released = doc["released"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|k| {
                    k.as_str()
                        .and_then(|k| stamp_model::TicketKey::parse(k).ok())
                })
                .collect()
        })
        .unwrap_or_default();
    let imports = doc["imports"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default();
    Ok(Some(Served {
        id: commit.id().to_string(),
        released,
        imports,
    }))
}

fn read_log(
    repo_path: &Path,
    limit: usize,
) -> Result<Vec<stamp_model::wire::ProductionCommit>, HistoryError> {
    let e = |e: git2::Error| repo_err(repo_path, e);
    let repo = git2::Repository::open(repo_path).map_err(e)?;
    if repo.head().is_err() {
        return Ok(Vec::new()); // nothing committed yet
    }
    let mut walk = repo.revwalk().map_err(e)?;
    walk.push_head().map_err(e)?;
    let mut out = Vec::new();
    for id in walk.take(limit) {
        let commit = repo.find_commit(id.map_err(e)?).map_err(e)?;
        let doc: serde_json::Value = commit
            .tree()
            .ok()
            .and_then(|t| t.get_path(Path::new(FILE)).ok())
            .and_then(|entry| repo.find_blob(entry.id()).ok())
            .and_then(|blob| serde_json::from_slice(blob.content()).ok())
            .unwrap_or_default();
        out.push(stamp_model::wire::ProductionCommit {
            id: commit.id().to_string(),
            at_ms: u64::try_from(commit.time().seconds()).unwrap_or(0) * 1000,
            summary: commit.summary().ok().flatten().unwrap_or("").to_string(),
            released: doc["released"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|k| k.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            overrides: doc["imports"].as_object().map_or(0, |m| m.len()),
        });
    }
    Ok(out)
}

fn commit_file(repo_path: &Path, text: &str, message: &str) -> Result<(), HistoryError> {
    let e = |e: git2::Error| repo_err(repo_path, e);
    let repo = git2::Repository::open(repo_path).map_err(e)?;
    let file = repo_path.join(FILE);
    if std::fs::read_to_string(&file).ok().as_deref() == Some(text) && repo.head().is_ok() {
        return Ok(()); // nothing changed
    }
    std::fs::write(&file, text)
        .map_err(|err| repo_err(repo_path, format!("cannot write {}: {err}", file.display())))?;
    let mut index = repo.index().map_err(e)?;
    index.add_path(Path::new(FILE)).map_err(e)?;
    index.write().map_err(e)?;
    let tree_id = index.write_tree().map_err(e)?;
    let tree = repo.find_tree(tree_id).map_err(e)?;
    let sig = git2::Signature::now("ticket-stamp", "ticket-stamp@localhost").map_err(e)?;
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
        .map_err(e)?;
    Ok(())
}
