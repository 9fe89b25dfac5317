//! A real `stile edge` process for the end-to-end tests (configuration written
//! to a temporary directory, started, waited for, killed on drop), the small
//! recording HTTP/1.1 file origin it proxies to, the path attacks and
//! assertions several edge tests share, and [`EdgeToml`], the `edge.toml` of an
//! edge in sync mode (the fleet tests, the log scan, the propagation bench).

use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::net::{Response, free_port, get, read_head};
use crate::process::{signal, spawn_stile, until};

/// The MaxMind test databases shipped with the repository (`tests/data/geoip`).
pub const GEOIP_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/geoip");

/// Path-encoding attacks on a token scoped to `/vod/abc/` (the secret lives at
/// `/secret.ts`): every one must be denied as `malformed`, over HTTP/1.1
/// (crates/cli/tests/edge/edge_paths.rs) and over HTTP/2 (edge/edge_tls.rs).
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
#[derive(Debug)]
pub struct Origin {
    /// Where it listens on 127.0.0.1.
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

// ---------------------------------------------------------------- sync-mode edge.toml

/// The `edge.toml` of an edge following a control plane (`[sync]`), for the
/// processes the fleet tests, the log scan and `stile-bench-propagation` start.
/// Fixed parts: one worker thread, 1 s grace and shutdown, `DIR/edge.pid`,
/// `DIR/upgrade.sock`, `diagnostics.reason_header = true`, the origin at
/// `127.0.0.1:ORIGIN`. Everything the callers vary is a field;
/// [`EdgeToml::new`] leaves the `[sync]` timings at the edge's defaults.
#[derive(Clone, Debug)]
pub struct EdgeToml {
    /// The directory of the pid file and upgrade socket.
    pub dir: PathBuf,
    /// The proxy listener's port (`listen`).
    pub port: u16,
    /// The admin listener's port (`admin_listen`).
    pub admin: u16,
    /// The origin's port on 127.0.0.1 (`origin.address`).
    pub origin: u16,
    /// `[cookie]` with `enabled = true`, `secure = false` (plain-HTTP loopback).
    pub cookie: bool,
    /// `false` writes `[access_log]` with `enabled = false`.
    pub access_log: bool,
    /// `state.file`, the sync cache; `None` writes no `file` (no cache).
    pub state_file: Option<PathBuf>,
    /// Extra `key = value` lines for `[state]`.
    pub state_extra: String,
    /// `sync.endpoints`: the control planes' URLs.
    pub endpoints: Vec<String>,
    /// `sync.api_key`.
    pub api_key: String,
    /// `sync.edge_id`.
    pub edge_id: String,
    /// `sync.heartbeat_timeout_ms`, when set.
    pub heartbeat_timeout_ms: Option<u64>,
    /// `sync.backoff_initial_ms` and `sync.backoff_max_ms`, when set.
    pub backoff_ms: Option<(u64, u64)>,
    /// `sync.cache_interval_ms`, when set.
    pub cache_interval_ms: Option<u64>,
    /// Extra `key = value` lines at the end of `[sync]`.
    pub sync_extra: String,
}

impl EdgeToml {
    /// An edge `edge_id` in `dir` on `port`/`admin`, proxying to `origin`, following
    /// `endpoints` with `api_key`; its cache is `DIR/cache.json`, nothing else set.
    pub fn new(
        dir: &Path,
        port: u16,
        admin: u16,
        origin: u16,
        endpoints: &[String],
        api_key: &str,
        edge_id: &str,
    ) -> EdgeToml {
        EdgeToml {
            dir: dir.to_owned(),
            port,
            admin,
            origin,
            cookie: false,
            access_log: true,
            state_file: Some(dir.join("cache.json")),
            state_extra: String::new(),
            endpoints: endpoints.to_vec(),
            api_key: api_key.into(),
            edge_id: edge_id.into(),
            heartbeat_timeout_ms: None,
            backoff_ms: None,
            cache_interval_ms: None,
            sync_extra: String::new(),
        }
    }

