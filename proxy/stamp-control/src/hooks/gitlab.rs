//! `gitlab` (the hook): tells the ticket's merge request where the ticket
//! stands. On every upload, promote, revert, close, re-open and rollout
//! step:
//!
//! - **one note** on the open merge request of the ticket's branch, made
//!   once and then edited in place (found again by a hidden marker, among
//!   the notes of the token's own user), with the stage, the share link and
//!   the last change;
//! - **an environment per stage** (`{ticket}/{stage}` by default, tier
//!   `development`, `testing` or `production`) whose URL is the share link,
//!   with a deployment that goes `running` then `success` when the ticket
//!   reaches the stage; the environment is stopped when the ticket is
//!   reverted out of the stage or closed;
//! - **a commit status** (`ticket-stamp/{ticket}`) on the ticket's commit:
//!   `pending` in dev and after a revert, `running` while a rollout steps,
//!   `success` once a promotion passed every policy, `canceled` once closed.
//!
//! The branch and commit come with the event (`stamp` sends them); for an
//! event without them (a panel click) the ones last seen for the ticket are
//! used. Connection and auth settings are the `gitlab` policy's.
//!
//! ```toml
//! [[hooks]]
//! kind = "gitlab"
//! project = "acme/shop"               # or its numeric id
//! url = "https://gitlab.example.com"  # default https://gitlab.com
//! token_env = "GITLAB_TOKEN"
//! note = true
//! environments = true
//! statuses = true
//! environment = "{ticket}/{stage}"
//! ```

use std::time::Duration;

use async_trait::async_trait;
use reqwest::Method;
use serde_json::{json, Value};

use super::review::{marker, note_body, standing, Sources, Standing, Steps};
use super::{Event, EventKind, Hook, HookError};
use crate::kit::gitlab::{escape, gitlab_keys, GitLabClient, GitLabError};
use crate::kit::{truncate, Settings};
use stamp_model::ticket::{Stage, TicketKey};

pub const KEYS: &[&str] = gitlab_keys!("note", "environments", "statuses", "environment");

pub struct GitLabHook {
    client: GitLabClient,
    note: bool,
    environments: bool,
    statuses: bool,
    environment: String,
    seen: Sources,
    done: Steps,
}

/// What GitLab allows in an environment name besides letters and digits.
fn valid_environment(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('/')
        && !name.ends_with('/')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " -_/${}.".contains(c))
}

pub fn build(s: &mut Settings<'_>, _timeout: Duration) -> Option<Box<dyn Hook>> {
    let client = GitLabClient::from_settings(s);
    let note = s.bool("note", true);
    let environments = s.bool("environments", true);
    let statuses = s.bool("statuses", true);
    let environment = s
        .string("environment")
        .unwrap_or_else(|| "{ticket}/{stage}".to_string());
    if !environment.contains("{ticket}") || !environment.contains("{stage}") {
        s.problem(
            "environment",
            "must name both {ticket} and {stage} (one environment per ticket and stage)",
        );
    } else if !valid_environment(
        &environment
            .replace("{ticket}", "T-1")
            .replace("{stage}", "dev"),
    ) {
        s.problem(
            "environment",
            format!("`{environment}` is not a GitLab environment name: letters, digits, spaces and - _ / $ {{ }} . only, not starting or ending with /"),
        );
    }
    Some(Box::new(GitLabHook {
        client: client?,
        note,
        environments,
        statuses,
        environment,
        seen: Sources::default(),
        done: Steps::default(),
    }))
}

/// 409 (a concurrent change), 429 and outages are worth a retry.
fn to_hook_error(e: GitLabError) -> HookError {
    match e {
        GitLabError::Refused(409, m) | GitLabError::RateLimited(m) | GitLabError::Outage(m) => {
            HookError::Retry(m)
        }
        GitLabError::Refused(_, m) => HookError::Permanent(m),
    }
}

fn tier(stage: Stage) -> &'static str {
    match stage {
        Stage::Dev => "development",
        Stage::Qa => "testing",
        _ => "production",
    }
}

