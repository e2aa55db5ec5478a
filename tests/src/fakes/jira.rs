//! A fake Jira: Cloud (REST v3, Basic email:API-token, ADF comments) and
//! Data Center (REST v2, Bearer PAT, plain comments).

#[allow(unused_imports)]
use super::*;

/// Which Jira the fake is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JiraKind {
    /// Cloud: `/rest/api/3` (and 2), Basic `email:api_token`.
    Cloud,
    /// Data Center: `/rest/api/2` only, Bearer personal access token.
    DataCenter,
}

#[derive(Debug, Clone)]
pub(super) struct Issue {
    status: String,
    /// (id, name, target status)
    transitions: Vec<(String, String, String)>,
    comments: Vec<Value>,
}

#[derive(Default)]
pub(super) struct JiraData {
    issues: HashMap<String, Issue>,
    forbidden: HashSet<String>,
    /// Comment posts still to answer 503.
    comment_failures: usize,
}

/// A fake Jira site.
pub struct FakeJira {
    pub fake: Fake,
    pub kind: JiraKind,
    data: Arc<Mutex<JiraData>>,
}

impl std::fmt::Debug for FakeJira {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeJira")
            .field("url", &self.fake.url)
            .finish()
    }
}

impl FakeJira {
    /// Jira Cloud accepting `Basic base64(email:token)`.
    pub fn cloud(email: &str, token: &str) -> anyhow::Result<FakeJira> {
        let auth = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{email}:{token}"))
        );
        Self::start(JiraKind::Cloud, auth)
    }

    /// Jira Data Center accepting `Bearer <pat>`.
    pub fn datacenter(pat: &str) -> anyhow::Result<FakeJira> {
        Self::start(JiraKind::DataCenter, format!("Bearer {pat}"))
    }

    fn start(kind: JiraKind, auth: String) -> anyhow::Result<FakeJira> {
        let data = Arc::new(Mutex::new(JiraData::default()));
        let d = data.clone();
        let fake = Fake::start(Arc::new(move |r: &Recorded| jira(kind, &auth, &d, r)))?;
        Ok(FakeJira { fake, kind, data })
    }

    pub fn url(&self) -> &str {
        &self.fake.url
    }

    /// Creates (or replaces) an issue in `status` with the transitions
    /// available from it: `(id, name, target status)`.
    pub fn issue(&self, key: &str, status: &str, transitions: &[(&str, &str, &str)]) {
        if let Ok(mut d) = self.data.lock() {
            d.issues.insert(
                key.to_string(),
                Issue {
                    status: status.to_string(),
                    transitions: transitions
                        .iter()
                        .map(|(i, n, t)| (i.to_string(), n.to_string(), t.to_string()))
                        .collect(),
                    comments: Vec::new(),
                },
            );
        }
    }

    /// The next `n` comment posts answer 503 (after the transition worked).
    pub fn fail_comments(&self, n: usize) {
        if let Ok(mut d) = self.data.lock() {
            d.comment_failures = n;
        }
    }

    /// The account may not see this issue (403).
    pub fn forbid(&self, key: &str) {
        if let Ok(mut d) = self.data.lock() {
            d.forbidden.insert(key.to_string());
        }
    }

    pub fn status(&self, key: &str) -> Option<String> {
        self.data
            .lock()
            .ok()?
            .issues
            .get(key)
            .map(|i| i.status.clone())
    }

    /// Comment bodies, as posted (`{"body": …}`).
    pub fn comments(&self, key: &str) -> Vec<Value> {
        self.data
            .lock()
            .ok()
            .and_then(|d| d.issues.get(key).map(|i| i.comments.clone()))
            .unwrap_or_default()
    }
}

