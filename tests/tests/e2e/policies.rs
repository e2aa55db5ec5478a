//! Promotion policies and hooks, exercised as a library: every built-in
//! policy allowing and refusing (reasons asserted), several refusals at
//! once, scoping, git against real repositories, Jira and Slack against
//! local fakes that check what the real APIs check (errors, 429 with
//! Retry-After, slow and down servers), hook retries and a hook that can
//! never block, and config errors. `sanity` goes through a real proxy.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use git2::{Oid, Repository, Signature};
use stamp_control::hooks::{Dispatcher, Event};
use stamp_control::policy::{Engine, TransitionCtx, Verdict};
use stamp_control::{Actor, Desk};
use stamp_model::lifecycle::Transition;
use stamp_model::roles::Role;
use stamp_model::ticket::{Stage, TicketKey};
use stamp_store::SharedStore;
use stamp_tests::fakes::{FakeGitHub, FakeGitLab, FakeJira, FakeReceiver, FakeSlack};
use stamp_tests::{Origin, Proxy, Route};

// ------------------------------------------------------------------ helpers

async fn store() -> (SharedStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let s = stamp_store::open(&dir.path().to_string_lossy(), "ticket-stamp")
        .await
        .unwrap();
    (s, dir)
}

fn key(k: &str) -> TicketKey {
    TicketKey::parse(k).unwrap()
}

async fn upload_as(store: &SharedStore, k: &str, path: &str, body: &str, who: &str) {
    Desk::detached(store.clone())
        .upload(
            &key(k),
            path,
            path,
            Bytes::from(body.to_string()),
            &Actor::named(who),
        )
        .await
        .unwrap();
}

async fn move_as(store: &SharedStore, k: &str, what: Transition, who: &str) {
    Desk::detached(store.clone())
        .transition(&key(k), what, None, &Actor::named(who))
        .await
        .unwrap();
}

async fn sign_off_as(store: &SharedStore, k: &str, who: &str) {
    let t = store.get_ticket(&key(k)).await.unwrap().unwrap();
    Desk::detached(store.clone())
        .sign_off(&t, None, &Actor::named(who))
        .await
        .unwrap();
}

/// The context of moving ticket `k` (as it is now) to `to`.
async fn ctx_for(
    store: &SharedStore,
    k: &str,
    to: Stage,
    actor: Actor,
    base: &str,
) -> TransitionCtx {
    let t = store.get_ticket(&key(k)).await.unwrap().unwrap();
    let from = t.stage;
    let action = if to == Stage::Closed {
        Transition::Close
    } else if to > from {
        Transition::Promote
    } else {
        Transition::Revert
    };
    let overrides = stamp_control::overrides(store, &t, from)
        .await
        .unwrap()
        .unwrap_or_default();
    let roles: HashMap<String, Role> = [
        ("alice", Role::Dev),
        ("bob", Role::Qa),
        ("carol", Role::Qa),
        ("dave", Role::Dev),
        ("root", Role::Admin),
    ]
    .into_iter()
    .map(|(n, r)| (n.to_string(), r))
    .collect();
    TransitionCtx {
        history: store.history(&t.key).await.unwrap(),
        ticket: t,
        from,
        to,
        action,
        actor,
        overrides,
        store: store.clone(),
        proxy_base: base.to_string(),
        roles,
    }
}

async fn ctx(store: &SharedStore, k: &str, to: Stage) -> TransitionCtx {
    ctx_for(store, k, to, Actor::named("alice"), "http://127.0.0.1:9").await
}

fn engine(text: &str) -> Engine {
    Engine::from_config(&tables(text, "policies")).unwrap()
}

fn tables(text: &str, list: &str) -> Vec<toml::Table> {
    let v: toml::Table = toml::from_str(text).unwrap();
    v.get(list)
        .and_then(|l| l.as_array())
        .map(|a| a.iter().filter_map(|t| t.as_table().cloned()).collect())
        .unwrap_or_default()
}

fn reasons(v: &Verdict) -> Vec<String> {
    v.denials.iter().map(|(k, r)| format!("{k}: {r}")).collect()
}

fn assert_denied(v: &Verdict, needle: &str) {
    assert!(
        v.denials.iter().any(|(_, r)| r.contains(needle)),
        "expected a denial containing {needle:?}, got {v:#?}"
    );
}

/// A ticket in qa uploaded by alice.
async fn ticket_in_qa(store: &SharedStore, k: &str) {
    upload_as(store, k, "/src/a.js", "export default 1;\n", "alice").await;
    move_as(store, k, Transition::Promote, "alice").await;
}

// ------------------------------------------------------------------ sign-off

#[tokio::test]
async fn sign_off_needs_qa_sign_offs_by_others_since_the_last_upload() {
    let (s, _d) = store().await;
    ticket_in_qa(&s, "TKT-1").await;
    let e = engine("[[policies]]\nkind = \"sign-off\"\ncount = 2\n");

    let v = e.check(&ctx(&s, "TKT-1", Stage::Prod).await).await;
    assert_eq!(
        reasons(&v),
        vec!["sign-off: needs 2 sign-offs by qa tokens other than the uploaders; has 0"]
    );

    // alice uploaded (and is dev), dave is dev: neither counts.
    sign_off_as(&s, "TKT-1", "alice").await;
    sign_off_as(&s, "TKT-1", "dave").await;
    sign_off_as(&s, "TKT-1", "bob").await;
    sign_off_as(&s, "TKT-1", "bob").await;
    let v = e.check(&ctx(&s, "TKT-1", Stage::Prod).await).await;
    assert_eq!(
        reasons(&v),
        vec!["sign-off: needs 2 sign-offs by qa tokens other than the uploaders; has 1 (bob); not counted: alice (uploaded to the ticket), dave (dev, not qa tokens)"]
    );

    sign_off_as(&s, "TKT-1", "carol").await;
    let v = e.check(&ctx(&s, "TKT-1", Stage::Prod).await).await;
    assert!(v.allowed(), "{v:#?}");

    // carol takes hers back: one short again; signing again counts again.
    let t = s.get_ticket(&key("TKT-1")).await.unwrap().unwrap();
    assert!(stamp_control::policy::has_standing(
        &s.history(&key("TKT-1")).await.unwrap(),
        "carol"
    ));
    Desk::detached(s.clone())
        .withdraw_sign_off(&t, Some("found a bug".into()), &Actor::named("carol"))
        .await
        .unwrap();
    assert!(!stamp_control::policy::has_standing(
        &s.history(&key("TKT-1")).await.unwrap(),
        "carol"
    ));
    let v = e.check(&ctx(&s, "TKT-1", Stage::Prod).await).await;
    assert_denied(&v, "has 1 (bob)");
    sign_off_as(&s, "TKT-1", "carol").await;
    assert!(e
        .check(&ctx(&s, "TKT-1", Stage::Prod).await)
        .await
        .allowed());

    // A new upload invalidates them.
    upload_as(&s, "TKT-1", "/src/a.js", "export default 2;\n", "alice").await;
    let v = e.check(&ctx(&s, "TKT-1", Stage::Prod).await).await;
    assert_denied(
        &v,
        "has 0; 6 earlier sign-offs were invalidated by a later upload or promotion",
    );

    // Not this policy's transition by default.
    assert!(e.check(&ctx(&s, "TKT-1", Stage::Dev).await).await.allowed());
}

// ------------------------------------------------------------------ conflict

#[tokio::test]
async fn conflict_denies_or_warns_on_modules_another_ticket_overrides() {
    let (s, _d) = store().await;
    ticket_in_qa(&s, "TKT-1").await;
    upload_as(&s, "TKT-2", "/src/a.js", "export default 2;\n", "dave").await;
    upload_as(&s, "TKT-2", "/src/b.js", "export default 3;\n", "dave").await;
    upload_as(&s, "TKT-3", "/src/c.js", "export default 4;\n", "dave").await;

    let deny = engine("[[policies]]\nkind = \"conflict\"\n");
    let v = deny.check(&ctx(&s, "TKT-2", Stage::Qa).await).await;
    assert_eq!(
        reasons(&v),
        vec!["conflict: TKT-1 (in qa) also overrides /src/a.js"]
    );
    assert!(deny
        .check(&ctx(&s, "TKT-3", Stage::Qa).await)
        .await
        .allowed());

    let warn = engine("[[policies]]\nkind = \"conflict\"\nmode = \"warn\"\n");
    let v = warn.check(&ctx(&s, "TKT-2", Stage::Qa).await).await;
    assert!(v.allowed());
    assert_eq!(
        v.warnings,
        vec![(
            "conflict".to_string(),
            "TKT-1 (in qa) also overrides /src/a.js".to_string()
        )]
    );

    // Released tickets count too; `stages = ["qa"]` ignores them.
    move_as(&s, "TKT-1", Transition::Promote, "bob").await;
    let v = deny.check(&ctx(&s, "TKT-2", Stage::Qa).await).await;
    assert_denied(&v, "TKT-1 (in prod) also overrides /src/a.js");
    let qa_only = engine("[[policies]]\nkind = \"conflict\"\nstages = [\"qa\"]\n");
    assert!(qa_only
        .check(&ctx(&s, "TKT-2", Stage::Qa).await)
        .await
        .allowed());
}

// ------------------------------------------------------------------ command

#[tokio::test]
async fn command_gets_the_ticket_and_its_output_is_the_reason() {
    let (s, _d) = store().await;
    upload_as(&s, "TKT-4", "/src/a.js", "export default 1;\n", "alice").await;
    let allow = engine(
        r#"[[policies]]
kind = "command"
program = "sh"
args = ["-c", "json=$(cat); case \"$json\" in *'\"ticket\":\"TKT-4\"'*'/src/a.js'*) ;; *) echo \"bad stdin: $json\"; exit 1;; esac; [ \"$STAMP_TICKET $STAMP_FROM $STAMP_TO $STAMP_ACTION $STAMP_ACTOR $STAMP_COMMIT\" = 'TKT-4 dev qa promote alice abc123' ] || { echo \"bad env\"; exit 1; }"]
"#,
    );
    let mut c = ctx(&s, "TKT-4", Stage::Qa).await;
    c.actor.commit = Some("abc123".into());
    let v = allow.check(&c).await;
    assert!(v.allowed(), "{v:#?}");

    let deny = engine(
        r#"[[policies]]
kind = "command"
program = "sh"
args = ["-c", "echo 'unit tests: 3 of 120 failed' >&2; exit 2"]
"#,
    );
    let v = deny.check(&c).await;
    assert_eq!(reasons(&v), vec!["command: unit tests: 3 of 120 failed"]);

    let slow = engine(
        r#"[[policies]]
kind = "command"
program = "sleep"
args = ["10"]
timeout = "300ms"
"#,
    );
    let t = Instant::now();
    let v = slow.check(&c).await;
    assert!(t.elapsed() < Duration::from_secs(3));
    assert_eq!(
        reasons(&v),
        vec!["command: `sleep` did not finish within 300ms and was stopped"]
    );

    let missing = engine("[[policies]]\nkind = \"command\"\nprogram = \"/nonexistent/check\"\n");
    assert_denied(&missing.check(&c).await, "cannot run `/nonexistent/check`");
}

