//! The control plane's configuration: API limits, tokens, share links and
//! preview protection, the history repository, settling, garbage
//! collection, policies and hooks. The binary reads the TOML file; this
//! module owns the keys' meaning, defaults and validation.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use stamp_model::problems::Problems;
use stamp_model::roles::Role;

use crate::identity::Token;
use crate::kit::Entries;
use crate::workflow::settle::ThirdVersion;

/// `[api]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileApi {
    pub max_module_bytes: Option<u64>,
    pub max_modules_per_ticket: Option<usize>,
    pub extensions: Option<Vec<String>>,
}

/// One `[[tokens]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileToken {
    pub name: String,
    pub role: String,
    pub sha256: String,
}

/// `[preview]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePreview {
    pub protect: Option<bool>,
    pub secret: Option<String>,
    pub link_ttl: Option<String>,
    /// `share-link` (default), `sign-in` or `either`.
    pub access: Option<String>,
    /// Roles whose signed-in people may open previews (default: all).
    pub sign_in_roles: Option<Vec<String>>,
}

/// `[settle]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettle {
    pub interval: Option<String>,
    pub third_version: Option<String>,
}

/// `[gc]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileGc {
    pub enabled: Option<bool>,
    pub every: Option<String>,
    pub grace: Option<String>,
    pub closed_retention: Option<String>,
    /// How long what production stops serving stays servable ("0": never).
    pub skew_protection: Option<String>,
}

/// `[slack]` as written: acting from Slack's buttons.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSlack {
    /// The environment variable that holds the Slack app's signing secret.
    pub signing_secret_env: Option<String>,
    /// The environment variable that holds the bot token (`users.info`, to
    /// read the clicking person's verified email).
    pub token_env: Option<String>,
    pub api_url: Option<String>,
    /// Where a click's `response_url` may point (Slack's own host).
    pub response_url_prefix: Option<String>,
    /// Roles by the person's verified email (`email:`, `domain:`).
    #[serde(default)]
    pub roles: crate::identity::FileRoles,
}

/// Acting from Slack: the secrets' variables and who gets which role.
#[derive(Debug, Clone, PartialEq)]
pub struct SlackActions {
    pub signing_secret_env: String,
    pub token_env: String,
    pub api_url: String,
    pub response_url_prefix: String,
    pub roles: Vec<(Role, Vec<crate::identity::Rule>)>,
}

/// `[rollout]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRollout {
    /// The schedule a release by steps takes when the command names none
    /// (`"5,25,100"`).
    pub steps: Option<String>,
    /// Time between scheduled steps.
    pub every: Option<String>,
    /// Page views each side needs before a step is judged.
    pub min_views: Option<u64>,
    /// One-sided confidence that the ticket's side errs more (0.5 to 0.9999).
    pub confidence: Option<f64>,
    /// The least increase of the error rate that counts (0 to 1).
    pub min_increase: Option<f64>,
    /// How often rollouts are checked.
    pub check_every: Option<String>,
    /// How long a sampled page has to be heard from before its silence
    /// counts.
    pub heard_within: Option<String>,
    /// Tickets rolling out at once, at most (1 to 6).
    pub max_concurrent: Option<usize>,
    #[serde(default)]
    pub prometheus: Option<FilePrometheus>,
}

/// `[rollout.prometheus]`: a query that must stay at or under `max`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePrometheus {
    pub url: Option<String>,
    /// PromQL; `$ticket` is replaced by the ticket's key.
    pub query: Option<String>,
    pub max: Option<f64>,
}

/// The control plane's keys, as the binary gathered them from the file.
#[derive(Debug, Default)]
pub struct ControlFile {
    /// `asset_origins`, already normalised by the binary.
    pub asset_origins: Vec<String>,
    pub public_url: Option<String>,
    /// The panel's and API's own host (`https://stamp.example.com`).
    pub control_url: Option<String>,
    pub history_repo: Option<PathBuf>,
    pub api: FileApi,
    pub tokens: Vec<FileToken>,
    pub preview: FilePreview,
    pub settle: FileSettle,
    pub gc: FileGc,
    pub rollout: FileRollout,
    pub slack: Option<FileSlack>,
    pub policies: Entries,
    pub hooks: Entries,
    /// `[[sign_in]]` identity providers.
    pub sign_in: Vec<crate::identity::FileProvider>,
}

