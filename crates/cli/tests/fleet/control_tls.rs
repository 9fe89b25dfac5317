//! gRPC over TLS, real processes: a `stile control` with `[tls]`, the CLI with
//! `--ca-file`, `stile edge` in sync mode with `[sync] ca_file` (and a client
//! certificate for mutual TLS). Certificates come from a throwaway rcgen CA.
//!
//! Proves: the right CA connects (CLI and edge); another CA, a certificate for
//! another host, and a certificate that expired while the control plane ran
//! are refused by the clients with a clear error; an expired, mismatched or
//! unreadable certificate stops the control plane with exit 64 before binding;
//! a control plane requiring client certificates refuses an edge without one
//! (UNAUTHENTICATED, audited, counted) and admits one with one, whose identity
//! `stile edges ls` and the audit log (`SYNC_CLIENT_CERT`) show, and one from
//! another CA fails the handshake (counted `client_certificate`); the plaintext
//! warning appears on a non-loopback address and not with `tls.allow_plaintext`.
//! The certificate reloads without a restart (SIGHUP, a changed file) while an
//! edge's sync stream keeps going, a bad new pair keeps the old one (counted,
//! logged), and failed handshakes are counted by cause without a log line each
//! (a stalled one does not hold up the others).

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stile_proto::v1 as pb;
use stile_tests::fleet::*;
use stile_tests::net::free_port;
use stile_tests::process::*;
use stile_tests::tls::{Pki, ring_provider, tls_connect};
use stile_tests::token::now;
use tonic::transport::{Certificate, ClientTlsConfig};

fn client_tls(ca: &Path) -> ClientTlsConfig {
    ClientTlsConfig::new().ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()))
}

/// The `[tls]` table for a server pair (and `extra` lines).
fn tls_table(cert: &Path, key: &Path, extra: &str) -> String {
    format!("[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n{extra}\n", cert.display(), key.display())
}

/// A control plane on TLS with a certificate for 127.0.0.1 and localhost.
fn tls_control(dir: &Path, pki: &Pki, extra_tls: &str) -> Control {
    let (cert, key) = pki.leaf("control", &["localhost", "127.0.0.1"]);
    Control::launch_tls(dir, free_port(), &tls_table(&cert, &key, extra_tls), client_tls(&pki.ca_pem))
}

