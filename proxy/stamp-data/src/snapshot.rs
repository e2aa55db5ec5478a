//! The in-memory view of the store that the request path reads: which tickets
//! exist, what each view (dev, qa) overrides, and the production overlay, with
//! everything a page rewrite needs precomputed.
//!
//! The request path never waits on the store: it loads an `Arc<Snapshot>` from
//! an `ArcSwap` (one atomic load). A background task rebuilds the snapshot
//! when the store announces a change, and polls the store's version as a
//! backstop for lost notifications.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;

pub use crate::effective::Effective;
use stamp_model::assets;
use stamp_model::ticket::View;
use stamp_model::ticket::{Hash, ModuleRef, OverrideSet, Stage, TicketKey};
use stamp_store::{now_ms, SharedStore, StoreError, StoreState};

/// One ticket as the request path sees it: its own sets, not its variants.
/// A variant (the ticket's modules over the production overlay, with its
/// lookups) is built when a request first needs it and kept in the
/// snapshot's [`Variants`] cache, so an open ticket nobody visits costs its
/// sets and a few ids, not a variant.
#[derive(Debug, Clone)]
pub struct TicketView {
    pub stage: Stage,
    /// Current generation of the ticket's share links.
    pub share_gen: u64,
    /// The ticket's own dev overrides (without the overlay): what its
    /// badge counts and its probe looks for. Shared with the set cache.
    pub dev_own: Arc<OverrideSet>,
    /// Present once the ticket has been promoted to qa.
    pub qa_own: Option<Arc<OverrideSet>>,
    /// The own sets' ids in the store: with the overlay's id, what names a
    /// variant in the cache.
    pub dev_set: Hash,
    pub qa_set: Option<Hash>,
    /// The variants' ids ([`Effective::id`], named by external map URLs),
    /// computed without building the variants.
    pub dev_id: Hash,
    pub qa_id: Option<Hash>,
}

/// What a selection resolves to.
#[derive(Debug)]
pub enum Resolved {
    Stamp {
        effective: Arc<Effective>,
        stage: Stage,
    },
    /// Production is served, for this reason.
    Production(String),
}

/// Ticket variants built on first use, shared by successive snapshots:
/// keyed by what a variant is made of (the production overlay's id and the
/// ticket's own set id), so a rebuild that changed neither finds the same
/// `Arc` (and its merged maps), and a ticket promoted without a change
/// shares its dev variant with qa. Bounded: the least recently used go.
pub struct Variants {
    cache: quick_cache::sync::Cache<VariantKey, Arc<Effective>>,
    capacity: usize,
}

/// (the overlay's id, `None` without one; the ticket's own set id)
type VariantKey = (Option<Hash>, Hash);

/// Ticket variants kept at most, by default (about 8 KB each for tickets of
/// 10 modules): see [`SnapshotCell::with_variants`].
pub const VARIANTS: usize = 1024;

impl std::fmt::Debug for Variants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Variants")
            .field("len", &self.cache.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl Variants {
    /// A cache of at most `capacity` variants (at least 1).
    pub fn new(capacity: usize) -> Variants {
        let capacity = capacity.max(1);
        // One shard for small caches: quick_cache splits its capacity
        // among shards, and a tiny shard would hold nothing.
        let shards = if capacity < 256 { 1 } else { 4 };
        let cache = quick_cache::OptionsBuilder::new()
            .estimated_items_capacity(capacity)
            .weight_capacity(capacity as u64)
            .shards(shards)
            .build()
            .map(|o| {
                quick_cache::sync::Cache::with_options(
                    o,
                    Default::default(),
                    Default::default(),
                    Default::default(),
                )
            })
            .unwrap_or_else(|_| quick_cache::sync::Cache::new(capacity));
        Variants { cache, capacity }
    }

    /// Variants held now.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The variant of `own` (set `own_id`) over `overlay`: from the cache,
    /// else built (CPU only: the sets are in memory) and kept.
    fn get(
        &self,
        overlay: Option<&Arc<Effective>>,
        own_id: Hash,
        own: &OverrideSet,
    ) -> Arc<Effective> {
        let key = (overlay.map(|o| o.id), own_id);
        let built = self.cache.get_or_insert_with(&key, || {
            let mut all = overlay.map(|o| o.overrides.clone()).unwrap_or_default();
            all.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
            Ok::<_, std::convert::Infallible>(Arc::new(Effective::new(all)))
        });
        match built {
            Ok(e) => e,
            Err(never) => match never {},
        }
    }
}

impl Default for Variants {
    fn default() -> Self {
        Variants::new(VARIANTS)
    }
}

/// The id of the variant `own` over `overlay` ([`stamp_model::ticket::set_id`]
/// of their union, the ticket's modules winning), without building it: the
/// union's canonical JSON is written in key order straight from both sets.
pub fn variant_id(overlay: &OverrideSet, own: &OverrideSet) -> Hash {
    struct Union<'a>(&'a OverrideSet, &'a OverrideSet);
    impl serde::Serialize for Union<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let (mut a, mut b) = (self.0.iter().peekable(), self.1.iter().peekable());
            s.collect_map(std::iter::from_fn(move || match (a.peek(), b.peek()) {
                (Some((ka, _)), Some((kb, _))) => match ka.cmp(kb) {
                    std::cmp::Ordering::Less => a.next(),
                    std::cmp::Ordering::Equal => {
                        a.next();
                        b.next()
                    }
                    std::cmp::Ordering::Greater => b.next(),
                },
                (Some(_), None) => a.next(),
                (None, _) => b.next(),
            }))
        }
    }
    if overlay.is_empty() {
        return stamp_model::ticket::set_id(own);
    }
    Hash::of(&serde_json::to_vec(&Union(overlay, own)).unwrap_or_default())
}

/// Which module bodies are served at which paths (see [`Snapshot::serves`]):
/// each path once, every (body, path) pair as the body's hash and the
/// path's number. Exact (no fingerprint), and small: production paths
/// repeat across tickets.
#[derive(Debug, Default, Clone)]
pub struct Served {
    paths: HashMap<Box<str>, u32>,
    /// Each pair, and how many sets of the snapshot name it: a ticket's
    /// change takes out what its sets added and nothing else.
    pairs: HashMap<(Hash, u32), u32>,
}

