//! The gRPC listener's TLS accept loop: accepts TCP connections (TCP_NODELAY on),
//! runs each handshake in its own task with the server configuration in force
//! when it was accepted, bounded by `tls.handshake_timeout_ms`, and hands each
//! completed TLS stream to tonic through a channel ([`Incoming`]). A slow or
//! stalled handshake holds only its own task; at most [`MAX_HANDSHAKES`] run at
//! once (then accepting waits for one to end, and new connections wait in the
//! kernel's backlog).
//!
//! Every handshake is counted: completed by version
//! (`stile_control_tls_handshakes_total`), failed by cause
//! (`stile_control_tls_handshake_failures_total`, `stile_tls::Failure`). A
//! failure is logged at debug only (`control.tls_handshake_failed`: peer, cause,
//! the rustls or I/O error, never key material), so a scanner cannot flood the log.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stile_tls::Failure;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

use super::{ServerTls, TlsObserver};

/// Most handshakes in progress at once.
pub(crate) const MAX_HANDSHAKES: usize = 1024;

/// Completed TLS connections, for tonic's `serve_with_incoming_shutdown`.
pub(crate) type Incoming = ReceiverStream<io::Result<TlsStream<TcpStream>>>;

/// Starts accepting on `listener`. The task ends when tonic drops the [`Incoming`]
/// (it stops accepting at shutdown), which closes the listening socket; aborting
/// it also aborts the handshakes in progress.
pub(crate) fn spawn(
    listener: TcpListener,
    tls: Arc<ServerTls>,
    metrics: Arc<dyn TlsObserver>,
) -> (Incoming, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(64);
    let task = tokio::spawn(accept_loop(listener, tls, metrics, tx));
    (ReceiverStream::new(rx), task)
}

type Sender = mpsc::Sender<io::Result<TlsStream<TcpStream>>>;

async fn accept_loop(listener: TcpListener, tls: Arc<ServerTls>, metrics: Arc<dyn TlsObserver>, tx: Sender) {
    let limit = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    let mut handshakes = JoinSet::new();
    let mut last_warning: Option<Instant> = None;
    loop {
        while handshakes.try_join_next().is_some() {}
        let permit = tokio::select! {
            p = Arc::clone(&limit).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            () = tx.closed() => return,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = tx.closed() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                accept_failed(&e, &mut last_warning).await;
                continue;
            }
        };
        // Without TCP_NODELAY small responses wait for the peer's delayed ACK (~40 ms).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(peer = %peer, error = %e, "control.nodelay_failed");
        }
        let acceptor = TlsAcceptor::from(tls.server_config());
        let timeout = tls.handshake_timeout();
        let (metrics, tx) = (Arc::clone(&metrics), tx.clone());
        handshakes.spawn(async move {
            let _permit = permit;
            match handshake(&acceptor, tcp, timeout).await {
                Ok(stream) => {
                    metrics.tls_handshake(stile_tls::version_label(stream.get_ref().1.protocol_version()));
                    // Err: tonic stopped accepting (shutdown); the connection is dropped.
                    let _ = tx.send(Ok(stream)).await;
                }
                Err((cause, error)) => {
                    metrics.tls_handshake_failure(cause);
                    tracing::debug!(peer = %peer, cause = cause.as_str(), error, "control.tls_handshake_failed");
                }
            }
        });
    }
}

/// One handshake, bounded by `timeout`; a failure as its cause and error text.
async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    timeout: Duration,
) -> Result<TlsStream<TcpStream>, (Failure, String)> {
    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err((Failure::from_io(&e), e.to_string())),
        Err(_) => Err((Failure::Timeout, format!("no handshake within {} ms", timeout.as_millis()))),
    }
}

/// An accept error: a connection that died in the backlog is skipped; anything
/// else (out of file descriptors, say) pauses accepting for 100 ms, and is
/// logged at most once a second.
async fn accept_failed(e: &io::Error, last_warning: &mut Option<Instant>) {
    use io::ErrorKind as K;
    if matches!(e.kind(), K::ConnectionAborted | K::ConnectionReset | K::ConnectionRefused) {
        return;
    }
    if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
        *last_warning = Some(Instant::now());
        tracing::warn!(error = %e, "control.accept_failed");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
}
