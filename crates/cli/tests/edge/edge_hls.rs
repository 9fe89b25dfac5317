//! End to end: ffmpeg plays a two-variant HLS stream through the edge with each
//! token transport — a query token (which needs the playlist rewriting), a
//! path-prefix token, and a cookie — and the origin never sees a token.

use stile_tests::edge::*;
use stile_tests::media::*;
use stile_tests::net::*;
use stile_tests::token::*;

fn setup() -> (tempfile::TempDir, Origin, Edge) {
    let content = tempfile::tempdir().unwrap();
    make_hls(content.path());
    let origin = Origin::start(content.path());
    let edge = Edge::start(&origin, BASE_CONFIG, &state_json(1, serde_json::json!([]), None));
    (content, origin, edge)
}

fn assert_played_everything(origin: &Origin, before: usize) {
    let lines = origin.request_lines();
    let new = &lines[before..];
    for want in [
        "/vod/abc/master.m3u8",
        "/vod/abc/v1/index.m3u8",
        "/vod/abc/v2/index.m3u8",
        "/vod/abc/v1/seg2.ts",
        "/vod/abc/v2/seg2.ts",
    ] {
        assert!(new.iter().any(|l| l == &format!("GET {want} HTTP/1.1")), "origin never served {want}: {new:#?}");
    }
}

#[test]
fn ffmpeg_plays_with_every_transport() {
    let (_content, origin, edge) = setup();
    let token = mint(|_| {});
    let base = format!("http://127.0.0.1:{}", edge.port);

    // Without a token nothing plays.
    assert!(ffmpeg_play(&format!("{base}/vod/abc/master.m3u8"), &[]).is_err());

    let n = origin.request_lines().len();
    ffmpeg_play(&format!("{base}/vod/abc/master.m3u8?st={token}"), &[]).expect("query token plays");
    assert_played_everything(&origin, n);

    let n = origin.request_lines().len();
    ffmpeg_play(&format!("{base}/_st/{token}/vod/abc/master.m3u8"), &[]).expect("path token plays");
    assert_played_everything(&origin, n);

    let n = origin.request_lines().len();
    let header = format!("Cookie: stile={token}\r\n");
    ffmpeg_play(&format!("{base}/vod/abc/master.m3u8"), &["-headers", &header]).expect("cookie plays");
    assert_played_everything(&origin, n);

    assert_origin_saw_no_token(&origin, &token);
}

#[test]
fn query_token_playlists_are_rewritten_and_framed() {
    let (_content, _origin, edge) = setup();
    let token = mint(|_| {});
    let r = edge.get(&format!("/vod/abc/master.m3u8?st={token}"), &[]);
    assert_eq!(r.status, 200);
    let body = String::from_utf8(r.body.clone()).unwrap();
    assert!(body.contains(&format!("\nv1/index.m3u8?st={token}\n")), "{body}");
    assert!(body.contains(&format!("\nv2/index.m3u8?st={token}\n")), "{body}");
    assert_rewritten_framing(&r);
    assert_eq!(r.header("etag"), None);
    let media = edge.get(&format!("/vod/abc/v1/index.m3u8?st={token}"), &[]);
    let media = String::from_utf8(media.body).unwrap();
    assert!(
        media
            .lines()
            .filter(|l| l.ends_with(".ts") || l.contains(".ts?"))
            .all(|l| l.ends_with(&format!("?st={token}"))),
        "{media}"
    );

    // Path tokens need no rewriting: relative URIs keep the prefix.
    let r = edge.get(&format!("/_st/{token}/vod/abc/master.m3u8"), &[]);
    assert!(String::from_utf8_lossy(&r.body).contains("\nv1/index.m3u8\n"));
    assert!(r.header("content-length").is_some());
}

#[test]
fn manifests_admitted_by_link_set_the_cookie() {
    let (_content, _origin, edge) = setup();
    let token = mint(|_| {});
    for target in [format!("/vod/abc/master.m3u8?st={token}"), format!("/_st/{token}/vod/abc/master.m3u8")] {
        let r = edge.get(&target, &[]);
        let cookie = r.header("set-cookie").expect("cookie set");
        assert!(cookie.starts_with(&format!("stile={token}; Path=/vod/abc/; Max-Age=")), "{cookie}");
        let max_age: u64 = cookie.split("Max-Age=").nth(1).unwrap().split(';').next().unwrap().parse().unwrap();
        assert!((590..=600).contains(&max_age), "{cookie}");
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && !cookie.contains("Secure"),
            "{cookie}"
        );
    }
    // Segments and cookie-admitted manifests do not set it again.
    assert_eq!(edge.get(&format!("/vod/abc/v1/seg0.ts?st={token}"), &[]).header("set-cookie"), None);
    let c = format!("stile={token}");
    assert_eq!(edge.get("/vod/abc/master.m3u8", &[("Cookie", &c)]).header("set-cookie"), None);
}

#[test]
fn playlists_over_the_limit_pass_through_unmodified() {
    let content = tempfile::tempdir().unwrap();
    make_hls(content.path());
    let origin = Origin::start(content.path());
    let extra = format!("{BASE_CONFIG}[playlist]\nmax_bytes = 64\n");
    let edge = Edge::start(&origin, &extra, &state_json(1, serde_json::json!([]), None));
    let token = mint(|_| {});
    let r = edge.get(&format!("/vod/abc/master.m3u8?st={token}"), &[]);
    assert_eq!(r.status, 200);
    let original = std::fs::read(content.path().join("vod/abc/master.m3u8")).unwrap();
    assert_eq!(r.body, original);
    assert_eq!(r.header("content-length"), Some(original.len().to_string().as_str()));
    let m = String::from_utf8(get(edge.admin, "/metrics", &[]).unwrap().body).unwrap();
    assert!(m.contains(r#"stile_edge_playlist_rewrites_total{result="too_large"} 1"#), "{m}");
}

#[test]
fn head_requests_for_playlists_are_not_rewritten() {
    let (content, _origin, edge) = setup();
    let token = mint(|_| {});
    let r = request(edge.port, "HEAD", &format!("/vod/abc/master.m3u8?st={token}"), &[]).unwrap();
    assert_eq!(r.status, 200);
    let len = std::fs::metadata(content.path().join("vod/abc/master.m3u8")).unwrap().len();
    assert_eq!(r.header("content-length"), Some(len.to_string().as_str()));
}
