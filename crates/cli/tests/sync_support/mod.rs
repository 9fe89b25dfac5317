//! Support for the push-path tests: a real `stile control` process, `stile edge`
//! processes in sync mode, and a blocking gRPC operator client. Reuses the edge
//! tests' origin and raw HTTP client from `support`.

#![allow(dead_code, unreachable_pub)] // reason: each test binary uses a different subset.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use stile_proto::v1 as pb;
use tonic::transport::Channel;

use crate::support::{Origin, Response, free_port, get, signal};

pub const ADMIN: &str = "stk_sync-test-admin";
pub const EDGE_KEY: &str = "stk_sync-test-edge";
pub const BASE_URL: &str = "http://edge.test";

/// Polls `f` every 20 ms until it returns `Some`, or panics after `limit` with `what`.
pub fn until<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Content served by the origin: `/vod/abc/master.m3u8` and `/vod/abc/seg.ts`.
pub fn content() -> (tempfile::TempDir, Origin) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("vod/abc")).unwrap();
    std::fs::write(dir.path().join("vod/abc/master.m3u8"), "#EXTM3U\nseg.ts\n").unwrap();
    std::fs::write(dir.path().join("vod/abc/seg.ts"), b"segment").unwrap();
    let origin = Origin::start(dir.path());
    (dir, origin)
}

// ---------------------------------------------------------------- control plane

/// A running `stile control`, killed on drop.
pub struct Control {
    pub port: u16,
    pub dir: PathBuf,
    pub child: Child,
    config: PathBuf,
}

impl Control {
    /// Starts a control plane storing into `dir` (kept across restarts).
    pub fn start(dir: &Path) -> Control {
        Control::start_on(dir, free_port())
    }

