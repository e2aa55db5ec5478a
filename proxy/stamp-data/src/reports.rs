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
use stamp_model::views::{PagesSeen, Report, Side, ViewRecord, MAX_REPORT_BYTES};
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
/// side and minute. Each client counts within the same per-client limits
/// as its reports, for sent pages and heard ones apart: a client that
/// fetches pages without running them (or floods reports) cannot make
/// either side look silent or lively by more than a visitor's share.
#[derive(Default)]
struct Seen {
    sent_by: HashMap<IpAddr, Bucket>,
    heard_by: HashMap<IpAddr, Bucket>,
    counts: HashMap<(TicketKey, Side, u64), (u64, u64)>,
}

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
    /// ticket rolling out and this visitor's side of it.
    pub fn sent(&self, sides: &[(TicketKey, Side)], client: Option<IpAddr>) {
        self.saw(sides, client, true);
    }

    fn saw(&self, sides: &[(TicketKey, Side)], client: Option<IpAddr>, sent: bool) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let seen = &mut *seen;
        if let Some(ip) = client {
            let by = if sent {
                &mut seen.sent_by
            } else {
                &mut seen.heard_by
            };
            if !per_client(by, ip, &self.limits) {
                return;
            }
        }
        let now = now_ms();
        let minute = now - now % 60_000;
        for (ticket, side) in sides {
            let c = seen
                .counts
                .entry((ticket.clone(), *side, minute))
                .or_default();
            if sent {
                c.0 += 1;
            } else {
                c.1 += 1;
            }
            metrics::rollout_pages(ticket, *side, if sent { "sent" } else { "heard" });
        }
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
            self.saw(&[(key.clone(), report.side)], client, false);
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
    fn pages_sent_and_heard_are_counted_per_side_within_each_clients_share() {
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
        // One client's pages count up to its share, then not at all: a
        // crawler on one side cannot make that side look silent.
        for _ in 0..10 {
            r.sent(&sides, Some(a));
        }
        r.sent(&sides, Some(b));
        // Heard has its own share: the client's pages do not use it up.
        r.saw(&[(one.clone(), Side::Ticket)], Some(a), false);
        r.saw(&[(one.clone(), Side::Ticket)], None, false);
        let mut seen = r.take_seen();
        seen.sort_by(|x, y| x.ticket.as_str().cmp(y.ticket.as_str()));
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(
            (&seen[0].ticket, seen[0].side, seen[0].sent, seen[0].heard),
            (&one, Side::Ticket, 4, 2)
        );
        assert_eq!(
            (&seen[1].ticket, seen[1].side, seen[1].sent, seen[1].heard),
            (&two, Side::Production, 4, 0)
        );
        assert_eq!(seen[0].minute_ms % 60_000, 0);
        // Taken once: the next flush has nothing.
        assert!(r.take_seen().is_empty());
    }
}
