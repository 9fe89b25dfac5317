//! Ed25519 signing keys through the gRPC API, on both stores (redb and a real
//! Redis): a policy with `algorithm = "ed25519"` mints version-2 links with the
//! ACTIVE Ed25519 key while HMAC policies keep their key; edges receive only
//! the public key (snapshot and deltas carry no private key byte); rotation
//! waits for the fleet's ACK, the old key keeps verifying, the active key of a
//! minting algorithm cannot be retired, a verify-only one can (and its links
//! are revoked by key). And the migration from HMAC: restarted with every
//! policy on Ed25519, the old HMAC key keeps verifying its links until it is
//! retired.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use prost::Message;
use stile_control::config::{Config, PolicyAlgorithm, StoreBackend};
use stile_control::model::SigningKey;
use stile_control::store::{RedisStore, Store};
use stile_proto::v1 as pb;
use stile_proto::v1::control_message::Kind as Cm;
use stile_proto::v1::edge_message::Kind as Em;
use stile_tests::redis::RedisServer;
use stile_token::{Algorithm, KeyRing, Policy, Reason, Request, Token, verify};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

const WAIT: Duration = Duration::from_secs(10);

/// `public` (the default policy) mints with Ed25519; `private` and `paid` stay HMAC.
fn with_ed25519_public(mut config: Config) -> Config {
    config.policies.get_mut("public").unwrap().algorithm = PolicyAlgorithm::Ed25519;
    config
}

/// A scripted edge on the sync stream.
struct Edge {
    out: mpsc::Sender<pb::EdgeMessage>,
    inbound: Streaming<pb::ControlMessage>,
}

impl Edge {
    async fn connect(channel: Channel) -> Edge {
        let (out, rx) = mpsc::channel(16);
        let hello = pb::EdgeHello {
            edge_id: "edge-a".into(),
            last_applied_version: 0,
            agent: "test".into(),
            chunked_snapshots: false,
        };
        out.send(pb::EdgeMessage { kind: Some(Em::Hello(hello)) }).await.unwrap();
        let mut client = pb::edge_service_client::EdgeServiceClient::new(channel);
        let inbound = client.sync(auth(ReceiverStream::new(rx), EDGE)).await.expect("sync opens").into_inner();
        Edge { out, inbound }
    }

    /// The next message that is not a heartbeat.
    async fn next(&mut self) -> Cm {
        loop {
            let msg = tokio::time::timeout(WAIT, self.inbound.message()).await.expect("in time").unwrap().unwrap();
            match msg.kind.expect("a kind") {
                Cm::Heartbeat(_) => continue,
                other => return other,
            }
        }
    }

    async fn ack(&self, version: u64) {
        self.out.send(pb::EdgeMessage { kind: Some(Em::Ack(pb::Ack { version })) }).await.unwrap();
    }
}

/// No stored Ed25519 private key appears anywhere in `bytes` (an encoded sync message).
fn holds_no_private_key(bytes: &[u8], keys: &[SigningKey]) {
    for k in keys.iter().filter(|k| k.algorithm == Algorithm::Ed25519) {
        let seed = k.secret.expose();
        assert!(!bytes.windows(seed.len()).any(|w| w == seed), "key {}'s private key was sent to an edge", k.id);
    }
}

/// An edge's ring from pushed key material alone.
fn ring_of(keys: &[pb::EdgeKey], ring: &mut KeyRing) {
    for k in keys {
        match k.algorithm() {
            pb::KeyAlgorithm::Ed25519 => {
                assert!(k.secret.is_empty(), "an Ed25519 key pushed with a secret");
                let public = stile_token::Ed25519Public::from_slice(&k.public_key).expect("32 bytes");
                ring.insert_ed25519(k.key_id, &public).expect("a valid public key");
            }
            _ => {
                assert!(k.public_key.is_empty());
                ring.insert(k.key_id, &stile_token::SecretKey::from_slice(&k.secret).expect("32 bytes"));
            }
        }
    }
}

fn mint(asset: &str, policy: &str) -> tonic::Request<pb::MintRequest> {
    let subject = if policy == "public" { String::new() } else { "viewer-1".into() };
    auth(pb::MintRequest { asset_id: asset.into(), policy: policy.into(), subject, ..Default::default() }, MINTER)
}

fn at(now: u64) -> Request<'static> {
    Request { path: "/vod/abc/seg.ts", client_ip: None, country: None, now }
}

