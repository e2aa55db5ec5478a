//! One conformance suite run against both `Store` implementations: every case
//! in `cases` becomes `embedded::<case>` and `redis::<case>`, so the two can
//! only drift apart by failing a test. Store-specific behaviour (persistence
//! across reopen, the file lock, surviving a Redis outage) follows at the end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use bytes::Bytes;
use stamp_model::ticket::{set_id, Hash, ModuleRef, OverrideSet, Stage, TicketKey};
use stamp_store::{
    self, now_ms, Commit, HistoryEvent, OverlayOp, SharedStore, Store, StoreError, TicketRecord,
};
use stamp_tests::redis_server::RedisServer;
use tokio::sync::watch;

use stamp_control::{Actor, Desk};
use stamp_model::lifecycle::Transition;
use stamp_store::{StoreUsage, SweepReport};
use std::sync::atomic::{AtomicBool, Ordering};

const PREFIX: &str = "ticket-stamp";
/// How long a notification or a recovery may take before the test fails.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long any one operation may take while Redis is down (the store's own
/// bound is 5 s; a hang would blow through this).
const OUTAGE_OP_BOUND: Duration = Duration::from_secs(8);

struct Fixture {
    store: SharedStore,
    /// A second handle on the same data. For Redis, a separate instance, like
    /// another proxy of the fleet; the embedded store allows one per file, so
    /// there it is the same instance.
    peer: SharedStore,
    _dir: Option<tempfile::TempDir>,
    _redis: Option<RedisServer>,
}

impl Fixture {
    async fn embedded() -> anyhow::Result<Fixture> {
        let dir = tempfile::tempdir()?;
        let location = dir.path().join("store");
        let location = location.to_str().context("temp path is not UTF-8")?;
        let store = stamp_store::open(location, PREFIX).await?;
        Ok(Fixture {
            peer: Arc::clone(&store),
            store,
            _dir: Some(dir),
            _redis: None,
        })
    }

    async fn redis() -> anyhow::Result<Fixture> {
        let server = RedisServer::start()?;
        let store = stamp_store::open(&server.url, PREFIX).await?;
        let peer = stamp_store::open(&server.url, PREFIX).await?;
        Ok(Fixture {
            store,
            peer,
            _dir: None,
            _redis: Some(server),
        })
    }
}

fn key(s: &str) -> anyhow::Result<TicketKey> {
    Ok(TicketKey::parse(s)?)
}

fn record(key: &TicketKey, version: u64, stage: Stage) -> TicketRecord {
    TicketRecord {
        stage,
        version,
        ..TicketRecord::new(key.clone(), set_id(&OverrideSet::new()), now_ms())
    }
}

fn event(name: &str, detail: &str) -> HistoryEvent {
    HistoryEvent {
        at_ms: now_ms(),
        event: name.to_string(),
        from: Some(Stage::Dev),
        to: Some(Stage::Qa),
        actor: "ci".to_string(),
        commit: Some("abc123".to_string()),
        branch: None,
        role: None,
        source: None,
        detail: Some(detail.to_string()),
    }
}

fn commit(
    key: &TicketKey,
    expected: Option<u64>,
    overlay: OverlayOp,
    event: Option<HistoryEvent>,
) -> Commit {
    Commit {
        ticket: record(key, expected.unwrap_or(0) + 1, Stage::Dev),
        expected_version: expected,
        overlay,
        event,
    }
}

async fn create(store: &dyn Store, key: &TicketKey) -> anyhow::Result<u64> {
    Ok(store
        .commit(commit(
            key,
            None,
            OverlayOp::Keep,
            Some(event("create", "")),
        ))
        .await?)
}

fn expect_conflict(
    result: Result<u64, StoreError>,
    want_key: &TicketKey,
    want_expected: Option<u64>,
    want_found: Option<u64>,
) -> anyhow::Result<()> {
    match result {
        Err(StoreError::Conflict {
            key,
            expected,
            found,
        }) => {
            ensure!(&key == want_key, "conflict on {key}, wanted {want_key}");
            ensure!(expected == want_expected, "expected {expected:?}");
            ensure!(
                found == want_found,
                "found {found:?}, wanted {want_found:?}"
            );
            Ok(())
        }
        other => bail!("wanted a conflict, got {other:?}"),
    }
}

async fn wait_for_version(rx: &mut watch::Receiver<u64>, at_least: u64) -> anyhow::Result<u64> {
    let seen = tokio::time::timeout(NOTIFY_TIMEOUT, rx.wait_for(|v| *v >= at_least))
        .await
        .with_context(|| {
            format!("no notification of version {at_least} within {NOTIFY_TIMEOUT:?}")
        })?
        .context("store dropped its change channel")?;
    Ok(*seen)
}

/// Everything a refused commit must leave alone.
#[derive(Debug, PartialEq)]
struct Observed {
    version: u64,
    tickets: Vec<TicketRecord>,
    overlay: Vec<TicketKey>,
    history: Vec<HistoryEvent>,
}

async fn observe(store: &dyn Store, key: &TicketKey) -> anyhow::Result<Observed> {
    let state = store.state().await?;
    ensure!(state.version == store.version().await?);
    Ok(Observed {
        version: state.version,
        tickets: state.tickets,
        overlay: state.overlay,
        history: store.history(key).await?,
    })
}

mod cases {
    use super::*;

    pub async fn module_put_get_dedup_missing(fx: &Fixture) -> anyhow::Result<()> {
        let s = &*fx.store;
        let a = Bytes::from_static(b"export const greet = () => 'hi';\n");
        let b = Bytes::from_static(b"export default 42;\n");
        let ha = s.put_module(a.clone()).await?;
        assert_eq!(ha, Hash::of(&a));
        assert_eq!(s.get_module(&ha).await?, Some(a.clone()));
        // Idempotent: same address, same body.
        assert_eq!(s.put_module(a.clone()).await?, ha);
        assert_eq!(s.get_module(&ha).await?, Some(a.clone()));
        // Visible through another instance.
        assert_eq!(fx.peer.get_module(&ha).await?, Some(a));

        let hb = Hash::of(&b);
        assert_eq!(s.get_module(&hb).await?, None);
        assert_eq!(s.missing_modules(&[ha, hb, ha, hb]).await?, vec![hb]);
        assert_eq!(s.missing_modules(&[]).await?, Vec::<Hash>::new());
        s.put_module(b).await?;
        assert_eq!(s.missing_modules(&[ha, hb]).await?, Vec::<Hash>::new());
        // Empty bodies are legitimate modules too.
        let he = s.put_module(Bytes::new()).await?;
        assert_eq!(s.get_module(&he).await?, Some(Bytes::new()));
        Ok(())
    }

