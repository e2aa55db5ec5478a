//! `stamp-proxy`: parse flags, load and validate the configuration, run.

use std::process::ExitCode;

use clap::Parser;
use stamp_proxy::config::{Config, Flags};

/// Pingora frees on one worker thread what another allocated (a request's
/// headers, body chunks, the rewriter), and glibc's malloc then serialises
/// both threads on one arena's lock: on a stamped page that was 12% of the
/// CPU and one futex wake-up per request. jemalloc's thread caches take such
/// frees without a lock, and kept the smallest footprint of the allocators
/// measured (benches/README.md). Unprefixed, so the C libraries (zlib-ng,
/// zstd, aws-lc) allocate from it too.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let flags = Flags::parse();
    if let Some(secret) = &flags.hash_token {
        println!("{}", stamp_proxy::control::hash_token(secret));
        return ExitCode::SUCCESS;
    }
    env_logger::Builder::new()
        .filter_level(log::LevelFilter::Info)
        // Its one warning, "Respond header is already sent", is every hit of
        // the stamped-page cache (see stamp_data::pagecache); RUST_LOG can
        // still ask for it.
        .filter_module(
            "pingora_core::protocols::http::v1::server",
            log::LevelFilter::Error,
        )
        .parse_env(env_logger::Env::default())
        .init();
    let cfg = match Config::load(&flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("stamp-proxy: error: {e}");
            eprintln!("hint: see conf/stamp-proxy.toml for every key, or stamp-proxy --help");
            return ExitCode::from(2);
        }
    };
    if flags.check {
        println!("configuration is valid:\n{cfg:#?}");
        return ExitCode::SUCCESS;
    }
    match stamp_proxy::server::run(cfg, flags.demo) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stamp-proxy: error: {e}");
            ExitCode::from(1)
        }
    }
}
