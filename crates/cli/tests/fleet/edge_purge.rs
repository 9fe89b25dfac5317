//! `stile purge` end to end: a real control plane, `stile edge` processes in
//! sync mode with `[cache]` on, an origin that records every request, and the
//! `stile` binary itself as the operator's client. A purge is a change of its
//! own in the log (`PurgeService.Purge`), revokes nothing, is audited, needs the
//! operator role, and reaches an edge that was down when it was recorded —
//! through the backlog, the snapshot's retained purges, or (past the retention
//! window) the snapshot's purge floor, which empties the whole cache.

use std::process::Command;
use std::time::Duration;

use stile_proto::v1 as pb;
use stile_tests::edge::Origin;
use stile_tests::fleet::*;
use stile_tests::process::*;
use stile_tests::token::*;

const OPERATOR: &str = "stk_purge-test-operator";
const MINTER: &str = "stk_purge-test-minter";

/// An operator key `ops` and a minter key `backend`, after `sync_settings` (bare `[sync]` lines).
fn control_with_keys(dir: &std::path::Path, sync_settings: &str) -> Control {
    let key = |name: &str, role: &str, key: &str| {
        format!(
            "[[auth.keys]]\nname = \"{name}\"\nrole = \"{role}\"\nsha256 = \"{}\"\n",
            hex(&stile_control::auth::hash_api_key(key))
        )
    };
    let extra = format!("{sync_settings}\n{}{}", key("ops", "operator", OPERATOR), key("backend", "minter", MINTER));
    Control::launch_with(dir, stile_tests::net::free_port(), &Store::Redb, &extra)
}

/// Origin content: `/vod/abc/{master.m3u8,seg.ts,seg2.ts}`.
fn origin() -> (tempfile::TempDir, Origin) {
    let (dir, origin) = content();
    std::fs::write(dir.path().join("vod/abc/seg2.ts"), b"segment two").unwrap();
    (dir, origin)
}

/// Origin requests for `path` so far.
fn fetched(origin: &Origin, path: &str) -> usize {
    origin.request_lines().iter().filter(|l| l.split_whitespace().nth(1) == Some(path)).count()
}

