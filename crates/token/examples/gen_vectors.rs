//! Writes the token test vectors (`docs/token-vectors.json`) to stdout.
//!
//! `cargo run -p stile-token --example gen_vectors > docs/token-vectors.json`
//!
//! The output is deterministic, and `crates/token/tests/vectors.rs` fails when it
//! and the committed file differ (the test includes this file as a module).
//!
//! Every expected verdict, claim set and canonical path is written here by hand,
//! from the rule of `docs/token-format.md` the row exercises: nothing is
//! computed by calling the crate's verifier or canonicaliser, so the vectors are
//! an oracle for them. Valid tokens are produced by `stile_token::sign`;
//! malformed or non-canonical ones are assembled byte by byte here and given a
//! correct MAC, so a verifier must reject them for their structure, not their
//! signature. Ed25519 tokens (format version 2) are signed by `sign` with the
//! private keys listed in the file (Ed25519 signing is deterministic, so an
//! independent implementation can re-sign each body and compare bytes); the
//! tampered ones are built here.

use ed25519_dalek::Signer;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use stile_token::{
    Claims, Country, CountryRule, Ed25519Secret, IpBinding, KeyRing, Scope, SecretKey, SessionPolicy, TokenId, sign,
    sign_with_session,
};

const NOW: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z
const KEY1: [u8; 32] = *b"stile-test-vector-key-one-32byte";
const KEY2: [u8; 32] = *b"stile-test-vector-key-two-32byte";
const KEY_MAX: [u8; 32] = *b"stile-test-vector-key-max-32byte";
/// Ed25519 private keys (RFC 8032 seeds) of key ids 3 and 4.
const ED3: [u8; 32] = *b"stile-test-vector-ed25519-seed-3";
const ED4: [u8; 32] = *b"stile-test-vector-ed25519-seed-4";
const MAX_TTL: u64 = 31 * 86_400;

#[allow(dead_code)] // reason: the test that includes this file calls `document` only.
fn main() {
    println!("{}", document());
}

/// What a vector expects: valid (with its claims as the JSON object of § 6) or a reason code.
enum Expect {
    Ok(Value),
    Deny(&'static str),
}

struct Vectors {
    ring: KeyRing,
    rows: Vec<Value>,
}

/// The request side of a vector.
#[derive(Clone, Copy)]
struct Req<'a> {
    path: &'a str,
    ip: Option<&'a str>,
    country: Option<&'a str>,
    now: u64,
}

impl<'a> Req<'a> {
    fn at(path: &'a str) -> Req<'a> {
        Req { path, ip: None, country: None, now: NOW }
    }

    fn now(self, now: u64) -> Req<'a> {
        Req { now, ..self }
    }

