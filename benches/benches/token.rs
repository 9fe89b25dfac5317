//! Token micro-costs: verify (valid, bad signature, malformed), signing, path
//! canonicalisation, and two reference HMAC implementations. The product's own
//! HMAC-SHA256 (pre-keyed `sha2::compress256` states, `stile_token::keys`) is
//! what `verify/mac` measures; `hmac_sha256_90B` puts RustCrypto `hmac` and
//! `ring` beside it for the same message size. `ed25519/*` measures version-2
//! (Ed25519) tokens through the same `verify`, and `ed25519_impls_100B` the two
//! Ed25519 implementations in the tree (`ed25519-dalek` strict, `ring`) on a
//! 100-byte message, with the public key prepared once as a verifier holds it.
//!
//! `session/*` compares a playback session credential's check (`verify_session`:
//! the link's key, the session tag over link + session part — which stands for an
//! HMAC link's own MAC —, the session's times, scope, IP, country, client binding)
//! with the same link's own `verify`, the two parses, and the cost of renewing a
//! session (`docs/sessions.md`).
//!
//! Run: `cargo bench -p stile-benches --bench token`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use stile_token::{
    Claims, Country, CountryRule, Ed25519Secret, IpBinding, KEY_LEN, KeyRing, Policy, Request, Scope, SecretKey,
    Session, SessionId, SessionPolicy, Token, TokenId, canonicalize_path, sign, sign_with_session, verify,
    verify_session,
};

const NOW: u64 = 1_800_000_000;

fn ring() -> KeyRing {
    let mut ring = KeyRing::new();
    ring.insert(1, &SecretKey::from_bytes([1; KEY_LEN]));
    ring.insert(2, &SecretKey::from_bytes([2; KEY_LEN]));
    ring
}

/// A typical production token: prefix scope, IPv4 binding, two countries, subject, channel.
fn typical_claims() -> Claims {
    Claims {
        key_id: 2,
        token_id: TokenId::from_u64(0x1122_3344_5566_7788),
        issued_at: NOW - 60,
        not_before: None,
        expires_at: NOW + 3600,
        scope: Scope::parse("/vod/4f7c2a9e/").unwrap(),
        ip: Some(IpBinding::for_client("203.0.113.9".parse().unwrap(), 32, 64).unwrap()),
        countries: Some(CountryRule::Allow(vec![Country::parse("DE").unwrap(), Country::parse("FR").unwrap()])),
        subject: Some("user-8c1f2d".into()),
        channel: Some("email".into()),
    }
}

fn bench_verify(c: &mut Criterion) {
    let ring = ring();
    let token = sign(&typical_claims(), &ring).unwrap();
    let mut bad = token.clone().into_bytes();
    let mid = bad.len() / 2;
    bad[mid] = if bad[mid] == b'A' { b'B' } else { b'A' };
    let bad = String::from_utf8(bad).unwrap();
    let req = Request {
        path: "/vod/4f7c2a9e/1080p/seg_00042.ts",
        client_ip: Some("203.0.113.9".parse().unwrap()),
        country: Country::parse("FR"),
        now: NOW,
    };
    let policy = Policy::default();
    assert!(verify(&token, &ring, &req, &policy).is_ok());
    println!("typical token: {} bytes", token.len());

    // A lean token: prefix scope, subject and channel (body 59 bytes: still
    // three SHA-256 compressions) and a minimal one (scope and channel: two).
    let lean = Claims { ip: None, countries: None, ..typical_claims() };
    let lean = sign(&lean, &ring).unwrap();
    let minimal = Claims { ip: None, countries: None, subject: None, ..typical_claims() };
    let minimal = sign(&minimal, &ring).unwrap();
    println!("lean token: {} bytes, minimal token: {} bytes", lean.len(), minimal.len());

    let mut g = c.benchmark_group("verify");
    g.bench_function("valid_minimal", |b| b.iter(|| verify(black_box(&minimal), &ring, black_box(&req), &policy)));
    g.bench_function("valid_lean", |b| b.iter(|| verify(black_box(&lean), &ring, black_box(&req), &policy)));
    g.bench_function("valid", |b| b.iter(|| verify(black_box(&token), &ring, black_box(&req), &policy)));
    g.bench_function("bad_signature", |b| b.iter(|| verify(black_box(&bad), &ring, black_box(&req), &policy)));
    g.bench_function("malformed", |b| {
        b.iter(|| verify(black_box("AQ-this-is-not*a-token"), &ring, black_box(&req), &policy))
    });
    g.finish();

    // The parts of a valid verify, to see where the time goes.
    let mut g = c.benchmark_group("verify_parts");
    g.bench_function("parse", |b| b.iter(|| Token::parse(black_box(&token))));
    let parsed = Token::parse(&token).unwrap();
    g.bench_function("mac", |b| b.iter(|| black_box(&parsed).verify_signature(&ring)));
    g.bench_function("checks", |b| b.iter(|| black_box(&parsed).check(black_box(&req), &policy)));
    g.finish();

    c.bench_function("sign/typical", |b| b.iter(|| sign(black_box(&typical_claims()), &ring)));
}