/// Runs `stile purge ARGS` against `control` with `key`: (exit code, stdout, stderr).
fn purge(control: &Control, key: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_stile"))
        .arg("purge")
        .args(args)
        .args(["--server", &control.url(), "--api-key", key])
        .env_remove("STILE_CONFIG")
        .env_remove("STILE_OUTPUT")
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// The cache status of one request through `edge` (which must answer 200 with `body`).
fn status(edge: &SyncEdge, target: &str, body: &[u8]) -> String {
    let r = edge.get(target);
    assert_eq!(r.status, 200, "{target} on {}: {}", edge.id, edge.log());
    assert_eq!(r.body, body);
    r.header("x-stile-cache").unwrap_or("none").to_owned()
}

/// `stile_edge_cache_purges_total{kind=KIND}`.
fn purges_of_kind(e: &SyncEdge, kind: &str) -> f64 {
    let text = String::from_utf8(stile_tests::net::get(e.admin, "/metrics", &[]).unwrap().body).unwrap();
    let prefix = format!("stile_edge_cache_purges_total{{kind=\"{kind}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)?.parse().ok()).unwrap_or(0.0)
}

#[test]
fn purge_by_path_prefix_and_asset_reaches_the_fleet_without_revoking() {
    let (_content, origin) = origin();
    let cp = tempfile::tempdir().unwrap();
    let control = control_with_keys(cp.path(), "");
    let ops = control.ops();
    ops.publish();
    let cache_on = "[cache]\nenabled = true\n";
    let edges: Vec<SyncEdge> =
        (1..=2).map(|i| SyncEdge::start(&format!("edge-{i}"), &origin, &[control.url()], cache_on)).collect();
    ops.wait_converged(2);
    let link = ops.mint();
    let seg = target(&link).replace("master.m3u8", "seg.ts");
    let seg2 = target(&link).replace("master.m3u8", "seg2.ts");
    for e in &edges {
        assert_eq!(status(e, &seg, b"segment"), "miss", "{}", e.id);
        assert_eq!(status(e, &seg2, b"segment two"), "miss", "{}", e.id);
        assert_eq!(status(e, &seg, b"segment"), "hit", "{}", e.id);
    }
    assert_eq!((fetched(&origin, "/vod/abc/seg.ts"), fetched(&origin, "/vod/abc/seg2.ts")), (2, 2));

    // One path: once --wait answers, every edge misses it; its sibling stays a hit; the
    // same link keeps playing (a purge revokes nothing).
    let (code, out, err) =
        purge(&control, OPERATOR, &["--path", "/vod/abc/seg.ts", "--reason", "bad encode", "--wait"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("purged path /vod/abc/seg.ts") && out.contains("confirmed by all 2 expected edges"), "{out}");
    for e in &edges {
        assert_eq!(status(e, &seg, b"segment"), "miss", "{}: purged before its ACK", e.id);
        assert_eq!(status(e, &seg2, b"segment two"), "hit", "{}: a sibling stays", e.id);
        assert_eq!(status(e, &seg, b"segment"), "hit", "{}", e.id);
    }
    assert_eq!((fetched(&origin, "/vod/abc/seg.ts"), fetched(&origin, "/vod/abc/seg2.ts")), (4, 2));
    assert!(ops.revocations().is_empty(), "a purge is not a revocation");

    // A prefix, with the JSON output: both objects miss on both edges.
    let (code, out, err) =
        purge(&control, OPERATOR, &["--prefix", "/vod/abc/", "--wait", "--min-edges", "2", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["confirmation"]["verdict"], "CONFIRMED", "{doc}");
    assert_eq!((doc["purge"]["kind"].as_str(), doc["purge"]["path"].as_str()), (Some("prefix"), Some("/vod/abc/")));
    for e in &edges {
        assert_eq!(status(e, &seg, b"segment"), "miss", "{}", e.id);
        assert_eq!(status(e, &seg2, b"segment two"), "miss", "{}", e.id);
    }
    assert_eq!((fetched(&origin, "/vod/abc/seg.ts"), fetched(&origin, "/vod/abc/seg2.ts")), (6, 4));

    // An asset: its path prefix.
    let (code, out, err) = purge(&control, OPERATOR, &["--asset", "abc", "--wait", "--expect-edge", "edge-*"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("purged asset abc (prefix /vod/abc/)"), "{out}");
    for e in &edges {
        assert_eq!(status(e, &seg2, b"segment two"), "miss", "{}", e.id);
        assert_eq!((purges_of_kind(e, "path"), purges_of_kind(e, "prefix")), (1.0, 2.0), "{}", e.id);
        assert_eq!(e.metric("stile_edge_purges_total"), Some(3.0), "{}", e.id);
    }

    // Audited, with the actor and the target as given.
    let mut events = ops.audit(pb::AuditAction::Purge);
    events.reverse();
    let seen: Vec<_> = events.iter().map(|e| (e.actor.as_str(), e.target.as_str(), e.detail.as_str())).collect();
    assert_eq!(
        seen,
        [("ops", "path:/vod/abc/seg.ts", "bad encode"), ("ops", "prefix:/vod/abc/", ""), ("ops", "asset:abc", "")]
    );

    // A minter may not purge: PERMISSION_DENIED (exit 3), nothing recorded.
    let version = ops.list().current_version;
    let (code, _, err) = purge(&control, MINTER, &["--prefix", "/vod/abc/"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("permission denied") && err.contains("PurgeService.Purge"), "{err}");
    assert_eq!(ops.list().current_version, version);

    // Bad input: usage errors (64) before any call; an unknown asset is NOT_FOUND (2).
    for args in [
        &["--prefix", "vod/abc/"][..],
        &["--prefix", "/vod/abc"],
        &["--path", "/vod/abc/"],
        &["--prefix", "/vod/caf%c3%a9/"],
        &["--prefix", ""],
        &[],
        &["--prefix", "/vod/", "--path", "/vod/a.ts"],
        &["--prefix", "/vod/", "--min-edges", "1"],
    ] {
        let (code, out, err) = purge(&control, OPERATOR, args);
        assert_eq!(code, 64, "{args:?}: {out}{err}");
    }
    let (_, _, err) = purge(&control, OPERATOR, &["--prefix", "/vod/caf%c3%a9/"]);
    assert!(err.contains("not canonical") && err.contains("/vod/caf%C3%A9/"), "{err}");
    let (code, _, err) = purge(&control, OPERATOR, &["--asset", "nope"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("NOT_FOUND") && err.contains("asset \"nope\" does not exist"), "{err}");
    assert_eq!(ops.list().current_version, version, "refused purges record nothing");
}

/// The disk-tier objects an edge has written (files in two-character shard directories).
fn disk_files(dir: &std::path::Path) -> usize {
    let Ok(shards) = std::fs::read_dir(dir) else { return 0 };
    shards
        .flatten()
        .filter(|s| s.file_name().len() == 2 && s.path().is_dir())
        .map(|s| std::fs::read_dir(s.path()).map_or(0, |f| f.count()))
        .sum()
}

/// An edge with a disk tier that was down while purges were recorded, back and converged.
struct Returned {
    origin: Origin,
    edge: SyncEdge,
    seg: String,
    seg2: String,
    _control: Control,
    _dirs: [tempfile::TempDir; 3],
}

/// The edge caches both segments (on disk too), goes down, misses two path purges
/// (`seg.ts`, `master.m3u8`) and, `wait_after` later, comes back: it must not serve
/// what was purged meanwhile.
fn down_during_purges(sync_settings: &str, wait_after: Duration) -> Returned {
    let (content, origin) = origin();
    let (cp, disk) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let control = control_with_keys(cp.path(), sync_settings);
    let ops = control.ops();
    ops.publish();
    let cache = format!("[cache]\nenabled = true\ndisk_path = \"{}\"\n", disk.path().display());
    let mut edge = SyncEdge::start("edge-1", &origin, &[control.url()], &cache);
    ops.wait_converged(1);
    let link = ops.mint();
    let seg = target(&link).replace("master.m3u8", "seg.ts");
    let seg2 = target(&link).replace("master.m3u8", "seg2.ts");
    assert_eq!(status(&edge, &seg, b"segment"), "miss");
    assert_eq!(status(&edge, &seg2, b"segment two"), "miss");
    until(Duration::from_secs(10), "both objects on disk", || (disk_files(disk.path()) == 2).then_some(()));

    edge.child.kill().unwrap();
    edge.child.wait().unwrap();
    // Down: --wait hears from no edge (the departed one stays expected): exit 5.
    let (code, out, err) = purge(&control, OPERATOR, &["--path", "/vod/abc/seg.ts", "--wait", "--deadline", "300ms"]);
    assert_eq!(code, 5, "{out}{err}");
    assert!(out.contains("not confirmed: edge-1 (disconnected"), "the lagging edge is named: {out}");
    let (code, out, err) = purge(&control, OPERATOR, &["--path", "/vod/abc/master.m3u8"]);
    assert_eq!(code, 0, "{out}{err}");
    // Not a negative check: the purges must age past the retention before the edge returns.
    std::thread::sleep(wait_after);

    edge.restart();
    edge.wait_ready();
    ops.wait_converged(1);
    Returned { origin, edge, seg, seg2, _control: control, _dirs: [content, cp, disk] }
}

#[test]
fn an_edge_down_during_a_purge_misses_it_after_reconnecting() {
    // Backlog: the deltas it missed.
    let r = down_during_purges("", Duration::ZERO);
    assert_eq!(status(&r.edge, &r.seg, b"segment"), "miss", "{}", r.edge.log());
    assert_eq!(status(&r.edge, &r.seg2, b"segment two"), "hit", "the disk tier kept what was not purged");
    assert_eq!((fetched(&r.origin, "/vod/abc/seg.ts"), fetched(&r.origin, "/vod/abc/seg2.ts")), (2, 1));
    assert_eq!(r.edge.metric("stile_edge_sync_snapshots_total"), Some(0.0), "deltas, not a snapshot");
}

#[test]
fn a_snapshot_carries_the_purges_an_edge_missed() {
    // Two versions behind with max_lag_versions = 1: a snapshot, whose retained purges it applies.
    let r = down_during_purges("max_lag_versions = 1", Duration::ZERO);
    assert_eq!(r.edge.metric("stile_edge_sync_snapshots_total"), Some(1.0), "{}", r.edge.log());
    assert_eq!(status(&r.edge, &r.seg, b"segment"), "miss", "{}", r.edge.log());
    assert_eq!(status(&r.edge, &r.seg2, b"segment two"), "hit");
    assert_eq!((fetched(&r.origin, "/vod/abc/seg.ts"), fetched(&r.origin, "/vod/abc/seg2.ts")), (2, 1));
    assert_eq!((purges_of_kind(&r.edge, "path"), purges_of_kind(&r.edge, "all")), (2.0, 0.0));
}

#[test]
fn an_edge_away_longer_than_the_retention_empties_its_cache() {
    // The purges left the snapshot (retention 1 s) before it came back: the floor says it may
    // have missed one, so everything goes.
    let settings = "max_lag_versions = 1\npurge_retention_secs = 1";
    let r = down_during_purges(settings, Duration::from_millis(2_100));
    assert_eq!(r.edge.metric("stile_edge_sync_snapshots_total"), Some(1.0), "{}", r.edge.log());
    assert_eq!(purges_of_kind(&r.edge, "all"), 1.0, "{}", r.edge.log());
    assert_eq!(status(&r.edge, &r.seg, b"segment"), "miss");
    assert_eq!(status(&r.edge, &r.seg2, b"segment two"), "miss", "everything cached before the floor went");
    assert_eq!((fetched(&r.origin, "/vod/abc/seg.ts"), fetched(&r.origin, "/vod/abc/seg2.ts")), (2, 2));
}
