//! The control API's wire contract, shared by the proxy and the `stamp` CLI:
//! paths, header names, limits, request and response bodies, and the one
//! error envelope with its [`ErrorCode`]s.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::lifecycle::TicketAction;
use crate::record::HistoryEvent;
use crate::ticket::{Hash, ModuleRef, OverrideSet, Stage, TicketKey};

/// Everything the proxy answers itself starts with this (exactly `/__stamp`
/// or `/__stamp/…`); nothing under it reaches the origin.
pub const RESERVED_PREFIX: &str = "/__stamp";
/// The control API.
pub const API_PREFIX: &str = "/__stamp/api/v1/";
/// Health, as JSON.
pub const HEALTH_PATH: &str = "/__stamp/health";
/// Prometheus text.
pub const METRICS_PATH: &str = "/__stamp/metrics";
/// The panel's server-sent events (one `data:` line per store version).
pub const EVENTS_PATH: &str = "/__stamp/api/v1/events";
/// Live reload of dev pages: one `data: reload` when the ticket's dev
/// modules change (`?ticket=KEY&v=<dev set id>`).
pub const LIVE_PATH: &str = "/__stamp/live";
/// The query parameter that turns live reload on for a `?dev=` page.
pub const LIVE_PARAM: &str = "stamp_live";

