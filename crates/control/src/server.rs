//! Assembling and running the control plane: [`ControlPlane::open`] builds
//! every component from the configuration and the store; `serve` runs the
//! `stile.v1` services plus the standard health and reflection services, the
//! background tasks (pruning, following other writers' versions, publishing
//! this replica's fleet view, reloading the TLS certificate), the TLS accept
//! loop, the admin listener, and the graceful shutdown.
//!
//! This is the one place that wires components together; each component and
//! service is handed only the handles it uses.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use stile_proto::v1::api_key_service_server::ApiKeyServiceServer;
use stile_proto::v1::asset_service_server::AssetServiceServer;
use stile_proto::v1::audit_service_server::AuditServiceServer;
use stile_proto::v1::edge_service_server::EdgeServiceServer;
use stile_proto::v1::key_service_server::KeyServiceServer;
use stile_proto::v1::link_service_server::LinkServiceServer;
use stile_proto::v1::purge_service_server::PurgeServiceServer;
use stile_proto::v1::revocation_service_server::RevocationServiceServer;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::server::NamedService;
use tonic::service::{Routes, RoutesBuilder};
use tonic::transport::server::TcpIncoming;
use tonic_health::server::HealthReporter;

use crate::admin::Admin;
use crate::auth::Authenticator;
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, StoreBackend};
use crate::error::ApiError;
use crate::fleet::{Fleet, ReplicaFleet};
use crate::metrics::{Metrics, RpcLayer};
use crate::service::{ApiKeys, Assets, Audit, Edges, KeyRollout, Keys, Links, Purges, Revocations};
use crate::signing::SigningKeys;
use crate::store::notify::{NotifyingStore, VersionWatch, raise};
use crate::store::{RedbStore, RedisStore, ReplicaBus, Retention, Store, StoreError};
use crate::sync::SyncCtx;
use crate::tls::reload as tls_reload;
use crate::tls::{ServerTls, TlsError, TlsObserver as _, accept, warn_if_plaintext};

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
    Reflection(#[from] tonic_reflection::server::Error),
    /// `[tls]` cannot be used (certificate, key or CA file).
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The gRPC transport failed.
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Opens the configured store with the system clock and serves gRPC on
/// `listener` until `shutdown` completes, without the admin listener. `stile
/// control` uses [`ControlPlane::open`] and [`ControlPlane::serve_with_admin`]
/// instead; this is the shortest way to embed a control plane.
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
    config: Arc<Config>,
    /// The store every component uses: the backend behind [`NotifyingStore`].
    store: Arc<dyn Store>,
    /// The other replicas, when the backend is shared.
    bus: Option<Arc<dyn ReplicaBus>>,
    clock: Arc<dyn Clock>,
    /// The newest committed version; sync sessions and the metrics read it.
    versions: Arc<VersionWatch>,
    metrics: Arc<Metrics>,
    auth: Authenticator,
    keys: Arc<SigningKeys>,
    fleet: Arc<Fleet>,
    replicas: Arc<ReplicaFleet>,
    rollout: Arc<KeyRollout>,
    sync: Arc<SyncCtx>,
    /// gRPC over TLS (`[tls]`), checked; `None`: plaintext.
    tls: Option<Arc<ServerTls>>,
}

