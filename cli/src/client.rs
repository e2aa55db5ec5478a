//! The control API of stamp-proxy over HTTP (`/__stamp/api/v1/…`), with the
//! JSON shapes the CLI reads and `-v` request tracing.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use reqwest::blocking::{Client as Http, RequestBuilder};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};

const API: &str = "/__stamp/api/v1/";

/// A ticket as the API returns it.
#[derive(Debug, Clone, Deserialize)]
pub struct Ticket {
    pub key: String,
    pub stage: String,
    pub version: u64,
    #[serde(default)]
    pub updated_ms: u64,
    #[serde(default)]
    pub modules: BTreeMap<String, Vec<Module>>,
    #[serde(default)]
    pub links: BTreeMap<String, String>,
    #[serde(default)]
    pub live_in_production: bool,
    #[serde(default)]
    pub allowed_actions: Vec<String>,
    #[serde(default)]
    pub history: Vec<Event>,
    /// For a released ticket: overrides still served through the production
    /// overlay, and those retired because the origin serves them itself.
    #[serde(default)]
    pub overlay: Option<Overlay>,
    /// Policy warnings that did not stop a transition.
    #[serde(default)]
    pub warnings: Vec<serde_json::Value>,
}

/// A released ticket's overlay.
#[derive(Debug, Clone, Deserialize)]
pub struct Overlay {
    #[serde(default)]
    pub live: u64,
    #[serde(default)]
    pub retired: u64,
}

/// One override.
#[derive(Debug, Clone, Deserialize)]
pub struct Module {
    pub specifier: String,
    pub path: String,
    pub url: String,
    pub hash: String,
    #[serde(default)]
    pub size: u64,
}

/// One history entry.
#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    pub at_ms: u64,
    pub event: String,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub actor: String,
    #[serde(default)]
    pub commit: Option<String>,
    #[serde(default)]
    pub branch: Option<String>,
    #[serde(default)]
    pub detail: Option<String>,
}

/// The answer to an upload or a delete.
#[derive(Debug, Clone, Deserialize)]
pub struct Change {
    pub stage: String,
    pub version: u64,
    #[serde(default)]
    pub module: Option<Module>,
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot reach the server at {server}")]
    Unreachable {
        server: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{message}")]
    Status {
        status: u16,
        code: String,
        message: String,
        /// The whole `error` object (extra fields such as `stage`, `allowed`).
        error: Value,
    },
    #[error("unexpected answer from {url}: {why}")]
    Protocol { url: String, why: String },
}

impl ApiError {
    /// Worth retrying later: the server or its store is down.
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::Unreachable { .. } => true,
            ApiError::Status { status, .. } => matches!(status, 502..=504),
            ApiError::Protocol { .. } => false,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn code(&self) -> &str {
        match self {
            ApiError::Status { code, .. } => code,
            _ => "",
        }
    }
}

/// Git context sent along with changes (recorded in the ticket's history).
#[derive(Debug, Clone, Default)]
pub struct GitMeta {
    pub commit: Option<String>,
    pub branch: Option<String>,
}

/// A connection to one stamp-proxy.
#[derive(Debug, Clone)]
pub struct Client {
    http: Http,
    pub server: String,
    token: Option<String>,
    verbose: bool,
}

impl Client {
    pub fn new(server: &str, token: Option<String>, verbose: bool) -> anyhow::Result<Client> {
        let http = Http::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("stamp/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Client {
            http,
            server: server.to_string(),
            token,
            verbose,
        })
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{API}{path}", self.server)
    }

