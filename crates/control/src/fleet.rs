//! The fleet registry: every edge connected to this control plane, what it has
//! applied (ACKed), its clock skew and round trip, and how its stream is doing.
//!
//! Sync sessions (`sync.rs`) write it; `EdgeService.List`,
//! `RevocationService.Status`, `Revoke` with `wait` and key rollout read it.
//! Waiters ([`Fleet::wait_applied`]) wake on every ACK and every disconnect,
//! so "every connected edge has ACKed v" is re-checked exactly when it can
//! change.
//!
//! One entry per stream. A second stream announcing the same edge id replaces
//! the first (which is told to stop): a restarted edge is not counted twice,
//! and a half-open stream of its previous life cannot hold up a `Revoke` wait.
//!
//! Control-plane replicas sharing a backend (Redis) each publish their view
//! through the [`ReplicaBus`] ([`ReplicaFleet::publish_loop`]: on every change
//! and every heartbeat interval, expiring after three) and read the others'
//! ([`ReplicaFleet::everywhere`]), so `EdgeService.List`,
//! `RevocationService.Status`, `Revoke` with `wait` and key rollout cover the
//! edges connected to every replica.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::locks;
use crate::store::ReplicaBus;

/// The registry. Cheap to share; all methods take `&self`.
#[derive(Debug)]
pub(crate) struct Fleet {
    edges: Mutex<BTreeMap<u64, Entry>>,
    next_session: AtomicU64,
    /// Bumped on every ACK, NACK and disconnect: wakes waiters.
    changed: watch::Sender<u64>,
}

/// What the registry knows about one connected edge.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct EdgeView {
    /// The id it announced.
    pub(crate) edge_id: String,
    /// Remote address of its stream.
    pub(crate) remote_addr: String,
    /// When its stream started, Unix seconds.
    pub(crate) connected_at: u64,
    /// Newest version it ACKed (every version up to it is applied).
    pub(crate) applied: u64,
    /// Newest version sent to it.
    pub(crate) sent: u64,
    /// Its clock minus ours, milliseconds.
    pub(crate) skew_ms: i64,
    /// Last heartbeat round trip, milliseconds.
    pub(crate) rtt_ms: u32,
    /// When we last heard from it, Unix milliseconds.
    pub(crate) last_seen_ms: u64,
    /// NACKs on this stream.
    pub(crate) nacks: u64,
    /// The last NACK's error.
    pub(crate) last_error: String,
    /// Snapshots sent on this stream.
    pub(crate) snapshots: u64,
    /// Deltas sent on this stream.
    pub(crate) deltas: u64,
}

#[derive(Debug)]
struct Entry {
    view: EdgeView,
    stop: Arc<Notify>,
}

/// A registered stream; removes its entry when dropped.
#[derive(Debug)]
pub(crate) struct Registration {
    fleet: Arc<Fleet>,
    /// The session id (unique per stream).
    pub(crate) id: u64,
    /// Notified when a newer stream of the same edge replaces this one.
    pub(crate) stop: Arc<Notify>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.fleet.remove(self.id);
    }
}

impl Fleet {
    /// An empty registry.
    pub(crate) fn new() -> Arc<Fleet> {
        Arc::new(Fleet {
            edges: Mutex::new(BTreeMap::new()),
            next_session: AtomicU64::new(1),
            changed: watch::channel(0).0,
        })
    }

    /// Registers a stream; any other stream of the same edge id is told to stop
    /// and forgotten.
    pub(crate) fn register(
        self: &Arc<Fleet>,
        edge_id: &str,
        remote: Option<SocketAddr>,
        now_ms: u64,
        applied: u64,
    ) -> Registration {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let stop = Arc::new(Notify::new());
        let view = EdgeView {
            edge_id: edge_id.to_owned(),
            remote_addr: remote.map(|a| a.to_string()).unwrap_or_default(),
            connected_at: now_ms / 1000,
            applied,
            sent: applied,
            last_seen_ms: now_ms,
            ..EdgeView::default()
        };
        {
            let mut edges = self.lock();
            edges.retain(|_, e| {
                if e.view.edge_id == edge_id {
                    // `notify_one` stores a permit: the old session sees it even if not waiting yet.
                    e.stop.notify_one();
                    false
                } else {
                    true
                }
            });
            edges.insert(id, Entry { view, stop: Arc::clone(&stop) });
        }
        self.bump();
        Registration { fleet: Arc::clone(self), id, stop }
    }

