//! The control plane's configuration: one typed struct per concern, a doc
//! comment and a default on every field. `docs/control-plane.md` mirrors it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use stile_token::MAX_TTL_SECS;

use crate::model::{Role, valid_name};
use crate::policy::{PolicyError, country_rule, normalise_base_url};
pub use crate::store::{RedisConfig, SentinelConfig};
pub use crate::tls::TlsConfig;

/// Upper bound of `revocations.max_batch`: a batch is one commit and one
/// request, which must fit `RevocationService`'s 16 MiB message limit.
pub const MAX_REVOKE_BATCH: usize = 100_000;

/// The whole configuration file (TOML). Every field has a default, so an empty
/// file is a valid development configuration.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the gRPC server listens on (used by `stile control`; tests pass
    /// their own listener). Default `127.0.0.1:7400`.
    pub listen: SocketAddr,
    /// Address of the admin HTTP listener (`/healthz`, `/readyz`, `/metrics`),
    /// bound by `stile control`. Empty disables it. Default `127.0.0.1:7401`.
    pub admin_listen: String,
    /// Where state is kept.
    pub store: StoreConfig,
    /// How minted links look.
    pub links: LinksConfig,
    /// Policy used when a mint request names none. Must be a key of `policies`.
    /// Default `"public"`.
    pub default_policy: String,
    /// Policy templates by name. Default: `public` (no bindings), `private`
    /// (subject required), `paid` (subject and client IP required), each with
    /// TTLs from 10 min to 24 h, default 1 h. Naming any policy replaces all
    /// three defaults.
    pub policies: BTreeMap<String, PolicyConfig>,
    /// Callers and their keys.
    pub auth: AuthConfig,
    /// Audit log retention.
    pub audit: AuditConfig,
    /// Revocation log bookkeeping.
    pub revocations: RevocationConfig,
    /// The edge sync stream, key rollout and Revoke's wait.
    pub sync: SyncConfig,
    /// gRPC over TLS, edges' client certificates, the plaintext warning.
    pub tls: TlsConfig,
}

/// Storage backend settings.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Which backend holds the state: `redb` (one embedded file, one control
    /// plane) or `redis` (shared by several control-plane replicas; see
    /// `docs/redis.md`). Default `redb`.
    pub backend: StoreBackend,
    /// Path of the embedded database file (redb); created if missing, its
    /// directory must exist. It holds signing keys: keep it private (0600).
    /// Default `stile-control.redb`.
    pub path: PathBuf,
    /// The Redis backend (used when `backend = "redis"`).
    pub redis: RedisConfig,
}

/// The storage backends.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StoreBackend {
    /// The embedded redb file at `store.path`.
    #[default]
    Redb,
    /// A Redis server at `store.redis.url`.
    Redis,
}

/// How links are built.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct LinksConfig {
    /// Edge base URL (`https://host[:port]`, no path) used when a mint request
    /// gives none. Default empty: requests must name one.
    pub default_base_url: String,
    /// Query parameter carrying the token (`?st=...`). Must match the edges.
    /// Default `"st"`.
    pub query_param: String,
    /// First path segment of the path-prefix transport (`/_st/<token>/...`).
    /// Must match the edges. Default `"_st"`.
    pub path_prefix: String,
    /// Cookie name of the cookie transport. Must match the edges. Default `"stile"`.
    pub cookie_name: String,
    /// Prefix length an IPv4 client address is bound to. Default 32.
    pub ipv4_prefix_len: u8,
    /// Prefix length an IPv6 client address is bound to (clients rotate
    /// privacy addresses within a /64). Default 64.
    pub ipv6_prefix_len: u8,
    /// Most links one MintBatch call may mint. Default 10000.
    pub max_batch: usize,
}

