//! End to end: CORS at the real edge — `*` means any origin without credentials,
//! credentials only for listed origins and patterns, `Vary: Origin` whenever the
//! answer depends on the origin, preflights, exposed headers, and the configurations
//! refused at startup (exit 64), and the origin's own CORS headers dropped.

use std::net::TcpStream;
use std::process::Command;
use stile_tests::edge::*;
use stile_tests::net::*;
use stile_tests::token::*;

fn content() -> (tempfile::TempDir, Origin) {
    one_segment_origin()
}

/// An origin that answers every request with its own permissive CORS headers.
fn permissive_origin() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                use std::io::{BufRead, Write};
                let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) if line == "\r\n" => {
                            let resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nAccess-Control-Allow-Origin: *\r\n\
                                        Access-Control-Allow-Credentials: true\r\n\r\nok";
                            if conn.write_all(resp.as_bytes()).is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                    }
                }
            });
        }
    });
    port
}

fn edge(cors: &str) -> (tempfile::TempDir, Origin, Edge) {
    let (c, origin) = content();
    let extra = format!("{BASE_CONFIG}\n[cors]\n{cors}\n");
    let edge = Edge::start(&origin, &extra, &state_json(1, serde_json::json!([]), None));
    (c, origin, edge)
}

fn vary_has_origin(r: &Response) -> bool {
    r.headers
        .get("vary")
        .is_some_and(|vs| vs.iter().any(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case("origin"))))
}

#[test]
fn star_allows_any_origin_without_credentials() {
    let (_c, _o, edge) = edge("allowed_origins = [\"*\"]");
    let token = mint(|_| {});
    let seg = format!("/vod/abc/seg.ts?st={token}");
    for origin in ["https://evil.example", "null", "http://localhost:3000"] {
        let r = edge.get(&seg, &[("Origin", origin)]);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("access-control-allow-origin"), Some("*"), "{origin}");
        assert_eq!(r.header("access-control-allow-credentials"), None, "{origin}: no credentials with *");
        assert!(!vary_has_origin(&r), "the answer does not depend on the origin");
    }
    // Even with a cookie-mode token, * never lets a page read with credentials.
    let cookie = format!("stile={token}");
    let r = edge.get("/vod/abc/seg.ts", &[("Origin", "https://evil.example"), ("Cookie", &cookie)]);
    assert_eq!((r.status, r.header("access-control-allow-credentials")), (200, None));
    // Denials are readable, with the reason exposed.
    let d = edge.get("/vod/abc/seg.ts?st=forged", &[("Origin", "https://evil.example")]);
    assert_eq!((d.status, d.header("x-stile-reason")), (403, Some("malformed")));
    assert_eq!(d.header("access-control-allow-origin"), Some("*"));
    assert_eq!(d.header("access-control-expose-headers"), Some("x-stile-reason"));
}

#[test]
fn credentials_go_only_to_listed_origins_and_patterns() {
    let (_c, _o, edge) = edge(
        "allowed_origins = [\"https://player.example\", \"http://localhost:*\", \"https://*.example.com\"]\n\
         allow_credentials = true\nexpose_headers = [\"content-range\"]",
    );
    let token = mint(|_| {});
    let seg = format!("/vod/abc/seg.ts?st={token}");
    for origin in ["https://player.example", "http://localhost:5173", "http://localhost", "https://www.example.com"] {
        let r = edge.get(&seg, &[("Origin", origin)]);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("access-control-allow-origin"), Some(origin));
        assert_eq!(r.header("access-control-allow-credentials"), Some("true"), "{origin}");
        assert_eq!(r.header("access-control-expose-headers"), Some("content-range, x-stile-reason"));
        assert!(vary_has_origin(&r), "{origin}");
    }
    for origin in
        ["https://evil.example", "https://example.com", "https://localhost:5173", "null", "http://player.example"]
    {
        let r = edge.get(&seg, &[("Origin", origin)]);
        assert_eq!(r.status, 200, "CORS only decides what a page may read; the edge still serves");
        assert_eq!(r.header("access-control-allow-origin"), None, "{origin}");
        assert_eq!(r.header("access-control-allow-credentials"), None, "{origin}");
        assert!(vary_has_origin(&r), "{origin}: a cache must not reuse this answer for an allowed origin");
    }
    // No Origin at all: still Vary, so a shared cache keys on it.
    let r = edge.get(&seg, &[]);
    assert!(vary_has_origin(&r) && r.header("access-control-allow-origin").is_none());
    let d = edge.get("/vod/abc/seg.ts", &[("Origin", "http://localhost:8000")]);
    assert_eq!((d.status, d.header("x-stile-reason")), (401, Some("missing")));
    assert_eq!(d.header("access-control-allow-origin"), Some("http://localhost:8000"));
    assert!(vary_has_origin(&d));
}

