//! The embedded backend: one redb file. Each [`Store::commit`] is one write
//! transaction committed with `Durability::Immediate` (fsync) before it
//! returns. Mint audit events are group-committed: [`Store::record_audit`]
//! queues them in memory and one non-durable write transaction per
//! [`AUDIT_GROUP_WINDOW`] writes them all (the next durable commit, at the
//! latest the periodic prune, makes them durable; a durable commit or an audit
//! read takes the queue with it). Values are JSON. redb calls block, so they
//! run on tokio's blocking pool.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{
    AssetQuery, AuditQuery, Batch, Committed, LogRead, Pruned, Retention, Snapshot, Store, StoreError, StoreFuture,
    Write,
};
use crate::locks;
use crate::model::{
    ApiKey, Asset, AuditEvent, Change, ChangeKind, ForeignKey, KeyState, MAX_FOREIGN_KEYS, Purge, Revocation,
    SigningKey,
};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const API_KEYS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("api_keys");
const API_KEY_NAMES: TableDefinition<&str, &[u8]> = TableDefinition::new("api_key_names");
const SIGNING_KEYS: TableDefinition<u32, &[u8]> = TableDefinition::new("signing_keys");
/// Foreign keys by `<format> <name>` ([`ForeignKey::id`]).
const FOREIGN_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("foreign_keys");
const ASSETS: TableDefinition<&str, &[u8]> = TableDefinition::new("assets");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const REVOCATIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("revocations");
const PURGES: TableDefinition<u64, &[u8]> = TableDefinition::new("purges");
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");

/// Newest change log version.
const META_VERSION: &str = "log.version";
/// Highest version of a purge dropped by retention.
const META_PURGE_FLOOR: &str = "purge.floor";
/// No stored revocation expires before this (absent: unknown), so a prune
/// before it need not read the revocations: at millions of them that read is
/// seconds of JSON decoding, once a `prune_interval_secs`.
const META_REVOCATION_MIN_EXPIRY: &str = "revocations.min_expiry";
/// Last audit sequence number handed out.
const META_AUDIT_SEQ: &str = "audit.seq";

/// How long queued mint audit events wait for companions before one write
/// transaction records them all.
pub(crate) const AUDIT_GROUP_WINDOW: Duration = Duration::from_millis(5);

/// Queued audit events past which `record_audit` writes them itself before
/// returning (and fails when the write does): memory stays bounded and a
/// store that cannot write fails mints instead of dropping their audit trail.
const AUDIT_QUEUE_MAX: usize = 16_384;

/// redb's page cache (reads, and up to half of it written pages before a
/// commit). redb's default, 1 GiB, fills up on any scan of a large store
/// (the live set's read of millions of revocations at start) and stays
/// resident; the control plane reads mostly the log's tail, the keys and
/// single records, which this holds, and the operating system caches the
/// file besides.
const CACHE_BYTES: usize = 64 << 20;

/// The redb backend.
#[derive(Clone)]
pub struct RedbStore {
    db: Arc<Database>,
    audit: Arc<AuditQueue>,
}

/// Mint audit events waiting for their group commit.
#[derive(Debug, Default)]
struct AuditQueue {
    events: Mutex<Vec<AuditEvent>>,
    /// A flush task is scheduled.
    scheduled: AtomicBool,
    /// Held from taking events until their transaction ended: a reader that
    /// takes it after finding the queue empty knows no taken event is still
    /// on its way to the table. Lock order: redb's writer, then this.
    writing: Mutex<()>,
}

impl AuditQueue {
    fn take(&self) -> Vec<AuditEvent> {
        std::mem::take(&mut *locks::lock(&self.events))
    }

    /// Puts events whose write failed back in front of newer ones.
    fn put_back(&self, mut events: Vec<AuditEvent>) {
        let mut q = locks::lock(&self.events);
        events.append(&mut q);
        *q = events;
    }

