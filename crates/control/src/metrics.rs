//! The control plane's Prometheus metrics, all named `stile_control_<name>_<unit>[_total]`,
//! and the admin HTTP listener that serves them (`/healthz`, `/readyz`, `/metrics`).
//!
//! Recorded in few places: every RPC by a tower layer on the gRPC server
//! ([`RpcLayer`]: method and status code, duration); mints and revocations by their
//! handlers; store commits in `NotifyingStore` (`store/notify.rs`). Fleet gauges (connected
//! edges, worst lag and skew, log version, pending key age) are read from the shared
//! state when `/metrics` is scraped.
//!
//! Label values come from small fixed sets: method names from the compiled-in proto
//! descriptor (anything else is `other`), status code names, configured policy names,
//! revocation kinds, and at most [`MAX_CHANNEL_LABELS`] share channels (then `other`).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use prometheus::{Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::model::{KeyState, Target};
use crate::service::Shared;
use crate::store::notify::CommitObserver;

/// Most distinct share channels used as label values.
pub const MAX_CHANNEL_LABELS: usize = 64;

/// Every metric of one control-plane process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    rpcs: IntCounterVec,
    rpc_duration: HistogramVec,
    mints: IntCounterVec,
    revocations: IntCounterVec,
    commit_duration: Histogram,
    store_errors: IntCounterVec,
    edges_connected: IntGauge,
    edge_max_lag: IntGauge,
    edge_max_skew: Gauge,
    log_version: IntGauge,
    key_pending: IntGauge,
    /// `/package.Service/Method` → `Service/Method`, for every method served.
    methods: HashMap<String, &'static str>,
    channels: RwLock<HashSet<Box<str>>>,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let rpcs = IntCounterVec::new(
            Opts::new("stile_control_rpcs_total", "gRPC calls by method and status code (lower-case name)."),
            &["method", "code"],
        )
        .expect("valid metric");
        let rpc_duration = HistogramVec::new(
            HistogramOpts::new("stile_control_rpc_duration_seconds", "gRPC call duration, until the response ends.")
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0]),
            &["method"],
        )
        .expect("valid metric");
        let mints = IntCounterVec::new(
            Opts::new(
                "stile_control_mints_total",
                "Links minted (ok) or refused after authentication (error), by policy and share channel.",
            ),
            &["policy", "channel", "result"],
        )
        .expect("valid metric");
        let revocations = IntCounterVec::new(
            Opts::new("stile_control_revocations_total", "Revocations committed, by kind."),
            &["kind"],
        )
        .expect("valid metric");
        let commit_duration = Histogram::with_opts(
            HistogramOpts::new("stile_control_store_commit_duration_seconds", "Durable store commits (until durable).")
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]),
        )
        .expect("valid metric");
        let store_errors = IntCounterVec::new(
            Opts::new("stile_control_store_errors_total", "Failed store operations, by operation."),
            &["op"],
        )
        .expect("valid metric");
        let edges_connected =
            IntGauge::new("stile_control_edges_connected", "Edges holding a sync stream to this process.")
                .expect("valid metric");
        let edge_max_lag = IntGauge::new(
            "stile_control_edge_max_lag_versions",
            "Largest number of log versions a connected edge has not ACKed (0 without edges).",
        )
        .expect("valid metric");
        let edge_max_skew = Gauge::new(
            "stile_control_edge_max_clock_skew_seconds",
            "Largest |edge clock - this clock| among connected edges.",
        )
        .expect("valid metric");
        let log_version = IntGauge::new("stile_control_change_log_version", "Newest committed change log version.")
            .expect("valid metric");
        let key_pending = IntGauge::new(
            "stile_control_key_rollout_pending_seconds",
            "Age of the oldest PENDING signing key (0 when none is pending).",
        )
        .expect("valid metric");
        for c in [
            Box::new(rpcs.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(rpc_duration.clone()),
            Box::new(mints.clone()),
            Box::new(revocations.clone()),
            Box::new(commit_duration.clone()),
            Box::new(store_errors.clone()),
            Box::new(edges_connected.clone()),
            Box::new(edge_max_lag.clone()),
            Box::new(edge_max_skew.clone()),
            Box::new(log_version.clone()),
            Box::new(key_pending.clone()),
        ] {
            registry.register(c).expect("unique metric names");
        }
        for kind in ["token_id", "subject", "path_prefix", "key"] {
            revocations.with_label_values(&[kind]);
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
            edge_max_lag,
            edge_max_skew,
            log_version,
            key_pending,
            methods: served_methods(),
            channels: RwLock::new(HashSet::new()),
        }
    }

    /// Starts counting mints for `requests` (policy and channel of each, as the
    /// request named them). They count as `error` unless [`MintRecord::ok`] is called.
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

    /// Counts a failed store operation other than a commit.
    pub(crate) fn store_error(&self, op: &'static str) {
        self.store_errors.with_label_values(&[op]).inc();
    }

    /// Reads the fleet gauges from the shared state, then encodes every metric.
    pub(crate) async fn scrape(&self, s: &Shared) -> Vec<u8> {
        let edges = s.fleet.list();
        let version = *s.versions.borrow();
        self.edges_connected.set(i64::try_from(edges.len()).unwrap_or(i64::MAX));
        let lag = edges.iter().map(|e| version.saturating_sub(e.applied)).max().unwrap_or(0);
        self.edge_max_lag.set(i64::try_from(lag).unwrap_or(i64::MAX));
        let skew_ms = edges.iter().map(|e| e.skew_ms.unsigned_abs()).max().unwrap_or(0);
        self.edge_max_skew.set(skew_ms as f64 / 1000.0);
        self.log_version.set(i64::try_from(version).unwrap_or(i64::MAX));
        match s.store.signing_keys().await {
            Ok(keys) => {
                let now = s.now();
                let oldest = keys.iter().filter(|k| k.state == KeyState::Pending).map(|k| k.created_at).min();
                let age = oldest.map_or(0, |t| now.saturating_sub(t));
                self.key_pending.set(i64::try_from(age).unwrap_or(i64::MAX));
            }
            Err(e) => {
                self.store_error("read");
                tracing::warn!(error = %e, "metrics.keys");
            }
        }
        self.encode()
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 << 10);
        if let Err(e) = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "metrics.encode");
        }
        out
    }

    fn method_label(&self, path: &str) -> &'static str {
        self.methods.get(path).copied().unwrap_or("other")
    }

    fn rpc_done(&self, method: &'static str, code: &str, elapsed: Duration) {
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
    /// The links were minted.
    pub(crate) fn ok(mut self) {
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

/// The lower-case name of a numeric `grpc-status`.
fn code_name(code: &[u8]) -> &'static str {
    match code {
        b"0" => "ok",
        b"1" => "cancelled",
        b"2" => "unknown",
        b"3" => "invalid_argument",
        b"4" => "deadline_exceeded",
        b"5" => "not_found",
        b"6" => "already_exists",
        b"7" => "permission_denied",
        b"8" => "resource_exhausted",
        b"9" => "failed_precondition",
        b"10" => "aborted",
        b"11" => "out_of_range",
        b"12" => "unimplemented",
        b"13" => "internal",
        b"14" => "unavailable",
        b"15" => "data_loss",
        b"16" => "unauthenticated",
        _ => "unknown",
    }
}

// ------------------------------------------------------------- RPC layer

/// A tower layer counting every gRPC call by method and final status code.
#[derive(Clone, Debug)]
pub(crate) struct RpcLayer(pub(crate) Arc<Metrics>);

impl<S> tower::Layer<S> for RpcLayer {
    type Service = RpcService<S>;
    fn layer(&self, inner: S) -> RpcService<S> {
        RpcService { inner, metrics: Arc::clone(&self.0) }
    }
}

/// See [`RpcLayer`].
#[derive(Clone, Debug)]
pub(crate) struct RpcService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, RB> tower::Service<http::Request<B>> for RpcService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    RB: http_body::Body + Send + 'static,
{
    type Response = http::Response<CountedBody<RB>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = self.metrics.method_label(req.uri().path());
        let mut done = Done { metrics: Arc::clone(&self.metrics), method, started: Instant::now(), recorded: false };
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            // A trailers-only response (every error from a handler) has its status in the headers.
            if let Some(code) = resp.headers().get("grpc-status") {
                done.record(code_name(code.as_bytes()));
            }
            Ok(resp.map(|body| CountedBody { inner: Box::pin(body), done }))
        })
    }
}

