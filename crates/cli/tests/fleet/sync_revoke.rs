//! Push path, real processes: a control plane and three edges in sync mode.
//! Revoke with wait returns once every edge ACKed, and the next request at
//! every edge is denied `revoked`; a rotated key mints only once every edge has
//! it, so a link minted right after the rotation passes at every edge.

use stile_tests::fleet::*;

#[test]
fn revoke_reaches_every_edge_before_wait_returns() {
    let Fleet { edges, ops, .. } = &Fleet::start(3);
    let list = ops.wait_converged(3);
    assert!(list.edges.iter().all(|e| e.snapshots == 1 && e.lag == 0), "{list:?}");

    let link = ops.mint();
    let other = ops.mint();
    for e in edges {
        assert_eq!(e.get(&target(&link)).status, 200, "{}: {}", e.id, e.log());
    }

    let r = ops.revoke(&link.token_id, true);
    assert!(r.lagging.is_empty(), "{r:?}");
    assert_eq!(r.edges.len(), 3);
    assert!(r.edges.iter().all(|e| e.applied && e.applied_version >= r.version), "{r:?}");
    // Enforced: the very next request at every edge is denied.
    for e in edges {
        let resp = e.get(&target(&link));
        assert_eq!((resp.status, resp.header("x-stile-reason")), (403, Some("revoked")), "{}", e.id);
        assert_eq!(e.get(&target(&other)).status, 200, "{}: other links still pass", e.id);
    }

    // Key rollout: Rotate returns once the key is ACTIVE, i.e. every edge has it.
    let rotated = ops.rotate();
    assert!(rotated.lagging.is_empty(), "{rotated:?}");
    let fresh = ops.mint();
    assert_eq!(fresh.key_id, rotated.key.unwrap().key_id);
    for e in edges {
        assert_eq!(e.get(&target(&fresh)).status, 200, "{}: a link with the new key", e.id);
        assert_eq!(e.get(&target(&other)).status, 200, "{}: old-key links keep verifying", e.id);
        assert_eq!(e.metric("stile_edge_sync_connected"), Some(1.0));
        assert!(e.metric("stile_edge_clock_skew_seconds").is_some_and(|s| s.abs() < 1.0));
    }
    let list = ops.wait_converged(3);
    assert!(list.edges.iter().all(|e| e.snapshots == 1), "deltas after the first snapshot: {list:?}");
}
