//! RevocationService: every target kind, durability in the change log, list,
//! status and every error path.

mod common;

use common::*;
use stile_control::model::{ChangeKind, Target};
use stile_control::store::{LogRead, Store};
use stile_proto::v1 as pb;
use stile_proto::v1::revocation_target::Target as T;
use tonic::Code;

fn revoke(target: T, reason: &str) -> pb::RevokeRequest {
    pb::RevokeRequest {
        target: Some(pb::RevocationTarget { target: Some(target) }),
        reason: reason.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn every_kind_is_logged_durably() {
    let server = Server::start().await;
    let mut rev = server.revocations().await;
    let start = server.store.version().await.unwrap();

    let r =
        rev.revoke(auth(revoke(T::TokenId("00000000000000FF".into()), "leaked"), OPERATOR)).await.unwrap().into_inner();
    assert_eq!(r.version, start + 1);
    let stored = r.revocation.unwrap();
    assert_eq!(stored.target.unwrap().target, Some(T::TokenId("00000000000000ff".into())));
    assert_eq!((stored.actor.as_str(), stored.reason.as_str(), stored.created_at), ("ops", "leaked", T0));
    assert_eq!(stored.expires_at, T0 + 86_400 + 300, "issued-before + longest TTL + margin");

    let subject = pb::SubjectTarget { subject: "viewer-1".into(), issued_before: T0 - 100 };
    let r = rev.revoke(auth(revoke(T::Subject(subject), "refund"), OPERATOR)).await.unwrap().into_inner();
    assert_eq!(r.revocation.unwrap().expires_at, T0 - 100 + 86_400 + 300);
    let prefix = pb::PathPrefixTarget { prefix: "/vod/%61bc/".into(), issued_before: 0, purge: true };
    let r = rev.revoke(auth(revoke(T::PathPrefix(prefix), "policy change"), ADMIN)).await.unwrap().into_inner();
    assert_eq!(r.version, start + 3);

    // Durable before the answer: the store already holds the log entries.
    let LogRead::Changes(changes) = server.store.log_since(start, 10).await.unwrap() else { panic!("log") };
    let targets: Vec<_> = changes
        .iter()
        .map(|c| match &c.kind {
            ChangeKind::Revocation(r) => r.target.clone(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        targets,
        [
            Target::Token { token_id: 0xff },
            Target::Subject { subject: "viewer-1".into(), issued_before: T0 - 100 },
            Target::PathPrefix { prefix: "/vod/abc/".into(), issued_before: T0, purge: true },
        ]
    );

    let listed =
        rev.list(auth(pb::ListRevocationsRequest::default(), OPERATOR)).await.unwrap().into_inner().revocations;
    assert_eq!(listed.len(), 3);
    let page =
        rev.list(auth(pb::ListRevocationsRequest { after_version: start + 1, limit: 1 }, OPERATOR)).await.unwrap();
    assert_eq!(page.into_inner().revocations[0].version, start + 2);

    let status = rev.status(auth(pb::RevocationStatusRequest { version: 0 }, OPERATOR)).await.unwrap().into_inner();
    assert_eq!((status.current_version, status.version, status.committed), (start + 3, start + 3, true));
    let status =
        rev.status(auth(pb::RevocationStatusRequest { version: start + 9 }, OPERATOR)).await.unwrap().into_inner();
    assert!(!status.committed);

    // Expired revocations disappear from the list (and are pruned).
    server.clock.advance(std::time::Duration::from_secs(86_400 + 250));
    let listed =
        rev.list(auth(pb::ListRevocationsRequest::default(), OPERATOR)).await.unwrap().into_inner().revocations;
    let versions: Vec<_> = listed.iter().map(|r| r.version).collect();
    assert_eq!(versions, [start + 1, start + 3], "the subject revocation (issued before T0 - 100) expired");
    server.stop().await;
}

#[tokio::test]
async fn bad_requests_write_nothing() {
    let server = Server::start().await;
    let mut rev = server.revocations().await;
    let before = server.store.version().await.unwrap();
    let cases = [
        (pb::RevokeRequest { target: None, reason: "x".into(), ..Default::default() }, "target is required"),
        (revoke(T::TokenId("xyz".into()), "r"), "16 hex digits"),
        (revoke(T::TokenId("0123456789abcdef".into()), ""), "reason must be 1 to 200"),
        (revoke(T::TokenId("0123456789abcdef".into()), &"r".repeat(201)), "got 201"),
        (revoke(T::Subject(pb::SubjectTarget { subject: String::new(), issued_before: 0 }), "r"), "subject must be"),
        (revoke(T::Subject(pb::SubjectTarget { subject: "v".into(), issued_before: T0 + 60 }), "r"), "in the future"),
        (
            revoke(T::PathPrefix(pb::PathPrefixTarget { prefix: "/vod/abc".into(), ..Default::default() }), "r"),
            "must end with '/'",
        ),
        (
            revoke(T::PathPrefix(pb::PathPrefixTarget { prefix: "/vod/../x/".into(), ..Default::default() }), "r"),
            "path_prefix",
        ),
    ];
    for (r, needle) in cases {
        assert_status(rev.revoke(auth(r, OPERATOR)).await, Code::InvalidArgument, needle);
    }
    assert_status(rev.revoke(auth(revoke(T::KeyId(99), "r"), OPERATOR)).await, Code::NotFound, "signing key 99");
    assert_status(rev.revoke(auth(revoke(T::KeyId(1), "r"), OPERATOR)).await, Code::FailedPrecondition, "rotate first");
    assert_eq!(server.store.version().await.unwrap(), before, "nothing was written");
    server.stop().await;
}

#[tokio::test]
async fn revoking_a_key_retires_it() {
    let server = Server::start().await;
    let mut keys = server.keys().await;
    keys.rotate(auth(pb::RotateKeyRequest::default(), OPERATOR)).await.unwrap();
    let mut rev = server.revocations().await;
    let r = rev.revoke(auth(revoke(T::KeyId(1), "compromised"), OPERATOR)).await.unwrap().into_inner();
    assert_eq!(r.revocation.unwrap().target.unwrap().target, Some(T::KeyId(1)));
    let list =
        keys.list(auth(pb::ListKeysRequest { include_retired: true }, OPERATOR)).await.unwrap().into_inner().keys;
    assert_eq!(list[0].state(), pb::KeyState::Retired);
    server.stop().await;
}

fn batch(targets: Vec<T>, reason: &str) -> pb::RevokeBatchRequest {
    pb::RevokeBatchRequest {
        targets: targets.into_iter().map(|t| pb::RevocationTarget { target: Some(t) }).collect(),
        reason: reason.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_batch_is_one_commit_with_consecutive_versions_and_one_audit_event() {
    let server = Server::start().await;
    let mut rev = server.revocations().await;
    let start = server.store.version().await.unwrap();
    let mut targets: Vec<T> = (0..1000u64).map(|i| T::TokenId(format!("{:016X}", 0xab00_0000 + i))).collect();
    targets.push(T::Subject(pb::SubjectTarget { subject: "viewer-9".into(), issued_before: T0 - 5 }));
    targets.push(T::PathPrefix(pb::PathPrefixTarget { prefix: "/vod/x/".into(), issued_before: 0, purge: false }));
    let r = rev.revoke_batch(auth(batch(targets, "leaked batch"), OPERATOR)).await.unwrap().into_inner();
    assert_eq!((r.count, r.first_version, r.last_version), (1002, start + 1, start + 1002));
    assert!(r.confirmation.is_none() && r.lagging.is_empty(), "no wait asked");

    // Durable before the answer, in order, each with the caller and the reason.
    let LogRead::Changes(changes) = server.store.log_since(start, 2000).await.unwrap() else { panic!("log") };
    assert_eq!(changes.len(), 1002);
    for (i, c) in changes.iter().enumerate() {
        assert_eq!(c.version, start + 1 + i as u64);
        let ChangeKind::Revocation(rv) = &c.kind else { panic!("{c:?}") };
        assert_eq!((rv.actor.as_str(), rv.reason.as_str(), rv.version), ("ops", "leaked batch", c.version));
        if i < 1000 {
            assert_eq!(rv.target, Target::Token { token_id: 0xab00_0000 + i as u64 });
        }
    }
    let ChangeKind::Revocation(last) = &changes[1001].kind else { panic!() };
    assert_eq!(last.target, Target::PathPrefix { prefix: "/vod/x/".into(), issued_before: T0, purge: false });

    let events = server
        .audit()
        .await
        .list(auth(pb::ListAuditRequest { action: pb::AuditAction::RevokeBatch.into(), ..Default::default() }, ADMIN))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(events.len(), 1, "one event for the batch");
    let e = &events[0];
    assert_eq!(
        (e.actor.as_str(), e.count, e.target.as_str(), e.detail.as_str()),
        ("ops", 1002, "tokens:1000,subjects:1,prefixes:1", "leaked batch")
    );
    server.stop().await;
}

#[tokio::test]
async fn a_bad_batch_writes_nothing_and_names_the_target() {
    let server = Server::start().await;
    let mut rev = server.revocations().await;
    let before = server.store.version().await.unwrap();
    let ok = || T::TokenId("0123456789abcdef".into());
    let too_many = (0..50_001u64).map(|i| T::TokenId(format!("{i:016x}"))).collect();
    let cases = [
        (batch(vec![], "r"), "0 given; a batch holds 1 to 50000"),
        (batch(too_many, "r"), "50001 given"),
        (batch(vec![ok(), ok(), T::TokenId("xyz".into())], "r"), "targets[2]: token_id \"xyz\" must be 16 hex digits"),
        (batch(vec![ok(), T::KeyId(1)], "r"), "targets[1]: key 1 is retired with Revoke"),
        (
            batch(vec![T::Subject(pb::SubjectTarget { subject: "v".into(), issued_before: T0 + 60 })], "r"),
            "targets[0]: issued_before",
        ),
        (batch(vec![ok()], ""), "reason must be 1 to 200"),
    ];
    for (r, needle) in cases {
        assert_status(rev.revoke_batch(auth(r, OPERATOR)).await, Code::InvalidArgument, needle);
    }
    assert_status(
        rev.revoke_batch(auth(batch(vec![ok()], "r"), MINTER)).await,
        Code::PermissionDenied,
        "RevocationService.RevokeBatch",
    );
    assert_eq!(server.store.version().await.unwrap(), before, "nothing was written");
    server.stop().await;
}
