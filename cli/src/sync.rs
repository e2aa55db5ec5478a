//! Makes a ticket's dev overrides match the folder: which files count (not
//! ignored, not dotfiles, different from the main branch's merge base), what
//! the server already has, and the uploads and deletes in between. Only
//! bodies the server lacks are sent; the rest are linked by content hash.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use anyhow::Context;
use sha2::{Digest, Sha256};

use stamp_model::wire::ErrorCode;
use stamp_model::Stage;

use crate::client::{ApiError, Client, GitMeta, Ticket};
use crate::git::{blob_id, Repo};
use crate::output::{Reporter, Summary};
use crate::paths;

/// Which files the sync is about and where production serves them.
#[derive(Debug, Clone)]
pub struct Scope {
    /// The watched folder (absolute, symlinks resolved).
    pub folder: PathBuf,
    /// The URL path the folder is served at (`/src`, or `/`).
    pub url_base: String,
    /// File → bare specifier it is known by (`[specifiers]`).
    pub specifiers: HashMap<PathBuf, String>,
    /// A Rails app's `config/importmap.rb`, whose pins name the files
    /// `[specifiers]` does not (read again for each sync).
    pub rails: Option<crate::rails::Source>,
    /// FILES given on the command line (files or folders); empty = all.
    pub only: Vec<PathBuf>,
    /// Every file, not only those that differ from the main branch.
    pub all: bool,
    /// The folder is a bundler's output (see [`crate::bundle`]).
    pub build: bool,
    /// The printed dev link turns live reload on (`--live`).
    pub live: bool,
    pub main_branch: Option<String>,
}

impl Scope {
    /// The Rails app's pins as its `importmap.rb` says now.
    fn pins(&self) -> Option<crate::rails::Pins> {
        self.rails.as_ref().map(crate::rails::Source::read)
    }

    /// The bare specifiers a file is known by: its `[specifiers]` name,
    /// else every name its Rails app pins it under.
    fn specifiers_of(&self, file: &Path, pins: Option<&crate::rails::Pins>) -> Vec<String> {
        match self.specifiers.get(file) {
            Some(s) => vec![s.clone()],
            None => pins.map(|p| p.names(file)).unwrap_or_default(),
        }
    }

    /// The production URL path of a file under the folder.
    pub fn url_path(&self, file: &Path) -> Option<String> {
        paths::url_of(&self.folder, file, &self.url_base)
    }

    /// The file a production URL path belongs to, if it is under the folder.
    fn file_of(&self, url_path: &str) -> Option<PathBuf> {
        let base = self.url_base.trim_end_matches('/');
        let rel = url_path.strip_prefix(base)?.strip_prefix('/')?;
        Some(paths::join_slash(&self.folder, rel))
    }

    /// A build's entry patterns, read afresh (the bundler rewrites its
    /// manifest with every build).
    fn entries(&self) -> BTreeMap<PathBuf, String> {
        if self.build {
            crate::bundle::entries(&self.folder, &self.url_base).patterns
        } else {
            BTreeMap::new()
        }
    }

    fn selected(&self, file: &Path) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| paths::is_within(o, file))
    }

    /// Whether an override on the server is this folder's to keep in sync.
    fn manages(&self, specifier: &str, path: &str, pins: Option<&crate::rails::Pins>) -> bool {
        let file = self
            .specifiers
            .iter()
            .find_map(|(f, s)| (s == specifier).then(|| f.clone()))
            .or_else(|| {
                self.file_of(path)
                    .filter(|f| self.specifiers_of(f, pins).iter().any(|s| s == specifier))
            })
            .or_else(|| {
                (specifier == path || stamp_model::assets::is_entry_pattern(specifier))
                    .then(|| self.file_of(path))
                    .flatten()
            });
        file.is_some_and(|f| paths::is_within(&self.folder, &f) && self.selected(&f))
    }
}

/// Editors' scratch files, and files no server would take as modules.
fn is_scratch(name: &str) -> bool {
    is_editor_scratch(name) || !name.contains('.')
}

