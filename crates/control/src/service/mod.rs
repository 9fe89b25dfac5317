//! The gRPC services. Each handler authenticates and checks the caller's role
//! first ([`crate::auth`]), validates, commits one batch, then answers; errors
//! become statuses in [`crate::error`].

mod api_keys;
mod assets;
mod audit;
mod edges;
mod keys;
mod links;
mod revocations;

use std::sync::{Arc, RwLock};

use stile_token::{KeyId, KeyRing};

pub(crate) use self::api_keys::ApiKeys;
pub(crate) use self::assets::Assets;
pub(crate) use self::audit::Audit;
pub(crate) use self::edges::Edges;
pub(crate) use self::keys::Keys;
pub(crate) use self::links::Links;
pub(crate) use self::revocations::Revocations;
use crate::auth::Authenticator;
use crate::clock::Clock;
use crate::config::Config;
use crate::error::ApiError;
use crate::fleet::Fleet;
use crate::locks;
use crate::model::KeyState;
use crate::store::notify::{NotifyingStore, VersionWatch};
use crate::store::{ReplicaBus, Store};

/// Everything the handlers share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Arc<Config>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) auth: Authenticator,
    /// The verifying keys and the minting key, as last loaded from the store.
    keys: RwLock<KeyCache>,
    /// Serialises key changes made through this process. Across replicas the
    /// store's create-only key writes catch races (ABORTED).
    key_lock: tokio::sync::Mutex<()>,
    /// Serialises whole key rotations (PENDING, rollout, ACTIVE).
    rotate_lock: tokio::sync::Mutex<()>,
    /// The edges connected to this process.
    pub(crate) fleet: Arc<Fleet>,
    /// The newest committed log version; sync sessions watch it.
    pub(crate) versions: Arc<VersionWatch>,
    /// Prometheus metrics (served by the admin listener).
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    /// Set when the server stops: sync sessions end so the graceful shutdown
    /// does not wait for long-lived streams.
    pub(crate) stopping: tokio::sync::watch::Sender<bool>,
    /// This process among the replicas sharing a backend (random per start).
    pub(crate) replica_id: String,
    /// The other replicas sharing the backend, if it is shared.
    pub(crate) bus: Option<Arc<dyn ReplicaBus>>,
}

#[derive(Debug, Default)]
struct KeyCache {
    ring: KeyRing,
    active: Option<KeyId>,
}

impl Shared {
    /// Handlers' shared state. The store is wrapped so that every commit wakes
    /// the sync sessions ([`NotifyingStore`]).
    pub(crate) fn new(
        config: Arc<Config>,
        store: Arc<dyn Store>,
        bus: Option<Arc<dyn ReplicaBus>>,
        clock: Arc<dyn Clock>,
    ) -> Shared {
        let versions = Arc::new(tokio::sync::watch::channel(0).0);
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let store: Arc<dyn Store> =
            Arc::new(NotifyingStore::new(store, Arc::clone(&versions), Arc::clone(&metrics) as _));
        let auth = Authenticator::new(&config.auth.keys, Arc::clone(&store));
        Shared {
            config,
            store,
            clock,
            auth,
            keys: RwLock::new(KeyCache::default()),
            key_lock: tokio::sync::Mutex::new(()),
            rotate_lock: tokio::sync::Mutex::new(()),
            fleet: Fleet::new(),
            versions,
            metrics,
            stopping: tokio::sync::watch::channel(false).0,
            replica_id: format!("{}-{:08x}", std::process::id(), rand::random::<u32>()),
            bus,
        }
    }

    /// Now, Unix seconds.
    pub(crate) fn now(&self) -> u64 {
        self.clock.now_secs()
    }

    /// Now, Unix milliseconds.
    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.clock.now().as_millis()).unwrap_or(u64::MAX)
    }

    /// Reloads the key cache from the store.
    pub(crate) async fn reload_keys(&self) -> Result<(), ApiError> {
        let keys = self.store.signing_keys().await?;
        let mut cache = KeyCache::default();
        for k in keys.iter().filter(|k| k.state != KeyState::Retired) {
            cache.ring.insert(k.id, &k.secret);
            if k.state == KeyState::Active {
                cache.active = Some(k.id);
            }
        }
        if let Some(id) = cache.active {
            cache.ring.set_active(id);
        }
        *locks::write(&self.keys) = cache;
        Ok(())
    }

    /// Runs `f` with the key ring and the active key id.
    pub(crate) fn with_active_key<T>(
        &self,
        f: impl FnOnce(KeyId, &KeyRing) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let cache = locks::read(&self.keys);
        let id = cache.active.ok_or_else(|| {
            ApiError::FailedPrecondition("no active signing key; rotate one in (KeyService.Rotate)".into())
        })?;
        f(id, &cache.ring)
    }
}

/// Start-up: publishes the log version to the sync sessions, makes sure a
/// signing key is active (first start of an empty store), and resumes the
/// rollout of a key a previous run left PENDING.
pub(crate) async fn start(s: &Arc<Shared>) -> Result<(), ApiError> {
    s.versions.send_replace(s.store.version().await?);
    s.reload_keys().await?;
    keys::resume_rollouts(s).await?;
    if s.with_active_key(|id, _| Ok(id)).is_err() {
        let rotated = keys::rotate(s, "system", "initial key").await?;
        tracing::info!(key.id = rotated.key.id, version = rotated.version, "keys.initial");
    }
    Ok(())
}

/// Page size from a request's `limit`: 0 means 100, capped at 1000.
pub(crate) fn page_limit(limit: u32) -> usize {
    match limit {
        0 => 100,
        n => n.min(1000) as usize,
    }
}

/// Checks a free-text reason: `1..=200` characters when required, else `0..=200`.
pub(crate) fn check_reason(reason: &str, required: bool) -> Result<(), ApiError> {
    let len = reason.chars().count();
    if (required && len == 0) || len > 200 {
        let what = if required { "1 to 200" } else { "at most 200" };
        return Err(ApiError::InvalidArgument(format!("reason must be {what} characters, got {len}")));
    }
    Ok(())
}
