//! `POST /__stamp/report`: what pages ran, as their probes measured it.
//!
//! A report is untrusted input from anyone who can reach the proxy: it is
//! read bounded ([`MAX_REPORT_BYTES`]), checked field by field, accepted
//! only for a ticket the snapshot knows, and rate-limited (in the whole
//! process, and per client address, which is never stored). Accepted
//! reports are queued (bounded; a full queue drops and counts) and written
//! to the store in batches by [`Reports::flush_forever`], so a burst of page
//! views costs the store one write a second, not one per view.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use stamp_model::ticket::TicketKey;
use stamp_model::views::{PageToken, PagesSeen, Report, Side, ViewRecord, MAX_REPORT_BYTES};
use stamp_store::{now_ms, SharedStore};
use tokio::sync::mpsc;

use crate::metrics;
use crate::snapshot::Snapshot;

/// Reports queued for the store, at most.
const QUEUE: usize = 4096;
/// Written per store call, at most.
const BATCH: usize = 512;

/// A token bucket: `rate` per second, up to `burst`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: f64) -> Bucket {
        Bucket {
            tokens: burst,
            at: Instant::now(),
        }
    }

    fn take(&mut self, rate: f64, burst: f64) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * rate).min(burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// How many reports are let in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Per second, in the whole process, and the burst above it.
    pub rate: f64,
    pub burst: f64,
    /// Per minute from one client address, and its burst.
    pub per_client_per_minute: f64,
    pub per_client_burst: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            rate: 50.0,
            burst: 200.0,
            per_client_per_minute: 30.0,
            per_client_burst: 10.0,
        }
    }
}

struct Gate {
    all: Bucket,
    clients: HashMap<IpAddr, Bucket>,
}

/// One client's share of `clients`, at the per-client limits.
fn per_client(clients: &mut HashMap<IpAddr, Bucket>, ip: IpAddr, l: &Limits) -> bool {
    if clients.len() > 10_000 {
        // Bounded memory: forgetting is the worst a flood gets.
        clients.clear();
    }
    let b = clients
        .entry(ip)
        .or_insert_with(|| Bucket::full(l.per_client_burst));
    b.take(l.per_client_per_minute / 60.0, l.per_client_burst)
}

/// What this proxy saw of rollout pages since its last flush: sampled
/// pages sent with the probe, and first reports heard back, per ticket,
/// side and the minute the page was sent. A client's pages count within
/// the per-client limit of its reports, so a client that fetches pages
/// without running them (a crawler that keeps its cookie, on one side)
/// cannot make that side look silent by more than a visitor's share. A
/// report is heard only with the token its page was sent with, once.
#[derive(Default)]
struct Seen {
    sent_by: HashMap<IpAddr, Bucket>,
    counts: HashMap<(TicketKey, Side, u64), (u64, u64)>,
    /// The (page, ticket) pairs heard from, this and the last generation
    /// (each up to [`HEARD_KEPT`]; a page's token stops counting after
    /// [`TOKEN_LIFETIME_MS`] anyway).
    heard: std::collections::HashSet<(u64, TicketKey)>,
    heard_before: std::collections::HashSet<(u64, TicketKey)>,
}

/// Pages heard from, remembered per generation.
const HEARD_KEPT: usize = 100_000;
/// How long after its minute a page's token is heard: a report later than
/// that is not (a page left open for hours and then reported, or a token
/// replayed).
const TOKEN_LIFETIME_MS: u64 = 30 * 60_000;

/// Why a report was not taken, as the answer says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 400: what is wrong with it.
    Malformed(String),
    /// 404: no open ticket by that key.
    UnknownTicket,
    /// 429: too many reports.
    Limited,
}

impl Refusal {
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Malformed(_) => 400,
            Refusal::UnknownTicket => 404,
            Refusal::Limited => 429,
        }
    }

    pub fn message(&self) -> String {
        match self {
            Refusal::Malformed(why) => format!("ticket-stamp: {why}\n"),
            Refusal::UnknownTicket => "ticket-stamp: no open ticket by that key\n".into(),
            Refusal::Limited => "ticket-stamp: too many reports; try later\n".into(),
        }
    }
}

/// The intake: limits, and the queue to the store.
pub struct Reports {
    limits: Limits,
    gate: Mutex<Gate>,
    tx: mpsc::Sender<ViewRecord>,
    rx: tokio::sync::Mutex<mpsc::Receiver<ViewRecord>>,
    seen: Mutex<Seen>,
}

impl std::fmt::Debug for Reports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reports")
            .field("limits", &self.limits)
            .finish()
    }
}

impl Default for Reports {
    fn default() -> Self {
        Reports::new(Limits::default())
    }
}

impl Seen {
    fn count(&mut self, ticket: &TicketKey, side: Side, minute_ms: u64, sent: bool) {
        let c = self
            .counts
            .entry((ticket.clone(), side, minute_ms))
            .or_default();
        if sent {
            c.0 += 1;
        } else {
            c.1 += 1;
        }
        metrics::rollout_pages(ticket, side, if sent { "sent" } else { "heard" });
    }
}

