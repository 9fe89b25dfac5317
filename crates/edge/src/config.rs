//! The edge's configuration: one typed struct read from TOML, a documented
//! default for every field (mirrored in `docs/edge.md`), and [`EdgeConfig::validate`],
//! which rejects anything the edge could not run with before a port is bound.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use stile_token::UnknownCountry;

/// The whole edge configuration (`stile edge --config FILE`).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeConfig {
    /// Addresses the proxy listens on (plain HTTP; TLS terminates in front).
    pub listen: Vec<String>,
    /// Address of the admin listener (`/healthz`, `/readyz`, `/metrics`). Empty disables it.
    pub admin_listen: String,
    /// Worker threads of the proxy service.
    pub threads: usize,
    /// Seconds Pingora keeps serving in-flight requests after SIGTERM/SIGQUIT before stopping
    /// its runtimes (Pingora's own default is 300 s; ours is short).
    pub grace_period_secs: u64,
    /// Seconds Pingora waits for runtimes to finish once the grace period is over.
    pub graceful_shutdown_timeout_secs: u64,
    /// PID file written by Pingora (needed for `-d` and zero-downtime upgrades).
    pub pid_file: String,
    /// Unix socket over which listening sockets are handed to a new process on upgrade (`-u`).
    pub upgrade_sock: String,
    /// The origin the edge proxies admitted requests to.
    pub origin: OriginConfig,
    /// Token transports and the verifier's time policy.
    pub token: TokenConfig,
    /// The master switch of token validation (benchmarks only; see [`ValidationConfig`]).
    pub validation: ValidationConfig,
    /// Cookie mode.
    pub cookie: CookieConfig,
    /// HLS playlist and DASH MPD rewriting for query-string tokens.
    pub playlist: PlaylistConfig,
    /// Client address and country.
    pub client: ClientConfig,
    /// CORS for web players.
    pub cors: CorsConfig,
    /// Keys and revocations.
    pub state: StateConfig,
    /// Follow a control plane's change log instead of a static state file (see
    /// [`crate::sync::SyncConfig`]). Absent: file mode.
    pub sync: Option<crate::sync::SyncConfig>,
    /// Denial diagnostics.
    pub diagnostics: DiagnosticsConfig,
    /// Access log.
    pub access_log: AccessLogConfig,
}

impl Default for EdgeConfig {
    fn default() -> EdgeConfig {
        EdgeConfig {
            listen: vec!["0.0.0.0:8080".into()],
            admin_listen: "127.0.0.1:9180".into(),
            threads: 2,
            grace_period_secs: 5,
            graceful_shutdown_timeout_secs: 5,
            pid_file: "/tmp/stile-edge.pid".into(),
            upgrade_sock: "/tmp/stile-edge-upgrade.sock".into(),
            origin: OriginConfig::default(),
            token: TokenConfig::default(),
            validation: ValidationConfig::default(),
            cookie: CookieConfig::default(),
            playlist: PlaylistConfig::default(),
            client: ClientConfig::default(),
            cors: CorsConfig::default(),
            state: StateConfig::default(),
            sync: None,
            diagnostics: DiagnosticsConfig::default(),
            access_log: AccessLogConfig::default(),
        }
    }
}

/// Where admitted requests go.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OriginConfig {
    /// `host:port` of the origin (plain HTTP). Resolved once at startup, never per request.
    pub address: String,
    /// `Host` header sent to the origin. Empty: the host part of `address`.
    pub host: String,
    /// TCP connect timeout, milliseconds.
    pub connect_timeout_ms: u64,
    /// Timeout for each read from the origin, milliseconds.
    pub read_timeout_ms: u64,
    /// Timeout for each write to the origin, milliseconds.
    pub write_timeout_ms: u64,
    /// How long an idle keep-alive connection to the origin is kept, seconds.
    pub idle_timeout_secs: u64,
    /// Idle keep-alive connections kept per proxy thread.
    pub keepalive_pool_size: usize,
}

