//! stamp-control: the control plane of ticket-stamp: the control API, the
//! QA panel and sign-in, the ticket lifecycle, promotion policies, hooks,
//! and the background jobs (settling released tickets, garbage collection,
//! the production history repository).
//!
//! [`Control::handle`] answers an `http::Request<Bytes>` without a socket;
//! the binary hands it what the data plane receives under `/__stamp/`. No
//! Pingora here.
//!
//! Inside, top-level modules form layers, each using only those below it
//! (a test keeps it so; `proxy/ARCHITECTURE.md` draws them):
//!
//! ```text
//! kinds      actor, change, hook event, share links
//! workflow   the lifecycle as store operations; settle, gc
//! kit        settings, secrets, HTTP client, GitHub and Jira clients
//! policy     hooks    (plugins, built from the kit)
//! effects    the fan-out of every change, the Desk, history repository, jobs
//! identity   tokens, principals, identity providers' configuration
//! config     the control plane's section of the configuration
//! rollouts   releases by steps: their numbers, steps, gate and job
//! web        router, one error type, api, panel, sessions, sign-in
//! control    the composition: Control
//! ```

pub mod config;
mod control;
mod effects;
pub mod hooks;
mod identity;
mod kinds;
mod kit;
pub mod policy;
mod rollouts;
mod web;
mod workflow;

use bytes::Bytes;
use futures::stream::BoxStream;

pub use config::ControlConfig;
pub use control::{Control, ControlError, OriginAccess};
pub use effects::Desk;
pub use identity::{hash_token, FileProvider, FileRoles};
pub use kinds::{Actor, Change, ChangeKind, Event, EventKind};
pub use kit::{env_is_set, Entries};
/// The control API's route table and its OpenAPI description.
pub use web::api::routes as api_routes;
pub use workflow::{overrides, Body as UploadBody, WorkflowError};

/// A response body: complete, or a stream of chunks (server-sent events).
pub enum Body {
    Full(Bytes),
    Stream(BoxStream<'static, Bytes>),
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Full(b) => f.debug_tuple("Full").field(&b.len()).finish(),
            Body::Stream(_) => f.write_str("Stream"),
        }
    }
}

impl Body {
    /// The bytes of a complete body (empty for a stream), for tests.
    pub fn full(&self) -> &[u8] {
        match self {
            Body::Full(b) => b,
            Body::Stream(_) => &[],
        }
    }
}

/// Registers the control plane's metrics, so a scrape lists them from the start.
pub fn register_metrics() {
    workflow::gc::register_metrics();
}
