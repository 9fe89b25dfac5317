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
    pub endpoints: Vec<String>,
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

/// Why the sync API key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
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
pub fn valid_edge_id(id: &str) -> bool {
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
