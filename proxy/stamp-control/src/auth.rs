//! Who is calling the control API, and what they may do.
//!
//! Bearer tokens are configured by the sha256 of their secret; a presented
//! token is hashed and compared in constant time against every configured
//! hash, so neither the secret nor the timing of a comparison gives anything
//! away. Tokens are never logged.

use sha2::{Digest, Sha256};

pub use stamp_model::roles::{allowed, Action, Role};

/// An API token, known by the sha256 of its secret (the secret itself is
/// never configured, stored or logged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub name: String,
    pub role: Role,
    pub sha256: [u8; 32],
}

/// The caller, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token (send `Authorization: Bearer <token>`)")]
    Missing,
    #[error("malformed Authorization header (expected `Bearer <token>`)")]
    Malformed,
    #[error("unknown or revoked token")]
    Unknown,
}

/// The hex sha256 of a token secret, as configured in `[[tokens]]`.
pub fn hash_token(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Authenticates an `Authorization` header value. With no tokens configured
/// the API is open (only allowed on loopback, checked at start-up) and the
/// caller is an anonymous admin.
pub fn authenticate(tokens: &[Token], header: Option<&[u8]>) -> Result<Principal, AuthError> {
    if tokens.is_empty() {
        return Ok(Principal {
            name: "anonymous".into(),
            role: Role::Admin,
        });
    }
    let raw = header.ok_or(AuthError::Missing)?;
    let text = std::str::from_utf8(raw).map_err(|_| AuthError::Malformed)?;
    let (scheme, secret) = text.trim().split_once(' ').ok_or(AuthError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") || secret.trim().is_empty() {
        return Err(AuthError::Malformed);
    }
    let presented: [u8; 32] = Sha256::digest(secret.trim().as_bytes()).into();
    // Compare against every token, always, so timing does not depend on which matched.
    let mut found: Option<&Token> = None;
    for t in tokens {
        if constant_time_eq(&t.sha256, &presented) {
            found = Some(t);
        }
    }
    found
        .map(|t| Principal {
            name: t.name.clone(),
            role: t.role,
        })
        .ok_or(AuthError::Unknown)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tokens() -> Vec<Token> {
        let mk = |name: &str, role, secret: &str| {
            let mut sha256 = [0u8; 32];
            hex::decode_to_slice(hash_token(secret), &mut sha256).unwrap();
            Token {
                name: name.into(),
                role,
                sha256,
            }
        };
        vec![
            mk("alice", Role::Dev, "s3cret-a"),
            mk("quinn", Role::Qa, "s3cret-q"),
        ]
    }

    #[test]
    fn bearer_tokens_authenticate_by_hash() {
        let t = tokens();
        assert_eq!(
            authenticate(&t, Some(b"Bearer s3cret-a")).unwrap().name,
            "alice"
        );
        assert_eq!(
            authenticate(&t, Some(b"bearer  s3cret-q ")).unwrap().role,
            Role::Qa
        );
        assert_eq!(authenticate(&t, None), Err(AuthError::Missing));
        assert_eq!(
            authenticate(&t, Some(b"Basic abc")),
            Err(AuthError::Malformed)
        );
        assert_eq!(authenticate(&t, Some(b"Bearer")), Err(AuthError::Malformed));
        assert_eq!(
            authenticate(&t, Some(b"Bearer \xff")),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            authenticate(&t, Some(b"Bearer nope")),
            Err(AuthError::Unknown)
        );
        assert_eq!(authenticate(&[], None).unwrap().role, Role::Admin);
    }
}

/// Panel sessions: an HttpOnly cookie naming the token's name and role,
/// signed (HMAC-SHA256) and expiring, plus a CSRF token derived from it that
/// the panel sends with every write.
#[derive(Clone)]
pub struct Sessions {
    key: [u8; 32],
    ttl: std::time::Duration,
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
        Sessions { key, ttl }
    }

    fn mac(&self, message: &str) -> String {
        use hmac::{Hmac, Mac};
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return String::new();
        };
        mac.update(message.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// A cookie value for a signed-in principal.
    pub fn mint(&self, p: &Principal) -> String {
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            + self.ttl.as_secs();
        let body = format!(
            "{}.{}.{exp}",
            hex::encode(p.name.as_bytes()),
            p.role.as_str()
        );
        let mac = self.mac(&body);
        format!("{body}.{mac}")
    }

    /// The principal of a valid, unexpired cookie whose token is still
    /// configured (a removed token ends its sessions at once).
    pub fn verify(&self, cookie: &str, tokens: &[Token]) -> Option<Principal> {
        let (body, mac) = cookie.rsplit_once('.')?;
        let expected = self.mac(body);
        if expected.len() != mac.len()
            || expected
                .bytes()
                .zip(mac.bytes())
                .fold(0u8, |a, (x, y)| a | (x ^ y))
                != 0
        {
            return None;
        }
        let mut parts = body.split('.');
        let name = String::from_utf8(hex::decode(parts.next()?).ok()?).ok()?;
        let role: Role = parts.next()?.parse().ok()?;
        let exp: u64 = parts.next()?.parse().ok()?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(u64::MAX);
        if exp <= now {
            return None;
        }
        let known = tokens.is_empty() || tokens.iter().any(|t| t.name == name && t.role == role);
        known.then_some(Principal { name, role })
    }

    /// The CSRF token that goes with a session cookie.
    pub fn csrf(&self, cookie: &str) -> String {
        self.mac(&format!("csrf|{cookie}"))[..32].to_string()
    }
}

/// The session cookie's value among the request's `Cookie` headers.
pub fn session_cookie<'a>(headers: impl IntoIterator<Item = &'a [u8]>) -> Option<String> {
    for h in headers {
        for pair in h.split(|&b| b == b';') {
            let pair = std::str::from_utf8(pair).ok()?.trim();
            if let Some(v) = pair
                .strip_prefix(SESSION_COOKIE)
                .and_then(|r| r.strip_prefix('='))
            {
                if !v.is_empty() && v.len() < 512 {
                    return Some(v.to_string());
                }
            }
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod session_tests {
    use super::*;

    #[test]
    fn sessions_sign_expire_and_follow_the_configured_tokens() {
        let s = Sessions::new(Some("k"), std::time::Duration::from_secs(60));
        let p = Principal {
            name: "quinn".into(),
            role: Role::Qa,
        };
        let mut sha256 = [0u8; 32];
        hex::decode_to_slice(hash_token("x"), &mut sha256).unwrap();
        let tokens = vec![Token {
            name: "quinn".into(),
            role: Role::Qa,
            sha256,
        }];
        let c = s.mint(&p);
        assert_eq!(s.verify(&c, &tokens), Some(p.clone()));
        assert_eq!(
            s.verify(
                &c,
                &[Token {
                    name: "other".into(),
                    role: Role::Qa,
                    sha256
                }]
            ),
            None,
            "token removed"
        );
        assert_eq!(
            s.verify(&c.replace(".qa.", ".admin."), &tokens),
            None,
            "tampered"
        );
        assert_eq!(
            Sessions::new(Some("other"), std::time::Duration::from_secs(60)).verify(&c, &tokens),
            None
        );
        let expired = Sessions::new(Some("k"), std::time::Duration::ZERO).mint(&p);
        assert_eq!(s.verify(&expired, &tokens), None);
        assert_ne!(s.csrf(&c), s.csrf(&expired));
        assert_eq!(
            session_cookie([b"a=1; stamp_session=abc; b=2".as_slice()]).as_deref(),
            Some("abc")
        );
    }
}