impl ControlPlane {
    /// Opens the configured store (redb at `store.path`, or Redis at `store.redis.url`).
    /// `[tls]` is checked first, so a bad certificate fails before the store opens.
    pub async fn open(config: Config, clock: Arc<dyn Clock>) -> Result<ControlPlane, ServeError> {
        let tls = ServerTls::load(&config.tls, clock.now_secs())?;
        match config.store.backend {
            StoreBackend::Redb => {
                let path = config.store.path.clone();
                let store = tokio::task::spawn_blocking(move || RedbStore::open(&path))
                    .await
                    .map_err(|e| StoreError::Backend(format!("store task: {e}")))??;
                ControlPlane::start(config, Arc::new(store), None, clock, tls).await
            }
            StoreBackend::Redis => {
                let redis = Arc::new(RedisStore::connect(&config.store.redis, config.audit.max_events).await?);
                let bus: Arc<dyn ReplicaBus> = Arc::clone(&redis) as _;
                ControlPlane::start(config, redis, Some(bus), clock, tls).await
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
        let tls = ServerTls::load(&config.tls, clock.now_secs())?;
        ControlPlane::start(config, store, None, clock, tls).await
    }

    /// Builds every component, then the start-up work: publishes the log
    /// version to the sync sessions, loads the signing keys, resumes the
    /// rollout of a key a previous run left PENDING, and makes sure a key is
    /// active (first start of an empty store).
    async fn start(
        config: Config,
        backend: Arc<dyn Store>,
        bus: Option<Arc<dyn ReplicaBus>>,
        clock: Arc<dyn Clock>,
        tls: Option<ServerTls>,
    ) -> Result<ControlPlane, ServeError> {
        let tls = tls.map(Arc::new);
        let config = Arc::new(config);
        let versions = Arc::new(tokio::sync::watch::channel(0).0);
        let metrics = Arc::new(Metrics::new());
        if let Some(tls) = &tls {
            metrics.tls_certificate_expiry(tls.not_after());
            metrics.tls_serving();
        }
        let store: Arc<dyn Store> = Arc::new(NotifyingStore::new(backend, Arc::clone(&versions), metrics.clone()));
        let auth = Authenticator::new(&config.auth, Arc::clone(&store), Arc::clone(&clock), Arc::clone(&metrics));
        let keys = Arc::new(SigningKeys::new(Arc::clone(&store)));
        let fleet = Fleet::new();
        let heartbeat = Duration::from_millis(config.sync.heartbeat_interval_ms);
        let window = Duration::from_secs(config.sync.seen_window_secs);
        let replicas =
            Arc::new(ReplicaFleet::new(Arc::clone(&fleet), bus.clone(), heartbeat, window, Arc::clone(&clock)));
        let rollout = Arc::new(KeyRollout::new(
            &config,
            Arc::clone(&store),
            Arc::clone(&clock),
            Arc::clone(&keys),
            Arc::clone(&replicas),
            Arc::clone(&metrics),
        ));
        let sync = Arc::new(SyncCtx::new(
            Arc::clone(&store),
            Arc::clone(&fleet),
            Arc::clone(&versions),
            Arc::clone(&clock),
            Arc::clone(&metrics),
            config.sync.clone(),
            tls.as_ref().is_some_and(|t| t.require_client_cert),
        ));

        let startup = async {
            versions.send_replace(store.version().await?);
            keys.reload().await?;
            rollout.resume().await?;
            // A first key for each algorithm a policy mints with (HMAC-SHA256 by default).
            for algorithm in config.minting_algorithms() {
                if !keys.has_active(algorithm) {
                    let rotated = rollout.rotate("system", "initial key", algorithm, None).await?;
                    tracing::info!(
                        key.id = rotated.key.id,
                        key.algorithm = %algorithm,
                        version = rotated.version,
                        "keys.initial"
                    );
                }
            }
            Ok::<(), ApiError>(())
        };
        startup.await.map_err(ServeError::Startup)?;
        Ok(ControlPlane {
            config,
            store,
            bus,
            clock,
            versions,
            metrics,
            auth,
            keys,
            fleet,
            replicas,
            rollout,
            sync,
            tls,
        })
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
        let ready = Arc::new(AtomicBool::new(false));
        let routes = self.routes().await?;
        let background = self.spawn_background(admin, &ready);
        match listener.local_addr() {
            Ok(addr) => {
                warn_if_plaintext(&self.config.tls, addr);
                tracing::info!(listen = %addr, tls = self.tls.is_some(), "control.serving");
            }
            Err(e) => tracing::warn!(error = %e, "control.serving"),
        }
        ready.store(true, Ordering::Relaxed);
        let (stopped, drain_started) = tokio::sync::oneshot::channel::<()>();
        let router = tonic::transport::Server::builder().layer(RpcLayer(Arc::clone(&self.metrics))).add_routes(routes);
        let signal = async {
            shutdown.await;
            ready.store(false, Ordering::Relaxed);
            // End the sync streams, or the graceful shutdown waits for them.
            self.sync.stop();
            let _ = stopped.send(());
        };
        // With TLS our own accept loop runs the handshakes (tls/accept.rs); it ends
        // when tonic drops its stream, and is aborted below in any case.
        let mut acceptor = None;
        let serve: Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send + '_>> = match &self.tls {
            Some(tls) => {
                let (incoming, task) = accept::spawn(listener, Arc::clone(tls), self.metrics.clone());
                acceptor = Some(task);
                Box::pin(router.serve_with_incoming_shutdown(incoming, signal))
            }
            None => {
                // Without TCP_NODELAY small responses wait for the peer's delayed ACK (~40 ms).
                let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                Box::pin(router.serve_with_incoming_shutdown(incoming, signal))
            }
        };
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
        if let Some(task) = acceptor {
            task.abort();
            let _ = task.await;
        }
        // Wait for the tasks to drop their handles on the store, so the file can be reopened.
        background.stop().await;
        // A final durable commit flushes buffered (non-durable) mint audit events.
        if let Err(e) = prune_once(self.store.as_ref(), &self.config, self.clock.as_ref()).await {
            tracing::warn!(error = %e, "control.final_prune");
        }
        tracing::info!("control.stopped");
        Ok(result?)
    }

    /// Every gRPC service behind one router: health (each `stile.v1` service
    /// marked SERVING), reflection v1 and v1alpha, and the `stile.v1` services.
    async fn routes(&self) -> Result<Routes, ServeError> {
        let (health, health_service) = tonic_health::server::health_reporter();
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(stile_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let mut routes = RoutesBuilder::default();
        routes.add_service(health_service);
        routes.add_service(reflection().build_v1()?);
        routes.add_service(reflection().build_v1alpha()?);
        let (auth, store, clock) = (&self.auth, &self.store, &self.clock);
        let links = Links {
            config: Arc::clone(&self.config),
            auth: auth.clone(),
            store: Arc::clone(store),
            clock: Arc::clone(clock),
            keys: Arc::clone(&self.keys),
            metrics: Arc::clone(&self.metrics),
        };
        let revocations = Revocations {
            config: Arc::clone(&self.config),
            auth: auth.clone(),
            store: Arc::clone(store),
            clock: Arc::clone(clock),
            rollout: Arc::clone(&self.rollout),
            replicas: Arc::clone(&self.replicas),
            metrics: Arc::clone(&self.metrics),
        };
        let keys = Keys { auth: auth.clone(), store: Arc::clone(store), rollout: Arc::clone(&self.rollout) };
        let assets = Assets { auth: auth.clone(), store: Arc::clone(store), clock: Arc::clone(clock) };
        let edges = Edges {
            auth: auth.clone(),
            store: Arc::clone(store),
            replicas: Arc::clone(&self.replicas),
            sync: Arc::clone(&self.sync),
        };
        let purges = Purges {
            config: Arc::clone(&self.config),
            auth: auth.clone(),
            store: Arc::clone(store),
            clock: Arc::clone(clock),
            replicas: Arc::clone(&self.replicas),
        };
        let audit = Audit { auth: auth.clone(), store: Arc::clone(store) };
        let api_keys = ApiKeys { auth: auth.clone(), store: Arc::clone(store), clock: Arc::clone(clock) };
        serving(&mut routes, &health, LinkServiceServer::new(links)).await;
        // A RevokeBatch of revocations.max_batch subjects needs more than the default 4 MiB.
        let revocations = RevocationServiceServer::new(revocations).max_decoding_message_size(16 << 20);
        serving(&mut routes, &health, revocations).await;
        serving(&mut routes, &health, PurgeServiceServer::new(purges)).await;
        serving(&mut routes, &health, KeyServiceServer::new(keys)).await;
        serving(&mut routes, &health, AssetServiceServer::new(assets)).await;
        serving(&mut routes, &health, EdgeServiceServer::new(edges)).await;
        serving(&mut routes, &health, AuditServiceServer::new(audit)).await;
        serving(&mut routes, &health, ApiKeyServiceServer::new(api_keys)).await;
        Ok(routes.routes())
    }

    /// Starts the background tasks; they run until [`Background::stop`].
    fn spawn_background(&self, admin: Option<TcpListener>, ready: &Arc<AtomicBool>) -> Background {
        let mut tasks = Vec::new();
        if let Some(listener) = admin {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(admin = %addr, "control.admin");
            }
            let admin = Admin {
                metrics: Arc::clone(&self.metrics),
                fleet: Arc::clone(&self.fleet),
                versions: Arc::clone(&self.versions),
                store: Arc::clone(&self.store),
                clock: Arc::clone(&self.clock),
                ready: Arc::clone(ready),
            };
            tasks.push(tokio::spawn(admin.serve(listener)));
        }
        tasks.push(tokio::spawn(prune_loop(
            Arc::clone(&self.store),
            Arc::clone(&self.config),
            Arc::clone(&self.clock),
        )));
        tasks.push(tokio::spawn(follow_versions(
            Arc::clone(&self.store),
            self.bus.as_ref().map(|bus| bus.watch_versions()),
            Arc::clone(&self.versions),
            Arc::clone(&self.keys),
            Duration::from_millis(self.config.sync.heartbeat_interval_ms),
        )));
        tasks.push(tokio::spawn(Arc::clone(&self.sync).keep_live()));
        match &self.tls {
            Some(tls) => {
                let triggers = tls_reload::triggers(tls);
                let (tls, metrics, clock) = (Arc::clone(tls), Arc::clone(&self.metrics), Arc::clone(&self.clock));
                tasks.push(tokio::spawn(tls_reload::run(triggers, tls, metrics, clock)));
            }
            // SIGHUP (`systemctl reload`) must not end a plaintext control plane.
            None => tasks.push(tokio::spawn(tls_reload::ignore_sighup(stile_tls::ReloadTriggers::new(&[], 0)))),
        }
        if self.replicas.is_shared() {
            tasks.push(tokio::spawn(Arc::clone(&self.replicas).publish_loop()));
        }
        Background(tasks)
    }
}

/// Adds `service` to the router and marks it SERVING on the health service,
/// so the two lists cannot differ.
async fn serving<S>(routes: &mut RoutesBuilder, health: &HealthReporter, service: S)
where
    S: tower::Service<http::Request<tonic::body::Body>, Error = Infallible>
        + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Response: axum::response::IntoResponse,
    S::Future: Send + 'static,
{
    health.set_serving::<S>().await;
    routes.add_service(service);
}

/// The background tasks of a serving control plane.
struct Background(Vec<JoinHandle<()>>);

impl Background {
    /// Aborts every task and waits until each has ended.
    async fn stop(self) {
        for task in &self.0 {
            task.abort();
        }
        for task in self.0 {
            let _ = task.await;
        }
    }
}

/// Follows the log version written by anyone: re-reads the store's version
/// every heartbeat interval and publishes it when it moved, so commits by
/// other writers of a shared backend reach this replica's edges within one
/// interval. A shared backend that tails its log (`tail`, from
/// [`ReplicaBus::watch_versions`]) wakes this at once instead; the poll stays
/// as a safety net. A version moved by another writer may have changed the
/// signing keys, so the key cache is reloaded then.
async fn follow_versions(
    store: Arc<dyn Store>,
    mut tail: Option<tokio::sync::watch::Receiver<u64>>,
    versions: Arc<VersionWatch>,
    keys: Arc<SigningKeys>,
    interval: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let seen = match tail.as_mut() {
            Some(rx) => tokio::select! {
                changed = rx.changed() => match changed {
                    Ok(()) => Ok(*rx.borrow_and_update()),
                    Err(_) => {
                        tail = None;
                        continue;
                    }
                },
                _ = tick.tick() => store.version().await,
            },
            None => {
                tick.tick().await;
                store.version().await
            }
        };
        match seen {
            Ok(v) => {
                if raise(&versions, v)
                    && let Err(e) = keys.reload().await
                {
                    tracing::warn!(error = %e, "sync.key_reload_failed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "sync.version_poll_failed"),
        }
    }
}

async fn prune_loop(store: Arc<dyn Store>, config: Arc<Config>, clock: Arc<dyn Clock>) {
    let mut tick = tokio::time::interval(Duration::from_secs(config.revocations.prune_interval_secs));
    loop {
        tick.tick().await;
        if let Err(e) = prune_once(store.as_ref(), &config, clock.as_ref()).await {
            tracing::warn!(error = %e, "prune.failed");
        }
    }
}

async fn prune_once(store: &dyn Store, config: &Config, clock: &dyn Clock) -> Result<(), StoreError> {
    let retention = Retention {
        log_entries: config.revocations.log_retention,
        audit_events: config.audit.max_events,
        audit_max_age_secs: config.audit.max_age_secs,
    };
    let pruned = store.prune(clock.now_secs(), retention).await?;
    if pruned != Default::default() {
        tracing::info!(
            revocations = pruned.revocations,
            purges = pruned.purges,
            log_entries = pruned.log_entries,
            audit_events = pruned.audit_events,
            "prune"
        );
    }
    Ok(())
}
