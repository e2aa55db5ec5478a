//! The control plane in-process: a `Control` over a real store, built from
//! the same TOML a `stamp-proxy` reads, answering `http::Request<Bytes>`
//! without a socket. The API's contract tests run against it; real
//! processes are kept for the data plane, fleets, Redis, the browser and
//! the CLI.

use std::future::Future;

use bytes::Bytes;
use serde_json::Value;
use stamp_control::{Control, OriginAccess};
use stamp_proxy::config::{Config, Flags};
use stamp_store::SharedStore;

use crate::Proxy;

/// Who answers the API: a real `stamp-proxy`, or the control plane in-process.
pub trait Api: Sync {
    /// `METHOD /__stamp/api/v1/{path}` with an optional bearer token, body
    /// and headers: the status and the JSON answer (or the text as a string).
    fn call_h(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> impl Future<Output = (u16, Value)> + Send;
}

/// A control plane with its own store, as `stamp-proxy --config` would make it.
pub struct InProcess {
    pub control: Control,
    pub store: SharedStore,
    _dir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for InProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcess").finish()
    }
}

impl InProcess {
    /// Builds from a proxy configuration (`origin`, `[[tokens]]`, …). A
    /// `store` it does not name is a fresh embedded store of its own.
    pub async fn start(toml_text: &str) -> anyhow::Result<InProcess> {
        let dir = tempfile::tempdir()?;
        let text = if toml_text
            .lines()
            .any(|l| l.trim_start().starts_with("store"))
        {
            toml_text.to_string()
        } else {
            format!(
                "store = {:?}\n{toml_text}",
                dir.path().join("store").to_string_lossy()
            )
        };
        let cfg = Config::from_toml(&Flags::default(), &text, "test.toml")
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let store = crate::open_store(&cfg.store).await?;
        let control = Control::new(
            cfg.control,
            store.clone(),
            OriginAccess {
                url: cfg.data.origin.url.clone(),
                host: None,
                verify_cert: true,
            },
        )?;
        Ok(InProcess {
            control,
            store,
            _dir: Some(dir),
        })
    }
}

impl Api for InProcess {
    async fn call_h(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("/__stamp/api/v1/{path}"))
            .header("host", "127.0.0.1");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if method == "POST"
            && body.is_some()
            && !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(Bytes::from(body.unwrap_or_default()))
            .expect("a valid request");
        let resp = self.control.handle(req).await;
        let status = resp.status().as_u16();
        assert_eq!(resp.headers()["content-type"], "application/json");
        let text = String::from_utf8_lossy(resp.body().full()).into_owned();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

impl Api for Proxy {
    async fn call_h(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let url = self.url(&format!("/__stamp/api/v1/{path}"));
        let mut req = crate::client().request(method.parse().expect("a method"), url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            // JSON writes say so, as the CLI and the panel do (a POST without it
            // is what a cross-site form sends, and is refused).
            if method == "POST"
                && !headers
                    .iter()
                    .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            {
                req = req.header("content-type", "application/json");
            }
            req = req.body(b);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        assert_eq!(resp.headers()["content-type"], "application/json");
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}
