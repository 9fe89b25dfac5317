//! The Pingora `ProxyHttp` service: Pingora's phases are the spine of the edge.
//!
//! | phase | what the edge does |
//! |---|---|
//! | (before any phase) | `Front` ([`crate::tls`]) runs the TLS handshake on TLS listeners; [`crate::intake`] keeps an HTTP/1 request line as sent; requests Pingora refuses are logged there |
//! | `request_filter` | HTTPS redirect (plain listeners, `tls.redirect_http`); request line as sent = as parsed, else 400; CORS preflight; player beacons ([`crate::beacon`]: answered here, never proxied); validation ([`crate::validate`]); 401/403 written here, `Ok(true)` |
//! | cache hooks | admitted `GET`/`HEAD` only: token-free key, lookup, lock, freshness ([`crate::cache`]); a miss then goes to `upstream_peer` |
//! | `upstream_peer` | the pool for the canonical path, then an origin of it ([`crate::origin`]): pre-resolved address, TLS, timeouts |
//! | `upstream_request_filter` | canonical, token-free target; the origin's `Host`; our cookie and tokenised `Referer` removed |
//! | `upstream_response_filter` | per-origin metrics, passive health; a 5xx to retry is turned into an error here |
//! | `fail_to_connect`, `error_while_proxy` | passive health and the retry decision ([`crate::origin`]) |
//! | `response_filter` | CORS, `Set-Cookie` (cookie mode), no shared caching of per-viewer answers, HTTP/1.1 status line, playlist framing (chunked, or close-delimited for HTTP/1.0 clients) |
//! | `response_body_filter` | buffers an HLS playlist or DASH MPD (bounded) and rewrites it at end of stream (or at its `Content-Length`) |
//! | `logging` | metrics (cache ones too) and the JSON access log, with the cache status |
//!
//! `request_filter` runs before any cache lookup, so validation also guards cache hits.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::header;
use pingora::cache::{CacheKey, RespCacheable};
use pingora::http::ResponseHeader;
use pingora::prelude::{HttpPeer, RequestHeader};
use pingora::protocols::Digest;
use pingora::proxy::{FailToProxy, ProxyHttp, RangeType, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};
use stile_token::{Reason, Session as PlaybackSession, SessionId, Token};

use crate::beacon::{self, BeaconResult, BudgetKey, Limiter};
use crate::cache::Cache;
use crate::clock::SharedClock;
use crate::config::{CookieConfig, EdgeConfig};
use crate::cors::{self, Cors, Grant};
use crate::fetch::{self, Fetcher};
use crate::foreign::{ForeignGate, ForeignInput};
use crate::geo::{Geo, client_ip};
use crate::metrics::{Metrics, ObjectKind, PlaylistOutcome, SessionEvent};
use crate::origin::{Attempts, ErrorKind as OriginErrorKind, Failed, Origins};
use crate::playback::{Segments, Started, Tracker};
use crate::state::SharedState;
use crate::tap;
use crate::tls::Redirect;
use crate::transport::{self, Transport};
use crate::validate::{Input, Manifest, Validator};
use crate::{mpd, playlist};

/// Name of the diagnostic header carrying the reason code.
pub(crate) const REASON_HEADER: &str = "x-stile-reason";

/// Name of the diagnostic header carrying the cache status.
pub(crate) const CACHE_HEADER: &str = "x-stile-cache";

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
    origins: Arc<Origins>,
    redirect: Option<Redirect>,
    trusted_hops: usize,
    cookie: CookieConfig,
    rewrite_playlists: bool,
    playlist_max: usize,
    cors: Cors,
    reason_header: bool,
    access_log: bool,
    /// The object cache (`[cache] enabled`).
    cache: Option<&'static Cache>,
    /// The sequential path to the origin for plain `GET`s (`origin.fast_path`).
    fetch: Option<Fetcher>,
    /// Other vendors' links (`[[foreign]]`), judged when a request has no Stile token.
    foreign: ForeignGate,
    /// Per-share playback outcomes (`[outcomes]`): the session tracker and VOD segment ends.
    outcomes: Option<(Arc<Tracker>, Arc<Segments>)>,
    /// `beacon.enabled`.
    beacons: bool,
    /// The beacon limits (`[beacon]`).
    beacon_limits: Limiter,
    denied: ResponseHeader,
    unauthorized: ResponseHeader,
    bad_request: ResponseHeader,
}

/// Counts and logs the requests that Pingora answers itself, before any phase
/// runs (a request line or head its parser refuses): the [`crate::intake`] calls it.
#[derive(Clone, Debug)]
pub(crate) struct RefusalLog {
    metrics: Arc<Metrics>,
    path_prefix: String,
    trusted_hops: usize,
    access_log: bool,
}

impl RefusalLog {
    /// One refused request: `line` is its first line as sent (possibly cut), `status`
    /// Pingora's answer. Counted as a `malformed` denial; the access-log line carries
    /// the same redacted path as every other.
    pub(crate) fn record(&self, line: &[u8], status: u16, peer: Option<IpAddr>) {
        let (method, target) = split_request_line(line);
        let kind = ObjectKind::classify(false, target.unwrap_or_default());
        self.metrics.request(Some(Reason::Malformed), Transport::None, None, kind);
        if !self.access_log {
            return;
        }
        let path = target.map(|t| log_path(t, &self.path_prefix));
        tracing::info!(
            target: "stile::access",
            client = refused_client(peer, self.trusted_hops).map(tracing::field::display),
            method = method.and_then(|m| std::str::from_utf8(m).ok()),
            path = path.as_deref(),
            decision = "deny",
            reason = Reason::Malformed.as_str(),
            transport = Transport::None.as_str(),
            status,
            bytes = 0u64,
            error = "refused_by_parser",
        );
    }
}

/// The client of a refused request for the access log: the socket peer when
/// the edge trusts no hop in front (`X-Forwarded-For` cannot be read from a
/// request that did not parse).
pub(crate) fn refused_client(peer: Option<IpAddr>, trusted_hops: usize) -> Option<IpAddr> {
    peer.filter(|_| trusted_hops == 0)
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
    cors: Option<Grant>,
    set_cookie: Option<String>,
    rewrite: Option<Rewrite>,
    upstream_status: Option<u16>,
    preflight: bool,
    kind: ObjectKind,
    /// The pool and the tries at its origins (set at the first `upstream_peer`).
    origin: Option<Attempts>,
    /// Answered with a redirect to HTTPS.
    redirected: bool,
    /// A stale-while-revalidate refresh Pingora runs in the background (it serves nobody).
    background: bool,
    /// Judged by a `[[foreign]]` entry instead of a Stile token.
    foreign: Option<ForeignCtx>,
    /// The verified session credential that admitted the request, if one did.
    playback: Option<Arc<PlaybackSession>>,
    /// The playback session id read or written (access log; never the credential).
    session_id: Option<SessionId>,
    /// An HLS playlist served under a session, read for its VOD segment ends ([`crate::playback`]).
    observe: Option<Observe>,
    /// A player beacon (`…/_stile_beacon`): answered here, never proxied.
    beacon: bool,
    /// What became of the beacon, once answered (`None` for a credential refused).
    beacon_result: Option<BeaconResult>,
    /// Answered by the edge itself from a fresh memory-tier object (`direct_hit`).
    direct: Option<Direct>,
    /// The fast path (`direct_fetch`) failed and logged it.
    fetch_failed: bool,
}

/// A hit the edge answered itself (`EdgeProxy::direct_hit`).
#[derive(Clone, Copy, Debug)]
struct Direct {
    status: u16,
    /// Body bytes written.
    bytes: u64,
    /// The body went out with `sendfile`.
    zero_copy: bool,
}

/// A playlist body being read (not changed) for the segment table.
#[derive(Debug)]
struct Observe {
    /// The playlist's canonical path (segment URIs resolve against it).
    path: String,
    buf: Vec<u8>,
    /// Set in `response_filter`: a 200 with an identity body within `playlist.max_bytes`.
    active: bool,
    expect: Option<usize>,
}

/// Session credentials written for one admitted request (`docs/sessions.md`).
struct SessionCredentials {
    /// Lifetime `idle_secs` (clamped to the hard maximum): cookies, live playlists.
    idle: String,
    /// Lifetime up to the hard maximum: URLs that will not be renewed (VOD
    /// playlists and static MPDs, path-prefix redirects).
    full: String,
    /// When the session's hard maximum ends it.
    max_at: u64,
    event: SessionEvent,
    id: SessionId,
}

/// What the later phases need of a foreign verdict (no credential in it).
#[derive(Debug)]
struct ForeignCtx {
    format: stile_foreign::Format,
    /// The vendor's link id, once verified.
    id: Option<String>,
    /// The name of the key that verified the link.
    key: Option<String>,
}

/// A playlist or MPD being buffered for rewriting.
#[derive(Debug)]
struct Rewrite {
    format: Manifest,
    /// The query parameter carrying the link (`None`: Stile's `token.query_param`).
    param: Option<String>,
    /// The MPD request's query without the token (for `UrlQueryInfo`, [`mpd`]).
    query: String,
    token: String,
    host: Option<String>,
    buf: Vec<u8>,
    /// The credential for VOD playlists and static MPDs (a session whose lifetime
    /// reaches its hard maximum: the player fetches such a playlist once).
    vod_token: Option<String>,
    /// Set in `response_filter`: rewriting applies to this response.
    active: bool,
    /// The body's length when the header gave it: a body streamed from a cache fill
    /// ends without an end-of-stream call, so the rewrite also ends at this length.
    expect: Option<usize>,
}

