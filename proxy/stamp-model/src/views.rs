//! Page views as browsers report them: what a stamped page actually ran
//! (which of the ticket's URLs loaded, which production file ran where the
//! ticket has one, in the page and in its workers) and which errors it saw.
//!
//! The browser's report ([`Report`]) is untrusted input: it is read with
//! bounds on every field and turned into a [`ViewRecord`] the store keeps
//! (the last views of each ticket) and counts ([`ViewCount`], per ticket,
//! side and minute, for rollout decisions across a fleet). Nothing in it
//! names a person: no cookies, no query strings, no addresses.

use serde::{Deserialize, Serialize};

use crate::ticket::{Stage, TicketKey};

/// The largest report body accepted.
pub const MAX_REPORT_BYTES: usize = 16 * 1024;
/// Errors kept per view (the count goes on).
pub const MAX_ERRORS: usize = 5;
/// Longest text field kept (messages, stack lines, paths).
pub const MAX_TEXT: usize = 200;
/// Ticket module hashes listed as ran.
pub const MAX_RAN: usize = 500;
/// Production files listed as having run instead.
pub const MAX_PRODUCTION: usize = 50;
/// The last views a store keeps per ticket.
pub const RECENT_VIEWS: usize = 30;
/// How long per-minute counts are kept.
pub const COUNTS_KEPT_MS: u64 = 2 * 24 * 60 * 60 * 1000;

/// Which side of a release a page was on: the ticket's (a `?dev=`/`?qa=`
/// page, or a visitor in a rollout's slice), or production's.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    #[default]
    Ticket,
    Production,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Ticket => "ticket",
            Side::Production => "production",
        }
    }
}

/// One error a page saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewError {
    /// `error`, `rejection`, `load` (a script, style or module that failed
    /// to load) or `csp` (a policy blocked something).
    pub kind: String,
    pub message: String,
    /// Where: a path on the page's origin, or `origin + path` elsewhere.
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub line: u32,
    /// The first line of the stack that names a place.
    #[serde(default)]
    pub stack: String,
}

/// What the page ran, as it reported it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedModules {
    /// The ticket's modules in this view.
    #[serde(default)]
    pub expected: u32,
    /// Hashes of the ticket's modules that loaded (page and workers).
    #[serde(default)]
    pub ran: Vec<String>,
    /// Of those, the ones that ran in a worker.
    #[serde(default)]
    pub workers: Vec<String>,
    /// Production files that ran where the ticket has one, and the
    /// ticket's did not.
    #[serde(default)]
    pub production: Vec<String>,
    /// Production files that loaded where the ticket has one whose own
    /// copy ran too (an inline script's `import()` of production's URL,
    /// production's stylesheet beside the ticket's; a script only
    /// preloaded is not one): production's may have run beside the
    /// ticket's.
    #[serde(default)]
    pub production_also: Vec<String>,
    /// The ticket's files that loaded but never ran (their imports failed
    /// to resolve, they threw before their end).
    #[serde(default)]
    pub not_run: Vec<String>,
    /// Worklets the page started (their module's path): they have no
    /// channel to the page, so what they ran is not known.
    #[serde(default)]
    pub worklets: Vec<String>,
}

/// A browser's report, as sent to `POST /__stamp/report`.
#[derive(Debug, Clone, Deserialize)]
pub struct Report {
    pub v: u32,
    pub ticket: String,
    pub view: String,
    #[serde(default)]
    pub variant: String,
    pub side: Side,
    #[serde(default)]
    pub page: String,
    /// A later report of the same view: only errors found since count.
    #[serde(default)]
    pub update: bool,
    /// For an update: the error count the first report gave.
    #[serde(default)]
    pub previous_errors: u32,
    #[serde(default)]
    pub modules: ReportedModules,
    #[serde(default)]
    pub errors: Vec<ViewError>,
    #[serde(default)]
    pub error_count: u32,
    #[serde(default)]
    pub failed_loads: u32,
    /// The [`PageToken`] the page was sent with, as the page read it from
    /// its own `Server-Timing` (a sampled page of a rollout; empty
    /// elsewhere, and where the browser gives a page no server timing).
    #[serde(default)]
    pub token: String,
    /// A rollout's page loaded one of the ticket's files (its own, on the
    /// ticket's side; production's copy of one it replaces, on
    /// production's): the views a broken file can reach.
    #[serde(default)]
    pub touched: bool,
    /// For an update: what its first report said of [`Report::touched`].
    #[serde(default)]
    pub previously_touched: bool,
}

