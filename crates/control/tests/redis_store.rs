//! The Redis backend beyond the shared storage contract (`store.rs`): several
//! control-plane replicas (stores) on one Redis commit concurrently and see
//! each other's changes in order, without gaps; `redis-server` killed with
//! SIGKILL and restarted from its AOF loses no acknowledged commit; while it
//! is down commits fail with `Unavailable` and reads for minting fall back to
//! what was read before; everything recovers without reconnecting by hand.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use stile_control::config::RedisConfig;
use stile_control::model::{Asset, AssetState, AuditAction, AuditEvent, ChangeKind, Revocation, Target};
use stile_control::store::{AuditQuery, Batch, LogRead, RedisStore, ReplicaBus, Store, StoreError, Write};
use stile_tests::redis::{Persistence, RedisServer};
use tokio::time::Instant;

fn config(server: &RedisServer) -> RedisConfig {
    RedisConfig { url: server.url(), connect_timeout_ms: 500, command_timeout_ms: 1_000, ..RedisConfig::default() }
}

async fn store(server: &RedisServer) -> Arc<RedisStore> {
    Arc::new(RedisStore::connect(&config(server), 1_000_000).await.expect("connect"))
}

fn revoke(token_id: u64) -> Batch {
    let r = Revocation {
        version: 0,
        target: Target::Token { token_id },
        reason: "r".into(),
        actor: "t".into(),
        created_at: 10,
        expires_at: 4_000_000_000,
    };
    Batch { writes: vec![Write::Append { at: 10, actor: "t".into(), kind: ChangeKind::Revocation(r) }], audit: vec![] }
}

fn token_of(change: &stile_control::model::Change) -> u64 {
    match &change.kind {
        ChangeKind::Revocation(Revocation { target: Target::Token { token_id }, .. }) => *token_id,
        other => panic!("unexpected change {other:?}"),
    }
}

async fn whole_log(store: &dyn Store) -> Vec<stile_control::model::Change> {
    let mut out = Vec::new();
    loop {
        let after = out.last().map_or(0, |c: &stile_control::model::Change| c.version);
        match store.log_since(after, 64).await.unwrap() {
            LogRead::Changes(c) if c.is_empty() => return out,
            LogRead::Changes(c) => out.extend(c),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn replicas_commit_concurrently_without_gaps_and_see_each_other() {
    let server = RedisServer::start();
    let (a, b) = (store(&server).await, store(&server).await);
    let mut b_versions = b.watch_versions();

    // 2 replicas × 4 writers × 25 revocations, all at once.
    let mut tasks = Vec::new();
    for (r, s) in [&a, &b].into_iter().enumerate() {
        for w in 0..4u64 {
            let s = Arc::clone(s);
            tasks.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..25u64 {
                    let token = (r as u64) << 32 | w << 16 | i;
                    let c = s.commit(revoke(token)).await.unwrap();
                    acked.push((c.changes[0].version, token));
                }
                acked
            }));
        }
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    acked.sort();
    let versions: Vec<u64> = acked.iter().map(|(v, _)| *v).collect();
    assert_eq!(versions, (1..=200).collect::<Vec<_>>(), "every commit got its own version, no gaps");

    // Either replica reads the same log, in order, matching what each commit returned.
    for s in [&a, &b] {
        let log = whole_log(s.as_ref()).await;
        assert_eq!(log.iter().map(|c| (c.version, token_of(c))).collect::<Vec<_>>(), acked);
    }
    assert_eq!(b.revocations(0, 1000).await.unwrap().len(), 200);

    // B's tail publishes what A commits, promptly.
    let c = a.commit(revoke(1)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while *b_versions.borrow_and_update() < c.changes[0].version {
        tokio::time::timeout_at(deadline, b_versions.changed()).await.expect("B saw A's commit").unwrap();
    }
    let LogRead::Changes(tail) = b.log_since(200, 10).await.unwrap() else { panic!() };
    assert_eq!(tail.iter().map(|c| c.version).collect::<Vec<_>>(), [201]);
}

#[tokio::test]
async fn concurrent_preconditions_let_exactly_one_writer_win() {
    let server = RedisServer::start();
    let (a, b) = (store(&server).await, store(&server).await);
    let asset = |revision, path: &str| Asset {
        id: "x".into(),
        path: path.into(),
        entry: String::new(),
        state: AssetState::Draft,
        revision,
        created_at: 1,
        updated_at: 1,
        updated_by: "t".into(),
    };
    a.commit(Batch { writes: vec![Write::PutAsset { asset: asset(1, "/x/"), expected_revision: 0 }], audit: vec![] })
        .await
        .unwrap();
    for round in 1..=20u64 {
        let put = |s: Arc<RedisStore>, path: &'static str| {
            let batch = Batch {
                writes: vec![Write::PutAsset { asset: asset(round + 1, path), expected_revision: round }],
                audit: vec![AuditEvent::new(1, "t", AuditAction::AssetPut, "asset:x".into(), path.into())],
            };
            tokio::spawn(async move { s.commit(batch).await })
        };
        let (ra, rb) = (put(Arc::clone(&a), "/a/"), put(Arc::clone(&b), "/b/"));
        let results = [ra.await.unwrap(), rb.await.unwrap()];
        let wins = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "round {round}: {results:?}");
        assert!(results.iter().any(|r| matches!(r, Err(StoreError::Conflict(_)))));
        assert_eq!(a.asset("x".into()).await.unwrap().unwrap().revision, round + 1);
    }
    let events = b.audit(AuditQuery { limit: 100, ..Default::default() }).await.unwrap();
    assert_eq!(events.len(), 20, "only the winners' audit events were written");
}