impl EdgeProxy {
    /// Builds the service from a validated configuration and its runtime parts.
    #[allow(clippy::too_many_arguments)] // reason: the runtime parts, each built and checked by `Edge::build`.
    pub(crate) fn new(
        config: &EdgeConfig,
        origins: Arc<Origins>,
        redirect: Option<Redirect>,
        shared: Arc<SharedState>,
        metrics: Arc<Metrics>,
        geo: Arc<Geo>,
        clock: SharedClock,
    ) -> EdgeProxy {
        let validator = Validator::new(config);
        metrics.register_verified_cache(validator.verified_cache());
        metrics.register_session_cache(validator.session_cache());
        EdgeProxy {
            validator,
            validate: config.validation.enabled,
            shared,
            metrics,
            geo,
            clock,
            origins,
            redirect,
            trusted_hops: config.client.trusted_hops,
            cookie: config.cookie.clone(),
            rewrite_playlists: config.playlist.rewrite,
            playlist_max: config.playlist.max_bytes,
            // `EdgeConfig::validate` compiled it already.
            cors: compile_cors(config),
            reason_header: config.diagnostics.reason_header,
            access_log: config.access_log.enabled,
            cache: None,
            fetch: None,
            // `EdgeConfig::validate` checked it already.
            foreign: ForeignGate::new(&config.foreign).unwrap_or_default(),
            outcomes: None,
            beacons: config.beacon.enabled,
            beacon_limits: Limiter::new(
                config.beacon.per_session_per_minute,
                if config.beacon.enabled { config.beacon.budget_slots } else { 1 },
                config.beacon.rate_per_sec,
                config.beacon.burst,
            ),
            denied: denial_header(403),
            unauthorized: denial_header(401),
            bad_request: denial_header(400),
        }
    }

    /// Caches admitted objects in `cache`.
    pub(crate) fn with_cache(mut self, cache: Option<&'static Cache>) -> EdgeProxy {
        self.cache = cache;
        self
    }

    /// Sends plain `GET`s the cache does not take to the origin through `fetch`.
    pub(crate) fn with_fetch(mut self, fetch: Option<Fetcher>) -> EdgeProxy {
        self.fetch = fetch;
        self
    }

    /// Tracks playback outcomes in `tracker` and `segments` (`[outcomes] enabled`).
    pub(crate) fn with_outcomes(mut self, outcomes: Option<(Arc<Tracker>, Arc<Segments>)>) -> EdgeProxy {
        self.outcomes = outcomes;
        self
    }

    /// The canonical path of an admitted request (without its query).
    fn canonical_path<'a>(session: &'a Session, ctx: &'a RequestCtx) -> &'a [u8] {
        let target = ctx.upstream_target.as_deref().unwrap_or_else(|| session.req_header().raw_path());
        &target[..target.iter().position(|&b| b == b'?').unwrap_or(target.len())]
    }

    /// The origin pool that serves this request's canonical path (the raw one with
    /// validation off), longest prefix first. It is also the cache's namespace: every
    /// origin of a pool serves the same objects, so one fill serves the pool.
    fn pool(&self, session: &Session, ctx: &RequestCtx) -> Option<usize> {
        self.origins.route(Self::canonical_path(session, ctx))
    }

    /// What the [`crate::intake`] needs to count and log the requests Pingora refuses.
    pub(crate) fn refusals(&self) -> RefusalLog {
        RefusalLog {
            metrics: self.metrics.clone(),
            path_prefix: self.validator.names().path_prefix.clone(),
            trusted_hops: self.trusted_hops,
            access_log: self.access_log,
        }
    }

