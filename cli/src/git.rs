//! What git says (git2, local repositories only): the main branch's merge
//! base a file is compared with, and the checks before a promotion.

use std::path::{Path, PathBuf};

use anyhow::Context;
use git2::{BranchType, ErrorCode, ObjectType, Oid, Repository, Status, StatusOptions, Tree};

/// A work tree's repository.
pub struct Repo {
    repo: Repository,
    /// The work tree root, symlinks resolved.
    pub root: PathBuf,
}

impl std::fmt::Debug for Repo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repo").field("root", &self.root).finish()
    }
}

/// Where HEAD is.
#[derive(Debug, Clone)]
pub struct Head {
    /// None on an unborn branch (no commit yet).
    pub commit: Option<Oid>,
    /// None when detached.
    pub branch: Option<String>,
}

/// Why a promotion was refused before asking the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub message: String,
    pub details: Vec<String>,
    pub hint: String,
}

/// What a promotion sends along.
#[derive(Debug, Clone)]
pub struct Promotable {
    pub commit: String,
    pub branch: Option<String>,
    /// How HEAD relates to main, for the message.
    pub ahead: usize,
    pub main: String,
}

/// The blob id git would give these bytes.
pub fn blob_id(bytes: &[u8]) -> Option<Oid> {
    Oid::hash_object(ObjectType::Blob, bytes).ok()
}

/// The branch a CI job is building when its checkout is a detached commit,
/// as GitHub Actions (`actions/checkout` of a pull request's head) and
/// GitLab CI leave it: the hooks find the pull request by branch. GitLab's
/// merge-request and branch variables are read, never `CI_COMMIT_REF_NAME`
/// (a tag's name in a tag pipeline). A value that is no valid branch name is
/// ignored.
pub fn ci_branch(env: impl Fn(&str) -> Option<String>) -> Option<String> {
    let github_push = || {
        (env("GITHUB_REF_TYPE").as_deref() == Some("branch"))
            .then(|| env("GITHUB_REF_NAME"))
            .flatten()
    };
    env("GITHUB_HEAD_REF")
        .filter(|b| !b.is_empty())
        .or_else(github_push)
        .or_else(|| env("CI_MERGE_REQUEST_SOURCE_BRANCH_NAME").filter(|b| !b.is_empty()))
        .or_else(|| env("CI_COMMIT_BRANCH").filter(|b| !b.is_empty()))
        .filter(|b| {
            !b.starts_with('-') && git2::Reference::is_valid_name(&format!("refs/heads/{b}"))
        })
}

impl Repo {
    /// The repository containing `path`, if any (bare repositories do not count).
    pub fn discover(path: &Path) -> anyhow::Result<Option<Repo>> {
        let repo = match Repository::discover(path) {
            Ok(r) => r,
            Err(e) if e.code() == ErrorCode::NotFound => return Ok(None),
            Err(e) => {
                return Err(e).context(format!(
                    "cannot open the git repository at {}",
                    path.display()
                ))
            }
        };
        let Some(workdir) = repo.workdir() else {
            return Ok(None);
        };
        let root = std::fs::canonicalize(workdir)
            .map(crate::paths::tidy)
            .unwrap_or_else(|_| workdir.to_path_buf());
        Ok(Some(Repo { repo, root }))
    }

    /// Where HEAD is.
    pub fn head(&self) -> anyhow::Result<Head> {
        match self.repo.head() {
            Ok(r) => {
                let branch = if self.repo.head_detached().unwrap_or(false) {
                    ci_branch(|name| std::env::var(name).ok())
                } else {
                    r.shorthand().ok().map(str::to_string)
                };
                Ok(Head {
                    commit: r.peel_to_commit().ok().map(|c| c.id()),
                    branch,
                })
            }
            Err(e) if matches!(e.code(), ErrorCode::UnbornBranch | ErrorCode::NotFound) => {
                let branch = self.repo.find_reference("HEAD").ok().and_then(|r| {
                    r.symbolic_target()
                        .ok()
                        .flatten()
                        .map(|t| t.trim_start_matches("refs/heads/").to_string())
                });
                Ok(Head {
                    commit: None,
                    branch,
                })
            }
            Err(e) => Err(e).context("cannot read HEAD"),
        }
    }

