//! Simulated edges: the edge's real sync client ([`EmbeddedSync`]: session,
//! `Model::apply_batch`, ACKs, reconnect backoff, optional cache) without the
//! proxy, each behind its own [`Relay`]s, each with its own state. A watcher
//! per edge records when each version was ACKed and when its stream opened
//! and closed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use stile_edge::clock::SystemClock;
use stile_edge::state::SharedState;
use stile_edge::sync::{EmbeddedSync, Progress, SyncConfig};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::relay::{Relay, Shape};

/// Entries of an edge's ACK history kept (the newest).
const HISTORY: usize = 1 << 16;

/// One edge to simulate.
#[derive(Clone, Debug)]
pub struct EdgeSpec {
    /// Its edge id.
    pub id: String,
    /// Its network, per endpoint.
    pub shape: Shape,
    /// The control-plane gRPC addresses it follows, in order (one relay each).
    pub endpoints: Vec<SocketAddr>,
    /// Its `state.file` (cache and journal), if any.
    pub cache: Option<PathBuf>,
    /// `sync.backoff_initial_ms` and `sync.backoff_max_ms`.
    pub backoff_ms: (u64, u64),
}

/// What one edge did, as its watcher saw it.
#[derive(Debug, Default)]
pub struct EdgeLog {
    /// (version ACKed, when the ACK was handed to the stream), oldest first.
    acked: Mutex<Vec<(u64, Instant)>>,
    /// (when, connected) for every stream opened and closed, oldest first.
    streams: Mutex<Vec<(Instant, bool)>>,
}

impl EdgeLog {
    /// When the edge first ACKed `version` or a later one.
    pub fn acked_at(&self, version: u64) -> Option<Instant> {
        let a = lock(&self.acked);
        let i = a.partition_point(|(v, _)| *v < version);
        a.get(i).map(|(_, t)| *t)
    }

    /// Stream openings and closings at or after `since`.
    pub fn streams_since(&self, since: Instant) -> Vec<(Instant, bool)> {
        lock(&self.streams).iter().copied().filter(|(t, _)| *t >= since).collect()
    }

    fn record(&self, before: &Progress, now: &Progress) {
        if now.applied > before.applied {
            let mut a = lock(&self.acked);
            if a.len() == HISTORY {
                a.drain(..HISTORY / 2);
            }
            a.push((now.applied, now.applied_at.unwrap_or_else(Instant::now)));
        }
        if now.connects != before.connects || now.connected != before.connected {
            lock(&self.streams).push((now.connected_at.unwrap_or_else(Instant::now), now.connected));
        }
    }
}

/// One revocation's way to one edge and back, in consecutive stages (they
/// add up to call start → ACK delivered to the control plane).
#[derive(Clone, Copy, Debug, Default)]
pub struct Stages {
    /// Call start → the edge's relay read the delta from the control plane:
    /// the commit, the fan-out, the control plane's scheduling.
    pub control: Duration,
    /// The shaped link down (delay, jitter).
    pub down_wire: Duration,
    /// The relay delivering it late (its runtime's scheduling).
    pub down_late: Duration,
    /// Delivered → the edge handed its ACK to the stream: decode, apply,
    /// publish, ACK, and the simulator's scheduling.
    pub edge: Duration,
    /// ACK handed to the stream → the relay read it.
    pub up_queue: Duration,
    /// The shaped link up.
    pub up_wire: Duration,
    /// The relay delivering the ACK late.
    pub up_late: Duration,
}

impl Stages {
    /// The whole way minus the shaped links' own time (delay and jitter
    /// drawn): what Stile and the simulator's scheduling took.
    pub fn off_wire(&self) -> Duration {
        self.control + self.down_late + self.edge + self.up_queue + self.up_late
    }
}

