//! Single sign-on with the company's OpenID Connect provider.
//!
//! - The panel signs people in with the authorization code flow, PKCE (S256)
//!   and a nonce: `/__stamp/login/{provider}` sends the browser to the
//!   provider, `/__stamp/callback` takes the code back, exchanges it, and
//!   verifies the ID token (signature against the provider's published keys,
//!   issuer, audience, expiry, issue time and nonce) with the `openidconnect`
//!   crate. No JWT is checked by hand here.
//! - The CLI runs the device authorization grant against the provider itself
//!   (public client `cli_client_id`) and trades the ID token it gets for a
//!   short-lived proxy token at `POST /__stamp/sign-in/{provider}/token`.
//! - Roles come from the ID token's claims (`group:`, `domain:`, `email:`
//!   and `sub:` rules per role). A person no rule matches gets no session.
//!
//! The provider is discovered lazily (the data path never waits on it) and
//! its metadata and keys are kept for ten minutes, or refetched at once when
//! a token names a key the cached set does not have.

pub mod oauth;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Request, Response};
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreClaimName, CoreClaimType,
    CoreClientAuthMethod, CoreErrorResponseType, CoreGenderClaim, CoreGrantType, CoreJsonWebKey,
    CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm, CoreJwsSigningAlgorithm,
    CoreResponseMode, CoreResponseType, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreSubjectIdentifierType, CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AdditionalProviderMetadata, AuthorizationCode, Client, ClientId,
    ClientSecret, CsrfToken, EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet,
    IdToken, IdTokenClaims, IdTokenFields, IdTokenVerifier, IssuerUrl, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, ProviderMetadata, RedirectUrl, RequestTokenError, Scope,
    StandardErrorResponse, StandardTokenResponse,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use stamp_model::roles::Role;

use crate::auth::{Principal, Sessions, Via};
use crate::Body;

/// How far the provider's clock may be from ours.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);
/// How long discovered metadata and keys are trusted before refetching.
const METADATA_TTL: Duration = Duration::from_secs(600);
/// How long a failed discovery is not retried.
const DISCOVERY_BACKOFF: Duration = Duration::from_secs(10);
/// The oldest ID token the CLI may trade (a device flow's is seconds old;
/// an old one is more likely replayed).
const CLI_TOKEN_MAX_AGE: Duration = Duration::from_secs(600);
/// How long a browser may take at the provider.
const LOGIN_TTL: Duration = Duration::from_secs(600);
/// How long a proxy token handed to the CLI lasts (it refreshes).
pub const CLI_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// The cookie carrying a login in flight (state, nonce, PKCE verifier).
pub const LOGIN_COOKIE: &str = "stamp_login";

/// What a role rule matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// A value of the groups claim.
    Group(String),
    /// A verified email in this domain.
    Domain(String),
    /// This verified email.
    Email(String),
    /// This subject identifier.
    Subject(String),
}

impl Rule {
    /// Parses `group:qa`, `domain:example.com`, `email:a@b.c`, `sub:123`.
    pub fn parse(s: &str) -> Result<Rule, String> {
        let (kind, value) = s.split_once(':').ok_or_else(|| {
            format!("`{s}` is not `group:`, `domain:`, `email:` or `sub:` + a value")
        })?;
        let value = value.trim();
        if value.is_empty() {
            return Err(format!("`{s}` has no value after `{kind}:`"));
        }
        Ok(match kind {
            "group" => Rule::Group(value.to_string()),
            "domain" => Rule::Domain(value.trim_start_matches('@').to_ascii_lowercase()),
            "email" => Rule::Email(value.to_ascii_lowercase()),
            "sub" => Rule::Subject(value.to_string()),
            other => {
                return Err(format!(
                    "`{other}:` is not a rule kind (group, domain, email or sub)"
                ))
            }
        })
    }
}