/// A policy template: what a link minted under it must carry.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Shortest TTL a request may ask for, seconds. Default 600 (10 min).
    pub ttl_min_secs: u64,
    /// Longest TTL a request may ask for, seconds; at most 31 days. Default 86400 (24 h).
    pub ttl_max_secs: u64,
    /// TTL when the request gives none, seconds. Default 3600 (1 h).
    pub default_ttl_secs: u64,
    /// Whether a subject (viewer id) is required. Default false.
    pub require_subject: bool,
    /// Whether a client IP binding is required. Default false.
    pub require_ip: bool,
    /// Countries admitted when the request gives no country rule (ISO 3166-1
    /// alpha-2). Default empty: no rule. Exclusive with `deny_countries`.
    pub allow_countries: Vec<String>,
    /// Countries refused when the request gives no country rule. Default empty.
    pub deny_countries: Vec<String>,
    /// Which key signs links minted under this policy: `"hmac-sha256"` (the
    /// default; format version 1) or `"ed25519"` (version 2: edges hold only
    /// the public key and cannot mint). The ACTIVE key of that algorithm
    /// mints; without one, minting fails FAILED_PRECONDITION.
    pub algorithm: PolicyAlgorithm,
    /// Playback sessions (`docs/sessions.md`): whether edges may extend playback
    /// of a link past its expiry, for how long, and how bound. Default: off.
    pub session: SessionConfig,
}

/// `policies.<name>.session`: the session policy signed into every link minted
/// under the policy (`docs/sessions.md`). Edges must run a version that knows
/// sessions before a policy enables them (older edges refuse such links as `malformed`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// Whether links minted under this policy carry a session policy. Default false.
    pub enabled: bool,
    /// Idle timeout, seconds: a session credential lives this long unless the
    /// player's fetches renew it. 1..=`max_secs`. Default 120.
    pub idle_secs: u32,
    /// Hard maximum, seconds from the session's start, renewals included.
    /// `idle_secs..=604800` (7 days). Default 14400 (4 h).
    pub max_secs: u32,
    /// Bind each session to the client's IPv4 network of this prefix length
    /// (0 = not bound, else 1..=32). Default 0.
    pub bind_v4: u8,
    /// Bind each session to the client's IPv6 network of this prefix length
    /// (0 = not bound, else 1..=128). Default 0.
    pub bind_v6: u8,
}

impl Default for SessionConfig {
    fn default() -> SessionConfig {
        SessionConfig { enabled: false, idle_secs: 120, max_secs: 4 * 3600, bind_v4: 0, bind_v6: 0 }
    }
}

impl SessionConfig {
    /// The session policy links carry, when enabled.
    pub fn policy(&self) -> Option<stile_token::SessionPolicy> {
        self.enabled.then_some(stile_token::SessionPolicy {
            idle_secs: self.idle_secs,
            max_secs: self.max_secs,
            bind_v4: self.bind_v4,
            bind_v6: self.bind_v6,
        })
    }

    fn validate(&self, name: &str) -> Result<(), ConfigError> {
        let max = stile_token::MAX_SESSION_SECS;
        if self.idle_secs == 0 || self.idle_secs > self.max_secs {
            return bad(format!(
                "policies.{name}.session.idle_secs: need 1 <= idle_secs <= max_secs, got {} and max_secs {}",
                self.idle_secs, self.max_secs
            ));
        }
        if self.max_secs > max {
            return bad(format!("policies.{name}.session.max_secs: at most {max} (7 days), got {}", self.max_secs));
        }
        if self.bind_v4 > 32 {
            return bad(format!("policies.{name}.session.bind_v4: 0..=32, got {}", self.bind_v4));
        }
        if self.bind_v6 > 128 {
            return bad(format!("policies.{name}.session.bind_v6: 0..=128, got {}", self.bind_v6));
        }
        Ok(())
    }
}

/// A policy's signing algorithm (`policies.<name>.algorithm`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum PolicyAlgorithm {
    /// HMAC-SHA256 (token format version 1).
    #[default]
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
    /// Ed25519 (token format version 2).
    #[serde(rename = "ed25519")]
    Ed25519,
}

