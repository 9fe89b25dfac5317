//! Browser playback, end to end and without mocks: a real `stile dev` (control plane,
//! edge, sample origin, player page with its sample backend), real headless Chromium
//! (Debian's `chromium`, driven by playwright-core from `npm ci`), the embed kit's
//! example page with hls.js and dash.js from npm. One scenario per test
//! (`tests/browser/run.mjs` drives the browser and reports JSON):
//!
//! - HLS and DASH × query, path and cookie links play (`currentTime` past 5 s, a
//!   picture decoded, no fatal player error), and the edge admitted them by that
//!   transport, and the kit's startup beacon was accepted by the same transport;
//! - a revocation mid-playback is reported as `revoked` within one segment duration
//!   plus one request;
//! - a forged link shows its reason to the viewer, and error reports carry no token;
//! - playback sessions: a 10-second link plays on past its expiry, and revoking its
//!   subject or its key stops it within a segment; a 30-second link plays the 3-minute
//!   film to its end, and the edge counts one start and one session at completion 1.0;
//! - a session credential issued by the dev edge plays, past its link's expiry, on a
//!   second edge that holds the same keys (viewers move between edges);
//! - a page on another site (`localhost` against the edge's `127.0.0.1`) plays query
//!   links through CORS, and its cookie-mode link fails with `missing` (a cookie is
//!   not sent across sites);
//! - `stile dev --tls`: HLS and DASH play from the HTTPS edge, every segment over
//!   HTTP/2 and TLS 1.3 (Chromium trusts the dev edge's certificate by its key).
//!
//! A screenshot per scenario goes to `target/browser-artefacts/`. These tests run in
//! nextest's `browser` group (one at a time, `.config/nextest.toml`). Without Chromium
//! or `npm ci` they fail under `CI=true` and are skipped loudly otherwise.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use stile_tests::dev::Dev;
use stile_tests::net;
use stile_tests::process::wait_bounded;

/// The sample's segment duration (crates/cli/src/dev/sample.rs).
const SEGMENT_MS: u64 = 2_000;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn chromium() -> PathBuf {
    std::env::var_os("STILE_CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// Chromium, node and `npm ci`'s packages are there; else fail in CI, skip loudly elsewhere.
fn ready() -> bool {
    let node_modules = repo().join("node_modules");
    let missing: Vec<String> = [
        (chromium().is_file(), "chromium (apt-get install chromium)".to_owned()),
        (
            Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success()),
            "node (apt-get install npm)".into(),
        ),
        (node_modules.join("playwright-core/package.json").is_file(), "playwright-core (npm ci)".into()),
        (node_modules.join("hls.js/dist/hls.min.js").is_file(), "hls.js (npm ci)".into()),
        (node_modules.join("dashjs/dist/modern/umd/dash.all.min.js").is_file(), "dash.js (npm ci)".into()),
    ]
    .into_iter()
    .filter(|(ok, _)| !ok)
    .map(|(_, what)| what)
    .collect();
    if missing.is_empty() {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    assert!(!ci, "CI is set but the browser tests lack {missing:?}: run scripts/install-deps");
    eprintln!("SKIPPED browser test: missing {missing:?} (scripts/install-deps installs them)");
    false
}

fn start_dev() -> Dev {
    let node_modules = repo().join("node_modules");
    Dev::start(&["--node-modules", node_modules.to_str().unwrap()])
}

fn artefact(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo().join("target"), PathBuf::from);
    let dir = target.join("browser-artefacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{name}.png"))
}

/// Runs one scenario (`tests/browser/run.mjs`), bounded to two minutes; its JSON report.
fn scenario(dev: &Dev, name: &str, args: Value) -> Value {
    scenario_bounded(dev, name, args, Duration::from_secs(120))
}