impl Served {
    fn insert(&mut self, hash: Hash, location: &str) {
        let path = assets::serve_path(location);
        let next = self.paths.len() as u32;
        let n = match self.paths.get(path.as_str()) {
            Some(n) => *n,
            None => {
                self.paths.insert(path.into_boxed_str(), next);
                next
            }
        };
        *self.pairs.entry((hash, n)).or_insert(0) += 1;
    }

    /// Takes out one naming of the pair (a set that named it is gone).
    fn remove(&mut self, hash: Hash, location: &str) {
        let path = assets::serve_path(location);
        let Some(n) = self.paths.get(path.as_str()).copied() else {
            return;
        };
        if let std::collections::hash_map::Entry::Occupied(mut e) = self.pairs.entry((hash, n)) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }

    fn add_set(&mut self, set: &OverrideSet) {
        for m in set.values() {
            self.insert(m.hash, &m.path);
        }
    }

    fn remove_set(&mut self, set: &OverrideSet) {
        for m in set.values() {
            self.remove(m.hash, &m.path);
        }
    }

    fn serves(&self, path: &str, hash: &Hash) -> bool {
        self.paths
            .get(path)
            .is_some_and(|n| self.pairs.contains_key(&(*hash, *n)))
    }

    /// (body, path) pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Every pair and how many sets name it, by path (for tests).
    #[cfg(test)]
    fn all(&self) -> std::collections::BTreeMap<(String, String), u32> {
        let names: HashMap<u32, &str> = self.paths.iter().map(|(p, n)| (*n, &**p)).collect();
        self.pairs
            .iter()
            .map(|((h, n), c)| ((names[n].to_string(), h.to_string()), *c))
            .collect()
    }
}

/// Variant id → a ticket and view whose variant it is, and how many
/// tickets' views have it.
pub type VariantIds = HashMap<Hash, (TicketKey, View, u32)>;

#[derive(Debug)]
pub struct Snapshot {
    pub version: u64,
    /// When it was built (ms since epoch), for /health.
    pub built_ms: u64,
    pub tickets: HashMap<TicketKey, TicketView>,
    /// Released tickets in promotion order.
    pub released: Vec<TicketKey>,
    /// The production overlay; `None` when no released ticket overrides anything.
    pub overlay: Option<Arc<Effective>>,
    /// Module body → the production paths it is served at: every override
    /// of every open ticket's dev and qa view and of the overlay. A body is
    /// served only at a path it was uploaded under.
    pub served: Served,
    /// Ticket variants by id (for external map URLs): a ticket and view
    /// whose variant it is, built on demand, and how many tickets' views
    /// have that variant (the same overrides give the same id).
    pub ids: VariantIds,
    /// The store's overlay as read (released tickets, promotion order).
    pub overlay_keys: Vec<TicketKey>,
    /// Some ticket's recent sets are served (skew protection): they expire
    /// with time, which only a whole build sees.
    pub skewed: bool,
    /// Ticket variants built so far, shared with the snapshots before and
    /// after this one.
    pub variants: Arc<Variants>,
    /// Other origins any variant overrides modules on.
    pub remote_origins: Vec<String>,
    /// The production overlay's bodies, held in memory so that released
    /// tickets keep working for every visitor while the store is down or
    /// has lost its data (up to [`PIN_BYTES`]).
    pub pinned: HashMap<Hash, Bytes>,
    /// Tickets rolling out, in promotion order (at most [`MAX_SLICED`]).
    pub rolling: Vec<RollingView>,
    /// Production for each combination of sides: index bit `i` set when
    /// the visitor is on `rolling[i]`'s side (index 0 is `overlay`).
    pub sliced: Vec<Option<Arc<Effective>>>,
}

/// A ticket rolling out, as the request path sees it.
#[derive(Debug, Clone)]
pub struct RollingView {
    pub key: TicketKey,
    pub percent: u8,
    /// What tells a sampled page that loaded one of its files.
    pub touch: Arc<stamp_model::rollout::Touch>,
}

/// Tickets sliced at once, at most (2^6 production variants). The control
/// plane refuses to start more rollouts than its `rollout.max_concurrent`
/// allows; a store that holds more anyway slices the first ones and gives
/// the rest to nobody until those end.
pub const MAX_SLICED: usize = 6;

/// At most this much of the production overlay's bodies is held in memory
/// (see [`Snapshot::pinned`]); beyond it, bodies come from the module cache
/// and the store as for tickets.
pub const PIN_BYTES: u64 = 64 * 1024 * 1024;

impl Snapshot {
    pub fn empty() -> Snapshot {
        Snapshot {
            version: 0,
            built_ms: 0,
            tickets: HashMap::new(),
            released: Vec::new(),
            overlay: None,
            served: Served::default(),
            ids: HashMap::new(),
            overlay_keys: Vec::new(),
            skewed: false,
            variants: Arc::new(Variants::default()),
            remote_origins: Vec::new(),
            pinned: HashMap::new(),
            rolling: Vec::new(),
            sliced: vec![None],
        }
    }

    /// A production visitor's variant while tickets roll out, and their
    /// side of each.
    pub fn production_for(
        &self,
        visitor: &str,
    ) -> (
        Option<Arc<Effective>>,
        Vec<(TicketKey, stamp_model::views::Side)>,
    ) {
        let mut mask = 0usize;
        let mut sides = Vec::with_capacity(self.rolling.len());
        for (i, r) in self.rolling.iter().enumerate() {
            let on = stamp_model::rollout::in_slice(&r.key, visitor, r.percent);
            if on {
                mask |= 1 << i;
            }
            let side = if on {
                stamp_model::views::Side::Ticket
            } else {
                stamp_model::views::Side::Production
            };
            sides.push((r.key.clone(), side));
        }
        (self.sliced.get(mask).cloned().flatten(), sides)
    }

