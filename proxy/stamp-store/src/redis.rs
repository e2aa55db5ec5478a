//! The Redis store, shared by a fleet of proxy instances.
//!
//! Layout under `{prefix}:` — `mod:<hex>` (body), `set:<hex>` (override set
//! JSON), `ticket:<KEY>` (record JSON), `tickets` (SET of keys),
//! `history:<KEY>` (LIST of event JSON), `overlay` (JSON list of keys),
//! `version` (INCR counter), `mod-times` and `set-times` (sorted sets: hex
//! hash → when the body or set was last stored, ms since the epoch, for
//! garbage collection), `epoch` (JSON [`Epoch`]: written once into an empty
//! store, so a Redis that lost its data is told apart from one without
//! tickets) and the pub/sub channel `changes`. Page views browsers
//! reported: `views:<KEY>` (LIST of view JSON, the last few) and
//! `vcount:<KEY>` (HASH `minute|side|metric` → count, expiring with the
//! counts' retention).
//!
//! `redis+sentinel://` URLs name Redis Sentinels and a service instead of one
//! server: the store asks the sentinels for the current primary, and asks
//! again whenever the primary stops answering or turns out to be a replica,
//! so a failover needs no restart. A write is acknowledged only once every
//! replica the sentinels see up holds it (`wait_replicas=all`, the default),
//! so no failover, a demotion or a stall included, can lose it; the commits
//! acknowledged lately are checked on each new primary, and any missing is
//! logged and counted (which `wait_replicas=N` can let happen).
//!
//! Redis being down must never stop the proxy from serving, so opening never
//! connects: the connection is made lazily and re-made after a loss, and every
//! operation is bounded in time and fails with [`StoreError::Unavailable`]
//! while Redis is unreachable.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{
    Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo, RedisError,
    RedisResult, Script,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::embedded::{checked_module, checked_set, decode, encode};
use crate::{
    now_ms, Changes, Commit, Epoch, HistoryEvent, OverlayOp, Store, StoreError, StoreState,
    StoreUsage, SweepReport, TicketRecord,
};
use stamp_model::ticket::{Hash, OverrideSet, TicketKey};
use stamp_model::views::{PagesSeen, Side, ViewCount, ViewRecord, COUNTS_KEPT_MS, RECENT_VIEWS};

/// Upper bound for any one store operation, reconnection included: callers
/// (uploads, the snapshot refresher) must get an answer, not hang.
const OP_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);
/// Reconnect backoff of the change listener.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// A pub/sub connection is otherwise silent, so a half-open TCP connection
/// (a Redis host that vanished) would go unnoticed without a periodic ping.
const PING_EVERY: Duration = Duration::from_secs(5);

/// Lua: the changelog (KEYS[7]): 'version:key' for each of the last
/// versions, for readers that ask what changed since one; versions up to
/// KEYS[8] may be missing from it (trimmed). A version an older proxy made
/// is missing too, which the reader sees by counting. `changelog_ok` is
/// checked before a script's first write (Redis does not roll a script
/// back). A macro, so `concat!` can prepend it to the scripts.
macro_rules! changelog_lua {
    () => {
        r#"
local function changelog_ok()
  local t = redis.call('TYPE', KEYS[7])
  t = t['ok'] or t
  if t ~= 'zset' and t ~= 'none' then
    return redis.error_reply('CORRUPT the changelog is a ' .. tostring(t) .. ', not a sorted set')
  end
  if not tonumber(ARGV[#ARGV - 1]) then
    return redis.error_reply('the changelog length is not a number')
  end
  return nil
end
local function changelog(version, key)
  redis.call('ZADD', KEYS[7], version, version .. ':' .. key)
  local keep = tonumber(ARGV[#ARGV - 1])
  if redis.call('ZCARD', KEYS[7]) > keep then
    local cut = redis.call('ZRANGE', KEYS[7], -(keep + 1), -(keep + 1), 'WITHSCORES')
    redis.call('ZREMRANGEBYRANK', KEYS[7], 0, -(keep + 1))
    redis.call('SET', KEYS[8], cut[2])
  end
end
"#
    };
}

/// Lua: the id of an epoch marker's raw value, '' when absent, '?' when
/// unreadable. A macro, so `concat!` can prepend it to the scripts.
macro_rules! epoch_id_lua {
    () => {
        r#"
local function epoch_id(raw)
  if not raw then return '' end
  local ok, e = pcall(cjson.decode, raw)
  if ok and type(e) == 'table' and type(e.id) == 'string' then return e.id end
  return '?'
end
"#
    };
}

/// Atomic commit. Everything is read and validated before the first write:
/// Redis does not roll a script back when it fails half-way.
///
/// KEYS: ticket, tickets set, history list, overlay, version, epoch,
/// changelog, changelog floor.
/// ARGV: ticket key, expected version ('' = must not exist), new version,
/// record JSON, overlay op (keep|append|remove), event JSON ('' = none),
/// change channel, changelog length, the epoch id the writer knows.
/// Returns {1, new global version}, {0, found version (-1 = absent)} or
/// {-1, 0} when the store's epoch is not the writer's.
const COMMIT_LUA: &str = concat!(
    epoch_id_lua!(),
    changelog_lua!(),
    r#"
if epoch_id(redis.call('GET', KEYS[6])) ~= ARGV[9] then return {-1, 0} end
local found = -1
local current = redis.call('GET', KEYS[1])
if current then
  local ok, rec = pcall(cjson.decode, current)
  if not ok or type(rec) ~= 'table' or type(rec.version) ~= 'number' then
    return redis.error_reply('CORRUPT ticket record ' .. ARGV[1] .. ' is not valid JSON')
  end
  found = rec.version
end
local expected = -1
if ARGV[2] ~= '' then expected = tonumber(ARGV[2]) end
local wanted = 1
if expected >= 0 then wanted = expected + 1 end
if found ~= expected or tonumber(ARGV[3]) ~= wanted then
  return {0, found}
end
local bad = changelog_ok()
if bad then return bad end

local overlay = nil
if ARGV[5] ~= 'keep' then
  local list = {}
  local raw = redis.call('GET', KEYS[4])
  if raw then
    local ok, decoded = pcall(cjson.decode, raw)
    if not ok or type(decoded) ~= 'table' then
      return redis.error_reply('CORRUPT overlay is not a JSON list')
    end
    list = decoded
  end
  local out = {}
  for _, k in ipairs(list) do
    if k ~= ARGV[1] then table.insert(out, cjson.encode(k)) end
  end
  if ARGV[5] == 'append' then table.insert(out, cjson.encode(ARGV[1])) end
  -- Built by hand: cjson encodes an empty table as {} rather than [].
  overlay = '[' .. table.concat(out, ',') .. ']'
end

redis.call('SET', KEYS[1], ARGV[4])
redis.call('SADD', KEYS[2], ARGV[1])
if overlay then redis.call('SET', KEYS[4], overlay) end
if ARGV[6] ~= '' then redis.call('RPUSH', KEYS[3], ARGV[6]) end
local version = redis.call('INCR', KEYS[5])
changelog(version, ARGV[1])
redis.call('PUBLISH', ARGV[7], version)
return {1, version}
"#
);

/// Adopts the store as it is: gives it an epoch if it has none, and records
/// that its epoch supersedes the one the caller knew; bumps the version and
/// notifies, so every instance re-reads the state (and adopts) at once.
///
/// KEYS: epoch, version, changelog floor. ARGV: a fresh epoch JSON (used when there is none),
/// the epoch id the caller knew ('' = none), change channel.
/// Returns the epoch JSON now stored.
const ADOPT_LUA: &str = r#"
local raw = redis.call('GET', KEYS[1])
if not raw then
  raw = ARGV[1]
else
  local ok, e = pcall(cjson.decode, raw)
  if not ok or type(e) ~= 'table' or type(e.id) ~= 'string' then
    return redis.error_reply('CORRUPT the epoch marker is not valid JSON')
  end
  if ARGV[2] ~= '' and e.id ~= ARGV[2] then
    local superseded = {}
    if type(e.supersedes) == 'table' then
      for _, id in ipairs(e.supersedes) do
        if id ~= ARGV[2] then table.insert(superseded, cjson.encode(id)) end
      end
    end
    table.insert(superseded, cjson.encode(ARGV[2]))
    -- Built by hand: cjson encodes an empty table as {} rather than [].
    raw = '{"id":' .. cjson.encode(e.id) .. ',"supersedes":[' .. table.concat(superseded, ',') .. ']}'
  end
end
redis.call('SET', KEYS[1], raw)
local version = redis.call('INCR', KEYS[2])
-- Readers re-read everything across an adoption.
redis.call('SET', KEYS[3], version)
redis.call('PUBLISH', ARGV[3], version)
return raw
"#;

/// Consistent snapshot: a script runs with nothing interleaved. Ticket keys
/// come from the set, so their record keys are built here (fine outside
/// Redis Cluster, which this store does not target).
///
/// KEYS: version, tickets set, overlay, epoch. ARGV: ticket key prefix.
/// Returns {version, {record JSON...}, overlay JSON, epoch JSON ('' = none)}.
const STATE_LUA: &str = r#"
local version = tonumber(redis.call('GET', KEYS[1]) or '0')
local records = {}
for _, k in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local r = redis.call('GET', ARGV[1] .. k)
  if r then table.insert(records, r) end
end
return {version, records, redis.call('GET', KEYS[3]) or '[]', redis.call('GET', KEYS[4]) or ''}
"#;

/// What changed since a version, read at once ([`Store::changes_since`]).
///
/// KEYS: version, changelog, changelog floor, overlay, epoch. ARGV: the
/// version the reader holds, ticket key prefix.
/// Returns {version, covered (0|1), {key...}, {present (0|1)...}, {record
/// JSON ('' when absent)...}, overlay JSON, epoch JSON ('' = none)}.
/// Anything it cannot read as a changelog (an entry without a version, two
/// entries for one version, a floor that is not a number, a changelog of
/// another type) is "not covered": the reader reads the whole state, which
/// does not depend on the changelog.
const CHANGES_LUA: &str = r#"
local version = tonumber(redis.call('GET', KEYS[1]) or '0')
local since = tonumber(ARGV[1])
local floor = tonumber(redis.call('GET', KEYS[3]) or '0')
local epoch = redis.call('GET', KEYS[5]) or ''
local function uncovered() return {version, 0, {}, {}, {}, '[]', epoch} end
local t = redis.call('TYPE', KEYS[2])
t = t['ok'] or t
if not version or not since or not floor or (t ~= 'zset' and t ~= 'none') then return uncovered() end
if since < floor or since > version then return uncovered() end
if redis.call('ZCOUNT', KEYS[2], '(' .. ARGV[1], '+inf') ~= version - since then return uncovered() end
local entries = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], '+inf', 'WITHSCORES')
local keys, seen, present, records = {}, {}, {}, {}
for i = 1, #entries, 2 do
  local e, score = entries[i], tonumber(entries[i + 1])
  local colon = string.find(e, ':', 1, true)
  -- One entry per version, each the version it names, in order.
  if not colon or score ~= since + (i + 1) / 2 or string.sub(e, 1, colon - 1) ~= tostring(score) then
    return uncovered()
  end
  local k = string.sub(e, colon + 1)
  if not seen[k] then
    seen[k] = true
    table.insert(keys, k)
    local r = redis.call('GET', ARGV[2] .. k)
    table.insert(present, r and 1 or 0)
    table.insert(records, r or '')
  end
end
return {version, 1, keys, present, records, redis.call('GET', KEYS[4]) or '[]', epoch}
"#;

/// Stores a body or a set and records "stored now" for it, atomically: a
/// sweep never sees the value without its time. The time only moves forward.
///
/// KEYS: value key, times sorted set, epoch. ARGV: value, hex hash, now
/// (ms), the writer's epoch. Returns -1, writing nothing, when the store's
/// epoch is not the writer's (it lost its state: an upload refused then
/// must leave nothing behind).
const PUT_LUA: &str = concat!(
    epoch_id_lua!(),
    r#"
if epoch_id(redis.call('GET', KEYS[3])) ~= ARGV[4] then return -1 end
redis.call('SET', KEYS[1], ARGV[1], 'NX')
local at = tonumber(ARGV[3])
local recorded = redis.call('ZSCORE', KEYS[2], ARGV[2])
if not recorded or tonumber(recorded) < at then
  redis.call('ZADD', KEYS[2], at, ARGV[2])
end
return 1
"#
);

/// [`PUT_LUA`] without the value, for a body already stored.
///
/// KEYS: body key, mod-times. ARGV: hex hash, now (ms).
/// Returns the body's size, or -1 when it is not stored.
const CLAIM_LUA: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local at = tonumber(ARGV[2])
local recorded = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not recorded or tonumber(recorded) < at then
  redis.call('ZADD', KEYS[2], at, ARGV[1])
end
return redis.call('STRLEN', KEYS[1])
"#;

/// Counts for metrics.
///
/// KEYS: mod-times, set-times, tickets set.
/// ARGV: body key prefix, set key prefix, ticket key prefix.
/// Returns {modules, module bytes, sets, tickets, closed tickets}.
const USAGE_LUA: &str = r#"
local modules, bytes = 0, 0
for _, h in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local k = ARGV[1] .. h
  if redis.call('EXISTS', k) == 1 then
    modules = modules + 1
    bytes = bytes + redis.call('STRLEN', k)
  end
end
local sets = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  sets = sets + redis.call('EXISTS', ARGV[2] .. id)
end
local tickets, closed = 0, 0
for _, k in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  local raw = redis.call('GET', ARGV[3] .. k)
  if raw then
    tickets = tickets + 1
    local ok, rec = pcall(cjson.decode, raw)
    if ok and type(rec) == 'table' and rec.stage == 'closed' then closed = closed + 1 end
  end
end
return {modules, bytes, sets, tickets, closed}
"#;

/// Garbage collection in one script (nothing interleaves): see
/// [`Store::sweep`]. All checks come before the first delete.
///
/// KEYS: tickets set, set-times, mod-times.
/// ARGV: ticket key prefix, set key prefix, body key prefix, keep_after (ms).
/// Returns {modules deleted, bytes freed, sets deleted}.
const SWEEP_LUA: &str = r#"
-- Every sha256 (64 lower-case hex digits) anywhere in a decoded value.
local function collect(value, into)
  local t = type(value)
  if t == 'string' then
    if #value == 64 and not value:find('[^0-9a-f]') then into[value] = true end
  elseif t == 'table' then
    for _, v in pairs(value) do collect(v, into) end
  end
end

-- What the tickets reference, read generically so that a set-id field added
-- to the record later is covered without touching this.
local live = {}
for _, k in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local raw = redis.call('GET', ARGV[1] .. k)
  if raw then
    local ok, rec = pcall(cjson.decode, raw)
    if not ok or type(rec) ~= 'table' then
      return redis.error_reply('CORRUPT ticket record ' .. k .. ' is not valid JSON')
    end
    collect(rec, live)
  end
end

-- Sets that stay: the live ones and the recently stored ones (an upload
-- between its put_set and its commit); every body they reference stays, as
-- does a hash a ticket holds directly.
local kept, wanted = {}, {}
for id in pairs(live) do
  kept[id] = true
  wanted[id] = true
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[4], '+inf')) do
  kept[id] = true
