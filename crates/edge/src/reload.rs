//! File mode's state source: a Pingora background service that re-reads the
//! state file on SIGHUP and whenever its modification time or size changes,
//! publishes each good version into the shared state, and keeps the old one
//! (logged and counted) when the new file is bad or older.
//!
//! It sits above both [`crate::state`] and [`crate::metrics`], so neither of
//! those two needs the other's runtime parts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::clock::SharedClock;
use crate::metrics::Metrics;
use crate::state::{SharedState, load_file};

/// Reloads the state file on SIGHUP and whenever its modification time or size changes.
#[derive(Debug)]
pub(crate) struct FileReloader {
    path: PathBuf,
    poll: Duration,
    /// Revocation leeway (the token leeway) used when pruning.
    leeway: u64,
    shared: Arc<SharedState>,
    metrics: Arc<Metrics>,
    clock: SharedClock,
}

impl FileReloader {
    /// A reloader of `path`, polled every `poll`, publishing into `shared`.
    pub(crate) fn new(
        path: PathBuf,
        poll: Duration,
        leeway: u64,
        shared: Arc<SharedState>,
        metrics: Arc<Metrics>,
        clock: SharedClock,
    ) -> FileReloader {
        FileReloader { path, poll, leeway, shared, metrics, clock }
    }

    /// Re-reads the file; on success publishes it, on failure keeps the old state.
    pub(crate) fn reload(&self, why: &'static str) -> bool {
        let now = self.clock.now();
        match load_file(&self.path, now, self.leeway) {
            Ok(state) => {
                let old = self.shared.load().version;
                if state.version < old {
                    tracing::error!(
                        state.file = %self.path.display(), state.version = state.version, state.current = old,
                        trigger = why, "state.reload_refused: the version goes backwards"
                    );
                    self.metrics.state_reload(false);
                    return false;
                }
                self.metrics.observe_state(&state);
                tracing::info!(
                    state.file = %self.path.display(), state.version = state.version,
                    state.revocations = state.revocations.len(), trigger = why, "state.reloaded"
                );
                self.shared.store(state);
                self.metrics.state_reload(true);
                true
            }
            Err(e) => {
                tracing::error!(error = %e, trigger = why, "state.reload_failed: keeping the previous state");
                self.metrics.state_reload(false);
                false
            }
        }
    }

    /// Runs until `shutdown` flips to true.
    pub(crate) async fn run(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "state.no_sighup: relying on file polling");
                None
            }
        };
        let mut seen = stamp(&self.path);
        let mut tick = tokio::time::interval(self.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => if *shutdown.borrow() { return },
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => None } } => {
                    seen = stamp(&self.path);
                    self.reload("sighup");
                }
                _ = tick.tick() => {
                    let now = stamp(&self.path);
                    if now != seen {
                        seen = now;
                        self.reload("file_changed");
                    }
                    self.metrics.observe_age(self.clock.now(), self.shared.load().fresh_at);
                }
            }
        }
    }
}

#[async_trait]
impl BackgroundService for FileReloader {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.run(shutdown).await;
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}