/// Names editors and office tools give their temporary, backup, swap and
/// lock files: vim's `.a.js.swp` and `4913`, emacs' `.#a.js` and `#a.js#`,
/// `a.js~`, JetBrains' `a.js___jb_tmp___`, Office's `~$a.docx`. Never a
/// module, and (unlike a name without a dot) never a folder worth a look.
pub fn is_editor_scratch(name: &str) -> bool {
    name.ends_with('~')
        || name.starts_with('#')
        || name.starts_with(".#")
        || name.starts_with("~$")
        || (!name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()))
        || name.contains("___jb_")
        || [
            ".swp",
            ".swx",
            ".swo",
            ".tmp",
            ".bak",
            ".orig",
            ".part",
            ".crdownload",
        ]
        .iter()
        .any(|s| name.ends_with(s))
}

#[derive(Debug, Clone)]
struct LocalFile {
    size: u64,
    mtime: Option<SystemTime>,
    sha256: String,
    blob: Option<git2::Oid>,
}

/// A module the ticket should have.
#[derive(Debug, Clone)]
struct Want {
    specifier: String,
    bare: bool,
    path: String,
    file: PathBuf,
    size: u64,
    sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Remote {
    path: String,
    hash: String,
}

/// What the server said about a file it would not take.
#[derive(Debug, Clone)]
struct Refused {
    sha256: String,
}

/// Keeps one ticket's dev stage in sync with one folder.
pub struct Syncer {
    pub client: Client,
    pub key: String,
    pub scope: Scope,
    repo: Option<Repo>,
    report: Reporter,
    cache: HashMap<PathBuf, LocalFile>,
    remote: BTreeMap<String, Remote>,
    stage: Option<Stage>,
    version: Option<u64>,
    link: Option<String>,
    refused: HashMap<PathBuf, Refused>,
    /// Files the last scan found but could not read (locked by another
    /// program on Windows, say): kept as they were, never removed.
    unreadable: HashSet<PathBuf>,
    /// The server's state may differ from what we think (someone else
    /// changed the ticket, or the server lost it): fetch it again.
    stale: bool,
    /// A build folder's manifests and page, as the last scan found them
    /// (see [`BuildUnderWay`]).
    markers: Vec<PathBuf>,
    /// Since when a build has looked under way.
    under_way_since: Option<Instant>,
}

impl std::fmt::Debug for Syncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syncer")
            .field("key", &self.key)
            .field("scope", &self.scope)
            .finish()
    }
}

/// The watched folder is not there (deleted, or being rebuilt): nothing is
/// synced, so nothing is removed, until it is back.
#[derive(Debug, thiserror::Error)]
#[error("the folder {} is gone", .0.display())]
pub struct FolderGone(pub PathBuf);

/// A build folder whose manifest or page, there at the last scan, is gone:
/// the bundler has emptied the folder and is writing it anew. Nothing is
/// synced, so nothing is removed from the ticket while the build runs (a
/// sync then would take every file away, and put them back a moment or a
/// minute later). After [`BUILD_WAIT`] without them the folder is taken as
/// it is.
#[derive(Debug, thiserror::Error)]
#[error("a build is under way in {} ({} is gone)", .folder.display(), .missing.display())]
pub struct BuildUnderWay {
    pub folder: PathBuf,
    pub missing: PathBuf,
}

/// How long a build may look under way before the folder is synced as it
/// is (someone removed the manifest for good, or the bundler changed).
pub const BUILD_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// A sync stopped by the server or the network; the caller may retry.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Interrupted(#[source] pub ApiError);

impl Syncer {
    pub fn new(
        client: Client,
        key: String,
        scope: Scope,
        repo: Option<Repo>,
        report: Reporter,
    ) -> Syncer {
        Syncer {
            client,
            key,
            scope,
            repo,
            report,
            cache: HashMap::new(),
            remote: BTreeMap::new(),
            stage: None,
            version: None,
            link: None,
            refused: HashMap::new(),
            unreadable: HashSet::new(),
            stale: true,
            markers: Vec::new(),
            under_way_since: None,
        }
    }

