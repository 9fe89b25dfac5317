//! Test support: a real control plane on 127.0.0.1:0 with a redb file in a
//! temporary directory, a manual clock, one configured API key per role, and
//! tonic clients.

#![allow(dead_code, unreachable_pub)] // reason: each test binary uses a different subset.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, PKCS_ECDSA_P256_SHA256};
use stile_control::auth::{Role, hash_api_key};
use stile_control::config::ConfiguredKey;
use stile_control::model::KeyState;
use stile_control::store::{RedbStore, Store};
use stile_control::{Config, ControlPlane, ManualClock, ServeError};
use stile_proto::v1 as pb;
use stile_token::KeyRing;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// The test's start time, Unix seconds.
pub const T0: u64 = 1_800_000_000;

pub const ADMIN: &str = "stk_test-admin-key";
pub const OPERATOR: &str = "stk_test-operator-key";
pub const MINTER: &str = "stk_test-minter-key";
pub const EDGE: &str = "stk_test-edge-key";

/// A running control plane.
pub struct Server {
    pub addr: SocketAddr,
    pub clock: ManualClock,
    pub store: Arc<RedbStore>,
    pub dir: tempfile::TempDir,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ServeError>>,
    /// TLS for the test's clients when the server has `[tls]` (set by the test).
    pub tls: Option<tonic::transport::ClientTlsConfig>,
}

/// The configuration the tests use: one configured key per role.
pub fn config(dir: &std::path::Path) -> Config {
    let mut config = Config::default();
    config.store.path = dir.join("control.redb");
    config.links.default_base_url = "https://edge.test".into();
    config.links.max_batch = 2000;
    config.auth.keys = [
        ("admin", Role::Admin, ADMIN),
        ("ops", Role::Operator, OPERATOR),
        ("backend", Role::Minter, MINTER),
        ("edge-1", Role::Edge, EDGE),
    ]
    .into_iter()
    .map(|(name, role, key)| ConfiguredKey {
        name: name.into(),
        role,
        sha256: hex::encode(hash_api_key(key)),
        // The edge key may sync as any edge id; crates/cli/tests/fleet/push_trust.rs binds them.
        edge_ids: if role == Role::Edge { vec!["*".into()] } else { Vec::new() },
    })
    .collect();
    config
}

impl Server {
    /// A fresh server with an empty store.
    pub async fn start() -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        Server::start_in(dir, ManualClock::new(T0)).await
    }

    /// A server on an existing directory (restart).
    pub async fn start_in(dir: tempfile::TempDir, clock: ManualClock) -> Server {
        Server::start_with(config(dir.path()), dir, clock).await
    }

    /// A server with a custom configuration (its store path must lie in `dir`).
    pub async fn start_with(config: Config, dir: tempfile::TempDir, clock: ManualClock) -> Server {
        let store = Arc::new(RedbStore::open(&config.store.path).expect("open store"));
        let plane = ControlPlane::with_store(config, Arc::clone(&store) as Arc<dyn Store>, Arc::new(clock.clone()))
            .await
            .expect("control plane");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (shutdown, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(plane.serve(listener, async move {
            let _ = rx.await;
        }));
        Server { addr, clock, store, dir, shutdown, task, tls: None }
    }

    /// Stops gracefully and hands back the directory and clock for a restart.
    pub async fn stop(self) -> (tempfile::TempDir, ManualClock) {
        let _ = self.shutdown.send(());
        self.task.await.expect("server task").expect("server result");
        drop(self.store);
        (self.dir, self.clock)
    }

    /// The store's newest log version.
    pub async fn store_version(&self) -> u64 {
        self.store.version().await.expect("store version")
    }

    pub fn url(&self) -> String {
        match self.tls {
            Some(_) => format!("https://localhost:{}", self.addr.port()),
            None => format!("http://{}", self.addr),
        }
    }

    pub async fn channel(&self) -> Channel {
        let mut endpoint = Channel::from_shared(self.url()).unwrap();
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.clone()).unwrap();
        }
        endpoint.connect().await.expect("connect")
    }

    pub async fn links(&self) -> pb::link_service_client::LinkServiceClient<Channel> {
        pb::link_service_client::LinkServiceClient::new(self.channel().await).max_decoding_message_size(64 << 20)
    }

    pub async fn assets(&self) -> pb::asset_service_client::AssetServiceClient<Channel> {
        pb::asset_service_client::AssetServiceClient::new(self.channel().await)
    }

    pub async fn revocations(&self) -> pb::revocation_service_client::RevocationServiceClient<Channel> {
        pb::revocation_service_client::RevocationServiceClient::new(self.channel().await)
    }

    pub async fn purges(&self) -> pb::purge_service_client::PurgeServiceClient<Channel> {
        pb::purge_service_client::PurgeServiceClient::new(self.channel().await)
    }

    pub async fn keys(&self) -> pb::key_service_client::KeyServiceClient<Channel> {
        pb::key_service_client::KeyServiceClient::new(self.channel().await)
    }

    pub async fn audit(&self) -> pb::audit_service_client::AuditServiceClient<Channel> {
        pb::audit_service_client::AuditServiceClient::new(self.channel().await)
    }

    pub async fn edges(&self) -> pb::edge_service_client::EdgeServiceClient<Channel> {
        pb::edge_service_client::EdgeServiceClient::new(self.channel().await)
    }

    pub async fn api_keys(&self) -> pb::api_key_service_client::ApiKeyServiceClient<Channel> {
        pb::api_key_service_client::ApiKeyServiceClient::new(self.channel().await)
    }

    /// Every verifying key, read from the store (the API never returns secrets).
    pub async fn ring(&self) -> KeyRing {
        let mut ring = KeyRing::new();
        for k in self.store.signing_keys().await.unwrap() {
            if k.state != KeyState::Retired {
                // As an edge holds it: HMAC secrets, Ed25519 public keys.
                ring.insert_key(k.id, &k.verify_key()).expect("a valid key");
            }
        }
        ring
    }

    /// Creates an asset and moves it to PUBLISHED.
    pub async fn published(&self, id: &str, path: &str) -> pb::Asset {
        let mut assets = self.assets().await;
        let put = pb::PutAssetRequest { id: id.into(), path: path.into(), entry: "master.m3u8".into() };
        assets.put(auth(put, OPERATOR)).await.expect("put asset");
        let mut last = None;
        for state in [pb::AssetState::Ready, pb::AssetState::Published] {
            let req = pb::SetAssetStateRequest { id: id.into(), state: state.into(), expected_revision: 0 };
            last = assets.set_state(auth(req, OPERATOR)).await.expect("set state").into_inner().asset;
        }
        last.unwrap()
    }
}