/// One page view, as kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewRecord {
    pub at_ms: u64,
    pub ticket: TicketKey,
    /// `dev`, `qa`, or `prod` (a released ticket's production pages).
    pub view: String,
    /// The ticket's stage when the report arrived.
    pub stage: Stage,
    pub side: Side,
    /// The page's path (never its query).
    pub page: String,
    /// The page variant's set id (hex), as the page named it.
    pub variant: String,
    pub update: bool,
    pub expected: u32,
    /// How many of the ticket's modules loaded.
    pub ran: u32,
    /// How many of those in a worker.
    pub workers: u32,
    pub production: Vec<String>,
    /// Production files that loaded beside the ticket's own copy, which
    /// ran too (see [`ReportedModules::production_also`]).
    #[serde(default)]
    pub production_also: Vec<String>,
    /// The ticket's files that loaded and did not run.
    #[serde(default)]
    pub not_run: Vec<String>,
    /// Worklets the page started, which cannot say what they ran.
    #[serde(default)]
    pub worklets: Vec<String>,
    pub errors: Vec<ViewError>,
    pub error_count: u32,
    /// For an update, the error count its first report gave.
    #[serde(default)]
    pub previous_errors: u32,
    pub failed_loads: u32,
    /// The page loaded one of the ticket's files (see [`Report::touched`]).
    #[serde(default)]
    pub touched: bool,
    /// For an update, what its first report said of it.
    #[serde(default)]
    pub previously_touched: bool,
}

impl ViewRecord {
    /// Whether this record is a first sighting of a view that erred (its
    /// first report had errors, or an update brought the first).
    pub fn newly_erring(&self) -> bool {
        if self.update {
            self.previous_errors == 0 && self.error_count > 0
        } else {
            self.error_count > 0
        }
    }

    /// Whether this record first tells that its view loaded one of the
    /// ticket's files (a first report that says so, or an update whose
    /// first report did not: a file a route loaded later).
    pub fn newly_touched(&self) -> bool {
        self.touched && !(self.update && self.previously_touched)
    }

    /// Whether this record first makes its view one that loaded the
    /// ticket's files and erred.
    pub fn newly_touched_erring(&self) -> bool {
        let now = self.touched && self.error_count > 0;
        let before = self.update && self.previously_touched && self.previous_errors > 0;
        now && !before
    }

    /// Errors this record adds to its view's count.
    pub fn new_errors(&self) -> u32 {
        if self.update {
            self.error_count.saturating_sub(self.previous_errors)
        } else {
            self.error_count
        }
    }

    /// One line: "2 of 2 ran, 0 errors" or "1 of 2 ran: production's
    /// /org/navbar.js ran instead; 1 error: TypeError: x is undefined".
    pub fn summary(&self) -> String {
        let seen = self.ran + self.production.len() as u32 + self.not_run.len() as u32;
        let mut s = if !self.production.is_empty()
            || !self.production_also.is_empty()
            || !self.not_run.is_empty()
        {
            let mut s = format!("{} of {seen} ran", self.ran);
            if !self.production.is_empty() {
                s.push_str(&format!(
                    ": production's {} ran instead",
                    self.production.join(", ")
                ));
            }
            if !self.production_also.is_empty() {
                s.push_str(&format!(
                    "; production's {} also loaded",
                    self.production_also.join(", ")
                ));
            }
            if !self.not_run.is_empty() {
                s.push_str(&format!(
                    "; {} loaded but did not run",
                    self.not_run.join(", ")
                ));
            }
            s
        } else if seen > 0 {
            format!("{} of {seen} ran", self.ran)
        } else if !self.worklets.is_empty() {
            format!("none of its {} modules seen running", self.expected)
        } else {
            format!("none of its {} modules used", self.expected)
        };
        if !self.worklets.is_empty() {
            s.push_str(&format!(
                "; not seen: what worklet {} ran (worklets cannot report)",
                self.worklets.join(", ")
            ));
        }
        match (self.error_count, self.errors.first()) {
            (0, _) => s.push_str(", no errors"),
            (n, Some(e)) => s.push_str(&format!(
                "; {n} {}: {}",
                if n == 1 { "error" } else { "errors" },
                e.message
            )),
            (n, None) => s.push_str(&format!("; {n} errors")),
        }
        s
    }
}

