//! The Redis backend: the state of several control-plane replicas in one
//! Redis (`docs/redis.md` is the operator's view of this module).
//!
//! Key layout, every key under one hash tag `{p}` (`store.redis.key_prefix`),
//! so one Redis Cluster slot holds them all and one script can touch them:
//!
//! | key | type | content |
//! |---|---|---|
//! | `{p}:version` | string | newest change log version (0 when absent) |
//! | `{p}:log` | stream | one entry per change; entry id `<version>-0`, field `change` (JSON) |
//! | `{p}:revocations` | hash | version → revocation (JSON) in force |
//! | `{p}:revocations:by_version`, `:by_expiry` | sorted sets | version scored by version / by expiry |
//! | `{p}:assets`, `{p}:assets:revision` | hashes | id → asset (JSON) / its revision |
//! | `{p}:assets:ids` | sorted set | asset ids, score 0 (lexicographic paging) |
//! | `{p}:signing_keys` | hash | key id → key with its secret (JSON) |
//! | `{p}:api_keys`, `{p}:api_keys:names` | hashes | SHA-256 hex → API key (JSON) / name → SHA-256 hex |
//! | `{p}:audit`, `{p}:audit:seq` | stream, string | entry id `<seq>-0`, fields `at`, `event` (JSON); last seq |
//!
//! A change's version *is* its stream entry id (`<version>-0`) and an audit
//! event's seq is its entry id: the JSON bodies are written with version and
//! seq 0 and filled in from the ids when read. That lets the commit script
//! assign versions (`GET`, add one per change) without decoding JSON.
//!
//! Every [`Store::commit`] is one Lua script ([`COMMIT`]): it checks every
//! precondition first (against the state the batch's earlier writes leave)
//! and only then writes, so a rejected batch writes nothing; Redis runs
//! scripts one at a time, so replicas committing concurrently get distinct,
//! gap-free versions, and AOF/replication carry the script's effects as one
//! `MULTI`/`EXEC`. The call returns once Redis answered (and, with
//! `wait_replicas`, once `WAIT` saw enough replicas).
//!
//! Replicas: a background task per process tails `{p}:log` with `XREAD BLOCK`
//! on its own connection and publishes the newest version it saw through
//! [`Store::watch_versions`]; edge sync sessions then read the log itself
//! ([`Store::log_since`]), so nothing depends on a notification arriving.
//!
//! Redis down: calls fail with [`StoreError::Unavailable`] (gRPC
//! `UNAVAILABLE`), commits are never acknowledged. Minting keeps working for
//! `stale_read_secs` from asset states and API keys read before (the signing
//! keys are in the control plane's memory anyway), and mint audit events wait
//! in a bounded in-memory buffer until Redis answers again. The connections
//! reconnect by themselves.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};
use redis::{AsyncConnectionConfig, Client, RedisError, RedisResult, Script, ServerErrorKind};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{
    AssetQuery, AuditQuery, Batch, Committed, LogRead, Pruned, Retention, Snapshot, Store, StoreError, StoreFuture,
    Write,
};
use crate::model::{ApiKey, Asset, AuditEvent, Change, ChangeKind, KeyState, Revocation, SigningKey};

mod config;

pub use self::config::RedisConfig;

/// How long one `XREAD BLOCK` of the log tail waits, milliseconds.
const TAIL_BLOCK_MS: u64 = 1_000;
/// Log entries the tail reads at a time.
const TAIL_BATCH: usize = 1_000;
/// Longest pause between two reconnection attempts of the tail.
const TAIL_MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Rows read per round trip when paging (assets, audit).
const PAGE: usize = 500;
/// Buffered audit events written per script call when Redis returns.
const FLUSH_BATCH: usize = 1_000;
/// Most entries of each read cache (assets, API keys).
const CACHE_MAX: usize = 100_000;
/// Oldest Redis accepted: exclusive stream ranges and `XTRIM MINID` are 6.2.
const MIN_REDIS: (u32, u32) = (6, 2);

