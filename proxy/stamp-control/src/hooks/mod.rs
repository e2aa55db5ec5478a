//! Hooks observe what happened to tickets (uploaded, promoted, reverted,
//! closed, signed off, origin-diverged) after it happened. They are chosen
//! by `kind` from the `[[hooks]]` list of the config through a registry of
//! factories, and run off the request path: [`Dispatcher::emit`] queues the
//! event and returns at once; each hook has its own queue and worker task,
//! delivers in order, retries with exponential backoff, and logs what it
//! could not deliver. A hook never blocks, fails or undoes a transition.
//!
//! Settings every hook takes: `events` (which to deliver; each built-in has
//! a default), `max_attempts` (5), `backoff` (first wait, "1s"; doubling),
//! `max_backoff` ("60s"), `timeout` (per attempt, "10s").

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

pub use crate::kinds::{Event, EventKind};
use crate::kit::{pick, Settings};

mod github;
mod gitlab;
mod jira;
mod review;
mod slack;
mod webhook;

/// Every event kind.
pub const EVENTS: &[EventKind] = &EventKind::ALL;

fn names(kinds: &[EventKind]) -> String {
    kinds
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Events queued per hook before new ones are dropped (and logged).
const QUEUE: usize = 1024;

/// Why a delivery failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    /// Worth trying again later (5xx, 429, timeouts, connection errors).
    #[error("{0}")]
    Retry(String),
    /// Trying again cannot help (bad credentials, unknown channel, 4xx).
    #[error("{0}")]
    Permanent(String),
}

#[async_trait]
pub trait Hook: Send + Sync {
    fn kind(&self) -> &'static str;
    async fn deliver(&self, e: &Event) -> Result<(), HookError>;
}

/// How a hook is retried.
#[derive(Debug, Clone)]
pub struct HookOptions {
    /// Event kinds delivered to the hook.
    pub events: Vec<EventKind>,
    pub max_attempts: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Per attempt.
    pub timeout: Duration,
}

impl Default for HookOptions {
    fn default() -> Self {
        HookOptions {
            events: EVENTS.to_vec(),
            max_attempts: 5,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Makes a hook of one kind from its settings.
pub struct Factory {
    pub kind: &'static str,
    /// Its own settings, besides the common ones.
    pub keys: &'static [&'static str],
    /// Delivered when `events` is not set.
    pub default_events: &'static [EventKind],
    /// Settings and the per-attempt timeout.
    pub build: fn(&mut Settings<'_>, Duration) -> Option<Box<dyn Hook>>,
}

/// Keys every hook takes.
pub const COMMON_KEYS: &[&str] = &[
    "kind",
    "events",
    "max_attempts",
    "backoff",
    "max_backoff",
    "timeout",
];

/// The built-in hooks.
pub fn registry() -> &'static [Factory] {
    static REGISTRY: &[Factory] = &[
        Factory {
            kind: "jira",
            keys: jira::KEYS,
            default_events: &[EventKind::Promoted, EventKind::Reverted, EventKind::Closed],
            build: jira::build,
        },
        Factory {
            kind: "slack",
            keys: slack::KEYS,
            default_events: &[
                EventKind::Promoted,
                EventKind::Reverted,
                EventKind::Closed,
                EventKind::SignedOff,
                EventKind::RolloutStep,
            ],
            build: slack::build,
        },
        Factory {
            kind: "github",
            keys: github::KEYS,
            default_events: &[
                EventKind::Uploaded,
                EventKind::Promoted,
                EventKind::Reverted,
                EventKind::Closed,
                EventKind::Reopened,
                EventKind::RolloutStep,
            ],
            build: github::build,
        },
        Factory {
            kind: "gitlab",
            keys: gitlab::KEYS,
            default_events: &[
                EventKind::Uploaded,
                EventKind::Promoted,
                EventKind::Reverted,
                EventKind::Closed,
                EventKind::Reopened,
                EventKind::RolloutStep,
            ],
            build: gitlab::build,
        },
        Factory {
            kind: "webhook",
            keys: webhook::KEYS,
            default_events: EVENTS,
            build: webhook::build,
        },
    ];
    REGISTRY
}

struct Slot {
    hook: Arc<dyn Hook>,
    opts: HookOptions,
    tx: mpsc::Sender<Event>,
    /// Taken by the first `emit`, which starts the worker on the runtime it
    /// runs on (building the dispatcher needs no runtime).
    rx: Mutex<Option<mpsc::Receiver<Event>>>,
}

/// Delivers events to every configured hook.
#[derive(Default)]
pub struct Dispatcher {
    slots: Vec<Slot>,
    /// Events queued or being delivered, over all hooks.
    pending: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.slots.iter().map(|s| s.hook.kind()))
            .finish()
    }
}