    /// Holds the overlay's bodies in memory, reusing those `previous` held
    /// (bodies are immutable) and reading the rest from the store.
    async fn pin_production(
        &mut self,
        store: &SharedStore,
        previous: &Snapshot,
    ) -> Result<(), StoreError> {
        // Every visitor's overlay and every slice's tickets: the variant on
        // every side holds them all.
        let Some(overlay) = self
            .sliced
            .last()
            .cloned()
            .flatten()
            .or(self.overlay.clone())
        else {
            return Ok(());
        };
        let mut total = 0u64;
        let mut refs: Vec<&ModuleRef> = overlay.overrides.values().collect();
        refs.sort_by_key(|m| m.size);
        for m in refs {
            if self.pinned.contains_key(&m.hash) {
                continue;
            }
            if total + m.size > PIN_BYTES {
                log::warn!(
                    "the production overlay's bodies exceed {PIN_BYTES} bytes; \
                     {} and larger ones are not held in memory",
                    m.path
                );
                break;
            }
            let body = match previous.pinned.get(&m.hash) {
                Some(b) => b.clone(),
                None => match store.get_module(&m.hash).await? {
                    Some(b) if Hash::of(&b) == m.hash => b,
                    // Served (or refused) by the module server as it is;
                    // one bad body must not hold every snapshot back.
                    _ => {
                        log::error!(
                            "released module {} ({}) is missing from the store",
                            m.path,
                            m.hash
                        );
                        continue;
                    }
                },
            };
            total += body.len() as u64;
            self.pinned.insert(m.hash, body);
        }
        Ok(())
    }

    /// The variant an external map URL names: production's (with or
    /// without rolling tickets), or an open ticket's, built on demand.
    pub fn effective(&self, id: &Hash) -> Option<Arc<Effective>> {
        if let Some(e) = self
            .overlay
            .iter()
            .chain(self.sliced.iter().flatten())
            .find(|e| e.id == *id)
        {
            return Some(e.clone());
        }
        let (key, view, _) = self.ids.get(id)?;
        self.variant(key, *view)
    }

    /// Whether `origin` is one a variant overrides modules on.
    pub fn overrides_on(&self, origin: &str) -> bool {
        self.remote_origins.iter().any(|o| o == origin)
    }

    /// Whether the body `hash` is served at `path` (see [`Snapshot::served`]).
    pub fn serves(&self, path: &str, hash: &Hash) -> bool {
        self.served.serves(path, hash)
    }

    /// Whether production gives every visitor body `hash` at `path`: a
    /// released ticket's file. (Not a ticket's dev or qa file, nor one
    /// only a side of a rollout gets, which the rollout may yet revert,
    /// nor one production served until a revert.)
    pub fn released(&self, path: &str, hash: &Hash) -> bool {
        self.overlay
            .as_deref()
            .is_some_and(|e| e.served_at(path).is_some_and(|m| m.hash == *hash))
    }

    /// Resolves a selected ticket and view: its variant, from the variant
    /// cache or built now (never waiting on the store).
    pub fn resolve(&self, key: &TicketKey, view: View) -> Resolved {
        let Some(t) = self.tickets.get(key) else {
            return Resolved::Production(format!("unknown ticket {key}"));
        };
        let overlay = self.overlay.as_ref();
        match (t.stage, view) {
            (Stage::Closed, _) => Resolved::Production(format!("ticket {key} is closed")),
            (stage, View::Dev) => Resolved::Stamp {
                effective: self.variants.get(overlay, t.dev_set, &t.dev_own),
                stage,
            },
            (stage, View::Qa) => match (&t.qa_own, t.qa_set) {
                (Some(own), Some(id)) => Resolved::Stamp {
                    effective: self.variants.get(overlay, id, own),
                    stage,
                },
                _ => Resolved::Production(format!(
                    "ticket {key} is in {stage} and has not been promoted to qa"
                )),
            },
        }
    }

    /// The variant a selection of `key` and `view` stamps; `None` when it
    /// serves production (see [`Snapshot::resolve`]).
    pub fn variant(&self, key: &TicketKey, view: View) -> Option<Arc<Effective>> {
        match self.resolve(key, view) {
            Resolved::Stamp { effective, .. } => Some(effective),
            Resolved::Production(_) => None,
        }
    }

    /// The snapshot after `changes`, from this one, at the cost of the
    /// tickets changed ([`stamp_store::Store::changes_since`]). `None` when
    /// a change reaches beyond its own tickets (production's overlay, a
    /// rollout, skew protection, modules on other origins, a variant id
    /// another ticket shares), which a whole build handles.
    pub async fn apply(
        &self,
        store: &SharedStore,
        changes: &stamp_store::Changes,
        sets: &mut HashMap<Hash, Arc<OverrideSet>>,
    ) -> Result<Option<Snapshot>, StoreError> {
        let now = now_ms();
        if self.skewed || changes.overlay != self.overlay_keys || changes.version <= self.version {
            return Ok(None);
        }
        let production = |k: &TicketKey| {
            self.overlay_keys.contains(k) || self.rolling.iter().any(|r| &r.key == k)
        };
        for t in &changes.tickets {
            if production(&t.key)
                || t.stage == Stage::Prod
                || t.prod.is_some()
                || t.retired.is_some()
                || t.rollout.is_some()
                || t.recent.iter().any(|r| r.until_ms > now)
            {
                return Ok(None);
            }
        }
        if changes.removed.iter().any(production) {
            return Ok(None);
        }
        for t in &changes.tickets {
            for id in [Some(t.dev), t.qa].into_iter().flatten() {
                if let std::collections::hash_map::Entry::Vacant(e) = sets.entry(id) {
                    let set = store.get_set(&id).await?.ok_or_else(|| {
                        StoreError::Corrupt(format!("override set {id} is referenced but missing"))
                    })?;
                    e.insert(Arc::new(set));
                }
            }
        }
        let get = |id: &Hash| sets.get(id).cloned().unwrap_or_default();
        let remote = |set: &OverrideSet| set.values().any(|m| assets::origin_of(&m.path).is_some());
        let changed: Vec<&TicketKey> = changes
            .tickets
            .iter()
            .map(|t| &t.key)
            .chain(&changes.removed)
            .collect();
        for key in &changed {
            if let Some(old) = self.tickets.get(*key) {
                if remote(&old.dev_own) || old.qa_own.as_deref().is_some_and(remote) {
                    return Ok(None);
                }
            }
        }
        for t in &changes.tickets {
            if remote(&get(&t.dev)) || t.qa.is_some_and(|q| remote(&get(&q))) {
                return Ok(None);
            }
        }

        let mut tickets = self.tickets.clone();
        let mut ids = self.ids.clone();
        let mut served = self.served.clone();
        let mut remote_origins = self.remote_origins.clone();
        // Take out what the changed tickets added.
        let mut before = HashMap::new();
        for key in changed {
            let Some(old) = tickets.remove(key) else {
                continue;
            };
            if old.stage != Stage::Closed {
                served.remove_set(&old.dev_own);
                if let Some(q) = &old.qa_own {
                    served.remove_set(q);
                }
                let views =
                    std::iter::once(old.dev_id).chain(old.qa_id.filter(|q| *q != old.dev_id));
                for id in views {
                    if let std::collections::hash_map::Entry::Occupied(mut e) = ids.entry(id) {
                        e.get_mut().2 -= 1;
                        if e.get().2 == 0 {
                            e.remove();
                        } else if &e.get().0 == key {
                            // Another ticket has this variant too; which one
                            // names it is the whole build's to say.
                            return Ok(None);
                        }
                    }
                }
            }
            before.insert(key.clone(), old);
        }
        // And put in what they add now.
        let overlay_set = self
            .overlay
            .as_ref()
            .map(|e| e.overrides.clone())
            .unwrap_or_default();
        for t in &changes.tickets {
            let view = admit(
                t,
                &get,
                &overlay_set,
                before.get(&t.key),
                (&mut served, &mut ids, &mut remote_origins),
            );
            tickets.insert(t.key.clone(), view);
        }
        // Sets the changed tickets named before and no ticket names now
        // leave the cache (a scan of ids, no set read). One a released
        // ticket still names is read again by the next whole build.
        let mut gone: Vec<Hash> = before
            .values()
            .flat_map(|v| std::iter::once(v.dev_set).chain(v.qa_set))
            .collect();
        gone.sort();
        gone.dedup();
        gone.retain(|id| {
            !tickets
                .values()
                .any(|v| v.dev_set == *id || v.qa_set == Some(*id))
        });
        for id in gone {
            sets.remove(&id);
        }
        Ok(Some(Snapshot {
            version: changes.version,
            built_ms: now,
            tickets,
            released: self.released.clone(),
            overlay: self.overlay.clone(),
            served,
            ids,
            overlay_keys: self.overlay_keys.clone(),
            skewed: false,
            variants: self.variants.clone(),
            remote_origins,
            pinned: self.pinned.clone(),
            rolling: self.rolling.clone(),
            sliced: self.sliced.clone(),
        }))
    }