/// A response body that records the call's status from its trailers.
pub(crate) struct CountedBody<B> {
    inner: Pin<Box<B>>,
    done: Done,
}

impl<B> std::fmt::Debug for CountedBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountedBody").field("method", &self.done.method).finish()
    }
}

impl<B: http_body::Body> http_body::Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let polled = self.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(|t| t.get("grpc-status")) {
                    self.done.record(code_name(code.as_bytes()));
                }
            }
            Poll::Ready(Some(Err(_))) => self.done.record("unknown"),
            Poll::Ready(None) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Records a call once: at its status, or as `cancelled` when the response is dropped first.
struct Done {
    metrics: Arc<Metrics>,
    method: &'static str,
    started: Instant,
    recorded: bool,
}

impl Done {
    fn record(&mut self, code: &str) {
        if !self.recorded {
            self.recorded = true;
            self.metrics.rpc_done(self.method, code, self.started.elapsed());
        }
    }
}

impl Drop for Done {
    fn drop(&mut self) {
        self.record("cancelled");
    }
}

// ------------------------------------------------------------ admin HTTP

/// Serves `/healthz` (the process runs), `/readyz` (serving gRPC and not shutting
/// down) and `/metrics` on `listener` until the task is dropped. A deliberately small
/// HTTP/1.1 responder: one request per connection, `Connection: close`.
pub(crate) async fn serve_admin(listener: TcpListener, shared: Arc<Shared>, ready: Arc<AtomicBool>) {
    loop {
        let (mut stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "admin.accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = Arc::clone(&shared);
        let ready = Arc::clone(&ready);
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(1024);
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                true
            })
            .await;
            if read != Ok(true) {
                return;
            }
            let line = buf.split(|&b| b == b'\r').next().unwrap_or_default();
            let mut parts = line.split(|&b| b == b' ');
            let (method, path) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
            let path = path.split(|&b| b == b'?').next().unwrap_or_default();
            let (status, body) = match (method, path) {
                (b"GET" | b"HEAD", b"/healthz") => ("200 OK", b"ok\n".to_vec()),
                (b"GET" | b"HEAD", b"/readyz") if ready.load(Ordering::Relaxed) => ("200 OK", b"ready\n".to_vec()),
                (b"GET" | b"HEAD", b"/readyz") => ("503 Service Unavailable", b"not ready\n".to_vec()),
                (b"GET" | b"HEAD", b"/metrics") => ("200 OK", shared.metrics.scrape(&shared).await),
                (b"GET" | b"HEAD", _) => ("404 Not Found", b"not found\n".to_vec()),
                _ => ("405 Method Not Allowed", b"method not allowed\n".to_vec()),
            };
            let ctype = if path == b"/metrics" { "text/plain; version=0.0.4" } else { "text/plain" };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            if method != b"HEAD" {
                let _ = stream.write_all(&body).await;
            }
            let _ = stream.shutdown().await;
        });
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
        m.mints(&config, [("", "email"), ("paid", "email"), ("nope", "")]).ok();
        drop(m.mints(&config, [("private", "embed:x")]));
        for i in 0..MAX_CHANNEL_LABELS + 5 {
            let c = format!("c{i}");
            m.mints(&config, [("public", c.as_str())]).ok();
        }
        m.rpc_done("LinkService/Mint", code_name(b"3"), Duration::from_millis(1));
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
