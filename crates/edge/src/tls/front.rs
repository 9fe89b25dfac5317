//! The connection-level service in front of the proxy: on a TLS listener it runs
//! the handshake (bounded in time, failures counted by cause) and hands the
//! decrypted stream on; other connections go straight through.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::listeners::tls::Acceptor;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{ALPN, Ssl, Stream};
use pingora::server::ShutdownWatch;

use super::metrics::{Failure, TlsMetrics, classify};

/// The TLS listeners of a service and how to handshake on them.
pub(crate) struct TlsListeners {
    /// Their configured addresses (`0.0.0.0:443` matches any local address on port 443).
    pub(crate) addrs: Vec<SocketAddr>,
    pub(crate) acceptor: Arc<Acceptor>,
    pub(crate) timeout: Duration,
    pub(crate) metrics: Arc<TlsMetrics>,
}

impl TlsListeners {
    fn accepted_on(&self, local: SocketAddr) -> bool {
        self.addrs.iter().any(|a| a.port() == local.port() && (a.ip() == local.ip() || a.ip().is_unspecified()))
    }
}

/// A [`ServerApp`] wrapping `inner` (the HTTP proxy): TLS first where the listener wants it.
pub(crate) struct Front<A> {
    inner: Arc<A>,
    tls: Option<TlsListeners>,
}

impl<A> std::fmt::Debug for Front<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Front").field("tls_listeners", &self.tls.as_ref().map(|t| t.addrs.clone())).finish()
    }
}

impl<A> Front<A> {
    /// `inner` behind the TLS listeners `tls` (none: every connection passes through).
    pub(crate) fn new(inner: A, tls: Option<TlsListeners>) -> Front<A> {
        Front { inner: Arc::new(inner), tls }
    }
}

#[async_trait]
impl<A> ServerApp for Front<A>
where
    A: ServerApp + Send + Sync + 'static,
{
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let Some(tls) = &self.tls else { return self.inner.process_new(stream, shutdown).await };
        // A stream handed back for reuse is already decrypted; only fresh TCP connections
        // on a TLS listener get a handshake.
        let local = stream.get_socket_digest().and_then(|d| d.local_addr().and_then(|a| a.as_inet()).copied());
        let fresh_tcp = stream.as_any().is::<L4Stream>();
        if !(fresh_tcp && local.is_some_and(|l| tls.accepted_on(l))) {
            return self.inner.process_new(stream, shutdown).await;
        }
        let Ok(l4) = stream.into_any().downcast::<L4Stream>() else { return None };
        let started = Instant::now();
        let encrypted = match tokio::time::timeout(tls.timeout, tls.acceptor.tls_handshake(*l4)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                let cause = classify(&e);
                tracing::debug!(cause = cause.as_str(), error = %e, "tls.handshake_failed");
                tls.metrics.failure(cause);
                return None;
            }
            Err(_) => {
                tls.metrics.failure(Failure::Timeout);
                return None;
            }
        };
        let version = encrypted.get_ssl_digest().map_or("other", |d| super::version_label(&d.version));
        let alpn = match encrypted.selected_alpn_proto() {
            Some(ALPN::H2) => "h2",
            Some(_) => "http/1.1",
            None => "none",
        };
        tls.metrics.handshake(version, alpn, started.elapsed().as_secs_f64());
        self.inner.process_new(Box::new(encrypted), shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}
