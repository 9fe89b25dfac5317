//! AuditService: what is recorded, filters, and bounded retention.

mod common;

use std::time::Duration;

use common::*;
use stile_control::ManualClock;
use stile_proto::v1 as pb;
use tonic::Code;

#[tokio::test]
async fn events_and_filters() {
    let server = Server::start().await;
    server.published("abc", "/vod/abc/").await; // put + 2 state changes at T0
    server.clock.advance(Duration::from_secs(100));
    let mut links = server.links().await;
    let mint = pb::MintRequest { asset_id: "abc".into(), channel: "embed:partner-x".into(), ..Default::default() };
    let link = links.mint(auth(mint, MINTER)).await.unwrap().into_inner().link.unwrap();
    server.clock.advance(Duration::from_secs(100));
    let mut rev = server.revocations().await;
    let target = pb::RevocationTarget { target: Some(pb::revocation_target::Target::TokenId(link.token_id.clone())) };
    rev.revoke(auth(
        pb::RevokeRequest { target: Some(target), reason: "abuse".into(), ..Default::default() },
        OPERATOR,
    ))
    .await
    .unwrap();

    let mut audit = server.audit().await;
    let mut list = async |q: pb::ListAuditRequest| audit.list(auth(q, OPERATOR)).await.map(|r| r.into_inner().events);
    let all = list(pb::ListAuditRequest::default()).await.unwrap();
    let summary: Vec<_> = all.iter().map(|e| (e.action(), e.actor.as_str(), e.target.as_str())).collect();
    let token_target = format!("token:{}", link.token_id);
    assert_eq!(
        summary,
        [
            (pb::AuditAction::Revoke, "ops", token_target.as_str()),
            (pb::AuditAction::Mint, "backend", "asset:abc"),
            (pb::AuditAction::AssetState, "ops", "asset:abc"),
            (pb::AuditAction::AssetState, "ops", "asset:abc"),
            (pb::AuditAction::AssetPut, "ops", "asset:abc"),
            (pb::AuditAction::KeyRotate, "system", "key:1"),
        ]
    );
    let minted = &all[1];
    assert_eq!(
        (minted.channel.as_str(), minted.count, minted.at, minted.detail.as_str()),
        ("embed:partner-x", 1, T0 + 100, link.token_id.as_str())
    );
    assert_eq!(all[0].detail, "abuse");

    let by_actor = list(pb::ListAuditRequest { actor: "backend".into(), ..Default::default() }).await.unwrap();
    assert_eq!(by_actor.len(), 1);
    let by_channel =
        list(pb::ListAuditRequest { channel: "embed:partner-x".into(), ..Default::default() }).await.unwrap();
    assert_eq!(by_channel.len(), 1);
    let window = list(pb::ListAuditRequest { since: T0 + 50, until: T0 + 150, ..Default::default() }).await.unwrap();
    assert_eq!(window.iter().map(|e| e.action()).collect::<Vec<_>>(), [pb::AuditAction::Mint]);
    let limited = list(pb::ListAuditRequest { limit: 2, ..Default::default() }).await.unwrap();
    assert_eq!(limited.len(), 2);
    let older =
        list(pb::ListAuditRequest { before_seq: limited[1].seq, limit: 1, ..Default::default() }).await.unwrap();
    assert_eq!(older[0].seq, limited[1].seq - 1);

    assert_status(
        list(pb::ListAuditRequest { since: 10, until: 5, ..Default::default() }).await,
        Code::InvalidArgument,
        "until 5 must be after since 10",
    );
    assert_status(
        list(pb::ListAuditRequest { action: 42, ..Default::default() }).await,
        Code::InvalidArgument,
        "unknown audit action 42",
    );
    server.stop().await;
}

#[tokio::test]
async fn retention_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.audit.max_events = 3;
    config.audit.max_age_secs = 1000;
    config.revocations.prune_interval_secs = 1;
    let clock = ManualClock::new(T0);
    let server = Server::start_with(config, dir, clock.clone()).await;
    server.published("abc", "/vod/abc/").await;
    let mut links = server.links().await;
    for _ in 0..5 {
        links.mint(auth(pb::MintRequest { asset_id: "abc".into(), ..Default::default() }, MINTER)).await.unwrap();
    }
    let mut audit = server.audit().await;
    let mut count =
        async || audit.list(auth(pb::ListAuditRequest::default(), OPERATOR)).await.unwrap().into_inner().events.len();
    let mut n = 0;
    for _ in 0..50 {
        n = count().await;
        if n <= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(n, 3, "max_events");
    clock.advance(Duration::from_secs(1001));
    for _ in 0..50 {
        n = count().await;
        if n == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(n, 0, "max_age_secs");
    server.stop().await;
}
