//! EdgeService.Sync against the real server with scripted edges: snapshot vs
//! deltas at hello, live deltas, ACK bookkeeping (List, Status), NACK →
//! snapshot, edges ahead of the log, lag → snapshot, Revoke with wait, key
//! rollout (a new key is never minted with before the edges have it), and a
//! stalled edge that slows nobody.

mod common;

use std::time::Duration;

use common::*;
use stile_proto::v1 as pb;
use stile_proto::v1::control_message::Kind as Cm;
use stile_proto::v1::edge_message::Kind as Em;
use stile_proto::v1::revocation_target::Target as T;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::{Channel, Endpoint};

const WAIT: Duration = Duration::from_secs(10);

/// A scripted edge: sends what the test says, reads what the control plane sends.
struct FakeEdge {
    out: mpsc::Sender<pb::EdgeMessage>,
    inbound: Streaming<pb::ControlMessage>,
}

impl FakeEdge {
    async fn connect(server: &Server, id: &str, last_applied: u64) -> FakeEdge {
        FakeEdge::connect_on(server.channel().await, id, last_applied).await
    }

    async fn connect_on(channel: Channel, id: &str, last_applied: u64) -> FakeEdge {
        FakeEdge::connect_with(channel, id, last_applied, false).await
    }

    async fn connect_with(channel: Channel, id: &str, last_applied: u64, chunked_snapshots: bool) -> FakeEdge {
        let (out, rx) = mpsc::channel(64);
        let hello = pb::EdgeHello {
            edge_id: id.into(),
            last_applied_version: last_applied,
            agent: "test".into(),
            chunked_snapshots,
        };
        out.send(pb::EdgeMessage { kind: Some(Em::Hello(hello)) }).await.unwrap();
        let mut client = pb::edge_service_client::EdgeServiceClient::new(channel);
        let inbound = client.sync(auth(ReceiverStream::new(rx), EDGE)).await.expect("sync opens").into_inner();
        FakeEdge { out, inbound }
    }

    /// The next message that is not a heartbeat.
    async fn next(&mut self) -> Cm {
        loop {
            let msg = tokio::time::timeout(WAIT, self.inbound.message())
                .await
                .expect("a message in time")
                .expect("stream ok")
                .expect("stream open");
            match msg.kind.expect("a kind") {
                Cm::Heartbeat(_) => continue,
                other => return other,
            }
        }
    }

    async fn snapshot(&mut self) -> pb::Snapshot {
        match self.next().await {
            Cm::Snapshot(s) => s,
            other => panic!("expected a snapshot, got {other:?}"),
        }
    }

    async fn delta(&mut self) -> pb::Delta {
        match self.next().await {
            Cm::Delta(d) => d,
            other => panic!("expected a delta, got {other:?}"),
        }
    }

    async fn send(&self, kind: Em) {
        self.out.send(pb::EdgeMessage { kind: Some(kind) }).await.unwrap();
    }

    async fn ack(&self, version: u64) {
        self.send(Em::Ack(pb::Ack { version })).await;
    }
}

fn delta_version(d: &pb::Delta) -> u64 {
    d.change.as_ref().unwrap().version
}

async fn revoke_token(server: &Server, id: u64) -> u64 {
    revoke(server, id, false, 0).await.version
}

async fn revoke(server: &Server, id: u64, wait: bool, wait_timeout_ms: u32) -> pb::RevokeResponse {
    let req = pb::RevokeRequest {
        target: Some(pb::RevocationTarget { target: Some(T::TokenId(format!("{id:016x}"))) }),
        reason: "test".into(),
        wait,
        wait_timeout_ms,
        expect: None,
    };
    server.revocations().await.revoke(auth(req, OPERATOR)).await.expect("revoke").into_inner()
}

async fn edges(server: &Server) -> pb::ListEdgesResponse {
    server.edges().await.list(auth(pb::ListEdgesRequest::default(), OPERATOR)).await.unwrap().into_inner()
}