impl Default for OriginConfig {
    fn default() -> OriginConfig {
        OriginConfig {
            address: "127.0.0.1:8000".into(),
            host: String::new(),
            connect_timeout_ms: 1_000,
            read_timeout_ms: 10_000,
            write_timeout_ms: 10_000,
            idle_timeout_secs: 60,
            keepalive_pool_size: 128,
        }
    }
}

/// Token transports and time policy.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenConfig {
    /// First path segment that marks a path-prefix token: `/<segment>/<token>/rest/of/path`.
    pub path_segment: String,
    /// Query parameter that carries a token.
    pub query_param: String,
    /// Clock-skew allowance applied to both ends of a token's validity window, seconds.
    pub leeway_secs: u32,
    /// What a country-bound token gets when the client's country is unknown: `deny` or `allow`.
    pub unknown_country: UnknownCountryConfig,
}

impl Default for TokenConfig {
    fn default() -> TokenConfig {
        TokenConfig {
            path_segment: "_st".into(),
            query_param: "st".into(),
            leeway_secs: stile_token::Policy::DEFAULT_LEEWAY_SECS,
            unknown_country: UnknownCountryConfig::Deny,
        }
    }
}

/// `token.unknown_country`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UnknownCountryConfig {
    /// Admit (fail open).
    Allow,
    /// Deny with reason `geo` (fail closed).
    #[default]
    Deny,
}

impl From<UnknownCountryConfig> for UnknownCountry {
    fn from(c: UnknownCountryConfig) -> UnknownCountry {
        match c {
            UnknownCountryConfig::Allow => UnknownCountry::Allow,
            UnknownCountryConfig::Deny => UnknownCountry::Deny,
        }
    }
}

/// The master switch of token validation.
///
/// Turning validation off makes the edge an open proxy for its origin: every request
/// is passed through as received (token still in it), with no verification, no cookie
/// and no playlist rewriting. It exists for one purpose — measuring what validation
/// costs (`scripts/bench-load`, variant `edge-off`). It must be spelled out twice to
/// take effect, and the edge logs a warning at startup when it is off.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ValidationConfig {
    /// Verify every request (the default). `false` needs `unsafe_acknowledge_open_proxy`.
    pub enabled: bool,
    /// Must be `true` for `enabled = false` to be accepted; refused otherwise.
    pub unsafe_acknowledge_open_proxy: bool,
}

impl Default for ValidationConfig {
    fn default() -> ValidationConfig {
        ValidationConfig { enabled: true, unsafe_acknowledge_open_proxy: false }
    }
}

/// Cookie mode: a cookie set when a manifest is admitted, so later requests pass with it alone.
///
/// Browsers send it only when the player page and the edge share a site (e.g.
/// `www.example.com` and `video.example.com`): third-party cookies are blocked
/// (`docs/player.md`).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CookieConfig {
    /// Accept tokens from the cookie and set it when a manifest is admitted by a path or query token.
    pub enabled: bool,
    /// Cookie name.
    pub name: String,
    /// Add the `Secure` attribute (turn off only for plain-HTTP development).
    pub secure: bool,
    /// `SameSite` attribute: `Lax` (default), `Strict` or `None` (needs `secure`).
    pub same_site: SameSite,
}

impl Default for CookieConfig {
    fn default() -> CookieConfig {
        CookieConfig { enabled: false, name: "stile".into(), secure: true, same_site: SameSite::Lax }
    }
}

/// `cookie.same_site`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum SameSite {
    /// Also sent on cross-site requests, where the browser still allows third-party
    /// cookies at all; browsers drop it without `Secure`.
    None,
    /// Sent on same-site requests (a player on `www.example.com`, the edge on
    /// `video.example.com`) and top-level navigations: every case where browsers send
    /// the cookie to a player at all.
    #[default]
    Lax,
    /// Same-site requests only.
    Strict,
}

impl SameSite {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::None => "None",
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
        }
    }
}

