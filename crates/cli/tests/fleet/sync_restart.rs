//! Push path, real processes: an edge restarted close to the head of the log
//! resumes from its cached version with deltas — no snapshot is sent — and
//! enforces what happened while it was down.

use std::time::Duration;
use stile_tests::fleet::*;
use stile_tests::process::*;

#[test]
fn a_restarted_edge_resumes_from_its_cache_without_a_snapshot() {
    let mut fleet = Fleet::start(1);
    let (ops, edge) = (&fleet.ops, &mut fleet.edges[0]);
    let early = ops.mint();
    let late = ops.mint();
    let v = ops.revoke(&early.token_id, true).version;
    // Wait until the cache holds that version, then kill the edge hard.
    let cache = edge.dir.path().join("cache.json");
    until(Duration::from_secs(10), "the cache at the revocation's version", || {
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&cache).ok()?).ok()?;
        (json["version"].as_u64()? >= v).then_some(())
    });
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777, 0o600, "it holds key secrets");
    }
    stile_tests::process::signal(edge.child.id(), "KILL");
    let _ = edge.child.wait();

    // Changes while it is down.
    let down = ops.revoke(&late.token_id, false).version;
    edge.restart();
    edge.wait_ready();
    let list = ops.wait_converged(1);
    let info = &list.edges[0];
    assert_eq!(info.applied_version, down);
    assert_eq!(info.snapshots, 0, "resumed with deltas: {info:?}");
    assert!(info.deltas >= 1, "{info:?}");
    assert_eq!(edge.metric("stile_edge_sync_snapshots_total"), Some(0.0));
    for link in [&early, &late] {
        let r = edge.get(&target(link));
        assert_eq!((r.status, r.header("x-stile-reason")), (403, Some("revoked")));
    }
}

/// An edge killed right after it ACKed a revocation, long before its next full
/// cache write, restarts enforcing it even with the control plane gone: the
/// ACKed delta was journaled beside the cache before the ACK left.
#[test]
fn an_edge_killed_right_after_an_ack_restarts_enforcing_it() {
    let mut fleet = Fleet::start(1);
    let edge = &mut fleet.edges[0];
    // No periodic full write during the test: only the journal can carry the revocation.
    let config = std::fs::read_to_string(&edge.config).unwrap();
    std::fs::write(&edge.config, config.replace("cache_interval_ms = 100", "cache_interval_ms = 600000")).unwrap();
    edge.restart();
    edge.wait_ready();
    fleet.ops.wait_converged(1);
    let cache = edge.dir.path().join("cache.json");
    let cached_version = move || -> u64 {
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&cache).unwrap()).unwrap();
        json["version"].as_u64().unwrap()
    };
    let before = cached_version();

    let link = fleet.ops.mint();
    let acked = fleet.ops.revoke(&link.token_id, true);
    assert!(acked.lagging.is_empty() && acked.edges.len() == 1, "ACKed: {acked:?}");
    let edge = &mut fleet.edges[0];
    stile_tests::process::signal(edge.child.id(), "KILL");
    let _ = edge.child.wait();
    fleet.control.kill();
    assert!(cached_version() < acked.version, "the full cache was not rewritten (at {before})");

    let edge = &mut fleet.edges[0];
    edge.restart();
    edge.wait_ready();
    let r = edge.get(&target(&link));
    assert_eq!((r.status, r.header("x-stile-reason")), (403, Some("revoked")), "{}", edge.log());
    assert!(edge.log().contains("\"journal.replayed\":1"), "{}", edge.log());
}