/// Facts from the binary's own keys (and the process) that the control
/// plane depends on.
#[derive(Clone, Copy)]
pub struct Context {
    /// Whether an environment variable is set (the process's own, except in
    /// tests of example files).
    pub env_is_set: fn(&str) -> bool,
    /// The proxy's listener.
    pub listen: SocketAddr,
    /// The listener serves TLS.
    pub tls: bool,
    /// `--demo` (an open API is allowed off loopback only there).
    pub demo: bool,
    /// Production pages carry the probe during rollouts (`reports.sample`
    /// above 0): rollouts have a signal to judge steps on.
    pub signal: bool,
}

/// Limits of the control API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiLimits {
    pub max_module_bytes: u64,
    pub max_modules_per_ticket: usize,
    /// File extensions a module may have (lower case, no dot).
    pub extensions: Vec<String>,
    /// Other origins whose modules a ticket may override (`x-stamp-origin`).
    pub asset_origins: Vec<String>,
}

/// Releasing by steps: the default schedule, how a step is judged, and
/// the optional Prometheus gate.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutConfig {
    pub steps: Vec<u8>,
    pub every: Duration,
    pub rule: stamp_model::rollout::Rule,
    pub check_every: Duration,
    /// How long a sampled page has to be heard from before its silence
    /// counts: only pages sent in minutes that ended at least this long
    /// ago are judged for silence.
    pub heard_within: Duration,
    pub max_concurrent: usize,
    pub prometheus: Option<PrometheusGate>,
    /// Production pages report during rollouts (see [`Context::signal`]).
    pub signal: bool,
}

/// A PromQL query every sample of which must stay at or under `max`.
#[derive(Debug, Clone, PartialEq)]
pub struct PrometheusGate {
    pub url: String,
    pub query: String,
    pub max: f64,
}

/// How often to collect, and what to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcConfig {
    pub every: Duration,
    pub grace: Duration,
    pub closed_retention: Duration,
}

/// Signed share links: the HMAC secret and the links' lifetime.
#[derive(Clone, PartialEq, Eq)]
pub struct PreviewProtection {
    pub secret: String,
    pub link_ttl: Duration,
    /// What opens a preview: share links, signed-in people, or either.
    pub access: stamp_model::share::Access,
    /// Roles whose signed-in people may open previews.
    pub roles: Vec<Role>,
}

impl std::fmt::Debug for PreviewProtection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreviewProtection")
            .field("secret", &"<redacted>")
            .field("link_ttl", &self.link_ttl)
            .field("access", &self.access)
            .finish()
    }
}

impl PreviewProtection {
    pub fn signer(&self) -> stamp_model::share::Signer {
        stamp_model::share::Signer::new(self.secret.as_bytes(), self.link_ttl)
    }

    /// The data plane's check of a preview request; `login` and `app` as
    /// in [`stamp_model::share::Gate`].
    pub fn gate(&self, login: String, app: String) -> stamp_model::share::Gate {
        stamp_model::share::Gate {
            signer: self.signer(),
            access: self.access,
            roles: self.roles.clone(),
            login,
            app,
        }
    }
}

/// The validated control-plane configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlConfig {
    /// Base of share links, e.g. `https://app.example.com` (no trailing
    /// slash); without it, the listener's own address.
    pub public_url: Option<String>,
    /// When set, the panel, the API and sign-in answer only on this host
    /// (another origin than the app's, so app scripts cannot use them).
    pub control_url: Option<String>,
    pub api: ApiLimits,
    /// API tokens; empty means the API is open (only allowed on loopback).
    /// Shared by every clone, so a reload rotates them everywhere at once.
    pub tokens: Tokens,
    /// Where production overlay changes are committed, if anywhere.
    pub history_repo: Option<PathBuf>,
    /// Preview protection: `Some` when `?dev=`/`?qa=` need a signed share link.
    pub preview: Option<PreviewProtection>,
    /// How often released tickets are checked against the origin.
    pub settle_interval: Duration,
    /// Who wins when the origin serves a third version of an overridden URL.
    pub settle_third_version: ThirdVersion,
    /// Garbage collection and retention; `None` when disabled.
    pub gc: Option<GcConfig>,
    /// Skew protection: how long what production stops serving stays
    /// servable (zero: not at all).
    pub skew: Duration,
    pub rollout: RolloutConfig,
    /// Acting from Slack's buttons; `None` when `[slack]` is not configured.
    pub slack: Option<SlackActions>,
    /// `[[policies]]` entries, validated (built into an `Engine` at start-up).
    pub policies: Entries,
    /// `[[hooks]]` entries, validated (built into a `Dispatcher` at start-up).
    pub hooks: Entries,
    pub listen: SocketAddr,
    pub tls: bool,
    /// Identity providers people sign in with (panel and CLI).
    pub sign_in: Vec<crate::identity::ProviderConfig>,
}

