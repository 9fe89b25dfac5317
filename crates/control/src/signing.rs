//! The signing keys this process holds: the ring of keys that verify and the
//! one key it mints with, as last loaded from the store. Minting reads it on
//! every call without touching the store; key changes (this process's
//! rotations and retirements, or another replica's, seen by the version
//! follower) reload it.

use std::sync::{Arc, RwLock};

use stile_token::{KeyId, KeyRing};

use crate::error::ApiError;
use crate::locks;
use crate::mint::MintKey;
use crate::model::KeyState;
use crate::store::{Store, StoreError};

/// The key cache. Cheap to share; all methods take `&self`.
#[derive(Debug)]
pub(crate) struct SigningKeys {
    store: Arc<dyn Store>,
    cache: RwLock<KeyCache>,
}

#[derive(Debug, Default)]
struct KeyCache {
    ring: KeyRing,
    active: Option<KeyId>,
}

impl SigningKeys {
    /// An empty cache over `store`; [`SigningKeys::reload`] fills it.
    pub(crate) fn new(store: Arc<dyn Store>) -> SigningKeys {
        SigningKeys { store, cache: RwLock::new(KeyCache::default()) }
    }

    /// Reloads every key that is not retired, and which one is ACTIVE.
    pub(crate) async fn reload(&self) -> Result<(), StoreError> {
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
        *locks::write(&self.cache) = cache;
        Ok(())
    }

    /// Whether a key is ACTIVE (minting is possible).
    pub(crate) fn has_active(&self) -> bool {
        locks::read(&self.cache).active.is_some()
    }

    /// Runs `f` with the ACTIVE key and the ring; FAILED_PRECONDITION without one.
    pub(crate) fn with_active<T>(&self, f: impl FnOnce(MintKey<'_>) -> Result<T, ApiError>) -> Result<T, ApiError> {
        let cache = locks::read(&self.cache);
        let id = cache.active.ok_or_else(|| {
            ApiError::FailedPrecondition("no active signing key; rotate one in (KeyService.Rotate)".into())
        })?;
        f(MintKey { id, ring: &cache.ring })
    }
}
