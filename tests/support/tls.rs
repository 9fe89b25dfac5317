//! Test support for the edge's TLS and origin-pool tests: certificates made by
//! rcgen (a throwaway CA and leaves), an edge with `[tls]`, a rustls client for
//! HTTP/1.1 over TLS, the `h2` crate's client for HTTP/2, a raw HTTP/2 client
//! that sends `:path` bytes as given, curl, and origins that can be killed and
//! brought back, over plain TCP or TLS.

use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::pki_types::{CertificateDer, ServerName};

use crate::edge::{Edge, Origin};
use crate::net::{Response, free_port, parse_response, read_head};
use crate::token::{now, state_json};

// ------------------------------------------------------------------ certificates

/// A throwaway CA writing leaf certificates into a directory.
#[derive(Debug)]
pub struct Pki {
    pub dir: PathBuf,
    pub ca_pem: PathBuf,
    params: CertificateParams,
    key: KeyPair,
    ca_der: CertificateDer<'static>,
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "stile test CA");
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let ca_pem = dir.join("ca.pem");
        std::fs::write(&ca_pem, cert.pem()).unwrap();
        Pki { dir: dir.to_owned(), ca_pem, params, key, ca_der: cert.der().clone() }
    }

    /// A leaf for `names` valid from an hour ago for `days`, written to `<stem>.pem` / `<stem>.key`.
    pub fn leaf(&self, stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let now = now() as i64;
        self.leaf_valid(stem, names, now - 3600, now + 30 * 86_400)
    }

    /// A leaf valid over `[from, until)` (Unix seconds).
    pub fn leaf_valid(&self, stem: &str, names: &[&str], from: i64, until: i64) -> (PathBuf, PathBuf) {
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        p.not_before = time::OffsetDateTime::from_unix_timestamp(from).unwrap();
        p.not_after = time::OffsetDateTime::from_unix_timestamp(until).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = p.signed_by(&key, &Issuer::from_params(&self.params, &self.key)).unwrap();
        let (c, k) = (self.dir.join(format!("{stem}.pem")), self.dir.join(format!("{stem}.key")));
        // Written whole, then renamed: a reader never sees half a file.
        for (path, text) in [(&c, cert.pem()), (&k, key.serialize_pem())] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        }
        (c, k)
    }

    pub fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        roots
    }

    /// A client trusting this CA, offering `alpn`.
    pub fn client(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        self.client_versions(alpn, rustls::DEFAULT_VERSIONS)
    }

    pub fn client_versions(
        &self,
        alpn: &[&[u8]],
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<rustls::ClientConfig> {
        let provider = Arc::new(ring_provider());
        let mut c = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(self.roots())
            .with_no_client_auth();
        c.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        Arc::new(c)
    }

    /// A server configuration (for TLS origins).
    pub fn server(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        let stem = format!("origin-{}", names.first().copied().unwrap_or("x"));
        let (c, k) = self.leaf(&stem, names);
        let certs: Vec<CertificateDer<'static>> =
            rustls::pki_types::pem::PemObject::pem_file_iter(&c).unwrap().map(|c| c.unwrap()).collect();
        let key = rustls::pki_types::pem::PemObject::from_pem_file(&k).unwrap();
        let provider = Arc::new(ring_provider());
        let c = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        Arc::new(c)
    }
}

/// rustls's ring provider (the edge's; rustls deprecates it only for lacking post-quantum kx).
#[allow(deprecated)] // reason: the same provider as the edge under test.
pub fn ring_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The config lines of `[tls]` on `port` with these certificates.
pub fn tls_config(port: u16, certs: &[(&Path, &Path)], extra: &str) -> String {
    let mut s = format!("[tls]\nlisten = [\"127.0.0.1:{port}\"]\nreload_poll_ms = 100\n{extra}\n");
    for (c, k) in certs {
        s.push_str(&format!("[[tls.certificates]]\ncert = \"{}\"\nkey = \"{}\"\n", c.display(), k.display()));
    }
    s
}

