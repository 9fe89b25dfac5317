//! `stile control`.

use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `stile control`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Path to the TOML configuration file.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

pub(crate) fn run(args: Args) -> ExitCode {
    eprintln!("stile control: not built yet (config {:?})", args.config);
    ExitCode::from(64)
}
