//! stamp-data: the data plane of ticket-stamp. The Pingora service decides
//! per request which ticket (if any) is selected, reads the in-memory view
//! of the store, streams HTML through the lol_html rewriter, serves ticket
//! module bodies and its own health and metrics, and hands the rest of
//! `/__stamp/` to a [`ControlPlane`]. It never depends on the control
//! plane's crate.
//!
//! Top-level modules form layers, each using only those below it (a test
//! keeps it so; `proxy/ARCHITECTURE.md` draws them):
//!
//! ```text
//! config  metrics  control  client_io  decode  csp  select  importmap   (leaves)
//! effective  badge  probe    a variant's overrides; the notice; the probe
//! snapshot                   what the request path reads: one atomic load
//! extmap  rewrite            external maps; the streaming page rewrite
//! internal  reports          health, metrics, the hand-off to the control plane; page reports
//! modules  live  pagecache   ticket bodies; live reload; stamped pages kept
//! service                    the Pingora phases: a short dispatch per route
//! ```
//!
//! The `proxy` feature (on by default) is everything that needs Pingora,
//! the store or the compressors. Without it the crate is the page rewrite
//! and the parsers that face the network, alone: what the fuzz targets
//! build, in a fraction of the time.

// Without the service, much of what the rewrite's neighbours offer it has
// no caller.
#![cfg_attr(not(feature = "proxy"), allow(dead_code, unused_imports))]

mod badge;
mod client_io;
#[cfg(feature = "proxy")]
pub mod config;
#[cfg(feature = "proxy")]
mod control;
mod csp;
#[cfg(feature = "proxy")]
mod decode;
mod effective;
mod extmap;
mod importmap;
#[cfg(feature = "proxy")]
mod internal;
mod linkheader;
#[cfg(feature = "proxy")]
mod live;
#[cfg(feature = "proxy")]
mod metrics;
#[cfg(feature = "proxy")]
mod modules;
#[cfg(feature = "proxy")]
mod pagecache;
mod probe;
#[cfg(feature = "proxy")]
mod reports;
mod rewrite;
mod select;
#[cfg(feature = "proxy")]
mod service;
#[cfg(feature = "proxy")]
mod snapshot;

#[cfg(feature = "proxy")]
pub use client_io::HeaderDeadline;
#[cfg(feature = "proxy")]
pub use config::DataConfig;
#[cfg(feature = "proxy")]
pub use control::{Body, ControlPlane};
#[cfg(feature = "proxy")]
pub use reports::{Limits as ReportLimits, Reports};
#[cfg(feature = "proxy")]
pub use service::{Reload, ReloadOutcome, StampProxy};
#[cfg(feature = "proxy")]
pub use snapshot::{run_refresher, SnapshotCell};

/// Internals for benchmarks, fuzz targets and tests that measure or check
/// one piece alone (the rewriter, the import-map merge, the selection).
/// Not a stable interface: enable the `testing` feature to use it.
#[cfg(feature = "testing")]
pub mod testing {
    pub use crate::badge::style_hash;
    pub use crate::client_io::follow_reads;
    pub use crate::csp::{page_policies, PagePolicies};
    pub use crate::effective::Effective;
    pub use crate::extmap::{parse_query as map_query, target as map_target};
    pub use crate::importmap::{csp_hash_source, merge};
    pub use crate::linkheader::rewrite as link_header;
    pub use crate::probe::script_hash as probe_hash;
    pub use crate::rewrite::{
        find_start, rewrite_str, MetaCsp, PageRewriter, ProbeSpec, Report, RewriteSpec,
    };
    pub use crate::select::{
        classify, cookie_value, no_vary_search_keeping_ours, Classified, NoVarySearch, Selection,
        PARAMS as PROXY_PARAMS,
    };
}
