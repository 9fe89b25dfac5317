//! `stile dev --tls`: TLS everywhere inside the dev installation.
//!
//! A throwaway CA, made with rcgen in `DIR/tls/` (`ca.pem` is what a client trusts:
//! `curl --cacert`, `ffmpeg -ca_file`, `stile --ca-file`, or a browser's certificate
//! settings), signs two server certificates for `localhost`, `127.0.0.1` and `::1`:
//! the edge's (`edge.pem`) and the control plane's (`control.pem`). The CA's key
//! stays in the directory, so with `--dir` the same CA signs every run's
//! certificates and a browser that trusts it once keeps trusting it; without
//! `--dir` everything is removed on exit. The edge's listener becomes an HTTPS one
//! (no plain HTTP), its cookies `Secure`, and the control plane mints
//! `https://127.0.0.1:PORT` links; the control plane serves gRPC over TLS (`[tls]`),
//! which the edge's sync client (`sync.ca_file`), the player page's backend and the
//! printed `stile` commands (`--ca-file`) verify against the CA.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};

/// The host the dev links use: the player page's host too, so the page and the edge
/// share a site (the certificates also cover `localhost` and `::1`).
pub(crate) const HOST: &str = "127.0.0.1";

/// The names every dev server certificate covers.
const NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// The dev TLS material, written in `DIR/tls/`.
#[derive(Debug)]
pub(crate) struct DevTls {
    /// The CA certificate clients trust.
    pub(crate) ca: PathBuf,
    /// The edge's certificate and key (`edge.pem`, `edge.key`).
    pub(crate) edge: Leaf,
    /// The control plane's certificate and key (`control.pem`, `control.key`).
    pub(crate) control: Leaf,
}

/// A server certificate signed by the dev CA.
#[derive(Debug)]
pub(crate) struct Leaf {
    /// The certificate chain (leaf, then the CA).
    pub(crate) cert: PathBuf,
    /// Its key.
    pub(crate) key: PathBuf,
}

/// Makes (or, in a kept `--dir`, reuses) the CA and makes fresh edge and control-plane
/// certificates valid for 30 days from `now` (Unix seconds).
pub(crate) fn generate(dir: &Path, now: u64) -> Result<DevTls, String> {
    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls).map_err(|e| format!("creating {}: {e}", tls.display()))?;
    let (ca, ca_key) = (tls.join("ca.pem"), tls.join("ca.key"));
    let ca_params = ca_params(now)?;
    let ca_signing = match (std::fs::read_to_string(&ca), std::fs::read_to_string(&ca_key)) {
        (Ok(_), Ok(key)) => KeyPair::from_pem(&key).map_err(|e| format!("{}: {e}", ca_key.display()))?,
        _ => {
            let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
            let cert = ca_params.self_signed(&key).map_err(|e| e.to_string())?;
            write_private(&ca_key, &key.serialize_pem())?;
            write(&ca, &cert.pem())?;
            key
        }
    };
    let ca_pem = std::fs::read_to_string(&ca).map_err(|e| format!("{}: {e}", ca.display()))?;
    // An issuer needs only the CA's name, key-id method, key usages and key: the same
    // parameters and the stored key chain to the stored `ca.pem`.
    let issuer = Issuer::new(ca_params, ca_signing);
    let edge = issue(&tls, "edge", "stile dev edge", &issuer, &ca_pem, now)?;
    let control = issue(&tls, "control", "stile dev control plane", &issuer, &ca_pem, now)?;
    Ok(DevTls { ca, edge, control })
}

/// A fresh server certificate for [`NAMES`], signed by `issuer`, written as
/// `DIR/tls/FILE.pem` (with the CA after it) and `DIR/tls/FILE.key`.
fn issue(
    tls: &Path,
    file: &str,
    common_name: &str,
    issuer: &Issuer<'_, KeyPair>,
    ca_pem: &str,
    now: u64,
) -> Result<Leaf, String> {
    let mut leaf = CertificateParams::new(NAMES.map(str::to_owned).to_vec()).map_err(|e| e.to_string())?;
    leaf.distinguished_name = name(common_name);
    leaf.not_before = at(now.saturating_sub(3600))?;
    leaf.not_after = at(now + 30 * 86_400)?;
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let cert = leaf.signed_by(&key, issuer).map_err(|e| e.to_string())?;
    let (cert_path, key_path) = (tls.join(format!("{file}.pem")), tls.join(format!("{file}.key")));
    write_private(&key_path, &key.serialize_pem())?;
    write(&cert_path, &format!("{}{ca_pem}", cert.pem()))?;
    Ok(Leaf { cert: cert_path, key: key_path })
}

impl DevTls {
    /// The generated edge configuration turned into an HTTPS one on `port`: the plain
    /// listener becomes a TLS listener with the edge's certificate, cookies become
    /// `Secure`, and `[sync]` (whose endpoint is the control plane's `https://` URL)
    /// verifies the control plane against the CA.
    pub(crate) fn edge_config(&self, plain: &str, port: u16) -> Result<String, String> {
        let mut t: toml::Table = plain.parse().map_err(|e| format!("internal: the dev edge config: {e}"))?;
        t.insert("listen".into(), toml::Value::Array(Vec::new()));
        if let Some(toml::Value::Table(cookie)) = t.get_mut("cookie") {
            cookie.insert("secure".into(), toml::Value::Boolean(true));
        }
        if let Some(toml::Value::Table(sync)) = t.get_mut("sync") {
            sync.insert("ca_file".into(), self.ca.display().to_string().into());
        }
        let mut cert = toml::Table::new();
        cert.insert("cert".into(), self.edge.cert.display().to_string().into());
        cert.insert("key".into(), self.edge.key.display().to_string().into());
        let mut tls = toml::Table::new();
        tls.insert("listen".into(), toml::Value::Array(vec![format!("127.0.0.1:{port}").into()]));
        tls.insert("certificates".into(), toml::Value::Array(vec![toml::Value::Table(cert)]));
        t.insert("tls".into(), toml::Value::Table(tls));
        let body = toml::to_string(&t).map_err(|e| e.to_string())?;
        Ok(format!("# Generated by `stile dev --tls`; see docs/edge.md.\n{body}"))
    }