    /// The TOML text.
    pub fn render(&self) -> String {
        let d = self.dir.display();
        let mut s = format!(
            "listen = [\"127.0.0.1:{}\"]\nadmin_listen = \"127.0.0.1:{}\"\nthreads = 1\n\
             grace_period_secs = 1\ngraceful_shutdown_timeout_secs = 1\n\
             pid_file = \"{d}/edge.pid\"\nupgrade_sock = \"{d}/upgrade.sock\"\n\
             [diagnostics]\nreason_header = true\n",
            self.port, self.admin,
        );
        if self.cookie {
            s.push_str("[cookie]\nenabled = true\nsecure = false\n");
        }
        if !self.access_log {
            s.push_str("[access_log]\nenabled = false\n");
        }
        s.push_str(&format!("[origin]\naddress = \"127.0.0.1:{}\"\n[state]\n", self.origin));
        if let Some(file) = &self.state_file {
            s.push_str(&format!("file = \"{}\"\n", file.display()));
        }
        let endpoints: Vec<String> = self.endpoints.iter().map(|e| format!("{e:?}")).collect();
        s.push_str(&format!(
            "{}\n[sync]\nendpoints = [{}]\napi_key = \"{}\"\nedge_id = \"{}\"\n",
            self.state_extra,
            endpoints.join(", "),
            self.api_key,
            self.edge_id,
        ));
        if let Some(ms) = self.heartbeat_timeout_ms {
            s.push_str(&format!("heartbeat_timeout_ms = {ms}\n"));
        }
        if let Some((initial, max)) = self.backoff_ms {
            s.push_str(&format!("backoff_initial_ms = {initial}\nbackoff_max_ms = {max}\n"));
        }
        if let Some(ms) = self.cache_interval_ms {
            s.push_str(&format!("cache_interval_ms = {ms}\n"));
        }
        s.push_str(&self.sync_extra);
        s.push('\n');
        s
    }

    /// Writes the text to `DIR/edge.toml`; returns that path.
    pub fn write(&self) -> std::io::Result<PathBuf> {
        let path = self.dir.join("edge.toml");
        std::fs::write(&path, self.render())?;
        Ok(path)
    }
}

// ---------------------------------------------------------------- edge

/// A running `stile edge` process, killed on drop.
#[derive(Debug)]
pub struct Edge {
    /// The plain HTTP listener.
    pub port: u16,
    /// The admin listener (`/readyz`, `/metrics`).
    pub admin: u16,
    /// Its configuration, state file, pid file and logs.
    pub dir: tempfile::TempDir,
    /// The process.
    pub child: Child,
}

/// Settings most edge tests want: the reason header on, cookies over plain HTTP.
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

    /// Writes `state` to `DIR/state.json` and `DIR/edge.toml` (the listeners, the
    /// origin at 127.0.0.1:`origin`, then `extra`, then `[state]` with `state_extra`); returns the config path.
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

    /// Starts `stile edge --config CONFIG ARGS…`, its output in `CONFIG` with
    /// extension `log<number of args>` (so an upgrade's second process logs apart).
    pub fn spawn(config: &Path, args: &[&str]) -> Child {
        let log = std::fs::File::create(config.with_extension(format!("log{}", args.len()))).unwrap();
        spawn_stile("edge", config, args, log, &[])
    }

    /// Waits (20 s at most) until `/readyz` answers 200 and the proxy port accepts.
    pub fn wait_ready(&mut self) {
        let dir = self.dir.path();
        wait_edge_ready(&mut self.child, self.port, self.admin, "edge", || logs_in(dir));
    }

    /// Everything the edge printed (JSON logs, including the access log).
    pub fn log(&self) -> String {
        logs_in(self.dir.path())
    }

    /// Sends `sig` to the edge process.
    pub fn signal(&self, sig: &str) {
        signal(self.child.id(), sig);
    }

    /// One raw GET to the proxy port; panics if the edge does not answer.
    pub fn get(&self, target: &str, headers: &[(&str, &str)]) -> Response {
        get(self.port, target, headers).expect("edge answers")
    }
}

/// The `*.log*` files in `dir`, concatenated.
fn logs_in(dir: &Path) -> String {
    let mut s = String::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x.to_string_lossy().starts_with("log")) {
            s.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    s
}

/// Waits (20 s at most) until an edge's `/readyz` on `admin` answers 200 and `port`
/// accepts; panics with its log (`log`) if `child` exits meanwhile.
pub fn wait_edge_ready(child: &mut Child, port: u16, admin: u16, what: &str, log: impl Fn() -> String) {
    until(Duration::from_secs(20), &format!("{what} ready"), || {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{what} exited early with {status}: {}", log());
        }
        let ready = get(admin, "/readyz", &[]).is_some_and(|r| r.status == 200);
        (ready && TcpStream::connect(("127.0.0.1", port)).is_ok()).then_some(())
    });
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
