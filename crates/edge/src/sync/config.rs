//! `[sync]`: where the edge gets its state from when it follows a control plane.

use std::path::PathBuf;

use serde::Deserialize;

/// The `[sync]` table. When present the edge follows the control plane's
/// change log over `EdgeService.Sync` instead of reading a static state file;
/// `state.file`, if set, becomes the local cache of the applied state.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncConfig {
    /// Control-plane URLs (`http://host:port` or `https://…`). The edge uses
    /// one at a time and moves to the next on any failure (round robin).
    /// `https://` needs `ca_file`.
    pub endpoints: Vec<String>,
    /// PEM CA bundle the control plane's certificate must chain to (for
    /// `https://` endpoints; the name checked is the endpoint's host).
    /// `${CREDENTIALS_DIRECTORY}/NAME` reads systemd's `LoadCredential=`.
    pub ca_file: PathBuf,
    /// PEM client certificate chain this edge presents over TLS (mutual TLS,
    /// for a control plane with `tls.client_ca_file`); with `client_key_file`.
    pub client_cert_file: PathBuf,
    /// PEM private key of `client_cert_file`.
    pub client_key_file: PathBuf,
    /// API key with role `edge`. Prefer `api_key_file`.
    pub api_key: String,
    /// File holding the API key (surrounding whitespace ignored); exclusive with `api_key`.
    pub api_key_file: PathBuf,
    /// This edge's id, 1..64 characters of `[a-z0-9._-]`. Empty: the host name
    /// (lower-cased, other characters replaced by `-`).
    pub edge_id: String,
    /// Time allowed to open a connection to a control plane, milliseconds.
    pub connect_timeout_ms: u64,
    /// With no message (heartbeats come every second by default) for this
    /// long the stream counts as dead and the edge reconnects, milliseconds.
    pub heartbeat_timeout_ms: u64,
    /// First reconnect delay, milliseconds; doubles per failed attempt, with
    /// jitter (each delay is drawn from [d/2, d]).
    pub backoff_initial_ms: u64,
    /// Longest reconnect delay, milliseconds.
    pub backoff_max_ms: u64,
    /// Least time between two writes of the cache file (`state.file`), milliseconds.
    pub cache_interval_ms: u64,
}

impl Default for SyncConfig {
    fn default() -> SyncConfig {
        SyncConfig {
            endpoints: Vec::new(),
            ca_file: PathBuf::new(),
            client_cert_file: PathBuf::new(),
            client_key_file: PathBuf::new(),
            api_key: String::new(),
            api_key_file: PathBuf::new(),
            edge_id: String::new(),
            connect_timeout_ms: 2_000,
            heartbeat_timeout_ms: 5_000,
            backoff_initial_ms: 100,
            backoff_max_ms: 10_000,
            cache_interval_ms: 1_000,
        }
    }
}

