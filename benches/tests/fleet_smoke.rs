//! The fleet simulator works (a smoke test, not a benchmark): a handful of
//! simulated edges — the edge's real sync client behind shaping relays — follow
//! an in-process control plane, one of them on a slow link and one whose
//! connection is cut every second; a `RevokeBatch` with `wait` is confirmed by
//! all of them, each holds the whole batch, and the relays' delay shows in
//! when each ACK reached the control plane. The scenarios at scale are
//! `scripts/bench-fleet` (BENCHMARKS.md, "Fleet scale").

use std::sync::Arc;
use std::time::Duration;

use stile_benches::fleet::relay::Shape;
use stile_benches::fleet::sim::{EdgeSpec, start_edge};
use stile_benches::{auth, auth_key_toml};
use stile_control::{Config, ControlPlane, SystemClock};
use stile_proto::v1 as pb;
use tokio::time::Instant;

const OPERATOR: &str = "stk_smoke-operator-key-0123456789";
const EDGE_KEY: &str = "stk_smoke-edge-key-0123456789";

/// An in-process control plane on redb in `dir`, serving on a loopback port.
struct Plane {
    addr: std::net::SocketAddr,
    channel: tonic::transport::Channel,
    /// Send to stop it; then await `server`.
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<(), stile_control::ServeError>>,
}

impl Plane {
    /// Starts one with the operator and edge keys and `extra` TOML after `[store]`.
    async fn start(dir: &tempfile::TempDir, extra: &str) -> Plane {
        let toml = format!(
            "[store]\npath = \"{}/control.redb\"\n{extra}{}{}",
            dir.path().display(),
            auth_key_toml("ops", "operator", OPERATOR),
            auth_key_toml("edges", "edge", EDGE_KEY)
        );
        let config = Config::from_toml(&toml).expect("config");
        let plane = ControlPlane::open(config, Arc::new(SystemClock)).await.expect("control plane");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(plane.serve(listener, async move {
            let _ = stopped.await;
        }));
        let channel = stile_benches::connect(&format!("http://{addr}")).await.unwrap();
        Plane { addr, channel, stop, server }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_edges_follow_a_control_plane_and_confirm_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let Plane { addr, channel, stop: stop_cp, server } = Plane::start(&dir, "").await;

    let ms = Duration::from_millis;
    let shapes = [
        Shape::default(),
        Shape { delay: ms(10), jitter: ms(2), ..Shape::default() },
        Shape { delay: ms(40), jitter: ms(5), ..Shape::default() },
        Shape { delay: ms(40), ..Shape::default() },
        Shape { delay: ms(5), bandwidth: 50_000, ..Shape::default() },
        Shape { delay: ms(5), flap: Some(ms(1000)), ..Shape::default() },
    ];
    let rt = tokio::runtime::Handle::current();
    let mut edges = Vec::new();
    for (i, shape) in shapes.iter().enumerate() {
        let spec = EdgeSpec {
            id: format!("smoke-{i}"),
            shape: *shape,
            endpoints: vec![addr],
            cache: None,
            backoff_ms: (50, 500),
        };
        edges.push(start_edge(spec, EDGE_KEY, &rt, &rt).await.expect("edge"));
    }

    let mut revocations = pb::revocation_service_client::RevocationServiceClient::new(channel.clone());
    let targets: Vec<_> = (0..500u64)
        .map(|i| pb::RevocationTarget {
            target: Some(pb::revocation_target::Target::TokenId(format!("{:016x}", 0x5eed_0000 + i))),
        })
        .collect();
    // Every edge must have connected first, or the wait would not expect it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while edges.iter().any(|e| e.progress().applied == 0) {
        assert!(Instant::now() < deadline, "edges did not take their first snapshot");
        tokio::time::sleep(ms(10)).await;
    }
    let t0 = Instant::now();
    let req = pb::RevokeBatchRequest {
        targets,
        reason: "smoke".into(),
        wait: true,
        wait_timeout_ms: 10_000,
        expect: Some(pb::WaitExpectation { min_edges: Some(6), edges: vec![] }),
    };
    let r = revocations.revoke_batch(auth(req, OPERATOR)).await.unwrap().into_inner();
    let c = r.confirmation.expect("confirmation");
    assert_eq!((c.verdict(), c.confirmed, r.count), (pb::ConfirmationVerdict::Confirmed, 6, 500), "{c:?}");

