//! `stile dev`: a control plane, an edge, a sample origin and a player page, in
//! this one process, ready to play in a browser, revoke and explain.
//!
//! Architecture (one process, two kinds of runtime):
//! - a tokio runtime (worker threads) runs the control plane
//!   ([`stile_control::ControlPlane`] over an embedded redb store in `--dir` or a
//!   temporary directory), the sample origin and the player page with its sample
//!   backend ([`web`], axum), over the sample stream ([`sample`]: H.264/AAC in fMP4,
//!   HLS and DASH, made by ffmpeg at the first start and cached);
//! - the main thread runs the edge as Pingora's own server
//!   ([`stile_edge::Edge::run`]): Pingora builds its runtimes itself and handles
//!   SIGINT/SIGTERM; when it returns, the control plane is stopped gracefully
//!   and the process exits 0.
//!
//! At start it creates four API keys (admin, operator, minter, edge; configured keys,
//! fresh on every start, printed once), publishes the sample asset, mints a
//! link and prints it in each transport form, the player page's address and the
//! exact commands to try.
//!
//! The edge gets its keys and revocations over the push path, exactly as in
//! production: its `[sync]` client (a Pingora background service) holds the
//! sync stream to the control plane with an `edge`-role key, so `stile revoke`
//! (and `--wait`) reaches it within milliseconds and `stile edges ls` lists it.
//! With `--tls` ([`crate::dev_tls`]) the edge serves HTTPS and the control plane
//! gRPC over TLS, both with certificates from a throwaway CA that the sync
//! client, the player page's backend and the printed commands verify against.
//! Its CORS admits pages on `localhost`, `127.0.0.1` and `[::1]` on any port, with
//! credentials (cookie mode works for them: one site), plus `--allow-origin`.

mod sample;
mod web;

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stile_control::config::ConfiguredKey;
use stile_control::store::{RedbStore, Store};
use stile_control::{Config, ControlPlane, SystemClock};
use stile_proto::v1 as pb;
use tokio::sync::watch;

/// Arguments of `stile dev`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Keep the control plane's store, the edge's files and the log in DIR
    /// (created if missing; reused by the next run). Default: a temporary
    /// directory removed on exit.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// First of five consecutive ports on 127.0.0.1: control plane N, edge N+1,
    /// edge admin N+2, sample origin N+3, player page N+4.
    #[arg(long, value_name = "N", default_value_t = 7400)]
    port_base: u16,
    /// Do not print the edge's access log (one line per request) on stderr.
    #[arg(long, short)]
    quiet: bool,
    /// Serve the edge over HTTPS and HTTP/2 and the control plane's gRPC over TLS,
    /// with a throwaway CA made in DIR/tls/ (`ca.pem` is what clients trust: `stile
    /// --ca-file`, `curl --cacert`); links become https://127.0.0.1:N+1/…, the control
    /// plane https://127.0.0.1:N.
    #[arg(long)]
    tls: bool,
    /// Also let pages on ORIGIN play through the edge (CORS, with credentials), besides
    /// localhost, 127.0.0.1 and `[::1]` on any port; a pattern as in `cors.allowed_origins`
    /// (docs/edge.md). Repeatable.
    #[arg(long, value_name = "ORIGIN")]
    allow_origin: Vec<String>,
    /// Where the generated sample stream is cached. Default: $XDG_CACHE_HOME/stile or ~/.cache/stile.
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// The node_modules directory holding hls.js and dash.js for the player page
    /// (`npm ci` in the repository). Default: ./node_modules, else the repository's.
    #[arg(long, value_name = "DIR")]
    node_modules: Option<PathBuf>,
    /// Write the sample stream (DIR/vod/sample/, generated if needed) and the player
    /// page (DIR/player/: the embed kit's example with hls.js and dash.js) for a static
    /// web server, and exit; e.g. the compose fleet's origin (deploy/README.md).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["dir", "allow_origin"])]
    export: Option<PathBuf>,
}

const ASSET_ID: &str = "sample";
const ASSET_PATH: &str = "/vod/sample/";
const HLS_ENTRY: &str = "master.m3u8";
const DASH_ENTRY: &str = "manifest.mpd";
const VIEWER: &str = "viewer-1";

