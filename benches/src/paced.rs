//! Latency at a fixed request rate, the way wrk2 measures it: `connections`
//! keep-alive connections each send on a fixed schedule, and a response's
//! latency counts from when its request was *due*, so a stall shows up in the
//! percentiles instead of quietly lowering the rate (coordinated omission).
//!
//! wrk (closed loop) answers "how many per second"; at saturation its latency
//! is just queueing. This answers "how much later does a response arrive
//! through the rewriter than through plain proxying", at a load both can carry.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::time::MissedTickBehavior;

#[derive(Debug, Clone)]
pub struct Paced<'a> {
    pub url: &'a str,
    pub connections: usize,
    /// Requests per second over all connections.
    pub rate: f64,
    pub duration: Duration,
    pub headers: &'a [(&'a str, &'a str)],
}

#[derive(Debug, Clone)]
pub struct Latencies {
    pub sorted: Vec<Duration>,
    pub achieved_rate: f64,
}

impl Latencies {
    pub fn pct(&self, p: f64) -> Duration {
        crate::percentile(&self.sorted, p)
    }
}

pub async fn run(load: &Paced<'_>) -> anyhow::Result<Latencies> {
    if load.rate <= 0.0 || load.connections == 0 {
        bail!("a paced run needs a positive rate and at least one connection");
    }
    let period = Duration::from_secs_f64(load.connections as f64 / load.rate);
    let mut headers = reqwest::header::HeaderMap::new();
    for (k, v) in load.headers {
        headers.insert(
            reqwest::header::HeaderName::from_bytes(k.as_bytes())?,
            reqwest::header::HeaderValue::from_str(v)?,
        );
    }
    let mut clients = Vec::with_capacity(load.connections);
    for _ in 0..load.connections {
        // One client per connection: each keeps exactly one keep-alive socket,
        // opened and warmed here, outside the measured window.
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(1)
            .default_headers(headers.clone())
            .build()?;
        client.get(load.url).send().await?.bytes().await?;
        clients.push(client);
    }
    let start = Instant::now() + Duration::from_millis(20);
    let end = start + load.duration;
    let mut tasks = Vec::with_capacity(load.connections);
    for (c, client) in clients.into_iter().enumerate() {
        let url = load.url.to_string();
        // Spread the connections' schedules evenly over one period.
        let first = start + period.mul_f64(c as f64 / load.connections as f64);
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(first.into(), period);
            tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
            let mut lat = Vec::new();
            loop {
                let due: Instant = tick.tick().await.into();
                if due >= end {
                    break;
                }
                let resp = client.get(&url).send().await?;
                let status = resp.status();
                resp.bytes().await?;
                if !(status.is_success() || status.is_redirection()) {
                    bail!("{url} answered {status}");
                }
                lat.push(due.elapsed());
            }
            anyhow::Ok(lat)
        }));
    }
    let mut sorted = Vec::new();
    for t in tasks {
        sorted.extend(t.await.context("a load task panicked")??);
    }
    sorted.sort_unstable();
    let achieved_rate = sorted.len() as f64 / load.duration.as_secs_f64();
    Ok(Latencies {
        sorted,
        achieved_rate,
    })
}
