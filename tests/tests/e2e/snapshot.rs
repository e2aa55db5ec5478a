//! The data plane's snapshot at scale: a ticket's variants are built on
//! first use into a bounded cache the snapshots share, keyed by what they
//! are made of, so a rebuild costs what changed; the set cache follows the
//! tickets, not every upload they ever had; what a snapshot holds for every
//! open ticket (its sets, its variants' ids, which bodies it serves where)
//! stays exact without any variant built.

use std::collections::HashMap;
use std::sync::Arc;

use stamp_data::SnapshotCell;
use stamp_model::ticket::{Hash, ModuleRef, OverrideSet, TicketKey, View};
use stamp_model::Transition;
use stamp_tests::{open_store, transition, upload};

fn key(k: &str) -> TicketKey {
    TicketKey::parse(k).unwrap()
}

/// A ticket's `src/a.js`.
fn module_a(set: &OverrideSet) -> ModuleRef {
    set.values()
        .find(|m| m.path.ends_with("a.js"))
        .expect("src/a.js uploaded")
        .clone()
}

/// The variant a snapshot stamps for ticket `$k`'s `$view`, built or cached.
macro_rules! variant {
    ($snap:expr, $k:expr, $view:expr) => {
        $snap
            .variant(&key($k), $view)
            .unwrap_or_else(|| panic!("{} {:?}: production", $k, $view))
    };
}

#[tokio::test]
async fn variants_are_built_on_first_use_and_a_rebuild_costs_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path().join("store").to_str().unwrap())
        .await
        .unwrap();
    for i in 0..20 {
        let body = format!("export default {i};");
        upload(
            &store,
            &format!("KEEP-{i}"),
            &[("src/a.js", &body), ("src/b.js", "b")],
        )
        .await
        .unwrap();
    }
    upload(&store, "MOVE-1", &[("src/m.js", "1")])
        .await
        .unwrap();
    // At most 8 variants built at once.
    let cell = SnapshotCell::with_variants(8);
    let mut sets = HashMap::new();
    cell.refresh(&store, &mut sets, true).await.unwrap();
    let first = cell.load();
    // Every upload made a set; the cache holds only the ones tickets name.
    assert_eq!(first.tickets.len(), 21);
    assert_eq!(sets.len(), 21, "one current set per ticket");
    assert!(first.variants.is_empty(), "no variant is built up front");
    assert_eq!(first.variants.capacity(), 8);

    // Yet every open ticket's bodies are served at their paths, and only there.
    for t in first.tickets.values() {
        for m in t.dev_own.values() {
            assert!(first.serves(&m.path, &m.hash), "{} not served", m.path);
        }
    }
    let a0 = module_a(&first.tickets[&key("KEEP-0")].dev_own);
    assert!(first.serves(&a0.path, &a0.hash));
    assert!(!first.serves(&a0.path.replace("a.js", "b.js"), &a0.hash));
    assert!(!first.serves(&a0.path, &Hash::of(b"never uploaded")));

    // Built on first use, then the same `Arc` for the same inputs.
    let keep0 = variant!(first, "KEEP-0", View::Dev);
    assert_eq!(first.variants.len(), 1);
    assert!(Arc::ptr_eq(&keep0, &variant!(first, "KEEP-0", View::Dev)));
    assert_eq!(keep0.len(), 2);
    assert_eq!(keep0.id, first.tickets[&key("KEEP-0")].dev_id);
    let move1 = variant!(first, "MOVE-1", View::Dev);
    assert!(
        first.variant(&key("MOVE-1"), View::Qa).is_none(),
        "not promoted to qa yet"
    );

    // One ticket changes; the others keep their variants, across snapshots.
    upload(&store, "MOVE-1", &[("src/m.js", "2")])
        .await
        .unwrap();
    cell.refresh(&store, &mut sets, true).await.unwrap();
    let second = cell.load();
    assert!(Arc::ptr_eq(&first.variants, &second.variants));
    assert!(
        Arc::ptr_eq(&keep0, &variant!(second, "KEEP-0", View::Dev)),
        "KEEP-0 rebuilt for another ticket's upload"
    );
    for i in 1..20 {
        let k = key(&format!("KEEP-{i}"));
        assert_eq!(first.tickets[&k].dev_id, second.tickets[&k].dev_id);
    }
    let moved = variant!(second, "MOVE-1", View::Dev);
    assert!(!Arc::ptr_eq(&move1, &moved));
    assert_ne!(move1.id, moved.id);
    assert_eq!(sets.len(), 21, "the superseded set is dropped");

    // External map ids resolve, built on demand through the same cache,
    // and name exactly the variant they were computed for.
    for (k, t) in &second.tickets {
        let e = second
            .effective(&t.dev_id)
            .expect("a ticket's variant id resolves");
        assert_eq!(e.id, t.dev_id, "{k}");
        assert!(Arc::ptr_eq(&e, &variant!(second, k.as_str(), View::Dev)));
    }
    assert!(
        second.effective(&move1.id).is_none(),
        "the old upload's variant"
    );

    // The cache is bounded: 21 variants asked for, at most 8 kept. Those
    // evicted are held by nobody else (this list only).
    let all: Vec<_> = second
        .tickets
        .keys()
        .map(|k| variant!(second, k.as_str(), View::Dev))
        .collect();
    assert!(second.variants.len() <= 8, "{} kept", second.variants.len());
    let evicted = all.iter().filter(|e| Arc::strong_count(e) == 1).count();
    assert!(evicted >= 13, "only {evicted} evicted");
    // An evicted variant comes back the same (by content), built again.
    for (k, e) in second.tickets.keys().zip(&all) {
        assert_eq!(variant!(second, k.as_str(), View::Dev).id, e.id);
    }

    // Promoted without a change: qa is the dev variant itself.
    transition(&store, "MOVE-1", Transition::Promote)
        .await
        .unwrap();
    cell.refresh(&store, &mut sets, true).await.unwrap();
    let third = cell.load();
    let dev = variant!(third, "MOVE-1", View::Dev);
    assert!(Arc::ptr_eq(&dev, &variant!(third, "MOVE-1", View::Qa)));
    let t = &third.tickets[&key("MOVE-1")];
    assert_eq!(t.qa_id, Some(t.dev_id));
    let keep0 = variant!(third, "KEEP-0", View::Dev);

    // A release changes the overlay: every ticket's variant is made anew
    // on it, and its id (computed without building it) still names it.
    transition(&store, "MOVE-1", Transition::Promote)
        .await
        .unwrap();
    cell.refresh(&store, &mut sets, true).await.unwrap();
    let fourth = cell.load();
    let overlay = fourth.overlay.clone().expect("a released ticket");
    let now = variant!(fourth, "KEEP-0", View::Dev);
    assert!(!Arc::ptr_eq(&keep0, &now));
    assert_eq!(now.len(), 3, "the overlay's module is in");
    assert_eq!(now.id, fourth.tickets[&key("KEEP-0")].dev_id);
    for t in fourth.tickets.values() {
        assert_eq!(fourth.effective(&t.dev_id).unwrap().id, t.dev_id);
    }
    assert!(Arc::ptr_eq(
        &fourth.effective(&overlay.id).unwrap(),
        &overlay
    ));

    // A closed ticket is never stamped, and its variant's id names nothing.
    let closed = fourth.tickets[&key("KEEP-1")].dev_id;
    transition(&store, "KEEP-1", Transition::Close)
        .await
        .unwrap();
    cell.refresh(&store, &mut sets, true).await.unwrap();
    let fifth = cell.load();
    assert!(fifth.variant(&key("KEEP-1"), View::Dev).is_none());
    assert!(fifth.effective(&closed).is_none());
    let a1 = module_a(&fifth.tickets[&key("KEEP-1")].dev_own);
    assert!(
        !fifth.serves(&a1.path, &a1.hash),
        "a closed ticket's body is not served"
    );
}

