//! The outside audit's findings (issue 14), each against the real `stile edge`
//! over raw sockets, with an origin that records the exact request line:
//! request lines judged as the client sent them, Unicode look-alikes and
//! trimmed dots, no token-shaped thing in any log line, requests Pingora
//! refuses counted and logged, no shared caching of per-viewer answers, and
//! valid framing for rewritten playlists from an HTTP/1.0 origin.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stile_tests::edge::*;
use stile_tests::net::*;
use stile_tests::token::*;

// ---------------------------------------------------------------- raw HTTP

/// One answer as received: the status line, headers (lower-case names) and body bytes.
#[derive(Debug)]
struct Raw {
    status_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn status(&self) -> u16 {
        self.status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
    }
}

/// Reads exactly one response from `r`, framed strictly by its own headers:
/// `Content-Length`, `Transfer-Encoding: chunked` (every chunk size and CRLF
/// checked), or, only when the response says `Connection: close`, until EOF.
fn read_response(r: &mut impl BufRead, head_request: bool) -> Result<Raw, String> {
    let mut status_line = String::new();
    r.read_line(&mut status_line).map_err(|e| e.to_string())?;
    let status_line = status_line.strip_suffix("\r\n").ok_or(format!("status line without CRLF: {status_line:?}"))?;
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        r.read_line(&mut l).map_err(|e| e.to_string())?;
        let l = l.strip_suffix("\r\n").ok_or("header line without CRLF")?.to_owned();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').ok_or(format!("bad header line {l:?}"))?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let mut raw = Raw { status_line: status_line.to_owned(), headers, body: Vec::new() };
    let status = raw.status();
    if head_request || status == 204 || status == 304 {
        return Ok(raw);
    }
    let chunked = raw.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    if chunked {
        if raw.header("content-length").is_some() {
            return Err("both Content-Length and chunked".into());
        }
        loop {
            let mut size = String::new();
            r.read_line(&mut size).map_err(|e| e.to_string())?;
            let size = size.strip_suffix("\r\n").ok_or("chunk size without CRLF")?;
            let n =
                usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).map_err(|e| e.to_string())?;
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).map_err(|e| e.to_string())?;
            if &chunk[n..] != b"\r\n" {
                return Err("chunk not followed by CRLF".into());
            }
            if n == 0 {
                return Ok(raw);
            }
            raw.body.extend_from_slice(&chunk[..n]);
        }
    }
    if let Some(len) = raw.header("content-length") {
        let mut body = vec![0; len.parse().map_err(|_| "bad Content-Length")?];
        r.read_exact(&mut body).map_err(|e| e.to_string())?;
        raw.body = body;
        return Ok(raw);
    }
    if !raw.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
        return Err("a body without length or chunking on a connection kept alive".into());
    }
    r.read_to_end(&mut raw.body).map_err(|e| e.to_string())?;
    Ok(raw)
}

/// Sends `bytes` on a new connection and reads one response.
fn exchange(port: u16, bytes: &[u8]) -> Raw {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    (&s).write_all(bytes).unwrap();
    read_response(&mut BufReader::new(s), false)
        .unwrap_or_else(|e| panic!("no valid answer to {:?}: {e}", lossy(bytes)))
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned()
}

fn request(target: &[u8], headers: &str) -> Vec<u8> {
    [b"GET ", target, b" HTTP/1.1\r\nHost: edge.test\r\nConnection: close\r\n", headers.as_bytes(), b"\r\n"].concat()
}

