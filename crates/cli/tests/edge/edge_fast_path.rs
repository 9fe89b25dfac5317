//! The edge's sequential path to the origin (`origin.fast_path`, docs/edge.md "Origin
//! pools"): plain `GET`s that the cache does not take reach the origin and the viewer
//! exactly as they do through Pingora's proxy (the same edge with `fast_path = false`
//! side by side, in front of one origin that records what it receives); requests of
//! another shape still go through Pingora (hop-by-hop fields stripped); a pooled
//! connection the origin closed, a 5xx retried on another origin and a dead origin are
//! handled by the same rules; bodies larger than one read arrive whole.

use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use stile_tests::cache::{CountingOrigin, Reply, Seen, bytes};
use stile_tests::edge::*;
use stile_tests::net::*;
use stile_tests::token::*;

const SEG: &str = "/vod/abc/v1/seg1.ts";

/// An edge in front of `origin` with `origin.fast_path = fast` and `extra` TOML.
fn edge(origin: u16, fast: bool, extra: &str) -> Edge {
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let state = state_json(1, serde_json::json!([]), None);
    let path = Edge::write_config(dir.path(), origin, port, admin, &format!("{BASE_CONFIG}\n{extra}"), "", &state);
    let config =
        std::fs::read_to_string(&path).unwrap().replace("[origin]\n", &format!("[origin]\nfast_path = {fast}\n"));
    std::fs::write(&path, config).unwrap();
    let child = Edge::spawn(&path, &[]);
    let mut edge = Edge { port, admin, dir, child };
    edge.wait_ready();
    edge
}

fn link(path: &str) -> String {
    format!("{path}?st={}", mint(|_| {}))
}

fn taken(edge: &Edge, outcome: &str) -> f64 {
    metric(edge.admin, &format!("stile_edge_fast_path_requests_total{{outcome=\"{outcome}\"}}")).unwrap_or(-1.0)
}

/// Header fields by name, sorted.
type Fields = Vec<(String, Vec<String>)>;

/// A viewer's answer without what differs from one answer to the next.
fn comparable(r: &Response) -> (u16, Fields, Vec<u8>) {
    let mut h: Vec<_> = r.headers.iter().filter(|(k, _)| *k != "date").map(|(k, v)| (k.clone(), v.clone())).collect();
    h.sort();
    (r.status, h, r.body.clone())
}

/// What the origin received, without the fields that name the hop.
fn received(s: &Seen) -> (String, String, Vec<(String, String)>) {
    let mut h: Vec<_> = s.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    h.sort();
    (s.method.clone(), s.target.clone(), h)
}

#[test]
fn plain_gets_reach_the_origin_and_the_viewer_as_through_pingora() {
    let origin = CountingOrigin::start(|s| match s.path() {
        SEG => Reply::ok(bytes(300_000, 7))
            .header("Content-Type", "video/mp2t")
            .header("Cache-Control", "max-age=60")
            .header("Set-Cookie", "origin=1")
            .paced(3, Duration::from_millis(20)),
        _ => Reply::ok("no such object").status(404),
    });
    let (fast, pingora) = (edge(origin.port, true, ""), edge(origin.port, false, ""));
    let l = link(SEG);
    let headers = [
        ("Connection", "keep-alive"),
        ("Accept", "*/*"),
        ("X-Viewer", "a"),
        ("Cookie", "stile=abc; theme=dark"),
        ("Referer", "https://player.example/watch"),
        ("Origin", "https://player.example"),
    ];
    let a = fast.get(&l, &headers);
    let b = pingora.get(&l, &headers);
    assert_eq!((a.status, a.body.len()), (200, 300_000), "{}", fast.log());
    assert_eq!(a.body, bytes(300_000, 7));
    assert_eq!(comparable(&a), comparable(&b));
    let seen = origin.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(received(&seen[0]), received(&seen[1]));
    // Neither the token, nor the edge's cookie, nor the hop's `Connection` went upstream.
    assert_eq!(seen[0].target, SEG);
    assert_eq!(seen[0].header("cookie"), Some("theme=dark"));
    assert_eq!(seen[0].header("x-viewer"), Some("a"));
    assert_eq!(taken(&fast, "served"), 1.0);
    assert_eq!(taken(&pingora, "served"), 0.0);

    // A 404 and a HEAD: the same answers again; the HEAD is Pingora's either way.
    let a = fast.get(&link("/vod/abc/v1/none.ts"), &[]);
    let b = pingora.get(&link("/vod/abc/v1/none.ts"), &[]);
    assert_eq!((a.status, comparable(&a)), (404, comparable(&b)));
    let a = request(fast.port, "HEAD", &l, &[]).unwrap();
    let b = request(pingora.port, "HEAD", &l, &[]).unwrap();
    assert_eq!(comparable(&a), comparable(&b));
    assert_eq!(taken(&fast, "served"), 2.0);
    // The access log tells them apart no more than the viewer does.
    let line = |e: &Edge| e.log().lines().filter(|l| l.contains("\"stile::access\"")).count();
    assert_eq!((line(&fast), line(&pingora)), (3, 3));
}