    /// CORS headers for this response: `Vary: Origin` whenever the answer depends on the
    /// origin, the grant's headers when the page's origin may read it.
    fn add_cors(&self, resp: &mut ResponseHeader, grant: Option<&Grant>) -> Result<()> {
        if self.cors.enabled() {
            // The edge decides who may read, not the origin's own CORS headers.
            for h in [
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
            ] {
                resp.remove_header(&h);
            }
        }
        if self.cors.varies()
            && !resp.headers.get_all(header::VARY).iter().any(|v| v.as_bytes().eq_ignore_ascii_case(b"origin"))
        {
            resp.append_header(header::VARY, "Origin")?;
        }
        let Some(g) = grant else { return Ok(()) };
        resp.insert_header(header::ACCESS_CONTROL_ALLOW_ORIGIN, g.allow_origin.clone())?;
        if g.credentials {
            resp.insert_header(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true")?;
        }
        if let Some(e) = self.cors.expose_headers() {
            resp.insert_header(header::ACCESS_CONTROL_EXPOSE_HEADERS, e.clone())?;
        }
        Ok(())
    }

    async fn answer_preflight(&self, session: &mut Session, grant: &Grant) -> Result<()> {
        let mut resp = ResponseHeader::build(204, Some(8))?;
        self.add_cors(&mut resp, Some(grant))?;
        let methods = if beacon::is_beacon_path(session.req_header().raw_path()) {
            "POST, OPTIONS"
        } else {
            "GET, HEAD, OPTIONS"
        };
        resp.insert_header(header::ACCESS_CONTROL_ALLOW_METHODS, methods)?;
        if let Some(h) = session.req_header().headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned()
            && cors::is_header_list(h.as_bytes())
        {
            resp.insert_header(header::ACCESS_CONTROL_ALLOW_HEADERS, h)?;
        }
        resp.insert_header(header::ACCESS_CONTROL_MAX_AGE, self.cors.max_age())?;
        resp.insert_header(header::CONTENT_LENGTH, "0")?;
        session.write_response_header(Box::new(resp), true).await
    }

    /// A request to a beacon URL, before its credential is checked: answered here when
    /// beacons are off (`404`), for any method but `POST` (`405`), and when the edge-wide
    /// bucket is empty (`429`) — no validation, no body read. `true` when answered.
    async fn beacon_gate(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.beacon = true;
        ctx.kind = ObjectKind::Beacon;
        let refused = if !self.beacons {
            Some(BeaconResult::Disabled)
        } else if session.req_header().method != http::Method::POST {
            Some(BeaconResult::Method)
        } else if !self.beacon_limits.take_global() {
            Some(BeaconResult::RateLimited)
        } else {
            None
        };
        match refused {
            // The edge-wide bucket refills continuously: a second is enough.
            Some(r) => self.answer_beacon(session, ctx, r, (r == BeaconResult::RateLimited).then_some(1)).await,
            None => Ok(false),
        }
    }

    /// A beacon whose credential was admitted (`session` when a session credential
    /// was): the session's (or link's) budget, then the body, bounded, parsed and
    /// counted on the link's channel. Always answered here (`Ok(true)`).
    async fn beacon(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        playback: Option<&PlaybackSession>,
    ) -> Result<bool> {
        let key = playback
            .map(|s| BudgetKey::Session(s.id().0))
            .or_else(|| ctx.token.as_ref().map(|t| BudgetKey::Link(t.token_id().as_u64())));
        let now = self.clock.now();
        if key.is_some_and(|k| !self.beacon_limits.take_key(k, now)) {
            // The budget is per clock minute: it refills at the next one.
            let next_minute = 60 - now % 60;
            return self.answer_beacon(session, ctx, BeaconResult::RateLimited, Some(next_minute)).await;
        }
        let declared = session
            .req_header()
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > beacon::MAX_BODY as u64) {
            return self.answer_beacon(session, ctx, BeaconResult::TooLarge, None).await;
        }
        let mut body = Vec::with_capacity(declared.map_or(256, |n| n as usize));
        loop {
            let chunk = match session.read_request_body().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    // Cut short: counted with the bodies that are not beacons.
                    ctx.beacon_result = Some(BeaconResult::Malformed);
                    return Err(e);
                }
            };
            if body.len() + chunk.len() > beacon::MAX_BODY {
                return self.answer_beacon(session, ctx, BeaconResult::TooLarge, None).await;
            }
            body.extend_from_slice(&chunk);
        }
        let result = match beacon::parse(&body) {
            Ok(b) => {
                self.metrics.player(ctx.token.as_ref().and_then(Token::channel), &b);
                BeaconResult::Accepted
            }
            Err(_) => BeaconResult::Malformed,
        };
        self.answer_beacon(session, ctx, result, None).await
    }

    /// The edge's answer to a beacon: no body, never stored, the CORS headers media get,
    /// `Retry-After` (seconds) on a `429`. A body left unread closes the connection
    /// (nothing is drained). Returns `true`.
    async fn answer_beacon(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        result: BeaconResult,
        retry_after: Option<u64>,
    ) -> Result<bool> {
        ctx.beacon_result = Some(result);
        let status = result.status();
        let mut resp = ResponseHeader::build(status, Some(7))?;
        resp.insert_header(header::CACHE_CONTROL, "no-store")?;
        if let Some(secs) = retry_after {
            resp.insert_header(header::RETRY_AFTER, secs.to_string())?;
        }
        if status != 204 {
            resp.insert_header(header::CONTENT_LENGTH, "0")?;
        }
        if result == BeaconResult::Method {
            resp.insert_header(header::ALLOW, "POST")?;
        }
        self.add_cors(&mut resp, ctx.cors.as_ref())?;
        if !matches!(result, BeaconResult::Accepted | BeaconResult::Malformed) {
            session.set_keepalive(None);
        }
        session.write_response_header(Box::new(resp), true).await?;
        Ok(true)
    }

    async fn deny(&self, session: &mut Session, ctx: &RequestCtx, reason: Reason, status: u16) -> Result<()> {
        let mut resp = match status {
            401 => self.unauthorized.clone(),
            400 => {
                // The request line was not what the client sent: do not read another from this connection.
                session.set_keepalive(None);
                self.bad_request.clone()
            }
            _ => self.denied.clone(),
        };
        if self.reason_header {
            resp.insert_header(REASON_HEADER, reason.as_str())?;
        }
        self.add_cors(&mut resp, ctx.cors.as_ref())?;
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

    /// Whether the Stile transports are unambiguous (a token given twice, or a path
    /// marker without a token, is Stile's `malformed`, never a foreign link's to judge).
    fn stile_transport_is_clear(&self, session: &Session) -> bool {
        let req = session.req_header();
        let cookies = req.headers.get_all(header::COOKIE).into_iter().map(http::HeaderValue::as_bytes);
        transport::locate(req.raw_path(), cookies, self.validator.names()).is_ok()
    }

    /// Shared caches (a CDN or corporate proxy in front of the edge) must never store
    /// an answer meant for one viewer: with `no_store` (it sets the viewer's token
    /// cookie, or its body carries the token) nobody may store it; an answer admitted
    /// by the token cookie, or one carrying the origin's own `Set-Cookie`, becomes
    /// `private` (the origin's other directives kept), and one admitted by the cookie
    /// also varies on `Cookie`. Answers admitted by a path or query token stay as the
    /// origin sent them: the token is in the URL, so a cache keyed by URL only ever
    /// serves them to holders of the same link.
    fn keep_from_shared_caches(&self, resp: &mut ResponseHeader, ctx: &RequestCtx, no_store: bool) -> Result<()> {
        let by_cookie = ctx.transport == Transport::Cookie && ctx.result == Some(Ok(()));
        if no_store {
            resp.insert_header(header::CACHE_CONTROL, "private, no-store")?;
        } else if by_cookie || resp.headers.contains_key(header::SET_COOKIE) {
            let value = private_cache_control(resp);
            resp.insert_header(header::CACHE_CONTROL, value)?;
        }
        if by_cookie {
            resp.append_header(header::VARY, "Cookie")?;
        }
        Ok(())
    }

    /// Judges a request without a Stile token by the `[[foreign]]` entries; `false` when
    /// none applies (the Stile verdict stands). Sets the verdict, the token-free upstream
    /// target and, for a manifest whose link can be carried, the rewrite.
    fn judge_foreign(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        state: &crate::state::State,
        now: u64,
        started: Instant,
    ) -> bool {
        let req = session.req_header();
        let cookies: Vec<&[u8]> =
            req.headers.get_all(header::COOKIE).into_iter().map(http::HeaderValue::as_bytes).collect();
        let host_header = req
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri.authority().map(http::uri::Authority::as_str));
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        let scheme = if tls { "https" } else { "http" };
        // Google signs the host as the client wrote it, less a default port.
        let host = crate::foreign::without_default_port(host_header.unwrap_or_default(), scheme).to_ascii_lowercase();
        let headers: Vec<(&str, &[u8])> = if self.foreign.needs_headers() {
            req.headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())).collect()
        } else {
            Vec::new()
        };
        let policy = self.validator.policy();
        let input = ForeignInput {
            target: req.raw_path(),
            cookies: &cookies,
            scheme,
            host: &host,
            client_ip: ctx.client,
            headers: &headers,
            now,
            leeway_secs: policy.leeway_secs,
            unknown_country: policy.unknown_country,
            stale: self.validator.is_stale(state, now),
        };
        let client = ctx.client;
        let geo_header = self.geo.header().and_then(|h| req.headers.get(h)).map(http::HeaderValue::as_bytes);
        let Some(v) = self.foreign.judge(state, &input, || self.geo.country(client, geo_header)) else { return false };
        self.metrics.validation_seconds(started.elapsed().as_secs_f64());
        ctx.result = Some(v.result);
        ctx.transport = v.transport;
        let manifest = crate::validate::manifest_kind(&v.path);
        ctx.kind = ObjectKind::classify(manifest.is_some(), req.raw_path());
        ctx.foreign = Some(ForeignCtx { format: v.format, id: v.token_id, key: v.key_name });
        if v.result.is_err() {
            return true;
        }
        ctx.upstream_target = v.upstream_target;
        // Cookie mode: the vendor's own cookie, for the directory the link covers.
        if let Some(c) = v.cookie.filter(|_| self.cookie.enabled && manifest.is_some())
            && v.transport == Transport::Query
        {
            let max_age = c.expires.map_or(u64::from(u32::MAX), |e| e.saturating_sub(now));
            ctx.set_cookie = Some(self.set_cookie(&c.name, &c.value, &c.path, max_age));
        }
        // HEAD answers carry no body to rewrite (an MPD's rewriter escapes the pairs' `&`).
        if let (true, Some(format), Some((param, token))) = (self.rewrite_playlists, manifest, v.carry_query)
            && req.method == http::Method::GET
        {
            let host = req.headers.get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_owned);
            let query = ctx.upstream_target.as_deref().and_then(|t| t.splitn(2, |&b| b == b'?').nth(1));
            let query = String::from_utf8_lossy(query.unwrap_or_default()).into_owned();
            let param = Some(param);
            ctx.rewrite = Some(Rewrite {
                format,
                param,
                query,
                token,
                host,
                buf: Vec::new(),
                vod_token: None,
                active: false,
                expect: None,
            });
        }
        true
    }

    /// The answer to a request judged by a `[[foreign]]` entry.
    async fn after_foreign(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if ctx.beacon {
            ctx.kind = ObjectKind::Beacon;
        }
        if let Some(Err(reason)) = ctx.result {
            self.deny(session, ctx, reason, reason.http_status()).await?;
            return Ok(true);
        }
        if !ctx.beacon
            && beacon::is_beacon_path(Self::canonical_path(session, ctx))
            && self.beacon_gate(session, ctx).await?
        {
            return Ok(true);
        }
        if ctx.beacon {
            // A vendor's link: no session, no channel; the edge-wide bucket only.
            return self.beacon(session, ctx, None).await;
        }
        ctx.admitted_at = Some(Instant::now());
        self.admitted(session, ctx).await
    }

    /// An admitted request: answered here from the memory tier or fetched from the origin
    /// by the sequential path when it can be (`Ok(true)`), else left to Pingora.
    async fn admitted(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if self.direct_hit(session, ctx).await? {
            return Ok(true);
        }
        self.direct_fetch(session, ctx).await
    }

    /// Answers an admitted `GET` for a fresh, complete object of the memory tier
    /// without Pingora's cache machinery: the stored header through the same
    /// `response_filter` as any hit, then the body — with `sendfile` from its sealed
    /// memory file over plain HTTP/1.1 (no copy of it through user space), else
    /// through Pingora's writer. `Ok(false)` for anything else (ranges, conditional
    /// requests, playlists the edge rewrites or reads, fills in progress, stale or
    /// absent objects), which Pingora's cache then serves as before.
    async fn direct_hit(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let Some(cache) = self.cache else { return Ok(false) };
        let req = session.req_header();
        if req.method != http::Method::GET
            || ctx.result != Some(Ok(()))
            || ctx.background
            || ctx.beacon
            || ctx.rewrite.is_some()
            || ctx.observe.is_some()
            || [header::RANGE, header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE, header::IF_RANGE]
                .iter()
                .any(|h| req.headers.contains_key(h))
        {
            return Ok(false);
        }
        let Some(pool) = self.pool(session, ctx) else { return Ok(false) };
        let target = ctx.upstream_target.as_deref().unwrap_or_else(|| req.raw_path());
        let Some(hit) = cache.direct(self.origins.pool_name(pool), target) else { return Ok(false) };
        let mut resp = hit.header;
        let status = resp.status.as_u16();
        let len = hit.body.len() as u64;
        ctx.direct = Some(Direct { status, bytes: 0, zero_copy: false });
        self.response_filter(session, &mut resp, ctx).await?;
        let down = session.as_downstream();
        if let Some(c) = hit.sealed.as_ref()
            && let Some(stream) = tap::untapped(session)
        {
            let keepalive = down.get_keepalive().is_some() && down.get_keepalive_reuses_remaining() != Some(0);
            let idle = down.get_write_timeout().unwrap_or(DIRECT_WRITE_IDLE);
            let head = h1_head(&mut resp, keepalive)?;
            match stile_zerocopy::send_hit(stream, &head, &c.sealed, idle).await {
                Some(Ok(())) => {
                    tap::written(session, &head);
                    ctx.direct = Some(Direct { status, bytes: len, zero_copy: true });
                    return Ok(true);
                }
                Some(Err(e)) => {
                    return Err(Error::because(ErrorType::WriteError, "sending a cached body", e).into_down());
                }
                // TLS or HTTP/2: Pingora's writer below.
                None => {}
            }
        }
        session.write_response_header(Box::new(resp), false).await?;
        session.write_response_body(Some(hit.body), true).await?;
        ctx.direct = Some(Direct { status, bytes: len, zero_copy: false });
        Ok(true)
    }

    /// Forwards an admitted plain `GET` that the cache does not take (see [`crate::fetch`])
    /// in one sequential exchange with the origin over the edge's own keep-alive pool,
    /// keeping every rule of the proxied path: the same origin choice and accounting, the
    /// same request and response filters. `Ok(false)` — Pingora's proxy then carries the
    /// request — for any other request, and for a try that must be made again before
    /// anything reached the viewer: a pooled connection found closed (the same origin
    /// again), a connect error or a 5xx that the retry policy retries on another origin.
    async fn direct_fetch(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let Some(fetcher) = &self.fetch else { return Ok(false) };
        let taken = self.fetch_plain(fetcher, session, ctx).await;
        if ctx.origin.is_some() {
            self.metrics.fast_path(!matches!(taken, Ok(false)));
        }
        if let Err(e) = &taken {
            // Logged as Pingora logs a failed proxied request (its own line is suppressed:
            // it would call this a failed filter).
            ctx.fetch_failed = true;
            tracing::error!(target: "stile::origin", "Fail to proxy: {e}, {}", self.request_summary(session, ctx));
        }
        taken
    }

    /// [`Self::direct_fetch`]'s exchange; `ctx.origin` is set once the request is taken.
    async fn fetch_plain(&self, fetcher: &Fetcher, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if ctx.result != Some(Ok(()))
            || ctx.background
            || ctx.beacon
            || ctx.rewrite.is_some()
            || ctx.observe.is_some()
            || ctx.origin.is_some()
        {
            return Ok(false);
        }
        // No pool for the path: Pingora's answer (404 from `upstream_peer`); a pool the
        // cache serves: Pingora's cache.
        let Some(pool) = self.pool(session, ctx).filter(|_| self.cache.is_none()) else { return Ok(false) };
        let Some(mut head) = fetch::upstream_head(session.req_header()) else { return Ok(false) };
        ctx.origin = Some(self.origins.begin(pool));
        let attempts = ctx.origin.as_mut().expect("set above");
        let (peer, _) = self.origins.pick(attempts);
        let (mut up, reused) = match fetcher.connector.get_http_session(&*peer).await {
            Ok(s) => s,
            Err(e) => return self.failed_try(attempts, e, Failed::Connect),
        };
        up.read_timeout = peer.options.read_timeout;
        up.write_timeout = peer.options.write_timeout;
        self.upstream_request_filter(session, &mut head, ctx).await?;
        let sent = async {
            up.write_request_header(Box::new(head)).await?;
            up.read_response().await?;
            // Informational answers (`103 Early Hints`) come before the final one.
            for _ in 0..4 {
                if up.get_status().is_none_or(|s| !s.is_informational()) {
                    break;
                }
                up.read_response().await?;
            }
            Ok::<_, Box<Error>>(())
        }
        .await;
        let attempts = ctx.origin.as_mut().expect("set above");
        if let Err(e) = sent {
            if reused && matches!(e.retry, pingora::RetryType::ReusedOnly) {
                // A pooled connection the origin had closed (Pingora's rule, as in
                // `error_while_proxy`): the same origin on a fresh one.
                self.origins.stale_connection(attempts);
                return Ok(false);
            }
            return self.failed_try(attempts, e, Failed::BeforeResponse);
        }
        let mut resp = match up.resp_header() {
            Some(r) if !r.status.is_informational() => Box::new(r.clone()),
            _ => {
                let e = Error::explain(ErrorType::InvalidHTTPHeader, "origin sent only informational answers");
                self.origins.failure(attempts, OriginErrorKind::of(e.etype()), Failed::BeforeResponse, true, true);
                return Err(e.into_up());
            }
        };
        if self.origins.response(attempts, resp.status.as_u16(), true) {
            // A 5xx to retry on another origin: dropped (with its connection) unseen.
            return Ok(false);
        }
        self.response_filter(session, &mut resp, ctx).await?;
        let mut end = up.is_body_done();
        session.write_response_header(resp, end).await?;
        while !end {
            match up.read_body_bytes().await {
                Ok(body) => {
                    end = body.is_none() || up.is_body_done();
                    session.write_response_body(body, end).await?;
                }
                // Past the response head: the try was counted with its status, and
                // nothing is retried once the viewer has part of the answer.
                Err(e) => return Err(e.into_up()),
            }
        }
        // Pooled again when the origin keeps it alive and the body was read to its end.
        fetcher.connector.release_http_session(up, &*peer, peer.options.idle_timeout).await;
        Ok(true)
    }

    /// A try of the fast path failed before the response head: counted against its origin;
    /// `Ok(false)` when the retry policy tries again (through Pingora's proxy), else the error.
    fn failed_try(&self, attempts: &mut Attempts, e: Box<Error>, failed: Failed) -> Result<bool> {
        match self.origins.failure(attempts, OriginErrorKind::of(e.etype()), failed, true, false) {
            true => Ok(false),
            false => Err(e.into_up()),
        }
    }

    /// The session credentials to write for a request admitted by `ctx.token`:
    /// a renewal when a session credential admitted it, a new session when a link
    /// with a session policy admitted a manifest (`manifest`), else none.
    fn session_credentials(&self, ctx: &RequestCtx, manifest: bool, now: u64) -> Option<SessionCredentials> {
        let state = self.shared.load();
        let keys = &state.keys;
        let made = |idle: Result<String, _>, full: Result<String, _>| match (idle, full) {
            (Ok(idle), Ok(full)) => Some((idle, full)),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "session.issue_failed");
                None
            }
        };
        if let Some(s) = &ctx.playback {
            let policy = s.policy();
            let (idle, full) = made(s.renew(keys, now, policy.idle_secs), s.renew(keys, now, policy.max_secs))?;
            return Some(SessionCredentials {
                idle,
                full,
                max_at: s.max_at(),
                event: SessionEvent::Renewed,
                id: s.id(),
            });
        }
        let link = ctx.token.as_ref()?;
        let policy = link.session_policy().filter(|_| manifest)?;
        let id = SessionId(rand::random());
        let start = |ttl| stile_token::session::start(link, id, now, ttl, ctx.client, keys);
        let (idle, full) = made(start(policy.idle_secs), start(policy.max_secs))?;
        let max_at = now.saturating_add(u64::from(policy.max_secs));
        Some(SessionCredentials { idle, full, max_at, event: SessionEvent::Started, id })
    }

    /// Playback outcomes of an admitted request: a session started or renewed, a request
    /// under a session (with the VOD position of a segment), and an HLS playlist or DASH MPD under a
    /// session to read for its segment ends.
    fn track(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        creds: Option<&SessionCredentials>,
        tracker: &Tracker,
        segments: &Segments,
        now: u64,
    ) {
        let channel = ctx.token.as_ref().and_then(Token::channel);
        if let Some(s) = &ctx.playback {
            let started = Started {
                id: s.id(),
                channel,
                started_at: s.claims().started_at,
                idle_secs: s.policy().idle_secs,
                max_at: s.max_at(),
            };
            let position = (ctx.kind == ObjectKind::Segment)
                .then(|| segments.lookup(Self::canonical_path(session, ctx)))
                .flatten();
            tracker.seen(&started, now, position);
            if creds.is_some_and(|c| c.event == SessionEvent::Renewed) {
                tracker.renewed(&started);
            }
        } else if let Some(c) = creds.filter(|c| c.event == SessionEvent::Started)
            && let Some(policy) = ctx.token.as_ref().and_then(Token::session_policy)
        {
            let started = Started { id: c.id, channel, started_at: now, idle_secs: policy.idle_secs, max_at: c.max_at };
            tracker.start(&started, now);
        }
        let under_session = ctx.playback.is_some() || creds.is_some();
        if under_session && ctx.kind == ObjectKind::Manifest && session.req_header().method == http::Method::GET {
            let path = Self::canonical_path(session, ctx);
            let ends = |ext: &[u8]| path.len() > ext.len() && path[path.len() - ext.len()..].eq_ignore_ascii_case(ext);
            if ends(b".m3u8") || ends(b".mpd") {
                let path = String::from_utf8_lossy(path).into_owned();
                ctx.observe = Some(Observe { path, buf: Vec::new(), active: false, expect: None });
            }
        }
    }

    /// Reads (without changing) a playlist served under a session, and records its VOD
    /// segment ends once it is whole.
    fn observe_body(&self, body: Option<&Bytes>, end_of_stream: bool, ctx: &mut RequestCtx) {
        let Some(o) = ctx.observe.as_mut().filter(|o| o.active) else { return };
        if let Some(b) = body {
            if o.buf.len() + b.len() > self.playlist_max {
                o.active = false;
                o.buf = Vec::new();
                return;
            }
            o.buf.extend_from_slice(b);
        }
        if end_of_stream || o.expect.is_some_and(|n| o.buf.len() >= n) {
            if let Some((_, segments)) = &self.outcomes {
                segments.record_manifest(&o.path, &o.buf);
            }
            o.active = false;
            o.buf = Vec::new();
        }
    }

    /// Path-prefix transport: the same request target with `credential` in place of the token.
    fn path_with(&self, raw: &[u8], credential: &str) -> Option<String> {
        let prefix = &self.validator.names().path_prefix;
        let rest = raw.strip_prefix(prefix.as_bytes())?;
        let rest = &rest[rest.iter().position(|&b| b == b'/')?..];
        Some(format!("{prefix}{credential}{}", std::str::from_utf8(rest).ok()?))
    }

    /// Answers a manifest admitted by a path-prefix link with a redirect to the same
    /// target carrying the session credential instead, so the player's relative URLs
    /// carry the session from then on.
    async fn redirect_to_session(&self, session: &mut Session, ctx: &RequestCtx, location: &str) -> Result<()> {
        let mut resp = ResponseHeader::build(302, Some(4))?;
        resp.insert_header(header::LOCATION, location)?;
        resp.insert_header(header::CACHE_CONTROL, "no-store")?;
        resp.insert_header(header::CONTENT_LENGTH, "0")?;
        self.add_cors(&mut resp, ctx.cors.as_ref())?;
        session.write_response_header(Box::new(resp), true).await?;
        Ok(())
    }

    fn cookie_header(&self, token: &Token, value: &str, now: u64) -> String {
        self.set_cookie(&self.cookie.name, value, token.scope_path(), token.expires_at().saturating_sub(now))
    }

    /// A `Set-Cookie` value with cookie mode's attributes (`Secure`, `SameSite`).
    fn set_cookie(&self, name: &str, value: &str, path: &str, max_age: u64) -> String {
        let c = &self.cookie;
        format!(
            "{name}={value}; Path={path}; Max-Age={max_age}{}; HttpOnly; SameSite={}",
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
            cors: None,
            set_cookie: None,
            rewrite: None,
            upstream_status: None,
            preflight: false,
            kind: ObjectKind::Other,
            origin: None,
            redirected: false,
            background: false,
            foreign: None,
            playback: None,
            session_id: None,
            observe: None,
            beacon: false,
            beacon_result: None,
            direct: None,
            fetch_failed: false,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let started = Instant::now();
        ctx.started = Some(started);
        ctx.background = session.subrequest_ctx.is_some();
        let req = session.req_header();
        ctx.cors = self.cors.grant(req.headers.get(header::ORIGIN));
        let peer = session.client_addr().and_then(|a| a.as_inet()).map(SocketAddr::ip);
        let xff = req.headers.get_all("x-forwarded-for").into_iter().map(http::HeaderValue::as_bytes);
        let client = client_ip(peer, self.trusted_hops, xff);
        ctx.client = client;
        // Judge the bytes the client sent: a line Pingora re-encoded (raw space or control
        // byte) or whose `#fragment` it dropped is not the request we would validate.
        if let Some(capture) = tap::capture(session)
            && !capture.line_matches(req.method.as_str().as_bytes(), req.raw_path())
        {
            ctx.result = Some(Err(Reason::Malformed));
            ctx.kind = ObjectKind::classify(false, req.raw_path());
            self.deny(session, ctx, Reason::Malformed, 400).await?;
            return Ok(true);
        }
        if let Some(redirect) = &self.redirect
            && redirect.applies(session)
        {
            ctx.redirected = true;
            redirect.answer(session).await?;
            return Ok(true);
        }
        if let Some(grant) = ctx.cors.clone()
            && req.method == http::Method::OPTIONS
            && req.headers.contains_key(header::ORIGIN)
            && req.headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            ctx.preflight = true;
            self.answer_preflight(session, &grant).await?;
            return Ok(true);
        }
        if beacon::is_beacon_path(req.raw_path()) && self.beacon_gate(session, ctx).await? {
            return Ok(true);
        }
        let req = session.req_header();
        if !self.validate {
            // `validation.enabled = false` (benchmarks only): admit as received.
            ctx.result = Some(Ok(()));
            if ctx.beacon {
                return self.beacon(session, ctx, None).await;
            }
            ctx.admitted_at = Some(Instant::now());
            return self.admitted(session, ctx).await;
        }
        let now = self.clock.now();
        let state = self.shared.load();
        let input = Input { target: req.raw_path(), client_ip: client, now };
        let cookies = req.headers.get_all(header::COOKIE).into_iter().map(http::HeaderValue::as_bytes);
        let geo_header = self.geo.header().and_then(|h| req.headers.get(h)).map(http::HeaderValue::as_bytes);
        let verdict = self.validator.validate(&state, &input, cookies, || self.geo.country(client, geo_header));
        // No Stile token anywhere: `missing`, or `malformed` for a path that does not
        // canonicalise — not for an ambiguous Stile transport (a token given twice).
        if !self.foreign.is_empty()
            && verdict.transport == Transport::None
            && (verdict.result == Err(Reason::Missing)
                || (verdict.result == Err(Reason::Malformed) && self.stile_transport_is_clear(session)))
            && self.judge_foreign(session, ctx, &state, now, started)
        {
            drop(state);
            return self.after_foreign(session, ctx).await;
        }
        drop(state);
        self.metrics.validation_seconds(started.elapsed().as_secs_f64());
        ctx.result = Some(verdict.result);
        ctx.transport = verdict.transport;
        ctx.kind = if ctx.beacon {
            ObjectKind::Beacon
        } else {
            ObjectKind::classify(verdict.manifest.is_some(), session.req_header().raw_path())
        };
        ctx.token = verdict.token;
        // The session id is logged like the token id: also when denied (it is not secret).
        ctx.session_id = verdict.session.as_deref().map(PlaybackSession::id);
        if let (Err(reason), Some(id), Some((tracker, _))) = (verdict.result, ctx.session_id, &self.outcomes) {
            tracker.denied(id, reason, now);
        }
        if let Err(reason) = verdict.result {
            self.deny(session, ctx, reason, reason.http_status()).await?;
            return Ok(true);
        }
        ctx.upstream_target = verdict.upstream_target;
        // A beacon URL spelt another way (`%5Fstile_beacon`) is a beacon too: never proxied.
        if !ctx.beacon
            && beacon::is_beacon_path(Self::canonical_path(session, ctx))
            && self.beacon_gate(session, ctx).await?
        {
            return Ok(true);
        }
        if ctx.beacon {
            // Not playback progress: no tracking, no renewal, no session started.
            return self.beacon(session, ctx, verdict.session.as_deref()).await;
        }
        ctx.admitted_at = Some(Instant::now());
        let by_link = matches!(verdict.transport, Transport::Path | Transport::Query);
        ctx.playback = verdict.session;
        let manifest = verdict.manifest.is_some();
        let method = &session.req_header().method;
        let get_or_head = method == http::Method::GET || method == http::Method::HEAD;
        let want_cookie = self.cookie.enabled && by_link && manifest;
        // HEAD answers carry no body to rewrite; their headers stay the origin's.
        let want_rewrite = self.rewrite_playlists
            && verdict.transport == Transport::Query
            && manifest
            && session.req_header().method == http::Method::GET;
        // A session cookie is renewed once past half its idle window (sliding).
        let renew_cookie = verdict.transport == Transport::Cookie
            && self.cookie.enabled
            && ctx.playback.as_ref().is_some_and(|s| {
                let c = s.claims();
                now.saturating_sub(c.issued_at).saturating_mul(2) >= u64::from(s.policy().idle_secs)
            });
        let path_start = verdict.transport == Transport::Path && manifest && get_or_head && ctx.playback.is_none();
        let creds = if want_cookie || want_rewrite || renew_cookie || path_start {
            self.session_credentials(ctx, manifest, now)
        } else {
            None
        };
        if let Some((tracker, segments)) = &self.outcomes {
            self.track(session, ctx, creds.as_ref(), tracker, segments, now);
        }
        if let Some(c) = &creds {
            ctx.session_id = Some(c.id);
            if path_start && let Some(location) = self.path_with(session.req_header().raw_path(), &c.full) {
                self.metrics.session(c.event, Transport::Path);
                ctx.redirected = true;
                self.redirect_to_session(session, ctx, &location).await?;
                return Ok(true);
            }
            if let Some(token) = ctx.token.as_ref().filter(|_| want_cookie || renew_cookie) {
                let max_age = c.max_at.saturating_sub(now);
                ctx.set_cookie = Some(self.set_cookie(&self.cookie.name, &c.idle, token.scope_path(), max_age));
                self.metrics.session(c.event, Transport::Cookie);
            }
        }
        let raw = if want_rewrite || (want_cookie && creds.is_none()) { self.token_string(session) } else { None };
        if want_cookie
            && creds.is_none()
            && let (Some(raw), Some(token)) = (&raw, ctx.token.as_ref())
        {
            ctx.set_cookie = Some(self.cookie_header(token, raw, now));
        }
        if want_rewrite && let Some(raw) = raw {
            let host = session.req_header().headers.get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_owned);
            let format = verdict.manifest.unwrap_or(Manifest::Hls);
            let query = ctx.upstream_target.as_deref().and_then(|t| t.splitn(2, |&b| b == b'?').nth(1));
            let query = String::from_utf8_lossy(query.unwrap_or_default()).into_owned();
            let (token, vod_token) = match creds {
                Some(c) => {
                    self.metrics.session(c.event, Transport::Query);
                    (c.idle, Some(c.full))
                }
                None => (raw, None),
            };
            ctx.rewrite = Some(Rewrite {
                format,
                param: None,
                query,
                token,
                host,
                buf: Vec::new(),
                vod_token,
                active: false,
                expect: None,
            });
        }
        self.admitted(session, ctx).await
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
        if ctx.origin.is_none() {
            let Some(pool) = self.pool(session, ctx) else {
                return Err(Error::explain(ErrorType::HTTPStatus(404), "no origin pool serves this path"));
            };
            ctx.origin = Some(self.origins.begin(pool));
        }
        let attempts = ctx.origin.as_mut().expect("routed above");
        Ok(self.origins.pick(attempts).0)
    }

    // ---- cache hooks (crate::cache): they run only after request_filter admitted the request.

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        let method = &session.req_header().method;
        if let Some(cache) = self.cache
            && ctx.result == Some(Ok(()))
            && (method == http::Method::GET || method == http::Method::HEAD)
            && self.pool(session, ctx).is_some()
        {
            cache.enable(&mut session.cache);
        }
        Ok(())
    }

    fn cache_key_callback(&self, session: &Session, ctx: &mut RequestCtx) -> Result<CacheKey> {
        let cache = self.cache.ok_or_else(|| Error::new(ErrorType::InternalError))?;
        let pool = self.pool(session, ctx).ok_or_else(|| Error::new(ErrorType::InternalError))?;
        let target = ctx.upstream_target.as_deref().unwrap_or_else(|| session.req_header().raw_path());
        Ok(cache.key(self.origins.pool_name(pool), target))
    }

    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<RespCacheable> {
        let cache = self.cache.ok_or_else(|| Error::new(ErrorType::InternalError))?;
        let target = ctx.upstream_target.as_deref().unwrap_or_else(|| session.req_header().raw_path());
        let authorization = session.req_header().headers.contains_key(header::AUTHORIZATION);
        if ctx.rewrite.is_some() && !resp.headers.contains_key(header::CONTENT_LENGTH) {
            // Served from its fill, an unsized body would never tell the rewrite it ended.
            return Ok(RespCacheable::Uncacheable(pingora::cache::NoCacheReason::Custom("unsized_manifest")));
        }
        Ok(cache.decide(resp, target, authorization))
    }

    fn range_header_filter(&self, session: &mut Session, resp: &mut ResponseHeader, ctx: &mut RequestCtx) -> RangeType {
        if ctx.rewrite.is_some() {
            // The rewritten playlist is served whole.
            return RangeType::None;
        }
        pingora::proxy::range_header_filter(session.req_header(), resp, Some(200))
    }

    fn should_serve_stale(&self, _session: &mut Session, _ctx: &mut RequestCtx, error: Option<&Error>) -> bool {
        // Within the object's windows: while one background fetch revalidates it
        // (stale-while-revalidate), or when the origin fails (stale-if-error).
        error.is_none_or(|e| *e.esource() == ErrorSource::Upstream)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        up: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Every try (retries included) sends the canonical, token-free target.
        if let Some(target) = &ctx.upstream_target {
            up.set_raw_path(target)?;
        }
        if let Some(a) = ctx.origin.as_ref() {
            up.insert_header(header::HOST, self.origins.host(a))?;
        }
        if self.cookie.enabled {
            strip_cookies(up, &[self.cookie.name.as_str()])?;
        }
        if !self.foreign.is_empty() {
            // Whatever admitted the request, no vendor's cookie reaches the origin.
            strip_cookies(up, &self.foreign.cookie_names())?;
        }
        if ctx.foreign.is_some() {
            // The page that linked here may carry the vendor's token in its URL.
            up.remove_header(&header::REFERER);
        }
        if let Some(r) = up.headers.get(header::REFERER) {
            let names = self.validator.names();
            let r = r.as_bytes();
            let q = format!("{}=", names.query_param);
            if contains(r, q.as_bytes()) || contains(r, names.path_prefix.as_bytes()) {
                up.remove_header(&header::REFERER);
            }
        }
        if ctx.rewrite.is_some() || session.cache.enabled() {
            // The playlist must arrive uncompressed to be rewritten; a cached object is
            // stored once for every viewer, whatever encodings each accepts.
            up.remove_header(&header::ACCEPT_ENCODING);
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let status = resp.status.as_u16();
        if let Some(a) = ctx.origin.as_mut()
            && status >= 200
            && self.origins.response(a, status, idempotent(session))
        {
            // Retried on another origin: this answer is dropped before anything reaches the viewer.
            return Err(Error::explain(ErrorType::HTTPStatus(status), "origin answered 5xx; retrying").into_up());
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let retry = match ctx.origin.as_mut() {
            Some(a) => {
                self.origins.failure(a, OriginErrorKind::of(e.etype()), Failed::Connect, idempotent(session), false)
            }
            None => false,
        };
        e.set_retry(retry);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        let Some(a) = ctx.origin.as_mut() else {
            e.set_retry(false);
            return e;
        };
        if Origins::retry_pending(a) {
            // A 5xx already decided to be retried in `upstream_response_filter`.
            e.set_retry(true);
            return e;
        }
        let sent = session.response_written().is_some();
        let idempotent = idempotent(session);
        // A pooled connection found closed: Pingora's own rule, same origin, fresh connection.
        let stale = !sent && idempotent && client_reused && matches!(e.retry, pingora::RetryType::ReusedOnly);
        if stale && !session.as_ref().retry_buffer_truncated() {
            self.origins.stale_connection(a);
            e.set_retry(true);
            return e;
        }
        let kind = OriginErrorKind::of(e.etype());
        let retry = *e.esource() == ErrorSource::Upstream
            && self.origins.failure(a, kind, Failed::BeforeResponse, idempotent, sent);
        e.set_retry(retry);
        e
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let status = resp.status.as_u16();
        ctx.upstream_status = Some(status);
        if self.reason_header && self.cache.is_some() {
            let status = if ctx.direct.is_some() { "hit" } else { Cache::outcome(&session.cache).status };
            resp.insert_header(CACHE_HEADER, status)?;
        }
        self.add_cors(resp, ctx.cors.as_ref())?;
        let mut no_store = false;
        if let Some(c) = ctx.set_cookie.take()
            && resp.status.is_success()
        {
            resp.append_header(header::SET_COOKIE, c)?;
            no_store = true;
        }
        // An HTTP/1.0 client cannot read a chunked body: such playlists end with the connection.
        let old_client = matches!(session.req_header().version, http::Version::HTTP_09 | http::Version::HTTP_10);
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
                rw.expect = len;
                rw.buf.reserve(len.unwrap_or(16 << 10));
                resp.remove_header(&header::CONTENT_LENGTH);
                resp.remove_header(&header::ETAG);
                if !old_client {
                    resp.insert_header(header::TRANSFER_ENCODING, "chunked")?;
                }
                // The body now carries a viewer's token: no caching at all.
                no_store = true;
            }
        }
        if let Some(o) = ctx.observe.as_mut()
            && ctx.rewrite.as_ref().is_none_or(|r| !r.active)
        {
            let identity = resp
                .headers
                .get(header::CONTENT_ENCODING)
                .is_none_or(|e| e.as_bytes().eq_ignore_ascii_case(b"identity"));
            let len = resp
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok());
            o.active = status == 200 && identity && len.is_none_or(|l| l <= self.playlist_max);
            o.expect = len;
        }
        self.keep_from_shared_caches(resp, ctx, no_store)?;
        if !session.as_downstream().is_http2() {
            // The edge speaks HTTP/1.1 whatever the origin's version (an HTTP/1.0 status line
            // with chunked framing is not a valid response).
            resp.set_version(http::Version::HTTP_11);
            if old_client && resp.headers.contains_key(header::TRANSFER_ENCODING) {
                resp.remove_header(&header::TRANSFER_ENCODING);
                session.set_keepalive(None);
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
        let Some(rw) = ctx.rewrite.as_mut().filter(|r| r.active) else {
            self.observe_body(body.as_ref(), end_of_stream, ctx);
            return Ok(None);
        };
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
        if end_of_stream || rw.expect.is_some_and(|n| rw.buf.len() >= n) {
            let param = rw.param.as_ref().unwrap_or(&self.validator.names().query_param);
            // A VOD playlist or a static MPD is fetched once: its URLs get the session
            // credential that lasts to the hard maximum; live ones are fetched again
            // and again, each time renewing the idle credential.
            let token = match &rw.vod_token {
                Some(vod) if is_vod(rw.format, &rw.buf) => vod,
                _ => &rw.token,
            };
            if let (Some(o), Some((_, segments))) = (&ctx.observe, &self.outcomes) {
                segments.record_manifest(&o.path, &rw.buf);
            }
            let out = match rw.format {
                Manifest::Hls => playlist::rewrite(&rw.buf, param, token, rw.host.as_deref()),
                Manifest::Dash => mpd::rewrite(&rw.buf, param, token, rw.host.as_deref(), &rw.query),
            };
            *body = Some(Bytes::from(out));
            rw.buf = Vec::new();
            rw.active = false;
            self.metrics.playlist(PlaylistOutcome::Rewritten);
        }
        Ok(None)
    }

    /// Pingora's answers when proxying fails, except that an origin that timed out is
    /// `504` (not `502`); the access log names the error (`error`).
    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, _ctx: &mut RequestCtx) -> FailToProxy {
        let code = match (e.etype(), e.esource()) {
            (ErrorType::HTTPStatus(code), _) => *code,
            (
                ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout,
                ErrorSource::Upstream,
            ) => 504,
            (_, ErrorSource::Upstream) => 502,
            (ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed, ErrorSource::Downstream) => 0,
            (_, ErrorSource::Downstream) => 400,
            _ => 500,
        };
        if code > 0
            && let Err(err) = session.respond_error(code).await
        {
            tracing::debug!(error = %err, "proxy.error_response_failed");
        }
        FailToProxy { error_code: code, can_reuse_downstream: false }
    }

    /// Pingora's error logs describe the request with this; the default includes the
    /// query, which may hold a token.
    fn request_summary(&self, session: &Session, _ctx: &RequestCtx) -> String {
        let req = session.req_header();
        let path = log_path(req.raw_path(), &self.validator.names().path_prefix);
        format!("{} {path}", req.method)
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, error: &Error) -> bool {
        // A path no pool serves is an answer (404), not an error of the edge; the fast
        // path logs its failures itself.
        ctx.fetch_failed || (ctx.origin.is_none() && matches!(error.etype(), ErrorType::HTTPStatus(404)))
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        if let Some(capture) = tap::capture(session) {
            capture.mark_logged();
        }
        if let Some(a) = ctx.origin.as_ref() {
            self.origins.end(a);
        }
        let status =
            session.response_written().map(|r| r.status.as_u16()).or(ctx.direct.map(|d| d.status)).unwrap_or(0);
        let body_bytes = ctx.direct.map_or(session.body_bytes_sent() as u64, |d| d.bytes);
        let proto = if session.is_http2() { "h2" } else { "h1" };
        let tls = session.digest().and_then(tls_version);
        let reason = ctx.result.and_then(Result::err);
        // A forged token must not choose label values or log fields: only MAC-verified channels count.
        let verified = ctx.token.is_some()
            && !matches!(reason, Some(Reason::Malformed | Reason::UnknownKey | Reason::BadSignature));
        let channel = ctx.token.as_ref().filter(|_| verified).and_then(Token::channel);
        // Beacons answered before their credential was checked count in the beacon results only.
        let unchecked_beacon = ctx.beacon && ctx.result.is_none();
        if !ctx.preflight && !ctx.redirected && !ctx.background && !unchecked_beacon {
            self.metrics.request(reason, ctx.transport, channel, ctx.kind);
            if let Some(f) = &ctx.foreign {
                self.metrics.foreign(f.format, reason);
            }
        }
        if ctx.beacon && !ctx.preflight {
            self.metrics.beacon(ctx.beacon_result.unwrap_or(BeaconResult::Denied));
        }
        let admitted = ctx.admitted_at.is_some();
        if let Some(cache) = self.cache
            && admitted
        {
            if let Some(d) = ctx.direct {
                cache.record_direct(ctx.kind.as_str(), body_bytes, d.zero_copy);
            } else {
                cache.record(&session.cache, ctx.kind.as_str(), body_bytes, ctx.background);
            }
        }
        let cache_status = match (admitted, ctx.direct) {
            (true, Some(_)) => "hit",
            (true, None) => Cache::outcome(&session.cache).status,
            (false, _) => "bypass",
        };
        let upstream_secs = ctx.admitted_at.map(|t| t.elapsed().as_secs_f64());
        if let Some(secs) = upstream_secs {
            match (e, ctx.upstream_status) {
                (Some(err), _) if *err.esource() == ErrorSource::Upstream => {
                    self.metrics.upstream_error(error_kind(err.etype()));
                }
                (_, Some(s)) if session.cache.upstream_used() => self.metrics.upstream_response(s, secs),
                _ => {}
            }
        }
        if !self.access_log || ctx.background {
            return;
        }
        let req = session.req_header();
        let path = log_path(req.raw_path(), &self.validator.names().path_prefix);
        let decision = match (ctx.preflight || ctx.redirected, reason) {
            (true, _) if ctx.redirected => "redirect",
            (true, _) => "preflight",
            (false, None) if ctx.beacon => "beacon",
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
            session.id = ctx.session_id.map(tracing::field::display),
            channel,
            transport = ctx.transport.as_str(),
            format = ctx.foreign.as_ref().map(|f| f.format.as_str()),
            beacon = ctx.beacon_result.map(BeaconResult::as_str),
            foreign.id = ctx.foreign.as_ref().and_then(|f| f.id.as_deref()),
            foreign.key = ctx.foreign.as_ref().and_then(|f| f.key.as_deref()),
            cache = cache_status,
            status,
            bytes = body_bytes,
            upstream_ms = upstream_secs.map(|s| s * 1e3),
            error = e.map(|e| e.etype().as_str()),
            proto,
            tls,
            origin.pool = ctx.origin.as_ref().map(|a| self.origins.names(a).0),
            origin.name = ctx.origin.as_ref().and_then(|a| self.origins.names(a).1),
            origin.retries = ctx.origin.as_ref().map(Origins::retries).filter(|&r| r > 0),
        );
    }
}