// ------------------------------------------------------------------ several, scoping

#[tokio::test]
async fn every_failure_is_reported_together_and_scopes_are_honoured() {
    let (s, _d) = store().await;
    ticket_in_qa(&s, "TKT-5").await;
    ticket_in_qa(&s, "TKT-6").await;
    let e = engine(
        r#"
[[policies]]
kind = "command"
program = "sh"
args = ["-c", "echo 'lint failed'; exit 1"]
on = "promote"

[[policies]]
kind = "sign-off"

[[policies]]
kind = "conflict"
on = ["qa->prod"]

[[policies]]
kind = "command"
program = "sh"
args = ["-c", "echo 'frozen'; exit 1"]
on = ["prod->qa", "close"]
"#,
    );
    let v = e.check(&ctx(&s, "TKT-5", Stage::Prod).await).await;
    assert_eq!(
        reasons(&v),
        vec![
            "command: lint failed",
            "sign-off: needs 1 sign-off by qa tokens other than the uploaders; has 0",
            "conflict: TKT-6 (in qa) also overrides /src/a.js",
        ]
    );
    // qa->dev: nothing guards it.
    assert!(e.check(&ctx(&s, "TKT-5", Stage::Dev).await).await.allowed());
    // close: only the last command.
    let v = e.check(&ctx(&s, "TKT-5", Stage::Closed).await).await;
    assert_eq!(reasons(&v), vec!["command: frozen"]);
    assert_eq!(
        v.details()["denials"][0],
        serde_json::json!({"policy": "command", "reason": "frozen"})
    );
}

// ------------------------------------------------------------------ config errors

#[test]
fn config_errors_name_the_valid_kinds_and_keys() {
    let errs = Engine::from_config(&tables(
        r#"
[[policies]]
kind = "sign_off"

[[policies]]
kind = "git"
remote = "/srv/git/shop.git"
brnach = "main"

[[policies]]
kind = "jira"
url = "https://acme.atlassian.net"
token = "t"
statuses = { "qa->prod" = ["Approved"], "dev->prod" = ["x"] }

[[policies]]
kind = "command"
timeout = "soon"
"#,
        "policies",
    ))
    .unwrap_err();
    assert_eq!(
        errs,
        vec![
            "policies[0].kind: unknown kind `sign_off`; valid kinds: git, sign-off, sanity, conflict, command, jira, github, gitlab",
            "policies[1].brnach: unknown key for kind `git`; valid keys: kind, on, remote, branch, cache_dir, timeout, on_fetch_error, require_commit, username, token, token_env, sources",
            "policies[2].email: is required with api = \"cloud\" (the account the API token belongs to)",
            "policies[2].statuses.\"dev->prod\": `dev->prod` is not a transition the workflow makes; valid: dev->qa, qa->prod, prod->qa, qa->dev, dev->closed, qa->closed",
            "policies[3].program: is required (the program to run)",
            "policies[3].timeout: `soon` is not a duration (expected number at 0); write e.g. 500ms, 10s",
        ]
    );
    let errs = Dispatcher::from_config(&tables(
        r##"
[[hooks]]
kind = "teams"

[[hooks]]
kind = "slack"
webhook_url = "http://127.0.0.1:9/x"
chanel = "#qa"

[[hooks]]
kind = "webhook"
url = "http://127.0.0.1:9/x"
"##,
        "hooks",
    ))
    .unwrap_err();
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert_eq!(
        errs[0],
        "hooks[0].kind: unknown kind `teams`; valid kinds: jira, slack, github, gitlab, webhook"
    );
    assert!(errs[1].starts_with("hooks[1].chanel: unknown key for kind `slack`; valid keys: kind, events, max_attempts, backoff, max_backoff, timeout, webhook_url, token, token_env, channel, api_url"), "{}", errs[1]);
    assert!(
        errs[2].starts_with("hooks[2].secret: is required"),
        "{}",
        errs[2]
    );
}

// ------------------------------------------------------------------ git

fn sig() -> Signature<'static> {
    Signature::now("Dev", "dev@example.com").unwrap()
}

/// A commit with one file holding `msg`, on `refname` if given.
fn commit(repo: &Repository, refname: Option<&str>, parents: &[Oid], msg: &str) -> Oid {
    let blob = repo.blob(msg.as_bytes()).unwrap();
    let mut tb = repo.treebuilder(None).unwrap();
    tb.insert("file.txt", blob, 0o100644).unwrap();
    let tree = repo.find_tree(tb.write().unwrap()).unwrap();
    let parents: Vec<git2::Commit<'_>> = parents
        .iter()
        .map(|p| repo.find_commit(*p).unwrap())
        .collect();
    let refs: Vec<&git2::Commit<'_>> = parents.iter().collect();
    repo.commit(refname, &sig(), &sig(), msg, &tree, &refs)
        .unwrap()
}

fn push(clone: &Repository, refspec: &str) {
    clone
        .find_remote("origin")
        .unwrap()
        .push(&[refspec], None)
        .unwrap();
}

fn git_engine(remote: &Path, cache: &Path) -> Engine {
    engine(&format!(
        "[[policies]]\nkind = \"git\"\nremote = {:?}\ncache_dir = {:?}\n",
        remote.to_string_lossy(),
        cache.to_string_lossy()
    ))
}

async fn git_check(e: &Engine, s: &SharedStore, commit: Option<String>) -> Verdict {
    let actor = Actor {
        name: "alice".into(),
        commit,
        branch: Some("feature".into()),
        role: None,
        source: None,
    };
    e.check(&ctx_for(s, "TKT-7", Stage::Qa, actor, "http://127.0.0.1:9").await)
        .await
}

#[tokio::test]
async fn git_requires_a_pushed_commit_up_to_date_with_main() {
    let (s, _d) = store().await;
    upload_as(&s, "TKT-7", "/src/a.js", "1", "alice").await;
    let dir = tempfile::tempdir().unwrap();
    let remote_path = dir.path().join("remote.git");
    let remote = Repository::init_bare(&remote_path).unwrap();
    let a = commit(&remote, Some("refs/heads/main"), &[], "A");
    let clone =
        Repository::clone(&remote_path.to_string_lossy(), dir.path().join("clone")).unwrap();
    let e = git_engine(&remote_path, &dir.path().join("cache"));

    // Pushed, on top of main: allowed (also by a short id); main itself too.
    let c1 = commit(&clone, Some("refs/heads/feature"), &[a], "C1");
    push(&clone, "refs/heads/feature:refs/heads/feature");
    assert!(git_check(&e, &s, Some(c1.to_string())).await.allowed());
    assert!(git_check(&e, &s, Some(c1.to_string()[..8].to_string()))
        .await
        .allowed());
    assert!(git_check(&e, &s, Some(a.to_string())).await.allowed());

    // Committed but not pushed.
    let c2 = commit(&clone, Some("refs/heads/feature"), &[c1], "C2");
    let v = git_check(&e, &s, Some(c2.to_string())).await;
    assert_eq!(
        reasons(&v),
        vec![format!(
            "git: unknown commit {c2}: it is not on the remote (push it first)"
        )]
    );

    // Main moves ahead: C1 is behind.
    let b = commit(&remote, Some("refs/heads/main"), &[a], "B");
    let v = git_check(&e, &s, Some(c1.to_string())).await;
    let b10 = &b.to_string()[..10];
    assert_eq!(
        reasons(&v),
        vec![format!("git: commit {} is behind main by 1 commit (main is at {b10}): merge or rebase onto main and push", &c1.to_string()[..10])]
    );

    // Rebased onto B and pushed: allowed; then main is force-pushed.
    clone
        .find_remote("origin")
        .unwrap()
        .fetch(&["main"], None, None)
        .unwrap();
    let c3 = commit(&clone, Some("refs/heads/feature2"), &[b], "C3");
    push(&clone, "refs/heads/feature2:refs/heads/feature2");
    assert!(git_check(&e, &s, Some(c3.to_string())).await.allowed());
    let b2 = commit(&remote, None, &[a], "B-rewritten");
    remote
        .reference("refs/heads/main", b2, true, "force push")
        .unwrap();
    let v = git_check(&e, &s, Some(c3.to_string())).await;
    assert_eq!(v.denials.len(), 1, "{v:#?}");
    assert!(
        v.denials[0].1.starts_with(&format!(
            "main moved: `main` was force-pushed (it was at {b10}, it is now at {}",
            &b2.to_string()[..10]
        )),
        "{v:#?}"
    );

    // Nothing sent, and nothing recorded (alice's uploads carried no commit).
    assert_denied(&git_check(&e, &s, None).await, "none is recorded");

    // A click in the panel sends no commit: the one the ticket's code was
    // uploaded from is checked instead.
    clone
        .find_remote("origin")
        .unwrap()
        .fetch(&["main"], None, None)
        .unwrap();
    let c4 = commit(&clone, Some("refs/heads/feature3"), &[b2], "C4");
    push(&clone, "refs/heads/feature3:refs/heads/feature3");
    let with_commit = |c: &git2::Oid| Actor {
        name: "alice".into(),
        commit: Some(c.to_string()),
        branch: Some("feature3".into()),
        role: None,
        source: None,
    };
    Desk::detached(s.clone())
        .upload(
            &key("TKT-7"),
            "/src/a.js",
            "/src/a.js",
            Bytes::from_static(b"4"),
            &with_commit(&c4),
        )
        .await
        .unwrap();
    assert!(git_check(&e, &s, None).await.allowed());
    // …and a recorded commit that is behind main is refused like a sent one.
    Desk::detached(s.clone())
        .upload(
            &key("TKT-7"),
            "/src/a.js",
            "/src/a.js",
            Bytes::from_static(b"3"),
            &with_commit(&c3),
        )
        .await
        .unwrap();
    assert!(!git_check(&e, &s, None).await.allowed());
}

#[tokio::test]
async fn git_fails_closed_when_the_remote_cannot_be_fetched() {
    let (s, _d) = store().await;
    upload_as(&s, "TKT-7", "/src/a.js", "1", "alice").await;
    let dir = tempfile::tempdir().unwrap();
    let e = git_engine(&dir.path().join("nowhere.git"), &dir.path().join("cache"));
    let v = git_check(&e, &s, Some("abcdef12".into())).await;
    assert_denied(&v, "cannot fetch");
}

// ------------------------------------------------------------------ jira policy

fn jira_policy(url: &str, extra: &str) -> Engine {
    engine(&format!(
        r#"[[policies]]
kind = "jira"
url = "{url}"
email = "bot@acme.com"
token = "api-token"
timeout = "2s"
max_retry_wait = "3s"
statuses = {{ "dev->qa" = ["In Review", "Ready for QA"], "qa->prod" = ["Approved"] }}
{extra}"#
    ))
}

