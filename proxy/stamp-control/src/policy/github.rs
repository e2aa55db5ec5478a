//! `github` (the policy) and the GitHub REST client the `github` hook shares.
//!
//! The ticket's pull request is the open one whose head is the branch the
//! ticket's code came from (sent by `stamp`, else the newest one in the
//! ticket's history). The policy can require an approved review (the latest
//! review of some reviewer approves, and none asks for changes) and green
//! checks on the pull request's head commit (every check run and commit
//! status, or only those named in `checks`):
//!
//! ```toml
//! [[policies]]
//! kind = "github"
//! repo = "acme/shop"
//! token_env = "GITHUB_TOKEN"        # or app_id + installation_id + private_key_env
//! require_approval = true
//! require_checks = true
//! checks = ["build", "test"]        # default: every check on the head commit
//! on_outage = "deny"                # or "allow" (with a warning)
//! ```
//!
//! Auth is a token (a personal access token, an Actions token) or a GitHub
//! App: a JWT signed with the app's private key (RS256, by `jsonwebtoken`)
//! buys an installation token, cached until shortly before it expires.
//! 401, 403, 404 and 422 each give their own message; a rate limit (403 or
//! 429 with `x-ratelimit-remaining: 0` or `retry-after`) names when it
//! resets and is waited out when that is at most `max_retry_wait`. GitHub
//! unreachable or answering 5xx is an outage: the policy fails closed unless
//! `on_outage = "allow"`. Lists follow `Link: rel="next"` (100 per page, at
//! most 20 pages).

use async_trait::async_trait;
use reqwest::Method;

use super::{Built, Outcome, Policy, Settings, TransitionCtx};
use crate::kit::github::{github_keys, GitHubClient, GitHubError};
use stamp_model::ticket::Stage;

pub const KEYS: &[&str] = github_keys!("require_approval", "require_checks", "checks", "on_outage");

struct GitHubPolicy {
    client: GitHubClient,
    require_approval: bool,
    require_checks: bool,
    checks: Vec<String>,
    allow_on_outage: bool,
}

pub fn build(s: &mut Settings<'_>) -> Option<Built> {
    let client = GitHubClient::from_settings(s);
    let require_approval = s.bool("require_approval", true);
    let require_checks = s.bool("require_checks", true);
    let checks = s.strings("checks").unwrap_or_default();
    if !require_checks && !checks.is_empty() {
        s.problem("checks", "has no effect with require_checks = false");
    }
    let allow_on_outage = s.choice("on_outage", &["deny", "allow"], "deny") == "allow";
    Some(Built {
        policy: Box::new(GitHubPolicy {
            client: client?,
            require_approval,
            require_checks,
            checks,
            allow_on_outage,
        }),
        default_on: vec![(Stage::Qa, Stage::Prod)],
    })
}

impl GitHubPolicy {
    fn failed(&self, e: GitHubError) -> Outcome {
        match e {
            GitHubError::Outage(m) | GitHubError::RateLimited(m) if self.allow_on_outage => {
                Outcome::Warn(format!("github: not checked: {m}"))
            }
            other => Outcome::Deny(format!("github: {}", other.message())),
        }
    }

    /// The approval verdict: the latest review of each reviewer counts.
    async fn approval(&self, number: u64) -> Result<Outcome, GitHubError> {
        let reviews = self
            .client
            .list(
                &self.client.repo_path(&format!("pulls/{number}/reviews")),
                None,
            )
            .await?;
        let mut latest: std::collections::BTreeMap<String, String> = Default::default();
        for r in &reviews {
            let (Some(user), Some(state)) = (r["user"]["login"].as_str(), r["state"].as_str())
            else {
                continue;
            };
            // Comments do not change a reviewer's verdict.
            if matches!(state, "APPROVED" | "CHANGES_REQUESTED" | "DISMISSED") {
                latest.insert(user.to_string(), state.to_string());
            }
        }
        if let Some((who, _)) = latest.iter().find(|(_, s)| *s == "CHANGES_REQUESTED") {
            return Ok(Outcome::Deny(format!(
                "github: {who} requested changes on pull request #{number}"
            )));
        }
        let approvers: Vec<&String> = latest
            .iter()
            .filter(|(_, s)| *s == "APPROVED")
            .map(|(u, _)| u)
            .collect();
        Ok(if approvers.is_empty() {
            Outcome::Deny(format!(
                "github: pull request #{number} has no approved review"
            ))
        } else {
            Outcome::Allow
        })
    }