/// The CORS policy (`EdgeConfig::validate` refused bad patterns already); `x-stile-reason`
/// (and `x-stile-cache`) is exposed whenever diagnostics send it.
fn compile_cors(config: &EdgeConfig) -> Cors {
    let c = &config.cors;
    let mut expose = c.expose_headers.clone();
    if config.diagnostics.reason_header {
        expose.push(REASON_HEADER.to_owned());
        if config.cache.enabled {
            expose.push(CACHE_HEADER.to_owned());
        }
    }
    Cors::new(&c.allowed_origins, c.allow_credentials, &expose, c.max_age_secs).unwrap_or_default()
}

/// Removes the named cookies from the upstream request's `Cookie` headers (the others
/// kept byte for byte; a header left empty is dropped).
fn strip_cookies(up: &mut RequestHeader, names: &[&str]) -> Result<()> {
    let strip = |h: &[u8]| {
        let mut changed = None::<Vec<u8>>;
        for name in names {
            if let Some(v) = transport::strip_cookie(changed.as_deref().unwrap_or(h), name) {
                changed = Some(v);
            }
        }
        changed
    };
    if !up.headers.get_all(header::COOKIE).into_iter().any(|h| strip(h.as_bytes()).is_some()) {
        return Ok(());
    }
    let kept: Vec<Vec<u8>> = up
        .headers
        .get_all(header::COOKIE)
        .into_iter()
        .map(|h| strip(h.as_bytes()).unwrap_or_else(|| h.as_bytes().to_vec()))
        .filter(|v| !v.is_empty())
        .collect();
    up.remove_header(&header::COOKIE);
    for v in kept {
        up.append_header(header::COOKIE, http::HeaderValue::from_bytes(&v).map_err(|_| bad_header())?)?;
    }
    Ok(())
}

