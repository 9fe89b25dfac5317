//! Every gRPC call counted by method and final status code, with its
//! duration: one tower layer on the server ([`RpcLayer`]), which reads the
//! status from the response headers (a trailers-only error) or the trailers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use super::Metrics;

/// The lower-case name of a numeric `grpc-status`.
pub(super) fn code_name(code: &[u8]) -> &'static str {
    match code {
        b"0" => "ok",
        b"1" => "cancelled",
        b"2" => "unknown",
        b"3" => "invalid_argument",
        b"4" => "deadline_exceeded",
        b"5" => "not_found",
        b"6" => "already_exists",
        b"7" => "permission_denied",
        b"8" => "resource_exhausted",
        b"9" => "failed_precondition",
        b"10" => "aborted",
        b"11" => "out_of_range",
        b"12" => "unimplemented",
        b"13" => "internal",
        b"14" => "unavailable",
        b"15" => "data_loss",
        b"16" => "unauthenticated",
        _ => "unknown",
    }
}

/// A tower layer counting every gRPC call by method and final status code.
#[derive(Clone, Debug)]
pub(crate) struct RpcLayer(pub(crate) Arc<Metrics>);

impl<S> tower::Layer<S> for RpcLayer {
    type Service = RpcService<S>;
    fn layer(&self, inner: S) -> RpcService<S> {
        RpcService { inner, metrics: Arc::clone(&self.0) }
    }
}

/// See [`RpcLayer`].
#[derive(Clone, Debug)]
pub(crate) struct RpcService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, RB> tower::Service<http::Request<B>> for RpcService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    RB: http_body::Body + Send + 'static,
{
    type Response = http::Response<CountedBody<RB>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = self.metrics.method_label(req.uri().path());
        let mut done = Done { metrics: Arc::clone(&self.metrics), method, started: Instant::now(), recorded: false };
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            // A trailers-only response (every error from a handler) has its status in the headers.
            if let Some(code) = resp.headers().get("grpc-status") {
                done.record(code_name(code.as_bytes()));
            }
            Ok(resp.map(|body| CountedBody { inner: Box::pin(body), done }))
        })
    }
}

/// A response body that records the call's status from its trailers.
pub(crate) struct CountedBody<B> {
    inner: Pin<Box<B>>,
    done: Done,
}

impl<B> std::fmt::Debug for CountedBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountedBody").field("method", &self.done.method).finish()
    }
}

impl<B: http_body::Body> http_body::Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let polled = self.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(|t| t.get("grpc-status")) {
                    self.done.record(code_name(code.as_bytes()));
                }
            }
            Poll::Ready(Some(Err(_))) => self.done.record("unknown"),
            Poll::Ready(None) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Records a call once: at its status, or as `cancelled` when the response is dropped first.
struct Done {
    metrics: Arc<Metrics>,
    method: &'static str,
    started: Instant,
    recorded: bool,
}

impl Done {
    fn record(&mut self, code: &str) {
        if !self.recorded {
            self.recorded = true;
            self.metrics.rpc_done(self.method, code, self.started.elapsed());
        }
    }
}

impl Drop for Done {
    fn drop(&mut self) {
        self.record("cancelled");
    }
}
