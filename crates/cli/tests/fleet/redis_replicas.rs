//! Control-plane replicas on one Redis, real processes: two `stile control`
//! on the Redis store (`store.backend = "redis"`) with an edge on each. A
//! revocation through either replica reaches the edges of both, in order and
//! without gaps; Revoke/List through the other replica sees it; each replica
//! lists the edges of both, and Revoke with `wait` returns once the edges of
//! both applied it; when a replica is killed with SIGKILL its edge moves to
//! the other and catches up.

use std::time::Duration;

use stile_tests::fleet::*;
use stile_tests::process::*;
use stile_tests::redis::RedisServer;

/// Waits until `edge` answers 403 `revoked` for `link`.
fn wait_revoked(edge: &SyncEdge, link: &stile_proto::v1::Link) {
    until(Duration::from_secs(10), &format!("{} to enforce the revocation of {}", edge.id, link.token_id), || {
        let r = edge.get(&target(link));
        (r.status == 403 && r.header("x-stile-reason") == Some("revoked")).then_some(())
    });
}

#[test]
fn changes_through_either_replica_reach_the_edges_of_both_and_survive_a_replica_kill() {
    let redis = RedisServer::start();
    let (_content, origin) = content();
    let a = Control::start_redis(&redis.url());
    let mut b = Control::start_redis(&redis.url());
    let (ops_a, ops_b) = (a.ops(), b.ops());
    ops_a.publish();
    // edge-a follows A only; edge-b prefers B and falls back to A.
    let edge_a = SyncEdge::start("edge-a", &origin, &[a.url()], "");
    let edge_b = SyncEdge::start("edge-b", &origin, &[b.url(), a.url()], "");
    // Each replica sees the whole fleet: its own edge and the other's (published through Redis).
    for ops in [&ops_a, &ops_b] {
        let ids: Vec<String> = ops.wait_converged(2).edges.into_iter().map(|e| e.edge_id).collect();
        assert_eq!(ids, ["edge-a", "edge-b"]);
    }

    // Links minted by either replica (one key, shared through Redis) play on either edge.
    let links: Vec<_> = (0..6).map(|i| if i % 2 == 0 { ops_a.mint() } else { ops_b.mint() }).collect();
    for l in &links {
        assert_eq!(edge_a.get(&target(l)).status, 200);
        assert_eq!(edge_b.get(&target(l)).status, 200);
    }

    // A revocation through A reaches the edge on B, and the wait covers it:
    // once Revoke returns, B's edge already denies the link.
    let first = ops_a.revoke(&links[0].token_id, true);
    assert!(first.lagging.is_empty() && first.edges.len() == 2, "{first:?}");
    assert!(first.edges.iter().all(|e| e.applied), "{first:?}");
    let r = edge_b.get(&target(&links[0]));
    assert_eq!((r.status, r.header("x-stile-reason")), (403, Some("revoked")), "enforced when the wait returned");

    // Interleaved revocations through both replicas: every edge applies all, in order.
    let mut last = first.version;
    for (i, l) in links.iter().enumerate().skip(1).take(4) {
        let r = if i % 2 == 0 { ops_a.revoke(&l.token_id, false) } else { ops_b.revoke(&l.token_id, false) };
        assert!(r.version > last, "versions grow across replicas: {} after {last}", r.version);
        last = r.version;
    }
    for ops in [&ops_a, &ops_b] {
        let list = until(Duration::from_secs(10), "both replicas' edges at the newest version", || {
            let l = ops.try_list().ok()?;
            (l.current_version >= last && l.edges.iter().all(|e| e.applied_version >= last)).then_some(l)
        });
        assert_eq!(list.edges.len(), 2);
    }
    for edge in [&edge_a, &edge_b] {
        for l in &links[..5] {
            wait_revoked(edge, l);
        }
        assert_eq!(edge.get(&target(&links[5])).status, 200, "{}: an unrevoked link still plays", edge.id);
        assert_eq!(edge.metric("stile_edge_state_version"), Some(last as f64), "{}", edge.id);
    }

    // B dies: edge-b moves to A and catches up with what A commits meanwhile.
    b.kill();
    let late = ops_a.revoke(&links[5].token_id, false);
    wait_revoked(&edge_b, &links[5]);
    let list = until(Duration::from_secs(20), "edge-b to reconnect to A", || {
        let l = ops_a.try_list().ok()?;
        (l.edges.len() == 2 && l.edges.iter().all(|e| e.applied_version >= late.version)).then_some(l)
    });
    assert!(list.edges.iter().any(|e| e.edge_id == "edge-b"), "{list:?}");
    assert_eq!(edge_b.metric("stile_edge_state_version"), Some(late.version as f64));
    drop(a);
}

/// `stile control` with a Redis TLS or Sentinel setting it cannot use exits 64
/// before binding, naming the field, without the URL's password.
#[test]
fn bad_redis_tls_and_sentinel_settings_exit_64_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let url = "url = \"rediss://stile:hunter2-secret@127.0.0.1:6380/0\"";
    let missing = dir.path().join("missing-ca.pem");
    for (section, needle) in [
        (format!("{url}\ntls_ca_file = \"{}\"", missing.display()), "store.redis.tls_ca_file".to_owned()),
        (format!("{url}\ntls_cert_file = \"{}\"", missing.display()), "tls_key_file together".to_owned()),
        (format!("{url}\n[store.redis.sentinel]\naddresses = [\"10.0.0.1\"]"), "sentinel.addresses".to_owned()),
    ] {
        let listen = stile_tests::net::free_port();
        let path = dir.path().join("control.toml");
        let text = format!(
            "listen = \"127.0.0.1:{listen}\"\nadmin_listen = \"\"\n[store]\nbackend = \"redis\"\n[store.redis]\n{section}\n"
        );
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_stile"))
            .args(["control", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{section}: {stderr}");
        assert!(stderr.contains(&needle), "{section}: expected {needle:?} in {stderr}");
        assert!(!stderr.contains("hunter2"), "{stderr}");
        assert!(std::net::TcpStream::connect(("127.0.0.1", listen)).is_err());
    }
}
