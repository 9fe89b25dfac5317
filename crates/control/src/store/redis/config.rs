//! The Redis backend's settings (`[store.redis]`, mirrored in
//! `docs/control-plane.md`); [`crate::config`] re-exports them.

use serde::Deserialize;

use crate::model::valid_name;

/// The Redis backend (`docs/redis.md`).
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[user:password@]host[:port][/db]` or `redis+unix:///path[?db=N]`.
    /// The password never appears in logs. Default `redis://127.0.0.1:6379/0`.
    pub url: String,
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
    pub fn redacted_url(&self) -> String {
        match self.url.split_once("://") {
            Some((scheme, rest)) => match rest.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://***@{host}"),
                None => self.url.clone(),
            },
            None => "<not a URL>".into(),
        }
    }

    /// Checks every value; the first problem is reported.
    pub(crate) fn validate(&self) -> Result<(), InvalidRedisConfig> {
        let bad = |m: String| Err(InvalidRedisConfig(m));
        let schemes = ["redis://", "redis+unix://", "unix://"];
        if !schemes.iter().any(|s| self.url.starts_with(s)) || redis::Client::open(self.url.as_str()).is_err() {
            return bad(format!(
                "store.redis.url {:?} must be redis://[user:password@]host[:port][/db] or redis+unix:///path \
                 (TLS, rediss://, is not built in)",
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
        Ok(())
    }
}

/// A `[store.redis]` value that cannot be used; the message names the field.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct InvalidRedisConfig(String);
