//! gRPC over TLS (`[tls]`, docs/control-plane.md "TLS"): the server certificate
//! and key, checked by `stile_tls` at start-up and on every reload (the edge's
//! viewer TLS uses the same checks), an optional client CA for edges' client
//! certificates, and the start-up warning about a plaintext listener on a
//! non-loopback address.
//!
//! The handshake is ours, not tonic's: `accept.rs` accepts TCP connections and
//! runs each handshake in its own task (rustls, ring provider, TLS 1.2 and 1.3,
//! ALPN `h2`, bounded by `tls.handshake_timeout_ms`), counts it by version or
//! by cause of failure (`stile_tls::Failure`, the edge's vocabulary), and hands
//! the TLS stream to tonic. tonic's `Connected` for tokio-rustls streams gives
//! the services the peer's address and certificates as before. [`ServerTls`]
//! holds the rustls `ServerConfig` behind an `ArcSwap`: `reload.rs` builds a new
//! one on SIGHUP or when a file changes and swaps it in only when it passes the
//! start-up checks, so new handshakes get the new certificate (and client CA)
//! while established connections, the edges' sync streams among them, keep the
//! session they negotiated.
//!
//! With a client CA the handshake asks for a client certificate and verifies
//! any that is presented, but lets a client without one through: the CLI and
//! backends need none; only the sync stream may require one
//! (`tls.require_client_cert`, checked in `service/edges.rs`).

pub(crate) mod accept;
pub(crate) mod reload;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::SingleCertAndKey;
use serde::Deserialize;
use stile_tls::CertError;

/// Where the TLS listener reports what happens to it: the control plane's
/// metrics (`crate::metrics::Metrics` implements it), kept behind this trait so
/// that this module does not depend on the metrics module, which reads the
/// configuration that holds [`TlsConfig`].
pub(crate) trait TlsObserver: Send + Sync {
    /// The notAfter (Unix seconds) of the certificate in force.
    fn tls_certificate_expiry(&self, not_after: i64);
    /// One completed handshake (`version`: `1.2`, `1.3`).
    fn tls_handshake(&self, version: &'static str);
    /// One failed handshake.
    fn tls_handshake_failure(&self, cause: stile_tls::Failure);
    /// One certificate reload, taken (`ok`) or refused.
    fn tls_reload(&self, ok: bool);
}

/// The `[tls]` table: gRPC over TLS. Empty `cert_file`: plaintext gRPC.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain of the gRPC listener, leaf first. Empty: plaintext.
    /// `${CREDENTIALS_DIRECTORY}/NAME` reads systemd's `LoadCredential=`. Default empty.
    pub cert_file: PathBuf,
    /// PEM private key of `cert_file` (PKCS#8, PKCS#1 or SEC1). Default empty.
    pub key_file: PathBuf,
    /// PEM CA bundle that edges' client certificates must chain to. Set, the
    /// handshake asks for a client certificate and refuses one that does not
    /// verify; a client without one still connects (operators, backends).
    /// Default empty: no client certificates.
    pub client_ca_file: PathBuf,
    /// The sync stream (`EdgeService.Sync`) refuses an edge without a verified
    /// client certificate (`UNAUTHENTICATED`, audited `SYNC_REFUSED`), on top of
    /// its edge-role API key. Needs `client_ca_file`. Default false.
    pub require_client_cert: bool,
    /// Longest a TLS handshake may take, milliseconds. Default 10000.
    pub handshake_timeout_ms: u64,
    /// How often the certificate, key and client CA files are checked for changes
    /// (then reloaded, as on SIGHUP), milliseconds. 0: only on SIGHUP. Default 5000.
    pub reload_poll_ms: u64,
    /// Silences the start-up warning `control.plaintext_listener` about plaintext
    /// gRPC on a non-loopback address (API keys and signing keys cross it in
    /// clear): for a network that encrypts itself, e.g. a service mesh. Default false.
    pub allow_plaintext: bool,
}

impl Default for TlsConfig {
    fn default() -> TlsConfig {
        TlsConfig {
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            client_ca_file: PathBuf::new(),
            require_client_cert: false,
            handshake_timeout_ms: 10_000,
            reload_poll_ms: 5_000,
            allow_plaintext: false,
        }
    }
}

