//! Panel sessions and signed values: who a browser is, between requests.

use sha2::{Digest, Sha256};

use crate::identity::{Principal, Role, Token, Via};

/// Panel sessions: an HttpOnly cookie naming the token's name and role,
/// signed (HMAC-SHA256) and expiring, plus a CSRF token derived from it that
/// the panel sends with every write.
#[derive(Clone)]
pub struct Sessions {
    key: [u8; 32],
    ttl: std::time::Duration,
    /// Sessions signed out (their signatures): refused though unexpired.
    /// Filled from the store by [`crate::Control::run_jobs`], so a sign-out
    /// on any proxy of the fleet reaches this one.
    revoked: std::sync::Arc<std::sync::RwLock<std::collections::HashSet<String>>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").field("ttl", &self.ttl).finish()
    }
}

/// The panel's session cookie.
pub const SESSION_COOKIE: &str = "stamp_session";

impl Sessions {
    /// Sessions signed with a key derived from `secret` (shared by a fleet),
    /// or a random one (sessions then last as long as the process).
    pub fn new(secret: Option<&str>, ttl: std::time::Duration) -> Sessions {
        let key = match secret {
            Some(s) => Sha256::digest(format!("ticket-stamp session|{s}").as_bytes()).into(),
            None => rand::random(),
        };
        Sessions {
            key,
            ttl,
            revoked: Default::default(),
        }
    }

    /// The signed-out sessions this process refuses.
    pub fn revoked(&self) -> std::sync::Arc<std::sync::RwLock<std::collections::HashSet<String>>> {
        self.revoked.clone()
    }

    /// A valid session cookie's signature and expiry (ms), to revoke it.
    pub fn revocation(&self, cookie: &str) -> Option<(String, u64)> {
        self.revocation_for("session", cookie)
    }

    /// The same for a CLI proxy token (`stp1.…`).
    pub fn bearer_revocation(&self, token: &str) -> Option<(String, u64)> {
        self.revocation_for("bearer", token.strip_prefix(BEARER_PREFIX)?)
    }

    fn revocation_for(&self, purpose: &str, value: &str) -> Option<(String, u64)> {
        let (body, mac) = value.rsplit_once('.')?;
        if !same(&self.mac(&format!("{purpose}|{body}")), mac) {
            return None;
        }
        let exp: u64 = body.split('.').nth(2)?.parse().ok()?;
        Some((mac.to_string(), exp.saturating_mul(1000)))
    }

    fn is_revoked(&self, mac: &str) -> bool {
        self.revoked
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(mac)
    }

    fn mac(&self, message: &str) -> String {
        use hmac::{Hmac, Mac};
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return String::new();
        };
        mac.update(message.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// How long a panel session lasts.
    pub fn ttl(&self) -> std::time::Duration {
        self.ttl
    }

    /// A cookie value for a signed-in principal.
    pub fn mint(&self, p: &Principal) -> String {
        self.mint_for("session", p, self.ttl)
    }

    /// A proxy token for the CLI (`stp1.…`), sent as a bearer token.
    pub fn mint_bearer(&self, p: &Principal, ttl: std::time::Duration) -> String {
        format!("{BEARER_PREFIX}{}", self.mint_for("bearer", p, ttl))
    }

    fn mint_for(&self, purpose: &str, p: &Principal, ttl: std::time::Duration) -> String {
        let exp = now_secs() + ttl.as_secs();
        let via = match &p.via {
            Via::Token => "t".to_string(),
            Via::SignIn(provider) => format!("o-{provider}"),
        };
        let body = format!(
            "{}.{}.{exp}.{via}",
            hex::encode(p.name.as_bytes()),
            p.role.as_str()
        );
        let mac = self.mac(&format!("{purpose}|{body}"));
        format!("{body}.{mac}")
    }

    /// The principal of a valid, unexpired cookie whose token or provider
    /// is still configured (removing either ends its sessions at once).
    pub fn verify(&self, cookie: &str, tokens: &[Token], providers: &[&str]) -> Option<Principal> {
        self.verify_for("session", cookie, tokens, providers)
    }

    /// The principal of a CLI proxy token (`stp1.…`), checked like a session.
    pub fn verify_bearer(
        &self,
        token: &str,
        tokens: &[Token],
        providers: &[&str],
    ) -> Option<Principal> {
        let rest = token.strip_prefix(BEARER_PREFIX)?;
        self.verify_for("bearer", rest, tokens, providers)
    }

    fn verify_for(
        &self,
        purpose: &str,
        value: &str,
        tokens: &[Token],
        providers: &[&str],
    ) -> Option<Principal> {
        let (body, mac) = value.rsplit_once('.')?;
        if !same(&self.mac(&format!("{purpose}|{body}")), mac) || self.is_revoked(mac) {
            return None;
        }
        let mut parts = body.split('.');
        let name = String::from_utf8(hex::decode(parts.next()?).ok()?).ok()?;
        let role: Role = parts.next()?.parse().ok()?;
        let exp: u64 = parts.next()?.parse().ok()?;
        let via = parts.next()?;
        if parts.next().is_some() || exp <= now_secs() {
            return None;
        }
        let via = match via {
            "t" => Via::Token,
            other => Via::SignIn(other.strip_prefix("o-")?.to_string()),
        };
        let known = match &via {
            Via::Token => {
                (tokens.is_empty() && providers.is_empty())
                    || tokens.iter().any(|t| t.name == name && t.role == role)
            }
            Via::SignIn(provider) => providers.contains(&provider.as_str()),
        };
        known.then_some(Principal { name, role, via })
    }

    /// `value` sealed for `purpose`: readable by the browser that holds it,
    /// but not forgeable or usable for another purpose. Expiry is the
    /// caller's (inside the value).
    pub fn seal(&self, purpose: &str, value: &str) -> String {
        use base64::Engine as _;
        let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.as_bytes());
        let mac = self.mac(&format!("seal|{purpose}|{body}"));
        format!("{body}.{mac}")
    }

