//! The admin HTTP listener `stile control` binds on `admin_listen`:
//! `/healthz` (the process runs), `/readyz` (serving gRPC and not shutting
//! down) and `/metrics` (Prometheus text). axum routes, hyper serves HTTP/1.1,
//! one request per connection (`Connection: close`), a request head within
//! 5 s and 8 KiB.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::routing::get;
use http::{Method, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::clock::Clock;
use crate::fleet::Fleet;
use crate::metrics::Metrics;
use crate::model::KeyState;
use crate::store::Store;
use crate::store::notify::VersionWatch;

/// Longest a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head read (hyper's smallest buffer).
const HEAD_MAX: usize = 8192;

/// What `/metrics` reads when it is scraped, and what `/readyz` answers from.
#[derive(Debug)]
pub(crate) struct Admin {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) fleet: Arc<Fleet>,
    pub(crate) versions: Arc<VersionWatch>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    /// Set while gRPC is served and shutdown has not started.
    pub(crate) ready: Arc<AtomicBool>,
}

impl Admin {
    /// Serves on `listener` until the task is dropped.
    pub(crate) async fn serve(self, listener: TcpListener) {
        let router = Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .with_state(Arc::new(self));
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "admin.accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let service = TowerToHyperService::new(router.clone());
            tokio::spawn(async move {
                let served = hyper::server::conn::http1::Builder::new()
                    .keep_alive(false)
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEAD_TIMEOUT)
                    .max_buf_size(HEAD_MAX)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                if let Err(e) = served {
                    tracing::debug!(error = %e, "admin.connection");
                }
            });
        }
    }

    /// Sets the fleet gauges and the pending key age, then encodes every metric.
    async fn scrape(&self) -> Vec<u8> {
        let fleet = self.fleet.stats(*self.versions.borrow());
        let pending_key_age = match self.store.signing_keys().await {
            Ok(keys) => {
                let oldest = keys.iter().filter(|k| k.state == KeyState::Pending).map(|k| k.created_at).min();
                Some(oldest.map_or(0, |t| self.clock.now_secs().saturating_sub(t)))
            }
            Err(e) => {
                self.metrics.store_error("read");
                tracing::warn!(error = %e, "metrics.keys");
                None
            }
        };
        self.metrics.scrape(fleet, pending_key_age)
    }
}

type Reply = (StatusCode, [(header::HeaderName, &'static str); 1], Body);

fn text(status: StatusCode, body: &'static str) -> Reply {
    (status, [(header::CONTENT_TYPE, "text/plain")], Body::from(body))
}

async fn healthz() -> Reply {
    text(StatusCode::OK, "ok\n")
}

async fn readyz(State(admin): State<Arc<Admin>>) -> Reply {
    if admin.ready.load(Ordering::Relaxed) {
        text(StatusCode::OK, "ready\n")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics(State(admin): State<Arc<Admin>>) -> Reply {
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4")], Body::from(admin.scrape().await))
}

async fn not_found(method: Method) -> Reply {
    match method {
        Method::GET | Method::HEAD => text(StatusCode::NOT_FOUND, "not found\n"),
        _ => method_not_allowed().await,
    }
}

async fn method_not_allowed() -> Reply {
    text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
}
