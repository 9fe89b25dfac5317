//! The Redis backend's settings (`[store.redis]`, mirrored in
//! `docs/control-plane.md`); [`crate::config`] re-exports them.

use std::path::PathBuf;

use serde::Deserialize;

use crate::model::valid_name;

/// The Redis backend (`docs/redis.md`).
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[user:password@]host[:port][/db]`, `rediss://...` (TLS) or
    /// `redis+unix:///path[?db=N]`. With `sentinel.addresses`, the scheme, user,
    /// password and db apply to the primary Sentinel names and the host and port
    /// are not used. The password never appears in logs. Default
    /// `redis://127.0.0.1:6379/0`.
    pub url: String,
    /// PEM file of the CA certificate(s) that sign Redis's certificate
    /// (`rediss://`, and the Sentinels with `sentinel.tls`). Unset: the
    /// system's trusted roots. Default unset.
    pub tls_ca_file: Option<PathBuf>,
    /// PEM certificate (chain) this control plane presents to Redis, for
    /// `tls-auth-clients yes`; set together with `tls_key_file`. Default unset:
    /// no client certificate.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`. Default unset.
    pub tls_key_file: Option<PathBuf>,
    /// Sentinel discovery of the primary (`docs/redis.md`, "Sentinel"). Off
    /// while `addresses` is empty (the default).
    pub sentinel: SentinelConfig,
    /// Every key lives under `{<key_prefix>}:` (one Redis Cluster hash slot).
    /// Several deployments can share one Redis with different prefixes.
    /// Default `stile`.
    pub key_prefix: String,
    /// Time allowed to open a connection, milliseconds. Default 1000.
    pub connect_timeout_ms: u64,
    /// Time allowed for one command's answer, milliseconds; beyond it the call
    /// fails with UNAVAILABLE. Default 2000.
    pub command_timeout_ms: u64,
    /// Replicas that must have a commit before it is acknowledged (`WAIT`);
    /// fewer within `wait_timeout_ms` fails the call with UNAVAILABLE (the
    /// change stays on the primary). Default 0: the primary's answer suffices.
    pub wait_replicas: u32,
    /// How long a commit waits for `wait_replicas`, milliseconds. Default 1000.
    pub wait_timeout_ms: u64,
    /// While Redis is unreachable, minting keeps working from asset states and
    /// API keys this process read within this many seconds (and the signing
    /// keys it holds). 0: minting fails with UNAVAILABLE too. Default 300.
    pub stale_read_secs: u64,
    /// Mint audit events held in memory while Redis is unreachable, written
    /// when it returns; beyond this many, minting fails with UNAVAILABLE.
    /// Default 100000.
    pub audit_buffer: usize,
}

impl Default for RedisConfig {
    fn default() -> RedisConfig {
        RedisConfig {
            url: "redis://127.0.0.1:6379/0".into(),
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            sentinel: SentinelConfig::default(),
            key_prefix: "stile".into(),
            connect_timeout_ms: 1_000,
            command_timeout_ms: 2_000,
            wait_replicas: 0,
            wait_timeout_ms: 1_000,
            stale_read_secs: 300,
            audit_buffer: 100_000,
        }
    }
}

impl std::fmt::Debug for RedisConfig {
    /// Like the derived form, with the URL's password redacted.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.redacted_url())
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .field("sentinel", &self.sentinel)
            .field("key_prefix", &self.key_prefix)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("command_timeout_ms", &self.command_timeout_ms)
            .field("wait_replicas", &self.wait_replicas)
            .field("wait_timeout_ms", &self.wait_timeout_ms)
            .field("stale_read_secs", &self.stale_read_secs)
            .field("audit_buffer", &self.audit_buffer)
            .finish()
    }
}