/// Whether `path` is under the reserved prefix: `/__stamp` itself or
/// `/__stamp/…`, never `/__stampede.html`.
pub fn is_reserved(path: &str) -> bool {
    path.strip_prefix(RESERVED_PREFIX)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Request and response header names.
pub mod header {
    /// Upload: the bare specifier the module is known by (default: its path).
    pub const SPECIFIER: &str = "x-stamp-specifier";
    /// Upload: the module lives on this other origin (`https://cdn.example`)
    /// at the request's path; it must be one of the proxy's `asset_origins`.
    pub const ORIGIN: &str = "x-stamp-origin";
    /// Upload: the body's sha256; with an empty body, "the server has it".
    pub const HASH: &str = "x-stamp-hash";
    /// The git commit a change was made from (hex).
    pub const COMMIT: &str = "x-stamp-commit";
    /// The git branch a change was made from.
    pub const BRANCH: &str = "x-stamp-branch";
    /// Upload: the file of the commit (`x-stamp-commit`) the body is, byte
    /// for byte, as a path from the repository's root (`src/lib/greet.js`);
    /// sent only when it is so, and checked by the `git` policy.
    pub const SOURCE: &str = "x-stamp-source";
    /// Panel writes: the session's CSRF token.
    pub const CSRF: &str = "x-csrf-token";
    /// On every proxied response: what the proxy did, or why it did not.
    pub const INFO: &str = "x-ticket-stamp";
}

/// Whether `path` can name a file of a git tree: relative, `/`-separated,
/// no empty, `.` or `..` part, no backslash or control character, at most
/// [`MAX_PATH`] bytes.
pub fn is_repo_path(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= MAX_PATH
        && !path.chars().any(|c| c.is_control() || c == '\\')
        && path
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

/// Longest module path or specifier accepted, in bytes.
pub const MAX_PATH: usize = 1024;
/// Largest JSON request body, in bytes.
pub const MAX_JSON: usize = 64 * 1024;
/// Most hashes one `modules/missing` request may ask about.
pub const MAX_MISSING: usize = 10_000;
/// Longest free-text field (commit, branch, comment), in bytes.
pub const MAX_TEXT: usize = 1024;

/// Why a specifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecifierError {
    #[error("must be 1-{MAX_PATH} printable characters")]
    Length,
    #[error("a URL-like specifier must equal the module's path (or be an entry pattern such as /assets/index-[hash:8].js that the path matches); use a bare specifier")]
    UrlLike,
}

/// A character that changes how text around it is shown without being seen
/// itself: bidirectional controls (U+202E shows `gnp.exe` as `exe.png`),
/// zero-width characters and the byte-order mark. Module paths and
/// specifiers are read by people in reviews and logs: none is allowed.
pub fn is_deceptive(c: char) -> bool {
    matches!(c,
        '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// Checks a specifier for the module at `path`: a bare specifier
/// (`@shop/cart`), or the module's own path. Returns it trimmed.
pub fn validate_specifier(s: &str, path: &str) -> Result<String, SpecifierError> {
    let s = s.trim();
    if s.is_empty() || s.len() > MAX_PATH || s.chars().any(|c| c.is_control() || is_deceptive(c)) {
        return Err(SpecifierError::Length);
    }
    let url_like = s.starts_with('/')
        || s.starts_with("./")
        || s.starts_with("../")
        || crate::assets::is_remote(s);
    let pattern_of_path = || crate::assets::EntryPattern::parse(s).is_some_and(|p| p.matches(path));
    if url_like && s != path && !pattern_of_path() {
        return Err(SpecifierError::UrlLike);
    }
    Ok(s.to_string())
}

/// Whether `s` is a bare specifier a project may map (`@shop/cart`): not
/// a path or URL, no whitespace or control characters, at most
/// [`MAX_PATH`] bytes.
pub fn is_bare_specifier(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('/')
        && !s.starts_with("./")
        && !s.starts_with("../")
        && !s.contains("://")
        && s.len() <= MAX_PATH
        && !s
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || is_deceptive(c))
}

/// Machine-readable error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    IllegalTransition,
    PolicyDenied,
    PreconditionRequired,
    TooLarge,
    TooManyModules,
    UnknownBody,
    UnsupportedType,
    UnsupportedMediaType,
    StoreUnavailable,
    /// The store no longer holds the state the proxy served from; writes
    /// wait for the data to come back or for an operator to adopt the store.
    StoreLostState,
    /// The identity provider could not be reached, or answered nonsense.
    ProviderUnavailable,
    /// A bounded resource (event streams) is full; `Retry-After` says when.
    Busy,
    Internal,
    /// A code this build does not know (a newer server).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Conflict => "conflict",
            ErrorCode::IllegalTransition => "illegal_transition",
            ErrorCode::PolicyDenied => "policy_denied",
            ErrorCode::PreconditionRequired => "precondition_required",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::TooManyModules => "too_many_modules",
            ErrorCode::UnknownBody => "unknown_body",
            ErrorCode::UnsupportedType => "unsupported_type",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::StoreUnavailable => "store_unavailable",
            ErrorCode::Busy => "busy",
            ErrorCode::StoreLostState => "store_lost_state",
            ErrorCode::ProviderUnavailable => "provider_unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::Unknown => "unknown",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `error` object of every failed API request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    /// The request field at fault (`path`, `expected_version`, a header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<TicketKey>,
    /// The action refused (`illegal_transition`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The ticket's stage now (`illegal_transition`, `conflict`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
    /// The ticket's version now (`conflict`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// What the lifecycle allows in `stage` (`illegal_transition`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Vec<TicketAction>>,
    /// Anything else (a policy refusal's `failures` and `warnings`).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            code,
            message: message.into(),
            field: None,
            ticket: None,
            action: None,
            stage: None,
            version: None,
            allowed: None,
            extra: serde_json::Map::new(),
        }
    }
}

/// `{"error": {…}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

/// One override, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleDto {
    pub specifier: String,
    pub path: String,
    /// Where the proxy serves the ticket's body.
    pub url: String,
    pub hash: Hash,
    #[serde(default)]
    pub size: u64,
}

impl ModuleDto {
    pub fn new(specifier: &str, m: &ModuleRef) -> ModuleDto {
        ModuleDto {
            specifier: specifier.to_string(),
            path: m.path.clone(),
            url: m.url(),
            hash: m.hash,
            size: m.size,
        }
    }

    /// An override set as a list, in specifier order.
    pub fn list(set: &OverrideSet) -> Vec<ModuleDto> {
        set.iter().map(|(s, m)| ModuleDto::new(s, m)).collect()
    }
}

/// A released ticket's part of the production overlay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayDto {
    /// Overrides production still gets from the ticket.
    #[serde(default)]
    pub live: u64,
    /// Overrides retired because the origin now serves them itself.
    #[serde(default)]
    pub retired: u64,
    #[serde(default)]
    pub baseline_recorded: bool,
}