    /// Whether a build folder's build is over (see [`BuildUnderWay`]).
    fn build_finished(&mut self) -> anyhow::Result<()> {
        if !self.scope.build {
            return Ok(());
        }
        let now = crate::bundle::finish_markers(&self.scope.folder);
        let gone = self.markers.iter().find(|m| !now.contains(m)).cloned();
        match gone {
            Some(missing)
                if self
                    .under_way_since
                    .get_or_insert_with(Instant::now)
                    .elapsed()
                    < BUILD_WAIT =>
            {
                Err(BuildUnderWay {
                    folder: self.scope.folder.clone(),
                    missing,
                }
                .into())
            }
            _ => {
                self.under_way_since = None;
                self.markers = now;
                Ok(())
            }
        }
    }

    /// Files of the folder that belong in the ticket (see [`Scope`]), by
    /// specifier. `touched` paths (and everything under them) are re-read
    /// even if their size and time look unchanged.
    fn scan(&mut self, touched: &HashSet<PathBuf>) -> anyhow::Result<BTreeMap<String, Want>> {
        // A folder that is gone (deleted, or a build starting over) would
        // look empty: say so rather than remove every module.
        if !self.scope.folder.is_dir() {
            return Err(FolderGone(self.scope.folder.clone()).into());
        }
        self.build_finished()?;
        self.unreadable.clear();
        // A build folder is git-ignored as a rule: its ignore files say
        // nothing about what the build made.
        let honour_ignores = !self.scope.build;
        let walker = ignore::WalkBuilder::new(&self.scope.folder)
            .hidden(true)
            .git_ignore(honour_ignores)
            .git_exclude(honour_ignores)
            .git_global(honour_ignores)
            .ignore(honour_ignores)
            .parents(honour_ignores)
            .require_git(false)
            .follow_links(false)
            .build();
        let mut seen = HashSet::new();
        let mut files = Vec::new();
        for entry in walker {
            let Ok(entry) = entry else { continue };
            let path = entry.path();
            let is_file = match entry.file_type() {
                Some(t) if t.is_file() => true,
                Some(t) if t.is_symlink() => path.is_file(),
                _ => false,
            };
            let name = entry.file_name().to_string_lossy();
            if !is_file
                || is_scratch(&name)
                || !self.scope.selected(path)
                || (self.scope.build && crate::bundle::is_build_metadata(&self.scope.folder, path))
            {
                continue;
            }
            let Ok(meta) = std::fs::metadata(path) else {
                continue;
            };
            let fresh = self.cache.get(path).is_some_and(|c| {
                c.size == meta.len()
                    && c.mtime == meta.modified().ok()
                    && !path.ancestors().any(|a| touched.contains(a))
            });
            if !fresh {
                let bytes = match std::fs::read(path) {
                    Ok(bytes) => bytes,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(_) => {
                        // There but unreadable for now: what we knew of it
                        // stands, and it is read again soon.
                        self.unreadable.insert(path.to_path_buf());
                        if self.cache.contains_key(path) {
                            seen.insert(path.to_path_buf());
                            files.push(path.to_path_buf());
                        }
                        continue;
                    }
                };
                self.cache.insert(
                    path.to_path_buf(),
                    LocalFile {
                        size: bytes.len() as u64,
                        mtime: meta.modified().ok(),
                        sha256: hex::encode(Sha256::digest(&bytes)),
                        blob: blob_id(&bytes),
                    },
                );
            }
            seen.insert(path.to_path_buf());
            files.push(path.to_path_buf());
        }
        self.cache.retain(|p, _| seen.contains(p));

        let repo = self
            .repo
            .as_ref()
            .filter(|_| !self.scope.all && !self.scope.build);
        let entries = self.scope.entries();
        let base = match repo {
            Some(r) => r.base_tree(self.scope.main_branch.as_deref())?,
            None => None,
        };
        let pins = self.scope.pins();
        let mut wants = BTreeMap::new();
        for file in files {
            let Some(local) = self.cache.get(&file) else {
                continue;
            };
            if let (Some(r), Some((_, tree))) = (repo, &base) {
                if local.blob.is_some() && r.blob_in(tree, &file) == local.blob {
                    continue; // same as on main: no override
                }
            }
            let Some(path) = self.scope.url_path(&file) else {
                continue;
            };
            let named = self.scope.specifiers_of(&file, pins.as_ref());
            let names: Vec<(String, bool)> = match (named.is_empty(), entries.get(&file)) {
                (false, _) => named.into_iter().map(|s| (s, true)).collect(),
                (true, Some(pattern)) => vec![(pattern.clone(), true)],
                (true, None) => vec![(path.clone(), false)],
            };
            for (specifier, bare) in names {
                wants.insert(
                    specifier.clone(),
                    Want {
                        specifier,
                        bare,
                        path: path.clone(),
                        file: file.clone(),
                        size: local.size,
                        sha256: local.sha256.clone(),
                    },
                );
            }
        }
        Ok(wants)
    }