/// An edge with plain listener `edge.port` and a TLS listener on the returned port.
pub fn start_tls_edge(
    origin: &Origin,
    pki: &Pki,
    certs: &[(&Path, &Path)],
    tls_extra: &str,
    extra: &str,
) -> (Edge, u16) {
    let tls_port = free_port();
    let config = format!("{extra}\n{}", tls_config(tls_port, certs, tls_extra));
    let _ = pki;
    let mut edge = Edge::start(origin, &config, &state_json(1, serde_json::json!([]), None));
    wait_port(tls_port, &mut edge);
    (edge, tls_port)
}

pub fn wait_port(port: u16, edge: &mut Edge) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "TLS port not open: {}", edge.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ------------------------------------------------------------------ rustls client, HTTP/1.1

pub type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// What a handshake negotiated.
#[derive(Debug)]
pub struct Handshake {
    pub version: Option<rustls::ProtocolVersion>,
    pub alpn: Option<Vec<u8>>,
    /// The leaf certificate the edge presented (DER).
    pub leaf: Vec<u8>,
}

/// Connects and completes the handshake with `sni`.
pub fn tls_connect(port: u16, sni: &str, config: Arc<rustls::ClientConfig>) -> Result<(TlsStream, Handshake), String> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let name = ServerName::try_from(sni.to_owned()).map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).map_err(|e| e.to_string())?;
    }
    let hs = Handshake {
        version: s.conn.protocol_version(),
        alpn: s.conn.alpn_protocol().map(<[u8]>::to_vec),
        leaf: s.conn.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).unwrap_or_default(),
    };
    Ok((s, hs))
}

/// One GET over HTTP/1.1 on TLS, `target` sent byte for byte, `Connection: close`.
pub fn https_get(
    port: u16,
    sni: &str,
    config: Arc<rustls::ClientConfig>,
    target: &str,
    headers: &[(&str, &str)],
) -> Response {
    let (mut s, _) = tls_connect(port, sni, config).unwrap();
    exchange(&mut s, target, sni, headers)
}

/// Sends one `GET target` with `Host: host` and `Connection: close` on `s` and reads the answer.
pub fn exchange(s: &mut (impl Read + Write), target: &str, host: &str, headers: &[(&str, &str)]) -> Response {
    let mut req = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    // A close without close_notify is fine for this test client.
    let _ = s.read_to_end(&mut raw);
    parse_response(&raw, false).expect("an HTTP/1.1 answer")
}

// ------------------------------------------------------------------ HTTP/2 (h2 crate)

/// An answer over HTTP/2.
#[derive(Debug)]
pub struct H2Response {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

impl H2Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// An HTTP/2 connection to the edge (ALPN h2 negotiated), driven on its own runtime.
#[derive(Debug)]
pub struct H2Client {
    rt: tokio::runtime::Runtime,
    send: h2::client::SendRequest<Bytes>,
    pub authority: String,
}

impl H2Client {
    pub fn connect(port: u16, sni: &str, config: Arc<rustls::ClientConfig>) -> H2Client {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let name = ServerName::try_from(sni.to_owned()).unwrap();
        let send = rt.block_on(async {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.unwrap();
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "ALPN must pick h2");
            let (send, conn) = h2::client::handshake(tls).await.unwrap();
            tokio::spawn(async move {
                let _ = conn.await;
            });
            send
        });
        H2Client { rt, send, authority: format!("{sni}:{port}") }
    }

    /// GET `path_and_query` with `headers`.
    pub fn get(&self, path_and_query: &str, headers: &[(&str, &str)]) -> H2Response {
        self.request("GET", path_and_query, headers)
    }

    pub fn request(&self, method: &str, path_and_query: &str, headers: &[(&str, &str)]) -> H2Response {
        let fut = self.start(method, path_and_query, headers);
        self.rt.block_on(fut)
    }

