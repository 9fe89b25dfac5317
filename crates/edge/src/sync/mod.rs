//! The edge's side of `EdgeService.Sync`: a Pingora background service (its own
//! runtime; the tonic channel is created inside it) that follows the control
//! plane's change log and swaps each applied version into the shared state.
//!
//! - Hello with the applied version; the control plane answers with a snapshot
//!   or the deltas after it (`docs/sync-protocol.md`).
//! - Messages ready together are applied as one batch: one new [`State`](crate::state::State) is
//!   built and published atomically, then the batch's last version is ACKed —
//!   an ACK means "enforced by every request from now on".
//! - Never an older version: older snapshots are NACKed (unless the control
//!   plane says `reset`), duplicate deltas ignored, gaps NACKed; a NACK keeps
//!   the last good state and makes the control plane send a snapshot.
//! - Heartbeats carry the control plane's time; the edge exports its clock skew
//!   and answers with an `EdgeStatus`. Every message refreshes the state's
//!   liveness, from which staleness (`state.max_age_secs`, `stale_policy`) is
//!   measured while the control plane is unreachable.
//! - On any failure: reconnect to the next endpoint with jittered exponential
//!   backoff, resuming from the applied version.
//! - The applied state is cached in `state.file` (written atomically, 0600: it
//!   holds key secrets), at most every `sync.cache_interval_ms` and off the
//!   receive loop, so a restarted edge resumes with deltas instead of a full
//!   snapshot. Deltas are journaled beside it before they are ACKed, so a
//!   restarted edge is never behind what it ACKed.
//!
//! Layers, top to bottom: `SyncClient` orchestrates (reconnects, publishes,
//! ACKs, metrics); `session.rs` is one connection (connect, hello, batches,
//! ACK/NACK/status); [`Model::apply_batch`] applies a batch purely;
//! `persist.rs` and `journal.rs` keep the cache; `metrics.rs` counts.
//! Only this module sees the protocol types; [`Model`] converts them.

mod config;
#[cfg(feature = "test-util")]
mod embedded;
mod image;
mod journal;
mod metrics;
mod model;
mod persist;
mod session;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::ServiceReadyNotifier;
use pingora::services::background::BackgroundService;
use stile_proto::v1 as pb;
use tokio::sync::watch;
use tracing::Instrument;

pub use self::config::{KeyError, SyncConfig};
#[cfg(feature = "test-util")]
pub use self::embedded::{EmbedError, EmbeddedSync};
pub use self::image::{CacheImage, decode as decode_cache_image};
use self::metrics::SyncMetrics;
pub use self::model::{ApplyError, BatchOutcome, Model, Purge};
use self::persist::CacheWriter;
pub(crate) use self::persist::{Initial, load_cache};
use self::session::{Session, SyncError};
use crate::cache::Cache;
pub use crate::cache::PurgeTarget;
use crate::clock::SharedClock;
use crate::metrics::Metrics;
use crate::state::{Liveness, SharedState};

/// What a [`SyncClient`] is built from (assembled once, in `server`).
#[derive(Debug)]
pub(crate) struct SyncDeps {
    /// The `[sync]` table.
    pub(crate) config: SyncConfig,
    /// `state.file`, the cache of the applied state (none: no cache).
    pub(crate) cache: Option<PathBuf>,
    /// The token leeway, seconds (revocations are pruned this long after they expire).
    pub(crate) leeway: u64,
    /// The model to start from, whose state must already be in `shared`, built with `liveness`.
    pub(crate) model: Model,
    /// The liveness handle every published state shares.
    pub(crate) liveness: Liveness,
    /// Where states are published.
    pub(crate) shared: Arc<SharedState>,
    /// The edge's metrics (the sync client registers its own beside them).
    pub(crate) metrics: Arc<Metrics>,
    /// Time source.
    pub(crate) clock: SharedClock,
    /// The object cache purges apply to (none: purges are only counted).
    pub(crate) objects: Option<&'static Cache>,
}

