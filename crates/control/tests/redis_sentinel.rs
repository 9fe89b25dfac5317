//! Sentinel discovery of the primary against real processes: a primary, two
//! replicas and a `redis-server --sentinel`. The control plane is given the
//! Sentinel (after an address where nothing listens) and a URL whose host is
//! not used; it finds the primary, and when the primary is killed under
//! minting and revoking it follows the promoted replica without a restart.
//! What `docs/redis.md` ("Sentinel") promises is what is asserted: with
//! `wait_replicas = 1` no acknowledged revocation is lost, commits in between
//! are refused with UNAVAILABLE (no other status), minting never fails, mint
//! audit events recorded after the kill all reach the new primary, and
//! commits succeed again within a bounded time.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{ADMIN, Ca, Plane, auth};
use stile_control::config::{RedisConfig, SentinelConfig, StoreBackend};
use stile_control::model::{ChangeKind, Revocation, Target};
use stile_control::store::StoreError;
use stile_control::store::{Batch, RedisStore, Store, Write};
use stile_proto::v1 as pb;
use stile_tests::net::free_port;
use stile_tests::redis::{Options, Persistence, RedisServer, Tls, Watch};
use tokio::time::Instant;
use tonic::Code;

const MASTER: &str = "stile-test";
/// `sentinel down-after-milliseconds`: how long the primary must be silent.
const DOWN_AFTER_MS: u64 = 1_000;
/// Failover and recovery must complete within this (down-after, election,
/// promotion, the replica's reconfiguration, Stile's look-up), on a busy CI host.
const RECOVERY_BOUND: Duration = Duration::from_secs(20);

/// A primary, two replicas (AOF, `appendfsync always`) and a Sentinel that knows them all.
struct Ha {
    primary: RedisServer,
    replicas: [RedisServer; 2],
    sentinel: RedisServer,
    tls: bool,
}

impl Ha {
    fn start() -> Ha {
        Ha::start_tls(None)
    }

    /// With `ca`: every server and the Sentinel also listen for TLS with a
    /// certificate `ca` signed, and replicate and monitor over TLS.
    fn start_tls(ca: Option<&Ca>) -> Ha {
        let tls = ca.map(|ca| {
            let (cert, key) = ca.leaf("redis", &["127.0.0.1", "localhost"]);
            Tls { cert, key, ca: ca.pem.clone(), auth_clients: false }
        });
        let primary = RedisServer::start_opts(Options {
            persistence: Persistence::AofAlways,
            tls: tls.clone(),
            ..Options::default()
        });
        let port = |s: &RedisServer| if tls.is_some() { s.tls_port() } else { s.port() };
        let replica = || {
            RedisServer::start_opts(Options {
                persistence: Persistence::AofAlways,
                tls: tls.clone(),
                replica_of: Some(port(&primary)),
                ..Options::default()
            })
        };
        let replicas = [replica(), replica()];
        let sentinel = RedisServer::start_opts(Options {
            sentinel: Some(Watch { master: MASTER.into(), primary_port: port(&primary), down_after_ms: DOWN_AFTER_MS }),
            tls: tls.clone(),
            ..Options::default()
        });
        let ha = Ha { primary, replicas, sentinel, tls: tls.is_some() };
        ha.until("the Sentinel knows both replicas, linked to the primary", |ha| {
            let known = ha.sentinel.command(&["SENTINEL", "REPLICAS", MASTER]);
            let up = |r: &RedisServer| r.command(&["INFO", "replication"]).contains("master_link_status:up");
            ha.replicas.iter().all(|r| known.contains(&ha.port(r).to_string()) && up(r))
        });
        ha
    }

    /// The port clients use: the TLS one with TLS.
    fn port(&self, server: &RedisServer) -> u16 {
        if self.tls { server.tls_port() } else { server.port() }
    }

