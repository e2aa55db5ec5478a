//! Listing tickets a page at a time: the query `GET tickets` takes, its
//! order, and the cursor that continues it.
//!
//! Tickets come most recently updated first (then by key). A cursor names
//! the last ticket of a page (its `updated_ms` and key), so the next page
//! starts strictly after it: pages neither repeat nor skip a ticket that
//! stays as it was while the client pages. A ticket updated meanwhile moves
//! to the front, where a client that starts again finds it.

use base64::Engine as _;

use crate::record::TicketRecord;
use crate::ticket::{Stage, TicketKey};

/// A page's size when the query names none.
pub const DEFAULT_LIMIT: usize = 100;
/// The largest page.
pub const MAX_LIMIT: usize = 500;
/// The longest `q` and `who`.
pub const MAX_TEXT: usize = 200;

/// `GET tickets?stage=&q=&who=&updated_since=&limit=&cursor=`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// Only these stages (`stage=dev,qa`); all when `None`.
    pub stages: Option<Vec<Stage>>,
    /// Part of the key, any case (`q=checkout`).
    pub text: Option<String>,
    /// Someone who acted on the ticket (uploaded, moved, signed off), as
    /// its history names them (`who=alice`), any case.
    pub who: Option<String>,
    /// Updated at or after this time, in ms since the Unix epoch
    /// (`updated_since=1733390000000` or an RFC 3339 time).
    pub updated_since_ms: Option<u64>,
    pub limit: usize,
    /// Continue after this ticket.
    pub after: Option<Cursor>,
}

impl Default for ListQuery {
    fn default() -> ListQuery {
        ListQuery {
            stages: None,
            text: None,
            who: None,
            updated_since_ms: None,
            limit: DEFAULT_LIMIT,
            after: None,
        }
    }
}

/// What was wrong with a query: the parameter and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{param}: {reason}")]
pub struct QueryError {
    pub param: &'static str,
    pub reason: String,
}

fn bad(param: &'static str, reason: impl Into<String>) -> QueryError {
    QueryError {
        param,
        reason: reason.into(),
    }
}

impl ListQuery {
    /// Parses a query string; unknown parameters are ignored, a parameter
    /// given twice is refused.
    pub fn parse(query: &str) -> Result<ListQuery, QueryError> {
        let mut q = ListQuery::default();
        let mut seen = std::collections::HashSet::new();
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            let param: &'static str = match k.as_ref() {
                "stage" => "stage",
                "q" => "q",
                "who" => "who",
                "updated_since" => "updated_since",
                "limit" => "limit",
                "cursor" => "cursor",
                _ => continue,
            };
            if !seen.insert(param) {
                return Err(bad(param, "is given twice"));
            }
            match param {
                "stage" => {
                    let mut list = Vec::new();
                    for s in v.split(',').filter(|s| !s.is_empty()) {
                        list.push(
                            s.parse::<Stage>()
                                .map_err(|e| bad("stage", e.to_string()))?,
                        );
                    }
                    q.stages = Some(list);
                }
                "q" | "who" => {
                    let text = v.trim();
                    if text.chars().count() > MAX_TEXT {
                        return Err(bad(param, format!("is longer than {MAX_TEXT} characters")));
                    }
                    if text.chars().any(char::is_control) {
                        return Err(bad(param, "has control characters"));
                    }
                    let slot = if param == "q" {
                        &mut q.text
                    } else {
                        &mut q.who
                    };
                    *slot = (!text.is_empty()).then(|| text.to_lowercase());
                }
                "updated_since" => q.updated_since_ms = Some(parse_time(&v)?),
                "limit" => {
                    q.limit = v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| bad("limit", format!("must be 1 to {MAX_LIMIT}")))?;
                }
                _ => q.after = Some(Cursor::decode(&v)?),
            }
        }
        Ok(q)
    }

    /// The query string that asks for this (for clients).
    pub fn to_query(&self) -> String {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        if let Some(stages) = &self.stages {
            let names: Vec<&str> = stages.iter().map(|s| s.as_str()).collect();
            s.append_pair("stage", &names.join(","));
        }
        if let Some(t) = &self.text {
            s.append_pair("q", t);
        }
        if let Some(w) = &self.who {
            s.append_pair("who", w);
        }
        if let Some(ms) = self.updated_since_ms {
            s.append_pair("updated_since", &ms.to_string());
        }
        s.append_pair("limit", &self.limit.to_string());
        if let Some(c) = &self.after {
            s.append_pair("cursor", &c.encode());
        }
        s.finish()
    }

    /// Whether a ticket passes the filters the record alone decides
    /// (stage, key text, time), wherever the cursor is; `who` needs its
    /// history.
    pub fn matches(&self, t: &TicketRecord) -> bool {
        self.stages.as_ref().is_none_or(|s| s.contains(&t.stage))
            && self
                .text
                .as_ref()
                .is_none_or(|text| t.key.as_str().to_lowercase().contains(text.as_str()))
            && self.updated_since_ms.is_none_or(|ms| t.updated_ms >= ms)
    }

    /// [`ListQuery::matches`], and after the cursor: on this page or a
    /// later one.
    pub fn admits(&self, t: &TicketRecord) -> bool {
        self.matches(t) && self.after.as_ref().is_none_or(|c| c.precedes(t))
    }
}

/// Milliseconds since the epoch, or an RFC 3339 time.
fn parse_time(v: &str) -> Result<u64, QueryError> {
    if let Ok(ms) = v.parse::<u64>() {
        return Ok(ms);
    }
    humantime::parse_rfc3339_weak(v)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| u64::try_from(d.as_millis()).ok())
        .ok_or_else(|| {
            bad(
                "updated_since",
                "must be milliseconds since the Unix epoch or an RFC 3339 time (2026-12-05T10:00:00Z)",
            )
        })
}