impl PolicyAlgorithm {
    /// The token crate's algorithm.
    pub fn algorithm(self) -> stile_token::Algorithm {
        match self {
            PolicyAlgorithm::HmacSha256 => stile_token::Algorithm::HmacSha256,
            PolicyAlgorithm::Ed25519 => stile_token::Algorithm::Ed25519,
        }
    }
}

/// Authentication settings.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// API keys defined in configuration, e.g. the bootstrap admin key. Only
    /// their SHA-256 is written here (`stile control --gen-key` prints a key
    /// and its hash). They cannot be deleted through the API. Default none.
    pub keys: Vec<ConfiguredKey>,
    /// A source address (IP) with this many failed authentications within
    /// `failure_window_secs` is refused every call, with `RESOURCE_EXHAUSTED`,
    /// for `backoff_secs` (its keys are not even checked). 0 disables the
    /// back-off. Default 20.
    pub max_failures: u32,
    /// The window over which failures of one source are counted, seconds.
    /// Default 60.
    pub failure_window_secs: u64,
    /// How long a source that reached `max_failures` is refused, seconds.
    /// Default 300.
    pub backoff_secs: u64,
    /// Denied calls logged (`auth.denied`) per minute at most, over all
    /// sources; the rest are counted and summed up in the next line
    /// (`suppressed`). Default 120.
    pub denied_log_per_minute: u32,
}

impl Default for AuthConfig {
    fn default() -> AuthConfig {
        AuthConfig {
            keys: Vec::new(),
            max_failures: 20,
            failure_window_secs: 60,
            backoff_secs: 300,
            denied_log_per_minute: 120,
        }
    }
}

/// An API key defined in the configuration file.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConfiguredKey {
    /// Name, 1..64 characters of `[a-z0-9._-]`; the audit log's actor.
    pub name: String,
    /// Role: `minter`, `operator`, `edge` or `admin`.
    pub role: Role,
    /// Lower-case hex SHA-256 of the key string.
    pub sha256: String,
    /// Role `edge` (required there, refused for other roles): the edge ids its
    /// sync stream may announce, each an id or a pattern ending in `*`
    /// (`edge-eu-*`; `*` alone: any id). At most 64.
    #[serde(default)]
    pub edge_ids: Vec<String>,
}

/// Audit retention; whichever bound is hit first applies.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Most events kept; the oldest go first. Default 1000000.
    pub max_events: u64,
    /// Oldest event kept, seconds. Default 7776000 (90 days).
    pub max_age_secs: u64,
}

/// Change log bookkeeping.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RevocationConfig {
    /// Change log entries kept for edges to catch up from; an edge further
    /// behind gets a snapshot. Default 1000000.
    pub log_retention: u64,
    /// How often expired revocations, old log entries and old audit events are
    /// pruned, seconds. Default 60.
    pub prune_interval_secs: u64,
    /// Added to a revocation's expiry (issued-before + longest policy TTL) to
    /// cover edge clock skew, seconds. Default 300.
    pub expiry_margin_secs: u64,
    /// Most targets one `RevokeBatch` call may revoke (one commit), 1..=100000.
    /// Default 50000.
    pub max_batch: usize,
}