/// What protocol a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// OpenID Connect, by discovery at the issuer.
    Oidc,
    /// A GitHub OAuth app (github.com, or Enterprise Server at `issuer`).
    GitHub,
    /// Atlassian's OAuth 2.0 (3LO).
    Atlassian,
}

/// One configured identity provider.
#[derive(Clone, PartialEq, Eq)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    /// GitHub's or Atlassian's REST API base, when not the default.
    pub api_url: Option<String>,
    /// In URLs and sessions: `[a-z0-9-]`, 1–32.
    pub name: String,
    /// On the sign-in button.
    pub label: String,
    pub issuer: String,
    pub client_id: String,
    /// The environment variable holding the client secret (none for a
    /// public client).
    pub client_secret_env: Option<String>,
    /// The public client the CLI's device flow uses; `None`: no CLI sign-in.
    pub cli_client_id: Option<String>,
    pub scopes: Vec<String>,
    /// The claim listing the person's groups.
    pub groups_claim: String,
    /// Rules per role, tried admin, then qa, then dev.
    pub roles: Vec<(Role, Vec<Rule>)>,
}

impl ProviderConfig {
    /// `name~digest`: the digest covers what decides who gets which role.
    pub fn session_key(&self) -> String {
        use sha2::Digest as _;
        let rules = format!(
            "{:?}|{}|{}|{}|{:?}",
            self.kind, self.issuer, self.client_id, self.groups_claim, self.roles
        );
        let digest = sha2::Sha256::digest(rules.as_bytes());
        format!("{}~{}", self.name, &hex::encode(digest)[..8])
    }
}

/// The provider's name in a session key (`name~digest`).
pub fn provider_of(key: &str) -> &str {
    key.split('~').next().unwrap_or(key)
}

impl std::fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("name", &self.name)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .finish()
    }
}

/// `[[sign_in]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileProvider {
    pub name: String,
    pub label: Option<String>,
    /// `oidc` (default), `github` or `atlassian`.
    pub kind: Option<String>,
    /// The OpenID issuer; for GitHub the web address (default
    /// https://github.com), for Atlassian https://auth.atlassian.com.
    pub issuer: Option<String>,
    pub api_url: Option<String>,
    pub client_id: String,
    pub client_secret_env: Option<String>,
    pub cli_client_id: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub groups_claim: Option<String>,
    #[serde(default)]
    pub roles: FileRoles,
}

/// `[sign_in.roles]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRoles {
    #[serde(default)]
    pub admin: Vec<String>,
    #[serde(default)]
    pub qa: Vec<String>,
    #[serde(default)]
    pub dev: Vec<String>,
}