    /// The control plane's `[tls]`: gRPC over TLS with its certificate.
    pub(crate) fn control_tls(&self) -> stile_control::tls::TlsConfig {
        stile_control::tls::TlsConfig {
            cert_file: self.control.cert.clone(),
            key_file: self.control.key.clone(),
            ..Default::default()
        }
    }

    /// What a gRPC client of the dev control plane (the player page's backend, the
    /// bootstrap) verifies it with: the CA.
    pub(crate) fn client_tls(&self) -> Result<tonic::transport::ClientTlsConfig, String> {
        let ca = stile_tls::read_ca(&self.ca).map_err(|e| format!("{}: {e}", self.ca.display()))?;
        Ok(tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(ca.pem)))
    }

    /// The banner's lines about TLS.
    pub(crate) fn banner(&self) -> Vec<String> {
        vec![
            format!("TLS: a throwaway CA made for this dev run: {}", self.ca.display()),
            "  it signed the edge's and the control plane's certificates; trust it in curl with --cacert,".into(),
            "  in ffmpeg with -ca_file, in stile with --ca-file (or STILE_CA_FILE), or import it into a browser".into(),
        ]
    }

    /// `curl` with this CA, over HTTP/2.
    pub(crate) fn curl(&self) -> String {
        format!("curl --cacert {} --http2", self.ca.display())
    }

    /// `ffmpeg`/`ffplay` options trusting this CA.
    pub(crate) fn ffmpeg_options(&self) -> String {
        format!("-tls_verify 1 -ca_file {}", self.ca.display())
    }

    /// The `stile` client flags that trust this CA.
    pub(crate) fn stile_options(&self) -> String {
        format!("--ca-file {}", self.ca.display())
    }
}

fn ca_params(now: u64) -> Result<CertificateParams, String> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.distinguished_name = name("stile dev CA (throwaway)");
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p.not_before = at(now.saturating_sub(3600))?;
    p.not_after = at(now + 365 * 86_400)?;
    Ok(p)
}

fn name(cn: &str) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    d.push(DnType::CommonName, cn);
    d
}

fn at(unix: u64) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(unix).unwrap_or(i64::MAX)).map_err(|e| e.to_string())
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Keys: readable by their owner only.
fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write as _;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path).and_then(|mut f| f.write_all(text.as_bytes())).map_err(|e| format!("writing {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificates_chain_to_the_kept_ca_and_the_edge_and_control_plane_accept_them() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_800_000_000;
        let first = generate(dir.path(), now).unwrap();
        let (ca1, cert1) = (std::fs::read(&first.ca).unwrap(), std::fs::read(&first.edge.cert).unwrap());
        let control1 = std::fs::read(&first.control.cert).unwrap();
        let second = generate(dir.path(), now + 60).unwrap();
        assert_eq!(std::fs::read(&second.ca).unwrap(), ca1, "a kept directory keeps its CA");
        assert_ne!(std::fs::read(&second.edge.cert).unwrap(), cert1, "and makes a new edge certificate");
        assert_ne!(std::fs::read(&second.control.cert).unwrap(), control1, "and a new control-plane one");
        // Both chains verify against the CA for both names, with rustls's own verifier.
        use rustls::client::danger::ServerCertVerifier as _;
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(&ca1).unwrap()).unwrap();
        #[allow(deprecated)] // reason: the edge's provider (ring).
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(std::sync::Arc::new(roots), provider)
                .build()
                .unwrap();
        let when = UnixTime::since_unix_epoch(std::time::Duration::from_secs(now + 120));
        for leaf in [&second.edge, &second.control] {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_file_iter(&leaf.cert).unwrap().collect::<Result<_, _>>().unwrap();
            for host in [HOST, "localhost"] {
                let name = ServerName::try_from(host).unwrap();
                verifier.verify_server_cert(&chain[0], &chain[1..], &name, &[], when).unwrap();
            }
        }
        let config = format!(
            "listen = [\"127.0.0.1:7401\"]\n[cookie]\nenabled = true\nsecure = false\n[state]\nfile = \"{}/s.json\"\n\
             [sync]\nendpoints = [\"https://127.0.0.1:7400\"]\napi_key = \"k\"\nedge_id = \"dev\"\n",
            dir.path().display()
        );
        let tls = second.edge_config(&config, 7401).unwrap();
        let parsed: stile_edge::EdgeConfig = toml::from_str(&tls).unwrap();
        parsed.validate().unwrap();
        assert!(parsed.listen.is_empty() && parsed.cookie.secure);
        assert_eq!(parsed.tls.listen, vec!["127.0.0.1:7401".to_string()]);
        let sync = parsed.sync.as_ref().expect("[sync] is kept");
        assert_eq!(sync.ca_file, second.ca);
        // The control plane takes its [tls] as `stile control` would check it.
        let served = stile_control::tls::ServerTls::load(&second.control_tls(), now + 120).unwrap();
        assert!(served.is_some(), "gRPC over TLS");
        second.client_tls().unwrap();
    }
}
