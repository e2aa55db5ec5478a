//! A hostile (or correct) OpenID provider.

#[allow(unused_imports)]
use super::*;

/// An RSA key pair made by `openssl` for a test: the private key's PEM and
/// the modulus, as hex.
pub fn rsa_key(dir: &std::path::Path, name: &str) -> anyhow::Result<(String, String)> {
    let key = dir.join(format!("{name}.pem"));
    let ok = std::process::Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&key)
        .arg("2048")
        .stderr(std::process::Stdio::null())
        .status()?;
    if !ok.success() {
        let ok = std::process::Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&key)
            .arg("2048")
            .status()?;
        anyhow::ensure!(ok.success(), "openssl genrsa failed");
    }
    let out = std::process::Command::new("openssl")
        .args(["rsa", "-noout", "-modulus", "-in"])
        .arg(&key)
        .output()?;
    anyhow::ensure!(out.status.success(), "openssl rsa -modulus failed");
    let modulus = String::from_utf8(out.stdout)?
        .trim()
        .trim_start_matches("Modulus=")
        .to_string();
    Ok((std::fs::read_to_string(&key)?, modulus))
}

/// What a [`FakeIdp`] gets wrong in the ID token it issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdTokenFault {
    /// A valid token.
    None,
    /// Expired five minutes ago.
    Expired,
    /// Expired 20 s ago: within the clock skew allowed.
    ExpiredWithinSkew,
    /// Issued ten minutes in the future (the provider's clock is ahead).
    IssuedInTheFuture,
    WrongAudience,
    WrongIssuer,
    /// Signed by another key under the provider's key id.
    ForeignKey,
    /// `alg: none`, no signature.
    Unsigned,
    WrongNonce,
    /// The token response has no `id_token`.
    Missing,
    /// No `email_verified` claim (as some providers do).
    EmailUnverified,
    /// Issued an hour ago (still unexpired).
    IssuedLongAgo,
}

pub(super) struct IdpData {
    fault: IdTokenFault,
    key_pem: String,
    foreign_pem: String,
    nonce: Option<String>,
    challenge: Option<String>,
    /// Whether the last code exchange carried the right PKCE verifier.
    pkce: Option<bool>,
    groups: Vec<String>,
    email: String,
}

/// A hostile (or correct) OpenID provider speaking the real protocol's
/// paths and shapes: discovery, JWKS, `/auth` (answers at once with a code,
/// as if the person had signed in) and `/token` (checks the PKCE verifier,
/// then issues an ID token with the configured fault).
pub struct FakeIdp {
    pub fake: Fake,
    data: Arc<Mutex<IdpData>>,
}

impl std::fmt::Debug for FakeIdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeIdp")
            .field("url", &self.fake.url)
            .finish()
    }
}

