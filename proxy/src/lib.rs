//! stamp-proxy: a Pingora reverse proxy that serves a live production app with
//! one ticket's ES modules stamped into its import map.
//!
//! Module map: `config` (flags + TOML → one validated `Config`), `select`
//! (which ticket a request selects), `snapshot` (the in-memory view the
//! request path reads), `rewrite` (the streaming lol_html page rewriter),
//! `importmap` and `csp` (pure merge and policy logic), `decode` (compressed
//! pages), `modules` (ticket module bodies), `internal` (`/__stamp/`
//! endpoints), `service` (the `ProxyHttp` phases), `store` (embedded and
//! Redis), `workflow` (the ticket lifecycle), `server` (process wiring).

pub mod api;
pub mod auth;
pub mod badge;
pub mod config;
pub mod csp;
pub mod decode;
pub mod demo;
pub mod gc;
pub mod history_repo;
pub mod hooks;
pub mod importmap;
pub mod internal;
pub mod metrics;
pub mod modules;
pub mod panel;
pub mod policy;
pub mod preview;
pub mod rewrite;
pub mod select;
pub mod server;
pub mod service;
pub mod settle;
pub mod snapshot;
pub mod store;
pub mod ticket;
pub mod workflow;