/// Manifest rewriting for query tokens: HLS playlists ([`crate::playlist`]) and DASH MPDs ([`crate::mpd`]).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlaylistConfig {
    /// Rewrite `.m3u8` playlists and `.mpd` MPDs admitted by a query token so every URL
    /// a player derives from them carries it.
    pub rewrite: bool,
    /// Largest playlist or MPD rewritten, bytes; larger ones pass through unmodified.
    pub max_bytes: usize,
}

impl Default for PlaylistConfig {
    fn default() -> PlaylistConfig {
        PlaylistConfig { rewrite: true, max_bytes: 4 << 20 }
    }
}

/// Client address and country.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// Trusted proxy hops in front of the edge. 0: the socket peer is the client and
    /// `X-Forwarded-For` is ignored; n: the client is the n-th address from the right.
    pub trusted_hops: usize,
    /// Path to a MaxMind country or city database (`.mmdb`). Empty: no database.
    pub geoip_db: String,
    /// Header carrying an ISO 3166 alpha-2 country set by a trusted layer in front
    /// (e.g. `cf-ipcountry`). Empty: none. When set, it is used instead of the database.
    pub country_header: String,
}

/// CORS for web players (`docs/player.md`; patterns in [`crate::cors`]).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    /// Page origins allowed to read responses: `*` alone (any origin, never with
    /// credentials), or origin patterns — `https://player.example`, `http://localhost:*`
    /// (any port), `https://*.example.com` (any subdomain). Empty: no CORS headers, and
    /// OPTIONS needs a token like any request.
    pub allowed_origins: Vec<String>,
    /// Send `Access-Control-Allow-Credentials: true` to the listed origins, so their
    /// players may send cookies (cookie mode). Refused together with `*`.
    pub allow_credentials: bool,
    /// Response headers scripts may read besides the CORS-safelisted ones; `x-stile-reason`
    /// is exposed whenever `diagnostics.reason_header` is on.
    pub expose_headers: Vec<String>,
    /// `Access-Control-Max-Age` of preflight answers, seconds.
    pub max_age_secs: u32,
}

impl Default for CorsConfig {
    fn default() -> CorsConfig {
        CorsConfig {
            allowed_origins: Vec::new(),
            allow_credentials: false,
            expose_headers: Vec::new(),
            max_age_secs: 600,
        }
    }
}

/// Keys and revocations.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateConfig {
    /// JSON state file (keys and revocations; format in `docs/edge.md`). Required in
    /// file mode; with `[sync]` it is the optional cache of the applied state, which
    /// the edge writes itself.
    pub file: PathBuf,
    /// How often the file is checked for changes, milliseconds (SIGHUP reloads at once).
    pub poll_interval_ms: u64,
    /// Age after which the state counts as stale, seconds; 0 = never.
    pub max_age_secs: u64,
    /// What a stale state does: `serve` (keep admitting) or `deny` (reason `stale_state`).
    pub stale_policy: StalePolicy,
}

impl Default for StateConfig {
    fn default() -> StateConfig {
        StateConfig { file: PathBuf::new(), poll_interval_ms: 1_000, max_age_secs: 0, stale_policy: StalePolicy::Serve }
    }
}

impl StateConfig {
    /// The age, seconds, past which a state denies every request (`stale_state`):
    /// `max_age_secs` when it is set and `stale_policy = "deny"`, else none.
    pub fn deny_when_older_than(&self) -> Option<u64> {
        (self.max_age_secs > 0 && self.stale_policy == StalePolicy::Deny).then_some(self.max_age_secs)
    }
}

/// `state.stale_policy`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StalePolicy {
    /// Keep serving with the last state.
    #[default]
    Serve,
    /// Fail closed with reason `stale_state`.
    Deny,
}

/// Denial diagnostics.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiagnosticsConfig {
    /// Return the reason code in an `x-stile-reason` header on denials.
    pub reason_header: bool,
}

