//! The control API of stamp-proxy over HTTP (`/__stamp/api/v1/…`), with the
//! JSON shapes the CLI reads and `-v` request tracing.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use reqwest::blocking::{Client as Http, RequestBuilder};
use reqwest::Method;
use serde_json::Value;

use stamp_model::wire::{
    self, header as h, ErrorBody, ErrorCode, ErrorEnvelope, TransitionRequest,
};

/// A ticket as the API returns it.
pub type Ticket = wire::TicketDto;
/// The answer to an upload.
pub type Change = wire::UploadResponse;
/// The answer to a delete.
pub type Deleted = wire::DeleteResponse;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot reach the server at {server}")]
    Unreachable {
        server: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{}", .error.message)]
    Status {
        status: u16,
        /// The error envelope's body (code, message, and the fields such as
        /// `stage` and `allowed` that go with the code).
        error: Box<ErrorBody>,
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

    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ApiError::Status { error, .. } => Some(error.code),
            _ => None,
        }
    }
}

/// Git context sent along with changes (recorded in the ticket's history).
#[derive(Debug, Clone, Default)]
pub struct GitMeta {
    pub commit: Option<String>,
    pub branch: Option<String>,
    /// An upload's file in `commit`, when the body is exactly that file.
    pub source: Option<String>,
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
        format!("{}{}{path}", self.server, wire::API_PREFIX)
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
        let error = match serde_json::from_value::<ErrorEnvelope>(value) {
            Ok(envelope) => envelope.error,
            Err(_) => ErrorBody::new(ErrorCode::Unknown, format!("the server answered {status}")),
        };
        Err(ApiError::Status {
            status: status.as_u16(),
            error: Box::new(error),
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
            Err(e) if e.status() == Some(404) && e.code() == Some(ErrorCode::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The ticket as the server sent it (for `--json`).
    pub fn ticket_raw(&self, key: &str) -> Result<Value, ApiError> {
        self.send(Method::GET, &format!("tickets/{key}"), |r| r, "")
    }

    /// What the proxy sees in production's page that keeps some of the
    /// ticket's modules from applying (`{"page": "/", "warnings": [...]}`).
    pub fn setup(&self, key: &str) -> Result<Vec<String>, ApiError> {
        let v = self.send(Method::GET, &format!("tickets/{key}/setup"), |r| r, "")?;
        Ok(v.get("warnings")
            .and_then(Value::as_array)
            .map(|w| {
                w.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The production history, newest first, as sent (`{"commits": [...]}`).
    pub fn production_history_raw(&self) -> Result<Value, ApiError> {
        self.send(Method::GET, "production/history", |r| r, "")
    }

    /// The policies' verdict on `action`, without making it; as sent.
    pub fn check_raw(&self, key: &str, action: &str, git: &GitMeta) -> Result<Value, ApiError> {
        self.send(
            Method::GET,
            &format!("tickets/{key}/check?action={action}"),
            |r| git_headers(r, git),
            "",
        )
    }

    /// Takes production back to a commit of its history; the answer as sent.
    pub fn production_revert(&self, to: &str) -> Result<Value, ApiError> {
        let body = serde_json::json!({ "to": to });
        self.send(Method::POST, "production/revert", |r| r.json(&body), "")
    }

    /// One page of the ticket list, as sent (`{"tickets": [...], "next"}`).
    pub fn list_page(&self, query: &stamp_model::listing::ListQuery) -> Result<Value, ApiError> {
        self.send(
            Method::GET,
            &format!("tickets?{}", query.to_query()),
            |r| r,
            "",
        )
    }

    /// Every ticket in these stages, a page at a time (`{"tickets": [...]}`).
    pub fn list_raw(&self, stages: &[stamp_model::Stage]) -> Result<Value, ApiError> {
        let mut query = stamp_model::listing::ListQuery {
            stages: Some(stages.to_vec()),
            limit: stamp_model::listing::MAX_LIMIT,
            ..Default::default()
        };
        let mut all = Vec::new();
        // Bounded: a server that kept answering `next` would otherwise
        // keep the CLI paging forever.
        for _ in 0..10_000 {
            let page = self.list_page(&query)?;
            if let Some(list) = page.get("tickets").and_then(Value::as_array) {
                all.extend(list.iter().cloned());
            }
            match page.get("next").and_then(Value::as_str) {
                Some(next) => {
                    query.after =
                        Some(stamp_model::listing::Cursor::decode(next).map_err(|e| {
                            ApiError::Protocol {
                                url: self.url("tickets"),
                                why: format!("its next page: {e}"),
                            }
                        })?);
                }
                None => break,
            }
        }
        Ok(serde_json::json!({ "tickets": all }))
    }

    /// Which of these bodies (sha256 hex) the server does not have.
    pub fn missing(&self, hashes: &[String]) -> Result<HashSet<String>, ApiError> {
        let mut out = HashSet::new();
        for chunk in hashes.chunks(wire::MAX_MISSING) {
            let body = wire::MissingRequest {
                hashes: chunk.to_vec(),
            };
            let v = self.send(
                Method::POST,
                "modules/missing",
                |r| r.json(&body),
                &format!("{} hashes", chunk.len()),
            )?;
            let answer: wire::MissingResponse = self.decode("modules/missing", v)?;
            out.extend(answer.missing.iter().map(|h| h.to_hex()));
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
        let (origin, path) = split_location(path);
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
                r = r.header(h::HASH, hash);
                if let Some(o) = origin {
                    r = r.header(h::ORIGIN, o);
                }
                if let Some(s) = specifier {
                    r = r.header(h::SPECIFIER, s);
                }
                r = git_headers(r, git);
                if let Some(s) = git
                    .source
                    .as_deref()
                    .filter(|s| stamp_model::wire::is_repo_path(s))
                {
                    r = r.header(h::SOURCE, s);
                }
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
    ) -> Result<Deleted, ApiError> {
        let (origin, path) = split_location(path);
        let api_path = format!("tickets/{key}/modules/{}", encode_path(path));
        let v = self.send(
            Method::DELETE,
            &api_path,
            |mut r| {
                if let Some(o) = origin {
                    r = r.header(h::ORIGIN, o);
                }
                if let Some(s) = specifier {
                    r = r.header(h::SPECIFIER, s);
                }
                git_headers(r, git)
            },
            "",
        )?;
        self.decode(&api_path, v)
    }

    /// `promote`, `revert` or `close` from the stage `from` the caller read;
    /// returns the ticket after the move. It states the stage, not the
    /// version: a change that leaves the stage as it was (the settler's
    /// bookkeeping right after a release, a sign-off) is not a conflict,
    /// while a move by someone else is.
    pub fn transition(
        &self,
        key: &str,
        action: &str,
        from: stamp_model::Stage,
        git: &GitMeta,
        comment: Option<&str>,
        rollout: Option<stamp_model::wire::RolloutRequest>,
    ) -> Result<(Ticket, Value), ApiError> {
        let body = TransitionRequest {
            expected_version: None,
            commit: git.commit.clone(),
            branch: git.branch.clone(),
            comment: comment.map(str::to_string),
            from: Some(from),
            rollout,
        };
        let path = format!("tickets/{key}/{action}");
        let v = self.send(Method::POST, &path, |r| r.json(&body), "")?;
        Ok((self.decode(&path, v.clone())?, v))
    }
}

impl Client {
    /// A step of a rollout in progress (`POST tickets/{key}/rollout`): to a
    /// share, or `next`, `pause`, `resume`.
    pub fn rollout_step(
        &self,
        key: &str,
        step: &stamp_model::wire::StepRequest,
    ) -> Result<(Ticket, Value), ApiError> {
        let path = format!("tickets/{key}/rollout");
        let v = self.send(Method::POST, &path, |r| r.json(step), "")?;
        Ok((self.decode(&path, v.clone())?, v))
    }
}

fn git_headers(mut r: RequestBuilder, git: &GitMeta) -> RequestBuilder {
    if let Some(c) = &git.commit {
        r = r.header(h::COMMIT, c);
    }
    if let Some(b) = git
        .branch
        .as_ref()
        .filter(|b| b.bytes().all(|c| c.is_ascii_graphic()))
    {
        r = r.header(h::BRANCH, b);
    }
    r
}

/// Percent-encodes a URL path (`/src/a b.js` → `src/a%20b.js`) for the API,
/// keeping `/` between segments and dropping the leading one.
/// A module location as the API takes it: the other origin (sent as
/// `x-stamp-origin`) and the path.
fn split_location(location: &str) -> (Option<&str>, &str) {
    match stamp_model::assets::origin_of(location) {
        Some(origin) => (Some(origin), &location[origin.len()..]),
        None => (None, location),
    }
}

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
