//! The GitLab REST (API v4) client that the `gitlab` policy and the `gitlab`
//! hook share. gitlab.com or a self-managed instance (`url`, with or without
//! a relative root; `/api/v4` is added); a personal, project or group access
//! token sent as `PRIVATE-TOKEN`. 400, 401, 403, 404 and 409 each give their
//! own message; 429 names when the limit resets (`Retry-After`, else
//! `RateLimit-Reset`) and is waited out when that is at most
//! `max_retry_wait`; 5xx, timeouts and refused connections are outages.
//! Lists follow `X-Next-Page`, else `Link: rel="next"` (100 per page, at
//! most 20 pages), and never leave the configured API.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::Method;
use serde_json::Value;
use tokio::sync::OnceCell;

use super::{http_client, truncate, Secret, Settings};

/// The connection settings both `gitlab` entries take, then `extra`.
macro_rules! gitlab_keys {
    ($($extra:literal),* $(,)?) => {
        &[
            "project", "url", "token", "token_env", "timeout", "max_retry_wait",
            $($extra),*
        ]
    };
}
pub(crate) use gitlab_keys;

const PAGE_LIMIT: usize = 20;

pub struct GitLabClient {
    /// `https://gitlab.example.com/api/v4`, no trailing slash.
    api: String,
    /// As configured: `group/subgroup/name` or a numeric id.
    pub project: String,
    /// `project`, escaped for a path segment (`group%2Fsubgroup%2Fname`).
    project_id: String,
    token: Secret,
    max_retry_wait: Duration,
    client: reqwest::Client,
    /// The token's own user id, asked once (`GET /user`).
    me: OnceCell<Option<u64>>,
}

/// Why a GitLab call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitLabError {
    /// A definite answer (400, 401, 403, 404, 409…). The code and message.
    Refused(u16, String),
    /// Rate limited for longer than `max_retry_wait`.
    RateLimited(String),
    /// GitLab down, unreachable, slow or answering 5xx.
    Outage(String),
}

impl GitLabError {
    pub fn message(&self) -> &str {
        match self {
            GitLabError::Refused(_, m) | GitLabError::RateLimited(m) | GitLabError::Outage(m) => m,
        }
    }
}

/// A project's full path (`group/sub/name`, each part of GitLab's path
/// characters) or a numeric id.
fn valid_project(project: &str) -> bool {
    if !project.is_empty() && project.len() <= 20 && project.bytes().all(|b| b.is_ascii_digit()) {
        return project != "0";
    }
    let parts: Vec<&str> = project.split('/').collect();
    parts.len() >= 2
        && project.len() <= 255
        && parts.iter().all(|p| {
            !p.is_empty()
                && *p != "."
                && *p != ".."
                && !p.starts_with(['-', '.'])
                && !p.ends_with(".git")
                && !p.ends_with(".atom")
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        })
}

/// `https://host[/root]` → `https://host[/root]/api/v4`, or `None` when it
/// is not an http(s) URL with a host and nothing after the path.
fn api_base(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    if !matches!(u.scheme(), "http" | "https")
        || u.host_str().is_none()
        || u.query().is_some()
        || u.fragment().is_some()
        || !u.username().is_empty()
        || u.password().is_some()
    {
        return None;
    }
    let base = u.as_str().trim_end_matches('/');
    Some(if base.ends_with("/api/v4") {
        base.to_string()
    } else {
        format!("{base}/api/v4")
    })
}

/// GitLab's error words: `message` (a string, or a map of field → list of
/// reasons), `error` and `error_description` (OAuth-style token errors).
fn messages(text: &str) -> String {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return String::new();
    };
    let mut out: Vec<String> = Vec::new();
    match &v["message"] {
        Value::String(m) => out.push(m.clone()),
        Value::Object(fields) => {
            for (field, reasons) in fields.iter().take(5) {
                let reasons: Vec<String> = match reasons {
                    Value::Array(a) => a
                        .iter()
                        .filter_map(|r| r.as_str().map(str::to_string))
                        .collect(),
                    Value::String(s) => vec![s.clone()],
                    _ => Vec::new(),
                };
                out.push(format!("{field} {}", reasons.join(", ")));
            }
        }
        _ => {}
    }
    if let Some(e) = v["error"].as_str() {
        out.push(e.to_string());
    }
    if let Some(e) = v["error_description"].as_str() {
        out.push(e.to_string());
    }
    truncate(&out.join("; "), 300)
}

/// The `rel="next"` URL of a `Link` header.
fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| matches!(p.trim(), "rel=\"next\"" | "rel=next"))
            .then(|| {
                url.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
    })
}