/// One commit: preconditions, then writes. See the module documentation.
///
/// KEYS: 1 version, 2 log, 3 revocations, 4 revocations:by_version,
/// 5 revocations:by_expiry, 6 assets, 7 assets:ids, 8 assets:revision,
/// 9 signing_keys, 10 api_keys, 11 api_keys:names, 12 audit, 13 audit:seq.
/// ARGV: audit MAXLEN bound, number of writes, the writes (tag and fixed
/// fields each), then (`at`, event JSON) pairs for the audit stream.
/// Returns `{"ok", first version, first audit seq}`, or
/// `{"conflict", message}` / `{"corrupt", message}` having written nothing.
const COMMIT: &str = r#"
local cap = ARGV[1]
local nwrites = tonumber(ARGV[2])
local i = 3
local ops = {}
for _ = 1, nwrites do
  local tag = ARGV[i]
  if tag == 'asset' then ops[#ops + 1] = {tag, ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]}; i = i + 5
  elseif tag == 'key' then ops[#ops + 1] = {tag, ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]}; i = i + 4
  elseif tag == 'append' then ops[#ops + 1] = {tag, ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]}; i = i + 4
  elseif tag == 'apikey' then ops[#ops + 1] = {tag, ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]}; i = i + 4
  elseif tag == 'delapikey' then ops[#ops + 1] = {tag, ARGV[i + 1]}; i = i + 2
  else return redis.error_reply('ERR stile commit: unknown write ' .. tostring(tag)) end
end

-- Preconditions, against the state the earlier writes of this batch leave.
local asset_rev, key_exists, name_hash, hash_taken = {}, {}, {}, {}
local appends = 0
for _, op in ipairs(ops) do
  local tag = op[1]
  if tag == 'asset' then
    local cur = asset_rev[op[2]]
    if cur == nil then cur = redis.call('HGET', KEYS[8], op[2]) or '0' end
    if cur ~= op[3] then
      return {'conflict', 'asset "' .. op[2] .. '" changed concurrently (revision ' .. cur .. ', expected ' .. op[3] .. ')'}
    end
    asset_rev[op[2]] = op[4]
  elseif tag == 'key' then
    local exists = key_exists[op[2]]
    if exists == nil then exists = redis.call('HEXISTS', KEYS[9], op[2]) == 1 end
    if op[3] == '1' and exists then return {'conflict', 'signing key ' .. op[2] .. ' already exists'} end
    if op[3] ~= '1' and not exists then return {'conflict', 'signing key ' .. op[2] .. ' does not exist'} end
    key_exists[op[2]] = true
  elseif tag == 'append' then
    appends = appends + 1
  elseif tag == 'apikey' then
    local h = name_hash[op[2]]
    if h == nil then h = redis.call('HGET', KEYS[11], op[2]) end
    if h then return {'conflict', 'API key name "' .. op[2] .. '" is taken'} end
    local taken = hash_taken[op[3]]
    if taken == nil then taken = redis.call('HEXISTS', KEYS[10], op[3]) == 1 end
    if taken then return {'conflict', 'API key hash collision'} end
    name_hash[op[2]] = op[3]
    hash_taken[op[3]] = true
  elseif tag == 'delapikey' then
    local h = name_hash[op[2]]
    if h == nil then h = redis.call('HGET', KEYS[11], op[2]) end
    if not h then return {'conflict', 'API key "' .. op[2] .. '" does not exist'} end
    name_hash[op[2]] = false
    hash_taken[h] = false
  end
end

-- The counters must be ahead of their streams, or XADD would fail half-way.
local function top(stream)
  local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
  if last then return tonumber(string.match(last[1], '^(%d+)-')) end
  return 0
end
local version = tonumber(redis.call('GET', KEYS[1]) or '0')
if appends > 0 and top(KEYS[2]) > version then
  return {'corrupt', 'the log stream is ahead of the version counter ' .. version}
end
local nevents = (#ARGV - i + 1) / 2
if nevents > 0 and top(KEYS[12]) > tonumber(redis.call('GET', KEYS[13]) or '0') then
  return {'corrupt', 'the audit stream is ahead of its sequence counter'}
end

-- Writes.
local first = version + 1
for _, op in ipairs(ops) do
  if op[1] == 'append' then
    version = version + 1
    local v = string.format('%d', version)
    redis.call('XADD', KEYS[2], v .. '-0', 'change', op[2])
    if op[3] ~= '' then
      redis.call('HSET', KEYS[3], v, op[3])
      redis.call('ZADD', KEYS[4], v, v)
      redis.call('ZADD', KEYS[5], op[4], v)
    end
  end
end
if version >= first then redis.call('SET', KEYS[1], string.format('%d', version)) end
for _, op in ipairs(ops) do
  local tag = op[1]
  if tag == 'asset' then
    redis.call('HSET', KEYS[6], op[2], op[5])
    redis.call('HSET', KEYS[8], op[2], op[4])
    redis.call('ZADD', KEYS[7], 0, op[2])
  elseif tag == 'key' then
    redis.call('HSET', KEYS[9], op[2], op[4])
  elseif tag == 'apikey' then
    redis.call('HSET', KEYS[11], op[2], op[3])
    redis.call('HSET', KEYS[10], op[3], op[4])
  elseif tag == 'delapikey' then
    local h = redis.call('HGET', KEYS[11], op[2])
    redis.call('HDEL', KEYS[11], op[2])
    redis.call('HDEL', KEYS[10], h)
  end
end
local seq0 = 0
if nevents > 0 then
  local seq = redis.call('INCRBY', KEYS[13], nevents) - nevents
  seq0 = seq + 1
  for j = i, #ARGV, 2 do
    seq = seq + 1
    redis.call('XADD', KEYS[12], 'MAXLEN', '~', cap, string.format('%d-0', seq), 'at', ARGV[j], 'event', ARGV[j + 1])
  end
end
return {'ok', string.format('%d', first), string.format('%d', seq0)}
"#;

/// One bounded step of pruning; the caller repeats while it reports more.
///
/// KEYS: 1 revocations, 2 by_version, 3 by_expiry, 4 log, 5 audit.
/// ARGV: now, log entries kept, audit events kept, oldest audit time kept.
/// Returns `{revocations, log entries, audit events, more}`.
const PRUNE: &str = r#"
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[1], 'LIMIT', 0, 5000)
for _, v in ipairs(expired) do
  redis.call('HDEL', KEYS[1], v)
  redis.call('ZREM', KEYS[2], v)
  redis.call('ZREM', KEYS[3], v)
end
local more = #expired == 5000
local log = redis.call('XTRIM', KEYS[4], 'MAXLEN', ARGV[2])
local audit = redis.call('XTRIM', KEYS[5], 'MAXLEN', ARGV[3])
local min_at = tonumber(ARGV[4])
local old = {}
for _, e in ipairs(redis.call('XRANGE', KEYS[5], '-', '+', 'COUNT', 1000)) do
  local at = nil
  for f = 1, #e[2], 2 do if e[2][f] == 'at' then at = tonumber(e[2][f + 1]) end end
  if at ~= nil and at >= min_at then break end
  old[#old + 1] = e[1]
end
for _, id in ipairs(old) do audit = audit + redis.call('XDEL', KEYS[5], id) end
if #old == 1000 then more = true end
return {#expired, log, audit, more and 1 or 0}
"#;

/// The Redis backend. Dropping it stops its log tail.
pub struct RedisStore {
    inner: Arc<Inner>,
    tail: JoinHandle<()>,
}

struct Inner {
    /// Reads, mint audit events, pruning.
    conn: ConnectionManager,
    /// Commits: a `WAIT` on it holds up only other commits.
    writer: ConnectionManager,
    keys: Keys,
    commit: Script,
    prune: Script,
    settings: Settings,
    versions: watch::Sender<u64>,
    /// Set while Redis does not answer; reads with a cached answer skip it.
    down: AtomicBool,
    down_since: Mutex<Option<Instant>>,
    cache: Mutex<Cache>,
    /// Mint audit events waiting for Redis, oldest first. Held across a flush
    /// so events reach the stream in the order they were recorded.
    pending_audit: tokio::sync::Mutex<VecDeque<AuditEvent>>,
    /// Whether `pending_audit` is non-empty, readable without the lock.
    has_pending: AtomicBool,
}

#[derive(Clone, Debug)]
struct Settings {
    redacted_url: String,
    connect_timeout: Duration,
    read_timeout: Duration,
    commit_timeout: Duration,
    wait_replicas: u32,
    wait_timeout_ms: u64,
    stale_read: Duration,
    audit_buffer: usize,
    audit_cap: u64,
}

/// `GET version`, `HVALS signing_keys`, `HGETALL revocations`.
type SnapshotReply = (Option<u64>, Vec<Vec<u8>>, HashMap<u64, Vec<u8>>);

#[derive(Default)]
struct Cache {
    assets: HashMap<String, (Asset, Instant)>,
    api_keys: HashMap<[u8; 32], (ApiKey, Instant)>,
}

/// The key names, built once.
#[derive(Debug)]
struct Keys {
    version: String,
    log: String,
    revocations: String,
    revocations_by_version: String,
    revocations_by_expiry: String,
    assets: String,
    asset_ids: String,
    asset_revisions: String,
    signing_keys: String,
    api_keys: String,
    api_key_names: String,
    audit: String,
    audit_seq: String,
    /// Replica ids that published a fleet view (their views expire on their own).
    fleet_replicas: String,
    /// Prefix of the per-replica fleet view keys.
    fleet: String,
}

impl Keys {
    fn new(prefix: &str) -> Keys {
        let k = |name: &str| format!("{{{prefix}}}:{name}");
        Keys {
            version: k("version"),
            log: k("log"),
            revocations: k("revocations"),
            revocations_by_version: k("revocations:by_version"),
            revocations_by_expiry: k("revocations:by_expiry"),
            assets: k("assets"),
            asset_ids: k("assets:ids"),
            asset_revisions: k("assets:revision"),
            signing_keys: k("signing_keys"),
            api_keys: k("api_keys"),
            api_key_names: k("api_keys:names"),
            audit: k("audit"),
            audit_seq: k("audit:seq"),
            fleet_replicas: k("fleet:replicas"),
            fleet: k("fleet:"),
        }
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.inner.settings.redacted_url)
            .field("prefix", &self.inner.keys.version.trim_end_matches(":version"))
            .finish_non_exhaustive()
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.tail.abort();
        if self.inner.has_pending.load(Ordering::Acquire) {
            let n = self.inner.pending_audit.try_lock().map_or(0, |p| p.len());
            tracing::warn!(events = n, "redis.audit_lost: mint audit events still buffered at shutdown");
        }
    }
}

impl RedisStore {
    /// Connects (failing with [`StoreError::Unavailable`] if Redis does not
    /// answer), checks the server version, and starts the log tail.
    /// `audit_cap` bounds the audit stream between prunes (`XADD MAXLEN ~`).
    pub async fn connect(config: &RedisConfig, audit_cap: u64) -> Result<RedisStore, StoreError> {
        let ms = Duration::from_millis;
        let settings = Settings {
            redacted_url: config.redacted_url(),
            connect_timeout: ms(config.connect_timeout_ms),
            read_timeout: ms(config.connect_timeout_ms + config.command_timeout_ms),
            commit_timeout: ms(config.connect_timeout_ms
                + config.command_timeout_ms
                + if config.wait_replicas > 0 { config.wait_timeout_ms } else { 0 }),
            wait_replicas: config.wait_replicas,
            wait_timeout_ms: config.wait_timeout_ms,
            stale_read: Duration::from_secs(config.stale_read_secs),
            audit_buffer: config.audit_buffer,
            audit_cap: audit_cap.max(1),
        };
        let url = &settings.redacted_url;
        let client = Client::open(config.url.as_str())
            .map_err(|_| StoreError::Backend(format!("store.redis.url {url} is not a valid Redis URL")))?;
        let manager = |response: Duration| {
            ConnectionManagerConfig::new()
                .set_connection_timeout(Some(settings.connect_timeout))
                .set_response_timeout(Some(response))
                .set_number_of_retries(1)
                .set_min_delay(Duration::from_millis(50))
                .set_max_delay(Duration::from_millis(500))
        };
        let command = ms(config.command_timeout_ms);
        let wait = if config.wait_replicas > 0 { ms(config.wait_timeout_ms) } else { Duration::ZERO };
        let open = |cfg: ConnectionManagerConfig| {
            let client = client.clone();
            let deadline = settings.read_timeout;
            async move {
                match tokio::time::timeout(deadline, ConnectionManager::new_with_config(client, cfg)).await {
                    Ok(Ok(c)) => Ok(c),
                    Ok(Err(e)) => Err(StoreError::Unavailable(format!("cannot connect to Redis at {url}: {e}"))),
                    Err(_) => Err(StoreError::Unavailable(format!("cannot connect to Redis at {url}: timed out"))),
                }
            }
        };
        let conn = open(manager(command)).await?;
        let writer = open(manager(command + wait)).await?;

        let keys = Keys::new(&config.key_prefix);
        let mut c = conn.clone();
        let info: String = within(settings.read_timeout, redis::cmd("INFO").arg("server").query_async(&mut c)).await?;
        let found = server_version(&info);
        if found < MIN_REDIS {
            return Err(StoreError::Backend(format!(
                "Redis at {url} is {}.{}; the Redis store needs {}.{} or newer",
                found.0, found.1, MIN_REDIS.0, MIN_REDIS.1
            )));
        }
        let version: Option<u64> =
            within(settings.read_timeout, redis::cmd("GET").arg(&keys.version).query_async(&mut c)).await?;
        let version = version.unwrap_or(0);
        let inner = Arc::new(Inner {
            conn,
            writer,
            keys,
            commit: Script::new(COMMIT),
            prune: Script::new(PRUNE),
            settings,
            versions: watch::channel(version).0,
            down: AtomicBool::new(false),
            down_since: Mutex::new(None),
            cache: Mutex::new(Cache::default()),
            pending_audit: tokio::sync::Mutex::new(VecDeque::new()),
            has_pending: AtomicBool::new(false),
        });
        let tail = tokio::spawn(tail(Arc::clone(&inner), client, version));
        tracing::info!(url = %inner.settings.redacted_url, version, "redis.connected");
        Ok(RedisStore { inner, tail })
    }
}

impl Store for RedisStore {
    fn commit(&self, batch: Batch) -> StoreFuture<'_, Committed> {
        Box::pin(async move {
            let committed = self.inner.commit(batch).await?;
            if let Some(last) = committed.changes.last() {
                self.inner.publish(last.version);
            }
            Ok(committed)
        })
    }

    fn record_audit(&self, events: Vec<AuditEvent>) -> StoreFuture<'_, ()> {
        Box::pin(self.inner.record_audit(events))
    }

    fn api_key(&self, sha256: [u8; 32]) -> StoreFuture<'_, Option<ApiKey>> {
        Box::pin(async move {
            let s = &self.inner;
            if let Some(k) = s.stale(|c| c.api_keys.get(&sha256).cloned()) {
                return Ok(Some(k));
            }
            match s.read::<Option<Vec<u8>>>(redis::cmd("HGET").arg(&s.keys.api_keys).arg(hex::encode(sha256))).await {
                Ok(bytes) => {
                    let key: Option<ApiKey> = bytes.map(|b| decode("api_keys", &b)).transpose()?;
                    s.remember(|c, now| match &key {
                        Some(k) => insert(&mut c.api_keys, sha256, k.clone(), now, s.settings.stale_read),
                        None => {
                            c.api_keys.remove(&sha256);
                        }
                    });
                    Ok(key)
                }
                Err(e) => s.fallback(e, |c| c.api_keys.get(&sha256).cloned()).map(Some),
            }
        })
    }

    fn api_keys(&self) -> StoreFuture<'_, Vec<ApiKey>> {
        Box::pin(async move {
            let s = &self.inner;
            let values: Vec<Vec<u8>> = s.read(redis::cmd("HVALS").arg(&s.keys.api_keys)).await?;
            let mut keys = values.iter().map(|v| decode("api_keys", v)).collect::<Result<Vec<ApiKey>, _>>()?;
            keys.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(keys)
        })
    }

    fn signing_keys(&self) -> StoreFuture<'_, Vec<SigningKey>> {
        Box::pin(async move {
            let s = &self.inner;
            let values: Vec<Vec<u8>> = s.read(redis::cmd("HVALS").arg(&s.keys.signing_keys)).await?;
            signing_keys(&values)
        })
    }

    fn asset(&self, id: String) -> StoreFuture<'_, Option<Asset>> {
        Box::pin(async move {
            let s = &self.inner;
            if let Some(a) = s.stale(|c| c.assets.get(&id).cloned()) {
                return Ok(Some(a));
            }
            match s.read::<Option<Vec<u8>>>(redis::cmd("HGET").arg(&s.keys.assets).arg(&id)).await {
                Ok(bytes) => {
                    let asset: Option<Asset> = bytes.map(|b| decode("assets", &b)).transpose()?;
                    s.remember(|c, now| match &asset {
                        Some(a) => insert(&mut c.assets, id.clone(), a.clone(), now, s.settings.stale_read),
                        None => {
                            c.assets.remove(&id);
                        }
                    });
                    Ok(asset)
                }
                Err(e) => s.fallback(e, |c| c.assets.get(&id).cloned()).map(Some),
            }
        })
    }

    fn assets(&self, query: AssetQuery) -> StoreFuture<'_, Vec<Asset>> {
        Box::pin(async move {
            let s = &self.inner;
            let mut out = Vec::new();
            let mut start = if query.after_id.is_empty() { "-".to_owned() } else { format!("({}", query.after_id) };
            while out.len() < query.limit {
                let ids: Vec<String> = s
                    .read(
                        redis::cmd("ZRANGEBYLEX")
                            .arg(&s.keys.asset_ids)
                            .arg(&start)
                            .arg("+")
                            .arg("LIMIT")
                            .arg(0)
                            .arg(PAGE),
                    )
                    .await?;
                let Some(last) = ids.last() else { break };
                start = format!("({last}");
                let values: Vec<Option<Vec<u8>>> = s.read(redis::cmd("HMGET").arg(&s.keys.assets).arg(&ids)).await?;
                for v in values.into_iter().flatten() {
                    let asset: Asset = decode("assets", &v)?;
                    if query.state.is_none_or(|st| st == asset.state) {
                        out.push(asset);
                        if out.len() >= query.limit {
                            break;
                        }
                    }
                }
                if ids.len() < PAGE {
                    break;
                }
            }
            Ok(out)
        })
    }

    fn version(&self) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let s = &self.inner;
            let v: Option<u64> = s.read(redis::cmd("GET").arg(&s.keys.version)).await?;
            Ok(v.unwrap_or(0))
        })
    }

    fn log_since(&self, version: u64, limit: usize) -> StoreFuture<'_, LogRead> {
        Box::pin(async move {
            let s = &self.inner;
            let k = &s.keys;
            // One MULTI/EXEC: the counter, the oldest entry and the page agree.
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("GET")
                .arg(&k.version)
                .cmd("XRANGE")
                .arg(&k.log)
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(1)
                .cmd("XRANGE")
                .arg(&k.log)
                .arg(format!("{}-0", version.saturating_add(1)))
                .arg("+")
                .arg("COUNT")
                .arg(limit.max(1));
            let (current, first, page): (Option<u64>, StreamRangeReply, StreamRangeReply) = s.read_pipe(&pipe).await?;
            let current = current.unwrap_or(0);
            if version > current {
                return Ok(LogRead::Ahead { current });
            }
            let oldest = match first.ids.first() {
                Some(e) => entry_number("log", e)?,
                None => current + 1,
            };
            if version + 1 < oldest {
                return Ok(LogRead::Compacted { oldest });
            }
            let mut out = Vec::with_capacity(page.ids.len().min(limit));
            for e in page.ids.iter().take(limit) {
                out.push(change(e)?);
            }
            Ok(LogRead::Changes(out))
        })
    }

    fn snapshot(&self) -> StoreFuture<'_, Snapshot> {
        Box::pin(async move {
            let s = &self.inner;
            let k = &s.keys;
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("GET")
                .arg(&k.version)
                .cmd("HVALS")
                .arg(&k.signing_keys)
                .cmd("HGETALL")
                .arg(&k.revocations);
            let (version, keys, revocations): SnapshotReply = s.read_pipe(&pipe).await?;
            let keys = signing_keys(&keys)?.into_iter().filter(|k| k.state != KeyState::Retired).collect();
            let mut revocations =
                revocations.into_iter().map(|(v, json)| revocation(v, &json)).collect::<Result<Vec<_>, _>>()?;
            revocations.sort_by_key(|r| r.version);
            Ok(Snapshot { version: version.unwrap_or(0), keys, revocations })
        })
    }

    fn revocations(&self, after_version: u64, limit: usize) -> StoreFuture<'_, Vec<Revocation>> {
        Box::pin(async move {
            let s = &self.inner;
            if limit == 0 {
                return Ok(Vec::new());
            }
            let k = &s.keys;
            let versions: Vec<u64> = s
                .read(
                    redis::cmd("ZRANGEBYSCORE")
                        .arg(&k.revocations_by_version)
                        .arg(format!("({after_version}"))
                        .arg("+inf")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(limit),
                )
                .await?;
            if versions.is_empty() {
                return Ok(Vec::new());
            }
            let values: Vec<Option<Vec<u8>>> = s.read(redis::cmd("HMGET").arg(&k.revocations).arg(&versions)).await?;
            // A prune between the two reads leaves holes: skip them.
            versions.iter().zip(values).filter_map(|(v, json)| json.map(|j| revocation(*v, &j))).collect()
        })
    }

    fn audit(&self, q: AuditQuery) -> StoreFuture<'_, Vec<AuditEvent>> {
        Box::pin(async move {
            let s = &self.inner;
            let mut out = Vec::new();
            let mut end = match q.before_seq {
                Some(seq) => format!("({seq}-0"),
                None => "+".to_owned(),
            };
            'pages: while out.len() < q.limit {
                let page: StreamRangeReply = s
                    .read(redis::cmd("XREVRANGE").arg(&s.keys.audit).arg(&end).arg("-").arg("COUNT").arg(PAGE))
                    .await?;
                for e in &page.ids {
                    let event = audit_event(e)?;
                    // Events are appended in time order, so the scan can stop early.
                    if event.at < q.since {
                        break 'pages;
                    }
                    let matches = q.until.is_none_or(|u| event.at < u)
                        && q.actor.as_ref().is_none_or(|a| *a == event.actor)
                        && q.action.is_none_or(|a| a == event.action)
                        && q.channel.as_ref().is_none_or(|c| *c == event.channel);
                    if matches {
                        out.push(event);
                        if out.len() >= q.limit {
                            break 'pages;
                        }
                    }
                }
                match page.ids.last() {
                    Some(last) if page.ids.len() == PAGE => end = format!("({}", last.id),
                    _ => break,
                }
            }
            Ok(out)
        })
    }

    fn prune(&self, now: u64, retention: Retention) -> StoreFuture<'_, Pruned> {
        Box::pin(async move {
            let s = &self.inner;
            // Buffered mint audit events go first, so they are pruned like the rest.
            s.flush_audit().await?;
            let k = &s.keys;
            let min_at = now.saturating_sub(retention.audit_max_age_secs);
            let mut pruned = Pruned::default();
            loop {
                let mut inv = s.prune.prepare_invoke();
                inv.key(&k.revocations)
                    .key(&k.revocations_by_version)
                    .key(&k.revocations_by_expiry)
                    .key(&k.log)
                    .key(&k.audit)
                    .arg(now)
                    .arg(retention.log_entries)
                    .arg(retention.audit_events)
                    .arg(min_at);
                let mut c = s.conn.clone();
                let (revocations, log, audit, more): (u64, u64, u64, u8) =
                    s.observe(within(s.settings.read_timeout, inv.invoke_async(&mut c)).await)?;
                pruned.revocations += revocations;
                pruned.log_entries += log;
                pruned.audit_events += audit;
                if more == 0 {
                    return Ok(pruned);
                }
            }
        })
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn publish_fleet(&self, replica: String, view: String, ttl_ms: u64) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let s = &self.inner;
            let mut pipe = redis::pipe();
            pipe.cmd("SET").arg(format!("{}{replica}", s.keys.fleet)).arg(view).arg("PX").arg(ttl_ms.max(1)).ignore();
            pipe.cmd("SADD").arg(&s.keys.fleet_replicas).arg(&replica).ignore();
            s.read_pipe::<()>(&pipe).await
        })
    }

    fn fleet_views(&self) -> StoreFuture<'_, Vec<(String, String)>> {
        Box::pin(async move {
            let s = &self.inner;
            let replicas: Vec<String> = s.read(redis::cmd("SMEMBERS").arg(&s.keys.fleet_replicas)).await?;
            if replicas.is_empty() {
                return Ok(Vec::new());
            }
            let mut mget = redis::cmd("MGET");
            for r in &replicas {
                mget.arg(format!("{}{r}", s.keys.fleet));
            }
            let views: Vec<Option<String>> = s.read(&mget).await?;
            let mut out = Vec::new();
            let mut gone = redis::cmd("SREM");
            gone.arg(&s.keys.fleet_replicas);
            let mut any_gone = false;
            for (replica, view) in replicas.into_iter().zip(views) {
                match view {
                    Some(v) => out.push((replica, v)),
                    None => {
                        gone.arg(replica);
                        any_gone = true;
                    }
                }
            }
            if any_gone {
                // Expired views: forget their replicas (a replica that publishes again re-adds itself).
                s.read::<()>(&gone).await?;
            }
            Ok(out)
        })
    }

    fn watch_versions(&self) -> Option<watch::Receiver<u64>> {
        Some(self.inner.versions.subscribe())
    }
}

