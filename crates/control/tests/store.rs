//! The storage trait's contract, run against every backend: the embedded
//! redb file and a real `redis-server` (started on a free port per test):
//! atomic batches, the change log API the edge sync stream replays
//! (`log_since`, `snapshot`), and pruning.

use std::future::Future;
use std::sync::Arc;

use stile_control::auth::Role;
use stile_control::config::RedisConfig;
use stile_control::model::{
    ApiKey, Asset, AssetState, AuditAction, AuditEvent, ChangeKind, ForeignKey, KeyState, MAX_FOREIGN_KEYS, Purge,
    PurgeTarget, Revocation, Target,
};
use stile_control::store::{
    AssetQuery, AuditQuery, Batch, LogRead, RedbStore, RedisStore, Retention, Store, StoreError, Write,
};
use stile_tests::redis::RedisServer;

/// Defines `redb` and `redis` tests running the same body against each backend.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod redb {
            $(#[tokio::test] async fn $name() { super::with_redb(super::$name).await })*
        }
        mod redis {
            $(#[tokio::test] async fn $name() { super::with_redis(super::$name).await })*
        }
    };
}

both_backends!(
    a_failed_precondition_writes_nothing,
    log_since_snapshot_and_pruning,
    audit_retention,
    api_keys_signing_keys_and_assets,
    batches_see_their_own_earlier_writes,
    audit_queries_page_newest_first,
    concurrent_audit_records_are_all_read,
    purges_are_logged_retained_and_floored,
    expired_revocations_are_pruned_whenever_they_expire,
    a_long_log_is_trimmed_to_its_retention,
    foreign_keys_are_stored_logged_bounded_and_removed,
);

async fn with_redb<F, Fut>(test: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("s.redb")).unwrap();
    test(Arc::new(store)).await;
}

async fn with_redis<F, Fut>(test: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()>,
{
    let server = RedisServer::start();
    let config = RedisConfig { url: server.url(), ..RedisConfig::default() };
    let store = RedisStore::connect(&config, 1_000_000).await.unwrap();
    test(Arc::new(store)).await;
}

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

fn purge(target: PurgeTarget, asset_id: &str, expires_at: u64) -> Write {
    let p = Purge {
        version: 0,
        target,
        asset_id: asset_id.into(),
        reason: "stale".into(),
        actor: "ops".into(),
        created_at: 10,
        expires_at,
    };
    Write::Append { at: 10, actor: "ops".into(), kind: ChangeKind::Purge(p) }
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

async fn a_failed_precondition_writes_nothing(store: Arc<dyn Store>) {
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

    let key = ApiKey {
        name: "k".into(),
        role: Role::Minter,
        sha256: [1; 32],
        created_at: 1,
        created_by: "t".into(),
        edge_ids: vec![],
    };
    store.commit(Batch { writes: vec![Write::PutApiKey(key.clone())], audit: vec![] }).await.unwrap();
    let dup = Batch { writes: vec![Write::PutApiKey(ApiKey { sha256: [2; 32], ..key })], audit: vec![] };
    assert!(matches!(store.commit(dup).await, Err(StoreError::Conflict(_))));
    assert!(store.api_key([2; 32]).await.unwrap().is_none());
}

async fn log_since_snapshot_and_pruning(store: Arc<dyn Store>) {
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
    let key_change = Write::Append {
        at: 1,
        actor: "t".into(),
        kind: ChangeKind::Key { key_id: 1, state: KeyState::Retired, algorithm: stile_token::Algorithm::HmacSha256 },
    };
    store.commit(Batch { writes: vec![key_change], audit: vec![] }).await.unwrap();
    assert_eq!(store.revocations(0, 100).await.unwrap().len(), 4, "key changes are not revocations");
}

async fn audit_retention(store: Arc<dyn Store>) {
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

/// Mints record their audit events without waiting for a write (redb queues
/// them for a group commit): reads and commits still see every one, once.
async fn concurrent_audit_records_are_all_read(store: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..8u64)
        .map(|t| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for i in 0..50 {
                    let e = AuditEvent::new(100, &format!("t{t}"), AuditAction::Mint, "asset:a".into(), format!("{i}"));
                    store.record_audit(vec![e]).await.unwrap();
                    if i % 10 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    let revoked = AuditEvent::new(100, "ops", AuditAction::Revoke, "token:1".into(), String::new());
    store.commit(Batch { writes: vec![revoke(1, 1000)], audit: vec![revoked] }).await.unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let events = store.audit(AuditQuery { limit: 1000, ..Default::default() }).await.unwrap();
    assert_eq!(events.len(), 401, "400 mints and the revocation");
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] > w[1]), "unique sequence numbers, newest first: {seqs:?}");
    for t in 0..8 {
        let mine: Vec<&str> =
            events.iter().rev().filter(|e| e.actor == format!("t{t}")).map(|e| e.detail.as_str()).collect();
        let expected: Vec<String> = (0..50).map(|i| i.to_string()).collect();
        assert_eq!(mine, expected, "each caller's events in its order");
    }
}

/// Queued mint audit events are made durable by the next commit: they
/// survive closing and reopening the file.
#[tokio::test]
async fn redb_queued_audit_events_survive_a_reopen_after_a_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    {
        let store = RedbStore::open(&path).unwrap();
        for i in 0..20 {
            let e = AuditEvent::new(100, "minter", AuditAction::Mint, "asset:a".into(), format!("{i}"));
            store.record_audit(vec![e]).await.unwrap();
        }
        store.commit(Batch { writes: vec![revoke(1, 1000)], audit: vec![] }).await.unwrap();
    }
    // The scheduled flush holds the database weakly: the file reopens at once.
    let store = RedbStore::open(&path).unwrap();
    let events = store.audit(AuditQuery { limit: 100, ..Default::default() }).await.unwrap();
    assert_eq!(events.len(), 20);
}