    /// Builds a snapshot from a consistent store read, fetching override sets
    /// it does not know yet (sets are immutable, so `sets` is a cache kept
    /// across rebuilds, holding only the sets some ticket still names).
    ///
    /// A rebuild costs what changed: a ticket whose sets, stage and links
    /// are as in `previous` under the same production overlay keeps its
    /// variants (and their merged maps) as they were.
    pub async fn build(
        store: &SharedStore,
        state: StoreState,
        sets: &mut HashMap<Hash, Arc<OverrideSet>>,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, StoreError> {
        let mut wanted: std::collections::HashSet<Hash> = std::collections::HashSet::new();
        let now = now_ms();
        for t in &state.tickets {
            wanted.extend([Some(t.dev), t.qa, t.prod, t.retired].into_iter().flatten());
            wanted.extend(t.recent.iter().filter(|r| r.until_ms > now).map(|r| r.set));
        }
        // A set no ticket names any more (superseded by an upload) is
        // dropped: the cache follows the tickets, not their history.
        sets.retain(|id, _| wanted.contains(id));
        for id in wanted {
            if sets.contains_key(&id) {
                continue;
            }
            let set = store.get_set(&id).await?.ok_or_else(|| {
                StoreError::Corrupt(format!("override set {id} is referenced but missing"))
            })?;
            sets.insert(id, Arc::new(set));
        }
        let get = |id: &Hash| sets.get(id).cloned().unwrap_or_default();

        // The one overlay rule (promotion order, prod only, retired left out),
        // shared with the production history repository.
        let production = stamp_model::overlay::production(&state.overlay, &state.tickets, |id| {
            sets.get(id).map(|s| &**s)
        })
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let overlay_set = production.overrides;
        let released = production.released;
        let overlay =
            (!overlay_set.is_empty()).then(|| Arc::new(Effective::new(overlay_set.clone())));
        // Tickets rolling out: production for each combination of sides.
        let mut rolling_all = production.rolling;
        if rolling_all.len() > MAX_SLICED {
            log::warn!(
                "{} tickets are rolling out; the first {MAX_SLICED} are sliced, the rest reach nobody until those end",
                rolling_all.len()
            );
            rolling_all.truncate(MAX_SLICED);
        }
        let rolling: Vec<RollingView> = rolling_all
            .iter()
            .map(|r| RollingView {
                key: r.key.clone(),
                percent: r.rollout.percent,
                touch: Arc::new(stamp_model::rollout::Touch::of(&r.overrides)),
            })
            .collect();
        let mut sliced = vec![overlay.clone()];
        for mask in 1..(1usize << rolling.len()) {
            let on: Vec<&TicketKey> = rolling
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, r)| &r.key)
                .collect();
            let p = stamp_model::overlay::production_with(
                &state.overlay,
                &state.tickets,
                |id| sets.get(id).map(|s| &**s),
                |k| on.contains(&k),
            )
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            sliced.push((!p.overrides.is_empty()).then(|| Arc::new(Effective::new(p.overrides))));
        }

