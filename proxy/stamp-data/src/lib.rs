//! stamp-data: the data plane of ticket-stamp. The Pingora service decides
//! per request which ticket (if any) is selected (`select`), reads the
//! in-memory view of the store (`snapshot`), streams HTML through the
//! lol_html rewriter (`rewrite`, with the pure `importmap` and `csp` logic
//! and `decode` for compressed pages), serves ticket module bodies
//! (`modules`) and its own health and metrics (`internal`, `metrics`), and
//! hands the rest of `/__stamp/` to a [`control::ControlPlane`]. It never
//! depends on the control plane's crate.

pub mod badge;
pub mod client_io;
pub mod config;
pub mod control;
pub mod csp;
pub mod decode;
pub mod extmap;
pub mod importmap;
pub mod internal;
pub mod live;
pub mod metrics;
pub mod modules;
pub mod pagecache;
pub mod rewrite;
pub mod select;
pub mod service;
pub mod snapshot;

pub use config::DataConfig;
pub use control::{Body, ControlPlane};
pub use service::StampProxy;
pub use snapshot::{run_refresher, SnapshotCell};
