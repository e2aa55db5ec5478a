//! `jira` (the policy) and the Jira client the `jira` hook shares.
//!
//! The ticket key is the Jira issue key. The policy requires the issue to
//! exist and, for the transitions listed in `statuses`, to be in one of the
//! listed statuses (compared case-insensitively):
//!
//! ```toml
//! [[policies]]
//! kind = "jira"
//! url = "https://acme.atlassian.net"
//! api = "cloud"                    # REST v3, Basic email + API token
//! email = "bot@acme.com"
//! token_env = "JIRA_TOKEN"
//! statuses = { "dev->qa" = ["In Review"], "qa->prod" = ["Approved"] }
//! on_outage = "deny"               # or "allow" (with a warning)
//! ```
//!
//! `api = "datacenter"` uses REST v2 with a Bearer personal access token.
//! 401/403/404/409/429 each give their own message; a 429 is retried after
//! its `Retry-After` when that is at most `max_retry_wait`. An unreachable
//! Jira or a 5xx is an outage: the policy fails closed unless `on_outage =
//! "allow"`.

use async_trait::async_trait;

use super::{Built, Outcome, Policy, Settings, TransitionCtx};
use crate::kit::jira::{JiraClient, JiraError};
use crate::kit::promotions;
use stamp_model::ticket::Stage;

pub const KEYS: &[&str] = &[
    "url",
    "api",
    "email",
    "token",
    "token_env",
    "timeout",
    "max_retry_wait",
    "statuses",
    "on_outage",
];

pub struct JiraPolicy {
    client: JiraClient,
    statuses: Vec<((Stage, Stage), Vec<String>)>,
    fail_open: bool,
}

pub fn build(s: &mut Settings<'_>) -> Option<Built> {
    let client = JiraClient::from_settings(s);
    let statuses = s.transition_lists("statuses").unwrap_or_default();
    let fail_open = s.choice("on_outage", &["deny", "allow"], "deny") == "allow";
    let default_on = if statuses.is_empty() {
        promotions()
    } else {
        statuses.iter().map(|(p, _)| *p).collect()
    };
    Some(Built {
        policy: Box::new(JiraPolicy {
            client: client?,
            statuses,
            fail_open,
        }),
        default_on,
    })
}

#[async_trait]
impl Policy for JiraPolicy {
    fn kind(&self) -> &'static str {
        "jira"
    }

    async fn check(&self, ctx: &TransitionCtx) -> Vec<Outcome> {
        let key = &ctx.ticket.key;
        let status = match self.client.status(key).await {
            Ok(s) => s,
            Err(JiraError::Outage(m)) if self.fail_open => {
                return vec![Outcome::Warn(format!(
                    "{m}; allowed because on_outage = \"allow\""
                ))]
            }
            Err(JiraError::Outage(m)) => {
                return vec![Outcome::Deny(format!(
                    "{m}; refusing while Jira cannot be asked (on_outage = \"deny\")"
                ))]
            }
            Err(e) => return vec![Outcome::Deny(e.message().to_string())],
        };
        let Some((_, allowed)) = self.statuses.iter().find(|(p, _)| *p == (ctx.from, ctx.to))
        else {
            return vec![Outcome::Allow];
        };
        if allowed.iter().any(|a| a.eq_ignore_ascii_case(&status)) {
            vec![Outcome::Allow]
        } else {
            vec![Outcome::Deny(format!(
                "{key} is \"{status}\" in Jira; {}->{} needs {}",
                ctx.from,
                ctx.to,
                allowed
                    .iter()
                    .map(|a| format!("\"{a}\""))
                    .collect::<Vec<_>>()
                    .join(" or ")
            ))]
        }
    }
}
