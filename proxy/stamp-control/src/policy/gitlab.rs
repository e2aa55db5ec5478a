//! `gitlab` (the policy): the ticket's merge request is approved and its
//! head pipeline succeeded.
//!
//! The ticket's merge request is the open one whose source branch is the
//! branch the ticket's code came from (sent by `stamp`, else the newest one
//! in the ticket's history). The policy can require:
//!
//! - **approvals**: every approval rule GitLab reports for the merge
//!   request is met (`approval_state`, where the instance's tier has rules),
//!   no approvals are left, and at least `min_approvals` people approved;
//! - **a green pipeline**: the merge request's head pipeline ran on its
//!   head commit and succeeded;
//! - **not a draft**, unless `allow_draft = true`.
//!
//! ```toml
//! [[policies]]
//! kind = "gitlab"
//! project = "acme/shop"               # or its numeric id
//! url = "https://gitlab.example.com"  # default https://gitlab.com
//! token_env = "GITLAB_TOKEN"          # personal, project or group token, `read_api` is enough
//! require_approval = true
//! min_approvals = 1
//! require_pipeline = true
//! on_outage = "deny"                  # or "allow" (with a warning)
//! ```
//!
//! 401, 403, 404 and 409 each give their own message; a rate limit (429)
//! names when it resets and is waited out when that is at most
//! `max_retry_wait`. GitLab unreachable or answering 5xx is an outage: the
//! policy fails closed unless `on_outage = "allow"`.

use async_trait::async_trait;
use reqwest::Method;
use serde_json::Value;

use super::{Built, Outcome, Policy, Settings, TransitionCtx};
use crate::kit::gitlab::{gitlab_keys, GitLabClient, GitLabError};
use stamp_model::ticket::Stage;

pub const KEYS: &[&str] = gitlab_keys!(
    "require_approval",
    "min_approvals",
    "require_pipeline",
    "allow_draft",
    "on_outage"
);

struct GitLabPolicy {
    client: GitLabClient,
    require_approval: bool,
    min_approvals: u64,
    require_pipeline: bool,
    allow_draft: bool,
    allow_on_outage: bool,
}

pub fn build(s: &mut Settings<'_>) -> Option<Built> {
    let client = GitLabClient::from_settings(s);
    let require_approval = s.bool("require_approval", true);
    let min_approvals = s.integer("min_approvals", 1, 0, 100);
    if !require_approval && s.has("min_approvals") {
        s.problem(
            "min_approvals",
            "has no effect with require_approval = false",
        );
    }
    let require_pipeline = s.bool("require_pipeline", true);
    let allow_draft = s.bool("allow_draft", false);
    let allow_on_outage = s.choice("on_outage", &["deny", "allow"], "deny") == "allow";
    Some(Built {
        policy: Box::new(GitLabPolicy {
            client: client?,
            require_approval,
            min_approvals,
            require_pipeline,
            allow_draft,
            allow_on_outage,
        }),
        default_on: vec![(Stage::Qa, Stage::Prod)],
    })
}

fn short(sha: &str) -> &str {
    sha.get(..8).unwrap_or(sha)
}

fn plural(n: u64, one: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

/// `n more approval(s)`.
fn more(n: u64) -> String {
    if n == 1 {
        "1 more approval".to_string()
    } else {
        format!("{n} more approvals")
    }
}

/// The usernames in a list of approvers (`[{user: {username}}]` in
/// `approvals`, `[{username}]` in a rule of `approval_state`).
fn usernames(list: &Value) -> Vec<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| {
            a["user"]["username"]
                .as_str()
                .or_else(|| a["username"].as_str())
                .map(str::to_string)
        })
        .collect()
}

impl GitLabPolicy {
    fn failed(&self, e: GitLabError) -> Outcome {
        match e {
            GitLabError::Outage(m) | GitLabError::RateLimited(m) if self.allow_on_outage => {
                Outcome::Warn(format!("gitlab: not checked: {m}"))
            }
            other => Outcome::Deny(format!("gitlab: {}", other.message())),
        }
    }

