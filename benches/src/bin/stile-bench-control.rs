//! Mint harness: batch links/s and unary latency of a real `stile control`
//! process on loopback, pinned to one CPU, driven by a tonic client on the other.
//!
//! `scripts/bench-mint` builds the release binaries and runs this; it writes a
//! markdown table to `--out` for `benches/scripts/report.py`.
//!
//! Phases (each bounded by `--secs`):
//! 1. batch: MintBatch of 1000 links, back to back, 2 calls in flight;
//! 2. unary saturation: 32 concurrent unary Mint loops;
//! 3. unary latency below saturation: open-loop schedules at half the
//!    saturated rate and at 1000 calls/s, latency measured from the scheduled
//!    send time (so queueing counts), reported as percentiles.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use stile_benches::{auth, auth_key_toml, connect, ms, parse_flags, pct};
use stile_proto::v1 as pb;

const ADMIN: &str = "stk_bench-admin-key-0123456789";
const MINTER: &str = "stk_bench-minter-key-0123456789";
const BATCH: usize = 1000;
/// The fixed open-loop rate, calls/s.
const FIXED_RATE: f64 = 1000.0;

struct Args {
    stile: PathBuf,
    out: PathBuf,
    secs: u64,
    cpu: Option<u32>,
}

fn args() -> Result<Args> {
    let mut a = Args { stile: "target/release/stile".into(), out: "mint.md".into(), secs: 10, cpu: Some(1) };
    parse_flags(|flag, value| {
        match flag {
            "--stile" => a.stile = value()?.into(),
            "--out" => a.out = value()?.into(),
            "--secs" => a.secs = value()?.parse()?,
            "--cpu" => a.cpu = Some(value()?.parse()?),
            "--no-pin" => a.cpu = None,
            other => bail!("unknown argument {other}; see the module docs"),
        }
        Ok(())
    })?;
    Ok(a)
}