/// The sync client: a Pingora background service.
#[derive(Debug)]
pub(crate) struct SyncClient {
    config: SyncConfig,
    edge_id: String,
    api_key: String,
    /// TLS for `https://` endpoints (`sync.ca_file`, the client certificate), checked at start.
    tls: Option<tonic::transport::ClientTlsConfig>,
    cache: Option<PathBuf>,
    leeway: u64,
    shared: Arc<SharedState>,
    metrics: Arc<Metrics>,
    sync_metrics: SyncMetrics,
    clock: SharedClock,
    liveness: Liveness,
    model: Mutex<Model>,
    /// The control plane's time in the newest heartbeat, Unix seconds (0: none yet).
    cp_time: AtomicU64,
    objects: Option<&'static Cache>,
    /// What the client has done so far, for whoever watches (the embedded client).
    progress: watch::Sender<Progress>,
}

/// How far a sync client has come: what it ACKed, whether its stream is up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// The newest version ACKed (enforced; 0 before the first).
    pub applied: u64,
    /// When the ACK of `applied` was handed to the stream.
    pub applied_at: Option<tokio::time::Instant>,
    /// Whether a stream to a control plane is open.
    pub connected: bool,
    /// Streams opened so far.
    pub connects: u64,
    /// When the newest stream opened (or, once `connected` is false, closed).
    pub connected_at: Option<tokio::time::Instant>,
}

impl SyncClient {
    /// A client publishing into `deps.shared`, starting from `deps.model`.
    pub(crate) fn new(deps: SyncDeps) -> Result<SyncClient, KeyError> {
        let SyncDeps { config, cache, leeway, model, liveness, shared, metrics, clock, objects } = deps;
        let api_key = config.key()?;
        let tls = config.tls(clock.now())?;
        let sync_metrics = SyncMetrics::new(metrics.registry());
        let progress = watch::channel(Progress { applied: model.version, ..Progress::default() }).0;
        Ok(SyncClient {
            edge_id: config.edge_id(),
            config,
            api_key,
            tls,
            cache,
            leeway,
            shared,
            metrics,
            sync_metrics,
            clock,
            liveness,
            model: Mutex::new(model),
            cp_time: AtomicU64::new(0),
            objects,
            progress,
        })
    }

    /// Runs until shutdown: connect, sync, reconnect.
    pub(crate) async fn run(&self, mut shutdown: ShutdownWatch, mut ready: Option<ServiceReadyNotifier>) {
        let span = tracing::info_span!("sync", edge.id = %self.edge_id);
        let interval = Duration::from_millis(self.config.cache_interval_ms);
        let (mut cache, lane) = persist::cache(self.cache.clone(), interval, self.sync_metrics.clone());
        let sync = async {
            // A cached state lets the proxy start at once (stale or not: staleness is
            // enforced per request and in /readyz).
            if self.applied_version() > 0
                && let Some(r) = ready.take()
            {
                r.notify_ready();
            }
            let mut attempt: u32 = 0;
            let mut endpoint = 0usize;
            let mut first = true;
            loop {
                let url = &self.config.endpoints[endpoint % self.config.endpoints.len()];
                if !first {
                    self.sync_metrics.reconnect();
                }
                first = false;
                let outcome = tokio::select! {
                    r = self.session(url, &mut ready, &mut cache) => r,
                    _ = shutdown.changed() => break,
                };
                self.sync_metrics.connected(false);
                self.progress.send_modify(|p| {
                    p.connected = false;
                    p.connected_at = Some(tokio::time::Instant::now());
                });
                let wait = match outcome {
                    Outcome { applied: true, .. } | Outcome { lasted: true, .. } => {
                        attempt = 0;
                        self.backoff(0)
                    }
                    _ => {
                        attempt = attempt.saturating_add(1);
                        self.backoff(attempt)
                    }
                };
                match &outcome.error {
                    Some(e) => {
                        tracing::warn!(endpoint = %url, error = %e, retry_ms = wait.as_millis() as u64, "sync.disconnected")
                    }
                    None => tracing::info!(endpoint = %url, retry_ms = wait.as_millis() as u64, "sync.disconnected"),
                }
                endpoint = endpoint.wrapping_add(1);
                tokio::select! {
                    () = self.idle(wait, &mut cache) => {}
                    _ = shutdown.changed() => break,
                }
            }
            cache.flush_now(|| self.cache_file()).await;
            // Dropping the writer's sender ends the write lane.
            drop(cache);
            tracing::info!("sync.stopped");
        };
        async { tokio::join!(sync, lane.run()) }.instrument(span).await;
    }

