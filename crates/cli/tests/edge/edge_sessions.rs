//! Playback sessions end to end (`docs/sessions.md`): a real `stile edge` started
//! from a state file, raw HTTP/1.1 requests. A link living a few seconds starts a
//! session in each transport (query: rewritten playlists; cookie: `Set-Cookie`;
//! path prefix: a redirect), and the segments keep being admitted after the link
//! expired; idle timeout, hard maximum, revocations of the link (token id,
//! subject, key), tampering, scope, and a second edge with the same keys.

use std::time::Duration;

use stile_tests::edge::*;
use stile_tests::net::Response;
use stile_tests::process::until;
use stile_tests::token::*;
use stile_token::{Claims, SessionPolicy, sign_with_session};

/// Leeway 0 so that expiry is exact to the second.
const CONFIG: &str = r#"
[diagnostics]
reason_header = true
[cookie]
enabled = true
secure = false
[token]
leeway_secs = 0
"#;

/// A master playlist, a VOD media playlist (`#EXT-X-ENDLIST`) and a live one.
fn content() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("vod/abc");
    for sub in ["v1", "live"] {
        std::fs::create_dir_all(base.join(sub)).unwrap();
        for i in 0..3 {
            std::fs::write(base.join(sub).join(format!("seg{i}.ts")), vec![0x47u8; 188]).unwrap();
        }
    }
    std::fs::write(base.join("master.m3u8"), "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=200000\nv1/index.m3u8\n").unwrap();
    let media = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\nseg0.ts\n#EXTINF:1.0,\nseg1.ts\n";
    std::fs::write(base.join("v1/index.m3u8"), format!("{media}#EXT-X-ENDLIST\n")).unwrap();
    std::fs::write(base.join("live/index.m3u8"), media).unwrap();
    dir
}

fn setup() -> (tempfile::TempDir, Origin, Edge) {
    let content = content();
    let origin = Origin::start(content.path());
    let edge = Edge::start(&origin, CONFIG, &state_json(1, serde_json::json!([]), None));
    (content, origin, edge)
}

/// A link with a session policy, valid for `ttl` more seconds.
fn link(ttl: u64, idle: u32, max: u32, f: impl FnOnce(&mut Claims)) -> String {
    let mut c = claims();
    c.issued_at = now() - 1;
    c.expires_at = now() + ttl;
    f(&mut c);
    let policy = SessionPolicy { idle_secs: idle, max_secs: max, bind_v4: 32, bind_v6: 64 };
    sign_with_session(&c, Some(&policy), &ring()).unwrap()
}

fn reason(r: &Response) -> Option<&str> {
    r.header("x-stile-reason")
}

/// The `stile` cookie's value in a response's `Set-Cookie` (shared with the outcome and beacon tests).
pub(crate) fn cookie(r: &Response) -> Option<String> {
    let v = r.headers.get("set-cookie")?.iter().find(|c| c.starts_with("stile="))?;
    Some(v["stile=".len()..v.find(';').unwrap_or(v.len())].to_owned())
}

/// The `st` value on the first URI line of a rewritten playlist (shared with the outcome and beacon tests).
pub(crate) fn rewritten(r: &Response) -> String {
    let body = String::from_utf8(r.body.clone()).unwrap();
    let line = body.lines().find(|l| !l.starts_with('#') && l.contains("?st=")).unwrap_or_else(|| panic!("{body}"));
    line.split_once("?st=").unwrap().1.to_owned()
}

fn wait_past(expires_at: u64) {
    until(Duration::from_secs(30), "the link's expiry", || (now() > expires_at).then_some(()));
}

fn seg_with_cookie(edge: &Edge, cred: &str) -> Response {
    edge.get("/vod/abc/v1/seg1.ts", &[("Cookie", &format!("stile={cred}"))])
}