    for (e, shape) in edges.iter().zip(&shapes) {
        let state = e.state().load();
        assert!(state.version >= r.last_version, "{}: version {}", e.spec.id, state.version);
        assert_eq!(state.revocations.len(), 500, "{} holds the whole batch", e.spec.id);
        // The ACK crossed the relay: it reached the control plane no sooner than one round trip.
        let at = e.ack_delivered(r.last_version).or_else(|| e.log.acked_at(r.last_version)).expect("ack time");
        assert!(at.duration_since(t0) >= shape.rtt(), "{}: {:?} < {:?}", e.spec.id, at.duration_since(t0), shape.rtt());
        assert!(e.bytes().0 > 500 * 16, "{}: {:?} bytes down", e.spec.id, e.bytes());
    }
    // The flapping edge keeps being cut and keeps coming back.
    tokio::time::sleep(ms(1500)).await;
    let flapping = &edges[5];
    assert!(flapping.progress().connects >= 2, "{:?}", flapping.progress());
    assert!(flapping.relays[0].traffic.cut.load(std::sync::atomic::Ordering::Relaxed) >= 1);

    for e in edges {
        e.stop().await;
    }
    let _ = stop_cp.send(());
    server.await.unwrap().unwrap();
}

/// A new edge on a slow link joins a control plane holding 20000 token
/// revocations: the snapshot (≈ 180 KB in parts; ≈ 1.1 MB as one message)
/// takes longer to cross than the edge's silence timeout
/// (`sync.heartbeat_timeout_ms`, 5 s), yet arrives on the first stream — no
/// reconnect, no second snapshot — because every part resets the timer; and
/// the edge enforces nothing of it before it is whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_edge_on_a_slow_link_takes_a_large_snapshot_in_parts() {
    const N: u64 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let Plane { addr, channel, stop: stop_cp, server } =
        Plane::start(&dir, &format!("[revocations]\nmax_batch = {N}\n")).await;
    let mut revocations = pb::revocation_service_client::RevocationServiceClient::new(channel.clone())
        .max_encoding_message_size(16 << 20);
    let targets: Vec<_> = (0..N)
        .map(|i| pb::RevocationTarget {
            target: Some(pb::revocation_target::Target::TokenId(format!("{:016x}", 0xc01d_0000_0000 + i))),
        })
        .collect();
    let req = pb::RevokeBatchRequest { targets, reason: "smoke".into(), ..Default::default() };
    let version = revocations.revoke_batch(auth(req, OPERATOR)).await.unwrap().into_inner().last_version;

    // 25 kB/s: ≈ 7 s for the whole snapshot, ≈ 1.5 s for each part.
    let shape = Shape { delay: Duration::from_millis(20), bandwidth: 25_000, buffer: 16 << 10, ..Shape::default() };
    let spec = EdgeSpec { id: "cold".into(), shape, endpoints: vec![addr], cache: None, backoff_ms: (50, 500) };
    let rt = tokio::runtime::Handle::current();
    let t0 = Instant::now();
    let edge = start_edge(spec, EDGE_KEY, &rt, &rt).await.expect("edge");
    let mut halfway = None;
    while edge.progress().applied < version {
        assert!(t0.elapsed() < Duration::from_secs(60), "not in sync after 60 s: {:?}", edge.progress());
        let down = edge.bytes().0;
        if halfway.is_none() && down > 60_000 {
            // Part of the snapshot has arrived: nothing of it is enforced yet.
            let state = edge.state().load();
            halfway = Some((state.version, state.revocations.len()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = t0.elapsed();
    assert_eq!(halfway, Some((0, 0)), "a partial snapshot was enforced");
    assert!(took > Duration::from_secs(5), "the transfer ({took:?}) outlasts the silence timeout");
    let p = edge.progress();
    assert_eq!(p.connects, 1, "one stream, no reconnect: {p:?}");
    let state = edge.state().load();
    assert_eq!((state.version, state.revocations.len()), (version, N as usize));
    let down = edge.bytes().0;
    assert!(down < N * 12, "{down} bytes for {N} revocations");
    let metrics = edge.sync.metrics_text();
    assert!(metrics.contains("stile_edge_sync_snapshots_total 1"), "{metrics}");

    edge.stop().await;
    let _ = stop_cp.send(());
    server.await.unwrap().unwrap();
}
