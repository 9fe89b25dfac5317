//! `stile dev`: a control plane, an edge and a sample origin serving a small
//! HLS stream, in this one process, ready to play, revoke and explain.
//!
//! Architecture (one process, two kinds of runtime):
//! - a tokio runtime (worker threads) runs the control plane
//!   ([`stile_control::ControlPlane`] over an embedded redb store in `--dir` or a
//!   temporary directory), the sample origin (a tiny HTTP/1.1 file server over
//!   the stream embedded in this binary, `crates/cli/assets/sample/`), and the
//!   state feed below;
//! - the main thread runs the edge as Pingora's own server
//!   ([`stile_edge::Edge::run`]): Pingora builds its runtimes itself and handles
//!   SIGINT/SIGTERM; when it returns, the control plane is stopped gracefully
//!   and the process exits 0.
//!
//! At start it creates four API keys (admin, operator, minter, edge; configured keys,
//! fresh on every start, printed once), publishes the sample asset, mints a
//! link and prints it in each transport form with the exact commands to try.
//!
//! The edge gets its keys and revocations over the push path, exactly as in
//! production: its `[sync]` client (a Pingora background service) holds the
//! sync stream to the control plane with an `edge`-role key, so `stile revoke`
//! (and `--wait`) reaches it within milliseconds and `stile edges ls` lists it.

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
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;

/// Arguments of `stile dev`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Keep the control plane's store, the edge's files and the log in DIR
    /// (created if missing; reused by the next run). Default: a temporary
    /// directory removed on exit.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// First of four consecutive ports on 127.0.0.1: control plane N, edge N+1,
    /// edge admin N+2, sample origin N+3.
    #[arg(long, value_name = "N", default_value_t = 7400)]
    port_base: u16,
    /// Do not print the edge's access log (one line per request) on stderr.
    #[arg(long, short)]
    quiet: bool,
}

/// The sample stream, embedded so `stile dev` works from any directory.
const SAMPLE: &[(&str, &[u8])] = &[
    ("/vod/sample/master.m3u8", include_bytes!("../assets/sample/master.m3u8")),
    ("/vod/sample/v1/index.m3u8", include_bytes!("../assets/sample/v1/index.m3u8")),
    ("/vod/sample/v1/seg0.ts", include_bytes!("../assets/sample/v1/seg0.ts")),
    ("/vod/sample/v1/seg1.ts", include_bytes!("../assets/sample/v1/seg1.ts")),
    ("/vod/sample/v1/seg2.ts", include_bytes!("../assets/sample/v1/seg2.ts")),
    ("/vod/sample/v1/seg3.ts", include_bytes!("../assets/sample/v1/seg3.ts")),
    ("/vod/sample/v1/seg4.ts", include_bytes!("../assets/sample/v1/seg4.ts")),
];
const ASSET_ID: &str = "sample";
const ASSET_PATH: &str = "/vod/sample/";
const ASSET_ENTRY: &str = "master.m3u8";
const VIEWER: &str = "viewer-1";

/// The ports of one dev installation.
#[derive(Clone, Copy, Debug)]
struct Ports {
    control: u16,
    edge: u16,
    admin: u16,
    origin: u16,
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
    let base = args.port_base;
    if base == 0 || base > u16::MAX - 3 {
        return Err(DevError::Usage(format!("--port-base {base}: pick N with 1 <= N <= {}", u16::MAX - 3)));
    }
    let ports = Ports { control: base, edge: base + 1, admin: base + 2, origin: base + 3 };

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

    // Bind what we can keep now; Pingora binds the edge's ports itself, so only check those.
    let control_listener = bind(ports.control, "control plane")?;
    let origin_listener = bind(ports.origin, "sample origin")?;
    drop(bind(ports.edge, "edge")?);
    drop(bind(ports.admin, "edge admin")?);

    let keys = DevKeys { admin: new_key()?, operator: new_key()?, minter: new_key()?, edge: new_key()? };
    let config = control_config(&dir, ports, &keys);
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
    let control_url = format!("http://127.0.0.1:{}", ports.control);

    // Control plane, origin and the state feed.
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
        tokio::spawn(serve_origin(origin));
        Ok::<_, DevError>(control)
    })?;

    // Publish the sample and mint a link through the real API.
    let link = runtime.block_on(bootstrap(ports, &keys));
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
    private_file(&edge_config_path)
        .and_then(|mut f| f.write_all(edge_config(&dir, ports, &state_file, &control_url, &keys.edge).as_bytes()))
        .map_err(|e| rt(format!("writing {}: {e}", edge_config_path.display())))?;
    let edge_config = stile_edge::EdgeConfig::load(&edge_config_path)
        .map_err(|e| rt(format!("internal: the generated edge configuration is invalid: {e}")))?;
    let edge = stile_edge::Edge::build(
        &edge_config,
        stile_edge::StartOptions::default(),
        Arc::new(stile_edge::clock::SystemClock),
    )
    .map_err(|e| rt(format!("cannot start the edge: {e}")))?;
    let banner = banner(ports, &dir, args.dir.is_none(), &keys, &link);
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

