//! The control plane's side of `EdgeService.Sync`: one session per edge stream.
//!
//! Protocol (normative description in `docs/sync-protocol.md`):
//! 1. the edge sends `EdgeHello { edge_id, last_applied_version }`;
//! 2. the session answers with a `Snapshot` when the edge is new (0), ahead of
//!    the log (`reset`), older than the log's oldest entry, or more than
//!    `sync.max_lag_versions` behind; otherwise with the `Delta`s after its
//!    version, in order;
//! 3. then it streams new deltas as they are committed, and a `Heartbeat`
//!    every `sync.heartbeat_interval_ms` when idle;
//! 4. the edge ACKs each version it applied (an ACK of v means every version
//!    up to v is enforced), answers heartbeats with `EdgeStatus` (clock skew),
//!    and NACKs what it cannot apply — the session logs it and sends a snapshot.
//!
//! Fan-out without unbounded memory: commits bump a `watch<u64>` with the
//! newest version ([`VersionWatch`]); each session, when woken, reads
//! `log_since(sent, LOG_BATCH)` from the store itself and pushes through a
//! small bounded channel (`SEND_BUFFER` messages) into its stream. A slow
//! edge only slows its own session: it blocks on its own channel. If it falls
//! more than the maximum lag behind it gets a snapshot instead of the backlog,
//! and if its stream accepts nothing for `sync.send_timeout_ms` (it stopped
//! reading) the session ends. Nothing is queued per edge beyond that channel.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use stile_proto::v1 as pb;
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};
use tracing::Instrument;

use crate::clock::Clock;
use crate::config::SyncConfig;
use crate::convert::edge_key;
use crate::fleet::Fleet;
use crate::fleet::Registration;
use crate::model::{ChangeKind, KeyState, valid_name};
use crate::store::Store;
use crate::store::notify::VersionWatch;
use crate::store::{LogRead, Snapshot};

/// The response stream of `Sync`.
pub(crate) type SyncStream = Pin<Box<dyn Stream<Item = Result<pb::ControlMessage, Status>> + Send + 'static>>;

/// Messages buffered between a session and its stream. Small on purpose: this
/// is all the memory a stalled edge can hold in this process.
const SEND_BUFFER: usize = 8;
/// Changes read from the log at a time.
const LOG_BATCH: usize = 256;
/// Least time between two snapshots caused by NACKs, so an edge that keeps
/// refusing cannot make the session loop.
const NACK_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(1);

/// What every sync session uses: the store (the change log), the registry of
/// connected edges, the newest version, the stop flag, the clock and the
/// `[sync]` settings.
#[derive(Debug)]
pub(crate) struct SyncCtx {
    store: Arc<dyn Store>,
    fleet: Arc<Fleet>,
    versions: Arc<VersionWatch>,
    /// Set when the server stops: sessions end so the graceful shutdown does
    /// not wait for long-lived streams.
    stopping: watch::Sender<bool>,
    clock: Arc<dyn Clock>,
    cfg: SyncConfig,
}

impl SyncCtx {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        fleet: Arc<Fleet>,
        versions: Arc<VersionWatch>,
        clock: Arc<dyn Clock>,
        cfg: SyncConfig,
    ) -> SyncCtx {
        SyncCtx { store, fleet, versions, stopping: watch::channel(false).0, clock, cfg }
    }

    /// Ends every session (the server is stopping).
    pub(crate) fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Starts a session on a freshly opened stream and returns its response stream.
    pub(crate) fn open(
        self: &Arc<Self>,
        caller: String,
        remote: Option<SocketAddr>,
        inbound: Streaming<pb::EdgeMessage>,
    ) -> SyncStream {
        let (tx, rx) = mpsc::channel(SEND_BUFFER);
        let s = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(status) = run(s, caller, remote, inbound, tx.clone()).await {
                // Best effort: the edge may be gone.
                let _ = tx.try_send(Err(status));
            }
        });
        Box::pin(ReceiverStream::new(rx))
    }

    fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    fn now(&self) -> u64 {
        self.clock.now_secs()
    }
}

/// State the reader half shares with the writer half of one session.
#[derive(Debug, Default)]
struct Session {
    /// Set by a NACK; the writer answers with a snapshot.
    nacked: AtomicBool,
    /// Wakes the writer (NACK, reader finished).
    wake: Notify,
    /// Set when the inbound half ended (stream closed, error or timeout).
    closed: AtomicBool,
    /// Sequence number of the last heartbeat sent, and when (ms since session start).
    heartbeat_seq: AtomicU64,
    heartbeat_sent_ms: AtomicU64,
    /// Last measured round trip, ms.
    rtt_ms: AtomicU32,
}

