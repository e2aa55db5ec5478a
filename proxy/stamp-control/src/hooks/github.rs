//! `github` (the hook): tells the ticket's pull request where the ticket
//! stands. On every upload, promote, revert, close and re-open:
//!
//! - **one comment** on the open pull request of the ticket's branch, made
//!   once and then edited in place (found again by a hidden marker), with
//!   the stage, the share link and the last change;
//! - **a GitHub Deployment per stage** (environment `{ticket}/{stage}` by
//!   default) with its statuses: `in_progress` then `success` (with the
//!   share link) when the ticket reaches the stage, `inactive` when it is
//!   reverted out of it or closed;
//! - **a commit status** (`ticket-stamp/{ticket}`) on the ticket's commit:
//!   `success` once a promotion passed every policy, `pending` while in dev or
//!   after a revert, `error` once closed.
//!
//! The branch and commit come with the event (`stamp` sends them); for an
//! event without them (a panel click) the ones last seen for the ticket are
//! used. Connection and auth settings are the `github` policy's.
//!
//! ```toml
//! [[hooks]]
//! kind = "github"
//! repo = "acme/shop"
//! token_env = "GITHUB_TOKEN"
//! comment = true
//! deployments = true
//! statuses = true
//! environment = "{ticket}/{stage}"
//! ```

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Method;
use serde_json::json;

use super::{describe, Event, EventKind, Hook, HookError};
use crate::kit::github::{github_keys, GitHubClient, GitHubError};
use crate::kit::Settings;
use stamp_model::ticket::{Stage, TicketKey};

pub const KEYS: &[&str] = github_keys!("comment", "deployments", "statuses", "environment");

/// A ticket's branch and commit, as last seen.
type Source = (Option<String>, Option<String>);

pub struct GitHubHook {
    client: GitHubClient,
    comment: bool,
    deployments: bool,
    statuses: bool,
    environment: String,
    /// Branch and commit last seen per ticket (for events without them).
    seen: Mutex<HashMap<TicketKey, Source>>,
    /// Steps already done for an event, so its retries do not repeat them.
    done: Mutex<HashSet<(String, u64, &'static str)>>,
}

pub fn build(s: &mut Settings<'_>, _timeout: Duration) -> Option<Box<dyn Hook>> {
    let client = GitHubClient::from_settings(s);
    let comment = s.bool("comment", true);
    let deployments = s.bool("deployments", true);
    let statuses = s.bool("statuses", true);
    let environment = s
        .string("environment")
        .unwrap_or_else(|| "{ticket}/{stage}".to_string());
    if !environment.contains("{ticket}") || !environment.contains("{stage}") {
        s.problem(
            "environment",
            "must name both {ticket} and {stage} (one environment per ticket and stage)",
        );
    }
    Some(Box::new(GitHubHook {
        client: client?,
        comment,
        deployments,
        statuses,
        environment,
        seen: Mutex::new(HashMap::new()),
        done: Mutex::new(HashSet::new()),
    }))
}

fn to_hook_error(e: GitHubError) -> HookError {
    match e {
        GitHubError::Refused(409, m) | GitHubError::RateLimited(m) | GitHubError::Outage(m) => {
            HookError::Retry(m)
        }
        GitHubError::Refused(_, m) => HookError::Permanent(m),
    }
}

/// GitHub cuts descriptions at 140 characters.
fn description(text: &str) -> String {
    if text.chars().count() <= 140 {
        return text.to_string();
    }
    text.chars().take(139).collect::<String>() + "…"
}

/// The hidden marker that finds our comment again.
fn marker(ticket: &TicketKey) -> String {
    format!("<!-- ticket-stamp:{ticket} -->")
}

/// The pull request comment.
pub fn comment_body(e: &Event) -> String {
    let stage = e.to.map_or("unknown", |s| s.as_str());
    let mut body = format!(
        "{}\n### ticket-stamp · `{}` is in **{stage}**\n\n",
        marker(&e.ticket),
        e.ticket
    );
    match (&e.share_link, e.to) {
        (_, Some(Stage::Prod)) => {
            body.push_str("Released: every visitor of production gets it.\n\n")
        }
        (_, Some(Stage::Closed)) => body.push_str("Closed: no link serves it any more.\n\n"),
        (Some(link), _) => body.push_str(&format!("Preview: {link}\n\n")),
        (None, _) => {}
    }
    body.push_str(&format!("_Last change: {}._\n", describe(e)));
    body
}

impl GitHubHook {
    fn env(&self, ticket: &TicketKey, stage: Stage) -> String {
        self.environment
            .replace("{ticket}", ticket.as_str())
            .replace("{stage}", stage.as_str())
    }

