//! The fleet registry: every edge connected to this control plane, what it has
//! applied (ACKed), its clock skew and round trip, and how its stream is doing.
//!
//! Sync sessions (`sync.rs`) write it; `EdgeService.List`,
//! `RevocationService.Status`, `Revoke` with `wait` and key rollout read it.
//! Waiters ([`ReplicaFleet::wait_until`]) wake on every ACK and every disconnect,
//! so "every connected edge has ACKed v" is re-checked exactly when it can
//! change.
//!
//! One entry per stream. A second stream announcing the same edge id replaces
//! the first (which is told to stop): a restarted edge is not counted twice,
//! and a half-open stream of its previous life cannot hold up a `Revoke` wait.
//! The newest authenticated stream wins; only a key allowed that edge id
//! (`crate::identity`) gets that far, and the takeover is audited
//! (`SYNC_REPLACED`) by the session.
//!
//! An edge whose stream ended is remembered as *departed* (its last view) for
//! `sync.seen_window_secs` after it was last heard from, so a wait can name it
//! as expected and not confirmed ([`ReplicaFleet::known`]); it is forgotten
//! when it reconnects or the window passes.
//!
//! Control-plane replicas sharing a backend (Redis) each publish their view
//! through the [`ReplicaBus`] ([`ReplicaFleet::publish_loop`]: on changes, at
//! most every [`PUBLISH_GAP`], and every heartbeat interval, expiring after
//! three) and read the others'
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

use crate::clock::Clock;
use crate::locks;
use crate::store::ReplicaBus;

/// Departed edges remembered at most; beyond it the one heard from longest ago goes.
const MAX_DEPARTED: usize = 10_000;

/// Characters of an edge's announced agent kept.
pub(crate) const MAX_AGENT: usize = 64;

/// The lag buckets of `stile_control_edges_by_lag` (and `stile edges ls`):
/// label and the largest lag in it.
pub(crate) const LAG_BUCKETS: [(&str, u64); 4] = [("0", 0), ("1-10", 10), ("11-1000", 1000), ("1001+", u64::MAX)];

