//! End to end: ffmpeg plays a DASH presentation (H.264/AAC, fMP4 SegmentTemplate)
//! through the edge with each token transport — a query token (which needs the MPD
//! rewriting), a path-prefix token and a cookie — and the origin never sees a token.

use stile_tests::edge::*;
use stile_tests::media::*;
use stile_tests::token::*;

fn setup() -> (tempfile::TempDir, Origin, Edge) {
    let content = tempfile::tempdir().unwrap();
    make_dash(content.path());
    let origin = Origin::start(content.path());
    let edge = Edge::start(&origin, BASE_CONFIG, &state_json(1, serde_json::json!([]), None));
    (content, origin, edge)
}

fn assert_played_everything(origin: &Origin, before: usize) {
    let lines = origin.request_lines();
    let new = &lines[before..];
    for want in ["manifest.mpd", "init-0.m4s", "init-2.m4s", "seg-0-3.m4s", "seg-2-3.m4s"] {
        let line = format!("GET /vod/abc/dash/{want} HTTP/1.1");
        assert!(new.iter().any(|l| l == &line), "origin never served {want}: {new:#?}");
    }
}

#[test]
fn ffmpeg_plays_dash_with_every_transport() {
    let (_content, origin, edge) = setup();
    let token = mint(|_| {});
    let base = format!("http://127.0.0.1:{}", edge.port);
    assert!(ffmpeg_play(&format!("{base}/vod/abc/dash/manifest.mpd"), &[]).is_err(), "no token, no play");

    for (url, extra) in [
        (format!("{base}/vod/abc/dash/manifest.mpd?st={token}"), None),
        (format!("{base}/_st/{token}/vod/abc/dash/manifest.mpd"), None),
        (format!("{base}/vod/abc/dash/manifest.mpd"), Some(format!("Cookie: stile={token}\r\n"))),
    ] {
        let n = origin.request_lines().len();
        let args: Vec<&str> = extra.as_deref().map(|h| vec!["-headers", h]).unwrap_or_default();
        ffmpeg_play(&url, &args).unwrap_or_else(|e| panic!("{url} does not play: {e}"));
        // ffmpeg seeks to the end of a 3-segment presentation; every representation was fetched.
        assert_played_everything(&origin, n);
    }
    assert_origin_saw_no_token(&origin, &token);
}

#[test]
fn query_token_mpds_are_rewritten_and_framed() {
    let (content, _origin, edge) = setup();
    let token = mint(|_| {});
    let r = edge.get(&format!("/vod/abc/dash/manifest.mpd?st={token}&cdn=7"), &[]);
    assert_eq!(r.status, 200);
    let body = String::from_utf8(r.body.clone()).unwrap();
    let original = std::fs::read_to_string(content.path().join("vod/abc/dash/manifest.mpd")).unwrap();
    let expect = original
        .replace("init-$RepresentationID$.m4s\"", &format!("init-$RepresentationID$.m4s?st={token}\""))
        .replace("seg-$RepresentationID$-$Number$.m4s\"", &format!("seg-$RepresentationID$-$Number$.m4s?st={token}\""));
    assert_ne!(expect, original, "the sample has templates to rewrite");
    assert_eq!(body, expect, "only the URLs change");
    assert_rewritten_framing(&r);
    // Path and cookie admissions are not rewritten (relative URLs keep the prefix; the cookie travels).
    let p = edge.get(&format!("/_st/{token}/vod/abc/dash/manifest.mpd"), &[]);
    assert_eq!((p.status, String::from_utf8(p.body).unwrap()), (200, original));
}

#[test]
fn url_query_info_in_an_origin_mpd_no_longer_copies_the_token() {
    let (content, _origin, edge) = setup();
    let mpd = r#"<?xml version="1.0"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" xmlns:up="urn:mpeg:dash:schema:urlparam:2014" type="static">
  <Period><AdaptationSet>
    <EssentialProperty schemeIdUri="urn:mpeg:dash:urlparam:2014"><up:UrlQueryInfo queryTemplate="$querypart$" useMPDUrlQuery="true"/></EssentialProperty>
    <Representation id="1" bandwidth="1"><SegmentList><SegmentURL media="a.m4s"/></SegmentList></Representation>
  </AdaptationSet></Period>
</MPD>
"#;
    std::fs::write(content.path().join("vod/abc/dash/uqi.mpd"), mpd).unwrap();
    let token = mint(|_| {});
    let r = edge.get(&format!("/vod/abc/dash/uqi.mpd?cdn=7&st={token}"), &[]);
    let body = String::from_utf8(r.body).unwrap();
    assert!(body.contains(r#"useMPDUrlQuery="false" queryString="cdn=7""#), "{body}");
    assert!(body.contains(&format!(r#"<SegmentURL media="a.m4s?st={token}"/>"#)), "{body}");
    assert_eq!(body.matches(&token).count(), 1, "the token appears once: {body}");
}