/// Extensions accepted by default: what a browser loads as a module or asset.
pub const DEFAULT_EXTENSIONS: &[&str] = &[
    "js", "mjs", "cjs", "jsx", "css", "json", "map", "wasm", "txt", "png", "jpg", "jpeg", "gif",
    "webp", "woff", "woff2",
];

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("listen", &self.listen)
            .field("tls", &self.tls)
            .field("demo", &self.demo)
            .finish()
    }
}

impl ControlConfig {
    /// Validates the control plane's keys into `p`.
    pub fn build(file: ControlFile, ctx: Context, p: &mut Problems) -> ControlConfig {
        let public_url = file.public_url.map(|u| u.trim_end_matches('/').to_string());
        if let Some(u) = &public_url {
            match url::Url::parse(u) {
                Ok(parsed)
                    if matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some() => {}
                _ => p.add("public_url", format!("`{u}` is not an http(s) URL")),
            }
        }

        let control_url = file
            .control_url
            .map(|u| u.trim_end_matches('/').to_string());
        if let Some(c) = &control_url {
            match url::Url::parse(c) {
                Ok(parsed)
                    if matches!(parsed.scheme(), "http" | "https")
                        && parsed.host().is_some()
                        && parsed.path() == "/"
                        && parsed.query().is_none() =>
                {
                    let app = public_url.as_deref().and_then(|u| url::Url::parse(u).ok());
                    match app {
                        None => p.add(
                            "control_url",
                            "needs public_url too: the app's own address, where previews return",
                        ),
                        Some(app)
                            if app.host_str() == parsed.host_str()
                                && app.port_or_known_default()
                                    == parsed.port_or_known_default() =>
                        {
                            p.add(
                                "control_url",
                                "must be another host than public_url (that is its point)",
                            )
                        }
                        Some(_) => {}
                    }
                }
                _ => p.add(
                    "control_url",
                    format!("`{c}` is not an http(s) origin (scheme, host and port only)"),
                ),
            }
        }

        let api = ApiLimits {
            max_module_bytes: file.api.max_module_bytes.unwrap_or(5 << 20),
            max_modules_per_ticket: file.api.max_modules_per_ticket.unwrap_or(1000),
            asset_origins: file.asset_origins,
            extensions: file
                .api
                .extensions
                .unwrap_or_else(|| DEFAULT_EXTENSIONS.iter().map(|e| e.to_string()).collect())
                .into_iter()
                .map(|e| e.trim_start_matches('.').to_ascii_lowercase())
                .collect(),
        };
        if api.max_module_bytes == 0 {
            p.add("api.max_module_bytes", "must be at least 1");
        }
        if api.max_modules_per_ticket == 0 {
            p.add("api.max_modules_per_ticket", "must be at least 1");
        }
        if api.extensions.is_empty()
            || api
                .extensions
                .iter()
                .any(|e| e.is_empty() || e.contains('/'))
        {
            p.add(
                "api.extensions",
                "must list extensions like \"js\", \"css\"",
            );
        }

        let tokens = Tokens::new(tokens(file.tokens, p));
        let mut sign_in_problems = Vec::new();
        let sign_in =
            crate::identity::build_providers(file.sign_in, &ctx.env_is_set, &mut sign_in_problems);
        for (key, message) in sign_in_problems {
            p.add(&key, message);
        }
        if !sign_in.is_empty() && public_url.is_none() && !ctx.listen.ip().is_loopback() {
            p.add(
                "public_url",
                "is required with [[sign_in]]: the provider sends browsers back to \
                 <public_url>/__stamp/callback",
            );
        }
        if tokens.is_empty() && sign_in.is_empty() && !ctx.listen.ip().is_loopback() && !ctx.demo {
            p.add(
                "tokens",
                format!(
                    "the control API would be open to anyone on {}: configure [[tokens]] \
                     (or listen on a loopback address)",
                    ctx.listen
                ),
            );
        }

        let link_ttl = p.duration(
            "preview.link_ttl",
            file.preview.link_ttl.as_deref(),
            Duration::from_secs(7 * 24 * 3600),
        );
        let access = match file.preview.access.as_deref() {
            None => stamp_model::share::Access::ShareLink,
            Some(a) => stamp_model::share::Access::parse(a).unwrap_or_else(|| {
                p.add(
                    "preview.access",
                    format!("`{a}` is not `share-link`, `sign-in` or `either`"),
                );
                stamp_model::share::Access::ShareLink
            }),
        };
        let mut roles = Vec::new();
        for r in file
            .preview
            .sign_in_roles
            .unwrap_or_else(|| vec!["dev".into(), "qa".into(), "admin".into()])
        {
            match r.parse::<Role>() {
                Ok(role) => roles.push(role),
                Err(e) => p.add("preview.sign_in_roles", e),
            }
        }
        if roles.is_empty() && access != stamp_model::share::Access::ShareLink {
            p.add(
                "preview.sign_in_roles",
                "must name at least one role when previews accept signed-in people",
            );
        }
        let preview = if file.preview.protect.unwrap_or(false) {
            match file.preview.secret {
                Some(secret) if secret.len() >= 32 => Some(PreviewProtection {
                    secret,
                    link_ttl,
                    access,
                    roles,
                }),
                Some(_) => {
                    p.add(
                        "preview.secret",
                        "must be at least 32 characters (e.g. openssl rand -hex 32)",
                    );
                    None
                }
                None => {
                    p.add("preview.secret", "is required when preview.protect is true");
                    None
                }
            }
        } else {
            if access != stamp_model::share::Access::ShareLink {
                p.add(
                    "preview.access",
                    "needs preview.protect = true (and preview.secret)",
                );
            }
            None
        };

        let settle_interval = p.duration(
            "settle.interval",
            file.settle.interval.as_deref(),
            Duration::from_secs(30),
        );
        let settle_third_version = match file.settle.third_version.as_deref() {
            None | Some("origin") => ThirdVersion::Origin,
            Some("ticket") => ThirdVersion::Ticket,
            Some(other) => {
                p.add(
                    "settle.third_version",
                    format!("`{other}` is not `origin` or `ticket`"),
                );
                ThirdVersion::Origin
            }
        };

        let gc = GcConfig {
            every: p.duration(
                "gc.every",
                file.gc.every.as_deref(),
                Duration::from_secs(3600),
            ),
            grace: p.duration(
                "gc.grace",
                file.gc.grace.as_deref(),
                Duration::from_secs(600),
            ),
            closed_retention: p.duration(
                "gc.closed_retention",
                file.gc.closed_retention.as_deref(),
                Duration::from_secs(30 * 24 * 3600),
            ),
        };
        if gc.grace < Duration::from_secs(60) {
            p.add(
                "gc.grace",
                "must be at least 1m: an upload stores its body before it commits the ticket",
            );
        }
        let gc = file.gc.enabled.unwrap_or(true).then_some(gc);
        let skew = match file.gc.skew_protection.as_deref() {
            Some("0") => Duration::ZERO,
            other => p.duration("gc.skew_protection", other, crate::effects::DEFAULT_SKEW),
        };

        let r = &file.rollout;
        let steps = match r.steps.as_deref() {
            None => vec![5, 25, 100],
            Some(text) => match stamp_model::rollout::parse_steps(text) {
                Ok(steps) if steps.last() == Some(&100) => steps,
                Ok(_) => {
                    p.add("rollout.steps", "must end at 100 (every visitor)");
                    vec![5, 25, 100]
                }
                Err(e) => {
                    p.add("rollout.steps", e);
                    vec![5, 25, 100]
                }
            },
        };
        let confidence = r.confidence.unwrap_or(0.99);
        if !(0.5..=0.9999).contains(&confidence) {
            p.add("rollout.confidence", "must be between 0.5 and 0.9999");
        }
        let min_increase = r.min_increase.unwrap_or(0.01);
        if !(0.0..=1.0).contains(&min_increase) {
            p.add("rollout.min_increase", "must be between 0 and 1");
        }
        let max_concurrent = r.max_concurrent.unwrap_or(4);
        if !(1..=6).contains(&max_concurrent) {
            p.add("rollout.max_concurrent", "must be between 1 and 6");
        }
        let prometheus = r.prometheus.as_ref().and_then(|g| {
            let url = g.url.clone().map(|u| u.trim_end_matches('/').to_string());
            match (&url, &g.query, g.max) {
                (Some(u), Some(q), Some(max)) if max.is_finite() => {
                    if !u.starts_with("http://") && !u.starts_with("https://") {
                        p.add(
                            "rollout.prometheus.url",
                            format!("`{u}` is not an http(s) URL"),
                        );
                    }
                    Some(PrometheusGate {
                        url: u.clone(),
                        query: q.clone(),
                        max,
                    })
                }
                _ => {
                    p.add(
                        "rollout.prometheus",
                        "needs `url`, `query` and a numeric `max`",
                    );
                    None
                }
            }
        });
        let slack = file.slack.as_ref().and_then(|f| {
            let need = |p: &mut Problems, key: &str, v: &Option<String>| match v {
                Some(name) if !name.is_empty() => {
                    if !(ctx.env_is_set)(name) {
                        p.add(&format!("slack.{key}"), format!("the environment variable {name} is not set"));
                    }
                    Some(name.clone())
                }
                _ => {
                    p.add(&format!("slack.{key}"), "is required (the name of an environment variable)");
                    None
                }
            };
            let secret = need(p, "signing_secret_env", &f.signing_secret_env);
            let token = need(p, "token_env", &f.token_env);
            let mut roles = Vec::new();
            for (role, rules) in [
                (Role::Admin, &f.roles.admin),
                (Role::Qa, &f.roles.qa),
                (Role::Dev, &f.roles.dev),
            ] {
                let mut parsed = Vec::new();
                for r in rules {
                    match crate::identity::Rule::parse(r) {
                        Ok(rule @ (crate::identity::Rule::Email(_) | crate::identity::Rule::Domain(_))) => parsed.push(rule),
                        Ok(_) => p.add(&format!("slack.roles.{role}"), format!("`{r}`: Slack gives a verified email, so only `email:` and `domain:` rules apply")),
                        Err(m) => p.add(&format!("slack.roles.{role}"), m),
                    }
                }
                roles.push((role, parsed));
            }
            if roles.iter().all(|(_, r)| r.is_empty()) {
                p.add("slack.roles", "give at least one rule (email: or domain:), or nobody may act from Slack");
            }
            Some(SlackActions {
                signing_secret_env: secret?,
                token_env: token?,
                api_url: f
                    .api_url
                    .clone()
                    .unwrap_or_else(|| "https://slack.com/api".into())
                    .trim_end_matches('/')
                    .to_string(),
                response_url_prefix: f
                    .response_url_prefix
                    .clone()
                    .unwrap_or_else(|| "https://hooks.slack.com/".into()),
                roles,
            })
        });
        let rollout = RolloutConfig {
            steps,
            every: p.duration(
                "rollout.every",
                r.every.as_deref(),
                Duration::from_secs(15 * 60),
            ),
            rule: stamp_model::rollout::Rule {
                min_views: r.min_views.unwrap_or(200),
                confidence,
                min_increase,
            },
            check_every: p.duration(
                "rollout.check_every",
                r.check_every.as_deref(),
                Duration::from_secs(30),
            ),
            heard_within: p.duration(
                "rollout.heard_within",
                r.heard_within.as_deref(),
                Duration::from_secs(120),
            ),
            max_concurrent,
            prometheus,
            signal: ctx.signal,
        };

        // Policies and hooks name their own keys (`policies[2].remote: …`).
        if let Err(problems) = crate::policy::Engine::from_config(&file.policies.0) {
            problems.into_iter().for_each(|m| p.add_raw(m));
        }
        if let Err(problems) = crate::hooks::Dispatcher::from_config(&file.hooks.0) {
            problems.into_iter().for_each(|m| p.add_raw(m));
        }
        for (entries, prefix) in [(&file.policies, "policies"), (&file.hooks, "hooks")] {
            crate::kit::missing_secrets(&entries.0, prefix, &ctx.env_is_set)
                .into_iter()
                .for_each(|m| p.add_raw(m));
        }

        ControlConfig {
            public_url,
            control_url,
            api,
            tokens,
            history_repo: file.history_repo,
            preview,
            settle_interval,
            settle_third_version,
            gc,
            skew,
            rollout,
            slack,
            policies: file.policies,
            hooks: file.hooks,
            listen: ctx.listen,
            tls: ctx.tls,
            sign_in,
        }
    }

