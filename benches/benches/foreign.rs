//! Foreign token formats: locate + verify per format (the edge's per-request
//! cost for a migrated link), and the Ed25519 implementations side by side
//! (the choice of `ed25519-dalek` over `ring` for Media CDN is made from
//! these figures), including the first verification under a key, which
//! pays for decompressing the public key. `edge_foreign/*`: the same Akamai
//! link through the edge (`Validator::validate`, whose verdict is `missing`,
//! then `ForeignGate::judge` against a state holding the key), beside a Stile
//! query token through `Validator::validate` alone, in the same run.
//!
//! Run: `cargo bench -p stile-benches --bench foreign`

use std::hint::black_box;

use base64::Engine as _;
use criterion::{Criterion, criterion_group, criterion_main};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use stile_foreign::akamai::{self, Claims};
use stile_foreign::{Config, Format, Key, KeyEncoding, Keys, Request, bunny, nginx};

const NOW: u64 = 1_700_000_000;

fn request<'a>(scheme: &'a str, host: &'a str, now: u64) -> Request<'a> {
    let mut r = Request::new(scheme, host, now);
    r.client_ip = Some("203.0.113.9".parse().unwrap());
    r.country = stile_foreign::Country::parse("CA");
    r
}

/// Benchmarks locate + verify, and verify alone, for one admitted link.
fn rows(c: &mut Criterion, name: &str, cfg: &Config, keys: &Keys, target: &str, cookie: &str, req: &Request<'_>) {
    let cookies: Vec<&[u8]> = if cookie.is_empty() { vec![] } else { vec![cookie.as_bytes()] };
    let found = cfg.locate(target.as_bytes(), &cookies).unwrap().unwrap();
    cfg.verify(&found, keys, req).unwrap_or_else(|r| panic!("{name}: {r}"));
    c.bench_function(&format!("foreign/{name}/locate+verify"), |b| {
        b.iter(|| {
            let f = cfg.locate(black_box(target.as_bytes()), &cookies).unwrap().unwrap();
            black_box(cfg.verify(&f, keys, req).is_ok())
        })
    });
    c.bench_function(&format!("foreign/{name}/verify"), |b| {
        b.iter(|| black_box(cfg.verify(black_box(&found), keys, req).is_ok()))
    });
}

const AKAMAI_KEY: &str = "52a152a152a152a152a152a152a1";

/// Akamai: an ACL token with st, exp, id, in the query string (`hdnts`).
fn akamai_link() -> (akamai::Config, Keys, String) {
    let acfg = akamai::Config { token_name: "hdnts".into(), ..akamai::Config::default() };
    let akeys = Keys::new(vec![Key::parse_secret("primary", AKAMAI_KEY, KeyEncoding::Hex).unwrap()]).unwrap();
    let claims = Claims {
        start: Some(NOW - 60),
        expires: NOW + 3600,
        acl: Some("/vod/4f7c2a9e/*"),
        id: Some("s-1"),
        ..Default::default()
    };
    let tok = akamai::sign(&acfg, akeys.iter().next().unwrap(), &claims).unwrap();
    (acfg, akeys, format!("/vod/4f7c2a9e/1080p/seg_00042.ts?hdnts={tok}"))
}

