//! Test support: locating the repository and the tools the end-to-end tests run.

use std::path::PathBuf;

pub mod redis;

/// The repository root (the workspace directory).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().map(PathBuf::from).unwrap_or_default()
}
