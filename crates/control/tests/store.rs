//! The redb backend directly: atomic batches, the change log API the edge
//! sync stream will replay (`log_since`, `snapshot`), and pruning.

use stile_control::auth::Role;
use stile_control::model::{
    ApiKey, Asset, AssetState, AuditAction, AuditEvent, ChangeKind, KeyState, Revocation, Target,
};
use stile_control::store::{AuditQuery, Batch, LogRead, RedbStore, Retention, Store, StoreError, Write};

fn revoke(token_id: u64, expires_at: u64) -> Write {
    let r = Revocation {
        version: 0,
        target: Target::Token { token_id },
        reason: "r".into(),
        actor: "t".into(),
        created_at: 10,
        expires_at,
    };
    Write::Append { at: 10, actor: "t".into(), kind: ChangeKind::Revocation(r) }
}

fn asset(revision: u64) -> Asset {
    Asset {
        id: "a".into(),
        path: "/a/".into(),
        entry: String::new(),
        state: AssetState::Draft,
        revision,
        created_at: 1,
        updated_at: 1,
        updated_by: "t".into(),
    }
}

fn open() -> (tempfile::TempDir, RedbStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("s.redb")).unwrap();
    (dir, store)
}

#[tokio::test]
async fn a_failed_precondition_writes_nothing() {
    let (_dir, store) = open();
    store
        .commit(Batch { writes: vec![Write::PutAsset { asset: asset(1), expected_revision: 0 }], audit: vec![] })
        .await
        .unwrap();
    let event = AuditEvent::new(1, "t", AuditAction::Revoke, "x".into(), String::new());
    let batch = Batch {
        writes: vec![revoke(1, 100), Write::PutAsset { asset: asset(2), expected_revision: 7 }],
        audit: vec![event],
    };
    let err = store.commit(batch).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(ref m) if m.contains("revision 1, expected 7")), "{err:?}");
    assert_eq!(store.version().await.unwrap(), 0, "the append before the failed write was rolled back");
    assert!(store.audit(AuditQuery { limit: 10, ..Default::default() }).await.unwrap().is_empty());
    assert_eq!(store.asset("a".into()).await.unwrap().unwrap().revision, 1);

    let key = ApiKey { name: "k".into(), role: Role::Minter, sha256: [1; 32], created_at: 1, created_by: "t".into() };
    store.commit(Batch { writes: vec![Write::PutApiKey(key.clone())], audit: vec![] }).await.unwrap();
    let dup = Batch { writes: vec![Write::PutApiKey(ApiKey { sha256: [2; 32], ..key })], audit: vec![] };
    assert!(matches!(store.commit(dup).await, Err(StoreError::Conflict(_))));
    assert!(store.api_key([2; 32]).await.unwrap().is_none());
}

#[tokio::test]
async fn log_since_snapshot_and_pruning() {
    let (_dir, store) = open();
    for i in 1..=5 {
        let committed = store.commit(Batch { writes: vec![revoke(i, 100 * i)], audit: vec![] }).await.unwrap();
        assert_eq!(committed.changes[0].version, i, "versions from 1 without gaps");
    }
    let LogRead::Changes(tail) = store.log_since(3, 10).await.unwrap() else { panic!() };
    assert_eq!(tail.iter().map(|c| c.version).collect::<Vec<_>>(), [4, 5]);
    let LogRead::Changes(page) = store.log_since(0, 2).await.unwrap() else { panic!() };
    assert_eq!(page.len(), 2);
    assert_eq!(store.log_since(5, 10).await.unwrap(), LogRead::Changes(vec![]));
    assert_eq!(store.log_since(9, 10).await.unwrap(), LogRead::Ahead { current: 5 });

    let retention = Retention { log_entries: 2, audit_events: 10, audit_max_age_secs: 1000 };
    let pruned = store.prune(250, retention).await.unwrap();
    assert_eq!((pruned.revocations, pruned.log_entries), (2, 3), "expired at 100 and 200; log keeps 2");
    assert_eq!(store.log_since(2, 10).await.unwrap(), LogRead::Compacted { oldest: 4 });
    assert!(matches!(store.log_since(3, 10).await.unwrap(), LogRead::Changes(c) if c.len() == 2));
    assert_eq!(store.version().await.unwrap(), 5, "pruning never changes versions");

    let snapshot = store.snapshot().await.unwrap();
    assert_eq!(snapshot.version, 5);
    let live: Vec<_> = snapshot.revocations.iter().map(|r| r.version).collect();
    assert_eq!(live, [3, 4, 5]);
    let next = store.commit(Batch { writes: vec![revoke(6, 600)], audit: vec![] }).await.unwrap();
    assert_eq!(next.changes[0].version, 6);
    let key_change =
        Write::Append { at: 1, actor: "t".into(), kind: ChangeKind::Key { key_id: 1, state: KeyState::Retired } };
    store.commit(Batch { writes: vec![key_change], audit: vec![] }).await.unwrap();
    assert_eq!(store.revocations(0, 100).await.unwrap().len(), 4, "key changes are not revocations");
}

#[tokio::test]
async fn audit_retention() {
    let (_dir, store) = open();
    for at in 1..=6 {
        store
            .record_audit(vec![AuditEvent::new(at * 100, "t", AuditAction::Mint, "asset:a".into(), String::new())])
            .await
            .unwrap();
    }
    let retention = Retention { log_entries: 10, audit_events: 4, audit_max_age_secs: 250 };
    let pruned = store.prune(600, retention).await.unwrap();
    assert_eq!(pruned.audit_events, 3, "two beyond max_events, then one older than 350");
    let left = store.audit(AuditQuery { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(left.iter().map(|e| e.at).collect::<Vec<_>>(), [600, 500, 400]);
}
