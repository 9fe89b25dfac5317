//! Certificates: reading and checking the configured certificate/key pairs, and
//! the SNI table that picks one per handshake.
//!
//! Every check runs at startup (a bad pair stops the edge with exit 64 before
//! any port is bound) and again on each reload (a bad pair keeps the old table):
//! the files are readable PEM, the key is one the TLS library can sign with and
//! matches the leaf certificate, the leaf is valid now (by the edge's clock),
//! and every configured name is covered by the leaf's subjectAltName.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, SignatureScheme};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::config::CertificateConfig;

/// Why a certificate/key pair was refused.
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
        /// The edge's time.
        now: u64,
    },
    /// The leaf certificate is not valid yet.
    #[error("{path}: the certificate is not valid before {not_before} (Unix time; now {now})")]
    NotYetValid {
        /// The file.
        path: PathBuf,
        /// Its notBefore, Unix seconds.
        not_before: i64,
        /// The edge's time.
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
    /// A path names systemd's credentials directory, but the edge was not started with any.
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

/// One loaded certificate/key pair.
#[derive(Debug)]
pub(crate) struct LoadedCert {
    /// The chain and signing key rustls answers with.
    pub(crate) key: Arc<CertifiedKey>,
    /// Host names it serves, lowercase (`*.example.com` for wildcards).
    pub(crate) names: Vec<String>,
    /// IP addresses in its subjectAltName (clients connecting by address send no SNI).
    pub(crate) ips: Vec<IpAddr>,
    /// notAfter of the leaf, Unix seconds.
    pub(crate) not_after: i64,
    /// Its first name: the `certificate` label of the expiry gauge.
    pub(crate) label: String,
    /// The files it came from.
    pub(crate) files: (PathBuf, PathBuf),
}

/// Reads and checks one configured pair at time `now` (Unix seconds).
pub(crate) fn load(config: &CertificateConfig, provider: &CryptoProvider, now: u64) -> Result<LoadedCert, CertError> {
    let (cert_path, key_path) = (&config.cert, &config.key);
    let cert_pem = read(cert_path)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::Certificate { path: cert_path.clone(), message: e.to_string() })?;
    let Some(leaf) = chain.first() else {
        return Err(CertError::Certificate { path: cert_path.clone(), message: "the file holds none".into() });
    };
    let (_, x509) = X509Certificate::from_der(leaf)
        .map_err(|e| CertError::Certificate { path: cert_path.clone(), message: e.to_string() })?;
    let validity = x509.validity();
    let (not_before, not_after) = (validity.not_before.timestamp(), validity.not_after.timestamp());
    let now_i = i64::try_from(now).unwrap_or(i64::MAX);
    if now_i >= not_after {
        return Err(CertError::Expired { path: cert_path.clone(), not_after, now });
    }
    if now_i < not_before {
        return Err(CertError::NotYetValid { path: cert_path.clone(), not_before, now });
    }
    let (sans, ips) = subject_alt_names(&x509);

    let key_pem = read(key_path)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| CertError::Key { path: key_path.clone(), message: e.to_string() })?;
    let signer = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| CertError::Key { path: key_path.clone(), message: e.to_string() })?;
    let certified = CertifiedKey::new(chain, signer);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            return Err(CertError::Mismatch { cert: cert_path.clone(), key: key_path.clone() });
        }
        Err(e) => return Err(CertError::Key { path: key_path.clone(), message: e.to_string() }),
    }

    let names = if config.names.is_empty() {
        sans.clone()
    } else {
        let mut names = Vec::with_capacity(config.names.len());
        for name in &config.names {
            let n = normalize(name);
            if !sans.iter().any(|san| covers(san, &n)) {
                return Err(CertError::WrongHost {
                    path: cert_path.clone(),
                    name: name.clone(),
                    covers: describe(&sans, &ips),
                });
            }
            names.push(n);
        }
        names
    };
    if names.is_empty() && ips.is_empty() {
        return Err(CertError::NoNames { path: cert_path.clone() });
    }
    let label = names.first().cloned().or_else(|| ips.first().map(IpAddr::to_string)).unwrap_or_default();
    Ok(LoadedCert {
        key: Arc::new(certified),
        names,
        ips,
        not_after,
        label,
        files: (cert_path.clone(), key_path.clone()),
    })
}

/// The certificates of one generation, indexed for SNI lookups.
#[derive(Debug)]
pub(crate) struct SniTable {
    certs: Vec<LoadedCert>,
    /// Exact names → indices into `certs`, in configuration order.
    exact: HashMap<String, Vec<usize>>,
    /// `*.example.com` stored as `example.com` → indices.
    wildcard: HashMap<String, Vec<usize>>,
    strict: bool,
}

