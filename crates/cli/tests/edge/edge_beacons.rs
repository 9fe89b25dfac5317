//! Player beacons end to end (`docs/edge.md`, "Player beacons"): a real `stile edge`,
//! raw HTTP/1.1 `POST`s to `/vod/abc/_stile_beacon` carrying a playback session's
//! credential (query, cookie, path prefix) or a link. Accepted beacons count on the
//! link's channel with exact values and renew nothing; bad, oversized and flooding
//! beacons are refused and counted; refused credentials are denied like media
//! (`missing`, `revoked`); nothing reaches the origin; the access log says `beacon`
//! and carries no credential.

use std::time::Duration;

use serde_json::Value;
use stile_tests::edge::*;
use stile_tests::net::{Response, get, send};
use stile_tests::process::until;
use stile_tests::token::*;
use stile_token::{Claims, SessionPolicy, sign_with_session};

use super::edge_sessions::{cookie, rewritten};

const PAGE: &str = "https://player.example";

/// Two beacons per session per minute; the page's origin may read the edge's answers.
const CONFIG: &str = r#"
[diagnostics]
reason_header = true
[cookie]
enabled = true
secure = false
[cors]
allowed_origins = ["https://player.example"]
[beacon]
per_session_per_minute = 2
"#;

/// A master playlist and one segment under `/vod/abc/`.
fn content() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("vod/abc");
    std::fs::create_dir_all(base.join("v1")).unwrap();
    std::fs::write(base.join("v1/seg0.ts"), vec![0x47u8; 188]).unwrap();
    std::fs::write(base.join("master.m3u8"), "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=200000\nv1/index.m3u8\n").unwrap();
    // What a proxied beacon would find: the tests assert it is never asked for.
    std::fs::write(base.join("_stile_beacon"), "origin\n").unwrap();
    dir
}

/// A link for `channel`, with a session policy when `session`.
fn link(channel: &str, token_id: u64, session: bool) -> String {
    let mut c: Claims = claims();
    c.channel = Some(channel.into());
    c.token_id = stile_token::TokenId::from_u64(token_id);
    let policy = SessionPolicy { idle_secs: 60, max_secs: 600, bind_v4: 32, bind_v6: 64 };
    sign_with_session(&c, session.then_some(&policy), &ring()).unwrap()
}

/// One beacon: `POST target` with `body` as `text/plain` (what `navigator.sendBeacon` sends), from the page.
fn beacon(edge: &Edge, target: &str, body: &str, headers: &[(&str, &str)]) -> Response {
    let len = body.len().to_string();
    let mut h = vec![("Content-Type", "text/plain;charset=UTF-8"), ("Content-Length", len.as_str()), ("Origin", PAGE)];
    h.extend_from_slice(headers);
    send(edge.port, "POST", target, &h, body.as_bytes()).expect("edge answers")
}

fn metrics(edge: &Edge) -> String {
    String::from_utf8(get(edge.admin, "/metrics", &[]).expect("metrics").body).unwrap()
}

/// The value of the sample named exactly `series` (name and labels), 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse::<f64>().ok()).unwrap_or(0.0)
}

fn reason(r: &Response) -> Option<&str> {
    r.header("x-stile-reason")
}