/// Validates `[[sign_in]]` entries; problems are `(key, message)`.
pub fn build_providers(
    file: Vec<FileProvider>,
    env_is_set: &dyn Fn(&str) -> bool,
    problems: &mut Vec<(String, String)>,
) -> Vec<ProviderConfig> {
    let mut out: Vec<ProviderConfig> = Vec::new();
    for (i, f) in file.into_iter().enumerate() {
        let key = |k: &str| format!("sign_in[{i}].{k}");
        let mut bad = |k: &str, m: String| problems.push((key(k), m));
        let name_ok = !f.name.is_empty()
            && f.name.len() <= 32
            && f.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !name_ok {
            bad("name", "must be 1-32 of a-z, 0-9 and -".into());
            continue;
        }
        if out.iter().any(|p| p.name == f.name) {
            bad("name", format!("`{}` is used twice", f.name));
            continue;
        }
        let kind = match f.kind.as_deref() {
            None | Some("oidc") => ProviderKind::Oidc,
            Some("github") => ProviderKind::GitHub,
            Some("atlassian") => ProviderKind::Atlassian,
            Some(other) => {
                bad(
                    "kind",
                    format!("`{other}` is not `oidc`, `github` or `atlassian`"),
                );
                continue;
            }
        };
        let issuer = match (kind, f.issuer) {
            (_, Some(i)) => i,
            (ProviderKind::GitHub, None) => "https://github.com".into(),
            (ProviderKind::Atlassian, None) => "https://auth.atlassian.com".into(),
            (ProviderKind::Oidc, None) => {
                bad(
                    "issuer",
                    "is required: the provider's issuer URL (discovery)".into(),
                );
                continue;
            }
        };
        let web_url = |u: &str| match url::Url::parse(u) {
            Ok(u) => {
                (u.scheme() == "https"
                    || (u.scheme() == "http"
                        && matches!(u.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"))))
                    && u.query().is_none()
                    && u.fragment().is_none()
            }
            Err(_) => false,
        };
        if !web_url(&issuer) {
            bad(
                "issuer",
                format!("`{issuer}` is not an https URL (http only on loopback, no query)"),
            );
            continue;
        }
        if let Some(api) = f.api_url.as_deref().filter(|a| !web_url(a)) {
            bad(
                "api_url",
                format!("`{api}` is not an https URL (http only on loopback, no query)"),
            );
            continue;
        }
        if kind != ProviderKind::Oidc && f.client_secret_env.is_none() {
            bad(
                "client_secret_env",
                "is required for github and atlassian (the app's client secret)".into(),
            );
            continue;
        }
        if f.client_id.trim().is_empty() {
            bad("client_id", "must not be empty".into());
            continue;
        }
        if let Some(env) = &f.client_secret_env {
            if !env_is_set(env) {
                bad(
                    "client_secret_env",
                    format!("the environment variable `{env}` is not set"),
                );
                continue;
            }
        }
        let default_scopes: &[&str] = match kind {
            ProviderKind::Oidc => &["openid", "email", "profile"],
            ProviderKind::GitHub => &["read:user", "user:email", "read:org"],
            ProviderKind::Atlassian => &["read:me"],
        };
        let scopes = f
            .scopes
            .unwrap_or_else(|| default_scopes.iter().map(|s| s.to_string()).collect());
        if (kind == ProviderKind::Oidc && !scopes.iter().any(|s| s == "openid"))
            || scopes.iter().any(|s| s.contains(' '))
        {
            bad(
                "scopes",
                "must include \"openid\" and name one scope per string".into(),
            );
            continue;
        }
        let mut roles = Vec::new();
        let mut rules_ok = true;
        for (role, rules) in [
            (Role::Admin, &f.roles.admin),
            (Role::Qa, &f.roles.qa),
            (Role::Dev, &f.roles.dev),
        ] {
            let mut parsed = Vec::new();
            for r in rules {
                match Rule::parse(r) {
                    Ok(rule) => parsed.push(rule),
                    Err(m) => {
                        bad(&format!("roles.{role}"), m);
                        rules_ok = false;
                    }
                }
            }
            roles.push((role, parsed));
        }
        if !rules_ok {
            continue;
        }
        if roles.iter().all(|(_, r)| r.is_empty()) {
            bad(
                "roles",
                "give at least one rule (e.g. qa = [\"group:qa\"]): nobody could sign in".into(),
            );
            continue;
        }
        if kind == ProviderKind::Atlassian && f.cli_client_id.is_some() {
            bad(
                "cli_client_id",
                "Atlassian has no device flow: the CLI signs in with a token there".into(),
            );
            continue;
        }
        out.push(ProviderConfig {
            kind,
            api_url: f.api_url.map(|a| a.trim_end_matches('/').to_string()),
            label: f.label.unwrap_or_else(|| f.name.clone()),
            name: f.name,
            issuer: issuer.trim_end_matches('/').to_string(),
            client_id: f.client_id,
            client_secret_env: f.client_secret_env,
            cli_client_id: f.cli_client_id.filter(|c| !c.trim().is_empty()),
            scopes,
            groups_claim: f.groups_claim.unwrap_or_else(|| "groups".into()),
            roles,
        });
    }
    out
}

// ---------------------------------------------------------------------------
// openidconnect types with the claims and metadata we read.

/// Every claim beyond the standard ones, so the configured groups claim can
/// be read whatever it is called.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OtherClaims {
    #[serde(flatten)]
    pub claims: serde_json::Map<String, Value>,
}
impl AdditionalClaims for OtherClaims {}

/// Provider metadata beyond what `openidconnect` models: the device and
/// logout endpoints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExtraMetadata {
    #[serde(default)]
    pub device_authorization_endpoint: Option<String>,
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
}
impl AdditionalProviderMetadata for ExtraMetadata {}

type Metadata = ProviderMetadata<
    ExtraMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;
type Claims = IdTokenClaims<OtherClaims, CoreGenderClaim>;
type Token = IdToken<
    OtherClaims,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type TokenResponse = StandardTokenResponse<
    IdTokenFields<
        OtherClaims,
        EmptyExtraTokenFields,
        CoreGenderClaim,
        CoreJweContentEncryptionAlgorithm,
        CoreJwsSigningAlgorithm,
    >,
    CoreTokenType,
>;
type OidcClient = Client<
    OtherClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    TokenResponse,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Why a sign-in failed: what the person reads, and the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub status: u16,
    pub message: String,
}