    /// Starts a request; the future completes with the whole answer (so many can run at once).
    pub fn start(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
    ) -> impl std::future::Future<Output = H2Response> + Send + 'static {
        let uri = format!("https://{}{path_and_query}", self.authority);
        let mut b = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(()).unwrap();
        let mut send = self.send.clone();
        async move {
            send = send.ready().await.unwrap();
            let (resp, _) = send.send_request(req, true).unwrap();
            read_response(resp).await
        }
    }

    /// `method` with `body` (one DATA frame ending the stream) and `headers`.
    pub fn send(&self, method: &str, path_and_query: &str, headers: &[(&str, &str)], body: &[u8]) -> H2Response {
        let uri = format!("https://{}{path_and_query}", self.authority);
        let mut b = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(()).unwrap();
        let body = Bytes::copy_from_slice(body);
        let mut send = self.send.clone();
        self.rt.block_on(async move {
            send = send.ready().await.unwrap();
            let (resp, mut stream) = send.send_request(req, false).unwrap();
            stream.send_data(body, true).unwrap();
            read_response(resp).await
        })
    }

    /// Runs many requests concurrently on this one connection.
    pub fn all(&self, paths: &[String]) -> Vec<H2Response> {
        let futs: Vec<_> = paths.iter().map(|p| self.start("GET", p, &[])).collect();
        self.rt.block_on(futures::future::join_all(futs))
    }
}

/// The whole answer to one HTTP/2 request.
async fn read_response(resp: h2::client::ResponseFuture) -> H2Response {
    let resp = resp.await.unwrap();
    let (parts, mut body) = resp.into_parts();
    let mut out = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    H2Response { status: parts.status.as_u16(), headers: parts.headers, body: out }
}

// ------------------------------------------------------------------ raw HTTP/2 `:path`

/// What a raw HTTP/2 request got.
#[derive(Debug, PartialEq, Eq)]
pub enum H2Answer {
    /// A response: status and `x-stile-reason`.
    Response(u16, Option<String>),
    /// The stream was reset with this error code.
    Reset(u32),
    /// The connection was closed with GOAWAY (error code) or ended.
    Closed(Option<u32>),
}

/// Sends one GET whose `:path` is `path` byte for byte (HPACK literals, no Huffman),
/// with `headers`, on a fresh TLS connection negotiating h2, and reads the answer with
/// the `h2` crate's frame codec.
pub fn h2_raw(
    port: u16,
    sni: &str,
    config: Arc<rustls::ClientConfig>,
    path: &[u8],
    headers: &[(&str, &str)],
) -> H2Answer {
    use futures::{SinkExt as _, StreamExt as _};
    use tokio::io::AsyncWriteExt as _;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let name = ServerName::try_from(sni.to_owned()).unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let mut out = BytesMut::new();
        out.put_slice(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        frame(&mut out, 0x4, 0, 0, &[]); // SETTINGS
        let mut block = BytesMut::new();
        literal_indexed(&mut block, 2, b"GET"); // :method
        literal_indexed(&mut block, 6, b"https"); // :scheme
        literal_indexed(&mut block, 1, format!("{sni}:{port}").as_bytes()); // :authority
        literal_indexed(&mut block, 4, path); // :path
        for (k, v) in headers {
            literal_new(&mut block, k.to_ascii_lowercase().as_bytes(), v.as_bytes());
        }
        frame(&mut out, 0x1, 0x4 | 0x1, 1, &block); // HEADERS, END_HEADERS | END_STREAM, stream 1
        tls.write_all(&out).await.unwrap();
        tls.flush().await.unwrap();
        let mut codec: h2::Codec<_, Bytes> = h2::Codec::new(tls);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut status = None;
        let mut reason = None;
        loop {
            let next = tokio::time::timeout_at(deadline, codec.next()).await.expect("an answer within 10 s");
            match next {
                None | Some(Err(_)) => return status.map_or(H2Answer::Closed(None), |s| H2Answer::Response(s, reason)),
                Some(Ok(h2::frame::Frame::Settings(s))) if !s.is_ack() => {
                    codec.send(h2::frame::Settings::ack().into()).await.unwrap();
                }
                Some(Ok(h2::frame::Frame::Headers(h))) if h.stream_id() == h2::frame::StreamId::from(1u32) => {
                    let end = h.is_end_stream();
                    let (pseudo, fields) = h.into_parts();
                    status = pseudo.status.map(|s| s.as_u16());
                    reason = fields.get("x-stile-reason").and_then(|v| v.to_str().ok()).map(str::to_owned);
                    if end {
                        return H2Answer::Response(status.unwrap_or(0), reason);
                    }
                }
                Some(Ok(h2::frame::Frame::Data(d))) if d.is_end_stream() => {
                    return H2Answer::Response(status.unwrap_or(0), reason);
                }
                Some(Ok(h2::frame::Frame::Reset(r))) if r.stream_id() == h2::frame::StreamId::from(1u32) => {
                    return H2Answer::Reset(r.reason().into());
                }
                Some(Ok(h2::frame::Frame::GoAway(g))) => {
                    if let Some(s) = status {
                        return H2Answer::Response(s, reason);
                    }
                    return H2Answer::Closed(Some(g.reason().into()));
                }
                Some(Ok(_)) => {}
            }
        }
    })
}

