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

mod flow;
pub mod oauth;
mod oidc;
mod pages;
mod roles;

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

use crate::identity::{provider_of, Principal, ProviderConfig, ProviderKind, Rule, Via};
use crate::web::auth::Sessions;
use crate::web::error::WebError;
use crate::Body;
use oidc::*;
pub use pages::{failure_page, signed_in_redirect};
use pages::{redirect, set_cookie};
pub use roles::{map_principal, principal_for};

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
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::identity::{build_providers, FileProvider, FileRoles};
    use roles::role_for;

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
