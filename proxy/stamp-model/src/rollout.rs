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
//! a one-sided two-proportion z-test, once each side has enough views. And
//! before that, whether the ticket's pages went silent: a page that hangs
//! (an endless loop) or crashes (out of memory) never reports, so it shows
//! no error either. The share of sampled pages sent that were heard from
//! is compared the same way, and a ticket's side heard from markedly less
//! than production's regressed.

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

/// What makes a rollout's page one that loaded a ticket's files, on either
/// side: a resource at one of the files' locations (the ticket's own URL
/// there on its side, production's file on production's), or, for a
/// hashed build's file, at its name with any hash of that length
/// (production's build of it has another). At most [`TOUCH_MAX`] of each.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Touch {
    pub at: Vec<String>,
    /// A hashed file's location before the hash, the hash's length, and
    /// what follows it.
    pub hashed: Vec<(String, usize, String)>,
}

/// Locations (and hashed names) a page's probe is told per ticket.
pub const TOUCH_MAX: usize = 100;

impl Touch {
    /// From a rolling ticket's released modules.
    pub fn of(overrides: &crate::ticket::OverrideSet) -> Touch {
        let mut t = Touch::default();
        for m in overrides.values() {
            if t.at.len() < TOUCH_MAX && !t.at.contains(&m.path) {
                t.at.push(m.path.clone());
            }
            if let Some(p) = crate::assets::EntryPattern::hashed_at(&m.path) {
                let (a, n, z) = p.parts();
                let parts = (a.to_string(), n, z.to_string());
                if t.hashed.len() < TOUCH_MAX && !t.hashed.contains(&parts) {
                    t.hashed.push(parts);
                }
            }
        }
        t
    }
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
    /// Views that loaded one of the ticket's files (its own on its side,
    /// production's copy of one it replaces on production's), and of
    /// those, the ones with an error: where a broken file shows, undiluted
    /// by the pages that never load it.
    #[serde(default)]
    pub touched: u64,
    #[serde(default)]
    pub touched_erring: u64,
    /// Sampled pages the proxies sent this side with the probe.
    #[serde(default)]
    pub sent: u64,
    /// Of those, the pages heard from (their first report arrived).
    #[serde(default)]
    pub heard: u64,
}

/// The least drop in the share of a side's sent pages that are heard from
/// that counts as the ticket's pages going silent (absolute: ten
/// percentage points). Pages are not heard from on both sides alike
/// (visitors without JavaScript, pages prerendered and never shown,
/// reports still on their way when the step is judged); ten points is far
/// above what those differ by between two random halves of the same
/// visitors, and far below a ticket that hangs even a fifth of its pages.
pub const MIN_SILENCE: f64 = 0.10;

impl SideCounts {
    pub fn rate(&self) -> f64 {
        if self.views == 0 {
            0.0
        } else {
            self.erring_views.min(self.views) as f64 / self.views as f64
        }
    }

    /// The views that loaded the ticket's files, as views of their own.
    pub fn where_used(&self) -> SideCounts {
        SideCounts {
            views: self.touched,
            erring_views: self.touched_erring.min(self.touched),
            ..SideCounts::default()
        }
    }

    /// The share of sent pages not heard from (0 when none was sent; a
    /// side heard more than it sent, as while proxies that do not count
    /// what they send are upgraded, is all heard).
    pub fn unheard_rate(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            self.sent.saturating_sub(self.heard) as f64 / self.sent as f64
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
        /// Found among the views that load the ticket's files (not all).
        #[serde(default)]
        where_used: bool,
    },
    /// The ticket's pages were heard from markedly less than production's:
    /// they hang or crash before they can report.
    Silent {
        ticket: SideCounts,
        production: SideCounts,
        z: f64,
    },
}

