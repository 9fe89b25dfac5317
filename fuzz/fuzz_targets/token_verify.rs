//! Token parse + verify on arbitrary input: never panics, and whatever parses
//! re-encodes to a token with the same claims — except a scope that passes the
//! parser's byte rules without being canonical (the spec leaves that check to
//! signers, since the scope is covered by the MAC).
#![no_main]

use libfuzzer_sys::fuzz_target;
use stile_token::{ClaimsError, KeyRing, Policy, Request, SecretKey, Token, verify};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let mut ring = KeyRing::new();
    ring.insert(1, &SecretKey::from_bytes([1; 32]));
    let req = Request { path: "/vod/abc/seg.ts", client_ip: None, country: None, now: 1_767_225_600 };
    let _ = verify(s, &ring, &req, &Policy::default());
    if let Ok(token) = Token::parse(s) {
        // Anything that parses is structurally valid claims: signing them again
        // must succeed and parse back to the same claims.
        let claims = token.claims();
        let mut ring = KeyRing::new();
        ring.insert(claims.key_id, &SecretKey::from_bytes([2; 32]));
        match stile_token::sign(&claims, &ring) {
            Ok(again) => assert_eq!(Token::parse(&again).expect("re-signed token parses").claims(), claims),
            Err(e) => assert!(matches!(e, ClaimsError::Path(_)), "parsed claims rejected by the signer: {e:?}"),
        }
    }
});
