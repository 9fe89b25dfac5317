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
/// records are bridged into the same stream, at most at `info` level (see
/// [`no_pingora_debug`]).
fn init_tracing() {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::filter::FilterExt as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let most = tracing_subscriber::layer::Filter::<tracing_subscriber::Registry>::max_level_hint(&filter);
    let json = tracing_subscriber::fmt::layer().json().flatten_event(true).with_current_span(false);
    let _ = tracing_subscriber::registry().with(json.with_filter(filter.and(no_pingora_debug()))).try_init();
    // The bridge for `log` records (Pingora's) is installed at `trace`, because a per-layer
    // filter gives no level hint: every `debug!`/`trace!` in Pingora's request path would
    // then be built and dispatched only to be dropped (3.5 % of the edge's CPU under load,
    // BENCHMARKS.md "Per-request cost"). Records above what `RUST_LOG` enables stop at `log`.
    log::set_max_level(log_level(most));
}

/// The `log` crate's level for the most verbose level a tracing filter enables.
fn log_level(most: Option<tracing::level_filters::LevelFilter>) -> log::LevelFilter {
    use tracing::level_filters::LevelFilter as L;
    match most {
        Some(L::OFF) => log::LevelFilter::Off,
        Some(L::ERROR) => log::LevelFilter::Error,
        Some(L::WARN) => log::LevelFilter::Warn,
        Some(L::INFO) => log::LevelFilter::Info,
        Some(L::DEBUG) => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    }
}

/// Drops Pingora's events below `info`, whatever `RUST_LOG` says: at `debug`
/// Pingora prints whole request headers ("Sending header to upstream
/// RequestHeader { … }"), which carry viewers' `Authorization` and `Cookie`
/// values. Found by `crates/cli/tests/cli/log_scan.rs`.
pub(crate) fn no_pingora_debug() -> tracing_subscriber::filter::FilterFn<fn(&tracing::Metadata<'_>) -> bool> {
    tracing_subscriber::filter::filter_fn(pingora_at_info_at_most as fn(&tracing::Metadata<'_>) -> bool)
}

fn pingora_at_info_at_most(m: &tracing::Metadata<'_>) -> bool {
    !(m.target().starts_with("pingora") && *m.level() > tracing::Level::INFO)
}

#[cfg(test)]
mod tests {
    use tracing::level_filters::LevelFilter;

    use super::log_level;

    #[test]
    fn log_records_stop_where_the_tracing_filter_stops() {
        let filter = |s: &str| {
            let f = tracing_subscriber::EnvFilter::new(s);
            log_level(tracing_subscriber::layer::Filter::<tracing_subscriber::Registry>::max_level_hint(&f))
        };
        assert_eq!(filter("info"), log::LevelFilter::Info);
        assert_eq!(filter("warn,stile_edge=debug"), log::LevelFilter::Debug);
        assert_eq!(filter("off"), log::LevelFilter::Off);
        assert_eq!(log_level(Some(LevelFilter::ERROR)), log::LevelFilter::Error);
        assert_eq!(log_level(None), log::LevelFilter::Trace);
    }
}