#[tokio::test]
async fn jira_policy_checks_status_per_transition_on_cloud() {
    let (s, _d) = store().await;
    upload_as(&s, "TKT-8", "/src/a.js", "1", "alice").await;
    let jira = FakeJira::cloud("bot@acme.com", "api-token").unwrap();
    jira.issue("TKT-8", "In Review", &[]);
    let e = jira_policy(jira.url(), "");
    let c = ctx(&s, "TKT-8", Stage::Qa).await;
    assert!(e.check(&c).await.allowed());
    let r = &jira.fake.requests()[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("GET", "/rest/api/3/issue/TKT-8")
    );
    assert_eq!(r.query, "fields=status");

    jira.issue("TKT-8", "In Progress", &[]);
    assert_eq!(
        reasons(&e.check(&c).await),
        vec!["jira: TKT-8 is \"In Progress\" in Jira; dev->qa needs \"In Review\" or \"Ready for QA\""]
    );

    // Not in Jira; not visible; bad credentials.
    upload_as(&s, "TKT-9", "/src/a.js", "1", "alice").await;
    let c9 = ctx(&s, "TKT-9", Stage::Qa).await;
    assert_eq!(
        reasons(&e.check(&c9).await),
        vec!["jira: TKT-9 does not exist in Jira, or the account cannot see it (404): Issue does not exist or you do not have permission to see it."]
    );
    jira.issue("TKT-9", "In Review", &[]);
    jira.forbid("TKT-9");
    assert_denied(
        &e.check(&c9).await,
        "the Jira account may not do this on TKT-9 (403 Forbidden)",
    );
    let bad = engine(&format!(
        "[[policies]]\nkind = \"jira\"\nurl = \"{}\"\nemail = \"bot@acme.com\"\ntoken = \"wrong\"\n",
        jira.url()
    ));
    assert_denied(
        &bad.check(&c).await,
        "Jira rejected the credentials (401): check `email` and the API token",
    );

    // 409.
    jira.issue("TKT-8", "In Review", &[]);
    jira.fake.fail_next(
        1,
        409,
        r#"{"errorMessages":["The issue was modified concurrently."],"errors":{}}"#,
        None,
    );
    assert_denied(
        &e.check(&c).await,
        "Jira reports a conflict on TKT-8 (409): The issue was modified concurrently.; try again",
    );
}

#[tokio::test]
async fn jira_policy_honours_retry_after_and_fails_closed_on_outage() {
    let (s, _d) = store().await;
    upload_as(&s, "TKT-8", "/src/a.js", "1", "alice").await;
    let jira = FakeJira::cloud("bot@acme.com", "api-token").unwrap();
    jira.issue("TKT-8", "Ready for QA", &[]);
    let e = jira_policy(jira.url(), "");
    let c = ctx(&s, "TKT-8", Stage::Qa).await;

    // A short Retry-After is waited out, then the answer counts.
    jira.fake.fail_next(1, 429, "", Some(1));
    let t = Instant::now();
    assert!(e.check(&c).await.allowed());
    assert!(t.elapsed() >= Duration::from_secs(1));
    assert_eq!(jira.fake.requests().len(), 2);

    // A long one is reported.
    jira.fake.fail_next(1, 429, "", Some(120));
    let t = Instant::now();
    assert_eq!(
        reasons(&e.check(&c).await),
        vec!["jira: Jira is rate limiting requests (429); retry after 120s"]
    );
    assert!(t.elapsed() < Duration::from_secs(2));

    // Down: fails closed by default, open (with a warning) when configured.
    jira.fake.set_down(true);
    assert_denied(
        &e.check(&c).await,
        "Jira answered 503; refusing while Jira cannot be asked (on_outage = \"deny\")",
    );
    let open = jira_policy(jira.url(), "on_outage = \"allow\"\n");
    let v = open.check(&c).await;
    assert!(v.allowed());
    assert!(
        v.warnings[0]
            .1
            .contains("allowed because on_outage = \"allow\""),
        "{v:#?}"
    );
    jira.fake.set_down(false);

    // Slow: the timeout is an outage.
    jira.fake.set_delay(Duration::from_secs(5));
    let t = Instant::now();
    assert_denied(&e.check(&c).await, "did not answer in time");
    assert!(t.elapsed() < Duration::from_secs(4));

    // Nobody listening.
    let gone = jira_policy(
        &format!("http://127.0.0.1:{}", stamp_tests::free_port().unwrap()),
        "",
    );
    assert_denied(&gone.check(&c).await, "is unreachable");
}

#[tokio::test]
async fn jira_policy_speaks_data_center_v2_with_a_bearer_token() {
    let (s, _d) = store().await;
    ticket_in_qa(&s, "TKT-10").await;
    let jira = FakeJira::datacenter("pat-123").unwrap();
    jira.issue("TKT-10", "Approved", &[]);
    let e = engine(&format!(
        "[[policies]]\nkind = \"jira\"\nurl = \"{}\"\napi = \"datacenter\"\ntoken = \"pat-123\"\nstatuses = {{ \"qa->prod\" = \"approved\" }}\n",
        jira.url()
    ));
    let c = ctx(&s, "TKT-10", Stage::Prod).await;
    assert!(e.check(&c).await.allowed());
    let r = &jira.fake.requests()[0];
    assert_eq!(r.path, "/rest/api/2/issue/TKT-10");
    assert_eq!(r.header("authorization").unwrap(), "Bearer pat-123");
    let bad = engine(&format!(
        "[[policies]]\nkind = \"jira\"\nurl = \"{}\"\napi = \"datacenter\"\ntoken = \"nope\"\n",
        jira.url()
    ));
    assert_denied(&bad.check(&c).await, "check the personal access token");
}

// ------------------------------------------------------------------ hooks

fn event(kind: &str, from: Stage, to: Stage) -> Event {
    Event {
        kind: stamp_control::hooks::EventKind::parse(kind).unwrap(),
        ticket: key("TKT-11"),
        from: Some(from),
        to: Some(to),
        actor: "bob".into(),
        share_link: Some("https://app.example.com/?qa=TKT-11".into()),
        branch: None,
        commit: None,
        detail: None,
        version: 0,
        rollout: None,
        at_ms: 1_700_000_000_000,
    }
}

fn dispatcher(text: &str) -> Dispatcher {
    Dispatcher::from_config(&tables(text, "hooks")).unwrap()
}

#[tokio::test]
async fn jira_hook_transitions_by_name_and_comments_in_adf() {
    let jira = FakeJira::cloud("bot@acme.com", "api-token").unwrap();
    jira.issue(
        "TKT-11",
        "In Review",
        &[
            ("11", "Back to work", "In Progress"),
            ("31", "Ready for QA", "QA"),
        ],
    );
    let d = dispatcher(&format!(
        r#"[[hooks]]
kind = "jira"
url = "{}"
email = "bot@acme.com"
token = "api-token"
backoff = "50ms"
transitions = {{ "dev->qa" = "ready for qa" }}
"#,
        jira.url()
    ));
    // First the transitions call fails with 503: retried.
    jira.fake.fail_next(1, 503, "", None);
    d.emit(event("promoted", Stage::Dev, Stage::Qa));
    assert!(d.idle(Duration::from_secs(10)).await);
    assert_eq!(jira.status("TKT-11").as_deref(), Some("QA"));
    let reqs: Vec<(String, String)> = jira
        .fake
        .requests()
        .iter()
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect();
    let p = |m: &str, s: &str| (m.to_string(), format!("/rest/api/3/issue/TKT-11{s}"));
    assert_eq!(
        reqs,
        vec![
            p("GET", "/transitions"),
            p("GET", "/transitions"),
            p("POST", "/transitions"),
            p("POST", "/comment")
        ]
    );
    assert_eq!(jira.fake.requests()[2].json()["transition"]["id"], "31");
    let comment = &jira.comments("TKT-11")[0]["body"];
    assert_eq!(comment["type"], "doc");
    let text = comment.to_string();
    assert!(
        text.contains("bob promoted TKT-11 from dev to qa"),
        "{text}"
    );
    assert!(
        text.contains(r#""href":"https://app.example.com/?qa=TKT-11""#),
        "{text}"
    );
}

#[tokio::test]
async fn jira_hook_on_data_center_comments_in_plain_text() {
    let jira = FakeJira::datacenter("pat-123").unwrap();
    jira.issue("TKT-11", "QA", &[("41", "Reopen", "In Progress")]);
    let d = dispatcher(&format!(
        "[[hooks]]\nkind = \"jira\"\nurl = \"{}\"\napi = \"datacenter\"\ntoken_env = \"STAMP_TEST_JIRA_PAT\"\ntransitions = {{ \"qa->dev\" = \"Reopen\" }}\n",
        jira.url()
    ));
    std::env::set_var("STAMP_TEST_JIRA_PAT", "pat-123");
    d.emit(event("reverted", Stage::Qa, Stage::Dev));
    assert!(d.idle(Duration::from_secs(10)).await);
    assert_eq!(jira.status("TKT-11").as_deref(), Some("In Progress"));
    let body = &jira.comments("TKT-11")[0]["body"];
    assert_eq!(
        body.as_str().unwrap(),
        "bob reverted TKT-11 from qa to dev (ticket-stamp).\nShare link: https://app.example.com/?qa=TKT-11"
    );
    assert!(jira
        .fake
        .requests()
        .iter()
        .all(|r| r.path.starts_with("/rest/api/2/")));
}

#[tokio::test]
async fn jira_hook_does_not_retry_a_missing_transition() {
    let jira = FakeJira::cloud("bot@acme.com", "api-token").unwrap();
    jira.issue("TKT-11", "Open", &[("11", "Start", "In Progress")]);
    let d = dispatcher(&format!(
        "[[hooks]]\nkind = \"jira\"\nurl = \"{}\"\nemail = \"bot@acme.com\"\ntoken = \"api-token\"\nbackoff = \"10ms\"\ntransitions = {{ \"qa->prod\" = \"Done\" }}\n",
        jira.url()
    ));
    d.emit(event("promoted", Stage::Qa, Stage::Prod));
    assert!(d.idle(Duration::from_secs(10)).await);
    // transitions list + issue status, once: no retry, no comment.
    assert_eq!(jira.fake.requests().len(), 2);
    assert!(jira.comments("TKT-11").is_empty());
}

#[tokio::test]
async fn slack_incoming_webhook_gets_text_and_blocks_and_retries_429() {
    let slack = FakeSlack::start("xoxb-good", &["C123"]).unwrap();
    let d = dispatcher(&format!(
        "[[hooks]]\nkind = \"slack\"\nwebhook_url = \"{}\"\nbackoff = \"50ms\"\n",
        slack.webhook_url()
    ));
    slack.fake.fail_next(1, 429, "rate_limited", Some(1));
    d.emit(event("promoted", Stage::Qa, Stage::Prod));
    d.emit(event("uploaded", Stage::Dev, Stage::Dev)); // not a default Slack event
    assert!(d.idle(Duration::from_secs(10)).await);
    let m = slack.messages();
    assert_eq!(m.len(), 1, "{m:#?}");
    assert_eq!(
        m[0]["text"],
        "bob promoted TKT-11 from qa to prod: https://app.example.com/?qa=TKT-11"
    );
    let blocks = m[0]["blocks"].to_string();
    for needle in [
        "*Ticket*\\nTKT-11",
        "*Stage*\\nprod",
        "*By*\\nbob",
        "<https://app.example.com/?qa=TKT-11|open TKT-11>",
    ] {
        assert!(blocks.contains(needle), "{needle} in {blocks}");
    }
    assert_eq!(slack.fake.requests().len(), 2);

    // An archived channel is permanent: one attempt.
    slack.archive();
    d.emit(event("closed", Stage::Qa, Stage::Closed));
    assert!(d.idle(Duration::from_secs(10)).await);
    assert_eq!(slack.fake.requests().len(), 3);
}

#[tokio::test]
async fn slack_chat_post_message_checks_ok_false() {
    let slack = FakeSlack::start("xoxb-good", &["C123"]).unwrap();
    let hook = |token: &str, channel: &str| {
        dispatcher(&format!(
            "[[hooks]]\nkind = \"slack\"\ntoken = \"{token}\"\nchannel = \"{channel}\"\napi_url = \"{}\"\nbackoff = \"20ms\"\nmax_attempts = 3\n",
            slack.api_url()
        ))
    };
    let ok = hook("xoxb-good", "C123");
    ok.emit(event("signed-off", Stage::Qa, Stage::Qa));
    assert!(ok.idle(Duration::from_secs(10)).await);
    assert_eq!(slack.messages().len(), 1);
    let r = &slack.fake.requests()[0];
    assert_eq!(r.path, "/api/chat.postMessage");
    assert_eq!(r.header("authorization").unwrap(), "Bearer xoxb-good");
    assert_eq!(r.json()["channel"], "C123");
    assert_eq!(
        slack.messages()[0]["text"],
        "bob signed off TKT-11 in qa: https://app.example.com/?qa=TKT-11"
    );

    // invalid_auth and channel_not_found are permanent (one request each);
    // ratelimited is retried.
    for (d, tries) in [
        (hook("xoxb-bad", "C123"), 1),
        (hook("xoxb-good", "C999"), 1),
    ] {
        let before = slack.fake.requests().len();
        d.emit(event("promoted", Stage::Dev, Stage::Qa));
        assert!(d.idle(Duration::from_secs(10)).await);
        assert_eq!(slack.fake.requests().len() - before, tries);
    }
    assert_eq!(slack.messages().len(), 1);
    slack
        .fake
        .fail_next(2, 429, r#"{"ok":false,"error":"ratelimited"}"#, Some(1));
    ok.emit(event("promoted", Stage::Dev, Stage::Qa));
    assert!(ok.idle(Duration::from_secs(10)).await);
    assert_eq!(slack.messages().len(), 2);
}

#[tokio::test]
async fn webhook_posts_signed_events_and_retries_with_backoff() {
    let rx = FakeReceiver::start("s3cret").unwrap();
    let d = dispatcher(&format!(
        "[[hooks]]\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"s3cret\"\nbackoff = \"100ms\"\nmax_attempts = 4\n",
        rx.url()
    ));
    rx.fake.fail_next(2, 500, "boom", None);
    let t = Instant::now();
    d.emit(event("promoted", Stage::Dev, Stage::Qa));
    assert!(t.elapsed() < Duration::from_millis(50));
    assert!(d.idle(Duration::from_secs(10)).await);
    // 100ms then 200ms of backoff.
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    let got = rx.deliveries();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0],
        serde_json::json!({"event": "promoted", "ticket": "TKT-11", "from": "dev", "to": "qa",
            "actor": "bob", "share_link": "https://app.example.com/?qa=TKT-11", "version": 0,
            "at_ms": 1_700_000_000_000u64})
    );
    let reqs = rx.fake.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[2].header("x-stamp-event").unwrap(), "promoted");
    assert_eq!(
        reqs[0].header("x-stamp-delivery"),
        reqs[2].header("x-stamp-delivery")
    );

    // A wrong secret is refused by the receiver (401): permanent, one attempt.
    let wrong = dispatcher(&format!(
        "[[hooks]]\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"other\"\nbackoff = \"10ms\"\n",
        rx.url()
    ));
    wrong.emit(event("closed", Stage::Qa, Stage::Closed));
    assert!(wrong.idle(Duration::from_secs(10)).await);
    assert_eq!(rx.fake.requests().len(), 4);
    assert_eq!(rx.deliveries().len(), 1);
}