fn frame(out: &mut BytesMut, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len() as u32;
    out.put_slice(&len.to_be_bytes()[1..]);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream);
    out.put_slice(payload);
}

/// HPACK integer with an `n`-bit prefix (RFC 7541 §5.1).
fn int(out: &mut BytesMut, first: u8, n: u32, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.put_u8(first | v as u8);
        return;
    }
    out.put_u8(first | max as u8);
    v -= max;
    while v >= 128 {
        out.put_u8((v % 128 + 128) as u8);
        v /= 128;
    }
    out.put_u8(v as u8);
}

fn string(out: &mut BytesMut, s: &[u8]) {
    int(out, 0, 7, s.len());
    out.put_slice(s);
}

/// Literal header field without indexing, name from the static table (RFC 7541 §6.2.2).
fn literal_indexed(out: &mut BytesMut, index: usize, value: &[u8]) {
    int(out, 0, 4, index);
    string(out, value);
}

/// Literal header field without indexing, new name.
fn literal_new(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_u8(0);
    string(out, name);
    string(out, value);
}

// ------------------------------------------------------------------ curl

/// Runs curl against the edge: `--cacert` our CA, `--resolve` the name to loopback.
/// Returns (status, headers text, body) or curl's stderr.
pub fn curl(pki: &Pki, host: &str, port: u16, target: &str, args: &[&str]) -> Result<(u16, String, Vec<u8>), String> {
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("h");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(&pki.ca_pem)
        .arg("--resolve")
        .arg(format!("{host}:{port}:127.0.0.1"))
        .arg("-D")
        .arg(&headers)
        .args(args)
        .arg(format!("https://{host}:{port}{target}"))
        .output()
        .expect("curl is installed");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let head = std::fs::read_to_string(&headers).unwrap_or_default();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, head, out.stdout))
}

// ------------------------------------------------------------------ origins that can die

/// A recording HTTP/1.1 file origin (plain or TLS) that a test can kill (listener
/// closed, every open connection shut down, like a crashed process) and restart on
/// the same port. With `fail_5xx` set it answers `503` to everything.
#[derive(Debug)]
pub struct KillableOrigin {
    pub port: u16,
    pub name: String,
    root: PathBuf,
    tls: Option<Arc<rustls::ServerConfig>>,
    state: Arc<OriginState>,
}

#[derive(Debug)]
struct OriginState {
    alive: AtomicBool,
    fail_5xx: AtomicBool,
    served: AtomicUsize,
    conns: Mutex<Vec<TcpStream>>,
    heads: Mutex<Vec<String>>,
    generation: AtomicUsize,
}

