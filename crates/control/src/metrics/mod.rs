//! The control plane's Prometheus metrics, all named `stile_control_<name>_<unit>[_total]`;
//! the admin listener (`admin.rs`) serves them on `/metrics`.
//!
//! Recorded in few places: every RPC by a tower layer on the gRPC server
//! ([`RpcLayer`]: method and status code, duration); mints and revocations by their
//! handlers; store commits by `NotifyingStore` (`store/notify.rs`, through
//! [`CommitObserver`]). Fleet gauges (connected edges, worst lag and skew, log version,
//! pending key age) are set from a [`FleetStats`] when `/metrics` is scraped.
//!
//! Label values come from small fixed sets: method names from the compiled-in proto
//! descriptor (anything else is `other`), status code names, configured policy names,
//! revocation kinds, and at most [`MAX_CHANNEL_LABELS`] share channels (then `other`).

mod rpc;

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

pub(crate) use self::rpc::RpcLayer;
use crate::acks::Violation;
use crate::config::Config;
use crate::fleet::{FleetStats, LAG_BUCKETS};
use crate::model::Target;
use crate::store::notify::CommitObserver;

/// Every `reason` label of `stile_control_auth_denied_total` (`auth::DenyReason`'s labels;
/// a test in `auth` keeps the two in step).
pub(crate) const AUTH_DENIED_REASONS: [&str; 5] = ["missing", "malformed", "unknown", "wrong_role", "backoff"];

/// Most distinct share channels used as label values.
pub(crate) const MAX_CHANNEL_LABELS: usize = 64;

/// Every metric of one control-plane process.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    rpcs: IntCounterVec,
    rpc_duration: HistogramVec,
    mints: IntCounterVec,
    revocations: IntCounterVec,
    commit_duration: Histogram,
    store_errors: IntCounterVec,
    edges_connected: IntGauge,
    edges_by_lag: IntGaugeVec,
    edge_max_lag: IntGauge,
    edge_max_skew: Gauge,
    log_version: IntGauge,
    key_pending: IntGauge,
    tls_expiry: IntGauge,
    tls_handshakes: IntCounterVec,
    tls_failures: IntCounterVec,
    tls_reloads: IntCounterVec,
    sync_refused: IntCounterVec,
    sync_snapshots: IntCounterVec,
    sync_log_reads: IntCounterVec,
    acks_ignored: IntCounterVec,
    auth_denied: IntCounterVec,
    /// `/package.Service/Method` → `Service/Method`, for every method served.
    methods: HashMap<String, &'static str>,
    channels: RwLock<HashSet<Box<str>>>,
}