    /// Runs `step` once per event, however often the event is retried.
    async fn once<F, Fut>(&self, e: &Event, name: &'static str, step: F) -> Result<(), HookError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(), GitHubError>>,
    {
        let id = (e.ticket.to_string(), e.at_ms, name);
        if self.done.lock().map(|d| d.contains(&id)).unwrap_or(false) {
            return Ok(());
        }
        step().await.map_err(to_hook_error)?;
        if let Ok(mut d) = self.done.lock() {
            if d.len() > 10_000 {
                d.clear();
            }
            d.insert(id);
        }
        Ok(())
    }

    async fn status(&self, e: &Event, sha: &str) -> Result<(), GitHubError> {
        let to = e.to.map_or("?", |s| s.as_str());
        let (state, text) = match e.kind {
            EventKind::Promoted if e.to == Some(Stage::Prod) => (
                "success",
                format!(
                    "{} released to production by {}: every policy passed",
                    e.ticket, e.actor
                ),
            ),
            EventKind::Promoted => (
                "success",
                format!(
                    "{} promoted to {to} by {}: every policy passed",
                    e.ticket, e.actor
                ),
            ),
            EventKind::Reverted => (
                "pending",
                format!("{} reverted to {to} by {}", e.ticket, e.actor),
            ),
            EventKind::Closed => ("error", format!("{} closed by {}", e.ticket, e.actor)),
            _ => ("pending", format!("{} in {to}: not promoted yet", e.ticket)),
        };
        let mut body = json!({
            "state": state,
            "context": format!("ticket-stamp/{}", e.ticket),
            "description": description(&text),
        });
        if let Some(link) = &e.share_link {
            body["target_url"] = json!(link);
        }
        self.client
            .call(
                Method::POST,
                &self.client.repo_path(&format!("statuses/{sha}")),
                Some(&body),
            )
            .await
            .map(|_| ())
    }

    async fn deploy(&self, e: &Event, stage: Stage, git_ref: &str) -> Result<(), GitHubError> {
        let env = self.env(&e.ticket, stage);
        let created = self
            .client
            .call(
                Method::POST,
                &self.client.repo_path("deployments"),
                Some(&json!({
                    "ref": git_ref,
                    "environment": env,
                    "description": description(&describe(e)),
                    "auto_merge": false,
                    "required_contexts": [],
                    "transient_environment": stage != Stage::Prod,
                    "production_environment": stage == Stage::Prod,
                    "payload": { "ticket": e.ticket.as_str(), "stage": stage.as_str() },
                })),
            )
            .await?;
        let Some(id) = created["id"].as_u64() else {
            return Err(GitHubError::Outage(
                "GitHub created no deployment id".into(),
            ));
        };
        let statuses = self.client.repo_path(&format!("deployments/{id}/statuses"));
        self.client
            .call(
                Method::POST,
                &statuses,
                Some(&json!({ "state": "in_progress" })),
            )
            .await?;
        let mut done = json!({ "state": "success", "auto_inactive": true, "description": description(&describe(e)) });
        if let Some(link) = &e.share_link {
            done["environment_url"] = json!(link);
        }
        self.client
            .call(Method::POST, &statuses, Some(&done))
            .await
            .map(|_| ())
    }

    /// Marks the newest deployment of the ticket's `stage` inactive.
    async fn retire(&self, ticket: &TicketKey, stage: Stage) -> Result<(), GitHubError> {
        let env: String =
            url::form_urlencoded::byte_serialize(self.env(ticket, stage).as_bytes()).collect();
        let list = self
            .client
            .call(
                Method::GET,
                &self
                    .client
                    .repo_path(&format!("deployments?environment={env}&per_page=1")),
                None,
            )
            .await?;
        let Some(id) = list
            .as_array()
            .and_then(|a| a.first())
            .and_then(|d| d["id"].as_u64())
        else {
            return Ok(()); // never deployed: nothing to retire
        };
        self.client
            .call(
                Method::POST,
                &self.client.repo_path(&format!("deployments/{id}/statuses")),
                Some(&json!({ "state": "inactive" })),
            )
            .await
            .map(|_| ())
    }

    async fn comment(&self, e: &Event, branch: &str) -> Result<(), GitHubError> {
        let Some(pr) = self.client.pull_request(branch).await? else {
            log::debug!("github: no open pull request for {branch} ({})", e.ticket);
            return Ok(());
        };
        let Some(number) = pr["number"].as_u64() else {
            return Err(GitHubError::Outage(
                "GitHub sent a pull request without a number".into(),
            ));
        };
        let body = json!({ "body": comment_body(e) });
        let comments = self
            .client
            .list(
                &self.client.repo_path(&format!("issues/{number}/comments")),
                None,
            )
            .await?;
        let ours = marker(&e.ticket);
        let existing = comments
            .iter()
            .find(|c| c["body"].as_str().is_some_and(|b| b.starts_with(&ours)))
            .and_then(|c| c["id"].as_u64());
        match existing {
            Some(id) => {
                self.client
                    .call(
                        Method::PATCH,
                        &self.client.repo_path(&format!("issues/comments/{id}")),
                        Some(&body),
                    )
                    .await?;
            }
            None => {
                self.client
                    .call(
                        Method::POST,
                        &self.client.repo_path(&format!("issues/{number}/comments")),
                        Some(&body),
                    )
                    .await?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Hook for GitHubHook {
    fn kind(&self) -> &'static str {
        "github"
    }

    async fn deliver(&self, e: &Event) -> Result<(), HookError> {
        let (branch, commit) = {
            let mut seen = self
                .seen
                .lock()
                .map_err(|_| HookError::Permanent("state lock poisoned".into()))?;
            let entry = seen.entry(e.ticket.clone()).or_default();
            if e.branch.is_some() {
                entry.0 = e.branch.clone();
            }
            if e.commit.is_some() {
                entry.1 = e.commit.clone();
            }
            entry.clone()
        };
        if self.statuses {
            if let Some(sha) = &commit {
                self.once(e, "status", || self.status(e, sha)).await?;
            }
        }
        if self.deployments {
            match (e.kind, e.to) {
                (EventKind::Uploaded | EventKind::Reopened | EventKind::Promoted, Some(stage)) => {
                    if let Some(git_ref) = commit.as_ref().or(branch.as_ref()) {
                        self.once(e, "deploy", || self.deploy(e, stage, git_ref))
                            .await?;
                    }
                }
                (EventKind::Reverted, _) => {
                    if let Some(from) = e.from {
                        self.once(e, "retire", || self.retire(&e.ticket, from))
                            .await?;
                    }
                }
                (EventKind::Closed, _) => {
                    for stage in [Stage::Dev, Stage::Qa] {
                        let name = if stage == Stage::Dev {
                            "retire-dev"
                        } else {
                            "retire-qa"
                        };
                        self.once(e, name, || self.retire(&e.ticket, stage)).await?;
                    }
                }
                _ => {}
            }
        }
        if self.comment {
            if let Some(branch) = &branch {
                self.once(e, "comment", || self.comment(e, branch)).await?;
            }
        }
        // Delivered: forget its steps.
        if let Ok(mut d) = self.done.lock() {
            let ticket = e.ticket.to_string();
            d.retain(|(t, at, _)| !(t == &ticket && *at == e.at_ms));
        }
        Ok(())
    }
}
