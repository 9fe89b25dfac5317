//! Assembling the edge: configuration → state, geo and origin checked before
//! anything binds → a Pingora [`Server`] with the proxy, the admin listener and
//! the state source (the sync client, or the file reloader).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::admin::Admin;
use crate::cache::{Cache, StoreError};
use crate::clock::SharedClock;
use crate::config::{ConfigError, EdgeConfig};
use crate::fetch::Fetcher;
use crate::geo::{Geo, GeoError};
use crate::intake::Intake;
use crate::metrics::Metrics;
use crate::origin::{OriginHealth, Origins};
use crate::playback::{Segments, Sweeper, Tracker};
use crate::proxy::EdgeProxy;
use crate::reload::FileReloader;
use crate::state::{SharedState, StateError, load_file};
use crate::sync::{Initial, KeyError, SyncClient, SyncDeps, load_cache};
use crate::tls::{CertReloader, Front, Redirect, TlsError, TlsSetup};

/// How the process was asked to start (Pingora's own flags).
#[derive(Clone, Copy, Debug, Default)]
pub struct StartOptions {
    /// Take the listening sockets over from a running edge (zero-downtime upgrade, `-u`).
    pub upgrade: bool,
    /// Detach into the background (`-d`).
    pub daemon: bool,
}

/// Why the edge could not start. All of these happen before any port is bound.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Unreadable or invalid state file.
    #[error(transparent)]
    State(#[from] StateError),
    /// Corrupt GeoIP database.
    #[error(transparent)]
    Geo(#[from] GeoError),
    /// Unusable certificate, key or TLS setting.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The sync client cannot be set up (API key file, CA file, client certificate).
    #[error(transparent)]
    Sync(#[from] KeyError),
    /// The cache's disk tier cannot be used.
    #[error(transparent)]
    Cache(#[from] StoreError),
    /// Pingora refused to set up.
    #[error("cannot start the server: {0}")]
    Server(String),
}

/// A fully checked edge, ready to run.
#[derive(Debug)]
pub struct Edge {
    server: ServerBox,
    shared: Arc<SharedState>,
    metrics: Arc<Metrics>,
}

/// Pingora's `Server` has no `Debug`; this wrapper gives [`Edge`] one
/// (the workspace lints `missing_debug_implementations`).
struct ServerBox(Server);

impl std::fmt::Debug for ServerBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Server")
    }
}

impl Edge {
    /// Checks everything that can fail (origin resolution, GeoIP database, state file)
    /// and assembles the services. It binds no port itself, so a bad configuration
    /// fails before any is bound; but it runs Pingora's bootstrap, which with
    /// `opts.upgrade` waits to receive the listening sockets of the edge being
    /// replaced (and exits the process if that fails).
    pub fn build(config: &EdgeConfig, opts: StartOptions, clock: SharedClock) -> Result<Edge, StartError> {
        config.validate()?;
        let geo = Arc::new(Geo::open(&config.client)?);
        let leeway = u64::from(config.token.leeway_secs);
        let metrics = Arc::new(Metrics::new());
        // Origins resolved and certificates checked now, before anything binds.
        let origins = Arc::new(Origins::build(&config.origin, metrics.registry())?);
        let tls = TlsSetup::build(&config.tls, clock.now(), metrics.registry())?;
        let objects = if config.cache.enabled { Some(Cache::open(&config.cache, metrics.registry())?) } else { None };
        let (shared, sync) = match &config.sync {
            None => {
                let state = load_file(&config.state.file, clock.now(), leeway)?;
                metrics.observe_state(&state);
                metrics.observe_age(clock.now(), state.fresh_at);
                tracing::info!(
                    state.file = %config.state.file.display(), state.version = state.version,
                    state.keys = state.keys.len(), state.revocations = state.revocations.len(), "state.loaded"
                );
                (SharedState::new(state, true), None)
            }
            Some(sync) => {
                // Sync mode: `state.file` (optional) is the cache of the applied state.
                let cache = (!config.state.file.as_os_str().is_empty()).then(|| config.state.file.clone());
                let Initial { state, from_cache, model, liveness } = load_cache(cache.as_deref());
                metrics.observe_state(&state);
                metrics.observe_age(clock.now(), state.fresh_at_now());
                let shared = SharedState::new(state, from_cache);
                if let Some(max_age) = config.state.deny_when_older_than() {
                    shared.set_stale_guard(max_age, clock.clone());
                }
                let client = SyncClient::new(SyncDeps {
                    config: sync.clone(),
                    cache,
                    leeway,
                    model,
                    liveness,
                    shared: shared.clone(),
                    metrics: metrics.clone(),
                    clock: clock.clone(),
                    objects,
                })?;
                (shared, Some(client))
            }
        };
        if !config.validation.enabled {
            tracing::warn!(
                "TOKEN VALIDATION IS OFF (validation.enabled = false): this edge is an OPEN PROXY for its \
                 origin and serves every request unverified. For benchmarks only; never in production."
            );
        }

        let conf = ServerConf {
            threads: config.threads,
            work_stealing: config.work_stealing,
            grace_period_seconds: Some(config.grace_period_secs),
            graceful_shutdown_timeout_seconds: Some(config.graceful_shutdown_timeout_secs),
            pid_file: config.pid_file.clone(),
            upgrade_sock: config.upgrade_sock.clone(),
            upstream_keepalive_pool_size: config.origin.keepalive_pool_size,
            ..ServerConf::default()
        };
        let conf = conf.validate().map_err(|e| StartError::Server(e.to_string()))?;
        let opt = Opt { upgrade: opts.upgrade, daemon: opts.daemon, ..Opt::default() };
        let mut server = Server::new_with_opt_and_conf(opt, conf);
        server.bootstrap();

        let redirect = match &tls {
            Some(t) if config.tls.redirect_http => {
                let port = match config.tls.redirect_port {
                    0 => config
                        .tls
                        .listen
                        .first()
                        .and_then(|l| l.parse::<std::net::SocketAddr>().ok())
                        .map_or(443, |a| a.port()),
                    p => p,
                };
                Some(Redirect::new(port, t.resolver.clone(), t.metrics.clone(), config.client.trusted_hops > 0))
            }
            _ => None,
        };
        let proxy =
            EdgeProxy::new(config, origins.clone(), redirect, shared.clone(), metrics.clone(), geo, clock.clone())
                .with_cache(objects)
                .with_fetch(config.origin.fast_path.then(|| Fetcher::new(&server.configuration)));
        let outcomes = config.outcomes.enabled.then(|| {
            let tracker = Arc::new(Tracker::new(config.outcomes.max_sessions, metrics.clone()));
            (tracker, Arc::new(Segments::new(config.outcomes.max_segments)))
        });
        if let Some((tracker, _)) = &outcomes {
            let every = Duration::from_millis(config.outcomes.sweep_interval_ms);
            server
                .add_service(background_service("stile-playback", Sweeper::new(tracker.clone(), every, clock.clone())));
        }
        let proxy = proxy.with_outcomes(outcomes);
        // Behind the request-line tap (`crate::intake`), which Pingora's own service builder lacks,
        // behind `Front`, which runs the TLS handshake on the TLS listeners (TCP sockets to Pingora).
        let refusals = proxy.refusals();
        let app = Intake::new(pingora::proxy::http_proxy(&server.configuration, proxy), refusals);
        let front = Front::new(app, tls.as_ref().map(|t| t.front_settings(&config.tls)));
        let mut svc = Service::new("stile-edge".into(), front);
        // A write buffer that holds a small response's header and body together: one `send`.
        let buffers = L4BufferSettings::default().write(config.write_buffer_bytes);
        for l in config.listen.iter().chain(&config.tls.listen) {
            svc.add_listener(ListenerConfig::tcp(l.as_str()).l4_buffer(buffers));
        }
        // The proxy starts once the state source is ready: at once in file mode and with a
        // sync cache, else after the first state from the control plane.
        let source = match sync {
            Some(client) => server.add_service(background_service("stile-sync", client)),
            None => {
                let reloader = FileReloader::new(
                    config.state.file.clone(),
                    Duration::from_millis(config.state.poll_interval_ms),
                    leeway,
                    shared.clone(),
                    metrics.clone(),
                    clock.clone(),
                );
                server.add_service(background_service("stile-state", reloader))
            }
        };
        let proxy = server.add_service(svc);
        proxy.add_dependency(&source);
        server.add_service(background_service(
            "stile-origins",
            OriginHealth::new(
                origins,
                config.origin.health.clone(),
                Duration::from_secs(config.origin.resolve_interval_secs),
            ),
        ));
        if let Some(t) = tls {
            let reloader = CertReloader::new(
                config.tls.clone(),
                t.provider.clone(),
                t.resolver.clone(),
                t.metrics.clone(),
                clock.clone(),
            );
            server.add_service(background_service("stile-tls-reload", reloader));
        }
        if !config.admin_listen.is_empty() {
            let mut admin = Service::new("stile-admin".into(), Admin::new(shared.clone(), metrics.clone()));
            admin.threads = Some(1);
            admin.add_tcp(&config.admin_listen);
            server.add_service(admin);
        }
        Ok(Edge { server: ServerBox(server), shared, metrics })
    }

    /// The shared state requests are verified against (for embedding and tests).
    pub fn shared(&self) -> &Arc<SharedState> {
        &self.shared
    }

    /// The edge's metrics registry and recorders.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Runs until SIGTERM (graceful, within the grace period), SIGINT (fast) or
    /// SIGQUIT (hand the sockets to a new process started with `-u`, then drain).
    /// Returns once every runtime has stopped.
    pub fn run(self) {
        self.server.0.run(RunArgs::default());
    }

    /// Runs like [`Edge::run`], but ignores process signals and stops (fast
    /// shutdown) once `stop` fires or its sender is dropped. For embedding the
    /// edge in another process: tests that inject the clock run it this way.
    pub fn run_until(self, stop: tokio::sync::oneshot::Receiver<()>) {
        let shutdown_signal = Box::new(StopWhen(std::sync::Mutex::new(Some(stop))));
        self.server.0.run(RunArgs { shutdown_signal });
    }
}

/// [`Edge::run_until`]'s shutdown signal.
struct StopWhen(std::sync::Mutex<Option<tokio::sync::oneshot::Receiver<()>>>);

#[async_trait]
impl ShutdownSignalWatch for StopWhen {
    async fn recv(&self) -> ShutdownSignal {
        let stop = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        match stop {
            Some(stop) => {
                let _ = stop.await;
            }
            None => std::future::pending::<()>().await,
        }
        ShutdownSignal::FastShutdown
    }
}
