//! Everything survives a restart on the same redb file.

mod common;

use common::*;
use stile_control::store::Store;
use stile_proto::v1 as pb;
use stile_token::{Policy, Request, verify};

#[tokio::test]
async fn state_survives_restart() {
    let server = Server::start().await;
    server.published("abc", "/vod/abc/").await;
    let mut api = server.api_keys().await;
    let created = api
        .create(auth(
            pb::CreateApiKeyRequest { name: "shop".into(), role: pb::Role::Minter.into(), ..Default::default() },
            ADMIN,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut links = server.links().await;
    let link = links
        .mint(auth(pb::MintRequest { asset_id: "abc".into(), ..Default::default() }, &created.key))
        .await
        .unwrap()
        .into_inner()
        .link
        .unwrap();
    let mut keys = server.keys().await;
    keys.rotate(auth(pb::RotateKeyRequest::default(), OPERATOR)).await.unwrap();
    let mut rev = server.revocations().await;
    let target = pb::RevocationTarget { target: Some(pb::revocation_target::Target::TokenId(link.token_id.clone())) };
    let revoked = rev
        .revoke(auth(pb::RevokeRequest { target: Some(target), reason: "r".into(), ..Default::default() }, OPERATOR))
        .await
        .unwrap()
        .into_inner();
    let version = server.store.version().await.unwrap();
    let audit_before =
        server.audit().await.list(auth(pb::ListAuditRequest::default(), OPERATOR)).await.unwrap().into_inner().events;

    let (dir, clock) = server.stop().await;
    let server = Server::start_in(dir, clock).await;

    assert_eq!(server.store.version().await.unwrap(), version, "no change on restart (key already active)");
    let asset =
        server.assets().await.get(auth(pb::GetAssetRequest { id: "abc".into() }, OPERATOR)).await.unwrap().into_inner();
    assert_eq!(asset.asset.unwrap().state(), pb::AssetState::Published);
    let listed = server
        .revocations()
        .await
        .list(auth(pb::ListRevocationsRequest::default(), OPERATOR))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.revocations, vec![revoked.revocation.unwrap()]);
    let key_list =
        server.keys().await.list(auth(pb::ListKeysRequest::default(), OPERATOR)).await.unwrap().into_inner().keys;
    assert_eq!(
        key_list.iter().map(|k| (k.key_id, k.state())).collect::<Vec<_>>(),
        [(1, pb::KeyState::VerifyOnly), (2, pb::KeyState::Active)]
    );
    let audit_after =
        server.audit().await.list(auth(pb::ListAuditRequest::default(), OPERATOR)).await.unwrap().into_inner().events;
    assert_eq!(audit_after, audit_before, "audit survives, mint events included");

    // Keys survive with their secrets: old links still verify, the API key still works.
    let ring = server.ring().await;
    let req = Request { path: "/vod/abc/master.m3u8", client_ip: None, country: None, now: T0 + 1 };
    verify(&link.token, &ring, &req, &Policy::default()).unwrap();
    let again = server
        .links()
        .await
        .mint(auth(pb::MintRequest { asset_id: "abc".into(), ..Default::default() }, &created.key))
        .await;
    assert_eq!(again.unwrap().into_inner().link.unwrap().key_id, 2);
    server.stop().await;
}
