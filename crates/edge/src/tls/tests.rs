//! Unit tests of certificate loading, SNI selection, cipher configuration and
//! failure classification, on certificates made by rcgen in a temporary directory.

use std::path::Path;

use rcgen::{CertificateParams, IsCa, Issuer, KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256};
use rustls::SignatureScheme;

use super::metrics::{Failure, classify};
use super::*;
use crate::config::CertificateConfig;

const NOW: u64 = 1_800_000_000;

struct Ca {
    params: CertificateParams,
    key: KeyPair,
}

fn ca() -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    Ca { params, key: KeyPair::generate().unwrap() }
}

/// Writes a leaf for `names`, valid `[from, until)` (Unix seconds), as `<stem>.pem`/`<stem>.key`.
fn leaf(dir: &Path, ca: &Ca, stem: &str, names: &[&str], from: i64, until: i64) -> CertificateConfig {
    let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.not_before = time::OffsetDateTime::from_unix_timestamp(from).unwrap();
    p.not_after = time::OffsetDateTime::from_unix_timestamp(until).unwrap();
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let issuer = Issuer::from_params(&ca.params, &ca.key);
    let cert = p.signed_by(&key, &issuer).unwrap();
    let (c, k) = (dir.join(format!("{stem}.pem")), dir.join(format!("{stem}.key")));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    CertificateConfig { cert: c, key: k, names: Vec::new() }
}

fn valid(dir: &Path, ca: &Ca, stem: &str, names: &[&str]) -> CertificateConfig {
    let now = NOW as i64;
    leaf(dir, ca, stem, names, now - 3600, now + 86_400)
}

fn ring() -> CryptoProvider {
    ring_provider()
}

#[test]
fn bad_pairs_are_refused_with_a_clear_reason() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let now = NOW as i64;
    let good = valid(dir.path(), &ca, "good", &["a.test"]);
    assert!(certs::load(&good, &ring(), NOW).is_ok());

    let expired = leaf(dir.path(), &ca, "expired", &["a.test"], now - 7200, now - 60);
    let err = certs::load(&expired, &ring(), NOW).unwrap_err();
    assert!(matches!(err, CertError::Expired { .. }), "{err}");
    assert!(err.to_string().contains("expired"), "{err}");

    let future = leaf(dir.path(), &ca, "future", &["a.test"], now + 60, now + 7200);
    assert!(matches!(certs::load(&future, &ring(), NOW).unwrap_err(), CertError::NotYetValid { .. }));

    let other = valid(dir.path(), &ca, "other", &["b.test"]);
    let mismatched = CertificateConfig { cert: good.cert.clone(), key: other.key.clone(), names: vec![] };
    let err = certs::load(&mismatched, &ring(), NOW).unwrap_err();
    assert!(matches!(err, CertError::Mismatch { .. }), "{err}");

    let wrong_host = CertificateConfig { names: vec!["b.test".into()], ..good.clone() };
    let err = certs::load(&wrong_host, &ring(), NOW).unwrap_err();
    assert!(matches!(&err, CertError::WrongHost { name, .. } if name == "b.test"), "{err}");
    assert!(err.to_string().contains("a.test"), "names what it covers: {err}");

    let missing = CertificateConfig { cert: dir.path().join("nope.pem"), ..good.clone() };
    assert!(matches!(certs::load(&missing, &ring(), NOW).unwrap_err(), CertError::Read { .. }));

    std::fs::write(dir.path().join("garbage.pem"), "not pem at all").unwrap();
    let garbage = CertificateConfig { cert: dir.path().join("garbage.pem"), ..good.clone() };
    assert!(matches!(certs::load(&garbage, &ring(), NOW).unwrap_err(), CertError::Certificate { .. }));
    let no_key = CertificateConfig { key: dir.path().join("garbage.pem"), ..good };
    assert!(matches!(certs::load(&no_key, &ring(), NOW).unwrap_err(), CertError::Key { .. }));
}

fn resolver(certs: Vec<certs::LoadedCert>, strict: bool) -> CertResolver {
    CertResolver { table: ArcSwap::from_pointee(SniTable::new(certs, strict)) }
}