    /// Updates one stream's entry (no-op once it is gone).
    pub(crate) fn update(&self, id: u64, f: impl FnOnce(&mut EdgeView)) {
        if let Some(e) = self.lock().get_mut(&id) {
            f(&mut e.view);
        }
    }

    /// Records an ACK of `version` (never moves `applied` backwards) and wakes waiters.
    pub(crate) fn ack(&self, id: u64, version: u64, now_ms: u64) {
        self.update(id, |v| {
            v.applied = v.applied.max(version);
            v.last_seen_ms = now_ms;
        });
        self.bump();
    }

    /// Records a NACK.
    pub(crate) fn nack(&self, id: u64, error: &str, now_ms: u64) {
        self.update(id, |v| {
            v.nacks += 1;
            v.last_error = error.chars().take(512).collect();
            v.last_seen_ms = now_ms;
        });
        self.bump();
    }

    /// Every connected edge, by edge id.
    pub(crate) fn list(&self) -> Vec<EdgeView> {
        let mut out: Vec<EdgeView> = self.lock().values().map(|e| e.view.clone()).collect();
        out.sort_by(|a, b| a.edge_id.cmp(&b.edge_id));
        out
    }

    /// Waits until every connected edge has applied `version`, or until
    /// `deadline`. Returns the edges connected at that moment.
    pub(crate) async fn wait_applied(&self, version: u64, deadline: Instant) -> Vec<EdgeView> {
        let mut rx = self.changed.subscribe();
        loop {
            rx.borrow_and_update();
            let edges = self.list();
            if edges.iter().all(|e| e.applied >= version) {
                return edges;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                // The sender lives as long as `self`; a timeout ends the wait.
                Ok(Err(_)) | Err(_) => return self.list(),
            }
        }
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
        self.bump();
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry>> {
        locks::lock(&self.edges)
    }
}

/// What the fleet gauges show, as of one scrape.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct FleetStats {
    /// The newest committed log version.
    pub(crate) log_version: u64,
    /// Edges holding a sync stream to this process.
    pub(crate) connected: usize,
    /// Largest number of versions a connected edge has not ACKed.
    pub(crate) max_lag: u64,
    /// Largest |edge clock - this clock|, milliseconds.
    pub(crate) max_skew_ms: u64,
}

impl Fleet {
    /// This process's edges measured against `log_version`.
    pub(crate) fn stats(&self, log_version: u64) -> FleetStats {
        let edges = self.list();
        FleetStats {
            log_version,
            connected: edges.len(),
            max_lag: edges.iter().map(|e| log_version.saturating_sub(e.applied)).max().unwrap_or(0),
            max_skew_ms: edges.iter().map(|e| e.skew_ms.unsigned_abs()).max().unwrap_or(0),
        }
    }
}

/// The whole fleet as this replica sees it: its own registry and, when the
/// backend is shared, the views the other replicas publish through the
/// [`ReplicaBus`]. What `EdgeService.List`, `RevocationService.Status`,
/// `Revoke` with `wait` and key rollout read.
#[derive(Debug)]
pub(crate) struct ReplicaFleet {
    fleet: Arc<Fleet>,
    bus: Option<Arc<dyn ReplicaBus>>,
    /// This process among the replicas (random per start).
    replica_id: String,
    /// How often the view is republished without a change (the heartbeat interval).
    interval: Duration,
}

impl ReplicaFleet {
    /// `fleet` alone, or with the other replicas on `bus`; `interval` is the
    /// sync heartbeat interval.
    pub(crate) fn new(fleet: Arc<Fleet>, bus: Option<Arc<dyn ReplicaBus>>, interval: Duration) -> ReplicaFleet {
        let replica_id = format!("{}-{:08x}", std::process::id(), rand::random::<u32>());
        ReplicaFleet { fleet, bus, replica_id, interval: interval.max(Duration::from_millis(1)) }
    }

    /// Whether other replicas share the backend.
    pub(crate) fn is_shared(&self) -> bool {
        self.bus.is_some()
    }