impl Failure {
    fn new(status: u16, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
        }
    }
}

/// A provider at run time: its configuration, secret and cached metadata.
struct Provider {
    cfg: ProviderConfig,
    secret: Option<String>,
    cache: tokio::sync::Mutex<Option<(Arc<Metadata>, Instant)>>,
    /// When discovery last failed: for a while, callers are told at once
    /// instead of queueing behind another attempt.
    failed: std::sync::Mutex<Option<Instant>>,
    /// [`ProviderConfig::session_key`].
    key: String,
}

/// The sign-in side of the control plane.
pub struct SignIn {
    providers: Vec<Provider>,
    http: reqwest::Client,
    /// `public_url` or the listener: where the provider sends browsers back.
    base: String,
    /// The app's own origin, when the panel has its own host: sign-ins may
    /// return to its pages.
    app: Option<String>,
    secure: bool,
}

impl std::fmt::Debug for SignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignIn")
            .field(
                "providers",
                &self
                    .providers
                    .iter()
                    .map(|p| &p.cfg.name)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// What a login in flight keeps in its cookie (signed by the sessions key).
#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    provider: String,
    state: String,
    nonce: String,
    verifier: String,
    next: String,
    exp: u64,
}

use stamp_model::share::now_secs;

/// Where to go back to after signing in: a same-origin path, or (when the
/// panel has its own host) a page of the app at `app`; anything else is the
/// panel, so the login cannot be turned into an open redirect.
pub fn safe_next(next: Option<&str>, app: Option<&str>) -> String {
    let path_ok = |n: &str| {
        n.starts_with('/')
            && !n.starts_with("//")
            && !n.starts_with("/\\")
            && n.len() <= 2048
            && !n.bytes().any(|b| b.is_ascii_control() || b == b'\\')
    };
    match (next, app) {
        (Some(n), _) if path_ok(n) => n.to_string(),
        (Some(n), Some(app)) if n.strip_prefix(app).is_some_and(path_ok) => n.to_string(),
        _ => "/__stamp/".to_string(),
    }
}

