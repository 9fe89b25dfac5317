//! The edge's configuration: one typed struct read from TOML, a documented
//! default for every field (mirrored in `docs/edge.md`), and [`EdgeConfig::validate`],
//! which rejects anything the edge could not run with before a port is bound.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use stile_token::UnknownCountry;

/// The whole edge configuration (`stile edge --config FILE`).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeConfig {
    /// Addresses of the plain-HTTP listeners (for a TLS terminator in front, or redirecting
    /// to HTTPS with `tls.redirect_http`). May be empty when `tls.listen` is not.
    pub listen: Vec<String>,
    /// Address of the admin listener (`/healthz`, `/readyz`, `/metrics`). Empty disables it.
    pub admin_listen: String,
    /// Worker threads of the proxy service.
    pub threads: usize,
    /// How the worker threads are scheduled: `true` is one multi-threaded tokio runtime whose
    /// threads steal each other's tasks (Pingora's default); `false` is one single-threaded
    /// runtime per thread, cheaper per request (measured in BENCHMARKS.md, "Per-request cost")
    /// but each connection stays on the thread that accepted it.
    pub work_stealing: bool,
    /// Bytes of the per-connection write buffer on the viewer listeners (plain and TLS). A
    /// small response whose header and body fit goes out in one `send` instead of two
    /// (Pingora's default is 1,460 bytes, one TCP segment). Larger writes bypass the buffer.
    pub write_buffer_bytes: usize,
    /// Seconds Pingora keeps serving in-flight requests after SIGTERM/SIGQUIT before stopping
    /// its runtimes (Pingora's own default is 300 s; ours is short).
    pub grace_period_secs: u64,
    /// Seconds Pingora waits for runtimes to finish once the grace period is over.
    pub graceful_shutdown_timeout_secs: u64,
    /// PID file written by Pingora (needed for `-d` and zero-downtime upgrades).
    pub pid_file: String,
    /// Unix socket over which listening sockets are handed to a new process on upgrade (`-u`).
    pub upgrade_sock: String,
    /// The origins the edge proxies admitted requests to: one address, or pools of
    /// health-checked origins routed by path prefix.
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
    /// Viewer TLS: HTTPS listeners, certificates chosen by SNI, HTTP/2.
    pub tls: TlsConfig,
    /// The object cache (see [`crate::cache::CacheConfig`]).
    pub cache: crate::cache::CacheConfig,
    /// Other vendors' signed links accepted while an operator migrates (`[[foreign]]`,
    /// see [`crate::foreign::ForeignConfig`] and docs/migration.md). Empty: none.
    pub foreign: Vec<crate::foreign::ForeignConfig>,
    /// Per-share playback outcomes: the session tracker (`[outcomes]`, see [`OutcomesConfig`]).
    pub outcomes: OutcomesConfig,
    /// Player beacons: the embed kit's startup, rebuffering and error reports (`[beacon]`,
    /// see [`BeaconConfig`]).
    pub beacon: BeaconConfig,
}

impl Default for EdgeConfig {
    fn default() -> EdgeConfig {
        EdgeConfig {
            listen: vec!["0.0.0.0:8080".into()],
            admin_listen: "127.0.0.1:9180".into(),
            threads: 2,
            work_stealing: false,
            write_buffer_bytes: 16 * 1024,
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
            tls: TlsConfig::default(),
            cache: crate::cache::CacheConfig::default(),
            foreign: Vec::new(),
            outcomes: OutcomesConfig::default(),
            beacon: BeaconConfig::default(),
        }
    }
}

/// Per-share playback outcomes (`[outcomes]`, `docs/sessions.md` "Outcomes"): the
/// bounded table of playback sessions and the VOD segment positions behind the
/// `stile_edge_playback_*` metrics and the `session.ended` log event.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutcomesConfig {
    /// Track playback sessions. Off: no `stile_edge_playback_*` counts, no `session.ended`.
    pub enabled: bool,
    /// Most sessions tracked at once (about 100 bytes each, reserved at start). When
    /// full, new sessions are served but not tracked (`stile_edge_playback_untracked_total`).
    pub max_sessions: usize,
    /// Slots of the VOD segment table (where each segment of a VOD HLS playlist ends;
    /// about 24 bytes each, reserved at start). A colliding segment replaces the older.
    pub max_segments: usize,
    /// How often the idle sweep ends sessions not seen for their policy's `idle_secs`, ms.
    pub sweep_interval_ms: u64,
}

