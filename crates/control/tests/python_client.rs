//! A Python grpcio client, with stubs generated from proto/ at test time,
//! mints and revokes a link; the token crate verifies what it minted. Once over
//! plaintext gRPC, once over TLS (`grpc.ssl_channel_credentials` with the CA of
//! the control plane's certificate), where a client trusting another CA is refused.
//!
//! Skipped (with a message) only when the Python gRPC modules are missing and
//! `CI` is unset; under CI their absence fails the test.

mod common;

use std::path::Path;

use common::*;
use stile_control::model::{ChangeKind, Target};
use stile_control::store::{LogRead, Store};
use stile_token::{Policy, Request, verify};

/// Whether python3 can import grpc; false only outside CI (under CI it fails the test).
async fn have_python_grpc() -> bool {
    let have_grpc = tokio::process::Command::new("python3")
        .args(["-c", "import grpc, grpc_tools"])
        .output()
        .await
        .is_ok_and(|o| o.status.success());
    if !have_grpc {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
        assert!(
            !ci,
            "CI is set but python3 cannot import grpc/grpc_tools: pip install -r tests/python/requirements.txt"
        );
        eprintln!("SKIPPED python_client: python3 grpc modules missing (pip install -r tests/python/requirements.txt)");
    }
    have_grpc
}

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/test_grpc_client.py")
}

#[tokio::test]
async fn python_client_mints_a_verifiable_link() {
    if !have_python_grpc().await {
        return;
    }
    let server = Server::start().await;
    mint_and_revoke(&server, &server.addr.to_string(), None).await;
    server.stop().await;
}

#[tokio::test]
async fn python_client_over_tls() {
    if !have_python_grpc().await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = tempfile::tempdir().unwrap();
    let (ca, cert, key) = tls_files(pki.path(), "ca");
    let (other_ca, _, _) = tls_files(pki.path(), "other");
    let mut config = config(dir.path());
    config.tls.cert_file = cert;
    config.tls.key_file = key;
    let mut server = Server::start_with(config, dir, stile_control::ManualClock::new(T0)).await;
    let ca_pem = std::fs::read(&ca).unwrap();
    server.tls =
        Some(tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(ca_pem)));
    let addr = format!("localhost:{}", server.addr.port());
    mint_and_revoke(&server, &addr, Some(&ca)).await;

    // A client trusting another CA gets no channel (the handshake fails; the script's wait times out).
    let out = tokio::process::Command::new("python3")
        .arg(script())
        .env("STILE_CONTROL_ADDR", &addr)
        .env("STILE_MINTER_KEY", MINTER)
        .env("STILE_ASSET_ID", "py-asset")
        .env("STILE_CA_FILE", &other_ca)
        .output()
        .await
        .expect("run python3");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "a client trusting another CA must fail: {stderr}");
    assert!(stderr.contains("FAIL: no channel to"), "{stderr}");
    assert!(out.stdout.is_empty(), "no link over an unverified channel");
    server.stop().await;
}

/// A CA (`<stem>.pem`) and a server certificate it signed for `localhost` and
/// 127.0.0.1, valid from an hour ago (real time: the Python client checks it) to
/// a day after the control plane's manual clock.
fn tls_files(dir: &Path, stem: &str) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, format!("{stem} test CA"));
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    #[allow(clippy::disallowed_methods)] // reason: the Python client checks validity by the real clock.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    leaf.not_before = time::OffsetDateTime::from_unix_timestamp(now - 3600).unwrap();
    leaf.not_after = time::OffsetDateTime::from_unix_timestamp(T0 as i64 + 86_400).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &Issuer::from_params(&ca, &ca_key)).unwrap();
    let paths =
        (dir.join(format!("{stem}.pem")), dir.join(format!("{stem}-cp.pem")), dir.join(format!("{stem}-cp.key")));
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

/// Runs the script against `server` at `addr` (over TLS with `ca`), then checks
/// its link with the token crate and its revocation in the change log.
async fn mint_and_revoke(server: &Server, addr: &str, ca: Option<&Path>) {
    server.published("py-asset", "/vod/py/").await;
    let version_before = server.store.version().await.unwrap();
    let mut cmd = tokio::process::Command::new("python3");
    cmd.arg(script())
        .env("STILE_CONTROL_ADDR", addr)
        .env("STILE_MINTER_KEY", MINTER)
        .env("STILE_OPERATOR_KEY", OPERATOR)
        .env("STILE_ASSET_ID", "py-asset");
    if let Some(ca) = ca {
        cmd.env("STILE_CA_FILE", ca);
    }
    let out = cmd.output().await.expect("run python3");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python client failed ({}):\n{stderr}", out.status);
    let link: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object on stdout");

    let token = link["token"].as_str().unwrap();
    let ring = server.ring().await;
    let req = Request { path: "/vod/py/master.m3u8", client_ip: None, country: None, now: T0 + 60 };
    let verified =
        verify(token, &ring, &req, &Policy::default()).expect("the token crate verifies the Python-minted link");
    assert_eq!(verified.token_id().to_string(), link["token_id"].as_str().unwrap());
    assert_eq!((verified.subject(), verified.channel()), (Some("py-viewer"), Some("email")));
    assert_eq!(verified.expires_at(), T0 + 900);

    // The Python client's revocation is in the durable change log.
    let version = link["revoked_version"].as_u64().unwrap();
    assert_eq!(version, version_before + 1);
    let LogRead::Changes(changes) = server.store.log_since(version_before, 10).await.unwrap() else { panic!() };
    let ChangeKind::Revocation(r) = &changes[0].kind else { panic!("{changes:?}") };
    assert_eq!(r.target, Target::Token { token_id: verified.token_id().as_u64() });
}
