//! Configuration: command-line flags and the TOML file merged into one
//! validated [`Config`]. Precedence, in one place: flag > file > default.
//!
//! The binary owns the process's keys (listener, store, threads, TLS,
//! shutdown); each plane owns its own section (`stamp_data::config`,
//! `stamp_control::config`) and validates it into the same list of
//! problems, so every problem is reported at once, each with the file, the
//! key and what was wrong. An unknown key is an error (a typo must never be
//! silently ignored by a proxy that sits in front of production).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;
use stamp_control::config::{
    Context, ControlConfig, ControlFile, FileApi, FileGc, FilePreview, FileRollout, FileSettle,
    FileSlack, FileToken,
};
use stamp_control::Entries;
use stamp_data::config::{
    DataConfig, DataFile, FileBadge, FileMetrics, FileModules, FileOriginTls, FileReports,
    FileRewrite, FileSelection, FileTimeouts,
};
use stamp_model::problems::Problems;

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

    /// Embedded store directory, or a redis:// / rediss:// / redis+sentinel:// URL for a fleet (key: `store`) [default: ./stamp-data]
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

    /// With --check: say only whether it is valid
    #[arg(long, requires = "check")]
    pub quiet: bool,

    /// Print the sha256 to put in a [[tokens]] entry for SECRET, and exit
    #[arg(long, value_name = "SECRET")]
    pub hash_token: Option<String>,

    /// Take the listening sockets over from the running stamp-proxy (send
    /// it SIGQUIT): a new binary or configuration without refusing a connection
    #[arg(long)]
    pub upgrade: bool,

    /// Run in the background; return once serving (key: `process.daemon`)
    #[arg(long)]
    pub daemon: bool,

    /// Write the process id here once serving (key: `process.pid_file`)
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,

    /// Where --upgrade takes the sockets over from this process (key: `process.upgrade_socket`)
    #[arg(long, value_name = "FILE")]
    pub upgrade_socket: Option<PathBuf>,

    /// Log lines as `text` or `json` (key: `log.format`)
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
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
    #[serde(default)]
    process: FileProcess,
    #[serde(default)]
    log: FileLog,
    /// Public base URL for share links (default: the listener's address).
    public_url: Option<String>,
    /// The panel's and API's own host.
    control_url: Option<String>,
    /// Other origins the app loads modules, stylesheets or import maps from.
    #[serde(default)]
    asset_origins: Vec<String>,
    /// A git repository that records every change of the production overlay.
    history_repo: Option<PathBuf>,
    #[serde(default)]
    api: FileApi,
    #[serde(default)]
    tokens: Vec<FileToken>,
    /// Identity providers people sign in with.
    #[serde(default)]
    sign_in: Vec<stamp_control::FileProvider>,
    #[serde(default)]
    preview: FilePreview,
    #[serde(default)]
    settle: FileSettle,
    #[serde(default)]
    gc: FileGc,
    #[serde(default)]
    rollout: FileRollout,
    /// Acting from Slack's buttons.
    slack: Option<FileSlack>,
    #[serde(default)]
    badge: FileBadge,
    #[serde(default)]
    metrics: FileMetrics,
    #[serde(default)]
    reports: FileReports,
    #[serde(default)]
    forwarded: stamp_data::config::FileForwarded,
    /// Promotion policies, in order (`kind` + settings).
    #[serde(default)]
    policies: Entries,
    /// Hooks notified of every event.
    #[serde(default)]
    hooks: Entries,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTls {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileShutdown {
    grace_period: Option<String>,
    timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileProcess {
    daemon: Option<bool>,
    pid_file: Option<PathBuf>,
    upgrade_socket: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLog {
    format: Option<String>,
    access: Option<bool>,
}

/// How the process runs and hands over to its successor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// Started with `--daemon` / `process.daemon`.
    pub daemon: bool,
    pub pid_file: Option<PathBuf>,
    /// Where a new process (`--upgrade`) takes the listening sockets from
    /// this one when it gets SIGQUIT.
    pub upgrade_socket: PathBuf,
    /// This process takes the sockets over (`--upgrade`).
    pub upgrade: bool,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The longest path a Unix socket may have (`sun_path`, with its NUL).
const MAX_SOCKET_PATH: usize = 107;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSync {
    poll_interval: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The validated configuration everything else is built from.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    pub store: String,
    pub redis_prefix: String,
    pub threads: usize,
    pub tls: Option<Tls>,
    pub grace_period: Duration,
    pub shutdown_timeout: Duration,
    pub poll_interval: Duration,
    pub process: Process,
    pub log_format: LogFormat,
    /// The data plane's section.
    pub data: DataConfig,
    /// The control plane's section.
    pub control: ControlConfig,
}

/// Every problem found, one per line: `file: key: reason`.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n{}", .problems.join("\n"))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_STORE: &str = "./stamp-data";
pub use stamp_data::config::DEFAULT_COOKIE;

impl Config {
    /// Reads `flags.config` (if any) and merges it with the flags.
    pub fn load(flags: &Flags) -> Result<Config, ConfigError> {
        let (file, source) = match &flags.config {
            Some(path) => (read_file(path)?, path.display().to_string()),
            None => (FileConfig::default(), "command line".to_string()),
        };
        Self::build(flags, file, source, stamp_control::env_is_set)
    }

    /// Parses a TOML text as if it were the `--config` file (for tests and `--check`).
    pub fn from_toml(flags: &Flags, text: &str, source: &str) -> Result<Config, ConfigError> {
        Self::from_toml_with(flags, text, source, stamp_control::env_is_set)
    }

    /// [`Config::from_toml`] with another view of which environment
    /// variables are set (for checking example files that name secrets).
    pub fn from_toml_with(
        flags: &Flags,
        text: &str,
        source: &str,
        env_is_set: fn(&str) -> bool,
    ) -> Result<Config, ConfigError> {
        let file = parse_toml(text, source)?;
        Self::build(flags, file, source.to_string(), env_is_set)
    }

    fn build(
        flags: &Flags,
        mut file: FileConfig,
        source: String,
        env_is_set: fn(&str) -> bool,
    ) -> Result<Config, ConfigError> {
        let mut p = Problems::new(source);
        // Flags win over the file; a problem with a value from a flag names the flag.
        let flag = |p: &mut Problems,
                    key: &str,
                    name: &str,
                    given: &Option<String>,
                    slot: &mut Option<String>| {
            if let Some(v) = given {
                *slot = Some(v.clone());
                p.from_flag(key, name);
            }
        };
        flag(
            &mut p,
            "origin",
            "--origin",
            &flags.origin,
            &mut file.origin,
        );
        flag(
            &mut p,
            "origin_host",
            "--origin-host",
            &flags.origin_host,
            &mut file.origin_host,
        );
        flag(
            &mut p,
            "listen",
            "--listen",
            &flags.listen,
            &mut file.listen,
        );
        flag(&mut p, "store", "--store", &flags.store, &mut file.store);
        flag(
            &mut p,
            "timeouts.connect",
            "--connect-timeout",
            &flags.connect_timeout,
            &mut file.timeouts.connect,
        );
        flag(
            &mut p,
            "timeouts.read",
            "--read-timeout",
            &flags.read_timeout,
            &mut file.timeouts.read,
        );
        flag(
            &mut p,
            "timeouts.write",
            "--write-timeout",
            &flags.write_timeout,
            &mut file.timeouts.write,
        );
        flag(
            &mut p,
            "selection.cookie_max_age",
            "--cookie-max-age",
            &flags.cookie_max_age,
            &mut file.selection.cookie_max_age,
        );

        let listen_text = file
            .listen
            .clone()
            .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen = match listen_text.to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(addr)) => addr,
            _ => {
                p.add(
                    "listen",
                    format!("`{listen_text}` is not an address like 127.0.0.1:8080"),
                );
                SocketAddr::from(([127, 0, 0, 1], 8080))
            }
        };

        let store = file
            .store
            .clone()
            .unwrap_or_else(|| DEFAULT_STORE.to_string());
        if store.trim().is_empty() {
            p.add("store", "must not be empty");
        } else if store.starts_with("redis+sentinel://") {
            if let Err(e) = stamp_store::redis::SentinelUrl::parse(&store) {
                p.add("store", format!("not a valid Sentinel URL: {e}"));
            }
        } else if store.contains("://") {
            match url::Url::parse(&store) {
                Ok(u) if u.scheme() == "redis" || u.scheme() == "rediss" => {
                    if u.host_str().is_none_or(str::is_empty) {
                        p.add("store", "the Redis URL has no host");
                    }
                }
                Ok(u) => p.add(
                    "store",
                    format!(
                        "unsupported scheme `{}`: use a directory, redis://, rediss:// or \
                         redis+sentinel://",
                        u.scheme()
                    ),
                ),
                Err(e) => p.add("store", format!("not a valid URL: {e}")),
            }
        }

        let redis_prefix = file
            .redis_prefix
            .clone()
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

        let cert = flags.tls_cert.clone().or(file.tls.cert.take());
        let key = flags.tls_key.clone().or(file.tls.key.take());
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
                check_pem(&mut p, "tls.cert", &cert, "CERTIFICATE");
                check_pem(&mut p, "tls.key", &key, "PRIVATE KEY");
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

        let grace_period = match file.shutdown.grace_period.as_deref() {
            Some("0s" | "0") => Duration::ZERO,
            other => p.duration("shutdown.grace_period", other, Duration::ZERO),
        };
        let shutdown_timeout = p.duration(
            "shutdown.timeout",
            file.shutdown.timeout.as_deref(),
            Duration::from_secs(30),
        );
        if grace_period > shutdown_timeout {
            p.add(
                "shutdown.grace_period",
                "must not be longer than shutdown.timeout",
            );
        }
        let poll_interval = p.duration(
            "sync.poll_interval",
            file.sync.poll_interval.as_deref(),
            Duration::from_secs(2),
        );

        let daemon = flags.daemon || file.process.daemon.unwrap_or(false);
        let pid_file = flags.pid_file.clone().or(file.process.pid_file.take());
        if flags.pid_file.is_some() {
            p.from_flag("process.pid_file", "--pid-file");
        }
        if let Some(f) = &pid_file {
            if f.as_os_str().is_empty() || f.file_name().is_none() {
                p.add("process.pid_file", "must name a file");
            } else if let Some(dir) = f.parent().filter(|d| !d.as_os_str().is_empty()) {
                if !dir.is_dir() {
                    p.add(
                        "process.pid_file",
                        format!("its directory {} does not exist", dir.display()),
                    );
                }
            }
        }
        // Private by default (Pingora opens the socket to everyone who can
        // reach its directory): systemd's RuntimeDirectory, else the
        // embedded store's directory, else a directory of this user's in
        // the temp dir; one per port, so two proxies on one machine never
        // hand their sockets to each other's successor.
        if flags.upgrade_socket.is_some() {
            p.from_flag("process.upgrade_socket", "--upgrade-socket");
        }
        let given = flags.upgrade_socket.clone();
        let upgrade_socket = given
            .or(file.process.upgrade_socket.take())
            .unwrap_or_else(|| default_upgrade_socket(&store, listen.port()));
        if upgrade_socket.as_os_str().len() > MAX_SOCKET_PATH {
            p.add(
                "process.upgrade_socket",
                format!("is longer than a Unix socket path may be ({MAX_SOCKET_PATH} bytes)"),
            );
        } else if !upgrade_socket.is_absolute() {
            p.add("process.upgrade_socket", "must be an absolute path");
        }
        let log_format = match flags.log_format.as_deref().or(file.log.format.as_deref()) {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                if flags.log_format.is_some() {
                    p.from_flag("log.format", "--log-format");
                }
                p.add(
                    "log.format",
                    format!("`{other}` is not a log format: use \"text\" or \"json\""),
                );
                LogFormat::Text
            }
        };

        let mut asset_origins = Vec::new();
        for o in &file.asset_origins {
            match stamp_model::assets::normalize_origin(o) {
                Ok(n) if !asset_origins.contains(&n) => asset_origins.push(n),
                Ok(_) => {}
                Err(e) => p.add("asset_origins", e),
            }
        }
        let data = DataConfig::build(
            DataFile {
                asset_origins: asset_origins.clone(),
                origin: file.origin,
                origin_host: file.origin_host,
                timeouts: file.timeouts,
                origin_tls: file.origin_tls,
                selection: file.selection,
                rewrite: file.rewrite,
                modules: file.modules,
                badge: file.badge,
                metrics: file.metrics,
                reports: file.reports,
                forwarded: file.forwarded,
                access_log: file.log.access,
            },
            flags.demo,
            tls.is_some(),
            &mut p,
        );
        let control = ControlConfig::build(
            ControlFile {
                asset_origins,
                public_url: file.public_url,
                control_url: file.control_url,
                history_repo: file.history_repo,
                api: file.api,
                tokens: file.tokens,
                preview: file.preview,
                sign_in: file.sign_in,
                settle: file.settle,
                gc: file.gc,
                rollout: file.rollout,
                slack: file.slack,
                policies: file.policies,
                hooks: file.hooks,
            },
            Context {
                env_is_set,
                listen,
                tls: tls.is_some(),
                demo: flags.demo,
                signal: data.as_ref().is_some_and(|d| d.report_sample > 0.0),
            },
            &mut p,
        );

        match data {
            Some(data) if p.is_empty() => Ok(Config {
                listen,
                store,
                redis_prefix,
                threads,
                tls,
                grace_period,
                shutdown_timeout,
                poll_interval,
                process: Process {
                    daemon,
                    pid_file,
                    upgrade_socket,
                    upgrade: flags.upgrade,
                },
                log_format,
                data,
                control,
            }),
            _ => Err(ConfigError {
                problems: p.into_list(),
            }),
        }
    }
}