#[test]
fn a_short_link_plays_on_through_its_session_in_every_transport() {
    let (_content, origin, edge) = setup();
    let expires_at = now() + 3;
    let link = link(3, 30, 600, |_| {});

    // Query: the master's URIs carry a session credential (the link, a '.', a session part).
    let master = edge.get(&format!("/vod/abc/master.m3u8?st={link}"), &[]);
    assert_eq!(master.status, 200);
    let query_cred = rewritten(&master);
    assert!(query_cred.starts_with(&format!("{link}.")), "{query_cred}");
    // Cookie mode too: the cookie carries a session, not the link.
    let cookie_cred = cookie(&master).expect("a session cookie");
    assert!(cookie_cred.starts_with(&format!("{link}.")) && cookie_cred != link);
    // Path prefix: a redirect to the same target with the session in the prefix.
    let r = edge.get(&format!("/_st/{link}/vod/abc/master.m3u8"), &[]);
    assert_eq!(r.status, 302, "{:?}", r.headers);
    let location = r.header("location").unwrap().to_owned();
    let path_cred = location.strip_prefix("/_st/").unwrap().split_once('/').unwrap().0.to_owned();
    assert_eq!(location, format!("/_st/{path_cred}/vod/abc/master.m3u8"));
    assert!(path_cred.starts_with(&format!("{link}.")));
    assert_eq!(r.header("cache-control"), Some("no-store"));

    wait_past(expires_at);
    // The link alone is refused now...
    let r = edge.get(&format!("/vod/abc/v1/seg1.ts?st={link}"), &[]);
    assert_eq!((r.status, reason(&r)), (403, Some("expired")));
    // ...its sessions play on, in each transport.
    let media = edge.get(&format!("/vod/abc/v1/index.m3u8?st={query_cred}"), &[]);
    assert_eq!(media.status, 200);
    let seg_cred = rewritten(&media);
    assert!(seg_cred.starts_with(&format!("{link}.")) && seg_cred != query_cred, "a renewed credential");
    let r = edge.get(&format!("/vod/abc/v1/seg1.ts?st={seg_cred}"), &[]);
    assert_eq!((r.status, reason(&r)), (200, None));
    assert_eq!(seg_with_cookie(&edge, &cookie_cred).status, 200);
    let r = edge.get(&location, &[]);
    assert_eq!(r.status, 200, "the redirected master plays");
    let r = edge.get(&format!("/_st/{path_cred}/vod/abc/v1/seg0.ts"), &[]);
    assert_eq!(r.status, 200);
    assert_origin_saw_no_token(&origin, &link);
    let metrics = String::from_utf8(stile_tests::net::get(edge.admin, "/metrics", &[]).unwrap().body).unwrap();
    for t in ["query", "cookie", "path"] {
        assert!(
            metrics.contains(&format!("stile_edge_sessions_total{{event=\"started\",transport=\"{t}\"}} 1")),
            "{t}: {metrics}"
        );
    }
    assert!(metrics.contains("stile_edge_sessions_total{event=\"renewed\",transport=\"query\"} 1"), "{metrics}");
    // The access log names the session, never its credential.
    let log = edge.log();
    assert!(log.contains("\"session.id\""), "{log}");
    assert!(!log.contains(&query_cred[link.len() + 1..]), "a session part in the log");
}

#[test]
fn idle_timeout_and_hard_maximum() {
    let (_content, _origin, edge) = setup();
    // Idle: a session not renewed for `idle_secs` ends (session_expired).
    let l = link(60, 2, 600, |_| {});
    let started = now();
    let c0 = cookie(&edge.get(&format!("/vod/abc/master.m3u8?st={l}"), &[])).unwrap();
    assert_eq!(seg_with_cookie(&edge, &c0).status, 200);
    until(Duration::from_secs(10), "idle expiry", || (now() >= started + 3).then_some(()));
    let r = seg_with_cookie(&edge, &c0);
    assert_eq!((r.status, reason(&r)), (403, Some("session_expired")));

    // Renewed while fetching (the cookie slides once past half the idle window), the
    // session lives to its maximum and no further (session_max).
    let l = link(60, 4, 7, |_| {});
    let master = edge.get(&format!("/vod/abc/master.m3u8?st={l}"), &[]);
    let started = now();
    let mut cred = cookie(&master).unwrap();
    let mut renewals = 0;
    let end = loop {
        std::thread::sleep(Duration::from_millis(700));
        let r = seg_with_cookie(&edge, &cred);
        if r.status != 200 {
            break r;
        }
        if let Some(c) = cookie(&r) {
            renewals += 1;
            cred = c;
        }
        assert!(now() < started + 12, "never ended");
    };
    assert_eq!((end.status, reason(&end)), (403, Some("session_max")));
    assert!(now() >= started + 6, "ended early at {} s", now() - started);
    assert!(renewals >= 2, "{renewals} renewals");
}

