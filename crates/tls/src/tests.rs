//! Unit tests on certificates made by rcgen in a temporary directory. The pair
//! checks are also exercised through the edge (`crates/edge/src/tls/tests.rs`).

use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, DnType, IsCa, Issuer, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};

use super::*;

const NOW: u64 = 1_800_000_000;

fn ring() -> CryptoProvider {
    ring_provider()
}

fn ca() -> (CertificateParams, KeyPair) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    (params, KeyPair::generate().unwrap())
}

fn leaf(dir: &Path, ca: &(CertificateParams, KeyPair), stem: &str, names: &[&str], until: i64) -> (PathBuf, PathBuf) {
    let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.not_before = time::OffsetDateTime::from_unix_timestamp(NOW as i64 - 3600).unwrap();
    p.not_after = time::OffsetDateTime::from_unix_timestamp(until).unwrap();
    p.distinguished_name.push(DnType::CommonName, stem);
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = p.signed_by(&key, &Issuer::from_params(&ca.0, &ca.1)).unwrap();
    let (c, k) = (dir.join(format!("{stem}.pem")), dir.join(format!("{stem}.key")));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

#[test]
fn wildcards_cover_one_label() {
    for (san, name, want) in [
        ("a.example", "a.example", true),
        ("*.example", "a.example", true),
        ("*.example", "a.b.example", false),
        ("*.example", "example", false),
        ("*.example", "*.example", true),
        ("a.example", "b.example", false),
        ("*.b.example", "a.b.example", true),
    ] {
        assert_eq!(covers(san, name), want, "{san} covers {name}");
    }
}

#[test]
fn pairs_are_checked_and_names_required() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let (c, k) = leaf(dir.path(), &ca, "cp", &["cp.test", "127.0.0.1"], NOW as i64 + 86_400);
    let pair = load_pair(&c, &k, &ring(), NOW).unwrap();
    assert_eq!(pair.names, vec!["cp.test".to_owned()]);
    pair.require_name(&c, "CP.test.").unwrap();
    pair.require_name(&c, "127.0.0.1").unwrap();
    let err = pair.require_name(&c, "other.test").unwrap_err();
    assert!(
        matches!(&err, CertError::WrongHost { name, covers, .. } if name == "other.test" && covers == "cp.test, 127.0.0.1"),
        "{err}"
    );

    let (old, old_key) = leaf(dir.path(), &ca, "old", &["cp.test"], NOW as i64 - 1);
    let err = load_pair(&old, &old_key, &ring(), NOW).unwrap_err();
    assert!(matches!(err, CertError::Expired { not_after, .. } if not_after == NOW as i64 - 1), "{err}");
    let err = load_pair(&c, &old_key, &ring(), NOW).unwrap_err();
    assert!(matches!(err, CertError::Mismatch { .. }), "{err}");
}

#[test]
fn ca_bundles_must_hold_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let (c, k) = leaf(dir.path(), &ca, "one", &["a.test"], NOW as i64 + 60);
    assert_eq!(read_ca(&c).unwrap().certs.len(), 1);
    let err = read_ca(&k).unwrap_err();
    assert!(matches!(&err, CertError::Certificate { message, .. } if message == "the file holds none"), "{err}");
    let err = read_ca(&dir.path().join("missing.pem")).unwrap_err();
    assert!(matches!(err, CertError::Read { .. }), "{err}");
}

#[test]
fn peer_identity_names_cn_and_sans() {
    let ca = ca();
    let mut p = CertificateParams::new(vec!["edge-1.example".to_owned()]).unwrap();
    p.subject_alt_names.push(SanType::IpAddress("10.0.0.7".parse().unwrap()));
    p.distinguished_name.push(DnType::CommonName, "edge-1");
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = p.signed_by(&key, &Issuer::from_params(&ca.0, &ca.1)).unwrap();
    assert_eq!(peer_identity(cert.der()).as_deref(), Some("CN=edge-1 SAN=edge-1.example,10.0.0.7"));
    assert_eq!(peer_identity(b"not a certificate"), None);
}

#[test]
fn handshake_failures_are_classified_from_rustls_and_io_errors() {
    use rustls::{CertificateError as C, Error as E};
    use std::io::{Error as Io, ErrorKind as K};
    // tokio-rustls wraps the rustls error in an io::Error (InvalidData).
    let wrapped = |e: E| Io::new(K::InvalidData, e);
    for (e, want) in [
        (E::InvalidCertificate(C::UnknownIssuer), Failure::ClientCertificate),
        (E::InvalidCertificate(C::Expired), Failure::ClientCertificate),
        (E::InvalidCertificate(C::BadSignature), Failure::ClientCertificate),
        (E::AlertReceived(rustls::AlertDescription::UnknownCA), Failure::CertificateRejected),
        (E::InvalidMessage(rustls::InvalidMessage::InvalidContentType), Failure::NotTls),
        (E::NoApplicationProtocol, Failure::Alpn),
        (E::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOffered), Failure::ProtocolVersion),
    ] {
        assert_eq!(Failure::from_io(&wrapped(e.clone())), want, "{e}");
        assert_eq!(Failure::from_rustls(&e), want, "{e}");
    }
    assert_eq!(Failure::from_io(&Io::new(K::UnexpectedEof, "tls handshake eof")), Failure::Closed);
    assert_eq!(Failure::from_io(&Io::from(K::ConnectionReset)), Failure::Closed);
    assert_eq!(Failure::from_io(&Io::other("something new")), Failure::Other);
    // Every label is distinct.
    let labels: std::collections::HashSet<&str> = Failure::ALL.iter().map(|f| f.as_str()).collect();
    assert_eq!(labels.len(), Failure::ALL.len());
    assert_eq!(version_label(Some(rustls::ProtocolVersion::TLSv1_3)), "1.3");
    assert_eq!(version_label(Some(rustls::ProtocolVersion::TLSv1_2)), "1.2");
    assert_eq!(version_label(None), "other");
}
