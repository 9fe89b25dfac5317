//! Certificate reload: a Pingora background service that loads every configured
//! certificate/key pair again on SIGHUP and whenever one of the files changes
//! (modification time, size or inode, checked every `tls.reload_poll_ms`; the
//! triggers are `stile_tls::ReloadTriggers`, shared with the control plane), and
//! swaps the new SNI table in only when every pair passes the startup checks.
//! New handshakes get the new certificates; established connections keep theirs.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use rustls::crypto::CryptoProvider;
use stile_tls::ReloadTriggers;

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
        self.config.certificates.iter().flat_map(|c| [c.cert.clone(), c.key.clone()]).collect()
    }

    async fn run(&self, mut shutdown: ShutdownWatch) {
        let mut triggers = ReloadTriggers::new(&self.files(), self.config.reload_poll_ms);
        loop {
            tokio::select! {
                _ = shutdown.changed() => if *shutdown.borrow() { return },
                trigger = triggers.next() => { self.reload(trigger); }
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
