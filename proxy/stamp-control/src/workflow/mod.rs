//! The ticket lifecycle as store operations: upload, delete, promote, revert,
//! close, sign-off. Each is one atomic `Store::commit` guarded by the version
//! the caller read, so a concurrent change makes it fail with a conflict
//! instead of overwriting. Promotion copies a set id: its cost does not
//! depend on the number of modules.
//!
//! Every operation returns its change [`Unpublished`]: a value only the
//! one fan-out (`effects`) opens, so hooks, the production history and the
//! settler hear of it whoever made it. Settling released tickets
//! (`settle`) and garbage collection (`gc`) are store operations too, and
//! return their changes the same way.
//!
//! ```text
//! (new) --upload--> dev --promote--> qa --promote--> prod
//!                    ^  <--revert---    <--revert---
//!  dev|qa --close--> closed --upload (re-initiate)--> dev
//! ```

pub mod gc;
pub mod settle;

use bytes::Bytes;

use stamp_model::lifecycle::{allowed_list, Transition};
use stamp_model::ticket::{Hash, ModuleRef, OverrideSet, Stage, TicketKey};
use stamp_store::{now_ms, Commit, HistoryEvent, OverlayOp, SharedStore, StoreError, TicketRecord};

use crate::kinds::{Actor, Change, ChangeKind, Unpublished};

/// Why a workflow operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    #[error("ticket {0} does not exist")]
    NotFound(TicketKey),
    #[error("cannot {action} ticket {key}: it is in {stage}; allowed: {}", allowed_list(*stage))]
    IllegalTransition {
        key: TicketKey,
        action: &'static str,
        stage: Stage,
    },
    #[error("{0} has no override for `{1}`")]
    NoSuchOverride(TicketKey, String),
    #[error("ticket {key} already has {limit} modules, the most a ticket may have")]
    TooManyModules { key: TicketKey, limit: usize },
    #[error("no module with hash {0} is stored: upload its body")]
    UnknownBody(Hash),
    #[error("{0} is not rolling out (it is in {1}): release it with a rollout first")]
    NotRollingOut(TicketKey, Stage),
    #[error("{0}")]
    Rollout(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

async fn current_set(store: &SharedStore, id: &Hash) -> Result<OverrideSet, StoreError> {
    store
        .get_set(id)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("override set {id} is missing")))
}

/// The body of an upload: the bytes, or a hash the store already holds (so a
/// client transfers only what the server does not have).
#[derive(Debug, Clone)]
pub enum Body {
    Bytes(Bytes),
    Known(Hash),
}

/// Uploads one module to the ticket's dev stage, creating the ticket (in dev)
/// on first upload and re-initiating a closed one.
#[cfg(test)]
pub(crate) async fn upload(
    store: &SharedStore,
    key: &TicketKey,
    specifier: &str,
    path: &str,
    body: Bytes,
    actor: &Actor,
) -> Result<Unpublished, WorkflowError> {
    upload_limited(
        store,
        key,
        specifier,
        path,
        Body::Bytes(body),
        usize::MAX,
        actor,
    )
    .await
}

/// [`upload`] with a module-count limit, checked before anything is stored.
/// A concurrent change of the same ticket (another upload, a sign-off) is
/// merged by retrying on the new version.
pub(crate) async fn upload_limited(
    store: &SharedStore,
    key: &TicketKey,
    specifier: &str,
    path: &str,
    body: Body,
    max_modules: usize,
    actor: &Actor,
) -> Result<Unpublished, WorkflowError> {
    let mut attempts = 0;
    loop {
        let result = upload_once(
            store,
            key,
            specifier,
            path,
            body.clone(),
            max_modules,
            actor,
        )
        .await;
        match result {
            Err(WorkflowError::Store(StoreError::Conflict { .. })) if attempts < 8 => attempts += 1,
            other => return other,
        }
    }
}

