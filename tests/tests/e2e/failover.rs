//! Redis high availability: a fleet of proxies on a Sentinel-managed Redis
//! (a primary, two replicas, three sentinels, all real processes) loses its
//! primary under upload and promote traffic, in each way a primary goes:
//! it dies, it is demoted while it runs (`SENTINEL FAILOVER`, as for
//! maintenance), or it stalls long enough to be replaced and then comes back
//! believing it is still the primary (a VM pause, or a partition that
//! heals). Every proxy must find the new primary by itself, production
//! pages must not change while it happens, and no write a client saw
//! acknowledged may be lost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use stamp_tests::redis_server::SentinelCluster;
use stamp_tests::{client, get_text, module_url, Origin, Proxy, Route};

const PAGE: &str = "<!doctype html><html><head><script type=\"importmap\">{\"imports\":{\"app\":\"/src/main.js\"}}</script><script type=module src=/src/main.js></script></head><body>prod</body></html>";

async fn put(proxy: &str, key: &str, body: &str) -> u16 {
    client()
        .put(format!(
            "{proxy}/__stamp/api/v1/tickets/{key}/modules/src/main.js"
        ))
        .body(body.to_string())
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

async fn promote(proxy: &str, key: &str, from: &str) -> u16 {
    client()
        .post(format!("{proxy}/__stamp/api/v1/tickets/{key}/promote"))
        .header("content-type", "application/json")
        .body(format!("{{\"from\":\"{from}\"}}"))
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

async fn ticket(proxy: &str, key: &str) -> Value {
    client()
        .get(format!("{proxy}/__stamp/api/v1/tickets/{key}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// One acknowledged write: which proxy took it, what, and when.
#[derive(Debug, Clone)]
struct Acked {
    proxy: usize,
    key: String,
    body: String,
    /// The promotion to qa was acknowledged.
    promoted: bool,
    /// A promotion was asked for; unacknowledged, it may or may not have
    /// happened (a write the client saw fail can still have landed).
    asked: bool,
    at: Instant,
}

/// How the primary goes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loss {
    /// SIGKILL: a crashed host.
    Kill,
    /// `SENTINEL FAILOVER`: demoted while it runs and takes writes.
    Demote,
    /// `DEBUG SLEEP`: stalls past the sentinels' patience, then wakes up
    /// and answers the writes queued meanwhile as the primary it was.
    Stall,
}

#[tokio::test]
async fn a_primary_failover_loses_no_acknowledged_write_and_never_changes_production() {
    failover(Loss::Kill).await;
}

#[tokio::test]
async fn a_demoted_primary_loses_no_acknowledged_write() {
    failover(Loss::Demote).await;
}

#[tokio::test]
async fn a_stalled_primary_that_comes_back_loses_no_acknowledged_write() {
    failover(Loss::Stall).await;
}

async fn failover(loss: Loss) {
    let cluster = SentinelCluster::start(Duration::from_millis(1000)).unwrap();
    let origin = Origin::start().unwrap();
    origin.route("/", Route::html(PAGE));
    let proxies: Vec<Proxy> = (0..2)
        .map(|_| Proxy::start(&origin.url, &["--store", &cluster.url]).unwrap())
        .collect();
    let urls: Vec<String> = proxies.iter().map(|p| p.url.clone()).collect();

    // Production has a released ticket, served by both proxies.
    assert_eq!(put(&urls[0], "REL-1", "released").await, 201);
    assert_eq!(promote(&urls[0], "REL-1", "dev").await, 200);
    assert_eq!(promote(&urls[0], "REL-1", "qa").await, 200);
    let released = module_url("/src/main.js", "released");
    let mut production = String::new();
    for url in &urls {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let html = get_text(&format!("{url}/")).await;
            if html.contains(&released) {
                production = html;
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the release never showed on {url}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let writer = {
        let (stop, acked, urls) = (stop.clone(), acked.clone(), urls.clone());
        tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let proxy = i % 2;
                let key = format!("WR-{i}");
                let body = format!("export const w = {i};\n");
                let status = put(&urls[proxy], &key, &body).await;
                if status == 201 {
                    // Every third one also goes to qa, through the other proxy.
                    let asked = i % 3 == 0;
                    let promoted = asked && promote(&urls[1 - proxy], &key, "dev").await == 200;
                    acked.lock().unwrap().push(Acked {
                        proxy,
                        key,
                        body,
                        promoted,
                        asked,
                        at: Instant::now(),
                    });
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let changed: Arc<Mutex<Vec<String>>> = Arc::default();
    let reader = {
        let (stop, changed, urls, production) = (
            stop.clone(),
            changed.clone(),
            urls.clone(),
            production.clone(),
        );
        tokio::spawn(async move {
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for url in &urls {
                    let html = get_text(&format!("{url}/")).await;
                    if html != production {
                        changed.lock().unwrap().push(html);
                    }
                    reads += 1;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            reads
        })
    };

    // Some traffic, then the primary goes.
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().len() < 10 {
        assert!(Instant::now() < deadline, "no traffic before the failover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut cluster = cluster;
    let killed = Instant::now();
    let stalled = match loss {
        Loss::Kill => {
            cluster.servers[0].kill().unwrap();
            None
        }
        Loss::Demote => {
            let out = stamp_tests::redis_server::cli(
                cluster.sentinels[0].port,
                &["SENTINEL", "FAILOVER", stamp_tests::redis_server::SERVICE],
            )
            .unwrap();
            assert!(out.contains("OK"), "SENTINEL FAILOVER: {out}");
            None
        }
        Loss::Stall => {
            let port = cluster.servers[0].port;
            Some(std::thread::spawn(move || {
                stamp_tests::redis_server::cli(port, &["DEBUG", "SLEEP", "5"])
            }))
        }
    };

    // The sentinels name a replica as the primary; after that, both proxies
    // take writes again, without a restart.
    let deadline = killed + Duration::from_secs(60);
    let mut moved: Option<Instant> = None;
    let converged = loop {
        if moved.is_none() && matches!(cluster.agreed_primary(), Some(1 | 2)) {
            moved = Some(Instant::now());
        }
        if let Some(moved) = moved {
            let after: Vec<Acked> = acked
                .lock()
                .unwrap()
                .iter()
                .filter(|a| a.at > moved)
                .cloned()
                .collect();
            let first = |p: usize| after.iter().find(|a| a.proxy == p).map(|a| a.at - killed);
            if after.iter().filter(|a| a.proxy == 0).count() >= 3
                && after.iter().filter(|a| a.proxy == 1).count() >= 3
            {
                break (moved - killed, first(0), first(1));
            }
        }
        assert!(
            Instant::now() < deadline,
            "{loss:?}: the fleet never took writes after the failover:\n{}\n{}",
            proxies[0].log_text(),
            proxies[1].log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let reads = reader.await.unwrap();
    eprintln!(
        "{loss:?}: the sentinels agreed on a new primary after {:?}; first write acknowledged \
         after that: A {:?}, B {:?} (from the start); {} acknowledged in all",
        converged.0,
        converged.1,
        converged.2,
        acked.lock().unwrap().len()
    );
    if std::env::var_os("STAMP_FAILOVER_LOGS").is_some() {
        eprintln!(
            "A:\n{}\nB:\n{}",
            proxies[0].log_text(),
            proxies[1].log_text()
        );
    }

    if let Some(stall) = stalled {
        let _ = stall.join();
    }
    // The sentinels moved the primary to a replica.
    let deadline = Instant::now() + Duration::from_secs(20);
    let primary = loop {
        let primary = cluster.agreed_primary();
        if matches!(primary, Some(1 | 2)) || Instant::now() > deadline {
            break primary;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        matches!(primary, Some(1 | 2)),
        "{loss:?}: primary now: {primary:?}"
    );

    // Production never changed, on either proxy, in any read.
    let changed = changed.lock().unwrap().clone();
    assert!(reads > 50, "too few production reads ({reads})");
    assert!(
        changed.is_empty(),
        "{} of {reads} production reads differed, first:\n{}",
        changed.len(),
        changed[0]
    );

    // Every acknowledged write is there, seen through both proxies.
    let acked = acked.lock().unwrap().clone();
    assert!(acked.iter().any(|a| a.at < killed) && acked.iter().any(|a| a.at > killed));
    for url in &urls {
        for a in &acked {
            let t = ticket(url, &a.key).await;
            // An acknowledged promotion is there; one never asked for did
            // not happen; one that was not acknowledged may have.
            let stage = t["stage"].as_str().unwrap_or("");
            let fine = match (a.promoted, a.asked) {
                (true, _) => stage == "qa",
                (false, true) => stage == "qa" || stage == "dev",
                (false, false) => stage == "dev",
            };
            assert!(fine, "{} through {url} ({a:?}): {t}", a.key);
            // The store has it (above); the proxy's snapshot follows
            // within its resync (the change subscription moved too).
            let want = module_url("/src/main.js", &a.body);
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let html = get_text(&format!("{url}/?dev={}", a.key)).await;
                if html.contains(&want) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} never served through {url}:\n{html}",
                    a.key
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // And the released ticket is still production's, after it all.
    assert_eq!(get_text(&format!("{}/", urls[1])).await, production);
    // Neither proxy found a write of its own missing on the new primary.
    for p in &proxies {
        let log = p.log_text();
        assert!(
            !log.contains("lost writes this proxy acknowledged"),
            "{loss:?}:\n{log}"
        );
    }
}