/// Access log.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessLogConfig {
    /// Emit one JSON event per request on target `stile::access`.
    pub enabled: bool,
}

impl Default for AccessLogConfig {
    fn default() -> AccessLogConfig {
        AccessLogConfig { enabled: true }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this struct.
    #[error("invalid configuration in {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML error, with line and column.
        source: Box<toml::de::Error>,
    },
    /// A field has a value the edge cannot run with.
    #[error("invalid configuration: {field}: {message}")]
    Invalid {
        /// The dotted field name.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl EdgeConfig {
    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> Result<EdgeConfig, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let config: EdgeConfig =
            toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.to_owned(), source: Box::new(e) })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every field the type system cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, message: &str| Err(ConfigError::Invalid { field, message: message.to_owned() });
        if self.listen.is_empty() {
            return bad("listen", "at least one address is required");
        }
        for l in &self.listen {
            if l.parse::<SocketAddr>().is_err() {
                return bad("listen", &format!("{l:?} is not an ip:port socket address"));
            }
        }
        if !self.admin_listen.is_empty() && self.admin_listen.parse::<SocketAddr>().is_err() {
            return bad("admin_listen", &format!("{:?} is not an ip:port socket address", self.admin_listen));
        }
        if self.threads == 0 {
            return bad("threads", "must be at least 1");
        }
        if self.origin.address.is_empty() {
            return bad("origin.address", "required");
        }
        if self.origin.connect_timeout_ms == 0 || self.origin.read_timeout_ms == 0 || self.origin.write_timeout_ms == 0
        {
            return bad("origin", "timeouts must be greater than zero");
        }
        if !is_token_name(&self.token.path_segment) {
            return bad("token.path_segment", "must be a non-empty name of [A-Za-z0-9_-]");
        }
        if !is_token_name(&self.token.query_param) {
            return bad("token.query_param", "must be a non-empty name of [A-Za-z0-9_-]");
        }
        if self.token.leeway_secs > stile_token::Policy::MAX_LEEWAY_SECS {
            return bad("token.leeway_secs", "more than 300 s of leeway defeats short-lived links");
        }
        if !is_token_name(&self.cookie.name) {
            return bad("cookie.name", "must be a non-empty name of [A-Za-z0-9_-]");
        }
        if self.cookie.same_site == SameSite::None && !self.cookie.secure {
            return bad(
                "cookie.same_site",
                "\"None\" needs cookie.secure = true: browsers drop SameSite=None cookies without Secure \
                 (use \"Lax\" for plain-HTTP setups)",
            );
        }
        if self.playlist.max_bytes == 0 {
            return bad("playlist.max_bytes", "must be greater than zero");
        }
        let cors = &self.cors;
        if let Err(e) = crate::cors::Cors::new(
            &cors.allowed_origins,
            cors.allow_credentials,
            &cors.expose_headers,
            cors.max_age_secs,
        ) {
            let field = match e {
                crate::cors::PatternError::HeaderName(_) => "cors.expose_headers",
                _ => "cors.allowed_origins",
            };
            return bad(field, &e.to_string());
        }
        if !self.client.country_header.is_empty()
            && http::HeaderName::from_bytes(self.client.country_header.as_bytes()).is_err()
        {
            return bad("client.country_header", "not a valid header name");
        }
        if !self.validation.enabled && !self.validation.unsafe_acknowledge_open_proxy {
            return bad(
                "validation.enabled",
                "false turns the edge into an open proxy; set validation.unsafe_acknowledge_open_proxy = true \
                 as well if that is really wanted (benchmarks only)",
            );
        }
        if let Some(sync) = &self.sync {
            if let Err((field, message)) = sync.check() {
                return Err(ConfigError::Invalid { field, message });
            }
        } else if self.state.file.as_os_str().is_empty() {
            return bad("state.file", "required (or a [sync] table)");
        }
        if self.state.poll_interval_ms == 0 {
            return bad("state.poll_interval_ms", "must be greater than zero");
        }
        Ok(())
    }

    /// Resolves the origin address once, off the request path.
    pub fn resolve_origin(&self) -> Result<SocketAddr, ConfigError> {
        let addr = &self.origin.address;
        addr.to_socket_addrs()
            .map_err(|e| ConfigError::Invalid {
                field: "origin.address",
                message: format!("cannot resolve {addr:?}: {e}"),
            })?
            .next()
            .ok_or_else(|| ConfigError::Invalid {
                field: "origin.address",
                message: format!("{addr:?} resolves to nothing"),
            })
    }

    /// The `Host` header sent upstream.
    pub fn origin_host(&self) -> String {
        if !self.origin.host.is_empty() {
            return self.origin.host.clone();
        }
        let a = &self.origin.address;
        // `host:port` or `[v6]:port`: keep the host part.
        match a.rsplit_once(':') {
            Some((h, _)) => h.to_owned(),
            None => a.clone(),
        }
    }
}