    /// Sends a request and returns the JSON answer, or the API's error.
    fn send(
        &self,
        method: Method,
        path: &str,
        build: impl FnOnce(RequestBuilder) -> RequestBuilder,
        note: &str,
    ) -> Result<Value, ApiError> {
        let url = self.url(path);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let req = build(req);
        let start = Instant::now();
        if self.verbose {
            eprintln!(
                "> {method} {url}{}",
                if note.is_empty() {
                    String::new()
                } else {
                    format!(" ({note})")
                }
            );
        }
        let resp = req.send().map_err(|source| {
            if self.verbose {
                eprintln!(
                    "< failed after {} ms: {source}",
                    start.elapsed().as_millis()
                );
            }
            ApiError::Unreachable {
                server: self.server.clone(),
                source,
            }
        })?;
        let status = resp.status();
        let text = resp.text().map_err(|source| ApiError::Unreachable {
            server: self.server.clone(),
            source,
        })?;
        if self.verbose {
            eprintln!(
                "< {status} in {} ms ({} bytes)",
                start.elapsed().as_millis(),
                text.len()
            );
        }
        let value: Value = serde_json::from_str(&text).map_err(|_| ApiError::Protocol {
            url: url.clone(),
            why: format!(
                "{status}, not JSON ({}): is this a stamp-proxy?",
                text.chars().take(80).collect::<String>().trim()
            ),
        })?;
        if status.is_success() {
            return Ok(value);
        }
        let error = value.get("error").cloned().unwrap_or(Value::Null);
        Err(ApiError::Status {
            status: status.as_u16(),
            code: error["code"].as_str().unwrap_or("error").to_string(),
            message: error["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("the server answered {status}")),
            error,
        })
    }

    fn decode<T: serde::de::DeserializeOwned>(&self, path: &str, v: Value) -> Result<T, ApiError> {
        serde_json::from_value(v).map_err(|e| ApiError::Protocol {
            url: self.url(path),
            why: e.to_string(),
        })
    }

    /// A ticket with its history, or None when it does not exist.
    pub fn ticket(&self, key: &str) -> Result<Option<Ticket>, ApiError> {
        let path = format!("tickets/{key}");
        match self.send(Method::GET, &path, |r| r, "") {
            Ok(v) => self.decode(&path, v).map(Some),
            Err(e) if e.status() == Some(404) && e.code() == "not_found" => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The ticket as the server sent it (for `--json`).
    pub fn ticket_raw(&self, key: &str) -> Result<Value, ApiError> {
        self.send(Method::GET, &format!("tickets/{key}"), |r| r, "")
    }

    /// Tickets in these stages, as sent (`{"tickets": [...]}`).
    pub fn list_raw(&self, stages: &[&str]) -> Result<Value, ApiError> {
        self.send(
            Method::GET,
            &format!("tickets?stage={}", stages.join(",")),
            |r| r,
            "",
        )
    }

    /// Which of these bodies (sha256 hex) the server does not have.
    pub fn missing(&self, hashes: &[String]) -> Result<HashSet<String>, ApiError> {
        let mut out = HashSet::new();
        for chunk in hashes.chunks(10_000) {
            let body = json!({ "hashes": chunk });
            let v = self.send(
                Method::POST,
                "modules/missing",
                |r| r.json(&body),
                &format!("{} hashes", chunk.len()),
            )?;
            let list: Vec<String> = self.decode(
                "modules/missing",
                v.get("missing").cloned().unwrap_or(Value::Array(vec![])),
            )?;
            out.extend(list);
        }
        Ok(out)
    }

    /// Uploads a module to the ticket's dev stage at its production `path`
    /// (`/src/a.js`). Without `body`, links the body the server already has
    /// under `hash`.
    pub fn put_module(
        &self,
        key: &str,
        path: &str,
        specifier: Option<&str>,
        hash: &str,
        body: Option<Vec<u8>>,
        git: &GitMeta,
    ) -> Result<Change, ApiError> {
        let api_path = format!("tickets/{key}/modules/{}", encode_path(path));
        let note = match &body {
            Some(b) => format!("{} bytes", b.len()),
            None => format!(
                "0 bytes, body linked by x-stamp-hash {}",
                &hash[..hash.len().min(12)]
            ),
        };
        let v = self.send(
            Method::PUT,
            &api_path,
            |mut r| {
                r = r.header("x-stamp-hash", hash);
                if let Some(s) = specifier {
                    r = r.header("x-stamp-specifier", s);
                }
                r = git_headers(r, git);
                r.body(body.unwrap_or_default())
            },
            &note,
        )?;
        self.decode(&api_path, v)
    }

    /// Removes an override from the ticket's dev stage.
    pub fn delete_module(
        &self,
        key: &str,
        path: &str,
        specifier: Option<&str>,
        git: &GitMeta,
    ) -> Result<Change, ApiError> {
        let api_path = format!("tickets/{key}/modules/{}", encode_path(path));
        let v = self.send(
            Method::DELETE,
            &api_path,
            |mut r| {
                if let Some(s) = specifier {
                    r = r.header("x-stamp-specifier", s);
                }
                git_headers(r, git)
            },
            "",
        )?;
        self.decode(&api_path, v)
    }

    /// `promote`, `revert` or `close`; returns the ticket after the move.
    pub fn transition(
        &self,
        key: &str,
        action: &str,
        expected_version: Option<u64>,
        git: &GitMeta,
    ) -> Result<(Ticket, Value), ApiError> {
        let mut body = serde_json::Map::new();
        if let Some(v) = expected_version {
            body.insert("expected_version".into(), json!(v));
        }
        if let Some(c) = &git.commit {
            body.insert("commit".into(), json!(c));
        }
        if let Some(b) = &git.branch {
            body.insert("branch".into(), json!(b));
        }
        let body = Value::Object(body);
        let path = format!("tickets/{key}/{action}");
        let v = self.send(Method::POST, &path, |r| r.json(&body), "")?;
        Ok((self.decode(&path, v.clone())?, v))
    }
}

fn git_headers(mut r: RequestBuilder, git: &GitMeta) -> RequestBuilder {
    if let Some(c) = &git.commit {
        r = r.header("x-stamp-commit", c);
    }
    if let Some(b) = git
        .branch
        .as_ref()
        .filter(|b| b.bytes().all(|c| c.is_ascii_graphic()))
    {
        r = r.header("x-stamp-branch", b);
    }
    r
}

/// Percent-encodes a URL path (`/src/a b.js` → `src/a%20b.js`) for the API,
/// keeping `/` between segments and dropping the leading one.
pub fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.trim_start_matches('/').bytes() {
        let keep = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b);
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_percent_encoded_per_segment() {
        assert_eq!(encode_path("/src/lib/greet.js"), "src/lib/greet.js");
        assert_eq!(encode_path("/src/a b%.js"), "src/a%20b%25.js");
        assert_eq!(encode_path("/src/x?.js"), "src/x%3F.js");
        assert_eq!(encode_path("/src/é.js"), "src/%C3%A9.js");
    }
}
