//! Watches the folder (notify, debounced) and re-syncs after every save;
//! rides out a server restart with backoff and resyncs; Ctrl-C stops it.
//!
//! File events are hints, never facts. Backends differ: inotify (Linux)
//! names files with precise kinds; FSEvents (macOS) coalesces, may say
//! `Modify(Any)` or `Any`, reports a rename as two events of one path each
//! or names the directory instead of the file, and sets `Rescan` when it
//! dropped events; ReadDirectoryChangesW (Windows) reports a rename's two
//! names as two events and says `Modify(Any)`; editors save by writing a
//! temporary file and renaming it over, or deleting and creating. So
//! [`plan`] only turns events into paths worth reading again (a file, a
//! folder and everything in it, or every file on `Rescan` or a watch
//! error), and each sync walks the folder and compares content hashes with
//! what the server has: whatever the events' shape or order, a saved file
//! is uploaded once, and a module is removed only when its file is gone
//! when the sync looks.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use anyhow::Context;
use notify_debouncer_full::notify::event::{AccessKind, AccessMode, MetadataKind, ModifyKind};
use notify_debouncer_full::notify::{Event, EventKind, RecursiveMode};
use notify_debouncer_full::{new_debouncer, DebounceEventResult, Debouncer, RecommendedCache};

use crate::error::{Failure, Kind};
use crate::output::{clock, Reporter};
use crate::paths;
use crate::sync::{is_editor_scratch, BuildUnderWay, FolderGone, Interrupted, Syncer};

/// Quiet time after a file event before syncing: editors' saves (temp file
/// + rename, truncate + write, several events) finish well within it.
pub const DEBOUNCE: Duration = Duration::from_millis(50);
const TICK: Duration = Duration::from_millis(10);
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A look at the whole folder (sizes and times; no re-reading) after this
/// long without one, for events a backend lost without saying so
/// (Windows' ReadDirectoryChangesW drops them when its buffer overflows).
const SWEEP: Duration = Duration::from_secs(30);
/// How soon a file that could not be read, or a folder that is gone, is
/// looked at again.
const AGAIN: Duration = Duration::from_millis(250);

/// What a batch of file events asks of the sync.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Work {
    /// Files and folders (each with everything in it) to read again, even
    /// if their size and time look unchanged.
    pub touched: BTreeSet<PathBuf>,
    /// Events may have been lost, or named the folder itself: read every
    /// file again.
    pub rescan: bool,
}

impl Work {
    fn is_empty(&self) -> bool {
        self.touched.is_empty() && !self.rescan
    }

    fn merge(&mut self, more: Work) {
        self.touched.extend(more.touched);
        self.rescan |= more.rescan;
    }

    /// The paths the sync re-reads: the folder itself on a rescan.
    fn paths(&self, folder: &Path) -> HashSet<PathBuf> {
        if self.rescan {
            HashSet::from([folder.to_path_buf()])
        } else {
            self.touched.iter().cloned().collect()
        }
    }
}

/// Turns a batch of events into the paths worth reading again, whatever
/// backend produced them: every path an event names under `folder` (its
/// kind does not matter: FSEvents' and Windows' kinds are unreliable),
/// except editors' scratch files and dotfiles (their save ends with an
/// event for the real file); a rescan when an event says events were lost
/// (`Rescan`), names nothing, or names the folder or a folder above it.
/// Reads never count (the sync's own reads would trigger the next).
pub fn plan<'a>(folder: &Path, events: impl IntoIterator<Item = &'a Event>) -> Work {
    let mut work = Work::default();
    for event in events {
        if event.need_rescan() {
            work.rescan = true;
            continue;
        }
        if !changes_content(&event.kind) {
            continue;
        }
        if event.paths.is_empty() {
            work.rescan = true;
        }
        for path in &event.paths {
            if paths::is_within(path, folder) {
                // The folder itself (or a folder above it) was renamed,
                // removed or re-created, or FSEvents named it.
                work.rescan = true;
            } else if paths::is_within(folder, path) && !is_noise(folder, path) {
                work.touched.insert(path.clone());
            }
        }
    }
    work
}

