//! # stile-control
//!
//! Stile's gRPC control plane (`stile.v1`): mints signed links under policy
//! templates behind the publish gate, keeps signing keys, a durable versioned
//! change log of revocations and key changes, assets and an audit log, and
//! authenticates every call with a bearer API key and a role.
//!
//! Entry points: [`ControlPlane::open`] and [`ControlPlane::serve_with_admin`]
//! (what `stile control` calls), [`ControlPlane::with_store`] (tests and
//! `stile dev` inject a store or a clock), and [`run`] (open and serve gRPC
//! only). Modules, lowest layer first (each uses only those above it):
//!
//! - `clock`: the only reader of wall-clock time; `random`: the only reader of
//!   the OS random source; `locks`: poisoned-lock recovery;
//! - [`model`]: domain types (assets, keys, revocations, the change log, roles);
//! - `policy`: checks of policy values (countries, base URLs);
//! - [`store`]: the `Store` trait, the `ReplicaBus` trait, the redb and Redis
//!   backends, and `store::notify` (wakes the sync sessions on every commit);
//! - [`config`]: the TOML configuration; `error`: errors and their gRPC codes;
//! - [`auth`]: API keys, roles and the per-RPC role table, the trail of denied
//!   calls; `guard`: which denials are logged and audited, per-source back-off;
//!   `identity`: the edge ids an edge key may announce, id patterns;
//! - `mint`: claims and URLs for one link, pure; `convert`: domain ↔ protobuf;
//!   [`acks`]: what one sync stream offered and what its ACKs may say, pure
//!   (public for the fuzz target); `confirm`: what a `--wait` can vouch for
//!   (expected edges, verdict), pure;
//! - `signing`: the signing keys in memory; `fleet`: connected edges, here and
//!   on the other replicas; `metrics`: Prometheus metrics and the RPC layer;
//! - `sync`: the edge sync sessions; `service`: one module per gRPC service;
//! - [`tls`]: gRPC over TLS (`[tls]`), client certificate identities, the
//!   plaintext warning;
//! - `admin`: `/healthz`, `/readyz`, `/metrics`; `server`: wiring and serving.
//!
//! Nothing here logs a token, an API key or a signing key.

pub mod acks;
mod admin;
pub mod auth;
mod chunks;
mod clock;
pub mod config;
mod confirm;
mod convert;
mod error;
mod fleet;
mod guard;
mod identity;
mod locks;
mod metrics;
mod mint;
pub mod model;
mod policy;
mod random;
mod server;
mod service;
mod signing;
pub mod store;
mod sync;
pub mod tls;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{Config, ConfigError};
pub use server::{ControlPlane, ServeError, run};
