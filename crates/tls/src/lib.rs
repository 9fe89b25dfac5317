//! Certificate checks shared by the edge's viewer TLS (`crates/edge/src/tls`) and
//! the control plane's gRPC TLS and its clients (`stile control`, the edge's sync
//! client, the CLI).
//!
//! [`check_pair`] is the one check of a certificate/key pair: the files are
//! readable PEM, the key is one rustls can sign with and matches the leaf
//! certificate, and the leaf is valid at the caller's time. [`read_ca`] reads a
//! CA bundle; [`peer_identity`] names a peer's certificate (subject CN and
//! subjectAltName) for logs, fleet state and audit events. Paths may name a file
//! in systemd's credentials directory as `${CREDENTIALS_DIRECTORY}/NAME`
//! ([`resolve_path`]).
//!
//! Both servers (the edge's viewer TLS and the control plane's gRPC TLS) also
//! share [`Failure`], the causes of a failed handshake and how they are found
//! from the error, and [`ReloadTriggers`], when to reload certificates without
//! a restart (SIGHUP, a changed file).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::InconsistentKeys;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

mod handshake;
mod reload;

pub use handshake::{Failure, version_label};
pub use reload::{FILE_CHANGED, ReloadTriggers, SIGHUP};

/// Why a certificate, key or CA file was refused.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The certificate file holds no PEM certificate, or a broken one.
    #[error("{path}: no valid PEM certificate ({message})")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The key file holds no usable private key.
    #[error("{path}: no usable private key ({message})")]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The key is not the certificate's.
    #[error("the private key in {key} does not match the certificate in {cert}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The leaf certificate has expired.
    #[error("{path}: the certificate expired at {not_after} (Unix time; now {now})")]
    Expired {
        /// The file.
        path: PathBuf,
        /// Its notAfter, Unix seconds.
        not_after: i64,
        /// The caller's time.
        now: u64,
    },
    /// The leaf certificate is not valid yet.
    #[error("{path}: the certificate is not valid before {not_before} (Unix time; now {now})")]
    NotYetValid {
        /// The file.
        path: PathBuf,
        /// Its notBefore, Unix seconds.
        not_before: i64,
        /// The caller's time.
        now: u64,
    },
    /// A configured name is not covered by the certificate.
    #[error("{path}: the certificate does not cover {name:?} (it covers {covers})")]
    WrongHost {
        /// The file.
        path: PathBuf,
        /// The configured name.
        name: String,
        /// The certificate's names.
        covers: String,
    },
    /// A path names systemd's credentials directory, but the process was not started with any.
    #[error("{path}: $CREDENTIALS_DIRECTORY is not set (LoadCredential= in the unit provides it)")]
    NoCredentials {
        /// The configured path.
        path: PathBuf,
    },
    /// The certificate names no host and no `names` were configured.
    #[error("{path}: the certificate has no DNS name or IP address in its subjectAltName")]
    NoNames {
        /// The file.
        path: PathBuf,
    },
}

/// A checked certificate/key pair.
#[derive(Debug)]
pub struct CheckedPair {
    /// The chain and signing key.
    pub key: Arc<CertifiedKey>,
    /// DNS names in the leaf's subjectAltName, lowercase, without a trailing dot.
    pub names: Vec<String>,
    /// IP addresses in the leaf's subjectAltName.
    pub ips: Vec<IpAddr>,
    /// notAfter of the leaf, Unix seconds.
    pub not_after: i64,
}

/// Reads the files of a pair and checks it at time `now` (Unix seconds).
pub fn load_pair(cert: &Path, key: &Path, provider: &CryptoProvider, now: u64) -> Result<CheckedPair, CertError> {
    check_pair(cert, &read(cert)?, key, &read(key)?, provider, now)
}

