//! API tokens and the callers they authenticate: who is calling the
//! control API, and in which role.
//!
//! Bearer tokens are configured by the sha256 of their secret; a presented
//! token is hashed and compared in constant time against every configured
//! hash, so neither the secret nor the timing of a comparison gives anything
//! away. Tokens are never logged.

use sha2::{Digest, Sha256};

pub use stamp_model::roles::Role;

/// An API token, known by the sha256 of its secret (the secret itself is
/// never configured, stored or logged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub name: String,
    pub role: Role,
    pub sha256: [u8; 32],
}

/// How the caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A configured `[[tokens]]` entry (or the open loopback API).
    Token,
    /// Single sign-on with the named `[[sign_in]]` provider.
    SignIn(String),
}

/// The caller, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    pub via: Via,
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
    stamp_model::share::same(a, b)
}

/// Authenticates an `Authorization` header value. An `open` API (no tokens
/// and no sign-in configured: only allowed on loopback, checked at start-up)
/// takes every caller as an anonymous admin.
pub fn authenticate(
    tokens: &[Token],
    open: bool,
    header: Option<&[u8]>,
) -> Result<Principal, AuthError> {
    if open {
        return Ok(Principal {
            name: "anonymous".into(),
            role: Role::Admin,
            via: Via::Token,
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
            via: Via::Token,
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
            authenticate(&t, false, Some(b"Bearer s3cret-a"))
                .unwrap()
                .name,
            "alice"
        );
        assert_eq!(
            authenticate(&t, false, Some(b"bearer  s3cret-q "))
                .unwrap()
                .role,
            Role::Qa
        );
        assert_eq!(authenticate(&t, false, None), Err(AuthError::Missing));
        assert_eq!(
            authenticate(&t, false, Some(b"Basic abc")),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            authenticate(&t, false, Some(b"Bearer")),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            authenticate(&t, false, Some(b"Bearer \xff")),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            authenticate(&t, false, Some(b"Bearer nope")),
            Err(AuthError::Unknown)
        );
        assert_eq!(authenticate(&[], true, None).unwrap().role, Role::Admin);
        // No tokens but sign-in configured: not open.
        assert_eq!(authenticate(&[], false, None), Err(AuthError::Missing));
        assert_eq!(
            authenticate(&[], false, Some(b"Bearer x")),
            Err(AuthError::Unknown)
        );
    }
}
