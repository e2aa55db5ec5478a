//! Configuration: command-line flags and the TOML file merged into one
//! validated [`Config`]. Precedence, in one place: flag > file > default.
//!
//! Every problem is reported at once, each with the file, the key and what was
//! wrong, and an unknown key is an error (a typo must never be silently ignored
//! by a proxy that sits in front of production).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

/// Command-line flags of `stamp-proxy`. Each has a key in the TOML file.
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "stamp-proxy",
    version,
    about = "Serve a live production app with one ticket's ES modules stamped in",
    long_about = "Serve a live production app with one ticket's ES modules stamped in.\n\n\
        stamp-proxy sits in front of the production origin. A browser that opens the app with \
        ?dev=TKT-1 or ?qa=TKT-1 gets production with that ticket's modules in the import map; \
        everyone else gets production untouched.\n\n\
        Precedence: a flag beats the same key in --config, which beats the default.",
    after_help = "Examples:\n  \
        stamp-proxy --demo                                  # bundled demo app, embedded store\n  \
        stamp-proxy --origin http://127.0.0.1:3000 --listen 127.0.0.1:8080\n  \
        stamp-proxy --origin https://app.internal --store redis://127.0.0.1:6379 --config /etc/stamp/proxy.toml"
)]
pub struct Flags {
    /// The production origin, http:// or https:// (key: `origin`)
    #[arg(long, value_name = "URL")]
    pub origin: Option<String>,

    /// Address to listen on (key: `listen`) [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,

    /// Embedded store directory, or a redis:// / rediss:// URL for a fleet (key: `store`) [default: ./stamp-data]
    #[arg(long, value_name = "PATH|URL")]
    pub store: Option<String>,

    /// TOML configuration file (see conf/stamp-proxy.toml)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Host header sent to the origin instead of the client's (key: `origin_host`)
    #[arg(long, value_name = "HOST")]
    pub origin_host: Option<String>,

    /// Certificate chain (PEM) to serve TLS on the listener (key: `tls.cert`)
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM) for --tls-cert (key: `tls.key`)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Time allowed to connect to the origin, e.g. 2s (key: `timeouts.connect`)
    #[arg(long, value_name = "DURATION")]
    pub connect_timeout: Option<String>,

    /// Longest wait for each read from the origin, e.g. 30s (key: `timeouts.read`)
    #[arg(long, value_name = "DURATION")]
    pub read_timeout: Option<String>,

    /// Longest wait for each write to the origin (key: `timeouts.write`)
    #[arg(long, value_name = "DURATION")]
    pub write_timeout: Option<String>,

    /// Worker threads (key: `threads`) [default: number of CPUs]
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// Lifetime of the ticket cookie, e.g. 12h (key: `selection.cookie_max_age`)
    #[arg(long, value_name = "DURATION")]
    pub cookie_max_age: Option<String>,

    /// Serve the bundled demo app as the origin and seed the sample ticket DEMO-1
    #[arg(long)]
    pub demo: bool,

    /// Validate the configuration, print it, and exit
    #[arg(long)]
    pub check: bool,

    /// Print the sha256 to put in a [[tokens]] entry for SECRET, and exit
    #[arg(long, value_name = "SECRET")]
    pub hash_token: Option<String>,
}

