//! Assembling and running the gRPC server: the `stile.v1` services plus the
//! standard health and reflection services, a periodic prune task, and
//! graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use stile_proto::v1::api_key_service_server::ApiKeyServiceServer;
use stile_proto::v1::asset_service_server::AssetServiceServer;
use stile_proto::v1::audit_service_server::AuditServiceServer;
use stile_proto::v1::edge_service_server::EdgeServiceServer;
use stile_proto::v1::key_service_server::KeyServiceServer;
use stile_proto::v1::link_service_server::LinkServiceServer;
use stile_proto::v1::revocation_service_server::RevocationServiceServer;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, StoreBackend};
use crate::error::ApiError;
use crate::service::{ApiKeys, Assets, Audit, Edges, Keys, Links, Revocations, Shared};
use crate::store::{RedbStore, RedisStore, ReplicaBus, Retention, Store, StoreError};

/// Longest a graceful shutdown waits for in-flight calls and open connections.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The storage backend could not be opened.
    #[error("opening the store: {0}")]
    Store(#[from] StoreError),
    /// Start-up work (initial signing key) failed.
    #[error("start-up: {0}")]
    Startup(ApiError),
    /// The reflection service could not be built.
    #[error("reflection: {0}")]
    Reflection(String),
    /// The gRPC transport failed.
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Opens the configured store with the system clock and serves on `listener`
/// until `shutdown` completes.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    ControlPlane::open(config, Arc::new(SystemClock)).await?.serve(listener, shutdown).await
}

/// A control plane ready to serve: store open, signing key in place.
#[derive(Debug)]
pub struct ControlPlane {
    shared: Arc<Shared>,
}

impl ControlPlane {
    /// Opens the configured store (redb at `store.path`, or Redis at `store.redis.url`).
    pub async fn open(config: Config, clock: Arc<dyn Clock>) -> Result<ControlPlane, ServeError> {
        match config.store.backend {
            StoreBackend::Redb => {
                let path = config.store.path.clone();
                let store = tokio::task::spawn_blocking(move || RedbStore::open(&path))
                    .await
                    .map_err(|e| StoreError::Backend(format!("store task: {e}")))??;
                ControlPlane::start(config, Arc::new(store), None, clock).await
            }
            StoreBackend::Redis => {
                let redis = Arc::new(RedisStore::connect(&config.store.redis, config.audit.max_events).await?);
                let bus: Arc<dyn ReplicaBus> = Arc::clone(&redis) as _;
                ControlPlane::start(config, redis, Some(bus), clock).await
            }
        }
    }

    /// Uses an already open store that only this process writes; creates the
    /// first signing key if none is active.
    pub async fn with_store(
        config: Config,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Result<ControlPlane, ServeError> {
        ControlPlane::start(config, store, None, clock).await
    }

    async fn start(
        config: Config,
        store: Arc<dyn Store>,
        bus: Option<Arc<dyn ReplicaBus>>,
        clock: Arc<dyn Clock>,
    ) -> Result<ControlPlane, ServeError> {
        let shared = Arc::new(Shared::new(Arc::new(config), store, bus, clock));
        crate::service::start(&shared).await.map_err(ServeError::Startup)?;
        Ok(ControlPlane { shared })
    }

    /// Serves until `shutdown` completes, then lets in-flight calls finish and
    /// makes buffered audit events durable.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        self.serve_with_admin(listener, None, shutdown).await
    }

