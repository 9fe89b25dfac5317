//! Propagation harness: how long after a Revoke call does every edge deny the
//! link? Real processes on loopback: a small origin (in this process), `stile
//! control` and `--edges` (default 20) `stile edge` processes in sync mode,
//! `threads = 1` each.
//!
//! `scripts/bench-propagation` builds the release binaries and runs this; it
//! writes a markdown body to `--out` for `benches/scripts/report.py`.
//!
//! Scenarios:
//! 1. `redb`: one control plane on the embedded store; every edge follows it.
//! 2. `redis`: a private `redis-server` (from `PATH`, temporary directory, `--save
//!    "" --appendonly yes`) and two control-plane replicas on it; even edges
//!    follow replica A, odd ones replica B; revocation *i* goes through replica
//!    A when *i* is even, B when odd, so half of every revocation's edges learn
//!    it through the other replica's tail of the Redis log. `--no-redis` skips it.
//!
//! Per scenario, `--revocations` links (minted in one MintBatch) are revoked one
//! after another, by token id. For each link, `--pollers` keep-alive HTTP/1.1
//! connections per edge send `GET /_st/<token>/vod/abc/seg.ts` back to back;
//! once every connection has been admitted (200), the harness calls Revoke
//! (`wait = false`) and each poller stops at its first `403 revoked`. Per edge
//! and revocation we record when that 403 arrived, measured from the Revoke
//! call's start and from its return (negative: the edge denied before the
//! caller had the answer), and the **measurement window**: from the send of the
//! last request that was still admitted to the arrival of the first 403. The
//! edge started enforcing somewhere inside that window, so the window is the
//! polling resolution and the reported time is its upper end. Then
//! `--wait-revocations` more links are revoked with `wait = true` and no
//! pollers running: the RPC returns when every edge connected to that control
//! plane has ACKed (an ACK means enforced), the other replica's edges are read
//! from its `RevocationService.Status`, and every edge is checked to deny them.
//! One revocation through each control plane before all that is not counted.
//! `--no-edge-cache` runs the edges without `state.file` (no cache writes), to
//! show what the cache costs.
//!
//! No CPU pinning: the machine has 2 cores, and the edges, the control
//! plane(s), Redis and this process (origin and pollers) all share them, so the
//! pollers compete with the processes they measure. Everything started is
//! killed on exit: on drop (errors, panics), on Ctrl-C/SIGTERM, and when the
//! whole run exceeds `--max-secs` (default 280).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use stile_benches::fleet::procfs::{busy_share, machine_ticks};
use stile_benches::procs::{RedisProc, log_tail};
use stile_benches::{Proc, auth, auth_key_toml, connect, free_port, ms, parse_flags, pct};
use stile_proto::v1 as pb;
use stile_tests::edge::EdgeToml;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tonic::transport::Channel;

const ADMIN: &str = "stk_bench-admin-key-0123456789";
const EDGE_KEY: &str = "stk_bench-edge-key-0123456789";
const BASE_URL: &str = "http://edge.bench";
/// How long one edge may take to deny a revoked link before it counts as missed.
const ENFORCE_TIMEOUT: Duration = Duration::from_secs(10);
/// Goals from the design brief, from the Revoke call's start.
const GOAL_P50: Duration = Duration::from_millis(5);
const GOAL_P99: Duration = Duration::from_millis(50);

struct Args {
    stile: PathBuf,
    out: PathBuf,
    edges: usize,
    revocations: usize,
    waits: usize,
    pollers: usize,
    max_secs: u64,
    redis: bool,
    edge_cache: bool,
}

fn args() -> Result<Args> {
    let mut a = Args {
        stile: "target/release/stile".into(),
        out: "propagation.md".into(),
        edges: 20,
        revocations: 200,
        waits: 100,
        pollers: 1,
        max_secs: 280,
        redis: true,
        edge_cache: true,
    };
    parse_flags(|flag, value| {
        match flag {
            "--stile" => a.stile = value()?.into(),
            "--out" => a.out = value()?.into(),
            "--edges" => a.edges = value()?.parse()?,
            "--revocations" => a.revocations = value()?.parse()?,
            "--wait-revocations" => a.waits = value()?.parse()?,
            "--pollers" => a.pollers = value()?.parse()?,
            "--max-secs" => a.max_secs = value()?.parse()?,
            "--no-redis" => a.redis = false,
            "--no-edge-cache" => a.edge_cache = false,
            other => bail!("unknown argument {other}; see the module docs"),
        }
        Ok(())
    })?;
    ensure!(a.edges >= 2 && a.revocations >= 1 && a.pollers >= 1, "need --edges ≥ 2, --revocations ≥ 1, --pollers ≥ 1");
    Ok(a)
}

