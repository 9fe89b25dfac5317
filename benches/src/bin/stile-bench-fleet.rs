//! Fleet harness: `--edges` (default 1000) simulated edges — each the edge's
//! real sync client (`stile_edge::sync::EmbeddedSync`: session, apply, ACKs,
//! reconnect backoff; no proxy listener) with its own state, behind its own
//! shaping relay — in this one process, against a real `stile control`
//! process on embedded redb — or, with `--redis`, against two `stile control`
//! replicas sharing one private `redis-server` (edges alternate, four at a time,
//! between the two as their first endpoint, the other second; revocations go
//! to the first replica, so half the fleet hears of them through the other
//! replica's tail of the Redis log). `scripts/bench-fleet` builds the release binaries
//! and runs this; it writes a markdown body to `--out` for
//! `benches/scripts/report.py`.
//!
//! The fleet's network: edge `i` has a round trip of 2, 20, 80 or 250 ms
//! (`i % 4`; jitter 0, 2, 10, 20 ms one way), unlimited bandwidth; plus one
//! edge on a 100 kB/s link and one whose connection is cut every 3 s (they
//! are reported apart and left out of the fleet's percentiles).
//!
//! Scenarios, in order, each bounded in time:
//! 1. **connect**: every edge connects and takes its first snapshot; the
//!    control plane's memory per connected edge, this process's per edge.
//! 2. **revoke**: `--singles` (20) Revoke calls, one at a time; per edge and
//!    revocation, when its ACK reached the control plane (relay delivery)
//!    minus the call's start minus the edge's own RTT. The control plane's CPU
//!    per change per edge (its CPU over the phase less the idle rate measured
//!    just before, over changes × edges).
//! 3. **mass**: one `RevokeBatch` of `--batch` (50000) token ids, then
//!    `--mass-singles` (2000) single Revoke calls from 4 concurrent callers;
//!    each until every edge ACKed the last version: time, bytes per edge,
//!    snapshots sent (a snapshot loop would show as more than one per edge),
//!    control-plane and simulator CPU.
//! 4. **storm**: the control plane is stopped (SIGTERM) and started again on
//!    the same port: time until every edge is back and ACKed the newest
//!    version, reconnect-time histogram (jittered backoff), the new process's
//!    peak CPU and memory, and whether any edge's state went back meanwhile.
//!    With `--redis` the first replica is the one restarted, and the figures
//!    are those of the edges it served when it stopped (a stream open through
//!    the relay to it, whichever endpoint they list first: an edge that failed
//!    over earlier stays on the other replica); they reconnect to either
//!    replica, the others keep their streams.
//! 5. **cold**: a second, fresh control plane (on redb; with `--redis`, one
//!    replica on a fresh `redis-server` of its own) is loaded with `--cold` live
//!    revocations (default 1000000,10000000; RevokeBatch calls of 100000, 50000 on Redis) and
//!    one new edge (80 ms RTT, 4 MiB in flight) joins while 50 more
//!    revocations are committed: bytes to it, time to its first ACK (first
//!    admit: the snapshot, streamed in parts, enforced whole) and to its ACK
//!    of the last change (in sync), streams it opened (a snapshot loop shows
//!    as many), the control plane's and this process's peak memory growth.
//!    `--cold-cache` gives the cold edge a `state.file` (written whole after
//!    its snapshot, before the ACK); `--perf DIR` records the control plane
//!    and this process with `perf record` over each join; the control plane's
//!    `sync.snapshot_built` lines are printed to stderr.
//!
//! Everything started is killed on exit (on drop, on errors) and the whole run
//! is bounded by `--max-secs` (default 900). `--smoke` runs every scenario at a
//! tiny scale (tests/fleet_smoke.rs does the same in-process).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use stile_benches::fleet::procfs;
use stile_benches::fleet::relay::Shape;
use stile_benches::fleet::sim::{EdgeSpec, SimEdge, Stages, start_edge};
use stile_benches::procs::{ControlProc, RedisProc};
use stile_benches::{auth, auth_key_toml, connect, ms, parse_flags, pct};
use stile_proto::v1 as pb;
use tokio::runtime::{Builder, Handle, Runtime};
use tokio::time::Instant;
use tonic::transport::Channel;

const ADMIN: &str = "stk_bench-admin-key-0123456789";
const EDGE_KEY: &str = "stk_bench-edge-key-0123456789";

#[derive(Clone, Debug)]
struct Args {
    stile: PathBuf,
    out: Option<PathBuf>,
    edges: usize,
    singles: usize,
    batch: usize,
    mass_singles: usize,
    cold: Vec<usize>,
    /// The cold edge keeps a `state.file` (written whole after its snapshot, before the ACK).
    cold_cache: bool,
    /// `perf record` the control plane over each cold join, into this directory.
    perf: Option<PathBuf>,
    max_secs: u64,
    /// Two control-plane replicas on one private `redis-server` instead of one on redb.
    redis: bool,
}

