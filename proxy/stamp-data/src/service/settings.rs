//! The configuration requests are served with, swappable while serving.
//!
//! Each request takes one [`Settings`] when it starts ([`Ctx::settings`])
//! and keeps it to the end, so a reload never mixes two configurations in
//! one response. [`Reload`] swaps in a new one: what can change while
//! serving does at once; what cannot (the caches' sizes, the report
//! intake's limits) keeps its running value and is named back as needing a
//! restart.
//!
//! [`Ctx::settings`]: super::Ctx

use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::upstreams::peer::HttpPeer;

use crate::config::DataConfig;
use crate::select;

/// What one request is served with: the configuration and what is derived
/// from it once (the origin's peer, the cookie's names).
#[derive(Debug)]
pub struct Settings {
    pub cfg: Arc<DataConfig>,
    pub peer: HttpPeer,
    /// The ticket cookie's name over plain HTTP and over TLS (`__Host-…`).
    pub cookie_names: (String, String),
    pub asset_origins: Arc<[String]>,
    /// Counts reloads: stamped pages kept under one configuration are never
    /// served under another (it is part of the page cache's key).
    pub generation: u64,
}

impl Settings {
    pub fn new(cfg: Arc<DataConfig>, generation: u64) -> Settings {
        let o = &cfg.origin;
        let mut peer = HttpPeer::new(o.addr, o.tls, o.sni.clone());
        peer.options.connection_timeout = Some(cfg.timeouts.connect);
        peer.options.read_timeout = Some(cfg.timeouts.read);
        peer.options.write_timeout = Some(cfg.timeouts.write);
        peer.options.idle_timeout = Some(cfg.timeouts.idle);
        peer.options.verify_cert = o.verify_cert;
        peer.options.verify_hostname = o.verify_cert;
        let cookie_names = (
            select::cookie_name(&cfg.selection.cookie_name, false),
            select::cookie_name(&cfg.selection.cookie_name, true),
        );
        let asset_origins: Arc<[String]> = Arc::from(cfg.asset_origins.clone());
        Settings {
            cfg,
            peer,
            cookie_names,
            asset_origins,
            generation,
        }
    }

    /// The ticket cookie's name for a request over TLS or not.
    pub fn cookie_name(&self, secure: bool) -> &str {
        if secure {
            &self.cookie_names.1
        } else {
            &self.cookie_names.0
        }
    }
}

/// What a reload did: the keys it applied, and the keys whose new value
/// waits for a restart (the running value stays).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub applied: Vec<&'static str>,
    pub needs_restart: Vec<&'static str>,
}

impl Outcome {
    pub fn merge(&mut self, other: Outcome) {
        self.applied.extend(other.applied);
        self.needs_restart.extend(other.needs_restart);
    }
}

/// Swaps the data plane's configuration while it serves.
#[derive(Clone)]
pub struct Reload {
    pub(crate) current: Arc<ArcSwap<Settings>>,
}

impl Reload {
    /// The configuration new requests get.
    pub fn current(&self) -> Arc<DataConfig> {
        self.current.load().cfg.clone()
    }

    /// Applies `new` to the requests that start from now on; returns which
    /// keys changed, and which of them need a restart.
    pub fn apply(&self, mut new: DataConfig) -> Outcome {
        let old = self.current();
        let mut out = Outcome::default();
        macro_rules! live {
            ($($field:ident).+, $name:literal) => {
                if old.$($field).+ != new.$($field).+ {
                    out.applied.push($name);
                }
            };
        }
        macro_rules! fixed {
            ($($field:ident).+, $name:literal) => {
                if old.$($field).+ != new.$($field).+ {
                    out.needs_restart.push($name);
                    new.$($field).+ = old.$($field).+.clone();
                }
            };
        }
        if old.origin != new.origin {
            out.applied.push("origin");
            // The control plane's own reads of the origin (the settler's
            // checks, setup checks) keep the address they started with.
            out.needs_restart
                .push("origin (for the settler and setup checks)");
        }
        // The header deadline wraps the listener, built once.
        fixed!(timeouts.client_header, "timeouts.client_header");
        live!(timeouts, "timeouts");
        live!(selection, "selection");
        fixed!(rewrite.page_cache_bytes, "rewrite.page_cache_bytes");
        // The variant cache is the snapshots', made once.
        fixed!(rewrite.variants, "rewrite.variants");
        live!(rewrite, "rewrite");
        fixed!(module_cache_bytes, "modules.cache_bytes");
        live!(badge, "badge");
        // The listener's TLS is the binary's key (named there); it only
        // follows here.
        new.tls = old.tls;
        live!(metrics_token, "metrics.token_sha256");
        live!(asset_origins, "asset_origins");
        live!(report_sample, "reports.sample");
        fixed!(report_limits, "reports.limits");
        live!(forwarded, "forwarded");
        live!(access_log, "log.access");
        if !out.applied.is_empty() {
            let generation = self.current.load().generation + 1;
            self.current
                .store(Arc::new(Settings::new(Arc::new(new), generation)));
        }
        out
    }
}
