//! The cache storage: a Pingora [`Storage`] with a memory tier and an optional
//! disk tier, and the in-flight fills concurrent requests stream from.
//!
//! - **Memory tier**: foyer's in-memory cache (`foyer-memory`) with S3-FIFO
//!   eviction, chosen over TinyUFO by hit ratio (`benches/benches/memory_tier.rs`),
//!   weighted in 4 KiB pages up to `cache.memory_bytes`. A hit is the stored
//!   `Bytes`, sliced for a range: no copy; bodies from [`SEAL_MIN`] bytes are
//!   sealed memory files, sent with `sendfile` by the proxy's direct hits.
//! - **Disk tier**: one file per object (`format.rs`) under `cache.disk_path`,
//!   written after the fill completes, off the request path; bounded by
//!   Pingora's LRU eviction manager at `cache.disk_bytes`, which the proxy hands
//!   to Pingora so every fill is admitted and every hit counted there. Objects
//!   up to `cache.memory_max_object_bytes` read from disk are promoted to
//!   memory; larger ones are streamed from the file block by block, each block
//!   checked against its CRC before a byte of it is served, and can seek (ranges).
//!   At start the directory is scanned: every valid file is admitted to the
//!   eviction manager (oldest first), damaged and purged ones are deleted.
//! - **Fills**: a miss writes into a [`Fill`] that readers attach to as soon as
//!   the response header is in (`support_streaming_partial_write`), so waiters
//!   behind the cache lock stream a segment while it arrives.
//! - **Purges** ([`PurgeIndex`]): every stored object carries the sequence
//!   number of its fill; a lookup checks it against the purges of its path and
//!   of each ancestor prefix, so a prefix purge is one map insert, never a scan.

use std::any::Any;
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use foyer_common::event::{Event, EventListener};
use foyer_memory::S3FifoConfig;
use pingora::cache::eviction::lru::Manager as Lru;
use pingora::cache::eviction::{CacheEntryKey, EvictionManager};
use pingora::cache::key::{CacheHashKey, HashBinary};
use pingora::cache::storage::{HandleHit, HandleMiss, MissFinishType, PurgeOutcome, PurgeTarget, PurgeType};
use pingora::cache::trace::SpanHandle;
use pingora::cache::{CacheKey, CacheMeta, HitHandler, MissHandler, Storage};
use pingora::http::ResponseHeader;
use pingora::{Error, ErrorType, Result};
use stile_zerocopy::Sealed;

use super::config::{CacheConfig, TtlConfig};
use super::format::{self, BLOCK, Head};
use super::freshness::{BodyKind, body_ttl};
use super::metrics::CacheMetrics;
use super::purge::PurgeIndex;

/// Bytes per unit of memory-tier weight.
const PAGE: u64 = 4096;
/// Largest object the memory tier holds (`u16::MAX` pages, 256 MiB).
pub(crate) const MEMORY_OBJECT_CAP: u64 = PAGE * u16::MAX as u64;
/// Body bytes read from a disk file per `read_body` call.
const DISK_READ: usize = 16 * BLOCK;
/// Bodies from this size on go into a sealed memory file (`stile_zerocopy`): below
/// it, a `sendfile` saves less than the extra system call costs.
pub(crate) const SEAL_MIN: usize = 64 << 10;
/// Disk tier shards of Pingora's LRU manager.
const LRU_SHARDS: usize = 16;
/// Most shards of the memory tier (fewer when the budget is small: a shard's share
/// must hold many of the largest objects).
const MEMORY_SHARDS: usize = 16;

/// What the cache-key callback attaches to a key for the storage: the canonical
/// path (purges match it) and, when the lifetime comes from the body, its kind.
#[derive(Clone, Debug)]
pub(crate) struct KeyInfo {
    pub(crate) path: Arc<str>,
}

/// Why a fill failed or a disk object was refused.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The disk tier's directory cannot be used.
    #[error("cache.disk_path {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// One stored object.
#[derive(Debug)]
struct Object {
    key: u128,
    seq: u64,
    path: Arc<str>,
    meta: Meta,
    /// The body; for a sealed one, a view of `sealed`'s mapping (no second copy).
    body: Bytes,
    /// Bodies of at least [`SEAL_MIN`] bytes live in a sealed memory file, which
    /// plain-HTTP/1.1 hits send with `sendfile` (`stile_zerocopy`).
    sealed: Option<Arc<Counted>>,
}

/// A sealed body, counted against the store's cap on open memory files.
#[derive(Debug)]
pub(crate) struct Counted {
    pub(crate) sealed: Arc<Sealed>,
    count: Arc<AtomicU64>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A fresh, complete memory-tier hit the proxy answers itself (`Store::direct`).
#[derive(Debug)]
pub(crate) struct DirectHit {
    /// The stored response header, with `Age` and `Content-Length`.
    pub(crate) header: ResponseHeader,
    pub(crate) body: Bytes,
    pub(crate) sealed: Option<Arc<Counted>>,
}

/// What a [`CacheMeta`] is rebuilt from on every hit.
#[derive(Debug, Clone)]
struct Meta {
    created: SystemTime,
    updated: SystemTime,
    fresh_until: SystemTime,
    swr: u32,
    sie: u32,
    header: ResponseHeader,
}

impl Meta {
    fn from_cache_meta(m: &CacheMeta) -> Meta {
        Meta {
            created: m.created(),
            updated: m.updated(),
            fresh_until: m.fresh_until(),
            swr: m.stale_while_revalidate_sec(),
            sie: m.stale_if_error_sec(),
            header: m.response_header_copy(),
        }
    }