fn main() -> Result<()> {
    let a = args()?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        // Whichever ends first, `run` is dropped and with it every process it started.
        tokio::select! {
            r = tokio::time::timeout(Duration::from_secs(a.max_secs), run(&a)) => {
                r.map_err(|_| anyhow::anyhow!("the run took longer than --max-secs {}", a.max_secs))?
            }
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
            _ = term.recv() => bail!("terminated"),
        }
    })
}

async fn run(a: &Args) -> Result<()> {
    let root = tempfile::Builder::new().prefix("stile-bench-propagation-").tempdir()?;
    let origin = Origin::start().await?;
    let mut results = Vec::new();

    eprintln!("propagation: redb, {} edges", a.edges);
    {
        let store = format!("[store]\npath = \"{}/control.redb\"\n", root.path().display());
        let control = Control::start(a, "control", root.path(), &store).await?;
        let edges = start_edges(a, root.path(), "redb", origin.port, |_| vec![control.url.clone()]).await?;
        results.push(measure(a, "redb", &[&control], &edges).await?);
    }
    if a.redis {
        eprintln!("propagation: redis, 2 replicas, {} edges", a.edges);
        let redis = RedisProc::start(root.path()).await?;
        let store =
            format!("[store]\nbackend = \"redis\"\n[store.redis]\nurl = \"redis://127.0.0.1:{}/0\"\n", redis.port);
        let ra = Control::start(a, "replica-a", root.path(), &store).await?;
        let rb = Control::start(a, "replica-b", root.path(), &store).await?;
        let urls = [ra.url.clone(), rb.url.clone()];
        let edges = start_edges(a, root.path(), "redis", origin.port, |i| vec![urls[i % 2].clone()]).await?;
        results.push(measure(a, "redis", &[&ra, &rb], &edges).await?);
    }
    let table = report(a, &results);
    std::fs::write(&a.out, &table)?;
    print!("{table}");
    Ok(())
}

// ---------------------------------------------------------------- processes

/// A `stile control` (killed on drop) and a channel to it.
struct Control {
    _proc: Proc,
    url: String,
    channel: Channel,
    /// Its admin listener (`/metrics`).
    admin: u16,
}

