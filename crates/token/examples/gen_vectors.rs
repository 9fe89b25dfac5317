//! Writes the token test vectors (`docs/token-vectors.json`) to stdout.
//!
//! `cargo run -p stile-token --example gen_vectors > docs/token-vectors.json`
//!
//! The output is deterministic. Valid tokens are produced by `stile_token::sign`;
//! malformed ones are assembled byte by byte here and given a correct MAC, so a
//! verifier must reject them for their structure, not their signature. The
//! test `tests/vectors.rs` fails if this output and the committed file differ.

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use stile_token::{
    Claims, Country, CountryRule, IpBinding, KeyRing, Policy, Request, Scope, SecretKey, TokenId, canonicalize_path,
    sign, verify,
};

const NOW: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z
const KEY1: [u8; 32] = *b"stile-test-vector-key-one-32byte";
const KEY2: [u8; 32] = *b"stile-test-vector-key-two-32byte";

fn main() {
    let mut ring = KeyRing::new();
    ring.insert(1, &SecretKey::from_bytes(KEY1));
    ring.insert(2, &SecretKey::from_bytes(KEY2));
    let policy = Policy::default();
    let mut vectors = Vec::new();

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
        countries: Some(CountryRule::Allow(vec![Country::parse("FR").unwrap(), Country::parse("DE").unwrap()])),
        subject: Some("viewer-42".into()),
        channel: Some("embed:partner-x".into()),
        ..base.clone()
    };
    let exact = Claims { scope: Scope::Exact("/vod/abc/master.m3u8".into()), ..base.clone() };
    let v6 = Claims {
        ip: Some(IpBinding::for_client("2001:db8:1:2:aaaa:bbbb:cccc:dddd".parse().unwrap(), 32, 64).unwrap()),
        ..base.clone()
    };
    let v4_exact = Claims { ip: Some(IpBinding::new("198.51.100.7".parse().unwrap(), 32).unwrap()), ..base.clone() };
    let deny = Claims { countries: Some(CountryRule::Deny(vec![Country::parse("US").unwrap()])), ..base.clone() };
    let encoded_scope = Claims { scope: Scope::parse("/vod/caf%C3%A9/").unwrap(), ..base.clone() };

    let seg = "/vod/abc/720p/seg_00001.ts";
    let mut add = |name: &str, claims: &Claims, path: &str, ip: Option<&str>, country: Option<&str>, now: u64| {
        let token = sign(claims, &ring).unwrap();
        vectors.push(vector(&ring, &policy, name, &token, path, ip, country, now));
    };

    // Valid, and each check at its boundary.
    add("minimal prefix token, segment under the prefix", &base, seg, None, None, NOW);
    add("prefix admits the master playlist", &base, "/vod/abc/master.m3u8", None, None, NOW);
    add("every optional claim present", &full, seg, Some("203.0.113.77"), Some("DE"), NOW);
    add("exact scope admits its path", &exact, "/vod/abc/master.m3u8", None, None, NOW);
    add("exact scope admits nothing else", &exact, "/vod/abc/master.m3u8.bak", None, None, NOW);
    add("prefix matches on a segment boundary only", &base, "/vod/abcd/seg.ts", None, None, NOW);
    add("prefix does not admit its own path without slash", &base, "/vod/abc", None, None, NOW);
    add("last second inside expiry + leeway", &base, seg, None, None, base.expires_at + 4);
    add("expired at expiry + leeway", &base, seg, None, None, base.expires_at + 5);
    add("long expired", &base, seg, None, None, base.expires_at + 86_400);
    add("issued in the future beyond leeway", &base, seg, None, None, base.issued_at - 6);
    add("issued in the future within leeway", &base, seg, None, None, base.issued_at - 5);
    add("before not-before beyond leeway", &full, seg, Some("203.0.113.1"), Some("DE"), NOW - 36);
    add("not-before within leeway", &full, seg, Some("203.0.113.1"), Some("DE"), NOW - 35);
    add("IPv4 network binding mismatch", &full, seg, Some("203.0.114.1"), Some("DE"), NOW);
    add("IP-bound token without a client address", &full, seg, None, Some("DE"), NOW);
    add("IPv4 exact binding via IPv4-mapped IPv6 client", &v4_exact, seg, Some("::ffff:198.51.100.7"), None, NOW);
    add("IPv6 /64 binding admits a rotated privacy address", &v6, seg, Some("2001:db8:1:2::99"), None, NOW);
    add("IPv6 /64 binding denies another /64", &v6, seg, Some("2001:db8:1:3::1"), None, NOW);
    add("country not in allow-list", &full, seg, Some("203.0.113.1"), Some("US"), NOW);
    add("unknown country under allow-list (policy deny)", &full, seg, Some("203.0.113.1"), None, NOW);
    add("country in deny-list", &deny, seg, None, Some("US"), NOW);
    add("country not in deny-list", &deny, seg, None, Some("CA"), NOW);
    let nbf0 = Claims { not_before: Some(base.issued_at), ..base.clone() };
    add("not-before equal to the issue time", &nbf0, seg, None, None, NOW);
    let root = Claims { scope: Scope::Prefix("/".into()), ..base.clone() };
    add("root prefix admits every path", &root, "/live/x.ts", None, None, NOW);
    add("percent-encoded scope admits its canonical path", &encoded_scope, "/vod/caf%C3%A9/a.ts", None, None, NOW);

    // Signature and key failures.
    let good = sign(&base, &ring).unwrap();
    let mut raw = decode(&good);
    let last = raw.len() - 1;
    raw[last] ^= 1;
    vectors.push(vector(&ring, &policy, "tag bit flipped", &encode(&raw), seg, None, None, NOW));
    let mut raw = decode(&good);
    raw[20] ^= 0x40; // inside issued_at
    vectors.push(vector(&ring, &policy, "claims changed after signing", &encode(&raw), seg, None, None, NOW));
    let mut other = KeyRing::new();
    other.insert(1, &SecretKey::from_bytes(KEY2));
    let wrong_key = sign(&base, &other).unwrap();
    vectors.push(vector(&ring, &policy, "signed with another secret", &wrong_key, seg, None, None, NOW));
    other.insert(9, &SecretKey::from_bytes(KEY1));
    let unknown = sign(&Claims { key_id: 9, ..base.clone() }, &other).unwrap();
    vectors.push(vector(&ring, &policy, "unknown key id", &unknown, seg, None, None, NOW));

    // Malformed: structure errors, each with a correct MAC.
    let body = |flags: u8, tail: &[u8]| -> Vec<u8> {
        let mut b = vec![1, flags];
        b.extend_from_slice(&1u32.to_be_bytes());
        b.extend_from_slice(&0x0123_4567_89ab_cdefu64.to_be_bytes());
        b.extend_from_slice(&(NOW - 60).to_be_bytes());
        b.extend_from_slice(&3660u32.to_be_bytes());
        b.extend_from_slice(tail);
        b
    };
    let scope = |s: &str| -> Vec<u8> {
        let mut v = vec![s.len() as u8];
        v.extend_from_slice(s.as_bytes());
        v
    };
    let mut malformed = |name: &str, raw_body: Vec<u8>| {
        let t = encode(&mac(&raw_body, &KEY1));
        vectors.push(vector(&ring, &policy, name, &t, seg, None, None, NOW));
    };
    // Sanity: the hand-built body equals what `sign` writes.
    assert_eq!(encode(&mac(&body(1, &scope("/vod/abc/")), &KEY1)), good);
    let mut v2 = body(1, &scope("/vod/abc/"));
    v2[0] = 2;
    malformed("unknown version", v2);
    malformed("reserved flag bit set", body(1 | 0x80, &scope("/vod/abc/")));
    malformed("deny flag without countries", body(1 | 0x10, &scope("/vod/abc/")));
    malformed("prefix flag on a scope without trailing slash", body(1, &scope("/vod/abc")));
    malformed("exact scope with trailing slash", body(0, &scope("/vod/abc/")));
    malformed("empty scope", body(1, &[0]));
    malformed("scope not starting with slash", body(1, &scope("vod/abc/")));
    malformed("scope with a space", body(1, &scope("/vod/a c/")));
    malformed("scope length past the end", body(1, &[200, b'/', b'v']));
    malformed("trailing byte after the last field", body(1, &[&scope("/vod/abc/")[..], &[0]].concat()));
    malformed("countries not sorted", body(1 | 0x08, &[&scope("/vod/abc/")[..], b"\x02FRDE"].concat()));
    malformed("duplicate country", body(1 | 0x08, &[&scope("/vod/abc/")[..], b"\x02DEDE"].concat()));
    malformed("lower-case country", body(1 | 0x08, &[&scope("/vod/abc/")[..], b"\x01de"].concat()));
    malformed("zero countries", body(1 | 0x08, &[&scope("/vod/abc/")[..], b"\x00"].concat()));
    malformed("IPv4 host bits set", body(1 | 0x04, &[&scope("/vod/abc/")[..], &[4, 24, 203, 0, 113, 7]].concat()));
    malformed("IPv4 prefix 33", body(1 | 0x04, &[&scope("/vod/abc/")[..], &[4, 33, 203, 0, 113, 7]].concat()));
    malformed("unknown address family", body(1 | 0x04, &[&scope("/vod/abc/")[..], &[5, 8, 10, 0, 0, 0]].concat()));
    malformed("subject with a space", body(1 | 0x20, &[&scope("/vod/abc/")[..], b"\x03a b"].concat()));
    malformed("channel with upper case", body(1 | 0x40, &[&scope("/vod/abc/")[..], b"\x05Email"].concat()));
    let mut zero_ttl = body(1, &scope("/vod/abc/"));
    zero_ttl[22..26].copy_from_slice(&0u32.to_be_bytes());
    malformed("zero lifetime", zero_ttl);
    let mut long_ttl = body(1, &scope("/vod/abc/"));
    long_ttl[22..26].copy_from_slice(&(31 * 86_400 + 1u32).to_be_bytes());
    malformed("lifetime over 31 days", long_ttl);
    malformed("NBF flag with offset 0 and an empty scope", body(1 | 0x02, &[&0u32.to_be_bytes()[..], &[0]].concat()));
    malformed("field cut short by the tag", body(1 | 0x20, &[&scope("/vod/abc/")[..], b"\x09abc"].concat()));
    malformed(
        "IPv6 host bits set",
        body(
            1 | 0x04,
            &[&scope("/vod/abc/")[..], &[6, 64], &[0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]].concat(),
        ),
    );
    malformed(
        "IPv4-mapped address written as family 6",
        body(
            1 | 0x04,
            &[&scope("/vod/abc/")[..], &[6, 128], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1]].concat(),
        ),
    );
    malformed("IP prefix 0", body(1 | 0x04, &[&scope("/vod/abc/")[..], &[4, 0, 0, 0, 0, 0]].concat()));
    let long_subject = [&[65u8][..], &[b'x'; 65]].concat();
    malformed("subject of 65 bytes", body(1 | 0x20, &[&scope("/vod/abc/")[..], &long_subject].concat()));
    let long_channel = [&[33u8][..], &[b'x'; 33]].concat();
    malformed("channel of 33 bytes", body(1 | 0x40, &[&scope("/vod/abc/")[..], &long_channel].concat()));
    malformed("not-before at expiry", body(1 | 0x02, &[&3660u32.to_be_bytes()[..], &scope("/vod/abc/")].concat()));

    // Malformed at the string level.
    let mut text = |name: &str, token: String| {
        vectors.push(vector(&ring, &policy, name, &token, seg, None, None, NOW));
    };
    text("empty", String::new());
    text("padding character", format!("{good}="));
    text("standard base64 alphabet", good.replace(['-', '_'], "+"));
    text("character outside the alphabet", format!("{}*", &good[..good.len() - 1]));
    text("impossible length (1 mod 4)", format!("{good}AAA"));
    text("truncated", good[..good.len() - 8].to_string());
    text("too long", "A".repeat(700));
    // Non-zero unused bits in the last character: same bytes, another spelling.
    let alt = nonzero_trailing_bits(&good);
    text("non-zero trailing bits (second spelling of a valid token)", alt);

    let paths: Vec<Value> = [
        "/vod/abc/seg.ts",
        "/vod/%61bc/seg.ts",
        "/vod/a%2Ets",
        "/vod/caf%c3%a9/x.ts",
        "/vod/a|b",
        "/vod/a%20b",
        "/vod/a%3fb",
        "/vod/abc/",
        "/vod/abc%2fseg.ts",
        "/vod/abc%5Cseg.ts",
        "/vod/%252e%252e/x",
        "/vod/%00",
        "/vod/a;p=1/x",
        "/vod/a\\b",
        "/vod//x",
        "/vod/./x",
        "/vod/../x",
        "/vod/%2e%2e/x",
        "/vod/%c0%ae%c0%ae/x",
        "/vod/%e0%80%af",
        "/vod/%ed%a0%80",
        "/vod/%ef%bc%8f",
        "/vod/%c2%85",
        "/vod/%zz",
        "vod/x",
        "/VOD/Abc/Seg.TS",
        "/",
        "/vod/%",
        "/vod/%4",
        "/vod/%C3",
        "/vod/%C3A",
        "/vod/%C3%",
        "/vod/%F0%9F%8E%AC.ts",
        "/vod/%F4%90%80%80",
        &format!("/{}", "a".repeat(2047)),
        &format!("/{}", "a".repeat(2048)),
        &format!("/{}", "|".repeat(700)),
    ]
    .iter()
    .map(|p| match canonicalize_path(p.as_bytes()) {
        Ok(c) => json!({ "input": p, "canonical": c }),
        Err(_) => json!({ "input": p, "canonical": null }),
    })
    .collect();

    let doc = json!({
        "format": "stile-token",
        "version": 1,
        "keys": [
            { "id": 1, "secret_hex": hex::encode(KEY1) },
            { "id": 2, "secret_hex": hex::encode(KEY2) },
        ],
        "policy": { "leeway_secs": policy.leeway_secs, "unknown_country": "deny" },
        "vectors": vectors,
        "paths": paths,
    });
    println!("{}", serde_json::to_string_pretty(&doc).unwrap());
}