/// Origins the dev edge admits (CORS, with credentials) whatever `--allow-origin` adds.
const LOOPBACK_ORIGINS: [&str; 3] = ["http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*"];

/// The ports of one dev installation.
#[derive(Clone, Copy, Debug)]
struct Ports {
    control: u16,
    edge: u16,
    admin: u16,
    origin: u16,
    page: u16,
}

/// Keys created at start; printed once, never logged.
struct DevKeys {
    admin: String,
    operator: String,
    minter: String,
    edge: String,
}

pub(crate) fn run(args: Args) -> ExitCode {
    match run_inner(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(DevError::Usage(e)) => {
            eprintln!("stile dev: {e}");
            ExitCode::from(64)
        }
        Err(DevError::Runtime(e)) => {
            eprintln!("stile dev: {e}");
            ExitCode::FAILURE
        }
    }
}

enum DevError {
    Usage(String),
    Runtime(String),
}

fn rt(e: impl std::fmt::Display) -> DevError {
    DevError::Runtime(e.to_string())
}

fn run_inner(args: Args) -> Result<(), DevError> {
    let cache = match args.cache_dir.clone().or_else(sample::default_cache_dir) {
        Some(c) => c,
        None => return Err(DevError::Usage("no cache directory (HOME is unset): pass --cache-dir DIR".into())),
    };
    let say = |m: &str| eprintln!("{m}");
    if let Some(to) = &args.export {
        let from = sample::ensure(&cache, say).map_err(rt)?;
        let n = sample::copy_to(&from, &to.join("vod/sample")).map_err(rt)?;
        println!(
            "wrote the sample stream ({n} files: {HLS_ENTRY}, {DASH_ENTRY}, fMP4 segments) to {}/vod/sample/",
            to.display()
        );
        let node_modules = web::find_node_modules(args.node_modules.as_deref());
        let libs = web::export_player(&to.join("player"), node_modules.as_deref()).map_err(rt)?;
        println!("wrote the player page to {}/player/example.html ({libs})", to.display());
        return Ok(());
    }
    let base = args.port_base;
    if base == 0 || base > u16::MAX - 4 {
        return Err(DevError::Usage(format!("--port-base {base}: pick N with 1 <= N <= {}", u16::MAX - 4)));
    }
    let ports = Ports { control: base, edge: base + 1, admin: base + 2, origin: base + 3, page: base + 4 };
    let mut origins: Vec<String> = LOOPBACK_ORIGINS.iter().map(|o| (*o).to_owned()).collect();
    for o in &args.allow_origin {
        stile_edge::cors::Cors::new(std::slice::from_ref(o), true, &[], 0)
            .map_err(|e| DevError::Usage(format!("--allow-origin: {e}")))?;
        origins.push(o.clone());
    }

    // The directory: given (kept) or temporary (removed on exit).
    let (dir, _temp) = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)
                .map_err(|e| DevError::Usage(format!("cannot create --dir {}: {e}", d.display())))?;
            let d = d.canonicalize().map_err(|e| DevError::Usage(format!("--dir {}: {e}", d.display())))?;
            (d, None)
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("stile-dev-")
                .tempdir()
                .map_err(|e| rt(format!("temporary directory: {e}")))?;
            (t.path().to_owned(), Some(t))
        }
    };
    init_tracing(&dir, args.quiet)?;
    let tls = match args.tls {
        true => {
            let now = stile_edge::clock::Clock::now(&stile_edge::clock::SystemClock);
            Some(crate::dev_tls::generate(&dir, now).map_err(rt)?)
        }
        false => None,
    };
    let sample_dir = sample::ensure(&cache, say).map_err(rt)?;
    let node_modules = web::find_node_modules(args.node_modules.as_deref());
    if args.node_modules.is_some() && node_modules.is_none() {
        return Err(DevError::Usage("--node-modules: hls.js and dash.js are not installed there (npm ci)".into()));
    }

    // Bind what we can keep now; Pingora binds the edge's ports itself, so only check those.
    let control_listener = bind(ports.control, "control plane")?;
    let origin_listener = bind(ports.origin, "sample origin")?;
    let page_listener = bind(ports.page, "player page")?;
    drop(bind(ports.edge, "edge")?);
    drop(bind(ports.admin, "edge admin")?);

    let keys = DevKeys { admin: new_key()?, operator: new_key()?, minter: new_key()?, edge: new_key()? };
    let mut config = control_config(&dir, ports, &keys);
    if let Some(t) = &tls {
        config.links.default_base_url = format!("https://{}:{}", crate::dev_tls::HOST, ports.edge);
        config.tls = t.control_tls();
    }
    config
        .validate()
        .map_err(|e| rt(format!("internal: the generated control plane configuration is invalid: {e}")))?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("stile-dev")
        .enable_all()
        .build()
        .map_err(|e| rt(format!("cannot start the async runtime: {e}")))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let state_file = dir.join("edge-state.json");
    let control_url = control_url(ports, tls.is_some());
    let control_endpoint = control_endpoint(&control_url, tls.as_ref())?;

    // Control plane and origin; the edge syncs from the control plane ([sync]).
    let control_task = runtime.block_on(async {
        let store_path = config.store.path.clone();
        let store =
            tokio::task::spawn_blocking(move || RedbStore::open(&store_path)).await.map_err(rt)?.map_err(|e| {
                rt(format!("cannot open the store in {}: {e} (is another `stile dev` using it?)", dir.display()))
            })?;
        let store: Arc<dyn Store> = Arc::new(store);
        let plane = ControlPlane::with_store(config, store, Arc::new(SystemClock)).await.map_err(rt)?;
        let listener = tokio::net::TcpListener::from_std(control_listener).map_err(rt)?;
        let mut stop = stop_rx.clone();
        let control = tokio::spawn(plane.serve(listener, async move {
            let _ = stop.wait_for(|s| *s).await;
        }));
        let origin = tokio::net::TcpListener::from_std(origin_listener).map_err(rt)?;
        tokio::spawn(serve_http(origin, web::origin(&sample_dir), "sample origin"));
        // The page's backend reaches the control plane like a customer backend: gRPC, a minter key.
        let page = Arc::new(web::Page {
            control: control_endpoint.connect_lazy(),
            minter: keys.minter.clone(),
            node_modules: node_modules.clone(),
        });
        let page_listener = tokio::net::TcpListener::from_std(page_listener).map_err(rt)?;
        tokio::spawn(serve_http(page_listener, web::page(page), "player page"));
        Ok::<_, DevError>(control)
    })?;

    // Publish the sample and mint a link through the real API.
    let link = runtime.block_on(bootstrap(&control_endpoint, &keys));
    let link = match link {
        Ok(l) => l,
        Err(e) => {
            let _ = stop_tx.send(true);
            return Err(e);
        }
    };

    // The edge, in this thread, until SIGINT (Ctrl-C) or SIGTERM.
    let edge_config_path = dir.join("edge.toml");
    // It holds the edge's API key: owner-only.
    let mut edge_toml = edge_config(&dir, ports, &state_file, &control_url, &keys.edge, &origins);
    if let Some(t) = &tls {
        edge_toml = t.edge_config(&edge_toml, ports.edge).map_err(rt)?;
    }
    private_file(&edge_config_path)
        .and_then(|mut f| f.write_all(edge_toml.as_bytes()))
        .map_err(|e| rt(format!("writing {}: {e}", edge_config_path.display())))?;
    let edge_config = stile_edge::EdgeConfig::load(&edge_config_path)
        .map_err(|e| rt(format!("internal: the generated edge configuration is invalid: {e}")))?;
    let edge = stile_edge::Edge::build(
        &edge_config,
        stile_edge::StartOptions::default(),
        Arc::new(stile_edge::clock::SystemClock),
    )
    .map_err(|e| rt(format!("cannot start the edge: {e}")))?;
    let banner = banner(ports, &dir, args.dir.is_none(), &keys, &link, node_modules.is_some(), tls.as_ref());
    runtime.spawn(async move {
        // Print once the edge answers, so every printed command works right away.
        if wait_for_port(ports.edge, Duration::from_secs(30)).await {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(banner.as_bytes());
            let _ = out.flush();
        } else {
            eprintln!("stile dev: the edge did not start listening on 127.0.0.1:{} within 30 s", ports.edge);
        }
    });
    edge.run();

    // Pingora returned: stop the rest gracefully.
    eprintln!("stile dev: stopping");
    let _ = stop_tx.send(true);
    runtime.block_on(async {
        match tokio::time::timeout(Duration::from_secs(5), control_task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => eprintln!("stile dev: control plane: {e}"),
            Ok(Err(e)) => eprintln!("stile dev: control plane task: {e}"),
            Err(_) => eprintln!("stile dev: the control plane did not stop within 5 s"),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    match args.dir {
        Some(d) => eprintln!("stile dev: stopped; state kept in {}", d.display()),
        None => eprintln!("stile dev: stopped"),
    }
    Ok(())
}

fn req<T>(key: &str, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Ok(v) = format!("Bearer {key}").parse() {
        r.metadata_mut().insert("authorization", v);
    }
    r
}

/// The control plane's URL: `https://` with `--tls` (gRPC over TLS).
fn control_url(ports: Ports, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://127.0.0.1:{}", ports.control)
}

/// How this process's own clients (the bootstrap, the player page's backend) reach
/// the control plane: with `--tls`, verifying it against the dev CA.
fn control_endpoint(url: &str, tls: Option<&crate::dev_tls::DevTls>) -> Result<tonic::transport::Endpoint, DevError> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned()).map_err(rt)?;
    match tls {
        Some(t) => endpoint.tls_config(t.client_tls().map_err(rt)?).map_err(rt),
        None => Ok(endpoint),
    }
}