impl GitLabHook {
    fn env(&self, ticket: &TicketKey, stage: Stage) -> String {
        self.environment
            .replace("{ticket}", ticket.as_str())
            .replace("{stage}", stage.as_str())
    }

    async fn status(&self, e: &Event, sha: &str, branch: Option<&str>) -> Result<(), GitLabError> {
        let (standing, text) = standing(e);
        let state = match standing {
            Standing::Passed => "success",
            Standing::Stepping => "running",
            Standing::Waiting => "pending",
            Standing::Closed => "canceled",
        };
        let mut body = json!({
            "state": state,
            "name": format!("ticket-stamp/{}", e.ticket),
            "description": truncate(&text, 250),
        });
        if let Some(link) = &e.share_link {
            body["target_url"] = json!(link);
        }
        if let Some(b) = branch {
            body["ref"] = json!(b);
        }
        match self
            .client
            .call(
                Method::POST,
                &self.client.project_path(&format!("statuses/{sha}")),
                Some(&body),
            )
            .await
        {
            // GitLab refuses to move a status that is not finished to the
            // state it is already in (`Cannot transition status via :enqueue
            // from :pending`): it already says what we would.
            Err(GitLabError::Refused(400, m))
                if m.contains(&format!("from :{state}"))
                    || (state == "running" && m.contains("from :running")) =>
            {
                Ok(())
            }
            other => other.map(|_| ()),
        }
    }

    /// The environment named `name`, if it exists.
    async fn find_environment(&self, name: &str) -> Result<Option<Value>, GitLabError> {
        let list = self
            .client
            .list(
                &self
                    .client
                    .project_path(&format!("environments?name={}", escape(name))),
            )
            .await?;
        Ok(list
            .into_iter()
            .find(|env| env["name"].as_str() == Some(name)))
    }

    /// The environment of `stage`, made or brought up to date, then a
    /// deployment to it: running, then success.
    async fn deploy(
        &self,
        e: &Event,
        stage: Stage,
        sha: &str,
        branch: &str,
    ) -> Result<(), GitLabError> {
        let name = self.env(&e.ticket, stage);
        let mut wanted = json!({ "tier": tier(stage) });
        if let Some(link) = &e.share_link {
            wanted["external_url"] = json!(link);
        }
        match self.find_environment(&name).await? {
            Some(env) => {
                let id = env["id"].as_u64().ok_or_else(|| {
                    GitLabError::Outage("GitLab sent an environment without an id".into())
                })?;
                let stale = env["external_url"] != wanted["external_url"]
                    && !wanted["external_url"].is_null();
                if stale {
                    self.client
                        .call(
                            Method::PUT,
                            &self.client.project_path(&format!("environments/{id}")),
                            Some(&wanted),
                        )
                        .await?;
                }
            }
            None => {
                wanted["name"] = json!(name);
                self.client
                    .call(
                        Method::POST,
                        &self.client.project_path("environments"),
                        Some(&wanted),
                    )
                    .await?;
            }
        }
        let created = self
            .client
            .call(
                Method::POST,
                &self.client.project_path("deployments"),
                Some(&json!({
                    "environment": name,
                    "sha": sha,
                    "ref": branch,
                    "tag": false,
                    "status": "running",
                })),
            )
            .await?;
        let Some(id) = created["id"].as_u64() else {
            return Err(GitLabError::Outage(
                "GitLab created no deployment id".into(),
            ));
        };
        self.client
            .call(
                Method::PUT,
                &self.client.project_path(&format!("deployments/{id}")),
                Some(&json!({ "status": "success" })),
            )
            .await
            .map(|_| ())
    }

    /// Stops the environment of the ticket's `stage`, if it exists.
    async fn stop(&self, ticket: &TicketKey, stage: Stage) -> Result<(), GitLabError> {
        let Some(env) = self.find_environment(&self.env(ticket, stage)).await? else {
            return Ok(()); // never deployed: nothing to stop
        };
        if env["state"].as_str() == Some("stopped") {
            return Ok(());
        }
        let Some(id) = env["id"].as_u64() else {
            return Err(GitLabError::Outage(
                "GitLab sent an environment without an id".into(),
            ));
        };
        self.client
            .call(
                Method::POST,
                &self.client.project_path(&format!("environments/{id}/stop")),
                None,
            )
            .await
            .map(|_| ())
    }

