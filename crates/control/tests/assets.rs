//! AssetService: creation, validated state transitions, reads and errors.

mod common;

use common::*;
use stile_proto::v1 as pb;
use tonic::Code;

fn put(id: &str, path: &str, entry: &str) -> pb::PutAssetRequest {
    pb::PutAssetRequest { id: id.into(), path: path.into(), entry: entry.into() }
}

fn set(id: &str, state: pb::AssetState, expected_revision: u64) -> pb::SetAssetStateRequest {
    pb::SetAssetStateRequest { id: id.into(), state: state.into(), expected_revision }
}

#[tokio::test]
async fn put_creates_then_updates() {
    let server = Server::start().await;
    let mut assets = server.assets().await;
    let out = assets.put(auth(put("abc", "/vod/%61bc/", "master.m3u8"), OPERATOR)).await.unwrap().into_inner();
    assert!(out.created);
    let a = out.asset.unwrap();
    assert_eq!(
        (a.path.as_str(), a.state(), a.revision, a.updated_by.as_str()),
        ("/vod/abc/", pb::AssetState::Draft, 1, "ops")
    );
    server.clock.advance(std::time::Duration::from_secs(5));
    let out = assets.put(auth(put("abc", "/vod/abc/", "index.mpd"), ADMIN)).await.unwrap().into_inner();
    let a = out.asset.unwrap();
    assert!(!out.created);
    assert_eq!((a.entry.as_str(), a.revision, a.created_at, a.updated_at), ("index.mpd", 2, T0, T0 + 5));

    let bad = [
        (put("ABC", "/vod/x/", ""), "asset id"),
        (put("x", "vod/x/", ""), "path"),
        (put("x", "/vod/../etc/", ""), "path"),
        (put("x", "/vod/x", ""), "must end with '/'"),
        (put("x", "/vod/x/", "/abs.m3u8"), "relative"),
        (put("x", "/vod/x/", "a/../../b.m3u8"), "canonical"),
    ];
    for (r, needle) in bad {
        assert_status(assets.put(auth(r, OPERATOR)).await, Code::InvalidArgument, needle);
    }
    let moved = assets.put(auth(put("abc", "/vod/other/", ""), OPERATOR)).await;
    assert_status(moved, Code::FailedPrecondition, "a path cannot change");
    server.stop().await;
}

#[tokio::test]
async fn state_transitions_are_validated() {
    use pb::AssetState::*;
    let server = Server::start().await;
    let mut assets = server.assets().await;
    assets.put(auth(put("a", "/a/", ""), OPERATOR)).await.unwrap();

    assert_status(
        assets.set_state(auth(set("a", Published, 0), OPERATOR)).await,
        Code::FailedPrecondition,
        "cannot move from DRAFT to PUBLISHED",
    );
    assert_status(
        assets.set_state(auth(set("a", Draft, 0), OPERATOR)).await,
        Code::FailedPrecondition,
        "already DRAFT",
    );
    assert_status(
        assets.set_state(auth(set("a", Unspecified, 0), OPERATOR)).await,
        Code::InvalidArgument,
        "state must be",
    );
    assert_status(assets.set_state(auth(set("nope", Ready, 0), OPERATOR)).await, Code::NotFound, "does not exist");
    assert_status(assets.set_state(auth(set("a", Ready, 7), OPERATOR)).await, Code::Aborted, "revision 1, not 7");

    for (to, rev) in [(Ready, 1), (Published, 2), (Ready, 3), (Published, 4), (Archived, 5)] {
        let a = assets.set_state(auth(set("a", to, rev), OPERATOR)).await.unwrap().into_inner().asset.unwrap();
        assert_eq!((a.state(), a.revision), (to, rev + 1));
    }
    assert_status(
        assets.set_state(auth(set("a", Published, 0), OPERATOR)).await,
        Code::FailedPrecondition,
        "ARCHIVED to PUBLISHED",
    );
    assert_status(assets.put(auth(put("a", "/a/", "x.m3u8"), OPERATOR)).await, Code::FailedPrecondition, "ARCHIVED");

    let mut audit = server.audit().await;
    let q = pb::ListAuditRequest { action: pb::AuditAction::AssetState.into(), ..Default::default() };
    let events = audit.list(auth(q, OPERATOR)).await.unwrap().into_inner().events;
    let details: Vec<_> = events.iter().map(|e| e.detail.as_str()).collect();
    assert_eq!(
        details,
        ["PUBLISHED->ARCHIVED", "READY->PUBLISHED", "PUBLISHED->READY", "READY->PUBLISHED", "DRAFT->READY"]
    );
    server.stop().await;
}

#[tokio::test]
async fn get_and_list() {
    let server = Server::start().await;
    server.published("b", "/b/").await;
    let mut assets = server.assets().await;
    for id in ["a", "c", "d"] {
        assets.put(auth(put(id, &format!("/{id}/"), ""), OPERATOR)).await.unwrap();
    }
    let got = assets.get(auth(pb::GetAssetRequest { id: "b".into() }, MINTER)).await.unwrap().into_inner();
    assert_eq!(got.asset.unwrap().state(), pb::AssetState::Published);
    assert_status(assets.get(auth(pb::GetAssetRequest { id: "z".into() }, MINTER)).await, Code::NotFound, "\"z\"");

    let list = |state: pb::AssetState, after: &str, limit| pb::ListAssetsRequest {
        state: state.into(),
        after_id: after.into(),
        limit,
    };
    let ids = |r: pb::ListAssetsResponse| r.assets.into_iter().map(|a| a.id).collect::<Vec<_>>();
    assert_eq!(
        ids(assets.list(auth(list(pb::AssetState::Unspecified, "", 0), OPERATOR)).await.unwrap().into_inner()),
        ["a", "b", "c", "d"]
    );
    assert_eq!(
        ids(assets.list(auth(list(pb::AssetState::Unspecified, "b", 1), OPERATOR)).await.unwrap().into_inner()),
        ["c"]
    );
    assert_eq!(
        ids(assets.list(auth(list(pb::AssetState::Draft, "", 0), OPERATOR)).await.unwrap().into_inner()),
        ["a", "c", "d"]
    );
    let r = assets.list(auth(pb::ListAssetsRequest { state: 99, ..Default::default() }, OPERATOR)).await;
    assert_status(r, Code::InvalidArgument, "unknown asset state 99");
    server.stop().await;
}
