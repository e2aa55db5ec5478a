//! Save-to-servable latency of a watched module: the time from writing a
//! file to the proxy serving its new URL in the `?dev=` page's import map.
//!
//! Starts `stamp-proxy --demo` (its demo page maps `/src/lib/greet.js`) on a
//! free port, runs `stamp LAT-1 --update` on a temporary folder, then saves
//! `src/lib/greet.js` N times and polls `/?dev=LAT-1` after each save until
//! the page's import map points at the new body's hash. Prints the median,
//! p95 and spread.
//!
//! ```sh
//! cargo build --release --workspace --bins
//! cargo run --release -p stamp-cli --example save-latency -- [--saves 60] [--atomic]
//! ```
//! `--atomic` saves like an editor does (write a temporary file, rename it
//! over the module) instead of rewriting the file in place.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};

const KEY: &str = "LAT-1";

fn main() -> anyhow::Result<()> {
    let mut saves = 60usize;
    let mut atomic = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--saves" => saves = args.next().context("--saves needs a number")?.parse()?,
            "--atomic" => atomic = true,
            other => bail!("unknown argument {other} (use --saves N, --atomic)"),
        }
    }
    let bins = binaries()?;
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let server = format!("http://127.0.0.1:{port}");

    let mut proxy = Guard(
        Command::new(bins.join("stamp-proxy"))
            .args(["--demo", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--store", &dir.path().join("store").to_string_lossy()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting stamp-proxy")?,
    );
    let http = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()?;
    wait(Duration::from_secs(20), || {
        http.get(format!("{server}/__stamp/health"))
            .send()
            .is_ok_and(|r| r.status().is_success())
    })
    .context("stamp-proxy did not become ready")?;

    let project = dir.path().join("shop");
    let module = project.join("src/lib/greet.js");
    std::fs::create_dir_all(module.parent().context("no parent")?)?;
    std::fs::write(&module, body(0))?;
    let log = dir.path().join("stamp.log");
    let mut stamp = Guard(
        Command::new(bins.join("stamp"))
            .args([KEY, "--update", "--server", &server])
            .current_dir(&project)
            .env_remove("STAMP_SERVER")
            .env_remove("STAMP_TOKEN")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting stamp")?,
    );
    wait(Duration::from_secs(20), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("watching"))
    })
    .context("stamp did not start watching")?;

    let page = format!("{server}/?dev={KEY}");
    let mut samples = Vec::with_capacity(saves);
    for i in 1..=saves {
        let text = body(i);
        let wanted = format!("?__ts={}", hex::encode(Sha256::digest(text.as_bytes())));
        let start = Instant::now();
        save(&module, &text, atomic)?;
        loop {
            let html = http.get(&page).send()?.text()?;
            if html.contains(&wanted) {
                break;
            }
            if start.elapsed() > Duration::from_secs(10) {
                bail!(
                    "save {i} not servable after 10 s; stamp said:\n{}",
                    std::fs::read_to_string(&log)?
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        samples.push(start.elapsed());
        // Let the watcher go idle between saves, as between keystrokes and saves.
        std::thread::sleep(Duration::from_millis(150));
    }

    let status = stamp.interrupt()?;
    proxy.stop();
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pick = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    let mean = samples.iter().map(|d| ms(*d)).sum::<f64>() / samples.len() as f64;
    println!(
        "save-to-servable latency over {} {} saves: median {:.1} ms, p95 {:.1} ms, min {:.1} ms, max {:.1} ms, mean {:.1} ms",
        samples.len(),
        if atomic { "atomic (temp + rename)" } else { "in-place" },
        ms(pick(0.5)),
        ms(pick(0.95)),
        ms(samples[0]),
        ms(samples[samples.len() - 1]),
        mean
    );
    println!("(the watcher's debounce is 50 ms of it; stamp exited with {status} on SIGINT)");
    Ok(())
}

fn body(i: usize) -> String {
    format!("export function greet(name) {{ return `Save {i}: hello, ${{name}}!`; }}\n")
}

fn save(path: &Path, text: &str, atomic: bool) -> anyhow::Result<()> {
    if atomic {
        let tmp = path.with_file_name(".greet.js.swap");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)?;
    } else {
        std::fs::write(path, text)?;
    }
    Ok(())
}

/// `target/<profile>/`, where cargo put the binaries next to `examples/`.
fn binaries() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("unexpected example location")?;
    for name in ["stamp", "stamp-proxy"] {
        if !dir.join(name).exists() {
            bail!(
                "{name} not found in {}: build first with `cargo build --release --workspace --bins`",
                dir.display()
            );
        }
    }
    Ok(dir.to_path_buf())
}

fn wait(limit: Duration, mut ready: impl FnMut() -> bool) -> anyhow::Result<()> {
    let start = Instant::now();
    while !ready() {
        if start.elapsed() > limit {
            bail!("timed out after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A child process that is killed if it is still running when dropped.
struct Guard(Child);

impl Guard {
    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &self.0.id().to_string()])
            .status();
    }

    fn interrupt(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        self.signal("INT");
        let start = Instant::now();
        loop {
            if let Some(s) = self.0.try_wait()? {
                return Ok(s);
            }
            if start.elapsed() > Duration::from_secs(10) {
                bail!("stamp ignored SIGINT");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        self.signal("TERM");
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
