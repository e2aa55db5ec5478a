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
//! badge  probe               the stale-link notice; the probe (what a page ran)
//! snapshot                   what the request path reads: one atomic load
//! extmap  rewrite            external maps; the streaming page rewrite
//! internal  reports          health, metrics, the hand-off to the control plane; page reports
//! modules  live  pagecache   ticket bodies; live reload; stamped pages kept
//! service                    the Pingora phases: a short dispatch per route
//! ```

mod badge;
mod client_io;
pub mod config;
mod control;
mod csp;
mod decode;
mod extmap;
mod importmap;
mod internal;
mod live;
mod metrics;
mod modules;
mod pagecache;
mod probe;
mod reports;
mod rewrite;
mod select;
mod service;
mod snapshot;

pub use client_io::HeaderDeadline;
pub use config::DataConfig;
pub use control::{Body, ControlPlane};
pub use reports::{Limits as ReportLimits, Reports};
pub use service::{Reload, ReloadOutcome, StampProxy, INFO_HEADER};
pub use snapshot::{run_refresher, SnapshotCell};

/// Internals for benchmarks, fuzz targets and tests that measure or check
/// one piece alone (the rewriter, the import-map merge, the selection).
/// Not a stable interface: enable the `testing` feature to use it.
#[cfg(feature = "testing")]
pub mod testing {
    pub use crate::badge::style_hash;
    pub use crate::client_io::follow_reads;
    pub use crate::csp::{page_policies, PagePolicies};
    pub use crate::extmap::{parse_query as map_query, target as map_target};
    pub use crate::importmap::{csp_hash_source, merge};
    pub use crate::probe::script_hash as probe_hash;
    pub use crate::rewrite::{rewrite_str, MetaCsp, PageRewriter, ProbeSpec, Report, RewriteSpec};
    pub use crate::select::{classify, cookie_value, Classified, Selection};
    pub use crate::snapshot::Effective;
}