/// The last change of a ticket, in lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastDto {
    pub event: String,
    pub actor: String,
    pub at_ms: u64,
}

/// A ticket. A transition answers with the summary fields only; a read
/// adds `modules`, and `history` for one ticket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TicketDto {
    pub key: TicketKey,
    pub stage: Stage,
    pub version: u64,
    #[serde(default)]
    pub updated_ms: u64,
    /// Share links by view (`dev`, `qa`).
    #[serde(default)]
    pub links: BTreeMap<String, String>,
    #[serde(default)]
    pub allowed_actions: Vec<TicketAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_ms: Option<u64>,
    /// Overrides by stage (`dev`, `qa`, `prod`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub modules: BTreeMap<Stage, Vec<ModuleDto>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_in_production: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<OverlayDto>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<HistoryEvent>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<LastDto>,
    /// What pages of this ticket actually ran, as their probes reported it:
    /// the last views, newest first (one in lists, a few for one ticket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub views: Option<Vec<crate::views::ViewRecord>>,
    /// A release still rolling out: its share, steps, and what the pages of
    /// both sides reported since its current step began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutDto>,
    /// Policy warnings that did not stop a transition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Value>,
}

/// A rollout as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutDto {
    pub percent: u8,
    #[serde(default)]
    pub steps: Vec<u8>,
    /// Between scheduled steps (ms); 0 when steps are taken by hand.
    #[serde(default)]
    pub every_ms: u64,
    pub step_at_ms: u64,
    #[serde(default)]
    pub paused: bool,
    /// When the next scheduled step is due.
    #[serde(default)]
    pub next_at_ms: Option<u64>,
    /// Page views since the step began, per side.
    #[serde(default)]
    pub ticket: crate::rollout::SideCounts,
    #[serde(default)]
    pub production: crate::rollout::SideCounts,
    /// `waiting`, `healthy` or `regressed`.
    #[serde(default)]
    pub verdict: String,
    /// The verdict in a sentence, with the numbers.
    #[serde(default)]
    pub said: String,
    /// Production pages report during rollouts (`reports.sample` > 0).
    #[serde(default)]
    pub signal: bool,
}

/// How a release rolls out (`rollout` in a promote's body).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutRequest {
    /// The first share and the steps after it, in percent (`[5, 25, 100]`);
    /// empty: the proxy's configured schedule.
    #[serde(default)]
    pub steps: Vec<u8>,
    /// Time between steps (`"15m"`); `"0"`: steps by hand only. Default:
    /// the proxy's configured interval, when `steps` is empty too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
}

/// `POST tickets/{KEY}/rollout`: a step of a rollout in progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepRequest {
    /// To this share (100: every visitor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<u8>,
    /// `next`, `pause` or `resume` (instead of `to`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// One commit of the production history repository: a change of what
/// production served (`GET production/history`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductionCommit {
    /// The git commit id (hex).
    pub id: String,
    pub at_ms: u64,
    /// The change, first line of the message: "TKT-1 released to prod by alice".
    pub summary: String,
    /// Released tickets after it, in promotion order.
    #[serde(default)]
    pub released: Vec<String>,
    /// Overrides production served after it.
    #[serde(default)]
    pub overrides: usize,
}

/// `GET production/history`: newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductionHistory {
    pub commits: Vec<ProductionCommit>,
}

/// `GET tickets`: one page, most recently updated first (see
/// [`crate::listing`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TicketList {
    pub tickets: Vec<TicketDto>,
    /// The cursor of the next page (`cursor=`); absent on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// How many tickets match, across every page (absent with `who`, which
    /// is only known page by page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<usize>,
}

/// The answer to an upload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadResponse {
    pub ticket: TicketKey,
    pub stage: Stage,
    pub version: u64,
    #[serde(default)]
    pub module: Option<ModuleDto>,
    /// How many modules the ticket's dev stage has now.
    #[serde(default)]
    pub modules: usize,
}

