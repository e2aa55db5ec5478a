//! Releasing by steps: a released ticket reaches a share of production's
//! visitors first, a larger one at each step, and every visitor at 100%.
//! Pure rules shared by the data plane (who is in the slice), the control
//! plane (steps, and whether the ticket's side regressed) and the CLI (the
//! schedule's syntax).
//!
//! **Who is in the slice.** A visitor carries a random id in a cookie
//! ([`VISITOR_COOKIE`]); their bucket for a ticket is a hash of the
//! ticket's key and that id, in `0..10_000`, and they are on the ticket's
//! side when it is below the rollout's share. Every proxy of a fleet
//! computes the same side with no shared state; a larger share keeps
//! everyone who was in; tickets in rollout at the same time slice
//! independently.
//!
//! **Whether the ticket's side regressed.** Page views with at least one
//! error, as the pages' probes reported them, per side over the same window:
//! a one-sided two-proportion z-test, once each side has enough views.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ticket::TicketKey;

/// The cookie that holds a visitor's random id while any rollout runs.
pub const VISITOR_COOKIE: &str = "ticket_stamp_visitor";
/// Buckets a visitor falls into, per ticket.
pub const BUCKETS: u32 = 10_000;

/// A released ticket's rollout in progress (on its record, in prod).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    /// The share of production's visitors on the ticket's side, in percent
    /// (1 to 99; 100 ends the rollout).
    pub percent: u8,
    /// The steps still to take, in order (each larger than the last; the
    /// last is 100).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<u8>,
    /// Time between steps (ms); 0: steps are taken by hand.
    #[serde(default)]
    pub every_ms: u64,
    /// When the current step began (its window starts here).
    pub step_at_ms: u64,
    #[serde(default)]
    pub paused: bool,
}

impl Rollout {
    /// When the next step is due, if it is taken on a schedule.
    pub fn due_ms(&self) -> Option<u64> {
        (self.every_ms > 0 && !self.paused && !self.steps.is_empty())
            .then(|| self.step_at_ms.saturating_add(self.every_ms))
    }

    /// The next share: the next planned step, else 100.
    pub fn next_percent(&self) -> u8 {
        self.steps.first().copied().unwrap_or(100)
    }
}

/// A visitor id as the cookie carries it: 16 to 64 lowercase hex digits.
pub fn visitor_id(value: &str) -> Option<&str> {
    let ok = (16..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    ok.then_some(value)
}

/// A visitor id from 128 random bits (the caller's randomness: the model
/// does no I/O).
pub fn visitor_id_from(bits: u128) -> String {
    format!("{bits:032x}")
}

/// The visitor's bucket for a ticket, in `0..BUCKETS`.
pub fn bucket(key: &TicketKey, visitor: &str) -> u32 {
    let mut h = Sha256::new();
    h.update(key.as_str().as_bytes());
    h.update(b":");
    h.update(visitor.as_bytes());
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]]) % BUCKETS
}

/// Whether the visitor is on the ticket's side of a rollout at `percent`.
pub fn in_slice(key: &TicketKey, visitor: &str, percent: u8) -> bool {
    bucket(key, visitor) < u32::from(percent.min(100)) * (BUCKETS / 100)
}

/// A schedule as written: shares in percent, each larger than the last,
/// ending at 100 (`5,25,100`), and the time between steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub steps: Vec<u8>,
    pub every: Duration,
}

/// Reads `5,25,100` (or `5 25 100`, with optional `%`): the first share and
/// the steps after it. One number is a single step (`10`: 10%, then by hand).
pub fn parse_steps(text: &str) -> Result<Vec<u8>, String> {
    let mut out: Vec<u8> = Vec::new();
    for part in text.split([',', ' ']).filter(|p| !p.trim().is_empty()) {
        let p = part.trim().trim_end_matches('%');
        let n: u8 = p
            .parse()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| format!("`{part}` is not a share from 1 to 100"))?;
        if out.last().is_some_and(|last| n <= *last) {
            return Err(format!(
                "shares must grow: {n} after {}",
                out[out.len() - 1]
            ));
        }
        out.push(n);
    }
    if out.is_empty() {
        return Err("no share given (e.g. 10, or 5,25,100)".into());
    }
    Ok(out)
}

/// Page views of one side over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SideCounts {
    pub views: u64,
    /// Views with at least one error.
    pub erring_views: u64,
}

impl SideCounts {
    pub fn rate(&self) -> f64 {
        if self.views == 0 {
            0.0
        } else {
            self.erring_views.min(self.views) as f64 / self.views as f64
        }
    }
}

