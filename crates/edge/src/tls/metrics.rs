//! TLS metrics, registered in the edge's registry: handshakes by version and
//! ALPN, failures by cause (a fixed set), handshake time, certificate expiry,
//! reloads and HTTPS redirects.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

use super::certs::LoadedCert;

/// Why a handshake failed: the `cause` label of `stile_edge_tls_handshake_failures_total`
/// (the vocabulary is shared with the control plane, in `stile_tls`).
pub(crate) use stile_tls::Failure;

/// The causes the edge can see (it asks for no client certificate): its pre-created series.
fn edge_causes() -> impl Iterator<Item = Failure> {
    Failure::ALL.into_iter().filter(|f| *f != Failure::ClientCertificate)
}

/// Classifies a failed handshake from Pingora's error. Pingora's rustls acceptor keeps
/// only the text of the rustls or I/O error (`explain_err`), so the cause is found from
/// that text ([`Failure::from_text`]).
pub(crate) fn classify(e: &pingora::Error) -> Failure {
    Failure::from_text(&e.to_string())
}

/// Every TLS metric of one edge.
#[derive(Debug)]
pub(crate) struct TlsMetrics {
    handshakes: IntCounterVec,
    failures: IntCounterVec,
    handshake_seconds: Histogram,
    expiry: IntGaugeVec,
    reloads: IntCounterVec,
    redirects: IntCounter,
}

impl TlsMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub(crate) fn new(registry: &Registry) -> TlsMetrics {
        let handshakes = IntCounterVec::new(
            Opts::new("stile_edge_tls_handshakes_total", "Completed TLS handshakes by version and ALPN protocol."),
            &["version", "alpn"],
        )
        .expect("valid metric");
        let failures = IntCounterVec::new(
            Opts::new("stile_edge_tls_handshake_failures_total", "Failed TLS handshakes by cause."),
            &["cause"],
        )
        .expect("valid metric");
        let handshake_seconds = Histogram::with_opts(
            HistogramOpts::new("stile_edge_tls_handshake_duration_seconds", "Time to complete a TLS handshake.")
                .buckets(vec![0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]),
        )
        .expect("valid metric");
        let expiry = IntGaugeVec::new(
            Opts::new(
                "stile_edge_tls_certificate_expiry_timestamp_seconds",
                "notAfter of each loaded certificate (Unix time), by its first name.",
            ),
            &["certificate"],
        )
        .expect("valid metric");
        let reloads = IntCounterVec::new(
            Opts::new("stile_edge_tls_reloads_total", "Certificate reloads by result."),
            &["result"],
        )
        .expect("valid metric");
        let redirects = IntCounter::new(
            "stile_edge_https_redirects_total",
            "Plain-HTTP requests answered with a redirect to HTTPS.",
        )
        .expect("valid metric");
        for c in [
            Box::new(handshakes.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(failures.clone()),
            Box::new(handshake_seconds.clone()),
            Box::new(expiry.clone()),
            Box::new(reloads.clone()),
            Box::new(redirects.clone()),
        ] {
            registry.register(c).expect("unique metric names");
        }
        for f in edge_causes() {
            failures.with_label_values(&[f.as_str()]);
        }
        for r in ["ok", "error"] {
            reloads.with_label_values(&[r]);
        }
        TlsMetrics { handshakes, failures, handshake_seconds, expiry, reloads, redirects }
    }

    /// Counts one completed handshake.
    pub(crate) fn handshake(&self, version: &'static str, alpn: &'static str, secs: f64) {
        self.handshakes.with_label_values(&[version, alpn]).inc();
        self.handshake_seconds.observe(secs);
    }

    /// Counts one failed handshake.
    pub(crate) fn failure(&self, cause: Failure) {
        self.failures.with_label_values(&[cause.as_str()]).inc();
    }

    /// Publishes the expiry of the certificates in force (replacing the previous set).
    pub(crate) fn observe_certificates(&self, certs: &[LoadedCert]) {
        self.expiry.reset();
        for c in certs {
            self.expiry.with_label_values(&[c.label.as_str()]).set(c.not_after);
        }
    }

    /// Counts one reload.
    pub(crate) fn reload(&self, ok: bool) {
        self.reloads.with_label_values(&[if ok { "ok" } else { "error" }]).inc();
    }

    /// Counts one redirect to HTTPS.
    pub(crate) fn redirect(&self) {
        self.redirects.inc();
    }
}
