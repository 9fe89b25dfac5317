//! Origin pools: routing by path prefix, choosing an origin, health (active
//! and passive), failover and the retry policy.
//!
//! A request's canonical path picks its pool (longest configured prefix). Each
//! try picks an origin of that pool round-robin among those that are **up**
//! (active checks passing, not taken out by passive health) and not yet tried
//! for this request; when none is up, the first try still goes to one (round
//! robin over all) rather than failing outright.
//!
//! **Retry policy** (`docs/edge.md` states it for operators). A request is tried
//! again, on another origin of its pool that is up and not yet tried, only when
//! all of these hold:
//! 1. its method is `GET` or `HEAD`;
//! 2. nothing of the response has been sent to the viewer yet;
//! 3. the try failed to connect (refused, unreachable, timeout, TLS handshake),
//!    or failed before the origin's response head arrived (reset, closed, read
//!    timeout), or — with `retry.on_5xx` — the origin answered 5xx (that answer
//!    is dropped, not forwarded);
//! 4. fewer than `retry.attempts` retries were made for it;
//! 5. the pool's retry budget allows it: retries in flight stay below
//!    `max(retry.budget_min, retry.budget_percent` % of the pool's requests in flight`)`.
//!
//! Otherwise the failure is final: a connect or pre-response failure becomes a
//! `502`, a 5xx is forwarded as it is. A failure after the response head reached
//! the viewer is never retried (the viewer sees a truncated body). A request
//! sent on a pooled keep-alive connection that turns out closed is sent again
//! on a fresh connection to the same origin, as Pingora does, outside the
//! budget (nothing reached the origin's application).
//!
//! Host names are resolved at startup (unresolvable: exit 64) and again every
//! `origin.resolve_interval_secs` by [`OriginHealth`], never per request: each
//! origin's `HttpPeer` (socket address, TLS, SNI, CA, timeouts) is swapped in
//! whole. Pingora pools keep-alive connections per peer, so per origin.

mod health;
mod metrics;

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use pingora::prelude::HttpPeer;
use pingora::utils::tls::WrappedX509;

pub(crate) use health::OriginHealth;
pub(crate) use metrics::{ErrorKind, OriginMetrics, RetryCause};

use crate::config::{ConfigError, OriginConfig, PoolConfig, ServerConfig, split_host_port};

/// Every pool of the edge.
#[derive(Debug)]
pub(crate) struct Origins {
    pools: Vec<Pool>,
    /// `(prefix, pool index)`, longest prefix first.
    routes: Vec<(String, usize)>,
    attempts: u32,
    on_5xx: bool,
    passive_failures: u32,
    passive_down: Duration,
    epoch: Instant,
}

/// One pool.
#[derive(Debug)]
pub(crate) struct Pool {
    name: String,
    servers: Vec<Server>,
    next: AtomicUsize,
    in_flight: AtomicU32,
    retries_in_flight: AtomicU32,
    budget_percent: u32,
    budget_min: u32,
    series: metrics::PoolSeries,
}

/// One origin.
#[derive(Debug)]
pub(crate) struct Server {
    name: String,
    /// As configured (`host:port`), resolved again by [`OriginHealth`].
    address: String,
    /// `Host` sent upstream.
    host: String,
    peer: ArcSwap<HttpPeer>,
    /// Active health (true until checks say otherwise, and always without checks).
    active_up: AtomicBool,
    /// Passive health: out until this many milliseconds after [`Origins::epoch`].
    down_until_ms: AtomicU64,
    failures: AtomicU32,
    series: metrics::ServerSeries,
}

/// One request's dealings with its pool, carried in the proxy's request context.
#[derive(Debug, Default)]
pub(crate) struct Attempts {
    pool: usize,
    /// The origin of the current (last) try.
    current: Option<usize>,
    tried: u64,
    retries: u32,
    /// The origin chosen for the retry already decided.
    next: Option<usize>,
    /// The next try reuses the current origin (a stale pooled connection).
    again: bool,
    holds_retry_slot: bool,
    started: Option<Instant>,
    /// The current try already counted its outcome.
    settled: bool,
}

