//! The plugin kit: what policies and hooks share, so neither borrows from
//! the other. Reading an entry's settings and secrets, an HTTP client, and
//! the GitHub, GitLab and Jira clients.

pub mod github;
pub mod gitlab;
mod http;
pub mod jira;
mod settings;

pub use http::{http_client, no_answer, redacted, transport_error, truncate};
pub use settings::{
    env_is_set, missing_secrets, parse_scope, parse_transition, pick, promotions, Entries, Secret,
    Settings, TRANSITIONS,
};