    /// Writes the queued events into `txn`, then runs `then`, which commits it.
    /// The events go back in the queue when the write or `then` fails.
    fn write_with<T>(
        &self,
        txn: redb::WriteTransaction,
        then: impl FnOnce(redb::WriteTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let _writing = locks::lock(&self.writing);
        let mut events = self.take();
        let result = append_audit(&txn, &mut events).and_then(|()| then(txn));
        if result.is_err() && !events.is_empty() {
            // Their sequence numbers are assigned again when they are written.
            self.put_back(events);
        }
        result
    }
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore").finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Opens (or creates) the database file and its tables. The file is made
    /// readable by its owner only, since it holds signing keys.
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| failed(format!("opening {}: {e}", path.display())))?;
        restrict_permissions(path)?;
        let txn = db.begin_write().map_err(backend)?;
        {
            txn.open_table(META).map_err(backend)?;
            txn.open_table(API_KEYS).map_err(backend)?;
            txn.open_table(API_KEY_NAMES).map_err(backend)?;
            txn.open_table(SIGNING_KEYS).map_err(backend)?;
            txn.open_table(FOREIGN_KEYS).map_err(backend)?;
            txn.open_table(ASSETS).map_err(backend)?;
            txn.open_table(LOG).map_err(backend)?;
            txn.open_table(REVOCATIONS).map_err(backend)?;
            txn.open_table(PURGES).map_err(backend)?;
            txn.open_table(AUDIT).map_err(backend)?;
        }
        txn.commit().map_err(backend)?;
        Ok(RedbStore { db: Arc::new(db), audit: Arc::default() })
    }

    /// Writes the queued audit events in one non-durable transaction.
    /// Keys, purges, version and (with `revocations`) revocations, in one
    /// read transaction so they agree.
    fn read_snapshot(db: &Database, revocations: bool) -> Result<Snapshot, StoreError> {
        let txn = db.begin_read().map_err(backend)?;
        let meta_t = txn.open_table(META).map_err(backend)?;
        let version = meta(&meta_t, META_VERSION)?;
        let purge_floor = meta(&meta_t, META_PURGE_FLOOR)?;
        let keys: Vec<SigningKey> = values(&txn.open_table(SIGNING_KEYS).map_err(backend)?, "signing_keys")?;
        let revocations = match revocations {
            true => values(&txn.open_table(REVOCATIONS).map_err(backend)?, "revocations")?,
            false => Vec::new(),
        };
        let purges = values(&txn.open_table(PURGES).map_err(backend)?, "purges")?;
        let foreign_keys = values(&txn.open_table(FOREIGN_KEYS).map_err(backend)?, "foreign_keys")?;
        Ok(Snapshot {
            version,
            keys: keys.into_iter().filter(|k| k.state != KeyState::Retired).collect(),
            revocations,
            purges,
            purge_floor,
            foreign_keys,
        })
    }

    fn flush_audit(db: &Database, queue: &AuditQueue) -> Result<(), StoreError> {
        {
            // Waits out a write in progress, so everything recorded so far is in the table.
            let _writing = locks::lock(&queue.writing);
            if locks::lock(&queue.events).is_empty() {
                return Ok(());
            }
        }
        let mut txn = db.begin_write().map_err(backend)?;
        txn.set_durability(Durability::None).map_err(backend)?;
        // A failed write aborts the transaction (dropped) and keeps the events queued.
        queue.write_with(txn, |txn| txn.commit().map_err(backend))
    }

    /// Schedules one flush [`AUDIT_GROUP_WINDOW`] from now unless one is
    /// pending. The task holds the database weakly, so a store dropped
    /// meanwhile (its queue already written by the shutdown's final commit)
    /// can be reopened at once.
    fn schedule_flush(&self) {
        if self.audit.scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let (db, queue) = (Arc::downgrade(&self.db), Arc::downgrade(&self.audit));
        tokio::spawn(async move {
            tokio::time::sleep(AUDIT_GROUP_WINDOW).await;
            let flushed = tokio::task::spawn_blocking(move || {
                let (Some(db), Some(queue)) = (Weak::upgrade(&db), Weak::upgrade(&queue)) else { return Ok(()) };
                // Cleared before the queue is taken: events queued from here on schedule another flush.
                queue.scheduled.store(false, Ordering::Release);
                RedbStore::flush_audit(&db, &queue)
            })
            .await;
            match flushed {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "store.audit_flush_failed"),
                Err(e) => tracing::warn!(error = %e, "store.audit_flush_failed"),
            }
        });
    }

    fn blocking<T, F>(&self, f: F) -> StoreFuture<'_, T>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || f(&db)).await.map_err(|e| failed(format!("store task: {e}")))?
        })
    }
}

