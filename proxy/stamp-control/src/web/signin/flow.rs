//! The sign-in flows: the panel's authorization code flow with PKCE, the
//! CLI's token exchange, discovery and sign-out.

use super::*;

impl SignIn {
    fn provider(&self, name: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.cfg.name == name)
    }

    fn redirect_uri(&self) -> String {
        format!("{}/__stamp/callback", self.base)
    }

    async fn metadata(&self, p: &Provider, fresh: bool) -> Result<Arc<Metadata>, WebError> {
        let unreachable = || {
            WebError::sign_in(
                502,
                format!(
                    "the identity provider {} at {} could not be reached or sent unusable \
                     metadata; try again later",
                    p.cfg.label, p.cfg.issuer
                ),
            )
        };
        let recently_failed = p
            .failed
            .lock()
            .ok()
            .and_then(|f| *f)
            .is_some_and(|at| at.elapsed() < DISCOVERY_BACKOFF);
        let mut cache = p.cache.lock().await;
        if recently_failed && cache.is_none() {
            return Err(unreachable());
        }
        if let Some((m, at)) = cache.as_ref() {
            // A refetch for an unknown key at most every 30 s: forged tokens
            // must not turn into a stream of requests to the provider.
            let age = at.elapsed();
            if (!fresh && age < METADATA_TTL) || (fresh && age < Duration::from_secs(30)) {
                return Ok(m.clone());
            }
        }
        let issuer = IssuerUrl::new(p.cfg.issuer.clone())
            .map_err(|e| WebError::sign_in(500, format!("issuer: {e}")))?;
        match Metadata::discover_async(issuer, &self.http).await {
            Ok(m) => {
                let m = Arc::new(m);
                *cache = Some((m.clone(), Instant::now()));
                Ok(m)
            }
            Err(e) => {
                log::warn!(
                    "sign-in: discovery of {} ({}) failed: {}",
                    p.cfg.name,
                    p.cfg.issuer,
                    chain(&e)
                );
                if let Ok(mut f) = p.failed.lock() {
                    *f = Some(Instant::now());
                }
                // Keys that worked a moment ago still verify while the
                // provider's discovery is down.
                if let Some((m, _)) = cache.as_ref() {
                    return Ok(m.clone());
                }
                Err(unreachable())
            }
        }
    }

    fn client(&self, p: &Provider, m: &Metadata) -> Result<OidcClient, WebError> {
        let redirect = RedirectUrl::new(self.redirect_uri())
            .map_err(|e| WebError::sign_in(500, format!("redirect URL: {e}")))?;
        Ok(OidcClient::from_provider_metadata(
            m.clone(),
            ClientId::new(p.cfg.client_id.clone()),
            p.secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(redirect))
    }

    /// `GET /__stamp/login/{provider}`: off to the provider, with state,
    /// nonce and a PKCE challenge; the rest waits in a signed cookie.
    pub async fn start(
        &self,
        name: &str,
        next: Option<&str>,
        sessions: &Sessions,
    ) -> Response<Body> {
        let Some(p) = self.provider(name) else {
            return WebError::new(
                404,
                stamp_model::wire::ErrorCode::NotFound,
                format!("There is no identity provider called “{name}” here."),
            )
            .for_a_person("Sign-in", None)
            .response();
        };
        if p.cfg.kind != ProviderKind::Oidc {
            return match oauth::authorize(&p.cfg, p.secret.as_deref(), &self.redirect_uri()) {
                Ok((url, state, verifier)) => {
                    let pending = Pending {
                        provider: p.cfg.name.clone(),
                        state,
                        nonce: String::new(),
                        verifier,
                        next: safe_next(next, self.app.as_deref()),
                        exp: now_secs() + LOGIN_TTL.as_secs(),
                    };
                    self.pending_redirect(&url, &pending, sessions)
                }
                Err(f) => failure_page(f, Some(name)),
            };
        }
        let m = match self.metadata(p, false).await {
            Ok(m) => m,
            Err(f) => return failure_page(f, Some(name)),
        };
        let client = match self.client(p, &m) {
            Ok(c) => c,
            Err(f) => return failure_page(f, Some(name)),
        };
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut req = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for s in p.cfg.scopes.iter().filter(|s| *s != "openid") {
            req = req.add_scope(Scope::new(s.clone()));
        }
        let (url, state, nonce) = req.url();
        let pending = Pending {
            provider: p.cfg.name.clone(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            verifier: verifier.secret().clone(),
            next: safe_next(next, self.app.as_deref()),
            exp: now_secs() + LOGIN_TTL.as_secs(),
        };
        self.pending_redirect(url.as_str(), &pending, sessions)
    }

    /// Off to the provider, with the login in flight sealed in a cookie.
    fn pending_redirect(
        &self,
        url: &str,
        pending: &Pending,
        sessions: &Sessions,
    ) -> Response<Body> {
        let value = sessions.seal("login", &serde_json::to_string(pending).unwrap_or_default());
        let mut resp = redirect(url);
        set_cookie(
            &mut resp,
            &format!(
                "{LOGIN_COOKIE}={value}; Path=/__stamp/; Max-Age={}; HttpOnly; SameSite=Lax{}",
                LOGIN_TTL.as_secs(),
                if self.secure { "; Secure" } else { "" }
            ),
        );
        resp
    }

    /// `GET /__stamp/callback`: the provider's answer. Verifies the state
    /// against the cookie, trades the code (with the PKCE verifier) for
    /// tokens, verifies the ID token and maps the person to a role.
    pub async fn callback(
        &self,
        req: &Request<Bytes>,
        sessions: &Sessions,
    ) -> Result<(Principal, String), WebError> {
        let query: Vec<(String, String)> =
            url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        let get = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let cookie = crate::web::auth::cookie_value(
            req.headers()
                .get_all(header::COOKIE)
                .iter()
                .map(|v| v.as_bytes()),
            LOGIN_COOKIE,
        );
        let pending: Pending = cookie
            .as_deref()
            .and_then(|c| sessions.open("login", c))
            .and_then(|s| serde_json::from_str(&s).ok())
            .ok_or_else(|| {
                WebError::sign_in(
                    400,
                    "this sign-in was not started here, or took longer than 10 minutes: start again",
                )
            })?;
        if pending.exp <= now_secs() {
            return Err(WebError::sign_in(
                400,
                "the sign-in took longer than 10 minutes: start again",
            ));
        }
        let state_ok = get("state")
            .is_some_and(|s| stamp_model::share::same(s.as_bytes(), pending.state.as_bytes()));
        if !state_ok {
            return Err(WebError::sign_in(
                400,
                "the provider's answer does not belong to this sign-in (state mismatch): start again",
            ));
        }
        let p = self.provider(&pending.provider).ok_or_else(|| {
            WebError::sign_in(400, "that identity provider is no longer configured")
        })?;
        if let Some(err) = get("error") {
            let detail = get("error_description").unwrap_or("");
            let detail: String = detail
                .chars()
                .filter(|c| !c.is_control())
                .take(300)
                .collect();
            return Err(WebError::sign_in(
                401,
                format!(
                    "{} refused the sign-in: {err}{}",
                    p.cfg.label,
                    if detail.is_empty() {
                        String::new()
                    } else {
                        format!(" ({detail})")
                    }
                ),
            ));
        }
        // RFC 9207: a provider that names itself must name the right issuer.
        if let Some(iss) = get("iss") {
            if iss.trim_end_matches('/') != p.cfg.issuer {
                return Err(WebError::sign_in(
                    401,
                    format!("the answer came from issuer `{iss}`, not {}", p.cfg.issuer),
                ));
            }
        }
        let code = get("code")
            .filter(|c| !c.is_empty() && c.len() <= 4096)
            .ok_or_else(|| WebError::sign_in(400, "the provider sent no authorization code"))?;
        if p.cfg.kind != ProviderKind::Oidc {
            let token = oauth::exchange(
                &p.cfg,
                p.secret.as_deref(),
                &self.redirect_uri(),
                code,
                &pending.verifier,
                &self.http,
            )
            .await?;
            let who = oauth::identity(&p.cfg, &token, &self.http).await?;
            let principal = principal_for(&p.cfg, &who.subject, who.email, &who.groups)?;
            return Ok((principal, pending.next));
        }
        let m = self.metadata(p, false).await?;
        let client = self.client(p, &m)?;
        let exchange = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| {
                WebError::sign_in(502, format!("the provider has no token endpoint: {e}"))
            })?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier.clone()));
        let tokens = exchange
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                RequestTokenError::ServerResponse(r) => WebError::sign_in(
                    401,
                    format!(
                        "{} refused the authorization code: {}{}",
                        p.cfg.label,
                        r.error(),
                        r.error_description()
                            .map(|d| format!(" ({d})"))
                            .unwrap_or_default()
                    ),
                ),
                RequestTokenError::Request(e) => WebError::sign_in(
                    502,
                    format!("the identity provider could not be reached: {}", chain(&e)),
                ),
                other => WebError::sign_in(
                    502,
                    format!("the provider's token answer is unusable: {}", chain(&other)),
                ),
            })?;
        let id_token = tokens.extra_fields().id_token().ok_or_else(|| {
            WebError::sign_in(502, "the provider sent no ID token (is `openid` a scope?)")
        })?;
        let nonce = Nonce::new(pending.nonce.clone());
        let claims = self
            .verify(p, id_token, &p.cfg.client_id, Some(&nonce), true)
            .await?;
        let principal = map_principal(&p.cfg, &claims)?;
        Ok((principal, pending.next))
    }

    /// Verifies an ID token for `audience`; on a signature failure the keys
    /// are refetched once (the provider may have rotated them).
    async fn verify(
        &self,
        p: &Provider,
        token: &Token,
        audience: &str,
        nonce: Option<&Nonce>,
        confidential: bool,
    ) -> Result<Claims, WebError> {
        let mut fresh = false;
        loop {
            let m = self.metadata(p, fresh).await?;
            let issuer = m.issuer().clone();
            let jwks = m.jwks().clone();
            let mut verifier = match (&p.secret, confidential) {
                (Some(secret), true) => IdTokenVerifier::new_confidential_client(
                    ClientId::new(audience.to_string()),
                    ClientSecret::new(secret.clone()),
                    issuer,
                    jwks,
                ),
                _ => IdTokenVerifier::new_public_client(
                    ClientId::new(audience.to_string()),
                    issuer,
                    jwks,
                ),
            };
            let algs = m.id_token_signing_alg_values_supported().to_vec();
            if !algs.is_empty() {
                verifier = verifier.set_allowed_algs(algs);
            }
            let skew = chrono_skew();
            verifier = verifier
                // A token expired less than the skew ago is still taken.
                .set_time_fn(move || openidconnect_now() - skew)
                .set_issue_time_verifier_fn(move |iat| {
                    if iat > openidconnect_now() + skew {
                        Err(format!(
                            "the token was issued in the future ({iat}): the provider's clock \
                             is more than {}s ahead of ours",
                            CLOCK_SKEW.as_secs()
                        ))
                    } else {
                        Ok(())
                    }
                });
            let result = match nonce {
                Some(n) => token.claims(&verifier, n).cloned(),
                None => token
                    .claims(&verifier, |_: Option<&Nonce>| Ok::<(), String>(()))
                    .cloned(),
            };
            match result {
                Ok(c) => return Ok(c),
                Err(openidconnect::ClaimsVerificationError::SignatureVerification(e)) if !fresh => {
                    log::info!(
                        "sign-in: {}: {e}; refetching the provider's keys",
                        p.cfg.name
                    );
                    fresh = true;
                }
                Err(e) => {
                    return Err(WebError::sign_in(
                        401,
                        format!("the ID token was refused: {e}"),
                    ))
                }
            }
        }
    }

    /// `GET /__stamp/sign-in`: the providers, and for the CLI the device
    /// flow's endpoints (from discovery).
    pub async fn describe(&self) -> Value {
        let mut out = Vec::new();
        for p in &self.providers {
            let mut entry = json!({
                "name": p.cfg.name,
                "label": p.cfg.label,
                "login": format!("/__stamp/login/{}", p.cfg.name),
                "issuer": p.cfg.issuer,
            });
            if p.cfg.kind == ProviderKind::GitHub {
                let e = oauth::endpoints(&p.cfg);
                entry["cli"] = json!({
                    "client_id": p.cfg.client_id,
                    "device_authorization_endpoint": e.device,
                    "token_endpoint": e.token,
                    "scopes": p.cfg.scopes,
                });
            } else if let (Some(cli), ProviderKind::Oidc) = (&p.cfg.cli_client_id, p.cfg.kind) {
                match self.metadata(p, false).await {
                    Ok(m) => {
                        entry["cli"] = json!({
                            "client_id": cli,
                            "device_authorization_endpoint": m.additional_metadata().device_authorization_endpoint,
                            "token_endpoint": m.token_endpoint().map(|t| t.as_str().to_string()),
                            "scopes": p.cfg.scopes,
                        });
                    }
                    Err(f) => entry["error"] = Value::String(f.message().to_string()),
                }
            }
            out.push(entry);
        }
        json!({ "providers": out })
    }

    /// `POST /__stamp/sign-in/{provider}/token` `{"id_token": "…"}`: an ID
    /// token the CLI got for `cli_client_id`, for a proxy token.
    pub async fn cli_token(&self, name: &str, body: &[u8]) -> Result<Principal, WebError> {
        let p = self.provider(name).ok_or_else(|| {
            WebError::sign_in(404, format!("no identity provider called `{name}`"))
        })?;
        #[derive(Deserialize)]
        struct Body {
            #[serde(default)]
            id_token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
        }
        let b: Body = serde_json::from_slice(body)
            .map_err(|_| WebError::sign_in(400, "send {\"id_token\": \"…\"}"))?;
        if p.cfg.kind == ProviderKind::GitHub {
            let token = b
                .access_token
                .filter(|t| !t.is_empty() && t.len() <= 4096)
                .ok_or_else(|| {
                    WebError::sign_in(
                        400,
                        "send {\"access_token\": \"…\"} from GitHub's device flow",
                    )
                })?;
            oauth::check_app_token(&p.cfg, p.secret.as_deref(), &token, &self.http).await?;
            let who = oauth::identity(&p.cfg, &token, &self.http).await?;
            return principal_for(&p.cfg, &who.subject, who.email, &who.groups);
        }
        let (Some(audience), ProviderKind::Oidc) = (&p.cfg.cli_client_id, p.cfg.kind) else {
            return Err(WebError::sign_in(
                400,
                format!(
                    "{} is not set up for the CLI (sign_in.cli_client_id)",
                    p.cfg.label
                ),
            ));
        };
        let id_token = b
            .id_token
            .ok_or_else(|| WebError::sign_in(400, "send {\"id_token\": \"…\"}"))?;
        if id_token.len() > 16 * 1024 {
            return Err(WebError::sign_in(400, "the ID token is too large"));
        }
        let token: Token = id_token
            .parse()
            .map_err(|e| WebError::sign_in(401, format!("the ID token is malformed: {e}")))?;
        let claims = self.verify(p, &token, audience, None, false).await?;
        let age = chrono::Utc::now() - claims.issue_time();
        if age > chrono::TimeDelta::seconds(CLI_TOKEN_MAX_AGE.as_secs() as i64) {
            return Err(WebError::sign_in(
                401,
                format!(
                    "the ID token was issued {}s ago: trade it within {}s (run `stamp login` again)",
                    age.num_seconds(),
                    CLI_TOKEN_MAX_AGE.as_secs()
                ),
            ));
        }
        map_principal(&p.cfg, &claims)
    }

    /// The provider's logout endpoint, to end the provider's session too.
    pub async fn logout_url(&self, provider: &str) -> Option<String> {
        let p = self
            .provider(provider_of(provider))
            .filter(|p| p.cfg.kind == ProviderKind::Oidc)?;
        let m = self.metadata(p, false).await.ok()?;
        let end = m.additional_metadata().end_session_endpoint.clone()?;
        let mut u = url::Url::parse(&end)
            .ok()
            .filter(|u| u.scheme() == "https" || u.scheme() == "http")?;
        u.query_pairs_mut()
            .append_pair("client_id", &p.cfg.client_id)
            .append_pair(
                "post_logout_redirect_uri",
                &format!("{}/__stamp/", self.base),
            );
        Some(u.to_string())
    }
}

fn chrono_skew() -> chrono::TimeDelta {
    chrono::TimeDelta::seconds(CLOCK_SKEW.as_secs() as i64)
}

fn openidconnect_now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
