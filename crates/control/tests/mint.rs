//! LinkService: minted links verify with the token crate; every error path.

mod common;

use common::*;
use stile_proto::v1 as pb;
use stile_token::{Policy, Reason, Request, verify};
use tonic::Code;

fn req(asset: &str) -> pb::MintRequest {
    pb::MintRequest { asset_id: asset.into(), ..Default::default() }
}

#[tokio::test]
async fn minted_link_verifies_in_every_transport() {
    let server = Server::start().await;
    server.published("abc", "/vod/abc/").await;
    let mut links = server.links().await;
    let r = pb::MintRequest {
        subject: "viewer-7".into(),
        channel: "email".into(),
        client_ip: "203.0.113.9".into(),
        ..req("abc")
    };
    let link = links.mint(auth(r, MINTER)).await.unwrap().into_inner().link.unwrap();
    assert_eq!(link.issued_at, T0);
    assert_eq!(link.expires_at, T0 + 3600);
    assert_eq!(link.token_id.len(), 16);
    let t = &link.token;
    assert_eq!(link.query_url, format!("https://edge.test/vod/abc/master.m3u8?st={t}"));
    assert_eq!(link.path_url, format!("https://edge.test/_st/{t}/vod/abc/master.m3u8"));
    let cookie = link.cookie.unwrap();
    assert_eq!((cookie.name.as_str(), cookie.value.as_str(), cookie.path.as_str()), ("stile", t.as_str(), "/vod/abc/"));

    let ring = server.ring().await;
    let request = Request {
        path: "/vod/abc/1080p/seg9.ts",
        client_ip: Some("203.0.113.9".parse().unwrap()),
        country: None,
        now: T0 + 10,
    };
    let token = verify(t, &ring, &request, &Policy::default()).unwrap();
    assert_eq!(token.token_id().to_string(), link.token_id);
    assert_eq!((token.subject(), token.channel(), token.key_id()), (Some("viewer-7"), Some("email"), link.key_id));
    let elsewhere = Request { client_ip: Some("203.0.113.10".parse().unwrap()), ..request };
    assert_eq!(verify(t, &ring, &elsewhere, &Policy::default()).unwrap_err(), Reason::Ip, "the IP binding holds");
    server.stop().await;
}

#[tokio::test]
async fn token_ids_are_unique() {
    let server = Server::start().await;
    server.published("abc", "/vod/abc/").await;
    let mut links = server.links().await;
    let mut ids = std::collections::HashSet::new();
    for _ in 0..50 {
        let link = links.mint(auth(req("abc"), MINTER)).await.unwrap().into_inner().link.unwrap();
        assert!(ids.insert(link.token_id));
    }
    server.stop().await;
}

#[tokio::test]
async fn publish_gate_and_request_errors() {
    let server = Server::start().await;
    server.published("abc", "/vod/abc/").await;
    let mut assets = server.assets().await;
    let draft = pb::PutAssetRequest { id: "draft".into(), path: "/vod/draft/".into(), entry: String::new() };
    assets.put(auth(draft, OPERATOR)).await.unwrap();
    let mut links = server.links().await;

    assert_status(links.mint(auth(req("nope"), MINTER)).await, Code::NotFound, "asset \"nope\" does not exist");
    assert_status(links.mint(auth(req("draft"), MINTER)).await, Code::FailedPrecondition, "is DRAFT, not PUBLISHED");
    let cases = [
        (pb::MintRequest { ttl_secs: 10, ..req("abc") }, "ttl_secs 10 is outside policy \"public\""),
        (pb::MintRequest { policy: "gold".into(), ..req("abc") }, "unknown policy \"gold\""),
        (pb::MintRequest { policy: "paid".into(), ..req("abc") }, "requires a subject"),
        (pb::MintRequest { policy: "paid".into(), subject: "v".into(), ..req("abc") }, "requires client_ip"),
        (pb::MintRequest { scope: "/vod/xyz/".into(), ..req("abc") }, "outside asset"),
        (pb::MintRequest { base_url: "edge.test".into(), ..req("abc") }, "base_url"),
        (pb::MintRequest { channel: "Bad Channel".into(), ..req("abc") }, "channel"),
    ];
    for (r, needle) in cases {
        assert_status(links.mint(auth(r, MINTER)).await, Code::InvalidArgument, needle);
    }

    // Archiving closes the gate again.
    let archive =
        pb::SetAssetStateRequest { id: "abc".into(), state: pb::AssetState::Archived.into(), expected_revision: 0 };
    assets.set_state(auth(archive, OPERATOR)).await.unwrap();
    assert_status(links.mint(auth(req("abc"), MINTER)).await, Code::FailedPrecondition, "ARCHIVED");
    server.stop().await;
}

#[tokio::test]
async fn batch_of_1000_mints_and_audits_once() {
    let server = Server::start().await;
    server.published("abc", "/vod/abc/").await;
    let mut links = server.links().await;
    let requests: Vec<_> = (0..1000)
        .map(|i| pb::MintRequest { subject: format!("v{i}"), channel: "email".into(), ..req("abc") })
        .collect();
    let out = links.mint_batch(auth(pb::MintBatchRequest { requests }, MINTER)).await.unwrap().into_inner().links;
    assert_eq!(out.len(), 1000);
    let ring = server.ring().await;
    let request = Request { path: "/vod/abc/master.m3u8", client_ip: None, country: None, now: T0 + 1 };
    for (i, link) in out.iter().enumerate() {
        let t = verify(&link.token, &ring, &request, &Policy::default()).unwrap();
        assert_eq!(t.subject(), Some(format!("v{i}").as_str()));
    }
    let mut audit = server.audit().await;
    let q = pb::ListAuditRequest { action: pb::AuditAction::MintBatch.into(), ..Default::default() };
    let events = audit.list(auth(q, OPERATOR)).await.unwrap().into_inner().events;
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].count, events[0].channel.as_str(), events[0].target.as_str()), (1000, "email", "asset:abc"));
    server.stop().await;
}

#[tokio::test]
async fn batch_is_all_or_nothing() {
    let server = Server::start().await;
    server.published("abc", "/vod/abc/").await;
    let mut links = server.links().await;
    let mut requests = vec![req("abc"); 5];
    requests[3].ttl_secs = 5;
    let r = links.mint_batch(auth(pb::MintBatchRequest { requests }, MINTER)).await;
    assert_status(r, Code::InvalidArgument, "requests[3]: ttl_secs 5");
    let r = links.mint_batch(auth(pb::MintBatchRequest { requests: vec![req("abc"), req("gone")] }, MINTER)).await;
    assert_status(r, Code::NotFound, "requests[1]: asset \"gone\"");
    let r = links.mint_batch(auth(pb::MintBatchRequest { requests: vec![] }, MINTER)).await;
    assert_status(r, Code::InvalidArgument, "1 to 2000 requests");
    let r = links.mint_batch(auth(pb::MintBatchRequest { requests: vec![req("abc"); 2001] }, MINTER)).await;
    assert_status(r, Code::InvalidArgument, "got 2001");

    let mut audit = server.audit().await;
    let q = pb::ListAuditRequest { action: pb::AuditAction::MintBatch.into(), ..Default::default() };
    assert!(
        audit.list(auth(q, OPERATOR)).await.unwrap().into_inner().events.is_empty(),
        "rejected batches leave no trace"
    );
    server.stop().await;
}
