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
//! What the edge says is believed only as far as [`AckBook`] allows: an ACK
//! only up to what was sent on this stream (the writer marks each version as
//! offered before handing it to the stream). An ACK, status or NACK above
//! anything offered, or a second hello, is a protocol violation: the stream
//! ends with `INVALID_ARGUMENT`, and the violation is logged
//! (`sync.protocol_violation`), counted (`stile_control_sync_refused_total`)
//! and audited (`SYNC_REFUSED`) with the edge's id, key and address.
//!
//! Who may say hello as whom ([`crate::identity`]): the API key must allow
//! the announced edge id, else the stream ends with `PERMISSION_DENIED`
//! (logged `sync.edge_id_refused`, counted `edge_id_not_allowed`, audited
//! `SYNC_REFUSED`). A stream announcing an id another stream holds replaces
//! it — the newest authenticated stream wins — and the takeover is logged
//! (`sync.replaced`) and audited (`SYNC_REPLACED`, both addresses).
//!
//! Client certificates (`crate::tls`): with `tls.require_client_cert` a stream
//! whose TLS connection presented no verified client certificate ends after
//! the hello with `UNAUTHENTICATED` (logged `sync.client_cert_missing`, counted
//! `client_cert_missing`, audited `SYNC_REFUSED`). A certificate's identity
//! (`CN=… SAN=…`) goes into the fleet entry, the session's span and every
//! audit event about the stream; a stream admitted with one is audited
//! `SYNC_CLIENT_CERT`.
//!
//! Layers: [`SyncCtx::open`] reads the hello and registers the edge in the
//! fleet; a reader task (`read_loop`) turns ACKs, NACKs and statuses into
//! fleet updates and [`Signals`] for the writer; the writer is a [`Session`]
//! whose loop sends the backlog or a snapshot, then waits for a new version, a
//! heartbeat tick, a NACK, a replacement or the server stopping. Errors are a
//! typed [`SyncError`]; a store error reaches the edge through the same
//! mapping as every RPC (`error.rs`: UNAVAILABLE stays UNAVAILABLE).
//!
//! Fan-out without unbounded memory: commits bump a `watch<u64>` with the
//! newest version (`VersionWatch`); each session, when woken, takes the
//! deltas after the version it sent — `log_since(sent, LOG_BATCH)`, read from
//! the store and converted once for every session at that version
//! ([`SharedTail`]) — and pushes them through a small bounded channel
//! (`SEND_BUFFER` messages) into its stream. A slow
//! edge only slows its own session: it blocks on its own channel. If it falls
//! more than the maximum lag behind it gets a snapshot instead of the backlog,
//! and if its stream accepts nothing for `sync.send_timeout_ms` (it stopped
//! reading) the session ends. Nothing is queued per edge beyond that channel.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stile_proto::v1 as pb;
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};
use tracing::Instrument;

use crate::acks::{AckBook, AckVerdict, Received, Violation};
use crate::auth::Caller;
use crate::chunks::{Chunked, Live};
use crate::clock::Clock;
use crate::config::SyncConfig;
use crate::convert::{edge_foreign_key, edge_key};
use crate::error::ApiError;
use crate::fleet::{Fleet, Registration};
use crate::identity;
use crate::locks;
use crate::metrics::Metrics;
use crate::model::{AuditAction, AuditEvent, ChangeKind, KeyState, valid_name};
use crate::store::notify::VersionWatch;
use crate::store::{LogRead, Snapshot, Store, StoreError};

/// The response stream of `Sync`.
pub(crate) type SyncStream = Pin<Box<dyn Stream<Item = Result<pb::ControlMessage, Status>> + Send + 'static>>;

/// The sending half of a session's response stream.
type Outbound = mpsc::Sender<Result<pb::ControlMessage, Status>>;

/// Messages buffered between a session and its stream. Small on purpose: this
/// is all the memory a stalled edge can hold in this process.
const SEND_BUFFER: usize = 8;
/// Changes read from the log at a time.
const LOG_BATCH: usize = 256;
/// Log reads kept for other sessions ([`SharedTail`]).
const SHARED_TAIL_READS: usize = 16;
/// Revocations read from the store at a time while bringing the live set
/// ([`Live`]) up to date.
const SNAPSHOT_PAGE: usize = 16_384;
/// How long a snapshot in parts may serve later sessions (see `SyncCtx::snapshot_chunked`).
const SNAPSHOT_REUSE_SECS: u64 = 30;
/// Least time between two snapshots caused by NACKs, so an edge that keeps
/// refusing cannot make the session loop.
const NACK_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(1);

/// What every sync session uses: the store (the change log, the audit log),
/// the registry of connected edges, the newest version, the stop flag, the
/// clock, the metrics and the `[sync]` settings.
#[derive(Debug)]
pub(crate) struct SyncCtx {
    store: Arc<dyn Store>,
    fleet: Arc<Fleet>,
    versions: Arc<VersionWatch>,
    /// Set when the server stops: sessions end so the graceful shutdown does
    /// not wait for long-lived streams.
    stopping: watch::Sender<bool>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    cfg: SyncConfig,
    /// `tls.require_client_cert`: refuse a stream without a verified client certificate.
    require_client_cert: bool,
    /// The newest snapshot built, shared by the sessions that need one.
    snapshots: SharedSnapshot,
    /// Recent log reads, shared by the sessions that need the same deltas.
    tail: SharedTail,
}

/// The newest snapshot message built, with the version it reflects and the
/// second it was built in (it leaves out what expired by then). Sessions that
/// need a snapshot while it is current — a reconnect storm of new edges, a
/// mass revocation that puts every edge past `sync.max_lag_versions` at once —
/// take a copy of it instead of each reading the whole store: one store read
/// and one conversion per version and second, however many edges ask (single
/// flight: the others wait for the one building it).
#[derive(Debug, Default)]
struct SharedSnapshot {
    newest: tokio::sync::Mutex<Option<Arc<BuiltSnapshot>>>,
    /// The same in parts, for edges that take snapshots in parts.
    newest_chunked: tokio::sync::Mutex<Option<Arc<BuiltChunked>>>,
    /// The revocations in force, packed as a snapshot in parts sends them,
    /// kept current with the store ([`SyncCtx::keep_live`]): a snapshot in
    /// parts is built from it without reading the whole set again.
    live: tokio::sync::Mutex<Live>,
}

