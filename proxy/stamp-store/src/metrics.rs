//! The store's own metrics (registered in the process-wide Prometheus
//! registry, rendered by the data plane at `/__stamp/metrics`).

use std::sync::LazyLock;

use prometheus::{register_int_counter, register_int_gauge, IntCounter, IntGauge};

// Registration only fails on a duplicate name, which is a programming error
// caught by the first test that touches a metric.
#[allow(clippy::expect_used)]
fn must<T>(r: prometheus::Result<T>) -> T {
    r.expect("metric registration")
}

/// Failed store operations, whoever made them (snapshot refresher, jobs).
pub static STORE_ERRORS: LazyLock<IntCounter> = LazyLock::new(|| {
    must(register_int_counter!(
        "stamp_store_errors_total",
        "Failed store operations"
    ))
});

/// 1 when the last store round trip of the snapshot refresher succeeded.
pub static STORE_UP: LazyLock<IntGauge> = LazyLock::new(|| {
    must(register_int_gauge!(
        "stamp_store_up",
        "1 when the last store round trip succeeded"
    ))
});

/// 1 while the store no longer holds the state the serving snapshot came
/// from (see `StoreError::Lost`).
pub static STORE_STATE_LOST: LazyLock<IntGauge> = LazyLock::new(|| {
    must(register_int_gauge!(
        "stamp_store_state_lost",
        "1 while the store lost the state the serving snapshot came from"
    ))
});

/// 1 while the store reports a fault although it answers (a failed disk write).
pub static STORE_FAULT: LazyLock<IntGauge> = LazyLock::new(|| {
    must(register_int_gauge!(
        "stamp_store_fault",
        "1 while the store reports a fault (for example a failed disk write)"
    ))
});

/// Acknowledged commits a failover lost, found by checking the new primary
/// (Redis Sentinel).
pub static STORE_LOST_WRITES: LazyLock<IntCounter> = LazyLock::new(|| {
    must(register_int_counter!(
        "stamp_store_lost_writes_total",
        "Acknowledged ticket changes missing on the primary after a failover"
    ))
});

/// Registers the store's metrics, so a scrape lists them from the start.
pub fn register() {
    LazyLock::force(&STORE_ERRORS);
    LazyLock::force(&STORE_UP);
    LazyLock::force(&STORE_STATE_LOST);
    LazyLock::force(&STORE_FAULT);
    LazyLock::force(&STORE_LOST_WRITES);
}
