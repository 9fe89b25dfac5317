//! Per-share playback outcomes end to end (`docs/sessions.md`, "Outcomes"): a real
//! `stile edge` with a short idle sweep, raw HTTP/1.1 requests playing a VOD HLS
//! stream (and a static DASH presentation) under playback sessions. Starts and renewals per channel, sessions ended
//! by the idle sweep (with the completion the segments fetched reached), by
//! revocation, by the hard maximum and by an expired credential, and the one
//! `session.ended` log event per playback, which carries no credential.

use std::time::Duration;

use serde_json::Value;
use stile_tests::edge::*;
use stile_tests::net::get;
use stile_tests::process::until;
use stile_tests::token::*;
use stile_token::session::Session;
use stile_token::{Claims, SessionPolicy, sign_with_session};

use super::edge_sessions::{cookie, rewritten};

/// Leeway 0 so that times are exact to the second; a 100 ms idle sweep.
const CONFIG: &str = r#"
[diagnostics]
reason_header = true
[cookie]
enabled = true
secure = false
[token]
leeway_secs = 0
[outcomes]
sweep_interval_ms = 100
"#;

/// Segments in the VOD playlist, each 2 s long.
const SEGMENTS: usize = 4;

/// A master playlist and a VOD media playlist of [`SEGMENTS`] 2-second segments (8 s).
fn content() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("vod/abc");
    std::fs::create_dir_all(base.join("v1")).unwrap();
    let mut media = String::from("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n");
    for i in 0..SEGMENTS {
        std::fs::write(base.join(format!("v1/seg{i}.ts")), vec![0x47u8; 188]).unwrap();
        media.push_str(&format!("#EXTINF:2.000,\nseg{i}.ts\n"));
    }
    media.push_str("#EXT-X-ENDLIST\n");
    std::fs::write(base.join("v1/index.m3u8"), media).unwrap();
    std::fs::write(base.join("master.m3u8"), "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=200000\nv1/index.m3u8\n").unwrap();
    dir
}

/// A link for `channel` with a session policy, valid for `ttl` more seconds.
fn link(channel: &str, token_id: u64, idle: u32, max: u32) -> String {
    let mut c: Claims = claims();
    c.issued_at = now() - 1;
    c.expires_at = now() + 60;
    c.channel = Some(channel.into());
    c.token_id = stile_token::TokenId::from_u64(token_id);
    let policy = SessionPolicy { idle_secs: idle, max_secs: max, bind_v4: 32, bind_v6: 64 };
    sign_with_session(&c, Some(&policy), &ring()).unwrap()
}

fn session_id(credential: &str) -> String {
    Session::parse(credential).unwrap().id().to_string()
}

fn metrics(edge: &Edge) -> String {
    String::from_utf8(get(edge.admin, "/metrics", &[]).expect("metrics").body).unwrap()
}

/// The value of the sample named exactly `series` (name and labels), 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse::<f64>().ok()).unwrap_or(0.0)
}

/// Waits (10 s at most) until `series` reaches `want`.
fn wait_for(edge: &Edge, series: &str, want: f64) -> String {
    until(Duration::from_secs(10), series, || {
        let m = metrics(edge);
        (sample(&m, series) >= want).then_some(m)
    })
}

