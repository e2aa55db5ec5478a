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
    let cfg = match Config::load(&flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("stamp-proxy: error: {e}");
            eprintln!("hint: see conf/stamp-proxy.toml for every key, or stamp-proxy --help");
            return ExitCode::from(2);
        }
    };
    if flags.check {
        if flags.quiet {
            println!("configuration is valid");
        } else {
            println!("configuration is valid:\n{cfg:#?}");
        }
        return ExitCode::SUCCESS;
    }
    if cfg.process.daemon && !stamp_proxy::process::is_daemon_child() {
        // Validated first, so a bad file is said here, not in a log.
        return stamp_proxy::process::run_daemon_parent();
    }
    stamp_proxy::logging::init(cfg.log_format);
    match stamp_proxy::server::run(cfg, flags) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stamp-proxy: error: {e}");
            ExitCode::from(1)
        }
    }
}
