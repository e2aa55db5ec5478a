//! The data plane's configuration: the origin, timeouts towards it, the
//! selection cookie, the rewriter's limits, the module cache and the badge.
//! The binary reads the TOML file; this module owns the keys' meaning,
//! defaults and validation, and reports every problem into one list.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use serde::Deserialize;
use stamp_model::problems::Problems;

/// `[timeouts]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTimeouts {
    pub connect: Option<String>,
    pub read: Option<String>,
    pub write: Option<String>,
    pub idle: Option<String>,
    pub client_header: Option<String>,
    pub client_body: Option<String>,
}

/// `[origin_tls]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileOriginTls {
    pub verify: Option<bool>,
    pub sni: Option<String>,
}

/// `[selection]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSelection {
    pub cookie_name: Option<String>,
    pub cookie_max_age: Option<String>,
    /// Ask before a link from another site selects a ticket (no signed link).
    pub confirm_cross_site: Option<bool>,
}

/// `[rewrite]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRewrite {
    pub max_import_map_bytes: Option<usize>,
    pub memory_limit_bytes: Option<usize>,
    pub compression_level: Option<u32>,
    pub production_vary_cookie: Option<bool>,
    pub page_cache_bytes: Option<u64>,
    pub variants: Option<usize>,
}

/// `[modules]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileModules {
    pub cache_bytes: Option<u64>,
}

/// `[badge]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBadge {
    pub enabled: Option<bool>,
}

/// `[metrics]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileMetrics {
    /// The sha256 (hex) of a bearer token that `/__stamp/metrics` requires.
    pub token_sha256: Option<String>,
}

/// `[reports]` as written: the probe's reports, and production pages
/// sampled for the signal of rollouts.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileReports {
    /// The share of production page views that carry the probe while a
    /// ticket rolls out (0 to 1).
    pub sample: Option<f64>,
    /// Reports let in per second in the whole process.
    pub per_second: Option<f64>,
    /// Reports let in per minute from one client address.
    pub per_client_per_minute: Option<f64>,
}

/// `[forwarded]` as written: what the origin learns of the client.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileForwarded {
    /// Add `X-Forwarded-For` and `X-Forwarded-Proto` (default true).
    pub enabled: Option<bool>,
    /// Addresses and networks (`10.0.0.0/8`, `::1`) of the proxies in front
    /// of this one, whose `X-Forwarded-For` is believed and extended.
    #[serde(default)]
    pub trusted: Vec<String>,
}

/// The data plane's keys, as the binary gathered them from flags and file.
#[derive(Debug, Default)]
pub struct DataFile {
    pub origin: Option<String>,
    pub origin_host: Option<String>,
    pub timeouts: FileTimeouts,
    pub origin_tls: FileOriginTls,
    pub selection: FileSelection,
    pub rewrite: FileRewrite,
    pub modules: FileModules,
    pub badge: FileBadge,
    pub metrics: FileMetrics,
    pub reports: FileReports,
    pub forwarded: FileForwarded,
    /// `log.access`: one log line per request.
    pub access_log: Option<bool>,
    /// `asset_origins`, already normalised by the binary.
    pub asset_origins: Vec<String>,
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
    /// A client's whole request header (nginx's `client_header_timeout`).
    pub client_header: Duration,
    /// Each read of a client's request body (nginx's `client_body_timeout`).
    pub client_body: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub cookie_name: String,
    pub cookie_max_age: Duration,
    /// A link from another site that selects a ticket without a signed
    /// token lands on a page that asks first.
    pub confirm_cross_site: bool,
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
    /// The stamped-page cache's budget in bytes (0 = off).
    pub page_cache_bytes: u64,
    /// Ticket variants built and kept at once ([`crate::snapshot::Variants`]).
    pub variants: usize,
}

