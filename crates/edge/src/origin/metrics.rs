//! Per-origin metrics, labelled by the configured `pool` and `origin` names (a
//! bounded set: at most 64 origins a pool). Each origin's series are resolved
//! once at startup, so recording costs no label lookup.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Why a try at an origin failed: the `kind` label of `stile_edge_origin_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// Connection refused, unreachable, or another connect error.
    Connect,
    /// The connect (or TLS handshake) timed out.
    ConnectTimeout,
    /// The TLS handshake failed (certificate not trusted, wrong name, protocol).
    Tls,
    /// A read or write timed out.
    Timeout,
    /// The connection broke (reset, closed early).
    Io,
    /// The origin's answer was not valid HTTP.
    Protocol,
    /// The origin answered 5xx.
    Status5xx,
    /// Anything else.
    Other,
}

impl ErrorKind {
    const ALL: [ErrorKind; 8] = [
        ErrorKind::Connect,
        ErrorKind::ConnectTimeout,
        ErrorKind::Tls,
        ErrorKind::Timeout,
        ErrorKind::Io,
        ErrorKind::Protocol,
        ErrorKind::Status5xx,
        ErrorKind::Other,
    ];

    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::ConnectTimeout => "connect_timeout",
            ErrorKind::Tls => "tls",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Io => "io",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Status5xx => "status_5xx",
            ErrorKind::Other => "other",
        }
    }

    /// The kind of a Pingora error type.
    pub(crate) fn of(t: &pingora::ErrorType) -> ErrorKind {
        use pingora::ErrorType as T;
        match t {
            T::ConnectTimedout | T::TLSHandshakeTimedout => ErrorKind::ConnectTimeout,
            T::ConnectRefused | T::ConnectNoRoute | T::ConnectError | T::SocketError | T::BindError => {
                ErrorKind::Connect
            }
            T::TLSHandshakeFailure | T::InvalidCert | T::HandshakeError | T::TLSWantX509Lookup => ErrorKind::Tls,
            T::ReadTimedout | T::WriteTimedout => ErrorKind::Timeout,
            T::ReadError | T::WriteError | T::ConnectionClosed | T::ConnectProxyFailure => ErrorKind::Io,
            T::InvalidHTTPHeader | T::H1Error | T::H2Error | T::InvalidH2 | T::H2Downgrade => ErrorKind::Protocol,
            T::HTTPStatus(s) if (500..600).contains(s) => ErrorKind::Status5xx,
            _ => ErrorKind::Other,
        }
    }
}

/// Why a request was retried: the `cause` label of `stile_edge_origin_retries_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RetryCause {
    /// The connect (or TLS handshake) failed.
    Connect,
    /// The exchange failed before the response head.
    Error,
    /// The origin answered 5xx.
    Status5xx,
    /// A pooled keep-alive connection turned out closed (retried on the same origin, free).
    StaleConnection,
}

impl RetryCause {
    fn as_str(self) -> &'static str {
        match self {
            RetryCause::Connect => "connect",
            RetryCause::Error => "error",
            RetryCause::Status5xx => "status_5xx",
            RetryCause::StaleConnection => "stale_connection",
        }
    }
}

/// The metric families.
#[derive(Debug)]
pub(crate) struct OriginMetrics {
    responses: IntCounterVec,
    errors: IntCounterVec,
    duration: HistogramVec,
    up: IntGaugeVec,
    checks: IntCounterVec,
    retries: IntCounterVec,
    budget: IntCounterVec,
}

/// One origin's series.
#[derive(Debug)]
pub(crate) struct ServerSeries {
    responses: [IntCounter; 5],
    errors: [IntCounter; 8],
    pub(crate) duration: Histogram,
    pub(crate) up: IntGauge,
    check_ok: IntCounter,
    check_fail: IntCounter,
}

/// One pool's series.
#[derive(Debug)]
pub(crate) struct PoolSeries {
    retries: [IntCounter; 4],
    pub(crate) budget_exhausted: IntCounter,
}