#[derive(Debug)]
struct BuiltChunked {
    /// The second it was built in (`Clock::now_secs`).
    at_secs: u64,
    /// The messages (`reset` false).
    chunked: Chunked,
}

#[derive(Debug)]
struct BuiltSnapshot {
    /// The second it was built in (`Clock::now_secs`).
    at_secs: u64,
    /// The message (`reset` false).
    message: pb::Snapshot,
}

/// Log reads shared by the sessions that need the changes after the same
/// version: when a change commits, every session of an up-to-date fleet wakes
/// wanting exactly the changes after the version it sent. One of them reads
/// the log and converts the changes (key material included) into `Delta`
/// messages; the others take a copy (single flight: they wait for it). One
/// store read and one conversion per change instead of one per edge. At most
/// [`SHARED_TAIL_READS`] reads are kept, by the version they follow; a kept
/// read never goes stale (log entries do not change once committed), it may
/// only be shorter than the log is now, and the session then reads on from its
/// end.
#[derive(Debug, Default)]
struct SharedTail {
    reads: tokio::sync::Mutex<BTreeMap<u64, Arc<[pb::Delta]>>>,
}

/// Who is on the other end of a stream: for logs and audit events.
#[derive(Clone, Debug)]
struct Peer {
    /// The API key's name.
    caller: String,
    /// The announced edge id.
    edge_id: String,
    /// The stream's remote address.
    remote: Option<SocketAddr>,
    /// The verified client certificate's identity (`CN=… SAN=…`), if one was presented.
    client_cert: Option<String>,
}

/// Why a session ended with an error; the edge gets the matching status.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SyncError {
    /// No hello in time. → `DEADLINE_EXCEEDED`
    #[error("no EdgeHello within sync.hello_timeout_ms")]
    HelloTimeout,
    /// The stream did not start with a hello. → `INVALID_ARGUMENT`
    #[error("the first message on the Sync stream must be an EdgeHello")]
    NoHello,
    /// The hello's edge id is not a name. → `INVALID_ARGUMENT`
    #[error("edge_id {0:?} must be 1..64 characters of [a-z0-9._-]")]
    EdgeId(String),
    /// The stream accepted nothing for `sync.send_timeout_ms`. → `DEADLINE_EXCEEDED`
    #[error("the edge stopped reading the Sync stream")]
    StoppedReading,
    /// Reading the hello failed: the edge's status, passed on.
    #[error("reading the Sync stream: {0}")]
    Inbound(Status),
    /// `tls.require_client_cert` and the edge presented no client certificate. → `UNAUTHENTICATED`
    #[error("this control plane requires a client certificate on the Sync stream (tls.require_client_cert)")]
    NoClientCert,
    /// The hello announced an edge id the API key may not use. → `PERMISSION_DENIED`
    #[error("API key {key:?} may not sync as edge {edge_id:?} (its edge ids: {allowed})")]
    EdgeIdNotAllowed {
        /// The announced id.
        edge_id: String,
        /// The key's name.
        key: String,
        /// The key's edge ids, joined.
        allowed: String,
    },
    /// The edge broke the protocol ([`AckBook`]). → `INVALID_ARGUMENT`
    #[error("sync protocol violation: {0}")]
    Protocol(Violation),
    /// The store failed. → as every RPC's store error (`UNAVAILABLE`, `INTERNAL`, …)
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<SyncError> for Status {
    fn from(e: SyncError) -> Status {
        match e {
            SyncError::HelloTimeout | SyncError::StoppedReading => Status::deadline_exceeded(e.to_string()),
            SyncError::NoHello | SyncError::EdgeId(_) | SyncError::Protocol(_) => {
                Status::invalid_argument(e.to_string())
            }
            SyncError::EdgeIdNotAllowed { .. } => Status::permission_denied(e.to_string()),
            SyncError::NoClientCert => Status::unauthenticated(e.to_string()),
            SyncError::Inbound(status) => status,
            SyncError::Store(e) => ApiError::Store(e).into(),
        }
    }
}