pub(super) fn jira(kind: JiraKind, auth: &str, data: &Mutex<JiraData>, r: &Recorded) -> Response {
    let segs: Vec<&str> = r.path.trim_start_matches('/').split('/').collect();
    let (version, rest) = match segs.as_slice() {
        ["rest", "api", v, rest @ ..] => (*v, rest),
        _ => return (StatusCode::NOT_FOUND, "Not Found").into_response(),
    };
    let version_ok = match kind {
        JiraKind::Cloud => version == "3" || version == "2",
        JiraKind::DataCenter => version == "2",
    };
    if !version_ok {
        return (
            StatusCode::NOT_FOUND,
            [("content-type", "text/html")],
            "<html><body>Oops, you've found a dead link.</body></html>",
        )
            .into_response();
    }
    if r.header("authorization").as_deref() != Some(auth) {
        return jira_error(
            401,
            &["You are not authenticated. Authentication required to perform this operation."],
            json!({}),
        );
    }
    let Ok(mut d) = data.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let (key, tail) = match rest {
        ["issue", key, tail @ ..] => (key.to_string(), tail),
        _ => return jira_error(404, &["Not found"], json!({})),
    };
    if d.forbidden.contains(&key) {
        return jira_error(
            403,
            &["You do not have the permission to see the specified issue."],
            json!({}),
        );
    }
    let Some(issue) = d.issues.get_mut(&key) else {
        return jira_error(
            404,
            &["Issue does not exist or you do not have permission to see it."],
            json!({}),
        );
    };
    let is_json = r
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/json"));
    match (r.method.as_str(), tail) {
        ("GET", []) => json_response(
            200,
            json!({
                "id": "10001",
                "key": key,
                "self": format!("/rest/api/{version}/issue/10001"),
                "fields": {"status": {"name": issue.status, "id": "3",
                    "statusCategory": {"key": "indeterminate", "name": "In Progress"}}},
            }),
        ),
        ("GET", ["transitions"]) => json_response(
            200,
            json!({
                "expand": "transitions",
                "transitions": issue.transitions.iter().map(|(id, name, to)| json!({
                    "id": id, "name": name, "hasScreen": false, "isGlobal": false,
                    "isInitial": false, "isConditional": false,
                    "to": {"name": to, "id": "1", "statusCategory": {"key": "indeterminate"}},
                })).collect::<Vec<_>>(),
            }),
        ),
        ("POST", ["transitions"]) => {
            if !is_json {
                return StatusCode::UNSUPPORTED_MEDIA_TYPE.into_response();
            }
            let body = r.json();
            let Some(id) = body.pointer("/transition/id").and_then(Value::as_str) else {
                return jira_error(
                    400,
                    &[],
                    json!({"transition": "Transition id is required."}),
                );
            };
            match issue.transitions.iter().find(|(tid, _, _)| tid == id) {
                Some((_, _, to)) => {
                    issue.status = to.clone();
                    StatusCode::NO_CONTENT.into_response()
                }
                None => jira_error(
                    400,
                    &[&format!(
                        "Transition id '{id}' is not valid for this issue."
                    )],
                    json!({}),
                ),
            }
        }
        ("POST", ["comment"]) => {
            if !is_json {
                return StatusCode::UNSUPPORTED_MEDIA_TYPE.into_response();
            }
            if d.comment_failures > 0 {
                d.comment_failures -= 1;
                return jira_error(503, &["Service temporarily unavailable"], json!({}));
            }
            let Some(issue) = d.issues.get_mut(&key) else {
                return StatusCode::NOT_FOUND.into_response();
            };
            let body = r.json();
            let valid = if version == "3" {
                // Atlassian Document Format: a `doc`, version 1, with content.
                body["body"]["type"] == "doc"
                    && body["body"]["version"] == 1
                    && body["body"]["content"]
                        .as_array()
                        .is_some_and(|c| !c.is_empty() && c.iter().all(|n| n["type"].is_string()))
            } else {
                body["body"].as_str().is_some_and(|s| !s.trim().is_empty())
            };
            if !valid {
                return jira_error(400, &[], json!({"comment": "Comment body is not valid!"}));
            }
            issue.comments.push(body.clone());
            json_response(
                201,
                json!({"id": format!("{}", 10000 + issue.comments.len()), "body": body["body"]}),
            )
        }
        (_, []) | (_, ["transitions"]) | (_, ["comment"]) => {
            StatusCode::METHOD_NOT_ALLOWED.into_response()
        }
        _ => jira_error(404, &["Not found"], json!({})),
    }
}