impl Default for OutcomesConfig {
    fn default() -> OutcomesConfig {
        OutcomesConfig { enabled: true, max_sessions: 100_000, max_segments: 65_536, sweep_interval_ms: 5_000 }
    }
}

/// Player beacons (`[beacon]`, `docs/edge.md` "Player beacons"): `POST`s to
/// `<asset directory>/_stile_beacon` carrying the player's credential, counted per
/// share channel (`stile_edge_player_*`), never proxied.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BeaconConfig {
    /// Accept beacons. Off: the edge answers beacon URLs `404` itself (never the origin).
    pub enabled: bool,
    /// Beacons accepted per playback session (per link, before a session exists) per
    /// minute; past it, `429`. 0: no per-session budget (the edge-wide one still applies).
    pub per_session_per_minute: u32,
    /// Slots of the per-session budget table (8 bytes each, reserved at start).
    /// Sessions whose slots collide share one budget.
    pub budget_slots: usize,
    /// Beacons the whole edge accepts per second (a token bucket taken before the
    /// credential is checked); past it, `429`.
    pub rate_per_sec: u32,
    /// The bucket's size: the most beacons accepted at once after a quiet spell.
    pub burst: u32,
}

impl Default for BeaconConfig {
    fn default() -> BeaconConfig {
        BeaconConfig {
            enabled: true,
            per_session_per_minute: 12,
            budget_slots: 65_536,
            rate_per_sec: 1_000,
            burst: 2_000,
        }
    }
}

/// Most sessions `[outcomes]` may track (about 1.6 GB).
pub(crate) const MAX_TRACKED_SESSIONS: usize = 16 << 20;

/// Where admitted requests go (`[origin]`).
///
/// Either the one-origin shorthand (`address`, `host`, `tls`, `sni`, `ca_file`: a pool
/// named `default` serving every path, its one origin named `default`), or
/// `[[origin.pools]]`. The timeouts, keep-alive, health, retry and resolution settings
/// here apply to every origin of every pool.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OriginConfig {
    /// `host:port` of the one origin (shorthand). Empty: `127.0.0.1:8000` when no
    /// `[[origin.pools]]` are given; must be empty when they are.
    pub address: String,
    /// `Host` header sent to the one origin. Empty: the host part of `address`.
    pub host: String,
    /// Connect to the one origin over TLS (HTTPS), verifying its certificate.
    pub tls: bool,
    /// Name sent in SNI and verified against the one origin's certificate. Empty: the host part of `address`.
    pub sni: String,
    /// PEM file of the CA certificates the one origin's certificate must chain to. Empty: the system's.
    pub ca_file: PathBuf,
    /// TCP connect timeout (with the TLS handshake, for HTTPS origins), milliseconds.
    pub connect_timeout_ms: u64,
    /// Timeout for each read from the origin, milliseconds.
    pub read_timeout_ms: u64,
    /// Timeout for each write to the origin, milliseconds.
    pub write_timeout_ms: u64,
    /// How long an idle keep-alive connection to an origin is kept, seconds.
    pub idle_timeout_secs: u64,
    /// Idle keep-alive connections kept per worker thread, over all origins (each origin's
    /// connections are pooled and reused separately). Connections beyond it are closed
    /// after their request: with viewers on HTTP/2 (many concurrent streams each) a small
    /// pool makes the edge open a new origin connection per request.
    pub keepalive_pool_size: usize,
    /// How often origin host names are resolved again (off the request path), seconds.
    pub resolve_interval_secs: u64,
    /// Active health checks.
    pub health: HealthCheckConfig,
    /// Passive health: failures seen on real requests take an origin out for a while.
    pub passive: PassiveHealthConfig,
    /// Retries of idempotent requests on another origin of the pool.
    pub retry: RetryConfig,
    /// Plain `GET`s that the cache does not take (no body, no upgrade, no hop-by-hop
    /// field but `Connection: keep-alive|close`) go to the origin in one sequential
    /// exchange over the edge's own keep-alive pool instead of Pingora's proxy loop:
    /// the same filters, origin choice, retries and metrics, less CPU per request.
    /// `false`: every request through Pingora's proxy.
    pub fast_path: bool,
    /// Origin pools, each serving the requests under its path prefixes (`[[origin.pools]]`).
    pub pools: Vec<PoolConfig>,
}