    /// The main branch's name and tip: `configured`, else `main`, else
    /// `master`. Of the local branch and its `origin/` remote-tracking
    /// branch, the newer: a local `main` that the remote has moved past (or
    /// force-pushed over) is stale, and measuring against it would count
    /// other people's commits as the ticket's; a local `main` with commits
    /// not pushed yet is the newer one.
    pub fn main_branch(&self, configured: Option<&str>) -> Result<(String, Oid), Refusal> {
        let candidates: Vec<&str> = match configured {
            Some(c) => vec![c],
            None => vec!["main", "master"],
        };
        let tip = |name: &str, kind: BranchType| {
            self.repo
                .find_branch(name, kind)
                .ok()
                .and_then(|b| b.get().peel_to_commit().ok())
                .map(|c| c.id())
        };
        for name in &candidates {
            let remote_name = format!("origin/{name}");
            let local = tip(name, BranchType::Local);
            let remote = tip(&remote_name, BranchType::Remote);
            match (local, remote) {
                (Some(l), Some(r)) if l != r => {
                    let local_is_newer = self.repo.graph_descendant_of(l, r).unwrap_or(false);
                    return Ok(if local_is_newer {
                        (name.to_string(), l)
                    } else {
                        (remote_name, r)
                    });
                }
                (Some(l), _) => return Ok((name.to_string(), l)),
                (None, Some(r)) => return Ok((remote_name, r)),
                (None, None) => {}
            }
        }
        Err(Refusal {
            message: format!(
                "the repository at {} has no branch {}",
                self.root.display(),
                candidates.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(" or ")
            ),
            details: vec![],
            hint: "set `main_branch = \"…\"` in stamp.toml (with --update, --all uploads every file instead)".into(),
        })
    }

    /// The tree files are compared with: the merge base of HEAD and main.
    /// None when HEAD has no commit yet (every file is new).
    pub fn base_tree(
        &self,
        configured_main: Option<&str>,
    ) -> anyhow::Result<Option<(Oid, Tree<'_>)>> {
        let head = self.head()?;
        let Some(head) = head.commit else {
            return Ok(None);
        };
        let (name, main) = self
            .main_branch(configured_main)
            .map_err(|r| anyhow::anyhow!("{}; {}", r.message, r.hint))?;
        let base = self.repo.merge_base(head, main).with_context(|| {
            format!("HEAD and {name} have no common history: nothing to compare the files with")
        })?;
        let tree = self.repo.find_commit(base)?.tree()?;
        Ok(Some((base, tree)))
    }

    /// `file` (absolute) as a path from the repository's root, when `bytes`
    /// are exactly that file in `commit`: what the server's `git` policy
    /// checks the upload against. `None` for build output, a file changed
    /// since the commit, or one outside the repository.
    pub fn source_of(&self, commit: Oid, file: &Path, bytes: &[u8]) -> Option<String> {
        let rel = crate::paths::relative_slash(&self.root, file)?;
        if rel.is_empty() {
            return None;
        }
        let tree = self.repo.find_commit(commit).ok()?.tree().ok()?;
        let entry = tree.get_path(Path::new(&rel)).ok()?;
        (entry.kind() == Some(ObjectType::Blob) && Some(entry.id()) == blob_id(bytes))
            .then_some(rel)
    }

    /// The blob a file (absolute path) had in `tree`, if it was there.
    pub fn blob_in(&self, tree: &Tree<'_>, file: &Path) -> Option<Oid> {
        let rel = crate::paths::relative_slash(&self.root, file)?;
        let entry = tree.get_path(Path::new(&rel)).ok()?;
        (entry.kind() == Some(ObjectType::Blob)).then(|| entry.id())
    }

    /// Whether git ignores `path` (a build folder, typically).
    pub fn is_ignored(&self, path: &Path) -> bool {
        match crate::paths::relative_slash(&self.root, path) {
            Some(rel) => !rel.is_empty() && self.repo.is_path_ignored(&rel).unwrap_or(false),
            None => self.repo.is_path_ignored(path).unwrap_or(false),
        }
    }

    /// Files that are not committed: modified, staged, deleted, renamed or
    /// untracked (ignored files do not count), with git's short status.
    pub fn uncommitted(&self) -> anyhow::Result<Vec<String>> {
        let mut opts = StatusOptions::new();
        opts.include_untracked(true)
            .recurse_untracked_dirs(true)
            .include_ignored(false)
            .exclude_submodules(false);
        let statuses = self
            .repo
            .statuses(Some(&mut opts))
            .context("cannot read git status")?;
        let mut out = Vec::new();
        for s in statuses.iter() {
            let st = s.status();
            if st.is_empty() || st.contains(Status::IGNORED) {
                continue;
            }
            let code = if st.contains(Status::WT_NEW) {
                "??"
            } else if st.intersects(
                Status::INDEX_NEW
                    | Status::INDEX_MODIFIED
                    | Status::INDEX_DELETED
                    | Status::INDEX_RENAMED
                    | Status::INDEX_TYPECHANGE,
            ) {
                if st.intersects(Status::WT_MODIFIED | Status::WT_DELETED) {
                    "MM"
                } else {
                    "M "
                }
            } else if st.contains(Status::WT_DELETED) {
                " D"
            } else if st.contains(Status::CONFLICTED) {
                "UU"
            } else {
                " M"
            };
            out.push(format!("{code} {}", s.path().unwrap_or("?")));
        }
        Ok(out)
    }

