//! Push path, real processes: the control plane killed with SIGKILL. Edges keep
//! serving with their last state (revocations included), reconnect when it is
//! back on the same redb file, and converge; no ACKed revocation is lost and no
//! edge's state version ever goes down. With `stale_policy = "deny"` an edge
//! past `max_age_secs` without the control plane denies `stale_state` and
//! fails /readyz; with `serve` it keeps serving.

use std::time::Duration;
use stile_tests::fleet::*;
use stile_tests::process::*;

/// Records each edge's `stile_edge_state_version` and fails if one ever goes down.
struct Monotonic(Vec<f64>);

impl Monotonic {
    fn sample(&mut self, edges: &[SyncEdge]) {
        for (i, e) in edges.iter().enumerate() {
            if let Some(v) = e.metric("stile_edge_state_version") {
                assert!(v >= self.0[i], "{} went back from version {} to {v}", e.id, self.0[i]);
                self.0[i] = v;
            }
        }
    }
}

#[test]
fn edges_survive_a_control_plane_sigkill_and_converge() {
    let Fleet { edges, ops, control, .. } = &mut Fleet::start(2);
    let mut versions = Monotonic(vec![0.0; edges.len()]);
    let (a, b, good) = (ops.mint(), ops.mint(), ops.mint());
    let acked = ops.revoke(&a.token_id, true);
    assert!(acked.lagging.is_empty());
    versions.sample(edges);

    control.kill();
    // Meanwhile the edges keep serving with their last state.
    until(Duration::from_secs(10), "edges to notice the loss", || {
        versions.sample(edges);
        edges.iter().all(|e| e.metric("stile_edge_sync_connected") == Some(0.0)).then_some(())
    });
    for e in edges.iter() {
        assert_eq!(e.get(&target(&good)).status, 200, "{}", e.id);
        let r = e.get(&target(&a));
        assert_eq!(
            (r.status, r.header("x-stile-reason")),
            (403, Some("revoked")),
            "{}: the ACKed revocation holds",
            e.id
        );
    }
    versions.sample(edges);

    control.restart();
    let list = until(Duration::from_secs(20), "the edges to reconnect and converge", || {
        versions.sample(edges);
        let l = ops.try_list().ok()?;
        (l.edges.len() == 2 && l.edges.iter().all(|e| e.applied_version == l.current_version)).then_some(l)
    });
    assert!(list.current_version >= acked.version, "no ACKed change lost: {list:?}");
    let r = ops.revoke(&b.token_id, true);
    assert!(r.lagging.is_empty(), "{r:?}");
    for e in edges.iter() {
        assert_eq!(e.get(&target(&a)).status, 403);
        assert_eq!(e.get(&target(&b)).status, 403);
        assert_eq!(e.get(&target(&good)).status, 200);
    }
    versions.sample(edges);
}

#[test]
fn staleness_follows_the_policy_when_the_control_plane_is_gone() {
    let mut fleet = Fleet::start(0);
    let deny = fleet.edge("edge-deny", "max_age_secs = 2\nstale_policy = \"deny\"");
    let serve = fleet.edge("edge-serve", "max_age_secs = 2\nstale_policy = \"serve\"");
    let ops = &fleet.ops;
    ops.wait_converged(2);
    let link = ops.mint();
    assert_eq!(deny.get(&target(&link)).status, 200);
    fleet.control.kill();
    let r = until(Duration::from_secs(15), "the deny edge to go stale", || {
        let r = deny.get(&target(&link));
        (r.status == 403).then_some(r)
    });
    assert_eq!(r.header("x-stile-reason"), Some("stale_state"));
    assert_eq!(
        stile_tests::net::get(deny.admin, "/readyz", &[]).unwrap().status,
        503,
        "a stale deny edge is not ready"
    );
    until(Duration::from_secs(5), "the age metric past the limit", || {
        deny.metric("stile_edge_state_age_seconds").is_some_and(|a| a > 2.0).then_some(())
    });
    assert_eq!(serve.get(&target(&link)).status, 200, "serve keeps serving");
    assert_eq!(stile_tests::net::get(serve.admin, "/readyz", &[]).unwrap().status, 200);
}