    pub async fn set_put_get_round_trip(fx: &Fixture) -> anyhow::Result<()> {
        let s = &*fx.store;
        let mut set = OverrideSet::new();
        set.insert(
            "/src/lib/greet.js".to_string(),
            ModuleRef {
                path: "/src/lib/greet.js".to_string(),
                hash: Hash::of(b"greet"),
                size: 5,
            },
        );
        set.insert(
            "@shop/cart".to_string(),
            ModuleRef {
                path: "/src/cart/index.js".to_string(),
                hash: Hash::of(b"cart"),
                size: 4,
            },
        );
        let id = s.put_set(&set).await?;
        assert_eq!(id, set_id(&set));
        assert_eq!(s.get_set(&id).await?, Some(set.clone()));
        assert_eq!(s.put_set(&set).await?, id);
        assert_eq!(fx.peer.get_set(&id).await?, Some(set));

        let empty = OverrideSet::new();
        let empty_id = s.put_set(&empty).await?;
        assert_eq!(s.get_set(&empty_id).await?, Some(empty));
        assert_eq!(s.get_set(&Hash::of(b"no such set")).await?, None);
        Ok(())
    }

    pub async fn create_then_conflicting_create(fx: &Fixture) -> anyhow::Result<()> {
        let s = &*fx.store;
        let k = key("TKT-1")?;
        assert_eq!(s.get_ticket(&k).await?, None);
        create(s, &k).await?;
        let stored = s.get_ticket(&k).await?.context("created ticket missing")?;
        assert_eq!(stored.version, 1);
        let before = observe(s, &k).await?;

        let again = fx
            .peer
            .commit(commit(
                &k,
                None,
                OverlayOp::Append,
                Some(event("create", "2nd")),
            ))
            .await;
        expect_conflict(again, &k, None, Some(1))?;
        assert_eq!(observe(s, &k).await?, before);
        assert_eq!(s.get_ticket(&k).await?, Some(stored));
        Ok(())
    }

    pub async fn stale_commit_changes_nothing(fx: &Fixture) -> anyhow::Result<()> {
        let s = &*fx.store;
        let k = key("TKT-2")?;
        create(s, &k).await?;
        s.commit(commit(
            &k,
            Some(1),
            OverlayOp::Append,
            Some(event("upload", "")),
        ))
        .await?;
        let before = observe(s, &k).await?;
        assert_eq!(before.history.len(), 2);

        // A writer that read version 1 after someone else moved it to 2.
        let stale = s
            .commit(commit(
                &k,
                Some(1),
                OverlayOp::Remove,
                Some(event("promote", "")),
            ))
            .await;
        expect_conflict(stale, &k, Some(1), Some(2))?;
        assert_eq!(observe(s, &k).await?, before);

        // Right expected version but a new version that is not expected + 1.
        let mut skip = commit(&k, Some(2), OverlayOp::Remove, Some(event("promote", "")));
        skip.ticket.version = 7;
        expect_conflict(s.commit(skip).await, &k, Some(2), Some(2))?;
        assert_eq!(observe(s, &k).await?, before);

        // Expecting a ticket that does not exist.
        let ghost = key("TKT-404")?;
        expect_conflict(
            s.commit(commit(&ghost, Some(3), OverlayOp::Append, None))
                .await,
            &ghost,
            Some(3),
            None,
        )?;
        assert_eq!(observe(s, &k).await?, before);
        assert_eq!(s.get_ticket(&ghost).await?, None);
        assert_eq!(s.history(&ghost).await?, Vec::new());
        Ok(())
    }

    pub async fn concurrent_commits_exactly_one_wins(fx: &Fixture) -> anyhow::Result<()> {
        let k = key("RACE-1")?;
        create(&*fx.store, &k).await?;
        let mut tasks = Vec::new();
        for i in 0..8 {
            // Half through each instance: for Redis that is two fleet members.
            let store = if i % 2 == 0 {
                Arc::clone(&fx.store)
            } else {
                Arc::clone(&fx.peer)
            };
            let c = commit(
                &k,
                Some(1),
                OverlayOp::Append,
                Some(event("upload", &format!("writer {i}"))),
            );
            tasks.push(tokio::spawn(async move { store.commit(c).await }));
        }
        let mut wins = 0;
        for task in tasks {
            match task.await? {
                Ok(_) => wins += 1,
                conflict => expect_conflict(conflict, &k, Some(1), Some(2))?,
            }
        }
        assert_eq!(wins, 1, "exactly one writer must win");
        let state = fx.store.state().await?;
        assert_eq!(state.version, 2);
        assert_eq!(state.overlay, vec![k.clone()]);
        let history = fx.store.history(&k).await?;
        assert_eq!(history.len(), 2, "{history:?}");
        assert_eq!(fx.store.get_ticket(&k).await?.map(|t| t.version), Some(2));
        Ok(())
    }

    pub async fn overlay_append_remove_ordering(fx: &Fixture) -> anyhow::Result<()> {
        let s = &*fx.store;
        let a = key("OVL-1")?;
        let b = key("OVL-2")?;
        create(s, &a).await?;
        create(s, &b).await?;
        assert_eq!(s.state().await?.overlay, Vec::<TicketKey>::new());

        let mut va = 1;
        let mut vb = 1;
        let step = |store: SharedStore, k: TicketKey, v: u64, op: OverlayOp| async move {
            store.commit(commit(&k, Some(v), op, None)).await
        };
        step(Arc::clone(&fx.store), a.clone(), va, OverlayOp::Append).await?;
        va += 1;
        assert_eq!(s.state().await?.overlay, vec![a.clone()]);
        step(Arc::clone(&fx.store), b.clone(), vb, OverlayOp::Append).await?;
        vb += 1;
        assert_eq!(s.state().await?.overlay, vec![a.clone(), b.clone()]);
        // Re-releasing moves the ticket to the end (it wins again).
        step(Arc::clone(&fx.peer), a.clone(), va, OverlayOp::Append).await?;
        va += 1;
        assert_eq!(s.state().await?.overlay, vec![b.clone(), a.clone()]);
        step(Arc::clone(&fx.store), a.clone(), va, OverlayOp::Keep).await?;
        va += 1;
        assert_eq!(s.state().await?.overlay, vec![b.clone(), a.clone()]);
        step(Arc::clone(&fx.store), b.clone(), vb, OverlayOp::Remove).await?;
        vb += 1;
        assert_eq!(s.state().await?.overlay, vec![a.clone()]);
        // Removing an absent ticket is a no-op on the overlay, not an error.
        step(Arc::clone(&fx.store), b.clone(), vb, OverlayOp::Remove).await?;
        assert_eq!(s.state().await?.overlay, vec![a.clone()]);
        step(Arc::clone(&fx.store), a.clone(), va, OverlayOp::Remove).await?;
        assert_eq!(s.state().await?.overlay, Vec::<TicketKey>::new());
        Ok(())
    }

