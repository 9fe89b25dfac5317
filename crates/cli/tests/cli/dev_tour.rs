//! The README's five-minute tour, driven through the real binary: `stile dev`
//! starts and prints links; each printed link plays through the edge with
//! ffmpeg; the edge caches (a hit, then a purge with `stile purge --prefix
//! --wait` makes the next request a miss); `stile revoke --wait` (over
//! the push path) makes the next request fail with reason `revoked`;
//! `stile explain` names the reason, who revoked, and why; Ctrl-C exits 0. Also
//! the sample origin (media types, ranges, keep-alive, HLS and DASH from one
//! sample) and the player page with its link-minting backend.

use std::time::Duration;
use stile_tests::dev::Dev;
use stile_tests::process::eventually;

#[test]
fn tour_play_revoke_explain() {
    let mut dev = Dev::start(&[]);

    // The banner has everything a newcomer needs.
    for want in ["stile revoke --server", "stile explain", "ffmpeg", "ffplay", "curl", &dev.operator] {
        assert!(dev.banner.contains(want), "banner lacks {want:?}:\n{}", dev.banner);
    }

    // Every transport plays.
    stile_tests::media::ffmpeg_play(&dev.query_url, &[]).expect("the query link plays");
    stile_tests::media::ffmpeg_play(&dev.path_url, &[]).expect("the path link plays");
    let header = format!("Cookie: {}\r\n", dev.cookie);
    stile_tests::media::ffmpeg_play(&dev.cookie_url, &["-headers", &header]).expect("the cookie link plays");

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

    // The edge caches: a hit, then a purge as printed (it revokes nothing) makes the
    // next request a miss.
    assert!(dev.banner.contains("stile purge") && dev.banner.contains("x-stile-cache"), "{}", dev.banner);
    let target = Dev::target(&dev.query_url);
    let cache = |want: &str| {
        let r = stile_tests::net::get(dev.edge_port, &target, &[]).expect("the edge answers");
        assert_eq!((r.status, r.header("x-stile-cache")), (200, Some(want)), "{}", dev.stderr());
    };
    let _ = stile_tests::net::get(dev.edge_port, &target, &[]).expect("the edge answers");
    cache("hit");
    let r = dev.stile(&["purge", "--prefix", "/vod/sample/", "--reason", "new encode", "--wait"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("confirmed by all 1 expected edges"), "{}", r.stdout);
    cache("miss");
    cache("hit");
    stile_tests::media::ffmpeg_play(&dev.query_url, &[]).expect("the query link still plays");

    // Revoke the link, as printed: --wait returns once the edge enforces it.
    let r = dev.stile(&["revoke", "--token-id", &dev.token_id, "--reason", "trying Stile", "--wait"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains(&format!("revoked token {}", dev.token_id)), "{}", r.stdout);
    assert!(r.stdout.contains("confirmed by all 1 expected edges"), "{}", r.stdout);

    // The next fetch fails with reason revoked, within a fraction of a second.
    let mut last = None;
    let denied = eventually(Duration::from_secs(5), || {
        let resp = stile_tests::net::get(dev.edge_port, &target, &[]).expect("the edge answers");
        let done = resp.status == 403 && resp.header("x-stile-reason") == Some("revoked");
        last = Some(resp);
        done
    });
    assert!(denied, "still admitted after revoke: {last:?}");
    assert!(stile_tests::media::ffmpeg_play(&dev.path_url, &[]).is_err(), "the path link no longer plays");

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
    stile_tests::media::ffmpeg_play(&second.query_url, &[]).expect("a link minted after the revocation plays");
}

/// One request on an open connection (HTTP/1.1 keep-alive): status, lower-cased headers, body.
fn exchange(conn: &mut std::net::TcpStream, head: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    use std::io::{BufRead, Read, Write};
    conn.write_all(head.as_bytes()).unwrap();
    let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        let (k, v) = line.split_once(':').unwrap();
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let len = headers.iter().find(|(k, _)| k == "content-length").map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0; if head.starts_with("HEAD") { 0 } else { len }];
    reader.read_exact(&mut body).unwrap();
    (status, headers, body)
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[test]
fn the_sample_origin_and_the_player_page() {
    let dev = Dev::start(&[]);
    let (origin, page) = (dev.base + 3, dev.base + 4);
    // The sample: HLS with what browsers need, DASH from the same segments, media types,
    // ranges, and several requests on one connection.
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", origin)).unwrap();
    let get = |path: &str, extra: &str| format!("GET {path} HTTP/1.1\r\nHost: o\r\n{extra}\r\n");
    let (status, h, body) = exchange(&mut conn, &get("/vod/sample/master.m3u8", ""));
    let master = String::from_utf8(body).unwrap();
    assert_eq!((status, header(&h, "content-type")), (200, Some("application/vnd.apple.mpegurl")));
    for want in ["CODECS=\"avc1.", "mp4a.40.2", "RESOLUTION=640x360", "RESOLUTION=320x180", "BANDWIDTH="] {
        assert!(master.contains(want), "{want} missing: {master}");
    }
    assert_eq!(master.matches("#EXT-X-STREAM-INF").count(), 3, "{master}");
    let (status, h, body) = exchange(&mut conn, &get("/vod/sample/manifest.mpd", ""));
    assert_eq!((status, header(&h, "content-type")), (200, Some("application/dash+xml")));
    let mpd = String::from_utf8(body).unwrap();
    assert!(
        mpd.contains("mediaPresentationDuration=\"PT3M") && mpd.contains("seg-$RepresentationID$-$Number%03d$.m4s"),
        "{mpd}"
    );
    let (status, h, body) = exchange(&mut conn, &get("/vod/sample/seg-0-001.m4s", "Range: bytes=0-99\r\n"));
    assert_eq!((status, header(&h, "content-type"), body.len()), (206, Some("video/iso.segment"), 100));
    assert!(header(&h, "content-range").unwrap().starts_with("bytes 0-99/"), "{h:?}");
    assert_eq!(&body[4..8], b"styp", "an fMP4 segment");
    let (status, _, _) = exchange(&mut conn, &get("/vod/other/x.m4s", ""));
    assert_eq!(status, 404);

    // The page's backend mints a fresh link per call; for cookie mode it sets the cookie too.
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", page)).unwrap();
    let (status, h, body) = exchange(&mut conn, &get("/api/link?format=dash&transport=cookie", ""));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let link: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(link["url"], format!("http://127.0.0.1:{}/vod/sample/manifest.mpd", dev.edge_port));
    assert_eq!(link["with_credentials"], true);
    let cookie = header(&h, "set-cookie").unwrap();
    assert!(cookie.starts_with("stile=") && cookie.contains("; Path=/vod/sample/;") && cookie.contains("HttpOnly"));
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
    let pair = cookie.split(';').next().unwrap();
    let r = stile_tests::net::get(dev.edge_port, "/vod/sample/manifest.mpd", &[("Cookie", pair)]).unwrap();
    assert_eq!(r.status, 200, "the backend's cookie opens the edge");
    let (_, _, again) = exchange(&mut conn, &get("/api/link?format=hls&transport=query", ""));
    let again: serde_json::Value = serde_json::from_slice(&again).unwrap();
    assert_ne!(again["token_id"], link["token_id"], "a fresh link on every call");
    assert!(again["url"].as_str().unwrap().contains("/vod/sample/master.m3u8?st="), "{again}");
    let (status, _, _) = exchange(&mut conn, &get("/api/link?format=flv", ""));
    assert_eq!(status, 400);
    let (status, h, body) = exchange(&mut conn, &get("/", ""));
    assert_eq!((status, header(&h, "content-type")), (200, Some("text/html; charset=utf-8")));
    assert!(String::from_utf8(body).unwrap().contains("import { StilePlayer } from './stile-player.js'"));
    let (status, h, _) = exchange(&mut conn, &get("/stile-player.js", ""));
    assert_eq!((status, header(&h, "content-type")), (200, Some("text/javascript; charset=utf-8")));
    assert!(dev.banner.contains(&format!("player page    http://127.0.0.1:{page}/")), "{}", dev.banner);
    assert!(dev.banner.contains("/vod/sample/manifest.mpd?st="), "a DASH link: {}", dev.banner);
}