impl Store for RedbStore {
    fn commit(&self, batch: Batch) -> StoreFuture<'_, Committed> {
        let queue = Arc::clone(&self.audit);
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(backend)?;
            // Queued mint audit events are older than this batch's own: they go first,
            // and this durable commit makes them durable too.
            queue.write_with(txn, |txn| {
                let committed = apply(&txn, batch)?;
                // Dropping `txn` without committing on error aborts it: nothing written.
                txn.commit().map_err(backend)?;
                Ok(committed)
            })
        })
    }

    fn record_audit(&self, events: Vec<AuditEvent>) -> StoreFuture<'_, ()> {
        let queued = {
            let mut q = locks::lock(&self.audit.events);
            q.extend(events);
            q.len()
        };
        if queued < AUDIT_QUEUE_MAX {
            self.schedule_flush();
            return Box::pin(std::future::ready(Ok(())));
        }
        let queue = Arc::clone(&self.audit);
        self.blocking(move |db| RedbStore::flush_audit(db, &queue))
    }

    fn api_key(&self, sha256: [u8; 32]) -> StoreFuture<'_, Option<ApiKey>> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let table = txn.open_table(API_KEYS).map_err(backend)?;
            let value = table.get(sha256.as_slice()).map_err(backend)?;
            value.map(|v| decode("api_keys", v.value())).transpose()
        })
    }

    fn api_keys(&self) -> StoreFuture<'_, Vec<ApiKey>> {
        self.blocking(|db| {
            let txn = db.begin_read().map_err(backend)?;
            let mut keys: Vec<ApiKey> = values(&txn.open_table(API_KEYS).map_err(backend)?, "api_keys")?;
            keys.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(keys)
        })
    }

    fn signing_keys(&self) -> StoreFuture<'_, Vec<SigningKey>> {
        self.blocking(|db| {
            let txn = db.begin_read().map_err(backend)?;
            values(&txn.open_table(SIGNING_KEYS).map_err(backend)?, "signing_keys")
        })
    }

    fn foreign_keys(&self) -> StoreFuture<'_, Vec<ForeignKey>> {
        self.blocking(|db| {
            let txn = db.begin_read().map_err(backend)?;
            values(&txn.open_table(FOREIGN_KEYS).map_err(backend)?, "foreign_keys")
        })
    }

    fn asset(&self, id: String) -> StoreFuture<'_, Option<Asset>> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let table = txn.open_table(ASSETS).map_err(backend)?;
            let value = table.get(id.as_str()).map_err(backend)?;
            value.map(|v| decode("assets", v.value())).transpose()
        })
    }

    fn assets(&self, query: AssetQuery) -> StoreFuture<'_, Vec<Asset>> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let table = txn.open_table(ASSETS).map_err(backend)?;
            let mut out = Vec::new();
            for entry in table.range::<&str>(query.after_id.as_str()..).map_err(backend)? {
                let (k, v) = entry.map_err(backend)?;
                if k.value() == query.after_id {
                    continue;
                }
                let asset: Asset = decode("assets", v.value())?;
                if query.state.is_none_or(|s| s == asset.state) {
                    out.push(asset);
                    if out.len() >= query.limit {
                        break;
                    }
                }
            }
            Ok(out)
        })
    }

    fn version(&self) -> StoreFuture<'_, u64> {
        self.blocking(|db| {
            let txn = db.begin_read().map_err(backend)?;
            meta(&txn.open_table(META).map_err(backend)?, META_VERSION)
        })
    }

    fn log_since(&self, version: u64, limit: usize) -> StoreFuture<'_, LogRead> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let current = meta(&txn.open_table(META).map_err(backend)?, META_VERSION)?;
            if version > current {
                return Ok(LogRead::Ahead { current });
            }
            let log = txn.open_table(LOG).map_err(backend)?;
            let oldest = log.first().map_err(backend)?.map_or(current + 1, |(k, _)| k.value());
            if version + 1 < oldest {
                return Ok(LogRead::Compacted { oldest });
            }
            let mut out = Vec::new();
            for entry in log.range(version + 1..).map_err(backend)?.take(limit) {
                out.push(decode("log", entry.map_err(backend)?.1.value())?);
            }
            Ok(LogRead::Changes(out))
        })
    }

    fn snapshot(&self) -> StoreFuture<'_, super::Snapshot> {
        self.blocking(|db| RedbStore::read_snapshot(db, true))
    }

    fn snapshot_head(&self) -> StoreFuture<'_, super::Snapshot> {
        self.blocking(|db| RedbStore::read_snapshot(db, false))
    }

    fn revocations(&self, after_version: u64, limit: usize) -> StoreFuture<'_, Vec<Revocation>> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let table = txn.open_table(REVOCATIONS).map_err(backend)?;
            let mut out = Vec::new();
            for entry in table.range(after_version.saturating_add(1)..).map_err(backend)?.take(limit) {
                out.push(decode("revocations", entry.map_err(backend)?.1.value())?);
            }
            Ok(out)
        })
    }

    fn audit(&self, q: AuditQuery) -> StoreFuture<'_, Vec<AuditEvent>> {
        let queue = Arc::clone(&self.audit);
        self.blocking(move |db| {
            // Reads see every event recorded before them.
            RedbStore::flush_audit(db, &queue)?;
            let txn = db.begin_read().map_err(backend)?;
            let table = txn.open_table(AUDIT).map_err(backend)?;
            let mut out = Vec::new();
            for entry in table.range(..q.before_seq.unwrap_or(u64::MAX)).map_err(backend)?.rev() {
                let event: AuditEvent = decode("audit", entry.map_err(backend)?.1.value())?;
                // Events are appended in time order, so the scan can stop early.
                if event.at < q.since {
                    break;
                }
                let matches = q.until.is_none_or(|u| event.at < u)
                    && q.actor.as_ref().is_none_or(|a| *a == event.actor)
                    && q.action.is_none_or(|a| a == event.action)
                    && q.channel.as_ref().is_none_or(|c| *c == event.channel);
                if matches {
                    out.push(event);
                    if out.len() >= q.limit {
                        break;
                    }
                }
            }
            Ok(out)
        })
    }

    fn prune(&self, now: u64, retention: Retention) -> StoreFuture<'_, Pruned> {
        let queue = Arc::clone(&self.audit);
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(backend)?;
            let mut log_excess = 0;
            // The queued audit events become durable with this commit.
            let mut pruned = queue.write_with(txn, |txn| {
                let mut pruned = Pruned::default();
                {
                    let mut revocations = txn.open_table(REVOCATIONS).map_err(backend)?;
                    let mut meta_t = txn.open_table(META).map_err(backend)?;
                    let min = meta_t.get(META_REVOCATION_MIN_EXPIRY).map_err(backend)?.map(|v| v.value());
                    // Read them only when one may have expired.
                    if min.is_none_or(|m| m <= now) {
                        let kept = retain_unexpired(
                            &mut revocations,
                            "revocations",
                            now,
                            |r: &Revocation| (r.expires_at, r.version),
                            |_| pruned.revocations += 1,
                        )?;
                        meta_t.insert(META_REVOCATION_MIN_EXPIRY, kept).map_err(backend)?;
                    }
                    drop(meta_t);
                    let mut purges = txn.open_table(PURGES).map_err(backend)?;
                    let mut floor = 0;
                    retain_unexpired(
                        &mut purges,
                        "purges",
                        now,
                        |p: &Purge| (p.expires_at, p.version),
                        |version| {
                            pruned.purges += 1;
                            floor = floor.max(version);
                        },
                    )?;
                    if floor > 0 {
                        let mut meta_t = txn.open_table(META).map_err(backend)?;
                        let floor = floor.max(meta(&meta_t, META_PURGE_FLOOR)?);
                        meta_t.insert(META_PURGE_FLOOR, floor).map_err(backend)?;
                    }

                    let mut log = txn.open_table(LOG).map_err(backend)?;
                    log_excess = log.len().map_err(backend)?.saturating_sub(retention.log_entries);
                    let trimmed = trim_log(&mut log, log_excess.min(LOG_TRIM_PER_TXN))?;
                    log_excess -= trimmed;
                    pruned.log_entries += trimmed;

                    let mut audit = txn.open_table(AUDIT).map_err(backend)?;
                    let min_at = now.saturating_sub(retention.audit_max_age_secs);
                    let mut excess = audit.len().map_err(backend)?.saturating_sub(retention.audit_events);
                    loop {
                        let Some((_, v)) = audit.first().map_err(backend)? else { break };
                        let event: AuditEvent = decode("audit", v.value())?;
                        if excess == 0 && event.at >= min_at {
                            break;
                        }
                        drop(v);
                        audit.pop_first().map_err(backend)?;
                        excess = excess.saturating_sub(1);
                        pruned.audit_events += 1;
                    }
                }
                txn.commit().map_err(backend)?;
                Ok(pruned)
            })?;
            // The rest of the log's excess (a mass revocation's millions of entries) in
            // transactions of at most LOG_TRIM_PER_TXN entries, so the writes waiting
            // for the store's one writer (revocations) get in between.
            while log_excess > 0 {
                let txn = db.begin_write().map_err(backend)?;
                let trimmed = {
                    let mut log = txn.open_table(LOG).map_err(backend)?;
                    trim_log(&mut log, log_excess.min(LOG_TRIM_PER_TXN))?
                };
                txn.commit().map_err(backend)?;
                if trimmed == 0 {
                    break;
                }
                log_excess -= trimmed;
                pruned.log_entries += trimmed;
            }
            Ok(pruned)
        })
    }
}