/// `url` with its `page` query parameter set to `page`.
fn with_page(url: &str, page: u64) -> Option<String> {
    let mut u = url::Url::parse(url).ok()?;
    let kept: Vec<(String, String)> = u
        .query_pairs()
        .filter(|(k, _)| k != "page")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    u.query_pairs_mut()
        .clear()
        .extend_pairs(kept)
        .append_pair("page", &page.to_string());
    Some(u.into())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A path segment or query value, escaped.
pub fn escape(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

impl GitLabClient {
    pub fn from_settings(s: &mut Settings<'_>) -> Option<GitLabClient> {
        let project = s.required_string(
            "project",
            "the project, as its path (group/subgroup/name) or numeric id",
        );
        if let Some(p) = &project {
            if !valid_project(p) {
                s.problem(
                    "project",
                    format!("`{p}` is not a project path (group/name, group/subgroup/name) or a numeric id"),
                );
            }
        }
        let url = s
            .string("url")
            .unwrap_or_else(|| "https://gitlab.com".to_string());
        let api = api_base(&url);
        if api.is_none() {
            s.problem(
                "url",
                format!("`{url}` is not the http(s) URL of a GitLab instance (e.g. https://gitlab.example.com)"),
            );
        }
        let token = s.secret(
            "token",
            true,
            "a GitLab access token (personal, project or group) with the `api` scope",
        );
        let timeout = s.duration("timeout", Duration::from_secs(10));
        let max_retry_wait = s.duration("max_retry_wait", Duration::from_secs(10));
        let project = project?;
        Some(GitLabClient {
            api: api?,
            project_id: escape(&project),
            project,
            token: token?,
            max_retry_wait,
            client: http_client(timeout),
            me: OnceCell::new(),
        })
    }

    /// `projects/ID/` + `rest`.
    pub fn project_path(&self, rest: &str) -> String {
        format!("projects/{}/{rest}", self.project_id)
    }

    /// One request to an absolute URL; the JSON answer and the next page's
    /// URL (`X-Next-Page`, else `Link: rel="next"`).
    async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<(Value, Option<String>), GitLabError> {
        let token = self
            .token
            .resolve()
            .map_err(|e| GitLabError::Refused(0, format!("GitLab token: {e}")))?;
        let mut waited = false;
        loop {
            let mut req = self
                .client
                .request(method.clone(), url)
                .header("private-token", &token)
                .header("accept", "application/json");
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    return Err(GitLabError::Outage(super::no_answer(
                        "GitLab", &self.api, &e,
                    )))
                }
            };
            let status = resp.status().as_u16();
            let header = |name: &str| {
                resp.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(|v| v.trim().to_string())
            };
            let next = match header("x-next-page").filter(|p| !p.is_empty()) {
                Some(p) => p.parse::<u64>().ok().and_then(|p| with_page(url, p)),
                None => header("link").as_deref().and_then(next_link),
            };
            let reset = header("ratelimit-reset").and_then(|v| v.parse::<u64>().ok());
            let retry_after = header("retry-after").and_then(|v| v.parse::<u64>().ok());
            let text = resp.text().await.unwrap_or_default();
            if (200..300).contains(&status) {
                let value = if text.trim().is_empty() {
                    Value::Null
                } else {
                    serde_json::from_str(&text).map_err(|e| {
                        GitLabError::Outage(format!("GitLab sent a body that is not JSON: {e}"))
                    })?
                };
                return Ok((value, next));
            }
            let detail = messages(&text);
            let detail = if detail.is_empty() {
                String::new()
            } else {
                format!(": {detail}")
            };
            if status == 429 {
                let wait = retry_after
                    .or_else(|| reset.map(|r| r.saturating_sub(unix_now())))
                    .map(Duration::from_secs);
                if let Some(w) = wait.filter(|w| !waited && *w <= self.max_retry_wait) {
                    tokio::time::sleep(w).await;
                    waited = true;
                    continue;
                }
                return Err(GitLabError::RateLimited(match wait {
                    Some(w) => format!(
                        "GitLab is rate limiting this token (429); it resets in {}s{detail}",
                        w.as_secs()
                    ),
                    None => format!("GitLab is rate limiting this token (429){detail}"),
                }));
            }
            let what = url.strip_prefix(&self.api).unwrap_or(url);
            let what = what.split('?').next().unwrap_or(what);
            return Err(match status {
                400 => GitLabError::Refused(400, format!("GitLab refused the request (400){detail}")),
                401 => GitLabError::Refused(401, format!("GitLab rejected the token (401): it is wrong, expired or revoked{detail}")),
                403 => GitLabError::Refused(403, format!("GitLab refused access (403): the token needs the `api` scope and a role on {} that may do this{detail}", self.project)),
                404 => GitLabError::Refused(404, format!("GitLab has no {what} (404): check `project` and that the token's user can see it{detail}")),
                409 => GitLabError::Refused(409, format!("GitLab reported a conflict (409){detail}")),
                s if s >= 500 => GitLabError::Outage(format!("GitLab answered {s}{detail}")),
                s => GitLabError::Refused(s, format!("GitLab answered {s}{detail}")),
            });
        }
    }

    /// One call to `{api}/{rest}`.
    pub async fn call(
        &self,
        method: Method,
        rest: &str,
        body: Option<&Value>,
    ) -> Result<Value, GitLabError> {
        Ok(self
            .send(method, &format!("{}/{rest}", self.api), body)
            .await?
            .0)
    }

    /// Every item of a list endpoint, page by page.
    pub async fn list(&self, rest: &str) -> Result<Vec<Value>, GitLabError> {
        let sep = if rest.contains('?') { '&' } else { '?' };
        let mut url = format!("{}/{rest}{sep}per_page=100", self.api);
        let mut out = Vec::new();
        for _ in 0..PAGE_LIMIT {
            let (page, next) = self.send(Method::GET, &url, None).await?;
            match page {
                Value::Array(a) => out.extend(a),
                _ => {
                    return Err(GitLabError::Outage(format!(
                        "GitLab sent no list for {}",
                        rest.split('?').next().unwrap_or(rest)
                    )))
                }
            }
            match next {
                // Only ever follow links to the same API.
                Some(n) if n.starts_with(&format!("{}/", self.api)) && n != url => url = n,
                _ => return Ok(out),
            }
        }
        Ok(out)
    }

    /// The open merge request whose source branch is `branch`, newest first.
    pub async fn merge_request(&self, branch: &str) -> Result<Option<Value>, GitLabError> {
        let list = self
            .list(&self.project_path(&format!(
                "merge_requests?state=opened&source_branch={}&order_by=created_at&sort=desc",
                escape(branch)
            )))
            .await?;
        Ok(list.into_iter().next())
    }

    /// The id of the token's own user, when GitLab says (asked once).
    pub async fn me(&self) -> Option<u64> {
        *self
            .me
            .get_or_init(|| async {
                match self.call(Method::GET, "user", None).await {
                    Ok(u) => u["id"].as_u64(),
                    Err(e) => {
                        log::debug!("gitlab: cannot read the token's user: {}", e.message());
                        None
                    }
                }
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projects_and_urls() {
        for good in ["acme/shop", "acme/web/shop.web", "a_b/c-d", "42"] {
            assert!(valid_project(good), "{good}");
        }
        for bad in [
            "",
            "acme",
            "acme/",
            "/shop",
            "a//b",
            "a/..",
            "a/b c",
            "a/b?x",
            "a/.hidden",
            "0",
            "a/b.git",
            "a/-x",
        ] {
            assert!(!valid_project(bad), "{bad}");
        }
        assert_eq!(
            api_base("https://gitlab.com").as_deref(),
            Some("https://gitlab.com/api/v4")
        );
        assert_eq!(
            api_base("https://git.example.com/gitlab/").as_deref(),
            Some("https://git.example.com/gitlab/api/v4")
        );
        assert_eq!(
            api_base("https://git.example.com/api/v4").as_deref(),
            Some("https://git.example.com/api/v4")
        );
        for bad in [
            "gitlab.com",
            "ftp://gitlab.com",
            "https://u:p@gitlab.com",
            "https://gitlab.com/?x=1",
        ] {
            assert_eq!(api_base(bad), None, "{bad}");
        }
        assert_eq!(escape("acme/web/shop"), "acme%2Fweb%2Fshop");
    }

    #[test]
    fn pages_and_error_words() {
        assert_eq!(
            with_page("https://g/api/v4/projects/1/notes?per_page=100&page=1", 2).as_deref(),
            Some("https://g/api/v4/projects/1/notes?per_page=100&page=2")
        );
        assert_eq!(
            next_link("<https://g/api/v4/x?page=2>; rel=\"next\", <https://g/api/v4/x?page=9>; rel=\"last\""),
            Some("https://g/api/v4/x?page=2".to_string())
        );
        assert_eq!(next_link("<https://g/x?page=1>; rel=\"first\""), None);
        assert_eq!(
            messages(r#"{"message":"404 Project Not Found"}"#),
            "404 Project Not Found"
        );
        assert_eq!(
            messages(
                r#"{"message":{"name":["has already been taken"],"external_url":["is blocked"]}}"#
            ),
            "name has already been taken; external_url is blocked"
        );
        assert_eq!(
            messages(r#"{"error":"invalid_token","error_description":"Token is expired."}"#),
            "invalid_token; Token is expired."
        );
        assert_eq!(messages("<html>"), "");
    }
}