impl Inner {
    async fn commit(&self, batch: Batch) -> Result<Committed, StoreError> {
        let k = &self.keys;
        let mut inv = self.commit.prepare_invoke();
        for key in [
            &k.version,
            &k.log,
            &k.revocations,
            &k.revocations_by_version,
            &k.revocations_by_expiry,
            &k.assets,
            &k.asset_ids,
            &k.asset_revisions,
            &k.signing_keys,
            &k.api_keys,
            &k.api_key_names,
            &k.audit,
            &k.audit_seq,
        ] {
            inv.key(key);
        }
        let audit_only = batch.writes.is_empty();
        inv.arg(self.settings.audit_cap).arg(batch.writes.len());
        // What the caller gets back: the appended changes, versions filled in below.
        let mut appended = Vec::new();
        for write in batch.writes {
            match write {
                Write::PutAsset { asset, expected_revision } => {
                    inv.arg("asset").arg(&asset.id).arg(expected_revision).arg(asset.revision).arg(encode(&asset)?);
                }
                Write::PutKey { key, create } => {
                    inv.arg("key").arg(key.id).arg(if create { "1" } else { "0" }).arg(encode(&key)?);
                }
                Write::Append { at, actor, mut kind } => {
                    let (revocation, expires_at) = match &mut kind {
                        ChangeKind::Revocation(r) => {
                            r.version = 0;
                            (encode(r)?, r.expires_at)
                        }
                        ChangeKind::Key { .. } => (Vec::new(), 0),
                    };
                    let change = Change { version: 0, at, actor, kind };
                    inv.arg("append").arg(encode(&change)?).arg(revocation).arg(expires_at);
                    appended.push(change);
                }
                Write::PutApiKey(key) => {
                    inv.arg("apikey").arg(&key.name).arg(hex::encode(key.sha256)).arg(encode(&key)?);
                }
                Write::DeleteApiKey { name } => {
                    inv.arg("delapikey").arg(name);
                }
            }
        }
        for event in &batch.audit {
            inv.arg(event.at).arg(encode(&AuditEvent { seq: 0, ..event.clone() })?);
        }

        // Mint audit events (no writes) need not be durable before the answer
        // (`Store::record_audit`): the read connection, no WAIT, so mints never
        // queue behind a commit's WAIT.
        let mut w = if audit_only { self.conn.clone() } else { self.writer.clone() };
        let reply: Vec<String> = self.observe(within(self.settings.commit_timeout, inv.invoke_async(&mut w)).await)?;
        match reply.first().map(String::as_str) {
            Some("ok") => {}
            Some("conflict") => return Err(StoreError::Conflict(reply.get(1).cloned().unwrap_or_default())),
            _ => {
                return Err(StoreError::Corrupt { table: "redis", message: reply.get(1).cloned().unwrap_or_default() });
            }
        }
        let first: u64 = reply.get(1).and_then(|v| v.parse().ok()).ok_or_else(|| corrupt("commit reply"))?;
        if self.settings.wait_replicas > 0 && !audit_only {
            let cmd = redis::cmd("WAIT").arg(self.settings.wait_replicas).arg(self.settings.wait_timeout_ms).clone();
            let acked: u32 = self.observe(within(self.settings.commit_timeout, cmd.query_async(&mut w)).await)?;
            if acked < self.settings.wait_replicas {
                return Err(StoreError::Unavailable(format!(
                    "the commit reached {acked} of {} Redis replicas within {} ms (store.redis.wait_replicas); \
                     it is on the primary and may still spread",
                    self.settings.wait_replicas, self.settings.wait_timeout_ms
                )));
            }
        }
        let changes = appended
            .into_iter()
            .zip(first..)
            .map(|(mut change, version)| {
                change.version = version;
                if let ChangeKind::Revocation(r) = &mut change.kind {
                    r.version = version;
                }
                change
            })
            .collect();
        Ok(Committed { changes })
    }