/// Why `[tls]` cannot be used; `stile control` exits 64 before binding.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate, key or CA file is unreadable, mismatched, expired or not yet valid.
    #[error("tls.{field}: {source}")]
    Certificate {
        /// The field naming the file.
        field: &'static str,
        /// What is wrong.
        source: CertError,
    },
    /// rustls refuses the client CA bundle (no usable trust anchor in it).
    #[error("tls.client_ca_file: {0}")]
    ClientCa(String),
    /// rustls refuses the protocol versions (not with the ring provider).
    #[error("tls: {0}")]
    Rustls(String),
}

impl TlsConfig {
    /// Whether gRPC is served over TLS.
    pub fn enabled(&self) -> bool {
        !self.cert_file.as_os_str().is_empty()
    }

    /// Checks the table's consistency; the first problem as a message.
    pub fn check(&self) -> Result<(), String> {
        let set = |p: &PathBuf| !p.as_os_str().is_empty();
        if set(&self.cert_file) != set(&self.key_file) {
            return Err("tls.cert_file and tls.key_file go together".into());
        }
        if set(&self.client_ca_file) && !self.enabled() {
            return Err("tls.client_ca_file needs tls.cert_file and tls.key_file".into());
        }
        if self.require_client_cert && !set(&self.client_ca_file) {
            return Err("tls.require_client_cert needs tls.client_ca_file".into());
        }
        if self.handshake_timeout_ms == 0 {
            return Err("tls.handshake_timeout_ms must be positive".into());
        }
        Ok(())
    }
}

/// A checked `[tls]` in force: the rustls server configuration new handshakes
/// use, swapped whole by each successful reload (`reload.rs`).
#[derive(Debug)]
pub struct ServerTls {
    settings: TlsConfig,
    current: ArcSwap<ServerConfig>,
    not_after: AtomicI64,
    /// The sync stream requires a client certificate.
    pub require_client_cert: bool,
}

/// A server configuration built from the files, and the notAfter of its certificate.
struct Loaded {
    server: Arc<ServerConfig>,
    not_after: i64,
    names: String,
}

impl ServerTls {
    /// Reads and checks the files at time `now` (Unix seconds): the pair as the
    /// edge checks its own (readable, matching, valid now), the client CA as a
    /// CA bundle. `None` when TLS is off.
    pub fn load(config: &TlsConfig, now: u64) -> Result<Option<ServerTls>, TlsError> {
        if !config.enabled() {
            return Ok(None);
        }
        let loaded = build(config, now)?;
        tracing::info!(
            tls.cert = %config.cert_file.display(), tls.names = %loaded.names, tls.not_after = loaded.not_after,
            tls.client_ca = %config.client_ca_file.display(), tls.require_client_cert = config.require_client_cert,
            "control.tls"
        );
        Ok(Some(ServerTls {
            settings: config.clone(),
            current: ArcSwap::new(loaded.server),
            not_after: AtomicI64::new(loaded.not_after),
            require_client_cert: config.require_client_cert,
        }))
    }

    /// notAfter of the certificate in force, Unix seconds.
    pub fn not_after(&self) -> i64 {
        self.not_after.load(Ordering::Relaxed)
    }

    /// Loads and checks the files again at time `now` (Unix seconds), as at
    /// start-up; swaps the new configuration in if they pass, else keeps the one
    /// in force. Returns the new certificate's notAfter, or why it was refused.
    pub(crate) fn reload(&self, now: u64) -> Result<(i64, String), TlsError> {
        let loaded = build(&self.settings, now)?;
        self.current.store(loaded.server);
        self.not_after.store(loaded.not_after, Ordering::Relaxed);
        Ok((loaded.not_after, loaded.names))
    }

    /// The server configuration for a new handshake.
    pub(crate) fn server_config(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// Longest a handshake may take.
    pub(crate) fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.settings.handshake_timeout_ms)
    }

    /// The files a reload reads (certificate, key, and the client CA if set), and
    /// how often they are checked for changes (0: SIGHUP only).
    pub(crate) fn watched(&self) -> (Vec<PathBuf>, u64) {
        let s = &self.settings;
        let mut files = vec![s.cert_file.clone(), s.key_file.clone()];
        if !s.client_ca_file.as_os_str().is_empty() {
            files.push(s.client_ca_file.clone());
        }
        (files, s.reload_poll_ms)
    }
}