/// The validated data-plane configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct DataConfig {
    pub origin: Origin,
    pub timeouts: Timeouts,
    pub selection: Selection,
    pub rewrite: Rewrite,
    pub module_cache_bytes: u64,
    /// Show the on-page badge on ticket pages.
    pub badge: bool,
    /// The listener serves TLS (cookies get `Secure`, pages are `https:`).
    pub tls: bool,
    /// `/__stamp/metrics` requires a bearer token with this sha256.
    pub metrics_token: Option<[u8; 32]>,
    /// Other origins the app loads modules and import maps from (a CDN),
    /// serialised (`https://cdn.example`): their external import maps are
    /// fetched and merged, and mirror paths redirect to them.
    pub asset_origins: Vec<String>,
    /// The share of production page views sampled for rollouts' signal.
    pub report_sample: f64,
    pub report_limits: crate::reports::Limits,
    pub forwarded: Forwarded,
    /// One log line per request (`log.access`), with its request id.
    pub access_log: bool,
}

/// What the origin is told of the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forwarded {
    pub enabled: bool,
    /// Networks whose `X-Forwarded-For` is kept and extended; anyone
    /// else's is replaced (a client cannot make the origin believe an
    /// address of its choosing).
    pub trusted: Vec<(std::net::IpAddr, u8)>,
}

impl Forwarded {
    /// Whether `ip` is one of the trusted proxies.
    pub fn trusts(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        self.trusted.iter().any(|(net, bits)| match (net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(*bits)).unwrap_or(0);
                u32::from(*n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(*bits)).unwrap_or(0);
                u128::from(*n) & mask == u128::from(a) & mask
            }
            _ => false,
        })
    }
}

impl Forwarded {
    /// The client's address: the connection's peer, or when the peer is a
    /// trusted proxy, the right-most address of `X-Forwarded-For` that is
    /// not one (what the nearest untrusted hop said it was).
    pub fn client(
        &self,
        peer: Option<std::net::IpAddr>,
        headers: &http::HeaderMap,
    ) -> Option<std::net::IpAddr> {
        let peer = peer?;
        if !self.trusts(peer) {
            return Some(peer);
        }
        let chain: Vec<std::net::IpAddr> = headers
            .get_all(&crate::select::names::X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map_while(|a| a.trim().parse().ok())
            .collect();
        Some(
            chain
                .into_iter()
                .rev()
                .find(|ip| !self.trusts(*ip))
                .unwrap_or(peer),
        )
    }
}

/// `10.0.0.0/8`, `192.0.2.1`, `::1`, `fd00::/8`: an address and its prefix.
pub fn parse_network(text: &str) -> Result<(std::net::IpAddr, u8), String> {
    let (addr, bits) = match text.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (text, None),
    };
    let ip: std::net::IpAddr = addr
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not an IP address or network"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let bits = match bits {
        None => max,
        Some(b) => b
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|b| *b <= max)
            .ok_or_else(|| format!("`{text}`: the prefix must be 0 to {max}"))?,
    };
    Ok((ip, bits))
}

pub const DEFAULT_COOKIE: &str = "ticket_stamp";

