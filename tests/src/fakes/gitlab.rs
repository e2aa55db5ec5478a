//! A fake GitLab REST API (v4).

use super::github::query_param;
#[allow(unused_imports)]
use super::*;

#[derive(Debug, Clone)]
pub(super) struct MergeRequest {
    iid: u64,
    source_branch: String,
    sha: String,
    draft: bool,
    /// (id, sha, status)
    pipeline: Option<(u64, String, String)>,
    /// Who approved.
    approved_by: Vec<String>,
}

#[derive(Debug, Clone)]
pub(super) struct Note {
    id: u64,
    body: String,
    author: (u64, String),
    system: bool,
}

/// A commit status as GitLab keeps it.
#[derive(Debug, Clone)]
pub struct GitLabStatus {
    pub name: String,
    pub git_ref: Option<String>,
    pub state: String,
    pub description: String,
    pub target_url: Option<String>,
}

/// An environment as GitLab keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitLabEnvironment {
    pub id: u64,
    pub name: String,
    pub external_url: Option<String>,
    pub tier: String,
    pub state: String,
}

/// A deployment as GitLab keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitLabDeployment {
    pub id: u64,
    pub environment: String,
    pub sha: String,
    pub git_ref: String,
    /// Every status it had, oldest first.
    pub statuses: Vec<String>,
}

/// An approval rule (Premium): its name, how many it needs, who approved.
#[derive(Debug, Clone)]
pub(super) struct Rule {
    name: String,
    required: u64,
    approved_by: Vec<String>,
}

#[derive(Default)]
pub(super) struct GitLabData {
    /// `group/name` and its numeric id.
    project: (String, u64),
    /// The token that may write, and one with `read_api` only.
    token: String,
    read_token: String,
    /// The token's user.
    user: (u64, String),
    /// branch → head sha
    branches: HashMap<String, String>,
    commits: HashSet<String>,
    mrs: Vec<MergeRequest>,
    notes: HashMap<u64, Vec<Note>>,
    /// merge request iid → approval rules; none: a tier without rules.
    rules: HashMap<u64, Vec<Rule>>,
    statuses: HashMap<String, Vec<GitLabStatus>>,
    environments: Vec<GitLabEnvironment>,
    deployments: Vec<GitLabDeployment>,
    next_id: u64,
    rate_limited: bool,
    /// Pages carry only `Link`, as keyset pagination does.
    link_only: bool,
}

/// A fake GitLab REST API v4 under `/api/v4` (project paths URL-encoded or
/// numeric ids, `PRIVATE-TOKEN` or `Authorization: Bearer`, offset
/// pagination with `X-Next-Page`, `X-Total` and `Link`, GitLab's error
/// shapes: `{"message": "404 Project Not Found"}`, `{"message": {field:
/// [reasons]}}`, `{"error": "insufficient_scope"}`, 429 with `RateLimit-*`
/// and `Retry-After`), and GitLab's rules for commit status transitions.
pub struct FakeGitLab {
    pub fake: Fake,
    data: Arc<Mutex<GitLabData>>,
}

impl std::fmt::Debug for FakeGitLab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeGitLab")
            .field("url", &self.fake.url)
            .finish()
    }
}

fn gl_error(status: u16, message: &str) -> Response {
    json_response(status, json!({ "message": message }))
}

fn gl_invalid(field: &str, reason: &str) -> Response {
    json_response(400, json!({ "message": { field: [reason] } }))
}