/// The edge's access-log lines (JSON, target `stile::access`).
fn access_lines(edge: &Edge) -> Vec<serde_json::Value> {
    edge.log()
        .lines()
        .filter(|l| l.contains("\"stile::access\""))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Sum of `stile_edge_requests_total` samples whose labels contain every `want`.
fn requests_total(edge: &Edge, want: &[&str]) -> f64 {
    let body = get(edge.admin, "/metrics", &[]).expect("metrics").body;
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| l.starts_with("stile_edge_requests_total{") && want.iter().all(|w| l.contains(w)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

struct Setup {
    _content: tempfile::TempDir,
    origin: Origin,
    edge: Edge,
    token: String,
}

fn setup() -> Setup {
    let content = tempfile::tempdir().unwrap();
    let dir = content.path().join("vod/abc");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("seg.ts"), b"segment").unwrap();
    std::fs::write(content.path().join("secret.ts"), b"secret").unwrap();
    let origin = Origin::start(content.path());
    let edge = Edge::start(&origin, BASE_CONFIG, &state_json(1, serde_json::json!([]), None));
    Setup { _content: content, origin, edge, token: mint(|_| {}) }
}

impl Setup {
    fn assert_serving(&self) {
        let r = self.edge.get(&format!("/vod/abc/seg.ts?st={}", self.token), &[]);
        assert_eq!(r.status, 200, "the edge stopped serving: {}", self.edge.log());
    }

    /// Every request line the origin received.
    fn origin_lines(&self) -> Vec<String> {
        self.origin.request_lines()
    }

    fn assert_no_token_in_log(&self, tokens: &[&str]) {
        let log = self.edge.log();
        for t in tokens {
            let tail = &t[t.len() - 21..];
            for line in log.lines() {
                assert!(!line.contains(t) && !line.contains(tail), "token material in a log line: {line}");
            }
        }
    }
}

// ---------------------------------------------------------------- request lines

#[test]
fn request_lines_are_judged_as_sent() {
    let s = setup();
    let t = s.token.as_str();
    let before = s.origin_lines().len();
    let malformed_before = requests_total(&s.edge, &["reason=\"malformed\""]);
    // Lines Pingora's parser re-encodes (raw space, control bytes; raw UTF-8 or `<` next to
    // them) or whose fragment the target parser drops: 400 from the edge, reason `malformed`.
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("raw space in the path", format!("/vod/abc/seg ts?st={t}").into_bytes()),
        ("raw space, path token", format!("/_st/{t}/vod/abc/seg ts").into_bytes()),
        ("raw UTF-8 and a space", [b"/vod/abc/caf\xc3\xa9 x.ts?st=", t.as_bytes()].concat()),
        ("raw UTF-8, the space only in the query", [b"/vod/abc/caf\xc3\xa9.ts?st=", t.as_bytes(), b"&x=a b"].concat()),
        ("a space only in the query", format!("/vod/abc/seg.ts?st={t}&x=a b").into_bytes()),
        ("raw `<` next to a space", format!("/vod/abc/a<b c.ts?st={t}").into_bytes()),
        ("a tab", format!("/vod/abc/seg\t.ts?st={t}").into_bytes()),
        ("a NUL byte", [b"/vod/abc/seg\0.ts?st=", t.as_bytes()].concat()),
        ("DEL", [b"/vod/abc/seg\x7f.ts?st=", t.as_bytes()].concat()),
        ("raw # with traversal after it, path token", format!("/_st/{t}/vod/abc/seg.ts#/../../secret.ts").into_bytes()),
        ("raw # in the query", format!("/vod/abc/seg.ts?st={t}#x").into_bytes()),
        ("raw # in the path, query token", format!("/vod/abc/seg.ts#x?st={t}").into_bytes()),
    ];
    for (name, target) in &cases {
        let r = exchange(s.edge.port, &request(target, ""));
        assert_eq!(r.status(), 400, "{name}: {}", r.status_line);
        assert_eq!(r.header("x-stile-reason"), Some("malformed"), "{name}");
        assert_eq!(r.header("cache-control"), Some("no-store"), "{name}");
        s.assert_serving();
    }
    let after = s.origin_lines();
    let reached: Vec<_> = after[before..].iter().filter(|l| !l.starts_with("GET /vod/abc/seg.ts HTTP")).collect();
    assert!(reached.is_empty(), "judged requests reached the origin: {reached:#?}");
    // Each one is counted and has its access-log line.
    let counted = requests_total(&s.edge, &["reason=\"malformed\""]) - malformed_before;
    assert_eq!(counted, cases.len() as f64, "malformed requests counted");
    let logged = access_lines(&s.edge).iter().filter(|l| l["status"] == 400 && l["reason"] == "malformed").count();
    assert_eq!(logged, cases.len(), "access-log lines for the 400s");
    s.assert_no_token_in_log(&[t]);
}

#[test]
fn requests_pingora_refuses_are_counted_and_logged_without_tokens() {
    let s = setup();
    let t = s.token.as_str();
    let huge = format!("/_st/{t}/vod/abc/{}.ts", "a".repeat(2 * 1024 * 1024));
    let over_cap_header = format!("X-Junk: {}\r\n", "j".repeat(1024 * 1024 + 1));
    let many_headers: String = (0..300).map(|i| format!("X-H{i}: v\r\n")).collect();
    // (name, request, the status Pingora answers with: these answers are Pingora 0.9's,
    // the edge's part is the count and the log line).
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("raw `<` (the http crate refuses it)", request(format!("/vod/abc/a<b.ts?st={t}").as_bytes(), ""), 400),
        ("raw `>`", request(format!("/_st/{t}/vod/abc/a>b.ts").as_bytes(), ""), 400),
        ("raw backtick", request(format!("/vod/abc/a`b.ts?st={t}").as_bytes(), ""), 400),
        ("raw backtick next to a space", request(format!("/_ST/{t}/vod/a`b c.ts").as_bytes(), ""), 400),
        ("`\"` in the query", request(format!("/vod/abc/seg.ts?st={t}&x=\"").as_bytes(), ""), 400),
        ("non-UTF-8 bytes", request(&[b"/_st/", t.as_bytes(), b"/vod/\xff\xfe.ts"].concat(), ""), 400),
        ("2 MiB request line with a path token", request(huge.as_bytes(), ""), 400),
        (
            "header past the 1 MiB head cap",
            request(format!("/vod/abc/seg.ts?st={t}").as_bytes(), &over_cap_header),
            400,
        ),
        ("more than 256 headers", request(format!("/_st/{t}/vod/abc/seg.ts").as_bytes(), &many_headers), 400),
        (
            "absolute form with a bad authority",
            request(format!("http://a@b/_st/{t}/vod/abc/seg.ts").as_bytes(), ""),
            400,
        ),
        ("CONNECT", format!("CONNECT {t}.example:443 HTTP/1.1\r\nHost: {t}.example:443\r\n\r\n").into_bytes(), 405),
        ("not HTTP at all", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n".to_vec(), 400),
    ];
    let before = requests_total(&s.edge, &["reason=\"malformed\"", "transport=\"none\""]);
    let lines_before = access_lines(&s.edge).len();
    for (name, bytes, status) in &cases {
        let mut c = TcpStream::connect(("127.0.0.1", s.edge.port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = c.write_all(bytes);
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        let head = String::from_utf8_lossy(&out[..out.len().min(12)]).into_owned();
        assert_eq!(head, format!("HTTP/1.1 {status}"), "{name}");
        s.assert_serving();
    }
    // The log lines are written once the connection ends: wait for them.
    let deadline = Instant::now() + Duration::from_secs(5);
    let refused = loop {
        let refused: Vec<_> = access_lines(&s.edge)
            .into_iter()
            .skip(lines_before)
            .filter(|l| l["error"] == "refused_by_parser")
            .collect();
        if refused.len() >= cases.len() || Instant::now() > deadline {
            break refused;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(refused.len(), cases.len(), "one access-log line per refused request: {refused:#?}");
    for l in &refused {
        assert_eq!(l["decision"], "deny");
        assert_eq!(l["reason"], "malformed");
        assert_eq!(l["client"], "127.0.0.1");
        assert!(l["status"] == 400 || l["status"] == 405, "{l}");
    }
    let counted = requests_total(&s.edge, &["reason=\"malformed\"", "transport=\"none\""]) - before;
    assert_eq!(counted, cases.len() as f64, "refused requests counted as malformed");
    s.assert_no_token_in_log(&[t]);
}

// ---------------------------------------------------------------- paths

#[test]
fn look_alikes_and_trimmed_dots_are_malformed() {
    let s = setup();
    let t = s.token.as_str();
    let before = s.origin_lines().len();
    let attacks = [
        "/vod/abc/%E2%80%A5/%E2%80%A5/secret.ts", // two dot leader: `..` under NFKC
        "/vod/abc/%EF%B8%B0/%EF%B8%B0/secret.ts", // vertical two dot leader
        "/vod/abc/..%CD%BE/seg.ts",               // Greek question mark: `;` (Tomcat `..;/`)
        "/vod/abc/%EF%BC%8E%EF%BC%8E/secret.ts",  // fullwidth full stops
        "/vod/abc/a%EF%BC%85%32%65.ts",           // fullwidth percent
        "/vod/abc/a%EF%BC%9B.ts",                 // fullwidth semicolon
        "/vod/abc/a%EF%BC%9F.ts",                 // fullwidth question mark
        "/vod/abc/a%EF%BC%83.ts",                 // fullwidth number sign
        "/vod/abc/%E2%88%95secret.ts",            // division slash
        "/vod/abc/%EF%B9%92%EF%B9%92/secret.ts",  // small full stops
        "/vod/abc/.../secret.ts",
        "/vod/abc/..%20/..%20/secret.ts",
        "/vod/abc/..%3F/..%3F/secret.ts",
        "/vod/abc/..%23/secret.ts",
        "/vod/abc/.%2e%2e/secret.ts",
        "/vod/abc/seg.ts.",
        "/vod/abc/seg.ts%20",
    ];
    for a in attacks {
        for target in [format!("{a}?st={t}"), format!("/_st/{t}{a}")] {
            let r = exchange(s.edge.port, &request(target.as_bytes(), ""));
            assert_eq!((r.status(), r.header("x-stile-reason")), (403, Some("malformed")), "{target}");
        }
        let r = exchange(s.edge.port, &request(a.as_bytes(), &format!("Cookie: stile={t}\r\n")));
        assert_eq!((r.status(), r.header("x-stile-reason")), (403, Some("malformed")), "{a} via cookie");
        s.assert_serving();
    }
    let after = s.origin_lines();
    assert!(after[before..].iter().all(|l| l == "GET /vod/abc/seg.ts HTTP/1.1"), "{:#?}", &after[before..]);
}

// ---------------------------------------------------------------- leaks

#[test]
fn no_token_shaped_thing_in_the_access_log() {
    let s = setup();
    let t = s.token.as_str();
    let encoded: String = t.bytes().map(|b| format!("%{b:02X}")).collect();
    let targets = [
        format!("/_ST/{t}/vod/abc/seg.ts"),
        format!("/%5Fst/{t}/vod/abc/seg.ts"),
        format!("/%5fST/{t}/vod/abc/seg.ts"),
        format!("/_st/{t}/_st/{t}/vod/abc/seg.ts"),
        format!("/_st/{t}/vod/abc/_St/{t}/seg.ts"),
        format!("/vod/abc/{t}/seg.ts"),
        format!("/vod/abc/seg-{t}.ts"),
        format!("/vod/abc/{encoded}.ts"),
        format!("/vod/abc/seg.ts?x={t}&st={t}"),
        format!("/vod/xyz/seg.ts?st={t}"),
        format!("/_st/{t}"),
    ];
    for target in &targets {
        let r = exchange(s.edge.port, &request(target.as_bytes(), ""));
        assert!(matches!(r.status(), 200 | 401 | 403 | 404), "{target}: {}", r.status_line);
    }
    s.assert_serving();
    let lines = access_lines(&s.edge);
    assert!(lines.len() > targets.len(), "access-log lines were written");
    assert!(lines.iter().any(|l| l["path"] == "/_ST/<redacted>"), "{lines:#?}");
    assert!(lines.iter().any(|l| l["path"] == "/vod/abc/<redacted>/seg.ts"), "{lines:#?}");
    s.assert_no_token_in_log(&[t]);
}

// ---------------------------------------------------------------- caching

/// An origin that answers every request with `head` (status line and headers, CRLF-
/// separated, no final blank line) and `body`, recording each request line; it
/// closes the connection after each answer when `close` is set.
fn scripted_origin(head: &'static str, body: &'static [u8], close: bool) -> (Origin, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let seen = lines.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut w = conn;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    seen.lock().unwrap().push(line.trim_end().to_owned());
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                            break;
                        }
                    }
                    let resp = format!("{head}\r\nContent-Length: {}\r\n\r\n", body.len());
                    if w.write_all(resp.as_bytes()).is_err() || w.write_all(body).is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    (Origin::external(port), lines)
}

#[test]
fn answers_for_one_viewer_are_not_stored_by_shared_caches() {
    let (origin, _) =
        scripted_origin("HTTP/1.1 200 OK\r\nCache-Control: public, max-age=60, s-maxage=600", b"x", false);
    let edge = Edge::start(&origin, BASE_CONFIG, &state_json(1, serde_json::json!([]), None));
    let t = mint(|_| {});
    let cookie = format!("Cookie: stile={t}\r\n");
    // Admitted by the token cookie: private, keyed on the cookie.
    let r = exchange(edge.port, &request(b"/vod/abc/seg.ts", &cookie));
    assert_eq!(r.status(), 200);
    assert_eq!(r.header("cache-control"), Some("private, max-age=60"));
    assert!(r.all("vary").iter().any(|v| v.eq_ignore_ascii_case("cookie")), "{:?}", r.headers);
    // A manifest admitted by a path token sets the viewer's cookie: nobody stores it.
    let r = exchange(edge.port, &request(format!("/_st/{t}/vod/abc/master.m3u8").as_bytes(), ""));
    assert!(r.header("set-cookie").is_some_and(|c| c.starts_with("stile=")), "{:?}", r.headers);
    assert_eq!(r.all("cache-control"), ["private, no-store"]);
    // The same with a query token (rewritten playlist): no-store too.
    let r = exchange(edge.port, &request(format!("/vod/abc/master.m3u8?st={t}").as_bytes(), ""));
    assert_eq!(r.all("cache-control"), ["private, no-store"]);
    // A segment admitted by a URL token: the cache key holds the token; the origin's header stays.
    let r = exchange(edge.port, &request(format!("/vod/abc/seg.ts?st={t}").as_bytes(), ""));
    assert_eq!(r.header("cache-control"), Some("public, max-age=60, s-maxage=600"));

    // The origin's own Set-Cookie makes any answer private.
    let (origin, _) =
        scripted_origin("HTTP/1.1 200 OK\r\nCache-Control: public, max-age=60\r\nSet-Cookie: o=1", b"x", false);
    let edge = Edge::start(&origin, BASE_CONFIG, &state_json(1, serde_json::json!([]), None));
    let r = exchange(edge.port, &request(format!("/_st/{t}/vod/abc/seg.ts").as_bytes(), ""));
    assert_eq!((r.status(), r.header("cache-control")), (200, Some("private, max-age=60")));
}

// ---------------------------------------------------------------- HTTP/1.0 origin

const PLAYLIST: &[u8] = b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nseg0.ts\n#EXT-X-ENDLIST\n";

#[test]
fn rewritten_playlists_from_an_http10_origin_are_valid_responses() {
    let (origin, seen) =
        scripted_origin("HTTP/1.0 200 OK\r\nContent-Type: application/vnd.apple.mpegurl", PLAYLIST, true);
    let edge = Edge::start(&origin, BASE_CONFIG, &state_json(1, serde_json::json!([]), None));
    let t = mint(|_| {});
    let target = format!("/vod/abc/index.m3u8?st={t}");
    let expect = format!("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nseg0.ts?st={t}\n#EXT-X-ENDLIST\n");

    // HTTP/1.1 client, keep-alive: a strictly framed HTTP/1.1 answer, then the same
    // connection serves a second request (Chromium hung 20 s on `HTTP/1.0` + chunked).
    let c = TcpStream::connect(("127.0.0.1", edge.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = BufReader::new(c.try_clone().unwrap());
    for round in 0..2 {
        let req = format!("GET {target} HTTP/1.1\r\nHost: edge.test\r\n\r\n");
        (&c).write_all(req.as_bytes()).unwrap();
        let started = Instant::now();
        let resp = read_response(&mut r, false).unwrap_or_else(|e| panic!("round {round}: invalid framing: {e}"));
        assert!(started.elapsed() < Duration::from_secs(2), "round {round} took {:?}", started.elapsed());
        assert_eq!(resp.status_line, "HTTP/1.1 200 OK", "round {round}");
        assert_eq!(resp.header("transfer-encoding"), Some("chunked"));
        assert_eq!(resp.header("content-length"), None);
        assert_eq!(String::from_utf8_lossy(&resp.body), expect, "round {round}");
    }

    // HTTP/1.0 client: no chunked encoding; the body ends with the connection.
    let c = TcpStream::connect(("127.0.0.1", edge.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    (&c).write_all(format!("GET {target} HTTP/1.0\r\nHost: edge.test\r\n\r\n").as_bytes()).unwrap();
    let resp = read_response(&mut BufReader::new(c), false).unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.status_line);
    assert_eq!(resp.header("transfer-encoding"), None, "{:?}", resp.headers);
    assert_eq!(resp.header("connection"), Some("close"));
    assert_eq!(String::from_utf8_lossy(&resp.body), expect);

    // Not rewritten, from the same origin: a valid HTTP/1.1 status line too.
    let resp = exchange(edge.port, &request(format!("/_st/{t}/vod/abc/index.m3u8").as_bytes(), ""));
    assert_eq!(resp.status_line, "HTTP/1.1 200 OK");
    assert_eq!(resp.body, PLAYLIST);
    assert!(seen.lock().unwrap().iter().all(|l| !l.contains(&t)), "a token reached the origin");
}
