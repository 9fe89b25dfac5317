//! Origin pools end to end against the real `stile edge`: one origin killed
//! under load (no idempotent request fails beyond the documented retry policy),
//! active health checks taking it out and bringing it back, 5xx answers retried
//! on another origin, an HTTPS origin verified against a custom CA (and refused
//! without it), and per-prefix routing on the canonical path.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use stile_tests::edge::*;
use stile_tests::net::*;
use stile_tests::tls::*;
use stile_tests::token::*;

fn content() -> tempfile::TempDir {
    let content = tempfile::tempdir().unwrap();
    for dir in ["vod/abc", "vod/a", "vod/b"] {
        std::fs::create_dir_all(content.path().join(dir)).unwrap();
    }
    std::fs::write(content.path().join("vod/abc/seg0.ts"), vec![b's'; 2048]).unwrap();
    std::fs::write(content.path().join("health"), b"ok").unwrap();
    content
}

fn server(name: &str, port: u16, extra: &str) -> String {
    format!("[[origin.pools.servers]]\nname = \"{name}\"\naddress = \"127.0.0.1:{port}\"\n{extra}\n")
}

/// Starts an edge whose `[origin]` is `origin_toml` (the generated shorthand is overridden).
fn edge_with(origin_toml: &str, extra: &str) -> Edge {
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let state = dir.path().join("state.json");
    std::fs::write(&state, state_json(1, serde_json::json!([]), None)).unwrap();
    let config = format!(
        "listen = [\"127.0.0.1:{port}\"]\nadmin_listen = \"127.0.0.1:{admin}\"\nthreads = 2\n\
         grace_period_secs = 1\ngraceful_shutdown_timeout_secs = 1\n\
         pid_file = \"{d}/edge.pid\"\nupgrade_sock = \"{d}/upgrade.sock\"\n\
         [diagnostics]\nreason_header = true\n{extra}\n{origin_toml}\n[state]\nfile = \"{s}\"\n",
        d = dir.path().display(),
        s = state.display(),
    );
    let path = dir.path().join("edge.toml");
    std::fs::write(&path, config).unwrap();
    let child = Edge::spawn(&path, &[]);
    let mut edge = Edge { port, admin, dir, child };
    edge.wait_ready();
    edge
}

/// One GET on a fresh connection: `Some(status, complete)` or `None` when no status line came.
fn fetch(port: u16, target: &str) -> Option<(u16, bool)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(15))).ok()?;
    let req = format!("GET {target} HTTP/1.1\r\nHost: edge.test\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let r = parse_response(&raw, false)?;
    let complete = r.status != 200 || r.body.len() == 2048;
    Some((r.status, complete))
}

#[test]
fn one_origin_killed_under_load_fails_no_idempotent_request() {
    let content = content();
    let a = KillableOrigin::start("a", content.path(), None);
    let b = KillableOrigin::start("b", content.path(), None);
    let origin_toml = format!(
        "[origin.health]\npath = \"/health\"\ninterval_ms = 100\ntimeout_ms = 500\nhealthy_threshold = 2\n\
         unhealthy_threshold = 2\n[origin.passive]\nfailures = 1\ndown_secs = 1\n\
         [[origin.pools]]\nname = \"vod\"\nprefixes = [\"/\"]\n{}{}",
        server("a", a.port, ""),
        server("b", b.port, "")
    );
    let edge = edge_with(&origin_toml, "");
    let token = mint(|_| {});
    let target = format!("/vod/abc/seg0.ts?st={token}");
    assert_eq!(fetch(edge.port, &target), Some((200, true)));

    // Eight clients fetch in a loop while origin a dies and comes back.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, truncated) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (stop, ok, truncated, failed, target) =
                (stop.clone(), ok.clone(), truncated.clone(), failed.clone(), target.clone());
            let port = edge.port;
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match fetch(port, &target) {
                        Some((200, true)) => ok.fetch_add(1, Ordering::Relaxed),
                        Some((200, false)) => truncated.fetch_add(1, Ordering::Relaxed),
                        other => {
                            failed.lock().unwrap().push(other);
                            0
                        }
                    };
                }
            })
        })
        .collect();
    let up = |name: &str| metric(edge.admin, &format!("stile_edge_origin_up{{origin=\"{name}\",pool=\"vod\"}}"));
    std::thread::sleep(Duration::from_millis(500));
    let a_before = a.served();
    assert!(a_before > 0 && b.served() > 0, "both origins serve: a {a_before}, b {}", b.served());
    a.kill();
    wait(|| up("a") == Some(0.0), "health checks take a out", &edge);
    std::thread::sleep(Duration::from_millis(500));
    let a_dead = a.served();
    a.restart();
    wait(|| up("a") == Some(1.0), "health checks bring a back", &edge);
    wait(|| a.served() > a_dead + 20, "a serves again", &edge);
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let failed = failed.lock().unwrap().clone();
    let (ok, truncated) = (ok.load(Ordering::Relaxed), truncated.load(Ordering::Relaxed));
    // The policy: GETs that failed before any byte reached the viewer are retried; only a
    // response cut after its head reached the viewer may fail (at most one per client in flight).
    assert!(failed.is_empty(), "requests failed beyond the retry policy: {failed:?} ({ok} ok)\n{}", edge.log());
    assert!(truncated <= 8, "{truncated} truncated responses");
    assert!(ok > 200, "load ran: {ok} requests");
    let text = metrics_text(edge.admin);
    assert!(
        text.lines()
            .any(|l| l.starts_with("stile_edge_origin_health_checks_total{origin=\"a\",pool=\"vod\",result=\"fail\"}")),
        "{text}"
    );
    assert!(edge.log().contains("origin.down") && edge.log().contains("origin.up"), "{}", edge.log());
}

