//! The npm package, as a front-end developer gets it: `cli/npm/pack` writes
//! the launcher and this platform's binary package, a clean folder installs
//! both with `npm install --offline`, and `npx ticket-stamp` runs a real sync
//! against a real proxy, with its settings in `package.json`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use stamp_tests::proxy::binary;
use stamp_tests::run_ok as ok;
use stamp_tests::{client, Origin, Proxy, Route};

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// `npm …` in `dir`, with a private cache and no network needed.
fn npm(dir: &Path, cache: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("npm");
    cmd.args(args)
        .current_dir(dir)
        .env("npm_config_cache", cache)
        .env("npm_config_update_notifier", "false")
        .env("npm_config_fund", "false")
        .env("npm_config_audit", "false");
    cmd
}

/// `cli/npm/pack OUT`: the launcher's tarball and this platform's.
fn pack(out: &Path) -> (PathBuf, PathBuf) {
    let pack = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cli/npm/pack");
    let listed = ok(Command::new(&pack)
        .arg(out)
        .env("STAMP_BINARY", binary("stamp").unwrap()));
    let version = env!("CARGO_PKG_VERSION");
    let launcher = out.join(format!("ticket-stamp-{version}.tgz"));
    let platform = std::fs::read_dir(out)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p != &launcher)
        .expect("the platform package's tarball");
    assert!(listed.contains("ticket-stamp-linux-x64-"), "{listed}");
    (launcher, platform)
}

#[tokio::test]
async fn npx_ticket_stamp_syncs_with_settings_from_package_json() {
    let work = tempfile::tempdir().unwrap();
    let (launcher, platform) = pack(&work.path().join("tarballs"));

    // A project that keeps its settings in package.json.
    let origin = Origin::start().unwrap();
    origin.route(
        "/",
        Route::html("<script type=module src=/src/app.js></script>"),
    );
    let proxy = Proxy::start(&origin.url, &[]).unwrap();
    let app = work.path().join("app");
    std::fs::create_dir_all(app.join("src")).unwrap();
    std::fs::write(app.join("src/app.js"), "export const v = 'from npm';\n").unwrap();
    std::fs::write(
        app.join("package.json"),
        format!(
            r#"{{"name":"shop","private":true,"ticket-stamp":{{"server":"{}","folder":"src","url_path":"/src"}}}}"#,
            proxy.url
        ),
    )
    .unwrap();
    let cache = work.path().join("npm-cache");
    ok(&mut npm(
        &app,
        &cache,
        &[
            "install",
            "--offline",
            "--no-save",
            &platform.to_string_lossy(),
            &launcher.to_string_lossy(),
        ],
    ));
    let help = ok(&mut npm(
        &app,
        &cache,
        &["exec", "--offline", "--", "ticket-stamp", "--help"],
    ));
    assert!(help.contains("Usage: stamp"), "{help}");
    let synced = ok(&mut npm(
        &app,
        &cache,
        &[
            "exec",
            "--offline",
            "--",
            "stamp",
            "NPM-1",
            "--update",
            "--once",
        ],
    ));
    assert!(synced.contains("synced NPM-1"), "{synced}");
    let ticket: serde_json::Value = client()
        .get(proxy.url("/__stamp/api/v1/tickets/NPM-1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        ticket["modules"]["dev"][0]["path"], "/src/app.js",
        "{ticket}"
    );

    // The exit code comes through: a usage error is 2, as from the binary.
    let bad = run(&mut npm(
        &app,
        &cache,
        &["exec", "--offline", "--", "stamp", "not a key"],
    ));
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");

    // No binary for the platform: a clear error that names it.
    let launcher_js = app.join("node_modules/ticket-stamp/bin/stamp.js");
    let other = run(Command::new("node")
        .arg("-e")
        .arg(format!(
            "Object.defineProperty(process, 'arch', {{ value: 'ia32' }}); process.argv = ['node', 'stamp', '--help']; require({:?});",
            launcher_js.to_string_lossy()
        ))
        .current_dir(&app));
    assert_eq!(other.status.code(), Some(1));
    let err = String::from_utf8_lossy(&other.stderr);
    assert!(err.contains("no prebuilt binary for linux-ia32"), "{err}");

    // Installed without optional dependencies: the missing package is named.
    let bare = work.path().join("bare");
    std::fs::create_dir_all(&bare).unwrap();
    std::fs::write(
        bare.join("package.json"),
        r#"{"name":"bare","private":true}"#,
    )
    .unwrap();
    ok(&mut npm(
        &bare,
        &cache,
        &[
            "install",
            "--offline",
            "--no-save",
            "--omit=optional",
            &launcher.to_string_lossy(),
        ],
    ));
    let missing = run(&mut npm(
        &bare,
        &cache,
        &["exec", "--offline", "--", "stamp", "--help"],
    ));
    assert_eq!(missing.status.code(), Some(1));
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.contains("@ticket-stamp/linux-x64 is not installed"),
        "{err}"
    );
}

/// `git …` in `dir` as a developer, failing the test on an error.
fn git(dir: &Path, args: &[&str]) -> String {
    ok(Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "dev")
        .env("GIT_AUTHOR_EMAIL", "dev@example.test")
        .env("GIT_COMMITTER_NAME", "dev")
        .env("GIT_COMMITTER_EMAIL", "dev@example.test"))
    .trim()
    .to_string()
}

