//! The admin listener: `/healthz` (the process is up), `/readyz` (a state is
//! loaded and requests can be verified) and `/metrics` (Prometheus text format).
//! A separate Pingora service on its own port and runtime, so a busy proxy does
//! not starve probes.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode, header};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::metrics::Metrics;
use crate::state::SharedState;

/// The admin HTTP application.
#[derive(Debug)]
pub(crate) struct Admin {
    /// State readiness.
    shared: Arc<SharedState>,
    /// Metrics to expose.
    metrics: Arc<Metrics>,
}

impl Admin {
    /// Serves `shared`'s readiness and `metrics`.
    pub(crate) fn new(shared: Arc<SharedState>, metrics: Arc<Metrics>) -> Admin {
        Admin { shared, metrics }
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let (status, ctype, body) = match session.req_header().uri.path() {
            "/healthz" => (StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            "/readyz" if self.shared.is_ready() => (StatusCode::OK, "text/plain", b"ready\n".to_vec()),
            "/readyz" => (StatusCode::SERVICE_UNAVAILABLE, "text/plain", b"not ready\n".to_vec()),
            "/metrics" => (StatusCode::OK, "text/plain; version=0.0.4", self.metrics.encode()),
            _ => (StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
        };
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, ctype)
            .header(header::CONTENT_LENGTH, body.len())
            .body(body)
            .unwrap_or_default()
    }
}
