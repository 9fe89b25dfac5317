//! Viewer TLS end to end, with real handshakes against the real `stile edge`:
//! rustls and curl clients over HTTP/1.1 and HTTP/2, SNI picking one of two
//! certificates, a certificate reload during a long download, bad certificates
//! refused at startup (exit 64, nothing bound), TLS 1.0/1.1 refused, handshake
//! failures counted by cause, the HTTPS redirect, the three token transports,
//! playlist rewriting, cookies, CORS and diagnostics over HTTP/2, and the
//! hostile-path table sent as raw HTTP/2 `:path` bytes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use stile_tests::edge::*;
use stile_tests::net::*;
use stile_tests::tls::*;
use stile_tests::token::*;

const CONFIG: &str = "[diagnostics]\nreason_header = true\n[cookie]\nenabled = true\n";

struct Setup {
    _content: tempfile::TempDir,
    certs: tempfile::TempDir,
    pki: Pki,
    origin: Origin,
    edge: Edge,
    tls: u16,
    token: String,
}

fn content() -> tempfile::TempDir {
    let content = tempfile::tempdir().unwrap();
    let abc = content.path().join("vod/abc");
    std::fs::create_dir_all(abc.join("v1")).unwrap();
    std::fs::write(abc.join("seg0.ts"), b"segment-bytes").unwrap();
    std::fs::write(content.path().join("secret.ts"), b"secret").unwrap();
    std::fs::write(
        abc.join("master.m3u8"),
        "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=200000\nv1/index.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=400000\nv1/index.m3u8?x=1\n",
    )
    .unwrap();
    std::fs::write(abc.join("v1/index.m3u8"), "#EXTM3U\n#EXTINF:1,\nseg0.ts\n#EXT-X-ENDLIST\n").unwrap();
    std::fs::write(abc.join("v1/seg0.ts"), b"v1-segment").unwrap();
    // 8 MiB with a recognisable pattern, for the long download.
    let big: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
    std::fs::write(abc.join("big.ts"), big).unwrap();
    content
}

thread_local! {
    /// The admin port of this test's edge, for failure messages.
    static LAST_ADMIN: std::cell::Cell<u16> = const { std::cell::Cell::new(0) };
}

/// One GET over plain HTTP with our own `Host` header.
fn get_host(port: u16, target: &str, host: &str, headers: &[(&str, &str)]) -> Response {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    exchange(&mut s, target, host, headers)
}

fn setup(tls_extra: &str, extra: &str) -> Setup {
    let content = content();
    let certs = tempfile::tempdir().unwrap();
    let pki = Pki::new(certs.path());
    let a = pki.leaf("a", &["a.test"]);
    let b = pki.leaf("b", &["b.test", "*.b.test"]);
    let origin = Origin::start(content.path());
    let (edge, tls) =
        start_tls_edge(&origin, &pki, &[(&a.0, &a.1), (&b.0, &b.1)], tls_extra, &format!("{CONFIG}{extra}"));
    LAST_ADMIN.with(|a| a.set(edge.admin));
    Setup { _content: content, certs, pki, origin, edge, tls, token: mint(|_| {}) }
}

fn leaf_of(path: &Path) -> Vec<u8> {
    let pem = std::fs::read(path).unwrap();
    let der: rustls::pki_types::CertificateDer<'static> =
        rustls::pki_types::pem::PemObject::from_pem_slice(&pem).unwrap();
    der.to_vec()
}

