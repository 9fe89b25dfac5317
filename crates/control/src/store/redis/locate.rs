//! Which Redis to talk to: the server `store.redis.url` names, or the primary
//! the Sentinels name (`store.redis.sentinel`), over TLS when the scheme is
//! `rediss://` (`tls_ca_file`, optional client certificate).
//!
//! The store's connections to that server form one [`Link`], swapped whole.
//! With Sentinel, [`follow`] asks the Sentinels again every second and after
//! every "unavailable" and, if they name another primary, opens a new link
//! there and swaps it in; the log tail notices and moves too. Without Sentinel the
//! link never changes (the connection managers reconnect to the same address).

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{Client, ConnectionAddr, IntoConnectionInfo, TlsMode};

use super::config::RedisConfig;
use super::{Inner, Settings};
use crate::store::StoreError;

/// Shortest pause between two Sentinel look-ups.
const FOLLOW_PAUSE: Duration = Duration::from_millis(100);
/// Longest time between two Sentinel look-ups: after a graceful failover the
/// old primary still takes writes until Sentinel demotes it, so waiting for
/// an error is not enough.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// Where the primary is.
pub(super) enum Locator {
    /// `store.redis.url`'s server.
    Fixed(Client),
    /// Whatever the Sentinels name as `master`.
    Sentinel { sentinels: tokio::sync::Mutex<SentinelClient>, master: String },
}

/// The connections to one server.
pub(super) struct Link {
    /// `host:port` (or the socket path), for logs.
    pub(super) addr: String,
    pub(super) client: Client,
    /// Reads, mint audit events, pruning.
    pub(super) conn: ConnectionManager,
    /// Commits: a `WAIT` on it holds up only other commits.
    pub(super) writer: ConnectionManager,
}

