//! The Debian package, built with cargo-deb, installed on this machine with
//! dpkg, and run as its systemd unit says: the `ExecStart` line as the
//! service's own user with the packaged configuration, then the
//! `ExecReload` lines (a zero-downtime handover), then a purge.
//!
//! The package is built from the debug binary the other tests use (one
//! build for every test; `cargo deb -p stamp-proxy` makes the release one).
//! Installing needs root, as in CI; elsewhere the package is unpacked with
//! `dpkg-deb -x` and run from there, and the test says so.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use stamp_tests::proxy::binary;
use stamp_tests::{client, free_port, Origin, Route};

const UNIT: &str = "usr/lib/systemd/system/stamp-proxy.service";
const CONFIG: &str = "etc/ticket-stamp/stamp-proxy.toml";
const USER: &str = "ticket-stamp";

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn is_root() -> bool {
    run(Command::new("id").arg("-u")).trim() == "0"
}

/// Builds the .deb into `out`; its path.
fn build_deb(out: &Path) -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    binary("stamp-proxy").unwrap();
    run(Command::new("cargo")
        .current_dir(&workspace)
        .args(["deb", "-p", "stamp-proxy", "--profile", "dev", "--no-build"])
        // The debug binary is large: xz's fast preset keeps this to seconds.
        .args(["--no-strip", "--fast", "--quiet", "-o"])
        .arg(out)
        .env_remove("CARGO_TARGET_DIR"));
    std::fs::read_dir(out)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .expect("cargo deb made a .deb")
}

/// The unit's `Key=` lines, in order.
fn unit_lines<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