/// GET and HEAD: the only methods retried on another origin.
fn idempotent(session: &Session) -> bool {
    matches!(session.req_header().method, http::Method::GET | http::Method::HEAD)
}

/// The `tls` access-log field.
fn tls_version(d: &Digest) -> Option<&'static str> {
    d.ssl_digest.as_ref().map(|s| crate::tls::version_label(&s.version))
}

/// How long a direct hit waits for a client to take more bytes, unless the
/// session has a write timeout of its own.
const DIRECT_WRITE_IDLE: Duration = Duration::from_secs(60);

/// An HTTP/1.1 response head as Pingora writes one, for a body the edge writes
/// itself: `resp` gets the `Date` and `Connection` headers Pingora would set (and
/// sets again, the same, if it writes `resp` after all).
fn h1_head(resp: &mut ResponseHeader, keepalive: bool) -> Result<Vec<u8>> {
    resp.insert_header(header::DATE, pingora::protocols::http::date::get_cached_date())?;
    resp.insert_header(header::CONNECTION, if keepalive { "keep-alive" } else { "close" })?;
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(resp.status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(resp.get_reason_phrase().unwrap_or_default().as_bytes());
    head.extend_from_slice(b"\r\n");
    resp.header_to_h1_wire(&mut head);
    head.extend_from_slice(b"\r\n");
    Ok(head)
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
    match status {
        401 => b"unauthorized\n",
        400 => b"bad request\n",
        _ => b"forbidden\n",
    }
}

/// `private` and the origin's `Cache-Control` directives, less those that let a
/// shared cache store the response (`public`, `s-maxage`, `proxy-revalidate`).
fn private_cache_control(resp: &ResponseHeader) -> String {
    let mut out = String::from("private");
    for value in resp.headers.get_all(header::CACHE_CONTROL) {
        for d in value.to_str().unwrap_or_default().split(',').map(str::trim) {
            let name = d.split('=').next().unwrap_or_default().trim();
            let shared =
                ["public", "private", "s-maxage", "proxy-revalidate"].iter().any(|n| name.eq_ignore_ascii_case(n));
            if !d.is_empty() && !shared {
                out.push_str(", ");
                out.push_str(d);
            }
        }
    }
    out
}

/// Longest path written to a log line, bytes.
/// Whether a manifest describes a finished presentation: an HLS playlist with
/// `#EXT-X-ENDLIST`, or an MPD that is not `type="dynamic"` (static is the default).
fn is_vod(format: Manifest, body: &[u8]) -> bool {
    let has = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    match format {
        Manifest::Hls => has(b"#EXT-X-ENDLIST"),
        Manifest::Dash => !has(b"type=\"dynamic\"") && !has(b"type='dynamic'"),
    }
}

const LOG_PATH_MAX: usize = 512;

/// The shortest token string (`docs/token-format.md` § 2): runs of token characters
/// this long are redacted from logged paths wherever they are.
const TOKEN_SHAPED: usize = 59;

const REDACTED: &str = "<redacted>";

/// The request path for logs, with nothing token-shaped in it: no query and no
/// fragment (they may hold a token); the path-prefix token removed; after any
/// other spelling of the path marker (`/_ST/`, `/%5Fst/`, a second `/_st/`…) every
/// segment replaced by `<redacted>`; and any run of at least [`TOKEN_SHAPED`]
/// base64url characters (percent-encoded ones included) replaced by `<redacted>`,
/// whatever the verdict. Other vendors' path-borne links are redacted too: every
/// segment holding `=` (Akamai `/__token__=…/`, Bunny `/bcdn_token=…/`, Media CDN
/// `/edge-cache-token=…/`) and every segment of exactly 32 hex digits (nginx
/// `secure_link_secret`). At most [`LOG_PATH_MAX`] bytes.
pub(crate) fn log_path<'a>(target: &'a [u8], path_prefix: &str) -> Cow<'a, str> {
    let end = target.iter().position(|&b| b == b'?' || b == b'#').unwrap_or(target.len());
    let mut path = &target[..end];
    if let Some(rest) = path.strip_prefix(path_prefix.as_bytes()) {
        path = rest.iter().position(|&b| b == b'/').map_or(&b"/"[..], |i| &rest[i..]);
    }
    match redact_credential_segments(path) {
        Some(owned) => Cow::Owned(redact_path(&owned, path_prefix).into_owned()),
        None => redact_path(path, path_prefix),
    }
}

