//! KeyService: rotation keeps old links verifying, listing never shows
//! secrets, retirement revokes; every error path.

mod common;

use common::*;
use stile_control::model::{ChangeKind, KeyState};
use stile_control::store::{LogRead, Store};
use stile_proto::v1 as pb;
use stile_token::{Policy, Reason, Request, verify};
use tonic::Code;

#[tokio::test]
async fn first_start_creates_an_active_key() {
    let server = Server::start().await;
    let mut keys = server.keys().await;
    let list = keys.list(auth(pb::ListKeysRequest::default(), OPERATOR)).await.unwrap().into_inner().keys;
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].key_id, list[0].state(), list[0].created_at, list[0].activated_at),
        (1, pb::KeyState::Active, T0, T0)
    );
    let LogRead::Changes(log) = server.store.log_since(0, 10).await.unwrap() else { panic!() };
    let kinds: Vec<_> = log.iter().map(|c| (c.version, c.actor.as_str(), c.kind.clone())).collect();
    assert_eq!(
        kinds,
        [
            (
                1,
                "system",
                ChangeKind::Key { key_id: 1, state: KeyState::Pending, algorithm: stile_token::Algorithm::HmacSha256 }
            ),
            (
                2,
                "system",
                ChangeKind::Key { key_id: 1, state: KeyState::Active, algorithm: stile_token::Algorithm::HmacSha256 }
            ),
        ]
    );
    server.stop().await;
}

#[tokio::test]
async fn rotate_then_retire() {
    let server = Server::start().await;
    server.published("abc", "/vod/abc/").await;
    let mut links = server.links().await;
    let mint = || pb::MintRequest { asset_id: "abc".into(), ..Default::default() };
    let old = links.mint(auth(mint(), MINTER)).await.unwrap().into_inner().link.unwrap();
    assert_eq!(old.key_id, 1);

    let mut keys = server.keys().await;
    server.clock.advance(std::time::Duration::from_secs(60));
    let rotated = keys
        .rotate(auth(pb::RotateKeyRequest { reason: "quarterly".into(), ..Default::default() }, OPERATOR))
        .await
        .unwrap()
        .into_inner();
    let new_key = rotated.key.unwrap();
    assert_eq!((new_key.key_id, new_key.state(), new_key.created_at), (2, pb::KeyState::Active, T0 + 60));
    let fresh = links.mint(auth(mint(), MINTER)).await.unwrap().into_inner().link.unwrap();
    assert_eq!(fresh.key_id, 2, "new links use the new key");

    let ring = server.ring().await;
    let req = Request { path: "/vod/abc/master.m3u8", client_ip: None, country: None, now: T0 + 61 };
    verify(&old.token, &ring, &req, &Policy::default()).expect("old links keep verifying");
    let list = keys.list(auth(pb::ListKeysRequest::default(), OPERATOR)).await.unwrap().into_inner().keys;
    let states: Vec<_> = list.iter().map(|k| (k.key_id, k.state())).collect();
    assert_eq!(states, [(1, pb::KeyState::VerifyOnly), (2, pb::KeyState::Active)]);

    let retire = |key_id, reason: &str| pb::RetireKeyRequest { key_id, reason: reason.into() };
    assert_status(
        keys.retire(auth(retire(2, "x"), OPERATOR)).await,
        Code::FailedPrecondition,
        "active minting key; rotate first",
    );
    assert_status(keys.retire(auth(retire(9, "x"), OPERATOR)).await, Code::NotFound, "signing key 9 does not exist");
    assert_status(keys.retire(auth(retire(1, ""), OPERATOR)).await, Code::InvalidArgument, "reason");
    let out = keys.retire(auth(retire(1, "rotation done"), OPERATOR)).await.unwrap().into_inner();
    let key = out.key.unwrap();
    assert_eq!((key.state(), key.retired_at), (pb::KeyState::Retired, T0 + 60));
    let revocation = out.revocation.unwrap();
    assert_eq!(revocation.version, out.version);
    assert_eq!(revocation.target.unwrap().target, Some(pb::revocation_target::Target::KeyId(1)));
    assert_status(keys.retire(auth(retire(1, "again"), OPERATOR)).await, Code::FailedPrecondition, "already retired");

    let ring = server.ring().await;
    assert_eq!(
        verify(&old.token, &ring, &req, &Policy::default()).unwrap_err(),
        Reason::UnknownKey,
        "a retired key verifies nothing"
    );
    let default_list = keys.list(auth(pb::ListKeysRequest::default(), OPERATOR)).await.unwrap().into_inner().keys;
    assert_eq!(default_list.len(), 1, "retired keys are hidden unless asked for");

    let snapshot = server.store.snapshot().await.unwrap();
    assert_eq!(snapshot.keys.iter().map(|k| k.id).collect::<Vec<_>>(), [2]);
    assert_eq!(snapshot.revocations.len(), 1);
    assert_eq!(snapshot.version, out.version);
    server.stop().await;
}
