//! # stile-control
//!
//! Stile's gRPC control plane (`stile.v1`): mints signed links under policy
//! templates behind the publish gate, keeps signing keys, a durable versioned
//! change log of revocations and key changes, assets and an audit log, and
//! authenticates every call with a bearer API key and a role.
//!
//! Entry points: [`run`] (what `stile control` calls) and [`ControlPlane`]
//! (tests inject a clock or a store). Layout:
//!
//! - [`config`]: the TOML configuration;
//! - [`auth`]: API keys, roles and the per-RPC role table;
//! - `mint`: claims and URLs for one link (pure);
//! - `service`: one module per gRPC service;
//! - [`store`]: the storage trait and the redb backend;
//! - `sync`: the edge sync stream; `fleet`: the registry of connected edges;
//! - [`model`]: domain types; `convert`: their protobuf forms;
//! - [`error`]: errors and their gRPC status codes;
//! - [`metrics`]: Prometheus metrics and the admin listener (`/healthz`, `/readyz`, `/metrics`);
//! - [`clock`]: the only reader of wall-clock time.
//!
//! Nothing here logs a token, an API key or a signing key.

pub mod auth;
pub mod clock;
pub mod config;
mod convert;
pub mod error;
mod fleet;
mod locks;
pub mod metrics;
mod mint;
pub mod model;
mod policy;
mod server;
mod service;
pub mod store;
mod sync;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{Config, ConfigError};
pub use server::{ControlPlane, ServeError, run};