fn signing_key(id: u32, state: KeyState) -> stile_control::model::SigningKey {
    stile_control::model::SigningKey {
        id,
        state,
        algorithm: stile_token::Algorithm::HmacSha256,
        secret: stile_token::SecretKey::from_bytes([id as u8; stile_token::KEY_LEN]),
        created_at: 1,
        activated_at: None,
        retired_at: None,
    }
}

fn api_key(name: &str, hash: u8) -> ApiKey {
    ApiKey {
        name: name.into(),
        role: Role::Operator,
        sha256: [hash; 32],
        created_at: 1,
        created_by: "t".into(),
        edge_ids: vec![],
    }
}

async fn commit(store: &Arc<dyn Store>, writes: Vec<Write>) -> Result<Vec<stile_control::model::Change>, StoreError> {
    store.commit(Batch { writes, audit: vec![] }).await.map(|c| c.changes)
}

async fn api_keys_signing_keys_and_assets(store: Arc<dyn Store>) {
    commit(&store, vec![Write::PutApiKey(api_key("b", 2)), Write::PutApiKey(api_key("a", 1))]).await.unwrap();
    let names: Vec<_> = store.api_keys().await.unwrap().into_iter().map(|k| k.name).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(store.api_key([1; 32]).await.unwrap(), Some(api_key("a", 1)));
    commit(&store, vec![Write::DeleteApiKey { name: "a".into() }]).await.unwrap();
    assert_eq!(store.api_key([1; 32]).await.unwrap(), None);
    let err = commit(&store, vec![Write::DeleteApiKey { name: "a".into() }]).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(ref m) if m.contains("does not exist")), "{err:?}");

    let put = |id, state, create| Write::PutKey { key: signing_key(id, state), create };
    commit(&store, vec![put(2, KeyState::Pending, true), put(1, KeyState::Active, true)]).await.unwrap();
    assert_eq!(
        store.signing_keys().await.unwrap(),
        [signing_key(1, KeyState::Active), signing_key(2, KeyState::Pending)]
    );
    let err = commit(&store, vec![put(1, KeyState::Active, true)]).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(ref m) if m.contains("already exists")), "{err:?}");
    let err = commit(&store, vec![put(3, KeyState::Active, false)]).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(ref m) if m.contains("does not exist")), "{err:?}");
    let retire = Write::Append {
        at: 5,
        actor: "t".into(),
        kind: ChangeKind::Key { key_id: 1, state: KeyState::Retired, algorithm: stile_token::Algorithm::HmacSha256 },
    };
    let changes = commit(&store, vec![put(1, KeyState::Retired, false), retire]).await.unwrap();
    assert_eq!(changes[0].version, 1);
    let snapshot = store.snapshot().await.unwrap();
    assert_eq!(snapshot.keys, [signing_key(2, KeyState::Pending)], "retired keys do not verify");
    assert_eq!(store.log_since(0, 10).await.unwrap(), LogRead::Changes(changes), "the log holds what commit returned");

    for (id, state) in [("c", AssetState::Published), ("a", AssetState::Draft), ("b", AssetState::Published)] {
        let asset = Asset { id: id.into(), path: format!("/{id}/"), state, ..asset(1) };
        commit(&store, vec![Write::PutAsset { asset, expected_revision: 0 }]).await.unwrap();
    }
    let ids = |assets: Vec<Asset>| assets.into_iter().map(|a| a.id).collect::<Vec<_>>();
    let q = |after: &str, state, limit| AssetQuery { after_id: after.into(), state, limit };
    assert_eq!(ids(store.assets(q("", None, 10)).await.unwrap()), ["a", "b", "c"]);
    assert_eq!(ids(store.assets(q("a", None, 10)).await.unwrap()), ["b", "c"]);
    assert_eq!(ids(store.assets(q("", Some(AssetState::Published), 1)).await.unwrap()), ["b"]);
    assert_eq!(ids(store.assets(q("b", Some(AssetState::Draft), 10)).await.unwrap()), Vec::<String>::new());
    assert_eq!(store.asset("b".into()).await.unwrap().unwrap().path, "/b/");
    assert_eq!(store.asset("zz".into()).await.unwrap(), None);
}