impl SniTable {
    /// Indexes `certs` (at least one; the first is the default).
    pub(crate) fn new(certs: Vec<LoadedCert>, strict: bool) -> SniTable {
        let mut exact: HashMap<String, Vec<usize>> = HashMap::new();
        let mut wildcard: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, c) in certs.iter().enumerate() {
            for n in &c.names {
                match n.strip_prefix("*.") {
                    Some(rest) => wildcard.entry(rest.to_owned()).or_default().push(i),
                    None => exact.entry(n.clone()).or_default().push(i),
                }
            }
        }
        SniTable { certs, exact, wildcard, strict }
    }

    /// The certificate for a handshake: by SNI (exact name, then wildcard), among those
    /// the client can verify a signature of (so an RSA and an ECDSA certificate can serve
    /// one name side by side); no SNI gets the default certificate, an unknown SNI too
    /// unless `strict` (then the handshake is refused).
    pub(crate) fn resolve(&self, sni: Option<&str>, schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        let candidates = match sni {
            None => None,
            Some(name) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                self.exact.get(&name).or_else(|| {
                    let parent = &name[name.find('.')? + 1..];
                    self.wildcard.get(parent)
                })
            }
        };
        let pick = |indices: &mut dyn Iterator<Item = usize>| {
            let indices: Vec<usize> = indices.collect();
            indices
                .iter()
                .copied()
                .find(|&i| self.certs[i].key.key.choose_scheme(schemes).is_some())
                .or_else(|| indices.first().copied())
                .map(|i| self.certs[i].key.clone())
        };
        match candidates {
            Some(indices) => pick(&mut indices.iter().copied()),
            None if sni.is_some() && self.strict => None,
            None => pick(&mut (0..self.certs.len())),
        }
    }

    /// Whether a request's host (no port) is one this edge has a certificate for.
    pub(crate) fn covers_host(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            return self.certs.iter().any(|c| c.ips.contains(&ip));
        }
        self.certs.iter().any(|c| c.names.iter().any(|n| covers(n, &host)))
    }
}

/// The prefix of paths inside systemd's credentials directory (`LoadCredential=`).
const CREDENTIALS: &str = "${CREDENTIALS_DIRECTORY}/";

/// A configured path as a file path: `${CREDENTIALS_DIRECTORY}/NAME` is `NAME` in the
/// directory systemd passes in `$CREDENTIALS_DIRECTORY`; other paths are as they are.
pub(crate) fn resolve_path(path: &Path) -> Result<PathBuf, CertError> {
    let Some(name) = path.to_str().and_then(|p| p.strip_prefix(CREDENTIALS)) else { return Ok(path.to_owned()) };
    let dir =
        std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| CertError::NoCredentials { path: path.to_owned() })?;
    Ok(Path::new(&dir).join(name))
}

fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    let file = resolve_path(path)?;
    std::fs::read(&file).map_err(|source| CertError::Read { path: file, source })
}

fn subject_alt_names(x509: &X509Certificate<'_>) -> (Vec<String>, Vec<IpAddr>) {
    let (mut names, mut ips) = (Vec::new(), Vec::new());
    if let Ok(Some(san)) = x509.subject_alternative_name() {
        for g in &san.value.general_names {
            match g {
                GeneralName::DNSName(n) => names.push(normalize(n)),
                GeneralName::IPAddress(b) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*b) {
                        ips.push(IpAddr::from(v4));
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*b) {
                        ips.push(IpAddr::from(v6));
                    }
                }
                _ => {}
            }
        }
    }
    (names, ips)
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether certificate name `san` covers `name` (both normalised): equal, or `san` is
/// `*.parent` and `name` is one label under `parent`. A wildcard `name` is covered only
/// by the same wildcard.
fn covers(san: &str, name: &str) -> bool {
    if san == name {
        return true;
    }
    match (san.strip_prefix("*."), name.split_once('.')) {
        (Some(parent), Some((label, rest))) => !label.is_empty() && label != "*" && rest == parent,
        _ => false,
    }
}

fn describe(names: &[String], ips: &[IpAddr]) -> String {
    let all: Vec<String> = names.iter().cloned().chain(ips.iter().map(IpAddr::to_string)).collect();
    if all.is_empty() { "no names".into() } else { all.join(", ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label() {
        for (san, name, want) in [
            ("a.example", "a.example", true),
            ("*.example", "a.example", true),
            ("*.example", "a.b.example", false),
            ("*.example", "example", false),
            ("*.example", "*.example", true),
            ("a.example", "b.example", false),
            ("*.b.example", "a.b.example", true),
        ] {
            assert_eq!(covers(san, name), want, "{san} covers {name}");
        }
    }
}