impl Dispatcher {
    /// Builds the hooks of `[[hooks]]`; every problem is reported as
    /// `hooks[i].key: reason`.
    pub fn from_config(entries: &[toml::Table]) -> Result<Dispatcher, Vec<String>> {
        let mut problems = Vec::new();
        let mut d = Dispatcher::default();
        let kinds: Vec<&str> = registry().iter().map(|f| f.kind).collect();
        for (i, table) in entries.iter().enumerate() {
            let prefix = format!("hooks[{i}]");
            let Some(factory) = pick(table, &prefix, &kinds, &mut problems)
                .and_then(|k| registry().iter().find(|f| f.kind == k))
            else {
                continue;
            };
            let mut s = Settings::new(table, &prefix);
            s.known_keys(factory.kind, &[COMMON_KEYS, factory.keys].concat());
            let defaults = HookOptions::default();
            let events = match s.strings("events") {
                None => factory.default_events.to_vec(),
                Some(list) => {
                    let mut kinds = Vec::new();
                    for e in &list {
                        match EventKind::parse(e) {
                            Some(k) => kinds.push(k),
                            None => s.problem(
                                "events",
                                format!("`{e}` is not an event; valid events: {}", names(EVENTS)),
                            ),
                        }
                    }
                    kinds
                }
            };
            let opts = HookOptions {
                events,
                max_attempts: s.integer("max_attempts", defaults.max_attempts.into(), 1, 100)
                    as u32,
                backoff: s.duration("backoff", defaults.backoff),
                max_backoff: s.duration("max_backoff", defaults.max_backoff),
                timeout: s.duration("timeout", defaults.timeout),
            };
            let hook = (factory.build)(&mut s, opts.timeout);
            problems.append(&mut s.problems);
            if let Some(hook) = hook {
                d.push(hook, opts);
            }
        }
        if problems.is_empty() {
            Ok(d)
        } else {
            Err(problems)
        }
    }

