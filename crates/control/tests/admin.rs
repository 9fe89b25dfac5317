//! The admin listener: /healthz, /readyz (503 once shutdown starts), /metrics with
//! RPC, mint and revocation counters recorded by the running server.

mod common;

use std::sync::Arc;

use common::*;
use stile_control::store::{RedbStore, Store};
use stile_control::{ControlPlane, ManualClock};
use stile_proto::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let (status, _, body) = request(addr, "GET", path).await;
    (status, body)
}

/// One request on its own connection, read until the server closes it:
/// status, lower-case head, body.
async fn request(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect admin");
    s.write_all(format!("{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .expect("the admin listener closes the connection after one answer")
        .unwrap();
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((out.as_str(), ""));
    (status, head.to_ascii_lowercase(), body.to_owned())
}

#[tokio::test]
async fn admin_listener_serves_health_readiness_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let store = Arc::new(RedbStore::open(&config.store.path).unwrap());
    let plane =
        ControlPlane::with_store(config, store as Arc<dyn Store>, Arc::new(ManualClock::new(T0))).await.unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (grpc_addr, admin_addr) = (grpc.local_addr().unwrap(), admin.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(plane.serve_with_admin(grpc, Some(admin), async move {
        let _ = stopped.await;
    }));

    assert_eq!(get(admin_addr, "/healthz").await, (200, "ok\n".into()));
    assert_eq!(get(admin_addr, "/readyz").await, (200, "ready\n".into()));
    assert_eq!(get(admin_addr, "/nope").await, (404, "not found\n".into()));
    assert_eq!(get(admin_addr, "/healthz?probe=1").await.0, 200, "the query is not part of the route");
    for (method, path) in [("POST", "/healthz"), ("DELETE", "/metrics"), ("POST", "/nope")] {
        assert_eq!(request(admin_addr, method, path).await.0, 405, "{method} {path}");
    }
    let (status, head, body) = request(admin_addr, "HEAD", "/healthz").await;
    assert_eq!((status, body.as_str()), (200, ""), "HEAD answers the head only");
    assert!(head.contains("connection: close") && head.contains("content-type: text/plain"), "{head}");

    let channel =
        tonic::transport::Channel::from_shared(format!("http://{grpc_addr}")).unwrap().connect().await.unwrap();
    let mut revocations = pb::revocation_service_client::RevocationServiceClient::new(channel.clone());
    let target = pb::RevocationTarget {
        target: Some(pb::revocation_target::Target::Subject(pb::SubjectTarget {
            subject: "viewer-1".into(),
            issued_before: 0,
        })),
    };
    let req = pb::RevokeRequest { target: Some(target), reason: "test".into(), ..Default::default() };
    revocations.revoke(auth(req.clone(), OPERATOR)).await.unwrap();
    let denied = revocations.revoke(auth(req, MINTER)).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    let mut links = pb::link_service_client::LinkServiceClient::new(channel);
    let mint = pb::MintRequest { asset_id: "nope".into(), channel: "email".into(), ..Default::default() };
    assert_status(links.mint(auth(mint, MINTER)).await, tonic::Code::NotFound, "asset \"nope\" does not exist");

    let (status, head, metrics) = request(admin_addr, "GET", "/metrics").await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/plain; version=0.0.4"), "{head}");
    for want in [
        r#"stile_control_rpcs_total{code="ok",method="RevocationService/Revoke"} 1"#,
        r#"stile_control_rpcs_total{code="permission_denied",method="RevocationService/Revoke"} 1"#,
        r#"stile_control_rpcs_total{code="not_found",method="LinkService/Mint"} 1"#,
        r#"stile_control_mints_total{channel="email",policy="public",result="error"} 1"#,
        r#"stile_control_revocations_total{kind="subject"} 1"#,
        "stile_control_edges_connected 0",
        r#"stile_control_edges_by_lag{lag="1001+"} 0"#,
        "stile_control_change_log_version 3",
        "stile_control_key_rollout_pending_seconds 0",
    ] {
        assert!(metrics.contains(want), "missing {want} in\n{metrics}");
    }
    assert!(metrics.contains("stile_control_store_commit_duration_seconds_count"), "{metrics}");

    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert!(tokio::net::TcpStream::connect(admin_addr).await.is_err(), "the admin listener stops with the server");
}