/// The edge sync stream (`EdgeService.Sync`), key rollout and `Revoke`'s wait.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct SyncConfig {
    /// How often each edge gets a heartbeat (control-plane time and version),
    /// milliseconds. Default 1000.
    pub heartbeat_interval_ms: u64,
    /// An edge further behind than this many versions (at hello, or while it
    /// falls behind) gets a snapshot instead of deltas. Default 10000.
    pub max_lag_versions: u64,
    /// An edge whose stream accepts no message for this long (it stopped
    /// reading) is disconnected, milliseconds. Default 10000.
    pub send_timeout_ms: u64,
    /// An edge that sends nothing (ACK, status) for this long is disconnected,
    /// milliseconds; edges answer every heartbeat. Default 15000.
    pub edge_timeout_ms: u64,
    /// Time an edge has to send its hello after opening the stream,
    /// milliseconds. Default 10000.
    pub hello_timeout_ms: u64,
    /// A rotated key becomes ACTIVE at the latest this long after it was pushed
    /// as PENDING, even if some connected edges have not ACKed it (logged with
    /// their ids), seconds. Default 30.
    pub key_activation_timeout_secs: u64,
    /// `Revoke` with `wait` and no timeout waits this long at most, milliseconds.
    /// Default 5000.
    pub revoke_wait_default_ms: u64,
    /// Upper bound of a `Revoke` wait, milliseconds. Default 60000.
    pub revoke_wait_max_ms: u64,
    /// An edge whose stream ended is still expected to confirm changes (and
    /// reported "not confirmed" by `Revoke` with `wait`, key rotation and
    /// `RevocationService.Status`) this long after it was last heard from,
    /// seconds. 0: only connected edges are expected. Default 900.
    pub seen_window_secs: u64,
    /// How long a purge stays in the snapshot after it was recorded, seconds:
    /// an edge that reconnects with an older version within this window
    /// applies exactly the purges it missed; one that was away longer (its
    /// version below the newest purge dropped) empties its whole cache.
    /// docs/sync-protocol.md, "Purges". Must be positive. Default 604800 (7 days).
    pub purge_retention_secs: u64,
}

impl Default for SyncConfig {
    fn default() -> SyncConfig {
        SyncConfig {
            heartbeat_interval_ms: 1_000,
            max_lag_versions: 10_000,
            send_timeout_ms: 10_000,
            edge_timeout_ms: 15_000,
            hello_timeout_ms: 10_000,
            key_activation_timeout_secs: 30,
            revoke_wait_default_ms: 5_000,
            revoke_wait_max_ms: 60_000,
            seen_window_secs: 900,
            purge_retention_secs: 7 * 86_400,
        }
    }
}

impl Default for Config {
    fn default() -> Config {
        let policy = |subject, ip| PolicyConfig { require_subject: subject, require_ip: ip, ..PolicyConfig::default() };
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 7400)),
            admin_listen: "127.0.0.1:7401".into(),
            store: StoreConfig::default(),
            links: LinksConfig::default(),
            default_policy: "public".into(),
            policies: BTreeMap::from([
                ("public".into(), policy(false, false)),
                ("private".into(), policy(true, false)),
                ("paid".into(), policy(true, true)),
            ]),
            auth: AuthConfig::default(),
            audit: AuditConfig::default(),
            revocations: RevocationConfig::default(),
            sync: SyncConfig::default(),
            tls: TlsConfig::default(),
        }
    }
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig {
            backend: StoreBackend::Redb,
            path: PathBuf::from("stile-control.redb"),
            redis: RedisConfig::default(),
        }
    }
}

impl Default for LinksConfig {
    fn default() -> LinksConfig {
        LinksConfig {
            default_base_url: String::new(),
            query_param: "st".into(),
            path_prefix: "_st".into(),
            cookie_name: "stile".into(),
            ipv4_prefix_len: 32,
            ipv6_prefix_len: 64,
            max_batch: 10_000,
        }
    }
}

impl Default for PolicyConfig {
    fn default() -> PolicyConfig {
        PolicyConfig {
            ttl_min_secs: 600,
            ttl_max_secs: 86_400,
            default_ttl_secs: 3_600,
            require_subject: false,
            require_ip: false,
            allow_countries: Vec::new(),
            deny_countries: Vec::new(),
            algorithm: PolicyAlgorithm::HmacSha256,
            session: SessionConfig::default(),
        }
    }
}

impl Default for AuditConfig {
    fn default() -> AuditConfig {
        AuditConfig { max_events: 1_000_000, max_age_secs: 90 * 86_400 }
    }
}

