//! The Redis backend: the state of several control-plane replicas in one
//! Redis (`docs/redis.md` is the operator's view of this module, with the key
//! layout table).
//!
//! Every key lives under one hash tag `{p}` (`store.redis.key_prefix`), so one
//! Redis Cluster slot holds them all and one script can touch them
//! (`layout.rs`). A change's version *is* its log stream entry id
//! (`<version>-0`) and an audit event's seq is its entry id: the JSON bodies
//! are written with version and seq 0 and filled in from the ids when read
//! (`codec.rs`). That lets the commit script assign versions (`GET`, add one
//! per change) without decoding JSON.
//!
//! Every [`Store::commit`] is one Lua script (`script.rs`): it checks every
//! precondition first (against the state the batch's earlier writes leave)
//! and only then writes, so a rejected batch writes nothing; Redis runs
//! scripts one at a time, so replicas committing concurrently get distinct,
//! gap-free versions, and AOF/replication carry the script's effects as one
//! `MULTI`/`EXEC`. The call returns once Redis answered (and, with
//! `wait_replicas`, once `WAIT` saw enough replicas); how durable that is
//! depends on Redis's persistence (`docs/redis.md`, "Durability").
//!
//! Replicas: a background task per process tails `{p}:log` with `XREAD BLOCK`
//! on its own connection (`tail.rs`) and publishes the newest version it saw
//! through [`ReplicaBus::watch_versions`](crate::store::ReplicaBus); edge sync
//! sessions then read the log itself ([`Store::log_since`]), so nothing
//! depends on a notification arriving. Fleet views are shared through
//! expiring keys (`fleet.rs`).
//!
//! Redis down: calls fail with [`StoreError::Unavailable`] (gRPC
//! `UNAVAILABLE`), commits are never acknowledged (`conn.rs` sorts the errors).
//! Minting keeps working for `stale_read_secs` from asset states and API keys
//! read before (`cache.rs`; the signing keys are in the control plane's memory
//! anyway), and mint audit events wait in a bounded in-memory buffer until
//! Redis answers again (`audit.rs`). The connections reconnect by themselves;
//! with Sentinel, the store also asks the Sentinels for the primary after
//! every "unavailable" and moves its connections there (`locate.rs`, which
//! also sets up `rediss://`).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use redis::streams::StreamRangeReply;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use self::cache::{Cache, insert};
use self::codec::{audit_event, change, decode, entry_number, foreign_keys, purge, revocation, signing_keys};
use self::conn::{server_version, within};
use self::layout::KeyNames;
use self::locate::{Link, Locator, open_link};
use self::script::Scripts;
use super::{
    AssetQuery, AuditQuery, Batch, Committed, LogRead, Pruned, Retention, Snapshot, Store, StoreError, StoreFuture,
};
use crate::model::{ApiKey, Asset, AuditEvent, ForeignKey, KeyState, Revocation, SigningKey};

mod audit;
mod cache;
mod codec;
mod config;
mod conn;
mod fleet;
mod layout;
mod locate;
mod script;
mod tail;

pub use self::config::{RedisConfig, SentinelConfig};

/// Rows read per round trip when paging (assets, audit).
const PAGE: usize = 500;
/// Oldest Redis accepted: exclusive stream ranges and `XTRIM MINID` are 6.2.
const MIN_REDIS: (u32, u32) = (6, 2);

/// The Redis backend. Dropping it stops its log tail.
pub struct RedisStore {
    inner: Arc<Inner>,
    tail: JoinHandle<()>,
    follow: JoinHandle<()>,
}

struct Inner {
    /// The connections to the server in use (with Sentinel: swapped for the
    /// new primary's after a failover).
    link: ArcSwap<Link>,
    /// The URL's server, or the Sentinels.
    locator: Locator,
    /// Woken by every "unavailable": with Sentinel, look the primary up again.
    follow: Notify,
    keys: KeyNames,
    scripts: Scripts,
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
    /// One command's answer (`command_timeout_ms`).
    command_timeout: Duration,
    /// `wait_timeout_ms` when `wait_replicas > 0`, else zero.
    wait_timeout: Duration,
    read_timeout: Duration,
    commit_timeout: Duration,
    wait_replicas: u32,
    wait_timeout_ms: u64,
    stale_read: Duration,
    audit_buffer: usize,
    audit_cap: u64,
}

