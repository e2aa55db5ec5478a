//! The `stamp` CLI end to end: the real binary against a real stamp-proxy
//! (embedded store, loopback) in temporary git repositories, with the
//! environment isolated (HOME, XDG_CONFIG_HOME, no system git config, no
//! STAMP_* variables). Server state is asserted through the control API.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};
use stamp_tests::proxy::binary;
use stamp_tests::{client, free_port, Origin, Proxy, Route};

const DEV: &str = "dev-secret";
const QA: &str = "qa-secret";

// ---------------------------------------------------------------- harness

/// An origin and a stamp-proxy in front of it, and a home directory.
struct Site {
    _origin: Origin,
    proxy: Proxy,
    home: tempfile::TempDir,
}

fn origin() -> Origin {
    let origin = Origin::start().unwrap();
    origin.route(
        "/",
        Route::html("<html><head><script type=module src=/src/a.js></script></head><body>prod</body></html>"),
    );
    origin
}

/// Open API (loopback, no tokens).
fn site() -> Site {
    let origin = origin();
    let proxy = Proxy::start(&origin.url, &[]).unwrap();
    Site {
        _origin: origin,
        proxy,
        home: tempfile::tempdir().unwrap(),
    }
}

/// API with a dev and a qa token.
fn site_with_tokens() -> Site {
    let origin = origin();
    let dir = tempfile::tempdir().unwrap();
    let h = stamp_control::hash_token;
    let conf = dir.path().join("proxy.toml");
    std::fs::write(
        &conf,
        format!(
            "origin = \"{}\"\nstore = \"{}\"\n\
             [[tokens]]\nname = \"alice\"\nrole = \"dev\"\nsha256 = \"{}\"\n\
             [[tokens]]\nname = \"quinn\"\nrole = \"qa\"\nsha256 = \"{}\"\n",
            origin.url,
            dir.path().join("store").display(),
            h(DEV),
            h(QA)
        ),
    )
    .unwrap();
    let proxy = Proxy::start_with(None, &["--config", &conf.to_string_lossy()], &[]).unwrap();
    Site {
        _origin: origin,
        proxy,
        home: dir,
    }
}

/// Open API, with more proxy configuration (e.g. `[[policies]]`).
fn site_with(extra: &str) -> Site {
    let origin = origin();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("proxy.toml");
    std::fs::write(
        &conf,
        format!(
            "origin = \"{}\"\nstore = \"{}\"\n{extra}",
            origin.url,
            dir.path().join("store").display()
        ),
    )
    .unwrap();
    let proxy = Proxy::start_with(None, &["--config", &conf.to_string_lossy()], &[]).unwrap();
    Site {
        _origin: origin,
        proxy,
        home: dir,
    }
}

/// What one `stamp` run did.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    out: String,
    err: String,
}

impl Run {
    fn ok(&self) -> &Run {
        assert_eq!(self.code, Some(0), "stamp failed:\n{self:#?}");
        self
    }
    fn code(&self, code: i32) -> &Run {
        assert_eq!(self.code, Some(code), "expected exit {code}:\n{self:#?}");
        self
    }
    fn err_has(&self, needle: &str) -> &Run {
        assert!(
            self.err.contains(needle),
            "stderr lacks {needle:?}:\n{self:#?}"
        );
        self
    }
    fn out_has(&self, needle: &str) -> &Run {
        assert!(
            self.out.contains(needle),
            "stdout lacks {needle:?}:\n{self:#?}"
        );
        self
    }
}