    async fn record_audit(&self, events: Vec<AuditEvent>) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut pending = self.pending_audit.lock().await;
        if pending.is_empty() && !self.down.load(Ordering::Acquire) {
            match self.write_audit(&events).await {
                Ok(()) => return Ok(()),
                Err(StoreError::Unavailable(_)) => {}
                Err(e) => return Err(e),
            }
        } else if !pending.is_empty() && !self.down.load(Ordering::Acquire) {
            // Redis is back and nobody flushed yet: older events first.
            if self.flush_locked(&mut pending).await.is_ok() {
                match self.write_audit(&events).await {
                    Ok(()) => return Ok(()),
                    Err(StoreError::Unavailable(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        if pending.len() + events.len() > self.settings.audit_buffer {
            return Err(StoreError::Unavailable(format!(
                "Redis is unreachable and {} mint audit events are already buffered (store.redis.audit_buffer)",
                pending.len()
            )));
        }
        pending.extend(events);
        self.has_pending.store(true, Ordering::Release);
        Ok(())
    }

    /// Writes buffered audit events, oldest first, if there are any.
    async fn flush_audit(&self) -> Result<(), StoreError> {
        if !self.has_pending.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut pending = self.pending_audit.lock().await;
        self.flush_locked(&mut pending).await
    }

    async fn flush_locked(&self, pending: &mut VecDeque<AuditEvent>) -> Result<(), StoreError> {
        let total = pending.len();
        while !pending.is_empty() {
            let n = pending.len().min(FLUSH_BATCH);
            let batch: Vec<AuditEvent> = pending.iter().take(n).cloned().collect();
            self.write_audit(&batch).await?;
            pending.drain(..n);
        }
        self.has_pending.store(false, Ordering::Release);
        if total > 0 {
            tracing::info!(events = total, "redis.audit_flushed");
        }
        Ok(())
    }

    async fn write_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        self.commit(Batch { writes: Vec::new(), audit: events.to_vec() }).await.map(|_| ())
    }

    /// Runs one command on the read connection.
    async fn read<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        let mut c = self.conn.clone();
        self.observe(within(self.settings.read_timeout, cmd.query_async(&mut c)).await)
    }

    /// Runs a pipeline (usually `MULTI`/`EXEC`) on the read connection.
    async fn read_pipe<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T, StoreError> {
        let mut c = self.conn.clone();
        self.observe(within(self.settings.read_timeout, pipe.query_async(&mut c)).await)
    }

    /// Tracks whether Redis answers: every result passes through here.
    fn observe<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        match &result {
            Ok(_) => self.mark_up(),
            Err(StoreError::Unavailable(e)) => self.mark_down(e),
            Err(_) => {}
        }
        result
    }

    fn mark_down(&self, error: &str) {
        if !self.down.swap(true, Ordering::AcqRel) {
            *self.down_since.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
            tracing::warn!(url = %self.settings.redacted_url, error, "redis.unavailable");
        }
    }

    fn mark_up(&self) {
        if self.down.swap(false, Ordering::AcqRel) {
            let since = self.down_since.lock().unwrap_or_else(|e| e.into_inner()).take();
            let down_ms = since.map_or(0, |t| t.elapsed().as_millis());
            tracing::info!(url = %self.settings.redacted_url, down_ms, "redis.recovered");
        }
    }

    /// While Redis is known to be down, a cached answer young enough, without
    /// trying Redis (so minting stays fast during an outage).
    fn stale<T>(&self, get: impl FnOnce(&Cache) -> Option<(T, Instant)>) -> Option<T> {
        if !self.down.load(Ordering::Acquire) || self.settings.stale_read.is_zero() {
            return None;
        }
        self.cached(get)
    }

    /// After a failed read: the cached answer if Redis is unreachable and the
    /// entry is young enough, else the error.
    fn fallback<T>(
        &self,
        error: StoreError,
        get: impl FnOnce(&Cache) -> Option<(T, Instant)>,
    ) -> Result<T, StoreError> {
        if !matches!(error, StoreError::Unavailable(_)) || self.settings.stale_read.is_zero() {
            return Err(error);
        }
        self.cached(get).ok_or(error)
    }

    fn cached<T>(&self, get: impl FnOnce(&Cache) -> Option<(T, Instant)>) -> Option<T> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        get(&cache).filter(|(_, at)| at.elapsed() <= self.settings.stale_read).map(|(v, _)| v)
    }

