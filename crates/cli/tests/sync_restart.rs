//! Push path, real processes: an edge restarted close to the head of the log
//! resumes from its cached version with deltas — no snapshot is sent — and
//! enforces what happened while it was down.

mod support;
mod sync_support;

use std::time::Duration;

use sync_support::*;

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
    support::signal(edge.child.id(), "KILL");
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