/// One simulated edge.
#[derive(Debug)]
pub struct SimEdge {
    /// Its spec.
    pub spec: EdgeSpec,
    /// One relay per endpoint.
    pub relays: Vec<Relay>,
    /// Its sync client.
    pub sync: Arc<EmbeddedSync>,
    /// What it did.
    pub log: Arc<EdgeLog>,
    progress: watch::Receiver<Progress>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl SimEdge {
    /// The state its requests would be verified against.
    pub fn state(&self) -> &Arc<SharedState> {
        self.sync.state()
    }

    /// Its progress now.
    pub fn progress(&self) -> Progress {
        *self.progress.borrow()
    }

    /// Bytes delivered to it and from it, over every relay.
    pub fn bytes(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.relays.iter().fold((0, 0), |(d, u), r| (d + r.traffic.down.load(Relaxed), u + r.traffic.up.load(Relaxed)))
    }

    /// When its ACK of `version` (or later) reached the control plane: the
    /// first edge → control plane bytes its relays delivered after the edge
    /// handed that ACK to its stream (the ACK itself, or anything queued
    /// just before it on the same connection).
    pub fn ack_delivered(&self, version: u64) -> Option<Instant> {
        let sent = self.log.acked_at(version)?;
        self.relays.iter().filter_map(|r| r.traffic.first_up_delivery_after(sent)).min()
    }

    /// Where the time from `t0` (a revoke call's start) to the delivery of
    /// this edge's ACK of `version` went, from the relays' chunk stamps: the
    /// last chunk delivered to the edge before it ACKed (the delta) and the
    /// first chunk it sent after (the ACK). `None` until both are known.
    pub fn stages(&self, version: u64, t0: Instant) -> Option<Stages> {
        let acked = self.log.acked_at(version)?;
        let down = self.relays.iter().filter_map(|r| r.traffic.last_down_before(acked)).max_by_key(|c| c.delivered)?;
        let up = self.relays.iter().filter_map(|r| r.traffic.first_up_after(acked)).min_by_key(|c| c.read)?;
        Some(Stages {
            control: down.read.saturating_duration_since(t0),
            down_wire: down.wire(),
            down_late: down.late(),
            edge: acked.saturating_duration_since(down.delivered),
            up_queue: up.read.saturating_duration_since(acked),
            up_wire: up.wire(),
            up_late: up.late(),
        })
    }

    /// Stops its client (and its relays with it when dropped).
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        let mut tasks = self.tasks.drain(..);
        if let Some(run) = tasks.next() {
            let _ = tokio::time::timeout(Duration::from_secs(5), run).await;
        }
        // The watcher follows the client's progress, which outlives it: stop it.
        tasks.for_each(|t| t.abort());
    }
}

/// Starts one edge: its relays on `relay_rt`, its client and watcher on `edge_rt`.
pub async fn start_edge(spec: EdgeSpec, api_key: &str, relay_rt: &Handle, edge_rt: &Handle) -> Result<SimEdge> {
    let mut relays = Vec::with_capacity(spec.endpoints.len());
    for upstream in &spec.endpoints {
        let (upstream, shape) = (*upstream, spec.shape);
        relays.push(relay_rt.spawn(async move { Relay::start(upstream, shape).await }).await??);
    }
    let config = SyncConfig {
        endpoints: relays.iter().map(|r| format!("http://{}", r.addr)).collect(),
        api_key: api_key.to_owned(),
        edge_id: spec.id.clone(),
        // A far edge's snapshot may take a while to cross its link.
        connect_timeout_ms: 5_000,
        backoff_initial_ms: spec.backoff_ms.0,
        backoff_max_ms: spec.backoff_ms.1,
        ..SyncConfig::default()
    };
    let sync = Arc::new(
        EmbeddedSync::new(config, spec.cache.clone(), 30, Arc::new(SystemClock))
            .with_context(|| format!("edge {}", spec.id))?,
    );
    let log = Arc::new(EdgeLog::default());
    let (stop, stopped) = watch::channel(false);
    let progress = sync.progress();
    let run = {
        let sync = Arc::clone(&sync);
        edge_rt.spawn(async move { sync.run(stopped).await })
    };
    let watcher = {
        let (log, mut rx) = (Arc::clone(&log), sync.progress());
        edge_rt.spawn(async move {
            let mut before = *rx.borrow_and_update();
            while rx.changed().await.is_ok() {
                let now = *rx.borrow_and_update();
                log.record(&before, &now);
                before = now;
            }
        })
    };
    Ok(SimEdge { spec, relays, sync, log, progress, stop, tasks: vec![run, watcher] })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
