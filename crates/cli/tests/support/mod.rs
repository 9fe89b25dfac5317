//! Test support for the edge's end-to-end tests: a real `stile edge` process, a
//! small recording HTTP origin on loopback, a raw HTTP/1.1 client (so tests can
//! send paths no URL library would), token minting, and ffmpeg-generated HLS.

#![allow(dead_code, unreachable_pub)] // reason: each test binary uses a different subset.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stile_token::{Claims, KEY_LEN, KeyRing, Scope, SecretKey, TokenId};

/// The MaxMind test databases shipped with the repository.
pub const GEOIP_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/data/geoip");

/// The key id and secret every test edge holds.
pub const KEY_ID: u32 = 1;
pub const SECRET: [u8; KEY_LEN] = [7; KEY_LEN];

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Current Unix time (tests may read the real clock).
#[allow(clippy::disallowed_methods)] // reason: e2e tests run against the real clock of the edge process.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

pub fn ring() -> KeyRing {
    let mut r = KeyRing::new();
    r.insert(KEY_ID, &SecretKey::from_bytes(SECRET));
    r
}

/// Claims for `/vod/abc/`, valid for 10 minutes, that tests tweak.
pub fn claims() -> Claims {
    let now = now();
    Claims {
        key_id: KEY_ID,
        token_id: TokenId::from_u64(0x1111_2222_3333_4444),
        issued_at: now - 10,
        not_before: None,
        expires_at: now + 600,
        scope: Scope::parse("/vod/abc/").unwrap(),
        ip: None,
        countries: None,
        subject: Some("viewer-1".into()),
        channel: Some("email".into()),
    }
}

pub fn mint(f: impl FnOnce(&mut Claims)) -> String {
    let mut c = claims();
    f(&mut c);
    stile_token::sign(&c, &ring()).unwrap()
}

pub fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let v =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..=c.len() {
            out.push(A[(v >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// A state file holding the test key and these revocations (JSON values).
pub fn state_json(version: u64, revocations: serde_json::Value, generated_at: Option<u64>) -> String {
    let mut v = serde_json::json!({
        "version": version,
        "keys": [{ "id": KEY_ID, "secret": b64url(&SECRET) }],
        "revocations": revocations,
    });
    if let Some(g) = generated_at {
        v["generated_at"] = g.into();
    }
    v.to_string()
}

/// Path-encoding attacks on a token scoped to `/vod/abc/` (the secret lives at
/// `/secret.ts`): every one must be denied as `malformed`, over HTTP/1.1
/// (`edge_paths.rs`) and over HTTP/2 (`edge_tls.rs`).
pub const PATH_ATTACKS: &[&str] = &[
    "/vod/abc/../../secret.ts",
    "/vod/abc/%2e%2e/%2e%2e/secret.ts",
    "/vod/abc/%2E%2E/%2E%2E/secret.ts",
    "/vod/abc/.%2e/.%2e/secret.ts",
    "/vod/abc/..%2f..%2fsecret.ts",
    "/vod/abc/%2e%2e%2f%2e%2e%2fsecret.ts",
    "/vod/abc/%252e%252e/%252e%252e/secret.ts",
    "/vod/abc/%25252e%25252e/secret.ts",
    "/vod/abc/..%5c..%5csecret.ts",
    "/vod/abc/..\\..\\secret.ts",
    "/vod/abc\\..\\..\\secret.ts",
    "/vod/abc/seg.ts;jsessionid=x",
    "/vod/abc/..;/..;/secret.ts",
    "/vod/abc/%3b/seg.ts",
    "/vod/abc//seg.ts",
    "//vod/abc/seg.ts",
    "/vod/abc/./seg.ts",
    "/vod/abc/%2fseg.ts",
    "/vod/abc/seg.ts%00",
    "/vod/abc/%c0%ae%c0%ae/secret.ts",
    "/vod/abc/%e0%80%ae%e0%80%ae/secret.ts",
    "/vod/abc/%ef%bc%8f..%ef%bc%8fsecret.ts",
    "/vod/abc/%ff/seg.ts",
    "/vod/abc/%",
    "/vod/abc/%zz",
];

// ---------------------------------------------------------------- origin

/// A recording HTTP/1.1 origin serving files from a directory.
pub struct Origin {
    pub port: u16,
    log: Arc<Mutex<Vec<String>>>,
}

impl Origin {
    /// Serves `root` on a free loopback port, in background threads, with keep-alive.
    pub fn start(root: &Path) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (root, log2) = (root.to_owned(), log.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (root, log) = (root.clone(), log2.clone());
                std::thread::spawn(move || serve(conn, &root, &log));
            }
        });
        Origin { port, log }
    }

    /// An origin run by the test itself on `port` (nothing is recorded).
    pub fn external(port: u16) -> Origin {
        Origin { port, log: Arc::default() }
    }

    /// Every request head received so far (request line and headers).
    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Request lines only.
    pub fn request_lines(&self) -> Vec<String> {
        self.requests().iter().map(|r| r.lines().next().unwrap_or_default().to_owned()).collect()
    }
}

/// Reads one request head (request line and headers, without the blank line);
/// `None` at end of stream.
pub fn read_head(reader: &mut impl BufRead) -> Option<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        if line == "\r\n" || line == "\n" {
            return Some(head);
        }
        head.push_str(&line);
    }
}

