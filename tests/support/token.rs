//! Stile tokens for tests: the one test key every test edge holds, claims to
//! tweak, minting with the production signer, and an edge state file holding the
//! key and given revocations.

use stile_token::{Claims, KEY_LEN, KeyRing, Scope, SecretKey, TokenId};

/// The key id every test edge holds.
pub const KEY_ID: u32 = 1;
/// The secret of key [`KEY_ID`].
pub const SECRET: [u8; KEY_LEN] = [7; KEY_LEN];

/// Current Unix time (end-to-end tests run against the real clock of the processes they start).
#[allow(clippy::disallowed_methods)] // reason: e2e tests run against the real clock of the edge process.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// A key ring holding the test key.
pub fn ring() -> KeyRing {
    let mut r = KeyRing::new();
    r.insert(KEY_ID, &SecretKey::from_bytes(SECRET));
    r
}

/// Claims for `/vod/abc/`, valid for 10 minutes, that tests tweak.
pub fn claims() -> Claims {
    let now = now();
    Claims {
        key_id: KEY_ID,
        token_id: TokenId::from_u64(0x1111_2222_3333_4444),
        issued_at: now - 10,
        not_before: None,
        expires_at: now + 600,
        scope: Scope::parse("/vod/abc/").unwrap(),
        ip: None,
        countries: None,
        subject: Some("viewer-1".into()),
        channel: Some("email".into()),
    }
}

/// A token for [`claims`] as changed by `f`, signed with the test key.
pub fn mint(f: impl FnOnce(&mut Claims)) -> String {
    let mut c = claims();
    f(&mut c);
    stile_token::sign(&c, &ring()).unwrap()
}

/// Unpadded base64url (the state file's encoding of secrets).
pub fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let v =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..=c.len() {
            out.push(A[(v >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An edge state file holding the test key and these revocations (JSON values).
pub fn state_json(version: u64, revocations: serde_json::Value, generated_at: Option<u64>) -> String {
    let mut v = serde_json::json!({
        "version": version,
        "keys": [{ "id": KEY_ID, "secret": b64url(&SECRET) }],
        "revocations": revocations,
    });
    if let Some(g) = generated_at {
        v["generated_at"] = g.into();
    }
    v.to_string()
}
