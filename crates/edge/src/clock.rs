//! The edge's one reader of wall-clock time.
//!
//! Everything that needs "now" (token time windows, cookie lifetimes, state
//! staleness) takes it from a [`Clock`], so tests can pin time and probe expiry
//! boundaries exactly.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A source of the current time in Unix seconds.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time, Unix seconds.
    fn now(&self) -> u64;

    /// The current time, Unix milliseconds (clock-skew measurement).
    fn now_ms(&self) -> u64 {
        self.now().saturating_mul(1000)
    }
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // reason: this is the edge's one clock module.
    fn now(&self) -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
    }

    #[allow(clippy::disallowed_methods)] // reason: this is the edge's one clock module.
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// The wall clock of the object cache. Pingora's HTTP cache judges freshness
/// against `SystemTime::now()` itself, so the cache's own timestamps (when an
/// object was stored, until when it is fresh) come from the same clock, not from
/// an injected [`Clock`].
#[allow(clippy::disallowed_methods)] // reason: this is the edge's one clock module.
pub(crate) fn cache_now() -> std::time::SystemTime {
    std::time::SystemTime::now()
}

/// A clock that reads a settable value, for tests.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock pinned at `now`.
    pub fn new(now: u64) -> Arc<ManualClock> {
        Arc::new(ManualClock(AtomicU64::new(now)))
    }

    /// Moves the clock to `now`.
    pub fn set(&self, now: u64) {
        self.0.store(now, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The clock shared by every part of one edge.
pub type SharedClock = Arc<dyn Clock>;