end
for id in pairs(kept) do
  local raw = redis.call('GET', ARGV[2] .. id)
  if raw then
    local ok, set = pcall(cjson.decode, raw)
    if not ok or type(set) ~= 'table' then
      return redis.error_reply('CORRUPT override set ' .. id .. ' is not valid JSON')
    end
    collect(set, wanted)
  end
end

local sets_deleted = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[4])) do
  if not live[id] then
    sets_deleted = sets_deleted + redis.call('DEL', ARGV[2] .. id)
    redis.call('ZREM', KEYS[2], id)
  end
end
local modules_deleted, bytes = 0, 0
for _, h in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[4])) do
  if not wanted[h] then
    local k = ARGV[3] .. h
    local size = redis.call('STRLEN', k)
    if redis.call('DEL', k) == 1 then
      modules_deleted = modules_deleted + 1
      bytes = bytes + size
    end
    redis.call('ZREM', KEYS[3], h)
  end
end
return {modules_deleted, bytes, sets_deleted}
"#;

/// Deletes a closed ticket's record, keeping (and appending to) its history.
///
/// KEYS: ticket, tickets set, history list, overlay, version, epoch,
/// changelog, changelog floor.
/// ARGV: ticket key, expected version, summary event JSON, change channel,
/// changelog length, the epoch id the caller knows.
/// Returns {1, new global version}, {0, 0} when refused, or {-1, 0} when the
/// store's epoch is not the caller's.
const PURGE_LUA: &str = concat!(
    epoch_id_lua!(),
    changelog_lua!(),
    r#"
if epoch_id(redis.call('GET', KEYS[6])) ~= ARGV[6] then return {-1, 0} end
local raw = redis.call('GET', KEYS[1])
if not raw then return {0, 0} end
local ok, rec = pcall(cjson.decode, raw)
if not ok or type(rec) ~= 'table' then
  return redis.error_reply('CORRUPT ticket record ' .. ARGV[1] .. ' is not valid JSON')
end
if rec.stage ~= 'closed' or rec.version ~= tonumber(ARGV[2]) then return {0, 0} end
local bad = changelog_ok()
if bad then return bad end

-- The workflow never closes a released ticket; should one be listed anyway,
-- it must not outlive its record there.
local overlay = nil
local listed = redis.call('GET', KEYS[4])
if listed then
  local ok2, list = pcall(cjson.decode, listed)
  if not ok2 or type(list) ~= 'table' then
    return redis.error_reply('CORRUPT overlay is not a JSON list')
  end
  local out, found = {}, false
  for _, k in ipairs(list) do
    if k == ARGV[1] then found = true else table.insert(out, cjson.encode(k)) end
  end
  if found then overlay = '[' .. table.concat(out, ',') .. ']' end
end

redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
if overlay then redis.call('SET', KEYS[4], overlay) end
redis.call('RPUSH', KEYS[3], ARGV[3])
local version = redis.call('INCR', KEYS[5])
changelog(version, ARGV[1])
redis.call('PUBLISH', ARGV[4], version)
return {1, version}
"#
);

struct Keys {
    prefix: String,
}

impl Keys {
    fn module_prefix(&self) -> String {
        format!("{}:mod:", self.prefix)
    }
    fn module(&self, h: &Hash) -> String {
        format!("{}:mod:{h}", self.prefix)
    }
    fn module_times(&self) -> String {
        format!("{}:mod-times", self.prefix)
    }
    fn set_prefix(&self) -> String {
        format!("{}:set:", self.prefix)
    }
    fn set(&self, h: &Hash) -> String {
        format!("{}:set:{h}", self.prefix)
    }
    fn set_times(&self) -> String {
        format!("{}:set-times", self.prefix)
    }
    fn ticket_prefix(&self) -> String {
        format!("{}:ticket:", self.prefix)
    }
    fn ticket(&self, k: &TicketKey) -> String {
        format!("{}:ticket:{k}", self.prefix)
    }
    fn tickets(&self) -> String {
        format!("{}:tickets", self.prefix)
    }
    fn history(&self, k: &TicketKey) -> String {
        format!("{}:history:{k}", self.prefix)
    }
    fn overlay(&self) -> String {
        format!("{}:overlay", self.prefix)
    }
    fn epoch(&self) -> String {
        format!("{}:epoch", self.prefix)
    }
    fn version(&self) -> String {
        format!("{}:version", self.prefix)
    }
    fn changelog(&self) -> String {
        format!("{}:changelog", self.prefix)
    }
    fn changelog_floor(&self) -> String {
        format!("{}:changelog-floor", self.prefix)
    }
    fn channel(&self) -> String {
        format!("{}:changes", self.prefix)
    }
    fn views(&self, k: &TicketKey) -> String {
        format!("{}:views:{k}", self.prefix)
    }
    fn revoked(&self) -> String {
        format!("{}:revoked", self.prefix)
    }
    fn view_counts(&self, k: &TicketKey) -> String {
        format!("{}:vcount:{k}", self.prefix)
    }
}