#[test]
fn sni_picks_exact_then_wildcard_then_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let p = ring();
    let a = certs::load(&valid(dir.path(), &ca, "a", &["a.test"]), &p, NOW).unwrap();
    let w = certs::load(&valid(dir.path(), &ca, "w", &["*.w.test"]), &p, NOW).unwrap();
    let (a_key, w_key) = (a.key.clone(), w.key.clone());
    let r = resolver(vec![a, w], false);
    let same = |got: Option<Arc<CertifiedKey>>, want: &Arc<CertifiedKey>| got.is_some_and(|g| Arc::ptr_eq(&g, want));
    assert!(same(r.resolve_name(Some("a.test")), &a_key));
    assert!(same(r.resolve_name(Some("A.TEST.")), &a_key), "case and a trailing dot do not matter");
    assert!(same(r.resolve_name(Some("x.w.test")), &w_key));
    assert!(same(r.resolve_name(Some("x.y.w.test")), &a_key), "a wildcard covers one label; else the default");
    assert!(same(r.resolve_name(None), &a_key), "no SNI: the default");
    assert!(same(r.resolve_name(Some("other.test")), &a_key));
    assert!(r.covers_host("x.w.test") && r.covers_host("a.test") && !r.covers_host("other.test"));

    let a = certs::load(&valid(dir.path(), &ca, "a2", &["a.test"]), &p, NOW).unwrap();
    let strict = resolver(vec![a], true);
    assert!(strict.resolve_name(Some("other.test")).is_none(), "strict SNI refuses unknown names");
    assert!(strict.resolve_name(None).is_some(), "strict SNI still serves clients sending none");
}

#[test]
fn rsa_and_ecdsa_certificates_serve_one_name_by_what_the_client_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let p = ring();
    let ec = certs::load(&valid(dir.path(), &ca, "ec", &["a.test"]), &p, NOW).unwrap();
    let mut params = CertificateParams::new(vec!["a.test".to_string()]).unwrap();
    params.not_before = time::OffsetDateTime::from_unix_timestamp(NOW as i64 - 60).unwrap();
    params.not_after = time::OffsetDateTime::from_unix_timestamp(NOW as i64 + 86_400).unwrap();
    // ring signs with RSA keys but cannot generate them: openssl makes one.
    let key_path = dir.path().join("rsa-gen.key");
    let status = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"])
        .arg(&key_path)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl is installed");
    assert!(status.success());
    let rsa_key =
        KeyPair::from_pem_and_sign_algo(&std::fs::read_to_string(&key_path).unwrap(), &PKCS_RSA_SHA256).unwrap();
    let cert = params.signed_by(&rsa_key, &Issuer::from_params(&ca.params, &ca.key)).unwrap();
    std::fs::write(dir.path().join("rsa.pem"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("rsa.key"), rsa_key.serialize_pem()).unwrap();
    let rsa_cfg =
        CertificateConfig { cert: dir.path().join("rsa.pem"), key: dir.path().join("rsa.key"), names: vec![] };
    let rsa = certs::load(&rsa_cfg, &p, NOW).unwrap();
    let (ec_key, rsa_key) = (ec.key.clone(), rsa.key.clone());
    let table = SniTable::new(vec![ec, rsa], false);
    let got = table.resolve(Some("a.test"), &[SignatureScheme::RSA_PSS_SHA256]).unwrap();
    assert!(Arc::ptr_eq(&got, &rsa_key));
    let got = table.resolve(Some("a.test"), &[SignatureScheme::ECDSA_NISTP256_SHA256]).unwrap();
    assert!(Arc::ptr_eq(&got, &ec_key));
}

#[test]
fn cipher_suites_by_iana_name_and_refusals() {
    let mut c = TlsConfig { cipher_suites: vec!["TLS_AES_128_GCM_SHA256".into()], ..TlsConfig::default() };
    let err = provider_for(&c).unwrap_err();
    assert!(err.contains("TLS 1.2"), "{err}");
    c.min_version = TlsVersion::V1_3;
    assert_eq!(provider_for(&c).unwrap(), vec!["TLS_AES_128_GCM_SHA256"]);
    c.cipher_suites = vec!["tls13_aes_256_gcm_sha384".into(), "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256".into()];
    c.min_version = TlsVersion::V1_2;
    assert_eq!(
        provider_for(&c).unwrap(),
        vec!["TLS_AES_256_GCM_SHA384", "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"]
    );
    c.cipher_suites = vec!["TLS_RSA_WITH_RC4_128_SHA".into()];
    let err = provider_for(&c).unwrap_err();
    assert!(err.contains("TLS_RSA_WITH_RC4_128_SHA") && err.contains("TLS_AES_128_GCM_SHA256"), "{err}");
    // The default: every suite of the provider, all AEAD with forward secrecy.
    let all = provider_for(&TlsConfig::default()).unwrap();
    assert_eq!(all.len(), 9, "{all:?}");
    assert!(all.iter().all(|s| s.contains("GCM") || s.contains("CHACHA20")), "{all:?}");
    assert!(all.iter().filter(|s| s.contains("WITH")).all(|s| s.starts_with("TLS_ECDHE_")), "{all:?}");
}