    /// Starts (or restarts) on a given port.
    pub fn start_on(dir: &Path, port: u16) -> Control {
        let key = |name: &str, role: &str, key: &str| {
            format!(
                "[[auth.keys]]\nname = \"{name}\"\nrole = \"{role}\"\nsha256 = \"{}\"\n",
                hex(&stile_control::auth::hash_api_key(key))
            )
        };
        let config = dir.join("control.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\
                 [store]\npath = \"{d}/control.redb\"\n[links]\ndefault_base_url = \"{BASE_URL}\"\n\
                 [sync]\nheartbeat_interval_ms = 200\nkey_activation_timeout_secs = 10\n{admin_key}{edge_key}",
                admin = free_port(),
                d = dir.display(),
                admin_key = key("admin", "admin", ADMIN),
                edge_key = key("edges", "edge", EDGE_KEY),
            ),
        )
        .unwrap();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("control.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_stile"))
            .args(["control", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut c = Control { port, dir: dir.to_owned(), child, config };
        let ops = c.ops();
        until(Duration::from_secs(20), "the control plane", || {
            if let Some(status) = c.child.try_wait().unwrap() {
                panic!("control plane exited with {status}: {}", c.log());
            }
            ops.try_list().ok()
        });
        c
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn ops(&self) -> Ops {
        Ops::new(&self.url())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("control.log")).unwrap_or_default()
    }

    /// SIGKILL, and wait for it.
    pub fn kill9(mut self) -> (PathBuf, u16) {
        signal(self.child.id(), "KILL");
        let _ = self.child.wait();
        (self.dir.clone(), self.port)
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------- operator client

/// A blocking gRPC client with the admin key.
pub struct Ops {
    rt: tokio::runtime::Runtime,
    url: String,
}

impl Ops {
    pub fn new(url: &str) -> Ops {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        Ops { rt, url: url.to_owned() }
    }

    fn channel(&self) -> Result<Channel, tonic::Status> {
        self.rt
            .block_on(Channel::from_shared(self.url.clone()).unwrap().connect())
            .map_err(|e| tonic::Status::unavailable(e.to_string()))
    }

    pub fn try_list(&self) -> Result<pb::ListEdgesResponse, tonic::Status> {
        let mut c = pb::edge_service_client::EdgeServiceClient::new(self.channel()?);
        self.rt.block_on(c.list(req(pb::ListEdgesRequest {}))).map(|r| r.into_inner())
    }

    pub fn list(&self) -> pb::ListEdgesResponse {
        self.try_list().expect("EdgeService.List")
    }

    /// Waits until `n` edges are connected and have applied the current version.
    pub fn wait_converged(&self, n: usize) -> pb::ListEdgesResponse {
        until(Duration::from_secs(20), &format!("{n} converged edges"), || {
            let l = self.try_list().ok()?;
            (l.edges.len() == n && l.edges.iter().all(|e| e.applied_version == l.current_version)).then_some(l)
        })
    }

    /// Creates `abc` at `/vod/abc/` and publishes it.
    pub fn publish(&self) {
        let mut a = pb::asset_service_client::AssetServiceClient::new(self.channel().unwrap());
        let put = pb::PutAssetRequest { id: "abc".into(), path: "/vod/abc/".into(), entry: "master.m3u8".into() };
        self.rt.block_on(a.put(req(put))).unwrap();
        for state in [pb::AssetState::Ready, pb::AssetState::Published] {
            let r = pb::SetAssetStateRequest { id: "abc".into(), state: state.into(), expected_revision: 0 };
            self.rt.block_on(a.set_state(req(r))).unwrap();
        }
    }

    /// Mints a link for `abc`; returns it.
    pub fn mint(&self) -> pb::Link {
        let mut l = pb::link_service_client::LinkServiceClient::new(self.channel().unwrap());
        let r = pb::MintRequest { asset_id: "abc".into(), subject: "viewer-1".into(), ..Default::default() };
        self.rt.block_on(l.mint(req(r))).unwrap().into_inner().link.unwrap()
    }

    /// Revokes one token id; with `wait`, until every edge ACKed (10 s at most).
    pub fn revoke(&self, token_id: &str, wait: bool) -> pb::RevokeResponse {
        let mut c = pb::revocation_service_client::RevocationServiceClient::new(self.channel().unwrap());
        let r = pb::RevokeRequest {
            target: Some(pb::RevocationTarget {
                target: Some(pb::revocation_target::Target::TokenId(token_id.into())),
            }),
            reason: "test".into(),
            wait,
            wait_timeout_ms: 10_000,
        };
        self.rt.block_on(c.revoke(req(r))).unwrap().into_inner()
    }

    pub fn rotate(&self) -> pb::RotateKeyResponse {
        let mut c = pb::key_service_client::KeyServiceClient::new(self.channel().unwrap());
        self.rt.block_on(c.rotate(req(pb::RotateKeyRequest::default()))).unwrap().into_inner()
    }
}

fn req<T>(m: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(m);
    r.metadata_mut().insert("authorization", format!("Bearer {ADMIN}").parse().unwrap());
    r
}

/// The request target of a link's path form (`/_st/TOKEN/vod/abc/master.m3u8`).
pub fn target(link: &pb::Link) -> String {
    link.path_url.strip_prefix(BASE_URL).unwrap().to_owned()
}

// ---------------------------------------------------------------- edges

/// A `stile edge` in sync mode, killed on drop.
pub struct SyncEdge {
    pub id: String,
    pub port: u16,
    pub admin: u16,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub child: Child,
}

impl SyncEdge {
    /// Starts an edge following `endpoints`; `extra_state` goes into `[state]`.
    /// Waits until it is ready (it has a state).
    pub fn start(id: &str, origin: &Origin, endpoints: &[String], extra_state: &str) -> SyncEdge {
        let mut e = SyncEdge::spawn(id, origin, endpoints, extra_state);
        e.wait_ready();
        e
    }

    pub fn spawn(id: &str, origin: &Origin, endpoints: &[String], extra_state: &str) -> SyncEdge {
        let dir = tempfile::tempdir().unwrap();
        let (port, admin) = (free_port(), free_port());
        let endpoints: Vec<String> = endpoints.iter().map(|e| format!("{e:?}")).collect();
        let config = dir.path().join("edge.toml");
        std::fs::write(
            &config,
            format!(
                "listen = [\"127.0.0.1:{port}\"]\nadmin_listen = \"127.0.0.1:{admin}\"\nthreads = 1\n\
                 grace_period_secs = 1\ngraceful_shutdown_timeout_secs = 1\n\
                 pid_file = \"{d}/edge.pid\"\nupgrade_sock = \"{d}/upgrade.sock\"\n\
                 [diagnostics]\nreason_header = true\n[origin]\naddress = \"127.0.0.1:{o}\"\n\
                 [state]\nfile = \"{d}/cache.json\"\n{extra_state}\n\
                 [sync]\nendpoints = [{eps}]\napi_key = \"{EDGE_KEY}\"\nedge_id = \"{id}\"\n\
                 heartbeat_timeout_ms = 1500\nbackoff_initial_ms = 50\nbackoff_max_ms = 400\ncache_interval_ms = 100\n",
                d = dir.path().display(),
                o = origin.port,
                eps = endpoints.join(", "),
            ),
        )
        .unwrap();
        let child = spawn_edge(&config, dir.path());
        SyncEdge { id: id.into(), port, admin, dir, config, child }
    }

    pub fn wait_ready(&mut self) {
        until(Duration::from_secs(20), &format!("edge {} ready", self.id), || {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("edge exited early with {status}: {}", self.log());
            }
            let ready = get(self.admin, "/readyz", &[]).is_some_and(|r| r.status == 200);
            (ready && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()).then_some(())
        });
    }

    /// Restarts the process with the same configuration and directory.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn_edge(&self.config, self.dir.path());
    }

    pub fn get(&self, target: &str) -> Response {
        get(self.port, target, &[]).expect("edge answers")
    }

    /// One metric's value (first sample whose line starts with `name`).
    pub fn metric(&self, name: &str) -> Option<f64> {
        let body = get(self.admin, "/metrics", &[])?.body;
        let text = String::from_utf8(body).ok()?;
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("edge.log")).unwrap_or_default()
    }
}

fn spawn_edge(config: &Path, dir: &Path) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("edge.log")).unwrap();
    Command::new(env!("CARGO_BIN_EXE_stile"))
        .args(["edge", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

impl Drop for SyncEdge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