/// The registry. Cheap to share; all methods take `&self`.
#[derive(Debug)]
pub(crate) struct Fleet {
    edges: Mutex<BTreeMap<u64, Entry>>,
    /// Edges whose stream ended, by edge id: their last view (`departed` set).
    departed: Mutex<BTreeMap<String, EdgeView>>,
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
    /// Its verified client certificate's identity (`CN=… SAN=…`); empty without one.
    pub(crate) client_cert: String,
    /// The software version from its hello (at most [`MAX_AGENT`] characters).
    pub(crate) agent: String,
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
    /// Its stream ended (the view is what was last known); false while connected.
    pub(crate) departed: bool,
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
    /// The remote address of the stream this one replaced, if it replaced one.
    pub(crate) replaced: Option<String>,
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
            departed: Mutex::new(BTreeMap::new()),
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
        client_cert: String,
        now_ms: u64,
        applied: u64,
    ) -> Registration {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let stop = Arc::new(Notify::new());
        let view = EdgeView {
            edge_id: edge_id.to_owned(),
            remote_addr: remote.map(|a| a.to_string()).unwrap_or_default(),
            client_cert,
            connected_at: now_ms / 1000,
            applied,
            sent: applied,
            last_seen_ms: now_ms,
            ..EdgeView::default()
        };
        let mut replaced = None;
        {
            let mut edges = self.lock();
            edges.retain(|_, e| {
                if e.view.edge_id == edge_id {
                    // `notify_one` stores a permit: the old session sees it even if not waiting yet.
                    e.stop.notify_one();
                    replaced = Some(e.view.remote_addr.clone());
                    false
                } else {
                    true
                }
            });
            edges.insert(id, Entry { view, stop: Arc::clone(&stop) });
            locks::lock(&self.departed).remove(edge_id);
        }
        self.bump();
        Registration { fleet: Arc::clone(self), id, stop, replaced }
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

    /// Every connected edge, then every departed one last heard from at or
    /// after `since_ms` (older ones are forgotten).
    pub(crate) fn known(&self, since_ms: u64) -> Vec<EdgeView> {
        let mut out = self.list();
        let mut departed = locks::lock(&self.departed);
        departed.retain(|_, v| v.last_seen_ms >= since_ms);
        out.extend(departed.values().cloned());
        out
    }

    /// Forgets a stream; an edge that has no other stream becomes departed.
    fn remove(&self, id: u64) {
        {
            let mut edges = self.lock();
            if let Some(entry) = edges.remove(&id)
                && !edges.values().any(|e| e.view.edge_id == entry.view.edge_id)
            {
                let mut departed = locks::lock(&self.departed);
                if departed.len() >= MAX_DEPARTED
                    && let Some(oldest) = departed.values().min_by_key(|v| v.last_seen_ms).map(|v| v.edge_id.clone())
                {
                    departed.remove(&oldest);
                }
                departed.insert(entry.view.edge_id.clone(), EdgeView { departed: true, ..entry.view });
            }
        }
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
    /// Connected edges per [`LAG_BUCKETS`] entry.
    pub(crate) by_lag: [usize; LAG_BUCKETS.len()],
}

/// The index of `lag`'s bucket in [`LAG_BUCKETS`].
pub(crate) fn lag_bucket(lag: u64) -> usize {
    LAG_BUCKETS.iter().position(|(_, max)| lag <= *max).unwrap_or(LAG_BUCKETS.len() - 1)
}

impl Fleet {
    /// This process's edges measured against `log_version`.
    pub(crate) fn stats(&self, log_version: u64) -> FleetStats {
        let edges = self.list();
        let mut by_lag = [0; LAG_BUCKETS.len()];
        for e in &edges {
            by_lag[lag_bucket(log_version.saturating_sub(e.applied))] += 1;
        }
        FleetStats {
            log_version,
            by_lag,
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
    /// How long departed edges stay expected (`sync.seen_window_secs`), milliseconds.
    window_ms: u64,
    clock: Arc<dyn Clock>,
}

/// The shortest time between two publications of a replica's fleet view
/// ([`ReplicaFleet::publish_loop`]). A view holds every edge of the replica
/// (encoded and sent whole), and one change brings an ACK from each of them: at
/// 500 edges per replica, publishing on every ACK made a change cost 127 µs of
/// control-plane CPU per edge, 51 µs with the gap (BENCHMARKS.md, "Fleet
/// scale"). It also bounds how late another replica's `Revoke --wait` hears of
/// an ACK here.
const PUBLISH_GAP: Duration = Duration::from_millis(10);

impl ReplicaFleet {
    /// `fleet` alone, or with the other replicas on `bus`; `interval` is the
    /// sync heartbeat interval.
    /// and `window` how long departed edges stay expected.
    pub(crate) fn new(
        fleet: Arc<Fleet>,
        bus: Option<Arc<dyn ReplicaBus>>,
        interval: Duration,
        window: Duration,
        clock: Arc<dyn Clock>,
    ) -> ReplicaFleet {
        let replica_id = format!("{}-{:08x}", std::process::id(), rand::random::<u32>());
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        ReplicaFleet { fleet, bus, replica_id, interval: interval.max(Duration::from_millis(1)), window_ms, clock }
    }

    /// The window of remembered edges, seconds.
    pub(crate) fn window_secs(&self) -> u64 {
        self.window_ms / 1000
    }

    /// The oldest `last_seen_ms` of a departed edge still expected.
    fn since_ms(&self) -> u64 {
        match self.window_ms {
            0 => u64::MAX,
            w => self.clock.now_ms().saturating_sub(w),
        }
    }

    /// Whether other replicas share the backend.
    pub(crate) fn is_shared(&self) -> bool {
        self.bus.is_some()
    }

    /// Publishes this replica's view for the others while the backend is
    /// shared (returns at once if it is not): on every change (an ACK, a
    /// connect, a disconnect) — at once after a quiet spell, then at most once
    /// per [`PUBLISH_GAP`], the changes in between going out together — and at
    /// least every interval; each view expires after three intervals (at least
    /// 1 s), so a replica that died drops out of the others' lists.
    pub(crate) async fn publish_loop(self: Arc<Self>) {
        let Some(bus) = &self.bus else { return };
        let ttl_ms = u64::try_from((self.interval * 3).as_millis()).unwrap_or(u64::MAX).max(1000);
        let mut changed = self.fleet.changed.subscribe();
        let mut failing = false;
        loop {
            changed.borrow_and_update();
            let started = Instant::now();
            let view = serde_json::to_string(&self.fleet.known(self.since_ms())).unwrap_or_else(|_| "[]".into());
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
            // The ACKs of one change arrive from every edge within a round trip:
            // gathered for the gap, they cost one view, not one each.
            tokio::time::sleep_until(started + PUBLISH_GAP).await;
        }
    }

    /// Every edge connected to any replica: this replica's own registry, plus
    /// what the others published. An edge listed twice (it moved between
    /// replicas) counts once, with the view heard from last. If the others'
    /// views cannot be read, this replica's alone.
    pub(crate) async fn everywhere(&self) -> Vec<EdgeView> {
        self.known().await.into_iter().filter(|e| !e.departed).collect()
    }

    /// [`ReplicaFleet::everywhere`], plus every edge whose stream ended (here
    /// or on another replica) within `sync.seen_window_secs` and that is not
    /// connected anywhere now (`departed`). By edge id.
    pub(crate) async fn known(&self) -> Vec<EdgeView> {
        let since = self.since_ms();
        let mut edges: BTreeMap<String, EdgeView> =
            self.fleet.known(since).into_iter().map(|e| (e.edge_id.clone(), e)).collect();
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
                        if e.departed && e.last_seen_ms < since {
                            continue;
                        }
                        // A connected view beats a departed one; then the newest.
                        let newer =
                            |mine: &EdgeView| (!e.departed, e.last_seen_ms) > (!mine.departed, mine.last_seen_ms);
                        if edges.get(&e.edge_id).is_none_or(newer) {
                            edges.insert(e.edge_id.clone(), e);
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "fleet.views_unavailable: listing this replica's edges only"),
        }
        edges.into_values().collect()
    }

    /// Waits until `done` holds for the known edges ([`ReplicaFleet::known`]),
    /// or until `deadline`; returns the edges as last seen. This replica's
    /// edges wake the wait on every ACK and disconnect; the others' views are
    /// re-read every 5 ms.
    pub(crate) async fn wait_until(&self, deadline: Instant, done: impl Fn(&[EdgeView]) -> bool) -> Vec<EdgeView> {
        let mut rx = self.fleet.changed.subscribe();
        loop {
            rx.borrow_and_update();
            let all = self.known().await;
            let now = Instant::now();
            if done(&all) || now >= deadline {
                return all;
            }
            if self.bus.is_some() {
                tokio::time::sleep_until((now + Duration::from_millis(5)).min(deadline)).await;
            } else {
                // The sender lives as long as the fleet; a timeout ends the wait.
                let _ = tokio::time::timeout_at(deadline, rx.changed()).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replicas(fleet: &Arc<Fleet>, window_secs: u64) -> (ReplicaFleet, crate::clock::ManualClock) {
        let clock = crate::clock::ManualClock::new(1_000);
        let r = ReplicaFleet::new(
            Arc::clone(fleet),
            None,
            Duration::from_secs(1),
            Duration::from_secs(window_secs),
            Arc::new(clock.clone()),
        );
        (r, clock)
    }

    fn all_applied(v: u64) -> impl Fn(&[EdgeView]) -> bool {
        move |edges| edges.iter().all(|e| e.applied >= v)
    }

    // Paused time: the clock only moves when every task is idle, so after the
    // sleep below the waiter has had every chance to see the first ACK.
    #[tokio::test(start_paused = true)]
    async fn wait_returns_when_every_edge_acked_or_at_the_deadline() {
        let fleet = Fleet::new();
        let (replicas, _) = replicas(&fleet, 0);
        let replicas = Arc::new(replicas);
        let a = fleet.register("a", None, String::new(), 0, 3);
        let b = fleet.register("b", None, String::new(), 0, 3);
        let started = Instant::now();
        let deadline = started + Duration::from_secs(5);
        let waiter = {
            let replicas = Arc::clone(&replicas);
            tokio::spawn(async move { replicas.wait_until(deadline, all_applied(5)).await })
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
        let lagging = replicas.wait_until(asked + Duration::from_millis(20), all_applied(7)).await;
        assert_eq!(lagging.iter().filter(|e| e.applied < 7).count(), 2);
        assert!(asked.elapsed() >= Duration::from_millis(20), "it waited for the deadline");
        drop(b);
        assert_eq!(fleet.list().len(), 1, "a dropped registration leaves the registry");
        assert!(replicas.known().await.len() == 1, "window 0: a departed edge is not expected");
        fleet.ack(a.id, 3, 2);
        assert_eq!(fleet.list()[0].applied, 5, "ACKs never move backwards");
    }

    #[tokio::test]
    async fn departed_edges_stay_known_for_the_window_and_until_they_reconnect() {
        let fleet = Fleet::new();
        let (replicas, clock) = replicas(&fleet, 60);
        let a = fleet.register("a", None, String::new(), 1_000_000, 4);
        let b = fleet.register("b", None, String::new(), 1_000_000, 4);
        drop(b);
        let known = replicas.known().await;
        assert_eq!(
            known.iter().map(|e| (e.edge_id.as_str(), e.departed)).collect::<Vec<_>>(),
            [("a", false), ("b", true)]
        );
        assert_eq!(replicas.everywhere().await.len(), 1, "everywhere lists connected edges only");
        clock.advance(Duration::from_secs(61));
        assert_eq!(replicas.known().await.len(), 1, "forgotten after the window");
        drop(a);
        let _again = fleet.register("a", None, String::new(), 1_061_000, 4);
        assert!(replicas.known().await.iter().all(|e| !e.departed), "reconnected: no longer departed");
    }

    #[tokio::test]
    async fn a_new_stream_of_the_same_edge_replaces_the_old_one() {
        let fleet = Fleet::new();
        let old = fleet.register("e1", None, String::new(), 0, 1);
        let _new = fleet.register("e1", None, String::new(), 0, 1);
        assert_eq!(fleet.list().len(), 1);
        tokio::time::timeout(Duration::from_secs(1), old.stop.notified()).await.expect("old stream told to stop");
        drop(old);
        assert_eq!(fleet.list().len(), 1, "dropping the old registration keeps the new entry");
    }

    /// `SADD` calls Redis has served: one per published view (`publish_fleet`).
    fn views_published(redis: &stile_tests::redis::RedisServer) -> u64 {
        let info = redis.command(&["INFO", "commandstats"]);
        let line = info.lines().find(|l| l.starts_with("cmdstat_sadd:")).unwrap_or("cmdstat_sadd:calls=0,");
        line["cmdstat_sadd:calls=".len()..].split(',').next().unwrap().parse().unwrap()
    }

    // A burst of ACKs (every edge ACKing each of 40 changes, the changes 1 ms
    // apart) on a real Redis: the views go out at most once per PUBLISH_GAP,
    // not once per ACK (2000 here), and the last one holds every ACK. Without
    // the gap this run published 87 views in 99 ms.
    #[tokio::test]
    async fn a_burst_of_acks_goes_out_as_one_view_per_publish_gap() {
        let redis = stile_tests::redis::RedisServer::start();
        let config = crate::store::RedisConfig { url: redis.url(), ..Default::default() };
        let store: Arc<dyn ReplicaBus> = Arc::new(crate::store::RedisStore::connect(&config, 1_000).await.unwrap());
        let fleet = Fleet::new();
        let replicas = Arc::new(ReplicaFleet::new(
            Arc::clone(&fleet),
            Some(Arc::clone(&store)),
            Duration::from_secs(60),
            Duration::from_secs(60),
            Arc::new(crate::clock::SystemClock),
        ));
        let edges: Vec<_> = (0..50).map(|i| fleet.register(&format!("e{i}"), None, String::new(), 1_000, 0)).collect();
        let publisher = tokio::spawn(Arc::clone(&replicas).publish_loop());
        let deadline = Instant::now() + Duration::from_secs(10);
        while views_published(&redis) == 0 {
            assert!(Instant::now() < deadline, "the first view was never published");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(PUBLISH_GAP * 2).await;
        let before = views_published(&redis);
        let started = Instant::now();
        for version in 1..=40 {
            for e in &edges {
                fleet.ack(e.id, version, 1_000 + version);
                tokio::task::yield_now().await;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let elapsed = started.elapsed();
        tokio::time::sleep(PUBLISH_GAP * 3).await;
        let published = views_published(&redis) - before;
        // One view per gap during the burst, one more for the ACKs of its last gap.
        let bound = u64::try_from(elapsed.as_millis() / PUBLISH_GAP.as_millis()).unwrap() + 2;
        assert!(
            (1..=bound).contains(&published),
            "2000 ACKs over {elapsed:?} went out as {published} views (at most {bound})"
        );
        let views = store.fleet_views().await.unwrap();
        let (_, view) = views.iter().find(|(r, _)| *r == replicas.replica_id).expect("this replica's view");
        let view: Vec<EdgeView> = serde_json::from_str(view).unwrap();
        assert_eq!(view.len(), 50);
        assert!(view.iter().all(|e| e.applied == 40), "the last view holds the last ACKs");
        publisher.abort();
    }

    #[test]
    fn stats_count_connected_edges_per_lag_bucket() {
        assert_eq!([0, 1, 10, 11, 1000, 1001, u64::MAX].map(lag_bucket), [0, 1, 1, 2, 2, 3, 3]);
        let fleet = Fleet::new();
        let _held: Vec<_> = [2000, 1999, 1995, 1500, 10, 1]
            .iter()
            .enumerate()
            .map(|(i, applied)| fleet.register(&format!("e{i}"), None, String::new(), 0, *applied))
            .collect();
        let stats = fleet.stats(2000);
        assert_eq!(stats.by_lag, [1, 2, 1, 2]);
        assert_eq!((stats.connected, stats.max_lag), (6, 1999));
    }
}
