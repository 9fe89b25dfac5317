//! A fleet for the push-path tests: a real `stile control` process (redb or
//! Redis store, optionally TLS), `stile edge` processes in sync mode following
//! it, and a blocking gRPC operator client with the admin key.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use stile_proto::v1 as pb;
use tonic::transport::Channel;

use crate::edge::{EdgeToml, Origin, wait_edge_ready};
use crate::net::{Response, free_port, get};
use crate::process::{signal, spawn_stile, until};
use crate::token::hex;

pub const ADMIN: &str = "stk_sync-test-admin";
pub const EDGE_KEY: &str = "stk_sync-test-edge";
pub const BASE_URL: &str = "http://edge.test";

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

/// Where a control plane keeps its state (the `[store]` section it is given).
#[derive(Clone, Debug)]
pub enum Store {
    /// The embedded redb file `control.redb` in the control plane's directory.
    Redb,
    /// A Redis server at this URL (`store.backend = "redis"`).
    Redis(String),
}

impl Store {
    fn section(&self, dir: &Path) -> String {
        match self {
            Store::Redb => format!("[store]\npath = \"{}/control.redb\"\n", dir.display()),
            Store::Redis(url) => format!("[store]\nbackend = \"redis\"\n[store.redis]\nurl = \"{url}\"\n"),
        }
    }
}

/// A running `stile control`, killed on drop. Its configuration and log live in
/// `dir`, kept across restarts (and, with the redb store, the store file).
#[derive(Debug)]
pub struct Control {
    pub port: u16,
    /// The admin listener (`/metrics`).
    pub admin: u16,
    pub dir: PathBuf,
    pub child: Child,
    config: PathBuf,
    /// The directory when the control plane made it itself.
    _tmp: Option<tempfile::TempDir>,
    /// TLS for the operator client when it serves gRPC over TLS (`[tls]`).
    pub tls: Option<tonic::transport::ClientTlsConfig>,
}

impl Control {
    /// Starts a control plane storing into `dir` (kept across restarts).
    pub fn start(dir: &Path) -> Control {
        Control::start_on(dir, free_port())
    }

    /// Starts (or restarts) on a given port.
    pub fn start_on(dir: &Path, port: u16) -> Control {
        Control::launch(dir, port, &Store::Redb)
    }

    /// Starts a control plane on Redis, with a temporary directory of its own.
    pub fn start_redis(url: &str) -> Control {
        let tmp = tempfile::tempdir().unwrap();
        let mut c = Control::launch(tmp.path(), free_port(), &Store::Redis(url.into()));
        c._tmp = Some(tmp);
        c
    }

    /// Writes the configuration (`store` as its store section) and starts it; waits until it answers.
    pub fn launch(dir: &Path, port: u16, store: &Store) -> Control {
        Control::launch_with(dir, port, store, "")
    }

    /// [`Control::launch`] with `extra` TOML after the `[sync]` settings: bare
    /// `key = value` lines go into `[sync]`, then any tables (`[auth]` fields
    /// included; the `[[auth.keys]]` entries follow).
    pub fn launch_with(dir: &Path, port: u16, store: &Store, extra: &str) -> Control {
        Control::launch_as(dir, port, store, extra, None)
    }

    /// [`Control::launch_with`] on redb for a control plane whose `extra` has a
    /// `[tls]` table; the operator client connects with `tls` to `https://127.0.0.1:PORT`.
    pub fn launch_tls(dir: &Path, port: u16, extra: &str, tls: tonic::transport::ClientTlsConfig) -> Control {
        Control::launch_as(dir, port, &Store::Redb, extra, Some(tls))
    }