    /// The checks verdict on the pull request's head commit.
    async fn checks(&self, sha: &str) -> Result<Vec<Outcome>, GitHubError> {
        let runs = self
            .client
            .list(
                &self.client.repo_path(&format!("commits/{sha}/check-runs")),
                Some("check_runs"),
            )
            .await?;
        let statuses = self
            .client
            .call(
                Method::GET,
                &self.client.repo_path(&format!("commits/{sha}/status")),
                None,
            )
            .await?;
        // name → (state, passed)
        let mut seen: Vec<(String, String, bool)> = Vec::new();
        for r in &runs {
            let name = r["name"].as_str().unwrap_or("?").to_string();
            let status = r["status"].as_str().unwrap_or("");
            let conclusion = r["conclusion"].as_str().unwrap_or("");
            let passed =
                status == "completed" && matches!(conclusion, "success" | "neutral" | "skipped");
            let state = if status == "completed" {
                conclusion.to_string()
            } else {
                status.to_string()
            };
            seen.push((name, state, passed));
        }
        for s in statuses["statuses"].as_array().into_iter().flatten() {
            let name = s["context"].as_str().unwrap_or("?").to_string();
            // Ours says where the ticket stands: not a check of the code.
            if name.starts_with("ticket-stamp") {
                continue;
            }
            let state = s["state"].as_str().unwrap_or("").to_string();
            let passed = state == "success";
            seen.push((name, state, passed));
        }
        let mut out = Vec::new();
        if self.checks.is_empty() {
            for (name, state, passed) in &seen {
                if !passed {
                    out.push(Outcome::Deny(format!(
                        "github: check `{name}` is {state} on {}",
                        short(sha)
                    )));
                }
            }
        } else {
            for wanted in &self.checks {
                match seen.iter().find(|(n, ..)| n == wanted) {
                    Some((_, _, true)) => {}
                    Some((name, state, false)) => out.push(Outcome::Deny(format!(
                        "github: check `{name}` is {state} on {}",
                        short(sha)
                    ))),
                    None => out.push(Outcome::Deny(format!(
                        "github: required check `{wanted}` has not reported on {}",
                        short(sha)
                    ))),
                }
            }
        }
        if out.is_empty() {
            out.push(Outcome::Allow);
        }
        Ok(out)
    }
}

fn short(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

#[async_trait]
impl Policy for GitHubPolicy {
    fn kind(&self) -> &'static str {
        "github"
    }

    async fn check(&self, ctx: &TransitionCtx) -> Vec<Outcome> {
        let (branch, commit) = ctx.source();
        let Some(branch) = branch else {
            return vec![Outcome::Deny(
                "github: no branch is known for this ticket: run `stamp` inside its repository, on its branch".into(),
            )];
        };
        let pr = match self.client.pull_request(&branch).await {
            Ok(Some(pr)) => pr,
            Ok(None) => {
                return vec![Outcome::Deny(format!(
                    "github: no open pull request for branch {branch} in {}",
                    self.client.repo
                ))]
            }
            Err(e) => return vec![self.failed(e)],
        };
        let number = pr["number"].as_u64().unwrap_or(0);
        let head = pr["head"]["sha"].as_str().unwrap_or("").to_string();
        let mut out = Vec::new();
        if let Some(c) = &commit {
            if !head.is_empty() && c != &head {
                out.push(Outcome::Warn(format!(
                    "github: the ticket's code is from {}, pull request #{number} is at {}",
                    short(c),
                    short(&head)
                )));
            }
        }
        if self.require_approval {
            match self.approval(number).await {
                Ok(o) => out.push(o),
                Err(e) => out.push(self.failed(e)),
            }
        }
        if self.require_checks {
            if head.is_empty() {
                out.push(Outcome::Deny(format!(
                    "github: pull request #{number} has no head commit"
                )));
            } else {
                match self.checks(&head).await {
                    Ok(mut o) => out.append(&mut o),
                    Err(e) => out.push(self.failed(e)),
                }
            }
        }
        if out.is_empty() {
            out.push(Outcome::Allow);
        }
        out
    }
}
