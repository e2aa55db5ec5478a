//! The GitHub REST client that the `github` policy and the `github` hook
//! share: a token or a GitHub App (a JWT signed with the app's private key,
//! RS256 by `jsonwebtoken`, buys an installation token, cached until shortly
//! before it expires); 401, 403, 404 and 422 each give their own message; a
//! rate limit names when it resets and is waited out when that is at most
//! `max_retry_wait`; lists follow `Link: rel="next"` (100 per page, at most
//! 20 pages).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::Method;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use super::{http_client, truncate, Secret, Settings};

/// The connection settings both `github` entries take, then `extra`.
macro_rules! github_keys {
    ($($extra:literal),* $(,)?) => {
        &[
            "repo", "api", "token", "token_env", "app_id", "installation_id",
            "private_key", "private_key_env", "timeout", "max_retry_wait",
            $($extra),*
        ]
    };
}
pub(crate) use github_keys;

const PAGE_LIMIT: usize = 20;

enum Auth {
    Token(Secret),
    App {
        app_id: u64,
        installation_id: u64,
        key: Secret,
        /// The installation token and when to stop using it.
        cached: Mutex<Option<(String, Instant)>>,
    },
}

pub struct GitHubClient {
    api: String,
    /// `owner/name`.
    pub repo: String,
    auth: Auth,
    max_retry_wait: Duration,
    client: reqwest::Client,
}

/// Why a GitHub call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitHubError {
    /// A definite answer (401, 403, 404, 422…): retrying will not help.
    Refused(u16, String),
    /// Rate limited for longer than `max_retry_wait`.
    RateLimited(String),
    /// GitHub down, unreachable, slow or answering 5xx.
    Outage(String),
}

impl GitHubError {
    pub fn message(&self) -> &str {
        match self {
            GitHubError::Refused(_, m) | GitHubError::RateLimited(m) | GitHubError::Outage(m) => m,
        }
    }
}

/// `a/b` with GitHub's characters only.
fn valid_repo(repo: &str) -> bool {
    let ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 100
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    matches!(repo.split_once('/'), Some((o, n)) if ok(o) && ok(n))
}

/// GitHub's `message` and `errors[].message`, for error texts.
fn messages(text: &str) -> String {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return String::new();
    };
    let mut out: Vec<String> = Vec::new();
    if let Some(m) = v["message"].as_str() {
        out.push(m.to_string());
    }
    if let Some(errors) = v["errors"].as_array() {
        for e in errors.iter().take(5) {
            if let Some(m) = e["message"].as_str().or_else(|| e["code"].as_str()) {
                out.push(m.to_string());
            }
        }
    }
    truncate(&out.join("; "), 300)
}

