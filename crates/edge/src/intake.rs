//! The HTTP/1 intake: the proxy service behind a tap on the request line.
//!
//! Pingora 0.9 rewrites or refuses some requests before any `ProxyHttp` phase
//! sees them: a request line its parser rejects (a raw space or control byte)
//! is percent-encoded whole and parsed again (`escape_illegal_request_line`),
//! a `#fragment` is dropped from the target, and a line it cannot parse at all
//! (bytes the `http` crate refuses, an oversized head, not HTTP) gets a 400
//! with no phase called. So the proxy service runs behind [`Intake`], which
//! wraps every connection's stream in [`crate::tap`]'s tap, keeping per request
//! the first line as read from the socket and the status line of the answer.
//! The proxy compares that line with what Pingora parsed
//! ([`crate::tap::Capture::line_matches`]) and judges the bytes the client
//! sent; the intake counts and logs the requests Pingora answered itself
//! ([`crate::proxy::RefusalLog`]). The dependencies run one way: intake →
//! proxy → tap, and intake → tap.
//!
//! Only the HTTP/1 path of Pingora's `ServerApp` is reproduced: an HTTP/2
//! connection (a TLS listener that negotiated `h2`; there is no h2c) carries no
//! request line and goes to Pingora's own HTTP/2 path, whose `:path` parsing is
//! described in `docs/edge.md`.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::protocols::{ALPN, Stream};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;

use crate::proxy::{EdgeProxy, RefusalLog};
use crate::tap::{Capture, TapStream};

/// Keep-alive time of idle client connections, as Pingora's own HTTP/1 service.
const KEEPALIVE_SECS: u64 = 60;

/// The edge's proxy service: Pingora's HTTP proxy behind the request-line tap.
pub(crate) struct Intake {
    proxy: Arc<HttpProxy<EdgeProxy>>,
    refusals: RefusalLog,
}

impl std::fmt::Debug for Intake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intake").finish_non_exhaustive()
    }
}

impl Intake {
    /// Wraps the proxy; `refusals` logs and counts what Pingora answers itself.
    pub(crate) fn new(proxy: HttpProxy<EdgeProxy>, refusals: RefusalLog) -> Intake {
        Intake { proxy: Arc::new(proxy), refusals }
    }
}

#[async_trait]
impl ServerApp for Intake {
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            // HTTP/2 (a TLS listener, ALPN h2) has no request line: Pingora's own HTTP/2 path.
            return ServerApp::process_new(&self.proxy, stream, shutdown).await;
        }
        let capture = Arc::new(Capture::default());
        let socket = stream.get_socket_digest();
        let stream: Stream = Box::new(TapStream::new(stream, capture.clone()));
        // The same settings as Pingora's HTTP/1 branch of `ServerApp for HttpServerApp`.
        let mut session = ServerSession::new_http1(stream);
        session.set_keepalive(if *shutdown.borrow() { None } else { Some(KEEPALIVE_SECS) });
        session.set_keepalive_reuses_remaining(self.proxy.server_options().and_then(|o| o.keepalive_request_limit));
        loop {
            let result = self.proxy.process_new_http(session, shutdown).await;
            if let Some((line, status)) = capture.refused() {
                let peer = socket.as_ref().and_then(|d| d.peer_addr()).and_then(SocketAddr::as_inet).map(|a| a.ip());
                self.refusals.record(&line, status, peer);
            }
            capture.reset();
            let (stream, settings) = result?.consume();
            session = ServerSession::new_http1(stream);
            if let Some(settings) = settings {
                settings.apply_to_session(&mut session);
            }
        }
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}