impl Metrics {
    /// Creates and registers every metric.
    pub(crate) fn new() -> Metrics {
        let registry = Registry::new();
        let r = &registry;
        let rpcs = register(
            r,
            IntCounterVec::new(
                Opts::new("stile_control_rpcs_total", "gRPC calls by method and status code (lower-case name)."),
                &["method", "code"],
            ),
        );
        let rpc_duration = register(
            r,
            HistogramVec::new(
                HistogramOpts::new(
                    "stile_control_rpc_duration_seconds",
                    "gRPC call duration, until the response ends.",
                )
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0]),
                &["method"],
            ),
        );
        let mints = register(
            r,
            IntCounterVec::new(
                Opts::new(
                    "stile_control_mints_total",
                    "Links minted (ok) or refused after authentication (error), by policy and share channel.",
                ),
                &["policy", "channel", "result"],
            ),
        );
        let revocations = register(
            r,
            IntCounterVec::new(
                Opts::new("stile_control_revocations_total", "Revocations committed, by kind."),
                &["kind"],
            ),
        );
        let commit_duration = register(
            r,
            Histogram::with_opts(
                HistogramOpts::new(
                    "stile_control_store_commit_duration_seconds",
                    "Durable store commits (until durable).",
                )
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]),
            ),
        );
        let store_errors = register(
            r,
            IntCounterVec::new(
                Opts::new("stile_control_store_errors_total", "Failed store operations, by operation."),
                &["op"],
            ),
        );
        let edges_connected =
            register(r, IntGauge::new("stile_control_edges_connected", "Edges holding a sync stream to this process."));
        let edges_by_lag = register(
            r,
            IntGaugeVec::new(
                Opts::new(
                    "stile_control_edges_by_lag",
                    "Edges holding a sync stream to this process, by how many log versions they have not ACKed (lag 0, 1-10, 11-1000, 1001+).",
                ),
                &["lag"],
            ),
        );
        for (bucket, _) in LAG_BUCKETS {
            edges_by_lag.with_label_values(&[bucket]);
        }
        let edge_max_lag = register(
            r,
            IntGauge::new(
                "stile_control_edge_max_lag_versions",
                "Largest number of log versions a connected edge has not ACKed (0 without edges).",
            ),
        );
        let edge_max_skew = register(
            r,
            Gauge::new(
                "stile_control_edge_max_clock_skew_seconds",
                "Largest |edge clock - this clock| among connected edges.",
            ),
        );
        let log_version =
            register(r, IntGauge::new("stile_control_change_log_version", "Newest committed change log version."));
        let key_pending = register(
            r,
            IntGauge::new(
                "stile_control_key_rollout_pending_seconds",
                "Age of the oldest PENDING signing key (0 when none is pending).",
            ),
        );
        let tls_expiry = register(
            r,
            IntGauge::new(
                "stile_control_tls_certificate_expiry_timestamp_seconds",
                "notAfter of the gRPC listener's TLS certificate in force, Unix seconds (0 without [tls]); set at start and by each reload.",
            ),
        );
        let tls_handshakes = register(
            r,
            IntCounterVec::new(
                Opts::new(
                    "stile_control_tls_handshakes_total",
                    "Completed TLS handshakes on the gRPC listener, by version.",
                ),
                &["version"],
            ),
        );
        let tls_failures = register(
            r,
            IntCounterVec::new(
                Opts::new(
                    "stile_control_tls_handshake_failures_total",
                    "Failed TLS handshakes on the gRPC listener, by cause.",
                ),
                &["cause"],
            ),
        );
        let tls_reloads = register(
            r,
            IntCounterVec::new(
                Opts::new(
                    "stile_control_tls_reloads_total",
                    "Reloads of the gRPC listener's certificate, key and client CA, by result.",
                ),
                &["result"],
            ),
        );
        let sync_refused = register(
            r,
            IntCounterVec::new(
                Opts::new(
                    "stile_control_sync_refused_total",
                    "Sync streams refused or ended by the control plane, by reason (protocol violations, edge ids the key may not use).",
                ),
                &["reason"],
            ),
        );
        let sync_snapshots = register(
            r,
            IntCounterVec::new(
                Opts::new(
                    "stile_control_sync_snapshots_total",
                    "Snapshots sent to edges, by source: built (read from the store) or shared (a copy of one built for another edge in the same second).",
                ),
                &["source"],
            ),
        );
        let acks_ignored = register(
            r,
            IntCounterVec::new(
                Opts::new(
                    "stile_control_sync_acks_ignored_total",
                    "ACKs and statuses not believed but tolerated: regressing (below the recorded version) or stale (offered before a reset).",
                ),
                &["kind"],
            ),
        );
        let auth_denied = register(
            r,
            IntCounterVec::new(
                Opts::new(
                    "stile_control_auth_denied_total",
                    "Calls refused for their credentials, by reason: missing, malformed, unknown (or deleted) key, wrong_role, backoff (source refused after repeated failures).",
                ),
                &["reason"],
            ),
        );
        for reason in AUTH_DENIED_REASONS {
            auth_denied.with_label_values(&[reason]);
        }
        for kind in ["token_id", "subject", "path_prefix", "key"] {
            revocations.with_label_values(&[kind]);
        }
        for reason in Violation::KINDS.iter().chain(&["edge_id_not_allowed", "client_cert_missing"]) {
            sync_refused.with_label_values(&[reason]);
        }
        let sync_log_reads = register(
            r,
            IntCounterVec::new(
                Opts::new(
                    "stile_control_sync_log_reads_total",
                    "Change log reads for sync sessions' deltas, by source: store (read and converted) or shared (a copy of the same read made for another session).",
                ),
                &["source"],
            ),
        );
        for source in ["built", "shared"] {
            sync_snapshots.with_label_values(&[source]);
        }
        for source in ["store", "shared"] {
            sync_log_reads.with_label_values(&[source]);
        }
        for kind in ["regressing", "stale"] {
            acks_ignored.with_label_values(&[kind]);
        }
        store_errors.with_label_values(&["commit"]);
        Metrics {
            registry,
            rpcs,
            rpc_duration,
            mints,
            revocations,
            commit_duration,
            store_errors,
            edges_connected,
            edges_by_lag,
            edge_max_lag,
            edge_max_skew,
            log_version,
            key_pending,
            tls_expiry,
            tls_handshakes,
            tls_failures,
            tls_reloads,
            sync_refused,
            sync_snapshots,
            sync_log_reads,
            acks_ignored,
            auth_denied,
            methods: served_methods(),
            channels: RwLock::new(HashSet::new()),
        }
    }

    /// Starts counting mints for `requests` (policy and channel of each, as the
    /// request named them). They count as `error` unless [`MintRecord::succeeded`] is called.
    pub(crate) fn mints<'r>(
        &self,
        config: &Config,
        requests: impl IntoIterator<Item = (&'r str, &'r str)>,
    ) -> MintRecord<'_> {
        let mut counts: HashMap<(&str, &str), u64> = HashMap::new();
        for (policy, channel) in requests {
            let policy = if policy.is_empty() { config.default_policy.as_str() } else { policy };
            let policy = config.policies.get_key_value(policy).map_or("other", |(k, _)| k.as_str());
            let channel = self.channel_label(channel);
            *counts.entry((policy, channel)).or_default() += 1;
        }
        let labels = counts.into_iter().map(|((p, c), n)| (p.to_owned(), c.to_owned(), n)).collect();
        MintRecord { metrics: self, labels, ok: false }
    }

    /// Counts one committed revocation.
    pub(crate) fn revocation(&self, target: &Target) {
        let kind = match target {
            Target::Token { .. } => "token_id",
            Target::Subject { .. } => "subject",
            Target::PathPrefix { .. } => "path_prefix",
            Target::Key { .. } => "key",
        };
        self.revocations.with_label_values(&[kind]).inc();
    }

    /// Pre-creates the TLS series a TLS listener can move: every handshake failure
    /// cause it can see (all but the edge's `unknown_sni`), both reload results.
    pub(crate) fn tls_serving(&self) {
        for f in stile_tls::Failure::ALL.into_iter().filter(|f| *f != stile_tls::Failure::UnknownSni) {
            self.tls_failures.with_label_values(&[f.as_str()]);
        }
        for r in ["ok", "error"] {
            self.tls_reloads.with_label_values(&[r]);
        }
    }

    /// Counts a sync stream refused or ended by the control plane (`reason`: a
    /// [`Violation::kind`], `edge_id_not_allowed` or `client_cert_missing`).
    pub(crate) fn sync_refused(&self, reason: &'static str) {
        self.sync_refused.with_label_values(&[reason]).inc();
    }

    /// Counts a call refused for its credentials (`reason`: one of [`AUTH_DENIED_REASONS`]).
    pub(crate) fn auth_denied(&self, reason: &'static str) {
        self.auth_denied.with_label_values(&[reason]).inc();
    }

    /// Counts a snapshot sent to an edge: `shared` a copy of the newest one
    /// built, else one read from the store for it.
    pub(crate) fn sync_snapshot(&self, shared: bool) {
        self.sync_snapshots.with_label_values(&[if shared { "shared" } else { "built" }]).inc();
    }

    /// Counts a change log read for a session's deltas: `shared` a copy of
    /// one made for another session, else read from the store.
    pub(crate) fn sync_log_read(&self, shared: bool) {
        self.sync_log_reads.with_label_values(&[if shared { "shared" } else { "store" }]).inc();
    }

    /// Counts an ACK or status that was tolerated but not believed.
    pub(crate) fn ack_ignored(&self, kind: &'static str) {
        self.acks_ignored.with_label_values(&[kind]).inc();
    }

    /// Counts a failed store operation other than a commit.
    pub(crate) fn store_error(&self, op: &'static str) {
        self.store_errors.with_label_values(&[op]).inc();
    }

    /// Sets the fleet gauges from `fleet` and, when it could be read, the age
    /// of the oldest PENDING key; then encodes every metric.
    pub(crate) fn scrape(&self, fleet: FleetStats, pending_key_age_secs: Option<u64>) -> Vec<u8> {
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.edges_connected.set(gauge(fleet.connected as u64));
        for ((bucket, _), n) in LAG_BUCKETS.iter().zip(fleet.by_lag) {
            self.edges_by_lag.with_label_values(&[bucket]).set(gauge(n as u64));
        }
        self.edge_max_lag.set(gauge(fleet.max_lag));
        self.edge_max_skew.set(fleet.max_skew_ms as f64 / 1000.0);
        self.log_version.set(gauge(fleet.log_version));
        if let Some(age) = pending_key_age_secs {
            self.key_pending.set(gauge(age));
        }
        self.encode()
    }

    /// The Prometheus text exposition of every metric.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 << 10);
        if let Err(e) = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "metrics.encode");
        }
        out
    }

    pub(super) fn method_label(&self, path: &str) -> &'static str {
        self.methods.get(path).copied().unwrap_or("other")
    }

    pub(super) fn rpc_done(&self, method: &'static str, code: &str, elapsed: Duration) {
        self.rpcs.with_label_values(&[method, code]).inc();
        self.rpc_duration.with_label_values(&[method]).observe(elapsed.as_secs_f64());
    }

    fn channel_label<'a>(&self, channel: &'a str) -> &'a str {
        if channel.is_empty() {
            return "none";
        }
        if self.channels.read().is_ok_and(|s| s.contains(channel)) {
            return channel;
        }
        let Ok(mut set) = self.channels.write() else { return "other" };
        if set.len() < MAX_CHANNEL_LABELS || set.contains(channel) {
            set.insert(channel.into());
            channel
        } else {
            "other"
        }
    }
}