impl DataConfig {
    /// Validates the data plane's keys. `origin` may be absent only with
    /// `demo` (the demo origin is bound later). `tls`: whether the listener
    /// serves TLS (the binary's key).
    pub fn build(file: DataFile, demo: bool, tls: bool, p: &mut Problems) -> Option<DataConfig> {
        let verify = file.origin_tls.verify.unwrap_or(true);
        let origin = match file.origin {
            None if demo => parse_origin("http://127.0.0.1:9", None, None, true).ok(),
            None => {
                p.add(
                    "origin",
                    "is required (the production origin, e.g. http://127.0.0.1:3000)",
                );
                None
            }
            Some(text) => {
                match parse_origin(&text, file.origin_host, file.origin_tls.sni, verify) {
                    Ok(o) => Some(o),
                    Err(reason) => {
                        p.add("origin", reason);
                        None
                    }
                }
            }
        };
        let t = &file.timeouts;
        let timeouts = Timeouts {
            connect: p.duration(
                "timeouts.connect",
                t.connect.as_deref(),
                Duration::from_secs(5),
            ),
            read: p.duration("timeouts.read", t.read.as_deref(), Duration::from_secs(60)),
            write: p.duration(
                "timeouts.write",
                t.write.as_deref(),
                Duration::from_secs(60),
            ),
            idle: p.duration("timeouts.idle", t.idle.as_deref(), Duration::from_secs(60)),
            client_header: p.duration(
                "timeouts.client_header",
                t.client_header.as_deref(),
                Duration::from_secs(60),
            ),
            client_body: p.duration(
                "timeouts.client_body",
                t.client_body.as_deref(),
                Duration::from_secs(60),
            ),
        };

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
        let cookie_max_age = p.duration(
            "selection.cookie_max_age",
            file.selection.cookie_max_age.as_deref(),
            Duration::from_secs(12 * 3600),
        );

        let r = &file.rewrite;
        let rewrite = Rewrite {
            max_import_map_bytes: r.max_import_map_bytes.unwrap_or(1 << 20),
            memory_limit_bytes: r.memory_limit_bytes.unwrap_or(8 << 20),
            compression_level: r.compression_level.unwrap_or(3),
            production_vary_cookie: r.production_vary_cookie.unwrap_or(false),
            page_cache_bytes: r.page_cache_bytes.unwrap_or(32 << 20),
            variants: r.variants.unwrap_or(crate::snapshot::VARIANTS),
        };
        if !(16..=1_000_000).contains(&rewrite.variants) {
            p.add("rewrite.variants", "must be between 16 and 1000000");
        }
        if rewrite.page_cache_bytes > 0 && rewrite.page_cache_bytes < 1 << 20 {
            p.add(
                "rewrite.page_cache_bytes",
                "must be 0 (off) or at least 1048576",
            );
        }
        if rewrite.max_import_map_bytes < 1024 {
            p.add("rewrite.max_import_map_bytes", "must be at least 1024");
        }
        if rewrite.memory_limit_bytes < 64 * 1024 {
            p.add("rewrite.memory_limit_bytes", "must be at least 65536");
        }
        if rewrite.compression_level > 9 {
            p.add("rewrite.compression_level", "must be between 0 and 9");
        }

        let metrics_token = file.metrics.token_sha256.as_deref().and_then(|h| {
            let mut out = [0u8; 32];
            if h.len() == 64 && hex::decode_to_slice(h, &mut out).is_ok() {
                Some(out)
            } else {
                p.add(
                    "metrics.token_sha256",
                    "must be the 64-hex sha256 of the token (stamp-proxy --hash-token SECRET)",
                );
                None
            }
        });

        let r = &file.reports;
        let report_sample = r.sample.unwrap_or(0.0);
        if !(0.0..=1.0).contains(&report_sample) {
            p.add(
                "reports.sample",
                "must be between 0 and 1 (a share of page views)",
            );
        }
        let mut report_limits = crate::reports::Limits::default();
        if let Some(n) = r.per_second {
            if n > 0.0 && n.is_finite() {
                report_limits.rate = n;
                report_limits.burst = report_limits.burst.max(n * 4.0);
            } else {
                p.add("reports.per_second", "must be a positive number");
            }
        }
        if let Some(n) = r.per_client_per_minute {
            if n > 0.0 && n.is_finite() {
                report_limits.per_client_per_minute = n;
                report_limits.per_client_burst = report_limits.per_client_burst.max(n / 3.0);
            } else {
                p.add("reports.per_client_per_minute", "must be a positive number");
            }
        }
        let mut trusted = Vec::new();
        for t in &file.forwarded.trusted {
            match parse_network(t) {
                Ok(n) => trusted.push(n),
                Err(e) => p.add("forwarded.trusted", e),
            }
        }
        let forwarded = Forwarded {
            enabled: file.forwarded.enabled.unwrap_or(true),
            trusted,
        };
        Some(DataConfig {
            access_log: file.access_log.unwrap_or(false),
            forwarded,
            report_sample,
            report_limits,
            asset_origins: file.asset_origins,
            origin: origin?,
            timeouts,
            selection: Selection {
                cookie_name,
                cookie_max_age,
                confirm_cross_site: file.selection.confirm_cross_site.unwrap_or(true),
            },
            rewrite,
            module_cache_bytes: file.modules.cache_bytes.unwrap_or(64 << 20),
            badge: file.badge.enabled.unwrap_or(true),
            tls,
            metrics_token,
        })
    }
}

/// Why an origin URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OriginError(pub String);