        // Ticket variants are built on first use, in a cache the snapshots
        // share; what is computed here per ticket is its variants' ids,
        // kept from `previous` when their inputs are the same.
        let variants = previous.map_or_else(Default::default, |p| p.variants.clone());
        let same_overlay = previous
            .is_some_and(|p| p.overlay.as_ref().map(|e| e.id) == overlay.as_ref().map(|e| e.id));
        let mut tickets = HashMap::with_capacity(state.tickets.len());
        let mut ids = HashMap::new();
        let mut served = Served::default();
        let mut remote_origins: Vec<String> = Vec::new();
        served.add_set(&overlay_set);
        // Skew protection: what production served until recently stays
        // servable at its URLs, so a tab opened before a revert never 404s
        // on a lazy import.
        let mut skewed = false;
        for t in &state.tickets {
            for r in t.recent.iter().filter(|r| r.until_ms > now) {
                served.add_set(&get(&r.set));
                skewed = true;
            }
        }
        for r in &rolling_all {
            served.add_set(&r.overrides);
        }
        for t in &state.tickets {
            let before = previous
                .filter(|_| same_overlay)
                .and_then(|p| p.tickets.get(&t.key));
            let view = admit(
                t,
                &get,
                &overlay_set,
                before,
                (&mut served, &mut ids, &mut remote_origins),
            );
            tickets.insert(t.key.clone(), view);
        }
        for e in overlay.iter().chain(sliced.iter().flatten()) {
            remote_origins.extend(e.remote_origins.iter().cloned());
        }
        remote_origins.sort();
        remote_origins.dedup();
        Ok(Snapshot {
            ids,
            overlay_keys: state.overlay,
            skewed,
            variants,
            remote_origins,
            version: state.version,
            built_ms: now_ms(),
            tickets,
            released,
            overlay,
            served,
            pinned: HashMap::new(),
            rolling,
            sliced,
        })
    }
}

/// The empty variant's id: every closed ticket's.
static EMPTY_ID: LazyLock<Hash> =
    LazyLock::new(|| stamp_model::ticket::set_id(&OverrideSet::default()));

/// What one ticket adds to a snapshot: its view, its open views' pairs in
/// `served`, their variants' ids and other origins. `before`, its view
/// under the same overlay, keeps the ids when its sets are the same.
fn admit(
    t: &stamp_store::TicketRecord,
    get: &impl Fn(&Hash) -> Arc<OverrideSet>,
    overlay_set: &OverrideSet,
    before: Option<&TicketView>,
    (served, ids, remote_origins): (&mut Served, &mut VariantIds, &mut Vec<String>),
) -> TicketView {
    // Sets come from the cache, one `Arc` per id while some ticket names it.
    let dev = get(&t.dev);
    let qa = t.qa.map(|id| get(&id));
    let open = t.stage != Stage::Closed;
    if open {
        for set in std::iter::once(&dev).chain(qa.iter()) {
            served.add_set(set);
            remote_origins.extend(
                set.values()
                    .filter_map(|m| assets::origin_of(&m.path).map(str::to_string)),
            );
        }
    }
    // A closed ticket's ids are the empty variant's: one re-opened with the
    // same sets gets its own again, not those.
    let before = before
        .filter(|b| b.dev_set == t.dev && b.qa_set == t.qa && (b.stage != Stage::Closed) == open);
    let id_of = |set_id: Hash, own: &OverrideSet| {
        if overlay_set.is_empty() {
            set_id
        } else {
            variant_id(overlay_set, own)
        }
    };
    let (dev_id, qa_id) = match before {
        Some(b) => (b.dev_id, b.qa_id),
        // A closed ticket is never stamped: the empty variant's id.
        None if !open => (*EMPTY_ID, None),
        None => {
            let dev_id = id_of(t.dev, &dev);
            let qa_id = match (t.qa, &qa) {
                // Promoted without a change since: the same variant.
                (Some(id), _) if id == t.dev => Some(dev_id),
                (Some(id), Some(q)) => Some(id_of(id, q)),
                _ => None,
            };
            (dev_id, qa_id)
        }
    };
    if open {
        ids.entry(dev_id).or_insert((t.key.clone(), View::Dev, 0)).2 += 1;
        if let Some(id) = qa_id.filter(|id| *id != dev_id) {
            ids.entry(id).or_insert((t.key.clone(), View::Qa, 0)).2 += 1;
        }
    }
    TicketView {
        stage: t.stage,
        share_gen: t.share_gen,
        dev_own: dev,
        qa_own: qa,
        dev_set: t.dev,
        qa_set: t.qa,
        dev_id,
        qa_id,
    }
}

/// The shared, atomically replaced snapshot plus the store's health as seen
/// by the refresher.
#[derive(Debug)]
pub struct SnapshotCell {
    current: ArcSwap<Snapshot>,
    store_ok: AtomicBool,
    last_ok_ms: AtomicU64,
    /// Why the store's state was not adopted (it lost the state this
    /// snapshot came from), while that lasts.
    lost: std::sync::Mutex<Option<String>>,
    /// The version served, for those who wait for their write to be.
    served: tokio::sync::watch::Sender<u64>,
    /// Credentials signed out anywhere in the fleet (preview passes), read
    /// from the store with each backstop check.
    revoked: std::sync::RwLock<std::collections::HashSet<String>>,
    /// Snapshots made from what changed since the last whole build.
    applied: std::sync::atomic::AtomicU32,
    /// The store's [`stamp_store::Store::resyncs`] at the last refresh.
    resyncs: AtomicU64,
}

/// A whole build after this many snapshots made from what changed: it
/// drops the sets no ticket names any more from the cache, and costs a
/// 256th per change.
const WHOLE_EVERY: u32 = 256;

impl Default for SnapshotCell {
    fn default() -> Self {
        SnapshotCell {
            current: ArcSwap::from_pointee(Snapshot::empty()),
            store_ok: AtomicBool::new(false),
            last_ok_ms: AtomicU64::new(0),
            lost: std::sync::Mutex::new(None),
            served: tokio::sync::watch::Sender::new(0),
            revoked: Default::default(),
            applied: Default::default(),
            resyncs: Default::default(),
        }
    }
}

impl SnapshotCell {
    /// A cell whose snapshots keep at most `capacity` ticket variants built
    /// (the default is [`VARIANTS`]).
    pub fn with_variants(capacity: usize) -> SnapshotCell {
        let cell = SnapshotCell::default();
        cell.current.store(Arc::new(Snapshot {
            variants: Arc::new(Variants::new(capacity)),
            ..Snapshot::empty()
        }));
        cell
    }

    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn store(&self, s: Snapshot) {
        let version = s.version;
        self.current.store(Arc::new(s));
        self.served.send_replace(version);
    }

    /// Whether a credential (`pass:<mac>`) was signed out.
    pub fn is_revoked(&self, id: &str) -> bool {
        self.revoked
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(id)
    }

    /// Reads the fleet's signed-out credentials from the store.
    pub async fn refresh_revoked(&self, store: &SharedStore) {
        match store.revoked(now_ms()).await {
            Ok(ids) => {
                *self
                    .revoked
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = ids.into_iter().collect();
            }
            Err(e) => log::debug!("cannot read revoked credentials: {e}"),
        }
    }

