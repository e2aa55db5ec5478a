//! The npm package, as a front-end developer gets it: `cli/npm/pack` writes
//! the launcher and this platform's binary package, a clean folder installs
//! both with `npm install --offline`, and `npx ticket-stamp` runs a real sync
//! against a real proxy, with its settings in `package.json`.

use std::path::Path;
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

#[tokio::test]
async fn npx_ticket_stamp_syncs_with_settings_from_package_json() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("tarballs");
    let pack = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cli/npm/pack");
    let listed = ok(Command::new(&pack)
        .arg(&out)
        .env("STAMP_BINARY", binary("stamp").unwrap()));
    let version = env!("CARGO_PKG_VERSION");
    let launcher = out.join(format!("ticket-stamp-{version}.tgz"));
    let platform = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p != &launcher)
        .expect("the platform package's tarball");
    assert!(listed.contains("ticket-stamp-linux-x64-"), "{listed}");

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
