//! `stile`: one binary for everything. `main` only parses arguments and hands
//! off to one module per subcommand; the servers themselves live in the
//! `stile-control` and `stile-edge` libraries.
//!
//! Exit codes: 0 success, 1 runtime failure, 64 bad usage or configuration
//! (EX_USAGE, before any port is bound).

mod client;
mod control;
mod edge;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "stile", version, about = "Signed, revocable links for HLS/DASH video", propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gRPC control plane.
    Control(control::Args),
    /// Run an edge proxy.
    Edge(edge::Args),
    /// Mint one link through the control plane.
    Mint(client::MintArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Control(args) => control::run(args),
        Command::Edge(args) => edge::run(args),
        Command::Mint(args) => client::mint(args),
    }
}
