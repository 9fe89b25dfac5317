//! Authentication and the role table over the wire; API key management.

mod common;

use common::*;
use stile_proto::v1 as pb;
use tonic::Code;

#[tokio::test]
async fn unauthenticated_requests_are_refused() {
    let server = Server::start().await;
    let mut keys = server.keys().await;
    let r = keys.list(tonic::Request::new(pb::ListKeysRequest::default())).await;
    assert_status(r, Code::Unauthenticated, "authorization: Bearer <api key>");
    let mut bad = tonic::Request::new(pb::ListKeysRequest::default());
    bad.metadata_mut().insert("authorization", "Basic abc".parse().unwrap());
    assert_status(keys.list(bad).await, Code::Unauthenticated, "malformed authorization");
    assert_status(keys.list(auth(pb::ListKeysRequest::default(), "stk_wrong")).await, Code::Unauthenticated, "unknown");
    let mut lower = tonic::Request::new(pb::ListKeysRequest::default());
    lower.metadata_mut().insert("authorization", format!("bearer {OPERATOR}").parse().unwrap());
    assert!(keys.list(lower).await.is_ok(), "the scheme is case-insensitive");
    server.stop().await;
}

#[tokio::test]
async fn roles_are_enforced_per_rpc() {
    let server = Server::start().await;
    server.published("abc", "/vod/abc/").await;
    let denied = Code::PermissionDenied;

    let mut rev = server.revocations().await;
    let revoke = || pb::RevokeRequest {
        target: Some(pb::RevocationTarget {
            target: Some(pb::revocation_target::Target::TokenId("0123456789abcdef".into())),
        }),
        reason: "test".into(),
        ..Default::default()
    };
    assert_status(
        rev.revoke(auth(revoke(), MINTER)).await,
        denied,
        "has role minter; RevocationService.Revoke needs role operator or admin",
    );
    assert_status(rev.revoke(auth(revoke(), EDGE)).await, denied, "role edge");
    assert!(rev.revoke(auth(revoke(), OPERATOR)).await.is_ok());
    assert!(rev.revoke(auth(revoke(), ADMIN)).await.is_ok());

    let mut keys = server.keys().await;
    assert_status(keys.rotate(auth(pb::RotateKeyRequest::default(), MINTER)).await, denied, "KeyService.Rotate");
    assert_status(keys.list(auth(pb::ListKeysRequest::default(), EDGE)).await, denied, "KeyService.List");

    let mut links = server.links().await;
    let mint = || pb::MintRequest { asset_id: "abc".into(), ..Default::default() };
    assert_status(links.mint(auth(mint(), OPERATOR)).await, denied, "LinkService.Mint needs role minter or admin");
    assert_status(links.mint(auth(mint(), EDGE)).await, denied, "role edge");
    assert!(links.mint(auth(mint(), ADMIN)).await.is_ok());

    let mut assets = server.assets().await;
    let put = pb::PutAssetRequest { id: "x".into(), path: "/x/".into(), entry: String::new() };
    assert_status(assets.put(auth(put, MINTER)).await, denied, "AssetService.Put");
    assert!(assets.get(auth(pb::GetAssetRequest { id: "abc".into() }, MINTER)).await.is_ok(), "minters read assets");
    assert_status(assets.get(auth(pb::GetAssetRequest { id: "abc".into() }, EDGE)).await, denied, "AssetService.Get");

    let mut audit = server.audit().await;
    assert_status(audit.list(auth(pb::ListAuditRequest::default(), MINTER)).await, denied, "AuditService.List");

    let mut edges = server.edges().await;
    assert_status(edges.list(auth(pb::ListEdgesRequest::default(), EDGE)).await, denied, "EdgeService.List");
    let hello = pb::EdgeMessage {
        kind: Some(pb::edge_message::Kind::Hello(pb::EdgeHello { edge_id: "e1".into(), ..Default::default() })),
    };
    let sync = edges.sync(auth(tokio_stream::iter(vec![hello.clone()]), MINTER)).await;
    assert_status(sync, denied, "EdgeService.Sync needs role edge or admin");
    let mut sync = edges.sync(auth(tokio_stream::iter(vec![hello]), EDGE)).await.expect("edges may sync").into_inner();
    let first = sync.message().await.expect("stream").expect("a message");
    assert!(matches!(first.kind, Some(pb::control_message::Kind::Snapshot(_))), "a new edge gets a snapshot");

    let mut api = server.api_keys().await;
    let create = pb::CreateApiKeyRequest { name: "x".into(), role: pb::Role::Minter.into(), ..Default::default() };
    assert_status(api.create(auth(create, OPERATOR)).await, denied, "ApiKeyService.Create needs role admin");
    server.stop().await;
}

#[tokio::test]
async fn api_keys_lifecycle() {
    let server = Server::start().await;
    server.published("abc", "/vod/abc/").await;
    let mut api = server.api_keys().await;
    let create = |name: &str, role: pb::Role| pb::CreateApiKeyRequest {
        name: name.into(),
        role: role.into(),
        ..Default::default()
    };
    let out = api.create(auth(create("shop", pb::Role::Minter), ADMIN)).await.unwrap().into_inner();
    assert!(out.key.starts_with("stk_"));
    let info = out.info.unwrap();
    assert_eq!((info.name.as_str(), info.created_by.as_str(), info.created_at), ("shop", "admin", T0));

    let mut links = server.links().await;
    let mint = pb::MintRequest { asset_id: "abc".into(), ..Default::default() };
    links.mint(auth(mint.clone(), &out.key)).await.expect("new key mints");
    let mut audit = server.audit().await;
    let q = pb::ListAuditRequest { actor: "shop".into(), ..Default::default() };
    assert_eq!(audit.list(auth(q, ADMIN)).await.unwrap().into_inner().events.len(), 1, "actor is the key's name");

    assert_status(api.create(auth(create("shop", pb::Role::Operator), ADMIN)).await, Code::AlreadyExists, "taken");
    assert_status(api.create(auth(create("ops", pb::Role::Operator), ADMIN)).await, Code::AlreadyExists, "config file");
    assert_status(api.create(auth(create("Bad Name", pb::Role::Minter), ADMIN)).await, Code::InvalidArgument, "name");
    assert_status(api.create(auth(create("x", pb::Role::Unspecified), ADMIN)).await, Code::InvalidArgument, "role");

    let listed = api.list(auth(pb::ListApiKeysRequest {}, ADMIN)).await.unwrap().into_inner().keys;
    let names: Vec<_> = listed.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["admin", "backend", "edge-1", "ops", "shop"]);

    api.delete(auth(pb::DeleteApiKeyRequest { name: "shop".into() }, ADMIN)).await.unwrap();
    assert_status(links.mint(auth(mint, &out.key)).await, Code::Unauthenticated, "unknown or deleted");
    let r = api.delete(auth(pb::DeleteApiKeyRequest { name: "shop".into() }, ADMIN)).await;
    assert_status(r, Code::NotFound, "does not exist");
    let r = api.delete(auth(pb::DeleteApiKeyRequest { name: "ops".into() }, ADMIN)).await;
    assert_status(r, Code::FailedPrecondition, "config file");
    server.stop().await;
}