    /// [`ControlPlane::serve`], plus the admin HTTP listener (`/healthz`, `/readyz`,
    /// `/metrics`) on `admin` while serving. `/readyz` turns 503 as soon as
    /// `shutdown` completes, while in-flight calls drain.
    pub async fn serve_with_admin(
        self,
        listener: TcpListener,
        admin: Option<TcpListener>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        let s = &self.shared;
        let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let admin = admin.map(|l| {
            if let Ok(addr) = l.local_addr() {
                tracing::info!(admin = %addr, "control.admin");
            }
            tokio::spawn(crate::metrics::serve_admin(l, Arc::clone(s), Arc::clone(&ready)))
        });
        let shutdown = {
            let ready = Arc::clone(&ready);
            async move {
                shutdown.await;
                ready.store(false, std::sync::atomic::Ordering::Relaxed);
            }
        };
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<LinkServiceServer<Links>>().await;
        health.set_serving::<RevocationServiceServer<Revocations>>().await;
        health.set_serving::<KeyServiceServer<Keys>>().await;
        health.set_serving::<AssetServiceServer<Assets>>().await;
        health.set_serving::<EdgeServiceServer<Edges>>().await;
        health.set_serving::<AuditServiceServer<Audit>>().await;
        health.set_serving::<ApiKeyServiceServer<ApiKeys>>().await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(stile_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| ServeError::Reflection(e.to_string()))?;
        let reflection_alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(stile_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .map_err(|e| ServeError::Reflection(e.to_string()))?;

        let pruner = tokio::spawn(prune_loop(Arc::clone(s)));
        let poller = tokio::spawn(crate::sync::poll_versions(Arc::clone(s)));
        let publisher = s.bus.is_some().then(|| tokio::spawn(crate::fleet::publish_loop(Arc::clone(s))));
        match listener.local_addr() {
            Ok(addr) => tracing::info!(listen = %addr, "control.serving"),
            Err(e) => tracing::warn!(error = %e, "control.serving"),
        }
        // Without TCP_NODELAY small responses wait for the peer's delayed ACK (~40 ms).
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        ready.store(true, std::sync::atomic::Ordering::Relaxed);
        let (stopped, drain_started) = tokio::sync::oneshot::channel::<()>();
        let serve = tonic::transport::Server::builder()
            .layer(crate::metrics::RpcLayer(Arc::clone(&s.metrics)))
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_alpha)
            .add_service(LinkServiceServer::new(Links(Arc::clone(s))))
            .add_service(RevocationServiceServer::new(Revocations(Arc::clone(s))))
            .add_service(KeyServiceServer::new(Keys(Arc::clone(s))))
            .add_service(AssetServiceServer::new(Assets(Arc::clone(s))))
            .add_service(EdgeServiceServer::new(Edges(Arc::clone(s))))
            .add_service(AuditServiceServer::new(Audit(Arc::clone(s))))
            .add_service(ApiKeyServiceServer::new(ApiKeys(Arc::clone(s))))
            .serve_with_incoming_shutdown(incoming, async {
                shutdown.await;
                // End the sync streams, or the graceful shutdown waits for them.
                s.stopping.send_replace(true);
                let _ = stopped.send(());
            });
        // Draining is bounded: an idle client connection that never answers the
        // GOAWAY would otherwise hold the shutdown forever.
        let drain_limit = async {
            match drain_started.await {
                Ok(()) => tokio::time::sleep(DRAIN_LIMIT).await,
                Err(_) => std::future::pending().await,
            }
        };
        let result = tokio::select! {
            r = serve => r,
            () = drain_limit => {
                tracing::warn!(limit_secs = DRAIN_LIMIT.as_secs(), "control.drain_timeout: closing the remaining connections");
                Ok(())
            }
        };
        pruner.abort();
        poller.abort();
        if let Some(publisher) = publisher {
            publisher.abort();
        }
        if let Some(admin) = admin {
            admin.abort();
        }
        let _ = poller.await;
        // Wait for the task to drop its handle on the store, so the file can be reopened.
        let _ = pruner.await;
        // A final durable commit flushes buffered (non-durable) mint audit events.
        if let Err(e) = prune_once(s).await {
            tracing::warn!(error = %e, "control.final_prune");
        }
        tracing::info!("control.stopped");
        Ok(result?)
    }
}

async fn prune_loop(s: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(s.config.revocations.prune_interval_secs));
    loop {
        tick.tick().await;
        if let Err(e) = prune_once(&s).await {
            tracing::warn!(error = %e, "prune.failed");
        }
    }
}

async fn prune_once(s: &Shared) -> Result<(), StoreError> {
    let c = &s.config;
    let retention = Retention {
        log_entries: c.revocations.log_retention,
        audit_events: c.audit.max_events,
        audit_max_age_secs: c.audit.max_age_secs,
    };
    let pruned = s.store.prune(s.now(), retention).await?;
    if pruned != Default::default() {
        tracing::info!(
            revocations = pruned.revocations,
            log_entries = pruned.log_entries,
            audit_events = pruned.audit_events,
            "prune"
        );
    }
    Ok(())
}