async fn run(
    s: Arc<SyncCtx>,
    caller: String,
    remote: Option<SocketAddr>,
    mut inbound: Streaming<pb::EdgeMessage>,
    tx: mpsc::Sender<Result<pb::ControlMessage, Status>>,
) -> Result<(), Status> {
    let cfg = &s.cfg;
    let first = tokio::time::timeout(Duration::from_millis(cfg.hello_timeout_ms), inbound.message())
        .await
        .map_err(|_| Status::deadline_exceeded("no EdgeHello within sync.hello_timeout_ms"))??;
    let hello = match first.and_then(|m| m.kind) {
        Some(pb::edge_message::Kind::Hello(h)) => h,
        _ => return Err(Status::invalid_argument("the first message on the Sync stream must be an EdgeHello")),
    };
    if !valid_name(&hello.edge_id) {
        return Err(Status::invalid_argument(format!(
            "edge_id {:?} must be 1..64 characters of [a-z0-9._-]",
            hello.edge_id
        )));
    }
    let span = tracing::info_span!("sync", edge.id = %hello.edge_id, edge.addr = ?remote, caller = %caller);
    async move {
        let registration = s.fleet.register(&hello.edge_id, remote, s.now_ms(), hello.last_applied_version);
        tracing::info!(applied = hello.last_applied_version, agent = %hello.agent, "sync.connected");
        let session = Arc::new(Session::default());
        let started = Instant::now();
        let reader = tokio::spawn(read_loop(Arc::clone(&s), registration.id, Arc::clone(&session), inbound, started));
        let result = write_loop(&s, &registration, &session, &tx, hello.last_applied_version, started).await;
        reader.abort();
        match &result {
            Ok(why) => tracing::info!(reason = why, "sync.disconnected"),
            Err(e) => tracing::warn!(error = %e, "sync.disconnected"),
        }
        drop(registration);
        result.map(|_| ())
    }
    .instrument(span)
    .await
}

/// Reads ACKs, NACKs and statuses until the stream ends or stays silent for
/// `sync.edge_timeout_ms`.
async fn read_loop(
    s: Arc<SyncCtx>,
    id: u64,
    session: Arc<Session>,
    mut inbound: Streaming<pb::EdgeMessage>,
    started: Instant,
) {
    let silence = Duration::from_millis(s.cfg.edge_timeout_ms);
    loop {
        let msg = match tokio::time::timeout(silence, inbound.message()).await {
            Err(_) => {
                tracing::warn!(silent_ms = s.cfg.edge_timeout_ms, "sync.edge_silent");
                break;
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "sync.inbound_error");
                break;
            }
            Ok(Ok(None)) => break,
            Ok(Ok(Some(m))) => m,
        };
        let now_ms = s.now_ms();
        match msg.kind {
            Some(pb::edge_message::Kind::Ack(a)) => s.fleet.ack(id, a.version, now_ms),
            Some(pb::edge_message::Kind::Nack(n)) => {
                tracing::warn!(version = n.version, error = %n.error, "sync.nack");
                s.fleet.nack(id, &n.error, now_ms);
                session.nacked.store(true, Ordering::Release);
                session.wake.notify_one();
            }
            Some(pb::edge_message::Kind::Status(st)) => {
                let mut rtt = None;
                if st.heartbeat_seq == session.heartbeat_seq.load(Ordering::Acquire) {
                    let sent = session.heartbeat_sent_ms.load(Ordering::Acquire);
                    let ms = u32::try_from(elapsed_ms(started).saturating_sub(sent)).unwrap_or(u32::MAX);
                    session.rtt_ms.store(ms, Ordering::Release);
                    rtt = Some(ms);
                }
                s.fleet.update(id, |v| {
                    v.skew_ms = st.clock_skew_ms;
                    v.last_seen_ms = now_ms;
                    if let Some(ms) = rtt {
                        v.rtt_ms = ms;
                    }
                });
                s.fleet.ack(id, st.applied_version, now_ms);
            }
            Some(pb::edge_message::Kind::Hello(_)) => {
                tracing::warn!("sync.protocol_error: a second EdgeHello");
                break;
            }
            None => {}
        }
    }
    session.closed.store(true, Ordering::Release);
    session.wake.notify_one();
}

