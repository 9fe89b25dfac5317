//! Storage behind one object-safe trait, so callers hold an `Arc<dyn Store>`
//! and a backend (embedded redb, or Redis shared by several control-plane
//! replicas) is chosen at start-up.
//!
//! Every state change goes through [`Store::commit`]: one [`Batch`] of writes
//! plus its audit events, applied atomically and acknowledged only once
//! durable. Preconditions (asset revision, key and name uniqueness) are checked
//! inside the same transaction, so a rejected request writes nothing.
//!
//! The change log ([`Store::log_since`], [`Store::snapshot`]) is what the edge
//! sync stream replays: versions start at 1 and have no gaps.
//!
//! Replicas sharing a backend coordinate through a second trait,
//! [`ReplicaBus`] (the Redis backend implements both). The control plane wraps
//! its store in `notify::NotifyingStore`, which wakes the edge sync sessions
//! after every commit.

pub(crate) mod notify;
mod redb;
mod redis;

use std::fmt;
use std::future::Future;
use std::pin::Pin;

pub use self::redb::RedbStore;
pub use self::redis::{RedisConfig, RedisStore, SentinelConfig};
use crate::model::{
    ApiKey, Asset, AssetState, AuditAction, AuditEvent, Change, ChangeKind, ForeignKey, Purge, Revocation, SigningKey,
};

/// The future every store method returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A storage backend.
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// Applies every write in order, atomically, and returns once durable.
    /// Fails with [`StoreError::Conflict`] (and writes nothing) if a
    /// precondition does not hold.
    fn commit(&self, batch: Batch) -> StoreFuture<'_, Committed>;

    /// Records audit events that need not be durable before the call returns
    /// (mints): they become durable with the next commit or prune.
    fn record_audit(&self, events: Vec<AuditEvent>) -> StoreFuture<'_, ()>;

    /// The stored API key with this SHA-256, if any.
    fn api_key(&self, sha256: [u8; 32]) -> StoreFuture<'_, Option<ApiKey>>;

    /// Every stored API key, by name.
    fn api_keys(&self) -> StoreFuture<'_, Vec<ApiKey>>;

    /// Every signing key (retired ones too), by id.
    fn signing_keys(&self) -> StoreFuture<'_, Vec<SigningKey>>;

    /// Every foreign key, by format, then name.
    fn foreign_keys(&self) -> StoreFuture<'_, Vec<ForeignKey>>;

    /// One asset.
    fn asset(&self, id: String) -> StoreFuture<'_, Option<Asset>>;

    /// Assets in id order.
    fn assets(&self, query: AssetQuery) -> StoreFuture<'_, Vec<Asset>>;

    /// The newest committed change log version (0 when empty).
    fn version(&self) -> StoreFuture<'_, u64>;

    /// Up to `limit` changes after `version`, in order.
    fn log_since(&self, version: u64, limit: usize) -> StoreFuture<'_, LogRead>;

    /// Every key that verifies, every foreign key, every revocation in force
    /// and every retained purge, as of one version.
    fn snapshot(&self) -> StoreFuture<'_, Snapshot>;

    /// The same without the revocations (`revocations` empty): a snapshot
    /// streamed in parts reads them afterwards a page at a time with
    /// [`Store::revocations`], keeping those up to `version`, so the whole set
    /// is never in memory at once.
    fn snapshot_head(&self) -> StoreFuture<'_, Snapshot>;

    /// Revocations in force with a version above `after_version`, in order.
    fn revocations(&self, after_version: u64, limit: usize) -> StoreFuture<'_, Vec<Revocation>>;

    /// Audit events matching the query, newest first.
    fn audit(&self, query: AuditQuery) -> StoreFuture<'_, Vec<AuditEvent>>;

    /// Drops expired revocations, purges past their retention (raising the
    /// purge floor to the newest one dropped), change log entries beyond
    /// retention, and audit events beyond retention. The log's versions never
    /// change.
    fn prune(&self, now: u64, retention: Retention) -> StoreFuture<'_, Pruned>;
}

/// Coordination between control-plane replicas that share one backend
/// (Redis). Kept apart from [`Store`]: a backend only this process writes has
/// none, and the control plane takes it from the backend when it opens it,
/// never through a wrapper (the commit-notifying store, caches), so no
/// wrapper can drop it by forgetting to forward a method.
pub trait ReplicaBus: Send + Sync + fmt::Debug + 'static {
    /// The newest log version committed by any replica, kept current by a
    /// background tail of the backend's log.
    fn watch_versions(&self) -> tokio::sync::watch::Receiver<u64>;

    /// Publishes this replica's view of its connected edges (`view`, opaque
    /// JSON) for the other replicas, expiring after `ttl_ms` unless published
    /// again.
    fn publish_fleet(&self, replica: String, view: String, ttl_ms: u64) -> StoreFuture<'_, ()>;

    /// The unexpired views published by every replica (this one's included),
    /// as `(replica, view)`.
    fn fleet_views(&self) -> StoreFuture<'_, Vec<(String, String)>>;
}