impl SyncCtx {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        fleet: Arc<Fleet>,
        versions: Arc<VersionWatch>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        cfg: SyncConfig,
        require_client_cert: bool,
    ) -> SyncCtx {
        SyncCtx {
            store,
            fleet,
            versions,
            stopping: watch::channel(false).0,
            clock,
            metrics,
            cfg,
            require_client_cert,
            snapshots: SharedSnapshot::default(),
            tail: SharedTail::default(),
        }
    }

    /// A snapshot at least as new as `latest` (the newest version this
    /// session knows of), built in this second: the shared one if it is
    /// that, else a new one read from the store, then shared.
    async fn snapshot(&self, latest: u64) -> Result<Arc<BuiltSnapshot>, SyncError> {
        let mut newest = self.snapshots.newest.lock().await;
        let now = self.clock.now_secs();
        if let Some(built) = newest.as_ref()
            && built.at_secs == now
            && built.message.version >= latest
        {
            self.metrics.sync_snapshot(true);
            return Ok(Arc::clone(built));
        }
        let Snapshot { version, keys, revocations, purges, purge_floor, foreign_keys } = self.store.snapshot().await?;
        // A purge past its retention that the periodic prune has not dropped yet
        // counts as dropped: the floor covers it.
        let (retained, dropped): (Vec<_>, Vec<_>) = purges.into_iter().partition(|p| p.expires_at > now);
        let purge_floor = dropped.iter().map(|p| p.version).fold(purge_floor, u64::max);
        let message = pb::Snapshot {
            version,
            keys: keys.iter().map(edge_key).collect(),
            revocations: revocations.into_iter().filter(|r| r.expires_at > now).map(Into::into).collect(),
            reset: false,
            purges: retained.into_iter().map(Into::into).collect(),
            purge_floor,
            foreign_keys: foreign_keys.iter().map(edge_foreign_key).collect(),
        };
        let built = Arc::new(BuiltSnapshot { at_secs: now, message });
        *newest = Some(Arc::clone(&built));
        self.metrics.sync_snapshot(false);
        Ok(built)
    }

    /// The deltas after version `after`, one batch of the log ([`SharedTail`]):
    /// a kept read of the same batch if there is one, else read from the store
    /// (with the key material of key changes), kept, and returned.
    async fn deltas_after(&self, after: u64) -> Result<Tail, SyncError> {
        let mut reads = self.tail.reads.lock().await;
        if let Some(deltas) = reads.get(&after) {
            self.metrics.sync_log_read(true);
            return Ok(Tail::Deltas(Arc::clone(deltas)));
        }
        let changes = match self.store.log_since(after, LOG_BATCH).await? {
            LogRead::Changes(changes) => changes,
            LogRead::Compacted { oldest } => return Ok(Tail::Compacted { oldest }),
            LogRead::Ahead { current } => return Ok(Tail::Ahead { current }),
        };
        let mut keys = None;
        let mut foreign = None;
        let mut deltas = Vec::with_capacity(changes.len());
        for change in changes {
            // A key change to a verifying state carries the key's material (unless it is retired or gone by now).
            let key = match &change.kind {
                ChangeKind::Key { key_id, state, .. } if *state != KeyState::Retired => {
                    if keys.is_none() {
                        keys = Some(self.store.signing_keys().await?);
                    }
                    let keys = keys.as_deref().unwrap_or_default();
                    keys.iter().find(|k| k.id == *key_id && k.state != KeyState::Retired).map(edge_key)
                }
                _ => None,
            };
            // A foreign key addition carries the key's material (unless it is gone by now: its removal follows).
            let foreign_key = match &change.kind {
                ChangeKind::ForeignKey { format, name, removed: false } => {
                    if foreign.is_none() {
                        foreign = Some(self.store.foreign_keys().await?);
                    }
                    let held = foreign.as_deref().unwrap_or_default();
                    held.iter().find(|k| k.format == *format && k.name == *name).map(edge_foreign_key)
                }
                _ => None,
            };
            deltas.push(pb::Delta { change: Some(change.into()), key, foreign_key });
        }
        let deltas: Arc<[pb::Delta]> = deltas.into();
        self.metrics.sync_log_read(false);
        if !deltas.is_empty() {
            if reads.len() >= SHARED_TAIL_READS {
                reads.pop_first();
            }
            reads.insert(after, Arc::clone(&deltas));
        }
        Ok(Tail::Deltas(deltas))
    }

    /// As [`SyncCtx::snapshot`], in parts ([`crate::chunks`]), never older
    /// than `at_least` (the edge's version). With `reuse`, one built within
    /// [`SNAPSHOT_REUSE_SECS`] serves even if older than `latest`, as long as
    /// the deltas after it are well within `sync.max_lag_versions`: the edge
    /// gets them next, as any edge gets the deltas after its version. It is
    /// made from the live set ([`Live`]), brought up to the store's version
    /// first (normally a few revocations, all of them once after a start).
    async fn snapshot_chunked(&self, latest: u64, at_least: u64, reuse: bool) -> Result<Arc<BuiltChunked>, SyncError> {
        let mut newest = self.snapshots.newest_chunked.lock().await;
        let now = self.clock.now_secs();
        if let Some(built) = newest.as_ref()
            && built.chunked.begin.version >= at_least
            && ((built.at_secs == now && built.chunked.begin.version >= latest)
                || (reuse
                    && now.saturating_sub(built.at_secs) <= SNAPSHOT_REUSE_SECS
                    && latest.saturating_sub(built.chunked.begin.version) <= self.cfg.max_lag_versions / 2))
        {
            self.metrics.sync_snapshot(true);
            return Ok(Arc::clone(built));
        }
        let started = Instant::now();
        // Taken before the head is read: the background catch-up cannot move
        // the live set past the head's version meanwhile.
        let mut live = self.snapshots.live.lock().await;
        let Snapshot { version, keys, purges, purge_floor, foreign_keys, .. } = self.store.snapshot_head().await?;
        let (retained, dropped): (Vec<_>, Vec<_>) = purges.into_iter().partition(|p| p.expires_at > now);
        let purge_floor = dropped.iter().map(|p| p.version).fold(purge_floor, u64::max);
        let caught_up = self.catch_up(&mut live, version).await?;
        let mut chunked = live.snapshot(
            keys.iter().map(edge_key).collect(),
            purge_floor,
            retained.into_iter().map(Into::into).collect(),
            now,
        );
        chunked.begin.foreign_keys = foreign_keys.iter().map(edge_foreign_key).collect();
        drop(live);
        tracing::info!(
            version,
            token_ids = chunked.begin.token_ids,
            revocations = chunked.begin.revocations,
            chunks = chunked.begin.chunks,
            bytes = chunked.encoded_len(),
            read = caught_up,
            build_ms = elapsed_ms(started),
            "sync.snapshot_built"
        );
        let built = Arc::new(BuiltChunked { at_secs: now, chunked });
        *newest = Some(Arc::clone(&built));
        self.metrics.sync_snapshot(false);
        Ok(built)
    }

    /// Brings the live set up to `version`: reads the revocations committed
    /// after its version from the store, a page at a time, keeping those up
    /// to `version` (one committed later is added next time; one pruned
    /// meanwhile had expired). A store whose version went back (restored from
    /// an older backup) starts it over. Returns the revocations read.
    async fn catch_up(&self, live: &mut Live, version: u64) -> Result<usize, SyncError> {
        if live.version() > version {
            tracing::warn!(live = live.version(), store = version, "sync.live_reset: the store's version went back");
            *live = Live::default();
        }
        let mut read = 0;
        let mut after = live.version();
        while after < version {
            let page = self.store.revocations(after, SNAPSHOT_PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.version;
            let full = page.len() == SNAPSHOT_PAGE;
            read += page.len();
            for r in page.into_iter().take_while(|r| r.version <= version) {
                live.add(r);
            }
            if !full {
                break;
            }
        }
        live.reached(version);
        live.prune(self.clock.now_secs());
        Ok(read)
    }

    /// Keeps the live set ([`Live`]) current: brings it up to the newest
    /// version whenever that moves (at start, the whole set is read once), so
    /// a snapshot in parts costs a new edge only its transfer. Runs until the
    /// version watch closes.
    pub(crate) async fn keep_live(self: Arc<Self>) {
        let mut versions = self.versions.subscribe();
        loop {
            let version = *versions.borrow_and_update();
            let started = Instant::now();
            let mut live = self.snapshots.live.lock().await;
            let from = live.version();
            // The watch may trail the store's head a snapshot build read:
            // nothing to do then (only a head below the live set means the
            // store went back).
            let caught_up = if version > from { self.catch_up(&mut live, version).await } else { Ok(0) };
            match caught_up {
                Ok(read) if read >= SNAPSHOT_PAGE => tracing::info!(
                    from,
                    version,
                    read,
                    token_ids = live.token_ids(),
                    bytes = live.heap_bytes(),
                    ms = elapsed_ms(started),
                    "sync.live_caught_up"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "sync.live_catch_up_failed"),
            }
            drop(live);
            if versions.changed().await.is_err() {
                return;
            }
        }
    }

    /// Ends every session (the server is stopping).
    pub(crate) fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Starts a session on a freshly opened stream and returns its response stream.
    pub(crate) fn open(
        self: &Arc<Self>,
        caller: Caller,
        remote: Option<SocketAddr>,
        client_cert: Option<String>,
        inbound: Streaming<pb::EdgeMessage>,
    ) -> SyncStream {
        let (tx, rx) = mpsc::channel(SEND_BUFFER);
        let ctx = Arc::clone(self);
        let limit = Duration::from_millis(self.cfg.send_timeout_ms);
        tokio::spawn(async move {
            if let Err(e) = ctx.run(caller, remote, client_cert, inbound, tx.clone()).await {
                // Best effort, bounded: the edge may be gone or not reading.
                let _ = tokio::time::timeout(limit, tx.send(Err(e.into()))).await;
            }
        });
        Box::pin(ReceiverStream::new(rx))
    }

    /// Hello, registration, then the session until it ends.
    async fn run(
        self: Arc<Self>,
        caller: Caller,
        remote: Option<SocketAddr>,
        client_cert: Option<String>,
        mut inbound: Streaming<pb::EdgeMessage>,
        tx: Outbound,
    ) -> Result<(), SyncError> {
        let hello = self.hello(&mut inbound).await?;
        let span = tracing::info_span!(
            "sync", edge.id = %hello.edge_id, edge.addr = ?remote, caller = %caller.name,
            edge.cert = client_cert.as_deref().unwrap_or("")
        );
        let peer = Peer { caller: caller.name.clone(), edge_id: hello.edge_id.clone(), remote, client_cert };
        if self.require_client_cert && peer.client_cert.is_none() {
            let _entered = span.enter();
            tracing::warn!("sync.client_cert_missing");
            self.metrics.sync_refused("client_cert_missing");
            self.audit(
                &peer,
                AuditAction::SyncRefused,
                &format!("client_cert_missing: no client certificate (from {})", addr(remote)),
            );
            return Err(SyncError::NoClientCert);
        }
        if !identity::allowed(caller.role, &caller.edge_ids, &hello.edge_id) {
            let _entered = span.enter();
            let allowed = if caller.edge_ids.is_empty() { "none".to_owned() } else { caller.edge_ids.join(", ") };
            tracing::warn!(allowed = %allowed, "sync.edge_id_refused");
            self.metrics.sync_refused("edge_id_not_allowed");
            self.audit(
                &peer,
                AuditAction::SyncRefused,
                &format!("edge_id_not_allowed: key {:?} may use {allowed} (from {})", caller.name, addr(remote)),
            );
            return Err(SyncError::EdgeIdNotAllowed { edge_id: hello.edge_id, key: caller.name, allowed });
        }
        async move {
            // The hello's version is believed only up to the log head.
            let head = self.store.version().await?;
            let book = AckBook::start(hello.last_applied_version, head);
            let registration = self.fleet.register(
                &hello.edge_id,
                remote,
                peer.client_cert.clone().unwrap_or_default(),
                self.clock.now_ms(),
                book.acked(),
            );
            // Free text from the edge: printable ASCII only, bounded (it is shown in `stile edges ls`).
            let agent: String = hello
                .agent
                .chars()
                .filter(|c| c.is_ascii_graphic() || *c == ' ')
                .take(crate::fleet::MAX_AGENT)
                .collect();
            tracing::info!(applied = hello.last_applied_version, head, agent = %agent, "sync.connected");
            self.fleet.update(registration.id, |v| v.agent = agent);
            if peer.client_cert.is_some() {
                // Who connected with which certificate: the detail names it (`audit` appends it).
                self.audit(&peer, AuditAction::SyncClientCert, &format!("connected from {}", addr(remote)));
            }
            if let Some(previous) = &registration.replaced {
                // The newest authenticated stream wins (docs/sync-protocol.md, "Edge identity").
                tracing::warn!(previous = %previous, "sync.replaced");
                self.audit(
                    &peer,
                    AuditAction::SyncReplaced,
                    &format!("stream from {} (key {:?}) replaced the one from {previous}", addr(remote), peer.caller),
                );
            }
            let signals = Arc::new(Signals::new(book));
            let started = Instant::now();
            // The reader logs within this session's span (edge id, address, key).
            let reader = tokio::spawn(
                read_loop(Arc::clone(&self), registration.id, Arc::clone(&signals), inbound, started, peer)
                    .instrument(tracing::Span::current()),
            );
            let mut session = Session::new(&self, registration, signals, tx, hello.last_applied_version, started);
            session.chunked = hello.chunked_snapshots;
            let result = session.run().await;
            reader.abort();
            match &result {
                Ok(why) => tracing::info!(reason = why, "sync.disconnected"),
                Err(e) => tracing::warn!(error = %e, "sync.disconnected"),
            }
            result.map(|_| ())
        }
        .instrument(span)
        .await
    }

    /// The first message, which must be a hello with a valid edge id.
    async fn hello(&self, inbound: &mut Streaming<pb::EdgeMessage>) -> Result<pb::EdgeHello, SyncError> {
        let first = tokio::time::timeout(Duration::from_millis(self.cfg.hello_timeout_ms), inbound.message())
            .await
            .map_err(|_| SyncError::HelloTimeout)?
            .map_err(SyncError::Inbound)?;
        let hello = match first.and_then(|m| m.kind) {
            Some(pb::edge_message::Kind::Hello(h)) => h,
            _ => return Err(SyncError::NoHello),
        };
        if !valid_name(&hello.edge_id) {
            return Err(SyncError::EdgeId(hello.edge_id));
        }
        Ok(hello)
    }
}

