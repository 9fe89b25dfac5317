//! PurgeService: every target kind logged durably as a purge (never a
//! revocation), audited, retained for `sync.purge_retention_secs`, the
//! operator role required, and every error path.

mod common;

use common::*;
use stile_control::model::{ChangeKind, Purge, PurgeTarget};
use stile_control::store::{LogRead, Store};
use stile_proto::v1 as pb;
use stile_proto::v1::purge_request::Target as T;
use tonic::Code;

fn purge(target: T) -> pb::PurgeRequest {
    pb::PurgeRequest { target: Some(target), reason: "bad encode".into(), ..Default::default() }
}

#[tokio::test]
async fn every_target_is_logged_as_a_purge_and_audited() {
    let server = Server::start().await;
    server.published("abc", "/vod/abc/").await;
    let mut p = server.purges().await;
    let start = server.store.version().await.unwrap();

    let r = p.purge(auth(purge(T::Prefix("/vod/abc/".into())), OPERATOR)).await.unwrap().into_inner();
    assert_eq!(r.version, start + 1);
    let stored = r.purge.unwrap();
    assert_eq!((stored.actor.as_str(), stored.reason.as_str(), stored.created_at), ("ops", "bad encode", T0));
    assert_eq!(stored.expires_at, T0 + 7 * 86_400, "retained for sync.purge_retention_secs");
    assert!(r.confirmation.is_none() && r.waited_ms == 0, "no wait asked");
    p.purge(auth(purge(T::Path("/vod/abc/v1/seg3.ts".into())), ADMIN)).await.unwrap();
    let r = p.purge(auth(purge(T::AssetId("abc".into())), OPERATOR)).await.unwrap().into_inner();
    let asset = r.purge.unwrap();
    assert_eq!(asset.asset_id, "abc");
    assert_eq!(asset.target.unwrap().target, Some(pb::purge_target::Target::Prefix("/vod/abc/".into())));

    // Durable before the answer; purges, not revocations.
    let LogRead::Changes(changes) = server.store.log_since(start, 10).await.unwrap() else { panic!("log") };
    let purges: Vec<_> = changes
        .iter()
        .map(|c| match &c.kind {
            ChangeKind::Purge(Purge { target, asset_id, .. }) => (target.clone(), asset_id.as_str()),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        purges,
        [
            (PurgeTarget::Prefix("/vod/abc/".into()), ""),
            (PurgeTarget::Path("/vod/abc/v1/seg3.ts".into()), ""),
            (PurgeTarget::Prefix("/vod/abc/".into()), "abc"),
        ]
    );
    assert!(server.store.revocations(0, 10).await.unwrap().is_empty());
    assert_eq!(server.store.snapshot().await.unwrap().purges.len(), 3);

    let mut audit = server.audit().await;
    let req = pb::ListAuditRequest { action: pb::AuditAction::Purge.into(), ..Default::default() };
    let events = audit.list(auth(req, OPERATOR)).await.unwrap().into_inner().events;
    let seen: Vec<_> = events.iter().map(|e| (e.actor.as_str(), e.target.as_str())).collect();
    assert_eq!(seen, [("ops", "asset:abc"), ("admin", "path:/vod/abc/v1/seg3.ts"), ("ops", "prefix:/vod/abc/")]);
}

#[tokio::test]
async fn bad_targets_and_roles_are_refused_and_record_nothing() {
    let server = Server::start().await;
    let mut p = server.purges().await;
    let start = server.store.version().await.unwrap();
    let invalid = Code::InvalidArgument;
    for (target, needle) in [
        (T::Prefix(String::new()), "prefix is empty"),
        (T::Prefix("vod/abc/".into()), "prefix \"vod/abc/\": "),
        (T::Prefix("/vod/abc".into()), "must end with '/'"),
        (T::Prefix("/vod/caf%c3%a9/".into()), "is not canonical: the edges cache it as \"/vod/caf%C3%A9/\""),
        (T::Prefix("/vod/../x/".into()), "dot segment"),
        (T::Path("/vod/abc/".into()), "ends with '/'"),
        (T::Path(String::new()), "path is empty"),
        (T::AssetId("Not An Id".into()), "asset_id \"Not An Id\" must be"),
    ] {
        assert_status(p.purge(auth(purge(target), OPERATOR)).await, invalid, needle);
    }
    let none = pb::PurgeRequest { reason: "x".into(), ..Default::default() };
    assert_status(p.purge(auth(none, OPERATOR)).await, invalid, "target is required");
    let long = pb::PurgeRequest { reason: "x".repeat(201), ..purge(T::Prefix("/vod/".into())) };
    assert_status(p.purge(auth(long, OPERATOR)).await, invalid, "reason must be at most 200 characters");
    assert_status(p.purge(auth(purge(T::AssetId("nope".into())), OPERATOR)).await, Code::NotFound, "\"nope\"");
    let bad_expect = pb::PurgeRequest {
        wait: true,
        expect: Some(pb::WaitExpectation { min_edges: None, edges: vec!["Bad Id".into()] }),
        ..purge(T::Prefix("/vod/".into()))
    };
    assert_status(p.purge(auth(bad_expect, OPERATOR)).await, invalid, "expect.edges");

    for key in [MINTER, EDGE] {
        assert_status(
            p.purge(auth(purge(T::Prefix("/vod/".into())), key)).await,
            Code::PermissionDenied,
            "PurgeService.Purge needs role operator or admin",
        );
    }
    assert_eq!(server.store.version().await.unwrap(), start, "nothing was recorded");
}

#[tokio::test]
async fn a_wait_with_no_edge_is_confirmed_by_none() {
    let server = Server::start().await;
    let mut p = server.purges().await;
    let req = pb::PurgeRequest { wait: true, wait_timeout_ms: 50, ..purge(T::Path("/vod/a.ts".into())) };
    let r = p.purge(auth(req, OPERATOR)).await.unwrap().into_inner();
    let c = r.confirmation.unwrap();
    assert_eq!(c.verdict(), pb::ConfirmationVerdict::None);
    assert_eq!((c.version, c.confirmed), (r.version, 0));
    assert!(c.summary.starts_with("confirmed by 0 edges"), "{}", c.summary);
}