#[test]
fn live_playlists_renew_the_session_in_their_urls() {
    let (_content, _origin, edge) = setup();
    let l = link(2, 3, 600, |_| {});
    let started = now();
    let r = edge.get(&format!("/vod/abc/live/index.m3u8?st={l}"), &[]);
    let mut cred = rewritten(&r);
    // Reloading the live playlist every second keeps the session alive past 3 s idle.
    while now() < started + 6 {
        std::thread::sleep(Duration::from_millis(900));
        let r = edge.get(&format!("/vod/abc/live/index.m3u8?st={cred}"), &[]);
        assert_eq!((r.status, reason(&r)), (200, None), "at +{} s", now() - started);
        cred = rewritten(&r);
        assert_eq!(edge.get(&format!("/vod/abc/live/seg0.ts?st={cred}"), &[]).status, 200);
    }
}

#[test]
fn revoking_the_link_its_subject_or_its_key_ends_its_sessions() {
    let (_content, _origin, edge) = setup();
    let state_path = edge.dir.path().join("state.json");
    let cases = [
        (0x0a01, "viewer-a", serde_json::json!({ "kind": "token_id", "value": "0000000000000a01" })),
        (
            0x0a02,
            "viewer-b",
            serde_json::json!({ "kind": "subject", "value": "viewer-b", "issued_before": now() + 60 }),
        ),
        (0x0a03, "viewer-c", serde_json::json!({ "kind": "key", "value": KEY_ID.to_string() })),
    ];
    for (version, (id, subject, revocation)) in cases.into_iter().enumerate() {
        let expires_at = now() + 2;
        let l = link(2, 60, 600, |c| {
            c.token_id = stile_token::TokenId::from_u64(id);
            c.subject = Some(subject.into());
        });
        let cred = cookie(&edge.get(&format!("/vod/abc/master.m3u8?st={l}"), &[])).unwrap();
        wait_past(expires_at);
        assert_eq!(seg_with_cookie(&edge, &cred).status, 200, "{subject}: plays past the link's expiry");
        std::fs::write(&state_path, state_json(version as u64 + 2, serde_json::json!([revocation]), None)).unwrap();
        let r = until(Duration::from_secs(10), "the revocation", || {
            let r = seg_with_cookie(&edge, &cred);
            (r.status != 200).then_some(r)
        });
        assert_eq!((r.status, reason(&r)), (403, Some("revoked")), "{subject}");
    }
}

#[test]
fn tampered_and_out_of_scope_sessions_are_refused() {
    let (_content, _origin, edge) = setup();
    let l = link(60, 60, 600, |_| {});
    let cred = cookie(&edge.get(&format!("/vod/abc/master.m3u8?st={l}"), &[])).unwrap();
    let mut bytes = cred.clone().into_bytes();
    let i = bytes.len() - 6;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(bytes).unwrap();
    let r = seg_with_cookie(&edge, &forged);
    assert_eq!((r.status, reason(&r)), (403, Some("bad_signature")));
    let r = edge.get(&format!("/vod/other/seg.ts?st={cred}"), &[]);
    assert_eq!((r.status, reason(&r)), (403, Some("scope")));
    let r = edge.get(&format!("/vod/abc/v1/seg1.ts?st={cred}.x"), &[]);
    assert_eq!((r.status, reason(&r)), (403, Some("malformed")));
    // A link without a session policy gets no session: its cookie is the link.
    let plain = mint(|_| {});
    let r = edge.get(&format!("/vod/abc/master.m3u8?st={plain}"), &[]);
    assert_eq!(cookie(&r).as_deref(), Some(plain.as_str()));
    assert!(rewritten(&r) == plain);
}

#[test]
fn a_session_from_one_edge_plays_on_another() {
    let (_content, origin, a) = setup();
    let b = Edge::start(&origin, CONFIG, &state_json(1, serde_json::json!([]), None));
    let expires_at = now() + 2;
    let l = link(2, 60, 600, |_| {});
    let cred = cookie(&a.get(&format!("/vod/abc/master.m3u8?st={l}"), &[])).unwrap();
    wait_past(expires_at);
    let r = seg_with_cookie(&b, &cred);
    assert_eq!((r.status, reason(&r)), (200, None));
}