async fn batches_see_their_own_earlier_writes(store: Arc<dyn Store>) {
    let writes = vec![
        Write::PutAsset { asset: asset(1), expected_revision: 0 },
        Write::PutAsset { asset: asset(2), expected_revision: 1 },
        Write::PutApiKey(api_key("k", 1)),
        Write::DeleteApiKey { name: "k".into() },
        Write::PutApiKey(api_key("k", 2)),
    ];
    commit(&store, writes).await.unwrap();
    assert_eq!(store.asset("a".into()).await.unwrap().unwrap().revision, 2);
    assert_eq!(store.api_key([1; 32]).await.unwrap(), None);
    assert_eq!(store.api_key([2; 32]).await.unwrap().unwrap().name, "k");

    let dup = vec![Write::PutApiKey(api_key("x", 3)), revoke(1, 100), Write::PutApiKey(api_key("x", 4))];
    let err = commit(&store, dup).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(ref m) if m.contains("\"x\" is taken")), "{err:?}");
    assert_eq!(store.api_key([3; 32]).await.unwrap(), None, "nothing of the rejected batch was written");
    assert_eq!(store.version().await.unwrap(), 0);
    assert!(store.revocations(0, 10).await.unwrap().is_empty());
}

async fn audit_queries_page_newest_first(store: Arc<dyn Store>) {
    let event = |at, actor: &str, action| AuditEvent::new(at, actor, action, "x".into(), String::new());
    store
        .record_audit(vec![event(10, "shop", AuditAction::Mint), event(20, "ops", AuditAction::Revoke)])
        .await
        .unwrap();
    let mut minted = event(30, "shop", AuditAction::Mint);
    minted.channel = "email".into();
    store.record_audit(vec![minted]).await.unwrap();
    let batch = Batch { writes: vec![revoke(7, 100)], audit: vec![event(40, "ops", AuditAction::Revoke)] };
    store.commit(batch).await.unwrap();

    let list = |q: AuditQuery| {
        let store = Arc::clone(&store);
        async move { store.audit(AuditQuery { limit: q.limit.max(1), ..q }).await.unwrap() }
    };
    let all = list(AuditQuery { limit: 10, ..Default::default() }).await;
    assert_eq!(all.iter().map(|e| (e.seq, e.at)).collect::<Vec<_>>(), [(4, 40), (3, 30), (2, 20), (1, 10)]);
    let page = list(AuditQuery { limit: 2, before_seq: Some(4), ..Default::default() }).await;
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 2]);
    let shop = list(AuditQuery { limit: 10, actor: Some("shop".into()), ..Default::default() }).await;
    assert_eq!(shop.iter().map(|e| e.at).collect::<Vec<_>>(), [30, 10]);
    let revokes = list(AuditQuery {
        limit: 10,
        action: Some(AuditAction::Revoke),
        since: 15,
        until: Some(40),
        ..Default::default()
    })
    .await;
    assert_eq!(revokes.iter().map(|e| e.at).collect::<Vec<_>>(), [20]);
    let email = list(AuditQuery { limit: 10, channel: Some("email".into()), ..Default::default() }).await;
    assert_eq!(email.iter().map(|e| e.seq).collect::<Vec<_>>(), [3]);
}

