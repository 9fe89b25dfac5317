//! The origins' background work, a Pingora background service: active health
//! checks (an HTTP GET per origin every `origin.health.interval_ms`), resolving
//! host names again every `origin.resolve_interval_secs`, and the `up` gauges
//! (passive health ends by time, so they are refreshed every second).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use http::header;
use pingora::connectors::http::Connector;
use pingora::prelude::RequestHeader;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::{Origins, Server, resolve};
use crate::config::HealthCheckConfig;

/// Health checks, resolution and gauges for every origin.
#[derive(Debug)]
pub(crate) struct OriginHealth {
    origins: Arc<Origins>,
    health: HealthCheckConfig,
    resolve_every: Duration,
}

impl OriginHealth {
    /// The background work for `origins`.
    pub(crate) fn new(origins: Arc<Origins>, health: HealthCheckConfig, resolve_every: Duration) -> OriginHealth {
        OriginHealth { origins, health, resolve_every }
    }
}

#[async_trait]
impl BackgroundService for OriginHealth {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tasks = tokio::task::JoinSet::new();
        if !self.health.path.is_empty() {
            let connector = Arc::new(Connector::new(None));
            for (p, pool) in self.origins.pools.iter().enumerate() {
                for s in 0..pool.servers.len() {
                    let (origins, health, connector) = (self.origins.clone(), self.health.clone(), connector.clone());
                    tasks.spawn(async move { check_loop(&origins, p, s, &health, &connector).await });
                }
            }
        }
        let (origins, every) = (self.origins.clone(), self.resolve_every);
        tasks.spawn(async move { resolve_loop(&origins, every).await });
        let origins = self.origins.clone();
        tasks.spawn(async move { gauge_loop(&origins).await });
        loop {
            if shutdown.changed().await.is_err() || *shutdown.borrow() {
                tasks.abort_all();
                return;
            }
        }
    }
}

async fn check_loop(origins: &Origins, pool: usize, server: usize, h: &HealthCheckConfig, connector: &Connector) {
    let s = &origins.pools[pool].servers[server];
    let (mut passes, mut fails) = (0u32, 0u32);
    let mut tick = tokio::time::interval(Duration::from_millis(h.interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let result = tokio::time::timeout(Duration::from_millis(h.timeout_ms), check(s, &h.path, connector)).await;
        let ok = matches!(result, Ok(Ok(status)) if (200..400).contains(&status));
        s.series.check(ok);
        let up = s.active_up.load(Ordering::Relaxed);
        if ok {
            (passes, fails) = (passes + 1, 0);
            if !up && passes >= h.healthy_threshold {
                s.active_up.store(true, Ordering::Relaxed);
                tracing::info!(origin = %s.name, origin.address = %s.address, "origin.up");
            }
        } else {
            (passes, fails) = (0, fails + 1);
            if up && fails >= h.unhealthy_threshold {
                s.active_up.store(false, Ordering::Relaxed);
                let why = match &result {
                    Ok(Ok(status)) => format!("status {status}"),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "timeout".to_owned(),
                };
                tracing::warn!(origin = %s.name, origin.address = %s.address, error = %why, "origin.down");
            }
        }
        s.series.up.set(i64::from(s.up(origins.now_ms())));
    }
}

/// One check: `GET path` on a fresh connection (the origin's own peer: address, TLS,
/// SNI, CA), `Connection: close`; the status of the response head.
async fn check(s: &Server, path: &str, connector: &Connector) -> pingora::Result<u16> {
    let peer = (**s.peer.load()).clone();
    let (mut session, _) = connector.get_http_session(&peer).await?;
    let mut req = RequestHeader::build("GET", path.as_bytes(), None)?;
    req.insert_header(header::HOST, &s.host)?;
    req.insert_header(header::CONNECTION, "close")?;
    req.insert_header(header::USER_AGENT, "stile-edge-health")?;
    session.write_request_header(Box::new(req)).await?;
    session.finish_request_body().await?;
    session.read_response_header().await?;
    let status = session.response_header().map_or(0, |r| r.status.as_u16());
    session.shutdown().await;
    Ok(status)
}

async fn resolve_loop(origins: &Origins, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate: resolved at startup already
    loop {
        tick.tick().await;
        for pool in &origins.pools {
            for s in &pool.servers {
                let address = s.address.clone();
                let resolved = tokio::task::spawn_blocking(move || resolve(&address)).await;
                match resolved {
                    Ok(Ok(addr)) if Some(addr) != s.addr() => {
                        tracing::info!(
                            origin = %s.name, origin.address = %s.address, origin.ip = %addr, "origin.readdressed"
                        );
                        s.readdress(addr);
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(origin = %s.name, error = %e, "origin.resolve_failed: keeping the address in use");
                    }
                    Err(e) => tracing::warn!(origin = %s.name, error = %e, "origin.resolve_failed"),
                }
            }
        }
    }
}

async fn gauge_loop(origins: &Origins) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = origins.now_ms();
        for pool in &origins.pools {
            for s in &pool.servers {
                s.series.up.set(i64::from(s.up(now)));
            }
        }
    }
}