/// Sends what the edge lacks, then new deltas and heartbeats, until the edge
/// goes away, is replaced, or stops reading. Returns why it ended.
async fn write_loop(
    s: &SyncCtx,
    registration: &Registration,
    session: &Session,
    tx: &mpsc::Sender<Result<pb::ControlMessage, Status>>,
    hello_version: u64,
    started: Instant,
) -> Result<&'static str, Status> {
    let cfg = &s.cfg;
    let send_timeout = Duration::from_millis(cfg.send_timeout_ms);
    let send = |msg: pb::control_message::Kind| async move {
        match tokio::time::timeout(send_timeout, tx.send(Ok(pb::ControlMessage { kind: Some(msg) }))).await {
            Ok(Ok(())) => Ok(true),
            Ok(Err(_)) => Ok(false), // the stream is gone
            Err(_) => Err(Status::deadline_exceeded("the edge stopped reading the Sync stream")),
        }
    };
    let mut versions = s.versions.subscribe();
    let mut stopping = s.stopping.subscribe();
    let mut heartbeat = tokio::time::interval(Duration::from_millis(cfg.heartbeat_interval_ms));
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // `sent`: every version up to it has been sent; `need_snapshot`: the edge's
    // state cannot be brought up to date with deltas.
    let mut sent = hello_version;
    let mut need_snapshot = hello_version == 0;
    let mut reset = false;
    let mut last_nack_snapshot: Option<Instant> = None;
    loop {
        if session.closed.load(Ordering::Acquire) {
            return Ok("edge closed the stream");
        }
        if session.nacked.swap(false, Ordering::AcqRel) {
            if let Some(at) = last_nack_snapshot {
                tokio::time::sleep_until(at + NACK_SNAPSHOT_INTERVAL).await;
            }
            last_nack_snapshot = Some(Instant::now());
            need_snapshot = true;
        }
        let latest = *versions.borrow_and_update();
        if !need_snapshot && sent < latest && latest - sent > cfg.max_lag_versions {
            tracing::info!(sent, latest, "sync.too_far_behind");
            need_snapshot = true;
        }
        if !need_snapshot && sent != latest {
            match s.store.log_since(sent, LOG_BATCH).await.map_err(internal)? {
                LogRead::Changes(changes) => {
                    for change in changes {
                        let version = change.version;
                        let key = match &change.kind {
                            ChangeKind::Key { key_id, state } if *state != KeyState::Retired => {
                                key_material(s, *key_id).await?
                            }
                            _ => None,
                        };
                        let delta = pb::Delta { change: Some(change.into()), key };
                        if !send(pb::control_message::Kind::Delta(delta)).await? {
                            return Ok("stream closed");
                        }
                        sent = version;
                        s.fleet.update(registration.id, |v| {
                            v.sent = version;
                            v.deltas += 1;
                        });
                    }
                    continue;
                }
                LogRead::Compacted { oldest } => {
                    tracing::info!(sent, oldest, "sync.log_compacted");
                    need_snapshot = true;
                }
                LogRead::Ahead { current } => {
                    // The edge has versions this log never had (the store was
                    // restored from an older backup): the log is the truth.
                    tracing::error!(sent, current, "sync.edge_ahead_of_log: resetting the edge to the log");
                    need_snapshot = true;
                    reset = true;
                }
            }
        }
        if need_snapshot {
            let snapshot = snapshot(s, reset).await?;
            let version = snapshot.version;
            tracing::info!(
                version,
                keys = snapshot.keys.len(),
                revocations = snapshot.revocations.len(),
                "sync.snapshot"
            );
            if !send(pb::control_message::Kind::Snapshot(snapshot)).await? {
                return Ok("stream closed");
            }
            sent = version;
            need_snapshot = false;
            reset = false;
            s.fleet.update(registration.id, |v| {
                v.sent = version;
                v.snapshots += 1;
            });
            continue;
        }
        tokio::select! {
            changed = versions.changed() => if changed.is_err() { return Ok("control plane stopping") },
            _ = heartbeat.tick() => {
                let seq = session.heartbeat_seq.load(Ordering::Acquire) + 1;
                session.heartbeat_sent_ms.store(elapsed_ms(started), Ordering::Release);
                session.heartbeat_seq.store(seq, Ordering::Release);
                let hb = pb::Heartbeat {
                    cp_time_ms: s.now_ms(),
                    current_version: latest,
                    seq,
                    rtt_ms: session.rtt_ms.load(Ordering::Acquire),
                };
                if !send(pb::control_message::Kind::Heartbeat(hb)).await? {
                    return Ok("stream closed");
                }
            }
            () = session.wake.notified() => {}
            () = registration.stop.notified() => return Ok("replaced by a newer stream of the same edge"),
            () = async { drop(stopping.wait_for(|stop| *stop).await) } => return Ok("control plane stopping"),
        }
    }
}

/// A snapshot message: every verifying key with its secret, every live revocation.
async fn snapshot(s: &SyncCtx, reset: bool) -> Result<pb::Snapshot, Status> {
    let Snapshot { version, keys, revocations } = s.store.snapshot().await.map_err(internal)?;
    let now = s.now();
    Ok(pb::Snapshot {
        version,
        keys: keys.iter().map(edge_key).collect(),
        revocations: revocations.into_iter().filter(|r| r.expires_at > now).map(Into::into).collect(),
        reset,
    })
}

async fn key_material(s: &SyncCtx, key_id: u32) -> Result<Option<pb::EdgeKey>, Status> {
    let keys = s.store.signing_keys().await.map_err(internal)?;
    Ok(keys.iter().find(|k| k.id == key_id && k.state != KeyState::Retired).map(edge_key))
}

fn internal(e: crate::store::StoreError) -> Status {
    tracing::error!(error = %e, "sync.store_failed");
    Status::internal("storage backend failed; see the control plane's log")
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}