fn bind(port: u16, what: &str) -> Result<StdListener, DevError> {
    let l = StdListener::bind(("127.0.0.1", port)).map_err(|e| {
        DevError::Runtime(format!(
            "cannot listen on 127.0.0.1:{port} for the {what}: {e}\n  hint: is another `stile dev` running? \
             Pick other ports with --port-base N (uses N..N+4)"
        ))
    })?;
    l.set_nonblocking(true).map_err(rt)?;
    Ok(l)
}

fn new_key() -> Result<String, DevError> {
    stile_control::auth::generate_api_key().map(|(k, _)| k).map_err(|e| rt(format!("cannot create an API key: {e}")))
}

fn sha256_hex(key: &str) -> String {
    stile_control::auth::hash_api_key(key).iter().map(|b| format!("{b:02x}")).collect()
}

fn control_config(dir: &Path, ports: Ports, keys: &DevKeys) -> Config {
    let mut c = Config { listen: SocketAddr::from(([127, 0, 0, 1], ports.control)), ..Config::default() };
    c.store.path = dir.join("control.redb");
    c.links.default_base_url = format!("http://127.0.0.1:{}", ports.edge);
    // Short links for trying expiry on the player page (`/?ttl=30`), and playback
    // sessions so a 30-second link plays on past its expiry (docs/sessions.md).
    for p in c.policies.values_mut() {
        p.ttl_min_secs = 10;
        p.session = stile_control::config::SessionConfig {
            enabled: true,
            idle_secs: 60,
            max_secs: 4 * 3600,
            ..Default::default()
        };
    }
    c.auth.keys = [
        ("dev-admin", &keys.admin, "admin"),
        ("dev-operator", &keys.operator, "operator"),
        ("dev-minter", &keys.minter, "minter"),
        ("dev-edge", &keys.edge, "edge"),
    ]
    .into_iter()
    .map(|(name, key, role)| ConfiguredKey {
        name: name.into(),
        role: match role {
            "admin" => stile_control::auth::Role::Admin,
            "operator" => stile_control::auth::Role::Operator,
            "edge" => stile_control::auth::Role::Edge,
            _ => stile_control::auth::Role::Minter,
        },
        sha256: sha256_hex(key),
        // The one dev edge syncs as `dev` (edge_config below).
        edge_ids: if role == "edge" { vec!["dev".into()] } else { Vec::new() },
    })
    .collect();
    c
}