fn bench_session(c: &mut Criterion) {
    let ring = ring();
    let policy = SessionPolicy { idle_secs: 120, max_secs: 14_400, bind_v4: 24, bind_v6: 64 };
    let link = sign_with_session(&typical_claims(), Some(&policy), &ring).unwrap();
    let parsed = Token::parse(&link).unwrap();
    let client = "203.0.113.9".parse().ok();
    let session = stile_token::session::start(&parsed, SessionId(7), NOW - 30, 120, client, &ring).unwrap();
    // A request both admit (the link is still valid), so the two checks do the same work.
    let req = Request {
        path: "/vod/4f7c2a9e/1080p/seg_00042.ts",
        client_ip: client,
        country: Country::parse("FR"),
        now: NOW + 10,
    };
    let p = Policy::default();
    assert!(verify(&link, &ring, &req, &p).is_ok());
    assert!(verify_session(&session, &ring, &req, &p).is_ok());
    println!("session credential: {} bytes (link {} bytes)", session.len(), link.len());
    let mut g = c.benchmark_group("session");
    g.bench_function("link_verify", |b| b.iter(|| verify(black_box(&link), &ring, black_box(&req), &p)));
    g.bench_function("session_verify", |b| b.iter(|| verify_session(black_box(&session), &ring, black_box(&req), &p)));
    g.bench_function("link_parse", |b| b.iter(|| Token::parse(black_box(&link))));
    g.bench_function("session_parse", |b| b.iter(|| Session::parse(black_box(&session))));
    let s = Session::parse(&session).unwrap();
    g.bench_function("session_tag", |b| b.iter(|| black_box(&s).verify_mac(&ring)));
    g.bench_function("renew", |b| b.iter(|| black_box(&s).renew(&ring, black_box(NOW + 10), 120)));
    g.finish();
}

fn bench_canonicalize(c: &mut Criterion) {
    let mut g = c.benchmark_group("canonicalize");
    g.bench_function("plain", |b| b.iter(|| canonicalize_path(black_box(b"/vod/4f7c2a9e/1080p/seg_00042.ts"))));
    g.bench_function("encoded", |b| {
        b.iter(|| canonicalize_path(black_box(b"/vod/caf%c3%a9%20cr%C3%A8me/1080p/seg%5f00042.ts")))
    });
    g.bench_function("attack_rejected", |b| b.iter(|| canonicalize_path(black_box(b"/vod/4f7c2a9e/%2e%2e/secret"))));
    g.finish();
}

/// HMAC-SHA256 over a 90-byte message with a pre-keyed state: the references.
fn bench_hmac_impls(c: &mut Criterion) {
    use hmac::{Mac, digest::KeyInit};
    let msg = [0x5au8; 90];
    let mut g = c.benchmark_group("hmac_sha256_90B");
    let rc = <hmac::Hmac<sha2::Sha256> as KeyInit>::new(&[7u8; 64].into());
    g.bench_function("rustcrypto_prekeyed", |b| {
        b.iter(|| {
            let mut m = rc.clone();
            m.update(black_box(&msg));
            m.finalize().into_bytes()
        })
    });
    let rk = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[7u8; 32]);
    g.bench_function("ring_prekeyed", |b| b.iter(|| ring::hmac::sign(&rk, black_box(&msg))));
    g.finish();
}