fn bind(port: u16, what: &str) -> Result<StdListener, DevError> {
    let l = StdListener::bind(("127.0.0.1", port)).map_err(|e| {
        DevError::Runtime(format!(
            "cannot listen on 127.0.0.1:{port} for the {what}: {e}\n  hint: is another `stile dev` running? \
             Pick other ports with --port-base N (uses N..N+3)"
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
    })
    .collect();
    c
}

/// The edge's configuration: the sample origin, cookie mode for plain HTTP, the
/// reason header on, and `[sync]` to this process's control plane (the state
/// file is the edge's cache of its applied state).
fn edge_config(dir: &Path, ports: Ports, state_file: &Path, control: &str, edge_key: &str) -> String {
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
         [diagnostics]\nreason_header = true\n\n\
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
async fn bootstrap(ports: Ports, keys: &DevKeys) -> Result<pb::Link, DevError> {
    use stile_proto::v1::asset_service_client::AssetServiceClient;
    use stile_proto::v1::link_service_client::LinkServiceClient;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", ports.control))
        .map_err(rt)?
        .connect()
        .await
        .map_err(|e| rt(format!("cannot reach our own control plane: {e}")))?;
    let fail = |what: &str, s: tonic::Status| rt(format!("{what}: {:?}: {}", s.code(), s.message()));
    let mut assets = AssetServiceClient::new(channel.clone());
    let put = pb::PutAssetRequest { id: ASSET_ID.into(), path: ASSET_PATH.into(), entry: ASSET_ENTRY.into() };
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

fn banner(ports: Ports, dir: &Path, temporary: bool, keys: &DevKeys, link: &pb::Link) -> String {
    let exe = std::env::current_exe().map_or_else(|_| "stile".to_owned(), |p| p.display().to_string());
    let server = format!("http://127.0.0.1:{}", ports.control);
    let edge = format!("http://127.0.0.1:{}", ports.edge);
    let cookie = link.cookie.clone().unwrap_or_default();
    let (q, p, id) = (&link.query_url, &link.path_url, &link.token_id);
    let (op, minter) = (&keys.operator, &keys.minter);
    let (cname, cvalue, curl) = (&cookie.name, &cookie.value, &cookie.url);
    let kept = if temporary { "temporary, removed on exit" } else { "kept; reuse it with --dir" };
    let expires = crate::client::output::utc(link.expires_at);
    [
        String::new(),
        "Stile is running: control plane, edge and a sample origin, in this one process.".into(),
        String::new(),
        format!("  control plane  {server}   gRPC; state in {} ({kept})", dir.display()),
        format!("  edge           {edge}   admin: http://127.0.0.1:{}/metrics", ports.admin),
        format!("  origin         http://127.0.0.1:{}   the sample HLS stream under {ASSET_PATH}", ports.origin),
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
        String::new(),
        "Try it, in another terminal:".into(),
        format!("  alias stile={exe}"),
        String::new(),
        format!("  curl -si '{q}' | head -n 12"),
        format!("  ffmpeg -v error -i '{q}' -c copy -f null - && echo played"),
        format!("  ffplay -autoexit '{p}'"),
        format!("  curl -si -H 'Cookie: {cname}={cvalue}' '{curl}' | head -n 1"),
        String::new(),
        format!("  stile revoke --server {server} --api-key {op} --token-id {id} --reason 'trying Stile' --wait"),
        format!("  curl -si '{q}' | grep -i -e '^HTTP' -e x-stile-reason    # 403, revoked"),
        format!("  stile explain --server {server} --api-key {op} '{q}'"),
        String::new(),
        format!("  stile mint {ASSET_ID} --server {server} --api-key {minter} --subject viewer-2    # a fresh link"),
        format!("  stile edges ls --server {server} --api-key {op}"),
        format!("  stile audit tail --server {server} --api-key {op}"),
        String::new(),
        "The edge logs each request below. Ctrl-C stops everything.".into(),
        String::new(),
    ]
    .join("\n")
}

// ------------------------------------------------------------ sample origin

/// Serves the embedded sample stream over HTTP/1.1 with keep-alive: GET and HEAD, 404 otherwise.
async fn serve_origin(listener: tokio::net::TcpListener) {
    loop {
        let Ok((conn, _)) = listener.accept().await else { continue };
        let _ = conn.set_nodelay(true);
        tokio::spawn(async move {
            let _ = origin_conn(conn).await;
        });
    }
}

async fn origin_conn(conn: tokio::net::TcpStream) -> std::io::Result<()> {
    let (read, mut write) = conn.into_split();
    let mut read = BufReader::new(read);
    loop {
        let mut request_line = String::new();
        if read.read_line(&mut request_line).await? == 0 {
            return Ok(());
        }
        let mut content_length = 0usize;
        let mut close = false;
        let mut head_bytes = request_line.len();
        loop {
            let mut line = String::new();
            let n = read.read_line(&mut line).await?;
            head_bytes += n;
            if n == 0 || head_bytes > 16 * 1024 {
                return Ok(());
            }
            if line == "\r\n" || line == "\n" {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                content_length = v.trim().parse().unwrap_or(0);
            }
            if lower.starts_with("connection:") && lower.contains("close") {
                close = true;
            }
        }
        if content_length > 0 {
            let mut sink = vec![0; content_length.min(64 * 1024)];
            read.read_exact(&mut sink).await?;
        }
        let mut parts = request_line.split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
        let path = target.split('?').next().unwrap_or("/");
        let found = SAMPLE.iter().find(|(p, _)| *p == path).map(|(_, b)| *b);
        let (status, body): (&str, &[u8]) = match (method, found) {
            ("GET" | "HEAD", Some(b)) => ("200 OK", b),
            ("GET" | "HEAD", None) => ("404 Not Found", b"not found\n"),
            _ => ("405 Method Not Allowed", b"method not allowed\n"),
        };
        let ctype = if path.ends_with(".m3u8") {
            "application/vnd.apple.mpegurl"
        } else if path.ends_with(".ts") {
            "video/mp2t"
        } else {
            "text/plain"
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: public, max-age=60\r\n\
             Server: stile-dev-origin\r\n\r\n",
            body.len()
        );
        write.write_all(head.as_bytes()).await?;
        if method != "HEAD" {
            write.write_all(body).await?;
        }
        if close {
            return Ok(());
        }
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
