//! `[[sign_in]]`: the identity providers people sign in with, as
//! configured and validated (the flows themselves are the HTTP layer's).

use serde::Deserialize;
use stamp_model::roles::Role;

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