    fn ip(self, ip: &'a str) -> Req<'a> {
        Req { ip: Some(ip), ..self }
    }

    fn country(self, country: &'a str) -> Req<'a> {
        Req { country: Some(country), ..self }
    }
}

impl Vectors {
    fn push(&mut self, name: &str, token: &str, req: Req<'_>, expect: Expect, policy: Option<Value>) {
        let mut v = json!({
            "name": name,
            "token": token,
            "request": { "path": req.path, "client_ip": req.ip, "country": req.country, "now": req.now },
        });
        if let Some(p) = policy {
            v["policy"] = p;
        }
        match expect {
            Expect::Ok(claims) => {
                v["expect"] = "ok".into();
                v["claims"] = claims;
            }
            Expect::Deny(reason) => v["expect"] = reason.into(),
        }
        self.rows.push(v);
    }

    /// A token signed from `claims`; valid vectors list the claims as minted.
    fn signed(&mut self, name: &str, claims: &Claims, req: Req<'_>, expect: Option<&'static str>) {
        let token = sign(claims, &self.ring).expect("vector claims are valid");
        let expect = expect.map_or_else(|| Expect::Ok(claims_json(claims)), Expect::Deny);
        self.push(name, &token, req, expect, None);
    }

    /// Like [`Vectors::signed`] under another policy (`leeway_secs`, `unknown_country`).
    fn with_policy(
        &mut self,
        name: &str,
        claims: &Claims,
        req: Req<'_>,
        policy: (u32, &str),
        expect: Option<&'static str>,
    ) {
        let token = sign(claims, &self.ring).expect("vector claims are valid");
        let expect = expect.map_or_else(|| Expect::Ok(claims_json(claims)), Expect::Deny);
        let policy = json!({ "leeway_secs": policy.0, "unknown_country": policy.1 });
        self.push(name, &token, req, expect, Some(policy));
    }

    /// A token string with a given verdict for the segment request.
    fn raw(&mut self, name: &str, token: &str, req: Req<'_>, reason: &'static str) {
        self.push(name, token, req, Expect::Deny(reason), None);
    }
}

/// The whole vectors file, as committed.
pub(crate) fn document() -> String {
    let mut ring = KeyRing::new();
    ring.insert(1, &SecretKey::from_bytes(KEY1));
    ring.insert(2, &SecretKey::from_bytes(KEY2));
    ring.insert(u32::MAX, &SecretKey::from_bytes(KEY_MAX));
    ring.insert_ed25519_secret(3, &Ed25519Secret::from_bytes(ED3));
    ring.insert_ed25519_secret(4, &Ed25519Secret::from_bytes(ED4));
    let mut v = Vectors { ring, rows: Vec::new() };
    let country = |c: &str| Country::parse(c).unwrap();

    let base = Claims {
        key_id: 1,
        token_id: TokenId::from_u64(0x0123_4567_89ab_cdef),
        issued_at: NOW - 60,
        not_before: None,
        expires_at: NOW + 3600,
        scope: Scope::Prefix("/vod/abc/".into()),
        ip: None,
        countries: None,
        subject: None,
        channel: None,
    };
    let full = Claims {
        key_id: 2,
        token_id: TokenId::from_u64(0xfedc_ba98_7654_3210),
        not_before: Some(NOW - 30),
        ip: Some(IpBinding::new("203.0.113.0".parse().unwrap(), 24).unwrap()),
        countries: Some(CountryRule::Allow(vec![country("FR"), country("DE")])),
        subject: Some("viewer-42".into()),
        channel: Some("embed:partner-x".into()),
        ..base.clone()
    };
    let exact = Claims { scope: Scope::Exact("/vod/abc/master.m3u8".into()), ..base.clone() };
    let v6 = Claims { ip: Some(IpBinding::new("2001:db8:1:2::".parse().unwrap(), 64).unwrap()), ..base.clone() };
    let v4_exact = Claims { ip: Some(IpBinding::new("198.51.100.7".parse().unwrap(), 32).unwrap()), ..base.clone() };
    let deny = Claims { countries: Some(CountryRule::Deny(vec![country("US")])), ..base.clone() };
    let encoded_scope = Claims { scope: Scope::Prefix("/vod/caf%C3%A9/".into()), ..base.clone() };
    let seg = "/vod/abc/720p/seg_00001.ts";
    let at = Req::at(seg);

    // § 4 steps 6-10, each valid and at its boundary.
    v.signed("minimal prefix token, segment under the prefix", &base, at, None);
    v.signed("prefix admits the master playlist", &base, Req::at("/vod/abc/master.m3u8"), None);
    v.signed("prefix admits its own directory URL", &base, Req::at("/vod/abc/"), None);
    v.signed("every optional claim present", &full, at.ip("203.0.113.77").country("DE"), None);
    v.signed("exact scope admits its path", &exact, Req::at("/vod/abc/master.m3u8"), None);
    v.signed("exact scope admits nothing else", &exact, Req::at("/vod/abc/master.m3u8.bak"), Some("scope"));
    v.signed("prefix matches on a segment boundary only", &base, Req::at("/vod/abcd/seg.ts"), Some("scope"));
    v.signed("prefix does not admit its own path without slash", &base, Req::at("/vod/abc"), Some("scope"));
    v.signed("last second inside expiry + leeway", &base, at.now(base.expires_at + 4), None);
    v.signed("expired at expiry + leeway", &base, at.now(base.expires_at + 5), Some("expired"));
    v.signed("long expired", &base, at.now(base.expires_at + 86_400), Some("expired"));
    v.signed("issued in the future beyond leeway", &base, at.now(base.issued_at - 6), Some("not_yet_valid"));
    v.signed("issued in the future within leeway", &base, at.now(base.issued_at - 5), None);
    let inside = at.ip("203.0.113.1").country("DE");
    v.signed("before not-before beyond leeway", &full, inside.now(NOW - 36), Some("not_yet_valid"));
    v.signed("not-before within leeway", &full, inside.now(NOW - 35), None);
    v.signed("IPv4 network binding mismatch", &full, at.ip("203.0.114.1").country("DE"), Some("ip"));
    v.signed("IP-bound token without a client address", &full, at.country("DE"), Some("ip"));
    v.signed("unparsable client address counts as unknown", &full, at.ip("203.0.113.x").country("DE"), Some("ip"));
    v.signed("IPv4 exact binding via IPv4-mapped IPv6 client", &v4_exact, at.ip("::ffff:198.51.100.7"), None);
    v.signed("IPv4 binding, IPv4-compatible IPv6 client (not mapped)", &v4_exact, at.ip("::198.51.100.7"), Some("ip"));
    v.signed("IPv4 binding, NAT64 client (not mapped)", &v4_exact, at.ip("64:ff9b::198.51.100.7"), Some("ip"));
    v.signed("IPv4 binding, IPv6 client", &v4_exact, at.ip("2001:db8::1"), Some("ip"));
    v.signed("IPv6 binding, IPv4 client", &v6, at.ip("198.51.100.7"), Some("ip"));
    v.signed("IPv6 /64 binding admits a rotated privacy address", &v6, at.ip("2001:db8:1:2::99"), None);
    v.signed("IPv6 /64 binding denies another /64", &v6, at.ip("2001:db8:1:3::1"), Some("ip"));
    v.signed("country not in allow-list", &full, at.ip("203.0.113.1").country("US"), Some("geo"));
    v.signed("client country in lower case", &full, at.ip("203.0.113.1").country("de"), None);
    v.signed("unknown country under allow-list (policy deny)", &full, at.ip("203.0.113.1"), Some("geo"));
    v.signed("client country XX is unknown", &full, at.ip("203.0.113.1").country("XX"), Some("geo"));
    v.signed("client country empty is unknown", &full, at.ip("203.0.113.1").country(""), Some("geo"));
    v.signed("client country T1 is unknown", &full, at.ip("203.0.113.1").country("T1"), Some("geo"));
    v.signed("country in deny-list", &deny, at.country("US"), Some("geo"));
    v.signed("country not in deny-list", &deny, at.country("CA"), None);
    v.signed("unknown country under deny-list (policy deny)", &deny, at, Some("geo"));
    v.signed("client country XX under deny-list (policy deny)", &deny, at.country("XX"), Some("geo"));
    let allow = (5, "allow");
    v.with_policy("unknown country under allow-list (policy allow)", &full, at.ip("203.0.113.1"), allow, None);
    v.with_policy("unknown country under deny-list (policy allow)", &deny, at, allow, None);
    v.with_policy("XX under deny-list (policy allow)", &deny, at.country("XX"), allow, None);
    v.with_policy("known country in deny-list (policy allow)", &deny, at.country("US"), allow, Some("geo"));
    v.with_policy("leeway 0: last second before expiry", &base, at.now(base.expires_at - 1), (0, "deny"), None);
    v.with_policy("leeway 0: expired at expiry", &base, at.now(base.expires_at), (0, "deny"), Some("expired"));
    v.with_policy(
        "leeway 0: not valid before issue",
        &base,
        at.now(base.issued_at - 1),
        (0, "deny"),
        Some("not_yet_valid"),
    );
    v.with_policy("leeway 300: inside", &base, at.now(base.expires_at + 299), (300, "deny"), None);
    v.with_policy("leeway 300: expired", &base, at.now(base.expires_at + 300), (300, "deny"), Some("expired"));
    let nbf0 = Claims { not_before: Some(base.issued_at), ..base.clone() };
    v.signed("not-before equal to the issue time", &nbf0, at, None);
    let root = Claims { scope: Scope::Prefix("/".into()), ..base.clone() };
    v.signed("root prefix admits every path", &root, Req::at("/live/x.ts"), None);
    v.signed("percent-encoded scope admits its canonical path", &encoded_scope, Req::at("/vod/caf%C3%A9/a.ts"), None);

    // Which reason wins when two checks fail: the earlier step of § 4.
    v.signed("expired and out of scope: expired", &base, Req::at("/vod/xyz/a.ts").now(NOW + 86_400), Some("expired"));
    v.signed("not yet valid and out of scope", &base, Req::at("/x.ts").now(NOW - 3600), Some("not_yet_valid"));
    v.signed("out of scope and wrong IP: scope", &v4_exact, Req::at("/x.ts").ip("192.0.2.1"), Some("scope"));
    v.signed("wrong IP and wrong country: ip", &full, at.ip("192.0.2.1").country("US"), Some("ip"));
    v.signed(
        "expired and wrong IP: expired",
        &full,
        at.ip("192.0.2.1").country("DE").now(NOW + 86_400),
        Some("expired"),
    );

    // The extremes: every field at its maximum as a valid value (the longest token,
    // 644 characters), the shortest token (59), and the expiry at 2^64 - 1.
    let longest = Claims {
        key_id: u32::MAX,
        token_id: TokenId::from_u64(u64::MAX),
        issued_at: u64::MAX - MAX_TTL,
        not_before: Some(u64::MAX - 1),
        expires_at: u64::MAX,
        scope: Scope::Prefix(format!("/{}/", "a".repeat(253))),
        ip: Some(IpBinding::new("2001:db8::1".parse().unwrap(), 128).unwrap()),
        countries: Some(CountryRule::Allow(
            (b'A'..=b'Z')
                .map(|c| [b'A', c])
                .chain((b'A'..=b'F').map(|c| [b'B', c]))
                .map(|c| Country::new(c).unwrap())
                .collect(),
        )),
        subject: Some((0x21u8..=0x60).map(char::from).collect()),
        channel: Some("abcdefghijklmnopqrstuvwxyz._:-09".into()),
    };
    let longest_token = sign(&longest, &v.ring).unwrap();
    assert_eq!(longest_token.len(), 644, "every field at its maximum spells the longest token");
    let long_path = format!("/{}/x.ts", "a".repeat(253));
    let long_req = Req::at(&long_path).ip("2001:db8::1").country("BF").now(u64::MAX - 1);
    v.push(
        "every field at its maximum (644 characters)",
        &longest_token,
        long_req,
        Expect::Ok(claims_json(&longest)),
        None,
    );
    v.raw("645 characters", &format!("{longest_token}A"), long_req, "malformed");
    v.raw("646 characters", &format!("{longest_token}AA"), long_req, "malformed");
    let shortest = Claims { scope: Scope::Prefix("/".into()), ..base.clone() };
    let shortest_token = sign(&shortest, &v.ring).unwrap();
    assert_eq!(shortest_token.len(), 59);
    v.push("the shortest token (59 characters)", &shortest_token, at, Expect::Ok(claims_json(&shortest)), None);
    v.raw("58 characters", &shortest_token[..58], at, "malformed");
    let last = Claims { issued_at: u64::MAX - 3600, expires_at: u64::MAX, ..base.clone() };
    v.signed("expiry at 2^64 - 1", &last, at.now(u64::MAX - 3600), None);
    v.signed("expiry at 2^64 - 1: expiry + leeway passes 2^64", &last, at.now(u64::MAX), None);
    v.with_policy("expiry at 2^64 - 1, leeway 0: expired", &last, at.now(u64::MAX), (0, "deny"), Some("expired"));

    // Signature and key failures.
    let good = sign(&base, &v.ring).unwrap();
    let mut raw = decode(&good);
    let end = raw.len() - 1;
    raw[end] ^= 1;
    v.raw("tag bit flipped", &encode(&raw), at, "bad_signature");
    let mut raw = decode(&good);
    raw[20] ^= 0x40; // inside issued_at
    v.raw("claims changed after signing", &encode(&raw), at, "bad_signature");
    v.raw("claims changed and expired: bad_signature", &encode(&raw), at.now(NOW + 86_400), "bad_signature");
    let mut other = KeyRing::new();
    other.insert(1, &SecretKey::from_bytes(KEY2));
    v.raw("signed with another secret", &sign(&base, &other).unwrap(), at, "bad_signature");
    other.insert(9, &SecretKey::from_bytes(KEY1));
    let unknown = sign(&Claims { key_id: 9, ..base.clone() }, &other).unwrap();
    v.raw("unknown key id", &unknown, at, "unknown_key");
    v.raw("unknown key id and expired: unknown_key", &unknown, at.now(NOW + 86_400), "unknown_key");

    // Version 2: Ed25519 (§ 1, § 4 step 5). The same claims, the same checks after the signature.
    let ed = Claims { key_id: 3, ..base.clone() };
    let ed_full = Claims { key_id: 4, ..full.clone() };
    v.signed("Ed25519: minimal prefix token", &ed, at, None);
    v.signed("Ed25519: every optional claim present", &ed_full, at.ip("203.0.113.77").country("DE"), None);
    v.signed("Ed25519: expired at expiry + leeway", &ed, at.now(ed.expires_at + 5), Some("expired"));
    v.signed("Ed25519: out of scope", &ed, Req::at("/vod/abd/x.ts"), Some("scope"));
    v.signed("Ed25519: country not in allow-list", &ed_full, at.ip("203.0.113.1").country("US"), Some("geo"));
    let ed_good = sign(&ed, &v.ring).unwrap();
    let mut raw = decode(&ed_good);
    let end = raw.len() - 1;
    raw[end] ^= 0x01; // inside S
    v.raw("Ed25519: signature bit flipped in S", &encode(&raw), at, "bad_signature");
    let mut raw = decode(&ed_good);
    let r_byte = raw.len() - 64;
    raw[r_byte] ^= 0x80; // inside R
    v.raw("Ed25519: signature bit flipped in R", &encode(&raw), at, "bad_signature");
    let mut raw = decode(&ed_good);
    raw[20] ^= 0x40; // inside issued_at
    v.raw("Ed25519: claims changed after signing", &encode(&raw), at, "bad_signature");
    v.raw("Ed25519: claims changed and expired: bad_signature", &encode(&raw), at.now(NOW + 86_400), "bad_signature");
    // S + L: the same signature modulo the group order, not canonical (strict verification).
    let mut raw = decode(&ed_good);
    let s_at = raw.len() - 32;
    add_group_order(&mut raw[s_at..]);
    v.raw("Ed25519: non-canonical S (S + L)", &encode(&raw), at, "bad_signature");
    let mut other = KeyRing::new();
    other.insert_ed25519_secret(3, &Ed25519Secret::from_bytes(ED4));
    v.raw("Ed25519: signed with another private key", &sign(&ed, &other).unwrap(), at, "bad_signature");
    other.insert_ed25519_secret(1, &Ed25519Secret::from_bytes(ED3));
    v.raw(
        "Ed25519 token naming an HMAC key: unknown_key",
        &sign(&Claims { key_id: 1, ..base.clone() }, &other).unwrap(),
        at,
        "unknown_key",
    );
    let mut hmac_named_ed = Body { flags: 1, issued_at: NOW - 60, ttl: 3660 }
        .with(&[9, b'/', b'v', b'o', b'd', b'/', b'a', b'b', b'c', b'/']);
    hmac_named_ed[2..6].copy_from_slice(&3u32.to_be_bytes());
    v.raw("HMAC token naming an Ed25519 key: unknown_key", &encode(&mac(&hmac_named_ed, &ED3)), at, "unknown_key");
    other.insert_ed25519_secret(9, &Ed25519Secret::from_bytes(ED3));
    let ed_unknown = sign(&Claims { key_id: 9, ..base.clone() }, &other).unwrap();
    v.raw("Ed25519: unknown key id", &ed_unknown, at, "unknown_key");
    let ed_shortest = Claims { key_id: 3, scope: Scope::Prefix("/".into()), ..base.clone() };
    let ed_shortest_token = sign(&ed_shortest, &v.ring).unwrap();
    assert_eq!(ed_shortest_token.len(), 123, "26-byte header, 2-byte scope, 64-byte signature");
    v.push(
        "Ed25519: the shortest token (123 characters)",
        &ed_shortest_token,
        at,
        Expect::Ok(claims_json(&ed_shortest)),
        None,
    );
    let ed_longest = Claims { key_id: 3, ..longest.clone() };
    let ed_longest_token = sign(&ed_longest, &v.ring).unwrap();
    assert_eq!(ed_longest_token.len(), 708, "every field at its maximum spells the longest token");
    v.push(
        "Ed25519: every field at its maximum (708 characters)",
        &ed_longest_token,
        long_req,
        Expect::Ok(claims_json(&ed_longest)),
        None,
    );
    v.raw("709 characters", &format!("{ed_longest_token}A"), long_req, "malformed");
    v.raw("710 characters", &format!("{ed_longest_token}AA"), long_req, "malformed");
    // The version says the tag's length: an HMAC-length tag after a version-2 body is malformed.
    let mut v2_short = Body { flags: 1, issued_at: NOW - 60, ttl: 3660 }
        .with(&[9, b'/', b'v', b'o', b'd', b'/', b'a', b'b', b'c', b'/']);
    v2_short[0] = 2;
    v.raw("version 2 with a 16-byte tag", &encode(&mac(&v2_short, &KEY1)), at, "malformed");
    let mut ed_trailing = v2_short.clone();
    ed_trailing[2..6].copy_from_slice(&3u32.to_be_bytes());
    ed_trailing.push(0);
    v.raw(
        "Ed25519: trailing byte after the last field, correctly signed",
        &encode(&ed_sign(&ed_trailing, &ED3)),
        at,
        "malformed",
    );
    let mut v2_hmac_long = decode(&ed_good);
    v2_hmac_long[0] = 1;
    v.raw("version 1 with a 64-byte tag", &encode(&v2_hmac_long), at, "malformed");

    // Malformed: structure errors, each with a correct MAC.
    let body = |flags: u8, tail: &[u8]| Body { flags, issued_at: NOW - 60, ttl: 3660 }.with(tail);
    let scope = |s: &str| [&[s.len() as u8][..], s.as_bytes()].concat();
    let abc = scope("/vod/abc/");
    assert_eq!(encode(&mac(&body(1, &abc), &KEY1)), good, "the hand-built body is what `sign` writes");
    let mut malformed = |name: &str, raw_body: Vec<u8>| v.raw(name, &encode(&mac(&raw_body, &KEY1)), at, "malformed");
    let mut v3 = body(1, &abc);
    v3[0] = 3;
    malformed("unknown version", v3);
    malformed("reserved flag bit set", body(1 | 0x80, &abc));
    malformed("deny flag without countries", body(1 | 0x10, &abc));
    malformed("prefix flag on a scope without trailing slash", body(1, &scope("/vod/abc")));
    malformed("exact scope with trailing slash", body(0, &abc));
    malformed("empty scope", body(1, &[0]));
    malformed("scope not starting with slash", body(1, &scope("vod/abc/")));
    malformed("scope with a space", body(1, &scope("/vod/a c/")));
    malformed("scope with a byte above 0x7E", body(1, &scope("/vod/a\u{7f}c/")));
    malformed("scope length past the end", body(1, &[200, b'/', b'v']));
    malformed("trailing byte after the last field", body(1, &[&abc[..], &[0]].concat()));
    malformed("countries not sorted", body(1 | 0x08, &[&abc[..], b"\x02FRDE"].concat()));
    malformed("duplicate country", body(1 | 0x08, &[&abc[..], b"\x02DEDE"].concat()));
    malformed("lower-case country", body(1 | 0x08, &[&abc[..], b"\x01de"].concat()));
    malformed("zero countries", body(1 | 0x08, &[&abc[..], b"\x00"].concat()));
    let thirty_three: Vec<u8> =
        (b'A'..=b'Z').flat_map(|c| [b'A', c]).chain((b'A'..=b'G').flat_map(|c| [b'B', c])).collect();
    malformed("33 countries", body(1 | 0x08, &[&abc[..], &[33], &thirty_three].concat()));
    malformed("IPv4 host bits set", body(1 | 0x04, &[&abc[..], &[4, 24, 203, 0, 113, 7]].concat()));
    malformed("IPv4 prefix 33", body(1 | 0x04, &[&abc[..], &[4, 33, 203, 0, 113, 7]].concat()));
    malformed("IP prefix 0", body(1 | 0x04, &[&abc[..], &[4, 0, 0, 0, 0, 0]].concat()));
    let v6_addr = [0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    malformed("IPv6 prefix 0", body(1 | 0x04, &[&abc[..], &[6, 0], &[0; 16]].concat()));
    malformed("IPv6 prefix 129", body(1 | 0x04, &[&abc[..], &[6, 129], &v6_addr].concat()));
    malformed("IPv6 host bits set", body(1 | 0x04, &[&abc[..], &[6, 64], &v6_addr].concat()));
    malformed(
        "IPv4-mapped address written as family 6",
        body(1 | 0x04, &[&abc[..], &[6, 128], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1]].concat()),
    );
    malformed("unknown address family", body(1 | 0x04, &[&abc[..], &[5, 8, 10, 0, 0, 0]].concat()));
    malformed("subject with a space", body(1 | 0x20, &[&abc[..], b"\x03a b"].concat()));
    malformed("zero-length subject", body(1 | 0x20, &[&abc[..], b"\x00"].concat()));
    malformed("subject of 65 bytes", body(1 | 0x20, &[&abc[..], &[65], &[b'x'; 65]].concat()));
    malformed("channel with upper case", body(1 | 0x40, &[&abc[..], b"\x05Email"].concat()));
    malformed("zero-length channel", body(1 | 0x40, &[&abc[..], b"\x00"].concat()));
    malformed("channel of 33 bytes", body(1 | 0x40, &[&abc[..], &[33], &[b'x'; 33]].concat()));
    malformed("zero lifetime", Body { flags: 1, issued_at: NOW - 60, ttl: 0 }.with(&abc));
    malformed("lifetime over 31 days", Body { flags: 1, issued_at: NOW - 60, ttl: 31 * 86_400 + 1 }.with(&abc));
    malformed("expiry overflows 2^64", Body { flags: 1, issued_at: u64::MAX - 100, ttl: 3600 }.with(&abc));
    malformed("NBF flag with offset 0 and an empty scope", body(1 | 0x02, &[&0u32.to_be_bytes()[..], &[0]].concat()));
    malformed("not-before at expiry", body(1 | 0x02, &[&3660u32.to_be_bytes()[..], &abc].concat()));
    malformed("field cut short by the tag", body(1 | 0x20, &[&abc[..], b"\x09abc"].concat()));
    // Malformed wins over the key and the MAC: the body is parsed first.
    let bad_body = body(1 | 0x08, &[&abc[..], b"\x01de"].concat());
    v.raw("malformed body signed with another key: malformed", &encode(&mac(&bad_body, &KEY2)), at, "malformed");
    let mut bad_key = bad_body.clone();
    bad_key[2..6].copy_from_slice(&9u32.to_be_bytes());
    v.raw("malformed body with an unknown key id: malformed", &encode(&mac(&bad_key, &KEY1)), at, "malformed");
    // A scope that passes the byte rules but is not canonical admits no canonical path.
    let non_canonical = encode(&mac(&body(1, &scope("/vod/%41/")), &KEY1));
    v.raw("non-canonical scope: scope, not malformed", &non_canonical, Req::at("/vod/A/x.ts"), "scope");

    // Malformed at the string level.
    v.raw("empty", "", at, "malformed");
    v.raw("padding character", &format!("{good}="), at, "malformed");
    v.raw("standard base64 alphabet", &good.replace(['-', '_'], "+"), at, "malformed");
    v.raw("character outside the alphabet", &format!("{}*", &good[..good.len() - 1]), at, "malformed");
    v.raw("impossible length (1 mod 4)", &format!("{good}AAA"), at, "malformed");
    v.raw("truncated", &good[..good.len() - 8], at, "malformed");
    v.raw("too long", &"A".repeat(700), at, "malformed");
    v.raw("percent-encoded token", &good.replacen('A', "%41", 1), at, "malformed");
    // Non-zero unused bits in the last character: same bytes, another spelling.
    v.raw("non-zero trailing bits (second spelling of a valid token)", &nonzero_trailing_bits(&good), at, "malformed");

    let ed_key = |id: u32, seed: [u8; 32]| {
        let public = Ed25519Secret::from_bytes(seed).public();
        json!({
            "id": id,
            "algorithm": "ed25519",
            "public_hex": hex::encode(public.as_bytes()),
            "private_hex": hex::encode(seed),
            "session_secret_hex": hex::encode(session_secret(&seed)),
        })
    };
    let doc = json!({
        "format": "stile-token",
        "version": 2,
        "keys": [
            { "id": 1, "algorithm": "hmac-sha256", "secret_hex": hex::encode(KEY1), "session_secret_hex": hex::encode(session_secret(&KEY1)) },
            { "id": 2, "algorithm": "hmac-sha256", "secret_hex": hex::encode(KEY2), "session_secret_hex": hex::encode(session_secret(&KEY2)) },
            ed_key(3, ED3),
            ed_key(4, ED4),
            { "id": u32::MAX, "algorithm": "hmac-sha256", "secret_hex": hex::encode(KEY_MAX), "session_secret_hex": hex::encode(session_secret(&KEY_MAX)) },
        ],
        "policy": { "leeway_secs": 5, "unknown_country": "deny" },
        "vectors": v.rows,
        "sessions": sessions(&v.ring),
        "paths": paths(),
    });
    serde_json::to_string_pretty(&doc).unwrap()
}

/// Canonicalisation cases (§ 5), each with its expected canonical form or `None`.
fn paths() -> Vec<Value> {
    let a2047 = format!("/{}", "a".repeat(2047));
    let a2048 = format!("/{}", "a".repeat(2048));
    let bars = format!("/{}", "|".repeat(700));
    let cases: Vec<(&str, Option<&str>)> = vec![
        // Rules 1-3.
        ("/vod/abc/seg.ts", Some("/vod/abc/seg.ts")),
        ("/VOD/Abc/Seg.TS", Some("/VOD/Abc/Seg.TS")),
        ("/", Some("/")),
        ("/vod/abc/", Some("/vod/abc/")),
        ("vod/x", None),
        (&a2047, Some(&a2047)),
        (&a2048, None),
        (&bars, None),
        ("/a/!$&'()*+,=:@~/x", Some("/a/!$&'()*+,=:@~/x")),
        ("/vod/a|b", Some("/vod/a%7Cb")),
        ("/vod/a\"b", Some("/vod/a%22b")),
        ("/vod/[a]^{b}", Some("/vod/%5Ba%5D%5E%7Bb%7D")),
        // Rule 4: raw bytes rejected.
        ("/vod/a b", None),
        ("/vod/a;p=1/x", None),
        ("/vod/a\\b", None),
        ("/vod/a<b", None),
        ("/vod/a>b", None),
        ("/vod/a`b", None),
        ("/vod/a\u{7f}b", None),
        ("/vod/caf\u{e9}", None),
        ("/vod/%", None),
        ("/vod/%4", None),
        ("/vod/%zz", None),
        // Rule 5: escapes of ASCII.
        ("/vod/%61bc/seg.ts", Some("/vod/abc/seg.ts")),
        ("/vod/a%2Ets", Some("/vod/a.ts")),
        ("/vod/a%20b", Some("/vod/a%20b")),
        ("/vod/a%3fb", Some("/vod/a%3Fb")),
        ("/vod/%3c%3e%60%22%23", Some("/vod/%3C%3E%60%22%23")),
        ("/vod/abc%2fseg.ts", None),
        ("/vod/abc%5Cseg.ts", None),
        ("/vod/%252e%252e/x", None),
        ("/vod/%3b", None),
        ("/vod/%00", None),
        ("/vod/%1f", None),
        ("/vod/%7F", None),
        ("/vod/%7f", None),
        // Rule 5: escapes of UTF-8.
        ("/vod/caf%c3%a9/x.ts", Some("/vod/caf%C3%A9/x.ts")),
        ("/vod/%F0%9F%8E%AC.ts", Some("/vod/%F0%9F%8E%AC.ts")),
        ("/vod/%E5%AD%97", Some("/vod/%E5%AD%97")),
        ("/vod/e%CC%81", Some("/vod/e%CC%81")),
        ("/vod/%C3", None),
        ("/vod/%C3A", None),
        ("/vod/%C3%", None),
        ("/vod/%c0%ae%c0%ae/x", None),
        ("/vod/%e0%80%af", None),
        ("/vod/%ed%a0%80", None),
        ("/vod/%F4%90%80%80", None),
        ("/vod/%80", None),
        ("/vod/%c2%85", None),
        // Rule 5: code points that are not NFKC-stable, unassigned or private-use, look-alikes.
        ("/vod/%ef%bc%8f", None),
        ("/vod/%EF%BC%8E%EF%BC%8E/x", None),
        ("/vod/a/%E2%80%A5/x", None),
        ("/vod/a/%EF%B8%B0/x", None),
        ("/vod/a/..%CD%BE/x", None),
        ("/vod/a%EF%BC%85", None),
        ("/vod/a%EF%BC%9B", None),
        ("/vod/a%EF%BC%9F", None),
        ("/vod/a%EF%BC%83", None),
        ("/vod/a%EF%B9%92", None),
        ("/vod/a%E2%80%A4", None),
        ("/vod/%EF%AC%81le", None),
        ("/vod/%C2%A0", None),
        ("/vod/%CD%B8", None),
        ("/vod/%EE%80%80", None),
        ("/vod/a%E2%81%84b", None),
        ("/vod/a%E2%88%95b", None),
        ("/vod/a%E2%88%96b", None),
        // Rule 6: segments.
        ("/vod//x", None),
        ("/vod/./x", None),
        ("/vod/../x", None),
        ("/vod/%2e%2e/x", None),
        ("/vod/.../x", None),
        ("/vod/a./x", None),
        ("/vod/a.", None),
        ("/vod/..%20/x", None),
        ("/vod/%20/x", None),
        ("/vod/a%20", None),
        ("/vod/..%3F/x", None),
        ("/vod/..%3f/x", None),
        ("/vod/..%23/x", None),
        ("/vod/a.%3Fx", None),
        ("/vod/..a/x.ts", Some("/vod/..a/x.ts")),
        ("/vod/.hidden", Some("/vod/.hidden")),
        ("/vod/%3Fa/x", Some("/vod/%3Fa/x")),
        ("/vod/a%3F..b", Some("/vod/a%3F..b")),
        ("/vod/%20a", Some("/vod/%20a")),
    ];
    cases.into_iter().map(|(input, canonical)| json!({ "input": input, "canonical": canonical })).collect()
}

/// The claims JSON of § 6, written from the claims as minted (countries in body
/// order, i.e. sorted; the IP binding in its shortest text form).
fn claims_json(c: &Claims) -> Value {
    let countries = c.countries.as_ref().map(|r| {
        let mut list: Vec<String> = r.countries().iter().map(|c| c.as_str().to_owned()).collect();
        list.sort();
        list.dedup();
        match r {
            CountryRule::Allow(_) => json!({ "allow": list }),
            CountryRule::Deny(_) => json!({ "deny": list }),
        }
    });
    json!({
        "key_id": c.key_id,
        "token_id": format!("{:016x}", c.token_id.as_u64()),
        "issued_at": c.issued_at,
        "not_before": c.not_before,
        "expires_at": c.expires_at,
        "scope": c.scope.path(),
        "scope_is_prefix": c.scope.is_prefix(),
        "ip": c.ip.map(|i| format!("{}/{}", i.addr(), i.prefix_len())),
        "countries": countries,
        "subject": c.subject,
        "channel": c.channel,
    })
}

/// The session secret of a key (§ 9.3): HMAC-SHA256(material, "stile session v1"), in full.
fn session_secret(material: &[u8; 32]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(material).unwrap();
    m.update(b"stile session v1");
    m.finalize().into_bytes().into()
}

/// A session part's fields (§ 9.2), written by hand.
#[derive(Clone, Copy)]
struct Part {
    version: u8,
    flags: u8,
    id: u64,
    started_at: u64,
    issued_at: u64,
    ttl: u32,
    /// family, prefix, address bytes
    bind: Option<(u8, u8, [u8; 16])>,
}

impl Part {
    fn body(&self) -> Vec<u8> {
        let mut b = vec![self.version, self.flags];
        b.extend_from_slice(&self.id.to_be_bytes());
        b.extend_from_slice(&self.started_at.to_be_bytes());
        b.extend_from_slice(&self.issued_at.to_be_bytes());
        b.extend_from_slice(&self.ttl.to_be_bytes());
        if let Some((family, prefix, addr)) = self.bind {
            b.extend_from_slice(&[family, prefix]);
            b.extend_from_slice(&addr[..if family == 4 { 4 } else { 16 }]);
        }
        b
    }
}

/// `link "." base64url(body || tag)`, the tag computed by hand over
/// `u16 len(link bytes) || link bytes || body` (§ 9.2).
fn credential(link: &str, body: &[u8], secret: &[u8; 32]) -> String {
    let link_raw = decode(link);
    let mut msg = (link_raw.len() as u16).to_be_bytes().to_vec();
    msg.extend_from_slice(&link_raw);
    msg.extend_from_slice(body);
    let tagged = mac(&msg, secret);
    format!("{link}.{}", encode(&[body, &tagged[tagged.len() - 16..]].concat()))
}

/// The `sessions` array (§ 9.5): session credentials with their verdicts.
fn sessions(ring: &KeyRing) -> Vec<Value> {
    let policy = SessionPolicy { idle_secs: 60, max_secs: 600, bind_v4: 24, bind_v6: 0 };
    // A 90-second link issued a minute ago: valid until NOW + 30.
    let link_claims = Claims {
        key_id: 1,
        token_id: TokenId::from_u64(0x5e55_1011_0000_0001),
        issued_at: NOW - 60,
        not_before: None,
        expires_at: NOW + 30,
        scope: Scope::Prefix("/live/ch1/".into()),
        ip: None,
        countries: None,
        subject: Some("viewer-42".into()),
        channel: Some("email".into()),
    };
    let signed = |c: Claims| sign_with_session(&c, Some(&policy), ring).unwrap();
    let l1 = signed(link_claims.clone());
    let l3 = signed(Claims { key_id: 3, ..link_claims.clone() });
    let other_link = signed(Claims { token_id: TokenId::from_u64(0x0bad), ..link_claims.clone() });
    let plain_link = sign(&link_claims, ring).unwrap();
    let allow_fr = CountryRule::Allow(vec![Country::parse("FR").unwrap()]);
    let geo_link = signed(Claims { countries: Some(allow_fr), ..link_claims.clone() });
    let (s1, s2, s3) = (session_secret(&KEY1), session_secret(&KEY2), session_secret(&ED3));
    let mut v4 = [0u8; 16];
    v4[..4].copy_from_slice(&[203, 0, 113, 0]);
    let good = Part {
        version: 1,
        flags: 1,
        id: 0x1122_3344_5566_7788,
        started_at: NOW - 50,
        issued_at: NOW - 10,
        ttl: 60,
        bind: Some((4, 24, v4)),
    };
    let unbound = Part { flags: 0, bind: None, ..good };
    let late = Part { issued_at: NOW + 540, ttl: 60, ..good };
    let edge_start = Part { started_at: NOW + 34, issued_at: NOW + 34, ..good };
    let mut wide = [0u8; 16];
    wide[..4].copy_from_slice(&[203, 0, 0, 0]);
    let c = |link: &str, p: &Part, secret: &[u8; 32]| credential(link, &p.body(), secret);
    let (seg, client, v6) = ("/live/ch1/720p/seg_00042.ts", Some("203.0.113.9"), Some("2001:db8::7"));
    let cred = c(&l1, &good, &s1);
    let part = cred.split_once('.').unwrap().1.to_owned();
    let mut flipped = cred.clone();
    let last = flipped.pop().unwrap();
    flipped.push(if last == 'A' { 'Q' } else { 'A' });
    let mut longer_ttl = decode(&part);
    longer_ttl[29] = 0xff;
    // An Ed25519 link with issued_at changed: its signature fails, whatever the session tag
    // (tagged over the altered link with the session secret) says. (For an HMAC link such a
    // credential is left out: § 9.4 lets a verifier leave the link's MAC to the session tag.)
    let mut bad_link = decode(&l3);
    bad_link[20] ^= 1;
    // An HMAC link with issued_at changed under a session part tagged over the original.
    let mut altered_l1 = decode(&l1);
    altered_l1[20] ^= 1;
    let mut unknown = decode(&l1);
    unknown[2..6].copy_from_slice(&9u32.to_be_bytes());
    let mut unknown_plain = decode(&plain_link);
    unknown_plain[2..6].copy_from_slice(&9u32.to_be_bytes());
    let mut host_bits = v4;
    host_bits[3] = 9;

    // (name, credential, path, client, country, now, expect, the session of a valid row)
    type Row<'a> = (&'a str, String, &'a str, Option<&'a str>, Option<&'a str>, u64, &'a str, Option<Part>);
    #[rustfmt::skip]
    let mut table: Vec<Row<'_>> = vec![
        // Valid: past the link's expiry (NOW + 30 + leeway), within the session's ttl and maximum.
        ("session on an HMAC link, 10 s past the link's expiry", cred.clone(), seg, client, None, NOW + 40, "ok", Some(good)),
        ("session on an Ed25519 link, 10 s past the link's expiry", c(&l3, &good, &s3), seg, client, None, NOW + 40, "ok", Some(good)),
        ("session: last second of its ttl (issued_at + ttl + leeway - 1)", cred.clone(), seg, client, None, NOW + 54, "ok", Some(good)),
        ("session: ttl + leeway reached", cred.clone(), seg, client, None, NOW + 55, "session_expired", None),
        ("session renewed near its maximum: last second (started_at + max + leeway - 1)", c(&l1, &late, &s1), seg, client, None, NOW + 554, "ok", Some(late)),
        ("session: hard maximum reached although its ttl runs on", c(&l1, &late, &s1), seg, client, None, NOW + 555, "session_max", None),
        ("session past both ttl and maximum: session_max comes first", c(&l1, &Part { issued_at: NOW + 500, ..good }, &s1), seg, client, None, NOW + 600, "session_max", None),
        ("session issued in the future", c(&l1, &Part { issued_at: NOW + 10, ..good }, &s1), seg, client, None, NOW + 4, "not_yet_valid", None),
        ("session started after the link expired (+ leeway)", c(&l1, &Part { started_at: NOW + 35, issued_at: NOW + 35, ..good }, &s1), seg, client, None, NOW + 40, "expired", None),
        ("session started in the link's last leeway second", c(&l1, &edge_start, &s1), seg, client, None, NOW + 40, "ok", Some(edge_start)),
        ("session started before the link's issue time (- leeway)", c(&l1, &Part { started_at: NOW - 66, ..good }, &s1), seg, client, None, NOW, "not_yet_valid", None),
        // Signatures.
        ("session tag altered", flipped, seg, client, None, NOW, "bad_signature", None),
        ("session part of another link (token id) moved onto it", format!("{other_link}.{part}"), seg, client, None, NOW, "bad_signature", None),
        ("session tagged with another key's session secret", c(&l1, &good, &s2), seg, client, None, NOW, "bad_signature", None),
        ("session tagged with the link's own secret instead of its session secret", c(&l1, &good, &KEY1), seg, client, None, NOW, "bad_signature", None),
        ("session extended by editing its ttl (tag unchanged)", format!("{l1}.{}", encode(&longer_ttl)), seg, client, None, NOW, "bad_signature", None),
        ("session on an Ed25519 link whose signature fails, tagged over it", c(&encode(&bad_link), &good, &s3), seg, client, None, NOW, "bad_signature", None),
        ("session part kept under an altered HMAC link", format!("{}.{part}", encode(&altered_l1)), seg, client, None, NOW, "bad_signature", None),
        ("session on a link of an unknown key", c(&encode(&unknown), &good, &s1), seg, client, None, NOW, "unknown_key", None),
        // The link's claims still apply.
        ("session: path outside the link's scope", cred.clone(), "/live/ch2/seg.ts", client, None, NOW + 40, "scope", None),
        ("session: the link's country rule still applies", c(&geo_link, &good, &s1), seg, client, Some("DE"), NOW + 40, "geo", None),
        // Client binding.
        ("session: client outside its /24", cred.clone(), seg, Some("203.0.114.9"), None, NOW, "ip", None),
        ("session: client address unknown", cred.clone(), seg, None, None, NOW, "ip", None),
        ("unbound session where the policy binds IPv4 clients", c(&l1, &unbound, &s1), seg, client, None, NOW, "ip", None),
        ("unbound session, IPv6 client (the policy binds IPv6 at 0: not bound)", c(&l1, &unbound, &s1), seg, v6, None, NOW, "ok", Some(unbound)),
        ("session bound wider (/16) than the policy's /24", c(&l1, &Part { bind: Some((4, 16, wide)), ..good }, &s1), seg, client, None, NOW, "ip", None),
    ];
    // Structure: each malformed, each with a correct tag.
    for (name, cred) in [
        ("session on a link without a session policy", c(&plain_link, &good, &s1)),
        ("empty session part", format!("{l1}.")),
        ("two separators", format!("{cred}.{part}")),
        ("session version 2", c(&l1, &Part { version: 2, ..good }, &s1)),
        ("session reserved flag bit", c(&l1, &Part { flags: 3, ..good }, &s1)),
        ("BIND flag without a binding", c(&l1, &Part { bind: None, ..good }, &s1)),
        ("binding without the BIND flag", c(&l1, &Part { flags: 0, ..good }, &s1)),
        ("binding with host bits set", c(&l1, &Part { bind: Some((4, 24, host_bits)), ..good }, &s1)),
        ("binding prefix 0", c(&l1, &Part { bind: Some((4, 0, [0; 16])), ..good }, &s1)),
        ("binding family 5", c(&l1, &Part { bind: Some((5, 24, v4)), ..good }, &s1)),
        ("issued before it started", c(&l1, &Part { issued_at: NOW - 51, ..good }, &s1)),
        ("ttl 0", c(&l1, &Part { ttl: 0, ..good }, &s1)),
        ("ttl above the policy's maximum", c(&l1, &Part { ttl: 601, ..good }, &s1)),
        ("trailing byte after the session body", credential(&l1, &[&good.body()[..], &[0]].concat(), &s1)),
        ("session part shorter than its tag", format!("{l1}.{}", encode(&[1; 15]))),
        // A structure fault outranks the link's key and signature (§ 9.4: parse first).
        (
            "ttl above the policy's maximum, on a link of an unknown key",
            c(&encode(&unknown), &Part { ttl: 601, ..good }, &s1),
        ),
        (
            "issued before it started, on a link whose MAC fails",
            c(&encode(&bad_link), &Part { issued_at: NOW - 51, ..good }, &s1),
        ),
        ("session on a link without a session policy, of an unknown key", c(&encode(&unknown_plain), &good, &s1)),
    ] {
        table.push((name, cred, seg, client, None, NOW, "malformed", None));
    }
    // Links with a malformed session policy, each with a correct MAC (the link's own tail edited):
    // ext byte, idle u32, max u32, bind_v4, bind_v6.
    let raw = decode(&l1);
    let body = &raw[..raw.len() - 16];
    let head = &body[..body.len() - 11];
    for (name, ext) in [
        ("extension byte 0", &[0u8][..]),
        ("extension reserved bit", &[3, 0, 0, 0, 60, 0, 0, 2, 88, 24, 0]),
        ("idle 0", &[1, 0, 0, 0, 0, 0, 0, 2, 88, 24, 0]),
        ("idle above max", &[1, 0, 0, 2, 89, 0, 0, 2, 88, 24, 0]),
        ("max above 7 days", &[1, 0, 0, 0, 60, 0, 9, 58, 129, 24, 0]),
        ("bind_v4 33", &[1, 0, 0, 0, 60, 0, 0, 2, 88, 33, 0]),
        ("bind_v6 129", &[1, 0, 0, 0, 60, 0, 0, 2, 88, 24, 129]),
        ("policy cut short", &[1, 0, 0, 0, 60, 0, 0, 2, 88, 24]),
    ] {
        let link = encode(&mac(&[head, ext].concat(), &KEY1));
        table.push((name, c(&link, &good, &s1), seg, client, None, NOW, "malformed", None));
    }
    let policy_json = json!({ "idle_secs": 60, "max_secs": 600, "bind_v4": 24, "bind_v6": 0 });
    table
        .into_iter()
        .map(|(name, cred, path, ip, country, now, expect, part)| {
            let name = if expect == "malformed" { format!("malformed: {name}") } else { name.to_owned() };
            let mut r = json!({
                "name": name,
                "credential": cred,
                "request": { "path": path, "client_ip": ip, "country": country, "now": now },
                "expect": expect,
            });
            if let Some(p) = part {
                r["session"] = json!({
                    "session_id": format!("{:016x}", p.id),
                    "started_at": p.started_at,
                    "issued_at": p.issued_at,
                    "ttl": p.ttl,
                    "bind": p.bind.map(|_| "203.0.113.0/24"),
                    "session_policy": policy_json,
                    "link_token_id": "5e55101100000001",
                });
            }
            r
        })
        .collect()
}