pub(super) fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub(super) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl FakeIdp {
    /// `key` signs tokens (published in the JWKS); `foreign` signs the
    /// [`IdTokenFault::ForeignKey`] ones.
    pub fn start(key: &(String, String), foreign: &(String, String)) -> anyhow::Result<FakeIdp> {
        let data = Arc::new(Mutex::new(IdpData {
            fault: IdTokenFault::None,
            key_pem: key.0.clone(),
            foreign_pem: foreign.0.clone(),
            nonce: None,
            challenge: None,
            pkce: None,
            groups: vec!["qa".into()],
            email: "quinn@example.com".into(),
        }));
        let n = b64url(&hex::decode(&key.1)?);
        let d = data.clone();
        let base: Arc<Mutex<String>> = Arc::new(Mutex::new(String::new()));
        let b = base.clone();
        let fake = Fake::start(Arc::new(move |r: &Recorded| {
            let issuer = b.lock().map(|s| s.clone()).unwrap_or_default();
            match r.path.as_str() {
                "/.well-known/openid-configuration" => json_response(
                    200,
                    json!({
                        "issuer": issuer,
                        "authorization_endpoint": format!("{issuer}/auth"),
                        "token_endpoint": format!("{issuer}/token"),
                        "jwks_uri": format!("{issuer}/jwks"),
                        "device_authorization_endpoint": format!("{issuer}/device/auth"),
                        "response_types_supported": ["code"],
                        "subject_types_supported": ["public"],
                        "id_token_signing_alg_values_supported": ["RS256"],
                        "code_challenge_methods_supported": ["S256"],
                    }),
                ),
                "/jwks" => json_response(
                    200,
                    json!({ "keys": [{ "kty": "RSA", "use": "sig", "alg": "RS256", "kid": "k1", "n": n, "e": "AQAB" }] }),
                ),
                "/auth" => {
                    let q = &r.query;
                    if let Ok(mut d) = d.lock() {
                        d.nonce = query_param(q, "nonce");
                        d.challenge = query_param(q, "code_challenge").filter(|_| {
                            query_param(q, "code_challenge_method").as_deref() == Some("S256")
                        });
                    }
                    let to = format!(
                        "{}?code=the-code&state={}",
                        query_param(q, "redirect_uri").unwrap_or_default(),
                        query_param(q, "state").unwrap_or_default()
                    );
                    (StatusCode::FOUND, [("location", to)]).into_response()
                }
                "/token" => {
                    let form = String::from_utf8_lossy(&r.body).to_string();
                    let Ok(mut d) = d.lock() else {
                        return gh_error(500, "poisoned");
                    };
                    let verifier = query_param(&form, "code_verifier").unwrap_or_default();
                    let ok = d.challenge.as_deref()
                        == Some(b64url(&Sha256::digest(verifier.as_bytes())).as_str());
                    d.pkce = Some(ok);
                    if !ok {
                        return json_response(
                            400,
                            json!({ "error": "invalid_grant", "error_description": "PKCE verification failed" }),
                        );
                    }
                    let nonce = d.nonce.clone();
                    let mut body = json!({ "access_token": "at-1", "token_type": "Bearer", "expires_in": 3600 });
                    if d.fault != IdTokenFault::Missing {
                        body["id_token"] =
                            Value::String(d.token(&issuer, "stamp-panel", nonce.as_deref()));
                    }
                    json_response(200, body)
                }
                _ => gh_error(404, "Not Found"),
            }
        }))?;
        if let Ok(mut b) = base.lock() {
            *b = fake.url.clone();
        }
        Ok(FakeIdp { fake, data })
    }

    pub fn url(&self) -> &str {
        &self.fake.url
    }

    pub fn set_fault(&self, fault: IdTokenFault) {
        if let Ok(mut d) = self.data.lock() {
            d.fault = fault;
        }
    }

    /// The person the next tokens name.
    pub fn set_person(&self, email: &str, groups: &[&str]) {
        if let Ok(mut d) = self.data.lock() {
            d.email = email.to_string();
            d.groups = groups.iter().map(|g| g.to_string()).collect();
        }
    }

    /// Whether the last code exchange sent the verifier of the challenge.
    pub fn pkce_verified(&self) -> Option<bool> {
        self.data.lock().ok().and_then(|d| d.pkce)
    }

    /// An ID token for `audience` (no nonce), with the current fault: what
    /// a CLI's device flow would have got.
    pub fn mint(&self, audience: &str) -> String {
        let issuer = self.fake.url.clone();
        self.data
            .lock()
            .map(|d| d.token(&issuer, audience, None))
            .unwrap_or_default()
    }
}

impl IdpData {
    fn token(&self, issuer: &str, audience: &str, nonce: Option<&str>) -> String {
        let now = now_secs();
        let (iat, exp) = match self.fault {
            IdTokenFault::Expired => (now - 900, now - 300),
            IdTokenFault::ExpiredWithinSkew => (now - 600, now - 20),
            IdTokenFault::IssuedInTheFuture => (now + 600, now + 1200),
            IdTokenFault::IssuedLongAgo => (now - 3600, now + 300),
            _ => (now, now + 300),
        };
        let mut claims = json!({
            "iss": if self.fault == IdTokenFault::WrongIssuer { "https://evil.example".to_string() } else { issuer.to_string() },
            "sub": "u-1",
            "aud": if self.fault == IdTokenFault::WrongAudience { "someone-else" } else { audience },
            "iat": iat,
            "exp": exp,
            "email": self.email,
            "email_verified": true,
            "groups": self.groups,
        });
        if self.fault == IdTokenFault::EmailUnverified {
            if let Some(o) = claims.as_object_mut() {
                o.remove("email_verified");
            }
        }
        match (self.fault, nonce) {
            (IdTokenFault::WrongNonce, _) => claims["nonce"] = json!("not-the-nonce"),
            (_, Some(n)) => claims["nonce"] = json!(n),
            _ => {}
        }
        if self.fault == IdTokenFault::Unsigned {
            let header = b64url(br#"{"alg":"none","typ":"JWT"}"#);
            let payload = b64url(claims.to_string().as_bytes());
            return format!("{header}.{payload}.");
        }
        let pem = if self.fault == IdTokenFault::ForeignKey {
            &self.foreign_pem
        } else {
            &self.key_pem
        };
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some("k1".into());
        let Ok(key) = jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()) else {
            return String::new();
        };
        jsonwebtoken::encode(&header, &claims, &key).unwrap_or_default()
    }
}