async fn purges_are_logged_retained_and_floored(store: Arc<dyn Store>) {
    let writes = vec![
        purge(PurgeTarget::Prefix("/vod/abc/".into()), "abc", 100),
        revoke(1, 1000),
        purge(PurgeTarget::Path("/vod/x/seg3.ts".into()), "", 300),
    ];
    let committed = store.commit(Batch { writes, audit: vec![] }).await.unwrap();
    assert_eq!(committed.changes.iter().map(|c| c.version).collect::<Vec<_>>(), [1, 2, 3]);
    let ChangeKind::Purge(first) = &committed.changes[0].kind else { panic!("{:?}", committed.changes[0]) };
    assert_eq!((first.version, first.asset_id.as_str()), (1, "abc"), "the store writes the version in");

    // The log carries them with their versions, exactly as committed.
    let LogRead::Changes(log) = store.log_since(0, 10).await.unwrap() else { panic!() };
    assert_eq!(log, committed.changes);
    assert!(matches!(&log[2].kind, ChangeKind::Purge(p) if p.target == PurgeTarget::Path("/vod/x/seg3.ts".into())
        && p.version == 3 && p.reason == "stale" && p.expires_at == 300));

    // The snapshot holds them in version order; purges are not revocations.
    let snap = store.snapshot().await.unwrap();
    assert_eq!(snap.purges.iter().map(|p| p.version).collect::<Vec<_>>(), [1, 3]);
    assert_eq!(snap.purges[0], *first);
    assert_eq!(snap.purge_floor, 0);
    assert_eq!(store.revocations(0, 10).await.unwrap().iter().map(|r| r.version).collect::<Vec<_>>(), [2]);

    // Past its retention a purge leaves the snapshot and raises the floor to its version.
    let retention = Retention { log_entries: 100, audit_events: 10, audit_max_age_secs: 1000 };
    let pruned = store.prune(150, retention).await.unwrap();
    assert_eq!((pruned.purges, pruned.revocations, pruned.log_entries), (1, 0, 0));
    let snap = store.snapshot().await.unwrap();
    assert_eq!((snap.purges.iter().map(|p| p.version).collect::<Vec<_>>(), snap.purge_floor), (vec![3], 1));
    let pruned = store.prune(400, retention).await.unwrap();
    assert_eq!(pruned.purges, 1);
    let snap = store.snapshot().await.unwrap();
    assert!(snap.purges.is_empty());
    assert_eq!((snap.purge_floor, snap.version), (3, 3), "the floor only rises; versions never change");
    assert_eq!(store.prune(500, retention).await.unwrap().purges, 0);
    assert_eq!(store.snapshot().await.unwrap().purge_floor, 3);
}

