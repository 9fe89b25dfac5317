//! The edge's object cache, built on Pingora's HTTP cache (`pingora-cache`):
//! Pingora runs the cache state machine (lookup, cache lock, stale-while-
//! revalidate in a background subrequest, stale-if-error, 304 revalidation,
//! ranges from a seekable hit), and this module gives it what it lacks:
//!
//! - `store.rs` — the [`Storage`](pingora::cache::Storage): foyer S3-FIFO memory tier,
//!   file-per-object disk tier (`format.rs`) bounded by Pingora's LRU eviction
//!   manager, fills that waiters stream from;
//! - `key.rs` — the token-free cache key;
//! - `freshness.rs` — what is stored and for how long (video-aware defaults);
//! - `purge.rs` — O(depth) purges by per-path generation;
//! - `metrics.rs` — `stile_edge_cache_*`;
//! - `config.rs` — `[cache]`.
//!
//! The proxy (`proxy.rs`) calls `Cache` from its cache hooks. Validation runs
//! in `request_filter`, before any of them: a request the edge refuses never
//! reaches a lookup, and only admitted `GET`/`HEAD` requests enable the cache.

mod config;
mod format;
mod freshness;
mod key;
mod metrics;
mod purge;
mod store;

use std::sync::Arc;
use std::time::Duration;

use pingora::cache::eviction::EvictionManager;
use pingora::cache::lock::{CacheKeyLockImpl, CacheLock};
use pingora::cache::predictor::Predictor;
use pingora::cache::{CacheKey, CacheMeta, CacheOptionOverrides, CachePhase, HttpCache, RespCacheable};
use pingora::http::ResponseHeader;
use prometheus::Registry;

pub use self::config::{CacheConfig, TtlConfig};
pub use self::format::FormatError;
pub use self::purge::PurgeTarget;

/// Decodes `file` as a disk-tier file, with every check the disk tier makes before
/// serving from one, and encodes what it read again. The fuzz target `cache_file`
/// checks that this never panics and that an accepted file encodes back to itself
/// (one encoding per object: nothing in an accepted file goes unchecked).
#[doc(hidden)]
pub fn reencode_disk_file(file: &[u8]) -> Result<Vec<u8>, FormatError> {
    let (head, body) = format::decode_file(file)?;
    Ok([head.encode(), body.to_vec()].concat())
}
pub use self::store::StoreError;

use self::freshness::{BodyKind, CacheKind, Skip};
use self::metrics::CacheMetrics;
use self::purge::PurgeIndex;
pub(crate) use self::store::DirectHit;
use self::store::{KeyInfo, Store};

/// Keys remembered as uncacheable per predictor shard.
const PREDICTOR_SHARD: usize = 1024;

/// One edge's cache: the storage and what Pingora needs beside it. Built once and leaked
/// (Pingora holds `&'static` references to all of it).
pub(crate) struct Cache {
    store: &'static Store,
    eviction: Option<&'static (dyn EvictionManager + Sync)>,
    lock: &'static CacheKeyLockImpl,
    predictor: &'static Predictor<16>,
    config: CacheConfig,
    purges: Arc<PurgeIndex>,
    metrics: Arc<CacheMetrics>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("store", &self.store).finish_non_exhaustive()
    }
}

/// What the proxy records about one request's use of the cache (in `logging`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Outcome {
    /// One of `metrics::STATUSES`.
    pub(crate) status: &'static str,
    /// The response body came from the cache (hit, stale) rather than the origin.
    pub(crate) from_cache: bool,
}