impl SignIn {
    /// Providers with their secrets read from the environment.
    pub fn new(
        providers: &[ProviderConfig],
        base: &str,
        app: Option<&str>,
        secure: bool,
    ) -> SignIn {
        let providers = providers
            .iter()
            .map(|cfg| Provider {
                secret: cfg
                    .client_secret_env
                    .as_ref()
                    .and_then(|e| std::env::var(e).ok()),
                cfg: cfg.clone(),
                cache: tokio::sync::Mutex::new(None),
                failed: std::sync::Mutex::new(None),
                key: cfg.session_key(),
            })
            .collect();
        SignIn {
            providers,
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(3))
                .timeout(Duration::from_secs(10))
                // Following redirects would let a provider's answer send us elsewhere.
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .build()
                .unwrap_or_default(),
            base: base.to_string(),
            app: app.map(str::to_string),
            secure,
        }
    }

    /// [`safe_next`] with this proxy's app origin.
    pub fn next(&self, next: Option<&str>) -> String {
        safe_next(next, self.app.as_deref())
    }

    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }

    /// Provider names, for checking sessions.
    pub fn names(&self) -> Vec<&str> {
        self.providers.iter().map(|p| p.cfg.name.as_str()).collect()
    }

    /// What sessions of each provider carry: its name and a digest of its
    /// issuer, client and role rules, so changing a provider's rules (or
    /// removing it) ends the sessions and CLI tokens it gave.
    pub fn session_keys(&self) -> Vec<&str> {
        self.providers.iter().map(|p| p.key.as_str()).collect()
    }

    /// Name and label of each provider, for the panel's sign-in buttons.
    pub fn buttons(&self) -> Value {
        Value::Array(
            self.providers
                .iter()
                .map(|p| {
                    json!({
                        "name": p.cfg.name,
                        "label": p.cfg.label,
                        "login": format!("/__stamp/login/{}", p.cfg.name),
                    })
                })
                .collect(),
        )
    }

    fn provider(&self, name: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.cfg.name == name)
    }

    fn redirect_uri(&self) -> String {
        format!("{}/__stamp/callback", self.base)
    }

    async fn metadata(&self, p: &Provider, fresh: bool) -> Result<Arc<Metadata>, Failure> {
        let unreachable = || {
            Failure::new(
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
            .map_err(|e| Failure::new(500, format!("issuer: {e}")))?;
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

    fn client(&self, p: &Provider, m: &Metadata) -> Result<OidcClient, Failure> {
        let redirect = RedirectUrl::new(self.redirect_uri())
            .map_err(|e| Failure::new(500, format!("redirect URL: {e}")))?;
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
            return page(
                404,
                "Sign-in",
                &format!("There is no identity provider called “{name}” here."),
                None,
            );
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
                Err(f) => failure_page(&f, Some(name)),
            };
        }
        let m = match self.metadata(p, false).await {
            Ok(m) => m,
            Err(f) => return failure_page(&f, Some(name)),
        };
        let client = match self.client(p, &m) {
            Ok(c) => c,
            Err(f) => return failure_page(&f, Some(name)),
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
    ) -> Result<(Principal, String), Failure> {
        let query: Vec<(String, String)> =
            url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        let get = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let cookie = crate::auth::cookie_value(
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
                Failure::new(
                    400,
                    "this sign-in was not started here, or took longer than 10 minutes: start again",
                )
            })?;
        if pending.exp <= now_secs() {
            return Err(Failure::new(
                400,
                "the sign-in took longer than 10 minutes: start again",
            ));
        }
        let state_ok = get("state")
            .is_some_and(|s| stamp_model::share::same(s.as_bytes(), pending.state.as_bytes()));
        if !state_ok {
            return Err(Failure::new(
                400,
                "the provider's answer does not belong to this sign-in (state mismatch): start again",
            ));
        }
        let p = self
            .provider(&pending.provider)
            .ok_or_else(|| Failure::new(400, "that identity provider is no longer configured"))?;
        if let Some(err) = get("error") {
            let detail = get("error_description").unwrap_or("");
            let detail: String = detail
                .chars()
                .filter(|c| !c.is_control())
                .take(300)
                .collect();
            return Err(Failure::new(
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
                return Err(Failure::new(
                    401,
                    format!("the answer came from issuer `{iss}`, not {}", p.cfg.issuer),
                ));
            }
        }
        let code = get("code")
            .filter(|c| !c.is_empty() && c.len() <= 4096)
            .ok_or_else(|| Failure::new(400, "the provider sent no authorization code"))?;
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
            .map_err(|e| Failure::new(502, format!("the provider has no token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier.clone()));
        let tokens = exchange
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                RequestTokenError::ServerResponse(r) => Failure::new(
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
                RequestTokenError::Request(e) => Failure::new(
                    502,
                    format!("the identity provider could not be reached: {}", chain(&e)),
                ),
                other => Failure::new(
                    502,
                    format!("the provider's token answer is unusable: {}", chain(&other)),
                ),
            })?;
        let id_token = tokens.extra_fields().id_token().ok_or_else(|| {
            Failure::new(502, "the provider sent no ID token (is `openid` a scope?)")
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
    ) -> Result<Claims, Failure> {
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
                Err(e) => return Err(Failure::new(401, format!("the ID token was refused: {e}"))),
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
                    Err(f) => entry["error"] = Value::String(f.message),
                }
            }
            out.push(entry);
        }
        json!({ "providers": out })
    }

    /// `POST /__stamp/sign-in/{provider}/token` `{"id_token": "…"}`: an ID
    /// token the CLI got for `cli_client_id`, for a proxy token.
    pub async fn cli_token(&self, name: &str, body: &[u8]) -> Result<Principal, Failure> {
        let p = self
            .provider(name)
            .ok_or_else(|| Failure::new(404, format!("no identity provider called `{name}`")))?;
        #[derive(Deserialize)]
        struct Body {
            #[serde(default)]
            id_token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
        }
        let b: Body = serde_json::from_slice(body)
            .map_err(|_| Failure::new(400, "send {\"id_token\": \"…\"}"))?;
        if p.cfg.kind == ProviderKind::GitHub {
            let token = b
                .access_token
                .filter(|t| !t.is_empty() && t.len() <= 4096)
                .ok_or_else(|| {
                    Failure::new(
                        400,
                        "send {\"access_token\": \"…\"} from GitHub's device flow",
                    )
                })?;
            oauth::check_app_token(&p.cfg, p.secret.as_deref(), &token, &self.http).await?;
            let who = oauth::identity(&p.cfg, &token, &self.http).await?;
            return principal_for(&p.cfg, &who.subject, who.email, &who.groups);
        }
        let (Some(audience), ProviderKind::Oidc) = (&p.cfg.cli_client_id, p.cfg.kind) else {
            return Err(Failure::new(
                400,
                format!(
                    "{} is not set up for the CLI (sign_in.cli_client_id)",
                    p.cfg.label
                ),
            ));
        };
        let id_token = b
            .id_token
            .ok_or_else(|| Failure::new(400, "send {\"id_token\": \"…\"}"))?;
        if id_token.len() > 16 * 1024 {
            return Err(Failure::new(400, "the ID token is too large"));
        }
        let token: Token = id_token
            .parse()
            .map_err(|e| Failure::new(401, format!("the ID token is malformed: {e}")))?;
        let claims = self.verify(p, &token, audience, None, false).await?;
        let age = chrono::Utc::now() - claims.issue_time();
        if age > chrono::TimeDelta::seconds(CLI_TOKEN_MAX_AGE.as_secs() as i64) {
            return Err(Failure::new(
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

/// Who the verified claims are, and their role by the provider's rules.
pub fn map_principal(cfg: &ProviderConfig, claims: &Claims) -> Result<Principal, Failure> {
    let email = claims
        .email()
        .map(|e| e.as_str().to_ascii_lowercase())
        // Only an address the provider says it verified: some providers
        // leave the claim out, or let people type any address.
        .filter(|_| claims.email_verified() == Some(true));
    let groups: Vec<String> = match claims.additional_claims().claims.get(&cfg.groups_claim) {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|g| g.as_str().map(String::from))
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    };
    principal_for(cfg, claims.subject().as_str(), email, &groups)
}

/// The principal for a verified identity, with its role by the rules.
pub fn principal_for(
    cfg: &ProviderConfig,
    subject: &str,
    email: Option<String>,
    groups: &[String],
) -> Result<Principal, Failure> {
    let role = role_for(cfg, subject, email.as_deref(), groups);
    let name = match &email {
        Some(e) => e.clone(),
        None => format!("{subject}@{}", cfg.name),
    };
    let name: String = name.chars().filter(|c| !c.is_control()).take(100).collect();
    match role {
        Some(role) => Ok(Principal {
            name,
            role,
            via: Via::SignIn(cfg.session_key()),
        }),
        None => Err(Failure::new(
            403,
            format!(
                "{name} signed in with {}, but no role on this proxy matches them \
                 (ask an admin to add a group, domain or email rule)",
                cfg.label
            ),
        )),
    }
}

/// The first role (admin, qa, dev) one of whose rules matches.
pub fn role_for(
    cfg: &ProviderConfig,
    subject: &str,
    email: Option<&str>,
    groups: &[String],
) -> Option<Role> {
    cfg.roles.iter().find_map(|(role, rules)| {
        rules
            .iter()
            .any(|r| match r {
                Rule::Group(g) => groups.iter().any(|x| x == g),
                Rule::Email(e) => email == Some(e.as_str()),
                Rule::Domain(d) => email
                    .and_then(|e| e.rsplit_once('@'))
                    .is_some_and(|(_, dom)| dom == d),
                Rule::Subject(s) => subject == s,
            })
            .then_some(*role)
    })
}

fn redirect(location: &str) -> Response<Body> {
    let mut resp = Response::new(Body::Full(Bytes::new()));
    *resp.status_mut() = http::StatusCode::FOUND;
    if let Ok(v) = header::HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    resp.headers_mut().insert(
        "referrer-policy",
        header::HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// A redirect after a successful sign-in.
pub fn signed_in_redirect(next: &str, cookies: &[String]) -> Response<Body> {
    let mut resp = redirect(next);
    for c in cookies {
        set_cookie(&mut resp, c);
    }
    resp
}

fn set_cookie(resp: &mut Response<Body>, c: &str) {
    if let Ok(v) = header::HeaderValue::from_str(c) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A small HTML page (a sign-in failure is read by a person in a browser).
pub fn page(status: u16, title: &str, message: &str, retry: Option<&str>) -> Response<Body> {
    let retry = retry
        .map(|r| format!("<p><a href=\"/__stamp/login/{}\">Try again</a> · <a href=\"/__stamp/\">Panel</a></p>", escape(r)))
        .unwrap_or_else(|| "<p><a href=\"/__stamp/\">Panel</a></p>".into());
    let html = format!(
        "<!doctype html><meta charset=utf-8><meta name=viewport content=\"width=device-width\">\
         <title>{t} · ticket-stamp</title><h1>{t}</h1><p id=message>{m}</p>{retry}",
        t = escape(title),
        m = escape(message)
    );
    let mut resp = Response::new(Body::Full(Bytes::from(html)));
    *resp.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_REQUEST);
    let hs = resp.headers_mut();
    hs.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    hs.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    hs.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    );
    resp
}

/// The page for a failed sign-in; the login cookie is cleared.
pub fn failure_page(f: &Failure, provider: Option<&str>) -> Response<Body> {
    let mut resp = page(f.status, "Sign-in failed", &f.message, provider);
    set_cookie(
        &mut resp,
        &format!("{LOGIN_COOKIE}=; Path=/__stamp/; Max-Age=0; HttpOnly; SameSite=Lax"),
    );
    resp
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cfg() -> ProviderConfig {
        let mut problems = Vec::new();
        let out = build_providers(
            vec![FileProvider {
                name: "corp".into(),
                label: None,
                kind: None,
                issuer: Some("https://id.example.com/".into()),
                api_url: None,
                client_id: "c".into(),
                client_secret_env: None,
                cli_client_id: None,
                scopes: None,
                groups_claim: None,
                roles: FileRoles {
                    admin: vec!["email:boss@example.com".into()],
                    qa: vec!["group:qa".into()],
                    dev: vec!["domain:example.com".into(), "sub:robot-7".into()],
                },
            }],
            &|_| true,
            &mut problems,
        );
        assert!(problems.is_empty(), "{problems:?}");
        out.into_iter().next().unwrap()
    }

    #[test]
    fn roles_come_from_groups_emails_domains_and_subjects_highest_first() {
        let c = cfg();
        assert_eq!(c.issuer, "https://id.example.com");
        let g = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            role_for(&c, "1", Some("boss@example.com"), &g(&["qa"])),
            Some(Role::Admin)
        );
        assert_eq!(
            role_for(&c, "1", Some("q@example.com"), &g(&["qa"])),
            Some(Role::Qa)
        );
        assert_eq!(
            role_for(&c, "1", Some("d@example.com"), &[]),
            Some(Role::Dev)
        );
        assert_eq!(role_for(&c, "robot-7", None, &[]), Some(Role::Dev));
        assert_eq!(role_for(&c, "1", Some("d@example.com.evil.io"), &[]), None);
        assert_eq!(role_for(&c, "1", Some("d@evil.io"), &g(&["QA"])), None);
        assert_eq!(role_for(&c, "1", None, &[]), None);
    }

    #[test]
    fn provider_entries_are_validated() {
        let mut problems = Vec::new();
        let mk = |name: &str, issuer: &str, roles: FileRoles| FileProvider {
            name: name.into(),
            label: None,
            kind: None,
            issuer: Some(issuer.into()),
            api_url: None,
            client_id: "c".into(),
            client_secret_env: Some(format!("{name}_SECRET")),
            cli_client_id: None,
            scopes: None,
            groups_claim: None,
            roles,
        };
        let qa = || FileRoles {
            qa: vec!["group:qa".into()],
            ..FileRoles::default()
        };
        let out = build_providers(
            vec![
                mk("Bad Name", "https://a", qa()),
                mk("a", "http://id.example.com", qa()),
                mk("b", "https://id.example.com", qa()),
                mk("c", "https://id.example.com", FileRoles::default()),
                mk(
                    "d",
                    "https://id.example.com",
                    FileRoles {
                        dev: vec!["team:x".into()],
                        ..FileRoles::default()
                    },
                ),
            ],
            &|v| v != "b_SECRET",
            &mut problems,
        );
        assert!(out.is_empty());
        let all = format!("{problems:?}");
        for needle in [
            "sign_in[0].name",
            "sign_in[1].issuer",
            "sign_in[2].client_secret_env",
            "sign_in[3]",
            "sign_in[4].roles.dev",
        ] {
            assert!(all.contains(needle), "{needle} in {all}");
        }
    }

    #[test]
    fn sessions_are_keyed_by_the_rules_that_gave_them() {
        let a = cfg();
        let mut b = cfg();
        assert_eq!(a.session_key(), b.session_key());
        assert!(a.session_key().starts_with("corp~"));
        assert_eq!(provider_of(&a.session_key()), "corp");
        b.roles[0].1.push(Rule::Group("everyone".into()));
        assert_ne!(
            a.session_key(),
            b.session_key(),
            "a new admin rule ends old sessions"
        );
    }

    #[test]
    fn only_same_origin_paths_are_returned_to() {
        assert_eq!(safe_next(Some("/app?dev=TKT-1"), None), "/app?dev=TKT-1");
        let app = Some("https://shop.example");
        assert_eq!(
            safe_next(Some("https://shop.example/?qa=TKT-1"), app),
            "https://shop.example/?qa=TKT-1"
        );
        for bad in [
            "https://shop.example.evil/",
            "https://shop.example//evil",
            "https://shop.example",
        ] {
            assert_eq!(safe_next(Some(bad), app), "/__stamp/", "{bad}");
        }
        for bad in [
            "//evil.io",
            "/\\evil.io",
            "https://evil.io",
            "javascript:x",
            "/a\nb",
        ] {
            assert_eq!(safe_next(Some(bad), None), "/__stamp/", "{bad}");
        }
        assert_eq!(safe_next(None, None), "/__stamp/");
    }
}