    /// Publishes this replica's view for the others while the backend is
    /// shared (returns at once if it is not): at once on every change (an
    /// ACK, a connect, a disconnect) and at least every interval; each view
    /// expires after three intervals (at least 1 s), so a replica that died
    /// drops out of the others' lists.
    pub(crate) async fn publish_loop(self: Arc<Self>) {
        let Some(bus) = &self.bus else { return };
        let ttl_ms = u64::try_from((self.interval * 3).as_millis()).unwrap_or(u64::MAX).max(1000);
        let mut changed = self.fleet.changed.subscribe();
        let mut failing = false;
        loop {
            changed.borrow_and_update();
            let view = serde_json::to_string(&self.fleet.list()).unwrap_or_else(|_| "[]".into());
            match bus.publish_fleet(self.replica_id.clone(), view, ttl_ms).await {
                Ok(()) => failing = false,
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "fleet.publish_failed");
                }
                Err(_) => {}
            }
            tokio::select! {
                _ = changed.changed() => {}
                () = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    /// Every edge connected to any replica: this replica's own registry, plus
    /// what the others published. An edge listed twice (it moved between
    /// replicas) counts once, with the view heard from last. If the others'
    /// views cannot be read, this replica's alone.
    pub(crate) async fn everywhere(&self) -> Vec<EdgeView> {
        let mut edges: BTreeMap<String, EdgeView> =
            self.fleet.list().into_iter().map(|e| (e.edge_id.clone(), e)).collect();
        let Some(bus) = &self.bus else {
            return edges.into_values().collect();
        };
        match bus.fleet_views().await {
            Ok(views) => {
                for (replica, view) in views {
                    if replica == self.replica_id {
                        continue;
                    }
                    let Ok(theirs) = serde_json::from_str::<Vec<EdgeView>>(&view) else {
                        tracing::warn!(replica = %replica, "fleet.view_unreadable");
                        continue;
                    };
                    for e in theirs {
                        match edges.get(&e.edge_id) {
                            Some(mine) if mine.last_seen_ms >= e.last_seen_ms => {}
                            _ => {
                                edges.insert(e.edge_id.clone(), e);
                            }
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "fleet.views_unavailable: listing this replica's edges only"),
        }
        edges.into_values().collect()
    }

    /// Waits until every edge connected to any replica has applied `version`,
    /// or until `deadline`; returns the edges as last seen. This replica's
    /// edges wake the wait on every ACK; the others' views are re-read every 5 ms.
    pub(crate) async fn wait_everywhere(&self, version: u64, deadline: Instant) -> Vec<EdgeView> {
        let local = self.fleet.wait_applied(version, deadline).await;
        if self.bus.is_none() {
            return local;
        }
        loop {
            let all = self.everywhere().await;
            let now = Instant::now();
            if all.iter().all(|e| e.applied >= version) || now >= deadline {
                return all;
            }
            tokio::time::sleep_until((now + Duration::from_millis(5)).min(deadline)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Paused time: the clock only moves when every task is idle, so after the
    // sleep below the waiter has had every chance to see the first ACK.
    #[tokio::test(start_paused = true)]
    async fn wait_returns_when_every_edge_acked_or_at_the_deadline() {
        let fleet = Fleet::new();
        let a = fleet.register("a", None, 0, 3);
        let b = fleet.register("b", None, 0, 3);
        let started = Instant::now();
        let deadline = started + Duration::from_secs(5);
        let waiter = {
            let fleet = Arc::clone(&fleet);
            tokio::spawn(async move { fleet.wait_applied(5, deadline).await })
        };
        fleet.ack(a.id, 5, 1);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiter.is_finished(), "one edge of two ACKed");
        fleet.ack(b.id, 6, 1);
        let edges = waiter.await.unwrap();
        assert!(edges.iter().all(|e| e.applied >= 5));
        assert!(started.elapsed() < Duration::from_secs(5), "it returned on the ACK, not at the deadline");

        // At the deadline the laggards are named.
        let asked = Instant::now();
        let lagging = fleet.wait_applied(7, asked + Duration::from_millis(20)).await;
        assert_eq!(lagging.iter().filter(|e| e.applied < 7).count(), 2);
        assert!(asked.elapsed() >= Duration::from_millis(20), "it waited for the deadline");
        drop(b);
        assert_eq!(fleet.list().len(), 1, "a dropped registration leaves the registry");
        fleet.ack(a.id, 3, 2);
        assert_eq!(fleet.list()[0].applied, 5, "ACKs never move backwards");
    }

    #[tokio::test]
    async fn a_new_stream_of_the_same_edge_replaces_the_old_one() {
        let fleet = Fleet::new();
        let old = fleet.register("e1", None, 0, 1);
        let _new = fleet.register("e1", None, 0, 1);
        assert_eq!(fleet.list().len(), 1);
        tokio::time::timeout(Duration::from_secs(1), old.stop.notified()).await.expect("old stream told to stop");
        drop(old);
        assert_eq!(fleet.list().len(), 1, "dropping the old registration keeps the new entry");
    }
}