fn serve(conn: TcpStream, root: &Path, log: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut out = conn;
    loop {
        let Some(head) = read_head(&mut reader) else { return };
        log.lock().unwrap().push(head.clone());
        let target = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let path = target.split('?').next().unwrap_or("/");
        let file = root.join(path.trim_start_matches('/'));
        let (status, body) = match std::fs::read(&file) {
            Ok(b) if !path.contains("..") => ("200 OK", b),
            _ => ("404 Not Found", b"not found\n".to_vec()),
        };
        let ctype = if path.ends_with(".m3u8") { "application/vnd.apple.mpegurl" } else { "application/octet-stream" };
        let resp = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nETag: \"x\"\r\n\r\n",
            body.len()
        );
        if out.write_all(resp.as_bytes()).is_err() || out.write_all(&body).is_err() {
            return;
        }
    }
}

/// An origin serving one segment, `/vod/abc/seg.ts` (body `ok`); keep the directory alive.
pub fn one_segment_origin() -> (tempfile::TempDir, Origin) {
    let content = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(content.path().join("vod/abc")).unwrap();
    std::fs::write(content.path().join("vod/abc/seg.ts"), b"ok").unwrap();
    let origin = Origin::start(content.path());
    (content, origin)
}

// ---------------------------------------------------------------- edge

/// A running `stile edge` process, killed on drop.
pub struct Edge {
    pub port: u16,
    pub admin: u16,
    pub dir: tempfile::TempDir,
    pub child: Child,
}

pub const BASE_CONFIG: &str = r#"
[diagnostics]
reason_header = true
[cookie]
enabled = true
secure = false
"#;

impl Edge {
    /// Writes `state` and a config (`extra` TOML appended to the generated top part) and
    /// starts the edge, waiting until `/readyz` answers 200.
    pub fn start(origin: &Origin, extra: &str, state: &str) -> Edge {
        Edge::start_with(origin, extra, "", state)
    }

    /// Like [`Edge::start`], with extra keys for the `[state]` table.
    pub fn start_with(origin: &Origin, extra: &str, state_extra: &str, state: &str) -> Edge {
        let dir = tempfile::tempdir().unwrap();
        let (port, admin) = (free_port(), free_port());
        let config = Edge::write_config(dir.path(), origin.port, port, admin, extra, state_extra, state);
        let child = Edge::spawn(&config, &[]);
        let mut edge = Edge { port, admin, dir, child };
        edge.wait_ready();
        edge
    }

    pub fn write_config(
        dir: &Path,
        origin: u16,
        port: u16,
        admin: u16,
        extra: &str,
        state_extra: &str,
        state: &str,
    ) -> PathBuf {
        let state_path = dir.join("state.json");
        std::fs::write(&state_path, state).unwrap();
        let config = format!(
            "listen = [\"127.0.0.1:{port}\"]\nadmin_listen = \"127.0.0.1:{admin}\"\nthreads = 1\n\
             grace_period_secs = 1\ngraceful_shutdown_timeout_secs = 1\n\
             pid_file = \"{d}/edge.pid\"\nupgrade_sock = \"{d}/upgrade.sock\"\n{extra}\n\
             [origin]\naddress = \"127.0.0.1:{origin}\"\n[state]\nfile = \"{s}\"\npoll_interval_ms = 100\n{state_extra}\n",
            d = dir.display(),
            s = state_path.display(),
        );
        let path = dir.join("edge.toml");
        std::fs::write(&path, config).unwrap();
        path
    }

    pub fn spawn(config: &Path, args: &[&str]) -> Child {
        let log = std::fs::File::create(config.with_extension(format!("log{}", args.len()))).unwrap();
        Command::new(env!("CARGO_BIN_EXE_stile"))
            .arg("edge")
            .arg("--config")
            .arg(config)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap()
    }

    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("edge exited early with {status}: {}", self.log());
            }
            let ready = get(self.admin, "/readyz", &[]).is_some_and(|r| r.status == 200);
            if ready && TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "edge not ready: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything the edge printed (JSON logs, including the access log).
    pub fn log(&self) -> String {
        let mut s = String::new();
        for e in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x.to_string_lossy().starts_with("log")) {
                s.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        s
    }

    pub fn signal(&self, sig: &str) {
        signal(self.child.id(), sig);
    }

    pub fn get(&self, target: &str, headers: &[(&str, &str)]) -> Response {
        get(self.port, target, headers).expect("edge answers")
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().unwrap().success();
    assert!(ok, "kill -{sig} {pid}");
}