/// The edge's configuration: the sample origin, cookie mode for plain HTTP (`Lax`: the
/// player page shares the edge's site), the reason header on, CORS for loopback pages
/// (and `--allow-origin`) with credentials, the object cache (memory tier), and `[sync]` to this process's control
/// plane (the state file is the edge's cache of its applied state).
fn edge_config(
    dir: &Path,
    ports: Ports,
    state_file: &Path,
    control: &str,
    edge_key: &str,
    origins: &[String],
) -> String {
    let origins = origins.iter().map(|o| format!("{o:?}")).collect::<Vec<_>>().join(", ");
    format!(
        "# Generated by `stile dev`; see docs/edge.md.\n\
         listen = [\"127.0.0.1:{edge}\"]\n\
         admin_listen = \"127.0.0.1:{admin}\"\n\
         threads = 1\n\
         grace_period_secs = 1\n\
         graceful_shutdown_timeout_secs = 1\n\
         pid_file = \"{d}/edge.pid\"\n\
         upgrade_sock = \"{d}/edge-upgrade.sock\"\n\n\
         [origin]\naddress = \"127.0.0.1:{origin}\"\n\n\
         [cookie]\nenabled = true\nsecure = false # plain HTTP on loopback\nsame_site = \"Lax\"\n\n\
         [cors]\nallowed_origins = [{origins}]\nallow_credentials = true\n\n\
         [diagnostics]\nreason_header = true\n\n\
         [cache]\nenabled = true # memory tier only; see docs/edge.md, \"Cache\"\n\n\
         [state]\nfile = \"{s}\"\n\n\
         [sync]\nendpoints = [\"{control}\"]\napi_key = \"{edge_key}\"\nedge_id = \"dev\"\n",
        edge = ports.edge,
        admin = ports.admin,
        origin = ports.origin,
        d = dir.display(),
        s = state_file.display(),
    )
}

