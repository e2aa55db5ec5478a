//! Load harness: starts a local origin and a release `stamp-proxy`, drives
//! each scenario at fixed concurrency for a fixed time on loopback, and prints
//! requests/s, throughput, p50/p99 latency and the proxy's peak RSS, with the
//! ratios measured in this one run.
//!
//!     cargo build --release --workspace --bins
//!     target/release/stamp-load compare                 # against nginx; see benches/README.md
//!     target/release/stamp-load pages --page-kib 1024
//!     target/release/stamp-load fleet --changes 200     # propagation between two proxies
//!     target/release/stamp-load promote                 # promote time, 1 vs 1000 modules
//!     target/release/stamp-load failover                # Redis Sentinel failover convergence
//!     target/release/stamp-load scale                   # cost of 100, 1,000, 10,000 open tickets

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use stamp_benches::percentile;

mod compare;
mod failover;
mod scale;
use stamp_tests::{seed_dir, Origin, Proxy, Route};

#[derive(Debug, Parser)]
#[command(about = "Measure stamp-proxy: page throughput, fleet propagation, promote time")]
enum Cmd {
    /// stamp-proxy against nginx (proxy_pass, sub_filter, static) and the
    /// origin, on every scenario of benches/README.md, with the ratios
    Compare(compare::Opts),
    /// Start the origin, stamp-proxy and nginx of `compare`, print their
    /// URLs and wait for Ctrl-C (for profiling under a load of your own)
    Serve(compare::Opts),
    /// Origin direct vs passthrough vs stamped page throughput
    Pages(Args),
    /// Time from an upload through proxy A to proxy B serving it (one Redis)
    Fleet {
        #[arg(long, default_value_t = 200)]
        changes: usize,
    },
    /// Time of promote + revert with 1 and with 1000 modules in the ticket
    Promote {
        #[arg(long, default_value_t = 20)]
        rounds: usize,
    },
    /// Time for two proxies to take writes again after the Redis primary of
    /// a Sentinel deployment dies
    Failover(failover::Opts),
    /// What open tickets cost: RSS, the list's first page, a change's
    /// rebuild and the cold start at 100, 1,000 and 10,000 tickets
    Scale(scale::Opts),
}

#[derive(Debug, Parser)]
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
        percentile(&self.latencies, p)
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
    match Cmd::parse() {
        Cmd::Compare(opts) => compare::run(opts).await,
        Cmd::Serve(opts) => compare::serve(opts).await,
        Cmd::Pages(args) => pages(args).await,
        Cmd::Fleet { changes } => fleet(changes).await,
        Cmd::Promote { rounds } => promote(rounds).await,
        Cmd::Failover(opts) => failover::run(opts).await,
        Cmd::Scale(opts) => scale::run(opts).await,
    }
}

async fn put(
    client: &reqwest::Client,
    proxy: &Proxy,
    key: &str,
    path: &str,
    body: String,
) -> anyhow::Result<()> {
    let url = proxy.url(&format!("/__stamp/api/v1/tickets/{key}/modules/{path}"));
    let resp = client.put(url).body(body).send().await?;
    anyhow::ensure!(
        resp.status().is_success(),
        "upload failed: {}",
        resp.status()
    );
    Ok(())
}

async fn fleet(changes: usize) -> anyhow::Result<()> {
    let origin = Origin::start()?;
    origin.route(
        "/",
        Route::html("<script type=module src=/src/main.js></script>"),
    );
    let redis = stamp_tests::RedisServer::start()?;
    let a = Proxy::start(&origin.url, &["--store", &redis.url])?;
    let b = Proxy::start(&origin.url, &["--store", &redis.url])?;
    let client = reqwest::Client::builder().no_proxy().build()?;
    let mut lat = Vec::with_capacity(changes);
    for i in 0..changes {
        let body = format!("export const v = {i};\n");
        let want = stamp_tests::module_url("/src/main.js", &body);
        put(&client, &a, "FLEET-1", "src/main.js", body).await?;
        let t = Instant::now();
        loop {
            let html = client
                .get(b.url("/?dev=FLEET-1"))
                .send()
                .await?
                .text()
                .await?;
            if html.contains(&want) {
                break;
            }
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(5),
                "change {i} never reached B"
            );
        }
        lat.push(t.elapsed());
    }
    lat.sort();
    println!(
        "fleet: {changes} changes, upload acknowledged by A → served by B: median {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    Ok(())
}

async fn promote(rounds: usize) -> anyhow::Result<()> {
    let origin = Origin::start()?;
    let redis = stamp_tests::RedisServer::start()?;
    let dir = tempfile_dir()?;
    let client = reqwest::Client::builder().no_proxy().build()?;
    for (store_name, store) in [
        ("embedded", dir.to_string_lossy().into_owned()),
        ("redis", redis.url.clone()),
    ] {
        let proxy = Proxy::start(&origin.url, &["--store", &store])?;
        for modules in [1usize, 1000] {
            let key = format!("PROMO-{modules}");
            for m in 0..modules {
                put(
                    &client,
                    &proxy,
                    &key,
                    &format!("src/m{m}.js"),
                    format!("export const m = {m};\n"),
                )
                .await?;
            }
            let mut lat = Vec::new();
            for _ in 0..rounds {
                for action in ["promote", "revert"] {
                    // Let the previous change's snapshot rebuild finish, so each
                    // transition is timed on its own.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let url = proxy.url(&format!("/__stamp/api/v1/tickets/{key}/{action}"));
                    let t = Instant::now();
                    let resp = client.post(url).send().await?;
                    anyhow::ensure!(resp.status().is_success(), "{action}: {}", resp.status());
                    lat.push(t.elapsed());
                }
            }
            lat.sort();
            println!(
                "promote/revert on {store_name} with {modules:>4} modules: median {:.2} ms, p95 {:.2} ms ({} transitions)",
                percentile(&lat, 0.5).as_secs_f64() * 1e3,
                percentile(&lat, 0.95).as_secs_f64() * 1e3,
                lat.len()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

async fn pages(args: Args) -> anyhow::Result<()> {
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
