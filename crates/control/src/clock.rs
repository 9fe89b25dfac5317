//! The one place the control plane reads wall-clock time. Everything else
//! takes a [`Clock`] so tests can set the time.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

/// A source of the current time.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Now, as a duration since the Unix epoch.
    fn now(&self) -> Duration;

    /// Now, Unix seconds.
    fn now_secs(&self) -> u64 {
        self.now().as_secs()
    }

    /// Now, Unix milliseconds.
    fn now_ms(&self) -> u64 {
        u64::try_from(self.now().as_millis()).unwrap_or(u64::MAX)
    }
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // reason: this is the clock module, the one allowed reader.
    fn now(&self) -> Duration {
        std::time::SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
    }
}

/// A clock that only moves when told to; for tests.
#[derive(Clone, Debug, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock stopped at `secs` (Unix seconds).
    pub fn new(secs: u64) -> ManualClock {
        ManualClock(Arc::new(AtomicU64::new(secs.saturating_mul(1000))))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(u64::try_from(by.as_millis()).unwrap_or(u64::MAX), Ordering::SeqCst);
    }

    /// Sets the clock, Unix seconds.
    pub fn set(&self, secs: u64) {
        self.0.store(secs.saturating_mul(1000), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_millis(self.0.load(Ordering::SeqCst))
    }
}