/// The whole Ed25519 key life cycle against one store.
async fn lifecycle(channel: Channel, store: Arc<dyn Store>) {
    let mut keys = pb::key_service_client::KeyServiceClient::new(channel.clone());
    let mut links = pb::link_service_client::LinkServiceClient::new(channel.clone());
    let list = |k: &pb::KeyInfo| (k.key_id, k.algorithm(), k.state());
    let listed = keys.list(auth(pb::ListKeysRequest::default(), OPERATOR)).await.unwrap().into_inner().keys;
    assert_eq!(
        listed.iter().map(list).collect::<Vec<_>>(),
        [(1, pb::KeyAlgorithm::HmacSha256, pb::KeyState::Active), (2, pb::KeyAlgorithm::Ed25519, pb::KeyState::Active)],
        "start-up creates a key for each algorithm a policy mints with"
    );

    // The edge's snapshot: the HMAC secret, the Ed25519 public key, no private key.
    let mut edge = Edge::connect(channel.clone()).await;
    let Cm::Snapshot(snapshot) = edge.next().await else { panic!("expected a snapshot") };
    let stored = store.signing_keys().await.unwrap();
    holds_no_private_key(&snapshot.encode_to_vec(), &stored);
    let ed = snapshot.keys.iter().find(|k| k.key_id == 2).expect("key 2 pushed");
    assert_eq!(ed.algorithm(), pb::KeyAlgorithm::Ed25519);
    let expected = stored.iter().find(|k| k.id == 2).unwrap().verify_key();
    // With the key's session secret (docs/sessions.md), derived from the seed, not the seed.
    assert_eq!(
        stile_token::VerifyKey::Ed25519Session(
            stile_token::Ed25519Public::from_slice(&ed.public_key).unwrap(),
            stile_token::SecretKey::from_slice(&ed.session_secret).unwrap()
        ),
        expected
    );
    let mut ring = KeyRing::new();
    ring_of(&snapshot.keys, &mut ring);
    edge.ack(snapshot.version).await;

    // Policies choose: `public` mints version 2 with key 2, `private` HMAC with key 1.
    pb::asset_service_client::AssetServiceClient::new(channel.clone())
        .put(auth(pb::PutAssetRequest { id: "abc".into(), path: "/vod/abc/".into(), entry: "m.m3u8".into() }, OPERATOR))
        .await
        .unwrap();
    for state in [pb::AssetState::Ready, pb::AssetState::Published] {
        let req = pb::SetAssetStateRequest { id: "abc".into(), state: state.into(), expected_revision: 0 };
        pb::asset_service_client::AssetServiceClient::new(channel.clone())
            .set_state(auth(req, OPERATOR))
            .await
            .unwrap();
    }
    let old = links.mint(mint("abc", "public")).await.unwrap().into_inner().link.unwrap();
    assert_eq!(old.key_id, 2);
    let parsed = Token::parse(&old.token).unwrap();
    assert_eq!(parsed.algorithm(), Algorithm::Ed25519);
    assert_eq!(verify(&old.token, &ring, &at(T0 + 1), &Policy::default()).unwrap().key_id(), 2);
    let hmac = links.mint(mint("abc", "private")).await.unwrap().into_inner().link.unwrap();
    assert_eq!((hmac.key_id, Token::parse(&hmac.token).unwrap().algorithm()), (1, Algorithm::HmacSha256));

    // Rotation: the new Ed25519 key goes out PENDING (public key only), becomes
    // ACTIVE once this edge ACKs it; key 2 turns VERIFY_ONLY, the HMAC key stays ACTIVE.
    let rotate = {
        let mut keys = keys.clone();
        tokio::spawn(async move {
            let req = pb::RotateKeyRequest {
                reason: "quarterly".into(),
                algorithm: pb::KeyAlgorithm::Ed25519.into(),
                ..Default::default()
            };
            keys.rotate(auth(req, OPERATOR)).await.map(|r| r.into_inner())
        })
    };
    let Cm::Delta(pending) = edge.next().await else { panic!("expected a delta") };
    let change = pending.change.clone().unwrap();
    let Some(pb::change::Kind::Key(k)) = change.kind else { panic!("a key change") };
    assert_eq!((k.key_id, k.state(), k.algorithm()), (3, pb::KeyState::Pending, pb::KeyAlgorithm::Ed25519));
    let material = pending.key.clone().expect("material with the change");
    assert!(material.secret.is_empty() && material.public_key.len() == 32, "{material:?}");
    holds_no_private_key(&pending.encode_to_vec(), &store.signing_keys().await.unwrap());
    ring_of(&[material], &mut ring);
    edge.ack(change.version).await;
    let rotated = tokio::time::timeout(WAIT, rotate).await.unwrap().unwrap().unwrap();
    let new_key = rotated.key.unwrap();
    assert_eq!(
        (new_key.key_id, new_key.algorithm(), new_key.state()),
        (3, pb::KeyAlgorithm::Ed25519, pb::KeyState::Active)
    );
    assert_eq!(rotated.confirmation.unwrap().verdict(), pb::ConfirmationVerdict::Confirmed);
    let listed = keys.list(auth(pb::ListKeysRequest::default(), OPERATOR)).await.unwrap().into_inner().keys;
    assert_eq!(
        listed.iter().map(list).collect::<Vec<_>>(),
        [
            (1, pb::KeyAlgorithm::HmacSha256, pb::KeyState::Active),
            (2, pb::KeyAlgorithm::Ed25519, pb::KeyState::VerifyOnly),
            (3, pb::KeyAlgorithm::Ed25519, pb::KeyState::Active),
        ]
    );
    let fresh = links.mint(mint("abc", "public")).await.unwrap().into_inner().link.unwrap();
    assert_eq!(fresh.key_id, 3);
    for token in [&old.token, &fresh.token, &hmac.token] {
        verify(token, &ring, &at(T0 + 2), &Policy::default()).expect("every key still verifies");
    }

    // Retirement: the active key of an algorithm a policy mints with stays; a
    // verify-only key goes, and its links are revoked by key.
    let retire = |key_id| auth(pb::RetireKeyRequest { key_id, reason: "done".into() }, OPERATOR);
    assert_status(keys.retire(retire(3)).await, Code::FailedPrecondition, "active minting key");
    assert_status(keys.retire(retire(1)).await, Code::FailedPrecondition, "policies that mint with hmac-sha256");
    let out = keys.retire(retire(2)).await.unwrap().into_inner();
    assert_eq!(out.key.unwrap().state(), pb::KeyState::Retired);
    let revoked = out.revocation.unwrap().target.unwrap().target.unwrap();
    assert_eq!(revoked, pb::revocation_target::Target::KeyId(2));
    // The edge is told: the key leaves (retired), the revocation by key arrives.
    let mut retired_seen = false;
    while !retired_seen {
        if let Cm::Delta(d) = edge.next().await
            && let Some(pb::change::Kind::Key(k)) = d.change.and_then(|c| c.kind)
        {
            retired_seen = k.key_id == 2 && k.state() == pb::KeyState::Retired;
            assert!(d.key.is_none() || k.state() != pb::KeyState::Retired);
        }
    }
    ring.remove(2);
    assert_eq!(verify(&old.token, &ring, &at(T0 + 3), &Policy::default()).unwrap_err(), Reason::UnknownKey);
}