/// `GET version`, `HVALS signing_keys`, `HGETALL purges`, `GET purge_floor`,
/// `HVALS foreign_keys`.
type SnapshotHeadReply = (Option<u64>, Vec<Vec<u8>>, HashMap<u64, Vec<u8>>, Option<u64>, Vec<Vec<u8>>);

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.inner.settings.redacted_url)
            .field("server", &self.inner.link.load().addr)
            .field("prefix", &self.inner.keys.version.trim_end_matches(":version"))
            .finish_non_exhaustive()
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.tail.abort();
        self.follow.abort();
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
            command_timeout: ms(config.command_timeout_ms),
            wait_timeout: if config.wait_replicas > 0 { ms(config.wait_timeout_ms) } else { Duration::ZERO },
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
        let locator = Locator::new(config)?;
        let link = open_link(locator.primary(settings.read_timeout).await?, &settings).await?;
        let url = &settings.redacted_url;

        let keys = KeyNames::new(&config.key_prefix);
        let mut c = link.conn.clone();
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
        let server = link.addr.clone();
        let inner = Arc::new(Inner {
            link: ArcSwap::from_pointee(link),
            locator,
            follow: Notify::new(),
            keys,
            scripts: Scripts::new(),
            settings,
            versions: watch::channel(version).0,
            down: AtomicBool::new(false),
            down_since: Mutex::new(None),
            cache: Mutex::new(Cache::default()),
            pending_audit: tokio::sync::Mutex::new(VecDeque::new()),
            has_pending: AtomicBool::new(false),
        });
        let tail = tokio::spawn(tail::tail(Arc::clone(&inner), version));
        let follow = tokio::spawn(locate::follow(Arc::clone(&inner)));
        let sentinel = inner.locator.follows_sentinel();
        tracing::info!(url = %inner.settings.redacted_url, server, sentinel, version, "redis.connected");
        Ok(RedisStore { inner, tail, follow })
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
            let inner = &self.inner;
            if let Some(k) = inner.stale(|c| c.api_keys.get(&sha256).cloned()) {
                return Ok(Some(k));
            }
            match inner
                .read::<Option<Vec<u8>>>(redis::cmd("HGET").arg(&inner.keys.api_keys).arg(hex::encode(sha256)))
                .await
            {
                Ok(bytes) => {
                    let key: Option<ApiKey> = bytes.map(|b| decode("api_keys", &b)).transpose()?;
                    inner.remember(|c, now| match &key {
                        Some(k) => insert(&mut c.api_keys, sha256, k.clone(), now, inner.settings.stale_read),
                        None => {
                            c.api_keys.remove(&sha256);
                        }
                    });
                    Ok(key)
                }
                Err(e) => inner.fallback(e, |c| c.api_keys.get(&sha256).cloned()).map(Some),
            }
        })
    }

    fn api_keys(&self) -> StoreFuture<'_, Vec<ApiKey>> {
        Box::pin(async move {
            let inner = &self.inner;
            let values: Vec<Vec<u8>> = inner.read(redis::cmd("HVALS").arg(&inner.keys.api_keys)).await?;
            let mut keys = values.iter().map(|v| decode("api_keys", v)).collect::<Result<Vec<ApiKey>, _>>()?;
            keys.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(keys)
        })
    }

    fn signing_keys(&self) -> StoreFuture<'_, Vec<SigningKey>> {
        Box::pin(async move {
            let inner = &self.inner;
            let values: Vec<Vec<u8>> = inner.read(redis::cmd("HVALS").arg(&inner.keys.signing_keys)).await?;
            signing_keys(&values)
        })
    }

    fn foreign_keys(&self) -> StoreFuture<'_, Vec<ForeignKey>> {
        Box::pin(async move {
            let inner = &self.inner;
            let values: Vec<Vec<u8>> = inner.read(redis::cmd("HVALS").arg(&inner.keys.foreign_keys)).await?;
            foreign_keys(&values)
        })
    }

    fn asset(&self, id: String) -> StoreFuture<'_, Option<Asset>> {
        Box::pin(async move {
            let inner = &self.inner;
            if let Some(a) = inner.stale(|c| c.assets.get(&id).cloned()) {
                return Ok(Some(a));
            }
            match inner.read::<Option<Vec<u8>>>(redis::cmd("HGET").arg(&inner.keys.assets).arg(&id)).await {
                Ok(bytes) => {
                    let asset: Option<Asset> = bytes.map(|b| decode("assets", &b)).transpose()?;
                    inner.remember(|c, now| match &asset {
                        Some(a) => insert(&mut c.assets, id.clone(), a.clone(), now, inner.settings.stale_read),
                        None => {
                            c.assets.remove(&id);
                        }
                    });
                    Ok(asset)
                }
                Err(e) => inner.fallback(e, |c| c.assets.get(&id).cloned()).map(Some),
            }
        })
    }

    fn assets(&self, query: AssetQuery) -> StoreFuture<'_, Vec<Asset>> {
        Box::pin(async move {
            let inner = &self.inner;
            let mut out = Vec::new();
            let mut start = if query.after_id.is_empty() { "-".to_owned() } else { format!("({}", query.after_id) };
            while out.len() < query.limit {
                let ids: Vec<String> = inner
                    .read(
                        redis::cmd("ZRANGEBYLEX")
                            .arg(&inner.keys.asset_ids)
                            .arg(&start)
                            .arg("+")
                            .arg("LIMIT")
                            .arg(0)
                            .arg(PAGE),
                    )
                    .await?;
                let Some(last) = ids.last() else { break };
                start = format!("({last}");
                let values: Vec<Option<Vec<u8>>> =
                    inner.read(redis::cmd("HMGET").arg(&inner.keys.assets).arg(&ids)).await?;
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
            let inner = &self.inner;
            let v: Option<u64> = inner.read(redis::cmd("GET").arg(&inner.keys.version)).await?;
            Ok(v.unwrap_or(0))
        })
    }

    fn log_since(&self, version: u64, limit: usize) -> StoreFuture<'_, LogRead> {
        Box::pin(async move {
            let inner = &self.inner;
            let k = &inner.keys;
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
            let (current, first, page): (Option<u64>, StreamRangeReply, StreamRangeReply) =
                inner.read_pipe(&pipe).await?;
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
            let mut snapshot = self.snapshot_head().await?;
            // Read after the head: a revocation committed since has a higher
            // version and is left out; one pruned since had expired.
            let revocations: HashMap<u64, Vec<u8>> =
                self.inner.read(redis::cmd("HGETALL").arg(&self.inner.keys.revocations)).await?;
            let mut revocations = revocations
                .into_iter()
                .filter(|(v, _)| *v <= snapshot.version)
                .map(|(v, json)| revocation(v, &json))
                .collect::<Result<Vec<_>, _>>()?;
            revocations.sort_by_key(|r| r.version);
            snapshot.revocations = revocations;
            Ok(snapshot)
        })
    }

    fn snapshot_head(&self) -> StoreFuture<'_, Snapshot> {
        Box::pin(async move {
            let inner = &self.inner;
            let k = &inner.keys;
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("GET")
                .arg(&k.version)
                .cmd("HVALS")
                .arg(&k.signing_keys)
                .cmd("HGETALL")
                .arg(&k.purges)
                .cmd("GET")
                .arg(&k.purge_floor)
                .cmd("HVALS")
                .arg(&k.foreign_keys);
            let (version, keys, purges, purge_floor, foreign): SnapshotHeadReply = inner.read_pipe(&pipe).await?;
            let keys = signing_keys(&keys)?.into_iter().filter(|k| k.state != KeyState::Retired).collect();
            let mut purges = purges.into_iter().map(|(v, json)| purge(v, &json)).collect::<Result<Vec<_>, _>>()?;
            purges.sort_by_key(|p| p.version);
            Ok(Snapshot {
                version: version.unwrap_or(0),
                keys,
                revocations: Vec::new(),
                purges,
                purge_floor: purge_floor.unwrap_or(0),
                foreign_keys: foreign_keys(&foreign)?,
            })
        })
    }

    fn revocations(&self, after_version: u64, limit: usize) -> StoreFuture<'_, Vec<Revocation>> {
        Box::pin(async move {
            let inner = &self.inner;
            if limit == 0 {
                return Ok(Vec::new());
            }
            let k = &inner.keys;
            let versions: Vec<u64> = inner
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
            let values: Vec<Option<Vec<u8>>> =
                inner.read(redis::cmd("HMGET").arg(&k.revocations).arg(&versions)).await?;
            // A prune between the two reads leaves holes: skip them.
            versions.iter().zip(values).filter_map(|(v, json)| json.map(|j| revocation(*v, &j))).collect()
        })
    }

    fn audit(&self, q: AuditQuery) -> StoreFuture<'_, Vec<AuditEvent>> {
        Box::pin(async move {
            let inner = &self.inner;
            let mut out = Vec::new();
            let mut end = match q.before_seq {
                Some(seq) => format!("({seq}-0"),
                None => "+".to_owned(),
            };
            'pages: while out.len() < q.limit {
                let page: StreamRangeReply = inner
                    .read(redis::cmd("XREVRANGE").arg(&inner.keys.audit).arg(&end).arg("-").arg("COUNT").arg(PAGE))
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
        Box::pin(self.inner.prune(now, retention))
    }
}