/// What one run of the workflow's job did (tests/node/run-workflow.mjs).
struct JobRun {
    conclusion: String,
    steps: Vec<(String, String)>,
    summary: String,
    log: String,
}

impl JobRun {
    fn outcome(&self, name: &str) -> &str {
        self.steps
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, o)| o.as_str())
            .unwrap_or_else(|| panic!("no step {name}: {:?}", self.steps))
    }
}

/// The workflow we ship, conf/github-actions/ticket-stamp.yml, run as written
/// for pull-request events on a fresh checkout each time: `npm ci` installs
/// the packed npm package from the project's lockfile, the upload step runs
/// `npx ticket-stamp KEY --update --once --json` against a real proxy with
/// the secret token, and the label promotes.
#[tokio::test]
async fn the_github_actions_workflow_uploads_on_push_and_promotes_on_the_label() {
    let work = tempfile::tempdir().unwrap();
    let (launcher, platform) = pack(&work.path().join("tarballs"));
    let cache = work.path().join("npm-cache");
    let origin = Origin::start().unwrap();
    origin.route(
        "/",
        Route::html("<script type=module src=/src/app.js></script>"),
    );
    let token = "ci-token-0123456789abcdef";
    let conf = work.path().join("proxy.toml");
    std::fs::write(
        &conf,
        format!(
            "origin = \"{}\"\nstore = \"{}\"\n\
             [[tokens]]\nname = \"ci\"\nrole = \"dev\"\nsha256 = \"{}\"\n",
            origin.url,
            work.path().join("store").display(),
            stamp_control::hash_token(token)
        ),
    )
    .unwrap();
    let proxy = Proxy::start_with(None, &["--config", &conf.to_string_lossy()], &[]).unwrap();

    // The project, as its developers push it: the package installed from the
    // tarballs (so package-lock.json names them), stamp.toml, main and a
    // ticket branch on a shared remote.
    let remote = work.path().join("remote.git");
    git(
        work.path(),
        &["init", "-q", "--bare", "-b", "main", "remote.git"],
    );
    let dev = work.path().join("dev");
    std::fs::create_dir_all(dev.join("src")).unwrap();
    git(&dev, &["init", "-q", "-b", "main"]);
    std::fs::write(
        dev.join("package.json"),
        r#"{"name":"shop","private":true}"#,
    )
    .unwrap();
    ok(&mut npm(
        &dev,
        &cache,
        &[
            "install",
            "--offline",
            "--save-dev",
            &platform.to_string_lossy(),
            &launcher.to_string_lossy(),
        ],
    ));
    std::fs::write(dev.join(".gitignore"), "node_modules/\nstamp.jsonl\n").unwrap();
    std::fs::write(
        dev.join("stamp.toml"),
        "folder = \"src\"\nurl_path = \"/src\"\n",
    )
    .unwrap();
    std::fs::write(dev.join("src/app.js"), "export const v = 'production';\n").unwrap();
    git(&dev, &["add", "-A"]);
    git(&dev, &["commit", "-q", "-m", "shop"]);
    git(
        &dev,
        &["remote", "add", "origin", &remote.to_string_lossy()],
    );
    git(&dev, &["push", "-q", "origin", "main"]);
    let branch = "tkt-7-new-greeting";
    git(&dev, &["switch", "-q", "-c", branch]);
    std::fs::write(
        dev.join("src/app.js"),
        "export const v = 'TKT-7 greeting';\n",
    )
    .unwrap();
    git(&dev, &["commit", "-q", "-am", "TKT-7: a new greeting"]);
    git(&dev, &["push", "-q", "origin", branch]);
    let head = git(&dev, &["rev-parse", "HEAD"]);

    let workflow =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/github-actions/ticket-stamp.yml");
    let runner = Path::new(env!("CARGO_MANIFEST_DIR")).join("node/run-workflow.mjs");
    let mut runs = 0;
    let mut run_job = |branch: &str, action: &str, label: Option<&str>, secret: &str| {
        runs += 1;
        let event = serde_json::json!({
            "action": action,
            "label": label.map(|l| serde_json::json!({ "name": l })),
            "pull_request": {
                "head": { "ref": branch, "sha": head },
                "base": { "ref": "main" },
            },
            "repository": { "full_name": "shop/shop" },
        });
        let event_file = work.path().join(format!("event-{runs}.json"));
        std::fs::write(&event_file, event.to_string()).unwrap();
        let workspace = work.path().join(format!("workspace-{runs}"));
        let out = run(Command::new("node")
            .arg(&runner)
            .arg(&workflow)
            .arg("stamp")
            .arg("--event")
            .arg(&event_file)
            .arg("--repo")
            .arg(&remote)
            .arg("--workspace")
            .arg(&workspace)
            .arg("--vars")
            .arg(serde_json::json!({ "STAMP_SERVER": proxy.url }).to_string())
            .arg("--secrets")
            .arg(serde_json::json!({ "STAMP_TOKEN": secret }).to_string())
            .env("GITHUB_EVENT_NAME", "pull_request")
            .env("npm_config_cache", &cache)
            .env("npm_config_offline", "true")
            .env("npm_config_update_notifier", "false")
            .env("npm_config_fund", "false")
            .env("npm_config_audit", "false")
            .env("GIT_CONFIG_NOSYSTEM", "1"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let log = format!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "the runner failed:\n{log}");
        let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
            .unwrap_or_else(|e| panic!("{e}: {log}"));
        JobRun {
            conclusion: last["conclusion"].as_str().unwrap().to_string(),
            steps: last["steps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    (
                        s["name"].as_str().unwrap().to_string(),
                        s["outcome"].as_str().unwrap().to_string(),
                    )
                })
                .collect(),
            summary: last["summary"].as_str().unwrap().to_string(),
            log,
        }
    };
    let ticket = || async {
        client()
            .get(proxy.url("/__stamp/api/v1/tickets/TKT-7"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    };

    // A push to the pull request: uploaded, linked in the job summary.
    let opened = run_job(branch, "opened", None, token);
    assert_eq!(opened.conclusion, "success", "{}", opened.log);
    assert_eq!(opened.outcome("Upload the ticket's modules"), "success");
    assert_eq!(opened.outcome("Promote to qa on the label"), "skipped");
    assert!(
        opened
            .summary
            .contains("### TKT-7 (dev): 1 uploaded, 0 removed")
            && opened.summary.contains("?dev=TKT-7"),
        "{}",
        opened.summary
    );
    let t = ticket().await;
    assert_eq!(t["stage"], "dev", "{t}");
    assert_eq!(t["modules"]["dev"][0]["path"], "/src/app.js", "{t}");
    // The checkout is a detached commit; the branch still reaches the
    // ticket (the GitHub hook finds the pull request by it).
    let upload = &t["history"][0];
    assert_eq!(upload["branch"], branch, "{t}");
    assert_eq!(upload["commit"], head.as_str(), "{t}");

    // Another label: nothing is promoted.
    let other = run_job(branch, "labeled", Some("needs-design"), token);
    assert_eq!(other.conclusion, "success", "{}", other.log);
    assert_eq!(other.outcome("Promote to qa on the label"), "skipped");
    assert_eq!(ticket().await["stage"], "dev");

    // The label `ready-for-qa` promotes.
    let labeled = run_job(branch, "labeled", Some("ready-for-qa"), token);
    assert_eq!(labeled.conclusion, "success", "{}", labeled.log);
    assert_eq!(labeled.outcome("Promote to qa on the label"), "success");
    assert_eq!(ticket().await["stage"], "qa");

    // A branch that names no ticket stamps nothing, and says so.
    let untitled = run_job("fix-typo", "opened", None, token);
    assert_eq!(untitled.conclusion, "success", "{}", untitled.log);
    assert_eq!(untitled.outcome("Upload the ticket's modules"), "skipped");
    assert!(untitled.log.contains("names no ticket"), "{}", untitled.log);

    // A wrong secret fails the job with the pipeline's message (exit 3).
    let wrong = run_job(branch, "synchronize", None, "not-the-token-000000");
    assert_eq!(wrong.conclusion, "failure", "{}", wrong.log);
    assert_eq!(wrong.outcome("Upload the ticket's modules"), "failure");
    assert!(
        wrong
            .log
            .contains("STAMP_TOKEN is missing or may not upload"),
        "{}",
        wrong.log
    );

    // Events the workflow does not take do not run it.
    let closed = run_job(branch, "closed", None, token);
    assert_eq!(closed.conclusion, "skipped", "{}", closed.log);
}

/// A proxy that takes uploads with one `dev` token (the CI's).
fn proxy_with_token(work: &Path, token: &str) -> (Origin, Proxy) {
    let origin = Origin::start().unwrap();
    origin.route(
        "/",
        Route::html("<script type=module src=/src/app.js></script>"),
    );
    let conf = work.join("proxy.toml");
    std::fs::write(
        &conf,
        format!(
            "origin = \"{}\"\nstore = \"{}\"\n\
             [[tokens]]\nname = \"ci\"\nrole = \"dev\"\nsha256 = \"{}\"\n",
            origin.url,
            work.join("store").display(),
            stamp_control::hash_token(token)
        ),
    )
    .unwrap();
    let proxy = Proxy::start_with(None, &["--config", &conf.to_string_lossy()], &[]).unwrap();
    (origin, proxy)
}

/// What one pipeline did (tests/node/run-gitlab-ci.mjs).
struct Pipeline {
    created: bool,
    status: String,
    jobs: Vec<serde_json::Value>,
    log: String,
}

impl Pipeline {
    fn job(&self, name: &str) -> &serde_json::Value {
        self.jobs
            .iter()
            .find(|j| j["name"] == name)
            .unwrap_or_else(|| {
                panic!(
                    "no job {name} in the pipeline: {:?}\n{}",
                    self.jobs, self.log
                )
            })
    }

    fn status(&self, name: &str) -> &str {
        self.job(name)["status"].as_str().unwrap()
    }
}

/// Runs the pipeline GitLab would create for `event` from `remote`'s
/// .gitlab-ci.yml at the event's commit.
fn run_pipeline(
    work: &Path,
    remote: &Path,
    event: &serde_json::Value,
    variables: &serde_json::Value,
    play: &[&str],
    env: &[(&str, &Path)],
) -> Pipeline {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let event_file = work.join(format!("gitlab-event-{n}.json"));
    std::fs::write(&event_file, event.to_string()).unwrap();
    let runner = Path::new(env!("CARGO_MANIFEST_DIR")).join("node/run-gitlab-ci.mjs");
    let mut cmd = Command::new("node");
    cmd.arg(&runner)
        .arg("--repo")
        .arg(remote)
        .arg("--event")
        .arg(&event_file)
        .arg("--builds")
        .arg(work.join(format!("builds-{n}")))
        .arg("--variables")
        .arg(variables.to_string())
        .env("npm_config_update_notifier", "false")
        .env("npm_config_fund", "false")
        .env("npm_config_audit", "false")
        .env("GIT_CONFIG_NOSYSTEM", "1");
    for p in play {
        cmd.arg("--play").arg(p);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run(&mut cmd);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let log = format!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the runner failed:\n{log}");
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {log}"));
    Pipeline {
        created: last["pipeline"] == "created",
        status: last["status"].as_str().unwrap_or("").to_string(),
        jobs: last["jobs"].as_array().unwrap().clone(),
        log,
    }
}

/// The GitLab CI recipe we ship, conf/gitlab-ci/ticket-stamp.yml, included
/// as written from a project's .gitlab-ci.yml and run for merge-request and
/// push pipelines: a fresh detached checkout per job, `npm ci` installing
/// the packed package from the lockfile, `npx ticket-stamp` against a real
/// proxy with the masked token, the key carried to the promotion by a
/// dotenv report, and the promotion by the label or by playing the job.
#[tokio::test]
async fn the_gitlab_ci_recipe_uploads_on_push_and_promotes_on_the_label_or_by_hand() {
    let work = tempfile::tempdir().unwrap();
    let (launcher, platform) = pack(&work.path().join("tarballs"));
    let cache = work.path().join("npm-cache");
    let token = "ci-token-0123456789abcdef";
    let (_origin, proxy) = proxy_with_token(work.path(), token);

    // The project: the package from the tarballs, stamp.toml, the recipe
    // copied to ci/ and included, and a test job of its own.
    let remote = work.path().join("remote.git");
    git(
        work.path(),
        &["init", "-q", "--bare", "-b", "main", "remote.git"],
    );
    let dev = work.path().join("dev");
    std::fs::create_dir_all(dev.join("src")).unwrap();
    std::fs::create_dir_all(dev.join("ci")).unwrap();
    git(&dev, &["init", "-q", "-b", "main"]);
    std::fs::write(
        dev.join("package.json"),
        r#"{"name":"shop","private":true}"#,
    )
    .unwrap();
    ok(&mut npm(
        &dev,
        &cache,
        &[
            "install",
            "--offline",
            "--save-dev",
            &platform.to_string_lossy(),
            &launcher.to_string_lossy(),
        ],
    ));
    std::fs::write(dev.join(".gitignore"), "node_modules/\nstamp.jsonl\n").unwrap();
    std::fs::write(
        dev.join("stamp.toml"),
        "folder = \"src\"\nurl_path = \"/src\"\n",
    )
    .unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/gitlab-ci/ticket-stamp.yml"),
        dev.join("ci/ticket-stamp.yml"),
    )
    .unwrap();
    std::fs::write(
        dev.join(".gitlab-ci.yml"),
        "workflow:\n  rules:\n\
         \x20   - if: $CI_PIPELINE_SOURCE == \"merge_request_event\"\n\
         \x20   - if: $CI_COMMIT_BRANCH && $CI_OPEN_MERGE_REQUESTS\n      when: never\n\
         \x20   - if: $CI_COMMIT_BRANCH\n\
         include:\n  - local: ci/ticket-stamp.yml\n\
         test:\n  image: node:20\n  script:\n    - echo \"the shop's tests\"\n",
    )
    .unwrap();
    std::fs::write(dev.join("src/app.js"), "export const v = 'production';\n").unwrap();
    git(&dev, &["add", "-A"]);
    git(&dev, &["commit", "-q", "-m", "shop"]);
    git(
        &dev,
        &["remote", "add", "origin", &remote.to_string_lossy()],
    );
    git(&dev, &["push", "-q", "origin", "main"]);
    let main_sha = git(&dev, &["rev-parse", "HEAD"]);
    let branch_head = |branch: &str, text: &str| {
        git(&dev, &["switch", "-q", "-c", branch, "main"]);
        std::fs::write(dev.join("src/app.js"), text).unwrap();
        git(&dev, &["commit", "-q", "-am", text]);
        git(&dev, &["push", "-q", "origin", branch]);
        git(&dev, &["rev-parse", "HEAD"])
    };
    let branch = "tkt-7-new-greeting";
    let head = branch_head(branch, "export const v = 'TKT-7 greeting';\n");
    let head8 = branch_head("tkt-8-by-hand", "export const v = 'TKT-8';\n");
    let typo = branch_head("fix-typo", "export const v = 'typo';\n");

    let mr = |branch: &str, sha: &str, labels: &[&str]| {
        serde_json::json!({
            "source": "merge_request_event",
            "sha": sha,
            "merge_request": {
                "iid": 12, "source_branch": branch, "target_branch": "main",
                "labels": labels, "title": "A new greeting",
            },
            "project": { "path": "shop/shop", "default_branch": "main" },
        })
    };
    let vars = |secret: &str| {
        serde_json::json!({
            "STAMP_SERVER": proxy.url,
            "STAMP_TOKEN": { "value": secret, "masked": true },
        })
    };
    let env = [("npm_config_cache", cache.as_path())];
    let pipeline = |event: &serde_json::Value, secret: &str, play: &[&str]| {
        let p = run_pipeline(work.path(), &remote, event, &vars(secret), play, &env);
        assert!(
            !p.log.contains(secret),
            "the token is not masked:\n{}",
            p.log
        );
        p
    };
    let api = proxy.url("/__stamp/api/v1/tickets");
    let ticket = |key: &'static str| {
        let url = format!("{api}/{key}");
        async move {
            client()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };

    // A push to the merge request: uploaded, the link in the log; the
    // promotion waits for a hand (manual, allowed to fail: not blocking).
    let pushed = pipeline(&mr(branch, &head, &[]), token, &[]);
    assert_eq!(pushed.status, "success", "{}", pushed.log);
    assert_eq!(pushed.status("ticket-stamp"), "success", "{}", pushed.log);
    assert_eq!(pushed.status("ticket-stamp:promote"), "manual");
    assert_eq!(pushed.job("ticket-stamp:promote")["allow_failure"], true);
    assert_eq!(
        pushed.job("ticket-stamp")["resource_group"],
        format!("ticket-stamp/{branch}")
    );
    assert!(
        pushed
            .log
            .contains("ticket-stamp: TKT-7 (dev): 1 uploaded, 0 removed: ")
            && pushed.log.contains("?dev=TKT-7"),
        "{}",
        pushed.log
    );
    let t = ticket("TKT-7").await;
    assert_eq!(t["stage"], "dev", "{t}");
    assert_eq!(t["modules"]["dev"][0]["path"], "/src/app.js", "{t}");
    // Detached at the commit, the branch still reaches the ticket.
    assert_eq!(t["history"][0]["branch"], branch, "{t}");
    assert_eq!(t["history"][0]["commit"], head.as_str(), "{t}");

    // Another label: nothing is promoted.
    let other = pipeline(&mr(branch, &head, &["needs-design"]), token, &[]);
    assert_eq!(other.status, "success", "{}", other.log);
    assert_eq!(other.status("ticket-stamp:promote"), "manual");
    assert_eq!(ticket("TKT-7").await["stage"], "dev");

    // The label `ready-for-qa`, among others: promoted to qa.
    let labeled = pipeline(
        &mr(branch, &head, &["needs-design", "ready-for-qa"]),
        token,
        &[],
    );
    assert_eq!(labeled.status, "success", "{}", labeled.log);
    assert_eq!(labeled.status("ticket-stamp:promote"), "success");
    assert!(labeled.log.contains("TKT-7 is in qa"), "{}", labeled.log);
    assert_eq!(ticket("TKT-7").await["stage"], "qa");

    // The label stays on the merge request: the next pipeline uploads to
    // dev but does not promote again (qa -> prod is not the recipe's).
    let again = pipeline(&mr(branch, &head, &["ready-for-qa"]), token, &[]);
    assert_eq!(again.status, "success", "{}", again.log);
    assert_eq!(again.status("ticket-stamp:promote"), "success");
    assert!(
        again.log.contains("TKT-7 is in qa already: not promoted"),
        "{}",
        again.log
    );
    assert_eq!(ticket("TKT-7").await["stage"], "qa");

    // The manual job, played, promotes.
    let by_hand = pipeline(&mr("tkt-8-by-hand", &head8, &[]), token, &[]);
    assert_eq!(by_hand.status("ticket-stamp:promote"), "manual");
    assert_eq!(ticket("TKT-8").await["stage"], "dev");
    let played = pipeline(
        &mr("tkt-8-by-hand", &head8, &[]),
        token,
        &["ticket-stamp:promote"],
    );
    assert_eq!(played.status, "success", "{}", played.log);
    assert_eq!(played.status("ticket-stamp:promote"), "success");
    assert_eq!(ticket("TKT-8").await["stage"], "qa");

    // A branch that names no ticket stamps nothing, and says so.
    let untitled = pipeline(&mr("fix-typo", &typo, &["ready-for-qa"]), token, &[]);
    assert_eq!(untitled.status, "success", "{}", untitled.log);
    assert!(
        untitled
            .log
            .contains("the branch fix-typo names no ticket (TKT-123-…): nothing to stamp"),
        "{}",
        untitled.log
    );
    assert!(
        untitled.log.contains("nothing to promote"),
        "{}",
        untitled.log
    );
    assert!(!untitled.log.contains("npm ci"), "{}", untitled.log);

    // A wrong token fails the upload with the recipe's message (exit 3);
    // the promotion that needs it is skipped.
    let wrong = pipeline(
        &mr(branch, &head, &["ready-for-qa"]),
        "not-the-token-000000",
        &[],
    );
    assert_eq!(wrong.status, "failed", "{}", wrong.log);
    assert_eq!(wrong.status("ticket-stamp"), "failed");
    assert_eq!(wrong.status("ticket-stamp:promote"), "skipped");
    assert!(
        wrong.log.contains("ticket-stamp: TKT-7: cannot reach")
            && wrong
                .log
                .contains("STAMP_TOKEN is missing or may not upload"),
        "{}",
        wrong.log
    );

    // A push to main (a branch pipeline): the project's own jobs run, the
    // recipe's do not.
    let push = pipeline(
        &serde_json::json!({
            "source": "push", "sha": main_sha, "ref": "main",
            "project": { "path": "shop/shop", "default_branch": "main" },
        }),
        token,
        &[],
    );
    assert!(push.created, "{}", push.log);
    let names: Vec<&str> = push
        .jobs
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["test"], "{}", push.log);
    assert_eq!(push.status("test"), "success");
    // A branch push while its merge request is open: no duplicate pipeline.
    let duplicate = pipeline(
        &serde_json::json!({
            "source": "push", "sha": head, "ref": branch,
            "open_merge_requests": "shop/shop!12",
            "project": { "path": "shop/shop", "default_branch": "main" },
        }),
        token,
        &[],
    );
    assert!(!duplicate.created, "{}", duplicate.log);
}