/// Most change-log entries one prune transaction removes.
const LOG_TRIM_PER_TXN: u64 = 10_000;

/// Removes up to `n` of the oldest change-log entries; how many it removed.
fn trim_log(log: &mut redb::Table<'_, u64, &[u8]>, n: u64) -> Result<u64, StoreError> {
    let mut removed = 0;
    while removed < n && log.pop_first().map_err(backend)?.is_some() {
        removed += 1;
    }
    Ok(removed)
}

/// Applies a batch inside a write transaction; any error aborts it.
fn apply(txn: &redb::WriteTransaction, batch: Batch) -> Result<Committed, StoreError> {
    let mut committed = Committed::default();
    {
        let mut meta_t = txn.open_table(META).map_err(backend)?;
        let mut version = meta(&meta_t, META_VERSION)?;
        for write in batch.writes {
            match write {
                Write::PutAsset { asset, expected_revision } => {
                    let mut t = txn.open_table(ASSETS).map_err(backend)?;
                    let current = match t.get(asset.id.as_str()).map_err(backend)? {
                        Some(v) => decode::<Asset>("assets", v.value())?.revision,
                        None => 0,
                    };
                    if current != expected_revision {
                        return Err(StoreError::Conflict(format!(
                            "asset {:?} changed concurrently (revision {current}, expected {expected_revision})",
                            asset.id
                        )));
                    }
                    t.insert(asset.id.as_str(), encode(&asset)?.as_slice()).map_err(backend)?;
                }
                Write::PutKey { key, create } => {
                    let mut t = txn.open_table(SIGNING_KEYS).map_err(backend)?;
                    let exists = t.get(key.id).map_err(backend)?.is_some();
                    if create && exists {
                        return Err(StoreError::Conflict(format!("signing key {} already exists", key.id)));
                    }
                    if !create && !exists {
                        return Err(StoreError::Conflict(format!("signing key {} does not exist", key.id)));
                    }
                    t.insert(key.id, encode(&key)?.as_slice()).map_err(backend)?;
                }
                Write::Append { at, actor, mut kind } => {
                    version += 1;
                    match &mut kind {
                        ChangeKind::Revocation(r) => {
                            r.version = version;
                            let mut t = txn.open_table(REVOCATIONS).map_err(backend)?;
                            t.insert(version, encode(r)?.as_slice()).map_err(backend)?;
                            let min = meta_t.get(META_REVOCATION_MIN_EXPIRY).map_err(backend)?.map(|v| v.value());
                            if min.is_some_and(|m| r.expires_at < m) {
                                meta_t.insert(META_REVOCATION_MIN_EXPIRY, r.expires_at).map_err(backend)?;
                            }
                        }
                        ChangeKind::Purge(p) => {
                            p.version = version;
                            let mut t = txn.open_table(PURGES).map_err(backend)?;
                            t.insert(version, encode(p)?.as_slice()).map_err(backend)?;
                        }
                        ChangeKind::Key { .. } | ChangeKind::ForeignKey { .. } => {}
                    }
                    let change = Change { version, at, actor, kind };
                    let mut t = txn.open_table(LOG).map_err(backend)?;
                    t.insert(version, encode(&change)?.as_slice()).map_err(backend)?;
                    committed.changes.push(change);
                }
                Write::PutApiKey(key) => {
                    let mut names = txn.open_table(API_KEY_NAMES).map_err(backend)?;
                    let mut keys = txn.open_table(API_KEYS).map_err(backend)?;
                    if names.get(key.name.as_str()).map_err(backend)?.is_some() {
                        return Err(StoreError::Conflict(format!("API key name {:?} is taken", key.name)));
                    }
                    if keys.get(key.sha256.as_slice()).map_err(backend)?.is_some() {
                        return Err(StoreError::Conflict("API key hash collision".into()));
                    }
                    names.insert(key.name.as_str(), key.sha256.as_slice()).map_err(backend)?;
                    keys.insert(key.sha256.as_slice(), encode(&key)?.as_slice()).map_err(backend)?;
                }
                Write::DeleteApiKey { name } => {
                    let mut names = txn.open_table(API_KEY_NAMES).map_err(backend)?;
                    let hash = names.remove(name.as_str()).map_err(backend)?.map(|v| v.value().to_vec());
                    let Some(hash) = hash else {
                        return Err(StoreError::Conflict(format!("API key {name:?} does not exist")));
                    };
                    txn.open_table(API_KEYS).map_err(backend)?.remove(hash.as_slice()).map_err(backend)?;
                }
                Write::PutForeignKey(key) => {
                    let mut t = txn.open_table(FOREIGN_KEYS).map_err(backend)?;
                    let id = ForeignKey::id(&key.format, &key.name);
                    if t.get(id.as_str()).map_err(backend)?.is_some() {
                        return Err(StoreError::Conflict(format!("{} key {:?} already exists", key.format, key.name)));
                    }
                    let prefix = ForeignKey::id(&key.format, "");
                    let mut held = 0;
                    for entry in t.range(prefix.as_str()..).map_err(backend)? {
                        if !entry.map_err(backend)?.0.value().starts_with(&prefix) {
                            break;
                        }
                        held += 1;
                    }
                    if held >= MAX_FOREIGN_KEYS {
                        return Err(StoreError::Conflict(format!(
                            "{} holds {MAX_FOREIGN_KEYS} keys already",
                            key.format
                        )));
                    }
                    t.insert(id.as_str(), encode(&key)?.as_slice()).map_err(backend)?;
                }
                Write::DeleteForeignKey { format, name } => {
                    let mut t = txn.open_table(FOREIGN_KEYS).map_err(backend)?;
                    if t.remove(ForeignKey::id(&format, &name).as_str()).map_err(backend)?.is_none() {
                        return Err(StoreError::Conflict(format!("{format} key {name:?} does not exist")));
                    }
                }
            }
        }
        meta_t.insert(META_VERSION, version).map_err(backend)?;
    }
    let mut audit = batch.audit;
    append_audit(txn, &mut audit)?;
    Ok(committed)
}