impl Default for RevocationConfig {
    fn default() -> RevocationConfig {
        RevocationConfig {
            log_retention: 1_000_000,
            prune_interval_secs: 60,
            expiry_margin_secs: 300,
            max_batch: MAX_REVOKE_BATCH / 2,
        }
    }
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said, with line and column.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads, parses and validates a TOML file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let config = Config::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse { path: path.to_path_buf(), message },
            other => other,
        })?;
        Ok(config)
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config =
            toml::from_str(text).map_err(|e| ConfigError::Parse { path: PathBuf::new(), message: e.to_string() })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value, section by section; the first problem is reported.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.admin_listen.is_empty() && self.admin_listen.parse::<SocketAddr>().is_err() {
            return bad(format!("admin_listen {:?} is not an ip:port socket address", self.admin_listen));
        }
        if self.store.backend == StoreBackend::Redis
            && let Err(e) = self.store.redis.validate()
        {
            return bad(e.to_string());
        }
        self.links.validate()?;
        self.validate_policies()?;
        self.auth.validate()?;
        if self.audit.max_events == 0 || self.audit.max_age_secs == 0 {
            return bad("audit.max_events and audit.max_age_secs must be positive".into());
        }
        if self.revocations.log_retention == 0 || self.revocations.prune_interval_secs == 0 {
            return bad("revocations.log_retention and revocations.prune_interval_secs must be positive".into());
        }
        self.tls.check().map_err(ConfigError::Invalid)?;
        if !(1..=MAX_REVOKE_BATCH).contains(&self.revocations.max_batch) {
            return bad(format!("revocations.max_batch must be 1..={MAX_REVOKE_BATCH}"));
        }
        self.sync.validate()
    }

    fn validate_policies(&self) -> Result<(), ConfigError> {
        if self.policies.is_empty() {
            return bad("policies: at least one policy is required".into());
        }
        if !self.policies.contains_key(&self.default_policy) {
            return bad(format!(
                "default_policy {:?} is not defined in policies (have: {})",
                self.default_policy,
                self.policy_names()
            ));
        }
        for (name, p) in &self.policies {
            if p.ttl_min_secs == 0 || p.ttl_min_secs > p.ttl_max_secs || p.ttl_max_secs > MAX_TTL_SECS {
                return bad(format!(
                    "policies.{name}: need 0 < ttl_min_secs <= ttl_max_secs <= {MAX_TTL_SECS}, got {}..{}",
                    p.ttl_min_secs, p.ttl_max_secs
                ));
            }
            if !(p.ttl_min_secs..=p.ttl_max_secs).contains(&p.default_ttl_secs) {
                return bad(format!(
                    "policies.{name}.default_ttl_secs {} is outside {}..={}",
                    p.default_ttl_secs, p.ttl_min_secs, p.ttl_max_secs
                ));
            }
            if let Err(e) = p.default_countries() {
                return bad(format!("policies.{name}: {e}"));
            }
            p.session.validate(name)?;
        }
        Ok(())
    }

    /// The algorithms the configured policies mint with, each once, HMAC-SHA256 first.
    pub fn minting_algorithms(&self) -> Vec<stile_token::Algorithm> {
        stile_token::Algorithm::ALL
            .into_iter()
            .filter(|a| self.policies.values().any(|p| p.algorithm.algorithm() == *a))
            .collect()
    }

    /// The longest TTL any policy allows: how long a revocation must be kept.
    pub(crate) fn max_ttl_secs(&self) -> u64 {
        self.policies.values().map(|p| p.ttl_max_secs).max().unwrap_or(MAX_TTL_SECS)
    }

    /// How long after its base time (issued-before, or now) a revocation is
    /// kept: the longest TTL plus the edges' clock-skew margin.
    pub(crate) fn revocation_lifetime_secs(&self) -> u64 {
        self.max_ttl_secs() + self.revocations.expiry_margin_secs
    }

    pub(crate) fn policy_names(&self) -> String {
        self.policies.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
    }
}