/// The TOML file, as written. Optional everywhere: flags and defaults fill in.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    origin: Option<String>,
    listen: Option<String>,
    store: Option<String>,
    origin_host: Option<String>,
    redis_prefix: Option<String>,
    threads: Option<usize>,
    #[serde(default)]
    timeouts: FileTimeouts,
    #[serde(default)]
    tls: FileTls,
    #[serde(default)]
    origin_tls: FileOriginTls,
    #[serde(default)]
    selection: FileSelection,
    #[serde(default)]
    rewrite: FileRewrite,
    #[serde(default)]
    modules: FileModules,
    #[serde(default)]
    shutdown: FileShutdown,
    #[serde(default)]
    sync: FileSync,
    /// Public base URL for share links (default: from the request).
    public_url: Option<String>,
    /// A git repository that records every change of the production overlay.
    history_repo: Option<PathBuf>,
    #[serde(default)]
    api: FileApi,
    #[serde(default)]
    tokens: Vec<FileToken>,
    #[serde(default)]
    preview: FilePreview,
    #[serde(default)]
    settle: FileSettle,
    #[serde(default)]
    gc: FileGc,
    #[serde(default)]
    badge: FileBadge,
    /// Promotion policies, in order (`kind` + settings), see `policy`.
    #[serde(default)]
    policies: crate::policy::Entries,
    /// Hooks notified of every event, see `hooks`.
    #[serde(default)]
    hooks: crate::policy::Entries,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBadge {
    enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileGc {
    enabled: Option<bool>,
    every: Option<String>,
    grace: Option<String>,
    closed_retention: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettle {
    interval: Option<String>,
    third_version: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePreview {
    protect: Option<bool>,
    secret: Option<String>,
    link_ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileApi {
    max_module_bytes: Option<u64>,
    max_modules_per_ticket: Option<usize>,
    extensions: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToken {
    name: String,
    role: String,
    sha256: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTimeouts {
    connect: Option<String>,
    read: Option<String>,
    write: Option<String>,
    idle: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTls {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileOriginTls {
    verify: Option<bool>,
    sni: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSelection {
    cookie_name: Option<String>,
    cookie_max_age: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRewrite {
    max_import_map_bytes: Option<usize>,
    memory_limit_bytes: Option<usize>,
    compression_level: Option<u32>,
    production_vary_cookie: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileModules {
    cache_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileShutdown {
    grace_period: Option<String>,
    timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSync {
    poll_interval: Option<String>,
}

/// The production origin, resolved at load time (Pingora's peer constructor
/// panics on an unresolvable address, so a bad host is a config error here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub url: String,
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub addr: SocketAddr,
    /// Host header to send instead of the client's.
    pub host_header: Option<String>,
    pub sni: String,
    pub verify_cert: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
    pub write: Duration,
    pub idle: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub cookie_name: String,
    pub cookie_max_age: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    /// Largest inline import map merged; a larger one leaves the page unchanged.
    pub max_import_map_bytes: usize,
    /// lol_html's memory budget per response; past it the rest flows unchanged.
    pub memory_limit_bytes: usize,
    /// Compression level for rewritten pages (0 = send them uncompressed).
    pub compression_level: u32,
    /// Add `Vary: Cookie` to production HTML, for a shared cache in front of the proxy.
    pub production_vary_cookie: bool,
}

/// The validated configuration everything else is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub origin: Origin,
    pub listen: SocketAddr,
    pub store: String,
    pub redis_prefix: String,
    pub threads: usize,
    pub timeouts: Timeouts,
    pub tls: Option<Tls>,
    pub selection: Selection,
    pub rewrite: Rewrite,
    pub module_cache_bytes: u64,
    pub grace_period: Duration,
    pub shutdown_timeout: Duration,
    pub poll_interval: Duration,
    /// Base of share links, e.g. `https://app.example.com` (no trailing slash).
    pub public_url: Option<String>,
    pub api: Api,
    /// API tokens; empty means the API is open (only allowed on loopback).
    pub tokens: Vec<Token>,
    /// Where production overlay changes are committed, if anywhere.
    pub history_repo: Option<PathBuf>,
    /// Preview protection: `Some` when `?dev=`/`?qa=` need a signed share link.
    pub preview: Option<PreviewProtection>,
    /// How often released tickets are checked against the origin.
    pub settle_interval: Duration,
    /// Who wins when the origin serves a third version of an overridden URL.
    pub settle_third_version: crate::settle::ThirdVersion,
    /// Garbage collection and retention; `None` when disabled.
    pub gc: Option<GcConfig>,
    /// Show the on-page badge on ticket pages.
    pub badge: bool,
    /// `[[policies]]` entries, validated (built into an `Engine` at start-up).
    pub policies: crate::policy::Entries,
    /// `[[hooks]]` entries, validated (built into a `Dispatcher` at start-up).
    pub hooks: crate::policy::Entries,
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
}

impl std::fmt::Debug for PreviewProtection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreviewProtection")
            .field("secret", &"<redacted>")
            .field("link_ttl", &self.link_ttl)
            .finish()
    }
}

/// Limits of the control API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Api {
    pub max_module_bytes: u64,
    pub max_modules_per_ticket: usize,
    /// File extensions a module may have (lower case, no dot).
    pub extensions: Vec<String>,
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Dev,
    Qa,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Dev => "dev",
            Role::Qa => "qa",
            Role::Admin => "admin",
        }
    }
}

/// An API token, known by the sha256 of its secret (the secret itself is
/// never configured, stored or logged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub name: String,
    pub role: Role,
    pub sha256: [u8; 32],
}

/// Extensions accepted by default: what a browser loads as a module or asset.
pub const DEFAULT_EXTENSIONS: &[&str] = &[
    "js", "mjs", "cjs", "jsx", "css", "json", "map", "wasm", "txt", "png", "jpg", "jpeg", "gif",
    "webp", "woff", "woff2",
];

/// Every problem found, one per line: `file: key: reason`.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n{}", .problems.join("\n"))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_STORE: &str = "./stamp-data";
pub const DEFAULT_COOKIE: &str = "ticket_stamp";

/// Collects problems with where they came from.
struct Problems {
    source: String,
    list: Vec<String>,
}

impl Problems {
    fn add(&mut self, key: &str, reason: impl std::fmt::Display) {
        self.list
            .push(format!("{}: `{key}`: {reason}", self.source));
    }

    fn duration(&mut self, key: &str, value: Option<&str>, default: Duration) -> Duration {
        match value {
            None => default,
            Some(text) => match humantime::parse_duration(text) {
                Ok(d) if !d.is_zero() => d,
                Ok(_) => {
                    self.add(key, "must be longer than zero");
                    default
                }
                Err(e) => {
                    self.add(
                        key,
                        format!("`{text}` is not a duration ({e}); write e.g. 500ms, 2s, 12h"),
                    );
                    default
                }
            },
        }
    }
}

impl Config {
    /// Reads `flags.config` (if any) and merges it with the flags.
    pub fn load(flags: &Flags) -> Result<Config, ConfigError> {
        let (file, source) = match &flags.config {
            Some(path) => (read_file(path)?, path.display().to_string()),
            None => (FileConfig::default(), "command line".to_string()),
        };
        Self::build(flags, file, source)
    }

    /// Parses a TOML text as if it were the `--config` file (for tests and `--check`).
    pub fn from_toml(flags: &Flags, text: &str, source: &str) -> Result<Config, ConfigError> {
        let file = parse_toml(text, source)?;
        Self::build(flags, file, source.to_string())
    }

    fn build(flags: &Flags, file: FileConfig, source: String) -> Result<Config, ConfigError> {
        let mut p = Problems {
            source,
            list: Vec::new(),
        };
        // When a value came from a flag, say so instead of blaming the file.
        let flag_or = |flag: &Option<String>, key: &str| -> String {
            if flag.is_some() {
                format!("--{}", key.replace('_', "-"))
            } else {
                key.to_string()
            }
        };

        let origin_text = flags.origin.clone().or(file.origin);
        let origin_host = flags.origin_host.clone().or(file.origin_host);
        let verify = file.origin_tls.verify.unwrap_or(true);
        let origin = match origin_text {
            None if flags.demo => None,
            None => {
                p.add(
                    "origin",
                    "is required (the production origin, e.g. http://127.0.0.1:3000)",
                );
                None
            }
            Some(text) => match parse_origin(&text, origin_host, file.origin_tls.sni, verify) {
                Ok(o) => Some(o),
                Err(reason) => {
                    p.add(&flag_or(&flags.origin, "origin"), reason);
                    None
                }
            },
        };

        let listen_text = flags
            .listen
            .clone()
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen = match listen_text.to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(addr)) => addr,
            _ => {
                p.add(
                    &flag_or(&flags.listen, "listen"),
                    format!("`{listen_text}` is not an address like 127.0.0.1:8080"),
                );
                SocketAddr::from(([127, 0, 0, 1], 8080))
            }
        };

        let store = flags
            .store
            .clone()
            .or(file.store)
            .unwrap_or_else(|| DEFAULT_STORE.to_string());
        if store.trim().is_empty() {
            p.add(&flag_or(&flags.store, "store"), "must not be empty");
        } else if store.contains("://") {
            match url::Url::parse(&store) {
                Ok(u) if u.scheme() == "redis" || u.scheme() == "rediss" => {
                    if u.host_str().is_none_or(str::is_empty) {
                        p.add(&flag_or(&flags.store, "store"), "the Redis URL has no host");
                    }
                }
                Ok(u) => p.add(
                    &flag_or(&flags.store, "store"),
                    format!(
                        "unsupported scheme `{}`: use a directory, redis:// or rediss://",
                        u.scheme()
                    ),
                ),
                Err(e) => p.add(
                    &flag_or(&flags.store, "store"),
                    format!("not a valid URL: {e}"),
                ),
            }
        }

        let redis_prefix = file
            .redis_prefix
            .unwrap_or_else(|| "ticket-stamp".to_string());
        if redis_prefix.is_empty()
            || !redis_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            p.add(
                "redis_prefix",
                "must be non-empty letters, digits, `-`, `_` or `.`",
            );
        }

        let threads = flags.threads.or(file.threads).unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        });
        if threads == 0 || threads > 1024 {
            p.add("threads", "must be between 1 and 1024");
        }

        let connect_key = if flags.connect_timeout.is_some() {
            "--connect-timeout"
        } else {
            "timeouts.connect"
        };
        let read_key = if flags.read_timeout.is_some() {
            "--read-timeout"
        } else {
            "timeouts.read"
        };
        let write_key = if flags.write_timeout.is_some() {
            "--write-timeout"
        } else {
            "timeouts.write"
        };
        let timeouts = Timeouts {
            connect: p.duration(
                connect_key,
                flags
                    .connect_timeout
                    .as_deref()
                    .or(file.timeouts.connect.as_deref()),
                Duration::from_secs(5),
            ),
            read: p.duration(
                read_key,
                flags
                    .read_timeout
                    .as_deref()
                    .or(file.timeouts.read.as_deref()),
                Duration::from_secs(60),
            ),
            write: p.duration(
                write_key,
                flags
                    .write_timeout
                    .as_deref()
                    .or(file.timeouts.write.as_deref()),
                Duration::from_secs(60),
            ),
            idle: p.duration(
                "timeouts.idle",
                file.timeouts.idle.as_deref(),
                Duration::from_secs(60),
            ),
        };

        let cert = flags.tls_cert.clone().or(file.tls.cert);
        let key = flags.tls_key.clone().or(file.tls.key);
        let tls = match (cert, key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                // Pingora panics at startup on an unreadable certificate and takes the
                // plain listener down with it: check here and say which file.
                for (k, path) in [("tls.cert", &cert), ("tls.key", &key)] {
                    if let Err(e) = std::fs::metadata(path) {
                        p.add(k, format!("cannot read {}: {e}", path.display()));
                    }
                }
                Some(Tls { cert, key })
            }
            (Some(_), None) => {
                p.add("tls.key", "is required when tls.cert is set");
                None
            }
            (None, Some(_)) => {
                p.add("tls.cert", "is required when tls.key is set");
                None
            }
        };
        if let Some(t) = &tls {
            check_pem(&mut p, "tls.cert", &t.cert, "CERTIFICATE");
            check_pem(&mut p, "tls.key", &t.key, "PRIVATE KEY");
        }

        let cookie_name = file
            .selection
            .cookie_name
            .unwrap_or_else(|| DEFAULT_COOKIE.to_string());
        if cookie_name.is_empty()
            || cookie_name.len() > 64
            || !cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
        {
            p.add(
                "selection.cookie_name",
                "must be 1-64 letters, digits, `-` or `_`",
            );
        }
        let max_age_key = if flags.cookie_max_age.is_some() {
            "--cookie-max-age"
        } else {
            "selection.cookie_max_age"
        };
        let cookie_max_age = p.duration(
            max_age_key,
            flags
                .cookie_max_age
                .as_deref()
                .or(file.selection.cookie_max_age.as_deref()),
            Duration::from_secs(12 * 3600),
        );

        let rewrite = Rewrite {
            max_import_map_bytes: file.rewrite.max_import_map_bytes.unwrap_or(1 << 20),
            memory_limit_bytes: file.rewrite.memory_limit_bytes.unwrap_or(8 << 20),
            compression_level: file.rewrite.compression_level.unwrap_or(3),
            production_vary_cookie: file.rewrite.production_vary_cookie.unwrap_or(false),
        };
        if rewrite.max_import_map_bytes < 1024 {
            p.add("rewrite.max_import_map_bytes", "must be at least 1024");
        }
        if rewrite.memory_limit_bytes < 64 * 1024 {
            p.add("rewrite.memory_limit_bytes", "must be at least 65536");
        }
        if rewrite.compression_level > 9 {
            p.add("rewrite.compression_level", "must be between 0 and 9");
        }

        let module_cache_bytes = file.modules.cache_bytes.unwrap_or(64 << 20);

        let grace_period = p.duration(
            "shutdown.grace_period",
            file.shutdown.grace_period.as_deref(),
            Duration::from_secs(1),
        );
        let shutdown_timeout = p.duration(
            "shutdown.timeout",
            file.shutdown.timeout.as_deref(),
            Duration::from_secs(10),
        );
        let poll_interval = p.duration(
            "sync.poll_interval",
            file.sync.poll_interval.as_deref(),
            Duration::from_secs(2),
        );

        let public_url = file.public_url.map(|u| u.trim_end_matches('/').to_string());
        if let Some(u) = &public_url {
            match url::Url::parse(u) {
                Ok(parsed)
                    if matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some() => {}
                _ => p.add("public_url", format!("`{u}` is not an http(s) URL")),
            }
        }

        let api = Api {
            max_module_bytes: file.api.max_module_bytes.unwrap_or(5 << 20),
            max_modules_per_ticket: file.api.max_modules_per_ticket.unwrap_or(1000),
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

        let mut tokens: Vec<Token> = Vec::new();
        for (i, t) in file.tokens.into_iter().enumerate() {
            let key = format!("tokens[{i}]");
            let role = match t.role.as_str() {
                "dev" => Role::Dev,
                "qa" => Role::Qa,
                "admin" => Role::Admin,
                other => {
                    p.add(
                        &format!("{key}.role"),
                        format!("`{other}` is not a role (dev, qa or admin)"),
                    );
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
        if tokens.is_empty() && !listen.ip().is_loopback() && !flags.demo {
            p.add(
                "tokens",
                format!(
                    "the control API would be open to anyone on {listen}: configure [[tokens]] \
                     (or listen on a loopback address)"
                ),
            );
        }

        let link_ttl = p.duration(
            "preview.link_ttl",
            file.preview.link_ttl.as_deref(),
            Duration::from_secs(7 * 24 * 3600),
        );
        let preview = if file.preview.protect.unwrap_or(false) {
            match file.preview.secret {
                Some(secret) if secret.len() >= 32 => Some(PreviewProtection { secret, link_ttl }),
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
            None
        };

        let settle_interval = p.duration(
            "settle.interval",
            file.settle.interval.as_deref(),
            Duration::from_secs(30),
        );
        let settle_third_version = match file.settle.third_version.as_deref() {
            None | Some("origin") => crate::settle::ThirdVersion::Origin,
            Some("ticket") => crate::settle::ThirdVersion::Ticket,
            Some(other) => {
                p.add(
                    "settle.third_version",
                    format!("`{other}` is not `origin` or `ticket`"),
                );
                crate::settle::ThirdVersion::Origin
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

        // Policies and hooks name their own keys (`policies[2].remote: …`).
        if let Err(problems) = crate::policy::Engine::from_config(&file.policies.0) {
            p.list
                .extend(problems.into_iter().map(|m| format!("{}: {m}", p.source)));
        }
        if let Err(problems) = crate::hooks::Dispatcher::from_config(&file.hooks.0) {
            p.list
                .extend(problems.into_iter().map(|m| format!("{}: {m}", p.source)));
        }

        if !p.list.is_empty() {
            return Err(ConfigError { problems: p.list });
        }
        let origin = match origin {
            Some(o) => o,
            // --demo: the origin is the bundled app, bound later on a free port.
            None => parse_origin("http://127.0.0.1:9", None, None, true)
                .map_err(|r| ConfigError { problems: vec![r] })?,
        };
        Ok(Config {
            origin,
            listen,
            store,
            redis_prefix,
            threads,
            timeouts,
            tls,
            selection: Selection {
                cookie_name,
                cookie_max_age,
            },
            rewrite,
            module_cache_bytes,
            grace_period,
            shutdown_timeout,
            poll_interval,
            public_url,
            api,
            tokens,
            history_repo: file.history_repo,
            preview,
            settle_interval,
            settle_third_version,
            gc,
            badge: file.badge.enabled.unwrap_or(true),
            policies: file.policies,
            hooks: file.hooks,
        })
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        problems: vec![format!("{}: cannot read: {e}", path.display())],
    })?;
    parse_toml(&text, &path.display().to_string())
}

fn parse_toml(text: &str, source: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str::<FileConfig>(text).map_err(|e| {
        // toml's message names the key (including unknown ones, with the valid
        // choices) and shows the offending line.
        let msg = e.message().to_string();
        let location = e
            .span()
            .map(|s| {
                let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                format!("line {line}: ")
            })
            .unwrap_or_default();
        ConfigError {
            problems: vec![format!("{source}: {location}{msg}")],
        }
    })
}

fn check_pem(p: &mut Problems, key: &str, path: &Path, label: &str) {
    if let Ok(text) = std::fs::read_to_string(path) {
        if !text.contains("-----BEGIN") || !text.contains(label) {
            p.add(
                key,
                format!("{} does not look like a PEM {label}", path.display()),
            );
        }
    }
}

/// Parses and resolves an origin URL.
pub fn parse_origin(
    text: &str,
    host_header: Option<String>,
    sni: Option<String>,
    verify_cert: bool,
) -> Result<Origin, String> {
    let url = url::Url::parse(text).map_err(|e| format!("`{text}` is not a URL: {e}"))?;
    let tls = match url.scheme() {
        "http" => false,
        "https" => true,
        other => {
            return Err(format!(
                "scheme `{other}` is not supported: use http or https"
            ))
        }
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials in the origin URL are not supported".into());
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "`{text}` has a path, query or fragment: give just scheme://host[:port]"
        ));
    }
    let host = url
        .host_str()
        .ok_or_else(|| format!("`{text}` has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url
        .port_or_known_default()
        .ok_or_else(|| format!("`{text}` has no port"))?;
    let addr = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{host}`: {e}"))?
        .next()
        .ok_or_else(|| format!("`{host}` resolves to no address"))?;
    if let Some(h) = &host_header {
        if h.is_empty() || h.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(format!(
                "origin_host `{h}` is not a valid Host header value"
            ));
        }
    }
    Ok(Origin {
        url: text.trim_end_matches('/').to_string(),
        tls,
        sni: sni.unwrap_or_else(|| host.clone()),
        host,
        port,
        addr,
        host_header,
        verify_cert,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn flags(origin: &str) -> Flags {
        Flags {
            origin: Some(origin.to_string()),
            ..Flags::default()
        }
    }

    #[test]
    fn defaults_are_safe() {
        let c = Config::from_toml(&flags("http://127.0.0.1:3000"), "", "t.toml").unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.store, DEFAULT_STORE);
        assert!(c.listen.ip().is_loopback());
        assert_eq!(c.selection.cookie_name, DEFAULT_COOKIE);
        assert!(!c.origin.tls);
        assert_eq!(c.origin.port, 3000);
    }

    #[test]
    fn flags_beat_the_file() {
        let toml = "origin = \"http://127.0.0.1:1\"\nlisten = \"127.0.0.1:9000\"\n[timeouts]\nconnect = \"3s\"\n";
        let mut f = flags("http://127.0.0.1:2");
        f.connect_timeout = Some("250ms".into());
        let c = Config::from_toml(&f, toml, "t.toml").unwrap();
        assert_eq!(c.origin.port, 2);
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.timeouts.connect, Duration::from_millis(250));
    }

    #[test]
    fn unknown_keys_are_refused_with_file_and_line() {
        let err = Config::from_toml(
            &flags("http://127.0.0.1:1"),
            "[rewrite]\nmax_map = 3\n",
            "p.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("p.toml"), "{err}");
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("max_map"), "{err}");
        assert!(
            err.contains("max_import_map_bytes"),
            "lists valid keys: {err}"
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let toml = "listen = \"nonsense\"\nstore = \"ftp://x\"\n[timeouts]\nread = \"soon\"\n[selection]\ncookie_name = \"a b\"\n";
        let err = Config::from_toml(&Flags::default(), toml, "p.toml").unwrap_err();
        let all = err.problems.join("\n");
        for key in [
            "`origin`",
            "`listen`",
            "`store`",
            "`timeouts.read`",
            "`selection.cookie_name`",
        ] {
            assert!(all.contains(key), "missing {key} in:\n{all}");
        }
        assert!(err.problems.iter().all(|l| l.starts_with("p.toml: ")));
    }

    #[test]
    fn flag_problems_name_the_flag() {
        let mut f = flags("gopher://x");
        f.read_timeout = Some("-1".into());
        let all = Config::from_toml(&f, "", "command line")
            .unwrap_err()
            .problems
            .join("\n");
        assert!(all.contains("`--origin`"), "{all}");
        assert!(all.contains("`--read-timeout`"), "{all}");
    }

    #[test]
    fn origins_are_validated() {
        assert!(
            parse_origin("https://localhost", None, None, true)
                .unwrap()
                .tls
        );
        assert_eq!(
            parse_origin("https://localhost", None, None, true)
                .unwrap()
                .port,
            443
        );
        for bad in [
            "localhost:80",
            "ftp://localhost",
            "http://localhost/app",
            "http://user:pw@localhost",
            "http://no-such-host.invalid",
        ] {
            assert!(
                parse_origin(bad, None, None, true).is_err(),
                "{bad} accepted"
            );
        }
        assert!(parse_origin("http://127.0.0.1:1", Some("bad host".into()), None, true).is_err());
    }

    #[test]
    fn tls_files_are_checked_at_load() {
        let toml = "[tls]\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\n";
        let all = Config::from_toml(&flags("http://127.0.0.1:1"), toml, "p.toml")
            .unwrap_err()
            .problems
            .join("\n");
        assert!(
            all.contains("`tls.cert`") && all.contains("/nonexistent/cert.pem"),
            "{all}"
        );
        let half = Config::from_toml(
            &flags("http://127.0.0.1:1"),
            "[tls]\ncert = \"/x\"\n",
            "p.toml",
        )
        .unwrap_err()
        .problems
        .join("\n");
        assert!(half.contains("`tls.key`"), "{half}");
    }

    #[test]
    fn tokens_are_validated() {
        let good = crate::auth::hash_token("x");
        let toml = format!(
            "[[tokens]]\nname = \"a\"\nrole = \"boss\"\nsha256 = \"{good}\"\n\
             [[tokens]]\nname = \"b\"\nrole = \"dev\"\nsha256 = \"abc\"\n\
             [[tokens]]\nname = \"c\"\nrole = \"qa\"\nsha256 = \"{good}\"\n\
             [[tokens]]\nname = \"c\"\nrole = \"qa\"\nsha256 = \"{}\"\n",
            crate::auth::hash_token("y")
        );
        let all = Config::from_toml(&flags("http://127.0.0.1:1"), &toml, "p.toml")
            .unwrap_err()
            .problems
            .join("\n");
        assert!(
            all.contains("`tokens[0].role`") && all.contains("boss"),
            "{all}"
        );
        assert!(all.contains("`tokens[1].sha256`"), "{all}");
        assert!(
            all.contains("`tokens[3].name`") && all.contains("used twice"),
            "{all}"
        );
        let c = Config::from_toml(
            &flags("http://127.0.0.1:1"),
            &format!("[[tokens]]\nname = \"ci\"\nrole = \"admin\"\nsha256 = \"{good}\"\n"),
            "p.toml",
        )
        .unwrap();
        assert_eq!(c.tokens[0].role, Role::Admin);
    }

    #[test]
    fn an_open_api_is_refused_off_loopback() {
        let mut f = flags("http://127.0.0.1:1");
        f.listen = Some("0.0.0.0:8080".into());
        let all = Config::from_toml(&f, "", "command line")
            .unwrap_err()
            .problems
            .join("\n");
        assert!(all.contains("`tokens`"), "{all}");
        let toml = format!(
            "[[tokens]]\nname = \"ci\"\nrole = \"admin\"\nsha256 = \"{}\"\n",
            crate::auth::hash_token("x")
        );
        assert!(Config::from_toml(&f, &toml, "p.toml").is_ok());
    }

    #[test]
    fn the_policies_example_in_conf_is_valid() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../conf/policies.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let c = Config::from_toml(&flags("http://127.0.0.1:1"), &text, path).unwrap();
        assert!(!c.policies.0.is_empty() && !c.hooks.0.is_empty());
    }

    #[test]
    fn unknown_policy_kinds_are_config_errors() {
        let all = Config::from_toml(
            &flags("http://127.0.0.1:1"),
            "[[policies]]\nkind = \"vibes\"\n",
            "p.toml",
        )
        .unwrap_err()
        .problems
        .join("\n");
        assert!(
            all.starts_with("p.toml: policies[0]") && all.contains("sign-off"),
            "{all}"
        );
    }

    #[test]
    fn the_annotated_example_in_conf_is_valid() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../conf/stamp-proxy.toml");
        let text = std::fs::read_to_string(path).unwrap();
        Config::from_toml(&Flags::default(), &text, path).unwrap();
    }
}