pub struct RedisStore {
    target: Arc<Target>,
    keys: Keys,
    location: String,
    commit_script: Script,
    state_script: Script,
    put_script: Script,
    claim_script: Script,
    usage_script: Script,
    sweep_script: Script,
    purge_script: Script,
    adopt_script: Script,
    changes_script: Script,
    /// Whether this instance has indexed the bodies and sets stored without
    /// a time (see [`RedisStore::track_untracked`]).
    tracked: AtomicBool,
    /// The epoch id this instance knows (see [`Store::epoch`]).
    known_epoch: Mutex<Option<String>>,
    changes: watch::Sender<u64>,
    listener: JoinHandle<()>,
    /// Times the change subscription was (re)made ([`Store::resyncs`]).
    resyncs: Arc<AtomicU64>,
    /// Commits this instance acknowledged lately, checked on the primary
    /// that serves after a failover.
    journal: Journal,
    /// Why Redis refuses writes while it answers (out of memory, cannot
    /// save), until a write succeeds again.
    fault: Mutex<Option<String>>,
}

/// How long an acknowledged commit is remembered, and how many at most:
/// a failover loses what was written in its last seconds, if anything.
const JOURNAL_KEPT: Duration = Duration::from_secs(120);
const JOURNAL_MAX: usize = 4096;

/// The commits this instance acknowledged lately (ticket, record version),
/// and the connection generation they were last checked against.
#[derive(Default)]
struct Journal {
    acked: Mutex<std::collections::VecDeque<(std::time::Instant, TicketKey, u64)>>,
    checked_generation: std::sync::atomic::AtomicU64,
}

impl Journal {
    fn record(&self, key: &TicketKey, version: u64) {
        let mut acked = lock(&self.acked);
        let now = std::time::Instant::now();
        while acked
            .front()
            .is_some_and(|(at, ..)| now.duration_since(*at) > JOURNAL_KEPT)
            || acked.len() >= JOURNAL_MAX
        {
            acked.pop_front();
        }
        acked.push_back((now, key.clone(), version));
    }

    fn forget(&self, key: &TicketKey) {
        lock(&self.acked).retain(|(_, k, _)| k != key);
    }

    /// The newest acknowledged version of each ticket still remembered.
    fn newest(&self) -> Vec<(TicketKey, u64)> {
        let now = std::time::Instant::now();
        let mut out: std::collections::BTreeMap<TicketKey, u64> = Default::default();
        for (at, key, version) in lock(&self.acked).iter() {
            if now.duration_since(*at) <= JOURNAL_KEPT {
                let v = out.entry(key.clone()).or_default();
                *v = (*v).max(*version);
            }
        }
        out.into_iter().collect()
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        // The listener would otherwise keep reconnecting for a store nobody holds.
        self.listener.abort();
    }
}

/// Whether `location` names a Redis store rather than a directory.
pub fn is_redis_url(location: &str) -> bool {
    ["redis://", "rediss://", "redis+sentinel://"]
        .iter()
        .any(|scheme| location.starts_with(scheme))
}

/// `url` without user, password, query or fragment, plus the key prefix:
/// safe for logs and /health.
fn describe_url(url: &str, prefix: &str) -> String {
    if let Some(rest) = url.strip_prefix(SENTINEL_SCHEME) {
        // The host list is not a URL authority `url` can parse. Neither
        // hosts nor the service contain `@`: everything before the last one
        // is credentials, whatever characters they hold.
        let rest = rest.split(['?', '#']).next().unwrap_or("");
        let rest = rest.rsplit_once('@').map_or(rest, |(_, after)| after);
        return format!("{SENTINEL_SCHEME}{rest} (prefix {prefix})");
    }
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            // Both setters only fail for URLs that cannot carry credentials,
            // which then have none to hide.
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.set_fragment(None);
            format!("{parsed} (prefix {prefix})")
        }
        // Never echo an unparsable value: it may well contain a password.
        Err(_) => format!(
            "{} (unparsable URL)",
            url.split(':').next().unwrap_or("redis")
        ),
    }
}

const SENTINEL_SCHEME: &str = "redis+sentinel://";
const SENTINEL_PORT: u16 = 26379;
/// How long a write waits for its replicas by default.
const DEFAULT_WAIT: Duration = Duration::from_secs(1);

/// How many replicas must hold a write before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitFor {
    /// Every replica the sentinels see up (the default): whichever replica
    /// a failover promotes, and a demoted primary's last writes are refused
    /// rather than acknowledged (the replica promoted away no longer
    /// confirms them).
    All,
    /// This many (0: none; a failover may lose what it acknowledged).
    Count(u32),
}

/// A parsed `redis+sentinel://[[user]:password@]host[:port][,host[:port]…]/service[/db][?wait_replicas=all|N&wait_ms=M]`.
/// The credentials and the database are the Redis servers'; sentinels are
/// reached without credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelUrl {
    pub sentinels: Vec<(String, u16)>,
    pub service: String,
    pub db: i64,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Replicas that must hold a write before it is acknowledged.
    pub wait_replicas: WaitFor,
    pub wait: Duration,
}

impl SentinelUrl {
    pub fn parse(url: &str) -> Result<SentinelUrl, String> {
        let rest = url
            .strip_prefix(SENTINEL_SCHEME)
            .ok_or_else(|| format!("a Sentinel URL starts with {SENTINEL_SCHEME}"))?;
        if rest.contains('#') {
            return Err("a Sentinel URL has no fragment".into());
        }
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        // Credentials first: they may hold `/` (hosts and the service never
        // hold `@`).
        let (userinfo, rest) = match rest.rsplit_once('@') {
            Some((u, r)) => (Some(u), r),
            None => (None, rest),
        };
        let (hosts, path) = rest
            .split_once('/')
            .ok_or("a Sentinel URL names its service: redis+sentinel://host:26379/mymaster")?;
        let decode = |s: &str| -> Result<String, String> {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| "the credentials are not valid UTF-8 once percent-decoded".to_string())
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once(':') {
                Some((user, pass)) => (
                    (!user.is_empty()).then(|| decode(user)).transpose()?,
                    Some(decode(pass)?),
                ),
                None => (Some(decode(u)?), None),
            },
        };
        let mut sentinels = Vec::new();
        for host in hosts.split(',') {
            sentinels.push(parse_host_port(host)?);
        }
        let mut segments = path.split('/');
        let service = segments.next().unwrap_or("").to_string();
        if service.is_empty()
            || service.len() > 128
            || !service
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(format!(
                "the service name {service:?} must be 1 to 128 letters, digits, '-', '_' or '.'"
            ));
        }
        let db = match segments.next() {
            None | Some("") => 0,
            Some(d) => d
                .parse::<i64>()
                .ok()
                .filter(|d| (0..=1_000_000).contains(d))
                .ok_or_else(|| format!("the database {d:?} is not a number"))?,
        };
        if segments.next().is_some_and(|s| !s.is_empty()) {
            return Err("a Sentinel URL's path is /service or /service/db".into());
        }
        let mut parsed = SentinelUrl {
            sentinels,
            service,
            db,
            username,
            password,
            wait_replicas: WaitFor::All,
            wait: DEFAULT_WAIT,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let number = || {
                value
                    .parse::<u32>()
                    .map_err(|_| format!("{name} must be a whole number, not {value:?}"))
            };
            match name {
                "wait_replicas" if value == "all" => parsed.wait_replicas = WaitFor::All,
                "wait_replicas" => {
                    let n = value.parse::<u32>().map_err(|_| {
                        format!("wait_replicas is `all` or a whole number, not {value:?}")
                    })?;
                    if n > 16 {
                        return Err("wait_replicas is at most 16".into());
                    }
                    parsed.wait_replicas = WaitFor::Count(n);
                }
                "wait_ms" => {
                    let ms = number()?;
                    // WAIT holds the shared connection: stay well below the
                    // response timeout.
                    if !(1..=2_000).contains(&ms) {
                        return Err("wait_ms is between 1 and 2000".into());
                    }
                    parsed.wait = Duration::from_millis(u64::from(ms));
                }
                other => {
                    return Err(format!(
                        "unknown Sentinel URL parameter {other:?} (known: wait_replicas, wait_ms)"
                    ))
                }
            }
        }
        Ok(parsed)
    }
}

/// `host[:port]` or `[v6]:port` of one sentinel.
fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    let bad = || format!("{s:?} is not a sentinel address (host:port)");
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(bad)?;
        match after {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':'))
    {
        return Err(bad());
    }
    let port = match port {
        None => SENTINEL_PORT,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad)?,
    };
    Ok((host.to_string(), port))
}

/// Where the store's connections go: one server, or whichever server the
/// sentinels name as the primary now.
enum Target {
    Direct {
        client: Client,
        /// The connection, with a generation like Sentinel's: one that
        /// stopped answering is replaced.
        current: Mutex<(u64, Option<ConnectionManager>)>,
    },
    Sentinel {
        /// Boxed: it is most of the variant's size, and made once.
        sentinel: Box<tokio::sync::Mutex<SentinelClient>>,
        /// The connection to the primary last found, with a generation so
        /// that a failure on an older one does not drop a newer one.
        current: Mutex<(u64, Option<ConnectionManager>)>,
        wait_replicas: WaitFor,
        wait: Duration,
        /// Each sentinel, asked directly how many replicas are up.
        sentinels: Vec<Client>,
        service: String,
        /// Replicas up, as last counted, and when.
        replicas_up: Mutex<Option<(std::time::Instant, u32)>>,
    },
}

fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        // Few retries inside one operation: the caller is waiting, and
        // the next operation retries anyway.
        .set_number_of_retries(1)
        .set_min_delay(MIN_BACKOFF)
        .set_max_delay(MAX_BACKOFF)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded values stay consistent whatever a panicking holder did.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Target {
    /// A client for the current primary (for the change listener).
    async fn client(&self) -> Result<Client, StoreError> {
        match self {
            Target::Direct { client, .. } => Ok(client.clone()),
            Target::Sentinel { sentinel, .. } => {
                let mut sentinel = sentinel.lock().await;
                bounded(sentinel.async_get_client()).await
            }
        }
    }

    /// A connection to the current primary, and its generation.
    async fn conn(&self) -> Result<(u64, ConnectionManager), StoreError> {
        match self {
            Target::Direct { client, current } => {
                let mut current = lock(current);
                if let Some(conn) = &current.1 {
                    return Ok((current.0, conn.clone()));
                }
                let conn =
                    ConnectionManager::new_lazy_with_config(client.clone(), manager_config())
                        .map_err(redis_err)?;
                current.0 += 1;
                current.1 = Some(conn.clone());
                Ok((current.0, conn))
            }
            Target::Sentinel {
                sentinel, current, ..
            } => {
                if let (generation, Some(conn)) = &*lock(current) {
                    return Ok((*generation, conn.clone()));
                }
                // One lookup at a time, whoever waited may find it done;
                // the wait counts against the operation's bound too.
                let lookup = async {
                    let mut sentinel = sentinel.lock().await;
                    if let (generation, Some(conn)) = &*lock(current) {
                        return Ok((*generation, conn.clone()));
                    }
                    let client = sentinel.async_get_client().await.map_err(redis_err)?;
                    let conn = ConnectionManager::new_lazy_with_config(client, manager_config())
                        .map_err(redis_err)?;
                    let mut current = lock(current);
                    current.0 += 1;
                    current.1 = Some(conn.clone());
                    Ok((current.0, conn))
                };
                match tokio::time::timeout(OP_TIMEOUT, lookup).await {
                    Ok(found) => found,
                    Err(_) => Err(StoreError::Unavailable(format!(
                        "the sentinels named no reachable primary within {OP_TIMEOUT:?}"
                    ))),
                }
            }
        }
    }

    /// After `error` on the connection of `generation`: with Sentinel, the
    /// next operation asks the sentinels for the primary again (it may have
    /// failed over, or this one may have been demoted to a replica). A
    /// server that did not answer in time gets a new connection either way:
    /// the old one may be half-open (a vanished host, a dropped NAT entry),
    /// which nothing else would notice for many minutes.
    fn forget(&self, generation: u64, error: &StoreError) {
        let current = match self {
            Target::Sentinel { current, .. } => current,
            Target::Direct { current, .. } if timed_out(error) => current,
            Target::Direct { .. } => return,
        };
        let mut current = lock(current);
        if current.0 == generation {
            current.1 = None;
        }
    }

    /// How many replicas must confirm a write now, and for how long to wait.
    async fn wait_replicas(&self) -> Result<(u32, Duration), StoreError> {
        match self {
            Target::Direct { .. } => Ok((0, DEFAULT_WAIT)),
            Target::Sentinel {
                wait_replicas: WaitFor::Count(n),
                wait,
                ..
            } => Ok((*n, *wait)),
            Target::Sentinel {
                wait_replicas: WaitFor::All,
                wait,
                sentinels,
                service,
                replicas_up,
                ..
            } => {
                if let Some((at, n)) = *lock(replicas_up) {
                    if at.elapsed() < REPLICAS_FRESH {
                        return Ok((n, *wait));
                    }
                }
                let n = count_replicas_up(sentinels, service).await?;
                *lock(replicas_up) = Some((std::time::Instant::now(), n));
                Ok((n, *wait))
            }
        }
    }

    /// Forgets the replica count, so the next write asks the sentinels.
    fn recount(&self) {
        if let Target::Sentinel { replicas_up, .. } = self {
            *lock(replicas_up) = None;
        }
    }
}

/// How long a count of replicas up is used before the sentinels are asked again.
const REPLICAS_FRESH: Duration = Duration::from_secs(1);

/// The replicas of `service` that the sentinels see up (not subjectively
/// or objectively down, not disconnected): the most any sentinel that
/// answers in time reports, so a sentinel behind the others cannot lower
/// the bar. No sentinel answering is an error: the write is refused rather
/// than acknowledged on a guess.
async fn count_replicas_up(sentinels: &[Client], service: &str) -> Result<u32, StoreError> {
    let asks = sentinels.iter().map(|client| async move {
        let ask = async {
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("SENTINEL")
                .arg("REPLICAS")
                .arg(service)
                .query_async::<Vec<std::collections::HashMap<String, String>>>(&mut conn)
                .await
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, ask).await {
            Ok(Ok(replicas)) => Some(
                replicas
                    .iter()
                    .filter(|r| {
                        let flags = r.get("flags").map_or("", String::as_str);
                        !flags
                            .split(',')
                            .any(|f| matches!(f, "s_down" | "o_down" | "disconnected"))
                    })
                    .count() as u32,
            ),
            _ => None,
        }
    });
    futures::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .max()
        .ok_or_else(|| {
            StoreError::Unavailable(
                "no sentinel answered how many replicas are up, so the write could not be \
                 confirmed safe from a failover; retry"
                    .into(),
            )
        })
}

/// An answer of a server that refused the command before doing anything
/// because of its role or state: a demoted primary (`READONLY`), one still
/// loading its data (`LOADING`), or a replica that lost its primary
/// (`MASTERDOWN`). Asking the sentinels again and retrying is safe.
fn refused_by_role(e: &StoreError) -> bool {
    matches!(e, StoreError::Unavailable(m)
        if ["READONLY", "LOADING", "MASTERDOWN"].iter().any(|code| m.contains(code)))
}

/// Whether the server did not answer in time (rather than refusing).
fn timed_out(e: &StoreError) -> bool {
    matches!(e, StoreError::Unavailable(m) if m.contains("did not answer within"))
}

fn redis_err(e: RedisError) -> StoreError {
    // What Redis refused and why, in words an operator acts on (the code
    // stays in the text: callers match on it).
    let said = |what: &str| {
        StoreError::Unavailable(format!("redis: {what} ({})", e.detail().unwrap_or("")))
    };
    match e.code() {
        Some("CORRUPT") => {
            return StoreError::Corrupt(e.detail().unwrap_or("corrupt data").to_string())
        }
        Some("OOM") => {
            return said(
                "OOM: Redis is out of memory (maxmemory reached, nothing it may evict) and \
                 refused the write; raise maxmemory or free memory",
            )
        }
        Some("MISCONF") => {
            return said(
                "MISCONF: Redis cannot save to its disk and refuses writes until a save \
                 succeeds; free disk space on the Redis host",
            )
        }
        Some("READONLY") => {
            return said(
                "READONLY: this Redis is a replica (demoted, or the store URL names a \
                 replica); point the store at the primary, or use redis+sentinel://",
            )
        }
        Some("LOADING") => return said("LOADING: Redis is still loading its data; retry shortly"),
        _ => {}
    }
    if e.is_timeout() {
        return StoreError::Unavailable(format!(
            "redis did not answer within {RESPONSE_TIMEOUT:?}"
        ));
    }
    match e.kind() {
        redis::ErrorKind::UnexpectedReturnType | redis::ErrorKind::Parse => {
            StoreError::Corrupt(format!("unexpected reply from redis: {e}"))
        }
        _ => StoreError::Unavailable(format!("redis: {e}")),
    }
}

/// Runs one Redis exchange under [`OP_TIMEOUT`].
async fn bounded<T>(fut: impl Future<Output = RedisResult<T>>) -> Result<T, StoreError> {
    match tokio::time::timeout(OP_TIMEOUT, fut).await {
        Ok(result) => result.map_err(redis_err),
        Err(_) => Err(StoreError::Unavailable(format!(
            "redis did not answer within {OP_TIMEOUT:?}"
        ))),
    }
}

/// Raises the published version, never lowers it: a notification for an older
/// commit can arrive after a newer one was published locally.
fn raise(changes: &watch::Sender<u64>, version: u64) {
    changes.send_if_modified(|current| {
        if version > *current {
            *current = version;
            true
        } else {
            false
        }
    });
}

impl RedisStore {
    /// Accepts `redis://`, `rediss://` and `redis+sentinel://` URLs. Does not
    /// connect: only a malformed URL fails here; an unreachable Redis shows
    /// up as [`StoreError::Unavailable`] from operations until it is back.
    pub async fn open(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let location = describe_url(url, prefix);
        let open_err = |reason: String| StoreError::Open {
            location: location.clone(),
            reason,
        };
        let target = if url.starts_with(SENTINEL_SCHEME) {
            let parsed = SentinelUrl::parse(url).map_err(open_err)?;
            let nodes: Vec<ConnectionInfo> = parsed
                .sentinels
                .iter()
                .map(|(host, port)| ConnectionAddr::Tcp(host.clone(), *port).into_connection_info())
                .collect::<RedisResult<_>>()
                .map_err(|e| open_err(e.to_string()))?;
            let mut redis_info = RedisConnectionInfo::default().set_db(parsed.db);
            if let Some(user) = &parsed.username {
                redis_info = redis_info.set_username(user);
            }
            if let Some(password) = &parsed.password {
                redis_info = redis_info.set_password(password);
            }
            let node_info =
                SentinelNodeConnectionInfo::default().set_redis_connection_info(redis_info);
            let sentinel = SentinelClient::build(
                nodes,
                parsed.service.clone(),
                Some(node_info),
                SentinelServerType::Master,
            )
            .map_err(|e| open_err(e.to_string()))?;
            let sentinels = parsed
                .sentinels
                .iter()
                .map(|(host, port)| Client::open(ConnectionAddr::Tcp(host.clone(), *port)))
                .collect::<RedisResult<Vec<Client>>>()
                .map_err(|e| open_err(e.to_string()))?;
            Target::Sentinel {
                sentinel: Box::new(tokio::sync::Mutex::new(sentinel)),
                current: Mutex::new((0, None)),
                wait_replicas: parsed.wait_replicas,
                wait: parsed.wait,
                sentinels,
                service: parsed.service.clone(),
                replicas_up: Mutex::new(None),
            }
        } else {
            let client = Client::open(url).map_err(|e| open_err(e.to_string()))?;
            let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager_config())
                .map_err(|e| open_err(e.to_string()))?;
            Target::Direct {
                client,
                current: Mutex::new((1, Some(conn))),
            }
        };
        let target = Arc::new(target);