/// The control plane under test; killed on drop.
struct Control {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_control(a: &Args) -> Result<(Control, String)> {
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let config = format!(
        "listen = \"127.0.0.1:{port}\"\n[store]\npath = \"{}/control.redb\"\n[links]\ndefault_base_url = \"https://edge.bench\"\n{}{}",
        dir.path().display(),
        auth_key_toml("admin", "admin", ADMIN),
        auth_key_toml("backend", "minter", MINTER),
    );
    let path = dir.path().join("control.toml");
    std::fs::write(&path, config)?;
    let mut cmd = match a.cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpu.to_string()).arg(&a.stile);
            c
        }
        None => Command::new(&a.stile),
    };
    let log = std::fs::File::create(dir.path().join("control.log"))?;
    let child = cmd
        .args(["control", "--config"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdout(log.try_clone()?)
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", a.stile.display()))?;
    Ok((Control { child, _dir: dir }, format!("http://127.0.0.1:{port}")))
}

fn mint_request(i: u64) -> pb::MintRequest {
    pb::MintRequest {
        asset_id: "bench".into(),
        subject: format!("viewer-{i}"),
        channel: "email".into(),
        ..Default::default()
    }
}

/// CPU seconds (user + system) the process has used.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> Result<()> {
    let a = args()?;
    let (control, url) = start_control(&a)?;
    let pid = control.child.id();
    let channel = connect(&url).await?;
    let mut assets = pb::asset_service_client::AssetServiceClient::new(channel.clone());
    let put = pb::PutAssetRequest { id: "bench".into(), path: "/vod/bench/".into(), entry: "master.m3u8".into() };
    assets.put(auth(put, ADMIN)).await?;
    for state in [pb::AssetState::Ready, pb::AssetState::Published] {
        let req = pb::SetAssetStateRequest { id: "bench".into(), state: state.into(), expected_revision: 0 };
        assets.set_state(auth(req, ADMIN)).await?;
    }
    let links = pb::link_service_client::LinkServiceClient::new(channel.clone()).max_decoding_message_size(64 << 20);
    let window = Duration::from_secs(a.secs);

    // 1. Batch.
    let minted = Arc::new(AtomicU64::new(0));
    let (cpu0, t0) = (cpu_secs(pid), Instant::now());
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let (mut links, minted) = (links.clone(), minted.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while t0.elapsed() < window {
                let requests = (0..BATCH as u64).map(|k| mint_request(i + k)).collect();
                let r = links.mint_batch(auth(pb::MintBatchRequest { requests }, MINTER)).await?;
                minted.fetch_add(r.into_inner().links.len() as u64, Ordering::Relaxed);
                i += BATCH as u64;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let batch_secs = t0.elapsed().as_secs_f64();
    let batch_links = minted.load(Ordering::Relaxed) as f64;
    let batch_rate = batch_links / batch_secs;
    let batch_cpu_us = (cpu_secs(pid) - cpu0) / batch_links * 1e6;

    // 2. Unary saturation.
    let done = Arc::new(AtomicU64::new(0));
    let (cpu0, t0) = (cpu_secs(pid), Instant::now());
    let mut tasks = Vec::new();
    for w in 0..32u64 {
        let (mut links, done) = (links.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = w << 32;
            while t0.elapsed() < window {
                links.mint(auth(mint_request(i), MINTER)).await?;
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let unary_n = done.load(Ordering::Relaxed) as f64;
    let unary_rate = unary_n / t0.elapsed().as_secs_f64();
    let unary_cpu_us = (cpu_secs(pid) - cpu0) / unary_n * 1e6;

    // 3. Open-loop latency below saturation: half the saturated rate, and a
    // fixed rate of the order one backend service sends.
    let target = (unary_rate / 2.0).max(1.0);
    let lat = open_loop(&links, target, window).await?;
    let lat_fixed = open_loop(&links, FIXED_RATE, window).await?;

    let per_core = |rate: f64, cpu_us: f64| if cpu_us > 0.0 { 1e6 / cpu_us } else { rate };
    let table = format!(
        "The control plane (`stile control`, embedded redb store) pinned to {pin}; the client on the other core.\n\n\
         | phase | result | control-plane CPU per link | links/s per core (from CPU) | goal |\n|---|---|---|---|---|\n\
         | MintBatch ×{BATCH}, 2 in flight | {batch_rate:.0} links/s ({batch_links:.0} in {batch_secs:.1} s) | {batch_cpu_us:.1} µs | {bpc:.0} | ≥ 30 000 links/s per core: {bv} |\n\
         | unary Mint, 32 concurrent (saturation) | {unary_rate:.0} links/s | {unary_cpu_us:.1} µs | {upc:.0} | |\n\
         | unary Mint, open loop at {target:.0}/s (half of saturation) | {half} | | | p99 ≤ 2 ms: {lv} |\n\
         | unary Mint, open loop at {FIXED_RATE:.0}/s | {fixed} | | | p99 ≤ 2 ms: {lf} |\n",
        pin = a.cpu.map_or("no CPU".to_string(), |c| format!("CPU {c}")),
        bpc = per_core(batch_rate, batch_cpu_us),
        bv = if per_core(batch_rate, batch_cpu_us) >= 30_000.0 { "met" } else { "**missed**" },
        upc = per_core(unary_rate, unary_cpu_us),
        half = percentiles(&lat),
        fixed = percentiles(&lat_fixed),
        lv = if pct(&lat, 0.99) <= Duration::from_millis(2) { "met" } else { "**missed**" },
        lf = if pct(&lat_fixed, 0.99) <= Duration::from_millis(2) { "met" } else { "**missed**" },
    );
    std::fs::write(&a.out, &table)?;
    print!("{table}");
    drop(control);
    Ok(())
}

/// Unary Mints sent on an open-loop schedule at `rate` for `window`; the
/// latency of each from its scheduled send time, sorted. The schedule is kept
/// by a thread of its own sleeping with `std::thread::sleep` (tens of µs of
/// slack), not by tokio's timer, whose 1 ms resolution would add up to a
/// millisecond to every call.
async fn open_loop(
    links: &pb::link_service_client::LinkServiceClient<tonic::transport::Channel>,
    rate: f64,
    window: Duration,
) -> Result<Vec<Duration>> {
    let runtime = tokio::runtime::Handle::current();
    let links = links.clone();
    let scheduler = std::thread::spawn(move || {
        let interval = Duration::from_secs_f64(1.0 / rate);
        let t0 = Instant::now();
        let mut handles = Vec::new();
        let mut k = 0u64;
        while t0.elapsed() < window {
            let scheduled = t0 + interval.mul_f64(k as f64);
            if let Some(wait) = scheduled.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let mut links = links.clone();
            handles
                .push(runtime.spawn(async move {
                    links.mint(auth(mint_request(k), MINTER)).await.map(|_| scheduled.elapsed())
                }));
            k += 1;
        }
        handles
    });
    let handles = tokio::task::spawn_blocking(move || scheduler.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the open-loop scheduler panicked"))?;
    let mut lat = Vec::with_capacity(handles.len());
    for h in handles {
        lat.push(h.await??);
    }
    lat.sort();
    Ok(lat)
}

fn percentiles(lat: &[Duration]) -> String {
    format!(
        "p50 {}, p90 {}, p99 {}, max {} over {} calls",
        ms(pct(lat, 0.5)),
        ms(pct(lat, 0.9)),
        ms(pct(lat, 0.99)),
        ms(lat.last().copied().unwrap_or_default()),
        lat.len()
    )
}