/// Writes applied atomically by [`Store::commit`].
#[derive(Debug, Default)]
pub struct Batch {
    /// State changes, in order.
    pub writes: Vec<Write>,
    /// Audit events committed with them; the store assigns `seq`.
    pub audit: Vec<AuditEvent>,
}

/// One write.
#[derive(Debug)]
pub enum Write {
    /// Creates an asset (`expected_revision` 0: it must not exist) or replaces
    /// it (it must be at `expected_revision`).
    PutAsset {
        /// The new asset.
        asset: Asset,
        /// Revision it must currently have; 0 for none.
        expected_revision: u64,
    },
    /// Creates (`create`: it must not exist) or replaces a signing key.
    PutKey {
        /// The key.
        key: SigningKey,
        /// Whether this creates it.
        create: bool,
    },
    /// Appends a change; the store assigns the next version (and writes it
    /// into a revocation's or purge's `version`). Revocations also enter the
    /// live set, purges the retained set (until their `expires_at`).
    Append {
        /// When, Unix seconds.
        at: u64,
        /// Who.
        actor: String,
        /// What.
        kind: ChangeKind,
    },
    /// Adds an API key; its name and hash must be new.
    PutApiKey(ApiKey),
    /// Deletes an API key by name; it must exist.
    DeleteApiKey {
        /// The name.
        name: String,
    },
    /// Adds a foreign key: its format and name must be new, and its format
    /// must hold fewer than [`crate::model::MAX_FOREIGN_KEYS`].
    PutForeignKey(ForeignKey),
    /// Deletes a foreign key; it must exist.
    DeleteForeignKey {
        /// The link format's name.
        format: String,
        /// The key's name.
        name: String,
    },
}

/// What a commit produced.
#[derive(Debug, Default)]
pub struct Committed {
    /// The appended changes with their versions, in order.
    pub changes: Vec<Change>,
}

/// Result of [`Store::log_since`].
#[derive(Debug, PartialEq, Eq)]
pub enum LogRead {
    /// The changes after the version asked (possibly none).
    Changes(Vec<Change>),
    /// The log was pruned past the version asked: the reader needs a snapshot.
    Compacted {
        /// Oldest version still in the log.
        oldest: u64,
    },
    /// The version asked is newer than the log's: the reader is ahead (the
    /// store was restored from an older backup) and needs a snapshot.
    Ahead {
        /// The log's newest version.
        current: u64,
    },
}

/// Full state as of one version.
#[derive(Debug)]
pub struct Snapshot {
    /// The version this reflects.
    pub version: u64,
    /// Keys that verify (not retired).
    pub keys: Vec<SigningKey>,
    /// Revocations in force.
    pub revocations: Vec<Revocation>,
    /// Purges still retained, in version order.
    pub purges: Vec<Purge>,
    /// The highest version of a purge dropped by retention (0: none).
    pub purge_floor: u64,
    /// Every foreign key, by format, then name.
    pub foreign_keys: Vec<ForeignKey>,
}

/// Filters for [`Store::assets`].
#[derive(Clone, Debug, Default)]
pub struct AssetQuery {
    /// Only this state.
    pub state: Option<AssetState>,
    /// Only ids greater than this.
    pub after_id: String,
    /// Most returned.
    pub limit: usize,
}

/// Filters for [`Store::audit`]; every set field must match.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    /// Only this actor.
    pub actor: Option<String>,
    /// Only this action.
    pub action: Option<AuditAction>,
    /// Only this channel.
    pub channel: Option<String>,
    /// Only events at or after this time.
    pub since: u64,
    /// Only events before this time (`None`: no bound).
    pub until: Option<u64>,
    /// Only events with a smaller seq (`None`: newest).
    pub before_seq: Option<u64>,
    /// Most returned.
    pub limit: usize,
}

/// Retention bounds for [`Store::prune`].
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// Change log entries kept.
    pub log_entries: u64,
    /// Audit events kept.
    pub audit_events: u64,
    /// Oldest audit event kept, seconds.
    pub audit_max_age_secs: u64,
}

/// What [`Store::prune`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Expired revocations dropped from the live set.
    pub revocations: u64,
    /// Purges dropped from the retained set.
    pub purges: u64,
    /// Change log entries dropped.
    pub log_entries: u64,
    /// Audit events dropped.
    pub audit_events: u64,
}

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A precondition of the batch did not hold; nothing was written.
    #[error("{0}")]
    Conflict(String),
    /// Stored data cannot be decoded.
    #[error("corrupt record in {table}: {message}")]
    Corrupt {
        /// Where.
        table: &'static str,
        /// What the decoder said.
        message: String,
    },
    /// The backend failed (I/O, lock, connection).
    #[error("storage backend: {0}")]
    Backend(String),
    /// The backend cannot be reached or refuses writes for now (Redis down,
    /// failing over, out of memory, too few replicas); nothing was
    /// acknowledged and retrying later may succeed. A write that timed out
    /// may still have been applied.
    #[error("storage backend unavailable: {0}")]
    Unavailable(String),
    /// The disk (or the file-size limit) is full: the write was aborted and
    /// nothing was written; it succeeds again once there is room.
    #[error("storage full: {0}")]
    Full(String),
}
