//! Checks every test vector in `docs/token-vectors.json` against this crate —
//! the verdict and claims of each token, the canonical form of each path — and
//! that the committed file is exactly what the generator writes. The generator
//! (`examples/gen_vectors.rs`, included below) writes each expectation by hand
//! from the spec's rules, so these are an oracle, not a recording. The Python
//! verifier (`tests/python/verify_vectors.py`) checks the same file.

#[path = "../examples/gen_vectors.rs"]
mod gen_vectors;

use serde::Deserialize;
use serde_json::{Value, json};
use stile_token::{
    Country, CountryRule, Ed25519Public, KeyRing, Policy, Reason, Request, SecretKey, Token, UnknownCountry,
    canonicalize_path, verify,
};

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/token-vectors.json");

#[derive(Deserialize)]
struct File {
    version: u8,
    keys: Vec<Key>,
    policy: PolicyJson,
    vectors: Vec<Vector>,
    sessions: Vec<SessionVector>,
    paths: Vec<PathVector>,
}

#[derive(Deserialize)]
struct SessionVector {
    name: String,
    credential: String,
    request: Req,
    expect: String,
    session: Option<Value>,
}

#[derive(Deserialize)]
struct Key {
    id: u32,
    algorithm: String,
    secret_hex: Option<String>,
    public_hex: Option<String>,
    private_hex: Option<String>,
    session_secret_hex: String,
}

#[derive(Deserialize)]
struct PolicyJson {
    leeway_secs: u32,
    unknown_country: String,
}

impl PolicyJson {
    fn policy(&self) -> Policy {
        let unknown_country = match self.unknown_country.as_str() {
            "allow" => UnknownCountry::Allow,
            "deny" => UnknownCountry::Deny,
            other => panic!("unknown policy {other}"),
        };
        Policy { leeway_secs: self.leeway_secs, unknown_country }
    }
}

#[derive(Deserialize)]
struct Vector {
    name: String,
    token: String,
    request: Req,
    policy: Option<PolicyJson>,
    expect: String,
    claims: Option<Value>,
}

#[derive(Deserialize)]
struct Req {
    path: String,
    client_ip: Option<String>,
    country: Option<String>,
    now: u64,
}

impl Req {
    /// The request a vector describes. Unparsable addresses count as unknown;
    /// countries follow the client rule of § 4.
    fn request(&self) -> Request<'_> {
        Request {
            path: &self.path,
            client_ip: self.client_ip.as_ref().and_then(|s| s.parse().ok()),
            country: self.country.as_deref().and_then(|c| Country::from_client(c.as_bytes())),
            now: self.now,
        }
    }
}

/// Records one vector's verdict: the expectation among the reasons seen, a mismatch as a failure.
fn tally(
    failures: &mut Vec<String>,
    reasons: &mut std::collections::BTreeSet<String>,
    name: &str,
    expect: &str,
    got: String,
) {
    reasons.insert(expect.to_owned());
    if got != expect {
        failures.push(format!("{name}: expected {expect}, got {got}"));
    }
}

#[derive(Deserialize)]
struct PathVector {
    input: String,
    canonical: Option<String>,
}

fn load() -> File {
    serde_json::from_str(&std::fs::read_to_string(VECTORS).expect("read vectors")).expect("parse vectors")
}

/// The claims JSON of § 6, from a parsed token.
fn claims_of(t: &Token) -> Value {
    let c = t.claims();
    json!({
        "key_id": c.key_id,
        "token_id": c.token_id.to_string(),
        "issued_at": c.issued_at,
        "not_before": c.not_before,
        "expires_at": c.expires_at,
        "scope": c.scope.path(),
        "scope_is_prefix": c.scope.is_prefix(),
        "ip": c.ip.map(|i| i.to_string()),
        "countries": c.countries.map(|r| match r {
            CountryRule::Allow(l) => json!({ "allow": l.iter().map(Country::to_string).collect::<Vec<_>>() }),
            CountryRule::Deny(l) => json!({ "deny": l.iter().map(Country::to_string).collect::<Vec<_>>() }),
        }),
        "subject": c.subject,
        "channel": c.channel,
    })
}

#[test]
fn committed_file_matches_the_generator() {
    let committed = std::fs::read_to_string(VECTORS).expect("read vectors");
    assert!(
        committed.trim_end() == gen_vectors::document(),
        "docs/token-vectors.json differs from the generator: \
         run `cargo run -p stile-token --example gen_vectors > docs/token-vectors.json`"
    );
}