impl RedisConfig {
    /// The URL with any user info replaced by `***`, for logs and messages.
    pub(crate) fn redacted_url(&self) -> String {
        match self.url.split_once("://") {
            Some((scheme, rest)) => match rest.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://***@{host}"),
                None => self.url.clone(),
            },
            None => "<not a URL>".into(),
        }
    }

    /// Checks every value, reading the TLS files; the first problem is reported.
    pub(crate) fn validate(&self) -> Result<(), InvalidRedisConfig> {
        let bad = |m: String| Err(InvalidRedisConfig(m));
        let schemes = ["redis://", "rediss://", "redis+unix://", "unix://"];
        if !schemes.iter().any(|s| self.url.starts_with(s)) || redis::Client::open(self.url.as_str()).is_err() {
            return bad(format!(
                "store.redis.url {:?} must be redis://[user:password@]host[:port][/db], rediss://... (TLS) \
                 or redis+unix:///path",
                self.redacted_url()
            ));
        }
        if self.url.starts_with("rediss://") && self.url.contains('#') {
            return bad(format!(
                "store.redis.url {:?}: a #fragment (such as #insecure, no certificate check) is not supported; \
                 set store.redis.tls_ca_file instead",
                self.redacted_url()
            ));
        }
        if !valid_name(&self.key_prefix) {
            return bad(format!(
                "store.redis.key_prefix {:?} must be 1..64 characters of [a-z0-9._-]",
                self.key_prefix
            ));
        }
        if self.connect_timeout_ms == 0 || self.command_timeout_ms == 0 || self.wait_timeout_ms == 0 {
            return bad(
                "store.redis: connect_timeout_ms, command_timeout_ms and wait_timeout_ms must be positive".into()
            );
        }
        let any_tls_file = self.tls_ca_file.is_some() || self.tls_cert_file.is_some() || self.tls_key_file.is_some();
        if any_tls_file && !self.uses_tls() {
            return bad(format!(
                "store.redis: tls_ca_file, tls_cert_file and tls_key_file apply to rediss:// (or sentinel.tls), \
                 but url {:?} is plain",
                self.redacted_url()
            ));
        }
        self.tls_certificates().map_err(InvalidRedisConfig)?;
        self.sentinel.validate(&self.url)
    }

    /// Whether any connection (the server, or the Sentinels) uses TLS.
    pub(crate) fn uses_tls(&self) -> bool {
        self.url.starts_with("rediss://") || (self.sentinel.enabled() && self.sentinel.tls)
    }

    /// The CA and client certificate files, read and checked; `None` when
    /// none is set (the system's roots, no client certificate).
    pub(crate) fn tls_certificates(&self) -> Result<Option<redis::TlsCertificates>, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};

        let read = |field: &str, path: &PathBuf| {
            std::fs::read(path).map_err(|e| format!("store.redis.{field} {}: cannot read: {e}", path.display()))
        };
        let certs = |field: &str, path: &PathBuf, pem: &[u8]| match CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(c) if !c.is_empty() => Ok(()),
            Ok(_) => Err(format!("store.redis.{field} {}: no PEM certificate in it", path.display())),
            Err(e) => Err(format!("store.redis.{field} {}: not PEM certificates: {e}", path.display())),
        };
        let root_cert = match &self.tls_ca_file {
            Some(path) => {
                let pem = read("tls_ca_file", path)?;
                certs("tls_ca_file", path, &pem)?;
                Some(pem)
            }
            None => None,
        };
        let client_tls = match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => {
                let client_cert = read("tls_cert_file", cert)?;
                certs("tls_cert_file", cert, &client_cert)?;
                let client_key = read("tls_key_file", key)?;
                if let Err(e) = PrivateKeyDer::from_pem_slice(&client_key) {
                    return Err(format!("store.redis.tls_key_file {}: no PEM private key in it: {e}", key.display()));
                }
                Some(redis::ClientTlsConfig { client_cert, client_key })
            }
            (None, None) => None,
            _ => return Err("store.redis: set tls_cert_file and tls_key_file together".into()),
        };
        Ok((root_cert.is_some() || client_tls.is_some()).then_some(redis::TlsCertificates { client_tls, root_cert }))
    }
}

/// `[store.redis.sentinel]`: ask Sentinels which server is the primary.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct SentinelConfig {
    /// Sentinel addresses, `host:port` (at most 16), asked in this order.
    /// Empty (default): no Sentinel, `url` names the server.
    pub addresses: Vec<String>,
    /// The primary's name in Sentinel (`sentinel monitor <name> ...`).
    /// Default `stile`.
    pub master_name: String,
    /// Talk TLS to the Sentinels (`tls-port` on Sentinel), with the
    /// `tls_ca_file` / `tls_cert_file` / `tls_key_file` of `[store.redis]`.
    /// TLS to the primary follows `url`'s scheme. Default false.
    pub tls: bool,
    /// User for the Sentinels' `AUTH` (Sentinel's own ACL); empty: none, or
    /// the default user with `password`. Default empty.
    pub username: String,
    /// Password for the Sentinels' `AUTH` (`requirepass` on Sentinel); never
    /// logged. Empty (default): no `AUTH`.
    pub password: String,
}

impl Default for SentinelConfig {
    fn default() -> SentinelConfig {
        SentinelConfig {
            addresses: Vec::new(),
            master_name: "stile".into(),
            tls: false,
            username: String::new(),
            password: String::new(),
        }
    }
}

impl std::fmt::Debug for SentinelConfig {
    /// Like the derived form, with the password redacted.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelConfig")
            .field("addresses", &self.addresses)
            .field("master_name", &self.master_name)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &if self.password.is_empty() { "" } else { "***" })
            .finish()
    }
}

/// Sentinel addresses accepted.
const MAX_SENTINELS: usize = 16;

impl SentinelConfig {
    /// Whether the primary is found through Sentinels.
    pub(crate) fn enabled(&self) -> bool {
        !self.addresses.is_empty()
    }

    fn validate(&self, url: &str) -> Result<(), InvalidRedisConfig> {
        let bad = |m: String| Err(InvalidRedisConfig(m));
        if !self.enabled() {
            return if self.tls {
                bad("store.redis.sentinel.tls is set but sentinel.addresses is empty".into())
            } else {
                Ok(())
            };
        }
        if self.addresses.len() > MAX_SENTINELS {
            return bad(format!("store.redis.sentinel.addresses: at most {MAX_SENTINELS}"));
        }
        for a in &self.addresses {
            let port = a.rsplit_once(':').and_then(|(host, port)| (!host.is_empty()).then_some(port));
            if port.and_then(|p| p.parse::<u16>().ok()).is_none_or(|p| p == 0) {
                return bad(format!("store.redis.sentinel.addresses: {a:?} is not host:port"));
            }
        }
        if self.master_name.is_empty() || self.master_name.len() > 128 || self.master_name.contains(char::is_whitespace)
        {
            return bad(format!(
                "store.redis.sentinel.master_name {:?} must be 1..128 characters without spaces",
                self.master_name
            ));
        }
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return bad(
                "store.redis.sentinel: url must be redis:// or rediss:// (a Unix socket has no primary to find)".into(),
            );
        }
        Ok(())
    }
}

/// A `[store.redis]` value that cannot be used; the message names the field.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct InvalidRedisConfig(String);