/// Drops the records of a live set (`version` → JSON) whose expiry is at or
/// before `now`, calling `dropped` with each one's version; returns the
/// earliest expiry kept (`u64::MAX`: none).
fn retain_unexpired<T: DeserializeOwned>(
    table: &mut redb::Table<'_, u64, &'static [u8]>,
    name: &'static str,
    now: u64,
    expiry: impl Fn(&T) -> (u64, u64),
    mut dropped: impl FnMut(u64),
) -> Result<u64, StoreError> {
    let mut corrupt = None;
    let mut kept = u64::MAX;
    table
        .retain(|_, v| match serde_json::from_slice::<T>(v) {
            Ok(record) => {
                let (expires_at, version) = expiry(&record);
                if expires_at <= now {
                    dropped(version);
                } else {
                    kept = kept.min(expires_at);
                }
                expires_at > now
            }
            Err(e) => {
                corrupt = Some(e.to_string());
                true
            }
        })
        .map_err(backend)?;
    corrupt.map_or(Ok(kept), |message| Err(StoreError::Corrupt { table: name, message }))
}

/// Appends `events`, numbering them (their `seq` is set in place).
fn append_audit(txn: &redb::WriteTransaction, events: &mut [AuditEvent]) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut meta_t = txn.open_table(META).map_err(backend)?;
    let mut audit = txn.open_table(AUDIT).map_err(backend)?;
    let mut seq = meta(&meta_t, META_AUDIT_SEQ)?;
    for event in events {
        seq += 1;
        event.seq = seq;
        audit.insert(seq, encode(&*event)?.as_slice()).map_err(backend)?;
    }
    meta_t.insert(META_AUDIT_SEQ, seq).map_err(backend)?;
    Ok(())
}

