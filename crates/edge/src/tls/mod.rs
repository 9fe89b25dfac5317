//! Viewer TLS: HTTPS listeners with certificates chosen by SNI, HTTP/2 by ALPN,
//! certificate reload without a restart, handshake failures counted by cause,
//! and the plain listeners' redirect to HTTPS.
//!
//! The backend is rustls (Pingora's `rustls` feature, ring as the crypto
//! provider): memory-safe, no C toolchain beyond what the build already needs
//! (ring), TLS 1.2 and 1.3 only, and a server configuration we build ourselves
//! (cipher suites, ALPN, tickets, and a certificate resolver we can swap). The
//! comparison with OpenSSL is in `BENCHMARKS.md`.
//!
//! The listeners are plain TCP sockets to Pingora (so the zero-downtime upgrade
//! hands them over like any other); [`Front`] is the connection-level service in
//! front of the proxy: on a TLS listener it runs the handshake itself (bounded by
//! `tls.handshake_timeout_ms`, failures classified by cause), then hands the
//! encrypted stream to Pingora's HTTP service, which picks HTTP/2 or HTTP/1.1
//! from the negotiated ALPN. [`CertResolver`] holds the current [`SniTable`]
//! behind an `ArcSwap`: [`CertReloader`] swaps in a new one on SIGHUP or when a
//! file changes, so new handshakes get the new certificate while established
//! connections keep the keys they negotiated.

mod certs;
mod front;
mod metrics;
mod redirect;
mod reload;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, SupportedCipherSuite};

pub use certs::CertError;
pub(crate) use front::Front;
pub(crate) use metrics::TlsMetrics;
pub(crate) use redirect::Redirect;
pub(crate) use reload::CertReloader;

use crate::config::{ConfigError, TlsConfig, TlsVersion};
use certs::{LoadedCert, SniTable};

/// Why viewer TLS could not be set up (all before any port is bound).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file is unreadable, mismatched, expired or names the wrong host.
    #[error("tls.certificates: {0}")]
    Certificate(#[from] CertError),
    /// A setting the TLS library refuses.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Everything the TLS listeners need, built and checked before anything binds.
pub(crate) struct TlsSetup {
    pub(crate) resolver: Arc<CertResolver>,
    pub(crate) acceptor: Arc<pingora::listeners::tls::Acceptor>,
    pub(crate) metrics: Arc<TlsMetrics>,
    pub(crate) provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for TlsSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSetup").field("resolver", &self.resolver).finish_non_exhaustive()
    }
}

impl TlsSetup {
    /// Loads and checks every certificate at time `now` and builds the server
    /// configuration. `None` when `tls.listen` is empty.
    pub(crate) fn build(
        config: &TlsConfig,
        now: u64,
        registry: &prometheus::Registry,
    ) -> Result<Option<TlsSetup>, TlsError> {
        if config.listen.is_empty() {
            return Ok(None);
        }
        let provider = Arc::new(provider(config)?);
        let certs = load_all(config, &provider, now)?;
        let metrics = Arc::new(TlsMetrics::new(registry));
        metrics.observe_certificates(&certs);
        for c in &certs {
            tracing::info!(
                tls.cert = %c.files.0.display(), tls.names = %c.names.join(","), tls.not_after = c.not_after,
                "tls.certificate_loaded"
            );
        }
        let resolver = Arc::new(CertResolver { table: ArcSwap::from_pointee(SniTable::new(certs, config.strict_sni)) });
        let server = server_config(config, provider.clone(), resolver.clone())?;
        let acceptor = Arc::new(pingora::listeners::tls::Acceptor::from_server_config(server));
        Ok(Some(TlsSetup { resolver, acceptor, metrics, provider }))
    }

    /// The connection-level front for a service with these TLS listeners.
    pub(crate) fn front_settings(&self, config: &TlsConfig) -> front::TlsListeners {
        front::TlsListeners {
            addrs: config.listen.iter().filter_map(|l| l.parse().ok()).collect(),
            acceptor: self.acceptor.clone(),
            timeout: Duration::from_millis(config.handshake_timeout_ms),
            metrics: self.metrics.clone(),
        }
    }
}

/// Loads every configured certificate (the first error wins).
pub(crate) fn load_all(config: &TlsConfig, provider: &CryptoProvider, now: u64) -> Result<Vec<LoadedCert>, TlsError> {
    config.certificates.iter().map(|c| certs::load(c, provider, now).map_err(TlsError::from)).collect()
}