    /// Adds a hook (a custom, in-process one, or a built-in made by hand).
    pub fn push(&mut self, hook: Box<dyn Hook>, opts: HookOptions) {
        let (tx, rx) = mpsc::channel(QUEUE);
        self.slots.push(Slot {
            hook: Arc::from(hook),
            opts,
            tx,
            rx: Mutex::new(Some(rx)),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Queues `e` for every hook that wants it and returns at once. Must be
    /// called on a Tokio runtime (the workers start on the first call).
    pub fn emit(&self, e: Event) {
        for slot in &self.slots {
            if !slot.opts.events.contains(&e.kind) {
                continue;
            }
            self.start(slot, None);
            self.pending.fetch_add(1, Ordering::SeqCst);
            if let Err(err) = slot.tx.try_send(e.clone()) {
                self.pending.fetch_sub(1, Ordering::SeqCst);
                log::error!(
                    "hook {}: {} event for {} dropped: {}",
                    slot.hook.kind(),
                    e.kind,
                    e.ticket,
                    match err {
                        mpsc::error::TrySendError::Full(_) => "queue full",
                        mpsc::error::TrySendError::Closed(_) => "worker stopped",
                    }
                );
            }
        }
    }

    /// Waits until every queued event was delivered or given up on, at most
    /// `limit` (for shutdown and tests). Whether everything was done.
    pub async fn idle(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while self.pending.load(Ordering::SeqCst) > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Starts every hook's worker on `rt` (e.g. the process's background
    /// runtime), instead of on the runtime of the first `emit`.
    pub fn start_on(&self, rt: &tokio::runtime::Handle) {
        for slot in &self.slots {
            self.start(slot, Some(rt.clone()));
        }
    }

    fn start(&self, slot: &Slot, rt: Option<tokio::runtime::Handle>) {
        let Ok(mut guard) = slot.rx.lock() else {
            return;
        };
        if guard.is_none() {
            return;
        }
        let Some(rt) = rt.or_else(|| tokio::runtime::Handle::try_current().ok()) else {
            log::error!("hook {}: no runtime to deliver on yet", slot.hook.kind());
            return;
        };
        if let Some(rx) = guard.take() {
            rt.spawn(worker(
                slot.hook.clone(),
                slot.opts.clone(),
                rx,
                self.pending.clone(),
            ));
        }
    }
}

async fn worker(
    hook: Arc<dyn Hook>,
    opts: HookOptions,
    mut rx: mpsc::Receiver<Event>,
    pending: Arc<AtomicUsize>,
) {
    while let Some(e) = rx.recv().await {
        deliver_with_retries(hook.as_ref(), &opts, &e).await;
        pending.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Delivers one event, retrying with exponential backoff; logs the outcome.
/// Returns the number of attempts made and whether it was delivered.
pub async fn deliver_with_retries(hook: &dyn Hook, opts: &HookOptions, e: &Event) -> (u32, bool) {
    let mut wait = opts.backoff;
    for attempt in 1..=opts.max_attempts {
        let result = match tokio::time::timeout(opts.timeout, hook.deliver(e)).await {
            Ok(r) => r,
            Err(_) => Err(HookError::Retry(format!(
                "no answer within {}",
                humantime::format_duration(opts.timeout)
            ))),
        };
        match result {
            Ok(()) => {
                log::debug!("hook {}: {} {} delivered", hook.kind(), e.kind, e.ticket);
                return (attempt, true);
            }
            Err(HookError::Permanent(m)) => {
                log::error!(
                    "hook {}: {} {} not delivered (will not retry): {m}",
                    hook.kind(),
                    e.kind,
                    e.ticket
                );
                return (attempt, false);
            }
            Err(HookError::Retry(m)) if attempt < opts.max_attempts => {
                log::warn!(
                    "hook {}: {} {} attempt {attempt}/{} failed: {m}; retrying in {}",
                    hook.kind(),
                    e.kind,
                    e.ticket,
                    opts.max_attempts,
                    humantime::format_duration(wait)
                );
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(opts.max_backoff);
            }
            Err(HookError::Retry(m)) => {
                log::error!(
                    "hook {}: {} {} not delivered after {attempt} attempts: {m}",
                    hook.kind(),
                    e.kind,
                    e.ticket
                );
                return (attempt, false);
            }
        }
    }
    (opts.max_attempts, false)
}

/// Maps an HTTP status to a hook outcome: 2xx ok; 408, 429 and 5xx retried;
/// other 4xx permanent.
pub(crate) fn classify(status: u16, what: &str) -> Result<(), HookError> {
    match status {
        200..=299 => Ok(()),
        408 | 429 | 500..=599 => Err(HookError::Retry(format!("{what} answered {status}"))),
        _ => Err(HookError::Permanent(format!("{what} answered {status}"))),
    }
}

/// A transport error (connection refused, timeout…) is always retried.
pub(crate) fn transport(what: &str, e: reqwest::Error) -> HookError {
    HookError::Retry(format!("{what}: {}", crate::kit::transport_error(&e)))
}

/// One sentence saying what happened, for chat and comments.
pub fn describe(e: &Event) -> String {
    let stages = match (e.from, e.to) {
        (Some(f), Some(t)) if f != t => format!(" from {f} to {t}"),
        (_, Some(t)) => format!(" in {t}"),
        _ => String::new(),
    };
    let verb = match e.kind {
        EventKind::Uploaded => "uploaded to",
        EventKind::Promoted => "promoted",
        EventKind::Reverted => "reverted",
        EventKind::Closed => "closed",
        EventKind::SignedOff => "signed off",
        EventKind::OriginDiverged => "saw the origin diverge from",
        EventKind::Reopened => "re-opened",
        EventKind::RolloutStep => {
            return format!(
                "{} stepped the rollout of {}: {}",
                e.actor,
                e.ticket,
                e.detail.as_deref().unwrap_or("a step")
            )
        }
    };
    let said = match (&e.detail, e.kind) {
        (Some(d), EventKind::Promoted | EventKind::Reverted) => format!(" ({d})"),
        _ => String::new(),
    };
    format!("{} {verb} {}{stages}{said}", e.actor, e.ticket)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use stamp_model::ticket::{Stage, TicketKey};
    use std::sync::atomic::AtomicU32;

    #[test]
    fn the_annotated_example_builds_and_dispatchers_are_shared() {
        #[derive(serde::Deserialize)]
        struct F {
            hooks: crate::kit::Entries,
        }
        let f: F = toml::from_str(include_str!("../../../../conf/policies.toml")).unwrap();
        let d = Dispatcher::from_config(&f.hooks.0).unwrap();
        assert!(!d.is_empty());
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Dispatcher>();
    }

    fn event(kind: &str) -> Event {
        Event {
            kind: EventKind::parse(kind).unwrap(),
            ticket: TicketKey::parse("TKT-1").unwrap(),
            from: Some(Stage::Dev),
            to: Some(Stage::Qa),
            actor: "alice".into(),
            share_link: None,
            branch: None,
            commit: None,
            detail: None,
            version: 0,
            rollout: None,
            at_ms: 1,
        }
    }

    struct Flaky {
        fail_first: u32,
        calls: Arc<AtomicU32>,
        permanent: bool,
    }

    #[async_trait]
    impl Hook for Flaky {
        fn kind(&self) -> &'static str {
            "flaky"
        }
        async fn deliver(&self, _e: &Event) -> Result<(), HookError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            if n <= self.fail_first {
                if self.permanent {
                    return Err(HookError::Permanent("no".into()));
                }
                return Err(HookError::Retry("later".into()));
            }
            Ok(())
        }
    }

    fn fast(max_attempts: u32) -> HookOptions {
        HookOptions {
            max_attempts,
            backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(20),
            ..HookOptions::default()
        }
    }

    #[tokio::test]
    async fn retries_until_delivered_then_stops() {
        let calls = Arc::new(AtomicU32::new(0));
        let hook = Flaky {
            fail_first: 2,
            calls: calls.clone(),
            permanent: false,
        };
        assert_eq!(
            deliver_with_retries(&hook, &fast(5), &event("promoted")).await,
            (3, true)
        );
        let calls = Arc::new(AtomicU32::new(0));
        let hook = Flaky {
            fail_first: 9,
            calls: calls.clone(),
            permanent: false,
        };
        assert_eq!(
            deliver_with_retries(&hook, &fast(4), &event("promoted")).await,
            (4, false)
        );
        let hook = Flaky {
            fail_first: 9,
            calls: Arc::new(AtomicU32::new(0)),
            permanent: true,
        };
        assert_eq!(
            deliver_with_retries(&hook, &fast(4), &event("promoted")).await,
            (1, false)
        );
    }

    #[tokio::test]
    async fn emit_filters_events_and_never_waits() {
        let calls = Arc::new(AtomicU32::new(0));
        let mut d = Dispatcher::default();
        let mut opts = fast(3);
        opts.events = vec![EventKind::Promoted];
        d.push(
            Box::new(Flaky {
                fail_first: 1,
                calls: calls.clone(),
                permanent: false,
            }),
            opts,
        );
        let t = std::time::Instant::now();
        d.emit(event("uploaded"));
        d.emit(event("promoted"));
        assert!(t.elapsed() < Duration::from_millis(50));
        assert!(d.idle(Duration::from_secs(5)).await);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "one failure, one success; uploaded filtered"
        );
    }

    #[test]
    fn config_errors_name_valid_kinds_keys_and_events() {
        #[derive(serde::Deserialize)]
        struct F {
            hooks: Vec<toml::Table>,
        }
        let f: F = toml::from_str(
            r#"
            [[hooks]]
            kind = "slak"
            [[hooks]]
            kind = "webhook"
            url = "http://127.0.0.1:9/x"
            secret = "s"
            event = ["promoted"]
            [[hooks]]
            kind = "webhook"
            url = "http://127.0.0.1:9/x"
            secret = "s"
            events = ["promote"]
            "#,
        )
        .unwrap();
        let errs = Dispatcher::from_config(&f.hooks).unwrap_err();
        assert_eq!(errs.len(), 3, "{errs:#?}");
        assert!(errs[0].contains(
            "hooks[0].kind: unknown kind `slak`; valid kinds: jira, slack, github, gitlab, webhook"
        ));
        assert!(errs[1].starts_with(
            "hooks[1].event: unknown key for kind `webhook`; valid keys: kind, events,"
        ));
        assert!(errs[2].starts_with(
            "hooks[2].events: `promote` is not an event; valid events: uploaded, promoted"
        ));
    }
}