impl SyncConfig {
    /// Checks the table; the first problem as (field, message).
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.endpoints.is_empty() {
            return Err(("sync.endpoints", "at least one control-plane URL is required".into()));
        }
        for e in &self.endpoints {
            let ok = (e.starts_with("http://") || e.starts_with("https://"))
                && e.parse::<http::Uri>().is_ok_and(|u| u.host().is_some());
            if !ok {
                return Err(("sync.endpoints", format!("{e:?} is not an http:// or https:// URL")));
            }
        }
        let set = |p: &PathBuf| !p.as_os_str().is_empty();
        let https = self.endpoints.iter().any(|e| e.starts_with("https://"));
        if https && !set(&self.ca_file) {
            return Err(("sync.ca_file", "https:// endpoints need a CA file to verify the control plane".into()));
        }
        if set(&self.client_cert_file) != set(&self.client_key_file) {
            return Err(("sync.client_cert_file", "client_cert_file and client_key_file go together".into()));
        }
        if (set(&self.ca_file) || set(&self.client_cert_file)) && !https {
            return Err(("sync.ca_file", "TLS files are set but no endpoint is https://".into()));
        }
        match (self.api_key.is_empty(), self.api_key_file.as_os_str().is_empty()) {
            (true, true) => return Err(("sync.api_key", "set api_key or api_key_file (role edge)".into())),
            (false, false) => return Err(("sync.api_key", "set only one of api_key and api_key_file".into())),
            _ => {}
        }
        if !self.edge_id.is_empty() && !valid_edge_id(&self.edge_id) {
            return Err(("sync.edge_id", format!("{:?} must be 1..64 characters of [a-z0-9._-]", self.edge_id)));
        }
        for (field, v) in [
            ("sync.connect_timeout_ms", self.connect_timeout_ms),
            ("sync.heartbeat_timeout_ms", self.heartbeat_timeout_ms),
            ("sync.backoff_initial_ms", self.backoff_initial_ms),
            ("sync.cache_interval_ms", self.cache_interval_ms),
        ] {
            if v == 0 {
                return Err((field, "must be greater than zero".into()));
            }
        }
        if self.backoff_max_ms < self.backoff_initial_ms {
            return Err(("sync.backoff_max_ms", "must be at least sync.backoff_initial_ms".into()));
        }
        Ok(())
    }

    /// The API key, read from `api_key_file` when set; it must be visible
    /// ASCII (it travels in the `authorization` header).
    pub fn key(&self) -> Result<String, KeyError> {
        let key = if self.api_key_file.as_os_str().is_empty() {
            self.api_key.clone()
        } else {
            let path = self.api_key_file.clone();
            let text =
                std::fs::read_to_string(&path).map_err(|source| KeyError::Read { path: path.clone(), source })?;
            let key = text.trim();
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(KeyError::Unusable { path });
            }
            key.to_owned()
        };
        if format!("Bearer {key}").parse::<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>().is_err() {
            return Err(KeyError::NotAscii);
        }
        Ok(key)
    }

    /// The TLS client configuration for `https://` endpoints, its files read and
    /// checked at time `now` (Unix seconds): the CA bundle, and the client pair
    /// as the control plane checks its own (readable, matching, valid now).
    /// `None` without `ca_file`.
    pub fn tls(&self, now: u64) -> Result<Option<tonic::transport::ClientTlsConfig>, KeyError> {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        if self.ca_file.as_os_str().is_empty() {
            return Ok(None);
        }
        let tls_err = |field| move |source| KeyError::Tls { field, source };
        let ca = stile_tls::read_ca(&self.ca_file).map_err(tls_err("sync.ca_file"))?;
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca.pem));
        if !self.client_cert_file.as_os_str().is_empty() {
            let cert = stile_tls::read(&self.client_cert_file).map_err(tls_err("sync.client_cert_file"))?;
            let key = stile_tls::read(&self.client_key_file).map_err(tls_err("sync.client_key_file"))?;
            stile_tls::check_pair(
                &self.client_cert_file,
                &cert,
                &self.client_key_file,
                &key,
                &stile_tls::ring_provider(),
                now,
            )
            .map_err(tls_err("sync.client_cert_file"))?;
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        Ok(Some(tls))
    }

    /// The configured edge id, or one derived from the host name.
    pub fn edge_id(&self) -> String {
        if !self.edge_id.is_empty() {
            return self.edge_id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .unwrap_or_default();
        let id: String = host
            .trim()
            .chars()
            .map(|c| c.to_ascii_lowercase())
            .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' { c } else { '-' })
            .take(64)
            .collect();
        if id.is_empty() { "edge".into() } else { id }
    }
}

/// Why the sync client's credentials (API key, CA file, client certificate) cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A CA file, client certificate or key is unreadable, mismatched or expired.
    #[error("{field}: {source}")]
    Tls {
        /// The field naming the file.
        field: &'static str,
        /// What is wrong.
        source: stile_tls::CertError,
    },
    /// `api_key_file` cannot be read.
    #[error("cannot read sync.api_key_file {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `api_key_file` holds nothing usable.
    #[error("sync.api_key_file {} holds no usable key", .path.display())]
    Unusable {
        /// The file.
        path: PathBuf,
    },
    /// The key cannot travel in a header.
    #[error("sync API key is not visible ASCII")]
    NotAscii,
}

/// `[a-z0-9._-]{1,64}`, as the control plane requires.
pub(crate) fn valid_edge_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sync(f: impl FnOnce(&mut SyncConfig)) -> Result<(), String> {
        let mut c =
            SyncConfig { endpoints: vec!["http://127.0.0.1:7400".into()], api_key: "k".into(), ..Default::default() };
        f(&mut c);
        c.check().map_err(|(field, m)| format!("{field}: {m}"))
    }

    #[test]
    fn checks_name_the_field() {
        assert!(sync(|_| {}).is_ok());
        for (f, needle) in [
            (Box::new(|c: &mut SyncConfig| c.endpoints.clear()) as Box<dyn FnOnce(&mut SyncConfig)>, "sync.endpoints"),
            (Box::new(|c: &mut SyncConfig| c.endpoints = vec!["ftp://x".into()]), "sync.endpoints"),
            (Box::new(|c: &mut SyncConfig| c.api_key.clear()), "sync.api_key"),
            (Box::new(|c: &mut SyncConfig| c.api_key_file = "/k".into()), "only one"),
            (Box::new(|c: &mut SyncConfig| c.edge_id = "Edge 1".into()), "sync.edge_id"),
            (Box::new(|c: &mut SyncConfig| c.backoff_max_ms = 1), "sync.backoff_max_ms"),
            (Box::new(|c: &mut SyncConfig| c.endpoints = vec!["https://cp:7400".into()]), "sync.ca_file"),
            (Box::new(|c: &mut SyncConfig| c.ca_file = "/ca.pem".into()), "no endpoint is https://"),
            (
                Box::new(|c: &mut SyncConfig| {
                    c.endpoints = vec!["https://cp:7400".into()];
                    c.ca_file = "/ca.pem".into();
                    c.client_cert_file = "/edge.pem".into();
                }),
                "go together",
            ),
        ] {
            let err = sync(f).unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn default_edge_id_is_a_valid_id() {
        assert!(valid_edge_id(&SyncConfig::default().edge_id()));
    }
}