/// `rewrite.variants` sizes the variant cache: health shows it and what it
/// holds, pages of more tickets than it holds are all stamped, and a value
/// out of range is refused at start with its key.
#[tokio::test]
async fn the_variant_cache_is_sized_by_the_configuration() {
    let origin = stamp_tests::Origin::start().unwrap();
    origin.route(
        "/",
        stamp_tests::Route::html("<script type=module src=/src/a.js></script>"),
    );
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let tickets: Vec<String> = (0..20).map(|i| format!("VAR-{i}")).collect();
    for t in &tickets {
        let body = format!("export default '{t}';");
        stamp_tests::seed_dir(&store, t, &[("/src/a.js", &body)])
            .await
            .unwrap();
    }
    let conf = dir.path().join("proxy.toml");
    let write = |variants: &str| {
        std::fs::write(
            &conf,
            format!(
                "origin = \"{}\"\nstore = \"{}\"\n[rewrite]\nvariants = {variants}\n",
                origin.url,
                store.display()
            ),
        )
        .unwrap();
    };
    write("16");
    let proxy =
        stamp_tests::Proxy::start_with(None, &["--config", &conf.to_string_lossy()], &[]).unwrap();
    let client = stamp_tests::client();
    for t in &tickets {
        let page = client
            .get(proxy.url(&format!("/?dev={t}")))
            .header("accept", "text/html")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let body = format!("export default '{t}';");
        assert!(
            page.contains(&stamp_tests::module_url("/src/a.js", &body)),
            "{t} not stamped: {page}"
        );
    }
    let health = stamp_tests::json_of(client.get(proxy.url("/__stamp/health"))).await;
    let variants = &health["snapshot"]["variants"];
    assert_eq!(variants["capacity"], 16, "{health}");
    let built = variants["built"].as_u64().unwrap();
    assert!((1..=16).contains(&built), "{health}");
    drop(proxy);

    for bad in ["0", "15", "1000001", "-1", "\"many\"", "1.5"] {
        write(bad);
        let out = std::process::Command::new(stamp_tests::proxy::binary("stamp-proxy").unwrap())
            .args(["--config", &conf.to_string_lossy(), "--check"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "variants = {bad} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        // A value of the wrong type is named by its line, like any other.
        assert!(
            err.contains("rewrite.variants") || err.contains("line 4"),
            "variants = {bad}: {err}"
        );
    }
}
