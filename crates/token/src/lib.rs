//! # stile-token
//!
//! The signed-link token at the heart of Stile: claims, the compact versioned
//! byte format, HMAC-SHA256 signing and constant-time verification (version 1)
//! or Ed25519 signing and strict verification (version 2), the key ring, and
//! path canonicalisation.
//!
//! This crate is pure: no I/O, no clock reads (the time is an argument), no
//! async, no globals, no `unsafe`, and no panics on any input. Verifying a
//! token does not allocate.
//!
//! ```
//! use stile_token::*;
//!
//! let mut ring = KeyRing::new();
//! ring.insert(7, &SecretKey::from_bytes([42; KEY_LEN]));
//! let claims = Claims {
//!     key_id: 7,
//!     token_id: TokenId::from_u64(0x0123_4567_89ab_cdef),
//!     issued_at: 1_700_000_000,
//!     not_before: None,
//!     expires_at: 1_700_003_600,
//!     scope: Scope::parse("/vod/abc/").unwrap(),
//!     ip: None,
//!     countries: None,
//!     subject: Some("viewer-42".into()),
//!     channel: Some("email".into()),
//! };
//! let token = sign(&claims, &ring).unwrap();
//! let req = Request { path: "/vod/abc/720p/seg1.ts", client_ip: None, country: None, now: 1_700_000_100 };
//! let verified = verify(&token, &ring, &req, &Policy::default()).unwrap();
//! assert_eq!(verified.channel(), Some("email"));
//! let late = Request { now: 1_700_003_600 + 5, ..req };
//! assert_eq!(verify(&token, &ring, &late, &Policy::default()).unwrap_err(), Reason::Expired);
//! ```

mod b64;
mod claims;
mod keys;
mod path;
mod reason;
pub mod session;
mod unicode_table;
mod wire;

use std::net::IpAddr;

pub use claims::{
    Claims, ClaimsError, Country, CountryRule, IpBinding, KeyId, MAX_CHANNEL_LEN, MAX_COUNTRIES, MAX_SCOPE_LEN,
    MAX_SESSION_SECS, MAX_SUBJECT_LEN, MAX_TTL_SECS, Scope, SessionPolicy, TOKEN_ID_LEN, TokenId,
};
pub use keys::{
    Algorithm, ED25519_KEY_LEN, Ed25519Public, Ed25519Secret, KEY_LEN, KeyError, KeyRing, SESSION_SECRET_LABEL,
    SIGNATURE_LEN, SecretKey, SessionBinding, TAG_LEN, VerifyKey, derive_session_secret,
};
pub use path::{MAX_PATH_LEN, PathError, canonicalize_path, is_canonical};
pub use reason::Reason;
pub use session::{Session, SessionClaims, SessionId, verify_session};
pub use unicode_table::UNICODE_VERSION;
pub use wire::{ClaimCheck, MAX_RAW_LEN, MAX_TOKEN_LEN, Token, VERSION, VERSION_ED25519, sign, sign_with_session};

/// What the verifier knows about the request being checked.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The request path, already canonical (see [`canonicalize_path`]).
    pub path: &'a str,
    /// The client address, if known. Needed only for IP-bound tokens.
    pub client_ip: Option<IpAddr>,
    /// The client's country, if known. Needed only for country-bound tokens.
    pub country: Option<Country>,
    /// The verifier's current time, Unix seconds.
    pub now: u64,
}

/// What a country-bound token gets when the client's country is unknown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UnknownCountry {
    /// Admit (fail open).
    Allow,
    /// Deny with reason `geo` (fail closed; the default).
    #[default]
    Deny,
}

/// Verifier settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Clock-skew allowance in seconds, applied to both ends of the validity
    /// window. Default [`Policy::DEFAULT_LEEWAY_SECS`].
    pub leeway_secs: u32,
    /// What country-bound tokens get when the country is unknown.
    pub unknown_country: UnknownCountry,
}

impl Policy {
    /// The default leeway: a few seconds, never a silent minute.
    pub const DEFAULT_LEEWAY_SECS: u32 = 5;
    /// The largest leeway a verifier may be configured with (`docs/token-format.md`
    /// § 4): more defeats short-lived links. The edge refuses a larger
    /// `token.leeway_secs` at startup.
    pub const MAX_LEEWAY_SECS: u32 = 300;
}

impl Default for Policy {
    fn default() -> Policy {
        Policy { leeway_secs: Policy::DEFAULT_LEEWAY_SECS, unknown_country: UnknownCountry::Deny }
    }
}

/// Verifies a token string for a request: size and structure, key, MAC (in
/// constant time) or Ed25519 signature (strict), time window with leeway, scope, IP, country — cheapest
/// first, stopping at the first failure. Returns the verified token, whose
/// token id and subject the caller then checks against its revocations.
pub fn verify(token: &str, ring: &KeyRing, req: &Request<'_>, policy: &Policy) -> Result<Token, Reason> {
    let token = Token::parse(token)?;
    token.verify_signature(ring)?;
    token.check(req, policy)?;
    Ok(token)
}