/// When the ticket's side counts as worse than production's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rule {
    /// Views each side needs before anything is decided.
    pub min_views: u64,
    /// One-sided confidence that the ticket's error rate is higher (0.99:
    /// a z of 2.33).
    pub confidence: f64,
    /// The least increase of the error rate that counts (absolute, 0.01:
    /// one percentage point), so a tiny real difference on huge traffic
    /// does not revert a ticket.
    pub min_increase: f64,
}

impl Default for Rule {
    fn default() -> Self {
        Rule {
            min_views: 200,
            confidence: 0.99,
            min_increase: 0.01,
        }
    }
}

/// What the numbers say about the ticket's side.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "lowercase")]
pub enum Verdict {
    /// Not enough views yet.
    Waiting {
        ticket: SideCounts,
        production: SideCounts,
        needed: u64,
    },
    Healthy {
        ticket: SideCounts,
        production: SideCounts,
        z: f64,
    },
    Regressed {
        ticket: SideCounts,
        production: SideCounts,
        z: f64,
    },
}

impl Verdict {
    pub fn is_regressed(&self) -> bool {
        matches!(self, Verdict::Regressed { .. })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Waiting { .. } => "waiting",
            Verdict::Healthy { .. } => "healthy",
            Verdict::Regressed { .. } => "regressed",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = |c: &SideCounts| {
            format!(
                "{} of {} views erred ({:.1}%)",
                c.erring_views,
                c.views,
                c.rate() * 100.0
            )
        };
        match self {
            Verdict::Waiting {
                ticket,
                production,
                needed,
            } => write!(
                f,
                "waiting for {needed} views a side: ticket {}, production {}",
                ticket.views, production.views
            ),
            Verdict::Healthy {
                ticket,
                production,
                z,
            } => write!(
                f,
                "healthy: ticket {}, production {} (z = {z:.2})",
                side(ticket),
                side(production)
            ),
            Verdict::Regressed {
                ticket,
                production,
                z,
            } => write!(
                f,
                "regressed: ticket {}, production {} (z = {z:.2})",
                side(ticket),
                side(production)
            ),
        }
    }
}

