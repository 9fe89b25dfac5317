//! The gRPC API on the Redis backend: two control-plane replicas on one Redis
//! see each other's revocations; with Redis down, Revoke answers UNAVAILABLE
//! (never a silent success) while minting goes on from what the replica read
//! before, and both recover without restarting the control plane; an edge's
//! sync stream gets UNAVAILABLE too.

mod common;

use std::time::Duration;

use common::{ADMIN, EDGE, OPERATOR, Plane, assert_status, auth};
use stile_control::config::StoreBackend;
use stile_proto::v1 as pb;
use stile_tests::redis::{Persistence, RedisServer};
use tokio::time::Instant;
use tonic::Code;

/// A control plane on the Redis store, served on 127.0.0.1:0, with its directory.
async fn start(redis: &RedisServer) -> (Plane, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.store.backend = StoreBackend::Redis;
    config.store.redis.url = redis.url();
    config.store.redis.connect_timeout_ms = 500;
    config.store.redis.command_timeout_ms = 1_000;
    (Plane::open(config).await.expect("control plane"), dir)
}

fn revoke_token(token_id: &str) -> tonic::Request<pb::RevokeRequest> {
    let target = pb::RevocationTarget { target: Some(pb::revocation_target::Target::TokenId(token_id.into())) };
    auth(pb::RevokeRequest { target: Some(target), reason: "leaked".into(), ..Default::default() }, OPERATOR)
}

#[tokio::test]
async fn a_revocation_through_one_replica_is_listed_by_the_other() {
    let redis = RedisServer::start();
    let (a, _a_dir) = start(&redis).await;
    let (b, _b_dir) = start(&redis).await;
    a.publish("abc").await;
    let link = b.mint("abc").await.expect("B mints with the key A created");
    let revoked = a.revocations().revoke(revoke_token(&link.token_id)).await.unwrap().into_inner();
    let listed = b
        .revocations()
        .list(auth(pb::ListRevocationsRequest::default(), OPERATOR))
        .await
        .unwrap()
        .into_inner()
        .revocations;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].version, revoked.version);
    let status = b
        .revocations()
        .status(auth(pb::RevocationStatusRequest { version: revoked.version }, OPERATOR))
        .await
        .unwrap()
        .into_inner();
    assert!(status.committed && status.current_version >= revoked.version, "{status:?}");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_revoke_batch_is_one_script_with_consecutive_versions_on_both_replicas() {
    let redis = RedisServer::start();
    let (a, _a_dir) = start(&redis).await;
    let (b, _b_dir) = start(&redis).await;
    let targets = (0..20_000u64)
        .map(|i| pb::RevocationTarget { target: Some(pb::revocation_target::Target::TokenId(format!("{i:016x}"))) })
        .collect();
    let req = pb::RevokeBatchRequest { targets, reason: "leaked batch".into(), ..Default::default() };
    let r = a.revocations().revoke_batch(auth(req, OPERATOR)).await.unwrap().into_inner();
    assert_eq!((r.count, r.last_version - r.first_version), (20_000, 19_999));
    let page = pb::ListRevocationsRequest { after_version: r.first_version + 9_999, limit: 2 };
    let listed = b.revocations().list(auth(page, OPERATOR)).await.unwrap().into_inner().revocations;
    let got: Vec<_> = listed.iter().map(|l| (l.version, l.target.clone().unwrap().target)).collect();
    let token = |i: u64| Some(pb::revocation_target::Target::TokenId(format!("{i:016x}")));
    assert_eq!(got, [(r.first_version + 10_000, token(10_000)), (r.first_version + 10_001, token(10_001))]);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn redis_down_revoke_is_unavailable_minting_continues_and_both_recover() {
    let mut redis = RedisServer::start_with(Persistence::AofAlways);
    let (cp, _cp_dir) = start(&redis).await;
    cp.publish("abc").await;
    cp.mint("abc").await.expect("mint while Redis is up (caches the asset)");

    redis.kill();
    let started = Instant::now();
    assert_status(cp.revocations().revoke(revoke_token("0123456789abcdef")).await, Code::Unavailable, "retry");
    assert!(started.elapsed() < Duration::from_secs(5), "UNAVAILABLE took {:?}", started.elapsed());
    for _ in 0..3 {
        cp.mint("abc").await.expect("minting goes on from the cached asset and key");
    }
    assert_status(cp.mint("unknown").await, Code::Unavailable, "unavailable");

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    let revoked = loop {
        match cp.revocations().revoke(revoke_token("0123456789abcdef")).await {
            Ok(r) => break r.into_inner(),
            Err(s) if s.code() == Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => panic!("Revoke did not recover: {s:?}"),
        }
    };
    assert!(revoked.version > 0);
    // The mints made during the outage are in the audit log once Redis is back.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let req = pb::ListAuditRequest { action: pb::AuditAction::Mint.into(), ..Default::default() };
        let events = cp.audit().list(auth(req, ADMIN)).await.unwrap().into_inner().events;
        if events.len() == 4 {
            break;
        }
        assert!(Instant::now() < deadline, "mint audit events: {events:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cp.stop().await;
}

#[tokio::test]
async fn redis_down_a_sync_stream_ends_with_unavailable_like_every_rpc() {
    let mut redis = RedisServer::start_with(Persistence::AofAlways);
    let (cp, _cp_dir) = start(&redis).await;
    redis.kill();
    // A new edge (version 0) is owed a snapshot, which reads the store.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let hello = pb::EdgeHello {
        edge_id: "edge-a".into(),
        last_applied_version: 0,
        agent: "test".into(),
        chunked_snapshots: false,
    };
    tx.send(pb::EdgeMessage { kind: Some(pb::edge_message::Kind::Hello(hello)) }).await.unwrap();
    let mut edges = pb::edge_service_client::EdgeServiceClient::new(cp.channel.clone());
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut inbound = edges.sync(auth(stream, EDGE)).await.expect("the stream opens").into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), inbound.message()).await.expect("an answer in time");
    assert_status(first, Code::Unavailable, "storage backend unavailable");
    drop(tx);
    cp.stop().await;
}