/// The release targets, as the pipelines build them, and their platforms.
const TARGETS: [(&str, &str, &str); 5] = [
    ("aarch64-apple-darwin", "darwin-arm64", "stamp"),
    ("x86_64-apple-darwin", "darwin-x64", "stamp"),
    ("x86_64-unknown-linux-gnu", "linux-x64", "stamp"),
    ("aarch64-unknown-linux-gnu", "linux-arm64", "stamp"),
    ("x86_64-pc-windows-msvc", "win32-x64", "stamp.exe"),
];

/// A folder of stand-ins for the Rust toolchain on each release runner
/// (tests/node/toolchain-shim.mjs): `cargo build --target T` gives the real
/// `stamp` for linux-x64 and a file with T's executable header otherwise.
fn toolchain_shims(dir: &Path) -> PathBuf {
    let shims = dir.join("shims");
    ok(Command::new("node")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("node/toolchain-shim.mjs"))
        .arg("install")
        .arg(&shims));
    shims
}

/// PATH with `shims` first.
fn path_with(shims: &Path) -> std::ffi::OsString {
    let mut paths = vec![shims.to_path_buf()];
    paths.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(paths).unwrap()
}

/// DIR/<platform>/stamp[.exe] for every release platform, as the
/// pipelines' build jobs leave them.
fn release_binaries(work: &Path) -> PathBuf {
    let shims = toolchain_shims(work);
    let dir = work.join("binaries");
    for (target, platform, exe) in TARGETS {
        ok(Command::new(shims.join("cargo"))
            .args([
                "build",
                "--release",
                "--locked",
                "-p",
                "stamp-cli",
                "--target",
                target,
            ])
            .current_dir(work)
            .env("STAMP_LINUX_X64", binary("stamp").unwrap()));
        std::fs::create_dir_all(dir.join(platform)).unwrap();
        std::fs::copy(
            work.join("target").join(target).join("release").join(exe),
            dir.join(platform).join(exe),
        )
        .unwrap();
    }
    dir
}

