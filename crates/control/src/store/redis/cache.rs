//! The stale-read cache: while Redis is unreachable, minting keeps working
//! from asset states and API keys read within `stale_read_secs`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::Inner;
use crate::locks;
use crate::model::{ApiKey, Asset};
use crate::store::StoreError;

/// Most entries of each read cache (assets, API keys).
const CACHE_MAX: usize = 100_000;

/// Answers read before, kept while `stale_read_secs` allows serving them.
#[derive(Default)]
pub(super) struct Cache {
    pub(super) assets: HashMap<String, (Asset, Instant)>,
    pub(super) api_keys: HashMap<[u8; 32], (ApiKey, Instant)>,
}

impl Inner {
    /// While Redis is known to be down, a cached answer young enough, without
    /// trying Redis (so minting stays fast during an outage).
    pub(super) fn stale<T>(&self, get: impl FnOnce(&Cache) -> Option<(T, Instant)>) -> Option<T> {
        if !self.down.load(Ordering::Acquire) || self.settings.stale_read.is_zero() {
            return None;
        }
        self.cached(get)
    }

    /// After a failed read: the cached answer if Redis is unreachable and the
    /// entry is young enough, else the error.
    pub(super) fn fallback<T>(
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
        let cache = locks::lock(&self.cache);
        get(&cache).filter(|(_, at)| at.elapsed() <= self.settings.stale_read).map(|(v, _)| v)
    }

    pub(super) fn remember(&self, f: impl FnOnce(&mut Cache, Instant)) {
        if !self.settings.stale_read.is_zero() {
            f(&mut locks::lock(&self.cache), Instant::now());
        }
    }
}

/// Inserts an entry, making room first by dropping entries older than `max_age` (or all).
pub(super) fn insert<K: std::hash::Hash + Eq, V>(
    map: &mut HashMap<K, (V, Instant)>,
    k: K,
    v: V,
    now: Instant,
    max_age: Duration,
) {
    if map.len() >= CACHE_MAX && !map.contains_key(&k) {
        map.retain(|_, (_, at)| now.duration_since(*at) <= max_age);
        if map.len() >= CACHE_MAX {
            map.clear();
        }
    }
    map.insert(k, (v, now));
}
