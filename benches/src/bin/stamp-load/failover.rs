//! `stamp-load failover`: how long a fleet on Redis Sentinel takes to take
//! writes again after its primary dies. Two proxies on a primary, two
//! replicas and three real `redis-sentinel`s; each round kills the current
//! primary (SIGKILL), measures the time until each proxy acknowledges an
//! upload again and until an upload through one is served by the other,
//! then brings the dead server back (the sentinels make it a replica).

use std::time::{Duration, Instant};

use stamp_tests::redis_server::SentinelCluster;
use stamp_tests::{module_url, Origin, Proxy, Route};

#[derive(Debug, clap::Args)]
pub struct Opts {
    /// Failovers to measure
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// The sentinels' down-after-milliseconds: the floor of every result
    #[arg(long, default_value_t = 1000)]
    down_after_ms: u64,
}

async fn put(client: &reqwest::Client, proxy: &str, key: &str, body: &str) -> bool {
    client
        .put(format!(
            "{proxy}/__stamp/api/v1/tickets/{key}/modules/src/main.js"
        ))
        .body(body.to_string())
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .is_ok_and(|r| matches!(r.status().as_u16(), 200 | 201))
}

/// Uploads through `proxy` every 10 ms until one is acknowledged.
async fn first_write(client: &reqwest::Client, proxy: &str, key: &str) -> Duration {
    let start = Instant::now();
    let mut i = 0;
    while !put(client, proxy, key, &format!("export const n = {i};\n")).await {
        i += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

pub async fn run(opts: Opts) -> anyhow::Result<()> {
    let down_after = Duration::from_millis(opts.down_after_ms);
    let mut cluster = SentinelCluster::start(down_after)?;
    let origin = Origin::start()?;
    origin.route(
        "/",
        Route::html("<script type=module src=/src/main.js></script>"),
    );
    let a = Proxy::start(&origin.url, &["--store", &cluster.url])?;
    let b = Proxy::start(&origin.url, &["--store", &cluster.url])?;
    let client = reqwest::Client::builder().no_proxy().build()?;
    anyhow::ensure!(
        put(&client, &a.url, "FO-0", "warm").await,
        "no write before the failover"
    );

    println!(
        "failover with down-after-milliseconds {} (3 sentinels, quorum 2, 2 replicas)",
        opts.down_after_ms
    );
    println!("| round | A writes again | B writes again | A's write served by B |");
    println!("|---:|---:|---:|---:|");
    let mut totals = Vec::new();
    for round in 1..=opts.rounds {
        let primary = cluster
            .agreed_primary()
            .ok_or_else(|| anyhow::anyhow!("the sentinels disagree on the primary"))?;
        cluster.servers[primary].kill()?;
        let killed = Instant::now();
        let key = format!("FO-{round}");
        let key_b = format!("FOB-{round}");
        let (ta, tb) = tokio::join!(
            first_write(&client, &a.url, &key),
            first_write(&client, &b.url, &key_b)
        );
        // Propagation through the new primary's change channel.
        let body = format!("export const round = {round};\n");
        anyhow::ensure!(put(&client, &a.url, &key, &body).await, "write failed");
        let wanted = module_url("/src/main.js", &body);
        let seen = loop {
            let html = client
                .get(format!("{}/?dev={key}", b.url))
                .send()
                .await?
                .text()
                .await?;
            if html.contains(&wanted) {
                break killed.elapsed();
            }
            anyhow::ensure!(
                killed.elapsed() < Duration::from_secs(60),
                "B never converged"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        println!(
            "| {round} | {:.2} s | {:.2} s | {:.2} s |",
            ta.as_secs_f64(),
            tb.as_secs_f64(),
            seen.as_secs_f64()
        );
        totals.push(ta.max(tb));

        // The dead server comes back; the sentinels make it a replica, and
        // the next round waits until the new primary has both replicas.
        cluster.servers[primary].restart()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let now = cluster.agreed_primary();
            let ready = match now {
                Some(p) => cluster.servers[p]
                    .cli(&["INFO", "replication"])?
                    .contains("connected_slaves:2"),
                None => false,
            };
            if ready {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "the deployment never healed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    totals.sort();
    if let (Some(min), Some(max)) = (totals.first(), totals.last()) {
        println!(
            "\nslowest proxy back to acknowledged writes: {:.2}-{:.2} s over {} failovers \
             (floor: down-after {:.2} s plus the sentinels' election)",
            min.as_secs_f64(),
            max.as_secs_f64(),
            totals.len(),
            down_after.as_secs_f64()
        );
    }
    Ok(())
}
