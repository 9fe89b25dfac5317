//! Property tests: mint → verify round trips for arbitrary claims under HMAC
//! and Ed25519 keys (an Ed25519 token verifies with the public key alone), any
//! single changed character is denied, a token never verifies under a key of
//! the other algorithm, and the parsers are total: a token string is malformed
//! or claims that sign and parse back unchanged.

use std::net::IpAddr;

use proptest::prelude::*;
use stile_token::{
    Algorithm, Claims, ClaimsError, Country, CountryRule, Ed25519Secret, IpBinding, KEY_LEN, KeyRing, Policy, Reason,
    Request, Scope, SecretKey, Token, TokenId, canonicalize_path, sign, verify,
};

/// Key ids 1 and `u32::MAX` are HMAC keys, 2 and `u32::MAX - 1` Ed25519 keys (private halves held).
fn ring() -> KeyRing {
    let mut ring = KeyRing::new();
    ring.insert(1, &SecretKey::from_bytes([0x11; KEY_LEN]));
    ring.insert(u32::MAX, &SecretKey::from_bytes([0x22; KEY_LEN]));
    ring.insert_ed25519_secret(2, &Ed25519Secret::from_bytes([0x44; 32]));
    ring.insert_ed25519_secret(u32::MAX - 1, &Ed25519Secret::from_bytes([0x55; 32]));
    ring
}

/// What an edge holds for [`ring`]: the HMAC secrets and the Ed25519 public keys only.
fn verifier_ring() -> KeyRing {
    let mut ring = KeyRing::new();
    ring.insert(1, &SecretKey::from_bytes([0x11; KEY_LEN]));
    ring.insert(u32::MAX, &SecretKey::from_bytes([0x22; KEY_LEN]));
    ring.insert_ed25519(2, &Ed25519Secret::from_bytes([0x44; 32]).public()).unwrap();
    ring.insert_ed25519(u32::MAX - 1, &Ed25519Secret::from_bytes([0x55; 32]).public()).unwrap();
    ring
}

fn segment() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_~!$&'()*+,=:@-]{1,12}".prop_filter("dot segments", |s| s != "." && s != "..")
}

fn scope() -> impl Strategy<Value = Scope> {
    (prop::collection::vec(segment(), 1..6), any::<bool>()).prop_map(|(segs, prefix)| {
        let p = format!("/{}", segs.join("/"));
        if prefix { Scope::Prefix(format!("{p}/")) } else { Scope::Exact(p) }
    })
}

fn country() -> impl Strategy<Value = Country> {
    "[A-Z]{2}".prop_map(|s| Country::parse(&s).unwrap())
}

fn ip() -> impl Strategy<Value = (IpAddr, IpBinding)> {
    prop_oneof![
        (any::<[u8; 4]>(), 1u8..=32).prop_map(|(a, p)| {
            let addr = IpAddr::from(a);
            (addr, IpBinding::new(addr, p).unwrap())
        }),
        (any::<[u8; 16]>(), 1u8..=128)
            .prop_filter("mapped", |(a, _)| std::net::Ipv6Addr::from(*a).to_ipv4_mapped().is_none())
            .prop_map(|(a, p)| {
                let addr = IpAddr::from(a);
                (addr, IpBinding::new(addr, p).unwrap())
            }),
    ]
}

prop_compose! {
    fn claims()(
        key_id in prop_oneof![Just(1u32), Just(u32::MAX), Just(2u32), Just(u32::MAX - 1)],
        token_id in any::<u64>(),
        issued_at in 0u64..4_000_000_000,
        ttl in 1u64..=stile_token::MAX_TTL_SECS,
        nbf_frac in prop::option::of(0.0f64..1.0),
        scope in scope(),
        ip in prop::option::of(ip()),
        countries in prop::option::of((prop::collection::vec(country(), 1..8), any::<bool>())),
        subject in prop::option::of("[!-~]{1,64}"),
        channel in prop::option::of("[a-z0-9._:-]{1,32}"),
    ) -> (Claims, Option<IpAddr>) {
        let not_before = nbf_frac.map(|f| issued_at + ((ttl - 1) as f64 * f) as u64);
        let countries = countries.map(|(list, deny)| if deny { CountryRule::Deny(list) } else { CountryRule::Allow(list) });
        let claims = Claims {
            key_id,
            token_id: TokenId::from_u64(token_id),
            issued_at,
            not_before,
            expires_at: issued_at + ttl,
            scope,
            ip: ip.map(|(_, b)| b),
            countries,
            subject,
            channel,
        };
        (claims, ip.map(|(a, _)| a))
    }
}

/// The path, country and time of a request that every check of `claims` admits.
fn admitted(claims: &Claims) -> (String, Option<Country>, u64) {
    let path = match &claims.scope {
        Scope::Exact(p) => p.clone(),
        Scope::Prefix(p) => format!("{p}seg_1.ts"),
    };
    let country = match &claims.countries {
        Some(CountryRule::Allow(l)) => Some(l[0]),
        Some(CountryRule::Deny(l)) => {
            ["AA", "AB", "AC"].iter().filter_map(|c| Country::parse(c)).find(|c| !l.contains(c))
        }
        None => None,
    };
    let now = claims.not_before.unwrap_or(claims.issued_at);
    (path, country, now)
}

