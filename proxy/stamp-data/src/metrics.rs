//! The data plane's Prometheus metrics, and the text rendering of every
//! metric registered in the process (served at `/__stamp/metrics`).

use std::sync::LazyLock;

use prometheus::{
    register_histogram, register_histogram_vec, register_int_counter, register_int_counter_vec,
    register_int_gauge, Encoder, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    TextEncoder,
};

// Registration only fails on a duplicate name, which is a programming error
// caught by the first test that touches a metric.
#[allow(clippy::expect_used)]
fn must<T>(r: prometheus::Result<T>) -> T {
    r.expect("metric registration")
}

/// Requests by kind: `passthrough`, `ticket`, `overlay`, `module`, `internal`.
pub static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(register_int_counter_vec!(
        "stamp_requests_total",
        "Requests handled, by kind",
        &["kind"]
    ))
});

/// Request latency by kind, from request start to the last byte sent.
pub static LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
    must(register_histogram_vec!(
        "stamp_request_duration_seconds",
        "Request latency by kind",
        &["kind"],
        vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0]
    ))
});

/// The stamped-page cache: `hit`, `miss`, `changed` (the origin sent a new
/// page), `store`, `too-large`, `uncacheable-*` (why an answer was not kept).
pub static PAGE_CACHE: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(register_int_counter_vec!(
        "stamp_page_cache_total",
        "Stamped-page cache lookups and stores, by outcome",
        &["outcome"]
    ))
});

/// Bytes the stamped-page cache holds.
pub static PAGE_CACHE_BYTES: LazyLock<IntGauge> = LazyLock::new(|| {
    must(register_int_gauge!(
        "stamp_page_cache_bytes",
        "Bytes held by the stamped-page cache"
    ))
});

/// Page reports from probes: `accepted`, `limited`, `dropped` (the queue
/// to the store was full), `store-failed`.
pub static REPORTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(register_int_counter_vec!(
        "stamp_page_reports_total",
        "Page reports from stamped pages' probes, by outcome",
        &["outcome"]
    ))
});

/// Page rewrites by outcome: `merged`, `inserted`, `entries-only`,
/// `map-invalid`, `map-too-large`, `base-elsewhere`, `bailed-out`, `skipped-*`.
pub static REWRITES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(register_int_counter_vec!(
        "stamp_rewrites_total",
        "Page rewrites by outcome",
        &["outcome"]
    ))
});

pub static REWRITE_BYTES_IN: LazyLock<IntCounter> = LazyLock::new(|| {
    must(register_int_counter!(
        "stamp_rewrite_bytes_in_total",
        "HTML bytes fed to the rewriter (after decompression)"
    ))
});

/// What lol_html itself parsed of those bytes: early exit and leaping
/// forward the rest of a page unread (see `rewrite`). Against
/// `stamp_rewrite_bytes_in_total`, how much of an app's pages costs a parse.
pub static REWRITE_BYTES_PARSED: LazyLock<IntCounter> = LazyLock::new(|| {
    must(register_int_counter!(
        "stamp_rewrite_bytes_parsed_total",
        "HTML bytes lol_html parsed (the rest went out unread)"
    ))
});

pub static REWRITE_HEADS_REMEMBERED: LazyLock<IntCounter> = LazyLock::new(|| {
    must(register_int_counter!(
        "stamp_rewrite_heads_remembered_total",
        "Rewritten pages that began with a head remembered for their variant (not read again)"
    ))
});

pub static REWRITE_BYTES_OUT: LazyLock<IntCounter> = LazyLock::new(|| {
    must(register_int_counter!(
        "stamp_rewrite_bytes_out_total",
        "HTML bytes produced by the rewriter"
    ))
});

pub static MODULE_CACHE: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(register_int_counter_vec!(
        "stamp_module_cache_total",
        "Ticket module body lookups by result: hit, miss, unknown",
        &["result"]
    ))
});

