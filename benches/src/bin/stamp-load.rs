//! Load harness: starts a local origin and a release `stamp-proxy`, drives
//! each scenario at fixed concurrency for a fixed time on loopback, and prints
//! requests/s, throughput, p50/p99 latency and the proxy's peak RSS, with the
//! ratios measured in this one run.
//!
//!     cargo build --release --workspace --bins
//!     cargo run --release -p stamp-benches --bin stamp-load -- --page-kib 1024

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use stamp_tests::{seed_dir, Origin, Proxy, Route};

#[derive(Debug, Parser)]
#[command(about = "Drive stamp-proxy with concurrent requests and report ratios")]
struct Args {
    /// Size of the HTML page, KiB
    #[arg(long, default_value_t = 1024)]
    page_kib: usize,
    /// Concurrent connections
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Seconds per scenario
    #[arg(long, default_value_t = 5)]
    seconds: u64,
}

struct Result {
    name: &'static str,
    requests: u64,
    bytes: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Result {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
    fn mibps(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64() / (1024.0 * 1024.0)
    }
    fn pct(&self, p: f64) -> Duration {
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies.get(i).copied().unwrap_or_default()
    }
}

async fn drive(
    name: &'static str,
    url: String,
    concurrency: usize,
    seconds: u64,
) -> anyhow::Result<Result> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    // Warm-up: connections and caches.
    for _ in 0..concurrency {
        client.get(&url).send().await?.bytes().await?;
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut bytes = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                let body = client.get(&url).send().await?.bytes().await?;
                bytes += body.len() as u64;
                lat.push(t.elapsed());
            }
            anyhow::Ok((lat, bytes))
        }));
    }
    let mut latencies = Vec::new();
    let mut bytes = 0;
    for t in tasks {
        let (l, b) = t.await??;
        latencies.extend(l);
        bytes += b;
    }
    let elapsed = start.elapsed();
    latencies.sort();
    Ok(Result {
        name,
        requests: latencies.len() as u64,
        bytes,
        elapsed,
        latencies,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let origin = Origin::start()?;
    let html = stamp_benches::page(args.page_kib * 1024, 40);
    origin.route("/page", Route::html(&html));
    let dir = tempfile_dir()?;
    seed_dir(
        &dir,
        "TKT-1",
        &[("/src/lib/m1.js", "export const m1 = 'ticket';\n")],
    )
    .await?;
    let proxy = Proxy::start(&origin.url, &["--store", &dir.to_string_lossy()])?;
    let proxy = Arc::new(proxy);

    println!(
        "stamp-load: {} KiB page, {} connections, {} s per scenario",
        args.page_kib, args.concurrency, args.seconds
    );
    let mut results = Vec::new();
    for (name, url) in [
        ("origin direct", format!("{}/page", origin.url)),
        ("proxy passthrough", proxy.url("/page")),
        ("proxy stamped (?dev=)", proxy.url("/page?dev=TKT-1")),
    ] {
        results.push(drive(name, url, args.concurrency, args.seconds).await?);
    }
    println!(
        "{:<24} {:>10} {:>10} {:>10} {:>10}",
        "scenario", "req/s", "MiB/s", "p50 ms", "p99 ms"
    );
    for r in &results {
        println!(
            "{:<24} {:>10.1} {:>10.1} {:>10.2} {:>10.2}",
            r.name,
            r.rps(),
            r.mibps(),
            r.pct(0.5).as_secs_f64() * 1e3,
            r.pct(0.99).as_secs_f64() * 1e3
        );
    }
    println!("proxy peak RSS: {} MiB", proxy.peak_rss_kib()? / 1024);
    if let [direct, pass, stamped] = &results[..] {
        println!(
            "ratios: stamped/passthrough throughput = {:.2}, passthrough/origin = {:.2}",
            stamped.rps() / pass.rps(),
            pass.rps() / direct.rps()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("stamp-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