/// What the reader and the writer of one session share.
#[derive(Debug)]
struct Signals {
    /// What was offered on the stream and what the edge's answers may say.
    book: Mutex<AckBook>,
    /// Set by the reader when the edge broke the protocol; the writer ends the session with it.
    violation: Mutex<Option<Violation>>,
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

impl Signals {
    fn new(book: AckBook) -> Signals {
        Signals {
            book: Mutex::new(book),
            violation: Mutex::new(None),
            nacked: AtomicBool::new(false),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            heartbeat_seq: AtomicU64::new(0),
            heartbeat_sent_ms: AtomicU64::new(0),
            rtt_ms: AtomicU32::new(0),
        }
    }

    /// Records in the book, before it is handed to the stream, what is about to be sent.
    fn offer(&self, f: impl FnOnce(&mut AckBook)) {
        f(&mut locks::lock(&self.book));
    }
}

/// Reads ACKs, NACKs and statuses until the stream ends or stays silent for
/// `sync.edge_timeout_ms`.
async fn read_loop(
    ctx: Arc<SyncCtx>,
    id: u64,
    signals: Arc<Signals>,
    mut inbound: Streaming<pb::EdgeMessage>,
    started: Instant,
    peer: Peer,
) {
    let silence = Duration::from_millis(ctx.cfg.edge_timeout_ms);
    loop {
        let msg = match tokio::time::timeout(silence, inbound.message()).await {
            Err(_) => {
                tracing::warn!(silent_ms = ctx.cfg.edge_timeout_ms, "sync.edge_silent");
                break;
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "sync.inbound_error");
                break;
            }
            Ok(Ok(None)) => break,
            Ok(Ok(Some(m))) => m,
        };
        let now_ms = ctx.clock.now_ms();
        let judged = locks::lock(&signals.book).receive(&msg);
        match judged {
            Err(violation) => {
                ctx.refuse(&peer, &violation);
                *locks::lock(&signals.violation) = Some(violation);
                break;
            }
            Ok(Received::Ack(verdict)) => ctx.applied(id, verdict, now_ms),
            Ok(Received::Nack { version, error }) => {
                tracing::warn!(version, error = %error, "sync.nack");
                ctx.fleet.nack(id, &error, now_ms);
                signals.nacked.store(true, Ordering::Release);
                signals.wake.notify_one();
            }
            Ok(Received::Status { heartbeat_seq, clock_skew_ms, applied }) => {
                let mut rtt = None;
                if heartbeat_seq == signals.heartbeat_seq.load(Ordering::Acquire) {
                    let sent = signals.heartbeat_sent_ms.load(Ordering::Acquire);
                    let ms = u32::try_from(elapsed_ms(started).saturating_sub(sent)).unwrap_or(u32::MAX);
                    signals.rtt_ms.store(ms, Ordering::Release);
                    rtt = Some(ms);
                }
                ctx.fleet.update(id, |v| {
                    v.skew_ms = clock_skew_ms;
                    v.last_seen_ms = now_ms;
                    if let Some(ms) = rtt {
                        v.rtt_ms = ms;
                    }
                });
                ctx.applied(id, applied, now_ms);
            }
            Ok(Received::Empty) => {}
        }
    }
    signals.closed.store(true, Ordering::Release);
    signals.wake.notify_one();
}

