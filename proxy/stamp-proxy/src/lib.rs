//! stamp-proxy: the binary that composes the planes. `config` turns flags
//! and the TOML file into one validated [`config::Config`] (each plane
//! validating its own section), `server` wires the store, the data plane's
//! Pingora service, the control plane behind it and the background
//! services, and `demo` is the bundled demo shop.

pub mod config;
pub mod demo;
pub mod logging;
pub mod process;
pub mod reload;
pub mod server;
pub mod services;

pub use stamp_control as control;
pub use stamp_data as data;
pub use stamp_model as model;
pub use stamp_store as store;
