//! GitHub's and Atlassian's OAuth endpoints, for sign-in.

#[allow(unused_imports)]
use super::*;

#[derive(Default)]
pub(super) struct OAuthData {
    challenge: Option<String>,
    pkce: Option<bool>,
    device_approved: bool,
    /// Tokens issued to the app, and tokens issued to some other app.
    ours: HashSet<String>,
    foreign: HashSet<String>,
    next: u64,
}

/// GitHub's OAuth app endpoints (`/login/oauth/authorize`,
/// `/login/oauth/access_token` with its `200 OK` error answers,
/// `/login/device/code`), the REST API that says who a token is (`/user`,
/// `/user/emails`, `/user/orgs`, `/user/teams`,
/// `POST /applications/{client_id}/token`), and Atlassian's (`/authorize`,
/// `/oauth/token`, `/me`), for one person: octocat, verified primary email
/// octocat@github.com, in org `acme` and team `acme/qa`.
pub struct FakeOAuth {
    pub fake: Fake,
    data: Arc<Mutex<OAuthData>>,
}

impl std::fmt::Debug for FakeOAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeOAuth")
            .field("url", &self.fake.url)
            .finish()
    }
}

impl FakeOAuth {
    /// An app with `client_id` and `secret`.
    pub fn start(client_id: &str, secret: &str) -> anyhow::Result<FakeOAuth> {
        let data = Arc::new(Mutex::new(OAuthData::default()));
        let d = data.clone();
        let (client_id, secret) = (client_id.to_string(), secret.to_string());
        let base: Arc<Mutex<String>> = Arc::new(Mutex::new(String::new()));
        let b = base.clone();
        let fake = Fake::start(Arc::new(move |r: &Recorded| {
            let url = b.lock().map(|s| s.clone()).unwrap_or_default();
            let form = String::from_utf8_lossy(&r.body).to_string();
            let bearer = r
                .header("authorization")
                .and_then(|a| a.strip_prefix("Bearer ").map(str::to_string))
                .unwrap_or_default();
            let Ok(mut d) = d.lock() else {
                return gh_error(500, "poisoned");
            };
            let known = d.ours.contains(&bearer) || d.foreign.contains(&bearer);
            let issue = |d: &mut OAuthData| {
                d.next += 1;
                let t = format!("gho_{:036}", d.next);
                d.ours.insert(t.clone());
                t
            };
            match (r.method.as_str(), r.path.as_str()) {
                ("GET", "/login/oauth/authorize" | "/authorize") => {
                    if query_param(&r.query, "client_id").as_deref() != Some(client_id.as_str()) {
                        return gh_error(404, "Not Found");
                    }
                    d.challenge = query_param(&r.query, "code_challenge").filter(|_| {
                        query_param(&r.query, "code_challenge_method").as_deref() == Some("S256")
                    });
                    let to = format!(
                        "{}?code=code-1&state={}",
                        query_param(&r.query, "redirect_uri").unwrap_or_default(),
                        query_param(&r.query, "state").unwrap_or_default()
                    );
                    (StatusCode::FOUND, [("location", to)]).into_response()
                }
                ("POST", "/login/device/code") => {
                    if query_param(&form, "client_id").as_deref() != Some(client_id.as_str()) {
                        return json_response(
                            200,
                            json!({ "error": "incorrect_client_credentials" }),
                        );
                    }
                    json_response(
                        200,
                        json!({
                            "device_code": "dc-1",
                            "user_code": "WDJB-MJHT",
                            "verification_uri": format!("{url}/login/device"),
                            "expires_in": 900,
                            "interval": 1,
                        }),
                    )
                }
                ("POST", "/login/oauth/access_token" | "/oauth/token") => {
                    let github = r.path.starts_with("/login");
                    let refuse = |error: &str, description: &str| {
                        // GitHub: 200 OK with an error; Atlassian: RFC 6749's 400/401.
                        json_response(
                            if github { 200 } else { 400 },
                            json!({ "error": error, "error_description": description }),
                        )
                    };
                    if query_param(&form, "grant_type").as_deref()
                        == Some("urn:ietf:params:oauth:grant-type:device_code")
                    {
                        if query_param(&form, "device_code").as_deref() != Some("dc-1") {
                            return refuse(
                                "incorrect_device_code",
                                "The device_code provided is not valid.",
                            );
                        }
                        if !d.device_approved {
                            return refuse(
                                "authorization_pending",
                                "The authorization request is still pending.",
                            );
                        }
                        let t = issue(&mut d);
                        return json_response(
                            200,
                            json!({ "access_token": t, "token_type": "bearer", "scope": "read:user,user:email,read:org" }),
                        );
                    }
                    if query_param(&form, "client_id").as_deref() != Some(client_id.as_str())
                        || query_param(&form, "client_secret").as_deref() != Some(secret.as_str())
                    {
                        return refuse(
                            "incorrect_client_credentials",
                            "The client_id and/or client_secret passed are incorrect.",
                        );
                    }
                    if query_param(&form, "code").as_deref() != Some("code-1") {
                        return refuse(
                            "bad_verification_code",
                            "The code passed is incorrect or expired.",
                        );
                    }
                    let verifier = query_param(&form, "code_verifier").unwrap_or_default();
                    let ok = d.challenge.as_deref()
                        == Some(b64url(&Sha256::digest(verifier.as_bytes())).as_str());
                    d.pkce = Some(ok);
                    if !ok {
                        return refuse("invalid_grant", "PKCE verification failed");
                    }
                    let t = issue(&mut d);
                    json_response(
                        200,
                        json!({ "access_token": t, "token_type": "bearer", "scope": "read:user" }),
                    )
                }
                ("GET", "/user") if known => json_response(
                    200,
                    json!({ "login": "octocat", "id": 583231, "type": "User" }),
                ),
                ("GET", "/user/emails") if known => json_response(
                    200,
                    json!([
                        { "email": "octo@old.example", "primary": false, "verified": true, "visibility": null },
                        { "email": "octocat@github.com", "primary": true, "verified": true, "visibility": "public" },
                    ]),
                ),
                ("GET", "/user/orgs") if known => {
                    json_response(200, json!([{ "login": "acme", "id": 1 }]))
                }
                ("GET", "/user/teams") if known => json_response(
                    200,
                    json!([{ "slug": "qa", "name": "QA", "organization": { "login": "acme" } }]),
                ),
                ("GET", "/me") if known => json_response(
                    200,
                    json!({ "account_id": "5b10a2844c20165700ede21g", "email": "ana@acme.example", "name": "Ana", "email_verified": true }),
                ),
                ("GET", "/user" | "/user/emails" | "/user/orgs" | "/user/teams" | "/me") => {
                    gh_error(401, "Bad credentials")
                }
                ("POST", p) if p == format!("/applications/{client_id}/token") => {
                    let expected = format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD
                            .encode(format!("{client_id}:{secret}"))
                    );
                    if r.header("authorization").as_deref() != Some(expected.as_str()) {
                        return gh_error(401, "Bad credentials");
                    }
                    let t = r.json()["access_token"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    if d.ours.contains(&t) {
                        json_response(
                            200,
                            json!({ "id": 1, "token": t, "app": { "client_id": client_id }, "user": { "login": "octocat" } }),
                        )
                    } else {
                        gh_error(404, "Not Found")
                    }
                }
                _ => gh_error(404, "Not Found"),
            }
        }))?;
        if let Ok(mut b) = base.lock() {
            *b = fake.url.clone();
        }
        Ok(FakeOAuth { fake, data })
    }

    pub fn url(&self) -> &str {
        &self.fake.url
    }

    /// The person approves the device code in their browser.
    pub fn approve_device(&self) {
        if let Ok(mut d) = self.data.lock() {
            d.device_approved = true;
        }
    }

    /// A token GitHub issued to some other OAuth app for the same person.
    pub fn foreign_token(&self) -> String {
        let t = "gho_from_another_app".to_string();
        if let Ok(mut d) = self.data.lock() {
            d.foreign.insert(t.clone());
        }
        t
    }

    /// Whether the last code exchange carried the right PKCE verifier.
    pub fn pkce_verified(&self) -> Option<bool> {
        self.data.lock().ok().and_then(|d| d.pkce)
    }
}
