//! Every integration and end-to-end test, in one binary (one link, one
//! process start): real `stamp-proxy` and `stamp` processes on free loopback
//! ports, a real origin, real Redis and Chromium, and the control API's
//! router called without a socket.
#![allow(clippy::unwrap_used)]

mod api;
mod apps;
mod browser;
mod cli;
mod config_props;
mod contract;
mod docs;
mod failover;
mod faults;
mod layout;
mod matrix;
mod npm;
mod openapi;
mod operations;
mod package;
mod pagecache;
mod passthrough;
mod policies;
mod process;
mod rollout;
mod router;
mod selection;
mod setups;
mod signin;
mod snapshot;
mod stamping;
mod store_conformance;
mod trust;