fn bench_formats(c: &mut Criterion) {
    let (acfg, akeys, target) = akamai_link();
    rows(c, "akamai-sha256", &Config::Akamai(acfg), &akeys, &target, "", &request("https", "h", NOW));

    // Cloud CDN: Google's published example signed URL (HMAC-SHA1).
    let ckeys =
        Keys::new(vec![Key::parse_secret("my-key", "nZtRohdNF9m3cKM24IcK4w==", KeyEncoding::Base64).unwrap()]).unwrap();
    let target =
        "/some/path?some=query&another=param&Expires=1549751401&KeyName=my-key&Signature=9Q9TCxSju8-W5nUkk5CuTrun2_o=";
    rows(
        c,
        "cloud-cdn-url",
        &Config::default_for(Format::CloudCdn),
        &ckeys,
        target,
        "",
        &request("http", "www.example.com", 1_549_751_400),
    );

    // Media CDN: Google's published example URL prefix (Ed25519) and dual tokens.
    let seed =
        base64::engine::general_purpose::URL_SAFE.decode("BxwXXNjeGaoWqjr7GHEymRJkP4SaOC12dTGixk7Yr8I=").unwrap();
    let sk = SigningKey::from_bytes(&seed.try_into().unwrap());
    let mkeys = Keys::new(vec![Key::ed25519_public("my-key", sk.verifying_key().as_bytes()).unwrap()]).unwrap();
    let target = "/some/path?some=query&another=param&URLPrefix=aHR0cDovL3d3dy5leGFtcGxlLmNvbS9zb21lLw==&Expires=1650848400&KeyName=my-key&Signature=pVN8HKc6Be-PDczd9NjqSui3HHaoCLUN5iDv6JhQ77uKigsCih6z_cMTGjeXhgGASh1zr-ZPrOnxWJxxGWxsBg==";
    let media = Config::default_for(Format::MediaCdn);
    rows(c, "media-cdn-prefix-ed25519", &media, &mkeys, target, "", &request("http", "www.example.com", 1_650_848_399));
    let dkeys = Keys::new(vec![
        Key::parse_secret("s", "g_SlMILiIWKqsC6Z2L7gy0sReDOqtSrJrE7CXNr5Nl8=", KeyEncoding::Base64).unwrap(),
    ])
    .unwrap();
    let target = "/example.m3u8?edge-cache-token=PathGlobs=/*~Expires=1663070400~hmac=9439ecdd5c4919f76f915dea72afa85a045579794e63d8cda664f5a1140c8d93";
    rows(c, "media-cdn-dual-hmac-sha256", &media, &dkeys, target, "", &request("http", "10.20.30.40", 1_663_070_000));

    // Bunny: a directory token bound to an IPv4 address and two countries.
    let secret = b"SecurityKey";
    let bkeys = Keys::new(vec![Key::secret("zone", secret).unwrap()]).unwrap();
    let target = bunny::sign(
        secret,
        &bunny::Claims {
            path: "/vod/4f7c2a9e/1080p/seg_00042.ts",
            expires: NOW + 3600,
            token_path: Some("/vod/4f7c2a9e/"),
            countries: Some("CA,US"),
            ip: Some("203.0.113.9".parse().unwrap()),
            ..Default::default()
        },
    );
    rows(
        c,
        "bunny-ip-countries",
        &Config::Bunny(bunny::Config::default()),
        &bkeys,
        &target,
        "",
        &request("https", "h", NOW),
    );

    // nginx secure_link with the documentation's expression.
    let nkeys = Keys::new(vec![Key::secret("n", b"secret").unwrap()]).unwrap();
    let md5 = nginx::sign_default(b"secret", NOW + 3600, "/vod/4f7c2a9e/1080p/seg_00042.ts", "203.0.113.9");
    let target = format!("/vod/4f7c2a9e/1080p/seg_00042.ts?md5={md5}&expires={}", NOW + 3600);
    rows(
        c,
        "nginx-secure-link",
        &Config::default_for(Format::NginxSecureLink),
        &nkeys,
        &target,
        "",
        &request("https", "h", NOW),
    );
}