    fn to_cache_meta(&self) -> CacheMeta {
        let mut m = CacheMeta::new(self.fresh_until, self.created, self.swr, self.sie, self.header.clone());
        if self.updated != self.created {
            // Age and freshness count from the last revalidation.
            m.set_epoch_override(self.updated);
        }
        m
    }

    fn from_head(head: &Head) -> std::result::Result<Meta, format::FormatError> {
        Ok(Meta {
            created: from_ms(head.created_ms),
            updated: from_ms(head.updated_ms),
            fresh_until: from_ms(head.fresh_until_ms),
            swr: head.swr,
            sie: head.sie,
            header: head.response_header()?,
        })
    }

    fn times_ms(&self) -> (u64, u64, u64) {
        (to_ms(self.created), to_ms(self.updated), to_ms(self.fresh_until))
    }
}

/// A response being written into the cache, readable while it arrives.
#[derive(Debug)]
struct Fill {
    id: u64,
    key: u128,
    seq: u64,
    path: Arc<str>,
    meta: Meta,
    from_body: Option<BodyKind>,
    state: Mutex<FillState>,
    notify: tokio::sync::watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct FillState {
    chunks: Vec<Bytes>,
    len: u64,
    done: FillDone,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum FillDone {
    #[default]
    Writing,
    Complete,
    Failed,
}

#[derive(Debug, Default)]
struct Fills {
    by_key: HashMap<u128, u64>,
    by_id: HashMap<u64, Arc<Fill>>,
}

/// The storage. Built once per edge and leaked: Pingora wants `&'static`.
pub(crate) struct Store {
    /// Weighted in pages; its listener ([`Leaves`]) counts the objects and evictions.
    memory: foyer_memory::Cache<u128, Arc<Object>>,
    memory_objects: Arc<AtomicU64>,
    memory_max_object: u64,
    max_object: u64,
    fills: Mutex<Fills>,
    next_fill: AtomicU64,
    disk: Option<Disk>,
    purges: Arc<PurgeIndex>,
    ttl: TtlConfig,
    metrics: Arc<CacheMetrics>,
    /// Sealed bodies alive, each an open file descriptor and a mapping, and their cap:
    /// a quarter of the descriptor limit (raised to its hard maximum at start; the
    /// rest is left to connections) and half of `vm.max_map_count`. Past it, bodies
    /// stay in plain memory.
    sealed_open: Arc<AtomicU64>,
    sealed_cap: u64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("memory_pages", &self.memory.usage())
            .field("disk", &self.disk.as_ref().map(|d| &d.dir))
            .finish_non_exhaustive()
    }
}

/// The disk tier.
struct Disk {
    dir: PathBuf,
    lru: &'static Lru<LRU_SHARDS>,
    /// Objects whose file is being written: key → seq. A purge or eviction meanwhile
    /// removes the entry, and the writer then drops its file instead of renaming it in.
    pending: Mutex<HashMap<u128, u64>>,
    tmp_seq: AtomicU64,
}

impl Store {
    /// Builds the storage; with a disk tier, scans its directory (creating it if needed).
    pub(crate) fn open(
        config: &CacheConfig,
        purges: Arc<PurgeIndex>,
        metrics: Arc<CacheMetrics>,
    ) -> std::result::Result<Store, StoreError> {
        let budget = usize::try_from((config.memory_bytes / PAGE).max(1)).unwrap_or(usize::MAX);
        let memory_objects = Arc::new(AtomicU64::new(0));
        // Shards split the budget: each keeps room for 64 of the largest objects.
        let largest = usize::try_from(pages(config.memory_max_object_bytes.min(MEMORY_OBJECT_CAP))).unwrap_or(1);
        let shards = (budget / largest.saturating_mul(64).max(1)).clamp(1, MEMORY_SHARDS);
        let memory = foyer_memory::Cache::builder(budget)
            .with_shards(shards)
            .with_weighter(|_: &u128, o: &Arc<Object>| obj_pages(o))
            .with_eviction_config(S3FifoConfig::default())
            .with_event_listener(Arc::new(Leaves { objects: memory_objects.clone(), metrics: metrics.clone() }))
            .build();
        let disk = match config.disk() {
            None => None,
            Some(dir) => Some(Disk::open(dir, config.disk_bytes, &purges, &metrics)?),
        };
        Ok(Store {
            memory,
            memory_objects,
            memory_max_object: config.memory_max_object_bytes.min(MEMORY_OBJECT_CAP),
            max_object: config.max_object_bytes,
            fills: Mutex::new(Fills::default()),
            next_fill: AtomicU64::new(1),
            disk,
            purges,
            ttl: config.ttl.clone(),
            metrics,
            sealed_open: Arc::new(AtomicU64::new(0)),
            sealed_cap: (stile_zerocopy::raise_nofile_limit() / 4).min(max_map_count() / 2),
        })
    }