impl Default for OriginConfig {
    fn default() -> OriginConfig {
        OriginConfig {
            address: String::new(),
            host: String::new(),
            tls: false,
            sni: String::new(),
            ca_file: PathBuf::new(),
            connect_timeout_ms: 1_000,
            read_timeout_ms: 10_000,
            write_timeout_ms: 10_000,
            idle_timeout_secs: 60,
            keepalive_pool_size: 1024,
            resolve_interval_secs: 30,
            health: HealthCheckConfig::default(),
            passive: PassiveHealthConfig::default(),
            retry: RetryConfig::default(),
            fast_path: true,
            pools: Vec::new(),
        }
    }
}

/// The origin address used when neither `origin.address` nor pools are configured.
pub(crate) const DEFAULT_ORIGIN: &str = "127.0.0.1:8000";

/// One origin pool (`[[origin.pools]]`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    /// The pool's name (metric label `pool`): `[A-Za-z0-9_.-]`, unique.
    pub name: String,
    /// Canonical path prefixes ending in `/` (`/` for every path). A request goes to the
    /// pool with the longest prefix of its canonical path; none: 404.
    pub prefixes: Vec<String>,
    /// The pool's origins (`[[origin.pools.servers]]`), at most 64.
    pub servers: Vec<ServerConfig>,
}

/// One origin of a pool (`[[origin.pools.servers]]`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// The origin's name (metric label `origin`): `[A-Za-z0-9_.-]`, unique in its pool.
    pub name: String,
    /// `host:port`. A host name is resolved at startup and every `origin.resolve_interval_secs`.
    pub address: String,
    /// `Host` header sent to this origin. Empty: the host part of `address`.
    pub host: String,
    /// Connect over TLS (HTTPS), verifying the certificate against `sni`.
    pub tls: bool,
    /// Name sent in SNI and verified against the certificate. Empty: the host part of `address`.
    pub sni: String,
    /// PEM file of the CA certificates this origin's certificate must chain to. Empty: the system's.
    pub ca_file: PathBuf,
}

/// Active health checks (`[origin.health]`): an HTTP GET to every origin.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// Path requested (`GET`, with the origin's `Host`). Empty: no active checks (origins are
    /// up unless passive health takes them out).
    pub path: String,
    /// Time between two checks of one origin, milliseconds.
    pub interval_ms: u64,
    /// Time a check may take (connect, TLS and response head), milliseconds.
    pub timeout_ms: u64,
    /// Consecutive passing checks (status 200–399) that bring a down origin back.
    pub healthy_threshold: u32,
    /// Consecutive failing checks that take an up origin out.
    pub unhealthy_threshold: u32,
}

impl Default for HealthCheckConfig {
    fn default() -> HealthCheckConfig {
        HealthCheckConfig {
            path: String::new(),
            interval_ms: 2_000,
            timeout_ms: 1_000,
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        }
    }
}

/// Passive health (`[origin.passive]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PassiveHealthConfig {
    /// Consecutive failed requests (connect error, error before the response head, or a 5xx)
    /// that take an origin out. 0: no passive health.
    pub failures: u32,
    /// How long such an origin stays out, seconds.
    pub down_secs: u64,
}

impl Default for PassiveHealthConfig {
    fn default() -> PassiveHealthConfig {
        PassiveHealthConfig { failures: 3, down_secs: 10 }
    }
}

/// Retries (`[origin.retry]`); `docs/edge.md` says exactly when a request is retried.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Further tries of one GET/HEAD request, each on another origin of its pool. 0: none.
    pub attempts: u32,
    /// Retry on a 5xx response (not only on connect errors and errors before the response head).
    pub on_5xx: bool,
    /// Retry budget: retries in flight may be at most this percentage of the pool's
    /// requests in flight ...
    pub budget_percent: u32,
    /// ... or this many, whichever is larger.
    pub budget_min: u32,
}