#[test]
fn token_vectors() {
    let file = load();
    assert_eq!(file.version, stile_token::VERSION_ED25519);
    // A verifier's ring: HMAC secrets and Ed25519 public keys (never the private ones).
    let mut ring = KeyRing::new();
    for k in &file.keys {
        match k.algorithm.as_str() {
            "hmac-sha256" => {
                let secret = hex::decode(k.secret_hex.as_ref().unwrap()).unwrap();
                ring.insert(k.id, &SecretKey::from_slice(&secret).unwrap());
            }
            "ed25519" => {
                let public = hex::decode(k.public_hex.as_ref().unwrap()).unwrap();
                ring.insert_ed25519(k.id, &Ed25519Public::from_slice(&public).unwrap()).unwrap();
            }
            other => panic!("unknown algorithm {other}"),
        }
    }
    let mut failures = Vec::new();
    let mut reasons = std::collections::BTreeSet::new();
    for v in &file.vectors {
        let policy = v.policy.as_ref().unwrap_or(&file.policy).policy();
        let got = match verify(&v.token, &ring, &v.request.request(), &policy) {
            Ok(t) => {
                let claims = v.claims.as_ref().expect("valid vectors list their claims");
                if claims_of(&t) != *claims {
                    failures.push(format!("{}: claims {} != {claims}", v.name, claims_of(&t)));
                }
                "ok".to_string()
            }
            Err(r) => r.as_str().to_string(),
        };
        tally(&mut failures, &mut reasons, &v.name, &v.expect, got);
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
    assert!(file.vectors.len() >= 100, "only {} vectors", file.vectors.len());
}

/// The session vectors (§ 9.5), on a verifier's ring: HMAC keys (whose session
/// secret the ring derives itself) and Ed25519 public keys given their session secret.
#[test]
fn session_vectors() {
    let file = load();
    let mut ring = KeyRing::new();
    for k in &file.keys {
        let session = hex::decode(&k.session_secret_hex).unwrap();
        let material = hex::decode(k.secret_hex.as_ref().or(k.private_hex.as_ref()).unwrap()).unwrap();
        let derived = stile_token::derive_session_secret(&material.clone().try_into().unwrap());
        assert_eq!(derived.expose().as_slice(), session.as_slice(), "key {}: session secret not derived", k.id);
        match k.algorithm.as_str() {
            "hmac-sha256" => ring.insert(k.id, &SecretKey::from_slice(&material).unwrap()),
            _ => {
                let public = hex::decode(k.public_hex.as_ref().unwrap()).unwrap();
                ring.insert_ed25519(k.id, &Ed25519Public::from_slice(&public).unwrap()).unwrap();
                assert!(ring.set_session_secret(k.id, &SecretKey::from_slice(&session).unwrap()));
            }
        }
    }
    let policy = file.policy.policy();
    let mut failures = Vec::new();
    let mut reasons = std::collections::BTreeSet::new();
    for v in &file.sessions {
        let got = match stile_token::verify_session(&v.credential, &ring, &v.request.request(), &policy) {
            Ok(s) => {
                let c = s.claims();
                let p = s.policy();
                let seen = json!({
                    "session_id": c.id.to_string(),
                    "started_at": c.started_at,
                    "issued_at": c.issued_at,
                    "ttl": c.ttl,
                    "bind": c.bind.map(|b| b.to_string()),
                    "session_policy": { "idle_secs": p.idle_secs, "max_secs": p.max_secs, "bind_v4": p.bind_v4, "bind_v6": p.bind_v6 },
                    "link_token_id": s.link().token_id().to_string(),
                });
                if Some(&seen) != v.session.as_ref() {
                    failures.push(format!("{}: session {seen} != {:?}", v.name, v.session));
                }
                "ok".to_string()
            }
            Err(r) => r.as_str().to_string(),
        };
        tally(&mut failures, &mut reasons, &v.name, &v.expect, got);
    }
    assert!(failures.is_empty(), "{failures:#?}");
    for r in [
        "ok",
        "malformed",
        "unknown_key",
        "bad_signature",
        "expired",
        "not_yet_valid",
        "session_max",
        "session_expired",
        "scope",
        "ip",
        "geo",
    ] {
        assert!(reasons.contains(r), "no session vector for {r}");
    }
}

#[test]
fn path_vectors() {
    let paths = load().paths;
    assert!(paths.len() >= 80, "only {} path vectors", paths.len());
    for p in paths {
        let got = canonicalize_path(p.input.as_bytes()).ok().map(|c| c.into_owned());
        assert_eq!(got, p.canonical, "input {:?}", p.input);
    }
}
