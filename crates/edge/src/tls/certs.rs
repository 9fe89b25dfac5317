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
use std::path::PathBuf;
use std::sync::Arc;

use rustls::SignatureScheme;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
pub use stile_tls::CertError;
use stile_tls::{covers, normalize};

use crate::config::CertificateConfig;

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

/// Reads and checks one configured pair at time `now` (Unix seconds): the pair
/// itself in `stile_tls` (shared with the control plane), the names here.
pub(crate) fn load(config: &CertificateConfig, provider: &CryptoProvider, now: u64) -> Result<LoadedCert, CertError> {
    let (cert_path, key_path) = (&config.cert, &config.key);
    let pair = stile_tls::load_pair(cert_path, key_path, provider, now)?;
    let names = if config.names.is_empty() {
        pair.names.clone()
    } else {
        let mut names = Vec::with_capacity(config.names.len());
        for name in &config.names {
            let n = normalize(name);
            if !pair.names.iter().any(|san| covers(san, &n)) {
                return Err(CertError::WrongHost {
                    path: cert_path.clone(),
                    name: name.clone(),
                    covers: pair.describe(),
                });
            }
            names.push(n);
        }
        names
    };
    let ips = pair.ips;
    if names.is_empty() && ips.is_empty() {
        return Err(CertError::NoNames { path: cert_path.clone() });
    }
    let label = names.first().cloned().or_else(|| ips.first().map(IpAddr::to_string)).unwrap_or_default();
    Ok(LoadedCert {
        key: pair.key,
        names,
        ips,
        not_after: pair.not_after,
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
