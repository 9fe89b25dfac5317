//! # stile-edge
//!
//! The Stile edge: a Pingora proxy in front of an HTTP origin that verifies every
//! manifest and segment request — token signature, time window, path scope, IP,
//! country, revocations — before proxying it, and keeps tokens away from the
//! origin. `docs/edge.md` is the operator's guide; the phase chart is in
//! `proxy.rs` and ARCHITECTURE.md walks one request through the files.
//!
//! Code map (private modules by file name):
//! - `config.rs` — the typed TOML configuration, with defaults and validation (types re-exported here);
//! - [`cors`] — CORS origin patterns and the headers a page's origin gets;
//! - [`transport`] — finding the token (path prefix, query, cookie) and the token-free upstream target;
//! - [`validate`] — the validation pipeline, free of Pingora, with a trace for `stile explain`;
//! - [`revocation`], [`state`] — the revocation set, key ring, and the state-file codec;
//! - `reload.rs` — file mode: re-reading the state file on SIGHUP or change;
//! - `geo.rs` — client address and country;
//! - [`playlist`], [`mpd`] — the HLS playlist and DASH MPD rewriters;
//! - [`cache`] — the object cache (storage, token-free key, freshness, purges);
//! - `tap.rs` — the request line as the client sent it (a tap on each HTTP/1 connection);
//! - `intake.rs` — the proxy service behind the tap, and the requests Pingora refuses;
//! - `proxy.rs` — the Pingora `ProxyHttp` service;
//! - [`playback`] — per-share playback outcomes: the bounded session tracker and VOD segment positions;
//! - [`beacon`] — player beacons: the body parser and the edge-wide and per-session limits;
//! - `admin.rs`, `metrics.rs` — `/healthz`, `/readyz`, `/metrics`;
//! - [`sync`] — the sync client following the control plane (the only module that sees `stile.v1`);
//!   with the `test-util` feature, `sync::EmbeddedSync` runs it without the proxy (the fleet simulator);
//! - `tls/` — viewer TLS: certificates by SNI, reload, the handshake front, the HTTPS redirect;
//! - `origin/` — origin pools: routing by prefix, health checks, failover and retries;
//! - `server.rs` — assembling and running it all ([`Edge`]);
//! - [`clock`] — the one reader of wall-clock time.
//!
//! Invariants: no token or key is ever logged or sent upstream; what is admitted is
//! the canonical path the origin is asked for; state is read lock-free per request.

#![forbid(unsafe_code)]

// Public modules are the ones other crates use: `stile explain` (cli) runs the
// edge's own transport, state, revocation and validation code; the cli and the
// fault tests embed the edge with an injected clock; the benches and the fuzz
// targets drive the validator, the revocation set, the playlist and MPD rewriters, the
// beacon parser and the sync model directly; `stile dev` checks `--allow-origin` with `cors`;
// `foreign` holds the types the public state file and configuration name.
// Everything else is private, its types re-exported where a public signature
// needs them.
mod admin;
pub mod beacon;
pub mod cache;
pub mod clock;
mod config;
pub mod cors;
mod fetch;
pub mod foreign;
mod geo;
mod intake;
mod metrics;
pub mod mpd;
pub mod mpd_positions;
mod origin;
pub mod playback;
pub mod playlist;
mod proxy;
mod reload;
pub mod revocation;
mod server;
pub mod state;
pub mod sync;
mod tap;
mod tls;
pub mod transport;
pub mod validate;
pub mod verified;

pub use cache::{CacheConfig, TtlConfig};
pub use config::{
    AccessLogConfig, BeaconConfig, CertificateConfig, ClientConfig, ConfigError, CookieConfig, CorsConfig,
    DiagnosticsConfig, EdgeConfig, HealthCheckConfig, OriginConfig, OutcomesConfig, PassiveHealthConfig,
    PlaylistConfig, PoolConfig, RetryConfig, SameSite, ServerConfig, StalePolicy, StateConfig, TlsConfig, TlsVersion,
    TokenConfig, UnknownCountryConfig, ValidationConfig,
};
pub use geo::GeoError;
pub use metrics::Metrics;
pub use server::{Edge, StartError, StartOptions};
pub use tls::{CertError, TlsError};
