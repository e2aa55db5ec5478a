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
