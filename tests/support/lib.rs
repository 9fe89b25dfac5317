//! Test support shared by the workspace's tests: real processes and servers on
//! loopback, and the clients that talk to them. Every wait is bounded; every
//! server started here is stopped when its handle drops.
//!
//! Always available: [`net`] (free ports, a raw HTTP/1.1 client, metrics
//! scraping), [`process`] (the `stile` binary, bounded waits), [`token`] (the
//! test key, minting, state files), [`media`] (ffmpeg-made HLS/DASH), [`edge`]
//! (a `stile edge` process, a file origin, and [`edge::EdgeToml`], the
//! sync-mode `edge.toml` that stile-benches' propagation harness writes too),
//! [`cache`] (a scriptable counting origin), [`dev`] (`stile dev` and client
//! commands), [`redis`] (`redis-server`), [`akamai`] (Akamai's own token
//! generator). With the `fleet`
//! feature: `fleet` (`stile control`, edges in sync mode, a gRPC operator
//! client). With the `tls` feature: `tls` (a throwaway CA, TLS and HTTP/2
//! clients, killable TLS origins).
//!
//! The processes are the `stile` binary of the target directory the test runs
//! from ([`process::stile_binary`]): only stile-cli's integration tests, which
//! cargo builds it for, start them.

use std::path::PathBuf;

pub mod akamai;
pub mod cache;
pub mod dev;
pub mod edge;
#[cfg(feature = "fleet")]
pub mod fleet;
pub mod media;
pub mod net;
pub mod process;
pub mod redis;
#[cfg(feature = "tls")]
pub mod tls;
pub mod token;

/// The repository root (the workspace directory).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().map(PathBuf::from).unwrap_or_default()
}
