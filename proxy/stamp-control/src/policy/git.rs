//! `git`: the commit the CLI sent must be pushed and up to date with main.
//!
//! The proxy keeps a bare mirror of the configured remote (a URL git2 can
//! fetch, or a path) under `cache_dir`, fetches it before every decision
//! (pruning deleted branches), and requires that the commit
//! - exists on the remote (reachable from one of its branches), else
//!   "unknown commit … not pushed";
//! - equals or descends from the tip of `branch` (default `main`), else
//!   "behind main by N commits";
//! - and, when main was force-pushed under it (a main tip seen by an earlier
//!   fetch that the new main no longer contains), says "main moved".
//!
//! - and, with `sources = "check"` (the default), that the bytes being
//!   moved are the commit's: a module whose upload named a file of its
//!   commit (`x-stamp-source`, sent by `stamp` only when the body is that
//!   file) must be that file of the commit checked, byte for byte; modules
//!   that name none (built output, uncommitted changes) are a warning, or a
//!   refusal with `sources = "require"`.
//!
//! The main tips seen are kept in the mirror (`stamp-seen-main`) so a force
//! push between two decisions is still recognised. Remotes are paths,
//! `file://`, `git://`, `http://` or `https://` (libgit2 with a vendored
//! OpenSSL); a private https remote authenticates with `token` / `token_env`
//! (sent as the password, `username` defaulting to `x-access-token`, as
//! GitHub and GitLab accept).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use git2::{Direction, FetchOptions, Oid, Repository};
use sha2::{Digest, Sha256};

use super::{promotions, Built, Outcome, Policy, Settings, TransitionCtx};

pub const KEYS: &[&str] = &[
    "remote",
    "branch",
    "cache_dir",
    "timeout",
    "on_fetch_error",
    "require_commit",
    "username",
    "token",
    "token_env",
    "sources",
];

/// Main tips remembered for force-push detection.
const SEEN_MAX: usize = 64;
const SEEN_FILE: &str = "stamp-seen-main";

pub struct Git {
    remote: String,
    branch: String,
    mirror: PathBuf,
    timeout: Duration,
    /// Decide from the mirror as last fetched when a fetch fails.
    use_cache_on_error: bool,
    require_commit: bool,
    /// One fetch at a time per mirror (held on the blocking thread).
    lock: Arc<Mutex<()>>,
    username: String,
    token: Option<super::Secret>,
    sources: Sources,
}

/// What the policy asks of the bytes being moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sources {
    /// Every module the CLI named a file of the commit for must be that
    /// file, byte for byte; others (build output, uncommitted changes) are
    /// a warning.
    Check,
    /// Every module must be a file of the commit.
    Require,
    /// Only the commit is checked.
    Ignore,
}

/// One module being moved: its specifier, body and, when the CLI found it
/// to be one, its file in the commit it was uploaded from.
#[derive(Debug, Clone)]
struct Moved {
    specifier: String,
    hash: stamp_model::ticket::Hash,
    source: Option<String>,
}

/// The modules of the stage being left, each with the file its last upload
/// named.
fn moved(ctx: &TransitionCtx) -> Vec<Moved> {
    let mut sources: HashMap<&str, Option<&str>> = HashMap::new();
    for e in &ctx.history {
        if matches!(e.event.as_str(), "upload" | "reopen") {
            if let Some(spec) = e.detail.as_deref() {
                sources.insert(spec, e.source.as_deref());
            }
        }
    }
    ctx.overrides
        .iter()
        .map(|(spec, m)| Moved {
            specifier: spec.clone(),
            hash: m.hash,
            source: sources
                .get(spec.as_str())
                .copied()
                .flatten()
                .map(str::to_string),
        })
        .collect()
}

