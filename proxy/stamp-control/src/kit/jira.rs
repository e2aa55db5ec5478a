//! The Jira REST client that the `jira` policy and the `jira` hook share:
//! Cloud (REST v3, Basic email + API token) or Data Center (REST v2, a
//! Bearer personal access token); 401/403/404/409/429 each give their own
//! message, and a 429 is retried after its `Retry-After` when that is at
//! most `max_retry_wait`.

use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;

use super::{http_client, truncate, Secret, Settings};
use stamp_model::ticket::TicketKey;

/// Which Jira.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Jira Cloud: REST v3, Basic auth with an account email and API token.
    Cloud,
    /// Jira Data Center / Server: REST v2, Bearer personal access token.
    DataCenter,
}

/// A Jira site and how to authenticate to it.
pub struct JiraClient {
    base: String,
    pub flavor: Flavor,
    email: Option<String>,
    token: Secret,
    max_retry_wait: Duration,
    client: reqwest::Client,
}

/// Why a Jira call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JiraError {
    /// A definite answer (401, 403, 404, 409, 400…): retrying will not help.
    Refused(u16, String),
    /// 429 whose wait was longer than `max_retry_wait` (or repeated).
    RateLimited(String),
    /// Jira down, unreachable, slow or answering 5xx.
    Outage(String),
}

impl JiraError {
    pub fn message(&self) -> &str {
        match self {
            JiraError::Refused(_, m) | JiraError::RateLimited(m) | JiraError::Outage(m) => m,
        }
    }
}

impl JiraClient {
    /// Reads `url`, `api`, `email`, `token`/`token_env`, `timeout`, `max_retry_wait`.
    pub fn from_settings(s: &mut Settings<'_>) -> Option<JiraClient> {
        let url = s.required_string("url", "the Jira site, e.g. https://acme.atlassian.net");
        if let Some(u) = &url {
            if url::Url::parse(u)
                .map(|u| !matches!(u.scheme(), "http" | "https"))
                .unwrap_or(true)
            {
                s.problem("url", format!("`{u}` is not an http(s) URL"));
            }
        }
        let flavor = match s.choice("api", &["cloud", "datacenter"], "cloud") {
            "cloud" => Flavor::Cloud,
            _ => Flavor::DataCenter,
        };
        let email = s.string("email");
        if flavor == Flavor::Cloud && email.is_none() {
            s.problem(
                "email",
                "is required with api = \"cloud\" (the account the API token belongs to)",
            );
        }
        let token = s.secret(
            "token",
            true,
            match flavor {
                Flavor::Cloud => "an Atlassian API token",
                Flavor::DataCenter => "a personal access token",
            },
        );
        let timeout = s.duration("timeout", Duration::from_secs(10));
        let max_retry_wait = s.duration("max_retry_wait", Duration::from_secs(10));
        Some(JiraClient {
            base: url?.trim_end_matches('/').to_string(),
            flavor,
            email,
            token: token?,
            max_retry_wait,
            client: http_client(timeout),
        })
    }

    /// `/rest/api/3` (Cloud) or `/rest/api/2` (Data Center).
    pub fn api_path(&self, rest: &str) -> String {
        let v = match self.flavor {
            Flavor::Cloud => 3,
            Flavor::DataCenter => 2,
        };
        format!("{}/rest/api/{v}/{rest}", self.base)
    }

    fn auth(&self) -> Result<String, String> {
        let token = self.token.resolve()?;
        Ok(match self.flavor {
            Flavor::Cloud => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{token}", self.email.as_deref().unwrap_or("")))
            ),
            Flavor::DataCenter => format!("Bearer {token}"),
        })
    }

    /// Sends a request for `key`; `Ok` with the JSON body (or `Null`) on 2xx.
    pub async fn call(
        &self,
        method: reqwest::Method,
        rest: &str,
        body: Option<&Value>,
        key: &TicketKey,
    ) -> Result<Value, JiraError> {
        let auth = self
            .auth()
            .map_err(|e| JiraError::Refused(0, format!("Jira credentials: {e}")))?;
        let url = self.api_path(rest);
        let mut waited = false;
        loop {
            let mut req = self
                .client
                .request(method.clone(), &url)
                .header("authorization", &auth)
                .header("accept", "application/json");
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => return Err(JiraError::Outage(super::no_answer("Jira", &self.base, &e))),
            };
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let text = resp.text().await.unwrap_or_default();
            if (200..300).contains(&status) {
                return Ok(serde_json::from_str(&text).unwrap_or(Value::Null));
            }
            let detail = jira_messages(&text);
            let detail = if detail.is_empty() {
                String::new()
            } else {
                format!(": {detail}")
            };
            return Err(match status {
                429 => {
                    let wait = retry_after.map(Duration::from_secs);
                    if let Some(w) = wait.filter(|w| !waited && *w <= self.max_retry_wait) {
                        tokio::time::sleep(w).await;
                        waited = true;
                        continue;
                    }
                    JiraError::RateLimited(match retry_after {
                        Some(s) => format!("Jira is rate limiting requests (429); retry after {s}s"),
                        None => "Jira is rate limiting requests (429)".to_string(),
                    })
                }
                401 => JiraError::Refused(
                    401,
                    match self.flavor {
                        Flavor::Cloud => format!("Jira rejected the credentials (401): check `email` and the API token{detail}"),
                        Flavor::DataCenter => format!("Jira rejected the credentials (401): check the personal access token{detail}"),
                    },
                ),
                403 => JiraError::Refused(
                    403,
                    format!("the Jira account may not do this on {key} (403 Forbidden){detail}"),
                ),
                404 => JiraError::Refused(
                    404,
                    format!("{key} does not exist in Jira, or the account cannot see it (404){detail}"),
                ),
                409 => JiraError::Refused(
                    409,
                    format!("Jira reports a conflict on {key} (409){detail}; try again"),
                ),
                s if s >= 500 => JiraError::Outage(format!("Jira answered {s}{detail}")),
                s => JiraError::Refused(s, format!("Jira answered {s}{detail}")),
            });
        }
    }

    /// The status name.
    pub async fn status(&self, key: &TicketKey) -> Result<String, JiraError> {
        let v = self
            .call(
                reqwest::Method::GET,
                &format!("issue/{key}?fields=status"),
                None,
                key,
            )
            .await?;
        v.pointer("/fields/status/name")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| {
                JiraError::Outage(format!("Jira's answer for {key} has no fields.status.name"))
            })
    }
}

/// Jira's `{"errorMessages": [...], "errors": {field: msg}}`, flattened.
fn jira_messages(text: &str) -> String {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        // An error page (HTML from a gateway) says nothing useful.
        let t = text.trim();
        return if t.starts_with('<') {
            String::new()
        } else {
            truncate(t, 200)
        };
    };
    let mut parts: Vec<String> = v
        .get("errorMessages")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if let Some(errs) = v.get("errors").and_then(Value::as_object) {
        for (k, m) in errs {
            parts.push(format!("{k}: {}", m.as_str().unwrap_or_default()));
        }
    }
    truncate(&parts.join("; "), 500)
}
