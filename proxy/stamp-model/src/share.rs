//! Share-link signing for preview protection (optional, off by default): when on, a `?dev=`/`?qa=`
//! selection is honoured only with a signed share token minted by the API
//! into share links. A token is `<expiry>.<generation>.<mac>`: HMAC-SHA256
//! over ticket, view, expiry and the ticket's link generation, so it expires
//! by itself and every link of a ticket is revoked at once by bumping the
//! generation.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::roles::Role;
use crate::ticket::{TicketKey, View};

/// Hex digits of the MAC kept in a token (128 bits).
const MAC_HEX: usize = 32;

/// Why a token was not accepted (goes into the `x-ticket-stamp` reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    Malformed,
    Expired,
    Revoked,
    Invalid,
    /// Previews need a signed-in person, and there is no (valid) pass.
    SignIn,
    /// Signed in, but in a role that may not open previews.
    Role,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Missing => "previews are protected: open a signed share link",
            Refusal::Malformed => "the share token is malformed",
            Refusal::Expired => "the share link has expired",
            Refusal::Revoked => "the share link was revoked",
            Refusal::Invalid => "the share token is not valid for this ticket",
            Refusal::SignIn => "previews are protected: sign in to open them",
            Refusal::Role => "previews are protected: your role may not open them",
        }
    }
}

/// The cookie carrying a signed-in person's preview pass (set with a panel
/// session when previews accept signed-in people).
pub const PASS_COOKIE: &str = "stamp_viewer";

/// What opens a protected preview (`preview.access`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A signed share link (`&st=`), as the API and CLI hand out.
    ShareLink,
    /// A signed-in person with one of the allowed roles; links alone do not.
    SignIn,
    /// Either of the two.
    Either,
}

impl Access {
    pub fn parse(s: &str) -> Option<Access> {
        match s {
            "share-link" => Some(Access::ShareLink),
            "sign-in" => Some(Access::SignIn),
            "either" => Some(Access::Either),
            _ => None,
        }
    }
}

/// The check of a protected preview: share links, preview passes, or both.
#[derive(Debug, Clone)]
pub struct Gate {
    pub signer: Signer,
    pub access: Access,
    /// Roles whose signed-in people may open previews.
    pub roles: Vec<Role>,
    /// Where a browser goes to sign in: `/__stamp/login`, or the panel's
    /// own host's (`https://stamp.example/__stamp/login`).
    pub login: String,
    /// Prefixed to the page's path for the way back, when the login is on
    /// another host (the app's public URL); empty otherwise.
    pub app: String,
}

impl Gate {
    /// Whether `token` (a share token) or `pass` (the preview pass cookie)
    /// opens `key`'s `view`.
    pub fn admit(
        &self,
        token: Option<&str>,
        pass: Option<&str>,
        key: &TicketKey,
        view: View,
        generation: u64,
    ) -> Result<(), Refusal> {
        let by_pass = || match self.signer.verify_pass(pass) {
            Some(role) if self.roles.contains(&role) => Ok(()),
            Some(_) => Err(Refusal::Role),
            None => Err(Refusal::SignIn),
        };
        match self.access {
            Access::ShareLink => self.signer.verify(token, key, view, generation),
            Access::SignIn => by_pass(),
            Access::Either => match self.signer.verify(token, key, view, generation) {
                Ok(()) => Ok(()),
                // A link that was given but is bad says why; no link asks to sign in.
                Err(Refusal::Missing) => by_pass(),
                Err(link) => by_pass().map_err(|_| link),
            },
        }
    }

    /// The sign-in URL for a browser asking for `path_and_query`.
    pub fn login_url(&self, path_and_query: &str) -> String {
        let next = format!("{}{path_and_query}", self.app);
        let mut enc = String::with_capacity(next.len() * 3);
        for b in next.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                enc.push(b as char);
            } else {
                enc.push_str(&format!("%{b:02X}"));
            }
        }
        format!("{}?next={enc}", self.login)
    }

    /// Whether signing in could open what `refusal` refused.
    pub fn sign_in_helps(&self, refusal: Refusal) -> bool {
        self.access != Access::ShareLink && matches!(refusal, Refusal::SignIn)
    }
}

/// Mints and checks share tokens.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
    pub ttl: Duration,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("ttl", &self.ttl).finish()
    }
}

