//! A fake GitHub REST API.

#[allow(unused_imports)]
use super::*;

#[derive(Debug, Clone)]
pub(super) struct Deployment {
    id: u64,
    git_ref: String,
    environment: String,
    statuses: Vec<String>,
}

#[derive(Default)]
pub(super) struct GitHubData {
    repo: String,
    token: String,
    /// Installation tokens issued to the app.
    issued: HashSet<String>,
    /// (app id, installation id, public key PEM)
    app: Option<(u64, u64, String)>,
    /// Branches and commits that exist.
    refs: HashSet<String>,
    /// (number, head branch, head sha)
    pulls: Vec<(u64, String, String)>,
    /// issue number → (id, body)
    comments: HashMap<u64, Vec<(u64, String)>>,
    /// pull number → (reviewer, state)
    reviews: HashMap<u64, Vec<(String, String)>>,
    /// sha → (name, status, conclusion)
    check_runs: HashMap<String, Vec<(String, String, Option<String>)>>,
    /// sha → (context, state, description)
    statuses: HashMap<String, Vec<(String, String, String)>>,
    deployments: Vec<Deployment>,
    next_id: u64,
    rate_limited: bool,
}

/// A fake GitHub REST API (api.github.com paths, `Bearer` tokens or a
/// GitHub App's RS256 JWT for installation tokens, `Link` pagination,
/// GitHub's error shapes: 401 Bad credentials, 403 rate limit with
/// `x-ratelimit-*`, 404 Not Found, 422 Validation Failed).
pub struct FakeGitHub {
    pub fake: Fake,
    data: Arc<Mutex<GitHubData>>,
}

impl std::fmt::Debug for FakeGitHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeGitHub")
            .field("url", &self.fake.url)
            .finish()
    }
}

pub(super) fn gh_error(status: u16, message: &str) -> Response {
    json_response(
        status,
        json!({ "message": message, "documentation_url": "https://docs.github.com/rest" }),
    )
}

pub(super) fn gh_invalid(resource: &str, message: &str) -> Response {
    json_response(
        422,
        json!({
            "message": "Validation Failed",
            "errors": [{ "resource": resource, "code": "custom", "message": message }],
            "documentation_url": "https://docs.github.com/rest",
        }),
    )
}