pub fn build(s: &mut Settings<'_>) -> Option<Built> {
    let remote = s.required_string("remote", "the repository's URL or path");
    let branch = s.string("branch").unwrap_or_else(|| "main".into());
    if !git2::Reference::is_valid_name(&format!("refs/heads/{branch}")) {
        s.problem("branch", format!("`{branch}` is not a valid branch name"));
    }
    let cache_dir = s
        .string("cache_dir")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("stamp-git-mirrors"));
    let timeout = s.duration("timeout", Duration::from_secs(30));
    let use_cache_on_error =
        s.choice("on_fetch_error", &["deny", "use-cache"], "deny") == "use-cache";
    let require_commit = s.bool("require_commit", true);
    let username = s
        .string("username")
        .unwrap_or_else(|| "x-access-token".into());
    let token = s.secret("token", false, "a token for a private https remote");
    let sources = match s.choice("sources", &["check", "require", "ignore"], "check") {
        "require" => Sources::Require,
        "ignore" => Sources::Ignore,
        _ => Sources::Check,
    };
    let remote = remote?;
    let name = hex::encode(&Sha256::digest(remote.as_bytes())[..8]);
    Some(Built {
        policy: Box::new(Git {
            mirror: cache_dir.join(format!("{name}.git")),
            remote,
            branch,
            timeout,
            use_cache_on_error,
            require_commit,
            lock: Arc::new(Mutex::new(())),
            username,
            token,
            sources,
        }),
        default_on: promotions(),
    })
}

/// The commit of the newest history event that made the `from` stage's
/// code: a promotion into it, or (for dev) an upload.
fn recorded_commit(ctx: &TransitionCtx) -> Option<String> {
    ctx.history
        .iter()
        .rev()
        .filter(|e| {
            (e.event == "promote" && e.to == Some(ctx.from))
                || (ctx.from == stamp_model::Stage::Dev && e.event == "upload")
        })
        .find_map(|e| e.commit.clone())
}

#[async_trait]
impl Policy for Git {
    fn kind(&self) -> &'static str {
        "git"
    }

    async fn check(&self, ctx: &TransitionCtx) -> Vec<Outcome> {
        // A click in the panel sends no commit: the one recorded when the
        // code being moved was made (the promotion into the stage it leaves,
        // or dev's last upload) is what gets checked.
        let Some(commit) = ctx.actor.commit.clone().or_else(|| recorded_commit(ctx)) else {
            return vec![if self.require_commit {
                Outcome::Deny(format!(
                    "no git commit was sent with the request, and none is recorded for the ticket's {} stage: upload or promote it with `stamp` inside the repository",
                    ctx.from
                ))
            } else {
                Outcome::Warn("no git commit was sent; not checked".into())
            }];
        };
        let job = Job {
            remote: self.remote.clone(),
            branch: self.branch.clone(),
            mirror: self.mirror.clone(),
            use_cache_on_error: self.use_cache_on_error,
            lock: self.lock.clone(),
            sources: self.sources,
            moved: moved(ctx),
            credentials: match &self.token {
                None => None,
                Some(secret) => match secret.resolve() {
                    Ok(t) => Some((self.username.clone(), t)),
                    Err(e) => return vec![Outcome::Deny(format!("git: {e}"))],
                },
            },
        };
        let task = tokio::task::spawn_blocking(move || job.decide(&commit));
        match tokio::time::timeout(self.timeout, task).await {
            Ok(Ok(outcomes)) => outcomes,
            Ok(Err(e)) => vec![Outcome::Deny(format!("git check failed: {e}"))],
            Err(_) => vec![Outcome::Deny(format!(
                "fetching {} took longer than {}",
                self.remote,
                humantime::format_duration(self.timeout)
            ))],
        }
    }
}

struct Job {
    remote: String,
    branch: String,
    mirror: PathBuf,
    use_cache_on_error: bool,
    lock: Arc<Mutex<()>>,
    /// `(username, token)` for an https remote that needs them.
    credentials: Option<(String, String)>,
    sources: Sources,
    moved: Vec<Moved>,
}

fn short(oid: Oid) -> String {
    oid.to_string()[..10].to_string()
}

