//! A receiver of signed webhooks.

#[allow(unused_imports)]
use super::*;

/// A receiver of signed webhooks: accepts `POST` with a JSON body whose
/// `x-stamp-signature` is `sha256=<hex HMAC-SHA256(secret, body)>`; answers
/// 401 to a bad or missing signature.
pub struct FakeReceiver {
    pub fake: Fake,
    deliveries: Arc<Mutex<Vec<Value>>>,
}

impl std::fmt::Debug for FakeReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeReceiver")
            .field("url", &self.fake.url)
            .finish()
    }
}

impl FakeReceiver {
    pub fn start(secret: &str) -> anyhow::Result<FakeReceiver> {
        let deliveries = Arc::new(Mutex::new(Vec::new()));
        let d = deliveries.clone();
        let secret = secret.as_bytes().to_vec();
        let fake = Fake::start(Arc::new(move |r: &Recorded| {
            if r.method != "POST" {
                return StatusCode::METHOD_NOT_ALLOWED.into_response();
            }
            if !r
                .header("content-type")
                .is_some_and(|c| c.starts_with("application/json"))
            {
                return StatusCode::UNSUPPORTED_MEDIA_TYPE.into_response();
            }
            let expected = format!("sha256={}", hex::encode(hmac_sha256(&secret, &r.body)));
            if r.header("x-stamp-signature").as_deref() != Some(expected.as_str()) {
                return (StatusCode::UNAUTHORIZED, "bad signature").into_response();
            }
            let Ok(v) = serde_json::from_slice::<Value>(&r.body) else {
                return (StatusCode::BAD_REQUEST, "not JSON").into_response();
            };
            if let Ok(mut l) = d.lock() {
                l.push(v);
            }
            StatusCode::NO_CONTENT.into_response()
        }))?;
        Ok(FakeReceiver { fake, deliveries })
    }

    /// `http://127.0.0.1:PORT/hook`
    pub fn url(&self) -> String {
        format!("{}/hook", self.fake.url)
    }

    /// Verified deliveries, in arrival order.
    pub fn deliveries(&self) -> Vec<Value> {
        self.deliveries
            .lock()
            .map(|d| d.clone())
            .unwrap_or_default()
    }
}

/// HMAC-SHA256 (RFC 2104), written out so the receiver checks the proxy's
/// signature independently of the proxy's HMAC code.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}