#[tokio::test]
async fn a_slow_or_down_hook_never_blocks_and_gives_up_after_max_attempts() {
    // Slow (3s per answer, 200ms attempt timeout) and refused connections:
    // emit still returns at once, and the workflow goes on meanwhile.
    let slow = FakeReceiver::start("s").unwrap();
    slow.fake.set_delay(Duration::from_secs(3));
    let refused = format!(
        "http://127.0.0.1:{}/hook",
        stamp_tests::free_port().unwrap()
    );
    let d = dispatcher(&format!(
        r#"[[hooks]]
kind = "webhook"
url = "{}"
secret = "s"
timeout = "200ms"
backoff = "10ms"
max_attempts = 2

[[hooks]]
kind = "webhook"
url = "{refused}"
secret = "s"
backoff = "10ms"
max_attempts = 3
"#,
        slow.url()
    ));
    let t = Instant::now();
    for _ in 0..50 {
        d.emit(event("promoted", Stage::Dev, Stage::Qa));
    }
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "emit blocked: {:?}",
        t.elapsed()
    );
    let (s, _dir) = store().await;
    ticket_in_qa(&s, "TKT-12").await;
    move_as(&s, "TKT-12", Transition::Promote, "bob").await;
    assert!(
        t.elapsed() < Duration::from_millis(1000),
        "{:?}",
        t.elapsed()
    );
    assert!(
        !d.idle(Duration::from_millis(100)).await,
        "still delivering in the background"
    );

    // A hook that is down gives up after max_attempts per event.
    let down = FakeReceiver::start("s").unwrap();
    down.fake.set_down(true);
    let d = dispatcher(&format!(
        "[[hooks]]\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"s\"\nbackoff = \"10ms\"\nmax_attempts = 3\n",
        down.url()
    ));
    for _ in 0..3 {
        d.emit(event("closed", Stage::Qa, Stage::Closed));
    }
    assert!(d.idle(Duration::from_secs(10)).await);
    assert_eq!(down.fake.requests().len(), 9, "3 events x 3 attempts");
    assert!(down.deliveries().is_empty());
}

// ------------------------------------------------------------------ sanity

const PAGE: &str = r#"<!doctype html><html><head>
<script type="importmap">{"imports": {"app": "/src/main.js"}}</script>
<script type="module" src="/src/main.js"></script></head><body>shop</body></html>"#;

#[tokio::test]
async fn sanity_fetches_stamped_pages_and_modules_through_the_proxy() {
    let origin = Origin::start().unwrap();
    origin.route("/", Route::html(PAGE));
    origin.route(
        "/src/main.js",
        Route::bytes("text/javascript", b"import './lib/greet.js';".to_vec()),
    );
    let modules = [
        (
            "/src/lib/greet.js",
            "export const greet = () => 'ticket';\n",
        ),
        ("/src/theme.css", "body { color: red }\n"),
    ];
    let dir = tempfile::tempdir().unwrap();
    stamp_tests::seed_dir(dir.path(), "TKT-13", &modules)
        .await
        .unwrap();
    let proxy = Proxy::start(&origin.url, &["--store", &dir.path().to_string_lossy()]).unwrap();

    // The test's own store holds the same ticket (the proxy owns its store).
    let (s, _d) = store().await;
    for (p, b) in modules {
        upload_as(&s, "TKT-13", p, b, "alice").await;
    }
    let e = engine("[[policies]]\nkind = \"sanity\"\npaths = [\"/\"]\n");
    let c = ctx_for(&s, "TKT-13", Stage::Qa, Actor::named("alice"), &proxy.url).await;
    let v = e.check(&c).await;
    assert!(v.allowed(), "{v:#?}");

    // A page that fails, and a module the proxy does not have.
    upload_as(
        &s,
        "TKT-13",
        "/src/extra.js",
        "export default 0;\n",
        "alice",
    )
    .await;
    let e = engine("[[policies]]\nkind = \"sanity\"\npaths = [\"/\", \"/missing\"]\n");
    let c = ctx_for(&s, "TKT-13", Stage::Qa, Actor::named("alice"), &proxy.url).await;
    let v = e.check(&c).await;
    let all = reasons(&v).join("\n");
    assert!(
        all.contains("sanity: page / does not carry the stamped map: missing /src/extra.js"),
        "{all}"
    );
    assert!(
        all.contains("sanity: page /missing answered 404 Not Found"),
        "{all}"
    );
    assert!(all.contains("module /src/extra.js"), "{all}");
    assert!(!all.contains("/src/lib/greet.js"), "{all}");
}

#[tokio::test]
async fn sanity_refuses_wrong_content_types_and_foreign_bytes() {
    // A stand-in for the proxy that serves the page right but the modules wrong.
    let (s, _d) = store().await;
    upload_as(&s, "TKT-14", "/src/a.js", "export default 1;\n", "alice").await;
    upload_as(&s, "TKT-14", "/src/b.css", "b { }\n", "alice").await;
    let t = s.get_ticket(&key("TKT-14")).await.unwrap().unwrap();
    let set = stamp_control::overrides(&s, &t, Stage::Dev)
        .await
        .unwrap()
        .unwrap();
    let page: String = set
        .values()
        .map(|m| format!("<!-- {} -->", m.url()))
        .collect();
    let fake = Origin::start().unwrap();
    fake.route("/", Route::html(&page));
    fake.route(
        "/src/a.js",
        Route::bytes("text/plain", b"export default 1;\n".to_vec()),
    );
    fake.route(
        "/src/b.css",
        Route::bytes("text/css", b"other { }\n".to_vec()),
    );
    let e = engine("[[policies]]\nkind = \"sanity\"\n");
    let v = e
        .check(&ctx_for(&s, "TKT-14", Stage::Qa, Actor::named("alice"), &fake.url).await)
        .await;
    let b_hash = set["/src/b.css"].hash;
    assert_eq!(
        reasons(&v),
        vec![
            "sanity: module /src/a.js is served as `text/plain`, not javascript".to_string(),
            format!("sanity: module /src/b.css is not the ticket's version (body differs from {b_hash})"),
        ]
    );
    let q = fake.last_headers("/").unwrap();
    assert!(q.get("accept").is_some());
}

#[tokio::test]
async fn sign_off_roles_are_configurable() {
    let (s, _d) = store().await;
    ticket_in_qa(&s, "TKT-15").await;
    sign_off_as(&s, "TKT-15", "root").await;
    let qa_only = engine("[[policies]]\nkind = \"sign-off\"\n");
    assert_denied(
        &qa_only.check(&ctx(&s, "TKT-15", Stage::Prod).await).await,
        "not counted: root (admin, not qa tokens)",
    );
    let with_admin = engine("[[policies]]\nkind = \"sign-off\"\nroles = [\"qa\", \"admin\"]\n");
    assert!(with_admin
        .check(&ctx(&s, "TKT-15", Stage::Prod).await)
        .await
        .allowed());
}