/// The path with every segment that holds `=` or is 32 hex digits replaced by
/// `<redacted>`; `None` when there is none.
fn redact_credential_segments(path: &[u8]) -> Option<Vec<u8>> {
    let credential = |seg: &[u8]| seg.contains(&b'=') || (seg.len() == 32 && seg.iter().all(u8::is_ascii_hexdigit));
    if !path.split(|&b| b == b'/').any(credential) {
        return None;
    }
    let mut out = Vec::with_capacity(path.len());
    for (i, seg) in path.split(|&b| b == b'/').enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(if credential(seg) { REDACTED.as_bytes() } else { seg });
    }
    Some(out)
}

/// [`log_path`] once the path-prefix token is gone: markers and token-shaped runs.
fn redact_path<'a>(path: &'a [u8], path_prefix: &str) -> Cow<'a, str> {
    let marker = path_prefix.trim_matches('/');
    let cut_at = marker_variant_end(path, marker);
    let clean = cut_at.is_none() && token_run(path).is_none();
    let mut out: Cow<'a, str> = if clean {
        String::from_utf8_lossy(path)
    } else {
        let (head, redacted_tail) = match cut_at {
            Some(i) => (&path[..i], true),
            None => (path, false),
        };
        let mut s = String::with_capacity(head.len() + 16);
        let mut rest = head;
        while let Some((start, len)) = token_run(rest) {
            s.push_str(&String::from_utf8_lossy(&rest[..start]));
            s.push_str(REDACTED);
            rest = &rest[start + len..];
        }
        s.push_str(&String::from_utf8_lossy(rest));
        if redacted_tail {
            s.push('/');
            s.push_str(REDACTED);
        }
        Cow::Owned(s)
    };
    if out.len() > LOG_PATH_MAX {
        let mut cut = LOG_PATH_MAX;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.to_mut().truncate(cut);
    }
    out
}