    /// The value of a sealed string, if it is genuine.
    pub fn open(&self, purpose: &str, sealed: &str) -> Option<String> {
        use base64::Engine as _;
        let (body, mac) = sealed.rsplit_once('.')?;
        if !same(&self.mac(&format!("seal|{purpose}|{body}")), mac) {
            return None;
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .ok()?;
        String::from_utf8(bytes).ok()
    }

    /// The CSRF token that goes with a session cookie.
    pub fn csrf(&self, cookie: &str) -> String {
        self.mac(&format!("csrf|{cookie}"))[..32].to_string()
    }
}

/// The prefix of proxy tokens handed to the CLI after a sign-in.
pub const BEARER_PREFIX: &str = "stp1.";

use stamp_model::share::now_secs;

fn same(a: &str, b: &str) -> bool {
    stamp_model::share::same(a.as_bytes(), b.as_bytes())
}

/// The session cookie's value among the request's `Cookie` headers.
pub fn session_cookie<'a>(headers: impl IntoIterator<Item = &'a [u8]>) -> Option<String> {
    cookie_value(headers, SESSION_COOKIE)
}

/// A cookie's value among the request's `Cookie` headers (at most 2 KiB).
pub fn cookie_value<'a>(headers: impl IntoIterator<Item = &'a [u8]>, name: &str) -> Option<String> {
    stamp_model::share::cookie(headers, name, 2048).map(str::to_string)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod session_tests {
    use super::*;
    use crate::identity::hash_token;

    #[test]
    fn sessions_sign_expire_and_follow_the_configured_tokens() {
        let s = Sessions::new(Some("k"), std::time::Duration::from_secs(60));
        let p = Principal {
            name: "quinn".into(),
            role: Role::Qa,
            via: Via::Token,
        };
        let mut sha256 = [0u8; 32];
        hex::decode_to_slice(hash_token("x"), &mut sha256).unwrap();
        let tokens = vec![Token {
            name: "quinn".into(),
            role: Role::Qa,
            sha256,
        }];
        let c = s.mint(&p);
        assert_eq!(s.verify(&c, &tokens, &[]), Some(p.clone()));
        assert_eq!(
            s.verify(
                &c,
                &[Token {
                    name: "other".into(),
                    role: Role::Qa,
                    sha256
                }],
                &[]
            ),
            None,
            "token removed"
        );
        assert_eq!(
            s.verify(&c.replace(".qa.", ".admin."), &tokens, &[]),
            None,
            "tampered"
        );
        assert_eq!(
            Sessions::new(Some("other"), std::time::Duration::from_secs(60)).verify(
                &c,
                &tokens,
                &[]
            ),
            None
        );
        let expired = Sessions::new(Some("k"), std::time::Duration::ZERO).mint(&p);
        assert_eq!(s.verify(&expired, &tokens, &[]), None);
        // Sign-in sessions follow their provider; bearer tokens are not cookies.
        let o = Principal {
            name: "q@example.com".into(),
            role: Role::Qa,
            via: Via::SignIn("corp".into()),
        };
        let c = s.mint(&o);
        assert_eq!(s.verify(&c, &tokens, &["corp"]), Some(o.clone()));
        assert_eq!(s.verify(&c, &tokens, &["other"]), None, "provider removed");
        let b = s.mint_bearer(&o, std::time::Duration::from_secs(60));
        assert_eq!(s.verify_bearer(&b, &tokens, &["corp"]), Some(o.clone()));
        assert_eq!(
            s.verify(b.trim_start_matches(BEARER_PREFIX), &tokens, &["corp"]),
            None
        );
        assert_eq!(
            s.verify_bearer(&format!("{BEARER_PREFIX}{c}"), &tokens, &["corp"]),
            None
        );
        let sealed = s.seal("login", "{\"a\":1}");
        assert_eq!(s.open("login", &sealed).as_deref(), Some("{\"a\":1}"));
        assert_eq!(s.open("other", &sealed), None);
        assert_eq!(s.open("login", &sealed.replace('.', "x.")), None);
        assert_ne!(s.csrf(&c), s.csrf(&expired));
        assert_eq!(
            session_cookie([b"a=1; stamp_session=abc; b=2".as_slice()]).as_deref(),
            Some("abc")
        );
    }
}
