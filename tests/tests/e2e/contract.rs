//! The control API's contract, in-process: a `Control` built from the same
//! TOML a `stamp-proxy` reads, answering requests without a socket (no
//! process, no port). The lifecycle, preconditions, uploads by hash, and
//! what each role is told it may do.

use serde_json::{json, Value};
use stamp_tests::module_url;

use crate::api::{act, call, call_h, in_process, lifecycle, upload, DEV, QA};

#[tokio::test]
async fn lifecycle_on_the_embedded_store() {
    lifecycle(&in_process("").await).await;
}

/// A move that says neither the version nor the stage it starts from is
/// refused with 428 and a hint, and changes nothing; one that states the
/// stage works, and a stale stage is a conflict.
#[tokio::test]
async fn moves_must_state_what_they_start_from() {
    let p = &in_process("").await;
    upload(p, "PRE-1", "src/main.js", "x").await;
    for body in [
        None,
        Some(b"{}".to_vec()),
        Some(b"{\"commit\": \"abcd1234\"}".to_vec()),
    ] {
        let (s, v) = call(p, "POST", "tickets/PRE-1/promote", Some(DEV), body).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (428, Some("precondition_required")),
            "{v}"
        );
        assert_eq!(v["error"]["version"], 1);
        assert_eq!(v["error"]["stage"], "dev");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("expected_version"),
            "{v}"
        );
    }
    let (_, t) = call(p, "GET", "tickets/PRE-1", Some(DEV), None).await;
    assert_eq!(
        (t["stage"].as_str(), t["version"].as_u64()),
        (Some("dev"), Some(1))
    );
    let (s, v) = call(
        p,
        "POST",
        "tickets/PRE-1/promote",
        Some(DEV),
        Some(br#"{"from": "dev"}"#.to_vec()),
    )
    .await;
    assert_eq!((s, v["stage"].as_str()), (200, Some("qa")), "{v}");
    let (s, v) = call(
        p,
        "POST",
        "tickets/PRE-1/close",
        Some(DEV),
        Some(br#"{"from": "dev"}"#.to_vec()),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str(), v["error"]["stage"].as_str()),
        (409, Some("conflict"), Some("qa")),
        "{v}"
    );
    let (s, _) = call_h(
        p,
        "POST",
        "tickets/PRE-1/revert",
        Some(DEV),
        None,
        &[("if-match", "\"2\"")],
    )
    .await;
    assert_eq!(s, 200, "If-Match states the version");
    // Re-open is a move of its own: closed -> dev, by a dev (not by QA).
    assert_eq!(act(p, "PRE-1", "close", DEV).await.0, 200);
    assert_eq!(act(p, "PRE-1", "reopen", QA).await.0, 403);
    let (s, v) = act(p, "PRE-1", "reopen", DEV).await;
    assert_eq!((s, v["stage"].as_str()), (200, Some("dev")), "{v}");
    let (s, v) = act(p, "PRE-1", "reopen", DEV).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("illegal_transition")),
        "{v}"
    );
    let (_, t) = call(p, "GET", "tickets/PRE-1", Some(DEV), None).await;
    let events: Vec<&str> = t["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(events.last(), Some(&"reopen"), "{events:?}");
}

#[tokio::test]
async fn uploads_by_hash_transfer_only_new_bodies() {
    let p = &in_process("").await;
    let body = "export const shared = 1;\n";
    let hash = stamp_model::ticket::Hash::of(body.as_bytes()).to_hex();
    let (s, v) = call_h(
        p,
        "PUT",
        "tickets/HASH-1/modules/src/s.js",
        Some(DEV),
        None,
        &[("x-stamp-hash", &hash)],
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (404, json!("unknown_body"))
    );
    upload(p, "HASH-1", "src/s.js", body).await;
    let (s, v) = call_h(
        p,
        "PUT",
        "tickets/HASH-2/modules/src/s.js",
        Some(DEV),
        None,
        &[("x-stamp-hash", &hash)],
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["module"]["size"], body.len());
    let (s, _) = call_h(
        p,
        "PUT",
        "tickets/HASH-2/modules/src/t.js",
        Some(DEV),
        Some(b"other".to_vec()),
        &[("x-stamp-hash", &hash)],
    )
    .await;
    assert_eq!(s, 400, "hash must match the body");
    // A bare specifier mapped to a path.
    let (s, v) = call_h(
        p,
        "PUT",
        "tickets/HASH-2/modules/dist/cart.js",
        Some(DEV),
        Some(b"cart".to_vec()),
        &[("x-stamp-specifier", "@shop/cart")],
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["module"]["specifier"], "@shop/cart");
    assert_eq!(
        v["module"]["url"],
        module_url("/dist/cart.js", "cart").as_str()
    );
    let (s, _) = call_h(
        p,
        "DELETE",
        "tickets/HASH-2/modules/dist/cart.js",
        Some(DEV),
        None,
        &[("x-stamp-specifier", "@shop/cart")],
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = call(
        p,
        "DELETE",
        "tickets/HASH-2/modules/dist/cart.js",
        Some(DEV),
        None,
    )
    .await;
    assert_eq!(s, 404);
}

/// Each caller is told only the moves its role may make, and can ask what
/// the policies would say of a move without making it.
#[tokio::test]
async fn callers_see_their_own_actions_and_can_dry_run_a_move() {
    let p = &in_process("[[policies]]\nkind = \"sign-off\"\ncount = 1\n").await;
    upload(p, "DRY-1", "src/main.js", "x").await;
    assert_eq!(act(p, "DRY-1", "promote", DEV).await.0, 200);
    let actions = |v: &Value| v["allowed_actions"].clone();
    let (_, as_qa) = call(p, "GET", "tickets/DRY-1", Some(QA), None).await;
    assert_eq!(actions(&as_qa), json!(["promote", "sign-off"]));
    let (_, as_dev) = call(p, "GET", "tickets/DRY-1", Some(DEV), None).await;
    assert!(
        !actions(&as_dev)
            .as_array()
            .unwrap()
            .contains(&json!("promote")),
        "{as_dev}"
    );
    // The dry run: refused by the sign-off policy, and nothing moved.
    let (s, v) = call(
        p,
        "GET",
        "tickets/DRY-1/check?action=promote",
        Some(QA),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["from"].clone(), v["to"].clone()),
        (json!("qa"), json!("prod"))
    );
    assert_eq!(v["allowed"], false);
    assert_eq!(v["role_allows"], true);
    assert_eq!(v["checks"][0]["policy"], "sign-off");
    assert_eq!(v["checks"][0]["ok"], false);
    let (_, t) = call(p, "GET", "tickets/DRY-1", Some(QA), None).await;
    assert_eq!(t["stage"], "qa");
    // A dev may read the verdict, and is told the role does not allow it.
    let (_, v) = call(p, "GET", "tickets/DRY-1/check", Some(DEV), None).await;
    assert_eq!(v["role_allows"], false, "{v}");
    // Bad input.
    let (s, v) = call(
        p,
        "GET",
        "tickets/DRY-1/check?action=launch",
        Some(QA),
        None,
    )
    .await;
    assert_eq!(
        (s, v["error"]["field"].clone()),
        (400, json!("action")),
        "{v}"
    );
    let (s, v) = call(
        p,
        "GET",
        "tickets/DRY-1/check?action=reopen",
        Some(QA),
        None,
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (409, json!("illegal_transition")),
        "{v}"
    );
    let (s, _) = call(p, "GET", "tickets/DRY-1/check", None, None).await;
    assert_eq!(s, 401);
}