    fn launch_as(
        dir: &Path,
        port: u16,
        store: &Store,
        extra: &str,
        tls: Option<tonic::transport::ClientTlsConfig>,
    ) -> Control {
        let key = |name: &str, role: &str, key: &str| {
            format!(
                "[[auth.keys]]\nname = \"{name}\"\nrole = \"{role}\"\nsha256 = \"{}\"\n{}",
                hex(&stile_control::auth::hash_api_key(key)),
                // The shared edge key may sync as any id (crates/cli/tests/fleet/push_trust.rs binds its own keys).
                if role == "edge" { "edge_ids = [\"*\"]\n" } else { "" }
            )
        };
        let config = dir.join("control.toml");
        let admin = free_port();
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\
                 {store}[links]\ndefault_base_url = \"{BASE_URL}\"\n\
                 [sync]\nheartbeat_interval_ms = 200\nkey_activation_timeout_secs = 10\n{extra}\n{admin_key}{edge_key}",
                store = store.section(dir),
                admin_key = key("admin", "admin", ADMIN),
                edge_key = key("edges", "edge", EDGE_KEY),
            ),
        )
        .unwrap();
        let child = spawn_control(&config, dir, &[]);
        let mut c = Control { port, admin, dir: dir.to_owned(), child, config, _tmp: None, tls };
        c.wait_up();
        c
    }

    /// Waits until it answers gRPC; panics with its log if it exits meanwhile.
    pub fn wait_up(&mut self) {
        let ops = self.ops();
        until(Duration::from_secs(20), "the control plane", || {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("control plane exited with {status}: {}", self.log());
            }
            ops.try_list().ok()
        });
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn ops(&self) -> Ops {
        let mut ops = Ops::new(&self.url());
        ops.tls = self.tls.clone();
        ops
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("control.log")).unwrap_or_default()
    }

    /// One metric's value from its admin listener (first sample whose line starts with `name`).
    pub fn metric(&self, name: &str) -> Option<f64> {
        crate::net::metric(self.admin, name)
    }

    /// SIGKILL, and wait for it.
    pub fn kill(&mut self) {
        signal(self.child.id(), "KILL");
        let _ = self.child.wait();
    }

    /// SIGTERM (a graceful stop: the store is closed cleanly), and wait for it (10 s, then SIGKILL).
    pub fn stop(&mut self) {
        signal(self.child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                self.kill();
                panic!("the control plane did not stop on SIGTERM within 10 s: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, then start again with the same configuration and port; waits until it answers.
    pub fn restart(&mut self) {
        self.restart_under(&[]);
    }

    /// Like [`Control::restart`], with the command run through `wrapper`
    /// (e.g. `prlimit --fsize=N --`), which must `exec` it.
    pub fn restart_under(&mut self, wrapper: &[&str]) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn_control(&self.config, &self.dir, wrapper);
        self.wait_up();
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_control(config: &Path, dir: &Path, wrapper: &[&str]) -> Child {
    spawn_stile("control", config, &[], append(&dir.join("control.log")), wrapper)
}

/// `path` opened for appending (a restarted process's log follows the previous one's).
fn append(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap()
}

// ---------------------------------------------------------------- operator client

/// A blocking gRPC client with the admin key.
#[derive(Debug)]
pub struct Ops {
    rt: tokio::runtime::Runtime,
    url: String,
    /// TLS for an `https://` control plane.
    pub tls: Option<tonic::transport::ClientTlsConfig>,
}

impl Ops {
    pub fn new(url: &str) -> Ops {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        Ops { rt, url: url.to_owned(), tls: None }
    }

    fn channel(&self) -> Result<Channel, tonic::Status> {
        let mut endpoint = Channel::from_shared(self.url.clone()).unwrap();
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.clone()).unwrap();
        }
        self.rt.block_on(endpoint.connect()).map_err(|e| tonic::Status::unavailable(e.to_string()))
    }

    pub fn try_list(&self) -> Result<pb::ListEdgesResponse, tonic::Status> {
        let mut c = pb::edge_service_client::EdgeServiceClient::new(self.channel()?);
        self.rt.block_on(c.list(req(pb::ListEdgesRequest::default()))).map(|r| r.into_inner())
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
        self.try_revoke(token_id, wait, 10_000).expect("RevocationService.Revoke")
    }

    /// Revokes one token id; with `wait`, until every connected edge ACKed (`wait_ms` at most).
    /// The whole call is bounded (`wait_ms` + 10 s): a hang is an error.
    pub fn try_revoke(&self, token_id: &str, wait: bool, wait_ms: u32) -> Result<pb::RevokeResponse, tonic::Status> {
        let mut c = pb::revocation_service_client::RevocationServiceClient::new(self.channel()?);
        let r = pb::RevokeRequest {
            target: Some(pb::RevocationTarget {
                target: Some(pb::revocation_target::Target::TokenId(token_id.into())),
            }),
            reason: "test".into(),
            wait,
            wait_timeout_ms: wait_ms,
            expect: None,
        };
        let limit = Duration::from_millis(u64::from(wait_ms)) + Duration::from_secs(10);
        match self.rt.block_on(async { tokio::time::timeout(limit, c.revoke(req(r))).await }) {
            Ok(r) => r.map(|r| r.into_inner()),
            Err(_) => Err(tonic::Status::deadline_exceeded(format!("Revoke did not answer within {limit:?}"))),
        }
    }

    /// Revokes the links under `prefix` issued before `issued_before` (Unix seconds, 0: now),
    /// with `purge`; waits until every connected edge ACKed (10 s at most).
    pub fn revoke_prefix(&self, prefix: &str, issued_before: u64, purge: bool) -> pb::RevokeResponse {
        let mut c = pb::revocation_service_client::RevocationServiceClient::new(self.channel().unwrap());
        let target = pb::revocation_target::Target::PathPrefix(pb::PathPrefixTarget {
            prefix: prefix.into(),
            issued_before,
            purge,
        });
        let r = pb::RevokeRequest {
            target: Some(pb::RevocationTarget { target: Some(target) }),
            reason: "test".into(),
            wait: true,
            wait_timeout_ms: 10_000,
            expect: None,
        };
        self.rt.block_on(c.revoke(req(r))).expect("RevocationService.Revoke").into_inner()
    }

    /// Every revocation in force (all pages).
    pub fn revocations(&self) -> Vec<pb::Revocation> {
        let mut c = pb::revocation_service_client::RevocationServiceClient::new(self.channel().unwrap());
        let mut all: Vec<pb::Revocation> = Vec::new();
        loop {
            let after_version = all.last().map_or(0, |r| r.version);
            let page = pb::ListRevocationsRequest { after_version, limit: 1000 };
            let page = self.rt.block_on(c.list(req(page))).expect("RevocationService.List").into_inner();
            if page.revocations.is_empty() {
                return all;
            }
            all.extend(page.revocations);
        }
    }

    /// The newest audit events of one action (up to 100).
    pub fn audit(&self, action: pb::AuditAction) -> Vec<pb::AuditEvent> {
        let mut c = pb::audit_service_client::AuditServiceClient::new(self.channel().unwrap());
        let r = pb::ListAuditRequest { action: action.into(), ..Default::default() };
        self.rt.block_on(c.list(req(r))).expect("AuditService.List").into_inner().events
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
#[derive(Debug)]
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
        SyncEdge::spawn_with(id, origin, endpoints, extra_state, "")
    }

    /// [`SyncEdge::spawn`] with `extra_sync` lines in `[sync]` (e.g. `ca_file`).
    pub fn spawn_with(
        id: &str,
        origin: &Origin,
        endpoints: &[String],
        extra_state: &str,
        extra_sync: &str,
    ) -> SyncEdge {
        let EdgeFiles { dir, port, admin, config } =
            EdgeFiles::write_with(id, origin, endpoints, extra_state, extra_sync);
        let child = spawn_edge(&config, dir.path());
        SyncEdge { id: id.into(), port, admin, dir, config, child }
    }

    /// Waits (20 s at most) until it is ready (it has a state) and its proxy port accepts.
    pub fn wait_ready(&mut self) {
        let dir = self.dir.path();
        let what = format!("edge {}", self.id);
        wait_edge_ready(&mut self.child, self.port, self.admin, &what, || {
            std::fs::read_to_string(dir.join("edge.log")).unwrap_or_default()
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
        crate::net::metric(self.admin, name)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("edge.log")).unwrap_or_default()
    }
}

/// An edge's directory and configuration in sync mode (ports chosen, nothing started).
#[derive(Debug)]
pub struct EdgeFiles {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub admin: u16,
    pub config: PathBuf,
}

impl EdgeFiles {
    /// Writes `edge.toml` for an edge following `endpoints`; `extra_state` goes into `[state]`.
    pub fn write(id: &str, origin: &Origin, endpoints: &[String], extra_state: &str) -> EdgeFiles {
        EdgeFiles::write_with(id, origin, endpoints, extra_state, "")
    }

    /// [`EdgeFiles::write`] with `extra_sync` lines at the end of `[sync]`.
    pub fn write_with(
        id: &str,
        origin: &Origin,
        endpoints: &[String],
        extra_state: &str,
        extra_sync: &str,
    ) -> EdgeFiles {
        let dir = tempfile::tempdir().unwrap();
        let (port, admin) = (free_port(), free_port());
        let config = EdgeToml {
            state_extra: extra_state.into(),
            heartbeat_timeout_ms: Some(1500),
            backoff_ms: Some((50, 400)),
            cache_interval_ms: Some(100),
            sync_extra: extra_sync.into(),
            ..EdgeToml::new(dir.path(), port, admin, origin.port, endpoints, EDGE_KEY, id)
        }
        .write()
        .unwrap();
        EdgeFiles { dir, port, admin, config }
    }
}

fn spawn_edge(config: &Path, dir: &Path) -> Child {
    spawn_stile("edge", config, &[], append(&dir.join("edge.log")), &[])
}

impl Drop for SyncEdge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------- a fleet

/// The common setup: content and its origin, a control plane on a fresh redb
/// store with asset `abc` published, and edges `edge-1`…`edge-n` following it,
/// converged. Everything stops on drop.
#[derive(Debug)]
pub struct Fleet {
    pub edges: Vec<SyncEdge>,
    pub ops: Ops,
    pub control: Control,
    pub origin: Origin,
    pub cp_dir: tempfile::TempDir,
    _content: tempfile::TempDir,
}

impl Fleet {
    pub fn start(n: usize) -> Fleet {
        let (content, origin) = content();
        let cp_dir = tempfile::tempdir().unwrap();
        let control = Control::start(cp_dir.path());
        let ops = control.ops();
        ops.publish();
        let edges: Vec<SyncEdge> =
            (1..=n).map(|i| SyncEdge::start(&format!("edge-{i}"), &origin, &[control.url()], "")).collect();
        ops.wait_converged(n);
        Fleet { edges, ops, control, origin, cp_dir, _content: content }
    }

    /// Starts one more edge following the control plane.
    pub fn edge(&self, id: &str, extra_state: &str) -> SyncEdge {
        SyncEdge::start(id, &self.origin, &[self.control.url()], extra_state)
    }
}