async fn upload_once(
    store: &SharedStore,
    key: &TicketKey,
    specifier: &str,
    path: &str,
    body: Body,
    max_modules: usize,
    actor: &Actor,
) -> Result<Unpublished, WorkflowError> {
    let existing = store.get_ticket(key).await?;
    let mut set = match &existing {
        Some(t) => current_set(store, &t.dev).await?,
        None => OverrideSet::new(),
    };
    if !set.contains_key(specifier) && set.len() >= max_modules {
        return Err(WorkflowError::TooManyModules {
            key: key.clone(),
            limit: max_modules,
        });
    }
    let (hash, size) = match body {
        Body::Bytes(bytes) => {
            let size = bytes.len() as u64;
            (store.put_module(bytes).await?, size)
        }
        // Claiming marks the body as just stored, so a concurrent sweep
        // cannot collect it before the commit below refers to it.
        Body::Known(hash) => match store.claim_module(&hash).await? {
            Some(size) => (hash, size),
            None => return Err(WorkflowError::UnknownBody(hash)),
        },
    };
    set.insert(
        specifier.to_string(),
        ModuleRef {
            path: path.to_string(),
            hash,
            size,
        },
    );
    let dev = store.put_set(&set).await?;
    let now = now_ms();
    let from = existing.as_ref().map(|t| t.stage);
    let kind = if from == Some(Stage::Closed) {
        ChangeKind::Reopened
    } else {
        ChangeKind::Uploaded
    };
    let (record, expected, event) = match existing {
        None => (
            TicketRecord::new(key.clone(), dev, now),
            None,
            actor.event(
                "upload",
                None,
                Some(Stage::Dev),
                Some(specifier.to_string()),
            ),
        ),
        Some(t) => {
            let reopen = t.stage == Stage::Closed;
            let event = if reopen {
                actor.event(
                    "reopen",
                    Some(Stage::Closed),
                    Some(Stage::Dev),
                    Some(specifier.to_string()),
                )
            } else {
                // An upload changes dev's modules, whatever stage the ticket
                // is in: it is no stage move (never "qa -> qa").
                actor.event(
                    "upload",
                    None,
                    Some(Stage::Dev),
                    Some(specifier.to_string()),
                )
            };
            let expected = Some(t.version);
            (
                TicketRecord {
                    stage: if reopen { Stage::Dev } else { t.stage },
                    version: t.version + 1,
                    dev,
                    updated_ms: now,
                    ..t
                },
                expected,
                event,
            )
        }
    };
    store
        .commit(Commit {
            ticket: record.clone(),
            expected_version: expected,
            overlay: OverlayOp::Keep,
            event: Some(event),
        })
        .await?;
    Ok(Unpublished::new(Change::new(
        kind,
        record,
        from,
        actor,
        Some(specifier.to_string()),
    )))
}

/// Removes one override from the ticket's dev stage (retried on a
/// concurrent change, like uploads).
pub(crate) async fn delete(
    store: &SharedStore,
    key: &TicketKey,
    specifier: &str,
    actor: &Actor,
) -> Result<Unpublished, WorkflowError> {
    let mut attempts = 0;
    loop {
        match delete_once(store, key, specifier, actor).await {
            Err(WorkflowError::Store(StoreError::Conflict { .. })) if attempts < 8 => attempts += 1,
            other => return other,
        }
    }
}

async fn delete_once(
    store: &SharedStore,
    key: &TicketKey,
    specifier: &str,
    actor: &Actor,
) -> Result<Unpublished, WorkflowError> {
    let t = store
        .get_ticket(key)
        .await?
        .ok_or_else(|| WorkflowError::NotFound(key.clone()))?;
    if t.stage == Stage::Closed {
        return Err(WorkflowError::IllegalTransition {
            key: key.clone(),
            action: "delete from",
            stage: t.stage,
        });
    }
    let mut set = current_set(store, &t.dev).await?;
    if set.remove(specifier).is_none() {
        return Err(WorkflowError::NoSuchOverride(
            key.clone(),
            specifier.to_string(),
        ));
    }
    let dev = store.put_set(&set).await?;
    let record = TicketRecord {
        version: t.version + 1,
        dev,
        updated_ms: now_ms(),
        ..t.clone()
    };
    store
        .commit(Commit {
            ticket: record.clone(),
            expected_version: Some(t.version),
            overlay: OverlayOp::Keep,
            event: Some(actor.event(
                "delete",
                None,
                Some(Stage::Dev),
                Some(specifier.to_string()),
            )),
        })
        .await?;
    Ok(Unpublished::new(Change::new(
        ChangeKind::Deleted,
        record,
        Some(t.stage),
        actor,
        Some(specifier.to_string()),
    )))
}

/// How a move is made besides its kind: a release by steps, and how long
/// what production served stays servable after it leaves.
#[derive(Debug, Clone, Default)]
pub struct MoveOptions {
    /// A release (qa → prod) that starts a rollout instead of reaching
    /// every visitor.
    pub rollout: Option<stamp_model::rollout::Rollout>,
    /// Skew protection: how long a set production stops serving stays
    /// servable (0: not at all).
    pub skew_ms: u64,
    /// Said in the history event (why the move was made).
    pub detail: Option<String>,
}

