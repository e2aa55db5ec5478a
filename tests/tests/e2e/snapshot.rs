//! The data plane's snapshot at scale: a rebuild keeps what did not change
//! (a ticket's variants, their merged maps) and the set cache follows the
//! tickets, not every upload they ever had.

use std::collections::HashMap;
use std::sync::Arc;

use stamp_data::SnapshotCell;
use stamp_model::ticket::TicketKey;
use stamp_model::Transition;
use stamp_tests::{open_store, transition, upload};

#[tokio::test]
async fn a_rebuild_costs_what_changed() {
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
    let cell = SnapshotCell::default();
    let mut sets = HashMap::new();
    cell.refresh(&store, &mut sets, true).await.unwrap();
    let first = cell.load();
    let key = |k: &str| TicketKey::parse(k).unwrap();
    // Every upload made a set; the cache holds only the ones tickets name.
    assert_eq!(first.tickets.len(), 21);
    assert_eq!(sets.len(), 21, "one current set per ticket");

    // One ticket changes; the others keep their variants.
    upload(&store, "MOVE-1", &[("src/m.js", "2")])
        .await
        .unwrap();
    cell.refresh(&store, &mut sets, true).await.unwrap();
    let second = cell.load();
    for i in 0..20 {
        let k = key(&format!("KEEP-{i}"));
        assert!(
            Arc::ptr_eq(&first.tickets[&k].dev, &second.tickets[&k].dev),
            "KEEP-{i} rebuilt for another ticket's upload"
        );
    }
    assert!(!Arc::ptr_eq(
        &first.tickets[&key("MOVE-1")].dev,
        &second.tickets[&key("MOVE-1")].dev
    ));
    assert_eq!(sets.len(), 21, "the superseded set is dropped");

    // Promoted without a change: qa is the dev variant itself.
    transition(&store, "MOVE-1", Transition::Promote)
        .await
        .unwrap();
    cell.refresh(&store, &mut sets, true).await.unwrap();
    let third = cell.load();
    let moved = &third.tickets[&key("MOVE-1")];
    assert!(Arc::ptr_eq(&moved.dev, moved.qa.as_ref().unwrap()));

    // A release changes the overlay: every ticket's variants are rebuilt on it.
    transition(&store, "MOVE-1", Transition::Promote)
        .await
        .unwrap();
    cell.refresh(&store, &mut sets, true).await.unwrap();
    let fourth = cell.load();
    let k = key("KEEP-0");
    assert!(!Arc::ptr_eq(
        &third.tickets[&k].dev,
        &fourth.tickets[&k].dev
    ));
    assert_eq!(
        fourth.tickets[&k].dev.len(),
        3,
        "the overlay's module is in"
    );

    // A closed ticket keeps no variant of its own.
    transition(&store, "KEEP-1", Transition::Close)
        .await
        .unwrap();
    cell.refresh(&store, &mut sets, true).await.unwrap();
    assert!(cell.load().tickets[&key("KEEP-1")].dev.is_empty());
}
