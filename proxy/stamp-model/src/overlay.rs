//! The production overlay rule, as one pure function: what every request
//! without a selection gets on top of the origin. The proxy's snapshot and
//! the production history repository both call it, so what is recorded is
//! what is served.
//!
//! Released tickets apply in promotion order (a later release wins on the
//! same specifier); a ticket counts only while it is in prod; overrides the
//! settler retired (the origin caught up with, or overtook, the ticket) are
//! left out. A ticket still rolling out ([`crate::rollout`]) reaches only
//! the visitors in its slice: [`production`] leaves it out of what every
//! visitor gets and lists it; [`production_with`] puts in the ones a given
//! visitor is on the side of, in the same order.

use std::collections::HashMap;

use crate::record::TicketRecord;
use crate::ticket::{Hash, OverrideSet, Stage, TicketKey};

/// What production serves beyond the origin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Production {
    /// Specifier → module, every released ticket merged (of those rolling
    /// out, the ones included).
    pub overrides: OverrideSet,
    /// The released tickets, in promotion order (rolling ones included).
    pub released: Vec<TicketKey>,
    /// The tickets rolling out, in promotion order, each with its rollout
    /// and its own overrides (retired ones left out).
    pub rolling: Vec<Rolling>,
}

/// A released ticket still rolling out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rolling {
    pub key: TicketKey,
    pub rollout: crate::rollout::Rollout,
    pub overrides: OverrideSet,
}

/// An override set the rule needed but was not given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("override set {0} is referenced but missing")]
pub struct MissingSet(pub Hash);

/// The released records in overlay order (stale overlay entries and tickets
/// no longer in prod left out).
pub fn released<'a>(
    overlay: &'a [TicketKey],
    tickets: &'a [TicketRecord],
) -> Vec<&'a TicketRecord> {
    let by_key: HashMap<&TicketKey, &TicketRecord> = tickets.iter().map(|t| (&t.key, t)).collect();
    overlay
        .iter()
        .filter_map(|k| by_key.get(k).copied())
        .filter(|t| t.stage == Stage::Prod && t.prod.is_some())
        .collect()
}

/// The set ids [`production`] reads: each released ticket's prod and
/// retired sets.
pub fn needed_sets(overlay: &[TicketKey], tickets: &[TicketRecord]) -> Vec<Hash> {
    released(overlay, tickets)
        .into_iter()
        .flat_map(|t| [t.prod, t.retired].into_iter().flatten())
        .collect()
}

/// Applies the rule for a visitor on no rollout's side: what every visitor
/// gets. `set` looks up an override set by id.
pub fn production<'s, S>(
    overlay: &[TicketKey],
    tickets: &[TicketRecord],
    set: S,
) -> Result<Production, MissingSet>
where
    S: Fn(&Hash) -> Option<&'s OverrideSet>,
{
    production_with(overlay, tickets, set, |_| false)
}

/// Applies the rule for a visitor on the side of the rolling tickets
/// `included` accepts.
pub fn production_with<'s, S>(
    overlay: &[TicketKey],
    tickets: &[TicketRecord],
    set: S,
    included: impl Fn(&TicketKey) -> bool,
) -> Result<Production, MissingSet>
where
    S: Fn(&Hash) -> Option<&'s OverrideSet>,
{
    let mut out = Production::default();
    for t in released(overlay, tickets) {
        let Some(prod_id) = t.prod else { continue };
        let prod = set(&prod_id).ok_or(MissingSet(prod_id))?;
        let retired = match t.retired {
            Some(id) => Some(set(&id).ok_or(MissingSet(id))?),
            None => None,
        };
        let own = prod
            .iter()
            .filter(|(k, _)| !retired.is_some_and(|r| r.contains_key(*k)))
            .map(|(k, v)| (k.clone(), v.clone()));
        out.released.push(t.key.clone());
        if let Some(rollout) = &t.rollout {
            let own: OverrideSet = own.collect();
            if included(&t.key) {
                out.overrides
                    .extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            out.rolling.push(Rolling {
                key: t.key.clone(),
                rollout: rollout.clone(),
                overrides: own,
            });
        } else {
            out.overrides.extend(own);
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ticket::{set_id, ModuleRef};

    fn m(path: &str, body: &str) -> ModuleRef {
        ModuleRef {
            path: path.into(),
            hash: Hash::of(body.as_bytes()),
            size: body.len() as u64,
        }
    }

    fn record(key: &str, stage: Stage, prod: Option<Hash>, retired: Option<Hash>) -> TicketRecord {
        TicketRecord {
            stage,
            qa: prod,
            prod,
            retired,
            ..TicketRecord::new(TicketKey::parse(key).unwrap(), Hash::of(b""), 0)
        }
    }

    #[test]
    fn later_releases_win_retired_and_reverted_are_left_out() {
        let a: OverrideSet = [
            ("/a.js".to_string(), m("/a.js", "a1")),
            ("/b.js".to_string(), m("/b.js", "b1")),
        ]
        .into();
        let b: OverrideSet = [("/a.js".to_string(), m("/a.js", "a2"))].into();
        let c: OverrideSet = [("/c.js".to_string(), m("/c.js", "c"))].into();
        let retired: OverrideSet = [("/b.js".to_string(), m("/b.js", "b1"))].into();
        let sets: HashMap<Hash, OverrideSet> = [a.clone(), b.clone(), c.clone(), retired.clone()]
            .into_iter()
            .map(|s| (set_id(&s), s))
            .collect();
        let tickets = vec![
            record(
                "AA-1",
                Stage::Prod,
                Some(set_id(&a)),
                Some(set_id(&retired)),
            ),
            record("BB-1", Stage::Prod, Some(set_id(&b)), None),
            record("CC-1", Stage::Qa, Some(set_id(&c)), None),
        ];
        let order: Vec<TicketKey> = ["AA-1", "BB-1", "CC-1", "GONE-1"]
            .iter()
            .map(|k| TicketKey::parse(k).unwrap())
            .collect();
        let p = production(&order, &tickets, |id| sets.get(id)).unwrap();
        assert_eq!(p.released.len(), 2);
        assert_eq!(p.overrides.len(), 1, "{:?}", p.overrides);
        assert_eq!(p.overrides["/a.js"].hash, Hash::of(b"a2"));
        assert_eq!(needed_sets(&order, &tickets).len(), 3);
        let missing = production(&order, &tickets, |_| None).unwrap_err();
        assert_eq!(missing, MissingSet(set_id(&a)));
        // BB-1 rolling out: everyone gets AA-1's a1; its slice gets a2.
        let mut tickets = tickets;
        tickets[1].rollout = Some(crate::rollout::Rollout {
            percent: 10,
            steps: vec![100],
            every_ms: 0,
            step_at_ms: 0,
            paused: false,
        });
        let everyone = production(&order, &tickets, |id| sets.get(id)).unwrap();
        assert_eq!(everyone.overrides["/a.js"].hash, Hash::of(b"a1"));
        assert_eq!(everyone.released.len(), 2);
        assert_eq!(everyone.rolling.len(), 1);
        assert_eq!(everyone.rolling[0].overrides, b);
        let slice = production_with(
            &order,
            &tickets,
            |id| sets.get(id),
            |k| k.as_str() == "BB-1",
        )
        .unwrap();
        assert_eq!(slice.overrides["/a.js"].hash, Hash::of(b"a2"));
        let missing = production(&order, &tickets, |_| None).unwrap_err();
        assert_eq!(missing, MissingSet(set_id(&a)));
    }
}