#[tokio::test]
async fn ed25519_keys_on_redb() {
    let dir = tempfile::tempdir().unwrap();
    let config = with_ed25519_public(config(dir.path()));
    let server = Server::start_with(config, dir, stile_control::ManualClock::new(T0)).await;
    lifecycle(server.channel().await, Arc::clone(&server.store) as Arc<dyn Store>).await;
    server.stop().await;
}

#[tokio::test]
async fn ed25519_keys_on_redis() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut config = with_ed25519_public(common::config(dir.path()));
    config.store.backend = StoreBackend::Redis;
    config.store.redis.url = redis.url();
    let reader = Arc::new(RedisStore::connect(&config.store.redis, 1_000).await.expect("connect"));
    let plane = Plane::open(config).await.expect("control plane");
    lifecycle(plane.channel.clone(), reader as Arc<dyn Store>).await;
    plane.stop().await;
}

/// Migrating a live store from HMAC to Ed25519: the policies move, the
/// control plane restarts, a new Ed25519 key mints; the HMAC key keeps
/// verifying its links (no failed playback) until the operator retires it —
/// allowed now that no policy mints with it — which revokes them.
#[tokio::test]
async fn migrating_from_hmac_keeps_old_links_until_the_key_is_retired() {
    let server = Server::start().await;
    server.published("abc", "/vod/abc/").await;
    let mut links = server.links().await;
    let old = links.mint(mint("abc", "public")).await.unwrap().into_inner().link.unwrap();
    assert_eq!((old.key_id, Token::parse(&old.token).unwrap().algorithm()), (1, Algorithm::HmacSha256));
    let (dir, clock) = server.stop().await;

    let mut config = config(dir.path());
    for p in config.policies.values_mut() {
        p.algorithm = PolicyAlgorithm::Ed25519;
    }
    let server = Server::start_with(config, dir, clock).await;
    let mut keys = server.keys().await;
    let listed = keys.list(auth(pb::ListKeysRequest::default(), OPERATOR)).await.unwrap().into_inner().keys;
    let states: Vec<_> = listed.iter().map(|k| (k.key_id, k.algorithm(), k.state())).collect();
    assert_eq!(
        states,
        [(1, pb::KeyAlgorithm::HmacSha256, pb::KeyState::Active), (2, pb::KeyAlgorithm::Ed25519, pb::KeyState::Active)]
    );
    let mut links = server.links().await;
    let new = links.mint(mint("abc", "public")).await.unwrap().into_inner().link.unwrap();
    assert_eq!((new.key_id, Token::parse(&new.token).unwrap().algorithm()), (2, Algorithm::Ed25519));
    let ring = server.ring().await;
    for token in [&old.token, &new.token] {
        verify(token, &ring, &at(T0 + 1), &Policy::default()).expect("old and new links verify");
    }
    // No policy mints with HMAC any more: its active key may be retired.
    let out = keys.retire(auth(pb::RetireKeyRequest { key_id: 1, reason: "moved to ed25519".into() }, OPERATOR)).await;
    let out = out.unwrap().into_inner();
    assert_eq!(out.key.unwrap().state(), pb::KeyState::Retired);
    assert_eq!(out.revocation.unwrap().target.unwrap().target.unwrap(), pb::revocation_target::Target::KeyId(1));
    let ring = server.ring().await;
    assert_eq!(verify(&old.token, &ring, &at(T0 + 2), &Policy::default()).unwrap_err(), Reason::UnknownKey);
    verify(&new.token, &ring, &at(T0 + 2), &Policy::default()).expect("the Ed25519 link verifies");
    server.stop().await;
}
