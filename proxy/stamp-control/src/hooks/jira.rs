//! `jira` (the hook): on promote/revert/close, performs the configured Jira
//! transition and comments with the share link and the actor.
//!
//! Transition ids differ per workflow, so they are looked up by name
//! (case-insensitively) through `GET …/issue/KEY/transitions`, then
//! `POST …/issue/KEY/transitions {"transition": {"id"}}`. When the issue
//! has no transition of that name but is already in a status of that name,
//! the step counts as done (so a retry after a failed comment does not
//! fail). The comment is ADF on Cloud (v3) and plain text on Data Center
//! (v2). Connection settings are the `jira` policy's.
//!
//! ```toml
//! [[hooks]]
//! kind = "jira"
//! url = "https://acme.atlassian.net"
//! email = "bot@acme.com"
//! token_env = "JIRA_TOKEN"
//! transitions = { "dev->qa" = "Ready for QA", "qa->prod" = "Done", "prod->qa" = "Reopen" }
//! ```

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Method;
use serde_json::{json, Value};

use super::{describe, Event, EventKind, Hook, HookError};
use crate::kit::jira::{Flavor, JiraClient, JiraError};
use crate::kit::Settings;
use stamp_model::ticket::Stage;

pub const KEYS: &[&str] = &[
    "url",
    "api",
    "email",
    "token",
    "token_env",
    "max_retry_wait",
    "transitions",
    "comment",
];

pub struct JiraHook {
    client: JiraClient,
    transitions: Vec<((Stage, Stage), String)>,
    comment: bool,
    /// Transitions already made for an event (so its retries only comment).
    done: Mutex<HashSet<(String, u64, EventKind)>>,
}

pub fn build(s: &mut Settings<'_>, _timeout: Duration) -> Option<Box<dyn Hook>> {
    let client = JiraClient::from_settings(s);
    let mut transitions = Vec::new();
    for (pair, names) in s.transition_lists("transitions").unwrap_or_default() {
        match names.as_slice() {
            [one] => transitions.push((pair, one.clone())),
            _ => s.problem(
                &format!("transitions.\"{}->{}\"", pair.0, pair.1),
                "must be one transition name",
            ),
        }
    }
    let comment = s.bool("comment", true);
    Some(Box::new(JiraHook {
        client: client?,
        transitions,
        comment,
        done: Mutex::new(HashSet::new()),
    }))
}

fn to_hook_error(e: JiraError) -> HookError {
    match e {
        JiraError::Refused(409, m) | JiraError::RateLimited(m) | JiraError::Outage(m) => {
            HookError::Retry(m)
        }
        JiraError::Refused(_, m) => HookError::Permanent(m),
    }
}

/// The comment body: ADF (v3) or plain text (v2).
pub fn comment_body(flavor: Flavor, e: &Event) -> Value {
    let sentence = format!("{} (ticket-stamp).", describe(e));
    match flavor {
        Flavor::DataCenter => {
            let text = match &e.share_link {
                Some(l) => format!("{sentence}\nShare link: {l}"),
                None => sentence,
            };
            json!({ "body": text })
        }
        Flavor::Cloud => {
            let mut content = vec![json!({"type": "text", "text": sentence})];
            if let Some(l) = &e.share_link {
                content.push(json!({"type": "text", "text": " Share link: "}));
                content.push(json!({"type": "text", "text": l, "marks": [{"type": "link", "attrs": {"href": l}}]}));
            }
            json!({
                "body": {
                    "type": "doc",
                    "version": 1,
                    "content": [{"type": "paragraph", "content": content}],
                }
            })
        }
    }
}

#[async_trait]
impl Hook for JiraHook {
    fn kind(&self) -> &'static str {
        "jira"
    }

    async fn deliver(&self, e: &Event) -> Result<(), HookError> {
        let key = &e.ticket;
        let id = (e.ticket.to_string(), e.at_ms, e.kind);
        let wanted = match (e.from, e.to) {
            (Some(f), Some(t)) => self
                .transitions
                .iter()
                .find(|(p, _)| *p == (f, t))
                .map(|(_, n)| n.clone()),
            _ => None,
        };
        let already = self.done.lock().map(|d| d.contains(&id)).unwrap_or(false);
        if let (Some(name), false) = (wanted, already) {
            let list = self
                .client
                .call(Method::GET, &format!("issue/{key}/transitions"), None, key)
                .await
                .map_err(to_hook_error)?;
            let available: Vec<(String, String)> = list["transitions"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|t| {
                            Some((
                                t["id"].as_str()?.to_string(),
                                t["name"].as_str()?.to_string(),
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default();
            match available
                .iter()
                .find(|(_, n)| n.eq_ignore_ascii_case(&name))
            {
                Some((tid, _)) => {
                    self.client
                        .call(
                            Method::POST,
                            &format!("issue/{key}/transitions"),
                            Some(&json!({"transition": {"id": tid}})),
                            key,
                        )
                        .await
                        .map_err(to_hook_error)?;
                }
                None => {
                    let status = self.client.status(key).await.map_err(to_hook_error)?;
                    if !status.eq_ignore_ascii_case(&name) {
                        return Err(HookError::Permanent(format!(
                            "{key} has no Jira transition named \"{name}\" from \"{status}\" (available: {})",
                            available.iter().map(|(_, n)| format!("\"{n}\"")).collect::<Vec<_>>().join(", ")
                        )));
                    }
                }
            }
            if let Ok(mut d) = self.done.lock() {
                if d.len() > 10_000 {
                    d.clear();
                }
                d.insert(id.clone());
            }
        }
        if self.comment {
            self.client
                .call(
                    Method::POST,
                    &format!("issue/{key}/comment"),
                    Some(&comment_body(self.client.flavor, e)),
                    key,
                )
                .await
                .map_err(to_hook_error)?;
        }
        if let Ok(mut d) = self.done.lock() {
            d.remove(&id);
        }
        Ok(())
    }
}