fn main() -> Result<()> {
    let mut a = Args {
        stile: PathBuf::from("target/release/stile"),
        out: None,
        edges: 1000,
        singles: 20,
        batch: 50_000,
        mass_singles: 2_000,
        cold: vec![1_000_000, 10_000_000],
        cold_cache: false,
        perf: None,
        max_secs: 900,
        redis: false,
    };
    parse_flags(|flag, value| {
        match flag {
            "--stile" => a.stile = value()?.into(),
            "--out" => a.out = Some(value()?.into()),
            "--edges" => a.edges = value()?.parse()?,
            "--singles" => a.singles = value()?.parse()?,
            "--batch" => a.batch = value()?.parse()?,
            "--mass-singles" => a.mass_singles = value()?.parse()?,
            "--cold" => {
                a.cold = value()?.split(',').filter(|s| !s.is_empty()).map(str::parse).collect::<Result<_, _>>()?
            }
            "--cold-cache" => a.cold_cache = true,
            "--perf" => a.perf = Some(value()?.into()),
            "--max-secs" => a.max_secs = value()?.parse()?,
            "--redis" => a.redis = true,
            "--smoke" => {
                (a.edges, a.singles, a.batch, a.mass_singles, a.cold) = (8, 3, 2_000, 50, vec![5_000]);
            }
            _ => bail!("unknown flag {flag}"),
        }
        Ok(())
    })?;
    ensure!(a.edges >= 4, "--edges must be 4 or more");
    // The simulated edges and the relays get their own runtimes (named threads,
    // so their CPU is read apart); the harness itself runs on a third.
    let edge_rt = Builder::new_multi_thread().worker_threads(2).thread_name("fleet-edge").enable_all().build()?;
    let relay_rt = Builder::new_multi_thread().worker_threads(1).thread_name("fleet-relay").enable_all().build()?;
    let main_rt = Builder::new_current_thread().enable_all().build()?;
    let max = Duration::from_secs(a.max_secs);
    let report = main_rt.block_on(async {
        tokio::time::timeout(max, run(&a, relay_rt.handle(), edge_rt.handle()))
            .await
            .with_context(|| format!("the run exceeded --max-secs {}", a.max_secs))?
    })?;
    shutdown(edge_rt, relay_rt);
    match &a.out {
        Some(path) => std::fs::write(path, &report)?,
        None => print!("{report}"),
    }
    Ok(())
}

fn shutdown(edge_rt: Runtime, relay_rt: Runtime) {
    edge_rt.shutdown_timeout(Duration::from_secs(2));
    relay_rt.shutdown_timeout(Duration::from_secs(2));
}

/// The control plane's configuration after `listen`/`admin_listen`: its own redb file,
/// or the shared Redis.
fn control_body(root: &std::path::Path, name: &str, redis: Option<&RedisProc>) -> String {
    let store = match redis {
        Some(r) => format!("[store]\nbackend = \"redis\"\n[store.redis]\nurl = \"{}\"\n", r.url()),
        None => format!("[store]\npath = \"{}/{name}.redb\"\n", root.display()),
    };
    format!(
        "{store}[revocations]\nmax_batch = 100000\n{}{}",
        auth_key_toml("admin", "admin", ADMIN),
        auth_key_toml("edges", "edge", EDGE_KEY),
    )
}

/// Whether fleet edge `i` has the second replica as its first endpoint (`--redis`):
/// four at a time, so both replicas serve every RTT class.
fn on_second(i: usize) -> bool {
    (i / 4) % 2 == 1
}

/// Revocations committed while the cold edge joins.
const COLD_LIVE: u64 = 50;

/// The cold edge's path: 80 ms round trip, unlimited bandwidth, 4 MiB in
/// flight (a TCP window a long fat path autotunes to; the fleet's edges keep
/// the relay's default).
fn cold_shape() -> Shape {
    Shape { buffer: 4 << 20, ..shape_of(2) }
}

/// The network of fleet edge `i`.
fn shape_of(i: usize) -> Shape {
    let (rtt, jitter) = [(2, 0), (20, 2), (80, 10), (250, 20)][i % 4];
    Shape { delay: Duration::from_millis(rtt / 2), jitter: Duration::from_millis(jitter), ..Shape::default() }
}

struct Fleet {
    edges: Vec<SimEdge>,
    /// Index of the slow edge and of the flapping one (the last two).
    slow: usize,
    flapping: usize,
}

impl Fleet {
    /// The regular edges (not the slow or flapping one).
    fn regular(&self) -> &[SimEdge] {
        &self.edges[..self.slow]
    }

    fn down_bytes(&self) -> Vec<u64> {
        self.edges.iter().map(|e| e.bytes().0).collect()
    }
}