#[tokio::test]
async fn git_can_decide_from_the_mirror_when_the_remote_is_gone() {
    let (s, _d) = store().await;
    upload_as(&s, "TKT-7", "/src/a.js", "1", "alice").await;
    let dir = tempfile::tempdir().unwrap();
    let remote_path = dir.path().join("remote.git");
    let remote = Repository::init_bare(&remote_path).unwrap();
    let a = commit(&remote, Some("refs/heads/main"), &[], "A");
    let e = engine(&format!(
        "[[policies]]\nkind = \"git\"\nremote = {:?}\ncache_dir = {:?}\non_fetch_error = \"use-cache\"\n",
        remote_path.to_string_lossy(),
        dir.path().join("cache").to_string_lossy()
    ));
    assert!(git_check(&e, &s, Some(a.to_string())).await.allowed());
    drop(remote);
    std::fs::remove_dir_all(&remote_path).unwrap();
    let v = git_check(&e, &s, Some(a.to_string())).await;
    assert!(v.allowed(), "{v:#?}");
    assert!(
        v.warnings[0]
            .1
            .contains("decided from the mirror as last fetched"),
        "{v:#?}"
    );
}

#[tokio::test]
async fn jira_hook_retry_after_a_failed_comment_only_comments() {
    let jira = FakeJira::cloud("bot@acme.com", "api-token").unwrap();
    jira.issue("TKT-11", "QA", &[("51", "Release", "Done")]);
    jira.fail_comments(1);
    let d = dispatcher(&format!(
        "[[hooks]]\nkind = \"jira\"\nurl = \"{}\"\nemail = \"bot@acme.com\"\ntoken = \"api-token\"\nbackoff = \"20ms\"\ntransitions = {{ \"qa->prod\" = \"Release\" }}\n",
        jira.url()
    ));
    d.emit(event("promoted", Stage::Qa, Stage::Prod));
    assert!(d.idle(Duration::from_secs(10)).await);
    assert_eq!(jira.status("TKT-11").as_deref(), Some("Done"));
    assert_eq!(jira.comments("TKT-11").len(), 1);
    let posts = jira
        .fake
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/transitions"))
        .count();
    assert_eq!(posts, 1, "the transition is made once");
}

#[tokio::test]
async fn jira_policy_reports_a_missing_token_variable() {
    let (s, _d) = store().await;
    upload_as(&s, "TKT-16", "/src/a.js", "1", "alice").await;
    let e = engine(
        "[[policies]]\nkind = \"jira\"\nurl = \"http://127.0.0.1:9\"\nemail = \"bot@acme.com\"\ntoken_env = \"STAMP_TEST_UNSET_TOKEN\"\n",
    );
    assert_eq!(
        reasons(&e.check(&ctx(&s, "TKT-16", Stage::Qa).await).await),
        vec!["jira: Jira credentials: environment variable STAMP_TEST_UNSET_TOKEN is not set"]
    );
}

#[tokio::test]
async fn git_over_https_reports_a_missing_token_and_an_unreachable_remote() {
    let (s, _d) = store().await;
    upload_as(&s, "TKT-7", "/src/a.js", "1", "alice").await;
    let dir = tempfile::tempdir().unwrap();
    // A token named by an unset variable: a clear refusal, no fetch attempted.
    let e = engine(&format!(
        "[[policies]]\nkind = \"git\"\nremote = \"https://127.0.0.1:1/shop.git\"\ncache_dir = {:?}\ntoken_env = \"STAMP_TEST_UNSET_GIT_TOKEN\"\n",
        dir.path().join("cache")
    ));
    let v = git_check(&e, &s, Some("abcdef12".into())).await;
    assert_denied(&v, "STAMP_TEST_UNSET_GIT_TOKEN is not set");
    // https is supported (libgit2 with TLS): an unreachable server is a fetch error.
    let e = engine(&format!(
        "[[policies]]\nkind = \"git\"\nremote = \"https://127.0.0.1:1/shop.git\"\ncache_dir = {:?}\ntoken = \"t\"\n",
        dir.path().join("cache2")
    ));
    let v = git_check(&e, &s, Some("abcdef12".into())).await;
    assert_denied(&v, "cannot fetch");
}

// ------------------------------------------------------------------ GitHub

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";
const PR_HEAD: &str = "89abcdef0123456789abcdef0123456789abcdef";

fn github_policy(url: &str, extra: &str) -> Engine {
    engine(&format!(
        r#"[[policies]]
kind = "github"
repo = "acme/shop"
api = "{url}"
token = "gh-token"
timeout = "2s"
max_retry_wait = "1s"
{extra}"#
    ))
}

/// The context of releasing `k` (in qa) with the branch and commit `stamp` sends.
async fn release_ctx(store: &SharedStore, k: &str, branch: &str, commit: &str) -> TransitionCtx {
    let actor = Actor {
        name: "bob".into(),
        commit: Some(commit.into()),
        branch: Some(branch.into()),
        role: None,
        source: None,
    };
    ctx_for(store, k, Stage::Prod, actor, "http://127.0.0.1:9").await
}

#[tokio::test]
async fn github_policy_needs_an_approved_pull_request_with_green_checks() {
    let gh = FakeGitHub::start("acme/shop", "gh-token").unwrap();
    let (s, _dir) = store().await;
    ticket_in_qa(&s, "TKT-80").await;
    let e = github_policy(gh.url(), "checks = [\"build\", \"test\"]");
    let c = release_ctx(&s, "TKT-80", "feature/TKT-80", SHA).await;

    // No pull request for the branch.
    assert_denied(
        &e.check(&c).await,
        "no open pull request for branch feature/TKT-80",
    );

    let pr = gh.pull("feature/TKT-80", PR_HEAD);
    // 120 reviews: the verdict is read across pages (Link: rel="next").
    for i in 0..119 {
        gh.review(pr, &format!("commenter{i}"), "COMMENTED");
    }
    gh.review(pr, "carol", "CHANGES_REQUESTED");
    gh.check_run(PR_HEAD, "build", "completed", Some("success"));
    gh.check_run(PR_HEAD, "test", "in_progress", None);
    let v = e.check(&c).await;
    assert_denied(&v, "carol requested changes on pull request #1");
    assert_denied(&v, "check `test` is in_progress");
    assert!(
        v.warnings
            .iter()
            .any(|(_, w)| w
                .contains("the ticket's code is from 0123456, pull request #1 is at 89abcde")),
        "{v:#?}"
    );
    // Carol approves (her latest review counts), the tests pass.
    gh.review(pr, "carol", "APPROVED");
    gh.check_run(PR_HEAD, "test", "completed", Some("failure"));
    assert_denied(&e.check(&c).await, "check `test` is failure");
    gh.check_run(PR_HEAD, "test", "completed", Some("success"));
    let v = e.check(&c).await;
    assert!(v.allowed(), "{v:#?}");
    // A required check that never reported.
    let strict = github_policy(gh.url(), "checks = [\"build\", \"deploy-preview\"]");
    assert_denied(
        &strict.check(&c).await,
        "required check `deploy-preview` has not reported",
    );
    // Reviews were read page by page.
    let pages = gh.fake.requests_to("/repos/acme/shop/pulls/1/reviews");
    assert!(
        pages.iter().any(|r| r.query.contains("page=2")),
        "{pages:?}"
    );
    // GitHub's own headers on every call.
    let r = &gh.fake.requests()[0];
    assert_eq!(
        r.header("authorization").as_deref(),
        Some("Bearer gh-token")
    );
    assert_eq!(
        r.header("accept").as_deref(),
        Some("application/vnd.github+json")
    );
    assert_eq!(
        r.header("x-github-api-version").as_deref(),
        Some("2022-11-28")
    );
    assert!(r.header("user-agent").unwrap().starts_with("ticket-stamp/"));
}

#[tokio::test]
async fn github_policy_errors_say_what_is_wrong_and_fail_closed() {
    let gh = FakeGitHub::start("acme/shop", "gh-token").unwrap();
    let (s, _dir) = store().await;
    ticket_in_qa(&s, "TKT-81").await;
    gh.pull("TKT-81", PR_HEAD);
    let c = release_ctx(&s, "TKT-81", "TKT-81", PR_HEAD).await;

    // A wrong token: 401 Bad credentials.
    let bad = engine(&format!(
        "[[policies]]\nkind = \"github\"\nrepo = \"acme/shop\"\napi = \"{}\"\ntoken = \"wrong\"\n",
        gh.url()
    ));
    assert_denied(
        &bad.check(&c).await,
        "GitHub rejected the credentials (401)",
    );
    // A repository the token cannot see: 404.
    let other = engine(&format!(
        "[[policies]]\nkind = \"github\"\nrepo = \"acme/secret\"\napi = \"{}\"\ntoken = \"gh-token\"\n",
        gh.url()
    ));
    assert_denied(
        &other.check(&c).await,
        "GitHub has no /repos/acme/secret/pulls",
    );
    // A spent rate limit (403 with x-ratelimit-remaining: 0) resetting in
    // an hour: not waited for, and named.
    gh.set_rate_limited(true);
    let e = github_policy(gh.url(), "");
    assert_denied(
        &e.check(&c).await,
        "GitHub is rate limiting this token (403); it resets in",
    );
    let lenient = github_policy(gh.url(), "on_outage = \"allow\"");
    let v = lenient.check(&c).await;
    assert!(v.allowed(), "{v:#?}");
    assert!(
        v.warnings.iter().any(|(_, w)| w.contains("not checked")),
        "{v:#?}"
    );
    gh.set_rate_limited(false);
    // A short secondary rate limit (Retry-After: 1) is waited out.
    gh.fake.fail_next(
        1,
        403,
        r#"{"message":"You have exceeded a secondary rate limit."}"#,
        Some(1),
    );
    gh.review(1, "carol", "APPROVED");
    let v = e.check(&c).await;
    assert!(v.allowed(), "{v:#?}");
    // GitHub down: an outage, closed by default.
    gh.fake.set_down(true);
    assert_denied(&e.check(&c).await, "GitHub answered 503");
    gh.fake.set_down(false);
    // No branch known at all (a panel click, a ticket never synced from git).
    let plain = ctx(&s, "TKT-81", Stage::Prod).await;
    assert_denied(&e.check(&plain).await, "no branch is known for this ticket");
}