/// The index just past the first segment that spells the path marker in another
/// case or percent-encoding (`_ST`, `%5Fst`, `%255fst`), or the marker itself.
fn marker_variant_end(path: &[u8], marker: &str) -> Option<usize> {
    let mut start = 0;
    for seg in path.split(|&b| b == b'/') {
        let end = start + seg.len();
        if !seg.is_empty() && is_marker(seg, marker.as_bytes()) {
            return Some(end);
        }
        start = end + 1;
    }
    None
}

fn is_marker(seg: &[u8], marker: &[u8]) -> bool {
    let mut cur = seg.to_vec();
    // Three rounds of decoding cover double and triple encoding.
    for _ in 0..4 {
        if cur.eq_ignore_ascii_case(marker) {
            return true;
        }
        if !cur.contains(&b'%') || cur.len() > 27 * marker.len() {
            return false;
        }
        cur = percent_decode(&cur);
    }
    false
}

fn percent_decode(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (b[i], b.get(i + 1).and_then(|&c| hex_val(c)), b.get(i + 2).and_then(|&c| hex_val(c))) {
            (b'%', Some(h), Some(l)) => {
                out.push(h << 4 | l);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

fn hex_val(c: u8) -> Option<u8> {
    char::from(c).to_digit(16).map(|d| d as u8)
}

/// The first run (start, length in bytes) of at least [`TOKEN_SHAPED`] base64url
/// characters, counting a `%HH` that decodes to one as one character.
fn token_run(b: &[u8]) -> Option<(usize, usize)> {
    let is_b64 = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
    let (mut start, mut chars, mut i) = (0, 0, 0);
    while i < b.len() {
        let (c, width) = match (b[i], b.get(i + 1).and_then(|&c| hex_val(c)), b.get(i + 2).and_then(|&c| hex_val(c))) {
            (b'%', Some(h), Some(l)) => (h << 4 | l, 3),
            (c, _, _) => (c, 1),
        };
        if is_b64(c) {
            if chars == 0 {
                start = i;
            }
            chars += 1;
        } else {
            if chars >= TOKEN_SHAPED {
                return Some((start, i - start));
            }
            chars = 0;
        }
        i += width;
    }
    (chars >= TOKEN_SHAPED).then(|| (start, b.len() - start))
}

/// The method (if it is a plain token) and the target of a request line as sent.
fn split_request_line(line: &[u8]) -> (Option<&[u8]>, Option<&[u8]>) {
    let Some(sp) = line.iter().position(|&b| b == b' ') else { return (None, None) };
    let method = &line[..sp];
    let method =
        (!method.is_empty() && method.len() <= 32 && method.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-'))
            .then_some(method);
    let rest = &line[sp + 1..];
    let target = match rest.windows(6).rposition(|w| w == b" HTTP/") {
        Some(i) => &rest[..i],
        None => rest,
    };
    (method, Some(target))
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
        let t = "AQEAAAABASNFZ4mrze8AAAAAaVZ_xAAADkwJL3ZvZC9hYmMvIKmQJ2Lc6G7tQuq5xFuQ8Qc";
        let p = |target: String| log_path(target.as_bytes(), "/_st/").into_owned();
        assert_eq!(p(format!("/vod/a.ts?st={t}")), "/vod/a.ts");
        assert_eq!(p(format!("/vod/a.ts#st={t}")), "/vod/a.ts");
        assert_eq!(p(format!("/_st/{t}/vod/a.ts")), "/vod/a.ts");
        assert_eq!(p(format!("/_st/{t}")), "/");
        assert_eq!(p("/plain".into()), "/plain");
        // Markers the transport does not recognise, and a doubled prefix.
        assert_eq!(p(format!("/_ST/{t}/vod/a.ts")), "/_ST/<redacted>");
        assert_eq!(p(format!("/vod/%5Fst/{t}/a.ts")), "/vod/%5Fst/<redacted>");
        assert_eq!(p(format!("/%255F%53t//{t}/a.ts")), "/%255F%53t/<redacted>");
        assert_eq!(p(format!("/_st/{t}/_st/{t}/vod/a.ts")), "/_st/<redacted>");
        // Token-shaped runs anywhere, also percent-encoded or glued to other characters.
        assert_eq!(p(format!("/vod/{t}/a.ts")), "/vod/<redacted>/a.ts");
        assert_eq!(p(format!("/vod/seg-{t}.ts")), "/vod/<redacted>.ts");
        let encoded: String = t.bytes().map(|b| format!("%{b:02X}")).collect();
        assert_eq!(p(format!("/vod/{encoded}")), "/vod/<redacted>");
        // Shorter runs stay.
        assert_eq!(
            p("/vod/segment_with_a_long_name_0000000000.ts".into()),
            "/vod/segment_with_a_long_name_0000000000.ts"
        );
        assert!(p(format!("/{}", "x/".repeat(400))).len() <= LOG_PATH_MAX);
        // Other vendors' path-borne links.
        assert_eq!(p("/__token__=exp=1~acl=%2fvod%2f*~hmac=ab12/vod/a.ts".into()), "/<redacted>/vod/a.ts");
        assert_eq!(p("/bcdn_token=HS256-abc&expires=1/vod/a.ts".into()), "/<redacted>/vod/a.ts");
        assert_eq!(p("/vod/edge-cache-token=Expires=1&KeyName=k&Signature=x/a.ts".into()), "/vod/<redacted>/a.ts");
        assert_eq!(p("/p/0123456789abcdef0123456789ABCDEF/a.ts".into()), "/p/<redacted>/a.ts");
    }

    #[test]
    fn request_lines_split_for_the_refusal_log() {
        assert_eq!(split_request_line(b"GET /a b HTTP/1.1"), (Some(&b"GET"[..]), Some(&b"/a b"[..])));
        assert_eq!(split_request_line(b"GET /cut-short"), (Some(&b"GET"[..]), Some(&b"/cut-short"[..])));
        assert_eq!(split_request_line(b"\x16\x03\x01 x"), (None, Some(&b"x"[..])));
        assert_eq!(split_request_line(b"garbage"), (None, None));
    }

    #[test]
    fn private_keeps_the_origins_other_directives() {
        let mut r = ResponseHeader::build(200, None).unwrap();
        r.append_header(header::CACHE_CONTROL, "public, max-age=60, S-MAXAGE=600").unwrap();
        r.append_header(header::CACHE_CONTROL, "must-revalidate").unwrap();
        assert_eq!(private_cache_control(&r), "private, max-age=60, must-revalidate");
    }
}
