//! `stile`: one binary for everything. `main` only parses arguments and hands
//! off to one module per subcommand; the servers themselves live in the
//! `stile-control` and `stile-edge` libraries.
//!
//! - `control`, `edge`: the servers; `dev`: both plus a sample origin in one process.
//! - client commands (`client`): `mint`, `revoke`, `purge`, `revocations`, `keys`,
//!   `assets`, `edges`, `audit`, `api-keys`, `config`; and `explain`.
//! - `settings`: where client settings come from (flags > env > file > defaults).
//!
//! Exit codes (docs/cli.md): 0 success, 1 runtime failure, 2 the control plane
//! refused the request, 3 authentication or permission, 4 `explain`: an edge
//! would deny the link, 64 bad usage or configuration (EX_USAGE, before any
//! port is bound).

mod client;
mod control;
mod dev;
mod dev_tls;
mod edge;
mod settings;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::settings::ClientFlags;

#[derive(Debug, Parser)]
#[command(
    name = "stile",
    version,
    about = "Signed, revocable links for HLS/DASH video",
    propagate_version = true,
    after_help = "Start here: `stile dev` runs everything on this machine and prints what to try next.\n\
                  Client settings: --server/STILE_SERVER, --api-key/STILE_API_KEY, --json; see docs/cli.md."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a control plane, an edge and a sample origin on this machine, and print a working link.
    Dev(dev::Args),
    /// Run the gRPC control plane.
    Control(control::Args),
    /// Run an edge proxy.
    Edge(edge::Args),
    /// Mint a link (or --count N / --batch FILE for many) [role minter].
    Mint {
        #[command(flatten)]
        args: client::MintArgs,
        #[command(flatten)]
        flags: ClientFlags,
    },
    /// Revoke one link, a viewer's links, a path prefix, or a key [role operator].
    Revoke {
        #[command(flatten)]
        args: client::RevokeArgs,
        #[command(flatten)]
        flags: ClientFlags,
    },
    /// Purge cached objects from every edge (a prefix, one path, or an asset) without revoking [role operator].
    Purge {
        #[command(flatten)]
        args: client::PurgeArgs,
        #[command(flatten)]
        flags: ClientFlags,
    },
    /// Revocations in force and their rollout [role operator].
    Revocations {
        #[command(subcommand)]
        cmd: client::RevocationsCmd,
        #[command(flatten)]
        flags: ClientFlags,
    },
    /// Signing keys: rotate, list, retire [role operator].
    Keys {
        #[command(subcommand)]
        cmd: client::KeysCmd,
        #[command(flatten)]
        flags: ClientFlags,
    },
    /// Assets and the publish gate [role operator].
    Assets {
        #[command(subcommand)]
        cmd: client::AssetsCmd,
        #[command(flatten)]
        flags: ClientFlags,
    },
    /// Edges connected to the control plane [role operator].
    Edges {
        #[command(subcommand)]
        cmd: client::EdgesCmd,
        #[command(flatten)]
        flags: ClientFlags,
    },
    /// The audit log: who minted, revoked or changed what [role operator].
    Audit {
        #[command(subcommand)]
        cmd: client::AuditCmd,
        #[command(flatten)]
        flags: ClientFlags,
    },
    /// API keys for callers of the control plane [role admin].
    ApiKeys {
        #[command(subcommand)]
        cmd: client::ApiKeysCmd,
        #[command(flatten)]
        flags: ClientFlags,
    },
    /// Explain why a link works or fails: claims, key, revocations, and the edge's verdict.
    Explain {
        #[command(flatten)]
        args: client::explain::Args,
        #[command(flatten)]
        flags: ClientFlags,
    },
    /// Show the effective client settings and where each came from.
    Config {
        #[command(flatten)]
        flags: ClientFlags,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // --help and --version are not errors; everything else is EX_USAGE (not clap's 2,
            // which `stile` uses for "the control plane refused the request").
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(64) } else { ExitCode::SUCCESS };
        }
    };
    use client::Command as C;
    let (name, flags, cmd) = match cli.command {
        Command::Dev(args) => return dev::run(args),
        Command::Control(args) => return control::run(args),
        Command::Edge(args) => return edge::run(args),
        Command::Mint { args, flags } => ("mint", flags, C::Mint(args)),
        Command::Revoke { args, flags } => ("revoke", flags, C::Revoke(args)),
        Command::Purge { args, flags } => ("purge", flags, C::Purge(args)),
        Command::Revocations { cmd, flags } => ("revocations", flags, C::Revocations(cmd)),
        Command::Keys { cmd, flags } => ("keys", flags, C::Keys(cmd)),
        Command::Assets { cmd, flags } => ("assets", flags, C::Assets(cmd)),
        Command::Edges { cmd, flags } => ("edges", flags, C::Edges(cmd)),
        Command::Audit { cmd, flags } => ("audit", flags, C::Audit(cmd)),
        Command::ApiKeys { cmd, flags } => ("api-keys", flags, C::ApiKeys(cmd)),
        Command::Explain { args, flags } => ("explain", flags, C::Explain(args)),
        Command::Config { flags } => ("config", flags, C::Config),
    };
    client::run(name, &flags, cmd)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