#[test]
fn sni_picks_the_certificate_and_alpn_the_protocol() {
    let s = setup("", "");
    let h2 = s.pki.client(&[b"h2", b"http/1.1"]);
    let (_, hs) = tls_connect(s.tls, "a.test", h2.clone()).unwrap();
    assert_eq!(hs.leaf, leaf_of(&s.certs.path().join("a.pem")), "SNI a.test gets a's certificate");
    assert_eq!(hs.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(hs.version, Some(rustls::ProtocolVersion::TLSv1_3));
    let (_, hs) = tls_connect(s.tls, "x.b.test", h2.clone()).unwrap();
    assert_eq!(hs.leaf, leaf_of(&s.certs.path().join("b.pem")), "the wildcard of b serves x.b.test");
    let (_, hs) = tls_connect(s.tls, "b.test", s.pki.client(&[b"http/1.1"])).unwrap();
    assert_eq!(hs.leaf, leaf_of(&s.certs.path().join("b.pem")));
    assert_eq!(hs.alpn.as_deref(), Some(&b"http/1.1"[..]));
    // TLS 1.2 still works, with modern suites only.
    let v12 = s.pki.client_versions(&[b"http/1.1"], &[&rustls::version::TLS12]);
    let (_, hs) = tls_connect(s.tls, "a.test", v12).unwrap();
    assert_eq!(hs.version, Some(rustls::ProtocolVersion::TLSv1_2));

    // The same segment over HTTP/1.1 on TLS and over HTTP/2.
    let target = format!("/vod/abc/seg0.ts?st={}", s.token);
    let r = https_get(s.tls, "a.test", s.pki.client(&[b"http/1.1"]), &target, &[]);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"segment-bytes"[..]));
    let c = H2Client::connect(s.tls, "a.test", h2);
    let r = c.get(&target, &[]);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"segment-bytes"[..]));
    // curl, both protocols.
    for (flag, want) in [("--http1.1", "HTTP/1.1 200"), ("--http2", "HTTP/2 200")] {
        let (status, head, body) = curl(&s.pki, "b.test", s.tls, &target, &[flag]).unwrap();
        assert_eq!((status, body.as_slice()), (200, &b"segment-bytes"[..]), "{flag}");
        assert!(head.starts_with(want), "{flag}: {head}");
    }
    // The access log says how each request came.
    let log = s.edge.log();
    assert!(log.contains(r#""proto":"h2""#) && log.contains(r#""tls":"1.3""#), "{log}");
    assert!(log.contains(r#""proto":"h1""#), "{log}");
    assert!(!log.contains(&s.token), "token in the log");
    let text = metrics_text(s.edge.admin);
    assert!(text.contains(r#"stile_edge_tls_handshakes_total{alpn="h2",version="1.3"}"#), "{text}");
    assert!(text.contains(r#"stile_edge_tls_handshakes_total{alpn="http/1.1",version="1.2"}"#), "{text}");
}

/// A ClientHello offering only `version` (0x0301 = TLS 1.0, 0x0302 = TLS 1.1), as old clients send it.
fn legacy_client_hello(version: u16) -> Vec<u8> {
    let mut hello = Vec::new();
    hello.extend_from_slice(&version.to_be_bytes());
    hello.extend_from_slice(&[7; 32]); // random
    hello.push(0); // no session id
    hello.extend_from_slice(&[0, 6, 0xc0, 0x13, 0xc0, 0x14, 0x00, 0x2f]); // ECDHE-RSA-AES-CBC, RSA-AES-CBC
    hello.extend_from_slice(&[1, 0]); // null compression
    let name = b"a.test";
    let mut sni = Vec::new();
    sni.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
    sni.push(0);
    sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni.extend_from_slice(name);
    let mut ext = vec![0, 0];
    ext.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    ext.extend_from_slice(&sni);
    hello.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    hello.extend_from_slice(&ext);
    let mut hs = vec![1];
    hs.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&hello);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    record.extend_from_slice(&hs);
    record
}

#[test]
fn tls_1_0_and_1_1_are_refused_and_failures_counted_by_cause() {
    let s = setup("", "");
    let failures = |cause: &str| {
        metric(s.edge.admin, &format!("stile_edge_tls_handshake_failures_total{{cause=\"{cause}\"}}")).unwrap_or(-1.0)
    };
    for version in [0x0301u16, 0x0302] {
        let before = failures("protocol_version");
        let mut c = TcpStream::connect(("127.0.0.1", s.tls)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(&legacy_client_hello(version)).unwrap();
        let mut answer = Vec::new();
        let _ = c.read_to_end(&mut answer);
        assert_eq!(answer.first(), Some(&0x15), "an alert record, not a ServerHello: {answer:02x?}");
        // rustls answers a client without TLS 1.2 with a fatal handshake_failure alert.
        assert_eq!(answer.get(5..7), Some(&[2u8, 40][..]), "a fatal alert: {answer:02x?}");
        wait_for(|| failures("protocol_version") == before + 1.0, "protocol_version counted");
    }
    // curl forced to TLS 1.1 at most fails too (its OpenSSL may refuse before sending: either way no session).
    let err = curl(&s.pki, "a.test", s.tls, "/vod/abc/seg0.ts", &["--tlsv1.0", "--tls-max", "1.1"]).unwrap_err();
    assert!(!err.is_empty());

    // Plain HTTP on the TLS port.
    let before = failures("not_tls");
    let mut c = TcpStream::connect(("127.0.0.1", s.tls)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n").unwrap();
    let _ = c.read_to_end(&mut Vec::new());
    wait_for(|| failures("not_tls") == before + 1.0, "not_tls counted");
    // A client that does not trust our CA.
    let before = failures("certificate_rejected");
    let untrusting = {
        let mut c = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(ring_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        c.alpn_protocols = vec![b"h2".to_vec()];
        std::sync::Arc::new(c)
    };
    assert!(tls_connect(s.tls, "a.test", untrusting).is_err());
    wait_for(|| failures("certificate_rejected") == before + 1.0, "certificate_rejected counted");
    // Connect and hang up.
    let before = failures("closed");
    drop(TcpStream::connect(("127.0.0.1", s.tls)).unwrap());
    wait_for(|| failures("closed") == before + 1.0, "closed counted");
    // The edge keeps serving.
    let r = https_get(s.tls, "a.test", s.pki.client(&[]), &format!("/vod/abc/seg0.ts?st={}", s.token), &[]);
    assert_eq!(r.status, 200);
}

#[test]
fn strict_sni_and_min_version_1_3() {
    let s = setup("strict_sni = true\nmin_version = \"1.3\"", "");
    let failures = |cause: &str| {
        metric(s.edge.admin, &format!("stile_edge_tls_handshake_failures_total{{cause=\"{cause}\"}}")).unwrap_or(-1.0)
    };
    assert!(tls_connect(s.tls, "a.test", s.pki.client(&[])).is_ok());
    let before = failures("unknown_sni");
    assert!(tls_connect(s.tls, "c.test", s.pki.client(&[])).is_err());
    wait_for(|| failures("unknown_sni") == before + 1.0, "unknown_sni counted");
    let before = failures("protocol_version");
    let v12 = s.pki.client_versions(&[], &[&rustls::version::TLS12]);
    assert!(tls_connect(s.tls, "a.test", v12).is_err(), "TLS 1.2 refused with min_version 1.3");
    wait_for(|| failures("protocol_version") == before + 1.0, "protocol_version counted");
}

fn wait_for(mut ok: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}\n{}", LAST_ADMIN.with(|a| metrics_text(a.get())));
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn reload_swaps_certificates_while_a_long_download_keeps_going() {
    let s = setup("", "");
    let a_pem = s.certs.path().join("a.pem");
    let first = leaf_of(&a_pem);
    let client = s.pki.client(&[b"http/1.1"]);

    // Start a long download and read its first MiB.
    let (mut dl, hs) = tls_connect(s.tls, "a.test", client.clone()).unwrap();
    assert_eq!(hs.leaf, first);
    let req = format!("GET /vod/abc/big.ts?st={} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n", s.token);
    dl.write_all(req.as_bytes()).unwrap();
    let mut got = vec![0u8; 1 << 20];
    dl.read_exact(&mut got).unwrap();

    // Rotate a's certificate and send SIGHUP: new handshakes get the new one.
    s.pki.leaf("a", &["a.test"]);
    let second = leaf_of(&a_pem);
    assert_ne!(first, second);
    s.edge.signal("HUP");
    wait_for(|| tls_connect(s.tls, "a.test", client.clone()).unwrap().1.leaf == second, "the new certificate");

    // Rotate again without a signal: the file watch (reload_poll_ms = 100) picks it up.
    s.pki.leaf("a", &["a.test"]);
    let third = leaf_of(&a_pem);
    wait_for(|| tls_connect(s.tls, "a.test", client.clone()).unwrap().1.leaf == third, "the watched certificate");

    // A bad rotation (expired) is refused: the current certificate stays.
    let now = now() as i64;
    s.pki.leaf_valid("a", &["a.test"], now - 7200, now - 60);
    wait_for(
        || metric(s.edge.admin, r#"stile_edge_tls_reloads_total{result="error"}"#).unwrap_or(0.0) >= 1.0,
        "the refused reload",
    );
    assert_eq!(tls_connect(s.tls, "a.test", client.clone()).unwrap().1.leaf, third);
    assert!(s.edge.log().contains("tls.reload_failed"), "{}", s.edge.log());

    // The download started before all this completes, byte for byte.
    let mut rest = Vec::new();
    dl.read_to_end(&mut rest).ok();
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(String::from_utf8_lossy(&got[..head_end]).starts_with("HTTP/1.1 200"));
    let mut body = got[head_end..].to_vec();
    body.extend_from_slice(&rest);
    assert_eq!(body.len(), 8 << 20, "the download finished whole");
    assert!(body.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8), "and intact");
    assert!(metric(s.edge.admin, r#"stile_edge_tls_reloads_total{result="ok"}"#).unwrap() >= 2.0);
}

#[test]
fn bad_certificates_stop_startup_with_64_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let now = now() as i64;
    let good = pki.leaf("good", &["a.test"]);
    let expired = pki.leaf_valid("expired", &["a.test"], now - 7200, now - 60);
    let other = pki.leaf("other", &["b.test"]);
    std::fs::write(dir.path().join("empty.pem"), "").unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        ("expired", cert_block(&expired.0, &expired.1, ""), "expired"),
        ("wrong host", cert_block(&other.0, &other.1, "names = [\"a.test\"]"), "does not cover \"a.test\""),
        ("mismatched key", cert_block(&good.0, &other.1, ""), "does not match"),
        ("unreadable", cert_block(&dir.path().join("missing.pem"), &good.1, ""), "cannot read"),
        ("no certificate", cert_block(&dir.path().join("empty.pem"), &good.1, ""), "no valid PEM certificate"),
        (
            "credentials without LoadCredential",
            cert_block(Path::new("${CREDENTIALS_DIRECTORY}/good.pem"), &good.1, ""),
            "$CREDENTIALS_DIRECTORY is not set",
        ),
    ];
    for (name, block, needle) in cases {
        let (port, tls, admin) = (free_port(), free_port(), free_port());
        let config = Edge::write_config(
            dir.path(),
            free_port(),
            port,
            admin,
            &format!("[tls]\nlisten = [\"127.0.0.1:{tls}\"]\n{block}"),
            "",
            &state_json(1, serde_json::json!([]), None),
        );
        let out = Command::new(env!("CARGO_BIN_EXE_stile")).args(["edge", "--config"]).arg(&config).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{name}: {stderr}");
        assert!(stderr.contains(needle), "{name}: {stderr}");
        for p in [port, tls, admin] {
            assert!(TcpStream::connect(("127.0.0.1", p)).is_err(), "{name}: port {p} was bound");
        }
    }
}

#[test]
fn certificates_from_systemd_credentials() {
    // `LoadCredential=edge.pem:…` puts the files in $CREDENTIALS_DIRECTORY; the config
    // names them `${CREDENTIALS_DIRECTORY}/edge.pem`.
    let content = content();
    let creds = tempfile::tempdir().unwrap();
    let pki = Pki::new(creds.path());
    pki.leaf("edge", &["a.test"]);
    let origin = Origin::start(content.path());
    let dir = tempfile::tempdir().unwrap();
    let (port, tls, admin) = (free_port(), free_port(), free_port());
    let block =
        cert_block(Path::new("${CREDENTIALS_DIRECTORY}/edge.pem"), Path::new("${CREDENTIALS_DIRECTORY}/edge.key"), "");
    let config = Edge::write_config(
        dir.path(),
        origin.port,
        port,
        admin,
        &format!("[tls]\nlisten = [\"127.0.0.1:{tls}\"]\n{block}"),
        "",
        &state_json(1, serde_json::json!([]), None),
    );
    let log = std::fs::File::create(dir.path().join("edge.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_stile"))
        .args(["edge", "--config"])
        .arg(&config)
        .env("CREDENTIALS_DIRECTORY", creds.path())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut edge = Edge { port, admin, dir, child };
    edge.wait_ready();
    wait_port(tls, &mut edge);
    let (_, hs) = tls_connect(tls, "a.test", pki.client(&[])).unwrap();
    assert_eq!(hs.leaf, leaf_of(&creds.path().join("edge.pem")));
    let r = https_get(tls, "a.test", pki.client(&[]), &format!("/vod/abc/seg0.ts?st={}", mint(|_| {})), &[]);
    assert_eq!(r.status, 200);
}

fn cert_block(cert: &Path, key: &Path, extra: &str) -> String {
    format!("[[tls.certificates]]\ncert = \"{}\"\nkey = \"{}\"\n{extra}\n", cert.display(), key.display())
}

#[test]
fn plain_http_redirects_to_https_without_logging_the_token() {
    let s = setup("redirect_http = true", "[client]\ntrusted_hops = 1\n");
    let target = format!("/vod/abc/seg0.ts?st={}&x=1", s.token);
    let r = get_host(s.edge.port, &target, "a.test:8080", &[]);
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some(format!("https://a.test:{}{target}", s.tls).as_str()));
    assert_eq!(r.header("cache-control"), Some("private, no-store"));
    let path = format!("/_st/{}/vod/abc/seg0.ts", s.token);
    let r = get_host(s.edge.port, &path, "x.b.test", &[]);
    assert_eq!(r.header("location"), Some(format!("https://x.b.test:{}{path}", s.tls).as_str()));
    // A host without a certificate here is never a redirect target.
    let r = get_host(s.edge.port, &target, "evil.test", &[]);
    assert_eq!(r.status, 400);
    assert_eq!(r.header("location"), None);
    // A trusted proxy in front says the viewer used HTTPS: served, not redirected.
    let r = get_host(s.edge.port, &target, "a.test", &[("X-Forwarded-Proto", "https")]);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"segment-bytes"[..]));
    // Following the redirect works.
    let (status, _, body) = curl(&s.pki, "a.test", s.tls, &target, &["--http2"]).unwrap();
    assert_eq!((status, body.as_slice()), (200, &b"segment-bytes"[..]));

    let log = s.edge.log();
    assert!(log.contains(r#""decision":"redirect""#), "{log}");
    assert!(!log.contains(&s.token), "the redirect's token reached the log");
    assert!(metric(s.edge.admin, "stile_edge_https_redirects_total").unwrap() >= 2.0);
}

#[test]
fn transports_rewriting_cookies_cors_and_diagnostics_over_http2() {
    let s = setup("", "[cors]\nallowed_origins = [\"https://player.test\"]\n");
    let t = &s.token;
    let c = H2Client::connect(s.tls, "a.test", s.pki.client(&[b"h2"]));

    // Query token on the master playlist: rewritten, sent as HTTP/2 DATA frames, with a
    // Secure cookie (HTTPS now) and CORS for the player's origin.
    let r = c.get(&format!("/vod/abc/master.m3u8?st={t}"), &[("origin", "https://player.test")]);
    assert_eq!(r.status, 200);
    let body = String::from_utf8(r.body.clone()).unwrap();
    assert!(body.contains(&format!("v1/index.m3u8?st={t}\n")), "{body}");
    assert!(body.contains(&format!("v1/index.m3u8?x=1&st={t}\n")), "{body}");
    assert_eq!(r.header("transfer-encoding"), None, "no HTTP/1 framing over HTTP/2");
    assert_eq!(r.header("cache-control"), Some("private, no-store"));
    assert_eq!(r.header("access-control-allow-origin"), Some("https://player.test"));
    let cookie = r.header("set-cookie").unwrap().to_owned();
    assert!(cookie.contains("; Secure") && cookie.contains("Path=/vod/abc/"), "{cookie}");
    let cookie_pair = cookie.split(';').next().unwrap().to_owned();

    // Path-prefix token, and the cookie alone.
    let r = c.get(&format!("/_st/{t}/vod/abc/v1/seg0.ts"), &[]);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"v1-segment"[..]));
    let r = c.get("/vod/abc/v1/seg0.ts", &[("cookie", &cookie_pair)]);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"v1-segment"[..]));

    // Denials carry the reason header over HTTP/2 too.
    let r = c.get("/vod/abc/seg0.ts", &[]);
    assert_eq!((r.status, r.header("x-stile-reason")), (401, Some("missing")));
    let expired = mint(|cl| {
        cl.issued_at = now() - 7200;
        cl.expires_at = now() - 3600;
    });
    let r = c.get(&format!("/vod/abc/seg0.ts?st={expired}"), &[]);
    assert_eq!((r.status, r.header("x-stile-reason")), (403, Some("expired")));
    let r = c.get(&format!("/vod/xyz/seg0.ts?st={t}"), &[]);
    assert_eq!((r.status, r.header("x-stile-reason")), (403, Some("scope")));

    // Many segments at once over the one connection, as players fetch them.
    let paths: Vec<String> = (0..50).map(|_| format!("/vod/abc/seg0.ts?st={t}")).collect();
    let all = c.all(&paths);
    assert!(
        all.iter().all(|r| r.status == 200 && r.body == b"segment-bytes"),
        "{:?}",
        all.iter().map(|r| r.status).collect::<Vec<_>>()
    );

    // curl --http2 sees the rewritten playlist whole too.
    let (status, head, body) =
        curl(&s.pki, "a.test", s.tls, &format!("/vod/abc/master.m3u8?st={t}"), &["--http2"]).unwrap();
    assert!(head.starts_with("HTTP/2 200"), "{head}");
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains(&format!("v1/index.m3u8?st={t}")));

    // A player beacon: the body read from DATA frames, answered by the edge (never the origin).
    let beacon = |body: &[u8]| c.send("POST", &format!("/vod/abc/_stile_beacon?st={t}"), &[], body);
    let r = beacon(br#"{"startup_ms":800,"rebuffers":1}"#);
    assert_eq!((r.status, r.header("cache-control")), (204, Some("no-store")));
    assert_eq!(beacon(b"not json").status, 400);
    assert_eq!(beacon(&[b' '; 1500]).status, 413);
    let m = get(s.edge.admin, "/metrics", &[]).unwrap();
    let m = String::from_utf8_lossy(&m.body);
    assert!(m.contains(r#"stile_edge_player_rebuffers_total{channel="email"} 1"#), "{m}");
    assert!(m.contains(r#"stile_edge_player_beacons_total{result="too_large"} 1"#), "{m}");

    for head in s.origin.requests() {
        assert!(!head.contains(t.as_str()), "token reached the origin: {head}");
        assert!(!head.contains("_stile_beacon"), "a beacon reached the origin: {head}");
    }
    assert!(!s.edge.log().contains(t.as_str()));
}

#[test]
fn hostile_paths_over_http2_are_denied_like_over_http1() {
    let s = setup("", "");
    let t = s.token.as_str();
    let h2 = s.pki.client(&[b"h2"]);
    let before = s.origin.request_lines().len();
    let ok = format!("/vod/abc/seg0.ts?st={t}");
    assert_eq!(h2_raw(s.tls, "a.test", h2.clone(), ok.as_bytes(), &[]), H2Answer::Response(200, None));

    // The HTTP/1 path-attack table, in each transport, as raw `:path` bytes.
    let cookie = format!("stile={t}");
    let mut failures = Vec::new();
    for attack in PATH_ATTACKS {
        let sep = if attack.contains('?') { '&' } else { '?' };
        for (transport, target, headers) in [
            ("query", format!("{attack}{sep}st={t}"), vec![]),
            ("path", format!("/_st/{t}{attack}"), vec![]),
            ("cookie", attack.to_string(), vec![("cookie", cookie.as_str())]),
        ] {
            let got = h2_raw(s.tls, "a.test", h2.clone(), target.as_bytes(), &headers);
            // The edge's own answer, or (for bytes HTTP/2's URI parsing refuses) a stream reset.
            let defined = got == H2Answer::Response(403, Some("malformed".into())) || got == H2Answer::Reset(1);
            if !defined {
                failures.push(format!("{attack} via {transport}: {got:?}"));
            }
        }
    }
    // Bytes only a raw `:path` can carry.
    let raw: Vec<(&str, Vec<u8>, H2Answer)> = vec![
        ("space", format!("/vod/abc/seg 0.ts?st={t}").into_bytes(), H2Answer::Reset(1)),
        ("NUL", [b"/vod/abc/seg0.ts\0?st=", t.as_bytes()].concat(), H2Answer::Reset(1)),
        ("CR LF", [b"/vod/abc/seg0.ts\r\nX: y?st=", t.as_bytes()].concat(), H2Answer::Reset(1)),
        // HPACK strings must be UTF-8 for the h2 crate: the connection is closed (PROTOCOL_ERROR).
        ("raw non-UTF-8", [b"/vod/abc/\xff\xfe.ts?st=", t.as_bytes()].concat(), H2Answer::Closed(Some(1))),
        (
            "raw UTF-8",
            [b"/vod/abc/\xc3\xa9.ts?st=", t.as_bytes()].concat(),
            H2Answer::Response(403, Some("malformed".into())),
        ),
        ("absolute form", format!("https://evil.test/vod/abc/seg0.ts?st={t}").into_bytes(), H2Answer::Reset(1)),
        ("asterisk", b"*".to_vec(), H2Answer::Response(403, Some("malformed".into()))),
        ("no leading slash", format!("vod/abc/seg0.ts?st={t}").into_bytes(), H2Answer::Reset(1)),
        ("duplicate token", format!("{ok}&st={t}").into_bytes(), H2Answer::Response(403, Some("malformed".into()))),
        (
            "over the validator's limit",
            format!("/vod/abc/{}.ts?st={t}", "a".repeat(8 * 1024)).into_bytes(),
            H2Answer::Response(403, Some("malformed".into())),
        ),
        (
            "dot segments",
            format!("/vod/abc/../../secret.ts?st={t}").into_bytes(),
            H2Answer::Response(403, Some("malformed".into())),
        ),
        // HTTP/2's URI parsing drops a fragment (clients never send one): what is left is
        // validated and is exactly what the origin is asked for.
        ("fragment", format!("/vod/abc/seg0.ts?st={t}#/../../secret.ts").into_bytes(), H2Answer::Response(200, None)),
        (
            "fragment before the token",
            format!("/vod/abc/seg0.ts#?st={t}").into_bytes(),
            H2Answer::Response(401, Some("missing".into())),
        ),
    ];
    for (name, path, want) in &raw {
        let got = h2_raw(s.tls, "a.test", h2.clone(), path, &[]);
        if &got != want {
            failures.push(format!("{name}: got {got:?}, want {want:?}"));
        }
        assert_eq!(
            h2_raw(s.tls, "a.test", h2.clone(), ok.as_bytes(), &[]),
            H2Answer::Response(200, None),
            "alive after {name}"
        );
    }
    assert!(failures.is_empty(), "{failures:#?}");
    let reached: Vec<String> =
        s.origin.request_lines()[before..].iter().filter(|l| *l != "GET /vod/abc/seg0.ts HTTP/1.1").cloned().collect();
    assert!(reached.is_empty(), "attacks reached the origin: {reached:#?}");
    assert!(!s.edge.log().contains(t));
}
