//! The load generator for throughput: wrk (Debian's package), a separate C
//! process on loopback, so the client costs the same few cycles per request
//! whichever server it drives. Its numbers come back through a `done()` Lua
//! hook as one machine-readable line rather than by scraping its report.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};

/// One wrk run.
#[derive(Debug, Clone)]
pub struct Load<'a> {
    pub url: &'a str,
    pub connections: usize,
    pub threads: usize,
    pub duration: Duration,
    pub headers: &'a [(&'a str, &'a str)],
}

/// What wrk measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct Measured {
    pub requests: u64,
    pub seconds: f64,
    pub bytes: u64,
    /// Connect, read, write and timeout errors.
    pub socket_errors: u64,
    /// Responses that were not 2xx or 3xx.
    pub bad_status: u64,
    pub p50_us: f64,
    pub p99_us: f64,
}

impl Measured {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-9)
    }
    pub fn mib_per_s(&self) -> f64 {
        self.bytes as f64 / self.seconds.max(1e-9) / (1024.0 * 1024.0)
    }
}

const SCRIPT: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("STAMP-LOAD %d %d %d %d %d %d %d\n",
    summary.requests, summary.duration, summary.bytes,
    e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"#;

/// The wrk binary: `$WRK`, or `wrk` on the PATH.
pub fn binary() -> anyhow::Result<PathBuf> {
    crate::tool("wrk", "WRK")
}

/// Runs wrk and returns its figures. Any socket error or bad status fails the
/// run: a benchmark of errors measures nothing.
pub fn run(load: &Load<'_>) -> anyhow::Result<Measured> {
    let script = tempfile::Builder::new().suffix(".lua").tempfile()?;
    std::fs::write(script.path(), SCRIPT)?;
    let mut cmd = Command::new(binary()?);
    cmd.arg("-t")
        .arg(load.threads.min(load.connections).to_string())
        .arg("-c")
        .arg(load.connections.to_string())
        .arg("-d")
        // wrk takes whole seconds (or minutes, hours).
        .arg(format!("{}s", load.duration.as_secs_f64().round().max(1.0)))
        .arg("--timeout")
        .arg("10s")
        .arg("-s")
        .arg(script.path());
    for (k, v) in load.headers {
        cmd.arg("-H").arg(format!("{k}: {v}"));
    }
    cmd.arg(load.url);
    let out = cmd.output().context("running wrk")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk failed ({}): {}{}",
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let m = parse(&stdout).with_context(|| format!("unexpected wrk output:\n{stdout}"))?;
    if m.socket_errors > 0 || m.bad_status > 0 || m.requests == 0 {
        bail!(
            "wrk against {}: {} requests, {} socket errors, {} non-2xx/3xx responses:\n{stdout}",
            load.url,
            m.requests,
            m.socket_errors,
            m.bad_status
        );
    }
    Ok(m)
}

fn parse(stdout: &str) -> anyhow::Result<Measured> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("STAMP-LOAD "))
        .context("no STAMP-LOAD line")?;
    let n: Vec<u64> = line
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("a STAMP-LOAD field is not a number")?;
    let [requests, duration_us, bytes, socket_errors, bad_status, p50, p99] = n[..] else {
        bail!("STAMP-LOAD has {} fields, not 7", n.len());
    };
    Ok(Measured {
        requests,
        seconds: duration_us as f64 / 1e6,
        bytes,
        socket_errors,
        bad_status,
        p50_us: p50 as f64,
        p99_us: p99 as f64,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_done_line() {
        let m = parse("Running 1s test\nSTAMP-LOAD 100 2000000 5000 0 1 150 900\n").unwrap();
        assert_eq!(m.requests, 100);
        assert_eq!(m.bad_status, 1);
        assert!((m.rps() - 50.0).abs() < 1e-9);
        assert!((m.p99_us - 900.0).abs() < 1e-9);
    }

    #[test]
    fn refuses_a_report_without_the_line_or_with_junk() {
        assert!(parse("Running 1s test\n").is_err());
        assert!(parse("STAMP-LOAD 1 2 x 4 5 6 7\n").is_err());
        assert!(parse("STAMP-LOAD 1 2 3\n").is_err());
    }
}
