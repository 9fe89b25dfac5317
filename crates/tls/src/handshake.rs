//! Why a server-side TLS handshake failed: one vocabulary of causes for the
//! edge's viewer TLS (`stile_edge_tls_handshake_failures_total{cause}`) and the
//! control plane's gRPC TLS (`stile_control_tls_handshake_failures_total{cause}`),
//! and the label of a negotiated protocol version.
//!
//! The cause is recovered from the text of the error: Pingora's rustls acceptor
//! (the edge) keeps only the text of the rustls or I/O error, and tokio-rustls
//! (the control plane) wraps the rustls error in an `io::Error` whose text is the
//! rustls error's. The texts are not copied strings but rustls's own rendering
//! of each error ([`patterns`]), so a rustls upgrade that changes them fails the
//! unit tests instead of moving failures to `other`.

/// Why a handshake failed: the `cause` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The client offered only protocol versions below TLS 1.2 (or below the server's minimum).
    ProtocolVersion,
    /// No cipher suite, key-exchange group or signature scheme in common.
    NoSharedCipher,
    /// The client offered ALPN protocols, none of them one the server speaks.
    Alpn,
    /// The edge's `tls.strict_sni` and the SNI names no certificate (edge only).
    UnknownSni,
    /// The client refused our certificate (a certificate alert: unknown CA, bad or expired certificate).
    CertificateRejected,
    /// The client's own certificate did not verify against the server's client CA
    /// (the control plane's `tls.client_ca_file` only).
    ClientCertificate,
    /// The client sent another fatal alert.
    ClientAlert,
    /// The first bytes were not a TLS record (plain HTTP on the TLS port, a scanner).
    NotTls,
    /// Broken or out-of-order TLS messages.
    Malformed,
    /// The client closed the connection during the handshake.
    Closed,
    /// The handshake took longer than the configured `handshake_timeout_ms`.
    Timeout,
    /// Anything else.
    Other,
}

impl Failure {
    /// Every cause. Each endpoint pre-creates the series of the causes it can see.
    pub const ALL: [Failure; 12] = [
        Failure::ProtocolVersion,
        Failure::NoSharedCipher,
        Failure::Alpn,
        Failure::UnknownSni,
        Failure::CertificateRejected,
        Failure::ClientCertificate,
        Failure::ClientAlert,
        Failure::NotTls,
        Failure::Malformed,
        Failure::Closed,
        Failure::Timeout,
        Failure::Other,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::ProtocolVersion => "protocol_version",
            Failure::NoSharedCipher => "no_shared_cipher",
            Failure::Alpn => "alpn",
            Failure::UnknownSni => "unknown_sni",
            Failure::CertificateRejected => "certificate_rejected",
            Failure::ClientCertificate => "client_certificate",
            Failure::ClientAlert => "client_alert",
            Failure::NotTls => "not_tls",
            Failure::Malformed => "malformed",
            Failure::Closed => "closed",
            Failure::Timeout => "timeout",
            Failure::Other => "other",
        }
    }

    /// The cause of a failed handshake from the text of its error (a rustls error,
    /// an I/O error wrapping one, or a message that quotes either).
    pub fn from_text(text: &str) -> Failure {
        patterns().iter().find(|(p, _)| text.contains(p.as_str())).map_or(Failure::Other, |(_, f)| *f)
    }

    /// The cause of a rustls error.
    pub fn from_rustls(e: &rustls::Error) -> Failure {
        Failure::from_text(&e.to_string())
    }

    /// The cause of a failed tokio-rustls `accept` (an `io::Error` wrapping the
    /// rustls error, or the I/O error itself).
    pub fn from_io(e: &std::io::Error) -> Failure {
        if let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
            return Failure::from_rustls(tls);
        }
        match e.kind() {
            std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::BrokenPipe => Failure::Closed,
            _ => Failure::from_text(&e.to_string()),
        }
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
        // What rustls says when the edge's resolver has no certificate (strict SNI).
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
        // A client certificate that does not verify (unknown issuer, expired, bad signature, …).
        let bad = rustls::CertificateError::UnknownIssuer;
        v.push((prefix(E::InvalidCertificate(bad.clone()), bad.to_string()), Failure::ClientCertificate));
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

/// The `version` label of a completed handshake: `1.3`, `1.2` or `other`.
pub fn version_label(version: Option<rustls::ProtocolVersion>) -> &'static str {
    match version {
        Some(rustls::ProtocolVersion::TLSv1_3) => "1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "1.2",
        _ => "other",
    }
}
