//! The cache's Prometheus metrics (`stile_edge_cache_*`), registered in the edge's registry.

use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::metrics::registered;

/// Cache statuses, the `status` label (also the access log's `cache` field and `x-stile-cache`).
pub(crate) const STATUSES: [&str; 6] = ["hit", "miss", "stale", "expired", "revalidated", "bypass"];

/// Every cache metric.
#[derive(Debug)]
pub(crate) struct CacheMetrics {
    lookups: IntCounterVec,
    served: IntCounterVec,
    zero_copy: IntCounter,
    origin_fetches: IntCounterVec,
    lock_waits: IntCounter,
    lock_timeouts: IntCounter,
    evictions: IntCounterVec,
    stored_bytes: IntGaugeVec,
    stored_objects: IntGaugeVec,
    purges: IntCounterVec,
    disk_errors: IntCounterVec,
}

impl CacheMetrics {
    /// Creates and registers them.
    pub(crate) fn new(registry: &Registry) -> CacheMetrics {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            registered(registry, IntCounterVec::new(Opts::new(name, help), labels))
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            registered(registry, IntGaugeVec::new(Opts::new(name, help), labels))
        };
        let m = CacheMetrics {
            lookups: counter(
                "stile_edge_cache_lookups_total",
                "Admitted requests by cache status and object kind.",
                &["status", "kind"],
            ),
            served: counter(
                "stile_edge_cache_served_bytes_total",
                "Response body bytes sent to viewers, by where they came from (cache or origin).",
                &["source"],
            ),
            zero_copy: registered(
                registry,
                IntCounter::new(
                    "stile_edge_cache_zero_copy_bytes_total",
                    "Cached body bytes sent with sendfile from a sealed memory-tier object (plain HTTP/1.1 hits; no copy through user space).",
                ),
            ),
            origin_fetches: counter(
                "stile_edge_cache_origin_fetches_total",
                "Requests the edge sent to the origin, by cache status (background: stale-while-revalidate refreshes).",
                &["status"],
            ),
            lock_waits: registered(
                registry,
                IntCounter::new(
                    "stile_edge_cache_lock_waits_total",
                    "Requests that waited for another request's fill.",
                ),
            ),
            lock_timeouts: registered(
                registry,
                IntCounter::new(
                    "stile_edge_cache_lock_timeouts_total",
                    "Requests that stopped waiting for a fill (cache.lock_wait_timeout_ms) and went to the origin.",
                ),
            ),
            evictions: counter("stile_edge_cache_evictions_total", "Objects evicted, by tier.", &["tier"]),
            stored_bytes: gauge("stile_edge_cache_stored_bytes", "Bytes stored, by tier.", &["tier"]),
            stored_objects: gauge("stile_edge_cache_objects", "Objects stored, by tier.", &["tier"]),
            purges: counter("stile_edge_cache_purges_total", "Purges applied, by target kind.", &["kind"]),
            disk_errors: counter(
                "stile_edge_cache_disk_errors_total",
                "Disk tier failures: files refused (corrupt) and writes that failed.",
                &["kind"],
            ),
        };
        for s in STATUSES {
            for k in ["manifest", "segment", "other"] {
                m.lookups.with_label_values(&[s, k]);
            }
            m.origin_fetches.with_label_values(&[s]);
        }
        m.origin_fetches.with_label_values(&["background"]);
        for t in ["memory", "disk"] {
            m.evictions.with_label_values(&[t]);
            m.stored_bytes.with_label_values(&[t]);
            m.stored_objects.with_label_values(&[t]);
        }
        for s in ["cache", "origin"] {
            m.served.with_label_values(&[s]);
        }
        for k in ["prefix", "path", "all"] {
            m.purges.with_label_values(&[k]);
        }
        m
    }

    pub(crate) fn lookup(&self, status: &str, kind: &str) {
        self.lookups.with_label_values(&[status, kind]).inc();
    }

    pub(crate) fn served(&self, from_cache: bool, bytes: u64) {
        self.served.with_label_values(&[if from_cache { "cache" } else { "origin" }]).inc_by(bytes);
    }

    pub(crate) fn zero_copy(&self, bytes: u64) {
        self.zero_copy.inc_by(bytes);
    }

    pub(crate) fn origin_fetch(&self, status: &str) {
        self.origin_fetches.with_label_values(&[status]).inc();
    }

    pub(crate) fn lock_wait(&self, timed_out: bool) {
        self.lock_waits.inc();
        if timed_out {
            self.lock_timeouts.inc();
        }
    }

    pub(crate) fn evicted(&self, tier: &str) {
        self.evictions.with_label_values(&[tier]).inc();
    }

    pub(crate) fn stored(&self, tier: &str, bytes: u64, objects: u64) {
        self.stored_bytes.with_label_values(&[tier]).set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.stored_objects.with_label_values(&[tier]).set(i64::try_from(objects).unwrap_or(i64::MAX));
    }

    pub(crate) fn purged(&self, kind: &str) {
        self.purges.with_label_values(&[kind]).inc();
    }

    pub(crate) fn disk_error(&self, kind: &str) {
        self.disk_errors.with_label_values(&[kind]).inc();
    }
}
