//! The process around the proxy: running in the background (`--daemon`),
//! its pid file, and when it counts as started.
//!
//! `--daemon` re-executes this binary as a child in its own process group
//! (no `fork` in a multi-threaded program, no `unsafe`) and waits until the
//! child says it is serving, so an init system that waits for the first
//! process to exit (systemd's `Type=forking`) knows the result: exit 0 once
//! the child serves and its pid file is written, 1 if it stopped during
//! start-up (its reason is on its standard error, which it inherits).

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

/// Set in the daemon's environment: where it says it is serving.
const READY_ENV: &str = "STAMP_PROXY_READY_SOCKET";

/// Whether this process is the child `--daemon` started.
pub fn is_daemon_child() -> bool {
    std::env::var_os(READY_ENV).is_some()
}

/// Starts this binary again, with the same arguments, in the background;
/// returns once it serves (0) or stopped during start-up (1).
pub fn run_daemon_parent() -> ExitCode {
    let socket = std::env::temp_dir().join(format!(
        "stamp-proxy-start-{}-{:08x}.sock",
        std::process::id(),
        rand_u32()
    ));
    let listener = match UnixListener::bind(&socket) {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "stamp-proxy: error: cannot create {}: {e}",
                socket.display()
            );
            return ExitCode::from(1);
        }
    };
    let cleanup = Cleanup(socket.clone());
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("stamp-proxy: error: cannot find its own binary: {e}");
            return ExitCode::from(1);
        }
    };
    let mut child = match Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(READY_ENV, &socket)
        .stdin(Stdio::null())
        // Whoever waits on this process's standard output (a shell's `$(…)`,
        // an init system) is not kept waiting by the daemon's; its log lines
        // go to the standard error it inherits (the journal, under systemd).
        .stdout(Stdio::null())
        .process_group(0)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("stamp-proxy: error: cannot start in the background: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = listener.set_nonblocking(true) {
        eprintln!("stamp-proxy: error: {e}");
        return ExitCode::from(1);
    }
    loop {
        match listener.accept() {
            Ok((mut stream, _)) => {
                let mut said = String::new();
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = stream.read_to_string(&mut said);
                drop(cleanup);
                println!(
                    "stamp-proxy started in the background (pid {})",
                    said.trim()
                );
                return ExitCode::SUCCESS;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => {
                eprintln!("stamp-proxy: error: waiting for the background process: {e}");
                return ExitCode::from(1);
            }
        }
        match child.try_wait() {
            Ok(Some(status)) => {
                eprintln!(
                    "stamp-proxy: error: the background process stopped during start-up ({status})"
                );
                return ExitCode::from(1);
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                eprintln!("stamp-proxy: error: {e}");
                return ExitCode::from(1);
            }
        }
    }
}

/// Tells whoever waits that this process serves: writes the pid file
/// (atomically) and, as a daemon, tells the process that started it.
pub fn started(pid_file: Option<&Path>) -> std::io::Result<()> {
    let pid = std::process::id();
    if let Some(path) = pid_file {
        let tmp = path.with_extension(format!("tmp{pid}"));
        std::fs::write(&tmp, format!("{pid}\n"))?;
        std::fs::rename(&tmp, path)?;
    }
    if let Some(socket) = std::env::var_os(READY_ENV) {
        let mut s = UnixStream::connect(PathBuf::from(socket))?;
        s.write_all(pid.to_string().as_bytes())?;
    }
    Ok(())
}

/// Removes the pid file at exit, unless it names another process (the one
/// an upgrade handed the sockets to).
pub fn stopped(pid_file: Option<&Path>) {
    let Some(path) = pid_file else { return };
    let ours = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
        == Some(std::process::id());
    if ours {
        let _ = std::fs::remove_file(path);
    }
}

struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish() as u32
}