    /// Where the panel, the API and sign-in answer: `control_url`, else the
    /// same base as links.
    pub fn control_base(&self) -> String {
        self.control_url.clone().unwrap_or_else(|| self.link_base())
    }

    /// Whether a request's `Host` is the panel's own host (always, without
    /// `control_url`).
    pub fn on_control_host(&self, host: Option<&str>) -> bool {
        let Some(control) = &self.control_url else {
            return true;
        };
        host.is_some_and(|h| url_names_host(control, h))
    }

    /// Whether a `Host` header names the configured `public_url` or
    /// `control_url`.
    pub fn names_host(&self, host: &str) -> bool {
        [&self.public_url, &self.control_url]
            .into_iter()
            .flatten()
            .any(|u| url_names_host(u, host))
    }

    /// The data plane's preview gate, when previews are protected.
    pub fn preview_gate(&self) -> Option<stamp_model::share::Gate> {
        let preview = self.preview.as_ref()?;
        Some(match &self.control_url {
            Some(c) => preview.gate(format!("{c}/__stamp/login"), self.link_base()),
            None => preview.gate("/__stamp/login".into(), String::new()),
        })
    }

    /// Cookies carry `Secure`: the listener serves TLS, or the public URL is
    /// https (TLS ends at a load balancer in front).
    pub fn secure_cookies(&self) -> bool {
        self.tls
            || self
                .public_url
                .as_deref()
                .is_some_and(|u| u.starts_with("https://"))
    }

