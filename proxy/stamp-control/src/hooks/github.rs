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

use std::time::Duration;

use async_trait::async_trait;
use reqwest::Method;
use serde_json::json;

use super::review::{marker, note_body, standing, Sources, Standing, Steps};
use super::{describe, Event, EventKind, Hook, HookError};
use crate::kit::github::{github_keys, GitHubClient, GitHubError};
use crate::kit::Settings;
use stamp_model::ticket::{Stage, TicketKey};

pub const KEYS: &[&str] = github_keys!("comment", "deployments", "statuses", "environment");

pub struct GitHubHook {
    client: GitHubClient,
    comment: bool,
    deployments: bool,
    statuses: bool,
    environment: String,
    /// Branch and commit last seen per ticket (for events without them).
    seen: Sources,
    /// Steps already done for an event, so its retries do not repeat them.
    done: Steps,
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
        seen: Sources::default(),
        done: Steps::default(),
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

impl GitHubHook {
    fn env(&self, ticket: &TicketKey, stage: Stage) -> String {
        self.environment
            .replace("{ticket}", ticket.as_str())
            .replace("{stage}", stage.as_str())
    }

    async fn status(&self, e: &Event, sha: &str) -> Result<(), GitHubError> {
        let (standing, text) = standing(e);
        let state = match standing {
            Standing::Passed => "success",
            Standing::Stepping | Standing::Waiting => "pending",
            Standing::Closed => "error",
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
        let body = json!({ "body": note_body(e) });
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
        let (branch, commit) = self.seen.see(e)?;
        if self.statuses {
            if let Some(sha) = &commit {
                self.done
                    .once(e, "status", to_hook_error, || self.status(e, sha))
                    .await?;
            }
        }
        if self.deployments {
            match (e.kind, e.to) {
                (EventKind::Uploaded | EventKind::Reopened | EventKind::Promoted, Some(stage)) => {
                    if let Some(git_ref) = commit.as_ref().or(branch.as_ref()) {
                        self.done
                            .once(e, "deploy", to_hook_error, || {
                                self.deploy(e, stage, git_ref)
                            })
                            .await?;
                    }
                }
                (EventKind::Reverted, _) => {
                    if let Some(from) = e.from {
                        self.done
                            .once(e, "retire", to_hook_error, || self.retire(&e.ticket, from))
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
                        self.done
                            .once(e, name, to_hook_error, || self.retire(&e.ticket, stage))
                            .await?;
                    }
                }
                _ => {}
            }
        }
        if self.comment {
            if let Some(branch) = &branch {
                self.done
                    .once(e, "comment", to_hook_error, || self.comment(e, branch))
                    .await?;
            }
        }
        self.done.forget(e);
        Ok(())
    }
}