    fn remember(&self, f: impl FnOnce(&mut Cache, Instant)) {
        if !self.settings.stale_read.is_zero() {
            f(&mut self.cache.lock().unwrap_or_else(|e| e.into_inner()), Instant::now());
        }
    }

    /// Raises the published version (never lowers it).
    fn publish(&self, version: u64) {
        self.versions.send_if_modified(|cur| {
            let newer = version > *cur;
            if newer {
                *cur = version;
            }
            newer
        });
    }
}

/// Tails the log on a connection of its own and publishes the newest version
/// seen; reconnects with backoff; flushes buffered audit events once Redis
/// answers again. Runs until the store is dropped.
async fn tail(s: Arc<Inner>, client: Client, mut last: u64) {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(s.settings.connect_timeout))
        .set_response_timeout(None);
    let block = Duration::from_millis(TAIL_BLOCK_MS);
    let mut backoff = Duration::from_millis(50);
    loop {
        let mut conn =
            match within(s.settings.read_timeout, client.get_multiplexed_async_connection_with_config(&config)).await {
                Ok(c) => c,
                Err(e) => {
                    if let StoreError::Unavailable(m) = &e {
                        s.mark_down(m);
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(TAIL_MAX_BACKOFF);
                    continue;
                }
            };
        loop {
            // A counter below what was seen means Redis lost data or was
            // restored from an older backup: follow it from there (sync
            // sessions learn it from `log_since`).
            let current: Result<Option<u64>, _> =
                within(s.settings.read_timeout, redis::cmd("GET").arg(&s.keys.version).query_async(&mut conn)).await;
            match current {
                Ok(v) => {
                    let v = v.unwrap_or(0);
                    if v < last {
                        tracing::error!(
                            seen = last,
                            current = v,
                            "redis.log_went_back: Redis lost acknowledged changes"
                        );
                        last = v;
                    }
                    s.publish(v);
                }
                Err(e) => {
                    match &e {
                        StoreError::Unavailable(m) => s.mark_down(m),
                        other => tracing::warn!(error = %other, "redis.tail_failed"),
                    }
                    break;
                }
            }
            s.mark_up();
            if let Err(e) = s.flush_audit().await {
                tracing::debug!(error = %e, "redis.audit_flush_failed");
            }
            let read = within(
                block + s.settings.read_timeout,
                redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(TAIL_BATCH)
                    .arg("BLOCK")
                    .arg(TAIL_BLOCK_MS)
                    .arg("STREAMS")
                    .arg(&s.keys.log)
                    .arg(format!("{last}-0"))
                    .query_async::<Option<StreamReadReply>>(&mut conn),
            )
            .await;
            match read {
                Ok(Some(reply)) => {
                    for e in reply.keys.iter().flat_map(|k| &k.ids) {
                        if let Ok(v) = entry_number("log", e) {
                            last = last.max(v);
                        }
                    }
                    s.publish(last);
                }
                Ok(None) => {}
                Err(e) => {
                    match &e {
                        StoreError::Unavailable(m) => s.mark_down(m),
                        other => tracing::warn!(error = %other, "redis.tail_failed"),
                    }
                    break;
                }
            }
            backoff = Duration::from_millis(50);
        }
        // The connection failed (or Redis refused the tail's commands): back off.
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(TAIL_MAX_BACKOFF);
    }
}