#[tokio::test]
async fn sigkill_and_aof_restart_lose_no_acknowledged_commit() {
    let mut server = RedisServer::start_with(Persistence::AofAlways);
    let s = store(&server).await;
    // Writers commit as fast as they can; Redis is killed under them once they
    // have 30 acknowledged commits between them.
    let committed = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..3u64 {
        let (s, committed) = (Arc::clone(&s), Arc::clone(&committed));
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0.. {
                match s.commit(revoke(w << 32 | i)).await {
                    Ok(c) => {
                        acked.push((c.changes[0].version, w << 32 | i));
                        committed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(StoreError::Unavailable(_)) => return acked,
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
            acked
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while committed.load(Ordering::Relaxed) < 30 {
        assert!(Instant::now() < deadline, "the writers did not get going");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill();
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert!(acked.len() >= 30, "{} commits", acked.len());

    server.restart();
    // The same store object: its connections come back by themselves.
    let deadline = Instant::now() + Duration::from_secs(15);
    let version = loop {
        match s.version().await {
            Ok(v) => break v,
            Err(e) => {
                assert!(Instant::now() < deadline, "Redis did not come back: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let max_acked = acked.iter().map(|(v, _)| *v).max().unwrap();
    assert!(version >= max_acked, "version {version} < acknowledged {max_acked}");
    let log = whole_log(s.as_ref()).await;
    assert_eq!(log.iter().map(|c| c.version).collect::<Vec<_>>(), (1..=version).collect::<Vec<_>>(), "no gaps");
    let present: BTreeSet<(u64, u64)> = log.iter().map(|c| (c.version, token_of(c))).collect();
    for a in &acked {
        assert!(present.contains(a), "acknowledged revocation {a:?} was lost");
    }
    let live: BTreeSet<u64> = s.revocations(0, 100_000).await.unwrap().iter().map(|r| r.version).collect();
    assert!(acked.iter().all(|(v, _)| live.contains(v)));
    // And it keeps going.
    assert_eq!(s.commit(revoke(7)).await.unwrap().changes[0].version, version + 1);
}

#[tokio::test]
async fn outage_fails_commits_serves_cached_reads_and_buffers_audit() {
    let mut server = RedisServer::start_with(Persistence::AofAlways);
    let s = store(&server).await;
    let asset = Asset {
        id: "v".into(),
        path: "/v/".into(),
        entry: String::new(),
        state: AssetState::Published,
        revision: 1,
        created_at: 1,
        updated_at: 1,
        updated_by: "t".into(),
    };
    s.commit(Batch { writes: vec![Write::PutAsset { asset: asset.clone(), expected_revision: 0 }], audit: vec![] })
        .await
        .unwrap();
    assert_eq!(s.asset("v".into()).await.unwrap().as_ref(), Some(&asset), "read once: now cached");

    server.kill();
    let started = Instant::now();
    let err = s.commit(revoke(1)).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "failing took {:?}", started.elapsed());
    assert_eq!(s.asset("v".into()).await.unwrap().as_ref(), Some(&asset), "served from the cache");
    assert!(matches!(s.asset("never-read".into()).await, Err(StoreError::Unavailable(_))));
    for at in 1..=3 {
        let e = AuditEvent::new(at, "shop", AuditAction::Mint, "asset:v".into(), String::new());
        s.record_audit(vec![e]).await.expect("buffered while Redis is down");
    }
    assert!(matches!(s.version().await, Err(StoreError::Unavailable(_))));

    server.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    let committed = loop {
        match s.commit(revoke(2)).await {
            Ok(c) => break c,
            Err(StoreError::Unavailable(e)) => {
                assert!(Instant::now() < deadline, "commits did not recover: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    };
    assert_eq!(committed.changes[0].version, 1, "the refused revocation was not applied");
    // The buffered mint events reach Redis, oldest first, once it answers.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let events = s.audit(AuditQuery { limit: 10, ..Default::default() }).await.unwrap();
        if events.len() == 3 {
            assert_eq!(events.iter().map(|e| (e.seq, e.at)).collect::<Vec<_>>(), [(3, 3), (2, 2), (1, 1)]);
            break;
        }
        assert!(Instant::now() < deadline, "buffered audit events not flushed: {events:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn audit_buffer_is_bounded_and_stale_reads_can_be_disabled() {
    let mut server = RedisServer::start();
    let cfg = RedisConfig { audit_buffer: 2, stale_read_secs: 0, ..config(&server) };
    let s = RedisStore::connect(&cfg, 1_000_000).await.unwrap();
    let asset = Asset {
        id: "v".into(),
        path: "/v/".into(),
        entry: String::new(),
        state: AssetState::Published,
        revision: 1,
        created_at: 1,
        updated_at: 1,
        updated_by: "t".into(),
    };
    s.commit(Batch { writes: vec![Write::PutAsset { asset, expected_revision: 0 }], audit: vec![] }).await.unwrap();
    s.asset("v".into()).await.unwrap();
    server.kill();
    assert!(matches!(s.asset("v".into()).await, Err(StoreError::Unavailable(_))), "no stale reads when disabled");
    let e = || AuditEvent::new(1, "shop", AuditAction::Mint, "asset:v".into(), String::new());
    s.record_audit(vec![e(), e()]).await.unwrap();
    assert!(matches!(s.record_audit(vec![e()]).await, Err(StoreError::Unavailable(_))), "the buffer is full");
}

#[tokio::test]
async fn connecting_to_nothing_is_unavailable() {
    let server = RedisServer::start();
    let url = server.url();
    drop(server);
    let cfg = RedisConfig { url, connect_timeout_ms: 300, ..RedisConfig::default() };
    let err = RedisStore::connect(&cfg, 10).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn key_prefixes_separate_deployments_and_share_one_hash_slot() {
    let server = RedisServer::start();
    let blue = RedisStore::connect(&RedisConfig { key_prefix: "blue".into(), ..config(&server) }, 10).await.unwrap();
    let green = RedisStore::connect(&RedisConfig { key_prefix: "green".into(), ..config(&server) }, 10).await.unwrap();
    blue.commit(revoke(1)).await.unwrap();
    assert_eq!((blue.version().await.unwrap(), green.version().await.unwrap()), (1, 0));
    let keys = server.command(&["KEYS", "*"]);
    assert!(keys.contains("{blue}:log") && keys.contains("{blue}:version"), "{keys}");
    assert!(!keys.lines().any(|l| !l.starts_with('*') && !l.starts_with('$') && !l.starts_with("{blue}:")), "{keys}");
    // The entry id is the version.
    assert!(server.command(&["XRANGE", "{blue}:log", "-", "+"]).contains("1-0"));
}

#[tokio::test]
async fn the_acl_user_in_deploy_redis_conf_is_enough() {
    let conf = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/redis.conf")).unwrap();
    let rule = conf
        .lines()
        .find_map(|l| l.trim_start_matches('#').trim().strip_prefix("user stile "))
        .expect("deploy/redis.conf documents a `user stile` ACL");
    let server = RedisServer::start();
    let mut args = vec!["ACL", "SETUSER", "stile"];
    args.extend(rule.split_whitespace());
    assert!(server.command(&args).starts_with("+OK"), "ACL SETUSER {rule}");
    let url = server.url().replace("redis://", "redis://stile:CHANGE-ME@");
    let s = RedisStore::connect(&RedisConfig { url, ..config(&server) }, 10).await.expect("connect as stile");
    s.commit(revoke(1)).await.unwrap();
    let e = AuditEvent::new(1, "shop", AuditAction::Mint, "asset:v".into(), String::new());
    s.record_audit(vec![e]).await.unwrap();
    assert!(matches!(s.log_since(0, 10).await.unwrap(), LogRead::Changes(c) if c.len() == 1));
    assert_eq!(s.snapshot().await.unwrap().revocations.len(), 1);
    assert_eq!(s.audit(AuditQuery { limit: 10, ..Default::default() }).await.unwrap().len(), 1);
    let retention = stile_control::store::Retention { log_entries: 10, audit_events: 10, audit_max_age_secs: 10 };
    s.prune(5, retention).await.unwrap();
    s.publish_fleet("r1".into(), "[]".into(), 1000).await.expect("fleet views as stile");
    assert_eq!(s.fleet_views().await.unwrap(), [("r1".to_owned(), "[]".to_owned())]);
    let mut tail = s.watch_versions();
    let other = RedisStore::connect(&config(&server), 10).await.unwrap();
    other.commit(revoke(2)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while *tail.borrow_and_update() < 2 {
        tokio::time::timeout_at(deadline, tail.changed()).await.expect("the tail works as stile").unwrap();
    }
}

/// Replicas share their fleet views; an expired view drops out (and its
/// replica from the index).
#[tokio::test]
async fn fleet_views_are_shared_and_expire() {
    let server = RedisServer::start();
    let a = RedisStore::connect(&config(&server), 10).await.unwrap();
    let b = RedisStore::connect(&config(&server), 10).await.unwrap();
    a.publish_fleet("a".into(), r#"[{"edge_id":"e1"}]"#.into(), 60_000).await.unwrap();
    b.publish_fleet("b".into(), r#"[{"edge_id":"e2"}]"#.into(), 100).await.unwrap();
    let mut views = a.fleet_views().await.unwrap();
    views.sort();
    assert_eq!(views, [("a".into(), r#"[{"edge_id":"e1"}]"#.into()), ("b".into(), r#"[{"edge_id":"e2"}]"#.into())]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(b.fleet_views().await.unwrap(), [("a".to_owned(), r#"[{"edge_id":"e1"}]"#.to_owned())]);
    assert_eq!(server.command(&["SMEMBERS", "{stile}:fleet:replicas"]).trim(), "*1\r\n$1\r\na".trim());
}

#[tokio::test]
async fn wait_replicas_unmet_is_unavailable_and_mint_audit_does_not_wait() {
    let server = RedisServer::start();
    let cfg = RedisConfig { wait_replicas: 1, wait_timeout_ms: 100, ..config(&server) };
    let s = RedisStore::connect(&cfg, 10).await.unwrap();
    let err = s.commit(revoke(1)).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(ref m) if m.contains("0 of 1")), "{err:?}");
    assert_eq!(s.version().await.unwrap(), 1, "the change is on the primary, just not acknowledged");
    let e = AuditEvent::new(1, "shop", AuditAction::Mint, "asset:v".into(), String::new());
    s.record_audit(vec![e]).await.expect("mint audit events are not held to wait_replicas");
}