    /// A body for the memory tier from a fill's chunks: sealed from [`SEAL_MIN`] bytes
    /// (while under the cap), else one contiguous `Bytes`.
    fn body_of(&self, chunks: &[Bytes]) -> (Bytes, Option<Arc<Counted>>) {
        let slot = total(chunks) >= SEAL_MIN
            && self
                .sealed_open
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < self.sealed_cap).then_some(n + 1))
                .is_ok();
        if slot {
            // The slot is taken: `Counted` gives it back when it drops.
            match Sealed::new(chunks) {
                Ok(s) => {
                    let c = Arc::new(Counted { sealed: Arc::new(s), count: self.sealed_open.clone() });
                    return (c.sealed.bytes(), Some(c));
                }
                Err(e) => {
                    self.sealed_open.fetch_sub(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "cache.seal_failed");
                }
            }
        }
        (concat(chunks), None)
    }

    /// A fresh, complete object of the memory tier, for the proxy to answer without
    /// Pingora's cache machinery: `None` for anything else (a fill in progress,
    /// stale, purged, or not in memory), which then takes the usual lookup.
    pub(crate) fn direct(&self, key: &CacheKey, now: SystemTime) -> Option<DirectHit> {
        let k = u128::from_be_bytes(key.combined_bin());
        if self.fills().by_key.contains_key(&k) {
            return None;
        }
        let obj = self.memory_get(k)?;
        if now >= obj.meta.fresh_until || self.purges.is_purged(&obj.path, obj.seq) {
            return None;
        }
        if let Some(d) = &self.disk {
            d.lru.access(&entry(k), obj_weight(&obj), obj.meta.fresh_until);
        }
        let mut header = obj.meta.header.clone();
        let age = now.duration_since(obj.meta.updated).unwrap_or_default().as_secs();
        header.insert_header(http::header::AGE, age).ok()?;
        header.remove_header(&http::header::TRANSFER_ENCODING);
        header.insert_header(http::header::CONTENT_LENGTH, obj.body.len()).ok()?;
        header.set_version(http::Version::HTTP_11);
        Some(DirectHit { header, body: obj.body.clone(), sealed: obj.sealed.clone() })
    }

    /// The disk tier's eviction manager, which the proxy hands to Pingora.
    pub(crate) fn eviction(&self) -> Option<&'static (dyn EvictionManager + Sync)> {
        self.disk.as_ref().map(|d| d.lru as &'static (dyn EvictionManager + Sync))
    }

    /// Publishes the storage gauges.
    pub(crate) fn observe(&self) {
        let m = &self.metrics;
        m.stored("memory", self.memory.usage() as u64 * PAGE, self.memory_objects.load(Ordering::Relaxed));
        if let Some(d) = &self.disk {
            m.stored("disk", d.lru.total_size() as u64, d.lru.total_items() as u64);
        }
    }

    fn fills(&self) -> MutexGuard<'_, Fills> {
        self.fills.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn memory_get(&self, key: u128) -> Option<Arc<Object>> {
        self.memory.get(&key).map(|e| e.value().clone())
    }

    fn memory_put(&self, obj: Arc<Object>) {
        // Counted before the insert: a replaced object leaves (and is uncounted) inside it.
        self.memory_objects.fetch_add(1, Ordering::Relaxed);
        drop(self.memory.insert(obj.key, obj));
        self.observe();
    }

    /// Removes an object everywhere (purged, evicted or damaged).
    fn remove(&self, key: u128) -> bool {
        let in_memory = self.memory.remove(&key).is_some();
        let on_disk = self.disk.as_ref().is_some_and(|d| d.remove(key));
        self.observe();
        in_memory || on_disk
    }

    fn hit(&self, obj: &Arc<Object>) -> (CacheMeta, HitHandler) {
        let hit =
            CompleteHit { body: Body::Memory(obj.body.clone()), pos: 0, end: obj.body.len(), weight: obj_weight(obj) };
        (obj.meta.to_cache_meta(), Box::new(hit))
    }

    async fn lookup_disk(&'static self, key: u128) -> Result<Option<(CacheMeta, HitHandler)>> {
        let Some(disk) = &self.disk else { return Ok(None) };
        let path = disk.file(key);
        let memory_max = self.memory_max_object;
        let read = tokio::task::spawn_blocking(move || read_object(&path, key, memory_max))
            .await
            .map_err(|e| Error::because(ErrorType::InternalError, "cache disk read", e))?;
        let found = match read {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(None),
            Err(e) => {
                tracing::warn!(error = %e, "cache.disk_refused");
                self.metrics.disk_error("corrupt");
                self.remove(key);
                return Ok(None);
            }
        };
        if self.purges.is_purged(&found.head.path, found.head.seq) {
            self.remove(key);
            return Ok(None);
        }
        let meta =
            Meta::from_head(&found.head).map_err(|e| Error::because(ErrorType::InternalError, "cache head", e))?;
        match found.body {
            Some(body) => {
                let (body, sealed) = self.body_of(&[body]);
                let obj =
                    Arc::new(Object { key, seq: found.head.seq, path: found.head.path.into(), meta, body, sealed });
                self.memory_put(obj.clone());
                Ok(Some(self.hit(&obj)))
            }
            None => {
                let weight = (found.head.body_offset() + found.head.body_len) as usize;
                let len = found.head.body_len as usize;
                let body = Body::Disk { file: Arc::new(found.file), head: Arc::new(found.head), store: self, key };
                let hit = CompleteHit { body, pos: 0, end: len, weight };
                Ok(Some((meta.to_cache_meta(), Box::new(hit))))
            }
        }
    }