/// The `rel="next"` URL of a `Link` header.
fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| p.trim() == "rel=\"next\"")
            .then(|| {
                url.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl GitHubClient {
    pub fn from_settings(s: &mut Settings<'_>) -> Option<GitHubClient> {
        let repo = s.required_string("repo", "the repository, as owner/name");
        if let Some(r) = &repo {
            if !valid_repo(r) {
                s.problem("repo", format!("`{r}` is not owner/name"));
            }
        }
        let api = s
            .string("api")
            .unwrap_or_else(|| "https://api.github.com".to_string());
        if url::Url::parse(&api)
            .map(|u| !matches!(u.scheme(), "http" | "https"))
            .unwrap_or(true)
        {
            s.problem(
                "api",
                format!("`{api}` is not an http(s) URL (GitHub Enterprise: https://HOST/api/v3)"),
            );
        }
        let app = s.has("app_id")
            || s.has("installation_id")
            || s.has("private_key")
            || s.has("private_key_env");
        let auth = if app {
            if s.has("token") || s.has("token_env") {
                s.problem("token", "give a token or a GitHub App (app_id, installation_id, private_key_env), not both");
            }
            let app_id = s.integer("app_id", 0, 1, u64::MAX >> 1);
            let installation_id = s.integer("installation_id", 0, 1, u64::MAX >> 1);
            if app_id == 0 {
                s.problem("app_id", "is required for a GitHub App");
            }
            if installation_id == 0 {
                s.problem("installation_id", "is required for a GitHub App");
            }
            let key = s.secret("private_key", true, "the GitHub App's private key (PEM)");
            key.map(|key| Auth::App {
                app_id,
                installation_id,
                key,
                cached: Mutex::new(None),
            })
        } else {
            s.secret("token", true, "a GitHub token").map(Auth::Token)
        };
        let timeout = s.duration("timeout", Duration::from_secs(10));
        let max_retry_wait = s.duration("max_retry_wait", Duration::from_secs(10));
        Some(GitHubClient {
            api: api.trim_end_matches('/').to_string(),
            repo: repo?,
            auth: auth?,
            max_retry_wait,
            client: http_client(timeout),
        })
    }

    /// `repos/OWNER/NAME/` + `rest`.
    pub fn repo_path(&self, rest: &str) -> String {
        format!("repos/{}/{rest}", self.repo)
    }

    /// The bearer token to send: the configured one, or an installation
    /// token bought with the app's JWT.
    async fn token(&self) -> Result<String, GitHubError> {
        match &self.auth {
            Auth::Token(secret) => secret
                .resolve()
                .map_err(|e| GitHubError::Refused(0, format!("GitHub token: {e}"))),
            Auth::App {
                app_id,
                installation_id,
                key,
                cached,
            } => {
                let mut cached = cached.lock().await;
                if let Some((token, until)) = cached.as_ref() {
                    if Instant::now() < *until {
                        return Ok(token.clone());
                    }
                }
                let pem = key
                    .resolve()
                    .map_err(|e| GitHubError::Refused(0, format!("GitHub App key: {e}")))?;
                let signing =
                    jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| {
                        GitHubError::Refused(
                            0,
                            format!("the GitHub App key is not an RSA private key in PEM: {e}"),
                        )
                    })?;
                let now = unix_now();
                // Back-dated a minute for clock drift, as GitHub advises;
                // at most ten minutes long.
                let claims = json!({ "iat": now.saturating_sub(60), "exp": now + 540, "iss": app_id.to_string() });
                let jwt = jsonwebtoken::encode(
                    &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
                    &claims,
                    &signing,
                )
                .map_err(|e| {
                    GitHubError::Refused(0, format!("cannot sign the GitHub App JWT: {e}"))
                })?;
                let answer = self
                    .send(
                        Method::POST,
                        &format!(
                            "{}/app/installations/{installation_id}/access_tokens",
                            self.api
                        ),
                        None,
                        &jwt,
                    )
                    .await?
                    .0;
                let token = answer["token"]
                    .as_str()
                    .ok_or_else(|| GitHubError::Outage("GitHub sent no installation token".into()))?
                    .to_string();
                // Tokens last an hour; renew well before.
                *cached = Some((token.clone(), Instant::now() + Duration::from_secs(50 * 60)));
                Ok(token)
            }
        }
    }

    /// One request to an absolute URL with `token`; the JSON answer and the
    /// `Link` header.
    async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        token: &str,
    ) -> Result<(Value, Option<String>), GitHubError> {
        let mut waited = false;
        loop {
            let mut req = self
                .client
                .request(method.clone(), url)
                .header("authorization", format!("Bearer {token}"))
                .header("accept", "application/vnd.github+json")
                .header("x-github-api-version", "2022-11-28")
                .header(
                    "user-agent",
                    concat!("ticket-stamp/", env!("CARGO_PKG_VERSION")),
                );
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    return Err(GitHubError::Outage(super::no_answer(
                        "GitHub", &self.api, &e,
                    )))
                }
            };
            let status = resp.status().as_u16();
            let header = |name: &str| {
                resp.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let link = header("link");
            let remaining = header("x-ratelimit-remaining");
            let reset = header("x-ratelimit-reset").and_then(|v| v.trim().parse::<u64>().ok());
            let retry_after = header("retry-after").and_then(|v| v.trim().parse::<u64>().ok());
            let text = resp.text().await.unwrap_or_default();
            if (200..300).contains(&status) {
                let value = if text.trim().is_empty() {
                    Value::Null
                } else {
                    serde_json::from_str(&text).map_err(|e| {
                        GitHubError::Outage(format!("GitHub sent a body that is not JSON: {e}"))
                    })?
                };
                return Ok((value, link));
            }
            let detail = messages(&text);
            let detail = if detail.is_empty() {
                String::new()
            } else {
                format!(": {detail}")
            };
            let limited = matches!(status, 403 | 429)
                && (remaining.as_deref() == Some("0") || retry_after.is_some());
            if limited {
                let wait = retry_after
                    .or_else(|| reset.map(|r| r.saturating_sub(unix_now())))
                    .map(Duration::from_secs);
                if let Some(w) = wait.filter(|w| !waited && *w <= self.max_retry_wait) {
                    tokio::time::sleep(w).await;
                    waited = true;
                    continue;
                }
                return Err(GitHubError::RateLimited(match wait {
                    Some(w) => format!(
                        "GitHub is rate limiting this token ({status}); it resets in {}s{detail}",
                        w.as_secs()
                    ),
                    None => format!("GitHub is rate limiting this token ({status}){detail}"),
                }));
            }
            return Err(match status {
                401 => GitHubError::Refused(401, format!("GitHub rejected the credentials (401): check the token or the app's key{detail}")),
                403 => GitHubError::Refused(403, format!("GitHub refused access (403): the token lacks a permission on {}{detail}", self.repo)),
                404 => GitHubError::Refused(404, format!("GitHub has no {} (404): check `repo` and that the token can see it{detail}", url.strip_prefix(&self.api).unwrap_or(url))),
                422 => GitHubError::Refused(422, format!("GitHub refused the request (422){detail}")),
                s if s >= 500 => GitHubError::Outage(format!("GitHub answered {s}{detail}")),
                s => GitHubError::Refused(s, format!("GitHub answered {s}{detail}")),
            });
        }
    }

    /// One call to `{api}/{rest}`.
    pub async fn call(
        &self,
        method: Method,
        rest: &str,
        body: Option<&Value>,
    ) -> Result<Value, GitHubError> {
        let token = self.token().await?;
        Ok(self
            .send(method, &format!("{}/{rest}", self.api), body, &token)
            .await?
            .0)
    }

    /// Every item of a list endpoint, following `Link: rel="next"`. `field`
    /// names the array when the page is an object (`check_runs`).
    pub async fn list(&self, rest: &str, field: Option<&str>) -> Result<Vec<Value>, GitHubError> {
        let token = self.token().await?;
        let sep = if rest.contains('?') { '&' } else { '?' };
        let mut url = format!("{}/{rest}{sep}per_page=100", self.api);
        let mut out = Vec::new();
        for _ in 0..PAGE_LIMIT {
            let (page, link) = self.send(Method::GET, &url, None, &token).await?;
            let items = match field {
                Some(f) => page[f].clone(),
                None => page,
            };
            match items {
                Value::Array(a) => out.extend(a),
                _ => {
                    return Err(GitHubError::Outage(format!(
                        "GitHub sent no list for {rest}"
                    )))
                }
            }
            match link.as_deref().and_then(next_link) {
                // Only ever follow links to the same API.
                Some(next) if next.starts_with(&self.api) => url = next,
                _ => return Ok(out),
            }
        }
        Ok(out)
    }

    /// The open pull request whose head is `branch` in this repository.
    pub async fn pull_request(&self, branch: &str) -> Result<Option<Value>, GitHubError> {
        let owner = self.repo.split('/').next().unwrap_or("");
        let head: String =
            url::form_urlencoded::byte_serialize(format!("{owner}:{branch}").as_bytes()).collect();
        let list = self
            .list(
                &self.repo_path(&format!("pulls?state=open&head={head}")),
                None,
            )
            .await?;
        Ok(list.into_iter().next())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links_and_repos() {
        assert_eq!(
            next_link("<https://api.github.com/x?page=2>; rel=\"next\", <https://api.github.com/x?page=5>; rel=\"last\""),
            Some("https://api.github.com/x?page=2".to_string())
        );
        assert_eq!(
            next_link("<https://api.github.com/x?page=1>; rel=\"prev\""),
            None
        );
        assert_eq!(next_link("garbage"), None);
        assert!(valid_repo("acme/shop.web"));
        for bad in ["acme", "acme/", "/shop", "a/b/c", "a/..", "a/b c", "a/b?x"] {
            assert!(!valid_repo(bad), "{bad}");
        }
    }

    #[test]
    fn error_messages_are_read_from_githubs_json() {
        assert_eq!(
            messages(
                r#"{"message":"Validation Failed","errors":[{"resource":"Deployment","code":"custom","message":"No ref found for: nope"}]}"#
            ),
            "Validation Failed; No ref found for: nope"
        );
        assert_eq!(messages("<html>"), "");
    }
}