impl SyncCtx {
    /// Records a judged ACK (or status) in the fleet: the new version when it
    /// is believed, else only that the edge was heard from.
    fn applied(&self, id: u64, verdict: AckVerdict, now_ms: u64) {
        match verdict {
            AckVerdict::Advanced { to, .. } => self.fleet.ack(id, to, now_ms),
            other => {
                if let Some(kind) = other.ignored() {
                    tracing::debug!(?other, "sync.ack_ignored");
                    self.metrics.ack_ignored(kind);
                }
                self.fleet.update(id, |v| v.last_seen_ms = now_ms);
            }
        }
    }

    /// Logs, counts and audits a protocol violation; the session then ends with it.
    fn refuse(&self, peer: &Peer, violation: &Violation) {
        let remote = peer.remote.map(|a| a.to_string()).unwrap_or_default();
        tracing::warn!(kind = violation.kind(), error = %violation, "sync.protocol_violation");
        self.metrics.sync_refused(violation.kind());
        self.audit(peer, AuditAction::SyncRefused, &format!("{}: {violation} (from {remote})", violation.kind()));
    }

    /// Records an audit event about the edge (`SYNC_REFUSED`, `SYNC_REPLACED`,
    /// `SYNC_CLIENT_CERT`), in the background.
    /// The detail names the client certificate's identity when there is one.
    fn audit(&self, peer: &Peer, action: AuditAction, detail: &str) {
        let detail = match &peer.client_cert {
            Some(cert) => format!("{detail} [cert {cert}]"),
            None => detail.to_owned(),
        };
        let event = AuditEvent::new(
            self.clock.now_secs(),
            &peer.caller,
            action,
            format!("edge:{}", peer.edge_id),
            detail.chars().take(400).collect(),
        );
        let store = Arc::clone(&self.store);
        tokio::spawn(async move {
            if let Err(e) = store.record_audit(vec![event]).await {
                tracing::warn!(error = %e, "sync.audit_failed");
            }
        });
    }
}

/// Spaces the snapshots NACKs cause at least [`NACK_SNAPSHOT_INTERVAL`]
/// apart, so an edge that keeps refusing cannot make the session loop.
#[derive(Debug, Default)]
struct NackThrottle {
    last: Option<Instant>,
}

impl NackThrottle {
    /// Waits until the next NACK snapshot may go out, and counts it.
    async fn wait(&mut self) {
        if let Some(at) = self.last {
            tokio::time::sleep_until(at + NACK_SNAPSHOT_INTERVAL).await;
        }
        self.last = Some(Instant::now());
    }
}

/// What the edge needs next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Need {
    /// Deltas after `sent`, if any.
    Deltas,
    /// A snapshot: its state cannot be brought up to date with deltas.
    Snapshot,
    /// A snapshot that replaces its state: it has versions the log never had.
    Reset,
}