    /// The commit at the head of `branch` (a deployment needs one).
    async fn head_of(&self, branch: &str) -> Result<String, GitLabError> {
        let b = self
            .client
            .call(
                Method::GET,
                &self
                    .client
                    .project_path(&format!("repository/branches/{}", escape(branch))),
                None,
            )
            .await?;
        b["commit"]["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| GitLabError::Outage(format!("GitLab sent no commit for {branch}")))
    }

    async fn note(&self, e: &Event, branch: &str) -> Result<(), GitLabError> {
        let Some(mr) = self.client.merge_request(branch).await? else {
            log::debug!("gitlab: no open merge request for {branch} ({})", e.ticket);
            return Ok(());
        };
        let Some(iid) = mr["iid"].as_u64() else {
            return Err(GitLabError::Outage(
                "GitLab sent a merge request without an iid".into(),
            ));
        };
        let notes_path = self
            .client
            .project_path(&format!("merge_requests/{iid}/notes"));
        let notes = self
            .client
            .list(&format!("{notes_path}?sort=asc&order_by=created_at"))
            .await?;
        let me = self.client.me().await;
        let ours = marker(&e.ticket);
        let existing = notes
            .iter()
            .filter(|n| n["system"].as_bool() != Some(true))
            // Someone may quote our marker: only our own note is ours.
            .filter(|n| me.is_none() || n["author"]["id"].as_u64() == me)
            .find(|n| n["body"].as_str().is_some_and(|b| b.starts_with(&ours)))
            .and_then(|n| n["id"].as_u64());
        let body = json!({ "body": note_body(e) });
        match existing {
            Some(id) => {
                self.client
                    .call(Method::PUT, &format!("{notes_path}/{id}"), Some(&body))
                    .await?;
            }
            None => {
                self.client
                    .call(Method::POST, &notes_path, Some(&body))
                    .await?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Hook for GitLabHook {
    fn kind(&self) -> &'static str {
        "gitlab"
    }

    async fn deliver(&self, e: &Event) -> Result<(), HookError> {
        let (branch, commit) = self.seen.see(e)?;
        if self.statuses {
            if let Some(sha) = &commit {
                self.done
                    .once(e, "status", to_hook_error, || {
                        self.status(e, sha, branch.as_deref())
                    })
                    .await?;
            }
        }
        if self.environments {
            match (e.kind, e.to) {
                (EventKind::Uploaded | EventKind::Reopened | EventKind::Promoted, Some(stage)) => {
                    if let Some(branch) = &branch {
                        self.done
                            .once(e, "deploy", to_hook_error, || async {
                                let sha = match &commit {
                                    Some(c) => c.clone(),
                                    None => self.head_of(branch).await?,
                                };
                                self.deploy(e, stage, &sha, branch).await
                            })
                            .await?;
                    }
                }
                (EventKind::Reverted, _) => {
                    if let Some(from) = e.from {
                        self.done
                            .once(e, "stop", to_hook_error, || self.stop(&e.ticket, from))
                            .await?;
                    }
                }
                (EventKind::Closed, _) => {
                    self.done
                        .once(e, "stop-dev", to_hook_error, || {
                            self.stop(&e.ticket, Stage::Dev)
                        })
                        .await?;
                    self.done
                        .once(e, "stop-qa", to_hook_error, || {
                            self.stop(&e.ticket, Stage::Qa)
                        })
                        .await?;
                }
                _ => {}
            }
        }
        if self.note {
            if let Some(branch) = &branch {
                self.done
                    .once(e, "note", to_hook_error, || self.note(e, branch))
                    .await?;
            }
        }
        self.done.forget(e);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_names() {
        assert!(valid_environment("TKT-1/dev"));
        assert!(valid_environment("review/T-1 dev"));
        for bad in ["", "/x", "x/", "a\"b", "a<b", "a\nb"] {
            assert!(!valid_environment(bad), "{bad:?}");
        }
    }
}
