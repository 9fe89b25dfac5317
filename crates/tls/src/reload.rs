//! When to reload certificates without a restart: on SIGHUP, and when one of the
//! files changes (modification time, size or inode, checked every poll
//! interval). Shared by the edge's viewer TLS (`crates/edge/src/tls/reload.rs`)
//! and the control plane's gRPC TLS (`crates/control/src/tls/reload.rs`); each
//! loads and checks the files itself and keeps what it serves on a bad pair.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::time::{Interval, MissedTickBehavior};

/// The reload triggers of a set of files.
#[derive(Debug)]
pub struct ReloadTriggers {
    files: Vec<PathBuf>,
    seen: Vec<Stamp>,
    hup: Option<Signal>,
    tick: Option<Interval>,
}

/// What made a reload happen: the `trigger` field of the reload log lines.
pub const SIGHUP: &str = "sighup";
/// A watched file changed.
pub const FILE_CHANGED: &str = "file_changed";

impl ReloadTriggers {
    /// Watches `files` (configured paths, `${CREDENTIALS_DIRECTORY}/NAME` resolved)
    /// every `poll_ms` milliseconds (0: SIGHUP only) and listens for SIGHUP. Must be
    /// called inside a Tokio runtime; a SIGHUP handler that cannot be installed is
    /// logged (`tls.no_sighup`) and the file watch goes on alone.
    pub fn new(files: &[PathBuf], poll_ms: u64) -> ReloadTriggers {
        let files: Vec<PathBuf> = files.iter().map(|f| crate::resolve_path(f).unwrap_or_else(|_| f.clone())).collect();
        let hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "tls.no_sighup: relying on file polling");
                None
            }
        };
        let tick = (poll_ms > 0).then(|| {
            let mut tick = tokio::time::interval(Duration::from_millis(poll_ms));
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            tick
        });
        ReloadTriggers { seen: stamps(&files), files, hup, tick }
    }

    /// Waits for the next trigger: [`SIGHUP`] or [`FILE_CHANGED`]. Cancel-safe (a
    /// caller may select on it with its shutdown signal); never returns when
    /// neither SIGHUP nor polling is available.
    pub async fn next(&mut self) -> &'static str {
        loop {
            tokio::select! {
                got = async { match self.hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    if got.is_none() {
                        self.hup = None;
                        continue;
                    }
                    self.seen = stamps(&self.files);
                    return SIGHUP;
                }
                _ = async { match self.tick.as_mut() { Some(t) => t.tick().await, None => std::future::pending().await } } => {
                    let now = stamps(&self.files);
                    if now != self.seen {
                        self.seen = now;
                        return FILE_CHANGED;
                    }
                }
            }
        }
    }
}

type Stamp = Option<(SystemTime, u64, u64)>;

fn stamps(files: &[PathBuf]) -> Vec<Stamp> {
    files
        .iter()
        .map(|f| {
            let m = std::fs::metadata(f).ok()?;
            Some((m.modified().ok()?, m.len(), std::os::unix::fs::MetadataExt::ino(&m)))
        })
        .collect()
}