/// What a send step did.
enum Sent {
    /// Messages went out; look again before waiting.
    Some,
    /// Nothing was due.
    Nothing,
    /// The response stream is gone.
    Closed,
}

/// What the log holds after a session's version ([`SyncCtx::deltas_after`]).
enum Tail {
    /// The next changes, in version order, as messages.
    Deltas(Arc<[pb::Delta]>),
    /// As [`LogRead::Compacted`]: the log no longer reaches back that far.
    Compacted {
        /// Oldest version still in the log.
        oldest: u64,
    },
    /// As [`LogRead::Ahead`]: the version is above the log's head.
    Ahead {
        /// The log's newest version.
        current: u64,
    },
}

/// The writer half of one edge's stream: sends what the edge lacks, then new
/// deltas and heartbeats, until the edge goes away, is replaced, or stops
/// reading.
struct Session<'a> {
    ctx: &'a SyncCtx,
    /// Removes the edge from the fleet when the session ends.
    registration: Registration,
    signals: Arc<Signals>,
    tx: Outbound,
    started: Instant,
    /// Every version up to this one has been sent.
    sent: u64,
    need: Need,
    nacks: NackThrottle,
    /// The edge takes snapshots in parts (`EdgeHello.chunked_snapshots`).
    chunked: bool,
    /// A recent snapshot in parts may serve the next one (false after the
    /// edge NACKed, or the log could not bring it up to date).
    reuse: bool,
}

