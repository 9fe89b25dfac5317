//! Checks every test vector in `docs/token-vectors.json` against this crate:
//! the verdict of each token and the canonical form of each path. The Python
//! verifier (`tests/python/verify_vectors.py`) checks the same file.

use serde::Deserialize;
use stile_token::{Country, KeyRing, Policy, Reason, Request, SecretKey, canonicalize_path, verify};

#[derive(Deserialize)]
struct File {
    version: u8,
    keys: Vec<Key>,
    policy: PolicyJson,
    vectors: Vec<Vector>,
    paths: Vec<PathVector>,
}

#[derive(Deserialize)]
struct Key {
    id: u32,
    secret_hex: String,
}

#[derive(Deserialize)]
struct PolicyJson {
    leeway_secs: u32,
    unknown_country: String,
}

#[derive(Deserialize)]
struct Vector {
    name: String,
    token: String,
    request: Req,
    expect: String,
    claims: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Req {
    path: String,
    client_ip: Option<String>,
    country: Option<String>,
    now: u64,
}

#[derive(Deserialize)]
struct PathVector {
    input: String,
    canonical: Option<String>,
}

fn load() -> File {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/token-vectors.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("read vectors")).expect("parse vectors")
}

#[test]
fn token_vectors() {
    let file = load();
    assert_eq!(file.version, stile_token::VERSION);
    assert_eq!(file.policy.unknown_country, "deny");
    let mut ring = KeyRing::new();
    for k in &file.keys {
        ring.insert(k.id, &SecretKey::from_slice(&hex::decode(&k.secret_hex).unwrap()).unwrap());
    }
    let policy = Policy { leeway_secs: file.policy.leeway_secs, ..Policy::default() };
    let mut failures = Vec::new();
    let mut reasons = std::collections::BTreeSet::new();
    for v in &file.vectors {
        let req = Request {
            path: &v.request.path,
            client_ip: v.request.client_ip.as_ref().map(|s| s.parse().unwrap()),
            country: v.request.country.as_deref().and_then(Country::parse),
            now: v.request.now,
        };
        let got = match verify(&v.token, &ring, &req, &policy) {
            Ok(t) => {
                let claims = v.claims.as_ref().expect("valid vectors list their claims");
                assert_eq!(claims["token_id"], t.token_id().to_string(), "{}", v.name);
                assert_eq!(claims["scope"], t.scope_path(), "{}", v.name);
                "ok".to_string()
            }
            Err(r) => r.as_str().to_string(),
        };
        reasons.insert(v.expect.clone());
        if got != v.expect {
            failures.push(format!("{}: expected {}, got {got}", v.name, v.expect));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    // Every reason the token crate decides has at least one vector.
    for r in [
        Reason::Malformed,
        Reason::UnknownKey,
        Reason::BadSignature,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::Scope,
        Reason::Ip,
        Reason::Geo,
    ] {
        assert!(reasons.contains(r.as_str()), "no vector for {r}");
    }
    assert!(reasons.contains("ok"));
}

#[test]
fn path_vectors() {
    for p in load().paths {
        let got = canonicalize_path(p.input.as_bytes()).ok().map(|c| c.into_owned());
        assert_eq!(got, p.canonical, "input {:?}", p.input);
    }
}
