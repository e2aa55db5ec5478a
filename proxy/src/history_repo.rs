//! The production history repository: every change of the production overlay
//! is committed (git2) as an import-map JSON file, with a message naming the
//! ticket and the actor, so ops can `git log -p` what production served and
//! when. Optional (`history_repo` in the config).

use std::path::{Path, PathBuf};

use crate::store::SharedStore;
use crate::ticket::{OverrideSet, Stage};

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
    pub fn open(path: &Path) -> Result<HistoryRepo, String> {
        std::fs::create_dir_all(path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        match git2::Repository::open(path) {
            Ok(_) => {}
            Err(_) => {
                git2::Repository::init(path).map_err(|e| {
                    format!("cannot create a git repository in {}: {e}", path.display())
                })?;
            }
        }
        Ok(HistoryRepo {
            path: path.to_path_buf(),
            lock: tokio::sync::Mutex::new(()),
        })
    }

    /// Writes the current production overlay and commits it if it changed.
    /// `what` is the change ("TKT-1 released to prod"), `actor` who made it.
    pub async fn record(&self, store: &SharedStore, what: &str, actor: &str) -> Result<(), String> {
        let _guard = self.lock.lock().await;
        // Read the state under the lock: the file always shows the overlay as
        // it stands when this commit is made.
        let state = store.state().await.map_err(|e| e.to_string())?;
        let mut overlay = OverrideSet::new();
        let mut released = Vec::new();
        for key in &state.overlay {
            let Some(t) = state.tickets.iter().find(|t| &t.key == key) else {
                continue;
            };
            let Some(prod) = t.prod.filter(|_| t.stage == Stage::Prod) else {
                continue;
            };
            let set = store
                .get_set(&prod)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("override set {prod} is missing"))?;
            overlay.extend(set);
            released.push(key.to_string());
        }
        let imports: serde_json::Map<String, serde_json::Value> = overlay
            .iter()
            .map(|(spec, m)| (spec.clone(), serde_json::json!(m.url())))
            .collect();
        let doc = serde_json::json!({ "imports": imports, "released": released });
        let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())? + "\n";
        let message = format!(
            "{what} by {actor}\n\nReleased tickets, in promotion order: {}\n",
            if released.is_empty() {
                "none".to_string()
            } else {
                released.join(", ")
            }
        );
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || commit_file(&path, &text, &message))
            .await
            .map_err(|e| e.to_string())?
    }
}

fn commit_file(repo_path: &Path, text: &str, message: &str) -> Result<(), String> {
    let e = |e: git2::Error| format!("history repository {}: {e}", repo_path.display());
    let repo = git2::Repository::open(repo_path).map_err(e)?;
    let file = repo_path.join(FILE);
    if std::fs::read_to_string(&file).ok().as_deref() == Some(text) && repo.head().is_ok() {
        return Ok(()); // nothing changed
    }
    std::fs::write(&file, text).map_err(|err| format!("cannot write {}: {err}", file.display()))?;
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
