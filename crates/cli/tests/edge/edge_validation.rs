//! End to end: every reason code through every token transport, against a real
//! `stile edge` process and a recording origin; the origin never sees a token.

use stile_tests::edge::*;
use stile_tests::net::*;
use stile_tests::token::*;
use stile_token::{Country, CountryRule, IpBinding, KEY_LEN, KeyRing, Scope, SecretKey, TokenId};

const SEG: &str = "/vod/abc/v1/seg0.ts";
const GB_CLIENT: (&str, &str) = ("X-Forwarded-For", "81.2.69.142");

fn setup() -> (tempfile::TempDir, Origin, Edge) {
    let content = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(content.path().join("vod/abc/v1")).unwrap();
    std::fs::write(content.path().join("vod/abc/v1/seg0.ts"), b"segment-bytes").unwrap();
    let origin = Origin::start(content.path());
    let revoked = serde_json::json!([
        { "kind": "token_id", "value": "00000000000000aa", "expires_at": now() + 3600 },
        { "kind": "subject", "value": "banned", "issued_before": now() },
        { "kind": "prefix", "value": "/vod/abc/v1/", "issued_before": now() - 3000 },
    ]);
    let extra = format!(
        "{BASE_CONFIG}[client]\ntrusted_hops = 1\ngeoip_db = \"{}/GeoLite2-Country-Test.mmdb\"\n",
        stile_tests::edge::GEOIP_DIR
    );
    let edge = Edge::start(&origin, &extra, &state_json(1, revoked, None));
    (content, origin, edge)
}

/// The same request with the token in each transport.
fn via_all(edge: &Edge, token: &str) -> Vec<(&'static str, Response)> {
    let cookie = format!("stile={token}");
    vec![
        ("query", edge.get(&format!("{SEG}?st={token}"), &[GB_CLIENT])),
        ("path", edge.get(&format!("/_st/{token}{SEG}"), &[GB_CLIENT])),
        ("cookie", edge.get(SEG, &[GB_CLIENT, ("Cookie", &cookie)])),
    ]
}