impl LinksConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !self.default_base_url.is_empty()
            && let Err(e) = normalise_base_url(&self.default_base_url)
        {
            return bad(format!("links.default_base_url: {e}"));
        }
        for (field, value) in
            [("query_param", &self.query_param), ("path_prefix", &self.path_prefix), ("cookie_name", &self.cookie_name)]
        {
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
                return bad(format!("links.{field} must be 1 or more characters of [A-Za-z0-9_-], got {value:?}"));
            }
        }
        if !(1..=32).contains(&self.ipv4_prefix_len) {
            return bad(format!("links.ipv4_prefix_len must be 1..=32, got {}", self.ipv4_prefix_len));
        }
        if !(1..=128).contains(&self.ipv6_prefix_len) {
            return bad(format!("links.ipv6_prefix_len must be 1..=128, got {}", self.ipv6_prefix_len));
        }
        if self.max_batch == 0 {
            return bad("links.max_batch must be at least 1".into());
        }
        Ok(())
    }
}

impl AuthConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::BTreeSet::new();
        for key in &self.keys {
            if !valid_name(&key.name) {
                return bad(format!("auth.keys: name {:?} must be 1..64 characters of [a-z0-9._-]", key.name));
            }
            if !names.insert(key.name.as_str()) {
                return bad(format!("auth.keys: name {:?} appears twice", key.name));
            }
            if key.sha256.len() != 64 || !key.sha256.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return bad(format!("auth.keys.{}: sha256 must be 64 lower-case hex digits", key.name));
            }
            if let Err(e) = crate::identity::check_edge_ids(key.role, &key.edge_ids) {
                return bad(format!("auth.keys.{}: {e}", key.name));
            }
        }
        if self.max_failures > 0 && (self.failure_window_secs == 0 || self.backoff_secs == 0) {
            return bad(
                "auth.failure_window_secs and auth.backoff_secs must be positive when auth.max_failures is".into()
            );
        }
        Ok(())
    }
}

impl SyncConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (field, value) in [
            ("heartbeat_interval_ms", self.heartbeat_interval_ms),
            ("max_lag_versions", self.max_lag_versions),
            ("send_timeout_ms", self.send_timeout_ms),
            ("hello_timeout_ms", self.hello_timeout_ms),
            ("revoke_wait_max_ms", self.revoke_wait_max_ms),
            ("purge_retention_secs", self.purge_retention_secs),
        ] {
            if value == 0 {
                return bad(format!("sync.{field} must be positive"));
            }
        }
        if self.edge_timeout_ms <= self.heartbeat_interval_ms {
            return bad(format!(
                "sync.edge_timeout_ms ({}) must exceed sync.heartbeat_interval_ms ({}): edges answer heartbeats",
                self.edge_timeout_ms, self.heartbeat_interval_ms
            ));
        }
        if self.revoke_wait_default_ms > self.revoke_wait_max_ms {
            return bad("sync.revoke_wait_default_ms must not exceed sync.revoke_wait_max_ms".into());
        }
        Ok(())
    }
}

/// An invalid-configuration error with `message`.
fn bad(message: String) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid(message))
}

