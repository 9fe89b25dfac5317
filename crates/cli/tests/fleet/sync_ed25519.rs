//! Ed25519 links, real processes: a control plane whose policy mints with
//! Ed25519 and an edge in sync mode. The edge admits a minted link (and the
//! second request is a verified-signature cache hit), denies a tampered one
//! `bad_signature`, and denies the link `revoked` once its key is retired
//! (`stile keys rotate --algorithm ed25519`, `stile keys retire`); the edge's
//! state file holds the public key only — no byte of the private key, in any
//! encoding. Playback sessions on Ed25519 links (`docs/sessions.md`): the edge
//! receives each key's session secret over the push path, a session issued by
//! one edge plays on another past its link's expiry, and retiring the key ends
//! the session.

use std::process::Command;
use std::time::Duration;

use base64::Engine;
use stile_control::store::{RedbStore, Store as _};
use stile_tests::fleet::*;
use stile_tests::net::free_port;
use stile_tests::process::{stile_binary, until};
use stile_tests::token::{hex, now};
use stile_token::{Algorithm, Ed25519Public, KeyRing, Policy, Request, Token, verify};

/// Runs the `stile` client against the control plane with the admin key.
fn stile(control: &Control, args: &[&str]) -> (i32, String) {
    let out = Command::new(stile_binary())
        .args(args)
        .args(["--server", &control.url(), "--api-key", ADMIN])
        .output()
        .expect("run stile");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// The link's target with one character of the signature changed (the token
/// stays well-formed base64url of the same length).
fn tampered(target: &str) -> String {
    let token = target.strip_prefix("/_st/").unwrap().split('/').next().unwrap();
    let mut bytes = token.as_bytes().to_vec();
    let i = bytes.len() - 10;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    target.replacen(token, std::str::from_utf8(&bytes).unwrap(), 1)
}

#[test]
fn ed25519_links_at_a_synced_edge() {
    let (_content, origin) = content();
    let cp_dir = tempfile::tempdir().unwrap();
    let mut control =
        Control::launch_with(cp_dir.path(), free_port(), &Store::Redb, "[policies.public]\nalgorithm = \"ed25519\"\n");
    let ops = control.ops();
    ops.publish();
    let edge = SyncEdge::start("edge-1", &origin, &[control.url()], "");
    ops.wait_converged(1);

    // The only policy mints with Ed25519: key 1 is an Ed25519 key, the link is version 2.
    let (code, listed) = stile(&control, &["keys", "ls"]);
    assert_eq!(code, 0, "{listed}");
    assert!(listed.lines().next().unwrap().contains("ALGORITHM"), "{listed}");
    assert!(listed.lines().nth(1).unwrap().split_whitespace().take(3).eq(["1", "ed25519", "ACTIVE"]), "{listed}");
    let link = ops.mint();
    let token = Token::parse(&link.token).unwrap();
    assert_eq!((token.algorithm(), link.key_id), (Algorithm::Ed25519, 1));

    // Admitted; the second request skips the signature check (a cache hit).
    let hit = "stile_edge_verified_cache_lookups_total{result=\"hit\"}";
    for _ in 0..2 {
        let r = edge.get(&target(&link));
        assert_eq!(r.status, 200, "{}", edge.log());
    }
    assert_eq!(edge.metric(hit), Some(1.0));
    // A changed signature is denied, every time (a forgery never hits the cache).
    for _ in 0..2 {
        let r = edge.get(&tampered(&target(&link)));
        assert_eq!((r.status, r.header("x-stile-reason")), (403, Some("bad_signature")));
    }
    assert_eq!(edge.metric(hit), Some(1.0));

    // Rotate in a new Ed25519 key, then retire the old one: its link is denied `revoked`.
    let (code, out) = stile(&control, &["keys", "rotate", "--algorithm", "ed25519", "--reason", "test"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ed25519 key 2 is now ACTIVE"), "{out}");
    let fresh = ops.mint();
    assert_eq!(fresh.key_id, 2);
    assert_eq!(edge.get(&target(&fresh)).status, 200);
    let (code, out) = stile(&control, &["keys", "retire", "1", "--reason", "rotated"]);
    assert_eq!(code, 0, "{out}");
    until(Duration::from_secs(10), "the old link denied revoked", || {
        let r = edge.get(&target(&link));
        (r.status == 403).then(|| assert_eq!(r.header("x-stile-reason"), Some("revoked"), "{}", edge.log()))
    });
    assert_eq!(edge.get(&target(&fresh)).status, 200, "the new key's link still passes");

    // The edge's state file: key 2 as its public key only, which verifies the fresh link.
    let state_path = edge.dir.path().join("cache.json");
    let state = until(Duration::from_secs(10), "the state file with key 2 alone", || {
        let text = std::fs::read_to_string(&state_path).ok()?;
        let json: serde_json::Value = serde_json::from_str(&text).ok()?;
        (json["keys"].as_array()?.len() == 1).then_some((text, json))
    });
    let (text, json) = state;
    let entry = &json["keys"][0];
    assert_eq!((entry["id"].as_u64(), entry["algorithm"].as_str()), (Some(2), Some("ed25519")), "{text}");
    assert!(entry.get("secret").is_none(), "{text}");
    let public =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(entry["public_key"].as_str().unwrap()).unwrap();
    let mut ring = KeyRing::new();
    ring.insert_ed25519(2, &Ed25519Public::from_slice(&public).unwrap()).unwrap();
    let now = now();
    let req = Request { path: "/vod/abc/master.m3u8", client_ip: None, country: None, now };
    verify(&fresh.token, &ring, &req, &Policy::default()).expect("the state file's public key verifies the link");

    // No private key byte in it: the control plane's stored private keys, in any encoding.
    control.stop();
    let store = RedbStore::open(&cp_dir.path().join("control.redb")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let keys = rt.block_on(store.signing_keys()).unwrap();
    assert_eq!(keys.len(), 2);
    let file = std::fs::read(&state_path).unwrap();
    for k in &keys {
        let seed = k.secret.expose();
        let spellings = [
            hex(seed),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(seed),
            base64::engine::general_purpose::STANDARD.encode(seed),
        ];
        for s in &spellings {
            assert!(!text.contains(s.as_str()), "key {}'s private key is in the edge's state file", k.id);
        }
        assert!(!file.windows(seed.len()).any(|w| w == seed), "key {}'s private key bytes in the state file", k.id);
    }
}

/// The value of a response header, or a panic naming it.
fn header<'a>(r: &'a stile_tests::net::Response, name: &str) -> &'a str {
    r.header(name).unwrap_or_else(|| panic!("no {name} in {} {:?}", r.status, r.headers))
}

#[test]
fn ed25519_sessions_outlive_their_link_on_every_edge_until_the_key_retires() {
    let (_content, origin) = content();
    let cp_dir = tempfile::tempdir().unwrap();
    let policy = "[policies.public]\nalgorithm = \"ed25519\"\nttl_min_secs = 1\ndefault_ttl_secs = 2\n\
                  [policies.public.session]\nenabled = true\nidle_secs = 60\nmax_secs = 600\n";
    let mut control = Control::launch_with(cp_dir.path(), free_port(), &Store::Redb, policy);
    let ops = control.ops();
    ops.publish();
    let a = SyncEdge::start("edge-a", &origin, &[control.url()], "");
    let b = SyncEdge::start("edge-b", &origin, &[control.url()], "");
    ops.wait_converged(2);

    // A 2-second Ed25519 link; edge A answers the manifest with a redirect to its session.
    let link = ops.mint();
    let token = Token::parse(&link.token).unwrap();
    assert_eq!(token.algorithm(), Algorithm::Ed25519);
    assert!(token.session_policy().is_some(), "the policy's session rides in the signed link");
    let r = a.get(&target(&link));
    assert_eq!(r.status, 302, "{}", a.log());
    let location = header(&r, "location").to_owned();
    let credential = location.strip_prefix("/_st/").unwrap().split('/').next().unwrap().to_owned();
    assert!(credential.starts_with(&format!("{}.", link.token)), "{location}");
    let segment = location.replace("master.m3u8", "seg.ts");

    // Past the link's expiry and the edges' 5 s leeway: the link is dead, its session plays on, on edge B too.
    until(Duration::from_secs(30), "the link's expiry", || {
        let r = b.get(&target(&link).replace("master.m3u8", "seg.ts"));
        (r.status == 403).then(|| assert_eq!(r.header("x-stile-reason"), Some("expired")))
    });
    for edge in [&a, &b] {
        let r = edge.get(&segment);
        assert_eq!((r.status, r.header("x-stile-reason")), (200, None), "{}", edge.log());
    }

    // The state file holds key 1's session secret (the push path carried it), not its private key.
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(b.dir.path().join("cache.json")).unwrap()).unwrap();
    let secret = state["keys"][0]["session_secret"].as_str().unwrap_or_else(|| panic!("{state}"));
    assert!(!secret.is_empty());

    // Retiring the key ends the session on both edges.
    let (code, out) = stile(&control, &["keys", "rotate", "--algorithm", "ed25519", "--reason", "test"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = stile(&control, &["keys", "retire", "1", "--reason", "leaked"]);
    assert_eq!(code, 0, "{out}");
    for edge in [&a, &b] {
        until(Duration::from_secs(10), "the session denied once its key retired", || {
            let r = edge.get(&segment);
            (r.status == 403).then(|| assert_eq!(r.header("x-stile-reason"), Some("revoked"), "{}", edge.log()))
        });
    }
    control.stop();
}