/// The ticket as it is now, when it is still at `expected_version` (any
/// version, when `None`).
async fn read_at(
    store: &SharedStore,
    key: &TicketKey,
    expected_version: Option<u64>,
) -> Result<TicketRecord, WorkflowError> {
    let t = store
        .get_ticket(key)
        .await?
        .ok_or_else(|| WorkflowError::NotFound(key.clone()))?;
    match expected_version {
        Some(v) if v != t.version => Err(StoreError::Conflict {
            key: key.clone(),
            expected: Some(v),
            found: Some(t.version),
        }
        .into()),
        _ => Ok(t),
    }
}

/// Applies a transition to the ticket as read at `expected_version` (or as
/// it is now, when `None`). Returns the new record.
pub(crate) async fn transition(
    store: &SharedStore,
    key: &TicketKey,
    what: Transition,
    expected_version: Option<u64>,
    actor: &Actor,
    options: &MoveOptions,
) -> Result<Unpublished, WorkflowError> {
    let t = read_at(store, key, expected_version).await?;
    let to = what
        .target(t.stage)
        .ok_or(WorkflowError::IllegalTransition {
            key: key.clone(),
            action: what.as_str(),
            stage: t.stage,
        })?;
    let mut next = TicketRecord {
        stage: to,
        version: t.version + 1,
        updated_ms: now_ms(),
        ..t.clone()
    };
    let mut overlay = OverlayOp::Keep;
    match (t.stage, to) {
        // Snapshots: a pointer copy, whatever the number of modules.
        (Stage::Dev, Stage::Qa) => next.qa = Some(t.dev),
        (Stage::Qa, Stage::Prod) => {
            next.prod = t.qa.or(Some(t.dev));
            // A fresh release is measured against the origin anew.
            next.baseline = None;
            next.retired = None;
            next.rollout = options.rollout.clone();
            overlay = OverlayOp::Append;
        }
        // Out of production: the released snapshot and the settler's
        // bookkeeping go with it (a new release is measured anew); what
        // production served stays servable for tabs opened before.
        (Stage::Prod, Stage::Qa) => {
            overlay = OverlayOp::Remove;
            let now = now_ms();
            next.recent.retain(|r| r.until_ms > now);
            if let (Some(prod), true) = (t.prod, options.skew_ms > 0) {
                next.recent.retain(|r| r.set != prod);
                next.recent.push(stamp_model::record::RecentSet {
                    set: prod,
                    until_ms: now.saturating_add(options.skew_ms),
                });
            }
            next.prod = None;
            next.baseline = None;
            next.retired = None;
            next.rollout = None;
        }
        (Stage::Qa, Stage::Dev) => next.qa = None,
        _ => {}
    }
    store
        .commit(Commit {
            ticket: next.clone(),
            expected_version: Some(t.version),
            overlay,
            event: Some(actor.event(
                what.as_str(),
                Some(t.stage),
                Some(to),
                options.detail.clone().or_else(|| {
                    next.rollout
                        .as_ref()
                        .map(|r| format!("rollout: {}% of production", r.percent))
                }),
            )),
        })
        .await?;
    let kind = match what {
        Transition::Promote => ChangeKind::Promoted,
        Transition::Revert => ChangeKind::Reverted,
        Transition::Close => ChangeKind::Closed,
        Transition::Reopen => ChangeKind::Reopened,
    };
    let detail = options.detail.clone().or_else(|| {
        next.rollout
            .as_ref()
            .map(|r| format!("rollout: {}% of production", r.percent))
    });
    Ok(Unpublished::new(Change::new(
        kind,
        next,
        Some(t.stage),
        actor,
        detail,
    )))
}

/// A step of a rollout in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// To this share (100 ends the rollout: every visitor).
    To(u8),
    /// To the next planned share (100 when none is planned).
    Next,
    Pause,
    Resume,
}