#[allow(clippy::too_many_arguments)] // reason: one row of the table, named fields follow.
fn vector(
    ring: &KeyRing,
    policy: &Policy,
    name: &str,
    token: &str,
    path: &str,
    ip: Option<&str>,
    country: Option<&str>,
    now: u64,
) -> Value {
    let req =
        Request { path, client_ip: ip.map(|s| s.parse().unwrap()), country: country.and_then(Country::parse), now };
    let (expect, claims) = match verify(token, ring, &req, policy) {
        Ok(t) => ("ok".to_string(), Some(claims_json(&t.claims()))),
        Err(r) => (r.as_str().to_string(), None),
    };
    let mut v = json!({
        "name": name,
        "token": token,
        "request": { "path": path, "client_ip": ip, "country": country, "now": now },
        "expect": expect,
    });
    if let Some(c) = claims {
        v["claims"] = c;
    }
    v
}

fn claims_json(c: &Claims) -> Value {
    json!({
        "key_id": c.key_id,
        "token_id": c.token_id.to_string(),
        "issued_at": c.issued_at,
        "not_before": c.not_before,
        "expires_at": c.expires_at,
        "scope": c.scope.path(),
        "scope_is_prefix": c.scope.is_prefix(),
        "ip": c.ip.map(|i| i.to_string()),
        "countries": c.countries.as_ref().map(|r| match r {
            CountryRule::Allow(l) => json!({"allow": l.iter().map(|c| c.as_str().to_owned()).collect::<Vec<_>>()}),
            CountryRule::Deny(l) => json!({"deny": l.iter().map(|c| c.as_str().to_owned()).collect::<Vec<_>>()}),
        }),
        "subject": c.subject,
        "channel": c.channel,
    })
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