/// Polls List until `f` holds.
async fn until(server: &Server, what: &str, f: impl Fn(&pb::ListEdgesResponse) -> bool) -> pb::ListEdgesResponse {
    let deadline = Instant::now() + WAIT;
    loop {
        let list = edges(server).await;
        if f(&list) {
            return list;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {list:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An edge that says `chunked_snapshots` gets a SnapshotBegin and chunks
/// instead of one Snapshot: token ids packed in expiry order, the other
/// revocations as messages, every count announced up front.
#[tokio::test]
async fn an_edge_that_takes_parts_gets_the_snapshot_in_chunks() {
    let server = Server::start().await;
    for id in [0x30, 0x10, 0x20] {
        revoke_token(&server, id).await;
    }
    let subject = pb::RevokeRequest {
        target: Some(pb::RevocationTarget {
            target: Some(T::Subject(pb::SubjectTarget { subject: "alice".into(), issued_before: 0 })),
        }),
        reason: "test".into(),
        ..Default::default()
    };
    let v = server.revocations().await.revoke(auth(subject, OPERATOR)).await.unwrap().into_inner().version;

    let mut edge = FakeEdge::connect_with(server.channel().await, "edge-parts", 0, true).await;
    let Cm::SnapshotBegin(begin) = edge.next().await else { panic!("expected a SnapshotBegin") };
    assert_eq!((begin.version, begin.token_ids, begin.revocations, begin.purges, begin.reset), (v, 3, 1, 0, false));
    assert!(!begin.keys.is_empty(), "keys travel in the begin");
    let mut ids = Vec::new();
    let mut others = 0;
    for seq in 0..begin.chunks {
        let Cm::SnapshotChunk(c) = edge.next().await else { panic!("expected chunk {seq}") };
        assert_eq!((c.version, c.seq, c.last), (v, seq, seq + 1 == begin.chunks));
        assert_eq!(c.token_ids.len(), c.token_expiry_deltas.len() * 8);
        ids.extend(c.token_ids.chunks_exact(8).map(|b| u64::from_be_bytes(b.try_into().unwrap())));
        others += c.revocations.len();
        let mut expiry = 0;
        for d in &c.token_expiry_deltas {
            expiry += d;
            assert!(expiry > T0, "an absolute expiry, then differences: {:?}", c.token_expiry_deltas);
        }
    }
    ids.sort_unstable();
    assert_eq!((ids, others), (vec![0x10, 0x20, 0x30], 1));
    edge.ack(v).await;
    until(&server, "the ACK", |l| l.edges.iter().any(|e| e.edge_id == "edge-parts" && e.applied_version == v)).await;
    // Then deltas as usual.
    let next = revoke_token(&server, 0x40).await;
    assert_eq!(delta_version(&edge.delta().await), next);
}

async fn server_with(f: impl FnOnce(&mut stile_control::Config)) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.sync.heartbeat_interval_ms = 100;
    config.sync.key_activation_timeout_secs = 10;
    f(&mut config);
    Server::start_with(config, dir, stile_control::ManualClock::new(T0)).await
}

#[tokio::test]
async fn new_edge_gets_a_snapshot_then_live_deltas_and_acks_show_in_list_and_status() {
    let server = server_with(|_| {}).await;
    let before = revoke_token(&server, 1).await;
    let mut edge = FakeEdge::connect(&server, "edge-a", 0).await;
    let snap = edge.snapshot().await;
    assert_eq!(snap.version, before);
    assert!(!snap.reset);
    assert_eq!(snap.keys.len(), 1, "the active key, with its secret");
    assert_eq!(snap.keys[0].secret.len(), 32);
    assert_eq!(snap.revocations.len(), 1);
    edge.ack(snap.version).await;

    let v = revoke_token(&server, 2).await;
    let d = edge.delta().await;
    assert_eq!(delta_version(&d), v);
    edge.ack(v).await;
    let list = until(&server, "the ACK", |l| l.edges.first().is_some_and(|e| e.applied_version == v)).await;
    let e = &list.edges[0];
    assert_eq!((e.edge_id.as_str(), e.lag, e.snapshots, e.deltas, e.sent_version), ("edge-a", 0, 1, 1, v));
    assert!(e.remote_addr.starts_with("127.0.0.1:"), "{e:?}");

    // Heartbeats carry the control plane's time; the edge's status answer sets skew and RTT.
    let hb = loop {
        let m = edge.inbound.message().await.unwrap().unwrap();
        if let Some(Cm::Heartbeat(h)) = m.kind {
            break h;
        }
    };
    assert_eq!((hb.cp_time_ms, hb.current_version), (T0 * 1000, v));
    let status = pb::EdgeStatus { heartbeat_seq: hb.seq, clock_skew_ms: -1500, applied_version: v };
    edge.send(Em::Status(status)).await;
    until(&server, "the skew", |l| l.edges[0].clock_skew_ms == -1500).await;

    let st = server
        .revocations()
        .await
        .status(auth(pb::RevocationStatusRequest { version: v }, OPERATOR))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.edges.len(), 1);
    assert!(st.edges[0].applied && st.edges[0].applied_version == v);
    let st = server
        .revocations()
        .await
        .status(auth(pb::RevocationStatusRequest { version: v + 1 }, OPERATOR))
        .await
        .unwrap()
        .into_inner();
    assert!(!st.committed && !st.edges[0].applied);

    drop(edge);
    until(&server, "the disconnect", |l| l.edges.is_empty()).await;
    server.stop().await;
}

#[tokio::test]
async fn a_close_edge_resumes_with_deltas_and_never_gets_a_snapshot() {
    let server = server_with(|_| {}).await;
    let v1 = revoke_token(&server, 1).await;
    let v2 = revoke_token(&server, 2).await;
    let v3 = revoke_token(&server, 3).await;
    let mut edge = FakeEdge::connect(&server, "edge-a", v1).await;
    assert_eq!(delta_version(&edge.delta().await), v2);
    assert_eq!(delta_version(&edge.delta().await), v3);
    edge.ack(v3).await;
    let list = until(&server, "the ACK", |l| l.edges.first().is_some_and(|e| e.applied_version == v3)).await;
    assert_eq!(list.edges[0].snapshots, 0);

    // Up to date at hello: nothing but heartbeats until the next change.
    let mut edge2 = FakeEdge::connect(&server, "edge-b", v3).await;
    let v4 = revoke_token(&server, 4).await;
    assert_eq!(delta_version(&edge2.delta().await), v4);
    server.stop().await;
}

#[tokio::test]
async fn key_deltas_carry_the_key_material() {
    let server = server_with(|_| {}).await;
    let v = server.store_version().await;
    let mut edge = FakeEdge::connect(&server, "edge-a", v).await;
    let rotate = tokio::spawn({
        let mut keys = server.keys().await;
        async move { keys.rotate(auth(pb::RotateKeyRequest::default(), OPERATOR)).await }
    });
    let d = edge.delta().await;
    let change = d.change.clone().unwrap();
    let Some(pb::change::Kind::Key(k)) = change.kind else { panic!("key change: {change:?}") };
    assert_eq!((k.key_id, k.state()), (2, pb::KeyState::Pending));
    let key = d.key.expect("PENDING delta carries the key");
    assert_eq!((key.key_id, key.secret.len()), (2, 32));
    edge.ack(change.version).await;
    rotate.await.unwrap().unwrap();
    // ACTIVE for 2, VERIFY_ONLY for 1: both with material.
    for _ in 0..2 {
        assert!(edge.delta().await.key.is_some());
    }
    server.stop().await;
}

// Sessions at the same version share one log read (`SharedTail`): every edge
// still gets every delta in order, key material included.
#[tokio::test]
async fn edges_at_the_same_version_all_get_the_same_deltas_with_key_material() {
    let server = server_with(|_| {}).await;
    let v = server.store_version().await;
    let mut edges = Vec::new();
    for id in ["edge-a", "edge-b", "edge-c"] {
        edges.push(FakeEdge::connect(&server, id, v).await);
    }
    let rotate = tokio::spawn({
        let mut keys = server.keys().await;
        async move { keys.rotate(auth(pb::RotateKeyRequest::default(), OPERATOR)).await }
    });
    let mut pending = Vec::new();
    for edge in &mut edges {
        let d = edge.delta().await;
        assert_eq!(delta_version(&d), v + 1);
        let key = d.key.clone().expect("PENDING delta carries the key");
        assert_eq!(key.secret.len(), 32);
        pending.push(d);
        edge.ack(v + 1).await;
    }
    assert!(pending.windows(2).all(|w| w[0] == w[1]), "every edge got the same delta: {pending:?}");
    rotate.await.unwrap().unwrap();
    let top = server.store_version().await;
    let r = revoke_token(&server, 77).await;
    for edge in &mut edges {
        let mut got = Vec::new();
        while got.last() != Some(&r) {
            let d = edge.delta().await;
            if delta_version(&d) <= top {
                assert!(d.key.is_some(), "key deltas keep their material: {d:?}");
            }
            got.push(delta_version(&d));
        }
        assert_eq!(got, ((v + 2)..=r).collect::<Vec<_>>(), "in order, without gaps");
    }
    server.stop().await;
}

#[tokio::test]
async fn nack_gets_a_snapshot() {
    let server = server_with(|_| {}).await;
    let v = server.store_version().await;
    let mut edge = FakeEdge::connect(&server, "edge-a", v).await;
    let v2 = revoke_token(&server, 9).await;
    assert_eq!(delta_version(&edge.delta().await), v2);
    edge.send(Em::Nack(pb::Nack { version: v2, error: "cannot apply".into() })).await;
    let snap = edge.snapshot().await;
    assert_eq!(snap.version, v2);
    assert_eq!(snap.revocations.len(), 1);
    let list = until(&server, "the NACK", |l| l.edges.first().is_some_and(|e| e.nacks == 1)).await;
    assert_eq!(list.edges[0].last_error, "cannot apply");
    assert_eq!(list.edges[0].snapshots, 1);
    server.stop().await;
}

#[tokio::test]
async fn an_edge_ahead_of_the_log_is_reset_and_a_far_behind_one_gets_a_snapshot() {
    let server = server_with(|c| c.sync.max_lag_versions = 3).await;
    for id in 1..=5 {
        revoke_token(&server, id).await;
    }
    let current = server.store_version().await;
    let mut ahead = FakeEdge::connect(&server, "edge-a", current + 100).await;
    let snap = ahead.snapshot().await;
    assert!(snap.reset, "an edge ahead of the log is told to replace its state");
    assert_eq!(snap.version, current);

    let mut behind = FakeEdge::connect(&server, "edge-b", current - 4).await;
    let snap = behind.snapshot().await;
    assert!(!snap.reset);
    assert_eq!(snap.version, current);
    assert_eq!(snap.revocations.len(), 5);

    let mut close = FakeEdge::connect(&server, "edge-c", current - 3).await;
    assert_eq!(delta_version(&close.delta().await), current - 2);
    server.stop().await;
}

#[tokio::test]
async fn revoke_with_wait_returns_once_every_edge_acked_or_names_the_laggards() {
    let server = server_with(|_| {}).await;
    let v = server.store_version().await;
    let mut a = FakeEdge::connect(&server, "edge-a", v).await;
    let mut b = FakeEdge::connect(&server, "edge-b", v).await;
    until(&server, "two edges", |l| l.edges.len() == 2).await;

    // Both ACK: the call returns with an empty lagging list.
    let call = tokio::spawn({
        let channel = server.channel().await;
        async move {
            let req = pb::RevokeRequest {
                target: Some(pb::RevocationTarget { target: Some(T::TokenId("00000000000000aa".into())) }),
                reason: "leak".into(),
                wait: true,
                wait_timeout_ms: 10_000,
                expect: None,
            };
            pb::revocation_service_client::RevocationServiceClient::new(channel).revoke(auth(req, OPERATOR)).await
        }
    });
    let va = delta_version(&a.delta().await);
    let vb = delta_version(&b.delta().await);
    a.ack(va).await;
    // edge-b ACKs only once the server has recorded edge-a's ACK: a wait that
    // returned on edge-a's ACK alone would answer with edge-b lagging.
    until(&server, "edge-a's ACK", |l| l.edges.iter().any(|e| e.edge_id == "edge-a" && e.applied_version == va)).await;
    b.ack(vb).await;
    let r = tokio::time::timeout(WAIT, call).await.unwrap().unwrap().unwrap().into_inner();
    assert!(r.lagging.is_empty(), "{r:?}");
    assert_eq!(r.edges.len(), 2);
    assert!(r.edges.iter().all(|e| e.applied));
    assert!(r.waited_ms < 10_000, "it returned on the last ACK, not at the deadline: {r:?}");

    // edge-b never ACKs: the call returns at the deadline naming it, and still
    // succeeds. (This is also what proves a wait does not end before every edge ACKed.)
    let started = Instant::now();
    let r = revoke(&server, 0xbb, true, 300).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(r.lagging, ["edge-a", "edge-b"]);
    let v = r.version;
    let call = tokio::spawn({
        let channel = server.channel().await;
        async move {
            let req = pb::RevokeRequest {
                target: Some(pb::RevocationTarget { target: Some(T::TokenId("00000000000000cc".into())) }),
                reason: "leak".into(),
                wait: true,
                wait_timeout_ms: 300,
                expect: None,
            };
            pb::revocation_service_client::RevocationServiceClient::new(channel).revoke(auth(req, OPERATOR)).await
        }
    });
    assert_eq!(delta_version(&a.delta().await), v);
    let v2 = delta_version(&a.delta().await);
    a.ack(v2).await;
    let r = call.await.unwrap().unwrap().into_inner();
    assert_eq!(r.lagging, ["edge-b"]);
    assert!(r.revocation.is_some() && r.waited_ms >= 300);
    server.stop().await;
}

#[tokio::test]
async fn a_rotated_key_is_not_minted_with_before_every_edge_has_it() {
    let server = server_with(|_| {}).await;
    server.published("abc", "/vod/abc/").await;
    let v = server.store_version().await;
    let mut edge = FakeEdge::connect(&server, "edge-a", v).await;
    until(&server, "the edge", |l| l.edges.len() == 1).await;

    let rotate = tokio::spawn({
        let mut keys = server.keys().await;
        async move {
            keys.rotate(auth(pb::RotateKeyRequest { reason: "q".into(), expect: None, ..Default::default() }, OPERATOR))
                .await
        }
    });
    let pending = edge.delta().await;
    let pending_version = delta_version(&pending);
    // The key is out but not ACKed: minting still uses key 1, again and again.
    let mut links = server.links().await;
    for _ in 0..5 {
        let link = links
            .mint(auth(pb::MintRequest { asset_id: "abc".into(), ..Default::default() }, MINTER))
            .await
            .unwrap()
            .into_inner()
            .link
            .unwrap();
        assert_eq!(link.key_id, 1, "minted with a key the edge has not ACKed");
    }
    edge.ack(pending_version).await;
    let r = tokio::time::timeout(WAIT, rotate).await.unwrap().unwrap().unwrap().into_inner();
    assert_eq!((r.key.unwrap().state(), r.pending_version), (pb::KeyState::Active, pending_version));
    // An activation before the ACK would name the edge as lagging.
    assert!(r.lagging.is_empty(), "{:?}", r.lagging);
    assert!(r.version > pending_version);
    let link = links
        .mint(auth(pb::MintRequest { asset_id: "abc".into(), ..Default::default() }, MINTER))
        .await
        .unwrap()
        .into_inner()
        .link
        .unwrap();
    assert_eq!(link.key_id, 2);
    server.stop().await;
}

#[tokio::test]
async fn a_key_rollout_times_out_naming_the_edges_that_did_not_ack() {
    let server = server_with(|c| c.sync.key_activation_timeout_secs = 1).await;
    let v = server.store_version().await;
    let _silent = FakeEdge::connect(&server, "edge-silent", v).await;
    until(&server, "the edge", |l| l.edges.len() == 1).await;
    let started = Instant::now();
    let r = server.keys().await.rotate(auth(pb::RotateKeyRequest::default(), OPERATOR)).await.unwrap().into_inner();
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(r.lagging, ["edge-silent"]);
    assert_eq!(r.key.unwrap().state(), pb::KeyState::Active);
    server.stop().await;
}

#[tokio::test]
async fn a_stalled_edge_does_not_slow_the_others_and_is_dropped() {
    let server = server_with(|c| c.sync.send_timeout_ms = 1_000).await;
    let v = server.store_version().await;
    // The stalled edge: a small HTTP/2 window and a stream nobody reads.
    let tight = Endpoint::from_shared(server.url())
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let stalled = FakeEdge::connect_on(tight, "edge-stalled", v).await;
    let mut live = FakeEdge::connect(&server, "edge-live", v).await;
    until(&server, "two edges", |l| l.edges.len() == 2).await;

    let mut worst = Duration::ZERO;
    let reason = "x".repeat(200);
    for id in 1..=400u64 {
        let req = pb::RevokeRequest {
            target: Some(pb::RevocationTarget { target: Some(T::TokenId(format!("{id:016x}"))) }),
            reason: reason.clone(),
            ..Default::default()
        };
        let version = server.revocations().await.revoke(auth(req, OPERATOR)).await.unwrap().into_inner().version;
        let t = Instant::now();
        assert_eq!(delta_version(&live.delta().await), version);
        worst = worst.max(t.elapsed());
        live.ack(version).await;
    }
    assert!(worst < Duration::from_millis(500), "the live edge waited {worst:?} for a delta");
    // The stalled edge stopped accepting data: its session ends after send_timeout_ms.
    let list =
        until(&server, "the stalled edge to be dropped", |l| l.edges.iter().all(|e| e.edge_id != "edge-stalled")).await;
    assert_eq!(list.edges.len(), 1);
    drop(stalled);
    server.stop().await;
}

#[tokio::test]
async fn a_second_stream_of_the_same_edge_replaces_the_first() {
    let server = server_with(|_| {}).await;
    let v = server.store_version().await;
    let mut old = FakeEdge::connect(&server, "edge-a", v).await;
    until(&server, "the edge", |l| l.edges.len() == 1).await;
    let mut new = FakeEdge::connect(&server, "edge-a", v).await;
    // The old stream ends, cleanly (the session ends: "replaced"), not with an error.
    let end = tokio::time::timeout(WAIT, async {
        loop {
            match old.inbound.message().await {
                Ok(Some(pb::ControlMessage { kind: Some(Cm::Heartbeat(_)) })) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the replaced stream must end");
    assert!(matches!(end, Ok(None)), "the replaced stream ended with {end:?}");
    // The one entry left is the new stream's: it gets the next change, and its ACK shows.
    let v2 = revoke_token(&server, 5).await;
    assert_eq!(delta_version(&new.delta().await), v2);
    new.ack(v2).await;
    let list = until(&server, "the new stream's ACK", |l| l.edges.iter().any(|e| e.applied_version == v2)).await;
    assert_eq!(list.edges.len(), 1, "{list:?}");
    assert_eq!(list.edges[0].edge_id, "edge-a");
    server.stop().await;
}

#[tokio::test]
async fn a_bad_hello_is_refused() {
    let server = server_with(|_| {}).await;
    let mut edge = FakeEdge::connect(&server, "Not Valid!", 0).await;
    let err = tokio::time::timeout(WAIT, edge.inbound.message()).await.unwrap().unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("edge_id"), "{}", err.message());
    server.stop().await;
}

/// Foreign keys on the push path: a live addition's delta carries the key, a
/// removal's does not; a snapshot (whole or in parts) carries every key; an
/// addition first read after its key was removed carries no material; the service
/// refuses bad material, a taken name and a missing key with their codes,
/// and an operator key may call it.
#[tokio::test]
async fn foreign_keys_reach_edges_in_deltas_and_snapshots() {
    let server = Server::start().await;
    let add = |name: &str, key: &str| pb::AddForeignKeyRequest {
        format: "akamai".into(),
        name: name.into(),
        key: key.into(),
        reason: String::new(),
    };
    let rm =
        |name: &str| pb::RemoveForeignKeyRequest { format: "akamai".into(), name: name.into(), reason: String::new() };
    let mut keys = server.keys().await;
    let start = server.store_version().await;
    // Added and removed before any edge read the log: the addition's delta
    // carries no material (the key is gone), the removal follows.
    let early = keys.add_foreign(auth(add("early", "00"), OPERATOR)).await.unwrap().into_inner().version;
    let gone = keys.remove_foreign(auth(rm("early"), OPERATOR)).await.unwrap().into_inner().version;
    let mut late = FakeEdge::connect(&server, "edge-0", start).await;
    let replayed = [late.delta().await, late.delta().await];
    assert_eq!(replayed.iter().map(delta_version).collect::<Vec<_>>(), [early, gone]);
    assert!(replayed.iter().all(|d| d.foreign_key.is_none()), "{replayed:?}");

    let mut edge = FakeEdge::connect(&server, "edge-1", gone).await;
    // Caught up: nothing until the addition.
    let added = keys.add_foreign(auth(add("primary", "52a152a1"), OPERATOR)).await.unwrap().into_inner();
    let d = edge.delta().await;
    assert_eq!(delta_version(&d), added.version);
    let change = pb::ForeignKeyChange { format: "akamai".into(), name: "primary".into(), removed: false };
    assert_eq!(d.change.as_ref().unwrap().kind, Some(pb::change::Kind::ForeignKey(change)));
    let material = pb::ForeignKey { format: "akamai".into(), name: "primary".into(), key: "52a152a1".into() };
    assert_eq!(d.foreign_key, Some(material.clone()));
    edge.ack(added.version).await;

    // Refusals, each with its code; nothing is written.
    assert_status(
        keys.add_foreign(auth(add("bad", "zz"), OPERATOR)).await,
        tonic::Code::InvalidArgument,
        "not valid hex",
    );
    let mut fastly = add("k", "00");
    fastly.format = "fastly".into();
    assert_status(keys.add_foreign(auth(fastly, OPERATOR)).await, tonic::Code::InvalidArgument, "one of akamai");
    assert_status(keys.add_foreign(auth(add("primary", "00"), OPERATOR)).await, tonic::Code::AlreadyExists, "exists");
    assert_status(keys.remove_foreign(auth(rm("none"), OPERATOR)).await, tonic::Code::NotFound, "does not exist");
    assert_status(keys.add_foreign(auth(add("x", "00"), MINTER)).await, tonic::Code::PermissionDenied, "");
    assert_eq!(server.store_version().await, added.version);

    // A second key, then the first removed: the removal carries no material.
    keys.add_foreign(auth(add("transition", "0badc0ffee"), OPERATOR)).await.unwrap();
    assert!(edge.delta().await.foreign_key.is_some());
    let removed = keys.remove_foreign(auth(rm("primary"), OPERATOR)).await.unwrap().into_inner();
    let d = edge.delta().await;
    assert_eq!((delta_version(&d), d.foreign_key.is_none()), (removed.version, true));

    // Snapshots, whole and in parts, carry the one key left.
    let left = vec![pb::ForeignKey { format: "akamai".into(), name: "transition".into(), key: "0badc0ffee".into() }];
    let mut fresh = FakeEdge::connect(&server, "edge-3", 0).await;
    assert_eq!(fresh.snapshot().await.foreign_keys, left);
    let mut parts = FakeEdge::connect_with(server.channel().await, "edge-4", 0, true).await;
    let Cm::SnapshotBegin(begin) = parts.next().await else { panic!("expected a SnapshotBegin") };
    assert_eq!(begin.foreign_keys, left);

    // Listed without material.
    let listed = keys.list_foreign(auth(pb::ListForeignKeysRequest {}, OPERATOR)).await.unwrap().into_inner();
    assert_eq!(listed.keys.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(), ["transition"]);
    assert!(!format!("{listed:?}").contains("0badc0ffee"));
}