/// Takes a step of the rollout of a released ticket (as read at
/// `expected_version`, or now). `why` goes into the history (the numbers a
/// job stepped on).
pub(crate) async fn step(
    store: &SharedStore,
    key: &TicketKey,
    step: Step,
    expected_version: Option<u64>,
    actor: &Actor,
    why: Option<String>,
) -> Result<Unpublished, WorkflowError> {
    let t = read_at(store, key, expected_version).await?;
    let Some(current) = t.rollout.clone().filter(|_| t.stage == Stage::Prod) else {
        return Err(WorkflowError::NotRollingOut(key.clone(), t.stage));
    };
    let now = now_ms();
    let mut next = current.clone();
    let what = match step {
        Step::Pause if current.paused => {
            return Err(WorkflowError::Rollout(format!(
                "{key}'s rollout is paused already"
            )))
        }
        Step::Resume if !current.paused => {
            return Err(WorkflowError::Rollout(format!(
                "{key}'s rollout is not paused"
            )))
        }
        Step::Pause => {
            next.paused = true;
            format!("paused at {}%", current.percent)
        }
        Step::Resume => {
            // A fresh window: what was seen before the pause does not count.
            next.paused = false;
            next.step_at_ms = now;
            format!("resumed at {}%", current.percent)
        }
        Step::To(_) | Step::Next => {
            let to = match step {
                Step::To(p) => p,
                _ => current.next_percent(),
            };
            if !(1..=100).contains(&to) {
                return Err(WorkflowError::Rollout(format!(
                    "a share is 1 to 100, not {to}"
                )));
            }
            if to == current.percent {
                return Err(WorkflowError::Rollout(format!("{key} is at {to}% already")));
            }
            next.percent = to;
            next.steps.retain(|s| *s > to);
            next.step_at_ms = now;
            next.paused = false;
            if to == 100 {
                format!("{}% → 100%: every visitor", current.percent)
            } else {
                format!("{}% → {to}%", current.percent)
            }
        }
    };
    let detail = match why {
        Some(w) => format!("{what} ({w})"),
        None => what,
    };
    let record = TicketRecord {
        version: t.version + 1,
        updated_ms: now,
        rollout: (next.percent < 100).then_some(next),
        ..t.clone()
    };
    store
        .commit(Commit {
            ticket: record.clone(),
            expected_version: Some(t.version),
            overlay: OverlayOp::Keep,
            event: Some(actor.event(
                "rollout",
                Some(Stage::Prod),
                Some(Stage::Prod),
                Some(detail.clone()),
            )),
        })
        .await?;
    Ok(Unpublished::new(Change::new(
        ChangeKind::RolloutStep,
        record,
        Some(Stage::Prod),
        actor,
        Some(detail),
    )))
}

/// The ticket's overrides in one stage (`Prod` gives the released snapshot).
pub async fn overrides(
    store: &SharedStore,
    t: &TicketRecord,
    stage: Stage,
) -> Result<Option<OverrideSet>, StoreError> {
    match t.set_of(stage) {
        Some(id) => Ok(Some(current_set(store, &id).await?)),
        None => Ok(None),
    }
}

/// The history event of a sign-off taken back (the sign-off policy reads it).
pub const WITHDRAW_SIGN_OFF: &str = "withdraw-sign-off";

/// Records a sign-off on a ticket in qa (for the sign-off policy).
pub(crate) async fn sign_off(
    store: &SharedStore,
    t: &TicketRecord,
    comment: Option<String>,
    actor: &Actor,
) -> Result<Unpublished, WorkflowError> {
    let event = actor.event("sign-off", Some(t.stage), Some(t.stage), comment.clone());
    let record = note(store, t, |_| {}, event).await?;
    Ok(Unpublished::new(Change::new(
        ChangeKind::SignedOff,
        record,
        Some(t.stage),
        actor,
        comment,
    )))
}

/// Takes back the actor's sign-off (the API checks that there is one).
pub(crate) async fn withdraw_sign_off(
    store: &SharedStore,
    t: &TicketRecord,
    comment: Option<String>,
    actor: &Actor,
) -> Result<Unpublished, WorkflowError> {
    let event = actor.event(
        WITHDRAW_SIGN_OFF,
        Some(t.stage),
        Some(t.stage),
        comment.clone(),
    );
    let record = note(store, t, |_| {}, event).await?;
    Ok(Unpublished::new(Change::new(
        ChangeKind::SignOffWithdrawn,
        record,
        Some(t.stage),
        actor,
        comment,
    )))
}

/// Revokes every share link of a ticket minted so far (preview protection).
pub(crate) async fn revoke_links(
    store: &SharedStore,
    t: &TicketRecord,
    actor: &Actor,
) -> Result<Unpublished, WorkflowError> {
    let event = actor.event("revoke-links", Some(t.stage), Some(t.stage), None);
    let record = note(store, t, |r| r.share_gen += 1, event).await?;
    Ok(Unpublished::new(Change::new(
        ChangeKind::LinksRevoked,
        record,
        Some(t.stage),
        actor,
        None,
    )))
}

/// A change that leaves the stage and overrides alone: the record as read,
/// adjusted by `change`, one version on, with `event` in the history.
async fn note(
    store: &SharedStore,
    t: &TicketRecord,
    change: impl FnOnce(&mut TicketRecord),
    event: HistoryEvent,
) -> Result<TicketRecord, WorkflowError> {
    let mut record = TicketRecord {
        version: t.version + 1,
        updated_ms: now_ms(),
        ..t.clone()
    };
    change(&mut record);
    store
        .commit(Commit {
            ticket: record.clone(),
            expected_version: Some(t.version),
            overlay: OverlayOp::Keep,
            event: Some(event),
        })
        .await?;
    Ok(record)
}
