//! Purges over the push path, end to end: a control plane, two edges in sync
//! mode with `[cache]` on, and a prefix revocation with `purge` recorded with
//! `wait` (`stile revoke --prefix P --purge --wait`): once it answers, the next
//! request for a cached object is a miss on every edge of the fleet.

/// `[cache]` on, written after `[state]` (the keys that follow start their own table).
const CACHE_ON: &str = "[cache]\nenabled = true\n";
use stile_tests::fleet::*;

#[test]
fn a_purge_makes_the_next_request_a_miss_on_every_edge() {
    let (_content, origin) = content();
    let cp = tempfile::tempdir().unwrap();
    let control = Control::start(cp.path());
    let ops = control.ops();
    ops.publish();
    let edges: Vec<SyncEdge> =
        (1..=2).map(|i| SyncEdge::start(&format!("edge-{i}"), &origin, &[control.url()], CACHE_ON)).collect();
    ops.wait_converged(2);
    let link = ops.mint();
    let seg = target(&link).replace("master.m3u8", "seg.ts");
    let status = |e: &SyncEdge| {
        let r = e.get(&seg);
        assert_eq!(r.status, 200, "{}", e.log());
        assert_eq!(r.body, b"segment");
        r.header("x-stile-cache").unwrap_or("none").to_owned()
    };
    for e in &edges {
        assert_eq!(status(e), "miss", "{}", e.id);
        assert_eq!(status(e), "hit", "{}", e.id);
    }

    // Links issued more than an hour ago are revoked (none here): the link above keeps
    // working, and every edge purges /vod/abc/ before it ACKs.
    let hour_ago = stile_tests::token::now() - 3600;
    let resp = ops.revoke_prefix("/vod/abc/", hour_ago, true);
    assert!(resp.lagging.is_empty(), "{resp:?}");
    assert_eq!(resp.edges.len(), 2);
    assert!(resp.edges.iter().all(|e| e.applied), "{resp:?}");
    for e in &edges {
        assert_eq!(status(e), "miss", "{}: the purge reached it before the ACK", e.id);
        assert_eq!(status(e), "hit", "{}", e.id);
        assert_eq!(e.metric("stile_edge_purges_total"), Some(1.0));
        assert_eq!(purges_applied(e), 1.0, "{}", e.id);
    }

    // Without `purge`, a prefix revocation leaves the cache alone.
    let resp = ops.revoke_prefix("/vod/abc/", hour_ago, false);
    assert!(resp.lagging.is_empty() && resp.edges.len() == 2, "{resp:?}");
    for e in &edges {
        assert_eq!(status(e), "hit", "{}", e.id);
    }
}

/// `stile_edge_cache_purges_total`, every kind.
fn purges_applied(e: &SyncEdge) -> f64 {
    let text = String::from_utf8(stile_tests::net::get(e.admin, "/metrics", &[]).unwrap().body).unwrap();
    text.lines()
        .filter(|l| l.starts_with("stile_edge_cache_purges_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