/// Runs one `Exec…=` line as systemd would for this unit: as its user, in
/// its working directory, `$MAINPID` filled in; `extra` is appended to
/// `stamp-proxy`'s own lines (the test's origin and port).
fn exec_line(
    line: &str,
    root: &Path,
    as_user: bool,
    main_pid: Option<u32>,
    extra: &[String],
    log: &Path,
) {
    let line = line.trim_start_matches(['-', '+', '!', '@']);
    let mut words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
    for w in &mut words {
        if w == "$MAINPID" {
            *w = main_pid.expect("a main pid").to_string();
        }
        if !as_user && w.starts_with('/') && !w.starts_with("/bin/") {
            // Unpacked, not installed: the package's files are under root.
            *w = root.join(w.trim_start_matches('/')).display().to_string();
        }
    }
    let stamp = words[0].ends_with("/stamp-proxy");
    if stamp {
        words.extend(extra.iter().cloned());
    }
    let mut cmd = if as_user && stamp {
        let mut c = Command::new("runuser");
        c.args(["-u", USER, "--"]).args(&words);
        c
    } else {
        let mut c = Command::new(&words[0]);
        c.args(&words[1..]);
        c
    };
    cmd.current_dir(if as_user {
        PathBuf::from("/var/lib/ticket-stamp")
    } else {
        root.join("var/lib/ticket-stamp")
    })
    .env("RUST_LOG", "info")
    // Under systemd, the journal; here a file (a daemon keeps it open, so
    // no pipe anyone waits to close).
    .stderr(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap(),
    );
    let status = cmd.status().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        status.success(),
        "{cmd:?}: {status}\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn pid_in(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

async fn served(url: &str) -> String {
    let start = Instant::now();
    loop {
        if let Ok(r) = client().get(url).send().await {
            if r.status() == 200 {
                return r.text().await.unwrap();
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{url} not serving"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Stops what the pid file names and purges the package, however the test ends.
struct Cleanup {
    pid_file: PathBuf,
    installed: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(pid) = pid_in(&self.pid_file) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        if self.installed {
            let _ = Command::new("dpkg")
                .args(["--purge", "ticket-stamp-proxy"])
                .output();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_debian_package_installs_runs_as_its_unit_says_and_purges() {
    let work = tempfile::tempdir().unwrap();
    let deb = build_deb(work.path());

    // What is inside, and how.
    let listing = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    for path in [
        "./usr/bin/stamp-proxy",
        &format!("./{CONFIG}"),
        &format!("./{UNIT}"),
        "./usr/share/doc/ticket-stamp-proxy/README.md",
    ] {
        assert!(listing.contains(path), "{path} missing:\n{listing}");
    }
    let name = run(Command::new("dpkg-deb").arg("-f").arg(&deb).arg("Package"));
    assert_eq!(name.trim(), "ticket-stamp-proxy");
    let info = run(Command::new("dpkg-deb")
        .arg("-I")
        .arg(&deb)
        .arg("conffiles"));
    assert!(info.contains(&format!("/{CONFIG}")), "{info}");

    let root_user = is_root();
    let root = if root_user {
        run(Command::new("dpkg").arg("-i").arg(&deb));
        PathBuf::from("/")
    } else {
        println!("not root: the package is unpacked with dpkg-deb -x, not installed");
        let root = work.path().join("root");
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
        std::fs::create_dir_all(root.join("var/lib/ticket-stamp")).unwrap();
        std::fs::create_dir_all(root.join("run/ticket-stamp")).unwrap();
        root
    };
    let pid_file = if root_user {
        PathBuf::from("/run/ticket-stamp/stamp-proxy.pid")
    } else {
        root.join("run/ticket-stamp/stamp-proxy.pid")
    };
    let _cleanup = Cleanup {
        pid_file: pid_file.clone(),
        installed: root_user,
    };

    let unit = std::fs::read_to_string(root.join(UNIT)).unwrap();
    for hardening in [
        "User=ticket-stamp",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "SystemCallFilter=@system-service",
        "StateDirectory=ticket-stamp",
    ] {
        assert!(
            unit.contains(hardening),
            "{hardening} missing from the unit"
        );
    }
    if root_user {
        // The maintainer script made the user and the data directory, and
        // the service may read its configuration, no one else.
        let user = run(Command::new("getent").args(["passwd", USER]));
        assert!(user.contains("/usr/sbin/nologin"), "{user}");
        let stat = run(Command::new("stat").args(["-c", "%U:%G %a", "/var/lib/ticket-stamp"]));
        assert_eq!(stat.trim(), "ticket-stamp:ticket-stamp 750");
        let stat = run(Command::new("stat").args(["-c", "%U:%G %a", &format!("/{CONFIG}")]));
        assert_eq!(stat.trim(), "root:ticket-stamp 640");
        // systemd's own reading of the unit: no error, no unknown key.
        let verify = Command::new("systemd-analyze")
            .args(["verify", &format!("/{UNIT}")])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&verify.stderr);
        assert!(
            verify.status.success() && !said.contains("Unknown key"),
            "systemd-analyze verify: {said}"
        );
        // What systemd would make before ExecStart: RuntimeDirectory=.
        run(Command::new("install").args([
            "-d",
            "-o",
            USER,
            "-g",
            USER,
            "-m",
            "0750",
            "/run/ticket-stamp",
        ]));
    }

    // ExecStartPre, ExecStart: the packaged configuration, as its user,
    // with this test's origin and a free port.
    let origin = Origin::start().unwrap();
    origin.route("/", Route::html("<html><body>packaged</body></html>"));
    let port = free_port().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let extra = vec![
        "--origin".to_string(),
        origin.url.clone(),
        "--listen".to_string(),
        format!("127.0.0.1:{port}"),
    ];
    let log = work.path().join("service.log");
    for line in unit_lines(&unit, "ExecStartPre") {
        exec_line(line, &root, root_user, None, &extra, &log);
    }
    let start = unit_lines(&unit, "ExecStart");
    assert_eq!(start.len(), 1);
    exec_line(start[0], &root, root_user, None, &extra, &log);
    let first = pid_in(&pid_file).expect("the pid file the unit names");
    if root_user {
        let owner = run(Command::new("ps").args(["-o", "user=", "-p", &first.to_string()]));
        assert_eq!(owner.trim(), USER, "runs as its own user");
        assert!(
            Path::new("/var/lib/ticket-stamp/stamp-data/stamp.redb").exists(),
            "the embedded store in the data directory"
        );
    }
    assert!(served(&base).await.contains("packaged"));

    // systemctl reload: the unit's ExecReload lines, in order.
    let reload = unit_lines(&unit, "ExecReload");
    assert!(!reload.is_empty(), "{reload:?}");
    for line in reload {
        exec_line(line, &root, root_user, Some(first), &extra, &log);
    }
    let second = pid_in(&pid_file).unwrap();
    assert_ne!(first, second, "a new process after the reload");
    let start = Instant::now();
    while alive(first) {
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "old process still running"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(served(&base).await.contains("packaged"));

    // systemctl stop: SIGTERM to the main pid; the pid file goes with it.
    run(Command::new("kill").args(["-TERM", &second.to_string()]));
    let start = Instant::now();
    while alive(second) {
        assert!(start.elapsed() < Duration::from_secs(40), "still running");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(!pid_file.exists());

    if root_user {
        run(Command::new("dpkg").args(["--purge", "ticket-stamp-proxy"]));
        assert!(!Path::new("/usr/bin/stamp-proxy").exists());
        assert!(!Path::new(&format!("/{CONFIG}")).exists());
        assert!(
            !Path::new("/var/lib/ticket-stamp").exists(),
            "purge removes the data"
        );
    }
}