pub static MODULE_BYTES: LazyLock<IntCounter> = LazyLock::new(|| {
    must(register_int_counter!(
        "stamp_module_bytes_total",
        "Ticket module body bytes served"
    ))
});

pub static SNAPSHOT_VERSION: LazyLock<IntGauge> = LazyLock::new(|| {
    must(register_int_gauge!(
        "stamp_snapshot_version",
        "Store version of the snapshot being served"
    ))
});

pub static SNAPSHOT_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    must(register_histogram!(
        "stamp_snapshot_rebuild_seconds",
        "Time to rebuild the snapshot after a change",
        vec![0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0]
    ))
});

pub static SNAPSHOT_REBUILDS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(register_int_counter_vec!(
        "stamp_snapshot_rebuilds_total",
        "Snapshots made after a change: from what changed (`changes`) or from the whole state (`whole`)",
        &["from"]
    ))
});

pub static ORIGIN_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(register_int_counter_vec!(
        "stamp_origin_errors_total",
        "Requests that failed at the origin, by status sent",
        &["status"]
    ))
});

/// Adds one to `outcomes`' counter for `label`, looked up once per thread:
/// a labelled lookup hashes its label and takes a lock, every time. For
/// the fixed labels of the data path (never removed), not for labels named
/// by users (a ticket's key).
pub fn count(outcomes: &'static LazyLock<IntCounterVec>, label: &'static str) {
    thread_local! {
        static SEEN: std::cell::RefCell<Vec<(usize, &'static str, IntCounter)>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }
    /// More distinct labels than the data path has: the rest are looked up.
    const SEEN_MAX: usize = 64;
    let vec: &'static IntCounterVec = outcomes;
    let id = std::ptr::from_ref(vec) as usize;
    SEEN.with_borrow_mut(|seen| {
        if let Some((_, _, c)) = seen.iter().find(|(v, l, _)| *v == id && *l == label) {
            c.inc();
            return;
        }
        let c = vec.with_label_values(&[label]);
        c.inc();
        if seen.len() < SEEN_MAX {
            seen.push((id, label, c));
        }
    });
}

/// Renders every registered metric in the Prometheus text format.
pub fn render() -> Vec<u8> {
    // Touch the lazies so a scrape lists them even before first use.
    LazyLock::force(&REQUESTS);
    LazyLock::force(&LATENCY);
    LazyLock::force(&REWRITES);
    LazyLock::force(&REWRITE_BYTES_IN);
    LazyLock::force(&REWRITE_BYTES_PARSED);
    LazyLock::force(&REWRITE_HEADS_REMEMBERED);
    LazyLock::force(&REWRITE_BYTES_OUT);
    LazyLock::force(&MODULE_CACHE);
    LazyLock::force(&MODULE_BYTES);
    LazyLock::force(&SNAPSHOT_VERSION);
    LazyLock::force(&SNAPSHOT_SECONDS);
    for from in ["changes", "whole"] {
        SNAPSHOT_REBUILDS.with_label_values(&[from]);
    }
    LazyLock::force(&ORIGIN_ERRORS);
    stamp_store::metrics::register();
    let mut out = Vec::new();
    let families = prometheus::gather();
    if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
        log::error!("cannot encode metrics: {e}");
    }
    out
}

/// Page views reported by the probe for tickets rolling out, by ticket and
/// side (labels only for tickets rolling out: bounded by how many may roll
/// out at once, and dropped when a rollout ends).
pub static ROLLOUT_VIEWS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(register_int_counter_vec!(
        "stamp_rollout_views_total",
        "Page views reported for tickets rolling out, by ticket and side",
        &["ticket", "side"]
    ))
});

/// Of those, the views with at least one error.
pub static ROLLOUT_ERRING_VIEWS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(register_int_counter_vec!(
        "stamp_rollout_erring_views_total",
        "Page views with at least one error, for tickets rolling out, by ticket and side",
        &["ticket", "side"]
    ))
});