fn is_token_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<EdgeConfig, String> {
        let c: EdgeConfig = toml::from_str(s).map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = parse("[state]\nfile = \"/tmp/s.json\"\n").unwrap();
        assert_eq!(c.token.query_param, "st");
        assert_eq!(c.token.path_segment, "_st");
        assert_eq!(c.token.leeway_secs, 5);
        assert_eq!(c.cookie.name, "stile");
        assert!(c.cookie.secure);
        assert_eq!(c.cookie.same_site, SameSite::Lax);
        assert!(c.cors.allowed_origins.is_empty() && !c.cors.allow_credentials);
        assert_eq!(c.playlist.max_bytes, 4 << 20);
        assert_eq!(c.grace_period_secs, 5);
        assert_eq!(c.origin_host(), "127.0.0.1");
        assert!(c.validation.enabled, "validation is on unless explicitly turned off");
    }

    #[test]
    fn validation_off_needs_the_acknowledgement() {
        let c = parse("[validation]\nenabled = false\nunsafe_acknowledge_open_proxy = true\n[state]\nfile='x'");
        assert!(!c.unwrap().validation.enabled);
        let c = parse("[validation]\nunsafe_acknowledge_open_proxy = true\n[state]\nfile='x'").unwrap();
        assert!(c.validation.enabled, "the acknowledgement alone changes nothing");
    }

    #[test]
    fn bad_configs_are_refused_with_the_field_named() {
        for (toml, needle) in [
            ("", "state.file"),
            ("listen = []\n[state]\nfile='x'", "listen"),
            ("listen = ['nope']\n[state]\nfile='x'", "listen"),
            ("threads = 0\n[state]\nfile='x'", "threads"),
            ("[token]\nquery_param = 'a b'\n[state]\nfile='x'", "token.query_param"),
            ("[token]\nleeway_secs = 3600\n[state]\nfile='x'", "leeway"),
            ("[cors]\nallowed_origins = ['ftp://x']\n[state]\nfile='x'", "cors"),
            ("[cors]\nallowed_origins = ['*']\nallow_credentials = true\n[state]\nfile='x'", "cors.allowed_origins"),
            ("[cors]\nallowed_origins = ['https://a.example/']\n[state]\nfile='x'", "cors.allowed_origins"),
            ("[cors]\nexpose_headers = ['a b']\n[state]\nfile='x'", "cors.expose_headers"),
            ("[cookie]\nsecure = false\nsame_site = 'None'\n[state]\nfile='x'", "cookie.same_site"),
            ("typo = 1\n[state]\nfile='x'", "unknown field"),
            ("[token]\nunknown_country = 'maybe'\n[state]\nfile='x'", "unknown variant"),
            ("[validation]\nenabled = false\n[state]\nfile='x'", "validation.enabled"),
        ] {
            let err = parse(toml).unwrap_err();
            assert!(err.contains(needle), "{toml:?}: {err}");
        }
    }
}
