//! # stile-edge
//!
//! The Stile edge: a Pingora proxy in front of an HTTP origin that verifies every
//! manifest and segment request — token signature, time window, path scope, IP,
//! country, revocations — before proxying it, and keeps tokens away from the
//! origin. `docs/edge.md` is the operator's guide; the phases are in [`proxy`].
//!
//! Code map:
//! - [`config`] — the typed TOML configuration, with defaults and validation;
//! - [`transport`] — finding the token (path prefix, query, cookie) and the token-free upstream target;
//! - [`validate`] — the validation pipeline, free of Pingora;
//! - [`revocation`], [`state`] — the revocation set, key ring, and the state file they load from;
//! - [`geo`] — client address and country;
//! - [`playlist`] — the HLS playlist rewriter;
//! - [`proxy`] — the Pingora `ProxyHttp` service;
//! - [`admin`], [`metrics`] — `/healthz`, `/readyz`, `/metrics`;
//! - [`sync`] — the sync client following the control plane (the only module that sees `stile.v1`);
//! - [`server`] — assembling and running it all;
//! - [`clock`] — the one reader of wall-clock time.
//!
//! Invariants: no token or key is ever logged or sent upstream; what is admitted is
//! the canonical path the origin is asked for; state is read lock-free per request.

#![forbid(unsafe_code)]

pub mod admin;
pub mod clock;
pub mod config;
pub mod geo;
pub mod metrics;
pub mod playlist;
pub mod proxy;
pub mod revocation;
pub mod server;
pub mod state;
pub mod sync;
pub mod transport;
pub mod validate;

pub use config::EdgeConfig;
pub use server::{Edge, StartError, StartOptions};