/// A prune that skips reading the revocations while none can have expired
/// (redb keeps the earliest expiry) still drops each one once it has: also
/// one committed after a prune with an earlier expiry than every other.
async fn expired_revocations_are_pruned_whenever_they_expire(store: Arc<dyn Store>) {
    let retention = Retention { log_entries: 1_000, audit_events: 1_000, audit_max_age_secs: 1_000_000 };
    commit(&store, vec![revoke(1, 100), revoke(2, 200), revoke(3, 300)]).await.unwrap();
    assert_eq!(store.prune(150, retention).await.unwrap().revocations, 1);
    assert_eq!(store.prune(160, retention).await.unwrap().revocations, 0);
    commit(&store, vec![revoke(4, 170)]).await.unwrap();
    assert_eq!(store.prune(180, retention).await.unwrap().revocations, 1, "the later one with the earlier expiry");
    assert_eq!(store.prune(250, retention).await.unwrap().revocations, 1);
    let left: Vec<u64> = store.snapshot().await.unwrap().revocations.iter().map(|r| r.expires_at).collect();
    assert_eq!(left, [300]);
}

/// A mass revocation's log, far past its retention, is trimmed whole (redb: in
/// transactions of at most 10,000 entries, so writers get in between); nothing else moves.
async fn a_long_log_is_trimmed_to_its_retention(store: Arc<dyn Store>) {
    let far = 4_000_000_000;
    for batch in 0..5u64 {
        let writes = (1..=5_000).map(|i| revoke(batch * 5_000 + i, far)).collect();
        commit(&store, writes).await.unwrap();
    }
    commit(&store, (25_001..=25_003).map(|i| revoke(i, far)).collect()).await.unwrap();
    let retention = Retention { log_entries: 3, audit_events: 1_000, audit_max_age_secs: 1_000_000 };
    let pruned = store.prune(1_000, retention).await.unwrap();
    assert_eq!((pruned.log_entries, pruned.revocations), (25_000, 0));
    assert_eq!(store.log_since(0, 10).await.unwrap(), LogRead::Compacted { oldest: 25_001 });
    let LogRead::Changes(tail) = store.log_since(25_000, 10).await.unwrap() else { panic!("the kept tail") };
    assert_eq!(tail.iter().map(|c| c.version).collect::<Vec<_>>(), [25_001, 25_002, 25_003]);
    assert_eq!(store.snapshot().await.unwrap().revocations.len(), 25_003);
    assert_eq!(store.prune(1_000, retention).await.unwrap().log_entries, 0, "nothing left to trim");
    assert_eq!(commit(&store, vec![revoke(25_004, far)]).await.unwrap()[0].version, 25_004);
}

fn foreign(format: &str, name: &str) -> ForeignKey {
    ForeignKey {
        format: format.into(),
        name: name.into(),
        key: format!("material-of-{name}"),
        created_at: 5,
        created_by: "ops".into(),
    }
}

fn foreign_change(format: &str, name: &str, removed: bool) -> Write {
    Write::Append {
        at: 5,
        actor: "ops".into(),
        kind: ChangeKind::ForeignKey { format: format.into(), name: name.into(), removed },
    }
}