/// Ed25519 verification of a 120-byte signed value: ed25519-dalek with the
/// key decompressed once (what a key ring holds), dalek decompressing per
/// call (a first request under a key), and ring (which decompresses per call).
fn bench_ed25519(c: &mut Criterion) {
    let sk = SigningKey::from_bytes(&[7u8; 32]);
    let pk = sk.verifying_key().to_bytes();
    let msg = [b'x'; 120];
    let sig = sk.sign(&msg).to_bytes();
    let vk = VerifyingKey::from_bytes(&pk).unwrap();
    let dsig = ed25519_dalek::Signature::from_bytes(&sig);
    c.bench_function("ed25519/dalek-verify_strict-cached-key", |b| {
        b.iter(|| black_box(vk.verify_strict(black_box(&msg), &dsig).is_ok()))
    });
    c.bench_function("ed25519/dalek-first-verify (key decompression + verify_strict)", |b| {
        b.iter(|| {
            let vk = VerifyingKey::from_bytes(black_box(&pk)).unwrap();
            black_box(vk.verify_strict(black_box(&msg), &dsig).is_ok())
        })
    });
    let ring_pk = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, pk);
    c.bench_function("ed25519/ring-verify", |b| b.iter(|| black_box(ring_pk.verify(black_box(&msg), &sig).is_ok())));
    c.bench_function("ed25519/foreign-key-load (Key::ed25519_public)", |b| {
        b.iter(|| black_box(Key::ed25519_public("k", black_box(&pk)).is_ok()))
    });
}

/// An Akamai query link through the edge's two steps, and a Stile query token through one.
fn bench_edge(c: &mut Criterion) {
    use stile_edge::EdgeConfig;
    use stile_edge::foreign::{ForeignConfig, ForeignGate, ForeignInput};
    use stile_edge::state::{ForeignKeyEntry, ForeignKeys, State};
    use stile_edge::validate::{Input, Validator};
    use stile_token::{KEY_LEN, KeyRing, Reason, SecretKey};

    let (acfg, _, akamai_target) = akamai_link();
    let mut ring = KeyRing::new();
    ring.insert(1, &SecretKey::from_bytes([1; KEY_LEN]));
    let stile_claims = stile_token::Claims {
        key_id: 1,
        token_id: stile_token::TokenId::from_u64(7),
        issued_at: NOW - 60,
        not_before: None,
        expires_at: NOW + 3600,
        scope: stile_token::Scope::parse("/vod/4f7c2a9e/").unwrap(),
        ip: None,
        countries: None,
        subject: Some("s-1".into()),
        channel: None,
    };
    let stile_target =
        format!("/vod/4f7c2a9e/1080p/seg_00042.ts?st={}", stile_token::sign(&stile_claims, &ring).unwrap());
    let entry = ForeignKeyEntry { format: "akamai".into(), name: "primary".into(), key: AKAMAI_KEY.into() };
    let state =
        State { keys: ring, foreign_keys: ForeignKeys::decode(&[entry]).unwrap(), fresh_at: NOW, ..State::default() };
    let config = ForeignConfig {
        format: "akamai".into(),
        path_prefixes: vec!["/vod/".into()],
        akamai: Some(acfg),
        ..ForeignConfig::default()
    };
    let gate = ForeignGate::new(&[config]).unwrap();
    let v = Validator::new(&EdgeConfig::default());
    let client = Some("203.0.113.9".parse().unwrap());
    let judge = |target: &str| {
        let input = Input { target: target.as_bytes(), client_ip: client, now: NOW };
        let verdict = v.validate(&state, &input, None, || None);
        if verdict.result != Err(Reason::Missing) {
            return verdict.result;
        }
        let policy = v.policy();
        let fi = ForeignInput {
            target: target.as_bytes(),
            cookies: &[],
            scheme: "https",
            host: "media.example.com",
            client_ip: client,
            headers: &[],
            now: NOW,
            leeway_secs: policy.leeway_secs,
            unknown_country: policy.unknown_country,
            stale: false,
        };
        gate.judge(&state, &fi, || None).map_or(Err(Reason::Missing), |f| f.result)
    };
    assert_eq!(judge(&akamai_target), Ok(()), "the Akamai link is admitted");
    assert_eq!(judge(&stile_target), Ok(()), "the Stile token is admitted");
    let mut g = c.benchmark_group("edge_foreign");
    g.bench_function("akamai_query (validate + judge)", |b| b.iter(|| black_box(judge(black_box(&akamai_target)))));
    g.bench_function("stile_query (validate)", |b| b.iter(|| black_box(judge(black_box(&stile_target)))));
    g.finish();
}

criterion_group!(benches, bench_formats, bench_ed25519, bench_edge);
criterion_main!(benches);
