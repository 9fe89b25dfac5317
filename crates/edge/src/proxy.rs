//! The Pingora `ProxyHttp` service: Pingora's phases are the spine of the edge.
//!
//! | phase | what the edge does |
//! |---|---|
//! | `request_filter` | CORS preflight; validation ([`crate::validate`]); 401/403 written here, `Ok(true)` |
//! | `upstream_peer` | the origin's pre-resolved socket address, with timeouts |
//! | `upstream_request_filter` | canonical, token-free target; `Host`; our cookie and tokenised `Referer` removed |
//! | `response_filter` | CORS, `Set-Cookie` (cookie mode), playlist framing (chunked, no `Content-Length`) |
//! | `response_body_filter` | buffers an HLS playlist (bounded) and rewrites it at end of stream |
//! | `logging` | metrics and the JSON access log |
//!
//! `request_filter` runs before any cache lookup, so validation also guards cache hits.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::header;
use pingora::http::ResponseHeader;
use pingora::prelude::{HttpPeer, RequestHeader};
use pingora::proxy::{ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};
use stile_token::{Reason, Token};

use crate::clock::SharedClock;
use crate::config::{CookieConfig, CorsConfig, EdgeConfig};
use crate::geo::{Geo, client_ip};
use crate::metrics::{Metrics, ObjectKind, PlaylistOutcome};
use crate::playlist;
use crate::state::SharedState;
use crate::transport::{self, Transport};
use crate::validate::{Input, Manifest, Validator};

/// Name of the diagnostic header carrying the reason code.
pub(crate) const REASON_HEADER: &str = "x-stile-reason";

/// The edge proxy service.
#[derive(Debug)]
pub(crate) struct EdgeProxy {
    validator: Validator,
    /// `validation.enabled`: false only in benchmarks (an open proxy; see the config docs).
    validate: bool,
    shared: Arc<SharedState>,
    metrics: Arc<Metrics>,
    geo: Arc<Geo>,
    clock: SharedClock,
    peer: HttpPeer,
    origin_host: String,
    trusted_hops: usize,
    cookie: CookieConfig,
    rewrite_playlists: bool,
    playlist_max: usize,
    cors: CorsConfig,
    reason_header: bool,
    access_log: bool,
    denied: ResponseHeader,
    unauthorized: ResponseHeader,
}

/// Everything one request carries from phase to phase.
#[derive(Debug)]
pub(crate) struct RequestCtx {
    started: Option<Instant>,
    admitted_at: Option<Instant>,
    result: Option<std::result::Result<(), Reason>>,
    transport: Transport,
    token: Option<Token>,
    client: Option<IpAddr>,
    upstream_target: Option<Vec<u8>>,
    cors_origin: Option<http::HeaderValue>,
    set_cookie: Option<String>,
    rewrite: Option<Rewrite>,
    upstream_status: Option<u16>,
    preflight: bool,
    kind: ObjectKind,
}

/// A playlist being buffered for rewriting.
#[derive(Debug)]
struct Rewrite {
    token: String,
    host: Option<String>,
    buf: Vec<u8>,
    /// Set in `response_filter`: rewriting applies to this response.
    active: bool,
}

impl EdgeProxy {
    /// Builds the service from a validated configuration and its runtime parts.
    pub(crate) fn new(
        config: &EdgeConfig,
        origin: SocketAddr,
        shared: Arc<SharedState>,
        metrics: Arc<Metrics>,
        geo: Arc<Geo>,
        clock: SharedClock,
    ) -> EdgeProxy {
        let mut peer = HttpPeer::new(origin, false, String::new());
        let o = &config.origin;
        peer.options.connection_timeout = Some(Duration::from_millis(o.connect_timeout_ms));
        peer.options.read_timeout = Some(Duration::from_millis(o.read_timeout_ms));
        peer.options.write_timeout = Some(Duration::from_millis(o.write_timeout_ms));
        peer.options.idle_timeout = Some(Duration::from_secs(o.idle_timeout_secs));
        EdgeProxy {
            validator: Validator::new(config),
            validate: config.validation.enabled,
            shared,
            metrics,
            geo,
            clock,
            peer,
            origin_host: config.origin_host(),
            trusted_hops: config.client.trusted_hops,
            cookie: config.cookie.clone(),
            rewrite_playlists: config.playlist.rewrite,
            playlist_max: config.playlist.max_bytes,
            cors: config.cors.clone(),
            reason_header: config.diagnostics.reason_header,
            access_log: config.access_log.enabled,
            denied: denial_header(403),
            unauthorized: denial_header(401),
        }
    }

    fn allowed_origin(&self, session: &Session) -> Option<http::HeaderValue> {
        if self.cors.allowed_origins.is_empty() {
            return None;
        }
        let origin = session.req_header().headers.get(header::ORIGIN)?;
        let o = origin.as_bytes();
        self.cors
            .allowed_origins
            .iter()
            .any(|a| a == "*" || a.as_bytes().eq_ignore_ascii_case(o))
            .then(|| origin.clone())
    }