/// A request with a bearer API key.
pub fn auth<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    req.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    req
}

/// Asserts a call failed with `code` and a message containing `needle`.
#[track_caller]
pub fn assert_status<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: tonic::Code, needle: &str) {
    match result {
        Ok(v) => panic!("expected {code:?} ({needle}), got Ok({v:?})"),
        Err(s) => {
            assert_eq!(s.code(), code, "message: {}", s.message());
            assert!(s.message().contains(needle), "{:?} should contain {needle:?}", s.message());
        }
    }
}

/// A control plane opened from its configuration (`ControlPlane::open`, so
/// any store backend), served on 127.0.0.1:0.
pub struct Plane {
    pub channel: Channel,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl Plane {
    pub async fn open(config: Config) -> Result<Plane, ServeError> {
        let plane = ControlPlane::open(config, Arc::new(ManualClock::new(T0))).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (shutdown, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(plane.serve(listener, async move {
            let _ = rx.await;
        }));
        let channel = Channel::from_shared(url).unwrap().connect().await.expect("connect");
        Ok(Plane { channel, shutdown: Some(shutdown), task })
    }

    pub fn links(&self) -> pb::link_service_client::LinkServiceClient<Channel> {
        pb::link_service_client::LinkServiceClient::new(self.channel.clone())
    }

    pub fn revocations(&self) -> pb::revocation_service_client::RevocationServiceClient<Channel> {
        pb::revocation_service_client::RevocationServiceClient::new(self.channel.clone())
    }

    pub fn audit(&self) -> pb::audit_service_client::AuditServiceClient<Channel> {
        pb::audit_service_client::AuditServiceClient::new(self.channel.clone())
    }

    /// Creates asset `id` and moves it to PUBLISHED.
    pub async fn publish(&self, id: &str) {
        let mut assets = pb::asset_service_client::AssetServiceClient::new(self.channel.clone());
        let put = pb::PutAssetRequest { id: id.into(), path: format!("/vod/{id}/"), entry: "master.m3u8".into() };
        assets.put(auth(put, OPERATOR)).await.expect("put asset");
        for state in [pb::AssetState::Ready, pb::AssetState::Published] {
            let req = pb::SetAssetStateRequest { id: id.into(), state: state.into(), expected_revision: 0 };
            assets.set_state(auth(req, OPERATOR)).await.expect("set state");
        }
    }

    /// Mints a link to `asset`.
    pub async fn mint(&self, asset: &str) -> Result<pb::Link, tonic::Status> {
        let req = pb::MintRequest { asset_id: asset.into(), ..Default::default() };
        self.links().mint(auth(req, MINTER)).await.map(|m| m.into_inner().link.expect("a link"))
    }

    /// Revokes one token id.
    pub async fn revoke(&self, token_id: &str) -> Result<pb::RevokeResponse, tonic::Status> {
        let target = pb::RevocationTarget { target: Some(pb::revocation_target::Target::TokenId(token_id.into())) };
        let req = pb::RevokeRequest { target: Some(target), reason: "leaked".into(), ..Default::default() };
        self.revocations().revoke(auth(req, OPERATOR)).await.map(|r| r.into_inner())
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), &mut self.task).await;
    }
}

/// A throwaway CA that writes PEM files into a directory.
pub struct Ca {
    dir: PathBuf,
    pub pem: PathBuf,
    params: CertificateParams,
    key: KeyPair,
}

impl Ca {
    pub fn new(dir: &Path, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let pem = dir.join(format!("{name}.pem"));
        std::fs::write(&pem, cert.pem()).unwrap();
        Ca { dir: dir.to_owned(), pem, params, key }
    }

    /// A leaf for `names`, as `<stem>.pem` and `<stem>.key`.
    pub fn leaf(&self, stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, names[0]);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = p.signed_by(&key, &Issuer::from_params(&self.params, &self.key)).unwrap();
        let (c, k) = (self.dir.join(format!("{stem}.pem")), self.dir.join(format!("{stem}.key")));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}
