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