impl CommitObserver for Metrics {
    /// Records one store commit: how long it took, and whether it failed.
    fn commit(&self, elapsed: Duration, ok: bool) {
        self.commit_duration.observe(elapsed.as_secs_f64());
        if !ok {
            self.store_errors.with_label_values(&["commit"]).inc();
        }
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

/// Mints being counted; see [`Metrics::mints`].
#[derive(Debug)]
pub(crate) struct MintRecord<'a> {
    metrics: &'a Metrics,
    labels: Vec<(String, String, u64)>,
    ok: bool,
}

impl MintRecord<'_> {
    /// The links were minted: count them as `ok`.
    pub(crate) fn succeeded(mut self) {
        self.ok = true;
    }
}

impl Drop for MintRecord<'_> {
    fn drop(&mut self) {
        let result = if self.ok { "ok" } else { "error" };
        for (policy, channel, n) in &self.labels {
            self.metrics.mints.with_label_values(&[policy, channel, result]).inc_by(*n);
        }
    }
}

/// Registers `metric` and hands it back. Names, help texts and labels are
/// static and distinct, so a failure here is a bug every test run finds.
fn register<M: Collector + Clone + 'static>(registry: &Registry, metric: prometheus::Result<M>) -> M {
    let metric = metric.expect("a valid static metric definition");
    registry.register(Box::new(metric.clone())).expect("a unique metric name");
    metric
}