    /// One connection, until it fails.
    async fn session(&self, url: &str, ready: &mut Option<ServiceReadyNotifier>, cache: &mut CacheWriter) -> Outcome {
        let mut outcome = Outcome::default();
        let started = tokio::time::Instant::now();
        let result = self.follow(url, ready, cache, &mut outcome).await;
        outcome.lasted = started.elapsed() > Duration::from_secs(10);
        outcome.error = result.err();
        outcome
    }

    /// Connects, then applies batch after batch until the connection fails.
    async fn follow(
        &self,
        url: &str,
        ready: &mut Option<ServiceReadyNotifier>,
        cache: &mut CacheWriter,
        outcome: &mut Outcome,
    ) -> Result<(), SyncError> {
        // A snapshot in parts cut off with the previous stream is started again on this one.
        self.lock_model().abandon_snapshot();
        let applied = self.applied_version();
        let mut session =
            Session::connect(url, &self.config, self.tls.as_ref(), &self.edge_id, &self.api_key, applied).await?;
        self.sync_metrics.connected(true);
        self.progress.send_modify(|p| {
            p.connected = true;
            p.connects += 1;
            p.connected_at = Some(tokio::time::Instant::now());
        });
        tracing::info!(endpoint = %url, applied, "sync.connected");
        loop {
            let batch = session.receive_batch().await?;
            outcome.applied |= self.handle(&session, batch, ready, cache).await?;
            self.observe_age();
            cache.flush_due(|| self.cache_file()).await;
        }
    }

    /// Applies one batch and answers it: publish, persist, ACK (the proxy may
    /// start then; returns true when something was applied), NACK, heartbeat status.
    async fn handle(
        &self,
        session: &Session,
        batch: Vec<pb::ControlMessage>,
        ready: &mut Option<ServiceReadyNotifier>,
        cache: &mut CacheWriter,
    ) -> Result<bool, SyncError> {
        let now = self.clock.now();
        self.liveness.touch(now);
        let batch = {
            let mut model = self.lock_model();
            let outcome = model.apply_batch(batch, self.prune_horizon(now), self.leeway);
            if outcome.changed {
                self.publish(&model, now);
                cache.changed();
            }
            outcome
        };
        self.record(&batch);
        let applied = self.applied_version();
        if batch.changed {
            // The cache (file and journal) holds what is ACKed before the ACK leaves,
            // so an edge killed right after it restarts at that version, never behind
            // (no fsync here: this survives the process; the periodic write fsyncs).
            if batch.snapshot {
                cache.persist_snapshot(|| self.cache_file()).await;
            } else {
                cache.persist_deltas(&batch.journal);
            }
            session.ack(applied).await?;
            self.progress.send_modify(|p| {
                p.applied = applied;
                p.applied_at = Some(tokio::time::Instant::now());
            });
            if let Some(r) = ready.take() {
                r.notify_ready();
            }
        }
        if let Some((version, error)) = batch.nack {
            tracing::error!(version, error = %error, "sync.nack");
            self.sync_metrics.nack();
            session.nack(version, error.to_string()).await?;
        }
        for h in batch.heartbeats {
            self.cp_time.fetch_max(h.cp_time_ms / 1000, Ordering::Relaxed);
            // Skew: our clock minus the control plane's at the moment it sent, corrected by half the RTT.
            let local = i128::from(self.clock.now_ms());
            let skew = local - i128::from(h.cp_time_ms) - i128::from(h.rtt_ms / 2);
            let skew = i64::try_from(skew).unwrap_or(0);
            self.sync_metrics.skew_ms(skew);
            self.sync_metrics.lag(h.current_version.saturating_sub(applied));
            session
                .status(pb::EdgeStatus { heartbeat_seq: h.seq, clock_skew_ms: skew, applied_version: applied })
                .await?;
        }
        Ok(batch.changed)
    }