/// The `session.ended` events of the edge's log.
fn ended_events(edge: &Edge) -> Vec<Value> {
    edge.log()
        .lines()
        .filter(|l| l.contains("\"session.ended\""))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn ended_event(edge: &Edge, id: &str) -> Value {
    let events: Vec<Value> = ended_events(edge).into_iter().filter(|e| e["session.id"] == id).collect();
    assert_eq!(events.len(), 1, "one session.ended for {id}: {events:?}");
    events.into_iter().next().unwrap()
}

/// Plays the VOD stream by query token: the master by `link`, the media playlist and
/// the first `segments` segments by the session credentials the edge wrote. Returns
/// the session credential of the master's URIs.
fn play_by_query(edge: &Edge, link: &str, segments: usize) -> String {
    let master = edge.get(&format!("/vod/abc/master.m3u8?st={link}"), &[]);
    assert_eq!(master.status, 200);
    let cred = rewritten(&master);
    let media = edge.get(&format!("/vod/abc/v1/index.m3u8?st={cred}"), &[]);
    assert_eq!(media.status, 200);
    let seg_cred = rewritten(&media);
    for i in 0..segments {
        let r = edge.get(&format!("/vod/abc/v1/seg{i}.ts?st={seg_cred}"), &[]);
        assert_eq!((r.status, r.header("x-stile-reason")), (200, None), "seg{i}");
    }
    cred
}

#[test]
fn vod_sessions_end_idle_with_the_completion_their_segments_reached() {
    let content = content();
    let origin = Origin::start(content.path());
    let edge = Edge::start(&origin, CONFIG, &state_json(1, serde_json::json!([]), None));

    // Half the segments, then the whole stream, each its own playback of the "email" channel.
    let half = play_by_query(&edge, &link("email", 0x0b01, 2, 600), SEGMENTS / 2);
    let m = metrics(&edge);
    assert_eq!(sample(&m, r#"stile_edge_playback_starts_total{channel="email"}"#), 1.0, "{m}");
    // The media playlist fetched under the session renewed its credential.
    assert_eq!(sample(&m, r#"stile_edge_playback_renewals_total{channel="email"}"#), 1.0, "{m}");
    assert_eq!(sample(&m, "stile_edge_playback_tracked_sessions"), 1.0, "{m}");
    let whole = play_by_query(&edge, &link("email", 0x0b02, 2, 600), SEGMENTS);

    // Nobody fetches any more: the sweep ends both as idle once 2 s have passed.
    let m = wait_for(&edge, r#"stile_edge_playback_ended_total{cause="idle",channel="email"}"#, 2.0);
    assert_eq!(sample(&m, r#"stile_edge_playback_ended_total{cause="idle",channel="email"}"#), 2.0, "{m}");
    assert_eq!(sample(&m, r#"stile_edge_playback_starts_total{channel="email"}"#), 2.0, "{m}");
    assert_eq!(sample(&m, r#"stile_edge_playback_renewals_total{channel="email"}"#), 2.0, "{m}");
    assert_eq!(sample(&m, "stile_edge_playback_tracked_sessions"), 0.0, "{m}");
    // Completion: 4 s of 8 s (0.5), then 8 s of 8 s (1.0).
    let bucket =
        |le: &str| sample(&m, &format!(r#"stile_edge_playback_completion_ratio_bucket{{channel="email",le="{le}"}}"#));
    assert_eq!((bucket("0.4"), bucket("0.5"), bucket("0.9"), bucket("1")), (0.0, 1.0, 1.0, 2.0), "{m}");
    assert_eq!(sample(&m, r#"stile_edge_playback_completion_ratio_sum{channel="email"}"#), 1.5, "{m}");

    for (cred, completion, position) in [(&half, 0.5, 4.0), (&whole, 1.0, 8.0)] {
        let e = ended_event(&edge, &session_id(cred));
        assert_eq!(e["cause"], "idle", "{e}");
        assert_eq!(e["channel"], "email", "{e}");
        assert_eq!(e["completion"].as_f64(), Some(completion), "{e}");
        assert_eq!(e["position_secs"].as_f64(), Some(position), "{e}");
        assert_eq!(e["total_secs"].as_f64(), Some(8.0), "{e}");
        assert!(e["duration_secs"].as_u64().is_some_and(|d| d <= 2), "{e}");
        // No credential in the event: neither the link nor any session part.
        let line = e.to_string();
        let (link, part) = cred.rsplit_once('.').unwrap();
        assert!(!line.contains(link) && !line.contains(part), "{line}");
    }
}

/// A static DASH presentation: the edge reads the MPD it rewrites under a session
/// (a `SegmentTemplate` with `$RepresentationID$`, `$Number$` and a duration), and the
/// segments fetched advance the session's position as HLS segments do.
#[test]
fn dash_vod_sessions_count_their_completion_too() {
    let content = content();
    let dash = content.path().join("vod/abc/dash");
    std::fs::create_dir_all(&dash).unwrap();
    let mpd = r#"<?xml version="1.0" encoding="utf-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT8.0S" minBufferTime="PT2S">
  <Period start="PT0S">
    <AdaptationSet contentType="video" mimeType="video/mp4">
      <Representation id="v" bandwidth="200000" codecs="avc1.64001e">
        <SegmentTemplate timescale="1000" duration="2000" startNumber="1"
            initialization="init-$RepresentationID$.m4s" media="seg-$RepresentationID$-$Number$.m4s"/>
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>"#;
    std::fs::write(dash.join("manifest.mpd"), mpd).unwrap();
    for n in 1..=SEGMENTS {
        std::fs::write(dash.join(format!("seg-v-{n}.m4s")), [0u8; 64]).unwrap();
    }
    let origin = Origin::start(content.path());
    let edge = Edge::start(&origin, CONFIG, &state_json(1, serde_json::json!([]), None));

    let r = edge.get(&format!("/vod/abc/dash/manifest.mpd?st={}", link("embed", 0x0d01, 2, 600)), &[]);
    assert_eq!(r.status, 200);
    let body = String::from_utf8(r.body).unwrap();
    let media = body.split("media=\"").nth(1).unwrap_or_else(|| panic!("{body}"));
    let cred = media.split("st=").nth(1).unwrap().split('"').next().unwrap().to_owned();
    // Three of the four 2-second segments: 6 s of 8 s.
    for n in 1..SEGMENTS {
        let r = edge.get(&format!("/vod/abc/dash/seg-v-{n}.m4s?st={cred}"), &[]);
        assert_eq!((r.status, r.header("x-stile-reason")), (200, None), "seg {n}");
    }
    let m = wait_for(&edge, r#"stile_edge_playback_ended_total{cause="idle",channel="embed"}"#, 1.0);
    assert_eq!(sample(&m, r#"stile_edge_playback_completion_ratio_sum{channel="embed"}"#), 0.75, "{m}");
    let e = ended_event(&edge, &session_id(&cred));
    assert_eq!((e["position_secs"].as_f64(), e["total_secs"].as_f64()), (Some(6.0), Some(8.0)), "{e}");
    assert_eq!(e["completion"].as_f64(), Some(0.75), "{e}");
}

#[test]
fn revocation_maximum_and_expiry_end_sessions_by_cause() {
    let content = content();
    let origin = Origin::start(content.path());
    let edge = Edge::start(&origin, CONFIG, &state_json(1, serde_json::json!([]), None));
    let seg = |cred: &str| edge.get("/vod/abc/v1/seg1.ts", &[("Cookie", &format!("stile={cred}"))]);

    // Revoked: the link's token id revoked mid-playback ends its session on the next request.
    let l = link("tv", 0x0c01, 60, 600);
    let cred = cookie(&edge.get(&format!("/vod/abc/master.m3u8?st={l}"), &[])).expect("a session cookie");
    assert_eq!(seg(&cred).status, 200);
    let revocation = serde_json::json!([{ "kind": "token_id", "value": "0000000000000c01" }]);
    std::fs::write(edge.dir.path().join("state.json"), state_json(2, revocation, None)).unwrap();
    let r = until(Duration::from_secs(10), "the revocation", || {
        let r = seg(&cred);
        (r.status != 200).then_some(r)
    });
    assert_eq!((r.status, r.header("x-stile-reason")), (403, Some("revoked")));
    // A session ends once: the player's retries are denied but not counted again.
    assert_eq!(seg(&cred).header("x-stile-reason"), Some("revoked"));
    let m = metrics(&edge);
    assert_eq!(sample(&m, r#"stile_edge_playback_ended_total{cause="revoked",channel="tv"}"#), 1.0, "{m}");
    let e = ended_event(&edge, &session_id(&cred));
    assert_eq!((e["cause"].as_str(), e["channel"].as_str()), (Some("revoked"), Some("tv")), "{e}");
    assert!(e["completion"].is_null(), "no VOD playlist was read: {e}");

    // Maximum: fetching on, the session lives 3 s and no longer.
    let l = link("tv", 0x0c02, 2, 3);
    let mut cred = cookie(&edge.get(&format!("/vod/abc/master.m3u8?st={l}"), &[])).unwrap();
    let started = now();
    loop {
        let r = seg(&cred);
        if r.status != 200 {
            assert_eq!(r.header("x-stile-reason"), Some("session_max"));
            break;
        }
        if let Some(c) = cookie(&r) {
            cred = c;
        }
        assert!(now() < started + 8, "never ended");
        std::thread::sleep(Duration::from_millis(300));
    }
    // Ended by the denial or, first, by the sweep finding it past its maximum: `max` either way.
    let m = wait_for(&edge, r#"stile_edge_playback_ended_total{cause="max",channel="tv"}"#, 1.0);
    assert_eq!(sample(&m, r#"stile_edge_playback_ended_total{cause="idle",channel="tv"}"#), 0.0, "{m}");
    let e = ended_event(&edge, &session_id(&cred));
    assert_eq!(e["cause"], "max", "{e}");
    assert!(e["duration_secs"].as_u64().is_some_and(|d| (3..=4).contains(&d)), "{e}");

    // Expired: an edge whose sweep is slow sees the player come back after its credential lapsed.
    let slow = Edge::start(
        &origin,
        &CONFIG.replace("sweep_interval_ms = 100", "sweep_interval_ms = 3600000"),
        &state_json(1, serde_json::json!([]), None),
    );
    let l = link("web", 0x0c03, 1, 600);
    let cred = cookie(&slow.get(&format!("/vod/abc/master.m3u8?st={l}"), &[])).unwrap();
    let issued = now();
    until(Duration::from_secs(10), "the credential's expiry", || (now() > issued + 1).then_some(()));
    let r = slow.get("/vod/abc/v1/seg1.ts", &[("Cookie", &format!("stile={cred}"))]);
    assert_eq!(r.header("x-stile-reason"), Some("session_expired"));
    let m = metrics(&slow);
    assert_eq!(sample(&m, r#"stile_edge_playback_ended_total{cause="expired",channel="web"}"#), 1.0, "{m}");
    assert_eq!(ended_event(&slow, &session_id(&cred))["cause"], "expired");
}