    fn add_cors(&self, resp: &mut ResponseHeader, origin: &http::HeaderValue) -> Result<()> {
        resp.insert_header(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone())?;
        resp.append_header(header::VARY, "Origin")?;
        resp.insert_header(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true")?;
        if self.reason_header {
            resp.insert_header(header::ACCESS_CONTROL_EXPOSE_HEADERS, REASON_HEADER)?;
        }
        Ok(())
    }

    async fn answer_preflight(&self, session: &mut Session, origin: &http::HeaderValue) -> Result<()> {
        let mut resp = ResponseHeader::build(204, Some(6))?;
        self.add_cors(&mut resp, origin)?;
        resp.insert_header(header::ACCESS_CONTROL_ALLOW_METHODS, "GET, HEAD, OPTIONS")?;
        if let Some(h) = session.req_header().headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned() {
            resp.insert_header(header::ACCESS_CONTROL_ALLOW_HEADERS, h)?;
        }
        resp.insert_header(header::ACCESS_CONTROL_MAX_AGE, self.cors.max_age_secs.to_string())?;
        resp.insert_header(header::CONTENT_LENGTH, "0")?;
        session.write_response_header(Box::new(resp), true).await
    }

    async fn deny(&self, session: &mut Session, ctx: &RequestCtx, reason: Reason) -> Result<()> {
        let status = reason.http_status();
        let mut resp = if status == 401 { self.unauthorized.clone() } else { self.denied.clone() };
        if self.reason_header {
            resp.insert_header(REASON_HEADER, reason.as_str())?;
        }
        if let Some(o) = &ctx.cors_origin {
            self.add_cors(&mut resp, o)?;
        }
        let head = session.req_header().method == http::Method::HEAD;
        session.write_response_header(Box::new(resp), head).await?;
        if !head {
            session.write_response_body(Some(Bytes::from_static(denial_body(status))), true).await?;
        }
        Ok(())
    }

    /// The raw token string, for the few admitted manifests that need it again.
    fn token_string(&self, session: &Session) -> Option<String> {
        let req = session.req_header();
        let cookies = req.headers.get_all(header::COOKIE).into_iter().map(http::HeaderValue::as_bytes);
        transport::locate(req.raw_path(), cookies, self.validator.names()).ok()?.token.map(str::to_owned)
    }

    fn cookie_header(&self, token: &Token, value: &str, now: u64) -> String {
        let max_age = token.expires_at().saturating_sub(now);
        let c = &self.cookie;
        format!(
            "{}={}; Path={}; Max-Age={}{}; HttpOnly; SameSite={}",
            c.name,
            value,
            token.scope_path(),
            max_age,
            if c.secure { "; Secure" } else { "" },
            c.same_site.as_str()
        )
    }
}

#[async_trait]
impl ProxyHttp for EdgeProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: None,
            admitted_at: None,
            result: None,
            transport: Transport::None,
            token: None,
            client: None,
            upstream_target: None,
            cors_origin: None,
            set_cookie: None,
            rewrite: None,
            upstream_status: None,
            preflight: false,
            kind: ObjectKind::Other,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let started = Instant::now();
        ctx.started = Some(started);
        ctx.cors_origin = self.allowed_origin(session);
        let req = session.req_header();
        if let Some(origin) = ctx.cors_origin.clone()
            && req.method == http::Method::OPTIONS
            && req.headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            ctx.preflight = true;
            self.answer_preflight(session, &origin).await?;
            return Ok(true);
        }
        let peer = session.client_addr().and_then(|a| a.as_inet()).map(SocketAddr::ip);
        let xff = req.headers.get_all("x-forwarded-for").into_iter().map(http::HeaderValue::as_bytes);
        let client = client_ip(peer, self.trusted_hops, xff);
        ctx.client = client;
        if !self.validate {
            // `validation.enabled = false` (benchmarks only): admit as received.
            ctx.result = Some(Ok(()));
            ctx.admitted_at = Some(Instant::now());
            return Ok(false);
        }
        let now = self.clock.now();
        let state = self.shared.load();
        let input = Input { target: req.raw_path(), client_ip: client, now };
        let cookies = req.headers.get_all(header::COOKIE).into_iter().map(http::HeaderValue::as_bytes);
        let geo_header = self.geo.header().and_then(|h| req.headers.get(h)).map(http::HeaderValue::as_bytes);
        let verdict = self.validator.validate(&state, &input, cookies, || self.geo.country(client, geo_header));
        drop(state);
        self.metrics.validation_seconds(started.elapsed().as_secs_f64());
        ctx.result = Some(verdict.result);
        ctx.transport = verdict.transport;
        ctx.kind = ObjectKind::classify(verdict.manifest.is_some(), session.req_header().raw_path());
        ctx.token = verdict.token;
        if let Err(reason) = verdict.result {
            self.deny(session, ctx, reason).await?;
            return Ok(true);
        }
        ctx.upstream_target = verdict.upstream_target;
        ctx.admitted_at = Some(Instant::now());
        let by_link = matches!(verdict.transport, Transport::Path | Transport::Query);
        let want_cookie = self.cookie.enabled && by_link && verdict.manifest.is_some();
        // HEAD answers carry no body to rewrite; their headers stay the origin's.
        let want_rewrite = self.rewrite_playlists
            && verdict.transport == Transport::Query
            && verdict.manifest == Some(Manifest::Hls)
            && session.req_header().method == http::Method::GET;
        if (want_cookie || want_rewrite)
            && let (Some(raw), Some(token)) = (self.token_string(session), ctx.token.as_ref())
        {
            if want_cookie {
                ctx.set_cookie = Some(self.cookie_header(token, &raw, now));
            }
            if want_rewrite {
                let host =
                    session.req_header().headers.get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_owned);
                ctx.rewrite = Some(Rewrite { token: raw, host, buf: Vec::new(), active: false });
            }
        }
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
        Ok(Box::new(self.peer.clone()))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        up: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(target) = ctx.upstream_target.take() {
            up.set_raw_path(&target)?;
        }
        up.insert_header(header::HOST, &self.origin_host)?;
        if self.cookie.enabled {
            let stripped: Vec<Vec<u8>> = up
                .headers
                .get_all(header::COOKIE)
                .into_iter()
                .filter_map(|h| transport::strip_cookie(h.as_bytes(), &self.cookie.name))
                .collect();
            if !stripped.is_empty() {
                let kept: Vec<Vec<u8>> = up
                    .headers
                    .get_all(header::COOKIE)
                    .into_iter()
                    .map(|h| {
                        transport::strip_cookie(h.as_bytes(), &self.cookie.name)
                            .unwrap_or_else(|| h.as_bytes().to_vec())
                    })
                    .filter(|v| !v.is_empty())
                    .collect();
                up.remove_header(&header::COOKIE);
                for v in kept {
                    up.append_header(header::COOKIE, http::HeaderValue::from_bytes(&v).map_err(|_| bad_header())?)?;
                }
            }
        }
        if let Some(r) = up.headers.get(header::REFERER) {
            let names = self.validator.names();
            let r = r.as_bytes();
            let q = format!("{}=", names.query_param);
            if contains(r, q.as_bytes()) || contains(r, names.path_prefix.as_bytes()) {
                up.remove_header(&header::REFERER);
            }
        }
        if ctx.rewrite.is_some() {
            // The playlist must arrive uncompressed to be rewritten.
            up.remove_header(&header::ACCEPT_ENCODING);
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let status = resp.status.as_u16();
        ctx.upstream_status = Some(status);
        if let Some(o) = &ctx.cors_origin {
            self.add_cors(resp, o)?;
        }
        if let Some(c) = ctx.set_cookie.take()
            && resp.status.is_success()
        {
            resp.append_header(header::SET_COOKIE, c)?;
        }
        if let Some(rw) = ctx.rewrite.as_mut() {
            let encoded = resp
                .headers
                .get(header::CONTENT_ENCODING)
                .is_some_and(|e| !e.as_bytes().eq_ignore_ascii_case(b"identity"));
            let len = resp
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok());
            if status != 200 {
            } else if encoded {
                self.metrics.playlist(PlaylistOutcome::Encoded);
            } else if len.is_some_and(|l| l > self.playlist_max) {
                self.metrics.playlist(PlaylistOutcome::TooLarge);
            } else {
                rw.active = true;
                rw.buf.reserve(len.unwrap_or(16 << 10));
                resp.remove_header(&header::CONTENT_LENGTH);
                resp.remove_header(&header::ETAG);
                resp.insert_header(header::TRANSFER_ENCODING, "chunked")?;
                // The body now carries a viewer's token: no shared caching.
                resp.insert_header(header::CACHE_CONTROL, "private, no-store")?;
            }
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        let Some(rw) = ctx.rewrite.as_mut().filter(|r| r.active) else { return Ok(None) };
        if let Some(b) = body.take() {
            rw.buf.extend_from_slice(&b);
        }
        if rw.buf.len() > self.playlist_max {
            // Too large after all: flush what we hold unmodified and stream the rest.
            *body = Some(Bytes::from(std::mem::take(&mut rw.buf)));
            rw.active = false;
            self.metrics.playlist(PlaylistOutcome::TooLarge);
            return Ok(None);
        }
        if end_of_stream {
            let out = playlist::rewrite(&rw.buf, &self.validator.names().query_param, &rw.token, rw.host.as_deref());
            *body = Some(Bytes::from(out));
            rw.buf = Vec::new();
            rw.active = false;
            self.metrics.playlist(PlaylistOutcome::Rewritten);
        }
        Ok(None)
    }

    /// Pingora's error logs describe the request with this; the default includes the
    /// query, which may hold a token.
    fn request_summary(&self, session: &Session, _ctx: &RequestCtx) -> String {
        let req = session.req_header();
        let path = log_path(req.raw_path(), &self.validator.names().path_prefix);
        format!("{} {}", req.method, String::from_utf8_lossy(path))
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let reason = ctx.result.and_then(Result::err);
        // A forged token must not choose label values or log fields: only MAC-verified channels count.
        let verified = ctx.token.is_some()
            && !matches!(reason, Some(Reason::Malformed | Reason::UnknownKey | Reason::BadSignature));
        let channel = ctx.token.as_ref().filter(|_| verified).and_then(Token::channel);
        if !ctx.preflight {
            self.metrics.request(reason, ctx.transport, channel, ctx.kind);
        }
        let upstream_secs = ctx.admitted_at.map(|t| t.elapsed().as_secs_f64());
        if let Some(secs) = upstream_secs {
            match (e, ctx.upstream_status) {
                (Some(err), _) if *err.esource() == ErrorSource::Upstream => {
                    self.metrics.upstream_error(error_kind(err.etype()));
                }
                (_, Some(s)) => self.metrics.upstream_response(s, secs),
                _ => {}
            }
        }
        if !self.access_log {
            return;
        }
        let req = session.req_header();
        let path = log_path(req.raw_path(), &self.validator.names().path_prefix);
        let path = String::from_utf8_lossy(path);
        let decision = match (ctx.preflight, reason) {
            (true, _) => "preflight",
            (false, None) if ctx.result.is_some() => "allow",
            (false, None) => "error",
            (false, Some(_)) => "deny",
        };
        tracing::info!(
            target: "stile::access",
            client = ctx.client.map(tracing::field::display),
            method = req.method.as_str(),
            path = %path,
            decision,
            reason = reason.map(Reason::as_str),
            token.id = ctx.token.as_ref().map(|t| tracing::field::display(t.token_id())),
            token.key = ctx.token.as_ref().filter(|_| verified).map(Token::key_id),
            channel,
            transport = ctx.transport.as_str(),
            status,
            bytes = session.body_bytes_sent(),
            upstream_ms = upstream_secs.map(|s| s * 1e3),
            error = e.map(|e| e.etype().as_str()),
        );
    }
}