impl Control {
    /// Starts one in `root/name` with `store` (its `[store]` TOML).
    async fn start(a: &Args, name: &str, root: &Path, store: &str) -> Result<Control> {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir)?;
        let (port, admin) = (free_port()?, free_port()?);
        let config = dir.join("control.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n{store}[links]\ndefault_base_url = \"{BASE_URL}\"\n{}{}",
                auth_key_toml("admin", "admin", ADMIN),
                auth_key_toml("edges", "edge", EDGE_KEY),
            ),
        )?;
        let mut cmd = Command::new(&a.stile);
        cmd.args(["control", "--config"]).arg(&config).env("RUST_LOG", "warn");
        let mut proc = Proc::spawn(name, cmd, &dir.join("control.log"))?;
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        let channel = loop {
            proc.check_alive().with_context(|| log_tail(&dir.join("control.log")))?;
            let up = async { anyhow::Ok(edge_list(&connect(&url).await?).await.map(|_| ())) };
            match tokio::time::timeout(Duration::from_secs(2), up).await {
                Ok(Ok(Ok(()))) => break connect(&url).await?,
                _ if Instant::now() > deadline => {
                    bail!("{name} did not come up: {}", log_tail(&dir.join("control.log")))
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        Ok(Control { _proc: proc, url, channel, admin })
    }
}

async fn edge_list(channel: &Channel) -> Result<pb::ListEdgesResponse, tonic::Status> {
    let mut c = pb::edge_service_client::EdgeServiceClient::new(channel.clone());
    c.list(auth(pb::ListEdgesRequest::default(), ADMIN)).await.map(tonic::Response::into_inner)
}

/// One `stile edge` (killed on drop).
struct Edge {
    id: String,
    port: u16,
    proc: Proc,
}

/// Starts `a.edges` edges, edge `i` following `endpoints(i)`, and waits until all are ready.
async fn start_edges(
    a: &Args,
    root: &Path,
    tag: &str,
    origin: u16,
    endpoints: impl Fn(usize) -> Vec<String>,
) -> Result<Vec<Edge>> {
    let mut edges = Vec::with_capacity(a.edges);
    let mut admins = Vec::with_capacity(a.edges);
    for i in 0..a.edges {
        let id = format!("{tag}-edge-{i:02}");
        let dir = root.join(&id);
        std::fs::create_dir_all(&dir)?;
        let (port, admin) = (free_port()?, free_port()?);
        let config = EdgeToml {
            access_log: false,
            state_file: a.edge_cache.then(|| dir.join("cache.json")),
            ..EdgeToml::new(&dir, port, admin, origin, &endpoints(i), EDGE_KEY, &id)
        }
        .write()?;
        let mut cmd = Command::new(&a.stile);
        cmd.args(["edge", "--config"]).arg(&config).env("RUST_LOG", "warn");
        edges.push(Edge { id: id.clone(), port, proc: Proc::spawn(&id, cmd, &dir.join("edge.log"))? });
        admins.push((admin, dir.join("edge.log")));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for (edge, (admin, log)) in edges.iter_mut().zip(admins) {
        let mut conn = Conn::new(admin);
        loop {
            edge.proc.check_alive().with_context(|| log_tail(&log))?;
            let ready =
                matches!(conn.get(b"GET /readyz HTTP/1.1\r\nHost: bench\r\n\r\n").await, Ok(r) if r.status == 200);
            if ready && TcpStream::connect(("127.0.0.1", edge.port)).await.is_ok() {
                break;
            }
            ensure!(Instant::now() < deadline, "{} not ready after 60 s: {}", edge.id, log_tail(&log));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(edges)
}

// ---------------------------------------------------------------- origin and HTTP client

/// The origin: `/vod/abc/master.m3u8` and `/vod/abc/seg.ts` over keep-alive HTTP/1.1.
struct Origin {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Origin {
    async fn start() -> Result<Origin> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(serve_origin(s));
            }
        });
        Ok(Origin { port, task })
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_origin(mut s: TcpStream) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(4096);
    loop {
        let Some(end) = read_head(&mut s, &mut buf).await? else { return Ok(()) };
        let path = std::str::from_utf8(&buf[..end]).unwrap_or("").split(' ').nth(1).unwrap_or("").to_owned();
        let (status, body): (&str, &[u8]) = match path.as_str() {
            "/vod/abc/master.m3u8" => ("200 OK", b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000\nseg.ts\n"),
            "/vod/abc/seg.ts" => ("200 OK", &[0x47; 1316]),
            _ => ("404 Not Found", b"not found\n"),
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\r\n",
            body.len()
        );
        s.write_all(&[head.as_bytes(), body].concat()).await?;
        buf.drain(..end + 4);
    }
}

/// Reads until `buf` holds a whole header block; its length without the blank
/// line, or `None` at end of stream.
async fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Option<usize>> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(Some(end));
        }
        if s.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

/// A keep-alive HTTP/1.1 client connection to one port (reconnects when closed).
struct Conn {
    port: u16,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

struct Reply {
    status: u16,
    revoked: bool,
}

impl Conn {
    fn new(port: u16) -> Conn {
        Conn { port, stream: None, buf: Vec::with_capacity(4096) }
    }

    /// Sends one request (whole, `req`) and reads the whole response.
    async fn get(&mut self, req: &[u8]) -> Result<Reply> {
        for attempt in 0..2 {
            match self.exchange(req).await {
                Ok(r) => return Ok(r),
                Err(e) if attempt == 1 => return Err(e),
                Err(_) => self.stream = None, // a closed keep-alive connection: once more on a new one
            }
        }
        unreachable!("the loop returns")
    }

    async fn exchange(&mut self, req: &[u8]) -> Result<Reply> {
        if self.stream.is_none() {
            let s = TcpStream::connect(("127.0.0.1", self.port)).await?;
            s.set_nodelay(true)?;
            self.stream = Some(s);
        }
        let s = self.stream.as_mut().expect("connected above");
        s.write_all(req).await?;
        self.buf.clear();
        let end = read_head(s, &mut self.buf).await?.context("connection closed")?;
        let head = std::str::from_utf8(&self.buf[..end]).context("non-UTF-8 response head")?;
        let mut lines = head.split("\r\n");
        let status =
            lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).context("bad status")?;
        let (mut len, mut revoked, mut close) = (0usize, false, false);
        for line in lines {
            let Some((k, v)) = line.split_once(':') else { continue };
            let (k, v) = (k.trim(), v.trim());
            if k.eq_ignore_ascii_case("content-length") {
                len = v.parse().context("bad content-length")?;
            } else if k.eq_ignore_ascii_case("x-stile-reason") {
                revoked = v == "revoked";
            } else if k.eq_ignore_ascii_case("connection") {
                close = v.eq_ignore_ascii_case("close");
            }
        }
        let total = end + 4 + len;
        while self.buf.len() < total {
            ensure!(s.read_buf(&mut self.buf).await? > 0, "connection closed in a body");
        }
        if close {
            self.stream = None;
        }
        Ok(Reply { status, revoked })
    }
}

// ---------------------------------------------------------------- measurement

/// What one poller saw for one revocation on one edge.
struct Seen {
    last_admitted_sent: Instant,
    denied_at: Instant,
    polls: u32,
}

/// Polls one edge with one connection until it answers `403 revoked`; signals
/// `ready` after its first 200.
async fn poll(mut conn: Conn, req: Arc<[u8]>, ready: mpsc::Sender<()>) -> (Conn, Result<Option<Seen>>) {
    let result: Result<Option<Seen>> = async {
        let mut last_admitted: Option<Instant> = None;
        let mut polls = 0u32;
        let start = Instant::now();
        loop {
            let sent = Instant::now();
            let reply = conn.get(&req).await?;
            let at = Instant::now();
            polls += 1;
            match (reply.status, last_admitted) {
                (200, None) => {
                    last_admitted = Some(sent);
                    let _ = ready.send(()).await;
                }
                (200, Some(_)) => last_admitted = Some(sent),
                (403, Some(ok)) if reply.revoked => {
                    return Ok(Some(Seen { last_admitted_sent: ok, denied_at: at, polls }));
                }
                (403, None) => bail!("edge on port {} denied the link before it was revoked", conn.port),
                (s, _) => bail!("edge on port {} answered {s}", conn.port),
            }
            if start.elapsed() > ENFORCE_TIMEOUT {
                return Ok(None);
            }
        }
    }
    .await;
    (conn, result)
}

/// Everything measured in one scenario.
#[derive(Default)]
struct Measured {
    name: &'static str,
    edges: usize,
    controls: usize,
    /// Revoke RPC latency (wait = false).
    rpc: Vec<Duration>,
    /// Per edge and revocation: Revoke call start → 403 received.
    from_start: Vec<Duration>,
    /// Per edge and revocation: Revoke return → 403 received, ms (negative: before).
    from_return: Vec<f64>,
    /// Per revocation: call start → the last edge's 403.
    fleet: Vec<Duration>,
    /// Per edge and revocation: last admitted request sent → 403 received.
    window: Vec<Duration>,
    polls: u64,
    missed: usize,
    /// Machine CPU busy share while polling (both cores).
    busy: f64,
    /// Store commits (all, incl. the asset's), and those over 10 ms and 100 ms,
    /// from the control planes' `stile_control_store_commit_duration_seconds`.
    commits: u64,
    commits_over_10ms: u64,
    commits_over_100ms: u64,
    /// The uncounted first Revoke (`wait = true`) through each control plane.
    warm_up: Vec<Duration>,
    /// Revoke with wait = true: RPC latency, and edges it waited for.
    waited: Vec<Duration>,
    /// Revoke (wait = true) call start → every edge of every control plane ACKed.
    fleet_acked: Vec<Duration>,
    waited_edges: usize,
    lagging: usize,
}

async fn measure(a: &Args, name: &'static str, controls: &[&Control], edges: &[Edge]) -> Result<Measured> {
    let mut m = Measured { name, edges: edges.len(), controls: controls.len(), ..Measured::default() };
    // Every edge connected and at the current version, as every control plane
    // sees the fleet (replicas share their views through the store).
    let deadline = Instant::now() + Duration::from_secs(30);
    for c in controls {
        let want = edges.len();
        loop {
            let l = edge_list(&c.channel).await?;
            if l.edges.len() == want && l.edges.iter().all(|e| e.applied_version == l.current_version) {
                break;
            }
            ensure!(Instant::now() < deadline, "edges did not converge on {}: {l:?}", c.url);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    publish(&controls[0].channel).await?;
    let links = mint(&controls[0].channel, a.revocations + a.waits + controls.len()).await?;
    let (polled, rest) = links.split_at(a.revocations);
    let (waited, warm_up) = rest.split_at(a.waits);
    let mut revokers: Vec<_> = controls
        .iter()
        .map(|c| pb::revocation_service_client::RevocationServiceClient::new(c.channel.clone()))
        .collect();
    // One revocation through each control plane first, not counted: it opens the
    // client connections and runs the first revocation commit.
    for (revoker, link) in revokers.iter_mut().zip(warm_up) {
        let t0 = Instant::now();
        revoker.revoke(auth(revoke_request(link, true), ADMIN)).await?;
        m.warm_up.push(t0.elapsed());
    }
    let mut conns: Vec<Vec<Conn>> = edges.iter().map(|e| (0..a.pollers).map(|_| Conn::new(e.port)).collect()).collect();

    let cpu0 = machine_ticks();
    for (i, link) in polled.iter().enumerate() {
        let req: Arc<[u8]> = request(link)?.into();
        let (ready_tx, mut ready_rx) = mpsc::channel(edges.len() * a.pollers);
        let mut tasks = Vec::with_capacity(edges.len());
        for per_edge in &mut conns {
            let mine: Vec<_> = std::mem::take(per_edge)
                .into_iter()
                .map(|c| tokio::spawn(poll(c, Arc::clone(&req), ready_tx.clone())))
                .collect();
            tasks.push(mine);
        }
        drop(ready_tx);
        for _ in 0..edges.len() * a.pollers {
            if !matches!(tokio::time::timeout(ENFORCE_TIMEOUT, ready_rx.recv()).await, Ok(Some(()))) {
                let failed = tasks.into_iter().flatten().find(tokio::task::JoinHandle::is_finished);
                let why = match failed {
                    Some(t) => t.await?.1.err().map_or("no error".into(), |e| format!("{e:#}")),
                    None => "no poller finished".into(),
                };
                bail!("the edges did not all admit link {} before its revocation: {why}", link.token_id);
            }
        }
        let revoker = &mut revokers[i % controls.len()];
        let t0 = Instant::now();
        revoker.revoke(auth(revoke_request(link, false), ADMIN)).await?;
        let t1 = Instant::now();
        m.rpc.push(t1 - t0);
        let mut last = Duration::ZERO;
        for (per_edge, mine) in conns.iter_mut().zip(tasks) {
            // Over this edge's pollers: the first 403, and the last admitted request.
            let (mut denied, mut admitted): (Option<Instant>, Option<Instant>) = (None, None);
            for task in mine {
                let (conn, seen) = task.await?;
                per_edge.push(conn);
                if let Some(s) = seen? {
                    m.polls += u64::from(s.polls);
                    denied = Some(denied.map_or(s.denied_at, |d| d.min(s.denied_at)));
                    admitted = Some(admitted.map_or(s.last_admitted_sent, |a| a.max(s.last_admitted_sent)));
                }
            }
            let (Some(denied), Some(admitted)) = (denied, admitted) else {
                m.missed += 1;
                continue;
            };
            let d = denied.saturating_duration_since(t0);
            last = last.max(d);
            m.from_start.push(d);
            m.from_return.push(signed_ms(denied, t1));
            m.window.push(denied.saturating_duration_since(admitted));
        }
        m.fleet.push(last);
    }
    m.busy = busy_share(cpu0, machine_ticks());
    drop(conns);

    // wait = true, no pollers. The call waits for every edge, whichever control
    // plane it follows (replicas share their fleet views); the other control
    // planes' Status is checked afterwards as well.
    for (i, link) in waited.iter().enumerate() {
        let via = i % controls.len();
        let t0 = Instant::now();
        let r = revokers[via].revoke(auth(revoke_request(link, true), ADMIN)).await?.into_inner();
        m.waited.push(t0.elapsed());
        m.waited_edges = m.waited_edges.max(r.edges.len());
        m.lagging += r.lagging.len();
        for (ci, c) in controls.iter().enumerate().filter(|(ci, _)| *ci != via) {
            let mut status = pb::revocation_service_client::RevocationServiceClient::new(c.channel.clone());
            loop {
                let req = pb::RevocationStatusRequest { version: r.version };
                let st = status.status(auth(req, ADMIN)).await?.into_inner();
                if st.edges.iter().all(|e| e.applied) {
                    break;
                }
                ensure!(
                    t0.elapsed() < ENFORCE_TIMEOUT,
                    "edges of control plane {ci} did not ACK version {}",
                    r.version
                );
            }
        }
        m.fleet_acked.push(t0.elapsed());
    }
    for link in waited {
        let req = request(link)?;
        for e in edges {
            let mut conn = Conn::new(e.port);
            let deadline = Instant::now() + ENFORCE_TIMEOUT;
            loop {
                let r = conn.get(&req).await?;
                if r.status == 403 && r.revoked {
                    break;
                }
                ensure!(Instant::now() < deadline, "{} still admits {} (status {})", e.id, link.token_id, r.status);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    for c in controls {
        let (count, over_10ms, over_100ms) = commit_histogram(c.admin).await?;
        m.commits += count;
        m.commits_over_10ms += over_10ms;
        m.commits_over_100ms += over_100ms;
    }
    for v in [&mut m.rpc, &mut m.from_start, &mut m.fleet, &mut m.window, &mut m.waited, &mut m.fleet_acked] {
        v.sort();
    }
    m.from_return.sort_by(f64::total_cmp);
    eprintln!(
        "propagation: {name}: from call p50 {} p99 {} max {}",
        ms(pct(&m.from_start, 0.5)),
        ms(pct(&m.from_start, 0.99)),
        ms(m.from_start.last().copied().unwrap_or_default())
    );
    Ok(m)
}

/// (commits, over 10 ms, over 100 ms) from a control plane's commit-duration histogram.
async fn commit_histogram(admin: u16) -> Result<(u64, u64, u64)> {
    const NAME: &str = "stile_control_store_commit_duration_seconds";
    let mut conn = Conn::new(admin);
    conn.get(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n").await?;
    let text = String::from_utf8_lossy(&conn.buf).into_owned();
    let sample = |suffix: &str| -> Result<u64> {
        let line = text.lines().find(|l| l.starts_with(&format!("{NAME}{suffix} "))).context("no commit histogram")?;
        Ok(line.rsplit(' ').next().unwrap_or("").parse::<f64>()? as u64)
    };
    let count = sample("_count")?;
    Ok((count, count - sample("_bucket{le=\"0.01\"}")?, count - sample("_bucket{le=\"0.1\"}")?))
}

/// `GET /_st/<token>/vod/abc/seg.ts` (the link's path form, on a segment).
fn request(link: &pb::Link) -> Result<Vec<u8>> {
    let path = link.path_url.strip_prefix(BASE_URL).context("link outside the base URL")?;
    let path = path.strip_suffix("master.m3u8").context("link not to master.m3u8")?;
    Ok(format!("GET {path}seg.ts HTTP/1.1\r\nHost: edge.bench\r\n\r\n").into_bytes())
}

fn revoke_request(link: &pb::Link, wait: bool) -> pb::RevokeRequest {
    pb::RevokeRequest {
        target: Some(pb::RevocationTarget {
            target: Some(pb::revocation_target::Target::TokenId(link.token_id.clone())),
        }),
        reason: "propagation benchmark".into(),
        wait,
        wait_timeout_ms: 10_000,
        expect: None,
    }
}

async fn publish(channel: &Channel) -> Result<()> {
    let mut a = pb::asset_service_client::AssetServiceClient::new(channel.clone());
    let put = pb::PutAssetRequest { id: "abc".into(), path: "/vod/abc/".into(), entry: "master.m3u8".into() };
    a.put(auth(put, ADMIN)).await?;
    for state in [pb::AssetState::Ready, pb::AssetState::Published] {
        let r = pb::SetAssetStateRequest { id: "abc".into(), state: state.into(), expected_revision: 0 };
        a.set_state(auth(r, ADMIN)).await?;
    }
    Ok(())
}

async fn mint(channel: &Channel, n: usize) -> Result<Vec<pb::Link>> {
    let mut l = pb::link_service_client::LinkServiceClient::new(channel.clone()).max_decoding_message_size(64 << 20);
    let requests = (0..n)
        .map(|i| pb::MintRequest { asset_id: "abc".into(), subject: format!("viewer-{i}"), ..Default::default() })
        .collect();
    let links = l.mint_batch(auth(pb::MintBatchRequest { requests }, ADMIN)).await?.into_inner().links;
    ensure!(links.len() == n, "MintBatch returned {} links for {n}", links.len());
    Ok(links)
}

fn signed_ms(at: Instant, since: Instant) -> f64 {
    match at.checked_duration_since(since) {
        Some(d) => d.as_secs_f64() * 1e3,
        None => -(since - at).as_secs_f64() * 1e3,
    }
}

// ---------------------------------------------------------------- report

fn three(v: &[Duration]) -> String {
    format!("{} / {} / {}", ms(pct(v, 0.5)), ms(pct(v, 0.99)), ms(v.last().copied().unwrap_or_default()))
}

fn report(a: &Args, results: &[Measured]) -> String {
    let mut t = format!(
        "{edges} `stile edge` processes (`threads = 1`, sync mode, access log off) and the control plane(s) on \
         loopback, **no CPU pinning: all of them, Redis, and the harness (origin and pollers) share the machine's 2 \
         cores**. {m} revocations by token id per scenario, one at a time; {k} poller connection(s) per edge \
         sending keep-alive GETs back to back. Times are p50 / p99 / max.\n\n| | ",
        edges = a.edges,
        m = a.revocations,
        k = a.pollers,
    );
    let describe = |m: &Measured| match m.name {
        "redb" => "redb, 1 control plane".to_string(),
        _ => format!("Redis, {} replicas (edges split, revocations alternate)", m.controls),
    };
    t.push_str(&results.iter().map(describe).collect::<Vec<_>>().join(" | "));
    t.push_str(" |\n|---|");
    t.push_str(&"---|".repeat(results.len()));
    t.push('\n');
    let mut row = |label: &str, cell: &dyn Fn(&Measured) -> String| {
        let cells: Vec<String> = results.iter().map(cell).collect();
        let _ = writeln!(t, "| {label} | {} |", cells.join(" | "));
    };
    row("Revoke RPC (`wait = false`)", &|m| three(&m.rpc));
    row("**Revoke call → edge denies** (per edge and revocation)", &|m| format!("**{}**", three(&m.from_start)));
    row("Revoke returned → edge denies (negative: before the caller had the answer)", &|m| {
        let f = |p: f64| pct(&m.from_return, p);
        format!("{:.2} ms / {:.2} ms / {:.2} ms", f(0.5), f(0.99), m.from_return.last().copied().unwrap_or_default())
    });
    row("Revoke call → **last** edge denies (per revocation)", &|m| three(&m.fleet));
    row("measurement window: last admitted request sent → 403 received", &|m| three(&m.window));
    row("samples (revocations × edges); not enforced within 10 s", &|m| {
        format!("{} ({} × {}); {}", m.from_start.len(), m.rpc.len(), m.edges, m.missed)
    });
    row("polls per edge per revocation (mean); machine CPU busy while polling", &|m| {
        let n = m.from_start.len().max(1) as f64;
        format!("{:.1}; {:.0} %", m.polls as f64 / n, m.busy * 100.0)
    });
    row("Revoke with `wait = true`, no pollers (returns when every edge of the fleet ACKed)", &|m| {
        if m.waited.is_empty() {
            return "not run".into();
        }
        format!(
            "{} over {} calls, {} edges each, {} lagging",
            three(&m.waited),
            m.waited.len(),
            m.waited_edges,
            m.lagging
        )
    });
    row("store commits over 10 ms / over 100 ms (control plane's histogram)", &|m| {
        format!("{} / {} of {}", m.commits_over_10ms, m.commits_over_100ms, m.commits)
    });
    row("first Revoke after start-up (`wait = true`, not counted above)", &|m| {
        m.warm_up.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", ")
    });
    row("Revoke (`wait = true`) call → **every** edge ACKed (enforced), no pollers", &|m| {
        if m.fleet_acked.is_empty() { "not run".into() } else { format!("**{}**", three(&m.fleet_acked)) }
    });
    let verdict = |v: &[Duration], missed: usize| {
        let ok = !v.is_empty() && pct(v, 0.5) <= GOAL_P50 && pct(v, 0.99) <= GOAL_P99 && missed == 0;
        if ok { "met" } else { "**missed**" }
    };
    row("goal p50 ≤ 5 ms, p99 ≤ 50 ms: polled (call → edge denies) / ACKed (call → every edge ACKed)", &|m| {
        format!("{} / {}", verdict(&m.from_start, m.missed), verdict(&m.fleet_acked, m.lagging))
    });
    t
}