        let keys = Keys {
            prefix: prefix.to_string(),
        };
        let (changes, _) = watch::channel(0);
        let resyncs = Arc::new(AtomicU64::new(0));
        let listener = tokio::spawn(listen(
            Arc::clone(&target),
            keys.channel(),
            keys.version(),
            location.clone(),
            (changes.clone(), Arc::clone(&resyncs)),
        ));
        Ok(RedisStore {
            target,
            keys,
            location,
            commit_script: Script::new(COMMIT_LUA),
            state_script: Script::new(STATE_LUA),
            put_script: Script::new(PUT_LUA),
            claim_script: Script::new(CLAIM_LUA),
            usage_script: Script::new(USAGE_LUA),
            sweep_script: Script::new(SWEEP_LUA),
            purge_script: Script::new(PURGE_LUA),
            adopt_script: Script::new(ADOPT_LUA),
            changes_script: Script::new(CHANGES_LUA),
            tracked: AtomicBool::new(false),
            known_epoch: Mutex::new(None),
            changes,
            listener,
            resyncs,
            journal: Journal::default(),
            fault: Mutex::new(None),
        })
    }

    /// Runs `op` on a connection to the primary, bounded in time; a failure
    /// makes a Sentinel store look the primary up again.
    async fn run<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let (generation, conn) = self.target.conn().await?;
        self.check_journal(generation, &conn).await;
        let result = bounded(op(conn)).await;
        if let Err(e @ StoreError::Unavailable(_)) = &result {
            self.target.forget(generation, e);
        }
        result
    }

    /// On the first use of a new connection to the primary (a failover, a
    /// demotion, a reconnect), checks that every commit this instance
    /// acknowledged lately is there. One that is not was lost by the
    /// failover: that is logged as an error naming the tickets, and counted
    /// in `stamp_store_lost_writes_total`, so an operator knows which moves
    /// to make again.
    async fn check_journal(&self, generation: u64, conn: &ConnectionManager) {
        let last = self
            .journal
            .checked_generation
            .swap(generation, Ordering::SeqCst);
        if last == generation || last == 0 {
            return;
        }
        // Another connection than the last: it may reach another primary,
        // which may lack a write a snapshot shows (see `Store::resyncs`).
        self.resyncs.fetch_add(1, Ordering::SeqCst);
        let acked = self.journal.newest();
        if acked.is_empty() {
            return;
        }
        let keys: Vec<String> = acked.iter().map(|(k, _)| self.keys.ticket(k)).collect();
        let mut conn = conn.clone();
        let found: Vec<Option<Vec<u8>>> =
            match bounded(redis::cmd("MGET").arg(&keys).query_async(&mut conn)).await {
                Ok(found) => found,
                Err(e) => {
                    // Checked on the next new connection instead.
                    self.journal
                        .checked_generation
                        .store(last, Ordering::SeqCst);
                    log::debug!(
                        "{}: cannot check the acknowledged writes yet: {e}",
                        self.location
                    );
                    return;
                }
            };
        let lost: Vec<String> = acked
            .iter()
            .zip(found)
            .filter_map(|((key, version), raw)| {
                let now: Option<u64> = raw
                    .and_then(|raw| decode::<TicketRecord>("ticket", &raw).ok())
                    .map(|t| t.version);
                match now {
                    Some(v) if v >= *version => None,
                    Some(v) => Some(format!("{key} (version {version} acknowledged, {v} now)")),
                    None => Some(format!("{key} (version {version} acknowledged, gone now)")),
                }
            })
            .collect();
        if lost.is_empty() {
            log::info!(
                "{}: the primary changed; all {} tickets written here lately are there",
                self.location,
                acked.len()
            );
        } else {
            crate::metrics::STORE_LOST_WRITES.inc_by(lost.len() as u64);
            log::error!(
                "{}: the primary changed and lost writes this proxy acknowledged: {}. \
                 The ticket histories on the new primary are what stands: make these moves again",
                self.location,
                lost.join(", ")
            );
        }
    }

    /// [`RedisStore::run`] for a write: with `wait_replicas`, the write is
    /// acknowledged only once that many replicas hold it (and everything this
    /// connection wrote before it). A server that refused the write for its
    /// role (a demoted primary's `READONLY`, `LOADING`, `MASTERDOWN`) did
    /// nothing: the sentinels are asked again and the write retried, within
    /// [`OP_TIMEOUT`] in all.
    async fn write<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let deadline = tokio::time::Instant::now() + OP_TIMEOUT;
        let mut pause = MIN_BACKOFF;
        loop {
            let result = self.write_once(&op).await;
            self.note_fault(&result);
            match result {
                Err(e) if refused_by_role(&e) && tokio::time::Instant::now() + pause < deadline => {
                    log::debug!(
                        "{}: write refused ({e}); asking the sentinels again",
                        self.location
                    );
                    self.target.recount();
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                other => return other,
            }
        }
    }

    /// Keeps the fault a refused write showed until a write succeeds.
    fn note_fault<T>(&self, result: &Result<T, StoreError>) {
        match result {
            Ok(_) => {
                if lock(&self.fault).take().is_some() {
                    log::info!("{}: writes succeed again", self.location);
                }
            }
            Err(StoreError::Unavailable(m)) if m.contains("OOM") || m.contains("MISCONF") => {
                let mut fault = lock(&self.fault);
                if fault.is_none() {
                    log::error!("{}: {m}", self.location);
                }
                *fault = Some(m.clone());
            }
            Err(_) => {}
        }
    }

    async fn write_once<T, F, Fut>(&self, op: &F) -> Result<T, StoreError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        if matches!(&*self.target, Target::Direct { .. }) {
            return self.run(op).await;
        }
        let (generation, conn) = self.target.conn().await?;
        self.check_journal(generation, &conn).await;
        // Counted before the write: a count taken after could already see
        // the replica a failover promoted away as gone, and accept fewer.
        let (replicas, wait) = self.target.wait_replicas().await?;
        let result = bounded(op(conn.clone())).await;
        // Too few replicas is not the primary's fault: keep the connection.
        let mut connection_failed = result.is_err();
        let result = match result {
            Ok(value) if replicas == 0 => Ok(value),
            Ok(value) => {
                let mut conn = conn;
                let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
                match bounded(
                    redis::cmd("WAIT")
                        .arg(replicas)
                        .arg(wait_ms)
                        .query_async::<u32>(&mut conn),
                )
                .await
                {
                    Ok(acked) if acked >= replicas => Ok(value),
                    Ok(acked) => {
                        // The replicas may have changed (a failover, one
                        // gone or back): count them again next time.
                        self.target.recount();
                        Err(StoreError::Unavailable(format!(
                            "the write reached the primary but only {acked} of the {replicas} \
                             replicas up within {wait_ms} ms, so a failover could lose it; \
                             it is not acknowledged: retry"
                        )))
                    }
                    Err(e) => {
                        connection_failed = true;
                        Err(e)
                    }
                }
            }
            Err(e) => Err(e),
        };
        if let (true, Err(e @ StoreError::Unavailable(_))) = (connection_failed, &result) {
            self.target.forget(generation, e);
        }
        result
    }

    fn known_epoch(&self) -> Option<String> {
        lock(&self.known_epoch).clone()
    }

    /// The epoch this instance works in: on first contact, the store's own,
    /// given one if it has none (a store this process never saw has nothing
    /// this process could lose).
    async fn ensure_epoch(&self) -> Result<String, StoreError> {
        if let Some(known) = self.known_epoch() {
            return Ok(known);
        }
        let fresh = encode("epoch", &Epoch::fresh())?;
        let key = self.keys.epoch();
        let raw: Vec<u8> = self
            .run(|mut conn| async move {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(fresh)
                    .arg("NX")
                    .query_async::<()>(&mut conn)
                    .await?;
                redis::cmd("GET").arg(&key).query_async(&mut conn).await
            })
            .await?;
        let epoch: Epoch = decode("epoch marker", &raw)?;
        let mut known = lock(&self.known_epoch);
        Ok(known.get_or_insert(epoch.id).clone())
    }

    /// Checks a stored epoch marker against the one this instance knows,
    /// following an adoption made by any instance.
    fn check_epoch(&self, known: &str, raw: &[u8]) -> Result<(), StoreError> {
        let found: Option<Epoch> = if raw.is_empty() {
            None
        } else {
            Some(decode("epoch marker", raw)?)
        };
        match found {
            Some(epoch) if epoch.id == known => Ok(()),
            Some(epoch) if epoch.continues(known) => {
                log::warn!(
                    "{}: adopted epoch {} (it supersedes {known})",
                    self.location,
                    epoch.id
                );
                *lock(&self.known_epoch) = Some(epoch.id);
                Ok(())
            }
            found => Err(StoreError::Lost {
                known: known.to_string(),
                found: found.map(|e| e.id),
            }),
        }
    }

    /// Runs a write script that checks the store's epoch: `args` get the
    /// epoch this instance knows appended, and a reply starting with -1
    /// (another epoch) is followed once, when another instance adopted a new
    /// one, or is [`StoreError::Lost`].
    async fn epoch_write(
        &self,
        script: &Script,
        keys: [String; 8],
        args: Vec<Vec<u8>>,
    ) -> Result<Vec<i64>, StoreError> {
        for _ in 0..2 {
            let epoch = self.ensure_epoch().await?;
            let mut invocation = script.prepare_invoke();
            for k in &keys {
                invocation.key(k);
            }
            for a in &args {
                invocation.arg(a.as_slice());
            }
            invocation.arg(&epoch);
            let reply: Vec<i64> = self
                .write(|mut conn| {
                    let invocation = &invocation;
                    async move { invocation.invoke_async(&mut conn).await }
                })
                .await?;
            if reply.first() != Some(&-1) {
                return Ok(reply);
            }
            self.recheck_epoch(&epoch).await?;
        }
        Err(StoreError::Unavailable(
            "the store's epoch changed twice during one write".into(),
        ))
    }

    /// After a write script refused on the epoch: either another instance
    /// adopted a new one (follow it, and the caller retries once) or the
    /// store lost its state.
    async fn recheck_epoch(&self, known: &str) -> Result<(), StoreError> {
        let key = self.keys.epoch();
        let raw: Option<Vec<u8>> = self
            .run(|mut conn| async move { redis::cmd("GET").arg(&key).query_async(&mut conn).await })
            .await?;
        self.check_epoch(known, &raw.unwrap_or_default())
    }
}