/// Seconds since the epoch (what every expiry here is counted in).
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Equal bytes, compared in time that depends on the length only (MACs,
/// token hashes, OAuth state).
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The first value of cookie `name` among `Cookie` headers, if at most
/// `max` bytes (pairs that are not text are skipped).
pub fn cookie<'a>(
    headers: impl IntoIterator<Item = &'a [u8]>,
    name: &str,
    max: usize,
) -> Option<&'a str> {
    for h in headers {
        for pair in h.split(|&b| b == b';') {
            let Ok(pair) = std::str::from_utf8(pair) else {
                continue;
            };
            if let Some(v) = pair
                .trim()
                .strip_prefix(name)
                .and_then(|r| r.strip_prefix('='))
            {
                if !v.is_empty() && v.len() <= max {
                    return Some(v);
                }
            }
        }
    }
    None
}

impl Signer {
    pub fn new(secret: &[u8], ttl: Duration) -> Signer {
        Signer {
            key: secret.to_vec(),
            ttl,
        }
    }

    fn mac(&self, key: &TicketKey, view: View, expiry: u64, generation: u64) -> String {
        // new_from_slice accepts keys of any length for HMAC.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return String::new();
        };
        mac.update(format!("{key}|{}|{expiry}|{generation}", view.as_str()).as_bytes());
        let mut out = hex::encode(mac.finalize().into_bytes());
        out.truncate(MAC_HEX);
        out
    }

    /// A token for `key`'s `view`, valid for the configured lifetime.
    pub fn mint(&self, key: &TicketKey, view: View, generation: u64) -> String {
        self.mint_at(key, view, generation, now_secs() + self.ttl.as_secs())
    }

    /// A token expiring at `expiry` (seconds since the epoch).
    pub fn mint_at(&self, key: &TicketKey, view: View, generation: u64, expiry: u64) -> String {
        format!(
            "{expiry}.{generation}.{}",
            self.mac(key, view, expiry, generation)
        )
    }

    /// A preview pass for a signed-in person in `role`, valid until `expiry`:
    /// `p1.<expiry>.<role>.<mac>`.
    pub fn mint_pass(&self, role: Role, expiry: u64) -> String {
        format!(
            "p1.{expiry}.{}.{}",
            role.as_str(),
            self.pass_mac(role, expiry)
        )
    }

    fn pass_mac(&self, role: Role, expiry: u64) -> String {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return String::new();
        };
        mac.update(format!("preview-pass|{}|{expiry}", role.as_str()).as_bytes());
        let mut out = hex::encode(mac.finalize().into_bytes());
        out.truncate(MAC_HEX);
        out
    }

    /// The role of a genuine, unexpired preview pass.
    pub fn verify_pass(&self, pass: Option<&str>) -> Option<Role> {
        let (exp, role, mac) = pass_parts(pass?)?;
        let role: Role = role.parse().ok()?;
        let expected = self.pass_mac(role, exp);
        (same(expected.as_bytes(), mac.as_bytes()) && exp > now_secs()).then_some(role)
    }

    /// Checks a token against the ticket's current link generation.
    pub fn verify(
        &self,
        token: Option<&str>,
        key: &TicketKey,
        view: View,
        generation: u64,
    ) -> Result<(), Refusal> {
        let token = token.ok_or(Refusal::Missing)?;
        let mut parts = token.split('.');
        let (Some(exp), Some(gen), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Refusal::Malformed);
        };
        let (Ok(exp), Ok(gen)) = (exp.parse::<u64>(), gen.parse::<u64>()) else {
            return Err(Refusal::Malformed);
        };
        if mac.len() != MAC_HEX || !mac.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Refusal::Malformed);
        }
        let expected = self.mac(key, view, exp, gen);
        if !same(expected.as_bytes(), mac.to_ascii_lowercase().as_bytes()) {
            return Err(Refusal::Invalid);
        }
        if gen != generation {
            return Err(Refusal::Revoked);
        }
        if exp <= now_secs() {
            return Err(Refusal::Expired);
        }
        Ok(())
    }
}

/// The revocation id and expiry (ms) of a preview pass as written
/// (`p1.<expiry>.<role>.<mac>`): what sign-out revokes, and what the data
/// plane looks up. The caller verifies the pass first.
pub fn pass_revocation(pass: &str) -> Option<(String, u64)> {
    let (exp, _, mac) = pass_parts(pass)?;
    Some((format!("pass:{mac}"), exp.saturating_mul(1000)))
}

