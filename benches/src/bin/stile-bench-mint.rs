//! Mints the link and writes the state file for the proxy load harness
//! (`scripts/bench-load`).
//!
//! ```text
//! stile-bench-mint STATE_FILE SCOPE PATH NOW REVOKED [ALGORITHM | session]
//! ```
//!
//! Writes `STATE_FILE` (key 1, a fixed benchmark HMAC secret; key 2, the public
//! key of a fixed benchmark Ed25519 key; and `REVOKED` revoked token ids so the
//! revocation lookup runs against a realistic table) and prints one token for
//! `PATH`, scoped to the prefix `SCOPE`, issued at `NOW` (Unix seconds, given by
//! the caller: this tool reads no clock) and valid for an hour, signed with key 1
//! (`ALGORITHM` absent or `hmac-sha256`) or key 2 (`ed25519`). The token binds
//! no IP or country, like most links. With `session` it prints instead a playback
//! session credential (`docs/sessions.md`): an HMAC link (key 1) carrying a session
//! policy (idle 120 s, maximum 4 h, no client binding) and a session part started
//! at `NOW` with a 4-hour lifetime, as an edge would have issued it. Exit 64 on bad
//! arguments.

use std::fmt::Write as _;

use base64::Engine as _;
use std::process::ExitCode;

use stile_token::{
    Algorithm, Claims, Ed25519Secret, KEY_LEN, KeyRing, Scope, SecretKey, SessionId, SessionPolicy, Token, TokenId,
};

/// The benchmark's signing secret (32 bytes of 0x5a). Never a real key.
const SECRET: [u8; KEY_LEN] = [0x5a; KEY_LEN];
/// The benchmark's Ed25519 private key (32 bytes of 0x5b). Never a real key.
const ED25519_SEED: [u8; 32] = [0x5b; 32];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (state_file, scope, path, now, revoked, algorithm) = match &args[..] {
        [_, f, s, p, n, r] => (f, s, p, n, r, Some(Algorithm::HmacSha256)),
        [_, f, s, p, n, r, a] if a == "session" => (f, s, p, n, r, None),
        [_, f, s, p, n, r, a] => match Algorithm::parse(a) {
            Some(a) => (f, s, p, n, r, Some(a)),
            None => {
                eprintln!("stile-bench-mint: the last argument must be hmac-sha256, ed25519 or session");
                return ExitCode::from(64);
            }
        },
        _ => {
            eprintln!("usage: stile-bench-mint STATE_FILE SCOPE PATH NOW REVOKED [hmac-sha256|ed25519|session]");
            return ExitCode::from(64);
        }
    };
    // `None`: a session credential, on an HMAC link.
    let session = algorithm.is_none();
    let algorithm = algorithm.unwrap_or(Algorithm::HmacSha256);
    let (Ok(now), Ok(revoked), Ok(scope)) = (now.parse::<u64>(), revoked.parse::<u64>(), Scope::parse(scope)) else {
        eprintln!("stile-bench-mint: NOW and REVOKED must be integers, SCOPE a canonical path");
        return ExitCode::from(64);
    };
    let mut ring = KeyRing::new();
    ring.insert(1, &SecretKey::from_bytes(SECRET));
    let ed25519 = Ed25519Secret::from_bytes(ED25519_SEED);
    ring.insert_ed25519_secret(2, &ed25519);
    let claims = Claims {
        key_id: if algorithm == Algorithm::Ed25519 { 2 } else { 1 },
        token_id: TokenId::from_u64(u64::MAX),
        issued_at: now,
        not_before: None,
        expires_at: now + 3600,
        scope,
        ip: None,
        countries: None,
        subject: Some("bench-viewer".into()),
        channel: Some("bench".into()),
    };
    let policy = SessionPolicy { idle_secs: 120, max_secs: 4 * 3600, bind_v4: 0, bind_v6: 0 };
    let signed = stile_token::sign_with_session(&claims, session.then_some(&policy), &ring).and_then(|link| {
        if !session {
            return Ok(link);
        }
        let parsed = Token::parse(&link).expect("a link just signed parses");
        stile_token::session::start(&parsed, SessionId(1), now, policy.max_secs, None, &ring)
    });
    let token = match signed {
        Ok(t) => t,
        Err(e) => {
            eprintln!("stile-bench-mint: cannot sign: {e:?}");
            return ExitCode::from(64);
        }
    };
    if !claims.scope.admits(path) {
        eprintln!("stile-bench-mint: {path} is outside the scope");
        return ExitCode::from(64);
    }
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let mut json = format!(
        "{{\"version\":1,\"generated_at\":{now},\"keys\":[{{\"id\":1,\"secret\":\"{}\"}},\
         {{\"id\":2,\"algorithm\":\"ed25519\",\"public_key\":\"{}\"}}],\"revocations\":[",
        b64(&SECRET),
        b64(ed25519.public().as_bytes())
    );
    for i in 0..revoked {
        let sep = if i == 0 { "" } else { "," };
        // Multiples of 7919 below 2^64 - 1: never the minted token's id (u64::MAX).
        write!(json, "{sep}{{\"kind\":\"token_id\",\"value\":\"{:016x}\",\"expires_at\":{}}}", i * 7919, now + 3600)
            .unwrap();
    }
    json.push_str("]}\n");
    if let Err(e) = std::fs::write(state_file, json) {
        eprintln!("stile-bench-mint: cannot write {state_file}: {e}");
        return ExitCode::from(1);
    }
    println!("{token}");
    ExitCode::SUCCESS
}