/// A new file readable by its owner only: it holds signing keys.
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path)
}

// -------------------------------------------------------------- bootstrap

/// Publishes the sample asset (idempotently: `--dir` may hold it already) and mints a link.
async fn bootstrap(control: &tonic::transport::Endpoint, keys: &DevKeys) -> Result<pb::Link, DevError> {
    use stile_proto::v1::asset_service_client::AssetServiceClient;
    use stile_proto::v1::link_service_client::LinkServiceClient;
    let channel = control
        .connect()
        .await
        .map_err(|e| rt(format!("cannot reach our own control plane: {}", crate::client::error_chain(&e))))?;
    let fail = |what: &str, s: tonic::Status| rt(format!("{what}: {:?}: {}", s.code(), s.message()));
    let mut assets = AssetServiceClient::new(channel.clone());
    let put = pb::PutAssetRequest { id: ASSET_ID.into(), path: ASSET_PATH.into(), entry: HLS_ENTRY.into() };
    let asset = assets
        .put(req(&keys.operator, put))
        .await
        .map_err(|s| fail("publishing the sample asset", s))?
        .into_inner()
        .asset
        .unwrap_or_default();
    let mut state = asset.state;
    while state != pb::AssetState::Published as i32 {
        let next = if state == pb::AssetState::Draft as i32 {
            pb::AssetState::Ready
        } else if state == pb::AssetState::Ready as i32 {
            pb::AssetState::Published
        } else {
            return Err(rt(format!(
                "the sample asset in this --dir is {}; use a fresh --dir",
                crate::client::output_asset_state(state)
            )));
        };
        let set = pb::SetAssetStateRequest { id: ASSET_ID.into(), state: next.into(), expected_revision: 0 };
        state = assets
            .set_state(req(&keys.operator, set))
            .await
            .map_err(|s| fail("publishing the sample asset", s))?
            .into_inner()
            .asset
            .map_or(next as i32, |a| a.state);
    }
    let mint = pb::MintRequest {
        asset_id: ASSET_ID.into(),
        subject: VIEWER.into(),
        channel: "dev".into(),
        ..Default::default()
    };
    LinkServiceClient::new(channel)
        .mint(req(&keys.minter, mint))
        .await
        .map_err(|s| fail("minting the first link", s))?
        .into_inner()
        .link
        .ok_or_else(|| rt("the control plane returned no link"))
}