impl Verdict {
    /// Whether the ticket's side is worse than production's (a revert).
    pub fn is_regressed(&self) -> bool {
        matches!(self, Verdict::Regressed { .. } | Verdict::Silent { .. })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Waiting { .. } => "waiting",
            Verdict::Healthy { .. } => "healthy",
            Verdict::Regressed { .. } => "regressed",
            Verdict::Silent { .. } => "silent",
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
        let heard = |c: &SideCounts| {
            format!(
                "{} of {} pages sent ({:.1}%)",
                c.heard.min(c.sent),
                c.sent,
                (1.0 - c.unheard_rate()) * 100.0
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
            Verdict::Silent {
                ticket,
                production,
                z,
            } => write!(
                f,
                "silent: the ticket's side was heard from on {}, production's on {} (z = {z:.2}); \
                 its pages hang or crash before they report",
                heard(ticket),
                heard(production)
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
                where_used: false,
            } => write!(
                f,
                "regressed: ticket {}, production {} (z = {z:.2})",
                side(ticket),
                side(production)
            ),
            Verdict::Regressed {
                ticket,
                production,
                z,
                where_used: true,
            } => write!(
                f,
                "regressed where its files load: ticket {}, production {} (z = {z:.2})",
                side(&ticket.where_used()),
                side(&production.where_used())
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

/// One side's share of `n` as worse than the other's: a one-sided
/// two-proportion z-test at `confidence`, and a difference of at least
/// `least` (with room for the rounding of the two shares: 6/200 − 4/200 is
/// 0.00999…). `Some(z)` when it is worse.
fn worse((x1, n1): (u64, u64), (x2, n2): (u64, u64), confidence: f64, least: f64) -> Option<f64> {
    let (p1, p2) = (x1 as f64 / n1 as f64, x2 as f64 / n2 as f64);
    let z = z_of((x1, n1), (x2, n2));
    // Worse only when strictly higher (a rule of 50% confidence and no
    // minimum would otherwise find two equal sides apart).
    (p1 > p2 && z >= z_for(confidence) && p1 - p2 + 1e-9 >= least).then_some(z)
}

/// Whether the ticket's pages went silent: once each side has sent
/// `min_views` sampled pages, the share not heard from is higher on the
/// ticket's side, at the rule's confidence, by at least [`MIN_SILENCE`].
fn silence(ticket: SideCounts, production: SideCounts, rule: &Rule) -> Option<f64> {
    let enough = rule.min_views.max(1);
    if ticket.sent < enough || production.sent < enough {
        return None;
    }
    let unheard = |c: SideCounts| c.sent - c.heard.min(c.sent);
    worse(
        (unheard(ticket), ticket.sent),
        (unheard(production), production.sent),
        rule.confidence,
        MIN_SILENCE.max(rule.min_increase),
    )
}

/// Compares the ticket's side with production's over the same window.
pub fn judge(ticket: SideCounts, production: SideCounts, rule: &Rule) -> Verdict {
    let clamp = |c: SideCounts| SideCounts {
        erring_views: c.erring_views.min(c.views),
        touched: c.touched.min(c.views),
        touched_erring: c.touched_erring.min(c.touched.min(c.views)),
        heard: c.heard.min(c.sent),
        ..c
    };
    let (ticket, production) = (clamp(ticket), clamp(production));
    if let Some(z) = silence(ticket, production, rule) {
        return Verdict::Silent {
            ticket,
            production,
            z,
        };
    }
    if ticket.views < rule.min_views.max(1) || production.views < rule.min_views.max(1) {
        return Verdict::Waiting {
            ticket,
            production,
            needed: rule.min_views.max(1),
        };
    }
    let erring = |c: SideCounts| (c.erring_views, c.views);
    if let Some(z) = worse(
        erring(ticket),
        erring(production),
        rule.confidence,
        rule.min_increase,
    ) {
        return Verdict::Regressed {
            ticket,
            production,
            z,
            where_used: false,
        };
    }
    // A ticket whose files only a few pages load (one route) moves the
    // error rate of all views by little: the same test, among the views
    // that load them, once each side has enough of those.
    let (t, p) = (ticket.where_used(), production.where_used());
    // The sides are random halves of the same visitors, so as many of each
    // side's views load the ticket's files, unless what tells those views
    // is not the same on both sides (a file whose production copy is not
    // where the ticket's is, a ticket that loads its file on other pages):
    // then those views are not alike, and the test is not made.
    let alike = z_of(
        (ticket.touched, ticket.views),
        (production.touched, production.views),
    )
    .abs()
        < z_for(rule.confidence);
    if alike && t.views >= rule.min_views.max(1) && p.views >= rule.min_views.max(1) {
        if let Some(z) = worse(erring(t), erring(p), rule.confidence, rule.min_increase) {
            return Verdict::Regressed {
                ticket,
                production,
                z,
                where_used: true,
            };
        }
    }
    Verdict::Healthy {
        ticket,
        production,
        z: z_of(erring(ticket), erring(production)),
    }
}

/// The two-proportion z of the first share over the second.
fn z_of((x1, n1): (u64, u64), (x2, n2): (u64, u64)) -> f64 {
    let (p1, p2) = (x1 as f64 / n1 as f64, x2 as f64 / n2 as f64);
    let pooled = (x1 + x2) as f64 / (n1 + n2) as f64;
    let se = (pooled * (1.0 - pooled) * (1.0 / n1 as f64 + 1.0 / n2 as f64)).sqrt();
    if se > 0.0 {
        (p1 - p2) / se
    } else {
        0.0
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
            ..SideCounts::default()
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

    #[test]
    fn a_side_whose_pages_are_not_heard_from_is_silent() {
        let rule = Rule {
            min_views: 20,
            confidence: 0.99,
            min_increase: 0.01,
        };
        // Views (first reports stored), pages sent, pages heard from.
        let c = |views, sent, heard| SideCounts {
            views,
            sent,
            heard,
            ..SideCounts::default()
        };
        // Every ticket page hangs: nothing reported, nothing erred, and
        // the error test alone would wait for views forever.
        let v = judge(c(0, 40, 0), c(38, 40, 38), &rule);
        assert!(v.is_regressed(), "{v}");
        assert_eq!(v.name(), "silent");
        assert!(
            v.to_string()
                .contains("heard from on 0 of 40 pages sent (0.0%), production's on 38 of 40 pages sent (95.0%)"),
            "{v}"
        );
        // A fifth of them hang, on enough traffic.
        assert!(judge(c(780, 1000, 780), c(970, 1000, 970), &rule).is_regressed());
        // Too few pages sent on a side: the error test decides (waiting).
        assert!(matches!(
            judge(c(0, 19, 0), c(38, 40, 38), &rule),
            Verdict::Waiting { .. }
        ));
        // Both sides heard from alike, with the usual loss (visitors
        // without JavaScript, reports on their way): healthy.
        assert!(!judge(c(900, 1000, 900), c(905, 1000, 905), &rule).is_regressed());
        // Significant on huge traffic, but less than ten points: not silent
        // (a ticket whose pages load a little later reports a little later).
        assert!(!judge(
            c(90_000, 1_000_000, 900_000),
            c(95_000, 1_000_000, 950_000),
            &rule
        )
        .is_regressed());
        // Ten points, not significant on few pages: not silent.
        assert!(!judge(c(16, 20, 16), c(18, 20, 18), &rule).is_regressed());
        // Production's side the quieter one: not the ticket's fault.
        assert!(!judge(c(40, 40, 40), c(0, 40, 0), &rule).is_regressed());
        // Heard more than sent (proxies that do not count what they send,
        // mid-upgrade): all heard, never silent, never a division by zero.
        assert!(!judge(c(40, 10, 40), c(40, 40, 40), &rule).is_regressed());
        assert!(!judge(c(40, 0, 40), c(40, 0, 40), &rule).is_regressed());
        // Neither side heard at all (reports blocked for everyone): no
        // side is worse.
        assert!(!judge(c(0, 40, 0), c(0, 40, 0), &rule).is_regressed());
        // A regression of errors is still found beside a healthy hearing.
        let erring = SideCounts {
            erring_views: 20,
            ..c(40, 40, 40)
        };
        assert_eq!(judge(erring, c(40, 40, 40), &rule).name(), "regressed");
    }

    #[test]
    fn a_regression_where_the_tickets_files_load_is_found_undiluted() {
        let rule = Rule {
            min_views: 20,
            confidence: 0.99,
            min_increase: 0.01,
        };
        // 10,000 views a side; the ticket's file loads on 50 of them (a
        // checkout), and breaks every one: 0.5 points over all views, under
        // the least increase that counts.
        let c = |erring, touched, touched_erring| SideCounts {
            views: 10_000,
            erring_views: erring,
            touched,
            touched_erring,
            ..SideCounts::default()
        };
        let (ticket, production) = (c(150, 50, 50), c(100, 50, 0));
        let v = judge(ticket, production, &rule);
        assert!(v.is_regressed(), "{v}");
        assert!(
            v.to_string().starts_with(
                "regressed where its files load: ticket 50 of 50 views erred (100.0%), \
                 production 0 of 50 views erred (0.0%)"
            ),
            "{v}"
        );
        // Over all views alone it would pass: the same numbers without
        // the views that load the file.
        let blind = |x: SideCounts| SideCounts {
            touched: 0,
            touched_erring: 0,
            ..x
        };
        assert!(!judge(blind(ticket), blind(production), &rule).is_regressed());
        // Too few views load the file on a side: not judged there.
        assert!(!judge(c(150, 19, 19), c(100, 50, 0), &rule).is_regressed());
        // The same rate where the file loads: healthy.
        assert!(!judge(c(150, 50, 5), c(150, 50, 5), &rule).is_regressed());
        // Counts that claim more than they can (forged reports) are
        // clamped: no more touched views than views, nor erring than touched.
        let wild = SideCounts {
            views: 30,
            touched: 500,
            touched_erring: 900,
            ..SideCounts::default()
        };
        match judge(wild, c(0, 10_000, 0), &rule) {
            Verdict::Regressed {
                ticket,
                where_used: true,
                ..
            } => assert_eq!((ticket.touched, ticket.touched_erring), (30, 30)),
            v => panic!("{v}"),
        }
        // The two sides' views load the file at rates no random halves
        // would (the ticket's file seen on a tenth of the pages
        // production's copy is): those views are not alike, no test.
        assert!(!judge(c(150, 50, 50), c(100, 500, 0), &rule).is_regressed());
        // Over all views, a regression is named as before.
        let v = judge(c(3000, 50, 50), c(100, 50, 0), &rule);
        assert!(
            v.to_string().starts_with("regressed: ticket 3000 of 10000"),
            "{v}"
        );
    }
}