#[test]
fn other_shapes_go_through_pingora_which_strips_hop_by_hop_fields() {
    let origin = CountingOrigin::start(|_| Reply::ok("x"));
    let fast = edge(origin.port, true, "");
    let l = link(SEG);
    for (i, headers) in [
        vec![("Connection", "x-secret"), ("X-Secret", "1")],
        vec![("Connection", "keep-alive, x-secret"), ("X-Secret", "1")],
        vec![("TE", "trailers")],
        vec![("Proxy-Authorization", "Basic eDp5")],
        vec![("Upgrade", "h2c"), ("Connection", "upgrade")],
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(fast.get(&l, &headers).status, 200, "{headers:?}");
        let s = &origin.seen()[i];
        for h in ["x-secret", "te", "proxy-authorization", "upgrade", "connection"] {
            assert!(
                s.header(h).is_none_or(|v| h == "connection" && v.eq_ignore_ascii_case("keep-alive")),
                "{h}: {s:?}"
            );
        }
    }
    assert_eq!(taken(&fast, "served"), 0.0);
    // A body: Pingora's too.
    let r = send(fast.port, "GET", &l, &[("Content-Length", "3")], b"abc").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(taken(&fast, "served"), 0.0);
}

#[test]
fn a_closed_pooled_connection_a_retried_5xx_and_a_dead_origin_follow_the_retry_policy() {
    // An origin that closes a kept-alive connection when its second request comes: the
    // pooled connection fails before any answer, and the same origin is tried again on a
    // fresh one (by Pingora, whose pool is separate).
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let answers = Arc::new(AtomicUsize::new(0));
    let served = answers.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let served = served.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut out = conn;
                for i in 0.. {
                    if read_head(&mut reader).is_none() || i == 1 {
                        return;
                    }
                    let n = served.fetch_add(1, Ordering::SeqCst);
                    let body = format!("answer {n}");
                    let _ = write!(out, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                }
            });
        }
    });
    let fast = edge(port, true, "");
    assert_eq!(fast.get(&link(SEG), &[]).body, b"answer 0");
    let r = fast.get(&link(SEG), &[]);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"answer 1"[..]), "{}", fast.log());
    assert_eq!((taken(&fast, "served"), taken(&fast, "handed_over")), (1.0, 1.0));
    assert_eq!(answers.load(Ordering::SeqCst), 2);
    let retries = r#"stile_edge_origin_retries_total{cause="stale_connection",pool="default"}"#;
    assert_eq!(metric(fast.admin, retries), Some(1.0), "{}", metrics_text(fast.admin));

    // Two origins, one answering 503: retried on the other before the viewer sees anything.
    let bad = CountingOrigin::start(|_| Reply::ok("down").status(503));
    let good = CountingOrigin::start(|_| Reply::ok("up"));
    let pools = format!(
        "[[origin.pools]]\nname = \"p\"\nprefixes = [\"/\"]\n\
         [[origin.pools.servers]]\nname = \"bad\"\naddress = \"127.0.0.1:{}\"\n\
         [[origin.pools.servers]]\nname = \"good\"\naddress = \"127.0.0.1:{}\"\n",
        bad.port, good.port
    );
    let two = edge_with_pools(&pools);
    for _ in 0..4 {
        let r = two.get(&link(SEG), &[]);
        assert_eq!((r.status, r.body.as_slice()), (200, &b"up"[..]), "{}", two.log());
    }
    assert!(!bad.seen().is_empty() && good.seen().len() == 4);
    assert!(taken(&two, "served") + taken(&two, "handed_over") == 4.0 && taken(&two, "handed_over") >= 1.0);

    // The only origin dead: the viewer gets 502 and the error is counted once. Its port
    // is held by a socket bound but not listening, so connecting is refused and no
    // other test's server can take the port meanwhile.
    let hold = tokio::net::TcpSocket::new_v4().unwrap();
    hold.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let dead = edge(hold.local_addr().unwrap().port(), true, "");
    let r = dead.get(&link(SEG), &[]);
    assert_eq!(r.status, 502, "{}", dead.log());
    assert_eq!(taken(&dead, "served"), 1.0);
    assert_eq!(metric_sum(dead.admin, "stile_edge_upstream_errors_total"), Some(1.0));
    // Logged once, as a failed proxied request is, without the token.
    let log = dead.log();
    let lines: Vec<_> = log.lines().filter(|l| l.contains("Fail to")).collect();
    assert!(
        lines.len() == 1 && lines[0].contains("Fail to proxy") && lines[0].contains("GET /vod/abc/v1/seg1.ts"),
        "{log}"
    );
    assert!(!log.contains("st="), "{log}");
}

/// An edge whose `[origin]` is only `pools` (the shorthand address left out).
fn edge_with_pools(pools: &str) -> Edge {
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let state = state_json(1, serde_json::json!([]), None);
    let path = Edge::write_config(dir.path(), 1, port, admin, BASE_CONFIG, "", &state);
    let config = std::fs::read_to_string(&path).unwrap().replace("[origin]\naddress = \"127.0.0.1:1\"\n", pools);
    std::fs::write(&path, config).unwrap();
    let child = Edge::spawn(&path, &[]);
    let mut edge = Edge { port, admin, dir, child };
    edge.wait_ready();
    edge
}