/// The access-log lines of beacon requests.
fn beacon_lines(edge: &Edge) -> Vec<Value> {
    edge.log()
        .lines()
        .filter(|l| l.contains("\"stile::access\"") && l.contains("_stile_beacon"))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn a_sessions_beacons_count_on_its_channel_and_renew_nothing() {
    let content = content();
    let origin = Origin::start(content.path());
    let edge = Edge::start(&origin, CONFIG, &state_json(1, serde_json::json!([]), None));

    // A playback of the "email" channel by query token: the master's URIs carry its session.
    let master = edge.get(&format!("/vod/abc/master.m3u8?st={}", link("email", 0x0b01, true)), &[]);
    assert_eq!(master.status, 200);
    let cred = rewritten(&master);
    let url = format!("/vod/abc/_stile_beacon?st={cred}");

    let r = beacon(&edge, &url, r#"{"startup_ms":1500,"rebuffers":2,"rebuffer_ms":750,"v":1}"#, &[]);
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(r.header("access-control-allow-origin"), Some(PAGE), "readable from the page: {r:?}");
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert!(r.header("set-cookie").is_none() && r.body.is_empty(), "{r:?}");
    let r = beacon(&edge, &url, r#"{"rebuffers":1,"rebuffer_ms":250,"error":"network"}"#, &[]);
    assert_eq!(r.status, 204, "{r:?}");

    let m = metrics(&edge);
    for (series, want) in [
        (r#"stile_edge_player_startup_seconds_count{channel="email"}"#, 1.0),
        (r#"stile_edge_player_startup_seconds_sum{channel="email"}"#, 1.5),
        (r#"stile_edge_player_startup_seconds_bucket{channel="email",le="1"}"#, 0.0),
        (r#"stile_edge_player_startup_seconds_bucket{channel="email",le="2"}"#, 1.0),
        (r#"stile_edge_player_rebuffers_total{channel="email"}"#, 3.0),
        (r#"stile_edge_player_rebuffer_seconds_total{channel="email"}"#, 1.0),
        (r#"stile_edge_player_errors_total{channel="email",error="network"}"#, 1.0),
        (r#"stile_edge_player_beacons_total{result="accepted"}"#, 2.0),
        (
            r#"stile_edge_requests_total{channel="email",decision="allow",kind="beacon",reason="ok",transport="query"}"#,
            2.0,
        ),
        // Beacons are not playback: one start (the master), no renewal.
        (r#"stile_edge_playback_starts_total{channel="email"}"#, 1.0),
        (r#"stile_edge_playback_renewals_total{channel="email"}"#, 0.0),
    ] {
        assert_eq!(sample(&m, series), want, "{series}\n{m}");
    }

    // A third beacon of the session within the minute: over its budget, refused unread.
    let r = beacon(&edge, &url, "{}", &[]);
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(r.header("access-control-allow-origin"), Some(PAGE));
    // The budget refills at the next clock minute: Retry-After says when.
    let after: u64 = r.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&after), "{after}");

    // A link alone (a player failing before its session exists), channel "web".
    let web = link("web", 0x0b02, false);
    let at = format!("/vod/abc/_stile_beacon?st={web}");
    assert_eq!(beacon(&edge, &at, r#"{"error":"unplayable"}"#, &[]).status, 204);
    // Not JSON, and a body larger than 1 KiB (refused from its Content-Length, unread).
    assert_eq!(beacon(&edge, &at, "startup=12", &[]).status, 400);
    // (Another link: each link has its own budget, and this one spent it.)
    let other = format!("/vod/abc/_stile_beacon?st={}", link("web", 0x0b03, false));
    let big = send(edge.port, "POST", &other, &[("Content-Length", "5000")], b"").expect("edge answers");
    assert_eq!(big.status, 413, "{big:?}");
    // A chunked body is cut off as soon as it passes 1 KiB.
    let chunked = format!("{:x}\r\n{}\r\n0\r\n\r\n", 1100, "x".repeat(1100));
    let big = send(edge.port, "POST", &other, &[("Transfer-Encoding", "chunked")], chunked.as_bytes());
    assert_eq!(big.expect("edge answers").status, 413);
    // Only a POST is a beacon; other methods are not proxied either.
    let r = edge.get(&at, &[]);
    assert_eq!((r.status, r.header("allow")), (405, Some("POST")), "{r:?}");

    let m = metrics(&edge);
    for (series, want) in [
        (r#"stile_edge_player_errors_total{channel="web",error="unplayable"}"#, 1.0),
        (r#"stile_edge_player_beacons_total{result="accepted"}"#, 3.0),
        (r#"stile_edge_player_beacons_total{result="malformed"}"#, 1.0),
        (r#"stile_edge_player_beacons_total{result="too_large"}"#, 2.0),
        (r#"stile_edge_player_beacons_total{result="rate_limited"}"#, 1.0),
        (r#"stile_edge_player_beacons_total{result="method_not_allowed"}"#, 1.0),
        (r#"stile_edge_player_rebuffers_total{channel="web"}"#, 0.0),
    ] {
        assert_eq!(sample(&m, series), want, "{series}\n{m}");
    }

    // Nothing reached the origin but the master playlist.
    let lines = origin.request_lines();
    assert!(lines.iter().all(|l| !l.contains("_stile_beacon")), "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");

    // The access log: decision `beacon` with the result, never a credential.
    let logged = beacon_lines(&edge);
    assert_eq!(logged.len(), 8, "{logged:?}");
    let results: Vec<&str> = logged.iter().filter_map(|l| l["beacon"].as_str()).collect();
    assert_eq!(
        results,
        [
            "accepted",
            "accepted",
            "rate_limited",
            "accepted",
            "malformed",
            "too_large",
            "too_large",
            "method_not_allowed"
        ]
    );
    for l in &logged {
        assert_eq!(l["decision"], "beacon", "{l}");
        let text = l.to_string();
        let (link_part, session_part) = cred.rsplit_once('.').unwrap();
        assert!(!text.contains(link_part) && !text.contains(session_part) && !text.contains(&web), "{text}");
    }
}

#[test]
fn beacons_carry_credentials_like_media_and_are_refused_like_media() {
    let content = content();
    let origin = Origin::start(content.path());
    let edge = Edge::start(&origin, CONFIG, &state_json(1, serde_json::json!([]), None));

    // No credential at all: `missing`.
    let r = beacon(&edge, "/vod/abc/_stile_beacon", "{}", &[]);
    assert_eq!((r.status, reason(&r)), (401, Some("missing")), "{r:?}");
    assert_eq!(r.header("access-control-allow-origin"), Some(PAGE));

    // Cookie mode: the session cookie the master set, no credential in the URL.
    let master = edge.get(&format!("/vod/abc/master.m3u8?st={}", link("tv", 0x0c01, true)), &[]);
    let cred = cookie(&master).expect("a session cookie");
    let with_cookie = [("Cookie", format!("stile={cred}"))];
    let with_cookie: Vec<(&str, &str)> = with_cookie.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = beacon(&edge, "/vod/abc/_stile_beacon", r#"{"startup_ms":400}"#, &with_cookie);
    assert_eq!(r.status, 204, "{r:?}");
    assert!(r.header("set-cookie").is_none(), "a beacon renews no cookie: {r:?}");

    // Path prefix: the credential as the first segments, as the player's media URLs carry it.
    let path_link = link("tv", 0x0c02, false);
    let r = beacon(&edge, &format!("/_st/{path_link}/vod/abc/v1/_stile_beacon"), r#"{"rebuffers":4}"#, &[]);
    assert_eq!(r.status, 204, "{r:?}");
    // Out of the link's scope: refused like a segment would be.
    let r = beacon(&edge, &format!("/_st/{path_link}/vod/other/_stile_beacon"), "{}", &[]);
    assert_eq!((r.status, reason(&r)), (403, Some("scope")), "{r:?}");

    // Revoked: the session's link revoked, its beacons are refused like its segments.
    let revocation = serde_json::json!([{ "kind": "token_id", "value": "0000000000000c01" }]);
    std::fs::write(edge.dir.path().join("state.json"), state_json(2, revocation, None)).unwrap();
    until(Duration::from_secs(10), "the revocation", || {
        (sample(&metrics(&edge), "stile_edge_state_version") == 2.0).then_some(())
    });
    let r = beacon(&edge, "/vod/abc/_stile_beacon", "{}", &with_cookie);
    assert_eq!((r.status, reason(&r)), (403, Some("revoked")), "{r:?}");

    let m = metrics(&edge);
    for (series, want) in [
        (r#"stile_edge_player_startup_seconds_count{channel="tv"}"#, 1.0),
        (r#"stile_edge_player_startup_seconds_sum{channel="tv"}"#, 0.4),
        (r#"stile_edge_player_rebuffers_total{channel="tv"}"#, 4.0),
        (r#"stile_edge_player_beacons_total{result="accepted"}"#, 2.0),
        (r#"stile_edge_player_beacons_total{result="denied"}"#, 3.0),
        (
            r#"stile_edge_requests_total{channel="tv",decision="deny",kind="beacon",reason="revoked",transport="cookie"}"#,
            1.0,
        ),
    ] {
        assert_eq!(sample(&m, series), want, "{series}\n{m}");
    }
    let lines = origin.request_lines();
    assert!(lines.iter().all(|l| !l.contains("_stile_beacon")), "{lines:?}");
}

#[test]
fn the_edge_wide_bucket_refuses_a_flood_before_any_check() {
    let content = content();
    let origin = Origin::start(content.path());
    let config = "[beacon]\nrate_per_sec = 1\nburst = 3\n";
    let edge = Edge::start(&origin, config, &state_json(1, serde_json::json!([]), None));
    let at = format!("/vod/abc/_stile_beacon?st={}", link("web", 0x0d01, false));
    // Three from the burst (one link's budget is 12 a minute), then refused; a forged
    // credential is refused by the bucket too, before its signature is checked.
    let statuses: Vec<u16> = (0..5).map(|_| beacon(&edge, &at, "{}", &[]).status).collect();
    assert_eq!(statuses[..3], [204, 204, 204], "{statuses:?}");
    assert!(statuses[3..].iter().all(|&s| s == 429), "{statuses:?}");
    let forged = beacon(&edge, "/vod/abc/_stile_beacon?st=AAAA", "{}", &[]);
    assert_eq!(forged.status, 429);
    assert_eq!(forged.header("retry-after"), Some("1"), "the edge-wide bucket refills continuously");
    let m = metrics(&edge);
    assert_eq!(sample(&m, r#"stile_edge_player_beacons_total{result="rate_limited"}"#), 3.0, "{m}");
    assert_eq!(sample(&m, r#"stile_edge_player_beacons_total{result="accepted"}"#), 3.0, "{m}");
    // Only the beacons whose credential was checked are requests of the channel.
    let checked = m.lines().filter(|l| l.starts_with("stile_edge_requests_total{") && l.contains(r#"kind="beacon""#));
    let checked: Vec<&str> = checked.filter(|l| !l.ends_with(" 0")).collect();
    assert_eq!(
        checked,
        [r#"stile_edge_requests_total{channel="web",decision="allow",kind="beacon",reason="ok",transport="query"} 3"#]
    );
}

#[test]
fn a_foreign_links_beacon_is_answered_not_proxied() {
    let content = content();
    let origin = Origin::start(content.path());
    let config = "[diagnostics]\nreason_header = true\n[[foreign]]\nformat = \"bunny\"\nhosts = [\"127.0.0.1\"]\n\
                  path_prefixes = [\"/vod/\"]\n";
    let mut state: Value = serde_json::from_str(&state_json(1, serde_json::json!([]), None)).unwrap();
    state["foreign_keys"] = serde_json::json!([{ "format": "bunny", "name": "zone", "key": "bunny-zone-key" }]);
    let edge = Edge::start(&origin, config, &state.to_string());
    let claims = stile_foreign::bunny::Claims {
        path: "/vod/abc/v1/_stile_beacon",
        expires: now() + 600,
        token_path: Some("/vod/abc/"),
        ..Default::default()
    };
    let target = stile_foreign::bunny::sign(b"bunny-zone-key", &claims);
    let r = beacon(&edge, &target, r#"{"rebuffers":1}"#, &[]);
    assert_eq!(r.status, 204, "{r:?}\n{}", edge.log());
    let m = metrics(&edge);
    assert_eq!(sample(&m, r#"stile_edge_player_rebuffers_total{channel="none"}"#), 1.0, "{m}");
    assert_eq!(sample(&m, r#"stile_edge_foreign_requests_total{format="bunny",result="admitted"}"#), 1.0, "{m}");
    assert!(origin.request_lines().is_empty(), "{:?}", origin.request_lines());
}
