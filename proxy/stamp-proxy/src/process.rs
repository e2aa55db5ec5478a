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
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
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
    // In a directory only this user can enter: no one else can claim to be
    // the daemon.
    let dir = std::env::temp_dir().join(format!(
        "stamp-proxy-start-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    if let Err(e) = std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        eprintln!("stamp-proxy: error: cannot create {}: {e}", dir.display());
        return ExitCode::from(1);
    }
    let _dir = CleanupDir(dir.clone());
    let socket = dir.join("ready.sock");
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
                if said.trim() == child.id().to_string() {
                    drop(cleanup);
                    println!(
                        "stamp-proxy started in the background (pid {})",
                        said.trim()
                    );
                    return ExitCode::SUCCESS;
                }
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
/// (atomically: a new file, never through a link, renamed over the old)
/// and, as a daemon, tells the process that started it.
pub fn started(pid_file: Option<&Path>) -> std::io::Result<()> {
    let pid = std::process::id();
    if let Some(path) = pid_file {
        let tmp = path.with_extension(format!("tmp{pid}.{:08x}", rand::random::<u32>()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(format!("{pid}\n").as_bytes())?;
        drop(f);
        if let Err(e) = std::fs::rename(&tmp, path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
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

/// This process's user id (the owner of `/proc/self`).
pub fn uid() -> u32 {
    std::fs::metadata("/proc/self").map_or(0, |m| m.uid())
}

/// Makes sure the upgrade socket's directory is private: created (0700)
/// when it is missing, refused when others may write in it (Pingora opens
/// the socket itself to anyone who can reach it, and whoever listens there
/// first would get the listening sockets).
pub fn private_socket_dir(socket: &Path) -> Result<(), String> {
    let dir = socket
        .parent()
        .ok_or_else(|| format!("{} has no directory", socket.display()))?;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mode = meta.permissions().mode();
    if mode & 0o002 != 0 || (meta.uid() != uid() && meta.uid() != 0) {
        return Err(format!(
            "the upgrade socket's directory {} is writable by others or not this user's: \
             anyone could take the listening sockets over (set process.upgrade_socket to a \
             private directory)",
            dir.display()
        ));
    }
    Ok(())
}

/// Taking over: once this process listens at `socket`, sends SIGQUIT to
/// the process the pid file names (when it is a stamp-proxy), so it hands
/// its sockets over. One command does the whole upgrade, in the right
/// order: the old process never sends before the new one listens.
pub fn signal_predecessor(pid_file: Option<PathBuf>, socket: PathBuf) {
    let Some(pid_file) = pid_file else {
        log::info!("no pid file: send SIGQUIT to the running stamp-proxy to hand its sockets over");
        return;
    };
    std::thread::spawn(move || {
        let pid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
            .filter(|pid| *pid != std::process::id());
        let Some(pid) = pid else {
            log::warn!(
                "{} names no running stamp-proxy: send it SIGQUIT yourself",
                pid_file.display()
            );
            return;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() != "stamp-proxy" {
            log::warn!(
                "{} names process {pid}, which is not a stamp-proxy: not signalled",
                pid_file.display()
            );
            return;
        }
        let start = std::time::Instant::now();
        while !socket.exists() {
            if start.elapsed() > Duration::from_secs(10) {
                log::warn!("{} never appeared: not signalled", socket.display());
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Between bind and listen, a connection would be refused.
        std::thread::sleep(Duration::from_millis(100));
        log::info!("sending SIGQUIT to {pid}: hand the listening sockets over");
        match Command::new("kill")
            .args(["-QUIT", &pid.to_string()])
            .status()
        {
            Ok(s) if s.success() => {}
            Ok(s) => log::warn!("kill -QUIT {pid}: {s}"),
            Err(e) => log::warn!("kill -QUIT {pid}: {e}"),
        }
    });
}

struct CleanupDir(PathBuf);

impl Drop for CleanupDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