impl Default for RetryConfig {
    fn default() -> RetryConfig {
        RetryConfig { attempts: 2, on_5xx: true, budget_percent: 20, budget_min: 3 }
    }
}

/// Viewer TLS (`[tls]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Addresses of the HTTPS listeners (HTTP/1.1, and HTTP/2 by ALPN). Empty: no TLS.
    pub listen: Vec<String>,
    /// Certificates (`[[tls.certificates]]`), chosen by the client's SNI; the first is the
    /// default (no SNI, or a name no certificate covers).
    pub certificates: Vec<CertificateConfig>,
    /// Offer HTTP/2 by ALPN (`h2`, then `http/1.1`). `false`: HTTP/1.1 only.
    pub http2: bool,
    /// Lowest protocol version accepted: `"1.2"` or `"1.3"` (1.0 and 1.1 are never accepted).
    pub min_version: TlsVersion,
    /// Cipher suites, by IANA name, in preference order. Empty: all the edge supports
    /// (TLS 1.3 AES-GCM and ChaCha20-Poly1305; TLS 1.2 ECDHE with the same AEADs).
    pub cipher_suites: Vec<String>,
    /// Refuse handshakes whose SNI names a host no certificate covers (instead of
    /// answering with the default certificate).
    pub strict_sni: bool,
    /// Stateless session tickets for resumption (keys rotated every 6 hours).
    pub session_tickets: bool,
    /// Sessions kept in memory for resumption by session id (TLS 1.2) and stateful
    /// tickets (TLS 1.3). 0: none (with `session_tickets = false`, no resumption at all).
    pub session_cache_size: usize,
    /// Time a client has to complete the handshake, milliseconds.
    pub handshake_timeout_ms: u64,
    /// How often the certificate and key files are checked for changes, milliseconds.
    /// 0: only on SIGHUP.
    pub reload_poll_ms: u64,
    /// The plain listeners (`listen`) answer every request with a `308` to the same path
    /// and query over `https://` (except requests a trusted proxy marks
    /// `X-Forwarded-Proto: https`, with `client.trusted_hops` > 0).
    pub redirect_http: bool,
    /// Port in the redirect's `Location`. 0: the port of the first TLS listener (left out when 443).
    pub redirect_port: u16,
}

impl Default for TlsConfig {
    fn default() -> TlsConfig {
        TlsConfig {
            listen: Vec::new(),
            certificates: Vec::new(),
            http2: true,
            min_version: TlsVersion::V1_2,
            cipher_suites: Vec::new(),
            strict_sni: false,
            session_tickets: true,
            session_cache_size: 256,
            handshake_timeout_ms: 10_000,
            reload_poll_ms: 5_000,
            redirect_http: false,
            redirect_port: 0,
        }
    }
}

/// `tls.min_version`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    #[default]
    #[serde(rename = "1.2")]
    V1_2,
    /// TLS 1.3 only.
    #[serde(rename = "1.3")]
    V1_3,
}

/// One certificate (`[[tls.certificates]]`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CertificateConfig {
    /// PEM file: the certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM file: the private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key: PathBuf,
    /// Host names this certificate serves (`*.example.com` allowed); each must be covered by
    /// the certificate. Empty: every DNS name in its subjectAltName.
    pub names: Vec<String>,
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
    /// Entries of the verified-signature cache: Ed25519 tokens whose signature verified, so a
    /// viewer's next segment requests skip the signature check (expiry, scope, bindings,
    /// revocations and the key are still checked on every request). Each entry holds 64 bytes
    /// plus the map's bookkeeping (estimated at 150 bytes, not measured); 0 disables the cache.
    /// At most 16,777,216.
    pub verified_cache_entries: usize,
    /// Entries of the verified-session cache: playback session credentials whose link and
    /// session tag verified, so a viewer's next segment requests skip the credential's parse,
    /// key, signature and session tag (the session's times, scope, bindings, revocations and
    /// staleness are still checked on every request, and the key material must be unchanged).
    /// Each entry holds the parsed credential and its string, about 1.3 KiB; 0 disables the
    /// cache. At most 1,048,576.
    pub session_cache_entries: usize,
}