#[tokio::test]
async fn github_policy_authenticates_as_a_github_app() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("app.pem");
    let public = dir.path().join("app.pub.pem");
    let ok = std::process::Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&key)
        .arg("2048")
        .status()
        .or_else(|_| {
            std::process::Command::new("openssl")
                .args(["genrsa", "-out"])
                .arg(&key)
                .arg("2048")
                .status()
        })
        .unwrap();
    assert!(ok.success(), "openssl genrsa");
    let ok = std::process::Command::new("openssl")
        .args(["rsa", "-pubout", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(&public)
        .status()
        .unwrap();
    assert!(ok.success(), "openssl rsa -pubout");
    let gh = FakeGitHub::start("acme/shop", "not-used").unwrap();
    gh.app(4242, 77, &std::fs::read_to_string(&public).unwrap());
    let (s, _dir) = store().await;
    ticket_in_qa(&s, "TKT-82").await;
    let pr = gh.pull("TKT-82", PR_HEAD);
    gh.review(pr, "carol", "APPROVED");
    std::env::set_var(
        "STAMP_TEST_GH_APP_KEY",
        std::fs::read_to_string(&key).unwrap(),
    );
    let e = engine(&format!(
        "[[policies]]\nkind = \"github\"\nrepo = \"acme/shop\"\napi = \"{}\"\napp_id = 4242\ninstallation_id = 77\nprivate_key_env = \"STAMP_TEST_GH_APP_KEY\"\nrequire_checks = false\n",
        gh.url()
    ));
    let c = release_ctx(&s, "TKT-82", "TKT-82", PR_HEAD).await;
    let v = e.check(&c).await;
    assert!(v.allowed(), "{v:#?}");
    let v = e.check(&c).await;
    assert!(v.allowed(), "{v:#?}");
    // One installation token, bought once and reused.
    assert_eq!(
        gh.fake
            .requests_to("/app/installations/77/access_tokens")
            .len(),
        1
    );
    let pulls = gh.fake.requests_to("/repos/acme/shop/pulls");
    assert!(pulls[0]
        .header("authorization")
        .unwrap()
        .starts_with("Bearer ghs_fake"));
    // A wrong installation: 404, named.
    let wrong = engine(&format!(
        "[[policies]]\nkind = \"github\"\nrepo = \"acme/shop\"\napi = \"{}\"\napp_id = 4242\ninstallation_id = 78\nprivate_key_env = \"STAMP_TEST_GH_APP_KEY\"\n",
        gh.url()
    ));
    assert_denied(
        &wrong.check(&c).await,
        "GitHub has no /app/installations/78/access_tokens",
    );
}

fn github_event(kind: &str, from: Option<Stage>, to: Stage, commit: Option<&str>) -> Event {
    Event {
        kind: stamp_control::hooks::EventKind::parse(kind).unwrap(),
        ticket: key("TKT-90"),
        from,
        to: Some(to),
        actor: "alice".into(),
        share_link: Some(format!(
            "https://app.example.com/?{}=TKT-90",
            if to == Stage::Dev { "dev" } else { "qa" }
        )),
        branch: commit.map(|_| "TKT-90".to_string()),
        commit: commit.map(str::to_string),
        detail: None,
        version: 0,
        rollout: None,
        at_ms: 1_700_000_000_000 + kind.len() as u64 * 10 + u64::from(to as u8),
    }
}

#[tokio::test]
async fn github_hook_keeps_one_comment_deployments_and_a_status_per_stage() {
    let gh = FakeGitHub::start("acme/shop", "gh-token").unwrap();
    let pr = gh.pull("TKT-90", SHA);
    // 120 comments of others before ours: found again across pages.
    gh.foreign_comments(pr, 120);
    let d = dispatcher(&format!(
        "[[hooks]]\nkind = \"github\"\nrepo = \"acme/shop\"\napi = \"{}\"\ntoken = \"gh-token\"\nbackoff = \"20ms\"\n",
        gh.url()
    ));
    d.emit(github_event("uploaded", None, Stage::Dev, Some(SHA)));
    assert!(d.idle(Duration::from_secs(10)).await);
    // A 503 on the way: retried without repeating what was done.
    gh.fake.fail_next(1, 503, "", None);
    d.emit(github_event(
        "promoted",
        Some(Stage::Dev),
        Stage::Qa,
        Some(SHA),
    ));
    assert!(d.idle(Duration::from_secs(10)).await);
    // A panel click: no commit or branch with the event; the last seen are used.
    d.emit(github_event("reverted", Some(Stage::Qa), Stage::Dev, None));
    assert!(d.idle(Duration::from_secs(10)).await);

    let comments = gh.comments(pr);
    assert_eq!(comments.len(), 121, "one comment of ours, edited in place");
    let ours = comments.last().unwrap();
    assert!(ours.starts_with("<!-- ticket-stamp:TKT-90 -->"), "{ours}");
    assert!(ours.contains("`TKT-90` is in **dev**"), "{ours}");
    assert!(
        ours.contains("alice reverted TKT-90 from qa to dev"),
        "{ours}"
    );
    let deployments = gh.deployments();
    assert_eq!(
        deployments
            .iter()
            .map(|(e, r, _)| (e.as_str(), r.as_str()))
            .collect::<Vec<_>>(),
        [("TKT-90/dev", SHA), ("TKT-90/qa", SHA)],
        "{deployments:?}"
    );
    assert_eq!(deployments[0].2, ["in_progress", "success"]);
    assert_eq!(
        deployments[1].2,
        ["in_progress", "success", "inactive"],
        "reverted out of qa"
    );
    let statuses: Vec<(String, String)> = gh
        .statuses(SHA)
        .into_iter()
        .map(|(c, s, _)| (c, s))
        .collect();
    assert_eq!(
        statuses,
        [
            ("ticket-stamp/TKT-90".to_string(), "pending".to_string()),
            ("ticket-stamp/TKT-90".to_string(), "success".to_string()),
            ("ticket-stamp/TKT-90".to_string(), "pending".to_string()),
        ]
    );
    assert_eq!(
        gh.fake
            .requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path == "/repos/acme/shop/deployments")
            .count(),
        2,
        "the retried event did not deploy twice"
    );
}

#[tokio::test]
async fn github_hook_gives_up_on_what_retrying_cannot_fix() {
    let gh = FakeGitHub::start("acme/shop", "gh-token").unwrap();
    let pr = gh.pull("TKT-90", SHA);
    let d = dispatcher(&format!(
        "[[hooks]]\nkind = \"github\"\nrepo = \"acme/shop\"\napi = \"{}\"\ntoken = \"gh-token\"\nbackoff = \"20ms\"\nmax_attempts = 3\nstatuses = false\n",
        gh.url()
    ));
    // A commit GitHub does not know: 422 No ref found, not retried.
    d.emit(github_event(
        "uploaded",
        None,
        Stage::Dev,
        Some("ffffffffffffffffffffffffffffffffffffffff"),
    ));
    assert!(d.idle(Duration::from_secs(10)).await);
    let posts = |path: &str| {
        gh.fake
            .requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path == path)
            .count()
    };
    assert_eq!(posts("/repos/acme/shop/deployments"), 1, "422 is permanent");
    assert!(gh.comments(pr).is_empty());
    // A wrong token: 401, not retried either.
    let bad = dispatcher(&format!(
        "[[hooks]]\nkind = \"github\"\nrepo = \"acme/shop\"\napi = \"{}\"\ntoken = \"nope\"\nbackoff = \"20ms\"\nmax_attempts = 3\n",
        gh.url()
    ));
    let before = gh.fake.requests().len();
    bad.emit(github_event(
        "promoted",
        Some(Stage::Dev),
        Stage::Qa,
        Some(SHA),
    ));
    assert!(bad.idle(Duration::from_secs(10)).await);
    assert_eq!(gh.fake.requests().len() - before, 1);
    // Rate limited: retried (up to max_attempts), then given up.
    gh.set_rate_limited(true);
    let before = gh.fake.requests().len();
    d.emit(github_event(
        "promoted",
        Some(Stage::Dev),
        Stage::Qa,
        Some(SHA),
    ));
    assert!(d.idle(Duration::from_secs(10)).await);
    assert_eq!(gh.fake.requests().len() - before, 3);
}

#[test]
fn github_settings_are_checked() {
    for (text, needle) in [
        ("repo = \"acme\"\ntoken = \"t\"", "is not owner/name"),
        ("token = \"t\"", "repo"),
        ("repo = \"a/b\"", "token"),
        (
            "repo = \"a/b\"\ntoken = \"t\"\napp_id = 1",
            "give a token or a GitHub App",
        ),
        (
            "repo = \"a/b\"\napp_id = 1\nprivate_key = \"k\"",
            "installation_id",
        ),
        (
            "repo = \"a/b\"\ntoken = \"t\"\napi = \"ftp://x\"",
            "is not an http(s) URL",
        ),
    ] {
        let err = Engine::from_config(&tables(
            &format!("[[policies]]\nkind = \"github\"\n{text}\n"),
            "policies",
        ))
        .err()
        .unwrap_or_default()
        .join("\n");
        assert!(err.contains(needle), "{text}: {err}");
    }
    let err = Dispatcher::from_config(&tables(
        "[[hooks]]\nkind = \"github\"\nrepo = \"a/b\"\ntoken = \"t\"\nenvironment = \"{stage}\"\n",
        "hooks",
    ))
    .err()
    .unwrap_or_default()
    .join("\n");
    assert!(err.contains("must name both {ticket} and {stage}"), "{err}");
}

// ------------------------------------------------------------------ GitLab

fn gitlab_policy(url: &str, extra: &str) -> Engine {
    engine(&format!(
        r#"[[policies]]
kind = "gitlab"
project = "acme/shop"
url = "{url}"
token = "gl-token"
timeout = "2s"
max_retry_wait = "1s"
{extra}"#
    ))
}