/// Runs the `stile` CLI with `args` (no config file, no STILE_* from the environment), bounded.
fn cli(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stile"))
        .args(args)
        .env_remove("STILE_SERVER")
        .env_remove("STILE_API_KEY")
        .env_remove("STILE_CA_FILE")
        .env("STILE_CONFIG", "/dev/null")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("stile {args:?} did not finish in 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Waits until `log()` contains `needle` (20 s), and returns it.
fn wait_log(what: &str, needle: &str, log: impl Fn() -> String) -> String {
    until(Duration::from_secs(20), &format!("{needle:?} in the log of {what}"), || {
        let l = log();
        l.contains(needle).then_some(l)
    })
}

#[test]
fn cli_and_edge_connect_with_the_right_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let cp = tls_control(&dir.path().join("cp").tap_mkdir(), &pki, "");
    let url = cp.url();
    let ca = pki.ca_pem.display().to_string();

    let out = cli(&["edges", "ls", "--server", &url, "--api-key", ADMIN, "--ca-file", &ca]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("change log version"), "{}", text(&out.stdout));

    // The CA from the environment, as docs/cli.md says.
    let out = Command::new(env!("CARGO_BIN_EXE_stile"))
        .args(["config", "--server", &url])
        .env("STILE_CA_FILE", &ca)
        .env("STILE_CONFIG", "/dev/null")
        .output()
        .unwrap();
    let shown = text(&out.stdout);
    assert!(shown.lines().any(|l| l.starts_with("ca_file") && l.contains(&ca) && l.contains("environment")), "{shown}");

    let (_content, origin) = content();
    let sync = format!("ca_file = \"{ca}\"\n");
    let mut edge = SyncEdge::spawn_with("edge-tls", &origin, std::slice::from_ref(&url), "", &sync);
    edge.wait_ready();
    let list = cp.ops().wait_converged(1);
    assert_eq!(list.edges[0].edge_id, "edge-tls");
    assert_eq!(list.edges[0].client_cert, "", "no client certificate was presented");
    push_path_works(&cp.ops(), &edge);
    assert!(!cp.log().contains("control.plaintext_listener"), "TLS on loopback: no warning");
    // The certificate's notAfter (Pki::leaf: 30 days from now) is exported.
    let expiry = cp.metric("stile_control_tls_certificate_expiry_timestamp_seconds").unwrap();
    let month = now() as f64 + 30.0 * 86_400.0;
    assert!((expiry - month).abs() < 120.0, "expiry {expiry}, want about {month}");
}

/// The push path works over TLS: a minted link passes on `edge` (the only one), then
/// is revoked everywhere.
fn push_path_works(ops: &Ops, edge: &SyncEdge) {
    ops.publish();
    let link = ops.mint();
    assert_eq!(edge.get(&target(&link)).status, 200, "{}", edge.log());
    let r = ops.revoke(&link.token_id, true);
    assert!(r.lagging.is_empty() && r.edges.len() == 1, "{r:?}");
    assert_eq!(edge.get(&target(&link)).header("x-stile-reason"), Some("revoked"));
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}

impl TapMkdir for std::path::PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

#[test]
fn another_ca_or_another_host_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let other_dir = dir.path().join("other").tap_mkdir();
    let other = Pki::new(&other_dir);
    let cp = tls_control(&dir.path().join("cp").tap_mkdir(), &pki, "");
    let url = cp.url();

    // The CLI trusting another CA: exit 1, the cause named.
    let other_ca = other.ca_pem.display().to_string();
    let out = cli(&["edges", "ls", "--server", &url, "--api-key", ADMIN, "--ca-file", &other_ca]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    // (Both test CAs have the same name, so rustls finds the issuer and rejects its signature.)
    assert!(err.contains("TLS with the control plane") && err.contains("invalid peer certificate"), "{err}");
    // https:// without a CA file: a usage error.
    let out = cli(&["edges", "ls", "--server", &url, "--api-key", ADMIN]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--ca-file"), "{}", text(&out.stderr));
    // A CA file that holds no certificate: a usage error naming it.
    let (_, key) = pki.leaf("stray", &["stray.test"]);
    let out = cli(&["edges", "ls", "--server", &url, "--api-key", ADMIN, "--ca-file", &key.display().to_string()]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no valid PEM certificate"), "{}", text(&out.stderr));

    // An edge trusting another CA never connects; its log says why.
    let (_content, origin) = content();
    let sync = format!("ca_file = \"{other_ca}\"\n");
    let edge = SyncEdge::spawn_with("edge-wrong-ca", &origin, std::slice::from_ref(&url), "", &sync);
    wait_log("the edge", "invalid peer certificate", || edge.log());
    assert!(cp.ops().list().edges.is_empty());

    // A control plane whose certificate names another host: refused by name.
    let (cert, key) = pki.leaf("elsewhere", &["cp.elsewhere.test"]);
    let cp2 = Control::launch_tls(
        &dir.path().join("cp2").tap_mkdir(),
        free_port(),
        &tls_table(&cert, &key, ""),
        client_tls(&pki.ca_pem).domain_name("cp.elsewhere.test"),
    );
    let ca = pki.ca_pem.display().to_string();
    let out = cli(&["edges", "ls", "--server", &cp2.url(), "--api-key", ADMIN, "--ca-file", &ca]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("certificate not valid for name \"127.0.0.1\""), "{err}");

    // A certificate that expires while the control plane runs (it is checked only at
    // start): clients refuse it from then on, by rustls's own check.
    let t = now() as i64;
    let (cert, key) = pki.leaf_valid("short", &["127.0.0.1"], t - 3600, t + 4);
    let cp3 = Control::launch_tls(
        &dir.path().join("cp3").tap_mkdir(),
        free_port(),
        &tls_table(&cert, &key, ""),
        client_tls(&pki.ca_pem),
    );
    until(Duration::from_secs(10), "the certificate's expiry", || (now() as i64 > t + 5).then_some(()));
    let out = cli(&["edges", "ls", "--server", &cp3.url(), "--api-key", ADMIN, "--ca-file", &ca]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("invalid peer certificate: certificate expired"), "{err}");
    let sync = format!("ca_file = \"{ca}\"\n");
    let late = SyncEdge::spawn_with("edge-late", &origin, std::slice::from_ref(&cp3.url()), "", &sync);
    wait_log("the edge of an expired control plane", "invalid peer certificate: certificate expired", || late.log());
}

/// Runs `stile control --config` on a config with this `[tls]` table; it must exit
/// 64 (before binding) with `needle` in its error. `--test` says the same.
fn control_refuses(dir: &Path, tls: &str, needle: &str) {
    let port = free_port();
    let config = dir.join(format!("refused-{port}.toml"));
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\nadmin_listen = \"\"\n[store]\npath = \"{}/c.redb\"\n{tls}",
            dir.display()
        ),
    )
    .unwrap();
    for test in [true, false] {
        let mut args = vec!["control", "--config", config.to_str().unwrap()];
        if test {
            args.push("--test");
        }
        let out = cli(&args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: wanted {needle:?} in {err}");
    }
    assert!(!dir.join("c.redb").exists(), "the store was not opened");
}

#[test]
fn bad_server_certificates_exit_64_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let t = now() as i64;
    let (expired, expired_key) = pki.leaf_valid("expired", &["localhost"], t - 7200, t - 60);
    control_refuses(dir.path(), &tls_table(&expired, &expired_key, ""), "tls.cert_file");
    control_refuses(dir.path(), &tls_table(&expired, &expired_key, ""), "the certificate expired at");
    let (good, _) = pki.leaf("good", &["localhost"]);
    let (_, other_key) = pki.leaf("other", &["localhost"]);
    control_refuses(dir.path(), &tls_table(&good, &other_key, ""), "does not match the certificate");
    control_refuses(dir.path(), &tls_table(&dir.path().join("missing.pem"), &other_key, ""), "cannot read");
    let ca_is_a_key = format!("client_ca_file = \"{}\"", other_key.display());
    control_refuses(dir.path(), &tls_table(&good, &pki.dir.join("good.key"), &ca_is_a_key), "tls.client_ca_file");
    control_refuses(dir.path(), "[tls]\nrequire_client_cert = true\n", "needs tls.client_ca_file");

    // An edge whose client certificate expired does not start either (exit 64).
    let (_content, origin) = content();
    let files = EdgeFiles::write_with(
        "edge-expired",
        &origin,
        &["https://127.0.0.1:1".into()],
        "",
        &format!(
            "ca_file = \"{}\"\nclient_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
            pki.ca_pem.display(),
            expired.display(),
            expired_key.display()
        ),
    );
    let out = cli(&["edge", "--test", "--config", files.config.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("sync.client_cert_file") && err.contains("expired"), "{err}");
}

#[test]
fn required_client_certificates_admit_only_edges_with_one() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let client_ca = format!("client_ca_file = \"{}\"\nrequire_client_cert = true", pki.ca_pem.display());
    let cp = tls_control(&dir.path().join("cp").tap_mkdir(), &pki, &client_ca);
    let url = cp.url();
    let ca = pki.ca_pem.display().to_string();
    let (_content, origin) = content();

    // Without a client certificate: UNAUTHENTICATED on the sync stream, audited and counted.
    let bare =
        SyncEdge::spawn_with("edge-bare", &origin, std::slice::from_ref(&url), "", &format!("ca_file = \"{ca}\"\n"));
    wait_log("the edge without a certificate", "requires a client certificate", || bare.log());
    wait_log("the control plane", "sync.client_cert_missing", || cp.log());
    let ops = cp.ops();
    let refused = until(Duration::from_secs(10), "the SYNC_REFUSED audit event", || {
        let events = ops.audit(pb::AuditAction::SyncRefused);
        events.into_iter().find(|e| e.target == "edge:edge-bare")
    });
    assert!(refused.detail.starts_with("client_cert_missing"), "{refused:?}");
    assert!(cp.metric("stile_control_sync_refused_total{reason=\"client_cert_missing\"}").unwrap_or(0.0) >= 1.0);
    assert!(ops.list().edges.iter().all(|e| e.edge_id != "edge-bare"));

    // With one: admitted, its identity in fleet state.
    let (cert, key) = pki.leaf("edge-a", &["edge-a.fleet.test"]);
    let sync = format!(
        "ca_file = \"{ca}\"\nclient_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let mut edge = SyncEdge::spawn_with("edge-a", &origin, std::slice::from_ref(&url), "", &sync);
    edge.wait_ready();
    let list = until(Duration::from_secs(20), "edge-a in the fleet", || {
        ops.list().edges.into_iter().find(|e| e.edge_id == "edge-a" && e.lag == 0)
    });
    assert_eq!(list.client_cert, "CN=edge-a.fleet.test SAN=edge-a.fleet.test");
    // And in the audit log: the admission with its certificate.
    let admitted = until(Duration::from_secs(10), "the SYNC_CLIENT_CERT audit event", || {
        ops.audit(pb::AuditAction::SyncClientCert).into_iter().find(|e| e.target == "edge:edge-a")
    });
    assert!(admitted.detail.ends_with("[cert CN=edge-a.fleet.test SAN=edge-a.fleet.test]"), "{admitted:?}");
    assert_eq!(admitted.actor, "edges", "the edge-role API key's name");
    // The CLI (no client certificate: only the sync stream requires one) shows it.
    let out = cli(&["edges", "ls", "--json", "--server", &url, "--api-key", ADMIN, "--ca-file", &ca]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let shown = json["edges"].as_array().unwrap().iter().find(|e| e["edge_id"] == "edge-a").cloned().unwrap();
    assert_eq!(shown["client_cert"], "CN=edge-a.fleet.test SAN=edge-a.fleet.test");

    // A client certificate from another CA fails the handshake itself.
    let other_dir = dir.path().join("other").tap_mkdir();
    let other = Pki::new(&other_dir);
    let (ocert, okey) = other.leaf("edge-b", &["edge-b.fleet.test"]);
    let sync = format!(
        "ca_file = \"{ca}\"\nclient_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
        ocert.display(),
        okey.display()
    );
    let stranger = SyncEdge::spawn_with("edge-b", &origin, std::slice::from_ref(&url), "", &sync);
    // rustls on the control plane refuses the certificate during the handshake; the edge sees the
    // connection die ("Unknown: transport error: connection error: …") and keeps retrying.
    wait_log("the edge with a foreign client certificate", "\"error\":\"Unknown: transport error", || stranger.log());
    assert!(ops.list().edges.iter().all(|e| e.edge_id != "edge-b"));
    // Counted by cause on the control plane.
    let refused = cp.metric("stile_control_tls_handshake_failures_total{cause=\"client_certificate\"}");
    assert!(refused.unwrap_or(0.0) >= 1.0, "{refused:?}");
}

/// The DER of the (first) certificate in a PEM file.
fn leaf_of(path: &Path) -> Vec<u8> {
    let pem = std::fs::read(path).unwrap();
    let der: rustls::pki_types::CertificateDer<'static> =
        rustls::pki_types::pem::PemObject::from_pem_slice(&pem).unwrap();
    der.to_vec()
}

/// The leaf certificate a new handshake with the control plane on `port` gets.
fn served_leaf(port: u16, client: &Arc<rustls::ClientConfig>) -> Vec<u8> {
    tls_connect(port, "localhost", client.clone()).unwrap().1.leaf
}

#[test]
fn reload_swaps_the_certificate_while_a_sync_stream_keeps_going() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let cp = tls_control(&dir.path().join("cp").tap_mkdir(), &pki, "reload_poll_ms = 100");
    let pem = pki.dir.join("control.pem");
    let client = pki.client(&[b"h2"]);
    let first = leaf_of(&pem);
    assert_eq!(served_leaf(cp.port, &client), first);

    // An edge holds a sync stream over TLS.
    let (_content, origin) = content();
    let sync = format!("ca_file = \"{}\"\n", pki.ca_pem.display());
    let mut edge = SyncEdge::spawn_with("edge-reload", &origin, std::slice::from_ref(&cp.url()), "", &sync);
    edge.wait_ready();
    let ops = cp.ops();
    let connected_at = ops.wait_converged(1).edges[0].connected_at;

    // A new pair and SIGHUP: new handshakes get the new certificate.
    pki.leaf("control", &["localhost", "127.0.0.1"]);
    let second = leaf_of(&pem);
    assert_ne!(first, second);
    signal(cp.child.id(), "HUP");
    until(Duration::from_secs(10), "the new certificate", || (served_leaf(cp.port, &client) == second).then_some(()));

    // Without a signal: the file watch (reload_poll_ms = 100) takes a pair valid for 60 days.
    let t = now() as i64;
    pki.leaf_valid("control", &["localhost", "127.0.0.1"], t - 3600, t + 60 * 86_400);
    let third = leaf_of(&pem);
    until(Duration::from_secs(10), "the watched certificate", || {
        (served_leaf(cp.port, &client) == third).then_some(())
    });
    let expiry = cp.metric("stile_control_tls_certificate_expiry_timestamp_seconds").unwrap();
    assert!((expiry - (t + 60 * 86_400) as f64).abs() < 2.0, "the gauge follows the reload: {expiry}");

    // A bad new pair (expired) is refused: the certificate in force stays, counted and logged.
    let errors = || cp.metric("stile_control_tls_reloads_total{result=\"error\"}").unwrap();
    let errors_before = errors();
    pki.leaf_valid("control", &["localhost", "127.0.0.1"], t - 7200, t - 60);
    until(Duration::from_secs(10), "the refused reload", || (errors() > errors_before).then_some(()));
    assert_eq!(served_leaf(cp.port, &client), third);
    // (The counter moves just before the line is written; a half-written pair seen by the
    // file watch earlier may have logged a mismatch.)
    let log = wait_log("the control plane", "the certificate expired at", || cp.log());
    assert!(log.lines().any(|l| l.contains("control.tls_reload_failed") && l.contains("expired at")), "{log}");
    assert!(!log.contains("PRIVATE KEY"), "no key material in the log");
    assert_eq!(cp.metric("stile_control_tls_certificate_expiry_timestamp_seconds").unwrap(), expiry);
    assert!(cp.metric("stile_control_tls_reloads_total{result=\"ok\"}").unwrap() >= 2.0);

    // The sync stream opened before all this is the same one, and still carries the push path.
    let list = ops.list();
    assert_eq!(list.edges.len(), 1, "{list:?}");
    assert_eq!(list.edges[0].connected_at, connected_at, "the stream was not re-established");
    push_path_works(&ops, &edge);
    assert_eq!(ops.list().edges[0].connected_at, connected_at);
}

#[test]
fn failed_handshakes_are_counted_by_cause() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let cp = tls_control(&dir.path().join("cp").tap_mkdir(), &pki, "handshake_timeout_ms = 1000");
    let failures = |cause: &str| {
        cp.metric(&format!("stile_control_tls_handshake_failures_total{{cause=\"{cause}\"}}")).unwrap_or(0.0)
    };
    let counted = |cause: &str, before: f64| {
        until(Duration::from_secs(10), &format!("a failure counted as {cause}"), || {
            (failures(cause) > before).then_some(())
        })
    };

    // A stalled handshake (TCP only, nothing sent) holds up no one else.
    let before = failures("timeout");
    let stalled = std::net::TcpStream::connect(("127.0.0.1", cp.port)).unwrap();
    let (_, hs) = tls_connect(cp.port, "localhost", pki.client(&[b"h2"])).unwrap();
    assert_eq!(hs.version, Some(rustls::ProtocolVersion::TLSv1_3));
    assert_eq!(hs.alpn.as_deref(), Some(&b"h2"[..]));
    let tls12 = pki.client_versions(&[b"h2"], &[&rustls::version::TLS12]);
    let (_, hs) = tls_connect(cp.port, "localhost", tls12).unwrap();
    assert_eq!(hs.version, Some(rustls::ProtocolVersion::TLSv1_2));
    counted("timeout", before);
    drop(stalled);
    assert!(cp.metric("stile_control_tls_handshakes_total{version=\"1.3\"}").unwrap() >= 1.0);
    assert!(cp.metric("stile_control_tls_handshakes_total{version=\"1.2\"}").unwrap() >= 1.0);

    // A client that does not trust the CA refuses our certificate (an alert).
    let before = failures("certificate_rejected");
    let untrusting = rustls::ClientConfig::builder_with_provider(Arc::new(ring_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let err = tls_connect(cp.port, "localhost", Arc::new(untrusting)).unwrap_err();
    assert!(err.contains("invalid peer certificate"), "{err}");
    counted("certificate_rejected", before);

    // Plain HTTP on the TLS port.
    let before = failures("not_tls");
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", cp.port)).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    plain.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    counted("not_tls", before);

    // A client that hangs up before a handshake.
    let before = failures("closed");
    drop(std::net::TcpStream::connect(("127.0.0.1", cp.port)).unwrap());
    counted("closed", before);

    // The gRPC service is unaffected, and failures are not logged at the default level.
    cp.ops().list();
    assert!(!cp.log().contains("control.tls_handshake_failed"), "{}", cp.log());
}

/// A `stile control` process, killed on drop.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn plaintext_on_a_non_loopback_address_warns_unless_allowed() {
    for (allow, warns) in [("", true), ("[tls]\nallow_plaintext = true\n", false)] {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("control.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"0.0.0.0:{port}\"\nadmin_listen = \"\"\n[store]\npath = \"{}/c.redb\"\n{allow}",
                dir.path().display()
            ),
        )
        .unwrap();
        let log_path = dir.path().join("control.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_stile"))
            .args(["control", "--config", config.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut running = Running(child);
        // The warning is logged before `control.serving`, so once that line is there the verdict is final.
        let log = wait_log("the control plane", "control.serving", || std::fs::read_to_string(&log_path).unwrap());
        // Without [tls], SIGHUP (`systemctl reload`) is logged and ignored, not fatal.
        let hup = || {
            signal(running.0.id(), "HUP");
            std::thread::sleep(Duration::from_millis(50));
            std::fs::read_to_string(&log_path).unwrap().contains("control.sighup").then_some(())
        };
        until(Duration::from_secs(10), "control.sighup", hup);
        assert!(running.0.try_wait().unwrap().is_none(), "SIGHUP ended a plaintext control plane");
        let warning = log.lines().find(|l| l.contains("control.plaintext_listener"));
        assert_eq!(warning.is_some(), warns, "{log}");
        if let Some(w) = warning {
            assert!(w.contains("WARN") && w.contains(&format!("0.0.0.0:{port}")) && w.contains("cert_file"), "{w}");
        }
    }
}
