//! The signing keys this process holds: the ring of keys that verify and the
//! key of each algorithm it mints with, as last loaded from the store. Minting reads it on
//! every call without touching the store; key changes (this process's
//! rotations and retirements, or another replica's, seen by the version
//! follower) reload it.

use std::sync::{Arc, RwLock};

use stile_token::{Algorithm, KeyId, KeyRing};

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
    /// The ACTIVE HMAC-SHA256 key.
    hmac: Option<KeyId>,
    /// The ACTIVE Ed25519 key.
    ed25519: Option<KeyId>,
}

impl SigningKeys {
    /// An empty cache over `store`; [`SigningKeys::reload`] fills it.
    pub(crate) fn new(store: Arc<dyn Store>) -> SigningKeys {
        SigningKeys { store, cache: RwLock::new(KeyCache::default()) }
    }

    /// Reloads every key that is not retired (Ed25519 keys with their private
    /// halves: this ring signs), and which key of each algorithm is ACTIVE.
    pub(crate) async fn reload(&self) -> Result<(), StoreError> {
        let keys = self.store.signing_keys().await?;
        let mut cache = KeyCache::default();
        for k in keys.iter().filter(|k| k.state != KeyState::Retired) {
            k.add_to(&mut cache.ring);
            if k.state == KeyState::Active {
                match k.algorithm {
                    Algorithm::HmacSha256 => cache.hmac = Some(k.id),
                    Algorithm::Ed25519 => cache.ed25519 = Some(k.id),
                }
            }
        }
        *locks::write(&self.cache) = cache;
        Ok(())
    }

    /// Whether a key of `algorithm` is ACTIVE (policies of that algorithm can mint).
    pub(crate) fn has_active(&self, algorithm: Algorithm) -> bool {
        let cache = locks::read(&self.cache);
        match algorithm {
            Algorithm::HmacSha256 => cache.hmac.is_some(),
            Algorithm::Ed25519 => cache.ed25519.is_some(),
        }
    }

    /// Runs `f` with the ACTIVE keys and the ring; minting under a policy
    /// whose algorithm has no ACTIVE key fails FAILED_PRECONDITION.
    pub(crate) fn with_active<T>(&self, f: impl FnOnce(MintKey<'_>) -> Result<T, ApiError>) -> Result<T, ApiError> {
        let cache = locks::read(&self.cache);
        f(MintKey { hmac: cache.hmac, ed25519: cache.ed25519, ring: &cache.ring })
    }
}