    /// The checks before `--promote`: the work tree is clean and HEAD is the
    /// main branch's tip or descends from it.
    pub fn check_promotable(
        &self,
        configured_main: Option<&str>,
    ) -> anyhow::Result<Result<Promotable, Refusal>> {
        let dirty = self.uncommitted()?;
        if !dirty.is_empty() {
            let n = dirty.len();
            let mut details: Vec<String> = dirty.into_iter().take(10).collect();
            if n > 10 {
                details.push(format!("… and {} more", n - 10));
            }
            return Ok(Err(Refusal {
                message: format!(
                    "the work tree is not clean: {n} file{} not committed",
                    if n == 1 { " is" } else { "s are" }
                ),
                details,
                hint: "commit them (or `git stash --include-untracked`), then promote again, so the ticket matches a commit".into(),
            }));
        }
        let head = self.head()?;
        let Some(commit) = head.commit else {
            return Ok(Err(Refusal {
                message: "HEAD has no commit yet".into(),
                details: vec![],
                hint: "commit your work first".into(),
            }));
        };
        let (main, tip) = match self.main_branch(configured_main) {
            Ok(m) => m,
            Err(r) => return Ok(Err(r)),
        };
        let at = match &head.branch {
            Some(b) => format!("branch `{b}`"),
            None => format!("detached HEAD {}", short(commit)),
        };
        if commit == tip || self.repo.graph_descendant_of(commit, tip)? {
            let (ahead, _) = self.repo.graph_ahead_behind(commit, tip)?;
            return Ok(Ok(Promotable {
                commit: commit.to_string(),
                branch: head.branch,
                ahead,
                main,
            }));
        }
        let (ahead, behind) = self.repo.graph_ahead_behind(commit, tip)?;
        let refusal = if ahead == 0 {
            Refusal {
                message: format!(
                    "{at} is {behind} commit{} behind `{main}`: it does not contain what production will have",
                    plural(behind)
                ),
                details: vec![format!("HEAD {} · {main} {}", short(commit), short(tip))],
                hint: match &head.branch {
                    Some(_) => format!("merge or rebase onto `{main}` (git rebase {main}), then --update and promote again"),
                    None => format!("check out a branch that contains `{main}` (git switch {main}), then promote again"),
                },
            }
        } else {
            Refusal {
                message: format!(
                    "{at} has diverged from `{main}` ({ahead} ahead, {behind} behind): it does not descend from `{main}`'s tip"
                ),
                details: vec![format!("HEAD {} · {main} {}", short(commit), short(tip))],
                hint: format!("rebase onto `{main}` (git rebase {main}), then --update and promote again"),
            }
        };
        Ok(Err(refusal))
    }
}

pub fn short(oid: Oid) -> String {
    oid.to_string().chars().take(7).collect()
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::ci_branch;

    fn with(vars: &[(&str, &str)]) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ci_branch(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn a_detached_ci_checkout_names_its_branch() {
        assert_eq!(with(&[]), None);
        assert_eq!(
            with(&[("GITHUB_HEAD_REF", "TKT-7-greeting")]).as_deref(),
            Some("TKT-7-greeting")
        );
        // A push build (no pull request): GITHUB_HEAD_REF is set but empty.
        assert_eq!(
            with(&[
                ("GITHUB_HEAD_REF", ""),
                ("GITHUB_REF_TYPE", "branch"),
                ("GITHUB_REF_NAME", "TKT-8")
            ])
            .as_deref(),
            Some("TKT-8")
        );
        assert_eq!(
            with(&[("GITHUB_REF_TYPE", "tag"), ("GITHUB_REF_NAME", "v1")]),
            None
        );
        assert_eq!(
            with(&[("CI_COMMIT_BRANCH", "TKT-9")]).as_deref(),
            Some("TKT-9")
        );
        assert_eq!(
            with(&[
                ("CI_MERGE_REQUEST_SOURCE_BRANCH_NAME", "TKT-10-fix"),
                ("CI_COMMIT_BRANCH", "")
            ])
            .as_deref(),
            Some("TKT-10-fix")
        );
        // A GitLab tag pipeline names the tag here: not a branch.
        assert_eq!(with(&[("CI_COMMIT_REF_NAME", "v1.2.0")]), None);
        for bad in ["a..b", "bad name", "x\n", "-", "end/", "a@{1}"] {
            assert_eq!(with(&[("GITHUB_HEAD_REF", bad)]), None, "{bad:?}");
        }
    }
}