    /// Every approval rule met, none left, enough people.
    async fn approvals(&self, iid: u64) -> Result<Vec<Outcome>, GitLabError> {
        let mut out = Vec::new();
        let mr = |rest: &str| {
            self.client
                .project_path(&format!("merge_requests/{iid}/{rest}"))
        };
        // Approval rules exist on some tiers only; elsewhere GitLab answers
        // 403 or 404 and the count below is the whole story.
        match self
            .client
            .call(Method::GET, &mr("approval_state"), None)
            .await
        {
            Ok(state) => {
                for rule in state["rules"].as_array().into_iter().flatten() {
                    let required = rule["approvals_required"].as_u64().unwrap_or(0);
                    let has = usernames(&rule["approved_by"]).len() as u64;
                    let met = rule["approved"].as_bool().unwrap_or(has >= required);
                    if required > 0 && !met {
                        let name = rule["name"].as_str().unwrap_or("?");
                        out.push(Outcome::Deny(format!(
                            "gitlab: approval rule `{name}` of merge request !{iid} needs {} ({has} of {required})",
                            more(required.saturating_sub(has).max(1))
                        )));
                    }
                }
            }
            Err(GitLabError::Refused(403 | 404, _)) => {}
            Err(e) => return Err(e),
        }
        let approvals = self
            .client
            .call(Method::GET, &mr("approvals"), None)
            .await?;
        let approvers = usernames(&approvals["approved_by"]);
        let left = approvals["approvals_left"].as_u64().unwrap_or(0);
        if left > 0 && out.is_empty() {
            out.push(Outcome::Deny(format!(
                "gitlab: merge request !{iid} needs {}",
                more(left)
            )));
        }
        if (approvers.len() as u64) < self.min_approvals {
            out.push(Outcome::Deny(if approvers.is_empty() {
                format!("gitlab: merge request !{iid} has no approval")
            } else {
                format!(
                    "gitlab: merge request !{iid} has {} ({}), {} required",
                    plural(approvers.len() as u64, "approval"),
                    approvers.join(", "),
                    self.min_approvals
                )
            }));
        }
        Ok(out)
    }

    /// The head pipeline, on the head commit, succeeded.
    fn pipeline(&self, mr: &Value, iid: u64) -> Option<Outcome> {
        let head = mr["sha"].as_str().unwrap_or("");
        let p = &mr["head_pipeline"];
        if p.is_null() {
            return Some(Outcome::Deny(format!(
                "gitlab: merge request !{iid} has no pipeline for its head commit {}",
                short(head)
            )));
        }
        let id = p["id"].as_u64().unwrap_or(0);
        let status = p["status"].as_str().unwrap_or("unknown");
        let ran_on = p["sha"].as_str().unwrap_or("");
        if !head.is_empty() && !ran_on.is_empty() && ran_on != head {
            return Some(Outcome::Deny(format!(
                "gitlab: the head pipeline #{id} of merge request !{iid} ran on {}, not on its head commit {}",
                short(ran_on),
                short(head)
            )));
        }
        (status != "success").then(|| {
            Outcome::Deny(format!(
                "gitlab: the head pipeline #{id} of merge request !{iid} is {status}"
            ))
        })
    }
}

#[async_trait]
impl Policy for GitLabPolicy {
    fn kind(&self) -> &'static str {
        "gitlab"
    }

    async fn check(&self, ctx: &TransitionCtx) -> Vec<Outcome> {
        let (branch, commit) = ctx.source();
        let Some(branch) = branch else {
            return vec![Outcome::Deny(
                "gitlab: no branch is known for this ticket: run `stamp` inside its repository, on its branch".into(),
            )];
        };
        let listed = match self.client.merge_request(&branch).await {
            Ok(Some(mr)) => mr,
            Ok(None) => {
                return vec![Outcome::Deny(format!(
                    "gitlab: no open merge request for branch {branch} in {}",
                    self.client.project
                ))]
            }
            Err(e) => return vec![self.failed(e)],
        };
        let Some(iid) = listed["iid"].as_u64() else {
            return vec![self.failed(GitLabError::Outage(
                "GitLab sent a merge request without an iid".into(),
            ))];
        };
        // The single merge request carries its head pipeline.
        let mr = match self
            .client
            .call(
                Method::GET,
                &self.client.project_path(&format!("merge_requests/{iid}")),
                None,
            )
            .await
        {
            Ok(mr) => mr,
            Err(e) => return vec![self.failed(e)],
        };
        let mut out = Vec::new();
        let head = mr["sha"].as_str().unwrap_or("");
        if let Some(c) = &commit {
            if !head.is_empty() && c != head {
                out.push(Outcome::Warn(format!(
                    "gitlab: the ticket's code is from {}, merge request !{iid} is at {}",
                    short(c),
                    short(head)
                )));
            }
        }
        let draft =
            mr["draft"].as_bool() == Some(true) || mr["work_in_progress"].as_bool() == Some(true);
        if draft && !self.allow_draft {
            out.push(Outcome::Deny(format!(
                "gitlab: merge request !{iid} is a draft"
            )));
        }
        if self.require_approval {
            match self.approvals(iid).await {
                Ok(mut o) => out.append(&mut o),
                Err(e) => out.push(self.failed(e)),
            }
        }
        if self.require_pipeline {
            out.extend(self.pipeline(&mr, iid));
        }
        if out.is_empty() {
            out.push(Outcome::Allow);
        }
        out
    }
}
