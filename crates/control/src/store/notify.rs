//! The store the control plane uses: any backend wrapped so that every commit
//! that appended changes publishes the newest log version ([`VersionWatch`])
//! at once — which wakes the edge sync sessions — and reports its duration
//! and outcome to a [`CommitObserver`] (the metrics).
//!
//! Only [`Store`] goes through this wrapper. Replica coordination
//! ([`super::ReplicaBus`]) is taken from the backend directly, so there is
//! nothing here a wrapper could forget to forward: every [`Store`] method is
//! required.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{AssetQuery, AuditQuery, Batch, Committed, LogRead, Pruned, Retention, Snapshot, Store, StoreFuture};
use crate::model::{ApiKey, Asset, AuditEvent, ForeignKey, Revocation, SigningKey};

/// The newest committed log version, watched by every sync session.
pub(crate) type VersionWatch = watch::Sender<u64>;

/// Raises `versions` to `version` (never lowers it); whether it moved.
pub(crate) fn raise(versions: &watch::Sender<u64>, version: u64) -> bool {
    versions.send_if_modified(|current| {
        let newer = version > *current;
        if newer {
            *current = version;
        }
        newer
    })
}

/// Told about every commit: how long it took and whether it succeeded.
pub(crate) trait CommitObserver: Send + Sync + fmt::Debug {
    /// One commit ended after `elapsed`; `ok` unless it failed.
    fn commit(&self, elapsed: Duration, ok: bool);
}

/// A [`Store`] that publishes the newest log version after every commit that
/// appended changes. Commits by other writers of a shared backend are picked
/// up by the version follower (`server.rs`), from the backend's
/// [`super::ReplicaBus::watch_versions`] and a periodic poll.
#[derive(Debug)]
pub(crate) struct NotifyingStore {
    inner: Arc<dyn Store>,
    versions: Arc<VersionWatch>,
    observer: Arc<dyn CommitObserver>,
}

impl NotifyingStore {
    pub(crate) fn new(
        inner: Arc<dyn Store>,
        versions: Arc<VersionWatch>,
        observer: Arc<dyn CommitObserver>,
    ) -> NotifyingStore {
        NotifyingStore { inner, versions, observer }
    }
}

impl Store for NotifyingStore {
    fn commit(&self, batch: Batch) -> StoreFuture<'_, Committed> {
        Box::pin(async move {
            let started = Instant::now();
            let committed = self.inner.commit(batch).await;
            self.observer.commit(started.elapsed(), committed.is_ok());
            let committed = committed?;
            if let Some(last) = committed.changes.last() {
                raise(&self.versions, last.version);
            }
            Ok(committed)
        })
    }
    fn record_audit(&self, events: Vec<AuditEvent>) -> StoreFuture<'_, ()> {
        self.inner.record_audit(events)
    }
    fn api_key(&self, sha256: [u8; 32]) -> StoreFuture<'_, Option<ApiKey>> {
        self.inner.api_key(sha256)
    }
    fn api_keys(&self) -> StoreFuture<'_, Vec<ApiKey>> {
        self.inner.api_keys()
    }
    fn signing_keys(&self) -> StoreFuture<'_, Vec<SigningKey>> {
        self.inner.signing_keys()
    }
    fn foreign_keys(&self) -> StoreFuture<'_, Vec<ForeignKey>> {
        self.inner.foreign_keys()
    }
    fn asset(&self, id: String) -> StoreFuture<'_, Option<Asset>> {
        self.inner.asset(id)
    }
    fn assets(&self, query: AssetQuery) -> StoreFuture<'_, Vec<Asset>> {
        self.inner.assets(query)
    }
    fn version(&self) -> StoreFuture<'_, u64> {
        self.inner.version()
    }
    fn log_since(&self, version: u64, limit: usize) -> StoreFuture<'_, LogRead> {
        self.inner.log_since(version, limit)
    }
    fn snapshot(&self) -> StoreFuture<'_, Snapshot> {
        self.inner.snapshot()
    }
    fn snapshot_head(&self) -> StoreFuture<'_, Snapshot> {
        self.inner.snapshot_head()
    }
    fn revocations(&self, after_version: u64, limit: usize) -> StoreFuture<'_, Vec<Revocation>> {
        self.inner.revocations(after_version, limit)
    }
    fn audit(&self, query: AuditQuery) -> StoreFuture<'_, Vec<AuditEvent>> {
        self.inner.audit(query)
    }
    fn prune(&self, now: u64, retention: Retention) -> StoreFuture<'_, Pruned> {
        self.inner.prune(now, retention)
    }
}