/// One page of `items` with GitLab's offset pagination headers.
fn gl_page(r: &Recorded, items: Vec<Value>, link_only: bool) -> Response {
    let per_page = query_param(&r.query, "per_page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(20)
        .clamp(1, 100);
    let page = query_param(&r.query, "page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let total = items.len();
    let pages = total.div_ceil(per_page).max(1);
    let slice: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    let mut resp = json_response(200, Value::Array(slice));
    let host = r.header("host").unwrap_or_default();
    let others: String = url::form_urlencoded::parse(r.query.as_bytes())
        .filter(|(k, _)| k != "page")
        .fold(
            url::form_urlencoded::Serializer::new(String::new()),
            |mut s, (k, v)| {
                s.append_pair(&k, &v);
                s
            },
        )
        .finish();
    let link =
        |p: usize, rel: &str| format!("<http://{host}{}?{others}&page={p}>; rel=\"{rel}\"", r.path);
    let mut links = Vec::new();
    if page < pages {
        links.push(link(page + 1, "next"));
    }
    links.push(link(1, "first"));
    links.push(link(pages, "last"));
    let mut headers = vec![("link", links.join(", "))];
    if !link_only {
        headers.extend([
            ("x-page", page.to_string()),
            ("x-per-page", per_page.to_string()),
            (
                "x-next-page",
                if page < pages {
                    (page + 1).to_string()
                } else {
                    String::new()
                },
            ),
            (
                "x-prev-page",
                if page > 1 {
                    (page - 1).to_string()
                } else {
                    String::new()
                },
            ),
            ("x-total", total.to_string()),
            ("x-total-pages", pages.to_string()),
        ]);
    }
    for (k, v) in headers {
        if let Ok(v) = v.parse() {
            resp.headers_mut().insert(k, v);
        }
    }
    resp
}

fn env_json(e: &GitLabEnvironment) -> Value {
    json!({
        "id": e.id,
        "name": e.name,
        "slug": e.name.to_lowercase().replace(['/', ' ', '.'], "-"),
        "external_url": e.external_url,
        "tier": e.tier,
        "state": e.state,
    })
}

impl FakeGitLab {
    /// Project `group/name` (numeric id 42), accepting `token` for
    /// everything and `read_token` for reads only.
    pub fn start(project: &str, token: &str, read_token: &str) -> anyhow::Result<FakeGitLab> {
        let data = Arc::new(Mutex::new(GitLabData {
            project: (project.to_string(), 42),
            token: token.to_string(),
            read_token: read_token.to_string(),
            user: (7, "project_42_bot_stamp".to_string()),
            next_id: 1000,
            ..GitLabData::default()
        }));
        let d = data.clone();
        let fake = Fake::start(Arc::new(move |r: &Recorded| gitlab(&d, r)))?;
        Ok(FakeGitLab { fake, data })
    }

    pub fn url(&self) -> &str {
        &self.fake.url
    }

    fn with<T: Default>(&self, f: impl FnOnce(&mut GitLabData) -> T) -> T {
        self.data.lock().map(|mut d| f(&mut d)).unwrap_or_default()
    }

    /// A branch at `sha`.
    pub fn branch(&self, name: &str, sha: &str) {
        self.with(|d| {
            d.branches.insert(name.to_string(), sha.to_string());
            d.commits.insert(sha.to_string());
        });
    }

    /// An open merge request of `branch` at `sha`; returns its iid.
    pub fn merge_request(&self, branch: &str, sha: &str) -> u64 {
        self.branch(branch, sha);
        self.with(|d| {
            let iid = d.mrs.len() as u64 + 1;
            d.mrs.push(MergeRequest {
                iid,
                source_branch: branch.to_string(),
                sha: sha.to_string(),
                draft: false,
                pipeline: None,
                approved_by: Vec::new(),
            });
            iid
        })
    }

    fn mr(&self, iid: u64, f: impl FnOnce(&mut MergeRequest)) {
        self.with(|d| {
            if let Some(m) = d.mrs.iter_mut().find(|m| m.iid == iid) {
                f(m)
            }
        });
    }

    pub fn set_draft(&self, iid: u64, draft: bool) {
        self.mr(iid, |m| m.draft = draft);
    }

    /// The merge request's head pipeline: on `sha`, with `status`.
    pub fn pipeline(&self, iid: u64, sha: &str, status: &str) {
        let id = self.with(|d| {
            d.next_id += 1;
            d.next_id
        });
        self.mr(iid, |m| {
            m.pipeline = Some((id, sha.to_string(), status.to_string()))
        });
    }

    pub fn approve(&self, iid: u64, user: &str) {
        self.mr(iid, |m| m.approved_by.push(user.to_string()));
        self.with(|d| {
            for rule in d.rules.get_mut(&iid).into_iter().flatten() {
                rule.approved_by.push(user.to_string());
            }
        });
    }

    /// An approval rule (a tier that has them) needing `required`.
    pub fn rule(&self, iid: u64, name: &str, required: u64) {
        self.with(|d| {
            d.rules.entry(iid).or_default().push(Rule {
                name: name.to_string(),
                required,
                approved_by: Vec::new(),
            })
        });
    }

    /// Notes of other people, and GitLab's own system notes, to page through.
    pub fn foreign_notes(&self, iid: u64, n: usize) {
        self.with(|d| {
            for i in 0..n {
                d.next_id += 1;
                let id = d.next_id;
                d.notes.entry(iid).or_default().push(Note {
                    id,
                    body: if i % 3 == 0 {
                        format!("added {i} commit")
                    } else {
                        format!("looks good {i}")
                    },
                    author: (100 + i as u64, format!("dev{i}")),
                    system: i % 3 == 0,
                });
            }
        });
    }

    /// Someone else's note that quotes `body` (our marker, say).
    pub fn note_by(&self, iid: u64, user: &str, body: &str) {
        self.with(|d| {
            d.next_id += 1;
            let id = d.next_id;
            d.notes.entry(iid).or_default().push(Note {
                id,
                body: body.to_string(),
                author: (99, user.to_string()),
                system: false,
            });
        });
    }

    /// Every API call answers 429.
    pub fn set_rate_limited(&self, on: bool) {
        self.with(|d| d.rate_limited = on);
    }

    /// Pages carry `Link` only, without `X-Next-Page`.
    pub fn set_link_only(&self, on: bool) {
        self.with(|d| d.link_only = on);
    }

    /// (author, body) of the notes on a merge request, oldest first,
    /// without system notes.
    pub fn notes(&self, iid: u64) -> Vec<(String, String)> {
        self.with(|d| {
            d.notes
                .get(&iid)
                .map(|n| {
                    n.iter()
                        .filter(|n| !n.system)
                        .map(|n| (n.author.1.clone(), n.body.clone()))
                        .collect()
                })
                .unwrap_or_default()
        })
    }

    pub fn environments(&self) -> Vec<GitLabEnvironment> {
        self.with(|d| d.environments.clone())
    }

    pub fn deployments(&self) -> Vec<GitLabDeployment> {
        self.with(|d| d.deployments.clone())
    }

    /// Every commit status on `sha`, oldest first (a finished one is kept
    /// when a new one replaces it, as GitLab keeps retried statuses).
    pub fn statuses(&self, sha: &str) -> Vec<GitLabStatus> {
        self.with(|d| d.statuses.get(sha).cloned().unwrap_or_default())
    }
}

fn finished(state: &str) -> bool {
    matches!(state, "success" | "failed" | "canceled" | "skipped")
}

/// GitLab's state machine for an unfinished commit status: the event a
/// POST of `to` fires, and whether it may fire from `from`.
fn transition(from: &str, to: &str) -> Result<(), String> {
    let (event, allowed): (&str, &[&str]) = match to {
        "pending" => ("enqueue", &["created", "skipped", "manual", "scheduled"]),
        "running" => ("run", &["pending"]),
        "success" => ("success", &["created", "pending", "running"]),
        "failed" => ("drop", &["created", "pending", "running"]),
        "canceled" => ("cancel", &["created", "pending", "running", "manual"]),
        _ => ("?", &[]),
    };
    if allowed.contains(&from) {
        Ok(())
    } else {
        Err(format!(
            "Cannot transition status via :{event} from :{from} (Reason(s): Status cannot transition via \"{event}\")"
        ))
    }
}

pub(super) fn gitlab(data: &Arc<Mutex<GitLabData>>, r: &Recorded) -> Response {
    let Ok(mut d) = data.lock() else {
        return gl_error(500, "fake state poisoned");
    };
    let token = r
        .header("private-token")
        .or_else(|| {
            r.header("authorization")
                .and_then(|a| a.strip_prefix("Bearer ").map(str::to_string))
        })
        .unwrap_or_default();
    let writes = r.method != "GET";
    if token.is_empty() || (token != d.token && token != d.read_token) {
        return gl_error(401, "401 Unauthorized");
    }
    if writes && token == d.read_token {
        return json_response(
            403,
            json!({
                "error": "insufficient_scope",
                "error_description": "The request requires higher privileges than provided by the access token.",
                "scope": "api",
            }),
        );
    }
    if d.rate_limited {
        let mut resp = json_response(429, json!({ "message": "Retry later" }));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |t| t.as_secs());
        for (k, v) in [
            ("ratelimit-limit", "2000".to_string()),
            ("ratelimit-remaining", "0".to_string()),
            ("ratelimit-reset", (now + 3600).to_string()),
            ("retry-after", "3600".to_string()),
        ] {
            if let Ok(v) = v.parse() {
                resp.headers_mut().insert(k, v);
            }
        }
        return resp;
    }
    let Some(path) = r.path.strip_prefix("/api/v4/") else {
        return gl_error(404, "404 Not Found");
    };
    let segments: Vec<String> = path
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    if segments == ["user"] {
        return json_response(
            200,
            json!({ "id": d.user.0, "username": d.user.1, "bot": true }),
        );
    }
    let (project, id) = d.project.clone();
    let rest = match segments.as_slice() {
        ["projects", p, rest @ ..] if *p == project || *p == id.to_string() => rest.to_vec(),
        _ => return gl_error(404, "404 Project Not Found"),
    };
    let body = r.json();
    let link_only = d.link_only;
    let number = |s: &str| s.parse::<u64>().ok();
    let mr_json = |m: &MergeRequest, single: bool| {
        let mut v = json!({
            "id": 50_000 + m.iid,
            "iid": m.iid,
            "project_id": id,
            "title": format!("{}: the change", m.source_branch),
            "state": "opened",
            "source_branch": m.source_branch,
            "target_branch": "main",
            "sha": m.sha,
            "draft": m.draft,
            "work_in_progress": m.draft,
            "web_url": format!("https://gitlab.example.com/{project}/-/merge_requests/{}", m.iid),
        });
        if single {
            v["head_pipeline"] = match &m.pipeline {
                Some((pid, sha, status)) => json!({
                    "id": pid, "iid": pid - 1000, "project_id": id, "sha": sha, "ref": m.source_branch,
                    "status": status, "source": "merge_request_event",
                    "web_url": format!("https://gitlab.example.com/{project}/-/pipelines/{pid}"),
                }),
                None => Value::Null,
            };
        }
        v
    };
    let method = r.method.as_str();
    match (method, rest.as_slice()) {
        ("GET", ["merge_requests"]) => {
            let state = query_param(&r.query, "state");
            let branch = query_param(&r.query, "source_branch");
            let mut items: Vec<Value> = d
                .mrs
                .iter()
                .filter(|_| state.as_deref().is_none_or(|s| s == "opened" || s == "all"))
                .filter(|m| branch.as_deref().is_none_or(|b| b == m.source_branch))
                .map(|m| mr_json(m, false))
                .collect();
            if query_param(&r.query, "sort").as_deref() != Some("asc") {
                items.reverse();
            }
            gl_page(r, items, link_only)
        }
        ("GET", ["merge_requests", n]) => {
            match number(n).and_then(|n| d.mrs.iter().find(|m| m.iid == n)) {
                Some(m) => json_response(200, mr_json(m, true)),
                None => gl_error(404, "404 Not found"),
            }
        }
        ("GET", ["merge_requests", n, "approvals"]) => {
            let Some(m) = number(n).and_then(|n| d.mrs.iter().find(|m| m.iid == n)) else {
                return gl_error(404, "404 Not found");
            };
            let rules = d.rules.get(&m.iid).cloned().unwrap_or_default();
            let required: u64 = rules.iter().map(|r| r.required).sum();
            let left: u64 = rules
                .iter()
                .map(|r| r.required.saturating_sub(r.approved_by.len() as u64))
                .sum();
            json_response(
                200,
                json!({
                    "iid": m.iid,
                    "approved": left == 0,
                    "approvals_required": required,
                    "approvals_left": left,
                    "approved_by": m.approved_by.iter().map(|u| json!({ "user": { "username": u, "name": u } })).collect::<Vec<_>>(),
                }),
            )
        }
        ("GET", ["merge_requests", n, "approval_state"]) => {
            let Some(iid) = number(n).filter(|n| d.mrs.iter().any(|m| m.iid == *n)) else {
                return gl_error(404, "404 Not found");
            };
            // A tier without approval rules.
            let Some(rules) = d.rules.get(&iid) else {
                return gl_error(403, "403 Forbidden");
            };
            json_response(
                200,
                json!({
                    "approval_rules_overwritten": false,
                    "rules": rules.iter().enumerate().map(|(i, r)| json!({
                        "id": i + 1,
                        "name": r.name,
                        "rule_type": "regular",
                        "approvals_required": r.required,
                        "approved_by": r.approved_by.iter().map(|u| json!({ "username": u })).collect::<Vec<_>>(),
                        "approved": r.approved_by.len() as u64 >= r.required,
                    })).collect::<Vec<_>>(),
                }),
            )
        }
        ("GET", ["merge_requests", n, "notes"]) => {
            let Some(iid) = number(n).filter(|n| d.mrs.iter().any(|m| m.iid == *n)) else {
                return gl_error(404, "404 Not found");
            };
            let mut items: Vec<Value> = d
                .notes
                .get(&iid)
                .map(|notes| {
                    notes
                        .iter()
                        .map(|n| {
                            json!({
                                "id": n.id, "body": n.body, "system": n.system,
                                "author": { "id": n.author.0, "username": n.author.1 },
                                "noteable_type": "MergeRequest", "noteable_iid": iid,
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            // GitLab's default order is newest first.
            if query_param(&r.query, "sort").as_deref() != Some("asc") {
                items.reverse();
            }
            gl_page(r, items, link_only)
        }
        ("POST", ["merge_requests", n, "notes"]) => {
            let Some(iid) = number(n).filter(|n| d.mrs.iter().any(|m| m.iid == *n)) else {
                return gl_error(404, "404 Not found");
            };
            let Some(text) = body["body"].as_str().filter(|b| !b.is_empty()) else {
                return json_response(400, json!({ "error": "body is missing" }));
            };
            d.next_id += 1;
            let note = Note {
                id: d.next_id,
                body: text.to_string(),
                author: d.user.clone(),
                system: false,
            };
            d.notes.entry(iid).or_default().push(note.clone());
            json_response(201, json!({ "id": note.id, "body": note.body }))
        }
        ("PUT", ["merge_requests", n, "notes", id]) => {
            let user = d.user.0;
            let (Some(iid), Some(id)) = (number(n), number(id)) else {
                return gl_error(404, "404 Not found");
            };
            let Some(text) = body["body"].as_str().filter(|b| !b.is_empty()) else {
                return json_response(400, json!({ "error": "body is missing" }));
            };
            let Some(note) = d
                .notes
                .get_mut(&iid)
                .and_then(|notes| notes.iter_mut().find(|x| x.id == id))
            else {
                return gl_error(404, "404 Note Not Found");
            };
            if note.author.0 != user || note.system {
                return gl_error(403, "403 Forbidden");
            }
            note.body = text.to_string();
            json_response(200, json!({ "id": id, "body": text }))
        }
        ("POST", ["statuses", sha]) => {
            if !d.commits.contains(*sha) {
                return gl_error(404, "404 Commit Not Found");
            }
            let state = body["state"].as_str().unwrap_or("");
            if ![
                "pending", "running", "success", "failed", "canceled", "skipped",
            ]
            .contains(&state)
            {
                return json_response(400, json!({ "error": "state does not have a valid value" }));
            }
            let name = body["name"]
                .as_str()
                .or_else(|| body["context"].as_str())
                .unwrap_or("default")
                .to_string();
            let git_ref = body["ref"].as_str().map(str::to_string);
            if let Some(b) = &git_ref {
                if d.branches.get(b).map(String::as_str) != Some(*sha)
                    && !d.branches.contains_key(b)
                {
                    return gl_error(404, "404 References for commit Not Found");
                }
            }
            let description = body["description"].as_str().unwrap_or("").to_string();
            if description.chars().count() > 255 {
                return gl_invalid("description", "is too long (maximum is 255 characters)");
            }
            let list = d.statuses.entry(sha.to_string()).or_default();
            let current = list
                .iter_mut()
                .rev()
                .find(|s| s.name == name && s.git_ref == git_ref);
            let status = GitLabStatus {
                name: name.clone(),
                git_ref: git_ref.clone(),
                state: state.to_string(),
                description,
                target_url: body["target_url"].as_str().map(str::to_string),
            };
            match current {
                // An unfinished status moves by GitLab's state machine.
                Some(cur) if !finished(&cur.state) => {
                    if let Err(m) = transition(&cur.state, state) {
                        return json_response(400, json!({ "message": m }));
                    }
                    *cur = status;
                }
                // A finished one is kept (retried) and a new one made.
                _ => list.push(status),
            }
            json_response(201, json!({ "sha": sha, "name": name, "status": state }))
        }
        ("GET", ["environments"]) => {
            let name = query_param(&r.query, "name");
            let items = d
                .environments
                .iter()
                .filter(|e| name.as_deref().is_none_or(|n| n == e.name))
                .map(env_json)
                .collect();
            gl_page(r, items, link_only)
        }
        ("POST", ["environments"]) => {
            let Some(name) = body["name"].as_str() else {
                return json_response(400, json!({ "error": "name is missing" }));
            };
            let valid = !name.starts_with('/')
                && !name.ends_with('/')
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || " -_/${}.".contains(c));
            if !valid {
                return gl_invalid("name", "can contain only letters, digits, '-', '_', '/', '$', '{', '}', '.', and spaces, but it cannot start or end with '/'");
            }
            if d.environments.iter().any(|e| e.name == name) {
                return gl_invalid("name", "has already been taken");
            }
            let tier = body["tier"].as_str().unwrap_or("other");
            if !["production", "staging", "testing", "development", "other"].contains(&tier) {
                return json_response(400, json!({ "error": "tier does not have a valid value" }));
            }
            d.next_id += 1;
            let env = GitLabEnvironment {
                id: d.next_id,
                name: name.to_string(),
                external_url: body["external_url"].as_str().map(str::to_string),
                tier: tier.to_string(),
                state: "available".to_string(),
            };
            d.environments.push(env.clone());
            json_response(201, env_json(&env))
        }
        ("PUT", ["environments", id]) => {
            let Some(env) =
                number(id).and_then(|id| d.environments.iter_mut().find(|e| e.id == id))
            else {
                return gl_error(404, "404 Environment Not Found");
            };
            if let Some(u) = body["external_url"].as_str() {
                env.external_url = Some(u.to_string());
            }
            if let Some(t) = body["tier"].as_str() {
                env.tier = t.to_string();
            }
            json_response(200, env_json(env))
        }
        ("POST", ["environments", id, "stop"]) => {
            let Some(env) =
                number(id).and_then(|id| d.environments.iter_mut().find(|e| e.id == id))
            else {
                return gl_error(404, "404 Environment Not Found");
            };
            env.state = "stopped".to_string();
            json_response(200, env_json(env))
        }
        ("POST", ["deployments"]) => {
            let (Some(env), Some(sha), Some(git_ref)) = (
                body["environment"].as_str(),
                body["sha"].as_str(),
                body["ref"].as_str(),
            ) else {
                return json_response(400, json!({ "error": "environment, sha, ref are missing" }));
            };
            if body["tag"].as_bool().is_none() {
                return json_response(400, json!({ "error": "tag is missing" }));
            }
            let status = body["status"].as_str().unwrap_or("");
            if !["running", "success", "failed", "canceled"].contains(&status) {
                return json_response(
                    400,
                    json!({ "error": "status does not have a valid value" }),
                );
            }
            if !d.commits.contains(sha) {
                return gl_invalid("sha", "is not a commit of the project");
            }
            // GitLab makes the environment when it does not exist, and a
            // deployment makes a stopped one available again.
            d.next_id += 1;
            let next = d.next_id;
            match d.environments.iter_mut().find(|e| e.name == env) {
                Some(e) => e.state = "available".to_string(),
                None => d.environments.push(GitLabEnvironment {
                    id: next,
                    name: env.to_string(),
                    external_url: None,
                    tier: "other".to_string(),
                    state: "available".to_string(),
                }),
            }
            d.next_id += 1;
            let id = d.next_id;
            d.deployments.push(GitLabDeployment {
                id,
                environment: env.to_string(),
                sha: sha.to_string(),
                git_ref: git_ref.to_string(),
                statuses: vec![status.to_string()],
            });
            json_response(
                201,
                json!({ "id": id, "iid": d.deployments.len(), "ref": git_ref, "sha": sha, "status": status }),
            )
        }
        ("PUT", ["deployments", id]) => {
            let Some(dep) = number(id).and_then(|id| d.deployments.iter_mut().find(|x| x.id == id))
            else {
                return gl_error(404, "404 Deployment Not Found");
            };
            let status = body["status"].as_str().unwrap_or("");
            let from = dep.statuses.last().cloned().unwrap_or_default();
            if from != "running" && from != "created" {
                return json_response(
                    400,
                    json!({ "message": format!("Cannot transition status via :{status} from :{from}") }),
                );
            }
            dep.statuses.push(status.to_string());
            json_response(200, json!({ "id": dep.id, "status": status }))
        }
        ("GET", ["repository", "branches", name]) => match d.branches.get(*name) {
            Some(sha) => json_response(200, json!({ "name": name, "commit": { "id": sha } })),
            None => gl_error(404, "404 Branch Not Found"),
        },
        _ => gl_error(404, "404 Not Found"),
    }
}
