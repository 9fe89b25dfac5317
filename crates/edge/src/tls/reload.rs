//! Certificate reload: a Pingora background service that loads every configured
//! certificate/key pair again on SIGHUP and whenever one of the files changes
//! (modification time, size or inode, checked every `tls.reload_poll_ms`), and
//! swaps the new SNI table in only when every pair passes the startup checks.
//! New handshakes get the new certificates; established connections keep theirs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use rustls::crypto::CryptoProvider;

use super::{CertResolver, TlsMetrics, load_all};
use crate::clock::SharedClock;
use crate::config::TlsConfig;

/// Reloads the certificates.
#[derive(Debug)]
pub(crate) struct CertReloader {
    config: TlsConfig,
    provider: Arc<CryptoProvider>,
    resolver: Arc<CertResolver>,
    metrics: Arc<TlsMetrics>,
    clock: SharedClock,
}

impl CertReloader {
    /// A reloader publishing into `resolver`.
    pub(crate) fn new(
        config: TlsConfig,
        provider: Arc<CryptoProvider>,
        resolver: Arc<CertResolver>,
        metrics: Arc<TlsMetrics>,
        clock: SharedClock,
    ) -> CertReloader {
        CertReloader { config, provider, resolver, metrics, clock }
    }

    /// Loads every pair; swaps them in if all pass, else keeps the current ones.
    pub(crate) fn reload(&self, trigger: &'static str) -> bool {
        match load_all(&self.config, &self.provider, self.clock.now()) {
            Ok(certs) => {
                self.metrics.observe_certificates(&certs);
                let names: Vec<String> = certs.iter().map(|c| c.names.join(",")).collect();
                self.resolver.swap(certs, self.config.strict_sni);
                self.metrics.reload(true);
                tracing::info!(trigger, tls.names = %names.join(" "), "tls.reloaded");
                true
            }
            Err(e) => {
                self.metrics.reload(false);
                tracing::error!(trigger, error = %e, "tls.reload_failed: keeping the certificates in force");
                false
            }
        }
    }

    fn files(&self) -> Vec<PathBuf> {
        let files = self.config.certificates.iter().flat_map(|c| [&c.cert, &c.key]);
        files.map(|f| super::certs::resolve_path(f).unwrap_or_else(|_| f.clone())).collect()
    }

    async fn run(&self, mut shutdown: ShutdownWatch) {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "tls.no_sighup: relying on file polling");
                None
            }
        };
        let files = self.files();
        let mut seen = stamps(&files);
        // A poll interval of 0 means SIGHUP only: tick once a day, doing nothing.
        let poll = match self.config.reload_poll_ms {
            0 => Duration::from_secs(86_400),
            ms => Duration::from_millis(ms),
        };
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => if *shutdown.borrow() { return },
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => None } } => {
                    seen = stamps(&files);
                    self.reload("sighup");
                }
                _ = tick.tick(), if self.config.reload_poll_ms > 0 => {
                    let now = stamps(&files);
                    if now != seen {
                        seen = now;
                        self.reload("file_changed");
                    }
                }
            }
        }
    }
}

#[async_trait]
impl BackgroundService for CertReloader {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.run(shutdown).await;
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