// ----------------------------------------------------------------- banner

fn banner(
    ports: Ports,
    dir: &Path,
    temporary: bool,
    keys: &DevKeys,
    link: &pb::Link,
    players: bool,
    tls: Option<&crate::dev_tls::DevTls>,
) -> String {
    let exe = std::env::current_exe().map_or_else(|_| "stile".to_owned(), |p| p.display().to_string());
    let server = control_url(ports, tls.is_some());
    // With --tls the stile commands verify the control plane against the dev CA.
    let server_flags = match tls {
        Some(t) => format!("--server {server} {}", t.stile_options()),
        None => format!("--server {server}"),
    };
    let grpc = if tls.is_some() { "gRPC over TLS" } else { "gRPC" };
    let edge = match tls {
        Some(_) => format!("https://{}:{}", crate::dev_tls::HOST, ports.edge),
        None => format!("http://127.0.0.1:{}", ports.edge),
    };
    // With --tls the printed commands trust the dev CA.
    let curl_cmd = tls.map_or_else(|| "curl".to_owned(), crate::dev_tls::DevTls::curl);
    let ff = tls.map(|t| format!("{} ", t.ffmpeg_options())).unwrap_or_default();
    let page = format!("http://127.0.0.1:{}/", ports.page);
    let cookie = link.cookie.clone().unwrap_or_default();
    let (q, p, id) = (&link.query_url, &link.path_url, &link.token_id);
    // The same token admits the DASH MPD beside the HLS master (a prefix scope).
    let (dq, dp) = (q.replacen(HLS_ENTRY, DASH_ENTRY, 1), p.replacen(HLS_ENTRY, DASH_ENTRY, 1));
    let (op, minter) = (&keys.operator, &keys.minter);
    let (cname, cvalue, curl) = (&cookie.name, &cookie.value, &cookie.url);
    let kept = if temporary { "temporary, removed on exit" } else { "kept; reuse it with --dir" };
    let expires = crate::client::output::utc(link.expires_at);
    let players = if players {
        String::new()
    } else {
        "\n  (hls.js and dash.js are not installed: run `npm ci` in the repository, or scripts/dev;\n   \
         until then the page plays only where the browser plays HLS itself, e.g. Safari)"
            .to_owned()
    };
    let mut lines = vec![
        String::new(),
        "Stile is running: control plane, edge, a sample origin and a player page, in this one process.".into(),
        String::new(),
        format!("  control plane  {server}   {grpc}; state in {} ({kept})", dir.display()),
        format!("  edge           {edge}   admin: http://127.0.0.1:{}/metrics", ports.admin),
        format!(
            "  origin         http://127.0.0.1:{}   the sample stream under {ASSET_PATH} (H.264/AAC, HLS and DASH)",
            ports.origin
        ),
        format!("  player page    {page}   its own origin; a sample backend mints its links"),
        String::new(),
        format!("Watch it: open {page} in a browser (HLS; {page}?format=dash for DASH).{players}"),
        String::new(),
        "API keys (for this dev run only; new on every start):".into(),
        format!("  operator  {op}   revoke, keys, assets, audit, explain"),
        format!("  minter    {minter}   mint"),
        format!("  admin     {}   api-keys", keys.admin),
        String::new(),
        format!("A link to the sample stream for {VIEWER}, valid until {expires} (token id {id}):"),
        format!("  query   {q}"),
        format!("  path    {p}"),
        format!("  cookie  {curl}  with  Cookie: {cname}={cvalue}"),
        format!("  dash    {dq}"),
        format!("  dash-path  {dp}"),
        String::new(),
        "Try it, in another terminal:".into(),
        format!("  alias stile={exe}"),
        String::new(),
        format!("  {curl_cmd} -si '{q}' | head -n 12"),
        format!("  ffmpeg {ff}-v error -i '{q}' -c copy -f null - && echo played"),
        format!("  ffplay {ff}-autoexit '{p}'"),
        format!("  ffplay {ff}-autoexit '{dq}'"),
        format!("  {curl_cmd} -si -H 'Cookie: {cname}={cvalue}' '{curl}' | head -n 1"),
        String::new(),
        format!("  {curl_cmd} -s -o /dev/null -D - '{q}' | grep -i x-stile-cache    # miss, then hit: the edge caches"),
        format!(
            "  stile purge {server_flags} --api-key {op} --prefix {ASSET_PATH} --reason 'new encode' \
             --wait    # purge: the next request is a miss, the link still plays"
        ),
        String::new(),
        format!("  stile revoke {server_flags} --api-key {op} --token-id {id} --reason 'trying Stile' --wait"),
        format!("  {curl_cmd} -si '{q}' | grep -i -e '^HTTP' -e x-stile-reason    # 403, revoked"),
        format!("  stile explain {server_flags} --api-key {op} '{q}'"),
        String::new(),
        format!("  stile mint {ASSET_ID} {server_flags} --api-key {minter} --subject viewer-2    # a fresh link"),
        format!("  stile edges ls {server_flags} --api-key {op}"),
        format!("  stile audit tail {server_flags} --api-key {op}"),
        String::new(),
        "The edge logs each request below. Ctrl-C stops everything.".into(),
        String::new(),
    ];
    if let Some(t) = tls {
        // After the list of components.
        lines.splice(9..9, t.banner().into_iter().chain([String::new()]));
    }
    lines.join("\n")
}