// ---------------------------------------------------------------- client

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: HashMap<String, Vec<String>>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).and_then(|v| v.first()).map(String::as_str)
    }
}

/// One raw HTTP/1.1 GET (`target` sent byte for byte), `Connection: close`.
pub fn get(port: u16, target: &str, headers: &[(&str, &str)]) -> Option<Response> {
    request(port, "GET", target, headers)
}

pub fn request(port: u16, method: &str, target: &str, headers: &[(&str, &str)]) -> Option<Response> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    parse_response(&raw, method == "HEAD")
}

pub fn parse_response(raw: &[u8], head_only: bool) -> Option<Response> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let mut headers: HashMap<String, Vec<String>> = HashMap::new();
    for l in lines {
        let (k, v) = l.split_once(':')?;
        headers.entry(k.trim().to_ascii_lowercase()).or_default().push(v.trim().to_owned());
    }
    let rest = &raw[end + 4..];
    let chunked = headers.get("transfer-encoding").is_some_and(|v| v.iter().any(|x| x.eq_ignore_ascii_case("chunked")));
    let body = if head_only {
        Vec::new()
    } else if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Some(Response { status, headers, body })
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(std::str::from_utf8(&b[..eol]).ok()?.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

// ---------------------------------------------------------------- content

/// A small HLS tree under `root/vod/abc/`: `master.m3u8` with two variants
/// (`v1/`, `v2/`), each three 1-second MPEG-TS segments, made with ffmpeg's test source.
pub fn make_hls(root: &Path) {
    let base = root.join("vod/abc");
    for (name, size, rate) in [("v1", "160x120", "150k"), ("v2", "320x240", "300k")] {
        let dir = base.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
            .arg(format!("testsrc=duration=3:size={size}:rate=10"))
            .args(["-c:v", "mpeg2video", "-b:v", rate, "-g", "10", "-f", "hls", "-hls_time", "1"])
            .args(["-hls_list_size", "0", "-hls_playlist_type", "vod", "-hls_segment_filename"])
            .arg(dir.join("seg%d.ts"))
            .arg(dir.join("index.m3u8"))
            .status()
            .expect("ffmpeg is installed");
        assert!(status.success(), "ffmpeg failed for {name}");
    }
    std::fs::write(
        base.join("master.m3u8"),
        "#EXTM3U\n#EXT-X-VERSION:3\n\
         #EXT-X-STREAM-INF:BANDWIDTH=200000,RESOLUTION=160x120\nv1/index.m3u8\n\
         #EXT-X-STREAM-INF:BANDWIDTH=400000,RESOLUTION=320x240\nv2/index.m3u8\n",
    )
    .unwrap();
}

/// A small DASH presentation under `root/vod/abc/dash/`: `manifest.mpd` with two H.264
/// representations and one AAC one, three 1-second fMP4 segments each (SegmentTemplate).
pub fn make_dash(root: &Path) {
    let dir = root.join("vod/abc/dash");
    std::fs::create_dir_all(&dir).unwrap();
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-nostdin", "-f", "lavfi", "-i", "testsrc=duration=3:size=160x90:rate=10"])
        .args(["-f", "lavfi", "-i", "sine=duration=3:sample_rate=44100"])
        .args(["-map", "0:v", "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "ultrafast"])
        .args(["-b:v:0", "100k", "-b:v:1", "50k", "-g", "10", "-c:a", "aac", "-b:a", "32k"])
        .args(["-f", "dash", "-seg_duration", "1", "-use_template", "1", "-use_timeline", "0"])
        .args(["-adaptation_sets", "id=0,streams=v id=1,streams=a"])
        .args([
            "-init_seg_name",
            "init-$RepresentationID$.m4s",
            "-media_seg_name",
            "seg-$RepresentationID$-$Number$.m4s",
        ])
        .arg(dir.join("manifest.mpd"))
        .status()
        .expect("ffmpeg is installed");
    assert!(status.success(), "ffmpeg failed to write the DASH sample");
}

/// No request the origin received carries `token`, a query token or our cookie.
pub fn assert_origin_saw_no_token(origin: &Origin, token: &str) {
    for head in origin.requests() {
        assert!(!head.contains(token) && !head.contains("st=") && !head.contains("stile="), "{head}");
    }
}

/// A rewritten manifest's framing: chunked, no length, not stored by shared caches.
pub fn assert_rewritten_framing(r: &Response) {
    assert_eq!(r.header("content-length"), None);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.header("cache-control"), Some("private, no-store"));
}

/// Plays `url` with ffmpeg (every stream, no output); returns ffmpeg's stderr on failure.
pub fn ffmpeg_play(url: &str, extra: &[&str]) -> Result<(), String> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin"])
        .args(extra)
        .args(["-i", url, "-map", "0", "-c", "copy", "-f", "null", "-"])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
}