/// Counts of one ticket's views on one side in one minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewCount {
    /// The minute's start (ms since the epoch).
    pub minute_ms: u64,
    pub side: Side,
    pub views: u64,
    /// Views with at least one error.
    pub erring_views: u64,
    pub errors: u64,
    pub failed_loads: u64,
    /// Sampled pages the proxies sent this side with the probe (counted
    /// where they were sent; see [`PagesSeen`]).
    #[serde(default)]
    pub sent: u64,
    /// Views that loaded one of the ticket's files (see
    /// [`Report::touched`]), and of those, the ones with an error.
    #[serde(default)]
    pub touched_views: u64,
    #[serde(default)]
    pub touched_erring: u64,
    /// Of the pages sent this side in this minute, the ones whose first
    /// report arrived (before any rate limit or queue could drop it): the
    /// pages that lived long enough to say so.
    #[serde(default)]
    pub heard: u64,
}

/// The name of the `Server-Timing` metric that carries a sampled page's
/// [`PageToken`] to the page's probe.
pub const PAGE_TOKEN_TIMING: &str = "ticket-stamp-page";

/// What a sampled rollout page was sent with, and its report gives back:
/// the minute it was sent (its report is counted as heard in that minute,
/// however late it comes) and a random number (a page's first report is
/// heard once, however often the browser shows that same response again,
/// as from its HTTP cache on a history navigation). It names no one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PageToken {
    pub minute_ms: u64,
    pub nonce: u64,
}

impl PageToken {
    /// `"<minutes since the epoch>.<16 hex digits>"`.
    pub fn text(&self) -> String {
        format!("{}.{:016x}", self.minute_ms / 60_000, self.nonce)
    }

    /// Reads [`PageToken::text`] strictly; `None` for anything else.
    pub fn parse(text: &str) -> Option<PageToken> {
        let (minute, nonce) = text.split_once('.')?;
        let digits = |s: &str, n: std::ops::RangeInclusive<usize>, hex: bool| {
            n.contains(&s.len())
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (hex && (b'a'..=b'f').contains(&b)))
        };
        if !digits(minute, 1..=12, false) || !digits(nonce, 16..=16, true) {
            return None;
        }
        Some(PageToken {
            minute_ms: minute.parse::<u64>().ok()?.checked_mul(60_000)?,
            nonce: u64::from_str_radix(nonce, 16).ok()?,
        })
    }
}

/// What one proxy saw of one ticket's side in one minute, counted in
/// memory and added to the store's per-minute counts in batches: sampled
/// pages it sent with the probe in that minute, and first reports it
/// heard back from pages sent in that minute (by their [`PageToken`]). A side
/// whose pages hang or crash before their report (an endless loop, a
/// renderer out of memory) reports no errors at all: only the pages sent
/// and never heard from tell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PagesSeen {
    pub ticket: TicketKey,
    pub side: Side,
    pub minute_ms: u64,
    pub sent: u64,
    pub heard: u64,
}

impl ViewCount {
    /// What a record adds to its minute's count. Only production's pages
    /// count (`prod`: a rollout's two sides): a `?dev=` or `?qa=` preview
    /// of the ticket rolling out is no visitor of the rollout, and pooled
    /// into its ticket side, a developer's work in progress would revert a
    /// healthy release, or a tester's clean clicks carry a broken one.
    pub fn of(record: &ViewRecord) -> ViewCount {
        let counted = u64::from(record.view == "prod");
        ViewCount {
            minute_ms: record.at_ms - record.at_ms % 60_000,
            side: record.side,
            views: counted * u64::from(!record.update),
            erring_views: counted * u64::from(record.newly_erring()),
            errors: counted * u64::from(record.new_errors()),
            failed_loads: counted
                * u64::from(if record.update {
                    0
                } else {
                    record.failed_loads
                }),
            touched_views: counted * u64::from(record.newly_touched()),
            touched_erring: counted * u64::from(record.newly_touched_erring()),
            sent: 0,
            heard: 0,
        }
    }