/// Where the sockets are handed over when the configuration does not say.
fn default_upgrade_socket(store: &str, port: u16) -> PathBuf {
    let name = format!("stamp-proxy-{port}.upgrade.sock");
    if let Some(dir) = std::env::var_os("RUNTIME_DIRECTORY") {
        // systemd's, possibly several separated by colons: the first.
        let first = dir
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or_default()
            .to_string();
        return PathBuf::from(first).join(name);
    }
    if !stamp_store::redis::is_redis_url(store) {
        if let Ok(abs) = std::path::absolute(store) {
            return abs.join(name);
        }
    }
    std::env::temp_dir()
        .join(format!("stamp-proxy-{}", crate::process::uid()))
        .join(name)
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
        assert_eq!(c.data.selection.cookie_name, DEFAULT_COOKIE);
        assert!(!c.data.origin.tls);
        assert_eq!(c.data.origin.port, 3000);
    }

    #[test]
    fn flags_beat_the_file() {
        let toml = "origin = \"http://127.0.0.1:1\"\nlisten = \"127.0.0.1:9000\"\n[timeouts]\nconnect = \"3s\"\n";
        let mut f = flags("http://127.0.0.1:2");
        f.connect_timeout = Some("250ms".into());
        let c = Config::from_toml(&f, toml, "t.toml").unwrap();
        assert_eq!(c.data.origin.port, 2);
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.data.timeouts.connect, Duration::from_millis(250));
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
        let good = stamp_control::hash_token("x");
        let toml = format!(
            "[[tokens]]\nname = \"a\"\nrole = \"boss\"\nsha256 = \"{good}\"\n\
             [[tokens]]\nname = \"b\"\nrole = \"dev\"\nsha256 = \"abc\"\n\
             [[tokens]]\nname = \"c\"\nrole = \"qa\"\nsha256 = \"{good}\"\n\
             [[tokens]]\nname = \"c\"\nrole = \"qa\"\nsha256 = \"{}\"\n",
            stamp_control::hash_token("y")
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
        assert_eq!(
            c.control.tokens.load()[0].role,
            stamp_model::roles::Role::Admin
        );
    }

    #[test]
    fn sign_in_and_preview_access_are_validated() {
        let bad = "[preview]\naccess = \"sign-in\"\n\
                   [[sign_in]]\nname = \"corp\"\nissuer = \"ftp://id\"\nclient_id = \"c\"\n\
                   [sign_in.roles]\nqa = [\"team:qa\"]\n";
        let all = Config::from_toml(&flags("http://127.0.0.1:1"), bad, "p.toml")
            .unwrap_err()
            .problems
            .join("\n");
        assert!(
            all.contains("`preview.access`") && all.contains("preview.protect"),
            "{all}"
        );
        assert!(all.contains("`sign_in[0].issuer`"), "{all}");
        let unknown = "[[sign_in]]\nname = \"corp\"\nissuer = \"https://id\"\nclient_id = \"c\"\nclient_secret = \"inline\"\n";
        let e = Config::from_toml(&flags("http://127.0.0.1:1"), unknown, "p.toml").unwrap_err();
        assert!(e.problems.join("\n").contains("client_secret"), "{e:?}");
        let mode = "[preview]\nprotect = true\nsecret = \"0123456789abcdef0123456789abcdef\"\n\
                    access = \"maybe\"\nsign_in_roles = [\"boss\"]\n";
        let all = Config::from_toml(&flags("http://127.0.0.1:1"), mode, "p.toml")
            .unwrap_err()
            .problems
            .join("\n");
        assert!(all.contains("`maybe` is not"), "{all}");
        assert!(all.contains("`preview.sign_in_roles`"), "{all}");
        // The panel's own host must be another host, with public_url.
        for (toml, needle) in [
            ("control_url = \"http://stamp.example\"\n", "needs public_url"),
            (
                "public_url = \"https://shop.example\"\ncontrol_url = \"https://shop.example\"\n",
                "another host",
            ),
            (
                "public_url = \"https://shop.example\"\ncontrol_url = \"https://stamp.example/panel\"\n",
                "origin",
            ),
        ] {
            let all = Config::from_toml(&flags("http://127.0.0.1:1"), toml, "p.toml")
                .unwrap_err()
                .problems
                .join("\n");
            assert!(all.contains("`control_url`") && all.contains(needle), "{all}");
        }
        let c = Config::from_toml(
            &flags("http://127.0.0.1:1"),
            "public_url = \"https://shop.example\"\ncontrol_url = \"https://stamp.example\"\n",
            "p.toml",
        )
        .unwrap();
        assert!(c.control.on_control_host(Some("stamp.example")));
        assert!(c.control.on_control_host(Some("STAMP.example:443")));
        assert!(!c.control.on_control_host(Some("shop.example")));
        assert!(!c.control.on_control_host(Some("stamp.example:8443")));
        assert!(!c.control.on_control_host(None));
        // Sign-in alone closes the API; off loopback it needs public_url.
        let ok = "[[sign_in]]\nname = \"corp\"\nissuer = \"https://id.example.com\"\nclient_id = \"c\"\n\
                  [sign_in.roles]\nqa = [\"group:qa\"]\n";
        let c = Config::from_toml(&flags("http://127.0.0.1:1"), ok, "p.toml").unwrap();
        assert!(!c.control.open());
        let mut f = flags("http://127.0.0.1:1");
        f.listen = Some("0.0.0.0:8080".into());
        let all = Config::from_toml(&f, ok, "p.toml")
            .unwrap_err()
            .problems
            .join("\n");
        assert!(
            all.contains("`public_url`") && !all.contains("`tokens`"),
            "{all}"
        );
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
            stamp_control::hash_token("x")
        );
        assert!(Config::from_toml(&f, &toml, "p.toml").is_ok());
    }

    #[test]
    fn the_policies_example_in_conf_is_valid() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../conf/policies.toml");
        let text = std::fs::read_to_string(path).unwrap();
        // The example names its secrets' variables; pretend they are set.
        let c =
            Config::from_toml_with(&flags("http://127.0.0.1:1"), &text, path, |_| true).unwrap();
        assert!(!c.control.policies.0.is_empty() && !c.control.hooks.0.is_empty());
        // Without them, start-up and --check name every entry that lacks one.
        let all = Config::from_toml_with(&flags("http://127.0.0.1:1"), &text, path, |_| false)
            .unwrap_err()
            .problems
            .join("\n");
        for needle in [
            "`JIRA_TOKEN` is not set",
            "`SLACK_BOT_TOKEN`",
            "`STAMP_WEBHOOK_SECRET`",
            "hooks[",
            "policies[",
        ] {
            assert!(all.contains(needle), "{needle} missing from:\n{all}");
        }
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
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../conf/stamp-proxy.toml");
        let text = std::fs::read_to_string(path).unwrap();
        Config::from_toml(&Flags::default(), &text, path).unwrap();
    }

    #[test]
    fn process_and_log_keys_are_checked() {
        let all = Config::from_toml(
            &flags("http://127.0.0.1:1"),
            "[process]\npid_file = \"/no/such/dir/p.pid\"\nupgrade_socket = \"relative.sock\"\n\
             [log]\nformat = \"xml\"\n",
            "p.toml",
        )
        .unwrap_err()
        .problems
        .join("\n");
        for needle in [
            "`process.pid_file`: its directory /no/such/dir does not exist",
            "`process.upgrade_socket`: must be an absolute path",
            "`log.format`: `xml` is not a log format",
        ] {
            assert!(all.contains(needle), "{needle} missing from:\n{all}");
        }
        let long = format!("/tmp/{}.sock", "s".repeat(120));
        let all = Config::from_toml(
            &flags("http://127.0.0.1:1"),
            &format!("[process]\nupgrade_socket = {long:?}\n[log]\nverbose = true\n"),
            "p.toml",
        )
        .unwrap_err()
        .problems
        .join("\n");
        assert!(all.contains("unknown field `verbose`"), "{all}");
        let all = Config::from_toml(
            &flags("http://127.0.0.1:1"),
            &format!("[process]\nupgrade_socket = {long:?}\n"),
            "p.toml",
        )
        .unwrap_err()
        .problems
        .join("\n");
        assert!(all.contains("longer than a Unix socket path"), "{all}");
        // A flag's value is named by the flag.
        let f = Flags {
            log_format: Some("yaml".into()),
            ..flags("http://127.0.0.1:1")
        };
        let all = Config::from_toml(&f, "", "p.toml")
            .unwrap_err()
            .problems
            .join("\n");
        assert!(all.contains("`--log-format`"), "{all}");
        let c = Config::from_toml(
            &Flags {
                upgrade: true,
                ..flags("http://127.0.0.1:1")
            },
            "listen = \"127.0.0.1:9123\"\n[log]\nformat = \"json\"\naccess = true\n",
            "p.toml",
        )
        .unwrap();
        assert_eq!(c.log_format, LogFormat::Json);
        assert!(c.data.access_log && c.process.upgrade && !c.process.daemon);
        assert!(c
            .process
            .upgrade_socket
            .ends_with("stamp-data/stamp-proxy-9123.upgrade.sock"));
    }
}