#[test]
fn preflights_are_answered_for_allowed_origins_only() {
    let (_c, _o, edge) = edge("allowed_origins = [\"http://127.0.0.1:*\"]\nmax_age_secs = 120");
    let pre = |origin: &str, headers: Option<&str>| {
        let mut h = vec![("Origin", origin), ("Access-Control-Request-Method", "GET")];
        if let Some(v) = headers {
            h.push(("Access-Control-Request-Headers", v));
        }
        request(edge.port, "OPTIONS", "/vod/abc/seg.ts", &h).unwrap()
    };
    let ok = pre("http://127.0.0.1:7404", Some("range"));
    assert_eq!(ok.status, 204);
    assert_eq!(ok.header("access-control-allow-origin"), Some("http://127.0.0.1:7404"));
    assert_eq!(ok.header("access-control-allow-credentials"), None);
    assert_eq!(ok.header("access-control-allow-headers"), Some("range"));
    assert_eq!(ok.header("access-control-max-age"), Some("120"));
    assert!(ok.header("access-control-allow-methods").unwrap().contains("GET"));
    // A header list that is not a list of names is not echoed.
    let odd = pre("http://127.0.0.1:7404", Some("range, a b"));
    assert_eq!((odd.status, odd.header("access-control-allow-headers")), (204, None));
    // Another origin's preflight is validated like any request: no token, 401.
    let other = pre("http://127.0.0.2:7404", None);
    assert_eq!((other.status, other.header("access-control-allow-origin")), (401, None));
}

#[test]
fn the_origins_own_cors_headers_never_reach_the_page() {
    let origin = Origin::external(permissive_origin());
    let extra = format!("{BASE_CONFIG}\n[cors]\nallowed_origins = [\"https://player.example\"]\n");
    let edge = Edge::start(&origin, &extra, &state_json(1, serde_json::json!([]), None));
    let token = mint(|_| {});
    let seg = format!("/vod/abc/seg.ts?st={token}");
    let other = edge.get(&seg, &[("Origin", "https://evil.example")]);
    assert_eq!(other.status, 200);
    assert_eq!(other.header("access-control-allow-origin"), None, "the origin's * must not let evil.example read");
    assert_eq!(other.header("access-control-allow-credentials"), None);
    let ok = edge.get(&seg, &[("Origin", "https://player.example")]);
    assert_eq!(ok.header("access-control-allow-origin"), Some("https://player.example"));
    assert_eq!(ok.headers["access-control-allow-origin"].len(), 1);
    assert_eq!(ok.header("access-control-allow-credentials"), None, "no credentials unless configured");
}

/// `stile edge` refuses this config with exit 64 and `needle` on stderr, binding nothing.
fn refuses(extra: &str, needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let path = Edge::write_config(dir.path(), 1, port, admin, extra, "", &state_json(1, serde_json::json!([]), None));
    let out = Command::new(env!("CARGO_BIN_EXE_stile")).args(["edge", "--config"]).arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{extra}: {stderr}");
    assert!(stderr.contains(needle), "{extra}: expected {needle:?} in {stderr}");
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn unsafe_or_malformed_cors_configs_exit_64() {
    refuses("[cors]\nallowed_origins = [\"*\"]\nallow_credentials = true", "cannot be combined with allow_credentials");
    refuses("[cors]\nallowed_origins = [\"*\", \"https://a.example\"]", "list it alone");
    refuses("[cors]\nallowed_origins = [\"https://a.example/\"]", "not an origin pattern");
    refuses("[cors]\nallowed_origins = [\"https://*.com\"]", "not an origin pattern");
    refuses("[cookie]\nenabled = true\nsecure = false\nsame_site = \"None\"", "browsers drop SameSite=None");
}