impl<'a> Session<'a> {
    fn new(
        ctx: &'a SyncCtx,
        registration: Registration,
        signals: Arc<Signals>,
        tx: Outbound,
        hello_version: u64,
        started: Instant,
    ) -> Session<'a> {
        let need = if hello_version == 0 { Need::Snapshot } else { Need::Deltas };
        Session {
            ctx,
            registration,
            signals,
            tx,
            started,
            sent: hello_version,
            need,
            nacks: NackThrottle::default(),
            chunked: false,
            reuse: true,
        }
    }

    /// Runs until the session ends; returns why.
    async fn run(mut self) -> Result<&'static str, SyncError> {
        let mut versions = self.ctx.versions.subscribe();
        let mut stopping = self.ctx.stopping.subscribe();
        let mut heartbeat = tokio::time::interval(Duration::from_millis(self.ctx.cfg.heartbeat_interval_ms));
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.signals.closed.load(Ordering::Acquire) {
                if let Some(violation) = locks::lock(&self.signals.violation).take() {
                    return Err(SyncError::Protocol(violation));
                }
                return Ok("edge closed the stream");
            }
            if self.signals.nacked.swap(false, Ordering::AcqRel) {
                self.nacks.wait().await;
                self.need = self.need.max_snapshot();
                self.reuse = false;
            }
            let latest = *versions.borrow_and_update();
            let sent = match self.need {
                Need::Deltas => self.send_backlog(latest).await?,
                Need::Snapshot | Need::Reset => Sent::Nothing,
            };
            let sent = match (sent, self.need) {
                (Sent::Nothing, Need::Snapshot | Need::Reset) => self.send_snapshot().await?,
                (sent, _) => sent,
            };
            match sent {
                Sent::Some => continue,
                Sent::Closed => return Ok("stream closed"),
                Sent::Nothing => {}
            }
            tokio::select! {
                changed = versions.changed() => if changed.is_err() { return Ok("control plane stopping") },
                _ = heartbeat.tick() => if !self.heartbeat(latest).await? { return Ok("stream closed") },
                () = self.signals.wake.notified() => {}
                () = self.registration.stop.notified() => return Ok("replaced by a newer stream of the same edge"),
                () = async { drop(stopping.wait_for(|stop| *stop).await) } => return Ok("control plane stopping"),
            }
        }
    }

    /// The deltas after `sent`, one batch of the log; or, when the edge is
    /// too far behind or the log cannot serve it, a switch to a snapshot.
    async fn send_backlog(&mut self, latest: u64) -> Result<Sent, SyncError> {
        let sent = self.sent;
        if sent < latest && latest - sent > self.ctx.cfg.max_lag_versions {
            tracing::info!(sent, latest, "sync.too_far_behind");
            self.need = Need::Snapshot;
            self.reuse = false;
            return Ok(Sent::Nothing);
        }
        if sent == latest {
            return Ok(Sent::Nothing);
        }
        match self.ctx.deltas_after(sent).await? {
            Tail::Deltas(deltas) => {
                for delta in deltas.iter() {
                    let version = delta.change.as_ref().map_or(sent, |c| c.version);
                    self.signals.offer(|b| b.offer_delta(version));
                    if !self.send(pb::control_message::Kind::Delta(delta.clone())).await? {
                        return Ok(Sent::Closed);
                    }
                    self.sent = version;
                    self.ctx.fleet.update(self.registration.id, |v| {
                        v.sent = version;
                        v.deltas += 1;
                    });
                }
                Ok(Sent::Some)
            }
            Tail::Compacted { oldest } => {
                tracing::info!(sent, oldest, "sync.log_compacted");
                self.need = Need::Snapshot;
                self.reuse = false;
                Ok(Sent::Nothing)
            }
            Tail::Ahead { current } => {
                // The edge has versions this log never had (the store was
                // restored from an older backup): the log is the truth.
                tracing::error!(sent, current, "sync.edge_ahead_of_log: resetting the edge to the log");
                self.need = Need::Reset;
                Ok(Sent::Nothing)
            }
        }
    }

    /// Every verifying key with its secret, every live revocation and every
    /// retained purge, as of one version.
    async fn send_snapshot(&mut self) -> Result<Sent, SyncError> {
        if self.chunked {
            return self.send_chunked().await;
        }
        let latest = *self.ctx.versions.borrow();
        let Some(built) = self.beating(self.ctx.snapshot(latest.max(self.sent)), latest).await? else {
            return Ok(Sent::Closed);
        };
        let mut snapshot = built.message.clone();
        drop(built);
        snapshot.reset = self.need == Need::Reset;
        let (version, purge_floor) = (snapshot.version, snapshot.purge_floor);
        tracing::info!(
            version,
            keys = snapshot.keys.len(),
            revocations = snapshot.revocations.len(),
            purges = snapshot.purges.len(),
            purge_floor,
            "sync.snapshot"
        );
        let reset = snapshot.reset;
        self.signals.offer(|b| b.offer_snapshot(version, reset));
        if reset {
            // A new history: nothing of it is applied until the edge ACKs this snapshot.
            self.ctx.fleet.update(self.registration.id, |v| v.applied = 0);
        }
        if !self.send(pb::control_message::Kind::Snapshot(snapshot)).await? {
            return Ok(Sent::Closed);
        }
        Ok(self.snapshot_sent(version))
    }

    /// A snapshot in parts: the begin, then every chunk, with a heartbeat
    /// between two chunks whenever one is due (the edge answers it, so
    /// neither side's silence timer runs out during a long snapshot).
    async fn send_chunked(&mut self) -> Result<Sent, SyncError> {
        let latest = *self.ctx.versions.borrow();
        let at_least = if self.need == Need::Reset { 0 } else { self.sent };
        let build = self.ctx.snapshot_chunked(latest, at_least, self.reuse);
        let Some(built) = self.beating(build, latest).await? else { return Ok(Sent::Closed) };
        self.reuse = true;
        let mut begin = built.chunked.begin.clone();
        begin.reset = self.need == Need::Reset;
        let (version, reset) = (begin.version, begin.reset);
        tracing::info!(
            version,
            keys = begin.keys.len(),
            token_ids = begin.token_ids,
            revocations = begin.revocations,
            purges = begin.purges,
            chunks = begin.chunks,
            purge_floor = begin.purge_floor,
            "sync.snapshot"
        );
        self.signals.offer(|b| b.offer_snapshot(version, reset));
        if reset {
            // A new history: nothing of it is applied until the edge ACKs this snapshot.
            self.ctx.fleet.update(self.registration.id, |v| v.applied = 0);
        }
        if !self.send(pb::control_message::Kind::SnapshotBegin(begin)).await? {
            return Ok(Sent::Closed);
        }
        let every = Duration::from_millis(self.ctx.cfg.heartbeat_interval_ms);
        let mut beat = Instant::now();
        for seq in 0..built.chunked.len() {
            if beat.elapsed() >= every {
                beat = Instant::now();
                if !self.heartbeat(latest).await? {
                    return Ok(Sent::Closed);
                }
            }
            // The token ids are shared with the built snapshot, not copied.
            if !self.send(pb::control_message::Kind::SnapshotChunk(built.chunked.chunk(seq))).await? {
                return Ok(Sent::Closed);
            }
        }
        drop(built);
        Ok(self.snapshot_sent(version))
    }

    /// A whole snapshot of `version` is on the stream: deltas follow it.
    fn snapshot_sent(&mut self, version: u64) -> Sent {
        self.sent = version;
        self.need = Need::Deltas;
        self.ctx.fleet.update(self.registration.id, |v| {
            v.sent = version;
            v.snapshots += 1;
        });
        Sent::Some
    }

    /// Waits for `build` (a snapshot being read from the store, which takes
    /// seconds at millions of revocations), sending a heartbeat every
    /// interval meanwhile so the edge's silence timer does not run out. None
    /// when the stream is gone.
    async fn beating<T>(
        &self,
        build: impl Future<Output = Result<T, SyncError>>,
        latest: u64,
    ) -> Result<Option<T>, SyncError> {
        let mut build = std::pin::pin!(build);
        let every = Duration::from_millis(self.ctx.cfg.heartbeat_interval_ms);
        loop {
            tokio::select! {
                built = &mut build => return built.map(Some),
                () = tokio::time::sleep(every) => if !self.heartbeat(latest).await? { return Ok(None) },
            }
        }
    }

    /// The control plane's time and newest version, numbered so the edge's
    /// answer gives the round trip. False when the stream is gone.
    async fn heartbeat(&self, latest: u64) -> Result<bool, SyncError> {
        let seq = self.signals.heartbeat_seq.load(Ordering::Acquire) + 1;
        self.signals.heartbeat_sent_ms.store(elapsed_ms(self.started), Ordering::Release);
        self.signals.heartbeat_seq.store(seq, Ordering::Release);
        let hb = pb::Heartbeat {
            cp_time_ms: self.ctx.clock.now_ms(),
            current_version: latest,
            seq,
            rtt_ms: self.signals.rtt_ms.load(Ordering::Acquire),
        };
        self.send(pb::control_message::Kind::Heartbeat(hb)).await
    }

    /// Queues one message; false when the stream is gone, an error when it
    /// accepted nothing for `sync.send_timeout_ms`.
    async fn send(&self, msg: pb::control_message::Kind) -> Result<bool, SyncError> {
        let send_timeout = Duration::from_millis(self.ctx.cfg.send_timeout_ms);
        match tokio::time::timeout(send_timeout, self.tx.send(Ok(pb::ControlMessage { kind: Some(msg) }))).await {
            Ok(Ok(())) => Ok(true),
            Ok(Err(_)) => Ok(false),
            Err(_) => Err(SyncError::StoppedReading),
        }
    }
}

