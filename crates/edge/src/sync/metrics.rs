//! The sync client's metrics (`stile_edge_sync_*`, the clock skew and the
//! purges), registered in the edge's registry beside the proxy's.

use prometheus::{Gauge, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::metrics::registered;

/// The sync client's metrics, registered in the edge's registry.
#[derive(Clone, Debug)]
pub(crate) struct SyncMetrics {
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
    /// Creates the metrics in the edge's `registry`.
    pub(crate) fn new(registry: &Registry) -> SyncMetrics {
        let m = SyncMetrics {
            connected: registered(
                registry,
                IntGauge::new("stile_edge_sync_connected", "1 while the sync stream to a control plane is up."),
            ),
            lag: registered(
                registry,
                IntGauge::new(
                    "stile_edge_sync_lag_versions",
                    "Control-plane version minus applied version, as of the last heartbeat.",
                ),
            ),
            skew: registered(
                registry,
                Gauge::new(
                    "stile_edge_clock_skew_seconds",
                    "This edge's clock minus the control plane's, from heartbeats (RTT-corrected).",
                ),
            ),
            reconnects: registered(
                registry,
                IntCounter::new("stile_edge_sync_reconnects_total", "Sync stream reconnect attempts."),
            ),
            snapshots: registered(registry, IntCounter::new("stile_edge_sync_snapshots_total", "Snapshots applied.")),
            deltas: registered(registry, IntCounter::new("stile_edge_sync_deltas_total", "Deltas applied.")),
            nacks: registered(registry, IntCounter::new("stile_edge_sync_nacks_total", "Messages refused (NACKed).")),
            purges: registered(
                registry,
                IntCounter::new(
                    "stile_edge_purges_total",
                    "Purges received from the control plane (applied to the cache when it is on).",
                ),
            ),
            purge_version: registered(
                registry,
                IntGauge::new("stile_edge_purge_last_version", "Log version of the last purge received."),
            ),
            cache_writes: registered(
                registry,
                IntCounterVec::new(
                    Opts::new("stile_edge_sync_cache_writes_total", "Writes of the state cache file, by result."),
                    &["result"],
                ),
            ),
        };
        for r in ["ok", "error"] {
            m.cache_writes.with_label_values(&[r]);
        }
        m
    }
}

impl SyncMetrics {
    /// The stream went up or down.
    pub(crate) fn connected(&self, up: bool) {
        self.connected.set(i64::from(up));
    }

    /// A reconnect attempt.
    pub(crate) fn reconnect(&self) {
        self.reconnects.inc();
    }

    /// What one batch applied.
    pub(crate) fn applied(&self, snapshots: u64, deltas: u64) {
        self.snapshots.inc_by(snapshots);
        self.deltas.inc_by(deltas);
    }

    /// A purge received.
    pub(crate) fn purge(&self, version: u64) {
        self.purges.inc();
        self.purge_version.set(i64::try_from(version).unwrap_or(i64::MAX));
    }

    /// A message refused.
    pub(crate) fn nack(&self) {
        self.nacks.inc();
    }

    /// Versions the edge is behind the control plane.
    pub(crate) fn lag(&self, versions: u64) {
        self.lag.set(i64::try_from(versions).unwrap_or(i64::MAX));
    }

    /// This edge's clock minus the control plane's, milliseconds.
    pub(crate) fn skew_ms(&self, skew: i64) {
        self.skew.set(skew as f64 / 1000.0);
    }

    /// One write of the cache (full file or journal), by result.
    pub(crate) fn cache_write(&self, ok: bool) {
        self.cache_writes.with_label_values(&[if ok { "ok" } else { "error" }]).inc();
    }
}