/// The z a one-sided test at `confidence` needs (Acklam's approximation of
/// the normal quantile; error below 1.2e-9 over (0, 1)).
pub fn z_for(confidence: f64) -> f64 {
    let p = confidence.clamp(1e-9, 1.0 - 1e-9);
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let low = 0.024_25;
    if p < low {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - low {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        let q = (-2.0 * (1.0 - p).ln()).sqrt();
        -(((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    }
}

/// Compares the ticket's side with production's over the same window.
pub fn judge(ticket: SideCounts, production: SideCounts, rule: &Rule) -> Verdict {
    let clamp = |c: SideCounts| SideCounts {
        views: c.views,
        erring_views: c.erring_views.min(c.views),
    };
    let (ticket, production) = (clamp(ticket), clamp(production));
    if ticket.views < rule.min_views.max(1) || production.views < rule.min_views.max(1) {
        return Verdict::Waiting {
            ticket,
            production,
            needed: rule.min_views.max(1),
        };
    }
    let (n1, n2) = (ticket.views as f64, production.views as f64);
    let (p1, p2) = (ticket.rate(), production.rate());
    let pooled = (ticket.erring_views + production.erring_views) as f64 / (n1 + n2);
    let se = (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)).sqrt();
    let z = if se > 0.0 { (p1 - p2) / se } else { 0.0 };
    // Worse only when the ticket's side errs more (a rule of 50% confidence
    // and no minimum would otherwise find two clean sides regressed), and
    // by at least the minimum, with room for the rounding of the two rates
    // (6/200 − 4/200 is 0.00999…).
    if p1 > p2 && z >= z_for(rule.confidence) && p1 - p2 + 1e-9 >= rule.min_increase {
        Verdict::Regressed {
            ticket,
            production,
            z,
        }
    } else {
        Verdict::Healthy {
            ticket,
            production,
            z,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn key(k: &str) -> TicketKey {
        TicketKey::parse(k).unwrap()
    }

    #[test]
    fn slices_are_sticky_nested_independent_and_near_their_share() {
        let a = key("TKT-1");
        let b = key("TKT-2");
        let ids: Vec<String> = (0..20_000).map(|i| format!("{i:032x}")).collect();
        let at = |k: &TicketKey, p: u8| ids.iter().filter(|v| in_slice(k, v, p)).count();
        // Near the share.
        for p in [1u8, 10, 50] {
            let n = at(&a, p) as f64 / ids.len() as f64;
            assert!((n - f64::from(p) / 100.0).abs() < 0.01, "{p}%: {n}");
        }
        // A larger share keeps everyone who was in.
        assert!(ids
            .iter()
            .all(|v| !in_slice(&a, v, 10) || in_slice(&a, v, 25)));
        assert_eq!(at(&a, 100), ids.len());
        assert_eq!(at(&a, 0), 0);
        // Two tickets slice independently: about 10% of a's slice is in b's.
        let both = ids
            .iter()
            .filter(|v| in_slice(&a, v, 50) && in_slice(&b, v, 10))
            .count() as f64;
        assert!((both / at(&a, 50) as f64 - 0.10).abs() < 0.02, "{both}");
        // The same answer every time, in every process.
        assert_eq!(bucket(&a, &ids[7]), bucket(&a, &ids[7]));
    }

    #[test]
    fn visitor_ids_are_checked_and_fresh_ones_differ() {
        assert!(visitor_id(&visitor_id_from(7)).is_some());
        assert_eq!(visitor_id_from(255), format!("{:0>32}", "ff"));
        for bad in [
            "",
            "abc",
            "ABCDEF0123456789",
            "0123456789abcdeg",
            &"a".repeat(65),
            "0123456789abcdef;x",
        ] {
            assert!(visitor_id(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn schedules_grow_to_their_end() {
        assert_eq!(parse_steps("5,25,100").unwrap(), [5, 25, 100]);
        assert_eq!(parse_steps("10%").unwrap(), [10]);
        assert_eq!(parse_steps(" 5 50 ").unwrap(), [5, 50]);
        for bad in ["", "0", "101", "25,5", "5,5", "x", "5,,y"] {
            assert!(parse_steps(bad).is_err(), "{bad}");
        }
        let r = Rollout {
            percent: 5,
            steps: vec![25, 100],
            every_ms: 1000,
            step_at_ms: 10,
            paused: false,
        };
        assert_eq!(r.due_ms(), Some(1010));
        assert_eq!(r.next_percent(), 25);
        assert_eq!(
            Rollout {
                paused: true,
                ..r.clone()
            }
            .due_ms(),
            None
        );
        assert_eq!(Rollout { every_ms: 0, ..r }.due_ms(), None);
    }

    #[test]
    fn the_normal_quantile_is_right() {
        for (c, z) in [
            (0.5, 0.0),
            (0.95, 1.644_854),
            (0.99, 2.326_348),
            (0.999, 3.090_232),
        ] {
            assert!((z_for(c) - z).abs() < 1e-5, "{c}: {}", z_for(c));
        }
        assert!((z_for(0.01) + 2.326_348).abs() < 1e-5);
    }

    #[test]
    fn a_regression_needs_views_significance_and_size() {
        let rule = Rule {
            min_views: 20,
            confidence: 0.99,
            min_increase: 0.01,
        };
        let c = |views, erring_views| SideCounts {
            views,
            erring_views,
        };
        // Too few views on a side: wait, whatever the rates.
        assert!(matches!(
            judge(c(19, 19), c(100, 0), &rule),
            Verdict::Waiting { .. }
        ));
        // Every ticket view erred, none of production's.
        assert!(judge(c(20, 20), c(20, 0), &rule).is_regressed());
        // The same rates: healthy.
        assert!(!judge(c(1000, 50), c(1000, 50), &rule).is_regressed());
        // Better than production: healthy.
        assert!(!judge(c(100, 0), c(100, 10), &rule).is_regressed());
        // Higher, but not significant on this traffic.
        assert!(!judge(c(50, 3), c(50, 1), &rule).is_regressed());
        // Significant, but smaller than the least increase that counts.
        let big = Rule {
            min_increase: 0.01,
            ..rule
        };
        assert!(!judge(c(10_000_000, 50_500), c(10_000_000, 50_000), &big).is_regressed());
        // Nothing erred anywhere: healthy, not a division by zero.
        assert!(!judge(c(100, 0), c(100, 0), &rule).is_regressed());
        // A report cannot claim more erring views than views.
        assert!(!judge(c(20, 500), c(20, 20), &rule).is_regressed());
        // A rule of 50% confidence and no minimum: two clean sides are
        // no regression, nor equal rates.
        let loose = Rule {
            min_views: 1,
            confidence: 0.5,
            min_increase: 0.0,
        };
        assert!(!judge(c(200, 0), c(200, 0), &loose).is_regressed());
        assert!(!judge(c(200, 4), c(200, 4), &loose).is_regressed());
        assert!(judge(c(200, 5), c(200, 4), &loose).is_regressed());
        // An increase of exactly the minimum counts, whatever the rounding
        // of the two rates (6/200 − 4/200 is 0.00999… in binary).
        let exact = Rule {
            min_views: 1,
            confidence: 0.5,
            min_increase: 0.01,
        };
        assert!(judge(c(200, 6), c(200, 4), &exact).is_regressed());
        assert!(!judge(c(200, 5), c(200, 4), &exact).is_regressed());
        let v = judge(c(40, 10), c(40, 0), &rule);
        assert!(v.is_regressed(), "{v}");
        assert!(
            v.to_string().contains("10 of 40 views erred (25.0%)"),
            "{v}"
        );
    }
}