/// Awaits a Redis call with a deadline and sorts its error.
async fn within<T>(deadline: Duration, call: impl Future<Output = RedisResult<T>>) -> Result<T, StoreError> {
    match tokio::time::timeout(deadline, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(classify(&e)),
        Err(_) => Err(StoreError::Unavailable(format!("no answer from Redis within {} ms", deadline.as_millis()))),
    }
}

/// Connection trouble and the refusals a healthy deployment recovers from
/// (loading, failover, out of memory, too few replicas) are
/// [`StoreError::Unavailable`]; anything else is a bug or a misconfiguration.
fn classify(e: &RedisError) -> StoreError {
    let transient_server = matches!(
        e.kind(),
        redis::ErrorKind::Server(
            ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ReadOnly
        )
    );
    let transient_code = matches!(e.code(), Some("OOM" | "MISCONF" | "NOREPLICAS" | "BUSY" | "LOADING"));
    if e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || transient_server
        || transient_code
    {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Backend(format!("redis: {e}"))
    }
}

/// `(major, minor)` from `INFO server`.
fn server_version(info: &str) -> (u32, u32) {
    let v = info.lines().find_map(|l| l.strip_prefix("redis_version:")).unwrap_or("0.0").trim();
    let mut parts = v.split('.').map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

fn insert<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, (V, Instant)>, k: K, v: V, now: Instant, max_age: Duration) {
    if map.len() >= CACHE_MAX && !map.contains_key(&k) {
        map.retain(|_, (_, at)| now.duration_since(*at) <= max_age);
        if map.len() >= CACHE_MAX {
            map.clear();
        }
    }
    map.insert(k, (v, now));
}