    pub async fn history_appended_in_order(fx: &Fixture) -> anyhow::Result<()> {
        let s = &*fx.store;
        let k = key("HIS-1")?;
        let other = key("HIS-2")?;
        let mut expected_events = Vec::new();

        let first = event("create", "first");
        s.commit(commit(&k, None, OverlayOp::Keep, Some(first.clone())))
            .await?;
        expected_events.push(first);
        create(s, &other).await?;
        // The ticket is at version 1; each step commits the next version.
        for (version, name) in (1u64..).zip(["upload", "promote", "", "sign-off", "close"]) {
            // An empty name stands for a commit without an event.
            let ev = (!name.is_empty()).then(|| {
                let mut e = event(name, &format!("step {version}"));
                e.branch = Some(format!("feature/{version}"));
                e.from = None;
                e
            });
            s.commit(commit(&k, Some(version), OverlayOp::Keep, ev.clone()))
                .await?;
            expected_events.extend(ev);
        }
        assert_eq!(s.history(&k).await?, expected_events);
        assert_eq!(fx.peer.history(&k).await?, expected_events);
        // Another ticket's history is its own.
        assert_eq!(s.history(&other).await?.len(), 1);
        assert_eq!(s.history(&key("HIS-3")?).await?, Vec::new());
        Ok(())
    }

    pub async fn state_version_increases_per_commit(fx: &Fixture) -> anyhow::Result<()> {
        let s = &*fx.store;
        let empty = s.state().await?;
        assert_eq!(empty.version, 0);
        assert!(empty.tickets.is_empty() && empty.overlay.is_empty());
        assert_eq!(s.version().await?, 0);

        let keys = [key("VER-2")?, key("VER-1")?];
        let mut last = 0;
        for k in &keys {
            let v = create(s, k).await?;
            assert_eq!(v, last + 1);
            last = v;
            assert_eq!(s.state().await?.version, v);
            assert_eq!(fx.peer.version().await?, v);
        }
        let v = s
            .commit(commit(&keys[0], Some(1), OverlayOp::Append, None))
            .await?;
        assert_eq!(v, last + 1);
        // Refused commits do not count.
        expect_conflict(
            s.commit(commit(&keys[0], Some(1), OverlayOp::Append, None))
                .await,
            &keys[0],
            Some(1),
            Some(2),
        )?;
        let state = s.state().await?;
        assert_eq!(state.version, v);
        // Both stores list tickets in key order.
        let listed: Vec<_> = state.tickets.iter().map(|t| t.key.clone()).collect();
        assert_eq!(listed, vec![keys[1].clone(), keys[0].clone()]);
        assert_eq!(state.tickets[1].version, 2);
        assert_eq!(state.overlay, vec![keys[0].clone()]);
        Ok(())
    }

    pub async fn subscribe_sees_commits(fx: &Fixture) -> anyhow::Result<()> {
        // Subscribed through the other instance: for Redis, the notification
        // has to cross pub/sub.
        let mut rx = fx.peer.subscribe();
        let mut local = fx.store.subscribe();
        let k = key("SUB-1")?;
        let v1 = create(&*fx.store, &k).await?;
        assert_eq!(wait_for_version(&mut rx, v1).await?, v1);
        assert_eq!(wait_for_version(&mut local, v1).await?, v1);
        let v2 = fx
            .store
            .commit(commit(&k, Some(1), OverlayOp::Append, None))
            .await?;
        assert_eq!(wait_for_version(&mut rx, v2).await?, v2);
        assert_eq!(wait_for_version(&mut local, v2).await?, v2);
        Ok(())
    }

    // ---- Retention and garbage collection -------------------------------

    fn js(text: &str) -> Bytes {
        Bytes::from(format!("export const v = {text:?};\n"))
    }

    fn one(spec: &str, body: &Bytes) -> OverrideSet {
        let mut set = OverrideSet::new();
        set.insert(
            spec.to_string(),
            ModuleRef {
                path: spec.to_string(),
                hash: Hash::of(body),
                size: body.len() as u64,
            },
        );
        set
    }

    fn summary(detail: &str) -> HistoryEvent {
        HistoryEvent {
            at_ms: now_ms(),
            event: "purged".to_string(),
            from: Some(Stage::Closed),
            to: None,
            actor: "gc".to_string(),
            commit: None,
            branch: None,
            role: None,
            source: None,
            detail: Some(detail.to_string()),
        }
    }