/// Largest `token.verified_cache_entries`.
pub(crate) const MAX_VERIFIED_CACHE_ENTRIES: usize = 1 << 24;
/// Largest `token.session_cache_entries` (about 1.3 GiB).
pub(crate) const MAX_SESSION_CACHE_ENTRIES: usize = 1 << 20;

impl Default for TokenConfig {
    fn default() -> TokenConfig {
        TokenConfig {
            path_segment: "_st".into(),
            query_param: "st".into(),
            leeway_secs: stile_token::Policy::DEFAULT_LEEWAY_SECS,
            unknown_country: UnknownCountryConfig::Deny,
            verified_cache_entries: 65_536,
            session_cache_entries: 16_384,
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
    pub(crate) fn deny_when_older_than(&self) -> Option<u64> {
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
    /// Return the reason code in an `x-stile-reason` header on denials, and the
    /// cache status in an `x-stile-cache` header on every answer the cache saw.
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
        if self.listen.is_empty() && self.tls.listen.is_empty() {
            return bad("listen", "at least one address is required (here or in tls.listen)");
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
        if !(1460..=1 << 20).contains(&self.write_buffer_bytes) {
            return bad("write_buffer_bytes", "must be between 1460 and 1048576");
        }
        if let Err((field, message)) = self.tls.check(&self.listen) {
            return Err(ConfigError::Invalid { field, message });
        }
        if let Err((field, message)) = self.origin.check() {
            return Err(ConfigError::Invalid { field, message });
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
        if self.token.verified_cache_entries > MAX_VERIFIED_CACHE_ENTRIES {
            return bad("token.verified_cache_entries", "at most 16777216 entries");
        }
        if self.token.session_cache_entries > MAX_SESSION_CACHE_ENTRIES {
            return bad("token.session_cache_entries", "at most 1048576 entries");
        }
        if self.outcomes.max_sessions == 0 || self.outcomes.max_sessions > MAX_TRACKED_SESSIONS {
            return bad("outcomes.max_sessions", "must be between 1 and 16777216");
        }
        if self.outcomes.max_segments == 0 || self.outcomes.max_segments > MAX_TRACKED_SESSIONS {
            return bad("outcomes.max_segments", "must be between 1 and 16777216");
        }
        if !(10..=3_600_000).contains(&self.outcomes.sweep_interval_ms) {
            return bad("outcomes.sweep_interval_ms", "must be between 10 and 3600000");
        }
        if self.beacon.per_session_per_minute > 600 {
            return bad("beacon.per_session_per_minute", "must be between 0 and 600");
        }
        if self.beacon.budget_slots == 0 || self.beacon.budget_slots > MAX_TRACKED_SESSIONS {
            return bad("beacon.budget_slots", "must be between 1 and 16777216");
        }
        if self.beacon.rate_per_sec == 0 || self.beacon.burst == 0 || self.beacon.burst > 1_000_000 {
            return bad("beacon.rate_per_sec", "rate_per_sec must be at least 1 and burst between 1 and 1000000");
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
        if let Err((field, message)) = self.cache.check() {
            return Err(ConfigError::Invalid { field, message });
        }
        if self.cache.key_query_params.contains(&self.token.query_param) {
            return bad("cache.key_query_params", "must not name the token's query parameter");
        }
        if self.state.poll_interval_ms == 0 {
            return bad("state.poll_interval_ms", "must be greater than zero");
        }
        if let Err((field, message)) = crate::foreign::ForeignGate::new(&self.foreign) {
            return Err(ConfigError::Invalid { field: "foreign", message: format!("{field}: {message}") });
        }
        Ok(())
    }
}

impl OriginConfig {
    /// The pools in force: `[[origin.pools]]`, or the one-origin shorthand as a pool
    /// named `default` with prefix `/` and one origin named `default`.
    pub(crate) fn effective_pools(&self) -> Vec<PoolConfig> {
        if !self.pools.is_empty() {
            return self.pools.clone();
        }
        let address = if self.address.is_empty() { DEFAULT_ORIGIN.to_owned() } else { self.address.clone() };
        vec![PoolConfig {
            name: "default".into(),
            prefixes: vec!["/".into()],
            servers: vec![ServerConfig {
                name: "default".into(),
                address,
                host: self.host.clone(),
                tls: self.tls,
                sni: self.sni.clone(),
                ca_file: self.ca_file.clone(),
            }],
        }]
    }

    fn check(&self) -> Result<(), (&'static str, String)> {
        let bad = |field, message: &str| Err((field, message.to_owned()));
        if !self.pools.is_empty()
            && (!self.address.is_empty() || !self.host.is_empty() || self.tls || !self.sni.is_empty())
        {
            return bad("origin.address", "give either the one-origin shorthand or [[origin.pools]], not both");
        }
        if self.connect_timeout_ms == 0 || self.read_timeout_ms == 0 || self.write_timeout_ms == 0 {
            return bad("origin", "timeouts must be greater than zero");
        }
        if self.resolve_interval_secs == 0 {
            return bad("origin.resolve_interval_secs", "must be greater than zero");
        }
        let h = &self.health;
        if !h.path.is_empty() {
            if !h.path.starts_with('/') || h.path.bytes().any(|b| b <= b' ' || b >= 0x7f) {
                return bad("origin.health.path", "must be an absolute path of printable ASCII");
            }
            if h.interval_ms == 0 || h.timeout_ms == 0 {
                return bad("origin.health", "interval_ms and timeout_ms must be greater than zero");
            }
            if h.healthy_threshold == 0 || h.unhealthy_threshold == 0 {
                return bad("origin.health", "thresholds must be at least 1");
            }
        }
        if self.passive.failures > 0 && self.passive.down_secs == 0 {
            return bad("origin.passive.down_secs", "must be greater than zero when passive.failures is set");
        }
        if self.retry.budget_percent > 100 {
            return bad("origin.retry.budget_percent", "at most 100");
        }
        let pools = self.effective_pools();
        let mut prefixes = std::collections::HashSet::new();
        for (i, pool) in pools.iter().enumerate() {
            if !is_label(&pool.name) || pools[..i].iter().any(|p| p.name == pool.name) {
                return bad(
                    "origin.pools.name",
                    &format!("{:?}: a unique name of [A-Za-z0-9_.-] is required", pool.name),
                );
            }
            if pool.prefixes.is_empty() {
                return bad("origin.pools.prefixes", &format!("pool {:?} has no prefix", pool.name));
            }
            for prefix in &pool.prefixes {
                let canonical = stile_token::canonicalize_path(prefix.as_bytes()).is_ok_and(|c| c == prefix.as_str());
                if !canonical || !prefix.ends_with('/') {
                    return bad(
                        "origin.pools.prefixes",
                        &format!("{prefix:?} must be a canonical path ending in / (e.g. \"/vod/\")"),
                    );
                }
                if !prefixes.insert(prefix.as_str()) {
                    return bad("origin.pools.prefixes", &format!("{prefix:?} is given to two pools"));
                }
            }
            if pool.servers.is_empty() || pool.servers.len() > 64 {
                return bad("origin.pools.servers", &format!("pool {:?} needs 1 to 64 servers", pool.name));
            }
            for (j, server) in pool.servers.iter().enumerate() {
                let who = format!("pool {:?}, server {:?}", pool.name, server.name);
                if !is_label(&server.name) || pool.servers[..j].iter().any(|s| s.name == server.name) {
                    return bad(
                        "origin.pools.servers.name",
                        &format!("{who}: a name of [A-Za-z0-9_.-] unique in the pool is required"),
                    );
                }
                if split_host_port(&server.address).is_none() {
                    return bad(
                        "origin.pools.servers.address",
                        &format!("{who}: {:?} is not host:port", server.address),
                    );
                }
                if !server.tls && (!server.sni.is_empty() || !server.ca_file.as_os_str().is_empty()) {
                    return bad("origin.pools.servers.tls", &format!("{who}: sni and ca_file need tls = true"));
                }
            }
        }
        Ok(())
    }
}

/// `host:port` → (host, port); the host may be a bracketed IPv6 address (returned without brackets).
pub(crate) fn split_host_port(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = match host.strip_prefix('[') {
        Some(h) => h.strip_suffix(']')?,
        None if host.contains(':') => return None,
        None => host,
    };
    (!host.is_empty()).then_some((host, port))
}

impl TlsConfig {
    fn check(&self, plain: &[String]) -> Result<(), (&'static str, String)> {
        let bad = |field, message: &str| Err((field, message.to_owned()));
        let mut addrs = Vec::new();
        for l in &self.listen {
            match l.parse::<SocketAddr>() {
                Ok(a) => addrs.push(a),
                Err(_) => return bad("tls.listen", &format!("{l:?} is not an ip:port socket address")),
            }
        }
        for p in plain.iter().filter_map(|p| p.parse::<SocketAddr>().ok()) {
            if addrs.iter().any(|t| {
                t.port() == p.port() && (t.ip() == p.ip() || t.ip().is_unspecified() || p.ip().is_unspecified())
            }) {
                return bad("tls.listen", &format!("{p} is both a plain and a TLS listener"));
            }
        }
        if self.listen.is_empty() {
            if !self.certificates.is_empty() {
                return bad("tls.certificates", "given, but tls.listen is empty");
            }
            if self.redirect_http {
                return bad("tls.redirect_http", "needs tls.listen");
            }
            return Ok(());
        }
        if self.certificates.is_empty() {
            return bad("tls.certificates", "at least one certificate is required with tls.listen");
        }
        for c in &self.certificates {
            if c.cert.as_os_str().is_empty() || c.key.as_os_str().is_empty() {
                return bad("tls.certificates", "each certificate needs cert and key files");
            }
        }
        if self.handshake_timeout_ms == 0 {
            return bad("tls.handshake_timeout_ms", "must be greater than zero");
        }
        if self.redirect_http && plain.is_empty() {
            return bad("tls.redirect_http", "needs a plain listener (listen) to redirect from");
        }
        Ok(())
    }
}

/// A metric label value taken from the configuration: short, and safe in any exposition.
fn is_label(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
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
        assert_eq!(c.origin.effective_pools()[0].servers[0].address, "127.0.0.1:8000");
        assert!(c.tls.listen.is_empty() && c.tls.http2);
        assert!(c.validation.enabled, "validation is on unless explicitly turned off");
        assert!(c.outcomes.enabled);
        assert_eq!(
            (c.outcomes.max_sessions, c.outcomes.max_segments, c.outcomes.sweep_interval_ms),
            (100_000, 65_536, 5_000)
        );
        let b = &c.beacon;
        assert!(b.enabled);
        assert_eq!((b.per_session_per_minute, b.budget_slots, b.rate_per_sec, b.burst), (12, 65_536, 1_000, 2_000));
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
            ("write_buffer_bytes = 1000\n[state]\nfile='x'", "write_buffer_bytes"),
            ("write_buffer_bytes = 2000000\n[state]\nfile='x'", "write_buffer_bytes"),
            ("[token]\nquery_param = 'a b'\n[state]\nfile='x'", "token.query_param"),
            ("[token]\nleeway_secs = 3600\n[state]\nfile='x'", "leeway"),
            ("[cors]\nallowed_origins = ['ftp://x']\n[state]\nfile='x'", "cors"),
            ("[cors]\nallowed_origins = ['*']\nallow_credentials = true\n[state]\nfile='x'", "cors.allowed_origins"),
            ("[cors]\nallowed_origins = ['https://a.example/']\n[state]\nfile='x'", "cors.allowed_origins"),
            ("[cors]\nexpose_headers = ['a b']\n[state]\nfile='x'", "cors.expose_headers"),
            ("[cookie]\nsecure = false\nsame_site = 'None'\n[state]\nfile='x'", "cookie.same_site"),
            ("[outcomes]\nmax_sessions = 0\n[state]\nfile='x'", "outcomes.max_sessions"),
            ("[outcomes]\nmax_segments = 99999999\n[state]\nfile='x'", "outcomes.max_segments"),
            ("[outcomes]\nsweep_interval_ms = 1\n[state]\nfile='x'", "outcomes.sweep_interval_ms"),
            ("[beacon]\nper_session_per_minute = 601\n[state]\nfile='x'", "beacon.per_session_per_minute"),
            ("[beacon]\nbudget_slots = 0\n[state]\nfile='x'", "beacon.budget_slots"),
            ("[beacon]\nrate_per_sec = 0\n[state]\nfile='x'", "beacon.rate_per_sec"),
            ("typo = 1\n[state]\nfile='x'", "unknown field"),
            ("[token]\nunknown_country = 'maybe'\n[state]\nfile='x'", "unknown variant"),
            ("[validation]\nenabled = false\n[state]\nfile='x'", "validation.enabled"),
            ("listen = []\n[state]\nfile='x'", "listen"),
            ("[tls]\nlisten = ['127.0.0.1:8443']\n[state]\nfile='x'", "tls.certificates"),
            ("[tls]\nlisten = ['127.0.0.1:8080']\n[[tls.certificates]]\ncert='c'\nkey='k'\n[state]\nfile='x'", "both"),
            ("[[tls.certificates]]\ncert='c'\nkey='k'\n[state]\nfile='x'", "tls.listen is empty"),
            ("[tls]\nredirect_http = true\n[state]\nfile='x'", "tls.redirect_http"),
            ("[tls]\nmin_version = '1.1'\n[state]\nfile='x'", "unknown variant"),
            ("[origin]\naddress = 'a:1'\n[[origin.pools]]\nname='p'\nprefixes=['/']\n[state]\nfile='x'", "not both"),
            (
                "[[origin.pools]]\nname='p'\nprefixes=['/vod']\n[[origin.pools.servers]]\nname='s'\naddress='h:1'\n[state]\nfile='x'",
                "ending in /",
            ),
            (
                "[[origin.pools]]\nname='p'\nprefixes=['/a/../b/']\n[[origin.pools.servers]]\nname='s'\naddress='h:1'\n[state]\nfile='x'",
                "canonical",
            ),
            ("[[origin.pools]]\nname='p'\nprefixes=['/']\n[state]\nfile='x'", "1 to 64"),
            (
                "[[origin.pools]]\nname='p'\nprefixes=['/']\n[[origin.pools.servers]]\nname='s'\naddress='nohostport'\n[state]\nfile='x'",
                "host:port",
            ),
            (
                "[[origin.pools]]\nname='p'\nprefixes=['/']\n[[origin.pools.servers]]\nname='s'\naddress='h:1'\nsni='x'\n[state]\nfile='x'",
                "need tls",
            ),
            (
                "[[origin.pools]]\nname='a b'\nprefixes=['/']\n[[origin.pools.servers]]\nname='s'\naddress='h:1'\n[state]\nfile='x'",
                "origin.pools.name",
            ),
            (
                "[[origin.pools]]\nname='p'\nprefixes=['/']\n[[origin.pools.servers]]\nname='s'\naddress='h:1'\n[[origin.pools]]\nname='q'\nprefixes=['/']\n[[origin.pools.servers]]\nname='s'\naddress='h:1'\n[state]\nfile='x'",
                "two pools",
            ),
            ("[origin.health]\npath = 'health'\n[state]\nfile='x'", "origin.health.path"),
            ("[origin.retry]\nbudget_percent = 101\n[state]\nfile='x'", "budget_percent"),
            ("[cache]\nenabled = true\nkey_query_params = ['st']\n[state]\nfile='x'", "cache.key_query_params"),
            ("[cache]\nenabled = true\nkey_query_params = ['a&b']\n[state]\nfile='x'", "cache.key_query_params"),
            ("[cache]\nenabled = true\nmemory_bytes = 10\n[state]\nfile='x'", "cache.memory_bytes"),
            ("[cache]\nenabled = true\ndisk_path = 'rel'\n[state]\nfile='x'", "cache.disk_path"),
            ("[cache]\nenabled = true\nmax_object_bytes = 5368709120\n[state]\nfile='x'", "cache.max_object_bytes"),
            ("[cache]\nenabled = true\nlock_timeout_ms = 0\n[state]\nfile='x'", "cache.lock_timeout_ms"),
            ("[cache.ttl]\nsegment = 1\n[state]\nfile='x'", "unknown field"),
        ] {
            let err = parse(toml).unwrap_err();
            assert!(err.contains(needle), "{toml:?}: {err}");
        }
    }
}