    /// Files the last sync found but could not read: worth another look soon.
    pub fn unreadable(&self) -> &HashSet<PathBuf> {
        &self.unreadable
    }

    /// The FILES that are not part of the sync (ignored, dotfiles, scratch).
    pub fn unselectable_files(&mut self) -> Vec<PathBuf> {
        let only = self.scope.only.clone();
        only.into_iter()
            .filter(|f| f.is_file() && !self.cache.contains_key(f))
            .collect()
    }

    /// What a sync would change, by module, without changing anything.
    pub fn pending(&mut self) -> anyhow::Result<Vec<String>> {
        self.fetch()?;
        let wants = self.scan(&HashSet::new())?;
        let mut out: Vec<String> = wants
            .values()
            .filter(|w| {
                !self
                    .remote
                    .get(&w.specifier)
                    .is_some_and(|r| r.hash == w.sha256 && r.path == w.path)
            })
            .map(|w| format!("{} not uploaded", display_name(&w.specifier, &w.path)))
            .collect();
        let pins = self.scope.pins();
        out.extend(
            self.remote
                .iter()
                .filter(|(spec, r)| {
                    !wants.contains_key(*spec) && self.scope.manages(spec, &r.path, pins.as_ref())
                })
                .map(|(spec, r)| format!("{} not removed", display_name(spec, &r.path))),
        );
        Ok(out)
    }

    fn git_meta(&self) -> GitMeta {
        let head = self.repo.as_ref().and_then(|r| r.head().ok());
        GitMeta {
            commit: head.as_ref().and_then(|h| h.commit.map(|c| c.to_string())),
            branch: head.and_then(|h| h.branch),
            source: None,
        }
    }

    /// Reads the ticket's dev overrides from the server.
    fn fetch(&mut self) -> anyhow::Result<()> {
        let t = self.client.ticket(&self.key).map_err(Interrupted)?;
        self.remote.clear();
        match t {
            Some(t) => {
                self.adopt(&t);
                for m in t.modules.get(&Stage::Dev).into_iter().flatten() {
                    self.remote.insert(
                        m.specifier.clone(),
                        Remote {
                            path: m.path.clone(),
                            hash: m.hash.to_hex(),
                        },
                    );
                }
            }
            None => {
                self.stage = None;
                self.version = None;
            }
        }
        self.stale = false;
        Ok(())
    }

    /// The dev link, with live reload turned on when asked for.
    fn with_live(&self, link: &str) -> String {
        if !self.scope.live {
            return link.to_string();
        }
        let sep = if link.contains('?') { '&' } else { '?' };
        format!("{link}{sep}{}=1", stamp_model::wire::LIVE_PARAM)
    }

    fn adopt(&mut self, t: &Ticket) {
        self.stage = Some(t.stage);
        self.version = Some(t.version);
        if let Some(l) = t.links.get("dev") {
            self.link = Some(self.with_live(l));
        }
    }

    /// Notes a change's new version; a jump means someone else changed the
    /// ticket (or the server lost it), so the next sync fetches it again.
    fn saw_version(&mut self, stage: Stage, version: u64) {
        if self.version.is_some_and(|v| v + 1 != version)
            || (self.version.is_none() && version != 1)
        {
            self.stale = true;
        }
        self.version = Some(version);
        self.stage = Some(stage);
    }

    /// A full sync: fetch the ticket, scan the folder, upload and delete.
    pub fn full(&mut self, touched: &HashSet<PathBuf>) -> anyhow::Result<Summary> {
        let start = Instant::now();
        if self.scope.folder.is_dir() {
            self.build_finished()?;
        }
        self.fetch()?;
        let mut summary = self.reconcile(touched)?;
        if self.stale {
            // Changed under our feet while syncing: once more, from the server's state.
            self.fetch()?;
            let again = self.reconcile(&HashSet::new())?;
            merge(&mut summary, &again);
        }
        summary.ms = start.elapsed().as_millis();
        Ok(summary)
    }