    /// A moment strictly between everything stored before and after it.
    async fn cutoff() -> u64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let at = now_ms();
        tokio::time::sleep(Duration::from_millis(20)).await;
        at
    }

    /// Every set a ticket references, and every body in them, is stored.
    async fn check_references(store: &dyn Store) -> anyhow::Result<()> {
        for t in store.state().await?.tickets {
            for id in [Some(t.dev), t.qa, t.prod].into_iter().flatten() {
                let set = store
                    .get_set(&id)
                    .await?
                    .with_context(|| format!("{} references set {id}, which is gone", t.key))?;
                for (spec, m) in set {
                    ensure!(
                        store.get_module(&m.hash).await?.is_some(),
                        "{} overrides {spec} with body {}, which is gone",
                        t.key,
                        m.hash
                    );
                }
            }
        }
        Ok(())
    }

    pub async fn sweep_deletes_only_unreferenced_old_entries(fx: &Fixture) -> anyhow::Result<()> {
        let s = &*fx.store;
        let live = js("live");
        let dropped = js("in a set nobody references");
        let lonely = js("in no set");
        let kept_by_recent_set = js("old, but a recent set references it");
        let re_put = js("old, stored again after the cutoff");
        let claimed = js("old, claimed after the cutoff");
        let fresh = js("stored after the cutoff");
        for b in [
            &live,
            &dropped,
            &lonely,
            &kept_by_recent_set,
            &re_put,
            &claimed,
        ] {
            s.put_module(b.clone()).await?;
        }
        let live_set = s.put_set(&one("/src/live.js", &live)).await?;
        let dropped_set = s.put_set(&one("/src/dropped.js", &dropped)).await?;
        let re_put_set = one("/src/again.js", &re_put);
        s.put_set(&re_put_set).await?;
        let k = key("GC-1")?;
        let mut t = record(&k, 1, Stage::Dev);
        t.dev = live_set;
        s.commit(Commit {
            ticket: t,
            expected_version: None,
            overlay: OverlayOp::Keep,
            event: None,
        })
        .await?;

        let keep_after = cutoff().await;
        s.put_module(fresh.clone()).await?;
        let recent_set = s
            .put_set(&one("/src/recent.js", &kept_by_recent_set))
            .await?;
        // Storing again restarts the grace window: an upload re-using a body
        // (or a set) stored long ago must not lose it before its commit.
        assert_eq!(s.put_module(re_put.clone()).await?, Hash::of(&re_put));
        let re_put_id = s.put_set(&re_put_set).await?;
        assert_eq!(
            s.claim_module(&Hash::of(&claimed)).await?,
            Some(claimed.len() as u64)
        );
        // Claiming what is not stored stores nothing.
        let ghost = js("never stored");
        assert_eq!(s.claim_module(&Hash::of(&ghost)).await?, None);
        assert_eq!(s.get_module(&Hash::of(&ghost)).await?, None);

        let report = fx.peer.sweep(keep_after).await?;
        assert_eq!(
            report,
            SweepReport {
                modules_deleted: 2,
                module_bytes_freed: (dropped.len() + lonely.len()) as u64,
                sets_deleted: 1,
            }
        );
        for (name, body, present) in [
            ("live", &live, true),
            ("dropped", &dropped, false),
            ("lonely", &lonely, false),
            ("kept by a recent set", &kept_by_recent_set, true),
            ("stored again", &re_put, true),
            ("claimed", &claimed, true),
            ("fresh", &fresh, true),
        ] {
            let found = s.get_module(&Hash::of(body)).await?;
            ensure!(
                found.is_some() == present,
                "{name}: present = {}",
                found.is_some()
            );
        }
        assert!(s.get_set(&live_set).await?.is_some());
        assert_eq!(s.get_set(&dropped_set).await?, None);
        assert!(s.get_set(&recent_set).await?.is_some());
        assert!(s.get_set(&re_put_id).await?.is_some());
        // Nothing left to do for the same cutoff.
        assert_eq!(s.sweep(keep_after).await?, SweepReport::default());

        // Once everything is old, exactly what the ticket references stays.
        let report = s.sweep(cutoff().await).await?;
        assert_eq!(report.modules_deleted, 4, "{report:?}");
        assert_eq!(report.sets_deleted, 2, "{report:?}");
        check_references(s).await?;
        let usage = s.usage().await?;
        assert_eq!((usage.modules, usage.sets), (1, 1), "{usage:?}");
        assert_eq!(usage.module_bytes, live.len() as u64);
        Ok(())
    }

    pub async fn every_stage_and_closed_tickets_keep_their_bodies(
        fx: &Fixture,
    ) -> anyhow::Result<()> {
        let store = &fx.store;
        let actor = Actor::named("ci");
        let spec = "/src/a.js";
        // Released: v1 is only in the qa and prod snapshots (and the overlay)
        // once dev moves on to v2.
        let released = key("GCREL-1")?;
        let (v1, v2) = (js("v1"), js("v2"));
        Desk::detached(store.clone())
            .upload(&released, spec, spec, v1.clone(), &actor)
            .await?;
        Desk::detached(store.clone())
            .transition(&released, Transition::Promote, None, &actor)
            .await?;
        Desk::detached(store.clone())
            .transition(&released, Transition::Promote, None, &actor)
            .await?;
        Desk::detached(store.clone())
            .upload(&released, spec, spec, v2.clone(), &actor)
            .await?;
        assert_eq!(store.state().await?.overlay, vec![released.clone()]);
        // Closed: kept whole until purged.
        let closed = key("GCCLO-1")?;
        let c = js("closed");
        Desk::detached(store.clone())
            .upload(&closed, spec, spec, c.clone(), &actor)
            .await?;
        let t = Desk::detached(store.clone())
            .transition(&closed, Transition::Close, None, &actor)
            .await?;

        let report = fx.peer.sweep(cutoff().await).await?;
        // Every set and body is referenced by some stage of some ticket.
        assert_eq!(report, SweepReport::default());
        for b in [&v1, &v2, &c] {
            assert!(store.get_module(&Hash::of(b)).await?.is_some());
        }
        check_references(&**store).await?;

        assert!(
            store
                .purge_ticket(&closed, t.ticket.version, summary(""))
                .await?
        );
        let report = fx.peer.sweep(cutoff().await).await?;
        assert_eq!(
            report,
            SweepReport {
                modules_deleted: 1,
                module_bytes_freed: c.len() as u64,
                sets_deleted: 1,
            }
        );
        assert_eq!(store.get_module(&Hash::of(&c)).await?, None);
        assert!(store.get_module(&Hash::of(&v1)).await?.is_some());
        check_references(&**store).await?;
        Ok(())
    }

    pub async fn purge_removes_only_a_closed_ticket_and_keeps_its_history(
        fx: &Fixture,
    ) -> anyhow::Result<()> {
        let s = &*fx.store;
        let k = key("PURGE-1")?;
        create(s, &k).await?;
        let before = observe(s, &k).await?;
        // Open (dev): refused, nothing changes.
        assert!(!s.purge_ticket(&k, 1, summary("no")).await?);
        assert_eq!(observe(s, &k).await?, before);
        assert!(!s.purge_ticket(&key("PURGE-404")?, 1, summary("no")).await?);
        assert_eq!(observe(s, &k).await?, before);

        s.commit(Commit {
            ticket: record(&k, 2, Stage::Closed),
            expected_version: Some(1),
            overlay: OverlayOp::Keep,
            event: Some(event("close", "")),
        })
        .await?;
        let closed = observe(s, &k).await?;
        // Closed, but not at the version the collector read (it was
        // re-opened and closed again meanwhile): refused.
        assert!(!s.purge_ticket(&k, 1, summary("no")).await?);
        assert_eq!(observe(s, &k).await?, closed);

        let other = key("PURGE-2")?;
        create(s, &other).await?;
        let mut rx = fx.peer.subscribe();
        let version = s.version().await?;
        let purged = summary("closed for longer than 30days: purged with 2 history events");
        assert!(s.purge_ticket(&k, 2, purged.clone()).await?);
        assert_eq!(s.version().await?, version + 1);
        assert_eq!(wait_for_version(&mut rx, version + 1).await?, version + 1);
        assert_eq!(s.get_ticket(&k).await?, None);
        let state = s.state().await?;
        assert_eq!(state.version, version + 1);
        let listed: Vec<_> = state.tickets.iter().map(|t| t.key.clone()).collect();
        assert_eq!(listed, vec![other.clone()]);
        let mut history = closed.history.clone();
        history.push(purged);
        assert_eq!(s.history(&k).await?, history);
        assert_eq!(fx.peer.history(&k).await?, history);
        // Gone: a second purge is refused.
        assert!(!s.purge_ticket(&k, 2, summary("no")).await?);
        assert_eq!(s.version().await?, version + 1);
        // The key can start over; its history carries on.
        create(s, &k).await?;
        assert_eq!(s.history(&k).await?.len(), history.len() + 1);

        // A closed ticket listed in the overlay (the workflow never does
        // that) does not outlive its record there.
        let listed = key("PURGE-3")?;
        s.commit(Commit {
            ticket: record(&listed, 1, Stage::Closed),
            expected_version: None,
            overlay: OverlayOp::Append,
            event: None,
        })
        .await?;
        assert_eq!(s.state().await?.overlay, vec![listed.clone()]);
        assert!(s.purge_ticket(&listed, 1, summary("")).await?);
        assert_eq!(s.state().await?.overlay, Vec::<TicketKey>::new());
        Ok(())
    }

    pub async fn usage_counts_what_is_stored(fx: &Fixture) -> anyhow::Result<()> {
        let s = &*fx.store;
        assert_eq!(s.usage().await?, StoreUsage::default());
        let (a, b) = (js("a"), js("bb"));
        s.put_module(a.clone()).await?;
        s.put_module(b.clone()).await?;
        s.put_module(a.clone()).await?;
        s.put_module(Bytes::new()).await?;
        s.put_set(&one("/src/a.js", &a)).await?;
        s.put_set(&OverrideSet::new()).await?;
        s.put_set(&OverrideSet::new()).await?;
        create(s, &key("USE-1")?).await?;
        s.commit(Commit {
            ticket: record(&key("USE-2")?, 1, Stage::Closed),
            expected_version: None,
            overlay: OverlayOp::Keep,
            event: None,
        })
        .await?;
        let want = StoreUsage {
            modules: 3,
            module_bytes: (a.len() + b.len()) as u64,
            sets: 2,
            tickets: 2,
            closed_tickets: 1,
        };
        assert_eq!(s.usage().await?, want);
        assert_eq!(fx.peer.usage().await?, want);
        Ok(())
    }

    /// A collector sweeping continuously while uploads re-use bodies and sets
    /// that are older than the grace window and, at that moment, referenced
    /// by no ticket: exactly the case where an upload's put (body, then set)
    /// and its commit are separated by a sweep. Every round overlaps at least
    /// one sweep. A store that did not restart the grace window on every put
    /// loses the body or the set here.
    pub async fn sweeping_while_uploading_never_loses_a_referenced_body(
        fx: &Fixture,
    ) -> anyhow::Result<()> {
        const GRACE: Duration = Duration::from_secs(5);
        const ROUNDS: usize = 48;
        let actor = Actor::named("ci");
        let spec = "/src/shared.js";
        let bodies: Vec<Bytes> = (0..ROUNDS).map(|i| js(&format!("round {i}"))).collect();
        // Each body is held by its own ticket, in a set identical to the one
        // the racing upload will store.
        let holders = (0..ROUNDS)
            .map(|i| key(&format!("HOLD-{i}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        for (holder, body) in holders.iter().zip(&bodies) {
            Desk::detached(fx.store.clone())
                .upload(holder, spec, spec, body.clone(), &actor)
                .await?;
        }
        tokio::time::sleep(GRACE + Duration::from_millis(250)).await;

        let (sweeps_tx, mut sweeps) = watch::channel(0u64);
        let stop = Arc::new(AtomicBool::new(false));
        let sweeper = {
            let store = Arc::clone(&fx.peer);
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let grace = GRACE.as_millis() as u64;
                while !stop.load(Ordering::Relaxed) {
                    store.sweep(now_ms() - grace).await?;
                    sweeps_tx.send_modify(|n| *n += 1);
                    tokio::task::yield_now().await;
                }
                anyhow::Ok(*sweeps_tx.borrow())
            })
        };

        let target = key("RACEGC-1")?;
        let rounds = async {
            for (round, (holder, body)) in holders.iter().zip(&bodies).enumerate() {
                let started = *sweeps.borrow_and_update();
                // The holder lets go of the body while the target takes it
                // up: for a moment, nobody references the old body and set.
                let release = {
                    let (store, holder, actor) =
                        (Arc::clone(&fx.store), holder.clone(), actor.clone());
                    tokio::spawn(async move {
                        Desk::detached(store.clone())
                            .delete(&holder, spec, &actor)
                            .await
                    })
                };
                let upload = {
                    let (store, target, body, actor) = (
                        Arc::clone(&fx.store),
                        target.clone(),
                        body.clone(),
                        actor.clone(),
                    );
                    tokio::spawn(async move {
                        Desk::detached(store.clone())
                            .upload(&target, spec, spec, body, &actor)
                            .await
                    })
                };
                release
                    .await?
                    .with_context(|| format!("release in round {round}"))?;
                upload
                    .await?
                    .with_context(|| format!("upload in round {round}"))?;
                check_references(&*fx.store)
                    .await
                    .with_context(|| format!("after round {round}"))?;
                // Paced by the sweeper: a sweep ended during or after this round.
                tokio::time::timeout(NOTIFY_TIMEOUT, sweeps.wait_for(|n| *n > started))
                    .await
                    .context("the sweeper stalled")?
                    .context("the sweeper stopped")?;
            }
            anyhow::Ok(())
        }
        .await;
        stop.store(true, Ordering::Relaxed);
        let swept = sweeper.await?.context("a sweep failed")?;
        rounds?;
        ensure!(swept >= ROUNDS as u64, "only {swept} sweeps");

        // Once everything is old, exactly what tickets reference stays: the
        // target's last body, its set and the holders' (shared) empty set.
        check_references(&*fx.store).await?;
        fx.store.sweep(cutoff().await).await?;
        check_references(&*fx.store).await?;
        let usage = fx.store.usage().await?;
        assert_eq!((usage.modules, usage.sets), (1, 2), "{usage:?}");
        Ok(())
    }

    /// Page views: the last few per ticket, newest first, on every handle
    /// of the fleet; counts per side and minute, updates adding only their
    /// new errors; nothing of it bumps the version.
    pub async fn views_are_kept_and_counted(fx: &Fixture) -> anyhow::Result<()> {
        use stamp_model::views::{PagesSeen, Report, Side, RECENT_VIEWS};
        let t = key("VIEW-1")?;
        let other = key("VIEW-2")?;
        let version = fx.store.version().await?;
        let report = |side: &str, errors: u32, update: bool| {
            let body = format!(
                r#"{{"v":1,"ticket":"VIEW-1","view":"prod","side":"{side}","page":"/p",
                    "update":{update},"previous_errors":0,"error_count":{errors},
                    "modules":{{"expected":1}}}}"#
            );
            Report::parse(body.as_bytes()).map_err(anyhow::Error::msg)
        };
        let now = now_ms();
        let minute = now - now % 60_000;
        let mut batch = Vec::new();
        for i in 0..(RECENT_VIEWS + 3) {
            let side = if i % 2 == 0 { "ticket" } else { "production" };
            batch.push(report(side, u32::from(i % 3 == 0), false)?.record(
                t.clone(),
                Stage::Qa,
                now + i as u64,
            ));
        }
        batch.push(report("ticket", 2, true)?.record(t.clone(), Stage::Qa, now));
        batch.push(report("ticket", 0, false)?.record(other.clone(), Stage::Qa, now));
        fx.store.record_views(&batch).await?;
        ensure!(
            fx.store.version().await? == version,
            "views bump no version"
        );

        let recent = fx.peer.recent_views(&t).await?;
        ensure!(recent.len() == RECENT_VIEWS, "{}", recent.len());
        ensure!(recent[0].update, "newest first: {:?}", recent[0]);
        ensure!(fx.peer.recent_views(&other).await?.len() == 1);

        let counts = fx.peer.view_counts(&t, minute).await?;
        let side = |s: Side| {
            counts
                .iter()
                .filter(|c| c.side == s)
                .fold((0, 0, 0), |a, c| {
                    (a.0 + c.views, a.1 + c.erring_views, a.2 + c.errors)
                })
        };
        let n = RECENT_VIEWS as u64 + 3;
        let ticket_views = n.div_ceil(2);
        let erring = |parity: u64| (0..n).filter(|i| i % 2 == parity && i % 3 == 0).count() as u64;
        ensure!(
            side(Side::Ticket) == (ticket_views, erring(0) + 1, erring(0) + 2),
            "{:?} ({counts:?})",
            side(Side::Ticket)
        );
        ensure!(
            side(Side::Production) == (n - ticket_views, erring(1), erring(1)),
            "{:?}",
            side(Side::Production)
        );
        ensure!(fx.peer.view_counts(&t, minute + 120_000).await?.is_empty());

        // What proxies saw of rollout pages adds to the same counts, from
        // every handle, batch after batch; nothing of it bumps the version.
        let seen = |ticket: &stamp_model::TicketKey, side, sent, heard| PagesSeen {
            ticket: ticket.clone(),
            side,
            minute_ms: now,
            sent,
            heard,
        };
        fx.store
            .record_seen(&[
                seen(&t, Side::Ticket, 10, 1),
                seen(&t, Side::Production, 10, 9),
            ])
            .await?;
        fx.peer
            .record_seen(&[
                seen(&t, Side::Ticket, 5, 0),
                seen(&other, Side::Ticket, 7, 7),
            ])
            .await?;
        fx.store.record_seen(&[]).await?;
        ensure!(
            fx.store.version().await? == version,
            "what proxies saw bumps no version"
        );
        let counts = fx.peer.view_counts(&t, minute).await?;
        let pages = |s: Side| {
            counts
                .iter()
                .filter(|c| c.side == s)
                .fold((0, 0, 0), |a, c| {
                    (a.0 + c.sent, a.1 + c.heard, a.2 + c.views)
                })
        };
        ensure!(
            pages(Side::Ticket) == (15, 1, ticket_views),
            "{:?} ({counts:?})",
            pages(Side::Ticket)
        );
        ensure!(
            pages(Side::Production) == (10, 9, n - ticket_views),
            "{:?}",
            pages(Side::Production)
        );
        let others = fx.store.view_counts(&other, minute).await?;
        let (sent, heard) = others
            .iter()
            .fold((0, 0), |a, c| (a.0 + c.sent, a.1 + c.heard));
        ensure!((sent, heard) == (7, 7), "{others:?}");
        // Minutes older than counts are kept go, in both stores.
        let old = PagesSeen {
            minute_ms: now - stamp_model::views::COUNTS_KEPT_MS - 120_000,
            ..seen(&other, Side::Production, 3, 3)
        };
        fx.store.record_seen(std::slice::from_ref(&old)).await?;
        fx.store
            .record_seen(&[seen(&other, Side::Ticket, 1, 0)])
            .await?;
        for _ in 0..2 {
            let all = fx.peer.view_counts(&other, 0).await?;
            ensure!(
                all.iter().all(|c| c.minute_ms >= old.minute_ms + 60_000),
                "{all:?}"
            );
        }
        Ok(())
    }

    /// A reader that holds a version learns what changed since, from any
    /// handle: the changed tickets as they are now, the purged ones, the
    /// overlay; and is told to read everything when the store cannot say.
    pub async fn changes_since_names_what_changed(fx: &Fixture) -> anyhow::Result<()> {
        let s = &*fx.store;
        let names = |c: &stamp_store::Changes| {
            let mut n: Vec<String> = c.tickets.iter().map(|t| t.key.to_string()).collect();
            n.sort();
            n
        };
        let start = s.version().await?;
        let (a, b) = (key("CHG-1")?, key("CHG-2")?);
        create(s, &a).await?;
        create(s, &b).await?;
        let both = s.version().await?;
        let c = fx
            .peer
            .changes_since(start)
            .await?
            .context("two commits since")?;
        ensure!(c.version == both, "{} != {both}", c.version);
        ensure!(names(&c) == ["CHG-1", "CHG-2"], "{:?}", names(&c));
        ensure!(c.removed.is_empty() && c.overlay.is_empty());

        // A ticket changed twice is named once, as it is now; the overlay
        // comes along.
        s.commit(commit(&a, Some(1), OverlayOp::Append, None))
            .await?;
        s.commit(commit(&a, Some(2), OverlayOp::Keep, None)).await?;
        let c = fx.peer.changes_since(both).await?.context("since both")?;
        ensure!(names(&c) == ["CHG-1"], "{:?}", names(&c));
        ensure!(c.tickets[0].version == 3, "{:?}", c.tickets[0]);
        ensure!(c.overlay == [a.clone()], "{:?}", c.overlay);
        let now = s.version().await?;
        ensure!(c.version == now);

        // Nothing since: nothing named. A version the store has not
        // reached (it restarted empty, say): read everything.
        let c = fx.peer.changes_since(now).await?.context("since now")?;
        ensure!(c.tickets.is_empty() && c.removed.is_empty() && c.version == now);
        ensure!(fx.peer.changes_since(now + 5).await?.is_none());

        // A purged ticket is named as removed.
        s.commit(Commit {
            ticket: record(&b, 2, Stage::Closed),
            expected_version: Some(1),
            overlay: OverlayOp::Keep,
            event: None,
        })
        .await?;
        ensure!(s.purge_ticket(&b, 2, summary("purged")).await?);
        let c = fx
            .peer
            .changes_since(now)
            .await?
            .context("since the purge")?;
        ensure!(c.removed == [b.clone()], "{:?}", c.removed);
        ensure!(c.tickets.is_empty(), "{:?}", names(&c));

        // Refused commits change nothing and name nothing.
        let v = s.version().await?;
        ensure!(s
            .commit(commit(&a, Some(1), OverlayOp::Keep, None))
            .await
            .is_err());
        let c = fx.peer.changes_since(v).await?.context("after a refusal")?;
        ensure!(c.tickets.is_empty() && c.version == v);
        Ok(())
    }

    /// Revoked credentials reach every handle of the fleet until their own
    /// expiry, and bump no version.
    pub async fn revocations_reach_the_fleet_until_they_expire(fx: &Fixture) -> anyhow::Result<()> {
        let now = now_ms();
        let version = fx.store.version().await?;
        ensure!(fx.peer.revoked(now).await?.is_empty());
        fx.store.revoke("session-a", now + 60_000).await?;
        fx.store.revoke("session-b", now + 1_000).await?;
        fx.store
            .revoke("session-old", now.saturating_sub(1))
            .await?;
        let mut seen = fx.peer.revoked(now).await?;
        seen.sort();
        ensure!(seen == ["session-a", "session-b"], "{seen:?}");
        ensure!(fx.peer.revoked(now + 2_000).await? == ["session-a"]);
        ensure!(fx.store.version().await? == version, "no version bump");
        Ok(())
    }
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() -> anyhow::Result<()> {
                    let fx = super::Fixture::embedded().await?;
                    super::cases::$case(&fx).await
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() -> anyhow::Result<()> {
                    let fx = super::Fixture::redis().await?;
                    super::cases::$case(&fx).await
                }
            )*
        }
    };
}