/// Parses and resolves an origin URL.
pub fn parse_origin(
    text: &str,
    host_header: Option<String>,
    sni: Option<String>,
    verify_cert: bool,
) -> Result<Origin, OriginError> {
    let bad = |m: String| OriginError(m);
    let url = url::Url::parse(text).map_err(|e| bad(format!("`{text}` is not a URL: {e}")))?;
    let tls = match url.scheme() {
        "http" => false,
        "https" => true,
        other => {
            return Err(bad(format!(
                "scheme `{other}` is not supported: use http or https"
            )))
        }
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("credentials in the origin URL are not supported".into()));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(bad(format!(
            "`{text}` has a path, query or fragment: give just scheme://host[:port]"
        )));
    }
    // The URL parser reads `http://host:` as the default port; an empty port
    // is a typo, not a choice.
    let authority = text
        .split_once("://")
        .map_or("", |(_, rest)| rest.split('/').next().unwrap_or(""));
    if authority.ends_with(':') {
        return Err(bad(format!("`{text}` has an empty port")));
    }
    let host = url
        .host_str()
        .ok_or_else(|| bad(format!("`{text}` has no host")))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url
        .port_or_known_default()
        .ok_or_else(|| bad(format!("`{text}` has no port")))?;
    let addr = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| bad(format!("cannot resolve `{host}`: {e}")))?
        .next()
        .ok_or_else(|| bad(format!("`{host}` resolves to no address")))?;
    if let Some(h) = &host_header {
        if h.is_empty() || h.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(bad(format!(
                "origin_host `{h}` is not a valid Host header value"
            )));
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

    #[test]
    fn origins_are_validated() {
        let o = parse_origin("https://localhost", None, None, true).unwrap();
        assert!(o.tls);
        assert_eq!(o.port, 443);
        for bad in [
            "localhost:80",
            "ftp://localhost",
            "http://localhost/app",
            "http://user:pw@localhost",
            "http://no-such-host.invalid",
            "http://127.0.0.1:",
            "http://127.0.0.1:/",
        ] {
            assert!(
                parse_origin(bad, None, None, true).is_err(),
                "{bad} accepted"
            );
        }
        assert!(parse_origin("http://127.0.0.1:1", Some("bad host".into()), None, true).is_err());
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let mut p = Problems::new("p.toml");
        let file = DataFile {
            timeouts: FileTimeouts {
                read: Some("soon".into()),
                ..FileTimeouts::default()
            },
            selection: FileSelection {
                cookie_name: Some("a b".into()),
                ..FileSelection::default()
            },
            ..DataFile::default()
        };
        assert!(DataConfig::build(file, false, false, &mut p).is_none());
        let all = p.into_list().join("\n");
        for key in ["`origin`", "`timeouts.read`", "`selection.cookie_name`"] {
            assert!(all.contains(key), "missing {key} in:\n{all}");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod forwarded_tests {
    use super::*;

    #[test]
    fn networks_parse_and_match() {
        let f = Forwarded {
            enabled: true,
            trusted: ["10.0.0.0/8", "192.0.2.7", "fd00::/8", "::1"]
                .iter()
                .map(|t| parse_network(t).unwrap())
                .collect(),
        };
        for ip in ["10.1.2.3", "192.0.2.7", "fd12::1", "::1"] {
            assert!(f.trusts(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["11.0.0.1", "192.0.2.8", "fe80::1", "127.0.0.1"] {
            assert!(!f.trusts(ip.parse().unwrap()), "{ip}");
        }
        assert!(Forwarded {
            enabled: true,
            trusted: vec![parse_network("0.0.0.0/0").unwrap()]
        }
        .trusts("8.8.8.8".parse().unwrap()));
        for bad in ["10.0.0.0/33", "example.com", "10.0.0.0/x", "", "::/129"] {
            assert!(parse_network(bad).is_err(), "{bad}");
        }
        // The client behind trusted proxies: the right-most untrusted hop.
        let mut h = http::HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "6.6.6.6, 203.0.113.9, 10.0.0.2".parse().unwrap(),
        );
        let lb: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(f.client(Some(lb), &h), Some("203.0.113.9".parse().unwrap()));
        let stranger: std::net::IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(
            f.client(Some(stranger), &h),
            Some(stranger),
            "an untrusted peer is the client"
        );
        assert_eq!(f.client(Some(lb), &http::HeaderMap::new()), Some(lb));
    }
}
