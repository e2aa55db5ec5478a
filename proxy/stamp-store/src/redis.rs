//! The Redis store, shared by a fleet of proxy instances.
//!
//! Layout under `{prefix}:` — `mod:<hex>` (body), `set:<hex>` (override set
//! JSON), `ticket:<KEY>` (record JSON), `tickets` (SET of keys),
//! `history:<KEY>` (LIST of event JSON), `overlay` (JSON list of keys),
//! `version` (INCR counter), `mod-times` and `set-times` (sorted sets: hex
//! hash → when the body or set was last stored, ms since the epoch, for
//! garbage collection) and the pub/sub channel `changes`.
//!
//! Redis being down must never stop the proxy from serving, so opening never
//! connects: the connection is made lazily and re-made after a loss, and every
//! operation is bounded in time and fails with [`StoreError::Unavailable`]
//! while Redis is unreachable.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError, RedisResult, Script};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::embedded::{checked_module, checked_set, decode, encode};
use crate::{
    now_ms, Commit, HistoryEvent, OverlayOp, Store, StoreError, StoreState, StoreUsage,
    SweepReport, TicketRecord,
};
use stamp_model::ticket::{Hash, OverrideSet, TicketKey};

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

/// Atomic commit. Everything is read and validated before the first write:
/// Redis does not roll a script back when it fails half-way.
///
/// KEYS: ticket, tickets set, history list, overlay, version.
/// ARGV: ticket key, expected version ('' = must not exist), new version,
/// record JSON, overlay op (keep|append|remove), event JSON ('' = none),
/// change channel.
/// Returns {1, new global version} or {0, found version (-1 = absent)}.
const COMMIT_LUA: &str = r#"
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
redis.call('PUBLISH', ARGV[7], version)
return {1, version}
"#;

/// Consistent snapshot: a script runs with nothing interleaved. Ticket keys
/// come from the set, so their record keys are built here (fine outside
/// Redis Cluster, which this store does not target).
///
/// KEYS: version, tickets set, overlay. ARGV: ticket key prefix.
/// Returns {version, {record JSON...}, overlay JSON}.
const STATE_LUA: &str = r#"
local version = tonumber(redis.call('GET', KEYS[1]) or '0')
local records = {}
for _, k in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local r = redis.call('GET', ARGV[1] .. k)
  if r then table.insert(records, r) end
end
return {version, records, redis.call('GET', KEYS[3]) or '[]'}
"#;

/// Stores a body or a set and records "stored now" for it, atomically: a
/// sweep never sees the value without its time. The time only moves forward.
///
/// KEYS: value key, times sorted set. ARGV: value, hex hash, now (ms).
const PUT_LUA: &str = r#"
redis.call('SET', KEYS[1], ARGV[1], 'NX')
local at = tonumber(ARGV[3])
local recorded = redis.call('ZSCORE', KEYS[2], ARGV[2])
if not recorded or tonumber(recorded) < at then
  redis.call('ZADD', KEYS[2], at, ARGV[2])
end
return 1
"#;

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
/// KEYS: ticket, tickets set, history list, overlay, version.
/// ARGV: ticket key, expected version, summary event JSON, change channel.
/// Returns {1, new global version} or {0, 0} when refused.
const PURGE_LUA: &str = r#"
local raw = redis.call('GET', KEYS[1])
if not raw then return {0, 0} end
local ok, rec = pcall(cjson.decode, raw)
if not ok or type(rec) ~= 'table' then
  return redis.error_reply('CORRUPT ticket record ' .. ARGV[1] .. ' is not valid JSON')
end
if rec.stage ~= 'closed' or rec.version ~= tonumber(ARGV[2]) then return {0, 0} end

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
redis.call('PUBLISH', ARGV[4], version)
return {1, version}
"#;

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
    fn version(&self) -> String {
        format!("{}:version", self.prefix)
    }
    fn channel(&self) -> String {
        format!("{}:changes", self.prefix)
    }
}