fn provider_for(c: &TlsConfig) -> Result<Vec<String>, String> {
    provider(c).map(|p| suite_names(&p)).map_err(|e| e.to_string())
}

/// Runs a handshake in memory between a rustls client and our server configuration
/// and returns the server's error.
fn server_error(client: rustls::ClientConfig, server: Arc<ServerConfig>, sni: &str) -> rustls::Error {
    let mut c = rustls::ClientConnection::new(Arc::new(client), sni.to_owned().try_into().unwrap()).unwrap();
    let mut s = rustls::ServerConnection::new(server).unwrap();
    for _ in 0..10 {
        let mut buf = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            s.read_tls(&mut rd).unwrap();
        }
        if let Err(e) = s.process_new_packets() {
            return e;
        }
        let mut buf = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            c.read_tls(&mut rd).unwrap();
        }
        let _ = c.process_new_packets();
    }
    panic!("the handshake did not fail");
}

#[test]
fn handshake_failures_get_their_cause() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let cfg = TlsConfig {
        listen: vec!["127.0.0.1:1".into()],
        certificates: vec![valid(dir.path(), &ca, "a", &["a.test"])],
        min_version: TlsVersion::V1_3,
        strict_sni: true,
        ..TlsConfig::default()
    };
    let p = Arc::new(provider(&cfg).unwrap());
    let certs = load_all(&cfg, &p, NOW).unwrap();
    let r = Arc::new(resolver(certs, true));
    let server = server_config(&cfg, p, r).unwrap();
    let roots = rustls::RootCertStore::empty();
    let client = |versions: &[&'static rustls::SupportedProtocolVersion], alpn: &[&[u8]]| {
        let mut c = rustls::ClientConfig::builder_with_protocol_versions(versions)
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        c.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        c
    };
    let e = server_error(client(&[&rustls::version::TLS12], &[]), server.clone(), "a.test");
    assert_eq!(Failure::from_rustls(&e), Failure::ProtocolVersion, "{e:?}");
    let e = server_error(client(&[&rustls::version::TLS13], &[b"h3"]), server.clone(), "a.test");
    assert_eq!(Failure::from_rustls(&e), Failure::Alpn, "{e:?}");
    let e = server_error(client(&[&rustls::version::TLS13], &[]), server.clone(), "b.test");
    assert_eq!(Failure::from_rustls(&e), Failure::UnknownSni, "{e:?}");
    // The client does not trust our CA: it sends an alert after our certificate.
    let e = server_error(client(&[&rustls::version::TLS13], &[]), server, "a.test");
    assert_eq!(Failure::from_rustls(&e), Failure::CertificateRejected, "{e:?}");

    // Pingora's acceptor keeps only the text of the error, inside its own contexts.
    let pingora_like = |inner: String| {
        let e = pingora::Error::explain(pingora::ErrorType::TLSHandshakeFailure, format!("tls connect error: {inner}"));
        pingora::Error::explain(pingora::ErrorType::TLSHandshakeFailure, format!("TLS accept() failed: {e}"))
    };
    let io = |e: rustls::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e).to_string();
    for (e, want) in [
        (rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType), Failure::NotTls),
        (rustls::Error::InvalidMessage(rustls::InvalidMessage::MissingData("x")), Failure::Malformed),
        (rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA), Failure::CertificateRejected),
        (rustls::Error::AlertReceived(rustls::AlertDescription::InternalError), Failure::ClientAlert),
        (
            rustls::Error::PeerIncompatible(rustls::PeerIncompatible::SignatureAlgorithmsExtensionRequired),
            Failure::ProtocolVersion,
        ),
        (rustls::Error::PeerIncompatible(rustls::PeerIncompatible::NoKxGroupsInCommon), Failure::NoSharedCipher),
        (rustls::Error::PeerIncompatible(rustls::PeerIncompatible::NullCompressionRequired), Failure::Other),
        (rustls::Error::NoApplicationProtocol, Failure::Alpn),
        (rustls::Error::General("no server certificate chain resolved".into()), Failure::UnknownSni),
        (rustls::Error::DecryptError, Failure::Malformed),
    ] {
        assert_eq!(classify(&pingora_like(io(e.clone()))), want, "{e}");
    }
    let eof = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "tls handshake eof");
    assert_eq!(classify(&pingora_like(eof.to_string())), Failure::Closed);
    let reset = std::io::Error::from_raw_os_error(104);
    assert_eq!(classify(&pingora_like(reset.to_string())), Failure::Closed, "{reset}");
    assert_eq!(classify(&pingora_like("something new".into())), Failure::Other);
}