fn denial_header(status: u16) -> ResponseHeader {
    let body = denial_body(status);
    let mut h = ResponseHeader::build(status, Some(4)).expect("valid status");
    let _ = h.insert_header(header::CONTENT_TYPE, "text/plain; charset=utf-8");
    let _ = h.insert_header(header::CONTENT_LENGTH, body.len().to_string());
    let _ = h.insert_header(header::CACHE_CONTROL, "no-store");
    h
}

fn denial_body(status: u16) -> &'static [u8] {
    if status == 401 { b"unauthorized\n" } else { b"forbidden\n" }
}

/// The request path for logs: no query (it may hold a token), no path-prefix token.
fn log_path<'a>(target: &'a [u8], path_prefix: &str) -> &'a [u8] {
    let path = &target[..target.iter().position(|&b| b == b'?').unwrap_or(target.len())];
    let path = match path.strip_prefix(path_prefix.as_bytes()) {
        Some(rest) => rest.iter().position(|&b| b == b'/').map_or(&b"/"[..], |i| &rest[i..]),
        None => path,
    };
    &path[..path.len().min(512)]
}

fn error_kind(t: &ErrorType) -> &'static str {
    match t {
        ErrorType::ConnectTimedout => "connect_timeout",
        ErrorType::ConnectRefused | ErrorType::ConnectNoRoute | ErrorType::ConnectError | ErrorType::SocketError => {
            "connect"
        }
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => "timeout",
        ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed => "io",
        ErrorType::InvalidHTTPHeader | ErrorType::H1Error | ErrorType::H2Error => "protocol",
        _ => "other",
    }
}

fn bad_header() -> Box<Error> {
    Error::new(ErrorType::InvalidHTTPHeader)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_paths_carry_no_token() {
        assert_eq!(log_path(b"/vod/a.ts?st=SECRET", "/_st/"), b"/vod/a.ts");
        assert_eq!(log_path(b"/_st/SECRET/vod/a.ts", "/_st/"), b"/vod/a.ts");
        assert_eq!(log_path(b"/_st/SECRET", "/_st/"), b"/");
        assert_eq!(log_path(b"/plain", "/_st/"), b"/plain");
    }
}