impl Need {
    /// A snapshot is needed (a reset stays a reset).
    fn max_snapshot(self) -> Need {
        match self {
            Need::Deltas | Need::Snapshot => Need::Snapshot,
            Need::Reset => Need::Reset,
        }
    }
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// A remote address for logs and audit details: `-` when the transport gave none.
fn addr(remote: Option<SocketAddr>) -> String {
    remote.map_or_else(|| "-".to_owned(), |a| a.to_string())
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::clock::ManualClock;
    use crate::model::{Revocation, Target};
    use crate::store::{Batch, RedbStore, Write};

    /// Commits a revocation of token `id` expiring at `expires_at`; the new version.
    async fn revoke(store: &dyn Store, id: u64, expires_at: u64) -> u64 {
        let r = Revocation {
            version: 0,
            target: Target::Token { token_id: id },
            reason: "test".into(),
            actor: "ops".into(),
            created_at: 1_000,
            expires_at,
        };
        let writes = vec![Write::Append { at: 1_000, actor: "ops".into(), kind: ChangeKind::Revocation(r) }];
        store.commit(Batch { writes, audit: vec![] }).await.unwrap();
        store.version().await.unwrap()
    }

    #[tokio::test]
    async fn sessions_share_one_snapshot_per_version_and_second() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.path().join("s.redb")).unwrap());
        let clock = ManualClock::new(1_000);
        let metrics = Arc::new(Metrics::new());
        let ctx = SyncCtx::new(
            Arc::clone(&store),
            Fleet::new(),
            Arc::new(watch::channel(0).0),
            Arc::new(clock.clone()),
            Arc::clone(&metrics),
            SyncConfig::default(),
            false,
        );
        revoke(store.as_ref(), 1, 5_000).await;
        let v = revoke(store.as_ref(), 2, 1_001).await;

        // A storm of sessions at one version in one second: one store read, one message.
        let first = ctx.snapshot(v).await.unwrap();
        let (a, b, c) = tokio::join!(ctx.snapshot(v), ctx.snapshot(v), ctx.snapshot(v - 1));
        for other in [a.unwrap(), b.unwrap(), c.unwrap()] {
            assert!(Arc::ptr_eq(&first, &other), "shared");
        }
        assert_eq!((first.message.version, first.message.revocations.len()), (v, 2));
        let scrape = String::from_utf8(metrics.encode()).unwrap();
        assert!(scrape.contains("stile_control_sync_snapshots_total{source=\"built\"} 1"), "{scrape}");
        assert!(scrape.contains("stile_control_sync_snapshots_total{source=\"shared\"} 3"), "{scrape}");

        // A session that knows a newer version never gets the older message.
        let v2 = revoke(store.as_ref(), 3, 5_000).await;
        let newer = ctx.snapshot(v2).await.unwrap();
        assert!(!Arc::ptr_eq(&first, &newer));
        assert_eq!((newer.message.version, newer.message.revocations.len()), (v2, 3));

        // The next second: built again, without what expired meanwhile (token 2).
        clock.advance(Duration::from_secs(1));
        let later = ctx.snapshot(v2).await.unwrap();
        assert!(!Arc::ptr_eq(&newer, &later));
        assert_eq!((later.message.version, later.message.revocations.len()), (v2, 2));
    }

    /// A snapshot in parts as the edge decodes it: its version, the token
    /// ids with their expiries and the other revocations, sorted.
    fn decode_parts(c: &Chunked) -> (u64, Vec<(u64, u64)>, Vec<pb::Revocation>) {
        let (mut tokens, mut others) = (Vec::new(), Vec::new());
        for seq in 0..c.len() {
            let chunk = c.chunk(seq);
            // Sharing the token ids changes nothing on the wire: the message
            // decodes back to itself.
            let wire = chunk.encode_to_vec();
            assert_eq!(pb::SnapshotChunk::decode(wire.as_slice()).unwrap(), chunk);
            assert_eq!(chunk.last, seq + 1 == c.len());
            let mut expiry = 0;
            for (id, d) in chunk.token_ids.chunks_exact(8).zip(&chunk.token_expiry_deltas) {
                expiry += d;
                tokens.push((u64::from_be_bytes(id.try_into().unwrap()), expiry));
            }
            others.extend(chunk.revocations);
        }
        tokens.sort_unstable();
        others.sort_by_key(|r| r.version);
        assert_eq!(c.begin.token_ids, tokens.len() as u64);
        (c.begin.version, tokens, others)
    }

    /// The same from the store's whole snapshot, without what expired at `now`.
    async fn from_store(store: &dyn Store, now: u64) -> (u64, Vec<(u64, u64)>, Vec<pb::Revocation>) {
        let snap = store.snapshot().await.unwrap();
        let (mut tokens, mut others) = (Vec::new(), Vec::new());
        for r in snap.revocations.into_iter().filter(|r| r.expires_at > now) {
            match r.target {
                Target::Token { token_id } => tokens.push((token_id, r.expires_at)),
                _ => others.push(pb::Revocation::from(r)),
            }
        }
        tokens.sort_unstable();
        (snap.version, tokens, others)
    }

    #[tokio::test]
    async fn a_snapshot_in_parts_is_the_store_and_follows_its_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.path().join("s.redb")).unwrap());
        let clock = ManualClock::new(1_000);
        let ctx = SyncCtx::new(
            Arc::clone(&store),
            Fleet::new(),
            Arc::new(watch::channel(0).0),
            Arc::new(clock.clone()),
            Arc::new(Metrics::new()),
            SyncConfig::default(),
            false,
        );
        // Three chunks of token ids and then some; every fifth expires at 1 001.
        let n = crate::chunks::TOKENS_PER_CHUNK as u64 * 3 + 17;
        let writes = (0..n)
            .map(|i| Write::Append {
                at: 1_000,
                actor: "ops".into(),
                kind: ChangeKind::Revocation(Revocation {
                    version: 0,
                    target: match i {
                        7 => Target::Subject { subject: "alice".into(), issued_before: 999 },
                        _ => Target::Token { token_id: i.wrapping_mul(0x9e37_79b9_7f4a_7c15) },
                    },
                    reason: "test".into(),
                    actor: "ops".into(),
                    created_at: 1_000,
                    expires_at: if i.is_multiple_of(5) { 1_001 } else { 5_000 + i % 300 },
                }),
            })
            .collect();
        store.commit(Batch { writes, audit: vec![] }).await.unwrap();
        let v = store.version().await.unwrap();
        let built = ctx.snapshot_chunked(v, 0, false).await.unwrap();
        assert_eq!(decode_parts(&built.chunked), from_store(store.as_ref(), 1_000).await);
        assert!(built.chunked.len() >= 4);

        // Two sessions sending it share the token ids of every chunk.
        let (a, b) = (built.chunked.chunk(1), built.chunked.chunk(1));
        assert_eq!(a.token_ids.as_ptr(), b.token_ids.as_ptr());

        // Later commits are added to what is kept, and expired entries leave it.
        let v2 = revoke(store.as_ref(), 0xdead_beef, 9_000).await;
        clock.advance(Duration::from_secs(1));
        let next = ctx.snapshot_chunked(v2, 0, false).await.unwrap();
        assert_eq!(next.chunked.begin.version, v2);
        assert_eq!(decode_parts(&next.chunked), from_store(store.as_ref(), 1_001).await);
        let live = ctx.snapshots.live.lock().await;
        assert_eq!(live.version(), v2);
        assert_eq!(live.token_ids() as u64, next.chunked.begin.token_ids);
    }
}