    /// Puts a completed object in place: memory (if small enough) and disk. `done`
    /// runs once the object can be looked up there: at once when it went to memory,
    /// else after its file is written (its fill stays readable until then).
    fn install(&'static self, obj: Object, chunks: Vec<Bytes>, done: Box<dyn FnOnce() + Send>) {
        let obj = Arc::new(obj);
        let len = if chunks.is_empty() { obj.body.len() } else { total(&chunks) };
        let in_memory = len as u64 <= self.memory_max_object && obj.body.len() == len;
        if in_memory {
            self.memory_put(obj.clone());
        }
        match &self.disk {
            Some(disk) if in_memory => {
                disk.write(self, obj, chunks, Box::new(|| {}));
                done();
            }
            Some(disk) => disk.write(self, obj, chunks, done),
            None => done(),
        }
    }

    fn unregister(&self, id: u64, key: u128) {
        let mut f = self.fills();
        f.by_id.remove(&id);
        if f.by_key.get(&key) == Some(&id) {
            f.by_key.remove(&key);
        }
    }
}

#[async_trait]
impl Storage for Store {
    async fn lookup(&'static self, key: &CacheKey, _trace: &SpanHandle) -> Result<Option<(CacheMeta, HitHandler)>> {
        let k = u128::from_be_bytes(key.combined_bin());
        // A fill in progress first: a fresh answer being written wins over an expired one.
        let fill = {
            let f = self.fills();
            f.by_key.get(&k).and_then(|id| f.by_id.get(id)).cloned()
        };
        if let Some(fill) = fill
            && !self.purges.is_purged(&fill.path, fill.seq)
        {
            return Ok(Some(partial_hit(fill)));
        }
        if let Some(obj) = self.memory_get(k) {
            if self.purges.is_purged(&obj.path, obj.seq) {
                self.remove(k);
                return Ok(None);
            }
            return Ok(Some(self.hit(&obj)));
        }
        self.lookup_disk(k).await
    }