/// rustls's ring provider, limited to `tls.cipher_suites` when given.
fn provider(config: &TlsConfig) -> Result<CryptoProvider, ConfigError> {
    let mut provider = ring_provider();
    if !config.cipher_suites.is_empty() {
        let mut chosen: Vec<SupportedCipherSuite> = Vec::new();
        for name in &config.cipher_suites {
            let found =
                provider.cipher_suites.iter().find(|s| suite_matches(s, name)).ok_or_else(|| ConfigError::Invalid {
                    field: "tls.cipher_suites",
                    message: format!("{name:?} is not one of {}", suite_names(&provider).join(", ")),
                })?;
            if !chosen.contains(found) {
                chosen.push(*found);
            }
        }
        provider.cipher_suites = chosen;
    }
    let has = |v: rustls::ProtocolVersion| provider.cipher_suites.iter().any(|s| s.version().version == v);
    if !has(rustls::ProtocolVersion::TLSv1_3) {
        return Err(ConfigError::Invalid {
            field: "tls.cipher_suites",
            message: "no TLS 1.3 cipher suite left (TLS 1.3 cannot be turned off)".into(),
        });
    }
    if config.min_version == TlsVersion::V1_2 && !has(rustls::ProtocolVersion::TLSv1_2) {
        return Err(ConfigError::Invalid {
            field: "tls.cipher_suites",
            message: "no TLS 1.2 cipher suite left with min_version = \"1.2\" (set min_version = \"1.3\")".into(),
        });
    }
    Ok(provider)
}

/// rustls's ring provider: the one Pingora's rustls backend is built on (its
/// connector installs it as the process default); `docs/edge.md` says why.
pub(crate) use stile_tls::ring_provider;

/// IANA names (`TLS_AES_128_GCM_SHA256`, `TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`) and
/// rustls's own (`TLS13_AES_128_GCM_SHA256`), any case.
fn suite_matches(suite: &SupportedCipherSuite, name: &str) -> bool {
    let own = suite.suite().as_str().unwrap_or_default();
    own.eq_ignore_ascii_case(name) || iana(own).eq_ignore_ascii_case(name)
}

fn iana(own: &str) -> String {
    match own.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{rest}"),
        None => own.to_owned(),
    }
}

fn suite_names(provider: &CryptoProvider) -> Vec<String> {
    provider.cipher_suites.iter().map(|s| iana(s.suite().as_str().unwrap_or_default())).collect()
}

fn server_config(
    config: &TlsConfig,
    provider: Arc<CryptoProvider>,
    resolver: Arc<CertResolver>,
) -> Result<Arc<ServerConfig>, ConfigError> {
    let versions: &[&rustls::SupportedProtocolVersion] = match config.min_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let invalid = |field, e: rustls::Error| ConfigError::Invalid { field, message: e.to_string() };
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| invalid("tls", e))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    server.alpn_protocols =
        if config.http2 { vec![b"h2".to_vec(), b"http/1.1".to_vec()] } else { vec![b"http/1.1".to_vec()] };
    if config.session_tickets {
        server.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| invalid("tls.session_tickets", e))?;
    }
    server.session_storage = match config.session_cache_size {
        0 => Arc::new(rustls::server::NoServerSessionStorage {}),
        n => rustls::server::ServerSessionMemoryCache::new(n),
    };
    if !config.session_tickets && config.session_cache_size == 0 {
        // Nothing could resume from a TLS 1.3 ticket: send none.
        server.send_tls13_tickets = 0;
    }
    // No 0-RTT: early data can be replayed, and every request here is authorised by its token.
    server.max_early_data_size = 0;
    Ok(Arc::new(server))
}

/// The certificate resolver rustls asks on every handshake: the current [`SniTable`].
#[derive(Debug)]
pub(crate) struct CertResolver {
    table: ArcSwap<SniTable>,
}

impl CertResolver {
    /// Whether a request host (no port) is one the current certificates cover.
    pub(crate) fn covers_host(&self, host: &str) -> bool {
        self.table.load().covers_host(host)
    }

    fn swap(&self, certs: Vec<LoadedCert>, strict: bool) {
        self.table.store(Arc::new(SniTable::new(certs, strict)));
    }

    #[cfg(test)]
    fn resolve_name(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        self.table.load().resolve(sni, &[rustls::SignatureScheme::ECDSA_NISTP256_SHA256])
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.table.load().resolve(hello.server_name(), hello.signature_schemes())
    }
}

/// The `tls` access-log field: the negotiated version as `1.2` or `1.3`.
pub(crate) fn version_label(digest_version: &str) -> &'static str {
    match digest_version {
        "TLSv1_3" | "TLSv1.3" => "1.3",
        "TLSv1_2" | "TLSv1.2" => "1.2",
        _ => "other",
    }
}

#[cfg(test)]
mod tests;