/// A body for key 1 and token id 0123456789abcdef, by hand (§ 3).
struct Body {
    flags: u8,
    issued_at: u64,
    ttl: u32,
}

impl Body {
    fn with(&self, tail: &[u8]) -> Vec<u8> {
        let mut b = vec![1, self.flags];
        b.extend_from_slice(&1u32.to_be_bytes());
        b.extend_from_slice(&0x0123_4567_89ab_cdefu64.to_be_bytes());
        b.extend_from_slice(&self.issued_at.to_be_bytes());
        b.extend_from_slice(&self.ttl.to_be_bytes());
        b.extend_from_slice(tail);
        b
    }
}

/// Adds the Ed25519 group order L to a 32-byte little-endian scalar (S stays below 2^256).
fn add_group_order(s: &mut [u8]) {
    // L = 2^252 + 27742317777372353535851937790883648493, little-endian.
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut carry = 0u16;
    for (b, l) in s.iter_mut().zip(L) {
        let sum = u16::from(*b) + u16::from(l) + carry;
        *b = sum as u8;
        carry = sum >> 8;
    }
    assert_eq!(carry, 0);
}

/// Signs a hand-built body with an Ed25519 seed (for bodies `sign` would not write).
fn ed_sign(body: &[u8], seed: &[u8; 32]) -> Vec<u8> {
    let sig = ed25519_dalek::SigningKey::from_bytes(seed).sign(body);
    [body, &sig.to_bytes()[..]].concat()
}

fn mac(body: &[u8], key: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
    m.update(body);
    let tag = m.finalize().into_bytes();
    [body, &tag[..16]].concat()
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn encode(raw: &[u8]) -> String {
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = String::new();
    for &b in raw {
        bits = bits << 8 | u32::from(b);
        n += 8;
        while n >= 6 {
            n -= 6;
            out.push(ALPHABET[(bits >> n & 63) as usize] as char);
        }
    }
    if n > 0 {
        out.push(ALPHABET[(bits << (6 - n) & 63) as usize] as char);
    }
    out
}

fn decode(s: &str) -> Vec<u8> {
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c).unwrap() as u32;
        bits = bits << 6 | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

fn nonzero_trailing_bits(token: &str) -> String {
    assert!(!token.len().is_multiple_of(4), "the base token must have unused bits");
    let last = token.as_bytes()[token.len() - 1];
    let v = ALPHABET.iter().position(|&a| a == last).unwrap();
    let alt = ALPHABET[v | 1];
    let mut s = token[..token.len() - 1].to_string();
    s.push(alt as char);
    s
}
