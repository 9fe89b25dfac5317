//! Token parse + verify on arbitrary input, both format versions (HMAC key 1,
//! Ed25519 key 2, held as a verifier holds it: the public key): never panics;
//! `verify` is `malformed` exactly when `Token::parse` fails, and otherwise
//! agrees with parse + signature + claim checks, and with the edge's
//! verified-signature cache (asked twice: a hit never differs from a check), for each of a few requests (time, path, client
//! address, country, unknown-country policy). Whatever parses re-encodes to a token with the
//! same claims — except a scope that passes the parser's byte rules without
//! being canonical (the spec leaves that check to signers, since the scope is
//! covered by the MAC). Session credentials (`link.session`): `Session::parse`
//! fails only as `malformed`, `verify_session` agrees with parse + check, and a
//! parsed session re-issued with its claims parses back to the same claims.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stile_edge::verified::VerifiedCache;
use stile_token::{
    Algorithm, ClaimsError, Country, Ed25519Secret, KeyRing, Policy, Reason, Request, SecretKey, Session, Token,
    UnknownCountry, verify, verify_session,
};

const NOW: u64 = 1_767_225_600;

/// Eight requests whose bits cover every path, binding and policy choice.
const PICKS: [u8; 8] = [0x00, 0x15, 0x2a, 0x3f, 0xc1, 0x96, 0x6b, 0xfc];

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let mut ring = KeyRing::new();
    ring.insert(1, &SecretKey::from_bytes([1; 32]));
    ring.insert_ed25519(2, &Ed25519Secret::from_bytes([2; 32]).public()).expect("a valid public key");
    if stile_token::session::is_session(s) {
        session(s, &ring);
        return;
    }
    let parsed = Token::parse(s);
    if let Ok(token) = &parsed {
        let cache = VerifiedCache::new(4);
        let direct = token.verify_signature(&ring);
        assert_eq!(cache.verify(token, &ring), direct, "the cache's miss disagrees with the check");
        assert_eq!(cache.verify(token, &ring), direct, "the cache's second answer disagrees with the check");
    }
    if let Err(reason) = parsed {
        assert_eq!(reason, Reason::Malformed, "parse fails only as malformed");
    }
    for pick in PICKS {
        let paths = ["/vod/abc/seg.ts", "/vod/abc/", "/", "/vod/abd/seg.ts"];
        let req = Request {
            path: paths[usize::from(pick & 3)],
            client_ip: (pick & 4 != 0).then(|| "203.0.113.9".parse().expect("an address")),
            country: (pick & 8 != 0).then(|| Country::parse("DE").expect("a country")),
            now: NOW.wrapping_add(u64::from(pick >> 4) << 28),
        };
        let policy = Policy {
            unknown_country: if pick & 0x80 != 0 { UnknownCountry::Allow } else { UnknownCountry::Deny },
            ..Policy::default()
        };
        let verified = verify(s, &ring, &req, &policy).map(|t| t.claims());
        match &parsed {
            Err(_) => assert_eq!(verified, Err(Reason::Malformed), "verify of an unparsable token"),
            Ok(token) => {
                let by_parts = token.verify_signature(&ring).and_then(|()| token.check(&req, &policy));
                assert_ne!(by_parts, Err(Reason::Malformed), "a parsed token is never malformed afterwards");
                assert_eq!(verified, by_parts.map(|()| token.claims()), "verify disagrees with its parts");
            }
        }
    }
    let Ok(token) = parsed else { return };

    // Anything that parses is structurally valid claims: signing them again
    // must succeed and parse back to the same claims.
    let claims = token.claims();
    let mut ring = KeyRing::new();
    match token.algorithm() {
        Algorithm::HmacSha256 => ring.insert(claims.key_id, &SecretKey::from_bytes([2; 32])),
        Algorithm::Ed25519 => ring.insert_ed25519_secret(claims.key_id, &Ed25519Secret::from_bytes([2; 32])),
    }
    match stile_token::sign_with_session(&claims, token.session_policy().as_ref(), &ring) {
        Ok(again) => {
            let back = Token::parse(&again).expect("re-signed token parses");
            assert_eq!(back.algorithm(), token.algorithm());
            assert_eq!(back.claims(), claims);
            assert_eq!(back.session_policy(), token.session_policy());
        }
        Err(e) => assert!(matches!(e, ClaimsError::Path(_)), "parsed claims rejected by the signer: {e:?}"),
    }
});

/// A session credential: parse, verify, and re-issue.
fn session(s: &str, ring: &KeyRing) {
    let mut ring = ring.clone();
    ring.set_session_secret(2, &SecretKey::from_bytes([3; 32]));
    let parsed = Session::parse(s);
    if let Err(reason) = &parsed {
        assert_eq!(*reason, Reason::Malformed, "session parse fails only as malformed");
    }
    for pick in PICKS {
        let req = Request {
            path: if pick & 1 == 0 { "/vod/abc/seg.ts" } else { "/live/x/seg.ts" },
            client_ip: (pick & 4 != 0).then(|| "203.0.113.9".parse().expect("an address")),
            country: None,
            now: NOW.wrapping_add(u64::from(pick >> 4) << 20),
        };
        let verified = verify_session(s, &ring, &req, &Policy::default()).map(|v| v.claims());
        match &parsed {
            Err(_) => assert_eq!(verified, Err(Reason::Malformed)),
            Ok(session) => {
                let by_parts = session.check(&ring, &req, &Policy::default());
                assert_ne!(by_parts, Err(Reason::Malformed), "a parsed session is never malformed afterwards");
                assert_eq!(verified, by_parts.map(|()| session.claims()), "verify_session disagrees with its parts");
            }
        }
    }
    let Ok(session) = parsed else { return };
    if ring.has_session_secret(session.link().key_id()) {
        let again = stile_token::session::issue(session.link(), &session.claims(), &ring).expect("parsed claims issue");
        let back = Session::parse(&again).expect("re-issued session parses");
        assert_eq!(back.claims(), session.claims());
        assert_eq!(back.link().claims(), session.link().claims());
    }
}