/// Version-2 tokens: the typical claims signed with an Ed25519 key, verified
/// with the public key only (what an edge holds), against the HMAC token.
fn bench_ed25519(c: &mut Criterion) {
    let secret = Ed25519Secret::from_bytes([9; 32]);
    let mut signer = ring();
    signer.insert_ed25519_secret(3, &secret);
    let mut verifier = ring();
    verifier.insert_ed25519(3, &secret.public()).unwrap();
    let ed = sign(&Claims { key_id: 3, ..typical_claims() }, &signer).unwrap();
    let hmac = sign(&typical_claims(), &verifier).unwrap();
    println!("typical Ed25519 token: {} bytes", ed.len());
    let req = Request {
        path: "/vod/4f7c2a9e/1080p/seg_00042.ts",
        client_ip: Some("203.0.113.9".parse().unwrap()),
        country: Country::parse("FR"),
        now: NOW,
    };
    let policy = Policy::default();
    assert!(verify(&ed, &verifier, &req, &policy).is_ok());
    let mut g = c.benchmark_group("ed25519");
    g.bench_function("verify_valid", |b| b.iter(|| verify(black_box(&ed), &verifier, black_box(&req), &policy)));
    g.bench_function("hmac_verify_valid", |b| b.iter(|| verify(black_box(&hmac), &verifier, black_box(&req), &policy)));
    let parsed = Token::parse(&ed).unwrap();
    g.bench_function("signature_only", |b| b.iter(|| black_box(&parsed).verify_signature(&verifier)));
    // What the edge does for a viewer's next request: parse, the verified-signature
    // cache (a hit: SHA-256 of the token bytes and a lookup), the claim checks.
    let cache = stile_edge::verified::VerifiedCache::new(65_536);
    cache.verify(&parsed, &verifier).unwrap();
    g.bench_function("verify_cached", |b| {
        b.iter(|| {
            let t = Token::parse(black_box(&ed))?;
            cache.verify(&t, &verifier)?;
            t.check(black_box(&req), &policy)
        })
    });
    assert!(cache.hits() > 0);
    let claims = Claims { key_id: 3, ..typical_claims() };
    g.bench_function("sign", |b| b.iter(|| sign(black_box(&claims), &signer)));
    g.finish();
}

/// The two Ed25519 implementations in the dependency tree, verifying a
/// 100-byte message with a key prepared once.
fn bench_ed25519_impls(c: &mut Criterion) {
    use ed25519_dalek::Signer;
    let msg = [0x5au8; 100];
    let sk = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let sig = sk.sign(&msg);
    let vk = sk.verifying_key();
    let mut g = c.benchmark_group("ed25519_impls_100B");
    g.bench_function("dalek_verify_strict", |b| b.iter(|| vk.verify_strict(black_box(&msg), black_box(&sig))));
    g.bench_function("dalek_verify", |b| {
        b.iter(|| ed25519_dalek::Verifier::verify(&vk, black_box(&msg), black_box(&sig)))
    });
    let public = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, vk.to_bytes());
    let sig_bytes = sig.to_bytes();
    g.bench_function("ring_verify", |b| b.iter(|| public.verify(black_box(&msg), black_box(&sig_bytes))));
    g.bench_function("dalek_sign", |b| b.iter(|| sk.sign(black_box(&msg))));
    let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&[9; 32]).unwrap();
    g.bench_function("ring_sign", |b| b.iter(|| pair.sign(black_box(&msg))));
    g.finish();
}

criterion_group!(
    benches,
    bench_verify,
    bench_session,
    bench_canonicalize,
    bench_hmac_impls,
    bench_ed25519,
    bench_ed25519_impls
);
criterion_main!(benches);