    /// Waits until this proxy serves the store's `version` or a later one,
    /// at most `within`: whoever wrote it then reads their own write here
    /// (an upload's response means its page is served). Whether it does.
    pub async fn serves(&self, version: u64, within: Duration) -> bool {
        let mut rx = self.served.subscribe();
        tokio::time::timeout(within, rx.wait_for(|v| *v >= version))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    pub fn store_ok(&self) -> bool {
        self.store_ok.load(Ordering::Relaxed)
    }

    /// Last time the store answered (ms since epoch).
    pub fn last_ok_ms(&self) -> u64 {
        self.last_ok_ms.load(Ordering::Relaxed)
    }

    /// Set while the store no longer holds the state the snapshot came from:
    /// the snapshot is kept (production does not silently lose its released
    /// tickets) until the data is back or an operator adopts the store.
    pub fn lost(&self) -> Option<String> {
        self.lost.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_lost(&self, reason: Option<String>) {
        let mut lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        match (&*lost, &reason) {
            (None, Some(why)) => log::error!(
                "{why}; keeping the last good snapshot (version {}, {} released tickets)",
                self.load().version,
                self.load().released.len()
            ),
            (Some(_), None) => log::warn!("the store's state is consistent again"),
            _ => {}
        }
        stamp_store::metrics::STORE_STATE_LOST.set(i64::from(reason.is_some()));
        *lost = reason;
    }

    fn mark(&self, ok: bool) {
        self.store_ok.store(ok, Ordering::Relaxed);
        if ok {
            self.last_ok_ms.store(now_ms(), Ordering::Relaxed);
        }
        stamp_store::metrics::STORE_UP.set(i64::from(ok));
    }

    /// Reloads the snapshot if the store's version moved (or `force`).
    pub async fn refresh(
        &self,
        store: &SharedStore,
        sets: &mut HashMap<Hash, Arc<OverrideSet>>,
        force: bool,
    ) -> Result<(), StoreError> {
        stamp_store::metrics::STORE_FAULT.set(i64::from(store.fault().is_some()));
        let lost = self.lost().is_some();
        let result = async {
            let current = self.load().version;
            if !force && !lost && store.version().await? == current && current != 0 {
                return Ok(());
            }
            // What changed, when the store can say; a whole build every
            // WHOLE_EVERY of those (it drops the sets no ticket names).
            // Read before the state, so a resync during this read makes the
            // next refresh whole too.
            let resyncs = store.resyncs();
            let resynced = self.resyncs.load(Ordering::Relaxed) != resyncs;
            let previous = self.load();
            if !lost
                && !resynced
                && !previous.skewed
                && current != 0
                && self.applied.load(Ordering::Relaxed) < WHOLE_EVERY
            {
                // Any trouble on the short way is the whole build's to meet:
                // it does not read the changelog.
                let short = async {
                    let Some(changes) = store.changes_since(current).await? else {
                        return Ok(None);
                    };
                    // A connection made meanwhile may reach another primary.
                    if store.resyncs() != resyncs {
                        return Ok(None);
                    }
                    if changes.version == current {
                        return Ok(Some(None));
                    }
                    Ok(previous.apply(store, &changes, sets).await?.map(Some))
                }
                .await;
                match short {
                    Ok(Some(None)) => return Ok(()),
                    Ok(Some(Some(snap))) => {
                        self.applied.fetch_add(1, Ordering::Relaxed);
                        crate::metrics::SNAPSHOT_REBUILDS
                            .with_label_values(&["changes"])
                            .inc();
                        crate::metrics::SNAPSHOT_VERSION.set(snap.version as i64);
                        self.store(snap);
                        return Ok(());
                    }
                    Ok(None) => {}
                    Err(e @ StoreError::Lost { .. }) => return Err(e),
                    Err(e) => log::warn!("reading what changed failed, reading everything: {e}"),
                }
            }
            let state = store.state().await?;
            if state.version != current || force {
                let mut snap = Snapshot::build(store, state, sets, Some(&previous)).await?;
                snap.pin_production(store, &self.load()).await?;
                self.applied.store(0, Ordering::Relaxed);
                self.resyncs.store(resyncs, Ordering::Relaxed);
                crate::metrics::SNAPSHOT_REBUILDS
                    .with_label_values(&["whole"])
                    .inc();
                crate::metrics::SNAPSHOT_VERSION.set(snap.version as i64);
                crate::metrics::rollouts_now(
                    &snap
                        .rolling
                        .iter()
                        .map(|r| (r.key.to_string(), r.percent))
                        .collect::<Vec<_>>(),
                );
                self.store(snap);
            }
            Ok(())
        }
        .await;
        match &result {
            Ok(()) => {
                self.set_lost(None);
                self.mark(true);
            }
            Err(e @ StoreError::Lost { .. }) => {
                // Reachable, but not to be believed.
                self.set_lost(Some(e.to_string()));
                self.mark(true);
            }
            Err(e) => {
                stamp_store::metrics::STORE_ERRORS.inc();
                if self.store_ok() {
                    log::warn!("store unavailable, serving the last snapshot: {e}");
                } else {
                    log::debug!("store still unavailable: {e}");
                }
                self.mark(false);
            }
        }
        if store.fault().is_some() {
            stamp_store::metrics::STORE_UP.set(0);
        }
        result
    }
}

/// Keeps `cell` in step with the store: rebuilds on every change
/// notification, and checks the version every `poll` as a backstop. Runs
/// until the process ends.
pub async fn run_refresher(store: SharedStore, cell: Arc<SnapshotCell>, poll: Duration) {
    let mut sets = HashMap::new();
    let mut changes = store.subscribe();
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let _ = cell.refresh(&store, &mut sets, true).await;
    loop {
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    // The store dropped its notifier; fall back to polling alone.
                    changes = store.subscribe();
                    tokio::time::sleep(poll).await;
                }
                let started = Instant::now();
                // Always rebuild on a notification: a Redis restarted without
                // persistence counts versions from zero again.
                if cell.refresh(&store, &mut sets, true).await.is_ok() {
                    crate::metrics::SNAPSHOT_SECONDS.observe(started.elapsed().as_secs_f64());
                }
            }
            _ = tick.tick() => {
                let force = !cell.store_ok();
                let _ = cell.refresh(&store, &mut sets, force).await;
                cell.refresh_revoked(&store).await;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};
    use stamp_store::{Commit, OverlayOp, TicketRecord};

    use stamp_model::rollout::{Touch, TOUCH_MAX};

    #[test]
    fn a_rolling_tickets_files_are_told_by_location_and_hashed_name() {
        let m = |path: &str| ModuleRef {
            path: path.into(),
            hash: Hash::of(path.as_bytes()),
            size: 1,
        };
        let mut own = stamp_model::ticket::OverrideSet::new();
        own.insert("@app/greet".into(), m("/src/greet.js"));
        own.insert("/src/greet.js".into(), m("/src/greet.js"));
        own.insert("/assets/index-*.js".into(), m("/assets/index-4f2a9c1b.js"));
        let t = Touch::of(&own);
        assert_eq!(
            t.at,
            ["/assets/index-4f2a9c1b.js", "/src/greet.js"],
            "{t:?}"
        );
        assert_eq!(
            t.hashed,
            [("/assets/index-".to_string(), 8, ".js".to_string())]
        );
        // Bounded, however many files a ticket has.
        let many: stamp_model::ticket::OverrideSet = (0..500)
            .map(|i| (format!("/src/m{i}.js"), m(&format!("/src/m{i}.js"))))
            .collect();
        assert_eq!(Touch::of(&many).at.len(), TOUCH_MAX);
    }

    /// Two snapshots that serve the same: tickets, pairs (with how many
    /// sets name each), variant ids (resolving to the same variant),
    /// production.
    fn assert_same(a: &Snapshot, b: &Snapshot, step: usize) {
        assert_eq!(a.version, b.version, "step {step}");
        let mut keys: Vec<_> = a.tickets.keys().collect();
        keys.sort();
        let mut other: Vec<_> = b.tickets.keys().collect();
        other.sort();
        assert_eq!(keys, other, "step {step}");
        for k in keys {
            let (x, y) = (&a.tickets[k], &b.tickets[k]);
            assert_eq!(
                (x.stage, x.share_gen, x.dev_set, x.qa_set, x.dev_id, x.qa_id),
                (y.stage, y.share_gen, y.dev_set, y.qa_set, y.dev_id, y.qa_id),
                "step {step}, {k}"
            );
            assert_eq!(*x.dev_own, *y.dev_own, "step {step}, {k}");
            assert_eq!(x.qa_own.as_deref(), y.qa_own.as_deref(), "step {step}, {k}");
        }
        assert_eq!(a.served.all(), b.served.all(), "step {step}");
        let mut ids: Vec<_> = a.ids.iter().map(|(id, (_, _, n))| (*id, *n)).collect();
        ids.sort();
        let mut other: Vec<_> = b.ids.iter().map(|(id, (_, _, n))| (*id, *n)).collect();
        other.sort();
        assert_eq!(ids, other, "step {step}");
        for (id, _) in ids {
            assert_eq!(
                b.effective(&id).map(|e| e.id),
                Some(id),
                "whole, step {step} {:?} {:?}",
                b.ids[&id],
                b.tickets[&b.ids[&id].0]
            );
            assert_eq!(a.effective(&id).map(|e| e.id), Some(id), "step {step}");
        }
        assert_eq!(a.remote_origins, b.remote_origins, "step {step}");
        assert_eq!(a.released, b.released, "step {step}");
        assert_eq!(a.overlay_keys, b.overlay_keys, "step {step}");
        assert_eq!(
            a.overlay.as_ref().map(|e| e.id),
            b.overlay.as_ref().map(|e| e.id),
            "step {step}"
        );
    }

    /// Random changes to a store of tickets (uploads, promotions, releases
    /// and reverts, closing, re-opening, purging), each followed by a
    /// snapshot made from what changed and one built from the whole state:
    /// they serve the same, and most changes take the short way.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_from_changes_serves_what_a_whole_build_does() {
        let dir = tempfile::tempdir().unwrap();
        let store: SharedStore =
            Arc::new(stamp_store::embedded::EmbeddedStore::open(dir.path()).unwrap());
        let mut rng = StdRng::seed_from_u64(
            std::env::var("STAMP_SNAPSHOT_SEED")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(30),
        );
        let mut records: Vec<TicketRecord> = Vec::new();
        let mut overlay: Vec<TicketKey> = Vec::new();
        let (mut sets, mut whole_sets) = (HashMap::new(), HashMap::new());
        let mut snap = Snapshot::build(&store, store.state().await.unwrap(), &mut sets, None)
            .await
            .unwrap();
        let (mut short, mut long) = (0, 0);
        for step in 0..300 {
            // A set of a few of 8 paths and 3 bodies each, so pairs repeat
            // across tickets; now and then the empty set, which many share.
            let mut own = OverrideSet::new();
            if !rng.random_bool(0.15) {
                for _ in 0..rng.random_range(1..4) {
                    let (p, b) = (rng.random_range(0..8), rng.random_range(0..3));
                    let body = format!("export default {p}{b};");
                    own.insert(
                        format!("m{p}"),
                        ModuleRef {
                            path: format!("/src/m{p}.js"),
                            hash: Hash::of(body.as_bytes()),
                            size: body.len() as u64,
                        },
                    );
                }
            }
            let set_id = store.put_set(&own).await.unwrap();
            let now = now_ms();
            let pick = (!records.is_empty()).then(|| rng.random_range(0..records.len()));
            let mut op = OverlayOp::Keep;
            let mut purge = None;
            let next = match (rng.random_range(0..10), pick) {
                (0..=2, _) | (_, None) => {
                    let key = TicketKey::parse(&format!("SNAP-{step}")).unwrap();
                    records.push(TicketRecord::new(key, set_id, now));
                    records.len() - 1
                }
                (choice, Some(i)) => {
                    let t = &mut records[i];
                    t.version += 1;
                    match (choice, t.stage) {
                        (3..=4, Stage::Dev | Stage::Qa) => t.dev = set_id,
                        (5, Stage::Dev) => {
                            t.stage = Stage::Qa;
                            t.qa = Some(t.dev);
                        }
                        (6, Stage::Qa) => {
                            t.stage = Stage::Prod;
                            t.prod = t.qa;
                            op = OverlayOp::Append;
                        }
                        (6 | 7, Stage::Prod) => {
                            // Reverted; kept servable a moment (skew).
                            t.stage = Stage::Qa;
                            if let Some(p) = t.prod.take() {
                                t.recent.push(stamp_model::record::RecentSet {
                                    set: p,
                                    until_ms: now + 30,
                                });
                            }
                            op = OverlayOp::Remove;
                        }
                        (7, Stage::Dev | Stage::Qa) => t.share_gen += 1,
                        (8, Stage::Dev | Stage::Qa) => t.stage = Stage::Closed,
                        (8 | 9, Stage::Closed) if rng.random_bool(0.5) => {
                            t.version -= 1;
                            purge = Some(i);
                        }
                        (_, Stage::Closed) => t.stage = Stage::Dev,
                        _ => t.dev = set_id,
                    }
                    i
                }
            };
            if let Some(i) = purge {
                let t = records.remove(i);
                let summary = stamp_store::HistoryEvent {
                    at_ms: now,
                    event: "purge".into(),
                    from: None,
                    to: None,
                    actor: "test".into(),
                    commit: None,
                    branch: None,
                    role: None,
                    source: None,
                    detail: None,
                };
                assert!(store
                    .purge_ticket(&t.key, t.version, summary)
                    .await
                    .unwrap());
            } else {
                let t = records[next].clone();
                match op {
                    OverlayOp::Append => overlay.push(t.key.clone()),
                    OverlayOp::Remove => overlay.retain(|k| k != &t.key),
                    OverlayOp::Keep => {}
                }
                store
                    .commit(Commit {
                        expected_version: (t.version > 1).then(|| t.version - 1),
                        ticket: t,
                        overlay: op,
                        event: None,
                    })
                    .await
                    .unwrap();
            }
            if rng.random_bool(0.1) {
                // Let the skew windows pass now and then.
                tokio::time::sleep(Duration::from_millis(35)).await;
            }
            let changes = store.changes_since(snap.version).await.unwrap().unwrap();
            let whole = Snapshot::build(
                &store,
                store.state().await.unwrap(),
                &mut whole_sets,
                Some(&snap),
            )
            .await
            .unwrap();
            assert_eq!(whole.overlay_keys, overlay, "step {step}");
            let check = |x: &Snapshot, what: &str| {
                let ov = x
                    .overlay
                    .as_ref()
                    .map(|e| e.overrides.clone())
                    .unwrap_or_default();
                for (k, t) in &x.tickets {
                    if t.stage != Stage::Closed {
                        assert_eq!(
                            t.dev_id,
                            variant_id(&ov, &t.dev_own),
                            "{what} step {step} {k}"
                        );
                    }
                }
            };
            check(&snap, "snap");
            check(&whole, "whole");
            match snap.apply(&store, &changes, &mut sets).await.unwrap() {
                Some(next) => {
                    assert_same(&next, &whole, step);
                    short += 1;
                    snap = next;
                }
                None => {
                    long += 1;
                    snap = whole;
                }
            }
        }
        assert!(short > 150, "{short} short, {long} whole");
    }