/// Every method the server answers, from the compiled-in descriptors, plus health and reflection.
fn served_methods() -> HashMap<String, &'static str> {
    use prost::Message;
    let mut out = HashMap::new();
    let mut add = |package: &str, service: &str, method: &str| {
        let label: &'static str = Box::leak(format!("{service}/{method}").into_boxed_str());
        out.insert(format!("/{package}.{service}/{method}"), label);
    };
    if let Ok(set) = prost_types::FileDescriptorSet::decode(stile_proto::FILE_DESCRIPTOR_SET) {
        for file in set.file {
            let package = file.package().to_owned();
            for service in &file.service {
                for method in &service.method {
                    add(&package, service.name(), method.name());
                }
            }
        }
    }
    add("grpc.health.v1", "Health", "Check");
    add("grpc.health.v1", "Health", "Watch");
    add("grpc.reflection.v1", "ServerReflection", "ServerReflectionInfo");
    add("grpc.reflection.v1alpha", "ServerReflection", "ServerReflectionInfo");
    out
}

impl crate::tls::TlsObserver for Metrics {
    fn tls_certificate_expiry(&self, not_after: i64) {
        self.tls_expiry.set(not_after);
    }

    fn tls_handshake(&self, version: &'static str) {
        self.tls_handshakes.with_label_values(&[version]).inc();
    }