/// `stamp` with a clean environment: only PATH, plus HOME and
/// XDG_CONFIG_HOME in a temporary directory, no system git config.
fn stamp_cmd(home: &Path, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(binary("stamp").unwrap());
    cmd.args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("GIT_CONFIG_NOSYSTEM", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn stamp_env(home: &Path, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let out = stamp_cmd(home, dir, args, env).output().unwrap();
    Run {
        code: out.status.code(),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl Site {
    fn url(&self) -> &str {
        &self.proxy.url
    }

    /// `stamp --server <this proxy> ARGS` in `dir`.
    fn stamp(&self, dir: &Path, args: &[&str]) -> Run {
        let mut all = vec!["--server", self.url()];
        all.extend_from_slice(args);
        stamp_env(self.home.path(), dir, &all, &[])
    }

    async fn ticket(&self, key: &str) -> Option<Value> {
        let resp = client()
            .get(self.proxy.url(&format!("/__stamp/api/v1/tickets/{key}")))
            .bearer_auth(DEV)
            .send()
            .await
            .unwrap();
        if resp.status() == 404 {
            return None;
        }
        assert!(resp.status().is_success(), "{resp:?}");
        Some(resp.json().await.unwrap())
    }

    /// The ticket's overrides in a stage: specifier → (path, hash).
    async fn stage(&self, key: &str, stage: &str) -> BTreeMap<String, (String, String)> {
        let Some(t) = self.ticket(key).await else {
            return BTreeMap::new();
        };
        t["modules"][stage]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|m| {
                        (
                            m["specifier"].as_str().unwrap().to_string(),
                            (
                                m["path"].as_str().unwrap().to_string(),
                                m["hash"].as_str().unwrap().to_string(),
                            ),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn dev(&self, key: &str) -> BTreeMap<String, String> {
        self.stage(key, "dev")
            .await
            .into_iter()
            .map(|(s, (_, h))| (s, h))
            .collect()
    }

    /// Polls until the ticket's dev overrides are exactly `want`
    /// (specifier → content), or fails with what the server has and `log`.
    async fn wait_dev(&self, key: &str, want: &[(&str, &str)], log: impl Fn() -> String) {
        let want = expect(want);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let have = self.dev(key).await;
            if have == want {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "dev of {key} is\n{have:#?}\nnot\n{want:#?}\nstamp said:\n{}",
                    log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Uploads through the API (to set up tickets quickly).
    async fn put(&self, key: &str, path: &str, body: &str) {
        let resp = client()
            .put(
                self.proxy
                    .url(&format!("/__stamp/api/v1/tickets/{key}/modules/{path}")),
            )
            .bearer_auth(DEV)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{resp:?}");
    }

    async fn act(&self, key: &str, action: &str) {
        let t = stamp_tests::json_of(
            client()
                .get(self.proxy.url(&format!("/__stamp/api/v1/tickets/{key}")))
                .bearer_auth(DEV),
        )
        .await;
        let resp = client()
            .post(
                self.proxy
                    .url(&format!("/__stamp/api/v1/tickets/{key}/{action}")),
            )
            .bearer_auth(DEV)
            .header("content-type", "application/json")
            .body(serde_json::json!({ "from": t["stage"] }).to_string())
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{action} {key}: {resp:?}");
    }
}

fn sha(body: &str) -> String {
    hex::encode(Sha256::digest(body.as_bytes()))
}

fn expect(want: &[(&str, &str)]) -> BTreeMap<String, String> {
    want.iter()
        .map(|(s, body)| (s.to_string(), sha(body)))
        .collect()
}

/// A git work tree in a temporary directory, with git run in an isolated
/// environment.
struct Repo {
    dir: tempfile::TempDir,
    home: tempfile::TempDir,
}

impl Repo {
    /// `git init -b main` with `files` committed on main.
    fn new(files: &[(&str, &str)]) -> Repo {
        let repo = Repo::bare_dir();
        repo.git(&["init", "-q", "-b", "main"]);
        repo.git(&["config", "user.name", "Test"]);
        repo.git(&["config", "user.email", "test@example.invalid"]);
        repo.git(&["config", "commit.gpgsign", "false"]);
        for (p, c) in files {
            repo.write(p, c);
        }
        repo.commit("production");
        repo
    }

    /// A directory that is not a git repository.
    fn bare_dir() -> Repo {
        Repo {
            dir: tempfile::tempdir().unwrap(),
            home: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(self.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path().join(".config"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .expect("the tests need the git command: apt-get install git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn write(&self, rel: &str, content: &str) {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    fn remove(&self, rel: &str) {
        std::fs::remove_file(self.path().join(rel)).unwrap();
    }

    fn commit(&self, msg: &str) {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", msg]);
    }
}

/// A watching `stamp … --update`, stopped with SIGINT at the end.
struct Watcher {
    child: Option<Child>,
    out: PathBuf,
    err: PathBuf,
    _logs: tempfile::TempDir,
}

impl Watcher {
    fn start(site: &Site, dir: &Path, args: &[&str]) -> Watcher {
        let logs = tempfile::tempdir().unwrap();
        let out = logs.path().join("stdout");
        let err = logs.path().join("stderr");
        let mut all = vec!["--server", site.url()];
        all.extend_from_slice(args);
        let child = stamp_cmd(site.home.path(), dir, &all, &[])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        let w = Watcher {
            child: Some(child),
            out,
            err,
            _logs: logs,
        };
        w.wait_for("watching", Duration::from_secs(15));
        w
    }

    fn log(&self) -> String {
        format!(
            "--- stdout\n{}--- stderr\n{}",
            std::fs::read_to_string(&self.out).unwrap_or_default(),
            std::fs::read_to_string(&self.err).unwrap_or_default()
        )
    }

    fn wait_for(&self, needle: &str, limit: Duration) {
        let start = Instant::now();
        while !self.log().contains(needle) {
            assert!(
                start.elapsed() < limit,
                "no {needle:?} after {limit:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Ctrl-C: the watcher must exit 0 promptly.
    fn interrupt(mut self) -> String {
        let mut child = self.child.take().unwrap();
        Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "watcher ignored SIGINT:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(0), "watcher exit:\n{}", self.log());
        self.log()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A repository whose main has `src/a.js`, `src/b.js`, `src/lib/c.js` and a
/// .gitignore, checked out on branch `feat`.
fn shop() -> Repo {
    let repo = Repo::new(&[
        ("src/a.js", "export const a = 1;"),
        ("src/b.js", "export const b = 1;"),
        ("src/lib/c.js", "export const c = 1;"),
        (".gitignore", "src/gen/\n*.log\n"),
    ]);
    repo.git(&["switch", "-q", "-c", "feat"]);
    repo
}

// ---------------------------------------------------------------- arguments

#[test]
fn help_version_and_no_arguments() {
    let home = tempfile::tempdir().unwrap();
    let here = home.path();
    let long = stamp_env(here, here, &["--help"], &[]);
    long.ok();
    for needle in [
        "Usage: stamp [OPTIONS] [TICKET] [FILES]...",
        "Examples:",
        "stamp TKT-1 --update",
        "flags",
        "environment      STAMP_SERVER, STAMP_TOKEN",
        "stamp.toml",
        "url_path",
        "main_branch",
        "[specifiers]",
        "Exit codes:",
        "-t, --ticket <TKT-NUM>",
        "-l, --list",
        "-u, --update",
        "-f, --folder <DIR>",
        "-d, --dev",
        "-q, --qa",
        "-p, --prod",
        "-v, --verbose",
        "--promote",
        "--revert",
        "--close",
        "--server <URL>",
        "--token <TOKEN>",
        "--once",
        "--json",
        "--all",
    ] {
        long.out_has(needle);
    }
    let short = stamp_env(here, here, &["-h"], &[]);
    short
        .ok()
        .out_has("flag > environment (STAMP_SERVER, STAMP_TOKEN) > stamp.toml");
    assert!(short.out.len() < long.out.len());
    stamp_env(here, here, &["--version"], &[])
        .ok()
        .out_has(concat!("stamp ", env!("CARGO_PKG_VERSION")));
    // No arguments: the help, as a usage error.
    stamp_env(here, here, &[], &[])
        .code(2)
        .err_has("Usage: stamp");
}

#[test]
fn usage_errors_exit_2_with_a_hint() {
    let repo = shop();
    let home = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| stamp_env(home.path(), repo.path(), args, &[]);
    run(&["--bogus"])
        .code(2)
        .err_has("stamp: error: unexpected argument '--bogus'");
    run(&["TKT-1", "--promote", "--revert"])
        .code(2)
        .err_has("cannot be used with");
    run(&["TKT-1", "-u", "-l"]).code(2);
    run(&["TKT-1", "src/a.js"])
        .code(2)
        .err_has("files can only be given with --update");
    run(&["TKT-1", "--once"])
        .code(2)
        .err_has("--once only goes with --update");
    run(&["--promote"])
        .code(2)
        .err_has("--promote needs a ticket");
    run(&["TKT-1", "--close", "-q"])
        .code(2)
        .err_has("-d/-q/-p select the stages to list");
    run(&["TKT-1", "--revert", "--all"]).code(2);
    run(&["-l", "--all", "-d"]).code(2);
    run(&["TKT-1", "-t", "TKT-2"])
        .code(2)
        .err_has("two tickets given");
    run(&["tkt1", "-l"])
        .code(2)
        .err_has("`tkt1` is not a ticket key")
        .err_has("hint:");
    run(&["42", "-l"])
        .code(2)
        .err_has("bare ticket number")
        .err_has("project = ");
    run(&["TKT-1", "-u", "--once", "../elsewhere.js"])
        .code(2)
        .err_has("is not in the folder");
    run(&["TKT-1", "-u", "--once", "-f", "nope"])
        .code(2)
        .err_has("does not exist");
    run(&["--server", "ftp://x", "-l"])
        .code(2)
        .err_has("--server")
        .err_has("http:// or https://");
    repo.write("stamp.toml", "sever = \"http://127.0.0.1:1\"\n");
    run(&["-l"])
        .code(2)
        .err_has("stamp.toml")
        .err_has("sever")
        .err_has("server, project");
    repo.write("stamp.toml", "token = \"s3cret\"\n");
    run(&["-l"])
        .code(2)
        .err_has("`token` does not belong")
        .err_has("STAMP_TOKEN");
    repo.write("stamp.toml", "project = \"9\"\nurl_path = \"src\"\n");
    run(&["-l"])
        .code(2)
        .err_has("`project")
        .err_has("`url_path");
}

// ---------------------------------------------------------------- configuration

#[tokio::test]
async fn config_is_found_upward_and_flag_beats_env_beats_file() {
    let site = site();
    let repo = Repo::new(&[("web/a.js", "a1"), ("other/b.js", "b1")]);
    repo.write(
        "stamp.toml",
        &format!(
            "server = \"{}\"\nproject = \"shop\"\nfolder = \"web\"\nurl_path = \"/static\"\nmain_branch = \"main\"\n",
            site.url()
        ),
    );
    let deep = repo.path().join("deep/er");
    std::fs::create_dir_all(&deep).unwrap();
    let home = site.home.path();
    let dead = format!("http://127.0.0.1:{}", free_port().unwrap());

    // From a subdirectory: server, project, folder and url_path from the file.
    let r = stamp_env(home, &deep, &["7", "-u", "--once", "--all", "-v"], &[]);
    r.ok().err_has("(from ").err_has("stamp.toml");
    assert_eq!(
        site.stage("SHOP-7", "dev").await,
        BTreeMap::from([("/static/a.js".into(), ("/static/a.js".into(), sha("a1")))])
    );
    // STAMP_SERVER beats the file (and is dead)…
    stamp_env(home, &deep, &["7", "-l"], &[("STAMP_SERVER", &dead)])
        .code(3)
        .err_has(&dead);
    // …and --server beats STAMP_SERVER.
    stamp_env(
        home,
        &deep,
        &["--server", site.url(), "7", "-l"],
        &[("STAMP_SERVER", &dead)],
    )
    .ok()
    .out_has("SHOP-7");
    // An empty variable counts as unset.
    stamp_env(home, &deep, &["-v", "7", "-l"], &[("STAMP_SERVER", "")])
        .ok()
        .err_has("stamp.toml)");
    // --folder (from the working directory) beats `folder`; a folder outside
    // the configured one is served at its path from the repository root.
    stamp_env(
        home,
        &deep,
        &["SHOP-8", "-u", "--once", "--all", "--folder", "../../other"],
        &[],
    )
    .ok();
    assert_eq!(site.dev("SHOP-8").await, expect(&[("/other/b.js", "b1")]));
    // -f inside the configured folder keeps its url_path.
    repo.write("web/sub/c.js", "c1");
    stamp_env(
        home,
        repo.path(),
        &["SHOP-9", "-u", "--once", "--all", "-f", "web/sub"],
        &[],
    )
    .ok();
    assert_eq!(
        site.dev("SHOP-9").await,
        expect(&[("/static/sub/c.js", "c1")])
    );
    // A nearer stamp.toml wins.
    repo.write("deep/stamp.toml", &format!("server = \"{dead}\"\n"));
    stamp_env(home, &deep, &["SHOP-7", "-l"], &[]).code(3);
}

#[tokio::test]
async fn bare_specifiers_are_uploaded_under_their_name() {
    let site = site();
    let repo = Repo::new(&[("src/cart.js", "cart v1"), ("src/x.js", "x")]);
    repo.write(
        "stamp.toml",
        "[specifiers]\n\"@shop/cart\" = \"src/cart.js\"\n\"@shop/far\" = \"dist/far.js\"\n",
    );
    repo.commit("config");
    repo.write("src/cart.js", "cart v2");
    let r = site.stamp(repo.path(), &["TKT-20", "-u", "--once"]);
    r.ok()
        .out_has("@shop/cart (/src/cart.js)")
        .err_has("specifiers.\"@shop/far\"");
    assert_eq!(
        site.stage("TKT-20", "dev").await,
        BTreeMap::from([("@shop/cart".into(), ("/src/cart.js".into(), sha("cart v2")))])
    );
    // Back to main's content: the bare override goes too.
    repo.write("src/cart.js", "cart v1");
    site.stamp(repo.path(), &["TKT-20", "-u", "--once"])
        .ok()
        .out_has("remove  @shop/cart");
    assert!(site.dev("TKT-20").await.is_empty());
}

// ---------------------------------------------------------------- one-shot sync

#[tokio::test]
async fn one_shot_sync_uploads_only_what_differs_from_main() {
    let site = site();
    let repo = shop();
    repo.write("src/a.js", "export const a = 2;"); // committed on feat
    repo.commit("a2");
    repo.write("src/lib/c.js", "export const c = 2;"); // modified, not committed
    repo.write("src/d.js", "export const d = 1;"); // untracked
    repo.write("src/gen/x.js", "generated"); // .gitignore'd
    repo.write("src/debug.log", "log"); // .gitignore'd
    repo.write("src/.hidden.js", "dotfile");
    repo.write("src/.cache/y.js", "dot folder");

    let r = site.stamp(repo.path(), &["tkt-10", "--update", "--once"]);
    r.ok()
        .out_has("upload  /src/a.js")
        .out_has("upload  /src/lib/c.js")
        .out_has("upload  /src/d.js")
        .out_has("synced TKT-10 (dev): 3 uploaded (3 sent")
        .out_has(&format!("{}/?dev=TKT-10", site.url()));
    assert!(!r.out.contains("/src/b.js") && !r.out.contains("gen") && !r.out.contains("hidden"));
    let want = [
        ("/src/a.js", "export const a = 2;"),
        ("/src/lib/c.js", "export const c = 2;"),
        ("/src/d.js", "export const d = 1;"),
    ];
    assert_eq!(site.dev("TKT-10").await, expect(&want));

    // Nothing changed: nothing is sent (-v shows every request).
    let r = site.stamp(repo.path(), &["TKT-10", "-u", "--once", "-v"]);
    r.ok().out_has("0 uploaded").out_has("3 unchanged");
    assert!(
        !r.err.contains("> PUT") && !r.err.contains("> DELETE"),
        "{r:#?}"
    );

    // A file whose body the server already has is linked, not re-sent.
    repo.write("src/e.js", "export const d = 1;");
    let r = site.stamp(repo.path(), &["TKT-10", "-u", "--once", "-v"]);
    r.ok()
        .err_has("> POST")
        .err_has("modules/missing")
        .err_has("> PUT ")
        .err_has("/tickets/TKT-10/modules/src/e.js (0 bytes, body linked by x-stamp-hash")
        .out_has("1 uploaded (0 sent, 1 linked, 0 B)");
    assert_eq!(
        site.dev("TKT-10").await.get("/src/e.js"),
        Some(&sha("export const d = 1;"))
    );

    // Back to main's content (committed or not): the override goes (DELETE).
    repo.write("src/a.js", "export const a = 1;");
    let r = site.stamp(repo.path(), &["TKT-10", "-u", "--once", "--verbose"]);
    r.ok()
        .err_has("> DELETE")
        .out_has("remove  /src/a.js")
        .out_has("1 removed");
    assert!(!site.dev("TKT-10").await.contains_key("/src/a.js"));

    // --all: every file, ignored ones and dotfiles still excepted.
    site.stamp(repo.path(), &["TKT-10", "-u", "--once", "--all"])
        .ok();
    let dev = site.dev("TKT-10").await;
    assert_eq!(
        dev.keys().collect::<Vec<_>>(),
        [
            "/src/a.js",
            "/src/b.js",
            "/src/d.js",
            "/src/e.js",
            "/src/lib/c.js"
        ]
    );
    // And back: only the differences remain.
    site.stamp(repo.path(), &["TKT-10", "-u", "--once"])
        .ok()
        .out_has("2 removed");
    assert_eq!(
        site.dev("TKT-10").await.keys().collect::<Vec<_>>(),
        ["/src/d.js", "/src/e.js", "/src/lib/c.js"]
    );

    // Overrides outside the folder's URL path are not this folder's business.
    site.put("TKT-10", "vendor/z.js", "z").await;
    site.stamp(repo.path(), &["TKT-10", "-u", "--once"])
        .ok()
        .out_has("0 removed");
    assert!(site.dev("TKT-10").await.contains_key("/vendor/z.js"));

    // --json: one JSON object per line.
    repo.write("src/f.js", "f");
    let r = site.stamp(repo.path(), &["TKT-10", "-u", "--once", "--json"]);
    r.ok();
    let lines: Vec<Value> = r
        .out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["event"], "upload");
    assert_eq!(lines[0]["module"], "/src/f.js");
    assert_eq!(lines[0]["transfer"], "sent");
    let last = lines.last().unwrap();
    assert_eq!(
        (last["event"].as_str(), last["uploaded"].as_u64()),
        (Some("synced"), Some(1))
    );
}

#[tokio::test]
async fn outside_a_git_repository_every_file_counts() {
    let site = site();
    let dir = Repo::bare_dir();
    dir.write("src/a.js", "a");
    dir.write("src/lib/b.mjs", "b");
    dir.write("src/.env.js", "dotfile");
    dir.write(".gitignore", "src/skip.js\n");
    dir.write("src/skip.js", "ignored even without git");
    dir.write("src/a.js~", "editor backup");
    dir.write("src/README.md", "not a module type");
    let r = site.stamp(dir.path(), &["TKT-11", "-u", "--once"]);
    r.ok()
        .out_has("2 uploaded")
        .out_has("1 skipped")
        .err_has("README.md");
    assert_eq!(
        site.dev("TKT-11").await,
        expect(&[("/src/a.js", "a"), ("/src/lib/b.mjs", "b")])
    );
}

#[tokio::test]
async fn files_update_only_those_entries() {
    let site = site();
    let repo = shop();
    repo.write("src/a.js", "a2");
    repo.write("src/b.js", "b2");
    repo.write("src/lib/c.js", "c2");
    site.stamp(repo.path(), &["TKT-12", "-u", "--once", "src/a.js"])
        .ok()
        .out_has("1 uploaded");
    assert_eq!(site.dev("TKT-12").await, expect(&[("/src/a.js", "a2")]));
    // A folder names every file under it; with --ticket every positional is a file.
    site.stamp(repo.path(), &["-t", "TKT-12", "-u", "--once", "src/lib"])
        .ok();
    assert_eq!(
        site.dev("TKT-12").await,
        expect(&[("/src/a.js", "a2"), ("/src/lib/c.js", "c2")])
    );
    // A named file that is gone loses its override; others stay untouched.
    repo.remove("src/a.js");
    repo.write("src/lib/c.js", "c3");
    site.stamp(repo.path(), &["TKT-12", "-u", "--once", "src/a.js"])
        .ok()
        .out_has("1 removed");
    assert_eq!(site.dev("TKT-12").await, expect(&[("/src/lib/c.js", "c2")]));
    // From a subdirectory, paths are relative to it.
    site.stamp(
        &repo.path().join("src/lib"),
        &["TKT-12", "-u", "--once", "-f", "..", "c.js"],
    )
    .ok();
    assert_eq!(site.dev("TKT-12").await, expect(&[("/src/lib/c.js", "c3")]));
}

// ---------------------------------------------------------------- watching

#[tokio::test]
async fn watch_follows_create_modify_delete_rename_and_editor_saves() {
    let site = site();
    let repo = shop();
    let w = Watcher::start(&site, repo.path(), &["TKT-30", "--update"]);
    let log = || w.log();
    let key = "TKT-30";

    // create
    repo.write("src/new.js", "new 1");
    site.wait_dev(key, &[("/src/new.js", "new 1")], log).await;
    // modify, several times quickly (only the last one counts)
    for i in 2..=5 {
        repo.write("src/new.js", &format!("new {i}"));
    }
    site.wait_dev(key, &[("/src/new.js", "new 5")], log).await;
    // a tracked file changes, then goes back to main's content
    repo.write("src/a.js", "a changed");
    site.wait_dev(
        key,
        &[("/src/new.js", "new 5"), ("/src/a.js", "a changed")],
        log,
    )
    .await;
    repo.write("src/a.js", "export const a = 1;");
    site.wait_dev(key, &[("/src/new.js", "new 5")], log).await;
    // rename
    std::fs::rename(
        repo.path().join("src/new.js"),
        repo.path().join("src/renamed.js"),
    )
    .unwrap();
    site.wait_dev(key, &[("/src/renamed.js", "new 5")], log)
        .await;
    // atomic save: write a temporary file, rename it over the module
    repo.write("src/.renamed.js.tmp-1234", "saved atomically");
    std::fs::rename(
        repo.path().join("src/.renamed.js.tmp-1234"),
        repo.path().join("src/renamed.js"),
    )
    .unwrap();
    site.wait_dev(key, &[("/src/renamed.js", "saved atomically")], log)
        .await;
    // vim-style save: move the original to a backup, write anew, drop the backup
    std::fs::rename(
        repo.path().join("src/renamed.js"),
        repo.path().join("src/renamed.js~"),
    )
    .unwrap();
    repo.write("src/renamed.js", "saved like vim");
    repo.remove("src/renamed.js~");
    site.wait_dev(key, &[("/src/renamed.js", "saved like vim")], log)
        .await;
    // a new folder with a file; ignored files and dotfiles stay out
    repo.write("src/gen/ignored.js", "ignored");
    repo.write("src/.dot.js", "dot");
    repo.write("src/deep/er/d.js", "d");
    site.wait_dev(
        key,
        &[
            ("/src/renamed.js", "saved like vim"),
            ("/src/deep/er/d.js", "d"),
        ],
        log,
    )
    .await;
    // delete
    repo.remove("src/renamed.js");
    site.wait_dev(key, &[("/src/deep/er/d.js", "d")], log).await;
    std::fs::remove_dir_all(repo.path().join("src/deep")).unwrap();
    site.wait_dev(key, &[], log).await;

    let log = w.interrupt();
    assert!(
        log.contains("upload  /src/new.js") && log.contains("remove  /src/renamed.js"),
        "{log}"
    );
    assert!(
        !log.contains("ignored.js") && !log.contains(".dot.js"),
        "{log}"
    );
}

#[tokio::test]
async fn watch_with_files_follows_only_those() {
    let site = site();
    let repo = shop();
    let w = Watcher::start(&site, repo.path(), &["--ticket", "TKT-31", "-u", "src/lib"]);
    repo.write("src/b.js", "not followed");
    repo.write("src/lib/c.js", "followed");
    site.wait_dev("TKT-31", &[("/src/lib/c.js", "followed")], || w.log())
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!site.dev("TKT-31").await.contains_key("/src/b.js"));
    w.interrupt();
}

#[tokio::test]
async fn watch_rides_out_a_server_restart_and_resyncs() {
    let origin = origin();
    let port = free_port().unwrap();
    let listen = format!("127.0.0.1:{port}");
    let stores = tempfile::tempdir().unwrap();
    let first = stores.path().join("first");
    let proxy = Proxy::start(
        &origin.url,
        &["--listen", &listen, "--store", &first.to_string_lossy()],
    )
    .unwrap();
    let site = Site {
        _origin: origin,
        proxy,
        home: tempfile::tempdir().unwrap(),
    };
    let repo = shop();
    repo.write("src/a.js", "a2");
    let w = Watcher::start(&site, repo.path(), &["TKT-32", "-u"]);
    site.wait_dev("TKT-32", &[("/src/a.js", "a2")], || w.log())
        .await;

    // The proxy goes away; saves meanwhile are retried with backoff.
    let Site {
        _origin: origin,
        proxy,
        home,
    } = site;
    drop(proxy);
    repo.write("src/a.js", "a3");
    repo.write("src/new.js", "new");
    w.wait_for("retrying in", Duration::from_secs(10));

    // It comes back with an empty store: the resync uploads everything again.
    let second = stores.path().join("second");
    let proxy = Proxy::start(
        &origin.url,
        &["--listen", &listen, "--store", &second.to_string_lossy()],
    )
    .unwrap();
    let site = Site {
        _origin: origin,
        proxy,
        home,
    };
    site.wait_dev(
        "TKT-32",
        &[("/src/a.js", "a3"), ("/src/new.js", "new")],
        || w.log(),
    )
    .await;
    // And it keeps watching.
    repo.write("src/new.js", "newer");
    site.wait_dev(
        "TKT-32",
        &[("/src/a.js", "a3"), ("/src/new.js", "newer")],
        || w.log(),
    )
    .await;
    let log = w.interrupt();
    assert!(log.contains("synced TKT-32"), "{log}");
}

// ---------------------------------------------------------------- promote, revert, close

/// A shop with TKT-n uploaded from branch `feat` (one commit ahead of main).
async fn ready(site: &Site, key: &str) -> Repo {
    let repo = shop();
    repo.write("src/a.js", "a2");
    repo.commit("a2");
    site.stamp(repo.path(), &[key, "-u", "--once"]).ok();
    repo
}

#[tokio::test]
async fn promote_is_refused_on_a_dirty_work_tree() {
    let site = site();
    let repo = ready(&site, "TKT-40").await;
    // modified tracked file
    repo.write("src/b.js", "uncommitted");
    site.stamp(repo.path(), &["TKT-40", "--promote"])
        .code(1)
        .err_has("the work tree is not clean")
        .err_has(" M src/b.js")
        .err_has("hint: commit them");
    repo.git(&["checkout", "src/b.js"]);
    // untracked file (anywhere in the work tree)
    repo.write("notes.txt", "untracked");
    site.stamp(repo.path(), &["TKT-40", "--promote"])
        .code(1)
        .err_has("?? notes.txt");
    repo.remove("notes.txt");
    // staged file
    repo.write("src/b.js", "staged");
    repo.git(&["add", "src/b.js"]);
    site.stamp(repo.path(), &["TKT-40", "--promote"])
        .code(1)
        .err_has("M  src/b.js");
    repo.git(&["reset", "-q", "--hard"]);
    assert_eq!(site.ticket("TKT-40").await.unwrap()["stage"], "dev");
    // ignored files do not count
    repo.write("src/gen/out.js", "ignored");
    repo.write("debug.log", "ignored");
    site.stamp(repo.path(), &["TKT-40", "--promote"])
        .ok()
        .out_has("dev -> qa");
}

#[tokio::test]
async fn promote_is_refused_behind_main_and_on_detached_head_behind_main() {
    let site = site();
    let repo = ready(&site, "TKT-41").await;
    let first = repo.git(&["rev-parse", "main"]);
    // main moves on: a branch made before is behind it
    repo.git(&["switch", "-q", "main"]);
    repo.write("src/b.js", "main moved");
    repo.commit("main moves");
    repo.git(&["switch", "-q", "-c", "old", &first]);
    site.stamp(repo.path(), &["TKT-41", "--promote"])
        .code(1)
        .err_has("branch `old` is 1 commit behind `main`")
        .err_has("hint: merge or rebase onto `main`");
    // detached HEAD behind main
    repo.git(&["switch", "-q", "--detach", &first]);
    site.stamp(repo.path(), &["TKT-41", "--promote"])
        .code(1)
        .err_has("detached HEAD")
        .err_has("behind `main`");
    // diverged: ahead and behind
    repo.git(&["switch", "-q", "feat"]);
    site.stamp(repo.path(), &["TKT-41", "--promote"])
        .code(1)
        .err_has("has diverged from `main` (1 ahead, 1 behind)");
    // a configured main branch that does not exist
    repo.write("stamp.toml", "main_branch = \"trunk\"\n");
    repo.commit("config");
    site.stamp(repo.path(), &["TKT-41", "--promote"])
        .code(1)
        .err_has("no branch `trunk`");
    // outside a repository
    let elsewhere = Repo::bare_dir();
    site.stamp(elsewhere.path(), &["TKT-41", "--promote"])
        .code(1)
        .err_has("not in a git repository");
    assert_eq!(site.ticket("TKT-41").await.unwrap()["stage"], "dev");
}

#[tokio::test]
async fn promote_is_accepted_on_main_and_ahead_of_main_with_commit_and_branch() {
    let site = site();
    // ahead of main, on a branch
    let repo = ready(&site, "TKT-42").await;
    // A commit that was never uploaded: promoted anyway, with a warning.
    repo.write("src/b.js", "b, not uploaded");
    repo.commit("b");
    let head = repo.git(&["rev-parse", "HEAD"]);
    let r = site.stamp(repo.path(), &["TKT-42", "--promote"]);
    r.ok()
        .err_has("warning: TKT-42's dev stage differs from the work tree (/src/b.js not uploaded)")
        .out_has("TKT-42: dev -> qa")
        .out_has(&format!(
            "commit {} on feat, 2 commits ahead of main",
            &head[..7]
        ))
        .out_has(&format!("{}/?qa=TKT-42", site.url()));
    let t = site.ticket("TKT-42").await.unwrap();
    let promote = t["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "promote")
        .unwrap();
    assert_eq!(
        (promote["commit"].as_str(), promote["branch"].as_str()),
        (Some(head.as_str()), Some("feat"))
    );
    // qa -> prod, also as --json
    let r = site.stamp(repo.path(), &["TKT-42", "--promote", "--json"]);
    let v: Value = serde_json::from_str(r.ok().out.trim()).unwrap();
    assert_eq!(v["stage"], "prod");
    assert_eq!(v["key"], "TKT-42");

    // on main's tip
    let repo = Repo::new(&[("src/a.js", "a1")]);
    repo.write("src/a.js", "a2");
    site.stamp(repo.path(), &["TKT-43", "-u", "--once"]).ok();
    repo.commit("a2 on main");
    site.stamp(repo.path(), &["TKT-43", "--promote"])
        .ok()
        .out_has("at the tip of main")
        .out_has("?qa=TKT-43");
    site.stamp(repo.path(), &["TKT-43", "--promote"])
        .ok()
        .out_has("TKT-43: qa -> prod")
        .out_has(&format!("TKT-43 is released: {}/ serves it", site.url()));
    // a main named master is found by itself
    let repo = Repo::new(&[("src/a.js", "a1")]);
    repo.git(&["branch", "-q", "-m", "master"]);
    repo.git(&["switch", "-q", "-c", "work"]);
    repo.write("src/a.js", "a3");
    site.stamp(repo.path(), &["TKT-44", "-u", "--once"])
        .ok()
        .out_has("1 uploaded");
    repo.commit("a3");
    site.stamp(repo.path(), &["TKT-44", "--promote"])
        .ok()
        .out_has("ahead of master");
}

#[tokio::test]
async fn revert_and_close_say_where_the_ticket_stands() {
    let site = site();
    let repo = ready(&site, "TKT-45").await;
    site.stamp(repo.path(), &["TKT-45", "--promote"]).ok();
    site.stamp(repo.path(), &["TKT-45", "--promote"]).ok();
    // illegal: promote in prod → 1, with the allowed actions
    site.stamp(repo.path(), &["TKT-45", "--promote"])
        .code(1)
        .err_has("stamp: error: cannot promote ticket TKT-45: it is in prod")
        .err_has("allowed in prod: upload, delete, revert")
        .err_has("hint:");
    site.stamp(repo.path(), &["-t", "TKT-45", "--revert"])
        .ok()
        .out_has("TKT-45: prod -> qa")
        .out_has("?qa=TKT-45");
    site.stamp(repo.path(), &["TKT-45", "--revert"])
        .ok()
        .out_has("TKT-45: qa -> dev")
        .out_has("?dev=TKT-45");
    site.stamp(repo.path(), &["TKT-45", "--revert"])
        .code(1)
        .err_has("allowed in dev: upload, delete, promote, close");
    site.stamp(repo.path(), &["TKT-45", "--close"])
        .ok()
        .out_has("TKT-45: dev -> closed")
        .out_has("an --update re-opens it");
    site.stamp(repo.path(), &["TKT-45", "--close"])
        .code(1)
        .err_has("allowed in closed: upload");
    // an --update re-opens it in dev
    repo.write("src/b.js", "b2");
    site.stamp(repo.path(), &["TKT-45", "-u", "--once"])
        .ok()
        .out_has("(dev)");
    assert_eq!(site.ticket("TKT-45").await.unwrap()["stage"], "dev");
    // --json
    let r = site.stamp(repo.path(), &["TKT-45", "--close", "--json"]);
    let v: Value = serde_json::from_str(r.ok().out.trim()).unwrap();
    assert_eq!(v["stage"], "closed");
    // Re-initiating with the very same files re-opens it too (nothing to
    // upload is no reason to stay closed), with its own history event.
    site.stamp(repo.path(), &["TKT-45", "-u", "--once"])
        .ok()
        .err_has("re-opened TKT-45: closed -> dev");
    let t = site.ticket("TKT-45").await.unwrap();
    assert_eq!(t["stage"], "dev");
    let history = t["history"].as_array().unwrap();
    assert_eq!(history.last().unwrap()["event"], "reopen", "{history:?}");
}

// ---------------------------------------------------------------- list

#[tokio::test]
async fn list_shows_tickets_by_stage_in_text_and_json() {
    let site = site();
    let here = site.home.path().to_path_buf();
    site.put("LST-1", "src/a.js", "dev one").await;
    site.put("LST-2", "src/a.js", "qa two").await;
    site.put("LST-2", "src/b.js", "qa two b").await;
    site.act("LST-2", "promote").await;
    site.put("LST-3", "src/c.js", "prod three").await;
    site.act("LST-3", "promote").await;
    site.act("LST-3", "promote").await;
    site.put("LST-4", "src/d.js", "closed four").await;
    site.act("LST-4", "close").await;

    let r = site.stamp(&here, &["--list"]);
    r.ok()
        .out_has("STAGE")
        .out_has("TICKET")
        .out_has("MODULES")
        .out_has("LAST CHANGE")
        .out_has("LINK");
    let rows: Vec<&str> = r.out.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{}", r.out);
    assert!(
        rows[0].starts_with("qa ") && rows[0].contains("LST-2") && rows[0].contains(" 2 "),
        "{}",
        r.out
    );
    assert!(rows[0].contains(&format!("{}/?qa=LST-2", site.url())));
    assert!(
        rows[1].starts_with("prod") && rows[1].contains("LST-3") && rows[1].contains("just now")
    );
    let r = site.stamp(&here, &["-l", "-d"]);
    assert!(
        r.ok().out.contains("LST-1") && !r.out.contains("LST-2"),
        "{}",
        r.out
    );
    let r = site.stamp(&here, &["--list", "--qa", "--prod", "--dev"]);
    assert_eq!(r.ok().out.lines().count(), 4, "{}", r.out);
    let r = site.stamp(&here, &["-l", "--all"]);
    assert!(
        r.ok().out.contains("closed") && r.out.contains("LST-4"),
        "{}",
        r.out
    );

    let r = site.stamp(&here, &["-l", "--json"]);
    let v: Value = serde_json::from_str(r.ok().out.trim()).unwrap();
    let keys: Vec<&str> = v["tickets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys.len(), 2);
    assert!(keys.contains(&"LST-2") && keys.contains(&"LST-3"));

    // One ticket: overrides per stage with URLs, and its history.
    let r = site.stamp(&here, &["LST-2", "-l"]);
    r.ok()
        .out_has("LST-2  qa  version")
        .out_has("dev (2 modules)")
        .out_has("qa (2 modules)")
        .out_has(&format!("{}/src/b.js?__ts={}", site.url(), sha("qa two b")))
        .out_has("history")
        .out_has("promote  dev -> qa");
    // -q: only that stage; without --list the same view.
    let r = site.stamp(&here, &["lst-2", "-q"]);
    assert!(
        r.ok().out.contains("qa (2 modules)") && !r.out.contains("dev (2 modules)"),
        "{}",
        r.out
    );
    let r = site.stamp(&here, &["LST-2", "--json"]);
    let v: Value = serde_json::from_str(r.ok().out.trim()).unwrap();
    assert_eq!(v["modules"]["qa"].as_array().unwrap().len(), 2);
    assert!(v["history"].as_array().unwrap().len() >= 3);
    // Empty selection.
    let empty = self::site();
    empty
        .stamp(&here, &["-l"])
        .ok()
        .out_has("no tickets in qa or prod");
}

// ---------------------------------------------------------------- errors and exit codes

#[tokio::test]
async fn connection_errors_exit_3_and_refusals_exit_1() {
    let site = site();
    let here = site.home.path().to_path_buf();
    let dead = format!("http://127.0.0.1:{}", free_port().unwrap());
    stamp_env(&here, &here, &["--server", &dead, "-l"], &[])
        .code(3)
        .err_has(&format!("stamp: error: cannot reach the server at {dead}"))
        .err_has("cause:")
        .err_has("hint: is stamp-proxy running there?");
    stamp_env(&here, &here, &["TKT-1", "-l"], &[("STAMP_SERVER", &dead)]).code(3);
    // The same at the start of a sync.
    let repo = shop();
    repo.write("src/a.js", "a2");
    stamp_env(
        &here,
        repo.path(),
        &["--server", &dead, "TKT-1", "-u", "--once"],
        &[],
    )
    .code(3);
    stamp_env(&here, repo.path(), &["--server", &dead, "TKT-1", "-u"], &[]).code(3);
    // Something that is not a stamp-proxy.
    stamp_env(&here, &here, &["--server", &site._origin.url, "-l"], &[])
        .code(3)
        .err_has("is this a stamp-proxy?");
    // Unknown ticket: refused.
    site.stamp(&here, &["NOPE-1"])
        .code(1)
        .err_has("ticket NOPE-1 does not exist");
    site.stamp(repo.path(), &["NOPE-1", "--close"])
        .code(1)
        .err_has("does not exist")
        .err_has("--update");
}

#[tokio::test]
async fn tokens_flag_beats_env_and_bad_tokens_exit_3() {
    let site = site_with_tokens();
    let here = site.home.path().to_path_buf();
    let url = site.url().to_string();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut all = vec!["--server", url.as_str()];
        all.extend_from_slice(args);
        stamp_env(&here, &here, &all, env)
    };
    run(&["-l"], &[])
        .code(3)
        .err_has("missing bearer token")
        .err_has("set STAMP_TOKEN");
    run(&["-l"], &[("STAMP_TOKEN", "wrong")])
        .code(3)
        .err_has("unknown or revoked");
    run(&["-l"], &[("STAMP_TOKEN", DEV)]).ok();
    run(&["-l", "--token", DEV], &[]).ok();
    // --token beats STAMP_TOKEN, both ways.
    run(&["-l", "--token", "wrong"], &[("STAMP_TOKEN", DEV)]).code(3);
    run(&["-l", "--token", DEV, "-v"], &[("STAMP_TOKEN", "wrong")])
        .ok()
        .err_has("token ******** (from flag --token)");
    // The token is never printed.
    let r = run(&["-l", "-v"], &[("STAMP_TOKEN", DEV)]);
    assert!(!r.err.contains(DEV) && !r.out.contains(DEV));

    // Roles: qa may not upload; dev may not promote to prod.
    let repo = shop();
    repo.write("src/a.js", "a2");
    repo.commit("a2");
    let up = |token: &str| {
        stamp_env(
            &here,
            repo.path(),
            &["--server", &url, "TKT-50", "-u", "--once"],
            &[("STAMP_TOKEN", token)],
        )
    };
    up(QA).code(3).err_has("not allowed").err_has("qa role");
    up(DEV).ok();
    let mv = |token: &str| {
        stamp_env(
            &here,
            repo.path(),
            &["--server", &url, "TKT-50", "--promote"],
            &[("STAMP_TOKEN", token)],
        )
    };
    mv(DEV).ok().out_has("dev -> qa");
    mv(DEV).code(3).err_has("may not promote a ticket in qa");
    mv(QA).ok().out_has("qa -> prod");
    let t = site.ticket("TKT-50").await.unwrap();
    let actors: Vec<&str> = t["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["actor"].as_str().unwrap())
        .collect();
    assert!(
        actors.contains(&"alice") && actors.contains(&"quinn"),
        "{actors:?}"
    );
}

#[tokio::test]
async fn policy_refusals_exit_1_with_every_reason_on_its_own_line() {
    let site = site_with(
        "[[policies]]\nkind = \"command\"\nprogram = \"/bin/sh\"\nargs = [\"-c\", \"echo the tests are red; exit 1\"]\non = \"dev->qa\"\n\
         [[policies]]\nkind = \"command\"\nprogram = \"/bin/sh\"\nargs = [\"-c\", \"echo no releases on Fridays; exit 3\"]\non = \"dev->qa\"\n",
    );
    let repo = ready(&site, "TKT-60").await;
    let r = site.stamp(repo.path(), &["TKT-60", "--promote"]);
    r.code(1)
        .err_has("stamp: error: TKT-60: refused by 2 policies\n")
        .err_has("\n  - command: the tests are red\n")
        .err_has("\n  - command: no releases on Fridays\n")
        .err_has("hint: fix what the policies name");
    assert_eq!(site.ticket("TKT-60").await.unwrap()["stage"], "dev");
}

/// A local `main` the remote has moved past (or force-pushed over) is stale:
/// the ticket is what its branch adds to `origin/main`, not to the stale copy.
#[tokio::test]
async fn a_stale_local_main_does_not_count_other_peoples_commits() {
    let site = site();
    // The remote, and a colleague's clone that moves main on.
    let remote = Repo::bare_dir();
    remote.git(&["init", "-q", "--bare", "-b", "main"]);
    let url = remote.path().to_string_lossy().to_string();
    let colleague = Repo::new(&[("src/a.js", "a1"), ("src/b.js", "b1")]);
    colleague.git(&["remote", "add", "origin", &url]);
    colleague.git(&["push", "-q", "origin", "main"]);
    let dev = Repo::bare_dir();
    dev.git(&["clone", "-q", &url, "."]);
    dev.git(&["config", "user.name", "Dev"]);
    dev.git(&["config", "user.email", "dev@example.invalid"]);
    // main moves on: b.js changes, on the remote only.
    colleague.write("src/b.js", "b2");
    colleague.commit("b2");
    colleague.git(&["push", "-q", "origin", "main"]);
    // The developer fetches (origin/main moves) but never updates local main,
    // and branches the ticket from origin/main.
    dev.git(&["fetch", "-q", "origin"]);
    dev.git(&["checkout", "-q", "-b", "TKT-60", "origin/main"]);
    dev.write("src/a.js", "a-ticket");
    dev.commit("the ticket");
    site.stamp(dev.path(), &["TKT-60", "--update", "--once"])
        .ok();
    let dev_stage = site.stage("TKT-60", "dev").await;
    let paths: Vec<&String> = dev_stage.keys().collect();
    assert_eq!(
        paths,
        ["/src/a.js"],
        "b.js is main's change, not the ticket's"
    );
    site.stamp(dev.path(), &["TKT-60", "--promote"])
        .ok()
        .out_has("dev -> qa");

    // main is force-pushed over: still no need to repair local main by hand.
    colleague.git(&["reset", "-q", "--hard", "HEAD~1"]);
    colleague.write("src/c.js", "c1");
    colleague.commit("rewritten history");
    colleague.git(&["push", "-q", "--force", "origin", "main"]);
    dev.git(&["fetch", "-q", "origin"]);
    // Replay just the ticket's commit onto the rewritten main.
    dev.git(&["rebase", "-q", "--onto", "origin/main", "HEAD~1"]);
    site.stamp(dev.path(), &["TKT-60", "--update", "--once"])
        .ok();
    let dev_stage = site.stage("TKT-60", "dev").await;
    let paths: Vec<&String> = dev_stage.keys().collect();
    assert_eq!(paths, ["/src/a.js"], "{dev_stage:?}");
}

/// `stamp --list -p --history`: what production served, change by change,
/// from the proxy's history repository.
#[tokio::test]
async fn the_production_history_is_listed() {
    let history = tempfile::tempdir().unwrap();
    let site = site_with(&format!(
        "history_repo = \"{}\"\n",
        history.path().join("log").display()
    ));
    let repo = Repo::new(&[("src/a.js", "a1")]);
    repo.git(&["checkout", "-q", "-b", "TKT-70"]);
    repo.write("src/a.js", "a-ticket");
    repo.commit("the ticket");
    site.stamp(repo.path(), &["TKT-70", "--update", "--once"])
        .ok();
    let empty = site.stamp(repo.path(), &["--list", "-p", "--history"]);
    empty.ok().out_has("nothing released yet");
    site.stamp(repo.path(), &["TKT-70", "--promote"]).ok();
    site.stamp(repo.path(), &["TKT-70", "--promote"])
        .ok()
        .out_has("qa -> prod");
    site.stamp(repo.path(), &["TKT-70", "--revert"]).ok();
    // The history repository is written off the request path: wait for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let listed = loop {
        let listed = site.stamp(repo.path(), &["--list", "-p", "--history"]);
        if listed.out.contains("revert") || std::time::Instant::now() > deadline {
            break listed;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    listed
        .ok()
        .out_has("newest first")
        .out_has("TKT-70 released to prod by anonymous")
        .out_has("released: TKT-70")
        .out_has("1 override");
    let first_revert = listed.out.find("revert").unwrap_or(usize::MAX);
    let release = listed.out.find("released to prod").unwrap();
    assert!(first_revert < release, "newest first:\n{}", listed.out);
    let json = site.stamp(repo.path(), &["--list", "-p", "--history", "--json"]);
    let v: Value = serde_json::from_str(json.ok().out.trim()).unwrap();
    let commits = v["commits"].as_array().unwrap();
    assert_eq!(commits.len(), 2, "{v}");
    assert_eq!(commits[1]["released"], serde_json::json!(["TKT-70"]));
    assert_eq!(
        commits[0]["overrides"], 0,
        "reverted: production serves nothing of it"
    );
    // Each commit names the ticket's own commit and branch.
    let log = git2::Repository::open(history.path().join("log")).unwrap();
    let release = log
        .find_commit(git2::Oid::from_str(commits[1]["id"].as_str().unwrap()).unwrap())
        .unwrap();
    let head = repo.git(&["rev-parse", "HEAD"]);
    let message = release.message().unwrap();
    assert!(
        message.contains("Ticket: TKT-70")
            && message.contains(&format!("Commit: {}", head.trim()))
            && message.contains("Branch: TKT-70"),
        "{message}"
    );

    // Released again, then production goes back to the commit where it
    // served nothing of it: one command, which reverts the ticket.
    let empty_at = commits[0]["id"].as_str().unwrap()[..9].to_string();
    site.stamp(repo.path(), &["TKT-70", "--promote"])
        .ok()
        .out_has("qa -> prod");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let json = site.stamp(repo.path(), &["--list", "-p", "--history", "--json"]);
        let v: Value = serde_json::from_str(json.ok().out.trim()).unwrap();
        if v["commits"].as_array().unwrap().len() == 3 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no third commit: {v}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    site.stamp(repo.path(), &["--revert", "--to", &empty_at])
        .ok()
        .out_has("production is back at")
        .out_has("reverted TKT-70 (prod -> qa)");
    site.stamp(repo.path(), &["TKT-70"]).ok().out_has("qa");
    site.stamp(repo.path(), &["--revert", "--to", &empty_at])
        .ok()
        .out_has("nothing to revert");
    site.stamp(repo.path(), &["TKT-70", "--revert", "--to", &empty_at])
        .code(2)
        .err_has("--to goes with --revert and no ticket");
    site.stamp(repo.path(), &["--to", &empty_at])
        .code(2)
        .err_has("--to goes with --revert");
    let bad = site.stamp(repo.path(), &["--revert", "--to", "not-a-commit"]);
    assert_ne!(bad.code, Some(0), "{bad:#?}");
    bad.err_has("7 to 40 hex digits");

    // Without a history repository, the answer says how to get one.
    let plain = site_with("");
    plain
        .stamp(repo.path(), &["--list", "-p", "--history"])
        .err_has("history_repo");
}

/// GitHub, end to end: `stamp` on a branch with an open pull request. The
/// pull request gets one comment, kept up to date; each stage gets a
/// deployment; the commit gets a status; and the release waits for an
/// approved review (the `github` policy) with a reason the CLI prints.
#[tokio::test]
async fn github_pull_requests_follow_the_ticket_and_gate_its_release() {
    let gh = stamp_tests::fakes::FakeGitHub::start("acme/shop", "gh-token").unwrap();
    let github = format!(
        "repo = \"acme/shop\"\napi = \"{}\"\ntoken = \"gh-token\"\n",
        gh.url()
    );
    let site = site_with(&format!(
        "[[hooks]]\nkind = \"github\"\n{github}backoff = \"20ms\"\n\
         [[policies]]\nkind = \"github\"\n{github}require_checks = false\n"
    ));
    let repo = Repo::new(&[("src/a.js", "a1")]);
    repo.git(&["checkout", "-q", "-b", "TKT-95"]);
    repo.write("src/a.js", "a-ticket");
    repo.commit("the ticket");
    let head = repo.git(&["rev-parse", "HEAD"]).trim().to_string();
    let pr = gh.pull("TKT-95", &head);
    let wait = |what: &str, ok: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ok() {
            assert!(Instant::now() < deadline, "{what}: {:?}", gh.comments(pr));
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    site.stamp(repo.path(), &["TKT-95", "--update", "--once"])
        .ok();
    wait("comment in dev", &|| {
        gh.comments(pr).iter().any(|c| c.contains("is in **dev**"))
    });
    site.stamp(repo.path(), &["TKT-95", "--promote"])
        .ok()
        .out_has("dev -> qa");
    wait("comment in qa", &|| {
        gh.comments(pr).iter().any(|c| c.contains("is in **qa**"))
    });
    // No approval yet: the checklist says so without moving anything, and
    // the release is refused with GitHub's reason.
    site.stamp(repo.path(), &["TKT-95", "--check"])
        .code(1)
        .out_has("TKT-95 qa -> prod: would be refused")
        .out_has("x  github: pull request #1 has no approved review");
    site.stamp(repo.path(), &["TKT-95", "--promote"])
        .code(1)
        .err_has("github: pull request #1 has no approved review");
    gh.review(pr, "carol", "APPROVED");
    site.stamp(repo.path(), &["TKT-95", "--check"])
        .ok()
        .out_has("would be allowed")
        .out_has("ok github");
    site.stamp(repo.path(), &["TKT-95", "--promote"])
        .ok()
        .out_has("qa -> prod");
    wait("comment in prod", &|| {
        gh.comments(pr).iter().any(|c| c.contains("is in **prod**"))
    });
    assert_eq!(gh.comments(pr).len(), 1, "one comment, edited in place");
    let envs: Vec<(String, String)> = gh
        .deployments()
        .into_iter()
        .map(|(e, r, _)| (e, r))
        .collect();
    assert_eq!(
        envs,
        [
            ("TKT-95/dev".to_string(), head.clone()),
            ("TKT-95/qa".to_string(), head.clone()),
            ("TKT-95/prod".to_string(), head.clone()),
        ]
    );
    let last = gh.statuses(&head).pop().unwrap();
    assert_eq!(last.1, "success");
    assert!(last.2.contains("TKT-95 released to production"), "{last:?}");
}

/// GitLab, end to end: `stamp` on a branch with an open merge request. The
/// merge request gets one note, kept up to date; each stage gets an
/// environment with its link; the commit gets a status; and the release
/// waits for an approval and a green pipeline (the `gitlab` policy), with
/// reasons the CLI prints.
#[tokio::test]
async fn gitlab_merge_requests_follow_the_ticket_and_gate_its_release() {
    let gl = stamp_tests::fakes::FakeGitLab::start("acme/web/shop", "gl-token", "gl-read").unwrap();
    let gitlab = format!(
        "project = \"acme/web/shop\"\nurl = \"{}\"\ntoken = \"gl-token\"\n",
        gl.url()
    );
    let site = site_with(&format!(
        "[[hooks]]\nkind = \"gitlab\"\n{gitlab}backoff = \"20ms\"\n\
         [[policies]]\nkind = \"gitlab\"\n{gitlab}"
    ));
    let repo = Repo::new(&[("src/a.js", "a1")]);
    repo.git(&["checkout", "-q", "-b", "TKT-96-new-cart"]);
    repo.write("src/a.js", "a-ticket");
    repo.commit("the ticket");
    let head = repo.git(&["rev-parse", "HEAD"]).trim().to_string();
    let mr = gl.merge_request("TKT-96-new-cart", &head);
    let ours = |gl: &stamp_tests::fakes::FakeGitLab| -> Vec<String> {
        gl.notes(mr)
            .into_iter()
            .filter(|(who, _)| who.starts_with("project_42_bot"))
            .map(|(_, b)| b)
            .collect()
    };
    let wait = |what: &str, ok: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ok() {
            assert!(Instant::now() < deadline, "{what}: {:?}", gl.notes(mr));
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    site.stamp(repo.path(), &["TKT-96", "--update", "--once"])
        .ok();
    wait("note in dev", &|| {
        ours(&gl).iter().any(|c| c.contains("is in **dev**"))
    });
    site.stamp(repo.path(), &["TKT-96", "--promote"])
        .ok()
        .out_has("dev -> qa");
    wait("note in qa", &|| {
        ours(&gl).iter().any(|c| c.contains("is in **qa**"))
    });
    // Nothing approved, no pipeline yet: the checklist says both without
    // moving anything, and the release is refused with GitLab's reasons.
    site.stamp(repo.path(), &["TKT-96", "--check"])
        .code(1)
        .out_has("TKT-96 qa -> prod: would be refused")
        .out_has("x  gitlab: merge request !1 has no approval")
        .out_has("x  gitlab: merge request !1 has no pipeline for its head commit");
    gl.approve(mr, "carol");
    gl.pipeline(mr, &head, "failed");
    site.stamp(repo.path(), &["TKT-96", "--promote"])
        .code(1)
        .err_has("gitlab: the head pipeline #")
        .err_has("of merge request !1 is failed");
    gl.pipeline(mr, &head, "success");
    site.stamp(repo.path(), &["TKT-96", "--check"])
        .ok()
        .out_has("would be allowed")
        .out_has("ok gitlab");
    site.stamp(repo.path(), &["TKT-96", "--promote"])
        .ok()
        .out_has("qa -> prod");
    wait("note in prod", &|| {
        ours(&gl).iter().any(|c| c.contains("is in **prod**"))
    });
    assert_eq!(ours(&gl).len(), 1, "one note, edited in place");
    let envs: Vec<(String, String)> = gl
        .environments()
        .into_iter()
        .map(|e| (e.name, e.tier))
        .collect();
    assert_eq!(
        envs,
        [
            ("TKT-96/dev".to_string(), "development".to_string()),
            ("TKT-96/qa".to_string(), "testing".to_string()),
            ("TKT-96/prod".to_string(), "production".to_string()),
        ]
    );
    let dev = &gl.environments()[0];
    let link = dev.external_url.clone().unwrap_or_default();
    assert!(link.contains("TKT-96"), "{dev:?}");
    assert!(gl.deployments().iter().all(|d| d.sha == head
        && d.git_ref == "TKT-96-new-cart"
        && d.statuses == ["running", "success"]));
    let last = gl.statuses(&head).pop().unwrap();
    assert_eq!(last.state, "success");
    assert!(
        last.description.contains("TKT-96 released to production"),
        "{last:?}"
    );
    assert_eq!(last.git_ref.as_deref(), Some("TKT-96-new-cart"));
}

/// The git policy checks the bytes, not only the commit: `stamp` names the
/// file of the commit each upload is (and nothing for a file changed since
/// the commit), and a promotion is refused when an upload that names a file
/// is not that file byte for byte.
#[tokio::test]
async fn the_git_policy_checks_the_uploaded_bytes_against_the_commit() {
    let repo = Repo::new(&[("src/a.js", "a1"), ("src/b.js", "b1")]);
    let site = site_with(&format!(
        "[[policies]]\nkind = \"git\"\nremote = {:?}\ncache_dir = {:?}\n",
        repo.path().to_string_lossy(),
        repo.home.path().join("mirrors").to_string_lossy()
    ));
    repo.git(&["checkout", "-q", "-b", "TKT-97"]);
    repo.write("src/a.js", "a2");
    repo.commit("a2");
    site.stamp(repo.path(), &["TKT-97", "--update", "--once"])
        .ok();
    // Changed since the commit: uploaded, but named as no file of it.
    repo.write("src/b.js", "b-not-committed");
    site.stamp(repo.path(), &["TKT-97", "--update", "--once"])
        .ok();
    let t = site.ticket("TKT-97").await.unwrap();
    let sources: Vec<(String, Option<String>)> = t["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "upload")
        .map(|e| {
            (
                e["detail"].as_str().unwrap().to_string(),
                e["source"].as_str().map(str::to_string),
            )
        })
        .collect();
    assert_eq!(
        sources,
        [
            ("/src/a.js".to_string(), Some("src/a.js".to_string())),
            ("/src/b.js".to_string(), None),
        ]
    );
    // Committed: b is named too, and the promotion passes clean.
    repo.commit("b");
    site.stamp(repo.path(), &["TKT-97", "--update", "--once"])
        .ok();
    site.stamp(repo.path(), &["TKT-97", "--promote"])
        .ok()
        .out_has("dev -> qa");
    // Bytes that claim to be a file of the commit and are not: refused.
    let head = repo.git(&["rev-parse", "HEAD"]);
    let forged = client()
        .put(format!(
            "{}/__stamp/api/v1/tickets/TKT-98/modules/src/a.js",
            site.url()
        ))
        .header("x-stamp-commit", &head)
        .header("x-stamp-source", "src/a.js")
        .body("export const evil = 1;")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 201);
    site.stamp(repo.path(), &["TKT-98", "--promote"])
        .code(1)
        .err_has("/src/a.js: the uploaded bytes are not src/a.js as of");
    // A path that could name no file of a tree, or a source without a
    // commit: refused at the upload, naming the header.
    for (source, commit) in [
        ("../etc/passwd", Some(head.as_str())),
        ("/src/a.js", Some(head.as_str())),
        ("src\\a.js", Some(head.as_str())),
        ("src/a.js", None),
    ] {
        let mut req = client()
            .put(format!(
                "{}/__stamp/api/v1/tickets/TKT-99/modules/src/a.js",
                site.url()
            ))
            .header("x-stamp-source", source)
            .body("x");
        if let Some(c) = commit {
            req = req.header("x-stamp-commit", c);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 400, "{source}");
        assert!(
            r.text().await.unwrap().contains("x-stamp-source"),
            "{source}"
        );
    }
    assert!(site.ticket("TKT-99").await.is_none());
}

#[tokio::test]
async fn qa_signs_off_and_withdraws_from_the_cli() {
    let origin = origin();
    let dir = tempfile::tempdir().unwrap();
    let h = stamp_control::hash_token;
    let conf = dir.path().join("proxy.toml");
    std::fs::write(
        &conf,
        format!(
            "origin = \"{}\"\nstore = \"{}\"\n\
             [[tokens]]\nname = \"alice\"\nrole = \"dev\"\nsha256 = \"{}\"\n\
             [[tokens]]\nname = \"quinn\"\nrole = \"qa\"\nsha256 = \"{}\"\n\
             [[policies]]\nkind = \"sign-off\"\n",
            origin.url,
            dir.path().join("store").display(),
            h(DEV),
            h(QA)
        ),
    )
    .unwrap();
    let proxy = Proxy::start_with(None, &["--config", &conf.to_string_lossy()], &[]).unwrap();
    let site = Site {
        _origin: origin,
        proxy,
        home: dir,
    };
    let here = site.home.path().to_path_buf();
    let url = site.url().to_string();
    let repo = shop();
    repo.write("src/a.js", "a2");
    repo.commit("a2");
    let as_ = |token: &str, args: &[&str]| {
        let mut all = vec!["--server", url.as_str(), "TKT-60"];
        all.extend_from_slice(args);
        stamp_env(&here, repo.path(), &all, &[("STAMP_TOKEN", token)])
    };
    as_(DEV, &["-u", "--once"]).ok();
    // Only in qa, and only by a role that may.
    as_(QA, &["--sign-off"]).code(1).err_has("cannot sign off");
    as_(DEV, &["--promote"]).ok();
    as_(DEV, &["--sign-off"]).code(3).err_has("dev role");
    as_(QA, &["--check"])
        .code(1)
        .out_has("x  sign-off: needs 1 sign-off by qa tokens other than the uploaders; has 0");
    as_(QA, &["--sign-off", "--comment", "checked on a phone"])
        .ok()
        .out_has("TKT-60: signed off in qa");
    as_(QA, &["--check"]).ok().out_has("ok sign-off");
    let t = site.ticket("TKT-60").await.unwrap();
    let last = t["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["event"], "sign-off");
    assert_eq!(last["actor"], "quinn");
    assert_eq!(last["detail"], "checked on a phone", "{last}");
    // Withdrawn: the release is refused again; nothing left to withdraw.
    as_(QA, &["--withdraw-sign-off", "--comment", "found a bug"])
        .ok()
        .out_has("sign-off withdrawn");
    as_(QA, &["--check"]).code(1).out_has("has 0");
    as_(QA, &["--withdraw-sign-off"])
        .code(1)
        .err_has("no sign-off of TKT-60 standing to withdraw");
    // Bad input is a usage error before anything is sent.
    as_(QA, &["--promote", "--comment", "x"])
        .code(2)
        .err_has("--comment goes with --sign-off");
    as_(QA, &["--sign-off", "--comment", "two\nlines"])
        .code(2)
        .err_has("one line");
    as_(QA, &["--sign-off", "--withdraw-sign-off"]).code(2);
}

/// Issue 32: a `folder` written the Windows way, and the save patterns of
/// Windows and macOS editors, through the real watcher: each content is
/// uploaded once, nothing is removed that is still there, and a folder that
/// goes away and comes back (a build starting over) removes nothing.
#[tokio::test]
async fn watch_takes_a_windows_folder_setting_and_every_save_pattern_once() {
    let site = site();
    let repo = shop();
    repo.write("stamp.toml", "folder = 'web\\js'\nurl_path = '/js'\n");
    repo.write("web/js/app.js", "app 1");
    repo.write("web/js/lib/x.js", "x 1");
    let w = Watcher::start(&site, repo.path(), &["TKT-32", "--update"]);
    let log = || w.log();
    let key = "TKT-32";
    let js = |rel: &str| repo.path().join("web/js").join(rel);
    site.wait_dev(
        key,
        &[("/js/app.js", "app 1"), ("/js/lib/x.js", "x 1")],
        log,
    )
    .await;

    // JetBrains' safe write: new content aside, the original renamed away,
    // the new one renamed over, the original deleted.
    repo.write("web/js/app.js___jb_tmp___", "app 2");
    std::fs::rename(js("app.js"), js("app.js___jb_old___")).unwrap();
    std::fs::rename(js("app.js___jb_tmp___"), js("app.js")).unwrap();
    std::fs::remove_file(js("app.js___jb_old___")).unwrap();
    site.wait_dev(
        key,
        &[("/js/app.js", "app 2"), ("/js/lib/x.js", "x 1")],
        log,
    )
    .await;
    // Delete, then create (Windows editors).
    repo.remove("web/js/app.js");
    repo.write("web/js/app.js", "app 3");
    site.wait_dev(
        key,
        &[("/js/app.js", "app 3"), ("/js/lib/x.js", "x 1")],
        log,
    )
    .await;
    // vim's and Office's scratch files around a save.
    repo.write("web/js/4913", "");
    repo.remove("web/js/4913");
    repo.write("web/js/.app.js.swp", "swap");
    repo.write("web/js/app.js~", "app 3");
    repo.write("web/js/~$app.js", "lock");
    repo.write("web/js/.#app.js", "lock");
    repo.write("web/js/app.js", "app 4");
    site.wait_dev(
        key,
        &[("/js/app.js", "app 4"), ("/js/lib/x.js", "x 1")],
        log,
    )
    .await;
    // A folder renamed.
    std::fs::rename(js("lib"), js("util")).unwrap();
    site.wait_dev(
        key,
        &[("/js/app.js", "app 4"), ("/js/util/x.js", "x 1")],
        log,
    )
    .await;
    // The folder goes away and comes back: nothing removed meanwhile.
    let away = repo.path().join("web/js-away");
    std::fs::rename(js(""), &away).unwrap();
    w.wait_for("is gone", Duration::from_secs(10));
    tokio::time::sleep(Duration::from_millis(400)).await;
    site.wait_dev(
        key,
        &[("/js/app.js", "app 4"), ("/js/util/x.js", "x 1")],
        log,
    )
    .await;
    std::fs::rename(&away, js("")).unwrap();
    w.wait_for("is back", Duration::from_secs(10));
    repo.write("web/js/app.js", "app 5");
    site.wait_dev(
        key,
        &[("/js/app.js", "app 5"), ("/js/util/x.js", "x 1")],
        log,
    )
    .await;

    let log = w.interrupt();
    let uploads = |path: &str| {
        log.lines()
            .filter(|l| l.contains(&format!("upload  {path} ")))
            .count()
    };
    assert_eq!(uploads("/js/app.js"), 5, "one upload per content:\n{log}");
    assert_eq!(uploads("/js/util/x.js"), 1, "{log}");
    assert!(!log.contains("remove  /js/app.js"), "{log}");
    assert!(!log.contains("remove  /js/util"), "{log}");
    for scratch in ["4913", "swp", "app.js~", "~$", ".#", "\\", "%5C"] {
        assert!(
            !log.lines()
                .any(|l| l.contains("upload") && l.contains(scratch)),
            "{scratch}:\n{log}"
        );
    }
}