    /// A sync after file events: against the state we know, unless it is stale.
    pub fn changed(&mut self, touched: &HashSet<PathBuf>) -> anyhow::Result<Summary> {
        if self.stale {
            return self.full(touched);
        }
        let summary = self.reconcile(touched)?;
        if self.stale {
            let again = self.full(&HashSet::new())?;
            let mut s = summary;
            merge(&mut s, &again);
            return Ok(s);
        }
        Ok(summary)
    }

    fn reconcile(&mut self, touched: &HashSet<PathBuf>) -> anyhow::Result<Summary> {
        let wants = self.scan(touched)?;
        let git = self.git_meta();
        let mut s = Summary {
            ticket: self.key.clone(),
            ..Summary::default()
        };
        // Uploads: what the server does not have under that specifier and path.
        let mut uploads: Vec<&Want> = Vec::new();
        for w in wants.values() {
            let same = self
                .remote
                .get(&w.specifier)
                .is_some_and(|r| r.hash == w.sha256 && r.path == w.path);
            if same {
                s.unchanged += 1;
                continue;
            }
            if self
                .refused
                .get(&w.file)
                .is_some_and(|r| r.sha256 == w.sha256)
            {
                s.skipped += 1;
                continue;
            }
            uploads.push(w);
        }
        // A file that is there but could not be read keeps its module.
        let held: HashSet<String> = self
            .unreadable
            .iter()
            .filter_map(|f| self.scope.url_path(f))
            .collect();
        let pins = self.scope.pins();
        let deletes: Vec<(String, String)> = self
            .remote
            .iter()
            .filter(|(spec, r)| {
                !wants.contains_key(*spec)
                    && !held.contains(&r.path)
                    && self.scope.manages(spec, &r.path, pins.as_ref())
            })
            .map(|(spec, r)| (spec.clone(), r.path.clone()))
            .collect();

        let mut missing = HashSet::new();
        if !uploads.is_empty() {
            let mut hashes: Vec<String> = uploads.iter().map(|w| w.sha256.clone()).collect();
            hashes.sort();
            hashes.dedup();
            missing = self.client.missing(&hashes).map_err(Interrupted)?;
        }
        let mut uploads: Vec<Want> = uploads.into_iter().cloned().collect();
        // Entries last: a page that loads the ticket's entry finds every
        // chunk it imports already there.
        uploads.sort_by_key(|w| stamp_model::assets::is_entry_pattern(&w.specifier));
        for w in &uploads {
            self.upload(w, missing.contains(&w.sha256), &git, &mut s)?;
        }

        if !deletes.is_empty() && self.stage == Some(Stage::Closed) {
            self.report.note(&format!(
                "{} is closed: its {} stale override{} stay{} until an upload re-opens it",
                self.key,
                deletes.len(),
                if deletes.len() == 1 { "" } else { "s" },
                if deletes.len() == 1 { "s" } else { "" },
            ));
        } else {
            for (spec, path) in deletes {
                let bare = spec != path;
                let start = Instant::now();
                match self.client.delete_module(
                    &self.key,
                    &path,
                    bare.then_some(spec.as_str()),
                    &git,
                ) {
                    Ok(c) => {
                        self.saw_version(c.stage, c.version);
                        self.remote.remove(&spec);
                        s.removed += 1;
                        self.report
                            .removed(&display_name(&spec, &path), start.elapsed().as_millis());
                    }
                    Err(e) if e.status() == Some(404) => {
                        self.remote.remove(&spec);
                        self.stale = true;
                    }
                    Err(e) if fatal(&e) => return Err(Interrupted(e).into()),
                    Err(e) => {
                        s.failed += 1;
                        self.report
                            .skipped(&display_name(&spec, &path), &format!("cannot remove: {e}"));
                    }
                }
            }
        }
        s.stage = self.stage;
        s.link = self.link.clone();
        Ok(s)
    }