// ------------------------------------------------------------ web servers

/// Serves `router` on `listener` (HTTP/1.1, keep-alive) until the process stops.
async fn serve_http(listener: tokio::net::TcpListener, router: axum::Router, what: &'static str) {
    if let Err(e) = axum::serve(listener, router).await {
        tracing::warn!(server = what, error = %e, "dev.http_server_stopped");
    }
}

async fn wait_for_port(port: u16, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

// ---------------------------------------------------------------- logging

/// Everything at `info` goes to DIR/stile-dev.log; warnings go to stderr, and
/// (unless `--quiet`) one short line per edge request (the access log).
fn init_tracing(dir: &Path, quiet: bool) -> Result<(), DevError> {
    use std::io::IsTerminal as _;
    use tracing_subscriber::filter::FilterExt as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::{EnvFilter, Layer as _};
    let log = std::fs::File::create(dir.join("stile-dev.log")).map_err(|e| rt(format!("log file: {e}")))?;
    let file_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Never Pingora's debug events: they print request headers (viewers' credentials).
    let file_filter = file_filter.and(crate::edge::no_pingora_debug());
    let file = tracing_subscriber::fmt::layer().with_writer(Arc::new(log)).with_ansi(false).with_filter(file_filter);
    let warnings = tracing_subscriber::fmt::layer()
        .compact()
        .without_time()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_filter(tracing_subscriber::filter::filter_fn(|m| {
            *m.level() <= tracing::Level::WARN && m.target() != "stile::access"
        }));
    let access = (!quiet).then_some(AccessLines);
    let _ = tracing_subscriber::registry().with(file).with(warnings).with(access).try_init();
    Ok(())
}

/// Prints the edge's access log events as `edge: GET /path -> 200 allow (query, token …)`.
struct AccessLines;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for AccessLines {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() != "stile::access" {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        let get = |k: &str| f.0.iter().find(|(n, _)| n == k).map_or("", |(_, v)| v.as_str());
        let reason = match get("reason") {
            "" => String::new(),
            r => format!(" {r}"),
        };
        let token = match get("token.id") {
            "" => String::new(),
            t => format!(", token {t}"),
        };
        eprintln!(
            "edge: {} {} -> {} {}{reason} ({}{token})",
            get("method"),
            get("path"),
            get("status"),
            get("decision"),
            get("transport"),
        );
    }
}

#[derive(Default)]
struct Fields(Vec<(String, String)>);

impl tracing::field::Visit for Fields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.push((field.name().to_owned(), value.to_owned()));
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }
}