impl Cache {
    /// Opens the storage (scanning the disk tier) and registers the metrics.
    pub(crate) fn open(config: &CacheConfig, registry: &Registry) -> Result<&'static Cache, StoreError> {
        let config = &CacheConfig { max_object_bytes: config.effective_max_object(), ..config.clone() };
        let metrics = Arc::new(CacheMetrics::new(registry));
        let purges = Arc::new(PurgeIndex::new(config.disk().map(|d| d.join("purges.log")).as_deref()));
        let store: &'static Store = Box::leak(Box::new(Store::open(config, purges.clone(), metrics.clone())?));
        store.observe();
        let lock: &'static CacheKeyLockImpl =
            Box::leak(Box::new(CacheLock::new(Duration::from_millis(config.lock_timeout_ms))));
        let predictor: &'static Predictor<16> = Box::leak(Box::new(Predictor::new(PREDICTOR_SHARD, None)));
        Ok(Box::leak(Box::new(Cache {
            store,
            eviction: store.eviction(),
            lock,
            predictor,
            config: config.clone(),
            purges,
            metrics,
        })))
    }

    /// Turns the cache on for one admitted request.
    pub(crate) fn enable(&self, cache: &mut HttpCache) {
        let mut overrides = CacheOptionOverrides::default();
        overrides.wait_timeout = Some(Duration::from_millis(self.config.lock_wait_timeout_ms));
        cache.enable(self.store, self.eviction, Some(self.predictor), Some(self.lock), Some(overrides));
        cache.set_max_file_size_bytes(usize::try_from(self.config.max_object_bytes).unwrap_or(usize::MAX));
    }

    /// The cache key of a request: the origin pool's name and token-free upstream target.
    pub(crate) fn key(&self, pool: &str, target: &[u8]) -> CacheKey {
        let mut k = key::build(&key::KeyParts { pool, target }, &self.config.key_query_params);
        let path = String::from_utf8_lossy(key::path_of(target));
        k.extensions.insert(KeyInfo { path: Arc::from(path.as_ref()) });
        k
    }

    /// A fresh, complete memory-tier hit for the proxy to answer itself (see
    /// `EdgeProxy::direct_hit`); `None` sends the request through Pingora's cache.
    pub(crate) fn direct(&self, pool: &str, target: &[u8]) -> Option<DirectHit> {
        self.store.direct(&self.key(pool, target), crate::clock::cache_now())
    }

    /// Records a hit the proxy answered itself, as `record` records Pingora's
    /// (`zero_copy`: its body went out with `sendfile`).
    pub(crate) fn record_direct(&self, kind: &str, body_bytes: u64, zero_copy: bool) {
        self.metrics.lookup("hit", kind);
        self.metrics.served(true, body_bytes);
        if zero_copy {
            self.metrics.zero_copy(body_bytes);
        }
    }

    /// Whether (and how) an origin response is stored. `target` is the token-free upstream target.
    pub(crate) fn decide(&self, resp: &ResponseHeader, target: &[u8], authorization: bool) -> RespCacheable {
        let kind = CacheKind::of_path(key::path_of(target));
        let ll = key::is_ll_hls_request(target);
        match freshness::decide(resp, kind, ll, authorization, &self.config, crate::clock::cache_now()) {
            Ok(plan) => {
                let mut meta = CacheMeta::new(plan.fresh_until, plan.updated, plan.swr, plan.sie, plan.header);
                if let Some(b) = plan.from_body {
                    meta.extensions_mut().insert::<BodyKind>(b);
                }
                RespCacheable::Cacheable(meta)
            }
            Err(skip) => RespCacheable::Uncacheable(skip_reason(skip)),
        }
    }

    /// Applies a purge at once (before the sync client acknowledges it).
    pub(crate) fn purge(&self, target: &PurgeTarget) {
        self.purges.purge(target);
        self.metrics.purged(target.label());
        tracing::info!(purge.kind = target.label(), purge.path = target.path(), "cache.purged");
    }

    /// The cache status of a request, from Pingora's cache phase.
    pub(crate) fn outcome(cache: &HttpCache) -> Outcome {
        let (status, from_cache) = match cache.phase() {
            CachePhase::Hit => ("hit", true),
            CachePhase::Stale | CachePhase::StaleUpdating => ("stale", true),
            CachePhase::Miss => ("miss", false),
            CachePhase::Expired => ("expired", false),
            // Validated by the origin (304), the stored body served.
            CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => ("revalidated", true),
            _ => ("bypass", false),
        };
        Outcome { status, from_cache }
    }

    /// Records one admitted request's use of the cache (`background`: a
    /// stale-while-revalidate refresh, which served nobody).
    pub(crate) fn record(&self, cache: &HttpCache, kind: &str, body_bytes: u64, background: bool) {
        let o = Cache::outcome(cache);
        if let Some(waited) = cache.lock_duration()
            && !waited.is_zero()
        {
            self.metrics.lock_wait(matches!(
                cache.phase(),
                CachePhase::Disabled(pingora::cache::NoCacheReason::CacheLockTimeout)
            ));
        }
        if background {
            self.metrics.origin_fetch("background");
            return;
        }
        self.metrics.lookup(o.status, kind);
        if cache.upstream_used() {
            self.metrics.origin_fetch(o.status);
        }
        self.metrics.served(o.from_cache, body_bytes);
    }
}

fn skip_reason(skip: Skip) -> pingora::cache::NoCacheReason {
    skip.reason()
}
