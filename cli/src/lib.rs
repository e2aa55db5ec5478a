//! The `stamp` command's library: everything the binary (`src/main.rs`)
//! runs, public so that its parsers can be fuzzed and tested from outside
//! (`tests/fuzz`: `stamp.toml` and `package.json` settings, a Rails app's
//! `config/importmap.rb`).

mod bundle;
pub mod cli;
mod client;
pub mod commands;
pub mod config;
pub mod error;
mod git;
mod login;
mod output;
pub mod paths;
pub mod rails;
mod sync;
mod watch;