    /// One upload of `w` (its body, or a link to `hash`), naming `source`.
    fn put(
        &self,
        w: &Want,
        spec: Option<&str>,
        hash: &str,
        body: Option<Vec<u8>>,
        git: &GitMeta,
        source: &Option<String>,
    ) -> Result<crate::client::Change, ApiError> {
        let git = GitMeta {
            source: source.clone(),
            ..git.clone()
        };
        self.client
            .put_module(&self.key, &w.path, spec, hash, body, &git)
    }

    fn upload(
        &mut self,
        w: &Want,
        missing: bool,
        git: &GitMeta,
        s: &mut Summary,
    ) -> anyhow::Result<()> {
        let name = display_name(&w.specifier, &w.path);
        let start = Instant::now();
        let spec = w.bare.then_some(w.specifier.as_str());
        let mut body = None;
        let mut hash = w.sha256.clone();
        if missing {
            // Read again: the file may have changed since it was scanned.
            let Ok(bytes) = std::fs::read(&w.file) else {
                self.stale = true;
                return Ok(());
            };
            hash = hex::encode(Sha256::digest(&bytes));
            body = Some(bytes);
        }
        // The file of the commit these bytes are, if they are one (the
        // server's git policy checks it).
        let source_for = |bytes: Option<&[u8]>, want: &str| -> Option<String> {
            let repo = self.repo.as_ref()?;
            let commit = git2::Oid::from_str(git.commit.as_deref()?).ok()?;
            let read;
            let bytes = match bytes {
                Some(b) => b,
                None => {
                    read = std::fs::read(&w.file).ok()?;
                    read.as_slice()
                }
            };
            // Only for the bytes whose hash goes with them.
            (hex::encode(Sha256::digest(bytes)) == want).then_some(())?;
            repo.source_of(commit, &w.file, bytes)
        };
        let mut source = source_for(body.as_deref(), &hash);
        let mut sent = body.is_some();
        let mut size = body.as_ref().map_or(w.size, |b| b.len() as u64);
        let mut result = self.put(w, spec, &hash, body.clone(), git, &source);
        if let Err(e) = &result {
            if !sent && e.code() == Some(ErrorCode::UnknownBody) {
                // The body went away between the check and the link: send it.
                let bytes = std::fs::read(&w.file)
                    .with_context(|| format!("cannot read {}", w.file.display()))?;
                hash = hex::encode(Sha256::digest(&bytes));
                sent = true;
                size = bytes.len() as u64;
                source = source_for(Some(&bytes), &hash);
                body = Some(bytes);
                result = self.put(w, spec, &hash, body.clone(), git, &source);
            } else if e.code() == Some(ErrorCode::Conflict) {
                // Someone changed the ticket at the same moment: once more.
                self.stale = true;
                result = self.put(w, spec, &hash, body.clone(), git, &source);
            }
        }
        match result {
            Ok(c) => {
                self.saw_version(c.stage, c.version);
                self.refused.remove(&w.file);
                let (path, stored) = match &c.module {
                    Some(m) => (m.path.clone(), m.hash.to_hex()),
                    None => (w.path.clone(), hash.clone()),
                };
                self.remote
                    .insert(w.specifier.clone(), Remote { path, hash: stored });
                if self.link.is_none() {
                    let link = format!("{}/?dev={}", self.client.server, self.key);
                    self.link = Some(self.with_live(&link));
                }
                s.uploaded += 1;
                if sent {
                    s.sent += 1;
                    s.bytes_sent += size;
                } else {
                    s.linked += 1;
                }
                self.report
                    .uploaded(&name, size, sent, start.elapsed().as_millis(), &hash);
                Ok(())
            }
            Err(e) if fatal(&e) => Err(Interrupted(e).into()),
            Err(e) => {
                if e.code() == Some(ErrorCode::UnsupportedType) {
                    s.skipped += 1;
                } else {
                    s.failed += 1;
                }
                self.report.skipped(&name, &e.to_string());
                // Refused for what the file is: not again until it changes.
                // Anything else is tried again with the next change.
                if matches!(
                    e.code(),
                    Some(
                        ErrorCode::UnsupportedType
                            | ErrorCode::TooLarge
                            | ErrorCode::TooManyModules
                            | ErrorCode::BadRequest
                    )
                ) {
                    self.refused.insert(
                        w.file.clone(),
                        Refused {
                            sha256: w.sha256.clone(),
                        },
                    );
                }
                Ok(())
            }
        }
    }
}