/// Checks a pair already read (`cert_pem` from `cert`, `key_pem` from `key`; the
/// paths name the files in errors) at time `now` (Unix seconds).
pub fn check_pair(
    cert: &Path,
    cert_pem: &[u8],
    key: &Path,
    key_pem: &[u8],
    provider: &CryptoProvider,
    now: u64,
) -> Result<CheckedPair, CertError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::Certificate { path: cert.to_owned(), message: e.to_string() })?;
    let Some(leaf) = chain.first() else {
        return Err(CertError::Certificate { path: cert.to_owned(), message: "the file holds none".into() });
    };
    let (_, x509) = X509Certificate::from_der(leaf)
        .map_err(|e| CertError::Certificate { path: cert.to_owned(), message: e.to_string() })?;
    let validity = x509.validity();
    let (not_before, not_after) = (validity.not_before.timestamp(), validity.not_after.timestamp());
    let now_i = i64::try_from(now).unwrap_or(i64::MAX);
    if now_i >= not_after {
        return Err(CertError::Expired { path: cert.to_owned(), not_after, now });
    }
    if now_i < not_before {
        return Err(CertError::NotYetValid { path: cert.to_owned(), not_before, now });
    }
    let (names, ips) = subject_alt_names(&x509);

    let private = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| CertError::Key { path: key.to_owned(), message: e.to_string() })?;
    let signer = provider
        .key_provider
        .load_private_key(private)
        .map_err(|e| CertError::Key { path: key.to_owned(), message: e.to_string() })?;
    let certified = CertifiedKey::new(chain, signer);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            return Err(CertError::Mismatch { cert: cert.to_owned(), key: key.to_owned() });
        }
        Err(e) => return Err(CertError::Key { path: key.to_owned(), message: e.to_string() }),
    }
    Ok(CheckedPair { key: Arc::new(certified), names, ips, not_after })
}

impl CheckedPair {
    /// Fails with [`CertError::WrongHost`] unless the leaf covers `name` (a DNS
    /// name, wildcards by one label, or an IP address).
    pub fn require_name(&self, cert: &Path, name: &str) -> Result<(), CertError> {
        let ok = match name.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            Ok(ip) => self.ips.contains(&ip),
            Err(_) => {
                let n = normalize(name);
                self.names.iter().any(|san| covers(san, &n))
            }
        };
        if ok {
            Ok(())
        } else {
            Err(CertError::WrongHost { path: cert.to_owned(), name: name.to_owned(), covers: self.describe() })
        }
    }

    /// The names and addresses the leaf covers, for messages.
    pub fn describe(&self) -> String {
        let all: Vec<String> = self.names.iter().cloned().chain(self.ips.iter().map(IpAddr::to_string)).collect();
        if all.is_empty() { "no names".into() } else { all.join(", ") }
    }
}

/// A CA bundle as read from its file.
#[derive(Clone, Debug)]
pub struct CaBundle {
    /// The file's text (what tonic's `Certificate::from_pem` takes).
    pub pem: Vec<u8>,
    /// Its certificates, each a parsable X.509 certificate.
    pub certs: Vec<CertificateDer<'static>>,
}

/// Reads a CA bundle: every PEM certificate in the file, at least one, each a
/// parsable X.509 certificate.
pub fn read_ca(path: &Path) -> Result<CaBundle, CertError> {
    let pem = read(path)?;
    let file = resolve_path(path)?;
    let mut certs = Vec::new();
    for der in CertificateDer::pem_slice_iter(&pem) {
        let der = der.map_err(|e| CertError::Certificate { path: file.clone(), message: e.to_string() })?;
        X509Certificate::from_der(&der).map_err(|e| CertError::Certificate {
            path: file.clone(),
            message: format!("not an X.509 certificate: {e}"),
        })?;
        certs.push(der);
    }
    if certs.is_empty() {
        return Err(CertError::Certificate { path: file, message: "the file holds none".into() });
    }
    Ok(CaBundle { pem, certs })
}