async fn run(a: &Args, relay_rt: &Handle, edge_rt: &Handle) -> Result<String> {
    let root = tempfile::tempdir()?;
    let mut out = String::new();
    let redis = match a.redis {
        true => Some(RedisProc::start(root.path()).await?),
        false => None,
    };
    let body = |name: &str| control_body(root.path(), name, redis.as_ref());
    let mut cp = ControlProc::start(&a.stile, root.path(), "control", &body("control")).await?;
    // `--redis`: the second replica, on the same store.
    let mut peer = match &redis {
        Some(_) => Some(ControlProc::start(&a.stile, root.path(), "control-b", &body("control-b")).await?),
        None => None,
    };
    let channel = connect(&cp.url()).await?;
    let cp_addr: std::net::SocketAddr = format!("127.0.0.1:{}", cp.port).parse()?;
    let peer_addr = match &peer {
        Some(p) => Some(format!("127.0.0.1:{}", p.port).parse::<std::net::SocketAddr>()?),
        None => None,
    };
    let endpoints_of = |i: usize| match peer_addr {
        Some(b) if on_second(i) => vec![b, cp_addr],
        Some(b) => vec![cp_addr, b],
        None => vec![cp_addr],
    };
    // The control plane's processes, for CPU and memory (both replicas with `--redis`).
    let cp_pids = |cp: &ControlProc, peer: &Option<ControlProc>| -> Result<Vec<u32>> {
        let mut pids = vec![cp.pid().context("control pid")?];
        if let Some(p) = peer {
            pids.push(p.pid().context("second replica's pid")?);
        }
        Ok(pids)
    };
    // A key exists before the edges connect, so their first snapshot has it.
    pb::key_service_client::KeyServiceClient::new(channel.clone())
        .rotate(auth(pb::RotateKeyRequest::default(), ADMIN))
        .await
        .context("rotating the first key")?;

    // ---------------------------------------------------------------- connect
    let pids = cp_pids(&cp, &peer)?;
    let cp_rss = |pids: &[u32]| pids.iter().map(|p| procfs::rss(*p).0).sum::<u64>();
    let cp_rss0 = cp_rss(&pids);
    let (own_rss0, _) = procfs::rss(procfs::own_pid());
    let started = Instant::now();
    let mut edges = Vec::with_capacity(a.edges + 2);
    for i in 0..a.edges + 2 {
        let shape = if i == a.edges {
            Shape { bandwidth: 100_000, ..shape_of(1) }
        } else if i == a.edges + 1 {
            Shape { flap: Some(Duration::from_secs(3)), ..shape_of(1) }
        } else {
            shape_of(i)
        };
        let spec = EdgeSpec {
            id: format!("sim-{i:04}"),
            shape,
            endpoints: endpoints_of(i),
            cache: None,
            backoff_ms: (100, 10_000),
        };
        edges.push(start_edge(spec, EDGE_KEY, relay_rt, edge_rt).await?);
    }
    let fleet = Fleet { edges, slow: a.edges, flapping: a.edges + 1 };
    let latest = version(&channel).await?;
    let all_in = wait_all(fleet.regular(), latest, Duration::from_secs(120)).await?;
    let connect_time = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cp_rss1 = cp_rss(&pids);
    let (own_rss1, _) = procfs::rss(procfs::own_pid());
    let per = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / fleet.edges.len() as f64 / 1024.0;
    writeln!(out, "### Scale\n")?;
    writeln!(
        out,
        "{} simulated edges (RTT 2 / 20 / 80 / 250 ms, a quarter each) + 1 on a 100 kB/s link + 1 cut every 3 s, \
         {}, all on this machine's 2 cores: the control plane, the {} sync clients, \
         their relays and the harness share them.\n",
        a.edges,
        match a.redis {
            true =>
                "two `stile control` replicas on one `redis-server` (edges alternate between them, four at a \
                     time; every revocation is committed through the first), the control plane's CPU and memory \
                     are both replicas' (not Redis's)",
            false => "one `stile control` (redb)",
        },
        fleet.edges.len()
    )?;
    writeln!(out, "### Connect\n")?;
    writeln!(out, "| figure | value |\n|---|---|")?;
    writeln!(
        out,
        "| every regular edge connected and ACKed version {latest} | {} ({all_in} edges) |",
        ms(connect_time)
    )?;
    writeln!(
        out,
        "| control-plane RSS per connected edge | {:.1} KiB ({:.1} → {:.1} MiB) |",
        per(cp_rss0, cp_rss1),
        mib(cp_rss0),
        mib(cp_rss1)
    )?;
    writeln!(out, "| simulator RSS per edge (client + relay + metrics) | {:.1} KiB |\n", per(own_rss0, own_rss1))?;
    partial(a, &out)?;

    // ----------------------------------------------------------------- revoke
    let cp_cpu_of = |pids: &[u32]| pids.iter().map(|p| procfs::cpu(*p)).sum::<Duration>();
    let idle_from = (Instant::now(), cp_cpu_of(&pids));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_rate = cp_cpu_of(&pids).saturating_sub(idle_from.1).as_secs_f64() / idle_from.0.elapsed().as_secs_f64();
    let mut revocations = pb::revocation_service_client::RevocationServiceClient::new(channel.clone())
        .max_encoding_message_size(16 << 20);
    let mut lat = Vec::new();
    let mut stages = Vec::new();
    let mut slow_lat = Vec::new();
    let (phase_start, cpu_start) = (Instant::now(), cp_cpu_of(&pids));
    for s in 0..a.singles {
        let t0 = Instant::now();
        let v = revoke_token(&mut revocations, 0x5100_0000 + s as u64).await?;
        wait_all(fleet.regular(), v, Duration::from_secs(30)).await?;
        // The far edges' ACKs are still on their way up (125 ms): let them arrive.
        tokio::time::sleep(Duration::from_millis(300)).await;
        for e in fleet.regular() {
            let at = e.ack_delivered(v).context("ACK not delivered 300 ms after the edge sent it")?;
            lat.push(at.duration_since(t0).saturating_sub(e.spec.shape.rtt()));
            stages.extend(e.stages(v, t0));
        }
        if let Some(at) = fleet.edges[fleet.slow].ack_delivered(v) {
            slow_lat.push(at.duration_since(t0));
        }
    }
    let phase = phase_start.elapsed().as_secs_f64();
    let cp_cpu = cp_cpu_of(&pids).saturating_sub(cpu_start).as_secs_f64() - idle_rate * phase;
    lat.sort();
    let per_change_edge = cp_cpu.max(0.0) / (a.singles * fleet.edges.len()).max(1) as f64;
    writeln!(out, "### Revoke → every edge ACKed\n")?;
    writeln!(out, "| figure | value |\n|---|---|")?;
    writeln!(
        out,
        "| ACK reached the control plane − call start − the edge's RTT, p50 / p99 / max ({} samples) | **{} / {} / {}** |",
        lat.len(),
        ms(pct(&lat, 0.5)),
        ms(pct(&lat, 0.99)),
        ms(lat.last().copied().unwrap_or_default())
    )?;
    let stage = |f: fn(&Stages) -> Duration| {
        let mut v: Vec<Duration> = stages.iter().map(f).collect();
        v.sort();
        format!("{} / {}", ms(pct(&v, 0.5)), ms(pct(&v, 0.99)))
    };
    writeln!(
        out,
        "| the same minus the link's own delay and jitter as drawn for that delta and that ACK, p50 / p99 ({} samples) | **{}** |",
        stages.len(),
        stage(Stages::off_wire)
    )?;
    slow_lat.sort();
    writeln!(
        out,
        "| the 100 kB/s edge, call start → ACK (RTT 20 ms included), max | {} |",
        ms(slow_lat.last().copied().unwrap_or_default())
    )?;
    writeln!(
        out,
        "| control-plane CPU per change per edge (idle {:.1} % of a core subtracted) | {:.1} µs |\n",
        idle_rate * 100.0,
        per_change_edge * 1e6
    )?;

    writeln!(out, "Where the time went (relay chunk stamps; each stage's own p50 / p99, {} samples):\n", stages.len())?;
    writeln!(out, "| stage | p50 / p99 |\n|---|---|")?;
    for (name, f) in [
        (
            "call start → the edge's relay read the delta (commit, fan-out, control-plane scheduling)",
            (|s: &Stages| s.control) as fn(&Stages) -> Duration,
        ),
        ("link down: delay + jitter", |s| s.down_wire),
        ("relay delivered the delta late (its runtime)", |s| s.down_late),
        ("delivered → the edge handed its ACK over (decode, apply, ACK, simulator scheduling)", |s| s.edge),
        ("ACK handed over → the relay read it", |s| s.up_queue),
        ("link up: delay + jitter", |s| s.up_wire),
        ("relay delivered the ACK late", |s| s.up_late),
    ] {
        writeln!(out, "| {name} | {} |", stage(f))?;
    }
    writeln!(out)?;
    partial(a, &out)?;

    // ------------------------------------------------------------------- mass
    writeln!(out, "### Mass revocation\n")?;
    writeln!(
        out,
        "| how | changes | all regular edges ACKed | bytes per edge | snapshots applied (edges with > 1) | control CPU | simulator CPU (edges / relays) |\n|---|---|---|---|---|---|---|"
    )?;
    let mut next_token = 0x6000_0000u64;
    for how in ["batch", "singles"] {
        let n = if how == "batch" { a.batch } else { a.mass_singles };
        if n == 0 {
            continue;
        }
        let snaps0 = snapshots(&fleet.edges);
        let bytes0 = fleet.down_bytes();
        let cpu0 = (cp_cpu_of(&pids), procfs::threads_cpu("fleet-edge"), procfs::threads_cpu("fleet-relay"));
        let t0 = Instant::now();
        let last = if how == "batch" {
            let targets = (0..n as u64).map(|i| token_target(next_token + i)).collect();
            let req = pb::RevokeBatchRequest { targets, reason: "bench mass".into(), ..Default::default() };
            revocations.revoke_batch(auth(req, ADMIN)).await?.into_inner().last_version
        } else {
            singles_concurrently(&channel, next_token, n, 4).await?
        };
        next_token += n as u64;
        let committed = t0.elapsed();
        // A miss is a figure too: how many edges made it, then on to the next scenario.
        let took = match wait_all(fleet.regular(), last, Duration::from_secs(300)).await {
            Ok(_) => ms(t0.elapsed()),
            Err(_) => {
                let done = fleet.regular().iter().filter(|e| e.progress().applied >= last).count();
                format!("not within 300 s: {done} of {} edges", a.edges)
            }
        };
        let bytes1 = fleet.down_bytes();
        let mut per_edge: Vec<u64> = bytes1.iter().zip(&bytes0).take(fleet.slow).map(|(b, a)| b - a).collect();
        per_edge.sort_unstable();
        let snaps: Vec<u64> = snapshots(&fleet.edges).iter().zip(&snaps0).map(|(b, a)| b.saturating_sub(*a)).collect();
        let sent: u64 = snaps.iter().sum();
        let looping = snaps.iter().filter(|n| **n > 1).count();
        let cpu = |a: Duration, b: Duration| format!("{:.1} s", b.saturating_sub(a).as_secs_f64());
        writeln!(
            out,
            "| {} | {n} (committed in {}) | **{}** | {} median, {} max | {sent} ({looping}) | {} | {} / {} |",
            if how == "batch" { "one RevokeBatch" } else { "single Revoke calls, 4 callers" },
            ms(committed),
            took,
            kib(pct(&per_edge, 0.5)),
            kib(per_edge.last().copied().unwrap_or(0)),
            cpu(cpu0.0, cp_cpu_of(&pids)),
            cpu(cpu0.1, procfs::threads_cpu("fleet-edge")),
            cpu(cpu0.2, procfs::threads_cpu("fleet-relay")),
        )?;
    }
    let flap = &fleet.edges[fleet.flapping];
    writeln!(
        out,
        "\nThe edge cut every 3 s: {} streams opened so far, ACKed version {} of {} at the end.\n",
        flap.progress().connects,
        flap.progress().applied,
        version(&channel).await?
    )?;

    partial(a, &out)?;

    // ------------------------------------------------------------------ storm
    let latest = version(&channel).await?;
    wait_all(fleet.regular(), latest, Duration::from_secs(120)).await?;
    let before: Vec<u64> = fleet.edges.iter().map(|e| e.state().load().version).collect();
    // The edges the restart cuts off: all of them, or (`--redis`) those with a stream to
    // the first replica now — not those listing it first: an edge that failed over to the
    // second replica earlier (under overload, say) stays there and loses nothing.
    let on_first = |e: &SimEdge| {
        e.relays
            .iter()
            .zip(&e.spec.endpoints)
            .any(|(r, a)| *a == cp_addr && r.traffic.open.load(std::sync::atomic::Ordering::Relaxed) > 0)
    };
    let cut: Vec<&SimEdge> = fleet.regular().iter().filter(|e| peer.is_none() || on_first(e)).collect();
    ensure!(!cut.is_empty(), "no edge had a stream to the control plane about to stop");
    let listing_first = fleet.regular().iter().enumerate().filter(|(i, _)| !on_second(*i)).count();
    let stopped_at = Instant::now();
    cp.stop(Duration::from_secs(10)).await?;
    cp.restart().await?;
    let up_at = Instant::now();
    let new_pid = cp.pid().context("control pid")?;
    let sampler = tokio::spawn(async move {
        let mut peak = 0.0f64;
        let (mut t, mut c) = (Instant::now(), procfs::cpu(new_pid));
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let (t1, c1) = (Instant::now(), procfs::cpu(new_pid));
            peak = peak.max(c1.saturating_sub(c).as_secs_f64() / t1.duration_since(t).as_secs_f64());
            (t, c) = (t1, c1);
            if t.duration_since(up_at) > Duration::from_secs(600) {
                return peak;
            }
            PEAK.store((peak * 1000.0) as u64, std::sync::atomic::Ordering::Relaxed);
        }
    });
    let channel = connect(&cp.url()).await?;
    let went_back = fleet.edges.iter().zip(&before).filter(|(e, v)| e.state().load().version < **v).count();
    let mut back = Vec::new();
    let deadline = up_at + Duration::from_secs(300);
    // Reconnect times count from the restart, or (`--redis`) from the stop: an edge may
    // reach the other replica before the first is back.
    let from = if peer.is_some() { stopped_at } else { up_at };
    loop {
        back.clear();
        for e in &cut {
            let p = e.progress();
            let opened = e.log.streams_since(stopped_at).into_iter().find(|(_, c)| *c).map(|(t, _)| t);
            if let Some(t) = opened.filter(|_| p.connected && p.applied >= latest) {
                back.push(t.saturating_duration_since(from));
            }
        }
        if back.len() == cut.len() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let storm = from.elapsed();
    if back.len() != cut.len() {
        let opened = cut.iter().filter(|e| e.log.streams_since(stopped_at).iter().any(|(_, c)| *c)).count();
        let connected = cut.iter().filter(|e| e.progress().connected).count();
        let in_sync = cut.iter().filter(|e| e.progress().applied >= latest).count();
        bail!(
            "only {} of {} edges came back within 300 s: {opened} opened a stream after the stop, {connected} are \
             connected now, {in_sync} ACKed version {latest}",
            back.len(),
            cut.len()
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    sampler.abort();
    let peak_cpu = PEAK.load(std::sync::atomic::Ordering::Relaxed) as f64 / 10.0;
    let (_, hwm) = procfs::rss(new_pid);
    back.sort();
    match peer {
        Some(_) => writeln!(
            out,
            "### Reconnect storm (one of the two replicas restarted)\n\nThe {} edges it served when it \
             stopped ({listing_first} list it first); the other replica kept its streams.\n",
            cut.len()
        )?,
        None => writeln!(out, "### Reconnect storm (control plane restarted)\n")?,
    }
    writeln!(out, "| figure | value |\n|---|---|")?;
    writeln!(out, "| stop (SIGTERM, graceful) → process up again | {} |", ms(up_at.duration_since(stopped_at)))?;
    writeln!(
        out,
        "| {} → every regular edge {} and ACKed version {latest} | **{}** |",
        if peer.is_some() { "stop" } else { "process up" },
        if peer.is_some() { "it served reconnected (to either replica)" } else { "reconnected" },
        ms(storm)
    )?;
    writeln!(
        out,
        "| reconnect time after the {}, p50 / p99 / max | {} / {} / {} |",
        if peer.is_some() { "stop" } else { "restart" },
        ms(pct(&back, 0.5)),
        ms(pct(&back, 0.99)),
        ms(back.last().copied().unwrap_or_default())
    )?;
    writeln!(out, "| edges whose state went back meanwhile (stopped enforcing) | {went_back} |")?;
    writeln!(
        out,
        "| new process: peak CPU (250 ms samples), peak RSS | {peak_cpu:.0} % of a core, {:.1} MiB |\n",
        mib(hwm)
    )?;
    writeln!(
        out,
        "Reconnect-time histogram (edges per 250 ms after the {}):\n\n```",
        if peer.is_some() { "stop" } else { "process was up" }
    )?;
    let buckets = (back.last().copied().unwrap_or_default().as_millis() / 250 + 1) as usize;
    for b in 0..buckets.min(40) {
        let n = back.iter().filter(|d| (d.as_millis() / 250) as usize == b).count();
        writeln!(out, "{:>6} ms {:>5} {}", b * 250, n, "#".repeat((n * 60).div_ceil(cut.len().max(1))))?;
    }
    writeln!(out, "```\n")?;
    partial(a, &out)?;
    for e in fleet.edges {
        e.stop().await;
    }

    // ------------------------------------------------------------------- cold
    cp.stop(Duration::from_secs(10)).await?;
    if let Some(p) = peer.as_mut() {
        p.stop(Duration::from_secs(10)).await?;
    }
    drop(channel);
    if !a.cold.is_empty() {
        writeln!(out, "### Cold join\n")?;
        // On Redis a RevokeBatch of 100000 outlasts the default `command_timeout_ms`
        // (2 s) on this machine and answers UNAVAILABLE: load in the default `max_batch`,
        // with a longer timeout (below).
        let cold_batch = if a.redis { 50_000 } else { 100_000 };
        writeln!(
            out,
            "A fresh control plane ({}) with N live token revocations; one new edge (RTT 80 ms, unlimited bandwidth, {} KiB in flight) joins while {COLD_LIVE} more revocations are committed, one every 20 ms. First admit: its first ACK (the whole snapshot enforced); in sync: its ACK of the last of those. The snapshot streams in parts (`SnapshotBegin` + `SnapshotChunk`s, token ids packed).\n",
            if a.redis { "one replica on a fresh `redis-server` of its own" } else { "redb" },
            cold_shape().buffer >> 10
        )?;
        writeln!(
            out,
            "| live revocations | load time (RevokeBatch × {cold_batch}) | bytes to the edge | join → first admit | join → in sync | streams opened | control peak RSS growth | edge (simulator) peak RSS growth |\n|---|---|---|---|---|---|---|---|"
        )?;
        let cold_redis = match a.redis {
            true => Some(RedisProc::start(&root.path().join("cold")).await?),
            false => None,
        };
        let mut body = control_body(root.path(), "cold", cold_redis.as_ref());
        if cold_redis.is_some() {
            // Past a few million revocations a 50000-target commit outlasts the default 2 s.
            body = body.replacen("[store.redis]\n", "[store.redis]\ncommand_timeout_ms = 10000\n", 1);
        }
        let cold =
            ControlProc::start_logging(&a.stile, root.path(), "cold", &body, "warn,stile_control::sync=info").await?;
        let ch = connect(&cold.url()).await?;
        let cold_addr: std::net::SocketAddr = format!("127.0.0.1:{}", cold.port).parse()?;
        pb::key_service_client::KeyServiceClient::new(ch.clone())
            .rotate(auth(pb::RotateKeyRequest::default(), ADMIN))
            .await?;
        let mut rev =
            pb::revocation_service_client::RevocationServiceClient::new(ch.clone()).max_encoding_message_size(16 << 20);
        let mut loaded = 0usize;
        let mut slowest = Duration::ZERO;
        for (k, &n) in a.cold.iter().enumerate() {
            let t = Instant::now();
            while loaded < n {
                let m = (n - loaded).min(cold_batch);
                let targets = (0..m as u64).map(|i| token_target(0x7000_0000 + (loaded as u64) + i)).collect();
                let req = pb::RevokeBatchRequest { targets, reason: "bench cold".into(), ..Default::default() };
                let started = Instant::now();
                rev.revoke_batch(auth(req, ADMIN)).await.with_context(|| {
                    format!("loading: {loaded} of {n} committed, this call took {:?}", started.elapsed())
                })?;
                slowest = slowest.max(started.elapsed());
                loaded += m;
            }
            let load = t.elapsed();
            let latest = version(&ch).await?;
            let pid = cold.pid().context("cold pid")?;
            let (rss0, _) = procfs::rss(pid);
            let own = procfs::own_pid();
            let (own0, _) = procfs::rss(own);
            let peak = Arc::new(std::sync::atomic::AtomicU64::new(rss0));
            let own_peak = Arc::new(std::sync::atomic::AtomicU64::new(own0));
            let watch = {
                let (peak, own_peak) = (Arc::clone(&peak), Arc::clone(&own_peak));
                tokio::spawn(async move {
                    loop {
                        peak.fetch_max(procfs::rss(pid).0, std::sync::atomic::Ordering::Relaxed);
                        own_peak.fetch_max(procfs::rss(own).0, std::sync::atomic::Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                })
            };
            let spec = EdgeSpec {
                id: format!("cold-{k}"),
                shape: cold_shape(),
                endpoints: vec![cold_addr],
                cache: a.cold_cache.then(|| root.path().join(format!("cold-{k}.state.json"))),
                backoff_ms: (100, 10_000),
            };
            let perf = a.perf.as_deref().map(|dir| perf_record(dir, pid, n)).transpose()?;
            let t0 = Instant::now();
            let edge = start_edge(spec, EDGE_KEY, relay_rt, edge_rt).await?;
            // Changes keep coming while it joins: it must catch up with deltas, not loop.
            let live = {
                let mut rev = pb::revocation_service_client::RevocationServiceClient::new(ch.clone());
                let first = 0x9000_0000 + (k as u64) * 1_000;
                tokio::spawn(async move {
                    let mut top = 0;
                    for i in 0..COLD_LIVE {
                        top = revoke_token(&mut rev, first + i).await?;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    anyhow::Ok(top)
                })
            };
            let first_admit = wait_all(std::slice::from_ref(&edge), latest, Duration::from_secs(300))
                .await
                .map(|_| edge.log.acked_at(latest).map_or_else(|| t0.elapsed(), |at| at - t0));
            let top = live.await??;
            let joined = match &first_admit {
                Ok(_) => wait_all(std::slice::from_ref(&edge), top, Duration::from_secs(60))
                    .await
                    .map(|_| edge.log.acked_at(top).map_or_else(|| t0.elapsed(), |at| at - t0)),
                Err(_) => Err(anyhow::anyhow!("no first admit")),
            };
            watch.abort();
            if let Some(perf) = perf {
                perf_stop(perf)?;
            }
            // The control plane's own account of the build (`sync.snapshot_built`).
            for line in std::fs::read_to_string(cold.log())?.lines().filter(|l| l.contains("sync.snapshot_built")) {
                eprintln!("cold {n}: {line}");
            }
            // How its streams went: a snapshot loop shows as many short-lived streams.
            let streams = edge.log.streams_since(t0);
            let opened = streams.iter().filter(|(_, up)| *up).count();
            let lives: Vec<String> = streams
                .windows(2)
                .filter(|w| w[0].1 && !w[1].1)
                .map(|w| format!("{:.1}", (w[1].0 - w[0].0).as_secs_f64()))
                .take(8)
                .collect();
            eprintln!("cold {n}: {opened} streams opened; lifetimes of the closed ones (s): {}", lives.join(" "));
            let bytes = edge.bytes().0;
            let held = edge.state().load().revocations.len();
            edge.stop().await;
            let first_admit = match first_admit {
                Ok(t) => format!("**{}**", ms(t)),
                Err(e) => format!("not within 300 s: {e:#}"),
            };
            let joined = match joined {
                Ok(t) => format!("**{}** ({held} entries)", ms(t)),
                Err(e) => format!("{e:#}"),
            };
            writeln!(
                out,
                "| {n} | {} (slowest call {}) | {:.1} MiB ({:.1} B per revocation) | {first_admit} | {joined} | {opened} | {:.1} MiB | {:.1} MiB |",
                ms(load),
                ms(slowest),
                mib(bytes),
                bytes as f64 / n as f64,
                mib(peak.load(std::sync::atomic::Ordering::Relaxed).saturating_sub(rss0)),
                mib(own_peak.load(std::sync::atomic::Ordering::Relaxed).saturating_sub(own0)),
            )?;
            partial(a, &out)?;
        }
        drop(cold);
    }
    Ok(out)
}

/// Starts `perf record` on the control plane and this process (the joining
/// edge: threads `fleet-edge-*`; call graphs, 499 Hz) into `dir`.
fn perf_record(dir: &std::path::Path, pid: u32, n: usize) -> Result<std::process::Child> {
    std::fs::create_dir_all(dir)?;
    let out = dir.join(format!("cold-{n}.perf.data"));
    let child = std::process::Command::new("perf")
        .args(["record", "-F", "499", "-g", "-p", &format!("{pid},{}", procfs::own_pid()), "-o"])
        .arg(&out)
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("perf record (--perf)")?;
    // Give it time to attach.
    std::thread::sleep(Duration::from_millis(500));
    Ok(child)
}

/// Stops a `perf record` (SIGINT: it writes its file) and waits for it.
fn perf_stop(mut child: std::process::Child) -> Result<()> {
    std::process::Command::new("kill").arg("-INT").arg(child.id().to_string()).status()?;
    child.wait()?;
    Ok(())
}

/// Writes what is measured so far to `--out`, so a run cut short keeps it.
fn partial(a: &Args, out: &str) -> Result<()> {
    if let Some(path) = &a.out {
        std::fs::write(path, out)?;
    }
    Ok(())
}

static PEAK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn kib(b: u64) -> String {
    format!("{:.1} KiB", b as f64 / 1024.0)
}

fn token_target(i: u64) -> pb::RevocationTarget {
    pb::RevocationTarget { target: Some(pb::revocation_target::Target::TokenId(format!("{i:016x}"))) }
}

async fn revoke_token(
    client: &mut pb::revocation_service_client::RevocationServiceClient<Channel>,
    i: u64,
) -> Result<u64> {
    let req = pb::RevokeRequest { target: Some(token_target(i)), reason: "bench".into(), ..Default::default() };
    Ok(client.revoke(auth(req, ADMIN)).await?.into_inner().version)
}

/// `n` single Revoke calls from `callers` concurrent callers; the highest version.
async fn singles_concurrently(channel: &Channel, first: u64, n: usize, callers: usize) -> Result<u64> {
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..callers {
        let mut client = pb::revocation_service_client::RevocationServiceClient::new(channel.clone());
        tasks.spawn(async move {
            let mut top = 0;
            for i in (c..n).step_by(callers) {
                top = top.max(revoke_token(&mut client, first + i as u64).await?);
            }
            anyhow::Ok(top)
        });
    }
    let mut top = 0;
    while let Some(r) = tasks.join_next().await {
        top = top.max(r??);
    }
    Ok(top)
}

/// The control plane's newest version.
async fn version(channel: &Channel) -> Result<u64> {
    let req = pb::RevocationStatusRequest { version: 0 };
    Ok(pb::revocation_service_client::RevocationServiceClient::new(channel.clone())
        .status(auth(req, ADMIN))
        .await?
        .into_inner()
        .current_version)
}

/// Snapshots each edge has applied so far (its `stile_edge_sync_snapshots_total`).
fn snapshots(edges: &[SimEdge]) -> Vec<u64> {
    edges
        .iter()
        .map(|e| {
            let text = e.sync.metrics_text();
            text.lines()
                .find_map(|l| l.strip_prefix("stile_edge_sync_snapshots_total "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        })
        .collect()
}

/// Waits until every edge has ACKed `version`; how many edges.
async fn wait_all(edges: &[SimEdge], version: u64, limit: Duration) -> Result<usize> {
    let deadline = Instant::now() + limit;
    loop {
        let behind: Vec<&str> =
            edges.iter().filter(|e| e.progress().applied < version).map(|e| e.spec.id.as_str()).take(5).collect();
        if behind.is_empty() {
            return Ok(edges.len());
        }
        if Instant::now() > deadline {
            bail!("edges not at version {version} after {limit:?}: {behind:?}…");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
