//! The sync client without the proxy (feature `test-util`): the edge's own
//! [`SyncClient`] — the same session, [`Model::apply_batch`], cache, journal
//! and ACKs as `stile edge` in sync mode — publishing into a [`SharedState`]
//! the caller reads instead of a Pingora listener. The fleet simulator
//! (`benches/src/fleet/`) runs a thousand of them in one process.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;

use super::{KeyError, Progress, SyncClient, SyncConfig, SyncDeps, load_cache};
use crate::clock::SharedClock;
use crate::metrics::Metrics;
use crate::state::SharedState;

/// One edge's sync client, embedded.
#[derive(Debug)]
pub struct EmbeddedSync {
    client: SyncClient,
    shared: Arc<SharedState>,
    metrics: Arc<Metrics>,
}

impl EmbeddedSync {
    /// A client for `config` (checked like the edge's `[sync]` table), with
    /// `cache` as its `state.file` (loaded now, as the edge does at start),
    /// `leeway` the token leeway in seconds.
    pub fn new(
        config: SyncConfig,
        cache: Option<PathBuf>,
        leeway: u64,
        clock: SharedClock,
    ) -> Result<EmbeddedSync, EmbedError> {
        config.check().map_err(|(field, message)| EmbedError::Config { field, message })?;
        let initial = load_cache(cache.as_deref());
        let metrics = Arc::new(Metrics::new());
        metrics.observe_state(&initial.state);
        let shared = SharedState::new(initial.state, initial.from_cache);
        let client = SyncClient::new(SyncDeps {
            config,
            cache,
            leeway,
            model: initial.model,
            liveness: initial.liveness,
            shared: Arc::clone(&shared),
            metrics: Arc::clone(&metrics),
            clock,
            objects: None,
        })?;
        Ok(EmbeddedSync { client, shared, metrics })
    }

    /// The state requests would be verified against (swapped on every applied batch).
    pub fn state(&self) -> &Arc<SharedState> {
        &self.shared
    }

    /// What the client has ACKed and whether its stream is up, as it changes.
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.client.progress.subscribe()
    }

    /// The edge's metrics in the Prometheus text format (`/metrics`).
    pub fn metrics_text(&self) -> String {
        String::from_utf8_lossy(&self.metrics.encode()).into_owned()
    }

    /// Runs until `shutdown` turns true (or its sender is dropped): connect,
    /// sync, reconnect with jittered backoff, as `stile edge` does.
    pub async fn run(&self, shutdown: watch::Receiver<bool>) {
        self.client.run(shutdown, None).await;
    }
}

/// Why an embedded client cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The `[sync]` table is not usable.
    #[error("{field}: {message}")]
    Config {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The API key cannot be used.
    #[error(transparent)]
    Key(#[from] KeyError),
}
