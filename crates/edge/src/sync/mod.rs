//! The edge's side of `EdgeService.Sync`: a Pingora background service (its own
//! runtime; the tonic channel is created inside it) that follows the control
//! plane's change log and swaps each applied version into the shared state.
//!
//! - Hello with the applied version; the control plane answers with a snapshot
//!   or the deltas after it (`docs/sync-protocol.md`).
//! - Messages ready together are applied as one batch: one new [`State`] is
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
//!   snapshot. Deltas are journaled beside it before they are ACKed
//!   ([`journal`]), so a restarted edge is never behind what it ACKed.
//!
//! Only this module sees the protocol types; [`Model`] converts them.

mod config;
mod journal;
mod model;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use pingora::server::ShutdownWatch;
use pingora::services::ServiceReadyNotifier;
use pingora::services::background::BackgroundService;
use prometheus::{Gauge, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use stile_proto::v1 as pb;
use stile_proto::v1::control_message::Kind as Cm;
use stile_proto::v1::edge_message::Kind as Em;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::Instrument;

pub use self::config::{SyncConfig, valid_edge_id};
pub use self::model::{Model, Purge};
use crate::clock::SharedClock;
use crate::metrics::Metrics;
use crate::state::{Liveness, SharedState, State, StateError, StateFile};

/// Largest message accepted from the control plane (a snapshot), bytes.
const MAX_MESSAGE: usize = 512 << 20;
/// Most messages applied as one batch.
const MAX_BATCH: usize = 1024;

/// The sync client.
#[derive(Debug)]
pub struct SyncClient {
    config: SyncConfig,
    edge_id: String,
    api_key: String,
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
}

/// What the edge starts from in sync mode.
#[derive(Debug)]
pub struct Initial {
    /// The state to serve first (empty and not ready without a cache).
    pub state: State,
    /// Whether it came from the cache file.
    pub from_cache: bool,
    /// The model behind it.
    pub model: Model,
    /// Its liveness handle, shared with every later state.
    pub liveness: Liveness,
}

/// Loads the cache file, if there is a usable one, and replays the deltas
/// journaled after it. A missing file starts empty;
/// an unreadable or invalid one is logged and ignored (the control plane sends
/// a snapshot), since the edge wrote it itself. Nothing is pruned here: the
/// local clock alone may be wrong (see [`SyncClient::prune_horizon`]); expired
/// entries go with the first change applied after a heartbeat.
pub fn load_cache(path: Option<&Path>) -> Initial {
    let liveness = Liveness::default();
    let empty = |liveness: Liveness| Initial {
        state: State { live: liveness.clone(), ..State::default() },
        from_cache: false,
        model: Model::default(),
        liveness,
    };
    let Some(path) = path else { return empty(liveness) };
    if !path.exists() {
        return empty(liveness);
    }
    let loaded = StateFile::read(path).and_then(|file| {
        let model = Model::from_file(&file, path)?;
        Ok((model, file.generated_at.unwrap_or(0)))
    });
    match loaded {
        Ok((mut model, fresh_at)) => {
            let replayed = journal::replay(path, &mut model);
            let state = model.to_state(fresh_at, &liveness);
            tracing::info!(
                state.cache = %path.display(), state.version = model.version, journal.replayed = replayed,
                "sync.cache_loaded"
            );
            Initial { state, from_cache: true, model, liveness }
        }
        Err(e) => {
            tracing::error!(error = %e, "sync.cache_unusable: starting empty, the control plane will send a snapshot");
            empty(liveness)
        }
    }
}

impl SyncClient {
    /// A client publishing into `shared`, starting from `model` (whose state must
    /// already be in `shared`, built with `liveness`).
    #[allow(clippy::too_many_arguments)] // reason: assembled once, in `server`.
    pub fn new(
        config: SyncConfig,
        cache: Option<PathBuf>,
        leeway: u64,
        model: Model,
        liveness: Liveness,
        shared: Arc<SharedState>,
        metrics: Arc<Metrics>,
        clock: SharedClock,
    ) -> Result<SyncClient, String> {
        let api_key = config.key()?;
        if format!("Bearer {api_key}").parse::<tonic::metadata::MetadataValue<_>>().is_err() {
            return Err("sync API key is not visible ASCII".into());
        }
        let sync_metrics = SyncMetrics::new(metrics.registry());
        Ok(SyncClient {
            edge_id: config.edge_id(),
            config,
            api_key,
            cache,
            leeway,
            shared,
            metrics,
            sync_metrics,
            clock,
            liveness,
            model: Mutex::new(model),
            cp_time: AtomicU64::new(0),
        })
    }

    /// Runs until shutdown: connect, sync, reconnect.
    pub async fn run(&self, mut shutdown: ShutdownWatch, mut ready: Option<ServiceReadyNotifier>) {
        let span = tracing::info_span!("sync", edge.id = %self.edge_id);
        let (writes, lane) = mpsc::channel::<FullWrite>(4);
        let lane_state = Arc::new(LaneState::default());
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
            let mut cache = CacheWriter::new(self.cache.as_deref(), writes, Arc::clone(&lane_state));
            let mut first = true;
            loop {
                let url = &self.config.endpoints[endpoint % self.config.endpoints.len()];
                if !first {
                    self.sync_metrics.reconnects.inc();
                }
                first = false;
                let outcome = tokio::select! {
                    r = self.session(url, &mut ready, &mut cache) => r,
                    _ = shutdown.changed() => break,
                };
                self.sync_metrics.connected.set(0);
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
            self.flush_cache(&mut cache, true).await;
            // Dropping the writer's sender ends the write lane.
            drop(cache);
            tracing::info!("sync.stopped");
        };
        async { tokio::join!(sync, self.write_lane(lane, &lane_state)) }.instrument(span).await;
    }

    /// One connection, until it fails.
    async fn session(&self, url: &str, ready: &mut Option<ServiceReadyNotifier>, cache: &mut CacheWriter) -> Outcome {
        let mut outcome = Outcome::default();
        let started = tokio::time::Instant::now();
        let result = self.stream(url, ready, cache, &mut outcome).await;
        outcome.lasted = started.elapsed() > Duration::from_secs(10);
        outcome.error = result.err();
        outcome
    }

    async fn stream(
        &self,
        url: &str,
        ready: &mut Option<ServiceReadyNotifier>,
        cache: &mut CacheWriter,
        outcome: &mut Outcome,
    ) -> Result<(), String> {
        let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())
            .map_err(|e| format!("bad endpoint {url:?}: {e}"))?
            .connect_timeout(Duration::from_millis(self.config.connect_timeout_ms))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        let channel = endpoint.connect().await.map_err(|e| format!("cannot connect to {url}: {e}"))?;
        let mut client = pb::edge_service_client::EdgeServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let (out, rx) = mpsc::channel::<pb::EdgeMessage>(64);
        let applied = self.applied_version();
        let hello = pb::EdgeHello {
            edge_id: self.edge_id.clone(),
            last_applied_version: applied,
            agent: concat!("stile-edge/", env!("CARGO_PKG_VERSION")).into(),
        };
        out.send(pb::EdgeMessage { kind: Some(Em::Hello(hello)) }).await.map_err(|_| "stream closed")?;
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        let bearer = format!("Bearer {}", self.api_key).parse().map_err(|_| "API key is not visible ASCII")?;
        request.metadata_mut().insert("authorization", bearer);
        let mut inbound = client.sync(request).await.map_err(status_text)?.into_inner();
        self.sync_metrics.connected.set(1);
        tracing::info!(endpoint = %url, applied, "sync.connected");

        let silence = Duration::from_millis(self.config.heartbeat_timeout_ms);
        loop {
            let first = match tokio::time::timeout(silence, inbound.message()).await {
                Err(_) => return Err(format!("no message from the control plane in {} ms", silence.as_millis())),
                Ok(Err(status)) => return Err(status_text(status)),
                Ok(Ok(None)) => return Err("the control plane closed the stream".into()),
                Ok(Ok(Some(m))) => m,
            };
            // Everything already received joins the batch: one state rebuild, one ACK.
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match inbound.message().now_or_never() {
                    Some(Ok(Some(m))) => batch.push(m),
                    _ => break,
                }
            }
            let now = self.clock.now();
            self.liveness.touch(now);
            let mut heartbeats = Vec::new();
            let mut changed = false;
            let mut snapshot = false;
            let mut deltas = Vec::new();
            let mut failed = None;
            {
                let mut model = self.lock_model();
                for msg in batch {
                    match msg.kind {
                        Some(Cm::Snapshot(s)) => match model.apply_snapshot(&s) {
                            Ok(purges) => {
                                if s.reset {
                                    tracing::error!(
                                        version = s.version,
                                        "sync.reset: the control plane's log is behind this edge; replacing the state"
                                    );
                                }
                                self.sync_metrics.snapshots.inc();
                                self.purged(&purges);
                                changed = true;
                                snapshot = true;
                            }
                            Err(e) => {
                                failed = Some((s.version, e));
                                break;
                            }
                        },
                        Some(Cm::Delta(d)) => {
                            let v = d.change.as_ref().map_or(0, |c| c.version);
                            match model.apply_delta(&d) {
                                Ok(purge) => {
                                    self.sync_metrics.deltas.inc();
                                    self.purged(purge.as_slice());
                                    changed = true;
                                    if model.version == v {
                                        deltas.push(d);
                                    }
                                }
                                Err(e) => {
                                    failed = Some((v, e));
                                    break;
                                }
                            }
                        }
                        Some(Cm::Heartbeat(h)) => heartbeats.push(h),
                        None => {}
                    }
                }
                if changed {
                    model.prune(self.prune_horizon(now), self.leeway);
                    self.publish(&model, now);
                    cache.dirty = true;
                }
            }
            let applied = self.applied_version();
            if changed {
                // The cache (file and journal) holds what is ACKed before the ACK leaves,
                // so an edge killed right after it restarts at that version, never behind
                // (no fsync here: this survives the process; the periodic write fsyncs).
                self.persist_before_ack(cache, snapshot, &deltas).await;
                outcome.applied = true;
                out.send(pb::EdgeMessage { kind: Some(Em::Ack(pb::Ack { version: applied })) })
                    .await
                    .map_err(|_| "stream closed")?;
                if let Some(r) = ready.take() {
                    r.notify_ready();
                }
            }
            if let Some((version, error)) = failed {
                tracing::error!(version, error = %error, "sync.nack");
                self.sync_metrics.nacks.inc();
                out.send(pb::EdgeMessage { kind: Some(Em::Nack(pb::Nack { version, error })) })
                    .await
                    .map_err(|_| "stream closed")?;
            }
            for h in heartbeats {
                self.cp_time.fetch_max(h.cp_time_ms / 1000, Ordering::Relaxed);
                // Skew: our clock minus the control plane's at the moment it sent, corrected by half the RTT.
                let local = i128::from(self.clock.now_ms());
                let skew = local - i128::from(h.cp_time_ms) - i128::from(h.rtt_ms / 2);
                let skew = i64::try_from(skew).unwrap_or(0);
                self.sync_metrics.skew.set(skew as f64 / 1000.0);
                self.sync_metrics.lag.set(i64::try_from(h.current_version.saturating_sub(applied)).unwrap_or(i64::MAX));
                let status = pb::EdgeStatus { heartbeat_seq: h.seq, clock_skew_ms: skew, applied_version: applied };
                out.send(pb::EdgeMessage { kind: Some(Em::Status(status)) }).await.map_err(|_| "stream closed")?;
            }
            self.observe_age();
            self.flush_cache(cache, false).await;
        }
    }

    /// Waits `wait`, keeping the age metric and the cache current meanwhile.
    async fn idle(&self, wait: Duration, cache: &mut CacheWriter) {
        let end = tokio::time::Instant::now() + wait;
        loop {
            self.observe_age();
            self.flush_cache(cache, false).await;
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
        self.sync_metrics.lag.set(0);
        tracing::debug!(state.version = state.version, "sync.applied");
        self.shared.store(state);
        // After the swap: the version metric never shows a version requests do not see yet.
        self.metrics.observe_state(&self.shared.load());
    }

    fn purged(&self, purges: &[Purge]) {
        for p in purges {
            // No cache storage yet: record it (metrics, log) so operators see it arrived.
            tracing::info!(version = p.version, prefix = %p.prefix, "sync.purge");
            self.sync_metrics.purges.inc();
            self.sync_metrics.purge_version.set(i64::try_from(p.version).unwrap_or(i64::MAX));
        }
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

    /// Makes what is about to be ACKed survive the process: the batch's deltas
    /// are appended to the journal (cost proportional to the deltas); after a
    /// snapshot the whole file is written (through the write lane, in order
    /// with the periodic writes), which also covers the journal so far.
    async fn persist_before_ack(&self, cache: &mut CacheWriter, snapshot: bool, deltas: &[pb::Delta]) {
        let Some(path) = self.cache.clone() else { return };
        cache.dirty = true;
        let result = if snapshot {
            let through = cache.journal.as_mut().map_or(0, journal::Journal::rotate);
            let file = self.lock_model().to_file(self.shared.load().fresh_at_now());
            let (done, written) = tokio::sync::oneshot::channel();
            let write = FullWrite { file, sync: false, through, done: Some(done) };
            if cache.writes.send(write).await.is_err() {
                return;
            }
            written.await.unwrap_or_else(|_| Err("the cache write lane stopped".into()))
        } else {
            // A small append to an open file: done in place, not worth a blocking-pool hop.
            match cache.journal.as_mut().map(|j| j.append(deltas)) {
                Some(Err(e)) => Err(format!("journal {}: {e}", path.display())),
                _ => Ok(()),
            }
        };
        if let Err(e) = result {
            self.sync_metrics.cache_writes.with_label_values(&["error"]).inc();
            tracing::error!(error = %e, "sync.cache_write_failed");
        }
    }

    /// Writes the whole cache file (fsync) when it is dirty and the interval
    /// has passed, or with `force` (at shutdown, waiting for it). The write runs
    /// in the write lane, not on the receive loop; one at a time.
    async fn flush_cache(&self, cache: &mut CacheWriter, force: bool) {
        if self.cache.is_none() {
            return;
        }
        if cache.lane.failed.swap(false, Ordering::AcqRel) {
            cache.dirty = true;
        }
        if !cache.dirty {
            return;
        }
        let interval = Duration::from_millis(self.config.cache_interval_ms);
        if !force && (cache.lane.busy.load(Ordering::Acquire) || cache.last.is_some_and(|t| t.elapsed() < interval)) {
            return;
        }
        let through = cache.journal.as_mut().map_or(0, journal::Journal::rotate);
        let file = self.lock_model().to_file(self.shared.load().fresh_at_now());
        cache.dirty = false;
        cache.last = Some(tokio::time::Instant::now());
        cache.lane.busy.store(true, Ordering::Release);
        let (done, written) = tokio::sync::oneshot::channel();
        let write = FullWrite { file, sync: true, through, done: force.then_some(done) };
        if cache.writes.send(write).await.is_ok() && force {
            let _ = written.await;
        }
    }

    /// Performs the full cache writes in order: temporary file, fsync when
    /// asked, rename, then the journal segments the new file covers go.
    async fn write_lane(&self, mut writes: mpsc::Receiver<FullWrite>, lane: &LaneState) {
        let Some(path) = self.cache.clone() else { return };
        while let Some(w) = writes.recv().await {
            let version = w.file.version;
            let p = path.clone();
            let result = tokio::task::spawn_blocking(move || {
                write_cache(&p, &w.file, w.sync).map_err(|e| e.to_string())?;
                journal::remove_through(&p, w.through).map_err(|e| format!("removing journal segments: {e}"))
            })
            .await
            .unwrap_or_else(|e| Err(format!("cache task: {e}")));
            match &result {
                Ok(()) => {
                    self.sync_metrics.cache_writes.with_label_values(&["ok"]).inc();
                    tracing::debug!(state.version = version, "sync.cache_written");
                }
                Err(e) => {
                    self.sync_metrics.cache_writes.with_label_values(&["error"]).inc();
                    tracing::error!(error = %e, "sync.cache_write_failed");
                    lane.failed.store(true, Ordering::Release);
                }
            }
            if w.sync {
                lane.busy.store(false, Ordering::Release);
            }
            if let Some(done) = w.done {
                let _ = done.send(result);
            }
        }
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
    error: Option<String>,
}

/// The receive loop's side of the cache.
#[derive(Debug)]
struct CacheWriter {
    /// Applied changes are not in a full write yet.
    dirty: bool,
    /// When the last full write was started.
    last: Option<tokio::time::Instant>,
    journal: Option<journal::Journal>,
    /// To the write lane.
    writes: mpsc::Sender<FullWrite>,
    lane: Arc<LaneState>,
}

impl CacheWriter {
    fn new(cache: Option<&Path>, writes: mpsc::Sender<FullWrite>, lane: Arc<LaneState>) -> CacheWriter {
        // The file on disk is as new as what was loaded: the first full write is due one interval
        // from now (a first snapshot is written before its ACK anyway).
        let last = Some(tokio::time::Instant::now());
        CacheWriter { dirty: false, last, journal: cache.map(journal::Journal::open), writes, lane }
    }
}

/// Shared between the receive loop and the write lane.
#[derive(Debug, Default)]
struct LaneState {
    /// A periodic (fsync'd) write is queued or running.
    busy: AtomicBool,
    /// A write failed: the next periodic write retries.
    failed: AtomicBool,
}

/// One full write of the cache file.
#[derive(Debug)]
struct FullWrite {
    file: StateFile,
    /// fsync before the rename (periodic and final writes).
    sync: bool,
    /// Journal segments up to this one are covered and removed afterwards.
    through: u64,
    /// Told the result, when someone waits.
    done: Option<tokio::sync::oneshot::Sender<Result<(), String>>>,
}

/// Writes the cache atomically: a 0600 temporary file beside it, fsync (with `sync`), rename.
fn write_cache(path: &Path, file: &StateFile, sync: bool) -> Result<(), StateError> {
    let err = |source| StateError::Read { path: path.to_owned(), source };
    let json = serde_json::to_vec(file).map_err(|e| err(std::io::Error::other(e)))?;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(&tmp).map_err(err)?;
    f.write_all(&json).map_err(err)?;
    if sync {
        f.sync_all().map_err(err)?;
    }
    drop(f);
    std::fs::rename(&tmp, path).map_err(err)?;
    Ok(())
}

fn status_text(s: tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

/// The sync client's metrics, registered in the edge's registry.
#[derive(Debug)]
struct SyncMetrics {
    connected: IntGauge,
    lag: IntGauge,
    skew: Gauge,
    reconnects: IntCounter,
    snapshots: IntCounter,
    deltas: IntCounter,
    nacks: IntCounter,
    purges: IntCounter,
    purge_version: IntGauge,
    cache_writes: IntCounterVec,
}

impl SyncMetrics {
    fn new(registry: &Registry) -> SyncMetrics {
        let m = SyncMetrics {
            connected: IntGauge::new("stile_edge_sync_connected", "1 while the sync stream to a control plane is up.")
                .expect("valid metric"),
            lag: IntGauge::new(
                "stile_edge_sync_lag_versions",
                "Control-plane version minus applied version, as of the last heartbeat.",
            )
            .expect("valid metric"),
            skew: Gauge::new(
                "stile_edge_clock_skew_seconds",
                "This edge's clock minus the control plane's, from heartbeats (RTT-corrected).",
            )
            .expect("valid metric"),
            reconnects: IntCounter::new("stile_edge_sync_reconnects_total", "Sync stream reconnect attempts.")
                .expect("valid metric"),
            snapshots: IntCounter::new("stile_edge_sync_snapshots_total", "Snapshots applied.").expect("valid metric"),
            deltas: IntCounter::new("stile_edge_sync_deltas_total", "Deltas applied.").expect("valid metric"),
            nacks: IntCounter::new("stile_edge_sync_nacks_total", "Messages refused (NACKed).").expect("valid metric"),
            purges: IntCounter::new("stile_edge_purges_total", "Purges received (recorded; no cache yet).")
                .expect("valid metric"),
            purge_version: IntGauge::new("stile_edge_purge_last_version", "Log version of the last purge received.")
                .expect("valid metric"),
            cache_writes: IntCounterVec::new(
                Opts::new("stile_edge_sync_cache_writes_total", "Writes of the state cache file, by result."),
                &["result"],
            )
            .expect("valid metric"),
        };
        for c in [
            Box::new(m.connected.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.lag.clone()),
            Box::new(m.skew.clone()),
            Box::new(m.reconnects.clone()),
            Box::new(m.snapshots.clone()),
            Box::new(m.deltas.clone()),
            Box::new(m.nacks.clone()),
            Box::new(m.purges.clone()),
            Box::new(m.purge_version.clone()),
            Box::new(m.cache_writes.clone()),
        ] {
            registry.register(c).expect("unique metric names");
        }
        for r in ["ok", "error"] {
            m.cache_writes.with_label_values(&[r]);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_writes_are_private_and_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.json");
        let mut m = Model::default();
        let key = pb::EdgeKey { key_id: 1, state: pb::KeyState::Active.into(), secret: vec![5; 32] };
        m.apply_snapshot(&pb::Snapshot { version: 7, keys: vec![key], ..Default::default() }).unwrap();
        write_cache(&path, &m.to_file(100), true).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let initial = load_cache(Some(&path));
        assert!(initial.from_cache);
        assert_eq!((initial.state.version, initial.state.fresh_at), (7, 100));
        assert!(initial.state.keys.contains(1));
        std::fs::write(&path, "{").unwrap();
        assert!(!load_cache(Some(&path)).from_cache, "a broken cache is ignored");
        assert!(!load_cache(Some(&dir.path().join("none"))).from_cache);
    }
}