    /// The API is open (anonymous admin): no tokens and no sign-in, which
    /// is allowed only on loopback.
    pub fn open(&self) -> bool {
        self.tokens.is_empty() && self.sign_in.is_empty()
    }

    /// The base of every link this proxy hands out: `public_url`, else the
    /// listener's own address (never a request's `Host`).
    pub fn link_base(&self) -> String {
        match &self.public_url {
            Some(u) => u.clone(),
            None => {
                let scheme = if self.tls { "https" } else { "http" };
                format!("{scheme}://{}", self.listen)
            }
        }
    }
}

/// Whether `host` (a `Host` header) is the host and port of `url`.
fn url_names_host(url: &str, host: &str) -> bool {
    let Ok(u) = url::Url::parse(url) else {
        return false;
    };
    let want_host = u.host_str().unwrap_or_default();
    let want_port = u.port_or_known_default();
    let (got_host, got_port) = match host.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(']') || host.starts_with('[') => {
            (name, port.parse::<u16>().ok())
        }
        _ => (host, want_port),
    };
    got_host.eq_ignore_ascii_case(want_host) && got_port == want_port
}

/// The `[[tokens]]` in force. Every clone of a [`ControlConfig`] shares
/// them: [`Tokens::replace`] (a reload) rotates them for the API, the
/// panel and the jobs at once, and a request reads one consistent list.
#[derive(Clone, Default)]
pub struct Tokens(Arc<arc_swap::ArcSwap<Vec<Token>>>);