/// The number in a `<n>-0` stream entry id (a version or an audit seq).
fn entry_number(table: &'static str, e: &StreamId) -> Result<u64, StoreError> {
    e.id.split_once('-')
        .and_then(|(n, _)| n.parse().ok())
        .ok_or_else(|| StoreError::Corrupt { table, message: format!("stream entry id {:?} is not <number>-0", e.id) })
}

fn field(table: &'static str, e: &StreamId, name: &str) -> Result<Vec<u8>, StoreError> {
    e.get::<Vec<u8>>(name)
        .ok_or_else(|| StoreError::Corrupt { table, message: format!("entry {} has no field {name:?}", e.id) })
}

fn change(e: &StreamId) -> Result<Change, StoreError> {
    let version = entry_number("log", e)?;
    let mut change: Change = decode("log", &field("log", e, "change")?)?;
    change.version = version;
    if let ChangeKind::Revocation(r) = &mut change.kind {
        r.version = version;
    }
    Ok(change)
}

fn revocation(version: u64, json: &[u8]) -> Result<Revocation, StoreError> {
    let mut r: Revocation = decode("revocations", json)?;
    r.version = version;
    Ok(r)
}

fn audit_event(e: &StreamId) -> Result<AuditEvent, StoreError> {
    let mut event: AuditEvent = decode("audit", &field("audit", e, "event")?)?;
    event.seq = entry_number("audit", e)?;
    Ok(event)
}