/// A parse result is `malformed`, or claims that sign (with any key) and parse
/// back the same — except a non-canonical scope, which passes the parser's byte
/// rules and which the signer refuses (the MAC covers it; see the fuzz target).
fn malformed_or_round_trips(parsed: Result<Token, Reason>) -> Result<(), TestCaseError> {
    match parsed {
        Err(reason) => prop_assert_eq!(reason, Reason::Malformed),
        Ok(token) => {
            let claims = token.claims();
            let mut ring = KeyRing::new();
            match token.algorithm() {
                Algorithm::HmacSha256 => ring.insert(claims.key_id, &SecretKey::from_bytes([0x33; KEY_LEN])),
                Algorithm::Ed25519 => ring.insert_ed25519_secret(claims.key_id, &Ed25519Secret::from_bytes([0x33; 32])),
            }
            match sign(&claims, &ring) {
                Ok(again) => {
                    let back = Token::parse(&again);
                    prop_assert_eq!(back.as_ref().map(Token::algorithm), Ok(token.algorithm()));
                    prop_assert_eq!(back.map(|t| t.claims()), Ok(claims));
                }
                Err(e) => prop_assert!(matches!(e, ClaimsError::Path(_)), "{:?}", e),
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn mint_verify_round_trip((claims, client) in claims()) {
        let ring = ring();
        let token = sign(&claims, &ring).unwrap();
        prop_assert!(token.len() <= stile_token::MAX_TOKEN_LEN);
        let (path, country, now) = admitted(&claims);
        let req = Request { path: &path, client_ip: client, country, now };
        let verified = verify(&token, &ring, &req, &Policy::default());
        prop_assert!(verified.is_ok(), "{:?}", verified);
        let verified = verified.unwrap();
        prop_assert_eq!(verified.claims(), claims.validated().unwrap());
        let expected = if matches!(claims.key_id, 1 | u32::MAX) { Algorithm::HmacSha256 } else { Algorithm::Ed25519 };
        prop_assert_eq!(verified.algorithm(), expected);
        // What an edge holds (public keys only) verifies the same token.
        prop_assert_eq!(verify(&token, &verifier_ring(), &req, &Policy::default()).map(|t| t.claims()), Ok(verified.claims()));
        // Under a ring whose key of that id is of the other algorithm: unknown_key.
        let mut swapped = KeyRing::new();
        match expected {
            Algorithm::HmacSha256 => swapped.insert_ed25519_secret(claims.key_id, &Ed25519Secret::from_bytes([0x11; 32])),
            Algorithm::Ed25519 => swapped.insert(claims.key_id, &SecretKey::from_bytes([0x44; KEY_LEN])),
        }
        prop_assert_eq!(verify(&token, &swapped, &req, &Policy::default()).unwrap_err(), Reason::UnknownKey);
        // One second past the window (leeway included) is expired.
        let late = Request { now: claims.expires_at + u64::from(Policy::DEFAULT_LEEWAY_SECS), ..req };
        prop_assert_eq!(verify(&token, &ring, &late, &Policy::default()).unwrap_err(), stile_token::Reason::Expired);
    }

    #[test]
    fn any_single_changed_character_is_denied((claims, client) in claims(), pos in any::<prop::sample::Index>(), repl in any::<char>()) {
        let ring = ring();
        let token = sign(&claims, &ring).unwrap();
        let i = pos.index(token.len());
        let mut changed = token.clone();
        changed.replace_range(i..i + 1, &repl.to_string());
        prop_assume!(changed != token);
        let (path, country, now) = admitted(&claims);
        let req = Request { path: &path, client_ip: client, country, now };
        let denied = verify(&changed, &ring, &req, &Policy::default()).unwrap_err();
        // The body is signed: a changed character is malformed or a bad tag — or,
        // changing the key id or version, names a key the ring does not hold.
        prop_assert!(matches!(denied, Reason::Malformed | Reason::BadSignature | Reason::UnknownKey), "{:?}", denied);
    }

    #[test]
    fn parse_is_total(s in ".{0,700}") {
        let parsed = Token::parse(&s);
        // Anything outside the base64url alphabet, or too long, is malformed.
        if s.len() > stile_token::MAX_TOKEN_LEN || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            prop_assert_eq!(parsed.map(|t| t.claims()), Err(Reason::Malformed));
        } else {
            malformed_or_round_trips(parsed)?;
        }
    }

    #[test]
    fn parse_is_total_on_base64ish(s in "[A-Za-z0-9_-]{55,200}") {
        malformed_or_round_trips(Token::parse(&s))?;
    }

    #[test]
    fn canonicalize_is_total_idempotent_and_safe(raw in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(c) = canonicalize_path(&raw) {
            prop_assert_eq!(canonicalize_path(c.as_bytes()).unwrap().into_owned(), c.clone().into_owned());
            prop_assert!(c.starts_with('/'));
            prop_assert!(!c.contains("//") && !c.contains("/./") && !c.contains("/../"));
            prop_assert!(!c.ends_with("/.") && !c.ends_with("/.."));
            prop_assert!(c.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b'\\' && b != b';'));
        }
    }

    #[test]
    fn canonicalize_on_path_like_input(raw in "(/([a-z.]{0,3}|%[0-9a-fA-F]{2}|[;\\\\]))+") {
        if let Ok(c) = canonicalize_path(raw.as_bytes()) {
            prop_assert_eq!(canonicalize_path(c.as_bytes()).unwrap().into_owned(), c.clone().into_owned());
            let lower = c.to_ascii_lowercase();
            for bad in ["%2f", "%5c", "%25", "%00", "%3b", "/../", "/./"] {
                prop_assert!(!lower.contains(bad), "{} in {}", bad, c);
            }
        }
    }
}