/// What a failed try was, for the retry decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failed {
    /// Connect or TLS handshake.
    Connect,
    /// After connecting, before the response head.
    BeforeResponse,
    /// A 5xx response head.
    Status5xx,
}

impl Origins {
    /// Builds the pools, resolving every origin's host name now (off the request path)
    /// and loading CA files. Errors are configuration errors (exit 64).
    pub(crate) fn build(config: &OriginConfig, registry: &prometheus::Registry) -> Result<Origins, ConfigError> {
        let metrics = OriginMetrics::new(registry);
        let mut pools = Vec::new();
        let mut routes = Vec::new();
        for (i, p) in config.effective_pools().iter().enumerate() {
            pools.push(Pool::build(p, i, config, &metrics)?);
            routes.extend(p.prefixes.iter().map(|prefix| (prefix.clone(), i)));
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.0.len()));
        Ok(Origins {
            pools,
            routes,
            attempts: config.retry.attempts,
            on_5xx: config.retry.on_5xx,
            passive_failures: config.passive.failures,
            passive_down: Duration::from_secs(config.passive.down_secs),
            epoch: Instant::now(),
        })
    }

    /// The pool for a canonical request path (no query): longest prefix wins.
    pub(crate) fn route(&self, path: &[u8]) -> Option<usize> {
        self.routes.iter().find(|(prefix, _)| path.starts_with(prefix.as_bytes())).map(|(_, i)| *i)
    }

    /// The name of pool `pool`.
    pub(crate) fn pool_name(&self, pool: usize) -> &str {
        &self.pools[pool].name
    }

    /// Starts a request on pool `pool`.
    pub(crate) fn begin(&self, pool: usize) -> Attempts {
        self.pools[pool].in_flight.fetch_add(1, Ordering::Relaxed);
        Attempts { pool, ..Attempts::default() }
    }

    /// Chooses the origin of the next try and returns its peer and `Host`.
    pub(crate) fn pick(&self, a: &mut Attempts) -> (Box<HttpPeer>, &str) {
        let pool = &self.pools[a.pool];
        let now = self.now_ms();
        let idx = if a.again {
            a.again = false;
            a.current.unwrap_or(0)
        } else if let Some(next) = a.next.take() {
            next
        } else {
            pool.choose(a.tried, now, true).or_else(|| pool.choose(a.tried, now, false)).unwrap_or_else(|| {
                // Every origin tried (Pingora's own retries): round robin over all.
                pool.next.fetch_add(1, Ordering::Relaxed) % pool.servers.len()
            })
        };
        a.current = Some(idx);
        a.tried |= 1 << idx;
        a.started = Some(Instant::now());
        a.settled = false;
        let server = &pool.servers[idx];
        (Box::new((**server.peer.load()).clone()), &server.host)
    }

    /// The response head of the current try arrived. Returns whether the request is to be
    /// retried instead (a 5xx, retry allowed): then the head must not be forwarded.
    pub(crate) fn response(&self, a: &mut Attempts, status: u16, method_idempotent: bool) -> bool {
        let Some(server) = self.current(a) else { return false };
        if let Some(started) = a.started {
            server.series.duration.observe(started.elapsed().as_secs_f64());
        }
        server.series.response(status);
        a.settled = true;
        if (500..600).contains(&status) {
            server.series.error(ErrorKind::Status5xx);
            self.passive_failure(server);
            return self.on_5xx && self.decide_retry(a, Failed::Status5xx, method_idempotent);
        }
        server.failures.store(0, Ordering::Relaxed);
        false
    }

    /// The current try failed with `kind` (`failed` says when). Records it and decides
    /// whether to try again; `response_sent`: the viewer already has part of the answer.
    pub(crate) fn failure(
        &self,
        a: &mut Attempts,
        kind: ErrorKind,
        failed: Failed,
        method_idempotent: bool,
        response_sent: bool,
    ) -> bool {
        if let Some(server) = self.current(a)
            && !a.settled
        {
            a.settled = true;
            server.series.error(kind);
            self.passive_failure(server);
        }
        !response_sent && self.decide_retry(a, failed, method_idempotent)
    }

    /// A pooled connection to the current origin was found closed before anything was
    /// answered: try the same origin again on a fresh connection.
    pub(crate) fn stale_connection(&self, a: &mut Attempts) {
        a.again = true;
        a.settled = false;
        self.pools[a.pool].series.retry(RetryCause::StaleConnection);
    }

    /// The request is over: releases its share of the pool's counters.
    pub(crate) fn end(&self, a: &Attempts) {
        let pool = &self.pools[a.pool];
        pool.in_flight.fetch_sub(1, Ordering::Relaxed);
        if a.holds_retry_slot {
            pool.retries_in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The `Host` header for the current try.
    pub(crate) fn host(&self, a: &Attempts) -> &str {
        &self.pools[a.pool].servers[a.current.unwrap_or(0)].host
    }

    /// Names of the pool and origin of the current try (for logs).
    pub(crate) fn names(&self, a: &Attempts) -> (&str, Option<&str>) {
        let pool = &self.pools[a.pool];
        (&pool.name, a.current.map(|i| pool.servers[i].name.as_str()))
    }

    /// The retries made for a request.
    pub(crate) fn retries(a: &Attempts) -> u32 {
        a.retries
    }

    /// Whether a retry was decided and waits for Pingora to ask for the next peer.
    pub(crate) fn retry_pending(a: &Attempts) -> bool {
        a.next.is_some()
    }

    fn current(&self, a: &Attempts) -> Option<&Server> {
        a.current.map(|i| &self.pools[a.pool].servers[i])
    }

    fn decide_retry(&self, a: &mut Attempts, failed: Failed, idempotent: bool) -> bool {
        if !idempotent || a.retries >= self.attempts {
            return false;
        }
        let pool = &self.pools[a.pool];
        let Some(next) = pool.choose(a.tried, self.now_ms(), true) else { return false };
        if !a.holds_retry_slot {
            let in_flight = pool.in_flight.load(Ordering::Relaxed);
            let allowed = pool.budget_min.max(in_flight.saturating_mul(pool.budget_percent) / 100);
            let granted = pool
                .retries_in_flight
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| (r < allowed).then_some(r + 1))
                .is_ok();
            if !granted {
                pool.series.budget_exhausted.inc();
                return false;
            }
            a.holds_retry_slot = true;
        }
        a.retries += 1;
        a.next = Some(next);
        pool.series.retry(match failed {
            Failed::Connect => RetryCause::Connect,
            Failed::BeforeResponse => RetryCause::Error,
            Failed::Status5xx => RetryCause::Status5xx,
        });
        true
    }

    fn passive_failure(&self, server: &Server) {
        if self.passive_failures == 0 {
            return;
        }
        let n = server.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= self.passive_failures {
            server.failures.store(0, Ordering::Relaxed);
            let until = self.now_ms() + self.passive_down.as_millis() as u64;
            if server.down_until_ms.swap(until, Ordering::Relaxed) <= self.now_ms() {
                tracing::warn!(
                    origin = %server.name, origin.address = %server.address, failures = n,
                    down_secs = self.passive_down.as_secs(), "origin.passive_down"
                );
            }
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

impl Pool {
    fn build(
        p: &PoolConfig,
        index: usize,
        config: &OriginConfig,
        metrics: &OriginMetrics,
    ) -> Result<Pool, ConfigError> {
        let servers = p
            .servers
            .iter()
            .enumerate()
            .map(|(j, s)| Server::build(s, (index * 64 + j + 1) as u64, config, metrics.server(&p.name, &s.name)))
            .collect::<Result<Vec<_>, _>>()?;
        for s in &servers {
            s.series.up.set(1);
        }
        Ok(Pool {
            name: p.name.clone(),
            servers,
            next: AtomicUsize::new(0),
            in_flight: AtomicU32::new(0),
            retries_in_flight: AtomicU32::new(0),
            budget_percent: config.retry.budget_percent,
            budget_min: config.retry.budget_min,
            series: metrics.pool(&p.name),
        })
    }

    /// Round robin over origins not in `tried`, only those up when `up_only`.
    fn choose(&self, tried: u64, now_ms: u64, up_only: bool) -> Option<usize> {
        let n = self.servers.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n).map(|i| (start + i) % n).find(|&i| tried & (1 << i) == 0 && (!up_only || self.servers[i].up(now_ms)))
    }
}

impl Server {
    fn build(
        s: &ServerConfig,
        group: u64,
        config: &OriginConfig,
        series: metrics::ServerSeries,
    ) -> Result<Server, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid { field: "origin.pools.servers", message };
        let addr = resolve(&s.address).map_err(|e| invalid(format!("{:?}: {e}", s.name)))?;
        let (host_part, _) =
            split_host_port(&s.address).ok_or_else(|| invalid(format!("{:?}: bad address", s.name)))?;
        let host = if s.host.is_empty() {
            // The Host header keeps IPv6 brackets.
            s.address.rsplit_once(':').map_or(host_part, |(h, _)| h).to_owned()
        } else {
            s.host.clone()
        };
        let sni = if s.sni.is_empty() { host_part.to_owned() } else { s.sni.clone() };
        let ca = if s.ca_file.as_os_str().is_empty() {
            None
        } else {
            Some(
                load_ca(&s.ca_file)
                    .map_err(|e| invalid(format!("{:?}: ca_file {}: {e}", s.name, s.ca_file.display())))?,
            )
        };
        let template = PeerTemplate {
            group,
            tls: s.tls,
            sni,
            ca,
            connect: Duration::from_millis(config.connect_timeout_ms),
            read: Duration::from_millis(config.read_timeout_ms),
            write: Duration::from_millis(config.write_timeout_ms),
            idle: Duration::from_secs(config.idle_timeout_secs),
        };
        Ok(Server {
            name: s.name.clone(),
            address: s.address.clone(),
            host,
            peer: ArcSwap::from_pointee(template.peer(addr)),
            active_up: AtomicBool::new(true),
            down_until_ms: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            series,
        })
    }

    fn up(&self, now_ms: u64) -> bool {
        self.active_up.load(Ordering::Relaxed) && self.down_until_ms.load(Ordering::Relaxed) <= now_ms
    }

    /// The socket address in use.
    fn addr(&self) -> Option<SocketAddr> {
        self.peer.load()._address.as_inet().copied()
    }

    /// Points the origin at a newly resolved address (same TLS, SNI, CA and timeouts).
    fn readdress(&self, addr: SocketAddr) {
        let mut peer = (**self.peer.load()).clone();
        peer._address = pingora::protocols::l4::socket::SocketAddr::Inet(addr);
        self.peer.store(Arc::new(peer));
    }
}

/// How to build an origin's peer for any address.
struct PeerTemplate {
    /// Pingora's pool key for this origin: its keep-alive connections are never handed to
    /// another configured origin, even one with the same address (another CA or SNI).
    group: u64,
    tls: bool,
    sni: String,
    ca: Option<Arc<[WrappedX509]>>,
    connect: Duration,
    read: Duration,
    write: Duration,
    idle: Duration,
}

impl PeerTemplate {
    fn peer(&self, addr: SocketAddr) -> HttpPeer {
        let mut peer = HttpPeer::new(addr, self.tls, self.sni.clone());
        peer.group_key = self.group;
        peer.options.connection_timeout = Some(self.connect);
        peer.options.read_timeout = Some(self.read);
        peer.options.write_timeout = Some(self.write);
        peer.options.idle_timeout = Some(self.idle);
        // Always verify HTTPS origins: the chain (system roots or `ca_file`) and the name.
        peer.options.verify_cert = true;
        peer.options.verify_hostname = true;
        peer.options.ca = self.ca.clone();
        peer
    }
}

/// Resolves `host:port` (blocking: startup and the background resolver only).
pub(crate) fn resolve(address: &str) -> Result<SocketAddr, String> {
    let (host, port) = split_host_port(address).ok_or("not host:port")?;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    address
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {address:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{address:?} resolves to nothing"))
}

fn load_ca(path: &Path) -> Result<Arc<[WrappedX509]>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    use x509_parser::prelude::{FromDer, X509Certificate};
    let pem = std::fs::read(path).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for der in CertificateDer::pem_slice_iter(&pem) {
        let der = der.map_err(|e| e.to_string())?;
        X509Certificate::from_der(&der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
        out.push(WrappedX509::new(der.to_vec(), pingora::utils::tls::parse_x509));
    }
    if out.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    Ok(out.into())
}

#[cfg(test)]
mod tests;