impl Tokens {
    pub fn new(list: Vec<Token>) -> Tokens {
        Tokens(Arc::new(arc_swap::ArcSwap::from_pointee(list)))
    }

    /// The list in force now.
    pub fn load(&self) -> Arc<Vec<Token>> {
        self.0.load_full()
    }

    pub fn is_empty(&self) -> bool {
        self.0.load().is_empty()
    }

    /// Puts `list` in force for every request from now on.
    pub fn replace(&self, list: Vec<Token>) {
        self.0.store(Arc::new(list));
    }
}

impl PartialEq for Tokens {
    fn eq(&self, other: &Tokens) -> bool {
        **self.0.load() == **other.0.load()
    }
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.load().iter()).finish()
    }
}

fn tokens(file: Vec<FileToken>, p: &mut Problems) -> Vec<Token> {
    let mut tokens: Vec<Token> = Vec::new();
    for (i, t) in file.into_iter().enumerate() {
        let key = format!("tokens[{i}]");
        let role: Role = match t.role.parse() {
            Ok(r) => r,
            Err(e) => {
                p.add(&format!("{key}.role"), e);
                continue;
            }
        };
        let mut sha256 = [0u8; 32];
        if t.sha256.len() != 64 || hex::decode_to_slice(&t.sha256, &mut sha256).is_err() {
            p.add(
                &format!("{key}.sha256"),
                "must be the 64-hex sha256 of the token (stamp-proxy --hash-token SECRET)",
            );
            continue;
        }
        if t.name.is_empty() || t.name.len() > 64 || t.name.chars().any(char::is_control) {
            p.add(&format!("{key}.name"), "must be 1-64 printable characters");
            continue;
        }
        if tokens.iter().any(|o| o.name == t.name) {
            p.add(
                &format!("{key}.name"),
                format!("`{}` is used twice", t.name),
            );
            continue;
        }
        if tokens.iter().any(|o| o.sha256 == sha256) {
            p.add(
                &format!("{key}.sha256"),
                "the same token is configured twice",
            );
            continue;
        }
        tokens.push(Token {
            name: t.name,
            role,
            sha256,
        });
    }
    tokens
}