/// Sampled pages of tickets rolling out the proxy sent with the probe,
/// and first reports it heard back, by ticket and side: a side sent much
/// and heard little hangs or crashes before its pages report.
pub static ROLLOUT_PAGES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(register_int_counter_vec!(
        "stamp_rollout_pages_total",
        "Sampled pages of tickets rolling out, sent with the probe and heard back from, by ticket, side and outcome",
        &["ticket", "side", "outcome"]
    ))
});

/// Counts a sampled page of a ticket rolling out (`sent` or `heard`).
pub fn rollout_pages(
    key: &stamp_model::ticket::TicketKey,
    side: stamp_model::views::Side,
    outcome: &str,
) {
    ROLLOUT_PAGES
        .with_label_values(&[key.as_str(), side.as_str(), outcome])
        .inc();
}

/// Each rolling ticket's share of production's visitors, in percent.
pub static ROLLOUT_PERCENT: LazyLock<prometheus::IntGaugeVec> = LazyLock::new(|| {
    must(prometheus::register_int_gauge_vec!(
        "stamp_rollout_percent",
        "The share of production's visitors a ticket rolling out reaches",
        &["ticket"]
    ))
});

static ROLLOUT_LABELS: LazyLock<std::sync::Mutex<std::collections::BTreeSet<String>>> =
    LazyLock::new(Default::default);

/// Counts a report of a ticket rolling out.
pub fn rollout_view(record: &stamp_model::views::ViewRecord) {
    let labels = [record.ticket.as_str(), record.side.as_str()];
    if !record.update {
        ROLLOUT_VIEWS.with_label_values(&labels).inc();
    }
    if record.newly_erring() {
        ROLLOUT_ERRING_VIEWS.with_label_values(&labels).inc();
    }
}

/// The tickets rolling out now: their share is set, and every series of a
/// ticket no longer rolling out is dropped.
pub fn rollouts_now(rolling: &[(String, u8)]) {
    let mut seen = ROLLOUT_LABELS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for (key, percent) in rolling {
        ROLLOUT_PERCENT
            .with_label_values(&[key.as_str()])
            .set(i64::from(*percent));
        seen.insert(key.clone());
    }
    let gone: Vec<String> = seen
        .iter()
        .filter(|k| !rolling.iter().any(|(r, _)| r == *k))
        .cloned()
        .collect();
    for key in gone {
        let _ = ROLLOUT_PERCENT.remove_label_values(&[key.as_str()]);
        for side in ["ticket", "production"] {
            let _ = ROLLOUT_VIEWS.remove_label_values(&[key.as_str(), side]);
            let _ = ROLLOUT_ERRING_VIEWS.remove_label_values(&[key.as_str(), side]);
            for outcome in ["sent", "heard"] {
                let _ = ROLLOUT_PAGES.remove_label_values(&[key.as_str(), side, outcome]);
            }
        }
        seen.remove(&key);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn counted_outcomes_reach_the_registered_series() {
        // Labels no other test counts: tests run side by side.
        for _ in 0..3 {
            count(&PAGE_CACHE, "test-counted");
        }
        // Another vector with the same label is its own series.
        count(&REWRITES, "test-counted");
        assert_eq!(PAGE_CACHE.with_label_values(&["test-counted"]).get(), 3);
        assert_eq!(REWRITES.with_label_values(&["test-counted"]).get(), 1);
        // From another thread too, and past the per-thread table's size.
        std::thread::spawn(|| {
            let labels: Vec<&'static str> = (0..70)
                .map(|i| &*Box::leak(format!("test-counted-{i}").into_boxed_str()))
                .collect();
            for l in &labels {
                count(&REWRITES, l);
                count(&REWRITES, l);
            }
            for l in &labels {
                assert_eq!(REWRITES.with_label_values(&[l]).get(), 2, "{l}");
            }
            count(&PAGE_CACHE, "test-counted");
        })
        .join()
        .unwrap();
        assert_eq!(PAGE_CACHE.with_label_values(&["test-counted"]).get(), 4);
    }
}