    fn set(entries: &[(&str, &str)]) -> OverrideSet {
        entries
            .iter()
            .map(|(spec, body)| {
                let m = ModuleRef {
                    path: format!("/{spec}"),
                    hash: Hash::of(body.as_bytes()),
                    size: body.len() as u64,
                };
                (spec.to_string(), m)
            })
            .collect()
    }

    #[test]
    fn a_variants_id_is_computed_without_building_it() {
        let overlay = set(&[("a.js", "a0"), ("c.js", "c0"), ("e.js", "e0")]);
        for own in [
            set(&[]),
            set(&[("a.js", "a1")]),
            set(&[("b.js", "b1"), ("c.js", "c1"), ("z.js", "z1")]),
            set(&[("0.js", "x"), ("e.js", "e1")]),
        ] {
            let mut union = overlay.clone();
            union.extend(own.clone());
            let built = Effective::new(union);
            assert_eq!(variant_id(&overlay, &own), built.id, "{own:?}");
            // Without an overlay, the variant is the ticket's own set.
            assert_eq!(variant_id(&OverrideSet::new(), &own), set_id_of(&own));
        }
    }

    fn set_id_of(s: &OverrideSet) -> Hash {
        stamp_model::ticket::set_id(s)
    }

    #[test]
    fn the_served_pairs_are_exact() {
        let mut served = Served::default();
        let (a, b) = (Hash::of(b"a"), Hash::of(b"b"));
        served.insert(a, "/src/a.js");
        served.insert(b, "/src/b.js");
        served.insert(a, "https://cdn.example/a.js");
        assert!(served.serves("/src/a.js", &a));
        assert!(served.serves("/src/b.js", &b));
        assert!(!served.serves("/src/a.js", &b));
        assert!(!served.serves("/src/b.js", &a));
        assert!(!served.serves("https://cdn.example/a.js", &a));
        assert!(served.serves(&assets::serve_path("https://cdn.example/a.js"), &a));
        assert!(!served.serves("/src/c.js", &a));
        assert_eq!(served.len(), 3);
    }

    #[test]
    fn the_variant_cache_is_bounded_and_shares_same_inputs() {
        let variants = Variants::new(4);
        let own: Vec<(Hash, OverrideSet)> = (0..10)
            .map(|i| {
                let s = set(&[("m.js", &format!("{i}"))]);
                (stamp_model::ticket::set_id(&s), s)
            })
            .collect();
        let first = variants.get(None, own[0].0, &own[0].1);
        assert!(Arc::ptr_eq(
            &first,
            &variants.get(None, own[0].0, &own[0].1)
        ));
        let overlay = Arc::new(Effective::new(set(&[("o.js", "o")])));
        let over = variants.get(Some(&overlay), own[0].0, &own[0].1);
        assert!(
            !Arc::ptr_eq(&first, &over),
            "another overlay, another variant"
        );
        assert_eq!(over.len(), 2);
        for (id, s) in &own {
            variants.get(None, *id, s);
        }
        assert!(variants.len() <= 4, "{}", variants.len());
    }
}