    /// Polls `ready` every 50 ms for up to 20 s.
    fn until(&self, what: &str, ready: impl Fn(&Ha) -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !ready(self) {
            assert!(std::time::Instant::now() < deadline, "timed out waiting: {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The primary's port in `SENTINEL MASTER` (what Stile's look-up reads;
    /// it changes at `+switch-master`, once the other replicas follow).
    fn named_primary(&self) -> u16 {
        let reply = self.sentinel.command(&["SENTINEL", "MASTER", MASTER]);
        let fields: Vec<&str> = reply.lines().filter(|l| !l.starts_with(['*', '$'])).collect();
        fields.chunks(2).find(|kv| kv[0] == "port").and_then(|kv| kv.get(1)?.parse().ok()).unwrap_or(0)
    }

    fn config(&self) -> RedisConfig {
        RedisConfig {
            // The host is not used: the Sentinels name the primary.
            url: "redis://primary.invalid/0".into(),
            sentinel: SentinelConfig {
                // Nothing listens on the first address: the next one is asked.
                addresses: vec![
                    format!("127.0.0.1:{}", free_port()),
                    format!("127.0.0.1:{}", self.port(&self.sentinel)),
                ],
                master_name: MASTER.into(),
                ..SentinelConfig::default()
            },
            wait_replicas: 1,
            wait_timeout_ms: 1_000,
            connect_timeout_ms: 300,
            command_timeout_ms: 1_000,
            ..RedisConfig::default()
        }
    }
}

/// `ROLE`'s first element: `master` or `slave`.
fn role(server: &RedisServer) -> String {
    server.command(&["ROLE"]).lines().nth(2).unwrap_or_default().to_owned()
}

#[tokio::test]
async fn the_sentinel_names_the_primary() {
    let ha = Ha::start();
    let s = RedisStore::connect(&ha.config(), 10).await.expect("connect through the Sentinel");
    assert!(format!("{s:?}").contains(&format!("server: \"127.0.0.1:{}\"", ha.primary.port())), "{s:?}");
    let committed = s.commit(revoke(1)).await.expect("a commit, seen by a replica (WAIT 1)");
    assert_eq!(committed.changes[0].version, 1);
    assert_eq!(ha.primary.command(&["GET", "{stile}:version"]), "$1\r\n1\r\n");
}

/// A graceful `SENTINEL FAILOVER`: the old primary stays up, still taking
/// writes until Sentinel demotes it, so no error tells the store to move; it
/// moves anyway, by asking the Sentinels every second.
async fn failover_is_followed(ha: &Ha, config: &RedisConfig) {
    let s = RedisStore::connect(config, 10).await.expect("connect through the Sentinel");
    s.commit(revoke(1)).await.expect("a commit on the first primary");
    let old = ha.port(&ha.primary);
    ha.until("SENTINEL FAILOVER accepted", |ha| {
        ha.sentinel.command(&["SENTINEL", "FAILOVER", MASTER]).starts_with("+OK")
    });
    ha.until("a replica promoted", |ha| ha.named_primary() != old);
    let switched = Instant::now();
    let promoted = ha.named_primary();
    let server = format!("server: \"127.0.0.1:{promoted}\"");
    // No call in between: only the periodic look-up can move it.
    while !format!("{s:?}").contains(&server) {
        assert!(switched.elapsed() < Duration::from_secs(5), "still on the old primary: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = Instant::now() + RECOVERY_BOUND;
    let version = loop {
        match s.commit(revoke(2)).await {
            Ok(c) => break c.changes[0].version,
            // WAIT until the other replica follows the new primary.
            Err(StoreError::Unavailable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the store did not follow the failover: {e:?}"),
        }
    };
    assert_eq!(version, 2, "the promoted replica had version 1");
    let new_primary = ha.replicas.iter().find(|r| ha.port(r) == promoted).expect("a replica was promoted");
    assert_eq!(new_primary.command(&["GET", "{stile}:version"]), "$1\r\n2\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_sentinel_failover_is_followed_before_any_error() {
    let ha = Ha::start();
    failover_is_followed(&ha, &ha.config()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_the_sentinel_names_the_primary_and_a_failover_is_followed() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "stile-test-ca");
    let ha = Ha::start_tls(Some(&ca));
    let mut config = ha.config();
    config.url = "rediss://primary.invalid/0".into();
    config.tls_ca_file = Some(ca.pem.clone());
    config.sentinel.tls = true;
    failover_is_followed(&ha, &config).await;
}

fn revoke(token_id: u64) -> Batch {
    let r = Revocation {
        version: 0,
        target: Target::Token { token_id },
        reason: "leaked".into(),
        actor: "ops".into(),
        created_at: 10,
        expires_at: 4_000_000_000,
    };
    Batch {
        writes: vec![Write::Append { at: 10, actor: "ops".into(), kind: ChangeKind::Revocation(r) }],
        audit: vec![],
    }
}

/// One call's outcome and when it returned.
type Outcome<T> = (Result<T, (Code, String)>, Instant);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_killed_while_minting_and_revoking_fails_over_and_nothing_acknowledged_is_lost() {
    let mut ha = Ha::start();
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.store.backend = StoreBackend::Redis;
    config.store.redis = ha.config();
    config.validate().expect("a valid Sentinel configuration");
    let plane = Arc::new(Plane::open(config).await.expect("the control plane finds the primary"));
    plane.publish("abc").await;
    plane.mint("abc").await.expect("a first mint (caches the asset)");

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let revoker = tokio::spawn({
        let (plane, stop, acked) = (Arc::clone(&plane), Arc::clone(&stop), Arc::clone(&acked));
        async move {
            let mut out: Vec<(String, Outcome<u64>)> = Vec::new();
            for i in 0u64.. {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                let token = format!("{i:016x}");
                let r = plane.revoke(&token).await.map(|r| r.version).map_err(|s| (s.code(), s.message().to_owned()));
                if r.is_ok() {
                    acked.fetch_add(1, Ordering::AcqRel);
                }
                out.push((token, (r, Instant::now())));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            out
        }
    });
    let minter = tokio::spawn({
        let (plane, stop) = (Arc::clone(&plane), Arc::clone(&stop));
        async move {
            let mut out: Vec<Outcome<()>> = Vec::new();
            while !stop.load(Ordering::Acquire) {
                let r = plane.mint("abc").await.map(|_| ()).map_err(|s| (s.code(), s.message().to_owned()));
                out.push((r, Instant::now()));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            out
        }
    });

    let wait_acked = |n: usize, what: &'static str| {
        let acked = Arc::clone(&acked);
        async move {
            let deadline = Instant::now() + RECOVERY_BOUND;
            while acked.load(Ordering::Acquire) < n {
                assert!(
                    Instant::now() < deadline,
                    "{what}: {} revocations acknowledged",
                    acked.load(Ordering::Acquire)
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    wait_acked(10, "before the kill").await;
    let old_primary = ha.primary.port();
    ha.primary.kill();
    let killed = Instant::now();
    let at_kill = acked.load(Ordering::Acquire);
    // Recovered: ten more acknowledged after the kill.
    wait_acked(at_kill + 10, "after the kill").await;
    stop.store(true, Ordering::Release);
    let revokes = revoker.await.unwrap();
    let mints = minter.await.unwrap();

    // Refused: only UNAVAILABLE, and at least once (the primary was gone for
    // at least down-after-milliseconds).
    let refused: Vec<_> = revokes.iter().filter_map(|(_, (r, _))| r.as_ref().err()).collect();
    assert!(refused.iter().all(|(code, _)| *code == Code::Unavailable), "{refused:?}");
    assert!(!refused.is_empty(), "commits were refused during the failover");
    // Recovery: the first acknowledged revocation after the kill, timed.
    let first_after = revokes
        .iter()
        .filter(|(_, (r, at))| r.is_ok() && *at > killed)
        .map(|(_, (_, at))| *at - killed)
        .next()
        .expect("a revocation acknowledged after the kill");
    assert!(first_after < RECOVERY_BOUND, "{first_after:?}");
    eprintln!(
        "failover: first acknowledged revocation {} ms after SIGKILL (down-after {DOWN_AFTER_MS} ms); \
         {} of {} revocations refused",
        first_after.as_millis(),
        refused.len(),
        revokes.len()
    );
    // Minting never failed.
    let failed_mints: Vec<_> = mints.iter().filter_map(|(r, _)| r.as_ref().err()).collect();
    assert!(failed_mints.is_empty(), "{failed_mints:?}");

    // The Sentinel promoted a replica; it is the store's primary now.
    let promoted = ha.named_primary();
    assert_ne!(promoted, old_primary);
    let new_primary = ha.replicas.iter().find(|r| r.port() == promoted).expect("a replica was promoted");
    assert_eq!(role(new_primary), "master");
    // Nothing acknowledged is lost: every acknowledged revocation is on the
    // new primary, under the version it was acknowledged with; the log has
    // no gap.
    let stored: std::collections::BTreeSet<u64> = new_primary
        .command(&["HKEYS", "{stile}:revocations"])
        .lines()
        .filter(|l| !l.starts_with(['*', '$']))
        .map(|l| l.parse().unwrap())
        .collect();
    let acked_revokes: Vec<_> = revokes.iter().filter_map(|(t, (r, _))| r.as_ref().ok().map(|v| (t, *v))).collect();
    for (token, version) in &acked_revokes {
        assert!(stored.contains(version), "acknowledged revocation of {token} (v{version}) lost");
    }
    let version: u64 = new_primary.command(&["GET", "{stile}:version"]).lines().nth(1).unwrap().parse().unwrap();
    let log_len: u64 = new_primary.command(&["XLEN", "{stile}:log"]).trim().trim_start_matches(':').parse().unwrap();
    assert_eq!(log_len, version, "versions 1..={version} without a gap");
    let max_acked = acked_revokes.iter().map(|(_, v)| *v).max().unwrap();
    assert!(version >= max_acked);

    // Mint audit events recorded after the kill were buffered or written to
    // the new primary: all of them arrive (those acknowledged by the old
    // primary just before it died may be lost: they are not WAITed for).
    let after_kill = mints.iter().filter(|(_, at)| *at > killed).count();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let req = pb::ListAuditRequest { action: pb::AuditAction::Mint.into(), limit: 1000, ..Default::default() };
        let events = plane.audit().list(auth(req, ADMIN)).await.unwrap().into_inner().events;
        if events.len() >= after_kill {
            assert!(events.len() <= mints.len() + 1, "{} events for {} mints", events.len(), mints.len() + 1);
            break;
        }
        assert!(Instant::now() < deadline, "{} mint events, {after_kill} mints after the kill", events.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Arc::into_inner(plane).expect("the tasks are done").stop().await;
}