/// Foreign keys: added with their change (the material in the store and the
/// snapshot, never in the log), at most [`MAX_FOREIGN_KEYS`] a format, names
/// unique within a format, removed with theirs; a refused batch writes nothing.
async fn foreign_keys_are_stored_logged_bounded_and_removed(store: Arc<dyn Store>) {
    let add = |format: &str, name: &str| Batch {
        writes: vec![Write::PutForeignKey(foreign(format, name)), foreign_change(format, name, false)],
        audit: vec![AuditEvent::new(
            5,
            "ops",
            AuditAction::ForeignKeyAdd,
            format!("foreign:{format}/{name}"),
            String::new(),
        )],
    };
    let committed = store.commit(add("bunny", "zone")).await.unwrap();
    assert_eq!(committed.changes.len(), 1);
    assert_eq!(
        committed.changes[0].kind,
        ChangeKind::ForeignKey { format: "bunny".into(), name: "zone".into(), removed: false }
    );
    // The same name in another format is another key.
    store.commit(add("akamai", "zone")).await.unwrap();
    assert_eq!(store.foreign_keys().await.unwrap(), vec![foreign("akamai", "zone"), foreign("bunny", "zone")]);

    // A name taken, and a format full: refused, nothing written (the change before it included).
    let err = store.commit(add("bunny", "zone")).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(ref m) if m.contains("exists")), "{err:?}");
    for i in 1..MAX_FOREIGN_KEYS {
        store.commit(add("bunny", &format!("k{i}"))).await.unwrap();
    }
    let version = store.version().await.unwrap();
    let err = store.commit(add("bunny", "ninth")).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(ref m) if m.contains("keys already")), "{err:?}");
    assert_eq!(store.version().await.unwrap(), version);
    assert_eq!(store.foreign_keys().await.unwrap().len(), MAX_FOREIGN_KEYS + 1);

    // The snapshot holds them with their material; the log never does.
    let snapshot = store.snapshot().await.unwrap();
    assert_eq!(snapshot.version, version);
    assert_eq!(snapshot.foreign_keys, store.foreign_keys().await.unwrap());
    assert_eq!(store.snapshot_head().await.unwrap().foreign_keys.len(), MAX_FOREIGN_KEYS + 1);
    let LogRead::Changes(log) = store.log_since(0, 100).await.unwrap() else { panic!("log") };
    assert!(!format!("{log:?}").contains("material-of"), "{log:?}");

    // Removal: it must exist; a batch whose second removal fails removes nothing.
    let remove = |format: &str, name: &str| {
        vec![Write::DeleteForeignKey { format: format.into(), name: name.into() }, foreign_change(format, name, true)]
    };
    let mut writes = remove("bunny", "zone");
    writes.extend(remove("bunny", "absent"));
    let err = store.commit(Batch { writes, audit: vec![] }).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(ref m) if m.contains("does not exist")), "{err:?}");
    assert_eq!(store.foreign_keys().await.unwrap().len(), MAX_FOREIGN_KEYS + 1);
    let committed = store.commit(Batch { writes: remove("bunny", "zone"), audit: vec![] }).await.unwrap();
    assert_eq!(committed.changes[0].version, version + 1);
    let held = store.foreign_keys().await.unwrap();
    assert!(!held.iter().any(|k| k.format == "bunny" && k.name == "zone"), "{held:?}");
    // A freed slot takes a new key.
    store.commit(add("bunny", "ninth")).await.unwrap();
    let LogRead::Changes(log) = store.log_since(version, 10).await.unwrap() else { panic!("log") };
    let kinds: Vec<_> = log.into_iter().map(|c| c.kind).collect();
    assert_eq!(
        kinds,
        vec![
            ChangeKind::ForeignKey { format: "bunny".into(), name: "zone".into(), removed: true },
            ChangeKind::ForeignKey { format: "bunny".into(), name: "ninth".into(), removed: false },
        ]
    );
    let audit = store.audit(AuditQuery { action: Some(AuditAction::ForeignKeyAdd), limit: 100, ..Default::default() });
    let audit = audit.await.unwrap();
    assert_eq!(audit.len(), MAX_FOREIGN_KEYS + 2);
    assert!(!format!("{audit:?}").contains("material-of"), "{audit:?}");
}
