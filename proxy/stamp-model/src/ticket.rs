//! The vocabulary everything else speaks: ticket keys, stages, views, content
//! hashes, module references and override sets.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The query parameter that marks a request for a ticket module body:
/// `/src/lib/greet.js?__ts=<sha256 hex>`. The path stays the production path so
/// that relative imports and `import.meta.url` resolve exactly as in production.
pub const MODULE_PARAM: &str = "__ts";

/// Longest ticket key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 64;

/// Why a ticket key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("ticket key is empty")]
    Empty,
    #[error("ticket key is longer than {MAX_KEY_LEN} characters")]
    TooLong,
    #[error("ticket key must look like PROJ-123 (letters, digits or _ then '-' and a number)")]
    Malformed,
}

/// Whether `project` is a project key, `[A-Z][A-Z0-9_]+` (upper case).
pub fn is_project_key(project: &str) -> bool {
    let mut chars = project.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && project.len() >= 2
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// A Jira-style ticket key, `[A-Z][A-Z0-9_]+-[0-9]+`, stored upper-case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TicketKey(String);

impl TicketKey {
    /// Parses and normalises (upper-cases) a key; input is case-insensitive.
    pub fn parse(input: &str) -> Result<Self, KeyError> {
        if input.is_empty() {
            return Err(KeyError::Empty);
        }
        if input.len() > MAX_KEY_LEN {
            return Err(KeyError::TooLong);
        }
        let upper = input.to_ascii_uppercase();
        let (project, number) = upper.rsplit_once('-').ok_or(KeyError::Malformed)?;
        let number_ok = !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit());
        if is_project_key(project) && number_ok {
            Ok(TicketKey(upper))
        } else {
            Err(KeyError::Malformed)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TicketKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TicketKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        TicketKey::parse(s)
    }
}

impl TryFrom<String> for TicketKey {
    type Error = KeyError;
    fn try_from(s: String) -> Result<Self, KeyError> {
        TicketKey::parse(&s)
    }
}

impl From<TicketKey> for String {
    fn from(k: TicketKey) -> String {
        k.0
    }
}

/// Where a ticket stands in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Dev,
    Qa,
    Prod,
    Closed,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Dev => "dev",
            Stage::Qa => "qa",
            Stage::Prod => "prod",
            Stage::Closed => "closed",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stage name that is not one of `dev`, `qa`, `prod`, `closed`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown stage `{0}` (expected dev, qa, prod or closed)")]
pub struct StageError(pub String);

impl FromStr for Stage {
    type Err = StageError;
    fn from_str(s: &str) -> Result<Self, StageError> {
        match s.to_ascii_lowercase().as_str() {
            "dev" => Ok(Stage::Dev),
            "qa" => Ok(Stage::Qa),
            "prod" => Ok(Stage::Prod),
            "closed" => Ok(Stage::Closed),
            _ => Err(StageError(s.to_string())),
        }
    }
}

/// Which of a ticket's views a browser asked for (`?dev=` or `?qa=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum View {
    Dev,
    Qa,
}

impl View {
    pub fn as_str(self) -> &'static str {
        match self {
            View::Dev => "dev",
            View::Qa => "qa",
        }
    }

    /// The view that shows a ticket in `stage` as QA would see it: `qa` once
    /// it has a qa snapshot (qa, prod), `dev` otherwise.
    pub fn for_stage(stage: Stage) -> View {
        match stage {
            Stage::Qa | Stage::Prod => View::Qa,
            Stage::Dev | Stage::Closed => View::Dev,
        }
    }
}

/// A SHA-256 digest: the identity of a module body or of an override set.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Hash([u8; 32]);

impl Hash {
    pub fn of(bytes: &[u8]) -> Hash {
        Hash(Sha256::digest(bytes).into())
    }

    /// Parses 64 lower- or upper-case hex digits.
    pub fn parse(hex_digits: &str) -> Option<Hash> {
        if hex_digits.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_digits, &mut out).ok()?;
        Some(Hash(out))
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The Subresource Integrity form, `sha256-<base64>`.
    pub fn sri(&self) -> String {
        use base64::Engine;
        format!(
            "sha256-{}",
            base64::engine::general_purpose::STANDARD.encode(self.0)
        )
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", &hex::encode(self.0)[..12])
    }
}

impl TryFrom<String> for Hash {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Hash::parse(&s).ok_or_else(|| format!("`{s}` is not a sha256 hex digest"))
    }
}

impl From<Hash> for String {
    fn from(h: Hash) -> String {
        h.to_hex()
    }
}

/// One overridden module: where production serves it and which body replaces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleRef {
    /// Where production serves the module: an absolute URL path on the
    /// app's origin (`/src/lib/greet.js`), or an absolute URL on another
    /// origin (`https://cdn.example/lib/greet.js`), see [`crate::assets`].
    pub path: String,
    /// The ticket's body.
    pub hash: Hash,
    /// Body size in bytes, for listings.
    pub size: u64,
}

impl ModuleRef {
    /// The URL the proxy serves the ticket's version at: the production path
    /// (same directory, same file name) plus the content hash in the query.
    pub fn url(&self) -> String {
        module_url(&self.path, &self.hash)
    }
}

/// `path?__ts=<hash>`, or for a module on another origin its mirror path
/// (`/__stamp/o/https/cdn.example/lib/x.js?__ts=<hash>`).
pub fn module_url(path: &str, hash: &Hash) -> String {
    format!("{}?{MODULE_PARAM}={hash}", crate::assets::serve_path(path))
}

/// Specifier → module. A specifier is either the module's URL path
/// (`/src/lib/greet.js`) or a bare specifier mapped by the project (`@shop/cart`).
pub type OverrideSet = BTreeMap<String, ModuleRef>;

/// The content address of an override set (sha256 of its canonical JSON).
pub fn set_id(set: &OverrideSet) -> Hash {
    // A BTreeMap serialises in key order, so the JSON is canonical.
    let json = serde_json::to_vec(set).unwrap_or_default();
    Hash::of(&json)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_normalised_and_validated() {
        assert_eq!(TicketKey::parse("tkt-001").unwrap().as_str(), "TKT-001");
        assert_eq!(TicketKey::parse("AB_2-7").unwrap().as_str(), "AB_2-7");
        for bad in [
            "", "T-1", "1TK-1", "TKT", "TKT-", "TKT-1a", "TKT--1", "TK T-1", "TKT-1 ", "_TK-1",
            "TKT-1;", "TKT-１",
        ] {
            assert!(TicketKey::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(TicketKey::parse(&"A".repeat(70)), Err(KeyError::TooLong));
    }

    #[test]
    fn hash_round_trips_through_hex_and_sri() {
        let h = Hash::of(b"export default 1;\n");
        assert_eq!(Hash::parse(&h.to_hex()), Some(h));
        assert_eq!(Hash::parse(&h.to_hex().to_uppercase()), Some(h));
        assert!(Hash::parse("abc").is_none());
        assert!(Hash::parse(&"g".repeat(64)).is_none());
        assert!(h.sri().starts_with("sha256-"));
    }

    #[test]
    fn module_url_keeps_the_production_directory() {
        let m = ModuleRef {
            path: "/src/lib/greet.js".into(),
            hash: Hash::of(b"x"),
            size: 1,
        };
        assert!(m.url().starts_with("/src/lib/greet.js?__ts="));
    }
}