/// The order of a listing: most recently updated first, then by key.
pub fn order(a: &TicketRecord, b: &TicketRecord) -> std::cmp::Ordering {
    b.updated_ms
        .cmp(&a.updated_ms)
        .then_with(|| a.key.cmp(&b.key))
}

/// Where a page ended: the last ticket it listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub updated_ms: u64,
    pub key: TicketKey,
}

impl Cursor {
    pub fn after(t: &TicketRecord) -> Cursor {
        Cursor {
            updated_ms: t.updated_ms,
            key: t.key.clone(),
        }
    }

    /// Opaque to clients: base64url of `<updated_ms>.<key>`.
    pub fn encode(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
            "{}.{}",
            self.updated_ms,
            self.key.as_str()
        ))
    }

    pub fn decode(text: &str) -> Result<Cursor, QueryError> {
        let invalid = || {
            bad(
                "cursor",
                "is not a cursor this server gave (start again without it)",
            )
        };
        if text.len() > 200 {
            return Err(invalid());
        }
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| invalid())?;
        let raw = String::from_utf8(raw).map_err(|_| invalid())?;
        let (ms, key) = raw.split_once('.').ok_or_else(invalid)?;
        Ok(Cursor {
            updated_ms: ms.parse().map_err(|_| invalid())?,
            key: TicketKey::parse(key).map_err(|_| invalid())?,
        })
    }

    /// Whether `t` comes after this cursor in [`order`].
    pub fn precedes(&self, t: &TicketRecord) -> bool {
        t.updated_ms < self.updated_ms || (t.updated_ms == self.updated_ms && t.key > self.key)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ticket::Hash;

    fn record(key: &str, updated_ms: u64, stage: Stage) -> TicketRecord {
        TicketRecord {
            stage,
            updated_ms,
            ..TicketRecord::new(TicketKey::parse(key).unwrap(), Hash::of(b""), 0)
        }
    }

    /// Pages of every size walk every ticket once, in order, even where
    /// several share an update time.
    #[test]
    fn pages_neither_repeat_nor_skip() {
        let mut all: Vec<TicketRecord> = (1..58)
            .map(|i| record(&format!("TKT-{i}"), 1000 + (i / 4) * 10, Stage::Dev))
            .collect();
        all.sort_by(order);
        for limit in [1, 2, 3, 7, 56, 57, 100] {
            let mut q = ListQuery {
                limit,
                ..ListQuery::default()
            };
            let mut seen = Vec::new();
            loop {
                let page: Vec<&TicketRecord> =
                    all.iter().filter(|t| q.admits(t)).take(limit).collect();
                seen.extend(page.iter().map(|t| t.key.clone()));
                if page.len() < limit {
                    break;
                }
                // Through the wire and back, as a client sends it.
                let next = Cursor::after(page[page.len() - 1]).encode();
                q = ListQuery::parse(&format!("limit={limit}&cursor={next}")).unwrap();
            }
            let want: Vec<TicketKey> = all.iter().map(|t| t.key.clone()).collect();
            assert_eq!(seen, want, "limit {limit}");
        }
    }

    #[test]
    fn filters_by_stage_text_and_time() {
        let q = ListQuery::parse("stage=qa,prod&q=CHECK&updated_since=2000").unwrap();
        assert!(q.admits(&record("CHECKOUT-1", 2000, Stage::Qa)));
        assert!(!q.admits(&record("CHECKOUT-1", 1999, Stage::Qa)));
        assert!(!q.admits(&record("CHECKOUT-1", 3000, Stage::Dev)));
        assert!(!q.admits(&record("CART-1", 3000, Stage::Prod)));
        let q = ListQuery::parse("updated_since=2026-12-05T10:00:00Z").unwrap();
        assert_eq!(q.updated_since_ms, Some(1_796_464_800_000));
        let q = ListQuery::parse("q=+ab+&who=Alice").unwrap();
        assert_eq!(q.text.as_deref(), Some("ab"));
        assert_eq!(q.who.as_deref(), Some("alice"));
        assert_eq!(ListQuery::parse("").unwrap(), ListQuery::default());
        let round = ListQuery::parse("stage=dev&q=x&who=y&updated_since=5&limit=7").unwrap();
        assert_eq!(ListQuery::parse(&round.to_query()).unwrap(), round);
    }

    #[test]
    fn hostile_queries_are_refused_by_name() {
        let long = "x".repeat(MAX_TEXT + 1);
        let long_q = format!("q={long}");
        for (query, param) in [
            ("limit=0", "limit"),
            ("limit=501", "limit"),
            ("limit=-1", "limit"),
            ("limit=1e3", "limit"),
            ("stage=nope", "stage"),
            ("cursor=%%%", "cursor"),
            ("cursor=bm90LWEtY3Vyc29y", "cursor"),
            ("cursor=MTIzLi4vLi4vZXRj", "cursor"),
            ("updated_since=yesterday", "updated_since"),
            ("q=a%0Ab", "q"),
            ("who=%00", "who"),
            (long_q.as_str(), "q"),
            ("limit=5&limit=6", "limit"),
        ] {
            let e = ListQuery::parse(query).unwrap_err();
            assert_eq!(e.param, param, "{query}: {e}");
        }
        let huge = "A".repeat(10_000);
        assert_eq!(
            ListQuery::parse(&format!("cursor={huge}"))
                .unwrap_err()
                .param,
            "cursor"
        );
    }
}