impl KillableOrigin {
    pub fn start(name: &str, root: &Path, tls: Option<Arc<rustls::ServerConfig>>) -> KillableOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let o = KillableOrigin {
            port,
            name: name.to_owned(),
            root: root.to_owned(),
            tls,
            state: Arc::new(OriginState {
                alive: AtomicBool::new(true),
                fail_5xx: AtomicBool::new(false),
                served: AtomicUsize::new(0),
                conns: Mutex::new(Vec::new()),
                heads: Mutex::new(Vec::new()),
                generation: AtomicUsize::new(0),
            }),
        };
        o.run(listener);
        o
    }

    fn run(&self, listener: TcpListener) {
        listener.set_nonblocking(true).unwrap();
        let (state, root, tls) = (self.state.clone(), self.root.clone(), self.tls.clone());
        let generation = state.generation.load(Ordering::SeqCst);
        std::thread::spawn(move || {
            while state.generation.load(Ordering::SeqCst) == generation {
                match listener.accept() {
                    Ok((conn, _)) => {
                        conn.set_nonblocking(false).unwrap();
                        state.conns.lock().unwrap().push(conn.try_clone().unwrap());
                        let (state, root, tls) = (state.clone(), root.clone(), tls.clone());
                        std::thread::spawn(move || match tls {
                            Some(cfg) => {
                                let Ok(c) = rustls::ServerConnection::new(cfg) else { return };
                                let mut s = rustls::StreamOwned::new(c, conn);
                                serve_origin(&mut s, &root, &state);
                            }
                            None => {
                                let mut c = conn;
                                serve_origin(&mut c, &root, &state);
                            }
                        });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => return,
                }
            }
            // Killed: the listener is dropped here (connection refused from now on).
        });
    }

    /// Kills it: no new connections, every open one shut down at once.
    pub fn kill(&self) {
        self.state.alive.store(false, Ordering::SeqCst);
        self.state.generation.fetch_add(1, Ordering::SeqCst);
        for c in self.state.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
        // Wait until the accept loop has dropped the listener.
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "origin {} still accepting", self.name);
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Brings it back on the same port.
    pub fn restart(&self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).unwrap();
        self.state.alive.store(true, Ordering::SeqCst);
        self.run(listener);
    }

    pub fn set_fail_5xx(&self, on: bool) {
        self.state.fail_5xx.store(on, Ordering::SeqCst);
    }

    /// Requests answered (any status) so far.
    pub fn served(&self) -> usize {
        self.state.served.load(Ordering::SeqCst)
    }

    pub fn heads(&self) -> Vec<String> {
        self.state.heads.lock().unwrap().clone()
    }
}

fn serve_origin<S: Read + Write>(conn: &mut S, root: &Path, state: &OriginState) {
    let mut reader = BufReader::new(conn);
    loop {
        let Some(head) = read_head(&mut reader) else { return };
        if !state.alive.load(Ordering::SeqCst) {
            return;
        }
        state.heads.lock().unwrap().push(head.clone());
        let mut parts = head.split_whitespace();
        let method = parts.next().unwrap_or("GET").to_owned();
        let target = parts.next().unwrap_or("/").to_owned();
        let path = target.split('?').next().unwrap_or("/");
        let (status, body) = if state.fail_5xx.load(Ordering::SeqCst) {
            ("503 Service Unavailable", b"down for maintenance\n".to_vec())
        } else {
            match std::fs::read(root.join(path.trim_start_matches('/'))) {
                Ok(b) if !path.contains("..") => ("200 OK", b),
                _ => ("404 Not Found", b"not found\n".to_vec()),
            }
        };
        let resp = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let w = reader.get_mut();
        if w.write_all(resp.as_bytes()).is_err() {
            return;
        }
        if method != "HEAD" && w.write_all(&body).is_err() {
            return;
        }
        let _ = w.flush();
        state.served.fetch_add(1, Ordering::SeqCst);
    }
}