fn pack_binaries(out: &Path, binaries: &Path) -> Output {
    run(
        Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../cli/npm/pack"))
            .arg(out)
            .arg("--binaries")
            .arg(binaries),
    )
}

/// `cli/npm/pack --binaries` packs every release platform and refuses a
/// missing, extra, misnamed or wrong binary; the launcher it packs chooses
/// the right package for every platform and architecture name Node
/// reports, says why when none fits, and runs through the Windows `.cmd`
/// shims npm makes (tests/node/launcher-platforms.mjs, with cmd-shim).
#[test]
fn pack_covers_every_platform_and_the_launcher_chooses_among_them() {
    let work = tempfile::tempdir().unwrap();
    let binaries = release_binaries(work.path());
    let version = env!("CARGO_PKG_VERSION");

    let attempts = std::cell::Cell::new(0);
    let refused = |why: &str, change: &dyn Fn(&Path)| {
        attempts.set(attempts.get() + 1);
        let copy = work.path().join(format!("bad-{}", attempts.get()));
        ok(Command::new("cp").arg("-r").arg(&binaries).arg(&copy));
        change(&copy);
        let out = pack_binaries(&work.path().join("never"), &copy);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(1), "{why}: {err}");
        assert!(err.contains(why), "{why}: {err}");
    };
    refused("missing: win32-x64/stamp.exe (no folder win32-x64)", &|d| {
        std::fs::remove_dir_all(d.join("win32-x64")).unwrap()
    });
    refused(
        "extra: freebsd-x64 (the released platforms are darwin-arm64 darwin-x64 linux-x64 linux-arm64 win32-x64)",
        &|d| std::fs::create_dir_all(d.join("freebsd-x64")).unwrap(),
    );
    refused(
        "extra: win32-x64/stamp (a win32-x64 package holds stamp.exe only)",
        &|d| std::fs::rename(d.join("win32-x64/stamp.exe"), d.join("win32-x64/stamp")).unwrap(),
    );
    refused("is a darwin-x64 executable, not a darwin-arm64 one", &|d| {
        std::fs::copy(d.join("darwin-x64/stamp"), d.join("darwin-arm64/stamp")).unwrap();
    });
    refused("is a linux-x64 executable, not a win32-x64 one", &|d| {
        std::fs::copy(d.join("linux-x64/stamp"), d.join("win32-x64/stamp.exe")).unwrap();
    });

    let out = work.path().join("tarballs");
    let packed = pack_binaries(&out, &binaries);
    assert!(packed.status.success(), "{packed:?}");
    // Unpacked as npm lays them out.
    let app = work.path().join("app");
    std::fs::create_dir_all(app.join("node_modules/@ticket-stamp")).unwrap();
    std::fs::write(app.join("package.json"), r#"{"name":"app","private":true}"#).unwrap();
    let mut tarballs = vec![(
        format!("ticket-stamp-{version}.tgz"),
        app.join("node_modules/ticket-stamp"),
    )];
    for (_, platform, _) in TARGETS {
        tarballs.push((
            format!("ticket-stamp-{platform}-{version}.tgz"),
            app.join("node_modules/@ticket-stamp").join(platform),
        ));
    }
    for (tgz, into) in &tarballs {
        std::fs::create_dir_all(into).unwrap();
        ok(Command::new("tar")
            .arg("xzf")
            .arg(out.join(tgz))
            .arg("--strip-components=1")
            .arg("-C")
            .arg(into));
    }
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(app.join("node_modules/@ticket-stamp/win32-x64/package.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        manifest["cpu"],
        serde_json::json!(["x64", "arm64"]),
        "{manifest}"
    );
    assert_eq!(
        manifest["files"],
        serde_json::json!(["bin/stamp.exe"]),
        "{manifest}"
    );
    let linux: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(app.join("node_modules/@ticket-stamp/linux-arm64/package.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(linux["libc"], serde_json::json!(["glibc"]), "{linux}");

    let checked = ok(Command::new("node")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("node/launcher-platforms.mjs"))
        .arg(&app)
        .env(
            "CLI_NPM_DIR",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../cli/npm"),
        ));
    assert!(checked.contains("120 platform/arch names"), "{checked}");
}

/// A local npm registry (tests/node/npm-registry.mjs), stopped on drop.
struct Registry {
    child: std::process::Child,
    url: String,
    log: PathBuf,
}

impl Registry {
    fn start(dir: &Path, token: &str) -> Registry {
        use std::io::BufRead;
        let log = dir.join("published.jsonl");
        let mut child = Command::new("node")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("node/npm-registry.mjs"))
            .arg("--token")
            .arg(token)
            .arg("--log")
            .arg(&log)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("node runs tests/node/npm-registry.mjs");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ready: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the registry did not start: {e}: {line}"));
        Registry {
            child,
            url: ready["url"].as_str().unwrap().to_string(),
            log,
        }
    }

    /// The packages published, in order.
    fn published(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                format!(
                    "{}@{}",
                    v["name"].as_str().unwrap(),
                    v["version"].as_str().unwrap()
                )
            })
            .collect()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A clean folder installs `ticket-stamp` from `registry` as a developer on
/// linux-x64 would: npm picks the linux-x64 package alone, and
/// `npx ticket-stamp --version` runs the real binary.
fn install_from(registry: &Registry, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("package.json"), r#"{"name":"app","private":true}"#).unwrap();
    let cache = dir.join("npm-cache");
    ok(&mut npm(
        dir,
        &cache,
        &["install", "ticket-stamp", "--registry", &registry.url],
    ));
    let installed: Vec<String> = std::fs::read_dir(dir.join("node_modules/@ticket-stamp"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(
        installed,
        ["linux-x64"],
        "npm installs this platform's package only"
    );
    let version = ok(&mut npm(
        dir,
        &cache,
        &[
            "exec",
            "--registry",
            &registry.url,
            "--",
            "ticket-stamp",
            "--version",
        ],
    ));
    assert_eq!(
        version.trim(),
        format!("stamp {}", env!("CARGO_PKG_VERSION"))
    );
}

/// The release pipelines in the repository, .github/workflows/release-cli.yml
/// and .gitlab-ci.yml (conf/release/gitlab-ci.yml), run as written for a tag
/// `cli-v<version>` by the workflow runners (tests/node/run-workflow.mjs
/// --all, tests/node/run-gitlab-ci.mjs): every platform's build on its own
/// runner (a stand-in toolchain here: this machine cannot build macOS,
/// Windows or linux-arm64), the binaries carried as artifacts, packed, and
/// published to a local registry, the launcher last; then `npm install
/// ticket-stamp` from it runs on linux-x64.
#[test]
fn the_release_pipelines_publish_every_platform_and_npx_runs_it() {
    let work = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let version = env!("CARGO_PKG_VERSION");
    let tag = format!("cli-v{version}");
    // The repository as the pipelines check it out: the files they use,
    // from this work tree, committed and tagged.
    let src = work.path().join("src");
    for path in [
        "Cargo.toml",
        "cli/npm",
        ".github/workflows/release-cli.yml",
        ".gitlab-ci.yml",
        "conf/release",
    ] {
        let to = src.join(path);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        ok(Command::new("cp").arg("-r").arg(root.join(path)).arg(&to));
    }
    git(&src, &["init", "-q", "-b", "main"]);
    git(&src, &["add", "-A"]);
    git(&src, &["commit", "-q", "-m", "release"]);
    git(&src, &["tag", &tag]);
    let remote = work.path().join("remote.git");
    git(
        work.path(),
        &["init", "-q", "--bare", "-b", "main", "remote.git"],
    );
    git(
        &src,
        &["push", "-q", &remote.to_string_lossy(), "main", &tag],
    );
    let sha = git(&src, &["rev-parse", "HEAD"]);
    let shims = toolchain_shims(work.path());
    let home = work.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let token = "npm-publish-token-0123456789";
    let all: Vec<String> = TARGETS
        .iter()
        .map(|(_, p, _)| format!("@ticket-stamp/{p}@{version}"))
        .chain([format!("ticket-stamp@{version}")])
        .collect();
    let runner_env = |cmd: &mut Command| {
        cmd.env("PATH", path_with(&shims))
            .env("HOME", &home)
            .env("STAMP_LINUX_X64", binary("stamp").unwrap())
            .env("npm_config_cache", work.path().join("npm-cache"))
            .env("npm_config_update_notifier", "false")
            .env("npm_config_fund", "false")
            .env("npm_config_audit", "false")
            .env("GIT_CONFIG_NOSYSTEM", "1");
    };

    // GitHub Actions.
    let registry_dir = |name: &str| {
        let dir = work.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    };
    let github = Registry::start(&registry_dir("github-registry"), token);
    let event = work.path().join("tag-event.json");
    std::fs::write(
        &event,
        serde_json::json!({ "ref": format!("refs/tags/{tag}"), "after": sha, "repository": { "full_name": "ticket-stamp/ticket-stamp" } }).to_string(),
    )
    .unwrap();
    let mut cmd = Command::new("node");
    cmd.arg(root.join("tests/node/run-workflow.mjs"))
        .arg(src.join(".github/workflows/release-cli.yml"))
        .arg("--all")
        .arg("--event")
        .arg(&event)
        .arg("--repo")
        .arg(&remote)
        .arg("--workspace")
        .arg(work.path().join("github"))
        .arg("--vars")
        .arg(serde_json::json!({ "NPM_REGISTRY": github.url }).to_string())
        .arg("--secrets")
        .arg(serde_json::json!({ "NPM_TOKEN": token }).to_string())
        .env("GITHUB_EVENT_NAME", "push");
    runner_env(&mut cmd);
    let out = run(&mut cmd);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let log = format!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the runner failed:\n{log}");
    let result: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {log}"));
    assert_eq!(result["conclusion"], "success", "{log}");
    let runners: Vec<&str> = result["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["runs_on"].as_str().unwrap())
        .collect();
    assert_eq!(
        runners,
        [
            "macos-14",
            "macos-13",
            "ubuntu-latest",
            "ubuntu-24.04-arm",
            "windows-latest",
            "ubuntu-latest"
        ],
        "each platform builds on its own runner, then one job publishes"
    );
    assert_eq!(
        github.published(),
        all,
        "platform packages first, the launcher last"
    );
    install_from(&github, &work.path().join("from-github"));
    drop(github);

    // GitLab CI.
    let gitlab = Registry::start(&registry_dir("gitlab-registry"), token);
    let out = {
        let event = serde_json::json!({
            "source": "push", "sha": sha, "tag": tag,
            "project": { "path": "ticket-stamp/ticket-stamp", "default_branch": "main" },
        });
        let file = work.path().join("gitlab-event.json");
        std::fs::write(&file, event.to_string()).unwrap();
        let mut cmd = Command::new("node");
        cmd.arg(root.join("tests/node/run-gitlab-ci.mjs"))
            .arg("--repo")
            .arg(&remote)
            .arg("--event")
            .arg(&file)
            .arg("--builds")
            .arg(work.path().join("gitlab"))
            .arg("--variables")
            .arg(
                serde_json::json!({
                    "NPM_REGISTRY": gitlab.url,
                    "NPM_TOKEN": { "value": token, "masked": true },
                })
                .to_string(),
            );
        runner_env(&mut cmd);
        run(&mut cmd)
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let log = format!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the runner failed:\n{log}");
    assert!(!log.contains(token), "the npm token is not masked:\n{log}");
    let result: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {log}"));
    assert_eq!(result["status"], "success", "{log}");
    let jobs: Vec<(String, String)> = result["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["name"].as_str().unwrap().to_string(),
                j["tags"][0].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let runner_of = |platform: &str| {
        jobs.iter()
            .find(|(n, _)| n.contains(platform))
            .unwrap_or_else(|| panic!("no job builds {platform}: {jobs:?}"))
            .1
            .clone()
    };
    assert_eq!(runner_of("linux-x64"), "saas-linux-small-amd64");
    assert_eq!(runner_of("linux-arm64"), "saas-linux-small-arm64");
    assert_eq!(runner_of("darwin-arm64"), "saas-macos-medium-m1");
    assert_eq!(
        runner_of("darwin-x64"),
        "saas-macos-medium-m1",
        "cross-compiled on Apple silicon"
    );
    assert_eq!(runner_of("build:windows"), "saas-windows-medium-amd64");
    assert_eq!(
        gitlab.published(),
        all,
        "platform packages first, the launcher last"
    );
    install_from(&gitlab, &work.path().join("from-gitlab"));

    // Another tag than the version: nothing is published.
    git(&src, &["tag", "cli-v9.9.9"]);
    git(
        &src,
        &["push", "-q", &remote.to_string_lossy(), "cli-v9.9.9"],
    );
    let event = work.path().join("wrong-tag.json");
    std::fs::write(
        &event,
        serde_json::json!({ "ref": "refs/tags/cli-v9.9.9", "after": sha, "repository": { "full_name": "ticket-stamp/ticket-stamp" } }).to_string(),
    )
    .unwrap();
    let wrong = Registry::start(&registry_dir("wrong-registry"), token);
    let mut cmd = Command::new("node");
    cmd.arg(root.join("tests/node/run-workflow.mjs"))
        .arg(src.join(".github/workflows/release-cli.yml"))
        .arg("--all")
        .arg("--event")
        .arg(&event)
        .arg("--repo")
        .arg(&remote)
        .arg("--workspace")
        .arg(work.path().join("github-wrong"))
        .arg("--vars")
        .arg(serde_json::json!({ "NPM_REGISTRY": wrong.url }).to_string())
        .arg("--secrets")
        .arg(serde_json::json!({ "NPM_TOKEN": token }).to_string())
        .env("GITHUB_EVENT_NAME", "push");
    runner_env(&mut cmd);
    let out = run(&mut cmd);
    let log = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        log.contains(&format!("the tag cli-v9.9.9 is not cli-v{version}")),
        "{log}"
    );
    assert!(log.contains(r#""conclusion":"failure""#), "{log}");
    assert!(wrong.published().is_empty(), "{:?}", wrong.published());
}