pub(super) fn query_param(query: &str, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// One page of `items` with GitHub's `Link` header (`per_page`, `page`).
pub(super) fn gh_page(r: &Recorded, items: Vec<Value>, wrap: Option<&str>) -> Response {
    let per_page = query_param(&r.query, "per_page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(30)
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
    let body = match wrap {
        Some(field) => json!({ "total_count": total, field: slice }),
        None => Value::Array(slice),
    };
    let mut resp = json_response(200, body);
    if pages > 1 {
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
        let link = |p: usize, rel: &str| {
            format!("<http://{host}{}?{others}&page={p}>; rel=\"{rel}\"", r.path)
        };
        let mut links = Vec::new();
        if page < pages {
            links.push(link(page + 1, "next"));
            links.push(link(pages, "last"));
        }
        if page > 1 {
            links.push(link(page - 1, "prev"));
            links.push(link(1, "first"));
        }
        if let Ok(v) = links.join(", ").parse() {
            resp.headers_mut().insert("link", v);
        }
    }
    resp
}

impl FakeGitHub {
    /// `owner/name`, accepting `Bearer <token>`.
    pub fn start(repo: &str, token: &str) -> anyhow::Result<FakeGitHub> {
        let data = Arc::new(Mutex::new(GitHubData {
            repo: repo.to_string(),
            token: token.to_string(),
            next_id: 1000,
            ..GitHubData::default()
        }));
        let d = data.clone();
        let fake = Fake::start(Arc::new(move |r: &Recorded| github(&d, r)))?;
        Ok(FakeGitHub { fake, data })
    }

    pub fn url(&self) -> &str {
        &self.fake.url
    }

    fn with<T>(&self, f: impl FnOnce(&mut GitHubData) -> T) -> Option<T> {
        self.data.lock().ok().map(|mut d| f(&mut d))
    }

    /// A GitHub App that may buy installation tokens with a JWT signed by
    /// the private key of `public_pem`.
    pub fn app(&self, app_id: u64, installation_id: u64, public_pem: &str) {
        self.with(|d| d.app = Some((app_id, installation_id, public_pem.to_string())));
    }

    /// An open pull request of `branch` at `sha`; returns its number.
    pub fn pull(&self, branch: &str, sha: &str) -> u64 {
        self.with(|d| {
            d.next_id += 1;
            let n = d.pulls.len() as u64 + 1;
            d.pulls.push((n, branch.to_string(), sha.to_string()));
            d.refs.insert(branch.to_string());
            d.refs.insert(sha.to_string());
            n
        })
        .unwrap_or(0)
    }

    /// Someone else's comments on an issue (to page through).
    pub fn foreign_comments(&self, number: u64, n: usize) {
        self.with(|d| {
            for i in 0..n {
                d.next_id += 1;
                let id = d.next_id;
                d.comments
                    .entry(number)
                    .or_default()
                    .push((id, format!("looks good {i}")));
            }
        });
    }

    pub fn review(&self, number: u64, user: &str, state: &str) {
        self.with(|d| {
            d.reviews
                .entry(number)
                .or_default()
                .push((user.to_string(), state.to_string()))
        });
    }

    pub fn check_run(&self, sha: &str, name: &str, status: &str, conclusion: Option<&str>) {
        self.with(|d| {
            let runs = d.check_runs.entry(sha.to_string()).or_default();
            runs.retain(|(n, ..)| n != name);
            runs.push((
                name.to_string(),
                status.to_string(),
                conclusion.map(str::to_string),
            ));
        });
    }

    /// Every API call answers 403 with a spent rate limit.
    pub fn set_rate_limited(&self, on: bool) {
        self.with(|d| d.rate_limited = on);
    }

    /// The bodies of the comments on an issue, oldest first.
    pub fn comments(&self, number: u64) -> Vec<String> {
        self.with(|d| {
            d.comments
                .get(&number)
                .map(|c| c.iter().map(|(_, b)| b.clone()).collect())
                .unwrap_or_default()
        })
        .unwrap_or_default()
    }

    /// (environment, ref, statuses) of every deployment, oldest first.
    pub fn deployments(&self) -> Vec<(String, String, Vec<String>)> {
        self.with(|d| {
            d.deployments
                .iter()
                .map(|x| (x.environment.clone(), x.git_ref.clone(), x.statuses.clone()))
                .collect()
        })
        .unwrap_or_default()
    }

    /// (context, state, description) of the commit statuses on `sha`.
    pub fn statuses(&self, sha: &str) -> Vec<(String, String, String)> {
        self.with(|d| d.statuses.get(sha).cloned().unwrap_or_default())
            .unwrap_or_default()
    }
}

pub(super) fn github(data: &Arc<Mutex<GitHubData>>, r: &Recorded) -> Response {
    let Ok(mut d) = data.lock() else {
        return gh_error(500, "fake state poisoned");
    };
    if r.header("user-agent").is_none_or(|u| u.is_empty()) {
        return gh_error(403, "Request forbidden by administrative rules. Please make sure your request has a User-Agent header");
    }
    if r.header("x-github-api-version")
        .is_some_and(|v| v != "2022-11-28")
    {
        return gh_error(400, "Unsupported 'X-GitHub-Api-Version'");
    }
    let bearer = r
        .header("authorization")
        .and_then(|a| a.strip_prefix("Bearer ").map(str::to_string))
        .unwrap_or_default();
    let segments: Vec<&str> = r.path.trim_start_matches('/').split('/').collect();

    // A GitHub App buys an installation token with its JWT.
    if let ["app", "installations", id, "access_tokens"] = segments.as_slice() {
        let Some((app_id, installation, public)) = d.app.clone() else {
            return gh_error(404, "Not Found");
        };
        if r.method != "POST" {
            return gh_error(404, "Not Found");
        }
        let Ok(key) = jsonwebtoken::DecodingKey::from_rsa_pem(public.as_bytes()) else {
            return gh_error(500, "fake: bad public key");
        };
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_required_spec_claims(&["exp", "iat", "iss"]);
        validation.set_issuer(&[app_id.to_string()]);
        let Ok(claims) = jsonwebtoken::decode::<Value>(&bearer, &key, &validation) else {
            return gh_error(401, "A JSON web token could not be decoded");
        };
        let (iat, exp) = (claims.claims["iat"].as_u64(), claims.claims["exp"].as_u64());
        if !matches!((iat, exp), (Some(i), Some(e)) if e > i && e - i <= 600) {
            return gh_error(
                401,
                "'Expiration time' claim ('exp') is too far in the future",
            );
        }
        if *id != installation.to_string() {
            return gh_error(404, "Not Found");
        }
        d.next_id += 1;
        let token = format!("ghs_fake{}", d.next_id);
        d.issued.insert(token.clone());
        return json_response(
            201,
            json!({ "token": token, "expires_at": "2099-01-01T00:00:00Z", "permissions": {"pull_requests": "write"} }),
        );
    }

    if bearer.is_empty() || (bearer != d.token && !d.issued.contains(&bearer)) {
        return gh_error(401, "Bad credentials");
    }
    if d.rate_limited {
        let mut resp = gh_error(403, "API rate limit exceeded for installation ID 1.");
        let reset = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |t| t.as_secs())
            + 3600;
        for (k, v) in [
            ("x-ratelimit-limit", "5000".to_string()),
            ("x-ratelimit-remaining", "0".to_string()),
            ("x-ratelimit-reset", reset.to_string()),
        ] {
            if let Ok(v) = v.parse() {
                resp.headers_mut().insert(k, v);
            }
        }
        return resp;
    }
    let repo: Vec<&str> = d.repo.split('/').collect();
    let rest = match segments.as_slice() {
        ["repos", owner, name, rest @ ..] if [*owner, *name] == repo[..] => rest.to_vec(),
        _ => return gh_error(404, "Not Found"),
    };
    let body = r.json();
    let method = r.method.as_str();
    let number = |s: &str| s.parse::<u64>().ok();
    match (method, rest.as_slice()) {
        ("GET", ["pulls"]) => {
            let head = query_param(&r.query, "head");
            let owner = repo[0];
            let items = d
                .pulls
                .iter()
                .filter(|(_, branch, _)| head.as_deref().is_none_or(|h| h == format!("{owner}:{branch}")))
                .map(|(n, branch, sha)| json!({ "number": n, "state": "open", "head": { "ref": branch, "sha": sha } }))
                .collect();
            gh_page(r, items, None)
        }
        ("GET", ["issues", n, "comments"]) => {
            let Some(n) = number(n).filter(|n| d.pulls.iter().any(|p| p.0 == *n)) else {
                return gh_error(404, "Not Found");
            };
            let items = d
                .comments
                .get(&n)
                .map(|c| c.iter().map(|(id, b)| json!({ "id": id, "body": b, "user": { "login": "someone" } })).collect())
                .unwrap_or_default();
            gh_page(r, items, None)
        }
        ("POST", ["issues", n, "comments"]) => {
            let Some(n) = number(n).filter(|n| d.pulls.iter().any(|p| p.0 == *n)) else {
                return gh_error(404, "Not Found");
            };
            let Some(text) = body["body"].as_str() else {
                return gh_invalid("IssueComment", "body is missing");
            };
            d.next_id += 1;
            let id = d.next_id;
            d.comments
                .entry(n)
                .or_default()
                .push((id, text.to_string()));
            json_response(201, json!({ "id": id, "body": text }))
        }
        ("PATCH", ["issues", "comments", id]) => {
            let Some(text) = body["body"].as_str() else {
                return gh_invalid("IssueComment", "body is missing");
            };
            let Some(id) = number(id) else {
                return gh_error(404, "Not Found");
            };
            for list in d.comments.values_mut() {
                if let Some(c) = list.iter_mut().find(|c| c.0 == id) {
                    c.1 = text.to_string();
                    return json_response(200, json!({ "id": id, "body": text }));
                }
            }
            gh_error(404, "Not Found")
        }
        ("GET", ["pulls", n, "reviews"]) => {
            let Some(n) = number(n).filter(|n| d.pulls.iter().any(|p| p.0 == *n)) else {
                return gh_error(404, "Not Found");
            };
            let items = d
                .reviews
                .get(&n)
                .map(|list| list.iter().enumerate().map(|(i, (u, s))| json!({ "id": i + 1, "user": { "login": u }, "state": s })).collect())
                .unwrap_or_default();
            gh_page(r, items, None)
        }
        ("GET", ["commits", sha, "check-runs"]) => {
            let items = d
                .check_runs
                .get(*sha)
                .map(|runs| {
                    runs.iter()
                        .map(|(n, s, c)| json!({ "name": n, "status": s, "conclusion": c }))
                        .collect()
                })
                .unwrap_or_default();
            gh_page(r, items, Some("check_runs"))
        }
        ("GET", ["commits", sha, "status"]) => {
            let list: Vec<Value> = d
                .statuses
                .get(*sha)
                .map(|s| s.iter().map(|(c, st, desc)| json!({ "context": c, "state": st, "description": desc })).collect())
                .unwrap_or_default();
            let state = if list.iter().all(|s| s["state"] == "success") {
                "success"
            } else {
                "pending"
            };
            json_response(200, json!({ "state": state, "statuses": list }))
        }
        ("POST", ["statuses", sha]) => {
            if !d.refs.contains(*sha) {
                return gh_invalid("Status", &format!("No commit found for SHA: {sha}"));
            }
            let state = body["state"].as_str().unwrap_or("");
            if !["error", "failure", "pending", "success"].contains(&state) {
                return gh_invalid("Status", "state is not included in the list");
            }
            let context = body["context"].as_str().unwrap_or("default").to_string();
            let desc = body["description"].as_str().unwrap_or("").to_string();
            if desc.chars().count() > 140 {
                return gh_invalid(
                    "Status",
                    "description is too long (maximum is 140 characters)",
                );
            }
            d.statuses
                .entry(sha.to_string())
                .or_default()
                .push((context, state.to_string(), desc));
            json_response(201, json!({ "state": state }))
        }
        ("POST", ["deployments"]) => {
            let git_ref = body["ref"].as_str().unwrap_or("").to_string();
            if !d.refs.contains(&git_ref) {
                return gh_invalid("Deployment", &format!("No ref found for: {git_ref}"));
            }
            let Some(env) = body["environment"].as_str() else {
                return gh_invalid("Deployment", "environment is missing");
            };
            d.next_id += 1;
            let id = d.next_id;
            d.deployments.push(Deployment {
                id,
                git_ref,
                environment: env.to_string(),
                statuses: Vec::new(),
            });
            json_response(201, json!({ "id": id, "environment": env }))
        }
        ("GET", ["deployments"]) => {
            let env = query_param(&r.query, "environment");
            let items = d
                .deployments
                .iter()
                .rev()
                .filter(|x| env.as_deref().is_none_or(|e| e == x.environment))
                .map(|x| json!({ "id": x.id, "environment": x.environment, "ref": x.git_ref }))
                .collect();
            gh_page(r, items, None)
        }
        ("POST", ["deployments", id, "statuses"]) => {
            let state = body["state"].as_str().unwrap_or("").to_string();
            if ![
                "error",
                "failure",
                "inactive",
                "in_progress",
                "queued",
                "pending",
                "success",
            ]
            .contains(&state.as_str())
            {
                return gh_invalid("DeploymentStatus", "state is not included in the list");
            }
            let Some(x) = number(id).and_then(|id| d.deployments.iter_mut().find(|x| x.id == id))
            else {
                return gh_error(404, "Not Found");
            };
            x.statuses.push(state.clone());
            json_response(201, json!({ "state": state }))
        }
        _ => gh_error(404, "Not Found"),
    }
}