/// A peer certificate's identity: `CN=<subject common name>` and `SAN=<names>`
/// (DNS names, IP addresses, URIs), joined by a space; what is absent is left
/// out; `None` if the certificate does not parse. At most 256 characters.
pub fn peer_identity(der: &[u8]) -> Option<String> {
    let (_, x509) = X509Certificate::from_der(der).ok()?;
    let mut parts = Vec::new();
    if let Some(cn) = x509.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()) {
        parts.push(format!("CN={cn}"));
    }
    let mut sans = Vec::new();
    if let Ok(Some(san)) = x509.subject_alternative_name() {
        for g in &san.value.general_names {
            match g {
                GeneralName::DNSName(n) => sans.push((*n).to_owned()),
                GeneralName::URI(u) => sans.push((*u).to_owned()),
                GeneralName::IPAddress(b) => {
                    if let Some(ip) = ip_of(b) {
                        sans.push(ip.to_string());
                    }
                }
                _ => {}
            }
        }
    }
    if !sans.is_empty() {
        parts.push(format!("SAN={}", sans.join(",")));
    }
    let mut id: String = parts.join(" ").chars().filter(|c| !c.is_control()).collect();
    if id.chars().count() > 256 {
        id = id.chars().take(256).collect();
    }
    Some(id)
}

/// `e` and its sources, joined with `: `: tonic's transport error says only
/// "transport error", the TLS cause (an unknown issuer, a name the certificate
/// does not cover, an expired certificate) is in its sources.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// rustls's ring provider, the one every TLS endpoint of Stile uses: Pingora
/// 0.9's rustls backend is tied to ring (the edge), and tonic's `tls-ring` (the
/// control plane and its clients) follows. rustls deprecates it only for lacking
/// post-quantum key exchange, which only its aws-lc-rs provider has.
#[allow(deprecated)] // reason: see above; X25519, P-256 and P-384 key exchange.
pub fn ring_provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The prefix of paths inside systemd's credentials directory (`LoadCredential=`).
const CREDENTIALS: &str = "${CREDENTIALS_DIRECTORY}/";

/// A configured path as a file path: `${CREDENTIALS_DIRECTORY}/NAME` is `NAME` in the
/// directory systemd passes in `$CREDENTIALS_DIRECTORY`; other paths are as they are.
pub fn resolve_path(path: &Path) -> Result<PathBuf, CertError> {
    let Some(name) = path.to_str().and_then(|p| p.strip_prefix(CREDENTIALS)) else { return Ok(path.to_owned()) };
    let dir =
        std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| CertError::NoCredentials { path: path.to_owned() })?;
    Ok(Path::new(&dir).join(name))
}

/// Reads a configured file ([`resolve_path`] first).
pub fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    let file = resolve_path(path)?;
    std::fs::read(&file).map_err(|source| CertError::Read { path: file, source })
}

fn ip_of(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        Some(IpAddr::from(v4))
    } else if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
        Some(IpAddr::from(v6))
    } else {
        None
    }
}

fn subject_alt_names(x509: &X509Certificate<'_>) -> (Vec<String>, Vec<IpAddr>) {
    let (mut names, mut ips) = (Vec::new(), Vec::new());
    if let Ok(Some(san)) = x509.subject_alternative_name() {
        for g in &san.value.general_names {
            match g {
                GeneralName::DNSName(n) => names.push(normalize(n)),
                GeneralName::IPAddress(b) => ips.extend(ip_of(b)),
                _ => {}
            }
        }
    }
    (names, ips)
}

/// A host name as certificates are compared: lowercase, no trailing dot.
pub fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether certificate name `san` covers `name` (both [`normalize`]d): equal, or
/// `san` is `*.parent` and `name` is one label under `parent`. A wildcard `name`
/// is covered only by the same wildcard.
pub fn covers(san: &str, name: &str) -> bool {
    if san == name {
        return true;
    }
    match (san.strip_prefix("*."), name.split_once('.')) {
        (Some(parent), Some((label, rest))) => !label.is_empty() && label != "*" && rest == parent,
        _ => false,
    }
}

#[cfg(test)]
mod tests;