    fn tls_handshake_failure(&self, cause: stile_tls::Failure) {
        self.tls_failures.with_label_values(&[cause.as_str()]).inc();
    }

    fn tls_reload(&self, ok: bool) {
        self.tls_reloads.with_label_values(&[if ok { "ok" } else { "error" }]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stile_method_has_a_label_and_unknown_paths_do_not() {
        let m = Metrics::new();
        assert_eq!(m.method_label("/stile.v1.LinkService/Mint"), "LinkService/Mint");
        assert_eq!(m.method_label("/stile.v1.EdgeService/Sync"), "EdgeService/Sync");
        assert_eq!(m.method_label("/grpc.health.v1.Health/Check"), "Health/Check");
        assert_eq!(m.method_label("/stile.v1.LinkService/Nope"), "other");
        assert_eq!(m.method_label("/x"), "other");
        assert!(m.methods.len() > 20, "{:?}", m.methods.keys());
    }

    #[test]
    fn names_follow_the_convention_and_labels_are_bounded() {
        let m = Metrics::new();
        let config = Config::default();
        m.mints(&config, [("", "email"), ("paid", "email"), ("nope", "")]).succeeded();
        drop(m.mints(&config, [("private", "embed:x")]));
        for i in 0..MAX_CHANNEL_LABELS + 5 {
            let c = format!("c{i}");
            m.mints(&config, [("public", c.as_str())]).succeeded();
        }
        m.rpc_done("LinkService/Mint", rpc::code_name(b"3"), Duration::from_millis(1));
        m.commit(Duration::from_millis(2), false);
        let text = String::from_utf8(m.encode()).unwrap();
        for want in [
            r#"stile_control_mints_total{channel="email",policy="public",result="ok"} 1"#,
            r#"stile_control_mints_total{channel="email",policy="paid",result="ok"} 1"#,
            r#"stile_control_mints_total{channel="none",policy="other",result="ok"} 1"#,
            r#"stile_control_mints_total{channel="embed:x",policy="private",result="error"} 1"#,
            r#"stile_control_mints_total{channel="other",policy="public",result="ok"} 7"#,
            r#"stile_control_rpcs_total{code="invalid_argument",method="LinkService/Mint"} 1"#,
            r#"stile_control_store_errors_total{op="commit"} 1"#,
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            assert!(line.starts_with("# TYPE stile_control_"), "{line}");
        }
    }
}