/// Paths whose events never change what is synced: editors' scratch files
/// and dotfiles (and anything in a dot-folder, such as `.git`), except a
/// build's manifest and the ignore files that decide what counts.
fn is_noise(folder: &Path, path: &Path) -> bool {
    let Some(rel) = paths::relative_slash(folder, path) else {
        return true;
    };
    if crate::bundle::is_build_metadata(folder, path) {
        return false;
    }
    let mut names = rel.split('/').peekable();
    while let Some(name) = names.next() {
        let last = names.peek().is_none();
        if last && (name == ".gitignore" || name == ".ignore") {
            return false;
        }
        if name.starts_with('.') || (last && is_editor_scratch(name)) {
            return true;
        }
    }
    false
}

enum Msg {
    Work(Work),
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

type Watcher = Debouncer<notify_debouncer_full::notify::RecommendedWatcher, RecommendedCache>;

/// The platform's watcher on `folder`, debounced, sending each batch's
/// [`Work`] (or its errors, which call for a rescan) to `tx`.
fn watch_folder(folder: &Path, tx: Sender<Msg>) -> anyhow::Result<Watcher> {
    let root = folder.to_path_buf();
    let mut debouncer = new_debouncer(DEBOUNCE, Some(TICK), move |result: DebounceEventResult| {
        let msg = match result {
            Ok(events) => {
                let work = plan(&root, events.iter().map(|e| &e.event));
                if work.is_empty() {
                    return;
                }
                Msg::Work(work)
            }
            Err(errors) => Msg::WatchError(
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        };
        let _ = tx.send(msg);
    })
    .context("cannot start the file watcher")?;
    debouncer.watch(folder, RecursiveMode::Recursive).map_err(|e| {
        Failure::new(Kind::Refused, format!("cannot watch {}: {e}", folder.display())).hint(
            "on Linux, raise the inotify limits: sysctl fs.inotify.max_user_watches=524288 fs.inotify.max_user_instances=512",
        )
    })?;
    Ok(debouncer)
}

/// Watches until Ctrl-C. The initial sync has been done by the caller.
pub fn run(
    syncer: &mut Syncer,
    signals: Signals,
    report: Reporter,
    verbose: bool,
) -> anyhow::Result<()> {
    let Signals { tx, rx } = signals;
    let folder = syncer.scope.folder.clone();
    let mut watcher = Some(watch_folder(&folder, tx.clone())?);
    report.note(&format!(
        "watching {} for changes (Ctrl-C to stop)",
        folder.display()
    ));

    let mut work = Work::default();
    let mut retry: Option<(Instant, Duration)> = None;
    let mut resync = false;
    // Files that could not be read, or a folder that is gone: look again then.
    let mut again: Option<Instant> = None;
    let mut again_wait = AGAIN;
    let mut gone = false;
    // A build under way was said once; said again for the next build.
    let mut building = false;
    let mut last_look = Instant::now();
    let take = |msg: Msg, work: &mut Work| -> bool {
        match msg {
            Msg::Stop => return true,
            Msg::Work(w) => {
                if verbose {
                    if w.rescan {
                        eprintln!("  event: rescan {}", folder.display());
                    }
                    for p in &w.touched {
                        eprintln!("  event {}", p.display());
                    }
                }
                work.merge(w);
            }
            Msg::WatchError(e) => {
                report.note(&format!("{}  watch error: {e}; rescanning", clock()));
                work.rescan = true;
            }
        }
        false
    };
    loop {
        let due = [retry.map(|(d, _)| d), again, Some(last_look + SWEEP)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or_else(Instant::now);
        let mut stop = match rx.recv_timeout(due.saturating_duration_since(Instant::now())) {
            Ok(msg) => take(msg, &mut work),
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        // Coalesce whatever else is already queued.
        while let Ok(msg) = rx.try_recv() {
            stop |= take(msg, &mut work);
        }
        if stop {
            break;
        }
        let now = Instant::now();
        if retry.is_some_and(|(d, _)| now < d) {
            continue;
        }
        let looked_again = again.is_some_and(|d| now >= d);
        let sweep = now >= last_look + SWEEP;
        if work.is_empty() && !resync && !looked_again && !sweep {
            continue;
        }
        if gone {
            if !folder.is_dir() {
                again = Some(now + AGAIN);
                continue;
            }
            // Back (a build that starts over deletes it): watch it anew.
            gone = false;
            drop(watcher.take());
            watcher = Some(watch_folder(&folder, tx.clone())?);
            work.rescan = true;
            report.note(&format!("{}  {} is back", clock(), folder.display()));
        }
        let touched = work.paths(&folder);
        let result = if resync {
            syncer.full(&touched)
        } else {
            syncer.changed(&touched)
        };
        last_look = Instant::now();
        again = None;
        match result {
            Ok(summary) => {
                building = false;
                if resync {
                    report.summary(&summary);
                }
                work = Work::default();
                retry = None;
                resync = false;
                if syncer.unreadable().is_empty() {
                    again_wait = AGAIN;
                } else {
                    // Sooner at first (an editor's lock is brief), then
                    // less often (a file no one may read stays so).
                    work.touched.extend(syncer.unreadable().iter().cloned());
                    again = Some(last_look + again_wait);
                    again_wait = (again_wait * 2).min(SWEEP);
                }
            }
            Err(e) => {
                if e.downcast_ref::<BuildUnderWay>().is_some() {
                    // The build's own events bring the sync when it is
                    // done; looking again soon covers a build that ends
                    // without one.
                    if !building {
                        report.note(&format!(
                            "{}  {e}: waiting for it (nothing is removed meanwhile)",
                            clock()
                        ));
                        building = true;
                    }
                    again = Some(last_look + AGAIN);
                    continue;
                }
                if e.downcast_ref::<FolderGone>().is_some() {
                    report.note(&format!(
                        "{}  {e}: waiting for it (nothing is removed meanwhile)",
                        clock()
                    ));
                    gone = true;
                    again = Some(last_look + AGAIN);
                    continue;
                }
                match e.downcast_ref::<Interrupted>() {
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
                        work = Work::default();
                    }
                }
            }
        }
    }
    report.note("stopped watching");
    drop(watcher);
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
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use notify_debouncer_full::notify::event::{
        CreateKind, DataChange, Flag, RemoveKind, RenameMode,
    };

    const ROOT: &str = "/w/shop/src";

    fn ev(kind: EventKind, paths: &[&str]) -> Event {
        paths
            .iter()
            .fold(Event::new(kind), |e, p| e.add_path(Path::new(ROOT).join(p)))
    }

    fn touched(events: &[Event]) -> Work {
        plan(Path::new(ROOT), events)
    }

    fn files(names: &[&str]) -> Work {
        Work {
            touched: names.iter().map(|n| Path::new(ROOT).join(n)).collect(),
            rescan: false,
        }
    }

    const RENAME_FROM: EventKind = EventKind::Modify(ModifyKind::Name(RenameMode::From));
    const RENAME_TO: EventKind = EventKind::Modify(ModifyKind::Name(RenameMode::To));
    const RENAME_ANY: EventKind = EventKind::Modify(ModifyKind::Name(RenameMode::Any));
    const MODIFY_ANY: EventKind = EventKind::Modify(ModifyKind::Any);

    #[test]
    fn atomic_saves_name_the_saved_file_whatever_the_backend() {
        // inotify: write a temporary file, rename it over the module.
        let linux = [
            ev(EventKind::Create(CreateKind::File), &["app.js.tmp.1234"]),
            ev(
                EventKind::Modify(ModifyKind::Data(DataChange::Any)),
                &["app.js.tmp.1234"],
            ),
            ev(
                EventKind::Access(AccessKind::Close(AccessMode::Write)),
                &["app.js.tmp.1234"],
            ),
            ev(
                EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
                &["app.js.tmp.1234", "app.js"],
            ),
        ];
        assert_eq!(touched(&linux), files(&["app.js", "app.js.tmp.1234"]));
        // FSEvents: one path per rename event, `Any` kinds, coalesced.
        let macos = [
            ev(RENAME_ANY, &[".app.js.sb-5a1c2e7b-Jq3d9K"]),
            ev(RENAME_ANY, &["app.js"]),
            ev(MODIFY_ANY, &["app.js"]),
            ev(EventKind::Any, &["app.js"]),
        ];
        assert_eq!(touched(&macos), files(&["app.js"]));
        // Windows: old and new names as two events; JetBrains' safe write.
        let windows = [
            ev(EventKind::Create(CreateKind::Any), &["app.js___jb_tmp___"]),
            ev(MODIFY_ANY, &["app.js___jb_tmp___"]),
            ev(RENAME_FROM, &["app.js"]),
            ev(RENAME_TO, &["app.js___jb_old___"]),
            ev(RENAME_FROM, &["app.js___jb_tmp___"]),
            ev(RENAME_TO, &["app.js"]),
            ev(EventKind::Remove(RemoveKind::Any), &["app.js___jb_old___"]),
        ];
        assert_eq!(touched(&windows), files(&["app.js"]));
        // Windows: delete, then create.
        let delete_create = [
            ev(EventKind::Remove(RemoveKind::Any), &["lib/app.js"]),
            ev(EventKind::Create(CreateKind::Any), &["lib/app.js"]),
            ev(MODIFY_ANY, &["lib/app.js"]),
        ];
        assert_eq!(touched(&delete_create), files(&["lib/app.js"]));
    }

    #[test]
    fn renamed_folders_and_events_naming_a_folder_read_everything_in_it() {
        // A rename of a folder: both names (each read with what is under it).
        let both = [ev(
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
            &["lib", "util"],
        )];
        assert_eq!(touched(&both), files(&["lib", "util"]));
        let split = [ev(RENAME_FROM, &["lib"]), ev(RENAME_TO, &["util"])];
        assert_eq!(touched(&split), files(&["lib", "util"]));
        // FSEvents naming only the parent folder of what changed.
        let parent = [ev(MODIFY_ANY, &["lib/deep"])];
        assert_eq!(touched(&parent), files(&["lib/deep"]));
        // The watched folder itself, or one above it: everything.
        for kind in [
            EventKind::Remove(RemoveKind::Folder),
            MODIFY_ANY,
            RENAME_ANY,
        ] {
            let root = Event::new(kind).add_path(PathBuf::from(ROOT));
            assert!(touched(&[root]).rescan, "{kind:?}");
            let above = Event::new(kind).add_path(PathBuf::from("/w/shop"));
            assert!(touched(&[above]).rescan, "{kind:?}");
        }
    }

    #[test]
    fn lost_events_and_events_naming_nothing_rescan_everything() {
        // FSEvents' kFSEventStreamEventFlagMustScanSubDirs, inotify's queue overflow.
        let overflow = Event::new(EventKind::Other).set_flag(Flag::Rescan);
        let w = touched(&[ev(MODIFY_ANY, &["a.js"]), overflow]);
        assert!(w.rescan);
        assert_eq!(
            w.paths(Path::new(ROOT)),
            HashSet::from([PathBuf::from(ROOT)])
        );
        let flagged = ev(MODIFY_ANY, &["lib"]).set_flag(Flag::Rescan);
        assert!(touched(&[flagged]).rescan);
        assert!(touched(&[Event::new(EventKind::Any)]).rescan);
        // `Any` and `Other` kinds that name a file are hints like any other.
        let w = touched(&[
            ev(EventKind::Any, &["a.js"]),
            ev(EventKind::Other, &["b.js"]),
        ]);
        assert_eq!(w, files(&["a.js", "b.js"]));
    }

    #[test]
    fn scratch_files_dotfiles_reads_and_other_folders_are_no_work() {
        let noise = [
            ev(EventKind::Create(CreateKind::File), &[".app.js.swp"]),
            ev(MODIFY_ANY, &[".app.js.swx"]),
            ev(EventKind::Create(CreateKind::File), &["4913"]),
            ev(EventKind::Remove(RemoveKind::File), &["4913"]),
            ev(RENAME_TO, &["app.js~"]),
            ev(EventKind::Create(CreateKind::File), &[".#app.js"]),
            ev(EventKind::Create(CreateKind::File), &["#app.js#"]),
            ev(EventKind::Create(CreateKind::File), &["~$app.js"]),
            ev(MODIFY_ANY, &["lib/.DS_Store"]),
            ev(MODIFY_ANY, &[".git/index.lock"]),
            ev(MODIFY_ANY, &[".idea/workspace.xml"]),
            ev(
                EventKind::Access(AccessKind::Open(AccessMode::Any)),
                &["app.js"],
            ),
            ev(
                EventKind::Access(AccessKind::Close(AccessMode::Read)),
                &["app.js"],
            ),
            ev(
                EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)),
                &["app.js"],
            ),
            Event::new(MODIFY_ANY).add_path(PathBuf::from("/w/shop/srcx/a.js")),
            Event::new(MODIFY_ANY).add_path(PathBuf::from("/w/shop/README.md")),
        ];
        assert_eq!(touched(&noise), Work::default());
        // What decides which files count is no noise.
        let rules = [
            ev(MODIFY_ANY, &[".gitignore"]),
            ev(MODIFY_ANY, &["lib/.ignore"]),
            ev(MODIFY_ANY, &[".vite/manifest.json"]),
        ];
        assert_eq!(
            touched(&rules),
            files(&[".gitignore", "lib/.ignore", ".vite/manifest.json"])
        );
    }

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

    /// Work from the real watcher (inotify here), through the same
    /// debouncer and [`plan`] as `stamp --update`, until `done` says so.
    fn collect(rx: &Receiver<Msg>, done: impl Fn(&Work) -> bool) -> Work {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut all = Work::default();
        while !done(&all) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Msg::Work(w)) => all.merge(w),
                Ok(Msg::WatchError(e)) => panic!("watch error: {e}"),
                Ok(Msg::Stop) => unreachable!(),
                Err(_) => panic!("no event in time; so far {all:?}"),
            }
        }
        all
    }

    #[test]
    fn the_real_watcher_feeds_the_same_plan() {
        let dir = tempfile::tempdir().unwrap();
        let folder = crate::config::resolve_path(dir.path()).join("src");
        std::fs::create_dir_all(folder.join("lib")).unwrap();
        std::fs::write(folder.join("app.js"), "1").unwrap();
        std::fs::write(folder.join("lib/x.js"), "x").unwrap();
        let (tx, rx) = channel();
        let _watcher = watch_folder(&folder, tx).unwrap();
        let f = |rel: &str| folder.join(rel);

        // Scratch files first, then an atomic save: only the saved file.
        std::fs::write(f("4913"), "").unwrap();
        std::fs::remove_file(f("4913")).unwrap();
        std::fs::write(f(".app.js.swp"), "swap").unwrap();
        std::fs::write(f(".app.js.tmp-77"), "2").unwrap();
        std::fs::rename(f(".app.js.tmp-77"), f("app.js")).unwrap();
        let w = collect(&rx, |w| w.touched.contains(&f("app.js")));
        assert_eq!(
            w,
            Work {
                touched: [f("app.js")].into(),
                rescan: false
            }
        );

        // Delete and create (Windows editors' save).
        std::fs::remove_file(f("app.js")).unwrap();
        std::fs::write(f("app.js"), "3").unwrap();
        let w = collect(&rx, |w| w.touched.contains(&f("app.js")));
        assert_eq!(w.touched, [f("app.js")].into());

        // A folder renamed: both names.
        std::fs::rename(f("lib"), f("util")).unwrap();
        let w = collect(&rx, |w| {
            w.touched.contains(&f("lib")) && w.touched.contains(&f("util"))
        });
        assert!(!w.rescan, "{w:?}");

        // The folder itself removed: everything.
        std::fs::remove_dir_all(&folder).unwrap();
        collect(&rx, |w| w.rescan);
    }
}
