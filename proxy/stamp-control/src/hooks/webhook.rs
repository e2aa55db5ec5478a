//! `webhook`: a JSON POST of each event to a URL, signed so the receiver can
//! trust it: `x-stamp-signature: sha256=<hex HMAC-SHA256 of the body>` with
//! the configured secret, plus `x-stamp-event` and `x-stamp-delivery` (an
//! id that stays the same across retries of one event).
//!
//! Body: `{"event", "ticket", "from", "to", "actor", "share_link", "at_ms"}`.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::{classify, transport, Event, Hook, HookError};
use crate::kit::{http_client, Secret, Settings};

pub const KEYS: &[&str] = &["url", "secret", "secret_env", "headers"];

pub struct Webhook {
    url: String,
    secret: Secret,
    headers: BTreeMap<String, String>,
    client: reqwest::Client,
}

pub fn build(s: &mut Settings<'_>, timeout: Duration) -> Option<Box<dyn Hook>> {
    let url = s.required_string("url", "where to POST events");
    if let Some(u) = &url {
        if url::Url::parse(u)
            .map(|u| !matches!(u.scheme(), "http" | "https"))
            .unwrap_or(true)
        {
            s.problem("url", format!("`{u}` is not an http(s) URL"));
        }
    }
    let secret = s.secret(
        "secret",
        true,
        "the HMAC-SHA256 signing key the receiver shares",
    );
    let headers = s.string_map("headers").unwrap_or_default();
    for k in headers.keys() {
        if http::HeaderName::try_from(k.as_str()).is_err() {
            s.problem(&format!("headers.{k}"), "is not a valid header name");
        }
    }
    Some(Box::new(Webhook {
        url: url?,
        secret: secret?,
        headers,
        client: http_client(timeout),
    }))
}

/// `sha256=<hex>` of `body` under `secret` (what a receiver recomputes).
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[async_trait]
impl Hook for Webhook {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    async fn deliver(&self, e: &Event) -> Result<(), HookError> {
        let secret = self.secret.resolve().map_err(HookError::Permanent)?;
        let body = serde_json::to_vec(e).map_err(|e| HookError::Permanent(e.to_string()))?;
        let delivery = hex::encode(&Sha256::digest(&body)[..12]);
        let mut req = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("x-stamp-event", e.kind.as_str())
            .header("x-stamp-delivery", delivery)
            .header("x-stamp-signature", signature(secret.as_bytes(), &body));
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let resp = req
            .body(body)
            .send()
            .await
            .map_err(|err| transport(&crate::kit::redacted(&self.url), err))?;
        classify(resp.status().as_u16(), &crate::kit::redacted(&self.url))
    }
}