impl OriginMetrics {
    /// Creates the families and registers them.
    pub(crate) fn new(registry: &Registry) -> OriginMetrics {
        let po = ["pool", "origin"];
        let responses = IntCounterVec::new(
            Opts::new("stile_edge_origin_responses_total", "Responses from each origin, by status class."),
            &["pool", "origin", "class"],
        )
        .expect("valid metric");
        let errors = IntCounterVec::new(
            Opts::new(
                "stile_edge_origin_errors_total",
                "Failed tries at each origin, by kind (a 5xx answer counts as status_5xx).",
            ),
            &["pool", "origin", "kind"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "stile_edge_origin_response_duration_seconds",
                "Time from choosing an origin to its response head (connect, TLS, request, first byte).",
            )
            .buckets(vec![0.000_5, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0]),
            &po,
        )
        .expect("valid metric");
        let up = IntGaugeVec::new(
            Opts::new("stile_edge_origin_up", "1 while an origin receives requests (active and passive health)."),
            &po,
        )
        .expect("valid metric");
        let checks = IntCounterVec::new(
            Opts::new("stile_edge_origin_health_checks_total", "Active health checks by result."),
            &["pool", "origin", "result"],
        )
        .expect("valid metric");
        let retries = IntCounterVec::new(
            Opts::new("stile_edge_origin_retries_total", "Requests tried again, by cause."),
            &["pool", "cause"],
        )
        .expect("valid metric");
        let budget = IntCounterVec::new(
            Opts::new(
                "stile_edge_origin_retry_budget_exhausted_total",
                "Retries not made because the pool's retry budget was spent.",
            ),
            &["pool"],
        )
        .expect("valid metric");
        for c in [
            Box::new(responses.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(errors.clone()),
            Box::new(duration.clone()),
            Box::new(up.clone()),
            Box::new(checks.clone()),
            Box::new(retries.clone()),
            Box::new(budget.clone()),
        ] {
            registry.register(c).expect("unique metric names");
        }
        OriginMetrics { responses, errors, duration, up, checks, retries, budget }
    }

    /// The series of origin `origin` in pool `pool`.
    pub(crate) fn server(&self, pool: &str, origin: &str) -> ServerSeries {
        let class = |c: &str| self.responses.with_label_values(&[pool, origin, c]);
        ServerSeries {
            responses: [class("1xx"), class("2xx"), class("3xx"), class("4xx"), class("5xx")],
            errors: ErrorKind::ALL.map(|k| self.errors.with_label_values(&[pool, origin, k.as_str()])),
            duration: self.duration.with_label_values(&[pool, origin]),
            up: self.up.with_label_values(&[pool, origin]),
            check_ok: self.checks.with_label_values(&[pool, origin, "ok"]),
            check_fail: self.checks.with_label_values(&[pool, origin, "fail"]),
        }
    }

    /// The series of pool `pool`.
    pub(crate) fn pool(&self, pool: &str) -> PoolSeries {
        let r = |c: RetryCause| self.retries.with_label_values(&[pool, c.as_str()]);
        PoolSeries {
            retries: [
                r(RetryCause::Connect),
                r(RetryCause::Error),
                r(RetryCause::Status5xx),
                r(RetryCause::StaleConnection),
            ],
            budget_exhausted: self.budget.with_label_values(&[pool]),
        }
    }
}

impl ServerSeries {
    /// Counts a response head with `status`.
    pub(crate) fn response(&self, status: u16) {
        if let Some(c) = self.responses.get(usize::from(status / 100).wrapping_sub(1)) {
            c.inc();
        }
    }

    /// Counts a failed try.
    pub(crate) fn error(&self, kind: ErrorKind) {
        let i = ErrorKind::ALL.iter().position(|k| *k == kind).unwrap_or(ErrorKind::ALL.len() - 1);
        self.errors[i].inc();
    }

    /// Counts one active check.
    pub(crate) fn check(&self, ok: bool) {
        if ok { self.check_ok.inc() } else { self.check_fail.inc() }
    }
}

impl PoolSeries {
    /// Counts one retry.
    pub(crate) fn retry(&self, cause: RetryCause) {
        let i = match cause {
            RetryCause::Connect => 0,
            RetryCause::Error => 1,
            RetryCause::Status5xx => 2,
            RetryCause::StaleConnection => 3,
        };
        self.retries[i].inc();
    }
}