/// Errors that stop the sync (network, server down, credentials) rather than
/// skipping one file.
fn fatal(e: &ApiError) -> bool {
    e.is_transient()
        || matches!(e.status(), Some(401 | 403))
        || matches!(e, ApiError::Protocol { .. })
}

fn display_name(specifier: &str, path: &str) -> String {
    if specifier == path {
        path.to_string()
    } else {
        format!("{specifier} ({path})")
    }
}

fn merge(into: &mut Summary, more: &Summary) {
    into.uploaded += more.uploaded;
    into.sent += more.sent;
    into.linked += more.linked;
    into.bytes_sent += more.bytes_sent;
    into.removed += more.removed;
    into.skipped += more.skipped;
    into.failed += more.failed;
    into.unchanged = more.unchanged;
    into.stage = more.stage;
    into.link = more.link.clone().or(into.link.take());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> Scope {
        Scope {
            folder: PathBuf::from("/r/src"),
            url_base: "/src".into(),
            specifiers: HashMap::from([(
                PathBuf::from("/r/src/cart.js"),
                "@shop/cart".to_string(),
            )]),
            rails: None,
            only: vec![],
            all: false,
            build: false,
            live: false,
            main_branch: None,
        }
    }

    /// A syncer whose server is never reached (its scans only).
    #[allow(clippy::unwrap_used)]
    fn offline(scope: Scope) -> Syncer {
        let client = Client::new("http://127.0.0.1:9", None, false).unwrap();
        Syncer::new(
            client,
            "TKT-1".into(),
            scope,
            None,
            Reporter { json: false },
        )
    }

    #[test]
    fn url_paths_and_what_the_folder_manages() {
        let s = scope();
        assert_eq!(
            s.url_path(Path::new("/r/src/lib/a.js")).as_deref(),
            Some("/src/lib/a.js")
        );
        assert_eq!(s.url_path(Path::new("/r/other/a.js")), None);
        assert!(s.manages("/src/lib/a.js", "/src/lib/a.js", None));
        assert!(s.manages("@shop/cart", "/src/cart.js", None));
        assert!(!s.manages("/lib/x.js", "/lib/x.js", None));
        assert!(!s.manages("@other/x", "/src/x.js", None));
        let mut only = scope();
        only.only = vec![PathBuf::from("/r/src/lib")];
        assert!(only.manages("/src/lib/a.js", "/src/lib/a.js", None));
        assert!(!only.manages("/src/b.js", "/src/b.js", None));
        let root = Scope {
            url_base: "/".into(),
            ..scope()
        };
        assert_eq!(
            root.url_path(Path::new("/r/src/a.js")).as_deref(),
            Some("/a.js")
        );
        assert!(root.manages("/a.js", "/a.js", None));
    }

    /// A file another program holds (Windows' sharing violations) reads as
    /// an error: here, a link to /proc/self/mem, which no one may read at
    /// offset 0, not even root.
    #[cfg(target_os = "linux")]
    #[test]
    #[allow(clippy::unwrap_used)]
    fn a_file_that_cannot_be_read_keeps_its_module_and_a_gone_folder_removes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let folder = std::fs::canonicalize(dir.path()).unwrap().join("src");
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(folder.join("a.js"), "a 1").unwrap();
        let scope = Scope {
            folder: folder.clone(),
            specifiers: HashMap::new(),
            rails: None,
            ..scope()
        };
        let mut syncer = offline(scope);
        let wants = syncer.scan(&HashSet::new()).unwrap();
        let a = wants["/src/a.js"].sha256.clone();
        assert_eq!(a, hex::encode(Sha256::digest(b"a 1")));

        std::fs::remove_file(folder.join("a.js")).unwrap();
        std::os::unix::fs::symlink("/proc/self/mem", folder.join("a.js")).unwrap();
        std::os::unix::fs::symlink("/proc/self/mem", folder.join("b.js")).unwrap();
        let touched = HashSet::from([folder.clone()]);
        let wants = syncer.scan(&touched).unwrap();
        assert_eq!(wants.keys().collect::<Vec<_>>(), ["/src/a.js"]);
        assert_eq!(wants["/src/a.js"].sha256, a, "what was known stands");
        assert_eq!(
            syncer.unreadable(),
            &HashSet::from([folder.join("a.js"), folder.join("b.js")])
        );

        std::fs::remove_dir_all(&folder).unwrap();
        let e = syncer.scan(&HashSet::new()).unwrap_err();
        assert!(e.downcast_ref::<FolderGone>().is_some(), "{e:#}");
    }

    /// A bundler empties its folder before it writes it anew: a scan in
    /// between would take every module away. Its manifest or page, gone
    /// since the last scan, holds the sync until they are back, or until
    /// BUILD_WAIT says they are gone for good.
    #[test]
    #[allow(clippy::unwrap_used)]
    fn a_build_under_way_removes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let folder = std::fs::canonicalize(dir.path()).unwrap().join("dist");
        let write = |rel: &str, text: &str| {
            let p = folder.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        write(".vite/manifest.json", "{}");
        write(
            "index.html",
            "<script type=module src=/assets/a.js></script>",
        );
        write("assets/a.js", "a 1");
        let built = Scope {
            folder: folder.clone(),
            url_base: "/".into(),
            specifiers: HashMap::new(),
            rails: None,
            build: true,
            ..scope()
        };
        let mut syncer = offline(built);
        let wants = syncer.scan(&HashSet::new()).unwrap();
        assert_eq!(wants.keys().collect::<Vec<_>>(), ["/assets/a.js"]);

        // vite's emptyOutDir, then the first files of the next build.
        std::fs::remove_dir_all(&folder).unwrap();
        std::fs::create_dir_all(folder.join("assets")).unwrap();
        let e = syncer.scan(&HashSet::new()).unwrap_err();
        let under_way = e
            .downcast_ref::<BuildUnderWay>()
            .expect("a build under way");
        assert!(under_way.missing.ends_with(".vite/manifest.json"), "{e}");
        write("assets/b.js", "b 1");
        write(".vite/manifest.json", "{}");
        let e = syncer.scan(&HashSet::new()).unwrap_err();
        assert!(
            e.downcast_ref::<BuildUnderWay>()
                .unwrap()
                .missing
                .ends_with("index.html"),
            "every marker must be back: {e}"
        );

        // The build is over: the folder as it now is.
        write(
            "index.html",
            "<script type=module src=/assets/b.js></script>",
        );
        let wants = syncer.scan(&HashSet::new()).unwrap();
        assert_eq!(wants.keys().collect::<Vec<_>>(), ["/assets/b.js"]);

        // A manifest gone for good holds the sync BUILD_WAIT, then no more.
        std::fs::remove_file(folder.join(".vite/manifest.json")).unwrap();
        assert!(syncer.scan(&HashSet::new()).is_err());
        syncer.under_way_since = Some(Instant::now() - BUILD_WAIT);
        let wants = syncer.scan(&HashSet::new()).unwrap();
        assert_eq!(wants.keys().collect::<Vec<_>>(), ["/assets/b.js"]);
        std::fs::remove_file(folder.join("assets/b.js")).unwrap();
        assert!(syncer.scan(&HashSet::new()).unwrap().is_empty());

        // A folder that is no build is never held.
        let plain = Scope {
            folder: folder.clone(),
            url_base: "/".into(),
            specifiers: HashMap::new(),
            rails: None,
            ..scope()
        };
        let mut syncer = offline(plain);
        syncer.scan(&HashSet::new()).unwrap();
        std::fs::remove_file(folder.join("index.html")).unwrap();
        syncer.scan(&HashSet::new()).unwrap();
    }

    #[test]
    fn editor_scratch_files_are_not_modules() {
        for scratch in [
            "a.js~",
            "#a.js#",
            "a.js___jb_tmp___",
            "a.js.swp",
            "a.js.tmp",
            "4913",
            ".a.js.swp",
            ".#a.js",
            "~$report.docx",
        ] {
            assert!(is_scratch(scratch), "{scratch}");
            assert!(is_editor_scratch(scratch), "{scratch}");
        }
        // A name without a dot is no module, but may be a folder.
        assert!(is_scratch("Makefile") && !is_editor_scratch("lib"));
        for module in ["a.js", "style.css", "data.json", "x.min.mjs"] {
            assert!(!is_scratch(module), "{module}");
        }
    }
}