    async fn lookup_streaming_write(
        &'static self,
        key: &CacheKey,
        tag: Option<&[u8]>,
        trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let Some(id) = tag.and_then(|t| <[u8; 8]>::try_from(t).ok()).map(u64::from_be_bytes) else {
            return self.lookup(key, trace).await;
        };
        let fill = self.fills().by_id.get(&id).cloned();
        Ok(fill.map(partial_hit))
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        let k = u128::from_be_bytes(key.combined_bin());
        let path = key.extensions.get::<KeyInfo>().map_or_else(|| Arc::from(""), |i| i.path.clone());
        let id = self.next_fill.fetch_add(1, Ordering::Relaxed);
        let (notify, _) = tokio::sync::watch::channel(0);
        let fill = Arc::new(Fill {
            id,
            key: k,
            seq: self.purges.next_seq(),
            path,
            meta: Meta::from_cache_meta(meta),
            from_body: meta.extensions().get::<BodyKind>().copied(),
            state: Mutex::new(FillState::default()),
            notify,
        });
        {
            let mut f = self.fills();
            if let Some(old) = f.by_key.insert(k, id) {
                // A second fill of one key (the first one's object was purged): readers
                // of the first keep theirs; new ones get this one.
                let _ = old;
            }
            f.by_id.insert(id, fill.clone());
        }
        Ok(Box::new(FillWriter { fill, store: self, id_bytes: id.to_be_bytes(), finished: false }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        kind: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let k = u128::from_be_bytes(target.key().combined_bin());
        let removed = self.remove(k);
        if matches!(kind, PurgeType::Eviction) && removed {
            self.metrics.evicted("disk");
        }
        Ok(if removed { PurgeOutcome::Purged(None) } else { PurgeOutcome::NotFound })
    }

    async fn update_meta(&'static self, key: &CacheKey, meta: &CacheMeta, _trace: &SpanHandle) -> Result<bool> {
        let k = u128::from_be_bytes(key.combined_bin());
        let new_meta = Meta::from_cache_meta(meta);
        if let Some(obj) = self.memory_get(k) {
            let updated = Object {
                key: k,
                seq: obj.seq,
                path: obj.path.clone(),
                meta: new_meta,
                body: obj.body.clone(),
                sealed: obj.sealed.clone(),
            };
            let chunks = vec![obj.body.clone()];
            self.install(updated, chunks, Box::new(|| {}));
            return Ok(true);
        }
        let Some(disk) = &self.disk else { return Ok(false) };
        let path = disk.file(k);
        let read = tokio::task::spawn_blocking(move || read_object(&path, k, u64::MAX))
            .await
            .map_err(|e| Error::because(ErrorType::InternalError, "cache disk read", e))?;
        match read {
            Ok(Some(Found { head, body: Some(body), .. })) => {
                let (mem, sealed) = if body.len() as u64 <= self.memory_max_object {
                    self.body_of(std::slice::from_ref(&body))
                } else {
                    (body.clone(), None)
                };
                let obj = Object { key: k, seq: head.seq, path: head.path.into(), meta: new_meta, body: mem, sealed };
                self.install(obj, vec![body], Box::new(|| {}));
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn support_streaming_partial_write(&self) -> bool {
        true
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

fn partial_hit(fill: Arc<Fill>) -> (CacheMeta, HitHandler) {
    let meta = fill.meta.to_cache_meta();
    let rx = fill.notify.subscribe();
    (meta, Box::new(PartialHit { fill, next: 0, offset: 0, start: 0, end: None, rx }))
}

// ---------------------------------------------------------------- hits

/// A hit on a complete object: from memory (the body itself, sliced for a
/// range: no copy) or from a disk file (read block by block, each block
/// checked before a byte of it is served). Both seek, for ranges.
struct CompleteHit {
    body: Body,
    /// Body bytes `[pos, end)` remain to be served.
    pos: usize,
    end: usize,
    weight: usize,
}

enum Body {
    Memory(Bytes),
    Disk { file: Arc<std::fs::File>, head: Arc<Head>, store: &'static Store, key: u128 },
}

impl Body {
    fn len(&self) -> usize {
        match self {
            Body::Memory(b) => b.len(),
            Body::Disk { head, .. } => head.body_len as usize,
        }
    }
}

#[async_trait]
impl HandleHit for CompleteHit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let (file, head, store, key) = match &self.body {
            Body::Memory(b) => {
                let out = b.slice(self.pos..self.end);
                self.pos = self.end;
                return Ok(Some(out));
            }
            Body::Disk { file, head, store, key } => (file.clone(), head.clone(), *store, *key),
        };
        let (pos, end) = (self.pos, self.end.min(self.pos + DISK_READ));
        let read = tokio::task::spawn_blocking(move || read_range(&file, &head, pos, end))
            .await
            .map_err(|e| Error::because(ErrorType::InternalError, "cache disk read", e))?;
        match read {
            Ok(b) => {
                self.pos = end;
                Ok(Some(b))
            }
            Err(e) => {
                store.metrics.disk_error("corrupt");
                store.remove(key);
                Error::e_because(ErrorType::InternalError, "cache disk block refused", e)
            }
        }
    }

    async fn finish(self: Box<Self>, _: &'static (dyn Storage + Sync), _: &CacheKey, _: &SpanHandle) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        let len = self.body.len();
        if start >= len {
            return Error::e_explain(ErrorType::InternalError, format!("seek start {start} beyond {len}"));
        }
        self.pos = start;
        self.end = end.map_or(len, |e| e.min(len)).max(start);
        Ok(())
    }

    fn get_eviction_weight(&self) -> usize {
        self.weight
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// A hit on a fill in progress: chunks as they arrive, the byte range `[start, end)`
/// of them after a seek (a range request waits only for the bytes it asked for).
struct PartialHit {
    fill: Arc<Fill>,
    /// Index of the next chunk to read.
    next: usize,
    /// Body offset of chunk `next`.
    offset: usize,
    start: usize,
    end: Option<usize>,
    rx: tokio::sync::watch::Receiver<u64>,
}

impl PartialHit {
    /// The part of chunk `c` (at body offset `at`) inside the range; `Err` past its end.
    fn clip(&self, c: &Bytes, at: usize) -> std::result::Result<Option<Bytes>, ()> {
        let end = self.end.unwrap_or(usize::MAX);
        if at >= end {
            return Err(());
        }
        let (from, to) = (self.start.max(at), end.min(at + c.len()));
        Ok((from < to).then(|| c.slice(from - at..to - at)))
    }
}

#[async_trait]
impl HandleHit for PartialHit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        loop {
            if self.end.is_some_and(|e| self.offset >= e) {
                return Ok(None);
            }
            self.rx.borrow_and_update();
            {
                let s = self.fill.state.lock().unwrap_or_else(PoisonError::into_inner);
                while let Some(c) = s.chunks.get(self.next) {
                    let at = self.offset;
                    self.next += 1;
                    self.offset += c.len();
                    match self.clip(c, at) {
                        Ok(Some(part)) => return Ok(Some(part)),
                        Ok(None) => {}
                        Err(()) => return Ok(None),
                    }
                }
                match s.done {
                    FillDone::Complete => return Ok(None),
                    FillDone::Failed => return Error::e_explain(ErrorType::InternalError, "cache fill failed"),
                    FillDone::Writing => {}
                }
            }
            if self.rx.changed().await.is_err() {
                let s = self.fill.state.lock().unwrap_or_else(PoisonError::into_inner);
                if s.done == FillDone::Writing && s.chunks.len() <= self.next {
                    return Error::e_explain(ErrorType::InternalError, "cache fill abandoned");
                }
            }
        }
    }

    async fn finish(self: Box<Self>, _: &'static (dyn Storage + Sync), _: &CacheKey, _: &SpanHandle) -> Result<()> {
        Ok(())
    }

    fn should_count_access(&self) -> bool {
        false
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        // Pingora checked the range against the stored Content-Length.
        if end.is_some_and(|e| e < start) {
            return Error::e_explain(ErrorType::InternalError, format!("seek end before start {start}"));
        }
        (self.next, self.offset, self.start, self.end) = (0, 0, start, end);
        Ok(())
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

// ---------------------------------------------------------------- fills

/// The miss handler: writes one response into its [`Fill`].
struct FillWriter {
    fill: Arc<Fill>,
    store: &'static Store,
    id_bytes: [u8; 8],
    finished: bool,
}

impl FillWriter {
    fn end(&self, done: FillDone) {
        {
            let mut s = self.fill.state.lock().unwrap_or_else(PoisonError::into_inner);
            if s.done == FillDone::Writing {
                s.done = done;
            }
        }
        self.fill.notify.send_modify(|v| *v += 1);
    }

    fn unregister(&self) {
        self.store.unregister(self.fill.id, self.fill.key);
    }
}

#[async_trait]
impl HandleMiss for FillWriter {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        {
            let mut s = self.fill.state.lock().unwrap_or_else(PoisonError::into_inner);
            s.len += data.len() as u64;
            if s.len > self.store.max_object {
                drop(s);
                return Error::e_explain(ErrorType::InternalError, "cache fill larger than cache.max_object_bytes");
            }
            s.chunks.push(data);
        }
        self.fill.notify.send_modify(|v| *v += 1);
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<MissFinishType> {
        self.finished = true;
        let chunks = {
            let s = self.fill.state.lock().unwrap_or_else(PoisonError::into_inner);
            s.chunks.clone()
        };
        let fill = &self.fill;
        let len = total(&chunks);
        // Large objects stay in chunks (they go to disk only): no copy of them is made.
        let (body, sealed) = if len as u64 <= self.store.memory_max_object {
            self.store.body_of(&chunks)
        } else if fill.from_body.is_some() {
            (concat(&chunks), None)
        } else {
            (Bytes::new(), None)
        };
        let mut meta = fill.meta.clone();
        let mut keep = !self.store.purges.is_purged(&fill.path, fill.seq);
        if let Some(kind) = fill.from_body {
            let ttl = body_ttl(kind, &body, &self.store.ttl);
            meta.fresh_until = meta.updated + Duration::from_secs(ttl.into());
            keep &= ttl > 0;
        }
        let size = len + header_bytes(&meta.header) as usize + format::FIXED;
        self.end(FillDone::Complete);
        if keep {
            let obj = Object { key: fill.key, seq: fill.seq, path: fill.path.clone(), meta, body, sealed };
            // The fill leaves the table once the object is in place: no gap where a lookup finds neither.
            let (store, id, key) = (self.store, fill.id, fill.key);
            self.store.install(obj, chunks, Box::new(move || store.unregister(id, key)));
        } else {
            self.unregister();
        }
        if !keep {
            return Error::e_explain(ErrorType::InternalError, "cache fill not kept (purged or zero lifetime)");
        }
        Ok(MissFinishType::Created(size))
    }

    fn streaming_write_tag(&self) -> Option<&[u8]> {
        Some(&self.id_bytes)
    }
}

impl Drop for FillWriter {
    fn drop(&mut self) {
        if !self.finished {
            self.end(FillDone::Failed);
            self.unregister();
        }
    }
}

// ---------------------------------------------------------------- disk

impl Disk {
    fn open(
        dir: &Path,
        budget: u64,
        purges: &PurgeIndex,
        metrics: &CacheMetrics,
    ) -> std::result::Result<Disk, StoreError> {
        let err = |source| StoreError::Dir { path: dir.to_owned(), source };
        std::fs::create_dir_all(dir.join("tmp")).map_err(err)?;
        // Probe that the directory is writable before anything binds.
        let probe = dir.join("tmp").join("probe");
        std::fs::write(&probe, b"x").map_err(err)?;
        let _ = std::fs::remove_file(&probe);
        for e in std::fs::read_dir(dir.join("tmp")).map_err(err)?.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
        let budget = usize::try_from(budget).unwrap_or(usize::MAX);
        let lru: &'static Lru<LRU_SHARDS> = Box::leak(Box::new(Lru::with_capacity(budget, 1 << 16)));
        let disk = Disk { dir: dir.to_owned(), lru, pending: Mutex::new(HashMap::new()), tmp_seq: AtomicU64::new(0) };
        disk.scan(purges, metrics).map_err(err)?;
        Ok(disk)
    }

    /// Admits every valid file to the eviction manager, oldest first; deletes damaged,
    /// purged and over-budget ones; starts the sequence numbers above every file's.
    fn scan(&self, purges: &PurgeIndex, metrics: &CacheMetrics) -> std::io::Result<()> {
        let mut found: Vec<(u64, u128, usize)> = Vec::new();
        let mut max_seq = 0;
        for shard in std::fs::read_dir(&self.dir)?.flatten() {
            let name = shard.file_name();
            if name.len() != 2 || !shard.path().is_dir() {
                continue;
            }
            for f in std::fs::read_dir(shard.path())?.flatten() {
                let path = f.path();
                let key =
                    f.file_name().to_str().and_then(|n| u128::from_str_radix(n, 16).ok().filter(|_| n.len() == 32));
                let checked = key.and_then(|key| read_head(&path).ok().map(|(head, len)| (key, head, len)));
                match checked {
                    Some((key, head, len))
                        if head.key == key.to_be_bytes() && !purges.is_purged(&head.path, head.seq) =>
                    {
                        max_seq = max_seq.max(head.seq);
                        found.push((head.seq, key, len as usize));
                    }
                    other => {
                        if other.is_none() {
                            metrics.disk_error("corrupt");
                        }
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
        }
        found.sort_unstable();
        let admitted = found.len();
        for (_, key, size) in found {
            for evicted in self.lru.admit(entry(key), size, SystemTime::UNIX_EPOCH) {
                let _ = std::fs::remove_file(self.file(u128::from_be_bytes(evicted.key().primary)));
                metrics.evicted("disk");
            }
        }
        purges.loaded(max_seq);
        tracing::info!(
            cache.dir = %self.dir.display(), cache.objects = admitted, cache.bytes = self.lru.total_size(), "cache.disk_scanned"
        );
        Ok(())
    }

    fn file(&self, key: u128) -> PathBuf {
        let hex = format!("{key:032x}");
        self.dir.join(&hex[..2]).join(hex)
    }

    /// Deletes an object's file (and any write of it in progress); whether there was one.
    fn remove(&self, key: u128) -> bool {
        let pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner).remove(&key).is_some();
        let existed = std::fs::remove_file(self.file(key)).is_ok();
        self.lru.remove((&entry(key)).into());
        pending || existed
    }

    /// Writes an object's file off the request path (temporary file, then rename).
    fn write(&self, store: &'static Store, obj: Arc<Object>, chunks: Vec<Bytes>, done: Box<dyn FnOnce() + Send>) {
        if !Head::fits(&obj.path, &obj.meta.header, obj.body.len().max(total(&chunks)) as u64) {
            done();
            return;
        }
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).insert(obj.key, obj.seq);
        let tmp =
            self.dir.join("tmp").join(format!("{:032x}.{}", obj.key, self.tmp_seq.fetch_add(1, Ordering::Relaxed)));
        let dest = self.file(obj.key);
        tokio::task::spawn_blocking(move || {
            let Some(disk) = &store.disk else { return };
            let chunks = if chunks.is_empty() { vec![obj.body.clone()] } else { chunks };
            let body: Vec<&[u8]> = chunks.iter().map(|c| &c[..]).collect();
            let head = Head::new(
                obj.key.to_be_bytes(),
                obj.seq,
                obj.meta.times_ms(),
                obj.meta.swr,
                obj.meta.sie,
                &obj.meta.header,
                &obj.path,
                &body,
            );
            let written = write_file(&tmp, &dest, &head.encode(), &body, || {
                disk.pending.lock().unwrap_or_else(PoisonError::into_inner).get(&obj.key) == Some(&obj.seq)
            });
            disk.pending.lock().unwrap_or_else(PoisonError::into_inner).remove(&obj.key);
            if let Err(e) = written {
                let _ = std::fs::remove_file(&tmp);
                tracing::warn!(error = %e, "cache.disk_write_failed");
                store.metrics.disk_error("write");
            }
            store.observe();
            done();
        });
    }
}

fn write_file(
    tmp: &Path,
    dest: &Path,
    head: &[u8],
    body: &[&[u8]],
    still_wanted: impl Fn() -> bool,
) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::with_capacity(256 << 10, std::fs::File::create(tmp)?);
    f.write_all(head)?;
    for c in body {
        f.write_all(c)?;
    }
    f.flush()?;
    drop(f);
    if !still_wanted() {
        std::fs::remove_file(tmp)?;
        return Ok(());
    }
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::rename(tmp, dest)
}

/// An object read from disk: its head, and its body when small enough to promote.
struct Found {
    head: Head,
    body: Option<Bytes>,
    file: std::fs::File,
}

/// Reads and checks a file's head (and its length).
fn read_head(path: &Path) -> std::result::Result<(Head, u64), DiskError> {
    let file = std::fs::File::open(path)?;
    read_head_of(&file)
}

fn read_head_of(file: &std::fs::File) -> std::result::Result<(Head, u64), DiskError> {
    let len = file.metadata()?.len();
    let mut fixed = [0; format::FIXED];
    file.read_exact_at(&mut fixed, 0).map_err(|_| format::FormatError::Truncated)?;
    let head_len = format::head_len(&fixed)?;
    let mut buf = vec![0; head_len];
    file.read_exact_at(&mut buf, 0).map_err(|_| format::FormatError::Truncated)?;
    let head = format::decode_head(&buf)?;
    if head.body_offset() + head.body_len != len {
        return Err(format::FormatError::Truncated.into());
    }
    Ok((head, len))
}

/// Opens an object's file; `Ok(None)` when there is none.
fn read_object(path: &Path, key: u128, promote_max: u64) -> std::result::Result<Option<Found>, DiskError> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let (head, _) = read_head_of(&file)?;
    if head.key != key.to_be_bytes() {
        return Err(format::FormatError::Field.into());
    }
    let body = if head.body_len <= promote_max {
        let b = read_range(&file, &head, 0, head.body_len as usize)?;
        Some(b)
    } else {
        None
    };
    Ok(Some(Found { head, body, file }))
}

/// Body bytes `[start, end)`, reading whole blocks and checking each.
fn read_range(file: &std::fs::File, head: &Head, start: usize, end: usize) -> std::result::Result<Bytes, DiskError> {
    if start >= end {
        return Ok(Bytes::new());
    }
    let first = start / BLOCK;
    let last = (end - 1) / BLOCK;
    let from = first * BLOCK;
    let to = ((last + 1) * BLOCK).min(head.body_len as usize);
    let mut buf = BytesMut::zeroed(to - from);
    file.read_exact_at(&mut buf, head.body_offset() + from as u64)?;
    for (i, block) in buf.chunks(BLOCK).enumerate() {
        if !head.block_ok(first + i, block) {
            return Err(format::FormatError::Checksum.into());
        }
    }
    Ok(buf.freeze().slice(start - from..end - from))
}

/// A disk read that failed.
#[derive(Debug, thiserror::Error)]
enum DiskError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Format(#[from] format::FormatError),
}

// ---------------------------------------------------------------- helpers

fn entry(key: u128) -> CacheEntryKey {
    CacheEntryKey::key_only(pingora::cache::key::CompactCacheKey {
        primary: key.to_be_bytes() as HashBinary,
        variance: None,
        user_tag: "".into(),
    })
}

fn concat(chunks: &[Bytes]) -> Bytes {
    match chunks {
        [] => Bytes::new(),
        [one] => one.clone(),
        many => {
            let mut b = BytesMut::with_capacity(total(many));
            for c in many {
                b.extend_from_slice(c);
            }
            b.freeze()
        }
    }
}

/// The kernel's limit on a process's memory mappings (`vm.max_map_count`): each
/// sealed body is one.
fn max_map_count() -> u64 {
    std::fs::read_to_string("/proc/sys/vm/max_map_count").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(65_530)
}

fn total(chunks: &[Bytes]) -> usize {
    chunks.iter().map(Bytes::len).sum()
}

fn pages(bytes: u64) -> u64 {
    bytes.div_ceil(PAGE).max(1)
}

fn header_bytes(h: &ResponseHeader) -> u64 {
    h.headers.iter().map(|(n, v)| (n.as_str().len() + v.len() + 4) as u64).sum::<u64>() + 64
}

/// An object's weight in the memory tier: its pages.
fn obj_pages(o: &Object) -> usize {
    usize::try_from(pages(o.body.len() as u64 + header_bytes(&o.meta.header))).unwrap_or(usize::MAX)
}

/// Counts the objects leaving the memory tier, and its evictions.
struct Leaves {
    objects: Arc<AtomicU64>,
    metrics: Arc<CacheMetrics>,
}

impl EventListener for Leaves {
    type Key = u128;
    type Value = Arc<Object>;

    fn on_leave(&self, reason: Event, _key: &u128, _value: &Arc<Object>) {
        self.objects.fetch_sub(1, Ordering::Relaxed);
        if matches!(reason, Event::Evict) {
            self.metrics.evicted("memory");
        }
    }
}

fn obj_weight(o: &Object) -> usize {
    o.body.len() + header_bytes(&o.meta.header) as usize + format::FIXED
}

fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn from_ms(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(chunks: &[&'static [u8]], done: FillDone) -> Arc<Fill> {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let header = ResponseHeader::build(200, None).expect("header");
        let meta = Meta { created: now, updated: now, fresh_until: now, swr: 0, sie: 0, header };
        let (notify, _) = tokio::sync::watch::channel(0);
        let state = FillState {
            chunks: chunks.iter().map(|c| Bytes::from_static(c)).collect(),
            len: chunks.iter().map(|c| c.len() as u64).sum(),
            done,
        };
        Arc::new(Fill {
            id: 1,
            key: 1,
            seq: 1,
            path: Arc::from("/p"),
            meta,
            from_body: None,
            state: Mutex::new(state),
            notify,
        })
    }

    async fn read_all(hit: &mut HitHandler) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(b) = hit.read_body().await.expect("read") {
            assert!(!b.is_empty(), "no empty chunks");
            out.extend_from_slice(&b);
        }
        out
    }

    #[tokio::test]
    async fn a_fill_in_progress_serves_ranges_across_its_chunks() {
        let f = fill(&[b"0123", b"4567", b"89"], FillDone::Complete);
        let (_, mut hit) = partial_hit(f.clone());
        assert!(hit.can_seek());
        assert_eq!(read_all(&mut hit).await, b"0123456789");
        for (start, end, want) in [
            (0, Some(1), &b"0"[..]),
            (3, Some(5), b"34"),
            (4, Some(8), b"4567"),
            (5, None, b"56789"),
            (9, Some(10), b"9"),
        ] {
            let (_, mut hit) = partial_hit(f.clone());
            hit.seek(start, end).expect("seek");
            assert_eq!(read_all(&mut hit).await, want, "{start}..{end:?}");
        }
        let (_, mut hit) = partial_hit(f);
        assert_eq!(hit.seek(5, Some(4)).unwrap_err().etype(), &ErrorType::InternalError);
    }

    #[tokio::test]
    async fn a_range_of_a_fill_ends_without_waiting_for_the_rest() {
        // Still writing: a range inside what arrived ends at once; a read past it waits.
        let f = fill(&[b"abcd", b"efgh"], FillDone::Writing);
        let (_, mut hit) = partial_hit(f.clone());
        hit.seek(2, Some(6)).expect("seek");
        let got = tokio::time::timeout(Duration::from_secs(5), read_all(&mut hit)).await.expect("not waiting");
        assert_eq!(got, b"cdef");
        let (_, mut hit) = partial_hit(f.clone());
        hit.seek(6, None).expect("seek");
        assert_eq!(hit.read_body().await.expect("read").as_deref(), Some(&b"gh"[..]));
        let more = tokio::spawn(async move { hit.read_body().await.map(|b| b.map(|b| b.to_vec())) });
        {
            let mut s = f.state.lock().unwrap_or_else(PoisonError::into_inner);
            s.chunks.push(Bytes::from_static(b"ij"));
        }
        f.notify.send_modify(|v| *v += 1);
        let next = tokio::time::timeout(Duration::from_secs(5), more).await.expect("woken").expect("task");
        assert_eq!(next.expect("read"), Some(b"ij".to_vec()));
    }
}