#[test]
fn every_reason_code_through_every_transport() {
    let (_content, origin, edge) = setup();
    let now = now();
    let mut other = KeyRing::new();
    other.insert(KEY_ID, &SecretKey::from_bytes([9; KEY_LEN]));
    let mut claims = claims();
    claims.token_id = TokenId::from_u64(0x42);
    let forged = stile_token::sign(&claims, &other).unwrap();
    let mut k99 = ring();
    k99.insert(99, &SecretKey::from_bytes([1; KEY_LEN]));
    claims.key_id = 99;
    let unknown_key = stile_token::sign(&claims, &k99).unwrap();
    let country = |c: &str| Country::parse(c).unwrap();

    let rows: Vec<(&str, String, Option<&str>)> = vec![
        ("valid", mint(|_| {}), None),
        ("garbage", "not-a-token".into(), Some("malformed")),
        ("unknown key", unknown_key, Some("unknown_key")),
        ("forged", forged, Some("bad_signature")),
        (
            "expired",
            mint(|c| {
                c.issued_at = now - 700;
                c.expires_at = now - 100;
            }),
            Some("expired"),
        ),
        ("not yet valid", mint(|c| c.not_before = Some(now + 300)), Some("not_yet_valid")),
        ("other asset", mint(|c| c.scope = Scope::parse("/vod/other/").unwrap()), Some("scope")),
        ("exact scope elsewhere", mint(|c| c.scope = Scope::parse("/vod/abc/v1/seg1.ts").unwrap()), Some("scope")),
        (
            "ip bound elsewhere",
            mint(|c| c.ip = Some(IpBinding::new("198.51.100.0".parse().unwrap(), 24).unwrap())),
            Some("ip"),
        ),
        ("ip bound here", mint(|c| c.ip = Some(IpBinding::new("81.2.69.142".parse().unwrap(), 32).unwrap())), None),
        ("geo allow SE", mint(|c| c.countries = Some(CountryRule::Allow(vec![country("SE")]))), Some("geo")),
        ("geo deny GB", mint(|c| c.countries = Some(CountryRule::Deny(vec![country("GB")]))), Some("geo")),
        ("geo allow GB", mint(|c| c.countries = Some(CountryRule::Allow(vec![country("GB"), country("SE")]))), None),
        ("revoked id", mint(|c| c.token_id = TokenId::from_u64(0xaa)), Some("revoked")),
        ("revoked subject", mint(|c| c.subject = Some("banned".into())), Some("revoked")),
        ("revoked prefix", mint(|c| c.issued_at = now - 3500), Some("revoked")),
    ];
    let mut tokens = Vec::new();
    for (name, token, want) in &rows {
        for (transport, r) in via_all(&edge, token) {
            match want {
                None => {
                    assert_eq!(r.status, 200, "{name} via {transport}: {:?}", r.header("x-stile-reason"));
                    assert_eq!(r.body, b"segment-bytes");
                }
                Some(reason) => {
                    assert_eq!(r.status, 403, "{name} via {transport}");
                    assert_eq!(r.header("x-stile-reason"), Some(*reason), "{name} via {transport}");
                    assert_eq!(r.body, b"forbidden\n");
                    assert!(!String::from_utf8_lossy(&r.body).contains(token.as_str()));
                }
            }
        }
        tokens.push(token.clone());
    }
    let missing = edge.get(SEG, &[GB_CLIENT]);
    assert_eq!((missing.status, missing.header("x-stile-reason")), (401, Some("missing")));
    assert_eq!(missing.body, b"unauthorized\n");

    // Path-prefix tokens beat query tokens, which beat cookies: the first one present wins.
    let good = mint(|_| {});
    let r = edge.get(&format!("/_st/{good}{SEG}?st=garbage"), &[GB_CLIENT, ("Cookie", "stile=garbage")]);
    assert_eq!(r.status, 200);
    let r = edge.get(&format!("{SEG}?st={good}"), &[GB_CLIENT, ("Cookie", "stile=garbage")]);
    assert_eq!(r.status, 200);
    let r = edge.get(&format!("{SEG}?st=garbage"), &[GB_CLIENT, ("Cookie", &format!("stile={good}"))]);
    assert_eq!(r.header("x-stile-reason"), Some("malformed"));
    let r = edge.get(&format!("{SEG}?st={good}&st={good}"), &[GB_CLIENT]);
    assert_eq!(r.header("x-stile-reason"), Some("malformed"), "a duplicated token parameter is ambiguous");

    // Other query parameters and cookies reach the origin; tokens never do.
    let r = edge.get(&format!("{SEG}?a=1&st={good}&b=2"), &[GB_CLIENT, ("Cookie", &format!("x=1; stile={good}"))]);
    assert_eq!(r.status, 200);
    let seen = origin.requests();
    assert!(seen.iter().any(|h| h.starts_with(&format!("GET {SEG}?a=1&b=2 HTTP/1.1"))), "{seen:#?}");
    assert!(seen.iter().any(|h| h.to_ascii_lowercase().contains("cookie: x=1\r\n")), "{seen:#?}");
    for head in &seen {
        for t in &tokens {
            assert!(!head.contains(t.as_str()), "origin saw a token: {head}");
        }
        assert!(!head.contains("st=") && !head.contains("/_st/") && !head.contains("stile="), "{head}");
    }
    // Nor does the log.
    let log = edge.log();
    for t in &tokens {
        assert!(!log.contains(t.as_str()), "a token reached the log");
    }
    assert!(log.contains(r#""decision":"deny""#) && log.contains(r#""reason":"revoked""#), "access log: {log}");
    assert!(log.contains(r#""token.id":"1111222233334444""#), "access log has token ids");
}

#[test]
fn stale_state_fails_closed_when_configured() {
    let content = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(content.path().join("vod/abc/v1")).unwrap();
    std::fs::write(content.path().join("vod/abc/v1/seg0.ts"), b"x").unwrap();
    let origin = Origin::start(content.path());
    let state = state_json(1, serde_json::json!([]), Some(now() - 3600));
    let edge = Edge::start_with(&origin, BASE_CONFIG, "max_age_secs = 60\nstale_policy = \"deny\"", &state);
    for (transport, r) in via_all(&edge, &mint(|_| {})) {
        assert_eq!((r.status, r.header("x-stile-reason")), (403, Some("stale_state")), "{transport}");
    }
}
