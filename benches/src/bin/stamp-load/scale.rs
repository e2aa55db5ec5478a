//! `stamp-load scale`: what open tickets cost. For each ticket count, a
//! fresh release stamp-proxy on the embedded store gets that many tickets
//! of `--modules` modules of about 500 bytes each, uploaded through the API
//! by `--clients` clients; then the proxy's RSS, the first page of the
//! ticket list (time and bytes), a change's rebuild (an upload answered
//! once this proxy serves it: read-your-writes), and a restart: its cold
//! start (until health answers with the snapshot loaded) and RSS after it.
//! With `--store redis`, two proxies share one Redis: tickets are uploaded
//! through A, and each change made through A is also timed until B serves
//! it (the fleet's propagation).

use std::time::{Duration, Instant};

use stamp_tests::redis_server::RedisServer;
use stamp_tests::{Origin, Proxy, Route};

#[derive(Debug, clap::Parser)]
pub struct Opts {
    /// Ticket counts, comma-separated
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    tickets: Vec<usize>,
    /// Modules per ticket
    #[arg(long, default_value_t = 10)]
    modules: usize,
    /// Clients uploading at once
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// The store: `embedded`, or `redis` (two proxies of a fleet on one
    /// Redis, started here)
    #[arg(long, default_value = "embedded")]
    store: String,
}

fn module(t: usize, m: usize) -> String {
    // About 500 bytes, distinct per ticket and module.
    let mut s = format!("// ticket {t} module {m}\nexport const value = {t}{m};\n");
    while s.len() < 500 {
        s.push_str("export function f() { return value * 2 + 1; }\n");
    }
    s
}

async fn upload_all(proxy: &Proxy, from: usize, to: usize, opts: &Opts) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(from));
    let mut tasks = Vec::new();
    for _ in 0..opts.clients {
        let (client, next, base) = (client.clone(), next.clone(), proxy.url(""));
        let modules = opts.modules;
        tasks.push(tokio::spawn(async move {
            loop {
                let t = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if t >= to {
                    return anyhow::Ok(());
                }
                for m in 0..modules {
                    let url =
                        format!("{base}/__stamp/api/v1/tickets/SCALE-{t}/modules/src/m{m}.js");
                    let resp = client.put(url).body(module(t, m)).send().await?;
                    anyhow::ensure!(resp.status().is_success(), "upload: {}", resp.status());
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// The snapshot's ticket count as health reports it.
async fn snapshot_tickets(client: &reqwest::Client, proxy: &Proxy) -> Option<u64> {
    let v: serde_json::Value = client
        .get(proxy.url("/__stamp/health"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    v["snapshot"]["tickets"].as_u64()
}

pub async fn run(opts: Opts) -> anyhow::Result<()> {
    let fleet = match opts.store.as_str() {
        "embedded" => false,
        "redis" => true,
        other => anyhow::bail!("--store {other}: embedded or redis"),
    };
    let origin = Origin::start()?;
    origin.route(
        "/",
        Route::html("<script type=module src=/src/m0.js></script>"),
    );
    let client = reqwest::Client::builder().no_proxy().build()?;
    println!(
        "| open tickets | upload ({} clients) | RSS MiB | list page ms | list page KiB | change served ms |{} cold start s | RSS after restart MiB |",
        opts.clients,
        if fleet { " change served by B ms |" } else { "" }
    );
    println!(
        "|---:|---:|---:|---:|---:|---:|{}---:|---:|",
        if fleet { "---:|" } else { "" }
    );
    for &n in &opts.tickets {
        let dir = std::env::temp_dir().join(format!("stamp-scale-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let redis = fleet.then(RedisServer::start).transpose()?;
        let store = match &redis {
            Some(r) => r.url.clone(),
            None => dir.to_string_lossy().into_owned(),
        };
        let mut proxy = Proxy::start(&origin.url, &["--store", &store])?;
        let peer = fleet
            .then(|| Proxy::start(&origin.url, &["--store", &store]))
            .transpose()?;
        let t = Instant::now();
        upload_all(&proxy, 0, n, &opts).await?;
        let upload = t.elapsed();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let rss = proxy.rss_kib()? as f64 / 1024.0;

        let t = Instant::now();
        let page = client
            .get(proxy.url("/__stamp/api/v1/tickets?limit=100"))
            .send()
            .await?
            .bytes()
            .await?;
        let list = t.elapsed();

        // More changes: each upload is answered once this proxy serves it;
        // a fleet's other proxy is polled until it serves it too.
        let (mut changes, mut at_peer) = (Vec::new(), Vec::new());
        for i in 0..9 {
            let body = module(0, 100 + i);
            let want = stamp_tests::module_url("/src/m0.js", &body);
            let url = proxy.url("/__stamp/api/v1/tickets/SCALE-0/modules/src/m0.js");
            let t = Instant::now();
            let resp = client.put(url).body(body).send().await?;
            anyhow::ensure!(resp.status().is_success());
            changes.push(t.elapsed());
            if let Some(b) = &peer {
                super::compare::wait_for(&client, &b.url("/?dev=SCALE-0"), &want).await?;
                at_peer.push(t.elapsed());
            }
        }
        changes.sort();
        at_peer.sort();
        let change = changes[changes.len() / 2];
        let peer_ms = at_peer
            .get(at_peer.len() / 2)
            .map(|d| format!(" {:.1} |", d.as_secs_f64() * 1e3))
            .unwrap_or_default();

        proxy.signal_and_wait("TERM", Duration::from_secs(30))?;
        let t = Instant::now();
        let restarted = Proxy::start(&origin.url, &["--store", &store])?;
        while snapshot_tickets(&client, &restarted).await < Some(n as u64) {
            anyhow::ensure!(t.elapsed() < Duration::from_secs(120), "no snapshot");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let cold = t.elapsed();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss_after = restarted.rss_kib()? as f64 / 1024.0;
        println!(
            "| {n} | {:.1} s | {rss:.0} | {:.1} | {:.1} | {:.1} |{peer_ms} {:.2} | {rss_after:.0} |",
            upload.as_secs_f64(),
            list.as_secs_f64() * 1e3,
            page.len() as f64 / 1024.0,
            change.as_secs_f64() * 1e3,
            cold.as_secs_f64(),
        );
        drop(restarted);
        drop(peer);
        drop(redis);
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}
