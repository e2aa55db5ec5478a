//! What the user reads: upload lines and summaries, tickets, tables, and the
//! same as JSON with `--json`.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use stamp_model::Stage;

use crate::client::Ticket;

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `640 B`, `1.2 KiB`, `3.4 MiB`.
pub fn size(n: u64) -> String {
    if n < 1024 {
        format!("{n} B")
    } else if n < 1024 * 1024 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", n as f64 / (1024.0 * 1024.0))
    }
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of a Unix time in milliseconds.
pub fn date_time(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `HH:MM:SS` (UTC) of now.
pub fn clock() -> String {
    date_time(now_ms())[11..].to_string()
}

/// `just now`, `42 s ago`, `5 min ago`, `3 h ago`, `2 d ago`.
pub fn ago(ms: u64, now: u64) -> String {
    let s = now.saturating_sub(ms) / 1000;
    match s {
        0..=4 => "just now".into(),
        5..=59 => format!("{s} s ago"),
        60..=3599 => format!("{} min ago", s / 60),
        3600..=86_399 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}

/// The site's address as the server sees it (`http://host:port`), from a
/// ticket's links.
pub fn site(t: &Ticket, server: &str) -> String {
    t.links
        .values()
        .find_map(|l| l.split_once("/?").map(|(b, _)| b.to_string()))
        .unwrap_or_else(|| server.to_string())
}

/// The link that shows the ticket in its current stage.
pub fn share_link(t: &Ticket, server: &str) -> Option<String> {
    match t.stage {
        Stage::Dev => t.links.get("dev").cloned(),
        Stage::Qa => t.links.get("qa").cloned(),
        Stage::Prod => Some(format!("{}/", site(t, server))),
        Stage::Closed => None,
    }
}

/// A one-line account of where a ticket stands.
pub fn standing(t: &Ticket, server: &str) -> String {
    match t.stage {
        Stage::Dev => format!(
            "{} is in dev: see it at {}",
            t.key,
            share_link(t, server).unwrap_or_default()
        ),
        Stage::Qa => format!(
            "{} is in qa: share {} with QA",
            t.key,
            share_link(t, server).unwrap_or_default()
        ),
        Stage::Prod => match &t.rollout {
            Some(r) => format!(
                "{} is rolling out: {}% of {}'s visitors get it (stamp {} --rollout N for more, --revert to abort)",
                t.key,
                r.percent,
                share_link(t, server)
                    .and_then(|l| l.split('?').next().map(str::to_string))
                    .unwrap_or_default(),
                t.key
            ),
            None => format!(
                "{} is released: {} serves it to every visitor",
                t.key,
                share_link(t, server).unwrap_or_default()
            ),
        },
        Stage::Closed => format!("{} is closed (an --update re-opens it in dev)", t.key),
    }
}

/// How a released ticket reaches visitors: through the production overlay,
/// or settled (the origin itself now serves its code).
fn released(t: &Ticket) -> String {
    if let Some(r) = &t.rollout {
        return format!("rolling out: {}% of visitors", r.percent);
    }
    match &t.overlay {
        Some(o) if o.live == 0 && o.retired > 0 => "settled: the origin serves it".into(),
        Some(o) if o.retired > 0 => format!(
            "live through the overlay: {} module(s), {} settled",
            o.live, o.retired
        ),
        _ if t.live_in_production == Some(true) => "live through the overlay".into(),
        _ => "released".into(),
    }
}

/// Left-aligned columns.
/// What production served, change by change, newest first.
pub fn production_history(h: &stamp_model::wire::ProductionHistory) -> String {
    if h.commits.is_empty() {
        return "production history (UTC): nothing released yet\n".to_string();
    }
    let rows: Vec<Vec<String>> = h
        .commits
        .iter()
        .map(|c| {
            vec![
                format!("  {}", date_time(c.at_ms)),
                c.id.chars().take(10).collect(),
                c.summary.clone(),
                if c.released.is_empty() {
                    "released: none".to_string()
                } else {
                    format!("released: {}", c.released.join(", "))
                },
                format!(
                    "{} override{}",
                    c.overrides,
                    if c.overrides == 1 { "" } else { "s" }
                ),
            ]
        })
        .collect();
    format!("production history (UTC), newest first\n{}", table(&rows))
}

fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The `--list` table: tickets by stage, with module counts, last change
/// and share links.
pub fn list(tickets: &[Ticket], stages: &[Stage], server: &str) -> String {
    if tickets.is_empty() {
        let names: Vec<&str> = stages.iter().map(|s| s.as_str()).collect();
        return format!("no tickets in {}\n", names.join(" or "));
    }
    let mut sorted: Vec<&Ticket> = tickets.iter().collect();
    sorted.sort_by_key(|t| (t.stage, std::cmp::Reverse(t.updated_ms)));
    let now = now_ms();
    let mut rows = vec![vec![
        "STAGE".to_string(),
        "TICKET".into(),
        "MODULES".into(),
        "LAST CHANGE".into(),
        "LINK".into(),
        "LAST VIEW".into(),
    ]];
    for t in sorted {
        let count = t
            .modules
            .get(if t.stage == Stage::Closed {
                &Stage::Dev
            } else {
                &t.stage
            })
            .map_or(0, Vec::len);
        let stage = if t.stage == Stage::Prod {
            match &t.overlay {
                Some(o) if o.live == 0 && o.retired > 0 => "prod (settled)".to_string(),
                Some(o) if o.retired > 0 => "prod (partly settled)".to_string(),
                _ if t.live_in_production == Some(true) => "prod (live)".to_string(),
                _ => "prod".to_string(),
            }
        } else {
            t.stage.to_string()
        };
        rows.push(vec![
            stage,
            t.key.to_string(),
            count.to_string(),
            ago(t.updated_ms, now),
            share_link(t, server).unwrap_or_else(|| "-".into()),
            t.views
                .as_ref()
                .and_then(|v| v.first())
                .map_or_else(|| "-".into(), |v| view_line(v, now)),
        ]);
    }
    table(&rows)
}

/// A page view in one line: when, which view and page, what ran, errors.
pub fn view_line(v: &stamp_model::views::ViewRecord, now: u64) -> String {
    format!(
        "{} {} {}: {}",
        ago(v.at_ms, now),
        v.view,
        v.page,
        v.summary()
    )
}

/// One ticket: stage, links, overrides per stage with their URLs, history.
pub fn ticket(t: &Ticket, stages: &[Stage], server: &str) -> String {
    let site = site(t, server);
    let mut out = format!(
        "{}  {}  version {}  (allowed: {})\n",
        t.key,
        if t.stage == Stage::Prod {
            format!("prod ({})", released(t))
        } else {
            t.stage.to_string()
        },
        t.version,
        t.allowed_actions
            .iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (stage, link) in &t.links {
        out.push_str(&format!("  {stage:<5} {link}\n"));
    }
    if t.stage == Stage::Prod {
        out.push_str(&format!("  prod  {site}/\n"));
    }
    if t.rollout.is_some() {
        out.push_str(&format!("\nrollout\n  {}\n", rollout_line(t)));
    }
    for stage in [Stage::Dev, Stage::Qa, Stage::Prod] {
        if !stages.contains(&stage) {
            continue;
        }
        let Some(mods) = t.modules.get(&stage) else {
            continue;
        };
        out.push_str(&format!(
            "\n{stage} ({} module{})\n",
            mods.len(),
            if mods.len() == 1 { "" } else { "s" }
        ));
        let rows: Vec<Vec<String>> = mods
            .iter()
            .map(|m| {
                let name = if m.specifier == m.path {
                    m.path.clone()
                } else {
                    format!("{} ({})", m.specifier, m.path)
                };
                vec![
                    format!("  {name}"),
                    size(m.size),
                    format!("{site}{}", m.url),
                ]
            })
            .collect();
        out.push_str(&table(&rows));
    }
    if let Some(views) = t.views.as_ref().filter(|v| !v.is_empty()) {
        out.push_str("\nlast views (what browsers ran)\n");
        let now = now_ms();
        for v in views {
            out.push_str(&format!("  {}\n", view_line(v, now)));
            for e in &v.errors {
                let place = match (e.source.is_empty(), e.line) {
                    (true, _) => String::new(),
                    (false, 0) => format!(" ({})", e.source),
                    (false, l) => format!(" ({}:{l})", e.source),
                };
                out.push_str(&format!("    {}: {}{place}\n", e.kind, e.message));
                if !e.stack.is_empty() {
                    out.push_str(&format!("      {}\n", e.stack));
                }
            }
        }
    }
    if let Some(history) = t.history.as_ref().filter(|h| !h.is_empty()) {
        out.push_str("\nhistory (UTC)\n");
        let rows: Vec<Vec<String>> = history
            .iter()
            .map(|e| {
                let moved = match (&e.from, &e.to) {
                    // A change of dev's modules, not a move.
                    (None, Some(to)) if e.event == "upload" || e.event == "delete" => {
                        format!("{to} changed")
                    }
                    (Some(f), Some(to)) if f != to => format!("{f} -> {to}"),
                    (None, Some(to)) => format!("-> {to}"),
                    (_, Some(to)) => to.to_string(),
                    _ => String::new(),
                };
                let git = match (&e.commit, &e.branch) {
                    (Some(c), Some(b)) => format!("{} on {b}", &c[..c.len().min(7)]),
                    (Some(c), None) => c[..c.len().min(7)].to_string(),
                    (None, Some(b)) => format!("on {b}"),
                    (None, None) => String::new(),
                };
                vec![
                    format!("  {}", date_time(e.at_ms)),
                    e.event.clone(),
                    moved,
                    e.actor.clone(),
                    git,
                    e.detail.clone().unwrap_or_default(),
                ]
            })
            .collect();
        out.push_str(&table(&rows));
    }
    out
}

/// How the sync reports what it does: a line per change, or JSON lines.
#[derive(Debug, Clone, Copy)]
pub struct Reporter {
    pub json: bool,
}

impl Reporter {
    fn emit(&self, v: Value) {
        println!("{v}");
    }

    pub fn uploaded(&self, name: &str, bytes: u64, sent: bool, ms: u128, hash: &str) {
        if self.json {
            self.emit(json!({"event": "upload", "module": name, "size": bytes, "hash": hash, "transfer": if sent { "sent" } else { "linked" }, "at_ms": now_ms(), "ms": ms}));
        } else {
            println!(
                "{}  upload  {name}  {}  {}  {ms} ms",
                clock(),
                size(bytes),
                if sent {
                    "sent"
                } else {
                    "linked (server had it)"
                }
            );
        }
    }

    pub fn removed(&self, name: &str, ms: u128) {
        if self.json {
            self.emit(json!({"event": "remove", "module": name, "at_ms": now_ms(), "ms": ms}));
        } else {
            println!("{}  remove  {name}  {ms} ms", clock());
        }
    }

    /// A file the server would not take; the sync goes on.
    pub fn skipped(&self, name: &str, why: &str) {
        if self.json {
            self.emit(json!({"event": "skip", "module": name, "reason": why, "at_ms": now_ms()}));
        } else {
            eprintln!("{}  skip    {name}: {why}", clock());
        }
    }

    pub fn note(&self, text: &str) {
        if self.json {
            self.emit(json!({"event": "note", "message": text, "at_ms": now_ms()}));
        } else {
            eprintln!("{text}");
        }
    }

    pub fn summary(&self, s: &Summary) {
        if self.json {
            self.emit(json!({
                "event": "synced", "ticket": s.ticket, "stage": s.stage, "uploaded": s.uploaded,
                "sent": s.sent, "linked": s.linked, "bytes_sent": s.bytes_sent, "removed": s.removed,
                "unchanged": s.unchanged, "skipped": s.skipped, "failed": s.failed, "ms": s.ms, "link": s.link,
            }));
            return;
        }
        let mut parts = vec![format!(
            "{} uploaded ({} sent, {} linked, {})",
            s.uploaded,
            s.sent,
            s.linked,
            size(s.bytes_sent)
        )];
        parts.push(format!("{} removed", s.removed));
        parts.push(format!("{} unchanged", s.unchanged));
        if s.skipped > 0 {
            parts.push(format!("{} skipped", s.skipped));
        }
        if s.failed > 0 {
            parts.push(format!("{} failed", s.failed));
        }
        println!(
            "synced {}{}: {} in {} ms",
            s.ticket,
            s.stage
                .as_ref()
                .map(|st| format!(" ({st})"))
                .unwrap_or_default(),
            parts.join(", "),
            s.ms
        );
        if let Some(l) = &s.link {
            println!("  {l}");
        }
    }
}

/// The outcome of one sync.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub ticket: String,
    pub stage: Option<stamp_model::Stage>,
    pub uploaded: usize,
    pub sent: usize,
    pub linked: usize,
    pub bytes_sent: u64,
    pub removed: usize,
    pub unchanged: usize,
    pub skipped: usize,
    pub failed: usize,
    pub ms: u128,
    pub link: Option<String>,
}

/// `stamp TKT --check`: one line per guarding policy.
pub fn checklist(v: &serde_json::Value) -> String {
    let str_of = |k: &str| v[k].as_str().unwrap_or("?").to_string();
    let verdict = if v["allowed"] == serde_json::Value::Bool(true) {
        "would be allowed"
    } else {
        "would be refused"
    };
    let mut out = format!(
        "{} {} -> {}: {verdict}\n",
        str_of("ticket"),
        str_of("from"),
        str_of("to")
    );
    if v["role_allows"] == serde_json::Value::Bool(false) {
        out.push_str("  x your role may not make this move\n");
    }
    let checks = v["checks"].as_array().cloned().unwrap_or_default();
    if checks.is_empty() {
        out.push_str("  no policy guards this move\n");
    }
    for c in &checks {
        let policy = c["policy"].as_str().unwrap_or("?");
        let reasons: Vec<&str> = c["reasons"]
            .as_array()
            .map(|a| a.iter().filter_map(|r| r.as_str()).collect())
            .unwrap_or_default();
        if c["ok"] == serde_json::Value::Bool(true) {
            out.push_str(&format!("  ok {policy}\n"));
        } else {
            for r in reasons {
                // Some policies name themselves already.
                let r = r
                    .strip_prefix(&format!("{policy}: "))
                    .unwrap_or(r)
                    .to_string();
                out.push_str(&format!("  x  {policy}: {r}\n"));
            }
        }
        for w in c["warnings"].as_array().into_iter().flatten() {
            if let Some(w) = w.as_str() {
                let w = w
                    .strip_prefix(&format!("{policy}: "))
                    .unwrap_or(w)
                    .to_string();
                out.push_str(&format!("  !  {policy}: {w}\n"));
            }
        }
    }
    out
}

/// One line on a rollout: "TKT-1: prod, 10% of production · next 25% at
/// 14:05 · healthy: ticket 0 of 240 views erred (0.0%), production …".
pub fn rollout_line(t: &Ticket) -> String {
    let Some(r) = &t.rollout else {
        return format!("{}: {} (every visitor)", t.key, t.stage);
    };
    let mut parts = vec![format!(
        "{}: {}, {}% of production",
        t.key, t.stage, r.percent
    )];
    if r.paused {
        parts.push("paused".into());
    } else if let (Some(at), Some(next)) = (r.next_at_ms, r.steps.first()) {
        let mins = at.saturating_sub(crate::output::now_ms()) / 60_000;
        parts.push(format!("next {next}% in {mins} min"));
    } else {
        parts.push("steps by hand (stamp --rollout N)".into());
    }
    if r.signal {
        parts.push(r.said.clone());
    } else {
        parts.push("no page signal (the proxy's reports.sample is 0)".into());
    }
    parts.join(" · ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_sizes() {
        assert_eq!(date_time(0), "1970-01-01 00:00:00");
        assert_eq!(date_time(1_709_251_199_000), "2024-02-29 23:59:59");
        assert_eq!(size(640), "640 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(ago(0, 300_000), "5 min ago");
        assert_eq!(ago(1000, 2000), "just now");
    }

    #[test]
    fn tables_align() {
        let t = table(&[
            vec!["a".into(), "bb".into(), "c".into()],
            vec!["ddd".into(), "e".into(), "f".into()],
        ]);
        assert_eq!(t, "a    bb  c\nddd  e   f\n");
    }
}
