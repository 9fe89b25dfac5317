//! TLS metrics, registered in the edge's registry: handshakes by version and
//! ALPN, failures by cause (a fixed set), handshake time, certificate expiry,
//! reloads and HTTPS redirects.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

use super::certs::LoadedCert;

/// Why a handshake failed: the `cause` label of `stile_edge_tls_handshake_failures_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The client offered only protocol versions below TLS 1.2 (or below `min_version`).
    ProtocolVersion,
    /// No cipher suite, key-exchange group or signature scheme in common.
    NoSharedCipher,
    /// The client offered ALPN protocols, none of them `h2` or `http/1.1`.
    Alpn,
    /// `tls.strict_sni` and the SNI names no certificate.
    UnknownSni,
    /// The client refused our certificate (a certificate alert: unknown CA, bad or expired certificate).
    CertificateRejected,
    /// The client sent another fatal alert.
    ClientAlert,
    /// The first bytes were not a TLS record (plain HTTP on the TLS port, a scanner).
    NotTls,
    /// Broken or out-of-order TLS messages.
    Malformed,
    /// The client closed the connection during the handshake.
    Closed,
    /// The handshake took longer than `tls.handshake_timeout_ms`.
    Timeout,
    /// Anything else.
    Other,
}

impl Failure {
    /// Every cause, for pre-created series.
    pub(crate) const ALL: [Failure; 11] = [
        Failure::ProtocolVersion,
        Failure::NoSharedCipher,
        Failure::Alpn,
        Failure::UnknownSni,
        Failure::CertificateRejected,
        Failure::ClientAlert,
        Failure::NotTls,
        Failure::Malformed,
        Failure::Closed,
        Failure::Timeout,
        Failure::Other,
    ];

    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Failure::ProtocolVersion => "protocol_version",
            Failure::NoSharedCipher => "no_shared_cipher",
            Failure::Alpn => "alpn",
            Failure::UnknownSni => "unknown_sni",
            Failure::CertificateRejected => "certificate_rejected",
            Failure::ClientAlert => "client_alert",
            Failure::NotTls => "not_tls",
            Failure::Malformed => "malformed",
            Failure::Closed => "closed",
            Failure::Timeout => "timeout",
            Failure::Other => "other",
        }
    }

    /// Classifies a failed handshake from Pingora's error. Pingora's rustls acceptor keeps
    /// only the text of the rustls or I/O error (`explain_err`), so the cause is found by
    /// matching that text against rustls's own rendering of each error ([`patterns`]),
    /// not against copied strings: a rustls upgrade that changes them fails the unit tests.
    pub(crate) fn classify(e: &pingora::Error) -> Failure {
        let text = e.to_string();
        patterns().iter().find(|(p, _)| text.contains(p.as_str())).map_or(Failure::Other, |(_, f)| *f)
    }

    /// The cause of a rustls error (what [`Failure::classify`] recovers from its text).
    #[cfg(test)]
    pub(crate) fn from_rustls(e: &rustls::Error) -> Failure {
        let text = e.to_string();
        patterns().iter().find(|(p, _)| text.contains(p.as_str())).map_or(Failure::Other, |(_, f)| *f)
    }
}

/// `(text, cause)`, most specific first: rustls's rendering of the errors (or of their
/// fixed prefix) that each cause stands for, and the I/O errors of a peer hanging up.
fn patterns() -> &'static [(String, Failure)] {
    use rustls::{AlertDescription as A, Error as E, InvalidMessage as M, PeerIncompatible as P, PeerMisbehaved};
    static PATTERNS: std::sync::OnceLock<Vec<(String, Failure)>> = std::sync::OnceLock::new();
    PATTERNS.get_or_init(|| {
        let mut v: Vec<(String, Failure)> = Vec::new();
        let mut add = |e: E, f| v.push((e.to_string(), f));
        // Legacy clients (TLS 1.0/1.1) send no signature_algorithms and no supported_versions.
        for p in [
            P::Tls12NotOffered,
            P::Tls12NotOfferedOrEnabled,
            P::SupportedVersionsExtensionRequired,
            P::ServerDoesNotSupportTls12Or13,
            P::SignatureAlgorithmsExtensionRequired,
        ] {
            add(E::PeerIncompatible(p), Failure::ProtocolVersion);
        }
        for p in [
            P::NoCipherSuitesInCommon,
            P::NoKxGroupsInCommon,
            P::NoSignatureSchemesInCommon,
            P::NoEcPointFormatsInCommon,
            P::UncompressedEcPointsRequired,
        ] {
            add(E::PeerIncompatible(p), Failure::NoSharedCipher);
        }
        add(E::NoApplicationProtocol, Failure::Alpn);
        // What rustls says when our resolver has no certificate (strict SNI).
        add(E::General("no server certificate chain resolved".into()), Failure::UnknownSni);
        for a in [
            A::BadCertificate,
            A::UnsupportedCertificate,
            A::CertificateRevoked,
            A::CertificateExpired,
            A::CertificateUnknown,
            A::UnknownCA,
            A::AccessDenied,
        ] {
            add(E::AlertReceived(a), Failure::CertificateRejected);
        }
        add(E::InvalidMessage(M::InvalidContentType), Failure::NotTls);
        let prefix = |e: E, variable: String| {
            let full = e.to_string();
            full.strip_suffix(&variable).unwrap_or(&full).to_owned()
        };
        let alert = format!("{:?}", A::CloseNotify);
        v.push((prefix(E::AlertReceived(A::CloseNotify), alert), Failure::ClientAlert));
        let m = format!("{:?}", M::InvalidContentType);
        v.push((prefix(E::InvalidMessage(M::InvalidContentType), m), Failure::Malformed));
        let pm = format!("{:?}", PeerMisbehaved::IllegalMiddleboxChangeCipherSpec);
        v.push((prefix(E::PeerMisbehaved(PeerMisbehaved::IllegalMiddleboxChangeCipherSpec), pm), Failure::Malformed));
        let p = format!("{:?}", P::NullCompressionRequired);
        v.push((prefix(E::PeerIncompatible(P::NullCompressionRequired), p), Failure::Other));
        for e in [
            E::InappropriateMessage { expect_types: vec![], got_type: rustls::ContentType::Alert },
            E::InappropriateHandshakeMessage { expect_types: vec![], got_type: rustls::HandshakeType::Finished },
        ] {
            let full = e.to_string();
            let cut = full.find("got ").map_or(full.len(), |i| i + 4);
            v.push((full[..cut].to_owned(), Failure::Malformed));
        }
        v.push((E::DecryptError.to_string(), Failure::Malformed));
        v.push((E::PeerSentOversizedRecord.to_string(), Failure::Malformed));
        // tokio-rustls's words for EOF in a handshake, and the OS's for a reset or broken pipe.
        for closed in ["tls handshake eof", "Connection reset by peer", "Broken pipe"] {
            v.push((closed.to_owned(), Failure::Closed));
        }
        v
    })
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
        for f in Failure::ALL {
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