fn wait(mut ok: impl FnMut() -> bool, what: &str, edge: &Edge) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out: {what}\n{}", edge.log());
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn five_xx_is_retried_on_another_origin_and_forwarded_when_all_fail() {
    let content = content();
    let a = KillableOrigin::start("a", content.path(), None);
    let b = KillableOrigin::start("b", content.path(), None);
    a.set_fail_5xx(true);
    let origin_toml = format!(
        "[origin.passive]\nfailures = 0\n[[origin.pools]]\nname = \"vod\"\nprefixes = [\"/\"]\n{}{}",
        server("a", a.port, ""),
        server("b", b.port, "")
    );
    let edge = edge_with(&origin_toml, "");
    let token = mint(|_| {});
    let target = format!("/vod/abc/seg0.ts?st={token}");
    for _ in 0..20 {
        assert_eq!(fetch(edge.port, &target), Some((200, true)));
    }
    assert!(a.served() > 0, "a was tried");
    // Every try, retries included, asked for the canonical target without the token.
    for head in a.heads().iter().chain(&b.heads()) {
        assert!(head.starts_with("GET /vod/abc/seg0.ts HTTP/1.1\r\n") && !head.contains(&token), "{head}");
    }
    let retries = metric(edge.admin, r#"stile_edge_origin_retries_total{cause="status_5xx",pool="vod"}"#).unwrap();
    assert_eq!(retries, a.served() as f64, "every 503 of a was retried on b");
    // HEAD is retried too.
    let r = request(edge.port, "HEAD", &target, &[]).unwrap();
    assert_eq!(r.status, 200);
    // Every origin answers 5xx: the last answer is forwarded as it is.
    b.set_fail_5xx(true);
    let r = get(edge.port, &target, &[]).unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(r.body, b"down for maintenance\n");
    let errors = metric(edge.admin, r#"stile_edge_origin_errors_total{kind="status_5xx",origin="b",pool="vod"}"#);
    assert!(errors.unwrap() >= 1.0);
}

#[test]
fn https_origin_with_a_custom_ca_and_sni() {
    let content = content();
    let certs = tempfile::tempdir().unwrap();
    let pki = Pki::new(certs.path());
    let tls_origin = KillableOrigin::start("t", content.path(), Some(pki.server(&["origin.test"])));
    let ca = pki.ca_pem.display().to_string();
    let origin_toml = format!(
        "[[origin.pools]]\nname = \"good\"\nprefixes = [\"/vod/abc/\"]\n{}\
         [[origin.pools]]\nname = \"no-ca\"\nprefixes = [\"/vod/a/\"]\n{}\
         [[origin.pools]]\nname = \"wrong-name\"\nprefixes = [\"/vod/b/\"]\n{}",
        server(
            "t",
            tls_origin.port,
            &format!("tls = true\nsni = \"origin.test\"\nca_file = \"{ca}\"\nhost = \"media.test\"")
        ),
        server("t", tls_origin.port, "tls = true\nsni = \"origin.test\""),
        server("t", tls_origin.port, &format!("tls = true\nsni = \"other.test\"\nca_file = \"{ca}\"")),
    );
    let edge = edge_with(&origin_toml, "");
    let token = mint(|c| c.scope = stile_token::Scope::parse("/vod/").unwrap());
    let r = get(edge.port, &format!("/vod/abc/seg0.ts?st={token}"), &[]).unwrap();
    assert_eq!((r.status, r.body.len()), (200, 2048), "{}", edge.log());
    let head = tls_origin.heads().pop().unwrap();
    assert!(head.starts_with("GET /vod/abc/seg0.ts HTTP/1.1") && head.contains("media.test"), "{head}");
    // Not trusted without the CA, not valid for another name: 502, counted as TLS errors.
    std::fs::write(content.path().join("vod/a/seg0.ts"), b"x").unwrap();
    std::fs::write(content.path().join("vod/b/seg0.ts"), b"x").unwrap();
    for (pool, path) in [("no-ca", "/vod/a/seg0.ts"), ("wrong-name", "/vod/b/seg0.ts")] {
        let r = get(edge.port, &format!("{path}?st={token}"), &[]).unwrap();
        assert_eq!(r.status, 502, "{pool}");
        let errors =
            metric(edge.admin, &format!("stile_edge_origin_errors_total{{kind=\"tls\",origin=\"t\",pool=\"{pool}\"}}"));
        assert!(errors.unwrap_or(0.0) >= 1.0, "{pool}: {}", metrics_text(edge.admin));
    }
}

#[test]
fn prefixes_route_on_the_canonical_path_longest_first() {
    let content = content();
    for (dir, body) in [("vod/a", "from a"), ("vod/b", "from b")] {
        std::fs::write(content.path().join(dir).join("seg.ts"), body).unwrap();
    }
    let a = KillableOrigin::start("a", content.path(), None);
    let vod = KillableOrigin::start("vod", content.path(), None);
    let origin_toml = format!(
        "[[origin.pools]]\nname = \"lib-a\"\nprefixes = [\"/vod/a/\"]\n{}\
         [[origin.pools]]\nname = \"vod\"\nprefixes = [\"/vod/\"]\n{}",
        server("a1", a.port, ""),
        server("v1", vod.port, ""),
    );
    let edge = edge_with(&origin_toml, "");
    let token = mint(|c| c.scope = stile_token::Scope::parse("/").unwrap());
    let served =
        |o: &KillableOrigin| o.heads().iter().map(|h| h.lines().next().unwrap().to_owned()).collect::<Vec<_>>();
    assert_eq!(get(edge.port, &format!("/vod/a/seg.ts?st={token}"), &[]).unwrap().body, b"from a");
    // `%61` is `a` once canonical: the same pool, and the origin is asked for the canonical path.
    assert_eq!(get(edge.port, &format!("/vod/%61/seg.ts?st={token}"), &[]).unwrap().body, b"from a");
    assert_eq!(get(edge.port, &format!("/vod/b/seg.ts?st={token}"), &[]).unwrap().body, b"from b");
    assert_eq!(served(&a), vec!["GET /vod/a/seg.ts HTTP/1.1"; 2]);
    assert_eq!(served(&vod), vec!["GET /vod/b/seg.ts HTTP/1.1"]);
    // No pool serves /live/: 404 after validation (an invalid token still gets 403 first).
    assert_eq!(get(edge.port, &format!("/live/x.ts?st={token}"), &[]).unwrap().status, 404);
    assert_eq!(get(edge.port, "/live/x.ts?st=garbage", &[]).unwrap().status, 403);
    assert!(!edge.log().contains("Fail to proxy"), "a 404 route is not logged as an error");
}

#[test]
fn a_dead_origin_at_startup_is_tried_then_taken_out() {
    // No health checks: passive health alone takes the dead origin out after a failure.
    let content = content();
    let b = KillableOrigin::start("b", content.path(), None);
    let dead = free_port();
    let origin_toml = format!(
        "[origin.passive]\nfailures = 1\ndown_secs = 30\n[[origin.pools]]\nname = \"vod\"\nprefixes = [\"/\"]\n{}{}",
        server("dead", dead, ""),
        server("b", b.port, "")
    );
    let edge = edge_with(&origin_toml, "");
    let target = format!("/vod/abc/seg0.ts?st={}", mint(|_| {}));
    for _ in 0..10 {
        assert_eq!(fetch(edge.port, &target), Some((200, true)));
    }
    let connect = metric(edge.admin, r#"stile_edge_origin_errors_total{kind="connect",origin="dead",pool="vod"}"#);
    assert_eq!(connect, Some(1.0), "tried once, then out for down_secs");
    assert_eq!(metric(edge.admin, r#"stile_edge_origin_retries_total{cause="connect",pool="vod"}"#), Some(1.0));
}
