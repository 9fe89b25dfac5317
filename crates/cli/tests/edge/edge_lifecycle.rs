//! End to end: startup refusals (exit 64, nothing bound), the admin listener,
//! state reloads (file change, SIGHUP, a bad file keeps the old state), CORS,
//! diagnostics off, and graceful shutdown on SIGTERM.

use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use stile_tests::edge::*;
use stile_tests::net::*;
use stile_tests::token::*;
use stile_token::TokenId;

fn content() -> (tempfile::TempDir, Origin) {
    one_segment_origin()
}

/// Runs `stile edge` with this config and expects exit 64 with `needle` on stderr, and nothing bound.
fn refuses(extra: &str, state: Option<&str>, needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let path = Edge::write_config(dir.path(), 1, port, admin, extra, "", state.unwrap_or("{}"));
    if state.is_none() {
        std::fs::remove_file(dir.path().join("state.json")).unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_stile")).args(["edge", "--config"]).arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{extra}: {stderr}");
    assert!(stderr.contains(needle), "{extra}: expected {needle:?} in {stderr}");
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err() && TcpStream::connect(("127.0.0.1", admin)).is_err());
}

#[test]
fn bad_startup_inputs_exit_64_before_binding() {
    let good = state_json(1, serde_json::json!([]), None);
    refuses("threads = 0", Some(&good), "threads");
    refuses("no_such_field = 1", Some(&good), "unknown field");
    refuses("", None, "cannot read state file");
    refuses("", Some("{\"version\": 1, \"keys\": [{\"id\": 1, \"secret\": \"AAAA\"}]}"), "32 bytes");
    refuses(
        &format!("[client]\ngeoip_db = \"{}/GeoIP2-City-Test-Invalid-Node-Count.mmdb\"", stile_tests::edge::GEOIP_DIR),
        Some(&good),
        "GeoIP database",
    );
    let out =
        Command::new(env!("CARGO_BIN_EXE_stile")).args(["edge", "--config", "/nonexistent.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let out = Command::new(env!("CARGO_BIN_EXE_stile")).args(["edge"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn admin_listener_serves_health_readiness_and_metrics() {
    let (_c, origin) = content();
    let edge = Edge::start(&origin, BASE_CONFIG, &state_json(7, serde_json::json!([]), None));
    let token = mint(|_| {});
    assert_eq!(edge.get(&format!("/vod/abc/seg.ts?st={token}"), &[]).status, 200);
    assert_eq!(edge.get("/vod/abc/seg.ts", &[]).status, 401);
    assert_eq!(edge.get("/vod/abc/seg.ts?st=x", &[]).status, 403);
    assert_eq!(get(edge.admin, "/healthz", &[]).unwrap().status, 200);
    assert_eq!(get(edge.admin, "/readyz", &[]).unwrap().status, 200);
    assert_eq!(get(edge.admin, "/nope", &[]).unwrap().status, 404);
    let m = String::from_utf8(get(edge.admin, "/metrics", &[]).unwrap().body).unwrap();
    for want in [
        r#"stile_edge_requests_total{channel="email",decision="allow",kind="segment",reason="ok",transport="query"} 1"#,
        r#"stile_edge_requests_total{channel="none",decision="deny",kind="segment",reason="missing",transport="none"} 1"#,
        r#"stile_edge_requests_total{channel="none",decision="deny",kind="segment",reason="malformed",transport="query"} 1"#,
        r#"stile_edge_upstream_responses_total{class="2xx"} 1"#,
        "stile_edge_validation_duration_seconds_count 3",
        "stile_edge_state_version 7",
        "stile_edge_keys 1",
        r#"stile_edge_revocation_entries{kind="token_id"} 0"#,
    ] {
        assert!(m.contains(want), "missing {want} in\n{m}");
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn state_reloads_on_change_and_sighup_and_keeps_the_old_state_on_error() {
    let (_c, origin) = content();
    let edge = Edge::start(&origin, BASE_CONFIG, &state_json(1, serde_json::json!([]), None));
    let state = edge.dir.path().join("state.json");
    let t1 = mint(|c| c.token_id = TokenId::from_u64(1));
    let t2 = mint(|c| c.token_id = TokenId::from_u64(2));
    let status = |t: &str| edge.get(&format!("/vod/abc/seg.ts?st={t}"), &[]).status;
    assert_eq!((status(&t1), status(&t2)), (200, 200));

    // File change: revoke token 1.
    let rev = |id: &str| serde_json::json!([{ "kind": "token_id", "value": id, "expires_at": now() + 600 }]);
    std::fs::write(&state, state_json(2, rev("0000000000000001"), None)).unwrap();
    wait_until("token 1 revoked", || status(&t1) == 403);
    assert_eq!(status(&t2), 200);

    // A bad file is refused; the old state stays in force.
    std::fs::write(&state, "{ not json").unwrap();
    wait_until("reload error counted", || {
        let m = String::from_utf8(get(edge.admin, "/metrics", &[]).unwrap().body).unwrap();
        m.contains(r#"stile_edge_state_reloads_total{result="error"} 1"#)
    });
    assert_eq!((status(&t1), status(&t2)), (403, 200));

    // SIGHUP reloads at once.
    std::fs::write(&state, state_json(3, rev("0000000000000002"), None)).unwrap();
    edge.signal("HUP");
    wait_until("token 2 revoked", || status(&t2) == 403);
    assert_eq!(status(&t1), 200);

    // A lower version is refused.
    std::fs::write(&state, state_json(2, serde_json::json!([]), None)).unwrap();
    edge.signal("HUP");
    wait_until("backwards version refused", || edge.log().contains("version goes backwards"));
    assert_eq!(status(&t2), 403);
}

#[test]
fn cors_preflight_needs_no_token_and_diagnostics_can_be_off() {
    let (_c, origin) = content();
    let extra = "[cors]\nallowed_origins = [\"https://player.example\"]\n";
    let edge = Edge::start(&origin, extra, &state_json(1, serde_json::json!([]), None));
    let pre = request(
        edge.port,
        "OPTIONS",
        "/vod/abc/seg.ts",
        &[
            ("Origin", "https://player.example"),
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "range"),
        ],
    )
    .unwrap();
    assert_eq!(pre.status, 204);
    assert_eq!(pre.header("access-control-allow-origin"), Some("https://player.example"));
    assert_eq!(pre.header("access-control-allow-headers"), Some("range"));
    assert!(pre.header("access-control-allow-methods").unwrap().contains("GET"));
    // Another origin gets no preflight answer: it is validated like any request.
    let other = request(
        edge.port,
        "OPTIONS",
        "/vod/abc/seg.ts",
        &[("Origin", "https://evil.example"), ("Access-Control-Request-Method", "GET")],
    )
    .unwrap();
    assert_eq!(other.status, 401);
    assert_eq!(other.header("access-control-allow-origin"), None);
    // Admitted and denied responses carry CORS headers for the allowed origin.
    let token = mint(|_| {});
    let ok = edge.get(&format!("/vod/abc/seg.ts?st={token}"), &[("Origin", "https://player.example")]);
    assert_eq!((ok.status, ok.header("access-control-allow-origin")), (200, Some("https://player.example")));
    let denied = edge.get("/vod/abc/seg.ts?st=bad", &[("Origin", "https://player.example")]);
    assert_eq!((denied.status, denied.header("access-control-allow-origin")), (403, Some("https://player.example")));
    // Diagnostics are off by default: no reason header.
    assert_eq!(denied.header("x-stile-reason"), None);
    assert_eq!(denied.body, b"forbidden\n");
}

#[test]
fn sigterm_drains_within_the_grace_period() {
    let (_c, origin) = content();
    let mut edge = Edge::start(&origin, BASE_CONFIG, &state_json(1, serde_json::json!([]), None));
    let started = Instant::now();
    edge.signal("TERM");
    let deadline = started + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = edge.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "edge did not exit after SIGTERM: {}", edge.log());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}: {}", edge.log());
    // grace 1 s + shutdown timeout 1 s, and a little slack.
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert!(edge.log().contains("SIGTERM received"), "{}", edge.log());
}

#[test]
fn zero_downtime_upgrade_hands_the_sockets_over() {
    let (_c, origin) = content();
    let mut old = Edge::start(&origin, BASE_CONFIG, &state_json(1, serde_json::json!([]), None));
    let config = old.dir.path().join("edge.toml");
    let token = mint(|_| {});
    let target = format!("/vod/abc/seg.ts?st={token}");

    let mut new = Edge::spawn(&config, &["-u"]);
    // The new process waits on the upgrade socket; give it time to listen there.
    wait_until("new edge waiting for sockets", || old.dir.path().join("upgrade.sock").exists());
    std::thread::sleep(Duration::from_millis(200));
    old.signal("QUIT");

    // Requests keep succeeding while the old process drains and exits.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut served = 0;
    while old.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "old edge did not exit: {}", old.log());
        let r = get(old.port, &target, &[]).unwrap_or_else(|| panic!("request failed during upgrade: {}", old.log()));
        assert_eq!(r.status, 200);
        served += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(served > 0);
    assert!(new.try_wait().unwrap().is_none(), "new edge exited: {}", old.log());
    assert_eq!(get(old.port, &target, &[]).unwrap().status, 200, "served by the new process");
    assert_eq!(get(old.admin, "/readyz", &[]).unwrap().status, 200);
    let _ = new.kill();
    let _ = new.wait();
}

#[test]
fn origin_down_is_a_502_counted_and_logged_without_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let (port, admin, dead) = (free_port(), free_port(), free_port());
    let state = state_json(1, serde_json::json!([]), None);
    let config = Edge::write_config(dir.path(), dead, port, admin, BASE_CONFIG, "", &state);
    let child = Edge::spawn(&config, &[]);
    let mut edge = Edge { port, admin, dir, child };
    edge.wait_ready();
    let token = mint(|_| {});
    let r = edge.get(&format!("/vod/abc/seg.ts?st={token}"), &[]);
    assert_eq!(r.status, 502);
    let m = String::from_utf8(get(edge.admin, "/metrics", &[]).unwrap().body).unwrap();
    assert!(m.contains(r#"stile_edge_upstream_errors_total{kind="connect"} 1"#), "{m}");
    wait_until("error logged", || edge.log().contains("Fail to proxy"));
    let log = edge.log();
    assert!(!log.contains(&token), "token in log: {log}");
    assert!(log.contains("GET /vod/abc/seg.ts"), "{log}");
}