impl Reports {
    pub fn new(limits: Limits) -> Reports {
        let (tx, rx) = mpsc::channel(QUEUE);
        Reports {
            gate: Mutex::new(Gate {
                all: Bucket::full(limits.burst),
                clients: HashMap::new(),
            }),
            limits,
            tx,
            rx: tokio::sync::Mutex::new(rx),
            seen: Mutex::new(Seen::default()),
        }
    }

    /// Counts a sampled production page sent with the probe, once for each
    /// ticket rolling out and this visitor's side of it, and gives the
    /// token the page is sent with (`None` past the client's share: that
    /// page is neither sent nor heard).
    pub fn sent(&self, sides: &[(TicketKey, Side)], client: Option<IpAddr>) -> Option<PageToken> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(ip) = client {
            if !per_client(&mut seen.sent_by, ip, &self.limits) {
                return None;
            }
        }
        let now = now_ms();
        let token = PageToken {
            minute_ms: now - now % 60_000,
            nonce: rand::random(),
        };
        for (ticket, side) in sides {
            seen.count(ticket, *side, token.minute_ms, true);
        }
        Some(token)
    }

    /// Counts a first report of a page sent with `token` as heard, in the
    /// minute the page was sent: once per page and ticket, and only while
    /// the token is young enough to be a page's own.
    fn heard(&self, token: &str, ticket: &TicketKey, side: Side) {
        let Some(token) = PageToken::parse(token) else {
            return;
        };
        let now = now_ms();
        if token.minute_ms > now || token.minute_ms + TOKEN_LIFETIME_MS < now {
            return;
        }
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let pair = (token.nonce, ticket.clone());
        if seen.heard_before.contains(&pair) || !seen.heard.insert(pair) {
            return;
        }
        if seen.heard.len() >= HEARD_KEPT {
            seen.heard_before = std::mem::take(&mut seen.heard);
        }
        seen.count(ticket, side, token.minute_ms, false);
    }

    /// What was seen since the last call, to add to the store's counts.
    pub fn take_seen(&self) -> Vec<PagesSeen> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.counts
            .drain()
            .map(|((ticket, side, minute_ms), (sent, heard))| PagesSeen {
                ticket,
                side,
                minute_ms,
                sent,
                heard,
            })
            .collect()
    }

    fn admit(&self, client: Option<IpAddr>) -> bool {
        let l = &self.limits;
        let mut g = self.gate.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(ip) = client {
            if !per_client(&mut g.clients, ip, l) {
                return false;
            }
        }
        g.all.take(l.rate, l.burst)
    }

    /// Reads, checks, limits and queues one report.
    pub fn take(
        &self,
        body: &Bytes,
        client: Option<IpAddr>,
        snapshot: &Snapshot,
    ) -> Result<(), Refusal> {
        if body.len() > MAX_REPORT_BYTES {
            return Err(Refusal::Malformed(format!(
                "a report is at most {MAX_REPORT_BYTES} bytes"
            )));
        }
        let report = Report::parse(body).map_err(Refusal::Malformed)?;
        let key = TicketKey::parse(&report.ticket)
            .map_err(|e| Refusal::Malformed(format!("`ticket`: {e}")))?;
        let Some(ticket) = snapshot.tickets.get(&key) else {
            return Err(Refusal::UnknownTicket);
        };
        // A production page of a ticket rolling out was heard from, before
        // any limit or queue can lose its report: what tells a silent side.
        if report.view == "prod" && !report.update && snapshot.rolling.iter().any(|r| r.key == key)
        {
            self.heard(&report.token, &key, report.side);
        }
        if !self.admit(client) {
            metrics::count(&metrics::REPORTS, "limited");
            return Err(Refusal::Limited);
        }
        let record = report.record(key, ticket.stage, now_ms());
        // (Production's pages only, as the rollout counts them: a preview
        // of the ticket rolling out is no visitor of it.)
        if record.view == "prod" && snapshot.rolling.iter().any(|r| r.key == record.ticket) {
            metrics::rollout_view(&record);
        }
        match self.tx.try_send(record) {
            Ok(()) => metrics::count(&metrics::REPORTS, "accepted"),
            // A store that cannot keep up loses reports, never requests.
            Err(_) => metrics::count(&metrics::REPORTS, "dropped"),
        }
        Ok(())
    }

    /// Adds what was seen of rollout pages to the store's counts, every
    /// `every`, until the process ends. A failed write is dropped (the
    /// counts are a signal, no state anyone serves from).
    pub async fn flush_seen_forever(&self, store: SharedStore, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            let seen = self.take_seen();
            if seen.is_empty() {
                continue;
            }
            if let Err(e) = store.record_seen(&seen).await {
                log::warn!("rollout page counts not stored ({} rows): {e}", seen.len());
            }
        }
    }

    /// Writes queued reports to the store in batches, every `every`, until
    /// the process ends. A failed write is retried once on the next round,
    /// then dropped (reports are no state anyone depends on to serve).
    pub async fn flush_forever(&self, store: SharedStore, every: Duration) {
        let mut rx = self.rx.lock().await;
        let mut held: Vec<ViewRecord> = Vec::new();
        loop {
            if held.is_empty() {
                match rx.recv().await {
                    Some(r) => held.push(r),
                    None => return,
                }
            }
            tokio::time::sleep(every).await;
            while held.len() < BATCH {
                match rx.try_recv() {
                    Ok(r) => held.push(r),
                    Err(_) => break,
                }
            }
            match store.record_views(&held).await {
                Ok(()) => held.clear(),
                Err(e) => {
                    log::warn!("page reports not stored ({} held): {e}", held.len());
                    metrics::REPORTS
                        .with_label_values(&["store-failed"])
                        .inc_by(held.len() as u64);
                    held.clear();
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refill_at_their_rate_and_stop_at_their_burst() {
        let mut b = Bucket::full(2.0);
        assert!(b.take(0.0, 2.0) && b.take(0.0, 2.0));
        assert!(!b.take(0.0, 2.0));
        b.at -= Duration::from_secs(10);
        assert!(b.take(1.0, 2.0) && b.take(1.0, 2.0));
        assert!(!b.take(1.0, 2.0), "never more than the burst");
    }

    #[test]
    fn one_client_is_limited_before_everyone_is() {
        let r = Reports::new(Limits {
            rate: 1000.0,
            burst: 1000.0,
            per_client_per_minute: 1.0,
            per_client_burst: 2.0,
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(r.admit(Some(a)) && r.admit(Some(a)));
        assert!(!r.admit(Some(a)));
        assert!(r.admit(Some(b)));
    }

    #[test]
    fn pages_sent_and_heard_are_counted_in_the_minute_each_page_was_sent() {
        let r = Reports::new(Limits {
            rate: 1000.0,
            burst: 1000.0,
            per_client_per_minute: 1.0,
            per_client_burst: 3.0,
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let one = TicketKey::parse("ROLL-1").unwrap();
        let two = TicketKey::parse("ROLL-2").unwrap();
        let sides = [(one.clone(), Side::Ticket), (two.clone(), Side::Production)];
        // One client's pages count up to its share, then not at all (and
        // get no token): a crawler on one side cannot make it look silent.
        let tokens: Vec<Option<PageToken>> = (0..10).map(|_| r.sent(&sides, Some(a))).collect();
        assert_eq!(tokens.iter().flatten().count(), 3);
        assert!(tokens[3..].iter().all(Option::is_none));
        let first = tokens[0].unwrap();
        assert_eq!(first.minute_ms % 60_000, 0);
        assert_ne!(first.nonce, tokens[1].unwrap().nonce, "each page its own");
        let from_b = r.sent(&sides, Some(b)).unwrap();
        // Heard: once per page and ticket, whatever the client's share.
        r.heard(&first.text(), &one, Side::Ticket);
        r.heard(&first.text(), &one, Side::Ticket);
        r.heard(&first.text(), &two, Side::Production);
        for _ in 0..5 {
            r.heard(&from_b.text(), &one, Side::Ticket);
        }
        // No token, a malformed one, one from the future or from long ago:
        // not heard.
        r.heard("", &one, Side::Ticket);
        r.heard("x.y", &one, Side::Ticket);
        let now = now_ms();
        for minute_ms in [
            now - now % 60_000 + 120_000,
            now - now % 60_000 - TOKEN_LIFETIME_MS - 60_000,
        ] {
            let t = PageToken {
                minute_ms,
                nonce: 7,
            };
            r.heard(&t.text(), &one, Side::Ticket);
        }
        // A late report counts in the minute its page was sent.
        let earlier = PageToken {
            minute_ms: first.minute_ms - 5 * 60_000,
            nonce: 9,
        };
        r.heard(&earlier.text(), &one, Side::Ticket);
        let mut seen = r.take_seen();
        seen.sort_by_key(|p| (p.ticket.as_str().to_string(), p.minute_ms));
        let rows: Vec<(&str, Side, u64, u64, u64)> = seen
            .iter()
            .map(|p| (p.ticket.as_str(), p.side, p.minute_ms, p.sent, p.heard))
            .collect();
        // (A minute may turn between the first and the last page sent.)
        let sent_one: u64 = seen
            .iter()
            .filter(|p| p.ticket == one)
            .map(|p| p.sent)
            .sum();
        let heard_one: u64 = seen
            .iter()
            .filter(|p| p.ticket == one && p.minute_ms >= first.minute_ms)
            .map(|p| p.heard)
            .sum();
        assert_eq!((sent_one, heard_one), (4, 2), "{rows:?}");
        assert!(
            rows.contains(&("ROLL-1", Side::Ticket, earlier.minute_ms, 0, 1)),
            "{rows:?}"
        );
        let two_rows: u64 = seen
            .iter()
            .filter(|p| p.ticket == two)
            .map(|p| p.heard)
            .sum();
        assert_eq!(two_rows, 1, "{rows:?}");
        // Taken once: the next flush has nothing, and a page heard stays
        // heard.
        assert!(r.take_seen().is_empty());
        r.heard(&first.text(), &one, Side::Ticket);
        assert!(r.take_seen().is_empty());
    }
}