/// [`scenario`] with its own bound.
fn scenario_bounded(dev: &Dev, name: &str, mut args: Value, bound: Duration) -> Value {
    let shot = artefact(name);
    let _ = std::fs::remove_file(&shot);
    args["screenshot"] = json!(shot);
    args["chromium"] = json!(chromium());
    args["stile"] = json!(env!("CARGO_BIN_EXE_stile"));
    args["server"] = json!(dev.server);
    args["operator"] = json!(dev.operator);
    if let Some(ca) = &dev.ca_file {
        // `stile dev --tls`: the edge's certificate sits beside the CA (DIR/tls/).
        args["ca_file"] = json!(ca);
        args["edge_cert"] = json!(Path::new(ca).with_file_name("edge.pem"));
    }
    if args.get("page").is_none() {
        args["page"] = json!(format!("http://127.0.0.1:{}/", dev.base + 4));
    }
    let logs = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (logs.path().join("out"), logs.path().join("err"));
    let mut child = Command::new("node")
        .arg(repo().join("tests/browser/run.mjs"))
        .arg(args.to_string())
        .current_dir(repo())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("node runs");
    let status = wait_bounded(&mut child, bound, name);
    let out = std::fs::read_to_string(&out_path).unwrap_or_default();
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert!(status.success(), "{name}: node failed ({status}): {err}\n{out}");
    let report: Value = serde_json::from_str(out.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{name}: no JSON report ({e}): {out}\n{err}"));
    assert!(report.get("exception").is_none(), "{name}: {report:#}");
    let png = std::fs::metadata(&shot).unwrap_or_else(|e| panic!("{name}: no screenshot {}: {e}", shot.display()));
    assert!(png.len() > 5_000, "{name}: screenshot too small to show anything");
    report
}

/// Plays `format` over `transport` on the dev page and checks it really played.
fn plays(format: &str, transport: &str) {
    if !ready() {
        return;
    }
    let dev = start_dev();
    plays_on(&dev, &format!("{format}-{transport}"), format, transport);
}

/// Plays `format` over `transport` on `dev`'s page and checks it really played; the report.
fn plays_on(dev: &Dev, name: &str, format: &str, transport: &str) -> Value {
    let r = scenario(dev, name, json!({"scenario": "play", "format": format, "transport": transport}));
    let p = &r["played"];
    assert!(p["currentTime"].as_f64().unwrap() >= 5.0, "playback did not advance 5 s: {r:#}");
    assert_eq!(p["state"], "playing", "{r:#}");
    assert_played_cleanly(&r);
    assert_eq!(p["engine"], if format == "dash" { "dash.js" } else { "hls.js" }, "{r:#}");
    assert!(p["videoWidth"].as_u64().unwrap() >= 320, "no picture decoded: {r:#}");
    assert!(r["picture_colours"].as_u64().unwrap() >= 8, "the frame on screen is not the test pattern: {r:#}");
    // The edge admitted this link by the transport under test, segments included.
    let id = p["link"]["token_id"].as_str().unwrap();
    let seen = format!("({transport}, token {id})");
    let segments = dev.stderr().lines().filter(|l| l.contains(".m4s -> 200 allow") && l.contains(&seen)).count();
    assert!(segments >= 4, "the edge admitted {segments} segments by {transport} for {id}:\n{}", dev.stderr());
    // The kit's startup beacon reached the edge with the same credential transport and was counted.
    let beacons = dev
        .stderr()
        .lines()
        .filter(|l| l.contains("/_stile_beacon -> 204 beacon") && l.contains(&format!("({transport}")))
        .count();
    assert!(beacons >= 1, "no beacon accepted by {transport}:\n{}", dev.stderr());
    r
}

/// `stile dev --tls`: the page plays the edge's `https://` links in Chromium, HLS and
/// DASH, every segment over HTTP/2 and TLS 1.3. Chromium trusts only the dev edge's
/// certificate (its public key, pinned from `DIR/tls/edge.pem`) beyond its own store.
#[test]
fn hls_and_dash_play_over_https_and_http2() {
    if !ready() {
        return;
    }
    let node_modules = repo().join("node_modules");
    let dev = Dev::start(&["--tls", "--node-modules", node_modules.to_str().unwrap()]);
    assert!(dev.query_url.starts_with(&format!("https://127.0.0.1:{}/", dev.edge_port)), "{}", dev.banner);
    for (format, transport) in [("hls", "query"), ("dash", "path")] {
        let r = plays_on(&dev, &format!("tls-{format}-{transport}"), format, transport);
        assert_eq!(r["segment_protocols"], json!(["h2 TLS 1.3"]), "{format}: {r:#}");
    }
}

/// No fatal player error and no refusal reached the player. A non-fatal one (hls.js's
/// `bufferStalledError` when the two cores are busy) is the player recovering by itself.
fn assert_played_cleanly(r: &Value) {
    for e in r["played"]["errors"].as_array().unwrap() {
        assert_eq!(e["fatal"], false, "a fatal player error: {r:#}");
        assert!(
            e.get("status").is_none_or(Value::is_null) && e.get("reason").is_none_or(Value::is_null),
            "a refusal: {r:#}"
        );
    }
}

#[test]
fn hls_query_link_plays() {
    plays("hls", "query");
}

#[test]
fn hls_path_link_plays() {
    plays("hls", "path");
}

#[test]
fn hls_cookie_link_plays_on_the_same_site() {
    plays("hls", "cookie");
}

#[test]
fn dash_query_link_plays() {
    plays("dash", "query");
}

#[test]
fn dash_path_link_plays() {
    plays("dash", "path");
}

#[test]
fn dash_cookie_link_plays_on_the_same_site() {
    plays("dash", "cookie");
}

/// Revokes the playing link; the player must say `revoked` within one segment plus one request.
fn revoke_is_reported(format: &str) {
    revoked_by(format, "token", json!({}));
}

/// Revokes `by` the link's token id, its subject or its key while it plays (`extra`:
/// more scenario arguments); the player must say `revoked` within one segment plus one
/// request.
fn revoked_by(format: &str, by: &str, extra: Value) {
    if !ready() {
        return;
    }
    let dev = start_dev();
    let mut args = json!({"scenario": "revoke", "format": format, "transport": "query", "by": by});
    args.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    let after = args["revoke_after"].as_f64().unwrap_or(3.0);
    let r = scenario(&dev, &format!("{format}-revoked-by-{by}"), args);
    assert!(r["before"]["currentTime"].as_f64().unwrap() >= after, "did not play before the revocation: {r:#}");
    let after = &r["after"];
    assert_eq!((&after["state"], &after["reason"]), (&json!("stopped"), &json!("revoked")), "{r:#}");
    assert_eq!(after["message"], "This link was revoked.", "{r:#}");
    let ms = r["revoked_to_reported_ms"].as_u64().unwrap();
    assert!(ms <= SEGMENT_MS + 1_000, "reported {ms} ms after the revocation was enforced: {r:#}");
    for e in after["errors"].as_array().unwrap() {
        let url = e["url"].as_str().unwrap_or("");
        assert!(url.is_empty() || url.ends_with("st=REDACTED"), "an error report carries a token: {e}");
    }
}

#[test]
fn hls_revocation_mid_playback_is_reported_within_a_segment() {
    revoke_is_reported("hls");
}

#[test]
fn dash_revocation_mid_playback_is_reported_within_a_segment() {
    revoke_is_reported("dash");
}

/// Sessions die with every revocation that matches their link: a 10-second link plays
/// past its expiry on its session (query transport), then its subject, or its key, is
/// revoked; the player stops within a segment.
#[test]
fn a_session_past_its_link_ends_when_the_subject_is_revoked() {
    revoked_by("hls", "subject", json!({"ttl": 10, "revoke_after": 18}));
}

#[test]
fn a_session_past_its_link_ends_when_its_key_is_revoked() {
    revoked_by("hls", "key", json!({"ttl": 10, "revoke_after": 18}));
}

#[test]
fn a_forged_link_shows_the_reason_and_reports_no_token() {
    if !ready() {
        return;
    }
    let dev = start_dev();
    for format in ["hls", "dash"] {
        let r = scenario(
            &dev,
            &format!("{format}-forged"),
            json!({"scenario": "forged", "format": format, "transport": "query"}),
        );
        let after = &r["after"];
        assert_eq!((&after["state"], &after["reason"]), (&json!("stopped"), &json!("bad_signature")), "{r:#}");
        assert_eq!(
            after["message"], "This link is not valid. Check that it was copied completely, or ask for a new one.",
            "{r:#}"
        );
        assert_eq!(r["token_in_errors"], false, "{r:#}");
        assert!(!after["errors"].as_array().unwrap().is_empty(), "the refusal was reported: {r:#}");
    }
}

#[test]
fn a_short_link_plays_past_its_expiry_on_its_playback_session() {
    if !ready() {
        return;
    }
    let dev = start_dev();
    // 10-second links (+ the edge's 5 s leeway) on `stile dev`'s policy, which turns playback
    // sessions on (docs/sessions.md): the edge answers the playlist with a session credential
    // in its URLs and renews it on every playlist fetch, so hls.js plays on past the link's
    // expiry with no error and no trip to the page's backend for a fresh link.
    let r = scenario(
        &dev,
        "hls-short-link-session",
        json!({"scenario": "play", "format": "hls", "transport": "query", "ttl": 10, "play_secs": 22}),
    );
    let p = &r["played"];
    assert!(p["currentTime"].as_f64().unwrap() >= 22.0, "playback stopped: {r:#}");
    assert_eq!(p["state"], "playing", "{r:#}");
    assert_played_cleanly(&r);
    let (first, last) = (r["first_link"]["token_id"].as_str().unwrap(), p["link"]["token_id"].as_str().unwrap());
    assert_eq!(first, last, "the page had to fetch a new link: {r:#}");
    assert!(
        r["first_link"]["expires_at"].as_u64().unwrap() + 5 < stile_tests::token::now(),
        "the link did not expire: {r:#}"
    );
    assert!(!dev.stderr().contains(&format!("deny expired (query, token {first})")), "{}", dev.stderr());
}

#[test]
fn a_page_on_another_site_plays_through_cors_but_cannot_use_cookies() {
    if !ready() {
        return;
    }
    let dev = start_dev();
    // The page on localhost, the edge on 127.0.0.1: another site and origin; CORS admits it.
    let page = format!("http://localhost:{}/", dev.base + 4);
    for (format, transport) in [("hls", "query"), ("dash", "path")] {
        let r = scenario(
            &dev,
            &format!("cross-site-{format}-{transport}"),
            json!({"scenario": "play", "page": page, "format": format, "transport": transport}),
        );
        let p = &r["played"];
        assert!(p["currentTime"].as_f64().unwrap() >= 5.0 && p["errors"] == json!([]), "{r:#}");
        assert!(r["picture_colours"].as_u64().unwrap() >= 8, "{r:#}");
    }
    // The backend's cookie belongs to localhost: the browser never sends it to 127.0.0.1.
    let r = scenario(
        &dev,
        "cross-site-cookie",
        json!({"scenario": "play", "page": page, "format": "hls", "transport": "cookie"}),
    );
    assert_eq!((&r["played"]["state"], &r["played"]["reason"]), (&json!("stopped"), &json!("missing")), "{r:#}");
}

/// The case: a 30-second link plays the 3-minute sample to the end in Chromium
/// with a 6 s forward buffer (at twice the normal rate, so the film takes 90 s — 55 s
/// past the link's expiry and leeway), on its playback session, with no new link and no
/// denial. Then what the edge counted matches what the browser did: one start on the
/// page's channel, one startup time from the kit's beacon and, once the link is revoked and the last segment the player fetched
/// is asked for again with its credential, one session ended `revoked` at completion 1.0,
/// logged once as `session.ended`.
#[test]
fn a_30_second_link_plays_the_whole_film_and_the_edge_counts_one_complete_playback() {
    if !ready() {
        return;
    }
    let dev = start_dev();
    let args = json!({
        "scenario": "play", "format": "hls", "transport": "query",
        "ttl": 30, "buffer": 6, "rate": 2, "play_secs": "to_end", "then_revoke": true,
    });
    let r = scenario_bounded(&dev, "hls-30s-link-whole-film", args, Duration::from_secs(240));
    let p = &r["played"];
    assert_eq!(p["ended"], true, "the film did not play to the end: {r:#}");
    assert!(p["currentTime"].as_f64().unwrap() >= 178.0, "{r:#}");
    assert_played_cleanly(&r);
    let (first, last) = (r["first_link"]["token_id"].as_str().unwrap(), p["link"]["token_id"].as_str().unwrap());
    assert_eq!(first, last, "the page had to fetch a new link: {r:#}");
    assert!(
        r["first_link"]["expires_at"].as_u64().unwrap() + 5 < stile_tests::token::now(),
        "the link did not expire during the film: {r:#}"
    );
    assert_eq!(r["refetch"], json!({"status": 403, "reason": "revoked"}), "{r:#}");

    let admin = dev.base + 2;
    let channel = "channel=\"embed:dev-page\"";
    let metric = |series: &str| net::metric(admin, series).unwrap_or_else(|| panic!("no {series}"));
    assert_eq!(metric(&format!("stile_edge_playback_starts_total{{{channel}}}")), 1.0);
    assert_eq!(metric(&format!("stile_edge_playback_ended_total{{cause=\"revoked\",{channel}}}")), 1.0);
    assert_eq!(metric(&format!("stile_edge_playback_completion_ratio_count{{{channel}}}")), 1.0);
    let completion = metric(&format!("stile_edge_playback_completion_ratio_sum{{{channel}}}"));
    assert!(completion > 0.98, "completion {completion}, the browser played to the end");
    // The kit's beacon: one startup, reported once, on the page's channel.
    assert_eq!(metric(&format!("stile_edge_player_startup_seconds_count{{{channel}}}")), 1.0);
    let events = dev.log();
    let ended: Vec<&str> = events.lines().filter(|l| l.contains("session.ended")).collect();
    assert_eq!(ended.len(), 1, "one session.ended event: {ended:?}");
    assert!(ended[0].contains("revoked") && ended[0].contains("embed:dev-page"), "{}", ended[0]);
    assert!(ended[0].contains("completion=1"), "{}", ended[0]);
    let log = dev.stderr();
    assert!(!log.contains(&format!("deny expired (query, token {first})")), "{log}");
    assert!(!log.contains(&format!("deny session_expired (query, token {first})")), "{log}");
}

/// A session taken to another edge still plays: the dev edge (A) answers a 10-second
/// link's master playlist with session credentials in its URLs; the browser then plays
/// that master playlist with its session credential from a second edge (B: another
/// `stile edge` process with the same sample origin and the dev edge's keys, from its
/// state file), past the link's expiry, every segment admitted by B under the session,
/// none fetched from A.
#[test]
fn a_session_issued_by_one_edge_plays_on_another() {
    if !ready() {
        return;
    }
    let dev = start_dev();
    let page = dev.base + 4;
    let link = net::get(page, "/api/link?format=hls&transport=query&ttl=10", &[]).expect("the page's backend answers");
    assert_eq!(link.status, 200, "{link:?}");
    let link: Value = serde_json::from_slice(&link.body).unwrap();
    let (token_id, expires_at) = (link["token_id"].as_str().unwrap(), link["expires_at"].as_u64().unwrap());
    let target = Dev::target(link["url"].as_str().unwrap());
    let master = net::get(dev.edge_port, &target, &[]).expect("edge A answers");
    assert_eq!(master.status, 200, "{master:?}");
    let body = String::from_utf8(master.body).unwrap();
    let uri = body.lines().find(|l| !l.starts_with('#') && l.contains("st=")).unwrap_or_else(|| panic!("{body}"));
    let session = uri.split("st=").nth(1).unwrap().split('&').next().unwrap();
    assert!(stile_token::session::is_session(session), "edge A put a session credential in {uri}");

    let state = std::fs::read_to_string(dev.state_dir().join("edge-state.json")).unwrap();
    let cors = format!(
        "[cors]\nallowed_origins = [\"http://127.0.0.1:{page}\"]\nallow_credentials = true\n\
         [diagnostics]\nreason_header = true\n"
    );
    let b = stile_tests::edge::Edge::start(&stile_tests::edge::Origin::external(dev.base + 3), &cors, &state);
    let path = target.split('?').next().unwrap();
    let src = format!("http://127.0.0.1:{}{path}?st={session}", b.port);
    let args = json!({"scenario": "play", "format": "hls", "transport": "query", "src": src, "play_secs": 20});
    let r = scenario(&dev, "hls-session-on-another-edge", args);
    let p = &r["played"];
    assert!(p["currentTime"].as_f64().unwrap() >= 20.0, "playback stopped: {r:#}");
    assert_eq!(p["state"], "playing", "{r:#}");
    assert_played_cleanly(&r);
    assert!(expires_at + 5 < stile_tests::token::now(), "the link did not expire during playback: {r:#}");

    // Edge B admitted the segments under the session of A's link; A served no segment of it.
    let field = |v: &Value, k: &str| v.get(k).or_else(|| v.get("fields").and_then(|f| f.get(k))).cloned();
    let on_b = b
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| field(v, "path").is_some_and(|p| p.as_str().is_some_and(|p| p.ends_with(".m4s"))))
        .filter(|v| field(v, "token.id") == Some(json!(token_id)) && field(v, "status") == Some(json!(200)))
        .filter(|v| field(v, "session.id").is_some())
        .count();
    assert!(on_b >= 8, "edge B admitted {on_b} segments under the session:\n{}", b.log());
    let on_a = dev.stderr().lines().filter(|l| l.contains(".m4s -> 200") && l.contains(token_id)).count();
    assert_eq!(on_a, 0, "edge A served segments:\n{}", dev.stderr());
}
