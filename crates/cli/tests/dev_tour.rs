//! The README's five-minute tour, driven through the real binary: `stile dev`
//! starts and prints links; each printed link plays through the edge with
//! ffmpeg; `stile revoke --wait` (over the push path) makes the next request
//! fail with reason `revoked`;
//! `stile explain` names the reason, who revoked, and why; Ctrl-C exits 0.

mod dev_support;
mod support;

use std::time::Duration;

use dev_support::{Dev, eventually};

#[test]
fn tour_play_revoke_explain() {
    let mut dev = Dev::start(&[]);

    // The banner has everything a newcomer needs.
    for want in ["stile revoke --server", "stile explain", "ffmpeg", "ffplay", "curl", &dev.operator] {
        assert!(dev.banner.contains(want), "banner lacks {want:?}:\n{}", dev.banner);
    }

    // Every transport plays.
    support::ffmpeg_play(&dev.query_url, &[]).expect("the query link plays");
    support::ffmpeg_play(&dev.path_url, &[]).expect("the path link plays");
    let header = format!("Cookie: {}\r\n", dev.cookie);
    support::ffmpeg_play(&dev.cookie_url, &["-headers", &header]).expect("the cookie link plays");

    // Explain says it passes.
    let ok = dev.stile(&["explain", &dev.query_url]);
    assert_eq!(ok.code, 0, "{ok:?}");
    assert!(ok.stdout.contains("PASS"), "{}", ok.stdout);
    assert!(ok.stdout.contains("key 1 is ACTIVE"), "{}", ok.stdout);

    // The dev edge holds the sync stream to the control plane.
    let connected = eventually(Duration::from_secs(10), || {
        let e = dev.stile(&["edges", "ls", "--json"]).json();
        e["edges"].as_array().is_some_and(|a| a.len() == 1 && a[0]["edge_id"] == "dev")
    });
    assert!(connected, "{:?}", dev.stile(&["edges", "ls"]));

    // Revoke the link, as printed: --wait returns once the edge enforces it.
    let r = dev.stile(&["revoke", "--token-id", &dev.token_id, "--reason", "trying Stile", "--wait"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains(&format!("revoked token {}", dev.token_id)), "{}", r.stdout);
    assert!(r.stdout.contains("enforced by all 1 connected edges"), "{}", r.stdout);

    // The next fetch fails with reason revoked, within a fraction of a second.
    let target = Dev::target(&dev.query_url);
    let mut last = None;
    let denied = eventually(Duration::from_secs(5), || {
        let resp = support::get(dev.edge_port, &target, &[]).expect("the edge answers");
        let done = resp.status == 403 && resp.header("x-stile-reason") == Some("revoked");
        last = Some(resp);
        done
    });
    assert!(denied, "still admitted after revoke: {last:?}");
    assert!(support::ffmpeg_play(&dev.path_url, &[]).is_err(), "the path link no longer plays");

    // Explain names the reason, who, when and why, and exits 4.
    let ex = dev.stile(&["explain", &dev.query_url]);
    assert_eq!(ex.code, 4, "{ex:?}");
    let verdict = ex.stdout.lines().last().unwrap();
    assert!(verdict.starts_with("DENY revoked (403)"), "{verdict}");
    assert!(verdict.contains("dev-operator") && verdict.contains("\"trying Stile\""), "{verdict}");
    let j = dev.stile(&["explain", "--json", &dev.path_url]).json();
    assert_eq!(j["verdict"]["reason"], "revoked");
    assert_eq!(j["transport"], "path");

    // The edge logged its decisions on stderr, one line each.
    assert!(dev.stderr().contains("-> 403 deny revoked"), "{}", dev.stderr());

    // Ctrl-C exits cleanly.
    let status = dev.interrupt();
    assert_eq!(status.code(), Some(0), "{}", dev.stderr());
}

#[test]
fn dev_reuses_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    let mut first = Dev::start(&["--dir", path]);
    let r = first.stile(&["revoke", "--subject", "viewer-1", "--reason", "restart test"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(first.interrupt().code(), Some(0));
    assert!(dir.path().join("control.redb").exists());

    // Same store: the asset is already published, the revocation is still in force
    // (its links were issued before it), and a fresh link minted now plays.
    let second = Dev::start(&["--dir", path]);
    let list = second.stile(&["revocations", "ls", "--json"]).json();
    assert_eq!(list["revocations"].as_array().unwrap().len(), 1, "{list}");
    support::ffmpeg_play(&second.query_url, &[]).expect("a link minted after the revocation plays");
}