conformance!(
    module_put_get_dedup_missing,
    set_put_get_round_trip,
    create_then_conflicting_create,
    stale_commit_changes_nothing,
    concurrent_commits_exactly_one_wins,
    overlay_append_remove_ordering,
    history_appended_in_order,
    state_version_increases_per_commit,
    subscribe_sees_commits,
    sweep_deletes_only_unreferenced_old_entries,
    every_stage_and_closed_tickets_keep_their_bodies,
    purge_removes_only_a_closed_ticket_and_keeps_its_history,
    usage_counts_what_is_stored,
    sweeping_while_uploading_never_loses_a_referenced_body,
    views_are_kept_and_counted,
    revocations_reach_the_fleet_until_they_expire,
    changes_since_names_what_changed,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_survives_reopen() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let location = dir.path().join("store");
    let location = location.to_str().context("temp path is not UTF-8")?;
    let a = key("KEEP-1")?;
    let b = key("KEEP-2")?;
    let body = Bytes::from_static(b"export const kept = true;\n");
    let mut set = OverrideSet::new();
    set.insert(
        "/src/kept.js".to_string(),
        ModuleRef {
            path: "/src/kept.js".to_string(),
            hash: Hash::of(&body),
            size: body.len() as u64,
        },
    );

    let (before, history_a, hash, id) = {
        let s = stamp_store::open(location, PREFIX).await?;
        let hash = s.put_module(body.clone()).await?;
        let id = s.put_set(&set).await?;
        create(&*s, &a).await?;
        create(&*s, &b).await?;
        s.commit(commit(
            &a,
            Some(1),
            OverlayOp::Append,
            Some(event("promote", "")),
        ))
        .await?;
        s.commit(commit(
            &b,
            Some(1),
            OverlayOp::Append,
            Some(event("promote", "")),
        ))
        .await?;
        (s.state().await?, s.history(&a).await?, hash, id)
    };
    assert_eq!(before.version, 4);

    let s = stamp_store::open(location, PREFIX).await?;
    let after = s.state().await?;
    assert_eq!(after.version, before.version);
    assert_eq!(after.tickets, before.tickets);
    assert_eq!(after.overlay, vec![a.clone(), b.clone()]);
    assert_eq!(s.version().await?, 4);
    assert_eq!(s.history(&a).await?, history_a);
    assert_eq!(history_a.len(), 2);
    assert_eq!(s.get_module(&hash).await?, Some(body));
    assert_eq!(s.get_set(&id).await?, Some(set));
    // A fresh subscriber starts from the persisted version, not 0.
    assert_eq!(*s.subscribe().borrow(), 4);
    // And the store carries on where it stopped.
    assert_eq!(
        s.commit(commit(&a, Some(2), OverlayOp::Remove, None))
            .await?,
        5
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_second_open_of_a_locked_dir_is_a_clear_error() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let location = dir.path().join("store");
    let location = location.to_str().context("temp path is not UTF-8")?;
    let first = stamp_store::open(location, PREFIX).await?;
    match stamp_store::open(location, PREFIX).await {
        Err(e @ StoreError::Locked { .. }) => {
            let message = e.to_string();
            assert!(message.contains(location), "{message}");
            assert!(message.contains("holds its lock"), "{message}");
        }
        Err(other) => bail!("wanted a Locked error, got {other}"),
        Ok(_) => bail!("a second open of a locked directory succeeded"),
    }
    drop(first);
    // The lock goes with the store.
    stamp_store::open(location, PREFIX).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_malformed_url_is_an_open_error_without_the_password() -> anyhow::Result<()> {
    match stamp_store::open("redis://:hunter2@127.0.0.1:notaport/", PREFIX).await {
        Err(e @ StoreError::Open { .. }) => {
            ensure!(!e.to_string().contains("hunter2"), "password leaked: {e}");
            Ok(())
        }
        Err(other) => bail!("wanted an Open error, got {other}"),
        Ok(_) => bail!("a malformed URL was accepted"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_describe_hides_credentials() -> anyhow::Result<()> {
    // Nothing listens on port 1: describing needs no connection.
    let s = stamp_store::open("redis://default:hunter2@127.0.0.1:1/0", PREFIX).await?;
    let described = s.describe();
    ensure!(!described.contains("hunter2"), "{described}");
    ensure!(!described.contains("default"), "{described}");
    ensure!(
        described.starts_with("redis://127.0.0.1:1/0"),
        "{described}"
    );
    Ok(())
}

/// `SET key value` over raw RESP: data as a version without garbage
/// collection wrote it (no entry in the time indexes).
fn raw_set(port: u16, key: &str, value: &[u8]) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    let mut request = format!(
        "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n",
        key.len(),
        value.len()
    )
    .into_bytes();
    request.extend_from_slice(value);
    request.extend_from_slice(b"\r\n");
    stream.write_all(&request)?;
    let mut reply = [0u8; 5];
    stream.read_exact(&mut reply)?;
    ensure!(&reply == b"+OK\r\n", "SET answered {reply:?}");
    Ok(())
}

/// The Redis changelog keeps the last `CHANGELOG` versions; a reader
/// further behind, or one a version bump without an entry (a proxy of an
/// older release in the fleet, a version set by hand) would mislead, is
/// told to read the whole state.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_changelog_is_trimmed_and_never_misleads() -> anyhow::Result<()> {
    let server = RedisServer::start()?;
    let s = stamp_store::open(&server.url, PREFIX).await?;
    let first = key("TRIM-0")?;
    create(&*s, &first).await?;
    let start = s.version().await?;
    let n = stamp_store::CHANGELOG as u64 + 10;
    for i in 1..=n {
        create(&*s, &key(&format!("TRIM-{i}"))?).await?;
    }
    let top = s.version().await?;
    ensure!(top == start + n);
    ensure!(s.changes_since(start).await?.is_none(), "trimmed away");
    let recent = s.changes_since(top - 3).await?.context("the last three")?;
    ensure!(recent.tickets.len() == 3, "{:?}", recent.tickets.len());
    // A version bump with no entry: every reader from before it re-reads.
    raw_set(
        server.port,
        &format!("{PREFIX}:version"),
        (top + 1).to_string().as_bytes(),
    )?;
    ensure!(s.changes_since(top).await?.is_none(), "a missing entry");
    create(&*s, &key("TRIM-99999")?).await?;
    ensure!(s.changes_since(top).await?.is_none(), "still missing");
    ensure!(s.changes_since(top + 1).await?.is_some(), "after it");

    // A changelog that is not one (another type under its key, a floor
    // that is not a number) is "read everything", never an error the
    // snapshot would stop on; and a commit refuses before writing anything.
    let now = s.version().await?;
    raw_set(server.port, &format!("{PREFIX}:changelog-floor"), b"many")?;
    ensure!(s.changes_since(now).await?.is_none(), "a floor of text");
    raw_set(server.port, &format!("{PREFIX}:changelog-floor"), b"0")?;
    raw_set(
        server.port,
        &format!("{PREFIX}:changelog"),
        b"not a sorted set",
    )?;
    ensure!(s.changes_since(now).await?.is_none(), "a changelog of text");
    let k = key("TRIM-1")?;
    let before = s.get_ticket(&k).await?;
    let refused = s.commit(commit(&k, Some(1), OverlayOp::Keep, None)).await;
    ensure!(
        matches!(&refused, Err(StoreError::Corrupt(m)) if m.contains("changelog")),
        "{refused:?}"
    );
    ensure!(s.version().await? == now, "nothing written");
    ensure!(s.get_ticket(&k).await? == before, "nothing written");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_sweep_tracks_bodies_and_sets_stored_before_gc() -> anyhow::Result<()> {
    let server = RedisServer::start()?;
    let body = b"export const old = 1;\n";
    let set = OverrideSet::new();
    let json = serde_json::to_vec(&set)?;
    raw_set(
        server.port,
        &format!("{PREFIX}:mod:{}", Hash::of(body)),
        body,
    )?;
    raw_set(
        server.port,
        &format!("{PREFIX}:set:{}", set_id(&set)),
        &json,
    )?;
    // Another prefix's data is not ours to collect.
    raw_set(server.port, &format!("other:mod:{}", Hash::of(body)), body)?;
    let s = stamp_store::open(&server.url, PREFIX).await?;
    let before = now_ms();
    tokio::time::sleep(Duration::from_millis(5)).await;

    // The first sweep indexes them as stored now: spared for a grace window…
    assert_eq!(s.sweep(before).await?, SweepReport::default());
    let usage = s.usage().await?;
    assert_eq!((usage.modules, usage.module_bytes, usage.sets), (1, 22, 1));
    // …and collected once it is over (nothing references them).
    tokio::time::sleep(Duration::from_millis(5)).await;
    let report = s.sweep(now_ms()).await?;
    assert_eq!(
        (
            report.modules_deleted,
            report.module_bytes_freed,
            report.sets_deleted
        ),
        (1, 22, 1)
    );
    assert_eq!(s.usage().await?, StoreUsage::default());
    assert_eq!(s.get_module(&Hash::of(body)).await?, None);
    let other = stamp_store::open(&server.url, "other").await?;
    assert!(other.get_module(&Hash::of(body)).await?.is_some());
    Ok(())
}

/// Runs `op` with Redis down: it must fail as `Unavailable`, and promptly.
async fn assert_unavailable<T: std::fmt::Debug>(
    what: &str,
    op: impl std::future::Future<Output = Result<T, StoreError>>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let result = tokio::time::timeout(OUTAGE_OP_BOUND, op)
        .await
        .with_context(|| format!("{what} hung for {OUTAGE_OP_BOUND:?} while redis was down"))?;
    match result {
        Err(StoreError::Unavailable(_)) => Ok(()),
        other => bail!(
            "{what} with redis down gave {other:?} after {:?}",
            started.elapsed()
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_outage_is_unavailable_then_recovers() -> anyhow::Result<()> {
    let mut server = RedisServer::start()?;
    let s = stamp_store::open(&server.url, PREFIX).await?;
    let mut rx = s.subscribe();
    let k = key("OUT-1")?;
    let hash = s.put_module(Bytes::from_static(b"x")).await?;
    let v1 = create(&*s, &k).await?;
    wait_for_version(&mut rx, v1).await?;
    // The change subscription is made in the background (a local commit
    // reaches receivers without it): wait until it was made once.
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.resyncs() < 1 {
        ensure!(Instant::now() < deadline, "never subscribed to changes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let resyncs = s.resyncs();

    server.stop()?;
    assert_unavailable("version", s.version()).await?;
    assert_unavailable("state", s.state()).await?;
    assert_unavailable("get_ticket", s.get_ticket(&k)).await?;
    assert_unavailable("history", s.history(&k)).await?;
    assert_unavailable("get_module", s.get_module(&hash)).await?;
    assert_unavailable("missing_modules", s.missing_modules(&[hash])).await?;
    assert_unavailable("put_module", s.put_module(Bytes::from_static(b"y"))).await?;
    assert_unavailable("put_set", s.put_set(&OverrideSet::new())).await?;
    assert_unavailable(
        "commit",
        s.commit(commit(&k, Some(1), OverlayOp::Append, None)),
    )
    .await?;
    // Starting a proxy while Redis is down must work (traffic keeps flowing).
    let late = tokio::time::timeout(OUTAGE_OP_BOUND, stamp_store::open(&server.url, PREFIX))
        .await
        .context("open hung while redis was down")??;
    let mut late_rx = late.subscribe();
    assert_unavailable("version (opened while down)", late.version()).await?;
    rx.borrow_and_update();

    server.restart()?;
    // The restarted Redis is empty (no persistence): version 0, no tickets.
    let deadline = Instant::now() + NOTIFY_TIMEOUT;
    let version = loop {
        match s.version().await {
            Ok(v) => break v,
            Err(StoreError::Unavailable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => bail!("store did not recover after redis came back: {e}"),
        }
    };
    assert_eq!(version, 0);
    // The listener re-subscribed and announced the current version, so
    // receivers resync even though nothing was committed.
    tokio::time::timeout(NOTIFY_TIMEOUT, rx.changed())
        .await
        .context("no notification after redis came back")??;
    assert_eq!(*rx.borrow_and_update(), 0);
    // Counted, so snapshots re-read the whole state rather than what
    // changed since a version this Redis may have given to another write.
    assert!(s.resyncs() > resyncs, "{} after {resyncs}", s.resyncs());

    // Writes work again, and reach the other instance's subscriber (which
    // only ever connected after the outage) and ours over pub/sub.
    let v = create(&*late, &k).await?;
    assert_eq!(v, 1);
    assert_eq!(wait_for_version(&mut rx, v).await?, v);
    assert_eq!(wait_for_version(&mut late_rx, v).await?, v);
    assert_eq!(s.get_ticket(&k).await?.map(|t| t.version), Some(1));

    // `late` never saw the old data, so it gave the empty store a new epoch.
    // `s` did see it: the store lost the state `s` knew, and `s` says so
    // instead of taking the empty store for "no tickets", and refuses writes.
    assert_ne!(late.epoch(), s.epoch());
    let known = s.epoch().context("s has an epoch")?;
    match s.state().await {
        Err(StoreError::Lost { known: k2, found }) => {
            assert_eq!(k2, known);
            assert_eq!(found, late.epoch());
        }
        other => bail!("state of a store that lost its data: {other:?}"),
    }
    let other = TicketKey::parse("LOST-2").context("key")?;
    assert!(matches!(
        s.commit(commit(&other, None, OverlayOp::Keep, None)).await,
        Err(StoreError::Lost { .. })
    ));
    assert_eq!(s.get_ticket(&other).await?, None, "nothing was written");
    // An operator adopts the store as it is; every instance follows.
    let adopted = s.adopt().await?;
    assert_eq!(Some(adopted.clone()), late.epoch());
    assert_eq!(s.state().await?.tickets.len(), 1);
    // The adoption counted as a change (so every instance re-reads at once).
    assert_eq!(create(&*s, &other).await?, 3);
    assert_eq!(late.state().await?.tickets.len(), 2);
    assert_eq!(late.epoch(), Some(adopted));
    Ok(())
}