pub struct RedisStore {
    conn: ConnectionManager,
    keys: Keys,
    location: String,
    commit_script: Script,
    state_script: Script,
    put_script: Script,
    claim_script: Script,
    usage_script: Script,
    sweep_script: Script,
    purge_script: Script,
    /// Whether this instance has indexed the bodies and sets stored without
    /// a time (see [`RedisStore::track_untracked`]).
    tracked: AtomicBool,
    changes: watch::Sender<u64>,
    listener: JoinHandle<()>,
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

/// `url` without user, password, query or fragment, plus the key prefix:
/// safe for logs and /health.
fn describe_url(url: &str, prefix: &str) -> String {
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

fn redis_err(e: RedisError) -> StoreError {
    if e.code() == Some("CORRUPT") {
        return StoreError::Corrupt(e.detail().unwrap_or("corrupt data").to_string());
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
    /// Accepts `redis://` and `rediss://` URLs. Does not connect: only a
    /// malformed URL fails here; an unreachable Redis shows up as
    /// [`StoreError::Unavailable`] from operations until it is back.
    pub async fn open(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let location = describe_url(url, prefix);
        let open_err = |e: RedisError| StoreError::Open {
            location: location.clone(),
            reason: e.to_string(),
        };
        let client = Client::open(url).map_err(open_err)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            // Few retries inside one operation: the caller is waiting, and
            // the next operation retries anyway.
            .set_number_of_retries(1)
            .set_min_delay(MIN_BACKOFF)
            .set_max_delay(MAX_BACKOFF);
        let conn =
            ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(open_err)?;

        let keys = Keys {
            prefix: prefix.to_string(),
        };
        let (changes, _) = watch::channel(0);
        let listener = tokio::spawn(listen(
            client,
            keys.channel(),
            keys.version(),
            location.clone(),
            changes.clone(),
        ));
        Ok(RedisStore {
            conn,
            keys,
            location,
            commit_script: Script::new(COMMIT_LUA),
            state_script: Script::new(STATE_LUA),
            put_script: Script::new(PUT_LUA),
            claim_script: Script::new(CLAIM_LUA),
            usage_script: Script::new(USAGE_LUA),
            sweep_script: Script::new(SWEEP_LUA),
            purge_script: Script::new(PURGE_LUA),
            tracked: AtomicBool::new(false),
            changes,
            listener,
        })
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
        let mut invocation = self.put_script.prepare_invoke();
        invocation
            .key(key)
            .key(times)
            .arg(value)
            .arg(hash.to_hex())
            .arg(now_ms());
        let mut conn = self.conn.clone();
        bounded(invocation.invoke_async::<()>(&mut conn)).await
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
        let mut conn = self.conn.clone();
        for (prefix, times) in [
            (self.keys.module_prefix(), self.keys.module_times()),
            (self.keys.set_prefix(), self.keys.set_times()),
        ] {
            let pattern = format!("{}*", glob_escape(&prefix));
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<Vec<u8>>) = bounded(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut conn),
                )
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
                    bounded(zadd.query_async::<()>(&mut conn)).await?;
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
    client: Client,
    channel: String,
    version_key: String,
    location: String,
    changes: watch::Sender<u64>,
) {
    let mut backoff = MIN_BACKOFF;
    let mut was_down = false;
    loop {
        match listen_once(
            &client,
            &channel,
            &version_key,
            &changes,
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
    client: &Client,
    channel: &str,
    version_key: &str,
    changes: &watch::Sender<u64>,
    backoff: &mut Duration,
    location: &str,
) -> Result<(), StoreError> {
    let mut pubsub = bounded(client.get_async_pubsub()).await?;
    bounded(pubsub.subscribe(channel)).await?;
    // Read only once subscribed, so no commit falls between the two.
    let mut conn = bounded(client.get_multiplexed_async_connection()).await?;
    let version: Option<u64> =
        bounded(redis::cmd("GET").arg(version_key).query_async(&mut conn)).await?;
    drop(conn);
    // Unconditional: after a Redis restart the version may be lower than the
    // last one seen, and receivers must resync in any case.
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

#[async_trait]
impl Store for RedisStore {
    fn describe(&self) -> String {
        self.location.clone()
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
        let mut conn = self.conn.clone();
        let body: Option<Vec<u8>> = bounded(
            redis::cmd("GET")
                .arg(self.keys.module(hash))
                .query_async(&mut conn),
        )
        .await?;
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
        let mut conn = self.conn.clone();
        let exists: Vec<i64> = bounded(pipe.query_async(&mut conn)).await?;
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
        let mut conn = self.conn.clone();
        let size: i64 = bounded(invocation.invoke_async(&mut conn)).await?;
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
        let mut conn = self.conn.clone();
        let json: Option<Vec<u8>> = bounded(
            redis::cmd("GET")
                .arg(self.keys.set(id))
                .query_async(&mut conn),
        )
        .await?;
        json.map(|j| checked_set(id, &j)).transpose()
    }

    async fn get_ticket(&self, key: &TicketKey) -> Result<Option<TicketRecord>, StoreError> {
        let mut conn = self.conn.clone();
        let json: Option<Vec<u8>> = bounded(
            redis::cmd("GET")
                .arg(self.keys.ticket(key))
                .query_async(&mut conn),
        )
        .await?;
        json.map(|j| decode(&format!("ticket {key}"), &j))
            .transpose()
    }

    async fn history(&self, key: &TicketKey) -> Result<Vec<HistoryEvent>, StoreError> {
        let mut conn = self.conn.clone();
        let events: Vec<Vec<u8>> = bounded(
            redis::cmd("LRANGE")
                .arg(self.keys.history(key))
                .arg(0)
                .arg(-1)
                .query_async(&mut conn),
        )
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

        let mut invocation = self.commit_script.prepare_invoke();
        invocation
            .key(self.keys.ticket(key))
            .key(self.keys.tickets())
            .key(self.keys.history(key))
            .key(self.keys.overlay())
            .key(self.keys.version())
            .arg(key.as_str())
            .arg(expected)
            .arg(commit.ticket.version)
            .arg(record)
            .arg(op)
            .arg(event)
            .arg(self.keys.channel());
        let mut conn = self.conn.clone();
        let reply: Vec<i64> = bounded(invocation.invoke_async(&mut conn)).await?;
        match reply.as_slice() {
            [1, version] => {
                let version = u64::try_from(*version).map_err(|_| {
                    StoreError::Corrupt(format!("global version {version} is negative"))
                })?;
                // Local receivers need not wait for the pub/sub round trip.
                raise(&self.changes, version);
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
        let mut invocation = self.state_script.prepare_invoke();
        invocation
            .key(self.keys.version())
            .key(self.keys.tickets())
            .key(self.keys.overlay())
            .arg(self.keys.ticket_prefix());
        let mut conn = self.conn.clone();
        let (version, records, overlay): (u64, Vec<Vec<u8>>, Vec<u8>) =
            bounded(invocation.invoke_async(&mut conn)).await?;
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
        let mut conn = self.conn.clone();
        let version: Option<u64> = bounded(
            redis::cmd("GET")
                .arg(self.keys.version())
                .query_async(&mut conn),
        )
        .await?;
        Ok(version.unwrap_or(0))
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
        let mut conn = self.conn.clone();
        let reply: Vec<i64> = bounded(invocation.invoke_async(&mut conn)).await?;
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
        let mut conn = self.conn.clone();
        let reply: Vec<i64> = bounded(invocation.invoke_async(&mut conn)).await?;
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
        let mut invocation = self.purge_script.prepare_invoke();
        invocation
            .key(self.keys.ticket(key))
            .key(self.keys.tickets())
            .key(self.keys.history(key))
            .key(self.keys.overlay())
            .key(self.keys.version())
            .arg(key.as_str())
            .arg(expected_version)
            .arg(event)
            .arg(self.keys.channel());
        let mut conn = self.conn.clone();
        let reply: Vec<i64> = bounded(invocation.invoke_async(&mut conn)).await?;
        match reply.as_slice() {
            [1, version] => {
                raise(&self.changes, count("global version", *version)?);
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
