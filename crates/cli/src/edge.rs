//! `stile edge`: run an edge proxy. Parses arguments, loads and checks the
//! configuration, state file and GeoIP database (exit 64 before binding anything
//! if one is bad), then hands over to [`stile_edge::Edge::run`].
//!
//! The edge binary uses mimalloc: Pingora's request path allocates per request,
//! and mimalloc measurably beats the system allocator there (see BENCHMARKS.md).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use stile_edge::clock::SystemClock;
use stile_edge::{Edge, EdgeConfig, StartOptions};

// It must live in the binary crate; this module is in it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Arguments of `stile edge`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Path to the TOML configuration file (see docs/edge.md).
    #[arg(long, short, env = "STILE_EDGE_CONFIG")]
    config: Option<PathBuf>,
    /// Take the listening sockets over from a running edge (zero-downtime upgrade:
    /// start the new binary with -u, then send SIGQUIT to the old one).
    #[arg(long, short)]
    upgrade: bool,
    /// Run in the background.
    #[arg(long, short)]
    daemon: bool,
    /// Check the configuration, state file and GeoIP database, then exit.
    #[arg(long, short)]
    test: bool,
}

pub(crate) fn run(args: Args) -> ExitCode {
    init_tracing();
    let Some(path) = args.config else {
        eprintln!("stile edge: --config FILE is required");
        return ExitCode::from(64);
    };
    let config = match EdgeConfig::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("stile edge: {e}");
            return ExitCode::from(64);
        }
    };
    let opts = StartOptions { upgrade: args.upgrade, daemon: args.daemon };
    let edge = match Edge::build(&config, opts, Arc::new(SystemClock)) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("stile edge: {e}");
            return ExitCode::from(64);
        }
    };
    if args.test {
        eprintln!("stile edge: configuration OK");
        return ExitCode::SUCCESS;
    }
    tracing::info!(listen = ?config.listen, admin = %config.admin_listen, "stile edge starting");
    edge.run();
    ExitCode::SUCCESS
}

/// JSON logs on stdout; `RUST_LOG` filters (default `info`). Pingora's `log`
/// records are bridged into the same stream.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_env_filter(filter)
        .try_init();
}