/// The answer to a delete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeleteResponse {
    pub ticket: TicketKey,
    pub stage: Stage,
    pub version: u64,
    pub deleted: String,
}

/// The optional body of promote / revert / close / sign-off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransitionRequest {
    /// The version the caller read; a different one is a conflict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<u64>,
    /// The stage the move starts from; another is a conflict. A promote,
    /// revert or close must state this or the version (else `428`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Stage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// A release (qa → prod) by steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutRequest>,
}

/// `POST modules/missing`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MissingRequest {
    pub hashes: Vec<String>,
}

/// Which of the asked hashes the store lacks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingResponse {
    pub missing: Vec<Hash>,
}

/// What happened to a ticket, as hooks are told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    Uploaded,
    Promoted,
    Reverted,
    Closed,
    SignedOff,
    OriginDiverged,
    Reopened,
    /// A rollout took a step (`detail` says which).
    RolloutStep,
}

impl EventKind {
    pub const ALL: [EventKind; 8] = [
        EventKind::Uploaded,
        EventKind::Promoted,
        EventKind::Reverted,
        EventKind::Closed,
        EventKind::SignedOff,
        EventKind::OriginDiverged,
        EventKind::Reopened,
        EventKind::RolloutStep,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Uploaded => "uploaded",
            EventKind::Promoted => "promoted",
            EventKind::Reverted => "reverted",
            EventKind::Closed => "closed",
            EventKind::SignedOff => "signed-off",
            EventKind::OriginDiverged => "origin-diverged",
            EventKind::Reopened => "reopened",
            EventKind::RolloutStep => "rollout-step",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn invisible_and_direction_characters_are_refused() {
        for s in ["@shop/\u{202E}cart", "a\u{200B}b", "\u{FEFF}x", "x\u{2066}"] {
            assert!(!is_bare_specifier(s), "{s:?}");
            assert!(validate_specifier(s, "/x.js").is_err(), "{s:?}");
        }
        assert!(is_bare_specifier("@shop/cart-é"));
        assert!(!is_deceptive('é') && !is_deceptive('/'));
    }

    #[test]
    fn the_reserved_prefix_is_exact() {
        assert!(is_reserved("/__stamp"));
        assert!(is_reserved("/__stamp/"));
        assert!(is_reserved("/__stamp/api/v1/tickets"));
        assert!(!is_reserved("/__stampede.html"));
        assert!(!is_reserved("/x/__stamp/"));
    }

    #[test]
    fn specifiers() {
        assert_eq!(
            validate_specifier("@shop/cart", "/dist/cart.js").unwrap(),
            "@shop/cart"
        );
        assert_eq!(
            validate_specifier("/other.js", "/dist/cart.js"),
            Err(SpecifierError::UrlLike)
        );
        assert!(validate_specifier("", "/a.js").is_err());
        assert!(validate_specifier("a\u{1}b", "/a.js").is_err());
        assert!(validate_specifier(&"a".repeat(MAX_PATH + 1), "/a.js").is_err());
        assert!(is_bare_specifier("@shop/cart"));
        for bad in [
            "",
            "/a.js",
            "./a.js",
            "../a",
            "https://cdn/x.js",
            "a b",
            "a\u{1}",
        ] {
            assert!(!is_bare_specifier(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_error_envelope_round_trips_and_tolerates_new_codes() {
        let mut e = ErrorBody::new(ErrorCode::IllegalTransition, "no");
        e.stage = Some(Stage::Prod);
        e.allowed = Some(vec![TicketAction::Revert]);
        e.extra.insert("failures".into(), serde_json::json!(["x"]));
        let text = serde_json::to_string(&ErrorEnvelope { error: e.clone() }).unwrap();
        assert!(text.contains("\"code\":\"illegal_transition\""), "{text}");
        let back: ErrorEnvelope = serde_json::from_str(&text).unwrap();
        assert_eq!(back.error, e);
        let newer: ErrorEnvelope =
            serde_json::from_str(r#"{"error":{"code":"from_the_future","message":"m"}}"#).unwrap();
        assert_eq!(newer.error.code, ErrorCode::Unknown);
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
    }
}