impl PolicyConfig {
    /// The default country rule, parsed.
    pub(crate) fn default_countries(&self) -> Result<Option<stile_token::CountryRule>, PolicyError> {
        country_rule(&self.allow_countries, &self.deny_countries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(Config::from_toml("").unwrap(), Config::default());
        assert_eq!(Config::default().max_ttl_secs(), 86_400);
    }

    #[test]
    fn full_file_parses() {
        let c = Config::from_toml(
            r#"
            listen = "0.0.0.0:9000"
            default_policy = "paid"
            [store]
            path = "/var/lib/stile/control.redb"
            [links]
            default_base_url = "https://edge.example.com"
            query_param = "tok"
            [policies.paid]
            ttl_min_secs = 60
            ttl_max_secs = 7200
            default_ttl_secs = 600
            require_subject = true
            allow_countries = ["us", "CA"]
            algorithm = "ed25519"
            [[auth.keys]]
            name = "root"
            role = "admin"
            sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
            "#,
        )
        .unwrap();
        assert_eq!(c.policies.len(), 1);
        assert_eq!(c.auth.keys[0].role, Role::Admin);
        assert_eq!(c.max_ttl_secs(), 7200);
        assert_eq!(c.policies["paid"].algorithm, PolicyAlgorithm::Ed25519);
        assert_eq!(Config::default().policies["public"].algorithm, PolicyAlgorithm::HmacSha256);
    }

    #[test]
    fn redis_store_parses_and_never_shows_its_password() {
        let c = Config::from_toml(
            "[store]\nbackend = \"redis\"\n[store.redis]\nurl = \"redis://app:s3cret@10.0.0.5:6380/2\"\nwait_replicas = 1",
        )
        .unwrap();
        assert_eq!((c.store.backend, c.store.redis.wait_replicas), (StoreBackend::Redis, 1));
        assert_eq!(c.store.redis.redacted_url(), "redis://***@10.0.0.5:6380/2");
        assert!(!format!("{c:?}").contains("s3cret"));
        // An unused Redis section is not checked.
        Config::from_toml("[store.redis]\nurl = \"nonsense\"").unwrap();
    }

    #[test]
    fn bad_values_are_named() {
        let check = |toml: &str, needle: &str| {
            let err = Config::from_toml(toml).unwrap_err().to_string();
            assert!(err.contains(needle), "{err:?} should mention {needle:?}");
        };
        check("lisen = 1", "unknown field `lisen`");
        check("default_policy = \"gold\"", "default_policy \"gold\" is not defined");
        check("default_policy = \"x\"\n[policies.x]\nttl_min_secs = 0", "policies.x");
        check("default_policy = \"x\"\n[policies.x]\nallow_countries = [\"USA\"]", "\"USA\" is not an ISO");
        check(
            "default_policy = \"x\"\n[policies.x]\nallow_countries = [\"US\"]\ndeny_countries = [\"FR\"]",
            "not both",
        );
        check("[links]\ndefault_base_url = \"ftp://x\"", "links.default_base_url");
        check("[links]\nipv6_prefix_len = 0", "ipv6_prefix_len");
        check("[store]\nbackend = \"redis\"\n[store.redis]\nurl = \"http://x\"", "store.redis.url");
        check("[store]\nbackend = \"redis\"\n[store.redis]\nkey_prefix = \"A B\"", "store.redis.key_prefix");
        check("[store]\nbackend = \"memcached\"", "unknown variant `memcached`");
        check("default_policy = \"x\"\n[policies.x]\nalgorithm = \"rsa\"", "unknown variant `rsa`");
        check("admin_listen = \"localhost\"", "admin_listen");
        check("[sync]\nheartbeat_interval_ms = 0", "sync.heartbeat_interval_ms");
        check("[sync]\nedge_timeout_ms = 500", "sync.edge_timeout_ms");
        check("[[auth.keys]]\nname = \"a\"\nrole = \"root\"\nsha256 = \"00\"", "unknown variant `root`");
        check("[[auth.keys]]\nname = \"a\"\nrole = \"admin\"\nsha256 = \"00\"", "sha256");
        let session = |body: &str| format!("default_policy = \"x\"\n[policies.x.session]\nenabled = true\n{body}");
        check(&session("idle_secs = 0"), "policies.x.session.idle_secs");
        check(&session("idle_secs = 700\nmax_secs = 600"), "policies.x.session.idle_secs");
        check(&session("max_secs = 604801"), "policies.x.session.max_secs");
        check(&session("bind_v4 = 33"), "policies.x.session.bind_v4");
        check(&session("bind_v6 = 129"), "policies.x.session.bind_v6");
        check(&session("idle = 5"), "unknown field `idle`");
    }

    #[test]
    fn session_policies() {
        let c = Config::from_toml(
            "default_policy = \"x\"\n[policies.x.session]\nenabled = true\nidle_secs = 30\nmax_secs = 600\nbind_v6 = 64",
        )
        .unwrap();
        let p = c.policies["x"].session.policy().unwrap();
        assert_eq!((p.idle_secs, p.max_secs, p.bind_v4, p.bind_v6), (30, 600, 0, 64));
        assert_eq!(Config::default().policies["public"].session.policy(), None, "off by default");
    }

    #[test]
    fn load_names_the_file() {
        let err = Config::load(Path::new("/nonexistent/stile.toml")).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/stile.toml"), "{err}");
    }
}
