//! What every plugin that talks HTTP shares.

use std::time::Duration;

/// An HTTP client for policies and hooks: bounded, no system proxy.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .no_proxy()
        .user_agent(concat!("ticket-stamp/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

/// At most `max` bytes of `text`, cut at a character boundary.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}
