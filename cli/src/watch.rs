//! Watches the folder (notify, debounced) and re-syncs after every save;
//! rides out a server restart with backoff and resyncs; Ctrl-C stops it.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use anyhow::Context;
use notify_debouncer_full::notify::event::{AccessKind, AccessMode, MetadataKind, ModifyKind};
use notify_debouncer_full::notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{new_debouncer, DebounceEventResult};

use crate::error::{Failure, Kind};
use crate::output::{clock, Reporter};
use crate::sync::{Interrupted, Syncer};

/// Quiet time after a file event before syncing: editors' saves (temp file
/// + rename, truncate + write, several events) finish well within it.
pub const DEBOUNCE: Duration = Duration::from_millis(50);
const TICK: Duration = Duration::from_millis(10);
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

enum Msg {
    Files(Vec<PathBuf>),
    WatchError(String),
    Stop,
}

/// The watch's inbox, with Ctrl-C wired to it: the first press stops the
/// watch cleanly (exit 0), a second one exits at once.
pub struct Signals {
    tx: Sender<Msg>,
    rx: Receiver<Msg>,
}

impl Signals {
    pub fn install() -> anyhow::Result<Signals> {
        let (tx, rx) = channel::<Msg>();
        let stop = tx.clone();
        let mut pressed = false;
        ctrlc::set_handler(move || {
            if pressed {
                std::process::exit(130);
            }
            pressed = true;
            let _ = stop.send(Msg::Stop);
        })
        .context("cannot install the Ctrl-C handler")?;
        Ok(Signals { tx, rx })
    }
}

/// Watches until Ctrl-C. The initial sync has been done by the caller.
pub fn run(
    syncer: &mut Syncer,
    signals: Signals,
    report: Reporter,
    verbose: bool,
) -> anyhow::Result<()> {
    let Signals { tx, rx } = signals;
    let events = tx.clone();
    let mut debouncer = new_debouncer(DEBOUNCE, Some(TICK), move |result: DebounceEventResult| {
        let msg = match result {
            Ok(events) => {
                let paths: Vec<PathBuf> = events
                    .into_iter()
                    .filter(|e| changes_content(&e.event.kind))
                    .flat_map(|e| e.event.paths)
                    .collect();
                if paths.is_empty() {
                    return;
                }
                Msg::Files(paths)
            }
            Err(errors) => Msg::WatchError(
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        };
        let _ = events.send(msg);
    })
    .context("cannot start the file watcher")?;
    let folder = syncer.scope.folder.clone();
    debouncer.watch(&folder, RecursiveMode::Recursive).map_err(|e| {
        Failure::new(Kind::Refused, format!("cannot watch {}: {e}", folder.display())).hint(
            "on Linux, raise the inotify limits: sysctl fs.inotify.max_user_watches=524288 fs.inotify.max_user_instances=512",
        )
    })?;
    report.note(&format!(
        "watching {} for changes (Ctrl-C to stop)",
        folder.display()
    ));

    let mut touched: HashSet<PathBuf> = HashSet::new();
    let mut retry: Option<(Instant, Duration)> = None;
    let mut resync = false;
    loop {
        let wait = match retry {
            Some((due, _)) => due.saturating_duration_since(Instant::now()),
            None => Duration::from_secs(3600),
        };
        match rx.recv_timeout(wait) {
            Ok(Msg::Stop) => break,
            Ok(Msg::Files(paths)) => {
                if verbose {
                    for p in &paths {
                        eprintln!("  event {}", p.display());
                    }
                }
                touched.extend(paths);
            }
            Ok(Msg::WatchError(e)) => {
                report.note(&format!("{}  watch error: {e}", clock()));
                continue;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        // Coalesce whatever else is already queued.
        let mut stop = false;
        while let Ok(msg) = rx.try_recv() {
            match msg {
                Msg::Files(paths) => touched.extend(paths),
                Msg::Stop => stop = true,
                Msg::WatchError(e) => report.note(&format!("{}  watch error: {e}", clock())),
            }
        }
        if stop {
            break;
        }
        if let Some((due, _)) = retry {
            if Instant::now() < due {
                continue;
            }
        }
        if touched.is_empty() && !resync {
            continue;
        }
        let result = if resync {
            syncer.full(&touched)
        } else {
            syncer.changed(&touched)
        };
        match result {
            Ok(summary) => {
                if resync {
                    report.summary(&summary);
                }
                touched.clear();
                retry = None;
                resync = false;
            }
            Err(e) => match e.downcast_ref::<Interrupted>() {
                Some(Interrupted(api)) if api.is_transient() => {
                    let delay = retry.map_or(BACKOFF_FIRST, |(_, d)| (d * 2).min(BACKOFF_MAX));
                    report.note(&format!(
                        "{}  {api} ({}); retrying in {:.1} s, then resyncing",
                        clock(),
                        short_cause(api),
                        delay.as_secs_f64()
                    ));
                    retry = Some((Instant::now() + delay, delay));
                    resync = true;
                }
                Some(_) => return Err(e),
                None => {
                    report.note(&format!("{}  sync failed: {e:#}", clock()));
                    touched.clear();
                }
            },
        }
    }
    report.note("stopped watching");
    drop(debouncer);
    Ok(())
}

/// Whether an event can change what a file holds. Reads (the sync's own
/// included: open, access, close without writing, atime) cannot; counting
/// them would make every sync trigger the next.
fn changes_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)) => false,
        _ => true,
    }
}

fn short_cause(e: &crate::client::ApiError) -> String {
    match e {
        crate::client::ApiError::Unreachable { source, .. } => {
            let text = crate::error::root_causes(source);
            text.rsplit(": ").next().unwrap_or(&text).to_string()
        }
        crate::client::ApiError::Status { status, error } => format!("{status} {}", error.code),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify_debouncer_full::notify::event::{CreateKind, DataChange, RemoveKind, RenameMode};

    #[test]
    fn reads_are_not_changes() {
        for read in [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Read),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)),
        ] {
            assert!(!changes_content(&read), "{read:?}");
        }
        for change in [
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
            EventKind::Remove(RemoveKind::File),
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Any,
        ] {
            assert!(changes_content(&change), "{change:?}");
        }
    }
}