impl Locator {
    /// Builds the clients (no connection yet). TLS files are read here.
    pub(super) fn new(config: &RedisConfig) -> Result<Locator, StoreError> {
        if config.uses_tls() {
            install_ring_provider();
        }
        let certs = config.tls_certificates().map_err(StoreError::Backend)?;
        let invalid =
            || StoreError::Backend(format!("store.redis.url {} is not a valid Redis URL", config.redacted_url()));
        let info = config.url.as_str().into_connection_info().map_err(|_| invalid())?;
        let tls = matches!(info.addr(), ConnectionAddr::TcpTls { .. });
        if !config.sentinel.enabled() {
            let client = match certs {
                Some(certs) if tls => Client::build_with_tls(info, certs),
                _ => Client::open(info),
            };
            return client.map(Locator::Fixed).map_err(|_| invalid());
        }
        let s = &config.sentinel;
        let bad = |e: redis::RedisError| StoreError::Backend(format!("store.redis.sentinel: {e}"));
        let scheme = if s.tls { "rediss" } else { "redis" };
        let addrs = s
            .addresses
            .iter()
            .map(|a| format!("{scheme}://{a}").into_connection_info().map(|i| i.addr().clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(bad)?;
        let primary = info.redis_settings();
        let mut b = SentinelClientBuilder::new(addrs, &s.master_name, SentinelServerType::Master)
            .map_err(bad)?
            .set_client_to_redis_db(primary.db());
        if let Some(user) = primary.username() {
            b = b.set_client_to_redis_username(user);
        }
        if let Some(password) = primary.password() {
            b = b.set_client_to_redis_password(password);
        }
        if tls {
            b = b.set_client_to_redis_tls_mode(TlsMode::Secure);
            if let Some(certs) = &certs {
                b = b.set_client_to_redis_certificates(certs.clone());
            }
        }
        if s.tls {
            b = b.set_client_to_sentinel_tls_mode(TlsMode::Secure);
            if let Some(certs) = certs {
                b = b.set_client_to_sentinel_certificates(certs);
            }
        }
        if !s.username.is_empty() {
            b = b.set_client_to_sentinel_username(&s.username);
        }
        if !s.password.is_empty() {
            b = b.set_client_to_sentinel_password(&s.password);
        }
        let client = b.build().map_err(bad)?;
        Ok(Locator::Sentinel { sentinels: tokio::sync::Mutex::new(client), master: s.master_name.clone() })
    }

    /// A client for the primary: the fixed one, or the one the Sentinels
    /// name now (checked to answer `ROLE` as master).
    pub(super) async fn primary(&self, deadline: Duration) -> Result<Client, StoreError> {
        let (sentinels, master) = match self {
            Locator::Fixed(client) => return Ok(client.clone()),
            Locator::Sentinel { sentinels, master } => (sentinels, master),
        };
        let mut sentinels = sentinels.lock().await;
        match tokio::time::timeout(deadline, sentinels.async_get_client()).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => Err(StoreError::Unavailable(format!("the Sentinels name no primary {master:?}: {e}"))),
            Err(_) => Err(StoreError::Unavailable(format!(
                "the Sentinels named no primary {master:?} within {} ms",
                deadline.as_millis()
            ))),
        }
    }

    pub(super) fn follows_sentinel(&self) -> bool {
        matches!(self, Locator::Sentinel { .. })
    }
}

/// Opens the read and commit connections to `client`'s server.
pub(super) async fn open_link(client: Client, settings: &Settings) -> Result<Link, StoreError> {
    let addr = client.get_connection_info().addr().to_string();
    let manager = |response: Duration| {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(Some(response))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500))
    };
    let open = |cfg: ConnectionManagerConfig| {
        let client = client.clone();
        let deadline = settings.read_timeout;
        // With Sentinel the URL's host is not the server: name both.
        let url = if settings.redacted_url.contains(&addr) {
            settings.redacted_url.clone()
        } else {
            format!("{} (primary {addr})", settings.redacted_url)
        };
        async move {
            match tokio::time::timeout(deadline, ConnectionManager::new_with_config(client, cfg)).await {
                Ok(Ok(c)) => Ok(c),
                Ok(Err(e)) => {
                    let e = e.to_string();
                    let hint = if e.contains("certificate") || e.contains("Certificate") {
                        " (TLS: check store.redis.tls_ca_file, tls_cert_file and tls_key_file)"
                    } else {
                        ""
                    };
                    Err(StoreError::Unavailable(format!("cannot connect to Redis at {url}: {e}{hint}")))
                }
                Err(_) => Err(StoreError::Unavailable(format!("cannot connect to Redis at {url}: timed out"))),
            }
        }
    };
    let conn = open(manager(settings.command_timeout)).await?;
    let writer = open(manager(settings.command_timeout + settings.wait_timeout)).await?;
    Ok(Link { addr, client, conn, writer })
}

/// With Sentinel: after every wake-up (an "unavailable" anywhere) and at
/// least every [`FOLLOW_EVERY`], asks the Sentinels for the primary and moves
/// the link there if it changed. Runs until the store is dropped.
pub(super) async fn follow(inner: Arc<Inner>) {
    let master = match &inner.locator {
        Locator::Sentinel { master, .. } => master.clone(),
        Locator::Fixed(_) => return,
    };
    loop {
        let _ = tokio::time::timeout(FOLLOW_EVERY, inner.follow.notified()).await;
        match inner.locator.primary(inner.settings.read_timeout).await {
            Ok(client) => {
                let addr = client.get_connection_info().addr().to_string();
                let from = inner.link.load().addr.clone();
                if addr != from {
                    match open_link(client, &inner.settings).await {
                        Ok(link) => {
                            inner.link.store(Arc::new(link));
                            tracing::warn!(master, from, to = addr, "redis.primary_changed");
                        }
                        Err(e) => tracing::debug!(master, to = addr, error = %e, "redis.primary_unreachable"),
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "redis.sentinel_lookup_failed"),
        }
        tokio::time::sleep(FOLLOW_PAUSE).await;
    }
}

/// rustls's ring provider (the workspace's only one) as the process default,
/// unless one is installed: the `redis` crate builds its TLS configuration
/// with the default provider.
#[allow(deprecated)] // reason: ring is the provider every Stile TLS surface uses.
fn install_ring_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
