//! `stile control`: run the gRPC control plane. Parses arguments, loads and
//! checks the configuration and the `[tls]` files (exit 64 before binding
//! anything if either is bad),
//! opens the store ([`ControlPlane::open`]), binds the gRPC and admin
//! listeners, then serves both ([`ControlPlane::serve_with_admin`]) until
//! SIGTERM or Ctrl-C, which stop it gracefully.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Arc;

use stile_control::tls::ServerTls;
use stile_control::{Config, ControlPlane, ServeError, SystemClock};

/// Arguments of `stile control`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Path to the TOML configuration file (see docs/control-plane.md).
    #[arg(long, short, env = "STILE_CONTROL_CONFIG")]
    config: Option<PathBuf>,
    /// Listen address, overriding `listen` from the configuration.
    #[arg(long, env = "STILE_CONTROL_LISTEN")]
    listen: Option<SocketAddr>,
    /// Check the configuration, then exit.
    #[arg(long, short)]
    test: bool,
    /// Print a new random API key and the `[[auth.keys]]` entry (its SHA-256)
    /// to put in the configuration, then exit.
    #[arg(long, conflicts_with_all = ["config", "listen", "test"])]
    gen_key: bool,
}

pub(crate) fn run(args: Args) -> ExitCode {
    if args.gen_key {
        return gen_key();
    }
    let Some(path) = args.config else {
        eprintln!("stile control: --config FILE is required");
        return ExitCode::from(64);
    };
    let mut config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("stile control: {e}");
            return ExitCode::from(64);
        }
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if args.test {
        // The certificate, key and client CA too, as a start would check them.
        if let Err(e) = ServerTls::load(&config.tls, stile_control::Clock::now_secs(&SystemClock)) {
            eprintln!("stile control: {e}");
            return ExitCode::from(64);
        }
        eprintln!("stile control: configuration OK");
        return ExitCode::SUCCESS;
    }
    init_tracing();
    if config.auth.keys.is_empty() {
        tracing::warn!(
            "no API keys in auth.keys: only keys already in the store can call; see `stile control --gen-key`"
        );
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stile control: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listen = config.listen;
        let admin_listen = config.admin_listen.clone();
        // Open the store before binding, so a bad store path fails before any port is taken.
        // `[tls]` is checked first: a bad certificate exits 64 before the store opens.
        let plane = match ControlPlane::open(config, Arc::new(SystemClock)).await {
            Ok(p) => p,
            Err(e @ ServeError::Tls(_)) => {
                eprintln!("stile control: {e}");
                return ExitCode::from(64);
            }
            Err(e) => {
                eprintln!("stile control: {e}");
                return ExitCode::FAILURE;
            }
        };
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("stile control: cannot listen on {listen}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let admin = if admin_listen.is_empty() {
            None
        } else {
            match tokio::net::TcpListener::bind(admin_listen.as_str()).await {
                Ok(l) => Some(l),
                Err(e) => {
                    eprintln!("stile control: cannot listen on {admin_listen} (admin_listen): {e}");
                    return ExitCode::FAILURE;
                }
            }
        };
        match plane.serve_with_admin(listener, admin, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("stile control: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

fn gen_key() -> ExitCode {
    match stile_control::auth::generate_api_key() {
        Ok((key, hash)) => {
            println!("# API key (give to the caller as `authorization: Bearer <key>`; shown once):");
            println!("# {key}");
            println!("[[auth.keys]]");
            println!("name = \"admin\"");
            println!("role = \"admin\"");
            println!("sha256 = \"{}\"", hex_lower(&hash));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("stile control: {e}");
            ExitCode::FAILURE
        }
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Completes on SIGTERM or Ctrl-C (SIGINT).
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!(signal = "SIGINT", "control.shutdown"),
        () = term => tracing::info!(signal = "SIGTERM", "control.shutdown"),
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