fn meta(table: &impl ReadableTable<&'static str, u64>, key: &str) -> Result<u64, StoreError> {
    Ok(table.get(key).map_err(backend)?.map_or(0, |v| v.value()))
}

fn values<K: redb::Key + 'static, T: DeserializeOwned>(
    table: &impl ReadableTable<K, &'static [u8]>,
    name: &'static str,
) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    for entry in table.iter().map_err(backend)? {
        out.push(decode(name, entry.map_err(backend)?.1.value())?);
    }
    Ok(out)
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Backend(format!("encoding: {e}")))
}

fn decode<T: DeserializeOwned>(table: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt { table, message: e.to_string() })
}

fn failed(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// A redb error; a full disk or file-size limit is [`StoreError::Full`], so
/// the caller hears that nothing was written and why.
fn backend(e: impl Into<redb::Error>) -> StoreError {
    let e: redb::Error = e.into();
    if let redb::Error::Io(io) = &e {
        use std::io::ErrorKind;
        if matches!(io.kind(), ErrorKind::StorageFull | ErrorKind::FileTooLarge | ErrorKind::QuotaExceeded) {
            return StoreError::Full(e.to_string());
        }
    }
    StoreError::Backend(e.to_string())
}

#[cfg(unix)]
fn restrict_permissions(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| failed(format!("chmod 600 {}: {e}", path.display())))
}

#[cfg(not(unix))]
fn restrict_permissions(_: &Path) -> Result<(), StoreError> {
    Ok(())
}