/// Reads and checks the files of `config` at time `now` and builds rustls's server
/// configuration: TLS 1.3 and 1.2 on the ring provider, ALPN `h2`, and with a client
/// CA a verifier that checks a presented client certificate but admits a client
/// without one.
fn build(config: &TlsConfig, now: u64) -> Result<Loaded, TlsError> {
    let cert_err = |field| move |source| TlsError::Certificate { field, source };
    let cert_pem = stile_tls::read(&config.cert_file).map_err(cert_err("cert_file"))?;
    let key_pem = stile_tls::read(&config.key_file).map_err(cert_err("key_file"))?;
    let provider = Arc::new(stile_tls::ring_provider());
    let pair = stile_tls::check_pair(&config.cert_file, &cert_pem, &config.key_file, &key_pem, &provider, now)
        .map_err(|source| {
            let field = if matches!(source, CertError::Key { .. }) { "key_file" } else { "cert_file" };
            TlsError::Certificate { field, source }
        })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = if config.client_ca_file.as_os_str().is_empty() {
        builder.with_no_client_auth()
    } else {
        let ca = stile_tls::read_ca(&config.client_ca_file).map_err(cert_err("client_ca_file"))?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(ca.certs);
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::ClientCa(e.to_string()))?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut server = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(pair.key.clone())));
    server.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Loaded { server: Arc::new(server), not_after: pair.not_after, names: pair.describe() })
}

/// Warns (`control.plaintext_listener`) when gRPC is plaintext on a non-loopback
/// address, unless `tls.allow_plaintext`. Returns whether it warned.
pub(crate) fn warn_if_plaintext(config: &TlsConfig, listen: SocketAddr) -> bool {
    if config.enabled() || config.allow_plaintext || listen.ip().is_loopback() {
        return false;
    }
    tracing::warn!(
        listener = %listen,
        fix = "set [tls] cert_file and key_file (docs/control-plane.md, \"TLS\"), or bind a loopback address; \
               tls.allow_plaintext = true silences this on a network that encrypts itself",
        "control.plaintext_listener: gRPC is PLAINTEXT on a non-loopback address: API keys and signing keys \
         (the edge sync stream) cross the network in clear"
    );
    true
}

/// The identity of a verified client certificate (the leaf), for fleet state and audit.
pub(crate) fn client_identity<T>(request: &tonic::Request<T>) -> Option<String> {
    let certs = request.peer_certs()?;
    stile_tls::peer_identity(certs.first()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn the_table_is_checked_as_a_whole() {
        let ok = Config::from_toml(
            "[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\nclient_ca_file = \"ca.pem\"\nrequire_client_cert = true\n",
        );
        assert!(ok.is_ok_and(|c| c.tls.enabled() && c.tls.require_client_cert && c.tls.handshake_timeout_ms == 10_000));
        for (toml, needle) in [
            ("cert_file = \"c.pem\"", "tls.cert_file and tls.key_file go together"),
            ("key_file = \"k.pem\"", "tls.cert_file and tls.key_file go together"),
            ("client_ca_file = \"ca.pem\"", "tls.client_ca_file needs tls.cert_file"),
            ("cert_file = \"c\"\nkey_file = \"k\"\nrequire_client_cert = true", "needs tls.client_ca_file"),
            ("cert_file = \"c\"\nkey_file = \"k\"\nhandshake_timeout_ms = 0", "handshake_timeout_ms must be positive"),
        ] {
            let err = Config::from_toml(&format!("[tls]\n{toml}\n")).unwrap_err().to_string();
            assert!(err.contains(needle), "{toml}: {err}");
        }
    }

    #[test]
    fn plaintext_warns_only_off_loopback_without_the_opt_out() {
        let plain = TlsConfig::default();
        let public: SocketAddr = "0.0.0.0:7400".parse().unwrap();
        assert!(warn_if_plaintext(&plain, public));
        assert!(warn_if_plaintext(&plain, "10.1.2.3:7400".parse().unwrap()));
        assert!(!warn_if_plaintext(&plain, "127.0.0.1:7400".parse().unwrap()));
        assert!(!warn_if_plaintext(&plain, "[::1]:7400".parse().unwrap()));
        assert!(!warn_if_plaintext(&TlsConfig { allow_plaintext: true, ..TlsConfig::default() }, public));
        let tls = TlsConfig { cert_file: "c".into(), key_file: "k".into(), ..TlsConfig::default() };
        assert!(!warn_if_plaintext(&tls, public));
    }
}