    pub fn add(&mut self, other: &ViewCount) {
        self.views += other.views;
        self.erring_views += other.erring_views;
        self.errors += other.errors;
        self.failed_loads += other.failed_loads;
        self.touched_views += other.touched_views;
        self.touched_erring += other.touched_erring;
        self.sent += other.sent;
        self.heard += other.heard;
    }
}

fn text(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

fn is_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Report {
    /// Reads a report body, bounded and checked. `Err` says what is wrong.
    pub fn parse(body: &[u8]) -> Result<Report, String> {
        if body.len() > MAX_REPORT_BYTES {
            return Err(format!("a report is at most {MAX_REPORT_BYTES} bytes"));
        }
        let r: Report = serde_json::from_slice(body).map_err(|e| format!("not a report: {e}"))?;
        if r.v != 1 {
            return Err(format!("report version {} is not known (1 is)", r.v));
        }
        if !matches!(r.view.as_str(), "dev" | "qa" | "prod") {
            return Err("`view` is dev, qa or prod".into());
        }
        if !r.variant.is_empty() && !is_hash(&r.variant) {
            return Err("`variant` is a set id (64 hex digits)".into());
        }
        if !r.page.is_empty() && !r.page.starts_with('/') {
            return Err("`page` is a path".into());
        }
        if !r.token.is_empty() && PageToken::parse(&r.token).is_none() {
            return Err("`token` is the page's token from its server timing".into());
        }
        if r.modules.ran.len() > MAX_RAN
            || r.modules.workers.len() > MAX_RAN
            || r.modules.production.len() > MAX_PRODUCTION
            || r.modules.production_also.len() > MAX_PRODUCTION
            || r.modules.not_run.len() > MAX_PRODUCTION
            || r.modules.worklets.len() > MAX_PRODUCTION
            || r.errors.len() > MAX_ERRORS
        {
            return Err("the report lists more than a page can".into());
        }
        if r.modules
            .ran
            .iter()
            .chain(&r.modules.workers)
            .any(|h| !is_hash(h))
        {
            return Err("`modules.ran` lists module hashes (64 hex digits)".into());
        }
        Ok(r)
    }

    /// The record kept for this report, received at `at_ms` for a ticket
    /// in `stage`.
    pub fn record(&self, ticket: TicketKey, stage: Stage, at_ms: u64) -> ViewRecord {
        let mut ran: Vec<&String> = self.modules.ran.iter().collect();
        ran.sort();
        ran.dedup();
        let mut workers: Vec<&String> = self.modules.workers.iter().collect();
        workers.sort();
        workers.dedup();
        ViewRecord {
            at_ms,
            ticket,
            view: self.view.clone(),
            stage,
            side: self.side,
            page: text(self.page.split(['?', '#']).next().unwrap_or(""), MAX_TEXT),
            variant: self.variant.clone(),
            update: self.update,
            expected: self.modules.expected.min(100_000),
            ran: ran.len() as u32,
            workers: workers.len() as u32,
            production: self
                .modules
                .production
                .iter()
                .map(|p| text(p, MAX_TEXT))
                .collect(),
            production_also: self
                .modules
                .production_also
                .iter()
                .map(|p| text(p, MAX_TEXT))
                .collect(),
            not_run: self
                .modules
                .not_run
                .iter()
                .map(|p| text(p, MAX_TEXT))
                .collect(),
            worklets: self
                .modules
                .worklets
                .iter()
                .map(|p| text(p, MAX_TEXT))
                .collect(),
            errors: self
                .errors
                .iter()
                .map(|e| ViewError {
                    kind: text(&e.kind, 16),
                    message: text(&e.message, MAX_TEXT),
                    source: text(&e.source, MAX_TEXT),
                    line: e.line,
                    stack: text(&e.stack, MAX_TEXT),
                })
                .collect(),
            error_count: self.error_count.min(1_000_000),
            previous_errors: if self.update {
                self.previous_errors.min(1_000_000)
            } else {
                0
            },
            failed_loads: self.failed_loads.min(1_000_000),
            touched: self.touched,
            previously_touched: self.update && self.previously_touched,
        }
    }
}

/// The statement a ticket's JavaScript body ends with as the proxy serves
/// it (before a trailing `sourceMappingURL` comment): it runs once the code
/// before it has run to its end and tells the page's probe, directly in the
/// page and over a `BroadcastChannel` from a worker. Every tab of the origin
/// hears a channel, so a worker a ticket page marked (`ticket-stamp=<page>`
/// as its URL's fragment) reports on that page's own; any other on the
/// origin's, with its URL, which a page counts only for a script it
/// started. A body that loaded but never ran (a module whose imports failed
/// to resolve) never says so.
pub fn ran_marker(hash: &crate::ticket::Hash) -> String {
    format!(
        "\n;try{{(self.__ticketStampRan||(h=>{{const m=/[#&]ticket-stamp=(\\w+)$/.exec(self.location.hash);new BroadcastChannel(\"ticket-stamp\"+(m?\":\"+m[1]:\"\")).postMessage({{ran:h,from:self.location.href}})}}))(\"{}\")}}catch(_){{}}\n",
        hash.to_hex()
    )
}

/// A served body without its [`ran_marker`]: the stored body, for whoever
/// checks what the proxy served against the hash it was uploaded with.
pub fn without_ran_marker<'a>(
    served: &'a [u8],
    hash: &crate::ticket::Hash,
) -> std::borrow::Cow<'a, [u8]> {
    // By its shape, not its text: a body served before the marker's text
    // last changed (a cache, a proxy of the fleet not yet upgraded) comes
    // off as well. It starts with `START`, ends with the hash's call, and
    // holds no line break in between.
    const START: &[u8] = b"\n;try{(self.__ticketStampRan||";
    let end = format!("(\"{}\")}}catch(_){{}}\n", hash.to_hex());
    let Some(at) = served.windows(START.len()).rposition(|w| w == START) else {
        return std::borrow::Cow::Borrowed(served);
    };
    let rest = &served[at + 1..];
    let Some(len) = rest.iter().position(|&b| b == b'\n') else {
        return std::borrow::Cow::Borrowed(served);
    };
    let line_end = at + 1 + len + 1;
    if !served[..line_end].ends_with(end.as_bytes()) {
        return std::borrow::Cow::Borrowed(served);
    }
    let mut body = Vec::with_capacity(served.len() - (line_end - at));
    body.extend_from_slice(&served[..at]);
    body.extend_from_slice(&served[line_end..]);
    std::borrow::Cow::Owned(body)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn page_tokens_are_read_strictly() {
        let t = PageToken {
            minute_ms: 29_946_172 * 60_000,
            nonce: 0x00ab_cdef_0123_4567,
        };
        assert_eq!(t.text(), "29946172.00abcdef01234567");
        assert_eq!(PageToken::parse(&t.text()), Some(t));
        for bad in [
            "",
            ".",
            "29946172",
            "29946172.",
            ".00abcdef01234567",
            "29946172.00ABCDEF01234567",
            "29946172.00abcdef0123456",
            "29946172.00abcdef012345678",
            "-1.00abcdef01234567",
            "+1.00abcdef01234567",
            "1234567890123.00abcdef01234567",
            "1.00abcdef01234567.1",
            "1.00abcdef0123456g",
            "1 .00abcdef01234567",
        ] {
            assert_eq!(PageToken::parse(bad), None, "{bad}");
        }
        let report = |token: &str| {
            Report::parse(
                format!(
                    r#"{{"v":1,"ticket":"A-1","view":"prod","side":"ticket","token":"{token}"}}"#
                )
                .as_bytes(),
            )
        };
        assert_eq!(report(&t.text()).unwrap().token, t.text());
        assert!(report("").is_ok(), "a page without server timing");
        assert!(report("x").unwrap_err().contains("`token`"));
    }

    #[test]
    fn the_marker_comes_off_where_it_went_in() {
        let body = "export {}\n//# sourceMappingURL=a.js.map\n";
        let h = crate::ticket::Hash::of(body.as_bytes());
        let served = format!(
            "export {{}}\n{}//# sourceMappingURL=a.js.map\n",
            ran_marker(&h)
        );
        assert_eq!(&*without_ran_marker(served.as_bytes(), &h), body.as_bytes());
        assert_eq!(&*without_ran_marker(b"plain", &h), b"plain");
        // A marker of an earlier text (a body a cache kept) comes off too;
        // one for another hash, or broken across lines, does not.
        let earlier = format!(
            "export {{}}\n\n;try{{(self.__ticketStampRan||(h=>new BroadcastChannel(\"ticket-stamp\").postMessage({{ran:h}})))(\"{}\")}}catch(_){{}}\n//# sourceMappingURL=a.js.map\n",
            h.to_hex()
        );
        assert_eq!(
            &*without_ran_marker(earlier.as_bytes(), &h),
            body.as_bytes()
        );
        let other = crate::ticket::Hash::of(b"other");
        assert_eq!(
            &*without_ran_marker(served.as_bytes(), &other),
            served.as_bytes()
        );
        let broken = served.replacen("catch(_){}", "\ncatch(_){}", 1);
        assert_eq!(
            &*without_ran_marker(broken.as_bytes(), &h),
            broken.as_bytes()
        );
    }

    use super::*;

    fn h(c: char) -> String {
        std::iter::repeat_n(c, 64).collect()
    }

    #[test]
    fn reports_are_read_with_bounds() {
        let ok = format!(
            r#"{{"v":1,"ticket":"TKT-1","view":"dev","side":"ticket","page":"/cart?user=ann",
                "modules":{{"expected":2,"ran":["{a}","{a}"],"production":["/org/navbar.js"]}},
                "errors":[{{"kind":"error","message":"boom\u0000","source":"/x.js","line":3}}],
                "error_count":4}}"#,
            a = h('a')
        );
        let r = Report::parse(ok.as_bytes()).unwrap();
        let rec = r.record(TicketKey::parse("TKT-1").unwrap(), Stage::Dev, 61_000);
        assert_eq!(rec.page, "/cart", "no query is kept");
        assert_eq!(rec.ran, 1);
        assert_eq!(rec.errors[0].message, "boom");
        assert_eq!(
            rec.summary(),
            "1 of 2 ran: production's /org/navbar.js ran instead; 4 errors: boom"
        );
        // A preview's view counts for no rollout; the same view of a
        // production page does.
        let c = ViewCount::of(&rec);
        assert_eq!(
            (c.minute_ms, c.views, c.erring_views, c.errors),
            (60_000, 0, 0, 0)
        );
        let prod = ViewRecord {
            view: "prod".into(),
            ..rec.clone()
        };
        let c = ViewCount::of(&prod);
        assert_eq!(
            (c.minute_ms, c.views, c.erring_views, c.errors),
            (60_000, 1, 1, 4)
        );

        for bad in [
            "[]".to_string(),
            r#"{"v":2,"ticket":"T-1","view":"dev","side":"ticket"}"#.to_string(),
            r#"{"v":1,"ticket":"T-1","view":"admin","side":"ticket"}"#.to_string(),
            r#"{"v":1,"ticket":"T-1","view":"dev","side":"me"}"#.to_string(),
            r#"{"v":1,"ticket":"T-1","view":"dev","side":"ticket","page":"http://x"}"#.to_string(),
            r#"{"v":1,"ticket":"T-1","view":"dev","side":"ticket","modules":{"ran":["x"]}}"#
                .to_string(),
            format!(
                r#"{{"v":1,"ticket":"T-1","view":"dev","side":"ticket","page":"/{}"}}"#,
                "a".repeat(MAX_REPORT_BYTES)
            ),
        ] {
            assert!(Report::parse(bad.as_bytes()).is_err(), "{bad:.80}");
        }
    }

    #[test]
    fn a_worklet_is_named_as_not_seen_never_as_unused() {
        let r = r#"{"v":1,"ticket":"T-1","view":"dev","side":"ticket",
                    "modules":{"expected":1,"worklets":["/src/processor.js"]}}"#;
        let rec = Report::parse(r.as_bytes()).unwrap().record(
            TicketKey::parse("TK-1").unwrap(),
            Stage::Dev,
            0,
        );
        assert_eq!(
            rec.summary(),
            "none of its 1 modules seen running; not seen: what worklet /src/processor.js ran \
             (worklets cannot report), no errors"
        );
        let many = format!(
            r#"{{"v":1,"ticket":"T-1","view":"dev","side":"ticket","modules":{{"worklets":[{}]}}}}"#,
            vec!["\"/w.js\""; MAX_PRODUCTION + 1].join(",")
        );
        assert!(Report::parse(many.as_bytes()).is_err());
    }

    #[test]
    fn production_beside_the_tickets_own_is_named_and_bounded() {
        let hash = "a".repeat(64);
        let r = format!(
            r#"{{"v":1,"ticket":"T-1","view":"dev","side":"ticket",
                "modules":{{"expected":1,"ran":["{hash}"],"production_also":["/src/y.js"]}}}}"#
        );
        let rec = Report::parse(r.as_bytes()).unwrap().record(
            TicketKey::parse("TK-1").unwrap(),
            Stage::Dev,
            0,
        );
        assert_eq!(
            rec.summary(),
            "1 of 1 ran; production's /src/y.js also loaded, no errors"
        );
        let many = format!(
            r#"{{"v":1,"ticket":"T-1","view":"dev","side":"ticket","modules":{{"production_also":[{}]}}}}"#,
            vec!["\"/y.js\""; MAX_PRODUCTION + 1].join(",")
        );
        assert!(Report::parse(many.as_bytes()).is_err());
    }

    #[test]
    fn an_update_counts_only_what_is_new() {
        let first = r#"{"v":1,"ticket":"T-1","view":"prod","side":"production","error_count":0}"#;
        let later = r#"{"v":1,"ticket":"T-1","view":"prod","side":"production","update":true,
                        "previous_errors":0,"error_count":2}"#;
        let key = TicketKey::parse("TK-1").unwrap();
        let a = Report::parse(first.as_bytes())
            .unwrap()
            .record(key.clone(), Stage::Qa, 0);
        let b = Report::parse(later.as_bytes())
            .unwrap()
            .record(key, Stage::Qa, 0);
        let (ca, cb) = (ViewCount::of(&a), ViewCount::of(&b));
        assert_eq!((ca.views, ca.erring_views, ca.errors), (1, 0, 0));
        assert_eq!((cb.views, cb.erring_views, cb.errors), (0, 1, 2));
    }

    #[test]
    fn a_view_that_loads_the_tickets_files_is_counted_once_as_such() {
        let key = TicketKey::parse("TK-1").unwrap();
        let count = |body: &str| {
            let r = Report::parse(body.as_bytes()).unwrap();
            let c = ViewCount::of(&r.record(key.clone(), Stage::Prod, 0));
            (c.views, c.touched_views, c.touched_erring)
        };
        let base = r#""v":1,"ticket":"T-1","view":"prod","side":"ticket""#;
        // A first report that loaded the file, with an error.
        assert_eq!(
            count(&format!(r#"{{{base},"touched":true,"error_count":1}}"#)),
            (1, 1, 1)
        );
        // Its update, with more errors: nothing new to count as touched.
        assert_eq!(
            count(&format!(
                r#"{{{base},"update":true,"touched":true,"previously_touched":true,
                    "previous_errors":1,"error_count":3}}"#
            )),
            (0, 0, 0)
        );
        // A view that loaded the file later (a route), and erred then: one
        // touched view, erring, from its update.
        assert_eq!(
            count(&format!(
                r#"{{{base},"update":true,"touched":true,"previously_touched":false,
                    "previous_errors":0,"error_count":1}}"#
            )),
            (0, 1, 1)
        );
        // Touched before, erring only now: the erring is new.
        assert_eq!(
            count(&format!(
                r#"{{{base},"update":true,"touched":true,"previously_touched":true,
                    "previous_errors":0,"error_count":1}}"#
            )),
            (0, 0, 1)
        );
        // A first report cannot claim a past: `previously_touched` is read
        // only on an update.
        assert_eq!(
            count(&format!(
                r#"{{{base},"touched":true,"previously_touched":true,"error_count":1}}"#
            )),
            (1, 1, 1)
        );
        // A preview (dev, qa) counts for no rollout.
        assert_eq!(
            count(r#"{"v":1,"ticket":"T-1","view":"dev","side":"ticket","touched":true}"#),
            (0, 0, 0)
        );
    }
}