impl RedisStore {
    /// Stores `value` under `key` if absent and records it stored now in the
    /// `times` index, atomically.
    async fn put_timed(
        &self,
        key: String,
        times: String,
        value: &[u8],
        hash: &Hash,
    ) -> Result<(), StoreError> {
        for _ in 0..2 {
            let epoch = self.ensure_epoch().await?;
            let mut invocation = self.put_script.prepare_invoke();
            invocation
                .key(&key)
                .key(&times)
                .key(self.keys.epoch())
                .arg(value)
                .arg(hash.to_hex())
                .arg(now_ms())
                .arg(&epoch);
            let reply: i64 = self
                .write(|mut conn| {
                    let invocation = &invocation;
                    async move { invocation.invoke_async(&mut conn).await }
                })
                .await?;
            if reply != -1 {
                return Ok(());
            }
            // Another instance adopted a new epoch (follow it, once), or
            // the store lost its state.
            self.recheck_epoch(&epoch).await?;
        }
        Err(StoreError::Unavailable(
            "the store's epoch changed twice during one write".into(),
        ))
    }

    /// Bodies and sets written by a version without garbage collection have
    /// no time: index them as stored now (never touching an existing entry),
    /// so sweeps see them and spare them for a grace window. Once per
    /// instance; everything stored since has its time.
    async fn track_untracked(&self) -> Result<(), StoreError> {
        if self.tracked.load(Ordering::Relaxed) {
            return Ok(());
        }
        let now = now_ms();
        for (prefix, times) in [
            (self.keys.module_prefix(), self.keys.module_times()),
            (self.keys.set_prefix(), self.keys.set_times()),
        ] {
            let pattern = format!("{}*", glob_escape(&prefix));
            let mut cursor: u64 = 0;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000);
                let (next, keys): (u64, Vec<Vec<u8>>) = self
                    .run(|mut conn| async move { scan.query_async(&mut conn).await })
                    .await?;
                let members: Vec<&str> = keys
                    .iter()
                    .filter_map(|k| std::str::from_utf8(k).ok())
                    .filter_map(|k| k.strip_prefix(prefix.as_str()))
                    .filter(|m| Hash::parse(m).is_some())
                    .collect();
                if !members.is_empty() {
                    let mut zadd = redis::cmd("ZADD");
                    zadd.arg(&times).arg("NX");
                    for member in members {
                        zadd.arg(now).arg(member);
                    }
                    self.run(|mut conn| async move { zadd.query_async::<()>(&mut conn).await })
                        .await?;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        self.tracked.store(true, Ordering::Relaxed);
        Ok(())
    }
}

/// Escapes Redis glob metacharacters so a key prefix matches literally.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A script's integer reply as a count.
fn count(what: &str, n: i64) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("{what} is negative ({n})")))
}