#[tokio::test]
async fn gitlab_policy_needs_an_approved_merge_request_with_a_green_pipeline() {
    let gl = FakeGitLab::start("acme/shop", "gl-token", "gl-read").unwrap();
    let (s, _dir) = store().await;
    ticket_in_qa(&s, "TKT-82").await;
    let e = gitlab_policy(gl.url(), "");
    let c = release_ctx(&s, "TKT-82", "feature/TKT-82", SHA).await;

    // No merge request for the branch.
    assert_denied(
        &e.check(&c).await,
        "no open merge request for branch feature/TKT-82 in acme/shop",
    );

    // A draft, no approval, no pipeline, and at another commit: every
    // reason at once, and a warning about the commit.
    let mr = gl.merge_request("feature/TKT-82", PR_HEAD);
    gl.set_draft(mr, true);
    let v = e.check(&c).await;
    assert_denied(&v, "merge request !1 is a draft");
    assert_denied(&v, "merge request !1 has no approval");
    assert_denied(
        &v,
        "merge request !1 has no pipeline for its head commit 89abcdef",
    );
    assert!(
        v.warnings.iter().any(|(_, w)| w
            .contains("the ticket's code is from 01234567, merge request !1 is at 89abcdef")),
        "{v:#?}"
    );
    gl.set_draft(mr, false);
    gl.approve(mr, "carol");
    // A pipeline of an older commit does not count; a running one neither.
    gl.pipeline(mr, SHA, "success");
    assert_denied(
        &e.check(&c).await,
        "ran on 01234567, not on its head commit 89abcdef",
    );
    gl.pipeline(mr, PR_HEAD, "running");
    assert_denied(&e.check(&c).await, "of merge request !1 is running");
    gl.pipeline(mr, PR_HEAD, "failed");
    assert_denied(&e.check(&c).await, "of merge request !1 is failed");
    gl.pipeline(mr, PR_HEAD, "success");
    let v = e.check(&c).await;
    assert!(v.allowed(), "{v:#?}");

    // Two approvals wanted.
    let two = gitlab_policy(gl.url(), "min_approvals = 2");
    assert_denied(
        &two.check(&c).await,
        "merge request !1 has 1 approval (carol), 2 required",
    );
    // A tier with approval rules: each rule must be met.
    gl.rule(mr, "Security", 2);
    let v = e.check(&c).await;
    assert_denied(
        &v,
        "approval rule `Security` of merge request !1 needs 2 more approvals (0 of 2)",
    );
    gl.approve(mr, "dave");
    assert_denied(
        &e.check(&c).await,
        "approval rule `Security` of merge request !1 needs 1 more approval (1 of 2)",
    );
    gl.approve(mr, "erin");
    let v = e.check(&c).await;
    assert!(v.allowed(), "{v:#?}");
    let v = two.check(&c).await;
    assert!(v.allowed(), "{v:#?}");

    // The project by its numeric id, and an instance URL already ending
    // in /api/v4, reach the same project.
    let by_id = engine(&format!(
        "[[policies]]\nkind = \"gitlab\"\nproject = \"42\"\nurl = \"{}/api/v4\"\ntoken = \"gl-token\"\n",
        gl.url()
    ));
    let v = by_id.check(&c).await;
    assert!(v.allowed(), "{v:#?}");
    // GitLab's auth header on every call; the project path escaped.
    let all = gl.fake.requests();
    assert!(all
        .iter()
        .all(|r| r.header("private-token").as_deref() == Some("gl-token")));
    assert!(
        all.iter()
            .any(|r| r.path == "/api/v4/projects/acme%2Fshop/merge_requests"
                && r.query.contains("source_branch=feature%2FTKT-82")),
        "{:?}",
        all.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
    assert!(all
        .iter()
        .any(|r| r.path == "/api/v4/projects/42/merge_requests/1/approvals"));
    assert!(all[0]
        .header("user-agent")
        .unwrap()
        .starts_with("ticket-stamp/"));
}

#[tokio::test]
async fn gitlab_policy_errors_say_what_is_wrong_and_fail_closed() {
    let gl = FakeGitLab::start("acme/shop", "gl-token", "gl-read").unwrap();
    let (s, _dir) = store().await;
    ticket_in_qa(&s, "TKT-83").await;
    let mr = gl.merge_request("TKT-83", PR_HEAD);
    gl.approve(mr, "carol");
    gl.pipeline(mr, PR_HEAD, "success");
    let c = release_ctx(&s, "TKT-83", "TKT-83", PR_HEAD).await;
    let e = gitlab_policy(gl.url(), "");
    let v = e.check(&c).await;
    assert!(v.allowed(), "{v:#?}");
    // A read_api token is enough for the policy.
    let read = engine(&format!(
        "[[policies]]\nkind = \"gitlab\"\nproject = \"acme/shop\"\nurl = \"{}\"\ntoken = \"gl-read\"\n",
        gl.url()
    ));
    let v = read.check(&c).await;
    assert!(v.allowed(), "{v:#?}");

    // A wrong, expired or revoked token: 401.
    let bad = engine(&format!(
        "[[policies]]\nkind = \"gitlab\"\nproject = \"acme/shop\"\nurl = \"{}\"\ntoken = \"wrong\"\n",
        gl.url()
    ));
    assert_denied(
        &bad.check(&c).await,
        "GitLab rejected the token (401): it is wrong, expired or revoked: 401 Unauthorized",
    );
    // A project the token cannot see: 404, named.
    let other = engine(&format!(
        "[[policies]]\nkind = \"gitlab\"\nproject = \"acme/secret\"\nurl = \"{}\"\ntoken = \"gl-token\"\n",
        gl.url()
    ));
    assert_denied(
        &other.check(&c).await,
        "GitLab has no /projects/acme%2Fsecret/merge_requests (404): check `project`",
    );
    // 403 and 409, each in its words.
    gl.fake
        .fail_next(1, 403, r#"{"message":"403 Forbidden"}"#, None);
    assert_denied(
        &e.check(&c).await,
        "GitLab refused access (403): the token needs the `api` scope and a role on acme/shop",
    );
    gl.fake.fail_next(1, 409, r#"{"message":"Conflict"}"#, None);
    assert_denied(
        &e.check(&c).await,
        "GitLab reported a conflict (409): Conflict",
    );
    // A spent rate limit resetting in an hour: not waited for, and named.
    gl.set_rate_limited(true);
    assert_denied(
        &e.check(&c).await,
        "GitLab is rate limiting this token (429); it resets in 3600s",
    );
    let lenient = gitlab_policy(gl.url(), "on_outage = \"allow\"");
    let v = lenient.check(&c).await;
    assert!(v.allowed(), "{v:#?}");
    assert!(
        v.warnings
            .iter()
            .any(|(_, w)| w.contains("gitlab: not checked: GitLab is rate limiting")),
        "{v:#?}"
    );
    gl.set_rate_limited(false);
    // A short limit (Retry-After: 1) is waited out.
    gl.fake
        .fail_next(1, 429, r#"{"message":"Retry later"}"#, Some(1));
    let v = e.check(&c).await;
    assert!(v.allowed(), "{v:#?}");
    // GitLab down, slow, or sending what is not JSON: closed by default.
    gl.fake.set_down(true);
    assert_denied(&e.check(&c).await, "GitLab answered 503");
    gl.fake.set_down(false);
    gl.fake.set_delay(Duration::from_secs(3));
    assert_denied(&e.check(&c).await, "did not answer in time");
    gl.fake.set_delay(Duration::ZERO);
    gl.fake.fail_next(1, 200, "<html>sign in</html>", None);
    assert_denied(&e.check(&c).await, "GitLab sent a body that is not JSON");
    // Unreachable.
    let gone = gitlab_policy("http://127.0.0.1:9", "");
    assert_denied(
        &gone.check(&c).await,
        "GitLab at http://127.0.0.1:9/api/v4 is unreachable",
    );
    // No branch known at all (a panel click, a ticket never synced from git).
    let plain = ctx(&s, "TKT-83", Stage::Prod).await;
    assert_denied(&e.check(&plain).await, "no branch is known for this ticket");
}

fn gitlab_event(kind: &str, from: Option<Stage>, to: Stage, commit: Option<&str>) -> Event {
    Event {
        ticket: key("TKT-91"),
        branch: commit.map(|_| "TKT-91-checkout".to_string()),
        share_link: Some(format!(
            "https://app.example.com/?{}=TKT-91",
            if to == Stage::Dev { "dev" } else { "qa" }
        )),
        ..github_event(kind, from, to, commit)
    }
}

#[tokio::test]
async fn gitlab_hook_keeps_one_note_environments_and_a_status_per_stage() {
    let gl = FakeGitLab::start("acme/shop", "gl-token", "gl-read").unwrap();
    let mr = gl.merge_request("TKT-91-checkout", SHA);
    // 150 notes of others and of GitLab itself before ours, and someone
    // quoting our marker: ours is found again across pages, theirs left be.
    gl.foreign_notes(mr, 150);
    gl.note_by(mr, "mallory", "<!-- ticket-stamp:TKT-91 -->\nnot the bot");
    let d = dispatcher(&format!(
        "[[hooks]]\nkind = \"gitlab\"\nproject = \"acme/shop\"\nurl = \"{}\"\ntoken = \"gl-token\"\nbackoff = \"20ms\"\n",
        gl.url()
    ));
    d.emit(gitlab_event("uploaded", None, Stage::Dev, Some(SHA)));
    assert!(d.idle(Duration::from_secs(10)).await);
    // Another upload in dev: the status is already pending (GitLab refuses
    // pending → pending with a 400); that is not a failure to retry.
    let posts = |path: &str| {
        gl.fake
            .requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path == path)
            .count()
    };
    let statuses_path = format!("/api/v4/projects/acme%2Fshop/statuses/{SHA}");
    let mut again = gitlab_event("uploaded", None, Stage::Dev, Some(SHA));
    again.at_ms += 1;
    d.emit(again);
    assert!(d.idle(Duration::from_secs(10)).await);
    assert_eq!(posts(&statuses_path), 2, "pending → pending is not retried");
    // A 503 on the way: retried without repeating what was done.
    gl.set_link_only(true);
    gl.fake.fail_next(1, 503, "", None);
    d.emit(gitlab_event(
        "promoted",
        Some(Stage::Dev),
        Stage::Qa,
        Some(SHA),
    ));
    assert!(d.idle(Duration::from_secs(10)).await);
    // A panel click: no commit or branch with the event; the last seen are used.
    d.emit(gitlab_event("reverted", Some(Stage::Qa), Stage::Dev, None));
    assert!(d.idle(Duration::from_secs(10)).await);
    gl.set_link_only(false);

    let notes = gl.notes(mr);
    let ours: Vec<&(String, String)> = notes
        .iter()
        .filter(|(who, _)| who == "project_42_bot_stamp")
        .collect();
    assert_eq!(
        ours.len(),
        1,
        "one note of ours, edited in place: {notes:?}"
    );
    let body = &ours[0].1;
    assert!(body.starts_with("<!-- ticket-stamp:TKT-91 -->"), "{body}");
    assert!(body.contains("`TKT-91` is in **dev**"), "{body}");
    assert!(
        body.contains("alice reverted TKT-91 from qa to dev"),
        "{body}"
    );
    assert!(
        body.contains("Preview: https://app.example.com/?dev=TKT-91"),
        "{body}"
    );
    assert!(
        notes
            .iter()
            .any(|(who, b)| who == "mallory" && b.ends_with("not the bot")),
        "someone else's note is never edited"
    );

    // An environment per stage with the share link; qa stopped on revert.
    let envs: Vec<(String, Option<String>, String, String)> = gl
        .environments()
        .into_iter()
        .map(|e| (e.name, e.external_url, e.tier, e.state))
        .collect();
    assert_eq!(
        envs,
        [
            (
                "TKT-91/dev".to_string(),
                Some("https://app.example.com/?dev=TKT-91".to_string()),
                "development".to_string(),
                "available".to_string()
            ),
            (
                "TKT-91/qa".to_string(),
                Some("https://app.example.com/?qa=TKT-91".to_string()),
                "testing".to_string(),
                "stopped".to_string()
            ),
        ]
    );
    let deps: Vec<(String, String, String, Vec<String>)> = gl
        .deployments()
        .into_iter()
        .map(|x| (x.environment, x.sha, x.git_ref, x.statuses))
        .collect();
    let ran = vec!["running".to_string(), "success".to_string()];
    assert_eq!(
        deps,
        [
            (
                "TKT-91/dev".into(),
                SHA.into(),
                "TKT-91-checkout".into(),
                ran.clone()
            ),
            (
                "TKT-91/dev".into(),
                SHA.into(),
                "TKT-91-checkout".into(),
                ran.clone()
            ),
            (
                "TKT-91/qa".into(),
                SHA.into(),
                "TKT-91-checkout".into(),
                ran.clone()
            ),
        ]
    );
    assert_eq!(
        posts("/api/v4/projects/acme%2Fshop/deployments"),
        3,
        "the retried event did not deploy twice"
    );
    // The status: pending, moved to success by the promotion; the revert
    // starts a new one (GitLab keeps a finished status and adds another).
    let states: Vec<(String, String, Option<String>)> = gl
        .statuses(SHA)
        .into_iter()
        .map(|s| (s.name, s.state, s.git_ref))
        .collect();
    let name = "ticket-stamp/TKT-91".to_string();
    let branch = Some("TKT-91-checkout".to_string());
    assert_eq!(
        states,
        [
            (name.clone(), "success".to_string(), branch.clone()),
            (name.clone(), "pending".to_string(), branch.clone()),
        ]
    );
    // Closed: the status canceled, every environment stopped.
    d.emit(gitlab_event(
        "closed",
        Some(Stage::Dev),
        Stage::Closed,
        None,
    ));
    assert!(d.idle(Duration::from_secs(10)).await);
    let last = gl.statuses(SHA).pop().unwrap();
    assert_eq!(last.state, "canceled");
    assert!(
        last.description.contains("TKT-91 closed by alice"),
        "{last:?}"
    );
    assert!(
        gl.environments().iter().all(|e| e.state == "stopped"),
        "{:?}",
        gl.environments()
    );
    // Re-opened: dev deploys again, its environment available.
    d.emit(gitlab_event(
        "reopened",
        Some(Stage::Closed),
        Stage::Dev,
        Some(SHA),
    ));
    assert!(d.idle(Duration::from_secs(10)).await);
    let dev = gl
        .environments()
        .into_iter()
        .find(|e| e.name == "TKT-91/dev")
        .unwrap();
    assert_eq!(dev.state, "available");
}

#[tokio::test]
async fn gitlab_hook_gives_up_on_what_retrying_cannot_fix() {
    let gl = FakeGitLab::start("acme/shop", "gl-token", "gl-read").unwrap();
    let mr = gl.merge_request("TKT-91-checkout", SHA);
    let hook = |token: &str, extra: &str| {
        dispatcher(&format!(
            "[[hooks]]\nkind = \"gitlab\"\nproject = \"acme/shop\"\nurl = \"{}\"\ntoken = \"{token}\"\nbackoff = \"20ms\"\nmax_attempts = 3\n{extra}",
            gl.url()
        ))
    };
    // A token without the `api` scope: 403 insufficient_scope, not retried.
    let read = hook("gl-read", "");
    read.emit(gitlab_event("uploaded", None, Stage::Dev, Some(SHA)));
    assert!(read.idle(Duration::from_secs(10)).await);
    let writes = || {
        gl.fake
            .requests()
            .iter()
            .filter(|r| r.method != "GET")
            .count()
    };
    assert_eq!(writes(), 1, "403 is permanent");
    assert!(gl.notes(mr).is_empty());
    // A commit GitLab does not know: 404, not retried.
    let d = hook("gl-token", "environments = false\nnote = false\n");
    let before = writes();
    d.emit(gitlab_event(
        "uploaded",
        None,
        Stage::Dev,
        Some("ffffffffffffffffffffffffffffffffffffffff"),
    ));
    assert!(d.idle(Duration::from_secs(10)).await);
    assert_eq!(writes() - before, 1);
    // Rate limited: retried (up to max_attempts), then given up.
    gl.set_rate_limited(true);
    let before = gl.fake.requests().len();
    d.emit(gitlab_event(
        "promoted",
        Some(Stage::Dev),
        Stage::Qa,
        Some(SHA),
    ));
    assert!(d.idle(Duration::from_secs(10)).await);
    assert_eq!(gl.fake.requests().len() - before, 3);
}

#[test]
fn gitlab_settings_are_checked() {
    for (text, needle) in [
        ("project = \"acme\"\ntoken = \"t\"", "is not a project path"),
        (
            "project = \"a/../b\"\ntoken = \"t\"",
            "is not a project path",
        ),
        ("token = \"t\"", "project"),
        ("project = \"a/b\"", "token"),
        (
            "project = \"a/b\"\ntoken = \"t\"\ntoken_env = \"T\"",
            "give `token` or `token_env`, not both",
        ),
        (
            "project = \"a/b\"\ntoken = \"t\"\nurl = \"gitlab.example.com\"",
            "is not the http(s) URL of a GitLab instance",
        ),
        (
            "project = \"a/b\"\ntoken = \"t\"\nurl = \"https://user:pw@gitlab.example.com\"",
            "is not the http(s) URL of a GitLab instance",
        ),
        (
            "project = \"a/b\"\ntoken = \"t\"\nrequire_approval = false\nmin_approvals = 2",
            "has no effect",
        ),
        (
            "project = \"a/b\"\ntoken = \"t\"\nchecks = [\"x\"]",
            "checks",
        ),
    ] {
        let err = Engine::from_config(&tables(
            &format!("[[policies]]\nkind = \"gitlab\"\n{text}\n"),
            "policies",
        ))
        .err()
        .unwrap_or_default()
        .join("\n");
        assert!(err.contains(needle), "{text}: {err}");
    }
    for (environment, needle) in [
        ("{stage}", "must name both {ticket} and {stage}"),
        ("/{ticket}/{stage}", "is not a GitLab environment name"),
        ("{ticket}:{stage}", "is not a GitLab environment name"),
    ] {
        let err = Dispatcher::from_config(&tables(
            &format!("[[hooks]]\nkind = \"gitlab\"\nproject = \"a/b\"\ntoken = \"t\"\nenvironment = \"{environment}\"\n"),
            "hooks",
        ))
        .err()
        .unwrap_or_default()
        .join("\n");
        assert!(err.contains(needle), "{environment}: {err}");
    }
}

// ------------------------------------------------------------------ git: the bytes

/// A commit on `refs/heads/main` of `repo` holding `files` (path, text).
fn commit_files(repo: &Repository, files: &[(&str, &str)]) -> Oid {
    let mut index = repo.index().unwrap();
    let root = repo.workdir().unwrap().to_path_buf();
    for (path, text) in files {
        let full = root.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(&full, text).unwrap();
        index.add_path(Path::new(path)).unwrap();
    }
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let parent = repo
        .refname_to_id("refs/heads/main")
        .ok()
        .map(|id| repo.find_commit(id).unwrap());
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    repo.commit(
        Some("refs/heads/main"),
        &sig(),
        &sig(),
        "files",
        &tree,
        &parents,
    )
    .unwrap()
}

/// An upload as `stamp` makes it from `commit`, naming `source` when the
/// CLI found the body to be that file of the commit.
async fn upload_from(
    store: &SharedStore,
    k: &str,
    path: &str,
    body: &str,
    commit: Oid,
    source: Option<&str>,
) {
    let actor = Actor {
        name: "alice".into(),
        commit: Some(commit.to_string()),
        branch: Some("main".into()),
        role: None,
        source: source.map(str::to_string),
    };
    Desk::detached(store.clone())
        .upload(&key(k), path, path, Bytes::from(body.to_string()), &actor)
        .await
        .unwrap();
}

#[tokio::test]
async fn git_checks_the_uploaded_bytes_against_the_files_of_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::init(dir.path().join("shop")).unwrap();
    let c = commit_files(
        &repo,
        &[
            ("src/a.js", "export const a = 1;\n"),
            ("src/b.js", "export const b = 1;\n"),
        ],
    );
    let remote = dir.path().join("shop");
    let cache = dir.path().join("cache");
    let policy = |extra: &str| {
        engine(&format!(
            "[[policies]]\nkind = \"git\"\nremote = {:?}\ncache_dir = {:?}\n{extra}",
            remote.to_string_lossy(),
            cache.to_string_lossy()
        ))
    };
    let (s, _d) = store().await;
    // a is the commit's file; b claims to be but is not; c names no file
    // (built, or changed since the commit).
    upload_from(
        &s,
        "TKT-8",
        "/src/a.js",
        "export const a = 1;\n",
        c,
        Some("src/a.js"),
    )
    .await;
    upload_from(
        &s,
        "TKT-8",
        "/src/b.js",
        "export const b = 'forged';\n",
        c,
        Some("src/b.js"),
    )
    .await;
    upload_from(&s, "TKT-8", "/src/c.js", "export const c = 1;\n", c, None).await;
    let check = |e: Engine| {
        let s = s.clone();
        async move {
            let actor = Actor {
                name: "alice".into(),
                commit: Some(c.to_string()),
                branch: Some("main".into()),
                role: None,
                source: None,
            };
            e.check(&ctx_for(&s, "TKT-8", Stage::Qa, actor, "http://127.0.0.1:9").await)
                .await
        }
    };
    let at = &c.to_string()[..10];
    let v = check(policy("")).await;
    assert_denied(
        &v,
        &format!("/src/b.js: the uploaded bytes are not src/b.js as of {at}"),
    );
    assert_eq!(v.denials.len(), 1, "{v:#?}");
    assert!(
        v.warnings.iter().any(|(_, w)| w.contains(&format!(
            "1 of the 3 modules is not a file of {at} (built, or changed since the commit): /src/c.js: their bytes are not checked"
        ))),
        "{v:#?}"
    );
    // The history says which file each upload was.
    let history = s.history(&key("TKT-8")).await.unwrap();
    assert_eq!(history[0].source.as_deref(), Some("src/a.js"));
    assert_eq!(history[2].source, None);

    // b uploaded again, as the file it is: allowed, c still a warning.
    upload_from(
        &s,
        "TKT-8",
        "/src/b.js",
        "export const b = 1;\n",
        c,
        Some("src/b.js"),
    )
    .await;
    let v = check(policy("")).await;
    assert!(v.allowed(), "{v:#?}");
    assert_eq!(v.warnings.len(), 1, "{v:#?}");
    // Every module must be a file of the commit.
    let v = check(policy("sources = \"require\"")).await;
    assert_denied(&v, "1 of the 3 modules is not a file of");
    assert_denied(&v, "sources = \"require\" wants every module to be one");
    // Or only the commit is checked.
    let v = check(policy("sources = \"ignore\"")).await;
    assert!(v.allowed() && v.warnings.is_empty(), "{v:#?}");
    // A file the commit does not have.
    upload_from(
        &s,
        "TKT-8",
        "/src/c.js",
        "export const c = 1;\n",
        c,
        Some("src/zzz.js"),
    )
    .await;
    assert_denied(
        &check(policy("")).await,
        &format!("/src/c.js: src/zzz.js is not a file of {at}"),
    );
    let err = Engine::from_config(&tables(
        &format!(
            "[[policies]]\nkind = \"git\"\nremote = {:?}\nsources = \"sometimes\"\n",
            remote.to_string_lossy()
        ),
        "policies",
    ))
    .err()
    .unwrap_or_default()
    .join("\n");
    assert!(err.contains("sources"), "{err}");
}