    /// Logs and counts what a batch applied.
    fn record(&self, batch: &BatchOutcome) {
        for version in &batch.resets {
            tracing::error!(version, "sync.reset: the control plane's log is behind this edge; replacing the state");
        }
        self.sync_metrics.applied(batch.snapshots, batch.deltas);
        for p in &batch.purges {
            // Applied to the cache before the batch is ACKed: once the control plane
            // hears the ACK, no lookup here returns what the purge matches.
            tracing::info!(
                version = p.version,
                purge.kind = p.target.label(),
                purge.path = p.target.path(),
                "sync.purge"
            );
            if let Some(objects) = self.objects {
                objects.purge(&p.target);
            }
            self.sync_metrics.purge(p.version);
        }
    }

    /// Waits `wait`, keeping the age metric and the cache current meanwhile.
    async fn idle(&self, wait: Duration, cache: &mut CacheWriter) {
        let end = tokio::time::Instant::now() + wait;
        loop {
            self.observe_age();
            cache.flush_due(|| self.cache_file()).await;
            let next = (tokio::time::Instant::now() + Duration::from_millis(500)).min(end);
            tokio::time::sleep_until(next).await;
            if next >= end {
                return;
            }
        }
    }

    /// The time before which (less the leeway) a revocation may be dropped: the
    /// earlier of this edge's clock and the control plane's (from heartbeats),
    /// which set the revocations' and the tokens' expiry. The edge's clock alone
    /// is not enough: after it jumps ahead, entries dropped then would be gone
    /// for good, and once it is set back the tokens they revoked would pass again.
    fn prune_horizon(&self, now: u64) -> u64 {
        now.min(self.cp_time.load(Ordering::Relaxed))
    }

    fn publish(&self, model: &Model, now: u64) {
        let state = model.to_state(now, &self.liveness);
        let current = self.shared.load().version;
        if state.version < current {
            // Only a control-plane reset gets here (the model refuses older snapshots otherwise).
            tracing::warn!(state.version = state.version, state.current = current, "sync.version_reset");
        }
        self.sync_metrics.lag(0);
        tracing::debug!(state.version = state.version, "sync.applied");
        self.shared.store(state);
        // After the swap: the version metric never shows a version requests do not see yet.
        self.metrics.observe_state(&self.shared.load());
    }

    /// The cache file form of the applied state.
    fn cache_file(&self) -> CacheImage {
        self.lock_model().to_image(self.shared.load().fresh_at_now())
    }

    fn observe_age(&self) {
        let now = self.clock.now();
        let fresh = self.shared.load().fresh_at_now();
        self.metrics.observe_age(now, fresh);
    }

    fn applied_version(&self) -> u64 {
        self.lock_model().version
    }

    fn lock_model(&self) -> std::sync::MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let c = &self.config;
        let cap = c.backoff_initial_ms.saturating_mul(1u64 << attempt.min(20)).min(c.backoff_max_ms);
        // Jitter: uniformly in [cap/2, cap], so a fleet does not reconnect in lockstep.
        let ms = rand::random_range(cap / 2..=cap.max(1));
        Duration::from_millis(ms)
    }
}

#[async_trait]
impl BackgroundService for SyncClient {
    async fn start_with_ready_notifier(&self, shutdown: ShutdownWatch, ready: ServiceReadyNotifier) {
        self.run(shutdown, Some(ready)).await;
    }
}

/// How one connection went.
#[derive(Debug, Default)]
struct Outcome {
    /// Something was applied (the connection worked).
    applied: bool,
    /// It stayed up for a while.
    lasted: bool,
    /// Why it ended.
    error: Option<SyncError>,
}