/// A pass's expiry, role and signature, as written (`p1.<exp>.<role>.<mac>`).
fn pass_parts(pass: &str) -> Option<(u64, &str, &str)> {
    let mut parts = pass.split('.');
    let (Some("p1"), Some(exp), Some(role), Some(mac), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    Some((exp.parse().ok()?, role, mac))
}

/// Whether a string can be a token (checked before it goes into a cookie).
pub fn looks_like_token(s: &str) -> bool {
    s.len() <= 64 && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'.')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_expire_revoke_and_resist_tampering() {
        let s = Signer::new(
            b"0123456789abcdef0123456789abcdef",
            Duration::from_secs(3600),
        );
        let k = TicketKey::parse("TKT-1").unwrap();
        let t = s.mint(&k, View::Qa, 0);
        assert_eq!(s.verify(Some(&t), &k, View::Qa, 0), Ok(()));
        assert_eq!(
            s.verify(Some(&t), &k, View::Dev, 0),
            Err(Refusal::Invalid),
            "bound to the view"
        );
        let other = TicketKey::parse("TKT-2").unwrap();
        assert_eq!(
            s.verify(Some(&t), &other, View::Qa, 0),
            Err(Refusal::Invalid),
            "bound to the ticket"
        );
        assert_eq!(s.verify(Some(&t), &k, View::Qa, 1), Err(Refusal::Revoked));
        let old = s.mint_at(&k, View::Qa, 0, 1);
        assert_eq!(s.verify(Some(&old), &k, View::Qa, 0), Err(Refusal::Expired));
        let mut tampered = t.clone();
        let last = tampered.pop().unwrap();
        tampered.push(if last == '0' { '1' } else { '0' });
        assert_eq!(
            s.verify(Some(&tampered), &k, View::Qa, 0),
            Err(Refusal::Invalid)
        );
        let longer = t.replacen('.', "9.", 1);
        assert_eq!(
            s.verify(Some(&longer), &k, View::Qa, 0),
            Err(Refusal::Invalid),
            "expiry is signed"
        );
        for bad in ["", "x", "1.2", "1.2.3.4", "a.b.cc", "1.2.zz"] {
            assert_eq!(
                s.verify(Some(bad), &k, View::Qa, 0),
                Err(Refusal::Malformed),
                "{bad}"
            );
        }
        assert_eq!(s.verify(None, &k, View::Qa, 0), Err(Refusal::Missing));

        // Preview passes: signed, expiring, role-bound.
        let pass = s.mint_pass(Role::Qa, now_secs() + 60);
        assert_eq!(s.verify_pass(Some(&pass)), Some(Role::Qa));
        assert_eq!(s.verify_pass(Some(&pass.replace(".qa.", ".admin."))), None);
        assert_eq!(
            s.verify_pass(Some(&s.mint_pass(Role::Qa, 1))),
            None,
            "expired"
        );
        for bad in ["", "p1", "p1.1.qa", "p2.9999999999.qa.00", "p1.x.qa.00"] {
            assert_eq!(s.verify_pass(Some(bad)), None, "{bad}");
        }
        let gate = |access| Gate {
            signer: s.clone(),
            access,
            roles: vec![Role::Qa, Role::Admin],
            login: "/__stamp/login".into(),
            app: String::new(),
        };
        assert_eq!(
            gate(Access::SignIn).login_url("/?qa=TKT-1"),
            "/__stamp/login?next=%2F%3Fqa%3DTKT-1"
        );
        let dev_pass = s.mint_pass(Role::Dev, now_secs() + 60);
        let g = gate(Access::ShareLink);
        assert_eq!(
            g.admit(None, Some(&pass), &k, View::Qa, 0),
            Err(Refusal::Missing)
        );
        assert_eq!(g.admit(Some(&t), None, &k, View::Qa, 0), Ok(()));
        let g = gate(Access::SignIn);
        assert_eq!(
            g.admit(Some(&t), None, &k, View::Qa, 0),
            Err(Refusal::SignIn),
            "links alone do not"
        );
        assert_eq!(g.admit(None, Some(&pass), &k, View::Qa, 0), Ok(()));
        assert_eq!(
            g.admit(None, Some(&dev_pass), &k, View::Qa, 0),
            Err(Refusal::Role)
        );
        assert!(g.sign_in_helps(Refusal::SignIn) && !g.sign_in_helps(Refusal::Role));
        let g = gate(Access::Either);
        assert_eq!(g.admit(Some(&t), None, &k, View::Qa, 0), Ok(()));
        assert_eq!(g.admit(None, Some(&pass), &k, View::Qa, 0), Ok(()));
        assert_eq!(g.admit(None, None, &k, View::Qa, 0), Err(Refusal::SignIn));
        assert_eq!(
            g.admit(Some(&old), None, &k, View::Qa, 0),
            Err(Refusal::Expired)
        );
        assert_eq!(g.admit(Some(&old), Some(&pass), &k, View::Qa, 0), Ok(()));
        let wrong_key = Signer::new(b"another secret, as long as it is", Duration::from_secs(60));
        assert_eq!(
            wrong_key.verify(Some(&t), &k, View::Qa, 0),
            Err(Refusal::Invalid)
        );
    }
}