impl Job {
    fn decide(&self, commit: &str) -> Vec<Outcome> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let repo = match open_mirror(&self.mirror) {
            Ok(r) => r,
            Err(e) => {
                return vec![Outcome::Deny(format!(
                    "cannot open the git mirror {}: {e}",
                    self.mirror.display()
                ))]
            }
        };
        let mut out = Vec::new();
        let heads = match fetch(&repo, &self.remote, self.credentials.as_ref()) {
            Ok(h) => h,
            Err(e) if self.use_cache_on_error => {
                out.push(Outcome::Warn(format!(
                    "cannot fetch {} ({}); decided from the mirror as last fetched",
                    self.remote,
                    e.message()
                )));
                local_heads(&repo)
            }
            Err(e) => {
                return vec![Outcome::Deny(format!(
                    "cannot fetch {}: {}",
                    self.remote,
                    e.message()
                ))]
            }
        };
        out.push(self.judge(&repo, &heads, commit));
        if let Ok(c) = repo.find_commit_by_prefix(commit) {
            out.extend(self.bytes(&repo, &c));
        }
        out
    }

    /// The bytes being moved against the files of `commit`: a module whose
    /// upload named a file of it must be that file, byte for byte (a CLI
    /// that named a file wrongly only ever gets its bytes checked against
    /// it). What names no file is built or uncommitted: a warning, or with
    /// `sources = "require"` a refusal.
    fn bytes(&self, repo: &Repository, commit: &git2::Commit<'_>) -> Vec<Outcome> {
        if self.sources == Sources::Ignore || self.moved.is_empty() {
            return Vec::new();
        }
        let at = short(commit.id());
        let Ok(tree) = commit.tree() else {
            return vec![Outcome::Deny(format!("cannot read the tree of {at}"))];
        };
        let mut out = Vec::new();
        let mut unnamed = Vec::new();
        for m in &self.moved {
            let Some(source) = &m.source else {
                unnamed.push(m.specifier.as_str());
                continue;
            };
            let blob = tree
                .get_path(Path::new(source))
                .ok()
                .and_then(|entry| entry.to_object(repo).ok())
                .and_then(|o| o.into_blob().ok());
            match blob {
                None => out.push(Outcome::Deny(format!(
                    "{}: {source} is not a file of {at}",
                    m.specifier
                ))),
                Some(b) if stamp_model::ticket::Hash::of(b.content()) != m.hash => {
                    out.push(Outcome::Deny(format!(
                        "{}: the uploaded bytes are not {source} as of {at}; upload it again from this commit (`stamp KEY --update`)",
                        m.specifier
                    )))
                }
                Some(_) => {}
            }
        }
        if !unnamed.is_empty() {
            let shown: Vec<&str> = unnamed.iter().take(5).copied().collect();
            let more = unnamed.len() - shown.len();
            let list = if more > 0 {
                format!("{} and {more} more", shown.join(", "))
            } else {
                shown.join(", ")
            };
            let what = format!(
                "{} of the {} modules {} of {at} (built, or changed since the commit): {list}",
                unnamed.len(),
                self.moved.len(),
                if unnamed.len() == 1 {
                    "is not a file"
                } else {
                    "are not files"
                },
            );
            out.push(if self.sources == Sources::Require {
                Outcome::Deny(format!(
                    "{what}; sources = \"require\" wants every module to be one"
                ))
            } else {
                Outcome::Warn(format!("{what}: their bytes are not checked"))
            });
        }
        out
    }

    fn judge(&self, repo: &Repository, heads: &HashMap<String, Oid>, commit: &str) -> Outcome {
        let Some(&tip) = heads.get(&format!("refs/heads/{}", self.branch)) else {
            return Outcome::Deny(format!(
                "the remote {} has no branch `{}`",
                self.remote, self.branch
            ));
        };
        let mut seen = read_seen(&self.mirror);
        if seen.last() != Some(&tip) {
            seen.push(tip);
            let from = seen.len().saturating_sub(SEEN_MAX);
            write_seen(&self.mirror, &seen[from..]);
        }
        let oid = match repo.find_commit_by_prefix(commit) {
            Ok(c) => c.id(),
            Err(_) => {
                return Outcome::Deny(format!(
                    "unknown commit {commit}: it is not on the remote (push it first)"
                ))
            }
        };
        let descends = |a: Oid, b: Oid| a == b || repo.graph_descendant_of(a, b).unwrap_or(false);
        let reachable = heads.values().any(|&h| descends(h, oid));
        let on_main = descends(oid, tip);
        if on_main && reachable {
            return Outcome::Allow;
        }
        // A main tip seen earlier that the current main no longer contains:
        // main was rewritten (force-pushed) since.
        let rewritten = seen
            .iter()
            .rev()
            .copied()
            .find(|&old| !descends(tip, old) && (descends(oid, old) || descends(old, oid)));
        if let Some(old) = rewritten {
            return Outcome::Deny(format!(
                "main moved: `{}` was force-pushed (it was at {}, it is now at {}, which does not contain it); commit {} was made on the old `{}`: rebase onto the new one and push",
                self.branch,
                short(old),
                short(tip),
                short(oid),
                self.branch
            ));
        }
        if !reachable {
            return Outcome::Deny(format!(
                "unknown commit {}: it is on no branch of the remote (not pushed, or its branch was deleted)",
                short(oid)
            ));
        }
        let behind = behind_count(repo, tip, oid);
        Outcome::Deny(format!(
            "commit {} is behind {} by {behind} commit{} ({} is at {}): merge or rebase onto {} and push",
            short(oid),
            self.branch,
            if behind == 1 { "" } else { "s" },
            self.branch,
            short(tip),
            self.branch
        ))
    }
}