/// Forwards published versions into `changes` for the life of the store,
/// reconnecting with backoff, and announcing the current version on every
/// (re)connect so receivers resync whatever they missed while disconnected.
async fn listen(
    target: Arc<Target>,
    channel: String,
    version_key: String,
    location: String,
    (changes, resyncs): (watch::Sender<u64>, Arc<AtomicU64>),
) {
    let mut backoff = MIN_BACKOFF;
    let mut was_down = false;
    loop {
        match listen_once(
            &target,
            &channel,
            &version_key,
            (&changes, &resyncs),
            &mut backoff,
            &location,
        )
        .await
        {
            Ok(()) => {
                log::warn!("lost the change subscription to {location}; reconnecting");
                was_down = true;
            }
            Err(e) => {
                // One warning per outage, not one per retry.
                if !was_down {
                    log::warn!("cannot subscribe to changes on {location}: {e}; retrying");
                    was_down = true;
                } else {
                    log::debug!("still cannot subscribe to changes on {location}: {e}");
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One subscription, from connect to loss. `Ok` means it was established and
/// later lost; `Err` that it could not be established.
async fn listen_once(
    target: &Target,
    channel: &str,
    version_key: &str,
    (changes, resyncs): (&watch::Sender<u64>, &AtomicU64),
    backoff: &mut Duration,
    location: &str,
) -> Result<(), StoreError> {
    // Looked up on every (re)connect: with Sentinel, the primary may have moved.
    let client = target.client().await?;
    let mut pubsub = bounded(client.get_async_pubsub()).await?;
    bounded(pubsub.subscribe(channel)).await?;
    // Read only once subscribed, so no commit falls between the two.
    let mut conn = bounded(client.get_multiplexed_async_connection()).await?;
    let version: Option<u64> =
        bounded(redis::cmd("GET").arg(version_key).query_async(&mut conn)).await?;
    drop(conn);
    // Unconditional: after a Redis restart the version may be lower than the
    // last one seen, and receivers must resync in any case; counted first,
    // so they re-read the whole state, not what changed since (a primary
    // that took over may have lost a write and reused its version).
    resyncs.fetch_add(1, Ordering::SeqCst);
    changes.send_replace(version.unwrap_or(0));
    log::info!("subscribed to changes on {location}");
    *backoff = MIN_BACKOFF;

    let (mut sink, mut stream) = pubsub.split();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    loop {
        tokio::select! {
            message = stream.next() => match message {
                None => return Ok(()),
                Some(message) => match message.get_payload::<u64>() {
                    Ok(version) => raise(changes, version),
                    Err(e) => log::warn!("ignoring malformed change notification: {e}"),
                },
            },
            _ = ping.tick() => {
                if let Err(e) = bounded(sink.ping::<redis::Value>()).await {
                    log::debug!("change subscription ping failed: {e}");
                    return Ok(());
                }
            }
        }
    }
}

/// A GET of one key, as raw bytes.
fn get(key: String) -> impl FnOnce(ConnectionManager) -> GetFuture {
    move |mut conn| Box::pin(async move { redis::cmd("GET").arg(key).query_async(&mut conn).await })
}

type GetFuture =
    std::pin::Pin<Box<dyn Future<Output = RedisResult<Option<Vec<u8>>>> + Send + 'static>>;

#[async_trait]
impl Store for RedisStore {
    fn describe(&self) -> String {
        self.location.clone()
    }

    async fn record_views(&self, views: &[ViewRecord]) -> Result<(), StoreError> {
        if views.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        let keep_secs = COUNTS_KEPT_MS / 1000;
        for v in views {
            let list = self.keys.views(&v.ticket);
            pipe.lpush(&list, encode("page view", v)?).ignore();
            pipe.ltrim(&list, 0, RECENT_VIEWS as isize - 1).ignore();
            pipe.expire(&list, keep_secs as i64 * 15).ignore();
            let counts = self.keys.view_counts(&v.ticket);
            let c = ViewCount::of(v);
            let side = c.side.as_str();
            for (metric, n) in [
                ("views", c.views),
                ("erring", c.erring_views),
                ("errors", c.errors),
                ("failed", c.failed_loads),
                ("touched", c.touched_views),
                ("touched-erring", c.touched_erring),
            ] {
                if n > 0 {
                    pipe.hincr(&counts, format!("{}|{side}|{metric}", c.minute_ms), n)
                        .ignore();
                }
            }
            pipe.expire(&counts, keep_secs as i64).ignore();
        }
        self.run(|mut conn| async move { pipe.query_async::<()>(&mut conn).await })
            .await
    }

    async fn record_seen(&self, seen: &[PagesSeen]) -> Result<(), StoreError> {
        if seen.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        let keep_secs = COUNTS_KEPT_MS / 1000;
        for p in seen {
            let counts = self.keys.view_counts(&p.ticket);
            let minute = p.minute_ms - p.minute_ms % 60_000;
            let side = p.side.as_str();
            for (metric, n) in [("sent", p.sent), ("heard", p.heard)] {
                if n > 0 {
                    pipe.hincr(&counts, format!("{minute}|{side}|{metric}"), n)
                        .ignore();
                }
            }
            pipe.expire(&counts, keep_secs as i64).ignore();
        }
        self.run(|mut conn| async move { pipe.query_async::<()>(&mut conn).await })
            .await
    }

    async fn revoke(&self, id: &str, until_ms: u64) -> Result<(), StoreError> {
        let key = self.keys.revoked();
        let id = id.to_string();
        let now = now_ms();
        self.write(|mut conn| {
            let (key, id) = (key.clone(), id.clone());
            async move {
                redis::pipe()
                    .atomic()
                    .cmd("ZREMRANGEBYSCORE")
                    .arg(&key)
                    .arg("-inf")
                    .arg(now)
                    .ignore()
                    .cmd("ZADD")
                    .arg(&key)
                    .arg(until_ms)
                    .arg(&id)
                    .ignore()
                    .query_async::<()>(&mut conn)
                    .await
            }
        })
        .await
    }

    async fn revoked(&self, now_ms: u64) -> Result<Vec<String>, StoreError> {
        let key = self.keys.revoked();
        self.run(|mut conn| async move {
            redis::cmd("ZRANGEBYSCORE")
                .arg(key)
                .arg(format!("({now_ms}"))
                .arg("+inf")
                .query_async(&mut conn)
                .await
        })
        .await
    }

    async fn recent_views(&self, key: &TicketKey) -> Result<Vec<ViewRecord>, StoreError> {
        let list = self.keys.views(key);
        let raw: Vec<Vec<u8>> = self
            .run(|mut conn| async move {
                redis::cmd("LRANGE")
                    .arg(list)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        raw.iter()
            .map(|v| decode(&format!("page view of {key}"), v))
            .collect()
    }

    async fn view_counts(
        &self,
        key: &TicketKey,
        since_ms: u64,
    ) -> Result<Vec<ViewCount>, StoreError> {
        let hash = self.keys.view_counts(key);
        let read = hash.clone();
        let fields: Vec<(String, u64)> =
            self.run(|mut conn| async move {
                redis::cmd("HGETALL").arg(read).query_async(&mut conn).await
            })
            .await?;
        let from = since_ms - since_ms % 60_000;
        // The hash lives while counts are added (each write renews its
        // expiry), so minutes older than the counts are kept go here, as
        // the embedded store lets them go on each write.
        let cutoff = now_ms().saturating_sub(COUNTS_KEPT_MS);
        let mut stale: Vec<String> = Vec::new();
        let mut by: std::collections::BTreeMap<(u64, Side), ViewCount> = Default::default();
        for (field, n) in fields {
            let mut parts = field.split('|');
            let (Some(minute), Some(side), Some(metric)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let Ok(minute) = minute.parse::<u64>() else {
                continue;
            };
            if minute < cutoff {
                stale.push(field);
                continue;
            }
            let side = match side {
                "ticket" => Side::Ticket,
                "production" => Side::Production,
                _ => continue,
            };
            if minute < from {
                continue;
            }
            let c = by.entry((minute, side)).or_insert(ViewCount {
                minute_ms: minute,
                side,
                ..ViewCount::default()
            });
            match metric {
                "views" => c.views += n,
                "erring" => c.erring_views += n,
                "errors" => c.errors += n,
                "failed" => c.failed_loads += n,
                "touched" => c.touched_views += n,
                "touched-erring" => c.touched_erring += n,
                "sent" => c.sent += n,
                "heard" => c.heard += n,
                _ => {}
            }
        }
        if !stale.is_empty() {
            // Best effort: the next read tries again.
            let _ = self
                .run(|mut conn| {
                    let (hash, stale) = (hash.clone(), stale.clone());
                    async move {
                        redis::cmd("HDEL")
                            .arg(hash)
                            .arg(stale)
                            .query_async::<()>(&mut conn)
                            .await
                    }
                })
                .await;
        }
        Ok(by.into_values().collect())
    }

    async fn put_module(&self, body: Bytes) -> Result<Hash, StoreError> {
        let hash = Hash::of(&body);
        self.put_timed(
            self.keys.module(&hash),
            self.keys.module_times(),
            &body,
            &hash,
        )
        .await?;
        Ok(hash)
    }

    async fn get_module(&self, hash: &Hash) -> Result<Option<Bytes>, StoreError> {
        let body = self.run(get(self.keys.module(hash))).await?;
        body.map(|b| checked_module(hash, &b)).transpose()
    }

    async fn missing_modules(&self, hashes: &[Hash]) -> Result<Vec<Hash>, StoreError> {
        let mut unique: Vec<Hash> = Vec::with_capacity(hashes.len());
        for h in hashes {
            if !unique.contains(h) {
                unique.push(*h);
            }
        }
        if unique.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for h in &unique {
            pipe.cmd("EXISTS").arg(self.keys.module(h));
        }
        let exists: Vec<i64> = self
            .run(|mut conn| async move { pipe.query_async(&mut conn).await })
            .await?;
        if exists.len() != unique.len() {
            return Err(StoreError::Corrupt(format!(
                "redis answered {} of {} EXISTS",
                exists.len(),
                unique.len()
            )));
        }
        Ok(unique
            .into_iter()
            .zip(exists)
            .filter(|(_, n)| *n == 0)
            .map(|(h, _)| h)
            .collect())
    }

    async fn claim_module(&self, hash: &Hash) -> Result<Option<u64>, StoreError> {
        let mut invocation = self.claim_script.prepare_invoke();
        invocation
            .key(self.keys.module(hash))
            .key(self.keys.module_times())
            .arg(hash.to_hex())
            .arg(now_ms());
        let size: i64 = self
            .write(|mut conn| {
                let invocation = &invocation;
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        Ok(u64::try_from(size).ok())
    }

    async fn put_set(&self, set: &OverrideSet) -> Result<Hash, StoreError> {
        // set_id hashes exactly this serialisation.
        let json = encode("override set", set)?;
        let id = Hash::of(&json);
        self.put_timed(self.keys.set(&id), self.keys.set_times(), &json, &id)
            .await?;
        Ok(id)
    }

    async fn get_set(&self, id: &Hash) -> Result<Option<OverrideSet>, StoreError> {
        let json = self.run(get(self.keys.set(id))).await?;
        json.map(|j| checked_set(id, &j)).transpose()
    }

    async fn get_ticket(&self, key: &TicketKey) -> Result<Option<TicketRecord>, StoreError> {
        let json = self.run(get(self.keys.ticket(key))).await?;
        json.map(|j| decode(&format!("ticket {key}"), &j))
            .transpose()
    }

    async fn history(&self, key: &TicketKey) -> Result<Vec<HistoryEvent>, StoreError> {
        let list = self.keys.history(key);
        let events: Vec<Vec<u8>> = self
            .run(|mut conn| async move {
                redis::cmd("LRANGE")
                    .arg(list)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        events
            .iter()
            .map(|e| decode(&format!("history of {key}"), e))
            .collect()
    }

    async fn commit(&self, commit: Commit) -> Result<u64, StoreError> {
        let key = &commit.ticket.key;
        let record = encode("ticket", &commit.ticket)?;
        let event = match &commit.event {
            Some(e) => encode("history event", e)?,
            None => Vec::new(),
        };
        let op = match commit.overlay {
            OverlayOp::Keep => "keep",
            OverlayOp::Append => "append",
            OverlayOp::Remove => "remove",
        };
        let expected = commit
            .expected_version
            .map(|v| v.to_string())
            .unwrap_or_default();

        let reply = self
            .epoch_write(
                &self.commit_script,
                [
                    self.keys.ticket(key),
                    self.keys.tickets(),
                    self.keys.history(key),
                    self.keys.overlay(),
                    self.keys.version(),
                    self.keys.epoch(),
                    self.keys.changelog(),
                    self.keys.changelog_floor(),
                ],
                vec![
                    key.as_str().as_bytes().to_vec(),
                    expected.into_bytes(),
                    commit.ticket.version.to_string().into_bytes(),
                    record,
                    op.as_bytes().to_vec(),
                    event,
                    self.keys.channel().into_bytes(),
                    crate::CHANGELOG.to_string().into_bytes(),
                ],
            )
            .await?;
        match reply.as_slice() {
            [1, version] => {
                let version = u64::try_from(*version).map_err(|_| {
                    StoreError::Corrupt(format!("global version {version} is negative"))
                })?;
                // Local receivers need not wait for the pub/sub round trip.
                raise(&self.changes, version);
                self.journal.record(key, commit.ticket.version);
                Ok(version)
            }
            [0, found] => Err(StoreError::Conflict {
                key: key.clone(),
                expected: commit.expected_version,
                found: u64::try_from(*found).ok(),
            }),
            other => Err(StoreError::Corrupt(format!(
                "unexpected commit script reply {other:?}"
            ))),
        }
    }

    async fn state(&self) -> Result<StoreState, StoreError> {
        let known = self.ensure_epoch().await?;
        let mut invocation = self.state_script.prepare_invoke();
        invocation
            .key(self.keys.version())
            .key(self.keys.tickets())
            .key(self.keys.overlay())
            .key(self.keys.epoch())
            .arg(self.keys.ticket_prefix());
        let (version, records, overlay, epoch): (u64, Vec<Vec<u8>>, Vec<u8>, Vec<u8>) = self
            .run(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await?;
        self.check_epoch(&known, &epoch)?;
        let mut tickets = records
            .iter()
            .map(|r| decode::<TicketRecord>("ticket record", r))
            .collect::<Result<Vec<_>, _>>()?;
        // SMEMBERS order is arbitrary; key order matches the embedded store.
        tickets.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(StoreState {
            version,
            tickets,
            overlay: decode("overlay", &overlay)?,
        })
    }

    async fn version(&self) -> Result<u64, StoreError> {
        let raw = self.run(get(self.keys.version())).await?;
        match raw {
            None => Ok(0),
            Some(raw) => std::str::from_utf8(&raw)
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| StoreError::Corrupt("the global version is not a number".into())),
        }
    }

    async fn changes_since(&self, since: u64) -> Result<Option<Changes>, StoreError> {
        let known = self.ensure_epoch().await?;
        let mut invocation = self.changes_script.prepare_invoke();
        invocation
            .key(self.keys.version())
            .key(self.keys.changelog())
            .key(self.keys.changelog_floor())
            .key(self.keys.overlay())
            .key(self.keys.epoch())
            .arg(since)
            .arg(self.keys.ticket_prefix());
        type Reply = (
            u64,
            u8,
            Vec<String>,
            Vec<u8>,
            Vec<Vec<u8>>,
            Vec<u8>,
            Vec<u8>,
        );
        let (version, covered, keys, present, records, overlay, epoch): Reply = self
            .run(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await?;
        self.check_epoch(&known, &epoch)?;
        if covered != 1 {
            return Ok(None);
        }
        if keys.len() != records.len() || keys.len() != present.len() {
            return Err(StoreError::Corrupt(format!(
                "changes script answered {} keys and {} records",
                keys.len(),
                records.len()
            )));
        }
        let mut changes = Changes {
            version,
            tickets: Vec::with_capacity(keys.len()),
            removed: Vec::new(),
            overlay: decode("overlay", &overlay)?,
        };
        for ((key, record), present) in keys.into_iter().zip(records).zip(present) {
            let key = TicketKey::parse(&key)
                .map_err(|e| StoreError::Corrupt(format!("the changelog names {key:?}: {e}")))?;
            if present == 0 {
                changes.removed.push(key);
            } else {
                let record: TicketRecord = decode("ticket record", &record)?;
                if record.key != key {
                    return Err(StoreError::Corrupt(format!(
                        "the record under {key} is ticket {}",
                        record.key
                    )));
                }
                changes.tickets.push(record);
            }
        }
        Ok(Some(changes))
    }

    async fn usage(&self) -> Result<StoreUsage, StoreError> {
        let mut invocation = self.usage_script.prepare_invoke();
        invocation
            .key(self.keys.module_times())
            .key(self.keys.set_times())
            .key(self.keys.tickets())
            .arg(self.keys.module_prefix())
            .arg(self.keys.set_prefix())
            .arg(self.keys.ticket_prefix());
        let reply: Vec<i64> = self
            .run(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await?;
        match reply.as_slice() {
            [modules, bytes, sets, tickets, closed] => Ok(StoreUsage {
                modules: count("module count", *modules)?,
                module_bytes: count("module bytes", *bytes)?,
                sets: count("set count", *sets)?,
                tickets: count("ticket count", *tickets)?,
                closed_tickets: count("closed ticket count", *closed)?,
            }),
            other => Err(StoreError::Corrupt(format!(
                "unexpected usage script reply {other:?}"
            ))),
        }
    }

    async fn sweep(&self, keep_after_ms: u64) -> Result<SweepReport, StoreError> {
        self.track_untracked().await?;
        let mut invocation = self.sweep_script.prepare_invoke();
        invocation
            .key(self.keys.tickets())
            .key(self.keys.set_times())
            .key(self.keys.module_times())
            .arg(self.keys.ticket_prefix())
            .arg(self.keys.set_prefix())
            .arg(self.keys.module_prefix())
            .arg(keep_after_ms);
        let reply: Vec<i64> = self
            .write(|mut conn| {
                let invocation = &invocation;
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        match reply.as_slice() {
            [modules, bytes, sets] => Ok(SweepReport {
                modules_deleted: count("deleted modules", *modules)?,
                module_bytes_freed: count("freed bytes", *bytes)?,
                sets_deleted: count("deleted sets", *sets)?,
            }),
            other => Err(StoreError::Corrupt(format!(
                "unexpected sweep script reply {other:?}"
            ))),
        }
    }

    async fn purge_ticket(
        &self,
        key: &TicketKey,
        expected_version: u64,
        summary: HistoryEvent,
    ) -> Result<bool, StoreError> {
        let event = encode("history event", &summary)?;
        let reply = self
            .epoch_write(
                &self.purge_script,
                [
                    self.keys.ticket(key),
                    self.keys.tickets(),
                    self.keys.history(key),
                    self.keys.overlay(),
                    self.keys.version(),
                    self.keys.epoch(),
                    self.keys.changelog(),
                    self.keys.changelog_floor(),
                ],
                vec![
                    key.as_str().as_bytes().to_vec(),
                    expected_version.to_string().into_bytes(),
                    event,
                    self.keys.channel().into_bytes(),
                    crate::CHANGELOG.to_string().into_bytes(),
                ],
            )
            .await?;
        match reply.as_slice() {
            [1, version] => {
                raise(&self.changes, count("global version", *version)?);
                self.journal.forget(key);
                Ok(true)
            }
            [0, _] => Ok(false),
            other => Err(StoreError::Corrupt(format!(
                "unexpected purge script reply {other:?}"
            ))),
        }
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn resyncs(&self) -> u64 {
        self.resyncs.load(Ordering::SeqCst)
    }

    fn fault(&self) -> Option<String> {
        lock(&self.fault).clone()
    }

    fn epoch(&self) -> Option<String> {
        self.known_epoch()
    }

    async fn adopt(&self) -> Result<String, StoreError> {
        let fresh = Epoch {
            supersedes: self.known_epoch().into_iter().collect(),
            ..Epoch::fresh()
        };
        let mut invocation = self.adopt_script.prepare_invoke();
        invocation
            .key(self.keys.epoch())
            .key(self.keys.version())
            .key(self.keys.changelog_floor())
            .arg(encode("epoch", &fresh)?)
            .arg(self.known_epoch().unwrap_or_default())
            .arg(self.keys.channel());
        let raw: Vec<u8> = self
            .write(|mut conn| {
                let invocation = &invocation;
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        let epoch: Epoch = decode("epoch marker", &raw)?;
        log::warn!(
            "{}: adopted the store as it is now (epoch {})",
            self.location,
            epoch.id
        );
        *lock(&self.known_epoch) = Some(epoch.id.clone());
        Ok(epoch.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_strips_credentials() {
        let d = describe_url("rediss://user:s3cret@cache.example:6380/2?insecure", "ts");
        assert!(!d.contains("s3cret") && !d.contains("user"), "{d}");
        assert!(d.starts_with("rediss://cache.example:6380/2"), "{d}");
        let d = describe_url("redis://:s3cret@localhost", "ts");
        assert!(!d.contains("s3cret"), "{d}");
        let d = describe_url("redis://:s3cret@[bad", "ts");
        assert!(!d.contains("s3cret"), "{d}");
    }

    #[test]
    fn sentinel_urls_parse_with_defaults() -> Result<(), String> {
        let u = SentinelUrl::parse(
            "redis+sentinel://:p%40ss@10.0.0.1,10.0.0.2:26380,[::1]:26381/mymaster/2?wait_replicas=2&wait_ms=500",
        )
        ?;
        assert_eq!(
            u.sentinels,
            vec![
                ("10.0.0.1".to_string(), 26379),
                ("10.0.0.2".to_string(), 26380),
                ("::1".to_string(), 26381)
            ]
        );
        assert_eq!((u.service.as_str(), u.db), ("mymaster", 2));
        assert_eq!((u.username, u.password.as_deref()), (None, Some("p@ss")));
        assert_eq!(
            (u.wait_replicas, u.wait),
            (WaitFor::Count(2), Duration::from_millis(500))
        );
        // Every replica up, by default and by name.
        let u = SentinelUrl::parse("redis+sentinel://h:1/svc")?;
        assert_eq!(
            (u.wait_replicas, u.wait, u.db),
            (WaitFor::All, DEFAULT_WAIT, 0)
        );
        assert_eq!(
            SentinelUrl::parse("redis+sentinel://h/svc?wait_replicas=all")?.wait_replicas,
            WaitFor::All
        );
        assert_eq!(
            SentinelUrl::parse("redis+sentinel://h/svc?wait_replicas=0")?.wait_replicas,
            WaitFor::Count(0)
        );
        Ok(())
    }

    #[test]
    fn malformed_and_hostile_sentinel_urls_are_refused() {
        for bad in [
            "redis+sentinel://",
            "redis+sentinel://h:26379",
            "redis+sentinel://h:26379/",
            "redis+sentinel://h:/svc",
            "redis+sentinel://h:0/svc",
            "redis+sentinel://h:99999/svc",
            "redis+sentinel://,h/svc",
            "redis+sentinel://h,,h2/svc",
            "redis+sentinel://[::1/svc",
            "redis+sentinel://h/sv c",
            "redis+sentinel://h/svc/x",
            "redis+sentinel://h/svc/1/2",
            "redis+sentinel://h/svc?wait_replicas=x",
            "redis+sentinel://h/svc?wait_replicas=99",
            "redis+sentinel://h/svc?wait_replicas=ALL",
            "redis+sentinel://h/svc?wait_replicas=-1",
            "redis+sentinel://h/svc?wait_ms=0",
            "redis+sentinel://h/svc?password=x",
            "redis+sentinel://h/svc#frag",
            "redis+sentinel://h%0d%0a/svc",
            "redis+sentinel://:%ff@h/svc",
        ] {
            assert!(SentinelUrl::parse(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn describe_hides_sentinel_credentials() {
        let d = describe_url(
            "redis+sentinel://user:s3cret@h1,h2:26380/mymaster?wait_ms=9",
            "ts",
        );
        assert_eq!(d, "redis+sentinel://h1,h2:26380/mymaster (prefix ts)");
        // A password with `/`, `?` or `@` in it, unencoded, stays hidden.
        for url in [
            "redis+sentinel://user:pa/ss@h/svc",
            "redis+sentinel://:a@b/c@h/svc",
            "redis+sentinel://:p?x@h/svc",
        ] {
            let d = describe_url(url, "ts");
            assert!(
                !d.contains("pa/ss") && !d.contains("a@b") && !d.contains("p?x"),
                "{d}"
            );
            if let Err(e) = SentinelUrl::parse(url) {
                assert!(!e.contains("pa") && !e.contains("a@b"), "{e}");
            }
        }
    }

    #[tokio::test]
    async fn open_does_not_connect_and_rejects_malformed_urls() {
        // Port 1 on loopback refuses: open must succeed regardless.
        let store = RedisStore::open("redis://:pw@127.0.0.1:1/", "ts").await;
        let store = match store {
            Ok(s) => s,
            Err(e) => panic!("open failed while redis is down: {e}"),
        };
        assert!(matches!(
            store.version().await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(matches!(
            RedisStore::open("redis://:pw@127.0.0.1:notaport/", "ts").await,
            Err(StoreError::Open { .. })
        ));
    }
}