fn signing_keys(values: &[Vec<u8>]) -> Result<Vec<SigningKey>, StoreError> {
    let mut keys = values.iter().map(|v| decode("signing_keys", v)).collect::<Result<Vec<SigningKey>, _>>()?;
    keys.sort_by_key(|k| k.id);
    Ok(keys)
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Backend(format!("encoding: {e}")))
}

fn decode<T: DeserializeOwned>(table: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt { table, message: e.to_string() })
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt { table: "redis", message: format!("unexpected {what}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_one_hash_tag() {
        let k = Keys::new("stile");
        for key in [&k.version, &k.log, &k.revocations_by_expiry, &k.audit_seq, &k.api_key_names] {
            assert!(key.starts_with("{stile}:"), "{key}");
        }
    }

    #[test]
    fn parses_the_server_version() {
        assert_eq!(server_version("# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:0\r\n"), (7, 0));
        assert_eq!(server_version("nothing"), (0, 0));
    }

    #[test]
    fn entry_ids_are_versions() {
        let e = StreamId { id: "42-0".into(), ..StreamId::default() };
        assert_eq!(entry_number("log", &e).unwrap(), 42);
        let bad = StreamId { id: "x".into(), ..StreamId::default() };
        assert!(matches!(entry_number("log", &bad), Err(StoreError::Corrupt { .. })));
    }
}