fn open_mirror(path: &Path) -> Result<Repository, git2::Error> {
    if path.join("HEAD").exists() {
        Repository::open_bare(path)
    } else {
        std::fs::create_dir_all(path).map_err(|e| git2::Error::from_str(&e.to_string()))?;
        Repository::init_bare(path)
    }
}

/// Fetches every branch into the mirror, deletes the ones gone from the
/// remote, and returns the remote's branches.
fn fetch(
    repo: &Repository,
    url: &str,
    credentials: Option<&(String, String)>,
) -> Result<HashMap<String, Oid>, git2::Error> {
    let callbacks = || {
        let mut cb = git2::RemoteCallbacks::new();
        if let Some((user, token)) = credentials.cloned() {
            cb.credentials(move |_, _, _| git2::Cred::userpass_plaintext(&user, &token));
        }
        cb
    };
    let mut remote = repo.remote_anonymous(url)?;
    remote.connect_auth(Direction::Fetch, Some(callbacks()), None)?;
    let heads: HashMap<String, Oid> = remote
        .list()?
        .iter()
        .filter(|h| h.name().starts_with("refs/heads/"))
        .map(|h| (h.name().to_string(), h.oid()))
        .collect();
    remote.disconnect()?;
    let mut opts = FetchOptions::new();
    opts.download_tags(git2::AutotagOption::None);
    opts.remote_callbacks(callbacks());
    remote.fetch(&["+refs/heads/*:refs/heads/*"], Some(&mut opts), None)?;
    for (name, oid) in &heads {
        repo.reference(name, *oid, true, "stamp: mirror")?;
    }
    for r in repo.references_glob("refs/heads/*")? {
        let mut r = r?;
        if r.name().ok().is_some_and(|n| !heads.contains_key(n)) {
            r.delete()?;
        }
    }
    Ok(heads)
}

fn local_heads(repo: &Repository) -> HashMap<String, Oid> {
    let mut out = HashMap::new();
    if let Ok(refs) = repo.references_glob("refs/heads/*") {
        for r in refs.flatten() {
            if let (Ok(n), Some(o)) = (r.name(), r.target()) {
                out.insert(n.to_string(), o);
            }
        }
    }
    out
}

fn behind_count(repo: &Repository, tip: Oid, oid: Oid) -> usize {
    let Ok(mut walk) = repo.revwalk() else {
        return 0;
    };
    if walk.push(tip).is_err() || walk.hide(oid).is_err() {
        return 0;
    }
    walk.count()
}

fn read_seen(mirror: &Path) -> Vec<Oid> {
    std::fs::read_to_string(mirror.join(SEEN_FILE))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| Oid::from_str(l.trim()).ok())
        .collect()
}

fn write_seen(mirror: &Path, seen: &[Oid]) {
    let text: String = seen.iter().map(|o| format!("{o}\n")).collect();
    let tmp = mirror.join(format!("{SEEN_FILE}.tmp"));
    if std::fs::write(&tmp, text).is_ok() {
        let _ = std::fs::rename(&tmp, mirror.join(SEEN_FILE));
    }
}
