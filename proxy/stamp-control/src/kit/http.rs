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

/// A transport failure told without its URL (a Slack or webhook URL is a
/// secret: it must never reach a log), and with its cause named: a timeout,
/// a refused or failed connection, or the error's own words.
pub fn transport_error(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_redirect() {
        "too many redirects"
    } else if e.is_body() || e.is_decode() {
        "the answer broke off"
    } else {
        "request failed"
    };
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        causes.push(s.to_string());
        source = s.source();
    }
    // A cause may quote the URL too (a DNS failure names the host, which is
    // fine; the path is what holds a webhook's secret).
    let url = e.url().map(|u| u.as_str().to_string());
    let causes: Vec<String> = causes
        .into_iter()
        .map(|c| match &url {
            Some(u) if c.contains(u.as_str()) => c.replace(u.as_str(), "<url>"),
            _ => c,
        })
        .collect();
    if causes.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {}", causes.join(": "))
    }
}

/// Why a request to `service` at `base` got no answer: it timed out, or
/// what kept it from reaching the service (never the URL's path).
pub fn no_answer(service: &str, base: &str, e: &reqwest::Error) -> String {
    if e.is_timeout() {
        format!("{service} at {base} did not answer in time")
    } else {
        format!("{service} at {base} is unreachable: {}", transport_error(e))
    }
}

/// A URL as logs may show it: its origin only (`https://hooks.example.com/…`),
/// since a webhook's path or query often is its secret.
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => {
            let origin = u.origin().ascii_serialization();
            if u.path() == "/" && u.query().is_none() {
                origin
            } else {
                format!("{origin}/…")
            }
        }
        Err(_) => "a webhook URL".to_string(),
    }
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
